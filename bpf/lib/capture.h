/* Mesh capture decisions shared by the programs: which connections of a captured pod go to its
 * proxy, following the rules Istio's iptables chains apply (ISTIO_OUTPUT, ISTIO_INBOUND).
 * Included by bpf/sock_lb.c, bpf/capture.c and the decision tests under test/bpf, which call the
 * decisions on contexts they build (helpers that need a real socket replaced by test stand-ins).
 */
#ifndef SLUICE_CAPTURE_H
#define SLUICE_CAPTURE_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "addr.h"
#include "capture_maps.h"
#include "events.h"
#include "mesh_consts.h"
#include "node.h"
#include "verdicts.h"

/* What a captured connect is refused with when the node's handshakes are full (cap_handshakes_full). */
#define SL_EAGAIN 11

/* Set by the agent before load (mesh-proxy-uid, mesh-proxy-gid, ambient-proxy-mark). */
const volatile __u32 cfg_proxy_uid = 1337;
const volatile __u32 cfg_proxy_gid = 1337;
const volatile __u32 cfg_proxy_mark = SL_PROXY_MARK;
const volatile __u32 cfg_proxy_mark_mask = SL_PROXY_MARK_MASK;
/* The mark a proxy's looped-back inbound connection gets in a captured pod (see mesh_consts.h). */
const volatile __u32 cfg_inbound_mark = SL_INBOUND_MARK;
const volatile __u32 cfg_inbound_mark_mask = SL_INBOUND_MARK_MASK;

/* mesh-dns-servers: the resolvers whose traffic DNS capture takes (Istio: the pod's
 * resolv.conf); none listed means every destination on port 53 (Istio's capture-all-dns).
 */
const volatile struct sl_addr cfg_dns_servers[SL_MAX_DNS_SERVERS] = {};
const volatile __u8 cfg_n_dns_servers = 0;

static __always_inline int cap_port_in(const __u16 *ports, __u8 n, __u16 port)
{
	__u32 i;

	for (i = 0; i < SL_MAX_PORTS; i++) {
		if (i >= n)
			break;
		if (ports[i] == port)
			return 1;
	}
	return 0;
}

static __always_inline int cap_cidr_in(const struct sl_cidr *cidrs, __u8 n, const struct sl_addr *a)
{
	__u32 i;

	for (i = 0; i < SL_MAX_CIDRS; i++) {
		if (i >= n)
			break;
		if (addr_in_cidr(a, &cidrs[i]))
			return 1;
	}
	return 0;
}

static __always_inline int cap_is_pod_ip(const struct sl_policy *pol, const struct sl_addr *a)
{
	__u32 i;

	for (i = 0; i < SL_MAX_POD_IPS; i++) {
		if (i >= pol->n_pod_ips)
			break;
		if (addr_eq(&pol->pod_ips[i], a))
			return 1;
	}
	return 0;
}

/* The sidecar's own ports, never steered inbound: Istio's chain skips 15008 and the injector
 * adds 15020, 15021 and 15090 to the excluded ports; 15006 is the target itself; 15001 is kept
 * out as well (steering it to 15006 would only loop the proxy's outbound listener into inbound).
 */
static __always_inline int cap_reserved_port(__u16 port)
{
	switch (port) {
	case 15001:
	case 15006:
	case 15008:
	case 15020:
	case 15021:
	case 15090:
		return 1;
	}
	return 0;
}

/* The pod's proxy uid and gid: its own when the agent set them, else the node's. */
static __always_inline __u32 cap_proxy_uid(const struct sl_policy *pol)
{
	return pol->proxy_uid ? pol->proxy_uid : cfg_proxy_uid;
}

static __always_inline __u32 cap_proxy_gid(const struct sl_policy *pol)
{
	return pol->proxy_gid ? pol->proxy_gid : cfg_proxy_gid;
}

/* Why inbound capture leaves this port alone (enum sl_event_reason), SL_REASON_NONE when it takes
 * it. Istio's ISTIO_INBOUND port rules: excludeInboundPorts applies to "*", a list of
 * includeInboundPorts is taken as is; the sidecar's own ports never.
 */
