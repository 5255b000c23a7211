"""Network faults on IPv6 peers: real IPv6 traffic between dual-stack test hosts, with the
extension headers applications and the kernel add (hop-by-hop and destination options by
socket option, a routing header built raw, fragment headers by the kernel), measured the way
a user would. Delay and bandwidth on IPv6: tests/kernel/test_delay_bandwidth.py (-k ipv6)."""
import pytest

from kfault_agent.kernel import topology
from kfault_api import spec

pytestmark = pytest.mark.kernel("tc-bpf", "clsact")
SUBNET = "10.250.1"
HEADER_CHAINS = ["-", "hop", "dst", "rt", "hop,dst", "hop,rt,dst"]


def chaos(action, name="exp", **fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "NetworkChaos",
                                  "metadata": {"name": name}, "spec": {"action": action, **fields}})


def target(lab, host="a"):
    return topology.resolve_net_target(f"netns:{lab.ns(host)}")


def dual_stack(lab):
    """Hosts a and b on one link; returns b's IPv6 address (a's is lab.ipv6(SUBNET, 1))."""
    lab.link("a", "b", SUBNET)
    return lab.ipv6(SUBNET, 2)


def test_ipv6_loss_30_percent_looks_like_network_loss(lab, engine):
    b6 = dual_stack(lab)
    engine.apply(chaos("loss", loss={"loss": "30"}), target(lab))
    sent, received, output = lab.ping_flood("a", b6, 3000)
    assert 0.26 <= 1 - received / sent <= 0.34, output
    assert "error" not in output and "No buffer space" not in output, output


def test_ipv6_partition_of_one_peer_address_leaves_its_ipv4_and_others_alone(lab, engine):
    b6 = dual_stack(lab)
    lab.link("a", "c", "10.250.2")
    engine.apply(chaos("partition", direction="both", externalTargets=[f"{b6}/128"]), target(lab))
    assert lab.ping_flood("a", b6, 100)[1] == 0
    _, got = lab.udp("b", "a", lab.ipv6(SUBNET, 1), 100)
    assert got["received"] == []
    assert lab.ping_flood("a", f"{SUBNET}.2", 100)[1] == 100, "IPv4 to the same host is another peer"
    assert lab.ping_flood("a", lab.ipv6("10.250.2", 2), 100)[1] == 100


def test_ipv6_duplicate_50_percent_arrives_twice(lab, engine):
    b6 = dual_stack(lab)
    engine.apply(chaos("duplicate", duplicate={"duplicate": "50"}), target(lab))
    sent, got = lab.udp("a", "b", b6, 4000)
    assert len(got["received"]) == 4000 and sent["send_errors"] == 0
    assert 0.45 <= got["duplicates"] / 4000 <= 0.55, got["duplicates"]


@pytest.mark.parametrize("direction", ["to", "from"])
def test_ipv6_corrupt_40_percent_is_rejected_by_the_receiver(lab, engine, direction):
    dual_stack(lab)
    sender, receiver = ("a", "b") if direction == "to" else ("b", "a")
    address = lab.ipv6(SUBNET, 2 if direction == "to" else 1)
    lab.ping_rtts(sender, address, 1)     # neighbours known: discovery is never faulted anyway
    before = lab.counter(receiver, "Ip6InHdrErrors")
    overflowed_before = lab.counter(receiver, "Udp6RcvbufErrors")
    engine.apply(chaos("corrupt", corrupt={"corrupt": "40"}, direction=direction), target(lab))
    sent, got = lab.udp(sender, receiver, address, 4000)
    rejected = lab.counter(receiver, "Ip6InHdrErrors") - before
    # A slow receiver (emulation) may overflow its socket buffer: those were not corrupted.
    overflowed = lab.counter(receiver, "Udp6RcvbufErrors") - overflowed_before
    assert 0.35 <= rejected / 4000 <= 0.45, rejected
    assert got["damaged"] == 0, "a corrupted payload reached the application as valid"
    assert len(got["received"]) + rejected + overflowed == 4000, (len(got["received"]), rejected, overflowed)
    assert sent["send_errors"] == 0


@pytest.mark.parametrize("headers", HEADER_CHAINS)
def test_ipv6_port_filter_works_behind_extension_headers(lab, engine, headers):
    b6 = dual_stack(lab)
    engine.apply(chaos("partition", direction="both", protocol="udp", peerPorts="5001"), target(lab))
    _, got = lab.udp("a", "b", b6, 200, port=5001, ipv6_headers=headers)
    assert got["received"] == [], "to the peer's port: cut"
    _, got = lab.udp("a", "b", b6, 200, port=5002, ipv6_headers=headers)
    assert len(got["received"]) == 200, "another port passes"
    assert lab.ping_flood("a", b6, 100)[1] == 100, "another protocol passes"


@pytest.mark.stock_kernel("extension headers walked on 6.1's verifier")
def test_ipv6_protocol_filter_works_behind_extension_headers(lab, engine):
    b6 = dual_stack(lab)
    engine.apply(chaos("partition", protocol="udp"), target(lab))
    _, got = lab.udp("a", "b", b6, 200, ipv6_headers="hop,rt,dst")
    assert got["received"] == []
    engine.apply(chaos("partition", protocol="tcp"), target(lab))
    _, got = lab.udp("a", "b", b6, 200, ipv6_headers="hop,rt,dst")
    assert len(got["received"]) == 200


def test_ipv6_fragments_only_the_first_has_ports(lab, engine):
    """Datagrams of 3000 bytes leave in three fragments. A rule on the peer's port sees only
    the first (the others carry no ports) and cutting it loses the datagram; a rule on the
    protocol alone sees all three."""
    b6 = dual_stack(lab)
    ported = engine.apply(chaos("partition", name="port", protocol="udp", peerPorts="5001"), target(lab))
    counted = engine.apply(chaos("loss", name="count", protocol="udp", loss={"loss": "0"}), target(lab))
    _, got = lab.udp("a", "b", b6, 100, port=5002, size=3000)
    assert len(got["received"]) == 100
    assert engine.counters(ported)["to"]["matched"][0] == 0
    assert engine.counters(counted)["to"]["matched"][0] == 3 * 100
    _, got = lab.udp("a", "b", b6, 100, port=5001, size=3000)
    assert got["received"] == []
    assert engine.counters(ported)["to"]["matched"][0] == 100


def test_ipv6_target_port_in_external_targets(lab, engine):
    b6 = dual_stack(lab)
    engine.apply(chaos("partition", externalTargets=[f"[{b6}]:5001"]), target(lab))
    _, got = lab.udp("a", "b", b6, 200, port=5001, ipv6_headers="dst")
    assert got["received"] == []
    _, got = lab.udp("a", "b", b6, 200, port=5002, ipv6_headers="dst")
    assert len(got["received"]) == 200
    _, got = lab.udp("a", "b", f"{SUBNET}.2", 200, port=5001)
    assert len(got["received"]) == 200, "the IPv4 address was not named"
