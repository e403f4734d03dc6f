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

/* The original destination of a captured socket, freed with the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sl_orig_dst);
} sl_cap_sock SEC(".maps");

/* Original destinations by {netns, client address, client port}; entries are removed when the
 * client socket closes (sockops state callback), LRU as a backstop.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sl_origdst_key);
	__type(value, struct sl_orig_dst);
} sl_origdst SEC(".maps");

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

/* The node's own addresses: connections from them (kubelet probes) are not captured inbound. */
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
