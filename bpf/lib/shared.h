/* Map keys and values shared by the eBPF programs and user space.
 * Holds only layouts: included by bpf/ programs and mirrored by src/bpf/layout.ts, whose field
 * tables test/unit/contract-layout.test.ts checks against the objects' BTF. Counters and other
 * numbered lists are in verdicts.h. Little-endian hosts only (as the TypeScript codecs assume).
 */
#ifndef SLUICE_SHARED_H
#define SLUICE_SHARED_H

#include <linux/types.h>

/* An IP address in network byte order. IPv4 is stored IPv4-mapped (::ffff:a.b.c.d), so one map
 * serves both families and a dual-stack socket connecting to ::ffff:VIP is translated as well.
 */
struct sl_addr {
	__u8 b[16];
} __attribute__((aligned(4)));

/* Service map key. slot 0 is the service itself; slots 1..count name its backends. Ports are in
 * host byte order so that `bpftool map dump` shows the numbers operators know.
 */
struct sl_svc_key {
	struct sl_addr vip;
	__u16 port;
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
	__u16 slot;
	__u16 pad2;
};

#define SL_SVC_F_AFFINITY (1 << 0) /* sessionAffinity: ClientIP */
#define SL_SVC_F_EXTERNAL (1 << 1) /* an externalIP or LoadBalancer IP rather than a ClusterIP */
/* count is 0 because internalTrafficPolicy is Local and only other nodes have usable endpoints
 * (refused and counted as SL_CNT_NO_LOCAL_BACKEND, not SL_CNT_NO_BACKEND)
 */
#define SL_SVC_F_NO_LOCAL (1 << 2)
/* a nodePort: the key's vip is the unspecified address of its family (::ffff:0.0.0.0 or ::), and
 * it serves connects to any of the node's addresses (sl_node_ips) on that port, and to loopback
 * from the node's own network namespace
 */
#define SL_SVC_F_NODEPORT (1 << 3)

struct sl_svc_val {
	__u32 id;	  /* slot 0: service id (affinity key); slot > 0: backend id */
	__u16 count;	  /* slot 0: number of backend slots; 0 means refuse (no usable endpoint) */
	__u16 flags;	  /* slot 0: SL_SVC_F_* */
	__u32 affinity_s; /* slot 0: ClientIP affinity timeout in seconds */
};

