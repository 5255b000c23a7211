"""What every fault engine shares: placements and their leases.

A placement is one experiment on one target, keyed (experiment key, target name). Its
deadline is a lease ahead of the last renewal and never past the end of `duration`; only
renew() pushes it, so a placement nobody renews lapses. Engines say how a deadline reaches the
kernel (_write_deadline) and how a placement is undone (_release).
"""
import threading
import time
from dataclasses import dataclass, field

DEFAULT_LEASE_S = 10.0


def monotonic_ns():
    """CLOCK_MONOTONIC, the clock bpf_ktime_get_ns() reads: deadlines are comparable."""
    return time.monotonic_ns()


@dataclass
class Placement:
    """One experiment on one target and its lease; engines add what they placed."""
    experiment: object
    target: object
    lease_ns: int = field(default=0, kw_only=True)      # how far each renewal pushes the deadline
    deadline_ns: int = field(default=0, kw_only=True)   # the deadline in the kernel right now
    ends_at_ns: int = field(default=0, kw_only=True)    # the end of `duration`; 0 = until revoked
    started_ns: int = field(default_factory=monotonic_ns, kw_only=True)

    @property
    def key(self):
        return (self.experiment.key, self.target.name)


class LeasedPlacements:
    def __init__(self, lease_s=DEFAULT_LEASE_S):
        self.lease_ns = int(lease_s * 1e9)
        self._lock = threading.RLock()
        self._active = {}         # (experiment key, target name) -> the engine's placement

    # ---- for the engines -----------------------------------------------------------------

    def _lease_for(self, lease_s):
        return int(lease_s * 1e9) if lease_s else self.lease_ns

    def _start(self, active, experiment):
        """Set a new placement's duration end and first deadline."""
        if experiment.duration_ns:
            active.ends_at_ns = active.started_ns + experiment.duration_ns
        active.deadline_ns = self._deadline(active)

    def _replacing(self, experiment, target):
        """Before placing: the same placement again is kept (renewed) and returned, so Apply
        is idempotent; a changed one is revoked first. None means: place it."""
        existing = self._active.get((experiment.key, target.name))
        if existing and existing.experiment == experiment and existing.target == target:
            self.renew([existing.key])
            return existing
        if existing:
            self.revoke(experiment.key, target.name)
        return None

    def _deadline(self, active, now=None):
        deadline = (now or monotonic_ns()) + active.lease_ns
        return min(deadline, active.ends_at_ns) if active.ends_at_ns else deadline

    def _write_deadline(self, active):
        """Make the kernel's copy of the deadline active.deadline_ns."""

    def _release(self, active):
        """Undo a placement in the kernel."""
        raise NotImplementedError

    # ---- the interface the agent drives ----------------------------------------------------

    def revoke(self, experiment_key, target_name):
        with self._lock:
            active = self._active.pop((experiment_key, target_name), None)
            if active is None:
                return False
            self._release(active)
            return True

    def revoke_all(self):
        """Revoke every placement; one that fails to undo (a cgroup still busy) doesn't keep the
        others in place: the first error is raised once all were tried."""
        failed = None
        with self._lock:
            for key in list(self._active):
                try:
                    self.revoke(*key)
                except Exception as err:  # noqa: BLE001 - raised below, after the others
                    failed = failed or err
        if failed:
            raise failed

    def renew(self, keys=None):
        """Push the deadlines of `keys` (default: every placement) one lease ahead, never past
        their duration. Returns the keys whose duration is over: the caller revokes them."""
        now, ended = monotonic_ns(), []
        with self._lock:
            for active in self._active.values():
                if keys is not None and active.key not in keys:
                    continue
                if active.ends_at_ns and now >= active.ends_at_ns:
                    ended.append(active.key)
                    continue
                active.deadline_ns = self._deadline(active, now)
                self._write_deadline(active)
        return ended

    def active(self):
        with self._lock:
            return list(self._active.values())

    def lapsed(self):
        """Keys whose deadline has passed (the kernel ignores them already): the caller
        revokes them to free slots and restore what they changed."""
        now = monotonic_ns()
        with self._lock:
            return [a.key for a in self._active.values() if a.deadline_ns and now >= a.deadline_ns]
