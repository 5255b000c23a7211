"""Host names of spec.externalTargets -> the peer networks a rule matches.

The agent resolves a name when it applies an experiment and again at every renewal, so a peer
whose DNS answer changes is followed within a lease. It uses this node's resolver as the agent
sees it (the agent pod's resolv.conf: cluster DNS, search path of the kfault namespace).
Nothing below the engines resolves: policy and the kernel only see addresses.
"""
import ipaddress
import socket

from kfault_agent.errors import PeerNotResolved


def networks_of(peer):
    """The networks an ExternalTarget stands for: its own, or its host name's addresses (each
    a /32 or /128). Raises PeerNotResolved naming the target and what to do."""
    if peer.network is not None:
        return (peer.network,)
    return resolve(peer)


def resolve(peer):
    try:
        answers = socket.getaddrinfo(peer.host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as err:
        reason = err.strerror if isinstance(err, socket.gaierror) else str(err)
        raise PeerNotResolved(
            f"spec.externalTargets {peer.text!r}: the host name {peer.host!r} does not resolve here ({reason}); "
            "write a name this node's DNS answers (in a cluster, fully qualified, such as "
            "db.shop.svc.cluster.local: the agent does not share the pod's search path), or an IP address or CIDR"
        ) from None
    # getaddrinfo answers IPv6 link-local addresses with their zone ("fe80::1%eth0").
    addresses = dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in answers)
    return tuple(ipaddress.ip_network(address) for address in addresses)
