"""The CustomResourceDefinitions of kfault's kinds, rendered from api/kfault_api/schema.py.

  python -m kfault_api.crds manifests/crds     (writes one file per kind)

tests/test_manifests.py checks the files under manifests/crds are what this renders, so the
CRDs and `kfault validate` can't disagree.
"""
import os
import sys

import yaml

from kfault_api import spec

GROUP, VERSION = spec.API_VERSION.split("/")
PHASES = ["Waiting", "Running", "Paused", "Finished", "Failed"]

STATUS = {
    "type": "object",
    "properties": {
        "phase": {"type": "string", "enum": PHASES},
        "observedGeneration": {"type": "integer"},
        "startedAt": {"type": "string", "format": "date-time"},
        "windowEnd": {"type": "string", "format": "date-time",
                      "description": "With spec.scheduler: this window's end."},
        "nextStart": {"type": "string", "format": "date-time", "description": "With spec.scheduler: the next window."},
        "conditions": {"type": "array", "items": {
            "type": "object", "required": ["type", "status"],
            "properties": {"type": {"type": "string", "enum": ["Selected", "AllInjected", "AllRecovered", "Paused"]},
                           "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                           "reason": {"type": "string"}, "message": {"type": "string"},
                           "lastTransitionTime": {"type": "string", "format": "date-time"}}}},
        "records": {"type": "array", "description": "One per selected pod.", "items": {
            "type": "object",
            "properties": {"pod": {"type": "string"}, "node": {"type": "string"},
                           "injectedAt": {"type": "string", "format": "date-time"},
                           "recoveredAt": {"type": "string", "format": "date-time"},
                           "error": {"type": "string"}}}},
    },
}

# A Schedule's status, in Chaos Mesh's field names (`time` is its lastScheduleTime), and what
# `kubectl get schedule` shows.
SCHEDULE_STATUS = {
    "type": "object",
    "properties": {
        "time": {"type": "string", "format": "date-time", "description": "When it last created an experiment."},
        "active": {"type": "array", "description": "The experiments it created that still exist.", "items": {
            "type": "object",
            "properties": {k: {"type": "string"} for k in ("apiVersion", "kind", "namespace", "name", "uid")}}},
        "nextStart": {"type": "string", "format": "date-time", "description": "When the next run is due."},
        "conditions": {"type": "array", "description": "Valid=False says what to fix.", "items": {
            "type": "object", "required": ["type", "status"],
            "properties": {"type": {"type": "string", "enum": ["Valid"]},
                           "status": {"type": "string", "enum": ["True", "False"]},
                           "reason": {"type": "string"}, "message": {"type": "string"},
                           "lastTransitionTime": {"type": "string", "format": "date-time"}}}},
    },
}
_CONDITIONS = {"type": "array", "items": {
    "type": "object", "required": ["type", "status"],
    "properties": {"type": {"type": "string"}, "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                   "reason": {"type": "string"}, "message": {"type": "string"},
                   "lastProbeTime": {"type": "string", "format": "date-time"},
                   "lastTransitionTime": {"type": "string", "format": "date-time"}}}}
