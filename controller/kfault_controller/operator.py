"""The kfault controller: kopf handlers that translate chaos resources into agent calls and
report what happened. It never touches a node itself.

Per resource: select pods, group them by node, send each node's agent the experiment with its
pods and a lease, renew the leases while the experiment runs, and take it back everywhere on
delete, pause or the end of `duration`. kopf's finalizer holds a deleted resource until every
node has confirmed (or is gone).
"""
import asyncio
import datetime
import hashlib
import json
import logging
import os
import time

import kopf
import kubernetes
from prometheus_client import Counter, Gauge, Histogram

from kfault_api import spec as agent_spec
from kfault_api import units
from kfault_api.rpc import agent_pb2 as pb

from kfault_controller import selection
from kfault_controller.schedule import Schedule, ScheduleError
from kfault_controller.agents import AGENT_LABEL, AGENT_NAMESPACE, AgentDirectory, NoAgent, agent_address

log = logging.getLogger(__name__)

GROUP, VERSION = agent_spec.API_VERSION.split("/")
PAUSE_ANNOTATION = "experiment.kfault.dev/pause"
LEASE_S = float(os.environ.get("KFAULT_LEASE_S", "15"))
RENEW_S = float(os.environ.get("KFAULT_RENEW_S", "5"))    # a third of the lease: two renewals may fail
RPC_TIMEOUT_S = 30.0
AGENT_KINDS = {"networkchaos": "NetworkChaos", "iochaos": "IOChaos", "podchaos": "PodChaos"}

EXPERIMENTS = Gauge("kfault_controller_experiments", "Chaos resources by kind and phase.", ["kind", "phase"])
RECONCILE = Histogram("kfault_controller_reconcile_seconds", "Time to select, inject and report one resource.",
                      ["kind"])
AGENT_ERRORS = Counter("kfault_controller_agent_errors_total", "Agent calls that failed, by node.", ["node"])


_PHASES = {}        # (kind, namespace/name) -> phase, for the experiments gauge


def record_phase(kind, key, phase):
    """Keep kfault_controller_experiments{kind, phase} equal to the resources' phases."""
    if phase is None:
        _PHASES.pop((kind, key), None)
    else:
        _PHASES[(kind, key)] = phase
    EXPERIMENTS.clear()
    for (k, _), p in _PHASES.items():
        EXPERIMENTS.labels(k, p).inc()


class Config:
    agents = AgentDirectory()
    lease_s = LEASE_S


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _list(call, *args, **kwargs):
    """A list call's items as plain dicts, straight from the JSON (no client models)."""
    response = call(*args, _preload_content=False, **kwargs)
    return json.loads(response.data)["items"]


def cluster_view():
    """Pods, agent pods, node labels and namespace annotations, as plain dicts."""
    api = kubernetes.client.CoreV1Api()
    pods = _list(api.list_pod_for_all_namespaces)
    agents = _list(api.list_namespaced_pod, AGENT_NAMESPACE, label_selector=AGENT_LABEL)
    nodes = {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in _list(api.list_node)}
    # Only protected namespaces' annotations matter (they may allow experiments in).
    namespaces = {}
    for name in selection.PROTECTED_NAMESPACES:
        try:
            ns = json.loads(api.read_namespace(name, _preload_content=False).data)
            namespaces[name] = ns["metadata"].get("annotations") or {}
        except kubernetes.client.ApiException as err:
            if err.status != 404:
                raise
    return pods, agents, nodes, namespaces


def agent_addresses(agent_pods):
    return {p["spec"]["nodeName"]: agent_address(p) for p in agent_pods
            if p.get("spec", {}).get("nodeName") and agent_address(p)}


def translated_spec(kind, spec, pods, nodes, namespaces):
    """The spec an agent gets: for NetworkChaos, `target` pods become their IPs in externalTargets."""
    body = {k: v for k, v in spec.items() if k not in ("selector", "mode", "value", "target", "scheduler")}
    if kind == "NetworkChaos" and spec.get("target"):
        peers = selection.select(spec["target"], pods, nodes, namespaces)
        body["externalTargets"] = list(spec.get("externalTargets", [])) + [
            p["status"]["podIP"] for p in peers if (p.get("status") or {}).get("podIP")]
    if kind == "IOChaos":
        body.pop("containerNames", None)   # resolved to container IDs per pod below
    return body


