"""Which pods an experiment selects: Chaos Mesh's PodSelectorSpec and modes. Pure."""
import math
import random

PROTECTED_NAMESPACES = {"kube-system", "kfault-system"}
ALLOW_ANNOTATION = "experiment.kfault.dev/allow"    # "true" on a namespace lets experiments in


class SelectionError(ValueError):
    pass


def _labels_match(labels, wanted):
    return all(labels.get(k) == v for k, v in (wanted or {}).items())


def _expression_matches(labels, expression):
    key, op, values = expression["key"], expression["operator"], expression.get("values", [])
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    return key not in labels          # DoesNotExist


FIELDS = {
    "metadata.name": lambda pod: pod["metadata"]["name"],
    "metadata.namespace": lambda pod: pod["metadata"]["namespace"],
    "spec.nodeName": lambda pod: pod.get("spec", {}).get("nodeName", ""),
    "status.phase": lambda pod: pod.get("status", {}).get("phase", ""),
    "status.podIP": lambda pod: pod.get("status", {}).get("podIP", ""),
}


def _fields_match(pod, selectors):
    for field, value in (selectors or {}).items():
        negate = field.endswith("!")
        getter = FIELDS.get(field.rstrip("!"))
        if getter is None:
            raise SelectionError(f"spec.selector.fieldSelectors: {field!r} is not supported; use one of "
                                 + ", ".join(FIELDS))
        if (getter(pod) == value) == negate:
            return False
    return True


def matches(pod, selector, node_labels, namespace_annotations):
    meta = pod["metadata"]
    namespace, labels = meta["namespace"], meta.get("labels") or {}
    node = pod.get("spec", {}).get("nodeName")
    if namespace in PROTECTED_NAMESPACES and \
            (namespace_annotations.get(namespace) or {}).get(ALLOW_ANNOTATION) != "true":
        return False
    if selector.get("namespaces") and namespace not in selector["namespaces"]:
        return False
    if selector.get("pods"):
        if meta["name"] not in selector["pods"].get(namespace, []):
            return False
    if not _labels_match(labels, selector.get("labelSelectors")):
        return False
    if not all(_expression_matches(labels, e) for e in selector.get("expressionSelectors", [])):
        return False
    if not _labels_match(meta.get("annotations") or {}, selector.get("annotationSelectors")):
        return False
    if not _fields_match(pod, selector.get("fieldSelectors")):
        return False
    if selector.get("podPhaseSelectors") and pod.get("status", {}).get("phase") not in selector["podPhaseSelectors"]:
        return False
    if selector.get("nodes") and node not in selector["nodes"]:
        return False
    if selector.get("nodeSelectors") and not _labels_match(node_labels.get(node, {}), selector["nodeSelectors"]):
        return False
    return True


def choose(pods, mode, value, rng=random):
    """Chaos Mesh's modes over the matching pods (sorted by namespace/name first, so `all` and
    a fixed seed are repeatable)."""
    pods = sorted(pods, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"]))
    mode = mode or "one"
    if mode == "all":
        return pods
    if not pods:
        return []
    if mode == "one":
        return [rng.choice(pods)]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SelectionError(f"spec.value: {value!r} is not a number; mode {mode} needs one") from None
    if mode == "fixed":
        count = int(number)
    elif mode == "fixed-percent":
        count = math.floor(len(pods) * number / 100)
    elif mode == "random-max-percent":
        count = rng.randint(0, math.floor(len(pods) * number / 100))
    else:
        raise SelectionError(f"spec.mode: {mode!r} is not one of one, all, fixed, fixed-percent, random-max-percent")
    if count < 0 or (mode != "fixed" and not 0 <= number <= 100):
        raise SelectionError(f"spec.value: {value!r} is out of range for mode {mode}")
    return rng.sample(pods, min(count, len(pods)))


def select(spec, pods, node_labels=None, namespace_annotations=None, rng=random):
    """The pods `spec` (its selector, mode and value) picks from `pods` (API objects as dicts)."""
    selector = spec.get("selector") or {}
    matching = [p for p in pods if matches(p, selector, node_labels or {}, namespace_annotations or {})]
    return choose(matching, spec.get("mode"), spec.get("value"), rng)
