import os

import pytest

from kfault_agent.lab import Lab


def pytest_configure(config):
    config.addinivalue_line("markers", "kernel(*features): kernel features the test needs")


@pytest.fixture(scope="session")
def capabilities():
    if os.geteuid() != 0:
        pytest.skip("needs root: tests make network namespaces and load BPF programs")
    from kfault_agent import loader
    return loader.node_capabilities()


@pytest.fixture(autouse=True)
def _kernel_features(request):
    marker = request.node.get_closest_marker("kernel")
    if marker:
        caps = request.getfixturevalue("capabilities")
        for feature in marker.args:
            cap = caps.get(feature)
            if not cap or not cap.available:
                pytest.skip(f"kernel lacks {feature}: {cap.reason if cap else 'not probed'} (runs in the VM tier)")


@pytest.fixture(scope="session")
def datapath(capabilities):
    from kfault_agent import loader
    dp = loader.NetDatapath()
    yield dp
    dp.close()


@pytest.fixture
def lab():
    lab = Lab()
    yield lab
    lab.close()


@pytest.fixture
def engine(datapath, capabilities):
    from kfault_agent import netfault
    eng = netfault.NetFaultEngine(datapath, capabilities, lease_s=30)
    yield eng
    eng.revoke_all()
