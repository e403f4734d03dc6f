/* What the agent tells the cluster, as Istio does: an ambient pod carries the annotation
 * `ambient.istio.io/redirection: enabled` once ztunnel took it (`pending` while captured but not
 * yet acked; removed on release), and enrolment, release and refusal are Events on the Pod.
 * Best effort: a failure is logged, never blocks the datapath.
 */
import type { PodRegistration } from '../agent/pod-registry';
import { log } from '../log';
import type { ModeDecision } from '../mesh/mode';
import type { ApiClient } from './api-client';

export const REDIRECTION_ANNOTATION = 'ambient.istio.io/redirection';

export class WriteBack {
  /** writes in flight, for tests and shutdown */
  private pending: Promise<void>[] = [];
  /** the redirection annotation last written, by namespace/name */
  private readonly redirections = new Map<string, string | null>();

  constructor(
    private readonly client: ApiClient,
    private readonly nodeName: string,
  ) {}

  /** Reports a changed decision for a registered pod. */
  decided(reg: PodRegistration, d: ModeDecision, previous: ModeDecision['mode']): void {
    if (!reg.namespace || !reg.name) return;
    const work = async () => {
      if (d.refused) await this.event(reg, 'Warning', 'CaptureRefused', `sluice did not enrol the pod: ${d.refused}`);
      else if (d.mode !== 'none' && previous !== d.mode)
        await this.event(reg, 'Normal', 'Enrolled', `sluice captures the pod's traffic in ${d.mode} mode (${d.rule})`);
      else if (d.mode === 'none' && previous !== 'none')
        await this.event(reg, 'Normal', 'Released', `sluice released the pod from ${previous} mode (${d.rule})`);
    };
    this.track(reg, work);
  }

  /** The pod's ambient status: enabled (ztunnel took it), pending, or null (released). */
  redirection(pod: { namespace: string; name: string }, value: 'enabled' | 'pending' | null): void {
    const key = `${pod.namespace}/${pod.name}`;
    if (!pod.namespace || !pod.name || this.redirections.get(key) === value) return;
    if (value === null) this.redirections.delete(key);
    else this.redirections.set(key, value);
    this.track(pod, () => this.annotate(pod, value));
  }

  private track(pod: { namespace: string; name: string }, work: () => Promise<void>): void {
    const p = work().catch((e) =>
      log.warn('write-back to the API server failed', { pod: `${pod.namespace}/${pod.name}`, err: (e as Error).message }),
    );
    this.pending.push(p);
    void p.finally(() => (this.pending = this.pending.filter((x) => x !== p)));
  }

  private async annotate(pod: { namespace: string; name: string }, value: string | null): Promise<void> {
    const path = `/api/v1/namespaces/${encodeURIComponent(pod.namespace)}/pods/${encodeURIComponent(pod.name)}`;
    await this.client.request(
      'PATCH',
      path,
      { metadata: { annotations: { [REDIRECTION_ANNOTATION]: value } } },
      { contentType: 'application/merge-patch+json' },
    );
  }

  private async event(reg: PodRegistration, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const now = new Date().toISOString();
    await this.client.request('POST', `/api/v1/namespaces/${encodeURIComponent(reg.namespace)}/events`, {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { generateName: `${reg.name}.`, namespace: reg.namespace },
      involvedObject: { apiVersion: 'v1', kind: 'Pod', namespace: reg.namespace, name: reg.name, uid: reg.uid || undefined },
      reason,
      message,
      type,
      source: { component: 'sluice-agent', host: this.nodeName },
      reportingComponent: 'sluice-agent',
      reportingInstance: this.nodeName,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    });
  }

  async flush(): Promise<void> {
    await Promise.allSettled(this.pending);
  }
}
