"""The kopf handlers of `kind: Workflow`: thin. nodes.py decides (pure); this module reads what
the Workflow's nodes made (kopf indexes of the kfault kinds carrying the workflow's label, and
memo.workflow_pods for its Task pods, fed by the operator's one pods watch: a kopf index of pods
would cost a readiness toggle per pod of the cluster), makes the API calls and writes the status.

What a node makes is an ordinary object in the Workflow's namespace, owned by it: experiments go
through ../handlers.py like any other (blast radius, leases), a Schedule through ../schedule/.
Deleting the Workflow deletes them first and holds it (kopf's finalizer) until they are gone.
"""
import asyncio
import json

import kopf
import kubernetes

from kfault_api import spec as api_spec
from kfault_controller.status import changes, condition, now, observed_generation
from kfault_controller.workflow import nodes, task

GROUP, VERSION = api_spec.API_VERSION.split("/")
# The kfault kinds a node may make, and the id of the index of those a Workflow made.
MADE_KINDS = [*api_spec.EXPERIMENTS.values(), api_spec.SCHEDULE, api_spec.STATUS_CHECK]
INDEX_OF_KIND = {kind.name: f"workflow_children_{kind.plural}" for kind in MADE_KINDS}


class WorkflowPods:
    """The Task pods of every Workflow: (namespace, workflow) -> {name: nodes.Child}, kept by the
    operator's pods watch (only pods carrying the workflow label are kept)."""

    def __init__(self):
        self.by_workflow = {}

    def changed(self, event_type, body):
        meta = body["metadata"]
        workflow = (meta.get("labels") or {}).get(api_spec.WORKFLOW_LABEL)
        if not workflow:
            return
        pods = self.by_workflow.setdefault((meta["namespace"], workflow), {})
        if event_type == "DELETED":
            pods.pop(meta["name"], None)
        else:
            pods[meta["name"]] = nodes.child_of({**body, "kind": "Pod"})

    def of(self, namespace, workflow):
        return list(self.by_workflow.get((namespace, workflow), {}).values())


async def index_children(body, meta, **_):
    """(namespace, workflow) -> nodes.Child, for what a Workflow's node made (deleting ones too:
    the Workflow's deletion waits for them)."""
    workflow = (meta.get("labels") or {}).get(api_spec.WORKFLOW_LABEL)
    return {(meta["namespace"], workflow): nodes.child_of(body)} if workflow else {}


def children_of(meta, memo, indexes):
    key = (meta["namespace"], meta["name"])
    made = [child for kind in MADE_KINDS for child in indexes[INDEX_OF_KIND[kind.name]].get(key, [])]
    return made + memo.workflow_pods.of(*key)


def read_workflow(body):
    doc = {"apiVersion": api_spec.API_VERSION, "kind": api_spec.WORKFLOW.name,
           "metadata": {"name": body["metadata"]["name"], "namespace": body["metadata"]["namespace"]},
           "spec": dict(body["spec"])}
    return api_spec.parse_experiment(doc, for_node=False)


def parsed(body, meta, memo):
    """The Workflow's model, parsed once per generation (memo: this Workflow's kopf memo): a
    tick every second need not validate the whole spec again."""
    generation = observed_generation(meta, body["spec"])
    cached = memo.get("workflow_model")
    if cached and cached[0] == generation:
        return cached[1]
    model = read_workflow(body)
    memo["workflow_model"] = (generation, model)
    return model


# ---- the API calls (blocking: run in a thread) --------------------------------------------

def create(document):
    """Create what a node makes; None, or why the API server refused it. A conflict means a step
    before a restart made it already: the node adopts it."""
    meta = document["metadata"]
    try:
        if document["kind"] == "Pod":
            kubernetes.client.CoreV1Api().create_namespaced_pod(meta["namespace"], document)
        else:
            kind = api_spec.KINDS[document["kind"]]
            kubernetes.client.CustomObjectsApi().create_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], kind.plural, document)
    except kubernetes.client.ApiException as err:
        if err.status == 409:
            return None
        if err.status in (400, 403, 422):     # admission (PodSecurity, quota) or the schema: the user's to fix
            return f"{document['kind']} {meta['name']} refused: {err.status} {err.reason}: {_api_message(err)}"
        raise kopf.TemporaryError(f"create {document['kind']} {meta['name']}: {err.status} {err.reason}",
                                  delay=1) from None
    return None


