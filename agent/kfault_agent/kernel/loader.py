"""The part of kfault that knows the kernel: compiles and loads BPF with bcc, probes features.

Nothing else imports bcc. Programs are compiled and loaded once per agent; experiments only
write maps.
"""
import contextlib
import ctypes
import logging
import os
import platform
from dataclasses import dataclass

from kfault_agent.errors import KernelUnsupported
from kfault_agent.kernel import tcx, topology
from kfault_api import layout, schema

log = logging.getLogger(__name__)

# The BPF sources: the checkout's bpf/ folder, or where an image put them.
BPF_DIR = os.path.normpath(os.environ.get("KFAULT_BPF_DIR")
                           or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "bpf"))

NET_PROGRAMS = ("egress_to", "ingress_from", "select_delayed", "egress_from")


def write_slot(table, slot, fields):
    """Write one slot of a BPF array map: the given fields, the others zero."""
    leaf = table.Leaf()
    for name, value in fields.items():
        setattr(leaf, name, value)
    table[table.Key(slot)] = leaf


def rule_deadline(deadline_ns):
    """The deadline_ns field of a rule: a real CLOCK_MONOTONIC time, since the kernel reads
    0 as expired (bpf/kfault.h)."""
    if deadline_ns <= 0:
        raise ValueError(f"deadline_ns={deadline_ns}: a rule needs a CLOCK_MONOTONIC deadline above 0 "
                         "(0 means expired in bpf/kfault.h); compute it from the lease")
    return {"deadline_ns": deadline_ns}


def update_slot(table, slot, **fields):
    """Change some fields of one slot of a BPF array map, keeping the others."""
    key = table.Key(slot)
    leaf = table[key]
    for name, value in fields.items():
        setattr(leaf, name, value)
    table[key] = leaf


def kernel_build_dir():
    return f"/lib/modules/{platform.release()}/build"


KHEADERS = "/sys/kernel/kheaders.tar.xz"   # the kernel's own headers (CONFIG_IKHEADERS); bcc unpacks it
# Where an image put Debian's kernel headers (manifests/Dockerfile.agent).
UAPI_HEADERS_ENV = "KFAULT_UAPI_HEADERS"


@dataclass(frozen=True)
class Headers:
    """Kernel headers bcc compiles against: a directory given to bcc (BCC_KERNEL_SOURCE), or
    None for bcc's own search (/lib/modules/RELEASE/build, else the kheaders archive)."""
    path: str | None
    described: str


def running_kernel_headers():
    """The running kernel's headers, or None: the node's (the DaemonSet mounts its /lib/modules
    and /usr/src), else the kernel's own archive."""
    if os.path.exists(os.path.join(kernel_build_dir(), "include")):
        return Headers(None, f"the node's headers at {kernel_build_dir()}")
    if os.path.exists(KHEADERS):
        return Headers(None, f"the kernel's own headers ({KHEADERS})")
    return None


def uapi_headers():
    """Headers for programs that use UAPI types only (the network programs, the syscall
    tracepoints), which hold across kernels: the image's Debian headers, else the node's."""
    image = os.environ.get(UAPI_HEADERS_ENV)
    if image and os.path.isdir(os.path.join(image, "include")):
        try:
            with open(os.path.join(image, "PACKAGE"), encoding="ascii") as handle:
                package = handle.read().strip()
        except OSError:
            package = image
        return Headers(image, f"the image's Debian headers ({package})")
    return running_kernel_headers()


def no_headers_reason(needs_running_kernel=True):
    reason = (f"no headers of the running kernel: nothing at {kernel_build_dir()} and no {KHEADERS}. "
              "Mount the node's /lib/modules and /usr/src (the DaemonSet does; install its linux-headers "
              "package) or load the kheaders module (CONFIG_IKHEADERS)")
    return reason if needs_running_kernel else reason + "; or run the agent image, which carries Debian's"


def require_headers(headers, needs_running_kernel=False):
    """The headers to compile with, or KernelUnsupported saying what is missing."""
    if headers is None:
        raise KernelUnsupported(no_headers_reason(needs_running_kernel))
    return headers


@contextlib.contextmanager
def compiling_against(headers):
    """bcc reads BCC_KERNEL_SOURCE as it compiles: set it to these headers, or clear it for its
    own search, for the time of one compile."""
    saved = os.environ.pop("BCC_KERNEL_SOURCE", None)
    if headers.path:
        os.environ["BCC_KERNEL_SOURCE"] = headers.path
    try:
        yield
    finally:
        os.environ.pop("BCC_KERNEL_SOURCE", None)
        if saved is not None:
            os.environ["BCC_KERNEL_SOURCE"] = saved


