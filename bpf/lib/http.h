/* http.h - plain HTTP/1.x on a pod's own interface: where a TCP segment to or from an armed
 * server port starts its payload, a request line's method and path read, a status line's code
 * read and rewritten in place. The maps of the HTTP rules and flows are here, looked up in
 * httpfault.c (bcc turns `map.lookup()` into a map access only in the file it compiles). */
#ifndef KFAULT_LIB_HTTP_H
#define KFAULT_LIB_HTTP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>

#include "kfault.h"
#include "dfa_index.h"
#include "packet.h"
#include "reset.h"

#define HTTP_STATUS_PREFIX 0x2f50545448ULL /* "HTTP/" as the first 5 bytes of a u64, little-endian */
#define HTTP_STATUS_PREFIX_MASK 0xffffffffffULL
#define HTTP_CODE_AT 8 /* " NNN" of "HTTP/1.1 NNN": 4 bytes from the payload's 8th, 4-aligned in the segment */

/* A TCP segment to (KFAULT_DIR_FROM: the pod receives it) or from an armed port, as
 * http_locate found it. */
struct http_packet {
	struct packet pkt; /* for lib/reset.h's reset */
	struct kfault_http_flow_key flow;
	__u32 l4_offset;
	__u32 payload_offset;
	__u32 payload_len;
	__u32 seq; /* host order */
	__u32 syn; /* a connection's opening: its payload is none of ours (0 here) */
};

/* Per-CPU scratch space, private to httpfault.c: the segment located and a request's path. In
 * map memory, for the reasons struct dns_scratch gives (lib/dns.h). */
struct http_scratch {
	struct http_packet hp;
	__u8 path[KFAULT_HTTP_PATH_MAX]; /* the path, NUL where its space or `?` was */
	volatile __u32 avail;            /* the path's bytes read: the loop's exit, which clang can't fold */
	volatile __u32 ended;            /* the path's end was found */
	/* what the rule walk of a request decided, kept here rather than in registers (lib/scratch.h
	 * says why: a branch per rule would split the verifier's states by every combination) */
	volatile __u64 owed;     /* the longest Request delay that matched */
	volatile __u32 pending;  /* the Response rules that matched */
	volatile __s32 aborting; /* the Request abort rule that matched, or -1 */
} __attribute__((aligned(8)));

/* 0 -> this CPU's scratch space: written and read by httpfault.c only. */
BPF_PERCPU_ARRAY(kfault_http_scratch, struct http_scratch, 1);
/* port / 64 -> a bit per port that some HTTP rule is placed on. Written by the agent, read by
 * httpfault.c first of all: an array's lookup is inlined, so a packet of another port pays a few
 * loads. */
BPF_ARRAY(kfault_http_ports, __u64, KFAULT_HTTP_PORT_WORDS);
/* (pod address, port) -> mask of the HTTP rules placed there. Written by the agent, read by
 * httpfault.c. */
BPF_HASH(kfault_http_targets, struct kfault_http_target_key, __u32, KFAULT_HTTP_MAX_TARGETS);
/* slot -> HTTP rule. Written by the agent (whole value), read by httpfault.c. */
BPF_ARRAY(kfault_http_rules, struct kfault_http_rule, KFAULT_HTTP_MAX_RULES);
/* slot -> the DFA of the rule's path glob. Written by the agent, read by httpfault.c. */
BPF_ARRAY(kfault_http_dfa, struct kfault_io_dfa, KFAULT_HTTP_MAX_RULES);
/* connection -> what the request side told the response side. Written and read by httpfault.c;
 * an LRU, so a connection that ends without a trace costs nothing. */
BPF_TABLE("lru_hash", struct kfault_http_flow_key, struct kfault_http_flow, kfault_http_flows, KFAULT_HTTP_MAX_FLOWS);
/* slot -> per-CPU counts of outcomes. Written by httpfault.c, read by the agent at scrape time. */
BPF_PERCPU_ARRAY(kfault_http_counters, struct kfault_http_counters, KFAULT_HTTP_MAX_RULES);

