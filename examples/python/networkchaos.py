"""A NetworkChaos from Python with the `kubernetes` client: create it, wait until every selected
pod is injected (the AllInjected condition), then delete it and wait until every node took it back.

    pip install kubernetes
    python examples/python/networkchaos.py --namespace default --app web --loss 30

It uses your kubeconfig, or the pod's service account inside a cluster (which needs create, get,
watch and delete on networkchaos.kfault.dev).
"""
import argparse
import time

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "kfault.dev", "v1alpha1", "networkchaos"


def loss_chaos(namespace, name, app, loss_percent, duration="60s"):
    """Drop `loss_percent`% of the packets of the pods labelled app=`app` in `namespace` for `duration`."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "NetworkChaos",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"action": "loss", "mode": "all", "selector": {"labelSelectors": {"app": app}},
                     "loss": {"loss": str(loss_percent)}, "duration": duration}}


def states(api, namespace, name, timeout_s):
    """The resource as it is now, then after each change (a watch starts with the current state)."""
    stream = watch.Watch().stream(api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                                  field_selector=f"metadata.name={name}", timeout_seconds=timeout_s)
    for event in stream:
        if event["object"]["metadata"]["name"] == name:
            yield event["object"]


def conditions(chaos):
    return {c["type"]: c for c in chaos.get("status", {}).get("conditions", [])}


def refusals(chaos):
    """Why the controller could not inject: each condition that is not True, each pod's error."""
    reasons = [f"{c['type']}={c['status']} ({c['reason']}: {c.get('message', '')})"
               for c in conditions(chaos).values() if c["status"] != "True"]
    errors = [f"{r['pod']}: {r['error']}" for r in chaos.get("status", {}).get("records", []) if r.get("error")]
    return "; ".join(reasons + errors)


def wait_until_injected(api, namespace, name, timeout_s=60):
    """The resource once AllInjected is True. RuntimeError with the controller's reasons where
    it could not inject every pod, TimeoutError where it says nothing in time."""
    for chaos in states(api, namespace, name, timeout_s):
        injected = conditions(chaos).get("AllInjected")
        if injected and injected["status"] == "True":
            return chaos
        if injected or chaos.get("status", {}).get("phase") == "Failed":
            raise RuntimeError(f"{namespace}/{name} not injected: {refusals(chaos)}")
    raise TimeoutError(f"{namespace}/{name}: no AllInjected in {timeout_s} s; is kfault's controller running?")


def delete_and_wait(api, namespace, name, timeout_s=60):
    """Delete it. The controller's finalizer keeps it until every node has taken the fault back."""
    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                return
            raise
        time.sleep(1)
    raise TimeoutError(f"{namespace}/{name} still held after {timeout_s} s: kubectl describe it for the nodes left")


def run_loss_experiment(api, namespace, name, app, loss_percent):
    """Create, wait for AllInjected, delete: the status it had once injected."""
    chaos = loss_chaos(namespace, name, app, loss_percent)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, chaos)
    try:
        return wait_until_injected(api, namespace, name)["status"]
    finally:
        delete_and_wait(api, namespace, name)


def main():
    parser = argparse.ArgumentParser(description="Create a NetworkChaos, wait for AllInjected, delete it.")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--name", default="python-loss")
    parser.add_argument("--app", default="web", help="the pods' app label")
    parser.add_argument("--loss", type=int, default=30, help="percent of packets dropped")
    args = parser.parse_args()
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.CustomObjectsApi()
    try:
        status = run_loss_experiment(api, args.namespace, args.name, args.app, args.loss)
    except ApiException as err:
        raise SystemExit(f"the API server refused: {err.status} {err.reason}: {err.body}") from None
    except (RuntimeError, TimeoutError) as err:
        raise SystemExit(str(err)) from None
    for record in status["records"]:
        print(f"injected {record['pod']} on {record['node']} at {record['injectedAt']}")
    print(f"deleted {args.namespace}/{args.name}: every node took it back")


if __name__ == "__main__":
    main()
