/* tls_probe.c - bpf/lib/tls.h alone, for tests/kernel/test_tls_names.py to run packets through
 * with BPF_PROG_TEST_RUN: the server name read from a TCP segment's ClientHello, and whether
 * slot 0's DFA matches it. Not part of kfault: what an HTTP program does with the name (its
 * port, its rules) is that program's.
 *   tls_probe  returns 0: no name read; 1: a name read (into kfault_test_tls_name), not
 *              matched; 2: read and matched.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>

#include "kfault.h"
#include "lib/tls.h"

struct test_tls_name {
	__u8 name[KFAULT_TLS_NAME_MAX];
	__u32 len;
};

/* 0 -> the DFA of the test's name patterns. Written by the test. */
BPF_ARRAY(kfault_test_tls_dfa, struct kfault_io_dfa, 1);
/* 0 -> the name the last run read. Written here, read by the test. */
BPF_ARRAY(kfault_test_tls_name, struct test_tls_name, 1);

/* Where an IPv4 or IPv6 (no extension headers) TCP segment's payload starts, or -1. */
static __always_inline int payload_offset(struct __sk_buff *skb, __u32 *offset)
{
	__u32 l4;
	__u8 doff;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0 || ip.protocol != IPPROTO_TCP)
			return -1;
		l4 = ETH_HLEN + ip.ihl * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0 || ip6.nexthdr != IPPROTO_TCP)
			return -1;
		l4 = ETH_HLEN + sizeof(ip6);
	} else {
		return -1;
	}
	if (bpf_skb_load_bytes(skb, l4 + 12, &doff, 1) < 0)
		return -1;
	*offset = l4 + (doff >> 4) * 4;
	return 0;
}

int tls_probe(struct __sk_buff *skb)
{
	struct test_tls_name *out;
	struct tls_scratch *scratch;
	struct kfault_io_dfa *dfa;
	__u32 zero = 0, offset;

	out = kfault_test_tls_name.lookup(&zero);
	if (!out)
		return 0;
	out->len = 0;
	if (payload_offset(skb, &offset) < 0 || !tls_may_be_hello(skb, offset))
		return 0;
	scratch = kfault_tls_scratch.lookup(&zero);
	if (!scratch || tls_read_server_name(skb, offset, scratch) < 0)
		return 0;
	__builtin_memcpy(out->name, scratch->name, sizeof(out->name));
	out->len = scratch->name_len;
	dfa = kfault_test_tls_dfa.lookup(&zero);
	return dfa && tls_name_matches(dfa, scratch) ? 2 : 1;
}
