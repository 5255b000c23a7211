"""The part of kfault that loads its BPF programs: from the compile cache, with plain bpf() calls.

kernel/compile.py compiles each source once (bcc, in a short-lived process) and caches what
clang made; here every process creates its own maps and loads its own programs from that, and
attaches them with fds it owns, so a dead agent's hooks go with it, as before. No libbcc (LLVM)
in this process. Programs are loaded once per agent; experiments only write maps
(kernel/maps.py). What the kernel can do is probed in kernel/capabilities.py.
"""
import base64
import concurrent.futures
import contextlib
import ctypes
import errno
import os
import platform
import resource
import struct
from dataclasses import dataclass

from kfault_agent.errors import KernelUnsupported
from kfault_agent.kernel import bpfcall, btf, children, compile, maps
from kfault_api import layout, syscalls

# The BPF sources: the checkout's bpf/ folder, or where an image put them.
BPF_DIR = os.path.normpath(os.environ.get("KFAULT_BPF_DIR")
                           or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "bpf"))

NET_PROGRAMS = ("egress_to", "ingress_from", "select_delayed", "egress_from")
DNS_PROGRAMS = ("dns_query_out", "dns_answer_in")
HTTP_PROGRAMS = ("http_request_in", "http_response_out")
# bcc's name prefixes that say where a program attaches; the kernel's name of it drops them.
NAME_PREFIXES = ("kmod_ret__", "kfunc__", "kretfunc__", "lsm__")
# The attach type of a TRACING program, by its bcc prefix: fentry (kfunc__), fexit (kretfunc__) or fmod_ret.
TRACING_ATTACH_TYPES = {"kfunc__": bpfcall.ATTACH_TRACE_FENTRY, "kretfunc__": bpfcall.ATTACH_TRACE_FEXIT,
                        "kmod_ret__": bpfcall.ATTACH_MODIFY_RETURN}


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
    """Headers to compile every program with: the image's Debian headers, else the node's. The
    programs use UAPI types only, which hold across kernels, and read the kernel's own structs
    at offsets taken from its BTF (FILE_HOOK_LAYOUT), so any kernel's headers make the same
    program."""
    image = os.environ.get(UAPI_HEADERS_ENV)
    if image and os.path.isdir(os.path.join(image, "include")):
        try:
            with open(os.path.join(image, "PACKAGE"), encoding="ascii") as handle:
                package = handle.read().strip()
        except OSError:
            package = image
        return Headers(image, f"the image's Debian headers ({package})")
    return running_kernel_headers()


def no_headers_reason():
    return (f"no kernel headers to compile with: no {UAPI_HEADERS_ENV}, nothing at {kernel_build_dir()} and "
            f"no {KHEADERS}. Run the agent image, which carries Debian's; or mount the node's /lib/modules "
            "and /usr/src (install any linux-headers package) or load the kheaders module (CONFIG_IKHEADERS)")


def require_headers(headers):
    """The headers to compile with, or KernelUnsupported saying what is missing."""
    if headers is None:
        raise KernelUnsupported(no_headers_reason())
    return headers


def headers_identity(headers):
    """What names these headers in the compile cache's key."""
    return compile.headers_identity(headers.path, kernel_build_dir(), KHEADERS)


@dataclass(frozen=True)
class Program:
    name: str
    fd: int


