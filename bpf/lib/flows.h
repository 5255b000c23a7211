/* flows.h - a delay per connection (NetworkChaos delay.per: connection): which packet opens a
 * connection or a flow, and the map that remembers when each one's opening packet departs.
 *
 * TCP: a connection opens with a SYN: the target's SYN, or its SYN-ACK when it is the server,
 * the first packet of the connection each way. A retransmitted SYN carries the held one's
 * sequence number (the ISN): it departs with it, never delayed again; a SYN with another ISN
 * on the same ports is a new connection. A connection whose SYN we did not see (opened before
 * the rule) is never delayed.
 * UDP has no opening packet and kfault no conntrack: a flow is its 5-tuple, remembered here,
 * and new when not seen for KFAULT_FLOW_IDLE_NS.
 * Every later packet of a flow departs no earlier than its held opening packet: fq sorts a
 * flow's queue by departure time, so an earlier stamp would overtake it.
 * The map is an LRU: under more than KFAULT_MAX_FLOWS live flows the oldest are forgotten, and
 * a forgotten UDP flow's next datagram, or a forgotten SYN's retransmission, is delayed again. */
#ifndef KFAULT_LIB_FLOWS_H
#define KFAULT_LIB_FLOWS_H

#include <linux/bpf.h>
#include <linux/in.h>

#include "kfault.h"
#include "packet.h"

/* (rule slot, flow) -> its opening packet's departure. Written and read by netfault.c. */
BPF_TABLE("lru_hash", struct kfault_flow_key, struct kfault_flow, kfault_flows, KFAULT_MAX_FLOWS);

#define FLOW_OPENS 1
#define FLOW_CONTINUES 0
#define FLOW_NONE -1 /* no flow: neither TCP nor UDP, or a header we can't read */

static __always_inline void flow_key_of(struct kfault_flow_key *flow_key, __u32 slot, const struct kfault_peer_key *key,
					const struct packet *pkt)
{
	__builtin_memset(flow_key, 0, sizeof(*flow_key));
	flow_key->slot = slot;
	flow_key->direction = key->direction;
	__builtin_memcpy(flow_key->local, key->local, sizeof(flow_key->local));
	__builtin_memcpy(flow_key->remote, key->remote, sizeof(flow_key->remote));
	flow_key->local_port = pkt->local_port;
	flow_key->remote_port = pkt->peer_port;
	flow_key->protocol = pkt->protocol;
}

/* Whether the packet opens its flow (FLOW_OPENS, and a SYN's sequence number in `*seq`), is a
 * later packet of it (FLOW_CONTINUES), or has none (FLOW_NONE). `flow`: what kfault_flows
 * holds for it, or NULL. */
static __always_inline int opens_flow(const struct packet *pkt, const struct kfault_flow *flow, __u64 now, __u32 *seq)
{
	if (!pkt->has_ports)
		return FLOW_NONE;
	if (pkt->protocol == IPPROTO_UDP)
		return !flow || now - READ_ONCE(flow->last_seen_ns) >= KFAULT_FLOW_IDLE_NS ? FLOW_OPENS :
											     FLOW_CONTINUES;
	if (pkt->protocol != IPPROTO_TCP)
		return FLOW_NONE;
	if (!(pkt->tcp_flags & TCP_FLAG_BIT_SYN) || (pkt->tcp_flags & TCP_FLAG_BIT_RST) ||
	    (flow && flow->opening_seq == pkt->tcp_seq))
		return FLOW_CONTINUES; /* a retransmitted SYN continues its flow */
	*seq = pkt->tcp_seq;
	return FLOW_OPENS;
}

#endif /* KFAULT_LIB_FLOWS_H */
