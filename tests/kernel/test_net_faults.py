"""Network faults on real veth pairs between test hosts, measured the way a user would."""
import os
import signal
import subprocess
import sys
import time

import pytest

from kfault_agent.kernel import topology
from kfault_api import spec

pytestmark = pytest.mark.kernel("tc-bpf", "clsact")


def chaos(action, name="exp", **fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "NetworkChaos",
                                  "metadata": {"name": name}, "spec": {"action": action, **fields}})


def target(lab, host="a"):
    return topology.resolve_net_target(f"netns:{lab.ns(host)}")


def loss_runs(received, count):
    """Lengths of the runs of consecutive lost sequence numbers."""
    got, runs, run = set(received), [], 0
    for seq in range(count):
        if seq in got:
            if run:
                runs.append(run)
            run = 0
        else:
            run += 1
    return runs + ([run] if run else [])


@pytest.mark.stock_kernel("classic tc filters on clsact, where the host attaches tcx links")
def test_loss_30_percent_looks_like_network_loss(lab, engine):
    _, b_ip = lab.link("a", "b", "10.250.1")
    engine.apply(chaos("loss", loss={"loss": "30"}), target(lab))
    sent, received, output = lab.ping_flood("a", b_ip, 5000)
    loss = 1 - received / sent
    assert 0.27 <= loss <= 0.33, output
    # The sender saw no error: a local drop would show as "+N errors" / ENOBUFS.
    assert "error" not in output and "No buffer space" not in output, output


def test_partition_to_one_peer_leaves_another_alone(lab, engine):
    lab.link("a", "b", "10.250.1")
    lab.link("a", "c", "10.250.2")
    engine.apply(chaos("partition", externalTargets=["10.250.1.2/32"]), target(lab))
    sent, received, _ = lab.ping_flood("a", "10.250.1.2", 200)
    assert received == 0
    sent, received, _ = lab.ping_flood("a", "10.250.2.2", 200)
    assert received == sent


def test_partition_direction_to_and_both(lab, engine):
    lab.link("a", "b", "10.250.1")
    engine.apply(chaos("partition", name="to", direction="to"), target(lab))
    _, got = lab.udp("a", "b", "10.250.1.2", 200)
    assert got["received"] == []
    _, got = lab.udp("b", "a", "10.250.1.1", 200)
    assert len(got["received"]) == 200, "direction to must not cut what the target receives"

    engine.apply(chaos("partition", name="to", direction="both"), target(lab))
    _, got = lab.udp("b", "a", "10.250.1.1", 200)
    assert got["received"] == []
    _, got = lab.udp("a", "b", "10.250.1.2", 200)
    assert got["received"] == []


def test_partition_scoped_to_a_port(lab, engine):
    lab.link("a", "b", "10.250.1")
    engine.apply(chaos("partition", direction="both", protocol="udp", peerPorts="5001"), target(lab))
    _, got = lab.udp("a", "b", "10.250.1.2", 200, port=5001)
    assert got["received"] == []
    _, got = lab.udp("a", "b", "10.250.1.2", 200, port=5002)
    assert len(got["received"]) == 200
    sent, received, _ = lab.ping_flood("a", "10.250.1.2", 100)
    assert received == sent


def test_duplicate_50_percent_arrives_twice(lab, engine):
    lab.link("a", "b", "10.250.1")
    engine.apply(chaos("duplicate", duplicate={"duplicate": "50"}), target(lab))
    sent, got = lab.udp("a", "b", "10.250.1.2", 4000)
    assert len(got["received"]) == 4000 and sent["send_errors"] == 0
    assert 0.45 <= got["duplicates"] / 4000 <= 0.55, got["duplicates"]


def test_corrupt_40_percent_fails_receiver_checksums(lab, engine):
    lab.link("a", "b", "10.250.1")
    before = lab.counter("b", "IpExtInCsumErrors")
    engine.apply(chaos("corrupt", corrupt={"corrupt": "40"}), target(lab))
    sent, got = lab.udp("a", "b", "10.250.1.2", 4000)
    rejected = lab.counter("b", "IpExtInCsumErrors") - before
    assert 0.35 <= rejected / 4000 <= 0.45, rejected
    assert got["damaged"] == 0, "a corrupted payload reached the application as valid"
    assert len(got["received"]) + rejected == 4000
    assert sent["send_errors"] == 0


