"""Bad input gets an error naming the field, the bad value and what is allowed; nothing runs."""
import subprocess
import sys

import pytest

from kfault_api import schema, spec


def doc(**spec_fields):
    return {"apiVersion": spec.API_VERSION, "kind": "NetworkChaos", "metadata": {"name": "x"},
            "spec": {"action": "loss", "loss": {"loss": "25"}, **spec_fields}}


def errors_of(document):
    with pytest.raises(spec.InvalidSpec) as caught:
        spec.parse_experiment(document)
    return [str(e) for e in caught.value.errors]


def io_doc(**spec_fields):
    return {"apiVersion": spec.API_VERSION, "kind": "IOChaos", "metadata": {"name": "x"},
            "spec": {"action": "fault", "errno": 5, "volumePath": "/data", **spec_fields}}


@pytest.mark.parametrize("document, path, words", [
    (io_doc(methods=["link"]), "spec.methods[0]",
     "one of create, fsync, getattr, mkdir, open, read, readdir, rename, rmdir, setattr, unlink, write "
     "(kfault has no hook yet for link"),
    (io_doc(errno=0), "spec.errno", "from 1 to 133"),
    (io_doc(errno=500), "spec.errno", "from 1 to 133"),
    (io_doc(percent=101), "spec.percent", "from 0 to 100"),
    (io_doc(percent=-1), "spec.percent", "from 0 to 100"),
    (io_doc(path="/data/[z-a]"), "spec.path", "low-high"),
    (io_doc(path="data/*"), "spec.path", "absolute"),
    (io_doc(volumePath="data"), "spec.volumePath", "absolute"),
    ({**io_doc(), "spec": {"action": "latency", "volumePath": "/data"}}, "spec.delay", "needs it"),
    (io_doc(action="latency", delay="1s"), "spec.errno", "remove it"),
    ({**io_doc(), "spec": {"action": "latency", "delay": "soon", "volumePath": "/d"}}, "spec.delay", "duration"),
    (io_doc(delay="10ms"), "spec.delay", "remove it"),
    (io_doc(action="stall"), "spec.action", "latency, fault, attrOverride, mistake"),
    ({**io_doc(), "spec": {"action": "attrOverride", "volumePath": "/d"}}, "spec.attr", "at least one of ino"),
    ({**io_doc(), "spec": {"action": "attrOverride", "volumePath": "/d", "attr": {"perm": 4096}}},
     "spec.attr.perm", "from 0 to 4095"),
    ({**io_doc(), "spec": {"action": "attrOverride", "volumePath": "/d", "attr": {"kind": "file"}}},
     "spec.attr.kind", "regularFile"),
    ({**io_doc(), "spec": {"action": "attrOverride", "volumePath": "/d", "attr": {"mtime": {"nsec": 1}}}},
     "spec.attr.mtime.sec", "required"),
    ({**io_doc(), "spec": {"action": "attrOverride", "volumePath": "/d", "attr": {"uid": -1}}},
     "spec.attr.uid", "from 0 to 4294967295"),
    ({**io_doc(), "spec": {"action": "attrOverride", "volumePath": "/d", "attr": {"size": 1}, "methods": ["read"]}},
     "spec.methods", "remove spec.methods"),
    (io_doc(attr={"size": 1}), "spec.attr", "no attr for action fault"),
    ({**io_doc(), "spec": {"action": "mistake", "volumePath": "/d"}}, "spec.mistake", "action mistake needs it"),
    ({**io_doc(), "spec": {"action": "mistake", "volumePath": "/d", "mistake": {"maxLength": 4}}},
     "spec.mistake.maxOccurrences", "required"),
    ({**io_doc(), "spec": {"action": "mistake", "volumePath": "/d",
                           "mistake": {"maxOccurrences": 17, "maxLength": 4}}},
     "spec.mistake.maxOccurrences", "1 to 16"),
    ({**io_doc(), "spec": {"action": "mistake", "volumePath": "/d",
                           "mistake": {"maxOccurrences": 1, "maxLength": 257}}}, "spec.mistake.maxLength", "1 to 256"),
    ({**io_doc(), "spec": {"action": "mistake", "volumePath": "/d",
                           "mistake": {"filling": "ones", "maxOccurrences": 1, "maxLength": 4}}},
     "spec.mistake.filling", "zero, random"),
    ({**io_doc(), "spec": {"action": "mistake", "volumePath": "/d", "methods": ["read", "fsync"],
                           "mistake": {"maxOccurrences": 1, "maxLength": 4}}}, "spec.methods", "fsync carry none"),
    (io_doc(mistake={"maxOccurrences": 1, "maxLength": 4}), "spec.mistake", "no mistake for action fault"),
    (doc(lossy=1), "spec.lossy", "known field"),
    (doc(loss={"loss": "130"}), "spec.loss.loss", "0 to 100"),
    (doc(loss={"loss": "-5"}), "spec.loss.loss", "percent"),
    (doc(loss={"loss": 30}), "spec.loss.loss", "string"),
    (doc(loss={"loss": "30", "correlation": "101"}), "spec.loss.correlation", "0 to 100"),
    (doc(duration="10 minutes"), "spec.duration", "duration"),
    (doc(duration="0"), "spec.duration", "above 0"),
    (doc(externalTargets=["10.0.0.300/8"]), "spec.externalTargets[0]", "CIDR"),
    (doc(externalTargets=["exa_mple.com"]), "spec.externalTargets[0]", "host name"),
    (doc(externalTargets=["db.example.com:http"]), "spec.externalTargets[0]", "1-65535"),
    (doc(externalTargets=["10.0.0.0/24:70000"]), "spec.externalTargets[0]", "1-65535"),
    (doc(externalTargets=["[2001:db8::1]443"]), "spec.externalTargets[0]", "[2001:db8::1]:443"),
    (doc(externalTargets=["2001:db8::1:443:x"]), "spec.externalTargets[0]", "IP address"),
    (doc(externalTargets=["db:9000"], protocol="tcp", peerPorts="80"), "spec.externalTargets[0]", "spec.peerPorts"),
    (doc(externalTargets=["db:9000"], protocol="icmp"), "spec.externalTargets[0]", "no port"),
    (doc(action="bandwidth", bandwidth={"rate": "1mbps", "peakrate": 1000, "minburst": 1500}),
     "spec.bandwidth.peakrate", "above spec.bandwidth.rate"),
    (doc(action="bandwidth", bandwidth={"rate": "1mbps", "peakrate": -1}), "spec.bandwidth.peakrate", "at least 0"),
    (doc(action="bandwidth", bandwidth={"rate": "1mbps", "minburst": 2**32}), "spec.bandwidth.minburst", "4294967295"),
    (doc(peerPorts="70000", protocol="tcp"), "spec.peerPorts", "1-65535"),
    (doc(peerPorts="90-80", protocol="tcp"), "spec.peerPorts", "low first"),
    (doc(peerPorts="80"), "spec.protocol", "tcp or udp"),
    (doc(peerPorts="http", protocol="tcp"), "spec.peerPorts", "port"),
    (doc(direction="sideways"), "spec.direction", "to, from, both"),
    (doc(action="explode"), "spec.action", "one of"),
    (doc(action="delay"), "spec.delay", "needs it"),
    (doc(action="delay", delay={"latency": "fast"}), "spec.delay.latency", "duration"),
    (doc(action="delay", delay={"latency": "9ms", "reorder": {"reorder": "150"}}), "spec.delay.reorder.reorder",
     "0 to 100"),
    (doc(action="delay", delay={"latency": "9ms", "reorder": {"reorder": "5", "gap": -1}}), "spec.delay.reorder.gap",
     "at least 0"),
    (doc(action="delay", delay={"latency": "9ms", "per": "request"}), "spec.delay.per", "packet, connection"),
    (doc(action="delay", delay={"latency": "9ms", "per": "connection", "reorder": {"reorder": "5"}}),
     "spec.delay.reorder", "nothing to overtake"),
    (doc(action="delay", protocol="icmp", delay={"latency": "9ms", "per": "connection"}), "spec.protocol",
     "ICMP has no connections"),
    (doc(action="bandwidth", bandwidth={"rate": "10 apples"}), "spec.bandwidth.rate", "rate"),
    (doc(action="bandwidth", bandwidth={"rate": "10furlongs"}), "spec.bandwidth.rate", "mbit"),
    ({**doc(), "apiVersion": "chaos-mesh.org/v1alpha1"}, "apiVersion", "kfault.dev/v1alpha1"),
    ({**doc(), "kind": "TimeChaos"}, "kind", "NetworkChaos"),
    ({**doc(), "metadata": {}}, "metadata.name", "name"),
])
def test_each_bad_field_is_named_with_its_fix(document, path, words):
    messages = errors_of(document)
    assert any(m.startswith(path + ":") and words in m for m in messages), messages


