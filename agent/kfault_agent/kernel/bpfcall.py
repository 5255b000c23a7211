"""The bpf(2) calls the agent makes itself: maps, program loads, attachments, object info.

The agent loads what kernel/compile.py cached with these plain calls (no libbcc, no LLVM in
its memory). Each attr is the union bpf_attr member of linux/bpf.h the command reads, as a
ctypes structure; the kernel zero-checks the bytes past what it knows, so every call passes
the structure whole, zero-filled.
"""
import ctypes
import os
import platform

# bpf(2) syscall numbers per architecture (platform.machine()).
SYS_BPF = {"x86_64": 321, "aarch64": 280}

MAP_CREATE = 0
MAP_LOOKUP_ELEM = 1
MAP_UPDATE_ELEM = 2
MAP_DELETE_ELEM = 3
MAP_GET_NEXT_KEY = 4
PROG_LOAD = 5
OBJ_GET_INFO_BY_FD = 15
RAW_TRACEPOINT_OPEN = 17
LINK_CREATE = 28

# enum bpf_prog_type
PROG_SCHED_CLS = 3
PROG_RAW_TRACEPOINT = 17
PROG_TRACING = 26
PROG_LSM = 29
PROG_TYPE_NAMES = {PROG_SCHED_CLS: "SCHED_CLS", PROG_RAW_TRACEPOINT: "RAW_TRACEPOINT", PROG_TRACING: "TRACING",
                   PROG_LSM: "LSM"}
# enum bpf_attach_type
ATTACH_TRACE_FENTRY = 24
ATTACH_TRACE_FEXIT = 25
ATTACH_MODIFY_RETURN = 26
ATTACH_LSM_MAC = 27
ATTACH_LSM_CGROUP = 43

# enum bpf_map_type
MAP_HASH = 1
MAP_ARRAY = 2
MAP_PROG_ARRAY = 3
MAP_PERCPU_HASH = 5
MAP_PERCPU_ARRAY = 6
MAP_CGROUP_ARRAY = 8
MAP_LRU_HASH = 9
MAP_LPM_TRIE = 11
MAP_RINGBUF = 27

_libc = ctypes.CDLL(None, use_errno=True)
_u32, _u64 = ctypes.c_uint32, ctypes.c_uint64


class MapCreateAttr(ctypes.Structure):
    _fields_ = [("map_type", _u32), ("key_size", _u32), ("value_size", _u32), ("max_entries", _u32),
                ("map_flags", _u32), ("inner_map_fd", _u32), ("numa_node", _u32), ("map_name", ctypes.c_char * 16),
                ("map_ifindex", _u32), ("btf_fd", _u32), ("btf_key_type_id", _u32), ("btf_value_type_id", _u32),
                ("btf_vmlinux_value_type_id", _u32), ("map_extra", _u64), ("_spare", ctypes.c_uint8 * 64)]


class MapElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", _u32), ("_pad", _u32), ("key", _u64), ("value", _u64), ("flags", _u64),
                ("_spare", ctypes.c_uint8 * 32)]


class ProgLoadAttr(ctypes.Structure):
    _fields_ = [("prog_type", _u32), ("insn_cnt", _u32), ("insns", _u64), ("license", _u64),
                ("log_level", _u32), ("log_size", _u32), ("log_buf", _u64), ("kern_version", _u32),
                ("prog_flags", _u32), ("prog_name", ctypes.c_char * 16), ("prog_ifindex", _u32),
                ("expected_attach_type", _u32), ("prog_btf_fd", _u32), ("func_info_rec_size", _u32),
                ("func_info", _u64), ("func_info_cnt", _u32), ("line_info_rec_size", _u32), ("line_info", _u64),
                ("line_info_cnt", _u32), ("attach_btf_id", _u32), ("attach_prog_fd", _u32),
                ("_spare", ctypes.c_uint8 * 64)]


class RawTracepointAttr(ctypes.Structure):
    _fields_ = [("name", _u64), ("prog_fd", _u32), ("_pad", _u32), ("cookie", _u64), ("_spare", ctypes.c_uint8 * 32)]


class LinkCreateAttr(ctypes.Structure):
    _fields_ = [("prog_fd", _u32), ("target_fd", _u32), ("attach_type", _u32), ("flags", _u32),
                ("_spare", ctypes.c_uint8 * 48)]


class InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", _u32), ("info_len", _u32), ("info", _u64), ("_spare", ctypes.c_uint8 * 32)]


