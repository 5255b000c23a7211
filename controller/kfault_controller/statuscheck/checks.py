"""A StatusCheck's records and conditions (pure), in Chaos Mesh's terms:

- a request is due `intervalSeconds` after the start of the last one (the first at once);
- `failureThreshold` consecutive failures complete the check, failed (FailureThresholdExceed);
- a Synchronous check completes at `successThreshold` consecutive successes (SuccessThresholdExceed);
- `duration` after its start it completes (DurationExceed), whatever its mode;
- records keep the last `recordsHistoryLimit` outcomes, `count` all of them.
Everything is read from the status, so a restarted controller goes on where it was.
"""
import datetime

from kfault_controller.status import iso, parse_time

CONDITION_TYPES = ("Completed", "DurationExceed", "FailureThresholdExceed", "SuccessThresholdExceed")


def completed(status):
    return any(c.get("type") == "Completed" and c.get("status") == "True" for c in status.get("conditions") or [])


def due(model, status, now):
    """True if a request should start now."""
    if completed(status):
        return False
    records = status.get("records") or []
    if not records:
        return True
    return now >= parse_time(records[-1]["startTime"]) + datetime.timedelta(seconds=model.interval_s)


def duration_exceeded(model, status, now):
    if model.duration_ns is None or not status.get("startTime"):
        return False
    return now >= parse_time(status["startTime"]) + datetime.timedelta(microseconds=model.duration_ns // 1000)


def _trailing(records, outcome):
    count = 0
    for record in reversed(records):
        if record["outcome"] != outcome:
            break
        count += 1
    return count


def conditions(reason_type, now, previous=()):
    """Chaos Mesh's four conditions; reason_type: the one that completed it (None: running)."""
    stamp = iso(now)
    since = {c.get("type"): (c.get("status"), c.get("lastTransitionTime")) for c in previous}
    made = []
    for kind in CONDITION_TYPES:
        value = "True" if reason_type and kind in ("Completed", reason_type) else "False"
        old_value, old_since = since.get(kind, (None, None))
        made.append({"type": kind, "status": value, "reason": f"StatusCheck{reason_type}" if reason_type else "",
                     "lastProbeTime": stamp, "lastTransitionTime": old_since if old_value == value and old_since
                     else stamp})
    return made


def recorded(model, status, started, success, message, now):
    """The status after one request that started at `started`."""
    records = list(status.get("records") or []) + [{"startTime": iso(started),
                                                     "outcome": "Success" if success else "Failure",
                                                     "message": message[:256]}]
    new = {"startTime": status.get("startTime") or iso(started), "count": (status.get("count") or 0) + 1,
           "records": records[-model.records_limit:]}
    reason = None
    if _trailing(records, "Failure") >= model.failure_threshold:
        reason = "FailureThresholdExceed"
    elif model.mode == "Synchronous" and _trailing(records, "Success") >= model.success_threshold:
        reason = "SuccessThresholdExceed"
    elif duration_exceeded(model, {**status, **new}, now):
        reason = "DurationExceed"
    return {**new, **finished(reason, status, now)}


def finished(reason, status, now):
    """The conditions (and completionTime) for `reason` (None: still running)."""
    new = {"conditions": conditions(reason, now, status.get("conditions") or [])}
    if reason:
        new["completionTime"] = iso(now)
    return new
