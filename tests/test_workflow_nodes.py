"""A Workflow's nodes stepped as pure logic (kfault_controller.workflow.nodes) against a small
world that does what the API server would: create and delete what a step asks, on a clock the
test moves. Order and overlap, deadlines, a Task's branches, a StatusCheck's abort, and a
controller that loses its status write (a crash) running no template twice and skipping none."""
import dataclasses
import datetime

import pytest

from kfault_api import spec
from kfault_controller.status import iso
from kfault_controller.workflow import nodes, task
from tests.workflows import chaos_mesh_workflows, runnable

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
NET = {"action": "delay", "mode": "all", "selector": {"labelSelectors": {"app": "web"}}, "delay": {"latency": "10ms"}}


class World:
    """The API as the steps see it: the Workflow's status and what its nodes made."""

    def __init__(self, doc):
        self.body = {**doc, "metadata": {**doc["metadata"], "namespace": "default", "uid": "uid-wf"}}
        self.model = spec.parse_experiment(self.body, for_node=False)
        self.status, self.objects, self.now = {}, {}, T0
        self.created, self.deleted, self.logs = [], [], {}
        self.alive = {}                 # object name -> (created at, deleted at)

    def tick(self, seconds=1.0, lose_status=False):
        self.now += datetime.timedelta(seconds=seconds)
        plan = nodes.step(self.body, self.model, self.status, list(self.objects.values()), self.now)
        if plan.logs_needed:
            plan = nodes.step(self.body, self.model, self.status, list(self.objects.values()), self.now,
                              {node: self.logs[pod] for node, pod in plan.logs_needed})
        for _, document in plan.create:
            meta = document["metadata"]
            if meta["name"] not in self.objects:
                self.objects[meta["name"]] = nodes.Child(
                    kind=document["kind"], name=meta["name"], node=meta["labels"][nodes.NODE_LABEL],
                    uid=f"uid-{meta['name']}", created=iso(self.now))
                self.created.append(meta["name"])
                self.alive[meta["name"]] = (self.now, None)
        for child in plan.delete:
            self.objects.pop(child.name, None)
            self.deleted.append(child.name)
            self.alive[child.name] = (self.alive[child.name][0], self.now)
        if not lose_status:
            self.status = plan.status
        return plan

    def run(self, seconds, step=0.5):
        for _ in range(int(seconds / step)):
            self.tick(step)

    def set(self, name_part, **fields):
        name = self.named(name_part)
        self.objects[name] = dataclasses.replace(self.objects[name], **fields)

    def named(self, part):
        return next(n for n in self.objects if part in n)

    def node(self, template):
        return next(n for n in self.status["nodes"] if n["template"] == template)

    def template_of(self, name):
        """The template whose node made the object `name` (<workflow>-<template>-<6 hex digits>)."""
        return name[len(self.body["metadata"]["name"]) + 1:].rsplit("-", 1)[0]


def workflow(*templates, entry="main"):
    return {"apiVersion": spec.API_VERSION, "kind": "Workflow", "metadata": {"name": "wf"},
            "spec": {"entry": entry, "templates": list(templates)}}


def net(name, deadline="10s"):
    return {"name": name, "templateType": "NetworkChaos", "deadline": deadline, "networkChaos": NET}


def test_serial_runs_its_children_one_after_another_each_until_its_deadline():
    world = World(workflow({"name": "main", "templateType": "Serial", "children": ["a", "pause", "b"]},
                           net("a", "5s"), {"name": "pause", "templateType": "Suspend", "deadline": "3s"},
                           net("b", "4s")))
    world.run(20)
    assert world.status["phase"] == "Accomplished"
    assert [world.template_of(n) for n in world.created] == ["a", "b"], "each template once, in order"
    (a_start, a_end), (b_start, b_end) = world.alive[world.created[0]], world.alive[world.created[1]]
    assert a_end <= b_start, "serial never overlaps"
    # Ended at the deadline (within a step), deleted at the next step, once the end is written.
    assert datetime.timedelta(seconds=5) <= a_end - a_start <= datetime.timedelta(seconds=6)
    assert datetime.timedelta(seconds=4) <= b_end - b_start <= datetime.timedelta(seconds=5)
    pause = world.node("pause")
    assert (world.node("a")["phase"], pause["phase"]) == ("DeadlineExceeded", "DeadlineExceeded")
    pause_s = (datetime.datetime.fromisoformat(pause["endTime"]) - datetime.datetime.fromisoformat(
        pause["startTime"])).total_seconds()
    assert 3 <= pause_s <= 4
    assert world.node("main")["children"] == [n["name"] for n in world.status["nodes"][1:]]
    assert world.objects == {}, "nothing left behind"