def delete(namespace, child):
    try:
        if child.kind == "Pod":
            kubernetes.client.CoreV1Api().delete_namespaced_pod(child.name, namespace, grace_period_seconds=0)
        else:
            kubernetes.client.CustomObjectsApi().delete_namespaced_custom_object(
                GROUP, VERSION, namespace, api_spec.KINDS[child.kind].plural, child.name)
    except kubernetes.client.ApiException as err:
        if err.status != 404:
            raise kopf.TemporaryError(f"delete {child.kind} {child.name}: {err.status} {err.reason}",
                                      delay=1) from None


def read_log(namespace, pod_name, container):
    """A Task pod's log (its first STDOUT_READ_MAX bytes); "" if it has none any more."""
    try:
        return kubernetes.client.CoreV1Api().read_namespaced_pod_log(
            pod_name, namespace, container=container, limit_bytes=task.STDOUT_READ_MAX)
    except kubernetes.client.ApiException as err:
        if err.status == 404:
            return ""
        raise kopf.TemporaryError(f"read the log of {pod_name}: {err.status} {err.reason}", delay=1) from None


def _api_message(err):
    try:
        return json.loads(err.body).get("message", "")
    except (TypeError, ValueError):
        return ""


# ---- the handlers -------------------------------------------------------------------------

async def workflow_tick(body, meta, status, patch, memo, logger, **indexes):
    """Each tick: step the workflow from what the API holds, make the calls, write what changed."""
    try:
        model = parsed(body, meta, memo)
    except api_spec.InvalidSpec as err:
        message = "; ".join(str(e) for e in err.errors)
        if status.get("phase") != "Failed":
            kopf.warn(body, reason="Invalid", message=message)
            patch.status.update(phase="Failed", message=message,
                                conditions=[condition("Valid", "False", "Invalid", message)])
        # A spec changed into one that can't run: what its nodes made is taken back.
        for child in children_of(meta, memo, indexes):
            if not child.deleting:
                await asyncio.to_thread(delete, meta["namespace"], child)
        return
    children = children_of(meta, memo, indexes)
    moment = now()
    plan = nodes.step(body, model, status, children, moment)
    if plan.logs_needed:
        logs = {}
        for node_name, pod_name in plan.logs_needed:
            template = model.templates[next(n for n in plan.status["nodes"] if n["name"] == node_name)["template"]]
            logs[node_name] = await asyncio.to_thread(read_log, meta["namespace"], pod_name,
                                                      task.container_name(template))
        plan = nodes.step(body, model, status, children, moment, logs)
    new_status = plan.status
    for node_name, document in plan.create:
        problem = await asyncio.to_thread(create, document)
        if problem:
            logger.warning("%s: %s", node_name, problem)
            new_status = nodes.refused(new_status, node_name, problem, moment)
    for child in plan.delete:
        await asyncio.to_thread(delete, meta["namespace"], child)
    for event_type, reason, message in plan.events:
        kopf.event(body, type=event_type, reason=reason, message=message[:1000])
    patch.status.update(changes(status, new_status))


async def on_delete(meta, memo, logger, **indexes):
    """Deleted: delete what its nodes made; kopf's finalizer holds it until they are gone (each
    experiment's own finalizer takes its fault back on its nodes first)."""
    remaining = children_of(meta, memo, indexes)
    for child in remaining:
        if not child.deleting:
            await asyncio.to_thread(delete, meta["namespace"], child)
    if remaining:
        logger.info("waiting for %d object(s) to be taken back", len(remaining))
        raise kopf.TemporaryError(f"waiting for {len(remaining)} object(s) of its nodes to be taken back",
                                  delay=memo.settings.workflow_tick_s)


def register(registry, settings):
    """The index of what Workflows made, per kind; a Workflow's tick every settings.workflow_tick_s."""
    for kind in MADE_KINDS:
        kopf.index(GROUP, VERSION, kind.plural, id=INDEX_OF_KIND[kind.name],
                   labels={api_spec.WORKFLOW_LABEL: kopf.PRESENT}, registry=registry)(index_children)
    kopf.timer(GROUP, VERSION, api_spec.WORKFLOW.plural, interval=settings.workflow_tick_s, id="workflow_tick",
               registry=registry)(workflow_tick)
    kopf.on.delete(GROUP, VERSION, api_spec.WORKFLOW.plural, id="on_delete", registry=registry)(on_delete)
