"""The controller against kmock's Kubernetes emulator, with real agent gRPC servers (one per
node) whose engines record what they are asked to place instead of touching the kernel."""
import dataclasses

import pytest

from kfault_agent import server
from kfault_controller import status
from kfault_controller.settings import Settings
from kfault_controller.windows import PAUSE_ANNOTATION
from tests.kube import NS, register_cluster, wait_for
from tests.kube import controller as controller_with

pytestmark = pytest.mark.usefixtures("kubeconfig")
CHAOS = "kfault.dev/v1alpha1/networkchaos"
# The controller's timings, shortened: a renewal every half second, leases of 2 s.
FAST = Settings(renew_s=0.5, lease_s=2, schedule_tick_s=0.5)


def controller(**chosen):
    """The controller with FAST settings, but for what the test chose (Settings' fields)."""
    return controller_with(dataclasses.replace(FAST, **chosen))


def pod(name, node, labels, namespace=NS, uid=None):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": uid or f"uid-{name}", "labels": labels,
                         "resourceVersion": "1"},
            "spec": {"nodeName": node, "containers": [{"name": "main"}]},
            "status": {"phase": "Running", "podIP": f"10.1.0.{len(name)}",
                       "containerStatuses": [{"name": "main", "containerID": f"containerd://{name.encode().hex():0<64}"}]}}


def populate(kmock, nodes):
    register_cluster(kmock)
    for name in nodes:
        kmock.objects["v1/nodes", None, name] = {"metadata": {"name": name, "labels": {"zone": name},
                                                             "resourceVersion": "1"}}
    for name, node, labels, namespace in (("web-1", "node-a", {"app": "web"}, NS),
                                          ("web-2", "node-b", {"app": "web"}, NS),
                                          ("db-1", "node-a", {"app": "db"}, NS),
                                          ("dns-1", "node-a", {"app": "web"}, "kube-system")):
        kmock.objects["v1/pods", namespace, name] = pod(name, node, labels, namespace)
    for node in nodes.values():
        kmock.objects["v1/pods", "kfault-system", f"kfault-agent-{node.name}"] = agent_pod(node)


def agent_pod(node):
    """The agent pod on a test node: its address is the node's gRPC server."""
    agent = pod(f"kfault-agent-{node.name}", node.name, {"app.kubernetes.io/name": "kfault-agent"}, "kfault-system")
    agent["status"]["podIP"] = "127.0.0.1"
    agent["spec"]["containers"][0]["ports"] = [{"name": "grpc", "containerPort": node.port}]
    return agent


def chaos(name, **spec):
    return {"apiVersion": "kfault.dev/v1alpha1", "kind": "NetworkChaos",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "1"},
            "spec": {"action": "loss", "loss": {"loss": "30"}, "mode": "all",
                     "selector": {"labelSelectors": {"app": "web"}}, **spec}}


@pytest.mark.asyncio
async def test_each_node_gets_exactly_its_pods_then_delete_takes_everything_back(kmock, nodes):
    populate(kmock, nodes)
    kmock.objects[CHAOS, NS, "cut"] = chaos("cut")
    async with controller():
        await wait_for(lambda: nodes["node-a"].targets())
        assert set(nodes["node-a"].targets()) == {"default/web-1"}, "db-1 and kube-system's pod must not be selected"
        assert nodes["node-b"].targets() == [], "node-b's kernel can't: nothing placed there"
        await wait_for(lambda: kmock.objects[CHAOS, NS, "cut"].get("status", {}).get("phase"))
        status = kmock.objects[CHAOS, NS, "cut"]["status"]
        assert status["phase"] == "Running"
        records = {r["pod"]: r for r in status["records"]}
        assert records["default/web-1"]["node"] == "node-a" and records["default/web-1"]["injectedAt"]
        # node-b's kernel can't: a per-pod error, not a silent success.
        assert "sch_fq" in records["default/web-2"]["error"]
        conditions = {c["type"]: c["status"] for c in status["conditions"]}
        assert conditions["Selected"] == "True" and conditions["AllInjected"] == "False"

        await wait_for(lambda: nodes["node-a"].engine.placed and
                       next(iter(nodes["node-a"].engine.placed.values())).renewals >= 2)

        await kmock.delete(f"/apis/kfault.dev/v1alpha1/namespaces/{NS}/networkchaos/cut")
        await wait_for(lambda: nodes["node-a"].targets("revoke") == ["default/web-1"])
        await wait_for(lambda: kmock.objects[CHAOS, NS, "cut"].deleted)


