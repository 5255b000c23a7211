"""The agent's answers to kubelet, state by state: the DaemonSet's own probes against the
agent's health server (health.py), without a kernel. tests/kernel/test_probes.py runs the real
agent with the manifest's args."""
import pytest

from kfault_agent import health
from tests import kubelet
from tests.doubles import RecordingEngine

AGENT = kubelet.container("agent/daemonset.yaml", "DaemonSet")


@pytest.fixture
def probes():
    port = kubelet.free_port()
    server = health.HealthServer(f"127.0.0.1:{port}")
    yield server, {kubelet.probe_port(AGENT, AGENT["livenessProbe"]["grpc"]): port}
    server.stop()


def passed(ports):
    return {name: ok for name, (ok, _) in kubelet.run_all(AGENT, ports).items()}


def test_the_daemonset_declares_startup_liveness_and_readiness_on_the_health_port():
    probes = kubelet.declared_probes(AGENT)
    assert set(probes) == set(kubelet.PROBES)
    health_port = next(p["containerPort"] for p in AGENT["ports"] if p["name"] == "health")
    assert {kubelet.probe_port(AGENT, probe["grpc"]) for probe in probes.values()} == {health_port}
    # Compiling both datapaths takes ~35 s on a slow node: the startup probe must outwait it.
    startup = probes["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_every_probe_fails_while_the_datapaths_load(probes):
    _, ports = probes
    assert passed(ports) == {"startupProbe": False, "livenessProbe": False, "readinessProbe": False}


def test_every_probe_passes_once_the_api_serves_with_an_engine(probes):
    server, ports = probes
    server.serving([RecordingEngine()])
    assert passed(ports) == {"startupProbe": True, "livenessProbe": True, "readinessProbe": True}


def test_an_agent_where_nothing_loaded_lives_but_is_not_ready(probes):
    server, ports = probes
    server.serving([])
    assert passed(ports) == {"startupProbe": True, "livenessProbe": True, "readinessProbe": False}


def test_every_probe_fails_from_the_moment_shutdown_begins(probes):
    server, ports = probes
    server.serving([RecordingEngine()])
    server.stopping()
    assert passed(ports) == {"startupProbe": False, "livenessProbe": False, "readinessProbe": False}
    server.stop()
    seen = kubelet.run_all(AGENT, ports)
    assert all(not ok and "UNAVAILABLE" in what for ok, what in seen.values()), seen
