"""The kfault controller's kopf handlers, one set per kind of kfault_api.spec.EXPERIMENTS (a
Schedule's are in schedule_handlers.py, registered below). They are
thin: placement.py turns a resource into calls to agents, status.py says what the status
reads, windows.py says when an experiment should be in place. It never touches a node itself.

Per resource: on create, spec change or pause, place it (or take it back); every RENEW_S keep
it alive (renew leases, open and close scheduled windows, end its duration, place it once a
namespace that refused it consents); on delete take it back everywhere. kopf's finalizer holds
a deleted resource until every node has confirmed (or is gone). A node whose agent is missing
is placed again (kopf.TemporaryError) until its agent is on the watch. The status is patched
only where it changes: a timer tick that changes nothing costs the API server nothing.

What the controller knows of the cluster comes from watches: every namespace's annotations
(which namespaces an experiment may reach, selection.Scope) and every node's labels in kopf
indexes; every pod (summarized) and where each node's agent is in a cluster.PodCache, listed
once at start and then kept by the pods watch's events. It never lists pods or nodes per
reconcile or per timer; each handler takes a snapshot (cluster.ClusterView). kopf runs no
resource handler before its startup handlers ran and its indexes are filled, so the first
reconcile sees the whole cluster.
"""
import asyncio
import contextlib
import logging
import os
import time

import kopf
import kubernetes

from kfault_api import spec as api_spec
from kfault_controller import cluster, placement, schedule_handlers, selection  # noqa: F401 - registers Schedule's
from kfault_controller import renewals
from kfault_controller import status as report
from kfault_controller import windows
from kfault_controller.agents import AGENT_LABEL, AGENT_NAMESPACE, RENEW_S, Config, agent_address
from kfault_controller.metrics import RECONCILE, record_phase
from kfault_controller.schedule import ScheduleError
from kfault_controller.windows import PAUSE_ANNOTATION, Due

GROUP, VERSION = api_spec.API_VERSION.split("/")
KIND_OF_PLURAL = {kind.plural: kind for kind in api_spec.EXPERIMENTS.values()}
AGENT_RETRY_MAX_S = 60.0      # a node whose agent is missing: the longest wait between placements there
INVALID = (selection.SelectionError, api_spec.InvalidSpec, ScheduleError)   # the user's to fix: reported in status


class Options:
    """What the administrator chose at start: __main__ (or a test) sets it once."""
    allow_cross_namespace = False     # --allow-cross-namespace: any namespace's pods, without its consent


# Indexers are async: kopf runs a plain def in a thread pool, a thread hop per pod event (5,000
# at start) in the pool the agent calls use.
@kopf.index("v1", "namespaces")
async def namespace_annotations(name, annotations, **_):
    """Every namespace's annotations, kept current by kopf's watch (whom it accepts experiments
    from). kopf runs no resource handler before this index is filled."""
    return {name: dict(annotations)}


@kopf.index("v1", "nodes")
async def node_labels(name, labels, **_):
    """Every node's labels (spec.selector.nodeSelectors); a node missing here is gone."""
    return {name: dict(labels)}


def agent_of(body):
    """host:port of a kfault agent pod (in AGENT_NAMESPACE, labelled AGENT_LABEL, with an IP and
    a grpc port); None for any other pod."""
    key, value = AGENT_LABEL.split("=")
    labels = (body["metadata"].get("labels") or {})
    if body["metadata"]["namespace"] != AGENT_NAMESPACE or labels.get(key) != value:
        return None
    return agent_address(body)


PODS = cluster.PodCache(agent_of)     # every pod, and each node's agent


@kopf.on.startup()
async def list_pods_once(logger, **_):
    """Fill the pod cache with one paged LIST before kopf starts watching (startup handlers run
    first), so the first reconcile sees every pod; the pods watch keeps it current after."""
    load_client_config()
    PODS.clear()
    for body in await asyncio.to_thread(cluster.list_pods):
        PODS.put(body)
    logger.info("listed %d pods, %d agents", len(PODS.pods), len(PODS.agent_pods))


