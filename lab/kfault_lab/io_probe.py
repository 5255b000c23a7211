"""A victim process for file I/O faults, run in a target cgroup by the tests, demo and bench.

  python -m kfault_lab.io_probe CGROUP_DIR 'JSON list of calls'

It moves itself into CGROUP_DIR, prints "ready <pid>", waits for a line on stdin (so the agent
can arm and hold it first), then makes each call, timing it, while a second thread ticks
every millisecond (a held thread must not stop it). Calls:
  ["read", PATH, COUNT]    open PATH, then COUNT x pread 1 byte at 0
  ["write", PATH, COUNT]   open PATH for append (created), then COUNT x write 1 byte
  ["open", PATH, COUNT]    COUNT x open(PATH, O_WRONLY|O_CREAT) and close
  ["fsync", PATH, COUNT]   open PATH, then COUNT x fsync
Prints one JSON object: {"calls": [{"call", "path", "ms": [...], "errno": [...]}], "ticks": N}.
An errno of 0 is success; a failed open has no fd to use, so later calls on it are skipped.
"""
import json
import os
import sys
import threading
import time


def timed(fn):
    start = time.perf_counter()
    try:
        fn()
        error = 0
    except OSError as err:
        error = err.errno
    return (time.perf_counter() - start) * 1000, error


def run_call(call, path, count):
    ms, errors = [], []

    def record(fn):
        took, error = timed(fn)
        ms.append(took)
        errors.append(error)
        return error

    if call == "open":
        for _ in range(count):
            holder = []
            if not record(lambda: holder.append(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))):
                os.close(holder[0])
    else:
        flags = {"read": os.O_RDONLY, "write": os.O_WRONLY | os.O_CREAT | os.O_APPEND, "fsync": os.O_RDONLY}[call]
        holder = []
        if record(lambda: holder.append(os.open(path, flags, 0o644))):
            return {"call": call, "path": path, "ms": ms, "errno": errors, "open_failed": True}
        ms.clear()
        errors.clear()
        fd = holder[0]
        do = {"read": lambda: os.pread(fd, 1, 0), "write": lambda: os.write(fd, b"k"),
              "fsync": lambda: os.fsync(fd)}[call]
        for _ in range(count):
            record(do)
        os.close(fd)
    return {"call": call, "path": path, "ms": ms, "errno": errors}


def main():
    cgroup, calls = sys.argv[1], json.loads(sys.argv[2])
    with open(os.path.join(cgroup, "cgroup.procs"), "w", encoding="ascii") as handle:
        handle.write(str(os.getpid()))
    print(f"ready {os.getpid()}", flush=True)
    sys.stdin.readline()
    ticks, done = [0], threading.Event()

    def tick():
        while not done.is_set():
            time.sleep(0.001)
            ticks[0] += 1

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    results = [run_call(call, path, count) for call, path, count in calls]
    done.set()
    ticker.join()
    print(json.dumps({"calls": results, "ticks": ticks[0]}), flush=True)


if __name__ == "__main__":
    main()
