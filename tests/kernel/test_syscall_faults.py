"""SyscallChaos on real processes: one in the target cgroup, one outside it, each measured as a
user would (curl's exit status, a dash script's forks, a mapping's errno, a call's time)."""
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kfault_agent.kernel import topology
from kfault_api import spec, syscalls
from kfault_lab import headerless
from tests.features import skip_for_lack_of
from tests.victims import remove_cgroup

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
ECONNREFUSED, EAGAIN, ENOMEM = 111, 11, 12
CURL_COULDNT_CONNECT = 7


def syscall_chaos(name, **fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "SyscallChaos",
                                  "metadata": {"name": name}, "spec": fields})


def needs(engine, feature):
    cap = engine.capabilities[feature]
    if not cap.available:
        skip_for_lack_of(feature, cap.reason)


@pytest.fixture
def cgroups():
    """A target cgroup and an outside one under the v2 mount; removed with what runs in them."""
    root, prefix = topology.cgroup2_mount(), "kft-sc-" + uuid.uuid4().hex[:6]
    made = {}
    for name in ("target", "outside"):
        made[name] = os.path.join(root, f"{prefix}-{name}")
        os.mkdir(made[name])
    yield made
    for path in made.values():
        remove_cgroup(path)


def run_in(cgroup, argv, timeout=120, **kwargs):
    """argv run in `cgroup` (it moves itself there before it execs): its CompletedProcess."""
    mover = f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"'
    return subprocess.run(["sh", "-c", mover, "in-cgroup", *argv], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def start_in(cgroup, argv):
    mover = f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"'
    return subprocess.Popen(["sh", "-c", mover, "in-cgroup", *argv], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    """A local HTTP server (this process, in neither cgroup): its URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def curl_statuses(cgroup, url, times):
    """curl's exit status for each of `times` requests, one curl process each, made in `cgroup`."""
    script = f'for i in $(seq {times}); do curl -s -o /dev/null --max-time 10 {url}; echo $?; done'
    done = run_in(cgroup, ["sh", "-c", script])
    return [int(line) for line in done.stdout.split()]


@pytest.fixture
def placed(syscall_engine):
    """Place experiments on cgroups; everything placed is revoked after the test."""
    keys = []

    def place(experiment, cgroup):
        target = syscall_engine.resolve(f"cgroup:{cgroup}", experiment)[0]
        syscall_engine.apply(experiment, target)
        keys.append((experiment.key, target.name))
        return target

    yield place
    for key in keys:
        syscall_engine.revoke(*key)


def calls(engine, experiment):
    rows = engine.counter_rows(experiment.key)
    return {(name, outcome): count for _target, name, outcome, count in rows}


@pytest.mark.stock_kernel("BPF LSM hooks")
def test_connect_fails_with_econnrefused_in_the_target_only(syscall_engine, cgroups, server, placed):
    needs(syscall_engine, "syscall-fault")
    refused = syscall_chaos("refused", action="fault", syscalls=["connect"], errno=ECONNREFUSED)
    target = placed(refused, cgroups["target"])
    assert syscall_engine.datapath.hooks_attached == {"socket_connect"}
    assert not syscall_engine.datapath.tracepoint_attached, "a syscall tracepoint for a fault alone"
    assert curl_statuses(cgroups["target"], server, 5) == [CURL_COULDNT_CONNECT] * 5
    assert curl_statuses(cgroups["outside"], server, 5) == [0] * 5
    # every connect of the target's curls is counted: its TCP one, and glibc's to nscd's socket
    counted = calls(syscall_engine, refused)
    assert counted[("connect", "passed")] == 0 and counted[("connect", "failed")] >= 5, counted
    # a percent: 30% of 60 curls refused, within a binomial bound (mean 18, sd 3.5: 5 sd either side)
    syscall_engine.revoke(refused.key, target.name)
    some = syscall_chaos("some-refused", action="fault", syscalls=["connect"], errno=ECONNREFUSED, percent=30)
    placed(some, cgroups["target"])
    statuses = curl_statuses(cgroups["target"], server, 60)
    failed = statuses.count(CURL_COULDNT_CONNECT)
    assert failed + statuses.count(0) == 60, statuses
    assert 1 <= failed <= 36, f"{failed} of 60 refused at 30%"
    counted = calls(syscall_engine, some)
    assert counted[("connect", "failed")] >= failed and sum(counted.values()) >= 60, counted


FORKING_SCRIPT = "(true) && echo forked; true & wait $! && echo waited"
THREAD_PROGRAM = "import threading; t = threading.Thread(target=print, args=('thread started',)); t.start(); t.join()"


@pytest.mark.stock_kernel("BPF LSM hooks")
def test_fork_fails_a_dash_script_but_not_the_targets_threads(syscall_engine, cgroups, placed):
    needs(syscall_engine, "syscall-fault")
    no_fork = syscall_chaos("no-fork", action="fault", syscalls=["fork"], errno=EAGAIN)
    placed(no_fork, cgroups["target"])
    assert syscall_engine.datapath.hooks_attached == {"task_alloc"}
    inside = run_in(cgroups["target"], ["dash", "-c", FORKING_SCRIPT])
    assert inside.returncode != 0 and "forked" not in inside.stdout, inside
    assert "fork" in inside.stderr.lower(), inside.stderr        # dash: "Cannot fork"
    outside = run_in(cgroups["outside"], ["dash", "-c", FORKING_SCRIPT])
    assert outside.returncode == 0 and outside.stdout.split() == ["forked", "waited"], outside
    threads = run_in(cgroups["target"], [sys.executable, "-c", THREAD_PROGRAM])
    assert threads.returncode == 0 and threads.stdout.strip() == "thread started", threads
    assert calls(syscall_engine, no_fork)[("fork", "failed")] >= 1


# After "go": an anonymous mapping by mmap(2) itself (ctypes, set up before), its errno printed.
MAPPING_PROGRAM = textwrap.dedent("""\
    import ctypes, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
    failed = ctypes.c_void_p(-1).value
    sys.stdout.write("ready\\n"); sys.stdout.flush()
    sys.stdin.readline()
    address = libc.mmap(None, 1 << 20, 3, 0x22, -1, 0)    # PROT_READ|WRITE, MAP_PRIVATE|ANONYMOUS
    sys.stdout.write(f"{ctypes.get_errno() if address == failed else 0}\\n"); sys.stdout.flush()
""")


@pytest.mark.stock_kernel("BPF LSM hooks")
def test_mmap_fails_with_enomem_for_a_mapping_made_after_arming(syscall_engine, cgroups, placed):
    needs(syscall_engine, "syscall-fault")
    procs = {name: start_in(cgroups[name], [sys.executable, "-c", MAPPING_PROGRAM]) for name in ("target", "outside")}
    try:
        for proc in procs.values():
            assert proc.stdout.readline().strip() == "ready"
        no_memory = syscall_chaos("no-memory", action="fault", syscalls=["mmap"], errno=ENOMEM)
        placed(no_memory, cgroups["target"])
        errnos = {}
        for name, proc in procs.items():
            proc.stdin.write("go\n")
            proc.stdin.flush()
            errnos[name] = int(proc.stdout.readline())
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
    assert errnos == {"target": ENOMEM, "outside": 0}


@pytest.mark.stock_kernel("BPF LSM hooks")
def test_a_program_execd_after_arming_is_reached(syscall_engine, cgroups, server, placed):
    """A shell in the target from before the rule execs curl after it: curl's connect fails."""
    needs(syscall_engine, "syscall-fault")
    shell = start_in(cgroups["target"], ["sh", "-c", f"echo ready; read go; exec curl -s -o /dev/null {server}"])
    try:
        assert shell.stdout.readline().strip() == "ready"
        placed(syscall_chaos("refused-later", action="fault", syscalls=["connect"], errno=ECONNREFUSED),
               cgroups["target"])
        shell.stdin.write("go\n")
        shell.stdin.flush()
        assert shell.wait(timeout=60) == CURL_COULDNT_CONNECT
    finally:
        shell.kill()
        shell.wait()


@pytest.mark.stock_kernel("BPF LSM hooks")
def test_hooks_are_attached_only_while_a_rule_names_their_syscalls(syscall_engine, cgroups, placed):
    needs(syscall_engine, "syscall-fault")
    datapath = syscall_engine.datapath
    assert datapath.hooks_attached == set() and not datapath.tracepoint_attached
    experiment = syscall_chaos("two-hooks", action="fault", syscalls=["connect", "clone"], errno=EAGAIN)
    target = placed(experiment, cgroups["target"])
    assert datapath.hooks_attached == {"socket_connect", "task_alloc"}
    syscall_engine.revoke(experiment.key, target.name)
    assert datapath.hooks_attached == set()


HOOKED_CALLS_C = os.path.join(ROOT, "tests", "hooked_calls.c")
# The calls hooked_calls.c makes once each, the hooks they reach, and the errno every one fails with.
HOOKED_CALLS = ["bind", "listen", "accept", "sendmsg", "recvmsg", "ioctl", "kill", "clock_settime", "execve"]
EIO = 5


@pytest.fixture(scope="module")
def hooked_calls(tmp_path_factory):
    """hooked_calls.c built with cc, once for the module."""
    binary = tmp_path_factory.mktemp("hooked-calls") / "hooked_calls"
    subprocess.run(["cc", "-O2", "-o", str(binary), HOOKED_CALLS_C], check=True)
    return str(binary)


@pytest.mark.stock_kernel("BPF LSM hooks")
def test_each_other_hook_fails_its_call_in_the_target_only(syscall_engine, cgroups, placed, hooked_calls):
    """accept, bind, listen, sendmsg, recvmsg, execve, kill, ioctl and clock_settime, one rule
    naming them all (nine hooks, one arming): a program in the target gets EIO from each, one
    outside gets through every one; each failure counted once under its syscall."""
    needs(syscall_engine, "syscall-fault")
    procs = {name: start_in(cgroups[name], [hooked_calls]) for name in ("target", "outside")}
    try:
        for proc in procs.values():
            assert proc.stdout.readline().strip() == "ready"
        failing = syscall_chaos("each-hook", action="fault", syscalls=HOOKED_CALLS, errno=EIO)
        placed(failing, cgroups["target"])
        assert syscall_engine.datapath.hooks_attached == {syscalls.FAULT_HOOKS[name] for name in HOOKED_CALLS}
        errnos = {}
        for name, proc in procs.items():
            out, _ = proc.communicate("go\n", timeout=60)
            assert proc.returncode == 0, out
            errnos[name] = dict(line.split() for line in out.splitlines())
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
    assert errnos["target"] == {name: str(EIO) for name in HOOKED_CALLS}, errnos
    assert errnos["outside"] == {name: "0" for name in HOOKED_CALLS}, errnos
    counted = calls(syscall_engine, failing)
    assert {name: counted[(name, "failed")] for name in HOOKED_CALLS} == {name: 1 for name in HOOKED_CALLS}, counted


def elapsed_ms(cgroup, program):
    done = run_in(cgroup, [sys.executable, "-c", program])
    assert done.returncode == 0, done.stderr
    return [float(x) for x in done.stdout.split()]


# Three getrandom calls and three connects (to a closed port: refused at once), each timed.
TIMED_CALLS = textwrap.dedent("""\
    import os, socket, time
    def timed(call):
        start = time.monotonic(); call(); return (time.monotonic() - start) * 1000
    def connect():
        with socket.socket() as s:
            try:
                s.connect(("127.0.0.1", 9))
            except OSError:
                pass
    print(*[timed(lambda: os.getrandom(16)) for _ in range(3)], *[timed(connect) for _ in range(3)])
""")


@pytest.mark.stock_kernel("the sys_exit tracepoint and the holder on 6.1")
def test_latency_holds_getrandom_and_connect_in_the_target_only(syscall_engine, cgroups, placed):
    needs(syscall_engine, "syscall-latency")
    slow = syscall_chaos("slow", action="latency", syscalls=["getrandom", "connect"], delay="100ms")
    placed(slow, cgroups["target"])
    assert syscall_engine.datapath.tracepoint_attached and syscall_engine.datapath.hooks_attached == set()
    inside, outside = elapsed_ms(cgroups["target"], TIMED_CALLS), elapsed_ms(cgroups["outside"], TIMED_CALLS)
    assert all(ms >= 100 for ms in inside), inside
    assert all(ms < 100 for ms in outside), outside
    counted = calls(syscall_engine, slow)
    assert counted[("getrandom", "delayed")] >= 3 and counted[("connect", "delayed")] == 3, counted


KILLED_DOCS = """apiVersion: kfault.dev/v1alpha1
kind: SyscallChaos
metadata: {name: refused-until-killed}
spec: {action: fault, syscalls: [connect], errno: 111}
---
apiVersion: kfault.dev/v1alpha1
kind: SyscallChaos
metadata: {name: slow-until-killed}
spec: {action: latency, syscalls: [getrandom], delay: 100ms}
"""
GETRANDOM_MS = "import os, time; start = time.monotonic(); os.getrandom(16); print((time.monotonic() - start) * 1000)"


@pytest.mark.stock_kernel("BPF LSM hooks, compiled where the node's headers are hidden")
def test_kfault_run_without_the_nodes_headers_then_killed_leaves_nothing(syscall_engine, cgroups, server,
                                                                          tmp_path):
    """`kfault run` where only the image's headers are (headerless.py): a fault and a latency
    rule act on the target; SIGKILLed with a 2 s lease, its hooks, tracepoint and holder go
    with it, and the target connects and draws random bytes at once again."""
    needs(syscall_engine, "syscall-fault")
    needs(syscall_engine, "syscall-latency")
    doc = tmp_path / "until-killed.yaml"
    doc.write_text(KILLED_DOCS)
    runner = headerless.popen([sys.executable, "-m", "kfault_agent.cli", "run", "-f", str(doc),
                               "--target", f"cgroup:{cgroups['target']}", "--lease", "2"],
                              tmp_path / "headers", cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
    try:
        deadline = time.monotonic() + 300      # it may compile first: minutes under the VM's emulation
        while "injecting" not in (line := runner.stdout.readline()):      # after placing both
            assert line and time.monotonic() < deadline, "kfault run did not inject"
        assert curl_statuses(cgroups["target"], server, 1) == [CURL_COULDNT_CONNECT]
        assert elapsed_ms(cgroups["target"], GETRANDOM_MS)[0] >= 100
        runner.kill()
        runner.wait()
        time.sleep(2.5)       # past the lease, were anything left
        assert curl_statuses(cgroups["target"], server, 3) == [0] * 3
        assert elapsed_ms(cgroups["target"], GETRANDOM_MS)[0] < 100
    finally:
        runner.kill()
        runner.wait()