def test_parallel_starts_every_child_at_once_and_ends_with_the_last():
    world = World(workflow({"name": "main", "templateType": "Parallel", "children": ["a", "b", "c"]},
                           net("a", "2s"), net("b", "6s"), {"name": "c", "templateType": "Suspend", "deadline": "4s"}))
    world.tick()
    assert len(world.objects) == 2, "a and b made at the first step"
    world.run(10)
    (a_start, a_end), (b_start, b_end) = world.alive[world.created[0]], world.alive[world.created[1]]
    assert a_start == b_start and a_end < b_end
    main = world.node("main")
    assert main["phase"] == "Accomplished" and main["endTime"] >= world.node("b")["endTime"]


def test_an_experiment_that_ends_by_its_duration_ends_its_node_before_the_deadline():
    world = World(workflow({"name": "main", "templateType": "Serial", "children": ["a", "b"]},
                           net("a", "60s"), net("b", "2s")))
    world.tick()
    world.set("-a-", phase="Finished")
    world.tick()
    assert world.node("a")["phase"] == "Accomplished"
    assert any("-b-" in n for n in world.objects), "the next starts at once"


def test_a_template_used_twice_makes_two_nodes_and_two_objects():
    world = World(workflow({"name": "main", "templateType": "Serial", "children": ["a", "a"]}, net("a", "1s")))
    world.run(5)
    assert len(world.created) == 2 and len(set(world.created)) == 2
    assert world.status["phase"] == "Accomplished"


def test_a_crash_before_each_status_write_runs_no_template_twice_and_skips_none():
    """The controller dies after its calls but before writing the status, at every other step:
    the next step (a restarted controller) finds what was made by its name."""
    world = World(workflow({"name": "main", "templateType": "Serial", "children": ["a", "b", "c", "d"]},
                           net("a", "2s"), net("b", "2s"), {"name": "c", "templateType": "Suspend", "deadline": "1s"},
                           net("d", "2s")))
    for index in range(40):
        world.tick(0.5, lose_status=index % 2 == 0)
    assert world.status["phase"] == "Accomplished"
    assert [world.template_of(n) for n in world.created] == ["a", "b", "d"]
    assert [n["template"] for n in world.status["nodes"]] == ["main", "a", "b", "c", "d"]
    for name, (_, end) in world.alive.items():
        assert end is not None, name


def test_a_task_chooses_its_branches_by_exit_code_and_trimmed_stdout():
    doc = runnable(chaos_mesh_workflows()["try-workflow-custom-task"])
    world = World(doc)
    world.tick()
    pod = world.named("the-entry")
    assert world.objects[pod].kind == "Pod"
    world.run(2)
    assert world.node("the-entry")["phase"] == "Running" and "exitCode" not in world.node("the-entry")
    world.logs[pod] = "branch-b\n"
    world.set("the-entry", phase="Succeeded", exit_code=0)
    world.tick()
    entry = world.node("the-entry")
    assert (entry["exitCode"], entry["stdout"]) == (0, "branch-b")
    assert [world.status["nodes"][i]["template"] for i in range(1, len(world.status["nodes"]))] == \
        ["workflow-network-chaos"]
    world.run(25)
    assert world.status["phase"] == "Accomplished"
    assert [world.template_of(n) for n in world.created] == ["the-entry", "workflow-network-chaos"]


def test_a_failing_task_runs_its_failure_branch():
    world = World(runnable(chaos_mesh_workflows()["try-workflow-custom-task"]))
    world.tick()
    world.logs[world.named("the-entry")] = "oops"
    world.set("the-entry", phase="Failed", exit_code=2)
    world.tick()
    assert [n["template"] for n in world.status["nodes"]][1:] == ["on-failed"]


