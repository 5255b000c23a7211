"""A StatusCheck's records and conditions (statuscheck/checks.py, pure) and the addresses its
requests refuse (statuscheck/probe.py), with requests to a real local HTTP server."""
import datetime
import socket
import time

import pytest

from kfault_api import spec
from kfault_controller.status import iso
from kfault_controller.statuscheck import checks, probe
from tests.workflows import http_server

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def check(**fields):
    doc = {"apiVersion": spec.API_VERSION, "kind": "StatusCheck", "metadata": {"name": "c"},
           "spec": {"type": "HTTP", "http": {"url": "http://x", "criteria": {"statusCode": "200"}}, **fields}}
    return spec.parse_experiment(doc, for_node=False)


def run(model, outcomes, step_s=None):
    """The status after these outcomes, one a interval (or step_s) apart."""
    status, moment = {}, T0
    for outcome in outcomes:
        assert checks.due(model, status, moment)
        status = {**status, **checks.recorded(model, status, moment, outcome, "x", moment)}
        moment += datetime.timedelta(seconds=step_s or model.interval_s)
    return status


def completed_by(status):
    return {c["type"] for c in status["conditions"] if c["status"] == "True"}


def test_consecutive_failures_fail_it_and_a_success_resets_the_count():
    model = check(failureThreshold=3, mode="Continuous")
    assert completed_by(run(model, [False, False, True, False, False])) == set()
    assert completed_by(run(model, [False, False, True, False, False, False])) == \
        {"Completed", "FailureThresholdExceed"}


def test_a_synchronous_check_completes_at_its_success_threshold_a_continuous_one_does_not():
    assert completed_by(run(check(successThreshold=2), [True, True])) == {"Completed", "SuccessThresholdExceed"}
    assert completed_by(run(check(successThreshold=2, mode="Continuous"), [True] * 5)) == set()


def test_a_request_is_due_an_interval_after_the_last_began_and_none_once_completed():
    model = check(intervalSeconds=5, mode="Continuous")
    status = run(model, [True])
    assert not checks.due(model, status, T0 + datetime.timedelta(seconds=4))
    assert checks.due(model, status, T0 + datetime.timedelta(seconds=5))
    done = {**status, **checks.finished("DurationExceed", status, T0)}
    assert not checks.due(model, done, T0 + datetime.timedelta(hours=1))


def test_the_duration_ends_it_and_records_keep_their_limit():
    model = check(mode="Continuous", duration="10s", recordsHistoryLimit=3, intervalSeconds=2)
    status = run(model, [True] * 6)
    assert completed_by(status) == {"Completed", "DurationExceed"}
    assert status["count"] == 6 and len(status["records"]) == 3
    assert status["records"][-1]["startTime"] == iso(T0 + datetime.timedelta(seconds=10))


@pytest.mark.parametrize("address,refused", [
    ("169.254.169.254", True), ("169.254.0.1", True), ("fd00:ec2::254", True), ("fe80::1", True),
    ("::ffff:169.254.169.254", True), ("10.0.0.1", False), ("127.0.0.1", False), ("fd00:ec2::253", False)])
def test_link_local_and_metadata_addresses_are_refused(address, refused):
    assert bool(probe.refused(address)) is refused


@pytest.mark.asyncio
async def test_requests_are_bounded_by_their_timeout_and_judged_by_the_status_code_range():
    with http_server(302) as server:
        url = f"http://127.0.0.1:{server.server_port}/"
        healthy, message = await probe.request(spec.HttpCheck(url, status_codes=(200, 399)), 1)
        assert (healthy, message) == (True, "status code 302")
        healthy, message = await probe.request(spec.HttpCheck(url, status_codes=(200, 299)), 1)
        assert (healthy, message) == (False, "status code 302")
    # A server that takes the connection and never answers: the request's timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        healthy, message = await probe.request(spec.HttpCheck(f"http://127.0.0.1:{silent.getsockname()[1]}/"), 1)
        assert (healthy, message) == (False, "no answer within 1 s") and time.monotonic() - started < 1.5
    healthy, message = await probe.request(spec.HttpCheck("http://[fd00:ec2::254]/"), 1)
    assert not healthy and "--allow-metadata-status-checks" in message
