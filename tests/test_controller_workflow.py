"""Chaos Mesh 2.x's Workflow and StatusCheck against kmock's emulator, with real agent servers
whose engines record (tests/doubles.py): Chaos Mesh's own examples (tests/chaos_mesh/workflow.yaml,
their StressChaos templates left out until kfault has the kind; deadlines shortened so a test
takes seconds) run in the order and overlap their spec says, a Task's branch is chosen by its
exit code and stdout, a failing StatusCheck aborts, a restarted controller resumes, deleting a
Workflow takes its children back first. StatusChecks request a real local HTTP server."""
import asyncio
import copy
import time

import pytest

from kfault_api import spec as api_spec
from tests.doubles import RecordingNode
from tests.kube import NS, wait_for
from tests.test_controller import CHAOS, controller, pod, populate
from tests.test_controller_schedule import server_set_fields  # noqa: F401 (fixture)
from tests.workflows import chaos_mesh_workflows, http_server, runnable

pytestmark = pytest.mark.usefixtures("kubeconfig", "server_set_fields")
WORKFLOWS = "kfault.dev/v1alpha1/workflows"
CHECKS = "kfault.dev/v1alpha1/statuschecks"
SCHEDULES = "kfault.dev/v1alpha1/schedules"
PODCHAOS = "kfault.dev/v1alpha1/podchaos"
TICK = dict(workflow_tick_s=0.25)


class Timed(list):
    """An engine's history with when each entry came (time.monotonic)."""

    def __init__(self):
        super().__init__()
        self.times = []

    def append(self, item):
        super().append(item)
        self.times.append(time.monotonic())

    def when(self, op, part):
        return [t for (o, key, _), t in zip(self, self.times) if o == op and part in key]


@pytest.fixture
def nodes():
    """Two nodes' agents recording every experiment kind kfault has (a StressChaos of Chaos Mesh's
    examples is placed once the kind exists); node-b's refuses, as test_controller's."""
    made = {"node-a": RecordingNode("node-a", kinds=tuple(api_spec.EXPERIMENTS)),
            "node-b": RecordingNode("node-b", refuse="not here", kinds=tuple(api_spec.EXPERIMENTS))}
    yield made
    for node in made.values():
        node.close()


def populate_hello(kmock, nodes):
    """The cluster of test_controller, plus Chaos Mesh's examples' target: app=hello-kubernetes."""
    populate(kmock, nodes)
    for name, node in (("hello-1", "node-a"), ("hello-2", "node-a")):
        kmock.objects["v1/pods", NS, name] = pod(name, node, {"app": "hello-kubernetes"})
    nodes["node-a"].record_in(Timed())


def placed_by_agents(doc):
    """The templates of `doc` whose experiment an agent places (pod-kill is the API server's)."""
    return [t["name"] for t in doc["spec"]["templates"] if t["templateType"] in api_spec.EXPERIMENTS
            and t[api_spec.EXPERIMENTS[t["templateType"]].schedule_key].get("action") != "pod-kill"]


def shortened(doc, seconds):
    """Every experiment template's deadline set to `seconds` (Chaos Mesh's are 20 s)."""
    return {t["name"]: seconds for t in doc["spec"]["templates"] if t["templateType"] in api_spec.EXPERIMENTS}


def put_workflow(kmock, doc, deadlines=None):
    """The document as a Workflow in the default namespace; deadlines: template -> a shorter one."""
    doc = copy.deepcopy(doc)
    for template in doc["spec"]["templates"]:
        if template["name"] in (deadlines or {}):
            template["deadline"] = deadlines[template["name"]]
    name = doc["metadata"]["name"]
    doc["metadata"] = {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "1"}
    kmock.objects[WORKFLOWS, NS, name] = doc
    return name


def workflow_status(kmock, name):
    return kmock.objects[WORKFLOWS, NS, name].get("status") or {}


def node_of(kmock, name, template):
    return next(n for n in workflow_status(kmock, name).get("nodes", []) if n["template"] == template)


