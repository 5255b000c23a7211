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


BPF_DIR = os.path.dirname(HEADER)


def bpf_sources():
    """(path relative to bpf/, text) of every program and library header under bpf/."""
    for root, _dirs, names in sorted(os.walk(BPF_DIR)):
        for name in sorted(names):
            if name.endswith((".c", ".h")):
                path = os.path.join(root, name)
                with open(path, encoding="utf-8") as handle:
                    yield os.path.relpath(path, BPF_DIR), handle.read()


def map_declarations():
    """(file, map name, size expression) of every map the BPF programs and bpf/lib/ declare."""
    pattern = re.compile(r"^BPF_\w+\((.*)\);", re.MULTILINE)
    for source, text in bpf_sources():
        for args in pattern.findall(text):
            args = [a.strip() for a in args.split(",")]
            map_name = next(a for a in args if a.startswith("kfault_"))
            yield source, map_name, args[-1]


def test_every_map_size_is_a_header_constant():
    """A map's size is a KFAULT_ name of the header (so layout.py has it), or 1 for a map
    that holds one value."""
    declarations = list(map_declarations())
    assert len(declarations) >= 10, "too few BPF_* map declarations found in bpf/*.c"
    defines = header_defines()
    for source, name, size in declarations:
        if size == "1":
            continue
        names = re.findall(r"\w+", size)
        assert names and all(n.startswith("KFAULT_") and n[len("KFAULT_"):] in defines for n in names), (
            f"{source}: map {name} has size {size}; use a KFAULT_ #define of bpf/kfault.h "
            "(and mirror it in api/kfault_api/layout.py)")


def test_no_library_header_calls_a_map():
    """bcc turns `map.lookup()` (and update, delete, call, ...) into a map access only in the file
    it compiles: in an included header it stays a call through a pointer, which the verifier
    refuses at load. So bpf/lib/ declares maps and the programs call them."""
    names = {name for _source, name, _size in map_declarations()}
    call = re.compile(r"\b(" + "|".join(sorted(names)) + r")\s*\.\s*\w+\s*\(")
    for source, text in bpf_sources():
        if source.startswith("lib" + os.sep):
            assert not call.findall(text), f"bpf/{source} calls map {call.findall(text)}: move the call to the program"


def test_a_rule_is_never_written_with_deadline_zero():
    """0 means expired in both programs (bpf/kfault.h): the agent writes real deadlines only."""
    import pytest

    from kfault_agent.kernel import maps
    with pytest.raises(ValueError, match="deadline_ns=0"):
        maps.rule_deadline(0)
    assert maps.rule_deadline(5) == {"deadline_ns": 5}
