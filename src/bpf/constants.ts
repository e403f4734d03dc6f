/* Numbers the eBPF programs are compiled with that user space must agree on, apart from the map
 * layouts (src/bpf/layout.ts): the proxies' ports and marks (bpf/lib/mesh_consts.h), slot counts
 * of shared.h, and the numbered outcomes of bpf/lib/verdicts.h. test/unit/contract-constants.test.ts
 * compares each with what build/test/contract-constants prints from the C headers.
 */
import type { EventTypeName } from '../monitor/types';

/** SL_PORT_*: the proxy listeners sockops enrols, and the ports every policy names. */
export const PROXY_PORT = { outbound: 15001, inbound: 15006, hbone: 15008 } as const;

/** SL_PORT_DNS: what DNS capture takes (UDP and TCP). */
export const DNS_PORT = 53;

/** SL_MAX_DNS_SERVERS: the resolvers mesh-dns-servers can name (room in .rodata). */
export const MAX_DNS_SERVERS = 4;

/** SL_TPROXY_MARK: Envoy's socket mark on its source-preserving connections (original_src). */
export const TPROXY_MARK = 1337;

/** SL_PROXY_MARK / SL_PROXY_MARK_MASK: the node proxy's socket mark (ztunnel), the default of ambient-proxy-mark. */
export const DEFAULT_PROXY_MARK = { mark: 0x539, mask: 0xfff } as const;

/** SL_INBOUND_MARK / SL_INBOUND_MARK_MASK: the mark of a proxy's looped-back inbound connection in a pod. */
export const INBOUND_MARK = { mark: 0x111, mask: 0xfff } as const;

/** SL_LISTENER_SLOTS: listeners per {netns, port, family} in sl_listeners. */
export const LISTENER_SLOTS = 4;

/** SL_SOCK_REV_SLOTS: reverse-translation entries per socket. */
export const SOCK_REV_SLOTS = 8;

/** enum sl_verdict: what a cgroup sock_addr program returns. */
export const VERDICT = { reject: 0, allow: 1 } as const;

/** enum sl_cap_outcome: the outbound capture decision (capture_connect). */
export const CAPTURE_OUTCOME = { none: 0, proxy: 1, redirected: 2, refused: 3 } as const;

/** enum sl_cap_inbound: the inbound capture decision (capture_inbound). */
export const INBOUND_DECISION = { pass: 0, steer: 1 } as const;

/** enum sl_ep_stat: the fields of struct sl_ep_stats (EpStats) by index, in the order cap_count numbers them. */
export const EP_STATS = ['outbound', 'inbound', 'proxyBypass', 'noListener'] as const;

/** enum sl_event_type: the type of a struct sl_event, by number (the names of EVENT_TYPE_NAMES, in order). */
export const EVENT_TYPES = {
  1: 'lb-translate',
  2: 'lb-refuse',
  3: 'capture-out',
  4: 'capture-in',
  5: 'bypass-out',
  6: 'bypass-in',
  7: 'no-listener',
  8: 'sock-destroy',
} as const satisfies Record<number, EventTypeName>;

/**
 * enum sl_event_reason: why, by number (SL_REASON_NO_BACKEND is 'no-backend'); 0 is none. Numbers
 * are never reused: a retired reason keeps its number here too.
 */
export const EVENT_REASONS = {
  1: 'affinity',
  2: 'no-backend',
  3: 'no-local-backend',
  4: 'hostns-only',
  5: 'pod-opt-out',
  6: 'slot-miss',
  7: 'handshakes-full',
  8: 'no-storage',
  9: 'proxy-uid',
  10: 'proxy-gid',
  11: 'proxy-mark',
  12: 'excluded-port',
  13: 'inbound-passthrough',
  14: 'local',
  15: 'loopback',
  16: 'excluded-cidr',
  17: 'not-included',
  18: 'not-dns-server',
  19: 'no-listener',
  20: 'from-pod',
  21: 'bypass-flow',
  22: 'hbone',
  23: 'no-inbound',
  24: 'probe-snat',
  25: 'proxy-port',
  26: 'backend-gone',
} as const satisfies Record<number, string>;

/** SL_EVENTS_RING_BYTES: the default size of the ring buffer sl_events (monitor-ring-bytes). */
export const EVENTS_RING_BYTES = 512 * 1024;
