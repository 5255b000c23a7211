"""The cluster-wide stop against real agents: three `kfault agent` processes, one per "node",
each with a local pod (a network namespace and a process in a kubelet-style cgroup), ten
NetworkChaos loss-100% experiments spread over the three pods (4, 3, 3: a target takes at most
8 overlapping rules) through the controller and kmock. From
annotating kfault-system experiment.kfault.dev/stop=all until every pod's packets pass again:
under 2 s (measured: the time is printed)."""
import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.kernel.test_end_to_end import LocalPods
from tests.kube import NS, annotate_namespace, controller, register_cluster, wait_for

pytestmark = [pytest.mark.kernel("tc-bpf", "clsact"), pytest.mark.usefixtures("kubeconfig")]
NODES = ("node-1", "node-2", "node-3")
EXPERIMENTS = 10
CHAOS = "kfault.dev/v1alpha1/networkchaos"


@pytest.fixture
def agents(tmp_path, capabilities):
    """One `kfault agent` process per node, as on three nodes: node -> its gRPC port."""
    procs, ports = [], {}
    try:
        for node in NODES:
            proc = subprocess.Popen([sys.executable, "-m", "kfault_agent.cli", "agent", "--insecure", "--listen",
                                     "127.0.0.1:0", "--node", node, "--lease", "15"], stdout=subprocess.PIPE,
                                    text=True, env={**os.environ, "KFAULT_STATE_DIR": str(tmp_path / node)})
            procs.append(proc)
            line = proc.stdout.readline()
            assert "serving" in line, line
            ports[node] = int(line.split(" on ")[1].split()[0].rsplit(":", 1)[1])
        yield ports
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def passes(lab, host, address):
    return subprocess.run(["ip", "netns", "exec", lab.ns(host), "ping", "-c1", "-W0.2", "-q", address],
                          capture_output=True).returncode == 0


@pytest.mark.asyncio
async def test_the_stop_takes_every_rule_back_on_three_nodes_within_2_s(kmock, agents, lab):
    register_cluster(kmock)
    pods, peers = LocalPods(lab), {}
    try:
        for index, node in enumerate(NODES, 1):
            kmock.objects["v1/nodes", None, node] = {"metadata": {"name": node, "resourceVersion": "1"}}
            kmock.objects["v1/pods", "kfault-system", f"kfault-agent-{node}"] = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"kfault-agent-{node}", "namespace": "kfault-system", "uid": f"agent-{node}",
                             "labels": {"app.kubernetes.io/name": "kfault-agent"}, "resourceVersion": "1"},
                "spec": {"nodeName": node, "containers": [{"name": "agent", "ports": [
                    {"name": "grpc", "containerPort": agents[node]}]}]},
                "status": {"phase": "Running", "podIP": "127.0.0.1"}}
            _, peers[f"a{index}"] = lab.link(f"a{index}", f"b{index}", f"10.250.{index}")
            body, _ = pods.add(f"web-{index}", f"a{index}", {"app": f"web-{index}"})
            body["spec"]["nodeName"] = node
            kmock.objects["v1/pods", NS, f"web-{index}"] = body
        for index in range(EXPERIMENTS):
            kmock.objects[CHAOS, NS, f"cut-{index}"] = {
                "apiVersion": "kfault.dev/v1alpha1", "kind": "NetworkChaos",
                "metadata": {"name": f"cut-{index}", "namespace": NS, "uid": f"uid-cut-{index}",
                             "resourceVersion": "1"},
                "spec": {"action": "loss", "loss": {"loss": "100"}, "mode": "all",
                         "selector": {"labelSelectors": {"app": f"web-{index % len(NODES) + 1}"}}}}
        async with controller():
            running = lambda: all(  # noqa: E731
                (kmock.objects[CHAOS, NS, f"cut-{i}"].get("status") or {}).get("phase") == "Running"
                and all("injectedAt" in r for r in kmock.objects[CHAOS, NS, f"cut-{i}"]["status"]["records"])
                for i in range(EXPERIMENTS))
            try:
                await wait_for(running, timeout=120)
            except AssertionError:
                raise AssertionError(kmock.objects[CHAOS, NS, "cut-0"].get("status")) from None
            for host, address in peers.items():
                assert not await asyncio.to_thread(passes, lab, host, address), f"{host}'s packets still pass"

            started = time.monotonic()
            await annotate_namespace(kmock, "kfault-system", {"experiment.kfault.dev/stop": "all"})

            async def passing_again(host, address):
                while not await asyncio.to_thread(passes, lab, host, address):
                    assert time.monotonic() - started < 10, f"{host}'s packets still dropped"
                return time.monotonic() - started
            took = await asyncio.gather(*(passing_again(h, a) for h, a in peers.items()))
            print(f"stop: {EXPERIMENTS} experiments on {len(NODES)} nodes; packets pass again on every node "
                  f"after {max(took):.3f} s ({', '.join(f'{t:.3f}' for t in took)})")
            assert max(took) < 2.0
            await annotate_namespace(kmock, "kfault-system", {"experiment.kfault.dev/stop": None})
            for index in range(EXPERIMENTS):
                await kmock.delete(f"/apis/kfault.dev/v1alpha1/namespaces/{NS}/networkchaos/cut-{index}")
            await wait_for(lambda: all(kmock.objects[CHAOS, NS, f"cut-{i}"].deleted for i in range(EXPERIMENTS)),
                           timeout=60)
    finally:
        pods.close()
