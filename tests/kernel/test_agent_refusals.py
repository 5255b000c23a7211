"""Every way an Apply can fail becomes that target's error, never a failed call: each failure
is made to happen for real where this kernel allows (a namespace or interface deleted under the
agent, a cgroup gone, a foreign root qdisc, too many overlapping rules), else the engine is made
to raise it (the server's mapping is what is under test)."""
import contextlib
import errno
import json
import os
import subprocess
import uuid

import grpc
import pytest
from pyroute2 import NetlinkError

from kfault_agent import errors, server
from kfault_agent.engines import netfault, podfault
from kfault_agent.kernel import topology
from kfault_api import layout
from kfault_api.rpc import agent_pb2 as pb
from kfault_api.rpc import agent_pb2_grpc as pb_grpc

GOOD = {"action": "partition"}


@contextlib.contextmanager
def local_agent(engines, capabilities):
    """An agent serving `engines` on loopback; `hooks[target text](resolved)` runs after a
    target is resolved and before it is placed: the moment to pull something away."""
    hooks = {}

    def hooked(resolve):
        def resolve_then_hook(target, experiment):
            resolved = resolve(target, experiment)
            hooks.get(target, lambda _: None)(resolved)
            return resolved
        return resolve_then_hook

    for engine in engines:
        engine.resolve = hooked(engine.resolve)
    service = server.AgentService(engines, capabilities)
    grpc_server, port = server.serve(service, "127.0.0.1:0")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb_grpc.AgentStub(channel), hooks
    finally:
        channel.close()
        grpc_server.stop(None)
        service.close()


@pytest.fixture
def net_agent(datapath, capabilities):
    engine = netfault.NetFaultEngine(datapath, capabilities, lease_s=30)
    with local_agent([engine], capabilities) as (stub, hooks):
        yield stub, hooks, engine


@pytest.fixture
def pod_agent(tmp_path):
    engine = podfault.PodFaultEngine(lease_s=30, guard=podfault.ThawGuard(str(tmp_path)))
    with local_agent([engine], {}) as (stub, hooks):
        yield stub, hooks, engine
    engine.guard.close()


@pytest.fixture
def empty_cgroup():
    path = os.path.join(topology.cgroup2_mount(), "kft-refusal-" + uuid.uuid4().hex[:6])
    os.mkdir(path)
    yield path
    if os.path.isdir(path):
        os.rmdir(path)


def apply(stub, targets, body=GOOD, kind="NetworkChaos", name="default/refusal"):
    """Apply; the reply's results as [(target, error)] ("" for placed)."""
    response = stub.Apply(pb.ApplyRequest(experiment=name, kind=kind, spec_json=json.dumps(body),
                                          targets=[pb.Target(local=t) for t in targets], lease_seconds=30),
                          timeout=30)
    return [(r.target, "" if r.ok else r.error) for r in response.results]


def placed(stub):
    return sorted((p.experiment, p.target) for p in stub.ListActive(pb.ListActiveRequest(), timeout=5).placements)


def test_each_target_gets_its_own_result(lab, net_agent):
    stub, _, _ = net_agent
    lab.link("a", "b", "10.250.1")
    good, missing = f"netns:{lab.ns('a')}", f"netns:{lab.prefix}-nowhere"
    (_, ok), (_, error) = apply(stub, [good, missing])
    assert ok == "" and f"{lab.prefix}-nowhere" in error and "No such file" in error
    assert placed(stub) == [("default/refusal", good)]


def test_an_interface_deleted_before_attaching_is_that_targets_error(lab, net_agent):
    stub, hooks, engine = net_agent
    lab.link("a", "b", "10.250.1")
    target = f"netns:{lab.ns('a')}"
    hooks[target] = lambda _: lab.run("a", "ip link del b1")
    [(_, error)] = apply(stub, [target])
    assert "interface b1" in error and "was deleted" in error and lab.ns("a") in error, error
    assert not engine.active() and placed(stub) == []


