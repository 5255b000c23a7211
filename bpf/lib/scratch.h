/* scratch.h - what iofault.c's programs keep while they decide a call, in map memory. */
#ifndef KFAULT_LIB_SCRATCH_H
#define KFAULT_LIB_SCRATCH_H

#include "kfault.h"

/* Per-CPU scratch space, private to iofault.c (so not in kfault.h). Loops keep what they
 * accumulate here, in map memory, rather than in registers: the verifier tracks registers
 * exactly, so a mask built bit by bit in one, a branch per bit, would make it walk every
 * combination of bits; values in a map are just "some number", and the paths through each
 * iteration merge again. (Or the bits are set without a branch: targeting_rules.) (bcc can't
 * pass bpf_loop callbacks.) */
struct io_scratch {
	char path[KFAULT_IO_PATH_MAX];
	struct kfault_io_dir_states start; /* open: the state each rule's walk starts in */
	struct kfault_io_dir_states dir;   /* open, chdir: each rule's state after the path as a directory */
	volatile __u32 found;              /* volatile: the compiler must not keep them in registers */
	volatile __s32 error;
	volatile __u64 hold_ns;
	volatile __u32 remaining; /* open: candidate rules whose glob is still to be walked */
	volatile __u32 rule;      /* open: the rule being walked */
	volatile __u32 method;
	volatile __u32 apply;  /* 1 + the attrOverride or mistake rule that hit, for io_apply_attr / io_corrupt */
	volatile __u32 layout; /* KFAULT_IO_LAYOUT_* of buffer */
	volatile __u64 buffer; /* the caller's stat struct or data buffer (a user address) */
	volatile __u64 length; /* mistake: bytes of buffer that hold data */
	volatile __u32 runs;   /* mistake: wrong runs to write (volatile: see io_corrupt) */
	__u32 pad_runs;
	volatile __u32 creates;   /* open: it has O_CREAT, so rules on method CREATE decide it too */
	volatile __u32 fail_slot; /* fsync: 1 + the fault rule the holder gives after the call (lib/after_call.h) */
	volatile __u32 dirs; /* KFAULT_IO_DIRS_FD (open) or KFAULT_IO_DIRS_CWD (chdir): follow the path's directory */
	__u32 pad_dirs;
	volatile __u64 iocbs;       /* io_submit: the caller's array of iocb pointers */
	volatile __u32 iocb_index;  /* io_submit: the next iocb to decide */
	volatile __u32 iocb_count;  /* io_submit: how many it submits (at most KFAULT_IO_AIO_MAX_IOCBS looked at) */
	volatile __u32 aio_targets; /* io_submit: the armed rules that target the caller */
	__u32 pad_aio;
	volatile __u8 state;
	__u8 pad[3];
	__u8 fill[KFAULT_IO_MISTAKE_MAX_LENGTH]; /* mistake: the wrong bytes */
};
/* 0 -> this CPU's scratch space: written and read by iofault.c's programs only. */
BPF_PERCPU_ARRAY(kfault_io_scratch, struct io_scratch, 1);

#endif /* KFAULT_LIB_SCRATCH_H */
