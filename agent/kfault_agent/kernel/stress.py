"""StressChaos in cgroup v2: a target container's limits (cpu.max, memory.max, its own and its
ancestors'), the child cgroup its stressors run in, and what they hold (cpu.stat, /proc)."""
import os
import time

from kfault_agent.errors import KernelUnsupported, TargetGone, TargetUnsuitable, kernel_errors
from kfault_agent.kernel import owners
from kfault_agent.kernel.topology import cgroup2_mount
from kfault_agent.stressor import COMM

PREFIX = "kfault-stress-"      # kfault-stress-<owner tag>-<n>: the stressors' cgroup in a container's


def require_cgroup2_controllers(root=None):
    """StressChaos reads and counts against cpu.max and memory.max: cgroup v2's. Raises
    KernelUnsupported naming cgroup v1 where the controllers are there."""
    missing = missing_controllers(root)
    if missing:
        on_v1 = [c for c in missing if c in _v1_controllers()]
        where = f"on cgroup v1 here ({', '.join(on_v1)})" if on_v1 else "not enabled in cgroup v2 here"
        raise KernelUnsupported(f"StressChaos needs cgroup v2's cpu and memory controllers, which are {where}: "
                                "it counts stressors against a container's cpu.max and memory.max; boot the node "
                                "with cgroup v2 only (systemd.unified_cgroup_hierarchy=1), as current "
                                "Kubernetes requires")


def missing_controllers(root=None):
    """Which of cpu and memory cgroup v2 lacks here."""
    with open(os.path.join(root or cgroup2_mount(), "cgroup.controllers"), encoding="ascii") as handle:
        available = set(handle.read().split())
    return [c for c in ("cpu", "memory") if c not in available]


def _v1_controllers():
    found = set()
    with open("/proc/mounts", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if fields[2] == "cgroup":
                found.update(fields[3].split(","))
    return found


def _read(path, name):
    with open(os.path.join(path, name), encoding="ascii") as handle:
        return handle.read()


def _up_to_root(path):
    """`path` and its ancestors below the cgroup v2 mount."""
    root = os.path.realpath(cgroup2_mount())
    path = os.path.realpath(path)
    while path != root and path.startswith(root):
        yield path
        path = os.path.dirname(path)


def cpu_limit(path):
    """The CPUs the container may use: the least quota/period of cpu.max on it and above, or
    None where none is set."""
    limits = []
    for current in _up_to_root(path):
        try:
            quota, period = _read(current, "cpu.max").split()
        except FileNotFoundError:
            continue
        if quota != "max":
            limits.append(int(quota) / int(period))
    return min(limits) if limits else None


def memory_limit(path):
    """The least memory.max on the container and above, or None where none is set."""
    limits = []
    for current in _up_to_root(path):
        try:
            value = _read(current, "memory.max").strip()
        except FileNotFoundError:
            continue
        if value != "max":
            limits.append(int(value))
    return min(limits) if limits else None


def meminfo(field):
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def hdd_directory(path):
    """Where disk workers write inside the container: its /tmp (else its root), reached through
    one of its processes' root."""
    for current, _, files in os.walk(path):
        if "cgroup.procs" in files and PREFIX not in current:
            for line in _read(current, "cgroup.procs").split():
                for inside in ("tmp", ""):
                    candidate = os.path.join(f"/proc/{line}/root", inside)
                    if os.path.isdir(candidate):
                        return candidate
    raise TargetUnsuitable(f"cgroup {path} has no process, so no file system to write in (--hdd)")


def make_cgroup(container, serial):
    """The stressors' cgroup, a child of the container's (its controllers are the container's)."""
    path = os.path.join(container, f"{PREFIX}{owners.tag()}-{serial}")
    with kernel_errors(f"can't make the stressors' cgroup in {container}",
                       gone=TargetGone(f"cgroup {container} is gone: its pod or container ended")):
        os.mkdir(path)
    return path


def remove_cgroup(path, settle_s=5.0):
    """Kill every task in the stressors' cgroup (cgroup.kill: SIGKILL, which also ends a task
    looping in the page-fault handler of a full memory.max) and remove it once they have
    exited. Killed again at each try: a task that joined after a kill (a stressor forked by
    the agent joins its cgroup itself) would keep it busy for ever."""
    deadline = time.monotonic() + settle_s
    while True:
        try:
            with open(os.path.join(path, "cgroup.kill"), "w", encoding="ascii") as handle:
                handle.write("1")
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def remove_leftovers(root=None, depth=8):
    """Remove the stressors' cgroups that kfault processes now gone left (their stressors died
    with them: PR_SET_PDEATHSIG); returns how many."""
    root = root or cgroup2_mount()
    removed = 0
    for current, dirs, _ in os.walk(root):
        if current[len(root):].count(os.sep) >= depth:
            dirs.clear()
        for name in list(dirs):
            if name.startswith(PREFIX):
                dirs.remove(name)
                if not owners.is_alive(name[len(PREFIX):].rpartition("-")[0]):
                    remove_cgroup(os.path.join(current, name))
                    removed += 1
    return removed


def cpu_usage_s(path):
    """CPU time the cgroup's tasks got (cpu.stat's usage_usec: kept without the cpu controller)."""
    try:
        for line in _read(path, "cpu.stat").splitlines():
            name, value = line.split()
            if name == "usage_usec":
                return int(value) / 1e6
    except FileNotFoundError:
        pass
    return 0.0


def stressors(path):
    """{kind: [pid]} of the stressor processes in the cgroup, by their names (stressor.COMM)."""
    kinds = {comm: kind for kind, comm in COMM.items()}
    found = {}
    try:
        pids = _read(path, "cgroup.procs").split()
    except FileNotFoundError:
        return found
    for pid in pids:
        try:
            comm = _read(f"/proc/{pid}", "comm").strip()
        except OSError:
            continue
        if comm in kinds:
            found.setdefault(kinds[comm], []).append(int(pid))
    return found


CAP_SYS_RESOURCE = 24


def can_lower_oom_score_adj():
    """Setting an oom_score_adj below 0 needs CAP_SYS_RESOURCE (the DaemonSet is privileged)."""
    with open("/proc/self/status", encoding="ascii") as handle:
        caps = next(line.split()[1] for line in handle if line.startswith("CapEff:"))
    return bool(int(caps, 16) >> CAP_SYS_RESOURCE & 1)


def has_exited(pid):
    """A child of ours has exited (a zombie until it is reaped), or is gone."""
    try:
        stat = _read(f"/proc/{pid}", "stat")
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def held_memory(pid, size):
    """Bytes resident of a memory worker's buffer: its anonymous mapping of `size` bytes."""
    wanted_kb = -(-size // os.sysconf("SC_PAGE_SIZE")) * os.sysconf("SC_PAGE_SIZE") // 1024
    try:
        smaps = _read(f"/proc/{pid}", "smaps")
    except OSError:
        return 0
    in_buffer = False
    for line in smaps.splitlines():
        fields = line.split()
        if fields[0] == "Size:":
            in_buffer = int(fields[1]) == wanted_kb
        elif fields[0] == "Rss:" and in_buffer:
            return int(fields[1]) * 1024
    return 0
