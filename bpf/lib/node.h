/* Node-wide settings every object may need, set by the agent before load.
 * Included by bpf/lib/lb.h and bpf/lib/capture.h.
 */
#ifndef SLUICE_NODE_H
#define SLUICE_NODE_H

#include <linux/types.h>

/* The network-namespace cookie of the node itself (the agent's own namespace). */
const volatile __u64 cfg_host_netns_cookie = 0;

#endif /* SLUICE_NODE_H */
