"""Syscall fault benchmark: what SyscallChaos's faults cost the calls they don't fail.

A loop in C (compiled here with cc: a Python loop's own cost would hide the hooks'), in a cgroup:
  (0) no rule: none of kfault's syscall programs attached (loaded and unattached, they cost
      nothing; checked by the kernel's own list of BPF links)
  (b) a fault on connect armed on another cgroup; this loop's UDP connect(2)s pass the
      socket_connect hook, untargeted: the cost every other process of the node pays
  (c) a fault on sendmsg armed on this cgroup; this loop's write(2)s on a UDP socket pass the
      socket_sendmsg hook, targeted, but are not the syscall named: a non-matching call
  (d) a fault on connect at percent 0 on this cgroup: every connect is decided (rolled, passed)
With --hook-costs, also the floor under (b), in the same rounds: a program that does nothing
(bare_hooks.py) on security_socket_connect as (f) fentry, (g) fmod_ret, (h) BPF LSM, and as BPF LSM
per cgroup (lsm_cgroup), (l) attached to the other cgroup (what the kernel's shim costs a task
outside it) and (m) to the loop's.
(b), (d), (f)-(m) against (0)'s connect loop, (c) against (0)'s write loop. Nanoseconds per call by
the loop's own clock, median of interleaved rounds (each in its own order, each loop after an
untimed one); each ratio is the median of every round's own ratio, with its quartiles.
Run as root where BPF LSM is active: make bench-syscall (here), or in the VM (Debian's 6.1):
    scripts/vm-run .venv/bin/python bench/syscall_overhead.py
"""
import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import uuid

from kfault_agent.engines import syscallfault
from kfault_agent.kernel import capabilities, topology
from kfault_api import spec
from kfault_lab import bpf_links
from kfault_lab.bare_hooks import BareHook

ROUNDS = 15
CALLS = 50_000

LOOP_C = r"""
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* loop connect|write CALLS: ns per call of the loop (after an untimed tenth) */
int main(int argc, char **argv)
{
	long calls = atol(argv[2]);
	int do_connect = !strcmp(argv[1], "connect");
	struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(9)};
	struct timespec start, end;
	char byte = 0;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&peer, sizeof(peer)))
		return 1;
	for (int timed = 0; timed < 2; timed++) {
		long n = timed ? calls : calls / 10;
		clock_gettime(CLOCK_MONOTONIC, &start);
		for (long i = 0; i < n; i++) {
			if (do_connect)
				connect(fd, (struct sockaddr *)&peer, sizeof(peer));
			else
				write(fd, &byte, 1);
		}
		clock_gettime(CLOCK_MONOTONIC, &end);
	}
	printf("%.2f\n", ((end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec)) / calls);
	return 0;
}
"""


def build_loop(directory):
    source, binary = os.path.join(directory, "loop.c"), os.path.join(directory, "loop")
    with open(source, "w", encoding="ascii") as handle:
        handle.write(LOOP_C)
    subprocess.run(["cc", "-O2", "-o", binary, source], check=True)
    return binary


def loop_ns(binary, cgroup, call, calls):
    done = subprocess.run(["sh", "-c", f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"', "loop", binary, call,
                           str(calls)], capture_output=True, text=True, check=True)
    return float(done.stdout)


def fault(name, syscalls, percent=100):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "SyscallChaos", "metadata": {"name": name},
                                  "spec": {"action": "fault", "syscalls": syscalls, "errno": 111,
                                           "percent": percent}})


# configuration -> (the rule and where it is armed, the loop's call, the baseline it is held to)
CONFIGS = {
    "0": (None, None, "connect", None),
    "0w": (None, None, "write", None),
    "b": (fault("other-connect", ["connect"]), "other", "connect", "0"),
    "c": (fault("this-sendmsg", ["sendmsg"]), "loop", "write", "0w"),
    "d": (fault("this-connect-0", ["connect"], percent=0), "loop", "connect", "0"),
}
WHAT = {"0": "no rule (connect loop)", "0w": "no rule (write loop)",
        "b": "fault on connect armed on another cgroup",
        "c": "fault on sendmsg on this cgroup; write() passes its hook",
        "d": "fault on connect at 0% on this cgroup: each call decided"}
