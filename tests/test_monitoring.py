"""Offline checks of the dashboard and the alerts (manifests/monitoring/grafana-dashboard.json,
manifests/monitoring/prometheusrule.yaml): promtool accepts the rules and every query, and each alert fires
when, and only when, its unit tests (tests/monitoring/alerts_test.yaml) say. That every query
returns data from a real agent and controller is tests/kernel/test_dashboard.py's."""
import os
import shutil
import subprocess

import pytest
import yaml

from tests import grafana

pytestmark = pytest.mark.skipif(not shutil.which("promtool"), reason="needs promtool (Debian: prometheus)")
ALERT_TESTS = os.path.join(os.path.dirname(__file__), "monitoring", "alerts_test.yaml")


def promtool(*args, cwd=None):
    out = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60, cwd=cwd)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_prometheus_rule_groups_pass_promtool_check(tmp_path):
    rules = grafana.write_rule_file(tmp_path / "rules.yaml")
    count = sum(len(group["rules"]) for group in grafana.rule_groups()["groups"])
    assert f"SUCCESS: {count} rules found" in promtool("check", "rules", str(rules))


def test_each_alert_fires_when_its_unit_tests_say(tmp_path):
    grafana.write_rule_file(tmp_path / "rules.yaml")
    shutil.copy(ALERT_TESTS, tmp_path / "alerts_test.yaml")
    promtool("test", "rules", "alerts_test.yaml", cwd=tmp_path)
    with open(ALERT_TESTS, encoding="utf-8") as handle:
        tested = {case["alertname"] for test in yaml.safe_load(handle)["tests"] for case in test["alert_rule_test"]}
    alerts = {rule["alert"] for group in grafana.rule_groups()["groups"] for rule in group["rules"]}
    assert tested == alerts, f"alerts without a unit test: {sorted(alerts - tested)}"


def test_every_dashboard_query_is_valid_promql(tmp_path):
    """Each panel's and variable's query, variables replaced, as a recording rule promtool parses."""
    board = grafana.dashboard()
    queries = [expr for _, _, expr in grafana.panel_queries(board)] + [q for _, q in grafana.variable_queries(board)]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"kfault:dashboard_query_{n}", "expr": expr}
                                                        for n, expr in enumerate(queries)]}]}
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(queries)} rules found" in promtool("check", "rules", str(tmp_path / "queries.yaml"))


def test_dashboard_imports_with_any_prometheus_data_source():
    """Every panel and query names the data source through the DS_PROMETHEUS variable, so an
    import (or Grafana's sidecar) binds it to the user's Prometheus; panel ids are unique."""
    board = grafana.dashboard()
    (source,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert (source["name"], source["query"]) == ("DS_PROMETHEUS", "prometheus")
    wanted = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    queried = list(grafana.panels(board))
    assert queried
    for panel in queried:
        assert panel["datasource"] == wanted, panel["title"]
        assert all(t["datasource"] == wanted and t["expr"].strip() for t in panel["targets"]), panel["title"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.skipif(not shutil.which("kubectl"), reason="needs kubectl (its built-in kustomize renders offline)")
def test_kustomize_installs_the_rules_and_the_dashboard_for_grafanas_sidecar():
    out = subprocess.run(["kubectl", "kustomize", grafana.MONITORING], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}
    assert docs["PrometheusRule", "kfault"]["spec"] == grafana.rule_groups()
    dashboard = docs["ConfigMap", "kfault-grafana-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert yaml.safe_load(dashboard["data"]["grafana-dashboard.json"]) == grafana.dashboard()
