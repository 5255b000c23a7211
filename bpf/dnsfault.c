/* dnsfault.c - DNSChaos at tc hooks on a pod's own interface, inside its namespace (where
 * netfault.c's programs are, before any CNI sees the packet):
 *   dns_query_out  T egress   a query the pod sends to port 53 whose name matches an error
 *                             rule: over UDP, answered at once by this program (the query
 *                             turned into its answer and redirected into T's own ingress, so it
 *                             never leaves the pod), or dropped (errorResponse drop); over TCP,
 *                             the connection reset at both ends (lib/reset.h): answering
 *                             in-kernel would need the connection's sequence numbers both ways.
 *   dns_answer_in  T ingress  an answer from port 53 whose question matches a random rule: its
 *                             A and AAAA records rewritten to random addresses, in place; for
 *                             another type, SERVFAIL (Chaos Mesh's random answers those so).
 * Each: locate (a port check first, in the packet's linear data: every other packet pays a few
 * loads and compares) -> the pod's rules ->
 * read the name -> walk each rule's DFA -> act -> count. Parsing and rewriting are
 * lib/dns.h's; every map call is here (tests/test_layout.py).
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>

#include "kfault.h"
#include "lib/dns.h"

static __always_inline void count(__u32 slot, __u32 outcome)
{
	struct kfault_dns_counters *counters = kfault_dns_counters.lookup(&slot);

	if (counters && outcome < KFAULT_DNS_OUTCOME_COUNT)
		counters->queries[outcome]++;
}

/* The first live rule of `action` placed on the pod whose patterns match the name read into
 * scratch: its slot, or -1. */
static __always_inline int matching_rule(__u32 mask, __u32 action, struct dns_scratch *scratch,
					 struct kfault_dns_rule **found)
{
	__u64 now = bpf_ktime_get_ns();

#pragma clang loop unroll(disable)
	for (__u32 slot = 0; slot < KFAULT_DNS_MAX_RULES; slot++) {
		struct kfault_dns_rule *rule;
		struct kfault_io_dfa *dfa;
		__u32 key = slot;

		if (!(mask & (1u << slot)))
			continue;
		rule = kfault_dns_rules.lookup(&key);
		dfa = kfault_dns_dfa.lookup(&key);
		if (!rule || !dfa || now >= rule->deadline_ns || rule->action != action)
			continue;
		if (dns_name_matches(dfa, scratch)) {
			*found = rule;
			return slot;
		}
	}
	return -1;
}

/* Locate a DNS message on the pod's hook (into scratch->dp), find the pod's rules, read the
 * question's name and match it: the slot of the rule that matched (name length in
 * *name_len), or -1 to pass. */
static __always_inline int match_message(struct __sk_buff *skb, __u32 direction, __u32 action,
					 struct dns_scratch **scratch, struct kfault_dns_rule **rule, __u32 *name_len)
{
	__u32 zero = 0, *mask;
	struct dns_packet *dp;
	struct dnshdr hdr;

	if (!dns_may_be(skb, direction))
		return -1;
	*scratch = kfault_dns_scratch.lookup(&zero);
	if (!*scratch)
		return -1;
	dp = &(*scratch)->dp;
	if (dns_locate(skb, direction, dp) < 0)
		return -1;
	asm volatile("" ::: "memory"); /* read dp back from the map: see struct dns_scratch */
	mask = kfault_dns_targets.lookup(&dp->pod);
	if (!mask || !*mask)
		return -1;
	if (bpf_skb_load_bytes(skb, dp->dns_offset, &hdr, sizeof(hdr)) < 0 || bpf_ntohs(hdr.qdcount) != 1 ||
	    !(bpf_ntohs(hdr.flags) & DNS_FLAG_QR) != (direction == KFAULT_DIR_TO) ||
	    (bpf_ntohs(hdr.flags) & DNS_FLAG_OPCODE))
		return -1; /* a query out, an answer in, each of one standard question */
	if (dns_read_name(skb, dp->dns_offset + sizeof(hdr), *scratch) < 0)
		return -1;
	*name_len = (*scratch)->name_len;
	return matching_rule(*mask, action, *scratch, rule);
}

