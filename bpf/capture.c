/* Mesh capture, the parts that are not sock_addr hooks:
 *  - sockops: carries a captured connection's original destination from the app's socket to the
 *    proxy's accepted socket (see capture_maps.h), records connections inbound capture must leave
 *    alone, and enrols the proxy's inbound listeners;
 *  - cgroup/getsockopt: answers SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST as Envoy expects;
 *  - sk_lookup (one link per captured pod's netns): steers inbound connections to the proxy's
 *    inbound listener, leaving the packet untouched so the accepted socket keeps the original
 *    destination as its local address;
 *  - tcx ingress on a captured pod's lo: marks the proxy's source-preserving connections to the
 *    app so that the app's replies are routed back to the proxy.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/capture.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define SL_AF_INET	   2
#define SL_AF_INET6	   10
#define SL_SOL_IP	   0
#define SL_SOL_IPV6	   41
#define SL_SO_ORIGINAL_DST 80 /* also IP6T_SO_ORIGINAL_DST */
#define SL_PAGE_SIZE	   4096

/* The key of a captured connection seen from the app's socket: its own address and port, and
 * the proxy port it connects to.
 */
static __always_inline void sockops_app_key(struct bpf_sock_ops *skops, struct sl_origdst_key *key)
{
	key->netns_cookie = bpf_get_netns_cookie(skops);
	if (skops->family == SL_AF_INET)
		addr_from_v4(&key->addr, SL_LOAD(skops->local_ip4));
	else
		addr_from_words(&key->addr, SL_LOAD(skops->local_ip6[0]),
				SL_LOAD(skops->local_ip6[1]), SL_LOAD(skops->local_ip6[2]),
				SL_LOAD(skops->local_ip6[3]));
	key->port = (__u16)skops->local_port;
	key->proxy_port = bpf_ntohl(skops->remote_port) & 0xffff;
}

/* The same key seen from the proxy's accepted socket: its peer, and its own port. */
static __always_inline void sockops_proxy_key(struct bpf_sock_ops *skops, struct sl_origdst_key *key)
{
	key->netns_cookie = bpf_get_netns_cookie(skops);
	if (skops->family == SL_AF_INET)
		addr_from_v4(&key->addr, SL_LOAD(skops->remote_ip4));
	else
		addr_from_words(&key->addr, SL_LOAD(skops->remote_ip6[0]),
				SL_LOAD(skops->remote_ip6[1]), SL_LOAD(skops->remote_ip6[2]),
				SL_LOAD(skops->remote_ip6[3]));
	key->port = bpf_ntohl(skops->remote_port) & 0xffff;
	key->proxy_port = (__u16)skops->local_port;
}

static __always_inline struct sl_origdst_stat *origdst_stat(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&sl_origdst_stat, &zero);
}

/* A captured handshake starts: its entry in sl_origdst_syn, counted in in_flight. */
static __always_inline void origdst_remember(const struct sl_origdst_key *key,
					     const struct sl_orig_dst *o)
{
	struct sl_origdst_stat *st;

	if (bpf_map_update_elem(&sl_origdst_syn, key, o, BPF_NOEXIST) == 0) {
		st = origdst_stat();
		if (st)
			__sync_fetch_and_add(&st->in_flight, 1);
		return;
	}
	/* The key is the connection itself and leaves with it, so it cannot be there already;
	 * should it be, keep it current without counting it twice. A full map (connects past
	 * cap_handshakes_full's room) leaves this one without an entry.
	 */
	bpf_map_update_elem(&sl_origdst_syn, key, o, BPF_EXIST);
}

/* A captured handshake is over (moved to the proxy's socket, or the app's socket closed). */
static __always_inline void origdst_forget(const struct sl_origdst_key *key)
{
	struct sl_origdst_stat *st;

	if (bpf_map_delete_elem(&sl_origdst_syn, key) != 0)
		return;
	st = origdst_stat();
	if (st)
		__sync_fetch_and_add(&st->in_flight, -1);
}

