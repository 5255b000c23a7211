"""A few hundred randomized requests to a real local agent on the real datapaths: every reply is
OK or a refusal with a short message, the agent stays healthy and places only what was valid.

The seed is fixed (KFAULT_FUZZ_SEED picks another) and printed with any failure: rerun with it."""
import json
import logging
import math
import os
import random
import subprocess
import time

import grpc
import pytest

from kfault_agent import request_checks, server
from kfault_agent.engines import netfault, podfault
from kfault_agent.kernel import owners
from kfault_api import spec
from kfault_api.rpc import agent_pb2 as pb
from kfault_api.rpc import agent_pb2_grpc as pb_grpc

pytestmark = pytest.mark.kernel("tc-bpf", "clsact")

SEED = int(os.environ.get("KFAULT_FUZZ_SEED", "20250609"))
REQUESTS = 400
ACCEPTED_CODES = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION}
METADATA_LIMIT = 16 * 1024
ARMED_CHECK_MIN_LEASE_S = 5
ODD = ["", " ", "\x00", "\u202e", "\u200b", "é", "😀", "\ufeff", "\\", "/", "..", "%s", "{}", "'\"", "\n", "NaN"]


class Fuzzer:
    """Random requests, half-way between valid and garbage, built from the schema's own fields."""

    def __init__(self, rng, lab_target):
        self.rng = rng
        self.lab_target = lab_target
        self.valid = 0
        self.last_valid = False     # was the last call a valid Apply but for its lease, maybe

    def text(self):
        rng = self.rng
        choice = rng.randrange(7)
        if choice == 0:
            return rng.choice(ODD)
        if choice == 1:
            return "x" * rng.choice([100, 5000, 100_000])
        if choice == 2:
            return "".join(rng.choice(ODD[1:]) for _ in range(rng.randrange(1, 20)))
        if choice == 3:
            return "".join(chr(rng.randrange(32, 0xD7FF)) for _ in range(rng.randrange(1, 40)))
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-.") for _ in range(rng.randrange(1, 12)))

    def number(self):
        return self.rng.choice([0, -1, 1, 7, 100, 101, 2**31, 2**64, -2**63, 10**30, 0.5, 1e308, -0.0, 3.5])

    def value(self, schema=None, depth=0):
        rng = self.rng
        if schema and rng.random() < 0.6:
            return self.schema_value(schema, depth)
        choice = rng.randrange(7 if depth < 3 else 4)
        return [self.text, self.number, lambda: rng.choice([None, True, False]), lambda: self.text() + "ms",
                lambda: [self.value(None, depth + 1) for _ in range(rng.randrange(4))],
                lambda: {self.text(): self.value(None, depth + 1) for _ in range(rng.randrange(4))},
                lambda: self.spec_body(rng.choice(list(spec.KINDS.values())).schema, depth + 1)][choice]()

    def schema_value(self, schema, depth):
        """A value of the schema's type, often a valid one."""
        rng, kind = self.rng, schema.get("type")
        if "enum" in schema:
            return rng.choice(schema["enum"])
        if kind == "object":
            return self.spec_body(schema, depth + 1)
        if kind == "array":
            return [self.value(schema.get("items"), depth + 1) for _ in range(rng.randrange(3))]
        if kind == "integer":
            return rng.choice([0, 1, 5, 100, -1, 2**40])
        if kind == "string":
            return rng.choice(["25", "0.5", "100", "130", "10ms", "1s", "0", "1mbps", "10.250.1.2", "10.0.0.0/8",
                               "80", "1-1024", "tcp", "/data/*", "/", self.text()])
        return self.value(None, depth + 1)

    def spec_body(self, schema, depth=0):
        props = schema.get("properties") or {}
        names = list(props) + ([self.text()] if self.rng.random() < 0.2 else [])
        chosen = self.rng.sample(names, self.rng.randrange(0, min(len(names), 5) + 1)) if names else []
        return {name: self.value(props.get(name), depth) for name in chosen}

    def spec_json(self, kind):
        rng = self.rng
        schema = spec.KINDS[kind].schema if kind in spec.KINDS else rng.choice(list(spec.KINDS.values())).schema
        choice = rng.randrange(10)
        if choice == 0:
            return rng.choice(["", "{", "[]", "null", "1e999", '{"action": NaN}', '{"a": Infinity}',
                               "[" * 50_000 + "]" * 50_000, '{"x": ' + "1" * 5000 + "}", self.text()])
        body = self.spec_body(schema)
        if choice < 6 and "action" in (schema.get("properties") or {}):
            body["action"] = self.schema_value(schema["properties"]["action"], 0)
        return json.dumps(body)

    def pod(self):
        rng = self.rng
        return pb.Pod(namespace=rng.choice(["default", self.text()]), name=rng.choice(["web-1", self.text()]),
                      uid=rng.choice(["6f1c2d3e-0000-4000-8000-000000000001", self.text()]),
                      container_ids=[rng.choice(["containerd://" + "ab" * 32, "docker://" + self.text(),
                                                 self.text()]) for _ in range(rng.randrange(3))])

    def target(self):
        rng = self.rng
        choice = rng.randrange(8)
        if choice == 0:
            return pb.Target()
        if choice == 1:
            return pb.Target(pod=self.pod())
        if choice == 2:
            return pb.Target(local=self.lab_target)
        # Local targets that can't exist: never a real process, namespace or cgroup of this host.
        return pb.Target(local=rng.choice([
            f"netns:kft-fuzz-{rng.randrange(10**6)}", f"pid:{rng.randrange(5_000_000, 10**10)}",
            f"cgroup:/sys/fs/cgroup/kft-fuzz-{rng.randrange(10**6)}", f"netns:/nonexistent/{self.text()}",
            "cgroup:/", "netns:" + self.text(), self.text()]))

    def lease(self):
        return self.rng.choice([0, 30, 1, 3600, math.nan, math.inf, -math.inf, -1, 0.5, 3601, 1e308,
                                self.rng.uniform(-10, 4000)])

    def experiment(self):
        return self.rng.choice(["fuzz/cut", "fuzz/other", "default/a.b", self.text(), "fuzz/" + self.text(),
                                self.text() + "/cut"])

    def apply(self):
        rng = self.rng
        if rng.random() < 0.15:     # valid but for the lease, maybe: it may place, on the lab's namespace only
            self.valid += 1
            self.last_valid = True
            return pb.ApplyRequest(experiment=f"fuzz/valid-{rng.randrange(3)}", kind="NetworkChaos",
                                   spec_json=json.dumps(rng.choice([{"action": "partition"},
                                                                    {"action": "loss", "loss": {"loss": "5"}}])),
                                   targets=[pb.Target(local=self.lab_target)],
                                   lease_seconds=rng.choice([30, self.lease()]))
        kind = rng.choice(list(spec.KINDS) * 3 + [self.text()])
        count = rng.choice([0, 1, 1, 2, 3, 1025])
        return pb.ApplyRequest(experiment=self.experiment(), kind=kind, spec_json=self.spec_json(kind),
                               targets=[self.target() for _ in range(count)], lease_seconds=self.lease())

    def renew(self):
        """One experiment, many (as the controller renews a node's), both, or none at all."""
        many = [self.experiment() for _ in range(self.rng.choice([0, 0, 1, 3]))]
        if self.rng.random() < 0.1:      # one more than an agent takes, in keys short enough to send
            many = [f"fuzz/e{i}" for i in range(request_checks.MAX_RENEWED + 1)]
        one = self.experiment() if self.rng.random() < 0.7 or not many else ""
        return pb.RenewRequest(experiment=one, experiments=many, lease_seconds=self.lease())

    def call(self, stub):
        """(method name, request) of a random call."""
        self.last_valid = False
        choice = self.rng.randrange(10)
        if choice < 6:
            return "Apply", self.apply()
        return [("Renew", self.renew()),
                ("Revoke", pb.RevokeRequest(experiment=self.experiment())),
                ("Counters", pb.CountersRequest(experiment=self.experiment())),
                ("ListActive", pb.ListActiveRequest())][choice - 6]


