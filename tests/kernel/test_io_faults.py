"""File I/O faults on real processes in cgroups the tests make, measured by the victims."""
import base64
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid

import pytest

from kfault_agent import policy
from kfault_agent.engines import iofault
from kfault_agent.kernel import btf, compile, holder, loader, topology
from kfault_api import layout, spec
from kfault_lab import bpf_links
from kfault_lab import headerless
from tests.victims import CommandVictim, held, remove_cgroup, tracer, wait_until

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
# A call of a plain syscall is always reached: what only asynchronous I/O may come out as.
NONE_UNREACHED = {"unreached-io-thread": 0, "unreached-async": 0, "unreached-fixed-file": 0}


def io_chaos(name="io", **fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "IOChaos",
                                  "metadata": {"name": name}, "spec": {"volumePath": "/", **fields}})


def process_state(pid):
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            return " ".join(line.split(":", 1)[1].strip() for line in handle
                            if line.startswith(("State:", "TracerPid:")))
    except OSError:
        return "gone"


def read_line(proc, what, timeout=60):
    """proc's next line of output; a process that stays stopped fails the test, never hangs it."""
    line = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)    # on failure it ends when the test's cleanup kills the process
    if reader.is_alive():
        pytest.fail(f"pid {proc.pid} gave no {what} within {timeout}s (state, tracer: {process_state(proc.pid)})")
    return line[0]