static __always_inline __u8 cap_inbound_port_skip(const struct sl_policy *pol, __u16 port)
{
	if (cap_reserved_port(port))
		return SL_REASON_PROXY_PORT;
	if (pol->flags & SL_POL_IN_ALL)
		return cap_port_in(pol->exclude_in_ports, pol->n_exclude_in_ports, port)
			       ? SL_REASON_EXCLUDED_PORT
			       : SL_REASON_NONE;
	return cap_port_in(pol->include_in_ports, pol->n_include_in_ports, port)
		       ? SL_REASON_NONE
		       : SL_REASON_NOT_INCLUDED;
}

/* Does inbound capture take this port? */
static __always_inline int cap_inbound_port(const struct sl_policy *pol, __u16 port)
{
	return cap_inbound_port_skip(pol, port) == SL_REASON_NONE;
}

static __always_inline void cap_count(__u64 cookie, enum sl_ep_stat which)
{
	struct sl_ep_stats *st = bpf_map_lookup_elem(&sl_ep_stats, &cookie);

	if (!st)
		return;
	switch (which) {
	case CAP_STAT_OUTBOUND:
		__sync_fetch_and_add(&st->outbound, 1);
		break;
	case CAP_STAT_INBOUND:
		__sync_fetch_and_add(&st->inbound, 1);
		break;
	case CAP_STAT_BYPASS:
		__sync_fetch_and_add(&st->proxy_bypass, 1);
		break;
	case CAP_STAT_NO_LISTENER:
		__sync_fetch_and_add(&st->no_listener, 1);
		break;
	}
}

/* 127.0.0.1 exactly (Istio's "-d 127.0.0.1/32"), or ::1 */
static __always_inline int cap_is_localhost1(const struct sl_addr *a)
{
	if (addr_is_mapped_v4(a))
		return addr_v4(a) == bpf_htonl(0x7f000001);
	return addr_is_loopback(a);
}

/* 127.0.0.1 for an IPv4 (mapped) destination, ::1 for IPv6: where the proxy listens. */
static __always_inline void cap_to_loopback(struct sl_addr *dst)
{
	if (addr_is_mapped_v4(dst))
		addr_from_v4(dst, bpf_htonl(0x7f000001));
	else
		addr_from_words(dst, 0, 0, 0, bpf_htonl(1));
}

struct sl_sockaddr_in {
	__u16 family;
	__u16 port;
	__u32 addr;
	__u8 zero[8];
};

struct sl_sockaddr_in6 {
	__u16 family;
	__u16 port;
	__u32 flowinfo;
	__u32 addr[4];
	__u32 scope_id;
};

/* The socket has a local address already (bound by the app, e.g. Envoy's 127.0.0.6). */
static __always_inline int cap_sock_bound(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return 1;
	if (ctx->user_family == 2 /* AF_INET */)
		return SL_LOAD(sk->src_ip4) != 0;
	return (SL_LOAD(sk->src_ip6[0]) | SL_LOAD(sk->src_ip6[1]) | SL_LOAD(sk->src_ip6[2]) |
		SL_LOAD(sk->src_ip6[3])) != 0;
}

/*
 * Under iptables REDIRECT the source of a captured connection stays the address the route to the
 * original destination chose: the pod's own IP. Rewriting the destination to loopback would make
 * the kernel pick 127.0.0.1 / ::1 instead, so bind the pod's address of that family first (port
 * 0: chosen at connect, as IP_BIND_ADDRESS_NO_PORT). The app's getsockname and the proxy's
 * getpeername then show the pod IP, as under Istio's rules. A socket the app bound keeps its
 * address; loopback destinations keep a loopback source, as the route would give them.
 */
static __always_inline void cap_bind_pod_source(struct bpf_sock_addr *ctx,
						const struct sl_policy *pol,
						const struct sl_addr *orig)
{
	int v4 = addr_is_mapped_v4(orig);
	__u32 i;

	if (addr_is_loopback(orig) || cap_sock_bound(ctx))
		return;
	for (i = 0; i < SL_MAX_POD_IPS; i++) {
		const struct sl_addr *ip = &pol->pod_ips[i];

		if (i >= pol->n_pod_ips)
			break;
		if (addr_is_mapped_v4(ip) != v4)
			continue;
		if (ctx->user_family == 2 /* AF_INET */) {
			struct sl_sockaddr_in sin = {.family = 2, .addr = addr_v4(ip)};

			bpf_bind(ctx, (struct sockaddr *)&sin, sizeof(sin));
		} else {
			const __u32 *w = (const __u32 *)ip->b;
			struct sl_sockaddr_in6 sin6 = {.family = 10};

			sin6.addr[0] = w[0];
			sin6.addr[1] = w[1];
			sin6.addr[2] = w[2];
			sin6.addr[3] = w[3];
			bpf_bind(ctx, (struct sockaddr *)&sin6, sizeof(sin6));
		}
		return;
	}
}

