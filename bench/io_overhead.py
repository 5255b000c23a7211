"""File I/O benchmark: what kfault's syscall-boundary faults cost the calls they don't touch.

A tight read loop (`dd bs=1`: one read(2) and one write(2) to /dev/null per byte) in a cgroup:
  (a) no kfault rule armed (tracepoints detached)
  (b) kfault armed (a latency rule) on another cgroup
  (c) kfault armed on this cgroup, on a path this loop does not read
Nanoseconds per byte copied, median of interleaved rounds, each as a ratio to (a).
Run as root: make bench-io (the host kernel has what it needs).
"""
import os
import statistics
import subprocess
import tempfile
import time
import uuid

from kfault_agent.engines import iofault
from kfault_agent.kernel import loader, topology
from kfault_api import spec

ROUNDS = 5
BYTES = 400_000


def io_chaos(path):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "IOChaos", "metadata": {"name": "bench"},
                                  "spec": {"action": "latency", "delay": "1s", "volumePath": "/", "path": path}})


def read_loop_ns(cgroup, path):
    """ns per byte of `dd bs=1` over `path`, run inside `cgroup`."""
    start = time.perf_counter_ns()
    subprocess.run(["sh", "-c", f"echo $$ > {cgroup}/cgroup.procs && exec dd if={path} of=/dev/null bs=1 "
                    f"count={BYTES} status=none"], check=True)
    return (time.perf_counter_ns() - start) / BYTES


def main():
    root = topology.cgroup2_mount()
    prefix = os.path.join(root, "kft-bench-" + uuid.uuid4().hex[:6])
    loop_cgroup, other_cgroup = prefix + "-loop", prefix + "-other"
    for path in (loop_cgroup, other_cgroup):
        os.mkdir(path)
    datapath, caps = loader.probe_io()
    engine = iofault.IOFaultEngine(datapath, caps)
    results = {"a": [], "b": [], "c": []}
    try:
        with tempfile.NamedTemporaryFile(dir="/tmp") as data:
            data.write(os.urandom(BYTES))
            data.flush()
            for _ in range(ROUNDS):
                results["a"].append(read_loop_ns(loop_cgroup, data.name))
                engine.apply(io_chaos("/nowhere/**"), topology.resolve_cgroup_target(f"cgroup:{other_cgroup}"))
                results["b"].append(read_loop_ns(loop_cgroup, data.name))
                engine.revoke_all()
                engine.apply(io_chaos("/nowhere/**"), topology.resolve_cgroup_target(f"cgroup:{loop_cgroup}"))
                results["c"].append(read_loop_ns(loop_cgroup, data.name))
                engine.revoke_all()
    finally:
        engine.revoke_all()
        datapath.close()
        for path in (loop_cgroup, other_cgroup):
            os.rmdir(path)
    base = statistics.median(results["a"])
    labels = {"a": "no kfault rule armed", "b": "armed on another cgroup", "c": "armed here, non-matching path"}
    print(f"read loop (dd bs=1, {BYTES} bytes: one read + one write each), {ROUNDS} rounds (median), "
          "ratio to (a):")
    for key, label in labels.items():
        value = statistics.median(results[key])
        print(f"   ({key}) {label:<32} {value:7.1f} ns/byte   {value / base:5.3f}")


if __name__ == "__main__":
    main()
