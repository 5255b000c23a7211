"""Experiment -> kernel rules, network and file I/O. Pure: decides what to inject, never touches the kernel."""
import ipaddress
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Optional

from kfault_agent.errors import RuleConflict
from kfault_api import layout, schema, syscalls

ALL_PEERS = ipaddress.ip_network("::/0")


def as_ipv6_network(network):
    """IPv4 networks become IPv4-mapped IPv6 (::ffff:a.b.c.d/96+n), the layout the BPF key uses."""
    network = ipaddress.ip_network(network, strict=False)
    if network.version == 4:
        mapped = ipaddress.IPv6Address("::ffff:" + str(network.network_address))
        return ipaddress.IPv6Network((mapped, 96 + network.prefixlen))
    return network


def as_ipv6_address(address):
    return as_ipv6_network(ipaddress.ip_network(address)).network_address


def threshold(probability):
    """A probability as the u32 the BPF program compares a random draw against."""
    if probability >= 1:
        return layout.ALWAYS
    return max(0, int(round(probability * 2**32)))


# attrOverride's plain fields: the spec's name -> (kfault_io_rule field, KFAULT_IO_ATTR_* bit).
ATTR_FIELDS = {"ino": layout.IO_ATTR_INO, "size": layout.IO_ATTR_SIZE, "blocks": layout.IO_ATTR_BLOCKS,
               "nlink": layout.IO_ATTR_NLINK, "uid": layout.IO_ATTR_UID, "gid": layout.IO_ATTR_GID}
ATTR_TIMES = {"atime": layout.IO_ATTR_ATIME, "mtime": layout.IO_ATTR_MTIME, "ctime": layout.IO_ATTR_CTIME}
S_IFMT, PERM_BITS = 0o170000, 0o7777


def attr_fields(attr):
    """The kfault_io_rule fields of an attrOverride: the values, and in `attrs` which to write.
    kind and perm are both st_mode: mode_mask says which of its bits the rule replaces, so one
    alone keeps the file's other bits. rdev is st_rdev's encoding; statx holds it split."""
    fields, attrs = {}, 0
    for name, bit in ATTR_FIELDS.items():
        if getattr(attr, name) is not None:
            fields[name], attrs = getattr(attr, name), attrs | bit
    for name, bit in ATTR_TIMES.items():
        if getattr(attr, name) is not None:
            fields[f"{name}_sec"], fields[f"{name}_nsec"] = getattr(attr, name)
            attrs |= bit
    mode_mask = mode = 0
    if attr.kind is not None:
        mode_mask, mode = mode_mask | S_IFMT, mode | schema.FILE_KINDS[attr.kind]
    if attr.perm is not None:
        mode_mask, mode = mode_mask | PERM_BITS, mode | attr.perm
    if mode_mask:
        fields["mode_mask"], fields["mode"], attrs = mode_mask, mode, attrs | layout.IO_ATTR_MODE
    if attr.rdev is not None:
        fields["rdev"], attrs = attr.rdev, attrs | layout.IO_ATTR_RDEV
        fields["rdev_major"], fields["rdev_minor"] = dev_major(attr.rdev), dev_minor(attr.rdev)
    fields["attrs"] = attrs
    return fields


def dev_major(dev):
    """glibc's major() of a dev_t (os.major, here without a platform dependency)."""
    return ((dev >> 8) & 0xFFF) | ((dev >> 32) & ~0xFFF)


def dev_minor(dev):
    return (dev & 0xFF) | ((dev >> 12) & ~0xFF)


def mistake_fields(mistake):
    """The kfault_io_rule fields of a mistake."""
    return {"filling": layout.IO_FILL_RANDOM if mistake.filling == "random" else layout.IO_FILL_ZERO,
            "max_occurrences": mistake.max_occurrences, "max_length": mistake.max_length}


def chance_thresholds(chance):
    """(after a miss, after a hit) for a percent and a correlation.

    A two-state Markov chain whose stationary rate is the asked percent and whose lag-1
    correlation is the asked correlation: P(hit|hit) = p + c(1-p), P(hit|miss) = p(1-c).
    (netem's averaging of uniform draws makes runs too, but shrinks the rate as c grows.)
    """
    if chance is None:
        return 0, 0
    p, c = chance.percent / 100, chance.correlation / 100
    return threshold(p * (1 - c)), threshold(p + c * (1 - p))


def jitter_weights(correlation):
    """(last, fresh) weights of an AR(1) chain with lag-1 correlation c and the spread of one
    sample: last = c, fresh = sqrt(1 - c^2), in fixed point."""
    c = correlation / 100
    return round(c * layout.WEIGHT_ONE), round(math.sqrt(1 - c * c) * layout.WEIGHT_ONE)


