/* dns.h - DNS messages on a pod's own interface: where a UDP or TCP port-53 message starts,
 * its query name read and matched against each rule's name DFA, an error answer made in place
 * of a query, and the addresses of an answer rewritten. The maps of the DNS rules are here,
 * looked up in dnsfault.c (bcc turns `map.lookup()` into a map access only in the file it
 * compiles). Parsing a message's start (dns_locate) is kept apart from what is done with it,
 * so an HTTP program can find its payload the same way. */
#ifndef KFAULT_LIB_DNS_H
#define KFAULT_LIB_DNS_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include "kfault.h"
#include "dfa_index.h"
#include "packet.h"
#include "reset.h"

/* RFC 1035 4.1.1's header, and the flag bits we read or write. */
struct dnshdr {
	__be16 id;
	__be16 flags;
	__be16 qdcount;
	__be16 ancount;
	__be16 nscount;
	__be16 arcount;
};
#define DNS_FLAG_QR 0x8000
#define DNS_FLAG_OPCODE 0x7800
#define DNS_FLAG_RD 0x0100
#define DNS_FLAG_RA 0x0080
#define DNS_RCODE_MASK 0x000f
#define DNS_RCODE_SERVFAIL 2
#define DNS_TYPE_A 1
#define DNS_TYPE_AAAA 28
#define DNS_LABEL_MAX 63    /* a label's length byte; above it, a pointer or an extended label */
#define DNS_POINTER 0xc0    /* a compressed name's first byte: two bytes, an offset */
#define DNS_TCP_LENGTH 2    /* DNS over TCP: each message follows its two-byte length */
#define DNS_QUESTION_TAIL 4 /* QTYPE and QCLASS after the name */
#define DNS_RR_FIXED 10     /* TYPE, CLASS, TTL, RDLENGTH after a record's name */
#define DNS_ANSWER_TTL 64   /* the TTL and hop limit of an answer we make, the kernel's own */
/* An error answer: the UDP header, the DNS header, the question (name and tail), and room to
 * pad the sum's buffer to 4 bytes. */
#define DNS_ERROR_MAX (sizeof(struct udphdr) + sizeof(struct dnshdr) + KFAULT_DNS_NAME_MAX + DNS_QUESTION_TAIL)
#define DNS_SUM_BUFFER 296

/* A DNS message in a packet, as dns_locate found it. */
struct dns_packet {
	struct packet pkt; /* for lib/reset.h's reset, over TCP */
	struct kfault_dns_target_key pod;
	__u32 l4_offset;
	__u32 dns_offset;
	__u8 plain; /* no IP options or extension headers: an answer may be made in its place */
};

/* Per-CPU scratch space, private to dnsfault.c: the message located, its query name and the
 * answer being summed. In map memory, not on the stack: what the verifier knows of a value it
 * reads there is "some number", so the many header layouts dns_locate walks meet again before
 * the name's loops instead of each walking them (lib/scratch.h says more). */
struct dns_scratch {
	struct dns_packet dp;
	__u8 name[KFAULT_DNS_NAME_MAX]; /* the name, each label length read as '.' */
	__u8 sum[DNS_SUM_BUFFER];       /* an error answer's UDP header and message, for its checksum */
	volatile __u32 next_label;      /* where the next label's length is: "some number" at each step */
	volatile __u32 name_len;        /* dns_read_name's answer: one state after the loop, not one per length */
	volatile __u32 at;              /* random: where the next answer record starts */
	volatile __u32 rewritten;       /* random: records rewritten so far */
	volatile __u32 avail;           /* the name's bytes read: the loop's exit, which clang can't fold */
};