def test_a_delay_per_connection_is_read_and_noted_where_it_surprises():
    def delay(**fields):
        return spec.parse_experiment({**doc(), "spec": {"action": "delay", **fields}})

    experiment = delay(direction="both", protocol="tcp", delay={"latency": "200ms", "per": "connection"})
    assert experiment.delay.per == "connection" and experiment.delay.latency_ns == 200_000_000
    assert any("twice spec.delay.latency" in note for note in experiment.notes), experiment.notes
    assert delay(delay={"latency": "1ms"}).delay.per == "packet"


def test_every_error_is_reported_at_once():
    messages = errors_of(doc(loss={"loss": "130"}, duration="soon", direction="up"))
    assert len(messages) >= 2


def partition_doc(**spec_fields):
    return {**doc(), "spec": {"action": "partition", **spec_fields}}


def test_partition_behavior_is_drop_unless_reject_is_asked():
    assert spec.parse_experiment(partition_doc()).partition_behavior == "drop"
    assert spec.parse_experiment(partition_doc(partitionBehavior="drop")).partition_behavior == "drop"
    assert spec.parse_experiment(partition_doc(partitionBehavior="reject")).partition_behavior == "reject"


@pytest.mark.parametrize("document, words", [
    (partition_doc(partitionBehavior="refuse"), "'refuse' is not valid; use one of drop, reject"),
    (partition_doc(partitionBehavior=True), "a string"),
    (doc(partitionBehavior="reject"), "'reject' is not valid; use no spec.partitionBehavior with action 'loss' "
                                      "(it is for action partition): remove it"),
    (doc(partitionBehavior="drop"), "'drop' is not valid; use no spec.partitionBehavior with action 'loss'"),
])
def test_partition_behavior_errors_name_the_field_the_value_and_the_fix(document, words):
    errors = errors_of(document)
    assert len(errors) == 1 and errors[0].startswith("spec.partitionBehavior: ") and words in errors[0], errors