@dataclass(frozen=True)
class PeerGroup:
    """Peers that share one rule per direction: those matched on the same peer ports."""
    peer_ports: Optional[tuple]    # (min, max); None = any port
    networks: tuple                # ip_network


def peer_groups(experiment, networks_of):
    """The experiment's peers, one group per port range: a target's own port (host:port), or
    spec.peerPorts for targets without one. networks_of(ExternalTarget) -> its networks (a
    host name's addresses, resolved by the caller). No targets: one group, every peer."""
    if not experiment.peers:
        return [PeerGroup(experiment.peer_ports, (ALL_PEERS,))]
    networks = defaultdict(dict)   # ports -> networks, in order, once each
    for peer in experiment.peers:
        ports = (peer.port, peer.port) if peer.port else experiment.peer_ports
        networks[ports].update(dict.fromkeys(networks_of(peer)))
    return [PeerGroup(ports, tuple(nets)) for ports, nets in networks.items()]


def rule_fields(experiment, peer_ports=None):
    """The kfault_rule fields (all but the deadline) for an experiment's rule matching
    `peer_ports` (its PeerGroup's)."""
    actions = 0
    if experiment.partition:
        actions |= layout.ACT_PARTITION
        if experiment.partition_behavior == "reject":
            actions |= layout.ACT_REJECT
    if experiment.loss:
        actions |= layout.ACT_LOSS
    if experiment.duplicate:
        actions |= layout.ACT_DUPLICATE
    if experiment.corrupt:
        actions |= layout.ACT_CORRUPT
    if experiment.delay:
        actions |= layout.ACT_DELAY
        if experiment.delay.reorder:
            actions |= layout.ACT_REORDER
        if experiment.delay.per == "connection":
            actions |= layout.ACT_PER_CONNECTION
    if experiment.bandwidth:
        actions |= layout.ACT_BANDWIDTH
    fields = {"actions": actions, "protocol": experiment.protocol}
    for name in ("loss", "duplicate", "corrupt"):
        fields[f"{name}_after_miss"], fields[f"{name}_after_hit"] = chance_thresholds(getattr(experiment, name))
    if experiment.delay:
        fields["delay_ns"] = experiment.delay.latency_ns
        fields["jitter_ns"] = experiment.delay.jitter_ns
        fields["jitter_last_weight"], fields["jitter_fresh_weight"] = jitter_weights(experiment.delay.correlation)
        if experiment.delay.reorder:
            reorder = experiment.delay.reorder.chance
            fields["reorder_after_miss"], fields["reorder_after_hit"] = chance_thresholds(reorder)
            fields["reorder_gap"] = experiment.delay.reorder.gap
    if experiment.bandwidth:
        rate = experiment.bandwidth.rate_bytes_per_sec
        fields["rate_bytes_per_sec"] = rate
        fields["burst_bytes"] = experiment.bandwidth.burst_bytes
        fields["queue_ns"] = experiment.bandwidth.limit_bytes * 10**9 // rate if experiment.bandwidth.limit_bytes else 0
    if peer_ports:
        fields["peer_port_min"], fields["peer_port_max"] = peer_ports
    return fields


def peer_keys(direction, local_addresses, peers):
    """The (direction, target address, peer network) keys of one rule."""
    networks = [as_ipv6_network(p) for p in peers] or [ALL_PEERS]
    return frozenset((layout.DIRECTIONS[direction], as_ipv6_address(local), net)
                     for local in local_addresses for net in networks)