def test_a_namespace_deleted_before_attaching_is_that_targets_error(lab, net_agent):
    stub, hooks, engine = net_agent
    lab.link("a", "b", "10.250.1")
    target = f"netns:{lab.ns('a')}"
    hooks[target] = lambda _: subprocess.run(["ip", "netns", "del", lab.ns("a")], check=True)
    [(_, error)] = apply(stub, [target])
    assert "network namespace" in error and "is gone" in error, error
    assert not engine.active() and placed(stub) == []


def test_more_overlapping_rules_than_a_peer_holds_is_a_rule_conflict(lab, net_agent):
    stub, _, _ = net_agent
    lab.link("a", "b", "10.250.1")
    target = f"netns:{lab.ns('a')}"
    body = {"action": "loss", "loss": {"loss": "1"}}
    for index in range(layout.MAX_RULES_PER_PEER):
        assert apply(stub, [target], body, name=f"default/overlap-{index}") == [(target, "")]
    [(_, error)] = apply(stub, [target], body, name="default/one-too-many")
    assert f"at most {layout.MAX_RULES_PER_PEER} may overlap" in error, error
    assert len(placed(stub)) == layout.MAX_RULES_PER_PEER


def test_a_peer_name_that_does_not_resolve_is_each_targets_error(lab, net_agent):
    stub, _, engine = net_agent
    lab.link("a", "b", "10.250.1")
    lab.link("c", "d", "10.250.2")
    targets = [f"netns:{lab.ns('a')}", f"netns:{lab.ns('c')}"]
    body = {"action": "partition", "externalTargets": ["10.250.1.2", "gone.invalid"]}
    results = apply(stub, targets, body)
    assert [t for t, _ in results] == targets
    for _, error in results:
        assert "'gone.invalid'" in error and "does not resolve" in error, error
    assert not engine.active() and placed(stub) == []


@pytest.mark.kernel("sch_fq")
def test_delay_on_an_interface_with_a_foreign_root_qdisc_is_refused(lab, net_agent):
    stub, _, engine = net_agent
    lab.link("a", "b", "10.250.1")
    lab.run("a", "tc qdisc add dev b1 root pfifo")
    [(_, error)] = apply(stub, [f"netns:{lab.ns('a')}"], {"action": "delay", "delay": {"latency": "10ms"}})
    assert "interface b1" in error and "root qdisc pfifo" in error, error
    assert not engine.active()
    assert "pfifo" in lab.run("a", "tc qdisc show dev b1 root").stdout, "the foreign qdisc was touched"


def test_delay_where_the_kernel_lacks_sch_fq_is_refused_per_target(lab, net_agent, capabilities):
    if capabilities["sch_fq"].available:
        pytest.skip("this kernel has sch_fq: the foreign-qdisc test covers delay's refusals")
    stub, _, _ = net_agent
    lab.link("a", "b", "10.250.1")
    targets = [f"netns:{lab.ns('a')}", f"netns:{lab.prefix}-nowhere"]
    results = apply(stub, targets, {"action": "delay", "delay": {"latency": "10ms"}})
    assert [t for t, _ in results] == targets and all("sch_fq" in e for _, e in results), results


def test_a_cgroup_that_does_not_exist_is_not_found(pod_agent, empty_cgroup):
    stub, _, _ = pod_agent
    [(_, error)] = apply(stub, [f"cgroup:{empty_cgroup}-nope"], {"action": "pod-failure"}, kind="PodChaos")
    assert "not a cgroup v2 directory" in error, error


def test_a_cgroup_removed_before_freezing_is_gone_and_nothing_stays_recorded(pod_agent, empty_cgroup):
    stub, hooks, engine = pod_agent
    target = f"cgroup:{empty_cgroup}"
    hooks[target] = lambda _: os.rmdir(empty_cgroup)
    [(_, error)] = apply(stub, [target], {"action": "pod-failure"}, kind="PodChaos")
    assert f"cgroup {empty_cgroup} is gone" in error, error
    assert not engine.active() and not engine.guard.frozen


