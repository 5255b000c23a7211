"""The holder: latency for file I/O, which BPF can't do itself (a BPF program can't sleep).

bpf/iofault.c picks a call for latency, writes the delay to kfault_io_holds[tid] and sends the
thread a signal. The holder is a ptrace tracer (PTRACE_SEIZE: no stop, no visible change to
the process) of every thread of the target's processes: the signal puts the thread in a
signal-delivery stop, reported to the holder, which keeps it there for the delay and then
resumes it with the signal suppressed. Other threads of the process keep running.

No window: the holder takes the cgroup's processes before the rule is armed (the engine waits
for it); what they fork or clone is auto-attached before its first instruction; an exec stops
once (PTRACE_O_TRACEEXEC) so the signal is picked again for the new program. A process the
holder does not know yet (it joined the cgroup after arming) is stopped by BPF itself with
SIGSTOP at its first delayed call, recorded in kfault_io_stopped, and the holder woken
(kfault_io_stop_bell): it seizes it, ends the stop with a SIGCONT it swallows, and holds the
call. Whichever comes first, the holder's rescan or BPF's stop, the stop is known as BPF's by
that record.

A fault on fsync is given at the same stop (bpf/lib/after_call.h): the call has run, and BPF
recorded, at its sys_exit, the errno and what identifies that return (the syscall, the user
return address and stack pointer) in kfault_io_fails[tid]. As it resumes the thread (after the
delay, when the call is held too: a holder killed before that leaves the real result), the
holder replaces the result register with -errno, only while the registers are still those. A
handled signal delivered first in the same return has set up its handler's frame (ip and sp
moved, ax zeroed for the handler, the real result saved in the frame): writing then would not
fail the call and would change the handler's registers, so the real result stands and the call
is counted passed (kfault_io_missed). Replacing it at this stop is what the application sees:
the kernel's restart of an interrupted call (-ERESTART*) and a later handler's frame both read
the register after the stop.

Fail-safe: the holder is a child process of the agent that gets SIGTERM when the agent dies
(PR_SET_PDEATHSIG) and then tells BPF to stop no more processes for it (kfault_io_holders),
releases what it holds and resumes what BPF stopped. If it dies harder (the OOM killer, a
kill -9), the agent, which watches it, does that last part for it (let_go_for_dead_holder),
and the kernel detaches its tracees and resumes any it held (an fsync it was to fail returns
its real result); the pending signal is then delivered for real, so the
holder picks, per process, a signal whose default action is to ignore it, one the process
doesn't catch if it can (pick_hold_signal: a Go program catches both, harmlessly). Processes
that block both get no latency (kfault_io_traced says 0: BPF passes their calls).
"""
import ctypes
import errno
import heapq
import logging
import mmap
import os
import select
import signal
import threading
import time

from kfault_agent.kernel import children

log = logging.getLogger(__name__)

PTRACE_CONT = 7
PTRACE_POKEUSER = 6
PTRACE_GETREGS = 12
PTRACE_SEIZE = 0x4206
PTRACE_LISTEN = 0x4208
PTRACE_O_TRACECLONE = 0x8
PTRACE_O_TRACEFORK = 0x2
PTRACE_O_TRACEVFORK = 0x4
PTRACE_O_TRACEEXEC = 0x10
# Every thread and process the target makes is ours from its first instruction; an exec
# stops once, so the hold signal is chosen again for the new program.
SEIZE_OPTIONS = PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACEEXEC
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_STOP = 128
WALL = 0x40000000
STOP_SIGNALS = {signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}
# Default action "ignore": if the holder dies mid-hold, delivering one changes nothing (or
# runs a handler that takes a stray one as nothing: pick_hold_signal).
HOLD_SIGNALS = (signal.SIGURG, signal.SIGWINCH)
# The holder sleeps until something is due: a tracee's stop (SIGCHLD), a release (its time), a
# process BPF stopped for it (kfault_io_stop_bell), or the next look at the cgroup's processes.
# That look takes a newcomer before its first delayed call (and marks the files it opened
# before joining, which the syscall tracepoints match by fd); one that calls sooner is stopped
# by BPF and rings the bell. Each look costs the node a little: every 0.2 s it cost a loop
# on another CPU 1% more time (make kernel-bench, one emulated CPU thread).
RESCAN_S = 1.0
# On the way out, after telling BPF to stop no more processes: time for a program that
# decided to stop one before that to finish, so the stop is seen and ended.
STOP_GRACE_S = 0.05
# A signal mask blocking all that can be blocked is a moment's: a thread starting (glibc's
# pthread_create blocks all around clone) or a shell's child between fork and exec. A signal
# blocked in it is delivered (and held) a moment later; a signal blocked on its own is one the
# process may take with sigwait or signalfd, so it can't be ours.
ALL_BLOCKABLE = ((1 << 64) - 1) & ~(1 << (signal.SIGKILL - 1)) & ~(1 << (signal.SIGSTOP - 1))

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)
_libc.ptrace.restype = ctypes.c_long


