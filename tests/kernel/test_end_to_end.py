"""End to end on one machine: kmock's API server, the controller, a real agent with the real
datapaths, and local "pods": network namespaces joined by veth, with their processes in cgroups
laid out the way kubelet (systemd driver) and containerd lay them out."""
import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid

import pytest

from kfault_agent.engines import podfault
from kfault_agent.kernel import topology
from tests.kube import NS, controller, register_cluster, wait_for
from tests.victims import remove_cgroup, tracer

pytestmark = [pytest.mark.kernel("tc-bpf", "clsact", "io-tracepoints", "ptrace"),
              pytest.mark.usefixtures("kubeconfig")]
NODE = "node-local"


class LocalPods:
    """Pods as kubelet would leave them: kubepods.slice/kubepods-besteffort.slice/
    kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope, with a process in it."""

    def __init__(self, lab):
        self.lab = lab
        self.root = os.path.join(topology.cgroup2_mount(), "kubepods.slice")
        self.made_root = not os.path.exists(self.root)
        self.qos = os.path.join(self.root, "kubepods-besteffort.slice")
        os.makedirs(self.qos, exist_ok=True)
        self.pods, self.procs = [], []

    def add(self, name, host, labels):
        uid = str(uuid.uuid4())
        cid = uuid.uuid4().hex + uuid.uuid4().hex
        pod_dir = os.path.join(self.qos, f"kubepods-besteffort-pod{uid.replace('-', '_')}.slice")
        container = os.path.join(pod_dir, f"cri-containerd-{cid}.scope")
        os.makedirs(container)
        self.pods.append(pod_dir)
        # The pod's process: in its container's cgroup and in its host's network namespace before
        # the pod is there to be targeted, as a runtime starts it. (The cgroup first: ip netns exec
        # mounts a sysfs of the namespace's own, without the cgroup tree.)
        proc = subprocess.Popen(["sh", "-c", f"echo $$ > {container}/cgroup.procs && "
                                 f"exec ip netns exec {self.lab.ns(host)} sh -c 'echo in; exec sleep 600'"],
                                stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        assert proc.stdout.readline() == "in\n", f"the pod's process did not join {container}"
        proc.stdout.close()
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": NS, "uid": uid, "labels": labels, "resourceVersion": "1"},
                "spec": {"nodeName": NODE, "containers": [{"name": "app"}]},
                "status": {"phase": "Running", "podIP": "10.250.1.1",
                           "containerStatuses": [{"name": "app", "containerID": f"containerd://{cid}"}]}}, container

    def close(self):
        for proc in self.procs:
            proc.kill()
            proc.wait()
        for pod_dir in self.pods:
            podfault.set_frozen(pod_dir, False)
            for current, _dirs, _ in sorted(os.walk(pod_dir, topdown=False), key=lambda w: -len(w[0])):
                remove_cgroup(current)
        remove_cgroup(self.qos)
        if self.made_root:
            remove_cgroup(self.root)


@pytest.fixture(scope="module")
def agent(tmp_path_factory, capabilities):
    """`kfault agent` as its own process, as on a node (it forks, as pyroute2 and the holder
    do, which must not share a process with the controller's event loop). One for the module,
    as a node has one for its life: each test's experiment ends when it is deleted, and its
    compile took 100 s per test under the VM tier's emulation."""
    proc = subprocess.Popen([sys.executable, "-m", "kfault_agent.cli", "agent", "--insecure", "--listen",
                             "127.0.0.1:0", "--node", NODE, "--lease", "10"],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "KFAULT_STATE_DIR": str(tmp_path_factory.mktemp("agent-state"))})
    line = proc.stdout.readline()
    assert "serving" in line, line
    yield int(line.split(" on ")[1].split()[0].rsplit(":", 1)[1])
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


