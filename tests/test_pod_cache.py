"""The controller's pod cache (cluster.PodCache): every pod, summarized, and each node's agent,
as the startup LIST and then the pods watch's events leave them."""
import functools

from kfault_controller import cluster
from kfault_controller.agents import agent_of
from kfault_controller.settings import Settings

AGENT_NAMESPACE = Settings().agent_namespace
AGENT_OF = functools.partial(agent_of, namespace=AGENT_NAMESPACE)     # as the controller's cache is made


def pod(name, namespace="default", node="node-a", labels=None, ip="10.0.0.1", grpc_port=None):
    containers = [{"name": "main", **({"ports": [{"name": "grpc", "containerPort": grpc_port}]} if grpc_port else {})}]
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "labels": labels or {}},
            "spec": {"nodeName": node, "containers": containers},
            "status": {"phase": "Running", **({"podIP": ip} if ip else {})}}


def agent(name, node, ip="10.0.0.9", port=9440):
    return pod(name, AGENT_NAMESPACE, node, {"app.kubernetes.io/name": "kfault-agent"}, ip, port)


def test_pods_are_kept_as_summaries_and_forgotten_when_deleted():
    cache = cluster.PodCache(AGENT_OF)
    cache.put(pod("web-1", labels={"app": "web"}))
    cache.put(pod("web-2"))
    cache.remove(pod("web-2"))
    assert list(cache.pods) == [("default", "web-1")]
    assert cache.pods["default", "web-1"] == cluster.pod_summary(pod("web-1", labels={"app": "web"}))


def test_an_agent_pod_with_an_ip_and_a_grpc_port_is_its_nodes_agent():
    cache = cluster.PodCache(AGENT_OF)
    cache.put(agent("kfault-agent-a", "node-a"))
    cache.put(agent("kfault-agent-b", "node-b", ip=None))                  # not yet started: no IP
    cache.put(pod("look-alike", "default", "node-c", {"app.kubernetes.io/name": "kfault-agent"}, grpc_port=9440))
    assert cache.agents() == {"node-a": "10.0.0.9:9440"}
    cache.put(agent("kfault-agent-b", "node-b", ip="10.0.0.8"))            # started: its node has an agent now
    assert cache.agents() == {"node-a": "10.0.0.9:9440", "node-b": "10.0.0.8:9440"}


def test_an_agent_pod_that_loses_its_ip_or_is_deleted_leaves_its_node_without_agent():
    cache = cluster.PodCache(AGENT_OF)
    cache.put(agent("kfault-agent-a", "node-a"))
    cache.put(agent("kfault-agent-b", "node-b"))
    cache.put(agent("kfault-agent-a", "node-a", ip=None))
    cache.remove(agent("kfault-agent-b", "node-b"))
    assert cache.agents() == {}


def test_a_view_is_a_snapshot_later_events_do_not_change():
    cache = cluster.PodCache(AGENT_OF)
    cache.put(pod("web-1"))
    view = cluster.view_of(cache, {"node-a": [{"zone": "a"}]})
    cache.put(pod("web-2"))
    assert [p["metadata"]["name"] for p in view.pods] == ["web-1"]
    assert view.node_labels == {"node-a": {"zone": "a"}}


def test_a_selector_with_labels_looks_only_at_the_pods_carrying_them():
    cache = cluster.PodCache(AGENT_OF)
    cache.put(pod("web-1", labels={"app": "web", "tier": "front"}))
    cache.put(pod("web-2", labels={"app": "web"}))
    cache.put(pod("db-1", labels={"app": "db"}))
    cache.put(pod("web-2", labels={"app": "db"}))          # relabelled: indexed under its new labels only
    cache.remove(pod("db-1"))
    view = cluster.view_of(cache, {})
    names = lambda selector: sorted(p["metadata"]["name"] for p in view.candidates(selector))  # noqa: E731
    assert names({"labelSelectors": {"app": "web", "tier": "front"}}) == ["web-1"]
    assert names({"labelSelectors": {"app": "db"}}) == ["web-2"]
    assert names({"labelSelectors": {"app": "none"}}) == []
    assert names({"namespaces": ["default"]}) == ["web-1", "web-2"]       # no labels: every pod
    assert cache.by_label == {("app", "web"): {("default", "web-1"): cache.pods["default", "web-1"]},
                              ("tier", "front"): {("default", "web-1"): cache.pods["default", "web-1"]},
                              ("app", "db"): {("default", "web-2"): cache.pods["default", "web-2"]}}
