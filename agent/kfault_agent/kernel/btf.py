"""Struct layouts of the running kernel, read from its BTF (/sys/kernel/btf/vmlinux).

bcc 0.26 does no CO-RE, so a BPF program that reads a kernel struct must be compiled knowing
where each field is. Rather than the node's headers of its exact release (which managed nodes
don't have), the loader asks here for the offsets it needs and passes them as -D flags; every
distribution kernel since about 5.4 carries BTF (CONFIG_DEBUG_INFO_BTF).

The format is the kernel's Documentation/bpf/btf.rst: a header, then a section of types, then
one of NUL-terminated strings. Each type is a `struct btf_type` (name_off, info, size or type:
three u32) followed by data whose length depends on its kind (`_KIND_EXTRA`); type ids count
from 1 in the order the types appear. A struct's or union's data is `vlen` members of
(name_off, type, offset), the offset in bits from the start of the struct (with the kind flag,
bits 0-23 are the offset and 24-31 a bitfield's size). A member with no name is an anonymous
struct or union whose own members are reached as if they were the outer one's, as in C.

Only what is asked is decoded: one pass over the type headers finds where each type starts and
the ids of each struct, union and function name; a struct's members are read when a path goes
through it. The same reader gives kernel/compile.py the id of the function a TRACING or LSM
program attaches to.
"""
import functools
import struct
from dataclasses import dataclass

from kfault_agent.errors import KernelUnsupported

VMLINUX = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = 0xEB9F

