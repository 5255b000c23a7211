"""Cron times: when a repeated window opens (an experiment's spec.scheduler.cron, windows.py)
and when a Schedule runs (spec.schedule, schedule/). Pure.

`@every 2m` starts a window every two minutes from the resource's creation (croniter has no
`@every`: it is Go cron's, which Chaos Mesh uses); a five-field cron expression or a macro
(`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`), read by croniter, starts one at each
matching minute, UTC. Each window lasts `duration`.
"""
import datetime

from croniter import CroniterBadDateError, CroniterError, croniter

from kfault_api import units

UTC = datetime.timezone.utc
FIELDS = (("minute", "0-59"), ("hour", "0-23"), ("day-of-month", "1-31"), ("month", "1-12"),
          ("day-of-week", "0-6, 0 = Sunday"))
FORMS = "five fields (minute hour day-of-month month day-of-week) such as \"*/15 9-17 * * 1-5\", @daily, or @every 2m"


class CronError(ValueError):
    pass


def _every(text):
    """`@every <duration>` as a timedelta above 0."""
    try:
        every = datetime.timedelta(microseconds=units.parse_duration_ns(text) / 1000)
    except ValueError as err:
        raise CronError(f"the duration after @every: {err}") from None
    if every <= datetime.timedelta(0):
        raise CronError(f"the duration after @every: {text!r} is not above 0; use one such as @every 2m")
    return every


def _cron(expression):
    """A checked five-field expression or macro; a bad one names the field, its value and its range."""
    if expression.startswith("@"):
        if croniter.is_valid(expression):
            return expression
        raise CronError(f"no macro {expression.split()[0]!r}; use {FORMS}")
    fields = expression.split()
    if len(fields) != 5:
        raise CronError(f"{len(fields)} field(s); use {FORMS}")
    if croniter.is_valid(expression):
        return expression
    for index, ((name, allowed), text) in enumerate(zip(FIELDS, fields)):
        alone = " ".join(text if i == index else "*" for i in range(len(FIELDS)))
        if not croniter.is_valid(alone):
            raise CronError(f"the {name} field {text!r} is not valid; use {allowed}, with *, */n, a-b, a,b")
    raise CronError(f"not a cron expression; use {FORMS}")


class Cron:
    def __init__(self, expression):
        self.expression = expression.strip()
        self.every = None
        if self.expression.startswith("@every"):
            self.every = _every(self.expression.removeprefix("@every").strip())
        else:
            self.cron = _cron(self.expression)

    def _matches(self, start, direction):
        try:
            return getattr(croniter(self.cron, start.astimezone(UTC)), direction)(datetime.datetime)
        except CroniterBadDateError:
            raise CronError(f"{self.expression!r} never matches (such as day 31 of February); "
                                "pick a day every chosen month has") from None
        except CroniterError as err:
            raise CronError(str(err)) from None

    def next_start(self, after, anchor):
        """The first window start strictly after `after` (datetimes, UTC)."""
        if self.every:
            periods = int((after - anchor) / self.every) + 1 if after >= anchor else 0
            return anchor + periods * self.every
        return self._matches(after, "get_next")

    def current_window(self, now, anchor, duration):
        """(start, end) of the window `now` is in, or None; windows start at `anchor` too for @every."""
        if self.every:
            if now < anchor:
                return None
            start = anchor + int((now - anchor) / self.every) * self.every
        else:
            start = self.previous_start(now)
        end = start + duration
        return (start, end) if start <= now < end else None

    def latest_start(self, now, anchor):
        """The latest start at or before `now`, or None (for @every, none before `anchor`)."""
        if self.every:
            return anchor + int((now - anchor) / self.every) * self.every if now >= anchor else None
        return self.previous_start(now)

    def previous_start(self, now):
        """The latest cron start at or before `now` (croniter's get_prev is strictly before)."""
        return self._matches(now.replace(second=0, microsecond=0) + datetime.timedelta(minutes=1), "get_prev")