@kopf.on.event("v1", "pods")
async def pod_changed(type, body, **_):
    """A pod added, changed or deleted (and each pod of a watch's listing, type None)."""
    if type == "DELETED":
        PODS.remove(body)
    else:
        PODS.put(body)


RENEWALS = renewals.Renewals(stale_s=Config.lease_s)    # what each experiment wants renewed, by node
RENEWING = set()         # the renewal loop's task (one per operator run)


@kopf.on.startup()
async def start_renewing(**_):
    """One renewal loop for the whole controller: each node's experiments in one call per RENEW_S."""
    RENEWALS.clear()
    RENEWALS.stale_s = Config.lease_s
    RENEWING.add(asyncio.create_task(renewals.renew_every(RENEWALS, RENEW_S, PODS.agents)))


@kopf.on.cleanup()
async def stop_renewing(**_):
    while RENEWING:
        task = RENEWING.pop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def cluster_view(node_labels, **_):
    """This moment's cluster: the pod cache, and the node index kopf passes every handler by name."""
    return cluster.view_of(PODS, node_labels)


def scope_of(body, namespace_annotations):
    """Where this resource may select pods, from the namespace index (name -> one annotations dict)."""
    return selection.Scope(home=body["metadata"]["namespace"],
                           annotations={name: next(iter(store), {}) for name, store in namespace_annotations.items()},
                           cross_namespace=Options.allow_cross_namespace)


def key_of(body):
    return f"{body['metadata']['namespace']}/{body['metadata']['name']}"


def post(body, events):
    for event_type, reason, message in events:
        kopf.event(body, type=event_type, reason=reason, message=message)


def refusal_reason(err):
    """The condition's reason: a namespace that has not consented, or something else to fix."""
    return report.NAMESPACE_NOT_PERMITTED if isinstance(err, selection.NamespaceNotPermitted) else "Invalid"


def invalid_message(err):
    return "; ".join(str(e) for e in err.errors) if isinstance(err, api_spec.InvalidSpec) else str(err)


def write_status(patch, status, new):
    """Put in kopf's patch only what changes the status: nothing changed, no request."""
    patch.status.update(report.changes(status, new))


def done_already(status, observed, meta, memo):
    """This spec (and pause state) is in place already: kopf may call a handler again, and a
    watch may deliver a body older than our last status write (memo: what this process did)."""
    paused = windows.is_paused(meta)
    return (status.get("phase") == "Finished"
            or (status.get("phase") == "Running" and status.get("observedGeneration") == observed and not paused)
            or memo.get("reconciled") == (observed, paused))


def agent_retry_delay(retry):
    """Seconds until placing again on nodes whose agent is missing: each retry writes kopf's
    progress and an event, so back off (an agent restarting is back within seconds)."""
    return min(RENEW_S * 2 ** retry, AGENT_RETRY_MAX_S)


