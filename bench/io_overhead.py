"""File I/O benchmark: what kfault's file I/O faults cost the calls they don't touch.

A tight loop (`dd bs=1`: one read(2) and one write(2) to /dev/null per byte) in a cgroup:
  (0) no kfault program loaded at all: the node without kfault
  (a) kfault loaded, no rule armed: what every process of a node pays while kfault is idle
  (b) a latency rule on reads armed on another cgroup
  (c) that rule armed on this cgroup, on a path this loop does not read
  (d) no rule, the file read through a FUSE passthrough mount (bindfs): the floor of a
      FUSE-based injector such as Chaos Mesh's, which serves every call of the volume
  (e) as (c), with the rule on every method (open, fsync and stat are decided at the syscall
      tracepoints even where the file hooks decide reads and writes)
With --hook-costs, also what the attachment itself costs, apart from kfault's program: (f), (g),
(h) a program that does nothing on security_file_permission as fentry, as fmod_ret, and as BPF
LSM (on bpf_lsm_file_permission); (i) and (j) as (f) with 1,000 more register additions and
with 100 helper calls, the yardsticks that turn nanoseconds under emulation into work; and
(b*), (c*): (b) and (c) decided by the fmod_ret program, as kfault did before latency moved
to fentry.
With --paired-headers, also (b') and (c'): (b) and (c) by a datapath compiled in a mount
namespace where the node's kernel headers are hidden, as on a managed node (only the agent
image's own headers: lab/kfault_lab/headerless.py), loaded here from that compile.
Nanoseconds per byte copied by dd's own clock, median of interleaved rounds (each in its own
order, each loop after an untimed one); the ratio to (0) is the median of each round's own
ratio, so that a slow spell of the machine (a neighbour, under emulation) is charged to the
configurations of its round alike. Which
mechanism decides reads (file hooks or syscall tracepoints) is printed first. For (0) the datapath
is closed, and loaded again after (from the compile cache): each round checks, by the kernel's
own list of BPF links, that no program of kfault's stays attached while it is idle, and says if
another process (another kfault) had kfault's I/O programs attached through (0).
Run as root: make bench-io (this kernel), make kernel-bench (Debian's stock kernel, in the VM).
"""
import argparse
import contextlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid

from kfault_agent.engines import iofault
from kfault_agent.kernel import capabilities, compile, loader, topology
from kfault_api import spec
from kfault_lab import bpf_links, headerless
from kfault_lab.bare_hooks import BareHook

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

# Many short rounds rather than a few long ones: the figures judged are 2% apart, and a median
# over many rounds leaves out the ones a passing slow spell hit.
ROUNDS = 45
BYTES = 60_000
WARM_UP_BYTES = 10_000
# With --block-size: reads of that size, this many a loop (and a file that long).
BLOCK_READS = 5_000


# The yardsticks of --hook-costs (bare_hooks.py).
CALIBRATION_INSNS = 1000
CALIBRATION_CALLS = 100


def io_chaos(path, methods):
    fields = {"action": "latency", "delay": "1s", "volumePath": "/", "path": path}
    if methods:
        fields["methods"] = methods
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "IOChaos", "metadata": {"name": "bench"},
                                  "spec": fields})


def read_loop_ns(cgroup, path, count=BYTES, block=1):
    """ns per read (with block 1, per byte) of `dd bs=block` over `path`, run inside `cgroup`,
    by dd's own clock: the loop alone, not the start of sh and dd (under emulation a start
    costs as much as a tenth of the loop, and a latency rule's holder stops an exec once: both
    would blur the ratios)."""
    done = subprocess.run(["sh", "-c", f"echo $$ > {cgroup}/cgroup.procs && exec dd if={path} of=/dev/null "
                           f"bs={block} count={count}"], check=False, capture_output=True, text=True,
                          env={**os.environ, "LC_ALL": "C"})
    # dd's last line: "N bytes (...) copied, S s, R MB/s"
    match = re.search(r"copied, ([0-9.e+-]+) s,", done.stderr)
    if done.returncode != 0 or not match:
        raise RuntimeError(f"dd failed: {done.stderr.strip()[-300:]}")
    return float(match.group(1)) * 1e9 / count


