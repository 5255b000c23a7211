"""StressChaos in the kernel: stressors in a child cgroup of a container's hold the CPU and the
memory asked, against the container's own limits, and never outlive their experiment. They
need cgroup v2's cpu and memory controllers: the VM tier (this host has them on cgroup v1)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from kfault_agent.engines import stressfault
from kfault_agent.errors import KernelUnsupported
from kfault_agent.kernel import stress, topology
from kfault_api import spec
from kfault_lab.containers import Containers, cpu_held, task_cpu_s
from tests import hangs
from tests.features import skip_unless_required
from tests.victims import wait_until

WARM_UP_S = 5
HOLD_S = 30
CHAOS_MESH = os.path.join(os.path.dirname(__file__), "..", "chaos_mesh", "stress.yaml")


def stress_chaos(name, **fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "StressChaos",
                                  "metadata": {"name": name}, "spec": fields})


@pytest.fixture
def containers():
    """make(cpu_max=None, memory_max=None) -> (cgroup, process): kfault_lab.containers."""
    if stress.missing_controllers():
        skip_unless_required("cgroup v2's cpu and memory controllers (this host has them on cgroup v1)")
    made = Containers()
    yield made.make
    made.close()


@pytest.mark.stock_kernel("cgroup v2's cpu and memory controllers: the host has them on cgroup v1")
def test_cpu_and_memory_held_against_the_containers_limits(containers):
    """All three at once (one 30 s window): 50% of cpu.max 50000/100000 by one worker holds
    0.25 CPU; 50% by two workers without a limit holds one CPU; 256MB is held resident using
    no CPU once held."""
    limited, _ = containers(cpu_max="50000 100000")
    unlimited, _ = containers()
    memory, _ = containers(memory_max=1 << 30)
    engine = stressfault.StressEngine(lease_s=120)
    try:
        a = engine.apply(stress_chaos("quarter", stressors={"cpu": {"workers": 1, "load": 50}}),
                         topology.CgroupTarget("limited", limited))
        b = engine.apply(stress_chaos("one", stressors={"cpu": {"workers": 2, "load": 50}}),
                         topology.CgroupTarget("unlimited", unlimited))
        c = engine.apply(stress_chaos("held", stressors={"memory": {"workers": 1, "size": "256MB"}}),
                         topology.CgroupTarget("memory", memory))
        assert (a.cpus, b.cpus, c.memory_bytes) == (0.25, 1.0, 256_000_000)

        def held():
            return next(p for p in engine.counts().placements if p.target == "memory").memory_bytes
        wait_until(lambda: held() >= 0.98 * 256e6, "the memory worker to hold 256MB", timeout=60)
        time.sleep(WARM_UP_S)
        (worker,) = stress.stressors(c.cgroup)["memory"]
        worker_cpu = task_cpu_s(worker)
        got = cpu_held([a.cgroup, b.cgroup], HOLD_S)
        worker_cpu = (task_cpu_s(worker) - worker_cpu) / HOLD_S
        resident = held()
        print(f"cpu.max 50000/100000, workers 1, load 50: {got[a.cgroup]:.4f} CPU (0.25 asked); "
              f"no limit, workers 2, load 50: {got[b.cgroup]:.4f} CPU (1.0 asked); memory 256MB: {resident} bytes "
              f"resident ({resident / 256e6 - 1:+.2%}), its worker using {worker_cpu:.4f} CPU")
        # Within 2 points, as asked: the loop holds CPU time got, so the host's load (TCG on a
        # shared machine) slows the work done, not the share (bench/stress_accuracy.py: +0.04).
        assert abs(got[a.cgroup] - 0.25) <= 0.02
        assert abs(got[b.cgroup] - 1.0) <= 0.02
        assert abs(resident / 256e6 - 1) < 0.02
        assert worker_cpu < 0.01
    finally:
        engine.close()
    for placement in (a, b, c):
        assert not os.path.exists(placement.cgroup)


def oom_kills(path):
    with open(os.path.join(path, "memory.events"), encoding="ascii") as handle:
        return int(dict(line.split() for line in handle)["oom_kill"])


def node_oom_kills():
    with open("/proc/vmstat", encoding="ascii") as handle:
        return int(dict(line.split() for line in handle)["oom_kill"])


@pytest.mark.stock_kernel("cgroup v2's memory controller: the host has it on cgroup v1")
def test_memory_above_memory_max_is_the_containers_own_oom_kill(containers):
    small, app = containers(memory_max=64 << 20)
    outside, bystander = containers()
    engine = stressfault.StressEngine(lease_s=60)
    node_kills = node_oom_kills()
    try:
        placed = engine.apply(stress_chaos("oom", stressors={"memory": {"workers": 1, "size": "128MB"}}),
                              topology.CgroupTarget("small", small))
        wait_until(lambda: oom_kills(small) >= 1, "the container's OOM killer", timeout=60)
        wait_until(lambda: "memory" not in stress.stressors(placed.cgroup), "the memory worker to be gone")
        print(f"memory.max 64MiB, size 128MB: {oom_kills(small)} OOM kill(s) inside the container, "
              f"{node_oom_kills() - node_kills} on the node; application {'alive' if app.poll() is None else 'killed'}")
        assert oom_kills(outside) == 0 and bystander.poll() is None
        assert node_oom_kills() - node_kills == oom_kills(small)     # every OOM kill of the node was the container's
    finally:
        engine.close()


def test_cgroup_v1_is_refused_by_name():
    if not stress.missing_controllers():
        pytest.skip("this node has cgroup v2's cpu and memory controllers: nothing to refuse")
    with pytest.raises(KernelUnsupported, match="cgroup v1"):
        stressfault.StressEngine.load({})


def describe(stressors):
    """What is left, as /proc says (state, parent), or "gone"."""
    left = []
    for kind, pids in stressors.items():
        for pid in pids:
            try:
                status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status", encoding="ascii"))
                left.append(f"{kind} {pid} {status['State'].strip()} ppid {status['PPid'].strip()}")
            except OSError:
                pass
    return ", ".join(left) or "gone"


AGENT = """
import sys, time
from kfault_agent.engines import stressfault
from kfault_agent.kernel import topology
from kfault_api import spec
engine = stressfault.StressEngine(lease_s=float(sys.argv[2]))
doc = {"apiVersion": spec.API_VERSION, "kind": "StressChaos", "metadata": {"name": "orphan"},
       "spec": {"stressors": {"cpu": {"workers": 2, "load": 20}, "memory": {"workers": 1, "size": "16MB"}}}}
