/* kfault.h - every map size (but the 1 of one-value maps), every map key/value and rule
 * layout that the agent reads or writes, and the constants both sides use.
 *
 * Userspace mirrors the #define KFAULT_ lines below in api/kfault_api/layout.py
 * (tests/test_layout.py fails when they differ) and gets the struct layouts as ctypes from
 * bcc, so kernel and userspace can't drift apart. Per-CPU scratch space that only one program
 * touches (iofault.c's struct io_scratch) is declared beside it, in lib/scratch.h; the syscall
 * table of the file I/O faults is in syscalls.h. lib/ holds each concern of the programs (and
 * declares the maps whose values it works on).
 * Only UAPI types are used: the agent compiles against whatever headers the node has.
 *
 * Deadlines: a rule's deadline_ns is CLOCK_MONOTONIC (bpf_ktime_get_ns()); the rule acts
 * only while now < deadline_ns. 0 therefore means expired (never set): the agent always
 * writes a real deadline, and a zeroed slot does nothing.
 */
#ifndef KFAULT_H
#define KFAULT_H

#include <linux/types.h>

/* One plain load or store the compiler may neither tear, merge nor repeat, for map values
 * that all CPUs share without a lock (as Cilium's edt.h reads and writes its t_last).
 * The kernel's own (asm-generic/rwonce.h, which bcc's kernel headers pull in) wrap the
 * access in a compile-time assert that bcc rejects as a call; ours is the bare access. */
#undef READ_ONCE
#undef WRITE_ONCE
#define READ_ONCE(x) (*(const volatile __typeof__(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile __typeof__(x) *)&(x) = (v))

/* Capacity (map sizes of netfault.c). Rule slots are indices into the rule and counter arrays. */
#define KFAULT_MAX_RULES 16384         /* kfault_rules, kfault_counters, kfault_rule_state, kfault_departures */
#define KFAULT_MAX_PEER_PREFIXES 65536 /* kfault_peers */
#define KFAULT_MAX_RULES_PER_PEER 8
#define KFAULT_MAX_FLOWS 65536 /* kfault_flows: connections and flows a per-connection delay remembers */

/* Which way a packet goes, seen from the target. Chaos Mesh: `to` = the target sends,
 * `from` = the target receives. */
#define KFAULT_DIR_TO 1
#define KFAULT_DIR_FROM 2

/* Action bits of kfault_rule.actions. */
#define KFAULT_ACT_PARTITION (1 << 0)
#define KFAULT_ACT_LOSS (1 << 1)
#define KFAULT_ACT_DUPLICATE (1 << 2)
#define KFAULT_ACT_CORRUPT (1 << 3)
#define KFAULT_ACT_DELAY (1 << 4)
#define KFAULT_ACT_BANDWIDTH (1 << 5)
#define KFAULT_ACT_REORDER (1 << 6) /* with DELAY: some packets skip the delay (netem's reorder) */
#define KFAULT_ACT_REJECT (1 << 7)  /* with PARTITION: answer TCP with a reset (partitionBehavior reject) */
/* with DELAY: only a connection's opening packet, the SYN or a UDP flow's first datagram, is
 * delayed (delay.per: connection; lib/flows.h) */
#define KFAULT_ACT_PER_CONNECTION (1 << 8)

/* A UDP flow not seen for this long is new again: its next datagram opens it (conntrack's
 * default UDP timeout, nf_conntrack_udp_timeout). */
#define KFAULT_FLOW_IDLE_NS 30000000000 /* a long: no suffix, so tests/test_layout.py can read it */

/* Bits of kfault_rule_state.last_hit: did the previous roll of this action hit?
 * They are the action bits, so one mask serves both. */

/* Outcomes counted per rule: index into kfault_counters.packets / .bytes. */
#define KFAULT_OUTCOME_MATCHED 0
#define KFAULT_OUTCOME_PASSED 1
#define KFAULT_OUTCOME_DROPPED 2
#define KFAULT_OUTCOME_DUPLICATED 3
#define KFAULT_OUTCOME_CORRUPTED 4
#define KFAULT_OUTCOME_DELAYED 5
#define KFAULT_OUTCOME_RESET 6 /* answered with a TCP reset instead (dropped, not counted there) */
#define KFAULT_OUTCOME_COUNT 7

