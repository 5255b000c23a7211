/* httpfault.c - HTTPChaos (plain HTTP/1.x) at tc hooks on a pod's own interface, inside its
 * namespace (where dnsfault.c's programs are, before any CNI sees the packet). The pod is the
 * server: its requests come in on the experiment's port, its responses go out from it.
 *   http_request_in   T ingress  a segment starting a request (method, space, path): the
 *                                rules placed on (pod, port) decide it by method and path;
 *                                or a TLS ClientHello (HTTPS): the serverName rules placed
 *                                there, by its server name (lib/tls.h), walked as a path.
 *                                Request abort: the connection reset at both ends (lib/reset.h);
 *                                Request delay: owed to the response (the ingress has no queue to
 *                                hold a packet in); Response rules: remembered for the response.
 *   http_response_out T egress   a segment the pod sends from the port: the first one of a
 *                                response pays what its request left (its status code read and
 *                                matched, then abort, replace.code in place, delay); every later
 *                                packet of the connection leaves no earlier than a held one
 *                                (EDT under fq on T: fq orders a flow by departure time).
 * What the request side tells the response side is the connection's kfault_http_flows entry.
 * Each segment's sequence number is checked against what was decided already, so a
 * retransmission is never decided again. Each: a port check first (in the packet's linear data,
 * and an inlined array lookup: every other packet pays a few loads) -> the rules of (pod, port)
 * -> read the line -> walk each rule -> act -> count. Parsing is lib/http.h's; every map call is
 * here (tests/test_layout.py).
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>

#include "kfault.h"
#include "lib/http.h"
#include "lib/tls.h"

static __always_inline void count(__u32 slot, __u32 outcome)
{
	struct kfault_http_counters *counters = kfault_http_counters.lookup(&slot);

	if (counters && outcome < KFAULT_HTTP_OUTCOME_COUNT)
		counters->messages[outcome]++;
}

/* Is some HTTP rule placed on this port? An array's lookup, inlined by the verifier. */
static __always_inline int port_armed(__u16 port)
{
	__u32 word = port / 64;
	__u64 *bits;

	if (!port)
		return 0;
	bits = kfault_http_ports.lookup(&word);
	return bits && (*bits & (1ULL << (port % 64)));
}

/* Locate an armed port's segment into scratch->hp and find the rules placed on (pod, port):
 * their mask, or 0 to pass. */
static __always_inline __u32 armed_segment(struct __sk_buff *skb, __u32 direction, struct http_scratch **scratch)
{
	struct kfault_http_target_key key = {};
	__u16 port = http_port_of(skb, direction);
	__u32 zero = 0, *mask;

	if (!port_armed(port))
		return 0;
	*scratch = kfault_http_scratch.lookup(&zero);
	if (!*scratch || http_locate(skb, direction, port, &(*scratch)->hp) < 0)
		return 0;
	asm volatile("" ::: "memory"); /* read hp back from the map: see struct dns_scratch */
	__builtin_memcpy(key.addr, (*scratch)->hp.flow.pod, sizeof(key.addr));
	key.port = port;
	mask = kfault_http_targets.lookup(&key);
	return mask ? *mask : 0;
}

/* Reset the segment's connection at both ends: a copy of it, made the reset its sender would
 * send, goes on to its receiver (`onward`: BPF_F_INGRESS into the pod, 0 out to the client);
 * the segment itself becomes the reset that answers it, sent back. Its TCP header is where
 * http_locate found it, before and after (a plain IP header: http_port_of), so lib/reset.h's
 * tcp_offset, whose IPv6 extension walk 6.1's verifier refused here as a loop, is not needed. */
static __always_inline int reset_both_ends(struct __sk_buff *skb, struct http_packet *hp, __u64 onward)
{
	__u32 offset = hp->l4_offset;
	struct tcphdr seg;
	int sent;

	if (bpf_skb_load_bytes(skb, offset, &seg, sizeof(seg)) < 0)
		return silent_drop();
	if (make_reset(skb, &hp->pkt, offset, &seg, RESET_ONWARD) == 0)
		bpf_clone_redirect(skb, skb->ifindex, onward);
	sent = send_reset(skb, &hp->pkt, offset, &seg, onward ? 0 : BPF_F_INGRESS);
	return sent < 0 ? silent_drop() : sent;
}

/* Walk the rules of `mask` over the request read into scratch (its method `method`, its path
 * in scratch->path): what they decide, in scratch->owed, ->pending and ->aborting. */
