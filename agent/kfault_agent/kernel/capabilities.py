"""What this node's kernel can do, each with why (or why not): probed at the agent's start.

Loading the programs is part of the probe (a kernel says what it refuses by refusing it), so
the file I/O probe hands back the datapath it loaded; kernel/loader.py loads.
"""
import contextlib
import os
import platform
from dataclasses import dataclass

from kfault_agent.errors import KernelUnsupported
from kfault_agent.kernel import btf, tcx, topology
from kfault_agent.kernel.loader import (ERRNO_HOOKS, ERRNO_MECHANISMS, FILE_HOOK_LAYOUT, IODatapath, NetDatapath,
                                        SyscallDatapath, file_hook_layout_cflags, io_arch_cflag, no_headers_reason,
                                        uapi_headers)
from kfault_api import schema


def probe_headers():
    """Which headers the programs compile against here, as a capability. Any kernel's will do:
    the programs use UAPI types only, and read the kernel's structs at offsets from its BTF
    (struct-layouts), so the node's own headers are not needed."""
    headers = uapi_headers()
    if headers is None:
        return Capability("kernel-headers", False, no_headers_reason())
    return Capability("kernel-headers", True, f"every program compiles against {headers.described} (UAPI types "
                      "only: the same programs whichever kernel's headers)")


def probe_layouts(btf_path=btf.VMLINUX):
    """Where the file hooks' struct layouts come from: the running kernel's BTF, or why not."""
    try:
        file_hook_layout_cflags(btf_path)
    except KernelUnsupported as err:        # btf.LayoutMissing: no BTF, or a field it lacks
        return Capability("struct-layouts", False, str(err))
    where = ", ".join(f"{name}.{member} at {btf.offset_of(name, member, btf_path)}"
                      for name, member, _size in FILE_HOOK_LAYOUT.values())
    return Capability("struct-layouts", True, f"BTF ({btf_path}): {where}")


def _bpf_lsm_active():
    try:
        with open("/sys/kernel/security/lsm", encoding="ascii") as handle:
            return "bpf" in handle.read().split(",")
    except OSError:
        return False


def _kprobe_override_configured():
    for path in (f"/boot/config-{platform.release()}",):
        try:
            with open(path, encoding="ascii") as handle:
                return "CONFIG_BPF_KPROBE_OVERRIDE=y" in handle.read()
        except OSError:
            continue
    return False


MECHANISM_USES = {
    "file-hooks": "latency and fault on read and write decided at security_file_permission (fentry while "
                  "latency alone needs it, fmod_ret while a fault does), by "
                  "the file's own path (bpf_d_path; struct file read at the offsets of struct-layouts), with "
                  "no syscall tracepoint; the other methods (open "
                  "is decided before an O_CREAT open creates the file), attrOverride and mistake at the "
                  "syscall tracepoints, failed by fmod_ret on their security_* functions",
    "bpf-lsm": "errno by BPF LSM hooks on " + ", ".join(ERRNO_HOOKS) + ", for calls the syscall "
               "tracepoints decide",
    "fmod_ret": "errno by fmod_ret on the security_* functions of those LSM hooks, for calls the syscall "
                "tracepoints decide",
}


