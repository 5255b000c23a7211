"""The one interface every fault engine implements, and what the agent's surfaces drive.

An engine serves one kind of experiment (a `kfault_api.spec.Kind`): it refuses what this node
can't do, finds its targets on this node, places experiments on them under a lease and takes
them back, and counts what it did. The gRPC server, `kfault run` and the Prometheus collector see engines only
through this protocol, so none of them dispatches on kind names.
"""
from typing import Optional, Protocol, runtime_checkable

from kfault_api import spec


@runtime_checkable
class Engine(Protocol):
    kind: spec.Kind     # what it places; the agent keeps {kind.name: engine}

    def resolve(self, target, experiment) -> list:
        """The engine's targets on this node for a pod (kernel.pods.PodRef) or a local target
        string (netns:NAME, cgroup:/dir, pid:PID). Raises TargetNotFound."""

    def describe(self, target) -> str:
        """Where a resolved target is, for a person: its interfaces or its cgroup."""

    def check(self, experiment) -> None:
        """Raise KernelUnsupported, naming why, for what this node can't do: before anything
        is placed."""

    def apply(self, experiment, target, lease_s: Optional[float] = None):
        """Place `experiment` on one resolved target (replacing its earlier version); live on return."""

    def renew(self, keys=None) -> list:
        """Push the leases of `keys` (default: all); returns the keys whose duration is over."""

    def revoke(self, experiment_key, target_name) -> bool:
        """Take one placement back; False if there was none."""

    def revoke_all(self) -> None:
        """Take every placement back."""

    def active(self) -> list:
        """The placements in force (each with .key, .experiment, .target, .deadline_ns)."""

    def lapsed(self) -> list:
        """Keys of placements whose lease ran out: the caller revokes them."""

    def counter_rows(self, experiment_key) -> list:
        """(target name, scope, outcome, count) for each placement of the experiment."""

    def counts(self):
        """What it has done, read from the kernel now, as a typed record of engines/counts.py:
        `kfault run`'s live lines and the Prometheus collector format it."""

    def close(self) -> None:
        """Take every placement back and release what the engine loaded."""


def missing_members(engine):
    """The Engine members `engine` lacks (empty when it implements the protocol)."""
    members = [name for name in Engine.__annotations__] + [
        name for name, value in vars(Engine).items() if callable(value) and not name.startswith("_")]
    return [name for name in members if not hasattr(engine, name)]
