"""spec.externalTargets as Chaos Mesh takes them (addresses, CIDRs, host names, host:port),
on real veth pairs: names are resolved by the agent when it applies and again at every
renewal, so a peer whose DNS answer changes is followed."""
import os
import signal
import statistics
import subprocess
import sys
import time

import pytest

from kfault_agent.errors import PeerNotResolved
from kfault_agent.kernel import topology
from kfault_api import spec

pytestmark = pytest.mark.kernel("tc-bpf", "clsact")
CHAOS_MESH_DOCS = os.path.join(os.path.dirname(__file__), "..", "chaos_mesh", "network.yaml")
PEER_NAME = "kfault-peer.test"     # .test: reserved for testing (RFC 6761), never a real name


def chaos(action, name="exp", **fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "NetworkChaos",
                                  "metadata": {"name": name}, "spec": {"action": action, **fields}})


def target(lab, host="a"):
    return topology.resolve_net_target(f"netns:{lab.ns(host)}")


def chaos_mesh_doc(name):
    return next(spec.parse_experiment(doc) for doc in spec.load_documents(CHAOS_MESH_DOCS)
                if doc["metadata"]["name"] == name)


def reaches(lab, address, count=50):
    return lab.ping_flood("a", address, count)[1] == count


def cut(lab, address, count=50):
    return lab.ping_flood("a", address, count)[1] == 0


def outside_address(lab, address="192.0.2.10"):
    """An extra address on host b, routed from a: a peer "outside the cluster" in the lab."""
    lab.run("b", f"ip addr add {address}/32 dev a1")
    lab.run("a", f"ip route add {address}/32 dev b1")
    return address


def test_chaos_mesh_partition_with_external_targets_runs(lab, engine):
    lab.link("a", "b", "10.250.1")
    outside = outside_address(lab)
    experiment = chaos_mesh_doc("search-partition-outside")   # an address, localhost, a CIDR
    engine.apply(experiment, target(lab))
    assert cut(lab, outside)
    assert reaches(lab, "10.250.1.2"), "a peer not named is left alone"


@pytest.mark.kernel("sch_fq")
def test_chaos_mesh_delay_with_external_targets_runs(lab, engine):
    lab.link("a", "b", "10.250.1")
    outside = outside_address(lab)
    # The delay is added to the round trip there is: under the VM tier's emulation that is
    # several ms by itself.
    baseline = statistics.median(lab.ping_rtts("a", outside, 20))
    engine.apply(chaos_mesh_doc("search-delay-outside"), target(lab))   # 80 ms, jitter 20 ms
    delayed = statistics.median(lab.ping_rtts("a", outside, 60))
    assert 72 <= delayed - baseline <= 88, (delayed, baseline)
    assert statistics.median(lab.ping_rtts("a", "10.250.1.2", 20)) < 5


def test_target_ports_limit_their_rule_and_leave_the_rest_of_the_peer(lab, engine):
    lab.link("a", "b", "10.250.1")
    lab.link("a", "c", "10.250.2")
    engine.apply(chaos("partition", externalTargets=["10.250.1.2:5001", "10.250.2.0/24:5002", "10.250.1.2:5003"]),
                 target(lab))
    for address, port, cut_off in (("10.250.1.2", 5001, True), ("10.250.1.2", 5003, True),
                                   ("10.250.1.2", 5002, False), ("10.250.2.2", 5002, True),
                                   ("10.250.2.2", 5001, False)):
        _, got = lab.udp("a", "b" if address.startswith("10.250.1") else "c", address, 100, port=port, idle=0.5)
        assert (got["received"] == []) == cut_off, (address, port)
    assert reaches(lab, "10.250.1.2") and reaches(lab, "10.250.2.2"), "ping has no port: not cut"


def test_a_name_that_does_not_resolve_is_refused_naming_it_and_nothing_is_placed(lab, engine):
    lab.link("a", "b", "10.250.1")
    before = lab.tc_state()
    with pytest.raises(PeerNotResolved) as refused:
        engine.apply(chaos("partition", externalTargets=["10.250.1.2", "no-such-peer.invalid:80"]), target(lab))
    message = str(refused.value)
    assert "'no-such-peer.invalid:80'" in message and "does not resolve" in message
    assert "fully qualified" in message and "IP address or CIDR" in message, "says what to do"
    assert engine.active() == [] and lab.tc_state() == before
    assert reaches(lab, "10.250.1.2")


def test_a_changed_dns_answer_is_followed_at_the_next_renewal(lab, tmp_path):
    """`kfault run` in a mount namespace of its own whose /etc/hosts the test rewrites: the
    name moves from host b to host c while the partition runs."""
    lab.link("a", "b", "10.250.1")
    lab.link("a", "c", "10.250.2")
    before = lab.tc_state()
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n10.250.1.2 {PEER_NAME}\n")
    doc = tmp_path / "cut.yaml"
    doc.write_text(f"apiVersion: {spec.API_VERSION}\nkind: NetworkChaos\nmetadata: {{name: cut}}\n"
                   f"spec: {{action: partition, externalTargets: [{PEER_NAME}]}}\n")
    run = (f"mount --bind {hosts} /etc/hosts && exec {sys.executable} -m kfault_agent.cli run -f {doc} "
           f"--target netns:{lab.ns('a')} --interval 0.5 --lease 5")
    runner = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", run],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "injecting" in runner.stdout.readline(), runner.stderr.read() if runner.poll() is not None else ""
        assert cut(lab, "10.250.1.2") and reaches(lab, "10.250.2.2")
        hosts.write_text(f"127.0.0.1 localhost\n10.250.2.2 {PEER_NAME}\n")   # same file: the mount sees it
        deadline = time.monotonic() + 30
        while not cut(lab, "10.250.2.2", 10) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert cut(lab, "10.250.2.2") and reaches(lab, "10.250.1.2")
        runner.send_signal(signal.SIGTERM)
        try:
            out, err = runner.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            runner.send_signal(signal.SIGUSR1)      # its threads' stacks, on stderr
            time.sleep(2)
            runner.kill()
            pytest.fail(f"kfault run did not stop on SIGTERM; where it was:\n{runner.communicate()[1][-6000:]}")
        assert runner.returncode == 0 and "all faults removed" in out, err
        assert lab.tc_state() == before
    finally:
        runner.kill()
        runner.wait()


def test_a_resolver_that_does_not_answer_is_refused_in_bounded_time(tmp_path):
    """A name server that never answers must not hold an Apply or a Renew for the resolver's
    own timeouts (5 s per try here, three tries). In a network and mount namespace of its
    own, the probe listens on 127.0.0.1:53 and never answers."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:5 attempts:3\n")
    probe = ("import socket, time; from kfault_agent import peer_names\n"
             "from kfault_agent.errors import PeerNotResolved\n"
             "from kfault_api import spec\n"
             "silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); silent.bind(('127.0.0.1', 53))\n"
             "started = time.monotonic()\n"
             "try:\n    peer_names.networks_of(spec.parse_external_target('slow.example.net'))\n"
             "except PeerNotResolved as err:\n    print(round(time.monotonic() - started, 1), err, flush=True)\n"
             "import os; os._exit(0)   # not waiting for the lookup still stuck in its thread")
    out = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c",
                          f"ip link set lo up && mount --bind {resolv} /etc/resolv.conf && "
                          f"exec {sys.executable} -c \"$0\"", probe],
                         capture_output=True, text=True, timeout=120)
    seconds, _, message = out.stdout.partition(" ")
    assert "no answer within" in message and "slow.example.net" in message, out
    assert float(seconds) < 4, out.stdout
