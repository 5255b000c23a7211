"""Network benchmark: what kfault costs and how fast it acts, as ratios measured in one run.

  1. TCP throughput A->B with iperf3: (a) nothing attached, (b) kfault with 1,000 rules none of
     which match, (c) kfault 1% loss, (d) iptables `statistic` 1% drop; each as a ratio to (a).
     Then the same between two pods routed through their node with an eBPF CNI's program on the
     node's side of their veths (lab/kfault_lab/cni.c, a tcx link where the kernel has tcx):
     (a) the CNI program present, nothing of kfault's, and (b), (c) as a ratio to it.
  2. Time from a rule update to the first affected packet (programs already attached), in both.
  3. Per-packet cost of the tc program as rules grow from 1 to 10,000 (BPF_PROG_TEST_RUN).
Run as root: make bench.
"""
import dataclasses
import ipaddress
import json
import statistics
import struct
import sys
import threading
import time

from kfault_agent.engines import netfault
from kfault_agent.kernel import capabilities, loader, topology
from kfault_api import spec
from kfault_lab import prog_run
from kfault_lab.hosts import EmulatedCni, Lab

ROUNDS = 5
IPERF_SECONDS = 4
UPDATE_TRIES, UPDATE_ATTEMPTS = 5, 20
# The update lands this long after the stream is asked for, within its 2 s (40,000 datagrams at
# 20k pps): starting the sender took more than 0.5 s on two busy shared cores.
UPDATE_AT_S, STREAM_DATAGRAMS = 0.9, 40000


def chaos(name, action, **fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "NetworkChaos",
                                  "metadata": {"name": name}, "spec": {"action": action, **fields}})


def non_matching_rules(count, base="10.99.0.0"):
    """`count` partition experiments, each on a peer /32 no test traffic goes to."""
    template = chaos("idle", "partition", externalTargets=["10.99.0.1/32"])
    start = int(ipaddress.ip_address(base))
    return [dataclasses.replace(template, name=f"idle-{i}",
                                peers=(spec.parse_external_target(f"{ipaddress.ip_address(start + i)}/32"),))
            for i in range(count)]


def iperf(lab, server_ip):
    out = lab.run("a", f"iperf3 -c {server_ip} -t {IPERF_SECONDS} -J", check=False).stdout
    return json.loads(out)["end"]["sum_received"]["bits_per_second"]


def throughput(lab, engine, target, b_ip, baseline="nothing attached", with_iptables=True):
    server = lab.popen("b", "iperf3 -s")
    time.sleep(0.5)
    idle = non_matching_rules(1000)
    loss = chaos("loss-1", "loss", loss={"loss": "1"})
    results = {k: [] for k in ("abcd" if with_iptables else "abc")}
    try:
        for _ in range(ROUNDS):   # interleaved rounds, so drift hits every case alike
            results["a"].append(iperf(lab, b_ip))
            for experiment in idle:
                engine.apply(experiment, target)
            results["b"].append(iperf(lab, b_ip))
            engine.revoke_all()
            engine.apply(loss, target)
            results["c"].append(iperf(lab, b_ip))
            engine.revoke_all()
            if with_iptables:
                lab.run("b", "iptables -I INPUT -m statistic --mode random --probability 0.01 -j DROP")
                results["d"].append(iperf(lab, b_ip))
                lab.run("b", "iptables -D INPUT -m statistic --mode random --probability 0.01 -j DROP")
    finally:
        server.terminate()
    base = statistics.median(results["a"])
    labels = {"a": baseline, "b": "kfault, 1,000 rules, none match",
              "c": "kfault loss 1%", "d": "iptables statistic drop 1%"}
    print(f"1. TCP throughput A->B, iperf3 {IPERF_SECONDS}s x {ROUNDS} rounds (median), ratio to (a):")
    for key in results:
        value = statistics.median(results[key])
        print(f"   ({key}) {labels[key]:<36} {value / 1e9:7.2f} Gbit/s   {value / base:5.3f}")


def apply_at(moment, engine, experiment, target):
    """Apply `experiment` `moment` s from now, in a thread; returns (thread, {t0, t1}: when the
    apply call started and returned, monotonic ns)."""
    applied = {}

    def cut():
        time.sleep(moment)
        applied["t0"] = time.monotonic_ns()
        engine.apply(experiment, target)
        applied["t1"] = time.monotonic_ns()

    worker = threading.Thread(target=cut)
    worker.start()
    return worker, applied


def loss_run_start(sent, received):
    """(send time of the last datagram that arrived, of the first of the run of losses the
    partition made): the rule holds to the stream's end, so its run is the one after the last
    that arrived. The earliest missing datagram is not it: one lost for another reason before the
    update would be taken for the rule's first. None when nothing arrived."""
    last_received = max(received, default=-1)
    if last_received + 1 >= sent["sent"]:
        raise AssertionError("the stream's last datagram arrived: the partition never took effect")
    if last_received < 0:
        return None
    return sent["sent_ns"][last_received], sent["sent_ns"][last_received + 1]


