import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

import pytest

from kfault_api import spec
from kfault_lab.hosts import Lab

# Features this kernel must have: a test needing one fails instead of skipping. The VM tier
# (tests/kernel/run) lists what a stock kernel has, so nothing there skips by accident.
REQUIRED_FEATURES = {f for f in os.environ.get("KFAULT_REQUIRE_FEATURES", "").split(",") if f}


# A test that runs longer than this fails (its setup and teardown included), naming itself, so
# that a hang costs one test and not the whole run's time limit in CI. Generous: the VM tier
# runs under software emulation, where the slowest test takes a few minutes.
TEST_TIME_LIMIT_S = int(os.environ.get("KFAULT_TEST_TIME_LIMIT_S", "600"))


def pytest_configure(config):
    config.addinivalue_line("markers", "kernel(*features): kernel features the test needs")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    def ran_too_long(signum, frame):
        pytest.fail(f"{item.nodeid} ran past {TEST_TIME_LIMIT_S} s (KFAULT_TEST_TIME_LIMIT_S)", pytrace=True)

    previous = signal.signal(signal.SIGALRM, ran_too_long)
    signal.alarm(TEST_TIME_LIMIT_S)
    try:
        return (yield)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


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


@pytest.fixture(scope="session")
def _node():
    """The network and file I/O datapaths, compiled and loaded once per run, and what this
    kernel can do."""
    if os.geteuid() != 0:
        pytest.skip("needs root: tests make network namespaces and load BPF programs")
    from kfault_agent.errors import KernelUnsupported
    from kfault_agent.kernel import capabilities, loader
    try:
        datapath, error = loader.NetDatapath(), None
    except KernelUnsupported as err:
        datapath, error = None, err
    io_datapath, io_caps = capabilities.probe_io()
    yield datapath, io_datapath, {**capabilities.probe_capabilities(error), **io_caps}
    for loaded in (datapath, io_datapath):
        if loaded:
            loaded.close()


@pytest.fixture(scope="session")
def capabilities(_node):
    return _node[2]


@pytest.fixture(autouse=True)
def _kernel_features(request):
    marker = request.node.get_closest_marker("kernel")
    if marker:
        caps = request.getfixturevalue("capabilities")
        for feature in marker.args:
            cap = caps.get(feature)
            if not cap or not cap.available:
                skip_for_lack_of(feature, cap.reason if cap else "not probed")


def skip_for_lack_of(feature, reason):
    reason = f"kernel lacks {feature}: {reason}"
    if feature in REQUIRED_FEATURES:
        pytest.fail(f"{reason} (this tier requires {feature})")
    pytest.skip(f"{reason} (runs in the VM tier: make kernel-test)")


@pytest.fixture(scope="session")
def datapath(_node):
    if _node[0] is None:
        skip_for_lack_of("tc-bpf", _node[2]["tc-bpf"].reason)
    return _node[0]


@pytest.fixture(scope="session")
def io_datapath(_node):
    if _node[1] is None:
        skip_for_lack_of("io-tracepoints", _node[2]["io-tracepoints"].reason)
    return _node[1]


@pytest.fixture
def lab():
    lab = Lab()
    yield lab
    lab.close()


@pytest.fixture
def engine(datapath, capabilities):
    from kfault_agent.engines import netfault

    # A lease longer than any test runs under emulation: nothing renews it, and the fixture
    # revokes everything at the end (tests of lapsing leases set their own).
    eng = netfault.NetFaultEngine(datapath, capabilities, lease_s=600)
    yield eng
    eng.revoke_all()


@pytest.fixture
def io_engine(io_datapath, capabilities):
    from kfault_agent.engines import iofault

    # As `engine`: a test starting a dozen processes one by one under emulation outlived 30 s.
    eng = iofault.IOFaultEngine(io_datapath, capabilities, lease_s=600)
    yield eng
    eng.revoke_all()


# ---- the Kubernetes API, emulated by kmock, and the controller running against it --------

NS = "default"


def parse_path_with_namespaces(parse_path):
    """kmock 0.8 reads /api/v1/namespaces[/NAME] as a namespaced path (a list of namespaces
    fails, a namespace is 404): read it as the cluster-scoped resource it is, so namespaces
    are listed, watched and patched like any other object."""
    import re

    from kmock._internal import parsing

    def parse(path):
        found = re.fullmatch(r"/api/v1/namespaces(?:/([^/]+))?/?", path)
        if found:
            return parsing.ParsedPath("", "v1", "namespaces", None, found.group(1), None)
        return parse_path(path)
    return parse


@pytest.fixture
def kubeconfig(tmp_path, mocker, kmock):
    """Point the kubernetes client and kopf at kmock's emulator (which serves namespaces)."""
    from kmock._internal import parsing
    mocker.patch.object(parsing, "parse_path", parse_path_with_namespaces(parsing.parse_path))
    config = tmp_path / "kubeconfig"
    config.write_text(f"""
        kind: Config
        current-context: self
        clusters: [{{name: self, cluster: {{server: "{kmock.url!s}"}}}}]
        contexts: [{{name: self, context: {{cluster: self}}}}]
    """)
    mocker.patch.dict("os.environ", {"KUBECONFIG": str(config)})