/* A packet kfault made re-enters one of our hooks: a duplicate the same hook, a reset the
 * target's other hook (on its way back to the target, or out to the peer). This mark tells
 * the program to let it through untouched. Our hooks see packets right after they crossed a
 * netns boundary, which scrubs skb->mark to 0, so the mark is free to borrow. */
#define KFAULT_MARK_DUPLICATE 0x6b66dd01

/* A probability is a u32 threshold: an event happens when bpf_get_prandom_u32() < threshold.
 * KFAULT_ALWAYS means certain (a u32 draw can never be < 2^32). */
#define KFAULT_ALWAYS 0xffffffff

/* Weights for mixing jitter samples are fixed point out of KFAULT_WEIGHT_ONE. */
#define KFAULT_WEIGHT_SHIFT 16
#define KFAULT_WEIGHT_ONE (1 << KFAULT_WEIGHT_SHIFT)

/* Key of kfault_peers (LPM trie). Bits compared: direction (32), local (128), then
 * `prefixlen - 160` bits of remote. Addresses are IPv6; IPv4 is IPv4-mapped (::ffff:a.b.c.d). */
struct kfault_peer_key {
	__u32 prefixlen;
	__u32 direction;
	__u8 local[16];  /* the target's own address */
	__u8 remote[16]; /* the peer's address (prefix) */
};

/* Value of kfault_peers: the rule slots that apply to a peer prefix. The agent stores, for
 * each prefix, every rule whose prefix contains it, so the longest match is all we need. */
struct kfault_peer_rules {
	__u32 count;
	__u32 slot[KFAULT_MAX_RULES_PER_PEER];
};

/* Value of kfault_rules: one rule, written whole by the agent. */
struct kfault_rule {
	__u64 deadline_ns;        /* CLOCK_MONOTONIC; the rule does nothing from then on (0: expired) */
	__u64 delay_ns;           /* added latency */
	__u64 jitter_ns;          /* +/- spread of latency */
	__u64 rate_bytes_per_sec; /* bandwidth; 0 = unlimited */
	__u64 burst_bytes;        /* bandwidth: how far the pacer may run behind (buffer) */
	__u64 queue_ns;           /* bandwidth: drop when a packet would wait longer (limit) */
	__u32 actions;            /* KFAULT_ACT_* */
	/* Two thresholds per random action: after a miss and after a hit. Equal when
	 * uncorrelated; a Markov chain with the asked rate when correlated. */
	__u32 loss_after_miss, loss_after_hit;
	__u32 duplicate_after_miss, duplicate_after_hit;
	__u32 corrupt_after_miss, corrupt_after_hit;
	__u32 reorder_after_miss, reorder_after_hit;
	/* Correlated jitter: sample = last * last_weight + fresh * fresh_weight (out of
	 * KFAULT_WEIGHT_ONE, fresh_weight = sqrt(1 - last_weight^2)), so the spread stays the
	 * asked one whatever the correlation (netem's plain averaging narrows it). */
	__u32 jitter_last_weight, jitter_fresh_weight;
	__u32 reorder_gap;   /* netem's gap: only every gap-th packet may skip the delay */
	__u16 peer_port_min; /* 0 = any port */
	__u16 peer_port_max;
	__u8 protocol; /* IPPROTO_*; 0 = any */
	__u8 pad[3];
};

/* Value of kfault_counters (per CPU). */
struct kfault_counters {
	__u64 packets[KFAULT_OUTCOME_COUNT];
	__u64 bytes[KFAULT_OUTCOME_COUNT];
};

/* Value of kfault_rule_state (per CPU): memory for correlation. */
struct kfault_rule_state {
	__u32 last_hit;      /* KFAULT_ACT_* bits that hit on the last roll */
	__u32 since_reorder; /* packets delayed since the last one that skipped the delay */
};

/* Value of kfault_departures (shared by all CPUs): a rule's departure-time state. Shared,
 * so that a flow sent from several CPUs keeps its order, its jitter correlation and one rate.
 * CPUs race on it without locks, each field read once and written once (READ_ONCE,
 * WRITE_ONCE): at worst one packet gets a slightly stale value, never a torn one. */
