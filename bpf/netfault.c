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
 * congestion), and tcx reads TC_ACT_STOLEN as "next". So silent_drop() below.
 * A partition with partitionBehavior reject answers a TCP packet with a reset instead, made in
 * place of the packet and sent where the packet came from: at egress_to back into T's own
 * ingress (T's connect fails with ECONNREFUSED, its connection with ECONNRESET), at
 * ingress_from out of T to the peer. See answer_with_reset().
 *
 * Each program: parse -> look up the rules for (direction, target address, peer) -> for each
 * live rule: roll -> act -> count.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>

#include "kfault.h"

/* (direction, target address, peer prefix) -> rule slots. Written by the agent, read here. */
BPF_LPM_TRIE(kfault_peers, struct kfault_peer_key, struct kfault_peer_rules, KFAULT_MAX_PEER_PREFIXES);
/* slot -> rule. Written by the agent (whole value), read here. */
BPF_ARRAY(kfault_rules, struct kfault_rule, KFAULT_MAX_RULES);
/* slot -> per-CPU counters. Written here, read by the agent at scrape time. */
BPF_PERCPU_ARRAY(kfault_counters, struct kfault_counters, KFAULT_MAX_RULES);
/* slot -> per-CPU correlation memory. Written and read here; zeroed by the agent on reuse. */
BPF_PERCPU_ARRAY(kfault_rule_state, struct kfault_rule_state, KFAULT_MAX_RULES);
/* slot -> departure-time state (delay, bandwidth), shared by all CPUs. Zeroed by the agent on reuse. */
BPF_ARRAY(kfault_departures, struct kfault_departures, KFAULT_MAX_RULES);

#define NS_PER_SEC 1000000000ULL
/* How many IPv6 extension headers parse_packet walks before the transport header; a packet
 * with more is matched by address only (its protocol stays an extension header's number). */
#define IPV6_MAX_EXT_HEADERS 6
#define IPV6_FRAG_OFFSET_MASK 0xfff8 /* fragment offset bits of the fragment header's frag_off */
/* ICMPv6 neighbour discovery (router solicitation .. redirect): IPv6's ARP, never faulted. */
#define ICMPV6_ND_FIRST 133
#define ICMPV6_ND_LAST 137
#define KFAULT_NO_IFINDEX 0     /* no interface has index 0 */
/* A reset we send: an IPv4 header without options, an IPv6 header without extensions, a TCP
 * header without options; the kernel's own TTL and hop limit, and its don't-fragment bit. */
#define RESET_TTL 64
#define IPV4_DONT_FRAGMENT 0x4000

/* What fault_packet decided for a packet. */
#define FAULT_PASS 0
#define FAULT_DROP 1
#define FAULT_RESET 2           /* drop it, and answer it with a TCP reset */

struct packet {
	__u32 l3_offset;
	__u32 len;
	__u16 peer_port;
	__u8 protocol;
	__u8 is_ipv4;
	__u8 has_ports;         /* a TCP or UDP header we could read (not a later fragment) */
};

/* The fixed part every IPv6 extension header we walk starts with (the fragment header's
 * second byte is reserved, not a length). */
struct ipv6_ext {
	__u8 nexthdr;
	__u8 hdrlen;
	__be16 frag_off; /* fragment header only */
};

static __always_inline void ipv4_mapped(__u8 *out, __be32 addr)
{
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &addr, 4);
}

/* Walk IPv6 extension headers from `*offset` (the header after the fixed one, numbered
 * `*protocol`) to the transport header; return 1 for a non-first fragment, which has none.
 * A header cut short leaves `*protocol` at its number: the packet is matched by address. */
static __always_inline int ipv6_skip_extensions(struct __sk_buff *skb, __u8 *protocol, __u32 *offset)
{
	struct ipv6_ext ext;

#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXT_HEADERS; i++) {
		switch (*protocol) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
		case IPPROTO_FRAGMENT:
		case IPPROTO_AH:
			break;
		default:
			return 0;
		}
		if (bpf_skb_load_bytes(skb, *offset, &ext, sizeof(ext)) < 0)
			return 0;
		if (*protocol == IPPROTO_FRAGMENT) {
			*protocol = ext.nexthdr;
			*offset += 8;
			if (ext.frag_off & bpf_htons(IPV6_FRAG_OFFSET_MASK))
				return 1;
		} else if (*protocol == IPPROTO_AH) {
			*protocol = ext.nexthdr;
			*offset += (ext.hdrlen + 2) * 4;
		} else {
			*protocol = ext.nexthdr;
			*offset += (ext.hdrlen + 1) * 8;
		}
	}
	return 0;
}

