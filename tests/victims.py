"""Victim processes (what a fault hits, measured from inside), the cgroups they live in, and
what /proc says of them."""
import json
import os
import subprocess
import time


def remove_cgroup(path):
    """rmdir a test's cgroup, waiting for its processes to finish exiting (a cgroup with a dying
    task in it is still busy); one already gone is fine, one still busy after 15 s is an error
    (a process the test started outlived it)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class CommandVictim:
    """A victim process that prints "ready", then answers one command a line with one JSON line."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.kill()
        self.proc.wait()


def status(pid):
    """/proc/PID/status as {field: value}, of the process's main thread; {} once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)
    except (FileNotFoundError, ProcessLookupError):
        return {}


def children_of(pid):
    """The process's children, whichever of its threads started them (an agent's loads run in a
    thread of their own); [] once it is gone."""
    children = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as handle:
                children += [int(child) for child in handle.read().split()]
    except OSError:
        pass
    return children


def tracer(pid):
    """The pid of the process's tracer (the I/O holder, once it has seized it), or 0."""
    return int(status(pid).get("TracerPid", "0"))


def held(pid):
    """Is the main thread stopped by its tracer (a call the holder is holding)? 't (tracing stop)'"""
    return status(pid).get("State", "").startswith("t")


def wait_until(predicate, what, timeout=30.0):
    """Poll a victim's state until `predicate()`; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


def fio_in_cgroup(cgroup, filename, engine, rw, direct=0, ios=20, depth=4, extra=()):
    """Run fio (`--ioengine=engine`) as a process of `cgroup`, `ios` requests of 4 KiB on
    `filename`, and return its job's record of its JSON output (fio's `jobs[0]`: `error`, and
    per direction `total_ios` and `lat_ns`, the total latency from submission to completion)."""
    argv = ["fio", "--name=victim", f"--filename={filename}", "--size=1M", "--bs=4k", f"--rw={rw}",
            f"--ioengine={engine}", f"--iodepth={depth}", f"--number_ios={ios}", f"--direct={direct}",
            "--output-format=json", *extra]
    done = subprocess.run(["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh", *argv],
                          capture_output=True, text=True, timeout=300, check=False)
    out = done.stdout
    if "{" not in out:       # fio prints notes before its JSON
        raise AssertionError(f"fio gave no JSON (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(out[out.index("{"):])["jobs"][0]
