"""The kopf handlers of the chaos kinds, one set per kind of kfault_api.spec.EXPERIMENTS (a
Schedule's are in schedule/, the operator-wide ones in operator.py). They are thin: placement.py
turns a resource into calls to agents, status.py says what the status reads, windows.py says when
an experiment should be in place. It never touches a node itself.

Per resource: on create, spec change or pause, place it (or take it back); every renew_s keep
it alive (renew leases, open and close scheduled windows, end its duration, place it once a
namespace that refused it consents); on delete take it back everywhere. kopf's finalizer holds
a deleted resource until every node has confirmed (or is gone). A node whose agent is missing
is placed again (kopf.TemporaryError) until its agent is on the watch. The status is patched
only where it changes: a timer tick that changes nothing costs the API server nothing.

Each handler call works through one Reconcile: what kopf passed, what is read of the resource
(its kind, key, generation, pause, windows: once per call), and the operator's shared state
from kopf's memo (operator.py).
"""
import functools
import time
from dataclasses import dataclass

import kopf

from kfault_api import spec as api_spec
from kfault_controller import cluster, placement, selection, stop, windows
from kfault_controller import status as report
from kfault_controller.cron import CronError
from kfault_controller.metrics import RECONCILE
from kfault_controller.windows import PAUSE_ANNOTATION, Due

GROUP, VERSION = api_spec.API_VERSION.split("/")
KIND_OF_PLURAL = {kind.plural: kind for kind in api_spec.EXPERIMENTS.values()}
AGENT_RETRY_MAX_S = 60.0      # a node whose agent is missing: the longest wait between placements there
INVALID = (selection.SelectionError, api_spec.InvalidSpec, CronError)   # the user's to fix: reported in status


def refusal_reason(err):
    """The condition's reason: a namespace that has not consented, or something else to fix."""
    return report.NAMESPACE_NOT_PERMITTED if isinstance(err, selection.NamespaceNotPermitted) else "Invalid"


def invalid_message(err):
    return "; ".join(str(e) for e in err.errors) if isinstance(err, api_spec.InvalidSpec) else str(err)


def agent_retry_delay(retry, renew_s):
    """Seconds until placing again on nodes whose agent is missing: each retry writes kopf's
    progress and an event, so back off (an agent restarting is back within seconds)."""
    return min(renew_s * 2 ** retry, AGENT_RETRY_MAX_S)