def _unlimited_memlock():
    """Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK (bcc lifts it too)."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


class Programs:
    """One source's maps and programs, this process's own: the source compiled (or found in the
    compile cache), its maps created; programs are loaded by name."""

    def __init__(self, src_file, cflags, headers):
        try:
            self.entry = compile.compiled(src_file, list(cflags), headers.path, headers_identity(headers), BPF_DIR)
        except compile.CompileError as err:
            raise KernelUnsupported(str(err)) from err
        _unlimited_memlock()
        self.maps, self.programs, self.links = {}, {}, []
        try:
            for name, spec in self.entry["maps"].items():
                self.maps[name] = maps.create(name, spec)
        except Exception as err:      # the kernel's refusal, or a map kfault can't type
            self.close()
            raise KernelUnsupported(f"map {name} of {os.path.basename(src_file)} was not created: {err}") from err

    def load(self, name, prog_type):
        """Load a function of the source as a program of this type (bpfcall.PROG_*): its
        Program, or bpfcall.LoadError saying what the kernel refused."""
        if name in self.programs:
            return self.programs[name]
        function = self.entry["functions"].get(name)
        if function is None:
            raise KernelUnsupported(f"no function {name} in {os.path.basename(self.entry['source'])} "
                                    f"compiled with {' '.join(self.entry['cflags'])}")
        insns = bytearray(base64.b64decode(function["insns"]))
        for index, map_name in function["maps"]:
            struct.pack_into("<i", insns, index * 8 + 4, self.maps[map_name].map_fd)   # ld_imm64's imm
        expected, btf_id = 0, 0
        if prog_type in (bpfcall.PROG_TRACING, bpfcall.PROG_LSM):
            btf_id = function.get("attach_btf_id")
            if not btf_id:
                raise bpfcall.LoadError(errno.ENOENT, name, prog_type,
                                        f"{function.get('attach_to')} is not in this kernel's BTF "
                                        f"({btf.VMLINUX})")
            expected = bpfcall.ATTACH_LSM_MAC if prog_type == bpfcall.PROG_LSM else next(
                attach for prefix, attach in TRACING_ATTACH_TYPES.items() if name.startswith(prefix))
        kernel_name = next((name[len(p):] for p in NAME_PREFIXES if name.startswith(p)), name)
        fd = bpfcall.prog_load(prog_type, bytes(insns), self.entry["license"], kernel_name,
                               kern_version=0 if prog_type == bpfcall.PROG_TRACING else self.entry["kern_version"],
                               expected_attach_type=expected, attach_btf_id=btf_id)
        self.programs[name] = Program(name, fd)
        return self.programs[name]

    def load_many(self, names, prog_type):
        """Load several functions at once: {name: Program}. The verifier runs in each caller's
        thread and bpf() lets go of the GIL, so programs verify side by side on the node's CPUs
        (most of an agent's start is the verifier's)."""
        names = list(names)
        if len(names) < 2:
            return {name: self.load(name, prog_type) for name in names}
        with concurrent.futures.ThreadPoolExecutor(min(len(names), os.cpu_count() or 1)) as pool:
            loaded = list(pool.map(lambda name: self.load(name, prog_type), names))
        return dict(zip(names, loaded))

    def attach(self, name, tracepoint=None):
        """Attach a loaded program: at a raw tracepoint, or (none) a TRACING or LSM program at its
        function. The attachment's fd: closing it detaches (no helper process keeps a copy:
        children.hold_back)."""
        fd = children.hold_back(lambda: bpfcall.raw_tracepoint_open(self.programs[name].fd, tracepoint))
        self.links.append(fd)
        return fd

    def detach(self, fd):
        self.links.remove(fd)
        children.close_held_back(fd)

    def table(self, name):
        return self.maps[name]

    def close(self):
        for fd in self.links:
            children.close_held_back(fd)
        for program in self.programs.values():
            os.close(program.fd)
        for table in self.maps.values():
            table.close()
        self.links, self.programs, self.maps = [], {}, {}


class TcPrograms:
    """tc programs (BPF_PROG_TYPE_SCHED_CLS), compiled from a C file against UAPI headers and
    loaded: kfault's network datapath, and the lab's emulated CNI."""

    def __init__(self, src_file, names, cflags=()):
        headers = require_headers(uapi_headers())
        self.bpf = Programs(src_file, list(cflags), headers)
        try:
            self.programs = self.bpf.load_many(names, bpfcall.PROG_SCHED_CLS)
        except BaseException:
            self.bpf.close()
            raise

    def fd(self, name):
        return self.programs[name].fd

    def table(self, name):
        return self.bpf.table(name)

    def close(self):
        self.bpf.close()


class NetDatapath(TcPrograms):
    """netfault.c, compiled and loaded: its programs' fds and its maps."""

    def __init__(self):
        try:
            super().__init__(os.path.join(BPF_DIR, "netfault.c"), NET_PROGRAMS,
                             cflags=[f"-I{BPF_DIR}", "-Wno-macro-redefined"])
        except KernelUnsupported:
            raise
        except Exception as err:
            raise KernelUnsupported(
                f"the kernel refused kfault's tc programs (BPF_PROG_TYPE_SCHED_CLS): {err}") from err
        self.peers = self.table("kfault_peers")
        self.rules = self.table("kfault_rules")
        self.counters = self.table("kfault_counters")
        self.rule_state = self.table("kfault_rule_state")
        self.departures = self.table("kfault_departures")


