"""The Kubernetes API emulated by kmock, and the controller running against it in the test's
event loop (as kopf's examples/09-testing-kmock does)."""
import asyncio
import contextlib
import re
import time

from kfault_api import spec

NS = "default"


def parse_path_with_namespaces(parse_path):
    """kmock 0.8 reads /api/v1/namespaces[/NAME] as a namespaced path (a list of namespaces
    fails, a namespace is 404): read it as the cluster-scoped resource it is, so namespaces
    are listed, watched and patched like any other object."""
    from kmock._internal import parsing

    def parse(path):
        found = re.fullmatch(r"/api/v1/namespaces(?:/([^/]+))?/?", path)
        if found:
            return parsing.ParsedPath("", "v1", "namespaces", None, found.group(1), None)
        return parse_path(path)
    return parse


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
async def controller(settings=None):
    """The controller's kopf operator in the test's event loop, cluster-wide as it runs in a
    cluster: its indexes watch every namespace's pods (the agents' are in kfault-system).
    settings: the controller's (kfault_controller.settings.Settings; None: its defaults). Yields
    the operator's kopf memo: what the controller holds (its pod cache, its renewals)."""
    import kopf

    from kfault_controller import operator
    from kfault_controller.settings import Settings

    kopf_settings = kopf.OperatorSettings()
    kopf_settings.scanning.disabled = True
    # kmock sends no bookmarks: a quiet stream is re-made (and everything re-listed) every 10 s
    # rather than every 70, as kopf does to recover from a watch that lost an event.
    kopf_settings.watching.inactivity_timeout = 10
    stop, ready, memo = asyncio.Event(), asyncio.Event(), kopf.Memo()
    task = asyncio.create_task(operator.run(settings or Settings(), kopf_settings, memo, standalone=True,
                                            stop_flag=stop, ready_flag=ready))
    try:
        # Ready in about a second here; under the VM tier's emulation it took more than 10 s.
        await asyncio.wait_for(ready.wait(), 120)
        yield memo
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