struct kfault_departures {
	__u64 next_paced_ns;   /* bandwidth: when the rule's next byte may leave */
	__u64 last_delayed_ns; /* delay: the latest departure given, so jitter never reorders */
	__s64 last_jitter_ns;  /* delay: the last jitter sample, for correlation */
};

/* Key of kfault_flows: one flow as the target sees it, under one rule (so that two
 * per-connection rules on the same packets each hold its opening packet once). */
struct kfault_flow_key {
	__u32 slot;
	__u32 direction;
	__u8 local[16]; /* as in kfault_peer_key */
	__u8 remote[16];
	__u16 local_port;
	__u16 remote_port;
	__u8 protocol;
	__u8 pad[3];
};

/* Value of kfault_flows. */
struct kfault_flow {
	__u64 departure_ns; /* when its opening packet departs: no later packet departs before it */
	__u64 last_seen_ns; /* UDP: its last packet, for KFAULT_FLOW_IDLE_NS */
	__u32 opening_seq;  /* TCP: its SYN's sequence number; a SYN with the same one is a retransmission */
	__u32 pad;
};

/* ---- file I/O faults (iofault.c) ------------------------------------------------------ */

#define KFAULT_IO_MAX_RULES 16    /* a bit per rule in __u32 masks; kfault_io_rules, _cgroups, _counters */
#define KFAULT_IO_MAX_STATES 256  /* DFA state slots per rule; the last is KFAULT_IO_DEAD_STATE */
#define KFAULT_IO_PATH_MAX 256    /* bytes of a path we match; longer paths never match */
#define KFAULT_IO_MAX_FDS 65536   /* kfault_io_fds: open files of targeted processes we remember */
#define KFAULT_IO_MAX_CALLS 16384 /* kfault_io_calls: targeted threads inside a syscall at once */
#define KFAULT_IO_MAX_TRACED 4096 /* kfault_io_traced: processes a holder is attached to */
#define KFAULT_IO_MAX_HOLDS 16384 /* kfault_io_holds: threads waiting to be held */
#define KFAULT_IO_MAX_DIRS 16384  /* kfault_io_dirs: working and open directories of targeted processes */
#define KFAULT_IO_AT_FDCWD -100   /* openat's dirfd for "the working directory"; its fd in kfault_io_dirs */
#define KFAULT_IO_DEAD_STATE 255  /* a DFA state no path can leave: no match */
/* A DFA state no byte leaves, accepting: where the end of a path (byte 0) takes an accepting
 * state; globs use the states below it. */
#define KFAULT_IO_ACCEPT_STATE 254

/* Methods: bits of kfault_io_rule.methods; indices (bit number) into counters. */
#define KFAULT_IO_METHOD_OPEN 0
#define KFAULT_IO_METHOD_READ 1
#define KFAULT_IO_METHOD_WRITE 2
#define KFAULT_IO_METHOD_FSYNC 3
#define KFAULT_IO_METHOD_GETATTR 4 /* the stat family (syscalls.h); attrOverride's only method */
#define KFAULT_IO_METHOD_MKDIR 5
#define KFAULT_IO_METHOD_RMDIR 6 /* rmdir, and unlinkat with AT_REMOVEDIR */
#define KFAULT_IO_METHOD_UNLINK 7
#define KFAULT_IO_METHOD_READDIR 8
#define KFAULT_IO_METHOD_SETATTR 9 /* chmod, chown, truncate, utimes and their fd and *at forms */
#define KFAULT_IO_METHOD_RENAME 10 /* rename, renameat, renameat2: matched by the path renamed */
#define KFAULT_IO_METHOD_CREATE 11 /* an open with O_CREAT, and creat: decided as opens are */
#define KFAULT_IO_METHOD_COUNT 12
#define KFAULT_IO_METHOD_SLOTS 16 /* METHOD_COUNT rounded up to a power of two, for the counter index */

#define KFAULT_IO_ACT_FAULT 1   /* fail the call with errno */
#define KFAULT_IO_ACT_LATENCY 2 /* hold the calling thread for delay_ns */
#define KFAULT_IO_ACT_ATTR 3    /* attrOverride: rewrite what the stat family returns */
#define KFAULT_IO_ACT_MISTAKE 4 /* mistake: corrupt the bytes a read returns or a write takes */

