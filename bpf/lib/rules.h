/* rules.h - the network rules: the maps they live in, whether one applies to a packet, and
 * the correlated rolls of its random actions.
 *
 * The maps are declared here, beside what reads their values, and looked up in netfault.c:
 * bcc turns `map.lookup()` into a map access only in the file it compiles, not in a header
 * (there it stays a call through a pointer, which the verifier refuses). */
#ifndef KFAULT_LIB_RULES_H
#define KFAULT_LIB_RULES_H

#include "kfault.h"
#include "packet.h"

/* (direction, target address, peer prefix) -> rule slots. Written by the agent, read by netfault.c. */
BPF_LPM_TRIE(kfault_peers, struct kfault_peer_key, struct kfault_peer_rules, KFAULT_MAX_PEER_PREFIXES);
/* slot -> rule. Written by the agent (whole value), read by netfault.c. */
BPF_ARRAY(kfault_rules, struct kfault_rule, KFAULT_MAX_RULES);
/* slot -> per-CPU counters. Written by netfault.c, read by the agent at scrape time. */
BPF_PERCPU_ARRAY(kfault_counters, struct kfault_counters, KFAULT_MAX_RULES);
/* slot -> per-CPU correlation memory. Written and read by netfault.c; zeroed by the agent on reuse. */
BPF_PERCPU_ARRAY(kfault_rule_state, struct kfault_rule_state, KFAULT_MAX_RULES);

/* 0 is expired too (kfault.h): a slot the agent has not written does nothing. */
static __always_inline int rule_expired(const struct kfault_rule *rule, __u64 now)
{
	return now >= rule->deadline_ns;
}

static __always_inline int rule_matches(const struct kfault_rule *rule, const struct packet *pkt)
{
	if (rule->protocol && rule->protocol != pkt->protocol)
		return 0;
	if (rule->peer_port_max && (pkt->peer_port < rule->peer_port_min || pkt->peer_port > rule->peer_port_max))
		return 0;
	return 1;
}

/* One correlated draw: the threshold depends on whether this action hit last time. */
static __always_inline int roll_percent(struct kfault_rule_state *state, __u32 action, __u32 after_miss,
					__u32 after_hit)
{
	__u32 threshold = (state->last_hit & action) ? after_hit : after_miss;
	int hit = threshold == KFAULT_ALWAYS || bpf_get_prandom_u32() < threshold;

	if (hit)
		state->last_hit |= action;
	else
		state->last_hit &= ~action;
	return hit;
}

#endif /* KFAULT_LIB_RULES_H */
