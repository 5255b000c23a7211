"""kubelet's probes of the agent: the standard grpc.health.v1 service, in plaintext on its own
port (the API's port is mTLS, and kubelet's gRPC probe speaks no TLS).

Two service names answer, one per question kubelet asks:
  READINESS ("")             may the controller place here? The API serves and at least one
                             engine's datapath loaded: a node where nothing loads can place
                             nothing, so its agent is not Ready (its log says why).
  LIVENESS (the API's name)  is the agent alive? The API serves. Datapaths that don't load on
                             this kernel are not a reason to restart: a restart loads nothing more.
Both are NOT_SERVING while the datapaths compile and from the moment shutdown begins.
"""
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from kfault_api.rpc import agent_pb2 as pb

READINESS = ""
LIVENESS = pb.DESCRIPTOR.services_by_name["Agent"].full_name     # kfault.agent.v1.Agent
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def statuses(api_serving, engines):
    """{service name: status} of an agent whose API is (not) serving with these engines loaded."""
    return {LIVENESS: SERVING if api_serving else NOT_SERVING,
            READINESS: SERVING if api_serving and engines else NOT_SERVING}


class HealthServer:
    """grpc.health.v1 on its own plaintext server, NOT_SERVING until serving() says otherwise."""

    def __init__(self, address):
        self.servicer = health.HealthServicer()
        self._set(statuses(False, []))
        # Its own threads: a probe is answered even while every API worker is busy.
        self.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, self.grpc_server)
        self.port = self.grpc_server.add_insecure_port(address)
        self.grpc_server.start()

    def _set(self, by_service):
        for service, status in by_service.items():
            self.servicer.set(service, status)

    def serving(self, engines):
        """The API serves with these engines."""
        self._set(statuses(True, engines))

    def stopping(self):
        """Shutdown began: every service NOT_SERVING from now on, before the API stops."""
        self.servicer.enter_graceful_shutdown()

    def stop(self):
        self.grpc_server.stop(None)
