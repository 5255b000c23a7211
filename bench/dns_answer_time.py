"""DNSChaos `error` as a client in the pod sees it: how long a query for a matching name takes to
get its error, over UDP and TCP and through getaddrinfo, beside a name the zone's real server
(dnsmasq, one link away) answers, in one run. The issue's goal: the error in under 5 ms.

A "pod" (a network namespace) linked to the zone's server; DNSChaos error on *.example.test on
the pod. Each query is timed in the client process itself (time.monotonic around the call):
  UDP           one query datagram, until its answer (SERVFAIL made by the program)
  TCP           connect, the length-prefixed query, until the reset (or the answer)
  getaddrinfo   glibc's resolver, /etc/resolv.conf pointing at the server (EAI_AGAIN)
QUERIES of each, 5 ms apart (unpaced, the resets end TCP connections faster than dnsmasq, which
forks for each, accepts them: its accept queue overflows and a SYN waits 1 s for its
retransmission), after one unmeasured warm-up; the median, the 95th percentile, the largest and
how many took over 5 ms.
Run as root: make bench-dns-answer.
"""
import json
import os
import statistics
import subprocess
import sys
import time

from kfault_agent.engines import dnsfault
from kfault_agent.kernel import capabilities, loader, topology
from kfault_api import spec
from kfault_lab.hosts import Lab

SUBNET = "10.250.53"
QUERIES = 100
ZONE = {"www.example.test": "10.9.9.9", "ok.other.test": "10.9.9.11"}
# The client, run in the pod: prints {"udp": [s...], "tcp": [...], "getaddrinfo": [...]} and
# what the last of each got.
CLIENT = r"""
import json, os, socket, struct, sys, time
server, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
question = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
def query(qid):
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question
def rcode(message):
    return message[3] & 0xf
def udp(qid):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(query(qid), (server, 53))
        return "rcode %d" % rcode(sock.recv(512))
def tcp(qid):
    try:
        with socket.create_connection((server, 53), timeout=2) as sock:
            message = query(qid)
            sock.sendall(struct.pack("!H", len(message)) + message)
            got = sock.recv(514)
            return "rcode %d" % rcode(got[2:]) if len(got) > 4 else "closed"
    except ConnectionResetError:
        return "reset"
def resolve(_):
    try:
        socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)
        return "resolved"
    except socket.gaierror as err:
        return "EAI_%d" % -err.errno
out = {}
for label, call in (("udp", udp), ("tcp", tcp), ("getaddrinfo", resolve)):
    call(0)
    took = []
    for i in range(count):
        start = time.monotonic()
        got = call(i + 1)
        took.append(time.monotonic() - start)
        time.sleep(0.005)   # paced: dnsmasq forks per TCP connection, and a burst overflows its accept queue
    out[label] = took
    out[label + "_got"] = got
print(json.dumps(out))
"""


def dnsmasq(lab, address):
    server = lab.popen("zone", "dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts "
                               f"--bind-interfaces --listen-address={address} --pid-file= --user=root "
                               "--log-facility=- --local=/test/ "
                               + " ".join(f"--host-record={name},{ip}" for name, ip in ZONE.items()))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if lab.run("zone", f"dig +short +tries=1 +time=1 @{address} www.example.test", check=False).stdout.strip():
            return server
        time.sleep(0.05)
    server.kill()
    raise RuntimeError("dnsmasq did not answer")


def client(lab, server, name):
    out = subprocess.run(["ip", "netns", "exec", lab.ns("pod"), sys.executable, "-c", CLIENT, server, name,
                          str(QUERIES)], capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout)


def main():
    caps = capabilities.probe_capabilities()
    dns = loader.DnsDatapath()
    engine = dnsfault.DnsFaultEngine(dns, caps)
    lab = Lab()
    server = None
    resolv = None
    try:
        _, address = lab.link("pod", "zone", SUBNET)
        server = dnsmasq(lab, address)
        folder = f"/etc/netns/{lab.ns('pod')}"      # ip netns exec mounts it over /etc/resolv.conf
        os.makedirs(folder, exist_ok=True)
        resolv = f"{folder}/resolv.conf"
        with open(resolv, "w") as conf:
            conf.write(f"nameserver {address}\noptions attempts:1 timeout:2\n")
        engine.apply(spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "DNSChaos",
                                            "metadata": {"name": "error"},
                                            "spec": {"action": "error", "patterns": ["*.example.test"]}}),
                     topology.resolve_net_target(f"netns:{lab.ns('pod')}"))
        rows = {"matching (www.example.test)": client(lab, address, "www.example.test"),
                "other (ok.other.test)": client(lab, address, "ok.other.test")}
        print(f"DNSChaos error on *.example.test, {QUERIES} queries of each, timed in the client: "
              "median / p95 / max in ms, [how many over 5 ms], (what the last got)")
        for row, got in rows.items():
            cells = []
            for label in ("udp", "tcp", "getaddrinfo"):
                ms = [s * 1e3 for s in got[label]]
                p95 = statistics.quantiles(ms, n=20)[-1]
                cells.append(f"{label} {statistics.median(ms):6.3f} / {p95:6.3f} / {max(ms):7.1f} "
                             f"[{sum(1 for m in ms if m > 5)}] ({got[label + '_got']})")
            print(f"   {row:<28} " + "   ".join(cells))
    finally:
        engine.revoke_all()
        if resolv:
            os.remove(resolv)
            os.rmdir(os.path.dirname(resolv))
        if server:
            server.kill()
            server.wait()
        lab.close()
        dns.close()


if __name__ == "__main__":
    main()
