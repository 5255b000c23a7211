"""Controller benchmark: what the kfault controller costs the API server, and how soon an
experiment is in place, as the cluster and the number of experiments grow.

The real controller (python -m kfault_controller, its own process) runs against kmock's
Kubernetes emulator; each node's agent is a real gRPC agent server whose engine records the
moment it applies a placement instead of touching the kernel (the tests' RecordingEngine). The
agents run in child processes of their own (AGENT_PROCESSES), as on a cluster each runs apart
from the API server: in kmock's process, 50 agents' gRPC threads and kmock shared one
interpreter lock, and that process, not the controller, set the placement latency. For each
size (pods, experiments):
  - ready: from the controller's start until it has placed a canary (kopf runs no handler
    before its startup LIST and its indexes hold every pod, node and namespace); the canary is
    then deleted;
  - settled: from the start until the controller's event loop ran or waited to run (for a CPU
    the machine's other work held) under SETTLED_CPU of the time (kopf then has
    run its own first listing of every pod through the pods watch's handler: ~1 ms a pod).
    Placement latency is measured from then on, as experiments are created in a running
    cluster, not in the seconds after the controller itself (re)started;
  - experiments are created at CREATE_PER_S; a resource's latency runs from its creation until
    the agent of every pod it selects has applied it (p50, p99 over the resources);
  - once everything is placed and SETTLE_S have passed, the API requests kmock receives in
    WINDOW_S of steady state, per minute, by verb and resource (goal: flat in pods and
    experiments; status is written only when it changes); watch streams re-opened are counted
    apart (kmock sends no bookmarks: kopf re-opens a quiet stream every 70 s, which an API
    server's bookmarks prevent);
  - the controller's resident memory (VmRSS) at the end;
  - the CPU seconds the controller, kmock (the bench's own process) and the agents used while
    the experiments were placed: which of them the latency is waiting for.
Pods are spread PODS_PER_NODE to a node; experiment i selects the pods labelled app=app-(i mod
APPS) (mode all): 1/APPS of the cluster each. Production timings (renewal every 5 s, lease 15 s).
Run: make bench-controller [ARGS="--grid"] (the corners and the diagonal unless --grid; one
size: ARGS="--size 5000x100"). BENCH_WINDOW_S, BENCH_SETTLE_S shorten a trial run. BENCH_PROFILE=path
runs the controller under cProfile while the experiments are placed (bench/profiled_controller.py;
stats written there once they are; each size overwrites them), keeps its log and prints when
each experiment was created and placed.
"""
import argparse
import asyncio
import collections
import contextlib
import itertools
import multiprocessing
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))   # the tests' helpers

from kfault_agent import server  # noqa: E402
from kfault_agent.kernel.capabilities import Capability  # noqa: E402
from tests.doubles import RecordingEngine  # noqa: E402
from tests.kube import parse_path_with_namespaces, register_cluster  # noqa: E402

PODS = (100, 1000, 5000)
EXPERIMENTS = (1, 10, 100)
PODS_PER_NODE = 100
APPS = 20
CREATE_PER_S = 10
SETTLE_S = int(os.environ.get("BENCH_SETTLE_S", "15"))
WINDOW_S = int(os.environ.get("BENCH_WINDOW_S", "60"))
PLACED_TIMEOUT_S = 120
READY_TIMEOUT_S = 900
SETTLED_CPU = 0.25          # of one core, over SETTLED_SAMPLE_S: the controller is idle but for timers
SETTLED_SAMPLE_S = 1.0
AGENT_PROCESSES = 4         # the agents' processes
AGENT_THREADS = 8           # the threads every agent's calls run in, in each agents' process
PROFILE = os.environ.get("BENCH_PROFILE")   # a path: the controller runs under cProfile, its stats written there


