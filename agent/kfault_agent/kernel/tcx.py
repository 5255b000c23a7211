"""tcx links (kernel >= 6.6): our tc programs attached with BPF_LINK_CREATE, first in line.

pyroute2 has no tcx API, so this makes the few bpf() calls itself (kernel/bpfcall.py). A link
lives as long as its fd: when the agent dies, the kernel takes its programs off at once (no filter is
left behind for `kfault cleanup`). BPF_LINK_CREATE and BPF_PROG_QUERY find the interface by
index in the calling thread's network namespace, so they run in a thread that entered it.
"""
import ctypes
import errno
import os
import platform
import struct
from dataclasses import dataclass, field

from kfault_agent.errors import InterfaceGone, kernel_errors
from kfault_agent.kernel import bpfcall, topology

BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
BPF_LINK_CREATE = 28
ATTACH_TYPES = {"ingress": 46, "egress": 47}     # BPF_TCX_INGRESS, BPF_TCX_EGRESS
BPF_F_BEFORE = 1 << 3                           # with no relative program: before every one there
MAX_QUERIED = 64                                # programs listed per hook by attached_programs
PROG_INFO_NAME = slice(64, 80)                  # struct bpf_prog_info: char name[16] at offset 64


def _bpf(cmd, attr):
    """bpf(cmd, attr) with `attr` a bytes image of the union's member; returns (result, attr
    as the kernel left it)."""
    buf = ctypes.create_string_buffer(attr, len(attr))
    return bpfcall.bpf(cmd, buf), buf.raw


def _in(netns, call):
    """call() in `netns` (the agent's own when it has no path)."""
    return call() if not netns.path else topology.in_netns(topology.live_path(netns), call)


def link_create(prog_fd, ifindex, hook):
    """A tcx link of the program at the interface's hook, before every program there; its fd.
    Runs in the calling thread's namespace."""
    # union bpf_attr.link_create: prog_fd, target_ifindex, attach_type, flags, tcx.relative_fd,
    # (pad), tcx.expected_revision (0: whatever the revision)
    attr = struct.pack("=IIIIIIQ", prog_fd, ifindex, ATTACH_TYPES[hook], BPF_F_BEFORE, 0, 0, 0)
    return _bpf(BPF_LINK_CREATE, attr)[0]


def query(ifindex, hook):
    """The ids of the programs at the interface's tcx hook, in the order they run. Runs in the
    calling thread's namespace; EINVAL where the kernel has no tcx."""
    ids = (ctypes.c_uint32 * MAX_QUERIED)()
    # union bpf_attr.query: target_ifindex, attach_type, query_flags, attach_flags, prog_ids,
    # count, (pad), prog_attach_flags, link_ids, link_attach_flags, revision
    attr = struct.pack("=IIIIQIIQQQQ", ifindex, ATTACH_TYPES[hook], 0, 0, ctypes.addressof(ids), MAX_QUERIED,
                       0, 0, 0, 0, 0)
    _, out = _bpf(BPF_PROG_QUERY, attr)
    count = struct.unpack_from("=I", out, 24)[0]
    return list(ids[:min(count, MAX_QUERIED)])


def program_name(prog_id):
    """The name a loaded program was given (at most 15 characters), by its id."""
    fd, _ = _bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("=III", prog_id, 0, 0))
    try:
        info = ctypes.create_string_buffer(PROG_INFO_NAME.stop)
        _bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("=IIQ", fd, len(info), ctypes.addressof(info)))
        return info.raw[PROG_INFO_NAME].split(b"\0", 1)[0].decode()
    finally:
        os.close(fd)


def attached_programs(netns, ifindex, hook):
    """The names of the programs at the interface's tcx hook, in the order they run."""
    return _in(netns, lambda: [program_name(i) for i in query(ifindex, hook)])


def kernel_has_tcx():
    """(True, why) where BPF_PROG_QUERY knows the tcx attach types (kernel >= 6.6), else
    (False, why not)."""
    try:
        query(1, "ingress")       # the loopback of the agent's namespace: index 1 everywhere
        return True, f"kernel {platform.release()} has tcx (BPF_PROG_QUERY knows BPF_TCX_INGRESS)"
    except OSError as err:
        if err.errno == errno.EINVAL:
            return False, f"kernel {platform.release()} has no tcx (BPF_TCX_INGRESS is new in 6.6)"
        return False, f"BPF_PROG_QUERY for tcx failed: {err.strerror}"


@dataclass
class TcxHooks:
    """Our programs on one interface as tcx links, each before every program already there;
    they return 'next' (TC_ACT_UNSPEC) for what they pass, so the others still see it."""
    link: object
    fds: dict = field(default_factory=dict)    # hook -> link fd

    @classmethod
    def attach(cls, link, programs):
        """programs: {hook: (prog_fd, name)}."""
        hooks = cls(link)
        gone = InterfaceGone(f"interface {link.ifname} (index {link.ifindex}) in {link.netns} was deleted "
                             "while kfault went to attach its tcx programs")
        try:
            with kernel_errors(f"can't attach kfault's tcx programs on interface {link.ifname} in {link.netns}",
                               gone=gone):
                for hook, (fd, _) in programs.items():
                    hooks.fds[hook] = _in(link.netns, lambda fd=fd, hook=hook: link_create(fd, link.ifindex, hook))
        except Exception:
            hooks.detach()
            raise
        return hooks

    def detach(self):
        """Closing a link's fd takes the program off (an interface deleted meanwhile took it
        already)."""
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
