"""The OpenAPI v3 schemas of kfault's chaos kinds, with Chaos Mesh's v1alpha1 field names.

These dicts are the one source of truth: the CRDs under manifests/crds are rendered from
them, and `kfault validate` checks documents against them with `validate_against_schema`.
"""
import re

from kfault_api import layout, syscalls

PERCENT = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$",
           "description": "A percent from 0 to 100, such as \"25\" or \"0.5\"."}
DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]*)?(ns|us|µs|ms|s|m|h))+$|^0$",
            "description": "A Go duration such as \"90ms\" or \"1m30s\"."}


def _string_map(description):
    return {"type": "object", "additionalProperties": {"type": "string"}, "description": description}


POD_SELECTOR = {
    "type": "object",
    "description": "Which pods (Chaos Mesh PodSelectorSpec).",
    "properties": {
        "namespaces": {"type": "array", "items": {"type": "string"}},
        "nodes": {"type": "array", "items": {"type": "string"}},
        "pods": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        "nodeSelectors": _string_map("Node labels the pod's node must have."),
        "fieldSelectors": _string_map("Pod field selectors, as kubectl --field-selector."),
        "labelSelectors": _string_map("Pod labels."),
        "annotationSelectors": _string_map("Pod annotations."),
        "expressionSelectors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
        "podPhaseSelectors": {"type": "array", "items": {
            "type": "string", "enum": ["Pending", "Running", "Succeeded", "Failed", "Unknown"]}},
    },
}
MODE = {"type": "string", "enum": ["one", "all", "fixed", "fixed-percent", "random-max-percent"]}
SCHEDULER = {"type": "object", "required": ["cron"], "description": "Repeat the experiment: a window of "
             "spec.duration at each start (Chaos Mesh v1alpha1).",
             "properties": {"cron": {"type": "string", "description": "\"@every 2m\", \"@daily\" or five cron "
                                                                      "fields (UTC), e.g. \"*/15 * * * *\"."}}}


REMOTE_CLUSTER = {"type": "string", "description": "Chaos Mesh's multi-cluster field (the RemoteCluster it "
                  "runs in). kfault injects only in the cluster it runs in: an experiment naming "
                  "one is reported as not injected, and nothing is placed."}


def _chance(name):
    return {
        "type": "object",
        "required": [name],
        "properties": {name: PERCENT, "correlation": PERCENT},
    }


NETWORK_CHAOS_SPEC = {
    "type": "object",
    "required": ["action"],
    "properties": {
        "action": {"type": "string",
                   "enum": ["netem", "delay", "loss", "duplicate", "corrupt", "partition", "bandwidth"]},
        "mode": MODE,
        "value": {"type": "string"},
        "selector": POD_SELECTOR,
        "direction": {"type": "string", "enum": ["to", "from", "both"], "default": "to"},
        "target": {"type": "object", "properties": {"selector": POD_SELECTOR, "mode": MODE,
                                                    "value": {"type": "string"}}},
        "externalTargets": {"type": "array", "items": {"type": "string"},
                            "description": "Peers: IP addresses, CIDRs or host names (resolved by the agent at "
                                           "every renewal), each optionally with the peer's port: "
                                           "host:port, cidr:port, [ipv6]:port."},
        "partitionBehavior": {"type": "string", "enum": ["drop", "reject"],
                              "description": "Action partition only: drop (the default) discards the "
                                             "packets silently; reject answers TCP with a reset, so "
                                             "connections fail at once (other packets are dropped)."},
        "device": {"type": "string", "description": "Only this interface of the target."},
        "duration": DURATION,
        "scheduler": SCHEDULER,
        "remoteCluster": REMOTE_CLUSTER,
        "delay": {
            "type": "object",
            "required": ["latency"],
            "properties": {
                "latency": DURATION,
                "jitter": DURATION,
                "correlation": PERCENT,
                "reorder": {"type": "object", "required": ["reorder"], "properties": {
                    "reorder": PERCENT, "correlation": PERCENT, "gap": {"type": "integer", "minimum": 0}}},
                "per": {"type": "string", "enum": ["packet", "connection"],
                        "description": "kfault's, not Chaos Mesh's. packet (the default): every packet is "
                                       "delayed, as netem does. connection: only a connection's opening "
                                       "packet (a TCP SYN or SYN-ACK, a UDP flow's first datagram), so "
                                       "connecting takes `latency` longer and its requests do not."},
            },
        },
        "loss": _chance("loss"),
        "duplicate": _chance("duplicate"),
        "corrupt": _chance("corrupt"),
        "bandwidth": {
            "type": "object",
            "required": ["rate"],
            "properties": {
                "rate": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?[a-zA-Z]+$",
                         "description": "tc rate: \"10mbit\" (bits/s) or \"1mbps\" (bytes/s)."},
                "limit": {"type": "integer", "minimum": 1, "description": "Bytes that may wait in the queue."},
                "buffer": {"type": "integer", "minimum": 1, "description": "Burst size in bytes."},
                "peakrate": {"type": "integer", "minimum": 0,
                             "description": "tbf's peak rate in bytes/s, with minburst: bursts are cut to "
                                            "minburst bytes, then paced at rate."},
                "minburst": {"type": "integer", "minimum": 0, "maximum": 4294967295,
                             "description": "tbf's peak bucket in bytes (with peakrate)."},
            },
        },
        # kfault extensions: scope a rule to one protocol and a range of the peer's ports.
        "protocol": {"type": "string", "enum": ["tcp", "udp", "icmp", "icmpv6"]},
        "peerPorts": {"type": "string", "pattern": r"^[0-9]+(-[0-9]+)?$",
                      "description": "The peer's port or port range, such as \"5432\" or \"8000-8080\"."},
    },
}

