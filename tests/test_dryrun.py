"""The dry run (python -m kfault_controller.dryrun) against kmock's emulator: which pods on which
nodes each experiment, a Schedule's next run and each node of a Workflow would hit, and each
refusal, with nothing changed (only GET and LIST requests)."""
import asyncio
import io
import os

import pytest

from kfault_controller import dryrun
from tests.test_controller import populate

pytestmark = pytest.mark.usefixtures("kubeconfig")
ROOT = os.path.join(os.path.dirname(__file__), "..")
DOCUMENTS = """
apiVersion: kfault.dev/v1alpha1
kind: NetworkChaos
metadata: {name: reach-kube-system}
spec:
  action: loss
  loss: {loss: "10"}
  mode: all
  selector: {namespaces: [kube-system], labelSelectors: {app: web}}
---
apiVersion: kfault.dev/v1alpha1
kind: Schedule
metadata: {name: hourly}
spec:
  schedule: "@hourly"
  type: PodChaos
  podChaos: {action: pod-kill, mode: one, selector: {labelSelectors: {app: db}}}
---
apiVersion: kfault.dev/v1alpha1
kind: Workflow
metadata: {name: day}
spec:
  entry: main
  templates:
    - {name: main, templateType: Serial, children: [slow, root-task, metadata]}
    - name: slow
      templateType: NetworkChaos
      deadline: 10s
      networkChaos: {action: delay, delay: {latency: 10ms}, mode: all, selector: {labelSelectors: {app: web}}}
    - name: root-task
      templateType: Task
      task: {container: {name: c, image: busybox, securityContext: {privileged: true}}}
    - name: metadata
      templateType: StatusCheck
      statusCheck: {type: HTTP, http: {url: "http://169.254.169.254/", criteria: {statusCode: "200"}}}
"""


@pytest.mark.asyncio
async def test_the_dry_run_prints_what_each_thing_would_hit_and_each_refusal(kmock, nodes, tmp_path):
    populate(kmock, nodes)
    del kmock.objects["v1/pods", "kfault-system", "kfault-agent-node-b"]
    path = tmp_path / "day.yaml"
    path.write_text(DOCUMENTS)
    out = io.StringIO()
    before = len(list(kmock))
    assert await asyncio.to_thread(dryrun.main, ["-f", str(path)], out) == 0
    printed = out.getvalue()
    print(printed)
    assert "NetworkChaos default/reach-kube-system\n  refused: spec.selector: kube-system is protected" in printed
    assert "Schedule default/hourly: next run " in printed
    assert "mode one: chosen at each placement among these 1\n  node node-a: default/db-1 (deleted through " \
           "the API server)" in printed
    assert "Workflow default/day template slow (NetworkChaos)\n  node node-a: default/web-1 (its agent would " \
           "place it)\n  node node-b: default/web-2 (refused: no ready kfault agent on this node)" in printed
    assert "template root-task (Task)\n  refused: task.container.securityContext.privileged" in printed
    assert "template metadata (StatusCheck)\n  refused: 169.254.169.254 is a link-local" in printed
    methods = {str(r.method) for r in list(kmock)[before:]}
    assert methods <= {"method.GET", "GET"}, methods


def test_a_bad_document_is_refused_naming_the_field(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: kfault.dev/v1alpha1\nkind: Workflow\nmetadata: {name: w}\n"
                    "spec: {entry: nowhere, templates: [{name: a, templateType: Suspend, deadline: 1s}]}\n")
    out = io.StringIO()
    assert dryrun.main(["-f", str(path)], out) == 1
    assert "spec.entry: 'nowhere' is not valid" in out.getvalue()