def probe_headers():
    """Which headers each kind of program compiles against here, as a capability: the errno
    hooks need the running kernel's; the other programs work with any kernel's UAPI types."""
    running, uapi = running_kernel_headers(), uapi_headers()
    if running:
        return Capability("kernel-headers", True, f"{running.described}; network programs and syscall "
                          f"tracepoints use {uapi.described}")
    if uapi:
        return Capability("kernel-headers", False, f"{no_headers_reason()}. Network faults and the syscall "
                          f"tracepoints use {uapi.described}; file I/O errno hooks need the running kernel's")
    return Capability("kernel-headers", False, no_headers_reason(needs_running_kernel=False))


class TcPrograms:
    """tc programs (BPF_PROG_TYPE_SCHED_CLS), compiled from a C file against UAPI headers and
    loaded: kfault's network datapath, and the lab's emulated CNI (bcc stays in this module)."""

    def __init__(self, src_file, names, cflags=()):
        headers = require_headers(uapi_headers())
        from bcc import BPF
        with compiling_against(headers):
            self.bpf = BPF(src_file=src_file.encode(), cflags=list(cflags))
        self.programs = {name: self.bpf.load_func(name.encode(), BPF.SCHED_CLS) for name in names}

    def fd(self, name):
        return self.programs[name].fd

    def table(self, name):
        return self.bpf[name.encode()]

    def close(self):
        self.bpf.cleanup()


class NetDatapath(TcPrograms):
    """netfault.c, compiled and loaded: its programs' fds and its maps."""

    def __init__(self):
        try:
            super().__init__(os.path.join(BPF_DIR, "netfault.c"), NET_PROGRAMS,
                             cflags=[f"-I{BPF_DIR}", "-Wno-macro-redefined"])
        except KernelUnsupported:
            raise
        except Exception as err:
            raise KernelUnsupported(f"the kernel refused kfault's tc programs (BPF_PROG_TYPE_SCHED_CLS): {err}") from err
        self.peers = self.table("kfault_peers")
        self.rules = self.table("kfault_rules")
        self.counters = self.table("kfault_counters")
        self.rule_state = self.table("kfault_rule_state")
        self.departures = self.table("kfault_departures")


IO_PROGRAMS = ("io_sys_enter", "io_sys_exit", "io_match_path")
# attrOverride and mistake: they call bpf_probe_write_user, which a kernel in lockdown refuses;
# the rest of the I/O engine works without them (capability io-write-user).
IO_WRITE_USER_PROGRAMS = {"io_apply_attr": layout.IO_PROG_APPLY_ATTR, "io_corrupt": layout.IO_PROG_CORRUPT}
# Architectures whose syscall table bpf/syscalls.h has: platform.machine() -> its -D switch.
IO_ARCH_CFLAGS = {"x86_64": "-DKFAULT_ARCH_X86_64"}


def io_arch_cflag():
    """The -D switch of this node's architecture for iofault.c, or KernelUnsupported."""
    machine = platform.machine()
    if machine not in IO_ARCH_CFLAGS:
        raise KernelUnsupported(f"file I/O faults know the syscall numbers of {', '.join(sorted(IO_ARCH_CFLAGS))} "
                                f"only (bpf/syscalls.h); this node is {machine}. Network faults still work")
    return IO_ARCH_CFLAGS[machine]


ERRNO_HOOKS = ("file_open", "file_permission", "path_mknod", "inode_create", "path_mkdir", "path_rmdir",
               "path_unlink", "path_rename", "inode_getattr", "inode_setattr")   # LSM hook names
# How calls are failed, best first: the -D flag that compiles it into iofault.c. All fail what
# the syscall tracepoints decided at these hooks; file-hooks also decides latency and fault on
# read and write itself, at fmod_ret on security_file_permission, by the file's own path.
ERRNO_MECHANISMS = {"file-hooks": "-DKFAULT_IO_FILE_HOOKS", "bpf-lsm": "-DKFAULT_IO_ERRNO_LSM",
                    "fmod_ret": "-DKFAULT_IO_ERRNO_FMOD_RET"}