# Chaos Mesh's other methods, and why kfault refuses them (spec.methods names them).
IO_METHODS_REFUSED = ("kfault has no hook yet for link, symlink, readlink, mknod, statfs, access, fsyncdir, "
                      "setxattr, getxattr, listxattr, removexattr, getlk, "
                      "setlk; lookup, forget, flush, release, opendir, releasedir and bmap are requests of "
                      "Chaos Mesh's FUSE server with no system call of their own")
# The stat family (bpf/syscalls.h's KFAULT_IO_STAT_SYSCALLS): method getattr, the one method of
# attrOverride, which rewrites what they report (the action names it: spec.methods doesn't).
IO_STAT_SYSCALLS = ("stat", "lstat", "fstat", "newfstatat", "statx")
ATTR_METHOD = "getattr"
# Chaos Mesh's IOChaos methods that kfault can act on at the syscall boundary, and the
# syscalls each stands for: bpf/syscalls.h's table, which decides in the kernel
# (tests/test_syscalls.py fails when the two differ).
IO_METHODS = {
    "open": ("open", "openat", "openat2", "creat"),
    "read": ("read", "pread64", "readv", "preadv", "preadv2"),
    "write": ("write", "pwrite64", "writev", "pwritev", "pwritev2"),
    "fsync": ("fsync", "fdatasync", "sync_file_range"),
    "mkdir": ("mkdir", "mkdirat"),
    "rmdir": ("rmdir",),                 # and unlinkat with AT_REMOVEDIR
    "unlink": ("unlink", "unlinkat"),
    "readdir": ("getdents", "getdents64"),
    "setattr": ("chmod", "fchmod", "fchmodat", "chown", "fchown", "lchown", "fchownat", "truncate", "ftruncate",
                "utime", "utimes", "futimesat", "utimensat"),
    "rename": ("rename", "renameat", "renameat2"),
    # opens with O_CREAT (iofault.c looks at their flags), as OPEN's are; not in syscalls.h
    "create": ("open", "openat", "openat2", "creat"),
    ATTR_METHOD: IO_STAT_SYSCALLS,
}
# Every syscall IOChaos's methods stand for (SyscallChaos sends a fault on them to IOChaos).
IO_METHODS_SYSCALLS = frozenset(s for syscalls_of in IO_METHODS.values() for s in syscalls_of)
# The methods a mistake can act on: the calls that carry data.
MISTAKE_METHODS = ("read", "write")
# Methods a fault fails after the call ran, and why: no security hook runs before they take
# effect, so the call runs and the holder replaces the result it returns (docs/design/file-io.md).
# A fault on them needs the holder (ptrace), not the errno hooks.
FAILED_AFTER_CALL = {"fsync": "no security hook runs before it takes effect: the data is synced, then the "
                              "application is told it failed"}