def test_loss_correlation_makes_runs_at_the_same_rate(lab, engine):
    lab.link("a", "b", "10.250.1")
    means = {}
    for correlation in ("0", "90"):
        engine.apply(chaos("loss", name="corr", loss={"loss": "30", "correlation": correlation}), target(lab))
        _, got = lab.udp("a", "b", "10.250.1.2", 8000, pps=8000)
        rate = 1 - len(got["received"]) / 8000
        runs = loss_runs(got["received"], 8000)
        means[correlation] = sum(runs) / len(runs)
        assert 0.22 <= rate <= 0.38, (correlation, rate)
    assert means["90"] > 3 * means["0"], means


def test_rule_past_its_deadline_stops_acting_by_itself(lab, datapath, capabilities):
    from kfault_agent.engines import netfault
    lab.link("a", "b", "10.250.1")
    # A long lease while the partition is shown to act (an emulated machine is slow to send),
    # then a deadline moved to now: from there no userspace acts, only the kernel's check.
    engine = netfault.NetFaultEngine(datapath, capabilities, lease_s=600.0)
    try:
        engine.apply(chaos("partition"), target(lab))
        _, got = lab.udp("a", "b", "10.250.1.2", 100, idle=0.5)
        assert got["received"] == []
        (placement,) = engine.active()
        placement.lease_ns = 1
        engine.renew()
        _, got = lab.udp("a", "b", "10.250.1.2", 100, idle=0.5)
        assert len(got["received"]) == 100
        assert engine.active() == [placement]   # still in the maps: the kernel ignored it
    finally:
        engine.revoke_all()


