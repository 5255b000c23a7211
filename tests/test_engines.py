"""One Engine protocol: every engine the agent can load, and the tests' recording engine,
implement it; the agent finds each kind's engine by the shared registry of kinds. No kernel."""
from dataclasses import dataclass

import pytest

from kfault_agent import node
from kfault_agent.engines.base import Engine, missing_members
from kfault_agent.engines.podfault import PodFaultEngine
from kfault_agent.engines.stressfault import StressEngine
from kfault_agent.errors import InterfaceGone
from kfault_agent.kernel.tc import SharedPerLink
from kfault_api import spec
from tests.doubles import RecordingEngine


def unloaded(engine_type):
    """An engine with nothing loaded behind it: enough to see its interface."""
    if engine_type is PodFaultEngine:
        return PodFaultEngine(guard=object())
    if engine_type is StressEngine:
        return StressEngine()
    return engine_type(None, {})


@pytest.mark.parametrize("engine", [unloaded(t) for t in node.ENGINE_TYPES] + [RecordingEngine()],
                         ids=lambda e: type(e).__name__)
def test_every_engine_implements_the_engine_protocol(engine):
    assert missing_members(engine) == []
    assert isinstance(engine, Engine)
    assert engine.kind in spec.KINDS.values()


def test_every_engine_loads_itself():
    for engine_type in node.ENGINE_TYPES:
        assert callable(engine_type.load) and engine_type.what


def test_an_engine_missing_a_member_is_named():
    class Partial:
        kind = spec.KINDS["PodChaos"]

        def apply(self, experiment, target, lease_s=None):
            pass

    assert not isinstance(Partial(), Engine)
    assert "revoke" in missing_members(Partial()) and "apply" not in missing_members(Partial())


@pytest.mark.parametrize("kind", list(spec.EXPERIMENTS))
def test_an_experiment_model_knows_its_kind(kind):
    model = spec.KINDS[kind].model
    assert node.kind_of(model.__new__(model)) is spec.KINDS[kind]


# ---- one tc object per interface, shared by the placements on it --------------------------

@dataclass(frozen=True)
class Netns:
    inode: int


@dataclass(frozen=True)
class Link:
    netns: Netns
    ifindex: int
    ifname: str = "veth0"


class Kernel:
    def __init__(self, gone=False):
        self.made, self.released, self.gone = [], [], gone

    def make(self, link, tag):
        self.made.append((link.ifindex, tag))
        return Thing(link)

    def release(self, thing):
        if self.gone:
            raise InterfaceGone(f"{thing.link.ifname} was deleted")
        self.released.append(thing.link.ifindex)


@dataclass
class Thing:
    link: Link


def test_the_first_holder_makes_it_and_the_last_one_out_releases_it():
    kernel = Kernel()
    shared = SharedPerLink(kernel.make, kernel.release)
    a, b = Link(Netns(1), 2), Link(Netns(1), 3)
    first = [shared.hold(a, "x"), shared.hold(b, "x")]
    second = [shared.hold(a, "y")]
    assert kernel.made == [(2, "x"), (3, "x")], "a's object is made once, by the first placement"
    shared.let_go(first)
    assert kernel.released == [3], "a still has a user"
    shared.let_go(second)
    assert kernel.released == [3, 2]
    shared.hold(a, "z")
    assert kernel.made[-1] == (2, "z"), "released objects are made afresh"


def test_the_same_ifindex_in_another_namespace_is_another_interface():
    kernel = Kernel()
    shared = SharedPerLink(kernel.make, kernel.release)
    shared.hold(Link(Netns(1), 2), "x")
    shared.hold(Link(Netns(9), 2), "x")
    assert len(kernel.made) == 2


def test_an_interface_deleted_under_us_has_nothing_left_to_undo():
    kernel = Kernel(gone=True)
    shared = SharedPerLink(kernel.make, kernel.release)
    key = shared.hold(Link(Netns(1), 2), "x")
    shared.let_go([key])
    shared.hold(Link(Netns(1), 2), "x")
    assert len(kernel.made) == 2, "the gone interface's entry was forgotten"


def test_http_rule_fields_are_the_bytes_the_program_compares():
    """bpf/kfault.h's kfault_http_rule: the method and its space as a request's first bytes, a
    status code as the " NNN" after "HTTP/1.1", each a little-endian integer."""
    from kfault_agent.engines.httpfault import http_rule_fields
    from kfault_api import layout, spec

    experiment = spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "HTTPChaos", "metadata": {"name": "x"},
                                        "spec": {"target": "Response", "port": 80, "method": "GET", "code": 200,
                                                 "replace": {"code": 503}}})
    fields = http_rule_fields(experiment)
    assert fields["method"].to_bytes(8, "little") == b"GET \0\0\0\0" and fields["method_mask"] == 0xFFFFFFFF
    assert fields["code"].to_bytes(4, "little") == b" 200" and fields["replace"].to_bytes(4, "little") == b" 503"
    assert fields["target"] == layout.HTTP_RESPONSE
    assert fields["flags"] == layout.HTTP_REPLACE | layout.HTTP_HAS_CODE
