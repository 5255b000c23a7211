"""The part of kfault that knows the kernel: compiles and loads BPF with bcc, probes features.

Nothing else imports bcc. Programs are compiled and loaded once per agent; experiments only
write maps.
"""
import contextlib
import logging
import os
import platform
import uuid
from dataclasses import dataclass

from pyroute2 import IPRoute, netns as pyroute2_netns

from . import layout

log = logging.getLogger(__name__)

NET_PROGRAMS = ("ingress_to", "ingress_from", "egress_to", "egress_from")


class KernelUnsupported(RuntimeError):
    """The node's kernel lacks what is needed; the message names the missing feature."""


def kernel_build_dir():
    return f"/lib/modules/{platform.release()}/build"


def check_headers():
    if not os.path.exists(os.path.join(kernel_build_dir(), "include")):
        raise KernelUnsupported(
            f"no kernel headers at {kernel_build_dir()}: bcc compiles kfault's programs against them. "
            "Run scripts/setup-host (it links Debian's linux-headers-amd64; kfault uses UAPI types only).")


class NetDatapath:
    """netfault.c, compiled and loaded: its programs' fds and its maps."""

    def __init__(self):
        check_headers()
        from bcc import BPF  # the one import of bcc in kfault
        try:
            self.bpf = BPF(src_file=os.path.join(layout.BPF_DIR, "netfault.c").encode(),
                           cflags=[f"-I{layout.BPF_DIR}", "-Wno-macro-redefined"])
            self.programs = {name: self.bpf.load_func(name.encode(), BPF.SCHED_CLS) for name in NET_PROGRAMS}
        except Exception as err:
            raise KernelUnsupported(f"the kernel refused kfault's tc programs (BPF_PROG_TYPE_SCHED_CLS): {err}") from err
        self.peers = self.bpf[b"kfault_peers"]
        self.rules = self.bpf[b"kfault_rules"]
        self.counters = self.bpf[b"kfault_counters"]
        self.rule_state = self.bpf[b"kfault_rule_state"]
        self.departures = self.bpf[b"kfault_departures"]

    def fd(self, name):
        return self.programs[name].fd

    def close(self):
        self.bpf.cleanup()


@dataclass(frozen=True)
class Capability:
    name: str
    available: bool
    reason: str


# What each network action needs from the kernel.
ACTION_NEEDS = {
    "partition": ("tc-bpf", "clsact"),
    "loss": ("tc-bpf", "clsact"),
    "duplicate": ("tc-bpf", "clsact"),
    "corrupt": ("tc-bpf", "clsact"),
    "delay": ("tc-bpf", "clsact", "sch_fq"),
    "bandwidth": ("tc-bpf", "clsact", "sch_fq"),
}


@contextlib.contextmanager
def scratch_veth():
    """A veth pair in a throwaway namespace, to try qdiscs on without touching the node."""
    name = f"kfault-probe-{uuid.uuid4().hex[:8]}"
    pyroute2_netns.create(name)
    try:
        with IPRoute(netns=name, flags=0) as ipr:
            ipr.link("add", ifname="probe0", kind="veth", peer="probe1")
            yield ipr, ipr.link_lookup(ifname="probe0")[0]
    finally:
        pyroute2_netns.remove(name)


def _try_qdisc(ipr, ifindex, kind, **kwargs):
    try:
        ipr.tc("add", kind, ifindex, "1:", **kwargs)
        ipr.tc("del", kind, ifindex, "1:")
        return True, f"tc qdisc {kind} works"
    except Exception as err:
        return False, f"the kernel has no sch_{kind} (tc qdisc add {kind}: {err}); build with CONFIG_NET_SCH_{kind.upper()}"


def probe_capabilities(datapath_error=None):
    """What this node can do, each with why (or why not)."""
    caps = []
    if datapath_error:
        caps.append(Capability("tc-bpf", False, str(datapath_error)))
    else:
        caps.append(Capability("tc-bpf", True, "tc BPF programs load"))
    try:
        with scratch_veth() as (ipr, ifindex):
            try:
                ipr.tc("add", "clsact", ifindex)
                caps.append(Capability("clsact", True, "tc clsact qdisc works"))
            except Exception as err:
                caps.append(Capability("clsact", False, f"the kernel has no clsact qdisc ({err}); "
                                       "build with CONFIG_NET_SCH_INGRESS"))
            caps.append(Capability("sch_fq", *_try_qdisc(ipr, ifindex, "fq")))
            caps.append(Capability("sch_netem", *_try_qdisc(ipr, ifindex, "netem")))
    except Exception as err:
        caps.append(Capability("netns", False, f"can't make a scratch network namespace to probe in: {err}"))
    return {c.name: c for c in caps}


def node_capabilities():
    """Probe this node whole: whether our programs load, then the qdiscs they need."""
    try:
        NetDatapath().close()
        error = None
    except KernelUnsupported as err:
        error = err
    return probe_capabilities(error)


def action_support(capabilities, action):
    """(supported, reason) for one network action on this node."""
    missing = [capabilities.get(need) for need in ACTION_NEEDS[action]]
    missing = [c for c in missing if c is None or not c.available]
    if not missing:
        return True, "supported"
    return False, "; ".join(c.reason if c else "not probed" for c in missing)