def test_partition_behavior_is_checked_inside_a_schedule_too():
    schedule = {"apiVersion": spec.API_VERSION, "kind": "Schedule", "metadata": {"name": "s"},
                "spec": {"schedule": "@every 2m", "type": "NetworkChaos",
                         "networkChaos": {"action": "delay", "delay": {"latency": "1ms"},
                                          "partitionBehavior": "reject"}}}
    with pytest.raises(spec.InvalidSpec) as caught:
        spec.parse_experiment(schedule, for_node=False)
    assert [e.path for e in caught.value.errors] == ["spec.networkChaos.partitionBehavior"]


def test_remote_cluster_is_a_resources_field_that_no_node_runs():
    """Chaos Mesh's multi-cluster field validates on the resource (the controller reports it as
    another cluster's); a node, the agent or `kfault run`, refuses it rather than inject here."""
    doc = {"apiVersion": spec.API_VERSION, "kind": "PodChaos", "metadata": {"name": "far"},
           "spec": {"action": "pod-failure", "mode": "one", "duration": "30s", "remoteCluster": "cluster-east"}}
    spec.parse_experiment(doc, for_node=False)
    with pytest.raises(spec.InvalidSpec) as caught:
        spec.parse_experiment(doc)
    assert [e.path for e in caught.value.errors] == ["spec.remoteCluster"]
    assert "run it there without spec.remoteCluster" in str(caught.value)


