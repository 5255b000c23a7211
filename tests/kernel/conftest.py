"""Fixtures of the kernel tests: the datapaths (compiled and loaded once per run), what this
kernel can do, the engines on them, and lab hosts (network namespaces)."""
import os

import pytest

from kfault_lab.hosts import Lab
from tests.features import skip_for_lack_of, skip_unless_required


@pytest.fixture(scope="session")
def _node():
    """The network and file I/O datapaths, compiled and loaded once per run, and what this
    kernel can do."""
    if os.geteuid() != 0:
        skip_unless_required("needs root: tests make network namespaces and load BPF programs")
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


@pytest.fixture(scope="session")
def dns_datapath(_node):
    """dnsfault.c, compiled and loaded once per run (the first test that asks)."""
    from kfault_agent.errors import KernelUnsupported
    from kfault_agent.kernel import loader
    try:
        dns = loader.DnsDatapath()
    except KernelUnsupported as err:
        skip_for_lack_of("tc-bpf", str(err))
    yield dns
    dns.close()


@pytest.fixture(scope="session")
def http_datapath(_node):
    """httpfault.c, compiled and loaded once per run (the first test that asks)."""
    from kfault_agent.errors import KernelUnsupported
    from kfault_agent.kernel import loader
    try:
        http = loader.HttpDatapath()
    except KernelUnsupported as err:
        skip_for_lack_of("tc-bpf", str(err))
    yield http
    http.close()


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
def dns_engine(dns_datapath, capabilities):
    from kfault_agent.engines import dnsfault

    eng = dnsfault.DnsFaultEngine(dns_datapath, capabilities, lease_s=600)
    yield eng
    eng.revoke_all()


@pytest.fixture
def http_engine(http_datapath, capabilities):
    from kfault_agent.engines import httpfault

    eng = httpfault.HttpFaultEngine(http_datapath, capabilities, lease_s=600)
    yield eng
    eng.revoke_all()


@pytest.fixture
def io_engine(io_datapath, capabilities):
    from kfault_agent.engines import iofault

    # As `engine`: a test starting a dozen processes one by one under emulation outlived 30 s.
    eng = iofault.IOFaultEngine(io_datapath, capabilities, lease_s=600)
    yield eng
    eng.revoke_all()


@pytest.fixture(scope="module")
def syscall_engine():
    """SyscallChaos's engine on its own datapath, loaded once per module (its tests share it)."""
    if os.geteuid() != 0:
        skip_unless_required("needs root: tests load BPF programs and make cgroups")
    from kfault_agent.engines import syscallfault
    from kfault_agent.kernel import capabilities
    datapath, caps = capabilities.probe_syscall()
    if datapath is None:
        skip_for_lack_of("syscall-fault", caps["syscall-fault"].reason)
    eng = syscallfault.SyscallFaultEngine(datapath, caps, lease_s=600)
    yield eng
    eng.close()
