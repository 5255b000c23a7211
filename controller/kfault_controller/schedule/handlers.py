"""The kopf handlers of Chaos Mesh 2.x's `kind: Schedule`: thin. runs.py decides when a run is
due and what history keeps; this module reads kopf's index of the experiments each Schedule
made, creates and deletes them through the API, and writes the Schedule's status.

The experiments it creates are ordinary NetworkChaos / IOChaos / PodChaos resources (../handlers.py
places them, with their namespace's blast radius), owned by the Schedule: Kubernetes' garbage
collector deletes them with it, and kopf's finalizer on each takes its fault back first.
"""
import asyncio
import functools
from dataclasses import dataclass

import kopf
import kubernetes

from kfault_api import spec as api_spec
from kfault_controller.cron import Cron, CronError
from kfault_controller.schedule import runs
from kfault_controller.status import condition, iso, now, parse_time
from kfault_controller.windows import is_paused

GROUP, VERSION = api_spec.API_VERSION.split("/")
INDEX_OF_KIND = {kind.name: f"schedule_children_{kind.plural}" for kind in api_spec.EXPERIMENTS.values()}


def index_children(body, meta, **_):
    """The Schedule's UID -> the experiment (runs.Child), for experiments a Schedule controls.
    {} (not None, which would keep what was indexed before) drops one being deleted."""
    owner = runs.owner_uid(meta)
    child = runs.child_of(body)
    return {owner: child} if owner and child else {}


def children_of(uid, kind_name, indexes):
    """The experiments of this Schedule (of its type) now on kopf's watch."""
    return list(indexes[INDEX_OF_KIND[kind_name]].get(uid, []))


def read_schedule(body):
    """(spec.Schedule, cron.Cron) of a Schedule resource; InvalidSpec or CronError names the
    field to fix."""
    doc = {"apiVersion": api_spec.API_VERSION, "kind": api_spec.SCHEDULE.name,
           "metadata": {"name": body["metadata"]["name"], "namespace": body["metadata"]["namespace"]},
           "spec": dict(body["spec"])}
    model = api_spec.parse_experiment(doc, for_node=False)
    try:
        return model, Cron(model.schedule)
    except CronError as err:
        raise CronError(f"spec.schedule: {model.schedule!r}: {err}") from None


def validity(status, problem):
    """The status.conditions to write (None: unchanged): Valid, or not with what to fix."""
    reason, message = ("Invalid", problem) if problem else ("Valid", "")
    current = next(iter(status.get("conditions") or []), {})
    if (current.get("reason"), current.get("message", "")) == (reason, message):
        return None
    return [condition("Valid", "False" if problem else "True", reason, message)]


def create_child(document, retry_s):
    """Create the experiment; an AlreadyExists means this run was created before. Blocking."""
    kind, meta = api_spec.EXPERIMENTS[document["kind"]], document["metadata"]
    try:
        kubernetes.client.CustomObjectsApi().create_namespaced_custom_object(
            GROUP, VERSION, meta["namespace"], kind.plural, document)
    except kubernetes.client.ApiException as err:
        if err.status != 409:
            # kopf posts it as an event on the Schedule and calls the timer again.
            raise kopf.TemporaryError(f"create {kind.name} {meta['name']}: {err.status} {err.reason}",
                                      delay=retry_s) from None


def delete_child(child, retry_s):
    """Delete an experiment history no longer keeps (gone already is fine). Blocking."""
    try:
        kubernetes.client.CustomObjectsApi().delete_namespaced_custom_object(
            GROUP, VERSION, child.namespace, api_spec.EXPERIMENTS[child.kind].plural, child.name)
    except kubernetes.client.ApiException as err:
        if err.status != 404:
            raise kopf.TemporaryError(f"delete {child.kind} {child.name}: {err.status} {err.reason}",
                                      delay=retry_s) from None


def created_at(meta):
    """Where @every counts from: the Schedule's creation (the API server always sets it)."""
    return parse_time(meta["creationTimestamp"]) if meta.get("creationTimestamp") else now()