class DnsDatapath(TcPrograms):
    """dnsfault.c, compiled and loaded: its programs' fds and its maps."""

    def __init__(self):
        try:
            super().__init__(os.path.join(BPF_DIR, "dnsfault.c"), DNS_PROGRAMS,
                             cflags=[f"-I{BPF_DIR}", "-Wno-macro-redefined"])
        except KernelUnsupported:
            raise
        except Exception as err:
            raise KernelUnsupported(
                f"the kernel refused kfault's DNS tc programs (BPF_PROG_TYPE_SCHED_CLS): {err}") from err
        self.targets = self.table("kfault_dns_targets")
        self.rules = self.table("kfault_dns_rules")
        self.dfa = self.table("kfault_dns_dfa")
        self.counters = self.table("kfault_dns_counters")


class HttpDatapath(TcPrograms):
    """httpfault.c, compiled and loaded: its programs' fds and its maps."""

    def __init__(self):
        try:
            super().__init__(os.path.join(BPF_DIR, "httpfault.c"), HTTP_PROGRAMS,
                             cflags=[f"-I{BPF_DIR}", "-Wno-macro-redefined"])
        except KernelUnsupported:
            raise
        except Exception as err:
            raise KernelUnsupported(
                f"the kernel refused kfault's HTTP tc programs (BPF_PROG_TYPE_SCHED_CLS): {err}") from err
        self.ports = self.table("kfault_http_ports")
        self.targets = self.table("kfault_http_targets")
        self.rules = self.table("kfault_http_rules")
        self.dfa = self.table("kfault_http_dfa")
        self.flows = self.table("kfault_http_flows")
        self.counters = self.table("kfault_http_counters")


IO_PROGRAMS = ("io_sys_enter", "io_sys_exit", "io_match_path", "io_aio_submit")
# io_uring's requests, decided as they are submitted (bpf/lib/async_io.h): the kernel's structs
# it reads, laid out as the running kernel's BTF says; without them io_uring is out of reach.
IO_URING_PROGRAM = "io_uring_submit"
IO_URING_LAYOUT = {
    "KFAULT_OFF_IO_KIOCB_OPCODE": ("io_kiocb", "opcode", 1),
    "KFAULT_OFF_IO_KIOCB_FLAGS": ("io_kiocb", "flags"),       # 4 bytes in 6.1, 8 later: its low byte is read
    "KFAULT_OFF_IO_KIOCB_CQE_FD": ("io_kiocb", "cqe.fd", 4),
    "KFAULT_OFF_IO_KIOCB_WORK": ("io_kiocb", "work"),
    "KFAULT_OFF_TASK_FLAGS": ("task_struct", "flags", 4),
    "KFAULT_OFF_TASK_WORKER_PRIVATE": ("task_struct", "worker_private", 8),
    "KFAULT_OFF_IO_WORKER_CUR_WORK": ("io_worker", "cur_work", 8),
    # the submitter's fd table (task->files->fdt->fd[fd]), where the file hooks' decision at
    # submission finds a request's struct file
    "KFAULT_OFF_TASK_FILES": ("task_struct", "files", 8),
    "KFAULT_OFF_FILES_STRUCT_FDT": ("files_struct", "fdt", 8),
    "KFAULT_OFF_FDTABLE_MAX_FDS": ("fdtable", "max_fds", 4),
    "KFAULT_OFF_FDTABLE_FD": ("fdtable", "fd", 8),
}
# With the file hooks (no sys_exit tracepoint attached for their rules), fexit on io_uring_enter
# gives the hold a request's decision at submission owes its submitter (iofault.c's
# give_owed_hold); at the syscall tracepoints, io_sys_exit does.
IO_URING_RETURN_PROGRAM = "kretfunc____x64_sys_io_uring_enter"
# Where io_submit_sqe traces each request: renamed in 6.5 (it was io_uring_submit_sqe).
IO_URING_TRACEPOINTS = ("io_uring_submit_req", "io_uring_submit_sqe")


