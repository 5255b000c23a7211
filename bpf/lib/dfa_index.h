/* dfa_index.h - where a DFA's next state is in struct kfault_io_dfa's flat table: the one
 * step that the file path walks (dfa.h) and the DNS name walk (dns.h) share. Owns no map. */
#ifndef KFAULT_LIB_DFA_INDEX_H
#define KFAULT_LIB_DFA_INDEX_H

#include <linux/types.h>

/* Where next[state][c] is in the flat table. The barrier keeps clang from turning the add
 * into an or (the bits don't overlap): 6.1's verifier loses an or's bounds. */
static __always_inline __u32 dfa_index(__u32 state, __u8 c)
{
	__u32 row = (state & 0xff) << 8;

	asm volatile("" : "+r"(row));
	return row + c;
}

#endif /* KFAULT_LIB_DFA_INDEX_H */
