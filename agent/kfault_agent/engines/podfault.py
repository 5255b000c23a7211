"""PodChaos in the kernel: pod-failure freezes a pod's cgroup (cgroup v2 freezer) and thaws it on
recovery; container-kill kills a container's processes (cgroup.kill). No image swap, no
restart: recovery is instant.

Fail-safe: a frozen cgroup stays frozen whoever froze it, so every freeze is also written to
a guard, a child process of the agent that thaws everything still frozen when the agent dies
(PR_SET_PDEATHSIG), and to a state file under /run/kfault named by its owner: an agent that
starts thaws what owners that are gone recorded. A lease that lapses unrenewed is thawed by
the agent's housekeeping.
"""
import collections
import json
import logging
import os
import signal
import time

from kfault_agent.engines.counts import PodCounts, PodPlacementCounts
from kfault_agent.engines.leases import DEFAULT_LEASE_S, LeasedPlacements, Placement
from kfault_agent.errors import NotForAgents, TargetGone, kernel_errors
from kfault_agent.kernel import children, owners
from kfault_agent.kernel.pods import PodRef, resolve_pod_cgroups
from kfault_agent.kernel.topology import resolve_cgroup_target
from kfault_api import spec

log = logging.getLogger(__name__)

# Records of frozen cgroups, one file per owning process; on the host (the DaemonSet mounts it),
# so that an agent started after one that died thaws what it left.
STATE_DIR = os.environ.get("KFAULT_STATE_DIR", "/run/kfault")


SETTLE_S = 5.0      # how long a freeze or thaw may take to reach every task before we go on


def set_frozen(cgroup_dir, frozen, settle_s=SETTLE_S):
    """Freeze or thaw, and wait (up to settle_s) until every task in the subtree is: the
    kernel does it asynchronously, and "injected" should mean frozen."""
    with open(os.path.join(cgroup_dir, "cgroup.freeze"), "w", encoding="ascii") as handle:
        handle.write("1" if frozen else "0")
    deadline = time.monotonic() + settle_s
    while is_frozen(cgroup_dir) != frozen:
        if time.monotonic() >= deadline:
            log.warning("%s: not yet %s after %.0f s; the kernel goes on with it",
                        cgroup_dir, "frozen" if frozen else "thawed", settle_s)
            return
        time.sleep(0.005)


def is_frozen(cgroup_dir):
    with open(os.path.join(cgroup_dir, "cgroup.events"), encoding="ascii") as handle:
        return any(line.split() == ["frozen", "1"] for line in handle)


def _frozen_or_gone(cgroup_dir):
    """is_frozen, or None for a cgroup that is gone (its pod ended under the freeze)."""
    try:
        return is_frozen(cgroup_dir)
    except FileNotFoundError:
        return None


def kill_cgroup(cgroup_dir):
    """SIGKILL every process in the cgroup: cgroup.kill where the kernel has it (5.14+)."""
    kill_file = os.path.join(cgroup_dir, "cgroup.kill")
    if os.path.exists(kill_file):
        with open(kill_file, "w", encoding="ascii") as handle:
            handle.write("1")
        return
    for current, _, files in os.walk(cgroup_dir):
        if "cgroup.procs" in files:
            with open(os.path.join(current, "cgroup.procs"), encoding="ascii") as handle:
                for pid in handle:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ValueError, ProcessLookupError):
                        pass


def _cgroup_errors(cgroup_dir, doing):
    """A failed write to a cgroup's control files, as a Refusal naming the cgroup."""
    return kernel_errors(f"can't {doing} cgroup {cgroup_dir}",
                         gone=TargetGone(f"cgroup {cgroup_dir} is gone: its pod or container ended"))


