/* netfault.c - network faults at tc hooks on a target's own interfaces, inside its namespace.
 *
 * Where each program runs, for a target interface T (a pod's end of its veth) and the ifb I
 * kfault adds to the target's namespace while a `from` delay or bandwidth is in force:
 *   egress_to     T egress   packets T sends      partition, loss, corrupt, duplicate;
 *                                                 then delay, bandwidth (EDT, fq on T)
 *   ingress_from  T ingress  packets T receives   partition, loss, corrupt, duplicate
 *   select_delayed T ingress (after ingress_from) picks what a delay applies to: tc's
 *                                                 mirred action redirects it to I
 *   egress_from   I egress   packets T receives   delay, bandwidth (EDT, fq on I); I then
 *                                                 hands each packet back to T's ingress
 * Nothing runs on the host side of the veth: that is where an eBPF CNI's programs are, and
 * they may redirect a packet past any hook of ours there (bpf_redirect_peer) or end the chain.
 * A drop at T's egress must be silent to the sender's socket, like a loss in the network:
 * TC_ACT_SHOT there reaches it as NET_XMIT_DROP (ENOBUFS: ping retries, TCP sees local
 * congestion), and tcx reads TC_ACT_STOLEN as "next". So silent_drop() (lib/packet.h).
 * A partition with partitionBehavior reject answers a TCP packet with a reset instead, made in
 * place of the packet and sent where the packet came from: at egress_to back into T's own
 * ingress (T's connect fails with ECONNREFUSED, its connection with ECONNRESET), at
 * ingress_from out of T to the peer. See answer_with_reset().
 *
 * Each program: parse -> look up the rules for (direction, target address, peer) -> for each
 * live rule: roll -> act -> count. Parsing is lib/packet.h's, the rules' maps and decisions
 * lib/rules.h's, EDT lib/edt.h's, which packet opens a connection (a delay per connection)
 * lib/flows.h's, the reset lib/reset.h's, duplicate and corrupt lib/tamper.h's. Every map call is in this file: bcc rewrites `map.lookup()` and its kind only
 * in the file it compiles (tests/test_layout.py).
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>

#include "kfault.h"
#include "lib/edt.h"
#include "lib/flows.h"
#include "lib/packet.h"
#include "lib/reset.h"
#include "lib/rules.h"
#include "lib/tamper.h"

/* What fault_packet decided for a packet. */
#define FAULT_PASS 0
#define FAULT_DROP 1
#define FAULT_RESET 2 /* drop it, and answer it with a TCP reset */

/* The maps are lib/rules.h's, lib/edt.h's and lib/flows.h's; their lookups are here (see rules.h). */

static __always_inline struct kfault_peer_rules *lookup_rules(struct __sk_buff *skb, __u32 direction,
							      struct kfault_peer_key *key, struct packet *pkt)
{
	__builtin_memset(key, 0, sizeof(*key));
	if (parse_packet(skb, direction, key, pkt) < 0)
		return NULL;
	return kfault_peers.lookup(key);
}

static __always_inline void count(__u32 slot, __u32 outcome, __u32 len)
{
	struct kfault_counters *counters = kfault_counters.lookup(&slot);

	if (!counters || outcome >= KFAULT_OUTCOME_COUNT)
		return;
	counters->packets[outcome]++;
	counters->bytes[outcome] += len;
}

/* The i-th rule listed for this peer and its state, if it is live and applies to the
 * packet: returns its slot, or -1 to skip it. */
static __always_inline int rule_at(const struct kfault_peer_rules *rules, int i, const struct packet *pkt, __u64 now,
				   struct kfault_rule **rule, struct kfault_rule_state **state)
{
	__u32 slot;

	if (i >= rules->count)
		return -1;
	slot = rules->slot[i];
	*rule = kfault_rules.lookup(&slot);
	*state = kfault_rule_state.lookup(&slot);
	if (!*rule || !*state || rule_expired(*rule, now) || !rule_matches(*rule, pkt))
		return -1;
	return slot;
}

