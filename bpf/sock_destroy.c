/* Socket iterators that destroy the sockets socket-LB left on a backend that is gone from its
 * service (bpf/lib/sock_destroy.h). Never attached to a hook: the agent creates an iterator from a
 * thread inside each network namespace (host and every registered pod), after it wrote the
 * departed {frontend, backend} pairs into sl_lb_sock_dead, and reads it to the end. The kfunc
 * bpf_sock_destroy needs Linux >= 6.5; the agent loads this object only when the kernel has it.
 */
#include "lib/sock_destroy.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* TCP: the agent runs it only with bpf-lb-sock-terminate-pod-connections "true". */
SEC("iter/tcp")
int sl_destroy_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct tcp_sock *tp;

	if (!skc)
		return 0;
	/* full sockets only: time-wait and request sockets carry no socket storage */
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	destroy_if_left(ctx->meta, skc, tp, IPPROTO_TCP);
	return 0;
}

/* Connected UDP: always (a DNS client pinned to a deleted CoreDNS pod, cilium#12859). */
SEC("iter/udp")
int sl_destroy_udp(struct bpf_iter__udp *ctx)
{
	struct udp_sock *udp = ctx->udp_sk;

	if (!udp)
		return 0;
	destroy_if_left(ctx->meta, (struct sock_common *)udp, udp, IPPROTO_UDP);
	return 0;
}