WORKFLOW_PHASES = ["Running", "Accomplished", "Failed", "Aborted"]
NODE_PHASES = ["Running", "Accomplished", "Failed", "Aborted", "DeadlineExceeded"]
# A Workflow's status: Chaos Mesh's fields (entryNode, startTime, endTime, conditions) and its
# WorkflowNodes kept here, one entry per node (docs/design/controller.md says why).
WORKFLOW_STATUS = {
    "type": "object",
    "properties": {
        "phase": {"type": "string", "enum": WORKFLOW_PHASES},
        "entryNode": {"type": "string"},
        "startTime": {"type": "string", "format": "date-time"},
        "endTime": {"type": "string", "format": "date-time"},
        "message": {"type": "string", "description": "Why it failed or was aborted."},
        "conditions": {**_CONDITIONS, "description": "Valid, Accomplished, Aborted."},
        "nodes": {"type": "array", "description": "Every node started so far, parents first.", "items": {
            "type": "object", "required": ["name", "template"],
            "properties": {
                "name": {"type": "string", "description": "The node's name: the path of templates from the entry."},
                "template": {"type": "string"}, "templateType": {"type": "string"},
                "parent": {"type": "string"},
                "phase": {"type": "string", "enum": NODE_PHASES},
                "startTime": {"type": "string", "format": "date-time"},
                "endTime": {"type": "string", "format": "date-time"},
                "deadline": {"type": "string", "format": "date-time"},
                "children": {"type": "array", "items": {"type": "string"}, "description": "Its nodes' names."},
                "object": {"type": "object", "description": "What it created (an experiment, a Schedule, a "
                           "StatusCheck, a Pod).",
                           "properties": {k: {"type": "string"} for k in ("kind", "name", "uid")}},
                "exitCode": {"type": "integer", "description": "Task: its container's exit code."},
                "stdout": {"type": "string", "description": "Task: its log, trimmed (at most 1024 characters)."},
                "message": {"type": "string"},
            }}},
    },
}
STATUS_CHECK_STATUS = {
    "type": "object",
    "properties": {
        "startTime": {"type": "string", "format": "date-time"},
        "completionTime": {"type": "string", "format": "date-time"},
        "count": {"type": "integer", "description": "Requests made."},
        "conditions": {**_CONDITIONS, "description": "Completed, DurationExceed, FailureThresholdExceed, "
                                                     "SuccessThresholdExceed (Chaos Mesh's)."},
        "records": {"type": "array", "items": {
            "type": "object", "properties": {"startTime": {"type": "string", "format": "date-time"},
                                             "outcome": {"type": "string", "enum": ["Success", "Failure"]},
                                             "message": {"type": "string"}}}},
    },
}
EXPERIMENT_COLUMNS = [
    {"name": "Action", "type": "string", "jsonPath": ".spec.action"},
    {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
SCHEDULE_COLUMNS = [
    {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
    {"name": "Type", "type": "string", "jsonPath": ".spec.type"},
    {"name": "Last Run", "type": "date", "jsonPath": ".status.time"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

WORKFLOW_COLUMNS = [
    {"name": "Entry", "type": "string", "jsonPath": ".spec.entry"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Started", "type": "date", "jsonPath": ".status.startTime"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
STATUS_CHECK_COLUMNS = [
    {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
    {"name": "URL", "type": "string", "jsonPath": ".spec.http.url"},
    {"name": "Completed", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Completed\")].status"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
# The kinds the controller runs alone: their status and printer columns (experiments share STATUS).
STATUS_OF = {spec.SCHEDULE.name: SCHEDULE_STATUS, spec.WORKFLOW.name: WORKFLOW_STATUS,
             spec.STATUS_CHECK.name: STATUS_CHECK_STATUS}
COLUMNS_OF = {spec.SCHEDULE.name: SCHEDULE_COLUMNS, spec.WORKFLOW.name: WORKFLOW_COLUMNS,
              spec.STATUS_CHECK.name: STATUS_CHECK_COLUMNS}


def crd(name):
    kind = spec.KINDS[name]
    plural = kind.plural
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind.name, "listKind": f"{kind.name}List", "plural": plural,
                      "singular": kind.name.lower(),
                      "shortNames": [kind.short_name], "categories": ["chaos", "kfault"]},
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": EXPERIMENT_COLUMNS if kind.is_experiment else COLUMNS_OF[name],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": kind.schema,
                        "status": STATUS if kind.is_experiment else STATUS_OF[name],
                    },
                }},
            }],
        },
    }


class _NoAliases(yaml.SafeDumper):
    """Schemas share dicts (PERCENT, DURATION, ...): write each out whole, no YAML anchors."""

    def ignore_aliases(self, data):
        return True


def render(kind):
    header = "# Rendered from api/kfault_api/schema.py by `python -m kfault_api.crds`: edit that, not this.\n"
    return header + yaml.dump(crd(kind), Dumper=_NoAliases, sort_keys=False, allow_unicode=True, width=100)


def main(directory):
    os.makedirs(directory, exist_ok=True)
    for kind in spec.KINDS.values():
        with open(os.path.join(directory, f"{kind.name.lower()}.yaml"), "w", encoding="utf-8") as handle:
            handle.write(render(kind.name))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "manifests/crds")
