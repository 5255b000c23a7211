"""Stop means stop: SIGINT or SIGTERM at any moment of `kfault run`'s or `kfault agent`'s start
ends the process, with nothing left in place. Each moment is found by watching the process
from outside (what it has mapped, the BPF programs it holds, the target's tc state), as a
user's Ctrl-C would land, not by sleeping."""
import os
import signal
import subprocess
import sys
import time

import pytest

from kfault_api import spec
from tests.victims import children_of

pytestmark = pytest.mark.kernel("tc-bpf", "clsact")

SIGNALS = [signal.SIGINT, signal.SIGTERM]
BPF_PROG_TYPE_SCHED_CLS = 3
STARTED_S = 300        # a start's compile takes ~3 s here, up to ~100 s under TCG
STOPPED_S = 3.0        # from the signal to the exit: not after the compile (the old way: 5-11 s here)


def compiling(pid):
    """A child of the process runs bcc (kernel/compile.py): the start is compiling. The test
    gives such a start an empty compile cache of its own, so that it compiles."""
    for child in children_of(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as handle:
                if b"kfault_agent.kernel.compile" in handle.read():
                    return True
        except OSError:
            pass
    return False


def start_env(moment, tmp_path):
    """The environment of a start: an empty compile cache where the moment is the compile."""
    if moment == "compiling":
        return {**os.environ, "KFAULT_BPF_CACHE": str(tmp_path / "bpf-cache")}
    return dict(os.environ)


def holds_tc_program(pid):
    """The process holds a loaded tc program (the datapath's first load_func returned)."""
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as handle:
                if f"prog_type:\t{BPF_PROG_TYPE_SCHED_CLS}\n" in handle.read():
                    return True
        except OSError:
            pass
    return False


def wait_for(proc, moment):
    """Poll until moment(pid) holds; the moment must come before the process ends."""
    deadline = time.monotonic() + STARTED_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the process ended before the moment {moment.__name__}: {proc.stdout.read()}")
        try:
            if moment(proc.pid):
                return True
        except OSError:
            pass
        time.sleep(0.002)
    raise AssertionError(f"the moment {moment.__name__} never came in {STARTED_S} s")


def signal_at(proc, moment, sig):
    """Send `sig` at `moment` (None: at once); (the process's output once it has exited, the
    seconds from the signal to its exit)."""
    if moment is None or wait_for(proc, moment):
        proc.send_signal(sig)
    sent = time.monotonic()
    try:
        out, _ = proc.communicate(timeout=STARTED_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"still running {STARTED_S} s after {sig.name}: {out}") from None
    return out, time.monotonic() - sent


def no_loss(lab, address):
    sent, received, output = lab.ping_flood("a", address, 200)
    assert received == sent, output


def attached(lab, before):
    def tc_changed(_pid):
        return lab.tc_state() != before
    return tc_changed


RUN_MOMENTS = {"spawned": None, "compiling": compiling, "loaded": holds_tc_program, "attaching": "attaching"}


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("moment", list(RUN_MOMENTS))
def test_a_run_stopped_while_starting_leaves_nothing(lab, tmp_path, moment, sig):
    _, b_ip = lab.link("a", "b", "10.250.1")
    before = lab.tc_state()
    doc = tmp_path / "loss.yaml"
    doc.write_text(f"apiVersion: {spec.API_VERSION}\nkind: NetworkChaos\nmetadata: {{name: all}}\n"
                   "spec: {action: loss, loss: {loss: '100'}, direction: both}\n")
    runner = subprocess.Popen([sys.executable, "-m", "kfault_agent.cli", "run", "-f", str(doc),
                               "--target", f"netns:{lab.ns('a')}", "--duration", "60s"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=start_env(moment, tmp_path))
    try:
        watch = attached(lab, before) if RUN_MOMENTS[moment] == "attaching" else RUN_MOMENTS[moment]
        out, took = signal_at(runner, watch, sig)
    finally:
        runner.kill()
        runner.wait()
    if moment == "spawned":     # perhaps before its handlers: the signal's default, or a stop
        assert runner.returncode in (0, -sig), out
    else:
        assert runner.returncode == 0, out
        assert "stopped before injecting" in out or "all faults removed" in out, out
    assert took < STOPPED_S, f"{took:.1f} s from {sig.name} to the exit: {out}"
    assert lab.tc_state() == before
    no_loss(lab, b_ip)


AGENT_MOMENTS = {"spawned": None, "compiling": compiling, "loaded": holds_tc_program}


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("moment", list(AGENT_MOMENTS))
def test_an_agent_stopped_while_starting_exits(moment, sig, tmp_path):
    (tmp_path / "state").mkdir()
    agent = subprocess.Popen([sys.executable, "-m", "kfault_agent.cli", "agent", "--insecure",
                              "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env={**start_env(moment, tmp_path / "cache"),
                                             "KFAULT_STATE_DIR": str(tmp_path / "state")})
    children = []
    try:
        if AGENT_MOMENTS[moment] is not None:
            assert wait_for(agent, AGENT_MOMENTS[moment])
        children = children_of(agent.pid)
        out, took = signal_at(agent, None, sig)
    finally:
        agent.kill()
        agent.wait()
    if moment == "spawned":
        assert agent.returncode in (0, -sig), out
    else:
        assert agent.returncode == 0, out
        assert "stopped while starting" in out, out
    assert "serving" not in out
    assert took < STOPPED_S, f"{took:.1f} s from {sig.name} to the exit: {out}"
    for child in children:      # its helpers (the thaw guard) went with it
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{child}"), f"child {child} outlived the agent"
    assert not os.listdir(tmp_path / "state"), "a record of frozen cgroups was left"