@pytest.fixture
def cluster(kmock, agent, lab):
    port = agent
    register_cluster(kmock)
    kmock.objects["v1/nodes", None, NODE] = {"metadata": {"name": NODE, "resourceVersion": "1"}}
    kmock.objects["v1/pods", "kfault-system", "kfault-agent-x"] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "kfault-agent-x", "namespace": "kfault-system", "uid": "agent",
                     "labels": {"app.kubernetes.io/name": "kfault-agent"}, "resourceVersion": "1"},
        "spec": {"nodeName": NODE,
                 "containers": [{"name": "agent", "ports": [{"name": "grpc", "containerPort": port}]}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1"}}
    pods = LocalPods(lab)
    yield kmock, pods
    pods.close()


def create(kmock, kind, plural, name, spec):
    kmock.objects[f"kfault.dev/v1alpha1/{plural}", NS, name] = {
        "apiVersion": "kfault.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "1"},
        "spec": {"mode": "all", "selector": {"labelSelectors": {"app": "web"}}, **spec}}


async def delete(kmock, plural, name):
    await kmock.delete(f"/apis/kfault.dev/v1alpha1/namespaces/{NS}/{plural}/{name}")
    await wait_for(lambda: kmock.objects[f"kfault.dev/v1alpha1/{plural}", NS, name].deleted, timeout=60)


def phase(kmock, plural, name):
    return kmock.objects[f"kfault.dev/v1alpha1/{plural}", NS, name].get("status", {}).get("phase")


@pytest.mark.stock_kernel("the agent on a stock kernel, classic tc")
@pytest.mark.asyncio
async def test_network_chaos_loss_30_percent_on_a_local_pod(cluster, lab):
    kmock, pods = cluster
    _, b_ip = lab.link("a", "b", "10.250.1")
    pod, _ = pods.add("web-1", "a", {"app": "web"})
    kmock.objects["v1/pods", NS, "web-1"] = pod
    create(kmock, "NetworkChaos", "networkchaos", "lossy", {"action": "loss", "loss": {"loss": "30"}})
    async with controller():
        await wait_for(lambda: phase(kmock, "networkchaos", "lossy") in ("Running", "Failed"), timeout=60)
        assert phase(kmock, "networkchaos", "lossy") == "Running", kmock.objects[
            "kfault.dev/v1alpha1/networkchaos", NS, "lossy"]["status"]
        # Blocking calls go to a thread: the emulated API server and the controller share this loop.
        sent, received, _ = await asyncio.to_thread(lab.ping_flood, "a", b_ip, 2000)
        assert 0.26 <= 1 - received / sent <= 0.34
        await delete(kmock, "networkchaos", "lossy")
        sent, received, _ = await asyncio.to_thread(lab.ping_flood, "a", b_ip, 300)
        assert received == sent


@pytest.mark.stock_kernel("the agent on a stock kernel, file hooks")
@pytest.mark.asyncio
async def test_io_chaos_latency_measured_by_the_victim(cluster, lab, tmp_path):
    kmock, pods = cluster
    lab.host("a")
    pod, container = pods.add("web-1", "a", {"app": "web"})
    kmock.objects["v1/pods", NS, "web-1"] = pod
    (tmp_path / "data.db").write_text("kfault")
    victim = subprocess.Popen([sys.executable, "-m", "kfault_lab.io_probe", container,
                               json.dumps([["read", str(tmp_path / "data.db"), 3]])],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(victim.stdout.readline().split()[1])     # "ready <pid>", in the pod's cgroup
        create(kmock, "IOChaos", "iochaos", "slow", {"action": "latency", "delay": "100ms", "volumePath": str(tmp_path),
                                                     "path": f"{tmp_path}/*.db", "methods": ["read"]})
        async with controller():
            await wait_for(lambda: phase(kmock, "iochaos", "slow") == "Running", timeout=60)
            await wait_for(lambda: tracer(pid), timeout=30)     # the agent's holder seized the victim
            victim.stdin.write("go\n")
            victim.stdin.flush()
            result = json.loads(await asyncio.to_thread(victim.stdout.readline))
            assert all(ms >= 100 for ms in result["calls"][0]["ms"]), result
            await delete(kmock, "iochaos", "slow")
    finally:
        victim.kill()
        victim.wait()


@pytest.mark.asyncio
async def test_pod_chaos_pod_failure_freezes_and_thaws(cluster, lab):
    kmock, pods = cluster
    lab.host("a")
    pod, container = pods.add("web-1", "a", {"app": "web"})
    kmock.objects["v1/pods", NS, "web-1"] = pod
    pod_dir = os.path.dirname(container)
    create(kmock, "PodChaos", "podchaos", "freeze", {"action": "pod-failure"})
    async with controller():
        await wait_for(lambda: phase(kmock, "podchaos", "freeze") == "Running", timeout=60)
        assert podfault.is_frozen(pod_dir)
        await delete(kmock, "podchaos", "freeze")
        assert not podfault.is_frozen(pod_dir)
