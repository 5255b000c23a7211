"""StressChaos's stressors: `python -m kfault_agent.stressor CONFIG_JSON FD`, started by the
agent (engines/stressfault.py) inside a child cgroup of the target container's, so that all
it uses counts against the container's limits and can be told apart from the application's.

Ours rather than stress-ng: its --cpu-load is an open-loop duty cycle of wall time, which
can't see a cpu.max quota (stress-ng #375, #412); ours hold CPU time by a closed loop on the
CPU clock, the time the kernel charges to the cgroup (its cpu.stat). Memory is populated at
once (MADV_POPULATE_WRITE) and then only held: no CPU once held.

Lifetime: the agent forks this with PR_SET_PDEATHSIG (kernel/children.py), which survives the
exec; each worker has its own against this process. The pipe on FD carries the lease: a
CLOCK_MONOTONIC deadline a line, pushed at every renewal; past it, or at the pipe's end (the
agent finished it or died), every worker is killed and this process exits. The kernel holds
the lease too (an interval timer, LEASE_BACKSTOP_S later): a memory worker the OOM killer must
spare can leave this process no page to fault in, and it then never runs its own check.
"""
import ctypes
import errno
import json
import mmap
import os
import select
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
MADV_POPULATE_WRITE = 23        # Linux 5.14: fails with ENOMEM instead of looping in the fault handler
# Unaccounted: the kernel's heuristic overcommit refuses one mapping above RAM + swap, and a size
# above what the node has is the container's memory.max's to judge (Python's mmap lacks the name).
MAP_NORESERVE = 0x4000
POPULATE_CHUNK = 16 << 20
CPU_SLICE_S = 0.005             # longest burn or sleep between two looks at the clocks
CPU_DEBT_S = 0.5                # CPU time owed beyond this (the worker was starved) is forgiven, not burst
HDD_BLOCK = 1 << 20
LEASE_BACKSTOP_S = 1.0          # the kernel ends this process this long past the lease (_arm_backstop)
# What each process calls itself (/proc/PID/comm): the agent counts stressors by it.
COMM = {"main": "kfault-stress", "cpu": "kfault-cpu", "memory": "kfault-memory", "hdd": "kfault-hdd"}

_libc = ctypes.CDLL(None, use_errno=True)


def _name(kind):
    _libc.prctl(PR_SET_NAME, ctypes.c_char_p(COMM[kind].encode()), 0, 0, 0)


def _oom_score_adj(value):
    with open("/proc/self/oom_score_adj", "w", encoding="ascii") as handle:
        handle.write(str(value))


def burn_cpu(share):
    """Hold `share` of one CPU: burn while the CPU time got lags share x wall time, sleep while
    it leads. Both clocks are the kernel's (CLOCK_MONOTONIC, this process's CPU clock)."""
    if share <= 0:
        while True:
            signal.pause()
    wall0, cpu0 = time.monotonic(), time.process_time()
    while True:
        now, used = time.monotonic(), time.process_time() - cpu0
        owed = share * (now - wall0) - used
        if owed > CPU_DEBT_S * share:       # starved (the CPU was busy): hold the share from now on
            wall0 += (owed - CPU_DEBT_S * share) / share
            owed = CPU_DEBT_S * share
        if owed > 0:
            until = time.process_time() + min(owed, CPU_SLICE_S)
            while time.process_time() < until:
                pass
        else:
            time.sleep(min(-owed / share, CPU_SLICE_S))