/* The per-rule loop of every program: the statement that follows runs once for each rule
 * listed for the packet's peer that is live and applies to the packet, with `slot`, `rule` and
 * `state` set (rule_at). An unrolled for loop: `continue` goes on to the next rule. */
/* clang-format off */
#define for_each_rule(rules, pkt, now, slot, rule, state)                                       \
	_Pragma("unroll") for (int rule_i_ = 0; rule_i_ < KFAULT_MAX_RULES_PER_PEER; rule_i_++) \
		if (((slot) = rule_at(rules, rule_i_, pkt, now, &(rule), &(state))) >= 0)
/* clang-format on */

/* Answer a partition under reject with a TCP reset (lib/reset.h), counted for rule `slot`:
 * returns the redirect, or -1 for a packet the caller must drop. */
static __always_inline int answer_with_reset(struct __sk_buff *skb, const struct packet *pkt, __u32 slot,
					     __u64 redirect_flags)
{
	struct tcphdr seg;
	__u32 offset;

	if (answerable_segment(skb, pkt, &offset, &seg) < 0) {
		count(slot, KFAULT_OUTCOME_DROPPED, pkt->len);
		return -1;
	}
	count(slot, KFAULT_OUTCOME_RESET, pkt->len);
	return send_reset(skb, pkt, offset, &seg, redirect_flags);
}

/* Partition, loss, duplicate, corrupt: returns FAULT_DROP when a rule drops the packet,
 * FAULT_RESET when a partition under reject answers it (its rule's slot in `*reset_slot`,
 * counted by answer_with_reset), else FAULT_PASS. */
static __always_inline int fault_packet(struct __sk_buff *skb, const struct kfault_peer_rules *rules,
					const struct packet *pkt, __u64 now, __u64 hook_flags, __u32 *reset_slot)
{
	struct kfault_rule_state *state;
	struct kfault_rule *rule;
	int slot;

	/* First every rule's drop decision: a packet that any rule drops is neither
	 * duplicated nor corrupted by another (a copy of it must not survive). */
	for_each_rule(rules, pkt, now, slot, rule, state) {
		count(slot, KFAULT_OUTCOME_MATCHED, pkt->len);
		if ((rule->actions & KFAULT_ACT_REJECT) && pkt->protocol == IPPROTO_TCP && pkt->has_ports) {
			*reset_slot = slot;
			return FAULT_RESET;
		}
		if ((rule->actions & KFAULT_ACT_PARTITION) ||
		    ((rule->actions & KFAULT_ACT_LOSS) &&
		     roll_percent(state, KFAULT_ACT_LOSS, rule->loss_after_miss, rule->loss_after_hit))) {
			count(slot, KFAULT_OUTCOME_DROPPED, pkt->len);
			return FAULT_DROP;
		}
	}
	/* Then what the packet goes through on its way. */
	for_each_rule(rules, pkt, now, slot, rule, state) {
		if ((rule->actions & KFAULT_ACT_DUPLICATE) &&
		    roll_percent(state, KFAULT_ACT_DUPLICATE, rule->duplicate_after_miss, rule->duplicate_after_hit) &&
		    duplicate_packet(skb, hook_flags))
			count(slot, KFAULT_OUTCOME_DUPLICATED, pkt->len);
		if ((rule->actions & KFAULT_ACT_CORRUPT) &&
		    roll_percent(state, KFAULT_ACT_CORRUPT, rule->corrupt_after_miss, rule->corrupt_after_hit) &&
		    corrupt_packet(skb, pkt))
			count(slot, KFAULT_OUTCOME_CORRUPTED, pkt->len);
		count(slot, KFAULT_OUTCOME_PASSED, pkt->len);
	}
	return FAULT_PASS;
}

