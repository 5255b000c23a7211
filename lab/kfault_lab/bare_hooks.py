"""Programs that do nothing, attached where kfault's programs attach: what the kernel's
attachment itself costs a call (the floor under any program there), for the benches.

A bare hook is a hand-assembled program (no compile): `extra_adds` register additions and
`extra_calls` helper calls, yardsticks of known work, then a return. It attaches to LSM hook
`hook` (security_<hook>) as fentry, fmod_ret, BPF LSM (on bpf_lsm_<hook>) or, for one cgroup,
BPF LSM per cgroup (lsm_cgroup: the kernel runs a shim on bpf_lsm_<hook> for every task, which
runs the program only for tasks in that cgroup or below it).
"""
import contextlib
import os
import struct

from kfault_agent.kernel import bpfcall, btf

HELPER_GET_CURRENT_PID_TGID = 14
# (program type, attach type, the function attached to, by the hook's name)
KINDS = {"fentry": (bpfcall.PROG_TRACING, bpfcall.ATTACH_TRACE_FENTRY, "security_{}"),
         "fmod_ret": (bpfcall.PROG_TRACING, bpfcall.ATTACH_MODIFY_RETURN, "security_{}"),
         "lsm": (bpfcall.PROG_LSM, bpfcall.ATTACH_LSM_MAC, "bpf_lsm_{}"),
         "lsm_cgroup": (bpfcall.PROG_LSM, bpfcall.ATTACH_LSM_CGROUP, "bpf_lsm_{}")}


def bare_program(extra_adds=0, extra_calls=0, result=0):
    """BPF instructions: `extra_adds` register additions (one x86 instruction each, once
    JIT-compiled) and `extra_calls` calls of bpf_get_current_pid_tgid (a call, four loads and
    shifts, a return), then return `result`: with neither, the least a hook can run."""
    def insn(code, dst=0, imm=0):
        return struct.pack("<BBhi", code, dst, 0, imm)
    body = insn(0xb7, dst=2) + insn(0x07, dst=2, imm=1) * extra_adds     # r2 = 0; r2 += 1 ...
    body += insn(0x85, imm=HELPER_GET_CURRENT_PID_TGID) * extra_calls
    return body + insn(0xb7, imm=result) + insn(0x95)                      # r0 = result; exit


class BareHook:
    """A program that does nothing on `hook`, loaded as `kind` (KINDS); attached() attaches it
    (lsm_cgroup: to the cgroup directory `cgroup`) for the block it runs."""

    def __init__(self, kind, hook, extra_adds=0, extra_calls=0, cgroup=None):
        prog_type, attach_type, function = KINDS[kind]
        function = function.format(hook)
        btf_id = btf.function_ids({function})[function]
        # lsm_cgroup's programs answer 1 (allow) or 0 (deny, EPERM); the others 0 (allow)
        result = 1 if kind == "lsm_cgroup" else 0
        self.kind, self.cgroup = kind, cgroup
        self.fd = bpfcall.prog_load(prog_type, bare_program(extra_adds, extra_calls, result), "GPL",
                                    f"kft_bare_{kind}"[:15], expected_attach_type=attach_type, attach_btf_id=btf_id)

    @contextlib.contextmanager
    def attached(self):
        if self.kind == "lsm_cgroup":
            directory = os.open(self.cgroup, os.O_RDONLY | os.O_DIRECTORY)
            try:
                link = bpfcall.link_create(self.fd, directory, bpfcall.ATTACH_LSM_CGROUP)
            finally:
                os.close(directory)
        else:
            link = bpfcall.raw_tracepoint_open(self.fd)
        try:
            yield
        finally:
            os.close(link)

    def close(self):
        os.close(self.fd)
