"""Test doubles: an agent's engine that records what it is asked to place instead of placing,
and a node's agent serving one."""
import time
from dataclasses import dataclass, field

from kfault_agent import server
from kfault_agent.kernel.capabilities import Capability
from kfault_api import spec


@dataclass
class RecordedPlacement:
    experiment: object
    target: object
    lease_ns: int
    deadline_ns: int = 0
    renewals: int = 0

    @property
    def key(self):
        return (self.experiment.key, self.target.name)


@dataclass(frozen=True)
class Named:
    name: str


@dataclass
class RecordingEngine:
    """The Engine protocol (engines/base.py) the agent drives, recording instead of placing.
    A pod resolves to one target named namespace/name."""
    refuse: str = ""
    kind: object = field(default_factory=lambda: spec.KINDS["NetworkChaos"])
    placed: dict = field(default_factory=dict)
    history: list = field(default_factory=list)

    @staticmethod
    def resolve(target, experiment):
        return [Named(f"{target.namespace}/{target.name}")]

    @staticmethod
    def describe(target):
        return target.name

    def check(self, experiment):
        if self.refuse:
            from kfault_agent.errors import KernelUnsupported
            raise KernelUnsupported(self.refuse)

    def apply(self, experiment, target, lease_s=None):
        placement = RecordedPlacement(experiment, target, int((lease_s or 10) * 1e9))
        placement.deadline_ns = time.monotonic_ns() + placement.lease_ns
        self.placed[placement.key] = placement
        self.history.append(("apply", experiment.key, target.name))

    def renew(self, keys=None):
        for key in keys if keys is not None else list(self.placed):
            if key in self.placed:
                self.placed[key].renewals += 1
                self.placed[key].deadline_ns = time.monotonic_ns() + self.placed[key].lease_ns
        return []

    def revoke(self, experiment_key, target_name):
        if self.placed.pop((experiment_key, target_name), None):
            self.history.append(("revoke", experiment_key, target_name))
            return True
        return False

    def revoke_all(self):
        for key in list(self.placed):
            self.revoke(*key)

    def active(self):
        return list(self.placed.values())

    def lapsed(self):
        return [p.key for p in self.placed.values() if time.monotonic_ns() >= p.deadline_ns]

    def counter_rows(self, experiment_key):
        return [(p.target.name, "recorded", "renewals", p.renewals)
                for p in self.placed.values() if p.experiment.key == experiment_key]

    def counts(self):
        return None     # nothing counted in a kernel

    def close(self):
        self.revoke_all()


class RecordingNode:
    """A node's agent: the real gRPC server (kfault_agent.server) on a RecordingEngine (one per
    kind of `kinds`, recording in one history; `engine` is the first's)."""

    def __init__(self, name, refuse="", kinds=("NetworkChaos",)):
        self.name = name
        self.engines = [RecordingEngine(refuse=refuse, kind=spec.KINDS[kind]) for kind in kinds]
        self.engine = self.engines[0]
        self.record_in(self.engine.history)
        self.service = server.AgentService(self.engines, {"tc-bpf": Capability("tc-bpf", True, "test")},
                                           node_name=name)
        self.grpc, self.port = server.serve(self.service, "127.0.0.1:0")

    def record_in(self, history):
        """Every engine's history in `history` (a list)."""
        for engine in self.engines:
            engine.history = history

    def targets(self, op="apply"):
        return sorted(t for (o, _, t) in self.engine.history if o == op)

    def close(self):
        self.grpc.stop(None)
        self.service.close()
