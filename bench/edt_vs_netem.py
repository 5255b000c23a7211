"""kfault vs `tc netem` at the same settings, side by side in one run (needs sch_fq and
sch_netem: run it on a stock kernel with `make kernel-bench`).

  1. Delay accuracy: delay 50ms on A's sends; error of each ping RTT against baseline + 50 ms;
     median and p99 of |error|, kfault and netem, and their ratio.
  2. TCP throughput A->B with 1% loss: kfault (drop at B's side of the veth) vs netem (loss
     in A's root qdisc); median of interleaved rounds, and their ratio.
"""
import json
import statistics
import time

from kfault_agent.engines import netfault
from kfault_agent.kernel import capabilities, loader, topology
from kfault_api import spec
from kfault_lab.hosts import Lab

PINGS = 200
ROUNDS = 3
IPERF_SECONDS = 5


def chaos(name, action, **fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "NetworkChaos",
                                  "metadata": {"name": name}, "spec": {"action": action, **fields}})


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Netem:
    """netem as the root qdisc of A's side of the veth, as a netem user would set it."""

    def __init__(self, lab, dev, settings):
        self.lab, self.dev = lab, dev
        lab.run("a", f"tc qdisc add dev {dev} root netem {settings}")

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.lab.run("a", f"tc qdisc del dev {self.dev} root")


def delay_errors(lab, address, baseline):
    rtts = lab.ping_rtts("a", address, PINGS, interval=0.02)
    return [abs(rtt - baseline - 50.0) for rtt in rtts]


def delay_accuracy(lab, engine, target, dev, b_ip):
    baseline = statistics.median(lab.ping_rtts("a", b_ip, PINGS, interval=0.02))
    engine.apply(chaos("delay", "delay", delay={"latency": "50ms"}), target)
    ours = delay_errors(lab, b_ip, baseline)
    engine.revoke_all()
    with Netem(lab, dev, "delay 50ms"):
        theirs = delay_errors(lab, b_ip, baseline)
    print(f"1. delay 50ms, {PINGS} pings, |RTT - (baseline {baseline:.3f} ms + 50 ms)|:")
    print(f"   {'':8} {'median':>9} {'p99':>9}")
    for name, errors in (("kfault", ours), ("netem", theirs)):
        print(f"   {name:<8} {statistics.median(errors):7.3f}ms {percentile(errors, 0.99):7.3f}ms")
    print(f"   ratio kfault/netem: median {statistics.median(ours) / max(statistics.median(theirs), 1e-3):.2f}, "
          f"p99 {percentile(ours, 0.99) / max(percentile(theirs, 0.99), 1e-3):.2f}")


def iperf(lab, b_ip):
    server = lab.popen("b", "iperf3 -s -1")
    time.sleep(0.5)
    try:
        out = lab.run("a", f"iperf3 -c {b_ip} -t {IPERF_SECONDS} -J").stdout
    finally:
        server.wait(timeout=10)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"]


def loss_throughput(lab, engine, target, dev, b_ip):
    results = {"none": [], "kfault": [], "netem": []}
    for _ in range(ROUNDS):   # interleaved, so drift hits every case alike
        results["none"].append(iperf(lab, b_ip))
        engine.apply(chaos("loss", "loss", loss={"loss": "1"}), target)
        results["kfault"].append(iperf(lab, b_ip))
        engine.revoke_all()
        with Netem(lab, dev, "loss 1%"):
            results["netem"].append(iperf(lab, b_ip))
    medians = {name: statistics.median(values) for name, values in results.items()}
    print(f"2. TCP throughput A->B, loss 1%, iperf3 {IPERF_SECONDS}s x {ROUNDS} rounds (median):")
    for name, value in medians.items():
        print(f"   {name:<8} {value / 1e6:9.1f} Mbit/s   {value / medians['none']:5.3f} of no loss")
    print(f"   ratio kfault/netem: {medians['kfault'] / medians['netem']:.2f}")


def main():
    datapath = loader.NetDatapath()
    engine = netfault.NetFaultEngine(datapath, capabilities.probe_capabilities())
    lab = Lab()
    try:
        _, b_ip = lab.link("a", "b", "10.250.1")
        target = topology.resolve_net_target(f"netns:{lab.ns('a')}")
        dev = target.interfaces[0].inside.ifname
        delay_accuracy(lab, engine, target, dev, b_ip)
        loss_throughput(lab, engine, target, dev, b_ip)
    finally:
        engine.revoke_all()
        lab.close()
        datapath.close()


if __name__ == "__main__":
    main()