/* Fill the lookup key and the packet facts; return 0 for an IP packet we can match. */
static __always_inline int parse_packet(struct __sk_buff *skb, __u32 direction,
					 struct kfault_peer_key *key, struct packet *pkt)
{
	__u32 l4_offset;
	__be16 ports[2];

	pkt->l3_offset = ETH_HLEN;
	pkt->len = skb->len;
	key->prefixlen = 32 + 128 + 128;
	key->direction = direction;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
			return -1;
		pkt->is_ipv4 = 1;
		pkt->protocol = ip.protocol;
		l4_offset = ETH_HLEN + ip.ihl * 4;
		if (direction == KFAULT_DIR_TO) {
			ipv4_mapped(key->local, ip.saddr);
			ipv4_mapped(key->remote, ip.daddr);
		} else {
			ipv4_mapped(key->local, ip.daddr);
			ipv4_mapped(key->remote, ip.saddr);
		}
		/* A non-first fragment has no L4 header. */
		if (ip.frag_off & bpf_htons(0x1fff))
			return 0;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
			return -1;
		if (direction == KFAULT_DIR_TO) {
			__builtin_memcpy(key->local, &ip6.saddr, 16);
			__builtin_memcpy(key->remote, &ip6.daddr, 16);
		} else {
			__builtin_memcpy(key->local, &ip6.daddr, 16);
			__builtin_memcpy(key->remote, &ip6.saddr, 16);
		}
		pkt->protocol = ip6.nexthdr;
		l4_offset = ETH_HLEN + sizeof(ip6);
		if (ipv6_skip_extensions(skb, &pkt->protocol, &l4_offset))
			return 0; /* a non-first fragment has no L4 header */
	} else {
		return -1; /* ARP and friends are never faulted */
	}

	if (pkt->protocol == IPPROTO_TCP || pkt->protocol == IPPROTO_UDP) {
		if (bpf_skb_load_bytes(skb, l4_offset, ports, sizeof(ports)) == 0) {
			pkt->peer_port = bpf_ntohs(direction == KFAULT_DIR_TO ? ports[1] : ports[0]);
			pkt->has_ports = 1;
		}
	} else if (pkt->protocol == IPPROTO_ICMPV6) {
		__u8 type;

		if (bpf_skb_load_bytes(skb, l4_offset, &type, 1) == 0 && type >= ICMPV6_ND_FIRST &&
		    type <= ICMPV6_ND_LAST)
			return -1; /* like ARP: a lost neighbour would lose more than was asked */
	}
	return 0;
}

static __always_inline struct kfault_peer_rules *lookup_rules(struct __sk_buff *skb, __u32 direction,
							       struct packet *pkt)
{
	struct kfault_peer_key key;

	__builtin_memset(&key, 0, sizeof(key));
	if (parse_packet(skb, direction, &key, pkt) < 0)
		return NULL;
	return kfault_peers.lookup(&key);
}

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
static __always_inline int roll_percent(struct kfault_rule_state *state, __u32 action,
					__u32 after_miss, __u32 after_hit)
{
	__u32 threshold = (state->last_hit & action) ? after_hit : after_miss;
	int hit = threshold == KFAULT_ALWAYS || bpf_get_prandom_u32() < threshold;

	if (hit)
		state->last_hit |= action;
	else
		state->last_hit &= ~action;
	return hit;
}

static __always_inline void count(__u32 slot, __u32 outcome, __u32 len)
{
	struct kfault_counters *counters = kfault_counters.lookup(&slot);

	if (!counters || outcome >= KFAULT_OUTCOME_COUNT)
		return;
	counters->packets[outcome]++;
	counters->bytes[outcome] += len;
}

/* Damage the packet so the receiver rejects it, as netem's corrupt does through checksums.
 * A locally sent TCP/UDP packet on veth is CHECKSUM_PARTIAL and its receiver never verifies
 * the L4 checksum, and BPF can't make the kernel resolve it: a flipped payload bit reaches
 * the application (measured on IPv6: 39% of datagrams damaged at corrupt 40%, no checksum
 * error counted). So damage what the receiver always checks in software:
 *   IPv4: one random bit of the header after the version/IHL byte (checked before the
 *         checksum); the header checksum fails: Ip InCsumErrors.
 *   IPv6: no header checksum; one random bit of the 4-bit version, which every IPv6 receiver
 *         checks first: Ip6 InHdrErrors. */
