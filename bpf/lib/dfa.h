/* dfa.h - path globs, compiled by the agent to DFAs (api/kfault_api/glob_dfa.py), walked
 * over a path byte by byte. The map of the DFAs is here, looked up in iofault.c: bcc turns
 * `map.lookup()` into a map access only in the file it compiles, not in a header. */
#ifndef KFAULT_LIB_DFA_H
#define KFAULT_LIB_DFA_H

#include "kfault.h"
#include "scratch.h"

/* slot -> the DFA of rule slot's path glob. Written by the agent, read by iofault.c. */
BPF_ARRAY(kfault_io_dfa, struct kfault_io_dfa, KFAULT_IO_MAX_RULES);

/* Where next[state][c] is in kfault_io_dfa's flat table. The barrier keeps clang from
 * turning the add into an or (the bits don't overlap): 6.1's verifier loses an or's bounds. */
static __always_inline __u32 dfa_index(__u32 state, __u8 c)
{
	__u32 row = (state & 0xff) << 8;

	asm volatile("" : "+r"(row));
	return row + c;
}

/* Does rule r's DFA (`dfa`, or NULL) accept scratch->path, from the state scratch->start
 * gives it? One bounded loop over the bytes. */
static __always_inline int dfa_accepts(const struct kfault_io_dfa *dfa, __u32 r, struct io_scratch *scratch)
{
	/* masked again, not `rule`: 6.1's verifier forgets the bounds of a u32 spilled for the call */
	scratch->state = scratch->start.state[r & (KFAULT_IO_MAX_RULES - 1)];
	if (!dfa || scratch->state == KFAULT_IO_DEAD_STATE)
		return 0;
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < KFAULT_IO_PATH_MAX; i++) {
		__u8 c = scratch->path[i];

		if (!c)
			return dfa->accepting[scratch->state];
		scratch->state = dfa->next[dfa_index(scratch->state, c)];
		if (scratch->state == KFAULT_IO_DEAD_STATE)
			return 0;
	}
	return 0; /* longer than we read: no match */
}

/* The same walk from state 0 without a branch, on to the end of scratch->path (past the end of
 * the path, the state is the accepting sink or dead: kfault.h): for the file hooks, which walk
 * every armed rule in one program, where dfa_accepts' branches are too many for the verifier. */
static __always_inline int dfa_accepts_padded(const struct kfault_io_dfa *dfa, struct io_scratch *scratch)
{
	__u8 state = 0;

	if (!dfa)
		return 0;
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < KFAULT_IO_PATH_MAX; i++)
		state = dfa->next[dfa_index(state, scratch->path[i])];
	return dfa->accepting[state];
}

#endif /* KFAULT_LIB_DFA_H */
