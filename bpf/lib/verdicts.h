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
	CAP_REFUSED = 3, /* to be captured, but refused at once (EAGAIN): see cap_handshakes_full */
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
	CAP_STAT_OUTBOUND = 0,	  /* outbound */
	CAP_STAT_INBOUND = 1,	  /* inbound */
	CAP_STAT_BYPASS = 2,	  /* proxy_bypass */
	CAP_STAT_NO_LISTENER = 3, /* no_listener */
};

/* Datapath counters, indices into the per-CPU array sl_lb_counters. */
enum sl_counter {
	SL_CNT_TRANSLATED = 0,	/* connect/sendmsg to a VIP rewritten to a backend */
	SL_CNT_NO_BACKEND = 1,	/* VIP without ready backends: refused with ECONNREFUSED */
	SL_CNT_HOSTNS_SKIP = 2, /* VIP hit outside the host netns with hostns-only: untouched */
	SL_CNT_SLOT_MISS = 3,	/* backend slot or backend missing (agent mid-update): untouched */
	SL_CNT_REV_TRANSLATED = 4, /* recvmsg/getpeername rewritten back to the VIP */
	SL_CNT_AFFINITY_HIT = 5,   /* backend taken from a live ClientIP affinity entry */
	SL_CNT_NO_STORAGE = 6,	   /* no socket storage: translated without reverse entry */
	SL_CNT_NO_LOCAL_BACKEND = 7, /* internalTrafficPolicy Local, no endpoint on this node: refused */
	SL_CNT_POD_OPT_OUT = 8, /* VIP hit by a pod annotated socket-lb.sluice.io/disabled: untouched */
	SL_CNT_SOCK_DESTROYED = 9, /* socket destroyed: its backend left the service it was chosen by */
	SL_CNT_MAX = 10,
};

/* What a struct sl_event reports (sluice monitor --type): numbered in the order of
 * EVENT_TYPE_NAMES in src/monitor/types.ts.
 */
enum sl_event_type {
	SL_EV_LB_TRANSLATE = 1, /* connect/sendmsg to a Service frontend rewritten to a backend */
	SL_EV_LB_REFUSE = 2,	/* connect/sendmsg to a Service frontend refused (ECONNREFUSED) */
	SL_EV_CAPTURE_OUT = 3, /* an app's outbound connect sent to its proxy (or refused: EAGAIN) */
	SL_EV_CAPTURE_IN = 4,  /* an inbound connection steered to the proxy's inbound listener */
	SL_EV_BYPASS_OUT = 5, /* outbound left alone, and why (capture, or socket-LB for a frontend) */
	SL_EV_BYPASS_IN = 6,	/* inbound to a captured pod left alone, and why */
	SL_EV_NO_LISTENER = 7,	/* inbound to be captured, but the proxy has no listener: dropped */
	SL_EV_SOCK_DESTROY = 8, /* a socket destroyed because its backend left its Service */
};

/* Why, in struct sl_event.reason (0: nothing to add). Which decision each one explains is said
 * beside it; the TypeScript names (EVENT_REASONS) are these in kebab case.
 */
enum sl_event_reason {
	SL_REASON_NONE = 0,
	/* socket-LB */
	SL_REASON_AFFINITY = 1,	  /* lb-translate: the backend of a live ClientIP affinity entry */
	SL_REASON_NO_BACKEND = 2, /* lb-refuse: no ready endpoint */
	SL_REASON_NO_LOCAL_BACKEND = 3, /* lb-refuse: internalTrafficPolicy Local, none on this node */
	SL_REASON_HOSTNS_ONLY = 4, /* bypass-out: bpf-lb-sock-hostns-only, not the host's netns */
	SL_REASON_POD_OPT_OUT = 5, /* bypass-out: the pod is annotated socket-lb.sluice.io/disabled */
	SL_REASON_SLOT_MISS = 6, /* bypass-out: backend slot or backend missing (agent mid-update) */
	/* outbound capture */
	SL_REASON_HANDSHAKES_FULL = 7, /* capture-out refused with EAGAIN: see cap_handshakes_full */
	SL_REASON_NO_STORAGE = 8, /* bypass-out: no socket storage to keep the original destination */
	SL_REASON_PROXY_UID = 9,      /* bypass-out: the proxy's own connect (its uid) */
	SL_REASON_PROXY_GID = 10,     /* bypass-out: the proxy's own connect (its gid) */
	SL_REASON_PROXY_MARK = 11,    /* bypass-out: the node proxy's own (marked) socket */
	SL_REASON_EXCLUDED_PORT = 12, /* bypass-out/-in: an excluded outbound/inbound port */
	SL_REASON_INBOUND_PASSTHROUGH = 13, /* bypass-out: bound to 127.0.0.6 / ::6 (Envoy's passthrough) */
	SL_REASON_LOCAL = 14,		    /* bypass-out: to an address of the pod itself */
	SL_REASON_LOOPBACK = 15,	    /* bypass-out: to 127.0.0.1 / ::1 */
	SL_REASON_EXCLUDED_CIDR = 16,  /* bypass-out: an excluded outbound range */
	SL_REASON_NOT_INCLUDED = 17,   /* bypass-out/-in: no included range or port covers it */
	SL_REASON_NOT_DNS_SERVER = 18, /* bypass-out: port 53, but not one of the pod's resolvers */
	SL_REASON_NO_LISTENER = 19, /* capture-out (ambient): sent to 15001 where nothing listens */
	/* inbound capture */
	SL_REASON_FROM_POD = 20,    /* bypass-in: from the pod itself (loopback, its own IP, ::6) */
	SL_REASON_BYPASS_FLOW = 21, /* bypass-in: the node's own socket, or the proxy's hand-off */
	SL_REASON_HBONE = 22,	    /* bypass-in: HBONE, to the node proxy's own 15008 socket */
	SL_REASON_NO_INBOUND = 23,  /* bypass-in: ambient.istio.io/bypass-inbound-capture */
	SL_REASON_PROBE_SNAT = 24,  /* bypass-in: from Istio's kubelet-probe SNAT address */
	SL_REASON_PROXY_PORT = 25,  /* bypass-in: one of the sidecar's own ports */
	/* socket destroy */
	SL_REASON_BACKEND_GONE = 26, /* sock-destroy: the backend left the frontend that chose it */
};

#endif /* SLUICE_VERDICTS_H */