@dataclass
class Reconcile:
    """One handler call on one chaos resource. memo: the resource's kopf memo, a copy of the
    operator's (settings, agents, pods, renewals, phases: operator.py) with what this process
    did for the resource (`reconciled`)."""
    kind: api_spec.Kind
    body: dict
    spec: dict
    meta: dict
    status: dict
    patch: object
    logger: object
    memo: object
    namespace_annotations: object       # kopf's index: namespace -> a store of its annotations
    node_labels: object                 # kopf's index: node -> a store of its labels

    @classmethod
    def of(cls, resource, body, spec, meta, status, patch, logger, memo, namespace_annotations, node_labels, **_):
        """From a handler's kopf keywords."""
        return cls(KIND_OF_PLURAL[resource.plural], body, spec, meta, status, patch, logger, memo,
                   namespace_annotations, node_labels)

    @functools.cached_property
    def key(self):
        return f"{self.meta['namespace']}/{self.meta['name']}"

    @functools.cached_property
    def observed(self):
        return report.observed_generation(self.meta, self.spec)

    @functools.cached_property
    def paused(self):
        return windows.is_paused(self.meta)

    @functools.cached_property
    def windows(self):
        """Its scheduled windows, or None; CronError names the field to fix."""
        return windows.windows_of(self.spec, self.meta)

    @functools.cached_property
    def view(self):
        """The cluster at this call: the pod cache and the node index."""
        return cluster.view_of(self.memo.pods, self.node_labels)

    @functools.cached_property
    def scope(self):
        """Where this resource may select pods, from the namespace index (name -> one annotations dict)."""
        return selection.Scope(home=self.meta["namespace"],
                               annotations={name: next(iter(store), {})
                                            for name, store in self.namespace_annotations.items()},
                               cross_namespace=self.memo.settings.allow_cross_namespace)

    def write(self, new):
        """Put in kopf's patch only what changes the status: nothing changed, no request."""
        self.patch.status.update(report.changes(self.status, new))

    def record_phase(self, phase, records=()):
        self.memo.phases.record(self.kind.name, self.key, phase, records)

    def done_already(self):
        """This spec (and pause state) is in place already: kopf may call a handler again, and a
        watch may deliver a body older than our last status write (memo: what this process did)."""
        return (self.status.get("phase") == "Finished"
                or (self.status.get("phase") == "Running" and self.status.get("observedGeneration") == self.observed
                    and not self.paused)
                or self.memo.get("reconciled") == (self.observed, self.paused))

    async def inject_or_wait(self, previous=()):
        """Inject now, or, scheduled and between windows, wait for the next one: (the phase it
        set, what placing did or None). previous: the records of this spec's last placement."""
        now = report.now()
        window = self.windows.current(now) if self.windows else None
        if self.windows and window is None:
            self.write(report.waiting(self.windows.next_start(now)))
            return "Waiting", None
        phase, placed = await self.inject(previous)
        self.write({"startedAt": self.status.get("startedAt") or report.now_iso(),
                    **({"windowEnd": report.iso(window[1])} if window else {})})
        return phase, placed

    async def inject(self, previous=()):
        """Place the experiment; its status, its events, and a warning per pod an agent refused:
        (its phase, what placing did). A pod still injected since `previous` keeps its injectedAt."""
        placed = await placement.place(self.memo.agents, self.kind, self.body, self.spec, self.scope, self.view)
        if not placed.by_api:
            for record in report.failed_records(placed.records):
                self.logger.warning("%s on %s: %s", self.key, record["pod"], record["error"])
        for event_type, reason, message in report.placement_events(placed):
            kopf.event(self.body, type=event_type, reason=reason, message=message)
        new = report.placed(placed)
        if previous:
            new["records"] = report.kept_injection_times(new["records"], previous)
        if not placed.by_api:
            self.memo.renewals.want(self.key, report.injected_nodes(new["records"]))
        self.write(new)
        return new["phase"], placed

    def hold_stopped(self):
        """The cluster-wide stop holds: the agents took everything back (stop.py); place nothing."""
        self.memo.renewals.drop(self.key)
        records = report.recovered(list(self.status.get("records") or []), {})
        self.write(report.stopped(records, self.memo.stop.reason, stop.STOPPED_REASON))
        self.record_phase("Paused")

    async def take_back(self, reason):
        """Revoke on every node in the records: ({node: why it has not confirmed}, the records stamped)."""
        self.memo.renewals.drop(self.key)
        records = list((self.status or {}).get("records") or [])
        nodes = report.record_nodes(records)
        if not nodes:
            return {}, records
        pending = await placement.revoke(self.memo.agents, self.key, nodes, self.view)
        for node, error in pending.items():
            self.logger.warning("revoke %s on %s: %s", self.key, node, error)
        if not pending:
            kopf.info(self.body, reason="Recovered", message=f"{reason}: taken back on {len(nodes)} node(s)")
        return pending, report.recovered(records, pending)


async def reconcile(it, reason, retry=0):
    """Bring the nodes to what the resource asks (created, spec changed, pause changed, or a
    namespace consented). A node whose agent is missing is retried (kopf.TemporaryError) until
    it is placed there."""
    started = time.monotonic()
    status = it.status
    if it.memo.stop.active:
        it.hold_stopped()
        return
    if not retry and it.done_already():
        return        # already done for this spec: handlers may be called again (idempotent)
    it.logger.info("reconcile (%s): phase %s, generation %s", reason, status.get("phase"),
                   status.get("observedGeneration"))
    if it.paused:
        pending, records = await it.take_back("paused")
        it.write(report.paused(records, not pending, PAUSE_ANNOTATION))
        it.record_phase("Paused")
        if not pending:
            it.memo["reconciled"] = (it.observed, True)
        return
    same_spec_again = bool(retry) and status.get("observedGeneration") == it.observed
    if status.get("phase") == "Running" and status.get("records") and not same_spec_again:
        await it.take_back("spec changed")
    previous = status.get("records") or [] if same_spec_again else []
    try:
        phase, placed = await it.inject_or_wait(previous)
    except INVALID as err:
        why = refusal_reason(err)
        kopf.warn(it.body, reason=why, message=invalid_message(err))
        it.write(report.invalid(invalid_message(err), why))
        it.record_phase("Failed")
        return
    it.write({"observedGeneration": it.observed})
    it.record_phase(phase, it.patch.status.get("records") or status.get("records") or ())
    if phase != "Waiting":
        RECONCILE.labels(it.kind.name).observe(time.monotonic() - started)
    if placed and placed.no_agent:
        raise kopf.TemporaryError(f"no ready kfault agent on node(s) {', '.join(placed.no_agent)} yet: "
                                  "placing there again", delay=agent_retry_delay(retry, it.memo.settings.renew_s))
    it.memo["reconciled"] = (it.observed, False)