/* T egress: a query the pod sends. */
int dns_query_out(struct __sk_buff *skb)
{
	struct dns_scratch *scratch = NULL;
	struct kfault_dns_rule *rule = NULL;
	struct dns_packet *dp;
	__u32 name_len = 0;
	int slot;

	slot = match_message(skb, KFAULT_DIR_TO, KFAULT_DNS_ERROR, &scratch, &rule, &name_len);
	if (slot < 0 || !rule || !scratch)
		return TC_ACT_UNSPEC; /* pass, and let later programs see it */
	dp = &scratch->dp;
	count(slot, KFAULT_DNS_OUTCOME_MATCHED);
	if (rule->rcode == KFAULT_DNS_RCODE_DROP) {
		count(slot, KFAULT_DNS_OUTCOME_DROPPED);
		return silent_drop();
	}
	if (dp->pkt.protocol == IPPROTO_TCP) {
		struct tcphdr seg;
		__u32 offset;

		if (answerable_segment(skb, &dp->pkt, &offset, &seg) < 0) {
			count(slot, KFAULT_DNS_OUTCOME_DROPPED);
			return silent_drop();
		}
		count(slot, KFAULT_DNS_OUTCOME_RESET);
		/* the server's end first, or it would wait for a query that never comes: a copy
		 * of the query, made the reset the pod would send, goes on its way */
		if (make_reset(skb, &dp->pkt, offset, &seg, RESET_ONWARD) == 0)
			bpf_clone_redirect(skb, skb->ifindex, 0);
		/* then the pod's end; the copy's IP header has no options left */
		if (tcp_offset(skb, &dp->pkt, &offset) < 0)
			return silent_drop();
		slot = send_reset(skb, &dp->pkt, offset, &seg, BPF_F_INGRESS);
		return slot < 0 ? silent_drop() : slot;
	}
	if (dns_make_error(skb, dp, name_len, rule->rcode, scratch) < 0) {
		count(slot, KFAULT_DNS_OUTCOME_DROPPED);
		return silent_drop();
	}
	count(slot, KFAULT_DNS_OUTCOME_ANSWERED);
	return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}

/* T ingress: an answer the pod receives. */
int dns_answer_in(struct __sk_buff *skb)
{
	struct dns_scratch *scratch = NULL;
	struct kfault_dns_rule *rule = NULL;
	__u32 name_len = 0, offset;
	struct dns_packet *dp;
	__be16 qtype, answers;
	int slot;

	slot = match_message(skb, KFAULT_DIR_FROM, KFAULT_DNS_RANDOM, &scratch, &rule, &name_len);
	if (slot < 0 || !scratch)
		return TC_ACT_UNSPEC;
	dp = &scratch->dp;
	count(slot, KFAULT_DNS_OUTCOME_MATCHED);
	offset = dp->dns_offset + sizeof(struct dnshdr) + name_len;
	if (bpf_skb_load_bytes(skb, offset, &qtype, sizeof(qtype)) < 0 ||
	    bpf_skb_load_bytes(skb, dp->dns_offset + __builtin_offsetof(struct dnshdr, ancount), &answers,
			       sizeof(answers)) < 0)
		return TC_ACT_UNSPEC;
	if (qtype != bpf_htons(DNS_TYPE_A) && qtype != bpf_htons(DNS_TYPE_AAAA)) {
		if (dns_fail_answer(skb, dp) == 0)
			count(slot, KFAULT_DNS_OUTCOME_FAILED);
		return TC_ACT_UNSPEC;
	}
	scratch->at = offset + DNS_QUESTION_TAIL;
	scratch->rewritten = 0;
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < KFAULT_DNS_MAX_ANSWERS; i++) {
		struct {
			__be16 type, class;
			__be32 ttl;
			__be16 rdlength;
		} __attribute__((packed)) rr;
		__u32 at = scratch->at;
		__u8 first;

		if (i >= bpf_ntohs(answers))
			break;
		/* an answer's owner is a pointer to the question as every server we know writes
		 * it; a name written out stops the walk (the records after it pass unchanged) */
		if (bpf_skb_load_bytes(skb, at, &first, 1) < 0 || (first & DNS_POINTER) != DNS_POINTER ||
		    bpf_skb_load_bytes(skb, at + 2, &rr, sizeof(rr)) < 0)
			break;
		at += 2 + DNS_RR_FIXED;
		scratch->at = at + bpf_ntohs(rr.rdlength);
		if ((rr.type == bpf_htons(DNS_TYPE_A) && rr.rdlength == bpf_htons(4)) ||
		    (rr.type == bpf_htons(DNS_TYPE_AAAA) && rr.rdlength == bpf_htons(16))) {
			if (dns_randomize(skb, dp, at, bpf_ntohs(rr.rdlength)) < 0)
				break;
			scratch->rewritten = 1;
		}
	}
	if (scratch->rewritten)
		count(slot, KFAULT_DNS_OUTCOME_REWRITTEN);
	return TC_ACT_UNSPEC;
}