#define KFAULT_IO_OUTCOME_PASSED 0
#define KFAULT_IO_OUTCOME_FAILED 1
#define KFAULT_IO_OUTCOME_DELAYED 2
#define KFAULT_IO_OUTCOME_OVERRIDDEN 3 /* attrOverride written into the caller's stat buffer */
#define KFAULT_IO_OUTCOME_CORRUPTED 4  /* mistake written into the caller's data buffer */
/* Calls seen and chosen but out of reach, by why (asynchronous I/O: docs/design/file-io.md): */
#define KFAULT_IO_OUTCOME_UNREACHED_IO_THREAD 5  /* latency on a request an io_uring kernel thread issued */
#define KFAULT_IO_OUTCOME_UNREACHED_ASYNC 6      /* an action or method not reached on async I/O here */
#define KFAULT_IO_OUTCOME_UNREACHED_FIXED_FILE 7 /* io_uring registered file: no fd to match (tracepoints) */
#define KFAULT_IO_OUTCOME_COUNT 8
#define KFAULT_IO_OUTCOME_STRIDE 8

/* Bits of kfault_io_rule.attrs: which stat fields attrOverride replaces. */
#define KFAULT_IO_ATTR_INO (1 << 0)
#define KFAULT_IO_ATTR_SIZE (1 << 1)
#define KFAULT_IO_ATTR_BLOCKS (1 << 2)
#define KFAULT_IO_ATTR_ATIME (1 << 3)
#define KFAULT_IO_ATTR_MTIME (1 << 4)
#define KFAULT_IO_ATTR_CTIME (1 << 5)
#define KFAULT_IO_ATTR_MODE (1 << 6) /* kind and/or perm: mode_mask says which bits */
#define KFAULT_IO_ATTR_NLINK (1 << 7)
#define KFAULT_IO_ATTR_UID (1 << 8)
#define KFAULT_IO_ATTR_GID (1 << 9)
#define KFAULT_IO_ATTR_RDEV (1 << 10)

/* mistake: what the wrong bytes are, and how many runs of how many bytes at most. */
#define KFAULT_IO_FILL_ZERO 0
#define KFAULT_IO_FILL_RANDOM 1
#define KFAULT_IO_MISTAKE_MAX_OCCURRENCES 16
#define KFAULT_IO_MISTAKE_MAX_LENGTH 256 /* a power of two: the bytes of one run come from scratch */

/* Slots of iofault.c's kfault_io_programs (a program array the loader fills): the programs
 * the syscall tracepoints tail-call. */
#define KFAULT_IO_PROG_MATCH_PATH 0 /* io_match_path: walk the path globs of an open or stat */
#define KFAULT_IO_PROG_APPLY_ATTR 1 /* io_apply_attr: attrOverride at a stat's exit */
#define KFAULT_IO_PROG_CORRUPT 2    /* io_corrupt: mistake at a read's exit or a write's entry */
#define KFAULT_IO_PROG_AIO_SUBMIT 3 /* io_aio_submit: one iocb of an io_submit (libaio) per run */
#define KFAULT_IO_PROG_COUNT 4

/* Which program on security_file_permission decides reads and writes (kfault_io_file_decider):
 * the fentry one while only latency needs it, the fmod_ret one while a fault rule does. */
#define KFAULT_IO_FILE_DECIDER_FENTRY 1
#define KFAULT_IO_FILE_DECIDER_FMOD_RET 2

/* libaio: the iocbs of one io_submit looked at, one tail call each (the kernel allows 33 in a
 * chain, io_sys_enter's included); those past it are not decided. */
#define KFAULT_IO_AIO_MAX_IOCBS 32

/* kfault_io_call.dirs: what a call does to kfault_io_dirs when it succeeds (the tracepoints follow
 * a process's directories after arming: tests/kernel/test_io_faults.py, docs/design/file-io.md) */
#define KFAULT_IO_DIRS_FD 1   /* an open: the fd it returns gets the states in kfault_io_new_dirs */
#define KFAULT_IO_DIRS_CWD 2  /* chdir, fchdir: the working directory gets them */
#define KFAULT_IO_DIRS_LOST 4 /* with either: no states (a path with ".."): the agent marks the process again */

