"""BPF maps as the engines use them: created with bpf() calls, typed from the compiled source.

A map's Key and Leaf are ctypes types built from bcc's description of the C types (kept in the
compile cache, kernel/compile.py), the one source being bpf/kfault.h as clang read it; the
interface is the one bcc's tables have ([], del, pop, items, clear, getvalue for per-CPU
arrays), so engines, the holder and the lab's CNI use either alike. Also the slot helpers
the engines write rules with.
"""
import ctypes
import os
from collections.abc import MutableMapping

from kfault_agent.kernel import bpfcall
from kfault_api import layout

# bcc's names of C scalar types (its JSON type description) -> ctypes.
SCALARS = {"_Bool": ctypes.c_bool, "char": ctypes.c_char, "signed char": ctypes.c_byte,
           "unsigned char": ctypes.c_ubyte, "short": ctypes.c_short, "unsigned short": ctypes.c_ushort,
           "int": ctypes.c_int, "unsigned int": ctypes.c_uint, "long": ctypes.c_long,
           "unsigned long": ctypes.c_ulong, "long long": ctypes.c_longlong,
           "unsigned long long": ctypes.c_ulonglong, "__int128": ctypes.c_int64 * 2,
           "unsigned __int128": ctypes.c_uint64 * 2}


def ctype_of(desc):
    """A ctypes type from bcc's JSON description of a C type: a scalar's name, or
    [name, [[field, type], [field, type, [length]], [field, type, bits], ...], "struct"|"union"|"struct_packed"]."""
    if isinstance(desc, str):
        return SCALARS[desc]
    name, members = desc[0], desc[1]
    kind = desc[2] if len(desc) > 2 else "struct"
    fields, anonymous = [], []
    for member in members:
        if len(member) == 2:
            fields.append((member[0], ctype_of(member[1])))
        elif isinstance(member[2], list):
            fields.append((member[0], ctype_of(member[1]) * member[2][0]))
        elif isinstance(member[2], int):
            fields.append((member[0], ctype_of(member[1]), member[2]))
        elif member[2] in ("struct", "union", "struct_packed"):
            field = member[0] or f"__anon{len(anonymous)}"
            if not member[0]:
                anonymous.append(field)
            fields.append((field, ctype_of(member)))
        else:
            raise ValueError(f"can't read bcc's type description {member!r}")
    namespace = {"_fields_": fields, "_anonymous_": anonymous}
    if kind == "struct_packed":
        namespace["_pack_"] = 1
    return type(str(name) or "anonymous", (ctypes.Union if kind == "union" else ctypes.Structure,), namespace)


def possible_cpus():
    """How many CPUs a per-CPU map holds a value for (/sys/devices/system/cpu/possible: 0-N)."""
    with open("/sys/devices/system/cpu/possible", encoding="ascii") as handle:
        count = 0
        for part in handle.read().strip().split(","):
            low, _, high = part.partition("-")
            count += int(high or low) - int(low) + 1
        return count


class Map(MutableMapping):
    """A hash-like map (hash, LRU hash, LPM trie): entries come and go."""

    def __init__(self, fd, name, spec):
        self.map_fd, self.name, self.spec = fd, name, spec
        self.max_entries = spec["max_entries"]
        self.Key = ctype_of(spec["key"]) if spec["key"] else ctypes.c_uint32
        self.Leaf = ctype_of(spec["value"]) if spec["value"] else ctypes.c_uint32

    def get_fd(self):
        return self.map_fd

    def _key(self, key):
        return key

    def __getitem__(self, key):
        leaf = self.Leaf()
        if not bpfcall.map_lookup(self.map_fd, self._key(key), leaf):
            raise KeyError(key)
        return leaf

    def __setitem__(self, key, leaf):
        bpfcall.map_update(self.map_fd, self._key(key), leaf)

    def __delitem__(self, key):
        if not bpfcall.map_delete(self.map_fd, self._key(key)):
            raise KeyError(key)

    def __iter__(self):
        key, following = None, self.Key()
        while bpfcall.map_next_key(self.map_fd, key, following):
            key, following = following, self.Key()
            yield key

    def __len__(self):
        return sum(1 for _ in self)

    def items(self):
        """(key, leaf) of the entries still there once read (the kernel may delete meanwhile)."""
        found = []
        for key in list(self):
            try:
                found.append((key, self[key]))
            except KeyError:
                pass
        return found

    def values(self):
        return [leaf for _, leaf in self.items()]

    def clear(self):
        for key in list(self):
            self.pop(key, None)

    def close(self):
        if self.map_fd >= 0:
            os.close(self.map_fd)
            self.map_fd = -1


class ArrayMap(Map):
    """An array: every slot exists; del zeroes one (bcc's Array)."""

    def _key(self, key):
        if isinstance(key, int):
            key = self.Key(key)
        if not 0 <= key.value < self.max_entries:
            raise IndexError(f"slot {key.value} of {self.name}: it has {self.max_entries}")
        return key

    def __iter__(self):
        return (self.Key(i) for i in range(self.max_entries))

    def __len__(self):
        return self.max_entries

    def __delitem__(self, key):
        bpfcall.map_update(self.map_fd, self._key(key), self.Leaf())

    def clear(self):
        for key in self:
            del self[key]


