"""Host names of spec.externalTargets -> the peer networks a rule matches.

The agent resolves a name when it applies an experiment and again at every renewal, so a peer
whose DNS answer changes is followed within a lease. It uses this node's resolver as the agent
sees it (the agent pod's resolv.conf: cluster DNS, search path of the kfault namespace).
Nothing below the engines resolves: policy and the kernel only see addresses.
"""
import concurrent.futures
import ipaddress
import socket

from kfault_agent.errors import PeerNotResolved

# A resolver that does not answer must not hold a Renew past the leases it renews: wait this
# long, then refuse (apply) or keep the last answer (renewal). getaddrinfo can't be cancelled,
# so it finishes in a thread of its own.
ANSWER_WITHIN_S = 2.0
_lookups = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="kfault-resolve")


def networks_of(peer):
    """The networks an ExternalTarget stands for: its own, or its host name's addresses (each
    a /32 or /128). Raises PeerNotResolved naming the target and what to do."""
    if peer.network is not None:
        return (peer.network,)
    return resolve(peer)


def resolve(peer):
    lookup = _lookups.submit(socket.getaddrinfo, peer.host, None, proto=socket.IPPROTO_TCP)
    try:
        answers = lookup.result(timeout=ANSWER_WITHIN_S)
    except (socket.gaierror, UnicodeError, concurrent.futures.TimeoutError) as err:
        reason = (err.strerror if isinstance(err, socket.gaierror) else
                  f"no answer within {ANSWER_WITHIN_S:g} s" if isinstance(err, concurrent.futures.TimeoutError)
                  else str(err))
        raise PeerNotResolved(
            f"spec.externalTargets {peer.text!r}: the host name {peer.host!r} does not resolve here ({reason}); "
            "write a name this node's DNS answers (in a cluster, fully qualified, such as "
            "db.shop.svc.cluster.local: the agent does not share the pod's search path), or an IP address or CIDR"
        ) from None
    # getaddrinfo answers IPv6 link-local addresses with their zone ("fe80::1%eth0").
    addresses = dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in answers)
    return tuple(ipaddress.ip_network(address) for address in addresses)
