"""What ends `kfault run` and `kfault agent`: SIGINT or SIGTERM, at any moment.

The command installs it first thing, before anything is loaded or placed: from then on a
signal is written down (never a KeyboardInterrupt raised in the middle of a step, which
would skip the step's own undoing), and the start checks it between its steps (check()),
so a signal that comes during a compile ends the start as soon as that compile returns,
with what was made taken back. A step that waits on a child process (a compiler, a probe)
has that child ended by the signal (ending_children), so it returns at once. Standard library
only: it must cost nothing to import.
"""
import contextlib
import os
import select
import signal
import time


class Stopped(Exception):
    """SIGINT or SIGTERM came while starting: the caller takes back what it made, and exits.
    `abandoned`: a step still runs in another thread (a compile): exit without waiting for it."""
    abandoned = False


class StopSignal:
    """Set by SIGINT or SIGTERM: what ends `kfault run` and `kfault agent`. Not a
    threading.Event: Python runs a handler in the main thread between two of its bytecodes,
    which can be while that thread holds the Event's own lock (inside Event.wait), and a
    handler that set it would wait for that lock for ever; nor a pipe the handler writes: a
    signal that comes just before the wait's poll would be seen only after it. The
    interpreter's own C handler writes the signal's number into a pipe (set_wakeup_fd) at once."""

    STOPPING = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self._read, select.POLLIN)
        self._stopped = False
        self._spared = None     # inside ending_children: the children that were there before
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for sig in self.STOPPING:
            signal.signal(sig, self._on_signal)     # handled (the pipe says so), not fatal

    def wait(self, timeout=None):
        """True once SIGINT or SIGTERM came; False after `timeout` seconds without."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stopped:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._poll.poll(None if left is None else left * 1000):
                return False
            self._stopped = any(number in self.STOPPING for number in os.read(self._read, 64))
        return True

    def _on_signal(self, *_):
        """The pipe already says it. Inside ending_children, end the step's children too: the
        main thread runs this even while it waits on one (the wait is retried after)."""
        if self._spared is None:
            return
        for pid in child_processes() - self._spared:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    @contextlib.contextmanager
    def ending_children(self):
        """For one step of a start: a stop signal ends the child processes the step started
        (the helpers started before it are spared), so a step waiting on one returns."""
        self._spared = child_processes()
        try:
            yield
        finally:
            self._spared = None

    def check(self):
        """Raise Stopped if SIGINT or SIGTERM came: between two steps of a start."""
        if self.wait(0):
            raise Stopped("stopped by a signal while starting")

    def close(self):
        """Back to the handlers Python starts with; the pipe closed."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.close(self._read)
        os.close(self._write)


def child_processes():
    """The pids of this process's children, whichever of its threads started them."""
    me, found = str(os.getpid()), set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[1] == me:     # the field after the state: ppid
            found.add(int(name))
    return found