def probe_io():
    """(IODatapath or None, capabilities): the best errno mechanism that loads, else none."""
    try:
        io_arch_cflag()
    except KernelUnsupported as err:
        caps = [Capability(name, False, str(err))
                for name in ("bpf-lsm", "fmod_ret", "kprobe-override", "io-tracepoints", "io-errno", "io-write-user")]
        return None, {c.name: c for c in caps + [_probe_ptrace(), probe_headers(), probe_layouts()]}
    caps, datapath = [], None
    if _bpf_lsm_active():
        order = ["file-hooks", "bpf-lsm", "fmod_ret"]
    else:
        order = ["file-hooks", "fmod_ret"]
        caps.append(Capability("bpf-lsm", False, "bpf is not an active LSM (/sys/kernel/security/lsm); "
                               "boot with lsm=...,bpf and CONFIG_BPF_LSM=y"))
    for mechanism in order:
        try:
            datapath = IODatapath(mechanism)
            caps.append(Capability(mechanism, True, MECHANISM_USES[mechanism]))
            break
        except KernelUnsupported as err:
            caps.append(Capability(mechanism, False, str(err).splitlines()[0][:300]))
    others = set(ERRNO_MECHANISMS) - {c.name for c in caps}
    caps += [Capability(name, False, f"not tried: {datapath.errno_mechanism} is used") for name in others]
    caps.append(Capability("kprobe-override", False,
                           "not used: kfault fails calls through BPF LSM or fmod_ret" if _kprobe_override_configured()
                           else "CONFIG_BPF_KPROBE_OVERRIDE is not set in this kernel"))
    if datapath is None:
        try:
            datapath = IODatapath(None)
        except KernelUnsupported as err:
            caps.append(Capability("io-tracepoints", False, str(err).splitlines()[0][:300]))
    if datapath is not None:
        caps.append(Capability("io-tracepoints", True, "raw syscall tracepoints with bpf_send_signal_thread load"))
        caps.append(Capability("io-uring", not datapath.io_uring_refusal, datapath.io_uring_refusal or
                               "io_uring requests are decided as they are submitted (tracepoint "
                               "io_uring_submit_req), by layouts from the kernel's BTF"))
        caps.append(Capability("io-write-user", not datapath.write_user_refusal, datapath.write_user_refusal or
                               "bpf_probe_write_user loads: stat results and data can be rewritten"))
    else:
        caps.append(Capability("io-write-user", False, "the file I/O programs don't load here"))
        caps.append(Capability("io-uring", False, "the file I/O programs don't load here"))
    caps.append(_probe_ptrace())
    caps += [probe_headers(), probe_layouts()]
    errno_ways = [c for c in caps if c.name in ERRNO_MECHANISMS and c.available]
    needs = "needs BPF LSM (lsm=...,bpf) or BPF trampolines for fmod_ret on security_* functions"
    if not os.path.exists(btf.VMLINUX):
        needs += f", which attach by the kernel's BTF, and this kernel has none ({btf.VMLINUX})"
    caps.append(Capability("io-errno", bool(errno_ways) and datapath is not None,
                           f"calls fail before they take effect, by {errno_ways[0].name}" if errno_ways else
                           f"no way to fail a call before it takes effect: {needs}"))
    return datapath, {c.name: c for c in caps}


def probe_syscall():
    """(SyscallDatapath or None, capabilities): SyscallChaos's programs, and what of it this node
    can do: syscall-fault (BPF LSM hooks), syscall-latency (the sys_exit tracepoint and ptrace)."""
    ptrace = _probe_ptrace()
    try:
        io_arch_cflag()
        datapath = SyscallDatapath(_bpf_lsm_active())
    except KernelUnsupported as err:
        why = str(err).splitlines()[0][:400]
        return None, {"syscall-fault": Capability("syscall-fault", False, why),
                      "syscall-latency": Capability("syscall-latency", False, why), "ptrace": ptrace}
    fault = Capability("syscall-fault", not datapath.fault_refusal, datapath.fault_refusal or
                       "calls fail before they take effect, at BPF LSM hooks attached while a rule names their "
                       "syscalls")
    latency_why = datapath.latency_refusal or (None if ptrace.available else ptrace.reason)
    latency = Capability("syscall-latency", not latency_why, latency_why or
                         "threads are held as their calls return (sys_exit tracepoint while a rule is armed, "
                         "and the holder)")
    return datapath, {"syscall-fault": fault, "syscall-latency": latency, "ptrace": ptrace}


SYSCALL_NEEDS = {"fault": "syscall-fault", "latency": "syscall-latency"}


def syscall_support(capabilities, action):
    """(supported, reason) for one SyscallChaos action on this node."""
    cap = capabilities.get(SYSCALL_NEEDS[action])
    if cap is None:
        return False, f"{SYSCALL_NEEDS[action]} not probed"
    return cap.available, cap.reason if not cap.available else "supported"


