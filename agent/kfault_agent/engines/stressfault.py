"""StressChaos: stressors in a child cgroup of the target container's (kernel/stress.py), so
they count against its cpu.max and memory.max and their use is told apart from the
application's; the processes are stressor.py's.

Fail-safe: a stressor never outlives its experiment. Each placement's stressors are a child of
the agent with PR_SET_PDEATHSIG (kernel/children.py: they die with the agent, SIGKILL
included) holding a lease of their own: the agent pushes its deadline down a pipe at each
renewal, and past it they end themselves even if the agent lives on, hung (the kernel ends
them, an interval timer of stressor.py's, if they can't). A revoke kills them by their cgroup
and bounds each wait: it never waits on a stressor to act.
"""
import itertools
import json
import logging
import math
import os
import signal
import sys
from dataclasses import dataclass

from kfault_agent.engines.counts import StressCounts, StressPlacementCounts
from kfault_agent.engines.leases import DEFAULT_LEASE_S, LeasedPlacements, Placement
from kfault_agent.errors import KernelUnsupported, TargetUnsuitable
from kfault_agent.kernel import children, stress
from kfault_agent.kernel.pods import resolve_cgroups
from kfault_api import spec

log = logging.getLogger(__name__)
# How long a revoke waits for the stressors' main process to be gone once killed, then again
# after a SIGKILL of its own (it was not yet in the cgroup): every wait of a revoke is bounded.
FINISH_S = 5.0


@dataclass
class StressPlacement(Placement):
    cgroup: str = ""              # the stressors' cgroup
    pid: int = 0                  # the stressors' main process (stressor.py)
    write_fd: int = -1            # the pipe that carries its lease
    cpus: float = 0.0             # the CPUs the workers hold together
    memory_bytes: int = 0         # the memory the workers hold together
    memory_workers: int = 0


def plan(experiment, cpu_limit, memory_limit, mem_total, mem_available):
    """(stressor config, CPUs held, memory held) for a container with these limits (None:
    none). Raises TargetUnsuitable for what can't be held there. Pure: tests/test_stress_plan."""
    config, cpus, memory = {}, 0.0, 0
    if experiment.cpu:
        workers, load = experiment.cpu.workers, experiment.cpu.load / 100
        cpus = load * cpu_limit if cpu_limit is not None else load * workers
        if cpus / workers > 1:
            raise TargetUnsuitable(f"spec.stressors.cpu.workers: {workers} worker(s) can't hold {cpus:.2f} CPUs "
                                   f"(load {experiment.cpu.load}% of cpu.max's {cpu_limit:g} CPUs): a worker holds "
                                   f"at most one; set workers to {math.ceil(cpus)} or more")
        config["cpu"] = {"workers": workers, "share": cpus / workers}
    if experiment.memory:
        size = experiment.memory.size_bytes
        if size is None:
            size = int(experiment.memory.size_percent / 100 * (memory_limit or mem_total))
        if memory_limit is None and size > mem_available:
            raise TargetUnsuitable(f"spec.stressors.memory.size: {size} bytes is more than this node has "
                                   f"available ({mem_available}) and the container has no memory.max to stop it: "
                                   "it would be the node's OOM killer, outside the container; ask for less")
        memory = size
        config["memory"] = {"workers": experiment.memory.workers, "bytes": size // experiment.memory.workers,
                            "oom_score_adj": experiment.memory.oom_score_adj}
    return config, cpus, memory


