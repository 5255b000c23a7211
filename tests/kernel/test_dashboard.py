"""The dashboard and the alerts against what a cluster really exports: Debian's Prometheus
scrapes a real agent (real datapaths, local pods) and the controller (on kmock) while a
NetworkChaos, an IOChaos, a PodChaos and (where cgroup v2 has the cpu and memory controllers)
a StressChaos are injected, and every query of every panel of
manifests/monitoring/grafana-dashboard.json (parsed from it, so a new panel is covered) must return data.
Prometheus also evaluates manifests/monitoring/prometheusrule.yaml's alerts on the same series."""
import asyncio
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from kfault_agent.kernel import stress
from tests import grafana
from tests.kernel.test_end_to_end import NODE, LocalPods, create, delete, phase
from tests.kube import NS, controller, register_cluster, wait_for
from tests.kubelet import free_port

pytestmark = [pytest.mark.kernel("tc-bpf", "clsact", "io-tracepoints", "ptrace"),
              pytest.mark.usefixtures("kubeconfig")]
PROMETHEUS = "/usr/bin/prometheus"
GONE = "node-gone"     # a node whose agent does not answer: the controller's refusals and errors
SCRAPE_S = 1


class Prometheus:
    """Debian's prometheus on a free port with its own config and storage in `root`, scraping
    each job's target as the ServiceMonitor names the jobs (the Services' names)."""

    def __init__(self, root, targets, rule_file):
        self.root = root
        os.makedirs(root)
        config = {"global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
                  "rule_files": [str(rule_file)],
                  "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                                     for job, target in targets.items()]}
        with open(os.path.join(root, "prometheus.yml"), "w", encoding="utf-8") as handle:
            json.dump(config, handle)     # JSON is YAML
        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={root}/prometheus.yml", f"--storage.tsdb.path={root}/data",
             f"--web.listen-address={self.url.split('//')[1]}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(root, "log"), "w", encoding="utf-8"))
        self._wait_ready()

    def _wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready in {timeout} s: {self.log()}")

    def log(self):
        with open(os.path.join(self.root, "log"), encoding="utf-8") as handle:
            return handle.read()[-2000:]

    def api(self, path, **params):
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr):
        """The instant vector `expr` gives now: [(labels, value)]."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return [(sample["metric"], float(sample["value"][1])) for sample in data["result"]]

    def alerts(self):
        """{alert name: [labels]} of the alerts pending or firing now."""
        found = {}
        for alert in self.api("alerts")["alerts"]:
            found.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        return found

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def agent(tmp_path, capabilities):
    """`kfault agent` as its own process, serving its metrics: (gRPC port, metrics port)."""
    metrics_port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "kfault_agent.cli", "agent", "--insecure", "--listen",
                             "127.0.0.1:0", "--node", NODE, "--lease", "10", "--metrics-port", str(metrics_port)],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "KFAULT_STATE_DIR": str(tmp_path / "state")})
    line = proc.stdout.readline()
    assert "serving" in line, line
    yield int(line.split(" on ")[1].split()[0].rsplit(":", 1)[1]), metrics_port
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


@pytest.fixture
def controller_metrics():
    """The controller's /metrics, served from this process, where the test runs the controller."""
    from prometheus_client import start_http_server

    import kfault_controller.metrics  # noqa: F401 - its series exist from the first scrape, as in its process
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1")
    yield port
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def prometheus(tmp_path, agent, controller_metrics):
    rules = grafana.write_rule_file(tmp_path / "rules.yaml")
    prom = Prometheus(str(tmp_path / "prometheus"), {"kfault-agent-metrics": f"127.0.0.1:{agent[1]}",
                                                      "kfault-controller-metrics": f"127.0.0.1:{controller_metrics}"},
                      rules)
    yield prom
    prom.close()