async def on_create_update_or_pause(resource, body, spec, meta, status, patch, logger, reason, memo,
                                    namespace_annotations, retry=0, **kwargs):
    """Created, spec changed, or the pause annotation changed: bring the nodes to what it asks.
    A node whose agent is missing is retried (kopf.TemporaryError) until it is placed there.
    kwargs: kopf's other keywords, among them the indexes cluster_view reads."""
    started = time.monotonic()
    kind = KIND_OF_PLURAL[resource.plural]
    observed = report.observed_generation(meta, spec)
    if not retry and done_already(status, observed, meta, memo):
        return        # already done for this spec: handlers may be called again (idempotent)
    logger.info("reconcile (%s): phase %s, generation %s", reason, status.get("phase"),
                status.get("observedGeneration"))
    view = cluster_view(**kwargs)
    if windows.is_paused(meta):
        pending, records = await take_back(body, status, "paused", logger, view)
        write_status(patch, status, report.paused(records, not pending, PAUSE_ANNOTATION))
        record_phase(kind.name, key_of(body), "Paused")
        if not pending:
            memo["reconciled"] = (observed, True)
        return
    same_spec_again = bool(retry) and status.get("observedGeneration") == observed
    if status.get("phase") == "Running" and status.get("records") and not same_spec_again:
        await take_back(body, status, "spec changed", logger, view)
    scope = scope_of(body, namespace_annotations)
    previous = status.get("records") or [] if same_spec_again else []
    try:
        phase, placed = await inject_or_wait(kind, body, spec, meta, status, patch, logger, scope, view, previous)
    except INVALID as err:
        why = refusal_reason(err)
        kopf.warn(body, reason=why, message=invalid_message(err))
        write_status(patch, status, report.invalid(invalid_message(err), why))
        record_phase(kind.name, key_of(body), "Failed")
        return
    write_status(patch, status, {"observedGeneration": observed})
    record_phase(kind.name, key_of(body), phase, patch.status.get("records") or status.get("records") or ())
    if phase != "Waiting":
        RECONCILE.labels(kind.name).observe(time.monotonic() - started)
    if placed and placed.no_agent:
        raise kopf.TemporaryError(f"no ready kfault agent on node(s) {', '.join(placed.no_agent)} yet: "
                                  "placing there again", delay=agent_retry_delay(retry))
    memo["reconciled"] = (observed, False)


async def inject_or_wait(kind, body, spec, meta, status, patch, logger, scope, view, previous=()):
    """Inject now, or, scheduled and between windows, wait for the next one: (the phase it
    set, what placing did or None). previous: the records of this spec's last placement."""
    scheduled = windows.windows_of(spec, meta)
    now = report.now()
    window = scheduled.current(now) if scheduled else None
    if scheduled and window is None:
        write_status(patch, status, report.waiting(scheduled.next_start(now)))
        return "Waiting", None
    phase, placed = await inject(kind, body, spec, status, patch, logger, scope, view, previous)
    write_status(patch, status, {"startedAt": status.get("startedAt") or report.now_iso(),
                                 **({"windowEnd": report.iso(window[1])} if window else {})})
    return phase, placed


async def inject(kind, body, spec, status, patch, logger, scope, view, previous=()):
    """Place the experiment; its status, its events, and a warning per pod an agent refused:
    (its phase, what placing did). A pod still injected since `previous` keeps its injectedAt."""
    placed = await placement.place(kind, body, spec, scope, view)
    if not placed.by_api:
        for record in report.failed_records(placed.records):
            logger.warning("%s on %s: %s", key_of(body), record["pod"], record["error"])
    post(body, report.placement_events(placed))
    new = report.placed(placed)
    if previous:
        new["records"] = report.kept_injection_times(new["records"], previous)
    if not placed.by_api:
        RENEWALS.want(key_of(body), report.injected_nodes(new["records"]))
    write_status(patch, status, new)
    return new["phase"], placed


async def take_back(body, status, reason, logger, view):
    """Revoke on every node in the records: ({node: why it has not confirmed}, the records stamped)."""
    RENEWALS.drop(key_of(body))
    records = list((status or {}).get("records") or [])
    nodes = report.record_nodes(records)
    if not nodes:
        return {}, records
    pending = await placement.revoke(key_of(body), nodes, view)
    for node, error in pending.items():
        logger.warning("revoke %s on %s: %s", key_of(body), node, error)
    if not pending:
        kopf.info(body, reason="Recovered", message=f"{reason}: taken back on {len(nodes)} node(s)")
    return pending, report.recovered(records, pending)


