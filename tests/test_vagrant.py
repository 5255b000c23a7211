"""The Vagrantfile users run the kernel tests with must at least be valid."""
import os
import shutil
import subprocess

import pytest

VAGRANT_DIR = os.path.join(os.path.dirname(__file__), "..", "vagrant")


@pytest.mark.skipif(not shutil.which("vagrant"), reason="needs Debian's vagrant (scripts/setup-host test installs it)")
def test_vagrantfile_validates():
    # --ignore-provider: neither VirtualBox nor libvirt is installed here; their config blocks
    # are checked by the provider itself when a user brings one.
    result = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=VAGRANT_DIR,
                            capture_output=True, text=True, env={**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout
