"""A victim process for file I/O faults, run in a target cgroup by the tests, demo and bench.

  python -m kfault_lab.io_probe [options] CGROUP_DIR 'JSON list of calls'

It moves itself into CGROUP_DIR, prints "ready <pid>", waits for a line on stdin (so the agent
can arm and hold it first), then makes each call, timing it, while a second thread ticks
every millisecond (a held thread must not stop it). Calls:
  ["read", PATH, COUNT]    open PATH, then COUNT x pread 1 byte at 0
  ["write", PATH, COUNT]   open PATH for append (created), then COUNT x write 1 byte
  ["open", PATH, COUNT]    COUNT x open(PATH, O_WRONLY|O_CREAT) and close
  ["fsync", PATH, COUNT]   open PATH, then COUNT x fsync (also "fdatasync", "sync_file_range")
  ["mkdir", PATH, COUNT]   COUNT x mkdir PATH (timed), then rmdir it
  ["rmdir", PATH, COUNT]   COUNT x mkdir PATH, then rmdir it (timed)
  ["unlink", PATH, COUNT]  COUNT x create PATH, then unlink it (timed)
  ["getattr", PATH, COUNT] COUNT x create PATH, stat it (timed), remove it
  ["readdir", PATH, COUNT] COUNT x make the directory PATH, list it (timed), remove it
  ["setattr", PATH, COUNT] COUNT x create PATH, chmod it (timed), remove it
  ["create", PATH, COUNT]  COUNT x create PATH (O_CREAT | O_EXCL, timed), remove it
  ["rename", PATH, COUNT]  COUNT x create PATH, rename it to PATH.renamed (timed), remove both
  ["fstat", PATH, COUNT]   open PATH, then COUNT x fstat
  ["fchmod", PATH, COUNT]  open PATH, then COUNT x fchmod
  ["readdir_fd", PATH, COUNT]  open the directory PATH, then COUNT x list it through the fd
  ["fifo_open", PATH, COUNT]  COUNT x open the FIFO PATH to read (timed), which waits for the
                              writer a thread opens 0.2 s later
  ["fork_read", PATH, COUNT]  COUNT x fork a child that opens PATH and preads 1 byte (a
                              server forking per request); the child's own timing is kept
  ["chdir", PATH, COUNT]   chdir to PATH (COUNT times)
  ["fchdir", PATH, COUNT]  open the directory PATH now, fchdir to it (COUNT times), close it
  ["wait", "", COUNT]      wait for COUNT lines on stdin (the test looks at something first)
  ["sh", SCRIPT, COUNT]    COUNT x `sh -c SCRIPT` (timed); its errno is 5 where it exited non-zero
PATH may be relative (to --cwd), or "DIR//NAME": openat(DIR's fd, NAME).
Options, for how real programs reach their files:
  --cwd DIR       chdir there before "ready"
  --open-early    open each call's file before "ready" (for DIR//NAME, only DIR): files and
                  directories a long-running process opened before the experiment
  --in-thread     make the calls in a thread started after "go"
  --no-wait       don't wait for "go": a process that joins the cgroup and works at once
  --signals       while the calls run, a handled SIGALRM keeps arriving: from an interval timer
                  every 200 us (to the process) and from a thread (to the calling thread), so
                  some arrive as a call returns
Prints one JSON object: {"calls": [{"call", "path", "ms": [...], "errno": [...]}], "ticks": N,
"signals": handled SIGALRMs}.
An errno of 0 is success; a failed open has no fd to use, so later calls on it are skipped.
"""
import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time

SYNC_FILE_RANGE_WRITE = 2
_libc = ctypes.CDLL(None, use_errno=True)
_libc.sync_file_range.argtypes = (ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint)


def sync_file_range(fd):
    """sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE): the whole file (Python has no wrapper)."""
    if _libc.sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE) < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