struct sl_backend {
	struct sl_addr ip;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

/* Session affinity is keyed by the client's network namespace: at the socket layer the client's
 * source address is not chosen yet, and one pod is one netns.
 */
struct sl_affinity_key {
	__u64 netns_cookie;
	__u32 svc_id;
	__u32 pad;
};

struct sl_affinity_val {
	__u64 last_ns; /* bpf_ktime_get_ns() of the last use */
	__u32 backend_id;
	__u32 pad;
};

/* Reverse translation, kept in socket-local storage so it is freed with the socket (no leaked
 * entries, unlike a global map keyed by socket cookie). A UDP socket may talk to several
 * services; the slots are reused round-robin. The same pairs tell the socket-destroy iterators
 * which frontend chose the backend a socket is connected to. Unchanged since v0.1.0, and to be kept
 * so: socket storage cannot be migrated, and a new layout would cost every live socket its entry.
 */
#define SL_SOCK_REV_SLOTS 8

struct sl_sock_rev_entry {
	struct sl_addr backend;
	struct sl_addr vip;
	__u16 backend_port;
	__u16 vip_port;
};

struct sl_sock_rev {
	__u32 next;
	__u32 used;
	struct sl_sock_rev_entry e[SL_SOCK_REV_SLOTS];
};

/* A backend that left a service frontend, keying sl_lb_sock_dead while the agent destroys the
 * sockets that frontend translated to it (bpf/sock_destroy.c). Addresses as in sl_sock_rev_entry:
 * vip/vip_port is the frontend's key (a nodePort's is the unspecified address of its family).
 */
struct sl_dead_key {
	struct sl_addr vip;
	struct sl_addr backend;
	__u16 vip_port;
	__u16 backend_port;
	__u8 proto;
	__u8 pad[3];
};

/* What the socket-destroy iterators write for each socket they destroyed (one record each): the
 * agent counts them and logs the peers.
 */
struct sl_destroyed {
	struct sl_addr peer; /* the backend the socket was connected to */
	struct sl_addr vip;  /* the address it had dialed */
	__u16 peer_port;
	__u16 vip_port;
	__u8 proto;
	__u8 pad[3];
};
/* only ever a local variable, so absent from the objects' BTF: its size is checked here instead */
_Static_assert(sizeof(struct sl_destroyed) == 40,
	       "struct sl_destroyed is mirrored by destroyedCodec");

/* One datapath decision, as the programs queue it in the ring buffer sl_events while a monitor
 * is attached (bpf/lib/events.h); decoded by eventCodec. Addresses as in the maps (IPv4 mapped),
 * all zero when unknown; ports in host order.
 */
struct sl_event {
	__u64 ts_ns;	    /* bpf_ktime_get_ns() */
	__u64 netns_cookie; /* the network namespace the decision was about (the pod's) */
	__u64 sock_cookie;  /* the socket's cookie; 0 when there is no socket yet (sk_lookup) */
	struct sl_addr src; /* the socket's own address (inbound: the connecting peer) */
	struct sl_addr dst; /* the destination as asked (the VIP, the original destination) */
	struct sl_addr to; /* where it was sent instead (backend, proxy); zero when not rewritten */
	__u16 src_port;
	__u16 dst_port;
	__u16 to_port;
	__u8 type;   /* enum sl_event_type */
	__u8 reason; /* enum sl_event_reason */
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 mode;   /* SL_MODE_* of the pod, for capture decisions; SL_MODE_NONE otherwise */
	__u16 pad;
	__s32 err; /* the errno a refusal answered (ECONNREFUSED, EAGAIN), 0 otherwise */
};
/* queued only (a ring buffer has no value type), so absent from the objects' BTF: its layout is
 * checked against a snippet compiled from this header (test/unit/contract-layout.test.ts) */
_Static_assert(sizeof(struct sl_event) == 88, "struct sl_event is mirrored by eventCodec");

/* ---- Mesh capture ---- */

#define SL_MODE_NONE	0
#define SL_MODE_SIDECAR 1
#define SL_MODE_AMBIENT 2

#define SL_POL_OUT_ALL	      (1 << 0) /* includeOutboundIPRanges "*" */
#define SL_POL_IN_ALL	      (1 << 1) /* includeInboundPorts "*" */
#define SL_POL_DNS	      (1 << 2) /* capture DNS (UDP/TCP 53) to the proxy's DNS port */
#define SL_POL_LOOPBACK_RANGE (1 << 3) /* an included outbound range covers loopback */
#define SL_POL_NO_INBOUND     (1 << 4) /* ambient.istio.io/bypass-inbound-capture: outbound only */
/* sidecar.istio.io/interceptionMode TPROXY: the proxy hands inbound connections to the app from
 * the client's address (replies routed back in the pod), and its own connections to local
 * addresses reach 15006 as Istio's mangle rules send them (see cap_tproxy_inbound)
 */
#define SL_POL_TPROXY	      (1 << 5)

#define SL_MAX_CIDRS   16
#define SL_MAX_PORTS   32
#define SL_MAX_POD_IPS 4

/* A CIDR over the 16-byte address: IPv4 prefixes are stored plus 96 (IPv4-mapped). */
struct sl_cidr {
	struct sl_addr addr;
	__u8 prefix;
	__u8 pad[3];
};

/* Capture policy of one pod, keyed by its network-namespace cookie in sl_endpoints. Port lists
 * are in host order; the counts bound every loop.
 */
struct sl_policy {
	__u8 mode;  /* SL_MODE_* */
	__u8 flags; /* SL_POL_* */
	__u8 n_include_cidrs;
	__u8 n_exclude_cidrs;
	__u8 n_include_out_ports;
	__u8 n_exclude_out_ports;
	__u8 n_include_in_ports;
	__u8 n_exclude_in_ports;
	__u8 n_pod_ips;
	__u8 pad[3];
	__u16 outbound_port; /* 15001 */
	__u16 inbound_port;  /* 15006 */
	__u16 dns_port;	     /* 15053 */
	__u16 pad2;
	struct sl_addr pod_ips[SL_MAX_POD_IPS];
	struct sl_cidr include_cidrs[SL_MAX_CIDRS];
	struct sl_cidr exclude_cidrs[SL_MAX_CIDRS];
	__u16 include_out_ports[SL_MAX_PORTS];
	__u16 exclude_out_ports[SL_MAX_PORTS];
	__u16 include_in_ports[SL_MAX_PORTS];
	__u16 exclude_in_ports[SL_MAX_PORTS];
	/* the sidecar's own uid and gid (its container's runAsUser/runAsGroup); 0: the node's
	 * mesh-proxy-uid / mesh-proxy-gid (istio-cni's fallback for an absent or zero value) */
	__u32 proxy_uid;
	__u32 proxy_gid;
};

/* The destination a captured socket asked for: in the app's socket storage (sl_cap_sock), and
 * later in the storage of the proxy's accepted socket of the same connection (sl_origdst_sock).
 */
struct sl_orig_dst {
	struct sl_addr addr;
	__u16 port;
	__u8 captured; /* 1: outbound to the proxy, 2: proxy to its own pod IP, sent inbound */
	__u8 pad;
};

/* A captured connection whose handshake is in flight, as both ends see it: the app's address and
 * port (the proxy's peer), the proxy's port it was sent to, scoped by the pod's network namespace
 * (the proxy's address is loopback of the family). Keys sl_origdst_syn.
 */
struct sl_origdst_key {
	__u64 netns_cookie;
	struct sl_addr addr;
	__u16 port;
	__u16 proxy_port;
	__u32 pad2;
};

/* v0.1.0's key of sl_origdst, field for field (a pin is reused only while its layout is the same):
 * the app's address and port, scoped by the pod's network namespace; pad is 0.
 */
struct sl_origdst_v0_key {
	__u64 netns_cookie;
	struct sl_addr addr;
	__u16 port;
	__u16 pad;
	__u32 pad2;
};

/* The fill level of sl_origdst_syn and what it turned away (sl_origdst_stat, one entry). */
struct sl_origdst_stat {
	__u64 in_flight; /* entries in sl_origdst_syn now: captured handshakes in flight */
	__u64 refused; /* captured connects refused (EAGAIN) because in_flight reached the limit */
};

/* The proxy's listening sockets that inbound connections are steered to (sk_lookup). Several
 * processes may listen on one port with SO_REUSEPORT (an old and a new ztunnel during an
 * upgrade): each listener takes a free slot, and any live one is as good as another (the kernel
 * picks within the reuseport group after sk_lookup assigns one of them).
 */
#define SL_LISTENER_SLOTS 4

struct sl_listener_key {
	__u64 netns_cookie;
	__u16 port;
	__u8 family; /* 4 or 6 */
	__u8 slot;   /* 0 .. SL_LISTENER_SLOTS-1 */
	__u32 pad2;
};

/* A TCP connection to a captured pod as the pod sees it: {pod address and port, peer address and
 * port}. Keys sl_bypass_flows: connections inbound capture leaves alone (see bpf/capture.c).
 */
struct sl_flow_key {
	struct sl_addr pod;
	struct sl_addr peer;
	__u16 pod_port;
	__u16 peer_port;
};

/* Per-pod capture counters (sl_ep_stats), updated atomically. */
struct sl_ep_stats {
	__u64 outbound;	    /* connects sent to the proxy's outbound port */
	__u64 inbound;	    /* connections steered to the proxy's inbound port */
	__u64 proxy_bypass; /* connects of the proxy itself (uid/gid), not captured */
	__u64 no_listener;  /* inbound to be captured while the proxy had no listener: dropped */
};

#endif /* SLUICE_SHARED_H */
