"""A Workflow's nodes, as pure logic: step() reads what the API holds (the Workflow's status and
the objects its nodes made, found by their labels) and says what to create, what to delete and
what the status becomes. handlers.py makes the calls. Nothing is kept in memory between steps,
so a controller restarted mid-workflow resumes from the API:

- every node's object has a name made from the workflow and the node's path of templates, so
  starting a node again after a crash finds (409 Conflict, then adopts) the object made before
  instead of making a second one: no template runs twice;
- a Serial starts its next child only once the status says the last one ended, and a node ends
  in the status before its object is deleted (the delete comes at the next step, once the end
  is written), so a node whose object is gone without its end written can't be mistaken for
  one never started: none is skipped, none is run again;
- deadlines are times in the status (`deadline`), not timers.
"""
import copy
import datetime
import hashlib
from dataclasses import dataclass, field
from typing import Optional

from kfault_api import expression
from kfault_api import spec as api_spec
from kfault_controller.status import condition, iso, parse_time
from kfault_controller.workflow import task

NODE_LABEL = "kfault.dev/node"         # the node (its id) whose object this is
ENDED = ("Accomplished", "Failed", "Aborted", "DeadlineExceeded")
STDOUT_KEPT = 1024                    # characters of a Task's stdout kept in its node's status
OBJECT_NAME_MAX = 63


@dataclass(frozen=True)
class Child:
    """An object a Workflow's node made, as the controller's index keeps it."""
    kind: str                 # NetworkChaos, ..., Schedule, StatusCheck, Pod
    name: str
    node: str                 # the node id (label NODE_LABEL)
    uid: str = ""
    created: str = ""         # creationTimestamp
    deleting: bool = False
    phase: Optional[str] = None          # an experiment's or a pod's status.phase
    exit_code: Optional[int] = None      # a Pod's container, once terminated
    check: Optional[str] = None          # a StatusCheck: None (running), "Success" or "Failure"
    message: str = ""                    # why it failed, where its status says


def child_of(body):
    """An object a Workflow made (it carries NODE_LABEL) -> Child."""
    meta, status = body["metadata"], body.get("status") or {}
    kind = body.get("kind") or ("Pod" if "containers" in (body.get("spec") or {}) else "")
    exit_code, check, message = None, None, ""
    if kind == "Pod":
        for container in status.get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated")
            if terminated is not None:
                exit_code = terminated.get("exitCode")
    elif kind == api_spec.STATUS_CHECK.name:
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        if (conditions.get("Completed") or {}).get("status") == "True":
            failed = (conditions.get("FailureThresholdExceed") or {}).get("status") == "True"
            check = "Failure" if failed else "Success"
            message = next((c.get("reason", "") for t, c in conditions.items()
                            if t != "Completed" and c.get("status") == "True"), "")
    else:
        message = next((c.get("message", "") for c in status.get("conditions") or []
                        if c.get("type") == "Selected" and c.get("status") == "False"), "")
    return Child(kind=kind, name=meta["name"], node=(meta.get("labels") or {}).get(NODE_LABEL, ""),
                 uid=meta.get("uid", ""), created=meta.get("creationTimestamp") or "",
                 deleting=bool(meta.get("deletionTimestamp")), phase=status.get("phase"), exit_code=exit_code,
                 check=check, message=message)


def node_id(path):
    """A node's id: short, a label value, the same for the same path in every step."""
    return hashlib.sha256(path.encode()).hexdigest()[:10]


def object_name(workflow_name, template_name, path):
    """The name of what a node makes: readable, unique per node, at most 63 characters."""
    suffix = f"-{template_name}-{node_id(path)[:6]}"
    if len(suffix) > OBJECT_NAME_MAX // 2:
        suffix = f"-{template_name[:OBJECT_NAME_MAX // 2 - 8].rstrip('-')}-{node_id(path)[:6]}"
    return workflow_name[:OBJECT_NAME_MAX - len(suffix)].rstrip("-.") + suffix


