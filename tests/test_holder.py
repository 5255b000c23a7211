"""The holder's choice of hold signal, from a process's caught and blocked signal masks; the
registers it reads and writes to fail a call after it ran."""
import ctypes
import signal

from kfault_agent.kernel.capabilities import Capability, io_support
from kfault_agent.kernel.holder import ALL_BLOCKABLE, RAX_OFFSET, UserRegs, pick_hold_signal


def bit(sig):
    return 1 << (sig - 1)


def test_a_process_that_leaves_both_alone_gets_sigurg():
    assert pick_hold_signal(caught=bit(signal.SIGINT), blocked=bit(signal.SIGCHLD)) == signal.SIGURG


def test_a_caught_or_blocked_signal_is_passed_over():
    assert pick_hold_signal(caught=bit(signal.SIGURG), blocked=0) == signal.SIGWINCH
    assert pick_hold_signal(caught=0, blocked=bit(signal.SIGURG)) == signal.SIGWINCH    # sigwait, signalfd


def test_a_process_that_catches_both_is_held_by_sigurg():
    """Every Go program catches SIGURG (preemption) and SIGWINCH: passing over caught signals
    left it no latency at all. Blocked on its own, a signal can't be used: it never arrives."""
    assert pick_hold_signal(caught=bit(signal.SIGURG) | bit(signal.SIGWINCH), blocked=0) == signal.SIGURG
    assert pick_hold_signal(caught=bit(signal.SIGURG), blocked=bit(signal.SIGWINCH)) == signal.SIGURG
    assert pick_hold_signal(caught=0, blocked=bit(signal.SIGURG) | bit(signal.SIGWINCH)) is None


def test_every_signal_blocked_is_a_moment_not_a_choice():
    """glibc's pthread_create blocks all around clone (SigBlk fffffffffffbfeff, seen in
    /proc/PID/status of a Python starting a thread); a shell's child does between fork and
    exec. Sampled then, the process would lose latency for good."""
    assert pick_hold_signal(caught=0, blocked=0xfffffffffffbfeff) == signal.SIGURG
    assert pick_hold_signal(caught=0, blocked=ALL_BLOCKABLE) == signal.SIGURG
    assert pick_hold_signal(caught=bit(signal.SIGURG) | bit(signal.SIGWINCH), blocked=ALL_BLOCKABLE) == signal.SIGURG


def test_user_regs_is_x86_64s_user_regs_struct():
    """sys/user.h: 27 registers; PTRACE_POKEUSER writes rax at 80; orig_rax, rip and rsp are what
    the holder compares with BPF's record of the call's return."""
    assert ctypes.sizeof(UserRegs) == 27 * 8 and RAX_OFFSET == 10 * 8
    assert (UserRegs.orig_rax.offset, UserRegs.rip.offset, UserRegs.rsp.offset) == (15 * 8, 16 * 8, 19 * 8)


def test_a_fault_on_fsync_needs_the_holder_not_an_errno_hook():
    caps = {"io-tracepoints": Capability("io-tracepoints", True, ""), "ptrace": Capability("ptrace", True, ""),
            "io-errno": Capability("io-errno", False, "no BPF LSM")}
    assert io_support(caps, "fault", "fsync")[0]
    assert io_support(caps, "fault", "write") == (False, "no BPF LSM")
    caps["ptrace"] = Capability("ptrace", False, "ptrace_scope 3")
    assert io_support(caps, "fault", "fsync") == (False, "ptrace_scope 3")
