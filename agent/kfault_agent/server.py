"""The agent's gRPC surface (kfault.agent.v1): a thin layer over the fault engines.

Only the controller may call: with TLS on, a caller must present a certificate from the
cluster's kfault CA whose common name is the controller's; anything else is refused and logged.
Placements live only as long as their lease: a housekeeping thread revokes lapsed ones (their
rules are already inert in the kernel) and ended ones (spec.duration).
"""
import logging
import platform
import threading
import time
from concurrent import futures

import grpc

from kfault_agent import request_checks
from kfault_agent.errors import Refusal
from kfault_agent.kernel.pods import PodRef
from kfault_api.rpc import agent_pb2 as pb
from kfault_api.rpc import agent_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

VERSION = "kfault.agent.v1"
CONTROLLER_COMMON_NAME = "kfault-controller"
HOUSEKEEPING_S = 0.5


class AgentService(pb_grpc.AgentServicer):
    def __init__(self, engines, capabilities, node_name=None, require_common_name=None, unloaded=None):
        """engines: the Engines (engines/base.py) whose datapaths loaded on this node, one per
        kind at most; a kind with none is refused, with why where `unloaded` (kind -> why) says."""
        self.engines = {engine.kind.name: engine for engine in engines}
        self.unloaded = unloaded or {}
        self.capabilities = capabilities
        self.node_name = node_name or platform.node()
        self.require_common_name = require_common_name
        self._stop = threading.Event()
        self.stopped = ""          # the cluster-wide stop's reason while it holds (Stop), else ""
        self._housekeeper = threading.Thread(target=self._housekeeping, daemon=True, name="kfault-leases")
        self._housekeeper.start()

    # ---- calls -------------------------------------------------------------------------

    def Apply(self, request, context):
        """One TargetResult per target: a refusal, or any failure, is that target's error."""
        self._authorize(context)
        experiment = self._checked(request_checks.apply_request, request, context)
        engine = self.engines.get(request.kind)
        if engine is None:
            why = self.unloaded.get(request.kind, "its programs did not load here")
            self._abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                        f"{request.kind} can't run on node {self.node_name}: {why}")
        lease_s = request.lease_seconds if request.lease_seconds > 0 else None
        refused = f"stopped: {self.stopped}" if self.stopped else \
            self._failure(experiment, "this node", engine.check, experiment)
        if refused:
            return pb.ApplyResponse(results=[pb.TargetResult(target=self._target_name(t), ok=False,
                                                             error=f"node {self.node_name}: {refused}")
                                             for t in request.targets])
        results = []
        for target in request.targets:
            name = self._target_name(target)
            error = self._failure(experiment, name, self._apply_on, engine, experiment, target, lease_s)
            results.append(pb.TargetResult(target=name, ok=not error, error=error))
        return pb.ApplyResponse(results=results)

    @staticmethod
    def _apply_on(engine, experiment, target, lease_s):
        for resolved in engine.resolve(pod_or_local(target), experiment):
            engine.apply(experiment, resolved, lease_s=lease_s)

    def Renew(self, request, context):
        self._authorize(context)
        experiments = self._checked(request_checks.renew_request, request, context)
        renewed = []
        for engine in self.engines.values():
            keys = {a.key for a in engine.active() if a.experiment.key in experiments}
            ended = set(engine.renew(keys))
            renewed += [target for (_, target) in keys - ended]
        return pb.RenewResponse(targets=sorted(renewed))

    def Revoke(self, request, context):
        self._authorize(context)
        self._checked(request_checks.experiment_request, request, context)
        results = []
        for engine in self.engines.values():
            for active in engine.active():
                if active.experiment.key == request.experiment:
                    error = self._failure(active.experiment, active.target.name, engine.revoke, *active.key)
                    results.append(pb.TargetResult(target=active.target.name, ok=not error, error=error))
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
        self._checked(request_checks.experiment_request, request, context)
        return pb.CountersResponse(counters=[
            pb.Counter(target=target, scope=scope, outcome=outcome, count=count)
            for engine in self.engines.values()
            for target, scope, outcome, count in engine.counter_rows(request.experiment)])

    def Stop(self, request, context):
        """The cluster-wide stop: take back everything placed here, and refuse placements until
        lifted. The agent has no API access: the controller tells it, and tells it again at each
        renewal while the stop holds (an agent restarted meanwhile starts with nothing placed)."""
        self._authorize(context)
        self.stopped = request_checks.bounded(request.reason or "the cluster-wide stop") if request.stopped else ""
        results = []
        if request.stopped:
            for engine in self.engines.values():
                for active in engine.active():
                    error = self._failure(active.experiment, active.target.name, engine.revoke, *active.key)
                    results.append(pb.TargetResult(target=active.target.name, ok=not error, error=error))
            log.warning("stopped (%s): took back %d placement(s)", self.stopped, len(results))
        return pb.StopResponse(results=results, stopped=bool(self.stopped))

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

    def _checked(self, check, request, context):
        """check(request), or INVALID_ARGUMENT naming every bad field."""
        try:
            return check(request)
        except request_checks.InvalidRequest as err:
            log.warning("refused a %s: %s", type(request).__name__, err)
            self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(err))

    @staticmethod
    def _abort(context, code, message):
        context.abort(code, request_checks.bounded(message))

    @staticmethod
    def _failure(experiment, where, call, *args):
        """call(*args); what went wrong as a message for the caller, or "" if nothing did. A
        Refusal says it for a person; anything else is a bug, logged with its traceback."""
        try:
            call(*args)
            return ""
        except Refusal as err:
            log.warning("%s on %s: %s", experiment.key, where, err)
            return request_checks.bounded(str(err))
        except Exception as err:  # noqa: BLE001 - one target's failure is that target's error
            log.exception("%s on %s failed unexpectedly", experiment.key, where)
            return request_checks.bounded(f"unexpected {type(err).__name__} in the agent: {err}; see the agent's log")

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
                    try:
                        engine.revoke(*key)
                    except Exception:  # noqa: BLE001 - the other leases still need keeping
                        log.exception("revoking %s on %s failed", *key)

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


def serve(service, address, credentials=None, executor=None):
    """Start serving; returns (server, bound port). executor: the threads its calls run in (a
    pool of its own by default; a bench running many agents in one process shares one)."""
    server = grpc.server(executor or futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_AgentServicer_to_server(service, server)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    server.start()
    return server, port