async def on_create_update_or_pause(reason, retry=0, **kwargs):
    """Created, spec changed, or the pause annotation changed: bring the nodes to what it asks.
    kwargs: kopf's other keywords, among them the indexes."""
    await reconcile(Reconcile.of(**kwargs), reason, retry)


async def keep_alive(**kwargs):
    """Every renew_s: open or close a scheduled window, end the duration, or renew the leases;
    or, refused a namespace, place it once every namespace consents."""
    it = Reconcile.of(**kwargs)
    status = it.status
    if status.get("phase") and not it.memo.phases.knows(it.kind.name, it.key, status["phase"]):
        # The metrics follow the status: a restarted controller counts what it takes over. Every
        # handler that changes the records records them: a tick need not count 1,000 records again.
        it.record_phase(status["phase"], status.get("records") or ())
    if it.memo.stop.active:
        if status.get("phase") not in ("Finished", "Failed") and not report.shows_stopped(status, stop.STOPPED_REASON):
            it.hold_stopped()
        return
    if report.shows_stopped(status, stop.STOPPED_REASON):
        await reconcile(it, "cluster-wide stop lifted", retry=1)
        return
    if report.refused_namespace(status):
        if not selection.refusals(it.spec, it.scope):
            await reconcile(it, "namespace consent")
        return
    try:
        scheduled = it.windows
    except CronError:
        return                                    # reported by reconcile
    now = report.now()
    step = windows.due(scheduled, it.spec, it.meta, status, now)
    if step is Due.OPEN_WINDOW:
        await it.inject()
        it.write({"windowEnd": report.iso(scheduled.current(now)[1])})
    elif step is Due.NEXT_START:
        it.write({"nextStart": report.iso(scheduled.next_start(now))})
    elif step is Due.CLOSE_WINDOW:
        pending, records = await it.take_back("window ended")
        it.write({"records": records})
        if not pending:
            it.write(report.waiting(scheduled.next_start(now)))
            it.record_phase("Waiting")
    elif step is Due.END_DURATION:
        pending, records = await it.take_back("duration ended")
        it.write({"records": records})
        if not pending:
            it.write(report.finished())
            it.record_phase("Finished")
    elif step is Due.RENEW:
        # The renewal loop calls each node once for all its experiments (renewals.py).
        it.memo.renewals.want(it.key, report.injected_nodes(status.get("records") or []))


async def on_delete(**kwargs):
    """Deleted: take it back everywhere; kopf's finalizer holds the resource until every node confirmed."""
    it = Reconcile.of(**kwargs)
    it.logger.info("deleted: taking the experiment back on every node")
    pending, _ = await it.take_back("deleted")
    if pending:
        # A node whose agent is not ready (restarting, or not yet on the watch) may still hold
        # the fault: retry until it confirms, or until the node is gone.
        raise kopf.TemporaryError("not yet taken back on " + "; ".join(f"{node} ({error})" for node, error
                                                                      in sorted(pending.items())),
                                  delay=it.memo.settings.renew_s)
    it.record_phase(None)


def register(registry, settings):
    """Each chaos kind's handlers, the keep-alive timer every settings.renew_s."""
    for kind in api_spec.EXPERIMENTS.values():
        kopf.on.create(GROUP, VERSION, kind.plural, id="create", registry=registry)(on_create_update_or_pause)
        kopf.on.update(GROUP, VERSION, kind.plural, field="spec", id="spec", registry=registry)(
            on_create_update_or_pause)
        kopf.on.field(GROUP, VERSION, kind.plural, field=("metadata", "annotations", PAUSE_ANNOTATION),
                      id="pause", registry=registry)(on_create_update_or_pause)
        kopf.timer(GROUP, VERSION, kind.plural, interval=settings.renew_s, initial_delay=settings.renew_s,
                   id="keep_alive", registry=registry)(keep_alive)
        kopf.on.delete(GROUP, VERSION, kind.plural, id="on_delete", registry=registry)(on_delete)