@pytest.mark.asyncio
async def test_leases_lapse_when_the_controller_stops(kmock, nodes):
    populate(kmock, nodes)
    kmock.objects[CHAOS, NS, "cut"] = chaos("cut")
    async with controller():
        await wait_for(lambda: nodes["node-a"].engine.placed)
    # No controller, no renewals: the agent drops the placement after its lease (2 s here).
    await wait_for(lambda: not nodes["node-a"].engine.placed, timeout=2 + 3 * server.HOUSEKEEPING_S + 2)
    assert nodes["node-a"].targets("revoke") == ["default/web-1"]


@pytest.mark.asyncio
async def test_pause_takes_back_and_resume_injects_again(kmock, nodes):
    populate(kmock, nodes)
    kmock.objects[CHAOS, NS, "cut"] = chaos("cut")
    path = f"/apis/kfault.dev/v1alpha1/namespaces/{NS}/networkchaos/cut"
    async with controller():
        await wait_for(lambda: nodes["node-a"].engine.placed)
        await kmock.patch(path, json={"metadata": {"annotations": {PAUSE_ANNOTATION: "true"}}},
                          headers={"Content-Type": "application/merge-patch+json"})
        await wait_for(lambda: not nodes["node-a"].engine.placed)
        await wait_for(lambda: kmock.objects[CHAOS, NS, "cut"].get("status", {}).get("phase") == "Paused")
        await kmock.patch(path, json={"metadata": {"annotations": {PAUSE_ANNOTATION: "false"}}},
                          headers={"Content-Type": "application/merge-patch+json"})
        await wait_for(lambda: nodes["node-a"].engine.placed)
        await wait_for(lambda: kmock.objects[CHAOS, NS, "cut"].get("status", {}).get("phase") == "Running")


@pytest.mark.asyncio
async def test_duration_end_takes_the_fault_back(kmock, nodes):
    populate(kmock, nodes)
    kmock.objects[CHAOS, NS, "brief"] = chaos("brief", duration="1s")
    async with controller():
        await wait_for(lambda: nodes["node-a"].engine.placed)
        await wait_for(lambda: kmock.objects[CHAOS, NS, "brief"].get("status", {}).get("phase") == "Finished",
                       timeout=15)
        assert not nodes["node-a"].engine.placed
        records = kmock.objects[CHAOS, NS, "brief"]["status"]["records"]
        assert [r["pod"] for r in records if r.get("recoveredAt")] == ["default/web-1"]


@pytest.mark.asyncio
@pytest.mark.parametrize("bad, words", [
    ({"loss": {"loss": "130"}}, "spec.loss.loss"),
    ({"mode": "fixed", "value": "lots"}, "spec.value"),
    ({"direction": "sideways"}, "spec.direction"),
    ({"remoteCluster": "cluster-east"}, "spec.remoteCluster"),   # valid, but another cluster's to run
])
async def test_a_bad_resource_is_reported_in_status_and_injects_nothing(kmock, nodes, bad, words):
    populate(kmock, nodes)
    kmock.objects[CHAOS, NS, "bad"] = chaos("bad", **bad)
    async with controller():
        await wait_for(lambda: kmock.objects[CHAOS, NS, "bad"].get("status", {}).get("phase") == "Failed")
        message = kmock.objects[CHAOS, NS, "bad"]["status"]["conditions"][0]["message"]
        assert words in message
    assert nodes["node-a"].engine.history == [] and nodes["node-b"].engine.history == []


