"""A partition with partitionBehavior reject, on real veth pairs between dual-stack test hosts:
TCP fails at once, the way an application sees a refused or reset connection (the errno its
socket call returns, never a timing), anything else is dropped as with drop, and drop still
goes silent. The same under an eBPF CNI: tests/kernel/test_cni.py (-k reject)."""
import errno
import sys

import pytest

from kfault_agent.kernel import topology
from kfault_api import spec
from kfault_lab.hosts import Lab
from kfault_lab.tcp_probe import EchoServer, TcpClient, connect_once

pytestmark = pytest.mark.kernel("tc-bpf", "clsact")
SUBNET = "10.250.1"
PORT = 5001
# ethtool -K DEV tx off, by pyroute2 (the hosts need no ethtool).
NO_CHECKSUM_OFFLOAD = r"""
import sys
from pyroute2.ethtool import Ethtool
ethtool = Ethtool()
features = ethtool.get_features(sys.argv[1])
features.features["tx-checksum-ip-generic"].enable = False
ethtool.set_features(sys.argv[1], features)
assert not ethtool.get_features(sys.argv[1]).features["tx-checksum-ip-generic"].enable
"""


def chaos(name="exp", **fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "NetworkChaos",
                                  "metadata": {"name": name}, "spec": {"action": "partition", **fields}})


def target(lab, host="a"):
    return topology.resolve_net_target(f"netns:{lab.ns(host)}")


@pytest.fixture
def servers(lab):
    """Start an echo server on a host: servers("b"). Each is stopped at the end."""
    started = []
    yield lambda host: started.append(EchoServer(lab, host, PORT))
    for server in started:
        server.close()


def connect(lab, host, address, timeout=20.0, hop=False):
    """What a connect() from `host` to address:PORT got: "connected", an errno's name, "timeout"."""
    return connect_once(lab, host, address, PORT, timeout, "hop" if hop else "-")


def addresses(family):
    """(a's address, b's address) on the link made for SUBNET, by family."""
    if family == "ipv4":
        return f"{SUBNET}.1", f"{SUBNET}.2"
    return Lab.ipv6(SUBNET, 1), Lab.ipv6(SUBNET, 2)


def outcomes(engine, experiment):
    """{(direction, outcome): packets} of the experiment's rules."""
    return {(direction, outcome): packets for _, direction, outcome, packets in engine.counter_rows(experiment.key)}


REFUSED = errno.errorcode[errno.ECONNREFUSED]
RESET = errno.errorcode[errno.ECONNRESET]


# How the checksums of the a-b link are made, for a reset answering what a receives. TCP leaves
# them to the device (CHECKSUM_PARTIAL) and a veth's receiver trusts such a packet right or
# wrong; a packet from a real NIC has them computed, and its receiver checks them.
#   offloaded  b's segments and a's reset leave theirs to the device: nobody checks
#   software   b's device computes them: a's reset is made of a checked packet, and is checked
#   helped     b's are offloaded, a's device computes them: the kernel completes the reset's
#              checksum from the pseudo-header sum it carries, and b checks the result
CHECKSUMS = {"offloaded": (), "software": (("a", "b1"), ("b", "a1")), "helped": (("a", "b1"),)}


def make_checksums(lab, how):
    for host, dev in CHECKSUMS[how]:
        lab.run(host, f"{sys.executable} -c '{NO_CHECKSUM_OFFLOAD}' {dev}")


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_connect_to_the_peer_is_refused_at_once_and_revoking_restores_it(lab, engine, servers, family):
    """(A's own TCP segments are CHECKSUM_PARTIAL at its egress whatever its device offloads.)"""
    lab.link("a", "b", SUBNET)
    _, b = addresses(family)
    servers("b")
    assert connect(lab, "a", b) == "connected"
    before = lab.tc_state()
    experiment = chaos(partitionBehavior="reject", externalTargets=[b])
    engine.apply(experiment, target(lab))
    assert connect(lab, "a", b) == REFUSED
    assert outcomes(engine, experiment)[("to", "reset")] >= 1
    engine.revoke_all()
    assert connect(lab, "a", b) == "connected"
    assert lab.tc_state() == before


@pytest.mark.stock_kernel("the reset built on 6.1's verifier")
@pytest.mark.parametrize("direction", ["to", "from"])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_an_established_connection_is_reset(lab, engine, servers, family, direction):
    """to: the target's connection to the peer; from: the peer's connection to the target."""
    lab.link("a", "b", SUBNET)
    a, b = addresses(family)
    client, server, address = ("a", "b", b) if direction == "to" else ("b", "a", a)
    servers(server)
    connection = TcpClient(lab, client, address, PORT)
    try:
        assert connection.connected == "connected" and connection.exchange() == "echo"
        engine.apply(chaos(partitionBehavior="reject", direction=direction), target(lab))
        assert connection.exchange() == RESET
    finally:
        connection.close()


@pytest.mark.parametrize("checksums", sorted(CHECKSUMS))
@pytest.mark.parametrize("direction", ["from", "both"])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_connect_from_the_peer_is_refused(lab, engine, servers, family, direction, checksums):
    lab.link("a", "b", SUBNET)
    make_checksums(lab, checksums)
    a, _ = addresses(family)
    servers("a")
    assert connect(lab, "b", a) == "connected"
    experiment = chaos(partitionBehavior="reject", direction=direction)
    engine.apply(experiment, target(lab))
    assert connect(lab, "b", a) == REFUSED
    assert outcomes(engine, experiment)[("from", "reset")] >= 1


def test_ipv6_with_an_extension_header_is_refused(lab, engine, servers):
    """Hop-by-hop options before TCP: the reset answers the segment behind them, and carries none."""
    lab.link("a", "b", SUBNET)
    _, b = addresses("ipv6")
    servers("b")
    assert connect(lab, "a", b, hop=True) == "connected"
    engine.apply(chaos(partitionBehavior="reject"), target(lab))
    assert connect(lab, "a", b, hop=True) == REFUSED


@pytest.mark.parametrize("direction", ["to", "from"])
def test_udp_is_dropped_under_reject(lab, engine, direction):
    lab.link("a", "b", SUBNET)
    sender, receiver, address = ("a", "b", f"{SUBNET}.2") if direction == "to" else ("b", "a", f"{SUBNET}.1")
    experiment = chaos(partitionBehavior="reject", direction=direction)
    engine.apply(experiment, target(lab))
    sent, got = lab.udp(sender, receiver, address, 200, idle=0.5)
    assert got["received"] == [] and sent["send_errors"] == 0
    counted = outcomes(engine, experiment)
    assert counted[(direction, "dropped")] >= 200 and counted[(direction, "reset")] == 0


@pytest.mark.parametrize("behavior", [None, "drop"])
def test_drop_still_goes_silent(lab, engine, servers, behavior):
    lab.link("a", "b", SUBNET)
    servers("b")
    fields = {"partitionBehavior": behavior} if behavior else {}
    experiment = chaos(direction="both", **fields)
    engine.apply(experiment, target(lab))
    assert connect(lab, "a", f"{SUBNET}.2", timeout=2) == "timeout"
    assert outcomes(engine, experiment)[("to", "reset")] == 0


def test_a_peer_not_named_is_left_alone(lab, engine, servers):
    lab.link("a", "b", SUBNET)
    lab.link("a", "c", "10.250.2")
    servers("c")
    engine.apply(chaos(partitionBehavior="reject", direction="both", externalTargets=[f"{SUBNET}.2"]), target(lab))
    assert connect(lab, "a", "10.250.2.2") == "connected"
