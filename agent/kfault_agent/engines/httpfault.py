"""The HTTP fault engine: places HTTPChaos experiments on a pod's own interface as rules of
bpf/httpfault.c: a slot per placement (its rule and the DFA of its path glob, or of its
serverName for HTTPS), a bit in the mask of each (pod address, port), the port's bit in
kfault_http_ports, the two programs on the pod's end of its veth, and for a delay sch_fq at
that interface's root (EDT).

Its own programs rather than rules of netfault.c, as DNSChaos's (docs/design/network.md): a
request line is read only by segments to or from an armed port."""
from dataclasses import dataclass, field

from kfault_agent.engines.counts import HttpCounts, HttpPlacementCounts
from kfault_agent.engines.leases import DEFAULT_LEASE_S
from kfault_agent.engines.pod_tc import PodInterfaceEngine, PodRulePlacement, mapped
from kfault_agent.errors import KernelUnsupported
from kfault_agent.kernel.capabilities import action_support
from kfault_agent.kernel.loader import HttpDatapath
from kfault_agent.kernel.tc import fq_roots
from kfault_api import glob_dfa, layout, spec

# A hook of the pod's own interface -> the program attached there (bpf/httpfault.c).
TARGET_PROGRAMS = {"ingress": "http_request_in", "egress": "http_response_out"}
TARGETS = {"Request": layout.HTTP_REQUEST, "Response": layout.HTTP_RESPONSE}


def _status_word(code):
    """A status code as the program reads it after "HTTP/1.1": " NNN", a little-endian u32."""
    return int.from_bytes(f" {code:03d}".encode(), "little")


def http_rule_fields(experiment):
    """The kfault_http_rule of an experiment, but its deadline."""
    flags = ((layout.HTTP_ABORT if experiment.abort else 0)
             | (layout.HTTP_REPLACE if experiment.replace_code is not None else 0)
             # a serverName's DFA is walked over the ClientHello's name as a path is (rule_dfa)
             | (layout.HTTP_HAS_PATH if experiment.path is not None or experiment.server_name is not None else 0)
             | (layout.HTTP_HAS_CODE if experiment.code is not None else 0))
    fields = {"target": TARGETS[experiment.target], "flags": flags, "delay_ns": experiment.delay_ns}
    if experiment.method:
        fields["method"] = int.from_bytes((experiment.method + " ").encode(), "little")
        fields["method_mask"] = (1 << (8 * (len(experiment.method) + 1))) - 1
    if experiment.code is not None:
        fields["code"] = _status_word(experiment.code)
    if experiment.replace_code is not None:
        fields["replace"] = _status_word(experiment.replace_code)
    return fields


def rule_dfa(experiment):
    """The DFA of the rule's slot: of its serverName (HTTPS: a ClientHello's name, matched as DNS
    names are, bpf/lib/tls.h), else of its path."""
    if experiment.server_name is not None:
        return glob_dfa.compile_name_globs([experiment.server_name], layout.IO_ACCEPT_STATE)
    return glob_dfa.compile_http_path_glob(experiment.path or "*", layout.IO_ACCEPT_STATE)


@dataclass
class ActiveHttp(PodRulePlacement):
    # its keys: (address, port, hello), its kfault_http_targets entries
    fq_links: list = field(default_factory=list)    # keys of the fq roots it holds (delay)


class HttpFaultEngine(PodInterfaceEngine):
    kind = spec.KINDS["HTTPChaos"]
    what = "HTTP faults"
    datapath_type = HttpDatapath
    programs = TARGET_PROGRAMS
    max_rules = layout.HTTP_MAX_RULES
    counted = "messages"
    outcomes = layout.HTTP_OUTCOMES
    scope = "http"
    counts_types = (HttpCounts, HttpPlacementCounts)
    slot_what = "HTTP rule"
    placement_type = ActiveHttp
    matched_what = "requests"

    holds_fq = True           # node.py hands it the process's fq_roots

    def __init__(self, datapath, capabilities, lease_s=DEFAULT_LEASE_S, fq=None):
        super().__init__(datapath, capabilities, lease_s)
        self._port_users = {}     # port -> placements using it, for kfault_http_ports' bits
        self._fq = fq if fq is not None else fq_roots()

    def check(self, experiment):
        """A delay needs sch_fq (EDT); the rest, a kernel that loads httpfault.c."""
        if experiment.delay_ns:
            ok, reason = action_support(self.capabilities, "delay")
            if not ok:
                raise KernelUnsupported(f"HTTPChaos delay is not supported on this node: {reason}")

    def _rule_dfa(self, experiment):
        return rule_dfa(experiment)

    def _rule_fields(self, experiment):
        return http_rule_fields(experiment)

    def _mask_keys(self, experiment, addresses):
        return [(address, experiment.port, int(experiment.server_name is not None)) for address in addresses]

    def _hold_more(self, active):
        if active.experiment.delay_ns:
            active.fq_links.extend(self._fq.hold(iface.inside) for iface in active.target.interfaces)
        self._use_port(active.experiment.port, +1)

    def _use_port(self, port, change):
        users = self._port_users.get(port, 0) + change
        if users > 0:
            self._port_users[port] = users
        else:
            self._port_users.pop(port, None)
        word = port // 64
        bits = sum(1 << (p % 64) for p in self._port_users if p // 64 == word)
        self.datapath.ports[self.datapath.ports.Key(word)] = self.datapath.ports.Leaf(bits)

    def _target_key(self, where):
        """where: (address, port, hello), hello 1 for the serverName rules' mask."""
        address, port, hello = where
        key = self.datapath.targets.Key()
        key.addr[:] = list(mapped(address).packed)
        key.port = port
        key.hello = hello
        return key

    def _set_mask(self, where, mask):
        """As every engine's, and the requests' mask of (address, port) then says whether
        serverName rules are placed there too (KFAULT_HTTP_HELLO_RULES: the program reads a
        ClientHello only then)."""
        super()._set_mask(where, mask)
        address, port, _hello = where
        requests = self._masks.get((address, port, 0), 0)
        marked = requests | (layout.HTTP_HELLO_RULES if self._masks.get((address, port, 1)) else 0)
        key = self._target_key((address, port, 0))
        if marked:
            self.datapath.targets[key] = self.datapath.targets.Leaf(marked)
            return
        try:
            del self.datapath.targets[key]
        except KeyError:
            pass

    def _release_more(self, active, placed):
        if placed:
            self._use_port(active.experiment.port, -1)
        self._forget_flows(active)
        self._fq.let_go(active.fq_links)
        active.fq_links.clear()

    def _forget_flows(self, active):
        """The pod's connections on the port: what a request left pending for this slot must not
        reach a later rule of the same slot."""
        pods = {bytes(mapped(address).packed) for address, _port, _hello in active.keys}
        stale = [key for key in list(self.datapath.flows.keys())
                 if bytes(key.pod) in pods and key.port == active.experiment.port]
        for key in stale:
            try:
                del self.datapath.flows[key]
            except KeyError:
                pass