def our_filters(lab):
    """tc filters this process owns, on the node's interfaces and the lab's."""
    tag = owners.tag()
    found = []
    for netns in [None] + [lab.ns(h) for h in lab.hosts]:
        prefix = ["ip", "-n", netns] if netns else ["ip"]
        links = json.loads(subprocess.run(prefix + ["-j", "link", "show"], capture_output=True, text=True,
                                          check=True).stdout)
        for link in links:
            for hook in ("ingress", "egress"):
                out = subprocess.run(["tc"] + (["-n", netns] if netns else []) +
                                     ["filter", "show", "dev", link["ifname"], hook],
                                     capture_output=True, text=True).stdout
                found += [(netns, link["ifname"], hook) for line in out.splitlines() if "@" + tag in line]
    return found


@pytest.fixture
def fuzz_agent(datapath, capabilities, tmp_path):
    net = netfault.NetFaultEngine(datapath, capabilities, lease_s=30)
    pods = podfault.PodFaultEngine(lease_s=30, guard=podfault.ThawGuard(str(tmp_path)))
    service = server.AgentService([net, pods], capabilities)
    grpc_server, port = server.serve(service, "127.0.0.1:0")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield pb_grpc.AgentStub(channel), net
    channel.close()
    grpc_server.stop(None)
    service.close()
    pods.guard.close()


