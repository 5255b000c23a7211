"""The network fault engine: places experiments on targets as rules in the BPF maps.

It owns the rule slots, the peer table and our tc attachments. Policy (what the rules say)
comes from policy.py; the kernel objects come from loader.py and tc.py.
"""
import logging
from dataclasses import dataclass, field

from kfault_api import layout
from kfault_agent import policy
from kfault_agent.engines.leases import DEFAULT_LEASE_S, LeasedPlacements, Placement
from kfault_agent.kernel.loader import KernelUnsupported, action_support, rule_deadline, update_slot, write_slot
from kfault_agent.kernel.tc import ClsactHooks, FqRoot, InterfaceGone
from kfault_agent.kernel.topology import NetnsGone

log = logging.getLogger(__name__)
# An interface's hook -> the program attached there (see bpf/netfault.c).
INSIDE_PROGRAMS = {"ingress": "ingress_from", "egress": "egress_to"}
OUTSIDE_PROGRAMS = {"ingress": "ingress_to", "egress": "egress_from"}


def experiment_actions(experiment):
    return [name for name in ("partition", "loss", "duplicate", "corrupt", "delay", "bandwidth")
            if getattr(experiment, name)]


@dataclass
class ActiveRule:
    slot: int
    direction: str
    keys: frozenset


@dataclass
class ActiveExperiment(Placement):
    rules: list
    links: list
    fq_links: list = field(default_factory=list)


