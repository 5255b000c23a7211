/* reset.h - partitionBehavior reject: a TCP packet turned, in place, into the reset that
 * answers it, and sent back where it came from. Owns no map. */
#ifndef KFAULT_LIB_RESET_H
#define KFAULT_LIB_RESET_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>

#include "kfault.h"
#include "packet.h"

/* A reset we send: an IPv4 header without options, an IPv6 header without extensions, a TCP
 * header without options; the kernel's own TTL and hop limit, and its don't-fragment bit. */
#define RESET_TTL 64
#define IPV4_DONT_FRAGMENT 0x4000

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

/* Which way a reset made of a segment goes. */
#define RESET_BACK 0   /* back to the segment's sender, answering it */
#define RESET_ONWARD 1 /* on to its receiver, in the sender's name: the sender's end went away */

/* The reset the kernel sends for a segment no socket wants (tcp_v4_send_reset): to a segment
 * with ACK, seq = its ack and RST alone; to one without (a SYN), seq 0 and RST+ACK acking
 * everything it carried, which is what a connecting socket accepts. Onward, the reset the
 * sender would send in its place: its seq (the receiver's next expected), RST+ACK. */
static __always_inline void reset_for(const struct tcphdr *seg, __u32 payload, struct tcphdr *rst, int way)
{
	__builtin_memset(rst, 0, sizeof(*rst));
	rst->doff = sizeof(*rst) / 4;
	rst->rst = 1;
	if (way == RESET_ONWARD) {
		rst->source = seg->source;
		rst->dest = seg->dest;
		rst->seq = seg->seq;
		rst->ack = 1;
		rst->ack_seq = seg->ack_seq;
		return;
	}
	rst->source = seg->dest;
	rst->dest = seg->source;
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
static __always_inline int cut_to_reset(struct __sk_buff *skb, const struct packet *pkt, __u32 l4_offset, __u32 ip_len)
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
	if (bpf_l4_csum_replace(skb, check_offset, 0,
				csum_add32(csum_add32(pseudo, pseudo), csum_of(rst, sizeof(*rst))), 0) < 0 ||
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
					   const struct tcphdr *seg, int way)
{
	struct {
		__be32 saddr, daddr;
		__u8 zero, protocol;
		__be16 len;
	} pseudo = {};
	struct iphdr ip;
	struct tcphdr rst;
	__s32 payload;

	if (bpf_skb_load_bytes(skb, pkt->l3_offset, &ip, sizeof(ip)) < 0)
		return -1;
	payload = bpf_ntohs(ip.tot_len) - (__s32)(l4_offset - pkt->l3_offset) - seg->doff * 4;
	reset_for(seg, payload > 0 ? payload : 0, &rst, way);
	if (cut_to_reset(skb, pkt, l4_offset, sizeof(ip)) < 0)
		return -1;

	pseudo.saddr = way == RESET_ONWARD ? ip.saddr : ip.daddr;
	pseudo.daddr = way == RESET_ONWARD ? ip.daddr : ip.saddr;
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
					   const struct tcphdr *seg, int way)
{
	struct {
		struct in6_addr saddr, daddr;
		__be32 len;
		__u8 zero[3], nexthdr;
	} pseudo = {};
	struct ipv6hdr ip6;
	struct tcphdr rst;
	__s32 payload;

	if (bpf_skb_load_bytes(skb, pkt->l3_offset, &ip6, sizeof(ip6)) < 0)
		return -1;
	payload = bpf_ntohs(ip6.payload_len) - (__s32)(l4_offset - pkt->l3_offset - sizeof(ip6)) - seg->doff * 4;
	reset_for(seg, payload > 0 ? payload : 0, &rst, way);
	if (cut_to_reset(skb, pkt, l4_offset, sizeof(ip6)) < 0)
		return -1;

	pseudo.saddr = way == RESET_ONWARD ? ip6.saddr : ip6.daddr;
	pseudo.daddr = way == RESET_ONWARD ? ip6.daddr : ip6.saddr;
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

/* The TCP segment a reset may answer, and where it starts: 0, or -1 for a packet the caller
 * must drop instead: a reset (RFC 9293: a reset is never answered), or one we can't read. */
static __always_inline int answerable_segment(struct __sk_buff *skb, const struct packet *pkt, __u32 *offset,
					      struct tcphdr *seg)
{
	if (tcp_offset(skb, pkt, offset) < 0 || bpf_skb_load_bytes(skb, *offset, seg, sizeof(*seg)) < 0 || seg->rst)
		return -1;
	return 0;
}

/* Turn the packet, in place, into a reset made of `seg` (`way`: RESET_BACK or RESET_ONWARD),
 * its MACs as they were: 0, or -1 when a helper refused. */
static __always_inline int make_reset(struct __sk_buff *skb, const struct packet *pkt, __u32 offset,
				      const struct tcphdr *seg, int way)
{
	return pkt->is_ipv4 ? make_ipv4_reset(skb, pkt, offset, seg, way) : make_ipv6_reset(skb, pkt, offset, seg, way);
}

/* Turn the packet, in place, into the reset that answers `seg`: from its destination to its
 * source (MACs, addresses and ports swapped), then mark it as ours and send it on its way
 * (`redirect_flags`: BPF_F_INGRESS back into the target, 0 out to the peer). Returns the
 * redirect, or -1 when the helpers could not rewrite it (the caller drops it). */
static __always_inline int send_reset(struct __sk_buff *skb, const struct packet *pkt, __u32 offset,
				      const struct tcphdr *seg, __u64 redirect_flags)
{
	int err = make_reset(skb, pkt, offset, seg, RESET_BACK);

	if (err < 0 || swap_macs(skb) < 0)
		return -1;
	skb->mark = KFAULT_MARK_DUPLICATE;
	return bpf_redirect(skb->ifindex, redirect_flags);
}

#endif /* KFAULT_LIB_RESET_H */