class Victims:
    """cgroups under the v2 mount, each with victim processes (kfault_lab.io_probe)."""

    def __init__(self):
        self.root = topology.cgroup2_mount()
        self.prefix = "kft-io-" + uuid.uuid4().hex[:6]
        self.cgroups, self.procs = [], []

    def cgroup(self, name):
        path = os.path.join(self.root, f"{self.prefix}-{name}")
        if path not in self.cgroups:
            os.mkdir(path)
            self.cgroups.append(path)
        return path

    def start(self, cgroup, calls, options=()):
        proc = subprocess.Popen([sys.executable, "-m", "kfault_lab.io_probe", *options, cgroup, json.dumps(calls)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        proc.pid_in_cgroup = int(read_line(proc, "its ready line").split()[1])
        return proc

    @staticmethod
    def go(proc):
        proc.stdin.write("go\n")
        proc.stdin.flush()

    @staticmethod
    def result(proc, timeout=60):
        out = read_line(proc, "its result", timeout)
        proc.wait(timeout=timeout)
        return json.loads(out)

    def close(self):
        for proc in self.procs:
            proc.kill()
            proc.wait()
        for path in reversed(self.cgroups):
            remove_cgroup(path)


@pytest.fixture
def victims():
    v = Victims()
    yield v
    v.close()


@pytest.fixture
def files(tmp_path):
    (tmp_path / "data.db").write_text("kfault")
    (tmp_path / "notes.txt").write_text("kfault")
    return tmp_path


def wait_held(engine, pid, timeout=5.0):
    """The holder seizes new processes within its rescan interval; wait until it has."""
    deadline = time.monotonic() + timeout
    traced = engine.datapath.traced
    while time.monotonic() < deadline:
        if any(key.value == pid for key, _ in traced.items()):
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} was not seized by the holder within {timeout}s")


@pytest.mark.stock_kernel("the file hooks decide reads")
@pytest.mark.kernel("io-tracepoints", "ptrace")
def test_latency_holds_only_the_reading_thread_of_a_matching_path(victims, files, io_engine):
    target = victims.cgroup("target")
    victim = victims.start(target, [["read", str(files / "data.db"), 5], ["read", str(files / "notes.txt"), 5]])
    bystander = victims.start(victims.cgroup("other"), [["read", str(files / "data.db"), 5]])
    io_engine.apply(io_chaos(action="latency", delay="100ms", path=f"{files}/*.db", methods=["read"]),
                    topology.resolve_cgroup_target(f"cgroup:{target}"))
    wait_held(io_engine, victim.pid_in_cgroup)
    victims.go(victim)
    victims.go(bystander)
    matching, other = victims.result(victim)["calls"], victims.result(bystander)["calls"]
    took = matching[0]["ms"]
    assert all(ms >= 100 for ms in took), took
    assert all(ms < 50 for ms in matching[1]["ms"]), "a non-matching path was slowed"
    assert all(ms < 50 for ms in other[0]["ms"]), "another cgroup was slowed"
    calls, delay_ns = io_engine.counters(io_engine.active()[0])
    assert calls["read"]["delayed"] == 5 and delay_ns == 5 * 100_000_000


@pytest.mark.kernel("io-tracepoints", "ptrace")
def test_a_held_thread_does_not_stop_the_others(victims, files, io_engine):
    target = victims.cgroup("target")
    victim = victims.start(target, [["read", str(files / "data.db"), 3]])
    io_engine.apply(io_chaos(action="latency", delay="300ms", path=str(files / "data.db"), methods=["read"]),
                    topology.resolve_cgroup_target(f"cgroup:{target}"))
    wait_held(io_engine, victim.pid_in_cgroup)
    victims.go(victim)
    result = victims.result(victim)
    assert all(ms >= 300 for ms in result["calls"][0]["ms"])
    # The ticker thread sleeps 1 ms per tick: ~900 ms of holds leave it hundreds of ticks.
    assert result["ticks"] >= 300, result["ticks"]


@pytest.mark.kernel("io-tracepoints", "ptrace")
def test_latency_percent_50_delays_about_half_the_calls(victims, files, io_engine):
    target = victims.cgroup("target")
    victim = victims.start(target, [["read", str(files / "data.db"), 200]])
    io_engine.apply(io_chaos(action="latency", delay="10ms", percent=50, path=f"{files}/**", methods=["read"]),
                    topology.resolve_cgroup_target(f"cgroup:{target}"))
    wait_held(io_engine, victim.pid_in_cgroup)
    victims.go(victim)
    took = victims.result(victim)["calls"][0]["ms"]
    delayed = sum(1 for ms in took if ms >= 10) / len(took)
    assert 0.35 <= delayed <= 0.65, delayed


# The killed-agent tests hold a read this long (of its 20 s) before they kill the agent.
HELD_S = 0.5


@pytest.mark.stock_kernel("a read held by the file hooks when the agent dies")
@pytest.mark.kernel("io-tracepoints", "ptrace")
def test_killed_agent_mid_delay_leaves_the_victim_running(victims, files, tmp_path):
    target = victims.cgroup("target")
    doc = tmp_path / "io.yaml"
    doc.write_text(f"apiVersion: {spec.API_VERSION}\nkind: IOChaos\nmetadata: {{name: slow-reads}}\n"
                   f"spec: {{action: latency, delay: 20s, volumePath: {files}, path: '{files}/*.db', "
                   "methods: [read]}\n")
    victim = victims.start(target, [["read", str(files / "data.db"), 3]])
    runner = subprocess.Popen([sys.executable, "-m", "kfault_agent.cli", "run", "-f", str(doc),
                               "--target", f"cgroup:{target}", "--lease", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        # kfault run compiles its programs first: minutes under the VM tier's emulation
        assert "injecting" in read_line(runner, "injecting line", timeout=300)
        # The runner arms only once its holder has seized the cgroup's processes.
        assert tracer(victim.pid_in_cgroup), "the holder had not seized the victim when armed"
        victims.go(victim)
        wait_until(lambda: held(victim.pid_in_cgroup), "the victim's first read held")
        time.sleep(HELD_S)               # a hold, not a wait: the read must stay held until the agent dies
        assert held(victim.pid_in_cgroup), "the read was let go before the agent died"
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        result = victims.result(victim, timeout=15)
    finally:
        runner.kill()
    took = result["calls"][0]["ms"]
    assert victim.returncode == 0, "the victim was killed"
    assert took[0] >= HELD_S * 1000, f"the first read was not held: {took}"
    assert took[0] < 10_000, "the held read was not released when the agent died"
    assert all(e == 0 for e in result["calls"][0]["errno"])


@pytest.mark.kernel("io-tracepoints", "io-errno")
@pytest.mark.parametrize("call", ["open", "read", "write"])
def test_errno_5_fails_the_call_before_it_takes_effect(victims, files, io_engine, call):
    target = victims.cgroup("target")
    path = files / ("new.db" if call == "open" else "data.db")
    before = (files / "data.db").read_text()
    victim = victims.start(target, [[call, str(path), 3], [call, str(files / "notes.txt"), 3]])
    bystander = victims.start(victims.cgroup("other"), [["read", str(files / "data.db"), 3]])
    io_engine.apply(io_chaos(action="fault", errno=5, path=f"{files}/*.db", methods=[call]),
                    topology.resolve_cgroup_target(f"cgroup:{target}"))
    victims.go(victim)
    victims.go(bystander)
    matching, other_path = victims.result(victim)["calls"]
    assert matching["errno"] == [5, 5, 5], matching
    assert set(other_path["errno"]) == {0}, "a non-matching path failed"
    assert set(victims.result(bystander)["calls"][0]["errno"]) == {0}, "another cgroup failed"
    if call == "open":
        assert not path.exists(), "a failed open created the file"
    if call == "write":
        assert (files / "data.db").read_text() == before, "a failed write wrote"


@pytest.mark.kernel("io-tracepoints", "io-errno")
def test_errno_percent_50_fails_about_half(victims, files, io_engine):
    target = victims.cgroup("target")
    victim = victims.start(target, [["read", str(files / "data.db"), 200]])
    io_engine.apply(io_chaos(action="fault", errno=28, percent=50, path=f"{files}/*.db", methods=["read"]),
                    topology.resolve_cgroup_target(f"cgroup:{target}"))
    victims.go(victim)
    errors = victims.result(victim)["calls"][0]["errno"]
    assert set(errors) <= {0, 28}
    assert 0.35 <= errors.count(28) / len(errors) <= 0.65


@pytest.mark.parametrize("action", [pytest.param("fault", marks=pytest.mark.kernel("io-tracepoints", "io-errno")),
                                    pytest.param("latency", marks=pytest.mark.kernel("io-tracepoints", "ptrace"))])
def test_experiments_on_several_pods_of_a_node_each_reach_only_their_own(victims, files, io_engine, action):
    """A node holds a rule per experiment and pod, each in a slot of its own; the BPF side stops
    looking at the highest armed slot, so a pod whose rule sits above a revoked one, or in a
    reused slot, must still be reached, and no other pod."""
    pods = {name: topology.resolve_cgroup_target(f"cgroup:{victims.cgroup(name)}") for name in "abc"}
    errnos, delays = {"a": 5, "b": 28, "c": 13}, {"a": 50, "b": 100, "c": 150}
    fields = {name: {"errno": errnos[name]} if action == "fault" else {"delay": f"{delays[name]}ms"} for name in pods}
    rules = {name: io_chaos(name=f"io-{name}", action=action, path=f"{files}/*.db", methods=["read"], **fields[name])
             for name in pods}

    def reached(armed):
        """The pods whose reads were failed with their own errno, or held their own delay;
        asserting that the others' reads were left alone."""
        procs = {name: victims.start(pod.path, [["read", str(files / "data.db"), 3]]) for name, pod in pods.items()}
        procs["bystander"] = victims.start(victims.cgroup("bystander"), [["read", str(files / "data.db"), 3]])
        if action == "latency":
            for name, proc in procs.items():
                if name in armed:
                    wait_held(io_engine, proc.pid_in_cgroup)
        for proc in procs.values():
            victims.go(proc)
        found = set()
        for name, proc in procs.items():
            call = victims.result(proc)["calls"][0]
            if action == "fault" and set(call["errno"]) == {errnos.get(name)}:
                found.add(name)
            elif action == "latency" and name in delays and min(call["ms"]) >= delays[name]:
                found.add(name)
            else:
                assert set(call["errno"]) == {0} and max(call["ms"]) < 40, (name, call)
        return found

    for name in "abc":
        io_engine.apply(rules[name], pods[name])
    assert reached({"a", "b", "c"}) == {"a", "b", "c"}
    io_engine.revoke(rules["a"].key, pods["a"].name)
    assert reached({"b", "c"}) == {"b", "c"}
    io_engine.apply(rules["a"], pods["a"])     # into the slot it left
    assert reached({"a", "b", "c"}) == {"a", "b", "c"}


def test_fault_is_refused_where_no_errno_hook_exists(victims, files, io_datapath, capabilities):
    from kfault_agent.errors import KernelUnsupported
    if capabilities["io-errno"].available:
        pytest.skip("this kernel can fail calls: see the errno tests")
    engine = iofault.IOFaultEngine(io_datapath, capabilities)
    target = topology.resolve_cgroup_target(f"cgroup:{victims.cgroup('target')}")
    with pytest.raises(KernelUnsupported, match="BPF LSM"):
        engine.apply(io_chaos(action="fault", errno=5, path=f"{files}/*"), target)
    assert not engine.active() and io_datapath.armed[io_datapath.armed.Key(0)].value == 0


@pytest.mark.kernel("file-hooks", "ptrace")
def test_file_hooks_decide_reads_and_writes_with_no_syscall_tracepoint(victims, files, io_engine):
    """Where the kernel has trampolines, latency and fault on read and write are decided at
    security_file_permission by the file's own path: the syscall tracepoints, which slow every
    syscall on the node, stay detached until a rule needs them, and detach again after it. The
    latency rule, armed first, is decided by the fentry program, then by the fmod_ret one once
    the fault rule needs it: each read delayed once."""
    target = victims.cgroup("target")
    cgroup = topology.resolve_cgroup_target(f"cgroup:{target}")
    victim = victims.start(target, [["read", str(files / "data.db"), 20], ["write", str(files / "notes.txt"), 20]],
                           ["--open-early"])
    slow = io_engine.apply(io_chaos(name="slow", action="latency", delay="20ms", path=f"{files}/*.db",
                                    methods=["read"]), cgroup)
    io_engine.apply(io_chaos(name="rw", action="fault", errno=5, path=f"{files}/*", methods=["read", "write"]),
                    cgroup)
    assert not io_engine.datapath.attached, "the syscall tracepoints were attached for reads and writes"
    victims.go(victim)
    read, write = victims.result(victim)["calls"]
    assert read["errno"] == [5] * 20 and min(read["ms"]) >= 20, read
    assert write["errno"] == [5] * 20, write
    assert io_engine.counters(slow)[0]["read"]["delayed"] == 20, "a read was delayed twice, or not at all"
    assert (files / "notes.txt").read_text() == "kfault", "a failed write wrote"
    opens = io_chaos(name="opens", action="fault", errno=5, path=f"{files}/*.db", methods=["open"])
    io_engine.apply(opens, cgroup)
    assert io_engine.datapath.attached, "open is decided at the syscall tracepoints (before O_CREAT creates)"
    io_engine.revoke(opens.key, cgroup.name)
    assert not io_engine.datapath.attached, "the tracepoints stayed after the last rule needing them"


def io_process(mode, *args, headers_dir, **kwargs):
    """tests/io_process.py where the node's headers are hidden (tests/headerless.py)."""
    return headerless.popen([sys.executable, "-m", "tests.io_process", mode, *args], headers_dir, cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, **kwargs)


def without_map_fds(function):
    """A function's instructions with the map fds bcc happened to embed zeroed (each process's own)."""
    insns = bytearray(base64.b64decode(function["insns"]))
    for index, _map in function["maps"]:
        struct.pack_into("<i", insns, index * 8 + 4, 0)
    return bytes(insns)


@pytest.mark.skipif(not os.path.exists(btf.VMLINUX), reason="this kernel has no BTF")
def test_the_file_hooks_compile_without_the_nodes_headers_to_the_same_program(tmp_path):
    """Compiled afresh where only the image's headers are, the file hooks are instruction for
    instruction what the node's own headers give: nothing in them depends on the node's headers."""
    if os.geteuid() != 0:
        pytest.skip("needs root: a mount namespace")
    child = io_process("compile", "file-hooks", headers_dir=tmp_path / "headers",
                       env={compile.CACHE_ENV: str(tmp_path / "cache")})      # empty: compiled here
    out, _ = child.communicate(timeout=600)
    assert child.returncode == 0, out
    hidden = json.loads(out)
    assert hidden["headers"] == f"the image's Debian headers ({tmp_path / 'headers'})", hidden["headers"]
    offsets = loader.file_hook_layout_cflags()
    assert set(offsets) <= set(hidden["cflags"]), "the struct offsets are not this kernel's BTF's"
    # the same flags against the node's own headers: the agent's entry (compiled now if no agent ran)
    headers = loader.running_kernel_headers()
    entry = compile.compiled(os.path.join(loader.BPF_DIR, "iofault.c"), hidden["cflags"], headers.path,
                             loader.headers_identity(headers), loader.BPF_DIR)
    assert hidden["functions"].keys() == entry["functions"].keys()
    for name, function in entry["functions"].items():
        assert without_map_fds(hidden["functions"][name]) == without_map_fds(function), name


@pytest.mark.kernel("file-hooks", "io-errno", "ptrace")
def test_the_file_hooks_load_from_btf_and_decide_reads_without_the_nodes_headers(victims, files, tmp_path):
    """The agent's I/O engine started where only the image's headers are: the file hooks and the
    errno hooks load, the struct layouts come from BTF, and a latency and a fault on reads are
    decided at the file hooks (no syscall tracepoint attached) as the victim measures."""
    assert not os.path.exists(loader.KHEADERS), f"{loader.KHEADERS} would serve as the node's headers"
    target = victims.cgroup("target")
    victim = victims.start(target, [["read", str(files / "data.db"), 3], ["read", str(files / "notes.txt"), 3]],
                           ["--open-early"])
    experiments = [{"apiVersion": spec.API_VERSION, "kind": "IOChaos", "metadata": {"name": name},
                    "spec": {"volumePath": "/", "path": f"{files}/{path}", "methods": ["read"], **fields}}
                   for name, path, fields in (("slow", "*.db", {"action": "latency", "delay": "50ms"}),
                                              ("failing", "*.txt", {"action": "fault", "errno": 5}))]
    engine = io_process("inject", target, json.dumps(experiments), headers_dir=tmp_path / "headers",
                        stdin=subprocess.PIPE)
    try:
        # a cache hit: the session compiled the same program against the node's own headers
        caps = json.loads(read_line(engine, "its capabilities", timeout=300))["capabilities"]
        assert caps["file-hooks"][0], caps["file-hooks"]
        available, reason = caps["struct-layouts"]
        assert available and reason.startswith(f"BTF ({btf.VMLINUX}): file.f_path at "), reason
        assert str(tmp_path / "headers") in caps["kernel-headers"][1], caps["kernel-headers"]
        assert json.loads(read_line(engine, "its placement", timeout=120)) == {"attached": False}, \
            "the syscall tracepoints were attached for latency and fault on reads"
        victims.go(victim)
        slow, failing = victims.result(victim)["calls"]
    finally:
        engine.stdin.close()
        engine.wait(timeout=60)
    assert slow["errno"] == [0] * 3 and min(slow["ms"]) >= 50, slow
    assert failing["errno"] == [5] * 3, failing
    assert engine.returncode == 0


def attached(datapath):
    """The datapath's programs the kernel has a link to (its own list, not the datapath's belief)."""
    return bpf_links.attached_names(datapath.bpf.programs)


@pytest.mark.kernel("io-errno", "ptrace")
def test_hooks_are_attached_only_while_a_rule_needs_them(victims, files, io_engine):
    """An idle kfault runs nothing on the node's calls: the hooks (trampolines that tax every
    read and write) attach before the first rule that needs them is armed, so its first call is
    failed, and detach after the last such rule is disarmed; the syscall tracepoints likewise."""
    datapath = io_engine.datapath
    # io_uring's: its submission tracepoint, and with the file hooks fexit on io_uring_enter,
    # while any rule is armed (they run for io_uring's requests only)
    uring = {loader.IO_URING_PROGRAM, loader.IO_URING_RETURN_PROGRAM} & set(datapath.programs)
    hooks = {name for name in datapath.bpf.programs if name.startswith(loader.NAME_PREFIXES)} - uring
    # the errno hooks, and with file-hooks the fentry program that decides latency alone
    latency_hook = {loader.LATENCY_FILE_HOOK_PROGRAM} if datapath.file_hooks else set()
    assert len(hooks) == len(loader.ERRNO_HOOKS) + len(latency_hook)
    hooks -= latency_hook
    assert not attached(datapath), "loaded and idle (after probe_io's probe), something stays attached"
    target = victims.cgroup("target")
    cgroup = topology.resolve_cgroup_target(f"cgroup:{target}")
    victim = victims.start(target, [["read", str(files / "data.db"), 3]])
    # latency on open: the syscall tracepoints, no hook
    opens = io_chaos(name="opens", action="latency", delay="1ms", path=f"{files}/*.txt", methods=["open"])
    io_engine.apply(opens, cgroup)
    assert attached(datapath) == {"io_sys_enter", "io_sys_exit"} | uring
    started = time.monotonic()
    faults = io_chaos(name="faults", action="fault", errno=5, path=f"{files}/*.db", methods=["read"])
    io_engine.apply(faults, cgroup)
    print(f"arming the rule that attaches the {len(hooks)} hooks took {(time.monotonic() - started) * 1000:.0f} ms")
    assert attached(datapath) >= hooks
    victims.go(victim)      # the first call after apply returns is failed
    assert victims.result(victim)["calls"][0]["errno"] == [5, 5, 5]
    if datapath.file_hooks:     # latency on reads: the fentry file hook alone, which decides them (and
        # the open hook that walks a file as it is opened, for io_uring_submit)
        reads = io_chaos(name="reads", action="latency", delay="1ms", path=f"{files}/*.db", methods=["read"])
        io_engine.apply(reads, cgroup)
        assert attached(datapath) >= hooks and latency_hook.isdisjoint(attached(datapath)), \
            "with a fault rule armed, fmod_ret decides latency too: fentry is not attached beside it"
        io_engine.revoke(faults.key, cgroup.name)
        file_open = {"kmod_ret__security_file_open"} if uring else set()
        assert attached(datapath) == {"io_sys_enter", "io_sys_exit"} | latency_hook | file_open | uring
        io_engine.revoke(reads.key, cgroup.name)
    else:
        io_engine.revoke(faults.key, cgroup.name)
    assert attached(datapath) == {"io_sys_enter", "io_sys_exit"} | uring, \
        "the hooks stayed after the last rule needing them"
    io_engine.revoke(opens.key, cgroup.name)
    assert not attached(datapath)


@pytest.fixture
def overlay(tmp_path):
    """A directory served by overlayfs, as every container's root filesystem is (on a tmpfs of
    its own: an overlay's upper layer can't be another overlay, as the VM tier's /tmp is)."""
    base = tmp_path / "fs"
    base.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(base)], check=True)
    layers = {name: base / name for name in ("lower", "upper", "work", "merged")}
    for layer in layers.values():
        layer.mkdir()
    (layers["lower"] / "data.db").write_text("kfault")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={layers['lower']},"
                    f"upperdir={layers['upper']},workdir={layers['work']}", str(layers["merged"])], check=True)
    yield layers["merged"]
    subprocess.run(["umount", "-l", str(layers["merged"])], check=False)
    subprocess.run(["umount", "-l", str(base)], check=False)


