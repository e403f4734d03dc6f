/* BPF_PROG_RUN tests of the capture decisions of bpf/lib/capture.h, run by
 * test/kernel/capture-decisions.test.ts: the outbound decision at connect/sendmsg (Istio's
 * ISTIO_OUTPUT order, ambient's rules, DNS), the inbound decision at sk_lookup (ISTIO_INBOUND) and
 * which connections inbound capture leaves alone. tc programs, run on a dummy packet: each reads
 * its case from a t_*_in map and leaves the result in t_*_out (see decision_io.h).
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "mocks.h"
#include "../../bpf/lib/capture.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int t_capture_connect(struct __sk_buff *skb)
{
	struct t_sock_call *c = t_io(&t_sock_in);
	struct t_sock_result *r = t_io(&t_sock_out);
	struct bpf_sock_addr sa = {};
	struct bpf_sock sk = {};
	struct sl_addr dst;
	__u16 dport;

	if (!c || !r)
		return -1;
	t_sock_addr(c, &sa, &sk);
	dst = c->dst;
	dport = c->dport;
	if (c->protocol == IPPROTO_TCP)
		r->ret = capture_connect(&sa, &dst, &dport, c->at_connect);
	else
		r->ret = capture_dns_udp(&sa, &dst, &dport);
	r->dst = dst;
	r->dport = dport;
	return 0;
}

SEC("tc")
int t_capture_inbound(struct __sk_buff *skb)
{
	struct t_inbound_call *c = t_io(&t_inbound_in);
	struct t_inbound_result *r = t_io(&t_inbound_out);
	struct sl_policy *pol = NULL;
	__u64 cookie = 0;

	if (!c || !r)
		return -1;
	r->decision = capture_inbound(&c->local, &c->remote, c->port, c->peer_port,
				      c->ingress_ifindex, &cookie, &pol, NULL);
	r->cookie = cookie;
	return 0;
}

SEC("tc")
int t_capture_bypass(struct __sk_buff *skb)
{
	struct t_bypass_call *c = t_io(&t_bypass_in);
	struct t_bypass_result *r = t_io(&t_bypass_out);

	if (!c || !r)
		return -1;
	r->bypass = capture_bypass_flow(c->netns_cookie, c->node_proxy, c->tproxy, &c->pod);
	return 0;
}
