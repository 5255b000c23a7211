"""The agent image (`make images`) run the way its DaemonSet runs it, with podman: the pod's
host namespaces, privileges, mounts and args read from manifests/agent/daemonset.yaml. The
controller's own gRPC client (mTLS) places a NetworkChaos loss on a local pod through it, and
ping measures the loss. Run again with the node's kernel headers hidden (an empty directory over
/lib/modules and /usr/src): the network fault still works, every program compiles against the
image's own headers, and struct layouts come from the kernel's BTF.

Images are built with `make images` every run (podman keeps their layers: seconds when nothing
changed), so the image holds this checkout; the containers are removed.
"""
import asyncio
import os
import shutil
import subprocess
import time
import uuid

import pytest

from kfault_api.rpc import agent_pb2 as pb
from tests import kubelet
from tests.certs import make_certs, secret_dir
from tests.features import skip_unless_required
from tests.kernel.test_end_to_end import LocalPods

pytestmark = pytest.mark.kernel("tc-bpf", "clsact")

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": os.path.join(ROOT, "scripts", "containers.conf")}
NODE = "image-node"
AGENT = kubelet.container("agent/daemonset.yaml", "DaemonSet")
BUILD_TIMEOUT_S = 1800
READY_TIMEOUT_S = 300        # the datapaths compile before readiness: ~70 s under emulation
OVERLAY_ON_OVERLAY = "is not supported over overlayfs"     # podman info's words for an overlay root

# What of the pod spec this test turns into podman flags, and what only a cluster has (it is
# read and left out). A field in neither fails the test: translate it, or say why not.
POD_FIELDS = {"hostPID", "hostNetwork", "containers", "volumes"}
CLUSTER_ONLY_POD_FIELDS = {"serviceAccountName", "priorityClassName", "tolerations"}
CONTAINER_FIELDS = {"name", "image", "args", "env", "securityContext", "volumeMounts"}
CLUSTER_ONLY_CONTAINER_FIELDS = {"ports", "resources", "startupProbe", "livenessProbe", "readinessProbe"}


def daemonset_pod():
    import yaml
    with open(os.path.join(kubelet.MANIFESTS, "agent/daemonset.yaml"), encoding="utf-8") as handle:
        workload = next(d for d in yaml.safe_load_all(handle) if d and d["kind"] == "DaemonSet")
    return workload["spec"]["template"]["spec"]


def podman(*args, timeout=120, check=True):
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=PODMAN_ENV)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {done.returncode}\n{done.stderr[-3000:]}")
    return done


def podman_run_flags(pod, secrets, hidden=()):
    """`podman run` flags for the DaemonSet's one container: its host namespaces, privilege, env,
    mounts ({secret name: folder here} for Secret volumes; `hidden` container paths get an empty
    folder of the host instead, as on a node without them) and args ($(VAR) expanded as kubelet
    does)."""
    assert set(pod) <= POD_FIELDS | CLUSTER_ONLY_POD_FIELDS, set(pod) - POD_FIELDS - CLUSTER_ONLY_POD_FIELDS
    (container,) = pod["containers"]
    unknown = set(container) - CONTAINER_FIELDS - CLUSTER_ONLY_CONTAINER_FIELDS
    assert not unknown, f"translate {sorted(unknown)} into podman flags"
    flags = ["--pid", "host"] if pod.get("hostPID") else []
    flags += ["--network", "host"] if pod.get("hostNetwork") else []
    flags += ["--privileged"] if container.get("securityContext", {}).get("privileged") else []
    env = {}
    for var in container.get("env", []):
        assert var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName", var
        env[var["name"]] = NODE
    flags += [f"--env={name}={value}" for name, value in env.items()]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "hostPath" in volume:
            source = volume["hostPath"]["path"]
            if volume["hostPath"].get("type") == "DirectoryOrCreate":
                os.makedirs(source, exist_ok=True)
        else:
            source = secrets[volume["secret"]["secretName"]]
        if mount["mountPath"] in hidden:
            source = hidden[mount["mountPath"]]
        options = ["ro"] if mount.get("readOnly") else ["rw"]
        options += {"HostToContainer": ["rslave"], "Bidirectional": ["rshared"]}.get(mount.get("mountPropagation"), [])
        flags.append(f"--volume={source}:{mount['mountPath']}:{','.join(options)}")
    args = []
    for arg in container["args"]:
        for name, value in env.items():
            arg = arg.replace(f"$({name})", value)
        args.append(arg)
    return flags, container["image"], args


