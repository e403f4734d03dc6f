/* The contract between the datapath's event feed (src/bpf/event-feed.ts: the sl_events ring buffer
 * behind the sl_monitor gate) and the monitor (src/monitor/: who is subscribed, names, filters,
 * printing). The feed produces decoded events; the monitor never touches maps or the ring.
 */

/** Event types, as `sluice monitor --type` names them. Numbers: enum sl_event_type in bpf/lib/verdicts.h. */
export const EVENT_TYPE_NAMES = [
  'lb-translate', // connect/sendmsg to a Service frontend rewritten to a backend
  'lb-refuse', // connect/sendmsg to a Service frontend refused (reason: no backend, no local backend)
  'capture-out', // an app's outbound connection sent to its proxy (sidecar 15001, ambient ztunnel 15001/15053)
  'capture-in', // an inbound connection steered to the proxy's inbound listener (15006 / 15008)
  'bypass-out', // outbound not captured, and why (proxy's own, excluded port/range/uid, loopback, ...)
  'bypass-in', // inbound not captured, and why (excluded port, from the proxy, ...)
  'no-listener', // inbound to be captured but the proxy has no listener: dropped
  'sock-destroy', // a socket destroyed because its backend left its Service
] as const;
export type EventTypeName = (typeof EVENT_TYPE_NAMES)[number];

/** One datapath decision, decoded from struct sl_event. */
export interface DatapathEvent {
  /** bpf_ktime_get_ns() when the program decided (CLOCK_MONOTONIC) */
  tsNs: bigint;
  /** the network namespace of the socket: names the pod (or the host) */
  netnsCookie: bigint;
  sockCookie: bigint;
  type: EventTypeName;
  /** why, as a short kebab-case word from EVENT_REASONS (src/bpf/constants.ts); '' when none */
  reason: string;
  proto: 'tcp' | 'udp';
  /** the pod's capture mode when the decision was a capture one: 'sidecar' | 'ambient' | '' */
  mode: string;
  /** the socket's own address/port when known ('' / 0 otherwise) */
  src: string;
  srcPort: number;
  /** the destination as the app asked it (the VIP, the original destination) */
  dst: string;
  dstPort: number;
  /** where it went instead (backend, proxy listener); '' / 0 when not rewritten */
  to: string;
  toPort: number;
  /** the errno a refusal answered (ECONNREFUSED, EAGAIN...), 0 otherwise */
  errno: number;
}

/**
 * The datapath's event stream. `start` opens the kernel gate (programs emit only while it is open)
 * and delivers events until `stop` closes it; the monitor hub starts it for its first subscriber
 * and stops it after its last. Idempotent both ways.
 */
export interface EventFeed {
  start(onEvent: (e: DatapathEvent) => void): void;
  stop(): void;
  /** events the programs could not queue because the ring was full (since the agent started) */
  lost(): bigint;
}