def bpf(cmd, attr):
    """bpf(cmd, &attr, sizeof attr) with attr a ctypes structure or buffer: its result, or
    OSError with the kernel's errno."""
    result = _libc.syscall(ctypes.c_long(SYS_BPF[platform.machine()]), ctypes.c_long(cmd), ctypes.byref(attr),
                           ctypes.c_uint(ctypes.sizeof(attr)))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"bpf({cmd}): {os.strerror(code)}")
    return result


def _address(buffer):
    return ctypes.addressof(buffer) if buffer is not None else 0


def map_create(map_type, key_size, value_size, max_entries, flags=0, name=""):
    attr = MapCreateAttr(map_type=map_type, key_size=key_size, value_size=value_size, max_entries=max_entries,
                         map_flags=flags, map_name=name.encode()[:15])
    return bpf(MAP_CREATE, attr)


def _elem(cmd, fd, key, value=None, flags=0):
    return bpf(cmd, MapElemAttr(map_fd=fd, key=_address(key), value=_address(value), flags=flags))


def _found(cmd, fd, key, value=None):
    """An element call that may find no entry (ENOENT): whether it found one."""
    try:
        _elem(cmd, fd, key, value)
        return True
    except FileNotFoundError:
        return False


def map_lookup(fd, key, value):
    """Fill `value` with the entry of `key`; False if there is none."""
    return _found(MAP_LOOKUP_ELEM, fd, key, value)


def map_update(fd, key, value, flags=0):
    _elem(MAP_UPDATE_ELEM, fd, key, value, flags)


def map_delete(fd, key):
    """Delete the entry of `key`; False if there was none."""
    return _found(MAP_DELETE_ELEM, fd, key)


def map_next_key(fd, key, next_key):
    """Fill `next_key` with the key after `key` (the first with key None); False at the end."""
    return _found(MAP_GET_NEXT_KEY, fd, key, next_key)


class LoadError(OSError):
    """The kernel refused a program: errno, and the verifier's last words when it gave some."""

    def __init__(self, code, name, prog_type, log):
        self.log = log
        said = f"; the verifier: {' / '.join(log.strip().splitlines()[-3:])}" if log.strip() else ""
        super().__init__(code, f"the kernel refused {name} ({PROG_TYPE_NAMES.get(prog_type, prog_type)}): "
                               f"{os.strerror(code)}{said}")


def prog_load(prog_type, insns, license, name, kern_version=0, expected_attach_type=0, attach_btf_id=0):
    """Load a program (insns: bytes of struct bpf_insn); its fd, or LoadError. Loads without a
    log first (a log slows the verifier), then again with one to say why it was refused."""
    insn_buf = ctypes.create_string_buffer(bytes(insns), len(insns))
    license_buf = ctypes.create_string_buffer(license.encode())

    def attempt(log_buf):
        attr = ProgLoadAttr(prog_type=prog_type, insn_cnt=len(insns) // 8, insns=ctypes.addressof(insn_buf),
                            license=ctypes.addressof(license_buf), kern_version=kern_version,
                            prog_name=name.encode()[:15], expected_attach_type=expected_attach_type,
                            attach_btf_id=attach_btf_id)
        if log_buf is not None:
            attr.log_level, attr.log_size, attr.log_buf = 1, len(log_buf), ctypes.addressof(log_buf)
        return bpf(PROG_LOAD, attr)

    try:
        return attempt(None)
    except OSError as err:
        first = err.errno
    log_buf = ctypes.create_string_buffer(1 << 20)
    try:
        return attempt(log_buf)         # a refusal that depends on nothing we changed won't come back
    except OSError as err:
        raise LoadError(first if err.errno == 28 else err.errno, name, prog_type,   # 28: ENOSPC, log full
                        log_buf.value.decode(errors="replace")) from None


def raw_tracepoint_open(prog_fd, name=None):
    """Attach a program: at a raw tracepoint by name, or (no name) a TRACING or LSM program at
    the function its attach_btf_id names. The attachment lives as long as the returned fd."""
    name_buf = ctypes.create_string_buffer(name.encode()) if name else None
    return bpf(RAW_TRACEPOINT_OPEN, RawTracepointAttr(name=_address(name_buf), prog_fd=prog_fd))


def link_create(prog_fd, target_fd, attach_type):
    """Attach a program to an object by its fd (a cgroup's directory for lsm_cgroup). The
    attachment lives as long as the returned fd."""
    return bpf(LINK_CREATE, LinkCreateAttr(prog_fd=prog_fd, target_fd=target_fd, attach_type=attach_type))


def obj_info(fd, info):
    """Fill the ctypes structure `info` (struct bpf_prog_info, ...) for an fd; the length the
    kernel filled."""
    attr = InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    bpf(OBJ_GET_INFO_BY_FD, attr)
    return attr.info_len