class ThawGuard:
    """A forked child holding the list of frozen cgroups (over a pipe): it thaws them all when
    the agent goes away. The same list in a state file lets a later agent do it too, should
    the guard have been killed with the agent."""

    def __init__(self, state_dir=STATE_DIR):
        self.state_file = os.path.join(state_dir, f"frozen-{owners.tag()}.json")
        self.frozen = set()
        thaw_leftovers(state_dir)
        self.pid, self._write_fd = children.spawn(_guard_main, signal.SIGTERM, "thaw guard")

    def _tell(self):
        os.makedirs(os.path.dirname(self.state_file), exist_ok=True)
        with open(self.state_file + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(sorted(self.frozen), handle)
        os.replace(self.state_file + ".tmp", self.state_file)
        os.write(self._write_fd, (json.dumps(sorted(self.frozen)) + "\n").encode())

    def freeze(self, cgroup_dir):
        self.frozen.add(cgroup_dir)
        self._tell()
        try:
            with _cgroup_errors(cgroup_dir, "freeze"):
                set_frozen(cgroup_dir, True)
        except Exception:
            self.frozen.discard(cgroup_dir)     # nothing of it is ours to thaw
            self._tell()
            raise

    def thaw(self, cgroup_dir):
        try:
            set_frozen(cgroup_dir, False)
        except FileNotFoundError:
            log.info("%s is gone (its pod or container ended): nothing to thaw", cgroup_dir)
        self.frozen.discard(cgroup_dir)
        self._tell()

    def close(self):
        for cgroup_dir in list(self.frozen):
            self.thaw(cgroup_dir)
        children.finish(self.pid, self._write_fd)
        if os.path.exists(self.state_file):
            os.unlink(self.state_file)


def _guard_main(read_fd):
    # The agent's death arrives as SIGTERM too, in case a copy of the pipe's write end lives on.
    signal.signal(signal.SIGTERM, lambda *_: os.close(read_fd))
    _guard(read_fd)


def _guard(read_fd):
    """The guard's life: remember the latest list; when the pipe closes (agent gone), thaw it."""
    frozen, buffer = [], b""
    try:
        while True:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            if lines:
                frozen = json.loads(lines[-1])
    except OSError:
        pass
    for cgroup_dir in frozen:
        try:
            set_frozen(cgroup_dir, False)
        except OSError:
            pass


def thaw_leftovers(state_dir):
    """Thaw what kfault processes that are gone left frozen (their guards too were killed)."""
    try:
        names = os.listdir(state_dir)
    except OSError:
        return
    for name in names:
        owner = name.removeprefix("frozen-").removesuffix(".json")
        if not (name.startswith("frozen-") and name.endswith(".json")) or owners.is_alive(owner):
            continue
        path = os.path.join(state_dir, name)
        try:
            with open(path, encoding="utf-8") as handle:
                leftovers = json.load(handle)
        except (OSError, ValueError):
            leftovers = []
        for cgroup_dir in leftovers:
            try:
                set_frozen(cgroup_dir, False)
                log.warning("thawed %s, left frozen by %s, which is gone", cgroup_dir, owner)
            except OSError:
                pass
        os.unlink(path)


class PodFaultEngine(LeasedPlacements):
    """PodChaos on cgroup targets. Nothing in the kernel enforces a freeze's lease: the
    agent's housekeeping revokes (thaws) a placement as soon as it lapses."""
    kind = spec.KINDS["PodChaos"]
    what = "pod faults"

    def __init__(self, lease_s=DEFAULT_LEASE_S, guard=None):
        super().__init__(lease_s)
        self.guard = guard or ThawGuard()
        self._injected = collections.Counter()   # (experiment key, target name, action) -> faults

    @classmethod
    def load(cls, capabilities, lease_s=DEFAULT_LEASE_S):
        """Needs only cgroup v2 files; starting its guard thaws what dead owners left frozen."""
        return cls(lease_s)

    def close(self):
        self.revoke_all()
        self.guard.close()

    # ---- targets -------------------------------------------------------------------------

    @staticmethod
    def resolve(target, experiment):
        """container-kill: the named containers' cgroups; pod-failure: the whole pod's, which
        freezes whole. A local target is one cgroup."""
        if isinstance(target, PodRef):
            if experiment.action == "container-kill":
                return resolve_pod_cgroups(target, target.container_ids)
            return resolve_pod_cgroups(target)
        return [resolve_cgroup_target(target)]

    @staticmethod
    def describe(target):
        return f"cgroup {target.path}"

    # ---- placing and removing ----------------------------------------------------------

    def injected(self):
        """{(experiment key, target name, action): faults injected}: freezes and kills, which
        outlive their placements (a kill has none)."""
        with self._lock:
            return dict(self._injected)

    def check(self, experiment):
        if experiment.action == "pod-kill":
            raise NotForAgents("pod-kill is done by the controller through the API server, not an agent: "
                               "kubectl apply the PodChaos resource")

    def apply(self, experiment, target, lease_s=None):
        with self._lock:
            existing = self._replacing(experiment, target)
            if existing:
                return existing
            if experiment.action == "container-kill":
                with _cgroup_errors(target.path, "kill the processes of"):
                    kill_cgroup(target.path)
                self._injected[(experiment.key, target.name, experiment.action)] += 1
                return None
            active = Placement(experiment, target, lease_ns=self._lease_for(lease_s))
            self._start(active, experiment)
            self.guard.freeze(target.path)
            self._active[active.key] = active
            self._injected[(experiment.key, target.name, experiment.action)] += 1
            return active

    def counter_rows(self, experiment_key):
        return [(target, action, "injected", count)
                for (key, target, action), count in self.injected().items() if key == experiment_key]

    def counts(self):
        """The freezes in force, as the kernel has them, and every fault injected (counts.py)."""
        return PodCounts([PodPlacementCounts(active.experiment.key, active.target.name, active.experiment.action,
                                             active.target.path, _frozen_or_gone(active.target.path))
                          for active in self.active()],
                         self.injected())

    def _release(self, active):
        self.guard.thaw(active.target.path)
