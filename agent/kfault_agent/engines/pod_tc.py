"""What the engines whose programs sit on a pod's own interface share (DNSChaos's dnsfault.c,
HTTPChaos's httpfault.c): the target (the pod's network namespace and its interfaces), its
programs held on each interface once however many placements use them (tcx where the kernel
has it, classic tc otherwise), and a pool of rule slots."""
import ipaddress
import logging
from dataclasses import dataclass, field

from kfault_agent.engines.leases import DEFAULT_LEASE_S, LeasedPlacements, Placement
from kfault_agent.errors import CapacityExhausted, KernelUnsupported, TargetUnsuitable
from kfault_agent.kernel.capabilities import probe_capabilities
from kfault_agent.kernel.maps import rule_deadline, update_slot, write_padded_dfa, write_slot
from kfault_agent.kernel.pods import PodRef, resolve_pod_network
from kfault_agent.kernel.tc import ClsactHooks, SharedPerLink
from kfault_agent.kernel.tcx import TcxHooks
from kfault_agent.kernel.topology import resolve_net_target

log = logging.getLogger(__name__)


@dataclass
class PodRulePlacement(Placement):
    slot: int = 0
    keys: list = field(default_factory=list)    # where the rule acts: _target_key's arguments
    links: list = field(default_factory=list)   # keys of the hooks it holds


