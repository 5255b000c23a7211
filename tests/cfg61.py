"""What 6.1's verifier refuses before it verifies anything: its check_cfg walks a program depth
first and takes a loop only through a jump; a loop closed by a fall-through (a plain
instruction, a call or a 16-byte load, into an instruction on the walk's stack) is refused as
"back-edge from insn X to X+1" (later kernels take it). clang makes one of a loop it enters
mid-body; the host's kernel loads it, so this reads the compiled instructions on the host to
say so before the stock-kernel tier does."""
import base64
import struct

CALL, EXIT, LD_IMM64, JA, JA32 = 0x85, 0x95, 0x18, 0x05, 0x06
JMP_CLASSES = (0x05, 0x06)


def _edges(insns, t):
    """(successor, may close a loop) of instruction t, in the order check_cfg pushes them."""
    op, regs, off, imm = insns[t]
    if op == EXIT:
        return []
    if op == LD_IMM64:
        return [(t + 2, False)]
    if op == CALL:
        return [(t + 1, False)] + ([(t + 1 + imm, False)] if regs >> 4 == 1 else [])   # a bpf-to-bpf call
    if op & 7 in JMP_CLASSES:
        if op in (JA, JA32):
            return [(t + 1 + off, True)]
        return [(t + 1, True), (t + 1 + off, True)]
    return [(t + 1, False)]


def fallthrough_back_edges(encoded_insns):
    """The (from, to) fall-throughs into an instruction on the walk's stack: what 6.1 refuses."""
    raw = base64.b64decode(encoded_insns)
    insns = [struct.unpack_from("<BBhi", raw, at) for at in range(0, len(raw), 8)]
    state = [0] * len(insns)      # 0 not seen, 1 on the walk's stack, 2 done
    refused, walk = [], [(0, iter(_edges(insns, 0)))]
    state[0] = 1
    while walk:
        t, successors = walk[-1]
        for w, loop_ok in successors:
            if state[w] == 0:
                state[w] = 1
                walk.append((w, iter(_edges(insns, w))))
                break
            if state[w] == 1 and not loop_ok:
                refused.append((t, w))
        else:
            state[t] = 2
            walk.pop()
    return refused
