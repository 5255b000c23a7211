"""Each constant defined twice must agree: bpf/kfault.h and kfault_api.layout."""
import os
import re

from kfault_api import layout

HEADER = os.path.join(os.path.dirname(__file__), "..", "bpf", "kfault.h")


def header_defines():
    """Every `#define KFAULT_NAME value` of the header, evaluated in order (values are C
    integer expressions of numbers and earlier names)."""
    values = {}
    pattern = re.compile(r"^#define\s+KFAULT_(\w+)\s+(.+?)\s*(?:/\*.*)?$")
    with open(HEADER, encoding="utf-8") as handle:
        for line in handle:
            match = pattern.match(line)
            if match and not match.group(1).endswith("_H"):
                expression = re.sub(r"\bKFAULT_(\w+)", r"\1", match.group(2))
                values[match.group(1)] = eval(expression, {"__builtins__": {}}, dict(values))  # noqa: S307
    return values


def test_every_header_constant_is_in_layout_with_the_same_value():
    defines = header_defines()
    assert defines, "no #define KFAULT_* found in bpf/kfault.h"
    mirrored = {name: getattr(layout, name, None) for name in defines}
    assert mirrored == defines


def test_layout_defines_nothing_the_header_lacks():
    defines = header_defines()
    constants = {name for name in vars(layout) if name.isupper() and isinstance(getattr(layout, name), int)}
    assert constants - set(defines) == set()
