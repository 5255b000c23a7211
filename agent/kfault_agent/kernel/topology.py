"""Targets: a network namespace (by name, path or PID), its veth interfaces and their peers."""
import ctypes
import ipaddress
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Optional

from pyroute2 import IPRoute

from kfault_agent.errors import NetnsGone, TargetNotFound, kernel_errors
from kfault_api.quoting import quoted

NETNS_RUN_DIR = "/run/netns"
NSID_NOT_ASSIGNED = 0xFFFFFFFF
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Netns:
    """A network namespace, known by its inode; `path` opened it when it was found (None: the
    agent's own, the node's)."""
    path: Optional[str] = field(compare=False)
    inode: int

    def __str__(self):
        return self.path or "host"


@dataclass(frozen=True)
class Link:
    netns: Netns
    ifindex: int
    ifname: str


@dataclass(frozen=True)
class TargetInterface:
    """A veth of the target (`inside`) and its peer on the other side of the pair (`outside`)."""
    inside: Link
    outside: Link
    addresses: tuple   # ipaddress objects assigned to `inside`


@dataclass(frozen=True)
class NetTarget:
    name: str
    netns: Netns
    interfaces: tuple


def rtnl(netns):
    """An rtnetlink handle in `netns` (never creates a namespace)."""
    if not netns.path:
        return IPRoute()
    with kernel_errors(f"can't enter the network namespace {netns}"):
        return IPRoute(fileno=netlink_socket(live_path(netns)).detach())


def live_path(netns):
    """A path that opens `netns` now. A pid target's /proc/PID/ns/net goes with that process
    while the namespace may live on (a pod's other processes hold it, or a restarted
    container): then a name under /run/netns or any process still in it will do."""
    for path in _paths_to_try(netns):
        try:
            if os.stat(path).st_ino == netns.inode:
                return path
        except OSError:
            continue
    raise NetnsGone(f"network namespace {netns} (inode {netns.inode}) is gone")


def _paths_to_try(netns):
    yield netns.path
    if os.path.isdir(NETNS_RUN_DIR):
        yield from (os.path.join(NETNS_RUN_DIR, name) for name in os.listdir(NETNS_RUN_DIR))
    yield from (f"/proc/{pid}/ns/net" for pid in os.listdir("/proc") if pid.isdigit())


def scratch_rtnl():
    """An rtnetlink handle in a new, anonymous namespace that lives as long as the handle:
    a place to try things without touching the node."""
    return IPRoute(fileno=netlink_socket(None).detach())


def netlink_socket(netns_path):
    """A NETLINK_ROUTE socket made in the namespace at `netns_path` (None: in a new one).

    A socket stays in the namespace it was made in. (pyroute2's own netns= forks a child per
    socket, which from an agent running gRPC and bcc threads is slow and can hang on a lock
    the fork copied held.)"""
    return in_netns(netns_path, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                                      socket.NETLINK_ROUTE))


def in_netns(netns_path, call):
    """call() in a throwaway thread that entered the namespace at `netns_path` (None: a new
    one); returns what it returns. setns()/unshare() of a network namespace move only the
    calling thread, so the agent's own threads stay where they are."""
    made = {}

    def run():
        try:
            if netns_path is None:
                _check(_libc.unshare(CLONE_NEWNET), "unshare a network namespace")
            else:
                fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _check(_libc.setns(fd, CLONE_NEWNET), f"enter the network namespace {netns_path}")
                finally:
                    os.close(fd)
            made["result"] = call()
        except OSError as err:
            made["error"] = err

    thread = threading.Thread(target=run, name="kfault-netns")
    thread.start()
    thread.join()
    if "error" in made:
        raise made["error"]
    return made["result"]


def _check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"can't {what}: {os.strerror(err)}")


def host_netns():
    return Netns(None, os.stat("/proc/self/ns/net").st_ino)


def netns_of(target):
    """'netns:NAME', 'netns:/path' or 'pid:PID' -> Netns. Raises TargetNotFound with the fix."""
    kind, _, value = target.partition(":")
    if kind == "netns" and value:
        path = value if value.startswith("/") else os.path.join(NETNS_RUN_DIR, value)
    elif kind == "pid" and value.isdigit():
        path = f"/proc/{value}/ns/net"
    else:
        raise TargetNotFound(f"--target {quoted(target)}: use netns:NAME, netns:/path/to/netns or pid:PID")
    try:
        inode = os.stat(path).st_ino
    except OSError as err:
        raise TargetNotFound(f"--target {quoted(target)}: {quoted(path)}: {err.strerror}") from None
    except ValueError as err:       # a NUL in the path
        raise TargetNotFound(f"--target {quoted(target)}: not a path ({err})") from None
    if inode == host_netns().inode:
        raise TargetNotFound(f"--target {quoted(target)} is the node's own network namespace; "
                             "kfault faults a pod's (or a local host's) namespace")
    return Netns(path, inode)


