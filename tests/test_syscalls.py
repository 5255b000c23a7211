"""The syscall table is defined once for the kernel (bpf/syscalls.h) and listed again for the
schema (kfault_api.schema.IO_METHODS) and for SyscallChaos (kfault_api.syscalls): they must
agree, and the numbers must be the kernel's."""
import os
import re
import shutil
import subprocess

import pytest

from kfault_api import layout, schema, syscalls

SYSCALLS_H = os.path.join(os.path.dirname(__file__), "..", "bpf", "syscalls.h")
UNISTD_64 = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"


def header_text():
    with open(SYSCALLS_H, encoding="utf-8") as handle:
        return handle.read()


def macro_body(name):
    """The lines of one of the header's X-macro tables."""
    text = header_text()
    start = text.index(f"#define {name}(")
    return text[start:text.index("\n\n", start)]


def header_methods():
    """{method: syscalls} from the X(METHOD, syscall) lines of KFAULT_IO_SYSCALLS."""
    methods = {}
    for method, syscall in re.findall(r"^\s*X\((\w+),\s*(\w+)\)", macro_body("KFAULT_IO_SYSCALLS"), re.MULTILINE):
        methods.setdefault(method.lower(), []).append(syscall)
    return {method: tuple(syscalls) for method, syscalls in methods.items()}


def x86_64_numbers():
    """{syscall: number} of the KFAULT_ARCH_X86_64 block."""
    text = header_text()
    block = text[text.index("#if defined(KFAULT_ARCH_X86_64)"):text.index("#else")]
    return {name: int(number) for name, number in re.findall(r"#define KFAULT_NR_(\w+) (\d+)", block)}


def test_schema_lists_the_syscalls_the_kernel_decides_by():
    methods = header_methods()
    assert methods, "no X(METHOD, syscall) line found in bpf/syscalls.h"
    assert {m: tuple(s) for m, s in schema.IO_METHODS.items()} == {**methods, "getattr": header_stat_syscalls(),
                                                                   "create": methods["open"]}


def header_stat_syscalls():
    """The syscalls of KFAULT_IO_STAT_SYSCALLS' S(layout, syscall) lines."""
    return tuple(re.findall(r"^\s*S\((?:STAT|STATX),\s*(\w+)\)", header_text(), re.MULTILINE))


def test_schema_lists_the_stat_syscalls_attr_override_rewrites():
    assert header_stat_syscalls() == schema.IO_STAT_SYSCALLS


def test_every_method_is_a_header_method_bit():
    for method in header_methods():
        assert hasattr(layout, f"IO_METHOD_{method.upper()}"), f"bpf/kfault.h has no KFAULT_IO_METHOD_{method.upper()}"


def test_every_syscall_has_an_x86_64_number():
    needed = {s for names in header_methods().values() for s in names} | {"close"} | set(header_stat_syscalls())
    assert (needed | set(syscalls.FAULT_HOOKS)) - set(x86_64_numbers()) == set()


def header_fault_hooks():
    """{syscall: hook} from the X(hook, syscall) lines of KFAULT_SC_FAULT_SYSCALLS."""
    return {syscall: hook for hook, syscall in
            re.findall(r"^\s*X\((\w+),\s*(\w+)\)", macro_body("KFAULT_SC_FAULT_SYSCALLS"), re.MULTILINE)}


def test_syscall_chaos_fails_each_syscall_at_the_hook_the_header_does():
    assert header_fault_hooks() == syscalls.FAULT_HOOKS


def test_the_header_numbers_each_fault_hook_once():
    hooks = re.findall(r"^\s*H\((\w+)\)", macro_body("KFAULT_SC_HOOKS"), re.MULTILINE)
    assert hooks == list(syscalls.HOOKS)


def test_the_header_numbers_are_syscall_chaos_numbers():
    assert {name: syscalls.X86_64[name] for name in x86_64_numbers()} == x86_64_numbers()
    assert max(syscalls.X86_64.values()) < layout.SC_MAX_NR


@pytest.mark.skipif(not os.path.exists(UNISTD_64), reason=f"no {UNISTD_64} (linux-libc-dev) to compare with")
def test_x86_64_numbers_are_the_kernels():
    with open(UNISTD_64, encoding="ascii") as handle:
        kernel = {name: int(nr) for name, nr in re.findall(r"#define __NR_(\w+) (\d+)", handle.read())}
    ours = x86_64_numbers()
    assert {name: kernel.get(name) for name in ours} == ours
    assert {name: kernel.get(name) for name in syscalls.X86_64} == syscalls.X86_64


@pytest.mark.skipif(not shutil.which("cc"), reason="no C compiler to preprocess bpf/syscalls.h with")
def test_the_header_refuses_to_compile_without_an_architecture_switch():
    without = subprocess.run(["cc", "-E", "-x", "c", SYSCALLS_H], capture_output=True, text=True)
    assert without.returncode != 0 and "x86_64 only" in without.stderr
    with_switch = subprocess.run(["cc", "-E", "-x", "c", "-DKFAULT_ARCH_X86_64", SYSCALLS_H],
                                 capture_output=True, text=True)
    assert with_switch.returncode == 0, with_switch.stderr


def test_the_loader_refuses_file_io_on_an_architecture_without_a_table(monkeypatch):
    from kfault_agent import errors
    from kfault_agent.kernel import loader
    monkeypatch.setattr(loader.platform, "machine", lambda: "aarch64")
    with pytest.raises(errors.KernelUnsupported, match="this node is aarch64. Network faults still work"):
        loader.io_arch_cflag()
    monkeypatch.setattr(loader.platform, "machine", lambda: "x86_64")
    assert loader.io_arch_cflag() == "-DKFAULT_ARCH_X86_64"
