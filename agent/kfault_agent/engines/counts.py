"""What the engines count, as typed records read from the kernel when asked (Engine.counts()).

Engines only count; the surfaces format: cli.py's live lines of `kfault run`, metrics.py's
Prometheus families (whose names and labels the dashboard and the alert rules depend on).
"""
from dataclasses import dataclass
from typing import Optional

from kfault_api import layout


@dataclass(frozen=True)
class Traffic:
    packets: int
    bytes: int


@dataclass(frozen=True)
class NetPlacementCounts:
    """One NetworkChaos placement: its kernel rules, and what its packets came out as."""
    experiment: str
    target: str
    action: str
    rules: int            # kernel rules in force: one per direction and peer group
    directions: dict      # direction -> {outcome: Traffic}, outcomes in layout.OUTCOMES order


@dataclass(frozen=True)
class NetCounts:
    placements: list      # NetPlacementCounts, one per placement in force
    capabilities: dict    # kernel feature -> available (bool): what this node can do


# Calls a rule chose but could not act on, by why (bpf/kfault.h's KFAULT_IO_OUTCOME_UNREACHED_*):
# outcome -> (counter index, what to tell the user). Never a silent miss: `kfault run` and the
# agent's status show them, and kfault_syscalls counts them by outcome.
UNREACHED = {
    "unreached-io-thread": (layout.IO_OUTCOME_UNREACHED_IO_THREAD,
                            "io_uring requests issued by a kernel thread (an SQPOLL ring's thread; with the file "
                            "hooks, an io-wq worker's request whose file kfault could not match at its "
                            "submission): latency holds the submitting thread, and these have none to hold"),
    "unreached-async": (layout.IO_OUTCOME_UNREACHED_ASYNC,
                        "asynchronous requests (libaio, io_uring) this action can't reach on this kernel: errno "
                        "needs the file hooks, attrOverride and mistake rewrite a syscall's buffer at its return, "
                        "and io_uring's open, stat, mkdir, unlink, rename and ftruncate name their path in memory "
                        "kfault does not read"),
    "unreached-fixed-file": (layout.IO_OUTCOME_UNREACHED_FIXED_FILE,
                             "io_uring requests on registered (fixed) files: without the file hooks kfault matches "
                             "a request by its fd, and these have none"),
}


@dataclass(frozen=True)
class IOPlacementCounts:
    """One IOChaos placement: calls per method and outcome, and the latency injected."""
    experiment: str
    target: str
    action: str
    calls: dict           # method -> {outcome: calls}: passed, then what the action may make of a call,
                          # then the UNREACHED outcomes
    delay_ns: int

    def unreached(self):
        """{outcome: calls} of the UNREACHED outcomes, over every method, where not zero."""
        totals = {outcome: sum(calls.get(outcome, 0) for calls in self.calls.values()) for outcome in UNREACHED}
        return {outcome: count for outcome, count in totals.items() if count}


@dataclass(frozen=True)
class IOCounts:
    placements: list      # IOPlacementCounts


@dataclass(frozen=True)
class SyscallPlacementCounts:
    """One SyscallChaos placement: calls per syscall and outcome, and the latency injected."""
    experiment: str
    target: str
    action: str
    calls: dict           # syscall -> {outcome: calls}: passed, then failed (fault) or delayed (latency)
    delay_ns: int


@dataclass(frozen=True)
class SyscallCounts:
    placements: list      # SyscallPlacementCounts


@dataclass(frozen=True)
class PodPlacementCounts:
    """One pod-failure freeze in force."""
    experiment: str
    target: str
    action: str
    path: str             # the frozen cgroup
    frozen: Optional[bool]    # the kernel says every task is frozen (False: still freezing; None: gone)


@dataclass(frozen=True)
class PodCounts:
    placements: list      # PodPlacementCounts
    injected: dict        # (experiment, target, action) -> faults injected: freezes and kills, which outlive them


@dataclass(frozen=True)
class StressPlacementCounts:
    """One StressChaos placement: its stressors running and what they hold."""
    experiment: str
    target: str
    action: str
    cgroup: str           # the stressors' cgroup, a child of the container's
    stressors: dict       # kind (cpu, memory, hdd) -> processes running
    cpu_seconds: float    # CPU time the stressors got (their cgroup's cpu.stat)
    cpus: float           # the CPUs they are to hold
    memory_bytes: int     # memory their buffers hold resident now
    memory_target_bytes: int   # the memory they are to hold


@dataclass(frozen=True)
class StressCounts:
    placements: list      # StressPlacementCounts


@dataclass(frozen=True)
class DnsPlacementCounts:
    """One DNSChaos placement: DNS messages whose name matched, by outcome (layout.DNS_OUTCOMES)."""
    experiment: str
    target: str
    action: str
    messages: dict        # outcome -> count


@dataclass(frozen=True)
class DnsCounts:
    placements: list      # DnsPlacementCounts


@dataclass(frozen=True)
class HttpPlacementCounts:
    """One HTTPChaos placement: requests or responses it selected, by outcome (layout.HTTP_OUTCOMES)."""
    experiment: str
    target: str
    action: str
    messages: dict        # outcome -> count


@dataclass(frozen=True)
class HttpCounts:
    placements: list      # HttpPlacementCounts