/* Whether a live delay or bandwidth rule applies to the packet. */
static __always_inline int edt_applies(const struct kfault_peer_rules *rules, const struct packet *pkt, __u64 now)
{
	struct kfault_rule_state *state;
	struct kfault_rule *rule;
	int slot;

	for_each_rule(rules, pkt, now, slot, rule, state) {
		if (rule->actions & (KFAULT_ACT_DELAY | KFAULT_ACT_BANDWIDTH))
			return 1;
	}
	return 0;
}

/* A delay per connection (lib/flows.h): the departure of a packet that opens its connection or
 * flow under rule `slot`; for a later packet, its held opening packet's while that one waits;
 * else `now`. */
static __always_inline __u64 delay_connection(struct __sk_buff *skb, const struct kfault_rule *rule,
					      struct kfault_departures *dep, const struct kfault_peer_key *key,
					      const struct packet *pkt, __u32 slot, __u64 now)
{
	struct kfault_flow_key flow_key;
	struct kfault_flow opened = {};
	struct kfault_flow *flow;
	__u64 at;
	int opens;

	flow_key_of(&flow_key, slot, key, pkt);
	flow = kfault_flows.lookup(&flow_key);
	opens = opens_flow(pkt, flow, now, &opened.opening_seq);
	if (opens == FLOW_NONE || (opens == FLOW_CONTINUES && !flow))
		return now;
	if (opens == FLOW_CONTINUES) {
		if (pkt->protocol == IPPROTO_UDP)
			WRITE_ONCE(flow->last_seen_ns, now);
		at = READ_ONCE(flow->departure_ns);
		return at > now ? at : now;
	}
	opened.departure_ns = delayed_from(rule, dep, now);
	opened.last_seen_ns = now;
	kfault_flows.update(&flow_key, &opened);
	return opened.departure_ns;
}

/* EDT: give the packet its departure time under every live delay and bandwidth rule. Rules
 * combine by the latest departure; of the per-connection delays, the longest decides, so the
 * flow work (a lookup, a TCP header) is done once, not once per rule. */
static __always_inline int edt_packet(struct __sk_buff *skb, const struct kfault_peer_rules *rules,
				      const struct kfault_peer_key *key, const struct packet *pkt, __u64 now)
{
	struct kfault_rule_state *state;
	struct kfault_rule *rule;
	__u64 departure, at, longest = 0;
	int slot, longest_slot = -1;

	departure = skb->tstamp > now ? skb->tstamp : now;
	for_each_rule(rules, pkt, now, slot, rule, state) {
		struct kfault_departures *dep;
		__u32 slot_key;

		if (!(rule->actions & (KFAULT_ACT_DELAY | KFAULT_ACT_BANDWIDTH)))
			continue;
		slot_key = slot;
		dep = kfault_departures.lookup(&slot_key);
		if (!dep)
			continue;

		count(slot, KFAULT_OUTCOME_MATCHED, pkt->len);
		count(slot, KFAULT_OUTCOME_PASSED, pkt->len);
		if (rule->actions & KFAULT_ACT_PER_CONNECTION) {
			if (longest_slot < 0 || rule->delay_ns > longest) {
				longest = rule->delay_ns;
				longest_slot = slot;
			}
			continue;
		}
		if ((rule->actions & KFAULT_ACT_BANDWIDTH) && rule->rate_bytes_per_sec) {
			at = pace_packet(rule, dep, now, pkt->len);
			if (!at) {
				count(slot, KFAULT_OUTCOME_DROPPED, pkt->len);
				return TC_ACT_SHOT;
			}
			if (at > departure)
				departure = at;
		}
		if (rule->actions & KFAULT_ACT_DELAY) {
			at = delay_packet(rule, state, dep, now);
			if (at > departure)
				departure = at;
		}
		count(slot, KFAULT_OUTCOME_DELAYED, pkt->len);
	}
	/* after the loop, from the slot alone: inlined once, not once per rule */
	if (longest_slot >= 0) {
		__u32 slot_key = longest_slot;
		struct kfault_departures *dep = kfault_departures.lookup(&slot_key);

		rule = kfault_rules.lookup(&slot_key);
		if (rule && dep) {
			at = delay_connection(skb, rule, dep, key, pkt, slot_key, now);
			if (at > departure)
				departure = at;
			if (at > now) /* counted delayed only when held: opening packets, what queues behind */
				count(slot_key, KFAULT_OUTCOME_DELAYED, pkt->len);
		}
	}
	if (departure > now)
		skb->tstamp = departure;
	return TC_ACT_UNSPEC; /* pass, and let later filters see it */
}

