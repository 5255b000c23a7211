"""The agent's gRPC API over mTLS, with the real datapath behind it and real traffic."""
import json
import time

import grpc
import pytest

from kfault_agent import server
from kfault_agent.engines import netfault
from kfault_api.rpc import agent_pb2 as pb
from kfault_api.rpc import agent_pb2_grpc as pb_grpc
from tests.certs import make_certs

pytestmark = pytest.mark.kernel("tc-bpf", "clsact")


@pytest.fixture
def agent(tmp_path, datapath, capabilities):
    certs = make_certs(tmp_path)
    engine = netfault.NetFaultEngine(datapath, capabilities)
    service = server.AgentService([engine], capabilities,
                                  require_common_name=server.CONTROLLER_COMMON_NAME)
    grpc_server, port = server.serve(service, "127.0.0.1:0", server.server_credentials(
        certs["agent.crt"], certs["agent.key"], certs["ca.crt"]))
    yield port, certs, engine
    grpc_server.stop(None)
    service.close()


def client(port, certs, who="controller"):
    creds = grpc.ssl_channel_credentials(root_certificates=certs["ca.crt"], private_key=certs[f"{who}.key"],
                                         certificate_chain=certs[f"{who}.crt"])
    channel = grpc.secure_channel(f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override",
                                                                         "localhost")])
    return pb_grpc.AgentStub(channel)


# Longer than a 3000-ping flood at 30% loss takes under emulation (ping -f waits 10 ms per lost
# packet); tests of lapsing leases pass their own.
def apply(stub, lab, spec_body, lease=600.0, name="default/cut"):
    return stub.Apply(pb.ApplyRequest(experiment=name, kind="NetworkChaos", spec_json=json.dumps(spec_body),
                                      targets=[pb.Target(local=f"netns:{lab.ns('a')}")], lease_seconds=lease),
                      timeout=30)


def test_controller_applies_renews_and_revokes_over_mtls(lab, agent):
    port, certs, _ = agent
    _, b_ip = lab.link("a", "b", "10.250.1")
    stub = client(port, certs)
    response = apply(stub, lab, {"action": "loss", "loss": {"loss": "30"}})
    assert [r.ok for r in response.results] == [True], response
    sent, received, _ = lab.ping_flood("a", b_ip, 3000)
    assert 0.26 <= 1 - received / sent <= 0.34
    assert stub.Renew(pb.RenewRequest(experiment="default/cut"), timeout=5).targets == [f"netns:{lab.ns('a')}"]
    # As the controller renews: every experiment of this node in one call, unknown ones ignored.
    assert stub.Renew(pb.RenewRequest(experiments=["default/cut", "default/gone"]),
                      timeout=5).targets == [f"netns:{lab.ns('a')}"]
    placements = stub.ListActive(pb.ListActiveRequest(), timeout=5).placements
    assert [(p.experiment, p.kind) for p in placements] == [("default/cut", "NetworkChaos")]
    dropped = [c.count for c in stub.Counters(pb.CountersRequest(experiment="default/cut"), timeout=5).counters
               if c.outcome == "dropped"]
    assert sum(dropped) > 0
    stub.Revoke(pb.RevokeRequest(experiment="default/cut"), timeout=10)
    sent, received, _ = lab.ping_flood("a", b_ip, 500)
    assert received == sent
    assert stub.Health(pb.HealthRequest(), timeout=5).serving


def test_a_lease_not_renewed_lapses(lab, agent):
    port, certs, engine = agent
    _, b_ip = lab.link("a", "b", "10.250.1")
    stub = client(port, certs)
    apply(stub, lab, {"action": "partition"}, lease=3.0)   # long enough for an emulated machine's ping
    assert lab.ping_flood("a", b_ip, 50)[1] == 0
    time.sleep(3.0 + 2 * server.HOUSEKEEPING_S)
    assert lab.ping_flood("a", b_ip, 50)[1] == 50
    assert not engine.active(), "the agent kept a placement whose lease lapsed"


def test_bad_spec_is_refused_with_the_field_and_nothing_is_injected(lab, agent):
    port, certs, engine = agent
    lab.link("a", "b", "10.250.1")
    with pytest.raises(grpc.RpcError) as caught:
        apply(client(port, certs), lab, {"action": "loss", "loss": {"loss": "130"}})
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.loss.loss" in caught.value.details()
    assert not engine.active()


@pytest.mark.parametrize("who", ["agent", "stranger"])
def test_callers_without_the_controllers_certificate_are_refused(lab, agent, who):
    port, certs, engine = agent
    lab.link("a", "b", "10.250.1")
    with pytest.raises(grpc.RpcError) as caught:
        apply(client(port, certs, who), lab, {"action": "partition"})
    # The stranger's certificate is not from the CA: the TLS handshake fails. The agent's own
    # is, but it is not the controller's: the call is refused.
    expected = {"agent": grpc.StatusCode.PERMISSION_DENIED, "stranger": grpc.StatusCode.UNAVAILABLE}[who]
    assert caught.value.code() == expected, caught.value
    assert not engine.active()
