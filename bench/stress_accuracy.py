"""StressChaos's accuracy: the CPU its stressors hold against what was asked, and the memory
they hold and the CPU that costs, over a long window, as a user's monitoring would see them
(the stressors' cgroup's cpu.stat against wall time, /proc).

Three containers side by side (kfault_lab.containers): cpu.max 50000/100000 with one worker at
load 50 (asked: 0.25 CPU), no limit with two workers at load 50 (asked: 1 CPU), memory.max 1 GiB
holding 256MB (256 x 10^6 bytes). After a warm-up, the window is cut in rounds: each round's
figure, and the whole window's. Needs cgroup v2's cpu and memory controllers (the VM tier:
scripts/vm-run .venv/bin/python bench/stress_accuracy.py). Run as root."""
import argparse
import os
import sys
import time

from kfault_agent.engines import stressfault
from kfault_agent.kernel import stress, topology
from kfault_api import spec
from kfault_lab.containers import Containers, cpu_held, task_cpu_s

CASES = (("cpu.max 50000/100000, workers 1, load 50", "50000 100000", None, {"cpu": {"workers": 1, "load": 50}}),
         ("no limit, workers 2, load 50", None, None, {"cpu": {"workers": 2, "load": 50}}),
         ("memory.max 1GiB, 256MB", None, 1 << 30, {"memory": {"workers": 1, "size": "256MB"}}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warm-up", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the window")
    parser.add_argument("--round-seconds", type=float, default=30.0, help="seconds per round")
    args = parser.parse_args()
    if stress.missing_controllers():
        sys.exit("needs cgroup v2's cpu and memory controllers (run it in the VM: scripts/vm-run)")
    containers, engine = Containers(), stressfault.StressEngine(lease_s=3600)
    try:
        placed = []
        for name, cpu_max, memory_max, stressors in CASES:
            path, _ = containers.make(cpu_max=cpu_max, memory_max=memory_max)
            doc = {"apiVersion": spec.API_VERSION, "kind": "StressChaos", "metadata": {"name": f"case{len(placed)}"},
                   "spec": {"stressors": stressors}}
            placed.append((name, engine.apply(spec.parse_experiment(doc), topology.CgroupTarget(name, path))))
        memory = placed[2][1]
        deadline = time.monotonic() + 120
        while held(engine) < 0.98 * memory.memory_bytes and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(args.warm_up)
        (worker,) = stress.stressors(memory.cgroup)["memory"]
        cgroups = [p.cgroup for _, p in placed[:2]]
        print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs; rounds of {args.round_seconds:g} s "
              f"after {args.warm_up:g} s of warm-up")
        totals, cpu_before, started = dict.fromkeys(cgroups, 0.0), task_cpu_s(worker), time.monotonic()
        for round_ in range(args.rounds):
            got = cpu_held(cgroups, args.round_seconds)
            for path in cgroups:
                totals[path] += got[path] / args.rounds
            print(f"  round {round_ + 1}: " + "; ".join(f"{got[p.cgroup]:.4f} CPU ({p.cpus:g} asked)"
                                                        for _, p in placed[:2]) + f"; memory {held(engine)} bytes")
        worker_cpu = (task_cpu_s(worker) - cpu_before) / (time.monotonic() - started)
        for name, active in placed[:2]:
            print(f"{name}: {totals[active.cgroup]:.4f} CPU, {100 * (totals[active.cgroup] - active.cpus):+.2f} "
                  f"points from {active.cpus:g}")
        print(f"{placed[2][0]}: {held(engine)} bytes resident ({held(engine) / memory.memory_bytes - 1:+.3%}), "
              f"its worker using {worker_cpu:.4f} CPU once held")
    finally:
        engine.close()
        containers.close()


def held(engine):
    return sum(p.memory_bytes for p in engine.counts().placements)


if __name__ == "__main__":
    main()
