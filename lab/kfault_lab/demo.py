"""The local demo: two hosts joined by a veth pair, each fault in turn, asked vs measured.

Runs `kfault run` exactly as a user would (live counters on screen, Prometheus on a port),
sends real traffic from host A to host B, and prints what the victim measured.
"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import yaml

from kfault_agent.kernel import capabilities
from kfault_lab.hosts import Lab

METRICS_PORT = 9464


def experiment(name, action, **spec):
    return {"apiVersion": "kfault.dev/v1alpha1", "kind": "NetworkChaos", "metadata": {"name": name},
            "spec": {"action": action, "direction": "to", **spec}}


def run_with_fault(lab, doc, traffic, target=None, metric="kfault_packets_total"):
    """Start `kfault run` on host A (or `target`), run `traffic()` while it injects, stop it,
    return the result."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(doc, handle)
    runner = subprocess.Popen([sys.executable, "-m", "kfault_agent.cli", "run", "-f", handle.name,
                               "--target", target or f"netns:{lab.ns('a')}", "--metrics-port", str(METRICS_PORT),
                               "--interval", "1"], stdout=subprocess.PIPE, text=True)
    ready = threading.Event()

    def relay():
        for line in runner.stdout:
            print("    | " + line.rstrip(), flush=True)
            if "injecting" in line:
                ready.set()
        ready.set()

    relay_thread = threading.Thread(target=relay, daemon=True)
    relay_thread.start()
    ready.wait(60)
    try:
        result = traffic()
        time.sleep(1.1)   # one more live counter line
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5).read().decode()
        shown = [line for line in scrape.splitlines() if line.startswith(metric) and not line.endswith(" 0.0")]
        print("    prometheus: " + "\n    prometheus: ".join(shown[:4]))
        return result
    finally:
        runner.terminate()
        runner.wait(30)
        relay_thread.join(5)
        os.unlink(handle.name)


def main():
    caps = capabilities.probe_capabilities()
    lab = Lab()
    try:
        a_ip, b_ip = lab.link("a", "b", "10.250.1")
        print(f"kfault demo: host A ({lab.ns('a')}, {a_ip}) <-veth-> host B ({lab.ns('b')}, {b_ip})\n")
        rows = []

        print("== loss 30% on packets A sends; A runs ping -f -c 3000")
        sent, got, _ = run_with_fault(lab, experiment("loss", "loss", loss={"loss": "30"}),
                                      lambda: lab.ping_flood("a", b_ip, 3000))
        rows.append(("loss 30%", f"ping loss {100 * (1 - got / sent):.1f}%"))

        print("== partition A -> B; A runs ping -f -c 300")
        sent, got, _ = run_with_fault(lab, experiment("partition", "partition", externalTargets=[f"{b_ip}/32"]),
                                      lambda: lab.ping_flood("a", b_ip, 300))
        rows.append(("partition", f"ping loss {100 * (1 - got / sent):.1f}%"))

        print("== duplicate 50%; A sends 3000 UDP datagrams to B")
        _, got = run_with_fault(lab, experiment("duplicate", "duplicate", duplicate={"duplicate": "50"}),
                                lambda: lab.udp("a", "b", b_ip, 3000))
        rows.append(("duplicate 50%", f"B received {100 * got['duplicates'] / 3000:.1f}% twice"))

        print("== corrupt 40%; A sends 3000 UDP datagrams to B")
        before = lab.counter("b", "IpExtInCsumErrors")
        _, got = run_with_fault(lab, experiment("corrupt", "corrupt", corrupt={"corrupt": "40"}),
                                lambda: lab.udp("a", "b", b_ip, 3000))
        failed = lab.counter("b", "IpExtInCsumErrors") - before
        rows.append(("corrupt 40%", f"B's checksum check rejected {100 * failed / 3000:.1f}%; "
                                    f"{got['damaged']} bad payloads reached the app"))

        ok, reason = capabilities.action_support(caps, "delay")
        if ok:
            print("== delay 50ms; A runs ping -c 20")
            out = run_with_fault(lab, experiment("delay", "delay", delay={"latency": "50ms"}),
                                 lambda: lab.run("a", f"ping -q -c 20 -i 0.1 {b_ip}").stdout)
            rows.append(("delay 50ms", out.strip().splitlines()[-1]))
        else:
            rows.append(("delay, bandwidth", f"refused on this kernel: {reason}"))

        rows.append(io_latency(lab))
        rows.append(pod_failure(lab))

        print("\n   asked             measured by the victim")
        for asked, measured in rows:
            print(f"   {asked:<17} {measured}")
        return 0
    finally:
        lab.close()


