"""Network faults under an eBPF CNI: two pods routed through their node, and on the node's side
of both veths a program of the lab's own (lab/kfault_lab/cni.c) that sends pod-to-pod packets
straight into the other pod (bpf_redirect_peer) and ends the chain for the rest (TC_ACT_OK),
attached as a tcx link where the kernel has tcx and as a classic tc filter at priority 1.
Every action, both directions, measured the way a user would."""
import os
import signal
import statistics
import subprocess
import sys
import time

import pytest

from kfault_agent.kernel import topology
from kfault_agent.kernel.capabilities import Capability
from kfault_api import spec
from kfault_lab.hosts import CNI_MODES, EmulatedCni
from kfault_lab.tcp_probe import EchoServer, TcpClient, connect_once

pytestmark = pytest.mark.kernel("tc-bpf", "tc-attach")


def chaos(action, name="exp", **fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "NetworkChaos",
                                  "metadata": {"name": name}, "spec": {"action": action, **fields}})


@pytest.fixture(params=[pytest.param(mode, marks=pytest.mark.kernel("tcx")) if mode == "tcx" else mode
                        for mode in CNI_MODES])
def pods(request, lab, capabilities):
    """Pods a and b on node n, and the emulated CNI on n's side of their veths; their addresses."""
    if request.param == "tcx" and not capabilities["tcx"].available:
        pytest.skip(f"the CNI's tcx variant needs tcx: {capabilities['tcx'].reason}")
    addresses = {"a": lab.pod("a", "n", "10.251.1"), "b": lab.pod("b", "n", "10.251.2")}
    EmulatedCni(lab, "n", addresses, request.param)
    return addresses


@pytest.fixture(params=[pytest.param("tcx", marks=pytest.mark.kernel("tcx")), "clsact"])
def ours(request, datapath, capabilities):
    """A network engine attaching with tcx links or with classic tc, where the kernel can."""
    from kfault_agent.engines import netfault
    caps = dict(capabilities)
    if request.param == "tcx" and not caps["tcx"].available:
        pytest.skip(f"kfault's tcx attachment needs tcx: {caps['tcx'].reason}")
    if request.param == "clsact":
        caps["tcx"] = Capability("tcx", False, "the test asks for classic tc")
    engine = netfault.NetFaultEngine(datapath, caps, lease_s=600)
    yield engine
    engine.revoke_all()


def target(lab):
    return topology.resolve_net_target(f"netns:{lab.ns('a')}")


def ends(direction, pods):
    """(sender, receiver, receiver's address) of the traffic a `direction` fault on pod a acts on."""
    return ("a", "b", pods["b"]) if direction == "to" else ("b", "a", pods["a"])


def test_the_cni_carries_pod_to_pod_traffic_past_the_node(lab, pods):
    before = lab.counter("n", "IpForwDatagrams")
    sent, received, _ = lab.ping_flood("a", pods["b"], 200)
    assert received == sent == 200
    assert lab.counter("n", "IpForwDatagrams") == before, "the node's stack forwarded: the CNI did not redirect"


@pytest.mark.stock_kernel("a CNI on classic tc, and ours on classic tc before it")
@pytest.mark.parametrize("direction", ["to", "from"])
def test_loss_30_percent(lab, pods, ours, direction):
    sender, _, address = ends(direction, pods)
    ours.apply(chaos("loss", direction=direction, loss={"loss": "30"}), target(lab))
    sent, received, output = lab.ping_flood(sender, address, 3000)
    assert 0.26 <= 1 - received / sent <= 0.34, output
    # The sender saw no error: a local drop would show as "+N errors" / ENOBUFS, or not at all.
    assert "error" not in output and "No buffer space" not in output, output


def test_loss_at_the_pods_egress_is_a_loss_to_tcp(lab, pods, engine):
    """Dropped at a's own egress, a TCP sender must see segments lost in the network and
    retransmit them, not a refused send (local congestion, which it would just retry)."""
    retransmitted = lab.counter("a", "TcpRetransSegs")
    engine.apply(chaos("loss", direction="to", loss={"loss": "5"}), target(lab))
    lab.iperf3("a", "b", pods["b"], seconds=2)
    assert lab.counter("a", "TcpRetransSegs") - retransmitted > 20


