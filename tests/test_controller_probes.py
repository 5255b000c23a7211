"""The controller as its Deployment starts it (the image's entrypoint, `python -m
kfault_controller`, with the manifest's own args) against kmock's Kubernetes emulator, probed the
way kubelet probes it: every declared probe passes once kopf has started, fails while its event
loop can't turn and once it has stopped.

Made runnable here: --tls-dir points at certificates made with openssl, and each declared
containerPort is a free port of this host (see kubelet.runnable_args).
"""
import asyncio
import signal
import sys
import time

import pytest
import pytest_asyncio

from tests import kubelet
from tests.certs import make_certs, secret_dir
from tests.kube import register_cluster

pytestmark = pytest.mark.usefixtures("kubeconfig")
CONTROLLER = kubelet.container("controller/deployment.yaml", "Deployment")
START_TIMEOUT_S = 60


async def probes(ports):
    """Every declared probe, off the event loop: kmock answers the controller from this loop."""
    return await asyncio.to_thread(kubelet.run_all, CONTROLLER, ports)


def passing(results):
    return all(ok for ok, _ in results.values())


@pytest_asyncio.fixture
async def controller_process(tmp_path, kmock):
    register_cluster(kmock)
    make_certs(tmp_path)
    args, ports = kubelet.runnable_args(CONTROLLER, {},
                                        {"/etc/kfault/tls": str(secret_dir(tmp_path, "controller"))})
    log = tmp_path / "controller.log"
    with open(log, "wb") as output:
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "kfault_controller", *args,
                                                       stdout=output, stderr=output)
    yield process, ports, log
    if process.returncode is None:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 30)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()


@pytest.mark.asyncio
async def test_every_probe_passes_when_kopf_runs_and_fails_when_its_loop_is_stuck_or_gone(controller_process):
    process, ports, log = controller_process
    assert set(kubelet.declared_probes(CONTROLLER)) == {"livenessProbe", "readinessProbe"}

    deadline = time.monotonic() + START_TIMEOUT_S
    while not passing(results := await probes(ports)):
        assert process.returncode is None, f"the controller exited:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"probes not passing within {START_TIMEOUT_S} s: {results}\n" \
                                             f"{log.read_text()}"
        await asyncio.sleep(0.2)
    assert {what for _, what in results.values()} == {"HTTP 200"}

    # A stuck event loop (a stopped process stands for one): each probe times out.
    process.send_signal(signal.SIGSTOP)
    try:
        stuck = await probes(ports)
    finally:
        process.send_signal(signal.SIGCONT)
    assert all(not ok and "timed out" in what for ok, what in stuck.values()), stuck
    assert passing(await probes(ports)), "passing again once the loop turns again"

    process.terminate()
    await asyncio.wait_for(process.wait(), 30)
    gone = await probes(ports)
    assert not any(ok for ok, _ in gone.values()), gone