@pytest.fixture(scope="module")
def agent_image():
    if os.geteuid() != 0:
        skip_unless_required("needs root: podman's root storage, and the agent loads BPF programs")
    assert shutil.which("podman"), "podman is missing: scripts/setup-host test installs it"
    info = podman("info", check=False)
    if info.returncode != 0:
        said = (info.stderr.strip().splitlines() or [f"exit status {info.returncode}"])[-1]
        # The one reason known and allowed: a root filesystem that is itself an overlay, as the VM
        # tier's is (this machine's, read-only under one), where podman's storage can't work.
        # This test is the host tier's; anything else is a broken podman, and fails.
        if OVERLAY_ON_OVERLAY not in info.stderr:
            raise AssertionError(f"podman can't run containers here: {said}")
        skip_unless_required(f"podman can't store images on this root: {said}")
    image = AGENT["image"]
    # Always build: the image must hold this checkout, not what an earlier one left in podman's
    # storage. Its layers are cached, so an unchanged tree costs seconds.
    subprocess.run(["make", "-C", ROOT, "images"], check=True, timeout=BUILD_TIMEOUT_S)
    assert podman("image", "exists", image, check=False).returncode == 0, f"make images did not build {image}"
    return image


class AgentContainer:
    """The agent image started as the DaemonSet starts it; its gRPC address as the controller
    finds it (the pod's IP and its container port named grpc)."""

    def __init__(self, tmp_path, hidden=()):
        self.name = f"kfault-test-agent-{uuid.uuid4().hex[:8]}"
        tls = tmp_path / "tls"
        tls.mkdir()
        make_certs(tls)
        secrets = {"kfault-agent-tls": str(secret_dir(tls, "agent"))}
        flags, image, args = podman_run_flags(daemonset_pod(), secrets, hidden)
        podman("run", "--detach", "--name", self.name, *flags, image, *args)
        ip = podman("inspect", "--format", "{{.NetworkSettings.IPAddress}}", self.name).stdout.strip()
        host = ip or "127.0.0.1"      # hostNetwork: the node's address
        self.host = host
        self.address = f"{host}:{next(p['containerPort'] for p in AGENT['ports'] if p['name'] == 'grpc')}"
        self.controller_tls = str(secret_dir(tls, "controller"))

    def logs(self):
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def wait_ready(self):
        """Until kubelet's readiness probe passes (the datapaths loaded), as a DaemonSet rollout waits."""
        ports = {p["containerPort"]: p["containerPort"] for p in AGENT["ports"]}
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            running = podman("inspect", "--format", "{{.State.Running}}", self.name).stdout.strip()
            assert running == "true", f"the agent container stopped:\n{self.logs()}"
            if kubelet.run_probe(AGENT, AGENT["readinessProbe"], ports, self.host)[0]:
                return
            time.sleep(1)
        raise AssertionError(f"not ready within {READY_TIMEOUT_S} s:\n{self.logs()}")

    def close(self):
        podman("rm", "--force", "--time", "30", self.name, check=False, timeout=90)


@pytest.fixture
def agent_container(agent_image, tmp_path, request):
    hidden = {}
    if getattr(request, "param", None) == "no-headers":
        empty = tmp_path / "empty"
        empty.mkdir()
        hidden = {"/lib/modules": str(empty), "/usr/src": str(empty)}
    started = AgentContainer(tmp_path, hidden)
    try:
        started.wait_ready()
        yield started
    finally:
        started.close()


@pytest.fixture
def controller_client(agent_container):
    """The controller's gRPC client, with the controller's certificate (its Secret as mounted).
    Nothing renews its placements, as the controller would: leases longer than a measurement, or a
    slow ping flood (a busy machine) outlives the fault and measures less loss than asked."""
    from kfault_controller.agents import AgentDirectory
    directory = AgentDirectory.from_tls_dir(agent_container.controller_tls, lease_s=600)
    yield directory
    directory.close()