/*
 * Are the node's captured handshakes in flight close to what sl_origdst_syn holds (see
 * capture_maps.h)? Then a captured connect is refused at once, and counted, rather than reaching
 * its proxy without its original destination. EAGAIN is what connect(2) answers when the kernel
 * runs out of ephemeral ports: a resource that frees itself, try again.
 */
static __always_inline int cap_handshakes_full(void)
{
	__u32 zero = 0;
	struct sl_origdst_stat *st = bpf_map_lookup_elem(&sl_origdst_stat, &zero);

	if (!st || st->in_flight < SL_HANDSHAKES_ADMIT)
		return 0;
	__sync_fetch_and_add(&st->refused, 1);
	return 1;
}

/* Sends the connect to the proxy's port on loopback, remembering where it was going. `at_connect`
 * is a constant: only connect hooks may bind (a TCP sendmsg with an address is TCP Fast Open).
 * `reason` goes with the capture-out event (SL_REASON_NO_LISTENER: ambient's fail-closed case).
 */
static __always_inline int cap_redirect(struct bpf_sock_addr *ctx, const struct sl_policy *pol,
					__u64 cookie, struct sl_addr *dst, __u16 *dport,
					__u16 to_port, __u8 kind, int at_connect, __u8 reason)
{
	struct sl_orig_dst *o = NULL;

	if (ctx->sk && cap_handshakes_full()) {
		monitor_emit(ctx, SL_EV_CAPTURE_OUT, SL_REASON_HANDSHAKES_FULL, pol->mode,
			     SL_EAGAIN, dst, *dport, NULL, 0);
		return CAP_REFUSED;
	}
	if (ctx->sk)
		o = bpf_sk_storage_get(&sl_cap_sock, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o) {
		monitor_emit(ctx, SL_EV_BYPASS_OUT, SL_REASON_NO_STORAGE, pol->mode, 0, dst, *dport,
			     NULL, 0);
		return CAP_NONE;
	}
	o->addr = *dst;
	o->port = *dport;
	o->captured = kind;
	if (at_connect)
		cap_bind_pod_source(ctx, pol, dst);
	cap_to_loopback(dst);
	*dport = to_port;
	cap_count(cookie, CAP_STAT_OUTBOUND);
	monitor_emit(ctx, SL_EV_CAPTURE_OUT, reason, pol->mode, 0, &o->addr, o->port, dst, to_port);
	return CAP_REDIRECTED;
}

/* getpeername of a captured socket shows where the app connected, not the proxy (as with NAT). */
static __always_inline int capture_peer(struct bpf_sock_addr *ctx, struct sl_addr *peer, __u16 *port)
{
	struct sl_orig_dst *o;

	if (!ctx->sk || ctx->protocol != IPPROTO_TCP)
		return 0;
	o = bpf_sk_storage_get(&sl_cap_sock, ctx->sk, 0, 0);
	if (!o || !o->captured)
		return 0;
	*peer = o->addr;
	*port = o->port;
	return 1;
}

static __always_inline int cap_is_dns_server(const struct sl_addr *a)
{
	__u32 i;

	if (cfg_n_dns_servers == 0)
		return 1;
	for (i = 0; i < SL_MAX_DNS_SERVERS; i++) {
		/* read through volatile: a plain read of a const object may be folded to its
		 * (all-zero) initializer, ignoring what the agent set before load */
		const volatile __u32 *w = (const volatile __u32 *)cfg_dns_servers[i].b;
		const __u32 *x = (const __u32 *)a->b;

		if (i >= cfg_n_dns_servers)
			break;
		if (w[0] == x[0] && w[1] == x[1] && w[2] == x[2] && w[3] == x[3])
			return 1;
	}
	return 0;
}

