"""Repeated windows: Chaos Mesh's `scheduler.cron` with `duration`. Pure.

`@every 2m` starts a window every two minutes from the resource's creation; a cron expression
(five fields: minute hour day-of-month month day-of-week, with `*`, `*/n`, `a-b`, `a,b`,
`a-b/n`; or `@hourly`, `@daily`, `@weekly`, `@monthly`) starts one at each matching minute, UTC.
Each window lasts `duration`.
"""
import datetime

from kfault_api import units

MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
          "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}
FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 6))
HORIZON = datetime.timedelta(days=366)


class ScheduleError(ValueError):
    pass


def _field(text, name, low, high):
    values = set()
    for part in text.split(","):
        spec, _, step = part.partition("/")
        if spec == "*":
            first, last = low, high
        elif "-" in spec:
            first, last = (int(x) for x in spec.split("-", 1))
        else:
            first = last = int(spec)
        step = int(step) if step else 1
        if not (low <= first <= last <= high) or step < 1:
            raise ScheduleError(f"the {name} field {part!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    return values


class Schedule:
    def __init__(self, expression):
        self.expression = expression.strip()
        self.every = None
        try:
            if self.expression.startswith("@every "):
                self.every = datetime.timedelta(microseconds=units.parse_duration_ns(self.expression[7:].strip()) / 1000)
                if self.every <= datetime.timedelta(0):
                    raise ScheduleError("@every needs a duration above 0")
                return
            fields = MACROS.get(self.expression, self.expression).split()
            if len(fields) != 5:
                raise ScheduleError("five fields (minute hour day-of-month month day-of-week), @every 2m, or @daily")
            self.sets = [_field(text, *spec) for text, spec in zip(fields, FIELDS)]
        except ValueError as err:
            if isinstance(err, ScheduleError):
                raise
            raise ScheduleError(str(err)) from None

    def next_start(self, after, anchor):
        """The first window start strictly after `after` (datetimes, UTC)."""
        if self.every:
            periods = int((after - anchor) / self.every) + 1 if after >= anchor else 0
            return anchor + periods * self.every
        minute, hour, dom, month, dow = self.sets
        t = after.replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
        end = after + HORIZON
        while t < end:
            if t.month not in month:
                t = (t.replace(day=1, hour=0, minute=0) + datetime.timedelta(days=32)).replace(day=1)
                continue
            if t.day not in dom or (t.isoweekday() % 7) not in dow:
                t = t.replace(hour=0, minute=0) + datetime.timedelta(days=1)
                continue
            if t.hour not in hour:
                t = t.replace(minute=0) + datetime.timedelta(hours=1)
                continue
            if t.minute in minute:
                return t
            t += datetime.timedelta(minutes=1)
        raise ScheduleError(f"{self.expression!r} never matches within a year")

    def current_window(self, now, anchor, duration):
        """(start, end) of the window `now` is in, or None; windows start at `anchor` too for @every."""
        if self.every:
            if now < anchor:
                return None
            start = anchor + int((now - anchor) / self.every) * self.every
        else:
            start = self.previous_start(now, duration)
            if start is None:
                return None
        end = start + duration
        return (start, end) if start <= now < end else None

    def previous_start(self, now, duration):
        """The latest cron start in (now - duration, now], if any."""
        t = now.replace(second=0, microsecond=0)
        floor = now - duration
        while t > floor:
            minute, hour, dom, month, dow = self.sets
            if (t.minute in minute and t.hour in hour and t.day in dom and t.month in month
                    and (t.isoweekday() % 7) in dow):
                return t
            t -= datetime.timedelta(minutes=1)
        return None
