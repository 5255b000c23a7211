"""The syscall fault engine: places SyscallChaos experiments on cgroups as rules in the BPF maps.

It owns the rule slots, the attachment of the LSM hooks (each only while an armed fault rule
names one of its syscalls) and of the sys_exit tracepoint (while a latency rule is armed), and
the holders (latency). Policy (what a rule says) comes from policy.py; the kernel objects from
loader.SyscallDatapath.
"""
import logging
from dataclasses import dataclass

from kfault_agent.engines.counts import SyscallCounts, SyscallPlacementCounts
from kfault_agent.engines.leases import DEFAULT_LEASE_S, LeasedPlacements, Placement
from kfault_agent.errors import CapacityExhausted, KernelUnsupported
from kfault_agent.kernel.capabilities import probe_syscall, syscall_support
from kfault_agent.kernel.holder import HolderProcess
from kfault_agent.kernel.maps import rule_deadline, update_slot, write_slot
from kfault_agent.kernel.pods import resolve_cgroups
from kfault_agent.policy import SYSCALL_ACTIONS, syscall_hooks, syscall_numbers, syscall_rule_fields
from kfault_api import layout, spec, syscalls

log = logging.getLogger(__name__)

OUTCOMES = {"passed": layout.SC_OUTCOME_PASSED, "failed": layout.SC_OUTCOME_FAILED,
            "delayed": layout.SC_OUTCOME_DELAYED}


@dataclass
class ActiveSyscall(Placement):
    slot: int
    numbers: tuple = ()
    hooks: frozenset = frozenset()
    holder: object = None