/* DNS capture applies to this connect/datagram (port 53 to a resolver, pod opted in)? */
static __always_inline int cap_dns_applies(const struct sl_policy *pol, const struct sl_addr *dst,
					   __u16 dport)
{
	return (pol->flags & SL_POL_DNS) && dport == SL_PORT_DNS && cap_is_dns_server(dst);
}

/* A live listener of the proxy on {netns, port} of this family (IPv4 falls back to a dual-stack
 * IPv6 listener), from any slot; NULL when none. The caller releases the socket.
 */
static __always_inline struct bpf_sock *cap_listener(__u64 cookie, __u16 port, int v4)
{
	struct sl_listener_key key = {.netns_cookie = cookie, .port = port};
	struct bpf_sock *sk;
	__u32 i;

	for (i = 0; i < 2 * SL_LISTENER_SLOTS; i++) {
		key.family = (v4 && i < SL_LISTENER_SLOTS) ? 4 : 6;
		key.slot = i % SL_LISTENER_SLOTS;
		if (!v4 && i >= SL_LISTENER_SLOTS)
			break;
		sk = bpf_map_lookup_elem(&sl_listeners, &key);
		if (sk)
			return sk;
	}
	return NULL;
}

/* The node proxy's own sockets carry its mark (Istio's ztunnel: 0x539/0xfff). */
static __always_inline int cap_is_proxy_marked(struct bpf_sock *sk)
{
	return sk &&
	       (SL_LOAD(sk->mark) & cfg_proxy_mark_mask) == (cfg_proxy_mark & cfg_proxy_mark_mask);
}

/* A sidecar in TPROXY mode connecting to its app from a client's address (Envoy's original_src). */
static __always_inline int cap_is_tproxy_marked(struct bpf_sock *sk)
{
	return sk && SL_LOAD(sk->mark) == SL_TPROXY_MARK;
}

/*
 * UDP DNS capture at sendmsg/connect (Istio's ISTIO_OUTPUT_DNS for sidecars, the in-pod DNS rule
 * for ambient): a query of the app to a resolver goes to the proxy's DNS port on loopback; the
 * proxy's own queries (sidecar: its uid/gid; ambient: the node proxy's mark) do not. Ambient
 * takes every resolver that is not one of the pod's own addresses (Istio: "! -o lo"). The reply is
 * shown as coming from the resolver through the same reverse entries socket-LB uses.
 */
static __always_inline int capture_dns_udp(struct bpf_sock_addr *ctx, struct sl_addr *dst,
					   __u16 *dport)
{
	struct sl_policy *pol;
	struct sl_addr to;
	__u64 cookie, uidgid;
	__u8 why = SL_REASON_NONE;
	int ret = CAP_NONE;

	if (ctx->protocol != IPPROTO_UDP || *dport != SL_PORT_DNS)
		return CAP_NONE;
	cookie = bpf_get_netns_cookie(ctx);
	pol = bpf_map_lookup_elem(&sl_endpoints, &cookie);
	if (!pol || !(pol->flags & SL_POL_DNS))
		return CAP_NONE;
	if (pol->mode == SL_MODE_AMBIENT) {
		if (cap_is_proxy_marked(ctx->sk)) {
			why = SL_REASON_PROXY_MARK;
			ret = CAP_PROXY;
		} else if (addr_is_loopback(dst) || cap_is_pod_ip(pol, dst)) {
			why = SL_REASON_LOCAL;
		}
	} else if (pol->mode == SL_MODE_SIDECAR) {
		/* excludeOutboundPorts applies to UDP too (Istio: "-p udp --dport P -j RETURN") */
		if (cap_port_in(pol->exclude_out_ports, pol->n_exclude_out_ports, *dport)) {
			why = SL_REASON_EXCLUDED_PORT;
		} else if (!cap_is_dns_server(dst)) {
			why = SL_REASON_NOT_DNS_SERVER;
		} else {
			uidgid = bpf_get_current_uid_gid();
			if ((__u32)uidgid == cap_proxy_uid(pol)) {
				why = SL_REASON_PROXY_UID;
				ret = CAP_PROXY;
			} else if ((__u32)(uidgid >> 32) == cap_proxy_gid(pol)) {
				why = SL_REASON_PROXY_GID;
				ret = CAP_PROXY;
			}
		}
	} else {
		return CAP_NONE;
	}
	if (why != SL_REASON_NONE) {
		monitor_emit(ctx, SL_EV_BYPASS_OUT, why, pol->mode, 0, dst, *dport, NULL, 0);
		return ret;
	}
	to = *dst;
	cap_to_loopback(&to);
	monitor_emit(ctx, SL_EV_CAPTURE_OUT, SL_REASON_NONE, pol->mode, 0, dst, *dport, &to,
		     pol->dns_port);
	*dst = to;
	*dport = pol->dns_port;
	cap_count(cookie, CAP_STAT_OUTBOUND);
	return CAP_REDIRECTED;
}

