/* Map keys, values and counters shared by the eBPF programs and user space.
 * Holds only layouts: included by bpf/ programs and mirrored by src/bpf/layout.ts (checked by a
 * unit test). Little-endian hosts only (as the TypeScript codecs assume).
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
#define SL_SVC_F_EXTERNAL (1 << 1) /* an externalIP rather than a ClusterIP */

struct sl_svc_val {
	__u32 id;	  /* slot 0: service id (affinity key); slot > 0: backend id */
	__u16 count;	  /* slot 0: number of backend slots; 0 means refuse (no ready endpoint) */
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
 * services; the slots are reused round-robin.
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

/* Datapath counters, indices into the per-CPU array sl_lb_counters. Numbers are never reused:
 * a retired counter keeps its slot.
 */
enum sl_counter {
	SL_CNT_TRANSLATED = 0,	   /* connect/sendmsg to a VIP rewritten to a backend */
	SL_CNT_NO_BACKEND = 1,	   /* VIP without ready backends: refused with ECONNREFUSED */
	SL_CNT_HOSTNS_SKIP = 2,	   /* VIP hit outside the host netns with hostns-only: untouched */
	SL_CNT_SLOT_MISS = 3,	   /* backend slot or backend missing (agent mid-update): untouched */
	SL_CNT_REV_TRANSLATED = 4, /* recvmsg/getpeername rewritten back to the VIP */
	SL_CNT_AFFINITY_HIT = 5,   /* backend taken from a live ClientIP affinity entry */
	SL_CNT_NO_STORAGE = 6,	   /* no socket storage: translated without reverse entry */
	SL_CNT_MAX = 7,
};

#endif /* SLUICE_SHARED_H */