@pytest.mark.kernel("io-tracepoints", "ptrace")
def test_a_read_on_overlayfs_is_one_decision(victims, overlay, io_engine):
    """overlayfs reads the layer's file through a second permission check that shows the same
    path: each call must still be rolled, held and counted once."""
    target = victims.cgroup("target")
    victim = victims.start(target, [["read", str(overlay / "data.db"), 10]])
    io_engine.apply(io_chaos(action="latency", delay="20ms", path=f"{overlay}/*.db", methods=["read"]),
                    topology.resolve_cgroup_target(f"cgroup:{target}"))
    wait_held(io_engine, victim.pid_in_cgroup)
    victims.go(victim)
    took = victims.result(victim)["calls"][0]["ms"]
    calls, delay_ns = io_engine.counters(io_engine.active()[0])
    assert all(20 <= ms < 1000 for ms in took), took
    assert calls["read"]["delayed"] == 10 and delay_ns == 10 * 20_000_000, (calls, delay_ns)


# ---- fault on fsync: the call runs, and the holder replaces its result as it returns --------
# No hook can fail fsync before it takes effect, so the syscall tracepoints and the holder do
# it on every kernel: these run in the host tier (no errno hook needed) but for the one shape
# that needs the errno hooks too (write and fsync together, Chaos Mesh's etcd fault).