/* 0 -> this CPU's scratch space: written and read by dnsfault.c only. */
BPF_PERCPU_ARRAY(kfault_dns_scratch, struct dns_scratch, 1);
/* pod address -> mask of the DNS rules placed on it. Written by the agent, read by dnsfault.c. */
BPF_HASH(kfault_dns_targets, struct kfault_dns_target_key, __u32, KFAULT_DNS_MAX_TARGETS);
/* slot -> DNS rule. Written by the agent (whole value), read by dnsfault.c. */
BPF_ARRAY(kfault_dns_rules, struct kfault_dns_rule, KFAULT_DNS_MAX_RULES);
/* slot -> the DFA of the rule's name patterns. Written by the agent, read by dnsfault.c. */
BPF_ARRAY(kfault_dns_dfa, struct kfault_io_dfa, KFAULT_DNS_MAX_RULES);
/* slot -> per-CPU counts of outcomes. Written by dnsfault.c, read by the agent at scrape time. */
BPF_PERCPU_ARRAY(kfault_dns_counters, struct kfault_dns_counters, KFAULT_DNS_MAX_RULES);

/* Can this packet be DNS to (direction KFAULT_DIR_TO) or from port 53? 0 when it surely
 * isn't: read in place from the packet's linear data (a few loads, no helper call), so every
 * other packet passes at the cost of a compare. 1 when it may be (or its headers are not where
 * a plain IPv4 or IPv6 header puts them): dns_locate decides. */
static __always_inline int dns_may_be(struct __sk_buff *skb, __u32 direction)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	__u32 port_at = direction == KFAULT_DIR_TO ? 2 : 0; /* the port 53 would be: dest or source */
	__u8 protocol;
	__u16 *port;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + ETH_HLEN;

		if ((void *)(ip + 1) + 4 > end || ip->ihl != sizeof(*ip) / 4)
			return 1;
		protocol = ip->protocol;
		port = (void *)(ip + 1) + port_at;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + ETH_HLEN;

		if ((void *)(ip6 + 1) + 4 > end)
			return 1;
		protocol = ip6->nexthdr;
		if (protocol != IPPROTO_UDP && protocol != IPPROTO_TCP)
			return 1; /* an extension header, or not TCP or UDP: dns_locate walks it */
		port = (void *)(ip6 + 1) + port_at;
	} else {
		return 0;
	}
	if (protocol != IPPROTO_UDP && protocol != IPPROTO_TCP)
		return 0;
	return *port == bpf_htons(KFAULT_DNS_PORT);
}

/* Is this a DNS message to (direction KFAULT_DIR_TO, from the pod) or from (KFAULT_DIR_FROM)
 * port 53? Fills `dp` and returns 0 if so. The port is checked before anything else is read:
 * every other packet pays two loads. */
static __always_inline int dns_locate(struct __sk_buff *skb, __u32 direction, struct dns_packet *dp)
{
	__be16 ports[2];
	__u32 l4_offset;

	dp->pkt.l3_offset = ETH_HLEN;
	dp->pkt.len = skb->len;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
			return -1;
		if (ip.protocol != IPPROTO_UDP && ip.protocol != IPPROTO_TCP)
			return -1;
		if (ip.frag_off & bpf_htons(0x1fff))
			return -1; /* a later fragment: no header */
		l4_offset = ETH_HLEN + ip.ihl * 4;
		if (bpf_skb_load_bytes(skb, l4_offset, ports, sizeof(ports)) < 0 ||
		    ports[direction == KFAULT_DIR_TO ? 1 : 0] != bpf_htons(KFAULT_DNS_PORT))
			return -1;
		/* dp is the scratch space's: clear what an IPv6 packet left before mapping */
		__builtin_memset(dp->pod.addr, 0, sizeof(dp->pod.addr));
		ipv4_mapped(dp->pod.addr, direction == KFAULT_DIR_TO ? ip.saddr : ip.daddr);
		dp->pkt.is_ipv4 = 1;
		dp->pkt.protocol = ip.protocol;
		dp->plain = ip.ihl * 4 == sizeof(ip);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		__u8 protocol;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
			return -1;
		protocol = ip6.nexthdr;
		l4_offset = ETH_HLEN + sizeof(ip6);
		if (ipv6_skip_extensions(skb, &protocol, &l4_offset))
			return -1;
		if (protocol != IPPROTO_UDP && protocol != IPPROTO_TCP)
			return -1;
		if (bpf_skb_load_bytes(skb, l4_offset, ports, sizeof(ports)) < 0 ||
		    ports[direction == KFAULT_DIR_TO ? 1 : 0] != bpf_htons(KFAULT_DNS_PORT))
			return -1;
		__builtin_memcpy(dp->pod.addr, direction == KFAULT_DIR_TO ? &ip6.saddr : &ip6.daddr, 16);
		dp->pkt.is_ipv4 = 0; /* as above: not what the last packet left */
		dp->pkt.protocol = protocol;
		dp->plain = l4_offset == ETH_HLEN + sizeof(ip6);
	} else {
		return -1;
	}
	dp->pkt.has_ports = 1;
	dp->l4_offset = l4_offset;
	if (dp->pkt.protocol == IPPROTO_UDP) {
		dp->dns_offset = l4_offset + sizeof(struct udphdr);
	} else {
		__u8 doff;

		/* the segment must start a message: its length, then the message */
		if (bpf_skb_load_bytes(skb, l4_offset + 12, &doff, 1) < 0)
			return -1;
		dp->dns_offset = l4_offset + (doff >> 4) * 4 + DNS_TCP_LENGTH;
	}
	return 0;
}

