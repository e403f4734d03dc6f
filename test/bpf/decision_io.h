/* The inputs and results of the decision tests: what a test writes into the t_*_in maps before it
 * runs a test program, and what the program leaves in t_*_out. Mirrored by the codecs of
 * test/kernel/decision-programs.ts, whose field tables that test checks against this BTF.
 */
#ifndef SLUICE_TEST_DECISION_IO_H
#define SLUICE_TEST_DECISION_IO_H

#include <linux/types.h>
#include "../../bpf/lib/shared.h"

/* A connect() or sendmsg() as a cgroup sock_addr hook sees it, and what the helpers that need a
 * real socket or the calling task answer (see mocks.h).
 */
struct t_sock_call {
	__u64 netns_cookie;  /* bpf_get_netns_cookie */
	__u64 socket_cookie; /* bpf_get_socket_cookie */
	__u64 now_ns;	     /* bpf_ktime_get_ns */
	__u32 uid;	     /* bpf_get_current_uid_gid, low half */
	__u32 gid;	     /* bpf_get_current_uid_gid, high half */
	__u32 random;	     /* bpf_get_prandom_u32 */
	__u32 family;	     /* ctx->user_family: AF_INET or AF_INET6 */
	__u32 protocol;	     /* ctx->protocol: IPPROTO_TCP or IPPROTO_UDP */
	__u32 at_connect;    /* 1: a connect hook; 0: sendmsg (socket-LB then chooses per flow) */
	__u32 has_sk;	     /* 0: ctx->sk is NULL */
	__u32 no_storage;    /* 1: bpf_sk_storage_get finds no memory */
	__u32 sk_mark;	     /* ctx->sk->mark */
	__u32 sk_src_ip4; /* ctx->sk->src_ip4 (network order): the address the socket is bound to */
	__u32 sk_src_ip6[4]; /* ctx->sk->src_ip6 */
	struct sl_addr dst;  /* where the call goes */
	__u16 dport;	     /* host order */
	__u16 pad;
	__u32 pad2;
};

struct t_sock_result {
	__s32 ret;	    /* the decision's return: enum sl_cap_outcome, or enum sl_verdict */
	__s32 retval;	    /* what it set through bpf_set_retval (0: nothing) */
	struct sl_addr dst; /* the destination as it left it */
	__u16 dport;	    /* host order */
	__u16 bound;	    /* 1: it bound the socket (bpf_bind) */
	struct sl_addr bound_addr;
};

/* A connection sk_lookup sees arriving at a pod (capture_inbound). */
struct t_inbound_call {
	struct sl_addr local;
	struct sl_addr remote;
	__u16 port;	 /* local port */
	__u16 peer_port; /* remote port */
	__u32 ingress_ifindex;
};

struct t_inbound_result {
	__s32 decision; /* enum sl_cap_inbound */
	__u32 pad;
	__u64 cookie; /* the pod's netns cookie, when steered */
};

/* A socket opening a connection, as sockops sees it (capture_bypass_flow). */
struct t_bypass_call {
	__u64 netns_cookie;
	__u32 node_proxy; /* carries the node proxy's mark */
	__u32 tproxy;	  /* carries Envoy's TPROXY mark */
	struct sl_addr pod;
};

struct t_bypass_result {
	__s32 bypass;
};

#endif /* SLUICE_TEST_DECISION_IO_H */
