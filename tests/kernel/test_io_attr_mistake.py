"""IOChaos attrOverride and mistake on real processes in cgroups the tests make: what the
victims see from stat and read, and what the file on disk holds."""
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from kfault_agent import metrics
from kfault_agent.engines import iofault
from kfault_agent.kernel import topology
from kfault_api import spec
from tests.victims import CommandVictim, remove_cgroup

writes_user = pytest.mark.kernel("io-tracepoints", "io-write-user")

# A victim that joins a cgroup, opens FILE and chdirs to its directory (all before the
# experiment is armed, as a long-running service would), prints "ready", then answers one
# command a line with one JSON line:
#   stat PATH | lstat PATH   os.stat / os.lstat (glibc: newfstatat)
#   fstat                    os.fstat on the file opened early (glibc: fstatat(fd, "", AT_EMPTY_PATH))
#   coreutils PATH           the stat command, run as a child (statx), in the same cgroup
#   read N                   N x pread of the whole file on the early fd, as hex
#   write HEX                pwrite HEX at 0 on the early fd (opened read-write)
VICTIM = r"""
import json, os, subprocess, sys
cgroup, path = sys.argv[1], sys.argv[2]
with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
    procs.write(str(os.getpid()))
fd = os.open(path, os.O_RDWR)
size = os.fstat(fd).st_size
os.chdir(os.path.dirname(path))
FIELDS = ("st_ino", "st_size", "st_blocks", "st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev",
          "st_atime_ns", "st_mtime_ns", "st_ctime_ns")
def fields(st):
    return {name: getattr(st, name) for name in FIELDS}
print("ready", flush=True)
for line in sys.stdin:
    command, _, arg = line.strip().partition(" ")
    if command == "stat":
        answer = fields(os.stat(arg))
    elif command == "lstat":
        answer = fields(os.lstat(arg))
    elif command == "fstat":
        answer = fields(os.fstat(fd))
    elif command == "coreutils":
        out = subprocess.run(["stat", "-c", "%i %s %b %f %h %u %g %X %Y %Z", arg], capture_output=True, text=True)
        answer = out.stdout.split()
    elif command == "read":
        answer = [os.pread(fd, size, 0).hex() for _ in range(int(arg))]
    elif command == "write":
        answer = os.pwrite(fd, bytes.fromhex(arg), 0)
    print(json.dumps(answer), flush=True)
"""

ATTR = {"ino": 4242, "size": 123456, "blocks": 77, "perm": 0o640, "nlink": 9, "uid": 4001, "gid": 4002,
        "mtime": {"sec": 1_000_000_000, "nsec": 5}, "atime": {"sec": 1_100_000_000, "nsec": 0},
        "ctime": {"sec": 1_200_000_000, "nsec": 7}}
CONTENT = bytes(range(1, 256)) * 16      # no zero byte: every zeroed byte is a changed one


def io_chaos(name="io", **fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "IOChaos",
                                  "metadata": {"name": name}, "spec": {"volumePath": "/", **fields}})


class Victim(CommandVictim):
    def __init__(self, cgroup, path):
        super().__init__([sys.executable, "-c", VICTIM, cgroup, str(path)])


@pytest.fixture
def cgroups():
    made = []

    def make(name):
        path = os.path.join(topology.cgroup2_mount(), f"kft-attr-{uuid.uuid4().hex[:8]}-{name}")
        os.mkdir(path)
        made.append(path)
        return path
    yield make
    for path in reversed(made):
        remove_cgroup(path)


@pytest.fixture
def victims():
    started = []

    def start(cgroup, path):
        started.append(Victim(cgroup, path))
        return started[-1]
    yield start
    for victim in started:
        victim.close()


@pytest.fixture
def files(tmp_path):
    (tmp_path / "data.db").write_bytes(CONTENT)
    (tmp_path / "notes.txt").write_bytes(CONTENT)
    return tmp_path


def metric(engine, method, outcome):
    """kfault_syscalls{method, outcome} as a scrape would show it."""
    return sum(sample.value for family in metrics.families(engine.counts()) if family.name == "kfault_syscalls"
               for sample in family.samples if (sample.labels["method"], sample.labels["outcome"]) == (method, outcome))


def overridden(st):
    """Which of ATTR's values the stat fields show."""
    return {"ino": st["st_ino"] == ATTR["ino"], "size": st["st_size"] == ATTR["size"],
            "blocks": st["st_blocks"] == ATTR["blocks"], "perm": st["st_mode"] & 0o7777 == ATTR["perm"],
            "nlink": st["st_nlink"] == ATTR["nlink"], "uid": st["st_uid"] == ATTR["uid"],
            "gid": st["st_gid"] == ATTR["gid"],
            "mtime": st["st_mtime_ns"] == ATTR["mtime"]["sec"] * 10**9 + ATTR["mtime"]["nsec"],
            "atime": st["st_atime_ns"] == ATTR["atime"]["sec"] * 10**9,
            "ctime": st["st_ctime_ns"] == ATTR["ctime"]["sec"] * 10**9 + ATTR["ctime"]["nsec"]}


