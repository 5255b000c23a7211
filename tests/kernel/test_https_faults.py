"""HTTPChaos on HTTPS by server name (kfault's serverName), with no certificate given to kfault
and nothing decrypted: a real TLS server (Python's ssl and http.server, a self-signed
certificate made by openssl) in a "pod", real clients (Python's ssl, curl) on another host, in
namespaces the tests make. abort resets the connections whose ClientHello asks for a matching
name, whatever its case; other names, and a client that sends none, are served; delay holds a
matching connection's handshake once (sch_fq: the stock-kernel tier)."""
import json
import subprocess
import sys

import pytest

from kfault_agent.kernel import topology
from kfault_api import spec
from kfault_lab.hosts import Lab

pytestmark = pytest.mark.kernel("tc-bpf", "clsact")
SUBNET = "10.250.81"     # client .1 -- pod .2
PORT = 443
# The pod's server: HTTPS, HTTP/1.1 with keep-alive; each connection's handshake in its own
# thread (not in accept(), where a held one would keep the next connection waiting).
SERVER = r"""
import http.server, socket, ssl, sys
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[2], sys.argv[3])
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6     # "::": IPv4 clients too, as mapped addresses
    def get_request(self):
        conn, address = self.socket.accept()
        return context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False), address
    def handle_error(self, request, address):
        pass
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("served " + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = Server(("::", int(sys.argv[1])), Handler)
print("serving", flush=True)
server.serve_forever()
"""
# The client: each line "NAME COUNT" on stdin opens a connection whose ClientHello asks for NAME
# ("-": no name) and makes COUNT requests on it; "keep NAME" opens one and keeps it; "kept COUNT"
# makes COUNT requests on the kept one. Answered on stdout as JSON: the status and each request's
# seconds (the first from the connect: the handshake included), or the error.
CLIENT = r"""
import json, socket, ssl, sys, time
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
kept = None
def request(conn, reader):
    conn.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    status = int(reader.readline().split()[1])
    length = 0
    while True:
        header = reader.readline().strip()
        if not header:
            return status, reader.read(length)
        if header.lower().startswith(b"content-length:"):
            length = int(header.split(b":")[1])
for line in sys.stdin:
    command, argument = line.split()
    out = {"seconds": []}
    start = time.monotonic()
    try:
        if command == "kept":
            conn, reader, count = kept + (int(argument),)
        else:
            name, count = (argument, 0) if command == "keep" else (command, int(argument))
            conn = context.wrap_socket(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10),
                                       server_hostname=None if name == "-" else name)
            reader = conn.makefile("rb")
        for _ in range(count):
            out["status"], body = request(conn, reader)
            out["seconds"].append(time.monotonic() - start)
            start = time.monotonic()
        if command == "keep":
            kept = (conn, reader)
            out["status"] = "open"
        elif command != "kept":
            conn.close()
    except (OSError, ValueError, IndexError) as err:
        out["error"] = type(err).__name__
    print(json.dumps(out), flush=True)
"""


def chaos(name="https", **fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "HTTPChaos", "metadata": {"name": name},
                                  "spec": {"target": "Request", "port": PORT, **fields}})