class NetFaultEngine(LeasedPlacements):
    def __init__(self, datapath, capabilities, lease_s=DEFAULT_LEASE_S):
        super().__init__(lease_s)
        self.datapath = datapath
        self.capabilities = capabilities
        self._free_slots = list(range(layout.MAX_RULES - 1, -1, -1))
        self._table = policy.PeerTable()
        self._entries = {}        # peer key -> slots, as written to kfault_peers
        self._hooks = {}          # (netns inode, ifindex) -> [ClsactHooks, users]
        self._fq = {}             # (netns inode, ifindex) -> [FqRoot, users]

    # ---- placing and removing ----------------------------------------------------------

    def check_supported(self, experiment):
        for action in experiment_actions(experiment):
            ok, reason = action_support(self.capabilities, action)
            if not ok:
                raise KernelUnsupported(f"{action} is not supported on this node: {reason}")

    def apply(self, experiment, target, lease_s=None):
        """Inject `experiment` on `target` (replacing its earlier version). Live on return."""
        self.check_supported(experiment)
        with self._lock:
            existing = self._replacing(experiment, target)
            if existing:
                return existing
            addresses = [a for iface in target.interfaces for a in iface.addresses]
            if not addresses:
                raise KernelUnsupported(f"{target.name}: its interfaces have no IP address to match packets by")
            rules, affected = [], set()
            try:
                for direction in experiment.directions:
                    rule = ActiveRule(self._free_slots.pop(), direction,
                                      policy.peer_keys(direction, addresses, experiment.peers))
                    rules.append(rule)
                    affected |= self._table.add(rule.slot, rule.keys)
                entries = self._table.entries(affected)
            except (IndexError, policy.RuleConflict) as err:
                for rule in rules:
                    self._table.remove(rule.slot)
                    self._free_slots.append(rule.slot)
                if isinstance(err, IndexError):
                    raise policy.RuleConflict(f"all {layout.MAX_RULES} rule slots are in use") from None
                raise
            active = ActiveExperiment(experiment, target, rules, [], lease_ns=self._lease_for(lease_s))
            self._start(active, experiment)
            try:
                for iface in target.interfaces:
                    self._hold_hooks(iface.inside, INSIDE_PROGRAMS, active)
                    self._hold_hooks(iface.outside, OUTSIDE_PROGRAMS, active)
                    if experiment.needs_edt:
                        # Egress programs set skb->tstamp; fq at that egress holds the packet.
                        for direction in experiment.directions:
                            self._hold_fq(iface.inside if direction == "to" else iface.outside, active)
            except Exception:
                self._release(active)
                raise
            fields = policy.rule_fields(experiment)
            for rule in rules:
                self._reset_slot(rule.slot)
                write_slot(self.datapath.rules, rule.slot, {**fields, **rule_deadline(active.deadline_ns)})
            self._write_entries(entries)
            self._active[active.key] = active
            log.info("applied %s on %s: slots %s", experiment.key, target.name, [r.slot for r in rules])
            return active

    # ---- counters ----------------------------------------------------------------------

    def counters(self, active):
        """{direction: {outcome: (packets, bytes)}} summed over CPUs."""
        result = {}
        for rule in active.rules:
            per_cpu = self.datapath.counters.getvalue(self.datapath.counters.Key(rule.slot))
            result[rule.direction] = {
                outcome: (sum(c.packets[index] for c in per_cpu), sum(c.bytes[index] for c in per_cpu))
                for outcome, index in layout.OUTCOMES.items()}
        return result

    def counter_rows(self, experiment_key):
        """(target, direction, outcome, packets) for each placement of the experiment."""
        return [(active.target.name, direction, outcome, packets)
                for active in self.active() if active.experiment.key == experiment_key
                for direction, outcomes in self.counters(active).items()
                for outcome, (packets, _) in outcomes.items()]

    # ---- internals ---------------------------------------------------------------------

    def _write_deadline(self, active):
        for rule in active.rules:
            update_slot(self.datapath.rules, rule.slot, **rule_deadline(active.deadline_ns))

    def _hold(self, held, link, make, keys):
        """Share one kernel object per interface among experiments, counting its users."""
        key = (link.netns.inode, link.ifindex)
        if key not in held:
            held[key] = [make(), 0]
        held[key][1] += 1
        keys.append(key)

    @staticmethod
    def _drop(held, keys, release):
        for key in keys:
            held[key][1] -= 1
            if held[key][1] == 0:
                thing = held.pop(key)[0]
                try:
                    release(thing)
                except (NetnsGone, InterfaceGone) as err:
                    log.info("nothing to undo on %s: %s", thing.link.ifname, err)
        keys.clear()

    def _hold_hooks(self, link, programs, active):
        fds = {hook: (self.datapath.fd(name), name) for hook, name in programs.items()}
        self._hold(self._hooks, link, lambda: ClsactHooks.attach(link, fds), active.links)

    def _hold_fq(self, link, active):
        self._hold(self._fq, link, lambda: FqRoot.hold(link), active.fq_links)

    def _release(self, active):
        log.info("revoking %s on %s", *active.key)
        affected = set()
        for rule in active.rules:
            affected |= self._table.remove(rule.slot)
        self._write_entries(self._table.entries(affected))
        for rule in active.rules:
            del self.datapath.rules[self.datapath.rules.Key(rule.slot)]  # an array slot: zeroed
            self._free_slots.append(rule.slot)
        self._drop(self._hooks, active.links, ClsactHooks.detach)
        self._drop(self._fq, active.fq_links, FqRoot.release)

    def _reset_slot(self, slot):
        for table in (self.datapath.counters, self.datapath.rule_state, self.datapath.departures):
            write_slot(table, slot, {})

    def _peer_key(self, entry_key):
        direction, local, network = entry_key
        key = self.datapath.peers.Key()
        key.prefixlen = 32 + 128 + network.prefixlen
        key.direction = direction
        key.local[:] = list(local.packed)
        key.remote[:] = list(network.network_address.packed)
        return key

    def _write_entries(self, entries):
        """Make kfault_peers hold `entries`; an empty slot tuple deletes the key."""
        for entry_key, slots in entries.items():
            if self._entries.get(entry_key, ()) == slots:
                continue
            if not slots:
                del self.datapath.peers[self._peer_key(entry_key)]
                del self._entries[entry_key]
                continue
            leaf = self.datapath.peers.Leaf()
            leaf.count = len(slots)
            for index, slot in enumerate(slots):
                leaf.slot[index] = slot
            self.datapath.peers[self._peer_key(entry_key)] = leaf
            self._entries[entry_key] = slots