def register_cluster(kmock):
    """Built-in resources, kfault's kinds and the namespaces the controller looks at."""
    kmock.resources.load_bundled()
    for plural in (kind.plural for kind in spec.KINDS.values()):
        info = kmock.resources[f"kfault.dev/v1alpha1/{plural}"]
        info.namespaced = True
        info.verbs = {"watch", "list", "get", "patch", "update", "delete", "create"}   # a Schedule creates
        info.subresources = {"status"}
    for name in ("default", "kube-system", "kfault-system"):
        kmock.objects["v1/namespaces", None, name] = {"metadata": {"name": name, "resourceVersion": "1"}}


async def annotate_namespace(kmock, name, annotations):
    """Change a namespace's annotations through the API: the controller hears it on its watch."""
    response = await kmock.patch(f"/api/v1/namespaces/{name}", json={"metadata": {"annotations": annotations}},
                                 headers={"Content-Type": "application/merge-patch+json"})
    assert response.status == 200, await response.text()


@contextlib.asynccontextmanager
async def controller():
    """The controller's kopf operator in the test's event loop, cluster-wide as it runs in a
    cluster: its indexes watch every namespace's pods (the agents' are in kfault-system)."""
    import kopf

    import kfault_controller.handlers  # noqa: F401 - registers the handlers
    from kfault_controller import metrics

    # Each test's controller starts as a new process would: with no experiments counted (the
    # gauge lives in this process's registry, which every test's controller shares).
    metrics.forget_phases()
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    # kmock sends no bookmarks: a quiet stream is re-made (and everything re-listed) every 10 s
    # rather than every 70, as kopf does to recover from a watch that lost an event.
    settings.watching.inactivity_timeout = 10
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(kopf.operator(clusterwide=True, standalone=True, settings=settings,
                                             stop_flag=stop, ready_flag=ready))
    try:
        # Ready in about a second here; under the VM tier's emulation it took more than 10 s.
        await asyncio.wait_for(ready.wait(), 120)
        yield
    finally:
        # Also when it never got ready: an operator left running would keep the loop, and the
        # test run, from ending.
        stop.set()
        await asyncio.wait_for(task, 60)


# Longer than the watch's inactivity timeout above: a lost event is recovered within it.
async def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("timed out waiting")


# ---- an agent's engine that records instead of placing ------------------------------------

@dataclass
class RecordedPlacement:
    experiment: object
    target: object
    lease_ns: int
    deadline_ns: int = 0
    renewals: int = 0

    @property
    def key(self):
        return (self.experiment.key, self.target.name)


@dataclass(frozen=True)
class Named:
    name: str


@dataclass
class RecordingEngine:
    """The Engine protocol (engines/base.py) the agent drives, recording instead of placing.
    A pod resolves to one target named namespace/name."""
    refuse: str = ""
    kind: object = field(default_factory=lambda: spec.KINDS["NetworkChaos"])
    placed: dict = field(default_factory=dict)
    history: list = field(default_factory=list)

    @staticmethod
    def resolve(target, experiment):
        return [Named(f"{target.namespace}/{target.name}")]

    @staticmethod
    def describe(target):
        return target.name

    def check(self, experiment):
        if self.refuse:
            from kfault_agent.errors import KernelUnsupported
            raise KernelUnsupported(self.refuse)

    def apply(self, experiment, target, lease_s=None):
        placement = RecordedPlacement(experiment, target, int((lease_s or 10) * 1e9))
        placement.deadline_ns = time.monotonic_ns() + placement.lease_ns
        self.placed[placement.key] = placement
        self.history.append(("apply", experiment.key, target.name))

    def renew(self, keys=None):
        for key in keys if keys is not None else list(self.placed):
            if key in self.placed:
                self.placed[key].renewals += 1
                self.placed[key].deadline_ns = time.monotonic_ns() + self.placed[key].lease_ns
        return []

    def revoke(self, experiment_key, target_name):
        if self.placed.pop((experiment_key, target_name), None):
            self.history.append(("revoke", experiment_key, target_name))
            return True
        return False

    def revoke_all(self):
        for key in list(self.placed):
            self.revoke(*key)

    def active(self):
        return list(self.placed.values())

    def lapsed(self):
        return [p.key for p in self.placed.values() if time.monotonic_ns() >= p.deadline_ns]

    def counter_rows(self, experiment_key):
        return [(p.target.name, "recorded", "renewals", p.renewals)
                for p in self.placed.values() if p.experiment.key == experiment_key]

    def counter_lines(self, active):
        return [f"renewed {active.renewals} times"]

    def metric_families(self):
        return []

    def close(self):
        self.revoke_all()


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
