/* Socket-LB logic: service lookup, backend selection, ClientIP affinity and reverse translation.
 * Included by bpf/sock_lb.c only. Every failed lookup lets the socket call through unchanged.
 */
#ifndef SLUICE_LB_H
#define SLUICE_LB_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "addr.h"
#include "capture_maps.h" /* sl_node_ips: the node's own addresses, kept live by the agent */
#include "events.h"
#include "lb_maps.h"
#include "node.h"
#include "verdicts.h"

#define SL_ECONNREFUSED 111

/* Set by the agent before load: the verifier prunes the hostns-only branch when it is off. */
const volatile __u8 cfg_hostns_only = 0;

static __always_inline void lb_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&sl_lb_counters, &idx);

	if (v)
		*v += 1;
}

static __always_inline void lb_addr_from_v6(struct sl_addr *a, const struct bpf_sock_addr *ctx)
{
	addr_from_words(a, ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]);
}

static __always_inline void lb_addr_to_v6(struct bpf_sock_addr *ctx, const struct sl_addr *a)
{
	const __u32 *w = (const __u32 *)a->b;

	ctx->user_ip6[0] = w[0];
	ctx->user_ip6[1] = w[1];
	ctx->user_ip6[2] = w[2];
	ctx->user_ip6[3] = w[3];
}

/* Remembers backend -> VIP for this socket so getpeername/recvmsg can show the VIP. The same
 * record tells bpf/sock_destroy.c which frontend (vip, vip_port as the socket dialed them) chose
 * the backend the socket is connected to. Its layout is that of every release since v0.1.0:
 * socket storage cannot be migrated, so keeping it keeps live sockets' reverse translation.
 */
static __always_inline void lb_rev_remember(struct bpf_sock_addr *ctx, const struct sl_backend *be,
					    const struct sl_addr *vip, __u16 vip_port)
{
	struct bpf_sock *sk = ctx->sk;
	struct sl_sock_rev *rev;
	__u32 i, idx;

	if (!sk)
		return;
	rev = bpf_sk_storage_get(&sl_lb_sock_rev, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!rev) {
		lb_count(SL_CNT_NO_STORAGE);
		return;
	}
	for (i = 0; i < SL_SOCK_REV_SLOTS; i++) {
		if (i >= rev->used)
			break;
		if (rev->e[i].backend_port == be->port && addr_eq(&rev->e[i].backend, &be->ip)) {
			rev->e[i].vip = *vip;
			rev->e[i].vip_port = vip_port;
			return;
		}
	}
	idx = rev->next & (SL_SOCK_REV_SLOTS - 1);
	rev->e[idx].backend = be->ip;
	rev->e[idx].backend_port = be->port;
	rev->e[idx].vip = *vip;
	rev->e[idx].vip_port = vip_port;
	rev->next = idx + 1;
	if (rev->used < SL_SOCK_REV_SLOTS)
		rev->used++;
}

/* Looks up the VIP behind a backend address this socket was translated to; rewrites in place. */
static __always_inline int lb_rev_lookup(struct bpf_sock_addr *ctx, struct sl_addr *addr, __u16 *port)
{
	struct bpf_sock *sk = ctx->sk;
	struct sl_sock_rev *rev;
	__u32 i;

	if (!sk)
		return 0;
	rev = bpf_sk_storage_get(&sl_lb_sock_rev, sk, 0, 0);
	if (!rev)
		return 0;
	for (i = 0; i < SL_SOCK_REV_SLOTS; i++) {
		if (i >= rev->used)
			break;
		if (rev->e[i].backend_port == *port && addr_eq(&rev->e[i].backend, addr)) {
			*addr = rev->e[i].vip;
			*port = rev->e[i].vip_port;
			lb_count(SL_CNT_REV_TRANSLATED);
			return 1;
		}
	}
	return 0;
}

/* A 64-bit mix so that consecutive socket cookies spread over the slots. */
static __always_inline __u32 lb_mix(__u64 x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return (__u32)x;
}

/* A connect to a frontend that socket-LB leaves untouched: counted, and reported as a bypass. */
static __always_inline int lb_skip(struct bpf_sock_addr *ctx, __u32 counter, __u8 reason,
				   const struct sl_addr *dst, __u16 dport)
{
	lb_count(counter);
	monitor_emit(ctx, SL_EV_BYPASS_OUT, reason, SL_MODE_NONE, 0, dst, dport, NULL, 0);
	return SL_ALLOW;
}

static __always_inline __u32 lb_affinity_backend(struct sl_affinity_key *ak,
						 const struct sl_svc_val *svc)
{
	struct sl_affinity_val *av = bpf_map_lookup_elem(&sl_lb_affinity, ak);
	__u64 now = bpf_ktime_get_ns();

	if (!av)
		return 0;
	if (now - av->last_ns > (__u64)svc->affinity_s * 1000000000ULL)
		return 0;
	/* The agent removes the affinity entries of backends it removes; a backend that vanished
	 * anyway (agent mid-update) makes us choose again.
	 */
	if (!bpf_map_lookup_elem(&sl_lb_backend, &av->backend_id))
		return 0;
	lb_count(SL_CNT_AFFINITY_HIT);
	return av->backend_id;
}

static __always_inline int lb_in_host_netns(struct bpf_sock_addr *ctx)
{
	return bpf_get_netns_cookie(ctx) == cfg_host_netns_cookie;
}

/* A pod annotated socket-lb.sluice.io/disabled: its sockets are never translated. */
static __always_inline int lb_pod_opted_out(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_netns_cookie(ctx);

	return bpf_map_lookup_elem(&sl_lb_pod_opt_out, &cookie) != NULL;
}

