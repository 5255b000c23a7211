"""Prometheus surface: counters read from the BPF maps at scrape time, no polling thread."""
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


NET_LABELS = ["experiment", "target", "action", "direction", "outcome"]


class NetFaultCollector:
    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        packets = CounterMetricFamily("kfault_packets", "Packets matched by kfault rules, by what was done to them.",
                                      labels=NET_LABELS)
        octets = CounterMetricFamily("kfault_bytes", "Bytes matched by kfault rules, by what was done to them.",
                                     labels=NET_LABELS)
        rules = GaugeMetricFamily("kfault_rules_active", "Kernel rules in force, by experiment and target.",
                                  labels=["experiment", "target"])
        for active in self.engine.active():
            action = active.experiment.action
            rules.add_metric([active.experiment.key, active.target.name], len(active.rules))
            for direction, outcomes in self.engine.counters(active).items():
                for outcome, (count, size) in outcomes.items():
                    labels = [active.experiment.key, active.target.name, action, direction, outcome]
                    packets.add_metric(labels, count)
                    octets.add_metric(labels, size)
        capability = GaugeMetricFamily("kfault_capability", "1 where this node's kernel has a feature kfault uses.",
                                       labels=["feature"])
        for cap in self.engine.capabilities.values():
            capability.add_metric([cap.name], 1 if cap.available else 0)
        yield from (packets, octets, rules, capability)


IO_LABELS = ["experiment", "target", "method", "outcome"]


class IOFaultCollector:
    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        calls = CounterMetricFamily("kfault_syscalls", "File I/O syscalls matched by kfault rules, by outcome.",
                                    labels=IO_LABELS)
        delay = CounterMetricFamily("kfault_syscall_delay_seconds", "Latency injected into file I/O syscalls.",
                                    labels=["experiment", "target"])
        for active in self.engine.active():
            by_method, delay_ns = self.engine.counters(active)
            for method, outcomes in by_method.items():
                for outcome, count in outcomes.items():
                    calls.add_metric([active.experiment.key, active.target.name, method, outcome], count)
            delay.add_metric([active.experiment.key, active.target.name], delay_ns / 1e9)
        yield from (calls, delay)


POD_LABELS = ["experiment", "target", "action"]


class PodFaultCollector:
    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        faults = CounterMetricFamily("kfault_pod_faults", "PodChaos faults injected: cgroups frozen, containers killed.",
                                     labels=POD_LABELS)
        for (key, target, action), count in self.engine.injected().items():
            faults.add_metric([key, target, action], count)
        frozen = GaugeMetricFamily("kfault_pods_frozen", "Cgroups frozen by pod-failure right now.",
                                   labels=POD_LABELS)
        for active in self.engine.active():
            frozen.add_metric([active.experiment.key, active.target.name, active.experiment.action], 1)
        yield from (faults, frozen)


def collector_for(engine):
    from kfault_agent.engines.iofault import IOFaultEngine
    from kfault_agent.engines.netfault import NetFaultEngine
    from kfault_agent.engines.podfault import PodFaultEngine
    for engine_type, collector in ((NetFaultEngine, NetFaultCollector), (IOFaultEngine, IOFaultCollector),
                                   (PodFaultEngine, PodFaultCollector)):
        if isinstance(engine, engine_type):
            return collector(engine)
    raise TypeError(f"no metrics for {type(engine).__name__}")


def serve(engines, port, registry=None):
    """One /metrics on `port` for every engine."""
    from prometheus_client import REGISTRY, start_http_server
    registry = registry or REGISTRY
    for engine in engines:
        registry.register(collector_for(engine))
    return start_http_server(port, registry=registry)