/* The same connection as v0.1.0 keys it in sl_origdst: without the proxy port. */
static __always_inline void origdst_v0_key(const struct sl_origdst_key *key,
					   struct sl_origdst_v0_key *v0)
{
	v0->netns_cookie = key->netns_cookie;
	v0->addr = key->addr;
	v0->port = key->port;
}

/* A TCP connection seen from the pod it goes to: {pod address and port, peer address and port}. */
static __always_inline void sockops_flow_key(struct bpf_sock_ops *skops, struct sl_flow_key *key)
{
	if (skops->family == SL_AF_INET) {
		addr_from_v4(&key->pod, SL_LOAD(skops->remote_ip4));
		addr_from_v4(&key->peer, SL_LOAD(skops->local_ip4));
	} else {
		addr_from_words(&key->pod, SL_LOAD(skops->remote_ip6[0]),
				SL_LOAD(skops->remote_ip6[1]), SL_LOAD(skops->remote_ip6[2]),
				SL_LOAD(skops->remote_ip6[3]));
		addr_from_words(&key->peer, SL_LOAD(skops->local_ip6[0]),
				SL_LOAD(skops->local_ip6[1]), SL_LOAD(skops->local_ip6[2]),
				SL_LOAD(skops->local_ip6[3]));
	}
	key->pod_port = bpf_ntohl(skops->remote_port) & 0xffff;
	key->peer_port = (__u16)skops->local_port;
}

/* Records a connection this socket opens in sl_bypass_flows when inbound capture must leave it
 * alone (capture_bypass_flow decides).
 */
static __always_inline int sockops_bypass_flow(struct bpf_sock_ops *skops)
{
	struct sl_flow_key key = {};
	__u64 netns = bpf_get_netns_cookie(skops);
	int node_proxy = cap_is_proxy_marked(skops->sk), tproxy = cap_is_tproxy_marked(skops->sk);
	__u8 one = 1;

	/* most sockets: no flow key to build */
	if (netns != cfg_host_netns_cookie && !node_proxy && !tproxy)
		return 0;
	sockops_flow_key(skops, &key);
	if (!capture_bypass_flow(netns, node_proxy, tproxy, &key.pod))
		return 0;
	bpf_map_update_elem(&sl_bypass_flows, &key, &one, BPF_ANY);
	return 1;
}

