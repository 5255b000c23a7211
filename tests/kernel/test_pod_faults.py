"""PodChaos in the kernel: pod-failure freezes a cgroup's real processes and thaws them, and a
killed agent leaves nothing frozen."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import grpc
import pytest

from kfault_agent import server
from kfault_agent.engines import podfault
from kfault_agent.kernel import topology
from kfault_api import spec
from kfault_api.rpc import agent_pb2 as pb
from kfault_api.rpc import agent_pb2_grpc as pb_grpc
from tests.victims import remove_cgroup


LAPSING_LEASE_S = 1.0     # the shortest an agent takes (request_checks.LEASE_MIN_S)


def pod_chaos(action="pod-failure", **fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "PodChaos",
                                  "metadata": {"name": "freeze"}, "spec": {"action": action, **fields}})


@pytest.fixture
def cgroup_with_a_counter(tmp_path):
    """A cgroup holding a process that adds a line to a file every 10 ms (appends: a process
    frozen mid-write never leaves the file looking empty)."""
    path = os.path.join(topology.cgroup2_mount(), "kft-pod-" + uuid.uuid4().hex[:6])
    os.mkdir(path)
    counter = tmp_path / "count"
    counter.write_text("")
    # It says when it is in the cgroup, as the lab's other processes say where they are.
    proc = subprocess.Popen(["sh", "-c", f"echo $$ > {path}/cgroup.procs && echo in && "
                             f"while true; do echo . >> {counter}; sleep 0.01; done"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "in\n", f"the counter did not join {path}"
    proc.stdout.close()
    yield path, counter, proc
    podfault.set_frozen(path, False)
    proc.kill()
    proc.wait()
    remove_cgroup(path)


def progress(counter, seconds=0.4):
    before = counter.read_text().count("\n")
    time.sleep(seconds)
    return counter.read_text().count("\n") - before


@pytest.mark.stock_kernel("the cgroup v2 freezer of a unified hierarchy")
def test_pod_failure_freezes_and_recovery_thaws(cgroup_with_a_counter, tmp_path):
    path, counter, _ = cgroup_with_a_counter
    engine = podfault.PodFaultEngine(guard=podfault.ThawGuard(str(tmp_path)))
    try:
        engine.apply(pod_chaos(), topology.CgroupTarget("pod", path))     # returns once frozen
        assert podfault.is_frozen(path) and progress(counter) == 0
        engine.revoke("default/freeze", "pod")
        assert not podfault.is_frozen(path) and progress(counter, 1.0) >= 2   # slow under emulation
    finally:
        engine.close()


def wait_thawed(path, timeout=10):
    """Poll until the cgroup is thawed; returns when (monotonic s) it was seen thawed."""
    deadline = time.monotonic() + timeout
    while podfault.is_frozen(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    return time.monotonic()


def test_a_lapsed_lease_thaws(cgroup_with_a_counter, tmp_path):
    """A freeze has no deadline in the kernel: it is the agent's housekeeping that thaws a pod
    whose lease lapsed unrenewed (a controller gone quiet), placed here through the agent's API."""
    path, counter, _ = cgroup_with_a_counter
    engine = podfault.PodFaultEngine(guard=podfault.ThawGuard(str(tmp_path)))
    service = server.AgentService([engine], {})
    grpc_server, port = server.serve(service, "127.0.0.1:0")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        asked = time.monotonic()
        reply = pb_grpc.AgentStub(channel).Apply(pb.ApplyRequest(
            experiment="default/freeze", kind="PodChaos", spec_json=json.dumps({"action": "pod-failure"}),
            targets=[pb.Target(local=f"cgroup:{path}")], lease_seconds=LAPSING_LEASE_S), timeout=60)
        assert [r.ok for r in reply.results] == [True], reply
        assert podfault.is_frozen(path), "the pod was not frozen"
        thawed = wait_thawed(path, timeout=LAPSING_LEASE_S + 10)
        assert not podfault.is_frozen(path), "the lapsed lease left the pod frozen"
        assert thawed - asked >= LAPSING_LEASE_S, "thawed before its lease lapsed"
        assert progress(counter, 1.0) >= 2, "the pod's process does not run again"   # slow under emulation
        assert engine.active() == []
    finally:
        channel.close()
        grpc_server.stop(None)
        service.close()
        engine.close()


AGENT = """
import sys, time
from kfault_agent.engines import podfault
from kfault_agent.kernel import topology
from kfault_api import spec
engine = podfault.PodFaultEngine(guard=podfault.ThawGuard(sys.argv[2]))
doc = {"apiVersion": spec.API_VERSION, "kind": "PodChaos", "metadata": {"name": "f"}, "spec": {"action": "pod-failure"}}
engine.apply(spec.parse_experiment(doc), topology.CgroupTarget("pod", sys.argv[1]))
print("frozen", flush=True)
time.sleep(600)
"""