static __always_inline int corrupt_packet(struct __sk_buff *skb, const struct packet *pkt)
{
	__u32 draw = bpf_get_prandom_u32();
	__u32 offset = pkt->l3_offset;
	__u8 flip = 0x10 << (draw & 3); /* the version nibble */
	__u8 byte;

	if (pkt->is_ipv4) {
		offset += 1 + (draw % (sizeof(struct iphdr) - 1));
		flip = 1 << ((draw >> 16) & 7);
	}
	if (bpf_skb_load_bytes(skb, offset, &byte, 1) < 0)
		return 0;
	byte ^= flip;
	return bpf_skb_store_bytes(skb, offset, &byte, 1, 0) == 0;
}

/* A copy of the packet re-enters this hook (`hook_flags`: BPF_F_INGRESS or 0 for egress) right
 * after; the mark lets it skip the faults, and the packet keeps its own mark. */
static __always_inline int duplicate_packet(struct __sk_buff *skb, __u64 hook_flags)
{
	__u32 mark = skb->mark;
	int err;

	skb->mark = KFAULT_MARK_DUPLICATE;
	err = bpf_clone_redirect(skb, skb->ifindex, hook_flags);
	skb->mark = mark;
	return err == 0;
}

/* A packet we made (the copy duplicate_packet made, a reset), back in one of our hooks: it
 * was faulted already (read once). */
static __always_inline int is_duplicate(struct __sk_buff *skb)
{
	if (skb->mark != KFAULT_MARK_DUPLICATE)
		return 0;
	skb->mark = 0;
	return 1;
}

/* The i-th rule listed for this peer and its state, if it is live and applies to the
 * packet: returns its slot, or -1 to skip it. */
static __always_inline int rule_at(const struct kfault_peer_rules *rules, int i, const struct packet *pkt,
				   __u64 now, struct kfault_rule **rule, struct kfault_rule_state **state)
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

/* A drop at egress that the sender does not see: a redirect to no interface. The kernel frees
 * the packet and, as for every redirect at egress, reports it sent (NET_XMIT_SUCCESS); with
 * both classic tc and tcx, where TC_ACT_STOLEN would be taken for TCX_NEXT. */
static __always_inline int silent_drop(void)
{
	return bpf_redirect(KFAULT_NO_IFINDEX, 0);
}

/* A 32-bit one's complement sum folded to 16 bits (not inverted). */
static __always_inline __u16 csum_fold16(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum;
}

static __always_inline __u32 csum_add32(__u32 a, __u32 b)
{
	__u32 sum = a + b;

	return sum + (sum < a);
}

static __always_inline __u32 csum_of(void *data, __u32 size)
{
	return bpf_csum_diff(NULL, 0, data, size, 0);
}

/* The reset the kernel sends for a segment no socket wants (tcp_v4_send_reset): to a segment
 * with ACK, seq = its ack and RST alone; to one without (a SYN), seq 0 and RST+ACK acking
 * everything it carried, which is what a connecting socket accepts. */
static __always_inline void reset_for(const struct tcphdr *seg, __u32 payload, struct tcphdr *rst)
{
	__builtin_memset(rst, 0, sizeof(*rst));
	rst->source = seg->dest;
	rst->dest = seg->source;
	rst->doff = sizeof(*rst) / 4;
	rst->rst = 1;
	if (seg->ack) {
		rst->seq = seg->ack_seq;
	} else {
		rst->ack = 1;
		rst->ack_seq = bpf_htonl(bpf_ntohl(seg->seq) + seg->syn + seg->fin + payload);
	}
}

/* Cut the packet to the reset's size: its IP header (without options or extension headers,
 * removed right after the fixed header, so the TCP header stays where the skb's checksum
 * offload expects it) and a TCP header without options or payload. */
static __always_inline int cut_to_reset(struct __sk_buff *skb, const struct packet *pkt, __u32 l4_offset,
					__u32 ip_len)
{
	__u32 extra = l4_offset - pkt->l3_offset - ip_len;

	if (bpf_skb_change_tail(skb, l4_offset + sizeof(struct tcphdr), 0) < 0)
		return -1;
	if (extra && bpf_skb_adjust_room(skb, -(__s32)extra, BPF_ADJ_ROOM_NET, 0) < 0)
		return -1;
	return 0;
}

