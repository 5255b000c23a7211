"""What the kernel has attached, as it says (not as a process believes): every BPF link of the
node and its program, by bpf()'s own ID walk, for the tests and the bench.

kfault attaches everything through links (raw tracepoints, fmod_ret, BPF LSM), so a program of
kfault's runs somewhere exactly when a link to it exists.
"""
import ctypes
import os

from kfault_agent.kernel import bpfcall
from kfault_agent.kernel.loader import NAME_PREFIXES, _ProgInfo

PROG_GET_FD_BY_ID = 13
LINK_GET_FD_BY_ID = 30
LINK_GET_NEXT_ID = 31
_u32, _u64 = ctypes.c_uint32, ctypes.c_uint64


class _IdAttr(ctypes.Structure):
    """The GET_NEXT_ID / GET_FD_BY_ID part of union bpf_attr."""
    _fields_ = [("id", _u32), ("next_id", _u32), ("open_flags", _u32), ("_spare", ctypes.c_uint8 * 32)]


class _LinkInfo(ctypes.Structure):
    """struct bpf_link_info's head: the union after it is not read."""
    _fields_ = [("type", _u32), ("id", _u32), ("prog_id", _u32), ("_union", ctypes.c_uint8 * 64)]


def linked_program_ids():
    """The IDs of the programs some link of the node attaches."""
    found, link_id = set(), 0
    while True:
        attr = _IdAttr(id=link_id)
        try:
            bpfcall.bpf(LINK_GET_NEXT_ID, attr)
        except FileNotFoundError:
            return found
        link_id = attr.next_id
        try:
            fd = bpfcall.bpf(LINK_GET_FD_BY_ID, _IdAttr(id=link_id))
        except FileNotFoundError:       # released meanwhile
            continue
        try:
            info = _LinkInfo()
            bpfcall.obj_info(fd, info)
            found.add(info.prog_id)
        finally:
            os.close(fd)


def program_id(fd):
    info = _ProgInfo()
    bpfcall.obj_info(fd, info)
    return info.id


def linked_program_names():
    """The kernel's names (15 characters at most) of the programs some link attaches."""
    names = set()
    for prog_id in linked_program_ids():
        try:
            fd = bpfcall.bpf(PROG_GET_FD_BY_ID, _IdAttr(id=prog_id))
        except FileNotFoundError:
            continue
        try:
            info = _ProgInfo()
            bpfcall.obj_info(fd, info)
            names.add(info.name.decode(errors="replace"))
        finally:
            os.close(fd)
    return names


def kernel_name(name):
    """The name the kernel gives a program of kfault's (loader.Programs.load)."""
    return next((name[len(p):] for p in NAME_PREFIXES if name.startswith(p)), name)[:15]


def attached_names(programs):
    """Of {name: Program}, the names of those the kernel has a link to."""
    linked = linked_program_ids()
    return {name for name, program in programs.items() if program_id(program.fd) in linked}