def test_a_killed_agent_leaves_nothing_frozen(cgroup_with_a_counter, tmp_path):
    path, counter, _ = cgroup_with_a_counter
    agent = subprocess.Popen([sys.executable, "-c", AGENT, path, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    assert agent.stdout.readline().strip() == "frozen"
    assert progress(counter) == 0
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait()
    # the guard thaws on the agent's death signal: at once, but under emulation "at once" has
    # taken more than 0.3 s (a bound, not a measure)
    wait_thawed(path)
    assert not podfault.is_frozen(path) and progress(counter, 1.0) >= 2


def test_container_kill_kills_the_containers_processes(cgroup_with_a_counter, tmp_path):
    path, _, proc = cgroup_with_a_counter
    engine = podfault.PodFaultEngine(guard=podfault.ThawGuard(str(tmp_path)))
    try:
        engine.apply(pod_chaos("container-kill", containerNames=["main"]), topology.CgroupTarget("main", path))
        assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        engine.close()


def test_faults_are_counted_for_prometheus_and_the_controller(cgroup_with_a_counter, tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest

    from kfault_agent.metrics import EngineCollector
    path, _, proc = cgroup_with_a_counter
    engine = podfault.PodFaultEngine(guard=podfault.ThawGuard(str(tmp_path)))
    registry = CollectorRegistry()
    registry.register(EngineCollector([engine]))
    try:
        engine.apply(pod_chaos(), topology.CgroupTarget("pod", path))
        labels = {"experiment": "default/freeze", "target": "pod", "action": "pod-failure"}
        assert registry.get_sample_value("kfault_pods_frozen", labels) == 1
        engine.revoke("default/freeze", "pod")
        engine.apply(pod_chaos(), topology.CgroupTarget("pod", path))
        engine.revoke("default/freeze", "pod")
        assert registry.get_sample_value("kfault_pod_faults_total", labels) == 2
        assert registry.get_sample_value("kfault_pods_frozen", labels) is None
        assert engine.counter_rows("default/freeze") == [("pod", "pod-failure", "injected", 2)]
        assert_promtool_accepts(generate_latest(registry).decode())
    finally:
        engine.close()


def assert_promtool_accepts(text):
    import shutil
    if not shutil.which("promtool"):
        pytest.skip("promtool is not installed (Debian: prometheus)")
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_local_runner_freezes_for_the_duration_then_thaws(cgroup_with_a_counter, tmp_path):
    path, counter, _ = cgroup_with_a_counter
    doc = tmp_path / "freeze.yaml"
    doc.write_text(f"apiVersion: {spec.API_VERSION}\nkind: PodChaos\nmetadata: {{name: freeze}}\n"
                   "spec: {action: pod-failure, duration: 5s}\n")
    runner = subprocess.Popen([sys.executable, "-m", "kfault_agent.cli", "run", "-f", str(doc),
                               "--target", f"cgroup:{path}"], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "KFAULT_STATE_DIR": str(tmp_path)})
    try:
        assert "injecting" in runner.stdout.readline()
        assert podfault.is_frozen(path) and progress(counter) == 0
        assert runner.wait(timeout=60) == 0
        assert "all faults removed" in runner.stdout.read()
        assert not podfault.is_frozen(path) and progress(counter, 1.0) >= 2
    finally:
        runner.kill()
        runner.wait()


def test_a_later_agent_thaws_what_a_dead_one_recorded_and_only_that(tmp_path):
    from kfault_agent.kernel import owners
    paths = []
    try:
        for _ in range(2):
            paths.append(os.path.join(topology.cgroup2_mount(), "kft-pod-" + uuid.uuid4().hex[:6]))
            os.mkdir(paths[-1])
            podfault.set_frozen(paths[-1], True)
        dead, alive = paths
        (tmp_path / "frozen-999999999.1.json").write_text(f'["{dead}"]')       # no such process
        (tmp_path / f"frozen-{owners.tag(1)}.json").write_text(f'["{alive}"]')  # init: alive
        podfault.ThawGuard(str(tmp_path)).close()
        assert not podfault.is_frozen(dead) and podfault.is_frozen(alive)
        assert sorted(p.name for p in tmp_path.iterdir()) == [f"frozen-{owners.tag(1)}.json"]
    finally:
        for path in paths:
            podfault.set_frozen(path, False)
            os.rmdir(path)