/* The TCP header's checksum, right whether the skb is CHECKSUM_PARTIAL or not (which BPF can't
 * read): write the pseudo-header sum P, as a sender leaves it for offload, then let
 * bpf_l4_csum_replace turn it into the full checksum ~(P + T), which it does unless the skb is
 * partial. A CHECKSUM_COMPLETE skb (from a NIC, redirected to the target by a CNI, and not cut
 * shorter) learns the change too, or the node's stack would find its sum stale. */
static __always_inline int write_tcp(struct __sk_buff *skb, __u32 offset, struct tcphdr *rst, __u32 pseudo)
{
	__u32 check_offset = offset + __builtin_offsetof(struct tcphdr, check);
	__u16 before = csum_fold16(pseudo), after;

	rst->check = before;
	if (bpf_skb_store_bytes(skb, offset, rst, sizeof(*rst), BPF_F_RECOMPUTE_CSUM) < 0)
		return -1;
	rst->check = 0;
	/* the helper writes ~(diff - fold(P)) */
	if (bpf_l4_csum_replace(skb, check_offset, 0, csum_add32(csum_add32(pseudo, pseudo), csum_of(rst, sizeof(*rst))),
				0) < 0 ||
	    bpf_skb_load_bytes(skb, check_offset, &after, sizeof(after)) < 0)
		return -1;
	if (after != before)
		bpf_csum_update(skb, after + (__u16)~before); /* fails, harmlessly, unless COMPLETE */
	return 0;
}

static __always_inline int swap_macs(struct __sk_buff *skb)
{
	struct ethhdr eth;
	__u8 mac[ETH_ALEN];

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return -1;
	__builtin_memcpy(mac, eth.h_dest, ETH_ALEN);
	__builtin_memcpy(eth.h_dest, eth.h_source, ETH_ALEN);
	__builtin_memcpy(eth.h_source, mac, ETH_ALEN);
	return bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0);
}

static __always_inline int make_ipv4_reset(struct __sk_buff *skb, const struct packet *pkt, __u32 l4_offset,
					   const struct tcphdr *seg)
{
	struct { __be32 saddr, daddr; __u8 zero, protocol; __be16 len; } pseudo = {};
	struct iphdr ip;
	struct tcphdr rst;
	__s32 payload;

	if (bpf_skb_load_bytes(skb, pkt->l3_offset, &ip, sizeof(ip)) < 0)
		return -1;
	payload = bpf_ntohs(ip.tot_len) - (__s32)(l4_offset - pkt->l3_offset) - seg->doff * 4;
	reset_for(seg, payload > 0 ? payload : 0, &rst);
	if (cut_to_reset(skb, pkt, l4_offset, sizeof(ip)) < 0)
		return -1;

	pseudo.saddr = ip.daddr;
	pseudo.daddr = ip.saddr;
	pseudo.protocol = IPPROTO_TCP;
	pseudo.len = bpf_htons(sizeof(rst));
	ip.saddr = pseudo.saddr;
	ip.daddr = pseudo.daddr;
	ip.ihl = sizeof(ip) / 4;
	ip.tos = 0;
	ip.tot_len = bpf_htons(sizeof(ip) + sizeof(rst));
	ip.id = 0;
	ip.frag_off = bpf_htons(IPV4_DONT_FRAGMENT);
	ip.ttl = RESET_TTL;
	ip.protocol = IPPROTO_TCP;
	ip.check = 0;
	ip.check = ~csum_fold16(csum_of(&ip, sizeof(ip)));
	if (bpf_skb_store_bytes(skb, pkt->l3_offset, &ip, sizeof(ip), BPF_F_RECOMPUTE_CSUM) < 0)
		return -1;
	return write_tcp(skb, pkt->l3_offset + sizeof(ip), &rst, csum_of(&pseudo, sizeof(pseudo)));
}

