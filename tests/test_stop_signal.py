"""What ends `kfault run` and `kfault agent`: SIGINT or SIGTERM, taken without a lock."""
import os
import signal
import threading

import pytest

from kfault_agent import node


@pytest.fixture
def handlers():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_wait_of_the_thread_it_interrupts(handlers, sig):
    stop = node.StopSignal()
    assert stop.wait(0.01) is False
    threading.Timer(0.05, os.kill, (os.getpid(), sig)).start()
    assert stop.wait(30) is True
    assert stop.wait(0) is True, "it stays set"
    stop.close()


def test_many_signals_while_the_main_thread_waits_in_short_turns(handlers):
    """As `kfault run` waits --interval at a time: a signal at any point of a turn ends it."""
    for _ in range(200):
        stop = node.StopSignal()
        threading.Timer(0.0005, os.kill, (os.getpid(), signal.SIGTERM)).start()
        turns = 0
        while not stop.wait(0.0001):
            turns += 1
            assert turns < 100_000
        stop.close()