/* The source address the socket is bound to, if any (Envoy binds 127.0.0.6 for passthrough). */
static __always_inline int cap_bound_to_inbound_passthrough(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return 0;
	if (ctx->user_family == 2 /* AF_INET */)
		return SL_LOAD(sk->src_ip4) == bpf_htonl(0x7f000006);
	return SL_LOAD(sk->src_ip6[0]) == 0 && SL_LOAD(sk->src_ip6[1]) == 0 &&
	       SL_LOAD(sk->src_ip6[2]) == 0 && SL_LOAD(sk->src_ip6[3]) == bpf_htonl(6);
}

/*
 * Ambient outbound (Istio's in-pod rules for ztunnel, in their order): the node proxy's own
 * (marked) sockets are left alone; with DNS capture, TCP port 53 not to 127.0.0.1 / ::1 goes to
 * the proxy's DNS port; TCP to the pod's own addresses stays local; anything else goes to the
 * node proxy's 15001 socket inside the pod's namespace. No listener there: the connect is still
 * sent to 15001 and refused (fail closed: nothing leaves the pod around the proxy), and counted.
 */
static __always_inline int capture_connect_ambient(struct bpf_sock_addr *ctx,
						   const struct sl_policy *pol, __u64 cookie,
						   struct sl_addr *dst, __u16 *dport, int at_connect)
{
	__u8 why = SL_REASON_NONE;
	struct bpf_sock *l;

	if (cap_is_proxy_marked(ctx->sk)) {
		cap_count(cookie, CAP_STAT_BYPASS);
		monitor_emit(ctx, SL_EV_BYPASS_OUT, SL_REASON_PROXY_MARK, pol->mode, 0, dst, *dport,
			     NULL, 0);
		return CAP_PROXY;
	}
	if ((pol->flags & SL_POL_DNS) && *dport == SL_PORT_DNS && !cap_is_localhost1(dst))
		return cap_redirect(ctx, pol, cookie, dst, dport, pol->dns_port, 1, at_connect,
				    SL_REASON_NONE);
	if (addr_is_loopback(dst) || cap_is_pod_ip(pol, dst)) {
		monitor_emit(ctx, SL_EV_BYPASS_OUT, SL_REASON_LOCAL, pol->mode, 0, dst, *dport,
			     NULL, 0);
		return CAP_NONE;
	}
	l = cap_listener(cookie, pol->outbound_port, addr_is_mapped_v4(dst));
	if (l) {
		bpf_sk_release(l);
	} else {
		cap_count(cookie, CAP_STAT_NO_LISTENER);
		why = SL_REASON_NO_LISTENER;
	}
	return cap_redirect(ctx, pol, cookie, dst, dport, pol->outbound_port, 1, at_connect, why);
}

/* A rule's outcome and the reason it reports (see capture_sidecar_nat). */
static __always_inline int cap_why(__u8 *why, __u8 reason, int ret)
{
	*why = reason;
	return ret;
}