class PeerTable:
    """What kfault_peers must hold: for every peer network some rule names, the slots of all
    rules whose network contains it. The BPF program does one longest-prefix lookup and finds
    every rule that applies, so overlapping experiments compose.

    Changes are incremental: adding or removing a rule recomputes only the entries at or
    inside its networks, so a rule update stays cheap with thousands of rules in place.
    """

    def __init__(self):
        self._keys_of_slot = {}
        self._slots_at = defaultdict(lambda: defaultdict(set))   # (direction, local) -> net -> slots
        self._prefixlens = defaultdict(Counter)                   # (direction, local) -> prefixlen -> nets

    def add(self, slot, keys):
        """Add a rule; returns the keys whose entries may have changed."""
        self._keys_of_slot[slot] = keys
        for direction, local, net in keys:
            group = self._slots_at[(direction, local)]
            if net not in group:
                self._prefixlens[(direction, local)][net.prefixlen] += 1
            group[net].add(slot)
        return self._affected(keys)

    def remove(self, slot):
        """Remove a rule; returns the keys whose entries may have changed."""
        keys = self._keys_of_slot.pop(slot, frozenset())
        affected = self._affected(keys)
        for direction, local, net in keys:
            group = self._slots_at[(direction, local)]
            group[net].discard(slot)
            if not group[net]:
                del group[net]
                self._prefixlens[(direction, local)][net.prefixlen] -= 1
            if not group:
                del self._slots_at[(direction, local)]
                del self._prefixlens[(direction, local)]
        return affected

    def _affected(self, keys):
        affected = set(keys)
        for direction, local, net in keys:
            if net.prefixlen == net.max_prefixlen:
                continue
            for other in self._slots_at.get((direction, local), ()):
                if other.prefixlen > net.prefixlen and other.subnet_of(net):
                    affected.add((direction, local, other))
        return affected

    def entries(self, keys):
        """{key: slots} for `keys`; an empty tuple means the key must not be in the map.
        Raises RuleConflict where more rules overlap than the BPF value holds."""
        result = {}
        for direction, local, net in keys:
            group = self._slots_at.get((direction, local), {})
            if net not in group:
                result[(direction, local, net)] = ()
                continue
            slots = set()
            for length, nets in self._prefixlens[(direction, local)].items():
                if nets and length <= net.prefixlen:   # a network of this length may contain net
                    slots |= group.get(net.supernet(new_prefix=length), set())
            if len(slots) > layout.MAX_RULES_PER_PEER:
                raise RuleConflict(f"{len(slots)} rules would apply to peer {net} of target address "
                                   f"{local}; at most {layout.MAX_RULES_PER_PEER} may overlap")
            result[(direction, local, net)] = tuple(sorted(slots))
        return result


# ---- file I/O: IOChaos -> kfault_io_rule ---------------------------------------------------

# A method's bit in a rule's `methods` mask, and in the counters' stride (kfault.h).
METHOD_BITS = {"open": layout.IO_METHOD_OPEN, "read": layout.IO_METHOD_READ,
               "write": layout.IO_METHOD_WRITE, "fsync": layout.IO_METHOD_FSYNC,
               "getattr": layout.IO_METHOD_GETATTR, "mkdir": layout.IO_METHOD_MKDIR,
               "rmdir": layout.IO_METHOD_RMDIR, "unlink": layout.IO_METHOD_UNLINK,
               "readdir": layout.IO_METHOD_READDIR, "setattr": layout.IO_METHOD_SETATTR,
               "rename": layout.IO_METHOD_RENAME, "create": layout.IO_METHOD_CREATE}
ACTIONS = {"latency": layout.IO_ACT_LATENCY, "fault": layout.IO_ACT_FAULT,
           "attrOverride": layout.IO_ACT_ATTR, "mistake": layout.IO_ACT_MISTAKE}


def io_rule_fields(experiment):
    """The kfault_io_rule fields (all but the deadline) for an IOChaos experiment."""
    fields = {
        "action": ACTIONS[experiment.action],
        "methods": sum(1 << METHOD_BITS[m] for m in experiment.methods),
        "threshold": threshold(experiment.percent / 100),
        "delay_ns": experiment.delay_ns,
        "error": experiment.errno,
    }
    if experiment.attr:
        fields.update(attr_fields(experiment.attr))
    if experiment.mistake:
        fields.update(mistake_fields(experiment.mistake))
    return fields


def walk(dfa, text, state=0):
    """The DFA state after `text` from `state`, or IO_DEAD_STATE."""
    for byte in text.encode("utf-8", "surrogateescape"):
        state = dfa.next[state][byte]
        if state is None:
            return layout.IO_DEAD_STATE
    return state


SYSCALL_ACTIONS = {"fault": layout.SC_ACT_FAULT, "latency": layout.SC_ACT_LATENCY}


def syscall_rule_fields(experiment):
    """The kfault_sc_rule fields (all but the deadline) for a SyscallChaos experiment. The
    threshold is a fraction of 2^32 (2^32: always), which syscallfault.c compares without a branch."""
    return {
        "action": SYSCALL_ACTIONS[experiment.action],
        "threshold": round(experiment.percent / 100 * (1 << 32)),
        "delay_ns": experiment.delay_ns,
        "error": experiment.errno,
    }


def syscall_numbers(experiment):
    """The numbers a SyscallChaos rule is armed on (x86_64)."""
    return sorted(syscalls.X86_64[name] for name in experiment.syscalls)


def syscall_hooks(experiment):
    """The LSM hooks a fault rule needs attached (none for latency)."""
    if experiment.action != "fault":
        return frozenset()
    return frozenset(syscalls.FAULT_HOOKS[name] for name in experiment.syscalls)