def place_loss(controller_client, agent_container, pod, percent):
    """The controller's Apply of a NetworkChaos loss on `pod`, through the agent in the container."""
    from kfault_api.spec import KINDS
    from kfault_controller import placement
    spec = {"action": "loss", "mode": "all", "selector": {"labelSelectors": {"app": "web"}},
            "loss": {"loss": str(percent)}}
    body = placement.agent_spec(KINDS["NetworkChaos"], spec, view=None, scope=None)
    return asyncio.run(placement.apply_on_node(controller_client, f"default/image-loss-{uuid.uuid4().hex[:6]}",
                                               KINDS["NetworkChaos"], body, NODE, [pod], agent_container.address))


def capabilities(controller_client, agent_container):
    stub = controller_client.stub(agent_container.address)
    answer = stub.Capabilities(pb.CapabilitiesRequest(), timeout=60)
    return {c.name: (c.available, c.reason) for c in answer.capabilities}


def loss_on_a_local_pod(lab, agent_container, controller_client):
    """(records, measured loss): a 30 % loss placed on a local pod, measured by a ping flood."""
    pods = LocalPods(lab)
    try:
        _, b_ip = lab.link("a", "b", "10.251.1")
        pod, _ = pods.add("web-1", "a", {"app": "web"})
        records = place_loss(controller_client, agent_container, pod, 30)
        assert records and "error" not in records[0], f"{records}\n{agent_container.logs()}"
        sent, received, _ = lab.ping_flood("a", b_ip, 2000)
        return records, 1 - received / sent
    finally:
        pods.close()


def test_agent_image_run_as_its_daemonset_places_a_loss_from_the_controller(agent_container, controller_client, lab):
    _, loss = loss_on_a_local_pod(lab, agent_container, controller_client)
    assert 0.26 <= loss <= 0.34, \
        f"asked 30 %, ping lost {loss:.1%}: {capabilities(controller_client, agent_container)} {agent_container.logs()}"
    caps = capabilities(controller_client, agent_container)
    assert caps["kernel-headers"][0], caps["kernel-headers"]
    assert "the image's Debian headers" in caps["kernel-headers"][1], "the network programs use the image's headers"


@pytest.mark.parametrize("agent_container", ["no-headers"], indirect=True)
def test_agent_image_on_a_node_without_headers_still_faults_the_network_and_reads_layouts_from_btf(
        agent_container, controller_client, lab):
    _, loss = loss_on_a_local_pod(lab, agent_container, controller_client)
    assert 0.26 <= loss <= 0.34, f"asked 30 %, ping lost {loss:.1%}"
    caps = capabilities(controller_client, agent_container)
    available, reason = caps["kernel-headers"]
    assert available and "the image's Debian headers" in reason, reason
    available, reason = caps["struct-layouts"]
    assert available and reason.startswith("BTF (/sys/kernel/btf/vmlinux): file.f_path at "), reason
    assert caps["io-tracepoints"][0], caps["io-tracepoints"]
    for mechanism in ("file-hooks", "bpf-lsm", "fmod_ret"):     # what this kernel lacks refuses them, not headers
        assert "headers" not in caps[mechanism][1], caps[mechanism]
    # What a user on that node runs: the same, in words.
    shown = podman("exec", agent_container.name, "kfault", "capabilities", timeout=300).stdout
    assert "kernel-headers  yes  every program compiles against the image's Debian headers" in shown, shown
    assert "struct-layouts  yes  BTF (/sys/kernel/btf/vmlinux)" in shown, shown
    assert "loss       yes" in shown, shown


def test_the_controller_image_has_no_bcc_and_the_agent_image_no_kubernetes_client(agent_image):
    controller_image = kubelet.container("controller/deployment.yaml", "Deployment")["image"]
    assert podman("image", "exists", controller_image, check=False).returncode == 0, \
        f"make images builds {controller_image}"
    for image, absent in ((controller_image, ("bcc", "pyroute2")), (agent_image, ("kopf", "kubernetes"))):
        for module in absent:
            done = podman("run", "--rm", "--entrypoint", "/opt/venv/bin/python", image, "-c", f"import {module}",
                          check=False)
            assert "ModuleNotFoundError" in done.stderr, f"{image} has {module}"