def update_latency(lab, engine, target, b_ip):
    """A stream A->B at 20k pps; a partition rule is written mid-stream; the first datagram of
    the run of losses it made tells when it took effect."""
    for experiment in non_matching_rules(1000):        # programs attached, maps busy
        engine.apply(experiment, target)
    figures, late = [], 0
    for attempt in range(UPDATE_ATTEMPTS):
        cut = chaos(f"cut-{attempt}", "partition", externalTargets=[f"{b_ip}/32"])
        worker, applied = apply_at(UPDATE_AT_S, engine, cut, target)
        sent, got = lab.udp("a", "b", b_ip, STREAM_DATAGRAMS, pps=20000, idle=0.5)
        worker.join()
        engine.revoke(f"default/cut-{attempt}", target.name)
        run = loss_run_start(sent, got["received"])
        # Only a stream already running at the update measures it: a sender that started after it
        # finds the rule in place.
        if run is None or sent["sent_ns"][0] > applied["t0"]:
            late += 1
            continue
        # A datagram sent just before the update, still queued when it landed, is affected at once.
        figures.append((max(0, run[1] - applied["t0"]) / 1e6, (applied["t1"] - applied["t0"]) / 1e6,
                        (run[1] - run[0]) / 1e6))
        if len(figures) == UPDATE_TRIES:
            break
    engine.revoke_all()
    assert len(figures) == UPDATE_TRIES, f"the stream started after the update in {late} of {UPDATE_ATTEMPTS} tries"
    print(f"2. rule update -> first affected packet (20k pps stream, 1,000 rules in place), {UPDATE_TRIES} tries "
          f"({late} more not counted: the stream started after the update):")
    print(f"   median {statistics.median(f[0] for f in figures):.3f} ms, max {max(f[0] for f in figures):.3f} ms "
          f"(the apply call itself: median {statistics.median(f[1] for f in figures):.3f} ms; "
          f"resolution: the last datagram through and the first stopped left "
          f"{statistics.median(f[2] for f in figures):.3f} ms apart, median)")


def prog_ns_per_packet(prog_fd, packet, repeat=2_000_000):
    """BPF_PROG_TEST_RUN: the kernel runs the program `repeat` times on `packet`, reports ns/run."""
    return prog_run.run(prog_fd, packet, repeat)[1]


def udp_packet(src, dst):
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0,
                     ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + struct.pack("!HHHH", 40000, 5001, 8, 0)


def per_packet_cost(engine, datapath, target, a_ip, b_ip):
    packet = udp_packet(a_ip, b_ip)   # from the target to a peer no rule names
    fd = datapath.fd("egress_to")
    print("3. per-packet cost of egress_to, no rule matching the packet (BPF_PROG_TEST_RUN):")
    empty = statistics.median(prog_ns_per_packet(fd, packet) for _ in range(3))
    print(f"   {'no rules':>12}: {empty:5.1f} ns")
    placed = 0
    base = None
    for count in (1, 10, 100, 1000, 10000):
        for experiment in non_matching_rules(count)[placed:]:
            engine.apply(experiment, target)
        placed = count
        cost = statistics.median(prog_ns_per_packet(fd, packet) for _ in range(3))
        base = base or cost
        print(f"   {count:>6} rules: {cost:5.1f} ns   ratio to 1 rule {cost / base:5.2f}")
    engine.revoke_all()


def main():
    datapath = loader.NetDatapath()
    engine = netfault.NetFaultEngine(datapath, capabilities.probe_capabilities(), lease_s=600)
    lab = Lab()
    try:
        a_ip, b_ip = lab.link("a", "b", "10.250.1")
        target = topology.resolve_net_target(f"netns:{lab.ns('a')}")
        throughput(lab, engine, target, b_ip)
        update_latency(lab, engine, target, b_ip)
        per_packet_cost(engine, datapath, target, a_ip, b_ip)
    finally:
        engine.revoke_all()
        lab.close()
    try:
        with_cni(engine)
    finally:
        datapath.close()
    return 0


def with_cni(engine):
    """Sections 1 and 2 again, between pods whose node runs an eBPF CNI's program."""
    lab = Lab()
    try:
        pods = {"a": lab.pod("a", "n", "10.251.1"), "b": lab.pod("b", "n", "10.251.2")}
        mode = "tcx" if engine.capabilities["tcx"].available else "clsact"
        EmulatedCni(lab, "n", pods, mode)
        print(f"\nWith an eBPF CNI's program on the node's side of both pods' veths ({mode}):")
        target = topology.resolve_net_target(f"netns:{lab.ns('a')}")
        throughput(lab, engine, target, pods["b"], baseline="CNI program present", with_iptables=False)
        update_latency(lab, engine, target, pods["b"])
    finally:
        engine.revoke_all()
        lab.close()


if __name__ == "__main__":
    sys.exit(main())
