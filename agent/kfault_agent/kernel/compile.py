"""BPF C compiled once per source, flags and kernel, in a short-lived process; the result cached.

bcc (libbcc, with LLVM) costs ~66 MB in a process and 35-100 s per compile under TCG, so the
agent never imports it: `compiled()` finds a cache entry, or runs
`python -m kfault_agent.kernel.compile` to make one. The compiler process creates bcc's maps
and loads nothing; it records for each map its type, sizes, flags and bcc's description of its
key and value types, and for each function its instructions, which of them load which map's fd
(the fds bcc embedded, mapped back to map names), and the vmlinux BTF id a TRACING or LSM
program attaches to. The agent (kernel/loader.py) creates its own maps and loads its own
programs from that with plain bpf() calls: only clang's work is shared.

An entry is keyed by every file under bpf/ and the source, the cflags, the kernel (release and
build), the headers compiled against and bcc's version, and written atomically (a temporary
file renamed), so agents and runners starting at once are safe.
"""
import argparse
import base64
import hashlib
import json
import logging
import os
import struct
import subprocess
import sys
import tempfile
import time

from kfault_agent.kernel import btf

log = logging.getLogger(__name__)

CACHE_ENV = "KFAULT_BPF_CACHE"
DEFAULT_CACHE = "/var/cache/kfault/bpf"
FORMAT = 1                      # of an entry; part of its key
# Function name prefixes bcc gives TRACING and LSM programs, and where in vmlinux BTF each attaches.
ATTACH_PREFIXES = {"kmod_ret__": "", "kfunc__": "", "kretfunc__": "", "lsm__": "bpf_lsm_"}


class CompileError(Exception):
    """The compiler process failed: what it said."""


