"""Asynchronous I/O (libaio's io_submit, io_uring) under IOChaos, measured by fio in the target
cgroup: each request is reached as a read or write is, once, or counted as out of reach by why;
never passed silently (docs/design/file-io.md#asynchronous-io)."""
import os
import shutil
import subprocess
import uuid

import pytest

from kfault_agent.engines.counts import UNREACHED
from kfault_agent.kernel import topology
from kfault_api import spec
from tests.victims import fio_in_cgroup, remove_cgroup

pytestmark = pytest.mark.skipif(not shutil.which("fio"), reason="no fio (scripts/setup-host test installs it)")

DELAY_MS = 20
IOS = 20
DEPTH = 4
ENGINES = ("psync", "libaio", "io_uring")


def io_chaos(**fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "IOChaos", "metadata": {"name": "async"},
                                  "spec": {"volumePath": "/", **fields}})


@pytest.fixture
def block_fs(tmp_path):
    """A directory on ext4 over a loop device, with a 1 MiB data.db: a file system on a block
    device, as a database's is, where io_uring issues requests inline (the VM tier's /tmp is
    an overlay on 9p, which has no FMODE_NOWAIT: every io_uring request would be punted)."""
    image, mount = tmp_path / "fs.img", tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["truncate", "-s", "16M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
    try:
        (mount / "data.db").write_bytes(os.urandom(1 << 20))
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.fixture
def target():
    path = os.path.join(topology.cgroup2_mount(), "kft-async-" + uuid.uuid4().hex[:6])
    os.mkdir(path)
    yield path
    remove_cgroup(path)


def counted(io_engine, method):
    calls, _ = io_engine.counters(io_engine.active()[0])
    return calls[method]


def run(io_engine, target, block_fs, method, engine, rw, direct, extra=()):
    """fio's job record, and the rule's counts for the method it added."""
    before = counted(io_engine, method)
    job = fio_in_cgroup(target, block_fs / "data.db", engine, rw, direct, IOS, DEPTH, extra)
    after = counted(io_engine, method)
    return job, {outcome: after[outcome] - before[outcome] for outcome in after}


def requests(job, method):
    return job["read" if method == "read" else "write"]


def check_delayed_once(job, added, method, what):
    """Every request delayed, each once: fio's mean latency at least the delay, and as many
    delayed calls as fio made requests (a few more at most: fio may submit a batch past its
    count), none out of reach."""
    done = requests(job, method)
    assert job["error"] == 0, (what, job["error"])
    assert done["lat_ns"]["mean"] >= DELAY_MS * 1e6, (what, done["lat_ns"]["mean"] / 1e6, added)
    assert done["total_ios"] <= added["delayed"] <= done["total_ios"] + DEPTH, (what, done["total_ios"], added)
    assert not any(added[outcome] for outcome in UNREACHED), (what, added)


@pytest.mark.stock_kernel("libaio and io_uring held at the file hooks, each request once")
@pytest.mark.kernel("io-tracepoints", "ptrace", "io-uring")
@pytest.mark.parametrize("method, rw", [("read", "randread"), ("write", "randwrite")])
def test_latency_holds_every_engine_once_per_request(io_engine, target, block_fs, method, rw):
    io_engine.apply(io_chaos(action="latency", delay=f"{DELAY_MS}ms", path=f"{block_fs}/*.db", methods=[method]),
                    topology.resolve_cgroup_target(f"cgroup:{target}"), lease_s=600)
    for engine in ENGINES:
        for direct in (0, 1):
            job, added = run(io_engine, target, block_fs, method, engine, rw, direct)
            check_delayed_once(job, added, method, f"{engine} {rw} direct={direct}")


@pytest.mark.stock_kernel("an io_uring request a worker issues first holds its submitter")
@pytest.mark.kernel("io-tracepoints", "ptrace", "io-uring")
def test_latency_holds_the_submitter_of_requests_io_wq_issues(io_engine, target, block_fs):
    """IOSQE_ASYNC (fio's --force_async): every request is issued by an io-wq worker, which
    the holder can't hold; the thread that submitted it is held instead, once per request."""
    io_engine.apply(io_chaos(action="latency", delay=f"{DELAY_MS}ms", path=f"{block_fs}/*.db", methods=["read"]),
                    topology.resolve_cgroup_target(f"cgroup:{target}"), lease_s=600)
    for direct in (0, 1):
        job, added = run(io_engine, target, block_fs, "read", "io_uring", "randread", direct, ["--force_async=1"])
        check_delayed_once(job, added, "read", f"io_uring --force_async=1 direct={direct}")


@pytest.mark.kernel("io-tracepoints", "ptrace", "io-uring")
def test_an_sqpoll_ring_is_counted_out_of_reach(io_engine, target, block_fs):
    """An SQPOLL ring's requests are submitted by its kernel thread, not by any thread the
    holder can hold (and fio registers its files for it): not delayed, and counted as out of
    reach by why, never as passed."""
    io_engine.apply(io_chaos(action="latency", delay=f"{DELAY_MS}ms", path=f"{block_fs}/*.db", methods=["read"]),
                    topology.resolve_cgroup_target(f"cgroup:{target}"), lease_s=600)
    job, added = run(io_engine, target, block_fs, "read", "io_uring", "randread", 1, ["--sqthread_poll=1"])
    done = requests(job, "read")
    unreached = sum(added[outcome] for outcome in UNREACHED)
    assert job["error"] == 0 and added["delayed"] == 0 and added["passed"] == 0, added
    assert done["total_ios"] <= unreached <= done["total_ios"] + DEPTH, (done["total_ios"], added)


@pytest.mark.kernel("io-tracepoints", "io-errno", "io-uring")
@pytest.mark.parametrize("method, rw", [("read", "randread"), ("write", "randwrite")])
def test_errno_fails_every_engine(io_engine, target, block_fs, method, rw):
    before = (block_fs / "data.db").read_bytes()
    io_engine.apply(io_chaos(action="fault", errno=5, path=f"{block_fs}/*.db", methods=[method]),
                    topology.resolve_cgroup_target(f"cgroup:{target}"), lease_s=600)
    for engine in ENGINES:
        for direct in (0, 1):
            job, added = run(io_engine, target, block_fs, method, engine, rw, direct)
            assert job["error"] == 5, (engine, direct, job["error"], added)
            assert added["failed"] >= 1 and not any(added[outcome] for outcome in UNREACHED), (engine, direct, added)
    assert (block_fs / "data.db").read_bytes() == before, "a failed write wrote"
