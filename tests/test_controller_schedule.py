"""Chaos Mesh 2.x's Schedule against kmock's emulator, with real agent servers whose engines
record: a Schedule creates experiments it owns, which reach the agents; history keeps
historyLimit of them; Forbid holds a run back while one still runs; a Schedule in team-a never
touches team-b unless team-b consents."""
import asyncio
import datetime
import itertools

import pytest

from kfault_api import spec as api_spec
from kfault_controller import status as report
from kfault_controller.selection import ACCEPT_ANNOTATION
from kfault_controller.windows import PAUSE_ANNOTATION
from tests.kube import annotate_namespace, wait_for
from tests.test_blast_radius import populate_teams
from tests.test_controller import CHAOS, NS, controller, populate

pytestmark = pytest.mark.usefixtures("kubeconfig", "server_set_fields")
SCHEDULES = "kfault.dev/v1alpha1/schedules"
WEB = {"labelSelectors": {"app": "web"}}


@pytest.fixture
def server_set_fields(kmock, mocker):
    """kmock 0.8 stores a created object as sent; an API server gives it a uid, a resourceVersion
    and a creationTimestamp (kopf's patches test the resourceVersion), as here."""
    handle = type(kmock)._handle
    made = itertools.count(1)

    async def create_as_an_api_server(self, request):
        if request.resource is not None and request.action == kmock.action.CREATE and isinstance(request.data, dict):
            number = next(made)
            request.data.setdefault("metadata", {}).update(
                uid=f"uid-created-{number}", resourceVersion=str(number), creationTimestamp=report.now_iso())
        return await handle(self, request)
    mocker.patch.object(type(kmock), "_handle", create_as_an_api_server)


def schedule(name, namespace=NS, every="2s", history=2, policy="Allow", **experiment):
    """A Schedule of a NetworkChaos on web pods; created now (@every counts from creation)."""
    return {"apiVersion": api_spec.API_VERSION, "kind": "Schedule",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "resourceVersion": "1",
                         "creationTimestamp": report.now_iso()},
            "spec": {"schedule": f"@every {every}", "type": "NetworkChaos", "historyLimit": history,
                     "concurrencyPolicy": policy,
                     "networkChaos": {"action": "loss", "loss": {"loss": "30"}, "mode": "all", "selector": WEB,
                                      "duration": "1s", **experiment}}}


def children(kmock, name, namespace=NS):
    """The NetworkChaos resources the Schedule made that exist now, by name."""
    return {key[2]: kmock.objects[key] for key in list(kmock.objects)
            if key[0] == CHAOS and key[1] == namespace and not kmock.objects[key].deleted
            and (kmock.objects[key]["metadata"].get("labels") or {}).get("managed-by") == name}


def created(kmock, namespace=NS):
    """Every NetworkChaos ever created in the namespace (deleted ones too)."""
    return {key[2] for key in list(kmock.objects) if key[0] == CHAOS and key[1] == namespace}


def schedule_status(kmock, name, namespace=NS):
    return kmock.objects[SCHEDULES, namespace, name].get("status", {})


@pytest.mark.asyncio
async def test_a_schedule_creates_owned_experiments_that_reach_the_agent_and_prunes_them(kmock, nodes):
    populate(kmock, nodes)
    kmock.objects[SCHEDULES, NS, "flaky"] = schedule("flaky", history=2)
    async with controller():
        # No run at creation: the first comes one period later (its name says when it was
        # scheduled), as a NetworkChaos the agent places.
        await wait_for(lambda: nodes["node-a"].targets(), timeout=8)
        first = next(iter(children(kmock, "flaky").values()))
        meta = first["metadata"]
        since = report.parse_time(kmock.objects[SCHEDULES, NS, "flaky"]["metadata"]["creationTimestamp"])
        assert int(meta["name"].rsplit("-", 1)[1]) >= since.timestamp() + 2, (meta["name"], since)
        assert meta["name"].startswith("flaky-") and meta["labels"] == {"managed-by": "flaky"}
        assert meta["ownerReferences"] == [{"apiVersion": "kfault.dev/v1alpha1", "kind": "Schedule", "name": "flaky",
                                            "uid": "uid-flaky", "controller": True, "blockOwnerDeletion": True}]
        assert first["spec"]["loss"] == {"loss": "30"} and "schedule" not in first["spec"]
        assert set(nodes["node-a"].targets()) == {"default/web-1"}
        await wait_for(lambda: schedule_status(kmock, "flaky").get("time"))

        # Runs go on every 2 s, each a new experiment that reaches the agent; history keeps 2.
        await wait_for(lambda: len(created(kmock)) >= 5, timeout=15)
        await wait_for(lambda: len(children(kmock, "flaky")) <= 2 + 1)   # + the one running now
        applied = [k for (op, k, _) in nodes["node-a"].engine.history if op == "apply"]
        assert len(set(applied)) >= 4, applied
        kept = children(kmock, "flaky")
        finished = [n for n, c in kept.items() if c.get("status", {}).get("phase") == "Finished"]
        assert len(finished) <= 2, kept.keys()
        # The oldest went first: what is kept is the newest.
        assert sorted(kept) == sorted(created(kmock))[-len(kept):]
        # Chaos Mesh's status: the experiments that exist, by reference.
        await wait_for(lambda: {a["name"] for a in schedule_status(kmock, "flaky").get("active", [])}
                       == set(children(kmock, "flaky")))