# Chaos Mesh's FileType names -> the S_IFMT bits of st_mode.
FILE_KINDS = {"namedPipe": 0o010000, "charDevice": 0o020000, "directory": 0o040000, "blockDevice": 0o060000,
              "regularFile": 0o100000, "symlink": 0o120000, "socket": 0o140000}
U32 = {"type": "integer", "minimum": 0, "maximum": 4294967295}
U64 = {"type": "integer", "minimum": 0, "maximum": 18446744073709551615}
TIMESPEC = {"type": "object", "required": ["sec"], "description": "A time: seconds since the epoch and nanoseconds.",
            "properties": {"sec": {"type": "integer", "minimum": -9223372036854775808, "maximum": 9223372036854775807},
                           "nsec": {"type": "integer", "minimum": 0, "maximum": 999999999}}}
ATTR_OVERRIDE = {
    "type": "object",
    "description": "attrOverride: what stat, lstat, fstat, fstatat and statx report for matching files "
                   "(Chaos Mesh AttrOverrideSpec); fields left out keep the file's values.",
    "properties": {
        "ino": U64, "size": U64, "blocks": U64,
        "atime": TIMESPEC, "mtime": TIMESPEC, "ctime": TIMESPEC,
        "kind": {"type": "string", "enum": list(FILE_KINDS), "description": "The file type reported."},
        "perm": {"type": "integer", "minimum": 0, "maximum": 0o7777,
                 "description": "Permission bits as a number (e.g. 420 = 0o644), at most 4095 (0o7777)."},
        "nlink": U32, "uid": U32, "gid": U32,
        "rdev": {**U32, "description": "The device number reported (st_rdev's encoding)."},
    },
}
MISTAKE = {
    "type": "object",
    "required": ["maxOccurrences", "maxLength"],
    "description": "mistake: wrong bytes in what a read returns or a write stores (Chaos Mesh MistakeSpec).",
    "properties": {
        "filling": {"type": "string", "enum": ["zero", "random"], "default": "zero",
                    "description": "What the wrong bytes are: zeros or random bytes."},
        "maxOccurrences": {"type": "integer", "minimum": 1, "maximum": layout.IO_MISTAKE_MAX_OCCURRENCES,
                           "description": "Each affected call gets 1 to this many runs of wrong bytes."},
        "maxLength": {"type": "integer", "minimum": 1, "maximum": layout.IO_MISTAKE_MAX_LENGTH,
                      "description": "Each run is 1 to this many bytes long."},
    },
}

IO_CHAOS_SPEC = {
    "type": "object",
    "required": ["action", "volumePath"],
    "properties": {
        "action": {"type": "string", "enum": ["latency", "fault", "attrOverride", "mistake"]},
        "mode": MODE,
        "value": {"type": "string"},
        "selector": POD_SELECTOR,
        "containerNames": {"type": "array", "items": {"type": "string"}},
        "volumePath": {"type": "string", "pattern": "^/",
                       "description": "an absolute path: the mount point of the volume to inject into"},
        "path": {"type": "string",
                 "description": "A glob of the files to inject into: * and ? within a path segment, "
                                "** across segments, [a-z] classes. Default: every file under volumePath."},
        "methods": {"type": "array", "items": {"type": "string", "enum": sorted(IO_METHODS),
                                               "description": IO_METHODS_REFUSED},
                    "description": "Default: every method; for mistake, read and write (the calls that carry "
                                   "data). A fault on fsync fails it after it ran (the data is synced, the "
                                   "application told it failed). attrOverride takes none: it acts on the stat "
                                   "family."},
        "percent": {"type": "integer", "minimum": 0, "maximum": 100, "default": 100},
        "delay": DURATION,
        "errno": {"type": "integer", "minimum": 1, "maximum": 133,
                  "description": "A Linux errno such as 5 (EIO) or 28 (ENOSPC)."},
        "attr": ATTR_OVERRIDE,
        "mistake": MISTAKE,
        "duration": DURATION,
        "scheduler": SCHEDULER,
        "remoteCluster": REMOTE_CLUSTER,
    },
}

