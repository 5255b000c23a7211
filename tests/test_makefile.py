"""Every make target is a script sh can read (the docs name them: tests/test_docs.py): `make -n` prints what each
would run, without running it, and `sh -n` parses that. (kernel-bench once lost a quote, and
nothing ran it but a person.)"""
import os
import re
import subprocess

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


def phony_targets():
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as handle:
        return re.search(r"^\.PHONY:(.*)$", handle.read(), re.M).group(1).split()


@pytest.mark.parametrize("target", phony_targets())
def test_each_target_is_a_script_sh_can_parse(target):
    commands = subprocess.run(["make", "-n", "--no-print-directory", "-C", ROOT, target],
                              capture_output=True, text=True, check=True).stdout
    parsed = subprocess.run(["sh", "-n"], input=commands, capture_output=True, text=True)
    assert parsed.returncode == 0, f"make {target}:\n{commands}\n{parsed.stderr}"
