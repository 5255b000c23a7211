"""What the controller reads from (and the one thing it does to) the cluster, as plain dicts
straight from the API server's JSON (no client models)."""
import json
from dataclasses import dataclass

import kubernetes

from kfault_controller.agents import AGENT_LABEL, AGENT_NAMESPACE


@dataclass(frozen=True)
class ClusterView:
    pods: list                  # every pod
    agent_pods: list            # kfault's agents
    node_labels: dict           # node name -> labels


def _items(call, *args, **kwargs):
    response = call(*args, _preload_content=False, **kwargs)
    return json.loads(response.data)["items"]


def read_cluster():
    """Pods, agent pods and node labels (blocking: run it in a thread). Namespaces' annotations
    come from the controller's watch (handlers.namespace_annotations), not from here."""
    api = kubernetes.client.CoreV1Api()
    return ClusterView(
        pods=_items(api.list_pod_for_all_namespaces),
        agent_pods=_items(api.list_namespaced_pod, AGENT_NAMESPACE, label_selector=AGENT_LABEL),
        node_labels={n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in _items(api.list_node)})


def delete_pod(namespace, name, grace_period_s):
    """The API server deletes the pod (its owner brings it back): None, or why it refused.
    Blocking: run it in a thread."""
    try:
        kubernetes.client.CoreV1Api().delete_namespaced_pod(name, namespace, grace_period_seconds=grace_period_s,
                                                            _preload_content=False)
    except kubernetes.client.ApiException as err:
        return f"delete pod: {err.reason}"
    return None
