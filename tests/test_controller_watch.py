"""The controller knows the cluster from watches, not from lists: pods are listed once at start,
then in steady state its requests for pods and nodes do not grow with its timers, and a pod
that appears later is on the watch when the experiment next selects."""
import asyncio
import json

import pytest

from tests.kube import NS, wait_for
from tests.test_controller import CHAOS, agent_pod, chaos, controller, pod, populate

pytestmark = pytest.mark.usefixtures("kubeconfig")
STEADY_S = 12


def reads(kmock, plural, action):
    """The controller's requests so far that `action` (LIST or WATCH) the resource."""
    return [r for r in kmock if r.resource and r.resource.plural == plural and r.action
            and r.action.value == action]


def by_kopf(requests):
    return [r for r in requests if r.headers.get("User-Agent", "").split("/")[0] == "kopf"]


def delete_progress(kmock, name):
    """kopf's progress of the resource's delete handler, as its annotation keeps it ({}: not begun)."""
    annotations = kmock.objects[CHAOS, NS, name]["metadata"].get("annotations") or {}
    return json.loads(annotations.get("kfault.dev/on_delete", "{}"))


def renewals(node):
    return min((p.renewals for p in node.engine.placed.values()), default=0)


@pytest.mark.asyncio
async def test_in_steady_state_pods_and_nodes_are_watched_not_listed_per_timer(kmock, nodes):
    populate(kmock, nodes)
    kmock.objects[CHAOS, NS, "cut"] = chaos("cut")
    async with controller():
        await wait_for(lambda: nodes["node-a"].engine.placed)
        at_start = {plural: len(by_kopf(reads(kmock, plural, "LIST"))) for plural in ("pods", "nodes")}
        before = renewals(nodes["node-a"])
        await asyncio.sleep(STEADY_S)
        ticks = renewals(nodes["node-a"]) - before
    assert ticks >= STEADY_S, f"only {ticks} renewals in {STEADY_S} s: the timer did not run"
    # The one LIST of the controller's own (the kubernetes client's): its pod cache, at start.
    client = [r for r in reads(kmock, "pods", "LIST") if r not in by_kopf([r])]
    assert len(client) == 1, f"{len(client)} pod lists by the controller itself, not one at start"
    for plural in ("pods", "nodes"):
        lists = [r for r in reads(kmock, plural, "LIST") if r not in client]
        watches = reads(kmock, plural, "WATCH")
        # kopf lists once as each watch stream starts (again when the test's 10 s inactivity
        # timeout re-makes a stream): never once per timer tick, as a read per renewal would.
        assert len(lists) - at_start[plural] <= 2, f"{plural}: {len(lists) - at_start[plural]} lists in {STEADY_S} s"
        assert len(lists) <= len(watches) + 1, f"{plural}: a list that began no watch"
        # Past the start, only kopf's watcher reads them: nothing through the kubernetes client.
        assert {r.headers.get("User-Agent", "").split("/")[0] for r in lists + watches} == {"kopf"}


@pytest.mark.asyncio
async def test_a_pod_that_appears_later_is_selected_on_the_next_spec_change(kmock, nodes):
    populate(kmock, nodes)
    kmock.objects[CHAOS, NS, "cut"] = chaos("cut")
    path = f"/apis/kfault.dev/v1alpha1/namespaces/{NS}/networkchaos/cut"
    async with controller() as running:
        await wait_for(lambda: kmock.objects[CHAOS, NS, "cut"].get("status", {}).get("phase") == "Running")
        assert set(nodes["node-a"].targets()) == {"default/web-1"}
        response = await kmock.post(f"/api/v1/namespaces/{NS}/pods", json=pod("web-3", "node-a", {"app": "web"}))
        assert response.status in (200, 201), await response.text()
        await wait_for(lambda: (NS, "web-3") in running.pods.pods)     # the pod arrived on the watch
        await kmock.patch(path, json={"spec": {"loss": {"loss": "40"}}},
                          headers={"Content-Type": "application/merge-patch+json"})
        await wait_for(lambda: "default/web-3" in nodes["node-a"].targets())
        await wait_for(lambda: {r["pod"] for r in kmock.objects[CHAOS, NS, "cut"]["status"]["records"]}
                       == {"default/web-1", "default/web-2", "default/web-3"})


@pytest.mark.asyncio
async def test_deletion_waits_for_a_missing_agent_to_come_back_on_the_watch(kmock, nodes):
    populate(kmock, nodes)
    kmock.objects[CHAOS, NS, "cut"] = chaos("cut")
    agent_path = "/api/v1/namespaces/kfault-system/pods/kfault-agent-node-a"
    async with controller(lease_s=600) as running:     # the fault outlives the test unless revoked
        await wait_for(lambda: nodes["node-a"].engine.placed)
        await kmock.delete(agent_path)        # the agent pod restarts: gone from the watch
        await wait_for(lambda: "node-a" not in running.pods.agents())
        await kmock.delete(f"/apis/kfault.dev/v1alpha1/namespaces/{NS}/networkchaos/cut")
        await wait_for(lambda: delete_progress(kmock, "cut").get("retries", 0) >= 1)
        assert "not yet taken back on node-a" in delete_progress(kmock, "cut")["message"]
        # Not taken back (no agent to ask), so kopf's finalizer keeps the resource and retries.
        assert nodes["node-a"].targets("revoke") == []
        assert not kmock.objects[CHAOS, NS, "cut"].deleted
        response = await kmock.post("/api/v1/namespaces/kfault-system/pods", json=agent_pod(nodes["node-a"]))
        assert response.status in (200, 201), await response.text()
        await wait_for(lambda: nodes["node-a"].targets("revoke") == ["default/web-1"])
        await wait_for(lambda: kmock.objects[CHAOS, NS, "cut"].deleted)
