/* What the mesh proxies are to the programs: the ports they listen on, the marks on their sockets,
 * how many resolvers DNS capture can name. Pure C (no helper, no map): included by
 * bpf/lib/capture.h and test/c/contract-constants.c. Mirrored in src/bpf/constants.ts;
 * test/unit/contract-constants.test.ts checks the two sides match.
 */
#ifndef SLUICE_MESH_CONSTS_H
#define SLUICE_MESH_CONSTS_H

/* The proxy's listeners that sockops enrols in sl_listeners: Istio's outbound, inbound (plaintext)
 * and HBONE ports. The agent writes the same outbound and inbound ports into every policy.
 */
#define SL_PORT_OUTBOUND 15001
#define SL_PORT_INBOUND	 15006
#define SL_PORT_HBONE	 15008
#define SL_PORT_DNS	 53

/* Room in .rodata for mesh-dns-servers (cfg_dns_servers). */
#define SL_MAX_DNS_SERVERS 4

/* Envoy's mark on its source-preserving connections to the app in TPROXY mode: istiod's
 * original_src listener filter sets 1337, which istio-iptables (InboundTProxyMark) matches exactly.
 */
#define SL_TPROXY_MARK 1337

/* Defaults of the mark settings (the agent sets them before load): the node proxy's socket mark
 * (ambient-proxy-mark, Istio's ztunnel 0x539/0xfff), and the mark a proxy's looped-back inbound
 * connection gets in a captured pod so the app's replies are routed back to the proxy's
 * transparent socket (Istio's in-pod connmark 0x111/0xfff).
 */
#define SL_PROXY_MARK	     0x539
#define SL_PROXY_MARK_MASK   0xfff
#define SL_INBOUND_MARK	     0x111
#define SL_INBOUND_MARK_MASK 0xfff

#endif /* SLUICE_MESH_CONSTS_H */
