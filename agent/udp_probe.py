"""A UDP sender and receiver, run inside a local host with `ip netns exec`.

Every datagram carries its sequence number and a hash of itself, so the receiver can tell a
duplicate from an original and a damaged payload from a good one.
  send HOST PORT COUNT [PPS]      receive PORT IDLE_SECONDS  (each prints a JSON summary;
  the sender's holds each datagram's CLOCK_MONOTONIC send time, in ns, for latency figures)
"""
import hashlib
import json
import os
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
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("0.0.0.0", port))
    sock.settimeout(float(idle))
    print("ready", flush=True)
    seen, order, duplicates, damaged = set(), [], 0, 0
    try:
        while True:
            data = sock.recv(65535)
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
    except socket.timeout:
        pass
    print(json.dumps({"received": sorted(seen), "duplicates": duplicates, "damaged": damaged}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), *(int(a) for a in sys.argv[5:6]))
    else:
        receive(int(sys.argv[2]), sys.argv[3])