def pod_target(pod, container_names=()):
    ids = [c["containerID"] for c in (pod.get("status") or {}).get("containerStatuses") or []
           if c.get("containerID") and (not container_names or c["name"] in container_names)]
    meta = pod["metadata"]
    return pb.Target(pod=pb.Pod(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"],
                                container_ids=ids))


def condition(kind, status, reason, message=""):
    return {"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": now_iso()}


async def _call(node, address, method, request):
    if address is None:
        raise NoAgent(f"no ready kfault agent on node {node}")
    stub = Config.agents.stub(address)
    return await asyncio.to_thread(getattr(stub, method), request, timeout=RPC_TIMEOUT_S)


async def inject(kind, body, spec, logger):
    """Select, place on every node, and return the status patch."""
    key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
    pods, agent_pods, nodes, namespaces = await asyncio.to_thread(cluster_view)
    chosen = selection.select(spec, pods, nodes, namespaces)
    agent_body = translated_spec(kind, spec, pods, nodes, namespaces)
    # The agents check it too; checking here reports it once, in the status, before any call.
    agent_spec.parse_experiment({"apiVersion": agent_spec.API_VERSION, "kind": kind,
                                 "metadata": body["metadata"], "spec": agent_body})
    if kind == "PodChaos" and spec["action"] == "pod-kill":
        return await kill_pods(body, spec, chosen)
    addresses = agent_addresses(agent_pods)
    by_node = {}
    for pod in chosen:
        by_node.setdefault(pod["spec"].get("nodeName"), []).append(pod)
    records = []
    for node, node_pods in sorted(by_node.items(), key=lambda item: item[0] or ""):
        request = pb.ApplyRequest(experiment=key, kind=kind, spec_json=json.dumps(agent_body),
                                  targets=[pod_target(p, spec.get("containerNames", ())) for p in node_pods],
                                  lease_seconds=Config.lease_s)
        try:
            response = await _call(node, addresses.get(node), "Apply", request)
            errors = {r.target: r.error for r in response.results if not r.ok}
        except Exception as err:  # noqa: BLE001 - an unreachable or refusing node is a per-pod error
            AGENT_ERRORS.labels(node or "none").inc()
            message = err.details() if hasattr(err, "details") else str(err)
            errors = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": message for p in node_pods}
        for pod in node_pods:
            name = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
            record = {"pod": name, "node": node or ""}
            if name in errors:
                record["error"] = errors[name]
            else:
                record["injectedAt"] = now_iso()
            records.append(record)
    failed = [r for r in records if r.get("error")]
    for record in failed:
        logger.warning("%s on %s: %s", key, record["pod"], record["error"])
    kopf.info(body, reason="Selected", message=f"{len(chosen)} pod(s) on {len(by_node)} node(s)")
    if records and not failed:
        kopf.info(body, reason="Injected", message=f"injected on {len(records)} pod(s)")
    elif failed:
        kopf.warn(body, reason="InjectFailed", message="; ".join(f"{r['pod']}: {r['error']}" for r in failed)[:1000])
    return {
        "phase": "Running" if len(failed) < len(records) else "Failed",
        "records": records,
        "conditions": [
            condition("Selected", "True" if chosen else "False", "PodsSelected" if chosen else "NoPodMatched",
                      f"{len(chosen)} pod(s)"),
            condition("AllInjected", "True" if records and not failed else "False",
                      "Injected" if records and not failed else "SomeFailed" if failed else "NothingToInject"),
            condition("AllRecovered", "False", "Injected"),
            condition("Paused", "False", "Running"),
        ],
    }


async def kill_pods(body, spec, chosen):
    """PodChaos pod-kill: the API server deletes the pods (with the grace period asked); their
    owners bring them back. One-shot: the experiment is finished once they are deleted."""
    api = kubernetes.client.CoreV1Api()
    records = []
    for pod in chosen:
        meta = pod["metadata"]
        record = {"pod": f"{meta['namespace']}/{meta['name']}", "node": pod["spec"].get("nodeName", "")}
        try:
            await asyncio.to_thread(api.delete_namespaced_pod, meta["name"], meta["namespace"],
                                    grace_period_seconds=spec.get("gracePeriod"), _preload_content=False)
            record["injectedAt"] = now_iso()
        except kubernetes.client.ApiException as err:
            record["error"] = f"delete pod: {err.reason}"
        records.append(record)
    kopf.info(body, reason="Killed", message=f"deleted {sum('injectedAt' in r for r in records)} pod(s)")
    return {"phase": "Finished", "records": records,
            "conditions": [condition("Selected", "True" if chosen else "False", "PodsSelected"),
                           condition("AllInjected", "True" if all("injectedAt" in r for r in records) else "False",
                                     "Killed")]}


