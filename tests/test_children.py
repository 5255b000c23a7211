"""The agent's helper processes (I/O holders, the thaw guard): each finishes when told, however
many siblings it has. A holder per latency experiment is the field's shape: a node with three
IOChaos experiments has three holders beside the thaw guard."""
import os
import select
import signal
import threading
import time

from kfault_agent.kernel import children


def until_its_pipe_closes(read_fd):
    while os.read(read_fd, 64):
        pass


def finished_within(pid, write_fd, seconds):
    """Whether children.finish(pid, write_fd) returned within `seconds` (else the child is
    killed, so that a failure doesn't leave it behind)."""
    done = threading.Thread(target=children.finish, args=(pid, write_fd), daemon=True)
    done.start()
    done.join(seconds)
    if done.is_alive():
        os.kill(pid, signal.SIGKILL)
        done.join()
    return not done.is_alive() and not os.path.exists(f"/proc/{pid}/status")


def test_the_oldest_child_finishes_while_younger_siblings_live():
    """A younger child inherits the agent's copies of its older siblings' pipes: unless it closes
    them, the oldest never sees its own pipe close, and finishing it (revoking the first of
    several latency experiments) waits forever."""
    spawned = [children.spawn(until_its_pipe_closes, signal.SIGTERM, f"child {n}") for n in range(3)]
    assert finished_within(*spawned[0], 10), "the oldest child did not see its pipe close"
    assert finished_within(*spawned[2], 10)
    assert finished_within(*spawned[1], 10)


def test_a_child_spawned_after_one_finished_finishes_too():
    first = children.spawn(until_its_pipe_closes, signal.SIGTERM, "first")
    assert finished_within(*first, 10)
    second = children.spawn(until_its_pipe_closes, signal.SIGTERM, "second")
    assert finished_within(*second, 10)


def test_a_child_keeps_no_fd_held_back():
    """A BPF link's fd that a helper kept would keep its program attached after the agent
    detached it (closed its own copy), for as long as the helper lives."""
    read_end, write_end = os.pipe()     # stands for a link: it stays "attached" while any copy is open
    held = children.hold_back(lambda: write_end)
    child = children.spawn(until_its_pipe_closes, signal.SIGTERM, "holder")
    try:
        children.close_held_back(held)
        # end of file once no copy is open: the child closes its copy first thing
        assert select.select([read_end], [], [], 10)[0], "the child still holds the fd the agent closed"
        assert os.read(read_end, 1) == b""
    finally:
        os.close(read_end)
        assert finished_within(*child, 10)


def deaf_to_its_pipe(read_fd):
    while True:
        signal.pause()


def test_a_bounded_finish_kills_a_child_that_does_not_finish():
    """A revoke must not wait on a child that can't act (a stressor looping in the page-fault
    handler of a full memory.max): past the bound it is SIGKILLed and reaped."""
    pid, write_fd = children.spawn(deaf_to_its_pipe, signal.SIGTERM, "deaf")
    started = time.monotonic()
    assert children.finish(pid, write_fd, timeout_s=0.5)
    assert 0.5 <= time.monotonic() - started < 5
    assert not os.path.exists(f"/proc/{pid}")
