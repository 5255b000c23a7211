"""The holder: latency for file I/O, which BPF can't do itself (a BPF program can't sleep).

bpf/iofault.c picks a call for latency, writes the delay to kfault_io_holds[tid] and sends the
thread a signal. The holder is a ptrace tracer (PTRACE_SEIZE: no stop, no visible change to
the process) of every thread of the target's processes: the signal puts the thread in a
signal-delivery stop, reported to the holder, which keeps it there for the delay and then
resumes it with the signal suppressed. Other threads of the process keep running.

Fail-safe: the holder is a child process of the agent that dies with it (PR_SET_PDEATHSIG).
When a tracer dies the kernel detaches its tracees and resumes any it held; the pending
signal is then delivered for real, so the holder picks, per process, a signal whose default
action is to ignore it and which the process neither catches nor blocks: it is dropped.
Processes with no such signal get no latency (BPF only signals processes in
kfault_io_traced).
"""
import ctypes
import errno
import heapq
import logging
import os
import select
import signal
import time

from kfault_agent.kernel import children

log = logging.getLogger(__name__)

PTRACE_CONT = 7
PTRACE_SEIZE = 0x4206
PTRACE_LISTEN = 0x4208
PTRACE_O_TRACECLONE = 0x8
PTRACE_O_TRACEFORK = 0x2
PTRACE_O_TRACEVFORK = 0x4
PTRACE_EVENT_STOP = 128
WALL = 0x40000000
STOP_SIGNALS = {signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}
# Default action "ignore": if the holder dies mid-hold, delivering one changes nothing.
HOLD_SIGNALS = (signal.SIGURG, signal.SIGWINCH)
RESCAN_S = 0.2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)
_libc.ptrace.restype = ctypes.c_long


