"""kubelet's side of manifests/: a workload's container as declared, its args made runnable
here, and each of its probes run the way kubelet runs it."""
import os
import socket
import urllib.error
import urllib.request

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

MANIFESTS = os.path.join(os.path.dirname(__file__), "..", "manifests")
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


def container(manifest, kind):
    """The one container of the workload of `kind` in manifests/`manifest`."""
    with open(os.path.join(MANIFESTS, manifest), encoding="utf-8") as handle:
        workload = next(d for d in yaml.safe_load_all(handle) if d and d["kind"] == kind)
    (declared,) = workload["spec"]["template"]["spec"]["containers"]
    return declared


def declared_probes(declared):
    """{"livenessProbe": probe, ...}: every probe the container declares."""
    return {name: declared[name] for name in PROBES if name in declared}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def runnable_args(declared, env, paths):
    """The container's args as kubelet would pass them, for a process on this host: $(VAR)
    from `env`, each path in `paths` ({in the image: here}) replaced, and each declared
    containerPort replaced by a free port of this host (tests run side by side here, pods
    don't); returns (args, {declared port: port here})."""
    ports = {port["containerPort"]: free_port() for port in declared["ports"]}
    args = []
    for arg in declared["args"]:
        for name, value in env.items():
            arg = arg.replace(f"$({name})", value)
        arg = paths.get(arg, arg)
        for was, now in ports.items():
            if arg == str(was):
                arg = str(now)
            elif arg.endswith(f":{was}"):
                arg = f"{arg.removesuffix(str(was))}{now}"
        args.append(arg)
    return args, ports


def probe_port(declared, handler):
    """The containerPort a probe's handler names, by number or by the port's name."""
    port = handler["port"]
    if isinstance(port, str):
        return next(p["containerPort"] for p in declared["ports"] if p.get("name") == port)
    return port


def run_probe(declared, probe, ports, host="127.0.0.1"):
    """(passed, what kubelet saw): one run of `probe`, to the port here that stands for the
    declared one. grpc: a plaintext grpc.health.v1 Check of the probe's service, passed only
    if SERVING; httpGet: a GET, passed on 200-399. Both within timeoutSeconds (default 1)."""
    timeout = probe.get("timeoutSeconds", 1)
    if "grpc" in probe:
        address = f"{host}:{ports[probe_port(declared, probe['grpc'])]}"
        with grpc.insecure_channel(address) as channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")), timeout=timeout)
            except grpc.RpcError as err:
                return False, f"{err.code().name}: {err.details()}"
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        return answer.status == health_pb2.HealthCheckResponse.SERVING, status
    if "httpGet" in probe:
        get = probe["httpGet"]
        url = f"http://{host}:{ports[probe_port(declared, get)]}{get.get('path', '/')}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return 200 <= response.status < 400, f"HTTP {response.status}"
        except urllib.error.HTTPError as err:
            return 200 <= err.code < 400, f"HTTP {err.code}"
        except OSError as err:
            return False, f"{type(err).__name__}: {err}"
    raise AssertionError(f"a probe kind this test can't run as kubelet: {sorted(probe)}")


def run_all(declared, ports, host="127.0.0.1"):
    """{probe name: (passed, what kubelet saw)} for every declared probe."""
    return {name: run_probe(declared, probe, ports, host) for name, probe in declared_probes(declared).items()}
