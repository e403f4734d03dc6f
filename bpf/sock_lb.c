/* The cgroup sock_addr hooks for IPv4 and IPv6: socket-level service load balancing, and the
 * outbound half of mesh capture, which must decide first. connect/sendmsg rewrite a Service VIP
 * to a backend; recvmsg/getpeername rewrite it back. A meshed app's connect goes to its proxy
 * with the VIP untranslated; the proxy's own connects get socket-LB.
 */
#include "lib/capture.h"
#include "lib/lb.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Capture decides first; what it redirects is not load-balanced (the proxy must see the VIP).
 * Returns a CAP_* outcome.
 */
static __always_inline int sock_capture(struct bpf_sock_addr *ctx, struct sl_addr *dst, __u16 *port,
					int at_connect)
{
	struct sl_addr orig = *dst;
	__u16 orig_port = *port;
	struct sl_backend proxy = {};

	if (ctx->protocol == IPPROTO_TCP)
		return capture_connect(ctx, dst, port, at_connect);
	if (capture_dns_udp(ctx, dst, port) != CAP_REDIRECTED)
		return CAP_NONE;
	/* replies from the proxy's DNS port show the resolver, like a VIP's replies show the VIP */
	proxy.ip = *dst;
	proxy.port = *port;
	lb_rev_remember(ctx, &proxy, &orig, orig_port);
	return CAP_REDIRECTED;
}

static __always_inline int sock4_forward(struct bpf_sock_addr *ctx, int per_flow)
{
	struct sl_addr dst;
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	int verdict = SL_ALLOW, cap;

	addr_from_v4(&dst, ctx->user_ip4);
	cap = sock_capture(ctx, &dst, &port, !per_flow);
	if (cap == CAP_REFUSED) {
		bpf_set_retval(-SL_EAGAIN);
		return SL_REJECT;
	}
	if (cap != CAP_REDIRECTED)
		verdict = lb_translate(ctx, &dst, &port, per_flow);
	if (verdict == SL_ALLOW) {
		ctx->user_ip4 = addr_v4(&dst);
		ctx->user_port = bpf_htons(port);
	}
	return verdict;
}

static __always_inline int sock6_forward(struct bpf_sock_addr *ctx, int per_flow)
{
	struct sl_addr dst;
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	int verdict = SL_ALLOW, cap;

	lb_addr_from_v6(&dst, ctx);
	cap = sock_capture(ctx, &dst, &port, !per_flow);
	if (cap == CAP_REFUSED) {
		bpf_set_retval(-SL_EAGAIN);
		return SL_REJECT;
	}
	if (cap != CAP_REDIRECTED)
		verdict = lb_translate(ctx, &dst, &port, per_flow);
	if (verdict == SL_ALLOW) {
		lb_addr_to_v6(ctx, &dst);
		ctx->user_port = bpf_htons(port);
	}
	return verdict;
}

static __always_inline int sock4_reverse(struct bpf_sock_addr *ctx)
{
	struct sl_addr src;
	__u16 port = bpf_ntohs((__u16)ctx->user_port);

	addr_from_v4(&src, ctx->user_ip4);
	if (capture_peer(ctx, &src, &port) || lb_rev_lookup(ctx, &src, &port)) {
		ctx->user_ip4 = addr_v4(&src);
		ctx->user_port = bpf_htons(port);
	}
	return SL_ALLOW;
}

static __always_inline int sock6_reverse(struct bpf_sock_addr *ctx)
{
	struct sl_addr src;
	__u16 port = bpf_ntohs((__u16)ctx->user_port);

	lb_addr_from_v6(&src, ctx);
	if (capture_peer(ctx, &src, &port) || lb_rev_lookup(ctx, &src, &port)) {
		lb_addr_to_v6(ctx, &src);
		ctx->user_port = bpf_htons(port);
	}
	return SL_ALLOW;
}

SEC("cgroup/connect4")
int sl_connect4(struct bpf_sock_addr *ctx)
{
	return sock4_forward(ctx, 0);
}

SEC("cgroup/connect6")
int sl_connect6(struct bpf_sock_addr *ctx)
{
	return sock6_forward(ctx, 0);
}

SEC("cgroup/sendmsg4")
int sl_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_forward(ctx, 1);
}

SEC("cgroup/sendmsg6")
int sl_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock6_forward(ctx, 1);
}

SEC("cgroup/recvmsg4")
int sl_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_reverse(ctx);
}

SEC("cgroup/recvmsg6")
int sl_recvmsg6(struct bpf_sock_addr *ctx)
{
	return sock6_reverse(ctx);
}

SEC("cgroup/getpeername4")
int sl_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock4_reverse(ctx);
}

SEC("cgroup/getpeername6")
int sl_getpeername6(struct bpf_sock_addr *ctx)
{
	return sock6_reverse(ctx);
}
