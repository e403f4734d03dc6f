/* The pinned socket-LB maps against the agent's model, Service by Service: the frontends the
 * Services and EndpointSlices call for now (src/lb/model.ts, as the agent computes them) and those
 * sl_lb_svc/sl_lb_backend hold (src/lb/list.ts, as `sluice bpf lb list` reads them).
 */
import { ZONE_LABEL } from '../k8s/types';
import type { Config } from '../config';
import { listLbServices, type ListedService } from '../lb/list';
import { computeFrontends, type LbFrontend } from '../lb/model';
import type { ClusterObjects } from './objects';
import { count, fail, ok, warn, type CheckResult } from './report';

/** At most this many lines per check; the rest is counted. */
const MAX_LINES = 20;

export interface LbFacts {
  /** undefined when the objects could not be read (API down) */
  model?: LbFrontend[];
  modelError?: string;
  /** the model may lack objects (a manifest that does not parse: the agent keeps its last objects) */
  modelCaveat?: string;
  pinned?: ListedService[];
  pinnedError?: string;
  origin: string;
}

export function gatherLbFacts(cfg: Config, objects: ClusterObjects | undefined, objectsError?: string): LbFacts {
  const facts: LbFacts = { origin: objects?.origin ?? '' };
  // without its Services, EndpointSlices (or the whole directory) the model says nothing
  const refused =
    objects?.unreadable.filter(
      (u) => u.what === 'Services' || u.what === 'EndpointSlices' || u.what.startsWith('objects directory'),
    ) ?? [];
  if (!objects || (objects.source === 'api' && !objects.api?.reachable)) {
    facts.modelError = objectsError ?? `the API server is not reachable (${objects?.api?.error ?? 'unknown'})`;
  } else if (refused.length) {
    facts.modelError = refused.map((u) => `cannot read ${u.what}: ${u.error}`).join('; ');
  } else {
    if (objects.source === 'standalone' && objects.unreadable.length) {
      facts.modelCaveat = `${objects.unreadable.map((u) => u.what).join(', ')} did not parse`;
    }
    const zone = objects.nodes.find((n) => n.metadata.name === cfg.nodeName)?.metadata.labels?.[ZONE_LABEL] ?? '';
    // the agent has logged each skipped input already; the doctor judges the outcome
    facts.model = computeFrontends(objects.services, objects.slices, { nodeName: cfg.nodeName, zone, warn: () => undefined });
  }
  try {
    facts.pinned = listLbServices(cfg.bpfPinDir);
  } catch (e) {
    facts.pinnedError = (e as Error).message;
  }
  return facts;
}

/** A frontend as sluice bpf lb list shows it, from the model's side. */
function expectedListing(f: LbFrontend): ListedService {
  return {
    frontend: f.id,
    id: 0,
    // the maps tell a nodePort apart; externalIPs and LoadBalancer IPs share one flag
    scope: f.scope === 'clusterIP' || f.scope === 'nodePort' ? f.scope : 'externalIP',
    affinitySec: f.affinityTimeoutSec,
    noLocalEndpoints: f.noLocalEndpoints,
    backends: f.backends.map((b) => (b.ip.includes(':') ? `[${b.ip}]:${b.port}` : `${b.ip}:${b.port}`)),
  };
}

const sorted = (xs: string[]) => [...xs].sort();

/** What differs between a frontend of the model and the one pinned, in words; [] when equal. */
export function frontendDifferences(want: ListedService, have: ListedService): string[] {
  const out: string[] = [];
  const wb = sorted(want.backends);
  const hb = sorted(have.backends);
  if (wb.join(',') !== hb.join(',')) out.push(`backends [${hb.join(', ')}] pinned, [${wb.join(', ')}] in the model`);
  if (want.scope !== have.scope) out.push(`scope ${have.scope} pinned, ${want.scope} in the model`);
  if (want.affinitySec !== have.affinitySec)
    out.push(`ClientIP affinity ${have.affinitySec}s pinned, ${want.affinitySec}s in the model`);
  if (want.noLocalEndpoints !== have.noLocalEndpoints)
    out.push(`"no endpoint on this node" ${have.noLocalEndpoints} pinned, ${want.noLocalEndpoints} in the model`);
  return out;
}

function capped(lines: CheckResult[], check: string, fix: string): CheckResult[] {
  if (lines.length <= MAX_LINES) return lines;
  return [...lines.slice(0, MAX_LINES), fail(check, `… and ${lines.length - MAX_LINES} more`, fix)];
}

export function judgeLb(f: LbFacts): CheckResult[] {
  const id = 'lb.services';
  if (f.pinnedError)
    return [fail(id, `cannot read the pinned socket-LB maps: ${f.pinnedError}`, 'start the agent: it creates and pins the maps')];
  if (!f.model)
    return [
      warn(
        id,
        `cannot compare the pinned maps with the model: ${f.modelError}`,
        'make the objects readable (k8s-objects-dir, or the API server and its credentials)',
      ),
    ];
  const pinned = new Map(f.pinned!.map((s) => [s.frontend, s]));
  const fix =
    'restart the agent: it reads the maps back and rewrites what differs; if that recurs, its log says why ("service not programmed": a full map)';
  const byService = new Map<string, string[]>();
  const note = (service: string, what: string) => byService.set(service, [...(byService.get(service) ?? []), what]);
  const services = new Set<string>();
  for (const fe of f.model) {
    services.add(fe.service);
    const have = pinned.get(fe.id);
    pinned.delete(fe.id);
    if (!have) {
      note(fe.service, `${fe.id} is missing from sl_lb_svc`);
      continue;
    }
    for (const d of frontendDifferences(expectedListing(fe), have)) note(fe.service, `${fe.id}: ${d}`);
  }
  // the agent keeps the objects of a manifest that stopped parsing; the doctor cannot see them
  const verdict = f.modelCaveat
    ? (msg: string) => warn(id, `${msg} (the model may be incomplete: ${f.modelCaveat})`, fix)
    : (msg: string) => fail(id, msg, fix);
  const lines: CheckResult[] = [];
  for (const [service, problems] of byService) lines.push(verdict(`Service ${service}: ${problems.join('; ')}`));
  for (const stale of pinned.values()) {
    lines.push(
      verdict(
        `${stale.frontend} is in sl_lb_svc (backends ${stale.backends.join(', ') || 'none'}) but no Service has it now: connections to it are still load-balanced`,
      ),
    );
  }
  if (lines.length) return capped(lines, id, fix);
  return [
    ok(
      id,
      `the pinned maps hold the model exactly: ${count(f.model.length, 'frontend')} of ${count(services.size, 'Service')} (objects from ${f.origin})`,
    ),
  ];
}
