"""Struct layouts from BTF (kernel/btf.py): against BTF written here by hand, where every offset
is known, and against this machine's own kernel (/sys/kernel/btf/vmlinux)."""
import os
import re
import shutil
import struct
import subprocess
import time

import pytest

from kfault_agent.kernel import btf


class BtfWriter:
    """A BTF blob as the kernel lays one out (Documentation/bpf/btf.rst), built type by type."""

    def __init__(self):
        self.types, self.strings, self.count = [], b"\0", 0

    def _name(self, name):
        if not name:
            return 0
        at = len(self.strings)
        self.strings += name.encode() + b"\0"
        return at

    def add(self, kind, name, size_or_type, vlen=0, flag=0, extra=b""):
        info = (flag << 31) | (kind << 24) | vlen
        self.types.append(struct.pack("<III", self._name(name), info, size_or_type) + extra)
        self.count += 1
        return self.count

    def int(self, name, size):
        return self.add(btf.KIND_INT, name, size, extra=struct.pack("<I", size * 8))

    def aggregate(self, name, size, members, kind=btf.KIND_STRUCT, flag=0):
        """members: (name, type id, offset in bits[, bitfield size])."""
        extra = b""
        for member_name, type_id, bits, *bitfield in members:
            offset = bits | (bitfield[0] << 24 if bitfield else 0) if flag else bits
            extra += struct.pack("<III", self._name(member_name), type_id, offset)
        return self.add(kind, name, size, vlen=len(members), flag=flag, extra=extra)

    def blob(self):
        types = b"".join(self.types)
        return struct.pack("<HBBIIIII", btf.BTF_MAGIC, 1, 0, 24, 0, len(types), len(types), len(self.strings)) \
            + types + self.strings


def file_like(writer):
    """The shape of 6.13's struct file: f_path in an anonymous union, const, through a typedef."""
    u16, u32, u64 = writer.int("unsigned short", 2), writer.int("unsigned int", 4), writer.int("long long", 8)
    fmode = writer.add(btf.KIND_TYPEDEF, "fmode_t", u32)
    dentry_ptr = writer.add(btf.KIND_PTR, "", writer.aggregate("dentry", 8, [("d_flags", u64, 0)]))
    path = writer.aggregate("path", 16, [("mnt", u64, 0), ("dentry", dentry_ptr, 64)])
    const_path = writer.add(btf.KIND_CONST, "", path)
    inner = writer.aggregate("", 8, [("f_pos_lock", u32, 0), ("f_pipe", u32, 32)])
    union = writer.aggregate("", 16, [("f_path", const_path, 0), ("__f_path", path, 0), ("", inner, 0)],
                             kind=btf.KIND_UNION)
    inode_ptr = writer.add(btf.KIND_PTR, "", writer.aggregate("inode", 8, [("i_mode", u16, 0), ("i_opflags", u16, 16)]))
    writer.aggregate("file", 48, [("f_lock", u32, 0), ("f_mode", fmode, 32), ("f_inode", inode_ptr, 64),
                                  ("", union, 128), ("f_flags", u16, 256, 3), ("f_ra", u16, 259, 13)], flag=1)


@pytest.fixture
def handmade(tmp_path):
    writer = BtfWriter()
    file_like(writer)
    path = tmp_path / "vmlinux"
    path.write_bytes(writer.blob())
    return str(path)


def test_nested_paths_go_through_anonymous_unions_qualifiers_and_typedefs(handmade):
    assert btf.offset_of("file", "f_mode", handmade) == 4
    assert btf.member("file", "f_mode", handmade) == btf.Member(4, 4)               # through fmode_t
    assert btf.offset_of("file", "f_path", handmade) == 16                          # in the anonymous union
    assert btf.offset_of("file", "f_path.dentry", handmade) == 24                   # through const struct path
    assert btf.offset_of("file", "__f_path.mnt", handmade) == 16
    assert btf.offset_of("file", "f_pipe", handmade) == 20                          # struct in union in struct
    assert btf.member("inode", "i_mode", handmade) == btf.Member(0, 2)
    assert btf.layout_cflags({"KFAULT_OFF_FILE_F_PATH": ("file", "f_path"),
                              "KFAULT_OFF_FILE_F_MODE": ("file", "f_mode", 4)}, handmade) == [
        "-DKFAULT_OFF_FILE_F_MODE=4", "-DKFAULT_OFF_FILE_F_PATH=16"]


@pytest.mark.parametrize("struct_name, member_path, said", [
    ("file", "f_flag", "struct file's f_flag: .* has struct file without f_flag"),
    ("file", "f_path.inode", "struct file's f_path.inode: .* without f_path.inode"),
    ("file", "f_mode.x", "without f_mode.x"),                     # not a struct: nothing inside
    ("files", "f_mode", "has no struct files"),
    ("file", "f_ra", "f_ra is a bitfield"),
    ("file", "f_flags", "f_flags is a bitfield"),                 # byte-aligned, still a bitfield
])
def test_what_is_missing_is_named(handmade, struct_name, member_path, said):
    with pytest.raises(btf.LayoutMissing, match=said):
        btf.offset_of(struct_name, member_path, handmade)


