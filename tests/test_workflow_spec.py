"""Workflow and StatusCheck documents -> models, and the conditionalBranches expression language:
what validates, and what is refused with the field and the fix named. Pure: no cluster."""
import pytest

from kfault_api import expression, spec
from tests.workflows import chaos_mesh_workflows, runnable, unregistered_kinds

NET = {"action": "delay", "mode": "all", "selector": {"labelSelectors": {"app": "web"}}, "delay": {"latency": "10ms"}}


def workflow(*templates, entry="main"):
    return {"apiVersion": spec.API_VERSION, "kind": "Workflow", "metadata": {"name": "wf"},
            "spec": {"entry": entry, "templates": list(templates)}}


def refusal(doc):
    with pytest.raises(spec.InvalidSpec) as refused:
        spec.parse_experiment(doc, for_node=False)
    return str(refused.value)


# ---- the expression language -------------------------------------------------------------

@pytest.mark.parametrize("text,exit_code,stdout,expected", [
    ('exitCode == 0 && stdout == "branch-a"', 0, "branch-a", True),
    ('exitCode == 0 && stdout == "branch-a"', 0, "branch-b", False),
    ("exitCode != 0", 3, "", True),
    ("!(exitCode == 0) || stdout == 'x'", 0, "x", True),
    ("!(exitCode == 0) || stdout == 'x'", 0, "y", False),
    ("exitCode >= 2 && exitCode < 5", 4, "", True),
    ('stdout == "say \\"hi\\""', 0, 'say "hi"', True),
    ("exitCode == -1", -1, "", True),
    ("true", 1, "", True),
    ("exitCode == 0 || exitCode == 1 && stdout == \"no\"", 0, "yes", True),     # && binds tighter
])
def test_expressions_evaluate_as_chaos_mesh_does(text, exit_code, stdout, expected):
    assert expression.parse(text).evaluate(exit_code, stdout) is expected


@pytest.mark.parametrize("text,says", [
    ("exitCode = 0", "unexpected"),
    ('exitCode == "0"', "compares an integer with a string"),
    ("stdout < \"b\"", "compares integers"),
    ("exitCode", "not a condition"),
    ("exitCode == 0 &&", "ends too early"),
    ("(exitCode == 0", "never closed"),
    ("os.system('x') == 0", "unexpected"),
    ("__import__ == 0", "unknown name"),
    ("exitCode + 1 == 2", "unexpected"),
    ("exitCode && stdout", "takes conditions"),
])
def test_expressions_outside_the_grammar_are_refused_saying_why(text, says):
    with pytest.raises(expression.ExpressionError, match=says):
        expression.parse(text)


def test_stdout_is_trimmed_at_both_ends_as_chaos_mesh_does():
    assert expression.trimmed_stdout("branch-b\n") == "branch-b"
    assert expression.trimmed_stdout("  two lines\nhere \n\n") == "two lines\nhere"


# ---- Chaos Mesh's documents ----------------------------------------------------------------

def test_chaos_mesh_workflows_validate_or_name_the_kind_kfault_lacks():
    docs = chaos_mesh_workflows()
    assert set(docs) == {"try-workflow-serial", "try-workflow-parallel", "try-workflow-status-check",
                         "try-workflow-custom-task"}
    for name, doc in docs.items():
        missing = unregistered_kinds(doc)
        if missing:
            assert all(kind in refusal(doc) for kind in missing), name
        model = spec.parse_experiment(runnable(doc), for_node=False)
        assert model.entry == "the-entry"
    serial = spec.parse_experiment(runnable(docs["try-workflow-serial"]), for_node=False)
    assert serial.templates["prefix-suspending"].deadline_ns == 10 * 10**9
    assert serial.templates["workflow-network-chaos"].body.delay.latency_ns == 90 * 10**6
    assert serial.templates["workflow-pod-chaos"].body.template.action == "pod-kill"
    task = spec.parse_experiment(runnable(docs["try-workflow-custom-task"]), for_node=False).templates["the-entry"]
    assert [b.target for b in task.branches if b.expression.evaluate(0, "branch-b")] == ["workflow-network-chaos"]
    check = spec.parse_experiment(docs["try-workflow-status-check"], for_node=False).templates["workflow-status-check"]
    assert (check.body.mode, check.body.http.url, check.body.http.status_codes) == \
        ("Continuous", "http://123.123.123.123", (200, 200))


def test_every_experiment_kind_is_a_template_type_with_its_key():
    """Built from spec.EXPERIMENTS: a kind added there is a templateType with nothing else to add."""
    for kind in spec.EXPERIMENTS.values():
        template = spec.WORKFLOW.schema["properties"]["templates"]["items"]
        assert kind.name in template["properties"]["templateType"]["enum"]
        assert template["properties"][kind.schedule_key]["properties"] == kind.schema["properties"]


# ---- refusals name the field and the fix ---------------------------------------------------

