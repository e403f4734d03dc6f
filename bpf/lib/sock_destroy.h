/* Socket destroy: finds the sockets socket-LB translated to a backend that has since left the
 * service frontend that chose it, and destroys them with the bpf_sock_destroy kfunc (Linux >= 6.5).
 * Included by bpf/sock_destroy.c only. The kernel types are declared here for CO-RE, with just the
 * fields read: libbpf relocates them by name against the running kernel's BTF, so no vmlinux.h is
 * generated at build time.
 */
#ifndef SLUICE_SOCK_DESTROY_H
#define SLUICE_SOCK_DESTROY_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "addr.h"
#include "capture_maps.h" /* sl_node_ips: the addresses a nodePort is reached on */
#include "events.h"
#include "lb_maps.h"

#define SL_AF_INET  2
#define SL_AF_INET6 10

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct net {
	__u64 net_cookie;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} __attribute__((preserve_access_index)) possible_net_t;

/* Flat here; in the kernel skc_daddr, skc_rcv_saddr, skc_dport and skc_num sit in anonymous
 * unions, which CO-RE resolves.
 */
struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct udp_sock;
struct tcp_sock;

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
} __attribute__((preserve_access_index));

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
} __attribute__((preserve_access_index));

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

static __always_inline void destroy_count(void)
{
	__u32 idx = SL_CNT_SOCK_DESTROYED;
	__u64 *v = bpf_map_lookup_elem(&sl_lb_counters, &idx);

	if (v)
		*v += 1;
}

/* The connected peer of a socket; 0 when it has none (an unconnected UDP socket, a listener). */
static __always_inline int destroy_peer(const struct sock_common *skc, struct sl_addr *peer,
					__u16 *port)
{
	*port = bpf_ntohs(skc->skc_dport);
	if (*port == 0)
		return 0;
	if (skc->skc_family == SL_AF_INET) {
		addr_from_v4(peer, skc->skc_daddr);
		return 1;
	}
	if (skc->skc_family == SL_AF_INET6) {
		addr_from_words(peer, skc->skc_v6_daddr.in6_u.u6_addr32[0],
				skc->skc_v6_daddr.in6_u.u6_addr32[1],
				skc->skc_v6_daddr.in6_u.u6_addr32[2],
				skc->skc_v6_daddr.in6_u.u6_addr32[3]);
		return 1;
	}
	return 0;
}

/* Whether the frontend the socket dialed (vip, as its reverse record holds it) has let the backend
 * go: an entry in sl_lb_sock_dead for {frontend, backend}. A nodePort is keyed by the unspecified
 * address of its family while sockets dial one of the node's addresses or loopback: those are
 * looked up under the nodePort's key too.
 */
static __always_inline int destroy_pair_dead(struct sl_dead_key *dead)
{
	if (bpf_map_lookup_elem(&sl_lb_sock_dead, dead))
		return 1;
	if (!bpf_map_lookup_elem(&sl_node_ips, &dead->vip) && !addr_is_loopback(&dead->vip))
		return 0;
	addr_from_words(&dead->vip, 0, 0, addr_is_mapped_v4(&dead->vip) ? bpf_htonl(0x0000ffff) : 0,
			0);
	return bpf_map_lookup_elem(&sl_lb_sock_dead, dead) != NULL;
}

/* A sock-destroy event for the socket about to be destroyed, or NULL (no monitor): its netns,
 * cookie and own address are read now, since a destroyed UDP socket forgets its address.
 * destroy_emit completes it, or bpf_ringbuf_discard drops it when the socket stays.
 */
static __always_inline struct sl_event *destroy_event(struct sock_common *skc)
{
	struct sl_event *e = monitor_reserve(SL_EV_SOCK_DESTROY, SL_REASON_BACKEND_GONE);

	if (!e)
		return NULL;
	e->netns_cookie = skc->skc_net.net->net_cookie;
	e->sock_cookie = bpf_get_socket_cookie(skc);
	if (skc->skc_family == SL_AF_INET) {
		if (skc->skc_rcv_saddr)
			addr_from_v4(&e->src, skc->skc_rcv_saddr);
	} else {
		addr_from_words(&e->src, skc->skc_v6_rcv_saddr.in6_u.u6_addr32[0],
				skc->skc_v6_rcv_saddr.in6_u.u6_addr32[1],
				skc->skc_v6_rcv_saddr.in6_u.u6_addr32[2],
				skc->skc_v6_rcv_saddr.in6_u.u6_addr32[3]);
	}
	e->src_port = skc->skc_num;
	return e;
}

/* ... with the frontend the socket had dialed and the backend it was connected to. */
static __always_inline void destroy_emit(struct sl_event *e, const struct sl_destroyed *rec)
{
	e->proto = rec->proto;
	e->dst = rec->vip;
	e->dst_port = rec->vip_port;
	e->to = rec->peer;
	e->to_port = rec->peer_port;
	monitor_submit(e);
}

/* Destroys the socket when it is still connected to a backend that a frontend chose for it and
 * that has since left that frontend (an entry in sl_lb_sock_dead). A socket connected to the same
 * backend directly, or through a frontend it has not left, is kept; so is every unconnected UDP
 * socket: it chooses a backend again for each datagram (cilium#48564 destroyed those).
 * skc and sk are the same socket (its common part, and the full socket socket storage needs).
 * Writes one struct sl_destroyed to the iterator's output per socket destroyed.
 */
static __always_inline int destroy_if_left(struct bpf_iter_meta *meta, struct sock_common *skc,
					   void *sk, __u8 proto)
{
	struct sl_destroyed rec = {};
	struct sl_dead_key dead = {};
	struct sl_event *e;
	struct sl_sock_rev *rev;
	struct sl_addr peer;
	__u16 port;
	__u32 i;

	if (!destroy_peer(skc, &peer, &port))
		return 0;
	rev = bpf_sk_storage_get(&sl_lb_sock_rev, sk, 0, 0);
	if (!rev)
		return 0;
	for (i = 0; i < SL_SOCK_REV_SLOTS; i++) {
		if (i >= rev->used)
			break;
		if (rev->e[i].backend_port != port || !addr_eq(&rev->e[i].backend, &peer))
			continue;
		/* one record per backend (lb_rev_remember): this is the frontend that chose it last */
		dead.vip = rev->e[i].vip;
		dead.vip_port = rev->e[i].vip_port;
		dead.backend = peer;
		dead.backend_port = port;
		dead.proto = proto;
		rec.vip = rev->e[i].vip;
		rec.vip_port = rev->e[i].vip_port;
		if (!destroy_pair_dead(&dead))
			return 0;
		e = destroy_event(skc);
		if (bpf_sock_destroy(skc)) {
			if (e)
				bpf_ringbuf_discard(e, 0);
			return 0;
		}
		destroy_count();
		rec.peer = peer;
		rec.peer_port = port;
		rec.proto = proto;
		bpf_seq_write(meta->seq, &rec, sizeof(rec));
		if (e)
			destroy_emit(e, &rec);
		return 1;
	}
	return 0;
}

#endif /* SLUICE_SOCK_DESTROY_H */
