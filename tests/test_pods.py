"""Finding a pod's cgroups the way kubelet and the runtimes lay them out (on a fake tree)."""
import os

import pytest

from kfault_agent.errors import TargetNotFound
from kfault_agent.kernel import pods

UID = "6a1f7d7e-2b1c-4c55-9a57-0c2b1d1e0f00"


def tree(root, *dirs):
    for d in dirs:
        os.makedirs(os.path.join(root, d))
        open(os.path.join(root, d, "cgroup.procs"), "w").close()


@pytest.mark.parametrize("layout, container, runtime_id", [
    # systemd driver, containerd
    (f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID.replace('-', '_')}.slice",
     "cri-containerd-abc123.scope", "containerd://abc123"),
    # systemd driver, CRI-O
    (f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID.replace('-', '_')}.slice",
     "crio-abc123.scope", "cri-o://abc123"),
    # systemd driver, a Guaranteed pod (no QoS level)
    (f"kubepods.slice/kubepods-pod{UID.replace('-', '_')}.slice", "cri-containerd-abc123.scope",
     "containerd://abc123"),
    # cgroupfs driver
    (f"kubepods/besteffort/pod{UID}", "abc123", "containerd://abc123"),
])
def test_pod_and_container_cgroups(tmp_path, layout, container, runtime_id):
    tree(tmp_path, layout, f"{layout}/{container}")
    pod = pods.PodRef("shop", "web-1", UID)
    assert pods.pod_cgroup(pod, root=str(tmp_path)) == os.path.join(tmp_path, layout)
    assert pods.container_cgroup(os.path.join(tmp_path, layout), runtime_id) == os.path.join(tmp_path, layout,
                                                                                              container)


def test_a_pod_not_on_this_node_is_refused_clearly(tmp_path):
    tree(tmp_path, "kubepods.slice/kubepods-besteffort.slice")
    with pytest.raises(TargetNotFound, match="shop/web-1.*no cgroup on this node"):
        pods.pod_cgroup(pods.PodRef("shop", "web-1", UID), root=str(tmp_path))


def test_a_container_id_without_runtime_is_refused(tmp_path):
    with pytest.raises(TargetNotFound, match="<runtime>://<id>"):
        pods.container_cgroup(str(tmp_path), "abc123")
