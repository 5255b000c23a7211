"""What the controller knows of the cluster (pods, nodes, agents) and the one thing it does to
it. Pods are listed once, at start (list_pods), then kept current by the pods watch's events in
a PodCache; nodes and namespaces are kopf indexes (handlers.py). A ClusterView is a snapshot of
both for one reconcile or timer tick. The pure functions here say what is kept of each object:
little, so 5,000 pods cost a few megabytes, not their whole bodies."""
import json
from dataclasses import dataclass

import kubernetes

# kubectl's copy of the whole manifest: the largest annotation a pod has, and no selector's business.
UNKEPT_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


@dataclass(frozen=True)
class ClusterView:
    pods: list                  # every pod, as pod_summary keeps it
    agents: dict                # node name -> host:port of its kfault agent
    node_labels: dict           # node name -> labels
    by_label: dict = None       # (label, value) -> {pod key: summary}, PodCache's; None: look at every pod
    encoded: dict = None        # pod key -> (summary, its Target as encoded in a request), PodCache's; None: none kept

    def candidates(self, selector):
        """The pods a selector may pick, for selection.select to match: those carrying the
        rarest of its labelSelectors' pairs, or every pod. Matching all 20,000 pods of a
        cluster took 19 ms of the event loop per experiment, its index a fraction of that.
        The index is the cache's as it is at this call, not a snapshot (copying it per view
        would cost what it saves): a pod the watch added since the view was taken may be
        selected, as it would be a moment later."""
        wanted = (selector or {}).get("labelSelectors") or {}
        if self.by_label is None or not wanted:
            return self.pods
        return list(min((self.by_label.get(pair, {}) for pair in wanted.items()), key=len).values())


def pod_summary(body):
    """What selection and placement read of a pod, in the API's shape (so the same code reads
    a summary or a whole pod): identity, labels, annotations, node, phase, IPs, containers' IDs."""
    meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    summary = {
        "metadata": {"namespace": meta["namespace"], "name": meta["name"], "uid": meta.get("uid", ""),
                     "labels": dict(meta.get("labels") or {}),
                     "annotations": {k: v for k, v in (meta.get("annotations") or {}).items()
                                     if k not in UNKEPT_ANNOTATIONS}},
        "spec": {"nodeName": spec["nodeName"]} if spec.get("nodeName") else {},
        "status": {k: status[k] for k in ("phase", "podIP", "podIPs") if k in status},
    }
    summary["status"]["containerStatuses"] = [{"name": c.get("name"), "containerID": c.get("containerID")}
                                              for c in status.get("containerStatuses") or []]
    return summary


class PodCache:
    """Every pod (as pod_summary keeps it) and where each node's agent is, by pod. Not a kopf
    index: kopf makes a readiness toggle per object of an indexed kind and wakes every waiting
    object at each one, quadratic in pods at start (415 s for 5,000 pods)."""

    def __init__(self, agent_of):
        self.agent_of = agent_of        # pod body -> host:port if it is a ready kfault agent, else None
        self.pods = {}                  # (namespace, name) -> summary
        self.agent_pods = {}            # (namespace, name) -> (node, host:port)
        self.by_label = {}              # (label, value) -> {(namespace, name): summary}: ClusterView.candidates
        # (namespace, name) -> (summary, its Target encoded): placement.encoded_targets fills it, once
        # per pod and not per experiment (making 1,000 Targets for each experiment was a fifth of its time).
        self.encoded = {}

    def clear(self):
        self.pods.clear()
        self.agent_pods.clear()
        self.by_label.clear()
        self.encoded.clear()

    def put(self, body):
        """A pod as it is now (added or changed)."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        self._unindex(key)
        summary = self.pods[key] = pod_summary(body)
        for pair in summary["metadata"]["labels"].items():
            self.by_label.setdefault(pair, {})[key] = summary
        node, address = (body.get("spec") or {}).get("nodeName"), self.agent_of(body)
        if node and address:
            self.agent_pods[key] = (node, address)
        else:
            self.agent_pods.pop(key, None)

    def remove(self, body):
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        self._unindex(key)
        self.pods.pop(key, None)
        self.agent_pods.pop(key, None)
        self.encoded.pop(key, None)

    def _unindex(self, key):
        """Take the pod's labels as last put out of by_label."""
        old = self.pods.get(key)
        for pair in (old["metadata"]["labels"].items() if old else ()):
            holders = self.by_label.get(pair, {})
            holders.pop(key, None)
            if not holders:
                self.by_label.pop(pair, None)

    def agents(self):
        """node name -> host:port of its agent (the newest pod's, while a rollout runs two)."""
        return dict(self.agent_pods.values())


def view_of(pods, node_labels):
    """A snapshot of the pod cache and the node index (kopf's: key -> a store of values)."""
    return ClusterView(pods=list(pods.pods.values()), agents=pods.agents(),
                       node_labels={node: next(iter(store)) for node, store in node_labels.items() if store},
                       by_label=pods.by_label, encoded=pods.encoded)


def list_pods(page_size=500):
    """Every pod of the cluster, in pages (one LIST at start, before the watch begins). Blocking:
    run it in a thread. The raw JSON: the client's models cost seconds for 5,000 pods."""
    api, pods, token = kubernetes.client.CoreV1Api(), [], None
    while True:
        response = api.list_pod_for_all_namespaces(limit=page_size, _continue=token, _preload_content=False)
        page = json.loads(response.data)
        pods.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return pods


def delete_pod(namespace, name, grace_period_s):
    """The API server deletes the pod (its owner brings it back): None, or why it refused.
    Blocking: run it in a thread."""
    try:
        kubernetes.client.CoreV1Api().delete_namespaced_pod(name, namespace, grace_period_seconds=grace_period_s,
                                                            _preload_content=False)
    except kubernetes.client.ApiException as err:
        return f"delete pod: {err.reason}"
    return None
