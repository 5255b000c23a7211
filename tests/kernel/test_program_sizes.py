"""Each BPF program's size as the kernel reports it, against the sizes recorded per kernel
family in tests/kernel/program_sizes.json (as Cilium's complexity tests do): a change that
grows a program, or the verifier's work on it, is seen in review instead of as a refusal on
some node's older verifier.

Two numbers per program: xlated_insns (instructions after the verifier's rewrites) and
verified_insns (instructions the verifier walked: its complexity; kernels 5.16+). A program
fails when either passes its recorded value by more than HEADROOM, which absorbs compiler noise.
To record this kernel's sizes after an intended change (here, or in the VM for 6.1):
    KFAULT_RECORD_PROGRAM_SIZES=1 tests/kernel/run tests/kernel/test_program_sizes.py
    scripts/vm-run env KFAULT_RECORD_PROGRAM_SIZES=1 tests/kernel/run tests/kernel/test_program_sizes.py
"""
import json
import os
import platform

import pytest

from kfault_agent.kernel import loader
from tests.features import skip_for_lack_of, skip_unless_required

pytestmark = pytest.mark.stock_kernel("what 6.1's verifier makes of every program")

TABLE = os.path.join(os.path.dirname(__file__), "program_sizes.json")
HEADROOM = 0.10
RECORDING = os.environ.get("KFAULT_RECORD_PROGRAM_SIZES") == "1"
RECORD_HINT = ("If the growth is intended, record this kernel's sizes with "
               "`KFAULT_RECORD_PROGRAM_SIZES=1 tests/kernel/run tests/kernel/test_program_sizes.py` "
               "(for 6.1: `scripts/vm-run env KFAULT_RECORD_PROGRAM_SIZES=1 tests/kernel/run "
               "tests/kernel/test_program_sizes.py`) and commit tests/kernel/program_sizes.json.")


def kernel_family():
    """major.minor of the running kernel: verifiers differ between them, not within one."""
    return ".".join(platform.release().split(".")[:2])


def read_table():
    with open(TABLE, encoding="utf-8") as handle:
        return json.load(handle)


def record(program, size):
    table = read_table()
    sizes = {"xlated_insns": size.xlated_insns}
    if size.verified_insns is not None:
        sizes["verified_insns"] = size.verified_insns
    table.setdefault(kernel_family(), {})[program] = sizes
    with open(TABLE, "w", encoding="utf-8") as handle:
        json.dump(dict(sorted(table.items())), handle, indent=2, sort_keys=True)
        handle.write("\n")


def growth(program, metric, now, recorded):
    """A message for a program that grew past its budget, or None."""
    if now <= recorded * (1 + HEADROOM):
        return None
    return (f"{program} grew on kernel {kernel_family()}: {metric} {now}, recorded {recorded} "
            f"(+{now - recorded}, +{(now - recorded) / recorded:.1%}; the headroom is {HEADROOM:.0%}). {RECORD_HINT}")


def check_size(program, fd):
    size = loader.program_size(fd)
    if RECORDING:
        record(program, size)
        return
    recorded = read_table().get(kernel_family(), {}).get(program)
    if recorded is None:
        # A kernel family nobody recorded (a Vagrant box's) skips on the host, fails in the stock-kernel tier.
        skip_unless_required(f"no recorded size of {program} for kernel {kernel_family()} in {TABLE}: "
                    f"measured {size}. To add it: {RECORD_HINT}")
    now = {"xlated_insns": size.xlated_insns, "verified_insns": size.verified_insns}
    problems = [growth(program, metric, now[metric], value)
                for metric, value in recorded.items() if now.get(metric) is not None]
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("program", loader.NET_PROGRAMS)
def test_tc_program_within_its_recorded_size(datapath, program):
    check_size(program, datapath.fd(program))


@pytest.mark.parametrize("program", loader.IO_PROGRAMS + (loader.IO_URING_PROGRAM,)
                         + tuple(loader.IO_WRITE_USER_PROGRAMS))
def test_io_program_within_its_recorded_size(io_datapath, program):
    if program == loader.IO_URING_PROGRAM and program not in io_datapath.programs:
        skip_for_lack_of("io-uring", io_datapath.io_uring_refusal)
    if program not in io_datapath.programs:
        skip_for_lack_of("io-write-user", f"{program} is not loaded here: {io_datapath.write_user_refusal}")
    check_size(program, io_datapath.programs[program].fd)


def test_file_hook_program_within_its_recorded_size(io_datapath):
    if not io_datapath.file_hooks:
        skip_for_lack_of("file-hooks", "the file hooks are not loaded here "
                         f"({io_datapath.errno_mechanism or 'syscall tracepoints'} is used)")
    check_size(loader.FILE_HOOK_PROGRAM, io_datapath.programs[loader.FILE_HOOK_PROGRAM].fd)


def test_growth_message_says_how_much_and_how_to_record():
    assert growth("p", "verified_insns", 1100, 1000) is None
    message = growth("p", "verified_insns", 1200, 1000)
    assert "+200, +20.0%" in message and "KFAULT_RECORD_PROGRAM_SIZES=1" in message