# BTF kinds (linux/btf.h): the ones a member path walks through or sizes.
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD, KIND_TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_FUNC, KIND_TYPE_TAG, KIND_ENUM64 = 9, 10, 11, 12, 18, 19
# Kinds that only qualify another type: a member of `const struct path` is a struct path.
_QUALIFIERS = {KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG}
# Bytes that follow a struct btf_type, per kind: (fixed, per vlen entry). A kind not here (a
# newer kernel's) can't be stepped over, so the types after it can't be found: an error.
_KIND_EXTRA = {1: (4, 0), 2: (0, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 7: (0, 0), 8: (0, 0),
               9: (0, 0), 10: (0, 0), 11: (0, 0), 12: (0, 0), 13: (0, 8), 14: (4, 0), 15: (0, 12), 16: (0, 0),
               17: (4, 0), 18: (0, 0), 19: (0, 12)}
_TYPE_SIZE = 12                 # struct btf_type
POINTER_SIZE = 8                # the 64-bit architectures kfault runs on (loader.IO_ARCH_CFLAGS)


class LayoutMissing(KernelUnsupported):
    """The kernel's BTF can't say where a field is: no BTF, no such struct or member, or a
    member kfault can't read as a whole (a bitfield). The message names the struct and field."""


@dataclass(frozen=True)
class Member:
    offset: int                 # bytes from the start of the outermost struct of the path
    size: int                   # bytes of the member's type


class Btf:
    """One BTF blob (the kernel's, or a file of the same format), decoded as it is asked."""

    def __init__(self, data, path=VMLINUX):
        self.path = path
        if len(data) < 24:
            raise LayoutMissing(f"{path} is too short to be BTF")
        magic = struct.unpack_from("<H", data)[0]
        self.order = "<" if magic == BTF_MAGIC else ">"     # the kernel's own byte order
        if struct.unpack_from(self.order + "H", data)[0] != BTF_MAGIC:
            raise LayoutMissing(f"{path} is not BTF (magic {magic:#06x})")
        _magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            self.order + "HBBIIIII", data)
        self.data = memoryview(data)
        self.types_start, self.types_end = hdr_len + type_off, hdr_len + type_off + type_len
        self.strings = bytes(data[hdr_len + str_off:hdr_len + str_off + str_len])
        self._header = struct.Struct(self.order + "III")
        self._index()
        self._members = {}

    def _index(self):
        """One pass over the type headers: where each type starts (by id), the ids of the
        structs and unions of each name, and of the functions (by the name's string offset)."""
        unpack, data = self._header.unpack_from, self.data
        starts, aggregates, functions = [0], {}, {}        # id 0 is void: it has no entry
        offset, end = self.types_start, self.types_end
        while offset < end:
            name_off, info, _ = unpack(data, offset)
            kind = (info >> 24) & 0x1F
            if kind == KIND_STRUCT or kind == KIND_UNION:
                aggregates.setdefault(name_off, []).append(len(starts))
            elif kind == KIND_FUNC:
                functions.setdefault(name_off, len(starts))
            starts.append(offset)
            try:
                fixed, per_entry = _KIND_EXTRA[kind]
            except KeyError:
                raise LayoutMissing(f"{self.path} has a type of kind {kind} (id {len(starts) - 1}), newer than "
                                    "kfault's reader knows: the types after it can't be found") from None
            offset += _TYPE_SIZE + fixed + per_entry * (info & 0xFFFF)
        self.starts, self.aggregates, self.functions = starts, aggregates, functions

    def name(self, name_off):
        return self.strings[name_off:self.strings.index(b"\0", name_off)].decode()

    def _type(self, type_id):
        """(kind, kind_flag, vlen, name_off, size_or_type, offset of the data after it)."""
        offset = self.starts[type_id]
        name_off, info, size_or_type = self._header.unpack_from(self.data, offset)
        return (info >> 24) & 0x1F, info >> 31, info & 0xFFFF, name_off, size_or_type, offset + _TYPE_SIZE

    def _resolved(self, type_id):
        """The type under typedefs and qualifiers: (id, kind)."""
        for _ in range(64):         # a chain of qualifiers, never a loop in a valid BTF
            if type_id == 0:
                return 0, 0
            kind, _flag, _vlen, _name, target, _data = self._type(type_id)
            if kind not in _QUALIFIERS:
                return type_id, kind
            type_id = target
        raise LayoutMissing(f"{self.path}: type {type_id} qualifies itself")

    def size_of(self, type_id):
        """Bytes of a type, as C's sizeof."""
        type_id, kind = self._resolved(type_id)
        if kind == KIND_PTR:
            return POINTER_SIZE
        if kind == KIND_ARRAY:
            elem, _index, nelems = struct.unpack_from(self.order + "III", self.data, self._type(type_id)[5])
            return self.size_of(elem) * nelems
        if kind in (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64):
            return self._type(type_id)[4]
        raise LayoutMissing(f"{self.path}: type {type_id} (kind {kind}) has no size")

    def members(self, type_id):
        """[(name, type id, bit offset, bitfield size)] of a struct or union, decoded once."""
        if type_id not in self._members:
            kind, flag, vlen, _name, _size, offset = self._type(type_id)
            found = []
            for i in range(vlen):
                name_off, member_type, bits = self._header.unpack_from(self.data, offset + 12 * i)
                if flag:
                    found.append((self.name(name_off), member_type, bits & 0xFFFFFF, bits >> 24))
                else:
                    found.append((self.name(name_off), member_type, bits, 0))
            self._members[type_id] = found
        return self._members[type_id]

    def _find(self, type_id, name):
        """(member type id, bit offset, bitfield size) of `name` in a struct or union, looking
        inside its anonymous structs and unions as C does, or None."""
        for member_name, member_type, bits, bitfield in self.members(type_id):
            if member_name == name:
                return member_type, bits, bitfield
            if not member_name:
                inner, kind = self._resolved(member_type)
                if kind in (KIND_STRUCT, KIND_UNION):
                    found = self._find(inner, name)
                    if found:
                        return found[0], bits + found[1], found[2]
        return None

    def _name_offsets(self, name):
        """Where `name` is in the strings (once in the kernel's, which are deduplicated)."""
        wanted, at = b"\0" + name.encode() + b"\0", 0
        while (at := self.strings.find(wanted, at)) >= 0:
            yield at + 1
            at += 1

    def ids_of(self, struct_name):
        """The ids of the structs and unions named `struct_name` (several where kernel objects
        built apart define it differently)."""
        return [i for at in self._name_offsets(struct_name) for i in self.aggregates.get(at, [])]

    def function_id(self, name):
        """The type id of the function `name` (a FUNC), or None."""
        return next((self.functions[at] for at in self._name_offsets(name) if at in self.functions), None)

    def member(self, struct_name, member_path):
        """Where `member_path` ("f_path.dentry") is in struct `struct_name`: a Member, or
        LayoutMissing naming what is missing."""
        where = f"struct {struct_name}'s {member_path}"
        ids = self.ids_of(struct_name)
        if not ids:
            raise LayoutMissing(f"{where}: the kernel's BTF ({self.path}) has no struct {struct_name}")
        layouts = set()
        for type_id in ids:
            bits, current = 0, type_id
            for depth, part in enumerate(member_path.split(".")):
                kind = self._resolved(current)[1] if depth else KIND_STRUCT
                if kind not in (KIND_STRUCT, KIND_UNION):
                    current = None
                    break
                found = self._find(self._resolved(current)[0], part)
                if found is None:
                    current = None
                    break
                current, member_bits, bitfield = found
                if bitfield or member_bits % 8:
                    raise LayoutMissing(f"{where}: {part} is a bitfield, which kfault can't read by offset")
                bits += member_bits
            if current is not None:
                layouts.add(Member(bits // 8, self.size_of(current)))
        if not layouts:
            raise LayoutMissing(f"{where}: the kernel's BTF ({self.path}) has struct {struct_name} without "
                                f"{member_path}")
        if len(layouts) > 1:
            raise LayoutMissing(f"{where}: the kernel's BTF ({self.path}) has several struct {struct_name} "
                                f"placing it differently ({sorted(m.offset for m in layouts)})")
        return layouts.pop()


def load(btf_path=VMLINUX):
    """The BTF at `btf_path`, read and indexed once per process."""
    return _load(btf_path)


@functools.lru_cache(maxsize=4)     # by path: load() and load(VMLINUX) are one entry
def _load(btf_path):
    try:
        with open(btf_path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise LayoutMissing(f"this kernel has no BTF ({btf_path} is missing): kfault reads the layout of the "
                            "kernel's structs there, and finds the functions its hooks attach to; boot a kernel "
                            "built with CONFIG_DEBUG_INFO_BTF=y, as every current distribution's is") from None
    except OSError as err:
        raise LayoutMissing(f"the kernel's BTF ({btf_path}) can't be read: {err}") from None
    return Btf(data, btf_path)


def member(struct_name, member_path, btf_path=VMLINUX):
    """Where `member_path` is in struct `struct_name` (offset and size in bytes), or LayoutMissing."""
    return load(btf_path).member(struct_name, member_path)


def offset_of(struct_name, member_path, btf_path=VMLINUX):
    """Bytes from the start of struct `struct_name` to `member_path` ("f_path.dentry": through
    nested and anonymous structs and unions), as C's offsetof; LayoutMissing if it has none."""
    return member(struct_name, member_path, btf_path).offset


def function_ids(names, btf_path=VMLINUX):
    """{name: type id} of the kernel functions named that its BTF has (a TRACING or LSM program
    attaches by that id)."""
    found = {name: load(btf_path).function_id(name) for name in names}
    return {name: type_id for name, type_id in found.items() if type_id}


def layout_cflags(fields, btf_path=VMLINUX):
    """-D flags giving each field's offset: {"KFAULT_OFF_FILE_F_PATH": ("file", "f_path"), ...}
    -> ["-DKFAULT_OFF_FILE_F_PATH=64", ...]. A field may carry the size in bytes the program
    reads it as, ("file", "f_mode", 4): a different size in this kernel is LayoutMissing."""
    flags = []
    for macro, (struct_name, member_path, *size) in sorted(fields.items()):
        found = member(struct_name, member_path, btf_path)
        if size and found.size != size[0]:
            raise LayoutMissing(f"struct {struct_name}'s {member_path} is {found.size} bytes in this kernel's BTF "
                                f"({btf_path}); kfault reads it as {size[0]}")
        flags.append(f"-D{macro}={found.offset}")
    return flags
