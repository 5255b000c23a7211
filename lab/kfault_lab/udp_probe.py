"""A UDP sender and receiver, run inside a local host with `ip netns exec`.

Every datagram carries its sequence number and a hash of itself, so the receiver can tell a
duplicate from an original and a damaged payload from a good one.
  send HOST PORT COUNT [PPS [SIZE [HEADERS]]]      receive PORT IDLE_SECONDS  (each prints a JSON summary).
HOST is an IPv4 or IPv6 address (the receiver takes both). HEADERS, for IPv6: the extension
headers each datagram carries, comma-separated from "hop" (hop-by-hop options), "dst"
(destination options) and "rt" (a routing header with no segments left, which the kernel
won't add for a socket: the datagram is then built whole and sent raw), or "-" for none; a
SIZE above the path MTU adds fragment headers.
The sender's summary holds each datagram's CLOCK_MONOTONIC send time and the receiver's
the arrival order and times: namespaces share that clock, so their difference is the
one-way latency.
"""
import hashlib
import json
import os
import selectors
import socket
import struct
import sys
import time

PAYLOAD = 200
# An empty options header: next header and length (the kernel fills them), then PadN over
# the 6 bytes left of its 8.
EMPTY_OPTIONS = bytes([0, 0, 1, 4, 0, 0, 0, 0])
HEADER_OPTIONS = {"hop": socket.IPV6_HOPOPTS, "dst": socket.IPV6_DSTOPTS}


def datagram(seq, size=PAYLOAD):
    body = struct.pack("!I", seq) + os.urandom(size - 4 - 16)
    return body + hashlib.sha256(body).digest()[:16]


# A routing header of a type no node handles, with no segments left: receivers skip it.
EMPTY_ROUTING = bytes([0, 0, 253, 0, 0, 0, 0, 0])


def sender_socket(host, headers):
    if ":" not in host:
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    for name in filter(None, headers.split(",")):
        sock.setsockopt(socket.IPPROTO_IPV6, HEADER_OPTIONS[name], EMPTY_OPTIONS)   # needs CAP_NET_RAW
    return sock


def checksum(data):
    data += b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return ~total & 0xffff or 0xffff


class RawIPv6Sender:
    """Whole IPv6 datagrams (hop-by-hop, routing, destination options before UDP), for the
    headers a socket option can't add."""
    ORDER = (("hop", 0, EMPTY_OPTIONS), ("rt", 43, EMPTY_ROUTING), ("dst", 60, EMPTY_OPTIONS))

    def __init__(self, host, headers):
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.connect((host, 9))
        self.source = socket.inet_pton(socket.AF_INET6, probe.getsockname()[0])
        probe.close()
        self.dest = socket.inet_pton(socket.AF_INET6, host)
        self.chain = [(number, body) for name, number, body in self.ORDER if name in headers.split(",")]
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def sendto(self, payload, address):
        port = address[1]
        udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
        pseudo = self.source + self.dest + struct.pack("!I3xB", len(udp), 17)
        udp = udp[:6] + struct.pack("!H", checksum(pseudo + udp)) + udp[8:]
        numbers = [number for number, _ in self.chain] + [17]
        extensions = b"".join(bytes([numbers[i + 1]]) + body[1:] for i, (_, body) in enumerate(self.chain))
        header = struct.pack("!IHBB", 6 << 28, len(extensions) + len(udp), numbers[0], 64)
        self.sock.sendto(header + self.source + self.dest + extensions + udp, (address[0], 0))


def send(host, port, count, pps=5000, size=PAYLOAD, headers="-"):
    headers = headers.strip("-")
    sock = RawIPv6Sender(host, headers) if "rt" in headers.split(",") else sender_socket(host, headers)
    errors = 0
    gap = 1.0 / pps
    start = time.monotonic()
    sent_ns = []
    for seq in range(count):
        sent_ns.append(time.monotonic_ns())
        try:
            sock.sendto(datagram(seq, size), (host, port))
        except OSError:
            errors += 1
        delay = start + (seq + 1) * gap - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print(json.dumps({"sent": count, "send_errors": errors, "sent_ns": sent_ns}))


SO_RCVBUFFORCE = 33   # <asm-generic/socket.h>; Python's socket module doesn't name it


def receive(port, idle):
    """Count datagrams until `idle` seconds pass without one after stdin closes: the caller
    closes it once the sender is done, so a slow sender (under emulation, say) or one whose
    datagrams all vanish (a partition) is told apart from a finished stream."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)   # IPv4 arrives as ::ffff:a.b.c.d
    # SO_RCVBUF is capped at net.core.rmem_max (about 400 datagrams): a receiver that stalls
    # for 80 ms under emulation would drop the rest. Root may pass the cap (SO_RCVBUFFORCE).
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    sock.bind(("::", port))
    sock.setblocking(False)
    events = selectors.DefaultSelector()
    events.register(sock, selectors.EVENT_READ)
    events.register(sys.stdin, selectors.EVENT_READ)
    print("ready", flush=True)
    seen, order, arrived_ns, duplicates, damaged = set(), [], [], 0, 0
    quiet_from = None   # set once the sender is done
    while quiet_from is None or time.monotonic() - quiet_from < idle:
        for key, _ in events.select(timeout=None if quiet_from is None else idle):
            if key.fileobj is sys.stdin:
                if not sys.stdin.readline():
                    events.unregister(sys.stdin)
                    quiet_from = time.monotonic()
                continue
            while True:
                try:
                    data = sock.recv(65535)
                except BlockingIOError:
                    break
                now_ns = time.monotonic_ns()
                if quiet_from is not None:
                    quiet_from = time.monotonic()
                body, digest = data[:-16], data[-16:]
                if len(data) < 20 or hashlib.sha256(body).digest()[:16] != digest:
                    damaged += 1
                    continue
                seq = struct.unpack("!I", body[:4])[0]
                if seq in seen:
                    duplicates += 1
                else:
                    seen.add(seq)
                    order.append(seq)
                    arrived_ns.append(now_ns)
    print(json.dumps({"received": sorted(seen), "order": order, "arrived_ns": arrived_ns,
                      "duplicates": duplicates, "damaged": damaged}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), *(int(a) for a in sys.argv[5:7]), *sys.argv[7:8])
    else:
        receive(int(sys.argv[2]), float(sys.argv[3]))