async def recover(kind, body, status, reason, logger):
    """Revoke on every node in the records; the nodes that confirmed, and a patch."""
    key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
    records = list((status or {}).get("records") or [])
    nodes = sorted({r["node"] for r in records if r.get("node")})
    if not nodes:
        return True, {"records": records}
    _, agent_pods, node_labels, _ = await asyncio.to_thread(cluster_view)
    addresses = agent_addresses(agent_pods)
    pending = []
    for node in nodes:
        if node not in node_labels:
            continue                      # the node is gone: nothing left to take back
        try:
            await _call(node, addresses.get(node), "Revoke", pb.RevokeRequest(experiment=key))
        except Exception as err:  # noqa: BLE001
            AGENT_ERRORS.labels(node).inc()
            logger.warning("revoke %s on %s: %s", key, node, err)
            pending.append(node)
    stamp = now_iso()
    for record in records:
        if record.get("node") not in pending and record.get("injectedAt") and not record.get("recoveredAt"):
            record["recoveredAt"] = stamp
    if not pending:
        kopf.info(body, reason="Recovered", message=f"{reason}: taken back on {len(nodes)} node(s)")
    return not pending, {"records": records}


def observed_generation(meta, spec):
    """The resource's generation; where the API server keeps none (an emulator), a number
    derived from the spec, so a spec change still reads as a new generation."""
    if meta.get("generation"):
        return meta["generation"]
    digest = hashlib.sha256(json.dumps(dict(spec), sort_keys=True).encode()).hexdigest()
    return int(digest[:12], 16)


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(moment):
    return moment.astimezone(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def schedule_of(spec, meta):
    """(Schedule, window length, anchor) for a resource with spec.scheduler, else None.
    ScheduleError names the field to fix."""
    expression = (spec.get("scheduler") or {}).get("cron")
    if not expression:
        return None
    if not spec.get("duration"):
        raise ScheduleError("spec.duration: the length of each window; spec.scheduler needs it")
    try:
        schedule = Schedule(expression)
    except ScheduleError as err:
        raise ScheduleError(f"spec.scheduler.cron: {expression!r}: {err}") from None
    length = datetime.timedelta(microseconds=units.parse_duration_ns(spec["duration"]) / 1000)
    anchor = parse_time(meta["creationTimestamp"]) if meta.get("creationTimestamp") else \
        datetime.datetime.now(datetime.timezone.utc)
    return schedule, length, anchor


def is_paused(meta):
    return (meta.get("annotations") or {}).get(PAUSE_ANNOTATION) == "true"


def _register(plural):
    kind = AGENT_KINDS[plural]

    @kopf.on.create(GROUP, VERSION, plural, id="create")
    @kopf.on.update(GROUP, VERSION, plural, field="spec", id="spec")
    @kopf.on.field(GROUP, VERSION, plural, field=("metadata", "annotations", PAUSE_ANNOTATION), id="pause")
    async def reconcile(body, spec, meta, status, patch, logger, reason, **_):
        started = time.monotonic()
        logger.info("reconcile (%s): phase %s, generation %s", reason, status.get("phase"),
                    status.get("observedGeneration"))
        observed = observed_generation(meta, spec)
        if status.get("phase") == "Finished" or (
                status.get("phase") == "Running" and status.get("observedGeneration") == observed
                and not is_paused(meta)):
            return        # already done for this spec: handlers may be called again (idempotent)
        if is_paused(meta):
            done, recovered = await recover(kind, body, status, "paused", logger)
            patch.status.update(recovered)
            patch.status["phase"] = "Paused"
            record_phase(kind, f"{meta['namespace']}/{meta['name']}", "Paused")
            patch.status["conditions"] = [condition("Paused", "True", "Annotated", PAUSE_ANNOTATION),
                                          condition("AllRecovered", "True" if done else "False", "Paused")]
            return
        if status.get("phase") == "Running" and status.get("records"):
            await recover(kind, body, status, "spec changed", logger)
        try:
            scheduled = schedule_of(spec, meta)
            if scheduled:
                schedule, length, anchor = scheduled
                now = datetime.datetime.now(datetime.timezone.utc)
                window = schedule.current_window(now, anchor, length)
                if window is None:
                    patch.status.update({"phase": "Waiting", "nextStart": iso(schedule.next_start(now, anchor)),
                                         "observedGeneration": observed})
                    record_phase(kind, f"{meta['namespace']}/{meta['name']}", "Waiting")
                    return
                patch.status["windowEnd"] = iso(window[1])
            patch.status.update(await inject(kind, body, spec, logger))
        except (selection.SelectionError, agent_spec.InvalidSpec, ScheduleError) as err:
            message = "; ".join(str(e) for e in err.errors) if isinstance(err, agent_spec.InvalidSpec) else str(err)
            kopf.warn(body, reason="Invalid", message=message)
            patch.status["phase"] = "Failed"
            patch.status["conditions"] = [condition("Selected", "False", "Invalid", message)]
            record_phase(kind, f"{meta['namespace']}/{meta['name']}", "Failed")
            return
        patch.status["startedAt"] = status.get("startedAt") or now_iso()
        patch.status["observedGeneration"] = observed
        record_phase(kind, f"{meta['namespace']}/{meta['name']}", patch.status.get("phase"))
        RECONCILE.labels(kind).observe(time.monotonic() - started)

    @kopf.timer(GROUP, VERSION, plural, interval=RENEW_S, initial_delay=RENEW_S)
    async def keep_alive(body, spec, meta, status, patch, logger, **_):
        key = f"{meta['namespace']}/{meta['name']}"
        try:
            scheduled = schedule_of(spec, meta)
        except ScheduleError:
            return                                    # reported by reconcile
        now = datetime.datetime.now(datetime.timezone.utc)
        if scheduled and status.get("phase") == "Waiting" and not is_paused(meta):
            schedule, length, anchor = scheduled
            if status.get("nextStart") and now >= parse_time(status["nextStart"]):
                window = schedule.current_window(now, anchor, length)
                if window:
                    patch.status.update(await inject(kind, body, spec, logger))
                    patch.status["windowEnd"] = iso(window[1])
                else:
                    patch.status["nextStart"] = iso(schedule.next_start(now, anchor))
            return
        if status.get("phase") != "Running":
            return
        if scheduled and status.get("windowEnd") and now >= parse_time(status["windowEnd"]):
            schedule, _, anchor = scheduled
            done, recovered = await recover(kind, body, status, "window ended", logger)
            patch.status.update(recovered)
            if done:
                patch.status.update({"phase": "Waiting", "nextStart": iso(schedule.next_start(now, anchor))})
                record_phase(kind, key, "Waiting")
            return
        duration = spec.get("duration")
        if duration and not scheduled and status.get("startedAt"):
            started = datetime.datetime.fromisoformat(status["startedAt"].replace("Z", "+00:00"))
            elapsed = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
            if elapsed * 1e9 >= units.parse_duration_ns(duration):
                done, recovered = await recover(kind, body, status, "duration ended", logger)
                patch.status.update(recovered)
                if done:
                    patch.status["phase"] = "Finished"
                    record_phase(kind, key, "Finished")
                    patch.status["conditions"] = [condition("AllRecovered", "True", "DurationEnded")]
                return
        _, agent_pods, _, _ = await asyncio.to_thread(cluster_view)
        addresses = agent_addresses(agent_pods)
        for node in sorted({r["node"] for r in status.get("records") or [] if r.get("injectedAt")}):
            try:
                await _call(node, addresses.get(node), "Renew",
                            pb.RenewRequest(experiment=key, lease_seconds=Config.lease_s))
            except Exception as err:  # noqa: BLE001 - the lease lapses on its own: fail-safe
                AGENT_ERRORS.labels(node).inc()
                logger.warning("renew %s on %s: %s", key, node, err)

    @kopf.on.delete(GROUP, VERSION, plural)
    async def take_back(body, status, logger, **_):
        logger.info("deleted: taking the experiment back on every node")
        done, _ = await recover(kind, body, status, "deleted", logger)
        if not done:
            raise kopf.TemporaryError("some nodes have not confirmed recovery yet", delay=RENEW_S)
        record_phase(kind, f"{body['metadata']['namespace']}/{body['metadata']['name']}", None)

    return reconcile, keep_alive, take_back


HANDLERS = {plural: _register(plural) for plural in AGENT_KINDS}


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
