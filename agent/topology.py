"""Targets: a network namespace (by name, path or PID), its veth interfaces and their peers."""
import ipaddress
import os
from dataclasses import dataclass
from typing import Optional

from pyroute2 import IPRoute

NETNS_RUN_DIR = "/run/netns"
NSID_NOT_ASSIGNED = 0xFFFFFFFF


class TargetNotFound(LookupError):
    pass


@dataclass(frozen=True)
class Netns:
    """A network namespace; path None is the agent's own (the node's)."""
    path: Optional[str]
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
    """A netlink socket in `netns` (never creates a namespace)."""
    return IPRoute(netns=netns.path, flags=0) if netns.path else IPRoute()


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
        raise TargetNotFound(f"--target {target!r}: use netns:NAME, netns:/path/to/netns or pid:PID")
    try:
        inode = os.stat(path).st_ino
    except OSError as err:
        raise TargetNotFound(f"--target {target!r}: {path}: {err.strerror}") from None
    if inode == host_netns().inode:
        raise TargetNotFound(f"--target {target!r} is the node's own network namespace; "
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
                raise TargetNotFound(f"{target}: the peer of veth {ifname} is in a namespace kfault can't "
                                     f"open (netnsid {nsid}); name it under {NETNS_RUN_DIR}")
            with rtnl(peer_netns) as peer_ipr:
                peer = peer_ipr.get_links(link.get_attr("IFLA_LINK"))[0]
            interfaces.append(TargetInterface(
                inside=Link(netns, link["index"], ifname),
                outside=Link(peer_netns, peer["index"], peer.get_attr("IFLA_IFNAME")),
                addresses=tuple(addresses.get(link["index"], ()))))
    if not interfaces:
        what = f"a veth named {device!r}" if device else "any veth interface"
        raise TargetNotFound(f"{target}: no {what} in {netns}")
    return NetTarget(name=target, netns=netns, interfaces=tuple(interfaces))