def armed_in_the_kernel(net, experiment_key):
    """Is the experiment placed with every rule of it live in the kernel's rule map (a deadline
    still ahead: the kernel reads one past, or 0, as no rule)?"""
    placements = [a for a in net.active() if a.experiment.key == experiment_key]
    rules = net.datapath.rules
    now = time.monotonic_ns()
    return bool(placements) and all(rules[rules.Key(rule.slot)].deadline_ns > now
                                    for active in placements for rule in active.rules)


def test_randomized_requests_get_ok_or_a_short_refusal_and_place_only_valid_ones(lab, fuzz_agent, caplog):
    stub, net = fuzz_agent
    lab.link("a", "b", "10.250.1")
    lab_target = f"netns:{lab.ns('a')}"
    fuzzer = Fuzzer(random.Random(SEED), lab_target)
    where = f"(seed {SEED}: rerun with KFAULT_FUZZ_SEED={SEED})"
    placed = set()
    armed_checked = 0
    caplog.set_level(logging.WARNING, logger="kfault_agent")
    for index in range(REQUESTS):
        method, request = fuzzer.call(stub)
        try:
            reply, code, details = getattr(stub, method)(request, timeout=30), grpc.StatusCode.OK, ""
        except grpc.RpcError as err:
            reply, code, details = None, err.code(), err.details() or ""
        said = f"request {index} {where}: {method} {str(request)[:300]!r} -> {code} {details[:300]!r}"
        assert code in ACCEPTED_CODES, said
        assert len(details.encode()) < METADATA_LIMIT, said
        if fuzzer.last_valid and not request_checks.lease_errors(request.lease_seconds):
            # A valid request is accepted and placed, its rules armed in the kernel (checked at
            # once: a lease this long can't lapse first, even under emulation).
            assert code == grpc.StatusCode.OK and all(r.ok for r in reply.results), said
            if request.lease_seconds == 0 or request.lease_seconds >= ARMED_CHECK_MIN_LEASE_S:
                assert armed_in_the_kernel(net, request.experiment), said
                armed_checked += 1
        if method == "Apply" and reply is not None:
            assert len(reply.results) == len(request.targets), said
            for result in reply.results:
                if result.ok:
                    assert result.target == lab_target, said
                    placed.add(request.experiment)
                assert len(result.error.encode()) < METADATA_LIMIT, said
        if index % 50 == 0:
            assert stub.Health(pb.HealthRequest(), timeout=5).serving, said
    assert stub.Health(pb.HealthRequest(), timeout=5).serving
    assert stub.Capabilities(pb.CapabilitiesRequest(), timeout=5).capabilities
    active = {p.experiment for p in stub.ListActive(pb.ListActiveRequest(), timeout=5).placements}
    assert active <= placed, f"placed by requests that were not valid {where}: {active - placed}"
    assert fuzzer.valid > 10, where
    assert armed_checked >= 5, f"only {armed_checked} valid requests were checked in the kernel {where}"
    bugs = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bugs, f"the agent logged failures it did not expect {where}: {bugs[:3]}"
    for key in placed:
        stub.Revoke(pb.RevokeRequest(experiment=key), timeout=10)
    assert not stub.ListActive(pb.ListActiveRequest(), timeout=5).placements
    assert not our_filters(lab), f"tc filters left after revoking everything {where}"
