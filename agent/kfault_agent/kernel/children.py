"""Helper processes that die with the agent: the I/O holders and the thaw guard.

PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process, and
the agent forks on behalf of gRPC pool threads. So every such child is forked by one thread
that lives as long as the agent. Each child reads a pipe whose write end the agent keeps:
closing it (finish, or the agent's death) is how the child learns to finish. A child forked
later would inherit its older siblings' write ends, and an older sibling would then never see
its pipe close: every child closes the ones it inherits. Likewise the fds of BPF links
(hold_back): a child that kept one would keep its program attached after the agent detached
it, as long as the child lives.
"""
import ctypes
import logging
import os
import queue
import select
import signal
import threading

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_requests = queue.Queue()
_forker = None
_forker_lock = threading.Lock()
# The write end of each live child's pipe, as the agent holds them. Changed and forked under
# one lock, so a child forked while another is finished can't keep its pipe open.
_parent_ends = set()
_parent_ends_lock = threading.Lock()
# fds no child may keep (hold_back), under the same lock.
_held_back = set()


def spawn(child_main, death_signal, what):
    """Run child_main(read_fd) in a forked child that gets `death_signal` when the agent
    dies. Returns (pid, write_fd)."""
    global _forker
    with _forker_lock:
        if _forker is None:
            _forker = threading.Thread(target=_serve_forks, name="kfault-forker", daemon=True)
            _forker.start()
    done = queue.Queue(maxsize=1)
    _requests.put((child_main, death_signal, what, done))
    result = done.get()
    if isinstance(result, BaseException):
        raise result
    return result


def _serve_forks():
    while True:
        child_main, death_signal, what, done = _requests.get()
        try:
            done.put(_fork(child_main, death_signal, what))
        except BaseException as err:  # noqa: BLE001 - handed to the caller
            done.put(err)


def hold_back(open_fd):
    """open_fd(), and the fd it returns kept from every child forked from now on (each closes
    it first thing). Opened under the forks' lock: a child forked meanwhile can't get it."""
    with _parent_ends_lock:
        fd = open_fd()
        _held_back.add(fd)
    return fd


def close_held_back(fd):
    with _parent_ends_lock:
        _held_back.discard(fd)
        os.close(fd)


def finish(pid, write_fd, timeout_s=None):
    """Close a child's pipe, its cue to finish, and reap it. With `timeout_s`, a child still
    there after it is SIGKILLed, and one still there after as long again is left (logged):
    the caller goes on. Returns whether the child was reaped."""
    with _parent_ends_lock:
        _parent_ends.discard(write_fd)
        os.close(write_fd)
    if timeout_s is None:
        os.waitpid(pid, 0)
        return True
    if _reaped(pid, timeout_s):
        return True
    log.warning("child %d did not finish within %g s of its pipe's end: killing it", pid, timeout_s)
    os.kill(pid, signal.SIGKILL)     # an unreaped child's pid is still ours: it can't name another
    if _reaped(pid, timeout_s):
        return True
    log.error("child %d still not gone %g s after SIGKILL (uninterruptible in the kernel): left", pid, timeout_s)
    return False


def _reaped(pid, timeout_s):
    """Reap `pid` if it exits within `timeout_s` (its pidfd is readable once it has)."""
    pidfd = os.pidfd_open(pid)
    try:
        select.select([pidfd], [], [], timeout_s)
    finally:
        os.close(pidfd)
    return os.waitpid(pid, os.WNOHANG)[0] == pid


def _fork(child_main, death_signal, what):
    parent = os.getpid()
    with _parent_ends_lock:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            _child(child_main, death_signal, what, parent, read_fd, (write_fd, *_parent_ends, *_held_back))
        _parent_ends.add(write_fd)
    os.close(read_fd)
    return pid, write_fd


def _child(child_main, death_signal, what, parent, read_fd, not_kept):
    """The forked child: never returns."""
    code = 0
    try:
        for fd in not_kept:
            os.close(fd)
        _libc.prctl(PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() != parent:     # the agent died before the prctl
            os._exit(0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # a terminal's Ctrl-C is the agent's
        child_main(read_fd)
    except BaseException:  # noqa: BLE001 - a forked child must never return
        log.exception("%s failed", what)
        code = 1
    os._exit(code)