SYSCALL_CHAOS_SPEC = {
    "type": "object",
    "required": ["action", "syscalls"],
    "properties": {
        "action": {"type": "string", "enum": ["fault", "latency"],
                   "description": "fault: the calls fail with errno before they take effect (at the kernel's "
                                  "LSM hooks); latency: the calling thread is held for delay as each call returns."},
        "mode": MODE,
        "value": {"type": "string"},
        "selector": POD_SELECTOR,
        "containerNames": {"type": "array", "items": {"type": "string"}},
        "syscalls": {"type": "array", "items": {"type": "string", "pattern": "^[a-z0-9_]+$"},
                     "description": "System call names as the kernel has them (connect, clone3, mmap). fault: "
                                    "those with an LSM hook before they take effect ("
                                    + ", ".join(syscalls.FAULT_HOOKS) + "); fork also fails clone and "
                                    "clone3 that make a process. latency: any syscall but the vDSO's."},
        "percent": {"type": "integer", "minimum": 0, "maximum": 100, "default": 100},
        "delay": DURATION,
        "errno": {"type": "integer", "minimum": 1, "maximum": 133,
                  "description": "A Linux errno such as 111 (ECONNREFUSED), 11 (EAGAIN) or 12 (ENOMEM)."},
        "duration": DURATION,
        "scheduler": SCHEDULER,
        "remoteCluster": REMOTE_CLUSTER,
    },
}

POD_CHAOS_SPEC = {
    "type": "object",
    "required": ["action"],
    "properties": {
        "action": {"type": "string", "enum": ["pod-kill", "pod-failure", "container-kill"],
                   "description": "pod-failure freezes the pod's processes (cgroup v2 freezer) until it ends."},
        "mode": MODE,
        "value": {"type": "string"},
        "selector": POD_SELECTOR,
        "containerNames": {"type": "array", "items": {"type": "string"},
                           "description": "container-kill: the containers to kill."},
        "gracePeriod": {"type": "integer", "minimum": 0, "description": "pod-kill: seconds before SIGKILL."},
        "duration": DURATION,
        "scheduler": SCHEDULER,
        "remoteCluster": REMOTE_CLUSTER,
    },
}


DNS_ERROR_RESPONSES = ("SERVFAIL", "NXDOMAIN", "REFUSED", "drop")
DNS_CHAOS_SPEC = {
    "type": "object",
    "required": ["action"],
    "properties": {
        "action": {"type": "string", "enum": ["error", "random"],
                   "description": "error: a matching query is answered at once, in the pod's own datapath, with "
                                  "an error (errorResponse); random: the A and AAAA records of matching answers "
                                  "are rewritten to random addresses of the same family."},
        "patterns": {"type": "array", "items": {"type": "string"},
                     "description": "Names to affect, matched case-insensitively: `?` one character, `*` any "
                                    "run of characters (Chaos Mesh: only at the end). None: every name."},
        "errorResponse": {"type": "string", "enum": list(DNS_ERROR_RESPONSES),
                          "description": "kfault's: error's answer, SERVFAIL (Chaos Mesh's, the default), "
                                         "NXDOMAIN, REFUSED, or drop (no answer: the client times out)."},
        "mode": MODE,
        "value": {"type": "string"},
        "selector": POD_SELECTOR,
        "containerNames": {"type": "array", "items": {"type": "string"},
                           "description": "Accepted for Chaos Mesh's sake: a pod's containers share its "
                                          "network namespace, so every container of the pod is affected."},
        "duration": DURATION,
        "scheduler": SCHEDULER,
        "remoteCluster": REMOTE_CLUSTER,
    },
}

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
_HEADERS = {"type": "object", "additionalProperties": {"type": "string"}}
HTTP_CHAOS_SPEC = {
    "type": "object",
    "required": ["target", "port"],
    "properties": {
        "target": {"type": "string", "enum": ["Request", "Response"],
                   "description": "What is acted on: the requests the selected pods receive on `port`, or the "
                                  "responses they send from it."},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535,
                 "description": "The selected pods' server port (plain HTTP/1.x; TLS with serverName)."},
        "serverName": {"type": "string",
                       "description": "kfault's: act on TLS connections whose ClientHello asks for a server name "
                                      "this glob matches (`*` any run, dots too; `?` one character; "
                                      "case-insensitive), by abort or delay: no certificate, nothing decrypted. "
                                      "Target Request; not with path, method, code or replace."},
        "path": {"type": "string", "description": "The request's path, a glob: `*` any run of characters "
                                                  "(`/` too), `?` one; none: every path. The query is not part."},
        "method": {"type": "string", "description": "The request's method, exactly (GET, POST, ...)."},
        "code": {"type": "integer", "minimum": 100, "maximum": 599,
                 "description": "Response only: the response's status code."},
        "request_headers": {**_HEADERS, "description": "Refused by kfault: its programs do not yet read headers."},
        "response_headers": {**_HEADERS, "description": "Refused by kfault: its programs do not yet read headers."},
        "abort": {"type": "boolean", "description": "Reset the connection of a matching request or response "
                                                    "(the client sees ECONNRESET)."},
        "delay": {**DURATION, "description": "Hold each matching request's response (target Request) or each "
                                             "matching response (Response) once for this long."},
        "replace": {"type": "object",
                    "properties": {"code": {"type": "integer", "minimum": 100, "maximum": 599},
                                   "path": {"type": "string"}, "method": {"type": "string"},
                                   "body": {"type": "string"},
                                   "queries": {"type": "object", "additionalProperties": {"type": "string"}},
                                   "headers": {"type": "object", "additionalProperties": {"type": "string"}}},
                    "description": "Response only, `code` only: the status code rewritten in place. Chaos Mesh's "
                                   "other fields change the stream's length: refused."},
        "patch": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                  "description": "Refused by kfault: a patch changes the stream's length, which needs a proxy."},
        "tls": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                "description": "Refused by kfault: it holds certificates to decrypt with; kfault decrypts nothing "
                               "(HTTPS by server name: serverName)."},
        "mode": MODE,
        "value": {"type": "string"},
        "selector": POD_SELECTOR,
        "duration": DURATION,
        "scheduler": SCHEDULER,
        "remoteCluster": REMOTE_CLUSTER,
    },
}

