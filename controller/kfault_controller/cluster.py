"""What the controller reads from (and the one thing it does to) the cluster, as plain dicts
straight from the API server's JSON (no client models)."""
import json
from dataclasses import dataclass

import kubernetes

from kfault_controller import selection
from kfault_controller.agents import AGENT_LABEL, AGENT_NAMESPACE


@dataclass(frozen=True)
class ClusterView:
    pods: list                  # every pod
    agent_pods: list            # kfault's agents
    node_labels: dict           # node name -> labels
    namespace_annotations: dict  # protected namespace -> annotations


def _items(call, *args, **kwargs):
    response = call(*args, _preload_content=False, **kwargs)
    return json.loads(response.data)["items"]


def _protected_namespace_annotations(api):
    """Only protected namespaces' annotations matter (they may allow experiments in)."""
    annotations = {}
    for name in selection.PROTECTED_NAMESPACES:
        try:
            namespace = json.loads(api.read_namespace(name, _preload_content=False).data)
        except kubernetes.client.ApiException as err:
            if err.status != 404:
                raise
            continue
        annotations[name] = namespace["metadata"].get("annotations") or {}
    return annotations


def read_cluster():
    """Pods, agent pods, node labels and protected namespaces' annotations (blocking: run it in a thread)."""
    api = kubernetes.client.CoreV1Api()
    return ClusterView(
        pods=_items(api.list_pod_for_all_namespaces),
        agent_pods=_items(api.list_namespaced_pod, AGENT_NAMESPACE, label_selector=AGENT_LABEL),
        node_labels={n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in _items(api.list_node)},
        namespace_annotations=_protected_namespace_annotations(api))


def delete_pod(namespace, name, grace_period_s):
    """The API server deletes the pod (its owner brings it back): None, or why it refused.
    Blocking: run it in a thread."""
    try:
        kubernetes.client.CoreV1Api().delete_namespaced_pod(name, namespace, grace_period_seconds=grace_period_s,
                                                            _preload_content=False)
    except kubernetes.client.ApiException as err:
        return f"delete pod: {err.reason}"
    return None
