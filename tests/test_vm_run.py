"""scripts/vm-run, the kernel tier's VM: it returns the guest command's status, keeps what was
printed before the boot in a log file, and its watchdog stops a VM that runs past its limit.

Each case boots Debian's stock kernel (about 20 s under TCG), so there are two."""
import os
import subprocess

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
VM_RUN = os.path.join(ROOT, "scripts", "vm-run")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="vm-run boots a VM as root")


def run_logged(tmp_path, command, limit_s):
    """vm-run COMMAND with its output appended to a log file after a line of our own, as CI
    logs it; (status, log text)."""
    log = tmp_path / "vm.log"
    with open(log, "w") as handle:
        handle.write("printed before the boot\n")
        handle.flush()
        env = {**os.environ, "KFAULT_VM_TIME_LIMIT_S": str(limit_s)}
        status = subprocess.run([VM_RUN, *command], stdout=handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, timeout=limit_s + 300).returncode
    return status, log.read_text()


def test_the_guest_commands_status_comes_back_and_the_log_keeps_its_start(tmp_path):
    status, log = run_logged(tmp_path, ["sh", "-c", "echo guest-says-$((6*7)); exit 3"], limit_s=600)
    assert status == 3, log
    assert log.startswith("printed before the boot\n"), log[:500]
    assert "vm-run: booting" in log and "guest-says-42" in log, log


def test_the_watchdog_stops_a_vm_past_its_limit(tmp_path):
    # Long enough for the boot (about 20 s under TCG, less with KVM), far shorter than the sleep.
    status, log = run_logged(tmp_path, ["sh", "-c", "echo guest-says-$((6*7)); exec sleep 600"], limit_s=60)
    assert status != 0, log
    assert log.startswith("printed before the boot\n"), log[:500]
    assert "guest-says-42" in log, log
    assert "vm-run: the VM ran past 60 s" in log, log   # and vm-run returned: its qemu is gone
