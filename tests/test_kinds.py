"""A kind is added in one place per layer: each check below fails when a kind is registered in
one layer and missing in another. The layers, and the one registry of kinds in each:

  api          kfault_api.spec.EXPERIMENTS (Schedule: spec.SCHEDULE); its spec schema is
               schema.<KIND>_SPEC (NETWORK_CHAOS_SPEC); spec.KINDS is the two together
  manifests    manifests/crds/<kind>.yaml (rendered from spec.KINDS by `python -m kfault_api.crds`),
               listed in manifests/kustomization.yaml; the controller's role: test_manifests.py
  controller   kfault_controller.placement.PLACEMENT (the handlers and Schedule read spec.EXPERIMENTS)
  agent        kfault_agent.node.ENGINE_TYPES (each engine's `kind`); `kfault run --target`'s help
  metrics      what each engine exports through the collector, on the dashboard and in the alert
               on faults that outlive their experiment
  examples     examples/*.yaml, and Chaos Mesh's own documents in tests/chaos_mesh/*.yaml
  docs         docs/kinds/<kind>.md, and every metric family named in docs/

CONTRIBUTING.md's "How to add a kind" lists the files. No kernel, no cluster."""
import glob
import os
import re

import pytest
import yaml

from kfault_agent import cli, node
from kfault_agent.metrics import EngineCollector
from kfault_api import schema, spec
from kfault_controller import placement
from tests import grafana
from tests.test_engines import unloaded

ROOT = os.path.join(os.path.dirname(__file__), "..")
MANIFESTS = os.path.join(ROOT, "manifests")
DOCS = os.path.join(ROOT, "docs")
OUTLIVES_ALERT = "KfaultFaultOutlivesExperiment"     # an agent's fault the controller no longer injects


def schema_name(kind):
    """The schema.py constant of a kind's spec: IOChaos -> IO_CHAOS_SPEC."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", kind.name).upper() + "_SPEC"


def kinds_in(paths):
    """The kinds of every document in `paths`."""
    return {doc["kind"] for path in paths for doc in spec.load_documents(path)}


def families_of(engine_type):
    """The metric families one kind's engine exports, as the Prometheus collector reads them."""
    return {family.name for family in EngineCollector([unloaded(engine_type)]).collect()}


def mentions(text, family):
    """`text` names the family (a counter's samples end in _total)."""
    return re.search(rf"\b{family}(_total)?\b", text) is not None


# ---- api: one Kind row per kind ----------------------------------------------------------

def test_every_spec_schema_belongs_to_exactly_one_kind():
    written = {name for name, value in vars(schema).items() if name.endswith("_SPEC") and isinstance(value, dict)}
    assert written == {schema_name(kind) for kind in spec.EXPERIMENTS.values()}, \
        "a spec schema in schema.py needs its Kind row in spec.EXPERIMENTS (and the reverse)"
    for kind in spec.EXPERIMENTS.values():
        assert getattr(schema, schema_name(kind)) is kind.schema, kind.name


def test_kinds_have_distinct_names_and_experiments_their_model():
    kinds = list(spec.KINDS.values())
    for attribute in ("name", "short_name", "plural"):
        values = [getattr(kind, attribute) for kind in kinds]
        assert len(set(values)) == len(values), attribute
    keys = [kind.schedule_key for kind in spec.EXPERIMENTS.values()]
    assert None not in keys and len(set(keys)) == len(keys)
    assert not spec.SCHEDULE.is_experiment
    for kind in spec.EXPERIMENTS.values():
        assert issubclass(kind.model, spec.Experiment), kind.name


# ---- manifests: one CRD file per kind, installed by the kustomization --------------------

def test_manifests_crds_hold_one_file_per_kind():
    on_disk = {os.path.basename(p) for p in glob.glob(os.path.join(MANIFESTS, "crds", "*.yaml"))}
    assert on_disk == {f"{kind.lower()}.yaml" for kind in spec.KINDS}, "run: python -m kfault_api.crds manifests/crds"


