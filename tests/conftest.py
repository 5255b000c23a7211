"""Hooks and fixtures for every test. Helpers live in modules beside this one (kube, doubles,
victims, features); the kernel tests' fixtures are in tests/kernel/conftest.py."""
import os
import signal

import pytest

from tests.doubles import RecordingNode
from tests.kube import parse_path_with_namespaces
from tests.tiers import pytest_addoption, pytest_collection_modifyitems  # noqa: F401 (hooks: which tests a tier runs)

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


@pytest.fixture
def nodes():
    """Two nodes' agents on recording engines: node-a places, node-b's kernel refuses delay."""
    made = {"node-a": RecordingNode("node-a"),
            "node-b": RecordingNode("node-b", refuse="delay needs sch_fq: build with CONFIG_NET_SCH_FQ")}
    yield made
    for node in made.values():
        node.close()
