"""NetworkChaos delay.per: connection: only a connection's opening packet is held.

Host tier: what egress_to decides for each packet, run on built packets by BPF_PROG_TEST_RUN
(the departure time it gives is the __sk_buff's tstamp; nothing is queued, so no fq is needed).
VM tier (sch_fq): a real client and server, connect() slower, a download on the open connection
not; a UDP flow's first datagram held, the rest behind it in order."""
import ipaddress
import statistics
import struct
import time

import pytest

from kfault_agent.engines import netfault
from kfault_agent.kernel import topology
from kfault_agent.kernel.capabilities import Capability
from kfault_api import spec
from kfault_lab import connect_probe, prog_run
from tests.kernel.test_delay_bandwidth import one_way_ms, out_of_order

pytestmark = pytest.mark.kernel("tc-bpf", "clsact")
DELAY_NS = 200_000_000
SLACK_NS = 50_000_000    # a busy machine between reading the clock and the program's run
SYN, ACK = 0x02, 0x10


def chaos(name="conn", **fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "NetworkChaos", "metadata": {"name": name},
                                  "spec": {"action": "delay", "delay": {"latency": "200ms", "per": "connection"},
                                           **fields}})


def target(lab, host="a"):
    return topology.resolve_net_target(f"netns:{lab.ns(host)}")


def ipv4(src, dst, protocol, l4):
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, protocol, 0,
                     ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + l4


def tcp(src, dst, sport, flags, seq):
    return ipv4(src, dst, 6, struct.pack("!HHIIBBHHH", sport, 80, seq, 0, 5 << 4, flags, 65535, 0, 0))


def udp(src, dst, sport):
    return ipv4(src, dst, 17, struct.pack("!HHHH", sport, 53, 12, 0) + b"abcd")


@pytest.fixture
def held_egress(lab, datapath, capabilities, monkeypatch):
    """An engine placing rules as on a node with fq, without fq: the test runs egress_to itself,
    so nothing is queued; departure(packet) -> (the departure it gave, the clock just before)."""
    caps = {**capabilities, "sch_fq": Capability("sch_fq", True, "no queue: BPF_PROG_TEST_RUN")}
    engine = netfault.NetFaultEngine(datapath, caps, lease_s=600)
    monkeypatch.setattr(engine, "_hold_fq", lambda active: None)

    def departure(packet):
        before = time.monotonic_ns()     # CLOCK_MONOTONIC, bpf_ktime_get_ns()'s clock
        _, _, skb = prog_run.run(datapath.fd("egress_to"), packet, skb=True)
        return prog_run.tstamp(skb), before
    yield engine, departure
    engine.revoke_all()


def test_each_opening_packet_is_held_once_and_its_flow_waits_behind_it(lab, held_egress):
    engine, departure = held_egress
    a_ip, b_ip = lab.link("a", "b", "10.250.1")
    engine.apply(chaos(), target(lab))
    held, before = departure(tcp(a_ip, b_ip, 40000, SYN, 1000))
    assert DELAY_NS <= held - before <= DELAY_NS + SLACK_NS
    # The SYN's retransmission (same ISN) leaves with it, not 200 ms after itself; the flow's
    # next segment, sent while the SYN is held, waits behind it (fq would let it overtake).
    assert departure(tcp(a_ip, b_ip, 40000, SYN, 1000))[0] == held
    assert departure(tcp(a_ip, b_ip, 40000, ACK, 1001))[0] == held
    # A SYN-ACK opens too (the target as the server); a new ISN on the same ports is a new connection.
    again, before = departure(tcp(a_ip, b_ip, 40000, SYN | ACK, 5000))
    assert again > held and DELAY_NS <= again - before <= DELAY_NS + SLACK_NS
    # A connection whose SYN was not seen (opened before the experiment) is never held.
    assert departure(tcp(a_ip, b_ip, 40001, ACK, 7))[0] == 0
    # UDP: a flow's first datagram opens it; the next, sent meanwhile, waits behind it.
    first, before = departure(udp(a_ip, b_ip, 40002))
    assert DELAY_NS <= first - before <= DELAY_NS + SLACK_NS
    assert departure(udp(a_ip, b_ip, 40002))[0] == first
    counted = {outcome: count for _, _, outcome, count in engine.counter_rows("default/conn")}
    assert counted["delayed"] == 6, counted      # the held packets only, not the never-seen connection's


def test_an_expired_hold_holds_nothing_more(lab, held_egress):
    engine, departure = held_egress
    a_ip, b_ip = lab.link("a", "b", "10.250.1")
    engine.apply(chaos(delay={"latency": "1ms", "per": "connection"}), target(lab))
    assert departure(udp(a_ip, b_ip, 40003))[0] > 0
    time.sleep(0.01)
    assert departure(udp(a_ip, b_ip, 40003))[0] == 0     # past its opening packet's departure: not held
    assert departure(tcp(a_ip, b_ip, 40004, SYN, 1))[0] > 0
    time.sleep(0.01)
    assert departure(tcp(a_ip, b_ip, 40004, ACK, 2))[0] == 0


@pytest.mark.kernel("sch_fq")
def test_delay_per_connection_makes_connecting_200ms_slower_but_not_a_transfer_on_the_connection(lab, engine):
    _, b_ip = lab.link("a", "b", "10.250.1")
    server = connect_probe.ConnectServer(lab, "b", 5201)
    try:
        plain = connect_probe.measure_in(lab, "a", b_ip, 5201)
        engine.apply(chaos(), target(lab))
        held = connect_probe.measure_in(lab, "a", b_ip, 5201)
    finally:
        server.close()
    # Each SYN is held 200 ms, once (the SYN's retransmission timer is 1 s: none was sent).
    assert statistics.median(plain["connect_ms"]) < 50, plain
    assert all(150 <= ms < 1000 for ms in held["connect_ms"]), held
    # A 1 MB download on a connection opened under the fault: a delay per packet would cost it
    # at least one 200 ms round trip; per connection it costs none (the ratio is bench/'s).
    assert max(held["transfer_ms"]) < 200, (plain, held)


@pytest.mark.kernel("sch_fq")
def test_delay_per_connection_received_holds_a_udp_flow_first_datagram_only(lab, engine):
    a_ip, _ = lab.link("a", "b", "10.250.1")
    engine.apply(chaos(direction="from"), target(lab))
    # 300 datagrams of one flow at 200 a second, from b to a: the first is held 200 ms, the ~40
    # sent meanwhile queue behind it (never overtake it), the rest pass at once.
    latencies, order = one_way_ms(lab, "b", "a", a_ip)
    assert order[0] == 0 and out_of_order(order) == 0, order[:50]
    assert latencies[0] >= 180, latencies[:5]
    assert statistics.median(latencies) < 20, statistics.median(latencies)
