"""Where a chaos resource becomes calls to agents: select its pods, take out what the controller
resolves itself, group the pods by node, and send each node's agent the spec with its pods and a
lease; later revoke node by node, and renew all of a node's experiments in one call (renewals.py).
What one kind does differently is in PLACEMENT."""
import asyncio
import json
from dataclasses import dataclass

from kfault_api import spec as api_spec
from kfault_api.rpc import agent_pb2 as pb
from kfault_controller import cluster, selection
from kfault_controller.agents import RPC_TIMEOUT_S
from kfault_controller.metrics import AGENT_ERRORS
from kfault_controller.status import now_iso

RESOLVED_HERE = ("selector", "mode", "value", "scheduler")   # the controller's: no agent sees them


@dataclass(frozen=True)
class KindPlacement:
    """What the controller does for one kind beyond select, group by node and call agents."""
    peers_from_target: bool = False       # spec.target's pods join spec.externalTargets as their IPs (and
                                          # spec.target is the controller's: HTTPChaos's is the agent's)
    per_pod_fields: tuple = ()            # resolved for each pod (container names -> IDs), not sent in the spec
    api_actions: frozenset = frozenset()  # done by the controller through the API server, not by an agent


# One row per kind of kfault_api.spec.EXPERIMENTS (tests/test_kinds.py checks none is missing).
PLACEMENT = {
    "NetworkChaos": KindPlacement(peers_from_target=True),
    "IOChaos": KindPlacement(per_pod_fields=("containerNames",)),
    "PodChaos": KindPlacement(api_actions=frozenset({"pod-kill"})),
    "StressChaos": KindPlacement(per_pod_fields=("containerNames",)),
    "SyscallChaos": KindPlacement(per_pod_fields=("containerNames",)),
    "DNSChaos": KindPlacement(),     # the pod's own interface, found by the agent
    "HTTPChaos": KindPlacement(),    # the same
}


@dataclass(frozen=True)
class Placed:
    """What placing one resource did."""
    chosen: list            # the pods selected
    nodes: int              # how many nodes they are on
    records: list           # per pod: {"pod", "node", "injectedAt" | "error"}
    by_api: bool = False    # done through the API server (pod-kill): one-shot
    no_agent: tuple = ()    # nodes holding selected pods whose agent is not (yet) on the watch


def pod_name(pod):
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


def agent_spec(kind, spec, view, scope):
    """The spec an agent gets: the controller's fields taken out, NetworkChaos `target` pods
    (in the namespaces `scope` allows) as peer IPs."""
    rules = PLACEMENT[kind.name]
    resolved_here = RESOLVED_HERE + rules.per_pod_fields + (("target",) if rules.peers_from_target else ())
    body = {k: v for k, v in spec.items() if k not in resolved_here}
    if rules.peers_from_target and spec.get("target"):
        peers = selection.select(spec["target"], view.candidates(spec["target"].get("selector")), scope,
                                 view.node_labels, where="spec.target")
        body["externalTargets"] = list(spec.get("externalTargets", [])) + [
            address for p in peers for address in pod_addresses(p)]
    return body


def pod_addresses(pod):
    """Every address of a pod: both families of a dual-stack pod (status.podIPs), else podIP."""
    status = pod.get("status") or {}
    listed = [entry["ip"] for entry in status.get("podIPs") or [] if entry.get("ip")]
    return listed or ([status["podIP"]] if status.get("podIP") else [])


def pod_target(pod, container_names=()):
    """A pod as an agent's target: its identity and its (named, or all) containers' IDs."""
    ids = [c["containerID"] for c in (pod.get("status") or {}).get("containerStatuses") or []
           if c.get("containerID") and (not container_names or c["name"] in container_names)]
    meta = pod["metadata"]
    return pb.Target(pod=pb.Pod(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"],
                                container_ids=ids))


def by_node(pods):
    """node name (None: not scheduled) -> its pods, nodes in name order."""
    groups = {}
    for pod in pods:
        groups.setdefault(pod["spec"].get("nodeName"), []).append(pod)
    return dict(sorted(groups.items(), key=lambda item: item[0] or ""))


def _record(pod, node, errors, injected_at):
    name = pod_name(pod)
    record = {"pod": name, "node": node or ""}
    if name in errors:
        record["error"] = errors[name]
    else:
        record["injectedAt"] = injected_at
    return record


