"""Experiment documents -> validated experiment models. Pure: no kernel, no cluster.

Every problem becomes a SpecError that names the field, the bad value and what is allowed.
"""
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

import yaml

from kfault_api import expression, glob_dfa, layout, schema, stress_args, syscalls, units
from kfault_api.quoting import quoted

API_VERSION = "kfault.dev/v1alpha1"
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}


@dataclass(frozen=True)
class SpecError:
    path: str
    value: object
    allowed: str

    def __str__(self):
        shown = "missing" if self.value is None else quoted(self.value)
        return f"{self.path}: {shown} is not valid; use {self.allowed}"


class InvalidSpec(ValueError):
    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


@dataclass(frozen=True)
class Chance:
    """A random action: `percent` of packets, leaning `correlation` percent on the last draw."""
    percent: float
    correlation: float = 0.0


@dataclass(frozen=True)
class Reorder:
    """netem's reorder: every `gap`-th packet, with this chance, skips the delay."""
    chance: Chance
    gap: int = 1


@dataclass(frozen=True)
class Delay:
    latency_ns: int
    jitter_ns: int = 0
    correlation: float = 0.0
    reorder: Optional[Reorder] = None
    per: str = "packet"    # kfault's delay.per: "packet" (netem's), or "connection": only its opening packet


@dataclass(frozen=True)
class Bandwidth:
    rate_bytes_per_sec: int
    limit_bytes: int
    buffer_bytes: int
    peakrate_bytes_per_sec: int = 0    # tbf's peakrate and minburst, 0 = not set (docs/kinds/networkchaos.md)
    minburst_bytes: int = 0

    @property
    def burst_bytes(self):
        """How many bytes the pacer lets leave at once. tbf drains its `buffer` no faster than
        peakrate, through a bucket of minburst bytes; a pacer that lets at most minburst leave
        at once and then spaces packets at `rate` (< peakrate) never exceeds peakrate longer
        than tbf does. Chaos Mesh applies the two only together; so do we."""
        if self.peakrate_bytes_per_sec and self.minburst_bytes:
            return min(self.buffer_bytes, self.minburst_bytes)
        return self.buffer_bytes


@dataclass(frozen=True)
class ExternalTarget:
    """One entry of spec.externalTargets: an address or CIDR, or a host name the agent
    resolves; with a port, only packets to or from that port of the peer."""
    text: str                      # as written, for messages
    network: Optional[object] = None   # ip_network; None for a host name
    host: Optional[str] = None
    port: Optional[int] = None


@dataclass(frozen=True)
class Experiment:
    """What every kind has: a name, a namespace, an action, the document it came from."""
    name: str
    namespace: str
    action: str
    duration_ns: Optional[int] = field(default=None, kw_only=True)
    raw: dict = field(default_factory=dict, compare=False, repr=False, kw_only=True)
    notes: tuple = field(default=(), compare=False, kw_only=True)   # valid, but worth saying (kfault validate)

    @property
    def key(self):
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class NetworkChaos(Experiment):
    direction: str = "to"
    peers: tuple = ()              # ExternalTarget; empty = every peer
    device: Optional[str] = None
    protocol: int = 0              # IPPROTO_*, 0 = any
    peer_ports: Optional[tuple] = None   # (min, max)
    partition: bool = False
    partition_behavior: str = "drop"   # partition: drop, or reject (TCP gets a reset)
    loss: Optional[Chance] = None
    duplicate: Optional[Chance] = None
    corrupt: Optional[Chance] = None
    delay: Optional[Delay] = None
    bandwidth: Optional[Bandwidth] = None

    @property
    def directions(self):
        return ("to", "from") if self.direction == "both" else (self.direction,)

    @property
    def needs_edt(self):
        """Delay and bandwidth hold packets in sch_fq (earliest departure time)."""
        return self.delay is not None or self.bandwidth is not None


@dataclass(frozen=True)
class AttrOverride:
    """attrOverride's spec.attr: the stat fields to report instead of the file's (None: keep)."""
    ino: Optional[int] = None
    size: Optional[int] = None
    blocks: Optional[int] = None
    atime: Optional[tuple] = None      # (sec, nsec)
    mtime: Optional[tuple] = None
    ctime: Optional[tuple] = None
    kind: Optional[str] = None         # a key of schema.FILE_KINDS
    perm: Optional[int] = None         # permission bits, 0..0o7777
    nlink: Optional[int] = None
    uid: Optional[int] = None
    gid: Optional[int] = None
    rdev: Optional[int] = None


@dataclass(frozen=True)
class Mistake:
    """mistake's spec.mistake: 1..max_occurrences runs of 1..max_length wrong bytes per call."""
    filling: str                       # zero | random
    max_occurrences: int
    max_length: int


@dataclass(frozen=True)
class IOChaos(Experiment):
    # action: latency | fault | attrOverride | mistake
    path: str                      # an absolute glob (glob_dfa)
    methods: tuple                 # names from schema.IO_METHODS; (schema.ATTR_METHOD,) for attrOverride
    percent: int = 100
    delay_ns: int = 0
    errno: int = 0
    volume_path: str = "/"
    container_names: tuple = ()
    attr: Optional[AttrOverride] = None
    mistake: Optional[Mistake] = None


@dataclass(frozen=True)
class SyscallChaos(Experiment):
    # action: fault | latency
    syscalls: tuple                # names of kfault_api.syscalls.X86_64
    percent: int = 100
    delay_ns: int = 0
    errno: int = 0
    container_names: tuple = ()


@dataclass(frozen=True)
class PodChaos(Experiment):
    # action: pod-kill | pod-failure | container-kill
    container_names: tuple = ()
    grace_period_s: Optional[int] = None


@dataclass(frozen=True)
class CPUStress:
    """CPU workers holding `load` percent: of the container's cpu.max over them all, or of one
    CPU each where the container has no limit."""
    workers: int
    load: int = 100


@dataclass(frozen=True)
class MemoryStress:
    """Memory held resident, split over the workers: bytes, or a percent of the container's
    memory.max (of the node's memory without one), which the agent turns into bytes."""
    workers: int
    size_bytes: Optional[int] = None
    size_percent: Optional[float] = None
    oom_score_adj: int = 0


@dataclass(frozen=True)
class DiskStress:
    """Workers writing (and syncing) a file inside the container, `bytes` each before they
    start over."""
    workers: int
    bytes: int = 1 << 30          # stress-ng's --hdd-bytes default


@dataclass(frozen=True)
class StressChaos(Experiment):
    # action: the stressors it runs, e.g. "cpu", "memory", "cpu+memory", "cpu+hdd"
    container_names: tuple = ()
    cpu: Optional[CPUStress] = None
    memory: Optional[MemoryStress] = None
    hdd: Optional[DiskStress] = None


@dataclass(frozen=True)
class DNSChaos(Experiment):
    # action: error | random
    patterns: tuple = ()               # name globs; empty = every name
    error_response: str = "SERVFAIL"   # error: schema.DNS_ERROR_RESPONSES
    container_names: tuple = ()