/*
 * The outbound rules of Istio's ISTIO_OUTPUT chain (istio-iptables' nat table, the same in
 * REDIRECT and TPROXY mode), in its order:
 *   1. excluded outbound ports: RETURN
 *   2. to a local address, bound to 127.0.0.6 / ::6 (Envoy's inbound passthrough): RETURN
 *   3. the proxy uid to a local address other than 127.0.0.1, not port 15008 (nor 53 with DNS
 *      capture): to the inbound port 15006
 *   4. another uid to a local address (with DNS capture: not TCP port 53): RETURN
 *   5. the proxy uid: RETURN
 *   6. the proxy gid to a local address other than 127.0.0.1, not port 15008 (53 included: Istio's
 *      gid rule has no DNS exception): to 15006
 *   7. another gid to a local address (with DNS capture: not TCP port 53): RETURN
 *   8. the proxy gid: RETURN
 *   9. DNS capture: TCP port 53 (to the pod's resolvers, or any with capture-all): to 15053
 *  10. 127.0.0.1: RETURN
 *  11. excluded ranges: RETURN; 12. included ports: to 15001; 13. included ranges or "*": 15001.
 * Rules 4 and 7 are left out when an included range covers loopback (Istio's HasLoopBackIP).
 * "-o lo" is "the destination is one of this namespace's addresses": loopback or a pod IP.
 * Returns CAP_PROXY (uncounted) for rules 5 and 8. When it returns CAP_NONE or CAP_PROXY by a
 * rule, *why says which (enum sl_event_reason); cap_redirect reports its own outcomes.
 */
static __always_inline int capture_sidecar_nat(struct bpf_sock_addr *ctx,
					       const struct sl_policy *pol, __u64 cookie,
					       struct sl_addr *dst, __u16 *dport, int at_connect,
					       int local, int is_uid, int is_gid, __u8 *why)
{
	int dns53, to_inbound, lo_ranges;

	if (cap_port_in(pol->exclude_out_ports, pol->n_exclude_out_ports, *dport)) /* 1 */
		return cap_why(why, SL_REASON_EXCLUDED_PORT, CAP_NONE);
	if (local && cap_bound_to_inbound_passthrough(ctx)) /* 2 */
		return cap_why(why, SL_REASON_INBOUND_PASSTHROUGH, CAP_NONE);
	dns53 = (pol->flags & SL_POL_DNS) && *dport == SL_PORT_DNS;
	lo_ranges = pol->flags & SL_POL_LOOPBACK_RANGE;
	to_inbound = local && !cap_is_localhost1(dst) && *dport != SL_PORT_HBONE;
	if (is_uid && to_inbound && !dns53) /* 3 */
		return cap_redirect(ctx, pol, cookie, dst, dport, pol->inbound_port, 2, at_connect,
				    SL_REASON_NONE);
	if (!lo_ranges && local && !dns53 && !is_uid) /* 4 */
		return cap_why(why, SL_REASON_LOCAL, CAP_NONE);
	if (is_uid) /* 5 */
		return cap_why(why, SL_REASON_PROXY_UID, CAP_PROXY);
	if (is_gid && to_inbound) /* 6 */
		return cap_redirect(ctx, pol, cookie, dst, dport, pol->inbound_port, 2, at_connect,
				    SL_REASON_NONE);
	if (!lo_ranges && local && !dns53) /* 7: the gid is not the proxy's here */
		return cap_why(why, SL_REASON_LOCAL, CAP_NONE);
	if (is_gid) /* 8 */
		return cap_why(why, SL_REASON_PROXY_GID, CAP_PROXY);
	if (dns53 && cap_is_dns_server(dst)) /* 9 */
		return cap_redirect(ctx, pol, cookie, dst, dport, pol->dns_port, 1, at_connect,
				    SL_REASON_NONE);
	if (cap_is_localhost1(dst)) /* 10 */
		return cap_why(why, SL_REASON_LOOPBACK, CAP_NONE);
	if (cap_cidr_in(pol->exclude_cidrs, pol->n_exclude_cidrs, dst)) /* 11 */
		return cap_why(why, SL_REASON_EXCLUDED_CIDR, CAP_NONE);
	if (cap_port_in(pol->include_out_ports, pol->n_include_out_ports, *dport)) /* 12 */
		return cap_redirect(ctx, pol, cookie, dst, dport, pol->outbound_port, 1, at_connect,
				    SL_REASON_NONE);
	if ((pol->flags & SL_POL_OUT_ALL) ||
	    cap_cidr_in(pol->include_cidrs, pol->n_include_cidrs, dst)) /* 13 */
		return cap_redirect(ctx, pol, cookie, dst, dport, pol->outbound_port, 1, at_connect,
				    SL_REASON_NONE);
	return cap_why(why, SL_REASON_NOT_INCLUDED, CAP_NONE);
}

