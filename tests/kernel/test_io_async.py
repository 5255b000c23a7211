"""Asynchronous I/O (libaio's io_submit, io_uring) under IOChaos, measured by fio in the target
cgroup: each request is reached as a read or write is, once, or counted as out of reach by why;
never passed silently (docs/design/file-io.md#asynchronous-io)."""
import os
import shutil
import subprocess
import time
import uuid

import pytest

from kfault_agent.engines.counts import UNREACHED
from kfault_agent.kernel import topology
from kfault_agent.kernel.holder import cgroup_processes, is_io_thread
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
    """A directory with a 1 MiB data.db on ext4 over a loop device: a file system on a block
    device, as a database's is, where io_uring issues requests inline (the VM tier's /tmp is an
    overlay on 9p, which has no FMODE_NOWAIT on 6.1: every request would go to io-wq; the
    image is on /dev/shm, as the loop driver refuses that overlay as a backing file). Where no
    loop device can be had, tmpfs, where 6.1 punts every io_uring request to io-wq (which the
    tests reach too, holding the submitter)."""
    image, mount = f"/dev/shm/kfault-async-{uuid.uuid4().hex[:6]}.img", tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["modprobe", "-q", "loop"], check=False)
    subprocess.run(["truncate", "-s", "16M", image], check=True)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", image], capture_output=True, check=False).returncode == 0
    mounted = made and subprocess.run(["mount", "-o", "loop", image, str(mount)], capture_output=True,
                                      text=True, check=False)
    if not mounted or mounted.returncode:
        print(f"block_fs: no loop device ({mounted.stderr.strip() if mounted else 'mkfs failed'}): tmpfs")
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount)], check=True)
    try:
        (mount / "data.db").write_bytes(os.urandom(1 << 20))
        yield mount
    finally:
        # a ring's teardown (an SQPOLL thread's, io-wq's) lets go of its files a moment after fio exits
        deadline = time.monotonic() + 15
        while subprocess.run(["umount", str(mount)], capture_output=True, check=False).returncode:
            if time.monotonic() > deadline:
                subprocess.run(["umount", "-l", str(mount)], check=True)
                break
            time.sleep(0.1)
        os.unlink(image)


@pytest.fixture
def target():
    path = os.path.join(topology.cgroup2_mount(), "kft-async-" + uuid.uuid4().hex[:6])
    os.mkdir(path)
    yield path
    with open(os.path.join(path, "cgroup.kill"), "w", encoding="ascii") as kill:   # fio's job processes too
        kill.write("1")
    remove_cgroup(path)


def counted(io_engine, method):
    calls, _ = io_engine.counters(io_engine.active()[0])
    return calls[method]


# io_uring's fio waits this long before its job starts, so that the holder has taken fio
# (RESCAN_S) and follows its job process from its fork: a process unknown to the holder is
# stopped by BPF (SIGSTOP) at its first delayed call, and on 6.1 that stop makes io-wq workers
# quit, failing what they were issuing with ECANCELED (docs/design/file-io.md).
IO_URING_START_DELAY = "--startdelay=2"


def run(io_engine, target, block_fs, method, engine, rw, direct, extra=()):
    """fio's job record, and the rule's counts for the method it added."""
    before = counted(io_engine, method)
    if engine == "io_uring":
        extra = [*extra, IO_URING_START_DELAY]
    job = fio_in_cgroup(target, block_fs / "data.db", engine, rw, direct, IOS, DEPTH, extra)
    after = counted(io_engine, method)
    added = {outcome: after[outcome] - before[outcome] for outcome in after}
    done = requests(job, method)
    print(f"fio {engine} {rw} direct={direct} {' '.join(extra)}: error {job['error']}, {done['total_ios']} requests, "
          f"mean latency {done['lat_ns']['mean'] / 1e6:.2f} ms; {added}")      # the figures, in the tier's log
    return job, added


def requests(job, method):
    return job["read" if method == "read" else "write"]


def check_delayed_once(job, added, method, what):
    """Every request delayed, each once: fio's mean latency at least the delay, and as many
    delayed calls as fio made requests (a few more at most: fio may submit a batch past its
    count), none out of reach. No request failed: not with ECANCELED either, which a hold
    signal pending while io_uring forks an io-wq worker in the submitter would give on 6.1
    (the signal is sent as io_uring_enter returns, docs/design/file-io.md)."""
    done = requests(job, method)
    assert job["error"] == 0, (what, job["error"])
    assert done["total_ios"] <= added["delayed"] <= done["total_ios"] + DEPTH, (what, done["total_ios"], added)
    assert not any(added[outcome] for outcome in UNREACHED), (what, added)
    assert done["lat_ns"]["mean"] >= DELAY_MS * 1e6, (what, done["lat_ns"]["mean"] / 1e6, added)