class UserRegs(ctypes.Structure):
    """x86_64's struct user_regs_struct (sys/user.h), what PTRACE_GETREGS fills."""
    _fields_ = [(name, ctypes.c_ulonglong) for name in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi",
        "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs")]


RAX_OFFSET = UserRegs.rax.offset     # PTRACE_POKEUSER's address of the result register


def ptrace(request, tid, data=0, addr=0):
    if _libc.ptrace(request, tid, ctypes.c_void_p(addr), ctypes.c_void_p(data)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace({request:#x}, {tid}): {os.strerror(err)}")


def fail_returning_call(tid, nr, ip, sp, error):
    """Make the call `tid` returns from (stopped there) return -error, if its registers are
    still those of that return: orig_rax the syscall, rip and rsp where it resumes. False,
    changing nothing, if they are not (a handler's frame was set up first)."""
    regs = UserRegs()
    ptrace(PTRACE_GETREGS, tid, ctypes.addressof(regs))
    if (regs.orig_rax, regs.rip, regs.rsp) != (nr, ip, sp):
        return False
    ptrace(PTRACE_POKEUSER, tid, -error & (1 << 64) - 1, RAX_OFFSET)
    return True


def _signal_mask(status_text, field):
    for line in status_text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    return 0


def pick_hold_signal(caught, blocked):
    """The first of HOLD_SIGNALS not blocked on its own in `blocked` (a mask of ALL_BLOCKABLE
    is a moment's), one not in the `caught` mask first; None if the process blocks both.

    While the holder runs, the signal never reaches the process: the holder takes it at its
    delivery stop and suppresses it. Only if the holder is killed mid-hold is it delivered:
    to nothing, if not caught (both are ignored by default); if caught, to a handler that takes
    a stray one as nothing. Every Go program catches both: SIGURG is the runtime's preemption
    request, which it expects from anyone, and SIGWINCH asks a terminal program to look at its
    window size again. Passing over caught ones left Go servers (etcd among them) with no
    latency at all."""
    own = 0 if blocked & ALL_BLOCKABLE == ALL_BLOCKABLE else blocked
    free = [int(sig) for sig in HOLD_SIGNALS if not own & (1 << (sig - 1))]
    not_caught = [sig for sig in free if not caught & (1 << (sig - 1))]
    return (not_caught or free or [None])[0]


def hold_signal_for(tgid):
    """The signal to hold `tgid` by (pick_hold_signal), or None."""
    try:
        with open(f"/proc/{tgid}/status", encoding="ascii") as handle:
            status = handle.read()
    except OSError:
        return None
    return pick_hold_signal(_signal_mask(status, "SigCgt"), _signal_mask(status, "SigBlk"))


def tracer_of(tid):
    """The pid tracing `tid` (0: none), or None if it is gone."""
    try:
        with open(f"/proc/{tid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return 0


PF_IO_WORKER = 0x10     # linux/sched.h: an io_uring kernel thread of the process


def is_io_thread(tid):
    """Is `tid` an io_uring kernel thread (flags, the 9th field of /proc/TID/stat)?"""
    try:
        with open(f"/proc/{tid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return bool(int(fields[6]) & PF_IO_WORKER)
    except (OSError, IndexError, ValueError):
        return False


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


class StopBell:
    """kfault_io_stop_bell, the BPF ring buffer rung when a process is stopped for a holder:
    readable (poll) while it holds records. Every holder sleeps on it and empties it when it
    wakes, by moving the consumer position up to the producer's. Records are not read: the
    stopped map says who stopped. Not libbpf's consumer (bcc's ring_buffer_consume): several
    holders empty one ring, and a consumer walking records while another moves the position can
    read a length from reused space and move past the producer; this never does. A position
    set back by a slower holder leaves the ring readable, so some holder wakes and empties it
    again."""

    def __init__(self, map_fd):
        page = mmap.PAGESIZE
        self.fd = map_fd
        # the ring's layout (kernel/bpf/ringbuf.c): the consumer's position on the first page,
        # the only one user space may write; the producer's on the second
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._producer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)

    def empty(self):
        self._consumer[0:8] = self._producer[0:8]

    def close(self):
        self._consumer.close()
        self._producer.close()


class Holder:
    """Runs in its own process (see start_holder): ptrace stops are reported to the tracer's
    process by waitpid, which must not reap the agent's other children.

    `on_process(tgid)` is called for each process as the holder takes it (found in the cgroup,
    forked there, or after it execs): the engine marks its open files and directories.
    `ready_fd` gets a byte once the processes already in the cgroup are held."""

    def __init__(self, cgroup_dir, holds, traced, stopped, stop_bell_fd, control_fd, on_process=None,
                 ready_fd=None, holders=None, slot=0, fails=None, missed=None):
        self.cgroup_dir = cgroup_dir
        self.holds = holds            # bcc table kfault_io_holds: tid -> ns
        self.fails = fails            # bcc table kfault_io_fails: tid -> the failure to give at its stop
        self.missed = missed          # bcc table kfault_io_missed: slot -> failures not given
        self.traced = traced          # bcc table kfault_io_traced: tgid -> signal (0: can't hold)
        self.stopped = stopped        # bcc table kfault_io_stopped: tgids BPF stopped for us
        self.stop_bell_fd = stop_bell_fd  # kfault_io_stop_bell's map fd (StopBell)
        self.holders = holders        # bcc table kfault_io_holders: slot -> 1 while we take stops
        self.slot = slot
        self.stopping = {}            # tgid BPF stopped that we took -> its threads whose stop is ours
        self.continuing = set()       # tgids we sent SIGCONT to end that stop: swallow it
        self.control_fd = control_fd  # readable when the agent asks us to stop (or dies)
        self.signal_of = {}           # tgid we trace -> its hold signal
        self.tgid_of = {}             # tid -> tgid
        self.held = []                # heap of (release at, tid)
        self.failing = {}             # held tid -> (nr, ip, sp, errno, slot): the failure to give as it resumes
        self.on_process = on_process or (lambda tgid: None)
        self.ready_fd = ready_fd
        self.leaving = False

    def run(self):
        next_scan = 0.0
        # The agent's death sends SIGTERM: finish the loop, then let go of everything. (A flag,
        # not an exception: one raised between a waitpid and the answer to its stop would
        # leave that stop unanswered.)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "leaving", True))
        # A tracee's stop sends us SIGCHLD: its handler does nothing, the byte Python writes for
        # it wakes the select below (also when it arrives just before it).
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        bell = StopBell(self.stop_bell_fd)
        try:
            self._seize_new_processes()
            self._set_taking_stops(True)
            if self.ready_fd is not None:
                os.write(self.ready_fd, b"r")
                os.close(self.ready_fd)
            rang = True
            while not self.leaving:
                now = time.monotonic()
                if rang or now >= next_scan:
                    # Emptied before the map is read: a process stopped after this rings it again.
                    bell.empty()
                    # Stops first: a process BPF stopped is taken as such, also when the rescan
                    # would find it in the same round.
                    self._take_stopped()
                if now >= next_scan:
                    self._seize_new_processes()
                    next_scan = now + RESCAN_S
                self._reap_stops()
                self._release_due()
                wait = min([next_scan - time.monotonic()] + [at - time.monotonic() for at, _ in self.held[:1]])
                ready = select.select([self.control_fd, wake_read, bell.fd], [], [], max(0.0, wait))[0]
                if self.control_fd in ready:
                    return
                rang = bell.fd in ready
                if wake_read in ready:
                    while True:
                        try:
                            os.read(wake_read, 512)
                        except BlockingIOError:
                            break
        finally:
            self._let_go()
            bell.close()

    def _set_taking_stops(self, on):
        if self.holders is not None:
            self.holders[self.holders.Key(self.slot)] = self.holders.Leaf(1 if on else 0)

    def _let_go(self):
        """On the way out: BPF stops no more processes for us; then every stop and hold of
        ours ends, and what BPF stopped before is resumed (a process must never stay stopped)."""
        self._set_taking_stops(False)
        time.sleep(STOP_GRACE_S)
        try:
            self._reap_stops()              # stops reported and not answered yet
        except OSError as err:              # what follows must still run
            log.warning("holder for %s: answering the last stops: %s", self.cgroup_dir, err)
        self._release_all()
        for key in list(self.stopped.keys()):
            tgid = key.value
            if tgid in self.signal_of or tgid in cgroup_processes(self.cgroup_dir):
                self.stopping.setdefault(tgid, set())
                self.stopped.pop(key, None)
        for tgid in set(self.stopping) | self.continuing:
            _continue(tgid)
        for tgid in self.signal_of:
            self.traced.pop(self.traced.Key(tgid), None)

    def _take_stopped(self):
        """Seize the processes BPF stopped at their first delayed call (they joined the
        cgroup before we found them, or as we did); the stop ends in _reap_stops, with the
        call held."""
        for key in list(self.stopped.keys()):
            tgid = key.value
            if tgid not in self.signal_of:
                if tgid not in cgroup_processes(self.cgroup_dir):
                    continue                  # another holder's
                try:
                    self._seize_process(tgid)
                except OSError as err:
                    log.warning("can't hold pid %d, stopped for latency: %s; resuming it", tgid, err)
                    self.traced[self.traced.Key(tgid)] = self.traced.Leaf(0)
                    self.stopped.pop(key, None)
                    _continue(tgid)
                    continue
                self._adopt(tgid)
            try:     # the threads the stop is reported for: not io_uring's, which may not be ours
                tids = {tid for tid in map(int, os.listdir(f"/proc/{tgid}/task")) if tid in self.tgid_of}
            except OSError:
                tids = set()                  # gone
            self.stopping.setdefault(tgid, set()).update(tids)
            self.stopped.pop(key, None)

    def _seize_new_processes(self):
        self._reap_stops()      # children forked since the last scan are ours already
        for tgid in cgroup_processes(self.cgroup_dir):
            if tgid in self.signal_of or tgid == os.getpid():
                continue
            try:
                self._seize_process(tgid)
            except OSError as err:
                log.warning("can't hold pid %d: %s", tgid, err)
                continue
            self._adopt(tgid)

    def _seize_process(self, tgid):
        """Seize every thread of tgid, listing them again until no new one appears (a thread
        started by one we trace is ours anyway; one started by one we don't is not)."""
        seen = set()
        while True:
            tids = set(map(int, os.listdir(f"/proc/{tgid}/task"))) - seen
            if not tids:
                return
            for tid in tids:
                self._seize(tid, tgid)
            seen |= tids

    def _seize(self, tid, tgid):
        try:
            ptrace(PTRACE_SEIZE, tid, SEIZE_OPTIONS)
        except OSError as err:
            if err.errno == errno.ESRCH and tid != tgid:
                return                            # that thread exited
            # EPERM is also what a task we trace already (auto-attached, its first stop not
            # reaped yet) answers, and an io_uring kernel thread (io-wq worker, SQPOLL) where
            # the kernel refuses to trace one (6.18 allows it): BPF never asks us to hold them,
            # as they block every signal. Only someone else's tracee is an error.
            if err.errno == errno.EPERM and is_io_thread(tid):
                return
            if err.errno != errno.EPERM or tracer_of(tid) != os.getpid():
                raise
        self.tgid_of[tid] = tgid

    def _adopt(self, tgid, just_forked=False):
        """Pick tgid's hold signal now (again after an exec: handlers reset, and the shell that
        forked it may have blocked signals until then) and let the engine mark its files."""
        sig = hold_signal_for(tgid)
        self.signal_of[tgid] = sig
        if sig is None:
            # A shell's child may catch every hold signal until it execs: that is no news.
            (log.debug if just_forked else log.warning)(
                "pid %d catches or blocks every hold signal: no latency for it until it execs", tgid)
        self.traced[self.traced.Key(tgid)] = self.traced.Leaf(sig or 0)
        self.on_process(tgid)

    def _forget(self, tgid):
        """A process exited: its pid may be reused."""
        self.signal_of.pop(tgid, None)
        self.stopping.pop(tgid, None)
        self.continuing.discard(tgid)
        self.traced.pop(self.traced.Key(tgid), None)

    def _reap_stops(self):
        while True:
            try:
                tid, status = os.waitpid(-1, os.WNOHANG | WALL)
            except ChildProcessError:
                return
            if tid == 0:
                return
            if not os.WIFSTOPPED(status):
                if self.tgid_of.pop(tid, None) == tid:
                    self._forget(tid)
                continue
            sig, event = os.WSTOPSIG(status), status >> 16
            if tid not in self.tgid_of:         # a new thread or child process, auto-attached
                self.tgid_of[tid] = self._tgid(tid)
            tgid = self.tgid_of[tid]
            if sig == signal.SIGSTOP and event in (0, PTRACE_EVENT_STOP) and tgid not in self.stopping:
                self._take_stopped()    # BPF stopped it before we told it we trace it: its record says so
            try:
                if event == PTRACE_EVENT_STOP and sig == signal.SIGSTOP and tgid in self.stopping:
                    self._end_group_stop(tid, tgid)
                elif sig == signal.SIGSTOP and not event and tgid in self.stopping:
                    del self.stopping[tgid]     # BPF's SIGSTOP, taken before it stopped anyone
                    if not self._hold(tid):
                        ptrace(PTRACE_CONT, tid)    # swallowed either way
                elif sig == signal.SIGCONT and not event and tgid in self.continuing:
                    self.continuing.discard(tgid)
                    ptrace(PTRACE_CONT, tid)    # ours: the process never sees it
                elif event == PTRACE_EVENT_STOP:
                    # group-stop (SIGSTOP and friends) stays a stop; anything else runs on.
                    ptrace(PTRACE_LISTEN if sig in STOP_SIGNALS else PTRACE_CONT, tid)
                elif event == PTRACE_EVENT_EXEC:
                    self._adopt(tgid)
                    ptrace(PTRACE_CONT, tid)
                elif event:
                    ptrace(PTRACE_CONT, tid)    # fork/clone events
                elif sig == self.signal_of.get(tgid) and self._hold(tid):
                    pass
                else:
                    ptrace(PTRACE_CONT, tid, sig)   # not ours: deliver it
            except OSError as err:
                if err.errno != errno.ESRCH:
                    raise

    def _end_group_stop(self, tid, tgid):
        """The process stopped (BPF's SIGSTOP) before we seized it: SIGCONT ends the stop
        (else it comes back when we detach); the thread whose call was delayed stays held."""
        if tgid not in self.continuing:
            self.continuing.add(tgid)
            _continue(tgid)
        self.stopping[tgid].discard(tid)
        if not self.stopping[tgid]:
            del self.stopping[tgid]
        if not self._hold(tid):
            ptrace(PTRACE_CONT, tid)

    def _tgid(self, tid):
        try:
            with open(f"/proc/{tid}/status", encoding="ascii") as handle:
                for line in handle:
                    if line.startswith("Tgid:"):
                        tgid = int(line.split()[1])
                        if tgid not in self.signal_of:
                            self._adopt(tgid, just_forked=True)
                        return tgid
        except OSError:
            pass
        return tid

    def _hold(self, tid):
        """Take the stop of `tid` if BPF asked for it: hold it for its delay, then fail the call
        it returns from (_resume); False if neither was asked (a real signal: deliver it)."""
        self._take_failure(tid)
        key = self.holds.Key(tid)
        try:
            delay_ns = self.holds[key].value
            del self.holds[key]
        except KeyError:
            if tid not in self.failing:
                return False
            delay_ns = 0                        # a fault alone: resumed at once (_release_due)
        heapq.heappush(self.held, (time.monotonic() + delay_ns / 1e9, tid))
        return True

    def _take_failure(self, tid):
        """The failure BPF recorded for the call `tid` returns from, kept until it is resumed:
        if we die before, the kernel resumes it with the call's real result."""
        if self.fails is None:
            return
        key = self.fails.Key(tid)
        try:
            fail = self.fails[key]
            del self.fails[key]
        except KeyError:
            return
        self.failing[tid] = (fail.nr, fail.ip, fail.sp, fail.error, fail.slot)

    def _fail(self, tid, nr, ip, sp, error, slot):
        """Give the failure; if the registers are no longer the call's return, count it missed."""
        if fail_returning_call(tid, nr, ip, sp, error):
            return
        log.debug("tid %d: a handler's frame came first; its call's real result stands", tid)
        if self.missed is not None:
            key = self.missed.Key(slot)
            self.missed[key] = self.missed.Leaf(self.missed[key].value + 1)

    def _release_due(self):
        now = time.monotonic()
        while self.held and self.held[0][0] <= now:
            _, tid = heapq.heappop(self.held)
            self._resume(tid)

    def _release_all(self):
        while self.held:
            self._resume(heapq.heappop(self.held)[1])

    def _resume(self, tid):
        failure = self.failing.pop(tid, None)
        try:
            if failure:
                self._fail(tid, *failure)
            ptrace(PTRACE_CONT, tid, 0)         # the hold signal is swallowed here
        except OSError as err:
            if err.errno != errno.ESRCH:
                raise


def let_go_for_dead_holder(cgroup_dir, holders, slot, stopped, traced):
    """What a holder does on its way out, done by the agent for one that was killed: BPF stops
    no more processes for it, what BPF stopped is resumed, and the cgroup's processes are no
    longer signalled (the kernel has resumed whatever the holder held)."""
    holders[holders.Key(slot)] = holders.Leaf(0)
    time.sleep(STOP_GRACE_S)          # a program that decided to stop one just before
    members = cgroup_processes(cgroup_dir)
    for key in list(stopped.keys()):
        if key.value in members:
            stopped.pop(key, None)
            _continue(key.value)
    for key in list(traced.keys()):
        if key.value in members:
            traced.pop(key, None)


def _continue(tgid):
    try:
        os.kill(tgid, signal.SIGCONT)
    except ProcessLookupError:
        pass


class HolderProcess:
    """A Holder in a forked child of the agent, which dies with the agent."""

    def __init__(self, cgroup_dir, holds, traced, stopped, stop_bell_fd, on_process=None, ready_timeout_s=5.0,
                 holders=None, slot=0, fails=None, missed=None):
        ready_read, ready_write = os.pipe()
        self._stopping = False
        try:
            self.pid, self._write_fd = children.spawn(
                lambda read_fd: Holder(cgroup_dir, holds, traced, stopped, stop_bell_fd, read_fd, on_process,
                                       ready_write, holders, slot, fails, missed).run(),
                signal.SIGTERM, f"holder for {cgroup_dir}")
        finally:
            os.close(ready_write)
        if holders is not None:
            pidfd = os.pidfd_open(self.pid)     # before anyone can reap it: stop() is the only one
            threading.Thread(target=self._watch, args=(pidfd, cgroup_dir, holders, slot, stopped, traced),
                             name=f"kfault-holder-watch-{self.pid}", daemon=True).start()
        try:
            # Arm only once the cgroup's processes are held: else their first calls pass.
            if not select.select([ready_read], [], [], ready_timeout_s)[0] or not os.read(ready_read, 1):
                self.stop()
                raise RuntimeError(f"the holder for {cgroup_dir} did not start within {ready_timeout_s}s")
        finally:
            os.close(ready_read)

    def _watch(self, pidfd, cgroup_dir, holders, slot, stopped, traced):
        """A holder killed on its own can't let go of what BPF stops for it: do it here."""
        try:
            select.select([pidfd], [], [])
            if not self._stopping:
                log.warning("the holder for %s (pid %d) died: latency there ends, and what it held "
                            "or BPF stopped for it is resumed", cgroup_dir, self.pid)
                let_go_for_dead_holder(cgroup_dir, holders, slot, stopped, traced)
        finally:
            os.close(pidfd)

    def stop(self):
        """Resume every held thread and detach (the tracer's exit detaches its tracees)."""
        if self.pid:
            self._stopping = True
            children.finish(self.pid, self._write_fd)
            self.pid = None
