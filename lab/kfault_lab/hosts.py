"""Local hosts for the demo, tests and benchmarks: network namespaces joined by veth pairs."""
import json
import os
import socket
import subprocess
import sys
import time
import uuid

PROBE = "-m kfault_lab.udp_probe"
CNI_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cni.c")
CNI_MODES = ("tcx", "clsact")    # how the emulated CNI attaches: tcx links, or classic tc at priority 1
_cni_programs = []               # cni.c compiled once a process (a compile costs ~35 s in the VM tier)


def cni_programs():
    """cni.c, compiled and loaded once and kept for the process; each EmulatedCni fills its
    endpoints and empties them when it goes."""
    if not _cni_programs:
        from kfault_agent.kernel import loader
        _cni_programs.append(loader.TcPrograms(CNI_SOURCE, ["cni_from_pod"]))
    return _cni_programs[0]


def sh(cmd, check=True):
    return subprocess.run(cmd, shell=True, check=check, capture_output=True, text=True)


class Lab:
    """Hosts named by role ('a', 'b', ...) in namespaces with a unique prefix."""

    def __init__(self):
        self.prefix = "kft" + uuid.uuid4().hex[:6]
        self.hosts = {}
        self.links = 0
        self.cnis = []

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

    def pod(self, name, node, subnet):
        """A pod on `node`, as CNIs in veth mode make them: its veth `eth0` with {subnet}.2/24
        and a default route through the node's end, `lxc{name}` with {subnet}.1. Traffic
        between two pods of a node is routed by the node. Returns the pod's address."""
        self.host(name), self.host(node)
        host_dev = f"lxc{name}"
        sh(f"ip link add eth0 netns {self.ns(name)} type veth peer {host_dev} netns {self.ns(node)}")
        sh(f"ip -n {self.ns(name)} addr add {subnet}.2/24 dev eth0")
        sh(f"ip -n {self.ns(name)} link set eth0 up")
        sh(f"ip -n {self.ns(name)} route add default via {subnet}.1")
        sh(f"ip -n {self.ns(node)} addr add {subnet}.1/24 dev {host_dev}")
        sh(f"ip -n {self.ns(node)} link set {host_dev} up")
        sh(f"ip netns exec {self.ns(node)} sysctl -qw net.ipv4.ip_forward=1")
        self.hosts[name].append("eth0")
        self.hosts[node].append(host_dev)
        return f"{subnet}.2"

    def run(self, host, cmd, check=True):
        return sh(f"ip netns exec {self.ns(host)} {cmd}", check=check)

    def popen(self, host, cmd, stdin=None):
        """One command in a host, as the process returned: exec'd through the shell, so that
        killing it kills the command (killing the shell left the command running, as dash forks
        it: echo servers outlived their tests)."""
        return subprocess.Popen(f"exec ip netns exec {self.ns(host)} {cmd}", shell=True, text=True, stdin=stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def tc_state(self):
        """Every interface of every test host, with its qdiscs, filters and tcx programs, to
        compare before and after."""
        state = {}
        for host in self.hosts:
            for dev in self.interfaces(host):
                out = [sh(f"tc -n {self.ns(host)} qdisc show dev {dev}").stdout]
                for hook in ("ingress", "egress"):
                    out.append(sh(f"tc -n {self.ns(host)} filter show dev {dev} {hook}", check=False).stdout)
                    out += [f"tcx {hook} {name}\n" for name in self.tcx_programs(host, dev, hook)]
                state[(host, dev)] = "".join(out)
        return state

    def interfaces(self, host):
        out = sh(f"ip -n {self.ns(host)} -o link show").stdout
        return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())

    def tcx_programs(self, host, dev, hook):
        """The names of the tcx programs at an interface's hook, in order ([] without tcx)."""
        from kfault_agent.kernel import tcx, topology
        if not tcx.kernel_has_tcx()[0]:
            return []
        netns = topology.netns_of(f"netns:{self.ns(host)}")
        with topology.rtnl(netns) as ipr:
            ifindex = ipr.link_lookup(ifname=dev)[0]
        return tcx.attached_programs(netns, ifindex, hook)

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
        stats = [line for line in out.splitlines() if "transmitted" in line][0].split(",")
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
        for cni in self.cnis:
            cni.close()
        for host in self.hosts:
            sh(f"ip netns del {self.ns(host)}", check=False)


class EmulatedCni:
    """cni.c on the host side of pods' veths (at tc ingress, where packets from the pod arrive),
    attached as tcx links or as classic tc filters at priority 1: what an eBPF CNI's program
    looks like to kfault."""

    def __init__(self, lab, node, pods, mode):
        from kfault_agent.kernel import topology
        self.lab, self.node, self.mode = lab, node, mode
        self.programs = cni_programs()
        self.netns = topology.netns_of(f"netns:{lab.ns(node)}")
        self.links = []
        lab.cnis.append(self)
        endpoints = self.programs.table("cni_endpoints")
        with topology.rtnl(self.netns) as ipr:
            for pod, address in pods.items():
                host_index = ipr.link_lookup(ifname=f"lxc{pod}")[0]
                entry = endpoints.Leaf()
                entry.host_ifindex = host_index
                entry.pod_mac[:] = list(_mac(lab.run(pod, "cat /sys/class/net/eth0/address").stdout))
                entry.host_mac[:] = list(_mac(ipr.get_links(host_index)[0].get_attr("IFLA_ADDRESS")))
                endpoints[endpoints.Key(int.from_bytes(socket.inet_aton(address), "little"))] = entry
                self._attach(ipr, host_index)

    def _attach(self, ipr, ifindex):
        from kfault_agent.kernel import tcx, topology
        fd = self.programs.fd("cni_from_pod")
        if self.mode == "tcx":
            self.links.append(topology.in_netns(topology.live_path(self.netns),
                                                lambda: tcx.link_create(fd, ifindex, "ingress")))
        else:
            ipr.tc("add", "clsact", ifindex)
            ipr.tc("add-filter", "bpf", ifindex, ":1", fd=fd, name="cni_from_pod", parent=0xFFFFFFF2, classid=1,
                   direct_action=True, prio=1, protocol=0x0003)

    def close(self):
        for fd in self.links:
            os.close(fd)
        self.links = []
        self.programs.table("cni_endpoints").clear()


def _mac(text):
    return bytes(int(part, 16) for part in text.strip().split(":"))