def _probe_ptrace():
    import signal
    import subprocess

    from kfault_agent.kernel import holder
    child = subprocess.Popen(["sleep", "5"])
    try:
        holder.ptrace(holder.PTRACE_SEIZE, child.pid, 0)
        return Capability("ptrace", True, "PTRACE_SEIZE works: threads can be held for latency")
    except OSError as err:
        return Capability("ptrace", False, f"PTRACE_SEIZE fails ({err}); needs CAP_SYS_PTRACE and "
                          "kernel.yama.ptrace_scope below 3")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


# What each file I/O action needs. errno needs a hook that runs before the call takes effect;
# a fault on the methods that have none (schema.FAILED_AFTER_CALL) is given after the call by
# the holder, as latency is (FAILED_AFTER_CALL_NEEDS).
IO_NEEDS = {"latency": ("io-tracepoints", "ptrace"), "fault": ("io-tracepoints", "io-errno"),
            "attrOverride": ("io-tracepoints", "io-write-user"), "mistake": ("io-tracepoints", "io-write-user")}
FAILED_AFTER_CALL_NEEDS = ("io-tracepoints", "ptrace")


def io_support(capabilities, action, method=None):
    """(supported, reason) for one file I/O action (and method) on this node."""
    reasons = []
    needs = FAILED_AFTER_CALL_NEEDS if action == "fault" and method in schema.FAILED_AFTER_CALL else IO_NEEDS[action]
    for need in needs:
        if not capabilities.get(need) or not capabilities[need].available:
            reasons.append(capabilities[need].reason if need in capabilities else f"{need} not probed")
    if not reasons and action == "fault" and method in schema.FAILED_AFTER_CALL:
        return True, f"after the call, by the holder: {schema.FAILED_AFTER_CALL[method]}"
    return (not reasons), ("; ".join(reasons) or "supported")


# The ways a process does file I/O, as `kfault capabilities` and the docs list them.
IO_PATHS = ("syscalls", "libaio", "io_uring", "io_uring io-wq", "io_uring SQPOLL")


def io_reach(capabilities, action):
    """[(path, reached, why)] for a file I/O action on each of IO_PATHS, on this node
    (docs/design/file-io.md#asynchronous-io). A call chosen where it can't be reached is
    counted by why (engines/counts.py's UNREACHED), never passed silently."""
    supported, reason = io_support(capabilities, action)
    if not supported:
        return [(path, False, reason) for path in IO_PATHS]
    hooks = bool(capabilities.get("file-hooks") and capabilities["file-hooks"].available)
    uring = capabilities.get("io-uring")
    no_uring = None if uring and uring.available else (uring.reason if uring else "io-uring not probed")
    rows = [("syscalls", True, "at the syscall" + (" and, for read and write, the file hook" if hooks else ""))]
    if action == "latency":
        rows.append(("libaio", True, "the caller of io_submit is held at its return, once however many iocbs "
                     "are chosen"))
        rows.append(("io_uring", no_uring is None, no_uring or "the submitter is held at io_uring_enter's "
                     "return, once per request"))
        rows.append(("io_uring io-wq", no_uring is None, no_uring or (
            "decided as it is submitted, in the submitter, which is held" + (
                ", by its file (from the submitter's fd table; a registered file, or one whose path "
                "was not matched yet, at its first attempt: in a worker, unreached-io-thread)" if hooks else ""))))
        rows.append(("io_uring SQPOLL", False, no_uring or "no user thread submits its requests: counted as "
                     "unreached-io-thread" + ("" if hooks else " (unreached-fixed-file on registered files)")))
    elif action == "fault":
        why = None if hooks else "errno needs the file hooks (rw_verify_area's security check, in every thread)"
        rows.append(("libaio", hooks, why or "io_submit fails with the errno for the chosen iocb (the iocbs "
                     "before it are submitted), as the kernel returns a refusal"))
        for path in IO_PATHS[2:]:
            rows.append((path, hooks and no_uring is None, why or no_uring or "the request completes with "
                         "-errno in its CQE, at its first attempt"))
    else:
        why = ("stat calls have no libaio or io_uring request kfault decides (io_uring's statx names a path)"
               if action == "attrOverride" else
               "the wrong bytes are written at a syscall's return, which an asynchronous request has not")
        rows += [(path, False, why + ": counted as unreached-async") for path in IO_PATHS[1:]]
    return rows


