"""BPF_PROG_TEST_RUN: a packet run through a loaded tc program without any interface, for
tests of what a program's library headers read out of packets (tests/kernel/test_tls_names.py).
The agent never runs programs so, so this lives with the tests."""
import ctypes

from kfault_agent.kernel import bpfcall

PROG_TEST_RUN = 10                # enum bpf_cmd
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
IPPROTO_TCP = 6


class TestRunAttr(ctypes.Structure):
    """The `test` member of union bpf_attr."""
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32), ("data_size_in", ctypes.c_uint32),
                ("data_size_out", ctypes.c_uint32), ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32), ("ctx_size_in", ctypes.c_uint32),
                ("ctx_size_out", ctypes.c_uint32), ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32), ("batch_size", ctypes.c_uint32),
                ("_spare", ctypes.c_uint8 * 32)]


def run(prog_fd, packet):
    """Run the program once over `packet` (an Ethernet frame): its return value."""
    data = ctypes.create_string_buffer(bytes(packet), len(packet))
    attr = TestRunAttr(prog_fd=prog_fd, data_size_in=len(packet), data_in=ctypes.addressof(data), repeat=1)
    bpfcall.bpf(PROG_TEST_RUN, attr)
    return attr.retval


def tcp_segment(payload, ipv6=False, tcp_options=b""):
    """An Ethernet frame of one TCP segment from a client's port to 443 carrying `payload`
    (checksums left zero: a tc program's test run reads, it doesn't check them)."""
    options = tcp_options + b"\x00" * (-len(tcp_options) % 4)
    tcp = ((40000).to_bytes(2, "big") + (443).to_bytes(2, "big") + (1).to_bytes(4, "big") + (1).to_bytes(4, "big")
           + bytes([(5 + len(options) // 4) << 4, 0x18]) + (65535).to_bytes(2, "big") + b"\x00\x00\x00\x00"
           + options)
    if ipv6:
        ip = (bytes([0x60, 0, 0, 0]) + (len(tcp) + len(payload)).to_bytes(2, "big") + bytes([IPPROTO_TCP, 64])
              + bytes(15) + b"\x01" + bytes(15) + b"\x02")
        kind = ETH_P_IPV6
    else:
        ip = (bytes([0x45, 0]) + (20 + len(tcp) + len(payload)).to_bytes(2, "big") + bytes(4)
              + bytes([64, IPPROTO_TCP]) + bytes(2) + bytes([10, 0, 0, 1, 10, 0, 0, 2]))
        kind = ETH_P_IP
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + kind.to_bytes(2, "big") + ip + tcp + payload
