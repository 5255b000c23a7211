"""One HTTP request of a StatusCheck, from the controller's network: bounded by its timeout, and
never to a link-local or cloud metadata address unless the administrator allows it (any
namespace's user may write a check; those addresses answer with the node's cloud credentials).
The addresses are checked as the connection resolves them, so a name that resolves elsewhere
at connect time (DNS rebinding) is checked too."""
import asyncio
import ipaddress
import socket

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver
from yarl import URL

REFUSED_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128"))


class RefusedAddress(Exception):
    pass


def refused(address):
    """Why `address` may not be requested, or None."""
    ip = ipaddress.ip_address(address)
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    for network in REFUSED_NETWORKS:
        if ip.version == network.version and ip in network:
            return (f"{address} is a link-local or cloud metadata address ({network}): the controller's "
                    "--allow-metadata-status-checks allows it")
    return None


class _CheckingResolver(AbstractResolver):
    """aiohttp's resolver, refusing what `refused` names."""

    def __init__(self):
        self.resolver = DefaultResolver()

    async def resolve(self, host, port=0, family=socket.AF_INET):
        found = await self.resolver.resolve(host, port, family)
        for entry in found:
            why = refused(entry["host"])
            if why:
                raise RefusedAddress(why)
        return found

    async def close(self):
        await self.resolver.close()


async def request(http, timeout_s, allow_metadata=False):
    """(healthy, what happened) of one request of spec.HttpCheck `http`."""
    host = URL(http.url).host or ""
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None and not allow_metadata and refused(str(literal)):
        return False, refused(str(literal))
    connector = aiohttp.TCPConnector(resolver=None if allow_metadata else _CheckingResolver(), force_close=True)
    headers = [(name, value) for name, value in http.headers]
    try:
        limit = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=limit) as session:
            async with session.request(http.method, http.url, headers=headers, data=http.body or None,
                                       allow_redirects=False) as response:
                code = response.status
    except RefusedAddress as err:
        return False, str(err)
    except asyncio.TimeoutError:
        return False, f"no answer within {timeout_s} s"
    except aiohttp.ClientConnectorError as err:
        cause = err.os_error
        if isinstance(cause, RefusedAddress):
            return False, str(cause)
        return False, f"cannot connect: {cause}"
    except aiohttp.ClientError as err:
        if isinstance(err.__cause__, RefusedAddress):
            return False, str(err.__cause__)
        return False, f"request failed: {err}"
    return http.healthy(code), f"status code {code}"
