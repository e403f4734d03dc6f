/* Which backends LbSync reports as departed (their sockets are destroyed): an endpoint deleted, or
 * neither ready nor serving any more, or its frontend gone; never an endpoint that is merely no
 * longer chosen here (topology hints, internalTrafficPolicy, terminating while others are ready).
 * LbSync runs over in-memory stand-ins of the pinned maps.
 */
import { describe, expect, test } from 'vitest';
import type { BpfMap } from '../../src/bpf';
import type { LbMaps } from '../../src/lb/maps';
import { computeFrontends } from '../../src/lb/model';
import { LbSync, type Departure } from '../../src/lb/sync';
import { parseObject } from '../../src/k8s/validate';
import type { EndpointSlice, Service } from '../../src/k8s/types';

/** The BpfMap methods LbSync calls, over a JS Map keyed by the key's JSON. */
class MemMap<K, V> {
  readonly m = new Map<string, [K, V]>();
  get(k: K): V | undefined {
    return this.m.get(JSON.stringify(k))?.[1];
  }
  set(k: K, v: V): void {
    this.m.set(JSON.stringify(k), [k, v]);
  }
  setMany(entries: Array<[K, V]>): void {
    for (const [k, v] of entries) this.set(k, v);
  }
  delete(k: K): boolean {
    return this.m.delete(JSON.stringify(k));
  }
  keys(): K[] {
    return [...this.m.values()].map(([k]) => k);
  }
  entries(): Array<[K, V]> {
    return [...this.m.values()];
  }
}

function memMaps(): LbMaps {
  const as = <K, V>() => new MemMap<K, V>() as unknown as BpfMap<K, V>;
  return { svc: as(), backend: as(), affinity: as(), counters: as() } as unknown as LbMaps;
}

type Obj = Record<string, unknown>;
const svc = (spec: Obj): Service =>
  parseObject({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web', namespace: 'shop' },
    spec: { clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }], ...spec },
  }) as Service;
const slice = (endpoints: Obj[]): EndpointSlice =>
  parseObject({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'web-1', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4',
    endpoints,
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  }) as EndpointSlice;
const ep = (ip: string, conditions: Obj = {}, extra: Obj = {}): Obj => ({ addresses: [ip], conditions, ...extra });

/** Programs the Service as `before`, then as `after`; returns what departed (backend ip, frontend). */
function departed(
  before: { svc: Service; eps: Obj[] },
  after: { svc?: Service; eps: Obj[] },
  zone = '',
): Array<[string, string]> {
  const sync = new LbSync(memMaps());
  const opts = { nodeName: 'node-1', zone, warn: () => undefined };
  sync.apply(computeFrontends([before.svc], [slice(before.eps)], opts));
  expect(sync.takeDepartures()).toEqual([]);
  sync.apply(computeFrontends(after.svc ? [after.svc] : [], [slice(after.eps)], opts));
  const out = sync.takeDepartures();
  expect(sync.takeDepartures()).toEqual([]); // taken once
  return out.map((d: Departure) => [d.backend, d.frontend]);
}

