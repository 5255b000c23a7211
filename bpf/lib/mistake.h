/* mistake.h - mistake: wrong bytes written over a read's result or a write's data, in the
 * caller's own buffer (bpf_probe_write_user). Owns no map. */
#ifndef KFAULT_LIB_MISTAKE_H
#define KFAULT_LIB_MISTAKE_H

#include "kfault.h"
#include "scratch.h"

/* struct iovec as the 64-bit ABI lays it out (linux/uio.h's uses a void pointer). */
struct io_user_iovec {
	__u64 base;
	__u64 len;
};

/* mistake: 1 to max_occurrences runs of 1 to max_length wrong bytes at random places within
 * the first scratch->length bytes of the buffer (a read's result, at its exit; a write's data,
 * at its entry, before the kernel copies it: so the caller's own buffer changes too). Only the
 * first iovec of a vector call is touched. Runs may overlap or touch.
 * Returns 1 when it wrote them, 0 when there was nothing to write to. */
static __always_inline int write_mistake(const struct kfault_io_rule *rule, struct io_scratch *scratch)
{
	__u64 buffer, length, limit;

	buffer = scratch->buffer;
	length = scratch->length;
	if (scratch->layout == KFAULT_IO_LAYOUT_IOVEC) {
		struct io_user_iovec first = {};

		if (bpf_probe_read_user(&first, sizeof(first), (void *)buffer))
			return 0;
		buffer = first.base;
		if (scratch->method == KFAULT_IO_METHOD_WRITE || first.len < length)
			length = first.len;
	}
	if (!length)
		return 0;
	/* Both loops are unrolled: straight code the verifier walks once per exit of the second.
	 * As bounded loops, 6.1's verifier walked each exit of one through the other and refused
	 * the program (E2BIG). */
	if (rule->filling == KFAULT_IO_FILL_RANDOM) {
#pragma unroll
		for (__u32 i = 0; i < KFAULT_IO_MISTAKE_MAX_LENGTH / 4; i++)
			*(__u32 *)&scratch->fill[(i * 4) & (KFAULT_IO_MISTAKE_MAX_LENGTH - 4)] = bpf_get_prandom_u32();
	} else {
		__builtin_memset(scratch->fill, 0, sizeof(scratch->fill));
	}
	scratch->runs = 1 + bpf_get_prandom_u32() % (rule->max_occurrences ? rule->max_occurrences : 1);
	/* No branch in the loop but its exit: a run of 1 + extra bytes (extra < limit <= length)
	 * starts before length - extra, so it ends inside the data without a clamp. A clamp per
	 * run was one more unknown branch per iteration: 6.1's verifier gave up on their product
	 * ("sequence of 8193 jumps is too complex"). */
	limit = rule->max_length ? rule->max_length : 1;
	if (limit > length)
		limit = length;
#pragma unroll
	for (__u32 i = 0; i < KFAULT_IO_MISTAKE_MAX_OCCURRENCES; i++) {
		__u64 at, extra;

		/* read anew each time: with a plain variable clang turns the loop into one of
		 * `runs` iterations, whose bound the verifier can't see */
		if (i >= scratch->runs)
			break;
		extra = bpf_get_prandom_u32() % limit;
		at = bpf_get_prandom_u32() % (length - extra);
		/* the mask bounds the size for the verifier and changes nothing: the schema keeps
		 * max_length at most KFAULT_IO_MISTAKE_MAX_LENGTH */
		extra &= KFAULT_IO_MISTAKE_MAX_LENGTH - 1;
		bpf_probe_write_user((void *)(buffer + at), scratch->fill, extra + 1);
	}
	return 1;
}

#endif /* KFAULT_LIB_MISTAKE_H */
