"""What a command that did not end was doing: its processes and those of a cgroup as /proc
says (state, wait channel, kernel stack, page faults, OOM score), the cgroup tree's memory and
OOM events, the kernel's last messages, and the command's own Python stacks (kfault's
faulthandler on SIGUSR1). Taken before the command is killed, so a hang explains itself."""
import os
import signal
import time

CGROUP_FILES = ("cgroup.procs", "cgroup.events", "memory.current", "memory.max", "memory.events", "cpu.max", "cpu.stat")


def _read(path, limit=4000):
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read(limit).strip()
    except OSError as err:
        return f"({err.strerror})"


def _stat(pid):
    """(comm, state, ppid, minflt, majflt) from /proc/PID/stat."""
    text = _read(f"/proc/{pid}/stat")
    if ")" not in text:
        return None
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return comm, fields[0], int(fields[1]), int(fields[7]), int(fields[9])


def descendants(root):
    """root and every process below it."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(name)
            if stat:
                parents.setdefault(stat[2], []).append(int(name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, ()))
    return found


def cgroup_pids(path):
    pids = []
    for current, _, files in os.walk(path):
        if "cgroup.procs" in files:
            pids += [int(p) for p in _read(os.path.join(current, "cgroup.procs")).split() if p.isdigit()]
    return pids


def describe_process(pid):
    stat = _stat(pid)
    if stat is None:
        return [f"{pid}: gone"]
    comm, state, ppid, minflt, majflt = stat
    lines = [f"{pid} ({comm}) state {state} ppid {ppid} wchan {_read(f'/proc/{pid}/wchan') or '-'} "
             f"minflt {minflt} majflt {majflt} oom_score_adj {_read(f'/proc/{pid}/oom_score_adj')} "
             f"cgroup {'; '.join(_read(f'/proc/{pid}/cgroup').splitlines())}"]
    lines += ["    " + line for line in _read(f"/proc/{pid}/stack").splitlines()]
    return lines


def cgroup_tree(path):
    lines = []
    for current, _, _ in os.walk(path):
        lines.append(current)
        lines += [f"    {name}: " + " ".join(_read(os.path.join(current, name)).split())
                  for name in CGROUP_FILES if os.path.exists(os.path.join(current, name))]
    return lines


def kernel_log(lines=60):
    """The kernel's last messages, read from /dev/kmsg without blocking (dmesg, a process,
    timed out under TCG beside a task looping in the page-fault handler)."""
    records = []
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        return [f"(/dev/kmsg: {err.strerror})"]
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError:     # EPIPE: records overwritten while reading; go on from the next
                continue
            if not record:
                break
            header, _, text = record.decode(errors="replace").partition(";")
            records.append(f"[{int(header.split(',')[2]) / 1e6:.3f}] {text.splitlines()[0] if text else ''}")
            del records[:-lines]
    finally:
        os.close(fd)
    return records


def explain(proc, cgroup, settle_s=3.0):
    """A report of a Popen (stdout and stderr pipes, text) that did not end, and of `cgroup`:
    taken twice `settle_s` apart (what moves: page faults, states, OOM events), then its Python
    stacks (SIGUSR1), then it is killed and what it printed is added."""
    report = []
    for turn in ("first look", f"{settle_s:g} s later"):
        report.append(f"---- processes ({turn})")
        for pid in sorted(set(descendants(proc.pid)) | set(cgroup_pids(cgroup))):
            report += describe_process(pid)
        report += [f"---- cgroup tree ({turn})", *cgroup_tree(cgroup)]
        if turn == "first look":
            time.sleep(settle_s)
    report += ["---- kernel log (last lines)", *kernel_log()]
    try:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(settle_s)
    except ProcessLookupError:
        pass
    proc.kill()
    out, err = proc.communicate()
    report += ["---- stdout", out, "---- stderr (Python stacks after SIGUSR1)", err]
    return "\n".join(report)
