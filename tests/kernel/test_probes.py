"""The agent as its DaemonSet starts it (the image's entrypoint, `kfault`, with the manifest's
own args), probed the way kubelet probes it: every declared probe fails while the datapaths
compile, passes once the agent serves, fails while the agent hangs and once it has stopped.

Made runnable here: $(NODE_NAME) is a test name, --tls-dir points at certificates made with
openssl, and each declared containerPort is a free port of this host (see kubelet.runnable_args).
"""
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest

from kfault_api.rpc import agent_pb2 as pb
from kfault_api.rpc import agent_pb2_grpc as pb_grpc
from tests import kubelet
from tests.certs import make_certs, secret_dir

AGENT = kubelet.container("agent/daemonset.yaml", "DaemonSet")
# Both datapaths compile before the agent serves: ~70 s under the VM tier's emulation.
LOAD_TIMEOUT_S = 300


class AgentProcess:
    def __init__(self, tmp_path):
        self.certs = make_certs(tmp_path)
        args, self.ports = kubelet.runnable_args(AGENT, {"NODE_NAME": "probed-node"},
                                                 {"/etc/kfault/tls": str(secret_dir(tmp_path, "agent"))})
        self.log = tmp_path / "agent.log"
        kfault = os.path.join(os.path.dirname(sys.executable), "kfault")
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([kfault, *args], stdout=log, stderr=subprocess.STDOUT)

    def probes(self):
        return kubelet.run_all(AGENT, self.ports)

    def output(self):
        return self.log.read_text(errors="replace")

    def api_health(self):
        """The agent's own Health RPC over mTLS, as the controller calls it."""
        credentials = grpc.ssl_channel_credentials(self.certs["ca.crt"], self.certs["controller.key"],
                                                   self.certs["controller.crt"])
        grpc_port = next(p["containerPort"] for p in AGENT["ports"] if p["name"] == "grpc")
        with grpc.secure_channel(f"127.0.0.1:{self.ports[grpc_port]}", credentials,
                                 options=[("grpc.ssl_target_name_override", "localhost")]) as channel:
            return pb_grpc.AgentStub(channel).Health(pb.HealthRequest(), timeout=10)

    def close(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def agent(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: the agent loads BPF programs")
    started = AgentProcess(tmp_path)
    yield started
    started.close()


def wait_for_probes(agent, done, timeout, what, interval=0.1):
    """The probes' results once done(results) holds; every result seen on the way, in order."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert agent.process.poll() is None, f"the agent exited ({agent.process.returncode}):\n{agent.output()}"
        results = agent.probes()
        seen.append(results)
        if done(results):
            return results, seen
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s; last {seen[-1:]}\n{agent.output()}")


def test_every_probe_fails_while_loading_passes_when_serving_and_fails_when_hung_or_stopped(agent):
    assert set(kubelet.declared_probes(AGENT)) == set(kubelet.PROBES)

    # The health server answers before the datapaths compile: NOT_SERVING, not a dead port.
    # (Under emulation a probe's first call may pass its 1 s deadline as the compile starts:
    # failing too, so waited past, but never passing.)
    loading = {name: (False, "NOT_SERVING") for name in kubelet.PROBES}
    _, seen = wait_for_probes(agent, lambda r: r == loading, 120, "the health port answering NOT_SERVING")
    assert not any(ok for results in seen for ok, _ in results.values()), seen

    # Probed as kubelet does at the least, every second: polled every 0.1 s, the probes took the
    # emulated CPU from the compile they wait for (the test ran 234 s in the VM tier).
    serving, _ = wait_for_probes(agent, lambda r: all(ok for ok, _ in r.values()), LOAD_TIMEOUT_S,
                                 "every probe passing", interval=1.0)
    assert serving == {name: (True, "SERVING") for name in kubelet.PROBES}
    assert "available" in agent.output(), "SERVING only once the agent says what it serves"
    assert agent.api_health().serving, "the API's own Health RPC still answers over mTLS"

    # Hung (a stopped process stands for a stuck one): each probe times out.
    agent.process.send_signal(signal.SIGSTOP)
    try:
        hung = agent.probes()
    finally:
        agent.process.send_signal(signal.SIGCONT)
    assert all(not ok and "DEADLINE_EXCEEDED" in what for ok, what in hung.values()), hung
    # A continued process takes a moment to answer again under emulation: waited for, not assumed.
    wait_for_probes(agent, lambda r: all(ok for ok, _ in r.values()), 30, "passing again once it runs again")

    agent.process.terminate()
    assert agent.process.wait(60) == 0, agent.output()
    gone = agent.probes()
    assert all(not ok for ok, _ in gone.values()), gone
