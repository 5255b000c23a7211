"""BPF_PROG_TEST_RUN: the kernel runs a loaded program on a packet we built, as its hook would,
and says what it returned, how long it took and (for tc programs) the __sk_buff it left: how the
tests see a program's decision on one packet, and the benches its cost."""
import ctypes
import struct

from kfault_agent.kernel import bpfcall

PROG_TEST_RUN = 10
# struct __sk_buff as uapi/linux/bpf.h lays it out: its size, and where `tstamp` is.
SKB_SIZE = 192
SKB_TSTAMP = 152
_u32, _u64 = ctypes.c_uint32, ctypes.c_uint64


class TestRunAttr(ctypes.Structure):
    """union bpf_attr's `test` member."""
    _fields_ = [("prog_fd", _u32), ("retval", _u32), ("data_size_in", _u32), ("data_size_out", _u32),
                ("data_in", _u64), ("data_out", _u64), ("repeat", _u32), ("duration", _u32),
                ("ctx_size_in", _u32), ("ctx_size_out", _u32), ("ctx_in", _u64), ("ctx_out", _u64),
                ("flags", _u32), ("cpu", _u32), ("batch_size", _u32), ("_spare", ctypes.c_uint8 * 32)]


def run(prog_fd, packet, repeat=1, skb=False):
    """Run the program `repeat` times on `packet`: (its return value, ns per run, the
    __sk_buff it left as bytes, or None without `skb`)."""
    data_in = ctypes.create_string_buffer(packet, len(packet))
    data_out = ctypes.create_string_buffer(len(packet) + 256)
    attr = TestRunAttr(prog_fd=prog_fd, data_size_in=len(packet), data_size_out=len(data_out),
                       data_in=ctypes.addressof(data_in), data_out=ctypes.addressof(data_out), repeat=repeat)
    ctx_in = ctx_out = None
    if skb:   # all zero in: the kernel fills what it owns; out: what the program left
        ctx_in, ctx_out = ctypes.create_string_buffer(SKB_SIZE), ctypes.create_string_buffer(SKB_SIZE)
        attr.ctx_size_in, attr.ctx_in = SKB_SIZE, ctypes.addressof(ctx_in)
        attr.ctx_size_out, attr.ctx_out = SKB_SIZE, ctypes.addressof(ctx_out)
    bpfcall.bpf(PROG_TEST_RUN, attr)
    return attr.retval, attr.duration, ctx_out.raw if skb else None


def tstamp(skb):
    """The departure time a program gave the packet: __sk_buff's tstamp."""
    return struct.unpack_from("=Q", skb, SKB_TSTAMP)[0]
