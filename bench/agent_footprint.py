"""The agent's footprint: time from start to ready and memory, on a first start and a restart.

`kfault agent` is started twice with an empty compile cache of its own (KFAULT_BPF_CACHE): the
first start compiles (bcc, in a short-lived child process), the restart loads what the first
cached. Ready is the agent's "serving" line, which it prints once its API serves with every
engine loaded (it names them). Memory is PSS (/proc/PID/smaps_rollup: shared pages counted
once) summed over the agent and every process below it, sampled every 50 ms: the peak over
the start, and steady, 5 s after ready with no experiment. Run as root: python bench/agent_footprint.py
"""
import argparse
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))   # the tests' helpers

from tests.victims import children_of  # noqa: E402

ENGINES = ("NetworkChaos", "IOChaos", "PodChaos")
SAMPLE_S = 0.05


def descendants(pid):
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children_of(current)
    return found


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pss_mib(pid):
    return sum(pss_kib(p) for p in descendants(pid)) / 1024


def start(cache, steady_s):
    """(seconds to ready, peak MiB, steady MiB, processes at steady, the serving line)."""
    env = {**os.environ, "KFAULT_BPF_CACHE": cache, "KFAULT_STATE_DIR": tempfile.mkdtemp(prefix="kfault-bench-")}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "kfault_agent.cli", "agent", "--insecure", "--listen",
                             "127.0.0.1:0", "--node", "bench"], stdout=subprocess.PIPE, text=True, env=env)
    peak, line = 0.0, ""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while "serving" not in line:
            if selector.select(SAMPLE_S):
                line = proc.stdout.readline()
                if not line:
                    raise SystemExit(f"the agent exited ({proc.wait()}) before serving")
            peak = max(peak, tree_pss_mib(proc.pid))
    ready_s = time.monotonic() - started
    until = time.monotonic() + steady_s
    while time.monotonic() < until:
        peak = max(peak, tree_pss_mib(proc.pid))
        time.sleep(SAMPLE_S)
    steady, processes = tree_pss_mib(proc.pid), len(descendants(proc.pid))
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    shutil.rmtree(env["KFAULT_STATE_DIR"], ignore_errors=True)
    missing = [engine for engine in ENGINES if engine not in line]
    if missing:
        raise SystemExit(f"the agent served without {', '.join(missing)}: {line.strip()}")
    return ready_s, peak, steady, processes, line.strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steady", type=float, default=5.0, help="seconds after ready before steady memory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the agent loads BPF programs")
    cache = tempfile.mkdtemp(prefix="kfault-bench-cache-")
    try:
        rows = [("first start (compiles)", *start(cache, args.steady)),
                ("restart (cached)", *start(cache, args.steady))]
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(f"kfault agent on {os.uname().release}: PSS summed over its processes "
          "(goals: steady <= 100 MiB, restart ready <= 1 s)")
    print(f"  {'':<24}{'ready':>9}{'peak PSS':>12}{'steady PSS':>13}{'processes':>11}")
    for name, ready_s, peak, steady, processes, _ in rows:
        print(f"  {name:<24}{ready_s:>8.2f}s{peak:>8.0f} MiB{steady:>9.0f} MiB{processes:>11}")
    print(f"  {rows[-1][-1]}")


if __name__ == "__main__":
    main()