@pytest.mark.stock_kernel("libaio and io_uring held at the file hooks, each request once")
@pytest.mark.kernel("io-tracepoints", "ptrace", "io-uring")
@pytest.mark.parametrize("method, rw", [("read", "randread"), ("write", "randwrite")])
def test_latency_holds_every_engine_once_per_request(io_engine, target, block_fs, method, rw):
    """Buffered and direct: an io_uring request issued inline, punted after it, or (6.1's ext4
    punts every buffered write before trying it) first issued by an io-wq worker, each held
    once in its submitter."""
    io_engine.apply(io_chaos(action="latency", delay=f"{DELAY_MS}ms", path=f"{block_fs}/*.db", methods=[method]),
                    topology.resolve_cgroup_target(f"cgroup:{target}"), lease_s=600)
    for engine in ENGINES:
        for direct in (0, 1):
            job, added = run(io_engine, target, block_fs, method, engine, rw, direct)
            check_delayed_once(job, added, method, f"{engine} {rw} direct={direct}")


@pytest.mark.stock_kernel("an io_uring request a worker issues first, decided at its submission by its file")
@pytest.mark.kernel("io-tracepoints", "ptrace", "io-uring")
@pytest.mark.parametrize("method, rw", [("read", "randread"), ("write", "randwrite")])
def test_latency_on_requests_io_wq_issues_first(io_engine, target, block_fs, method, rw):
    """IOSQE_ASYNC (fio's --force_async): every request is first issued by an io-wq worker,
    which the holder can't hold. Each is decided as it is submitted (with the file hooks, by
    its struct file, found in the submitter's fd table) and its submitter held."""
    io_engine.apply(io_chaos(action="latency", delay=f"{DELAY_MS}ms", path=f"{block_fs}/*.db", methods=[method]),
                    topology.resolve_cgroup_target(f"cgroup:{target}"), lease_s=600)
    for direct in (0, 1):
        job, added = run(io_engine, target, block_fs, method, "io_uring", rw, direct, ["--force_async=1"])
        check_delayed_once(job, added, method, f"io_uring {rw} --force_async=1 direct={direct}")


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
    """Every engine, and io_uring's requests an io-wq worker issues first (--force_async):
    decided at submission, failed by the worker's file hook."""
    before = (block_fs / "data.db").read_bytes()
    io_engine.apply(io_chaos(action="fault", errno=5, path=f"{block_fs}/*.db", methods=[method]),
                    topology.resolve_cgroup_target(f"cgroup:{target}"), lease_s=600)
    runs = [(engine, direct, ()) for engine in ENGINES for direct in (0, 1)]
    runs += [("io_uring", direct, ("--force_async=1",)) for direct in (0, 1)]
    for engine, direct, extra in runs:
        job, added = run(io_engine, target, block_fs, method, engine, rw, direct, extra)
        assert job["error"] == 5, (engine, direct, extra, job["error"], added)
        assert added["failed"] >= 1 and not any(added[outcome] for outcome in UNREACHED), (engine, extra, added)
    assert (block_fs / "data.db").read_bytes() == before, "a failed write wrote"


@pytest.mark.kernel("io-tracepoints", "ptrace", "io-uring")
def test_latency_holds_an_io_uring_process_that_ran_before_the_experiment(io_engine, target, block_fs):
    """A process with io-wq workers already running when the holder seizes it (a kernel may
    refuse to trace them; they need not be: their requests hold the submitter): it is held."""
    fio = subprocess.Popen(["sh", "-c", f'echo $$ > {target}/cgroup.procs && exec fio --name=early '
                            f'--filename={block_fs}/data.db --size=1M --bs=4k --rw=randread --ioengine=io_uring '
                            '--iodepth=4 --force_async=1 --time_based --runtime=30 --output-format=json'],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        workers = []
        deadline = time.monotonic() + 30
        while not workers:
            assert time.monotonic() < deadline, "fio started no io-wq worker"
            workers = [tid for pid in cgroup_processes(target)
                       for tid in os.listdir(f"/proc/{pid}/task") if is_io_thread(int(tid))]
            time.sleep(0.05)
        active = io_engine.apply(io_chaos(action="latency", delay=f"{DELAY_MS}ms", path=f"{block_fs}/*.db",
                                          methods=["read"]),
                                 topology.resolve_cgroup_target(f"cgroup:{target}"), lease_s=600)
        deadline = time.monotonic() + 30
        while io_engine.counters(active)[0]["read"]["delayed"] < IOS:
            assert time.monotonic() < deadline, io_engine.counters(active)
            time.sleep(0.05)
        assert not any(io_engine.counters(active)[0]["read"][outcome] for outcome in UNREACHED)
    finally:
        fio.kill()      # its job process goes with the cgroup (the fixture kills it)
        fio.wait()