@pytest.mark.asyncio
async def test_pod_kill_deletes_the_selected_pods_through_the_api(kmock, nodes):
    populate(kmock, nodes)
    kmock.objects["kfault.dev/v1alpha1/podchaos", NS, "kill"] = {
        "apiVersion": "kfault.dev/v1alpha1", "kind": "PodChaos",
        "metadata": {"name": "kill", "namespace": NS, "uid": "uid-kill", "resourceVersion": "1"},
        "spec": {"action": "pod-kill", "mode": "all", "gracePeriod": 0, "selector": {"labelSelectors": {"app": "db"}}}}
    async with controller():
        await wait_for(lambda: kmock.objects["kfault.dev/v1alpha1/podchaos", NS, "kill"]
                       .get("status", {}).get("phase") == "Finished")
    assert kmock.objects["v1/pods", NS, "db-1"].deleted
    assert not kmock.objects["v1/pods", NS, "web-1"].deleted


@pytest.mark.asyncio
async def test_controller_metrics_count_experiments_by_kind_and_phase(kmock, nodes):
    from prometheus_client import REGISTRY
    populate(kmock, nodes)
    kmock.objects[CHAOS, NS, "cut"] = chaos("cut")
    async with controller():
        await wait_for(lambda: REGISTRY.get_sample_value(
            "kfault_controller_experiments", {"kind": "NetworkChaos", "phase": "Running"}) == 1)
        assert REGISTRY.get_sample_value("kfault_controller_reconcile_seconds_count", {"kind": "NetworkChaos"}) >= 1
        # web-1's agent holds the fault; node-b's refused web-2 (AllInjected is False).
        pods = {state: REGISTRY.get_sample_value("kfault_controller_experiment_pods", {
            "kind": "NetworkChaos", "experiment": f"{NS}/cut", "state": state}) for state in ("injected", "failed")}
        assert pods == {"injected": 1, "failed": 1}
        await kmock.delete(f"/apis/kfault.dev/v1alpha1/namespaces/{NS}/networkchaos/cut")
        await wait_for(lambda: REGISTRY.get_sample_value(
            "kfault_controller_experiment_pods", {"kind": "NetworkChaos", "experiment": f"{NS}/cut",
                                                  "state": "injected"}) is None)


@pytest.mark.asyncio
async def test_scheduled_windows_inject_and_recover_again_and_again(kmock, nodes):
    populate(kmock, nodes)
    kmock.objects[CHAOS, NS, "windows"] = chaos("windows", duration="1s", scheduler={"cron": "@every 3s"})
    kmock.objects[CHAOS, NS, "windows"]["metadata"]["creationTimestamp"] = status.now_iso()
    async with controller():
        # Window 1 at creation, then waiting, then window 2 three seconds after creation.
        placed = lambda: bool(nodes["node-a"].engine.placed)  # noqa: E731
        phase = lambda: kmock.objects[CHAOS, NS, "windows"].get("status", {}).get("phase")  # noqa: E731
        await wait_for(placed)
        # Running first: a controller that starts after window 1 (creationTimestamp has whole
        # seconds) places window 2 while the status still says Waiting.
        await wait_for(lambda: phase() == "Running")
        await wait_for(lambda: phase() == "Waiting")
        assert not placed()
        await wait_for(placed, timeout=8)
        await wait_for(lambda: not placed(), timeout=8)
        assert nodes["node-a"].targets("revoke") == ["default/web-1"] * 2


@pytest.mark.asyncio
async def test_a_bad_schedule_is_reported_in_status(kmock, nodes):
    populate(kmock, nodes)
    kmock.objects[CHAOS, NS, "bad-cron"] = chaos("bad-cron", duration="1s", scheduler={"cron": "61 * * * *"})
    async with controller():
        await wait_for(lambda: kmock.objects[CHAOS, NS, "bad-cron"].get("status", {}).get("phase") == "Failed")
        assert "spec.scheduler.cron" in kmock.objects[CHAOS, NS, "bad-cron"]["status"]["conditions"][0]["message"]
    assert nodes["node-a"].engine.history == []


def test_the_deployments_environment_overrides_the_settings_and_the_flags_stay():
    chosen = Settings(allow_cross_namespace=True).with_environment(
        {"KFAULT_LEASE_S": "30", "KFAULT_RENEW_S": "10", "KFAULT_SCHEDULE_TICK_S": "5", "KFAULT_NAMESPACE": "chaos"})
    assert chosen == Settings(lease_s=30, renew_s=10, schedule_tick_s=5, agent_namespace="chaos",
                              allow_cross_namespace=True)
    assert Settings().with_environment({}) == Settings()