@pytest.mark.stock_kernel("the stat override on 6.1's verifier")
@writes_user
def test_attr_override_is_what_stat_lstat_and_the_stat_command_report(cgroups, victims, files, io_engine):
    target = cgroups("target")
    victim = victims(target, files / "data.db")
    bystander = victims(cgroups("other"), files / "data.db")
    real = os.stat(files / "data.db")
    io_engine.apply(io_chaos(action="attrOverride", path=f"{files}/*.db", attr=ATTR),
                    topology.resolve_cgroup_target(f"cgroup:{target}"))

    commands = (f"stat {files}/data.db", "stat data.db", f"lstat {files}/data.db", "fstat")
    for command in commands:
        st = victim.ask(command)
        assert all(overridden(st).values()), (command, st)
        assert st["st_mode"] & 0o170000 == real.st_mode & 0o170000, "perm alone changed the file type"
    ino, size, blocks, mode, nlink, uid, gid, atime, mtime, ctime = victim.ask(f"coreutils {files}/data.db")
    assert (int(ino), int(size), int(blocks), int(mode, 16) & 0o7777, int(nlink), int(uid), int(gid)) == \
        (ATTR["ino"], ATTR["size"], ATTR["blocks"], ATTR["perm"], ATTR["nlink"], ATTR["uid"], ATTR["gid"])
    assert (int(atime), int(mtime), int(ctime)) == (ATTR["atime"]["sec"], ATTR["mtime"]["sec"], ATTR["ctime"]["sec"])

    assert not any(overridden(victim.ask(f"stat {files}/notes.txt")).values()), "a non-matching path changed"
    assert not any(overridden(bystander.ask(f"stat {files}/data.db")).values()), "another cgroup's stat changed"
    calls, _ = io_engine.counters(io_engine.active()[0])
    assert calls["getattr"]["overridden"] >= len(commands) + 1, calls     # and the stat command's
    assert metric(io_engine, "getattr", "overridden") == calls["getattr"]["overridden"]

    io_engine.revoke_all()
    st = victim.ask(f"stat {files}/data.db")
    assert (st["st_ino"], st["st_size"], st["st_mode"]) == (real.st_ino, real.st_size, real.st_mode), \
        "revoking did not restore what stat reports"


@writes_user
def test_attr_override_kind_changes_only_the_file_type(cgroups, victims, files, io_engine):
    target = cgroups("target")
    victim = victims(target, files / "data.db")
    real = os.stat(files / "data.db")
    io_engine.apply(io_chaos(action="attrOverride", path=f"{files}/*.db", attr={"kind": "directory"}),
                    topology.resolve_cgroup_target(f"cgroup:{target}"))
    st = victim.ask(f"stat {files}/data.db")
    assert st["st_mode"] == 0o040000 | (real.st_mode & 0o7777), oct(st["st_mode"])


def differing_runs(got, want):
    """[(offset, length)] of the runs of bytes where got differs from want."""
    runs, start = [], None
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b and start is None:
            start = i
        elif a == b and start is not None:
            runs.append((start, i - start))
            start = None
    if start is not None:
        runs.append((start, len(got) - start))
    return runs


@writes_user
@pytest.mark.parametrize("max_occurrences, max_length", [(1, 10), (3, 4)])
def test_mistake_read_returns_wrong_bytes_in_bounded_runs_and_leaves_the_file(
        cgroups, victims, files, io_engine, max_occurrences, max_length):
    target = cgroups("target")
    victim = victims(target, files / "data.db")
    io_engine.apply(io_chaos(action="mistake", path=f"{files}/*.db", methods=["read"],
                             mistake={"filling": "zero", "maxOccurrences": max_occurrences,
                                      "maxLength": max_length}),
                    topology.resolve_cgroup_target(f"cgroup:{target}"))
    reads = [bytes.fromhex(r) for r in victim.ask("read 200")]
    assert all(len(r) == len(CONTENT) for r in reads)
    for got in reads:
        runs = differing_runs(got, CONTENT)
        assert 1 <= len(runs) <= max_occurrences, runs
        assert sum(length for _, length in runs) <= max_occurrences * max_length, runs
        if max_occurrences == 1:
            assert runs[0][1] <= max_length, runs
        assert all(got[at:at + length] == bytes(length) for at, length in runs), "filling zero wrote non-zero bytes"
    assert (files / "data.db").read_bytes() == CONTENT, "a read mistake changed the file on disk"
    calls, _ = io_engine.counters(io_engine.active()[0])
    assert calls["read"]["corrupted"] == 200, calls
    assert metric(io_engine, "read", "corrupted") == 200

    io_engine.revoke_all()
    assert all(bytes.fromhex(r) == CONTENT for r in victim.ask("read 20")), "revoking did not restore reads"


