"""The compile cache and the map types, without a kernel: what kernel/compile.py records and how
kernel/maps.py reads it back."""
import ctypes
import json
import os
import struct
import subprocess
import sys

import pytest

from kfault_agent.kernel import compile, maps


def insn(code, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", code, dst | src << 4, off, imm)


def test_map_loads_are_found_by_their_fd_and_other_wide_loads_are_not():
    program = (insn(0xB7, 0, imm=1)                                    # r0 = 1
               + insn(0x18, 1, src=1, imm=7) + insn(0)                  # r1 = map fd 7 (two slots)
               + insn(0x18, 2, imm=7) + insn(0)                         # r2 = 7, a plain constant
               + insn(0x18, 3, src=1, imm=9) + insn(0)                  # r3 = map fd 9
               + insn(0x95))                                            # exit
    assert compile.map_relocations(program, {7: "kfault_rules", 9: "kfault_peers"}) == [
        (1, "kfault_rules"), (5, "kfault_peers")]
    with pytest.raises(compile.CompileError, match="fd 9"):
        compile.map_relocations(program, {7: "kfault_rules"})


def test_types_are_built_from_bccs_description():
    desc = ["kfault_io_fd_key", [["tgid", "unsigned int"], ["fd", "unsigned int"]], "struct"]
    key = maps.ctype_of(desc)(5, 6)
    assert (key.tgid, key.fd, ctypes.sizeof(key)) == (5, 6, 8)
    nested = ["outer", [["bytes", "unsigned char", [6]], ["", [["a", "int"], ["b", "unsigned int"]], "union"],
                        ["flag", "unsigned int", 3]], "struct"]
    value = maps.ctype_of(nested)()
    value.bytes[:] = list(range(6))
    value.b, value.flag = 7, 5
    assert (list(value.bytes), value.a, value.flag) == (list(range(6)), 7, 5)


def test_an_entry_is_keyed_by_every_file_under_bpf(tmp_path):
    (tmp_path / "lib").mkdir()
    source, library = tmp_path / "prog.c", tmp_path / "lib" / "edt.h"
    source.write_text("int x;")
    library.write_text("#define A 1")
    key = compile.entry_key(str(source), ["-I."], "headers", str(tmp_path))
    assert key == compile.entry_key(str(source), ["-I."], "headers", str(tmp_path))
    library.write_text("#define A 2")
    changed = compile.entry_key(str(source), ["-I."], "headers", str(tmp_path))
    assert changed != key
    assert compile.entry_key(str(source), ["-I.", "-DX"], "headers", str(tmp_path)) != changed
    assert compile.entry_key(str(source), ["-I."], "other headers", str(tmp_path)) != changed


def test_headers_are_known_by_their_release_and_configuration_wherever_they_are(tmp_path):
    """The node's headers and a copy of the same package (the agent image's) are one entry."""
    def tree(name, config):
        (tmp_path / name / "include" / "generated").mkdir(parents=True)
        (tmp_path / name / "include" / "generated" / "utsrelease.h").write_text('#define UTS_RELEASE "6.1.0-57-amd64"')
        (tmp_path / name / "include" / "generated" / "autoconf.h").write_text(config)
        return str(tmp_path / name)
    node, copy, other = tree("node", "#define CONFIG_BPF 1"), tree("copy", "#define CONFIG_BPF 1"), \
        tree("other", "#define CONFIG_BPF 0")
    absent = str(tmp_path / "absent")
    assert compile.headers_identity(None, node, absent) == compile.headers_identity(copy, absent, absent)
    assert compile.headers_identity(other, absent, absent) != compile.headers_identity(copy, absent, absent)
    (tmp_path / "bare" / "include").mkdir(parents=True)
    (tmp_path / "bare2" / "include").mkdir(parents=True)
    assert compile.headers_identity(str(tmp_path / "bare"), absent, absent) != \
        compile.headers_identity(str(tmp_path / "bare2"), absent, absent), "without generated headers: by place"


def test_a_cache_that_cant_be_written_falls_back_to_a_temporary_one_of_this_user(monkeypatch, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv(compile.CACHE_ENV, str(blocked / "bpf"))
    monkeypatch.setattr(compile.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    assert compile.cache_dir() == str(tmp_path / "tmp" / f"kfault-bpf-{os.geteuid()}")


def test_a_cache_folder_others_can_write_is_never_used(monkeypatch, tmp_path):
    """The agent loads what the cache holds as BPF instructions: a folder another user could
    have filled (one taken first in a shared /tmp) is refused, as is an entry others can write."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv(compile.CACHE_ENV, str(shared))
    monkeypatch.setattr(compile.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    assert compile.cache_dir() == str(tmp_path / "tmp" / f"kfault-bpf-{os.geteuid()}")
    entry = tmp_path / "entry.json"
    entry.write_text(json.dumps(WELL_FORMED))
    assert compile.cached(str(entry)) == WELL_FORMED
    entry.chmod(0o666)
    assert compile.cached(str(entry)) is None


WELL_FORMED = {"format": compile.FORMAT, "source": "x.c", "cflags": [],
               "maps": {"m": {"type": 2, "key_size": 4, "value_size": 8, "max_entries": 1, "flags": 0}},
               "functions": {"f": {"insns": "", "maps": []}}}


@pytest.mark.parametrize("text", ["{}", "not json", json.dumps({**WELL_FORMED, "format": compile.FORMAT + 1}),
                                  json.dumps({**WELL_FORMED, "maps": {"m": {"type": 2}}})])
def test_an_entry_that_is_not_well_formed_is_compiled_again(monkeypatch, tmp_path, text):
    source = tmp_path / "bpf" / "prog.c"
    source.parent.mkdir()
    source.write_text("int x;\n")
    monkeypatch.setenv(compile.CACHE_ENV, str(tmp_path / "cache"))
    key = compile.entry_key(str(source), [], "headers", str(source.parent))
    os.makedirs(tmp_path / "cache")
    (tmp_path / "cache" / f"{key}.json").write_text(text)
    compiles = []

    def compiler(argv, **_):
        compiles.append(argv)
        compile.write_atomically(argv[argv.index("--out") + 1], WELL_FORMED)
        return subprocess.CompletedProcess(argv, 0, "", "")
    monkeypatch.setattr(compile.subprocess, "run", compiler)
    assert compile.compiled(str(source), [], None, "headers", str(source.parent)) == WELL_FORMED
    assert len(compiles) == 1
    assert compile.compiled(str(source), [], None, "headers", str(source.parent)) == WELL_FORMED
    assert len(compiles) == 1, "a well-formed entry is loaded, not compiled again"


def test_the_agents_modules_leave_libbcc_out():
    code = ("import sys; import kfault_agent.node, kfault_agent.engines.netfault, kfault_agent.engines.iofault, "
            "kfault_agent.kernel.loader, kfault_agent.kernel.capabilities; "
            "assert 'bcc' not in sys.modules, 'bcc imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
