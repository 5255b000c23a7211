"""StressChaos without a kernel: Chaos Mesh's fields and stress-ng's arguments read as Chaos Mesh
reads them, every refusal naming the field and the fix, and what the stressors are to hold
against a container's limits (stressfault.plan)."""
import pytest

from kfault_agent.engines.stressfault import plan
from kfault_agent.errors import TargetUnsuitable
from kfault_api import spec, units

GIB = 1 << 30


def stress(**fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "StressChaos",
                                  "metadata": {"name": "s"}, "spec": fields})


def refusals(**fields):
    with pytest.raises(spec.InvalidSpec) as err:
        stress(**fields)
    return [str(e) for e in err.value.errors]


def test_sizes_read_as_memstress_reads_them():
    assert units.parse_size_bytes("256MB") == 256_000_000
    assert units.parse_size_bytes("1GiB") == GIB
    assert units.parse_size_bytes("512Mi") == 512 << 20
    assert units.parse_size_bytes("4096") == 4096
    assert units.parse_stress_ng_size("256m") == 256 << 20
    with pytest.raises(ValueError, match="256MB"):
        units.parse_size_bytes("12XB")


def test_chaos_meshs_burn_cpu_options_are_workers_a_timeout_the_duration_overrides_and_a_disk_writer():
    burn = stress(stressors={"cpu": {"workers": 1, "load": 100, "options": ["--cpu 2", "--timeout 600", "--hdd 1"]}},
                  duration="30s")
    assert (burn.cpu, burn.hdd.workers, burn.duration_ns, burn.action) == (spec.CPUStress(2, 100), 1, 30 * 10**9,
                                                                            "cpu+hdd")
    assert burn.notes == ("--timeout is overridden by spec.duration",)
    assert stress(stressors={"cpu": {"workers": 1, "options": ["--timeout 2m"]}}).duration_ns == 120 * 10**9


def test_memory_sizes_and_oom_score_adj():
    oom = stress(stressors={"memory": {"workers": 2, "size": "10GB", "oomScoreAdj": -1000}})
    assert oom.memory == spec.MemoryStress(2, size_bytes=10**10, oom_score_adj=-1000)
    assert stress(stressors={"memory": {"workers": 1, "size": "50%"}}).memory.size_percent == 50


def test_stressng_stressors_win_and_are_read_as_stress_ng_reads_them():
    doc = stress(stressngStressors="--cpu 2 --cpu-load 30 --vm 1 --vm-bytes 64m --cpu-method sqrt",
                 stressors={"cpu": {"workers": 8}})
    assert (doc.cpu, doc.memory) == (spec.CPUStress(2, 30), spec.MemoryStress(1, size_bytes=64 << 20))
    assert doc.notes[0] == "spec.stressors is ignored: spec.stressngStressors wins (as in Chaos Mesh)"
    assert "--cpu-method is ignored" in doc.notes[1]


def test_what_has_no_meaning_in_a_container_is_refused_by_name_with_why():
    got = refusals(stressors={"cpu": {"workers": 1, "options": ["--cpu 0", "--io 2", "--matrix 1"]},
                              "memory": {"workers": 1, "size": "1GB", "options": ["--time 10s"]}})
    assert got == [
        "spec.stressors.cpu.options: '--cpu 0' is not valid; use a number of workers from 1 to 8192 (stress-ng's 0, "
        "one per CPU of the node, has no meaning for a container: name the count)",
        "spec.stressors.cpu.options: '--io 2' is not valid; use no --io: its sync() flushes every file system of the "
        "node, not the container's",
        "spec.stressors.cpu.options: '--matrix 1' is not valid; use no --matrix: kfault runs its own stressors: cpu "
        "(--cpu, --cpu-load), memory (--vm, --vm-bytes), disk writes inside the container (--hdd, --hdd-bytes) and "
        "--timeout",
        "spec.stressors.memory.options: '--time 10s' is not valid; use no options: Chaos Mesh passes them to "
        "memStress, whose --time grows the memory gradually; kfault holds the size at once. Remove it"]


def test_a_stress_chaos_needs_a_stressor_and_a_size():
    assert refusals(stressors={})[0].startswith("spec.stressors: {} is not valid; use at least one of")
    assert "without one Chaos Mesh fills all memory" in refusals(stressors={"memory": {"workers": 1}})[0]
    assert "spec.stressors.cpu.workers" in refusals(stressors={"cpu": {"workers": 0}})[0]


def test_cpu_load_is_a_share_of_the_containers_cpu_max_or_of_one_cpu_per_worker():
    one = stress(stressors={"cpu": {"workers": 1, "load": 50}})
    two = stress(stressors={"cpu": {"workers": 2, "load": 50}})
    assert plan(one, 0.5, None, 8 * GIB, 4 * GIB)[:2] == ({"cpu": {"workers": 1, "share": 0.25}}, 0.25)
    assert plan(two, None, None, 8 * GIB, 4 * GIB)[:2] == ({"cpu": {"workers": 2, "share": 0.5}}, 1.0)
    with pytest.raises(TargetUnsuitable, match="set workers to 4 or more"):
        plan(stress(stressors={"cpu": {"workers": 1, "load": 100}}), 4.0, None, 8 * GIB, 4 * GIB)


def test_memory_is_bytes_or_a_percent_of_memory_max_and_never_more_than_the_node_has_without_one():
    half = stress(stressors={"memory": {"workers": 2, "size": "50%"}})
    assert plan(half, None, GIB, 8 * GIB, 4 * GIB)[2] == GIB // 2
    assert plan(half, None, None, 8 * GIB, 6 * GIB)[0]["memory"]["bytes"] == 2 * GIB
    big = stress(stressors={"memory": {"workers": 1, "size": "10GB"}})
    assert plan(big, None, GIB, 8 * GIB, 4 * GIB)[2] == 10**10     # the container's own OOM killer's
    with pytest.raises(TargetUnsuitable, match="no memory.max"):
        plan(big, None, None, 8 * GIB, 4 * GIB)
