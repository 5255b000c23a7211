"""A Workflow Task's Pod, run as a stranger's container should be (pure). The user's container
may narrow what is set here, never widen it: what would widen it is refused, naming the field.
The namespace's PodSecurity admission still applies, like to any pod the user makes."""
import copy

NOBODY = 65534               # the conventional unprivileged user and group
DEFAULT_LIMITS = {"cpu": "1", "memory": "256Mi"}
STDOUT_READ_MAX = 64 * 1024  # bytes of a Task's log read (its first)
# Pod-level fields a Task container can't ask for (they would be the pod's, not the container's).
REFUSED_VOLUMES = ("hostPath",)


class TaskRefused(ValueError):
    """The Task asks for something a stranger's container may not have."""


def _refuse(field, value, allowed):
    raise TaskRefused(f"task.{field}: {value!r} is not allowed; {allowed}")


def pod_document(meta, template):
    """The Pod of a Task template; meta: its metadata (name, namespace, labels, owner)."""
    container = copy.deepcopy(template.task["container"])
    container.setdefault("name", "task")
    context = container.setdefault("securityContext", {})
    if context.get("privileged"):
        _refuse("container.securityContext.privileged", True, "a Task runs unprivileged: remove it")
    if context.get("allowPrivilegeEscalation"):
        _refuse("container.securityContext.allowPrivilegeEscalation", True, "a Task runs without it: remove it")
    if (context.get("capabilities") or {}).get("add"):
        _refuse("container.securityContext.capabilities.add", context["capabilities"]["add"],
                "a Task runs with every capability dropped: remove it")
    for port in container.get("ports") or []:
        if port.get("hostPort"):
            _refuse("container.ports[].hostPort", port["hostPort"], "a Task uses no host port: remove it")
    for index, volume in enumerate(template.task.get("volumes") or []):
        for kind in REFUSED_VOLUMES:
            if kind in volume:
                _refuse(f"volumes[{index}].{kind}", volume[kind], "a Task mounts nothing of its node: use a "
                        "configMap, secret, emptyDir or persistentVolumeClaim volume")
    # Non-root unless the container names a user: an image that runs as root (busybox) runs as
    # nobody; one that needs root says runAsUser: 0, and the namespace's PodSecurity decides.
    context.setdefault("runAsUser", NOBODY)
    context.setdefault("runAsGroup", NOBODY)
    context.setdefault("runAsNonRoot", context["runAsUser"] != 0)
    context["allowPrivilegeEscalation"] = False
    context["capabilities"] = {"drop": ["ALL"]}
    context.setdefault("seccompProfile", {"type": "RuntimeDefault"})
    resources = container.setdefault("resources", {})
    resources.setdefault("limits", dict(DEFAULT_LIMITS))
    metadata = copy.deepcopy(meta)
    metadata["labels"] = {**template.task.get("labels", {}), **metadata["labels"]}
    spec = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": copy.deepcopy(template.task.get("volumes") or []),
        # The namespace's default service account, without its token: the Task has no API rights.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": context["runAsNonRoot"], "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if template.deadline_ns:
        # kubelet ends the pod at the node's deadline too, should the controller be away.
        spec["activeDeadlineSeconds"] = max(1, template.deadline_ns // 10**9)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def container_name(template):
    return template.task["container"].get("name", "task")