/* Where the stat family writes its result (struct kfault_io_call.layout). */
#define KFAULT_IO_LAYOUT_STAT 1   /* struct stat (asm/stat.h): stat, lstat, fstat, newfstatat */
#define KFAULT_IO_LAYOUT_STATX 2  /* struct statx (linux/stat.h) */
#define KFAULT_IO_LAYOUT_BUFFER 3 /* read/write: a plain buffer of `length` bytes */
#define KFAULT_IO_LAYOUT_IOVEC 4  /* readv/writev family: the first iovec of the array */

/* Value of kfault_io_rules. Slot i's target cgroup is slot i of kfault_io_cgroups and its
 * path glob is the DFA at states [i * KFAULT_IO_MAX_STATES, (i + 1) * KFAULT_IO_MAX_STATES). */
struct kfault_io_rule {
	__u64 deadline_ns; /* CLOCK_MONOTONIC; the rule does nothing from then on (0: expired) */
	__u64 delay_ns;    /* latency */
	__u32 action;      /* KFAULT_IO_ACT_* */
	__u32 methods;     /* 1 << KFAULT_IO_METHOD_* */
	__u32 threshold;   /* percent as a u32 threshold (see KFAULT_ALWAYS) */
	__u32 error;       /* errno, positive */
	/* attrOverride: the values of the fields whose KFAULT_IO_ATTR_* bit is in attrs */
	__u64 ino, size, blocks;
	__s64 atime_sec, atime_nsec, mtime_sec, mtime_nsec, ctime_sec, ctime_nsec;
	__u32 attrs;     /* KFAULT_IO_ATTR_* */
	__u32 mode_mask; /* st_mode bits replaced: S_IFMT for kind, 07777 for perm */
	__u32 mode;      /* their new values */
	__u32 nlink, uid, gid;
	__u32 rdev;                   /* as st_rdev (the userspace dev_t encoding) */
	__u32 rdev_major, rdev_minor; /* the same, split as struct statx holds it */
	/* mistake */
	__u32 filling;         /* KFAULT_IO_FILL_* */
	__u32 max_occurrences; /* 1..KFAULT_IO_MISTAKE_MAX_OCCURRENCES runs of wrong bytes per call */
	__u32 max_length;      /* 1..KFAULT_IO_MISTAKE_MAX_LENGTH bytes per run */
};

/* Value of kfault_io_dfa: one rule's path glob as a DFA, compiled by the agent. Bytes are
 * unsigned; next[s][c] is a state or KFAULT_IO_DEAD_STATE; next[s][0] (the end of the path) is
 * KFAULT_IO_ACCEPT_STATE where s accepts, else dead, and neither is ever left: so a walk may go
 * on over whatever follows the path in its buffer, with no branch per byte (the verifier then
 * sees straight code however many rules are walked). One lookup per rule walked. */
struct kfault_io_dfa {
	__u8 next[KFAULT_IO_MAX_STATES * 256]; /* next[s * 256 + c]; flat: bcc reads one dimension only */
	__u8 accepting[KFAULT_IO_MAX_STATES];
};

/* Key of kfault_io_fds: an open file of a targeted process. Value: a mask of the rules whose
 * path glob matched when it was opened, so a read or write is decided by one lookup. */
struct kfault_io_fd_key {
	__u32 tgid;
	__u32 fd;
};

/* Value of kfault_io_dirs, keyed like kfault_io_fds (fd KFAULT_IO_AT_FDCWD: the working
 * directory): for each rule, the DFA state its glob reaches after the directory's absolute
 * path and a '/', so a relative path is matched as the process sees it, from that state on.
 * Written by the agent from /proc/PID/cwd and /proc/PID/fd, and at the exit of a chdir, fchdir or
 * open (of a directory, or of a file below one a rule may match) by a targeted process. */
struct kfault_io_dir_states {
	__u8 state[KFAULT_IO_MAX_RULES];
};

