/* Mesh capture map definitions. Included by bpf/sock_lb.c (outbound decision at connect) and
 * bpf/capture.c (sockops, getsockopt, sk_lookup); both objects share the maps through their pins.
 */
#ifndef SLUICE_CAPTURE_MAPS_H
#define SLUICE_CAPTURE_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "shared.h"

/* Pods with a capture policy, by network-namespace cookie; no entry: not captured. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct sl_policy);
} sl_endpoints SEC(".maps");

/* Pod IP -> netns cookie, for sk_lookup (which may not ask for its netns cookie). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_addr);
	__type(value, __u64);
} sl_pod_ips SEC(".maps");

/* The original destination of a captured socket (the app's side), freed with the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sl_orig_dst);
} sl_cap_sock SEC(".maps");

/*
 * How an original destination travels from the app's socket to the proxy's, and why nothing
 * can evict it from a live connection:
 *  - connect (sock_lb.c): kept in the app's socket storage (sl_cap_sock);
 *  - the app's SYN (sockops TCP_CONNECT_CB), when its port is known: copied into sl_origdst_syn;
 *  - the proxy's side of the handshake completes (PASSIVE_ESTABLISHED_CB, before accept() can
 *    return the socket): moved into the accepted socket's own storage (sl_origdst_sock), where
 *    it stays exactly as long as the connection, and deleted from sl_origdst_syn;
 *  - the app's socket closes first (refused, timed out): deleted from sl_origdst_syn.
 * So sl_origdst_syn holds only handshakes in flight and is a plain hash that never evicts. Its
 * size bounds them, node-wide: before it fills up, captured connects are refused at once (EAGAIN)
 * rather than reaching the proxy without their destination (see cap_handshakes_full). Istio's
 * REDIRECT keeps every connection, for its whole life, in conntrack (whose usual default size is
 * the same 262144) and drops new SYNs when that is full.
 */
#define SL_HANDSHAKES_MAX   262144
/* Room for connects between the check at connect() and the insert at the SYN. */
#define SL_HANDSHAKES_ADMIT (SL_HANDSHAKES_MAX - 4096)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_HANDSHAKES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_origdst_key);
	__type(value, struct sl_orig_dst);
} sl_origdst_syn SEC(".maps");

/*
 * v0.1.0's node-wide LRU of original destinations, the only place its programs look, kept so that
 * a switch between the two releases loses no connection: the pin is reused both ways (same
 * type, size and layout as v0.1.0's), and the links are swapped program by program, so one
 * connection may have its SYN seen by one release and its SO_ORIGINAL_DST asked of the other.
 * Hence sockops writes it too at the SYN and removes it when the app's socket closes, as v0.1.0
 * does, and getsockopt reads it last, for connections v0.1.0's sockops saw. This release never
 * depends on it for its own connections (an eviction costs nothing here).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sl_origdst_v0_key);
	__type(value, struct sl_orig_dst);
} sl_origdst SEC(".maps");

/* How many entries sl_origdst_syn holds, and the connects refused because it was full. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sl_origdst_stat);
} sl_origdst_stat SEC(".maps");

/* The original destination of the proxy's accepted socket of a captured connection, freed with
 * that socket. Apart from sl_cap_sock: getpeername rewrites sockets found there.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sl_orig_dst);
} sl_origdst_sock SEC(".maps");

/* The proxy's listeners by {netns, port, family}; entries vanish when the socket closes. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 16384);
	__type(key, struct sl_listener_key);
	__type(value, __u64);
} sl_listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct sl_ep_stats);
} sl_ep_stats SEC(".maps");

/* The node's own addresses, followed live by the agent (rtnetlink); read by user space (status,
 * doctor). Inbound capture tells the node's own connections by sl_bypass_flows, not by address;
 * socket-LB serves nodePorts on these addresses (bpf/lib/lb.h, bpf/lib/sock_destroy.h).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct sl_addr);
	__type(value, __u8);
} sl_node_ips SEC(".maps");

/* Connections inbound capture leaves alone: the node's own sockets connecting to ambient pods,
 * and a pod proxy's marked connection to its own app (sockops adds them at connect and removes
 * them at close; LRU as a backstop).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sl_flow_key);
	__type(value, __u8);
} sl_bypass_flows SEC(".maps");

#endif /* SLUICE_CAPTURE_MAPS_H */