describe('departures', () => {
  test('a deleted endpoint departs from every frontend that used it, nodePort included', () => {
    const s = svc({ type: 'NodePort', ports: [{ name: 'http', port: 80, nodePort: 30080 }] });
    expect(departed({ svc: s, eps: [ep('10.0.0.1'), ep('10.0.0.2')] }, { svc: s, eps: [ep('10.0.0.2')] }).sort()).toEqual([
      ['10.0.0.1', '0.0.0.0:30080/TCP'],
      ['10.0.0.1', '10.96.0.10:80/TCP'],
    ]);
  });

  test('an endpoint neither ready nor serving departs', () => {
    const s = svc({});
    expect(
      departed(
        { svc: s, eps: [ep('10.0.0.1'), ep('10.0.0.2')] },
        { svc: s, eps: [ep('10.0.0.1', { ready: false, serving: false }), ep('10.0.0.2')] },
      ),
    ).toEqual([['10.0.0.1', '10.96.0.10:80/TCP']]);
  });

  test('an endpoint terminating but still serving does not depart while others are ready (it drains)', () => {
    const s = svc({});
    expect(
      departed(
        { svc: s, eps: [ep('10.0.0.1'), ep('10.0.0.2')] },
        { svc: s, eps: [ep('10.0.0.1', { ready: false, serving: true, terminating: true }), ep('10.0.0.2')] },
      ),
    ).toEqual([]);
  });

  test('an endpoint no longer chosen because of zone hints does not depart', () => {
    const s = svc({});
    const z = (ip: string, zone: string) => ep(ip, {}, { hints: { forZones: [{ name: zone }] } });
    expect(
      departed({ svc: s, eps: [ep('10.0.0.1'), ep('10.0.0.2')] }, { svc: s, eps: [z('10.0.0.1', 'b'), z('10.0.0.2', 'a')] }, 'a'),
    ).toEqual([]);
  });

  test('internalTrafficPolicy turning Local keeps the remote endpoints (not chosen, still serving)', () => {
    const eps = [ep('10.0.0.1', {}, { nodeName: 'node-1' }), ep('10.0.0.2', {}, { nodeName: 'node-2' })];
    expect(departed({ svc: svc({}), eps }, { svc: svc({ internalTrafficPolicy: 'Local' }), eps })).toEqual([]);
  });

  test('a deleted Service: every backend departs from each of its frontends', () => {
    expect(departed({ svc: svc({}), eps: [ep('10.0.0.1'), ep('10.0.0.2')] }, { eps: [] }).sort()).toEqual([
      ['10.0.0.1', '10.96.0.10:80/TCP'],
      ['10.0.0.2', '10.96.0.10:80/TCP'],
    ]);
  });

  test('departures name the frontend by its key in the maps and the backend by address, as sockets record them', () => {
    const maps = memMaps();
    const sync = new LbSync(maps);
    const s = svc({ type: 'NodePort', ports: [{ name: 'http', port: 80, nodePort: 30080 }] });
    sync.apply(computeFrontends([s], [slice([ep('10.0.0.1'), ep('10.0.0.2')])], { warn: () => undefined }));
    expect(maps.svc.get({ vip: '10.96.0.10', port: 80, proto: 6, slot: 0 })).toBeDefined();
    expect(maps.svc.get({ vip: '0.0.0.0', port: 30080, proto: 6, slot: 0 })).toBeDefined();
    sync.apply(computeFrontends([s], [slice([ep('10.0.0.2')])], { warn: () => undefined }));
    const byFrontend = (a: Departure, b: Departure) => a.frontend.localeCompare(b.frontend);
    expect(sync.takeDepartures().sort(byFrontend)).toEqual([
      { frontend: '0.0.0.0:30080/TCP', vip: '0.0.0.0', vipPort: 30080, backend: '10.0.0.1', backendPort: 8080, proto: 6 },
      { frontend: '10.96.0.10:80/TCP', vip: '10.96.0.10', vipPort: 80, backend: '10.0.0.1', backendPort: 8080, proto: 6 },
    ]);
  });

  test('an IPv6 backend of a UDP port departs with its address and protocol', () => {
    const sync = new LbSync(memMaps());
    const v6 = (ips: string[]) => ({
      svc: parseObject({
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'dns', namespace: 'kube-system' },
        spec: {
          clusterIP: 'fd00::a',
          clusterIPs: ['fd00::a'],
          ipFamilies: ['IPv6'],
          ports: [{ name: 'dns', port: 53, protocol: 'UDP' }],
        },
      }) as Service,
      slice: parseObject({
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { name: 'dns-1', namespace: 'kube-system', labels: { 'kubernetes.io/service-name': 'dns' } },
        addressType: 'IPv6',
        endpoints: ips.map((ip) => ({ addresses: [ip] })),
        ports: [{ name: 'dns', port: 5353, protocol: 'UDP' }],
      }) as EndpointSlice,
    });
    const a = v6(['fd00::1', 'fd00::2']);
    sync.apply(computeFrontends([a.svc], [a.slice], { warn: () => undefined }));
    const b = v6(['fd00::2']);
    sync.apply(computeFrontends([b.svc], [b.slice], { warn: () => undefined }));
    expect(sync.takeDepartures()).toEqual([
      { frontend: '[fd00::a]:53/UDP', vip: 'fd00::a', vipPort: 53, backend: 'fd00::1', backendPort: 5353, proto: 17 },
    ]);
  });
});

describe('backends in the map', () => {
  const two = (name: string, vip: string): Service =>
    parseObject({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace: 'shop' },
      spec: { clusterIP: vip, ports: [{ name: 'http', port: 80 }] },
    }) as Service;
  const sliceOf = (svcName: string, ips: string[]): EndpointSlice =>
    parseObject({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${svcName}-1`, namespace: 'shop', labels: { 'kubernetes.io/service-name': svcName } },
      addressType: 'IPv4',
      endpoints: ips.map((ip) => ({ addresses: [ip] })),
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    }) as EndpointSlice;

  test('a backend two services share stays until the last one drops it, then leaves the map', () => {
    const maps = memMaps();
    const sync = new LbSync(maps);
    const ips = () =>
      maps.backend
        .entries()
        .map(([, b]) => b.ip)
        .sort();
    const apply = (a: string[], b: string[]) =>
      sync.apply(
        computeFrontends([two('a', '10.96.0.1'), two('b', '10.96.0.2')], [sliceOf('a', a), sliceOf('b', b)], {
          warn: () => undefined,
        }),
      );
    apply(['10.0.0.1', '10.0.0.2'], ['10.0.0.2']);
    expect(ips()).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(apply(['10.0.0.1'], ['10.0.0.2']).backends).toBe(2); // 10.0.0.2 still used by b
    expect(ips()).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(apply(['10.0.0.1'], []).backends).toBe(1);
    expect(ips()).toEqual(['10.0.0.1']);
  });

  test('a restart reads the maps back: an unchanged sync writes nothing, a backend no service uses is removed', () => {
    const maps = memMaps();
    const frontends = computeFrontends([two('a', '10.96.0.1')], [sliceOf('a', ['10.0.0.1'])], { warn: () => undefined });
    new LbSync(maps).apply(frontends);
    maps.backend.set(999, { ip: '10.0.0.99', port: 8080, proto: 6 }); // left by a crash mid-update
    const again = new LbSync(maps);
    expect(again.restore()).toEqual({ services: 1, backends: 2 });
    expect(again.apply(frontends)).toMatchObject({ added: 0, updated: 0, unchanged: 1, backends: 1 });
    expect(maps.backend.get(999)).toBeUndefined();
  });
});
