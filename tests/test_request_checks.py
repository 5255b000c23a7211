"""What the agent accepts in its RPC requests: every field checked, bad values quoted short."""
import json
import math

import pytest

from kfault_agent import request_checks
from kfault_api import spec
from kfault_api.quoting import quoted
from kfault_api.rpc import agent_pb2 as pb

HEX = "0123456789abcdef" * 4


def apply_request(**fields):
    base = dict(experiment="default/cut", kind="NetworkChaos", spec_json=json.dumps({"action": "partition"}),
                targets=[pb.Target(local="netns:a")], lease_seconds=30)
    return pb.ApplyRequest(**{**base, **fields})


def refusal(request, check=request_checks.apply_request):
    with pytest.raises(request_checks.InvalidRequest) as caught:
        check(request)
    return str(caught.value)


def test_a_good_request_becomes_its_experiment():
    experiment = request_checks.apply_request(apply_request(targets=[
        pb.Target(pod=pb.Pod(namespace="shop", name="web-1.a", uid="6f1c2d3e-0000-4000-8000-000000000001",
                             container_ids=[f"containerd://{HEX}", "cri-o://abc"]))]))
    assert (experiment.key, experiment.action) == ("default/cut", "partition")


@pytest.mark.parametrize("lease", [0, 1, 30.5, 3600])
def test_leases_in_range_are_accepted(lease):
    request_checks.apply_request(apply_request(lease_seconds=lease))
    request_checks.renew_request(pb.RenewRequest(experiment="default/cut", lease_seconds=lease))


@pytest.mark.parametrize("lease", [math.inf, -math.inf, math.nan, -1, 0.5, 3601, 1e300])
def test_a_lease_out_of_range_names_the_field_and_the_range(lease):
    for message in (refusal(apply_request(lease_seconds=lease)),
                    refusal(pb.RenewRequest(experiment="default/cut", lease_seconds=lease),
                            request_checks.renew_request)):
        assert message.startswith("lease_seconds: ") and "from 1 to 3600" in message, message


@pytest.mark.parametrize("key", ["", "cut", "/cut", "default/", "Default/cut", "default/cut/x", "a b/cut",
                                 "default/-cut", "x" * 64 + "/cut", "default/" + "x" * 254, "default/cut\x00"])
def test_experiment_keys_are_namespace_slash_name(key):
    for request, check in ((apply_request(experiment=key), request_checks.apply_request),
                           (pb.RenewRequest(experiment=key), request_checks.renew_request),
                           (pb.RevokeRequest(experiment=key), request_checks.experiment_request),
                           (pb.CountersRequest(experiment=key), request_checks.experiment_request)):
        assert refusal(request, check).startswith("experiment: "), key


def test_an_unknown_kind_lists_the_kinds():
    assert "one of " + ", ".join(spec.EXPERIMENTS) in refusal(apply_request(kind="ChaosMonkey"))


@pytest.mark.parametrize("spec_json, allowed", [
    ("", "as JSON"), ("{", "as JSON"), ("[1]", "a JSON object"), ('"x"', "a JSON object"),
    ('{"action": NaN}', "NaN is not a JSON number"), ('{"gap": 1e999}', "out of range"),
    ("[" * 100000 + "]" * 100000, "nested less deeply"), ("1" * 5000, "as JSON"),
    ('{"action": "' + "x" * (request_checks.MAX_SPEC_JSON_BYTES + 1) + '"}', "at most"),
])
def test_spec_json_must_be_a_json_object_of_bounded_size(spec_json, allowed):
    message = refusal(apply_request(spec_json=spec_json))
    assert message.startswith("spec_json: ") and allowed in message, message
    assert len(message) < 1000


