"""Pods on this node, as the kernel sees them: a pod's cgroup v2 directory (kubelet's layouts),
its containers' cgroups (containerd and CRI-O names) and its network namespace."""
import os
from dataclasses import dataclass

from kfault_agent.errors import TargetNotFound
from kfault_agent.kernel.topology import CgroupTarget, cgroup2_mount, resolve_cgroup_target, resolve_net_target
from kfault_api.quoting import quoted

# kubelet's top cgroups: the systemd driver's slices and the cgroupfs driver's directories.
KUBEPODS = ("kubepods.slice", "kubepods")
RUNTIMES = ("containerd", "cri-o", "docker")


@dataclass(frozen=True)
class PodRef:
    namespace: str
    name: str
    uid: str
    container_ids: tuple = ()

    @property
    def key(self):
        return f"{self.namespace}/{self.name}"


def _pod_dir_names(uid):
    """systemd: kubepods-besteffort-pod<uid with _>.slice; cgroupfs: pod<uid>."""
    return {f"pod{uid}", f"pod{uid.replace('-', '_')}.slice"}


def pod_cgroup(pod, root=None):
    """The pod's cgroup v2 directory. kubelet nests it at most two levels under kubepods
    (kubepods/<qos>/pod<uid>, or kubepods/pod<uid> for Guaranteed pods)."""
    root = root or cgroup2_mount()
    names = _pod_dir_names(pod.uid)
    for top in KUBEPODS:
        base = os.path.join(root, top)
        if not os.path.isdir(base):
            continue
        for current, dirs, _ in os.walk(base):
            depth = current[len(base):].count(os.sep)
            for name in dirs:
                if name in names or any(name.endswith("-" + n) for n in names):
                    return os.path.join(current, name)
            if depth >= 2:
                dirs.clear()
    raise TargetNotFound(f"pod {pod.key} (uid {pod.uid}) has no cgroup on this node under "
                         f"{root}/{{{','.join(KUBEPODS)}}}: is it scheduled here and running?")


def container_cgroup(pod_dir, container_id):
    """A container's cgroup inside its pod's: containerd names it cri-containerd-<id>.scope
    (systemd) or <id> (cgroupfs); CRI-O crio-<id>.scope or crio-<id>."""
    runtime, _, cid = container_id.partition("://")
    if not cid or runtime not in RUNTIMES:
        raise TargetNotFound(f"container id {quoted(container_id)}: expected <runtime>://<id> with runtime one of "
                             f"{', '.join(RUNTIMES)}")
    for name in sorted(os.listdir(pod_dir)):
        if cid in name and os.path.isdir(os.path.join(pod_dir, name)):
            return os.path.join(pod_dir, name)
    raise TargetNotFound(f"container {container_id} has no cgroup under {pod_dir}")


def _first_pid(cgroup_dir):
    for current, _, files in os.walk(cgroup_dir):
        if "cgroup.procs" in files:
            with open(os.path.join(current, "cgroup.procs"), encoding="ascii") as handle:
                for line in handle:
                    if line.strip():
                        return int(line)
    return None


def resolve_pod_cgroups(pod, container_ids=()):
    """CgroupTargets for IOChaos: the named containers' cgroups, or the whole pod's."""
    pod_dir = pod_cgroup(pod)
    if not container_ids:
        return [CgroupTarget(name=pod.key, path=pod_dir)]
    return [CgroupTarget(name=f"{pod.key}/{cid.partition('://')[2][:12]}", path=container_cgroup(pod_dir, cid))
            for cid in container_ids]


def resolve_pod_network(pod):
    """The NetTarget of a pod: its network namespace (through one of its processes) and veths."""
    pod_dir = pod_cgroup(pod)
    pid = _first_pid(pod_dir)
    if pid is None:
        raise TargetNotFound(f"pod {pod.key}: no process in {pod_dir} to find its network namespace by")
    target = resolve_net_target(f"pid:{pid}")
    return type(target)(name=pod.key, netns=target.netns, interfaces=target.interfaces)


def resolve_cgroups(target):
    """The cgroups a cgroup-scoped kind (IOChaos, SyscallChaos, StressChaos) acts on: a pod's
    named containers' (all of them when none is named), or one local cgroup target."""
    if isinstance(target, PodRef):
        return resolve_pod_cgroups(target, target.container_ids)
    return [resolve_cgroup_target(target)]
