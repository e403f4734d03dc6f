/* `sluice endpoint list`: one line per registered pod, fields in the order scripts rely on:
 * IP(s), namespace/name, mode=<sidecar|ambient|none>, then free text. The registry is read from
 * the state dir, so the list works while the agent is down.
 */
import type { Endpoint } from './endpoints';

export interface ListedEndpoint extends Endpoint {
  mode: 'sidecar' | 'ambient' | 'none';
  /** why the mode was decided (the rule), free text */
  reason: string;
}

export function podName(ep: Endpoint): string {
  if (ep.namespace || ep.name) return `${ep.namespace || '-'}/${ep.name || '-'}`;
  return `-/${ep.containerId.slice(0, 12)}`; // a runtime that is not Kubernetes (podman)
}

export function formatEndpointList(eps: ListedEndpoint[]): string {
  const rows = eps.map((ep) => [
    ep.ips.join(',') || '-',
    podName(ep),
    `mode=${ep.mode}`,
    `netns-cookie=${ep.netnsCookie} container=${ep.containerId.slice(0, 12)} if=${ep.ifName} ${ep.reason}`.trim(),
  ]);
  const widths = [0, 1, 2].map((i) => Math.max(0, ...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => (i < 3 ? c.padEnd(widths[i]) : c)).join('  ')).join('\n') + (rows.length ? '\n' : '');
}