/* The nodePort frontend for a destination that missed the exact lookup, or NULL. A nodePort is
 * keyed by the unspecified address of its family, and serves a destination that is one of the
 * node's addresses, or loopback from the node's own network namespace (a pod's loopback is the
 * pod's own, as it is under kube-proxy). The node-address lookup runs only when a nodePort exists
 * on that port and protocol. On return key->vip is the nodePort's key (its slots use it).
 */
static __always_inline struct sl_svc_val *
lb_nodeport_lookup(struct bpf_sock_addr *ctx, struct sl_svc_key *key, const struct sl_addr *dst)
{
	struct sl_svc_val *svc;

	addr_from_words(&key->vip, 0, 0, addr_is_mapped_v4(dst) ? bpf_htonl(0x0000ffff) : 0, 0);
	svc = bpf_map_lookup_elem(&sl_lb_svc, key);
	if (!svc || !(svc->flags & SL_SVC_F_NODEPORT))
		return NULL;
	if (bpf_map_lookup_elem(&sl_node_ips, dst))
		return svc;
	if (addr_is_loopback(dst) && lb_in_host_netns(ctx))
		return svc;
	return NULL;
}

/* Translates a destination that names a service into one of its backends.
 * per_flow: choose by socket cookie (unconnected UDP: every datagram of a socket to the same
 * backend) instead of at random (one choice per connect).
 * Returns SL_ALLOW (destination possibly rewritten) or SL_REJECT (ECONNREFUSED).
 */
static __always_inline int lb_translate(struct bpf_sock_addr *ctx, struct sl_addr *dst,
					__u16 *dport, int per_flow)
{
	struct sl_svc_key key = {};
	struct sl_affinity_key ak = {};
	struct sl_svc_val *svc, *slot;
	struct sl_backend *be;
	__u32 backend_id = 0, n;
	__u8 reason = SL_REASON_NONE;
	__u16 count;

	if (ctx->protocol != IPPROTO_TCP && ctx->protocol != IPPROTO_UDP)
		return SL_ALLOW;
	key.vip = *dst;
	key.port = *dport;
	key.proto = ctx->protocol;
	svc = bpf_map_lookup_elem(&sl_lb_svc, &key);
	/* an exact hit on a nodePort's key is a connect to the unspecified address, which the kernel
	 * takes as the socket's own host: only the node's is the node
	 */
	if (svc && (svc->flags & SL_SVC_F_NODEPORT) && !lb_in_host_netns(ctx))
		return SL_ALLOW;
	if (!svc)
		svc = lb_nodeport_lookup(ctx, &key, dst);
	if (!svc)
		return SL_ALLOW;
	if (cfg_hostns_only && !lb_in_host_netns(ctx))
		return lb_skip(ctx, SL_CNT_HOSTNS_SKIP, SL_REASON_HOSTNS_ONLY, dst, *dport);
	if (lb_pod_opted_out(ctx))
		return lb_skip(ctx, SL_CNT_POD_OPT_OUT, SL_REASON_POD_OPT_OUT, dst, *dport);
	count = svc->count;
	if (count == 0) {
		/* the agent says why there is nothing to choose from: ITP Local is its own reason */
		if (svc->flags & SL_SVC_F_NO_LOCAL) {
			lb_count(SL_CNT_NO_LOCAL_BACKEND);
			reason = SL_REASON_NO_LOCAL_BACKEND;
		} else {
			lb_count(SL_CNT_NO_BACKEND);
			reason = SL_REASON_NO_BACKEND;
		}
		monitor_emit(ctx, SL_EV_LB_REFUSE, reason, SL_MODE_NONE, SL_ECONNREFUSED, dst,
			     *dport, NULL, 0);
		bpf_set_retval(-SL_ECONNREFUSED);
		return SL_REJECT;
	}
	if (svc->flags & SL_SVC_F_AFFINITY) {
		ak.netns_cookie = bpf_get_netns_cookie(ctx);
		ak.svc_id = svc->id;
		backend_id = lb_affinity_backend(&ak, svc);
		if (backend_id)
			reason = SL_REASON_AFFINITY;
	}
	if (!backend_id) {
		n = per_flow ? lb_mix(bpf_get_socket_cookie(ctx)) : bpf_get_prandom_u32();
		key.slot = (__u16)(n % count) + 1;
		slot = bpf_map_lookup_elem(&sl_lb_svc, &key);
		if (!slot)
			return lb_skip(ctx, SL_CNT_SLOT_MISS, SL_REASON_SLOT_MISS, dst, *dport);
		backend_id = slot->id;
	}
	be = bpf_map_lookup_elem(&sl_lb_backend, &backend_id);
	if (!be)
		return lb_skip(ctx, SL_CNT_SLOT_MISS, SL_REASON_SLOT_MISS, dst, *dport);
	if (svc->flags & SL_SVC_F_AFFINITY) {
		struct sl_affinity_val av = {.last_ns = bpf_ktime_get_ns(), .backend_id = backend_id};

		bpf_map_update_elem(&sl_lb_affinity, &ak, &av, BPF_ANY);
	}
	lb_rev_remember(ctx, be, dst, *dport);
	monitor_emit(ctx, SL_EV_LB_TRANSLATE, reason, SL_MODE_NONE, 0, dst, *dport, &be->ip,
		     be->port);
	*dst = be->ip;
	*dport = be->port;
	lb_count(SL_CNT_TRANSLATED);
	return SL_ALLOW;
}

#endif /* SLUICE_LB_H */
