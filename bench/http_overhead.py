"""HTTP benchmark, in one run:
1. What HTTPChaos's programs cost a packet they don't act on, beside netfault.c's egress_to on
   the same packet (bench/dns_overhead.py's rows), per packet, by BPF_PROG_TEST_RUN:
  (0) a program of two instructions (pass)              the floor: BPF_PROG_TEST_RUN's own cost
  (a) egress_to, no NetworkChaos rule matching          the reference
  (b) http_request_in, a UDP datagram                   not TCP: the port check's first compare
  (c) http_request_in, a TCP segment to port 5001       a port no rule is on: the port bitmap
  (d) http_response_out, a TCP segment from port 5001   the same, the egress program
  (e) http_request_in, an ACK to the armed port         the bitmap, the headers read, a hash lookup
  (f) http_request_in, GET of a path no rule matches    the request line read, one DFA walk
   What a packet pays for a hook is its row less (0).
2. (needs sch_fq: the VM, `scripts/vm-run`) an HTTP request's latency under a 300 ms HTTPChaos
   delay beside a 300 ms NetworkChaos delay, both on the server pod, with a real server
   (http.server) and client (http.client): the latency each adds, and its ratio to the 300 ms
   asked, on a kept-alive connection and on a new connection per request.
Run as root: make bench-http.
"""
import ipaddress
import json
import os
import statistics
import struct
import sys

from dns_overhead import PASS_PROGRAM, ns, tcp_packet
from net_overhead import udp_packet

from kfault_agent.engines import httpfault, netfault
from kfault_agent.kernel import bpfcall, capabilities, loader, topology
from kfault_api import spec
from kfault_lab.hosts import Lab

SUBNET = "10.250.81"     # client .1 -- pod .2
PORT = 8080
DELAY = "300ms"
DELAY_S = 0.3
REQUESTS = 7             # per case; the median is reported
# No agent renews the engines' leases here: a placement must outlive its case (8 requests of
# ~4 s each under a 300 ms NetworkChaos delay in the VM), or its rules lapse mid-case (the
# default 10 s did: the requests after it were counted as under the fault and were not).
LEASE_S = 600
BODY = 64 * 1024         # a response of several round trips' worth of segments at the initial window
SERVER = r"""
import http.server, sys
BODY = b"x" * int(sys.argv[3])
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler)
print("serving", flush=True)
server.serve_forever()
"""
CLIENT = r"""
import http.client, json, sys, time
host, port, mode, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
took, conn = [], None
for i in range(count + 1):
    start = time.monotonic()
    if conn is None or mode == "new":
        conn = http.client.HTTPConnection(host, port, timeout=30)
        if mode == "kept":
            conn.connect()
            start = time.monotonic()
    conn.request("GET", "/api/items")
    response = conn.getresponse()
    assert response.status == 200 and len(response.read()) > 0
    if mode == "new":
        conn.close()
    if i:
        took.append(time.monotonic() - start)
print(json.dumps(took))
"""


def http_request(src, dst, path):
    payload = f"GET {path} HTTP/1.1\r\nHost: pod\r\nUser-Agent: bench\r\n\r\n".encode()
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 0, 0, 64, 6, 0,
                     ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    tcp = struct.pack("!HHIIBBHHH", 40000, PORT, 1, 1, 5 << 4, 0x18, 65535, 0, 0)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp + payload


def to_port(packet, port, source=False):
    """A tcp_packet() with its destination (or source) port changed."""
    at = 14 + 20 + (0 if source else 2)
    return packet[:at] + struct.pack("!H", port) + packet[at + 2:]


def http_chaos(**fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "HTTPChaos", "metadata": {"name": "bench"},
                                  "spec": {"target": "Request", "port": PORT, **fields}})


