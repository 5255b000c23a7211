"""Repeated windows (scheduler.cron + duration): pure logic."""
import datetime

import pytest

from kfault_controller.schedule import Schedule, ScheduleError

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 11, 26, 10, 0, 30, tzinfo=UTC)   # a Thursday


def at(minutes=0, seconds=0):
    return T0 + datetime.timedelta(minutes=minutes, seconds=seconds)


def test_every_starts_windows_from_the_anchor():
    every = Schedule("@every 2m")
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
])
def test_cron_next_start(expression, after, expected):
    after = datetime.datetime.fromisoformat(after).replace(tzinfo=UTC)
    assert Schedule(expression).next_start(after, T0) == datetime.datetime.fromisoformat(expected).replace(tzinfo=UTC)


def test_cron_current_window():
    hourly = Schedule("0 * * * *")
    window = hourly.current_window(at(5), T0, datetime.timedelta(minutes=10))
    assert window == (T0.replace(second=0), T0.replace(second=0) + datetime.timedelta(minutes=10))
    assert hourly.current_window(at(20), T0, datetime.timedelta(minutes=10)) is None


@pytest.mark.parametrize("expression, words", [
    ("* * *", "five fields"),
    ("61 * * * *", "minute"),
    ("* 24 * * *", "hour"),
    ("@every soon", "duration"),
    ("0 0 31 2 *", "never matches"),
])
def test_bad_schedules_say_what_is_wrong(expression, words):
    with pytest.raises(ScheduleError, match=words):
        Schedule(expression).next_start(T0, T0)
