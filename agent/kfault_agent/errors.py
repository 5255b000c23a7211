"""Why an experiment can't be placed here: one hierarchy of refusals.

A Refusal's message is for a person: what was asked, what stands in the way, what to do. The
agent's surfaces turn a Refusal into that target's error (gRPC) or a one-line message (CLI);
anything else that escapes an engine is a bug, logged with its traceback.
The kernel/ modules wrap what the kernel says (netlink errors, failed cgroup writes) into
refusals with their context: which interface, which namespace, what was being done.
"""
import contextlib
import errno
import os

from pyroute2 import NetlinkError


class Refusal(Exception):
    """An experiment can't be placed here; the message says why and what to do."""


class KernelUnsupported(Refusal):
    """This node's kernel lacks a feature the experiment needs; the message names it."""


class NotForAgents(Refusal):
    """The experiment is not an agent's to place (pod-kill: the controller does it)."""


class TargetNotFound(Refusal):
    """No such target on this node (a namespace, a process, a cgroup, a pod)."""


class TargetGone(TargetNotFound):
    """The target was there and went away: nothing of it is left to undo."""


class NetnsGone(TargetGone):
    """The network namespace no longer exists."""


class InterfaceGone(TargetGone):
    """The interface was deleted (its filters and qdiscs with it)."""


class PeerNotResolved(Refusal):
    """A host name in spec.externalTargets has no address this node can find."""


class TargetUnsuitable(Refusal):
    """The target exists but has nothing the experiment can act on (e.g. no IP address)."""


class RuleConflict(Refusal):
    """The experiment can't be placed beside the ones already active."""


class CapacityExhausted(RuleConflict):
    """Every rule slot of this node is in use."""


class InterfaceBusy(Refusal):
    """The interface is set up by someone else in a way kfault won't change (a root qdisc)."""


class KernelRefused(Refusal):
    """The kernel refused a change kfault asked for; the message says which and where."""


@contextlib.contextmanager
def kernel_errors(doing, gone=None):
    """Turn an OSError or a pyroute2 NetlinkError raised while `doing` into a Refusal that says
    what was being done. `gone`: the TargetGone to raise instead when the object is missing
    (ENOENT, ENODEV, ESRCH)."""
    try:
        yield
    except (OSError, NetlinkError) as err:
        code = err.code if isinstance(err, NetlinkError) else err.errno
        if gone is not None and code in (errno.ENOENT, errno.ENODEV, errno.ESRCH):
            raise gone from err
        reason = os.strerror(code) if code else str(err)
        raise KernelRefused(f"{doing}: {reason}" + (f" (errno {code})" if code else "")) from err
