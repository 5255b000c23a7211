"""This node's kfault: the composition root of `kfault agent` and `kfault run`.

It knows which engine places which kind, loads the engines this kernel can run (each probes
and loads its own datapath), clears what killed kfault processes left behind, serves the
agent's gRPC API, metrics and kubelet's probes (health.py), and shuts all of it down in order.
The surfaces (cli.py) only parse arguments and print.
"""
import contextlib
import os
import threading
from dataclasses import dataclass

from kfault_agent import health, metrics, server
from kfault_agent.engines.iofault import IOFaultEngine
from kfault_agent.engines.dnsfault import DnsFaultEngine
from kfault_agent.engines.httpfault import HttpFaultEngine
from kfault_agent.engines.netfault import NetFaultEngine
from kfault_agent.engines.podfault import PodFaultEngine
from kfault_agent.engines.stressfault import StressEngine
from kfault_agent.engines.syscallfault import SyscallFaultEngine
from kfault_agent.errors import KernelUnsupported
from kfault_agent.kernel import tc
from kfault_agent.stop import Stopped
from kfault_api import spec

# The engine of each kind, in the order the agent loads them.
ENGINE_TYPES = (NetFaultEngine, IOFaultEngine, PodFaultEngine, StressEngine, SyscallFaultEngine, DnsFaultEngine,
                HttpFaultEngine)
ENGINE_OF_KIND = {engine_type.kind.name: engine_type for engine_type in ENGINE_TYPES}


def kind_of(experiment):
    """The spec.Kind an experiment model belongs to."""
    return next(kind for kind in spec.KINDS.values() if isinstance(experiment, kind.model))


# ---- kfault run: one kind, local targets ------------------------------------------------

def open_local(kind, target_text, experiment, lease_s, stop=None):
    """(engine, targets) for `kfault run`: the target is found first (TargetNotFound), so a
    typo costs no BPF compile; then only this kind's engine loads (KernelUnsupported). A
    signal on `stop` (StopSignal) before it returns: the engine is closed, Stopped raised."""
    engine_type = ENGINE_OF_KIND[kind.name]
    targets = engine_type.resolve(target_text, experiment)
    _check(stop)
    with _loading(stop):
        engine = _load(engine_type, {}, lease_s, stop)
    _check(stop, engine)
    return engine, targets


def place(engine, experiments, targets, stop=None):
    """Every experiment on every target; a signal on `stop` ends it between two placements
    (Stopped): the caller closes the engine, which takes back what was placed."""
    for experiment in experiments:
        for target in targets:
            _check(stop)
            engine.apply(experiment, target)


def _check(stop, *made):
    """Stopped if a signal came, after closing what this step made (engines)."""
    if stop is None:
        return
    try:
        stop.check()
    except Stopped:
        for thing in reversed(made):
            thing.close()
        raise


@contextlib.contextmanager
def _loading(stop, *made):
    """One engine's load: a stop signal ends the child processes it waits on (a compiler, a
    probe); a load that then fails is a stop, not an error (Stopped, what was made closed)."""
    if stop is None:
        yield
        return
    try:
        with stop.ending_children():
            yield
    except Stopped:
        for thing in reversed(made):
            thing.close()
        raise
    except Exception as err:
        if not stop.wait(0):
            raise
        for thing in reversed(made):
            thing.close()
        raise Stopped("stopped by a signal while loading") from err


LOADER_STACK = 64 << 20     # LLVM recurses deeply; a thread's default stack is the process's 8 MiB at best
POLL_S = 0.05


def _load(engine_type, capabilities, lease_s, stop):
    """engine_type.load in a thread of its own while this one watches `stop`: a compile is one
    C call that no signal interrupts (seconds here, ~100 s under TCG). A stop abandons the load
    (Stopped with .abandoned): what it made so far is the process's own (fds, children, probes'
    throwaway namespaces) and goes with it; the caller exits without waiting for it."""
    if stop is None:
        return engine_type.load(capabilities, lease_s)
    outcome = []

    def load():
        try:
            outcome.append((True, engine_type.load(capabilities, lease_s)))
        except BaseException as err:  # noqa: BLE001 - handed to the waiting thread
            outcome.append((False, err))

    saved = threading.stack_size(LOADER_STACK)
    try:
        loader = threading.Thread(target=load, name=f"kfault-load-{engine_type.kind.name}", daemon=True)
        loader.start()
    finally:
        threading.stack_size(saved)
    while loader.is_alive():
        if stop.wait(POLL_S):
            stopped = Stopped(f"stopped by a signal while loading {engine_type.what}")
            stopped.abandoned = True
            raise stopped
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def renew_local(engine):
    """One turn of a local run: renew every lease, revoke what reached its duration; returns
    the placements still in force (none: the run is over)."""
    for key in engine.renew():
        engine.revoke(*key)
    return engine.active()


# ---- kfault agent: every kind this kernel can run, over gRPC ------------------------------

def load_engines(lease_s, notice, stop=None, unloaded=None):
    """(engines, capabilities): every engine whose datapath loads here, and what this node's
    kernel can do; notice(text) hears of each engine that can't load, and `unloaded` (a dict)
    gets kind -> why. A signal on `stop` between two loads: those loaded are closed, Stopped
    raised."""
    engines, capabilities = [], {}     # one dict, shared: each engine adds what it probed
    for engine_type in ENGINE_TYPES:
        _check(stop, *engines)
        try:
            with _loading(stop, *engines):
                engines.append(_load(engine_type, capabilities, lease_s, stop))
        except KernelUnsupported as err:
            _check(stop, *engines)
            notice(f"no {engine_type.what} on this node: {err}")
            if unloaded is not None:
                unloaded[engine_type.kind.name] = str(err)
    _check(stop, *engines)
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


def start_agent(listen, lease_s, notice, node_name=None, tls_dir=None, metrics_port=0, health_port=0, stop=None):
    """Clear what a dead agent left, load the engines, serve gRPC (mTLS with `tls_dir`,
    else insecure) and metrics; returns the running Agent. With `health_port`, kubelet's
    probes answer from the start: NOT_SERVING while the datapaths compile, then SERVING.
    notice(text) hears what an operator should know. A signal on `stop` (StopSignal) before
    it returns: what was started is stopped, Stopped raised."""
    probes = health.HealthServer(f"[::]:{health_port}") if health_port else None
    try:
        agent = _start_serving(listen, lease_s, notice, node_name, tls_dir, metrics_port, stop)
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


def _start_serving(listen, lease_s, notice, node_name, tls_dir, metrics_port, stop):
    _check(stop)
    stale = tc.remove_stale_filters()
    if stale:
        notice(f"removed {stale} filter(s) an agent that died had left")
    unloaded = {}
    engines, capabilities = load_engines(lease_s, notice, stop, unloaded)
    credentials, common_name = tls_from(tls_dir) if tls_dir else (None, None)
    service = server.AgentService(engines, capabilities, node_name=node_name, require_common_name=common_name,
                                  unloaded=unloaded)
    grpc_server, port = server.serve(service, listen, credentials)
    agent = Agent(engines, service, grpc_server, port)
    if stop is not None and stop.wait(0):
        agent.stop()
        raise Stopped("stopped by a signal while starting")
    if metrics_port:
        metrics.serve(engines, metrics_port)
    return agent
