"""examples/python/networkchaos.py against kmock's API server and the real controller, with
agents whose engines record what they place (tests/test_controller.py's nodes): the example's
own function creates a NetworkChaos, sees AllInjected, and deletes it."""
import asyncio
import importlib.util
import os
import uuid

import pytest
import yaml

from kfault_controller import status
from tests.kube import NS
from tests.test_controller import controller as running_controller
from tests.test_controller import populate

pytestmark = pytest.mark.usefixtures("kubeconfig", "server_side_metadata")
EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "python", "networkchaos.py")


@pytest.fixture
def server_side_metadata(mocker):
    """kmock stores a created object as sent; an API server also gives it its namespace, uid,
    resourceVersion and creationTimestamp, which kopf's patches rely on."""
    from kmock._internal import enums, k8s
    handle = k8s.KubernetesEmulator._handle

    async def create_as_an_api_server_does(self, request):
        if request.resource is not None and request.action == enums.action.CREATE:
            meta = request.data.setdefault("metadata", {})
            meta.setdefault("namespace", request.namespace)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("resourceVersion", "1")
            meta.setdefault("creationTimestamp", status.now_iso())
        return await handle(self, request)
    mocker.patch.object(k8s.KubernetesEmulator, "_handle", create_as_an_api_server_does)


def load_example():
    spec = importlib.util.spec_from_file_location("networkchaos_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def custom_objects_api():
    """The kubernetes client as the example's main() makes it, from this test's KUBECONFIG (kmock):
    named, as the client reads the variable's default once, at import."""
    from kubernetes import client, config
    return client.CustomObjectsApi(config.new_client_from_config(os.environ["KUBECONFIG"]))


async def in_thread(fn, *args):
    """The example blocks: it runs in a thread, while the emulated API server and the controller
    run here. kmock ignores a watch's timeoutSeconds, so the test bounds it."""
    return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout=60)


def test_the_example_document_validates_against_the_crd():
    from kfault_api import crds, schema, spec
    document = load_example().loss_chaos(NS, "from-python", "db", 30)
    crd_schema = yaml.safe_load(crds.render("NetworkChaos"))["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema.validate_against_schema(document, crd_schema, "") == []
    assert spec.parse_experiment(document, for_node=False).action == "loss"


@pytest.mark.asyncio
async def test_the_example_creates_waits_for_all_injected_and_deletes(kmock, nodes):  # noqa: F811
    example = load_example()
    populate(kmock, nodes)
    async with running_controller():
        status = await in_thread(example.run_loss_experiment, custom_objects_api(), NS, "from-python", "db", 30)
    assert [(r["pod"], r["node"]) for r in status["records"]] == [("default/db-1", "node-a")]
    history = nodes["node-a"].engine.history
    assert history[0] == ("apply", f"{NS}/from-python", "default/db-1")
    assert history[-1] == ("revoke", f"{NS}/from-python", "default/db-1") and not nodes["node-a"].engine.placed
    assert kmock.objects["kfault.dev/v1alpha1/networkchaos", NS, "from-python"].deleted


@pytest.mark.asyncio
async def test_the_example_says_why_a_pod_was_not_injected_and_still_deletes(kmock, nodes):  # noqa: F811
    example = load_example()
    populate(kmock, nodes)
    async with running_controller():
        with pytest.raises(RuntimeError) as refused:
            await in_thread(example.run_loss_experiment, custom_objects_api(), NS, "refused", "web", 30)
    assert "AllInjected=False (SomeFailed" in str(refused.value) and "default/web-2: " in str(refused.value)
    assert "sch_fq" in str(refused.value)
    assert kmock.objects["kfault.dev/v1alpha1/networkchaos", NS, "refused"].deleted