class TimedEngine(RecordingEngine):
    """The tests' recording engine, reporting each apply: (experiment key, pod, monotonic time,
    one clock for every process of the machine)."""

    def __init__(self, applies):
        super().__init__()
        self.applies = applies
        self.earliest_ns = 0            # no placement's deadline is before this

    def apply(self, experiment, target, lease_s=None):
        super().apply(experiment, target, lease_s)
        self.earliest_ns = min(self.earliest_ns or 2 ** 63, self.placed[(experiment.key, target.name)].deadline_ns)
        self.applies.put((experiment.key, target.name, time.monotonic()))

    def lapsed(self):
        """The recording engine's, looking at the placements only once the earliest deadline
        has passed: each agent's housekeeping asks twice a second, and 200 agents scanning
        2,500 placements each cost the agents' process more than answering the controller.
        A renewal only moves a deadline later, so `earliest_ns` is never too late."""
        if time.monotonic_ns() < self.earliest_ns:
            return []
        lapsed = super().lapsed()
        self.earliest_ns = min((p.deadline_ns for p in self.placed.values()), default=0)
        return lapsed


class Agent:
    """One node's agent: a real gRPC server over a TimedEngine. executor: the threads its calls
    run in, shared by every agent of the process (200 agents' 8 threads each contended for
    one interpreter lock)."""

    def __init__(self, node, applies, executor):
        self.engine = TimedEngine(applies)
        self.service = server.AgentService([self.engine], {"tc-bpf": Capability("tc-bpf", True, "bench")},
                                           node_name=node)
        self.grpc, self.port = server.serve(self.service, "127.0.0.1:0", executor=executor)

    def close(self):
        self.grpc.stop(None)
        self.service.close()


def forward(local, applies, stop):
    """What the agents applied, to the bench in batches: a pickled message per pod applied cost
    the agents' process and the bench's more CPU than the controller at 20,000 pods."""
    while not stop.is_set():
        try:
            batch = [local.get(timeout=0.1)]
        except queue.Empty:
            continue
        with contextlib.suppress(queue.Empty):
            while len(batch) < 10000:
                batch.append(local.get_nowait())
        applies.put(batch)


def serve_agents(nodes, ports, applies, stop):
    """The child process: every node's agent, until `stop` is set; their ports go to `ports`."""
    local = queue.SimpleQueue()
    threading.Thread(target=forward, args=(local, applies, stop), daemon=True).start()
    executor = futures.ThreadPoolExecutor(max_workers=AGENT_THREADS, thread_name_prefix="bench-agents")
    agents = {node: Agent(node, local, executor) for node in nodes}
    ports.send({node: agent.port for node, agent in agents.items()})
    stop.wait()
    for agent in agents.values():
        agent.close()
    executor.shutdown(wait=False, cancel_futures=True)


class Agents:
    """Every node's agent, in AGENT_PROCESSES child processes (50 agents to a process cost 272 us
    of CPU per Apply, 200 to a process 372-495 us: their gRPC servers' threads contend for one
    interpreter lock); what they applied, as they report it."""

    def __init__(self, nodes):
        context = multiprocessing.get_context("fork")      # before kmock or any gRPC object exists here
        self.applied = context.Queue()
        self.stop = context.Event()
        self.processes, self.ports = [], {}
        for first in range(AGENT_PROCESSES):
            receive, send = context.Pipe(duplex=False)
            process = context.Process(target=serve_agents, args=(nodes[first::AGENT_PROCESSES], send, self.applied,
                                                                  self.stop), daemon=True)
            process.start()
            self.processes.append(process)
            self.ports.update(receive.recv())
        self.applied_at = collections.defaultdict(dict)   # experiment key -> {pod: monotonic time of its first apply}
        self.apply_calls = collections.Counter()          # experiment key -> applies
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        for batch in iter(self.applied.get, None):
            for key, pod_name, at in batch:
                self.applied_at[key].setdefault(pod_name, at)
                self.apply_calls[key] += 1

    def placed(self, key):
        return list(self.applied_at.get(key, {}).values())

    def close(self):
        self.stop.set()
        for process in self.processes:
            process.join(30)
        self.applied.put(None)
        self.reader.join(5)


def node_name(i):
    return f"node-{i:03d}"


def pod(i, node):
    name = f"pod-{i:05d}"
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "resourceVersion": "1",
                         "labels": {"app": f"app-{i % APPS}"}},
            "spec": {"nodeName": node, "containers": [{"name": "main"}]},
            "status": {"phase": "Running", "podIP": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
                       "containerStatuses": [{"name": "main", "containerID": f"containerd://{i:064x}"}]}}