SYNC_CALLS = ("fsync", "fdatasync", "sync_file_range")
EIO = 5


def fsync_fault(files, **fields):
    return io_chaos(action="fault", errno=EIO, path=f"{files}/*.db", methods=["fsync"], **fields)


@pytest.mark.kernel("io-tracepoints", "ptrace")
def test_fault_on_fsync_fails_each_sync_call_of_a_matching_file_after_it_ran(victims, files, io_engine):
    target = victims.cgroup("target")
    victim = victims.start(target, [[call, str(files / name), 3] for call in SYNC_CALLS
                                    for name in ("data.db", "notes.txt")])
    bystander = victims.start(victims.cgroup("other"), [["fsync", str(files / "data.db"), 3]])
    io_engine.apply(fsync_fault(files), topology.resolve_cgroup_target(f"cgroup:{target}"))
    victims.go(victim)
    victims.go(bystander)
    results = victims.result(victim)["calls"]
    for matching, other in zip(results[::2], results[1::2]):
        assert matching["errno"] == [EIO] * 3, matching
        assert other["errno"] == [0] * 3, f"a {other['call']} of a non-matching file failed: {other}"
    assert victims.result(bystander)["calls"][0]["errno"] == [0] * 3, "another cgroup's fsync failed"
    calls, _ = io_engine.counters(io_engine.active()[0])
    assert calls["fsync"] == {"passed": 0, "failed": 9, "delayed": 0, **NONE_UNREACHED}, calls


@pytest.mark.kernel("io-tracepoints", "ptrace")
def test_fault_on_fsync_percent_50_fails_about_half_and_counts_what_the_process_saw(victims, files, io_engine):
    target = victims.cgroup("target")
    victim = victims.start(target, [["fsync", str(files / "data.db"), 200]])
    io_engine.apply(fsync_fault(files, percent=50), topology.resolve_cgroup_target(f"cgroup:{target}"))
    victims.go(victim)
    errors = victims.result(victim)["calls"][0]["errno"]
    assert set(errors) <= {0, EIO}, errors
    assert 0.35 <= errors.count(EIO) / len(errors) <= 0.65, errors    # 4 standard deviations
    calls, _ = io_engine.counters(io_engine.active()[0])
    assert (calls["fsync"]["failed"], calls["fsync"]["passed"]) == (errors.count(EIO), errors.count(0)), calls


@pytest.mark.kernel("io-tracepoints", "ptrace")
def test_fault_on_fsync_reaches_processes_that_join_the_cgroup_after_arming(victims, files, io_engine):
    """Each joins and syncs at once: BPF stops it for the holder (SIGSTOP) as its fsync returns."""
    target = victims.cgroup("target")
    io_engine.apply(fsync_fault(files), topology.resolve_cgroup_target(f"cgroup:{target}"))
    for _ in range(5):
        joiner = victims.start(target, [["fsync", str(files / "data.db"), 3]], ["--no-wait"])
        assert victims.result(joiner)["calls"][0]["errno"] == [EIO] * 3
    assert all(proc.returncode == 0 for proc in victims.procs), "a joined process was harmed"


@pytest.mark.kernel("io-tracepoints", "ptrace")
def test_latency_and_fault_on_one_fsync_hold_it_then_fail_it(victims, files, io_engine):
    target = topology.resolve_cgroup_target(f"cgroup:{victims.cgroup('target')}")
    victim = victims.start(target.path, [["fsync", str(files / "data.db"), 3]])
    io_engine.apply(io_chaos(name="slow", action="latency", delay="100ms", path=f"{files}/*.db",
                             methods=["fsync"]), target)
    io_engine.apply(fsync_fault(files), target)
    victims.go(victim)
    call = victims.result(victim)["calls"][0]
    assert call["errno"] == [EIO] * 3 and min(call["ms"]) >= 100, call


@pytest.mark.kernel("io-tracepoints", "ptrace")
def test_a_holder_killed_before_it_fails_an_fsync_leaves_its_real_result(victims, files, io_engine):
    """Held for latency, then to be failed: the holder killed mid-hold never gave the failure;
    the kernel resumes the thread, and the fsync returns what it really did."""
    target = topology.resolve_cgroup_target(f"cgroup:{victims.cgroup('target')}")
    victim = victims.start(target.path, [["fsync", str(files / "data.db"), 1]])
    slow = io_engine.apply(io_chaos(name="slow", action="latency", delay="60s", path=f"{files}/*.db",
                                    methods=["fsync"]), target)
    io_engine.apply(fsync_fault(files), target)
    victims.go(victim)
    wait_until(lambda: held(victim.pid_in_cgroup), "the fsync held")
    os.kill(slow.holder.pid, signal.SIGKILL)
    call = victims.result(victim, timeout=30)["calls"][0]
    assert call["errno"] == [0] and call["ms"][0] < 30_000, call
    assert victim.returncode == 0