STRESS_OPTIONS = {"type": "array", "items": {"type": "string"},
                  "description": "stress-ng's arguments, such as \"--cpu 2\" or \"--timeout 600\": those with a "
                                 "meaning in a container are taken, the others refused by name "
                                 "(docs/kinds/stresschaos.md)."}
# A size as memStress (go-humanize) or stress-ng writes it, or a percent.
STRESS_SIZE = r"^\s*([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*[a-zA-Z]*$|^[0-9]+(\.[0-9]+)?%$"
STRESS_WORKERS = {"type": "integer", "minimum": 1, "maximum": 8192, "description": "How many workers."}

STRESS_CHAOS_SPEC = {
    "type": "object",
    "properties": {
        "mode": MODE,
        "value": {"type": "string"},
        "selector": POD_SELECTOR,
        "containerNames": {"type": "array", "items": {"type": "string"},
                           "description": "The containers to stress (default: every container of the pod)."},
        "stressors": {
            "type": "object",
            "description": "At least one of cpu and memory.",
            "properties": {
                "cpu": {"type": "object", "required": ["workers"], "properties": {
                    "workers": STRESS_WORKERS,
                    "load": {"type": "integer", "minimum": 0, "maximum": 100,
                             "description": "Percent of the CPU the container may use (cpu.max), spread over "
                                            "the workers; without a limit, percent of one CPU per worker. "
                                            "Default 100."},
                    "options": STRESS_OPTIONS}},
                "memory": {"type": "object", "required": ["workers"], "properties": {
                    "workers": STRESS_WORKERS,
                    "size": {"type": "string", "pattern": STRESS_SIZE,
                             "description": "Memory held, split over the workers: \"256MB\" (10^6 bytes "
                                            "each, as Chaos Mesh reads it), \"1GiB\", or \"50%\" of the "
                                            "container's memory.max (of the node's memory without one)."},
                    "oomScoreAdj": {"type": "integer", "minimum": -1000, "maximum": 1000,
                                    "description": "The stressors' oom_score_adj (default 0)."},
                    "options": {**STRESS_OPTIONS, "description": "memStress's arguments: none is taken "
                                                                 "(docs/kinds/stresschaos.md says why)."}}},
            },
        },
        "stressngStressors": {"type": "string",
                              "description": "stress-ng's command line, such as \"--cpu 2 --cpu-load 50\"; when "
                                             "set, spec.stressors is ignored (as in Chaos Mesh)."},
        "duration": DURATION,
        "scheduler": SCHEDULER,
        "remoteCluster": REMOTE_CLUSTER,
    },
}


