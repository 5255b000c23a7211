"""Repeated windows (scheduler.cron + duration): pure logic."""
import datetime

import pytest

from kfault_controller.cron import Cron, CronError

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 11, 26, 10, 0, 30, tzinfo=UTC)   # a Thursday


def at(minutes=0, seconds=0):
    return T0 + datetime.timedelta(minutes=minutes, seconds=seconds)


def test_every_starts_windows_from_the_anchor():
    every = Cron("@every 2m")
    assert every.current_window(at(0, 10), T0, datetime.timedelta(seconds=30)) == (T0, at(0, 30))
    assert every.current_window(at(1), T0, datetime.timedelta(seconds=30)) is None
    assert every.next_start(at(1), T0) == at(2)
    assert every.current_window(at(4, 5), T0, datetime.timedelta(seconds=30)) == (at(4), at(4, 30))


@pytest.mark.parametrize("expression, after, expected", [
    ("*/15 * * * *", "2026-11-26T10:00:30", "2026-11-26T10:15:00"),
    ("0 * * * *", "2026-11-26T10:00:30", "2026-11-26T11:00:00"),
    ("@daily", "2026-11-26T10:00:30", "2026-11-27T00:00:00"),
    ("30 9 * * 1-5", "2026-11-27T10:00:00", "2026-11-30T09:30:00"),     # Friday -> Monday
    ("0 0 1 1 *", "2026-11-26T10:00:30", "2027-01-01T00:00:00"),
    ("5,35 8-9 * * *", "2026-11-26T08:06:00", "2026-11-26T08:35:00"),
    ("*/15 9-17 * * 1-5", "2026-11-27T17:50:00", "2026-11-30T09:00:00"),   # office hours, Friday -> Monday
    ("0 12 * * 7", "2026-11-26T10:00:30", "2026-11-29T12:00:00"),          # 7 is Sunday too
    ("0 0 * * 0", "2026-11-29T00:00:00", "2026-12-06T00:00:00"),           # strictly after a start
])
def test_cron_next_start(expression, after, expected):
    after = datetime.datetime.fromisoformat(after).replace(tzinfo=UTC)
    assert Cron(expression).next_start(after, T0) == datetime.datetime.fromisoformat(expected).replace(tzinfo=UTC)


def test_cron_current_window():
    hourly = Cron("0 * * * *")
    window = hourly.current_window(at(5), T0, datetime.timedelta(minutes=10))
    assert window == (T0.replace(second=0), T0.replace(second=0) + datetime.timedelta(minutes=10))
    assert hourly.current_window(at(20), T0, datetime.timedelta(minutes=10)) is None
    # A start exactly at `now` is the current window's start, not the previous hour's.
    start, ten = T0.replace(second=0), datetime.timedelta(minutes=10)
    assert hourly.current_window(start, T0, ten) == (start, start + ten)


def test_cron_is_read_in_utc():
    paris = datetime.timezone(datetime.timedelta(hours=1))
    after = datetime.datetime(2026, 11, 26, 11, 0, 30, tzinfo=paris)        # 10:00:30 UTC
    assert Cron("0 11 * * *").next_start(after, T0) == datetime.datetime(2026, 11, 26, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize("expression, words", [
    ("* * *", "five fields"),
    ("61 * * * *", "minute"),
    ("* 24 * * *", "hour"),
    ("@every soon", "duration"),
    ("@every 0s", "above 0"),
    ("0 0 31 2 *", "never matches"),
    ("*/15 9-18 * 13 1-5", "the month field '13' is not valid; use 1-12"),
    ("0 0 * * mon-funday", "day-of-week field"),
    ("@fortnightly", "no macro '@fortnightly'"),
    ("* * * * * *", "6 field"),
])
def test_bad_schedules_say_what_is_wrong(expression, words):
    with pytest.raises(CronError, match=words):
        Cron(expression).next_start(T0, T0)


def test_the_keep_alive_timer_opens_closes_ends_and_renews():
    from kfault_controller.windows import Due, due, windows_of
    meta = {"creationTimestamp": "2026-11-26T10:00:30Z"}
    scheduled = {"duration": "30s", "scheduler": {"cron": "@every 2m"}}
    windows = windows_of(scheduled, meta)
    assert due(windows, scheduled, meta, {"phase": "Waiting", "nextStart": "2026-11-26T10:02:30Z"}, at(2, 5)) \
        is Due.OPEN_WINDOW
    assert due(windows, scheduled, meta, {"phase": "Waiting", "nextStart": "2026-11-26T10:02:30Z"}, at(1)) \
        is Due.NOTHING
    paused = {"annotations": {"experiment.kfault.dev/pause": "true"}, **meta}
    assert due(windows, scheduled, paused, {"phase": "Waiting", "nextStart": "2026-11-26T10:02:30Z"}, at(2, 5)) \
        is Due.NOTHING
    assert due(windows, scheduled, meta, {"phase": "Running", "windowEnd": "2026-11-26T10:01:00Z"}, at(0, 20)) \
        is Due.RENEW
    assert due(windows, scheduled, meta, {"phase": "Running", "windowEnd": "2026-11-26T10:01:00Z"}, at(0, 45)) \
        is Due.CLOSE_WINDOW
    once = {"duration": "1m"}
    running = {"phase": "Running", "startedAt": "2026-11-26T10:00:30Z"}
    assert due(None, once, meta, running, at(0, 50)) is Due.RENEW
    assert due(None, once, meta, running, at(1, 0)) is Due.END_DURATION
    assert due(None, once, meta, {**running, "phase": "Finished"}, at(5)) is Due.NOTHING


def test_a_schedule_without_duration_names_the_field():
    from kfault_controller.windows import windows_of
    with pytest.raises(CronError, match="spec.duration"):
        windows_of({"scheduler": {"cron": "@daily"}}, {})
    with pytest.raises(CronError, match=r"spec.scheduler.cron: '\*/15 9-17 \* 13 1-5': the month field"):
        windows_of({"duration": "1m", "scheduler": {"cron": "*/15 9-17 * 13 1-5"}}, {})
