"""The network fault engine: places NetworkChaos experiments on targets as rules in the BPF maps.

It owns the rule slots, the peer table and our tc attachments. Policy (what the rules say)
comes from policy.py; the kernel objects come from loader.py and tc.py.
"""
import logging
from dataclasses import dataclass, field

from kfault_agent import peer_names, policy
from kfault_agent.engines.counts import NetCounts, NetPlacementCounts, Traffic
from kfault_agent.engines.leases import DEFAULT_LEASE_S, LeasedPlacements, Placement
from kfault_agent.errors import CapacityExhausted, KernelUnsupported, Refusal, TargetUnsuitable
from kfault_agent.kernel.capabilities import RECEIVED_EDT_NEEDS, action_support, probe_capabilities
from kfault_agent.kernel.loader import NetDatapath
from kfault_agent.kernel.maps import rule_deadline, update_slot, write_slot
from kfault_agent.kernel.pods import PodRef, resolve_pod_network
from kfault_agent.kernel.tc import ClsactHooks, EdtIfb, SharedPerLink, fq_roots
from kfault_agent.kernel.tcx import TcxHooks
from kfault_agent.kernel.topology import Link, resolve_net_target
from kfault_api import layout, spec

log = logging.getLogger(__name__)
# A hook -> the program attached there (see bpf/netfault.c): on the target's own interfaces
# (never the host side of a veth, where a CNI's programs may redirect past ours), and on the
# ifb in its namespace that holds received packets for a delay or rate.
TARGET_PROGRAMS = {"ingress": "ingress_from", "egress": "egress_to"}
IFB_PROGRAMS = {"egress": "egress_from"}
SELECTOR_PROGRAMS = {"ingress": "select_delayed"}     # a classic filter: mirred is tc's action


def experiment_actions(experiment):
    return [name for name in ("partition", "loss", "duplicate", "corrupt", "delay", "bandwidth")
            if getattr(experiment, name)]


@dataclass
class ActiveRule:
    slot: int
    direction: str
    keys: frozenset
    group: int = 0                 # index of its policy.PeerGroup in ActiveExperiment.groups


@dataclass
class ActiveExperiment(Placement):
    rules: list = field(default_factory=list)       # ActiveRule, one per direction and peer group
    groups: list = field(default_factory=list)      # policy.PeerGroup, host names as last resolved
    links: list = field(default_factory=list)       # keys of the hooks it holds
    fq_links: list = field(default_factory=list)    # keys of the fq roots it holds
    ifbs: list = field(default_factory=list)        # keys of the ifbs it holds
    selectors: list = field(default_factory=list)   # keys of the filters that send packets to the ifb