@dataclass(frozen=True)
class HTTPChaos(Experiment):
    # action: what it does, "abort", "delay", "replace" or "delay+replace" (Chaos Mesh's spec
    # has no action field: its actions are fields of their own)
    target: str = "Request"            # Request | Response
    port: int = 80
    path: Optional[str] = None         # a glob; None = every path
    method: Optional[str] = None
    code: Optional[int] = None         # Response: the status code selected
    abort: bool = False
    delay_ns: int = 0
    replace_code: Optional[int] = None
    server_name: Optional[str] = None  # kfault's serverName: TLS connections by their ClientHello's name (a glob)


@dataclass(frozen=True)
class Schedule:
    """Chaos Mesh 2.x's Schedule: at each time of `schedule`, the controller creates `template`
    (an experiment of `type`) as a resource the Schedule owns."""
    name: str
    namespace: str
    schedule: str                  # cron, macro or @every: the controller reads it (schedule.py)
    type: str                      # the kind of template
    template: Experiment           # the embedded spec, as its kind parses it
    history_limit: int = 1
    concurrency_policy: str = "Forbid"
    starting_deadline_s: Optional[int] = None
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self):
        return f"{self.namespace}/{self.name}"

    @property
    def action(self):
        """What each run does: its template's action."""
        return self.template.action

    @property
    def notes(self):
        """Its template's notes, each naming the field where the Schedule holds it."""
        key = EXPERIMENTS[self.type].schedule_key
        return tuple(note.replace("spec.", f"spec.{key}.", 1) for note in self.template.notes)


def load_documents(path):
    """Read every YAML document of a file (a file may hold several, separated by ---)."""
    try:
        with open(path, encoding="utf-8") as handle:
            docs = [d for d in yaml.safe_load_all(handle) if d is not None]
    except OSError as err:
        raise InvalidSpec([SpecError("file", path, f"a readable file ({err.strerror})")]) from None
    except yaml.YAMLError as err:
        raise InvalidSpec([SpecError("file", path, f"valid YAML ({err})".replace("\n", " "))]) from None
    if not docs:
        raise InvalidSpec([SpecError("file", path, "a file with at least one experiment document")])
    return docs


def parse_experiment(doc, for_node=True):
    """A document -> NetworkChaos, IOChaos or PodChaos (or a Schedule of one, with for_node=False).
    Raises InvalidSpec listing every problem found. for_node=False checks a resource as users
    write it, whose spec.target pods, spec.scheduler and Schedules the controller resolves and
    repeats; a node (the agent, the local runner) runs only what the controller made of them:
    one window, peers as addresses."""
    errors = []
    if not isinstance(doc, dict):
        raise InvalidSpec([SpecError("document", doc, "a mapping with apiVersion, kind, metadata and spec")])
    for key in doc:
        if key not in ("apiVersion", "kind", "metadata", "spec", "status"):
            errors.append(SpecError(key, doc[key], "only apiVersion, kind, metadata and spec at the top"))
    if doc.get("apiVersion") != API_VERSION:
        hint = " (change chaos-mesh.org/v1alpha1 to it)" if "chaos-mesh" in str(doc.get("apiVersion")) else ""
        errors.append(SpecError("apiVersion", doc.get("apiVersion"), f"{API_VERSION!r}{hint}"))
    kind = KINDS.get(doc.get("kind"))
    if kind is None:
        errors.append(SpecError("kind", doc.get("kind"), "one of " + ", ".join(KINDS)))
        raise InvalidSpec(errors)
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str) or not metadata["name"]:
        errors.append(SpecError("metadata.name", metadata.get("name") if isinstance(metadata, dict) else metadata,
                                "a name for the experiment"))
        metadata = {}
    spec = doc.get("spec")
    errors += [SpecError(*e) for e in schema.validate_against_schema(spec, kind.schema, "spec")]
    if errors:
        raise InvalidSpec(errors)
    if for_node and not kind.is_experiment:
        errors.append(SpecError("kind", kind.name, "an experiment kind here: a node runs one experiment; kubectl "
                                f"apply the {kind.name} (the controller repeats it), or run its embedded spec"))
        raise InvalidSpec(errors)
    if for_node and "scheduler" in spec:
        errors.append(SpecError("spec.scheduler", spec["scheduler"], "no scheduler here: a node runs one window; "
                                "kubectl apply the resource for repeated windows, or remove spec.scheduler"))
    if for_node and "remoteCluster" in spec:
        errors.append(SpecError("spec.remoteCluster", spec["remoteCluster"], "no remoteCluster here: kfault "
                                "injects in the cluster it runs in; run it there without spec.remoteCluster"))
    try:
        experiment = kind.parse(metadata, spec, doc, for_node)
    except InvalidSpec as err:
        raise InvalidSpec(errors + err.errors) from None
    if errors:
        raise InvalidSpec(errors)
    return experiment


class _Problems:
    """The problems found in one document, collected so that all are reported at once."""

    def __init__(self):
        self.errors = []

    def add(self, path, value, allowed):
        self.errors.append(SpecError(path, value, allowed))

    def parse(self, path, value, parse):
        """parse(value), or None with the problem noted when it raises ValueError."""
        try:
            return parse(value)
        except ValueError as err:
            self.add(path, value, str(err))
            return None

    def raise_any(self):
        if self.errors:
            raise InvalidSpec(self.errors)


def _duration(spec, problems):
    """spec.duration in ns, or None: every kind's experiment may end by itself."""
    if "duration" not in spec:
        return None
    duration = problems.parse("spec.duration", spec["duration"], units.parse_duration_ns)
    if duration == 0:
        problems.add("spec.duration", spec["duration"], "a duration above 0, or no duration")
    return duration


def _pod_chaos(metadata, spec, doc, for_node):
    problems = _Problems()
    action = spec["action"]
    if action == "container-kill" and not spec.get("containerNames"):
        problems.add("spec.containerNames", None, "the containers to kill: container-kill needs them")
    duration = _duration(spec, problems)
    problems.raise_any()
    return PodChaos(name=metadata["name"], namespace=metadata.get("namespace", "default"), action=action,
                    container_names=tuple(spec.get("containerNames", ())), grace_period_s=spec.get("gracePeriod"),
                    duration_ns=duration, raw=doc)