static __always_inline void decide_request(__u32 mask, __u64 method, struct http_scratch *scratch)
{
	__u64 now = bpf_ktime_get_ns();

	scratch->owed = 0;
	scratch->pending = 0;
	scratch->aborting = -1;
#pragma clang loop unroll(disable)
	for (__u32 slot = 0; slot < KFAULT_HTTP_MAX_RULES; slot++) {
		struct kfault_http_rule *rule;
		struct kfault_io_dfa *dfa;
		__u32 key = slot;

		if (!(mask & (1u << slot)))
			continue;
		rule = kfault_http_rules.lookup(&key);
		dfa = kfault_http_dfa.lookup(&key);
		if (!rule || !dfa || now >= rule->deadline_ns)
			continue;
		if ((rule->method_mask && rule->method != method) ||
		    ((rule->flags & KFAULT_HTTP_HAS_PATH) && !http_path_matches(dfa, scratch)))
			continue;
		if (rule->target == KFAULT_HTTP_RESPONSE) {
			scratch->pending |= 1u << slot; /* counted and done when its response comes */
			continue;
		}
		count(slot, KFAULT_HTTP_OUTCOME_MATCHED);
		if (rule->flags & KFAULT_HTTP_ABORT) {
			scratch->aborting = slot;
			return;
		}
		if (rule->delay_ns) {
			if (rule->delay_ns > scratch->owed)
				scratch->owed = rule->delay_ns;
			count(slot, KFAULT_HTTP_OUTCOME_DELAYED);
		}
	}
}

/* HTTPS: what decide_request is given for a ClientHello. serverName rules select by their DFA
 * alone (no method: this is never compared) and no request rule is walked over a hello. */
#define HELLO_METHOD 1
_Static_assert(KFAULT_TLS_NAME_MAX == KFAULT_HTTP_PATH_MAX, "a server name is walked where a path is read");

/* The serverName rules placed on the segment's (pod, port): their mask, or 0. */
static __always_inline __u32 hello_rules(const struct http_packet *hp)
{
	struct kfault_http_target_key key = {};
	__u32 *mask;

	__builtin_memcpy(key.addr, hp->flow.pod, sizeof(key.addr));
	key.port = hp->flow.port;
	key.hello = 1;
	mask = kfault_http_targets.lookup(&key);
	return mask ? *mask : 0;
}

/* Read the server name of the ClientHello the segment starts (lib/tls.h) where a request's path
 * is read, as ".name" and its NUL: 0, or -1 for none. */
static __always_inline int read_server_name(struct __sk_buff *skb, const struct http_packet *hp,
					    struct http_scratch *scratch)
{
	struct tls_scratch *hello;
	__u32 zero = 0;

	hello = kfault_tls_scratch.lookup(&zero);
	if (!hello || tls_read_server_name(skb, hp->payload_offset, hello) < 0)
		return -1;
	__builtin_memcpy(scratch->path, hello->name, sizeof(scratch->path));
	return 0;
}

/* T ingress: a segment the pod receives on an armed port. */
int http_request_in(struct __sk_buff *skb)
{
	struct http_scratch *scratch = NULL;
	struct kfault_http_flow *flow, fresh = {};
	struct http_packet *hp;
	__u32 mask, path_at = 0;
	__u64 method;

	mask = armed_segment(skb, KFAULT_DIR_FROM, &scratch);
	if (!mask || !scratch)
		return TC_ACT_UNSPEC; /* pass, and let later programs see it */
	hp = &scratch->hp;
	if (hp->syn) {
		kfault_http_flows.delete(&hp->flow); /* a new connection: http_locate says why */
		return TC_ACT_UNSPEC;
	}
	if (!hp->payload_len)
		return TC_ACT_UNSPEC;
	flow = kfault_http_flows.lookup(&hp->flow);
	if (flow && flow->request_seen && !seq_at_or_after(hp->seq, flow->request_next))
		return TC_ACT_UNSPEC; /* a retransmission: decided already */
	if ((mask & KFAULT_HTTP_HELLO_RULES) && tls_may_be_hello(skb, hp->payload_offset)) {
		mask = hello_rules(hp);
		if (!mask || read_server_name(skb, hp, scratch) < 0)
			return TC_ACT_UNSPEC;
		method = HELLO_METHOD;
	} else {
		method = http_method_of(skb, hp, &path_at);
		if (!method || http_read_path(skb, path_at, scratch) < 0)
			return TC_ACT_UNSPEC; /* not a request's start, or its path not in this segment */
	}
	decide_request(mask, method, scratch);
	if (scratch->aborting >= 0) {
		count(scratch->aborting, KFAULT_HTTP_OUTCOME_RESET);
		return reset_both_ends(skb, hp, BPF_F_INGRESS);
	}
	if (!flow) {
		if (!scratch->pending && !scratch->owed)
			return TC_ACT_UNSPEC; /* nothing to remember of this connection */
		kfault_http_flows.update(&hp->flow, &fresh);
		flow = kfault_http_flows.lookup(&hp->flow);
		if (!flow)
			return TC_ACT_UNSPEC;
	}
	flow->request_next = hp->seq + hp->payload_len;
	flow->request_seen = 1;
	flow->pending = scratch->pending;
	if (scratch->owed > flow->owed_ns)
		flow->owed_ns = scratch->owed;
	return TC_ACT_UNSPEC;
}