/* Value of kfault_io_calls, by pid_tgid: the syscall a targeted thread is in right now. */
struct kfault_io_call {
	__u32 opened_mask; /* open: rules whose glob matched the path, for kfault_io_fds */
	__s32 error;       /* nonzero: the LSM hooks fail this call with it (negative) */
	__u32 method;      /* KFAULT_IO_METHOD_* */
	__u32 apply;       /* 1 + the slot of the attrOverride or mistake rule to apply at exit; 0: none */
	__u64 buffer;      /* the caller's buffer (user address) that rule rewrites */
	__u32 layout;      /* KFAULT_IO_LAYOUT_*: what the buffer holds */
	__u32 held_nr;     /* latency: 1 + the syscall held, whose signal may interrupt it */
	__u32 dirs;        /* KFAULT_IO_DIRS_* */
	__u32 fail_slot;   /* fault on fsync: 1 + the rule whose errno the holder gives after the call */
	__u32 hold_owed;   /* io_uring_enter: a request it submitted was delayed; signalled at its return */
	__u32 pad;
};

/* Value of kfault_io_fails, by tid: a call that ran and that the holder fails as it returns
 * (lib/after_call.h). The holder replaces the result only while the thread's registers are
 * still those of this return: a handler frame set up first moves ip and sp. */
struct kfault_io_fail {
	__u64 ip;    /* the user return address at sys_exit */
	__u64 sp;    /* the user stack pointer there */
	__u32 nr;    /* the syscall (orig_ax) */
	__s32 error; /* errno, positive: the holder puts -error in ax */
	__u32 slot;  /* the rule, whose miss the holder counts in kfault_io_missed */
	__u32 pad;
};

/* Value of kfault_io_counters (per CPU), by rule slot. */
struct kfault_io_counters {
	/* [method * KFAULT_IO_OUTCOME_STRIDE + outcome]: flat, as bcc reads only 1-D arrays
	 * right, and a power of two long, so a mask bounds the index for any verifier */
	__u64 calls[KFAULT_IO_METHOD_SLOTS * KFAULT_IO_OUTCOME_STRIDE];
	__u64 delay_ns; /* delay asked of the holder, summed */
};

/* Syscall faults (syscallfault.c): SyscallChaos rules, each on one cgroup, naming syscalls. */
#define KFAULT_SC_MAX_RULES 16       /* a bit per rule in __u32 masks; kfault_sc_rules, _cgroups */
#define KFAULT_SC_MAX_NR 512         /* syscall numbers below this (x86_64's stay below 470); kfault_sc_syscalls */
#define KFAULT_SC_COUNTER_SLOTS 8192 /* KFAULT_SC_MAX_RULES * KFAULT_SC_MAX_NR: kfault_sc_counters */
#define KFAULT_SC_MAX_TRACED 4096    /* kfault_sc_traced, kfault_sc_stopped: processes a holder is attached to */
#define KFAULT_SC_MAX_HOLDS 16384    /* kfault_sc_holds: threads waiting to be held */
#define KFAULT_SC_HOOK_SLOTS 16      /* kfault_sc_hook_rules: syscalls.h's hooks, numbered from 1 */

#define KFAULT_SC_ACT_FAULT 1   /* fail the call with errno at its LSM hook, before it takes effect */
#define KFAULT_SC_ACT_LATENCY 2 /* hold the calling thread for delay_ns as the call returns */
#define KFAULT_SC_ACT_SLOTS 3   /* kfault_sc_armed: a mask of armed slots per action */

/* Outcomes counted per rule and syscall: index into kfault_sc_counters' calls. */
#define KFAULT_SC_OUTCOME_PASSED 0
#define KFAULT_SC_OUTCOME_FAILED 1
#define KFAULT_SC_OUTCOME_DELAYED 2
#define KFAULT_SC_OUTCOME_COUNT 4 /* a power of two */

/* Value of kfault_sc_rules. Slot i's target cgroup is slot i of kfault_sc_cgroups; the
 * syscalls it names have bit i in kfault_sc_syscalls. */
struct kfault_sc_rule {
	__u64 deadline_ns; /* CLOCK_MONOTONIC; the rule does nothing from then on (0: expired) */
	__u64 delay_ns;    /* latency */
	__u64 threshold;   /* percent of 2^32: a roll (a u32) below it hits; 2^32 always does */
	__u32 action;      /* KFAULT_SC_ACT_* */
	__s32 error;       /* fault: errno, positive */
};

