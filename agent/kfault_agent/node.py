"""This node's kfault: the composition root of `kfault agent` and `kfault run`.

It knows which engine places which kind, loads the engines this kernel can run (each probes
and loads its own datapath), clears what killed kfault processes left behind, serves the
agent's gRPC API, metrics and kubelet's probes (health.py), and shuts all of it down in order. The surfaces (cli.py) only
parse arguments and print.
"""
import os
import select
import signal
import time
from dataclasses import dataclass

from kfault_agent import health, metrics, server
from kfault_agent.engines.iofault import IOFaultEngine
from kfault_agent.engines.netfault import NetFaultEngine
from kfault_agent.engines.podfault import PodFaultEngine
from kfault_agent.errors import KernelUnsupported
from kfault_agent.kernel import tc
from kfault_api import spec

# The engine of each kind, in the order the agent loads them.
ENGINE_TYPES = (NetFaultEngine, IOFaultEngine, PodFaultEngine)
ENGINE_OF_KIND = {engine_type.kind.name: engine_type for engine_type in ENGINE_TYPES}


def kind_of(experiment):
    """The spec.Kind an experiment model belongs to."""
    return next(kind for kind in spec.KINDS.values() if isinstance(experiment, kind.model))


class StopSignal:
    """Set by SIGINT or SIGTERM: what ends `kfault run` and `kfault agent`. Not a
    threading.Event: Python runs a handler in the main thread between two of its bytecodes,
    which can be while that thread holds the Event's own lock (inside Event.wait), and a
    handler that set it would wait for that lock for ever; nor a pipe the handler writes: a
    signal that comes just before the wait's poll would be seen only after it. The
    interpreter's own C handler writes the signal's number into a pipe (set_wakeup_fd) at once."""

    STOPPING = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self._read, select.POLLIN)
        self._stopped = False
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for sig in self.STOPPING:
            signal.signal(sig, lambda *_: None)     # handled (the pipe says so), not fatal

    def wait(self, timeout=None):
        """True once SIGINT or SIGTERM came; False after `timeout` seconds without."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stopped:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._poll.poll(None if left is None else left * 1000):
                return False
            self._stopped = any(number in self.STOPPING for number in os.read(self._read, 64))
        return True

    def close(self):
        """Back to the handlers Python starts with; the pipe closed."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.close(self._read)
        os.close(self._write)


# ---- kfault run: one kind, local targets ------------------------------------------------

def open_local(kind, target_text, experiment, lease_s):
    """(engine, targets) for `kfault run`: the target is found first (TargetNotFound), so a
    typo costs no BPF compile; then only this kind's engine loads (KernelUnsupported)."""
    engine_type = ENGINE_OF_KIND[kind.name]
    targets = engine_type.resolve(target_text, experiment)
    return engine_type.load({}, lease_s), targets


def place(engine, experiments, targets):
    for experiment in experiments:
        for target in targets:
            engine.apply(experiment, target)


def renew_local(engine):
    """One turn of a local run: renew every lease, revoke what reached its duration; returns
    the placements still in force (none: the run is over)."""
    for key in engine.renew():
        engine.revoke(*key)
    return engine.active()


# ---- kfault agent: every kind this kernel can run, over gRPC ------------------------------

def load_engines(lease_s, notice):
    """(engines, capabilities): every engine whose datapath loads here, and what this node's
    kernel can do; notice(text) hears of each engine that can't load."""
    engines, capabilities = [], {}     # one dict, shared: each engine adds what it probed
    for engine_type in ENGINE_TYPES:
        try:
            engines.append(engine_type.load(capabilities, lease_s))
        except KernelUnsupported as err:
            notice(f"no {engine_type.what} on this node: {err}")
    return engines, capabilities


def tls_from(directory):
    """(server credentials, the common name callers must have) from the agent's Secret:
    tls.crt, tls.key and ca.crt."""
    def read(name):
        with open(os.path.join(directory, name), "rb") as handle:
            return handle.read()
    return (server.server_credentials(read("tls.crt"), read("tls.key"), read("ca.crt")),
            server.CONTROLLER_COMMON_NAME)


@dataclass
class Agent:
    """A running node agent: its engines, the gRPC service over them, the server, and the
    health server kubelet probes (None without --health-port)."""
    engines: list
    service: object
    grpc_server: object
    port: int
    probes: object = None

    def stop(self):
        """In order: kubelet hears NOT_SERVING; no new calls; every placement revoked; the
        datapaths unloaded, the thaw guard ended; the probes answer no more."""
        if self.probes:
            self.probes.stopping()
        self.grpc_server.stop(5).wait()
        self.service.close()
        for engine in self.engines:
            engine.close()
        if self.probes:
            self.probes.stop()


def start_agent(listen, lease_s, notice, node_name=None, tls_dir=None, metrics_port=0, health_port=0):
    """Clear what a dead agent left, load the engines, serve gRPC (mTLS with `tls_dir`,
    else insecure) and metrics; returns the running Agent. With `health_port`, kubelet's
    probes answer from the start: NOT_SERVING while the datapaths compile, then SERVING.
    notice(text) hears what an operator should know."""
    probes = health.HealthServer(f"[::]:{health_port}") if health_port else None
    try:
        agent = _start_serving(listen, lease_s, notice, node_name, tls_dir, metrics_port)
    except BaseException:
        if probes:
            probes.stop()
        raise
    if probes:
        if not agent.engines:
            notice("no datapath loaded: the readiness probe stays NOT_SERVING, so this agent is not Ready")
        probes.serving(agent.engines)
        agent.probes = probes
    return agent


def _start_serving(listen, lease_s, notice, node_name, tls_dir, metrics_port):
    stale = tc.remove_stale_filters()
    if stale:
        notice(f"removed {stale} filter(s) an agent that died had left")
    engines, capabilities = load_engines(lease_s, notice)
    credentials, common_name = tls_from(tls_dir) if tls_dir else (None, None)
    service = server.AgentService(engines, capabilities, node_name=node_name, require_common_name=common_name)
    grpc_server, port = server.serve(service, listen, credentials)
    if metrics_port:
        metrics.serve(engines, metrics_port)
    return Agent(engines, service, grpc_server, port)
