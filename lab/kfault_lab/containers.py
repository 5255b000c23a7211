"""Stand-ins for containers, for StressChaos's tests and bench: a cgroup v2 directory with the
cpu.max and memory.max asked, holding a sleeping process in a mount namespace of its own with a
small tmpfs on /tmp (where --hdd writes). On a node without systemd (the VM), the root cgroup
distributes cpu and memory only once asked: asked here, and undone at close."""
import os
import subprocess
import time
import uuid

from kfault_agent.kernel import stress, topology


class Containers:
    def __init__(self):
        self.root = topology.cgroup2_mount()
        control = os.path.join(self.root, "cgroup.subtree_control")
        with open(control, encoding="ascii") as handle:
            self.added = [c for c in ("cpu", "memory") if c not in handle.read().split()]
        if self.added:
            with open(control, "w", encoding="ascii") as handle:
                handle.write(" ".join("+" + c for c in self.added))
        self.made = []

    def make(self, cpu_max=None, memory_max=None):
        """(cgroup path, its process)."""
        path = os.path.join(self.root, "kft-stress-" + uuid.uuid4().hex[:6])
        os.mkdir(path)
        for name, value in (("cpu.max", cpu_max), ("memory.max", memory_max)):
            if value:
                with open(os.path.join(path, name), "w", encoding="ascii") as handle:
                    handle.write(str(value))
        proc = subprocess.Popen(["unshare", "-m", "sh", "-c", f"echo $$ > {path}/cgroup.procs && "
                                 "mount -t tmpfs -o size=16m tmpfs /tmp && echo in && exec sleep 3600"],
                                stdout=subprocess.PIPE, text=True)
        self.made.append((path, proc))
        assert proc.stdout.readline() == "in\n", f"the container's process did not join {path}"
        return path, proc

    def close(self):
        for path, proc in self.made:
            proc.kill()
            proc.wait()
            proc.stdout.close()
            for name in os.listdir(path):
                if name.startswith(stress.PREFIX):
                    stress.remove_cgroup(os.path.join(path, name))
            _rmdir(path)
        if self.added:
            with open(os.path.join(self.root, "cgroup.subtree_control"), "w", encoding="ascii") as handle:
                handle.write(" ".join("-" + c for c in self.added))


def _rmdir(path, settle_s=15):
    deadline = time.monotonic() + settle_s
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


def cpu_held(cgroups, seconds, sleep=time.sleep):
    """{cgroup: CPUs its tasks got over `seconds` of wall time}, from each one's cpu.stat."""
    before = {path: stress.cpu_usage_s(path) for path in cgroups}
    start = time.monotonic()
    sleep(seconds)
    wall = time.monotonic() - start
    return {path: (stress.cpu_usage_s(path) - before[path]) / wall for path in cgroups}


def task_cpu_s(pid):
    """CPU time (user + system) one process got."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
