"""The DNS fault engine: places DNSChaos experiments on a pod's own interface as rules of
bpf/dnsfault.c: a slot per placement (its rule and its name patterns' DFA), a bit in the mask of
each of the pod's addresses, and the two programs on the pod's end of its veth.

Its own programs rather than rules of netfault.c (docs/design/network.md says why): a query's
name is read and walked only by packets to or from port 53, and NetworkChaos's programs and
their verifier budget stay as they are. Targets, hooks and leases work as the network engine's.
"""

from kfault_agent.engines.counts import DnsCounts, DnsPlacementCounts
from kfault_agent.engines.pod_tc import PodInterfaceEngine, mapped
from kfault_agent.kernel.loader import DnsDatapath
from kfault_api import glob_dfa, layout, spec

# A hook of the pod's own interface -> the program attached there (bpf/dnsfault.c).
TARGET_PROGRAMS = {"egress": "dns_query_out", "ingress": "dns_answer_in"}
RCODES = {"SERVFAIL": 2, "NXDOMAIN": 3, "REFUSED": 5, "drop": layout.DNS_RCODE_DROP}


def dns_rule_fields(experiment):
    """The kfault_dns_rule of an experiment, but its deadline."""
    if experiment.action == "error":
        return {"action": layout.DNS_ERROR, "rcode": RCODES[experiment.error_response]}
    return {"action": layout.DNS_RANDOM, "rcode": 0}


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
    matched_what = "DNS queries"

    def check(self, experiment):
        """Everything a kernel that loads dnsfault.c can do."""

    def _rule_dfa(self, experiment):
        return glob_dfa.compile_name_globs(experiment.patterns, layout.IO_ACCEPT_STATE)

    def _rule_fields(self, experiment):
        return dns_rule_fields(experiment)

    def _target_key(self, address):
        key = self.datapath.targets.Key()
        key.addr[:] = list(mapped(address).packed)
        return key