/* At SYN time the app's port is known: the handshake's entry in sl_origdst_syn. */
static __always_inline void sockops_connect(struct bpf_sock_ops *skops)
{
	struct sl_origdst_key key = {};
	struct sl_origdst_v0_key v0 = {};
	struct sl_orig_dst *o;
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return;
	o = bpf_sk_storage_get(&sl_cap_sock, sk, 0, 0);
	if (o) {
		sockops_app_key(skops, &key);
		origdst_remember(&key, o);
		/* where v0.1.0's getsockopt looks, should it answer for this connection */
		origdst_v0_key(&key, &v0);
		bpf_map_update_elem(&sl_origdst, &v0, o, BPF_ANY);
	} else if (!sockops_bypass_flow(skops)) {
		return;
	}
	/* to remove the entry when this socket closes */
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/*
 * The proxy's side of a connection completes its handshake (before accept() can return it): a
 * captured connection's original destination moves into this socket's own storage, which lives
 * exactly as long as the connection, and leaves sl_origdst_syn. Called for every connection the
 * cgroup's sockets accept; for others it costs one lookup.
 */
static __always_inline void sockops_accepted(struct bpf_sock_ops *skops)
{
	struct sl_origdst_key key = {};
	struct sl_orig_dst *o, *kept;
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return;
	sockops_proxy_key(skops, &key);
	o = bpf_map_lookup_elem(&sl_origdst_syn, &key);
	if (!o)
		return;
	kept = bpf_sk_storage_get(&sl_origdst_sock, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	/* without memory for it the entry stays where getsockopt finds it too, until the app's
	 * socket closes */
	if (!kept)
		return;
	*kept = *o;
	origdst_forget(&key);
}

/* Only sockets with one of the two entries asked for this callback; deleting a missing key is cheap. */
static __always_inline void sockops_closed(struct bpf_sock_ops *skops)
{
	struct sl_origdst_key key = {};
	struct sl_origdst_v0_key v0 = {};
	struct sl_flow_key flow = {};

	sockops_app_key(skops, &key);
	origdst_forget(&key);
	origdst_v0_key(&key, &v0);
	bpf_map_delete_elem(&sl_origdst, &v0);
	sockops_flow_key(skops, &flow);
	bpf_map_delete_elem(&sl_bypass_flows, &flow);
}

/* A proxy's listener (15001, 15006, 15008) joins sl_listeners when it starts listening, in any
 * namespace: a pod enrolled later (live, by a label) finds the listeners its proxy already has.
 * It takes the first free slot (a closed listener's entry vanishes with it).
 */
static __always_inline void sockops_listen(struct bpf_sock_ops *skops)
{
	struct sl_listener_key key = {};

	key.port = (__u16)skops->local_port;
	if (key.port != SL_PORT_OUTBOUND && key.port != SL_PORT_INBOUND && key.port != SL_PORT_HBONE)
		return;
	key.netns_cookie = bpf_get_netns_cookie(skops);
	key.family = skops->family == SL_AF_INET ? 4 : 6;
#pragma clang loop unroll(full)
	for (__u32 i = 0; i < SL_LISTENER_SLOTS; i++) {
		key.slot = (__u8)i;
		if (bpf_sock_hash_update(skops, &sl_listeners, &key, BPF_NOEXIST) != -17 /* EEXIST */)
			break;
	}
}

SEC("sockops")
int sl_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		sockops_connect(skops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		sockops_accepted(skops);
		break;
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		sockops_listen(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE)
			sockops_closed(skops);
		break;
	}
	return 1;
}

/* Writes a sockaddr_in / sockaddr_in6 answer; 0 when the caller's buffer is too small. */
static __always_inline int sockopt_answer(struct bpf_sockopt *ctx, const struct sl_addr *addr,
					  __u16 port)
{
	__u8 *optval = ctx->optval, *end = ctx->optval_end;

	if (ctx->level == SL_SOL_IP) {
		struct {
			__u16 family;
			__u16 port;
			__u32 addr;
			__u8 zero[8];
		} *sin = (void *)optval;

		if (!addr_is_mapped_v4(addr) || optval + sizeof(*sin) > end)
			return 0;
		sin->family = SL_AF_INET;
		sin->port = bpf_htons(port);
		sin->addr = addr_v4(addr);
		__builtin_memset(sin->zero, 0, sizeof(sin->zero));
		*(volatile __s32 *)&ctx->optlen = sizeof(*sin);
	} else {
		struct {
			__u16 family;
			__u16 port;
			__u32 flowinfo;
			__u32 addr[4];
			__u32 scope;
		} *sin6 = (void *)optval;
		const __u32 *w = (const __u32 *)addr->b;

		if (optval + sizeof(*sin6) > end)
			return 0;
		sin6->family = SL_AF_INET6;
		sin6->port = bpf_htons(port);
		sin6->flowinfo = 0;
		sin6->addr[0] = w[0];
		sin6->addr[1] = w[1];
		sin6->addr[2] = w[2];
		sin6->addr[3] = w[3];
		sin6->scope = 0;
		*(volatile __s32 *)&ctx->optlen = sizeof(*sin6);
	}
	/* a separate store: merged with optlen into one 64-bit write it fails verification */
	*(volatile __s32 *)&ctx->retval = 0;
	return 1;
}

/*
 * SO_ORIGINAL_DST on a socket of a captured pod: for a connection the pod's app made to the
 * proxy, where the app was going (kept with the accepted socket; while its handshake is still in
 * flight, from sl_origdst_syn; from sl_origdst when v0.1.0's programs saw its SYN); otherwise
 * (an inbound connection steered by sk_lookup, whose local address is still the original
 * destination) the socket's own local address, as conntrack answers for a connection that was
 * not translated. Every other call is left as the kernel answered it.
 */
SEC("cgroup/getsockopt")
int sl_getsockopt(struct bpf_sockopt *ctx)
{
	struct sl_origdst_key key = {};
	struct sl_origdst_v0_key v0 = {};
	struct bpf_sock *sk = ctx->sk;
	struct sl_orig_dst *o;
	struct sl_addr local;

	if (ctx->optname != SL_SO_ORIGINAL_DST ||
	    (ctx->level != SL_SOL_IP && ctx->level != SL_SOL_IPV6))
		goto untouched;
	if (!sk || sk->protocol != IPPROTO_TCP)
		goto untouched;
	key.netns_cookie = bpf_get_netns_cookie(ctx);
	if (!bpf_map_lookup_elem(&sl_endpoints, &key.netns_cookie))
		goto untouched;
	if (sk->family == SL_AF_INET) {
		addr_from_v4(&key.addr, SL_LOAD(sk->dst_ip4));
		addr_from_v4(&local, SL_LOAD(sk->src_ip4));
	} else {
		addr_from_words(&key.addr, SL_LOAD(sk->dst_ip6[0]), SL_LOAD(sk->dst_ip6[1]),
				SL_LOAD(sk->dst_ip6[2]), SL_LOAD(sk->dst_ip6[3]));
		addr_from_words(&local, SL_LOAD(sk->src_ip6[0]), SL_LOAD(sk->src_ip6[1]),
				SL_LOAD(sk->src_ip6[2]), SL_LOAD(sk->src_ip6[3]));
	}
	key.port = bpf_ntohs((__u16)SL_LOAD(sk->dst_port));
	key.proxy_port = (__u16)SL_LOAD(sk->src_port);
	o = bpf_sk_storage_get(&sl_origdst_sock, sk, 0, 0);
	if (!o)
		o = bpf_map_lookup_elem(&sl_origdst_syn, &key);
	if (!o) {
		/* a connection whose SYN v0.1.0's sockops saw (before an upgrade, or while the links
		 * are swapped one by one) */
		origdst_v0_key(&key, &v0);
		o = bpf_map_lookup_elem(&sl_origdst, &v0);
	}
	if (o) {
		if (sockopt_answer(ctx, &o->addr, o->port))
			return 1;
		goto untouched;
	}
	if (ctx->retval != 0 && sockopt_answer(ctx, &local, (__u16)sk->src_port))
		return 1;
untouched:
	/* the kernel's rule for large buffers: optlen 0 keeps the kernel's own answer */
	if (ctx->optlen > SL_PAGE_SIZE)
		ctx->optlen = 0;
	return 1;
}

/*
 * An inbound decision about a captured pod's connection from remote to local: to the listener
 * on to_port of the same address (as REDIRECT would show it), or none (0). sk_lookup may not ask
 * for its netns cookie: the pod's comes from its address, looked up only while a monitor reads.
 */
static __always_inline void lookup_emit(struct bpf_sk_lookup *ctx, __u8 type, __u8 reason,
					const struct sl_addr *local, const struct sl_addr *remote,
					__u16 to_port)
{
	struct sl_event *e = monitor_reserve(type, reason);
	struct sl_policy *pol;
	__u64 *cookie;

	if (!e)
		return;
	cookie = bpf_map_lookup_elem(&sl_pod_ips, local);
	if (cookie) {
		e->netns_cookie = *cookie;
		pol = bpf_map_lookup_elem(&sl_endpoints, cookie);
		if (pol)
			e->mode = pol->mode;
	}
	e->proto = IPPROTO_TCP;
	e->src = *remote;
	e->src_port = bpf_ntohs(ctx->remote_port);
	e->dst = *local;
	e->dst_port = (__u16)ctx->local_port;
	if (to_port) {
		e->to = *local;
		e->to_port = to_port;
	}
	monitor_submit(e);
}

SEC("sk_lookup")
int sl_sk_lookup(struct bpf_sk_lookup *ctx)
{
	struct sl_addr local, remote;
	struct sl_policy *pol = NULL;
	__u8 why = SL_REASON_NONE;
	struct bpf_sock *sk;
	__u64 cookie = 0;
	long err;

	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	if (ctx->family == SL_AF_INET) {
		addr_from_v4(&local, SL_LOAD(ctx->local_ip4));
		addr_from_v4(&remote, SL_LOAD(ctx->remote_ip4));
	} else {
		addr_from_words(&local, SL_LOAD(ctx->local_ip6[0]), SL_LOAD(ctx->local_ip6[1]),
				SL_LOAD(ctx->local_ip6[2]), SL_LOAD(ctx->local_ip6[3]));
		addr_from_words(&remote, SL_LOAD(ctx->remote_ip6[0]), SL_LOAD(ctx->remote_ip6[1]),
				SL_LOAD(ctx->remote_ip6[2]), SL_LOAD(ctx->remote_ip6[3]));
	}
	if (capture_inbound(&local, &remote, (__u16)ctx->local_port, bpf_ntohs(ctx->remote_port),
			    ctx->ingress_ifindex, &cookie, &pol, &why) != CAP_IN_STEER ||
	    !pol) {
		if (why != SL_REASON_NONE)
			lookup_emit(ctx, SL_EV_BYPASS_IN, why, &local, &remote, 0);
		return SK_PASS;
	}
	sk = cap_listener(cookie, pol->inbound_port, ctx->family == SL_AF_INET);
	if (!sk) {
		/* Fail closed, as Istio's REDIRECT to a port nobody listens on: the app is not
		 * reached around its proxy. The SYN is dropped, so the client retries.
		 */
		cap_count(cookie, CAP_STAT_NO_LISTENER);
		lookup_emit(ctx, SL_EV_NO_LISTENER, SL_REASON_NONE, &local, &remote,
			    pol->inbound_port);
		return SK_DROP;
	}
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		cap_count(cookie, CAP_STAT_NO_LISTENER);
		lookup_emit(ctx, SL_EV_NO_LISTENER, SL_REASON_NONE, &local, &remote,
			    pol->inbound_port);
		return SK_DROP;
	}
	cap_count(cookie, CAP_STAT_INBOUND);
	lookup_emit(ctx, SL_EV_CAPTURE_IN, SL_REASON_NONE, &local, &remote, pol->inbound_port);
	return SK_PASS;
}

