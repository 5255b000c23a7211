"""The syscall table is defined once for the kernel (bpf/syscalls.h) and listed again for the
schema (kfault_api.schema.IO_METHODS): the two must agree, and the numbers must be the kernel's."""
import os
import re
import shutil
import subprocess

import pytest

from kfault_api import layout, schema

SYSCALLS_H = os.path.join(os.path.dirname(__file__), "..", "bpf", "syscalls.h")
UNISTD_64 = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"


def header_text():
    with open(SYSCALLS_H, encoding="utf-8") as handle:
        return handle.read()


def header_methods():
    """{method: syscalls} from the X(METHOD, syscall) lines of KFAULT_IO_SYSCALLS."""
    methods = {}
    for method, syscall in re.findall(r"^\s*X\((\w+),\s*(\w+)\)", header_text(), re.MULTILINE):
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
    needed = {s for syscalls in header_methods().values() for s in syscalls} | {"close"} | set(header_stat_syscalls())
    assert needed - set(x86_64_numbers()) == set()


@pytest.mark.skipif(not os.path.exists(UNISTD_64), reason=f"no {UNISTD_64} (linux-libc-dev) to compare with")
def test_x86_64_numbers_are_the_kernels():
    with open(UNISTD_64, encoding="ascii") as handle:
        kernel = {name: int(nr) for name, nr in re.findall(r"#define __NR_(\w+) (\d+)", handle.read())}
    ours = x86_64_numbers()
    assert {name: kernel.get(name) for name in ours} == ours


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
