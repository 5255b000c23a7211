"""The cluster-wide stop (the big red button): annotating the agents' namespace

    kubectl annotate namespace kfault-system experiment.kfault.dev/stop=all

makes the controller tell every agent at once to take back everything it placed and refuse new
placements (the agents' Stop call), and again at each renewal while the annotation stays (an
agent restarted meanwhile is told too); experiments show why in their status. Removing the
annotation lifts it: experiments are placed again. Agents have no API access: if the controller
itself is down, stopping it is the stop, since every fault lapses within its lease."""
import asyncio

from kfault_api.rpc import agent_pb2 as pb
from kfault_controller import placement

STOP_ANNOTATION = "experiment.kfault.dev/stop"
STOPPED_REASON = "ClusterStopped"      # the Paused condition's reason on an experiment while stopped


class ClusterStop:
    """Whether the stop holds, and why (shared by every handler through kopf's memo)."""

    def __init__(self):
        self.reason = ""

    @property
    def active(self):
        return bool(self.reason)


def reason_of(namespace, annotations):
    """Why the stop holds, from the agents' namespace's annotations ("" if it does not)."""
    value = (annotations or {}).get(STOP_ANNOTATION, "")
    if value in ("", "false", "none"):
        return ""
    return f"namespace {namespace} is annotated {STOP_ANNOTATION}={value}"


async def tell_agents(agents, addresses, reason, timeout_s):
    """One Stop to every agent at once (reason "" lifts it): {node: error} of those that failed."""
    request = pb.StopRequest(stopped=bool(reason), reason=reason)
    results = await asyncio.gather(*(placement.call_on(agents, node, addresses, "Stop", request, timeout_s)
                                     for node in addresses))
    return {node: error for node, error in results if error}