class Client:
    """The client process, on the client host: TLS connections to the pod's server."""

    def __init__(self, lab, address):
        self.proc = lab.popen("client", f"{sys.executable} -c '{CLIENT}' {address} {PORT}", stdin=subprocess.PIPE)

    def connect(self, name, requests=1):
        """A new connection asking for `name` ("-": none), `requests` requests on it, closed."""
        return self._say(f"{name} {requests}")

    def keep(self, name):
        """A new connection asking for `name`, kept open for kept()."""
        return self._say(f"keep {name}")

    def kept(self, requests=1):
        return self._say(f"kept {requests}")

    def _say(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, self.proc.stderr.read()
        return json.loads(answer)

    def close(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def served(lab, tmp_path):
    """The pod with its TLS server (a self-signed certificate for www.example.test; clients
    don't check it), and a client on another host."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=www.example.test", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "cert.pem")], check=True, capture_output=True)
    lab.link("client", "pod", SUBNET)
    server = lab.popen("pod", f"{sys.executable} -c '{SERVER}' {PORT} {tmp_path}/cert.pem {tmp_path}/key.pem")
    assert server.stdout.readline().strip() == "serving", server.stderr.read()
    client = Client(lab, f"{SUBNET}.2")
    yield client
    client.close()
    server.kill()
    server.wait()


def pod(lab):
    return topology.resolve_net_target(f"netns:{lab.ns('pod')}")


def counted(engine):
    return {outcome: sum(engine.messages(a)[outcome] for a in engine.active()) for outcome in ("matched", "reset",
                                                                                               "delayed")}


def curl(lab, name):
    """(exit status, stderr) of curl asking the pod's server for https://NAME/."""
    out = lab.run("client", f"curl -sSk --max-time 10 --resolve {name}:{PORT}:{SUBNET}.2 -o /dev/null "
                            f"https://{name}:{PORT}/", check=False)
    return out.returncode, out.stderr


def test_abort_resets_the_connections_asking_for_a_matching_name(lab, http_engine, served):
    assert served.connect("www.example.test")["status"] == 200          # served, before the fault
    assert served.keep("www.example.test")["status"] == "open"         # its hello before the fault
    experiment = chaos(serverName="*.example.test", abort=True)
    http_engine.apply(experiment, pod(lab))
    assert served.connect("www.example.test")["error"] == "ConnectionResetError"
    assert served.connect("API.Example.Test")["error"] == "ConnectionResetError"   # names match in any case
    assert served.connect("example.test")["status"] == 200             # not under it
    assert served.connect("www.other.test")["status"] == 200
    assert served.connect("-")["status"] == 200                        # no name in the hello
    status, said = curl(lab, "www.example.test")
    assert status == 35 and "reset" in said.lower(), said              # SSL connect error: reset by peer
    assert curl(lab, "www.other.test")[0] == 0
    # a connection whose hello went before arming is not reached (docs/kinds/httpchaos.md)
    assert served.kept()["status"] == 200
    assert counted(http_engine) == {"matched": 3, "reset": 3, "delayed": 0}
    http_engine.revoke(experiment.key, pod(lab).name)
    assert served.connect("www.example.test")["status"] == 200


def test_abort_over_ipv6(lab, http_engine, served):
    client = Client(lab, Lab.ipv6(SUBNET, 2))
    try:
        http_engine.apply(chaos(serverName="www.example.test", abort=True), pod(lab))
        assert client.connect("www.example.test")["error"] == "ConnectionResetError"
        assert client.connect("api.example.test")["status"] == 200
        assert counted(http_engine)["reset"] == 1
    finally:
        client.close()


def test_plain_http_rules_and_server_name_rules_on_one_port_leave_each_other_alone(lab, http_engine, served):
    """A path rule never selects a ClientHello, a serverName rule never a request line, both
    placed on one port; revoking one leaves the other acting."""
    plain = chaos(name="plain", path="*", abort=True)
    http_engine.apply(plain, pod(lab))
    http_engine.apply(chaos(serverName="www.other.test", abort=True), pod(lab))
    assert served.connect("www.example.test")["status"] == 200        # the path rule: not over a hello
    assert served.connect("www.other.test")["error"] == "ConnectionResetError"
    request = lab.run("client", f"curl -s --max-time 10 -o /dev/null http://{SUBNET}.2:{PORT}/", check=False)
    assert request.returncode == 56, request                        # a plain request: reset by the path rule
    assert counted(http_engine)["reset"] == 2
    http_engine.revoke(plain.key, pod(lab).name)
    assert served.connect("www.other.test")["error"] == "ConnectionResetError"
    assert lab.run("client", f"curl -s --max-time 10 -o /dev/null http://{SUBNET}.2:{PORT}/",
                   check=False).returncode != 56                    # the TLS server's own answer, not reset


@pytest.mark.kernel("tc-bpf", "clsact", "sch_fq")
@pytest.mark.stock_kernel("HTTPChaos delay needs sch_fq, which the host lacks; httpfault.c's ClientHello path on "
                          "6.1's verifier")
def test_delay_holds_a_matching_connections_handshake_once(lab, http_engine, served):
    def took(name, requests=1):
        got = served.connect(name, requests)
        assert got.get("status") == 200, got
        return got["seconds"]

    before = min(took("www.example.test")[0] for _ in range(3))
    experiment = chaos(serverName="www.example.test", delay="300ms")
    http_engine.apply(experiment, pod(lab))
    held = [took("www.example.test", requests=2) for _ in range(3)]
    other = [took("api.example.test")[0] for _ in range(3)]
    assert all(before + 0.29 <= first < before + 1.0 for first, _ in held), (before, held)   # the handshake, once
    assert all(second < 0.2 for _, second in held), held              # a later request on it: not held
    assert min(other) < before + 0.2, (before, other)
    assert counted(http_engine)["delayed"] == 3
    http_engine.revoke(experiment.key, pod(lab).name)
    assert took("www.example.test")[0] < before + 0.2