def test_the_kustomization_installs_every_kinds_crd():
    with open(os.path.join(MANIFESTS, "kustomization.yaml"), encoding="utf-8") as handle:
        listed = {r for r in yaml.safe_load(handle)["resources"] if r.startswith("crds/")}
    assert listed == {f"crds/{kind.lower()}.yaml" for kind in spec.KINDS}


# ---- controller: how each experiment is placed -------------------------------------------

def test_the_controller_says_how_every_experiment_is_placed():
    assert placement.PLACEMENT.keys() == spec.EXPERIMENTS.keys()


# ---- agent: one engine per experiment ----------------------------------------------------

def test_every_experiment_has_exactly_one_engine():
    kinds = [engine_type.kind.name for engine_type in node.ENGINE_TYPES]
    assert sorted(kinds) == sorted(spec.EXPERIMENTS), "node.ENGINE_TYPES: one engine per kind of spec.EXPERIMENTS"


def test_kfault_run_says_the_targets_of_every_experiment(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--help"])
    shown = capsys.readouterr().out
    assert [kind for kind in spec.EXPERIMENTS if kind not in shown] == [], "kfault run --target's help"


# ---- metrics: each engine's families, on the dashboard and in the alerts -----------------

def test_every_experiment_exports_metric_families_of_its_own():
    seen = {}
    for engine_type in node.ENGINE_TYPES:
        families = families_of(engine_type)
        assert families, f"{engine_type.kind.name} exports no metric family"
        shared = {f: seen[f] for f in families if f in seen}
        assert not shared, f"{engine_type.kind.name} exports families of {shared}"
        seen.update(dict.fromkeys(families, engine_type.kind.name))


@pytest.mark.parametrize("engine_type", node.ENGINE_TYPES, ids=lambda t: t.kind.name)
def test_every_experiment_is_on_the_dashboard_and_in_the_outlives_alert(engine_type):
    families = families_of(engine_type)
    queries = [expr for _, _, expr in grafana.panel_queries(grafana.dashboard())]
    assert any(mentions(q, f) for q in queries for f in families), \
        f"no panel of the dashboard shows {engine_type.kind.name}'s {sorted(families)}"
    alert = next(rule["expr"] for group in grafana.rule_groups()["groups"] for rule in group["rules"]
                 if rule.get("alert") == OUTLIVES_ALERT)
    assert any(mentions(alert, f) for f in families), \
        f"{OUTLIVES_ALERT} misses {engine_type.kind.name}: count one of {sorted(families)} by experiment"


# ---- examples and Chaos Mesh's documents -------------------------------------------------

def test_every_kind_has_an_example():
    assert kinds_in(glob.glob(os.path.join(ROOT, "examples", "*.yaml"))) == set(spec.KINDS)


def test_every_kind_has_chaos_mesh_documents():
    """Every kind Chaos Mesh has (SyscallChaos is kfault's own: Chaos Mesh has no such kind)."""
    assert kinds_in(glob.glob(os.path.join(ROOT, "tests", "chaos_mesh", "*.yaml"))) == \
        {name for name, kind in spec.KINDS.items() if kind.chaos_mesh}


# ---- docs ----------------------------------------------------------------------------------

def docs_text():
    texts = []
    for path in glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True):
        with open(path, encoding="utf-8") as handle:
            texts.append(handle.read())
    return "\n".join(texts)


def test_every_kind_has_a_reference_page():
    missing = [kind for kind in spec.KINDS if not os.path.isfile(os.path.join(DOCS, "kinds", f"{kind.lower()}.md"))]
    assert missing == [], "docs/kinds/<kind>.md: every field, its default, what differs from Chaos Mesh"


def test_every_metric_family_is_documented():
    text = docs_text()
    missing = sorted(f for engine_type in node.ENGINE_TYPES for f in families_of(engine_type) if not mentions(text, f))
    assert missing == []
