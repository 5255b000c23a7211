"""The kopf handlers of `kind: StatusCheck`: thin. checks.py says whether a request is due and
what the status becomes; probe.py makes the request. One timer per check, run by kopf one call
at a time per object: never two requests of one check in flight."""
import kopf

from kfault_api import spec as api_spec
from kfault_controller.status import changes, condition, now
from kfault_controller.statuscheck import checks, probe

GROUP, VERSION = api_spec.API_VERSION.split("/")


def read_check(body):
    doc = {"apiVersion": api_spec.API_VERSION, "kind": api_spec.STATUS_CHECK.name,
           "metadata": {"name": body["metadata"]["name"], "namespace": body["metadata"]["namespace"]},
           "spec": dict(body["spec"])}
    return api_spec.parse_experiment(doc, for_node=False)


async def check_tick(body, status, patch, memo, **_):
    """Each tick: complete it at its duration, or make the request that is due."""
    try:
        model = read_check(body)
    except api_spec.InvalidSpec as err:
        message = "; ".join(str(e) for e in err.errors)
        if not checks.completed(status):
            kopf.warn(body, reason="Invalid", message=message)
            patch.status["conditions"] = [condition("Completed", "True", "Invalid", message)]
        return
    moment = now()
    if checks.completed(status):
        return
    if checks.duration_exceeded(model, status, moment):
        patch.status.update(changes(status, checks.finished("DurationExceed", status, moment)))
        kopf.info(body, reason="Completed", message="its duration passed")
        return
    if not checks.due(model, status, moment):
        return
    healthy, message = await probe.request(model.http, model.timeout_s, memo.settings.allow_metadata_status_checks)
    new = checks.recorded(model, status, moment, healthy, message, now())
    if not healthy:
        kopf.event(body, type="Warning", reason="StatusCheckExecutionFailed", message=message)
    if checks.completed(new):
        reason = next(c["type"] for c in new["conditions"] if c["status"] == "True" and c["type"] != "Completed")
        kopf.event(body, type="Warning" if reason == "FailureThresholdExceed" else "Normal", reason=reason,
                   message=f"after {new['count']} request(s): {message}")
    patch.status.update(changes(status, new))


def register(registry, settings):
    kopf.timer(GROUP, VERSION, api_spec.STATUS_CHECK.plural, interval=settings.workflow_tick_s, id="check_tick",
               registry=registry)(check_tick)