@contextlib.contextmanager
def tmpfs_directory():
    """A directory on a tmpfs of its own: the same plain filesystem on every machine (the VM
    tier's /tmp is an overlay, which costs a read more than the loop does)."""
    directory = tempfile.mkdtemp(prefix="kft-bench-")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", directory], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", directory], check=False)
        os.rmdir(directory)


@contextlib.contextmanager
def fuse_passthrough(directory):
    """`directory` mounted again through bindfs (a FUSE passthrough), or None and why not."""
    if not shutil.which("bindfs"):
        yield None, "bindfs is not installed (Debian: apt install bindfs)"
        return
    subprocess.run(["modprobe", "fuse"], check=False, capture_output=True)
    mountpoint = tempfile.mkdtemp(prefix="kft-bench-fuse-")
    mounted = subprocess.run(["bindfs", directory, mountpoint], capture_output=True, text=True)
    if mounted.returncode != 0:
        os.rmdir(mountpoint)
        yield None, f"bindfs failed: {mounted.stderr.strip()[:200]}"
        return
    try:
        yield mountpoint, None
    finally:
        subprocess.run(["umount", mountpoint], check=False)
        os.rmdir(mountpoint)


@contextlib.contextmanager
def compile_cache(directory):
    """Compile and load from `directory` (None: the agent's cache)."""
    before = os.environ.get(compile.CACHE_ENV)
    if directory:
        os.environ[compile.CACHE_ENV] = directory
    try:
        yield
    finally:
        if directory:
            os.environ.pop(compile.CACHE_ENV)
            if before is not None:
                os.environ[compile.CACHE_ENV] = before


def compile_without_node_headers(mechanism, cache_dir, headers_dir):
    """iofault.c compiled into cache_dir where the node's headers are hidden; what it used."""
    child = headerless.popen([sys.executable, "-m", "tests.io_process", "compile", mechanism or ""], headers_dir,
                             cwd=ROOT, env={compile.CACHE_ENV: cache_dir}, stdout=subprocess.PIPE, text=True)
    out, _ = child.communicate(timeout=1200)
    if child.returncode != 0:
        raise RuntimeError(f"the compile without the node's headers failed: {out[-500:]}")
    return json.loads(out)["headers"]