/* Value of kfault_sc_counters (per CPU), by rule slot * KFAULT_SC_MAX_NR + syscall number (the
 * number the rule names: a process-making clone counts under fork for a rule on fork). */
struct kfault_sc_counters {
	__u64 calls[KFAULT_SC_OUTCOME_COUNT];
	__u64 delay_ns; /* delay asked of the holder, summed */
};

/* ---- DNS faults (dnsfault.c) ------------------------------------------------------------ */

#define KFAULT_DNS_MAX_RULES 8      /* a bit per rule in kfault_dns_targets' masks; kfault_dns_rules, _dfa, _counters */
#define KFAULT_DNS_MAX_TARGETS 4096 /* kfault_dns_targets: pod addresses with DNS rules */
#define KFAULT_DNS_PORT 53
#define KFAULT_DNS_NAME_MAX 256   /* bytes of a query name we read: RFC 1035's 255 and its end */
#define KFAULT_DNS_MAX_ANSWERS 16 /* records of an answer section random walks; later ones pass */

/* kfault_dns_rule.action */
#define KFAULT_DNS_ERROR 1  /* answer a matching query with an error, at the pod's egress */
#define KFAULT_DNS_RANDOM 2 /* rewrite a matching answer's addresses, at the pod's ingress */
/* kfault_dns_rule.rcode for error: an RCODE, or this for "drop the query" */
#define KFAULT_DNS_RCODE_DROP 0xff

/* Outcomes counted per DNS rule: index into kfault_dns_counters.queries. */
#define KFAULT_DNS_OUTCOME_MATCHED 0   /* a query (error) or an answer (random) whose name matched */
#define KFAULT_DNS_OUTCOME_ANSWERED 1  /* error: answered with the rule's RCODE */
#define KFAULT_DNS_OUTCOME_DROPPED 2   /* error: dropped (errorResponse drop, or one we could not rewrite) */
#define KFAULT_DNS_OUTCOME_RESET 3     /* error over TCP: the connection reset */
#define KFAULT_DNS_OUTCOME_REWRITTEN 4 /* random: A or AAAA records rewritten */
#define KFAULT_DNS_OUTCOME_FAILED 5    /* random: another record type, answered SERVFAIL (Chaos Mesh's) */
#define KFAULT_DNS_OUTCOME_COUNT 6

/* Value of kfault_dns_rules: one DNSChaos placement. Its name patterns are its DFA in
 * kfault_dns_dfa (struct kfault_io_dfa: the same walk as file paths, over the name read with a
 * dot for each label length). */
struct kfault_dns_rule {
	__u64 deadline_ns;
	__u32 action; /* KFAULT_DNS_ERROR or KFAULT_DNS_RANDOM */
	__u32 rcode;  /* error: the RCODE answered, or KFAULT_DNS_RCODE_DROP */
};

/* Key of kfault_dns_targets: a pod's address (IPv4 mapped into IPv6). Value: a mask of the
 * rules placed on it. */
struct kfault_dns_target_key {
	__u8 addr[16];
};

struct kfault_dns_counters {
	__u64 queries[KFAULT_DNS_OUTCOME_COUNT];
};

/* ---- HTTP faults (httpfault.c) ---------------------------------------------------------- */

#define KFAULT_HTTP_MAX_RULES 8      /* a bit per rule in kfault_http_targets' masks; _rules, _dfa, _counters */
#define KFAULT_HTTP_MAX_TARGETS 4096 /* kfault_http_targets: (pod address, port) pairs with HTTP rules */
#define KFAULT_HTTP_MAX_FLOWS 65536  /* kfault_http_flows: connections to an armed port remembered (LRU) */
#define KFAULT_HTTP_PORT_WORDS 1024  /* kfault_http_ports: 65536 ports, a bit each, in 64-bit words */
#define KFAULT_HTTP_PATH_MAX 256     /* bytes of a request path we read; a longer path never matches */
#define KFAULT_HTTP_METHOD_MAX 7     /* letters of a method we match ("OPTIONS"), its space after them */

/* kfault_http_rule.target */
#define KFAULT_HTTP_REQUEST 1  /* the requests the pod receives on the port */
#define KFAULT_HTTP_RESPONSE 2 /* the responses it sends from the port */

