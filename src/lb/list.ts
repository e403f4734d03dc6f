/* Reads the socket-LB state back from the pinned maps, for `sluice bpf lb list`: what the kernel
 * holds, not what the agent intends, and readable while the agent is down.
 */
import { protoName, SVC_F_AFFINITY, SVC_F_EXTERNAL, SVC_F_NO_LOCAL, SVC_F_NODEPORT } from '../bpf/layout';
import { LbMaps } from './maps';
import { frontendId } from './sync';

export interface ListedService {
  frontend: string;
  id: number;
  /**
   * externalIP stands for every external address: spec.externalIPs and LoadBalancer IPs alike;
   * nodePort: the frontend's address (0.0.0.0 or ::) stands for every address of the node
   */
  scope: 'clusterIP' | 'externalIP' | 'nodePort';
  affinitySec: number;
  /** no backends because internalTrafficPolicy is Local and this node has no usable endpoint */
  noLocalEndpoints: boolean;
  /** backends in slot order, `ip:port` (IPv6 in brackets); a missing slot or backend shows as `?` */
  backends: string[];
}

export function listLbServices(pinDir: string): ListedService[] {
  const maps = LbMaps.open(pinDir);
  try {
    const backends = new Map(maps.backend.entries());
    const masters: ListedService[] = [];
    const slots = new Map<string, Map<number, number>>();
    for (const [k, v] of maps.svc.entries()) {
      const fid = frontendId(k.vip, k.port, protoName(k.proto));
      if (k.slot === 0) {
        masters.push({
          frontend: fid,
          id: v.id,
          scope: v.flags & SVC_F_NODEPORT ? 'nodePort' : v.flags & SVC_F_EXTERNAL ? 'externalIP' : 'clusterIP',
          affinitySec: v.flags & SVC_F_AFFINITY ? v.affinitySec : 0,
          noLocalEndpoints: (v.flags & SVC_F_NO_LOCAL) !== 0,
          backends: new Array(v.count).fill('?'),
        });
      } else {
        if (!slots.has(fid)) slots.set(fid, new Map());
        slots.get(fid)!.set(k.slot, v.id);
      }
    }
    for (const m of masters) {
      const s = slots.get(m.frontend);
      m.backends = m.backends.map((_, i) => {
        const b = backends.get(s?.get(i + 1) ?? 0);
        return b ? (b.ip.includes(':') ? `[${b.ip}]:${b.port}` : `${b.ip}:${b.port}`) : '?';
      });
    }
    return masters.sort((a, b) => a.frontend.localeCompare(b.frontend, 'en', { numeric: true }));
  } finally {
    maps.close();
  }
}

/** The table printed by `sluice bpf lb list`: one line per backend, the service on the first. */
export function formatLbList(services: ListedService[]): string {
  const rows: Array<[string, string]> = [['SERVICE ADDRESS', 'BACKEND ADDRESS']];
  for (const s of services) {
    const notes = [s.scope, s.affinitySec ? `affinity=${s.affinitySec}s` : ''].filter(Boolean).join(' ');
    const none = s.noLocalEndpoints ? 'no backends on this node (internalTrafficPolicy Local)' : 'no backends';
    if (s.backends.length === 0) rows.push([s.frontend, `(${none}: connections refused) [${notes}]`]);
    s.backends.forEach((b, i) => rows.push([i === 0 ? s.frontend : '', `${b} (slot ${i + 1})${i === 0 ? ` [${notes}]` : ''}`]));
  }
  const w = Math.max(...rows.map((r) => r[0].length)) + 3;
  return rows.map(([a, b]) => a.padEnd(w) + b).join('\n') + '\n';
}
