"""What ends `kfault run` and `kfault agent`: SIGINT or SIGTERM, taken without a lock."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from kfault_agent.stop import Stopped, StopSignal
from tests.victims import children_of


@pytest.fixture
def handlers():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_wait_of_the_thread_it_interrupts(handlers, sig):
    stop = StopSignal()
    assert stop.wait(0.01) is False
    threading.Timer(0.05, os.kill, (os.getpid(), sig)).start()
    assert stop.wait(30) is True
    assert stop.wait(0) is True, "it stays set"
    stop.close()


def test_a_signal_that_came_before_the_wait_ends_it(handlers):
    """Already delivered when the wait begins: the interpreter's handler wrote it down."""
    for turn in range(300):
        stop = StopSignal()
        sender = threading.Timer(turn % 30 * 0.000002, os.kill, (os.getpid(), signal.SIGTERM))
        sender.start()
        sender.join()
        assert stop.wait(10) is True, turn
        stop.close()


def test_other_signals_do_not_stop_it(handlers):
    saved = signal.signal(signal.SIGUSR2, lambda *_: None)
    try:
        stop = StopSignal()
        os.kill(os.getpid(), signal.SIGUSR2)
        assert stop.wait(0.05) is False
        stop.close()
    finally:
        signal.signal(signal.SIGUSR2, saved)


def test_check_raises_once_a_signal_came(handlers):
    stop = StopSignal()
    stop.check()
    os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(Stopped):
        stop.check()
    stop.close()


STEP = """
import subprocess, sys
from kfault_agent.stop import StopSignal
stop = StopSignal()
helper = subprocess.Popen(["sleep", "60"])     # started before the step: spared
print(helper.pid, flush=True)
with stop.ending_children():
    subprocess.run(["sleep", "60"])           # the step's own child, as a compiler would be
print("stopped" if stop.wait(0) else "not stopped", helper.poll(), flush=True)
helper.kill()
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_ends_the_child_a_step_waits_on_and_spares_older_helpers(sig):
    step = subprocess.Popen([sys.executable, "-c", STEP], stdout=subprocess.PIPE, text=True)
    try:
        int(step.stdout.readline())      # the helper's pid: the step has started
        deadline = time.monotonic() + 30
        while len(children_of(step.pid)) < 2:
            assert time.monotonic() < deadline, "the step's child never started"
            time.sleep(0.01)
        started = time.monotonic()
        step.send_signal(sig)
        out, _ = step.communicate(timeout=30)
        assert time.monotonic() - started < 10, "the step waited for its child to end by itself"
        assert out.split() == ["stopped", "None"], out   # None: the helper started before the step lives
    finally:
        step.kill()
        step.wait()