def made(kmock, resource, workflow):
    """Every object of `resource` the workflow made, ever (deleted ones too), by name."""
    return {key[2]: kmock.objects[key] for key in list(kmock.objects) if key[0] == resource
            and (kmock.objects[key].last["metadata"].get("labels") or {}).get(api_spec.WORKFLOW_LABEL) == workflow}


def exists(kmock, resource, workflow):
    return {name for name, obj in made(kmock, resource, workflow).items() if not obj.deleted}


def finished(kmock, name):
    """Ended, and what its nodes made is gone (deleted at the step after their end was written)."""
    return lambda: workflow_status(kmock, name).get("phase") in ("Accomplished", "Failed", "Aborted") and not any(
        exists(kmock, resource, name) for resource in (CHAOS, SCHEDULES, CHECKS, PODCHAOS, "v1/pods"))


@pytest.mark.asyncio
async def test_chaos_meshs_serial_workflow_runs_its_children_in_order_each_until_its_deadline(kmock, nodes):
    populate_hello(kmock, nodes)
    doc = runnable(chaos_mesh_workflows()["try-workflow-serial"])
    name = put_workflow(kmock, doc, {**shortened(doc, "2s"), "prefix-suspending": "1s", "suffix-suspending": "1s",
                                     "workflow-pod-chaos": "3s"})
    async with controller(**TICK):
        await wait_for(finished(kmock, name), timeout=60)
        history = nodes["node-a"].engine.history
    status = workflow_status(kmock, name)
    assert status["phase"] == "Accomplished", status
    assert [n["template"] for n in status["nodes"]] == ["the-entry"] + doc["spec"]["templates"][0]["children"]
    # Each node starts when the one before ended: serial never overlaps.
    for before, after in zip(status["nodes"][1:], status["nodes"][2:]):
        assert before["endTime"] <= after["startTime"], (before, after)
    # Each experiment reached the agent once, and was taken back at its deadline (2 s), within a renewal.
    assert len({k for o, k, _ in history if o == "apply"}) == len(placed_by_agents(doc))
    applied, revoked = history.when("apply", "workflow-network-chaos"), history.when("revoke", "workflow-network-chaos")
    assert applied and revoked and 2.0 <= revoked[0] - applied[0] <= 2.0 + 0.5 + 1.0, (applied, revoked)
    # The Schedule ran pod-kill at @every 2s during its 3 s, after the network's end, then was deleted.
    assert len(made(kmock, SCHEDULES, name)) == 1 and exists(kmock, SCHEDULES, name) == set()
    assert any(kmock.objects["v1/pods", NS, p].deleted for p in ("hello-1", "hello-2"))
    assert len(made(kmock, CHAOS, name)) == 1 and exists(kmock, CHAOS, name) == set()


@pytest.mark.asyncio
async def test_chaos_meshs_parallel_workflow_overlaps_its_children(kmock, nodes):
    populate_hello(kmock, nodes)
    doc = runnable(chaos_mesh_workflows()["try-workflow-parallel"])
    name = put_workflow(kmock, doc, {**shortened(doc, "2s"), "workflow-pod-chaos": "3s"})
    async with controller(**TICK):
        await wait_for(lambda: len(exists(kmock, CHAOS, name)) == 1 and len(exists(kmock, SCHEDULES, name)) == 1,
                       timeout=10)
        await wait_for(finished(kmock, name), timeout=30)
    status = workflow_status(kmock, name)
    network, schedule = node_of(kmock, name, "workflow-network-chaos"), node_of(kmock, name, "workflow-pod-chaos")
    assert network["startTime"] <= schedule["startTime"] <= network["endTime"], "parallel: all overlap"
    assert status["phase"] == "Accomplished" and status["endTime"] >= schedule["endTime"]
    assert {n["phase"] for n in status["nodes"][1:]} == {"DeadlineExceeded"}