def test_chaos_mesh_documents_are_accepted_after_changing_api_version():
    chaos_mesh = {
        "apiVersion": spec.API_VERSION, "kind": "NetworkChaos",
        "metadata": {"name": "network-delay", "namespace": "chaos-testing"},
        "spec": {"action": "netem", "mode": "one", "selector": {"namespaces": ["default"],
                 "labelSelectors": {"app": "web-show"}},
                 "delay": {"latency": "10ms", "correlation": "100", "jitter": "0ms"},
                 "loss": {"loss": "25", "correlation": "25"}, "duration": "30s"}}
    experiment = spec.parse_experiment(chaos_mesh)
    assert experiment.delay.latency_ns == 10_000_000 and experiment.loss.percent == 25


@pytest.mark.parametrize("text, network, host, port", [
    ("8.8.8.8", "8.8.8.8/32", None, None),
    ("8.8.0.0/16", "8.8.0.0/16", None, None),
    ("2001:db8::1", "2001:db8::1/128", None, None),
    ("www.Example.com.", None, "www.example.com", None),
    ("localhost", None, "localhost", None),
    ("db.shop.svc.cluster.local:5432", None, "db.shop.svc.cluster.local", 5432),
    ("10.0.0.7:53", "10.0.0.7/32", None, 53),
    ("10.0.0.0/24:53", "10.0.0.0/24", None, 53),
    ("[2001:db8::1]:443", "2001:db8::1/128", None, 443),
    ("[2001:db8::/32]:443", "2001:db8::/32", None, 443),
])
def test_external_targets_take_addresses_cidrs_names_and_ports(text, network, host, port):
    (peer,) = spec.parse_experiment(doc(externalTargets=[text])).peers
    assert (str(peer.network) if peer.network else None, peer.host, peer.port) == (network, host, port)


def test_peakrate_and_minburst_are_accepted_and_one_alone_is_noted():
    def shaped(**bandwidth):
        return spec.parse_experiment({**doc(), "spec": {"action": "bandwidth", "bandwidth": {"rate": "1mbps",
                                                                                           **bandwidth}}})
    both = shaped(peakrate=2000000, minburst=3000)
    assert both.bandwidth.burst_bytes == 3000 and both.notes == ()
    alone = shaped(peakrate=2000000)
    assert alone.notes == ("spec.bandwidth.peakrate is ignored without spec.bandwidth.minburst (as Chaos Mesh does)",)