def test_pod_kill_is_refused_as_the_controllers_job(pod_agent, empty_cgroup):
    stub, _, _ = pod_agent
    [(_, error)] = apply(stub, [f"cgroup:{empty_cgroup}"], {"action": "pod-kill"}, kind="PodChaos")
    assert "pod-kill is done by the controller" in error, error


# What the kernel can't be made to do here on demand: the engine raises it, the server maps it.
ESCAPES = [
    NetlinkError(errno.EBUSY, "Device or resource busy"),
    OSError(errno.EPERM, "Operation not permitted"),
    errors.InterfaceBusy("interface b1 has root qdisc htb"),
    errors.InterfaceGone("interface b1 was deleted"),
    errors.KernelRefused("can't attach kfault's tc filters on interface b1: Invalid argument"),
    errors.CapacityExhausted("all 16384 network rule slots of this node are in use"),
    KeyError("slot"),
    OverflowError("cannot convert float infinity to integer"),
]


@pytest.mark.parametrize("raised", ESCAPES, ids=[type(e).__name__ for e in ESCAPES])
def test_whatever_an_engine_raises_is_that_targets_error(lab, net_agent, monkeypatch, raised):
    stub, _, engine = net_agent
    lab.link("a", "b", "10.250.1")
    lab.link("c", "d", "10.250.2")
    good, bad = f"netns:{lab.ns('a')}", f"netns:{lab.ns('c')}"
    real_apply = engine.apply

    def failing_apply(experiment, target, lease_s=None):
        if target.name == bad:
            raise raised
        return real_apply(experiment, target, lease_s=lease_s)

    monkeypatch.setattr(engine, "apply", failing_apply)
    (_, ok), (_, error) = apply(stub, [good, bad])
    assert ok == "" and error, error
    if not isinstance(raised, errors.Refusal):
        assert f"unexpected {type(raised).__name__}" in error, error
    assert placed(stub) == [("default/refusal", good)]


def test_a_failing_check_and_a_failing_revoke_are_results_too(lab, net_agent, monkeypatch):
    stub, _, engine = net_agent
    lab.link("a", "b", "10.250.1")
    target = f"netns:{lab.ns('a')}"
    with monkeypatch.context() as patched:
        patched.setattr(engine, "check", lambda _: (_ for _ in ()).throw(RuntimeError("probe broke")))
        results = apply(stub, [target, "netns:x"])
    assert [t for t, _ in results] == [target, "netns:x"]
    assert all(e.startswith("node ") and "unexpected RuntimeError in the agent: probe broke" in e for _, e in results)
    assert apply(stub, [target]) == [(target, "")]
    with monkeypatch.context() as patched:
        patched.setattr(engine, "revoke", lambda *_: (_ for _ in ()).throw(NetlinkError(errno.EBUSY)))
        [result] = stub.Revoke(pb.RevokeRequest(experiment="default/refusal"), timeout=10).results
    assert (result.target, result.ok) == (target, False) and "NetlinkError" in result.error
    stub.Revoke(pb.RevokeRequest(experiment="default/refusal"), timeout=10)
    assert placed(stub) == []


@pytest.mark.parametrize("field, value", [("lease_seconds", float("inf")), ("lease_seconds", float("nan")),
                                          ("experiment", "default/" + "x" * 100_000),
                                          ("spec_json", json.dumps({"action": "x" * 100_000}))])
def test_a_bad_field_is_invalid_argument_with_a_short_message(lab, net_agent, field, value):
    stub, _, engine = net_agent
    lab.link("a", "b", "10.250.1")
    fields = dict(experiment="default/refusal", kind="NetworkChaos", spec_json=json.dumps(GOOD),
                  targets=[pb.Target(local=f"netns:{lab.ns('a')}")], lease_seconds=30)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Apply(pb.ApplyRequest(**{**fields, field: value}), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
    details = caught.value.details()
    assert len(details.encode()) < 1000 and ("spec.action" if field == "spec_json" else field) in details, details
    assert not engine.active()