@pytest.mark.asyncio
async def test_chaos_meshs_custom_task_chooses_its_branch_by_exit_code_and_stdout(kmock, nodes):
    populate_hello(kmock, nodes)
    doc = runnable(chaos_mesh_workflows()["try-workflow-custom-task"])
    name = put_workflow(kmock, doc, shortened(doc, "2s"))
    async with controller(**TICK):
        await wait_for(lambda: exists(kmock, "v1/pods", name), timeout=10)
        task_pod = next(iter(exists(kmock, "v1/pods", name)))
        body = kmock.objects["v1/pods", NS, task_pod]
        container = body["spec"]["containers"][0]
        assert container["command"] == ["echo", "branch-b"] and container["securityContext"]["runAsNonRoot"]
        assert body["spec"]["automountServiceAccountToken"] is False
        # kubelet's part: the container ran `echo branch-b` and exited 0; its log has echo's newline.
        kmock["get", f"/api/v1/namespaces/{NS}/pods/{task_pod}/log"] << "branch-b\n"
        await kmock.patch(f"/api/v1/namespaces/{NS}/pods/{task_pod}", json={"status": {
            "phase": "Succeeded", "containerStatuses": [{"name": container["name"],
                                                         "state": {"terminated": {"exitCode": 0}}}]}},
            headers={"Content-Type": "application/merge-patch+json"})
        await wait_for(finished(kmock, name), timeout=20)
    entry = node_of(kmock, name, "the-entry")
    assert (entry["exitCode"], entry["stdout"]) == (0, "branch-b")
    assert [n["template"] for n in workflow_status(kmock, name)["nodes"]] == ["the-entry", "workflow-network-chaos"]
    assert nodes["node-a"].targets() == ["default/hello-1", "default/hello-2"]
    assert workflow_status(kmock, name)["phase"] == "Accomplished"
    assert exists(kmock, "v1/pods", name) == set(), "the Task's pod is deleted once its node ended"


@pytest.mark.asyncio
async def test_chaos_meshs_status_check_workflow_aborts_on_a_failing_check_and_takes_every_child_back(kmock, nodes):
    populate_hello(kmock, nodes)
    doc = chaos_mesh_workflows()["try-workflow-status-check"]
    with http_server(status_code=503) as server:
        check = doc["spec"]["templates"][1]
        check["statusCheck"]["http"]["url"] = f"http://127.0.0.1:{server.server_port}/"
        check["statusCheck"].update(intervalSeconds=1, failureThreshold=2)
        check["abortWithStatusCheck"] = True
        name = put_workflow(kmock, doc, {"workflow-network-chaos": "60s", "workflow-status-check": "60s"})
        async with controller(**TICK):
            await wait_for(lambda: nodes["node-a"].targets(), timeout=10)
            await wait_for(lambda: workflow_status(kmock, name).get("phase") == "Aborted", timeout=20)
            aborted_at = time.monotonic()
            await wait_for(lambda: nodes["node-a"].targets("revoke"), timeout=5)
            revoked_at = time.monotonic()
    status = workflow_status(kmock, name)
    assert status["phase"] == "Aborted" and "StatusCheck try-workflow-status-check-workflow-status-check" in \
        status["message"], status
    assert revoked_at - aborted_at <= 0.5 + 0.5, "taken back within one renewal period"
    assert nodes["node-a"].targets("revoke") == nodes["node-a"].targets()
    assert server.requests >= 2