def _stress_chaos(metadata, spec, doc, for_node):
    """StressChaos: spec.stressors, or spec.stressngStressors (which wins, as in Chaos Mesh)."""
    problems, notes = _Problems(), []
    stressors = spec.get("stressors") or {}
    if "stressngStressors" in spec:
        if stressors:
            notes.append("spec.stressors is ignored: spec.stressngStressors wins (as in Chaos Mesh)")
        stressors = {}
        argv = spec["stressngStressors"].split()
        args = _stress_ng(argv, "spec.stressngStressors", problems, notes)
        if not (args.cpu_workers or args.vm_workers or args.hdd_workers):
            problems.add("spec.stressngStressors", spec["stressngStressors"],
                         "at least one of --cpu N, --vm N, --hdd N")
    elif not (stressors.get("cpu") or stressors.get("memory")):
        problems.add("spec.stressors", spec.get("stressors"), "at least one of spec.stressors.cpu and "
                     "spec.stressors.memory, e.g. {cpu: {workers: 1, load: 50}} (or spec.stressngStressors)")
        problems.raise_any()
    cpu_spec, memory_spec = stressors.get("cpu"), stressors.get("memory")
    if cpu_spec:
        args = _stress_ng(stress_args.tokens(cpu_spec.get("options", ())), "spec.stressors.cpu.options",
                          problems, notes)
        cpu_workers, cpu_load = args.cpu_workers or cpu_spec["workers"], cpu_spec.get("load", 100)
        if args.cpu_load is not None:
            cpu_load = args.cpu_load
    elif "stressngStressors" in spec:
        cpu_workers, cpu_load = args.cpu_workers, 100 if args.cpu_load is None else args.cpu_load
    else:
        args, cpu_workers, cpu_load = stress_args.StressArgs(), None, 100
    memory = None
    if memory_spec:
        for option in memory_spec.get("options", ()):
            problems.add("spec.stressors.memory.options", option, "no options: Chaos Mesh passes them to memStress, "
                         "whose --time grows the memory gradually; kfault holds the size at once. Remove it")
        memory = _memory_size(memory_spec.get("size"), "spec.stressors.memory.size", memory_spec["workers"],
                              memory_spec.get("oomScoreAdj", 0), problems)
    elif args.vm_workers:
        memory = _memory_size(args.vm_bytes, "spec.stressngStressors", args.vm_workers, 0, problems)
    duration = _duration(spec, problems)
    if args.timeout_ns and duration:
        notes.append("--timeout is overridden by spec.duration")
    problems.raise_any()
    cpu = CPUStress(cpu_workers, cpu_load) if cpu_workers else None
    hdd = DiskStress(args.hdd_workers, args.hdd_bytes or DiskStress.bytes) if args.hdd_workers else None
    action = "+".join(name for name, part in (("cpu", cpu), ("memory", memory), ("hdd", hdd)) if part)
    return StressChaos(name=metadata["name"], namespace=metadata.get("namespace", "default"), action=action,
                       container_names=tuple(spec.get("containerNames", ())), cpu=cpu, memory=memory, hdd=hdd,
                       duration_ns=duration or args.timeout_ns, raw=doc, notes=tuple(notes))


def _stress_ng(argv, path, problems, notes):
    """stress-ng's arguments -> StressArgs; each refused one is a problem naming it."""
    args, refused = stress_args.parse(argv)
    for option, value, allowed in refused:
        problems.add(path, value if value is not None else option, allowed)
    notes.extend(f"{path}: {option} is ignored: {why}" for option, why in args.ignored)
    return args


def _memory_size(size, path, workers, oom_score_adj, problems):
    """A memory size as memStress ("256MB", "1GiB", "50%") or stress-ng ("256m") writes it."""
    if not size:
        problems.add(path, size, "a size such as \"256MB\", \"1GiB\" or \"50%\" (of the container's memory.max): "
                     "without one Chaos Mesh fills all memory, which kfault does not guess")
        return None
    if size.endswith("%"):
        percent = problems.parse(path, size, lambda text: units.parse_percent(text[:-1]))
        if percent == 0:
            problems.add(path, size, "a percent above 0")
        return MemoryStress(workers, size_percent=percent, oom_score_adj=oom_score_adj)
    parse = units.parse_stress_ng_size if path == "spec.stressngStressors" else units.parse_size_bytes
    size_bytes = problems.parse(path, size, parse)
    if size_bytes == 0:
        problems.add(path, size, "a size above 0")
    return MemoryStress(workers, size_bytes=size_bytes, oom_score_adj=oom_score_adj)


def _dns_chaos(metadata, spec, doc, for_node):
    problems = _Problems()
    action = spec["action"]
    patterns = tuple(spec.get("patterns") or ())
    for index, pattern in enumerate(patterns):
        problems.parse(f"spec.patterns[{index}]", pattern,
                       lambda p: glob_dfa.compile_name_globs([p], layout.IO_ACCEPT_STATE))
    if patterns:
        problems.parse("spec.patterns", list(patterns),
                       lambda p: glob_dfa.compile_name_globs(p, layout.IO_ACCEPT_STATE))
    response = spec.get("errorResponse")
    if response and action != "error":
        problems.add("spec.errorResponse", response, "only with action error: random rewrites answers instead")
    duration = _duration(spec, problems)
    problems.raise_any()
    return DNSChaos(name=metadata["name"], namespace=metadata.get("namespace", "default"), action=action,
                    patterns=patterns, error_response=response or "SERVFAIL",
                    container_names=tuple(spec.get("containerNames", ())), duration_ns=duration, raw=doc)


# What a program on the pod's interface cannot do to an HTTP stream, by field: each would change
# the stream's length (every later byte's sequence number), which only a proxy can; or read
# what TLS encrypts.
HTTP_REFUSED = {
    "patch": "a patch changes the stream's length, which needs a proxy; kfault's programs rewrite only in place",
    "replace.body": "a new body changes the stream's length, which needs a proxy",
    "replace.headers": "new headers change the stream's length, which needs a proxy",
    "replace.queries": "new queries change the stream's length, which needs a proxy",
    "replace.path": "a new path changes the request's length, which needs a proxy",
    "replace.method": "a new method changes the request's length, which needs a proxy",
    "tls": "certificates are for a proxy that decrypts; kfault decrypts nothing (HTTPS by server name: serverName)",
    "request_headers": "kfault's programs match the request line only, not yet its headers",
    "response_headers": "kfault's programs match the status line only, not yet its headers",
}


def _http_chaos(metadata, spec, doc, for_node):
    problems = _Problems()
    target = spec["target"]
    for name, why in HTTP_REFUSED.items():
        outer, _, inner = name.partition(".")
        value = spec.get(outer)
        if inner:
            value = value.get(inner) if isinstance(value, dict) else None
        if value:
            problems.add(f"spec.{name}", value, f"no {name}: kfault refuses it, {why}")
    replace_code = (spec.get("replace") or {}).get("code")
    path = spec.get("path")
    if path is not None:
        problems.parse("spec.path", path, lambda p: glob_dfa.compile_http_path_glob(p, layout.IO_ACCEPT_STATE))
    method = spec.get("method")
    if method is not None and not (0 < len(method) <= layout.HTTP_METHOD_MAX and method.isascii()
                                   and method.isalpha() and method.isupper()):
        problems.add("spec.method", method, f"an HTTP method such as GET, in capitals, up to "
                                            f"{layout.HTTP_METHOD_MAX} letters")
    delay = 0
    if "delay" in spec:
        delay = problems.parse("spec.delay", spec["delay"], units.parse_duration_ns) or 0
        if not delay:
            problems.add("spec.delay", spec["delay"], "a delay above 0")
    if target == "Request":
        for name, value in (("code", spec.get("code")), ("replace.code", replace_code)):
            if value is not None:
                problems.add(f"spec.{name}", value, "only with target Response: a request has no status code")
    abort = bool(spec.get("abort"))
    actions = [name for name, on in (("abort", abort), ("delay", delay), ("replace", replace_code is not None)) if on]
    if not actions and not problems.errors:
        problems.add("spec", None, "an action: abort, delay or replace.code")
    if abort and len(actions) > 1:
        problems.add("spec.abort", True, "alone: a reset connection can't also be delayed or rewritten")
    server_name = _http_server_name(spec, problems)
    duration = _duration(spec, problems)
    problems.raise_any()
    return HTTPChaos(name=metadata["name"], namespace=metadata.get("namespace", "default"),
                     action="+".join(actions), target=target, port=spec["port"], path=path, method=method,
                     code=spec.get("code"), abort=abort, delay_ns=delay, replace_code=replace_code,
                     server_name=server_name, duration_ns=duration, raw=doc)