# What the file hooks decide (decided_at_file_hook in iofault.c); the rest of a rule's calls
# are the syscall tracepoints'.
FILE_HOOK_ACTIONS = {"latency", "fault"}
FILE_HOOK_PROGRAM = "kmod_ret__security_file_permission"
FILE_HOOK_METHODS = {"read", "write"}


def running_release_headers():
    """The running kernel's headers, only if they are its very release (the file hooks read
    struct file as the kernel lays it out), or KernelUnsupported saying whose they are."""
    headers = require_headers(running_kernel_headers(), needs_running_kernel=True)
    if headers.path is None and os.path.exists(os.path.join(kernel_build_dir(), "include")):
        release_file = os.path.join(kernel_build_dir(), "include", "generated", "utsrelease.h")
        try:
            with open(release_file, encoding="ascii") as handle:
                release = handle.read().split('"')[1]
        except (OSError, IndexError):
            release = None
        if release != platform.release():
            raise KernelUnsupported(f"the file hooks read struct file as the running kernel lays it out, and "
                                    f"the headers at {kernel_build_dir()} are {release or 'of an unknown release'}, "
                                    f"not {platform.release()}: install linux-headers-{platform.release()}")
    return headers


class IODatapath:
    """iofault.c, compiled and loaded. Its hooks (BPF LSM or fmod_ret; with file-hooks, also the
    read/write decision) attach at load and return at once while nothing is armed; the syscall
    tracepoints attach only while a rule they decide is armed (attach/detach), since they slow
    every syscall on the node."""

    def __init__(self, errno_mechanism=None):
        # The errno hooks attach to the running kernel's functions and take its types; the
        # syscall tracepoints read UAPI types only.
        if errno_mechanism == "file-hooks":
            headers = running_release_headers()
        else:
            headers = require_headers(running_kernel_headers() if errno_mechanism else uapi_headers(),
                                      needs_running_kernel=bool(errno_mechanism))
        cflags = [f"-I{BPF_DIR}", "-Wno-macro-redefined", io_arch_cflag()]
        from bcc import BPF
        if errno_mechanism:
            cflags.append(ERRNO_MECHANISMS[errno_mechanism])
        self.errno_mechanism = errno_mechanism
        self.file_hooks = errno_mechanism == "file-hooks"
        try:
            with compiling_against(headers):
                self.bpf = BPF(src_file=os.path.join(BPF_DIR, "iofault.c").encode(), cflags=cflags)
            self.programs = {name: self.bpf.load_func(name.encode(), BPF.RAW_TRACEPOINT) for name in IO_PROGRAMS}
            self._hook_fds = self._attach_errno_hooks(BPF) if errno_mechanism else []
        except Exception as err:
            what = f"with {errno_mechanism} hooks" if errno_mechanism else "(syscall raw tracepoints)"
            if errno_mechanism in ("fmod_ret", "file-hooks") and "super-user" in str(err):
                # bcc words the kernel's EPERM as "Need super-user privileges"; we are root.
                raise KernelUnsupported("fmod_ret programs don't load on this kernel: it has no BPF "
                                        "trampolines (fentry/fmod_ret)") from err
            raise KernelUnsupported(f"the kernel refused kfault's file I/O programs {what}: {err}") from err
        programs = self.bpf[b"kfault_io_programs"]
        programs[programs.Key(layout.IO_PROG_MATCH_PATH)] = programs.Leaf(self.programs["io_match_path"].fd)
        self.write_user_refusal = self._load_write_user_programs(BPF, programs)
        self.rules = self.bpf[b"kfault_io_rules"]
        self.cgroups = self.bpf[b"kfault_io_cgroups"]
        self.armed = self.bpf[b"kfault_io_armed"]
        self.method_armed = self.bpf[b"kfault_io_method_armed"]
        self.dfa = self.bpf[b"kfault_io_dfa"]
        self.fds = self.bpf[b"kfault_io_fds"]
        self.traced = self.bpf[b"kfault_io_traced"]
        self.holds = self.bpf[b"kfault_io_holds"]
        self.dirs = self.bpf[b"kfault_io_dirs"]
        self.stopped = self.bpf[b"kfault_io_stopped"]
        self.stop_bell_fd = self.bpf[b"kfault_io_stop_bell"].map_fd
        self.holders = self.bpf[b"kfault_io_holders"]
        self.counters = self.bpf[b"kfault_io_counters"]
        self.generation = self.bpf[b"kfault_io_generation"] if self.file_hooks else None
        self.attached = False

    def needs_syscall_tracepoints(self, action, methods):
        """Whether some call of a rule is decided at the syscall tracepoints, not the file hooks."""
        return not (self.file_hooks and action in FILE_HOOK_ACTIONS and set(methods) <= FILE_HOOK_METHODS)

    def new_generation(self):
        """Have every file's path walked again for the rules (the file hooks cache their match)."""
        if self.file_hooks:
            key = self.generation.Key(0)
            self.generation[key] = self.generation.Leaf((self.generation[key].value + 1) & 0xFFFFFFFF)

    def _load_write_user_programs(self, BPF, programs):
        """Load io_apply_attr and io_corrupt into their program slots; None, or why the kernel
        refused them (the kernel also logs a warning each time they load: expected)."""
        try:
            with _quiet_stderr():      # libbpf prints the refused program whole; the reason is below
                for name, slot in IO_WRITE_USER_PROGRAMS.items():
                    self.programs[name] = self.bpf.load_func(name.encode(), BPF.RAW_TRACEPOINT)
                    programs[programs.Key(slot)] = programs.Leaf(self.programs[name].fd)
        except Exception as err:
            return (f"the kernel refused a program that calls bpf_probe_write_user ({str(err).splitlines()[0][:200]}), "
                    "as a kernel in lockdown does (Secure Boot, lockdown=integrity, CONFIG_LOCK_DOWN_KERNEL_FORCE_*): "
                    "attrOverride and mistake need it; latency and fault still work")
        return None

    def _attach_errno_hooks(self, BPF):
        """bcc attaches lsm__ functions as it loads (we check it did); fmod_ret we attach."""
        if self.errno_mechanism == "bpf-lsm":
            missing = [h for h in ERRNO_HOOKS if f"lsm__{h}".encode() not in self.bpf.lsm_fds]
            if missing:
                raise KernelUnsupported(f"BPF LSM hooks did not attach: {', '.join(missing)}")
            return []
        from bcc import lib
        fds = []
        for hook in ERRNO_HOOKS:
            fn = self.bpf.load_func(f"kmod_ret__security_{hook}".encode(), BPF.TRACING)
            if self.file_hooks and hook == "file_permission":
                self.programs[FILE_HOOK_PROGRAM] = fn
            fd = lib.bpf_attach_kfunc(fn.fd)
            if fd < 0:
                for opened in fds:
                    os.close(opened)
                raise KernelUnsupported(f"fmod_ret on security_{hook} did not attach (no BPF trampolines here)")
            fds.append(fd)
        return fds

    def attach(self):
        if not self.attached:
            self.bpf.attach_raw_tracepoint(tp=b"sys_enter", fn_name=b"io_sys_enter")
            self.bpf.attach_raw_tracepoint(tp=b"sys_exit", fn_name=b"io_sys_exit")
            self.attached = True

    def detach(self):
        if self.attached:
            self.bpf.detach_raw_tracepoint(tp=b"sys_enter")
            self.bpf.detach_raw_tracepoint(tp=b"sys_exit")
            self.attached = False

    def close(self):
        self.detach()
        for fd in self._hook_fds:
            os.close(fd)
        self.bpf.cleanup()