class SyscallFaultEngine(LeasedPlacements):
    kind = spec.KINDS["SyscallChaos"]
    what = "syscall faults"

    def __init__(self, datapath, capabilities, lease_s=DEFAULT_LEASE_S):
        super().__init__(lease_s)
        self.datapath = datapath
        self.capabilities = capabilities
        self._free_slots = set(range(layout.SC_MAX_RULES))

    @classmethod
    def load(cls, capabilities, lease_s=DEFAULT_LEASE_S):
        datapath, probed = probe_syscall()
        capabilities.update(probed)
        if datapath is None:
            raise KernelUnsupported(probed["syscall-fault"].reason)
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
        ok, reason = syscall_support(self.capabilities, experiment.action)
        if not ok:
            raise KernelUnsupported(f"{experiment.action} on syscalls: {reason}")

    def apply(self, experiment, target, lease_s=None):
        """Inject `experiment` on the cgroup `target` (replacing its earlier version). Live on return."""
        self.check(experiment)
        with self._lock:
            existing = self._replacing(experiment, target)
            if existing:
                return existing
            active = ActiveSyscall(experiment, target, self._take_slot(), numbers=tuple(syscall_numbers(experiment)),
                                   hooks=syscall_hooks(experiment), lease_ns=self._lease_for(lease_s))
            self._start(active, experiment)
            try:
                self._write_rule(active)
                if experiment.action == "latency":
                    d = self.datapath
                    active.holder = HolderProcess(target.path, d.holds, d.traced, d.stopped, d.stop_bell_fd,
                                                  holders=d.holders, slot=active.slot)
                self._attach(active)
                self._arm(active, True)
            except Exception:
                self._release(active)
                raise
            self._active[active.key] = active
            log.info("applied %s on %s: slot %d", experiment.key, target.name, active.slot)
            return active

    def _take_slot(self):
        if not self._free_slots:
            raise CapacityExhausted(f"all {layout.SC_MAX_RULES} syscall rule slots of this node are in use; "
                                    "revoke an experiment first")
        slot = min(self._free_slots)
        self._free_slots.remove(slot)
        return slot

    def _counted_numbers(self, active):
        """The syscall numbers the rule's calls are counted under (kfault.h)."""
        return active.numbers

    def _write_rule(self, active):
        """The slot's cgroup, zeroed counters and rule: nothing acts on them until armed."""
        self.datapath.cgroups[active.slot] = active.target.path
        for nr in self._counted_numbers(active):
            write_slot(self.datapath.counters, active.slot * layout.SC_MAX_NR + nr, {})
        write_slot(self.datapath.rules, active.slot,
                   {**syscall_rule_fields(active.experiment), **rule_deadline(active.deadline_ns)})

    def _attach(self, active):
        """What decides the rule's calls, attached before it is armed."""
        try:
            self.datapath.attach_hooks(active.hooks)
        except OSError as err:
            raise KernelUnsupported(f"a BPF LSM hook of {', '.join(sorted(active.hooks))} did not attach "
                                    f"({err})") from err
        if active.experiment.action == "latency":
            self.datapath.attach_tracepoint()

    def _arm(self, active, on):
        """Armed, then its syscalls, then (a fault) its hooks; released in the other order (the
        programs read a hook's mask first, then a syscall's with it or with the action's armed
        mask, so none may name a slot the one read after it has not)."""
        if on:
            self._set_bit(self.datapath.armed, SYSCALL_ACTIONS[active.experiment.action], active.slot, True)
        else:
            self._set_hook_bits(active, False)
        for nr in active.numbers:
            self._set_bit(self.datapath.syscalls, nr, active.slot, on)
        if on:
            self._set_hook_bits(active, True)
        else:
            self._set_bit(self.datapath.armed, SYSCALL_ACTIONS[active.experiment.action], active.slot, False)

    def _set_hook_bits(self, active, on):
        """The rule's bit in the masks of its hooks (a fault's; syscallfault.c numbers them from 1)."""
        for hook in active.hooks:
            self._set_bit(self.datapath.hook_rules, syscalls.HOOKS.index(hook) + 1, active.slot, on)

    @staticmethod
    def _set_bit(mask_map, index, slot, on):
        key = mask_map.Key(index)
        mask = mask_map[key].value
        mask_map[key] = mask_map.Leaf(mask | (1 << slot) if on else mask & ~(1 << slot))

    def _write_deadline(self, active):
        update_slot(self.datapath.rules, active.slot, **rule_deadline(active.deadline_ns))

    def _release(self, active):
        log.info("revoking %s on %s", *active.key)
        self._arm(active, False)
        if active.holder:
            active.holder.stop()
        del self.datapath.rules[self.datapath.rules.Key(active.slot)]
        try:
            del self.datapath.cgroups[active.slot]
        except (KeyError, OSError):
            pass
        others = [other for other in self._active.values() if other is not active]
        self.datapath.detach_hooks(keep=set().union(*(other.hooks for other in others)))
        if not any(other.experiment.action == "latency" for other in others):
            self.datapath.detach_tracepoint()
            self.datapath.traced.clear()
            self.datapath.stopped.clear()
        self._free_slots.add(active.slot)

    # ---- counting --------------------------------------------------------------------------

    def counters(self, active):
        """({syscall: {outcome: calls}}, injected delay in ns), summed over CPUs."""
        calls, delay_ns = {}, 0
        for name in active.experiment.syscalls:
            per_cpu = self.datapath.counters.getvalue(
                self.datapath.counters.Key(active.slot * layout.SC_MAX_NR + syscalls.X86_64[name]))
            outcomes = ("passed", "failed") if active.experiment.action == "fault" else ("passed", "delayed")
            calls[name] = {outcome: sum(c.calls[OUTCOMES[outcome]] for c in per_cpu) for outcome in outcomes}
            delay_ns += sum(c.delay_ns for c in per_cpu)
        return calls, delay_ns

    def counter_rows(self, experiment_key):
        """(target, syscall, outcome, calls) for each placement of the experiment."""
        return [(active.target.name, name, outcome, count)
                for active in self.active() if active.experiment.key == experiment_key
                for name, outcomes in self.counters(active)[0].items()
                for outcome, count in outcomes.items()]

    def counts(self):
        return SyscallCounts([SyscallPlacementCounts(active.experiment.key, active.target.name,
                                                     active.experiment.action, *self.counters(active))
                              for active in self.active()])
