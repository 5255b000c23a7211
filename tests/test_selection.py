"""Chaos Mesh's pod selection and modes, and what the controller sends agents: pure logic."""
import random

import pytest

from kfault_api.spec import KINDS
from kfault_controller import placement, selection
from kfault_controller.cluster import ClusterView


def pod(name, namespace="default", labels=None, node="n1", phase="Running", annotations=None, ip=None):
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels or {},
                         "annotations": annotations or {}, "uid": f"u-{name}"},
            "spec": {"nodeName": node}, "status": {"phase": phase, "podIP": ip or f"10.0.0.{len(name)}"}}


PODS = [pod("web-1", labels={"app": "web", "tier": "fe"}, node="n1"),
        pod("web-2", labels={"app": "web", "tier": "fe"}, node="n2", annotations={"chaos": "ok"}),
        pod("db-1", labels={"app": "db"}, node="n2", phase="Pending"),
        pod("other", namespace="shop", labels={"app": "web"}, node="n1"),
        pod("coredns", namespace="kube-system", labels={"app": "web"}, node="n1")]


# An experiment in default; shop accepts its experiments, kube-system does not let any in.
SCOPE = selection.Scope("default", {"shop": {selection.ACCEPT_ANNOTATION: "default"}})


def names(pods):
    return sorted(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods)


@pytest.mark.parametrize("selector, expected", [
    ({"namespaces": ["default"]}, ["default/db-1", "default/web-1", "default/web-2"]),
    ({"labelSelectors": {"app": "web"}}, ["default/web-1", "default/web-2"]),
    ({"labelSelectors": {"app": "web"}, "namespaces": ["default", "shop"]},
     ["default/web-1", "default/web-2", "shop/other"]),
    ({"expressionSelectors": [{"key": "app", "operator": "In", "values": ["db"]}]}, ["default/db-1"]),
    ({"expressionSelectors": [{"key": "tier", "operator": "DoesNotExist"}], "namespaces": ["default"]},
     ["default/db-1"]),
    ({"annotationSelectors": {"chaos": "ok"}}, ["default/web-2"]),
    ({"fieldSelectors": {"spec.nodeName": "n2"}}, ["default/db-1", "default/web-2"]),
    ({"podPhaseSelectors": ["Pending"]}, ["default/db-1"]),
    ({"nodes": ["n1"]}, ["default/web-1"]),
    ({"nodeSelectors": {"zone": "b"}}, ["default/db-1", "default/web-2"]),
    ({"pods": {"default": ["web-2"], "shop": ["other"]}}, ["default/web-2", "shop/other"]),
])
def test_selectors(selector, expected):
    chosen = selection.select({"mode": "all", "selector": selector}, PODS, SCOPE,
                              {"n1": {"zone": "a"}, "n2": {"zone": "b"}})
    assert names(chosen) == expected


def test_protected_namespaces_need_an_annotation():
    spec = {"mode": "all", "selector": {"namespaces": ["kube-system"]}}
    # Not even from inside, nor with the cluster-wide switch: the annotation is the only way in.
    for scope in (SCOPE, selection.Scope("kube-system"), selection.Scope("default", cross_namespace=True)):
        with pytest.raises(selection.NamespaceNotPermitted,
                           match=f"kube-system is protected.*{selection.ALLOW_ANNOTATION}"):
            selection.select(spec, PODS, scope)
    allowed = selection.Scope("default", {"kube-system": {selection.ALLOW_ANNOTATION: "true"}}, cross_namespace=True)
    assert names(selection.select(spec, PODS, allowed)) == ["kube-system/coredns"]


TEAMS = [pod("web-a", namespace="team-a", labels={"app": "web"}),
         pod("web-b", namespace="team-b", labels={"app": "web"})]
WEB = {"labelSelectors": {"app": "web"}}


def test_a_selector_without_namespaces_means_the_experiments_own():
    spec = {"mode": "all", "selector": WEB}
    assert names(selection.select(spec, TEAMS, selection.Scope("team-a"))) == ["team-a/web-a"]
    assert names(selection.select(spec, TEAMS, selection.Scope("team-b"))) == ["team-b/web-b"]


def test_another_namespace_is_refused_without_its_consent_and_says_how_to_give_it():
    spec = {"mode": "all", "selector": {**WEB, "namespaces": ["team-a", "team-b"]}}
    with pytest.raises(selection.NamespaceNotPermitted) as refused:
        selection.select(spec, TEAMS, selection.Scope("team-a"))
    message = str(refused.value)
    assert message.startswith("spec.selector: team-b has not accepted experiments from team-a")
    assert f"{selection.ACCEPT_ANNOTATION}=team-a" in message and "--allow-cross-namespace" in message
    # Naming a pod in team-b reaches team-b just the same.
    with pytest.raises(selection.NamespaceNotPermitted, match="team-b"):
        selection.select({"mode": "all", "selector": {"pods": {"team-b": ["web-b"]}}}, TEAMS, selection.Scope("team-a"))


@pytest.mark.parametrize("accept_from, allowed", [
    ("team-a", True), ("team-x, team-a", True), ("*", True),
    ("team-x", False), ("", False), ("team-ab", False),
])
def test_consent_names_the_experiments_namespace_or_everyone(accept_from, allowed):
    spec = {"mode": "all", "selector": {**WEB, "namespaces": ["team-b"]}}
    scope = selection.Scope("team-a", {"team-b": {selection.ACCEPT_ANNOTATION: accept_from}})
    assert selection.refusals(spec, scope) == ([] if allowed else [
        f"spec.selector: {selection.refusal('team-b', scope)}"])
    if allowed:
        assert names(selection.select(spec, TEAMS, scope)) == ["team-b/web-b"]