class _ProgInfo(ctypes.Structure):
    """struct bpf_prog_info (linux/bpf.h) up to verified_insns (5.16); older kernels fill less."""
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
                ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
                ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32),
                ("nr_map_ids", ctypes.c_uint32), ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * 16),
                ("ifindex", ctypes.c_uint32), ("gpl_compatible", ctypes.c_uint32),
                ("netns_dev", ctypes.c_uint64), ("netns_ino", ctypes.c_uint64),
                ("nr_jited_ksyms", ctypes.c_uint32), ("nr_jited_func_lens", ctypes.c_uint32),
                ("jited_ksyms", ctypes.c_uint64), ("jited_func_lens", ctypes.c_uint64),
                ("btf_id", ctypes.c_uint32), ("func_info_rec_size", ctypes.c_uint32),
                ("func_info", ctypes.c_uint64), ("nr_func_info", ctypes.c_uint32),
                ("nr_line_info", ctypes.c_uint32), ("line_info", ctypes.c_uint64),
                ("jited_line_info", ctypes.c_uint64), ("nr_jited_line_info", ctypes.c_uint32),
                ("line_info_rec_size", ctypes.c_uint32), ("jited_line_info_rec_size", ctypes.c_uint32),
                ("nr_prog_tags", ctypes.c_uint32), ("prog_tags", ctypes.c_uint64),
                ("run_time_ns", ctypes.c_uint64), ("run_cnt", ctypes.c_uint64),
                ("recursion_misses", ctypes.c_uint64), ("verified_insns", ctypes.c_uint32)]


