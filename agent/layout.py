"""The BPF side's constants, read from bpf/kfault.h so Python and C share one definition."""
import os
import re

BPF_DIR = os.environ.get("KFAULT_BPF_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bpf")
BPF_DIR = os.path.normpath(BPF_DIR)
HEADER = os.path.join(BPF_DIR, "kfault.h")


def _read_defines(path):
    values = {}
    pattern = re.compile(r"^#define\s+(KFAULT_\w+)\s+(.+?)\s*(?:/\*.*)?$")
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            match = pattern.match(line)
            if match:
                values[match.group(1)] = eval(match.group(2), {}, dict(values))  # noqa: S307 - our header
    return values


_DEFINES = _read_defines(HEADER)
globals().update({name[len("KFAULT_"):]: value for name, value in _DEFINES.items()})

DIRECTIONS = {"to": _DEFINES["KFAULT_DIR_TO"], "from": _DEFINES["KFAULT_DIR_FROM"]}
OUTCOMES = {name[len("OUTCOME_"):].lower(): value for name, value in globals().copy().items()
            if name.startswith("OUTCOME_") and name != "OUTCOME_COUNT"}
