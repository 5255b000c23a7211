"""What the agent accepts in each RPC request, checked before anything runs. Pure: no kernel.

Every field of every request is checked; a problem is a SpecError (the field, the bad value
shortened, what is allowed), so a caller reads the same kind of message for a bad lease as
for a bad spec. InvalidRequest carries them all; its message stays small whatever was sent.
"""
import json
import logging
import math
import re

from kfault_agent.kernel.pods import RUNTIMES
from kfault_api import spec
from kfault_api.spec import SpecError

log = logging.getLogger(__name__)

MAX_SPEC_JSON_BYTES = 1 << 20     # a spec with thousands of peer addresses fits; the gRPC limit is 4 MiB
MAX_TARGETS = 1024                # targets of one request: the pods of one node
MAX_RENEWED = 4096                # experiments one Renew names: every experiment on one node
MAX_CONTAINERS = 64               # container ids of one pod
MAX_LOCAL_TARGET_CHARS = 4096     # PATH_MAX
LEASE_MIN_S, LEASE_MAX_S = 1.0, 3600.0
MAX_MESSAGE_BYTES = 4096          # gRPC percent-encodes a status message: 3x this stays under 16 KB

# Kubernetes object names (RFC 1123): a namespace is a label, a pod or resource name a subdomain.
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
UID = re.compile(r"[0-9A-Za-z-]{1,64}")
CONTAINER_ID = re.compile(rf"({'|'.join(map(re.escape, RUNTIMES))})://[0-9a-f]{{1,64}}")
# The local targets of tests and the CLI (topology.netns_of, topology.resolve_cgroup_target).
LOCAL_TARGET = re.compile(r"netns:[^/\x00-\x1f\x7f]{1,255}|(netns|cgroup):/[^\x00-\x1f\x7f]*|pid:[0-9]{1,10}")

EXPERIMENT_KEY_ALLOWED = ('"namespace/name" of the resource: a namespace of lowercase letters, digits and '
                          '"-" (at most 63), a name of lowercase letters, digits, "-" and "." (at most 253)')
LEASE_ALLOWED = f"0 (the agent's default) or seconds from {LEASE_MIN_S:g} to {LEASE_MAX_S:g}"


