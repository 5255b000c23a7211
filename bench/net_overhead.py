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
import ctypes
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
from kfault_lab.hosts import EmulatedCni, Lab

ROUNDS = 5
IPERF_SECONDS = 4


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


def update_latency(lab, engine, target, b_ip):
    """A stream A->B at 20k pps; a partition rule is written mid-stream; the first datagram it
    dropped tells when it took effect."""
    for experiment in non_matching_rules(1000):        # programs attached, maps busy
        engine.apply(experiment, target)
    figures = []
    for attempt in range(5):
        applied = {}

        def cut():
            time.sleep(0.5)
            applied["t0"] = time.monotonic_ns()
            engine.apply(chaos(f"cut-{attempt}", "partition", externalTargets=[f"{b_ip}/32"]), target)
            applied["t1"] = time.monotonic_ns()

        worker = threading.Thread(target=cut)
        worker.start()
        sent, got = lab.udp("a", "b", b_ip, 20000, pps=20000, idle=0.5)
        worker.join()
        engine.revoke(f"default/cut-{attempt}", target.name)
        missing = set(range(sent["sent"])) - set(got["received"])
        first = min(sent["sent_ns"][s] for s in missing if sent["sent_ns"][s] >= applied["t0"])
        figures.append(((first - applied["t0"]) / 1e6, (applied["t1"] - applied["t0"]) / 1e6))
    engine.revoke_all()
    print("2. rule update -> first affected packet (20k pps stream, 1,000 rules in place), 5 tries:")
    print(f"   median {statistics.median(f[0] for f in figures):.3f} ms, max {max(f[0] for f in figures):.3f} ms "
          f"(the apply call itself: median {statistics.median(f[1] for f in figures):.3f} ms; "
          f"resolution 0.05 ms)")


class TestRunAttr(ctypes.Structure):
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("pad", ctypes.c_uint8 * 64)]


def prog_ns_per_packet(prog_fd, packet, repeat=2_000_000):
    """BPF_PROG_TEST_RUN: the kernel runs the program `repeat` times on `packet`, reports ns/run."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(packet)
    out = ctypes.create_string_buffer(len(packet) + 256)
    attr = TestRunAttr(prog_fd=prog_fd, data_size_in=len(packet), data_size_out=len(out),
                       data_in=ctypes.addressof(buf), data_out=ctypes.addressof(out), repeat=repeat)
    if libc.syscall(321, 10, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:   # bpf(BPF_PROG_TEST_RUN)
        raise OSError(ctypes.get_errno(), "BPF_PROG_TEST_RUN")
    return attr.duration


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