FLAGS = {"read": os.O_RDONLY, "write": os.O_WRONLY | os.O_CREAT | os.O_APPEND, "fsync": os.O_RDONLY,
         "fdatasync": os.O_RDONLY, "sync_file_range": os.O_RDONLY,
         "fstat": os.O_RDONLY, "fchmod": os.O_RDONLY, "readdir_fd": os.O_RDONLY | os.O_DIRECTORY}


def timed(fn):
    start = time.perf_counter()
    try:
        fn()
        error = 0
    except OSError as err:
        error = err.errno
    return (time.perf_counter() - start) * 1000, error


def open_at(path, flags, dirs):
    """open PATH, or openat(DIR's fd, NAME) for "DIR//NAME" (DIR opened early, or now)."""
    if "//" not in path:
        return os.open(path, flags, 0o644)
    directory, name = path.split("//", 1)
    if directory not in dirs:
        dirs[directory] = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    return os.open(name, flags, 0o644, dir_fd=dirs[directory])


def fork_reads(path, count):
    ms, errors = [], []
    for _ in range(count):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            took, error = timed(lambda: os.pread(os.open(path, os.O_RDONLY), 1, 0))
            os.write(write_end, json.dumps([took, error]).encode())
            os._exit(0)
        os.close(write_end)
        took, error = json.loads(os.read(read_end, 256))
        os.close(read_end)
        os.waitpid(pid, 0)
        ms.append(took)
        errors.append(error)
    return {"call": "fork_read", "path": path, "ms": ms, "errno": errors}


def fifo_opens(path, count):
    ms, errors = [], []
    for _ in range(count):
        writer = threading.Timer(0.2, lambda: os.close(os.open(path, os.O_WRONLY)))
        writer.start()
        opened = []
        took, error = timed(lambda opened=opened: opened.append(os.open(path, os.O_RDONLY)))
        writer.join()
        for fd in opened:
            os.close(fd)
        ms.append(took)
        errors.append(error)
    return {"call": "fifo_open", "path": path, "ms": ms, "errno": errors}


def _discard(remove, path):
    try:
        remove(path)
    except OSError:
        pass


def _create(path):
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))


def _create_new(path):
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))


# Calls by path: (what makes the call possible, untimed; the timed call; what undoes both).
PATH_CALLS = {
    "mkdir": (lambda p: None, lambda p: os.mkdir(p), lambda p: _discard(os.rmdir, p)),
    "rmdir": (lambda p: _discard(os.mkdir, p), lambda p: os.rmdir(p), lambda p: _discard(os.rmdir, p)),
    "unlink": (_create, lambda p: os.unlink(p), lambda p: _discard(os.unlink, p)),
    "getattr": (_create, lambda p: os.stat(p), lambda p: _discard(os.unlink, p)),
    "readdir": (lambda p: _discard(os.mkdir, p), lambda p: os.listdir(p), lambda p: _discard(os.rmdir, p)),
    "setattr": (_create, lambda p: os.chmod(p, 0o600), lambda p: _discard(os.unlink, p)),
    "create": (lambda p: None, _create_new, lambda p: _discard(os.unlink, p)),
    "rename": (_create, lambda p: os.rename(p, p + ".renamed"),
               lambda p: [_discard(os.unlink, name) for name in (p, p + ".renamed")]),
}


def fchdir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fchdir(fd)
    finally:
        os.close(fd)


def shell(script):
    if subprocess.run(["sh", "-c", script], stdout=subprocess.DEVNULL, check=False).returncode:
        raise OSError(5, "the script failed")


# Calls that change where the process is, or run a shell: the timed call.
PLAIN_CALLS = {"chdir": os.chdir, "fchdir": fchdir, "wait": lambda _: sys.stdin.readline(), "sh": shell}