class StressEngine(LeasedPlacements):
    kind = spec.KINDS["StressChaos"]
    what = "stressors"

    def __init__(self, lease_s=DEFAULT_LEASE_S):
        super().__init__(lease_s)
        self._serial = itertools.count()

    @classmethod
    def load(cls, capabilities, lease_s=DEFAULT_LEASE_S):
        """Needs cgroup v2's cpu and memory controllers (KernelUnsupported names cgroup v1);
        removes the stressors' cgroups that dead agents left."""
        stress.require_cgroup2_controllers()
        left = stress.remove_leftovers()
        if left:
            log.warning("removed %d stressors' cgroup(s) that an agent now gone left", left)
        return cls(lease_s)

    def close(self):
        self.revoke_all()

    # ---- targets -------------------------------------------------------------------------

    @staticmethod
    def resolve(target, experiment):
        """A pod: its (named, else every) container's cgroup, whose limits the stressors count
        against. A local target is one cgroup."""
        return resolve_cgroups(target)

    @staticmethod
    def describe(target):
        return f"cgroup {target.path}"

    def check(self, experiment):
        """Nothing beyond load's: what can be held depends on each target's limits (apply)."""

    # ---- placing and removing ----------------------------------------------------------

    def apply(self, experiment, target, lease_s=None):
        with self._lock:
            existing = self._replacing(experiment, target)
            if existing:
                return existing
            if experiment.memory and experiment.memory.oom_score_adj < 0 and not stress.can_lower_oom_score_adj():
                raise KernelUnsupported(f"spec.stressors.memory.oomScoreAdj: {experiment.memory.oom_score_adj} needs "
                                        "CAP_SYS_RESOURCE, which this agent lacks: run it privileged (as the "
                                        "DaemonSet does), or use 0 or more")
            config, cpus, memory = plan(experiment, stress.cpu_limit(target.path), stress.memory_limit(target.path),
                                        stress.meminfo("MemTotal"), stress.meminfo("MemAvailable"))
            if experiment.hdd:
                config["hdd"] = {"workers": experiment.hdd.workers, "bytes": experiment.hdd.bytes,
                                 "dir": stress.hdd_directory(target.path)}
            active = StressPlacement(experiment, target, lease_ns=self._lease_for(lease_s), cpus=cpus,
                                     memory_bytes=memory, memory_workers=experiment.memory.workers
                                     if experiment.memory else 0)
            self._start(active, experiment)
            config["deadline_ns"] = active.deadline_ns
            active.cgroup = stress.make_cgroup(target.path, next(self._serial))
            try:
                active.pid, active.write_fd = children.spawn(_exec_stressor(active.cgroup, config), signal.SIGKILL,
                                                             "stressors")
            except BaseException:
                stress.remove_cgroup(active.cgroup)
                raise
            self._active[active.key] = active
            return active

    def lapsed(self):
        """Leases run out, and placements whose stressors are gone (the container ended: its
        runtime killed its whole subtree): the runtime can remove the container's cgroup only
        once the stressors' cgroup inside it is gone, which their revoke does."""
        lapsed = super().lapsed()
        return lapsed + [a.key for a in self.active() if a.key not in lapsed and stress.has_exited(a.pid)]

    def _write_deadline(self, active):
        try:
            os.write(active.write_fd, f"{active.deadline_ns}\n".encode())
        except BrokenPipeError:
            pass        # the stressors ended (killed inside the container): _release cleans up

    def _release(self, active):
        """Kill the stressors by their cgroup, main process included, then reap it: never wait
        for the main to end them. With a memory worker the OOM killer must spare (oomScoreAdj
        -1000) holding all of memory.max, the main's next page fault finds nothing to kill and
        is retried for ever (Linux 5.16 on: no OOM kill from the page-fault handler), so it would
        never read its pipe's end; SIGKILL ends the retries."""
        try:
            stress.remove_cgroup(active.cgroup)
        finally:
            children.finish(active.pid, active.write_fd, timeout_s=FINISH_S)

    def counter_rows(self, experiment_key):
        return [(c.target, c.action, kind, count) for c in self.counts().placements if c.experiment == experiment_key
                for kind, count in c.stressors.items()]

    def counts(self):
        """Per placement: the stressors running, the CPU time their cgroup got, the memory they hold."""
        placements = []
        for active in self.active():
            running = stress.stressors(active.cgroup)
            per_worker = active.memory_bytes // active.memory_workers if active.memory_workers else 0
            held = sum(stress.held_memory(pid, per_worker) for pid in running.get("memory", ()))
            placements.append(StressPlacementCounts(
                active.experiment.key, active.target.name, active.experiment.action, active.cgroup,
                {kind: len(running.get(kind, ())) for kind in ("cpu", "memory", "hdd")},
                stress.cpu_usage_s(active.cgroup), active.cpus, held, active.memory_bytes))
        return StressCounts(placements)


def _exec_stressor(cgroup, config):
    """The forked child's life: join the stressors' cgroup, become stressor.py (a fresh
    interpreter: nothing of the agent's memory is mapped, or counted, in the container)."""
    def child_main(read_fd):
        with open(os.path.join(cgroup, "cgroup.procs"), "w", encoding="ascii") as handle:
            handle.write("0")
        os.set_inheritable(read_fd, True)
        os.execv(sys.executable, [sys.executable, "-m", "kfault_agent.stressor", json.dumps(config), str(read_fd)])
    return child_main