@pytest.mark.parametrize("targets, field", [
    ([], "targets"),
    ([pb.Target()], "targets[0]"),
    ([pb.Target(local="netns:a")] * (request_checks.MAX_TARGETS + 1), "targets"),
    ([pb.Target(local="netns:a"), pb.Target(local="bridge:x")], "targets[1].local"),
    ([pb.Target(local="netns:a/b")], "targets[0].local"),
    ([pb.Target(local="pid:12x")], "targets[0].local"),
    ([pb.Target(local="cgroup:relative")], "targets[0].local"),
    ([pb.Target(local="cgroup:/a\x00b")], "targets[0].local"),
    ([pb.Target(local="netns:/" + "a" * 5000)], "targets[0].local"),
    ([pb.Target(pod=pb.Pod(namespace="Shop", name="web", uid="u1"))], "targets[0].pod.namespace"),
    ([pb.Target(pod=pb.Pod(namespace="shop", name="", uid="u1"))], "targets[0].pod.name"),
    ([pb.Target(pod=pb.Pod(namespace="shop", name="web", uid="../x"))], "targets[0].pod.uid"),
    ([pb.Target(pod=pb.Pod(namespace="shop", name="web", uid="u1", container_ids=["containerd://xyz"]))],
     "targets[0].pod.container_ids[0]"),
    ([pb.Target(pod=pb.Pod(namespace="shop", name="web", uid="u1", container_ids=["rkt://abc"]))],
     "targets[0].pod.container_ids[0]"),
    ([pb.Target(pod=pb.Pod(namespace="shop", name="web", uid="u1", container_ids=["docker://a"] * 65))],
     "targets[0].pod.container_ids"),
])
def test_every_target_field_is_checked(targets, field):
    assert refusal(apply_request(targets=targets)).startswith(field + ": ")


def test_every_bad_field_is_named_at_once():
    message = refusal(apply_request(experiment="x", kind="Nope", targets=[], lease_seconds=-1, spec_json="["))
    for field in ("experiment: ", "kind: ", "targets: ", "lease_seconds: ", "spec_json: "):
        assert field in message


def test_spec_errors_come_through_with_their_field():
    assert "spec.loss.loss" in refusal(apply_request(spec_json=json.dumps({"action": "loss", "loss": {"loss": "130"}})))


def test_a_huge_value_is_quoted_short():
    huge = "x" * 100_000
    message = refusal(apply_request(spec_json=json.dumps({"action": huge})))
    assert "... (100000 bytes)" in message and len(message) < 1000, message[:300]
    assert len(refusal(apply_request(experiment=huge))) < 1000


def test_many_problems_make_a_message_of_bounded_size():
    body = {f"field{i}": "x" * 200 for i in range(2000)}
    message = refusal(apply_request(spec_json=json.dumps(body)))
    assert len(message.encode()) <= request_checks.MAX_MESSAGE_BYTES and "more problems" in message


def test_bounded_cuts_on_character_boundaries():
    text = "é" * 10_000
    cut = request_checks.bounded(text, 100)
    assert len(cut.encode()) <= 100 and cut.endswith("(20000 bytes in all)")


@pytest.mark.parametrize("value, shown", [
    ("short", "'short'"), (None, "None"), ("x" * 200, "'" + "x" * 79 + "... (200 bytes)"),
    ("é" * 100, "'" + "é" * 79 + "... (200 bytes)"), (list(range(100)), None),
])
def test_quoted_shows_short_values_whole_and_long_ones_cut(value, shown):
    text = quoted(value)
    assert len(text) <= 80 + 30
    if shown:
        assert text == shown


def test_spec_errors_quote_values_short():
    with pytest.raises(spec.InvalidSpec) as caught:
        spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "NetworkChaos",
                               "metadata": {"name": "x"}, "spec": {"action": "y" * 100_000}})
    assert len(str(caught.value)) < 1000


def test_a_renewal_names_one_experiment_or_many():
    assert request_checks.renew_request(pb.RenewRequest(experiment="default/cut")) == {"default/cut"}
    assert request_checks.renew_request(pb.RenewRequest(experiments=["default/cut", "team-a/slow"])) == {
        "default/cut", "team-a/slow"}
    assert request_checks.renew_request(pb.RenewRequest(experiment="default/cut", experiments=["default/b"])) == {
        "default/cut", "default/b"}


def test_a_renewal_of_many_names_the_bad_key_by_its_index():
    message = refusal(pb.RenewRequest(experiments=["default/cut", "Default/cut"]), request_checks.renew_request)
    assert message.startswith("experiments[1]: "), message


def test_a_renewal_of_too_many_experiments_says_how_many_fit():
    keys = [f"default/e{i}" for i in range(request_checks.MAX_RENEWED + 1)]
    message = refusal(pb.RenewRequest(experiments=keys), request_checks.renew_request)
    assert message.startswith("experiments: ") and f"at most {request_checks.MAX_RENEWED}" in message, message