@pytest.mark.parametrize("direction", ["to", "from"])
def test_partition(lab, pods, engine, direction):
    sender, receiver, address = ends(direction, pods)
    engine.apply(chaos("partition", direction=direction), target(lab))
    _, got = lab.udp(sender, receiver, address, 200, idle=0.5)
    assert got["received"] == []
    _, got = lab.udp(receiver, sender, pods[sender], 200, idle=0.5)
    assert len(got["received"]) == 200, "the other direction must pass"


@pytest.mark.parametrize("direction", ["to", "from"])
def test_partition_reject_refuses_and_resets_tcp(lab, pods, engine, direction):
    """The reset answering a's peer leaves a's veth for the node, where the CNI sends it on to b."""
    client, server, address = ends(direction, pods)
    echo = EchoServer(lab, server, 5001)
    established = TcpClient(lab, client, address, 5001)
    try:
        assert established.connected == "connected" and established.exchange() == "echo"
        engine.apply(chaos("partition", direction=direction, partitionBehavior="reject"), target(lab))
        assert connect_once(lab, client, address, 5001) == "ECONNREFUSED"
        assert established.exchange() == "ECONNRESET"
        engine.revoke_all()
        assert connect_once(lab, client, address, 5001) == "connected"
    finally:
        established.close()
        echo.close()


@pytest.mark.parametrize("direction", ["to", "from"])
def test_duplicate_50_percent(lab, pods, engine, direction):
    sender, receiver, address = ends(direction, pods)
    engine.apply(chaos("duplicate", direction=direction, duplicate={"duplicate": "50"}), target(lab))
    sent, got = lab.udp(sender, receiver, address, 4000)
    assert len(got["received"]) == 4000 and sent["send_errors"] == 0
    assert 0.45 <= got["duplicates"] / 4000 <= 0.55, got["duplicates"]


@pytest.mark.parametrize("direction", ["to", "from"])
def test_corrupt_40_percent(lab, pods, engine, direction):
    sender, receiver, address = ends(direction, pods)
    # A flipped destination address no longer names a pod: the CNI passes it to the node,
    # whose stack rejects it. Each namespace counts its own rejections.
    before = {host: lab.counter(host, "IpExtInCsumErrors") for host in ("n", receiver)}
    engine.apply(chaos("corrupt", direction=direction, corrupt={"corrupt": "40"}), target(lab))
    sent, got = lab.udp(sender, receiver, address, 4000)
    rejected = sum(lab.counter(host, "IpExtInCsumErrors") - count for host, count in before.items())
    assert 0.35 <= rejected / 4000 <= 0.45, rejected
    assert got["damaged"] == 0, "a corrupted payload reached the application as valid"
    assert len(got["received"]) + rejected == 4000
    assert sent["send_errors"] == 0


def median_rtt(lab, host, address, count=40):
    rtts = lab.ping_rtts(host, address, count)
    assert len(rtts) >= count * 0.9, rtts
    return statistics.median(rtts)


@pytest.mark.kernel("tc-bpf", "tc-attach", "sch_fq")
@pytest.mark.parametrize("direction", ["to", "from"])
def test_delay_50ms(lab, pods, engine, direction):
    sender, _, address = ends(direction, pods)
    baseline = median_rtt(lab, sender, address)
    engine.apply(chaos("delay", direction=direction, delay={"latency": "50ms"}), target(lab))
    delayed = median_rtt(lab, sender, address)
    assert abs(delayed - baseline - 50) <= 3, (baseline, delayed)
    engine.revoke_all()
    assert median_rtt(lab, sender, address) <= baseline + 5   # the delay is gone; emulation wobbles by ms


@pytest.mark.kernel("tc-bpf", "tc-attach", "sch_fq")
@pytest.mark.parametrize("direction", ["to", "from"])
def test_bandwidth_10mbit(lab, pods, engine, direction):
    sender, receiver, address = ends(direction, pods)
    engine.apply(chaos("bandwidth", direction=direction, bandwidth={"rate": "10mbit", "limit": 100000,
                                                                    "buffer": 10000}), target(lab))
    throughput = lab.iperf3(sender, receiver, address)
    assert abs(throughput / 10e6 - 1) <= 0.10, throughput