def labels(workflow_name, template_name, path):
    return {api_spec.WORKFLOW_LABEL: workflow_name, api_spec.TEMPLATE_LABEL: template_name, NODE_LABEL: node_id(path)}


def object_kind(template):
    """What a node of this template makes (None: Serial, Parallel, Suspend make nothing)."""
    if template.type == "Task":
        return "Pod"
    return template.type if template.spec_key else None


@dataclass
class Plan:
    """What one step decided: the status to write, what to create and delete, the events, and the
    Task pods whose logs it needs (read them and step again)."""
    status: dict
    create: list = field(default_factory=list)     # (node name, document)
    delete: list = field(default_factory=list)     # Child
    events: list = field(default_factory=list)     # (type, reason, message)
    logs_needed: list = field(default_factory=list)   # (node name, pod name)


def step(body, model, status, children, now, logs=None):
    """One step of the workflow `body` (model: spec.Workflow, status: its status, children: the
    Child objects its nodes made, now: a datetime, logs: node name -> a Task pod's log)."""
    return _Step(body, model, status, children, now, logs or {}).run()


def refused(status, node_name, message, now):
    """The status with `node_name` failed because what it makes was refused (e.g. by admission)."""
    status = copy.deepcopy(status)
    for node in status.get("nodes") or []:
        if node["name"] == node_name and node.get("phase") == "Running":
            node.update(phase="Failed", endTime=iso(now), message=message)
    return status


