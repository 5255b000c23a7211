"""Prometheus counters read from the BPF maps, in a format promtool accepts."""
import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kfault_agent.kernel import topology
from kfault_agent.metrics import EngineCollector
from kfault_api import spec

pytestmark = pytest.mark.kernel("tc-bpf", "clsact")


def test_counters_are_scraped_from_the_maps_and_pass_promtool(lab, engine):
    lab.link("a", "b", "10.250.1")
    experiment = spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "NetworkChaos",
                                        "metadata": {"name": "m"},
                                        "spec": {"action": "loss", "loss": {"loss": "50"}}})
    engine.apply(experiment, topology.resolve_net_target(f"netns:{lab.ns('a')}"))
    lab.udp("a", "b", "10.250.1.2", 1000)
    registry = CollectorRegistry()
    registry.register(EngineCollector([engine]))
    text = generate_latest(registry).decode()
    target = f"netns:{lab.ns('a')}"
    matched = registry.get_sample_value("kfault_packets_total", {
        "experiment": "default/m", "target": target, "action": "loss", "direction": "to", "outcome": "matched"})
    dropped = registry.get_sample_value("kfault_packets_total", {
        "experiment": "default/m", "target": target, "action": "loss", "direction": "to", "outcome": "dropped"})
    assert matched == 1000 and 400 <= dropped <= 600
    assert registry.get_sample_value("kfault_capability", {"feature": "tc-bpf"}) == 1
    if not shutil.which("promtool"):
        pytest.skip("promtool is not installed (Debian: prometheus)")
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
