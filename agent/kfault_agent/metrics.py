"""Prometheus surface: what the engines count (engines/counts.py), read from the kernel at
scrape time, no polling thread, formatted here as metric families. Their names and labels are
what the dashboard and the alert rules (manifests/) query: keep them."""
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from kfault_agent.engines.counts import (DnsCounts, HttpCounts, IOCounts, NetCounts, PodCounts, StressCounts,
                                         SyscallCounts)

PACKET_LABELS = ["experiment", "target", "action", "direction", "outcome"]
SYSCALL_LABELS = ["experiment", "target", "method", "outcome"]
POD_LABELS = ["experiment", "target", "action"]
MESSAGE_LABELS = ["experiment", "target", "action", "outcome"]


def net_families(counts):
    packets = CounterMetricFamily("kfault_packets", "Packets matched by kfault rules, by what was done to them.",
                                  labels=PACKET_LABELS)
    octets = CounterMetricFamily("kfault_bytes", "Bytes matched by kfault rules, by what was done to them.",
                                 labels=PACKET_LABELS)
    rules = GaugeMetricFamily("kfault_rules_active", "Kernel rules in force, by experiment and target.",
                              labels=["experiment", "target"])
    for placement in counts.placements:
        rules.add_metric([placement.experiment, placement.target], placement.rules)
        for direction, outcomes in placement.directions.items():
            for outcome, traffic in outcomes.items():
                labels = [placement.experiment, placement.target, placement.action, direction, outcome]
                packets.add_metric(labels, traffic.packets)
                octets.add_metric(labels, traffic.bytes)
    capability = GaugeMetricFamily("kfault_capability", "1 where this node's kernel has a feature kfault uses.",
                                   labels=["feature"])
    for name, available in counts.capabilities.items():
        capability.add_metric([name], 1 if available else 0)
    return [packets, octets, rules, capability]


def io_families(counts):
    calls = CounterMetricFamily("kfault_syscalls", "File I/O syscalls matched by kfault rules, by outcome.",
                                labels=SYSCALL_LABELS)
    delay = CounterMetricFamily("kfault_syscall_delay_seconds", "Latency injected into file I/O syscalls.",
                                labels=["experiment", "target"])
    for placement in counts.placements:
        for method, outcomes in placement.calls.items():
            for outcome, count in outcomes.items():
                calls.add_metric([placement.experiment, placement.target, method, outcome], count)
        delay.add_metric([placement.experiment, placement.target], placement.delay_ns / 1e9)
    return [calls, delay]


def syscall_families(counts):
    calls = CounterMetricFamily("kfault_syscall_chaos_calls", "System calls a SyscallChaos rule decided, by "
                                "syscall and outcome (passed, failed, delayed).",
                                labels=["experiment", "target", "action", "syscall", "outcome"])
    delay = CounterMetricFamily("kfault_syscall_chaos_delay_seconds", "Latency injected into system calls by "
                                "SyscallChaos.", labels=["experiment", "target"])
    for placement in counts.placements:
        for name, outcomes in placement.calls.items():
            for outcome, count in outcomes.items():
                calls.add_metric([placement.experiment, placement.target, placement.action, name, outcome], count)
        delay.add_metric([placement.experiment, placement.target], placement.delay_ns / 1e9)
    return [calls, delay]


def pod_families(counts):
    faults = CounterMetricFamily("kfault_pod_faults", "PodChaos faults injected: cgroups frozen, containers killed.",
                                 labels=POD_LABELS)
    for (key, target, action), count in counts.injected.items():
        faults.add_metric([key, target, action], count)
    frozen = GaugeMetricFamily("kfault_pods_frozen", "Cgroups frozen by pod-failure right now.", labels=POD_LABELS)
    for placement in counts.placements:
        frozen.add_metric([placement.experiment, placement.target, placement.action], 1)
    return [faults, frozen]


def stress_families(counts):
    running = GaugeMetricFamily("kfault_stressors", "StressChaos stressor processes running, by kind.",
                                labels=POD_LABELS + ["stressor"])
    cpu = CounterMetricFamily("kfault_stress_cpu_seconds", "CPU time StressChaos stressors got (their cgroup's "
                              "cpu.stat); its rate is the CPUs they hold.", labels=POD_LABELS)
    cpu_target = GaugeMetricFamily("kfault_stress_cpus", "CPUs StressChaos stressors are to hold.", labels=POD_LABELS)
    memory = GaugeMetricFamily("kfault_stress_memory_bytes", "Memory StressChaos stressors hold resident.",
                               labels=POD_LABELS)
    for placement in counts.placements:
        labels = [placement.experiment, placement.target, placement.action]
        for kind, count in placement.stressors.items():
            running.add_metric(labels + [kind], count)
        cpu.add_metric(labels, placement.cpu_seconds)
        cpu_target.add_metric(labels, placement.cpus)
        memory.add_metric(labels, placement.memory_bytes)
    return [running, cpu, cpu_target, memory]



def _message_families(name, kind, what, counts):
    """A kind whose placements count messages by outcome (DNSChaos, HTTPChaos): kfault_<name>_messages
    and kfault_<name>_rules_active."""
    messages = CounterMetricFamily(f"kfault_{name}_messages", f"{what} a {kind} rule selected, by what was done "
                                   "to them.", labels=MESSAGE_LABELS)
    rules = GaugeMetricFamily(f"kfault_{name}_rules_active", f"{kind} placements in force, by experiment and target.",
                              labels=["experiment", "target"])
    for placement in counts.placements:
        rules.add_metric([placement.experiment, placement.target], 1)
        for outcome, count in placement.messages.items():
            messages.add_metric([placement.experiment, placement.target, placement.action, outcome], count)
    return [messages, rules]


def dns_families(counts):
    return _message_families("dns", "DNSChaos", "DNS queries and answers", counts)


def http_families(counts):
    return _message_families("http", "HTTPChaos", "HTTP requests and responses", counts)


# Each engine's counts -> its families.
FAMILIES = {NetCounts: net_families, IOCounts: io_families, PodCounts: pod_families, StressCounts: stress_families,
            SyscallCounts: syscall_families, DnsCounts: dns_families,
            HttpCounts: http_families}


def families(counts):
    return FAMILIES[type(counts)](counts)


class EngineCollector:
    """What the engines count, at every scrape."""

    def __init__(self, engines):
        self.engines = list(engines)

    def collect(self):
        for engine in self.engines:
            yield from families(engine.counts())


def serve(engines, port, registry=None):
    """One /metrics on `port` for every engine."""
    from prometheus_client import REGISTRY, start_http_server
    registry = registry or REGISTRY
    registry.register(EngineCollector(engines))
    return start_http_server(port, registry=registry)