@dataclass
class Tick:
    """One tick of one Schedule: what kopf passed, and its spec and cron read once."""
    body: dict
    meta: dict
    status: dict
    memo: object            # the Schedule's kopf memo: memo.settings, and the run it last reported
    logger: object
    model: object           # kfault_api.spec.Schedule
    cron: Cron

    @property
    def retry_s(self):
        """A failed create or delete is tried again at the next tick."""
        return self.memo.settings.schedule_tick_s

    @functools.cached_property
    def created(self):
        return created_at(self.meta)

    def report_once(self, decision, event_type, reason, message):
        """An event per skipped or held-back run, not one per tick."""
        if getattr(self.memo, "reported", None) != (decision.step, decision.scheduled):
            self.memo.reported = (decision.step, decision.scheduled)
            kopf.event(self.body, type=event_type, reason=reason, message=message)


async def run_due(tick, children):
    """Create the experiment of a run that is due (or say why not); the time of the last run."""
    moment = now()
    last_run = parse_time(tick.status["time"]) if tick.status.get("time") else None
    decision = runs.decide(tick.cron, tick.model, tick.created, last_run, children, moment)
    if decision.step is runs.Step.MISSED:
        tick.report_once(decision, "Warning", "MissSchedule", f"the run of {iso(decision.scheduled)} is more "
                         f"than startingDeadlineSeconds ({tick.model.starting_deadline_s}) late: skipped")
    elif decision.step is runs.Step.FORBIDDEN:
        running = ", ".join(c.name for c in children if not c.finished)
        tick.report_once(decision, "Normal", "Forbid", f"concurrencyPolicy Forbid: {running} still running")
    elif decision.step is runs.Step.RUN and not is_paused(tick.meta):
        document = runs.child_document(tick.body, tick.model, decision.scheduled)
        await asyncio.to_thread(create_child, document, tick.retry_s)
        tick.logger.info("created %s %s", document["kind"], document["metadata"]["name"])
        kopf.info(tick.body, reason="Spawned", message=f"created {document['kind']} {document['metadata']['name']}")
        return moment
    return last_run


async def prune(tick, children):
    """Delete the finished experiments beyond historyLimit; the ones left."""
    gone = runs.to_prune(children, tick.model.history_limit)
    for child in gone:
        await asyncio.to_thread(delete_child, child, tick.retry_s)
        tick.logger.info("history: deleted %s %s", child.kind, child.name)
    return [c for c in children if c not in gone]


async def schedule_tick(body, meta, status, patch, memo, logger, **indexes):
    """Each tick: check the spec, prune the history, create the run that is due, report."""
    try:
        model, cron = read_schedule(body)
    except (api_spec.InvalidSpec, CronError) as err:
        problem = "; ".join(str(e) for e in err.errors) if isinstance(err, api_spec.InvalidSpec) else str(err)
        conditions = validity(status, problem)
        if conditions:
            kopf.warn(body, reason="Invalid", message=problem)
            patch.status["conditions"] = conditions
        return
    conditions = validity(status, None)
    if conditions:
        patch.status["conditions"] = conditions
    tick = Tick(body, meta, status, memo, logger, model, cron)
    children = await prune(tick, children_of(meta["uid"], model.type, indexes))
    last_run = await run_due(tick, children)
    patch.status.update(runs.status_changes(status, children, last_run, cron.next_start(now(), tick.created)))


def register(registry, settings):
    """The index of each chaos kind's experiments a Schedule made, and the Schedule's timer every
    settings.schedule_tick_s (Chaos Mesh's examples run @every 5s)."""
    for kind in api_spec.EXPERIMENTS.values():
        kopf.index(GROUP, VERSION, kind.plural, id=INDEX_OF_KIND[kind.name],
                   labels={api_spec.SCHEDULE_LABEL: kopf.PRESENT}, registry=registry)(index_children)
    kopf.timer(GROUP, VERSION, api_spec.SCHEDULE.plural, interval=settings.schedule_tick_s, id="schedule_tick",
               registry=registry)(schedule_tick)
