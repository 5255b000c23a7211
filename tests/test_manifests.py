"""Offline checks of manifests/: every file parses, the CRDs are what api/kfault_api/schema.py renders
and are valid structural schemas, and every example validates against its CRD."""
import glob
import os
import shutil
import subprocess

import pytest
import yaml

from kfault_api import crds, schema, spec
from tests import workflows

ROOT = os.path.join(os.path.dirname(__file__), "..")
MANIFESTS = os.path.join(ROOT, "manifests")
# Keywords a structural schema may use (apiextensions.k8s.io/v1, JSONSchemaProps).
KEYWORDS = {"type", "properties", "required", "items", "enum", "pattern", "minimum", "maximum", "default",
            "description", "format", "additionalProperties", "x-kubernetes-preserve-unknown-fields"}
TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def manifest_files():
    return sorted(glob.glob(os.path.join(MANIFESTS, "**", "*.yaml"), recursive=True))


def crd_of(kind):
    with open(os.path.join(MANIFESTS, "crds", f"{kind.lower()}.yaml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: os.path.relpath(p, MANIFESTS))
def test_every_manifest_parses_into_kubernetes_objects(path):
    with open(path, encoding="utf-8") as handle:
        docs = [d for d in yaml.safe_load_all(handle) if d]
    assert docs
    for doc in docs:
        assert {"apiVersion", "kind"} <= set(doc), doc
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"]


# Each kustomization and the folder it owns: the base (core kinds and our CRDs, for any cluster)
# and monitoring/ (the Prometheus Operator's kinds and the dashboard), applied after it.
KUSTOMIZATIONS = ("", "monitoring")


def kustomization(folder=""):
    with open(os.path.join(MANIFESTS, folder, "kustomization.yaml"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def test_each_kustomization_lists_every_manifest_of_its_folder():
    on_disk = {os.path.relpath(p, MANIFESTS) for p in manifest_files()}
    listed = set()
    for folder in KUSTOMIZATIONS:
        listed |= {os.path.join(folder, r) for r in kustomization(folder)["resources"]}
        listed.add(os.path.join(folder, "kustomization.yaml"))
    assert listed == on_disk


def built_image_names():
    """What `make images` tags (scripts/build-images): localhost/kfault-NAME:the agent's version."""
    with open(os.path.join(ROOT, "agent", "pyproject.toml"), encoding="utf-8") as handle:
        version = next(line.split('"')[1] for line in handle if line.startswith("version = "))
    return {f"localhost/kfault-{name}:{version}" for name in ("agent", "controller")}


def test_manifests_name_the_images_make_images_builds():
    named = set()
    for path in ("agent/daemonset.yaml", "controller/deployment.yaml"):
        with open(os.path.join(MANIFESTS, path), encoding="utf-8") as handle:
            for doc in yaml.safe_load_all(handle):
                if doc and doc["kind"] in ("DaemonSet", "Deployment"):
                    named |= {c["image"] for c in doc["spec"]["template"]["spec"]["containers"]}
    assert named == built_image_names()
    images = kustomization()["images"]
    assert {f"{i['newName']}:{i['newTag']}" for i in images} == named


@pytest.mark.skipif(not shutil.which("kubectl"), reason="needs kubectl (its built-in kustomize renders offline)")
def test_a_user_sets_the_image_names_in_a_kustomization(tmp_path):
    overlay = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
               "resources": [os.path.relpath(MANIFESTS, tmp_path)],
               "images": [{"name": "localhost/kfault-agent", "newName": "registry.example/kfault-agent", "newTag": "7"},
                          {"name": "localhost/kfault-controller", "newName": "registry.example/ctl", "newTag": "7"}]}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    out = subprocess.run(["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    images = {c["image"] for d in yaml.safe_load_all(out.stdout) if d and d["kind"] in ("DaemonSet", "Deployment")
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {"registry.example/kfault-agent:7", "registry.example/ctl:7"}


@pytest.mark.parametrize("kind", sorted(spec.KINDS))
def test_crds_are_rendered_from_the_one_schema(kind):
    with open(os.path.join(MANIFESTS, "crds", f"{kind.lower()}.yaml"), encoding="utf-8") as handle:
        assert handle.read() == crds.render(kind), "run: python -m kfault_api.crds manifests/crds"


def structural_problems(node, path="openAPIV3Schema"):
    problems = []
    unknown = set(node) - KEYWORDS
    if unknown:
        problems.append(f"{path}: keywords {sorted(unknown)} are not allowed")
    if node.get("type") not in TYPES and not node.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path}: every node needs a type")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    for name, child in node.get("properties", {}).items():
        problems += structural_problems(child, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            problems += structural_problems(node[key], f"{path}.{key}")
    if "default" in node:
        problems += [f"{path}: default {e}" for e in schema.validate_against_schema(node["default"], node, path)]
    return problems


@pytest.mark.parametrize("kind", sorted(spec.KINDS))
def test_crds_are_structural_with_status_printer_columns_and_names(kind):
    doc = crd_of(kind)
    version = doc["spec"]["versions"][0]
    assert structural_problems(version["schema"]["openAPIV3Schema"]) == []
    assert version["subresources"] == {"status": {}}
    columns = ["Action", "Mode", "Phase", "Age"] if spec.KINDS[kind].is_experiment else \
        [c["name"] for c in crds.COLUMNS_OF[kind]]
    assert columns[-1] == "Age" and len(columns) >= 3
    assert [c["name"] for c in version["additionalPrinterColumns"]] == columns
    assert "chaos" in doc["spec"]["names"]["categories"] and doc["spec"]["names"]["shortNames"]
    assert doc["metadata"]["name"] == f"{doc['spec']['names']['plural']}.{doc['spec']['group']}"


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "examples", "*.yaml"))),
                         ids=os.path.basename)
def test_every_example_validates_against_its_crd(path):
    for doc in spec.load_documents(path):
        crd_schema = crd_of(doc["kind"])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert schema.validate_against_schema(doc, crd_schema, "") == []
        spec.parse_experiment(doc, for_node=False)   # and the checks a schema can't express


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "tests", "chaos_mesh", "*.yaml"))),
                         ids=os.path.basename)