# --hook-costs: configuration -> (kind of bare program on socket_connect, where an lsm_cgroup one is attached)
BARE = {"f": ("fentry", None), "g": ("fmod_ret", None), "h": ("lsm", None), "l": ("lsm_cgroup", "other"),
        "m": ("lsm_cgroup", "loop")}
WHAT.update({"f": "bare fentry on socket_connect", "g": "bare fmod_ret on socket_connect",
             "h": "bare BPF LSM on socket_connect", "l": "bare lsm_cgroup on socket_connect, other cgroup",
             "m": "bare lsm_cgroup on socket_connect, this cgroup"})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--hook-costs", action="store_true",
                        help="also (f)-(m): a program that does nothing on socket_connect, by each way to attach one")
    args = parser.parse_args()
    datapath, caps = capabilities.probe_syscall()
    if datapath is None or not caps["syscall-fault"].available:
        sys.exit(f"no syscall faults here: {caps['syscall-fault'].reason}")
    engine = syscallfault.SyscallFaultEngine(datapath, caps, lease_s=3600)
    root = topology.cgroup2_mount()
    cgroups = {name: os.path.join(root, f"kft-bench-sc-{uuid.uuid4().hex[:6]}-{name}") for name in ("loop", "other")}
    configs, bare, refused = dict(CONFIGS), {}, {}
    try:
        for path in cgroups.values():
            os.mkdir(path)
        if args.hook_costs:
            for name, (kind, where) in BARE.items():
                try:
                    bare[name] = BareHook(kind, "socket_connect", cgroup=cgroups.get(where))
                    configs[name] = (None, None, "connect", "0")
                except (OSError, KeyError) as err:
                    refused[name] = f"not measured: {err}"
        figures = {name: [] for name in configs}
        with tempfile.TemporaryDirectory() as directory:
            binary = build_loop(directory)
            for _ in range(args.rounds):
                order = list(configs)
                random.shuffle(order)
                for name in order:
                    experiment, where, call, _base = configs[name]
                    if name in bare:
                        with bare[name].attached():
                            loop_ns(binary, cgroups["loop"], call, args.calls // 10)      # untimed
                            figures[name].append(loop_ns(binary, cgroups["loop"], call, args.calls))
                        continue
                    target = None
                    if experiment:
                        target = engine.resolve(f"cgroup:{cgroups[where]}", experiment)[0]
                        engine.apply(experiment, target)
                    elif bpf_links.attached_names(datapath.bpf.programs):
                        sys.exit("a syscall program stayed attached with no rule armed")
                    try:
                        loop_ns(binary, cgroups["loop"], call, args.calls // 10)      # untimed
                        figures[name].append(loop_ns(binary, cgroups["loop"], call, args.calls))
                    finally:
                        if target:
                            engine.revoke(experiment.key, target.name)
    finally:
        engine.close()
        for hook in bare.values():
            hook.close()
        for path in cgroups.values():
            if os.path.isdir(path):
                os.rmdir(path)      # the loops have exited
    print(f"syscall loop, {args.calls} calls, median of {args.rounds} rounds, kernel {os.uname().release}")
    for name, reason in refused.items():
        print(f"({name}) {WHAT[name]:<58} {reason}")
    for name, (_e, _w, _call, base) in configs.items():
        line = f"({name}) {WHAT[name]:<58} {statistics.median(figures[name]):8.1f} ns/call"
        if base:
            line += f"   ratio to ({base}) {ratio_text(figures[name], figures[base])}"
        print(line)
    if "h" in figures:
        # what kfault's program adds to the least a BPF LSM program costs, round by round
        print(f"(b) to (h), kfault's program above an empty one: {ratio_text(figures['b'], figures['h'])}")


def ratio_text(figures, base):
    """The median of each round's own ratio, and its quartiles: a slow spell of the machine (a
    neighbour, under emulation) is charged to every configuration of its round alike."""
    ratios = sorted(a / b for a, b in zip(figures, base))
    quartiles = statistics.quantiles(ratios, n=4)
    return f"{statistics.median(ratios):.3f} (quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f})"


if __name__ == "__main__":
    main()