async def place(agents, kind, resource, spec, scope, view):
    """Select the resource's pods (of `view`, a cluster.ClusterView) in the namespaces `scope`
    (selection.Scope) allows, check what the agents would get, and place it on every node through
    `agents` (agents.AgentDirectory), or do it through the API server. Raises SelectionError
    (NamespaceNotPermitted naming every refused namespace) or InvalidSpec before any call."""
    if "remoteCluster" in spec:
        raise selection.SelectionError(f"spec.remoteCluster: {spec['remoteCluster']!r}: kfault injects only in the "
                                       "cluster it runs in; apply the experiment in that cluster's kfault, "
                                       "without spec.remoteCluster")
    refused = selection.refusals(spec, scope)
    if refused:
        raise selection.NamespaceNotPermitted("; ".join(refused))
    metadata = resource["metadata"]
    chosen = selection.select(spec, view.candidates(spec.get("selector")), scope, view.node_labels)
    body = agent_spec(kind, spec, view, scope)
    # The agents check it too; checking here reports it once, in the status, before any call.
    api_spec.parse_experiment({"apiVersion": api_spec.API_VERSION, "kind": kind.name, "metadata": metadata,
                               "spec": body})
    groups = by_node(chosen)
    if spec.get("action") in PLACEMENT[kind.name].api_actions:
        return Placed(chosen, len(groups), await delete_pods(chosen, spec.get("gracePeriod")), by_api=True)
    key = f"{metadata['namespace']}/{metadata['name']}"
    # Every node at once: the time to place is one node's, not the sum of all of theirs.
    per_node = await asyncio.gather(*(apply_on_node(agents, key, kind, body, node, pods, view.agents.get(node),
                                                    spec.get("containerNames", ())) for node, pods in groups.items()))
    records = [record for records in per_node for record in records]
    return Placed(chosen, len(groups), records, no_agent=tuple(node for node in groups
                                                               if node and node not in view.agents))


async def apply_on_node(agents, key, kind, body, node, pods, address, container_names=()):
    """One node's Apply: a record per pod, injected or with the error its agent (or the network) gave."""
    request = pb.ApplyRequest(experiment=key, kind=kind.name, spec_json=json.dumps(body),
                              targets=[pod_target(p, container_names) for p in pods],
                              lease_seconds=agents.lease_s)
    try:
        response = await agents.call(node, address, "Apply", request)
        errors = {r.target: r.error for r in response.results if not r.ok}
    except Exception as err:  # noqa: BLE001 - an unreachable or refusing node is a per-pod error
        AGENT_ERRORS.labels(node or "none").inc()
        message = err.details() if hasattr(err, "details") else str(err)
        errors = {pod_name(p): message for p in pods}
    injected_at = now_iso()       # once per node's answer: the same second for all its pods
    return [_record(p, node, errors, injected_at) for p in pods]


async def delete_pods(pods, grace_period_s):
    """pod-kill: the API server deletes each pod; a record per pod."""
    records = []
    for pod in pods:
        meta = pod["metadata"]
        record = {"pod": pod_name(pod), "node": pod["spec"].get("nodeName", "")}
        error = await asyncio.to_thread(cluster.delete_pod, meta["namespace"], meta["name"], grace_period_s)
        record.update({"error": error} if error else {"injectedAt": now_iso()})
        records.append(record)
    return records


async def revoke(agents, key, nodes, view):
    """Revoke the experiment on these nodes: {node: error} for those that did not confirm. A node
    that is gone has nothing left to take back."""
    errors = await asyncio.gather(*(call_on(agents, node, view.agents, "Revoke", pb.RevokeRequest(experiment=key))
                                    for node in nodes if node in view.node_labels))
    return {node: error for node, error in errors if error}


async def renew_on_nodes(agents, experiments_by_node, addresses, timeout_s):
    """Renew leases, one call per node for all its experiments (node -> keys): {node: error}
    for those that failed (their leases lapse on their own: fail-safe). addresses: node ->
    host:port of its agent. timeout_s: a node that does not answer by then (the next renewal)
    holds up no other node's next renewal."""
    errors = await asyncio.gather(*(
        call_on(agents, node, addresses, "Renew", pb.RenewRequest(experiments=keys, lease_seconds=agents.lease_s),
                 timeout_s)
        for node, keys in experiments_by_node.items()))
    return {node: error for node, error in errors if error}


async def call_on(agents, node, addresses, method, request, timeout_s=RPC_TIMEOUT_S):
    """(node, None), or (node, why its agent did not answer): one node of a revoke or a renewal.
    addresses: node -> host:port of its agent."""
    try:
        await agents.call(node, addresses.get(node), method, request, timeout_s)
    except Exception as err:  # noqa: BLE001 - a node that failed is the caller's to report or retry
        AGENT_ERRORS.labels(node).inc()
        return node, str(err)
    return node, None