class _Step:
    def __init__(self, body, model, status, children, now, logs):
        self.meta, self.model, self.now, self.logs = body["metadata"], model, now, logs
        self.before = {n["name"]: n for n in (status.get("nodes") or [])}
        self.nodes = [copy.deepcopy(n) for n in (status.get("nodes") or [])]
        self.by_name = {n["name"]: n for n in self.nodes}
        self.status = {k: copy.deepcopy(v) for k, v in status.items() if k != "nodes"}
        self.children = list(children)
        self.plan = Plan(status={})

    # ---- the tree ----------------------------------------------------------------------------

    def run(self):
        if self.status.get("phase") not in ("Accomplished", "Failed", "Aborted"):
            if not self.nodes:
                self.status.update(phase="Running", startTime=iso(self.now), entryNode=self.model.entry)
                self.start(self.model.entry, None)
            for _ in range(4 * len(self.model.templates) + 8):    # until nothing moves (bounded)
                if not any([self.advance(n) for n in list(self.nodes) if n.get("phase") == "Running"]):
                    break
            self.finish()
        self.clean_up()
        self.status["nodes"] = self.nodes
        self.plan.status = self.status
        return self.plan

    def template(self, node):
        return self.model.templates[node["template"]]

    def objects(self, node):
        return [c for c in self.children if c.node == node_id(node["name"])]

    def own_object(self, node):
        """The object the node itself made (a Schedule's runs are also the node's, but not its own)."""
        name = object_name(self.meta["name"], node["template"], node["name"])
        return next((c for c in self.objects(node) if c.name == name), None)

    def start(self, template_name, parent):
        """A node of `template_name` under `parent` (None: the entry)."""
        template = self.model.templates[template_name]
        if parent is None:
            name = template_name
        else:
            name = f"{parent['name']}/{len(parent.setdefault('children', []))}-{template_name}"
            parent["children"].append(name)
        node = {"name": name, "template": template_name, "templateType": template.type, "phase": "Running",
                "startTime": iso(self.now)}
        if parent is not None:
            node["parent"] = parent["name"]
        existing = self.own_object(node) if object_kind(template) else None
        started = parse_time(existing.created) if existing and existing.created else self.now
        if existing:    # made before a restart, whose status write was lost: adopt it
            node["startTime"] = iso(started)
        if template.deadline_ns is not None:
            node["deadline"] = iso(started + _seconds(template.deadline_ns))
        self.nodes.append(node)
        self.by_name[name] = node
        self.plan.events.append(("Normal", "NodeStarted", f"{name} ({template.type})"))
        return node

    def end(self, node, phase, message=""):
        node.update(phase=phase, endTime=iso(self.now))
        if message:
            node["message"] = message
        self.plan.events.append(("Warning" if phase in ("Failed", "Aborted") else "Normal", f"Node{phase}",
                                 f"{node['name']}" + (f": {message}" if message else "")))
        for child_name in node.get("children") or ():
            child = self.by_name.get(child_name)
            if child and child.get("phase") == "Running":
                self.end(child, "Aborted" if phase == "Aborted" else "DeadlineExceeded",
                         f"its parent {node['name']} ended ({phase})")

    def advance(self, node):
        """Move one running node on; True if anything changed."""
        if node.get("deadline") and self.now >= parse_time(node["deadline"]):
            self.end(node, "DeadlineExceeded", "its deadline passed")
            return True
        if node["template"] not in self.model.templates:
            # The spec changed under a running node: end it (what it made is deleted next step).
            self.end(node, "Aborted", f"its template {node['template']} is no longer in spec.templates")
            return True
        template = self.template(node)
        if template.type == "Suspend":
            return False
        if template.type == "Serial":
            return self.advance_serial(node, template)
        if template.type == "Parallel":
            return self.advance_parallel(node, template)
        if template.type == "Task":
            return self.advance_task(node, template)
        return self.advance_object(node, template)

    def ended(self, name):
        return self.by_name[name].get("phase") in ENDED

    def advance_serial(self, node, template):
        started = node.get("children") or []
        if started and not self.ended(started[-1]):
            return False
        if len(started) < len(template.children):
            self.start(template.children[len(started)], node)
            return True
        self.end(node, "Accomplished")
        return True

    def advance_parallel(self, node, template):
        if "children" not in node:
            node["children"] = []
            for child in template.children:
                self.start(child, node)
            return True
        if all(self.ended(c) for c in node["children"]):
            self.end(node, "Accomplished")
            return True
        return False

    def advance_object(self, node, template):
        """An experiment, a Schedule or a StatusCheck: make it, and end with it."""
        made = self.own_object(node)
        if made is None:
            if (node.get("object") or {}).get("uid"):
                self.end(node, "Accomplished", f"its {template.type} was deleted")
                return True
            self.make(node, template)
            return False
        self.seen(node, made)
        if made.deleting:
            return False
        if made.kind in api_spec.EXPERIMENTS and made.phase in ("Finished", "Failed"):
            self.end(node, "Accomplished" if made.phase == "Finished" else "Failed",
                     "its experiment ended" if made.phase == "Finished" else made.message or "its experiment failed")
            return True
        if made.kind == api_spec.STATUS_CHECK.name and made.check == "Success":
            self.end(node, "Accomplished", made.message)
            return True
        if made.kind == api_spec.STATUS_CHECK.name and made.check == "Failure":
            if template.abort_with_status_check:
                self.abort(node, made)
            else:
                self.end(node, "Failed", made.message or "the check failed")
            return True
        return False

    def advance_task(self, node, template):
        """A Pod; once it ended, its exit code and stdout choose the branches, run at once."""
        if "exitCode" in node:
            if "children" not in node:
                node["children"] = []
                for branch in template.branches:
                    if branch.expression.evaluate(node["exitCode"], node.get("stdout", "")):
                        self.start(branch.target, node)
                return True
            if all(self.ended(c) for c in node["children"]):
                self.end(node, "Accomplished")
                return True
            return False
        pod = self.own_object(node)
        if pod is None:
            if (node.get("object") or {}).get("uid"):
                self.end(node, "Failed", "its pod was deleted before it ended")
                return True
            self.make(node, template)
            return False
        self.seen(node, pod)
        if pod.phase not in ("Succeeded", "Failed"):
            return False
        if node["name"] not in self.logs:
            self.plan.logs_needed.append((node["name"], pod.name))
            return False
        node["exitCode"] = pod.exit_code if pod.exit_code is not None else (0 if pod.phase == "Succeeded" else 1)
        node["stdout"] = expression.trimmed_stdout(self.logs[node["name"]])[:STDOUT_KEPT]
        self.plan.events.append(("Normal", "TaskEnded", f"{node['name']}: exit code {node['exitCode']}"))
        return True

    def seen(self, node, made):
        """Write down the object's uid: once seen, its disappearance ends the node."""
        if (node.get("object") or {}).get("uid") != made.uid:
            node["object"] = {"kind": made.kind, "name": made.name, "uid": made.uid}

    def make(self, node, template):
        """Ask for the node's object (again, after a restart: a conflict then means it exists)."""
        name = object_name(self.meta["name"], template.name, node["name"])
        node.setdefault("object", {"kind": object_kind(template), "name": name})
        try:
            document = self.document(node, template, name)
        except task.TaskRefused as err:
            self.end(node, "Failed", str(err))
            return
        self.plan.create.append((node["name"], document))

    def document(self, node, template, name):
        meta = {"name": name, "namespace": self.meta["namespace"],
                "labels": labels(self.meta["name"], template.name, node["name"]),
                "ownerReferences": [{"apiVersion": api_spec.API_VERSION, "kind": api_spec.WORKFLOW.name,
                                     "name": self.meta["name"], "uid": self.meta.get("uid", ""), "controller": True,
                                     "blockOwnerDeletion": True}]}
        if template.type == "Task":
            return task.pod_document(meta, template)
        raw = next(t for t in self.model.raw["spec"]["templates"] if t["name"] == template.name)
        return {"apiVersion": api_spec.API_VERSION, "kind": template.type, "metadata": meta,
                "spec": copy.deepcopy(dict(raw[template.spec_key]))}

    def abort(self, node, check):
        message = f"StatusCheck {check.name} (template {node['template']}) failed: {check.message or 'failed'}"
        self.status.update(aborted=True, message=message)
        self.end(node, "Aborted", message)
        for other in self.nodes:
            if other.get("phase") == "Running":
                self.end(other, "Aborted", f"the workflow was aborted: {message}")

    # ---- the workflow ------------------------------------------------------------------------

    def finish(self):
        entry = self.by_name.get(self.model.entry)
        if entry is None or entry.get("phase") not in ENDED:
            self.status.setdefault("conditions", [condition("Accomplished", "False", "Running")])
            return
        if self.status.pop("aborted", False) or entry.get("phase") == "Aborted":
            phase = "Aborted"
        elif any(n.get("phase") == "Failed" for n in self.nodes):
            phase = "Failed"
            self.status.setdefault("message", "; ".join(f"{n['name']}: {n.get('message', 'failed')}"
                                                        for n in self.nodes if n.get("phase") == "Failed"))
        else:
            phase = "Accomplished"
        self.status.update(phase=phase, endTime=iso(self.now))
        self.status["conditions"] = [condition("Accomplished", "True" if phase == "Accomplished" else "False",
                                               phase, self.status.get("message", ""))]
        if phase == "Aborted":
            self.status["conditions"].append(condition("Aborted", "True", "StatusCheckFailed", self.status["message"]))
        self.plan.events.append(("Warning" if phase != "Accomplished" else "Normal", f"Workflow{phase}",
                                 self.status.get("message", f"{len(self.nodes)} node(s) ran")))

    def clean_up(self):
        """Delete what ended nodes made: their end is in the status read (written at an earlier
        step), so a restart can't mistake a deleted object for a node never started. Objects of
        no node of the status are leftovers of a crash and go too."""
        ids = {node_id(n["name"]): n for n in self.nodes}
        ended_before = {node_id(name) for name, n in self.before.items() if n.get("phase") in ENDED}
        for child in self.children:
            if not child.deleting and (child.node not in ids or child.node in ended_before):
                self.plan.delete.append(child)


def _seconds(ns):
    return datetime.timedelta(microseconds=ns // 1000)
