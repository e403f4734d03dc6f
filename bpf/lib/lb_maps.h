/* Socket-LB map definitions. Included by bpf/sock_lb.c and bpf/sock_destroy.c, which share them
 * through their pins; sizes are set by the agent before load (bpf-lb-*-map-max), the values here
 * are the defaults.
 */
#ifndef SLUICE_LB_MAPS_H
#define SLUICE_LB_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "shared.h"
#include "verdicts.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1048576);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_svc_key);
	__type(value, struct sl_svc_val);
} sl_lb_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 524288);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct sl_backend);
} sl_lb_backend SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sl_affinity_key);
	__type(value, struct sl_affinity_val);
} sl_lb_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sl_sock_rev);
} sl_lb_sock_rev SEC(".maps");

/* Pods whose sockets socket-LB leaves alone (annotation socket-lb.sluice.io/disabled), by network
 * namespace cookie; no entry: socket-LB applies.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, __u8);
} sl_lb_pod_opt_out SEC(".maps");

/* {frontend, backend} pairs whose sockets are being destroyed: filled by the agent just before it
 * runs the socket-destroy iterators and emptied right after.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_dead_key);
	__type(value, __u8);
} sl_lb_sock_dead SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SL_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} sl_lb_counters SEC(".maps");

#endif /* SLUICE_LB_MAPS_H */