/*
 * TPROXY mode adds a path the nat rules do not have (istio-iptables' mangle table): the proxy's
 * own TCP to a local address other than 127.0.0.1 is marked 1338 on its way out ("-o lo
 * --uid-owner/--gid-owner", skipped for sockets carrying the TPROXY mark 1337), and ISTIO_INBOUND
 * then sends such packets to 15006 with the TPROXY target, unless they come from 127.0.0.6 / ::6
 * or their port is not captured inbound. What the nat rules did not redirect (rules 1, 4, 5, 7, 8
 * above: a gid-only proxy's connect to its own pod IP, the uid's to port 15008 ...) thus still
 * reaches the inbound port. ("! -d 127.0.0.1" also keeps what nat redirected out: REDIRECT has
 * rewritten those to 127.0.0.1 by then.)
 */
static __always_inline int cap_tproxy_inbound(struct bpf_sock_addr *ctx, const struct sl_policy *pol,
					      const struct sl_addr *dst, __u16 dport, int local,
					      int proxy)
{
	return (pol->flags & SL_POL_TPROXY) && proxy && local && !cap_is_localhost1(dst) &&
	       !cap_is_tproxy_marked(ctx->sk) && !cap_bound_to_inbound_passthrough(ctx) &&
	       cap_inbound_port(pol, dport);
}

/* Outbound capture of a pod in sidecar or ambient mode (see the two functions above). */
static __always_inline int capture_connect(struct bpf_sock_addr *ctx, struct sl_addr *dst,
					   __u16 *dport, int at_connect)
{
	struct sl_policy *pol;
	__u64 cookie, uidgid;
	int local, is_uid, is_gid, ret;
	__u8 why = SL_REASON_NONE;

	if (ctx->protocol != IPPROTO_TCP)
		return CAP_NONE;
	cookie = bpf_get_netns_cookie(ctx);
	pol = bpf_map_lookup_elem(&sl_endpoints, &cookie);
	if (!pol)
		return CAP_NONE;
	if (pol->mode == SL_MODE_AMBIENT)
		return capture_connect_ambient(ctx, pol, cookie, dst, dport, at_connect);
	if (pol->mode != SL_MODE_SIDECAR)
		return CAP_NONE;
	local = addr_is_loopback(dst) || cap_is_pod_ip(pol, dst);
	uidgid = bpf_get_current_uid_gid();
	is_uid = (__u32)uidgid == cap_proxy_uid(pol);
	is_gid = (__u32)(uidgid >> 32) == cap_proxy_gid(pol);
	ret = capture_sidecar_nat(ctx, pol, cookie, dst, dport, at_connect, local, is_uid, is_gid,
				  &why);
	if ((ret == CAP_NONE || ret == CAP_PROXY) &&
	    cap_tproxy_inbound(ctx, pol, dst, *dport, local, is_uid || is_gid))
		return cap_redirect(ctx, pol, cookie, dst, dport, pol->inbound_port, 2, at_connect,
				    SL_REASON_NONE);
	if (ret == CAP_PROXY)
		cap_count(cookie, CAP_STAT_BYPASS);
	if (why != SL_REASON_NONE)
		monitor_emit(ctx, SL_EV_BYPASS_OUT, why, pol->mode, 0, dst, *dport, NULL, 0);
	return ret;
}

/* lo is ifindex 1 in every network namespace */
#define SL_LOOPBACK_IFINDEX 1

/* Inbound left alone in a captured pod, and why (into *why when the caller asks). */
static __always_inline int cap_in_pass(__u8 *why, __u8 reason)
{
	if (why)
		*why = reason;
	return CAP_IN_PASS;
}

/*
 * The inbound decision (Istio's ISTIO_INBOUND, made at sk_lookup, where the packet is not changed
 * so the accepted socket keeps the original destination as its local address): does a TCP
 * connection to local:port from remote:peer_port, arriving on ingress_ifindex, go to the inbound
 * listener of the pod that owns `local`? CAP_IN_STEER names that pod in *cookie and *pol. When a
 * captured pod's connection is passed, *why (unless NULL) says why; it is left alone otherwise.
 */