# What selects a plain HTTP request or response, and so can't go with serverName: TLS encrypts it.
HTTP_NOT_WITH_SERVER_NAME = ("path", "method", "code", "replace.code")


def _http_server_name(spec, problems):
    """spec.serverName, kfault's: the TLS connections whose ClientHello asks for a name its glob
    matches (as DNSChaos's patterns match, case-insensitively), aborted or delayed without a
    certificate. None when not given."""
    name = spec.get("serverName")
    if name is None:
        return None
    problems.parse("spec.serverName", name, lambda n: glob_dfa.compile_name_globs([n], layout.IO_ACCEPT_STATE))
    if spec["target"] != "Request":
        problems.add("spec.target", spec["target"], "Request with serverName: a TLS response is encrypted, its "
                                                    "status can't be read (a Request delay holds the server's first "
                                                    "reply, the handshake's)")
    for selector in HTTP_NOT_WITH_SERVER_NAME:
        outer, _, inner = selector.partition(".")
        value = spec.get(outer)
        if inner:
            value = value.get(inner) if isinstance(value, dict) else None
        if value is not None:
            problems.add(f"spec.{selector}", value, "none with serverName: TLS encrypts the request line and the "
                                                    "status line; on HTTPS only the ClientHello's server name selects")
    return name


def _io_chaos(metadata, spec, doc, for_node):
    problems = _Problems()
    action = spec["action"]
    volume = spec["volumePath"].rstrip("/") or "/"
    path = spec.get("path") or (volume.rstrip("/") + "/**")
    try:
        glob_dfa.compile_glob(path, layout.IO_ACCEPT_STATE)
    except glob_dfa.GlobError as err:
        problems.add("spec.path", spec.get("path"), str(err))
    delay = 0
    if action == "latency":
        if "delay" not in spec:
            problems.add("spec.delay", None, "a delay such as \"100ms\": action latency needs it")
        else:
            delay = problems.parse("spec.delay", spec["delay"], units.parse_duration_ns)
            if delay == 0:
                problems.add("spec.delay", spec["delay"], "a delay above 0")
    if action == "fault" and "errno" not in spec:
        problems.add("spec.errno", None, "an errno such as 5 (EIO): action fault needs it")
    for other, needs in (("delay", "latency"), ("errno", "fault"), ("attr", "attrOverride"), ("mistake", "mistake")):
        if other in spec and action != needs:
            problems.add(f"spec.{other}", spec[other], f"no {other} for action {action} (it is for "
                         f"action {needs}): remove it")
    notes = []
    methods = _io_methods(action, spec, problems, notes)
    attr = _attr_override(spec, problems) if action == "attrOverride" else None
    mistake = _mistake(spec, problems) if action == "mistake" else None
    duration = _duration(spec, problems)
    problems.raise_any()
    return IOChaos(
        name=metadata["name"], namespace=metadata.get("namespace", "default"), action=action, path=path,
        methods=methods, percent=spec.get("percent", 100),
        delay_ns=delay or 0, errno=spec.get("errno", 0), volume_path=volume,
        container_names=tuple(spec.get("containerNames", ())), duration_ns=duration, raw=doc,
        attr=attr, mistake=mistake, notes=tuple(notes))


def _io_methods(action, spec, problems, notes):
    """The methods an IOChaos acts on. attrOverride: the stat family, which spec.methods can't
    name; mistake: read and write, the calls that carry data; the others: any, all by default."""
    given = tuple(dict.fromkeys(spec.get("methods") or ()))
    if action == "attrOverride":
        if given:
            problems.add("spec.methods", spec["methods"], "no methods for action attrOverride: it rewrites what "
                         f"{', '.join(schema.IO_STAT_SYSCALLS)} report; remove spec.methods")
        return (schema.ATTR_METHOD,)
    if action == "mistake":
        others = [m for m in given if m not in schema.MISTAKE_METHODS]
        if others:
            problems.add("spec.methods", spec["methods"], f"read and/or write for action mistake (it changes the "
                         f"data a call carries; {', '.join(others)} carry none), or no methods for both")
        return given or schema.MISTAKE_METHODS
    methods = given or tuple(schema.IO_METHODS)
    if action == "fault":
        notes.extend(f"spec.methods: a fault on {m} fails it after it ran ({schema.FAILED_AFTER_CALL[m]})"
                     for m in methods if m in schema.FAILED_AFTER_CALL)
    return methods


def _attr_override(spec, problems):
    """spec.attr -> AttrOverride; the schema has checked each field's type and range."""
    attr = spec.get("attr")
    if not attr:
        problems.add("spec.attr", attr, "at least one of " + ", ".join(schema.ATTR_OVERRIDE["properties"]) +
                     ", e.g. attr: {perm: 292}: action attrOverride needs it")
        return None
    times = {name: (attr[name]["sec"], attr[name].get("nsec", 0)) for name in ("atime", "mtime", "ctime")
             if name in attr}
    return AttrOverride(**{name: attr[name] for name in attr if name not in times}, **times)


def _mistake(spec, problems):
    """spec.mistake -> Mistake; the schema has checked its fields."""
    mistake = spec.get("mistake")
    if not mistake:
        problems.add("spec.mistake", mistake, "a mistake such as {filling: zero, maxOccurrences: 1, maxLength: 10}: "
                     "action mistake needs it")
        return None
    return Mistake(mistake.get("filling", "zero"), mistake["maxOccurrences"], mistake["maxLength"])


def _syscall_chaos(metadata, spec, doc, for_node):
    problems = _Problems()
    action = spec["action"]
    delay = 0
    if action == "latency":
        if "delay" not in spec:
            problems.add("spec.delay", None, "a delay such as \"100ms\": action latency needs it")
        else:
            delay = problems.parse("spec.delay", spec["delay"], units.parse_duration_ns)
            if delay == 0:
                problems.add("spec.delay", spec["delay"], "a delay above 0")
    if action == "fault" and "errno" not in spec:
        problems.add("spec.errno", None, "an errno such as 111 (ECONNREFUSED): action fault needs it")
    for other, needs in (("delay", "latency"), ("errno", "fault")):
        if other in spec and action != needs:
            problems.add(f"spec.{other}", spec[other], f"no {other} for action {action} (it is for "
                         f"action {needs}): remove it")
    names = tuple(dict.fromkeys(spec["syscalls"]))
    if not names:
        problems.add("spec.syscalls", spec["syscalls"], "at least one system call name, such as [connect]")
    for index, name in enumerate(spec["syscalls"]):
        why = _syscall_refusal(action, name)
        if why:
            problems.add(f"spec.syscalls[{index}]", name, why)
    duration = _duration(spec, problems)
    problems.raise_any()
    return SyscallChaos(name=metadata["name"], namespace=metadata.get("namespace", "default"), action=action,
                        syscalls=names, percent=spec.get("percent", 100), delay_ns=delay or 0,
                        errno=spec.get("errno", 0), container_names=tuple(spec.get("containerNames", ())),
                        duration_ns=duration, raw=doc)