@pytest.mark.kernel("io-tracepoints", "ptrace")
def test_fault_on_fsync_never_writes_into_a_signal_handlers_frame(victims, files, io_engine):
    """A handled SIGALRM keeps arriving, to the process and to the syncing thread itself, so some
    arrive as an fsync returns, before the holder's signal (a lower number, and the thread's own,
    is delivered first): then the handler's frame is set up first, the registers are no longer
    the return's, and the holder leaves them alone; the call's real result stands and is counted
    passed. The process survives, its handler ran, and every result is the real one or EIO."""
    target = victims.cgroup("target")
    victim = victims.start(target, [["fsync", str(files / "data.db"), 300]], ["--signals"])
    io_engine.apply(fsync_fault(files), topology.resolve_cgroup_target(f"cgroup:{target}"))
    victims.go(victim)
    result = victims.result(victim)
    assert victim.returncode == 0, "the victim died"
    errors = result["calls"][0]["errno"]
    assert set(errors) <= {0, EIO} and errors.count(EIO) > 0, errors
    assert result["signals"] > 0, "no SIGALRM was handled"
    calls, _ = io_engine.counters(io_engine.active()[0])
    assert (calls["fsync"]["failed"], calls["fsync"]["passed"]) == (errors.count(EIO), errors.count(0)), calls


# Commits one row a line ("commit"), answering "ok" or SQLite's error, with its database in WAL
# mode and synchronous=FULL: each commit syncs the WAL, opened before the experiment.
SQLITE_VICTIM = r"""
import json, os, sqlite3, sys
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as procs:
    procs.write(str(os.getpid()))
db = sqlite3.connect(sys.argv[2], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE IF NOT EXISTS rows (v)")
print("ready", flush=True)
for line in sys.stdin:
    try:
        db.execute("BEGIN")
        db.execute("INSERT INTO rows VALUES (?)", (line.strip(),))
        db.execute("COMMIT")
        answer = "ok"
    except sqlite3.Error as err:
        answer = str(err)
        if db.in_transaction:
            db.execute("ROLLBACK")
    print(json.dumps(answer), flush=True)
"""


@pytest.mark.kernel("io-tracepoints", "ptrace")
def test_sqlite_in_wal_mode_reports_the_failed_sync_then_commits_after_the_experiment(victims, files,
                                                                                     io_engine):
    target = victims.cgroup("target")
    sqlite = CommandVictim([sys.executable, "-c", SQLITE_VICTIM, target, str(files / "app.db")])
    try:
        assert sqlite.ask("commit") == "ok"
        io_engine.apply(io_chaos(action="fault", errno=EIO, path=f"{files}/app.db*", methods=["fsync"]),
                        topology.resolve_cgroup_target(f"cgroup:{target}"))
        assert sqlite.ask("commit") == "disk I/O error"
        io_engine.revoke_all()
        assert sqlite.ask("commit") == "ok"
    finally:
        sqlite.close()


@pytest.mark.stock_kernel("Chaos Mesh's etcd fault: write failed by the file hooks, fsync by the holder")
@pytest.mark.kernel("io-tracepoints", "io-errno", "ptrace")
def test_fault_on_write_and_fsync_fails_both(victims, files, io_engine):
    target = victims.cgroup("target")
    before = (files / "data.db").read_text()
    victim = victims.start(target, [["write", str(files / "data.db"), 3], ["fsync", str(files / "data.db"), 3],
                                    ["fsync", str(files / "notes.txt"), 3]])
    io_engine.apply(io_chaos(action="fault", errno=EIO, path=f"{files}/*.db", methods=["write", "fsync"]),
                    topology.resolve_cgroup_target(f"cgroup:{target}"))
    victims.go(victim)
    write, fsync, other = victims.result(victim)["calls"]
    assert write["errno"] == [EIO] * 3 and fsync["errno"] == [EIO] * 3, (write, fsync)
    assert other["errno"] == [0] * 3, other
    assert (files / "data.db").read_text() == before, "a failed write wrote"


# ---- reach: every call of every way a process comes to do its I/O -------------------------
# 100 calls each, all of which must be affected: latency where the holder can hold (ptrace),
# errno where the kernel has a hook to fail calls (io-errno; on the host tier those skip and
# run in the VM: scripts/vm-run tests/kernel/run tests/kernel/test_io_faults.py -k reach).

REACH_CALLS = 100
REACH_DELAY_MS = 20
REACH_ERRNO = 5
# Nothing renews the rule here, and a lapsed lease passes every call: it must outlive the
# measurement, and 20 processes starting one after another take more than the fixture's 30 s
# under the VM tier's emulation.
REACH_LEASE_S = 600
ACTIONS = [pytest.param("latency", marks=[pytest.mark.kernel("io-tracepoints", "ptrace"),
                                         pytest.mark.stock_kernel("reach through the file hooks")]),
           pytest.param("fault", marks=pytest.mark.kernel("io-tracepoints", "io-errno"))]


@pytest.fixture
def tree(files):
    (files / "sub").mkdir()
    (files / "sub" / "data.db").write_text("kfault")
    return files


def arm_reach(engine, action, files, cgroup):
    fields = {"delay": f"{REACH_DELAY_MS}ms"} if action == "latency" else {"errno": REACH_ERRNO}
    engine.apply(io_chaos(action=action, path=f"{files}/**/*.db", methods=["read"], **fields),
                 topology.resolve_cgroup_target(f"cgroup:{cgroup}"), lease_s=REACH_LEASE_S)


def affected(action, ms, errors):
    """How many calls the fault reached, as the process saw them."""
    if action == "latency":
        return sum(1 for took in ms if took >= REACH_DELAY_MS)
    return sum(1 for error in errors if error == REACH_ERRNO)


def run_armed(victims, io_engine, action, files, calls, options=()):
    target = victims.cgroup("target")
    victim = victims.start(target, calls, options)
    arm_reach(io_engine, action, files, target)
    victims.go(victim)
    call = victims.result(victim)["calls"][0]
    assert not call.get("open_failed"), call
    return affected(action, call["ms"], call["errno"]), len(call["ms"])


@pytest.mark.parametrize("action", ACTIONS)
def test_reach_children_forked_per_request(victims, tree, io_engine, action):
    reached, made = run_armed(victims, io_engine, action, tree,
                              [["fork_read", str(tree / "data.db"), REACH_CALLS]])
    assert (reached, made) == (REACH_CALLS, REACH_CALLS)


@pytest.mark.parametrize("action", ACTIONS)
def test_reach_a_thread_started_after_arming(victims, tree, io_engine, action):
    reached, made = run_armed(victims, io_engine, action, tree,
                              [["read", str(tree / "data.db"), REACH_CALLS]], ["--in-thread"])
    assert (reached, made) == (REACH_CALLS, REACH_CALLS)


