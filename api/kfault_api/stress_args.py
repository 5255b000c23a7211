"""stress-ng's command line, as Chaos Mesh's StressChaos carries it (stressors.*.options and
stressngStressors): the arguments with a clear meaning in a container become settings of
kfault's own stressors; every other one is refused by name, saying why. Pure: no kernel."""
from dataclasses import dataclass, field
from typing import Optional

from kfault_api import units


@dataclass
class StressArgs:
    """What a stress-ng command line asks for; None: not said."""
    cpu_workers: Optional[int] = None
    cpu_load: Optional[int] = None
    vm_workers: Optional[int] = None
    vm_bytes: Optional[str] = None          # as written: a stress-ng size or a percent
    hdd_workers: Optional[int] = None
    hdd_bytes: Optional[int] = None
    timeout_ns: Optional[int] = None
    ignored: list = field(default_factory=list)    # (option, why): taken, with no effect


def _count(value):
    if not value.isdigit() or int(value) < 1 or int(value) > 8192:
        raise ValueError("a number of workers from 1 to 8192 (stress-ng's 0, one per CPU of the node, has no "
                         "meaning for a container: name the count)")
    return int(value)


def _load(value):
    if not value.isdigit() or int(value) > 100:
        raise ValueError("a percent from 0 to 100")
    return int(value)


def _vm_bytes(value):
    if value.endswith("%"):
        units.parse_percent(value[:-1])
        return value
    units.parse_stress_ng_size(value)
    return value


# Options taken: option -> (StressArgs attribute, parse).
TAKEN = {
    "--cpu": ("cpu_workers", _count),
    "--cpu-load": ("cpu_load", _load),
    "--vm": ("vm_workers", _count),
    "--vm-bytes": ("vm_bytes", _vm_bytes),
    "--hdd": ("hdd_workers", _count),
    "--hdd-bytes": ("hdd_bytes", units.parse_stress_ng_size),
    "--timeout": ("timeout_ns", units.parse_stress_ng_time_ns),
}
# Options taken without effect, and why: Chaos Mesh adds the first two to every CPU stressor.
IGNORED = {
    "--cpu-method": "kfault's CPU workers spin on the CPU clock; which computation burns does not change the load",
    "--cpu-load-slice": "kfault holds the load by a closed loop on the CPU time the workers got, not by stress-ng's "
                        "open-loop duty-cycle slices",
    "--vm-keep": "kfault's memory workers always keep their memory mapped",
    "--metrics-brief": "kfault's metrics are its own (docs/metrics.md)",
    "--metrics": "kfault's metrics are its own (docs/metrics.md)",
    "--quiet": "kfault's stressors print nothing",
    "-q": "kfault's stressors print nothing",
}
# Options refused with a reason of their own; the others get REFUSED_WHY.
REFUSED = {
    "--io": "its sync() flushes every file system of the node, not the container's",
    "--sock": "network stressors are NetworkChaos's",
    "--udp": "network stressors are NetworkChaos's",
    "--fork": "a fork bomb is bounded by the container's pids.max, not by a load kfault can hold",
    "--all": "every stress-ng stressor at once has no bounded meaning in a container",
    "--sequential": "every stress-ng stressor in turn has no bounded meaning in a container",
    "--class": "stress-ng's classes name stressors kfault does not have",
    "--vm-method": "kfault's memory workers hold memory resident; they do not rewrite it by a method",
    "--vm-hang": "kfault's memory workers hold memory resident until the experiment ends",
    "--vm-populate": "kfault's memory workers always populate their memory",
    "--sched": "kfault's workers run with the container's own scheduling",
    "--taskset": "kfault's workers run on the CPUs the container may use (its cpuset)",
}
REFUSED_WHY = ("kfault runs its own stressors: cpu (--cpu, --cpu-load), memory (--vm, --vm-bytes), disk writes "
               "inside the container (--hdd, --hdd-bytes) and --timeout")


def tokens(options):
    """stress-ng's argv from Chaos Mesh's strings, which it joins with spaces: ["--cpu 2"] -> --cpu, 2."""
    return [token for option in options for token in option.split()]


def parse(argv):
    """argv -> (StressArgs, problems), each problem (option, value, what is allowed)."""
    args, problems, index = StressArgs(), [], 0
    while index < len(argv):
        option, _, value = argv[index].partition("=")
        index += 1
        if option in IGNORED:
            if option not in ("--quiet", "-q", "--metrics", "--metrics-brief", "--vm-keep") and not value:
                value = argv[index] if index < len(argv) else ""
                index += 1
            args.ignored.append((option, IGNORED[option]))
            continue
        if option not in TAKEN:
            written = argv[index - 1]
            if not value and index < len(argv) and not argv[index].startswith("-"):    # its value
                written, index = f"{written} {argv[index]}", index + 1
            problems.append((option, written, f"no {option}: {REFUSED.get(option, REFUSED_WHY)}"))
            continue
        if not value:
            if index >= len(argv):
                problems.append((option, None, f"a value after {option}"))
                continue
            value, index = argv[index], index + 1
        attribute, parse_value = TAKEN[option]
        try:
            setattr(args, attribute, parse_value(value))
        except ValueError as err:
            problems.append((option, f"{option} {value}", str(err)))
    return args, problems
