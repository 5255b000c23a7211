"""The cluster-wide stop against kmock's emulator and real agent servers on three nodes whose
engines record: annotating the agents' namespace takes every placement back on every node at
once, agents refuse new ones while it holds, experiments say why; removing it places them again."""
import time

import pytest

from kfault_controller.stop import STOP_ANNOTATION, STOPPED_REASON
from tests.doubles import RecordingNode
from tests.kube import NS, annotate_namespace, wait_for
from tests.test_controller import CHAOS, agent_pod, chaos, controller, pod, register_cluster

pytestmark = pytest.mark.usefixtures("kubeconfig")
NODES = ("node-a", "node-b", "node-c")
EXPERIMENTS = 10


@pytest.fixture
def three_nodes():
    made = {name: RecordingNode(name) for name in NODES}
    yield made
    for node in made.values():
        node.close()


def populate(kmock, nodes):
    register_cluster(kmock)
    for name, node in nodes.items():
        kmock.objects["v1/nodes", None, name] = {"metadata": {"name": name, "labels": {}, "resourceVersion": "1"}}
        kmock.objects["v1/pods", NS, f"web-{name}"] = pod(f"web-{name}", name, {"app": "web"})
        kmock.objects["v1/pods", "kfault-system", f"kfault-agent-{name}"] = agent_pod(node)
    for index in range(EXPERIMENTS):
        kmock.objects[CHAOS, NS, f"cut-{index}"] = chaos(f"cut-{index}")


def placed(nodes):
    return sum(len(node.engine.placed) for node in nodes.values())


def paused_reasons(kmock):
    return {next((c.get("reason") for c in (kmock.objects[CHAOS, NS, f"cut-{i}"].get("status") or {})
                  .get("conditions", []) if c["type"] == "Paused" and c["status"] == "True"), None)
            for i in range(EXPERIMENTS)}


@pytest.mark.asyncio
async def test_the_stop_takes_everything_back_on_every_node_at_once_and_lifting_it_places_again(kmock, three_nodes):
    populate(kmock, three_nodes)
    async with controller():
        await wait_for(lambda: placed(three_nodes) == EXPERIMENTS * len(NODES), timeout=30)
        started = time.monotonic()
        await annotate_namespace(kmock, "kfault-system", {STOP_ANNOTATION: "all"})
        await wait_for(lambda: placed(three_nodes) == 0, timeout=10)
        took = time.monotonic() - started
        print(f"stop: {EXPERIMENTS} experiments on {len(NODES)} nodes taken back in {took:.3f} s")
        assert took < 2.0
        # Agents refuse new placements; experiments say why, and place nothing while it holds.
        assert all(node.service.stopped for node in three_nodes.values())
        await wait_for(lambda: paused_reasons(kmock) == {STOPPED_REASON})
        status = kmock.objects[CHAOS, NS, "cut-0"]["status"]
        assert status["phase"] == "Paused"
        assert "kfault-system is annotated experiment.kfault.dev/stop=all" in status["conditions"][0]["message"]
        kmock.objects[CHAOS, NS, "late"] = chaos("late")
        await wait_for(lambda: (kmock.objects[CHAOS, NS, "late"].get("status") or {}).get("phase") == "Paused")
        assert placed(three_nodes) == 0
        # Lifted: every agent is told, and the experiments are placed again.
        await annotate_namespace(kmock, "kfault-system", {STOP_ANNOTATION: None})
        await wait_for(lambda: placed(three_nodes) == (EXPERIMENTS + 1) * len(NODES), timeout=20)
        assert not any(node.service.stopped for node in three_nodes.values())
