"""The file I/O fault engine: places IOChaos experiments on cgroups as rules in the BPF maps.

It owns the rule slots, the attachment of the syscall tracepoints and of the hooks (each only
while an armed rule needs it: an idle node runs none of kfault's programs) and the holders
(latency). Policy (what a rule says) comes from policy.py; the kernel objects from
loader.IODatapath.
"""
import logging
import os
import select
import threading
from dataclasses import dataclass

from kfault_agent.engines.counts import UNREACHED, IOCounts, IOPlacementCounts
from kfault_agent.engines.leases import DEFAULT_LEASE_S, LeasedPlacements, Placement
from kfault_agent.errors import CapacityExhausted, KernelUnsupported
from kfault_agent.kernel.holder import HolderProcess, StopBell, cgroup_processes
from kfault_agent.kernel.capabilities import io_reach, io_support, probe_io
from kfault_agent.kernel.maps import rule_deadline, update_slot, write_padded_dfa, write_slot
from kfault_agent.kernel.paths import folder_names, open_paths
from kfault_agent.kernel.pods import resolve_cgroups
from kfault_agent.policy import METHOD_BITS, io_rule_fields, walk
from kfault_api import glob_dfa, layout, schema, spec

log = logging.getLogger(__name__)

OUTCOMES = {"passed": layout.IO_OUTCOME_PASSED, "failed": layout.IO_OUTCOME_FAILED,
            "delayed": layout.IO_OUTCOME_DELAYED, "overridden": layout.IO_OUTCOME_OVERRIDDEN,
            "corrupted": layout.IO_OUTCOME_CORRUPTED, **{outcome: index for outcome, (index, _) in
                                                        UNREACHED.items()}}


def target_dfa(glob, cgroup_dir):
    """The DFA of `glob` as the target's processes see paths: where a link on the way to its
    folder gives that folder another name in their root (a volume at /var/run/etcd is
    /run/etcd to the kernel's hooks when the image has /var/run -> /run), it matches either."""
    folder, rest = glob_dfa.literal_folder(glob)
    others = sorted(folder_names(cgroup_processes(cgroup_dir), folder) - {folder})
    globs = [glob_dfa.escape(name).rstrip("/") + "/" + rest for name in others]
    try:
        return glob_dfa.compile_glob(glob, layout.IO_ACCEPT_STATE, *globs)
    except glob_dfa.GlobError:
        log.warning("%s is also %s in the target's root, but that makes too big a rule: matching "
                    "%s only", folder, ", ".join(others), folder)
        return glob_dfa.compile_glob(glob, layout.IO_ACCEPT_STATE)


class ProcessMarker:
    """Marks a targeted process's open files (kfault_io_fds) and its working and open
    directories (kfault_io_dirs) for one rule slot, as iofault.c's open would have: the
    tracepoints see only what is opened after arming."""

    def __init__(self, datapath, slot, dfa):
        self.datapath, self.slot, self.dfa = datapath, slot, dfa

    def mark(self, tgid):
        fds, dirs = self.datapath.fds, self.datapath.dirs
        for fd, path, is_dir in open_paths(tgid):
            if is_dir:      # where the process's relative paths start
                key = dirs.Key(tgid, fd & 0xFFFFFFFF)
                leaf = dirs.get(key) or self.no_rule_states(self.datapath)
                leaf.state[self.slot] = walk(self.dfa, path.rstrip("/") + "/")
                dirs[key] = leaf
            if self.dfa.matches(path):      # a file it reads, or a directory it lists
                key = fds.Key(tgid, fd)
                mask = fds.get(key)
                fds[key] = fds.Leaf((mask.value if mask else 0) | 1 << self.slot)

    @staticmethod
    def no_rule_states(datapath):
        leaf = datapath.dirs.Leaf()
        leaf.state[:] = [layout.IO_DEAD_STATE] * layout.IO_MAX_RULES
        return leaf

    def mark_cgroup(self, cgroup_dir):
        for tgid in cgroup_processes(cgroup_dir):
            self.mark(tgid)


def needs_holder(experiment):
    """Latency holds threads; a fault on fsync is given at the same stop, after the call."""
    return experiment.action == "latency" or (
        experiment.action == "fault" and any(m in schema.FAILED_AFTER_CALL for m in experiment.methods))