def hold_memory(size, oom_score_adj=0):
    """Map `size` bytes and make them resident; then hold them, using no CPU. A charge the
    container's memory.max refuses ends in its OOM killer (this worker, or another process of
    the container); were none killable, the populate fails with ENOMEM and what is held stays."""
    _oom_score_adj(oom_score_adj)
    page = mmap.PAGESIZE
    size = -(-size // page) * page
    if size > 0:
        # Between two PROT_NONE pages, so that no neighbour merges with it: the agent finds the
        # buffer in /proc/PID/smaps by its size (kernel/stress.py's held_memory).
        buffer = mmap.mmap(-1, size + 2 * page, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)
        start = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
        for guard in (start, start + page + size):
            _libc.mprotect(ctypes.c_void_p(guard), ctypes.c_size_t(page), 0)
        for offset in range(page, page + size, POPULATE_CHUNK):
            length = min(POPULATE_CHUNK, page + size - offset)
            try:
                buffer.madvise(MADV_POPULATE_WRITE, offset, length)
            except OSError as err:
                if err.errno != 22:     # EINVAL: a kernel before 5.14; ENOMEM: refused, hold what we have
                    break
                for page in range(offset, offset + length, mmap.PAGESIZE):
                    buffer[page] = 1
    while True:
        signal.pause()


def write_disk(directory, size):
    """Write `size` bytes to an unlinked file in `directory` (inside the container), sync, and
    start over. Unlinked at once: a killed worker leaves no file behind."""
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600)
    except OSError:             # a file system without O_TMPFILE (overlayfs before 6.6)
        path = os.path.join(directory, f".kfault-hdd-{os.getpid()}")
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.unlink(path)
    block = os.urandom(HDD_BLOCK)
    while True:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            for _ in range(max(1, size // HDD_BLOCK)):
                os.write(fd, block)
            os.fsync(fd)
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):    # a full disk: start over, as stress-ng does
                raise
        os.ftruncate(fd, 0)


def _worker(kind, run, *args):
    # Taken before the fork: read in the child, a parent that died before the child first ran
    # (under TCG, a SIGKILLed agent's stressor can die before its last workers are scheduled)
    # would already be init, and the check below would pass a worker no death signal will end.
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:      # this process died before the prctl
            os._exit(0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _name(kind)
        if kind != "memory":
            _oom_score_adj(0)       # this process's may be lower (main): only the memory workers' is asked
        run(*args)
    except BaseException:  # noqa: BLE001 - a forked worker must never return
        code = 1
    os._exit(code)


def start_workers(config):
    pids = []
    cpu = config.get("cpu")
    if cpu:
        pids += [_worker("cpu", burn_cpu, cpu["share"]) for _ in range(cpu["workers"])]
    memory = config.get("memory")
    if memory:
        pids += [_worker("memory", hold_memory, memory["bytes"], memory["oom_score_adj"])
                 for _ in range(memory["workers"])]
    hdd = config.get("hdd")
    if hdd:
        pids += [_worker("hdd", write_disk, hdd["dir"], hdd["bytes"]) for _ in range(hdd["workers"])]
    return pids


def _arm_backstop(deadline_ns):
    """SIGALRM LEASE_BACKSTOP_S past the deadline. Left at its default action, it is fatal,
    which the kernel turns into a SIGKILL of this process (then of its workers: their
    PR_SET_PDEATHSIG): it ends even a process whose page faults are retried for ever (a full
    memory.max where the OOM killer has nothing left it may kill), which the select below can't."""
    left_s = (deadline_ns - time.monotonic_ns()) / 1e9 + LEASE_BACKSTOP_S
    signal.setitimer(signal.ITIMER_REAL, max(left_s, 0.001))


def wait_for_the_end(fd, deadline_ns):
    """Read deadlines from the pipe until the last one passes or the pipe ends."""
    buffer = b""
    while True:
        left_s = (deadline_ns - time.monotonic_ns()) / 1e9
        if left_s <= 0:
            return "lease"
        ready, _, _ = select.select([fd], [], [], left_s)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return "finished"
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        if lines:
            deadline_ns = int(lines[-1])
            _arm_backstop(deadline_ns)


def main(argv):
    config, fd = json.loads(argv[0]), int(argv[1])
    _arm_backstop(config["deadline_ns"])
    _name("main")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if config.get("memory"):
        # Never a likelier OOM victim than the memory workers: its death ends them (PDEATHSIG),
        # which would defeat an oomScoreAdj of -1000 (keep the stressor, kill the application).
        _oom_score_adj(min(0, config["memory"]["oom_score_adj"]))
    pids = []
    try:
        pids = start_workers(config)
        wait_for_the_end(fd, config["deadline_ns"])
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids:
            os.waitpid(pid, 0)


if __name__ == "__main__":
    main(sys.argv[1:])