@pytest.mark.asyncio
async def test_a_controller_restarted_mid_serial_runs_each_template_exactly_once(kmock, nodes):
    populate_hello(kmock, nodes)
    net = copy.deepcopy(chaos_mesh_workflows()["try-workflow-serial"]["spec"]["templates"][2]["networkChaos"])
    doc = {"apiVersion": api_spec.API_VERSION, "kind": "Workflow", "metadata": {"name": "restarted"},
           "spec": {"entry": "main", "templates": [
               {"name": "main", "templateType": "Serial", "children": ["a", "pause", "b", "c"]},
               {"name": "a", "templateType": "NetworkChaos", "deadline": "2s", "networkChaos": net},
               {"name": "pause", "templateType": "Suspend", "deadline": "1s"},
               {"name": "b", "templateType": "NetworkChaos", "deadline": "3s", "networkChaos": net},
               {"name": "c", "templateType": "NetworkChaos", "deadline": "1s", "networkChaos": net}]}}
    name = put_workflow(kmock, doc)
    async with controller(**TICK):
        await wait_for(lambda: any("-b-" in n for n in exists(kmock, CHAOS, name)), timeout=15)
    # Killed while b runs; a new controller (nothing in memory) takes over.
    await asyncio.sleep(0.5)
    async with controller(**TICK):
        await wait_for(finished(kmock, name), timeout=30)
    status = workflow_status(kmock, name)
    assert status["phase"] == "Accomplished"
    assert [n["template"] for n in status["nodes"]] == ["main", "a", "pause", "b", "c"]
    created = sorted(made(kmock, CHAOS, name))
    assert [n.split("-")[1] for n in created] == ["a", "b", "c"], created
    applied = [k for o, k, _ in nodes["node-a"].engine.history if o == "apply"]
    assert sorted(set(applied)) == sorted(f"{NS}/{n}" for n in created)
    assert exists(kmock, CHAOS, name) == set()


@pytest.mark.asyncio
async def test_deleting_a_workflow_takes_its_running_children_back_first(kmock, nodes):
    populate_hello(kmock, nodes)
    doc = runnable(chaos_mesh_workflows()["try-workflow-parallel"])
    name = put_workflow(kmock, doc, {**shortened(doc, "60s"), "workflow-pod-chaos": "60s"})
    async with controller(**TICK):
        await wait_for(lambda: nodes["node-a"].targets(), timeout=10)
        await kmock.delete(f"/apis/kfault.dev/v1alpha1/namespaces/{NS}/workflows/{name}")
        await wait_for(lambda: kmock.objects[WORKFLOWS, NS, name].deleted, timeout=15)
        assert exists(kmock, CHAOS, name) == set() and exists(kmock, SCHEDULES, name) == set()
        assert nodes["node-a"].targets("revoke") == nodes["node-a"].targets()


@pytest.mark.asyncio
async def test_an_invalid_workflow_fails_naming_the_field(kmock, nodes):
    populate_hello(kmock, nodes)
    doc = runnable(chaos_mesh_workflows()["try-workflow-serial"])
    doc["spec"]["templates"][0]["children"].append("nowhere")
    index = len(doc["spec"]["templates"][0]["children"]) - 1
    name = put_workflow(kmock, doc)
    async with controller(**TICK):
        await wait_for(finished(kmock, name), timeout=10)
    status = workflow_status(kmock, name)
    assert status["phase"] == "Failed" and f"spec.templates[0].children[{index}]: 'nowhere'" in status["message"]
    assert made(kmock, CHAOS, name) == {}


def status_check(name, url, **fields):
    return {"apiVersion": api_spec.API_VERSION, "kind": "StatusCheck",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "1"},
            "spec": {"type": "HTTP", "intervalSeconds": 1, "http": {"url": url, "criteria": {"statusCode": "200"}},
                     **fields}}


def check_status(kmock, name):
    return kmock.objects[CHECKS, NS, name].get("status") or {}


def true_conditions(kmock, name):
    return {c["type"] for c in check_status(kmock, name).get("conditions", []) if c["status"] == "True"}