def ptrace(request, tid, data=0):
    if _libc.ptrace(request, tid, None, ctypes.c_void_p(data)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace({request:#x}, {tid}): {os.strerror(err)}")


def _signal_mask(status_text, field):
    for line in status_text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    return 0


def hold_signal_for(tgid):
    """A signal that `tgid` ignores by default and doesn't catch or block, or None."""
    try:
        with open(f"/proc/{tgid}/status", encoding="ascii") as handle:
            status = handle.read()
    except OSError:
        return None
    taken = _signal_mask(status, "SigCgt") | _signal_mask(status, "SigBlk")
    for sig in HOLD_SIGNALS:
        if not taken & (1 << (sig - 1)):
            return int(sig)
    return None


def cgroup_processes(cgroup_dir):
    """Every process in a cgroup v2 directory and below it."""
    pids = set()
    for root, _, files in os.walk(cgroup_dir):
        if "cgroup.procs" in files:
            try:
                with open(os.path.join(root, "cgroup.procs"), encoding="ascii") as handle:
                    pids.update(int(line) for line in handle if line.strip())
            except OSError:
                continue
    return pids


class Holder:
    """Runs in its own process (see start_holder): ptrace stops are reported to the tracer's
    process by waitpid, which must not reap the agent's other children."""

    def __init__(self, cgroup_dir, holds, traced, control_fd):
        self.cgroup_dir = cgroup_dir
        self.holds = holds            # bcc table kfault_io_holds: tid -> ns
        self.traced = traced          # bcc table kfault_io_traced: tgid -> signal
        self.control_fd = control_fd  # readable when the agent asks us to stop (or dies)
        self.signal_of = {}           # tgid -> hold signal
        self.tgid_of = {}             # tid -> tgid
        self.held = []                # heap of (release at, tid)

    def run(self):
        next_scan = 0.0
        try:
            while True:
                now = time.monotonic()
                if now >= next_scan:
                    self._seize_new_processes()
                    next_scan = now + RESCAN_S
                self._reap_stops()
                self._release_due()
                wait = min([next_scan - time.monotonic(), 0.001] +
                           [at - time.monotonic() for at, _ in self.held[:1]])
                if select.select([self.control_fd], [], [], max(0.0, wait))[0]:
                    return
        finally:
            self._release_all()
            for tgid in self.signal_of:
                self.traced.pop(self.traced.Key(tgid), None)

    def _seize_new_processes(self):
        for tgid in cgroup_processes(self.cgroup_dir):
            if tgid in self.signal_of or tgid == os.getpid():
                continue
            sig = hold_signal_for(tgid)
            if sig is None:
                log.warning("pid %d catches or blocks every hold signal: no latency for it", tgid)
                self.signal_of[tgid] = None
                continue
            try:
                for tid in map(int, os.listdir(f"/proc/{tgid}/task")):
                    self._seize(tid, tgid)
            except OSError as err:
                log.warning("can't hold pid %d: %s", tgid, err)
                continue
            self.signal_of[tgid] = sig
            self.traced[self.traced.Key(tgid)] = self.traced.Leaf(sig)

    def _seize(self, tid, tgid):
        try:
            ptrace(PTRACE_SEIZE, tid, PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK)
        except OSError as err:
            if err.errno != errno.EPERM or tid not in self.tgid_of:   # EPERM: ours already
                raise
        self.tgid_of[tid] = tgid

    def _reap_stops(self):
        while True:
            try:
                tid, status = os.waitpid(-1, os.WNOHANG | WALL)
            except ChildProcessError:
                return
            if tid == 0:
                return
            if not os.WIFSTOPPED(status):
                self.tgid_of.pop(tid, None)     # exited
                continue
            sig, event = os.WSTOPSIG(status), status >> 16
            if tid not in self.tgid_of:         # a new thread or child process, auto-attached
                self.tgid_of[tid] = self._tgid(tid)
            try:
                if event == PTRACE_EVENT_STOP:
                    # group-stop (SIGSTOP and friends) stays a stop; anything else runs on.
                    ptrace(PTRACE_LISTEN if sig in STOP_SIGNALS else PTRACE_CONT, tid)
                elif event:
                    ptrace(PTRACE_CONT, tid)    # fork/clone events
                elif sig == self.signal_of.get(self.tgid_of[tid]) and self._hold(tid):
                    pass
                else:
                    ptrace(PTRACE_CONT, tid, sig)   # not ours: deliver it
            except OSError as err:
                if err.errno != errno.ESRCH:
                    raise

    def _tgid(self, tid):
        try:
            with open(f"/proc/{tid}/status", encoding="ascii") as handle:
                for line in handle:
                    if line.startswith("Tgid:"):
                        tgid = int(line.split()[1])
                        if tgid not in self.signal_of:
                            sig = hold_signal_for(tgid)
                            self.signal_of[tgid] = sig
                            if sig:
                                self.traced[self.traced.Key(tgid)] = self.traced.Leaf(sig)
                        return tgid
        except OSError:
            pass
        return tid

    def _hold(self, tid):
        key = self.holds.Key(tid)
        try:
            delay_ns = self.holds[key].value
            del self.holds[key]
        except KeyError:
            return False                        # a real signal of that number: deliver it
        heapq.heappush(self.held, (time.monotonic() + delay_ns / 1e9, tid))
        return True

    def _release_due(self):
        now = time.monotonic()
        while self.held and self.held[0][0] <= now:
            _, tid = heapq.heappop(self.held)
            self._resume(tid)

    def _release_all(self):
        while self.held:
            self._resume(heapq.heappop(self.held)[1])

    @staticmethod
    def _resume(tid):
        try:
            ptrace(PTRACE_CONT, tid, 0)         # the hold signal is swallowed here
        except OSError as err:
            if err.errno != errno.ESRCH:
                raise


class HolderProcess:
    """A Holder in a forked child of the agent, which dies with the agent."""

    def __init__(self, cgroup_dir, holds, traced):
        self.pid, self._write_fd = children.spawn(
            lambda read_fd: Holder(cgroup_dir, holds, traced, read_fd).run(), signal.SIGKILL,
            f"holder for {cgroup_dir}")

    def stop(self):
        """Resume every held thread and detach (the tracer's exit detaches its tracees)."""
        if self.pid:
            os.close(self._write_fd)
            os.waitpid(self.pid, 0)
            self.pid = None