def per_packet(net, http, lab, target):
    client, pod = f"{SUBNET}.1", f"{SUBNET}.2"
    floor = bpfcall.prog_load(bpfcall.PROG_SCHED_CLS, PASS_PROGRAM, "GPL", "kfault_pass")
    long_path = "/api/" + "segment/" * 20 + "item"
    rows = [("(0) two instructions: pass", floor, udp_packet(client, pod)),
            ("(a) egress_to, no rule matching", net.fd("egress_to"), udp_packet(pod, client)),
            ("(b) http_request_in, UDP", http.fd("http_request_in"), udp_packet(client, pod)),
            ("(c) http_request_in, TCP to port 5001", http.fd("http_request_in"), tcp_packet(client, pod)),
            ("(d) http_response_out, TCP from port 5001", http.fd("http_response_out"),
             to_port(tcp_packet(pod, client), 5001, source=True)),
            ("(e) http_request_in, ACK to the armed port", http.fd("http_request_in"),
             to_port(tcp_packet(client, pod), PORT)),
            ("(f) http_request_in, GET, path unmatched (12 B)", http.fd("http_request_in"),
             http_request(client, pod, "/other/items")),
            (f"(f') the same, path of {len(long_path)} B", http.fd("http_request_in"),
             http_request(client, pod, long_path.replace("/api/", "/web/")))]
    engine = httpfault.HttpFaultEngine(http, capabilities.probe_capabilities(), LEASE_S)
    engine.apply(http_chaos(method="GET", path="/api/*", abort=True), target)
    try:
        print(f"1. per-packet cost, BPF_PROG_TEST_RUN, median of 5 runs of 2,000,000 (one HTTPChaos abort on "
              f"GET /api/* at port {PORT}):")
        floor_ns = None
        for label, fd, packet in rows:
            cost = ns(fd, packet)
            floor_ns = cost if floor_ns is None else floor_ns
            print(f"   {label:<50} {cost:6.1f} ns   {cost - floor_ns:+6.1f} ns over (0)")
    finally:
        engine.revoke_all()
        os.close(floor)


def request_times(lab, mode):
    out = lab.run("client", f"{sys.executable} -c '{CLIENT}' {SUBNET}.2 {PORT} {mode} {REQUESTS}")
    return json.loads(out.stdout)


def latency(net, http, lab, target, caps):
    print(f"2. GET of a {BODY // 1024} KiB response, median of {REQUESTS} requests, latency added to the "
          f"same request without a fault, and its ratio to the {DELAY} asked:")
    faults = [("HTTPChaos delay", httpfault.HttpFaultEngine(http, caps, LEASE_S),
               http_chaos(method="GET", path="/api/*", delay=DELAY)),
              ("NetworkChaos delay", netfault.NetFaultEngine(net, caps, LEASE_S), spec.parse_experiment(
                  {"apiVersion": spec.API_VERSION, "kind": "NetworkChaos", "metadata": {"name": "bench"},
                   "spec": {"action": "delay", "delay": {"latency": DELAY}}}))]
    for mode, what in (("kept", "one kept-alive connection"), ("new", "a new connection per request")):
        base = statistics.median(request_times(lab, mode))
        print(f"   {what}: without a fault {base * 1000:7.1f} ms")
        for name, engine, experiment in faults:
            engine.apply(experiment, target)
            try:
                took = statistics.median(request_times(lab, mode))
                counted = engine.counter_rows(experiment.key)
            finally:
                engine.revoke_all()
            added = took - base
            print(f"      {name:<20} {took * 1000:7.1f} ms   +{added * 1000:6.1f} ms   ratio {added / DELAY_S:4.2f}   "
                  + ", ".join(f"{scope} {outcome} {count}" for _, scope, outcome, count in counted
                              if outcome in ("matched", "delayed") and count))


def main():
    caps = capabilities.probe_capabilities()
    net, http = loader.NetDatapath(), loader.HttpDatapath()
    lab = Lab()
    server = None
    try:
        lab.link("client", "pod", SUBNET)
        target = topology.resolve_net_target(f"netns:{lab.ns('pod')}")
        per_packet(net, http, lab, target)
        fq = caps.get("sch_fq")
        if not (fq and fq.available):
            print(f"2. skipped: no sch_fq on this kernel ({fq.reason if fq else 'not probed'}); "
                  "run it in the VM: scripts/vm-run make bench-http")
            return
        server = lab.popen("pod", f"{sys.executable} -c '{SERVER}' {SUBNET}.2 {PORT} {BODY}")
        assert server.stdout.readline().strip() == "serving", server.stderr.read()
        latency(net, http, lab, target, caps)
    finally:
        if server:
            server.kill()
            server.wait()
        lab.close()
        http.close()
        net.close()


if __name__ == "__main__":
    main()