def agent_pod(node, port):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"kfault-agent-{node}", "namespace": "kfault-system", "uid": f"agent-{node}",
                         "labels": {"app.kubernetes.io/name": "kfault-agent"}, "resourceVersion": "1"},
            "spec": {"nodeName": node,
                     "containers": [{"name": "agent", "ports": [{"name": "grpc", "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1"}}


@pytest.fixture
def cluster(kmock, agent, lab):
    """This node with the real agent, and node-gone, whose agent's port nobody listens on."""
    register_cluster(kmock)
    for node, port in ((NODE, agent[0]), (GONE, free_port())):
        kmock.objects["v1/nodes", None, node] = {"metadata": {"name": node, "resourceVersion": "1"}}
        kmock.objects["v1/pods", "kfault-system", f"kfault-agent-{node}"] = agent_pod(node, port)
    pods = LocalPods(lab)
    yield kmock, pods
    pods.close()


def ghost_pod(name, labels):
    """A pod on node-gone: selected, but its agent never answers."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "labels": labels, "resourceVersion": "1"},
            "spec": {"nodeName": GONE, "containers": [{"name": "app"}]},
            "status": {"phase": "Running", "podIP": "10.250.9.9",
                       "containerStatuses": [{"name": "app", "containerID": f"containerd://{'ab' * 32}"}]}}


def panel_query(board, title):
    """The one query of the panel titled `title`, variables replaced."""
    (expr,) = [expr for panel, _, expr in grafana.panel_queries(board) if panel == title]
    return expr


def has_data(samples):
    """Grafana would draw something: at least one sample, and a number (not NaN: 0/0)."""
    return any(math.isfinite(value) for _, value in samples)


async def panels_without_data(prom, queries, timeout=60):
    """The (panel, refId, query) that returned no data at any moment within `timeout`."""
    missing = list(queries)
    deadline = time.monotonic() + timeout
    while missing and time.monotonic() < deadline:
        await asyncio.sleep(SCRAPE_S)
        missing = [query for query in missing if not has_data(await asyncio.to_thread(prom.query, query[2]))]
    return missing


@pytest.mark.asyncio
async def test_every_panel_shows_data_while_faults_are_injected(cluster, lab, prometheus, tmp_path):
    kmock, pods = cluster
    _, b_ip = lab.link("a", "b", "10.250.1")
    containers = {}
    for name, labels in (("web-1", {"app": "web"}), ("io-1", {"app": "io"}), ("frozen-1", {"app": "frozen"}),
                         ("stressed-1", {"app": "stressed"}), ("sys-1", {"app": "sys"})):
        kmock.objects["v1/pods", NS, name], containers[name] = pods.add(name, "a", labels)
    kmock.objects["v1/pods", NS, "web-2"] = ghost_pod("web-2", {"app": "web"})
    (tmp_path / "data.db").write_text("kfault")
    victim = subprocess.Popen([sys.executable, "-m", "kfault_lab.io_probe", containers["io-1"],
                               json.dumps([["read", str(tmp_path / "data.db"), 1_000_000]])],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    traffic = lab.popen("a", f"ping -q -i 0.01 {b_ip}")
    # sys-1's application: a getrandom every 10 ms, which SyscallChaos's latency holds (latency,
    # not fault: this host has no BPF LSM, and the panels need only a delayed call).
    random_calls = subprocess.Popen(["sh", "-c", f'echo $$ > {containers["sys-1"]}/cgroup.procs && exec "$@"', "sh",
                                     sys.executable, "-c", "import os, time\nwhile True:\n"
                                     "    os.getrandom(1)\n    time.sleep(0.01)"])
    experiments = {("networkchaos", "lossy"): ("NetworkChaos", {"action": "loss", "loss": {"loss": "30"}}),
                   ("iochaos", "slow-io"): ("IOChaos", {
                       "action": "latency", "delay": "5ms", "volumePath": str(tmp_path), "path": f"{tmp_path}/*.db",
                       "methods": ["read"], "selector": {"labelSelectors": {"app": "io"}}}),
                   ("podchaos", "freeze"): ("PodChaos", {"action": "pod-failure",
                                                         "selector": {"labelSelectors": {"app": "frozen"}}}),
                   ("syscallchaos", "slow-random"): ("SyscallChaos", {
                       "action": "latency", "delay": "1ms", "syscalls": ["getrandom"],
                       "selector": {"labelSelectors": {"app": "sys"}}}),
                   ("dnschaos", "dns-errors"): ("DNSChaos", {"action": "error", "patterns": ["*.example.test"],
                                                             "selector": {"pods": {NS: ["web-1"]}}}),
                   ("httpchaos", "http-aborts"): ("HTTPChaos", {"target": "Request", "port": 80, "path": "/api/*",
                                                               "abort": True, "selector": {"pods": {NS: ["web-1"]}}})}
    # StressChaos needs cgroup v2's cpu and memory controllers; where the node has them on
    # cgroup v1 (this development host) its agent refuses it, and its panels can have no data.
    stress_here = not stress.missing_controllers()
    if stress_here:
        experiments["stresschaos", "burn"] = ("StressChaos", {"stressors": {"cpu": {"workers": 1, "load": 10}},
                                                             "selector": {"labelSelectors": {"app": "stressed"}}})
    try:
        assert victim.stdout.readline().startswith("ready")
        # Scraped once before anything happens, as a running cluster is: a counter's first
        # increment is then an increase, not a series born at 1.
        await wait_for(lambda: len(prometheus.query("up == 1")) == 2, timeout=30)
        for (plural, name), (kind, spec) in experiments.items():
            create(kmock, kind, plural, name, spec)
        async with controller():
            await wait_for(lambda: all(phase(kmock, plural, name) == "Running" for plural, name in experiments),
                           timeout=120)
            victim.stdin.write("go\n")
            victim.stdin.flush()
            board = grafana.dashboard()
            queries = grafana.panel_queries(board) + [(f"variable ${name}", "-", expr)
                                                      for name, expr in grafana.variable_queries(board)]
            if not stress_here:
                queries = [q for q in queries if "kfault_stress" not in q[2] or " or " in q[2]]
            missing = await panels_without_data(prometheus, queries)
            assert not missing, "panels without data:\n" + "\n".join(f"  {t} [{r}]: {e}" for t, r, e in missing)
            # What the panels show is what was asked: about 30% of matched packets dropped, once
            # the window holds enough packets to tell (1,000: 0.30 +- 0.015).
            counted = grafana.substitute(f'sum(increase(kfault_packets_total{{experiment="{NS}/lossy", '
                                         'outcome="matched"}[$__rate_interval])) > 1000', board)
            await wait_for(lambda: prometheus.query(counted), timeout=60)
            shares = await asyncio.to_thread(prometheus.query, panel_query(board, "Share of matched packets faulted"))
            (dropped,) = [value for labels, value in shares
                          if labels == {"experiment": f"{NS}/lossy", "outcome": "dropped"}]
            assert 0.24 <= dropped <= 0.36, shares
            # The alerts, on the same series: web-2's agent never answered (AllInjected False);
            # nothing outlives its experiment and the agent is up.
            alerts = await asyncio.to_thread(prometheus.alerts)
            assert {"kind": "NetworkChaos", "experiment": f"{NS}/lossy"}.items() <= \
                alerts.get("KfaultExperimentNotAllInjected", [{}])[0].items(), alerts
            assert not {"KfaultFaultOutlivesExperiment", "KfaultAgentDown"} & set(alerts), alerts
            # lossy stays held by its finalizer (node-gone never confirms); every fault on this
            # node is taken back all the same.
            await kmock.delete(f"/apis/kfault.dev/v1alpha1/namespaces/{NS}/networkchaos/lossy")
            for plural, name in experiments:
                if name != "lossy":
                    await delete(kmock, plural, name)
            # Taken back: the agent holds nothing, as the dashboard sees it.
            held = panel_query(board, "Targets under fault now")
            await wait_for(lambda: not prometheus.query(held), timeout=30)
    finally:
        traffic.kill()
        traffic.wait()
        random_calls.kill()
        random_calls.wait()
        victim.kill()
        victim.wait()
