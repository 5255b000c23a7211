"""Chaos Mesh's IOChaos examples (tests/chaos_mesh/io.yaml: io-delay, io-errno, io-attr with
only apiVersion changed) run on an etcd-shaped victim, as on a real node.

The examples name etcd's volume as /var/run/etcd. In an image where /var/run is a link to /run
(Debian's, etcd's base images), the runtime mounts the volume at /run/etcd, and that is the name
every kernel hook reports: bpf_d_path, /proc/PID/fd, the working directory. The victim here has
that view in its own mount namespace (a /var with run -> /run, a /run of its own), holds its WAL
open from before the experiment by a relative path, as etcd does, and reads through both names.
"""
import os
import sys
import uuid

import pytest

from kfault_agent.kernel import topology
from kfault_api import spec
from tests.victims import CommandVictim, remove_cgroup

CHAOS_MESH_DOCS = os.path.join(os.path.dirname(__file__), "..", "chaos_mesh", "io.yaml")
EIO = 5

# The victim's root as an etcd container's: /var/run -> /run, the volume on /run/etcd.
MOUNTS = ("mount -t tmpfs kfault-var /var && ln -s /run /var/run && mount -t tmpfs kfault-run /run && "
          "mkdir -p /run/etcd/member/wal /run/etcd/member/snap && "
          "echo kfault > /run/etcd/member/wal/0.wal && echo kfault > /run/etcd/member/snap/db && ")

# Joins the cgroup, opens its files before the experiment (the WAL relative to its working
# directory /var/run/etcd; the snapshot by its absolute name through the link), prints "ready",
# then answers a command a line with one JSON line:
#   read N      N x pread 1 byte of each early fd: [[errno or 0, ms], ...] per file
#   stat N      N x os.stat("/var/run/etcd/member/snap/db"): the permission bits
VICTIM = r"""
import json, os, sys, time
with open(os.path.join(sys.argv[1], "cgroup.procs"), "w") as procs:
    procs.write(str(os.getpid()))
os.chdir("/var/run/etcd")
files = [os.open("member/wal/0.wal", os.O_RDONLY), os.open("/var/run/etcd/member/snap/db", os.O_RDONLY)]
def timed_read(fd):
    start = time.perf_counter()
    try:
        os.pread(fd, 1, 0)
        error = 0
    except OSError as err:
        error = err.errno
    return [error, (time.perf_counter() - start) * 1000]
print("ready", flush=True)
for line in sys.stdin:
    command, count = line.split()
    if command == "read":
        answer = [[timed_read(fd) for _ in range(int(count))] for fd in files]
    elif command == "stat":
        answer = [os.stat("/var/run/etcd/member/snap/db").st_mode & 0o7777 for _ in range(int(count))]
    print(json.dumps(answer), flush=True)
"""


def chaos_mesh_doc(name):
    return next(spec.parse_experiment(doc) for doc in spec.load_documents(CHAOS_MESH_DOCS)
                if doc["metadata"]["name"] == name)


class Etcd(CommandVictim):
    """The victim in its cgroup and mount namespace."""

    def __init__(self, cgroup):
        super().__init__(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                          MOUNTS + 'exec "$0" -c "$1" "$2"', sys.executable, VICTIM, cgroup])


@pytest.fixture
def etcd():
    cgroup = os.path.join(topology.cgroup2_mount(), f"kft-etcd-{uuid.uuid4().hex[:8]}")
    os.mkdir(cgroup)
    victim = None
    try:
        victim = Etcd(cgroup)
        yield victim, topology.resolve_cgroup_target(f"cgroup:{cgroup}")
    finally:
        if victim:
            victim.close()
        remove_cgroup(cgroup)


def between(share, low, high):
    # Bounds on a share drawn at random are about 4 standard deviations wide: one failure in a
    # few hundred runs would be a flake in CI.
    return low <= share <= high


@pytest.mark.stock_kernel("the example through the file hooks")
@pytest.mark.kernel("io-tracepoints", "ptrace")
def test_chaos_mesh_io_delay_example_runs(etcd, io_engine):
    victim, target = etcd
    experiment = chaos_mesh_doc("etcd-io-latency")        # 100 ms on 50% of every call
    io_engine.apply(experiment, target)
    for name, reads in zip(("the WAL, opened relative to /var/run/etcd", "the snapshot, opened by /var/run/etcd/..."),
                           victim.ask("read 40")):
        assert all(error == 0 for error, _ in reads), (name, reads)
        delayed = [ms for _, ms in reads if ms >= 100]
        assert between(len(delayed) / len(reads), 0.20, 0.80), (name, [round(ms) for _, ms in reads])
    calls, delay_ns = io_engine.counters(io_engine.active()[0])
    assert calls["read"]["delayed"] >= 20 and delay_ns >= 20 * 100_000_000, calls


@pytest.mark.kernel("io-tracepoints", "io-errno")
def test_chaos_mesh_io_errno_example_runs(etcd, io_engine):
    victim, target = etcd
    io_engine.apply(chaos_mesh_doc("etcd-io-fault"), target)    # EIO on 50% of every call
    for name, reads in zip(("the WAL, opened relative to /var/run/etcd", "the snapshot, opened by /var/run/etcd/..."),
                           victim.ask("read 100")):
        errors = [error for error, _ in reads]
        assert set(errors) <= {0, EIO}, (name, errors)
        assert between(errors.count(EIO) / len(errors), 0.30, 0.70), (name, errors)
    io_engine.revoke_all()
    assert all(error == 0 for reads in victim.ask("read 20") for error, _ in reads), "revoking left failures"


@pytest.mark.kernel("io-tracepoints", "io-write-user")
def test_chaos_mesh_io_attr_example_runs(etcd, io_engine):
    victim, target = etcd
    real = victim.ask("stat 1")[0]
    io_engine.apply(chaos_mesh_doc("etcd-odd-permissions"), target)     # perm 72 (0o110) on 10%
    perms = victim.ask("stat 300")
    assert set(perms) <= {real, 0o110}, perms
    assert between(perms.count(0o110) / len(perms), 0.04, 0.18), perms
    io_engine.revoke_all()
    assert victim.ask("stat 20") == [real] * 20
