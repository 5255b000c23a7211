/* packet.h - what a network program knows of a packet: its addresses as the key of
 * kfault_peers, its protocol and its peer's port. Owns no map. */
#ifndef KFAULT_LIB_PACKET_H
#define KFAULT_LIB_PACKET_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>

#include "kfault.h"

/* How many IPv6 extension headers parse_packet walks before the transport header; a packet
 * with more is matched by address only (its protocol stays an extension header's number). */
#define IPV6_MAX_EXT_HEADERS 6
#define IPV6_FRAG_OFFSET_MASK 0xfff8 /* fragment offset bits of the fragment header's frag_off */
/* ICMPv6 neighbour discovery (router solicitation .. redirect): IPv6's ARP, never faulted. */
#define ICMPV6_ND_FIRST 133
#define ICMPV6_ND_LAST 137

struct packet {
	__u32 l3_offset;
	__u32 len;
	__u16 peer_port;
	__u16 local_port;
	__u8 protocol;
	__u8 is_ipv4;
	__u8 has_ports;        /* a TCP or UDP header we could read (not a later fragment) */
	__u8 tcp_flags;        /* TCP: the flags byte (TCP_FLAG_BIT_*); else 0 */
	__be32 tcp_seq;        /* TCP: the sequence number, as on the wire */
} __attribute__((aligned(8))); /* a per-CPU map value holding one (dns.h's scratch) stays 8-byte sized */

/* The start of a TCP header, up to its flags (a UDP header: its ports only). */
struct transport_head {
	__be16 ports[2];
	__be32 seq;
	__be32 ack_seq;
	__u8 data_offset;
	__u8 flags; /* TCP_FLAG_BIT_* */
};

/* Bits of struct packet's tcp_flags (the TCP header's 14th byte). */
#define TCP_FLAG_BIT_RST 0x04
#define TCP_FLAG_BIT_SYN 0x02

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
static __always_inline int parse_packet(struct __sk_buff *skb, __u32 direction, struct kfault_peer_key *key,
					struct packet *pkt)
{
	__u32 l4_offset;

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
		/* TCP: the ports, and what a delay per connection needs to know a SYN and its
		 * retransmission (lib/flows.h), in one load: a second costs every TCP packet ~35 ns */
		struct transport_head head;
		__u32 size = pkt->protocol == IPPROTO_TCP ? sizeof(head) : sizeof(head.ports);

		if (bpf_skb_load_bytes(skb, l4_offset, &head, size) == 0) {
			pkt->peer_port = bpf_ntohs(direction == KFAULT_DIR_TO ? head.ports[1] : head.ports[0]);
			pkt->local_port = bpf_ntohs(direction == KFAULT_DIR_TO ? head.ports[0] : head.ports[1]);
			pkt->has_ports = 1;
			if (pkt->protocol == IPPROTO_TCP) {
				pkt->tcp_seq = head.seq;
				pkt->tcp_flags = head.flags;
			}
		}
	} else if (pkt->protocol == IPPROTO_ICMPV6) {
		__u8 type;

		if (bpf_skb_load_bytes(skb, l4_offset, &type, 1) == 0 && type >= ICMPV6_ND_FIRST &&
		    type <= ICMPV6_ND_LAST)
			return -1; /* like ARP: a lost neighbour would lose more than was asked */
	}
	return 0;
}

#define KFAULT_NO_IFINDEX 0 /* no interface has index 0 */

/* A drop at egress that the sender does not see: a redirect to no interface. The kernel frees
 * the packet and, as for every redirect at egress, reports it sent (NET_XMIT_SUCCESS); with
 * both classic tc and tcx, where TC_ACT_STOLEN would be taken for TCX_NEXT. */
static __always_inline int silent_drop(void)
{
	return bpf_redirect(KFAULT_NO_IFINDEX, 0);
}

#endif /* KFAULT_LIB_PACKET_H */