def test_chaos_mesh_documents_validate_after_changing_only_api_version(path):
    """Chaos Mesh documents for every action kfault supports (tests/chaos_mesh, in our words).
    A Workflow of Chaos Mesh's naming a kind kfault has not yet (StressChaos) is refused naming it."""
    for doc in spec.load_documents(path):
        missing = workflows.unregistered_kinds(doc)
        if missing:
            with pytest.raises(spec.InvalidSpec) as refused:
                spec.parse_experiment(doc, for_node=False)
            assert all(kind in str(refused.value) for kind in missing)
            continue
        crd_schema = crd_of(doc["kind"])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert schema.validate_against_schema(doc, crd_schema, "") == [], doc["metadata"]["name"]
        spec.parse_experiment(doc, for_node=False)


# What a bare cluster (minikube, kind) knows without our CRDs: the base may hold nothing else,
# so `kubectl apply -k manifests/` works there (the Prometheus Operator's kinds are monitoring/'s).
CORE_KINDS = {("v1", "Namespace"), ("v1", "ServiceAccount"), ("v1", "Service"), ("v1", "ConfigMap"),
              ("v1", "Secret"), ("apps/v1", "DaemonSet"), ("apps/v1", "Deployment"),
              ("rbac.authorization.k8s.io/v1", "ClusterRole"), ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
              ("rbac.authorization.k8s.io/v1", "Role"), ("rbac.authorization.k8s.io/v1", "RoleBinding"),
              ("apiextensions.k8s.io/v1", "CustomResourceDefinition")}


def kustomize(folder):
    out = subprocess.run(["kubectl", "kustomize", os.path.join(MANIFESTS, folder)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.skipif(not shutil.which("kubectl"), reason="needs kubectl (its built-in kustomize renders offline)")
def test_the_base_install_holds_only_core_kinds_and_our_crds():
    docs = kustomize("")
    kinds = {(d["apiVersion"], d["kind"]) for d in docs}
    assert kinds <= CORE_KINDS, f"not on a bare cluster: {sorted(kinds - CORE_KINDS)}"
    crds = sorted(d["spec"]["names"]["kind"] for d in docs if d["kind"] == "CustomResourceDefinition")
    assert crds == sorted(spec.KINDS)
    assert {"Namespace", "DaemonSet", "Deployment", "ClusterRole", "ClusterRoleBinding"} <= {k for _, k in kinds}


@pytest.mark.skipif(not shutil.which("kubectl"), reason="needs kubectl (its built-in kustomize renders offline)")
def test_monitoring_is_a_kustomization_of_its_own():
    kinds = sorted(d["kind"] for d in kustomize("monitoring"))
    assert kinds == ["ConfigMap", "PrometheusRule", "ServiceMonitor"]


def test_the_controllers_role_covers_every_kind():
    """Every kind is watched and patched with its status; a Schedule's runs are created and deleted."""
    with open(os.path.join(MANIFESTS, "controller", "rbac.yaml"), encoding="utf-8") as handle:
        role = next(d for d in yaml.safe_load_all(handle) if d["kind"] == "ClusterRole")

    def verbs(resource):
        return {v for rule in role["rules"] if "kfault.dev" in rule["apiGroups"] and resource in rule["resources"]
                for v in rule["verbs"]}
    for kind in spec.KINDS.values():
        assert {"get", "list", "watch", "patch"} <= verbs(kind.plural), kind.name
        assert "patch" in verbs(f"{kind.plural}/status"), kind.name
        if kind.is_experiment:
            assert {"create", "delete"} <= verbs(kind.plural), kind.name
    assert "update" in verbs(f"{spec.SCHEDULE.plural}/finalizers")    # blockOwnerDeletion on its runs
    # A Workflow's nodes: Schedules, StatusChecks and Task pods it creates and deletes, their logs.
    assert "update" in verbs(f"{spec.WORKFLOW.plural}/finalizers")
    for kind in (spec.SCHEDULE, spec.STATUS_CHECK):
        assert {"create", "delete"} <= verbs(kind.plural), kind.name
    core = {(resource, verb) for rule in role["rules"] if "" in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}
    assert {("pods", "create"), ("pods", "delete"), ("pods/log", "get")} <= core
