"""Lease renewals, one call per node: every RENEW_S each node's agent gets one Renew naming every
experiment injected there, however many there are (100 experiments on 50 nodes: 10 calls a
second, not the 1,000 a call per experiment and node would be, which held up new placements).

Each experiment says which of its nodes it wants renewed (`want`: when it is placed, and at each
of its keep_alive ticks); taking it back drops it. A want not repeated within `stale_s` lapses:
an experiment the controller stops looking after stops being renewed, and its leases end on
their own (fail-safe)."""
import asyncio
import logging
import time

from kfault_controller import placement, stop

log = logging.getLogger(__name__)


class Renewals:
    """experiment key -> the nodes its leases are renewed on, until it is dropped or goes stale."""

    def __init__(self, stale_s):
        self.stale_s = stale_s
        self._wanted = {}           # key -> (nodes, monotonic time of the last want)

    def want(self, key, nodes, now=None):
        """Renew `key` on `nodes` (none: stop renewing it)."""
        if nodes:
            self._wanted[key] = (frozenset(nodes), time.monotonic() if now is None else now)
        else:
            self.drop(key)

    def __contains__(self, key):
        """Whether `key` is renewed now (wanted, not yet dropped)."""
        return key in self._wanted

    def drop(self, key):
        self._wanted.pop(key, None)

    def clear(self):
        self._wanted.clear()

    def by_node(self, now=None):
        """node -> the sorted keys to renew there, forgetting the wants gone stale."""
        now = time.monotonic() if now is None else now
        for key in [key for key, (_, at) in self._wanted.items() if now - at > self.stale_s]:
            del self._wanted[key]
        nodes = {}
        for key, (wanted_on, _) in self._wanted.items():
            for node in wanted_on:
                nodes.setdefault(node, []).append(key)
        return {node: sorted(keys) for node, keys in sorted(nodes.items())}


async def renew_every(renewals, period_s, agents, agents_now, cluster_stop):
    """Forever: every period_s, one Renew per node for all its experiments, through `agents`
    (agents.AgentDirectory). agents_now() -> node -> host:port of its agent, at this moment. A
    node that fails is logged; its leases lapse on their own if it keeps failing. While the
    cluster-wide stop holds (stop.ClusterStop), every agent is told to stop instead."""
    while True:
        started = time.monotonic()
        if cluster_stop.active:
            failed = await stop.tell_agents(agents, agents_now(), cluster_stop.reason, timeout_s=period_s)
        else:
            failed = await placement.renew_on_nodes(agents, renewals.by_node(started), agents_now(),
                                                    timeout_s=period_s)
        for node, error in failed.items():
            log.warning("renew on %s: %s", node, error)
        await asyncio.sleep(max(0.0, period_s - (time.monotonic() - started)))
