"""A Schedule's runs (Chaos Mesh 2.x's `kind: Schedule`). Pure: handlers.py makes the API
calls. At each time of spec.schedule the controller creates an experiment of spec.type from
the embedded spec, owned by the Schedule and labelled with its name, as Chaos Mesh does; then:

- a run is due at the latest scheduled time after the last run (or after the Schedule's creation:
  a Schedule does not run when it is created), so runs missed while the controller was away
  collapse into one;
- startingDeadlineSeconds: a run more than that late is skipped (the next one comes on time);
- concurrencyPolicy Forbid (the default): no run while an experiment it made is still running;
  the run waits (within the deadline) until that one has finished. Allow: run regardless;
- historyLimit (default 1): of the experiments it made, oldest first, those beyond the limit are
  deleted once finished (a running one is kept until it has finished).
"""
import copy
import enum
from dataclasses import dataclass
from typing import Optional

from kfault_api import spec as api_spec
from kfault_controller.status import iso

FINISHED_PHASES = ("Finished", "Failed")   # an experiment in these phases holds no fault
WORKFLOW_PREFIX = api_spec.WORKFLOW_LABEL.split("/")[0] + "/"     # kfault.dev/: what a Workflow labels


@dataclass(frozen=True)
class Child:
    """An experiment a Schedule made, as the controller's index keeps it."""
    kind: str
    name: str
    namespace: str
    uid: str
    created: str             # creationTimestamp ("" where the API server set none)
    phase: Optional[str]     # None: not yet reconciled

    @property
    def finished(self):
        return self.phase in FINISHED_PHASES

    @property
    def reference(self):
        """Chaos Mesh's status.active entry: an object reference."""
        return {"apiVersion": api_spec.API_VERSION, "kind": self.kind, "namespace": self.namespace,
                "name": self.name, "uid": self.uid}


def owner_uid(meta):
    """The UID of the Schedule that controls this experiment, or None."""
    for owner in meta.get("ownerReferences") or []:
        if owner.get("kind") == api_spec.SCHEDULE.name and owner.get("controller"):
            return owner.get("uid")
    return None


def child_of(body):
    """An experiment resource -> Child; None while it is being deleted (it is on its way out)."""
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return None
    return Child(kind=body.get("kind", ""), name=meta["name"], namespace=meta["namespace"], uid=meta.get("uid", ""),
                 created=meta.get("creationTimestamp") or "", phase=(body.get("status") or {}).get("phase"))


class Step(enum.Enum):
    """What a Schedule does on one tick."""
    NOTHING = "nothing"
    RUN = "run"                  # create an experiment for the scheduled time
    FORBIDDEN = "forbidden"      # due, but Forbid and an experiment is still running: wait
    MISSED = "missed"            # due, but later than startingDeadlineSeconds: skip it


@dataclass(frozen=True)
class Decision:
    step: Step
    scheduled: object = None     # the run's scheduled time (datetime), when one is due


def decide(cron, model, created, last_run, children, now):
    """The step now. cron: cron.Cron of model.schedule; model: spec.Schedule; created:
    the Schedule's creation (where @every counts from); last_run: status.time or None."""
    latest = cron.latest_start(now, created)
    # status.time has whole seconds: a run at 10:00:00.4 is recorded as 10:00:00, and must not
    # look due again.
    if latest is None or latest.replace(microsecond=0) <= (last_run or created):
        return Decision(Step.NOTHING)
    if model.starting_deadline_s is not None and (now - latest).total_seconds() > model.starting_deadline_s:
        return Decision(Step.MISSED, latest)
    if model.concurrency_policy == "Forbid" and any(not c.finished for c in children):
        return Decision(Step.FORBIDDEN, latest)
    return Decision(Step.RUN, latest)


def oldest_first(children):
    return sorted(children, key=lambda c: (c.created, c.name))


def to_prune(children, history_limit):
    """The finished experiments beyond history_limit, oldest first: delete them."""
    ordered = oldest_first(children)
    return [c for c in ordered[:max(0, len(ordered) - history_limit)] if c.finished]


def child_name(schedule_name, scheduled):
    """One name per scheduled time: a second attempt at the same run is a conflict, not a twin."""
    return f"{schedule_name}-{int(scheduled.timestamp())}"


def child_document(schedule_body, model, scheduled):
    """The experiment to create for the run scheduled at `scheduled`: the embedded spec, in the
    Schedule's namespace, owned by the Schedule (deleting it deletes them) and labelled with its
    name (kubectl get networkchaos -l managed-by=NAME)."""
    meta = schedule_body["metadata"]
    kind = api_spec.EXPERIMENTS[model.type]
    return {
        "apiVersion": api_spec.API_VERSION,
        "kind": kind.name,
        "metadata": {
            "name": child_name(meta["name"], scheduled),
            "namespace": meta["namespace"],
            # A Workflow's Schedule passes its workflow's labels on: its runs are the workflow's too.
            "labels": {**{k: v for k, v in (meta.get("labels") or {}).items() if k.startswith(WORKFLOW_PREFIX)},
                       api_spec.SCHEDULE_LABEL: meta["name"]},
            "ownerReferences": [{"apiVersion": api_spec.API_VERSION, "kind": api_spec.SCHEDULE.name,
                                 "name": meta["name"], "uid": meta["uid"], "controller": True,
                                 "blockOwnerDeletion": True}],
        },
        "spec": copy.deepcopy(dict(schedule_body["spec"][kind.schedule_key])),
    }


def status_changes(status, children, last_run, next_start):
    """The status fields that differ from what the Schedule shows (so unchanged ticks write nothing):
    Chaos Mesh's `active` (the experiments it made that exist) and `time` (its last run), and
    kfault's `nextStart`."""
    wanted = {"active": [c.reference for c in sorted(children, key=lambda c: c.name)],
              "nextStart": iso(next_start)}
    if last_run:
        wanted["time"] = iso(last_run)
    return {k: v for k, v in wanted.items() if status.get(k) != v}