def io_uring_cflags():
    """(the -D flags that compile io_uring's program in, None) or ([], why it can't be)."""
    try:
        return btf.layout_cflags(IO_URING_LAYOUT) + ["-DKFAULT_IO_URING"], None
    except btf.LayoutMissing as err:
        return [], f"io_uring requests are out of reach: {err}"


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
# read and write itself, at security_file_permission, by the file's own path (fmod_ret, or
# fentry while only latency needs it: LATENCY_FILE_HOOK).
ERRNO_MECHANISMS = {"file-hooks": "-DKFAULT_IO_FILE_HOOKS", "bpf-lsm": "-DKFAULT_IO_ERRNO_LSM",
                    "fmod_ret": "-DKFAULT_IO_ERRNO_FMOD_RET"}
# What the file hooks decide (decided_at_file_hook in iofault.c); the rest of a rule's calls
# are the syscall tracepoints'.
FILE_HOOK_ACTIONS = {"latency", "fault"}
FILE_HOOK_PROGRAM = "kmod_ret__security_file_permission"
# With file-hooks, latency on read and write alone is decided by an fentry program on the same
# function, a cheaper trampoline (it neither calls the function nor can fail it): attached as
# this pseudo-hook while no fault rule needs file_permission's fmod_ret (use_hooks).
LATENCY_FILE_HOOK = "file_permission (fentry)"
LATENCY_FILE_HOOK_PROGRAM = "kfunc__security_file_permission"
FILE_HOOK_METHODS = {"read", "write"}
# The kernel's struct fields the file hooks read, as iofault.c's -D flag -> (struct, member,
# bytes the program reads): iofault.c reads no member of struct file or struct inode by name,
# only at these offsets, taken from the running kernel's BTF (kernel/btf.py) at each start. A
# kernel whose field has another size is refused rather than misread.
FILE_HOOK_LAYOUT = {
    "KFAULT_OFF_FILE_F_PATH": ("file", "f_path", 16),                # bpf_d_path's argument
    "KFAULT_OFF_FILE_F_PATH_MNT": ("file", "f_path.mnt", 8),          # these two tell a reused
    "KFAULT_OFF_FILE_F_PATH_DENTRY": ("file", "f_path.dentry", 8),    # struct file apart
    "KFAULT_OFF_FILE_F_MODE": ("file", "f_mode", 4),                  # FMODE_NOACCOUNT
    "KFAULT_OFF_FILE_F_INODE": ("file", "f_inode", 8),
    "KFAULT_OFF_INODE_I_MODE": ("inode", "i_mode", 2),                # regular file or directory
}


def file_hook_layout_cflags(btf_path=btf.VMLINUX):
    """FILE_HOOK_LAYOUT's -D flags for the running kernel, or btf.LayoutMissing naming the field."""
    return btf.layout_cflags(FILE_HOOK_LAYOUT, btf_path)


def io_cflags(errno_mechanism):
    """The flags iofault.c compiles with for this errno mechanism (None: syscall tracepoints
    only) on this kernel; KernelUnsupported (btf.LayoutMissing) where its BTF can't serve it."""
    cflags = [f"-I{BPF_DIR}", "-Wno-macro-redefined", io_arch_cflag()]
    if errno_mechanism:
        btf.load()      # the errno hooks attach by the BTF id of their function: LayoutMissing without BTF
        cflags.append(ERRNO_MECHANISMS[errno_mechanism])
    if errno_mechanism == "file-hooks":
        cflags += file_hook_layout_cflags()     # part of the compile cache's key, with the other flags
    return cflags + io_uring_cflags()[0]       # none where BTF lacks its layouts: IODatapath says why



# errnos with which a kernel without BPF trampolines refuses fmod_ret programs (ENOTSUPP: 524)
NO_TRAMPOLINE_ERRNOS = {errno.EPERM, errno.EOPNOTSUPP, 524}


