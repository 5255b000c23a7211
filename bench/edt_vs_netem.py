"""kfault vs `tc netem` at the same settings, side by side in one run (needs sch_fq and
sch_netem: run it on a stock kernel with `make kernel-bench`).

  1. Delay accuracy: delay 50ms on A's sends; error of each ping RTT against the round's
     baseline + 50 ms; median and p99 of |error| over every round, kfault and netem, and their
     ratio. Rounds interleave the two, each going first in every other round.
  2. TCP throughput A->B with 1% loss: kfault (drop at B's side of the veth) vs netem (loss
     in A's root qdisc); median of interleaved rounds, the order turning each round.
The engine's lease outlasts the whole run (nothing renews it): a lapse in the middle of a
measurement would hand the link back fault-free; each measurement checks it did not.
"""
import contextlib
import json
import math
import statistics
import time

from kfault_agent.engines import netfault
from kfault_agent.kernel import capabilities, loader, topology
from kfault_api import spec
from kfault_lab.hosts import Lab

DELAY_ROUNDS = 5
PINGS = 240                  # per round and side: 1,200 in all, so p99 rests on its 12 largest
BASELINE_PINGS = 100
ROUNDS = 5
IPERF_SECONDS = 5
LEASE_S = 3600               # longer than the run under TCG (a few minutes)
TAIL_SAMPLES = 10            # a percentile is quoted only with at least this many samples above it


def chaos(name, action, **fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "NetworkChaos",
                                  "metadata": {"name": name}, "spec": {"action": action, **fields}})


def percentile(values, fraction):
    """Nearest rank; refuses a percentile the samples can't support."""
    above = len(values) * (1 - fraction)
    if above < TAIL_SAMPLES:
        raise ValueError(f"{len(values)} samples leave {above:.1f} above the {fraction:.0%} percentile; "
                         f"quote it with at least {TAIL_SAMPLES}")
    return sorted(values)[math.ceil(fraction * len(values)) - 1]


class Netem:
    """netem as the root qdisc of A's side of the veth, as a netem user would set it."""

    def __init__(self, lab, dev, settings):
        self.lab, self.dev = lab, dev
        lab.run("a", f"tc qdisc add dev {dev} root netem {settings}")

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.lab.run("a", f"tc qdisc del dev {self.dev} root")


class Kfault:
    """kfault's engine placing one experiment for a measurement, checking it held throughout."""

    def __init__(self, engine, target, experiment):
        self.engine, self.target, self.experiment = engine, target, experiment

    def __enter__(self):
        self.engine.apply(self.experiment, self.target)
        return self

    def __exit__(self, *_):
        lapsed = self.engine.lapsed()
        self.engine.revoke_all()
        if lapsed:
            raise AssertionError(f"kfault's lease lapsed during the measurement: {lapsed}")


def delay_accuracy(lab, engine, target, dev, b_ip):
    faults = {"kfault": lambda: Kfault(engine, target, chaos("delay", "delay", delay={"latency": "50ms"})),
              "netem": lambda: Netem(lab, dev, "delay 50ms")}
    errors = {name: [] for name in faults}
    baselines = []
    for round_ in range(DELAY_ROUNDS):     # interleaved, each first every other round: drift hits both
        baseline = statistics.median(lab.ping_rtts("a", b_ip, BASELINE_PINGS, interval=0.02))
        baselines.append(baseline)
        for name in sorted(faults, reverse=bool(round_ % 2)):
            with faults[name]():
                rtts = lab.ping_rtts("a", b_ip, PINGS, interval=0.02)
            errors[name] += [abs(rtt - baseline - 50.0) for rtt in rtts]
    print(f"1. delay 50ms, {DELAY_ROUNDS} interleaved rounds of {PINGS} pings each "
          f"(replies: kfault {len(errors['kfault'])}, netem {len(errors['netem'])}), "
          f"|RTT - (the round's baseline, median {statistics.median(baselines):.3f} ms, + 50 ms)|:")
    print(f"   {'':8} {'median':>9} {'p99':>9}")
    for name, values in errors.items():
        print(f"   {name:<8} {statistics.median(values):7.3f}ms {percentile(values, 0.99):7.3f}ms")
    ours, theirs = errors["kfault"], errors["netem"]
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
    faults = {"none": contextlib.nullcontext,
              "kfault": lambda: Kfault(engine, target, chaos("loss", "loss", loss={"loss": "1"})),
              "netem": lambda: Netem(lab, dev, "loss 1%")}
    names = list(faults)
    results = {name: [] for name in names}
    for round_ in range(ROUNDS):   # interleaved, the order turning each round, so drift hits every case alike
        for name in names[round_ % 3:] + names[:round_ % 3]:
            with faults[name]():
                results[name].append(iperf(lab, b_ip))
    medians = {name: statistics.median(values) for name, values in results.items()}
    print(f"2. TCP throughput A->B, loss 1%, iperf3 {IPERF_SECONDS}s x {ROUNDS} interleaved rounds (median):")
    for name, value in medians.items():
        print(f"   {name:<8} {value / 1e6:9.1f} Mbit/s   {value / medians['none']:5.3f} of no loss")
    print(f"   ratio kfault/netem: {medians['kfault'] / medians['netem']:.2f}")


def main():
    datapath = loader.NetDatapath()
    engine = netfault.NetFaultEngine(datapath, capabilities.probe_capabilities(), lease_s=LEASE_S)
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
