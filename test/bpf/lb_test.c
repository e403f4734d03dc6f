/* BPF_PROG_RUN tests of socket-LB's backend selection (lb_translate in bpf/lib/lb.h), run by
 * test/kernel/lb-decisions.test.ts: services without backends, without local backends, slots, per
 * flow choice, ClientIP affinity and its expiry, hostns-only. A tc program, run on a dummy packet:
 * it reads its case from t_sock_in and leaves the result in t_sock_out (see decision_io.h).
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "mocks.h"
#include "../../bpf/lib/lb.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int t_lb_translate(struct __sk_buff *skb)
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
	r->ret = lb_translate(&sa, &dst, &dport, !c->at_connect);
	r->dst = dst;
	r->dport = dport;
	return 0;
}
