"""What a chaos resource's status says: phase, one record per pod, conditions; and the events
that go with them. Pure: the handlers write these through kopf's patch and post the events."""
import datetime
import hashlib
import json

UTC = datetime.timezone.utc
NAMESPACE_NOT_PERMITTED = "NamespaceNotPermitted"   # Selected's reason: a namespace has not consented


def now():
    return datetime.datetime.now(UTC)


def iso(moment):
    """A status timestamp: RFC 3339, UTC, whole seconds."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def now_iso():
    return iso(now())


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def condition(kind, status, reason, message=""):
    return {"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": now_iso()}


def observed_generation(meta, spec):
    """The resource's generation; where the API server keeps none (an emulator), a number
    derived from the spec, so a spec change still reads as a new generation."""
    if meta.get("generation"):
        return meta["generation"]
    digest = hashlib.sha256(json.dumps(dict(spec), sort_keys=True).encode()).hexdigest()
    return int(digest[:12], 16)


def record_nodes(records):
    """Every node a record names: where a revoke goes."""
    return sorted({r["node"] for r in records if r.get("node")})


def injected_nodes(records):
    """The nodes holding an injected pod: where a lease renewal goes."""
    return sorted({r["node"] for r in records if r.get("injectedAt")})


def failed_records(records):
    return [r for r in records if r.get("error")]


def placed(result):
    """The status after placing (placement.Placed): through agents, or done through the API."""
    return _killed(result) if result.by_api else _injected(result)


def _injected(result):
    chosen, records, failed = result.chosen, result.records, failed_records(result.records)
    all_injected = bool(records) and not failed
    return {
        "phase": "Running" if len(failed) < len(records) else "Failed",
        "records": records,
        "conditions": [
            condition("Selected", "True" if chosen else "False", "PodsSelected" if chosen else "NoPodMatched",
                      f"{len(chosen)} pod(s)"),
            condition("AllInjected", "True" if all_injected else "False",
                      "Injected" if all_injected else "SomeFailed" if failed else "NothingToInject"),
            condition("AllRecovered", "False", "Injected"),
            condition("Paused", "False", "Running"),
        ],
    }


def _killed(result):
    """One-shot (pod-kill): finished once the pods are deleted; their owners bring them back."""
    records = result.records
    return {"phase": "Finished", "records": records,
            "conditions": [condition("Selected", "True" if result.chosen else "False", "PodsSelected"),
                           condition("AllInjected", "True" if all("injectedAt" in r for r in records) else "False",
                                     "Killed")]}


def placement_events(result):
    """(type, reason, message) for each event placing posts on the resource."""
    if result.by_api:
        return [("Normal", "Killed", f"deleted {sum('injectedAt' in r for r in result.records)} pod(s)")]
    events = [("Normal", "Selected", f"{len(result.chosen)} pod(s) on {result.nodes} node(s)")]
    failed = failed_records(result.records)
    if result.records and not failed:
        events.append(("Normal", "Injected", f"injected on {len(result.records)} pod(s)"))
    elif failed:
        events.append(("Warning", "InjectFailed", "; ".join(f"{r['pod']}: {r['error']}" for r in failed)[:1000]))
    return events


def recovered(records, pending_nodes):
    """The records with recoveredAt stamped on every injected pod whose node confirmed."""
    stamp = now_iso()
    records = [dict(r) for r in records]
    for record in records:
        if record.get("node") not in pending_nodes and record.get("injectedAt") and not record.get("recoveredAt"):
            record["recoveredAt"] = stamp
    return records


def paused(records, done, annotation):
    """Taken back (done: on every node) because of the pause `annotation`."""
    return {"records": records, "phase": "Paused",
            "conditions": [condition("Paused", "True", "Annotated", annotation),
                           condition("AllRecovered", "True" if done else "False", "Paused")]}


def stopped(records, reason, stopped_reason):
    """The cluster-wide stop holds (stop.py): the agents took everything back; nothing is placed."""
    return {"records": records, "phase": "Paused",
            "conditions": [condition("Paused", "True", stopped_reason, reason),
                           condition("AllRecovered", "True", stopped_reason, reason)]}


def shows_stopped(status, stopped_reason):
    """Its status says the cluster-wide stop holds."""
    return status.get("phase") == "Paused" and any(
        c.get("type") == "Paused" and c.get("reason") == stopped_reason for c in status.get("conditions") or [])


def waiting(next_start):
    """Between scheduled windows."""
    return {"phase": "Waiting", "nextStart": iso(next_start)}


def finished():
    """The duration is over and every node confirmed."""
    return {"phase": "Finished", "conditions": [condition("AllRecovered", "True", "DurationEnded")]}


def invalid(message, reason="Invalid"):
    """What a schema can't express (or a namespace refused), reported where the user looks."""
    return {"phase": "Failed", "conditions": [condition("Selected", "False", reason, message)]}


def changes(status, new):
    """What of `new` differs from `status`: all a patch needs to write (nothing, when nothing
    changed, so an unchanged status costs no API request). A condition whose status is the
    same keeps its lastTransitionTime, as Kubernetes' conditions do."""
    changed = {}
    for key, value in new.items():
        if key == "conditions":
            value = kept_transition_times(status.get("conditions") or [], value)
        if status.get(key) != value:
            changed[key] = value
    return changed


def kept_transition_times(old, new):
    """`new` conditions, each with the lastTransitionTime of the `old` one of its type if its status is the same."""
    since = {c.get("type"): c.get("lastTransitionTime") for c in old
             if c.get("lastTransitionTime")}
    same = {c.get("type"): c.get("status") for c in old}
    return [dict(c, lastTransitionTime=since[c["type"]]) if c["type"] in since and same[c["type"]] == c["status"]
            else c for c in new]


def kept_injection_times(records, previous):
    """`records` of a placement repeated for the same spec, with each pod still injected on the
    same node keeping the injectedAt of `previous` (its first injection)."""
    first = {(r["pod"], r.get("node")): r["injectedAt"] for r in previous
             if r.get("injectedAt") and not r.get("recoveredAt")}
    return [dict(r, injectedAt=first[(r["pod"], r.get("node"))])
            if r.get("injectedAt") and (r["pod"], r.get("node")) in first else r for r in records]


def refused_namespace(status):
    """Failed because a namespace has not consented (it may yet)."""
    return status.get("phase") == "Failed" and any(
        c.get("type") == "Selected" and c.get("reason") == NAMESPACE_NOT_PERMITTED
        for c in status.get("conditions") or [])