def test_the_cluster_wide_switch_needs_no_consent():
    spec = {"mode": "all", "selector": {**WEB, "namespaces": ["team-a", "team-b"]}}
    scope = selection.Scope("team-a", cross_namespace=True)
    assert names(selection.select(spec, TEAMS, scope)) == ["team-a/web-a", "team-b/web-b"]


def test_a_network_target_follows_the_same_rules():
    spec = {"action": "partition", "mode": "all", "selector": WEB,
            "target": {"mode": "all", "selector": {**WEB, "namespaces": ["team-b"]}}}
    scope = selection.Scope("team-a")
    assert [m.split(":")[0] for m in selection.refusals(spec, scope)] == ["spec.target.selector"]
    with pytest.raises(selection.NamespaceNotPermitted, match="^spec.target.selector: team-b"):
        placement.agent_spec(KINDS["NetworkChaos"], spec, ClusterView(TEAMS, {}, {}), scope)
    # Without namespaces, a target means the experiment's namespace too.
    home = {**spec, "target": {"mode": "all", "selector": WEB}}
    assert placement.agent_spec(KINDS["NetworkChaos"], home, ClusterView(TEAMS, {}, {}), scope) == \
        {"action": "partition", "externalTargets": ["10.0.0.5"]}


@pytest.mark.parametrize("mode, value, count", [
    ("one", None, 1), ("all", None, 3), ("fixed", "2", 2), ("fixed", "9", 3),
    ("fixed-percent", "50", 1), ("fixed-percent", "100", 3),
])
def test_modes(mode, value, count):
    spec = {"mode": mode, "value": value,
            "selector": {"labelSelectors": {"app": "web"}, "namespaces": ["default", "shop"]}}
    assert len(selection.select(spec, PODS, SCOPE, rng=random.Random(7))) == count


def test_random_max_percent_never_exceeds_it():
    spec = {"mode": "random-max-percent", "value": "67",
            "selector": {"labelSelectors": {"app": "web"}, "namespaces": ["default", "shop"]}}
    counts = {len(selection.select(spec, PODS, SCOPE, rng=random.Random(seed))) for seed in range(50)}
    assert counts <= {0, 1, 2} and len(counts) > 1


@pytest.mark.parametrize("spec, words", [
    ({"mode": "fixed", "value": "many"}, "spec.value"),
    ({"mode": "fixed-percent", "value": "150"}, "out of range"),
    ({"mode": "all", "selector": {"fieldSelectors": {"spec.schedulerName": "x"}}}, "fieldSelectors"),
])
def test_bad_selection_says_which_field(spec, words):
    with pytest.raises(selection.SelectionError, match=words):
        selection.select(spec, PODS, SCOPE)


def test_network_target_pods_become_peer_addresses():
    spec = {"action": "partition", "mode": "all", "selector": {"labelSelectors": {"app": "web"}},
            "externalTargets": ["192.0.2.1"],
            "target": {"mode": "all", "selector": {"labelSelectors": {"app": "db"}}}}
    body = placement.agent_spec(KINDS["NetworkChaos"], spec, ClusterView(PODS, {}, {}), SCOPE)
    assert body == {"action": "partition", "externalTargets": ["192.0.2.1", "10.0.0.4"]}


def test_dual_stack_target_pods_become_both_their_addresses():
    spec = {"action": "partition", "mode": "all",
            "target": {"mode": "all", "selector": {"labelSelectors": {"app": "db"}}}}
    pods = [dict(p, status={**p.get("status", {}), "podIPs": [{"ip": p["status"]["podIP"]}, {"ip": "fd00::4"}]})
            if (p.get("status") or {}).get("podIP") == "10.0.0.4" else p for p in PODS]
    body = placement.agent_spec(KINDS["NetworkChaos"], spec, ClusterView(pods, {}, {}), SCOPE)
    assert body["externalTargets"] == ["10.0.0.4", "fd00::4"]


def test_http_target_is_the_agents_not_a_pod_selector():
    """HTTPChaos's spec.target is Request or Response, which the agent acts on: it is sent, and
    no namespace check reads it as a selector."""
    spec = {"target": "Request", "port": 80, "abort": True, "mode": "all",
            "selector": {"labelSelectors": {"app": "web"}}}
    body = placement.agent_spec(KINDS["HTTPChaos"], spec, ClusterView(PODS, {}, {}), SCOPE)
    assert body == {"target": "Request", "port": 80, "abort": True}
    assert selection.refusals(spec, SCOPE) == []


def test_io_container_names_become_container_ids_per_pod_not_spec():
    spec = {"action": "fault", "errno": 5, "volumePath": "/data", "containerNames": ["main"], "mode": "all",
            "selector": {"labelSelectors": {"app": "web"}}}
    body = placement.agent_spec(KINDS["IOChaos"], spec, ClusterView(PODS, {}, {}), SCOPE)
    assert body == {"action": "fault", "errno": 5, "volumePath": "/data"}
    web = dict(PODS[0], status={"containerStatuses": [{"name": "main", "containerID": "containerd://a"},
                                                      {"name": "sidecar", "containerID": "containerd://b"}]})
    assert list(placement.pod_target(web, spec["containerNames"]).pod.container_ids) == ["containerd://a"]
