/* One monitored decision as it travels from the agent to `sluice monitor`: a DatapathEvent with the
 * names the agent resolved, JSON-safe (bigints as decimal strings). The agent streams these, one
 * JSON line each, and `-o json` prints them as they came.
 */
import type { DatapathEvent } from './types';

/** Names the agent resolved for one event; '' where it knows none (the raw address stands). */
export interface EventNames {
  /** whose socket decided: `namespace/name` of the pod, `host` for the node's own namespace */
  pod: string;
  /** the source address as a pod (a capture-in's client) */
  srcName: string;
  /** the destination as a Service port (`namespace/name:port`) or a pod (`namespace/name`) */
  dstName: string;
  /** where the connection went instead, as a pod (an lb-translate's backend) */
  toName: string;
}

export type EventRecord = Omit<DatapathEvent, 'tsNs' | 'netnsCookie' | 'sockCookie'> & {
  tsNs: string;
  netnsCookie: string;
  sockCookie: string;
} & EventNames;

/** ring: the kernel could not queue them (the ring was full); queue: this client read too slowly */
export type LostReason = 'ring' | 'queue';

/** One line of the monitor stream after the agent's acknowledgement. */
export type MonitorMessage = { event: EventRecord } | { lost: { reason: LostReason; count: number } };

export function eventRecord(e: DatapathEvent, names: EventNames): EventRecord {
  return { ...e, tsNs: e.tsNs.toString(), netnsCookie: e.netnsCookie.toString(), sockCookie: e.sockCookie.toString(), ...names };
}
