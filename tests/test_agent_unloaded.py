"""A kind whose engine did not load on a node is refused there with the reason the engine gave
at load (StressChaos on a node with cgroup v1's cpu and memory), not a generic one. No kernel."""
import json

import grpc
import pytest

from kfault_agent import server
from kfault_api.rpc import agent_pb2 as pb
from kfault_api.rpc import agent_pb2_grpc as pb_grpc

WHY = "StressChaos needs cgroup v2's cpu and memory controllers, which are on cgroup v1 here (cpu, memory)"


def test_an_unloaded_kind_is_refused_with_why():
    service = server.AgentService([], {}, node_name="n1", unloaded={"StressChaos": WHY})
    grpc_server, port = server.serve(service, "127.0.0.1:0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            request = pb.ApplyRequest(experiment="default/burn", kind="StressChaos",
                                      spec_json=json.dumps({"stressors": {"cpu": {"workers": 1}}}),
                                      targets=[pb.Target(local="cgroup:/sys/fs/cgroup/x")], lease_seconds=10)
            with pytest.raises(grpc.RpcError) as err:
                pb_grpc.AgentStub(channel).Apply(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.value.details() == f"StressChaos can't run on node n1: {WHY}"
    finally:
        grpc_server.stop(None)
        service.close()