/* The server port of a TCP segment to (KFAULT_DIR_FROM) or from (KFAULT_DIR_TO) the pod,
 * read in place from the packet's linear data (no helper call), or 0 when it is not TCP over
 * a plain IPv4 or IPv6 header (no options, no extension header: such segments pass). */
static __always_inline __u16 http_port_of(struct __sk_buff *skb, __u32 direction)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	__u32 port_at = direction == KFAULT_DIR_FROM ? 2 : 0; /* the server's port: dest in, source out */
	__u16 *port;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + ETH_HLEN;

		if ((void *)(ip + 1) + 4 > end || ip->ihl != sizeof(*ip) / 4 || ip->protocol != IPPROTO_TCP)
			return 0;
		port = (void *)(ip + 1) + port_at;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + ETH_HLEN;

		if ((void *)(ip6 + 1) + 4 > end || ip6->nexthdr != IPPROTO_TCP)
			return 0;
		port = (void *)(ip6 + 1) + port_at;
	} else {
		return 0;
	}
	return bpf_ntohs(*port);
}

/* Fill `hp` for the TCP segment whose headers http_port_of read: 0, or -1 to pass it. A SYN
 * is located too (hp->syn, no payload): a new connection on a remembered (pod, peer, port)
 * must forget the old one's sequence numbers, or its first request reads as a retransmission. */
static __always_inline int http_locate(struct __sk_buff *skb, __u32 direction, __u16 port, struct http_packet *hp)
{
	struct tcphdr tcp;
	__u32 l4_offset;

	hp->pkt.l3_offset = ETH_HLEN;
	hp->pkt.len = skb->len;
	hp->pkt.protocol = IPPROTO_TCP;
	hp->pkt.has_ports = 1;
	__builtin_memset(&hp->flow, 0, sizeof(hp->flow));
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0 || (ip.frag_off & bpf_htons(0x1fff)))
			return -1;
		ipv4_mapped(hp->flow.pod, direction == KFAULT_DIR_FROM ? ip.daddr : ip.saddr);
		ipv4_mapped(hp->flow.peer, direction == KFAULT_DIR_FROM ? ip.saddr : ip.daddr);
		hp->pkt.is_ipv4 = 1;
		l4_offset = ETH_HLEN + sizeof(ip);
	} else {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
			return -1;
		__builtin_memcpy(hp->flow.pod, direction == KFAULT_DIR_FROM ? &ip6.daddr : &ip6.saddr, 16);
		__builtin_memcpy(hp->flow.peer, direction == KFAULT_DIR_FROM ? &ip6.saddr : &ip6.daddr, 16);
		hp->pkt.is_ipv4 = 0;
		l4_offset = ETH_HLEN + sizeof(ip6);
	}
	if (bpf_skb_load_bytes(skb, l4_offset, &tcp, sizeof(tcp)) < 0 || tcp.rst)
		return -1;
	hp->flow.port = port;
	hp->flow.peer_port = bpf_ntohs(direction == KFAULT_DIR_FROM ? tcp.source : tcp.dest);
	hp->pkt.peer_port = hp->flow.peer_port;
	hp->l4_offset = l4_offset;
	hp->payload_offset = l4_offset + tcp.doff * 4;
	hp->payload_len = skb->len > hp->payload_offset && !tcp.syn ? skb->len - hp->payload_offset : 0;
	hp->seq = bpf_ntohl(tcp.seq);
	hp->syn = tcp.syn;
	return 0;
}

/* Is `seq` at or after `next` in sequence space (RFC 1982's serial arithmetic)? */
static __always_inline int seq_at_or_after(__u32 seq, __u32 next)
{
	return (__s32)(seq - next) >= 0;
}

/* The request line's method and its space, as a u64 to compare with a rule's (kfault.h), or 0
 * when the payload does not start with capitals and a space: not a request's start. */