static __always_inline int capture_inbound(const struct sl_addr *local, const struct sl_addr *remote,
					   __u16 port, __u16 peer_port, __u32 ingress_ifindex,
					   __u64 *cookie, struct sl_policy **pol, __u8 *why)
{
	struct sl_flow_key flow = {};
	struct sl_policy *p;
	__u8 skip;
	__u64 *c;

	if (addr_is_loopback(local))
		return CAP_IN_PASS;
	c = bpf_map_lookup_elem(&sl_pod_ips, local);
	if (!c)
		return CAP_IN_PASS;
	p = bpf_map_lookup_elem(&sl_endpoints, c);
	if (!p || p->mode == SL_MODE_NONE)
		return CAP_IN_PASS;
	/* Connections from the pod itself never pass PREROUTING, where Istio's inbound chain is.
	 * Looped-back packets report the device holding the destination address (eth0), not lo, as
	 * their ingress interface, so the source tells: loopback, a pod IP, Envoy's passthrough
	 * source ::6, or a flow recorded in sl_bypass_flows (below).
	 */
	if (ingress_ifindex == SL_LOOPBACK_IFINDEX || addr_is_loopback(remote) ||
	    addr_is_v6_passthrough(remote) || cap_is_pod_ip(p, remote))
		return cap_in_pass(why, SL_REASON_FROM_POD);
	/* the node's own sockets and the proxy's own hand-off to the app (see capture_bypass_flow) */
	flow.pod = *local;
	flow.peer = *remote;
	flow.pod_port = port;
	flow.peer_port = peer_port;
	if (bpf_map_lookup_elem(&sl_bypass_flows, &flow))
		return cap_in_pass(why, SL_REASON_BYPASS_FLOW);
	if (p->mode == SL_MODE_AMBIENT) {
		/* HBONE reaches the node proxy's own 15008 socket; ambient.istio.io/
		 * bypass-inbound-capture leaves inbound alone; Istio's SNAT address for probes */
		if (port == SL_PORT_HBONE)
			return cap_in_pass(why, SL_REASON_HBONE);
		if (p->flags & SL_POL_NO_INBOUND)
			return cap_in_pass(why, SL_REASON_NO_INBOUND);
		if (addr_is_mapped_v4(remote) && addr_v4(remote) == bpf_htonl(0xa9fe077f))
			return cap_in_pass(why, SL_REASON_PROBE_SNAT);
	} else {
		skip = cap_inbound_port_skip(p, port);
		if (skip != SL_REASON_NONE)
			return cap_in_pass(why, skip);
	}
	*cookie = *c;
	*pol = p;
	return CAP_IN_STEER;
}

/*
 * Connections inbound capture must leave alone, decided when they are opened (the packet alone
 * cannot tell): the node's own sockets connecting to an ambient pod (kubelet probes, hostNetwork
 * pods; Istio SNATs exactly these, "-m owner --socket-exists"), and the proxy's own marked
 * connection to its pod's app from a client's address (ztunnel's source-preserving inbound,
 * which loops back through the pod's lo; Envoy's in TPROXY mode). Traffic merely forwarded through
 * the node with a node source address has no such socket and is captured. `netns`: the socket's
 * network namespace; `node_proxy`, `tproxy`: it carries the node proxy's mark, Envoy's TPROXY
 * mark; `pod`: where it connects.
 */
static __always_inline int capture_bypass_flow(__u64 netns, int node_proxy, int tproxy,
					       const struct sl_addr *pod)
{
	int host = netns == cfg_host_netns_cookie;
	struct sl_policy *pol;
	__u64 *cookie;

	if (!host && !node_proxy && !tproxy)
		return 0;
	cookie = bpf_map_lookup_elem(&sl_pod_ips, pod);
	if (!cookie || (!host && *cookie != netns))
		return 0;
	pol = bpf_map_lookup_elem(&sl_endpoints, cookie);
	if (!pol)
		return 0;
	/* the node's sockets and ztunnel's mark count for ambient pods, Envoy's TPROXY mark for
	 * sidecars in TPROXY mode */
	if (pol->mode == SL_MODE_AMBIENT)
		return host || node_proxy;
	return pol->mode == SL_MODE_SIDECAR && !host && tproxy && (pol->flags & SL_POL_TPROXY);
}

#endif /* SLUICE_CAPTURE_H */