@pytest.mark.asyncio
async def test_forbid_holds_runs_back_while_one_still_runs(kmock, nodes):
    populate(kmock, nodes)
    # Each run lasts 3 s, one is due every 1 s: Forbid lets only one run at a time.
    kmock.objects[SCHEDULES, NS, "one-at-a-time"] = schedule("one-at-a-time", every="1s", history=5,
                                                             policy="Forbid", duration="3s")
    async with controller():
        await wait_for(lambda: created(kmock), timeout=8)
        await asyncio.sleep(2.5)
        assert len(created(kmock)) == 1, "a run was created while the first still ran"
        await wait_for(lambda: len(created(kmock)) == 2, timeout=10)
        first = sorted(created(kmock))[0]
        assert kmock.objects[CHAOS, NS, first]["status"]["phase"] == "Finished"


@pytest.mark.asyncio
async def test_allow_runs_while_one_still_runs(kmock, nodes):
    populate(kmock, nodes)
    kmock.objects[SCHEDULES, NS, "overlap"] = schedule("overlap", every="1s", history=5, policy="Allow",
                                                       duration="30s")
    async with controller():
        await wait_for(lambda: len(created(kmock)) >= 3, timeout=10)
        running = [c for c in children(kmock, "overlap").values() if c.get("status", {}).get("phase") == "Running"]
        assert len(running) >= 2


@pytest.mark.asyncio
async def test_a_bad_schedule_is_reported_and_creates_nothing(kmock, nodes):
    populate(kmock, nodes)
    bad = schedule("bad")
    bad["spec"]["schedule"] = "61 * * * *"
    kmock.objects[SCHEDULES, NS, "bad"] = bad
    mismatched = schedule("mismatched")
    mismatched["spec"]["type"] = "IOChaos"
    kmock.objects[SCHEDULES, NS, "mismatched"] = mismatched
    async with controller():
        await wait_for(lambda: schedule_status(kmock, "bad").get("conditions"))
        await wait_for(lambda: schedule_status(kmock, "mismatched").get("conditions"))
        await asyncio.sleep(3)
    condition = schedule_status(kmock, "bad")["conditions"][0]
    assert (condition["type"], condition["status"]) == ("Valid", "False")
    assert condition["message"].startswith("spec.schedule: '61 * * * *': the minute field")
    message = schedule_status(kmock, "mismatched")["conditions"][0]["message"]
    assert "spec.networkChaos" in message and "type IOChaos" in message and "spec.ioChaos" in message
    assert created(kmock) == set() and nodes["node-a"].engine.history == []


@pytest.mark.asyncio
async def test_a_schedule_in_team_a_never_touches_team_b_unless_team_b_consents(kmock, nodes):
    populate_teams(kmock, nodes)
    # Without namespaces: team-a's own pods only, though team-b's and default's match the labels.
    kmock.objects[SCHEDULES, "team-a", "home"] = schedule("home", "team-a", every="1s")
    # Naming team-b: its runs are refused until team-b consents.
    kmock.objects[SCHEDULES, "team-a", "reach"] = schedule(
        "reach", "team-a", every="1s", selector={**WEB, "namespaces": ["team-b"]})
    async with controller():
        await wait_for(lambda: len(children(kmock, "home", "team-a")) >= 1 and children(kmock, "reach", "team-a"),
                       timeout=8)
        await wait_for(lambda: any(c.get("status", {}).get("phase") == "Failed"
                                   for c in children(kmock, "reach", "team-a").values()))
        await asyncio.sleep(2)
        assert set(nodes["node-a"].targets()) == {"team-a/web-a"}, "only team-a's pod, from the home schedule"
        refused = next(c for c in children(kmock, "reach", "team-a").values()
                       if c.get("status", {}).get("phase") == "Failed")
        selected = next(c for c in refused["status"]["conditions"] if c["type"] == "Selected")
        assert selected["reason"] == "NamespaceNotPermitted" and "team-b has not accepted" in selected["message"]
        assert created(kmock, "team-b") == set(), "a Schedule's experiments live in its own namespace"

        await annotate_namespace(kmock, "team-b", {ACCEPT_ANNOTATION: "team-a"})
        await wait_for(lambda: "team-b/web-b" in nodes["node-a"].targets(), timeout=8)
        assert set(nodes["node-a"].targets()) == {"team-a/web-a", "team-b/web-b"}


