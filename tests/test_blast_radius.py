"""The blast radius against kmock's emulator, with real agent servers: an experiment in team-a
never touches team-b's pods (as selected pods or as a NetworkChaos target's peers) unless team-b
consents through its annotation, arriving on the controller's watch of namespaces, or the
administrator allowed it cluster-wide."""
import asyncio

import pytest

from kfault_controller.selection import ACCEPT_ANNOTATION
from tests.kube import annotate_namespace, wait_for
from tests.test_controller import CHAOS, controller, pod, populate

pytestmark = pytest.mark.usefixtures("kubeconfig")
WEB = {"labelSelectors": {"app": "web"}}
IP = {"web-a": "10.2.0.1", "web-b": "10.2.0.2"}


def populate_teams(kmock, nodes):
    """The shared cluster, plus team-a and team-b each with a web pod on node-a (default has one too)."""
    populate(kmock, nodes)
    for team, name in (("team-a", "web-a"), ("team-b", "web-b")):
        kmock.objects["v1/namespaces", None, team] = {"metadata": {"name": team, "resourceVersion": "1"}}
        web = pod(name, "node-a", {"app": "web"}, team)
        web["status"]["podIP"] = IP[name]
        kmock.objects["v1/pods", team, name] = web


def chaos(name, namespace="team-a", **spec):
    return {"apiVersion": "kfault.dev/v1alpha1", "kind": "NetworkChaos",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "resourceVersion": "1"},
            "spec": {k: v for k, v in {"action": "loss", "loss": {"loss": "30"}, "mode": "all", "selector": WEB,
                                       **spec}.items() if v is not None}}


def status_of(kmock, name, namespace="team-a"):
    return kmock.objects[CHAOS, namespace, name].get("status", {})


def selected(kmock, name):
    return next(c for c in status_of(kmock, name)["conditions"] if c["type"] == "Selected")


def targets(node):
    """The pods placed on the node (each once, however often it was applied)."""
    return sorted(set(node.targets()))


def peers_sent(node):
    """The externalTargets each placement on the node was sent."""
    return {p.target.name: sorted(p.experiment.raw["spec"].get("externalTargets", []))
            for p in node.engine.placed.values()}


@pytest.mark.asyncio
async def test_without_namespaces_an_experiment_selects_only_its_own_namespace(kmock, nodes):
    populate_teams(kmock, nodes)
    kmock.objects[CHAOS, "team-a", "cut"] = chaos("cut")
    async with controller():
        await wait_for(lambda: status_of(kmock, "cut").get("phase") == "Running")
        assert targets(nodes["node-a"]) == ["team-a/web-a"], "team-b's and default's web pods match the labels too"
        assert [r["pod"] for r in status_of(kmock, "cut")["records"]] == ["team-a/web-a"]


@pytest.mark.asyncio
async def test_another_namespace_is_refused_until_it_consents_on_the_watch(kmock, nodes):
    populate_teams(kmock, nodes)
    kmock.objects[CHAOS, "team-a", "wide"] = chaos("wide", selector={**WEB, "namespaces": ["team-a", "team-b"]})
    async with controller():
        await wait_for(lambda: status_of(kmock, "wide").get("phase") == "Failed")
        condition = selected(kmock, "wide")
        assert (condition["status"], condition["reason"]) == ("False", "NamespaceNotPermitted")
        assert "team-b has not accepted experiments from team-a" in condition["message"]
        assert f"{ACCEPT_ANNOTATION}=team-a" in condition["message"]
        assert nodes["node-a"].engine.history == [], "refused as a whole: nothing placed, in team-b or team-a"

        # Consent for someone else is no consent.
        await annotate_namespace(kmock, "team-b", {ACCEPT_ANNOTATION: "team-c"})
        await asyncio.sleep(2)       # four keep-alive ticks
        assert nodes["node-a"].engine.history == []

        # team-b accepts team-a: the controller hears it on its watch and places the experiment.
        await annotate_namespace(kmock, "team-b", {ACCEPT_ANNOTATION: "team-c, team-a"})
        await wait_for(lambda: status_of(kmock, "wide").get("phase") == "Running")
        assert targets(nodes["node-a"]) == ["team-a/web-a", "team-b/web-b"]
        assert selected(kmock, "wide")["status"] == "True"
    # The annotation came from the watch: the controller never read a namespace by name.
    namespace_requests = [(str(r.method), r.name) for r in kmock if r.resource and r.resource.plural == "namespaces"]
    assert {name for method, name in namespace_requests if name} == {"team-b"}
    assert all(method.upper().endswith("PATCH") for method, name in namespace_requests if name), namespace_requests


@pytest.mark.asyncio
async def test_a_target_in_a_namespace_without_consent_is_not_a_peer(kmock, nodes):
    populate_teams(kmock, nodes)
    kmock.objects[CHAOS, "team-a", "split"] = chaos(
        "split", action="partition", loss=None, target={"mode": "all", "selector": {**WEB, "namespaces": ["team-b"]}})
    async with controller():
        await wait_for(lambda: status_of(kmock, "split").get("phase") == "Failed")
        condition = selected(kmock, "split")
        assert condition["reason"] == "NamespaceNotPermitted"
        assert condition["message"].startswith("spec.target.selector: team-b has not accepted")
        # Not placed with team-b's pod left out: a partition without peers would cut every peer.
        assert nodes["node-a"].engine.history == []

        await annotate_namespace(kmock, "team-b", {ACCEPT_ANNOTATION: "*"})
        await wait_for(lambda: status_of(kmock, "split").get("phase") == "Running")
        assert peers_sent(nodes["node-a"]) == {"team-a/web-a": [IP["web-b"]]}


@pytest.mark.asyncio
async def test_a_target_without_namespaces_means_the_experiments_own(kmock, nodes):
    populate_teams(kmock, nodes)
    kmock.objects[CHAOS, "team-b", "split"] = chaos(
        "split", namespace="team-b", action="partition", loss=None, target={"mode": "all", "selector": WEB})
    async with controller():
        await wait_for(lambda: status_of(kmock, "split", "team-b").get("phase") == "Running")
        # web-b's only peer is itself: team-a's and default's web pods are no peers of team-b's experiment.
        assert peers_sent(nodes["node-a"]) == {"team-b/web-b": [IP["web-b"]]}


@pytest.mark.asyncio
async def test_the_cluster_wide_switch_lets_it_through_but_not_into_kube_system(kmock, nodes):
    populate_teams(kmock, nodes)
    kmock.objects[CHAOS, "team-a", "wide"] = chaos("wide", selector={**WEB, "namespaces": ["team-a", "team-b"]})
    kmock.objects[CHAOS, "team-a", "system"] = chaos("system", selector={**WEB, "namespaces": ["kube-system"]})
    async with controller(allow_cross_namespace=True):
        await wait_for(lambda: status_of(kmock, "wide").get("phase") == "Running")
        await wait_for(lambda: status_of(kmock, "system").get("phase") == "Failed")
        assert "kube-system is protected" in selected(kmock, "system")["message"]
        assert targets(nodes["node-a"]) == ["team-a/web-a", "team-b/web-b"]
