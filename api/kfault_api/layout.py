"""The BPF datapath's constants, as bpf/kfault.h defines them (KFAULT_<NAME> there, <NAME> here).

Written out, not parsed at import, so a name can be found with grep and importing it reads no
file; tests/test_layout.py fails when this and the header drift apart.

A rule's deadline_ns is CLOCK_MONOTONIC and 0 means expired: the agent always writes a real one.
"""

# Capacity. Rule slots are indices into the rule and counter arrays.
MAX_RULES = 16384
MAX_PEER_PREFIXES = 65536
MAX_RULES_PER_PEER = 8

# Which way a packet goes, seen from the target (Chaos Mesh's `to` and `from`).
DIR_TO = 1
DIR_FROM = 2

# Action bits of kfault_rule.actions.
ACT_PARTITION = 1 << 0
ACT_LOSS = 1 << 1
ACT_DUPLICATE = 1 << 2
ACT_CORRUPT = 1 << 3
ACT_DELAY = 1 << 4
ACT_BANDWIDTH = 1 << 5
ACT_REORDER = 1 << 6
ACT_REJECT = 1 << 7

# Outcomes counted per rule: index into kfault_counters.packets / .bytes.
OUTCOME_MATCHED = 0
OUTCOME_PASSED = 1
OUTCOME_DROPPED = 2
OUTCOME_DUPLICATED = 3
OUTCOME_CORRUPTED = 4
OUTCOME_DELAYED = 5
OUTCOME_RESET = 6
OUTCOME_COUNT = 7

MARK_DUPLICATE = 0x6B66DD01
ALWAYS = 0xFFFFFFFF
WEIGHT_SHIFT = 16
WEIGHT_ONE = 1 << WEIGHT_SHIFT

# File I/O faults (iofault.c).
IO_MAX_RULES = 16
IO_MAX_STATES = 256
IO_PATH_MAX = 256
IO_MAX_FDS = 65536
IO_MAX_CALLS = 16384
IO_MAX_TRACED = 4096
IO_MAX_HOLDS = 16384
IO_MAX_DIRS = 16384
IO_AT_FDCWD = -100
IO_DEAD_STATE = 255
IO_ACCEPT_STATE = 254

IO_METHOD_OPEN = 0
IO_METHOD_READ = 1
IO_METHOD_WRITE = 2
IO_METHOD_FSYNC = 3
IO_METHOD_GETATTR = 4
IO_METHOD_MKDIR = 5
IO_METHOD_RMDIR = 6
IO_METHOD_UNLINK = 7
IO_METHOD_READDIR = 8
IO_METHOD_SETATTR = 9
IO_METHOD_RENAME = 10
IO_METHOD_CREATE = 11
IO_METHOD_COUNT = 12
IO_METHOD_SLOTS = 16

IO_ACT_FAULT = 1
IO_ACT_LATENCY = 2
IO_ACT_ATTR = 3
IO_ACT_MISTAKE = 4

IO_OUTCOME_PASSED = 0
IO_OUTCOME_FAILED = 1
IO_OUTCOME_DELAYED = 2
IO_OUTCOME_OVERRIDDEN = 3
IO_OUTCOME_CORRUPTED = 4
IO_OUTCOME_COUNT = 5
IO_OUTCOME_STRIDE = 8

IO_ATTR_INO = 1 << 0
IO_ATTR_SIZE = 1 << 1
IO_ATTR_BLOCKS = 1 << 2
IO_ATTR_ATIME = 1 << 3
IO_ATTR_MTIME = 1 << 4
IO_ATTR_CTIME = 1 << 5
IO_ATTR_MODE = 1 << 6
IO_ATTR_NLINK = 1 << 7
IO_ATTR_UID = 1 << 8
IO_ATTR_GID = 1 << 9
IO_ATTR_RDEV = 1 << 10

IO_FILL_ZERO = 0
IO_FILL_RANDOM = 1
IO_MISTAKE_MAX_OCCURRENCES = 16
IO_MISTAKE_MAX_LENGTH = 256

IO_PROG_MATCH_PATH = 0
IO_PROG_APPLY_ATTR = 1
IO_PROG_CORRUPT = 2
IO_PROG_COUNT = 3

IO_DIRS_FD = 1
IO_DIRS_CWD = 2
IO_DIRS_LOST = 4

IO_LAYOUT_STAT = 1
IO_LAYOUT_STATX = 2
IO_LAYOUT_BUFFER = 3
IO_LAYOUT_IOVEC = 4

# Lookup tables the Python side builds on the numbers above.
DIRECTIONS = {"to": DIR_TO, "from": DIR_FROM}
OUTCOMES = {"matched": OUTCOME_MATCHED, "passed": OUTCOME_PASSED, "dropped": OUTCOME_DROPPED,
            "duplicated": OUTCOME_DUPLICATED, "corrupted": OUTCOME_CORRUPTED, "delayed": OUTCOME_DELAYED,
            "reset": OUTCOME_RESET}