def out_of_order(order):
    highest, late = -1, 0
    for seq in order:
        if seq < highest:
            late += 1
        highest = max(highest, seq)
    return late


@pytest.mark.kernel("tc-bpf", "tc-attach", "sch_fq")
@pytest.mark.parametrize("direction", ["to", "from"])
def test_reorder(lab, pods, engine, direction):
    sender, receiver, address = ends(direction, pods)
    engine.apply(chaos("delay", direction=direction, delay={"latency": "20ms", "reorder": {"reorder": "25", "gap": 1}}),
                 target(lab))
    sent, got = lab.udp(sender, receiver, address, 1000, pps=1000, idle=1.0)
    latencies = [(at - sent["sent_ns"][seq]) / 1e6 for seq, at in zip(got["order"], got["arrived_ns"])]
    fast = sum(1 for ms in latencies if ms < 10) / len(latencies)
    assert 0.05 <= fast <= 0.40, fast   # about 25%: loose, as test_delay_bandwidth's reorder test says why
    assert out_of_order(got["order"]) > 100


def test_removal_leaves_pods_and_node_as_they_were(lab, pods, ours, capabilities):
    before = lab.tc_state()
    actions = [chaos("loss", name="l", direction="both", loss={"loss": "10"})]
    if capabilities["sch_fq"].available:
        actions.append(chaos("delay", name="d", direction="both", delay={"latency": "10ms"}))
    for experiment in actions:
        ours.apply(experiment, target(lab))
    during = lab.tc_state()
    assert during != before
    assert all(during[key] == state for key, state in before.items() if key[0] == "n"), "the node was touched"
    ours.revoke_all()
    assert lab.tc_state() == before


def test_killed_runner_leaves_no_fault_after_its_lease(lab, pods, tmp_path):
    before = lab.tc_state()
    doc = tmp_path / "partition.yaml"
    doc.write_text(f"apiVersion: {spec.API_VERSION}\nkind: NetworkChaos\nmetadata: {{name: cut}}\n"
                   "spec: {action: partition, direction: both}\n")
    runner = subprocess.Popen([sys.executable, "-m", "kfault_agent.cli", "run", "-f", str(doc),
                               "--target", f"netns:{lab.ns('a')}", "--lease", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert "injecting" in runner.stdout.readline()
        _, got = lab.udp("a", "b", pods["b"], 100, idle=0.5)
        assert got["received"] == []
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        time.sleep(2.3)
        _, got = lab.udp("a", "b", pods["b"], 100, idle=0.5)
        assert len(got["received"]) == 100
        subprocess.run([sys.executable, "-m", "kfault_agent.cli", "cleanup"], check=True, capture_output=True)
        assert lab.tc_state() == before
    finally:
        runner.kill()


@pytest.mark.stock_kernel("classic tc priorities, where the host has tcx")
def test_classic_filters_go_before_every_other_filter_or_refuse(lab, pods, datapath, capabilities):
    """Classic tc runs filters by priority: ours take one below the lowest there, and a filter
    at priority 1, which nothing can go before, is a refusal naming it."""
    from kfault_agent.engines import netfault
    from kfault_agent.errors import InterfaceBusy
    engine = netfault.NetFaultEngine(datapath, {**capabilities, "tcx": Capability("tcx", False, "classic asked")},
                                     lease_s=600)
    try:
        lab.run("a", "tc qdisc add dev eth0 clsact")
        lab.run("a", "tc filter add dev eth0 egress pref 5 protocol all u32 match u32 0 0")
        engine.apply(chaos("loss", name="l", loss={"loss": "10"}), target(lab))
        shown = lab.run("a", "tc filter show dev eth0 egress").stdout
        assert shown.index("pref 4 bpf") < shown.index("pref 5 u32") and "kfault_egress_to" in shown, shown
        engine.revoke_all()
        lab.run("a", "tc filter add dev eth0 ingress pref 1 protocol all u32 match u32 0 0")
        before = lab.tc_state()
        with pytest.raises(InterfaceBusy, match="priority 1"):
            engine.apply(chaos("loss", name="l", loss={"loss": "10"}), target(lab))
        assert lab.tc_state() == before
    finally:
        engine.revoke_all()
