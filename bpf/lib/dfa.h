/* dfa.h - path globs, compiled by the agent to DFAs (api/kfault_api/glob_dfa.py), walked
 * over a path byte by byte. The map of the DFAs is here, looked up in iofault.c: bcc turns
 * `map.lookup()` into a map access only in the file it compiles, not in a header. */
#ifndef KFAULT_LIB_DFA_H
#define KFAULT_LIB_DFA_H

#include "kfault.h"
#include "dfa_index.h"
#include "scratch.h"

/* slot -> the DFA of rule slot's path glob. Written by the agent, read by iofault.c. */
BPF_ARRAY(kfault_io_dfa, struct kfault_io_dfa, KFAULT_IO_MAX_RULES);

/* Walk rule r's DFA (`dfa`, or NULL) over scratch->path from the state scratch->start gives it:
 * scratch->state is then the state after the path (KFAULT_IO_DEAD_STATE when no path that
 * starts so can match), and the result the path's length. One bounded loop over the bytes. */
static __always_inline __u32 dfa_walk(const struct kfault_io_dfa *dfa, __u32 r, struct io_scratch *scratch)
{
	/* masked again, not `rule`: 6.1's verifier forgets the bounds of a u32 spilled for the call */
	scratch->state = scratch->start.state[r & (KFAULT_IO_MAX_RULES - 1)];
	if (!dfa || scratch->state == KFAULT_IO_DEAD_STATE) {
		scratch->state = KFAULT_IO_DEAD_STATE;
		return 0;
	}
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < KFAULT_IO_PATH_MAX; i++) {
		__u8 c = scratch->path[i];

		if (!c)
			return i;
		scratch->state = dfa->next[dfa_index(scratch->state, c)];
		if (scratch->state == KFAULT_IO_DEAD_STATE)
			return 0;
	}
	scratch->state = KFAULT_IO_DEAD_STATE; /* longer than we read: no match */
	return 0;
}

/* Does the path walked (dfa_walk) match the glob? */
static __always_inline int dfa_walked_accepts(const struct kfault_io_dfa *dfa, struct io_scratch *scratch)
{
	return dfa && dfa->accepting[scratch->state];
}

/* The state after the path walked as a directory (its '/' added unless it ends in one): where
 * a relative path from it starts. */
static __always_inline __u8 dfa_walked_dir(const struct kfault_io_dfa *dfa, __u32 length, struct io_scratch *scratch)
{
	if (!dfa || scratch->state == KFAULT_IO_DEAD_STATE || !length)
		return KFAULT_IO_DEAD_STATE;
	if (scratch->path[(length - 1) & (KFAULT_IO_PATH_MAX - 1)] == '/')
		return scratch->state;
	return dfa->next[dfa_index(scratch->state, '/')];
}

/* Does the path name a parent directory ("..") anywhere? Such a path can't be walked forward
 * through a DFA. One bounded loop; run only where a directory is followed. */
static __always_inline int has_dot_dot(struct io_scratch *scratch)
{
	__u8 previous = '/'; /* the path's start is a component's start */

#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < KFAULT_IO_PATH_MAX - 2; i++) {
		__u8 c = scratch->path[i];

		if (!c)
			return 0;
		if (previous == '/' && c == '.' && scratch->path[i + 1] == '.' &&
		    (scratch->path[i + 2] == '/' || !scratch->path[i + 2]))
			return 1;
		previous = c;
	}
	return 0;
}

/* The same walk from state 0 without a branch, on to the end of scratch->path (past the end of
 * the path, the state is the accepting sink or dead: kfault.h): for the file hooks, which walk
 * every armed rule in one program, where dfa_walk's branches are too many for the verifier. */
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