def run_call(call, path, count, early=None, dirs=None):
    ms, errors = [], []
    dirs = {} if dirs is None else dirs
    if call == "fork_read":
        return fork_reads(path, count)
    if call == "fifo_open":
        return fifo_opens(path, count)

    def record(fn):
        took, error = timed(fn)
        ms.append(took)
        errors.append(error)
        return error

    if call in PLAIN_CALLS:
        for _ in range(count):
            record(lambda: PLAIN_CALLS[call](path))
        return {"call": call, "path": path, "ms": ms, "errno": errors}

    if call in PATH_CALLS:
        prepare, timed_call, undo = PATH_CALLS[call]
        for _ in range(count):
            prepare(path)
            record(lambda: timed_call(path))
            undo(path)
    elif call == "open":
        for _ in range(count):
            holder = []
            if not record(lambda holder=holder: holder.append(open_at(path, os.O_WRONLY | os.O_CREAT, dirs))):
                os.close(holder[0])
    else:
        holder = [early] if early is not None else []
        if not holder and record(lambda: holder.append(open_at(path, FLAGS[call], dirs))):
            return {"call": call, "path": path, "ms": ms, "errno": errors, "open_failed": True}
        ms.clear()
        errors.clear()
        fd = holder[0]
        do = {"read": lambda: os.pread(fd, 1, 0), "write": lambda: os.write(fd, b"k"),
              "fsync": lambda: os.fsync(fd), "fdatasync": lambda: os.fdatasync(fd),
              "sync_file_range": lambda: sync_file_range(fd), "fstat": lambda: os.fstat(fd),
              "fchmod": lambda: os.fchmod(fd, 0o644), "readdir_fd": lambda: os.listdir(fd)}[call]
        for _ in range(count):
            record(do)
        os.close(fd)
    return {"call": call, "path": path, "ms": ms, "errno": errors}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="kfault_lab.io_probe")
    parser.add_argument("cgroup")
    parser.add_argument("calls", type=json.loads)
    parser.add_argument("--cwd")
    parser.add_argument("--open-early", action="store_true")
    parser.add_argument("--in-thread", action="store_true")
    parser.add_argument("--no-wait", action="store_true")
    parser.add_argument("--signals", action="store_true")
    return parser.parse_args(argv)


def open_early(calls, dirs):
    """The fd of each call's file, opened now (None for calls that open as they go)."""
    early = []
    for call, path, _ in calls:
        if "//" in path:
            directory = path.split("//", 1)[0]
            dirs[directory] = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        early.append(open_at(path, FLAGS[call], dirs) if call in FLAGS and "//" not in path else None)
    return early


def main():
    args = parse_args(sys.argv[1:])
    calls = args.calls
    with open(os.path.join(args.cgroup, "cgroup.procs"), "w", encoding="ascii") as handle:
        handle.write(str(os.getpid()))
    if args.cwd:
        os.chdir(args.cwd)
    dirs = {}
    early = open_early(calls, dirs) if args.open_early else [None] * len(calls)
    print(f"ready {os.getpid()}", flush=True)
    if not args.no_wait:
        sys.stdin.readline()
    ticks, done = [0], threading.Event()

    def tick():
        while not done.is_set():
            time.sleep(0.001)
            ticks[0] += 1

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    handled = [0]
    if args.signals:
        signal.signal(signal.SIGALRM, lambda *_: handled.__setitem__(0, handled[0] + 1))
        signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
        caller = threading.get_ident()

        def kick():     # to the calling thread itself, as timer_create(SIGEV_THREAD_ID) would
            while not done.is_set():
                signal.pthread_kill(caller, signal.SIGALRM)
                time.sleep(0.0001)

        threading.Thread(target=kick, daemon=True).start()
    results = []

    def make_calls():
        results.extend(run_call(call, path, count, fd, dirs) for (call, path, count), fd in zip(calls, early))

    if args.in_thread:
        worker = threading.Thread(target=make_calls)
        worker.start()
        worker.join()
    else:
        make_calls()
    if args.signals:
        signal.setitimer(signal.ITIMER_REAL, 0)
    done.set()
    ticker.join()
    print(json.dumps({"calls": results, "ticks": ticks[0], "signals": handled[0]}), flush=True)


if __name__ == "__main__":
    main()