@pytest.mark.parametrize("templates,entry,says", [
    ([{"name": "main", "templateType": "Serial", "children": ["nope"]}], "main",
     "spec.templates[0].children[0]: 'nope' is not valid; use the name of one of spec.templates: main"),
    ([{"name": "main", "templateType": "Suspend"}], "main",
     "spec.templates[0].deadline: missing is not valid; use a deadline such as \"30s\""),
    ([{"name": "main", "templateType": "Suspend", "deadline": "1s"}], "other", "spec.entry: 'other'"),
    ([{"name": "main", "templateType": "NetworkChaos", "deadline": "1s"}], "main",
     "spec.templates[0].networkChaos: missing is not valid; use the spec of what the node makes"),
    ([{"name": "main", "templateType": "NetworkChaos", "deadline": "1s", "networkChaos": NET,
       "children": ["main"]}], "main", "spec.templates[0].children: ['main'] is not valid; use no children with "
                                       "templateType NetworkChaos (it is for templateType Serial or Parallel)"),
    ([{"name": "main", "templateType": "NetworkChaos", "deadline": "1s", "networkChaos": {**NET, "delay": {}}}],
     "main", "spec.templates[0].networkChaos.delay.latency"),
    ([{"name": "main", "templateType": "Serial", "children": ["loop"]},
      {"name": "loop", "templateType": "Parallel", "children": ["main"]}], "main",
     "'main -> loop -> main' is not valid; use templates that do not contain themselves"),
    ([{"name": "main", "templateType": "Task", "task": {"container": {"name": "c", "image": "busybox"}},
       "conditionalBranches": [{"target": "main2", "expression": "exitCode = 0"}]},
      {"name": "main2", "templateType": "Suspend", "deadline": "1s"}], "main",
     "spec.templates[0].conditionalBranches[0].expression: 'exitCode = 0' is not valid; use an expression of "
     "docs/kinds/workflow.md's grammar"),
    ([{"name": "main", "templateType": "Task", "task": {"container": {"name": "c"}}}], "main",
     "spec.templates[0].task.container.image: missing"),
    ([{"name": "main", "templateType": "StatusCheck", "statusCheck": {
        "type": "HTTP", "mode": "Continuous", "http": {"url": "http://x", "criteria": {"statusCode": "200"}}}}],
     "main", "spec.templates[0].deadline: missing is not valid; use a deadline (or statusCheck.duration)"),
    ([{"name": "main", "templateType": "Schedule", "schedule": {"schedule": "@every 1s", "type": "PodChaos"}}],
     "main", "spec.templates[0].deadline: missing"),
    ([{"name": "Main", "templateType": "Suspend", "deadline": "1s"}], "Main", "spec.templates[0].name: 'Main'"),
])
def test_a_bad_workflow_is_refused_naming_the_field_and_the_fix(templates, entry, says):
    assert says in refusal(workflow(*templates, entry=entry))


def test_a_schedule_templates_errors_name_where_the_workflow_holds_them():
    doc = workflow({"name": "main", "templateType": "Schedule", "deadline": "10s",
                    "schedule": {"schedule": "@every 1s", "type": "PodChaos", "networkChaos": NET}})
    assert "spec.templates[0].schedule.networkChaos" in refusal(doc)


@pytest.mark.parametrize("check,says", [
    ({"type": "HTTP"}, "spec.http: missing is not valid; use an http block"),
    ({"type": "HTTP", "http": {"url": "ftp://x", "criteria": {"statusCode": "200"}}}, "spec.http.url"),
    ({"type": "HTTP", "http": {"url": "http://x", "criteria": {"statusCode": "299-200"}}}, "low first"),
    ({"type": "HTTP", "http": {"url": "http://x", "criteria": {"statusCode": "20"}}}, "spec.http.criteria.statusCode"),
    ({"type": "TCP", "http": {"url": "http://x", "criteria": {"statusCode": "200"}}}, "spec.type: 'TCP'"),
])
def test_a_bad_status_check_is_refused_naming_the_field(check, says):
    doc = {"apiVersion": spec.API_VERSION, "kind": "StatusCheck", "metadata": {"name": "c"}, "spec": check}
    assert says in refusal(doc)


def test_a_status_check_takes_chaos_meshs_defaults():
    doc = {"apiVersion": spec.API_VERSION, "kind": "StatusCheck", "metadata": {"name": "c"},
           "spec": {"type": "HTTP", "http": {"url": "http://x", "headers": {"A": ["1", "2"]},
                                             "criteria": {"statusCode": "200-299"}}}}
    check = spec.parse_experiment(doc, for_node=False)
    assert (check.mode, check.interval_s, check.timeout_s, check.failure_threshold, check.success_threshold,
            check.records_limit) == ("Synchronous", 10, 1, 3, 1, 100)
    assert check.http.headers == (("A", "1"), ("A", "2")) and check.http.healthy(250) and not check.http.healthy(300)


def test_a_node_runs_no_workflow():
    doc = workflow({"name": "main", "templateType": "Suspend", "deadline": "1s"})
    with pytest.raises(spec.InvalidSpec, match="an experiment kind here"):
        spec.parse_experiment(doc)
