"""A UDP sender and receiver, run inside a local host with `ip netns exec`.

Every datagram carries its sequence number and a hash of itself, so the receiver can tell a
duplicate from an original and a damaged payload from a good one.
  send HOST PORT COUNT [PPS]      receive PORT IDLE_SECONDS  (each prints a JSON summary).
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


def datagram(seq):
    body = struct.pack("!I", seq) + os.urandom(PAYLOAD - 4 - 16)
    return body + hashlib.sha256(body).digest()[:16]


def send(host, port, count, pps=5000):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    errors = 0
    gap = 1.0 / pps
    start = time.monotonic()
    sent_ns = []
    for seq in range(count):
        sent_ns.append(time.monotonic_ns())
        try:
            sock.sendto(datagram(seq), (host, port))
        except OSError:
            errors += 1
        delay = start + (seq + 1) * gap - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    print(json.dumps({"sent": count, "send_errors": errors, "sent_ns": sent_ns}))


def receive(port, idle):
    """Count datagrams until `idle` seconds pass without one after stdin closes: the caller
    closes it once the sender is done, so a slow sender (under emulation, say) or one whose
    datagrams all vanish (a partition) is told apart from a finished stream."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("0.0.0.0", port))
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
                if len(data) != PAYLOAD or hashlib.sha256(body).digest()[:16] != digest:
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
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), *(int(a) for a in sys.argv[5:6]))
    else:
        receive(int(sys.argv[2]), float(sys.argv[3]))