@pytest.mark.stock_kernel("classic tc filters outlive a killed runner: the rule lapses in the kernel")
def test_killed_runner_leaves_no_fault_after_its_lease(lab, tmp_path):
    lab.link("a", "b", "10.250.1")
    before = lab.tc_state()
    doc = tmp_path / "partition.yaml"
    doc.write_text(f"apiVersion: {spec.API_VERSION}\nkind: NetworkChaos\nmetadata: {{name: cut}}\n"
                   "spec: {action: partition}\n")
    runner = subprocess.Popen([sys.executable, "-m", "kfault_agent.cli", "run", "-f", str(doc),
                               "--target", f"netns:{lab.ns('a')}", "--lease", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert "injecting" in runner.stdout.readline()
        _, got = lab.udp("a", "b", "10.250.1.2", 100, idle=0.5)
        assert got["received"] == []
        cleanup()   # a live runner's filters are not stale
        assert lab.tc_state() != before
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        killed = time.monotonic()
        time.sleep(max(0.0, killed + 2.2 - time.monotonic()))
        _, got = lab.udp("a", "b", "10.250.1.2", 100, idle=0.5)
        assert len(got["received"]) == 100
        # The dead runner's classic filters are stale: the lookup goes too (tcx links went
        # with the runner).
        cleanup()
        assert lab.tc_state() == before
    finally:
        runner.kill()
        cleanup()


def cleanup():
    out = subprocess.run([sys.executable, "-m", "kfault_agent.cli", "cleanup"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_revoke_outlives_the_target_process_and_its_namespace(lab, engine):
    lab.link("a", "b", "10.250.1")
    before = lab.tc_state()
    # It speaks once in the namespace: before that, its pid names the machine's own.
    proc = subprocess.Popen(["ip", "netns", "exec", lab.ns("a"), "sh", "-c", "echo in; exec sleep 600"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "in\n"
        engine.apply(chaos("partition"), topology.resolve_net_target(f"pid:{proc.pid}"))
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    # The process that named the namespace is gone; the namespace (named by the lab) is not.
    engine.revoke_all()
    assert lab.tc_state() == before
    # A namespace deleted under a placement: the revoke has nothing left to undo, and says so.
    engine.apply(chaos("partition"), target(lab))
    subprocess.run(["ip", "netns", "del", lab.ns("a")], check=True)
    engine.revoke_all()
    assert engine.active() == []


@pytest.mark.stock_kernel("removal of classic tc filters and the clsact qdisc")
def test_removal_restores_interfaces_exactly(lab, engine):
    lab.link("a", "b", "10.250.1")
    # A clsact with someone else's filter on the target's interface must survive untouched.
    lab.run("a", "tc qdisc add dev b1 clsact")
    lab.run("a", "tc filter add dev b1 ingress pref 7 protocol all u32 match u32 0 0")
    before = lab.tc_state()
    engine.apply(chaos("loss", loss={"loss": "10"}, direction="both"), target(lab))
    during = lab.tc_state()
    assert during != before and "ingress_from" in during[("a", "b1")]
    engine.revoke_all()
    assert lab.tc_state() == before


def test_runner_ends_on_duration_and_cleans_up(lab, tmp_path):
    lab.link("a", "b", "10.250.1")
    before = lab.tc_state()
    doc = tmp_path / "loss.yaml"
    doc.write_text(f"apiVersion: {spec.API_VERSION}\nkind: NetworkChaos\nmetadata: {{name: l}}\n"
                   "spec: {action: loss, loss: {loss: '50'}, duration: 2s}\n")
    out = subprocess.run([sys.executable, "-m", "kfault_agent.cli", "run", "-f", str(doc),
                          "--target", f"netns:{lab.ns('a')}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "all faults removed" in out.stdout
    assert lab.tc_state() == before


def test_runner_stops_on_sigterm_and_cleans_up_targeting_a_pid(lab, tmp_path):
    lab.link("a", "b", "10.250.1")
    before = lab.tc_state()
    # A process living in host A, targeted by PID; it must outlive a slow (emulated) run.
    # It says its own pid: a search by command line can find a shell still wrapping it.
    resident = lab.popen("a", "sh -c 'echo $$; exec sleep 900'")
    pid = int(resident.stdout.readline())
    doc = tmp_path / "cut.yaml"
    doc.write_text(f"apiVersion: {spec.API_VERSION}\nkind: NetworkChaos\nmetadata: {{name: cut}}\n"
                   "spec: {action: partition}\n")
    runner = subprocess.Popen([sys.executable, "-m", "kfault_agent.cli", "run", "-f", str(doc),
                               "--target", f"pid:{pid}"], stdout=subprocess.PIPE, text=True)
    try:
        assert "injecting" in runner.stdout.readline()
        _, got = lab.udp("a", "b", "10.250.1.2", 100, idle=0.5)
        assert got["received"] == []
        runner.send_signal(signal.SIGTERM)
        out, _ = runner.communicate(timeout=120)
        assert runner.returncode == 0 and "all faults removed" in out
        assert lab.tc_state() == before
        _, got = lab.udp("a", "b", "10.250.1.2", 100, idle=0.5)
        assert len(got["received"]) == 100
    finally:
        runner.kill()
        os.kill(pid, signal.SIGKILL)
        resident.kill()
        resident.wait()


def test_two_experiments_on_one_target_compose(lab, engine):
    lab.link("a", "b", "10.250.1")
    engine.apply(chaos("duplicate", name="dup", duplicate={"duplicate": "100"}), target(lab))
    engine.apply(chaos("partition", name="cut", externalTargets=["10.250.1.0/24"], protocol="udp",
                       peerPorts="6000"), target(lab))
    _, got = lab.udp("a", "b", "10.250.1.2", 300)
    assert len(got["received"]) == 300 and got["duplicates"] == 300
    _, got = lab.udp("a", "b", "10.250.1.2", 300, port=6000)
    assert got["received"] == []
    engine.revoke("default/cut", f"netns:{lab.ns('a')}")
    _, got = lab.udp("a", "b", "10.250.1.2", 300, port=6000)
    assert len(got["received"]) == 300 and got["duplicates"] == 300


def test_delay_is_refused_where_the_kernel_has_no_fq(lab, engine, capabilities):
    from kfault_agent.errors import KernelUnsupported
    if capabilities["sch_fq"].available:
        pytest.skip("this kernel has sch_fq: delay is supported here")
    lab.link("a", "b", "10.250.1")
    before = lab.tc_state()
    with pytest.raises(KernelUnsupported, match="sch_fq"):
        engine.apply(chaos("delay", delay={"latency": "50ms"}), target(lab))
    assert lab.tc_state() == before