# Chaos Mesh 2.x's Schedule: the controller creates an experiment of `type` from the embedded spec
# at each time of `schedule`. The kinds a Schedule can make, and their keys, come from spec.EXPERIMENTS.
CONCURRENCY_POLICIES = ["Forbid", "Allow"]


def schedule_spec(embedded):
    """The Schedule spec's schema; `embedded` maps each key (e.g. "networkChaos") to its kind's name
    and spec schema. The embedded specs are the experiments' without spec.scheduler: a Schedule
    repeats them itself."""
    properties = {
        "schedule": {"type": "string", "description": "When to create an experiment: \"@every 5m\", a macro "
                                                      "(@hourly, @daily, ...) or five cron fields (UTC)."},
        "type": {"type": "string", "enum": [name for name, _ in embedded.values()],
                 "description": "The kind of experiment to create; its spec is under the matching key."},
        "historyLimit": {"type": "integer", "minimum": 1,
                         "description": "Finished experiments to keep (default 1); older ones are deleted."},
        "concurrencyPolicy": {"type": "string", "enum": CONCURRENCY_POLICIES,
                              "description": "Forbid (default): no new experiment while one is still running. "
                                             "Allow: create one at every time regardless."},
        "startingDeadlineSeconds": {"type": "integer", "minimum": 0,
                                    "description": "A run missed by more than this many seconds is skipped."},
    }
    for key, (name, spec) in embedded.items():
        properties[key] = {**spec, "properties": {k: v for k, v in spec["properties"].items() if k != "scheduler"},
                           "description": f"The {name} to create when type is {name}."}
    return {"type": "object", "required": ["schedule", "type"], "properties": properties}


# Chaos Mesh 2.x's StatusCheck (a kind of its own, and a Workflow node): the controller probes a
# URL and says whether the service under test is healthy. Defaults are Chaos Mesh's CRD's.
STATUS_CODE = {"type": "string", "pattern": r"^[1-5][0-9][0-9](-[1-5][0-9][0-9])?$",
               "description": "An HTTP status code (\"200\") or an inclusive range (\"200-399\")."}
STATUS_CHECK = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["HTTP"], "default": "HTTP", "description": "What to check: HTTP."},
        "mode": {"type": "string", "enum": ["Synchronous", "Continuous"],
                 "description": "Synchronous (default): done at the success or failure threshold. Continuous: "
                                "until its duration (or its workflow node's deadline), or the failure threshold."},
        "duration": DURATION,
        "timeoutSeconds": {"type": "integer", "minimum": 1, "default": 1,
                           "description": "Each request's time limit."},
        "intervalSeconds": {"type": "integer", "minimum": 1, "default": 10,
                            "description": "Seconds between the starts of two requests."},
        "failureThreshold": {"type": "integer", "minimum": 1, "default": 3,
                             "description": "Consecutive failures that fail the check."},
        "successThreshold": {"type": "integer", "minimum": 1, "default": 1,
                             "description": "Consecutive successes that complete a Synchronous check."},
        "recordsHistoryLimit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100,
                                "description": "How many records status.records keeps."},
        "http": {
            "type": "object",
            "required": ["url", "criteria"],
            "properties": {
                "url": {"type": "string", "pattern": "^https?://",
                        "description": "An http:// or https:// URL, requested from the controller's network."},
                "method": {"type": "string", "enum": ["GET", "POST"], "default": "GET"},
                "headers": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}},
                            "description": "Header name -> values (Go's http.Header)."},
                "body": {"type": "string"},
                "criteria": {"type": "object", "required": ["statusCode"], "properties": {"statusCode": STATUS_CODE}},
            },
        },
    },
}