def test_a_failed_status_check_with_abort_aborts_the_workflow_and_takes_every_child_back():
    doc = chaos_mesh_workflows()["try-workflow-status-check"]
    doc["spec"]["templates"][1]["abortWithStatusCheck"] = True
    world = World(doc)
    world.tick()
    assert {world.objects[n].kind for n in world.objects} == {"StatusCheck", "NetworkChaos"}
    world.set("workflow-status-check", check="Failure", message="FailureThresholdExceed")
    world.tick()
    assert world.status["phase"] == "Aborted"
    assert "StatusCheck try-workflow-status-check-workflow-status-check-" in world.status["message"]
    assert {n["phase"] for n in world.status["nodes"]} == {"Aborted"}
    world.tick()
    assert world.objects == {}, "every child taken back at the next step"
    aborted = {c["type"]: c["status"] for c in world.status["conditions"]}
    assert aborted == {"Accomplished": "False", "Aborted": "True"}


def test_a_failed_status_check_without_abort_fails_its_node_only():
    world = World(chaos_mesh_workflows()["try-workflow-status-check"])
    world.tick()
    world.set("workflow-status-check", check="Failure", message="FailureThresholdExceed")
    world.tick()
    assert world.node("workflow-status-check")["phase"] == "Failed"
    assert world.node("workflow-network-chaos")["phase"] == "Running"
    world.run(25)
    assert world.status["phase"] == "Failed"


def test_a_schedule_node_deletes_its_schedule_and_its_runs_at_the_deadline():
    world = World(runnable(chaos_mesh_workflows()["try-workflow-serial"]))
    for _ in range(400):    # until the Schedule's turn comes (the templates before it run first)
        if any("workflow-pod-chaos" in n for n in world.objects):
            break
        world.tick(0.5)
    schedule = world.named("workflow-pod-chaos")
    run = nodes.Child(kind="PodChaos", name="run-1", node=world.objects[schedule].node, uid="u")
    world.objects["run-1"] = run
    world.alive["run-1"] = (world.now, None)
    world.run(45)
    assert "run-1" in world.deleted and schedule in world.deleted
    assert world.status["phase"] == "Accomplished"


@pytest.mark.parametrize("container,field", [
    ({"image": "x", "securityContext": {"privileged": True}}, "privileged"),
    ({"image": "x", "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}, "capabilities.add"),
    ({"image": "x", "ports": [{"containerPort": 80, "hostPort": 80}]}, "hostPort"),
])
def test_a_task_asking_for_privileges_fails_its_node_naming_the_field(container, field):
    world = World(workflow({"name": "main", "templateType": "Task", "task": {"container": container}}))
    world.tick()
    node = world.node("main")
    assert node["phase"] == "Failed" and field in node["message"] and world.objects == {}
    assert world.status["phase"] == "Failed"


def test_a_task_pod_runs_as_nobody_without_privileges_or_api_rights():
    template = spec.parse_experiment(runnable(chaos_mesh_workflows()["try-workflow-custom-task"]),
                                     for_node=False).templates["the-entry"]
    pod = task.pod_document({"name": "p", "namespace": "default", "labels": {"x": "y"}}, template)
    context = pod["spec"]["containers"][0]["securityContext"]
    assert context == {"runAsUser": 65534, "runAsGroup": 65534, "runAsNonRoot": True,
                       "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                       "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["spec"]["automountServiceAccountToken"] is False and pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["containers"][0]["command"] == ["echo", "branch-b"]


def test_a_spec_changed_under_a_running_node_ends_it_and_goes_on_with_the_new_spec():
    world = World(workflow({"name": "main", "templateType": "Serial", "children": ["a", "b"]},
                           net("a", "60s"), net("b", "1s")))
    world.tick()
    changed = workflow({"name": "main", "templateType": "Serial", "children": ["c", "b"]},
                       net("c", "60s"), net("b", "1s"))
    world.model = spec.parse_experiment({**changed, "metadata": world.body["metadata"]}, for_node=False)
    world.body = {**changed, "metadata": world.body["metadata"]}
    world.run(5)
    assert world.node("a")["phase"] == "Aborted" and "no longer in spec.templates" in world.node("a")["message"]
    assert [world.template_of(n) for n in world.created] == ["a", "b"], "the next child, b, runs"
    assert world.status["phase"] == "Accomplished"