@pytest.mark.asyncio
async def test_status_checks_request_a_real_server_and_complete_as_chaos_mesh_says(kmock, nodes):
    populate(kmock, nodes)
    with http_server(200) as up, http_server(500) as down:
        kmock.objects[CHECKS, NS, "up"] = status_check("up", f"http://127.0.0.1:{up.server_port}/",
                                                       successThreshold=2)
        kmock.objects[CHECKS, NS, "down"] = status_check("down", f"http://127.0.0.1:{down.server_port}/",
                                                         failureThreshold=2)
        kmock.objects[CHECKS, NS, "watching"] = status_check(
            "watching", f"http://127.0.0.1:{up.server_port}/", mode="Continuous", duration="3s")
        kmock.objects[CHECKS, NS, "metadata"] = status_check("metadata", "http://169.254.169.254/latest/",
                                                             failureThreshold=1)
        async with controller(**TICK):
            await wait_for(lambda: all("Completed" in true_conditions(kmock, n)
                                       for n in ("up", "down", "watching", "metadata")), timeout=15)
            requests_then = up.requests + down.requests
            await asyncio.sleep(1.5)
            assert up.requests + down.requests == requests_then, "a completed check makes no request"
    assert true_conditions(kmock, "up") == {"Completed", "SuccessThresholdExceed"}
    assert [r["outcome"] for r in check_status(kmock, "up")["records"]] == ["Success", "Success"]
    assert true_conditions(kmock, "down") == {"Completed", "FailureThresholdExceed"}
    assert check_status(kmock, "down")["records"][-1]["message"] == "status code 500"
    assert true_conditions(kmock, "watching") == {"Completed", "DurationExceed"}
    assert 2 <= check_status(kmock, "watching")["count"] <= 4
    metadata = check_status(kmock, "metadata")["records"][0]
    assert metadata["outcome"] == "Failure" and "--allow-metadata-status-checks" in metadata["message"]


@pytest.mark.asyncio
async def test_a_task_pod_refused_by_the_namespaces_pod_security_fails_its_node_saying_why(kmock, nodes):
    populate_hello(kmock, nodes)
    refusal = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
               "message": 'pods "x" is forbidden: violates PodSecurity "restricted:latest": runAsUser=0'}
    kmock["post", f"/api/v1/namespaces/{NS}/pods"] << 403 << refusal
    name = put_workflow(kmock, runnable(chaos_mesh_workflows()["try-workflow-custom-task"]))
    async with controller(**TICK):
        await wait_for(finished(kmock, name), timeout=15)
    entry = node_of(kmock, name, "the-entry")
    assert entry["phase"] == "Failed" and 'violates PodSecurity "restricted:latest"' in entry["message"], entry
    status = workflow_status(kmock, name)
    assert status["phase"] == "Failed" and "PodSecurity" in status["message"]
    assert [n["template"] for n in status["nodes"]] == ["the-entry"], "no branch runs without the Task's result"


@pytest.mark.asyncio
async def test_running_workflows_cost_no_api_requests_in_steady_state(kmock, nodes):
    """20 workflows of 5 nodes each (a Parallel of an experiment, a Schedule, a StatusCheck's
    wait and a pause) running: between their changes, their ticks write nothing."""
    populate_hello(kmock, nodes)
    net = chaos_mesh_workflows()["try-workflow-serial"]["spec"]["templates"][2]["networkChaos"]
    for index in range(20):
        put_workflow(kmock, {"apiVersion": api_spec.API_VERSION, "kind": "Workflow",
                             "metadata": {"name": f"steady-{index}"},
                             "spec": {"entry": "main", "templates": [
                                 {"name": "main", "templateType": "Parallel", "children": ["net", "wait", "more"]},
                                 {"name": "net", "templateType": "NetworkChaos", "deadline": "5m",
                                  "networkChaos": net},
                                 {"name": "wait", "templateType": "Suspend", "deadline": "5m"},
                                 {"name": "more", "templateType": "Serial", "children": ["wait"]}]}})
    async with controller(**TICK):
        await wait_for(lambda: all(len(workflow_status(kmock, f"steady-{i}").get("nodes", [])) == 5
                                   and (kmock.objects[CHAOS, NS, next(iter(exists(kmock, CHAOS, f"steady-{i}")))]
                                        .get("status") or {}).get("phase") == "Running"
                                   for i in range(20) if exists(kmock, CHAOS, f"steady-{i}")) and
                       len([k for k in list(kmock.objects) if k[0] == CHAOS]) == 20, timeout=60)
        await asyncio.sleep(2)
        before = len(list(kmock))
        await asyncio.sleep(3)     # twelve ticks of each workflow
        during = [r for r in list(kmock)[before:] if r.resource and r.action and r.action.value != "WATCH"]
    assert during == [], [(str(r.method), r.url.path) for r in during]
