"""PodChaos in the kernel: pod-failure freezes a cgroup's real processes and thaws them, and a
killed agent leaves nothing frozen."""
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from kfault_agent import podfault, spec, topology


def pod_chaos(action="pod-failure", **fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "PodChaos",
                                  "metadata": {"name": "freeze"}, "spec": {"action": action, **fields}})


@pytest.fixture
def cgroup_with_a_counter(tmp_path):
    """A cgroup holding a process that bumps a file every 10 ms."""
    path = os.path.join(topology.cgroup2_mount(), "kft-pod-" + uuid.uuid4().hex[:6])
    os.mkdir(path)
    counter = tmp_path / "count"
    proc = subprocess.Popen(["sh", "-c", f"echo $$ > {path}/cgroup.procs; i=0; "
                             f"while true; do i=$((i+1)); echo $i > {counter}; sleep 0.01; done"])
    time.sleep(0.3)
    yield path, counter, proc
    podfault.set_frozen(path, False)
    proc.kill()
    proc.wait()
    for _ in range(50):
        try:
            os.rmdir(path)
            break
        except OSError:
            time.sleep(0.05)


def progress(counter, seconds=0.4):
    before = int(counter.read_text() or 0)
    time.sleep(seconds)
    return int(counter.read_text() or 0) - before


def test_pod_failure_freezes_and_recovery_thaws(cgroup_with_a_counter, tmp_path):
    path, counter, _ = cgroup_with_a_counter
    engine = podfault.PodFaultEngine(guard=podfault.ThawGuard(str(tmp_path / "frozen.json")))
    try:
        engine.apply(pod_chaos(), topology.CgroupTarget("pod", path))
        time.sleep(0.1)
        assert podfault.is_frozen(path) and progress(counter) == 0
        engine.revoke("default/freeze", "pod")
        assert not podfault.is_frozen(path) and progress(counter, 1.0) >= 2   # slow under emulation
    finally:
        engine.close()


def test_a_lapsed_lease_thaws(cgroup_with_a_counter, tmp_path):
    path, counter, _ = cgroup_with_a_counter
    engine = podfault.PodFaultEngine(lease_s=0.5, guard=podfault.ThawGuard(str(tmp_path / "frozen.json")))
    try:
        engine.apply(pod_chaos(), topology.CgroupTarget("pod", path))
        time.sleep(0.6)
        assert engine.lapsed() == [("default/freeze", "pod")]
    finally:
        engine.close()


AGENT = """
import sys, time
from kfault_agent import podfault, spec, topology
engine = podfault.PodFaultEngine(guard=podfault.ThawGuard(sys.argv[2]))
doc = {"apiVersion": spec.API_VERSION, "kind": "PodChaos", "metadata": {"name": "f"}, "spec": {"action": "pod-failure"}}
engine.apply(spec.parse_experiment(doc), topology.CgroupTarget("pod", sys.argv[1]))
print("frozen", flush=True)
time.sleep(600)
"""


def test_a_killed_agent_leaves_nothing_frozen(cgroup_with_a_counter, tmp_path):
    path, counter, _ = cgroup_with_a_counter
    agent = subprocess.Popen([sys.executable, "-c", AGENT, path, str(tmp_path / "frozen.json")],
                             stdout=subprocess.PIPE, text=True)
    assert agent.stdout.readline().strip() == "frozen"
    assert progress(counter) == 0
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait()
    time.sleep(0.3)
    assert not podfault.is_frozen(path) and progress(counter, 1.0) >= 2


def test_container_kill_kills_the_containers_processes(cgroup_with_a_counter, tmp_path):
    path, _, proc = cgroup_with_a_counter
    engine = podfault.PodFaultEngine(guard=podfault.ThawGuard(str(tmp_path / "frozen.json")))
    try:
        engine.apply(pod_chaos("container-kill", containerNames=["main"]), topology.CgroupTarget("main", path))
        assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        engine.close()