class LostDirectories:
    """Marks again, from /proc, a process whose directories the syscall tracepoints could not
    follow (iofault.c's kfault_io_lost: a chdir or an open by a path with "..", a relative path
    from a directory never marked, as a process's that joined the cgroup after arming). A thread
    of the agent's, asleep on kfault_io_lost_bell while the tracepoints are attached; `mark(tgid)`
    marks the process for every rule that targets it."""

    def __init__(self, datapath, mark):
        self.lost, self.mark = datapath.lost, mark
        self.bell = StopBell(datapath.lost_bell_fd)
        self._wake_read, self._wake_write = os.pipe()
        threading.Thread(target=self._run, name="kfault-io-lost-dirs", daemon=True).start()

    def _run(self):
        poller = select.poll()
        poller.register(self.bell.fd, select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        try:
            while not any(fd == self._wake_read for fd, _ in poller.poll()):
                # emptied first: a process lost after it rings again
                self.bell.empty()
                for key in [key for key, _ in self.lost.items()]:
                    self.lost.pop(key, None)
                    try:
                        self.mark(key.value)
                    except Exception:       # the thread must outlive one process's /proc
                        log.exception("marking the directories of pid %d failed", key.value)
        finally:
            self.bell.close()
            os.close(self._wake_read)

    def stop(self):
        """Ends the thread without waiting for it (it may be waiting for the engine's lock)."""
        os.write(self._wake_write, b"x")
        os.close(self._wake_write)


@dataclass
class ActiveIO(Placement):
    slot: int
    dfa: object = None
    holder: object = None
    syscall_tracepoints: bool = False   # some of its calls are decided at the syscall tracepoints
    hooks: frozenset = frozenset()      # the hooks it needs attached (loader.ERRNO_HOOKS' names)


class IOFaultEngine(LeasedPlacements):
    kind = spec.KINDS["IOChaos"]
    what = "file I/O faults"

    def __init__(self, datapath, capabilities, lease_s=DEFAULT_LEASE_S):
        super().__init__(lease_s)
        self.datapath = datapath
        self.capabilities = capabilities
        # The lowest free slot first: iofault.c's cgroup test stops after the highest armed one.
        self._free_slots = set(range(layout.IO_MAX_RULES))
        self._lost_dirs = None      # LostDirectories, while the syscall tracepoints are attached

    @classmethod
    def load(cls, capabilities, lease_s=DEFAULT_LEASE_S):
        """Load iofault.c with the best errno mechanism this kernel has; `capabilities` gains
        what it can do, also when it can't (KernelUnsupported)."""
        datapath, probed = probe_io()
        capabilities.update(probed)
        if datapath is None:
            raise KernelUnsupported(probed["io-tracepoints"].reason)
        return cls(datapath, capabilities, lease_s)

    def close(self):
        self.revoke_all()
        self.datapath.close()

    # ---- targets -------------------------------------------------------------------------

    @staticmethod
    def resolve(target, experiment):
        """A pod's named containers (all of them when none is named), or one local cgroup."""
        return resolve_cgroups(target)

    @staticmethod
    def describe(target):
        return f"cgroup {target.path}"

    # ---- placing and removing ----------------------------------------------------------

    def check(self, experiment):
        """KernelUnsupported naming every method of the experiment this node can't do."""
        refused = []
        for method in experiment.methods:
            ok, reason = io_support(self.capabilities, experiment.action, method)
            if not ok:
                refused.append(f"{experiment.action} on {method}: {reason}")
        if refused:
            raise KernelUnsupported("; ".join(refused))

    def unreached_paths(self, experiment):
        """[(I/O path, why)] this node's kernel can't give the experiment's action: its calls
        there are counted as unreached-* (engines/counts.py), and `kfault run` says so first."""
        return [(path, why) for path, reached, why in io_reach(self.capabilities, experiment.action) if not reached]

    def apply(self, experiment, target, lease_s=None):
        """Inject `experiment` on the cgroup `target` (replacing its earlier version). Live on return."""
        self.check(experiment)
        with self._lock:
            existing = self._replacing(experiment, target)
            if existing:
                return existing
            dfa = target_dfa(experiment.path, target.path)
            active = ActiveIO(experiment, target, self._take_slot(), dfa=dfa, lease_ns=self._lease_for(lease_s))
            self._start(active, experiment)
            try:
                self._write_rule(active, dfa)
                self._mark_processes(active, dfa)
                self._attach(active)
                self._arm(active)
            except Exception:
                self._release(active)     # the one way back: undoes whatever the steps took
                raise
            self._active[active.key] = active
            log.info("applied %s on %s: slot %d", experiment.key, target.name, active.slot)
            return active

    def counters(self, active):
        """({method: {outcome: calls}}, injected delay in ns), summed over CPUs."""
        per_cpu = self.datapath.counters.getvalue(self.datapath.counters.Key(active.slot))
        calls = {method: {outcome: sum(c.calls[bit * layout.IO_OUTCOME_STRIDE + OUTCOMES[outcome]] for c in per_cpu)
                          for outcome in ("passed",) + self._outcomes_of(active.experiment.action) + tuple(UNREACHED)}
                 for method, bit in METHOD_BITS.items() if method in active.experiment.methods}
        # BPF counts a fault after the call as failed when it asks the holder for it; the holder
        # counts those it could not give (a handler's frame came first): they passed.
        missed = self.datapath.missed[self.datapath.missed.Key(active.slot)].value
        for method in schema.FAILED_AFTER_CALL:
            if missed and active.experiment.action == "fault" and method in calls:
                calls[method]["failed"] -= missed
                calls[method]["passed"] += missed
        return calls, sum(c.delay_ns for c in per_cpu)

    def counter_rows(self, experiment_key):
        """(target, method, outcome, calls) for each placement of the experiment."""
        return [(active.target.name, method, outcome, count)
                for active in self.active() if active.experiment.key == experiment_key
                for method, outcomes in self.counters(active)[0].items()
                for outcome, count in outcomes.items()]

    def counts(self):
        """Every placement's calls and injected latency (counts.py)."""
        return IOCounts([IOPlacementCounts(active.experiment.key, active.target.name, active.experiment.action,
                                           *self.counters(active))
                         for active in self.active()])

    # ---- the steps of apply, and their undoing ---------------------------------------------

    def _take_slot(self):
        if not self._free_slots:
            raise CapacityExhausted(f"all {layout.IO_MAX_RULES} file I/O rule slots of this node are in use; "
                                    "revoke an experiment first")
        slot = min(self._free_slots)
        self._free_slots.remove(slot)
        return slot

    def _write_rule(self, active, dfa):
        """The slot's path DFA, cgroup, zeroed counters and rule: nothing acts on them until armed."""
        write_padded_dfa(self.datapath.dfa, active.slot, dfa)
        self.datapath.cgroups[active.slot] = active.target.path
        write_slot(self.datapath.counters, active.slot, {})
        self.datapath.missed[self.datapath.missed.Key(active.slot)] = self.datapath.missed.Leaf(0)
        write_slot(self.datapath.rules, active.slot,
                   {**io_rule_fields(active.experiment), **rule_deadline(active.deadline_ns)})

    def _mark_processes(self, active, dfa):
        """The target's open files and directories marked; for latency, and for a fault on a
        method failed after the call (fsync), a holder that also marks each process it sees start."""
        marker = ProcessMarker(self.datapath, active.slot, dfa)
        marker.mark_cgroup(active.target.path)
        if needs_holder(active.experiment):
            active.holder = HolderProcess(active.target.path, self.datapath.holds, self.datapath.traced,
                                          self.datapath.stopped, self.datapath.stop_bell_fd,
                                          on_process=marker.mark,
                                          holders=self.datapath.holders, slot=active.slot,
                                          fails=self.datapath.fails, missed=self.datapath.missed)

    def _attach(self, active):
        """What decides and fails the rule's calls, attached before it is armed: from the moment
        apply returns, every call is decided."""
        action, methods = active.experiment.action, active.experiment.methods
        active.syscall_tracepoints = self.datapath.needs_syscall_tracepoints(action, methods)
        active.hooks = self.datapath.hooks_needed(action, methods)
        self.datapath.use_hooks(active.hooks.union(*(other.hooks for other in self._active.values())))
        if active.syscall_tracepoints:
            if self._lost_dirs is None:
                self._lost_dirs = LostDirectories(self.datapath, self._mark_again)
            self.datapath.attach()
        self.datapath.attach_io_uring()     # any rule: io_uring reaches every method

    def _mark_again(self, tgid):
        """A process the tracepoints lost track of: its directories and files for every rule
        whose target holds it."""
        with self._lock:
            targeted = False
            for active in self._active.values():
                if tgid in cgroup_processes(active.target.path):
                    ProcessMarker(self.datapath, active.slot, active.dfa).mark(tgid)
                    targeted = True
            cwd = self.datapath.dirs.Key(tgid, layout.IO_AT_FDCWD & 0xFFFFFFFF)
            if targeted and cwd not in self.datapath.dirs:
                # no working directory in /proc (a deleted one): a known "matches nothing",
                # or each of its relative calls would ask again
                self.datapath.dirs[cwd] = ProcessMarker.no_rule_states(self.datapath)

    def _arm(self, active):
        """Last: from here the hooks act on the rule. Armed, then its methods; released in the
        other order: the file hooks read the methods' masks alone, so those must never hold a
        slot that isn't armed."""
        self._set_armed(active.slot, True)
        self._set_method_bits(active, True)
        # After arming, not before: a file walked in between, with the mask that lacks
        # this rule, is then cached under the old generation and walked again.
        self.datapath.new_generation()

    # ---- internals ---------------------------------------------------------------------

    @staticmethod
    def _outcomes_of(action):
        """What an action's calls may come out as, besides passed: latency and fault are counted
        together as before (one may fail what another delays); the others as what they do."""
        return {"attrOverride": ("overridden",), "mistake": ("corrupted",)}.get(action, ("failed", "delayed"))

    def _write_deadline(self, active):
        update_slot(self.datapath.rules, active.slot, **rule_deadline(active.deadline_ns))

    def _set_armed(self, slot, on):
        return self._set_bit(self.datapath.armed, 0, slot, on)

    def _set_method_bits(self, active, on):
        """The slot's bit in the mask of each method its rule acts on (kfault_io_method_armed)."""
        for method in active.experiment.methods:
            self._set_bit(self.datapath.method_armed, METHOD_BITS[method], active.slot, on)

    @staticmethod
    def _set_bit(mask_map, index, slot, on):
        """Set or clear a slot's bit in the mask at `index` of an array of masks; the new mask."""
        key = mask_map.Key(index)
        mask = mask_map[key].value
        mask = mask | (1 << slot) if on else mask & ~(1 << slot)
        mask_map[key] = mask_map.Leaf(mask)
        return mask

    def _release(self, active):
        log.info("revoking %s on %s", *active.key)
        # Disarm first: from here on no call is decided for this slot.
        self._set_method_bits(active, False)
        armed = self._set_armed(active.slot, False)
        if active.holder:
            active.holder.stop()        # resumes held threads, detaches
        del self.datapath.rules[self.datapath.rules.Key(active.slot)]
        try:
            del self.datapath.cgroups[active.slot]
        except (KeyError, OSError):
            pass
        self._forget_fds(active.slot)
        self._forget_dirs(active.slot)
        # Detached after disarming, when no other armed rule needs them: a call decided before
        # has its errno hook still there.
        others = [other for other in self._active.values() if other is not active]
        if not any(other.syscall_tracepoints for other in others):
            self.datapath.detach()
            if self._lost_dirs:
                self._lost_dirs.stop()
                self._lost_dirs = None
            self.datapath.lost.clear()
        self.datapath.use_hooks(set().union(*(other.hooks for other in others)))
        if not others:
            self.datapath.detach_io_uring()
        if not armed:
            self.datapath.traced.clear()
            self.datapath.stopped.clear()
            self.datapath.fails.clear()
        self._free_slots.add(active.slot)

    def _forget_fds(self, slot):
        """Open files remember which rules matched them: clear the slot before it is reused."""
        bit = 1 << slot
        for key, mask in list(self.datapath.fds.items()):
            if mask.value & bit:
                if mask.value == bit:
                    self.datapath.fds.pop(key, None)
                else:
                    self.datapath.fds[key] = self.datapath.fds.Leaf(mask.value & ~bit)

    def _forget_dirs(self, slot):
        for key, leaf in list(self.datapath.dirs.items()):
            leaf.state[slot] = layout.IO_DEAD_STATE
            if all(state == layout.IO_DEAD_STATE for state in leaf.state):
                self.datapath.dirs.pop(key, None)
            else:
                self.datapath.dirs[key] = leaf