async def keep_alive(resource, body, spec, meta, status, patch, logger, namespace_annotations, **kwargs):
    """Every RENEW_S: open or close a scheduled window, end the duration, or renew the leases;
    or, refused a namespace, place it once every namespace consents."""
    kind = KIND_OF_PLURAL[resource.plural]
    if status.get("phase"):
        # The metrics follow the status: a restarted controller counts what it takes over.
        record_phase(kind.name, key_of(body), status["phase"], status.get("records") or ())
    scope = scope_of(body, namespace_annotations)
    if report.refused_namespace(status):
        if not selection.refusals(spec, scope):
            await on_create_update_or_pause(resource, body, spec, meta, status, patch, logger, "namespace consent",
                                            namespace_annotations=namespace_annotations, **kwargs)
        return
    try:
        scheduled = windows.windows_of(spec, meta)
    except ScheduleError:
        return                                    # reported by on_create_update_or_pause
    now = report.now()
    step = windows.due(scheduled, spec, meta, status, now)
    view = cluster_view(**kwargs)
    if step is Due.OPEN_WINDOW:
        await inject(kind, body, spec, status, patch, logger, scope, view)
        write_status(patch, status, {"windowEnd": report.iso(scheduled.current(now)[1])})
    elif step is Due.NEXT_START:
        write_status(patch, status, {"nextStart": report.iso(scheduled.next_start(now))})
    elif step is Due.CLOSE_WINDOW:
        pending, records = await take_back(body, status, "window ended", logger, view)
        write_status(patch, status, {"records": records})
        if not pending:
            write_status(patch, status, report.waiting(scheduled.next_start(now)))
            record_phase(kind.name, key_of(body), "Waiting")
    elif step is Due.END_DURATION:
        pending, records = await take_back(body, status, "duration ended", logger, view)
        write_status(patch, status, {"records": records})
        if not pending:
            write_status(patch, status, report.finished())
            record_phase(kind.name, key_of(body), "Finished")
    elif step is Due.RENEW:
        # The renewal loop calls each node once for all its experiments (renewals.py).
        RENEWALS.want(key_of(body), report.injected_nodes(status.get("records") or []))


async def on_delete(resource, body, status, logger, **kwargs):
    """Deleted: take it back everywhere; kopf's finalizer holds the resource until every node confirmed."""
    logger.info("deleted: taking the experiment back on every node")
    pending, _ = await take_back(body, status, "deleted", logger, cluster_view(**kwargs))
    if pending:
        # A node whose agent is not ready (restarting, or not yet on the watch) may still hold
        # the fault: retry until it confirms, or until the node is gone.
        raise kopf.TemporaryError("not yet taken back on " + "; ".join(f"{node} ({error})" for node, error
                                                                      in sorted(pending.items())),
                                  delay=RENEW_S)
    record_phase(KIND_OF_PLURAL[resource.plural].name, key_of(body), None)


for _kind in api_spec.EXPERIMENTS.values():
    kopf.on.create(GROUP, VERSION, _kind.plural, id="create")(on_create_update_or_pause)
    kopf.on.update(GROUP, VERSION, _kind.plural, field="spec", id="spec")(on_create_update_or_pause)
    kopf.on.field(GROUP, VERSION, _kind.plural, field=("metadata", "annotations", PAUSE_ANNOTATION),
                  id="pause")(on_create_update_or_pause)
    kopf.timer(GROUP, VERSION, _kind.plural, interval=RENEW_S, initial_delay=RENEW_S, id="keep_alive")(keep_alive)
    kopf.on.delete(GROUP, VERSION, _kind.plural, id="on_delete")(on_delete)


def load_client_config():
    """In a pod: its service account; elsewhere: $KUBECONFIG (read now, not at import)."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))


@kopf.on.login()
def login(**_):
    """kopf and the kubernetes client use one configuration (kopf's own login reads a
    kubeconfig path fixed when the library was imported)."""
    load_client_config()
    config = kubernetes.client.Configuration.get_default_copy()
    token = (config.api_key or {}).get("authorization", "").removeprefix("Bearer ").strip() or None
    return kopf.ConnectionInfo(server=config.host, ca_path=config.ssl_ca_cert, insecure=not config.verify_ssl,
                               token=token, certificate_path=config.cert_file, private_key_path=config.key_file)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_):
    settings.persistence.finalizer = f"{GROUP}/recovery"
    # kopf's own progress goes in annotations: status holds only what the CRD schema declares.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.level = logging.INFO
