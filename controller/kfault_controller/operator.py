"""The controller as one kopf operator: registry(settings) registers every handler (the timers'
intervals are settings), run(settings) runs them with the settings in kopf's memo. __main__
runs it as a process; the tests run it in their event loop.

What the controller knows of the cluster comes from watches: every namespace's annotations
(which namespaces an experiment may reach, selection.Scope) and every node's labels in kopf
indexes; every pod (summarized) and where each node's agent is in a cluster.PodCache, listed
once at start and then kept by the pods watch's events. It never lists pods or nodes per
reconcile or per timer; each handler takes a snapshot (cluster.ClusterView). kopf runs no
resource handler before its startup handlers ran and its indexes are filled, so the first
reconcile sees the whole cluster.

What the handlers share is in kopf's memo, made by the startup handlers below (kopf starts no
watch before they ran, and gives each resource a copy of the operator's memo): memo.settings
(from run), memo.agents (agents.AgentDirectory), memo.pods (cluster.PodCache), memo.renewals
(renewals.Renewals, renewed by one loop), memo.phases (metrics.Phases) and memo.workflow_pods
(workflow.handlers.WorkflowPods, the Task pods the pods watch sees) and memo.stop
(stop.ClusterStop, the cluster-wide stop, read from the agents' namespace's annotation).
"""
import asyncio
import contextlib
import functools
import logging
import os

import kopf
import kubernetes

from kfault_api import spec as api_spec
from kfault_controller import cluster, handlers, metrics, renewals, stop
from kfault_controller.schedule import handlers as schedule_handlers
from kfault_controller.statuscheck import handlers as statuscheck_handlers
from kfault_controller.workflow import handlers as workflow_handlers
from kfault_controller.agents import AgentDirectory, agent_of

GROUP, VERSION = api_spec.API_VERSION.split("/")


async def run(settings, kopf_settings=None, memo=None, **options):
    """The operator, cluster-wide as it runs in a cluster, until kopf stops. memo: the operator's
    (a test's, to look at what the controller holds); kopf_settings (kopf.OperatorSettings) and
    options: kopf.operator's."""
    memo = kopf.Memo() if memo is None else memo
    memo.settings = settings
    await kopf.operator(registry=registry(settings), memo=memo, settings=kopf_settings, clusterwide=True, **options)


def registry(settings):
    """Every handler of the controller, in a registry of its own."""
    made = kopf.OperatorRegistry()
    for activity, handler in ((kopf.on.startup, configure), (kopf.on.startup, share),
                              (kopf.on.startup, list_pods_once), (kopf.on.startup, start_renewing),
                              (kopf.on.cleanup, stop_renewing), (kopf.on.login, login)):
        activity(registry=made)(handler)
    kopf.index("v1", "namespaces", registry=made)(namespace_annotations)
    kopf.index("v1", "nodes", registry=made)(node_labels)
    kopf.on.event("v1", "pods", registry=made)(pod_changed)
    kopf.on.event("v1", "namespaces", registry=made)(stop_annotation)
    handlers.register(made, settings)
    schedule_handlers.register(made, settings)
    workflow_handlers.register(made, settings)
    statuscheck_handlers.register(made, settings)
    return made


async def configure(settings: kopf.OperatorSettings, **_):
    settings.persistence.finalizer = f"{GROUP}/recovery"
    # kopf's own progress goes in annotations: status holds only what the CRD schema declares.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = StatuslessDiffBase(prefix=GROUP)
    settings.posting.level = logging.INFO


class StatuslessDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base (what a resource's spec handlers compare), built from the body without
    its status. kopf builds it at every event of a resource by deep-copying the whole body and
    then dropping the status: an experiment's status holds a record per pod, and those copies
    were a tenth of the controller's time placing experiments on 1,000 pods each. What it builds
    is the same: the essence never holds the status unless a handler watches a status field,
    and none does here (then kopf's own build runs)."""

    def build(self, *, body, extra_fields=None):
        fields = list(extra_fields or ())
        if "status" not in body or any(_top_field(field) == "status" for field in fields):
            return super().build(body=body, extra_fields=fields)
        return super().build(body=kopf.Body({k: v for k, v in body.items() if k != "status"}), extra_fields=fields)


def _top_field(field):
    """The first name of a kopf field spec ("a.b" or ("a", "b"))."""
    return field.split(".")[0] if isinstance(field, str) else field[0]


async def share(memo, **_):
    """What every handler of this operator run shares, from memo.settings."""
    chosen = memo.settings
    memo.agents = AgentDirectory(chosen.credentials, chosen.lease_s)
    memo.pods = cluster.PodCache(functools.partial(agent_of, namespace=chosen.agent_namespace))
    memo.renewals = renewals.Renewals(stale_s=chosen.lease_s)   # what each experiment wants renewed, by node
    memo.phases = metrics.Phases()
    memo.workflow_pods = workflow_handlers.WorkflowPods()     # Task pods, from the pods watch
    memo.stop = stop.ClusterStop()                            # the cluster-wide stop (stop.py)


# Indexers are async: kopf runs a plain def in a thread pool, a thread hop per pod event (5,000
# at start) in the pool the agent calls use.
async def namespace_annotations(name, annotations, **_):
    """Every namespace's annotations, kept current by kopf's watch (whom it accepts experiments
    from). kopf runs no resource handler before this index is filled."""
    return {name: dict(annotations)}


async def node_labels(name, labels, **_):
    """Every node's labels (spec.selector.nodeSelectors); a node missing here is gone."""
    return {name: dict(labels)}


async def list_pods_once(memo, logger, **_):
    """Fill the pod cache with one paged LIST before kopf starts watching (startup handlers run
    first), so the first reconcile sees every pod; the pods watch keeps it current after."""
    load_client_config()
    memo.pods.clear()
    for body in await asyncio.to_thread(cluster.list_pods):
        memo.pods.put(body)
    logger.info("listed %d pods, %d agents", len(memo.pods.pods), len(memo.pods.agent_pods))


async def pod_changed(type, body, memo, **_):
    """A pod added, changed or deleted (and each pod of a watch's listing, type None)."""
    if type == "DELETED":
        memo.pods.remove(body)
    else:
        memo.pods.put(body)
    memo.workflow_pods.changed(type, body)


async def stop_annotation(body, memo, logger, **_):
    """The agents' namespace's stop annotation set or removed: tell every agent at once (the
    renewal loop tells them again every renew_s while it holds)."""
    name = body["metadata"]["name"]
    if name != memo.settings.agent_namespace:
        return
    reason = stop.reason_of(name, body["metadata"].get("annotations"))
    if reason == memo.stop.reason:
        return
    memo.stop.reason = reason
    logger.warning("cluster-wide stop %s", f"holds: {reason}" if reason else "lifted")
    failed = await stop.tell_agents(memo.agents, memo.pods.agents(), reason, timeout_s=memo.settings.renew_s)
    for node, error in failed.items():
        logger.warning("stop on %s: %s (told again at the next renewal)", node, error)


async def start_renewing(memo, **_):
    """One renewal loop for the whole controller: each node's experiments in one call per renew_s."""
    memo.renewing = asyncio.create_task(renewals.renew_every(memo.renewals, memo.settings.renew_s, memo.agents,
                                                             memo.pods.agents, memo.stop))


async def stop_renewing(memo, **_):
    task = memo.pop("renewing", None)
    if task:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if "agents" in memo:
        await memo.agents.aclose()


def load_client_config():
    """In a pod: its service account; elsewhere: $KUBECONFIG (read now, not at import)."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))


def login(**_):
    """kopf and the kubernetes client use one configuration (kopf's own login reads a
    kubeconfig path fixed when the library was imported)."""
    load_client_config()
    config = kubernetes.client.Configuration.get_default_copy()
    token = (config.api_key or {}).get("authorization", "").removeprefix("Bearer ").strip() or None
    return kopf.ConnectionInfo(server=config.host, ca_path=config.ssl_ca_cert, insecure=not config.verify_ssl,
                               token=token, certificate_path=config.cert_file, private_key_path=config.key_file)