def test_validate_cli_exits_1_and_names_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: kfault.dev/v1alpha1\nkind: NetworkChaos\nmetadata: {name: x}\n"
                   "spec: {action: loss, loss: {loss: '130'}}\n")
    out = subprocess.run([sys.executable, "-m", "kfault_agent.cli", "validate", "-f", str(bad)],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert "spec.loss.loss: '130' is not valid; use a percent from 0 to 100" in out.stderr


def test_run_with_bad_input_injects_nothing(tmp_path):
    import os

    from kfault_lab.hosts import Lab
    if os.geteuid() != 0:
        pytest.skip("needs root to make a test host")
    lab = Lab()
    try:
        lab.link("a", "b", "10.250.1")
        before = lab.tc_state()
        bad = tmp_path / "bad.yaml"
        bad.write_text("apiVersion: kfault.dev/v1alpha1\nkind: NetworkChaos\nmetadata: {name: x}\n"
                       "spec: {action: partition, externalTargets: ['10.0.0.0/33']}\n")
        out = subprocess.run([sys.executable, "-m", "kfault_agent.cli", "run", "-f", str(bad),
                              "--target", f"netns:{lab.ns('a')}"], capture_output=True, text=True)
        assert out.returncode == 1 and "spec.externalTargets[0]" in out.stderr
        out = subprocess.run([sys.executable, "-m", "kfault_agent.cli", "run", "-f", str(bad).replace("bad", "none"),
                              "--target", f"netns:{lab.ns('a')}"], capture_output=True, text=True)
        assert out.returncode == 1 and "readable file" in out.stderr
        assert lab.tc_state() == before
    finally:
        lab.close()


def test_unknown_target_is_refused_with_the_forms_allowed(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("apiVersion: kfault.dev/v1alpha1\nkind: NetworkChaos\nmetadata: {name: x}\n"
                    "spec: {action: partition}\n")
    for target, words in (("pod:web", "netns:NAME"), ("netns:kfault-no-such-ns", "No such file")):
        out = subprocess.run([sys.executable, "-m", "kfault_agent.cli", "run", "-f", str(good),
                              "--target", target], capture_output=True, text=True)
        assert out.returncode == 2 and words in out.stderr, out.stderr


def test_target_pods_and_windows_are_for_the_controller_not_a_node(tmp_path):
    doc = tmp_path / "cut.yaml"
    doc.write_text("apiVersion: kfault.dev/v1alpha1\nkind: NetworkChaos\nmetadata: {name: cut}\n"
                   "spec: {action: partition, mode: all, selector: {labelSelectors: {app: web}},\n"
                   "       target: {mode: all, selector: {labelSelectors: {app: db}}},\n"
                   "       scheduler: {cron: '@every 2m'}, duration: 30s}\n")
    out = subprocess.run([sys.executable, "-m", "kfault_agent.cli", "validate", "-f", str(doc)],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "is valid" in out.stdout, out.stderr
    out = subprocess.run([sys.executable, "-m", "kfault_agent.cli", "run", "-f", str(doc),
                          "--target", "netns:kfault-no-such-ns"], capture_output=True, text=True)
    assert out.returncode == 1 and "spec.target" in out.stderr and "spec.externalTargets" in out.stderr
    assert "spec.scheduler" in out.stderr and "one window" in out.stderr


def schedule_doc(**spec_fields):
    return {"apiVersion": spec.API_VERSION, "kind": "Schedule", "metadata": {"name": "x"},
            "spec": {"schedule": "@every 5m", "type": "NetworkChaos",
                     "networkChaos": {"action": "loss", "loss": {"loss": "25"}}, **spec_fields}}


def schedule_errors(document):
    with pytest.raises(spec.InvalidSpec) as caught:
        spec.parse_experiment(document, for_node=False)
    return [str(e) for e in caught.value.errors]


@pytest.mark.parametrize("document, path, words", [
    (schedule_doc(type="IOChaos"), "spec.networkChaos", "set type: NetworkChaos"),
    (schedule_doc(type="IOChaos"), "spec.ioChaos", "type IOChaos needs spec.ioChaos"),
    (schedule_doc(type="TimeChaos"), "spec.type", "one of NetworkChaos, IOChaos, PodChaos"),
    (schedule_doc(podChaos={"action": "pod-kill"}), "spec.podChaos", "it is for type PodChaos"),
    (schedule_doc(concurrencyPolicy="Replace"), "spec.concurrencyPolicy", "one of Forbid, Allow"),
    (schedule_doc(historyLimit=0), "spec.historyLimit", "at least 1"),
    (schedule_doc(startingDeadlineSeconds=-1), "spec.startingDeadlineSeconds", "at least 0"),
    (schedule_doc(networkChaos={"action": "loss", "loss": {"loss": "130"}}), "spec.networkChaos.loss.loss",
     "0 to 100"),
    (schedule_doc(networkChaos={"action": "delay"}), "spec.networkChaos.delay", "spec.networkChaos.delay block"),
    (schedule_doc(networkChaos={"action": "loss", "loss": {"loss": "5"}, "scheduler": {"cron": "@daily"}}),
     "spec.networkChaos.scheduler", "known field"),
    ({**schedule_doc(), "spec": {"type": "NetworkChaos", "networkChaos": {"action": "partition"}}},
     "spec.schedule", "required"),
    ({**schedule_doc(), "metadata": {"name": "x" * 64}}, "metadata.name", "at most 63"),
])
def test_each_bad_schedule_field_is_named_with_its_fix(document, path, words):
    messages = schedule_errors(document)
    assert any(m.startswith(path + ":") and words in m for m in messages), messages


def test_a_schedule_reads_with_chaos_mesh_defaults():
    schedule = spec.parse_experiment(schedule_doc(), for_node=False)
    assert (schedule.type, schedule.concurrency_policy, schedule.history_limit, schedule.starting_deadline_s) == \
        ("NetworkChaos", "Forbid", 1, None)
    assert schedule.template.loss.percent == 25 and schedule.key == "default/x"


def test_a_schedule_validates_but_is_for_the_controller_not_a_node(tmp_path):
    doc = tmp_path / "schedule.yaml"
    doc.write_text("apiVersion: kfault.dev/v1alpha1\nkind: Schedule\nmetadata: {name: cut}\n"
                   "spec: {schedule: '@every 2m', type: NetworkChaos, networkChaos: {action: partition}}\n")
    out = subprocess.run([sys.executable, "-m", "kfault_agent.cli", "validate", "-f", str(doc)],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "default/cut (partition) is valid" in out.stdout, out.stderr
    out = subprocess.run([sys.executable, "-m", "kfault_agent.cli", "run", "-f", str(doc),
                          "--target", "netns:kfault-no-such-ns"], capture_output=True, text=True)
    assert out.returncode == 1 and "kind: 'Schedule'" in out.stderr and "kubectl apply the Schedule" in out.stderr


def test_attr_override_reads_chaos_mesh_fields_and_acts_on_the_stat_family():
    experiment = spec.parse_experiment({**io_doc(), "spec": {
        "action": "attrOverride", "volumePath": "/d", "attr": {"perm": 72, "kind": "regularFile", "size": 0,
                                                                 "mtime": {"sec": 1, "nsec": 2}, "atime": {"sec": 3}}}})
    assert experiment.methods == ("getattr",)
    assert (experiment.attr.perm, experiment.attr.kind, experiment.attr.size) == (72, "regularFile", 0)
    assert (experiment.attr.mtime, experiment.attr.atime, experiment.attr.ino) == ((1, 2), (3, 0), None)


def test_mistake_defaults_to_zero_filling_on_reads_and_writes():
    experiment = spec.parse_experiment({**io_doc(), "spec": {
        "action": "mistake", "volumePath": "/d", "mistake": {"maxOccurrences": 2, "maxLength": 10}}})
    assert experiment.methods == ("read", "write")
    assert experiment.mistake == spec.Mistake("zero", 2, 10)


def test_fault_without_methods_acts_on_every_method_and_says_fsync_fails_after_the_call():
    experiment = spec.parse_experiment(io_doc())
    assert experiment.methods == tuple(schema.IO_METHODS)
    assert any("spec.methods" in note and "fsync" in note and "after it ran" in note for note in experiment.notes)


def test_chaos_mesh_etcd_fault_shape_fails_write_and_fsync():
    """Chaos Mesh's etcd IOChaos with methods [write, fsync]: accepted, and the note says how fsync fails."""
    experiment = spec.parse_experiment(io_doc(methods=["write", "fsync"], percent=50,
                                              volumePath="/var/run/etcd", path="/var/run/etcd/**/*"))
    assert experiment.methods == ("write", "fsync") and experiment.errno == 5
    assert [note for note in experiment.notes if "fsync" in note]
    assert not spec.parse_experiment(io_doc(methods=["write"])).notes


def syscall_doc(**spec_fields):
    return {"apiVersion": spec.API_VERSION, "kind": "SyscallChaos", "metadata": {"name": "x"},
            "spec": {"action": "fault", "errno": 111, "syscalls": ["connect"], **spec_fields}}


@pytest.mark.parametrize("document, path, words", [
    (syscall_doc(syscalls=["conect"]), "spec.syscalls[0]", "a system call name of x86_64"),
    (syscall_doc(syscalls=["brk"]), "spec.syscalls[0]", "brk: no LSM hook runs before it takes effect"),
    (syscall_doc(syscalls=["getpid"]), "spec.syscalls[0]", "getpid: no LSM hook: it can't fail"),
    (syscall_doc(syscalls=["sendmmsg"]), "spec.syscalls[0]", "once per message"),
    (syscall_doc(syscalls=["read"]), "spec.syscalls[0]", "use an IOChaos"),
    (syscall_doc(syscalls=["futex"]), "spec.syscalls[0]", "no LSM hook runs before it takes effect"),
    (syscall_doc(syscalls=[]), "spec.syscalls", "at least one system call name"),
    ({**syscall_doc(), "spec": {"action": "fault", "syscalls": ["connect"]}}, "spec.errno", "needs it"),
    ({**syscall_doc(), "spec": {"action": "latency", "syscalls": ["connect"]}}, "spec.delay", "needs it"),
    ({**syscall_doc(), "spec": {"action": "latency", "delay": "1s", "syscalls": ["clock_gettime"]}},
     "spec.syscalls[0]", "answered by the vDSO"),
    ({**syscall_doc(), "spec": {"action": "latency", "delay": "1s", "syscalls": ["exit_group"]}},
     "spec.syscalls[0]", "never returns"),
    (syscall_doc(delay="1s"), "spec.delay", "remove it"),
    (syscall_doc(errno=0), "spec.errno", "from 1 to 133"),
])
def test_syscall_chaos_refusals_name_the_field_and_what_to_use(document, path, words):
    errors = errors_of(document)
    assert any(e.startswith(f"{path}:") and words in e for e in errors), errors


def test_syscall_chaos_fault_and_latency_parse():
    fault = spec.parse_experiment(syscall_doc(syscalls=["connect", "fork", "mmap", "connect"], percent=30))
    assert (fault.action, fault.syscalls, fault.errno, fault.percent) == ("fault", ("connect", "fork", "mmap"), 111, 30)
    latency = spec.parse_experiment({**syscall_doc(), "spec": {"action": "latency", "delay": "100ms",
                                                               "syscalls": ["getrandom", "futex"]}})
    assert (latency.syscalls, latency.delay_ns) == (("getrandom", "futex"), 100_000_000)


# ---- DNSChaos ------------------------------------------------------------------------------

def dns_doc(**spec_fields):
    return {"apiVersion": spec.API_VERSION, "kind": "DNSChaos", "metadata": {"name": "x"},
            "spec": {"action": "error", **spec_fields}}


def test_dns_chaos_defaults_to_servfail_and_every_name():
    experiment = spec.parse_experiment(dns_doc())
    assert (experiment.patterns, experiment.error_response) == ((), "SERVFAIL")
    assert spec.parse_experiment(dns_doc(errorResponse="drop", patterns=["*.example.test"])).error_response == "drop"


@pytest.mark.parametrize("document, path, words", [
    (dns_doc(patterns=["bad name!"]), "spec.patterns[0]", "letters, digits"),
    (dns_doc(patterns=["a" * 254]), "spec.patterns[0]", "253"),
    (dns_doc(patterns=[""]), "spec.patterns[0]", "DNS name"),
    (dns_doc(action="random", errorResponse="NXDOMAIN"), "spec.errorResponse", "only with action error"),
    (dns_doc(errorResponse="NOTIMP"), "spec.errorResponse", "one of"),
    (dns_doc(action="delay"), "spec.action", "one of"),
])
def test_dns_chaos_bad_fields_are_named_with_their_fix(document, path, words):
    messages = errors_of(document)
    assert any(m.startswith(path + ":") and words in m for m in messages), messages


# ---- HTTPChaos -----------------------------------------------------------------------------

def http_doc(**spec_fields):
    return {"apiVersion": spec.API_VERSION, "kind": "HTTPChaos", "metadata": {"name": "x"},
            "spec": {"target": "Request", "port": 80, **spec_fields}}


# Chaos Mesh's examples/nginx/http-patch-response.yaml, with only its apiVersion changed.
CHAOS_MESH_PATCH_RESPONSE = """
kind: HTTPChaos
apiVersion: kfault.dev/v1alpha1
metadata:
  name: nginx-http-patch
spec:
  selector:
    namespaces:
      - default
    labelSelectors:
      app: nginx
  mode: all
  target: Response
  patch:
    body:
      type: JSON
      value: '{"status":"Failed","reason":"hacked by Chaos Mesh"}'
  port: 80
  path: '*'
"""


def test_http_chaos_actions_and_selectors():
    experiment = spec.parse_experiment(http_doc(method="GET", path="/api/*", delay="300ms"))
    assert (experiment.action, experiment.delay_ns, experiment.method, experiment.path) == \
        ("delay", 300_000_000, "GET", "/api/*")
    experiment = spec.parse_experiment(http_doc(target="Response", code=200, replace={"code": 503}, delay="1s"))
    assert (experiment.action, experiment.replace_code, experiment.code) == ("delay+replace", 503, 200)
    assert spec.parse_experiment(http_doc(abort=True)).action == "abort"


def test_chaos_mesh_patch_response_is_refused_naming_patch_and_why():
    import yaml

    messages = errors_of(yaml.safe_load(CHAOS_MESH_PATCH_RESPONSE))
    assert any(m.startswith("spec.patch:") and "length" in m and "proxy" in m for m in messages), messages


@pytest.mark.parametrize("document, path, words", [
    (http_doc(replace={"body": "eyJ9"}), "spec.replace.body", "length"),
    (http_doc(replace={"headers": {"a": "b"}}), "spec.replace.headers", "length"),
    (http_doc(replace={"path": "/v2"}), "spec.replace.path", "length"),
    (http_doc(abort=True, tls={"secretName": "s", "secretNamespace": "n", "certName": "c", "keyName": "k"}),
     "spec.tls", "decrypts nothing"),
    (http_doc(abort=True, request_headers={"a": "b"}), "spec.request_headers", "headers"),
    (http_doc(abort=True, code=200), "spec.code", "only with target Response"),
    (http_doc(replace={"code": 503}), "spec.replace.code", "only with target Response"),
    (http_doc(abort=True, delay="1s"), "spec.abort", "alone"),
    (http_doc(), "spec", "an action"),
    (http_doc(abort=True, method="get"), "spec.method", "capitals"),
    (http_doc(abort=True, path="/a b"), "spec.path", "without spaces"),
    (http_doc(delay="0s"), "spec.delay", "above 0"),
])
def test_http_chaos_bad_fields_are_named_with_their_fix(document, path, words):
    messages = errors_of(document)
    assert any(m.startswith(path + ":") and words in m for m in messages), messages


# ---- HTTPChaos on HTTPS: serverName (kfault's) ------------------------------------------

def test_https_by_server_name_aborts_or_delays():
    experiment = spec.parse_experiment(http_doc(port=443, serverName="*.Example.test", abort=True))
    assert (experiment.action, experiment.server_name, experiment.port) == ("abort", "*.Example.test", 443)
    experiment = spec.parse_experiment(http_doc(port=443, serverName="api.example.test", delay="300ms"))
    assert (experiment.action, experiment.delay_ns, experiment.path) == ("delay", 300_000_000, None)
    assert spec.parse_experiment(http_doc(abort=True)).server_name is None


@pytest.mark.parametrize("document, path, words", [
    (http_doc(serverName="", abort=True), "spec.serverName", "DNS name"),
    (http_doc(serverName="a b.test", abort=True), "spec.serverName", "wildcards"),
    (http_doc(serverName="x.test", path="/api/*", abort=True), "spec.path", "TLS encrypts"),
    (http_doc(serverName="x.test", method="GET", delay="1s"), "spec.method", "TLS encrypts"),
    (http_doc(serverName="x.test", target="Response", abort=True), "spec.target", "Request with serverName"),
    (http_doc(serverName="x.test", target="Response", code=200, abort=True), "spec.code", "TLS encrypts"),
    (http_doc(serverName="x.test", target="Response", replace={"code": 503}), "spec.replace.code", "TLS encrypts"),
    (http_doc(serverName="x.test", abort=True, tls={"secretName": "s"}), "spec.tls", "serverName"),
])
def test_https_server_name_refuses_what_tls_hides_naming_the_field(document, path, words):
    messages = errors_of(document)
    assert any(m.startswith(path + ":") and words in m for m in messages), messages
