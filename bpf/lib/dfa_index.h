/* dfa_index.h - where a DFA's next state is in struct kfault_io_dfa's flat table: the one
 * step that the file path walks (dfa.h), the DNS name walk (dns.h) and the HTTP path walk
 * (http.h) share; and the branchless walk of a text the last two share. Owns no map. */
#ifndef KFAULT_LIB_DFA_INDEX_H
#define KFAULT_LIB_DFA_INDEX_H

#include <linux/types.h>

#include "kfault.h"

/* Where next[state][c] is in the flat table. The barrier keeps clang from turning the add
 * into an or (the bits don't overlap): 6.1's verifier loses an or's bounds. */
static __always_inline __u32 dfa_index(__u32 state, __u8 c)
{
	__u32 row = (state & 0xff) << 8;

	asm volatile("" : "+r"(row));
	return row + c;
}

/* Does the text (KFAULT_IO_PATH_MAX bytes, a NUL after its end) match the DFA? The walk goes on
 * past the NUL without a branch: there the DFA is in its accepting sink or dead, which no byte
 * leaves (kfault.h), whatever the buffer holds after it. */
static __always_inline int dfa_accepts_text(const struct kfault_io_dfa *dfa, const __u8 *text)
{
	__u8 state = 0;

#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < KFAULT_IO_PATH_MAX; i++)
		state = dfa->next[dfa_index(state, text[i])];
	return dfa->accepting[state];
}

#endif /* KFAULT_LIB_DFA_INDEX_H */
