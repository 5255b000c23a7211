"""How long connecting takes, and a download on a connection already open, measured by a real
TCP client against a real server, run inside a local host with `ip netns exec`.
  serve PORT                                  on each connection, for every line "N" read, send
                                              N bytes; prints "ready"
  measure HOST PORT CONNECTS SIZE TRANSFERS   times CONNECTS connect() calls (each closed), then
                                              opens one connection and times TRANSFERS downloads
                                              of SIZE bytes on it; prints a JSON summary
                                              {"connect_ms": [...], "transfer_ms": [...]}

ConnectServer and measure() run them in a Lab's host.
"""
import json
import socket
import sys
import threading
import time

PROBE = "-m kfault_lab.connect_probe"
CHUNK = 65536


def serve(port):
    server = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
    print("ready", flush=True)
    while True:
        threading.Thread(target=send_on_request, args=(server.accept()[0],), daemon=True).start()


def send_on_request(conn):
    block = bytes(CHUNK)
    with conn, conn.makefile("rb") as lines:
        for line in lines:
            left = int(line)
            while left:
                left -= conn.send(block[:min(left, CHUNK)])


def connect(address, port):
    return socket.create_connection((address, port), timeout=30)


def download(sock, size):
    sock.sendall(f"{size}\n".encode())
    left = size
    while left:
        got = len(sock.recv(min(left, CHUNK)))
        if not got:
            raise ConnectionError("closed by the server mid-download")
        left -= got


def measure(address, port, connects, size, transfers):
    connect_ms = []
    for _ in range(connects):
        start = time.monotonic()
        connect(address, port).close()
        connect_ms.append((time.monotonic() - start) * 1e3)
    transfer_ms = []
    with connect(address, port) as sock:
        for _ in range(transfers):
            start = time.monotonic()
            download(sock, size)
            transfer_ms.append((time.monotonic() - start) * 1e3)
    return {"connect_ms": connect_ms, "transfer_ms": transfer_ms}


class ConnectServer:
    """`serve` in a host of `lab`, until closed."""

    def __init__(self, lab, host, port):
        self.process = lab.popen(host, f"{sys.executable} {PROBE} serve {port}")
        if self.process.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError(f"the server in {host} did not start: {self.process.stderr.read()}")

    def close(self):
        self.process.kill()
        self.process.wait()


def measure_in(lab, host, address, port, connects=5, size=1 << 20, transfers=3):
    """`measure` in a host of `lab`: {"connect_ms": [...], "transfer_ms": [...]}."""
    out = lab.run(host, f"{sys.executable} {PROBE} measure {address} {port} {connects} {size} {transfers}").stdout
    return json.loads(out)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]), *map(int, sys.argv[4:7]))))