def candidate_peer_namespaces():
    """Where the outer end of a target's veth can be: the node's namespace or a named one."""
    found = [host_netns()]
    if os.path.isdir(NETNS_RUN_DIR):
        for name in sorted(os.listdir(NETNS_RUN_DIR)):
            path = os.path.join(NETNS_RUN_DIR, name)
            try:
                found.append(Netns(path, os.stat(path).st_ino))
            except OSError:
                continue
    return found


def _peer_netns(ipr, nsid):
    for candidate in candidate_peer_namespaces():
        fd = os.open(candidate.path or "/proc/self/ns/net", os.O_RDONLY)
        try:
            if ipr.get_netnsid(fd=fd).get("nsid") == nsid:
                return candidate
        finally:
            os.close(fd)
    return None


def resolve_net_target(target, device=None):
    """Find the target's veth interfaces (all, or just `device`), their addresses and peers."""
    netns = netns_of(target)
    interfaces = []
    with rtnl(netns) as ipr:
        addresses = {}
        for msg in ipr.get_addr():
            addr = ipaddress.ip_address(msg.get_attr("IFA_ADDRESS"))
            if not addr.is_loopback and not addr.is_link_local:
                addresses.setdefault(msg["index"], []).append(addr)
        for link in ipr.get_links():
            ifname = link.get_attr("IFLA_IFNAME")
            if link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") != "veth":
                continue
            if device and ifname != device:
                continue
            nsid = link.get_attr("IFLA_LINK_NETNSID")
            peer_netns = _peer_netns(ipr, nsid) if nsid is not None else None
            if peer_netns is None:
                raise TargetNotFound(f"{quoted(target)}: the peer of veth {ifname} is in a namespace kfault can't "
                                     f"open (netnsid {nsid}); name it under {NETNS_RUN_DIR}")
            with rtnl(peer_netns) as peer_ipr:
                peer = peer_ipr.get_links(link.get_attr("IFLA_LINK"))[0]
            interfaces.append(TargetInterface(
                inside=Link(netns, link["index"], ifname),
                outside=Link(peer_netns, peer["index"], peer.get_attr("IFLA_IFNAME")),
                addresses=tuple(addresses.get(link["index"], ()))))
    if not interfaces:
        what = f"a veth named {device!r}" if device else "any veth interface"
        raise TargetNotFound(f"{quoted(target)}: no {what} in {netns}")
    return NetTarget(name=target, netns=netns, interfaces=tuple(interfaces))


@dataclass(frozen=True)
class CgroupTarget:
    """A cgroup v2 directory: the processes in it and below it are the target."""
    name: str
    path: str


def cgroup2_mount():
    """Where cgroup v2 is mounted: /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts."""
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if fields[fields.index("-") + 1] == "cgroup2":
                return fields[4]
    raise TargetNotFound("this node has no cgroup v2 mount; kfault scopes file faults by cgroup v2")


def resolve_cgroup_target(target):
    """'cgroup:/abs/dir' or 'pid:PID' -> CgroupTarget. Raises TargetNotFound with the fix."""
    kind, _, value = target.partition(":")
    if kind == "cgroup" and value.startswith("/"):
        path = value
    elif kind == "pid" and value.isdigit():
        try:
            with open(f"/proc/{value}/cgroup", encoding="utf-8") as handle:
                entries = [line.strip().split(":", 2) for line in handle]
        except OSError as err:
            raise TargetNotFound(f"--target {quoted(target)}: no such process ({err.strerror})") from None
        unified = [e[2] for e in entries if e[0] == "0"]
        if not unified:
            raise TargetNotFound(f"--target {quoted(target)}: the process is in no cgroup v2")
        path = os.path.join(cgroup2_mount(), unified[0].lstrip("/"))
    else:
        raise TargetNotFound(f"--target {quoted(target)}: use cgroup:/absolute/cgroup/v2/dir or pid:PID")
    if "\0" in path or not os.path.exists(os.path.join(path, "cgroup.procs")):
        raise TargetNotFound(f"--target {quoted(target)}: {quoted(path)} is not a cgroup v2 directory "
                             "(no cgroup.procs); "
                             f"cgroup v2 is mounted at {cgroup2_mount()}")
    if os.path.realpath(path) == os.path.realpath(cgroup2_mount()):
        raise TargetNotFound(f"--target {quoted(target)} is the root cgroup: that is the whole node; "
                             "name a pod's (or a test's) cgroup")
    return CgroupTarget(name=target, path=path)