static __always_inline __u64 http_method_of(struct __sk_buff *skb, const struct http_packet *hp, __u32 *path_at)
{
	__u8 head[8];
	__u64 word = 0;

	if (hp->payload_len < sizeof(head) || bpf_skb_load_bytes(skb, hp->payload_offset, head, sizeof(head)) < 0)
		return 0;
#pragma unroll
	for (__u32 i = 0; i < sizeof(head); i++) {
		if (head[i] == ' ' && i > 0) {
			__builtin_memcpy(&word, head, sizeof(head));
			*path_at = hp->payload_offset + i + 1;
			/* the bytes after the space are the path's: not the method's */
			return word & (~0ULL >> (8 * (7 - i)));
		}
		if (head[i] < 'A' || head[i] > 'Z')
			return 0;
	}
	return 0;
}

/* Read the path at `offset` into scratch->path, NUL where its space or `?` is: 0, or -1 for a
 * path we can't match (its end not in this segment, longer than KFAULT_HTTP_PATH_MAX - 1). */
static __always_inline int http_read_path(struct __sk_buff *skb, __u32 offset, struct http_scratch *scratch)
{
	__u32 avail = skb->len > offset ? skb->len - offset : 0;

	if (avail > KFAULT_HTTP_PATH_MAX)
		avail = KFAULT_HTTP_PATH_MAX;
	if (avail < 1)
		return -1;
	/* [1, KFAULT_HTTP_PATH_MAX] as 6.1's verifier can see it (lib/dns.h's dns_sum_of says why) */
	avail -= 1;
	asm volatile("" : "+r"(avail));
	avail = (avail & (KFAULT_HTTP_PATH_MAX - 1)) + 1;
	if (bpf_skb_load_bytes(skb, offset, scratch->path, avail) < 0)
		return -1;
	scratch->avail = avail;
	scratch->ended = 0;
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < KFAULT_HTTP_PATH_MAX; i++) {
		__u8 c;

		if (i >= scratch->avail)
			break;
		c = scratch->path[i];
		if (c == ' ' || c == '?') {
			scratch->path[i] = 0;
			scratch->ended = 1;
			break;
		}
	}
	return scratch->ended ? 0 : -1;
}

/* Does the path read (http_read_path) match the DFA? */
static __always_inline int http_path_matches(const struct kfault_io_dfa *dfa, const struct http_scratch *scratch)
{
	_Static_assert(KFAULT_HTTP_PATH_MAX == KFAULT_IO_PATH_MAX, "dfa_accepts_text walks KFAULT_IO_PATH_MAX bytes");
	return dfa_accepts_text(dfa, scratch->path);
}

/* The status line's " NNN" (HTTP_CODE_AT), or 0 when the payload does not start "HTTP/". */
static __always_inline __u32 http_status_of(struct __sk_buff *skb, const struct http_packet *hp)
{
	struct {
		__u64 head;
		__u32 code;
	} __attribute__((packed)) line;

	if (hp->payload_len < sizeof(line) || bpf_skb_load_bytes(skb, hp->payload_offset, &line, sizeof(line)) < 0 ||
	    (line.head & HTTP_STATUS_PREFIX_MASK) != HTTP_STATUS_PREFIX)
		return 0;
	return line.code;
}

/* Write `replace` (" NNN") over the status line's code, the TCP checksum following: the same
 * length, so nothing else of the stream moves. */
static __always_inline int http_rewrite_status(struct __sk_buff *skb, const struct http_packet *hp, __u32 before,
					       __u32 replace)
{
	__u32 at = hp->payload_offset + HTTP_CODE_AT;

	if (bpf_skb_store_bytes(skb, at, &replace, sizeof(replace), BPF_F_RECOMPUTE_CSUM) < 0)
		return -1;
	return bpf_l4_csum_replace(skb, hp->l4_offset + __builtin_offsetof(struct tcphdr, check), before, replace,
				   sizeof(replace));
}

#endif /* KFAULT_LIB_HTTP_H */