def test_a_size_other_than_the_programs_is_refused(handmade):
    with pytest.raises(btf.LayoutMissing, match="i_mode is 2 bytes .* reads it as 4"):
        btf.layout_cflags({"KFAULT_OFF_INODE_I_MODE": ("inode", "i_mode", 4)}, handmade)


def test_structs_of_one_name_must_agree(tmp_path):
    writer = BtfWriter()
    u32 = writer.int("unsigned int", 4)
    writer.add(btf.KIND_FWD, "thing", 0)                       # a declaration alone: not a layout
    writer.aggregate("thing", 8, [("a", u32, 0), ("b", u32, 32)])
    writer.aggregate("thing", 8, [("a", u32, 0), ("b", u32, 32)])
    writer.aggregate("thing", 8, [("b", u32, 0), ("a", u32, 32)])
    writer.aggregate("thing", 4, [("c", u32, 0)])
    path = tmp_path / "vmlinux"
    path.write_bytes(writer.blob())
    assert btf.offset_of("thing", "c", str(path)) == 0         # only one of them has it
    with pytest.raises(btf.LayoutMissing, match=r"several struct thing placing it differently \(\[0, 4\]\)"):
        btf.offset_of("thing", "a", str(path))


def test_no_btf_and_a_kind_too_new_are_named(tmp_path, handmade):
    with pytest.raises(btf.LayoutMissing, match="has no BTF .* CONFIG_DEBUG_INFO_BTF"):
        btf.offset_of("file", "f_mode", str(tmp_path / "absent"))
    (tmp_path / "garbage").write_bytes(b"\x7fELF" + bytes(40))
    with pytest.raises(btf.LayoutMissing, match="is not BTF"):
        btf.offset_of("file", "f_mode", str(tmp_path / "garbage"))
    writer = BtfWriter()
    writer.add(31, "future", 0)
    (tmp_path / "future").write_bytes(writer.blob())
    with pytest.raises(btf.LayoutMissing, match="kind 31 .* newer than"):
        btf.offset_of("file", "f_mode", str(tmp_path / "future"))
    assert isinstance(btf.LayoutMissing("x"), btf.KernelUnsupported)      # a refusal like any kernel's


needs_btf = pytest.mark.skipif(not os.path.exists(btf.VMLINUX), reason="this kernel has no BTF")


@needs_btf
def test_this_kernels_layout_holds_what_has_not_moved_in_years():
    # struct path has been {mnt, dentry} since 2.6; struct inode begins with i_mode
    assert btf.member("path", "mnt") == btf.Member(0, 8)
    assert btf.member("path", "dentry") == btf.Member(8, 8)
    assert btf.member("inode", "i_mode") == btf.Member(0, 2)
    assert btf.offset_of("file", "f_path.dentry") == btf.offset_of("file", "f_path") + 8
    assert btf.member("file", "f_mode").size == 4
    assert btf.member("file", "f_inode").size == 8
    assert btf.member("file", "f_path").size == 16


@needs_btf
@pytest.mark.skipif(not shutil.which("pahole"), reason="no pahole (dwarves) to compare with")
def test_this_kernels_layout_is_paholes():
    said = subprocess.run(["pahole", "-C", "file", btf.VMLINUX], capture_output=True, text=True).stdout
    offsets = {name: int(offset) for name, offset in re.findall(r"[\s*](\w+);\s+/\*\s+(\d+)\s", said)}
    for member in ("f_mode", "f_inode", "f_path", "f_flags", "f_op"):
        assert btf.offset_of("file", member) == offsets[member], member


@needs_btf
def test_the_kernels_btf_is_read_well_under_a_second():
    with open(btf.VMLINUX, "rb") as handle:
        data = handle.read()
    started = time.perf_counter()
    fresh = btf.Btf(data)
    fresh.member("file", "f_path.dentry")
    fresh.member("inode", "i_mode")
    assert time.perf_counter() - started < 0.5
    assert btf.load() is btf.load(btf.VMLINUX), "read once per process"


def test_functions_are_found_by_name(tmp_path):
    writer = BtfWriter()
    proto = writer.add(13, "", 0)                               # FUNC_PROTO, no parameters
    writer.add(btf.KIND_FUNC, "security_file_permission", proto)
    (tmp_path / "vmlinux").write_bytes(writer.blob())
    assert btf.function_ids({"security_file_permission", "absent"}, str(tmp_path / "vmlinux")) == {
        "security_file_permission": 2}


@needs_btf
def test_the_kernels_functions_are_found_where_programs_attach():
    ids = btf.function_ids({"security_file_open", "no_such_function_here"})
    assert set(ids) == {"security_file_open"} and ids["security_file_open"] > 0


def test_capabilities_say_where_the_layouts_came_from_or_why_there_are_none(tmp_path, handmade):
    from kfault_agent.kernel import capabilities
    found = capabilities.probe_layouts(handmade)        # file_like's struct file and inode
    assert found.available and found.reason == (
        f"BTF ({handmade}): file.f_path at 16, file.f_path.mnt at 16, file.f_path.dentry at 24, "
        "file.f_mode at 4, file.f_inode at 8, inode.i_mode at 0"), found
    absent = capabilities.probe_layouts(str(tmp_path / "absent"))
    assert not absent.available and "this kernel has no BTF" in absent.reason, absent
