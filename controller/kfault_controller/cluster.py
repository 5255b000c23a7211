"""What the controller knows of the cluster (pods, nodes, agents) and the one thing it does to
it. It never lists: kopf's watches keep three indexes current (handlers.py), and a ClusterView
is a snapshot of them for one reconcile or timer tick. The pure functions here say what an index
keeps of each object: little, so 5,000 pods cost a few megabytes, not their whole bodies."""
from dataclasses import dataclass

import kubernetes

# kubectl's copy of the whole manifest: the largest annotation a pod has, and no selector's business.
UNKEPT_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


@dataclass(frozen=True)
class ClusterView:
    pods: list                  # every pod, as pod_summary keeps it
    agents: dict                # node name -> host:port of its kfault agent
    node_labels: dict           # node name -> labels


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


def view_of(pods_by_namespace, node_labels, agents):
    """A snapshot of the indexes (kopf's: key -> a store of values) as one ClusterView."""
    return ClusterView(pods=[pod for store in pods_by_namespace.values() for pod in store],
                       agents={node: next(iter(store)) for node, store in agents.items() if store},
                       node_labels={node: next(iter(store)) for node, store in node_labels.items() if store})


def delete_pod(namespace, name, grace_period_s):
    """The API server deletes the pod (its owner brings it back): None, or why it refused.
    Blocking: run it in a thread."""
    try:
        kubernetes.client.CoreV1Api().delete_namespaced_pod(name, namespace, grace_period_seconds=grace_period_s,
                                                            _preload_content=False)
    except kubernetes.client.ApiException as err:
        return f"delete pod: {err.reason}"
    return None