@dataclass(frozen=True)
class ProgramSize:
    xlated_insns: int            # instructions after the verifier's rewrites
    verified_insns: int | None   # instructions the verifier walked (its complexity); None before 5.16


def program_size(fd):
    """How big a loaded program is, as the kernel reports it (BPF_OBJ_GET_INFO_BY_FD)."""
    from bcc import lib
    info, length = _ProgInfo(), ctypes.c_uint32(ctypes.sizeof(_ProgInfo))
    if lib.bpf_obj_get_info(fd, ctypes.byref(info), ctypes.byref(length)) != 0:
        raise OSError(ctypes.get_errno(), f"BPF_OBJ_GET_INFO_BY_FD on program fd {fd} failed")
    has_verified = length.value >= _ProgInfo.verified_insns.offset + _ProgInfo.verified_insns.size
    return ProgramSize(info.xlated_prog_len // 8, info.verified_insns if has_verified else None)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence fd 2 (libbcc writes there, below Python) while probing what may not load."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


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
    "file-hooks": "latency and fault on read and write decided at fmod_ret on security_file_permission, by "
                  "the file's own path (bpf_d_path), with no syscall tracepoint; the other methods (open "
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
        return None, {c.name: c for c in caps + [_probe_ptrace(), probe_headers()]}
    caps, datapath = [], None
    if _bpf_lsm_active():
        order = ["file-hooks", "bpf-lsm", "fmod_ret"]
    else:
        order = ["file-hooks", "fmod_ret"]
        caps.append(Capability("bpf-lsm", False, "bpf is not an active LSM (/sys/kernel/security/lsm); "
                               "boot with lsm=...,bpf and CONFIG_BPF_LSM=y"))
    for mechanism in order:
        try:
            with _quiet_stderr():      # libbpf prints every refused load: the reason is kept below
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
        caps.append(Capability("io-write-user", not datapath.write_user_refusal, datapath.write_user_refusal or
                               "bpf_probe_write_user loads: stat results and data can be rewritten"))
    else:
        caps.append(Capability("io-write-user", False, "the file I/O programs don't load here"))
    caps.append(_probe_ptrace())
    headers = probe_headers()
    caps.append(headers)
    errno_ways = [c for c in caps if c.name in ERRNO_MECHANISMS and c.available]
    caps.append(Capability("io-errno", bool(errno_ways) and datapath is not None,
                           f"calls fail before they take effect, by {errno_ways[0].name}" if errno_ways else
                           "no way to fail a call before it takes effect: " + (
                               "needs BPF LSM (lsm=...,bpf) or BPF trampolines for fmod_ret on security_* "
                               "functions" if headers.available else
                               "the errno hooks need the running kernel's headers, and this node has none "
                               "(see kernel-headers)")))
    return datapath, {c.name: c for c in caps}


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


# What each file I/O action needs. errno needs a hook that runs before the call takes effect
# (schema.UNFAILABLE_METHODS have none).
IO_NEEDS = {"latency": ("io-tracepoints", "ptrace"), "fault": ("io-tracepoints", "io-errno"),
            "attrOverride": ("io-tracepoints", "io-write-user"), "mistake": ("io-tracepoints", "io-write-user")}


def io_support(capabilities, action, method=None):
    """(supported, reason) for one file I/O action (and method) on this node."""
    reasons = []
    for need in IO_NEEDS[action]:
        if not capabilities.get(need) or not capabilities[need].available:
            reasons.append(capabilities[need].reason if need in capabilities else f"{need} not probed")
    if action == "fault" and method in schema.UNFAILABLE_METHODS:
        reasons.append(f"{method}: {schema.UNFAILABLE_METHODS[method]}")
    return (not reasons), ("; ".join(reasons) or "supported")


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
    return {**caps, **io_caps}


def action_support(capabilities, action):
    """(supported, reason) for one network action on this node."""
    missing = [capabilities.get(need) for need in ACTION_NEEDS[action]]
    missing = [c for c in missing if c is None or not c.available]
    if not missing:
        return True, "supported"
    return False, "; ".join(c.reason if c else "not probed" for c in missing)