class InvalidRequest(ValueError):
    """A request the agent refuses as it is (INVALID_ARGUMENT); `errors` are SpecErrors."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__(message(self.errors))


def message(errors, limit=MAX_MESSAGE_BYTES):
    """The errors in one line, as many as fit in `limit` bytes, then how many more there are."""
    shown, size = [], 0
    for index, error in enumerate(errors):
        text = str(error)
        size += len(text.encode("utf-8", "surrogatepass")) + 2
        if shown and size > limit:
            return "; ".join(shown) + f"; and {len(errors) - index} more problems"
        shown.append(text)
    return bounded("; ".join(shown), limit)


def bounded(text, limit=MAX_MESSAGE_BYTES):
    """`text` cut to at most `limit` UTF-8 bytes (a status message or a target's error)."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[:limit - 40].decode("utf-8", "ignore") + f"... ({len(data)} bytes in all)"


# ---- one check per field ------------------------------------------------------------------

def experiment_key_errors(value, field="experiment"):
    namespace, slash, name = value.partition("/")
    if slash and DNS_LABEL.fullmatch(namespace) and len(name) <= 253 and DNS_SUBDOMAIN.fullmatch(name):
        return []
    return [SpecError(field, value, EXPERIMENT_KEY_ALLOWED)]


def lease_errors(value, field="lease_seconds"):
    if math.isfinite(value) and (value == 0 or LEASE_MIN_S <= value <= LEASE_MAX_S):
        return []
    return [SpecError(field, value, LEASE_ALLOWED)]


def kind_errors(value, field="kind"):
    return [] if value in spec.EXPERIMENTS else [SpecError(field, value, "one of " + ", ".join(spec.EXPERIMENTS))]


def pod_errors(pod, field):
    errors = []
    if not DNS_LABEL.fullmatch(pod.namespace):
        errors.append(SpecError(f"{field}.namespace", pod.namespace,
                                'a namespace: lowercase letters, digits and "-", at most 63'))
    if len(pod.name) > 253 or not DNS_SUBDOMAIN.fullmatch(pod.name):
        errors.append(SpecError(f"{field}.name", pod.name,
                                'a pod name: lowercase letters, digits, "-" and ".", at most 253'))
    if not UID.fullmatch(pod.uid):
        errors.append(SpecError(f"{field}.uid", pod.uid, 'the pod\'s metadata.uid: letters, digits and "-"'))
    if len(pod.container_ids) > MAX_CONTAINERS:
        errors.append(SpecError(f"{field}.container_ids", f"{len(pod.container_ids)} ids",
                                f"at most {MAX_CONTAINERS} container ids"))
    for index, container_id in enumerate(pod.container_ids[:MAX_CONTAINERS]):
        if not CONTAINER_ID.fullmatch(container_id):
            errors.append(SpecError(f"{field}.container_ids[{index}]", container_id,
                                    f"<runtime>://<hex id> with runtime one of {', '.join(RUNTIMES)} "
                                    "(containerStatuses[].containerID)"))
    return errors


def local_target_errors(value, field):
    if len(value) <= MAX_LOCAL_TARGET_CHARS and LOCAL_TARGET.fullmatch(value):
        return []
    return [SpecError(field, value, "netns:NAME, netns:/path/to/netns, cgroup:/absolute/cgroup/dir or pid:PID")]


def targets_errors(targets, field="targets"):
    if not 1 <= len(targets) <= MAX_TARGETS:
        return [SpecError(field, f"{len(targets)} targets", f"1 to {MAX_TARGETS} targets")]
    errors = []
    for index, target in enumerate(targets):
        which = target.WhichOneof("kind")
        if which == "pod":
            errors += pod_errors(target.pod, f"{field}[{index}].pod")
        elif which == "local":
            errors += local_target_errors(target.local, f"{field}[{index}].local")
        else:
            errors.append(SpecError(f"{field}[{index}]", None, "a pod or a local target"))
    return errors


def _not_a_number(constant):
    raise ValueError(f"{constant} is not a JSON number")


def _finite(text):
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is out of range for a number")
    return number


def spec_body(spec_json, field="spec_json"):
    """(the spec as a dict or None, errors): JSON of at most MAX_SPEC_JSON_BYTES, an object."""
    size = len(spec_json.encode("utf-8", "surrogatepass"))
    if size > MAX_SPEC_JSON_BYTES:
        return None, [SpecError(field, spec_json, f"a spec of at most {MAX_SPEC_JSON_BYTES} bytes")]
    try:
        body = json.loads(spec_json, parse_constant=_not_a_number, parse_float=_finite)
    except RecursionError:
        return None, [SpecError(field, spec_json, "JSON nested less deeply")]
    except ValueError as err:          # json.JSONDecodeError too
        return None, [SpecError(field, spec_json, f"the resource's spec as JSON ({err})")]
    if not isinstance(body, dict):
        return None, [SpecError(field, spec_json, "a JSON object: the resource's spec")]
    return body, []


def experiment_of(kind, key, body):
    """The experiment the agent runs, or the spec's problems (SpecErrors)."""
    namespace, _, name = key.partition("/")
    doc = {"apiVersion": spec.API_VERSION, "kind": kind, "metadata": {"name": name, "namespace": namespace},
           "spec": body}
    try:
        return spec.parse_experiment(doc), []
    except spec.InvalidSpec as err:
        return None, err.errors
    except Exception as err:  # noqa: BLE001 - a spec the parser can't handle is refused, and is a bug
        log.error("reading a %s spec failed: %s", kind, err, exc_info=True)
        return None, [SpecError("spec_json", json.dumps(body), f"a spec kfault can read (reading it failed: "
                                                                 f"{type(err).__name__})")]


# ---- one check per request ---------------------------------------------------------------

def apply_request(request):
    """ApplyRequest -> the experiment to place. Raises InvalidRequest naming every bad field."""
    errors = (experiment_key_errors(request.experiment) + kind_errors(request.kind)
              + targets_errors(request.targets) + lease_errors(request.lease_seconds))
    body, body_errors = spec_body(request.spec_json)
    errors += body_errors
    if errors:
        raise InvalidRequest(errors)
    experiment, errors = experiment_of(request.kind, request.experiment, body)
    if errors:
        raise InvalidRequest(errors)
    return experiment


def renew_request(request):
    """RenewRequest -> the set of experiment keys to renew: `experiment`, `experiments`, or both
    (`experiment` may be empty only when `experiments` names some)."""
    errors = lease_errors(request.lease_seconds)
    if request.experiment or not request.experiments:
        errors += experiment_key_errors(request.experiment)
    if len(request.experiments) > MAX_RENEWED:
        errors.append(SpecError("experiments", f"{len(request.experiments)} keys",
                                f"at most {MAX_RENEWED}: renew in several calls"))
    else:
        for i, key in enumerate(request.experiments):
            errors += experiment_key_errors(key, f"experiments[{i}]")
    if errors:
        raise InvalidRequest(errors)
    return {key for key in (request.experiment, *request.experiments) if key}


def experiment_request(request):
    """RevokeRequest, CountersRequest: an experiment key."""
    errors = experiment_key_errors(request.experiment)
    if errors:
        raise InvalidRequest(errors)
