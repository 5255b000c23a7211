"""HTTPChaos in the pod's own datapath, with a real HTTP/1.1 server (Python's http.server,
threading, keep-alive) in a "pod" and a real client (http.client, one kept-alive connection,
opened before the fault is armed) on another host, in namespaces the tests make. abort resets
only matching requests, each one on the connection; replace.code is what the client reads;
delay holds each matching request's response once (sch_fq: the stock-kernel tier). A killed
runner leaves nothing after its lease."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kfault_agent.kernel import loader, topology
from kfault_api import spec
from kfault_lab.hosts import Lab
from tests import cfg61
from tests.kernel.test_program_sizes import check_size

pytestmark = pytest.mark.kernel("tc-bpf", "clsact")
SUBNET = "10.250.80"     # client .1 -- pod .2
PORT = 8080
# The pod's server: HTTP/1.1 with keep-alive, a short body for every path.
SERVER = r"""
import http.server, socket, sys
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("served " + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_POST = do_GET
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6     # "::": IPv4 clients too, as mapped addresses
server = Server(("::", int(sys.argv[2])), Handler)
print("serving", flush=True)
server.serve_forever()
"""
# The client: one connection, opened at once, kept alive; each line "METHOD PATH" on stdin is a
# request on it, answered on stdout as JSON: status and seconds, or the error. A reset
# connection is opened again for the next request (as clients with a pool do).
CLIENT = r"""
import http.client, json, sys, time
conn = http.client.HTTPConnection(sys.argv[1].strip("[]"), int(sys.argv[2]), timeout=10)
conn.connect()
print(json.dumps({"connected": conn.sock.getsockname()[1]}), flush=True)
for line in sys.stdin:
    method, path = line.split()
    start = time.monotonic()
    try:
        conn.request(method, path)
        response = conn.getresponse()
        body = response.read().decode()
        out = {"status": response.status, "body": body, "port": conn.sock.getsockname()[1]}
    except OSError as err:
        out = {"error": type(err).__name__}
        conn.close()
    except http.client.HTTPException as err:
        out = {"error": type(err).__name__}
        conn.close()
    out["seconds"] = time.monotonic() - start
    print(json.dumps(out), flush=True)
"""


def chaos(name="http", **fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "HTTPChaos", "metadata": {"name": name},
                                  "spec": {"target": "Request", "port": PORT, **fields}})


class Client:
    """The client process: one kept-alive connection to the pod's server."""

    def __init__(self, lab, address):
        self.proc = lab.popen("client", f"{sys.executable} -c '{CLIENT}' {address} {PORT}", stdin=subprocess.PIPE)
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()
        self.port = json.loads(line)["connected"]

    def request(self, path, method="GET"):
        self.proc.stdin.write(f"{method} {path}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()
        return json.loads(line)

    def close(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def served(lab):
    """The pod with its server, and a client on another host with its connection open."""
    lab.link("client", "pod", SUBNET)
    server = lab.popen("pod", f"{sys.executable} -c '{SERVER}' {SUBNET}.2 {PORT}")
    assert server.stdout.readline().strip() == "serving", server.stderr.read()
    client = Client(lab, f"{SUBNET}.2")
    yield client
    client.close()
    server.kill()
    server.wait()


def pod(lab):
    return topology.resolve_net_target(f"netns:{lab.ns('pod')}")


def retransmissions(lab):
    """TCP segments the client's namespace sent again, so far."""
    out = lab.run("client", "nstat -asz TcpRetransSegs").stdout.split()
    return int(out[out.index("TcpRetransSegs") + 1])


def counted(engine):
    return {outcome: sum(engine.messages(a)[outcome] for a in engine.active()) for outcome in ("matched", "reset",
                                                                                               "delayed", "rewritten")}


@pytest.mark.stock_kernel("httpfault.c on classic tc filters and 6.1's verifier: abort, each request decided")
def test_abort_resets_only_matching_requests_on_a_connection_opened_before(lab, http_engine, served):
    assert served.request("/api/a")["status"] == 200          # the connection works, before the fault
    experiment = chaos(method="GET", path="/api/*", abort=True)
    http_engine.apply(experiment, pod(lab))
    first = served.request("/health")
    assert (first["status"], first["port"]) == (200, served.port)     # same connection, not matched
    assert served.request("/api/a")["error"] == "ConnectionResetError"   # the connection opened before
    again = served.request("/health")                                 # a new connection: still served
    assert again["status"] == 200 and again["port"] != served.port
    assert served.request("/api/b")["error"] == "ConnectionResetError"   # a later request on it too
    assert served.request("/api/b", method="POST")["status"] == 200      # another method: not matched
    assert served.request("/apix")["status"] == 200
    assert counted(http_engine)["reset"] == 2
    http_engine.revoke(experiment.key, pod(lab).name)
    assert served.request("/api/a")["status"] == 200


@pytest.mark.stock_kernel("httpfault.c on classic tc filters and 6.1's verifier: replace.code in place")
def test_replace_code_is_what_the_client_reads_on_every_kept_alive_request(lab, http_engine, served):
    experiment = chaos(target="Response", path="/api/*", code=200, replace={"code": 503})
    http_engine.apply(experiment, pod(lab))
    for _ in range(3):
        got = served.request("/api/x")
        assert (got["status"], got["body"], got["port"]) == (503, "served /api/x", served.port)
    assert served.request("/health")["status"] == 200
    assert counted(http_engine)["rewritten"] == 3


# Connections from one source port, one after another, each ended by a reset (SO_LINGER 0: no
# TIME_WAIT on either side), each with one request; prints each response's status code.
SAME_PORT_CLIENT = r"""
import socket, struct, sys
for _ in range(int(sys.argv[3])):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.settimeout(10)
    s.bind(("", 40080))
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.sendall(b"GET /api/x HTTP/1.1\r\nHost: pod\r\n\r\n")
    print(s.recv(12).decode().split()[1], flush=True)
    s.close()
"""


@pytest.mark.stock_kernel("httpfault.c on classic tc filters and 6.1's verifier: a connection's SYN forgets the last")
def test_a_new_connection_on_a_remembered_port_is_decided_afresh(lab, http_engine, served):
    """A connection's record (the sequence numbers that tell a retransmission) outlives it; a
    new connection on the same addresses and ports must be decided afresh. Linux's initial
    sequence number for one 4-tuple grows with the clock (wrapping every ~274 s), so here, from
    one host in quick succession, the new one is "after" the old; from another host behind the
    same address (NAT, a pod's reused IP), or minutes apart, it is "before" half the time, and
    only the SYN's clearing of the record keeps that request from reading as a retransmission."""
    http_engine.apply(chaos(target="Response", path="/api/*", replace={"code": 503}), pod(lab))
    out = lab.run("client", f"{sys.executable} -c '{SAME_PORT_CLIENT}' {SUBNET}.2 {PORT} 12").stdout.split()
    assert out == ["503"] * 12


def test_abort_and_replace_code_over_ipv6(lab, http_engine, served):
    client = Client(lab, Lab.ipv6(SUBNET, 2))
    try:
        http_engine.apply(chaos(target="Response", path="/api/*", replace={"code": 503}), pod(lab))
        assert client.request("/api/x")["status"] == 503
        assert client.request("/health")["status"] == 200
        http_engine.revoke_all()
        http_engine.apply(chaos(path="/api/*", abort=True), pod(lab))
        assert client.request("/api/x")["error"] == "ConnectionResetError"
        assert client.request("/health")["status"] == 200
    finally:
        client.close()


def test_response_abort_selects_by_code(lab, http_engine, served):
    http_engine.apply(chaos(target="Response", code=404, abort=True), pod(lab))
    assert served.request("/api/x")["status"] == 200       # 200: not the code selected
    http_engine.revoke_all()
    http_engine.apply(chaos(target="Response", code=200, path="/api/*", abort=True), pod(lab))
    assert served.request("/api/x")["error"] in ("ConnectionResetError", "RemoteDisconnected")
    assert served.request("/health")["status"] == 200


@pytest.mark.kernel("tc-bpf", "clsact", "sch_fq")
@pytest.mark.stock_kernel("HTTPChaos delay needs sch_fq, which the host lacks")
def test_delay_holds_each_matching_request_once_on_a_kept_alive_connection(lab, http_engine, served):
    def took(path):
        got = served.request(path)
        assert (got["status"], got["port"]) == (200, served.port), got
        return got["seconds"]

    before = min(took("/api/warm") for _ in range(3))
    retransmitted = retransmissions(lab)
    experiment = chaos(method="GET", path="/api/*", delay="300ms")
    http_engine.apply(experiment, pod(lab))
    delayed = [took(f"/api/{i}") for i in range(4)]
    health = [took("/health") for _ in range(3)]
    assert all(0.29 <= t < 1.5 for t in delayed), delayed          # each held, once: not per packet
    assert min(health) < 0.2, health
    # The client's RTO (200 ms and up) may be shorter than the hold: a request it sent again is
    # not decided again (once per request, whatever the retransmissions).
    assert counted(http_engine)["delayed"] == 4, f"{retransmissions(lab) - retransmitted} retransmissions"
    http_engine.revoke(experiment.key, pod(lab).name)
    assert took("/api/after") < before + 0.2
    # target Response: the response held, selected by its request's path and its code
    http_engine.apply(chaos(target="Response", path="/api/*", code=200, delay="300ms"), pod(lab))
    assert all(t >= 0.29 for t in (took("/api/r1"), took("/api/r2")))
    assert took("/health") < 0.2


@pytest.mark.kernel("tc-bpf", "clsact", "sch_fq")
@pytest.mark.stock_kernel("HTTPChaos and NetworkChaos delays share the pod's sch_fq root, which the host lacks")
def test_network_delay_still_holds_after_an_http_delay_on_the_pod_ends(lab, datapath, http_datapath, capabilities,
                                                                       served):
    """The agent's engines count the fq roots together (tc.fq_roots, node.py): the HTTPChaos
    delay installed the pod's fq, the NetworkChaos delay came after it, and the HTTPChaos one
    ending first must leave the fq the NetworkChaos delay still holds packets in."""
    from kfault_agent.engines import httpfault, netfault
    from kfault_agent.kernel import tc

    def took(path):
        got = served.request(path)
        assert (got["status"], got["port"]) == (200, served.port), got
        return got["seconds"]

    before = min(took("/health") for _ in range(3))
    fq = tc.fq_roots()
    http = httpfault.HttpFaultEngine(http_datapath, capabilities, 600, fq)
    net = netfault.NetFaultEngine(datapath, capabilities, 600, fq)
    delayed = spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "NetworkChaos",
                                     "metadata": {"name": "net"},
                                     "spec": {"action": "delay", "delay": {"latency": "300ms"}}})
    try:
        experiment = chaos(method="GET", path="/api/*", delay="300ms")
        http.apply(experiment, pod(lab))
        net.apply(delayed, pod(lab))
        http.revoke(experiment.key, pod(lab).name)
        roots = lab.run("pod", "tc qdisc show root").stdout
        assert " fq " in roots, roots
        # what the pod sends waits 300 ms in fq: a small response, one round trip
        held = [took("/health"), took("/api/after")]
        assert min(held) > before + 0.2, (before, held)
        assert sum(n for _, _, outcome, n in net.counter_rows(delayed.key) if outcome == "delayed") >= 2
    finally:
        http.revoke_all()
        net.revoke_all()
    assert "fq" not in lab.run("pod", "tc qdisc show root").stdout    # the last to let go removed it
    assert took("/health") < before + 0.2


def test_killed_runner_leaves_no_fault_after_its_lease(lab, served, tmp_path):
    from tests.kernel.test_dns_faults import cleanup

    before = lab.tc_state()
    doc = tmp_path / "http.yaml"
    doc.write_text(f"apiVersion: {spec.API_VERSION}\nkind: HTTPChaos\nmetadata: {{name: http}}\n"
                   f"spec: {{target: Request, port: {PORT}, path: '/api/*', abort: true}}\n")
    runner = subprocess.Popen([sys.executable, "-m", "kfault_agent.cli", "run", "-f", str(doc),
                               "--target", f"netns:{lab.ns('pod')}", "--lease", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = runner.stdout.readline()
        assert "injecting" in line, runner.stderr.read() if not line else line
        assert served.request("/api/a")["error"] == "ConnectionResetError"
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        killed = time.monotonic()
        time.sleep(max(0.0, killed + 2.2 - time.monotonic()))
        assert served.request("/api/a")["status"] == 200
        cleanup()
        assert lab.tc_state() == before
    finally:
        runner.kill()
        cleanup()


@pytest.mark.parametrize("datapath, program", [("http_datapath", p) for p in loader.HTTP_PROGRAMS]
                         + [("dns_datapath", p) for p in loader.DNS_PROGRAMS])
def test_no_loop_closed_by_a_fall_through(request, datapath, program):
    """6.1 refuses such a loop before verifying (tests/cfg61.py): seen here, on the host."""
    compiled = request.getfixturevalue(datapath).bpf.entry["functions"][program]
    assert cfg61.fallthrough_back_edges(compiled["insns"]) == []


@pytest.mark.stock_kernel("what 6.1's verifier makes of httpfault.c's programs")
@pytest.mark.parametrize("program", loader.HTTP_PROGRAMS)
def test_http_program_within_its_recorded_size(http_datapath, program):
    check_size(program, http_datapath.fd(program))