@pytest.mark.asyncio
async def test_between_runs_a_schedule_costs_no_requests(kmock, nodes):
    populate(kmock, nodes)
    kmock.objects[SCHEDULES, NS, "hourly"] = schedule("hourly", every="1h")
    async with controller():
        await wait_for(lambda: schedule_status(kmock, "hourly").get("nextStart"))
        await asyncio.sleep(1)
        before = len(list(kmock))
        await asyncio.sleep(4)     # eight ticks
        during = [r for r in list(kmock)[before:] if r.resource and r.action and r.action.value != "WATCH"]
    assert during == [], [(str(r.method), r.url.path) for r in during]
    # Its status: valid, no run yet, the next an hour after creation.
    status = schedule_status(kmock, "hourly")
    assert status["conditions"][0]["reason"] == "Valid" and "time" not in status and status["active"] == []
    created_at = report.parse_time(kmock.objects[SCHEDULES, NS, "hourly"]["metadata"]["creationTimestamp"])
    assert status["nextStart"] == report.iso(created_at + datetime.timedelta(hours=1))


@pytest.mark.asyncio
async def test_a_deleted_schedule_is_let_go_and_runs_no_more(kmock, nodes):
    populate(kmock, nodes)
    kmock.objects[SCHEDULES, NS, "flaky"] = schedule("flaky", every="1s", history=5)
    async with controller():
        await wait_for(lambda: created(kmock), timeout=8)
        # kopf's finalizer (kopf keeps one on a resource with a timer) is released once the timer stopped.
        await kmock.delete(f"/apis/kfault.dev/v1alpha1/namespaces/{NS}/schedules/flaky")
        await wait_for(lambda: kmock.objects[SCHEDULES, NS, "flaky"].deleted)
        runs_then = created(kmock)
        await asyncio.sleep(2.5)
        assert created(kmock) == runs_then
    # Its runs name it as their controlling owner: Kubernetes' garbage collector deletes them (kmock has none).
    for name in runs_then:
        assert kmock.objects[CHAOS, NS, name]["metadata"]["ownerReferences"][0]["uid"] == "uid-flaky"


@pytest.mark.asyncio
async def test_a_pod_kill_schedule_kills_at_each_run_and_keeps_its_history(kmock, nodes):
    populate(kmock, nodes)
    kill = schedule("kill-db", every="1s", history=1, policy="Forbid")
    kill["spec"] = {**kill["spec"], "type": "PodChaos", "podChaos": {
        "action": "pod-kill", "mode": "all", "gracePeriod": 0, "selector": {"labelSelectors": {"app": "db"}}}}
    del kill["spec"]["networkChaos"]
    kmock.objects[SCHEDULES, NS, "kill-db"] = kill
    podchaos = "kfault.dev/v1alpha1/podchaos"
    made = lambda: {k[2] for k in list(kmock.objects) if k[0] == podchaos}  # noqa: E731
    async with controller():
        await wait_for(lambda: kmock.objects["v1/pods", NS, "db-1"].deleted, timeout=8)
        assert not kmock.objects["v1/pods", NS, "web-1"].deleted
        # pod-kill is one-shot (Finished at once), so Forbid lets the next run come; history keeps one.
        await wait_for(lambda: len(made()) >= 3, timeout=10)
        # History keeps one: older runs are deleted. A run comes every second and a deletion
        # waits for its finalizer, so the newest and the one being deleted may both still exist.
        deleted = lambda: [k for k in made() if kmock.objects[podchaos, NS, k].deleted]  # noqa: E731
        await wait_for(lambda: len(deleted()) >= 2, timeout=30)
        assert len(made()) - len(deleted()) <= 2, sorted(made())


@pytest.mark.asyncio
async def test_a_paused_schedule_creates_nothing(kmock, nodes):
    populate(kmock, nodes)
    paused = schedule("paused", every="1s")
    paused["metadata"]["annotations"] = {PAUSE_ANNOTATION: "true"}
    kmock.objects[SCHEDULES, NS, "paused"] = paused
    async with controller():
        await wait_for(lambda: schedule_status(kmock, "paused").get("nextStart"))
        await asyncio.sleep(3)
    assert created(kmock) == set() and nodes["node-a"].engine.history == []
