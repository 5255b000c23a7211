"""python -m kfault_controller.dryrun -f FILE [--kubeconfig PATH] [--allow-cross-namespace]

What applying FILE would hit, changing nothing: for each experiment, a Schedule's next run and
each node of a Workflow, which pods on which nodes it selects now, and each refusal it would get
(the spec, a namespace's consent, a node without an agent, a Task's privileges, a StatusCheck's
address). It reads pods, nodes and namespaces once (GET and LIST only) with the kubeconfig's
rights, and uses the controller's own selection and checks. The agent's `kfault` has no
Kubernetes client and gets none: this is the controller's."""
import argparse
import functools
import ipaddress
import os
import sys

import kubernetes

from kfault_api import spec as api_spec
from kfault_controller import cluster, selection
from kfault_controller.agents import agent_of
from kfault_controller.cron import Cron, CronError
from kfault_controller.settings import Settings
from kfault_controller.status import iso, now
from kfault_controller.statuscheck import probe
from kfault_controller.workflow import task


def read_cluster(agent_namespace):
    """(ClusterView, namespace -> annotations): one LIST of pods, nodes and namespaces. Blocking."""
    api = kubernetes.client.CoreV1Api()
    pods = cluster.PodCache(functools.partial(agent_of, namespace=agent_namespace))
    for body in cluster.list_pods():
        pods.put(body)
    node_labels = {n.metadata.name: dict(n.metadata.labels or {}) for n in api.list_node().items}
    annotations = {n.metadata.name: dict(n.metadata.annotations or {}) for n in api.list_namespace().items}
    return cluster.ClusterView(list(pods.pods.values()), pods.agents(), node_labels), annotations


def hits(kind, spec, namespace, view, annotations, cross_namespace):
    """Lines saying which pods on which nodes an experiment of `kind` with `spec` selects, or why not."""
    scope = selection.Scope(home=namespace, annotations=annotations, cross_namespace=cross_namespace)
    if "remoteCluster" in spec:
        return [f"refused: spec.remoteCluster {spec['remoteCluster']!r}: kfault injects only in its own cluster"]
    refused = selection.refusals(spec, scope)
    if refused:
        return [f"refused: {reason}" for reason in refused]
    everything = {**spec, "mode": "all"}
    try:
        matching = selection.select(everything, view.pods, scope, view.node_labels)
        selection.choose(matching, spec.get("mode"), spec.get("value"))     # the mode's value is checked
    except selection.SelectionError as err:
        return [f"refused: {err}"]
    if not matching:
        return ["no pod matches: nothing would be placed"]
    mode = spec.get("mode", "one")
    lines = [] if mode == "all" else [f"mode {mode}" + (f" {spec['value']}" if spec.get("value") else "") +
                                      f": chosen at each placement among these {len(matching)}"]
    by_node = {}
    for pod in matching:
        by_node.setdefault(pod["spec"].get("nodeName", ""), []).append(
            f"{pod['metadata']['namespace']}/{pod['metadata']['name']}")
    for node, names in sorted(by_node.items()):
        if spec.get("action") == "pod-kill":
            where = "deleted through the API server"
        elif node in view.agents:
            where = "its agent would place it"
        else:
            where = "refused: no ready kfault agent on this node"
        lines.append(f"node {node or '(unscheduled)'}: {', '.join(sorted(names))} ({where})")
    return lines


def describe(model, view, annotations, cross_namespace, moment):
    """(heading, lines) per thing the document would run."""
    if isinstance(model, api_spec.Experiment):
        kind = next(k for k in api_spec.EXPERIMENTS.values() if isinstance(model, k.model))
        yield f"{kind.name} {model.key}", hits(kind, model.raw["spec"], model.namespace, view, annotations,
                                               cross_namespace)
    elif isinstance(model, api_spec.Schedule):
        yield f"Schedule {model.key}: next run {next_run(model, moment)}", hits(
            api_spec.EXPERIMENTS[model.type], model.raw["spec"][api_spec.EXPERIMENTS[model.type].schedule_key],
            model.namespace, view, annotations, cross_namespace)
    elif isinstance(model, api_spec.StatusCheck):
        yield f"StatusCheck {model.key}", [check_target(model)]
    elif isinstance(model, api_spec.Workflow):
        raws = {t["name"]: t for t in model.raw["spec"]["templates"]}
        for name, template in model.templates.items():
            heading = f"Workflow {model.key} template {name} ({template.type})"
            if template.type in api_spec.EXPERIMENTS:
                yield heading, hits(api_spec.EXPERIMENTS[template.type], raws[name][template.spec_key],
                                    model.namespace, view, annotations, cross_namespace)
            elif template.type == "Schedule":
                kind = api_spec.EXPERIMENTS[template.body.type]
                yield heading, hits(kind, raws[name]["schedule"][kind.schedule_key], model.namespace, view,
                                    annotations, cross_namespace)
            elif template.type == "StatusCheck":
                yield heading, [check_target(template.body)]
            elif template.type == "Task":
                try:
                    task.pod_document({"name": "dry-run", "namespace": model.namespace, "labels": {}}, template)
                    yield heading, [f"a pod of {template.task['container']['image']} (non-root, no privileges)"]
                except task.TaskRefused as err:
                    yield heading, [f"refused: {err}"]


def next_run(model, moment):
    try:
        return iso(Cron(model.schedule).next_start(moment, moment))
    except CronError as err:
        return f"never: spec.schedule {model.schedule!r}: {err}"


def check_target(check):
    host = check.http.url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    try:
        why = probe.refused(str(ipaddress.ip_address(host)))
    except ValueError:
        why = None
    return f"refused: {why}" if why else f"{check.http.method} {check.http.url} from the controller's network"


def main(argv=None, out=sys.stdout):
    parser = argparse.ArgumentParser(prog="python -m kfault_controller.dryrun")
    parser.add_argument("-f", "--file", required=True, help="the documents (experiments, Schedules, Workflows, ...)")
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG or ~/.kube/config")
    parser.add_argument("--allow-cross-namespace", action="store_true",
                        help="as the controller runs with it (its flag)")
    args = parser.parse_args(argv)
    try:
        models = [api_spec.parse_experiment(doc, for_node=False) for doc in api_spec.load_documents(args.file)]
    except api_spec.InvalidSpec as err:
        for error in err.errors:
            print(f"{args.file}: refused: {error}", file=out)
        return 1
    # $KUBECONFIG read now: the client fixed its default path when it was imported.
    kubernetes.config.load_kube_config(config_file=args.kubeconfig or os.environ.get("KUBECONFIG"))
    view, annotations = read_cluster(Settings().with_environment().agent_namespace)
    for model in models:
        for heading, lines in describe(model, view, annotations, args.allow_cross_namespace, now()):
            print(heading, file=out)
            for line in lines:
                print(f"  {line}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