def io_latency(lab):
    """IOChaos latency 100ms on reads of *.db by a process in its own cgroup."""
    from kfault_agent.kernel.topology import cgroup2_mount
    cgroup = os.path.join(cgroup2_mount(), f"{lab.prefix}-victim")
    os.mkdir(cgroup)
    workdir = tempfile.mkdtemp(prefix="kfault-demo-")
    for name in ("data.db", "notes.txt"):
        with open(os.path.join(workdir, name), "w", encoding="ascii") as handle:
            handle.write("kfault")
    doc = {"apiVersion": "kfault.dev/v1alpha1", "kind": "IOChaos", "metadata": {"name": "slow-reads"},
           "spec": {"action": "latency", "delay": "100ms", "volumePath": workdir, "path": f"{workdir}/*.db",
                    "methods": ["read"]}}
    calls = [["read", f"{workdir}/data.db", 5], ["read", f"{workdir}/notes.txt", 5]]
    victim = subprocess.Popen([sys.executable, "-m", "kfault_lab.io_probe", cgroup, json.dumps(calls)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    victim.stdout.readline()
    print(f"== IOChaos latency 100ms on reads of {workdir}/*.db; a process in cgroup {cgroup} reads")

    def reads():
        time.sleep(1.0)           # the holder seizes the victim
        victim.stdin.write("go\n")
        victim.stdin.flush()
        return json.loads(victim.stdout.readline())

    try:
        result = run_with_fault(lab, doc, reads, target=f"cgroup:{cgroup}", metric="kfault_syscall")
        matching, other = (max(c["ms"]) if c["ms"] else 0 for c in result["calls"])
        low = min(result["calls"][0]["ms"])
        return ("read latency 100ms", f"*.db reads took {low:.0f}-{matching:.0f} ms; other files {other:.1f} ms; "
                                      f"its other thread ticked {result['ticks']} times meanwhile")
    finally:
        victim.kill()
        victim.wait()
        os.rmdir(cgroup)
        for name in os.listdir(workdir):
            os.unlink(os.path.join(workdir, name))
        os.rmdir(workdir)


def pod_failure(lab):
    """PodChaos pod-failure on a process counting in its own cgroup: frozen, then thawed."""
    from kfault_agent.engines.podfault import kill_cgroup
    from kfault_agent.kernel.topology import cgroup2_mount
    cgroup = os.path.join(cgroup2_mount(), f"{lab.prefix}-frozen")
    os.mkdir(cgroup)
    counter = tempfile.NamedTemporaryFile("w", prefix="kfault-demo-", delete=False).name
    victim = subprocess.Popen(["sh", "-c", f"echo $$ > {cgroup}/cgroup.procs; "
                               f"while true; do echo . >> {counter}; sleep 0.01; done"])
    doc = {"apiVersion": "kfault.dev/v1alpha1", "kind": "PodChaos", "metadata": {"name": "freeze"},
           "spec": {"action": "pod-failure"}}

    def ticks(seconds=1.0):
        def read():   # a line a tick: appends never look empty, even frozen mid-write
            with open(counter, encoding="ascii") as handle:
                return handle.read().count("\n")
        before = read()
        time.sleep(seconds)
        return read() - before

    print(f"== PodChaos pod-failure on cgroup {cgroup}, where a process counts every 10 ms")
    try:
        time.sleep(0.3)
        frozen = run_with_fault(lab, doc, ticks, target=f"cgroup:{cgroup}", metric="kfault_pod")
        thawed = ticks()
        return ("pod-failure", f"counted {frozen} times in 1 s frozen; {thawed} in 1 s after the thaw")
    finally:
        kill_cgroup(cgroup)           # the shell and its sleep
        victim.wait()
        for _ in range(100):          # the kernel empties a killed cgroup a moment later
            try:
                os.rmdir(cgroup)
                break
            except OSError:
                time.sleep(0.05)
        os.unlink(counter)


if __name__ == "__main__":
    sys.exit(main())