class PerCpuArrayMap(ArrayMap):
    """A per-CPU array: a slot's Leaf holds one value per possible CPU, each 8-byte aligned."""

    def __init__(self, fd, name, spec):
        super().__init__(fd, name, spec)
        self.sLeaf = self.Leaf
        self.total_cpu = possible_cpus()
        size = ctypes.sizeof(self.sLeaf)
        if size % 8 == 0:
            self.Leaf = self.sLeaf * self.total_cpu
        elif self.sLeaf in (ctypes.c_uint, ctypes.c_int):
            self.Leaf = (ctypes.c_uint64 if self.sLeaf is ctypes.c_uint else ctypes.c_int64) * self.total_cpu
        else:
            raise ValueError(f"{name}: a per-CPU value of {size} bytes is not 8-byte aligned")

    def getvalue(self, key):
        """The slot's values, one per CPU, as sLeaf."""
        raw = self[key]
        if ctypes.sizeof(self.sLeaf) % 8 == 0:
            return raw
        values = (self.sLeaf * self.total_cpu)()
        for cpu in range(self.total_cpu):
            values[cpu] = raw[cpu]
        return values


class FdArrayMap(ArrayMap):
    """A program or cgroup array: slots hold fds the kernel resolves; del empties a slot."""

    def __setitem__(self, key, leaf):
        if isinstance(leaf, str):       # a cgroup array takes a cgroup's directory
            fd = os.open(leaf, os.O_RDONLY | os.O_CLOEXEC)
            try:
                super().__setitem__(key, self.Leaf(fd))
            finally:
                os.close(fd)
            return
        super().__setitem__(key, self.Leaf(leaf) if isinstance(leaf, int) else leaf)

    def __delitem__(self, key):
        if not bpfcall.map_delete(self.map_fd, self._key(key)):
            raise KeyError(key)


class RingBufMap(Map):
    """A ring buffer: only its fd is used (kernel/holder.py's StopBell maps it)."""


MAP_CLASSES = {bpfcall.MAP_HASH: Map, bpfcall.MAP_LRU_HASH: Map, bpfcall.MAP_LPM_TRIE: Map,
               bpfcall.MAP_ARRAY: ArrayMap, bpfcall.MAP_PERCPU_ARRAY: PerCpuArrayMap,
               bpfcall.MAP_PROG_ARRAY: FdArrayMap, bpfcall.MAP_CGROUP_ARRAY: FdArrayMap,
               bpfcall.MAP_RINGBUF: RingBufMap}


def create(name, spec):
    """Create a map as the compile cache describes it (kernel/compile.py); its wrapper."""
    if spec["type"] not in MAP_CLASSES:
        raise ValueError(f"map {name}: type {spec['type']} is not one kfault uses")
    fd = bpfcall.map_create(spec["type"], spec["key_size"], spec["value_size"], spec["max_entries"],
                            spec["flags"], name)
    try:
        return MAP_CLASSES[spec["type"]](fd, name, spec)
    except BaseException:
        os.close(fd)
        raise


def write_slot(table, slot, fields):
    """Write one slot of a BPF array map: the given fields, the others zero."""
    leaf = table.Leaf()
    for name, value in fields.items():
        setattr(leaf, name, value)
    table[table.Key(slot)] = leaf


def rule_deadline(deadline_ns):
    """The deadline_ns field of a rule: a real CLOCK_MONOTONIC time, since the kernel reads
    0 as expired (bpf/kfault.h)."""
    if deadline_ns <= 0:
        raise ValueError(f"deadline_ns={deadline_ns}: a rule needs a CLOCK_MONOTONIC deadline above 0 "
                         "(0 means expired in bpf/kfault.h); compute it from the lease")
    return {"deadline_ns": deadline_ns}


def update_slot(table, slot, **fields):
    """Change some fields of one slot of a BPF array map, keeping the others."""
    key = table.Key(slot)
    leaf = table[key]
    for name, value in fields.items():
        setattr(leaf, name, value)
    table[key] = leaf


def write_padded_dfa(table, slot, dfa):
    """Write a glob's DFA (glob_dfa.Dfa) to slot `slot` of a table of struct kfault_io_dfa, for
    a walk that goes on past the matched text's end without a branch (bpf/lib/dns.h's and
    bpf/lib/tls.h's names, bpf/lib/http.h's paths, iofault.c's paths): the end (byte 0) goes to
    the accepting sink or the dead state, which no byte leaves; unused states are dead
    (bpf/kfault.h)."""
    leaf = table.Leaf()
    ctypes.memset(ctypes.addressof(leaf), layout.IO_DEAD_STATE, ctypes.sizeof(leaf))
    rows = list(enumerate(dfa.next)) + [(layout.IO_ACCEPT_STATE, [layout.IO_ACCEPT_STATE] * 256)]
    for index, row in rows:
        at = index * 256
        leaf.next[at:at + 256] = [layout.IO_DEAD_STATE if nxt is None else nxt for nxt in row]
        if index != layout.IO_ACCEPT_STATE:
            leaf.next[at] = layout.IO_ACCEPT_STATE if dfa.accepting[index] else layout.IO_DEAD_STATE
    leaf.accepting[:] = [1 if index < len(dfa.accepting) and dfa.accepting[index] else 0
                         for index in range(layout.IO_MAX_STATES)]
    leaf.accepting[layout.IO_ACCEPT_STATE] = 1
    table[table.Key(slot)] = leaf