/* T egress, what the target sends: faults (a drop silent to the sender, a reset back into
 * the target), then EDT. */
int egress_to(struct __sk_buff *skb)
{
	int duplicate = is_duplicate(skb);
	struct kfault_peer_rules *rules;
	struct kfault_peer_key key;
	struct packet pkt = {};
	__u32 reset_slot = 0;
	__u64 now;
	int fault;

	rules = lookup_rules(skb, KFAULT_DIR_TO, &key, &pkt);
	if (!rules)
		return TC_ACT_UNSPEC; /* pass, and let later programs see it */
	now = bpf_ktime_get_ns();
	fault = duplicate ? FAULT_PASS : fault_packet(skb, rules, &pkt, now, 0, &reset_slot);
	if (fault == FAULT_RESET) {
		int redirected = answer_with_reset(skb, &pkt, reset_slot, BPF_F_INGRESS);

		return redirected < 0 ? silent_drop() : redirected;
	}
	if (fault == FAULT_DROP)
		return silent_drop();
	return edt_packet(skb, rules, &key, &pkt, now);
}

/* T ingress, what the target receives. */
int ingress_from(struct __sk_buff *skb)
{
	int duplicate = is_duplicate(skb);
	struct kfault_peer_rules *rules;
	struct kfault_peer_key key;
	struct packet pkt = {};
	__u32 reset_slot = 0;
	int fault;

	rules = lookup_rules(skb, KFAULT_DIR_FROM, &key, &pkt);
	if (!rules)
		return TC_ACT_UNSPEC;
	fault = duplicate ? FAULT_PASS : fault_packet(skb, rules, &pkt, bpf_ktime_get_ns(), BPF_F_INGRESS, &reset_slot);
	if (fault == FAULT_RESET) {
		int redirected = answer_with_reset(skb, &pkt, reset_slot, 0);

		return redirected < 0 ? TC_ACT_SHOT : redirected;
	}
	if (fault == FAULT_DROP)
		return TC_ACT_SHOT;
	return TC_ACT_UNSPEC;
}

/* T ingress, after ingress_from: a classifier (not direct-action) whose match sends the packet
 * to the ifb by tc's mirred action, when a delay or rate applies to it. (A bpf_redirect to an
 * ifb is dropped there before kernel 6.7: only mirred marks a packet as redirected.) */
int select_delayed(struct __sk_buff *skb)
{
	struct kfault_peer_rules *rules;
	struct kfault_peer_key key;
	struct packet pkt = {};

	rules = lookup_rules(skb, KFAULT_DIR_FROM, &key, &pkt);
	if (!rules || !edt_applies(rules, &pkt, bpf_ktime_get_ns()))
		return 0; /* no match: on to the next filter */
	return -1;        /* a match (the filter's own class): its action runs */
}

/* The ifb's egress, what the target receives and a delay applies to: EDT, under fq there. */
int egress_from(struct __sk_buff *skb)
{
	struct kfault_peer_rules *rules;
	struct kfault_peer_key key;
	struct packet pkt = {};

	rules = lookup_rules(skb, KFAULT_DIR_FROM, &key, &pkt);
	if (!rules)
		return TC_ACT_UNSPEC;
	return edt_packet(skb, rules, &key, &pkt, bpf_ktime_get_ns());
}