def trusted(path):
    """Whether only this user can have written `path`: ours, not a link, and no write bit for
    group or others. The agent loads what it finds in the cache as BPF instructions, so a
    folder or entry another user could write (a name in a shared /tmp taken first) is refused."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022 and not os.path.islink(path)


def cache_dir():
    """The cache's directory, made if need be: $KFAULT_BPF_CACHE, else /var/cache/kfault/bpf;
    where that can't be written (a read-only root, as in the VM tier), one of this user's under
    the temporary directory, shared by its processes on this machine still. A folder anyone
    else could write is never used."""
    wanted = os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    for folder in (wanted, os.path.join(tempfile.gettempdir(), f"kfault-bpf-{os.geteuid()}")):
        try:
            os.makedirs(folder, mode=0o755, exist_ok=True)
            if os.access(folder, os.W_OK) and trusted(folder):
                return folder
        except OSError:
            pass
    raise CompileError(f"no directory for the BPF compile cache that only this user can write: {wanted} "
                       f"(set {CACHE_ENV})")


def well_formed(entry):
    """Whether a cache entry has what the loader reads (else it is compiled again)."""
    return (isinstance(entry, dict) and entry.get("format") == FORMAT and isinstance(entry.get("maps"), dict)
            and isinstance(entry.get("functions"), dict)
            and all(isinstance(m, dict) and {"type", "key_size", "value_size", "max_entries", "flags"} <= m.keys()
                    for m in entry["maps"].values())
            and all(isinstance(f, dict) and {"insns", "maps"} <= f.keys() for f in entry["functions"].values()))


def cached(path):
    """The entry at `path` if it is trusted and well formed, else None."""
    if not trusted(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            entry = json.load(handle)
    except (OSError, ValueError):
        return None
    return entry if well_formed(entry) else None


def _tree_files(folder):
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            yield os.path.join(root, name)


def _bcc_version():
    """bcc's version, read from its package without importing it (that would load libbcc)."""
    import importlib.util
    spec = importlib.util.find_spec("bcc")
    if spec is None or not spec.submodule_search_locations:
        return "none"
    try:
        with open(os.path.join(list(spec.submodule_search_locations)[0], "version.py"), encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return "unknown"


def _stat_identity(path, with_mtime=True):
    """A file's path, size and (not for sysfs, whose times vary from boot to boot) mtime."""
    try:
        st = os.stat(path)
        return f"{os.path.realpath(path)}:{st.st_size}" + (f":{st.st_mtime_ns}" if with_mtime else "")
    except OSError:
        return f"{path}:absent"


# What a headers tree is: the release and configuration its generated headers say.
HEADERS_IDENTITY_FILES = ("include/generated/utsrelease.h", "include/generated/autoconf.h")


def headers_identity(headers_path, build_dir, kheaders):
    """What names the headers bcc will read (the given directory, else the node's build tree,
    else the kernel's own archive: bcc's search order): a tree by its release and configuration,
    wherever it is, so one package's headers give one entry whether bcc reads them in the node's
    /lib/modules or in a copy (the agent image's)."""
    tree = headers_path or (build_dir if os.path.exists(os.path.join(build_dir, "include")) else None)
    if tree is None:
        return "kheaders:" + _stat_identity(kheaders, with_mtime=False)
    digest = hashlib.sha256()
    for name in HEADERS_IDENTITY_FILES:
        try:
            with open(os.path.join(tree, name), "rb") as handle:
                digest.update(hashlib.sha256(handle.read()).digest())
        except OSError:
            digest.update(f"{name} absent".encode())
            digest.update(_stat_identity(os.path.join(tree, "include")).encode())
    return "tree:" + digest.hexdigest()[:32]


def entry_key(source, cflags, headers_ident, bpf_dir):
    digest = hashlib.sha256()
    for path in [source] + [p for p in _tree_files(bpf_dir) if p != source]:
        digest.update(os.path.relpath(path, bpf_dir).encode() + b"\0")
        with open(path, "rb") as handle:
            digest.update(hashlib.sha256(handle.read()).digest())
    with open(__file__, "rb") as handle:      # what reads bcc's output: a new compiler, new entries
        digest.update(hashlib.sha256(handle.read()).digest())
    uname = os.uname()
    for part in [f"format {FORMAT}", *cflags, uname.release, uname.version, uname.machine, headers_ident,
                 _bcc_version(), _stat_identity(btf.VMLINUX, with_mtime=False)]:
        digest.update(part.encode() + b"\0")
    return f"{os.path.basename(source).rsplit('.', 1)[0]}-{digest.hexdigest()[:32]}"


def compiled(source, cflags, headers_path, headers_ident, bpf_dir):
    """The cache entry of `source` compiled with `cflags` against `headers_path` (None: bcc's
    own search): from the cache, else compiled now in a subprocess. CompileError if it fails."""
    key = entry_key(source, cflags, headers_ident, bpf_dir)
    folder = cache_dir()
    path = os.path.join(folder, key + ".json")
    entry = cached(path)
    if entry is not None:
        return entry
    env = {**os.environ, "KFAULT_COMPILE_PARENT": str(os.getpid())}
    env.pop("BCC_KERNEL_SOURCE", None)
    if headers_path:
        env["BCC_KERNEL_SOURCE"] = headers_path     # bcc reads it as it compiles
    argv = [sys.executable, "-m", "kfault_agent.kernel.compile", "--out", path, source,
            *[f"--cflag={c}" for c in cflags]]
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        said = [line for line in (done.stderr or "").strip().splitlines() if line.strip()]
        raise CompileError(f"compiling {os.path.basename(source)} failed: " + " / ".join(said[-6:]))
    log.info("compiled %s in %.1f s (cached as %s)", os.path.basename(source), time.monotonic() - started, key)
    entry = cached(path)
    if entry is None:
        raise CompileError(f"the compiler's entry {path} is not one kfault can load")
    return entry


# --- the compiler process ---

BPF_LD_IMM64 = 0x18
BPF_PSEUDO_MAP_FD = 1


def map_relocations(insns, fd_names):
    """[(instruction index, map name)] of the ld_imm64 instructions that load a map's fd."""
    relocations = []
    index = 0
    while index < len(insns) // 8:
        code, regs, _off, imm = struct.unpack_from("<BBhi", insns, index * 8)
        if code == BPF_LD_IMM64:
            if regs >> 4 == BPF_PSEUDO_MAP_FD:
                if imm not in fd_names:
                    raise CompileError(f"instruction {index} loads fd {imm}, which is no map of the module")
                relocations.append((index, fd_names[imm]))
            index += 2
        else:
            index += 1
    return relocations


def _compile(source, cflags):
    import ctypes

    from bcc import BPF, lib
    BPF._trace_autoload = lambda self: None     # load nothing here: the agent loads its own
    for fn, restype, argtypes in [("bpf_num_tables", ctypes.c_size_t, [ctypes.c_void_p]),
                                  ("bpf_table_name", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_size_t]),
                                  ("bpf_table_fd_id", ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t]),
                                  ("bpf_table_key_size_id", ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_size_t]),
                                  ("bpf_table_leaf_size_id", ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_size_t]),
                                  ("bpf_table_key_desc_id", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_size_t]),
                                  ("bpf_table_leaf_desc_id", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_size_t])]:
        getattr(lib, fn).restype, getattr(lib, fn).argtypes = restype, argtypes
    started = time.monotonic()
    module = BPF(src_file=source.encode(), cflags=list(cflags))
    compile_s = time.monotonic() - started
    maps, fd_names = {}, {}
    for i in range(lib.bpf_num_tables(module.module)):
        name = lib.bpf_table_name(module.module, i).decode()
        fd_names[lib.bpf_table_fd_id(module.module, i)] = name
        maps[name] = {"type": lib.bpf_table_type_id(module.module, i),
                      "key_size": lib.bpf_table_key_size_id(module.module, i),
                      "value_size": lib.bpf_table_leaf_size_id(module.module, i),
                      "max_entries": lib.bpf_table_max_entries_id(module.module, i),
                      "flags": lib.bpf_table_flags_id(module.module, i),
                      "key": json.loads(lib.bpf_table_key_desc_id(module.module, i).decode() or "null"),
                      "value": json.loads(lib.bpf_table_leaf_desc_id(module.module, i).decode() or "null")}
    functions = {}
    for i in range(lib.bpf_num_functions(module.module)):
        name = lib.bpf_function_name(module.module, i)
        insns = ctypes.string_at(lib.bpf_function_start(module.module, name),
                                 lib.bpf_function_size(module.module, name))
        functions[name.decode()] = {"insns": base64.b64encode(insns).decode(),
                                    "maps": map_relocations(insns, fd_names)}
    targets = {name: prefix + name[len(bcc_prefix):] for name in functions
               for bcc_prefix, prefix in ATTACH_PREFIXES.items() if name.startswith(bcc_prefix)}
    ids = btf.function_ids(set(targets.values())) if targets and os.path.exists(btf.VMLINUX) else {}
    for name, target in targets.items():
        functions[name]["attach_to"] = target
        functions[name]["attach_btf_id"] = ids.get(target)
    return {"format": FORMAT, "source": source, "cflags": list(cflags), "compile_s": round(compile_s, 2),
            "license": lib.bpf_module_license(module.module).decode(),
            "kern_version": lib.bpf_module_kern_version(module.module), "maps": maps, "functions": functions}


def write_atomically(path, entry):
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(entry, handle)
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def die_with_parent():
    """The compile ends with the process that asked for it (a stopped or killed start), rather
    than running on for minutes as an orphan."""
    import ctypes
    import signal
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    parent = os.environ.get("KFAULT_COMPILE_PARENT")
    if parent and os.getppid() != int(parent):      # it was gone before the prctl
        raise SystemExit("the process that asked for this compile is gone")


def main(argv=None):
    die_with_parent()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("--cflag", action="append", default=[])
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    write_atomically(args.out, _compile(args.source, args.cflag))


if __name__ == "__main__":
    main()