static __always_inline int make_ipv6_reset(struct __sk_buff *skb, const struct packet *pkt, __u32 l4_offset,
					   const struct tcphdr *seg)
{
	struct { struct in6_addr saddr, daddr; __be32 len; __u8 zero[3], nexthdr; } pseudo = {};
	struct ipv6hdr ip6;
	struct tcphdr rst;
	__s32 payload;

	if (bpf_skb_load_bytes(skb, pkt->l3_offset, &ip6, sizeof(ip6)) < 0)
		return -1;
	payload = bpf_ntohs(ip6.payload_len) - (__s32)(l4_offset - pkt->l3_offset - sizeof(ip6)) -
		  seg->doff * 4;
	reset_for(seg, payload > 0 ? payload : 0, &rst);
	if (cut_to_reset(skb, pkt, l4_offset, sizeof(ip6)) < 0)
		return -1;

	pseudo.saddr = ip6.daddr;
	pseudo.daddr = ip6.saddr;
	pseudo.len = bpf_htonl(sizeof(rst));
	pseudo.nexthdr = IPPROTO_TCP;
	ip6.saddr = pseudo.saddr;
	ip6.daddr = pseudo.daddr;
	ip6.priority = 0;
	__builtin_memset(ip6.flow_lbl, 0, sizeof(ip6.flow_lbl));
	ip6.payload_len = bpf_htons(sizeof(rst));
	ip6.nexthdr = IPPROTO_TCP;
	ip6.hop_limit = RESET_TTL;
	if (bpf_skb_store_bytes(skb, pkt->l3_offset, &ip6, sizeof(ip6), BPF_F_RECOMPUTE_CSUM) < 0)
		return -1;
	return write_tcp(skb, pkt->l3_offset + sizeof(ip6), &rst, csum_of(&pseudo, sizeof(pseudo)));
}

/* Where the packet's TCP header starts. parse_packet found it, but keeping the offset from
 * there would split the verifier's states by every header layout parse_packet walked. */
static __always_inline int tcp_offset(struct __sk_buff *skb, const struct packet *pkt, __u32 *offset)
{
	__u8 byte;

	if (pkt->is_ipv4) {
		if (bpf_skb_load_bytes(skb, pkt->l3_offset, &byte, 1) < 0)
			return -1;
		*offset = pkt->l3_offset + (byte & 0xf) * 4; /* the IHL */
		return 0;
	}
	if (bpf_skb_load_bytes(skb, pkt->l3_offset + __builtin_offsetof(struct ipv6hdr, nexthdr), &byte, 1) < 0)
		return -1;
	*offset = pkt->l3_offset + sizeof(struct ipv6hdr);
	ipv6_skip_extensions(skb, &byte, offset);
	return byte == IPPROTO_TCP ? 0 : -1;
}

/* Turn the packet, in place, into the reset that answers it: from its destination to its
 * source (MACs, addresses and ports swapped), then mark it as ours and send it on its way
 * (`redirect_flags`: BPF_F_INGRESS back into the target, 0 out to the peer). Returns the
 * redirect, or -1 for a packet the caller must drop: a reset (RFC 9293: a reset is never
 * answered), or one the helpers could not rewrite. Counted here, for rule `slot`. */
static __always_inline int answer_with_reset(struct __sk_buff *skb, const struct packet *pkt, __u32 slot,
					     __u64 redirect_flags)
{
	struct tcphdr seg;
	__u32 offset;
	int err;

	if (tcp_offset(skb, pkt, &offset) < 0 || bpf_skb_load_bytes(skb, offset, &seg, sizeof(seg)) < 0 || seg.rst) {
		count(slot, KFAULT_OUTCOME_DROPPED, pkt->len);
		return -1;
	}
	count(slot, KFAULT_OUTCOME_RESET, pkt->len);
	err = pkt->is_ipv4 ? make_ipv4_reset(skb, pkt, offset, &seg) : make_ipv6_reset(skb, pkt, offset, &seg);
	if (err < 0 || swap_macs(skb) < 0)
		return -1;
	skb->mark = KFAULT_MARK_DUPLICATE;
	return bpf_redirect(skb->ifindex, redirect_flags);
}

/* Partition, loss, duplicate, corrupt: returns FAULT_DROP when a rule drops the packet,
 * FAULT_RESET when a partition under reject answers it (its rule's slot in `*reset_slot`,
 * counted by answer_with_reset), else FAULT_PASS. */
