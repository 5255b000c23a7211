"""Engines count; the surfaces format: `kfault run`'s live lines and the Prometheus families,
from typed counts alone. No kernel."""
from kfault_agent import cli, metrics
from kfault_agent.engines.counts import (IOCounts, IOPlacementCounts, NetCounts, NetPlacementCounts, PodCounts,
                                         StressCounts, StressPlacementCounts,
                                         PodPlacementCounts, Traffic)
from kfault_api import layout


def net_counts(matched, dropped):
    outcomes = {outcome: Traffic(0, 0) for outcome in layout.OUTCOMES}
    outcomes.update(matched=Traffic(matched, matched * 100), dropped=Traffic(dropped, dropped * 100))
    return NetPlacementCounts("default/cut", "netns:a", "loss", 1, {"to": outcomes})


def samples(families):
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in families for sample in family.samples}


def test_a_network_placement_shows_matched_and_what_was_done_with_its_share():
    assert cli.live_lines(net_counts(200, 50)) == ["to   matched 200  dropped 50 (25.0%)"]
    assert cli.live_lines(net_counts(0, 0)) == ["to   matched 0"]


def test_network_families_keep_their_names_and_labels():
    got = samples(metrics.families(NetCounts([net_counts(200, 50)], {"tcx": True, "sch_fq": False})))
    labels = (("action", "loss"), ("direction", "to"), ("experiment", "default/cut"), ("outcome", "dropped"),
              ("target", "netns:a"))
    assert got[("kfault_packets_total", labels)] == 50
    assert got[("kfault_bytes_total", labels)] == 5000
    assert got[("kfault_rules_active", (("experiment", "default/cut"), ("target", "netns:a")))] == 1
    assert got[("kfault_capability", (("feature", "sch_fq"),))] == 0


def test_an_io_placement_shows_calls_per_method_and_the_delay():
    counted = IOPlacementCounts("default/slow", "cgroup:/x", "latency",
                                {"read": {"passed": 3, "failed": 0, "delayed": 2}}, 1_500_000_000)
    assert cli.live_lines(counted) == ["read 5 (failed 0, delayed 2)  injected delay 1.5s"]
    got = samples(metrics.families(IOCounts([counted])))
    assert got[("kfault_syscalls_total", (("experiment", "default/slow"), ("method", "read"), ("outcome", "delayed"),
                                          ("target", "cgroup:/x")))] == 2
    assert got[("kfault_syscall_delay_seconds_total", (("experiment", "default/slow"), ("target", "cgroup:/x")))] == 1.5


def test_pod_counts_show_freezes_and_every_fault_injected():
    counted = PodPlacementCounts("default/freeze", "pod", "pod-failure", "/sys/fs/cgroup/x", True)
    assert cli.live_lines(counted) == ["/sys/fs/cgroup/x frozen"]
    got = samples(metrics.families(PodCounts([counted], {("default/kill", "c", "container-kill"): 2})))
    assert got[("kfault_pod_faults_total", (("action", "container-kill"), ("experiment", "default/kill"),
                                            ("target", "c")))] == 2
    assert got[("kfault_pods_frozen", (("action", "pod-failure"), ("experiment", "default/freeze"),
                                       ("target", "pod")))] == 1


def test_stress_counts_show_the_stressors_and_what_they_hold():
    counted = StressPlacementCounts("default/burn", "c", "cpu+memory", "/sys/fs/cgroup/c/kfault-stress-1.2-0",
                                    {"cpu": 2, "memory": 1, "hdd": 0}, 12.5, 1.0, 255_000_000, 256_000_000)
    assert cli.live_lines(counted) == ["stressors cpu 2, memory 1; cpu 12.5s (holding 1.00 CPUs); "
                                       "memory 255000000 of 256000000 bytes"]
    got = samples(metrics.families(StressCounts([counted])))
    labels = (("action", "cpu+memory"), ("experiment", "default/burn"), ("target", "c"))
    assert got[("kfault_stressors", labels[:1] + labels[1:2] + (("stressor", "cpu"),) + labels[2:])] == 2
    assert got[("kfault_stress_cpu_seconds_total", labels)] == 12.5
    assert got[("kfault_stress_cpus", labels)] == 1.0
    assert got[("kfault_stress_memory_bytes", labels)] == 255_000_000


def test_no_placement_still_declares_every_family():
    names = {family.name for counts in (NetCounts([], {}), IOCounts([]), PodCounts([], {}), StressCounts([]))
             for family in metrics.families(counts)}
    assert names == {"kfault_packets", "kfault_bytes", "kfault_rules_active", "kfault_capability", "kfault_syscalls",
                     "kfault_syscall_delay_seconds", "kfault_pod_faults", "kfault_pods_frozen", "kfault_stressors",
                     "kfault_stress_cpu_seconds", "kfault_stress_cpus", "kfault_stress_memory_bytes"}


def test_calls_out_of_reach_are_said_with_why_never_passed_silently():
    counted = IOPlacementCounts("default/slow", "cgroup:/x", "latency",
                                {"read": {"passed": 0, "failed": 0, "delayed": 2, "unreached-io-thread": 3,
                                          "unreached-async": 0, "unreached-fixed-file": 0}}, 0)
    first, reason = cli.live_lines(counted)
    assert first == "read 5 (failed 0, delayed 2, unreached-io-thread 3)"
    assert reason.startswith("NOT REACHED: 3 calls (unreached-io-thread): io_uring requests issued by a kernel thread")
    got = samples(metrics.families(IOCounts([counted])))
    assert got[("kfault_syscalls_total", (("experiment", "default/slow"), ("method", "read"),
                                          ("outcome", "unreached-io-thread"), ("target", "cgroup:/x")))] == 3


def test_capabilities_say_which_io_path_each_action_reaches():
    from kfault_agent.kernel.capabilities import IO_PATHS, Capability, io_reach
    caps = {name: Capability(name, True, "yes") for name in ("io-tracepoints", "ptrace", "io-errno", "io-uring",
                                                             "io-write-user")}
    tracepoints = {**caps, "file-hooks": Capability("file-hooks", False, "no trampolines")}
    hooks = {**caps, "file-hooks": Capability("file-hooks", True, "yes")}
    assert [path for path, _, _ in io_reach(hooks, "latency")] == list(IO_PATHS)
    latency = {path: ok for path, ok, _ in io_reach(tracepoints, "latency")}
    assert latency == {"syscalls": True, "libaio": True, "io_uring": True, "io_uring io-wq": True,
                       "io_uring SQPOLL": False}
    fault = {path: ok for path, ok, _ in io_reach(tracepoints, "fault")}
    assert fault == {"syscalls": True, "libaio": False, "io_uring": False, "io_uring io-wq": False,
                     "io_uring SQPOLL": False}
    assert all(ok for _, ok, _ in io_reach(hooks, "fault"))
    assert [ok for _, ok, _ in io_reach(hooks, "mistake")] == [True, False, False, False, False]
    no_uring = {**hooks, "io-uring": Capability("io-uring", False, "io_uring requests are out of reach: no BTF")}
    assert {path: ok for path, ok, _ in io_reach(no_uring, "latency")}["io_uring"] is False
