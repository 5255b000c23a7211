"""The DNS fault engine: places DNSChaos experiments on a pod's own interface as rules of
bpf/dnsfault.c: a slot per placement (its rule and its name patterns' DFA), a bit in the mask of
each of the pod's addresses, and the two programs on the pod's end of its veth.

Its own programs rather than rules of netfault.c (docs/design/network.md says why): a query's
name is read and walked only by packets to or from port 53, and NetworkChaos's programs and
their verifier budget stay as they are. Targets, hooks and leases work as the network engine's.
"""
import logging
from dataclasses import dataclass, field

from kfault_agent.engines.counts import DnsCounts, DnsPlacementCounts
from kfault_agent.engines.leases import Placement
from kfault_agent.engines.pod_tc import PodInterfaceEngine, mapped
from kfault_agent.errors import TargetUnsuitable
from kfault_agent.kernel.loader import DnsDatapath
from kfault_agent.kernel.maps import rule_deadline, write_padded_dfa, write_slot
from kfault_api import glob_dfa, layout, spec

log = logging.getLogger(__name__)
# A hook of the pod's own interface -> the program attached there (bpf/dnsfault.c).
TARGET_PROGRAMS = {"egress": "dns_query_out", "ingress": "dns_answer_in"}
RCODES = {"SERVFAIL": 2, "NXDOMAIN": 3, "REFUSED": 5, "drop": layout.DNS_RCODE_DROP}


def dns_rule_fields(experiment):
    """The kfault_dns_rule of an experiment, but its deadline."""
    if experiment.action == "error":
        return {"action": layout.DNS_ERROR, "rcode": RCODES[experiment.error_response]}
    return {"action": layout.DNS_RANDOM, "rcode": 0}


@dataclass
class ActiveDns(Placement):
    slot: int = 0
    addresses: list = field(default_factory=list)   # the pod's addresses, as kfault_dns_targets keys
    links: list = field(default_factory=list)       # keys of the hooks it holds


class DnsFaultEngine(PodInterfaceEngine):
    kind = spec.KINDS["DNSChaos"]
    what = "DNS faults"
    datapath_type = DnsDatapath
    programs = TARGET_PROGRAMS
    max_rules = layout.DNS_MAX_RULES
    counted = "queries"
    outcomes = layout.DNS_OUTCOMES
    scope = "dns"
    counts_types = (DnsCounts, DnsPlacementCounts)
    slot_what = "DNS rule"

    def check(self, experiment):
        """Everything a kernel that loads dnsfault.c can do."""

    def apply(self, experiment, target, lease_s=None):
        dfa = glob_dfa.compile_name_globs(experiment.patterns, layout.IO_ACCEPT_STATE)
        with self._lock:
            existing = self._replacing(experiment, target)
            if existing:
                return existing
            addresses = [a for iface in target.interfaces for a in iface.addresses]
            if not addresses:
                raise TargetUnsuitable(f"{target.name}: its interfaces have no IP address to match DNS queries by")
            active = ActiveDns(experiment, target, lease_ns=self._lease_for(lease_s), slot=self._take_slot(),
                               addresses=addresses)
            self._start(active, experiment)
            try:
                write_padded_dfa(self.datapath.dfa, active.slot, dfa)
                write_slot(self.datapath.counters, active.slot, {})
                write_slot(self.datapath.rules, active.slot,
                           {**dns_rule_fields(experiment), **rule_deadline(active.deadline_ns)})
                active.links.extend(self._hold_programs(target))
                for address in addresses:      # last: from here the programs act on it
                    self._add_to_mask(address, active.slot)
            except Exception:
                self._release(active)
                raise
            self._active[active.key] = active
            log.info("applied %s on %s: DNS slot %d", experiment.key, target.name, active.slot)
            return active

    def _target_key(self, address):
        key = self.datapath.targets.Key()
        key.addr[:] = list(mapped(address).packed)
        return key

    def _release(self, active):
        log.info("revoking %s on %s", *active.key)
        for address in active.addresses:
            self._remove_from_mask(address, active.slot)
        del self.datapath.rules[self.datapath.rules.Key(active.slot)]   # an array slot: zeroed
        self._give_slot(active.slot)
        self._let_go_programs(active.links)

