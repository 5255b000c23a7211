/* edt.h - delay and bandwidth by Earliest Departure Time: each packet gets the time it may
 * leave (skb->tstamp), and the fq qdisc on the interface holds it until then. Here: each
 * rule's departure-time state (its map, looked up in netfault.c: see rules.h) and the
 * departure a delay or a rate gives a packet. */
#ifndef KFAULT_LIB_EDT_H
#define KFAULT_LIB_EDT_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>

#include "kfault.h"
#include "packet.h"
#include "rules.h"

/* slot -> departure-time state (delay, bandwidth), shared by all CPUs. Written and read by
 * netfault.c; zeroed by the agent on reuse. */
BPF_ARRAY(kfault_departures, struct kfault_departures, KFAULT_MAX_RULES);

#define NS_PER_SEC 1000000000ULL

/* Jitter for one packet: uniform in [-jitter, +jitter], mixed with the last sample when
 * correlated (an AR(1) chain that keeps the spread), clamped to the asked range. */
static __always_inline __s64 jitter_for_packet(const struct kfault_rule *rule, struct kfault_departures *dep)
{
	__s64 span = rule->jitter_ns;
	__u64 draw = ((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32();
	__s64 fresh = (__s64)(draw % (__u64)(2 * span + 1)) - span;
	__s64 jitter = (READ_ONCE(dep->last_jitter_ns) * (__s64)rule->jitter_last_weight +
			fresh * (__s64)rule->jitter_fresh_weight) >>
		       KFAULT_WEIGHT_SHIFT;

	if (jitter > span)
		jitter = span;
	if (jitter < -span)
		jitter = -span;
	WRITE_ONCE(dep->last_jitter_ns, jitter);
	return jitter;
}

/* netem's reorder: every gap-th packet, with the reorder chance, skips the delay and so
 * overtakes the delayed packets before it. */
static __always_inline int skips_delay(const struct kfault_rule *rule, struct kfault_rule_state *state)
{
	if (!(rule->actions & KFAULT_ACT_REORDER))
		return 0;
	if (state->since_reorder + 1 < rule->reorder_gap) {
		state->since_reorder++;
		return 0;
	}
	if (!roll_percent(state, KFAULT_ACT_REORDER, rule->reorder_after_miss, rule->reorder_after_hit)) {
		state->since_reorder++;
		return 0;
	}
	state->since_reorder = 0;
	return 1;
}

/* `now` plus the rule's delay, with this packet's jitter. */
static __always_inline __u64 delayed_from(const struct kfault_rule *rule, struct kfault_departures *dep, __u64 now)
{
	__s64 delay = rule->delay_ns;

	if (rule->jitter_ns)
		delay += jitter_for_packet(rule, dep);
	return delay > 0 ? now + delay : now;
}

/* EDT: the departure time of a packet under the rule's delay, or `now` when it skips it. */
static __always_inline __u64 delay_packet(const struct kfault_rule *rule, struct kfault_rule_state *state,
					  struct kfault_departures *dep, __u64 now)
{
	__u64 at;

	if (skips_delay(rule, state))
		return now;
	at = delayed_from(rule, dep, now);
	/* Without reorder, jitter must not reorder: never depart before the previous packet
	 * (fq sorts each flow by departure time). */
	if (!(rule->actions & KFAULT_ACT_REORDER)) {
		__u64 last = READ_ONCE(dep->last_delayed_ns);

		if (at < last)
			at = last;
		WRITE_ONCE(dep->last_delayed_ns, at);
	}
	return at;
}

/* EDT: the departure time of a packet under the rule's rate, or 0 when it must be dropped
 * because it would wait longer than the queue limit allows. A virtual clock: the rule's
 * next departure may lag `now` by the burst, which lets a burst leave at once. */
static __always_inline __u64 pace_packet(const struct kfault_rule *rule, struct kfault_departures *dep, __u64 now,
					 __u32 len)
{
	__u64 departure, burst_ns;

	burst_ns = rule->burst_bytes * NS_PER_SEC / rule->rate_bytes_per_sec;
	departure = READ_ONCE(dep->next_paced_ns);
	if (departure + burst_ns < now)
		departure = now - burst_ns;
	if (rule->queue_ns && departure > now + rule->queue_ns)
		return 0;
	WRITE_ONCE(dep->next_paced_ns, departure + (__u64)len * NS_PER_SEC / rule->rate_bytes_per_sec);
	return departure > now ? departure : now;
}

#endif /* KFAULT_LIB_EDT_H */