def agent_pod(node, port):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"kfault-agent-{node}", "namespace": "kfault-system", "uid": f"uid-agent-{node}",
                         "resourceVersion": "1", "labels": {"app.kubernetes.io/name": "kfault-agent"}},
            "spec": {"nodeName": node, "containers": [{"name": "agent", "ports": [{"name": "grpc",
                                                                                  "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1"}}


def experiment(i):
    name = f"exp-{i:03d}"
    return {"apiVersion": "kfault.dev/v1alpha1", "kind": "NetworkChaos",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "resourceVersion": "1"},
            "spec": {"action": "loss", "loss": {"loss": "30"}, "mode": "all",
                     "selector": {"labelSelectors": {"app": f"app-{i % APPS}"}}}}


def populate(kmock, pods, agents):
    register_cluster(kmock)
    for node, port in agents.ports.items():
        kmock.objects["v1/nodes", None, node] = {"metadata": {"name": node, "labels": {}, "resourceVersion": "1"}}
        kmock.objects["v1/pods", "kfault-system", f"kfault-agent-{node}"] = agent_pod(node, port)
    for i in range(pods):
        kmock.objects["v1/pods", "default", f"pod-{i:05d}"] = pod(i, node_name(i // PODS_PER_NODE))


def request_kind(request):
    """verb resource[/subresource], as an API server's audit log would group it."""
    verb = request.action.value.lower() if request.action else request.method.value.lower()
    if request.resource is None or not request.resource.plural:
        return f"{verb} {request.url.path}"
    plural = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
    return f"{verb} {plural}"


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def controller_process(kubeconfig):
    """python -m kfault_controller, as its Deployment runs it (plaintext to the local agents)."""
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    log = tempfile.NamedTemporaryFile(prefix="kfault-bench-controller-", suffix=".log", delete=False)
    if PROFILE:
        print(f"the controller's log: {log.name}", flush=True)
        command = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "profiled_controller.py"), PROFILE]
    else:
        command = ["-m", "kfault_controller"]
    process = subprocess.Popen([sys.executable, *command, "--insecure"], env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    process.started = time.monotonic()
    try:
        yield process
    except BaseException:
        print(f"the controller's log: {log.name}", file=sys.stderr)
        raise
    else:
        if not PROFILE:
            os.unlink(log.name)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what() if callable(what) else what}: not within {timeout} s")
        await asyncio.sleep(0.05)


def as_by_an_api_server(handle, create, served):
    """kmock 0.8 stores a created object as sent; an API server gives it a uid, a resourceVersion
    and a creationTimestamp (what a Workflow's nodes create), as here. And kmock keeps every
    request it served, matching each new one against them all (its reactions' `request in
    view` walks the whole log): a cost per request growing with the run, which an API server
    has not, and which made kmock, not the controller, the bench's bottleneck (at 1,000 pods x
    100 experiments it used 25 CPU seconds while placing, the controller 4). So the bench
    counts requests itself (`served`: their kinds, request_kind) and kmock's log keeps only the
    request being served."""
    made = itertools.count(1)

    async def handled(self, request):
        served.append(request_kind(request))
        del self._requests[:-1]
        if request.resource is not None and request.action == create and isinstance(request.data, dict):
            number = next(made)
            metadata = request.data.setdefault("metadata", {})
            if "generateName" in metadata and not metadata.get("name"):
                # kopf's events are named so: kmock named each None, and refused all but the first.
                metadata["name"] = f"{metadata['generateName']}{number}"
            metadata.update(uid=f"uid-created-{number}", resourceVersion=f"c{number}",
                            creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        return await handle(self, request)
    return handled


def objects_by_name(get_objs):
    """kmock 0.8 looks for a request's object by checking every object it holds against the
    request (20,000 pods: 20,000 checks for each patch of an experiment), which made kmock,
    not the controller, what a placement waited for. The objects a named request may match
    are those of its name: only they are checked, with kmock's own check."""
    def by_name(self, request, strict):
        if request.name is None:
            return get_objs(self, request, strict)
        check = self._KubernetesEmulator__check
        return [obj for (resource, namespace, name), obj in self._objects._objects.items()
                if name == request.name and check(request, resource, namespace, name, strict=strict)]
    return by_name


async def run_size(pods, experiments, workflows=0):
    """One size: {'latencies', 'per_minute' (kind -> requests/min), 'rss_mib'}."""
    import kmock as kmock_lib
    from kmock._internal import parsing

    unpatched = parsing.parse_path
    parsing.parse_path = parse_path_with_namespaces(unpatched)     # kmock serves namespaces, as the tests'
    handle = kmock_lib.KubernetesEmulator._handle
    served = []         # the kind of each request kmock served, in order
    kmock_lib.KubernetesEmulator._handle = as_by_an_api_server(handle, kmock_lib.action.CREATE, served)
    get_objs = kmock_lib.KubernetesEmulator._KubernetesEmulator__get_objs
    kmock_lib.KubernetesEmulator._KubernetesEmulator__get_objs = objects_by_name(get_objs)
    agents = Agents([node_name(n) for n in range((pods + PODS_PER_NODE - 1) // PODS_PER_NODE)])
    try:
        async with kmock_lib.KubernetesEmulator() as kmock, kmock_lib.Server(kmock):
            populate(kmock, pods, agents)
            with tempfile.NamedTemporaryFile("w", suffix=".kubeconfig") as config:
                config.write(f"""
                    kind: Config
                    current-context: self
                    clusters: [{{name: self, cluster: {{server: "{kmock.url!s}"}}}}]
                    contexts: [{{name: self, context: {{cluster: self}}}}]
                """)
                config.flush()
                with controller_process(config.name) as process:
                    return await measure(kmock, served, agents, process, pods, experiments, workflows)
    finally:
        parsing.parse_path = unpatched
        kmock_lib.KubernetesEmulator._handle = handle
        kmock_lib.KubernetesEmulator._KubernetesEmulator__get_objs = get_objs
        agents.close()


async def wait_until_ready(kmock, agents, started):
    """Seconds from the controller's start until it has placed a canary experiment (its indexes
    are filled only then); the canary is deleted again, and its deletion completes."""
    canary = dict(experiment(0), metadata={"name": "canary", "namespace": "default", "uid": "uid-canary",
                                           "resourceVersion": "1"})
    canary["spec"] = dict(canary["spec"], mode="one")
    path = "/apis/kfault.dev/v1alpha1/namespaces/default/networkchaos"
    response = await kmock.post(path, json=canary)
    assert response.status in (200, 201), await response.text()
    await wait_until(lambda: agents.placed("default/canary"),
                     READY_TIMEOUT_S, "the canary placed")
    ready_s = time.monotonic() - started
    await kmock.delete(f"{path}/canary")
    await wait_until(lambda: kmock.objects["kfault.dev/v1alpha1/networkchaos", "default", "canary"].deleted,
                     PLACED_TIMEOUT_S, "the canary deleted")
    return ready_s


def processes_cpu(controller, agents):
    """CPU seconds used so far by the controller, kmock (this process: the bench's own cost) and
    the agents (their processes)."""
    return {"controller": cpu_seconds(controller), "kmock": cpu_seconds(os.getpid()),
            "agents": sum(cpu_seconds(process.pid) for process in agents.processes)}


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")   # utime + stime


def loop_demand_seconds(pid):
    """Seconds the process's main thread (the controller's event loop) ran, and waited on a
    run queue to run, so far: on a machine busy with other work an event loop still behind
    uses little CPU, but waits."""
    with open(f"/proc/{pid}/task/{pid}/schedstat") as schedstat:
        ran_ns, waited_ns, _ = (int(field) for field in schedstat.read().split())
    return (ran_ns + waited_ns) / 1e9


async def wait_until_settled(pid, started):
    """Seconds from the controller's start until its event loop ran or waited to run under
    SETTLED_CPU of a whole SETTLED_SAMPLE_S."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        before = loop_demand_seconds(pid)
        await asyncio.sleep(SETTLED_SAMPLE_S)
        if (loop_demand_seconds(pid) - before) / SETTLED_SAMPLE_S < SETTLED_CPU:
            return time.monotonic() - started
    raise TimeoutError(f"the controller still busy after {READY_TIMEOUT_S} s")


def workflow(i):
    """A Workflow of 5 nodes running for the whole measure: a Parallel of a NetworkChaos (on
    1/APPS of the pods, as the experiments), a Suspend and a Serial of a Suspend."""
    name = f"wf-{i:03d}"
    net = experiment(i)["spec"]
    return {"apiVersion": "kfault.dev/v1alpha1", "kind": "Workflow",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "resourceVersion": "1"},
            "spec": {"entry": "main", "templates": [
                {"name": "main", "templateType": "Parallel", "children": ["net", "wait", "more"]},
                {"name": "net", "templateType": "NetworkChaos", "deadline": "1h", "networkChaos": net},
                {"name": "wait", "templateType": "Suspend", "deadline": "1h"},
                {"name": "more", "templateType": "Serial", "children": ["wait"]}]}}


async def start_workflows(kmock, count):
    """Create `count` workflows and wait until each runs its 5 nodes."""
    for i in range(count):
        kmock.objects["kfault.dev/v1alpha1/workflows", "default", f"wf-{i:03d}"] = workflow(i)

    def running():
        return all(len((kmock.objects["kfault.dev/v1alpha1/workflows", "default", f"wf-{i:03d}"].get("status") or {})
                       .get("nodes", [])) == 5 for i in range(count))
    await wait_until(running, PLACED_TIMEOUT_S, f"{count} workflows running")


async def measure(kmock, served, agents, process, pods, experiments, workflows=0):
    ready_s = await wait_until_ready(kmock, agents, process.started)
    settled_s = await wait_until_settled(process.pid, process.started)
    await start_workflows(kmock, workflows)
    selected = {f"default/exp-{i:03d}": sum(1 for p in range(pods) if p % APPS == i % APPS)
                for i in range(experiments)}
    cpu_before = processes_cpu(process.pid, agents)
    served_before = len(served)
    if PROFILE:
        process.send_signal(signal.SIGUSR1)       # bench/profiled_controller.py: the profile starts
    created = await create_experiments(kmock, experiments)
    latencies = await placement_latencies(agents, created, selected)
    if PROFILE:
        process.send_signal(signal.SIGUSR2)       # and is written
    placing_cpu = {name: used - cpu_before[name]
                   for name, used in processes_cpu(process.pid, agents).items()}
    placing_requests = collections.Counter(served[served_before:])
    await asyncio.sleep(SETTLE_S)
    per_minute = await steady_requests(served)
    applies = sum(count for key, count in agents.apply_calls.items() if key.startswith("default/exp-"))
    return {"ready_s": ready_s, "settled_s": settled_s, "latencies": latencies, "per_minute": per_minute,
            "rss_mib": rss_mib(process.pid), "placing_cpu": placing_cpu,
            "apply_per_pod": applies / sum(selected.values()),
            "placing_requests": {kind: count / experiments for kind, count in placing_requests.items()}}


async def create_experiments(kmock, count):
    """Create them CREATE_PER_S a second: {key: when it was created}."""
    created = {}
    for i in range(count):
        body = experiment(i)
        created[f"default/{body['metadata']['name']}"] = time.monotonic()
        if PROFILE:
            print(f"created {body['metadata']['name']} at {time.time():.3f}", flush=True)
        response = await kmock.post("/apis/kfault.dev/v1alpha1/namespaces/default/networkchaos", json=body)
        assert response.status in (200, 201), await response.text()
        await asyncio.sleep(1 / CREATE_PER_S)
    return created


async def placement_latencies(agents, created, selected):
    """Seconds from each experiment's creation until every pod it selects (selected: key -> how
    many) was applied by its node's agent, sorted."""
    latencies = {}

    def every_pod_applied():
        for key in created.keys() - latencies.keys():
            times = agents.placed(key)
            if len(times) < selected[key]:
                return False
            latencies[key] = max(times) - created[key]
            if PROFILE:
                print(f"placed {key} first {min(times) - created[key]:.3f} last {latencies[key]:.3f} s", flush=True)
        return True
    await wait_until(every_pod_applied, PLACED_TIMEOUT_S, lambda: f"{len(latencies)} of {len(created)} placed")
    return sorted(latencies.values())


async def steady_requests(served):
    """The API requests kmock receives in WINDOW_S, per minute, by verb and resource (served:
    the kind of each request so far, as_by_an_api_server)."""
    start = len(served)
    await asyncio.sleep(WINDOW_S)
    counts = collections.Counter(served[start:])
    return {kind: count * 60 / WINDOW_S for kind, count in counts.items()}


def percentile(values, fraction):
    return values[min(len(values) - 1, int(round(fraction * (len(values) - 1))))]


def sizes(grid):
    if grid:
        return [(p, e) for p in PODS for e in EXPERIMENTS]
    return [(PODS[0], EXPERIMENTS[0]), (PODS[0], EXPERIMENTS[-1]), (PODS[1], EXPERIMENTS[1]),
            (PODS[-1], EXPERIMENTS[0]), (PODS[-1], EXPERIMENTS[-1])]


def reopened_watches(per_minute):
    """Watch streams re-opened: kmock sends no bookmarks, so kopf re-opens a quiet stream every
    70 s (settings.watching.inactivity_timeout); an API server's bookmarks keep them open."""
    return sum(rate for kind, rate in per_minute.items() if kind.startswith("watch "))


def report_size(pods, experiments, result):
    lat, per_minute = result["latencies"], result["per_minute"]
    others = sum(per_minute.values()) - reopened_watches(per_minute)
    print(f"\n{pods} pods, {experiments} experiment(s): ready {result['ready_s']:.1f} s after start, "
          f"settled {result['settled_s']:.1f} s; "
          f"in steady state {others:.0f} API requests/min (+{reopened_watches(per_minute):.0f} watches re-opened); "
          f"placed p50 {statistics.median(lat) * 1000:.0f} ms, p99 {percentile(lat, 0.99) * 1000:.0f} ms; "
          f"controller RSS {result['rss_mib']:.0f} MiB; Apply calls per selected pod {result['apply_per_pod']:.2f}; "
          "CPU seconds while placing: "
          + ", ".join(f"{name} {used:.1f}" for name, used in result["placing_cpu"].items()),
          flush=True)
    for kind, rate in sorted(per_minute.items(), key=lambda item: -item[1]):
        print(f"    {rate:8.1f}/min  {kind}")
    print("  API requests per experiment while placing:")
    for kind, rate in sorted(result["placing_requests"].items(), key=lambda item: -item[1]):
        print(f"    {rate:8.2f}  {kind}")


def report_table(rows):
    print("\n| pods | experiments | API requests/min, steady state | placed p50 | placed p99 | controller RSS "
          "| ready after start | settled after start |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for pods, experiments, result in rows:
        lat, per_minute = result["latencies"], result["per_minute"]
        others = sum(per_minute.values()) - reopened_watches(per_minute)
        print(f"| {pods:,} | {experiments} | {others:.0f} (+{reopened_watches(per_minute):.0f} watches re-opened) | "
              f"{statistics.median(lat) * 1000:.0f} ms | {percentile(lat, 0.99) * 1000:.0f} ms | "
              f"{result['rss_mib']:.0f} MiB | {result['ready_s']:.1f} s | {result['settled_s']:.1f} s |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", action="store_true", help="every size, not only the corners and the diagonal")
    parser.add_argument("--size", action="append", default=[], metavar="PODSxEXPERIMENTS",
                        help="only these sizes, e.g. 5000x100")
    parser.add_argument("--workflows", type=int, default=0,
                        help="this many Workflows of 5 nodes running beside the experiments, started first")
    args = parser.parse_args()
    chosen = [tuple(int(n) for n in s.split("x")) for s in args.size] or sizes(args.grid)
    print(f"{PODS_PER_NODE} pods a node, an agent each; each experiment selects 1/{APPS} of the pods; "
          f"{CREATE_PER_S} created a second; steady state: {WINDOW_S} s from {SETTLE_S} s after the last placement; "
          f"{args.workflows} workflow(s) of 5 nodes running beside them")
    rows = []
    for pods, experiments in chosen:
        rows.append((pods, experiments, asyncio.run(run_size(pods, experiments, args.workflows))))
        report_size(*rows[-1])
    report_table(rows)


if __name__ == "__main__":
    main()
