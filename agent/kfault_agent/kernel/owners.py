"""Who owns what kfault leaves behind by name (tc filters, records of frozen cgroups): a
process, known by its pid and start time, so that a pid the kernel has since given to
another process is not taken for the owner. What a dead owner left is stale."""
import os


def tag(pid=None):
    """'<pid>.<start time>' of a process (default: this one)."""
    pid = pid or os.getpid()
    return f"{pid}.{_start_time(pid)}"


def is_alive(owner_tag):
    pid, _, start = owner_tag.partition(".")
    if not pid.isdigit():
        return False
    try:
        return _start_time(int(pid)) == start
    except OSError:
        return False


def _start_time(pid):
    """Field 22 of /proc/PID/stat, in clock ticks since boot; read after the command name,
    which may hold spaces and parentheses."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
        stat = handle.read()
    return stat[stat.rindex(")") + 2:].split()[19]