placed = engine.apply(spec.parse_experiment(doc), topology.CgroupTarget("c", sys.argv[1]))
print(placed.cgroup, flush=True)
time.sleep(600)
"""


@pytest.mark.stock_kernel("cgroup v2's cpu and memory controllers: the host has them on cgroup v1")
def test_a_killed_agent_leaves_no_stressor(containers):
    path, _ = containers()
    lease_s = 20.0      # longer than the stressors' start under TCG: it is the agent's death that ends them
    agent = subprocess.Popen([sys.executable, "-c", AGENT, path, str(lease_s)], stdout=subprocess.PIPE, text=True)
    try:
        cgroup = agent.stdout.readline().strip()
        wait_until(lambda: sum(map(len, stress.stressors(cgroup).values())) == 4, "the stressors to start")
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        killed_at = time.monotonic()
        try:
            wait_until(lambda: not stress.stressors(cgroup), "the stressors to die with the agent", timeout=lease_s)
        finally:
            print(f"SIGKILL of the agent: its stressors {describe(stress.stressors(cgroup))} "
                  f"{time.monotonic() - killed_at:.2f} s later (lease {lease_s} s)")
        assert stress.remove_leftovers() >= 1 and not os.path.exists(cgroup)
    finally:
        agent.kill()
        agent.wait()


@pytest.mark.stock_kernel("cgroup v2's cpu and memory controllers: the host has them on cgroup v1")
# Known: in 2 of 4 VM runs (and 1 of 4 again) this kfault run did not end; tests/hangs.py now says where.
@pytest.mark.xfail(strict=False, reason="kfault run of burn-cpu and cause-pod-oom sometimes does not end")
def test_chaos_meshs_documents_run_with_kfault_run(containers):
    """burn-cpu.yaml (two workers, --hdd 1 writing in the container's /tmp) and cause-pod-oom.yaml
    (10GB past a memory.max of 256 MiB: the container's own OOM killer), only their apiVersion
    changed, run side by side in one container until their duration ends, and nothing is left."""
    path, _ = containers(memory_max=256 << 20)
    kfault = os.path.join(os.path.dirname(sys.executable), "kfault")
    run = subprocess.Popen([kfault, "run", "-f", CHAOS_MESH, "--target", f"cgroup:{path}", "--duration", "8s"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # 180 s: under TCG kfault run's start and end take a few seconds; a run that has not
        # ended by then hangs, and says where (tests/hangs.py) before it is killed.
        stdout, stderr = run.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("kfault run did not end within 180 s:\n" + hangs.explain(run, path))
    print(stdout)
    assert run.returncode == 0, stdout + stderr
    assert "default/burn-cpu cpu+hdd stressors" in stdout and "default/pod-oom memory stressors" in stdout
    assert oom_kills(path) >= 1
    assert not [name for name in os.listdir(path) if name.startswith(stress.PREFIX)]
