"""DNS benchmark: what DNSChaos's programs cost a packet they don't act on, beside what
netfault.c's egress_to costs the same packet (bench/net_overhead.py's section 3), per packet,
by BPF_PROG_TEST_RUN, in one run:
  (a) egress_to, no NetworkChaos rule matching        the reference
  (b) dns_query_out, a UDP datagram to port 5001      the port check: every packet but DNS
  (c) dns_query_out, a TCP segment to port 5001       the same, TCP
  (d) dns_query_out, a query from a pod with no rule   port 53, then one hash lookup
  (e) dns_query_out, a query whose name matches no     the whole name read and DFA walk
      pattern of the pod's rule
  (f) dns_answer_in, a UDP datagram from port 5001     the ingress program's port check
  (0) a program of two instructions (pass)             the floor: BPF_PROG_TEST_RUN's own cost
What a packet pays for a hook is its row less (0).
Run as root: make bench-dns.
"""
import ipaddress
import os
import statistics
import struct

from net_overhead import prog_ns_per_packet, udp_packet

from kfault_agent.engines import dnsfault, netfault
from kfault_agent.kernel import bpfcall, capabilities, loader, topology
from kfault_api import spec
from kfault_lab.hosts import Lab

SUBNET = "10.250.53"
ROUNDS = 5


def tcp_packet(src, dst):
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0,
                     ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    tcp = struct.pack("!HHIIBBHHH", 40000, 5001, 1, 1, 5 << 4, 0x10, 65535, 0, 0)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp


def dns_query(src, dst, name):
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    message = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + question + struct.pack("!HH", 1, 1)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(message), 0, 0, 64, 17, 0,
                     ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    udp = struct.pack("!HHHH", 40000, 53, 8 + len(message), 0)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp + message


# r0 = TC_ACT_UNSPEC (-1); exit: a program that passes every packet, for the floor.
PASS_PROGRAM = struct.pack("<BBhi", 0xb7, 0, 0, -1) + struct.pack("<BBhi", 0x95, 0, 0, 0)


def ns(fd, packet):
    # a warm-up run first: the first DNS row measured took 3-4 times its cost, whichever it was
    prog_ns_per_packet(fd, packet)
    return statistics.median(prog_ns_per_packet(fd, packet) for _ in range(ROUNDS))


def main():
    caps = capabilities.probe_capabilities()
    net, dns = loader.NetDatapath(), loader.DnsDatapath()
    lab = Lab()
    try:
        a, b = lab.link("a", "b", SUBNET)
        target = topology.resolve_net_target(f"netns:{lab.ns('a')}")
        net_engine = netfault.NetFaultEngine(net, caps)
        dns_engine = dnsfault.DnsFaultEngine(dns, caps)
        # a rule on a peer no packet here goes to, so egress_to finds the lookup's miss as in production
        net_engine.apply(spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "NetworkChaos",
                                                "metadata": {"name": "idle"},
                                                "spec": {"action": "partition", "externalTargets": ["10.99.0.1"]}}),
                         target)
        long_name = "a-rather-long-label-of-a-name." * 6 + "example.org"
        mid_name = "a-rather-long-label-of-a-name.example.org"
        floor = bpfcall.prog_load(bpfcall.PROG_SCHED_CLS, PASS_PROGRAM, "GPL", "kfault_pass")
        rows = [("(0) two instructions: pass", floor, udp_packet(a, b)),
                ("(a) egress_to, no rule matching", net.fd("egress_to"), udp_packet(a, b)),
                ("(b) dns_query_out, UDP to port 5001", dns.fd("dns_query_out"), udp_packet(a, b)),
                ("(c) dns_query_out, TCP to port 5001", dns.fd("dns_query_out"), tcp_packet(a, b)),
                ("(d) dns_query_out, query, pod without rule", dns.fd("dns_query_out"),
                 dns_query("10.250.99.1", b, "www.example.org")),
                ("(e) dns_query_out, query, name unmatched (15 B)", dns.fd("dns_query_out"),
                 dns_query(a, b, "www.example.org")),
                (f"(e') the same, name of {len(mid_name)} B", dns.fd("dns_query_out"), dns_query(a, b, mid_name)),
                (f"(e'') the same, name of {len(long_name)} B", dns.fd("dns_query_out"), dns_query(a, b, long_name)),
                ("(f) dns_answer_in, UDP from port 5001", dns.fd("dns_answer_in"), udp_packet(b, a))]
        dns_engine.apply(spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "DNSChaos",
                                                "metadata": {"name": "idle"},
                                                "spec": {"action": "error", "patterns": ["*.example.test"]}}),
                         target)
        print(f"per-packet cost, BPF_PROG_TEST_RUN, median of {ROUNDS} runs of 2,000,000:")
        floor_ns = None
        for label, fd, packet in rows:
            cost = ns(fd, packet)
            floor_ns = cost if floor_ns is None else floor_ns
            print(f"   {label:<48} {cost:6.1f} ns   {cost - floor_ns:+6.1f} ns over (0)")
        os.close(floor)
        dns_engine.revoke_all()
        net_engine.revoke_all()
    finally:
        lab.close()
        dns.close()
        net.close()


if __name__ == "__main__":
    main()