@pytest.mark.parametrize("action", ACTIONS)
def test_reach_a_file_opened_before_arming(victims, tree, io_engine, action):
    reached, made = run_armed(victims, io_engine, action, tree,
                              [["read", str(tree / "data.db"), REACH_CALLS]], ["--open-early"])
    assert (reached, made) == (REACH_CALLS, REACH_CALLS)


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("how", ["data.db", "./sub/data.db", "dirfd"])
def test_reach_relative_paths_match_as_the_process_sees_them(victims, tree, io_engine, action, how):
    if how == "dirfd":     # openat(fd of a directory opened before arming, "data.db")
        path, options = f"{tree}/sub//data.db", ["--open-early"]
    else:
        path, options = how, ["--cwd", str(tree)]
    reached, made = run_armed(victims, io_engine, action, tree, [["read", path, REACH_CALLS]], options)
    assert (reached, made) == (REACH_CALLS, REACH_CALLS)


@pytest.mark.parametrize("action", ACTIONS)
def test_reach_programs_a_shell_runs(victims, tree, io_engine, action):
    """A shell already in the cgroup runs a tool 100 times (fork + exec): each tool's read."""
    target = victims.cgroup("target")
    shell = subprocess.Popen(["bash", "-c", f'echo $$ > {target}/cgroup.procs && echo ready && read go && '
                              f'for i in $(seq {REACH_CALLS}); do s=$EPOCHREALTIME; '
                              f'dd if={tree}/data.db of=/dev/null bs=1 count=1 status=none 2>/dev/null; '
                              'r=$?; echo $s $EPOCHREALTIME $r; done'],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    victims.procs.append(shell)
    assert shell.stdout.readline().strip() == "ready"
    arm_reach(io_engine, action, tree, target)
    victims.go(shell)
    runs = [line.split() for line in shell.communicate(timeout=120)[0].splitlines()]
    ms = [(float(end) - float(start)) * 1000 for start, end, _ in runs]
    errors = [REACH_ERRNO if status != "0" else 0 for _, _, status in runs]   # dd: I/O error
    assert len(runs) == REACH_CALLS
    assert affected(action, ms, errors) == REACH_CALLS


@pytest.mark.parametrize("action", ACTIONS)
def test_reach_processes_that_join_the_cgroup_after_arming(victims, tree, io_engine, action):
    """Each joins and reads at once: no time for a rescan to find it first."""
    target = victims.cgroup("target")
    arm_reach(io_engine, action, tree, target)
    reached = made = 0
    for _ in range(REACH_CALLS // 5):
        joiner = victims.start(target, [["read", str(tree / "data.db"), 5]], ["--no-wait"])
        call = victims.result(joiner)["calls"][0]
        reached += affected(action, call["ms"], call["errno"])
        made += len(call["ms"])
    assert (reached, made) == (REACH_CALLS, REACH_CALLS)
    assert all(proc.returncode == 0 for proc in victims.procs), "a joined process was harmed"


# ---- relative paths after arming: the syscall tracepoints follow chdir, fchdir and the
# directories opened after arming (the file hooks match a file's own path and need none of it)

FOLLOWED_READS = 10


@pytest.mark.kernel("io-tracepoints", "ptrace")
@pytest.mark.parametrize("how", ["chdir", "relative-chdir", "fchdir", "dirfd"])
def test_relative_reads_after_the_process_changes_directory_after_arming(victims, tree, io_engine, how):
    """The process starts elsewhere (its working directory matches nothing when armed), then
    changes directory and reads by a relative path: every read is reached."""
    calls, cwd = {"chdir": ([["chdir", str(tree / "sub"), 1]], "/"),
                  "relative-chdir": ([["chdir", f"{tree.name}/sub", 1]], str(tree.parent)),
                  "fchdir": ([["fchdir", str(tree / "sub"), 1]], "/")}.get(how, ([], "/"))
    read = ["read", f"{tree}/sub//data.db" if how == "dirfd" else "data.db", FOLLOWED_READS]
    target = victims.cgroup("target")
    victim = victims.start(target, calls + [read], ["--cwd", cwd])
    arm_reach(io_engine, "latency", tree, target)
    victims.go(victim)
    reads = victims.result(victim)["calls"][-1]
    assert not reads.get("open_failed"), reads
    assert affected("latency", reads["ms"], reads["errno"]) == FOLLOWED_READS, reads["ms"]


@pytest.mark.kernel("io-tracepoints", "ptrace")
# (read fails at the end of a file without a newline: `|| true`)
@pytest.mark.parametrize("script", ["cd {}/sub && cat data.db", "cd {}/sub && {{ read line < data.db || true; }}"],
                         ids=["a-program", "a-builtin"])
def test_a_shell_started_after_arming_reads_after_cd(victims, tree, io_engine, script):
    """A shell started after arming changes directory, then reads by a relative path: by a
    program it runs, or itself (a builtin's redirection)."""
    target = victims.cgroup("target")
    victim = victims.start(target, [["sh", script.format(tree.name), FOLLOWED_READS]], ["--cwd", str(tree.parent)])
    arm_reach(io_engine, "latency", tree, target)
    victims.go(victim)
    runs = victims.result(victim)["calls"][0]
    assert runs["errno"] == [0] * FOLLOWED_READS
    assert affected("latency", runs["ms"], runs["errno"]) == FOLLOWED_READS, runs["ms"]


@pytest.mark.kernel("io-tracepoints", "ptrace")
def test_a_chdir_through_dot_dot_is_marked_again_from_proc(victims, tree, io_engine):
    """A DFA can't walk "..": the chdir loses the working directory and the agent marks the
    process again from /proc/PID/cwd; from then on its relative reads are reached."""
    target = victims.cgroup("target")
    victim = victims.start(target, [["chdir", "sub/../sub", 1], ["wait", "", 1], ["read", "data.db", FOLLOWED_READS]],
                           ["--cwd", str(tree)])
    io_engine.apply(io_chaos(action="latency", delay=f"{REACH_DELAY_MS}ms", path=f"{tree}/sub/*.db",
                             methods=["read"]), topology.resolve_cgroup_target(f"cgroup:{target}"))
    active = io_engine.active()[0]
    dirs = io_engine.datapath.dirs
    cwd = dirs.Key(victim.pid_in_cgroup, layout.IO_AT_FDCWD & 0xFFFFFFFF)
    in_sub = policy.walk(active.dfa, f"{tree}/sub/")
    assert dirs[cwd].state[active.slot] != in_sub
    victims.go(victim)
    wait_until(lambda: (dirs.get(cwd) or dirs.Leaf()).state[active.slot] == in_sub,
               "the agent marked the working directory again")
    victims.go(victim)
    reads = victims.result(victim)["calls"][-1]
    assert affected("latency", reads["ms"], reads["errno"]) == FOLLOWED_READS, reads["ms"]


@pytest.mark.kernel("io-tracepoints", "ptrace")
def test_the_holder_sleeps_until_bpf_stops_a_process_for_it(victims, files, io_engine, monkeypatch):
    """A process that joins after arming and reads at once is stopped by BPF until the holder
    takes it. The holder doesn't poll for that, it is woken (the stop bell): with its rescan an
    hour away it still takes the joiner, and while nothing happens it does not wake at all."""
    monkeypatch.setattr(holder, "RESCAN_S", 3600.0)
    target = victims.cgroup("target")
    io_engine.apply(io_chaos(action="latency", delay="50ms", path=f"{files}/*.db", methods=["read"]),
                    topology.resolve_cgroup_target(f"cgroup:{target}"))
    holder_pid = io_engine.active()[0].holder.pid
    before = voluntary_switches(holder_pid)
    time.sleep(1.0)
    idle_wakeups = voluntary_switches(holder_pid) - before
    joiner = victims.start(target, [["read", str(files / "data.db"), 3]], ["--no-wait"])
    reads = victims.result(joiner, timeout=30)["calls"][0]
    assert len(reads["ms"]) == 3 and min(reads["ms"]) >= 50, reads
    assert idle_wakeups <= 2, f"an idle holder woke {idle_wakeups} times in a second"


def voluntary_switches(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("voluntary_ctxt_switches:"))


@pytest.mark.kernel("io-tracepoints", "ptrace")
def test_killed_agent_leaves_a_process_that_joined_after_arming_running(victims, files, tmp_path):
    """BPF stops a joiner with SIGSTOP until the holder takes it: the agent's death must not
    leave it stopped, nor held."""
    target = victims.cgroup("target")
    doc = tmp_path / "io.yaml"
    doc.write_text(f"apiVersion: {spec.API_VERSION}\nkind: IOChaos\nmetadata: {{name: slow-reads}}\n"
                   f"spec: {{action: latency, delay: 20s, volumePath: {files}, path: '{files}/*.db', "
                   "methods: [read]}\n")
    runner = subprocess.Popen([sys.executable, "-m", "kfault_agent.cli", "run", "-f", str(doc),
                               "--target", f"cgroup:{target}", "--lease", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        # kfault run compiles its programs first: minutes under the VM tier's emulation
        assert "injecting" in read_line(runner, "injecting line", timeout=300)
        joiner = victims.start(target, [["read", str(files / "data.db"), 3]], ["--no-wait"])
        wait_until(lambda: held(joiner.pid_in_cgroup), "the joiner's first read held")
        time.sleep(HELD_S)               # a hold, not a wait: the read must stay held until the agent dies
        assert held(joiner.pid_in_cgroup), "the read was let go before the agent died"
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        result = victims.result(joiner, timeout=15)
    finally:
        runner.kill()
    took = result["calls"][0]["ms"]
    assert joiner.returncode == 0, "the joined process was killed"
    assert took[0] >= HELD_S * 1000, f"the first read was not held: {took}"
    assert took[0] < 10_000, "the held read was not released when the agent died"


@pytest.mark.kernel("io-tracepoints", "ptrace")
def test_a_holder_killed_on_its_own_leaves_no_process_stopped(victims, files, io_engine):
    """BPF stops a process that joins the cgroup until the holder takes it: a holder killed by
    itself (OOM killer, kill -9) must not leave one stopped, nor a later one."""
    target = victims.cgroup("target")
    active = io_engine.apply(io_chaos(action="latency", delay="20s", path=f"{files}/*.db", methods=["read"]),
                             topology.resolve_cgroup_target(f"cgroup:{target}"))
    os.kill(active.holder.pid, signal.SIGKILL)
    joiners = [victims.start(target, [["read", str(files / "data.db"), 3]], ["--no-wait"]) for _ in range(2)]
    for joiner in joiners:
        took = victims.result(joiner, timeout=30)["calls"][0]["ms"]
        assert joiner.returncode == 0, "the joined process was killed"
        assert max(took) < 10_000, f"a read was held by a dead holder: {took}"


# ---- namespace methods: mkdir, rmdir, unlink, matched by the path they name ---------------

NAMESPACE_CALLS = ["mkdir", "rmdir", "unlink"]


@pytest.mark.kernel("io-tracepoints", "ptrace")
@pytest.mark.parametrize("call", NAMESPACE_CALLS)
def test_latency_on_a_namespace_method_holds_only_its_matching_calls(victims, files, io_engine, call):
    target = victims.cgroup("target")
    victim = victims.start(target, [[call, str(files / "made.db"), 5], [call, str(files / "made.txt"), 5],
                                    ["read", str(files / "data.db"), 5]])
    io_engine.apply(io_chaos(action="latency", delay="50ms", path=f"{files}/*.db", methods=[call]),
                    topology.resolve_cgroup_target(f"cgroup:{target}"))
    victims.go(victim)
    matching, other_path, other_method = victims.result(victim)["calls"]
    assert min(matching["ms"]) >= 50 and set(matching["errno"]) == {0}, matching
    assert max(other_path["ms"]) < 50, f"a {call} of a non-matching path was held: {other_path}"
    assert max(other_method["ms"]) < 50, f"a read was held by a {call} rule: {other_method}"


@pytest.mark.kernel("io-tracepoints", "io-errno")
@pytest.mark.parametrize("call", NAMESPACE_CALLS)
def test_errno_on_a_namespace_method_fails_it_before_it_takes_effect(victims, files, io_engine, call):
    target = victims.cgroup("target")
    victim = victims.start(target, [[call, str(files / "made.db"), 3], [call, str(files / "made.txt"), 3]])
    io_engine.apply(io_chaos(action="fault", errno=13, path=f"{files}/*.db", methods=[call]),
                    topology.resolve_cgroup_target(f"cgroup:{target}"))
    victims.go(victim)
    matching, other_path = victims.result(victim)["calls"]
    assert matching["errno"] == [13, 13, 13], matching
    assert set(other_path["errno"]) == {0}, other_path
    # A failed mkdir made nothing; a failed rmdir or unlink removed nothing (and the probe's own
    # clean-up, failed by the same rule, left it too).
    assert (files / "made.db").exists() == (call != "mkdir")
    assert not (files / "made.txt").exists()


# ---- getattr (stat), setattr (chmod, chown, truncate, utimes), rename, create, readdir -----
# By path, and through an fd opened before arming (fstat, fchmod, a listing of an open directory).
# (call, method, the matching path, the other path): by-path calls make their file or directory
# themselves; the fd calls take one the test made, opened before the rule.
FILE_METHOD_CALLS = [("getattr", "getattr", "seen.db", "seen.txt"), ("fstat", "getattr", "data.db", "notes.txt"),
                     ("setattr", "setattr", "mode.db", "mode.txt"), ("fchmod", "setattr", "data.db", "notes.txt"),
                     ("rename", "rename", "moved.db", "moved.txt"), ("create", "create", "new.db", "new.txt"),
                     ("readdir", "readdir", "listed.db", "listed.txt"),
                     ("readdir_fd", "readdir", "open.db", "open.txt")]


def method_victim(victims, files, call, matching, other, count):
    """A victim making `count` of `call` on each path; fd calls open theirs before arming."""
    if call == "readdir_fd":
        for name in (matching, other):
            (files / name).mkdir()
    options = ["--open-early"] if call in ("fstat", "fchmod", "readdir_fd") else []
    return victims.start(victims.cgroup("target"), [[call, str(files / matching), count],
                                                    [call, str(files / other), count]], options)


@pytest.mark.stock_kernel("read and write at the file hooks, the rest at the tracepoints")
@pytest.mark.kernel("io-tracepoints", "ptrace")
@pytest.mark.parametrize("call, method, matching, other", FILE_METHOD_CALLS)
def test_latency_on_a_file_method_holds_only_its_matching_calls(victims, files, io_engine, call, method,
                                                                      matching, other):
    victim = method_victim(victims, files, call, matching, other, 5)
    io_engine.apply(io_chaos(action="latency", delay="50ms", path=f"{files}/*.db", methods=[method]),
                    topology.resolve_cgroup_target(f"cgroup:{victims.cgroup('target')}"))
    victims.go(victim)
    held, passed = victims.result(victim)["calls"]
    assert min(held["ms"]) >= 50 and set(held["errno"]) == {0}, held
    assert max(passed["ms"]) < 50, f"a {call} of a non-matching path was held: {passed}"
    calls, _ = io_engine.counters(io_engine.active()[0])
    assert calls[method]["delayed"] >= 5, calls     # a listing is two getdents64, the second empty


@pytest.mark.kernel("io-tracepoints", "io-errno")
@pytest.mark.parametrize("call, method, matching, other", FILE_METHOD_CALLS)
def test_errno_on_a_file_method_fails_only_its_matching_calls(victims, files, io_engine, call, method,
                                                                    matching, other):
    victim = method_victim(victims, files, call, matching, other, 3)
    io_engine.apply(io_chaos(action="fault", errno=5, path=f"{files}/*.db", methods=[method]),
                    topology.resolve_cgroup_target(f"cgroup:{victims.cgroup('target')}"))
    victims.go(victim)
    failed, passed = victims.result(victim)["calls"]
    assert failed["errno"] == [5, 5, 5], failed
    assert set(passed["errno"]) == {0}, passed


@pytest.mark.kernel("io-tracepoints", "ptrace")
def test_a_held_call_that_waits_is_decided_once(victims, files, io_engine):
    """The signal that holds a thread is pending while its call runs: a call that waits
    interruptibly (an open of a FIFO, waiting for its writer) is interrupted by it, and Python,
    like many programs, retries. Each open is still one decision, held once, not a loop of
    holds for as long as the wait would last."""
    target = victims.cgroup("target")
    os.mkfifo(files / "pipe.db")
    victim = victims.start(target, [["fifo_open", str(files / "pipe.db"), 3]])
    io_engine.apply(io_chaos(action="latency", delay="50ms", path=f"{files}/*.db", methods=["open"]),
                    topology.resolve_cgroup_target(f"cgroup:{target}"))
    victims.go(victim)
    opens = victims.result(victim)["calls"][0]
    assert set(opens["errno"]) == {0} and min(opens["ms"]) >= 50, opens
    calls, _ = io_engine.counters(io_engine.active()[0])
    # the reader's open and the writer's, each once
    assert calls["open"]["delayed"] == 6, calls


def wait_for_log(proc, text, timeout):
    """The first line of proc's output that holds `text`."""
    deadline = time.monotonic() + timeout
    while True:
        line = read_line(proc, repr(text), max(1.0, deadline - time.monotonic()))
        if text in line:
            return line
        if not line or time.monotonic() > deadline:
            pytest.fail(f"no {text!r} from pid {proc.pid} within {timeout}s")


def go_duration_ms(text):
    """A Go duration as Go prints it (850.2µs, 212.5ms, 1.2s, 1m2.5s) in milliseconds."""
    units = {"h": 3.6e6, "m": 6e4, "s": 1e3, "ms": 1.0, "µs": 1e-3, "us": 1e-3, "ns": 1e-6}
    return sum(float(number) * units[unit] for number, unit in re.findall(r"([0-9.]+)(ms|µs|us|ns|h|m|s)", text))


def start_prometheus(victims, cgroup, files):
    """A real Go server in `cgroup`, ready; it re-reads files/prometheus.yml on SIGHUP."""
    config = files / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\n")
    server = subprocess.Popen(
        ["sh", "-c", f"echo $$ > {cgroup}/cgroup.procs && exec prometheus --config.file={config} "
         f"--storage.tsdb.path={files}/tsdb --web.listen-address=127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victims.procs.append(server)
    wait_for_log(server, "Server is ready to receive web requests", timeout=300)
    return server


GO_SERVER = pytest.mark.skipif(not shutil.which("prometheus"),
                               reason="no prometheus (Debian's, which scripts/setup-host installs)")


@pytest.mark.stock_kernel("a real server held through the file hooks")
@pytest.mark.kernel("io-tracepoints", "ptrace")
@GO_SERVER
def test_latency_holds_a_go_server_that_ran_before_the_experiment(victims, files, io_engine):
    """Every Go program catches SIGURG (its runtime's preemption) and SIGWINCH, and a holder
    that passed over caught signals left Go servers (etcd, Prometheus) with no latency at all.
    A real one: Prometheus, started before the experiment, re-reads its config on SIGHUP."""
    target = victims.cgroup("target")
    server = start_prometheus(victims, target, files)
    io_engine.apply(io_chaos(action="latency", delay="200ms", path=f"{files}/*.yml", methods=["read"]),
                    topology.resolve_cgroup_target(f"cgroup:{target}"))
    server.send_signal(signal.SIGHUP)
    loaded = wait_for_log(server, "Completed loading of configuration file", timeout=120)
    took = go_duration_ms(re.search(r"totalDuration=(\S+)", loaded).group(1))
    calls, _ = io_engine.counters(io_engine.active()[0])
    assert calls["read"]["delayed"] >= 1 and calls["read"]["passed"] == 0, calls
    assert took >= 200, f"the reload took {took} ms: {loaded}"


@pytest.mark.kernel("io-tracepoints", "ptrace")
@GO_SERVER
def test_a_go_server_outlives_its_holder_killed_mid_hold(victims, files, io_engine):
    """The holder killed mid-hold: the kernel resumes the held thread and delivers its hold
    signal, SIGURG, for real, to the Go runtime's handler, which takes it as a preemption
    request. The server goes on: the reload completes long before the hold would have."""
    target = victims.cgroup("target")
    server = start_prometheus(victims, target, files)
    active = io_engine.apply(io_chaos(action="latency", delay="60s", path=f"{files}/*.yml", methods=["read"]),
                             topology.resolve_cgroup_target(f"cgroup:{target}"))
    server.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    while io_engine.counters(active)[0]["read"]["delayed"] == 0:
        assert time.monotonic() < deadline, "the config read was never held"
        time.sleep(0.05)
    os.kill(active.holder.pid, signal.SIGKILL)
    loaded = wait_for_log(server, "Completed loading of configuration file", timeout=30)
    assert go_duration_ms(re.search(r"totalDuration=(\S+)", loaded).group(1)) < 30_000, loaded
    assert server.poll() is None, "the server died"


@pytest.mark.kernel("io-tracepoints", "ptrace")
def test_a_create_rule_leaves_opens_without_o_creat_alone(victims, files, io_engine):
    target = victims.cgroup("target")
    victim = victims.start(target, [["create", str(files / "new.db"), 3], ["read", str(files / "data.db"), 3]])
    active = io_engine.apply(io_chaos(action="latency", delay="50ms", path=f"{files}/*.db", methods=["create"]),
                             topology.resolve_cgroup_target(f"cgroup:{target}"))
    victims.go(victim)
    creates, reads = victims.result(victim)["calls"]
    assert min(creates["ms"]) >= 50, creates
    # the read's open of data.db (no O_CREAT) was not decided: only the three creates were
    assert io_engine.counters(active)[0] == {"create": {"passed": 0, "failed": 0, "delayed": 3, **NONE_UNREACHED}}