/* The response rules pending on the connection, for a response starting with `status`: abort
 * (the slot, returned), or what is done in place (*delay, *replace). */
static __always_inline int decide_response(__u32 pending, __u32 status, __u64 now, __u64 *delay, __u32 *replace)
{
#pragma clang loop unroll(disable)
	for (__u32 slot = 0; slot < KFAULT_HTTP_MAX_RULES; slot++) {
		struct kfault_http_rule *rule;
		__u32 key = slot;

		if (!(pending & (1u << slot)))
			continue;
		rule = kfault_http_rules.lookup(&key);
		if (!rule || now >= rule->deadline_ns || rule->target != KFAULT_HTTP_RESPONSE)
			continue;
		if ((rule->flags & KFAULT_HTTP_HAS_CODE) && rule->code != status)
			continue;
		count(slot, KFAULT_HTTP_OUTCOME_MATCHED);
		if (rule->flags & KFAULT_HTTP_ABORT) {
			count(slot, KFAULT_HTTP_OUTCOME_RESET);
			return slot;
		}
		if ((rule->flags & KFAULT_HTTP_REPLACE) && !*replace) {
			*replace = rule->replace;
			count(slot, KFAULT_HTTP_OUTCOME_REWRITTEN);
		}
		if (rule->delay_ns) {
			if (rule->delay_ns > *delay)
				*delay = rule->delay_ns;
			count(slot, KFAULT_HTTP_OUTCOME_DELAYED);
		}
	}
	return -1;
}

/* T egress: a segment the pod sends from an armed port. */
int http_response_out(struct __sk_buff *skb)
{
	struct http_scratch *scratch = NULL;
	struct kfault_http_flow *flow;
	struct http_packet *hp;
	__u32 replace = 0, status;
	__u64 now, delay;

	if (!armed_segment(skb, KFAULT_DIR_TO, &scratch) || !scratch)
		return TC_ACT_UNSPEC;
	hp = &scratch->hp;
	flow = kfault_http_flows.lookup(&hp->flow);
	if (!flow)
		return TC_ACT_UNSPEC; /* no request of it was matched */
	now = bpf_ktime_get_ns();
	if (hp->payload_len && (flow->pending || flow->owed_ns) &&
	    (!flow->response_seen || seq_at_or_after(hp->seq, flow->response_next))) {
		/* a response's first new bytes: decide it, once */
		delay = flow->owed_ns;
		flow->owed_ns = 0;
		if (flow->pending) {
			__u32 pending = flow->pending;
			int abort_slot;

			flow->pending = 0;
			status = http_status_of(skb, hp);
			abort_slot = status ? decide_response(pending, status, now, &delay, &replace) : -1;
			if (abort_slot >= 0)
				return reset_both_ends(skb, hp, 0);
			if (replace)
				http_rewrite_status(skb, hp, status, replace);
		}
		flow->response_next = hp->seq + hp->payload_len;
		flow->response_seen = 1;
		if (delay && now + delay > flow->hold_until_ns)
			flow->hold_until_ns = now + delay;
	} else if (hp->payload_len && (!flow->response_seen || seq_at_or_after(hp->seq, flow->response_next))) {
		flow->response_next = hp->seq + hp->payload_len;
		flow->response_seen = 1;
	}
	/* no packet of the connection leaves before a held one: fq would let it overtake */
	if (flow->hold_until_ns > now && skb->tstamp < flow->hold_until_ns)
		skb->tstamp = flow->hold_until_ns;
	return TC_ACT_UNSPEC;
}