def _syscall_refusal(action, name):
    """Why SyscallChaos's `action` can't act on syscall `name` (what to use instead), or None."""
    if name not in syscalls.X86_64:
        return "a system call name of x86_64 as the kernel has it (e.g. connect, clone3, mmap, getrandom)"
    if action == "latency":
        if name in syscalls.VDSO:
            return (f"a syscall; {name} is answered by the vDSO in user space on x86_64, with no system call "
                    "to hold")
        if name in syscalls.NEVER_RETURN:
            return f"a syscall that returns; {name} never returns, so there is no return to hold"
        return None
    if name in syscalls.FAULT_HOOKS:
        return None
    if name in schema.IO_METHODS_SYSCALLS:
        why = syscalls.FILE_IO_HINT
    else:
        why = syscalls.FAULT_REFUSED.get(name, syscalls.NO_HOOK)
    return (f"a syscall that can fail before it takes effect ({', '.join(syscalls.FAULT_HOOKS)}); "
            f"{name}: {why}")


# The action blocks of NetworkChaos, and which of them each action takes.
NETWORK_BLOCKS = ("loss", "duplicate", "corrupt", "delay", "bandwidth")
NETEM_BLOCKS = {"loss", "duplicate", "corrupt", "delay"}


def _network_chaos(metadata, spec, doc, for_node):
    problems = _Problems()
    action = spec["action"]
    _check_action_blocks(action, spec, problems)
    _check_partition_behavior(action, spec, problems)
    chances = {name: _chance(spec, name, problems) for name in ("loss", "duplicate", "corrupt")}
    notes = []
    delay = _delay(spec, problems, notes)
    bandwidth = _bandwidth(spec, problems, notes)
    peer_ports = _peer_ports(spec, problems)
    peers = _peers(spec, for_node, peer_ports, problems)
    duration = _duration(spec, problems)
    problems.raise_any()
    return NetworkChaos(
        name=metadata["name"], namespace=metadata.get("namespace", "default"), action=action,
        direction=spec.get("direction", "to"), peers=peers, device=spec.get("device"),
        duration_ns=duration, protocol=PROTOCOLS.get(spec.get("protocol"), 0), peer_ports=peer_ports,
        partition=action == "partition", partition_behavior=spec.get("partitionBehavior", "drop"), delay=delay,
        bandwidth=bandwidth, raw=doc, notes=tuple(notes), **chances)


def _check_action_blocks(action, spec, problems):
    """Each action takes its own block (netem takes several, partition none), and no other."""
    wanted = {"netem": NETEM_BLOCKS, "partition": set()}.get(action, {action})
    for block in NETWORK_BLOCKS:
        if block in spec and block not in wanted:
            problems.add(f"spec.{block}", spec[block], f"no spec.{block} with action {action!r}"
                         + (" (use action netem to combine faults)" if action != "netem" else ""))
    if action == "netem" and not (wanted & spec.keys()):
        problems.add("spec.action", action, "netem together with at least one of spec.delay, "
                     "spec.loss, spec.duplicate, spec.corrupt")
    for block in sorted(wanted):
        if action != "netem" and block not in spec:
            problems.add(f"spec.{block}", None, f"a spec.{block} block: action {action!r} needs it")


def _check_partition_behavior(action, spec, problems):
    """spec.partitionBehavior says how a partition discards packets: other actions have none.
    (No default in the schema either: the API server would write it into every NetworkChaos.)"""
    if "partitionBehavior" in spec and action != "partition":
        problems.add("spec.partitionBehavior", spec["partitionBehavior"],
                     f"no spec.partitionBehavior with action {action!r} (it is for action partition): remove it")


def _chance(spec, block, problems):
    if block not in spec:
        return None
    body = spec[block]
    percent = problems.parse(f"spec.{block}.{block}", body[block], units.parse_percent)
    correlation = problems.parse(f"spec.{block}.correlation", body.get("correlation", "0"), units.parse_percent)
    return Chance(percent or 0.0, correlation or 0.0)


# What kfault's spec.delay.per: connection delays, for messages and the docs.
PER_CONNECTION = "a connection's opening packet: a TCP SYN (or SYN-ACK), a UDP flow's first datagram"


def _delay(spec, problems, notes):
    if "delay" not in spec:
        return None
    body = spec["delay"]
    per = body.get("per", "packet")
    if per == "connection":
        _check_per_connection(spec, body, problems, notes)
    latency = problems.parse("spec.delay.latency", body["latency"], units.parse_duration_ns)
    jitter = problems.parse("spec.delay.jitter", body.get("jitter", "0"), units.parse_duration_ns)
    correlation = problems.parse("spec.delay.correlation", body.get("correlation", "0"), units.parse_percent)
    reorder = None
    if "reorder" in body:
        percent = problems.parse("spec.delay.reorder.reorder", body["reorder"]["reorder"], units.parse_percent)
        reorder_correlation = problems.parse("spec.delay.reorder.correlation",
                                             body["reorder"].get("correlation", "0"), units.parse_percent)
        if percent:
            # tc: a reorder without a gap reorders with gap 1 (any packet may skip).
            reorder = Reorder(Chance(percent, reorder_correlation or 0.0), body["reorder"].get("gap") or 1)
    return Delay(latency or 0, jitter or 0, correlation or 0.0, reorder, per)


def _check_per_connection(spec, body, problems, notes):
    """spec.delay.per: connection holds only a connection's opening packet: what needs every packet, or
    packets without connections, can't go with it."""
    if "reorder" in body:
        problems.add("spec.delay.reorder", body["reorder"], "no spec.delay.reorder with spec.delay.per connection "
                     "(only a connection's opening packet is held: there is nothing to overtake)")
    if spec.get("protocol") in ("icmp", "icmpv6"):
        problems.add("spec.protocol", spec["protocol"], "tcp, udp or none with spec.delay.per connection "
                     f"(it delays {PER_CONNECTION}; ICMP has no connections)")
    if spec.get("action") == "netem" and (NETEM_BLOCKS - {"delay"}) & spec.keys():
        notes.append("spec.delay.per connection delays only a connection's opening packet; the other netem "
                     "faults still act on every packet")
    if spec.get("direction") == "both":
        notes.append("spec.delay.per connection with direction both delays the opening packet each way: a TCP "
                     "handshake (SYN in, SYN-ACK out, or the reverse) takes twice spec.delay.latency longer")