# Chaos Mesh 2.x's Workflow. Its template types that are not experiments, and what each holds.
WORKFLOW_FLOW_TYPES = ("Serial", "Parallel", "Suspend", "Task", "Schedule", "StatusCheck")
_OPEN_OBJECT = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def workflow_spec(embedded, schedule):
    """The Workflow spec's schema. embedded: each experiment's key (e.g. "networkChaos") -> its
    kind's name and spec schema (as a Schedule embeds them); schedule: the Schedule spec's
    schema, for templateType Schedule."""
    template = {
        "type": "object",
        "required": ["name", "templateType"],
        "properties": {
            "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                     "description": "The template's name (lower case letters, digits and -): children, entry "
                                    "and conditionalBranches name it."},
            "templateType": {"type": "string", "enum": list(WORKFLOW_FLOW_TYPES) + [n for n, _ in embedded.values()],
                             "description": "What the node does; an experiment's spec is under its key."},
            "deadline": {**DURATION, "description": "The longest the node runs (Suspend: how long it waits)."},
            "children": {"type": "array", "items": {"type": "string"},
                         "description": "Serial and Parallel: the templates to run, in order or at once."},
            "task": {"type": "object", "required": ["container"], "properties": {
                "container": {**_OPEN_OBJECT, "description": "A Pod's container (core/v1 Container)."},
                "volumes": {"type": "array", "items": _OPEN_OBJECT,
                            "description": "The Pod's volumes (core/v1 Volume)."},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "conditionalBranches": {"type": "array", "items": {
                "type": "object", "required": ["target", "expression"],
                "properties": {"target": {"type": "string"},
                               "expression": {"type": "string", "description": "See docs/kinds/workflow.md."}}}},
            "schedule": {**schedule, "description": "templateType Schedule: a Schedule's spec."},
            "statusCheck": {**STATUS_CHECK, "description": "templateType StatusCheck: a StatusCheck's spec."},
            "abortWithStatusCheck": {"type": "boolean",
                                     "description": "A failed StatusCheck aborts the workflow."},
        },
    }
    for key, (name, spec) in embedded.items():
        template["properties"][key] = {**spec, "description": f"templateType {name}: its spec."}
    return {"type": "object", "required": ["entry", "templates"],
            "properties": {"entry": {"type": "string", "description": "The template the workflow starts with."},
                           "templates": {"type": "array", "items": template}}}


def validate_against_schema(value, schema, path):
    """Check `value` against an OpenAPI v3 subset; return a list of (path, value, allowed)."""
    errors = []
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [(path, value, "an object (a mapping of fields)")]
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for field in schema.get("required", []):
            if field not in value:
                errors.append((f"{path}.{field}", None, "a value: the field is required"))
        for field, item in value.items():
            if props is not None and field in props:
                errors += validate_against_schema(item, props[field], f"{path}.{field}")
            elif isinstance(extra, dict):
                errors += validate_against_schema(item, extra, f"{path}.{field}")
            elif props is None:
                continue   # an object with no declared fields (e.g. metadata): anything goes
            else:
                allowed = ", ".join(sorted(props or {}))
                errors.append((f"{path}.{field}", item, f"a known field; unknown here (known: {allowed})"))
        return errors
    if kind == "array":
        if not isinstance(value, list):
            return [(path, value, "a list")]
        for index, item in enumerate(value):
            errors += validate_against_schema(item, schema.get("items", {}), f"{path}[{index}]")
        return errors
    if kind == "string":
        if not isinstance(value, str):
            return [(path, value, "a string (quote it in YAML, e.g. \"25\")")]
        if "enum" in schema and value not in schema["enum"]:
            why = f" ({schema['description']})" if "description" in schema else ""
            return [(path, value, "one of " + ", ".join(schema["enum"]) + why)]
        if "pattern" in schema and not re.search(schema["pattern"], value):
            return [(path, value, schema.get("description", f"a string matching {schema['pattern']}"))]
        return []
    if kind == "boolean":
        return [] if isinstance(value, bool) else [(path, value, "true or false")]
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return [(path, value, "a whole number")]
        low, high = schema.get("minimum"), schema.get("maximum")
        if (low is not None and value < low) or (high is not None and value > high):
            if high is None:
                return [(path, value, f"a whole number of at least {low}")]
            return [(path, value, f"a whole number from {low} to {high}")]
        return []
    return errors