class IODatapath:
    """iofault.c, compiled and loaded. Nothing of it is attached while no rule needs it: a node
    where kfault is installed and idle runs none of its programs. The syscall tracepoints attach
    while a rule they decide is armed (attach/detach: they slow every syscall on the node); the
    hooks (BPF LSM or fmod_ret on security_*: the errno hooks, and with file-hooks the
    read/write decision) while a rule that needs them is armed (use_hooks: a
    trampoline taxes every call of its function, every read and write on the node for
    security_file_permission). Loading attaches them once and lets go, to learn that they
    attach here."""

    def __init__(self, errno_mechanism=None):
        headers = require_headers(uapi_headers())
        cflags = io_cflags(errno_mechanism)
        self.io_uring_refusal = io_uring_cflags()[1]
        self.errno_mechanism = errno_mechanism
        self.file_hooks = errno_mechanism == "file-hooks"
        self.bpf = Programs(os.path.join(BPF_DIR, "iofault.c"), cflags, headers)
        try:
            self.programs, self._hook_links, self._tracepoint_links, self._io_uring_links = {}, {}, [], []
            if errno_mechanism:     # first: they are small, and a kernel without them refuses them at once
                self._load_errno_hooks()
                self.attach_hooks(self._hook_names())   # what the probe learns: the kernel lets them attach
                self.detach_hooks()
            self.programs.update(self.bpf.load_many(IO_PROGRAMS, bpfcall.PROG_RAW_TRACEPOINT))
            self._load_io_uring_program()
        except Exception as err:
            self.bpf.close()
            what = f"with {errno_mechanism} hooks" if errno_mechanism else "(syscall raw tracepoints)"
            if errno_mechanism in ("fmod_ret", "file-hooks") and getattr(err, "errno", None) in NO_TRAMPOLINE_ERRNOS:
                raise KernelUnsupported(f"fmod_ret programs don't load on this kernel: it has no BPF "
                                        f"trampolines (fentry/fmod_ret) ({err})") from err
            raise KernelUnsupported(f"the kernel refused kfault's file I/O programs {what}: {err}") from err
        try:
            self._take_tables()
        except BaseException:
            self.bpf.close()
            raise

    def _load_io_uring_program(self):
        """io_uring_submit, if its layouts were found; a kernel that refuses it leaves io_uring
        out of reach (io_uring_refusal, capability io-uring), not the rest."""
        if self.io_uring_refusal:
            return
        try:
            self.programs[IO_URING_PROGRAM] = self.bpf.load(IO_URING_PROGRAM, bpfcall.PROG_RAW_TRACEPOINT)
            if self.file_hooks:
                self.programs[IO_URING_RETURN_PROGRAM] = self.bpf.load(IO_URING_RETURN_PROGRAM,
                                                                       bpfcall.PROG_TRACING)
        except OSError as err:
            self.io_uring_refusal = (f"io_uring requests are out of reach: the kernel refused {IO_URING_PROGRAM} "
                                     f"({str(err).splitlines()[0][:300]})")

    def _take_tables(self):
        programs = self.bpf.table("kfault_io_programs")
        programs[layout.IO_PROG_MATCH_PATH] = self.programs["io_match_path"].fd
        programs[layout.IO_PROG_AIO_SUBMIT] = self.programs["io_aio_submit"].fd
        self.write_user_refusal = self._load_write_user_programs(programs)
        self.rules = self.bpf.table("kfault_io_rules")
        self.cgroups = self.bpf.table("kfault_io_cgroups")
        self.armed = self.bpf.table("kfault_io_armed")
        self.method_armed = self.bpf.table("kfault_io_method_armed")
        self.dfa = self.bpf.table("kfault_io_dfa")
        self.fds = self.bpf.table("kfault_io_fds")
        self.traced = self.bpf.table("kfault_io_traced")
        self.holds = self.bpf.table("kfault_io_holds")
        self.fails = self.bpf.table("kfault_io_fails")
        self.missed = self.bpf.table("kfault_io_missed")
        self.dirs = self.bpf.table("kfault_io_dirs")
        self.lost = self.bpf.table("kfault_io_lost")
        self.lost_bell_fd = self.bpf.table("kfault_io_lost_bell").map_fd
        self.stopped = self.bpf.table("kfault_io_stopped")
        self.stop_bell_fd = self.bpf.table("kfault_io_stop_bell").map_fd
        self.holders = self.bpf.table("kfault_io_holders")
        self.counters = self.bpf.table("kfault_io_counters")
        self.generation = self.bpf.table("kfault_io_generation") if self.file_hooks else None
        self.file_decider = self.bpf.table("kfault_io_file_decider") if self.file_hooks else None

    @property
    def attached(self):
        """Whether the syscall tracepoints are attached."""
        return bool(self._tracepoint_links)

    @property
    def hooks_attached(self):
        """The hooks (ERRNO_HOOKS' names, and LATENCY_FILE_HOOK) attached."""
        return set(self._hook_links)

    def needs_syscall_tracepoints(self, action, methods):
        """Whether some call of a rule is decided at the syscall tracepoints, not the file hooks."""
        return not (self.file_hooks and action in FILE_HOOK_ACTIONS and set(methods) <= FILE_HOOK_METHODS)

    def hooks_needed(self, action, methods):
        """The hooks (ERRNO_HOOKS' names) a rule needs attached: all for a fault, whose calls
        are failed there whatever decided them; with file-hooks, LATENCY_FILE_HOOK for latency
        on read or write, which it decides. attrOverride and mistake need none."""
        if self.errno_mechanism is None:
            return frozenset()
        if action == "fault":
            return frozenset(ERRNO_HOOKS)
        if self.file_hooks and action in FILE_HOOK_ACTIONS and set(methods) & FILE_HOOK_METHODS:
            # file_open walks a targeted task's file as it is opened, for io_uring_submit
            return frozenset({LATENCY_FILE_HOOK} | (set() if self.io_uring_refusal else {"file_open"}))
        return frozenset()

    def new_generation(self):
        """Have every file's path walked again for the rules (the file hooks cache their match)."""
        if self.file_hooks:
            key = self.generation.Key(0)
            self.generation[key] = self.generation.Leaf((self.generation[key].value + 1) & 0xFFFFFFFF)

    def _load_write_user_programs(self, programs):
        """Load io_apply_attr and io_corrupt into their program slots; None, or why the kernel
        refused them (the kernel also logs a warning each time they load: expected)."""
        try:
            self.programs.update(self.bpf.load_many(IO_WRITE_USER_PROGRAMS, bpfcall.PROG_RAW_TRACEPOINT))
            for name, slot in IO_WRITE_USER_PROGRAMS.items():
                programs[slot] = self.programs[name].fd
        except OSError as err:
            return (f"the kernel refused a program that calls bpf_probe_write_user ({str(err).splitlines()[0][:200]}), "
                    "as a kernel in lockdown does (Secure Boot, lockdown=integrity, CONFIG_LOCK_DOWN_KERNEL_FORCE_*): "
                    "attrOverride and mistake need it; latency and fault still work")
        return None

    def _hook_names(self):
        """{LSM hook: program}: lsm__<hook> as BPF LSM programs, or kmod_ret__security_<hook> as
        fmod_ret; with file-hooks, also LATENCY_FILE_HOOK's fentry program."""
        lsm = self.errno_mechanism == "bpf-lsm"
        names = {hook: f"lsm__{hook}" if lsm else f"kmod_ret__security_{hook}" for hook in ERRNO_HOOKS}
        if self.file_hooks:
            names[LATENCY_FILE_HOOK] = LATENCY_FILE_HOOK_PROGRAM
        return names

    def _load_errno_hooks(self):
        lsm = self.errno_mechanism == "bpf-lsm"
        programs = self.bpf.load_many(self._hook_names().values(), bpfcall.PROG_LSM if lsm else bpfcall.PROG_TRACING)
        if self.file_hooks:
            for name in (FILE_HOOK_PROGRAM, LATENCY_FILE_HOOK_PROGRAM):
                self.programs[name] = programs[name]

    def use_hooks(self, needed):
        """Have exactly the hooks `needed` attached (the union of what the armed rules need),
        or KernelUnsupported, nothing changed. The new ones attach first and the old ones go
        last; in between, the decision on reads and writes moves to the fmod_ret program while a
        fault rule needs file_permission, else to LATENCY_FILE_HOOK's fentry one: with both
        attached for a moment, a call is decided once, and none goes undecided."""
        wanted = set(needed)
        if "file_permission" in wanted:
            wanted.discard(LATENCY_FILE_HOOK)   # the fmod_ret program decides latency too
        self.attach_hooks(wanted)
        if self.file_hooks:
            decider = (layout.IO_FILE_DECIDER_FMOD_RET if "file_permission" in wanted
                       else layout.IO_FILE_DECIDER_FENTRY)
            self.file_decider[self.file_decider.Key(0)] = self.file_decider.Leaf(decider)
        self.detach_hooks(keep=wanted)

    def attach_hooks(self, hooks):
        """Attach these hooks where they aren't yet (each stays attached while its link fd is
        open), or KernelUnsupported, those attached here let go again."""
        attached = []
        try:
            for hook in hooks:
                if hook in self._hook_links:
                    continue
                try:
                    self._hook_links[hook] = self.bpf.attach(self._hook_names()[hook])
                    attached.append(hook)
                except OSError as err:
                    how = ("fentry on security_" if hook == LATENCY_FILE_HOOK
                           else "BPF LSM hook " if self.errno_mechanism == "bpf-lsm" else "fmod_ret on security_")
                    raise KernelUnsupported(f"{how}{hook.split()[0]} did not attach ({err})") from err
        except BaseException:
            for hook in attached:
                self.bpf.detach(self._hook_links.pop(hook))
            raise

    def detach_hooks(self, keep=()):
        """Detach every hook but those in `keep`."""
        for hook in [hook for hook in self._hook_links if hook not in keep]:
            self.bpf.detach(self._hook_links.pop(hook))

    def attach(self):
        if not self._tracepoint_links:
            self._tracepoint_links = [self.bpf.attach("io_sys_enter", "sys_enter"),
                                      self.bpf.attach("io_sys_exit", "sys_exit")]

    def detach(self):
        for fd in self._tracepoint_links:
            self.bpf.detach(fd)
        self._tracepoint_links = []

    @property
    def io_uring_attached(self):
        return bool(self._io_uring_links)

    def attach_io_uring(self):
        """io_uring's submission tracepoint, while a rule is armed (it costs only io_uring's
        users: one run per request). Its name is the kernel's release's; a kernel with io_uring
        has one of them (else io_uring_refusal says why not)."""
        if self._io_uring_links or self.io_uring_refusal:
            return
        if IO_URING_RETURN_PROGRAM in self.programs:     # first: a hold is owed only once it runs
            try:
                self._io_uring_links.append(self.bpf.attach(IO_URING_RETURN_PROGRAM))
            except OSError as err:
                self.io_uring_refusal = f"io_uring requests are out of reach: fexit on io_uring_enter: {err}"
                return
        errors = []
        for name in IO_URING_TRACEPOINTS:
            try:
                self._io_uring_links.append(self.bpf.attach(IO_URING_PROGRAM, name))
                return
            except OSError as err:
                errors.append(f"{name}: {err}")
        self.detach_io_uring()
        self.io_uring_refusal = f"io_uring requests are out of reach: no tracepoint to attach to ({'; '.join(errors)})"

    def detach_io_uring(self):
        for fd in self._io_uring_links:
            self.bpf.detach(fd)
        self._io_uring_links = []

    def close(self):
        self.detach()
        self.detach_hooks()
        self.detach_io_uring()
        self.bpf.close()


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
    info = _ProgInfo()
    length = bpfcall.obj_info(fd, info)
    has_verified = length >= _ProgInfo.verified_insns.offset + _ProgInfo.verified_insns.size
    return ProgramSize(info.xlated_prog_len // 8, info.verified_insns if has_verified else None)


SYSCALL_LATENCY_PROGRAM = "sc_sys_exit"


class SyscallDatapath:
    """syscallfault.c, compiled and loaded: SyscallChaos's programs. Nothing of it is attached
    while no rule needs it: a fault rule's hooks (BPF LSM, syscalls.FAULT_HOOKS) while it is
    armed (each taxes only the calls of its function), the sys_exit tracepoint while a latency
    rule is (it puts every task on the node on the slower syscall path). `fault_refusal` says
    why faults can't be had here (no BPF LSM), `latency_refusal` why latency can't; the
    datapath loads if either can."""

    def __init__(self, lsm_active):
        headers = require_headers(uapi_headers())
        cflags = [f"-I{BPF_DIR}", "-Wno-macro-redefined", io_arch_cflag()]
        self.bpf = Programs(os.path.join(BPF_DIR, "syscallfault.c"), cflags, headers)
        self.programs, self._hook_links, self._tracepoint_link = {}, {}, None
        self.fault_refusal = self._load_hooks() if lsm_active else (
            "bpf is not an active LSM (/sys/kernel/security/lsm): boot with lsm=...,bpf and CONFIG_BPF_LSM=y")
        try:
            self.programs[SYSCALL_LATENCY_PROGRAM] = self.bpf.load(SYSCALL_LATENCY_PROGRAM,
                                                                   bpfcall.PROG_RAW_TRACEPOINT)
            self.latency_refusal = None
        except OSError as err:
            self.latency_refusal = f"the kernel refused {SYSCALL_LATENCY_PROGRAM} ({str(err).splitlines()[0][:300]})"
        if self.fault_refusal and self.latency_refusal:
            self.bpf.close()
            raise KernelUnsupported(f"no syscall faults: {self.fault_refusal}; no syscall latency: "
                                    f"{self.latency_refusal}")
        self.rules = self.bpf.table("kfault_sc_rules")
        self.cgroups = self.bpf.table("kfault_sc_cgroups")
        self.armed = self.bpf.table("kfault_sc_armed")
        self.syscalls = self.bpf.table("kfault_sc_syscalls")
        self.counters = self.bpf.table("kfault_sc_counters")
        self.traced = self.bpf.table("kfault_sc_traced")
        self.stopped = self.bpf.table("kfault_sc_stopped")
        self.stop_bell_fd = self.bpf.table("kfault_sc_stop_bell").map_fd
        self.holders = self.bpf.table("kfault_sc_holders")
        self.holds = self.bpf.table("kfault_sc_holds")

    def _load_hooks(self):
        """Load every LSM hook of the table, attach each once and let go (what the probe learns:
        the kernel lets them attach); None, or why not."""
        names = [f"lsm__{hook}" for hook in syscalls.HOOKS]
        try:
            self.programs.update(self.bpf.load_many(names, bpfcall.PROG_LSM))
            for hook in syscalls.HOOKS:
                self.attach_hook(hook)
        except OSError as err:
            return f"the kernel refused a BPF LSM hook ({str(err).splitlines()[0][:300]})"
        finally:
            self.detach_hooks()
        return None

    @property
    def hooks_attached(self):
        return set(self._hook_links)

    @property
    def tracepoint_attached(self):
        return self._tracepoint_link is not None

    def attach_hook(self, hook):
        if hook not in self._hook_links:
            self._hook_links[hook] = self.bpf.attach(f"lsm__{hook}")

    def attach_hooks(self, hooks):
        """Attach these hooks where they aren't yet, or OSError, those attached here let go again."""
        attached = []
        try:
            for hook in hooks:
                if hook not in self._hook_links:
                    self.attach_hook(hook)
                    attached.append(hook)
        except BaseException:
            for hook in attached:
                self.bpf.detach(self._hook_links.pop(hook))
            raise

    def detach_hooks(self, keep=()):
        """Detach every hook but those in `keep`."""
        for hook in [hook for hook in self._hook_links if hook not in keep]:
            self.bpf.detach(self._hook_links.pop(hook))

    def attach_tracepoint(self):
        if self._tracepoint_link is None:
            self._tracepoint_link = self.bpf.attach(SYSCALL_LATENCY_PROGRAM, "sys_exit")

    def detach_tracepoint(self):
        if self._tracepoint_link is not None:
            self.bpf.detach(self._tracepoint_link)
            self._tracepoint_link = None

    def close(self):
        self.detach_tracepoint()
        self.detach_hooks()
        self.bpf.close()
