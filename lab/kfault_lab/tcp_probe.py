"""A TCP client and an echo server, run inside a local host with `ip netns exec`, that say what
an application's socket calls returned: the errno of a refused or reset connection, not a timing.
  serve PORT                         echo every connection (both families); prints "ready"
  connect HOST PORT TIMEOUT [HEADERS]  prints what connect() got; then, for each line on stdin,
                                     sends it and prints what waiting for the echo got
Each outcome is "connected" / "echo", an errno's name (ECONNREFUSED, ECONNRESET) or "timeout".
HEADERS "hop": an IPv6 hop-by-hop options header on every segment (needs CAP_NET_RAW).

TcpClient and EchoServer run them in a Lab's host.
"""
import errno
import socket
import subprocess
import sys
import threading

PROBE = "-m kfault_lab.tcp_probe"
EMPTY_OPTIONS = bytes([0, 0, 1, 4, 0, 0, 0, 0])   # next header, length (the kernel's), PadN


def outcome(step):
    """None when step() returns, else what it failed with."""
    try:
        step()
    except socket.timeout:
        return "timeout"
    except OSError as err:
        return errno.errorcode.get(err.errno, str(err.errno))
    return None


def connect(address, port, timeout, headers="-"):
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    if headers == "hop":
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_HOPOPTS, EMPTY_OPTIONS)
    sock.settimeout(timeout)
    print(outcome(lambda: sock.connect((address, port))) or "connected", flush=True)
    for line in sys.stdin:
        def exchange(line=line):
            sock.sendall(line.encode())
            if not sock.recv(len(line)):
                raise OSError(errno.EPIPE, "closed by the peer")
        print(outcome(exchange) or "echo", flush=True)


def serve(port):
    server = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
    print("ready", flush=True)
    while True:
        threading.Thread(target=echo, args=(server.accept()[0],), daemon=True).start()


def echo(conn):
    try:
        while data := conn.recv(100):
            conn.sendall(data)
    except OSError:
        pass   # reset: the client is told, not the server
    conn.close()


class EchoServer:
    """`serve` in a host of `lab`, until closed."""

    def __init__(self, lab, host, port):
        self.process = lab.popen(host, f"{sys.executable} {PROBE} serve {port}")
        ready = self.process.stdout.readline().strip()
        if ready != "ready":
            self.close()
            raise RuntimeError(f"the echo server in {host} did not start: {self.process.stderr.read()}")

    def close(self):
        self.process.kill()
        self.process.wait()


class TcpClient:
    """`connect` in a host of `lab`: `connected` holds what connect() got."""

    def __init__(self, lab, host, address, port, timeout=20.0, headers="-"):
        self.process = lab.popen(host, f"{sys.executable} {PROBE} connect {address} {port} {timeout} {headers}",
                                 stdin=subprocess.PIPE)
        self.connected = self.process.stdout.readline().strip()

    def exchange(self):
        """Send a line and wait for its echo: "echo", an errno's name or "timeout"."""
        self.process.stdin.write("ping\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def close(self):
        self.process.kill()
        self.process.wait()


def connect_once(lab, host, address, port, timeout=20.0, headers="-"):
    """What one connect() from `host` got: "connected", an errno's name or "timeout"."""
    client = TcpClient(lab, host, address, port, timeout, headers)
    client.close()
    return client.connected


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        connect(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), *sys.argv[5:6])