/* Read the question's name at `offset` into scratch->name with each label's length byte read
 * as '.' ("\3www\7example\4test\0" -> ".www.example.test"), NUL at its end, and its length on
 * the wire (the terminating zero included) in scratch->name_len: returns 0, or -1 for a name
 * we can't match (compressed, cut short, longer than RFC 1035 allows). One bounded loop. */
static __always_inline int dns_read_name(struct __sk_buff *skb, __u32 offset, struct dns_scratch *scratch)
{
	__u32 avail = skb->len > offset ? skb->len - offset : 0;

	if (avail > KFAULT_DNS_NAME_MAX)
		avail = KFAULT_DNS_NAME_MAX;
	if (avail < 1)
		return -1;
	/* [1, KFAULT_DNS_NAME_MAX] as 6.1's verifier can see it (dns_sum_of says why) */
	avail -= 1;
	asm volatile("" : "+r"(avail));
	avail = (avail & (KFAULT_DNS_NAME_MAX - 1)) + 1;
	if (bpf_skb_load_bytes(skb, offset, scratch->name, avail) < 0)
		return -1;
	/* read back from map memory at each step: in a register, clang turns the exit into
	 * `i == avail` and drops the loop's own bound, an end 6.1's verifier can't see ("sequence
	 * of 8193 jumps") */
	scratch->avail = avail;
	scratch->next_label = 0;
#pragma clang loop unroll(disable)
	for (__u32 i = 0; i < KFAULT_DNS_NAME_MAX; i++) {
		__u8 c;

		if (i >= scratch->avail)
			return -1;
		if (i != scratch->next_label)
			continue;
		c = scratch->name[i];
		if (!c) {
			scratch->name_len = i + 1;
			return 0;
		}
		if (c > DNS_LABEL_MAX)
			return -1;
		scratch->name[i] = '.';
		scratch->next_label = i + c + 1;
	}
	return -1;
}

/* Does the name read (dns_read_name) match rule r's DFA? */
static __always_inline int dns_name_matches(const struct kfault_io_dfa *dfa, const struct dns_scratch *scratch)
{
	_Static_assert(KFAULT_DNS_NAME_MAX == KFAULT_IO_PATH_MAX, "dfa_accepts_text walks KFAULT_IO_PATH_MAX bytes");
	return dfa_accepts_text(dfa, scratch->name);
}

/* The one's complement sum of `len` bytes at `offset`: the whole words read into scratch->sum
 * (bpf_csum_diff sums words), the last 0-3 bytes zero-padded in a word of their own. */
