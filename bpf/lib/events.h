/* The datapath's decisions as events for `sluice monitor`: the ring buffer they are queued in, the
 * gate that says whether anyone reads it, and the emitters. Included by bpf/lib/lb.h,
 * bpf/lib/capture.h and bpf/lib/sock_destroy.h; every object shares the three maps through their
 * pins, so one ring carries the whole node's events.
 * Events cost only while a monitor is attached: with the gate closed an emitter is one array
 * lookup. Built with -DSL_NO_EVENTS (the benchmark's baseline, build/bpf-noev) emitters are nothing.
 */
#ifndef SLUICE_EVENTS_H
#define SLUICE_EVENTS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "addr.h"
#include "shared.h"
#include "verdicts.h"

/* The default size of sl_events (monitor-ring-bytes): a power of two, a multiple of the page. */
#define SL_EVENTS_RING_BYTES (512 * 1024)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SL_EVENTS_RING_BYTES);
} sl_events SEC(".maps");

/* The gate: 1 while a monitor reads sl_events (the agent sets it), 0 otherwise. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} sl_monitor SEC(".maps");

/* Events dropped because the ring was full (the reader fell behind). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sl_events_lost SEC(".maps");

/* A zeroed event of this type and reason to fill and monitor_submit, or NULL: the gate is closed
 * (one array lookup, the whole cost then) or the ring is full (counted in sl_events_lost).
 */
static __always_inline struct sl_event *monitor_reserve(__u8 type, __u8 reason)
{
#ifdef SL_NO_EVENTS
	return NULL;
#else
	__u32 zero = 0;
	__u32 *open = bpf_map_lookup_elem(&sl_monitor, &zero);
	struct sl_event *e;
	__u64 *lost;

	if (!open || !*open)
		return NULL;
	e = bpf_ringbuf_reserve(&sl_events, sizeof(*e), 0);
	if (!e) {
		lost = bpf_map_lookup_elem(&sl_events_lost, &zero);
		if (lost)
			*lost += 1;
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->type = type;
	e->reason = reason;
	return e;
#endif
}

/*
 * Queues the event. The reader is not woken for it (an epoll wakeup and a trip through user space
 * per decision doubled connect latency): the feed drains the ring on a short timer
 * (src/bpf/event-feed.ts), and a submit wakes the reader only once a quarter of the ring is unread,
 * so a burst is read well before the ring fills.
 */
static __always_inline void monitor_submit(struct sl_event *e)
{
	__u64 unread = bpf_ringbuf_query(&sl_events, BPF_RB_AVAIL_DATA);
	__u64 size = bpf_ringbuf_query(&sl_events, BPF_RB_RING_SIZE);

	bpf_ringbuf_submit(e, unread > size / 4 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/* The socket's own address and port, when it has one (a connect before bind has not). */
static __always_inline void monitor_sock_src(struct sl_event *e, struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return;
	e->src_port = (__u16)SL_LOAD(sk->src_port);
	if (ctx->user_family == 2 /* AF_INET */) {
		__u32 ip4 = SL_LOAD(sk->src_ip4);

		if (ip4)
			addr_from_v4(&e->src, ip4);
	} else {
		addr_from_words(&e->src, SL_LOAD(sk->src_ip6[0]), SL_LOAD(sk->src_ip6[1]),
				SL_LOAD(sk->src_ip6[2]), SL_LOAD(sk->src_ip6[3]));
	}
}

/*
 * A decision of a sock_addr hook (connect, sendmsg) about the destination dst:dport: sent to
 * to:tport instead (to NULL: not rewritten), refused with err, in a pod of capture mode `mode`.
 */
static __always_inline void monitor_emit(struct bpf_sock_addr *ctx, __u8 type, __u8 reason,
					 __u8 mode, __s32 err, const struct sl_addr *dst,
					 __u16 dport, const struct sl_addr *to, __u16 tport)
{
	struct sl_event *e = monitor_reserve(type, reason);

	if (!e)
		return;
	e->netns_cookie = bpf_get_netns_cookie(ctx);
	e->sock_cookie = bpf_get_socket_cookie(ctx);
	e->proto = (__u8)ctx->protocol;
	e->mode = mode;
	e->err = err;
	monitor_sock_src(e, ctx);
	e->dst = *dst;
	e->dst_port = dport;
	if (to) {
		e->to = *to;
		e->to_port = tport;
	}
	monitor_submit(e);
}

#endif /* SLUICE_EVENTS_H */
