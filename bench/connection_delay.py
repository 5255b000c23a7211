"""NetworkChaos `delay.per: connection` against no fault and against netem's per-packet delay
(kfault's `per: packet`), in one run (needs sch_fq: run it on a stock kernel with
`make bench-conndelay`).

A real TCP client in A (lab's connect_probe) against a server in B, 200 ms asked on A's sends:
  1. connect time: CONNECTS connect() calls per round; the extra over the round's own no-fault
     median, and its error against the asked 200 ms (median and worst);
  2. a 1 MB download on a connection opened under the fault, TRANSFERS per round: its median
     time, and the ratio to no fault.
Rounds interleave the cases, the order turning each round, so drift hits every case alike.
"""
import statistics

from kfault_agent.engines import netfault
from kfault_agent.kernel import capabilities, loader, topology
from kfault_api import spec
from kfault_lab import connect_probe
from kfault_lab.hosts import Lab

DELAY_MS = 200
ROUNDS = 3
CONNECTS = 20
TRANSFERS = 5
SIZE = 1 << 20
PORT = 5201
LEASE_S = 3600               # longer than the run under TCG


def chaos(per):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "NetworkChaos",
                                  "metadata": {"name": f"per-{per}"},
                                  "spec": {"action": "delay", "delay": {"latency": f"{DELAY_MS}ms", "per": per}}})


def measure(lab, engine, target, b_ip, per):
    if per:
        engine.apply(chaos(per), target)
    try:
        return connect_probe.measure_in(lab, "a", b_ip, PORT, CONNECTS, SIZE, TRANSFERS)
    finally:
        lapsed = engine.lapsed()
        engine.revoke_all()
        assert not lapsed, f"kfault's lease lapsed during the measurement: {lapsed}"


def main():
    datapath = loader.NetDatapath()
    engine = netfault.NetFaultEngine(datapath, capabilities.probe_capabilities(), lease_s=LEASE_S)
    lab = Lab()
    server = None
    try:
        _, b_ip = lab.link("a", "b", "10.250.1")
        server = connect_probe.ConnectServer(lab, "b", PORT)
        target = topology.resolve_net_target(f"netns:{lab.ns('a')}")
        connect_probe.measure_in(lab, "a", b_ip, PORT, 1, SIZE, 1)     # neighbours resolved, caches warm
        cases = [None, "connection", "packet"]
        extra = {case: [] for case in cases[1:]}
        transfer = {case: [] for case in cases}
        for round_ in range(ROUNDS):
            got = {case: measure(lab, engine, target, b_ip, case)
                   for case in cases[round_ % 3:] + cases[:round_ % 3]}
            baseline = statistics.median(got[None]["connect_ms"])
            for case in cases:
                transfer[case] += got[case]["transfer_ms"]
                if case:
                    extra[case] += [ms - baseline for ms in got[case]["connect_ms"]]
        plain = statistics.median(transfer[None])
        print(f"delay {DELAY_MS}ms on A's sends, {ROUNDS} interleaved rounds; "
              f"{CONNECTS} connects and {TRANSFERS} downloads of {SIZE >> 20} MB per round and case")
        print(f"   {'':16} {'connect +ms':>11} {'|err| median':>12} {'|err| max':>9} {'1 MB ms':>8} {'ratio':>6}")
        print(f"   {'no fault':<16} {'':>11} {'':>12} {'':>9} {plain:8.2f} {1:6.2f}")
        for case in cases[1:]:
            errors = [abs(ms - DELAY_MS) for ms in extra[case]]
            took = statistics.median(transfer[case])
            print(f"   {'per: ' + case:<16} {statistics.median(extra[case]):11.2f} {statistics.median(errors):12.2f} "
                  f"{max(errors):9.2f} {took:8.2f} {took / plain:6.2f}")
    finally:
        engine.revoke_all()
        if server:
            server.close()
        lab.close()
        datapath.close()


if __name__ == "__main__":
    main()
