"""Local hosts for the demo, tests and benchmarks: network namespaces joined by veth pairs."""
import json
import subprocess
import sys
import time
import uuid

PROBE = "-m kfault_lab.udp_probe"


def sh(cmd, check=True):
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


class Lab:
    """Hosts named by role ('a', 'b', ...) in namespaces with a unique prefix."""

    def __init__(self):
        self.prefix = "kft" + uuid.uuid4().hex[:6]
        self.hosts = {}
        self.links = 0

    def ns(self, host):
        return f"{self.prefix}-{host}"

    def host(self, name):
        if name not in self.hosts:
            sh(f"ip netns add {self.ns(name)}")
            sh(f"ip -n {self.ns(name)} link set lo up")
            self.hosts[name] = []
        return self.ns(name)

    def link(self, left, right, subnet):
        """A veth pair between two hosts, dual-stack: left gets .1, right .2 of a /24 subnet
        like '10.250.1', and ::1, ::2 of its IPv6 twin (ipv6()). Returns the IPv4 pair."""
        self.links += 1
        lname, rname = f"{right}{self.links}", f"{left}{self.links}"   # named after the far end
        self.host(left), self.host(right)
        sh(f"ip link add {lname} netns {self.ns(left)} type veth peer {rname} netns {self.ns(right)}")
        for host, dev, end in ((left, lname, 1), (right, rname, 2)):
            sh(f"ip -n {self.ns(host)} addr add {subnet}.{end}/24 dev {dev}")
            # nodad: usable at once, not "tentative" for the second duplicate address detection takes
            sh(f"ip -n {self.ns(host)} addr add {self.ipv6(subnet, end)}/64 dev {dev} nodad")
            sh(f"ip -n {self.ns(host)} link set {dev} up")
            self.hosts[host].append(dev)
        return f"{subnet}.1", f"{subnet}.2"

    @staticmethod
    def ipv6(subnet, end):
        """The IPv6 address of end 1 or 2 of the link made for `subnet` ('10.250.1' -> fd6b:250:1::/64)."""
        _, second, third = subnet.split(".")
        return f"fd6b:{int(second):x}:{int(third):x}::{end}"

    def run(self, host, cmd, check=True):
        return sh(f"ip netns exec {self.ns(host)} {cmd}", check=check)

    def popen(self, host, cmd, stdin=None):
        return subprocess.Popen(f"ip netns exec {self.ns(host)} {cmd}", shell=True, text=True, stdin=stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def tc_state(self):
        """Every qdisc and filter of every test host, to compare before and after."""
        state = {}
        for host, devs in self.hosts.items():
            for dev in devs:
                out = [sh(f"tc -n {self.ns(host)} qdisc show dev {dev}").stdout]
                for hook in ("ingress", "egress"):
                    out.append(sh(f"tc -n {self.ns(host)} filter show dev {dev} {hook}", check=False).stdout)
                state[(host, dev)] = "".join(out)
        return state

    def counter(self, host, name):
        """A kernel SNMP/netstat counter of a host, by nstat's name (e.g. IpExtInCsumErrors)."""
        out = self.run(host, f"nstat -asz {name}").stdout.split()
        return int(out[out.index(name) + 1])

    def udp(self, sender, receiver, address, count, port=5001, pps=5000, idle=1.5, size=200, ipv6_headers=""):
        """Send `count` datagrams of `size` bytes (IPv4 or IPv6, by `address`; `ipv6_headers`:
        extension headers each carries, udp_probe's HEADERS); return (sender summary,
        receiver summary)."""
        recv = self.popen(receiver, f"{sys.executable} {PROBE} receive {port} {idle}", stdin=subprocess.PIPE)
        assert recv.stdout.readline().strip() == "ready"
        sent = json.loads(self.run(sender, f"{sys.executable} {PROBE} send {address} {port} {count} {pps} "
                                           f"{size} {ipv6_headers or '-'}").stdout)
        out, _ = recv.communicate(timeout=60)   # closes its stdin: the sender is done
        return sent, json.loads(out)

    def ping_flood(self, host, address, count):
        """ping -f; returns (transmitted, received, output)."""
        out = self.run(host, f"ping -f -q -W 1 -c {count} {address}", check=False).stdout + \
            self.run(host, "true").stderr
        stats = [l for l in out.splitlines() if "transmitted" in l][0].split(",")
        return int(stats[0].split()[0]), int(stats[1].split()[0]), out

    def ping_rtts(self, host, address, count, interval=0.05):
        """Round-trip times in ms of `count` pings, in sequence order (lost ones left out)."""
        out = self.run(host, f"ping -n -c {count} -i {interval} -W 2 {address}", check=False).stdout
        return [float(line.rsplit("time=", 1)[1].split()[0]) for line in out.splitlines() if "time=" in line]

    def iperf3(self, client, server, address, seconds=5, reverse=False):
        """TCP throughput in bit/s from `client` to `server` (`reverse`: server to client),
        as the receiver counted it."""
        daemon = self.popen(server, "iperf3 -s -1 -p 5201")
        try:
            for _ in range(50):   # wait until the server listens
                if self.run(server, "ss -ltnH sport = :5201").stdout.strip():
                    break
                time.sleep(0.1)
            out = self.run(client, f"iperf3 -c {address} -p 5201 -t {seconds} -J {'-R' if reverse else ''}").stdout
        finally:
            daemon.kill()
            daemon.wait()
        return json.loads(out)["end"]["sum_received"]["bits_per_second"]

    def close(self):
        for host in self.hosts:
            sh(f"ip netns del {self.ns(host)}", check=False)
