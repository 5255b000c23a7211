"""What the controller asks of agents and of the API server, and no more: one Apply per pod on
create, a status write only when the status changes, and a node whose agent is missing placed
once its agent is back on the watch (kopf retries; it is not left as an error)."""
import asyncio

import pytest
from prometheus_client import REGISTRY

from kfault_controller import status as report
from tests.kube import NS, wait_for
from tests.test_controller import CHAOS, agent_pod, chaos, controller, populate

pytestmark = pytest.mark.usefixtures("kubeconfig")
AGENT_A = "/api/v1/namespaces/kfault-system/pods/kfault-agent-node-a"


def status_writes(kmock, name):
    return [r for r in kmock if r.method.value == "PATCH" and r.subresource == "status" and r.name == name]


def status_of(kmock, name):
    return kmock.objects[CHAOS, NS, name].get("status", {})


def agent_errors(node):
    """The controller's failed calls to the node's agent so far (every test's: count differences)."""
    return REGISTRY.get_sample_value("kfault_controller_agent_errors_total", {"node": node}) or 0


def record_of(kmock, name, pod):
    return next((r for r in status_of(kmock, name).get("records") or [] if r["pod"] == pod), {})


@pytest.mark.asyncio
async def test_create_applies_once_per_pod_and_writes_status_once(kmock, nodes):
    populate(kmock, nodes)
    kmock.objects[CHAOS, NS, "cut"] = chaos("cut")
    async with controller():
        await wait_for(lambda: status_of(kmock, "cut").get("phase") == "Running")
        await asyncio.sleep(3)      # renewals, and any event the watch delivers late
    # The object existed before the controller started: the watch delivers it twice (list, then
    # the stream), the second time without the status the first placement wrote.
    assert nodes["node-a"].targets() == ["default/web-1"], "one Apply per pod"
    assert nodes["node-a"].engine.placed[("default/cut", "default/web-1")].renewals >= 2
    assert len(status_writes(kmock, "cut")) == 1


@pytest.mark.asyncio
async def test_in_steady_state_nothing_is_written(kmock, nodes):
    populate(kmock, nodes)
    kmock.objects[CHAOS, NS, "cut"] = chaos("cut")
    async with controller():
        await wait_for(lambda: status_of(kmock, "cut").get("phase") == "Running")
        await asyncio.sleep(1)
        before = len(list(kmock))
        renewed = nodes["node-a"].engine.placed[("default/cut", "default/web-1")].renewals
        await asyncio.sleep(4)
        during = list(kmock)[before:]
        assert nodes["node-a"].engine.placed[("default/cut", "default/web-1")].renewals - renewed >= 4
    assert [(r.method.value, r.url.path) for r in during] == [], "a timer tick that changes nothing writes nothing"


@pytest.mark.asyncio
async def test_a_duration_end_an_agent_cannot_confirm_is_not_rewritten_every_tick(kmock, nodes):
    populate(kmock, nodes)
    kmock.objects[CHAOS, NS, "brief"] = chaos("brief", duration="2s")
    async with controller() as running:
        await wait_for(lambda: record_of(kmock, "brief", "default/web-1").get("injectedAt"))
        await kmock.delete(AGENT_A)           # the agent restarts: the revoke can't be confirmed
        await wait_for(lambda: "node-a" not in running.pods.agents())
        # The duration ends: the tick that takes it back stops its renewals first.
        await wait_for(lambda: "default/brief" not in running.renewals, timeout=10)
        writes, tried = len(status_writes(kmock, "brief")), agent_errors("node-a")
        # Every tick after tries again: a failed call to node-a each (nothing is renewed there now).
        await wait_for(lambda: agent_errors("node-a") >= tried + 4, timeout=10)
        assert len(status_writes(kmock, "brief")) == writes, "the same records written again"
        assert status_of(kmock, "brief")["phase"] == "Running", "not finished before node-a confirms"
        response = await kmock.post("/api/v1/namespaces/kfault-system/pods", json=agent_pod(nodes["node-a"]))
        assert response.status in (200, 201), await response.text()
        await wait_for(lambda: status_of(kmock, "brief").get("phase") == "Finished")
    assert record_of(kmock, "brief", "default/web-1").get("recoveredAt")


@pytest.mark.asyncio
async def test_a_node_whose_agent_is_missing_is_placed_once_the_agent_is_back(kmock, nodes):
    populate(kmock, nodes)
    del kmock.objects["v1/pods", "kfault-system", "kfault-agent-node-a"]
    kmock.objects[CHAOS, NS, "cut"] = chaos("cut")
    async with controller():
        await wait_for(lambda: "no ready kfault agent on node node-a" in record_of(kmock, "cut", "default/web-1")
                       .get("error", ""))
        assert nodes["node-a"].targets() == []
        response = await kmock.post("/api/v1/namespaces/kfault-system/pods", json=agent_pod(nodes["node-a"]))
        assert response.status in (200, 201), await response.text()
        await wait_for(lambda: nodes["node-a"].targets() == ["default/web-1"])
        await wait_for(lambda: record_of(kmock, "cut", "default/web-1").get("injectedAt"))
        assert "sch_fq" in record_of(kmock, "cut", "default/web-2")["error"], "node-b's refusal stays reported"
        writes = len(status_writes(kmock, "cut"))
        await asyncio.sleep(3)
        assert len(status_writes(kmock, "cut")) == writes, "placed everywhere it can be: no more retries"
    assert nodes["node-a"].targets() == ["default/web-1"]


def test_changes_keep_only_what_differs_and_transition_times_of_unchanged_conditions():
    old = {"phase": "Running", "records": [{"pod": "a/p", "node": "n", "injectedAt": "T0"}],
           "conditions": [{"type": "AllInjected", "status": "True", "reason": "Injected", "lastTransitionTime": "T0"},
                          {"type": "Paused", "status": "False", "reason": "Running", "lastTransitionTime": "T0"}]}
    again = {"phase": "Running", "records": [{"pod": "a/p", "node": "n", "injectedAt": "T0"}],
             "conditions": [{"type": "AllInjected", "status": "True", "reason": "Injected", "lastTransitionTime": "T1"},
                            {"type": "Paused", "status": "False", "reason": "Running", "lastTransitionTime": "T1"}]}
    assert report.changes(old, again) == {}
    paused = dict(again, phase="Paused", conditions=[dict(again["conditions"][1], status="True", reason="Annotated")])
    changed = report.changes(old, paused)
    assert changed["phase"] == "Paused" and "records" not in changed
    assert changed["conditions"][0]["lastTransitionTime"] == "T1", "a condition whose status changed: now"


def test_a_repeated_placement_keeps_each_still_injected_pods_first_injection_time():
    previous = [{"pod": "a/p", "node": "n", "injectedAt": "T0"}, {"pod": "a/q", "node": "m", "error": "no agent"},
                {"pod": "a/r", "node": "n", "injectedAt": "T0", "recoveredAt": "T1"}]
    records = [{"pod": "a/p", "node": "n", "injectedAt": "T2"}, {"pod": "a/q", "node": "m", "injectedAt": "T2"},
               {"pod": "a/r", "node": "n", "injectedAt": "T2"}]
    assert [r["injectedAt"] for r in report.kept_injection_times(records, previous)] == ["T0", "T2", "T2"]