/* kfault_http_rule.flags */
#define KFAULT_HTTP_ABORT 1    /* reset the connection */
#define KFAULT_HTTP_REPLACE 2  /* Response: rewrite the status code (replace_code) */
#define KFAULT_HTTP_HAS_PATH 4 /* the rule's DFA selects by path; without it, every path */
#define KFAULT_HTTP_HAS_CODE 8 /* Response: select by status code (code) */
/* In the mask of a (pod, port) for requests: serverName rules are placed there too, in the mask
 * of its key for ClientHellos (kfault_http_target_key.hello), so a hello is read */
#define KFAULT_HTTP_HELLO_RULES 0x80000000

/* Outcomes counted per HTTP rule: index into kfault_http_counters.messages. */
#define KFAULT_HTTP_OUTCOME_MATCHED 0   /* a request (or its response, target Response) the rule selected */
#define KFAULT_HTTP_OUTCOME_RESET 1     /* abort: its connection reset at both ends */
#define KFAULT_HTTP_OUTCOME_DELAYED 2   /* delay: the response held once */
#define KFAULT_HTTP_OUTCOME_REWRITTEN 3 /* replace: the status code rewritten */
#define KFAULT_HTTP_OUTCOME_COUNT 4

/* Value of kfault_http_rules: one HTTPChaos placement. Its path glob is its DFA in
 * kfault_http_dfa (struct kfault_io_dfa, walked over the path up to its space or `?`). */
struct kfault_http_rule {
	__u64 deadline_ns;
	__u64 delay_ns;    /* 0: no delay */
	__u64 method;      /* the method and its space as the request's first 8 bytes hold them ("GET "), */
	__u64 method_mask; /* and which of those bytes to compare: 0 for every method */
	__u32 target;      /* KFAULT_HTTP_REQUEST or KFAULT_HTTP_RESPONSE */
	__u32 flags;       /* KFAULT_HTTP_ABORT, ... */
	__u32 code;        /* HAS_CODE: the status code selected, as its 3 ASCII digits (little-endian u32) */
	__u32 replace;     /* REPLACE: " NNN", the space and 3 digits written over the status line's */
};

/* Key of kfault_http_targets: a pod's address (IPv4 mapped into IPv6), its server port (host
 * order), and what the rules are matched against: 0 a request (or its response), 1 a TLS
 * ClientHello's server name (serverName rules: lib/tls.h). Value: a mask of the rules placed
 * there. Two keys, so neither kind of rule is ever walked over the other's text. */
struct kfault_http_target_key {
	__u8 addr[16];
	__u16 port;
	__u16 hello;
};

/* Key of kfault_http_flows: one connection to an armed port, as the pod sees it. */
struct kfault_http_flow_key {
	__u8 pod[16];
	__u8 peer[16];
	__u16 port; /* the pod's (the server's), host order */
	__u16 peer_port;
};

/* Value of kfault_http_flows: what httpfault.c's two programs tell each other of a connection.
 * Written and read by them only (the agent deletes the flows of a pod at release). */
struct kfault_http_flow {
	__u64 hold_until_ns; /* CLOCK_MONOTONIC: no packet the pod sends on it leaves before */
	__u64 owed_ns;       /* Request delay: held on the next response data the pod sends */
	__u32 request_next;  /* the sequence number after the last request bytes decided */
	__u32 response_next; /* the sequence number after the last response bytes decided */
	__u32 pending;       /* Response rules whose selectors the last request matched */
	__u8 request_seen;   /* request_next holds a sequence number */
	__u8 response_seen;  /* response_next holds one */
	__u8 pad[2];
};

struct kfault_http_counters {
	__u64 messages[KFAULT_HTTP_OUTCOME_COUNT];
};

/* ---- TLS server names (lib/tls.h; HTTPChaos on HTTPS, by the ClientHello's name) --------- */

#define KFAULT_TLS_NAME_MAX 256      /* bytes of a server name read: '.', RFC 6066's host_name, its end */
#define KFAULT_TLS_MAX_EXTENSIONS 32 /* ClientHello extensions walked to the server name; later ones unseen */

#endif /* KFAULT_H */