class PodInterfaceEngine(LeasedPlacements):
    """A LeasedPlacements whose programs (`programs`: {hook: program name}) are attached to each
    interface of a placement's pod, with `max_rules` slots of its datapath's rule maps."""
    datapath_type = None      # the loader's class of its programs (kernel/loader.py)
    programs = {}
    max_rules = 0
    slot_what = "rule"
    placement_type = PodRulePlacement
    matched_what = "packets"  # what the rules match, by the pod's addresses: for a refusal

    def __init__(self, datapath, capabilities, lease_s=DEFAULT_LEASE_S, fq=None):
        super().__init__(lease_s)
        self.datapath = datapath
        self.capabilities = capabilities
        self._free_slots = list(range(self.max_rules - 1, -1, -1))
        self._masks = {}          # where (_target_key's argument) -> mask of slots, as in the targets map
        tcx = capabilities.get("tcx")
        hooks = TcxHooks if tcx and tcx.available else ClsactHooks
        self._hooks = SharedPerLink(hooks.attach, hooks.detach)

    @classmethod
    def load(cls, capabilities, lease_s=DEFAULT_LEASE_S, fq=None):
        """Compile and load its programs; `capabilities` gains what this kernel can do. `fq`:
        the fq roots it shares (tc.fq_roots), for an engine whose actions need sch_fq."""
        try:
            datapath = cls.datapath_type()
        except KernelUnsupported as err:
            capabilities.update(probe_capabilities(err))
            raise
        capabilities.update(probe_capabilities())
        return cls(datapath, capabilities, lease_s, fq)

    def close(self):
        self.revoke_all()
        self.datapath.close()

    @staticmethod
    def resolve(target, experiment):
        """A hostNetwork pod's namespace is the node's, which topology.netns_of refuses."""
        if isinstance(target, PodRef):
            return [resolve_pod_network(target)]
        return [resolve_net_target(target, None)]

    @staticmethod
    def describe(target):
        return ", ".join(i.inside.ifname for i in target.interfaces)

    # ---- a placement: one rule slot, the programs on the pod's interfaces, its targets' masks

    def _rule_dfa(self, experiment):
        """The DFA the rule's slot matches with (glob_dfa)."""
        raise NotImplementedError

    def _rule_fields(self, experiment):
        """The rule's fields as the datapath's rules map holds them (bpf/kfault.h)."""
        raise NotImplementedError

    def _mask_keys(self, experiment, addresses):
        """Where the rule acts, as _target_key's arguments: by default the pod's addresses."""
        return list(addresses)

    def _hold_more(self, active):
        """What else a placement holds besides its programs (before its masks are set)."""

    def _release_more(self, active, placed):
        """Undo _hold_more; `placed`: whether any of its masks were set."""

    def apply(self, experiment, target, lease_s=None):
        dfa = self._rule_dfa(experiment)
        with self._lock:
            existing = self._replacing(experiment, target)
            if existing:
                return existing
            addresses = [a for iface in target.interfaces for a in iface.addresses]
            if not addresses:
                raise TargetUnsuitable(f"{target.name}: its interfaces have no IP address to match "
                                       f"{self.matched_what} by")
            active = self.placement_type(experiment, target, lease_ns=self._lease_for(lease_s),
                                         slot=self._take_slot(), keys=self._mask_keys(experiment, addresses))
            self._start(active, experiment)
            try:
                write_padded_dfa(self.datapath.dfa, active.slot, dfa)
                write_slot(self.datapath.counters, active.slot, {})
                write_slot(self.datapath.rules, active.slot,
                           {**self._rule_fields(experiment), **rule_deadline(active.deadline_ns)})
                active.links.extend(self._hold_programs(target))
                self._hold_more(active)
                for key in active.keys:      # last: from here the programs act on it
                    self._add_to_mask(key, active.slot)
            except Exception:
                self._release(active)
                raise
            self._active[active.key] = active
            log.info("applied %s on %s: %s %d", experiment.key, target.name, self.slot_what, active.slot)
            return active

    def _release(self, active):
        log.info("revoking %s on %s", *active.key)
        placed = any([self._remove_from_mask(key, active.slot) for key in active.keys])
        del self.datapath.rules[self.datapath.rules.Key(active.slot)]   # an array slot: zeroed
        self._release_more(active, placed)
        self._give_slot(active.slot)
        self._let_go_programs(active.links)

    def _take_slot(self):
        if not self._free_slots:
            raise CapacityExhausted(f"all {self.max_rules} {self.slot_what} slots of this node are in use; "
                                    f"revoke a {self.kind.name} experiment first")
        return self._free_slots.pop()

    def _give_slot(self, slot):
        if slot not in self._free_slots:
            self._free_slots.append(slot)

    def _hold_programs(self, target):
        """Our programs on each of the target's interfaces: the keys to let go of them by."""
        programs = {hook: (self.datapath.fd(name), name) for hook, name in self.programs.items()}
        return [self._hooks.hold(iface.inside, programs) for iface in target.interfaces]

    def _let_go_programs(self, links):
        self._hooks.let_go(links)
        links.clear()

    # ---- the targets map: where a rule acts (a pod's address, ...) -> a mask of slots ----------

    def _target_key(self, where):
        """The datapath's targets key of `where`."""
        raise NotImplementedError

    def _add_to_mask(self, where, slot):
        self._set_mask(where, self._masks.get(where, 0) | (1 << slot))

    def _remove_from_mask(self, where, slot):
        """Take the slot out of where's mask: whether it was in."""
        if not self._masks.get(where, 0) & (1 << slot):
            return False
        self._set_mask(where, self._masks[where] & ~(1 << slot))
        return True

    def _set_mask(self, where, mask):
        key = self._target_key(where)
        if mask:
            self.datapath.targets[key] = self.datapath.targets.Leaf(mask)
            self._masks[where] = mask
            return
        try:
            del self.datapath.targets[key]
        except KeyError:
            pass
        self._masks.pop(where, None)

    def _write_deadline(self, active):
        update_slot(self.datapath.rules, active.slot, **rule_deadline(active.deadline_ns))

    # ---- counters: a per-CPU array of struct {__u64 <counted>[outcomes]} per slot -----------

    counted = ""              # the counters struct's array (bpf/kfault.h)
    outcomes = {}             # outcome -> index into it (layout.py)
    scope = ""                # `kfault run`'s scope column
    counts_types = None       # (the engine's counts, one placement's counts): engines/counts.py

    def messages(self, active):
        per_cpu = self.datapath.counters.getvalue(self.datapath.counters.Key(active.slot))
        return {outcome: sum(getattr(c, self.counted)[index] for c in per_cpu)
                for outcome, index in self.outcomes.items()}

    def counter_rows(self, experiment_key):
        return [(active.target.name, self.scope, outcome, count)
                for active in self.active() if active.experiment.key == experiment_key
                for outcome, count in self.messages(active).items()]

    def counts(self):
        counts, placement = self.counts_types
        return counts([placement(a.experiment.key, a.target.name, a.experiment.action, self.messages(a))
                       for a in self.active()])


def mapped(address):
    """An address as the programs' maps key it: IPv4 mapped into IPv6."""
    return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + address.packed) if address.version == 4 else address