@writes_user
def test_mistake_random_filling_and_percent(cgroups, victims, files, io_engine):
    target = cgroups("target")
    victim = victims(target, files / "data.db")
    bystander = victims(cgroups("other"), files / "data.db")
    io_engine.apply(io_chaos(action="mistake", path=f"{files}/*.db", percent=50,
                             mistake={"filling": "random", "maxOccurrences": 2, "maxLength": 8}),
                    topology.resolve_cgroup_target(f"cgroup:{target}"))
    reads = [bytes.fromhex(r) for r in victim.ask("read 200")]
    wrong = [r for r in reads if r != CONTENT]
    assert 0.35 <= len(wrong) / len(reads) <= 0.65, len(wrong)
    assert all(sum(n for _, n in differing_runs(r, CONTENT)) <= 16 for r in wrong)
    assert all(bytes.fromhex(r) == CONTENT for r in bystander.ask("read 20")), "another cgroup read wrong bytes"
    assert (files / "data.db").read_bytes() == CONTENT


@pytest.mark.stock_kernel("mistake's bpf_probe_write_user on 6.1")
@writes_user
def test_mistake_write_stores_wrong_bytes(cgroups, victims, files, io_engine):
    """A write's data is changed before the kernel copies it: the file gets the wrong bytes."""
    target = cgroups("target")
    victim = victims(target, files / "data.db")
    io_engine.apply(io_chaos(action="mistake", path=f"{files}/*.db", methods=["write"],
                             mistake={"filling": "zero", "maxOccurrences": 1, "maxLength": 16}),
                    topology.resolve_cgroup_target(f"cgroup:{target}"))
    assert victim.ask("write " + CONTENT[:256].hex()) == 256
    on_disk = (files / "data.db").read_bytes()
    runs = differing_runs(on_disk[:256], CONTENT[:256])
    assert len(runs) == 1 and runs[0][1] <= 16, runs
    assert on_disk[256:] == CONTENT[256:]


@writes_user
def test_killed_agent_leaves_reads_and_stats_intact_after_its_lease(cgroups, victims, files, tmp_path):
    target = cgroups("target")
    victim = victims(target, files / "data.db")
    real = os.stat(files / "data.db")
    docs = []
    for name, fields in (("wrong-reads", "action: mistake, mistake: {maxOccurrences: 1, maxLength: 4}"),
                         ("odd-stats", "action: attrOverride, attr: {size: 1}")):
        doc = tmp_path / f"{name}.yaml"
        doc.write_text(f"apiVersion: {spec.API_VERSION}\nkind: IOChaos\nmetadata: {{name: {name}}}\n"
                       f"spec: {{{fields}, volumePath: {files}, path: '{files}/*.db'}}\n")
        docs.append(doc)
    runners = [subprocess.Popen([sys.executable, "-m", "kfault_agent.cli", "run", "-f", str(doc),
                                 "--target", f"cgroup:{target}", "--lease", "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for doc in docs]
    try:
        for runner in runners:
            assert "injecting" in runner.stdout.readline()
        assert any(bytes.fromhex(r) != CONTENT for r in victim.ask("read 20")), "the mistake was not injected"
        assert victim.ask(f"stat {files}/data.db")["st_size"] == 1, "the override was not injected"
        for runner in runners:
            os.kill(runner.pid, signal.SIGKILL)
            runner.wait()
        time.sleep(3)                    # the lease (2 s) lapses in the kernel
        assert all(bytes.fromhex(r) == CONTENT for r in victim.ask("read 20")), "reads still wrong after the lease"
        assert victim.ask(f"stat {files}/data.db")["st_size"] == real.st_size, "stat still overridden"
    finally:
        for runner in runners:
            runner.kill()
    assert (files / "data.db").read_bytes() == CONTENT


@pytest.mark.kernel("io-tracepoints")
def test_attr_override_and_mistake_are_refused_by_name_where_the_kernel_forbids_writing_user_memory(
        cgroups, files, io_datapath, capabilities):
    from kfault_agent.errors import KernelUnsupported
    if capabilities["io-write-user"].available:
        pytest.skip("this kernel lets BPF write user memory: see the tests above")
    engine = iofault.IOFaultEngine(io_datapath, capabilities)
    target = topology.resolve_cgroup_target(f"cgroup:{cgroups('target')}")
    for experiment in (io_chaos(action="attrOverride", path=f"{files}/*", attr={"size": 1}),
                       io_chaos(action="mistake", path=f"{files}/*", mistake={"maxOccurrences": 1, "maxLength": 1})):
        with pytest.raises(KernelUnsupported, match=f"{experiment.action} on .*bpf_probe_write_user.*lockdown"):
            engine.apply(experiment, target)
    assert not engine.active() and io_datapath.armed[io_datapath.armed.Key(0)].value == 0
