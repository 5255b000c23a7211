"""A Schedule's runs (Chaos Mesh 2.x), without a cluster: when a run is due, Forbid and Allow,
startingDeadlineSeconds, history pruning, and the experiment a run creates."""
import datetime

import pytest

from kfault_api import spec
from kfault_controller.cron import Cron
from kfault_controller.schedule import runs

UTC = datetime.timezone.utc
CREATED = datetime.datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)


def at(seconds):
    return CREATED + datetime.timedelta(seconds=seconds)


def model(**fields):
    body = {"schedule": "@every 60s", "type": "NetworkChaos",
            "networkChaos": {"action": "loss", "loss": {"loss": "30"}, "duration": "30s"}, **fields}
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "Schedule",
                                  "metadata": {"name": "flaky", "namespace": "shop"}, "spec": body}, for_node=False)


def child(name, phase, created="2026-11-26T10:01:00Z"):
    return runs.Child(kind="NetworkChaos", name=name, namespace="shop", uid=f"uid-{name}", created=created, phase=phase)


def decide(now, last_run=None, children=(), **fields):
    sched = model(**fields)
    return runs.decide(Cron(sched.schedule), sched, CREATED, last_run, list(children), now)


def test_no_run_at_creation_then_one_per_period():
    assert decide(at(0)).step is runs.Step.NOTHING
    assert decide(at(59)).step is runs.Step.NOTHING
    due = decide(at(60.4))
    assert (due.step, due.scheduled) == (runs.Step.RUN, at(60))
    # Recorded (in whole seconds) as run: not due again until the next period.
    assert decide(at(61), last_run=at(60)).step is runs.Step.NOTHING
    assert decide(at(120), last_run=at(60)).scheduled == at(120)


def test_runs_missed_while_away_collapse_into_the_latest():
    due = decide(at(10 * 60 + 5), last_run=at(60))
    assert (due.step, due.scheduled) == (runs.Step.RUN, at(600))


def test_cron_and_macros_are_due_at_their_times():
    assert decide(at(60 * 60), schedule="@hourly").scheduled == at(3600)
    assert decide(at(59 * 60), schedule="@hourly").step is runs.Step.NOTHING
    assert decide(at(15 * 60 + 1), schedule="*/15 * * * *").scheduled == at(900)


def test_a_run_later_than_the_starting_deadline_is_skipped():
    assert decide(at(60 + 30), startingDeadlineSeconds=30).step is runs.Step.RUN
    late = decide(at(60 + 31), startingDeadlineSeconds=30)
    assert (late.step, late.scheduled) == (runs.Step.MISSED, at(60))
    # Without a deadline a late run still runs.
    assert decide(at(60 + 31)).step is runs.Step.RUN


@pytest.mark.parametrize("phase, step", [
    ("Running", runs.Step.FORBIDDEN), ("Paused", runs.Step.FORBIDDEN), (None, runs.Step.FORBIDDEN),
    ("Finished", runs.Step.RUN), ("Failed", runs.Step.RUN),
])
def test_forbid_waits_for_the_last_run_to_finish(phase, step):
    # Forbid is the default, as in Chaos Mesh.
    assert decide(at(120), last_run=at(60), children=[child("flaky-1", phase)]).step is step


def test_a_forbidden_run_runs_once_the_last_has_finished_unless_the_deadline_passed():
    running, done = [child("flaky-1", "Running")], [child("flaky-1", "Finished")]
    assert decide(at(125), last_run=at(60), children=running).step is runs.Step.FORBIDDEN
    assert decide(at(125), last_run=at(60), children=done).scheduled == at(120)
    assert decide(at(125), last_run=at(60), children=done, startingDeadlineSeconds=3).step is runs.Step.MISSED


def test_allow_runs_whatever_is_still_running():
    running = [child("flaky-1", "Running"), child("flaky-2", "Running")]
    assert decide(at(120), last_run=at(60), children=running, concurrencyPolicy="Allow").step is runs.Step.RUN


def test_history_keeps_the_newest_and_never_deletes_a_running_one():
    kept = [child(f"flaky-{i}", "Finished", f"2026-11-26T10:0{i}:00Z") for i in range(1, 6)]
    assert [c.name for c in runs.to_prune(kept, 2)] == ["flaky-1", "flaky-2", "flaky-3"]
    assert runs.to_prune(kept, 5) == [] and runs.to_prune(kept[:1], 1) == []
    mixed = [child("flaky-1", "Running", "2026-11-26T10:01:00Z"), child("flaky-2", "Finished", "2026-11-26T10:02:00Z"),
             child("flaky-3", "Finished", "2026-11-26T10:03:00Z")]
    # The running one stays until it has finished; the finished one beyond the limit goes.
    assert [c.name for c in runs.to_prune(mixed, 1)] == ["flaky-2"]


def test_a_run_creates_the_embedded_experiment_owned_and_labelled():
    schedule_body = {"metadata": {"name": "flaky", "namespace": "shop", "uid": "uid-flaky"},
                     "spec": model().raw["spec"]}
    doc = runs.child_document(schedule_body, model(), at(60))
    assert doc["kind"] == "NetworkChaos" and doc["spec"] == schedule_body["spec"]["networkChaos"]
    assert doc["metadata"]["name"] == f"flaky-{int(at(60).timestamp())}"
    assert doc["metadata"]["namespace"] == "shop" and doc["metadata"]["labels"] == {"managed-by": "flaky"}
    owner, = doc["metadata"]["ownerReferences"]
    assert owner == {"apiVersion": spec.API_VERSION, "kind": "Schedule", "name": "flaky", "uid": "uid-flaky",
                     "controller": True, "blockOwnerDeletion": True}
    assert runs.owner_uid(doc["metadata"]) == "uid-flaky"
    # The created experiment is a valid resource of its kind.
    spec.parse_experiment(doc, for_node=False)


def test_status_is_written_only_where_it_changed():
    kids = [child("flaky-2", "Running"), child("flaky-1", "Finished")]
    changes = runs.status_changes({}, kids, at(60), at(120))
    assert changes["time"] == "2026-11-26T10:01:00Z" and changes["nextStart"] == "2026-11-26T10:02:00Z"
    assert [a["name"] for a in changes["active"]] == ["flaky-1", "flaky-2"]
    assert runs.status_changes(changes, kids, at(60), at(120)) == {}


@pytest.mark.parametrize("kind, body", [
    ("NetworkChaos", {"action": "partition", "mode": "all", "selector": {"labelSelectors": {"app": "web"}}}),
    ("IOChaos", {"action": "latency", "delay": "100ms", "volumePath": "/var/lib/db", "mode": "one"}),
    ("PodChaos", {"action": "pod-failure", "mode": "one", "duration": "30s"}),
])
def test_every_experiment_kind_can_be_scheduled(kind, body):
    key = spec.EXPERIMENTS[kind].schedule_key
    sched = spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "Schedule",
                                   "metadata": {"name": "s", "namespace": "shop"},
                                   "spec": {"schedule": "@daily", "type": kind, key: body}}, for_node=False)
    assert isinstance(sched.template, spec.EXPERIMENTS[kind].model)
    doc = runs.child_document({"metadata": {"name": "s", "namespace": "shop", "uid": "u"}, "spec": sched.raw["spec"]},
                              sched, at(86400))
    assert doc["kind"] == kind and doc["spec"] == body
    assert isinstance(spec.parse_experiment(doc, for_node=False), spec.EXPERIMENTS[kind].model)
