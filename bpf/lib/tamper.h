/* tamper.h - the faults that change a packet and let it go on: duplicate and corrupt; and
 * the mark that tells our hooks a packet is one we made. Owns no map. */
#ifndef KFAULT_LIB_TAMPER_H
#define KFAULT_LIB_TAMPER_H

#include <linux/bpf.h>
#include <linux/ip.h>

#include "kfault.h"
#include "packet.h"

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

#endif /* KFAULT_LIB_TAMPER_H */