/* tcx return code: let the next program (or the stack) decide */
#define SL_TCX_NEXT (-1)

/*
 * On a captured pod's lo (ingress; attached for ambient pods and sidecars in TPROXY mode): a
 * packet carrying the proxy's socket mark that comes back to the pod is one of the proxy's own
 * connections to a local socket — the source-preserving inbound hand-off to the app. It gets the
 * inbound mark instead; with tcp_fwmark_accept the app's accepted socket inherits it, and the
 * pod's rule "fwmark inbound-mark lookup <table>" with a local default route there brings the
 * app's replies back to the proxy's transparent socket rather than out through eth0. The proxy's
 * own outbound sockets keep their mark, so they are routed normally. The proxy's mark is
 * ztunnel's (ambient-proxy-mark) or Envoy's TPROXY mark 1337, which Istio's sidecar rules match
 * exactly. (Istio: CONNMARK 0x111 on PREROUTING packets with mark 0x539 in ambient pods; for
 * TPROXY sidecars CONNMARK 1337 with "fwmark 1337 lookup 133" and the same local route.)
 */
SEC("tc")
int sl_lo_mark(struct __sk_buff *skb)
{
	__u32 mark = skb->mark;

	if ((mark & cfg_proxy_mark_mask) == (cfg_proxy_mark & cfg_proxy_mark_mask) ||
	    mark == SL_TPROXY_MARK)
		skb->mark = (mark & ~cfg_inbound_mark_mask) |
			    (cfg_inbound_mark & cfg_inbound_mark_mask);
	return SL_TCX_NEXT;
}
