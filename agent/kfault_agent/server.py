"""The agent's gRPC surface (kfault.agent.v1): a thin layer over the fault engines.

Only the controller may call: with TLS on, a caller must present a certificate from the
cluster's kfault CA whose common name is the controller's; anything else is refused and logged.
Placements live only as long as their lease: a housekeeping thread revokes lapsed ones (their
rules are already inert in the kernel) and ended ones (spec.duration).
"""
import json
import logging
import platform
import threading
import time
from concurrent import futures

import grpc

from kfault_agent.kernel import loader
from kfault_api import spec
from kfault_api.rpc import agent_pb2 as pb
from kfault_api.rpc import agent_pb2_grpc as pb_grpc
from kfault_agent.kernel.pods import PodRef
from kfault_agent.kernel.topology import TargetNotFound

log = logging.getLogger(__name__)

VERSION = "kfault.agent.v1"
CONTROLLER_COMMON_NAME = "kfault-controller"
HOUSEKEEPING_S = 0.5


class AgentService(pb_grpc.AgentServicer):
    def __init__(self, engines, capabilities, node_name=None, require_common_name=None):
        """engines: the Engines (engines/base.py) whose datapaths loaded on this node, one per
        kind at most; a kind with none is refused."""
        self.engines = {engine.kind.name: engine for engine in engines}
        self.capabilities = capabilities
        self.node_name = node_name or platform.node()
        self.require_common_name = require_common_name
        self._stop = threading.Event()
        self._housekeeper = threading.Thread(target=self._housekeeping, daemon=True, name="kfault-leases")
        self._housekeeper.start()

    # ---- calls -------------------------------------------------------------------------

    def Apply(self, request, context):
        self._authorize(context)
        experiment = self._parse(request, context)
        engine = self.engines.get(request.kind)
        if engine is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"{request.kind} can't run on node {self.node_name}: its programs did not load here")
        try:
            engine.check(experiment)
        except loader.KernelUnsupported as err:
            return pb.ApplyResponse(results=[pb.TargetResult(target=self._target_name(t), ok=False,
                                                             error=f"node {self.node_name}: {err}")
                                             for t in request.targets])
        lease_s = request.lease_seconds if request.lease_seconds > 0 else None
        results = []
        for target in request.targets:
            name = self._target_name(target)
            try:
                for resolved in engine.resolve(pod_or_local(target), experiment):
                    engine.apply(experiment, resolved, lease_s=lease_s)
                results.append(pb.TargetResult(target=name, ok=True))
            except (TargetNotFound, loader.KernelUnsupported, ValueError, OSError) as err:
                log.warning("apply %s on %s: %s", experiment.key, name, err)
                results.append(pb.TargetResult(target=name, ok=False, error=str(err)))
        return pb.ApplyResponse(results=results)

    def Renew(self, request, context):
        self._authorize(context)
        renewed = []
        for engine in self.engines.values():
            keys = {a.key for a in engine.active() if a.experiment.key == request.experiment}
            ended = set(engine.renew(keys))
            renewed += [target for (_, target) in keys - ended]
        return pb.RenewResponse(targets=sorted(renewed))

    def Revoke(self, request, context):
        self._authorize(context)
        results = []
        for engine in self.engines.values():
            for active in engine.active():
                if active.experiment.key == request.experiment:
                    engine.revoke(*active.key)
                    results.append(pb.TargetResult(target=active.target.name, ok=True))
        return pb.RevokeResponse(results=results)

    def ListActive(self, request, context):
        self._authorize(context)
        now = time.monotonic_ns()
        return pb.ListActiveResponse(placements=[
            pb.ActivePlacement(experiment=a.experiment.key, kind=kind, target=a.target.name,
                               lease_left_seconds=max(0.0, (a.deadline_ns - now) / 1e9))
            for kind, engine in self.engines.items() for a in engine.active()])

    def Capabilities(self, request, context):
        self._authorize(context)
        return pb.CapabilitiesResponse(node=self.node_name, kernel=platform.release(), capabilities=[
            pb.Capability(name=c.name, available=c.available, reason=c.reason) for c in self.capabilities.values()])

    def Counters(self, request, context):
        self._authorize(context)
        return pb.CountersResponse(counters=[
            pb.Counter(target=target, scope=scope, outcome=outcome, count=count)
            for engine in self.engines.values()
            for target, scope, outcome, count in engine.counter_rows(request.experiment)])

    def Health(self, request, context):
        return pb.HealthResponse(serving=True, version=VERSION)

    # ---- helpers -----------------------------------------------------------------------

    def _authorize(self, context):
        if not self.require_common_name:
            return
        names = context.auth_context().get("x509_common_name", [])
        if [n.decode() for n in names] != [self.require_common_name]:
            log.warning("refused a call from %s: certificate common name %s is not %s", context.peer(),
                        [n.decode() for n in names] or "missing", self.require_common_name)
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"only {self.require_common_name} may call this agent")

    def _parse(self, request, context):
        namespace, _, name = request.experiment.rpartition("/")
        try:
            body = json.loads(request.spec_json)
            return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": request.kind,
                                          "metadata": {"name": name, "namespace": namespace or "default"},
                                          "spec": body})
        except json.JSONDecodeError as err:
            message = f"spec_json: not JSON ({err})"
        except spec.InvalidSpec as err:
            message = "; ".join(str(e) for e in err.errors)
        log.warning("refused %s %s: %s", request.kind, request.experiment, message)
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

    @staticmethod
    def _target_name(target):
        if target.WhichOneof("kind") == "pod":
            return f"{target.pod.namespace}/{target.pod.name}"
        return target.local

    def _housekeeping(self):
        while not self._stop.wait(HOUSEKEEPING_S):
            for engine in self.engines.values():
                for key in engine.lapsed():
                    log.info("lease of %s on %s lapsed: revoking", *key)
                    engine.revoke(*key)

    def close(self):
        self._stop.set()
        self._housekeeper.join()
        for engine in self.engines.values():
            engine.revoke_all()


def pod_or_local(target):
    """A Target as the engines resolve it: a PodRef, or a local target string."""
    if target.WhichOneof("kind") == "pod":
        return PodRef(target.pod.namespace, target.pod.name, target.pod.uid, tuple(target.pod.container_ids))
    return target.local


def server_credentials(cert_pem, key_pem, ca_pem):
    """mTLS: the agent's certificate, and the CA every caller's certificate must chain to."""
    return grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=True)


def serve(service, address, credentials=None):
    """Start serving; returns (server, bound port)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_AgentServicer_to_server(service, server)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    server.start()
    return server, port