class NetFaultEngine(LeasedPlacements):
    kind = spec.KINDS["NetworkChaos"]
    what = "network faults"

    holds_fq = True           # node.py hands it the process's fq_roots

    def __init__(self, datapath, capabilities, lease_s=DEFAULT_LEASE_S, fq=None):
        super().__init__(lease_s)
        self.datapath = datapath
        self.capabilities = capabilities
        self._free_slots = list(range(layout.MAX_RULES - 1, -1, -1))
        self._table = policy.PeerTable()
        self._entries = {}        # peer key -> slots, as written to kfault_peers
        # tcx links where the kernel has them (ordered first, gone with the agent), else clsact.
        tcx = capabilities.get("tcx")
        hooks = TcxHooks if tcx and tcx.available else ClsactHooks
        self._hooks = SharedPerLink(hooks.attach, hooks.detach)
        self._fq = fq if fq is not None else fq_roots()
        self._ifbs = SharedPerLink(lambda where: EdtIfb.add(where, hooks.attach, self._programs(IFB_PROGRAMS)),
                                   EdtIfb.delete)
        self._selectors = SharedPerLink(self._attach_selector, ClsactHooks.detach)

    @classmethod
    def load(cls, capabilities, lease_s=DEFAULT_LEASE_S, fq=None):
        """Compile and load netfault.c; `capabilities` gains what this kernel can do for it,
        also when it can't (KernelUnsupported). `fq`: the fq roots it shares (tc.fq_roots)."""
        try:
            datapath = NetDatapath()
        except KernelUnsupported as err:
            capabilities.update(probe_capabilities(err))
            raise
        capabilities.update(probe_capabilities())
        return cls(datapath, capabilities, lease_s, fq)

    def close(self):
        self.revoke_all()
        self.datapath.close()

    # ---- targets -------------------------------------------------------------------------

    @staticmethod
    def resolve(target, experiment):
        if isinstance(target, PodRef):
            return [resolve_pod_network(target)]
        return [resolve_net_target(target, experiment.device)]

    @staticmethod
    def describe(target):
        return ", ".join(i.inside.ifname for i in target.interfaces)

    # ---- placing and removing ----------------------------------------------------------

    def check(self, experiment):
        for action in experiment_actions(experiment):
            ok, reason = action_support(self.capabilities, action)
            if not ok:
                raise KernelUnsupported(f"{action} is not supported on this node: {reason}")
        if experiment.needs_edt and "from" in experiment.directions:
            for need in RECEIVED_EDT_NEEDS:
                cap = self.capabilities.get(need)
                if not cap or not cap.available:
                    raise KernelUnsupported(f"{experiment.action} with direction from is not supported on this node: "
                                            f"{cap.reason if cap else need + ' not probed'}")

    def apply(self, experiment, target, lease_s=None):
        """Inject `experiment` on `target` (replacing its earlier version). Live on return."""
        self.check(experiment)
        groups = policy.peer_groups(experiment, peer_names.networks_of)   # PeerNotResolved: nothing placed
        with self._lock:
            existing = self._replacing(experiment, target)
            if existing:
                return existing
            addresses = [a for iface in target.interfaces for a in iface.addresses]
            if not addresses:
                raise TargetUnsuitable(f"{target.name}: its interfaces have no IP address to match packets by; "
                                       "give the target an address, or name another device")
            active = ActiveExperiment(experiment, target, lease_ns=self._lease_for(lease_s), groups=groups)
            self._start(active, experiment)
            try:
                entries = self._allocate_rules(active, addresses)
                self._attach_hooks(active)
                self._hold_fq(active)
                self._write_rules(active, entries)
            except Exception:
                self._release(active)     # the one way back: undoes whatever the steps took
                raise
            self._active[active.key] = active
            log.info("applied %s on %s: slots %s", experiment.key, target.name, [r.slot for r in active.rules])
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

    def counts(self):
        """Every placement's rules and packets, and this node's kernel features (counts.py)."""
        return NetCounts(
            [NetPlacementCounts(active.experiment.key, active.target.name, active.experiment.action, len(active.rules),
                                {direction: {outcome: Traffic(*numbers) for outcome, numbers in outcomes.items()}
                                 for direction, outcomes in self.counters(active).items()})
             for active in self.active()],
            {cap.name: cap.available for cap in self.capabilities.values()})

    # ---- the steps of apply, and their undoing ---------------------------------------------

    def _take_slot(self):
        if not self._free_slots:
            raise CapacityExhausted(f"all {layout.MAX_RULES} network rule slots of this node are in use; "
                                    "revoke an experiment first")
        return self._free_slots.pop()

    def _allocate_rules(self, active, addresses):
        """A rule slot per direction and peer group, entered in the peer table; returns the
        kfault_peers entries to write (RuleConflict where too many rules would overlap)."""
        affected = set()
        for direction in active.experiment.directions:
            for index, group in enumerate(active.groups):
                keys = policy.peer_keys(direction, addresses, group.networks)
                rule = ActiveRule(self._take_slot(), direction, keys, index)
                active.rules.append(rule)
                affected |= self._table.add(rule.slot, rule.keys)
        return self._table.entries(affected)

    def _attach_hooks(self, active):
        for iface in active.target.interfaces:
            active.links.append(self._hooks.hold(iface.inside, self._programs(TARGET_PROGRAMS)))

    def _programs(self, programs):
        return {hook: (self.datapath.fd(name), name) for hook, name in programs.items()}

    def _hold_fq(self, active):
        if not active.experiment.needs_edt:
            return
        # Egress programs set skb->tstamp; fq at that egress holds the packet: the target's own
        # for what it sends, the ifb (one per namespace, fq at its root) for what it receives.
        if "to" in active.experiment.directions:
            for iface in active.target.interfaces:
                active.fq_links.append(self._fq.hold(iface.inside))
        if "from" in active.experiment.directions:
            key = self._ifbs.hold(Link(active.target.netns, 0, "(namespace)"))
            active.ifbs.append(key)
            for iface in active.target.interfaces:
                active.selectors.append(self._selectors.hold(iface.inside, self._ifbs.get(key).link.ifindex))

    def _attach_selector(self, link, ifb_ifindex):
        """select_delayed on the interface's ingress, right after our ingress_from where that is
        a classic filter too (tcx links run before every classic filter anyway)."""
        ours = self._hooks.get((link.netns.inode, link.ifindex))
        after = {"ingress": ours.priority("ingress")} if isinstance(ours, ClsactHooks) else None
        return ClsactHooks.attach(link, self._programs(SELECTOR_PROGRAMS), redirect_to=ifb_ifindex, after=after)

    def _write_rules(self, active, entries):
        """Last: from here the BPF programs act on the rules."""
        for rule in active.rules:
            fields = policy.rule_fields(active.experiment, active.groups[rule.group].peer_ports)
            self._reset_slot(rule.slot)
            write_slot(self.datapath.rules, rule.slot, {**fields, **rule_deadline(active.deadline_ns)})
        self._write_entries(entries)

    def _release(self, active):
        log.info("revoking %s on %s", *active.key)
        affected = set()
        for rule in active.rules:
            affected |= self._table.remove(rule.slot)
        self._write_entries(self._table.entries(affected))
        for rule in active.rules:
            del self.datapath.rules[self.datapath.rules.Key(rule.slot)]  # an array slot: zeroed
            self._free_slots.append(rule.slot)
        self._selectors.let_go(active.selectors)     # before our hooks: they share a clsact
        active.selectors.clear()
        self._hooks.let_go(active.links)
        active.links.clear()
        self._fq.let_go(active.fq_links)
        active.fq_links.clear()
        self._ifbs.let_go(active.ifbs)
        active.ifbs.clear()

    # ---- following host names ------------------------------------------------------------

    def renew(self, keys=None):
        """Resolve host names again first, so a changed DNS answer is followed at each renewal."""
        self._follow_names(keys)
        return super().renew(keys)

    def _follow_names(self, keys):
        named = [a for a in self.active() if (keys is None or a.key in keys)
                 and any(peer.host for peer in a.experiment.peers)]
        answers = {}    # one lookup per name and renewal, however many placements name it

        def networks_of(peer):
            if peer not in answers:
                answers[peer] = peer_names.networks_of(peer)
            return answers[peer]

        for active in named:
            try:   # outside the lock: a slow resolver must not hold up other placements
                groups = policy.peer_groups(active.experiment, networks_of)
            except Refusal as err:
                log.warning("%s on %s: keeping the last addresses: %s", *active.key, err)
                continue
            with self._lock:
                if self._active.get(active.key) is active and groups != active.groups:
                    self._repoint(active, groups)

    def _repoint(self, active, groups):
        """Move a placement's rules to its peers' new addresses (same slots, same rules)."""
        addresses = [a for iface in active.target.interfaces for a in iface.addresses]
        old_keys = {rule.slot: rule.keys for rule in active.rules}
        affected = set()
        for rule in active.rules:
            affected |= self._table.remove(rule.slot)
            rule.keys = policy.peer_keys(rule.direction, addresses, groups[rule.group].networks)
            affected |= self._table.add(rule.slot, rule.keys)
        try:
            entries = self._table.entries(affected)
        except Refusal as err:    # too many overlapping rules at the new addresses: stay put
            log.warning("%s on %s: keeping the last addresses: %s", *active.key, err)
            for rule in active.rules:
                self._table.remove(rule.slot)
                rule.keys = old_keys[rule.slot]
                self._table.add(rule.slot, rule.keys)
            return
        self._write_entries(entries)
        log.info("%s on %s: peers now %s", *active.key, [str(n) for g in groups for n in g.networks])
        active.groups = groups

    # ---- internals ---------------------------------------------------------------------

    def _write_deadline(self, active):
        for rule in active.rules:
            update_slot(self.datapath.rules, rule.slot, **rule_deadline(active.deadline_ns))

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