static __always_inline int dns_sum_of(struct __sk_buff *skb, __u32 offset, __u32 len, struct dns_scratch *scratch,
				      __u32 *sum)
{
	__u64 words, rest, tail = 0;

	if (len < 4 || len > DNS_SUM_BUFFER)
		return -1;
	/* Each size is made as "at least one + a masked rest", behind a barrier: 6.1's verifier
	 * learns no lower bound from the `!= 0` clang turns a `>= 4` into, and a helper's size
	 * must not be 0. words: [4, DNS_SUM_BUFFER]; rest: [1, 4], 4 only where len & 3 is 0. */
	words = len - 4;
	asm volatile("" : "+r"(words));
	words = (words & 0x1fc) + 4;
	if (words > DNS_SUM_BUFFER)
		return -1;
	if (bpf_skb_load_bytes(skb, offset, scratch->sum, words) < 0)
		return -1;
	*sum = bpf_csum_diff(NULL, 0, (void *)scratch->sum, words, 0);
	if (len & 3) {
		rest = (len & 3) - 1;
		asm volatile("" : "+r"(rest));
		rest = (rest & 3) + 1;
		if (bpf_skb_load_bytes(skb, offset + (len & ~3), &tail, rest) < 0)
			return -1;
		*sum = csum_add32(*sum, (__u32)tail);
	}
	return 0;
}

/* Turn the query (a UDP datagram of name length `name_len`) into its answer, in place: the
 * header with QR, RA and `rcode`, the question alone, from the resolver to the pod (MACs,
 * addresses and ports swapped). The UDP checksum as lib/reset.h's write_tcp makes TCP's: right
 * whether the skb is CHECKSUM_PARTIAL or not. Returns 0, or -1 if a helper refused (the caller
 * drops the query). */
static __always_inline int dns_make_error(struct __sk_buff *skb, struct dns_packet *dp, __u32 name_len, __u32 rcode,
					  struct dns_scratch *scratch)
{
	__u32 msg_len = sizeof(struct dnshdr) + name_len + DNS_QUESTION_TAIL;
	__u32 udp_len = sizeof(struct udphdr) + msg_len;
	__u32 check_offset = dp->l4_offset + __builtin_offsetof(struct udphdr, check);
	struct udphdr udp;
	struct dnshdr hdr;
	__u32 pseudo, data;
	__u16 flags;

	if (!dp->plain || udp_len > DNS_ERROR_MAX || bpf_skb_load_bytes(skb, dp->dns_offset, &hdr, sizeof(hdr)) < 0 ||
	    bpf_skb_load_bytes(skb, dp->l4_offset, &udp, sizeof(udp)) < 0)
		return -1;
	if (bpf_skb_change_tail(skb, dp->l4_offset + udp_len, 0) < 0)
		return -1;
	flags = bpf_ntohs(hdr.flags);
	hdr.flags = bpf_htons(DNS_FLAG_QR | (flags & (DNS_FLAG_OPCODE | DNS_FLAG_RD)) | DNS_FLAG_RA |
			      (rcode & DNS_RCODE_MASK));
	hdr.qdcount = bpf_htons(1);
	hdr.ancount = hdr.nscount = hdr.arcount = 0;
	if (bpf_skb_store_bytes(skb, dp->dns_offset, &hdr, sizeof(hdr), 0) < 0)
		return -1;

