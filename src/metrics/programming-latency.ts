/* sluice_network_programming_duration_seconds with kube-proxy's meaning
 * (kubernetes/kubernetes pkg/proxy/endpointschangetracker.go, metrics.NetworkProgrammingLatency):
 * from the moment a Service's endpoints changed in the cluster to the moment the datapath
 * serves the change. The moment of the change is what the EndpointSlice controller writes into
 * the slice's `endpoints.kubernetes.io/last-change-trigger-time` annotation (the Pod or Service
 * change that caused it); as in kube-proxy, times from before the agent started are not observed
 * (they would measure the agent's own start), a slice deletion drops the Service's pending times
 * (the annotation then dates from the last update, not from the deletion), and each time is
 * observed once, after the sync that wrote it.
 *
 * Standalone mode has no controller to write the annotation: there, a Service or EndpointSlice
 * change without it counts from when the agent read it, once the first sync is done (the first
 * sync is start-up, not a change). In API mode only annotated changes are observed, like kube-proxy.
 */
import type { ChangeEvent } from '../k8s/store';
import { LAST_CHANGE_TRIGGER_TIME, SERVICE_NAME_LABEL, type EndpointSlice } from '../k8s/types';

export { LAST_CHANGE_TRIGGER_TIME };

/** RFC 3339 with optional fractional seconds, as Go's time.RFC3339Nano writes it. */
const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

/** The annotation's time in ms since the epoch; undefined when absent or malformed. */
export function lastChangeTriggerTime(annotations: Record<string, string> | undefined): number | undefined {
  const raw = annotations?.[LAST_CHANGE_TRIGGER_TIME];
  if (raw === undefined || !RFC3339.test(raw)) return undefined;
  const t = Date.parse(raw);
  return Number.isNaN(t) ? undefined : t;
}

export interface ProgrammingLatencyOptions {
  /** ms since the epoch when the agent started: earlier trigger times are not observed */
  startedAtMs: number;
  /** count changes without the annotation from when they were read (standalone mode) */
  readTimeWithoutAnnotation: boolean;
  /** the clock, ms since the epoch (default Date.now) */
  now?: () => number;
}

export class ProgrammingLatency {
  /** Service (namespace/name) -> trigger times (ms) not yet observed */
  private readonly pending = new Map<string, number[]>();
  private firstSyncDone = false;
  private readonly now: () => number;

  constructor(
    private readonly observe: (seconds: number) => void,
    private readonly opts: ProgrammingLatencyOptions,
  ) {
    this.now = opts.now ?? Date.now;
  }

  /** A change of the store (only Services and EndpointSlices matter). */
  changed(ev: ChangeEvent): void {
    if (ev.kind === 'Service') {
      if (ev.type === 'upsert') this.record(`${ev.obj.metadata.namespace}/${ev.obj.metadata.name}`, undefined);
      return;
    }
    if (ev.kind !== 'EndpointSlice') return;
    const slice = (ev.obj ?? ev.old) as EndpointSlice;
    const svc = slice.metadata.labels?.[SERVICE_NAME_LABEL];
    if (!svc) return;
    const key = `${slice.metadata.namespace}/${svc}`;
    if (ev.type === 'delete') this.pending.delete(key);
    else this.record(key, lastChangeTriggerTime(slice.metadata.annotations));
  }

  private record(service: string, triggerMs: number | undefined): void {
    let at: number | undefined;
    if (triggerMs !== undefined) at = triggerMs > this.opts.startedAtMs ? triggerMs : undefined;
    else if (this.opts.readTimeWithoutAnnotation && this.firstSyncDone) at = this.now();
    if (at === undefined) return;
    const times = this.pending.get(service);
    if (times) times.push(at);
    else this.pending.set(service, [at]);
  }

  /**
   * A sync wrote the maps: every pending change is served now, except those of `failed`
   * Services (namespace/name), which stay pending until a sync programs them.
   */
  programmed(failed: Iterable<string> = []): void {
    this.firstSyncDone = true;
    const skip = new Set(failed);
    const now = this.now();
    for (const [service, times] of this.pending) {
      if (skip.has(service)) continue;
      // a controller clock ahead of ours would give a negative latency: it is at most "now"
      for (const t of times) this.observe(Math.max(0, now - t) / 1000);
      this.pending.delete(service);
    }
  }

  /** Services with changes not yet observed (for tests and status). */
  get pendingServices(): number {
    return this.pending.size;
  }
}
