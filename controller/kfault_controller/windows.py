"""When an experiment should be in place: the pause annotation, repeated windows
(spec.scheduler.cron + spec.duration) and a single run's spec.duration. Pure."""
import datetime
import enum
from dataclasses import dataclass

from kfault_api import units
from kfault_controller.cron import Cron, CronError
from kfault_controller.status import parse_time

PAUSE_ANNOTATION = "experiment.kfault.dev/pause"


def is_paused(meta):
    return (meta.get("annotations") or {}).get(PAUSE_ANNOTATION) == "true"


@dataclass(frozen=True)
class Windows:
    cron: Cron
    length: datetime.timedelta
    anchor: datetime.datetime        # @every counts from here: the resource's creation

    def current(self, now):
        """(start, end) of the window `now` is in, or None."""
        return self.cron.current_window(now, self.anchor, self.length)

    def next_start(self, now):
        return self.cron.next_start(now, self.anchor)


def windows_of(spec, meta):
    """The resource's Windows if it has spec.scheduler, else None. CronError names the field to fix."""
    expression = (spec.get("scheduler") or {}).get("cron")
    if not expression:
        return None
    if not spec.get("duration"):
        raise CronError("spec.duration: the length of each window; spec.scheduler needs it")
    try:
        cron = Cron(expression)
    except CronError as err:
        raise CronError(f"spec.scheduler.cron: {expression!r}: {err}") from None
    length = datetime.timedelta(microseconds=units.parse_duration_ns(spec["duration"]) / 1000)
    anchor = parse_time(meta["creationTimestamp"]) if meta.get("creationTimestamp") else \
        datetime.datetime.now(datetime.timezone.utc)
    return Windows(cron, length, anchor)


class Due(enum.Enum):
    """What the keep-alive timer does for a resource on one tick."""
    NOTHING = "nothing"
    OPEN_WINDOW = "open-window"          # a scheduled window has begun: inject
    NEXT_START = "next-start"            # the expected start passed outside any window: look again
    CLOSE_WINDOW = "close-window"        # the window is over: take back, wait for the next
    END_DURATION = "end-duration"        # an unscheduled run's duration is over: take back, finish
    RENEW = "renew"                      # running: renew the agents' leases


def due(windows, spec, meta, status, now):
    """The timer's step now, for a resource with these `windows` (None: not scheduled)."""
    phase = status.get("phase")
    if windows and phase == "Waiting" and not is_paused(meta):
        if status.get("nextStart") and now >= parse_time(status["nextStart"]):
            return Due.OPEN_WINDOW if windows.current(now) else Due.NEXT_START
        return Due.NOTHING
    if phase != "Running":
        return Due.NOTHING
    if windows:
        return Due.CLOSE_WINDOW if status.get("windowEnd") and now >= parse_time(status["windowEnd"]) else Due.RENEW
    if spec.get("duration") and status.get("startedAt"):
        elapsed = (now - parse_time(status["startedAt"])).total_seconds()
        if elapsed * 1e9 >= units.parse_duration_ns(spec["duration"]):
            return Due.END_DURATION
    return Due.RENEW
