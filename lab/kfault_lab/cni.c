/* cni.c - a stand-in for an eBPF CNI's program on the host side of each pod's veth (the lab's,
 * not kfault's): packets from a pod to another pod on this node get the destination's MAC
 * addresses and go straight into that pod's interface (bpf_redirect_peer), past the host's
 * stack and past every hook of the destination veth's host side; everything else (ARP, traffic
 * for the host) is passed on with TC_ACT_OK, which ends the tc chain. That is what Cilium and
 * Calico's eBPF dataplane do at tcx (kernel >= 6.6) or classic tc priority 1.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>

/* A local pod, by IPv4 address: written by the lab, read here. */
struct cni_endpoint {
	__u32 host_ifindex;     /* the host side of the pod's veth */
	__u8 pod_mac[ETH_ALEN];
	__u8 host_mac[ETH_ALEN];
};

BPF_HASH(cni_endpoints, __be32, struct cni_endpoint, 64);

int cni_from_pod(struct __sk_buff *skb)
{
	struct cni_endpoint *dst;
	struct iphdr ip;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
		return TC_ACT_OK;
	dst = cni_endpoints.lookup(&ip.daddr);
	if (!dst)
		return TC_ACT_OK;
	if (bpf_skb_store_bytes(skb, 0, dst->pod_mac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, dst->host_mac, ETH_ALEN, 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect_peer(dst->host_ifindex, 0);
}
