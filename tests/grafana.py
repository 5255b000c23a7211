"""What Grafana and the Prometheus Operator read from manifests/monitoring/: the dashboard's queries, with
its variables replaced as Grafana replaces them, and the PrometheusRule's groups as a rule file."""
import json
import os
import re

import yaml

MONITORING = os.path.join(os.path.dirname(__file__), "..", "manifests", "monitoring")
DASHBOARD = os.path.join(MONITORING, "grafana-dashboard.json")
PROMETHEUS_RULE = os.path.join(MONITORING, "prometheusrule.yaml")
# Grafana's built-in variables, at what the dashboard would use over its default 30 minutes
# (at least four scrapes for $__rate_interval, whatever the scrape interval in the tests).
BUILT_IN = {"__rate_interval": "1m", "__interval": "15s", "__range": "30m"}
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
LABEL_VALUES = re.compile(r"label_values\((.+),\s*(\w+)\)")


def dashboard():
    with open(DASHBOARD, encoding="utf-8") as handle:
        return json.load(handle)


def panels(board):
    """Every panel that queries, rows' collapsed panels included."""
    for panel in board["panels"]:
        yield from panel.get("panels", [])
        if panel.get("targets"):
            yield panel


def substitute(expr, board, overrides=None):
    """`expr` with each variable as Grafana sends it: built-ins at BUILT_IN, a query variable
    at its All value (every experiment). An unknown variable is an error, not a silent miss."""
    values = {**BUILT_IN, **{v["name"]: v.get("allValue", ".*") for v in board["templating"]["list"]
                             if v["type"] == "query"}, **(overrides or {})}

    def value(match):
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"the dashboard uses ${name}, which it does not define")
        return values[name]
    return VARIABLE.sub(value, expr)


def panel_queries(board):
    """(panel title, refId, PromQL) of every target of every panel, variables replaced."""
    return [(panel["title"], target["refId"], substitute(target["expr"], board))
            for panel in panels(board) for target in panel["targets"]]


def variable_queries(board):
    """(variable name, PromQL) for each query variable: Grafana's label_values(metric, label)
    asks which values the label has, which PromQL asks as count by (label) (metric)."""
    queries = []
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            metric, label = LABEL_VALUES.fullmatch(variable["query"]["query"]).groups()
            queries.append((variable["name"], f"count by ({label}) ({metric})"))
    return queries


def rule_groups():
    """The PrometheusRule's spec.groups, as a Prometheus rule file holds them."""
    with open(PROMETHEUS_RULE, encoding="utf-8") as handle:
        rule = yaml.safe_load(handle)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    return {"groups": rule["spec"]["groups"]}


def write_rule_file(path):
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(rule_groups(), handle, sort_keys=False)
    return path
