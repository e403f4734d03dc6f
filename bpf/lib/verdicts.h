/* Verdicts, decision outcomes and counter indices of the programs: each one numbered list, all in
 * this one place. Pure C (no helper, no map): included by the headers under bpf/lib, the test
 * programs under test/bpf and test/c/contract-constants.c. Mirrored in src/bpf/layout.ts
 * (COUNTERS) and src/bpf/constants.ts; test/unit/contract-constants.test.ts checks that the two
 * sides match.
 * Numbers are never reused: a retired entry keeps its number.
 */
#ifndef SLUICE_VERDICTS_H
#define SLUICE_VERDICTS_H

/* What a cgroup sock_addr program returns: the call proceeds (its address possibly rewritten),
 * or it fails with the errno the program set through bpf_set_retval.
 */
enum sl_verdict {
	SL_REJECT = 0,
	SL_ALLOW = 1,
};

/* Outcome of the outbound capture decision at connect()/sendmsg() (capture_connect). */
enum sl_cap_outcome {
	CAP_NONE = 0,	    /* not captured: socket-LB may apply */
	CAP_PROXY = 1,	    /* the proxy's own connect: not captured, socket-LB applies */
	CAP_REDIRECTED = 2, /* sent to the proxy: the destination must stay as the app asked */
	CAP_REFUSED = 3,    /* to be captured, but refused at once (EAGAIN): see cap_handshakes_full */
};

/* Outcome of the inbound decision at sk_lookup (capture_inbound). */
enum sl_cap_inbound {
	CAP_IN_PASS = 0,  /* the connection goes where the kernel would send it */
	CAP_IN_STEER = 1, /* to the proxy's inbound listener (dropped when it has none) */
};

/* Per-pod capture counters: which member of struct sl_ep_stats cap_count increments, in the
 * order of its members.
 */
enum sl_ep_stat {
	CAP_STAT_OUTBOUND = 0,	   /* outbound */
	CAP_STAT_INBOUND = 1,	   /* inbound */
	CAP_STAT_BYPASS = 2,	   /* proxy_bypass */
	CAP_STAT_NO_LISTENER = 3, /* no_listener */
};

/* Datapath counters, indices into the per-CPU array sl_lb_counters. */
enum sl_counter {
	SL_CNT_TRANSLATED = 0,	   /* connect/sendmsg to a VIP rewritten to a backend */
	SL_CNT_NO_BACKEND = 1,	   /* VIP without ready backends: refused with ECONNREFUSED */
	SL_CNT_HOSTNS_SKIP = 2,	   /* VIP hit outside the host netns with hostns-only: untouched */
	SL_CNT_SLOT_MISS = 3,	   /* backend slot or backend missing (agent mid-update): untouched */
	SL_CNT_REV_TRANSLATED = 4, /* recvmsg/getpeername rewritten back to the VIP */
	SL_CNT_AFFINITY_HIT = 5,   /* backend taken from a live ClientIP affinity entry */
	SL_CNT_NO_STORAGE = 6,	   /* no socket storage: translated without reverse entry */
	SL_CNT_NO_LOCAL_BACKEND = 7, /* internalTrafficPolicy Local, no endpoint on this node: refused */
	SL_CNT_POD_OPT_OUT = 8,	     /* VIP hit by a pod annotated socket-lb.sluice.io/disabled: untouched */
	SL_CNT_SOCK_DESTROYED = 9,   /* socket destroyed: its backend left the service it was chosen by */
	SL_CNT_MAX = 10,
};

#endif /* SLUICE_VERDICTS_H */
