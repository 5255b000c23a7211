"""Which pods an experiment selects: Chaos Mesh's PodSelectorSpec and modes, within the
namespaces it may reach. Pure.

The blast radius: a selector without `namespaces` (or `pods`) means the experiment's own
namespace, as in Chaos Mesh. Another namespace's pods need that namespace's consent (the
ACCEPT_ANNOTATION naming the experiment's namespace, or "*") or the administrator's
cluster-wide --allow-cross-namespace. kube-system and kfault-system are never selected unless
annotated ALLOW_ANNOTATION "true", whatever else says yes.
"""
import math
import random
from dataclasses import dataclass, field

PROTECTED_NAMESPACES = {"kube-system", "kfault-system"}
ALLOW_ANNOTATION = "experiment.kfault.dev/allow"    # "true" on a protected namespace lets experiments in
ACCEPT_ANNOTATION = "experiment.kfault.dev/accept-from"   # on a namespace: "team-a,team-b" or "*"


class SelectionError(ValueError):
    pass


class NamespaceNotPermitted(SelectionError):
    """A selector reaches a namespace the experiment may not touch: nothing is placed."""


@dataclass(frozen=True)
class Scope:
    """Where one experiment may select pods."""
    home: str                                          # the experiment's own namespace
    annotations: dict = field(default_factory=dict)    # namespace -> its annotations (the controller's watch)
    cross_namespace: bool = False                      # --allow-cross-namespace: no consent needed


def reached_namespaces(selector, home):
    """The namespaces a selector reaches: its `namespaces`, else its `pods` map's, else its experiment's."""
    return sorted(selector.get("namespaces") or (selector.get("pods") or {}).keys() or [home])


def _accepts(annotations, home):
    accepted = {name.strip() for name in annotations.get(ACCEPT_ANNOTATION, "").split(",")}
    return "*" in accepted or home in accepted


def refusal(namespace, scope):
    """Why an experiment in scope.home may not select pods in `namespace` (what to do about
    it), or None."""
    annotations = scope.annotations.get(namespace) or {}
    if namespace in PROTECTED_NAMESPACES and annotations.get(ALLOW_ANNOTATION) != "true":
        return (f"{namespace} is protected: annotate it {ALLOW_ANNOTATION}=true to let experiments in")
    if namespace == scope.home or scope.cross_namespace or _accepts(annotations, scope.home):
        return None
    return (f"{namespace} has not accepted experiments from {scope.home}: annotate namespace {namespace} "
            f"{ACCEPT_ANNOTATION}={scope.home} (or \"*\"), or ask an administrator for --allow-cross-namespace")


def _refused(selector, scope, where):
    return [f"{where}.selector: {reason}"
            for reason in (refusal(ns, scope) for ns in reached_namespaces(selector, scope.home)) if reason]


def refusals(spec, scope):
    """Why the spec's selector (and a NetworkChaos target's) may not reach a namespace, one
    message each naming the field; empty when it may go ahead."""
    target = spec.get("target")
    return _refused(spec.get("selector") or {}, scope, "spec") + \
        (_refused(target.get("selector") or {}, scope, "spec.target") if isinstance(target, dict) else [])


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


def _fields_match(pod, selectors, where):
    for name, value in (selectors or {}).items():
        negate = name.endswith("!")
        getter = FIELDS.get(name.rstrip("!"))
        if getter is None:
            raise SelectionError(f"{where}.selector.fieldSelectors: {name!r} is not supported; use one of "
                                 + ", ".join(FIELDS))
        if (getter(pod) == value) == negate:
            return False
    return True


def matches(pod, selector, node_labels, where="spec"):
    """Whether the pod matches every part of the selector but its namespaces (see select)."""
    meta = pod["metadata"]
    namespace, labels = meta["namespace"], meta.get("labels") or {}
    node = pod.get("spec", {}).get("nodeName")
    if selector.get("pods"):
        if meta["name"] not in selector["pods"].get(namespace, []):
            return False
    if not _labels_match(labels, selector.get("labelSelectors")):
        return False
    if not all(_expression_matches(labels, e) for e in selector.get("expressionSelectors", [])):
        return False
    if not _labels_match(meta.get("annotations") or {}, selector.get("annotationSelectors")):
        return False
    if not _fields_match(pod, selector.get("fieldSelectors"), where):
        return False
    if selector.get("podPhaseSelectors") and pod.get("status", {}).get("phase") not in selector["podPhaseSelectors"]:
        return False
    if selector.get("nodes") and node not in selector["nodes"]:
        return False
    if selector.get("nodeSelectors") and not _labels_match(node_labels.get(node, {}), selector["nodeSelectors"]):
        return False
    return True


def choose(pods, mode, value, rng=random, where="spec"):
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
        raise SelectionError(f"{where}.value: {value!r} is not a number; mode {mode} needs one") from None
    if mode == "fixed":
        count = int(number)
    elif mode == "fixed-percent":
        count = math.floor(len(pods) * number / 100)
    elif mode == "random-max-percent":
        count = rng.randint(0, math.floor(len(pods) * number / 100))
    else:
        raise SelectionError(f"{where}.mode: {mode!r} is not one of one, all, fixed, fixed-percent, random-max-percent")
    if count < 0 or (mode != "fixed" and not 0 <= number <= 100):
        raise SelectionError(f"{where}.value: {value!r} is out of range for mode {mode}")
    return rng.sample(pods, min(count, len(pods)))


def select(spec, pods, scope, node_labels=None, rng=random, where="spec"):
    """The pods `spec` (its selector, mode and value) picks from `pods` (API objects as dicts),
    in the namespaces its selector reaches. NamespaceNotPermitted if it reaches one `scope`
    does not allow: refused as a whole, so no part of an experiment runs wider or narrower
    than its author wrote."""
    selector = spec.get("selector") or {}
    refused = _refused(selector, scope, where)
    if refused:
        raise NamespaceNotPermitted("; ".join(refused))
    namespaces = set(reached_namespaces(selector, scope.home))
    matching = [p for p in pods if p["metadata"]["namespace"] in namespaces
                and matches(p, selector, node_labels or {}, where)]
    return choose(matching, spec.get("mode"), spec.get("value"), rng, where)