@dataclass(frozen=True)
class Capability:
    name: str
    available: bool
    reason: str


# What each network action needs from the kernel ("tc-attach": tcx or clsact). A delay or
# rate on what the target receives needs an ifb too (RECEIVED_EDT_NEEDS).
ACTION_NEEDS = {
    "partition": ("tc-bpf", "tc-attach"),
    "loss": ("tc-bpf", "tc-attach"),
    "duplicate": ("tc-bpf", "tc-attach"),
    "corrupt": ("tc-bpf", "tc-attach"),
    "delay": ("tc-bpf", "tc-attach", "sch_fq"),
    "bandwidth": ("tc-bpf", "tc-attach", "sch_fq"),
}
RECEIVED_EDT_NEEDS = ("ifb",)


@contextlib.contextmanager
def scratch_veth():
    """A veth pair in a throwaway namespace, to try qdiscs on without touching the node."""
    with topology.scratch_rtnl() as ipr:
        ipr.link("add", ifname="probe0", kind="veth", peer="probe1")
        yield ipr, ipr.link_lookup(ifname="probe0")[0]


def _try_qdisc(ipr, ifindex, kind, **kwargs):
    try:
        ipr.tc("add", kind, ifindex, "1:", **kwargs)
        ipr.tc("del", kind, ifindex, "1:")
        return True, f"tc qdisc {kind} works"
    except Exception as err:
        return False, (f"the kernel has no sch_{kind} (tc qdisc add {kind}: {err}); "
                       f"build with CONFIG_NET_SCH_{kind.upper()}")


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
            caps.append(Capability("ifb", *_try_ifb(ipr)))
    except Exception as err:
        caps.append(Capability("netns", False, f"can't make a scratch network namespace to probe in: {err}"))
    has_tcx = Capability("tcx", *tcx.kernel_has_tcx())
    caps += [has_tcx, _attachment(has_tcx, next((c for c in caps if c.name == "clsact"), None))]
    return {c.name: c for c in caps}


def _try_ifb(ipr):
    try:
        ipr.link("add", ifname="probeifb", kind="ifb")
        return True, "ifb devices work: delays and rates on received packets are held at an ifb's egress"
    except Exception as err:
        return False, (f"the kernel has no ifb ({err}): delays and rates on received packets (direction from) "
                       "need one; build with CONFIG_IFB")


def _attachment(has_tcx, clsact):
    """tc-attach: how kfault attaches its programs on this kernel (tcx, else clsact), and why."""
    where = "on the target's own interfaces, inside its namespace, where no CNI in veth mode attaches"
    if has_tcx.available:
        return Capability("tc-attach", True, f"tcx links ({has_tcx.reason}), ahead of any other program "
                          f"(BPF_F_BEFORE), {where}; they go with the agent if it dies")
    if clsact is None or not clsact.available:
        return Capability("tc-attach", False, f"neither tcx ({has_tcx.reason}) nor clsact "
                          f"({clsact.reason if clsact else 'not probed'})")
    return Capability("tc-attach", True, f"classic tc filters on clsact ({has_tcx.reason}), at a priority ahead "
                      f"of every other filter, {where}")


def node_capabilities():
    """Probe this node whole: network programs and the qdiscs they need, file I/O programs,
    their errno hooks and the holder."""
    try:
        NetDatapath().close()
        error = None
    except KernelUnsupported as err:
        error = err
    caps = probe_capabilities(error)
    io_datapath, io_caps = probe_io()
    if io_datapath:
        io_datapath.close()
    syscall_datapath, syscall_caps = probe_syscall()
    if syscall_datapath:
        syscall_datapath.close()
    return {**caps, **io_caps, **syscall_caps}


def action_support(capabilities, action):
    """(supported, reason) for one network action on this node."""
    missing = [capabilities.get(need) for need in ACTION_NEEDS[action]]
    missing = [c for c in missing if c is None or not c.available]
    if not missing:
        return True, "supported"
    return False, "; ".join(c.reason if c else "not probed" for c in missing)