static __always_inline int fault_packet(struct __sk_buff *skb, const struct kfault_peer_rules *rules,
					const struct packet *pkt, __u64 now, __u64 hook_flags, __u32 *reset_slot)
{
	/* First every rule's drop decision: a packet that any rule drops is neither
	 * duplicated nor corrupted by another (a copy of it must not survive). */
#pragma unroll
	for (int i = 0; i < KFAULT_MAX_RULES_PER_PEER; i++) {
		struct kfault_rule_state *state;
		struct kfault_rule *rule;
		int slot = rule_at(rules, i, pkt, now, &rule, &state);

		if (slot < 0)
			continue;
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
#pragma unroll
	for (int i = 0; i < KFAULT_MAX_RULES_PER_PEER; i++) {
		struct kfault_rule_state *state;
		struct kfault_rule *rule;
		int slot = rule_at(rules, i, pkt, now, &rule, &state);

		if (slot < 0)
			continue;
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
#pragma unroll
	for (int i = 0; i < KFAULT_MAX_RULES_PER_PEER; i++) {
		struct kfault_rule_state *state;
		struct kfault_rule *rule;

		if (rule_at(rules, i, pkt, now, &rule, &state) < 0)
			continue;
		if (rule->actions & (KFAULT_ACT_DELAY | KFAULT_ACT_BANDWIDTH))
			return 1;
	}
	return 0;
}

/* Jitter for one packet: uniform in [-jitter, +jitter], mixed with the last sample when
 * correlated (an AR(1) chain that keeps the spread), clamped to the asked range. */
static __always_inline __s64 jitter_for_packet(const struct kfault_rule *rule, struct kfault_departures *dep)
{
	__s64 span = rule->jitter_ns;
	__u64 draw = ((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32();
	__s64 fresh = (__s64)(draw % (__u64)(2 * span + 1)) - span;
	__s64 jitter = (READ_ONCE(dep->last_jitter_ns) * (__s64)rule->jitter_last_weight +
			fresh * (__s64)rule->jitter_fresh_weight) >> KFAULT_WEIGHT_SHIFT;

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

/* EDT: the departure time of a packet under the rule's delay, or `now` when it skips it. */
static __always_inline __u64 delay_packet(const struct kfault_rule *rule, struct kfault_rule_state *state,
					  struct kfault_departures *dep, __u64 now)
{
	__s64 delay = rule->delay_ns;
	__u64 at;

	if (skips_delay(rule, state))
		return now;
	if (rule->jitter_ns)
		delay += jitter_for_packet(rule, dep);
	at = delay > 0 ? now + delay : now;
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
static __always_inline __u64 pace_packet(const struct kfault_rule *rule, struct kfault_departures *dep,
					 __u64 now, __u32 len)
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

/* EDT: give the packet its departure time under every live delay and bandwidth rule. */
static __always_inline int edt_packet(struct __sk_buff *skb, const struct kfault_peer_rules *rules,
				      const struct packet *pkt, __u64 now)
{
	__u64 departure;

	departure = skb->tstamp > now ? skb->tstamp : now;
#pragma unroll
	for (int i = 0; i < KFAULT_MAX_RULES_PER_PEER; i++) {
		struct kfault_rule_state *state;
		struct kfault_departures *dep;
		struct kfault_rule *rule;
		__u32 slot_key;
		__u64 at;
		int slot = rule_at(rules, i, pkt, now, &rule, &state);

		if (slot < 0)
			continue;
		if (!(rule->actions & (KFAULT_ACT_DELAY | KFAULT_ACT_BANDWIDTH)))
			continue;
		slot_key = slot;
		dep = kfault_departures.lookup(&slot_key);
		if (!dep)
			continue;

		count(slot, KFAULT_OUTCOME_MATCHED, pkt->len);
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
		count(slot, KFAULT_OUTCOME_PASSED, pkt->len);
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
	struct packet pkt = {};
	__u32 reset_slot = 0;
	__u64 now;
	int fault;

	rules = lookup_rules(skb, KFAULT_DIR_TO, &pkt);
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
	return edt_packet(skb, rules, &pkt, now);
}

/* T ingress, what the target receives. */
int ingress_from(struct __sk_buff *skb)
{
	int duplicate = is_duplicate(skb);
	struct kfault_peer_rules *rules;
	struct packet pkt = {};
	__u32 reset_slot = 0;
	int fault;

	rules = lookup_rules(skb, KFAULT_DIR_FROM, &pkt);
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
	struct packet pkt = {};

	rules = lookup_rules(skb, KFAULT_DIR_FROM, &pkt);
	if (!rules || !edt_applies(rules, &pkt, bpf_ktime_get_ns()))
		return 0;     /* no match: on to the next filter */
	return -1;        /* a match (the filter's own class): its action runs */
}

/* The ifb's egress, what the target receives and a delay applies to: EDT, under fq there. */
int egress_from(struct __sk_buff *skb)
{
	struct kfault_peer_rules *rules;
	struct packet pkt = {};

	rules = lookup_rules(skb, KFAULT_DIR_FROM, &pkt);
	if (!rules)
		return TC_ACT_UNSPEC;
	return edt_packet(skb, rules, &pkt, bpf_ktime_get_ns());
}