class Kfault:
    """kfault's file I/O engine on this node, which (0) unloads for its loop; with cache_dir,
    loaded from the programs compiled there (and nothing compiled here: checked)."""

    def __init__(self, like=None, cache_dir=None):
        self.cache_dir = cache_dir
        if like:        # the same mechanism and capabilities as another's
            self.mechanism, self.capabilities = like.mechanism, like.capabilities
            self.datapath = self._load()
        else:
            self.datapath, self.capabilities = capabilities.probe_io()
            self.mechanism = self.datapath.errno_mechanism
        self.file_hooks = self.datapath.file_hooks
        self.engine = iofault.IOFaultEngine(self.datapath, self.capabilities)
        # what the kernel calls kfault's I/O programs: another kfault on the node would show
        self.names = {bpf_links.kernel_name(name) for name in self.datapath.bpf.programs}

    def idle_links(self):
        """Links to this datapath's programs: none while it is idle, or the bench is wrong."""
        return bpf_links.attached_names(self.datapath.bpf.programs)

    @contextlib.contextmanager
    def unloaded(self):
        self.engine.revoke_all()
        self.datapath.close()
        self.datapath = self.engine = None
        try:
            yield
        finally:
            self.datapath = self._load()
            self.engine = iofault.IOFaultEngine(self.datapath, self.capabilities)

    def _load(self):
        if not self.cache_dir:
            return loader.IODatapath(self.mechanism)
        entries = sorted(os.listdir(self.cache_dir))
        with compile_cache(self.cache_dir):
            datapath = loader.IODatapath(self.mechanism)
        if sorted(os.listdir(self.cache_dir)) != entries:
            datapath.close()
            raise RuntimeError("the datapath was compiled here, not taken from the compile without the node's headers")
        return datapath

    def close(self):
        if self.engine:
            self.engine.revoke_all()
            self.datapath.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"interleaved rounds (default {ROUNDS})")
    parser.add_argument("--paired-headers", action="store_true",
                        help="also (b') and (c'): compiled where the node's kernel headers are hidden")
    parser.add_argument("--block-size", type=int, default=1,
                        help=f"bytes a read (default 1: the most calls a byte; larger reads {BLOCK_READS:,} a loop)")
    parser.add_argument("--hook-costs", action="store_true",
                        help="also (f)-(j): a program that does nothing on every read and write's permission "
                             "check, as fentry, fmod_ret and BPF LSM, and fentry with (i) "
                             f"{CALIBRATION_INSNS:,} more instructions, (j) {CALIBRATION_CALLS} helper calls; "
                             "and (b*), (c*): (b), (c) decided by the fmod_ret program, as until now")
    args = parser.parse_args()
    rounds = args.rounds
    loop_reads = BYTES if args.block_size == 1 else BLOCK_READS
    warm_up = loop_reads * WARM_UP_BYTES // BYTES
    unit = "ns/byte" if args.block_size == 1 else "ns/read"

    def loop(path, count=loop_reads):
        return read_loop_ns(loop_cgroup, path, count, args.block_size)
    root = topology.cgroup2_mount()
    prefix = os.path.join(root, "kft-bench-" + uuid.uuid4().hex[:6])
    loop_cgroup, other_cgroup = prefix + "-loop", prefix + "-other"
    for path in (loop_cgroup, other_cgroup):
        os.mkdir(path)
    scratch = tempfile.mkdtemp(prefix="kft-bench-headers-")
    kfault, headerless_kfault, hidden_headers = Kfault(), None, None
    here = topology.resolve_cgroup_target(f"cgroup:{loop_cgroup}")
    other = topology.resolve_cgroup_target(f"cgroup:{other_cgroup}")
    reads = ["read"]
    keys = ["0", "a", "b", "b*", "b'", "c", "c*", "c'", "d", "e", "f", "g", "h", "i", "j"]
    results = {key: [] for key in keys}
    fuse_reason, foreign_links = None, 0
    bare, bare_refused = {}, {}
    try:
        if args.paired_headers:
            cache_dir = os.path.join(scratch, "cache")
            hidden_headers = compile_without_node_headers(kfault.mechanism, cache_dir, os.path.join(scratch, "headers"))
            headerless_kfault = Kfault(like=kfault, cache_dir=cache_dir)
        kfaults = [k for k in (kfault, headerless_kfault) if k]
        with tmpfs_directory() as directory, fuse_passthrough(directory) as (fuse, fuse_reason):
            data = os.path.join(directory, "data")
            with open(data, "wb") as handle:
                handle.write(os.urandom(loop_reads * args.block_size))
            configs = {"0": (None, None, data), "a": (None, None, data), "b": (reads, other, data),
                       "c": (reads, here, data), "e": (None, here, data)}
            if headerless_kfault:
                configs.update({"b'": (reads, other, data), "c'": (reads, here, data)})
            if fuse:
                configs["d"] = (None, None, os.path.join(fuse, "data"))
            if args.hook_costs:
                for key, kind, adds, calls in (("f", "fentry", 0, 0), ("g", "fmod_ret", 0, 0), ("h", "lsm", 0, 0),
                                               ("i", "fentry", CALIBRATION_INSNS, 0),
                                               ("j", "fentry", 0, CALIBRATION_CALLS)):
                    try:
                        bare[key] = BareHook(kind, "file_permission", adds, calls)
                        configs[key] = (None, None, data)
                    except (OSError, KeyError) as err:
                        bare_refused[key] = f"not measured: {err}"
                if kfault.file_hooks:
                    configs.update({"b*": (reads, other, data), "c*": (reads, here, data)})
            order = random.Random(1)
            for _ in range(rounds):
                # A new order each round, and a loop untimed before each timed one: arming or
                # revoking a rule that attaches the syscall tracepoints or the hooks patches
                # kernel text, and under emulation the next program runs slower while it is
                # translated again. A fixed order would charge that to whichever came next.
                for key in order.sample(sorted(configs), len(configs)):
                    methods, target, path = configs[key]
                    if key == "0":
                        with contextlib.ExitStack() as unloaded:
                            for each in kfaults:
                                unloaded.enter_context(each.unloaded())
                            loop(path, warm_up)
                            results[key].append(loop(path))
                            foreign_links += bool(bpf_links.linked_program_names() & kfault.names)
                        continue
                    for each in kfaults:
                        if each.idle_links():
                            raise RuntimeError(f"kfault is idle and still has {sorted(each.idle_links())} attached")
                    if key in bare:
                        with bare[key].attached():
                            loop(path, warm_up)
                            results[key].append(loop(path))
                        continue
                    armed = headerless_kfault if key.endswith("'") else kfault
                    if target:
                        armed.engine.apply(io_chaos("/nowhere/**", methods), target)
                    if key.endswith("*"):   # the same rule decided by the fmod_ret program, as until now
                        armed.datapath.use_hooks({"file_permission"})
                    loop(path, warm_up)
                    results[key].append(loop(path))
                    armed.engine.revoke_all()
    finally:
        for each in (kfault, headerless_kfault):
            if each:
                each.close()
        for hook in bare.values():
            hook.close()
        for path in (loop_cgroup, other_cgroup):
            os.rmdir(path)
        shutil.rmtree(scratch, ignore_errors=True)
    decided_by = ("file hooks (fentry on security_file_permission for latency)" if kfault.file_hooks
                  else "syscall tracepoints")
    labels = {"0": "no kfault program loaded", "a": "kfault loaded, no rule armed", "b": "armed on another cgroup",
              "b*": "as (b), by fmod_ret (until now)", "b'": "as (b), without the node's headers",
              "c": "armed here, non-matching path", "c*": "as (c), by fmod_ret (until now)",
              "c'": "as (c), without the node's headers", "d": "FUSE passthrough (bindfs), no rule",
              "e": "as (c), rule on every method", "f": "bare fentry on file_permission",
              "g": "bare fmod_ret on file_permission", "h": "bare BPF LSM on file_permission",
              "i": f"as (f), {CALIBRATION_INSNS:,} more instructions",
              "j": f"as (f), {CALIBRATION_CALLS} helper calls"}
    print(f"kernel {os.uname().release}; reads are decided at the {decided_by}")
    if hidden_headers:
        print(f"(b') and (c'): compiled where /usr/src and /lib/modules are empty, against {hidden_headers}")
    print(f"read loop (dd bs={args.block_size}, {loop_reads} reads, each followed by a write to /dev/null), "
          f"median of {rounds} rounds; "
          "ratio to (0) in the same round:")
    for key, label in labels.items():
        if not results[key]:
            if key == "d":
                print(f"   {f'({key})':<4} {label:<36} not measured: {fuse_reason}")
            if key in bare_refused:
                print(f"   {f'({key})':<4} {label:<36} {bare_refused[key]}")
            continue
        value = statistics.median(results[key])
        low, ratio, high = statistics.quantiles([x / z for x, z in zip(results[key], results["0"])], n=4)
        name = f"({key})"
        print(f"   {name:<4} {label:<36} {value:7.1f} {unit}   {ratio:5.3f}   (quartiles {low:5.3f}-{high:5.3f})")
    if foreign_links:
        print(f"   (0) is not a node without kfault: in {foreign_links} of {rounds} rounds another process had "
              "kfault's I/O programs attached")


if __name__ == "__main__":
    main()