	if (dp->pkt.is_ipv4) {
		struct {
			__be32 saddr, daddr;
			__u8 zero, protocol;
			__be16 len;
		} ph = {};
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
			return -1;
		ph.saddr = ip.daddr;
		ph.daddr = ip.saddr;
		ph.protocol = IPPROTO_UDP;
		ph.len = bpf_htons(udp_len);
		ip.saddr = ph.saddr;
		ip.daddr = ph.daddr;
		ip.tot_len = bpf_htons(sizeof(ip) + udp_len);
		ip.ttl = DNS_ANSWER_TTL;
		ip.check = 0;
		ip.check = ~csum_fold16(csum_of(&ip, sizeof(ip)));
		if (bpf_skb_store_bytes(skb, ETH_HLEN, &ip, sizeof(ip), 0) < 0)
			return -1;
		pseudo = csum_of(&ph, sizeof(ph));
	} else {
		struct {
			struct in6_addr saddr, daddr;
			__be32 len;
			__u8 zero[3], nexthdr;
		} ph = {};
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
			return -1;
		ph.saddr = ip6.daddr;
		ph.daddr = ip6.saddr;
		ph.len = bpf_htonl(udp_len);
		ph.nexthdr = IPPROTO_UDP;
		ip6.saddr = ph.saddr;
		ip6.daddr = ph.daddr;
		ip6.payload_len = bpf_htons(udp_len);
		ip6.hop_limit = DNS_ANSWER_TTL;
		if (bpf_skb_store_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6), 0) < 0)
			return -1;
		pseudo = csum_of(&ph, sizeof(ph));
	}

	udp.dest = udp.source;
	udp.source = bpf_htons(KFAULT_DNS_PORT);
	udp.len = bpf_htons(udp_len);
	udp.check = 0;
	if (bpf_skb_store_bytes(skb, dp->l4_offset, &udp, sizeof(udp), 0) < 0 ||
	    dns_sum_of(skb, dp->l4_offset, udp_len, scratch, &data) < 0)
		return -1;
	udp.check = csum_fold16(pseudo);
	if (bpf_skb_store_bytes(skb, check_offset, &udp.check, sizeof(udp.check), 0) < 0)
		return -1;
	/* the helper writes ~(diff - fold(P)) = ~(P + data) unless the skb is partial */
	if (bpf_l4_csum_replace(skb, check_offset, 0, csum_add32(csum_add32(pseudo, pseudo), data),
				BPF_F_MARK_MANGLED_0) < 0)
		return -1;
	return swap_macs(skb);
}

/* Write `len` (4 or 16) random bytes over the record data at `offset`, the UDP or TCP
 * checksum following word by word. */
static __always_inline int dns_randomize(struct __sk_buff *skb, const struct dns_packet *dp, __u32 offset, __u32 len)
{
	__u32 check_offset = dp->l4_offset + (dp->pkt.protocol == IPPROTO_UDP ?
						      __builtin_offsetof(struct udphdr, check) :
						      __builtin_offsetof(struct tcphdr, check));
	__u64 mangled = dp->pkt.protocol == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

#pragma unroll
	for (__u32 w = 0; w < 16 / 4; w++) {
		__u32 before, after = bpf_get_prandom_u32();

		if (w * 4 >= len)
			break;
		if (bpf_skb_load_bytes(skb, offset + w * 4, &before, 4) < 0 ||
		    bpf_skb_store_bytes(skb, offset + w * 4, &after, 4, BPF_F_RECOMPUTE_CSUM) < 0 ||
		    bpf_l4_csum_replace(skb, check_offset, before, after, mangled | 4) < 0)
			return -1;
	}
	return 0;
}

/* Set an answer's RCODE to SERVFAIL in place (random on a type with no address: Chaos Mesh's). */
static __always_inline int dns_fail_answer(struct __sk_buff *skb, const struct dns_packet *dp)
{
	__u32 check_offset = dp->l4_offset + (dp->pkt.protocol == IPPROTO_UDP ?
						      __builtin_offsetof(struct udphdr, check) :
						      __builtin_offsetof(struct tcphdr, check));
	__u64 mangled = dp->pkt.protocol == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__u32 at = dp->dns_offset + __builtin_offsetof(struct dnshdr, flags);
	__be16 before, after;

	if (bpf_skb_load_bytes(skb, at, &before, sizeof(before)) < 0)
		return -1;
	after = bpf_htons((bpf_ntohs(before) & ~DNS_RCODE_MASK) | DNS_RCODE_SERVFAIL);
	if (bpf_skb_store_bytes(skb, at, &after, sizeof(after), BPF_F_RECOMPUTE_CSUM) < 0)
		return -1;
	return bpf_l4_csum_replace(skb, check_offset, before, after, mangled | 2);
}

#endif /* KFAULT_LIB_DNS_H */
