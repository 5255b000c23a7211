"""What the engines count, as typed records read from the kernel when asked (Engine.counts()).

Engines only count; the surfaces format: cli.py's live lines of `kfault run`, metrics.py's
Prometheus families (whose names and labels the dashboard and the alert rules depend on).
"""
from dataclasses import dataclass
from typing import Optional


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


@dataclass(frozen=True)
class IOPlacementCounts:
    """One IOChaos placement: calls per method and outcome, and the latency injected."""
    experiment: str
    target: str
    action: str
    calls: dict           # method -> {outcome: calls}: passed, then what the action may make of a call
    delay_ns: int


@dataclass(frozen=True)
class IOCounts:
    placements: list      # IOPlacementCounts


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