def _bandwidth(spec, problems, notes):
    if "bandwidth" not in spec:
        return None
    body = spec["bandwidth"]
    rate = problems.parse("spec.bandwidth.rate", body["rate"], units.parse_rate_bytes_per_sec)
    peakrate, minburst = body.get("peakrate") or 0, body.get("minburst") or 0
    if peakrate and rate and peakrate <= rate:
        problems.add("spec.bandwidth.peakrate", peakrate, f"bytes per second above spec.bandwidth.rate ({rate}), "
                     "or 0: tbf refuses a peak at or below the rate")
    if bool(peakrate) != bool(minburst):
        given, missing = ("peakrate", "minburst") if peakrate else ("minburst", "peakrate")
        notes.append(f"spec.bandwidth.{given} is ignored without spec.bandwidth.{missing} (as Chaos Mesh does)")
    if not rate:
        return None
    return Bandwidth(rate, body.get("limit", 0), body.get("buffer", max(1514, rate // 100)), peakrate, minburst)


# A host name as DNS allows it (RFC 1123 labels), optionally fully qualified.
_HOST_NAME = re.compile(r"^(?=.{1,253}\.?$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                        r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
EXTERNAL_TARGET_FORMS = ("an IP address, a CIDR or a host name, each optionally with the peer's port: 10.0.0.7, "
                         "10.0.0.0/24, db.example.com, db.example.com:5432, 10.0.0.0/24:53, [2001:db8::1]:443")


def parse_external_target(text):
    """`text` -> ExternalTarget. Raises ValueError saying what is allowed."""
    address, port = text, None
    if text.startswith("["):      # [IPv6 address or CIDR]:port
        inside, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(EXTERNAL_TARGET_FORMS)
        address, port = inside, rest[1:] if rest else None
    else:
        try:
            return ExternalTarget(text, network=ipaddress.ip_network(text, strict=False))
        except ValueError:
            pass
        if text.count(":") == 1:
            address, port = text.split(":")
    if port is not None:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"a port within 1-65535 after the colon; {EXTERNAL_TARGET_FORMS}")
        port = int(port)
    try:
        return ExternalTarget(text, network=ipaddress.ip_network(address, strict=False), port=port)
    except ValueError:
        pass
    if "[" in text or not _HOST_NAME.match(address) or address.replace(".", "").isdigit():
        raise ValueError(EXTERNAL_TARGET_FORMS)
    return ExternalTarget(text, host=address.rstrip(".").lower(), port=port)


def _peers(spec, for_node, peer_ports, problems):
    peers = []
    for index, text in enumerate(spec.get("externalTargets", [])):
        peer = problems.parse(f"spec.externalTargets[{index}]", text, parse_external_target)
        if peer and peer.port and peer_ports and not peer_ports[0] <= peer.port <= peer_ports[1]:
            problems.add(f"spec.externalTargets[{index}]", text, f"a port within spec.peerPorts "
                         f"({spec['peerPorts']}), or no port: both limit the rule, so nothing would match")
        if peer and peer.port and spec.get("protocol") in ("icmp", "icmpv6"):
            problems.add(f"spec.externalTargets[{index}]", text, f"no port with spec.protocol "
                         f"{spec['protocol']} (it has no ports), or protocol tcp or udp")
        if peer:
            peers.append(peer)
    if "target" in spec and for_node:
        problems.add("spec.target", spec["target"], "spec.externalTargets here: pod selectors in "
                     "spec.target are resolved by the kfault controller, not the local runner")
    return tuple(peers)


def _peer_ports(spec, problems):
    if "peerPorts" not in spec:
        return None
    low, _, high = spec["peerPorts"].partition("-")
    low, high = int(low), int(high or low)
    if not 1 <= low <= high <= 65535:
        problems.add("spec.peerPorts", spec["peerPorts"], "a port or range within 1-65535, low first, "
                     "such as \"8000-8080\"")
    if spec.get("protocol") not in ("tcp", "udp"):
        problems.add("spec.protocol", spec.get("protocol"), "tcp or udp: spec.peerPorts needs a protocol with ports")
    return (low, high)


def _schedule(metadata, spec, doc, for_node):
    problems = _Problems()
    made = EXPERIMENTS[spec["type"]]
    key = made.schedule_key
    for other in EXPERIMENTS.values():
        if other is not made and other.schedule_key in spec:
            problems.add(f"spec.{other.schedule_key}", spec[other.schedule_key],
                         f"no spec.{other.schedule_key} with type {made.name} (it is for type {other.name}): "
                         f"move the experiment to spec.{key}, or set type: {other.name}")
    if key not in spec:
        problems.add(f"spec.{key}", None, f"the {made.name} to create: type {made.name} needs spec.{key}")
    if len(metadata["name"]) > LABEL_VALUE_MAX:
        problems.add("metadata.name", metadata["name"], f"a name of at most {LABEL_VALUE_MAX} characters: the "
                     f"experiments a Schedule creates carry it in their label {SCHEDULE_LABEL}")
    problems.raise_any()
    template_doc = {"apiVersion": API_VERSION, "kind": made.name, "spec": spec[key],
                    "metadata": {"name": metadata["name"], "namespace": metadata.get("namespace", "default")}}
    try:
        template = made.parse(template_doc["metadata"], spec[key], template_doc, for_node)
    except InvalidSpec as err:
        # The kinds' parsers name fields from their own spec: say where they are in the Schedule.
        raise InvalidSpec([SpecError(e.path.replace("spec.", f"spec.{key}.", 1), e.value,
                                     e.allowed.replace("spec.", f"spec.{key}.")) for e in err.errors]) from None
    return Schedule(name=metadata["name"], namespace=metadata.get("namespace", "default"), schedule=spec["schedule"],
                    type=made.name, template=template, history_limit=spec.get("historyLimit", 1),
                    concurrency_policy=spec.get("concurrencyPolicy", "Forbid"),
                    starting_deadline_s=spec.get("startingDeadlineSeconds"), raw=doc)


@dataclass(frozen=True)
class HttpCheck:
    """A StatusCheck's http: one request, and the status codes that mean healthy."""
    url: str
    method: str = "GET"
    headers: tuple = ()                # (name, value) pairs, in order
    body: str = ""
    status_codes: tuple = (200, 200)   # inclusive range

    def healthy(self, code):
        return self.status_codes[0] <= code <= self.status_codes[1]


@dataclass(frozen=True)
class StatusCheck:
    """Chaos Mesh 2.x's StatusCheck: the controller requests `http` every interval_s, each within
    timeout_s; failure_threshold consecutive failures fail it; a Synchronous one completes at
    success_threshold consecutive successes; duration_ns (or its workflow node's deadline) ends it."""
    name: str
    namespace: str
    http: HttpCheck
    mode: str = "Synchronous"
    type: str = "HTTP"
    duration_ns: Optional[int] = None
    timeout_s: int = 1
    interval_s: int = 10
    failure_threshold: int = 3
    success_threshold: int = 1
    records_limit: int = 100
    raw: dict = field(default_factory=dict, compare=False, repr=False)
    notes: tuple = field(default=(), compare=False)

    @property
    def key(self):
        return f"{self.namespace}/{self.name}"

    @property
    def action(self):
        return f"{self.mode} {self.type} {self.http.method} {self.http.url}"


def _status_check(metadata, spec, doc, for_node):
    """A StatusCheck's spec; the schema has checked the fields' types and ranges."""
    problems = _Problems()
    http = spec.get("http")
    if http is None:
        problems.add("spec.http", None, "an http block with url and criteria.statusCode: type HTTP needs it")
    duration = _duration(spec, problems)
    problems.raise_any()
    low, _, high = http["criteria"]["statusCode"].partition("-")
    codes = (int(low), int(high or low))
    if codes[0] > codes[1]:
        problems.add("spec.http.criteria.statusCode", http["criteria"]["statusCode"], "a range low first, such as "
                     "\"200-399\"")
    problems.raise_any()
    headers = tuple((name, value) for name, values in (http.get("headers") or {}).items() for value in values)
    mode = spec.get("mode", "Synchronous")
    notes = ()
    if mode == "Continuous" and "successThreshold" in spec:
        notes = ("spec.successThreshold is for mode Synchronous: a Continuous check runs until its duration, its "
                 "node's deadline or its failure threshold",)
    return StatusCheck(
        name=metadata["name"], namespace=metadata.get("namespace", "default"), mode=mode, type=spec["type"],
        http=HttpCheck(http["url"], http.get("method", "GET"), headers, http.get("body", ""), codes),
        duration_ns=duration, timeout_s=spec.get("timeoutSeconds", 1), interval_s=spec.get("intervalSeconds", 10),
        failure_threshold=spec.get("failureThreshold", 3), success_threshold=spec.get("successThreshold", 1),
        records_limit=spec.get("recordsHistoryLimit", 100), raw=doc, notes=notes)


@dataclass(frozen=True)
class Branch:
    """A Task's conditional branch: run `target` when `expression` holds."""
    target: str
    expression: expression.Expression


@dataclass(frozen=True)
class Template:
    """One of a Workflow's spec.templates. `body` is what the node makes: an experiment's, a
    Schedule's or a StatusCheck's spec (as its kind's parser read it), a Task's pod parts."""
    name: str
    type: str                          # templateType
    deadline_ns: Optional[int] = None
    children: tuple = ()               # Serial, Parallel: template names
    body: object = None                # Experiment | Schedule | StatusCheck (the parsed model)
    task: Optional[dict] = None        # Task: {"container": ..., "volumes": [...], "labels": {...}}
    branches: tuple = ()               # Task: Branch
    abort_with_status_check: bool = False

    @property
    def spec_key(self):
        """Where the template holds what its node creates: networkChaos, schedule, statusCheck."""
        kind = EXPERIMENTS.get(self.type)
        return kind.schedule_key if kind else {"Schedule": "schedule", "StatusCheck": "statusCheck"}.get(self.type)


@dataclass(frozen=True)
class Workflow:
    """Chaos Mesh 2.x's Workflow: a tree of templates from `entry`, run by the controller."""
    name: str
    namespace: str
    entry: str
    templates: dict                    # name -> Template
    raw: dict = field(default_factory=dict, compare=False, repr=False)
    notes: tuple = field(default=(), compare=False)

    @property
    def key(self):
        return f"{self.namespace}/{self.name}"

    @property
    def action(self):
        return f"entry {self.entry}, {len(self.templates)} templates"


# Which field belongs to which templateType (others are refused on it, naming the right type).
_TEMPLATE_FIELDS = {"children": ("Serial", "Parallel"), "task": ("Task",), "conditionalBranches": ("Task",),
                    "schedule": ("Schedule",), "statusCheck": ("StatusCheck",),
                    "abortWithStatusCheck": ("StatusCheck",)}


def _in_template(errors, where):
    """A parser's errors about spec.X, renamed to where X is in the Workflow."""
    return [SpecError(e.path.replace("spec.", f"{where}.", 1), e.value, e.allowed.replace("spec.", f"{where}."))
            for e in errors]


def _workflow(metadata, spec, doc, for_node):
    problems = _Problems()
    namespace = metadata.get("namespace", "default")
    if len(metadata["name"]) > LABEL_VALUE_MAX:
        problems.add("metadata.name", metadata["name"], f"a name of at most {LABEL_VALUE_MAX} characters: what "
                     f"it creates carries it in the label {WORKFLOW_LABEL}")
    templates, notes = {}, []
    for index, raw in enumerate(spec["templates"]):
        where = f"spec.templates[{index}]"
        if raw["name"] in templates:
            problems.add(f"{where}.name", raw["name"], "a name no other template has")
            continue
        template = _template(raw, where, metadata, namespace, problems, notes)
        if template:
            templates[raw["name"]] = template
    if spec["entry"] not in templates and not problems.errors:
        problems.add("spec.entry", spec["entry"], "the name of one of spec.templates: " + ", ".join(templates))
    for index, raw in enumerate(spec["templates"]):
        for field_name, names in (("children", raw.get("children") or ()),
                                  ("conditionalBranches", [b["target"] for b in raw.get("conditionalBranches") or ()])):
            for position, name in enumerate(names):
                if name not in templates and not any(e.path.startswith(f"spec.templates[{index}]")
                                                     for e in problems.errors):
                    sub = "" if field_name == "children" else ".target"
                    problems.add(f"spec.templates[{index}].{field_name}[{position}]{sub}", name,
                                 "the name of one of spec.templates: " + ", ".join(templates))
    problems.raise_any()
    cycle = _cycle(templates)
    if cycle:
        problems.add("spec.templates", " -> ".join(cycle), "templates that do not contain themselves: a template "
                     "may not be its own descendant")
    problems.raise_any()
    return Workflow(name=metadata["name"], namespace=namespace, entry=spec["entry"], templates=templates, raw=doc,
                    notes=tuple(notes))


def _template(raw, where, metadata, namespace, problems, notes):
    """One spec.templates entry -> Template (None, with its problems noted)."""
    kind = raw["templateType"]
    before = len(problems.errors)
    own_key = Template(raw["name"], kind).spec_key
    for key, types in _TEMPLATE_FIELDS.items():
        if key in raw and kind not in types and key != own_key:
            problems.add(f"{where}.{key}", raw[key], f"no {key} with templateType {kind} (it is for templateType "
                         f"{' or '.join(types)}): remove it, or change templateType")
    for other in EXPERIMENTS.values():
        if other.schedule_key in raw and other.schedule_key != own_key:
            problems.add(f"{where}.{other.schedule_key}", raw[other.schedule_key],
                         f"no {other.schedule_key} with templateType {kind} (it is for templateType {other.name}): "
                         f"remove it, or change templateType")
    if own_key and own_key not in raw:
        problems.add(f"{where}.{own_key}", None, f"the spec of what the node makes: templateType {kind} needs "
                     f"{own_key}")
    if kind in ("Serial", "Parallel") and "children" not in raw:
        problems.add(f"{where}.children", None, f"the templates to run: templateType {kind} needs children")
    if len(raw["name"]) > LABEL_VALUE_MAX:
        problems.add(f"{where}.name", raw["name"], f"a name of at most {LABEL_VALUE_MAX} characters (it is the "
                     f"value of the label {TEMPLATE_LABEL})")
    deadline = problems.parse(f"{where}.deadline", raw["deadline"], units.parse_duration_ns) \
        if "deadline" in raw else None
    if deadline == 0:
        problems.add(f"{where}.deadline", raw["deadline"], "a duration above 0, such as \"30s\"")
    if kind in ("Suspend", "Schedule") and "deadline" not in raw:
        problems.add(f"{where}.deadline", None, f"a deadline such as \"30s\": templateType {kind} runs until it")
    if len(problems.errors) > before:
        return None
    body, task, branches = None, None, ()
    child_meta = {"name": metadata["name"], "namespace": namespace}
    try:
        if kind in EXPERIMENTS or kind in ("Schedule", "StatusCheck"):
            made = KINDS[kind] if kind != "StatusCheck" else STATUS_CHECK
            document = {"apiVersion": API_VERSION, "kind": made.name, "metadata": child_meta, "spec": raw[own_key]}
            body = made.parse(child_meta, raw[own_key], document, False)
            notes.extend(n.replace("spec.", f"{where}.{own_key}.", 1) for n in body.notes)
    except InvalidSpec as err:
        problems.errors.extend(_in_template(err.errors, f"{where}.{own_key}"))
        return None
    if kind in EXPERIMENTS and deadline is None and body.duration_ns is None:
        notes.append(f"{where}: neither a deadline nor {own_key}.duration: the node runs until its experiment "
                     "ends by itself (pod-kill does at once) or the workflow is deleted")
    if kind == "StatusCheck" and deadline is None and body.duration_ns is None and body.mode == "Continuous":
        problems.add(f"{where}.deadline", None, "a deadline (or statusCheck.duration): a Continuous check "
                     "without one never ends while the service is healthy")
    if kind == "Task":
        task = {"container": dict(raw["task"]["container"]), "volumes": list(raw["task"].get("volumes") or ()),
                "labels": dict(raw["task"].get("labels") or {})}
        if not isinstance(task["container"].get("image"), str) or not task["container"]["image"]:
            problems.add(f"{where}.task.container.image", task["container"].get("image"), "the image to run")
        branches = []
        for position, branch in enumerate(raw.get("conditionalBranches") or ()):
            try:
                branches.append(Branch(branch["target"], expression.parse(branch["expression"])))
            except expression.ExpressionError as err:
                problems.add(f"{where}.conditionalBranches[{position}].expression", branch["expression"],
                             f"an expression of docs/kinds/workflow.md's grammar ({err})")
    if len(problems.errors) > before:
        return None
    return Template(name=raw["name"], type=kind, deadline_ns=deadline, children=tuple(raw.get("children") or ()),
                    body=body, task=task, branches=tuple(branches),
                    abort_with_status_check=bool(raw.get("abortWithStatusCheck")))


def _cycle(templates):
    """A list of names from a template back to itself through children and branches, or None."""
    state = {}

    def visit(name, path):
        state[name] = "open"
        template = templates[name]
        for child in template.children + tuple(b.target for b in template.branches):
            if state.get(child) == "open":
                return path + [name, child]
            if child not in state:
                found = visit(child, path + [name])
                if found:
                    return found
        state[name] = "done"
        return None
    for name in templates:
        if name not in state:
            found = visit(name, [])
            if found:
                return found[found.index(found[-1]):]
    return None


@dataclass(frozen=True)
class Kind:
    """One kind, as the CRDs, `kfault validate`, the controller and the agent know it. The one
    registry of kinds is KINDS below; nothing else dispatches on kind names."""
    name: str                      # the resource's kind, e.g. "NetworkChaos"
    short_name: str                # kubectl's short name
    schema: dict                   # the spec's OpenAPI schema (schema.py)
    model: type                    # what parse_experiment returns for it
    parse: Callable = field(repr=False)   # (metadata, spec, doc, for_node) -> model
    schedule_key: Optional[str] = None    # an experiment's: its spec's key in a Schedule (Chaos Mesh's)
    plural_form: str = ""                 # the resource's plural, where it is not the name in lower case
    chaos_mesh: bool = True               # Chaos Mesh has this kind (SyscallChaos is kfault's own)

    @property
    def plural(self):
        return self.plural_form or self.name.lower()

    @property
    def is_experiment(self):
        """Placed on nodes by agents; the others (Schedule) are the controller's alone."""
        return self.schedule_key is not None


# A Schedule's name is a label value on the experiments it creates (Chaos Mesh's label key).
SCHEDULE_LABEL = "managed-by"
LABEL_VALUE_MAX = 63
# What a Workflow creates carries these labels: its name, and the template that made it.
WORKFLOW_LABEL = "kfault.dev/workflow"
TEMPLATE_LABEL = "kfault.dev/template"

# The kinds agents run: each has an engine on the node and a row of the controller's PLACEMENT
# (tests/test_kinds.py checks every layer has each kind).
EXPERIMENTS = {kind.name: kind for kind in (
    Kind("NetworkChaos", "kfnet", schema.NETWORK_CHAOS_SPEC, NetworkChaos, _network_chaos, "networkChaos"),
    Kind("IOChaos", "kfio", schema.IO_CHAOS_SPEC, IOChaos, _io_chaos, "ioChaos"),
    Kind("PodChaos", "kfpod", schema.POD_CHAOS_SPEC, PodChaos, _pod_chaos, "podChaos"),
    Kind("StressChaos", "kfstress", schema.STRESS_CHAOS_SPEC, StressChaos, _stress_chaos, "stressChaos"),
    Kind("SyscallChaos", "kfsys", schema.SYSCALL_CHAOS_SPEC, SyscallChaos, _syscall_chaos, "syscallChaos",
         chaos_mesh=False),
    Kind("DNSChaos", "kfdns", schema.DNS_CHAOS_SPEC, DNSChaos, _dns_chaos, "dnsChaos"),
    Kind("HTTPChaos", "kfhttp", schema.HTTP_CHAOS_SPEC, HTTPChaos, _http_chaos, "httpChaos"),
)}
SCHEDULE = Kind("Schedule", "kfsched",
                schema.schedule_spec({k.schedule_key: (k.name, k.schema) for k in EXPERIMENTS.values()}),
                Schedule, _schedule, plural_form="schedules")
STATUS_CHECK = Kind("StatusCheck", "kfcheck", schema.STATUS_CHECK, StatusCheck, _status_check,
                    plural_form="statuschecks")
# A Workflow embeds every experiment's spec under its key, as a Schedule does: a kind added to
# EXPERIMENTS is a templateType with nothing to add here.
WORKFLOW = Kind("Workflow", "kfwf",
                schema.workflow_spec({k.schedule_key: (k.name, k.schema) for k in EXPERIMENTS.values()},
                                     SCHEDULE.schema),
                Workflow, _workflow, plural_form="workflows")
KINDS = {**EXPERIMENTS, SCHEDULE.name: SCHEDULE, WORKFLOW.name: WORKFLOW, STATUS_CHECK.name: STATUS_CHECK}
