/* The change tracker recomputes only the Services whose objects changed. */
import { describe, expect, it } from 'vitest';
import { ObjectStore } from '../../src/k8s/store';
import { ServiceTracker } from '../../src/lb/tracker';
import type { EndpointSlice, Node, Service } from '../../src/k8s/types';

function svc(name: string, ip: string): Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'default' },
    spec: { clusterIP: ip, ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }] },
  } as Service;
}

function slice(name: string, service: string, ips: string[]): EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: 'default', labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    endpoints: ips.map((ip) => ({ addresses: [ip] })),
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  } as EndpointSlice;
}

describe('service change tracker', () => {
  it('the first batch is full; a slice change then yields only its Service, scoped to it', () => {
    const store = new ObjectStore();
    for (let i = 1; i <= 50; i++) {
      store.upsert(svc(`s${i}`, `10.96.0.${i}`));
      store.upsert(slice(`s${i}-a`, `s${i}`, [`10.1.0.${i}`]));
    }
    const t = new ServiceTracker(store);
    const first = t.collect();
    expect(first.scope).toBeUndefined();
    expect(first.frontends).toHaveLength(50);
    expect(t.pending).toBe(false);

    store.upsert(slice('s7-a', 's7', ['10.1.0.7', '10.1.1.7']));
    const b = t.collect();
    expect(b.frontends.map((f) => [f.id, f.backends.length])).toEqual([['10.96.0.7:80/TCP', 2]]);
    expect([...b.scope!]).toEqual(['10.96.0.7:80/TCP']);
  });

  it('a deleted Service is in scope with no frontends, so its frontends are removed', () => {
    const store = new ObjectStore();
    store.upsert(svc('a', '10.96.0.1'));
    const t = new ServiceTracker(store);
    t.collect();
    store.delete('Service/default/a');
    const b = t.collect();
    expect(b.frontends).toEqual([]);
    expect([...b.scope!]).toEqual(['10.96.0.1:80/TCP']);
  });

  it('a VIP another Service already serves is not taken over', () => {
    const store = new ObjectStore();
    store.upsert(svc('a', '10.96.0.1'));
    const t = new ServiceTracker(store);
    t.collect();
    store.upsert(svc('b', '10.96.0.1'));
    const b = t.collect();
    expect(b.frontends).toEqual([]);
    expect(b.scope?.size).toBe(0);
  });

  it('a slice moving between Services marks both', () => {
    const store = new ObjectStore();
    store.upsert(svc('a', '10.96.0.1'));
    store.upsert(svc('b', '10.96.0.2'));
    store.upsert(slice('x', 'a', ['10.1.0.1']));
    const t = new ServiceTracker(store);
    t.collect();
    store.upsert(slice('x', 'b', ['10.1.0.1']));
    const b = t.collect();
    expect(b.frontends.map((f) => [f.id, f.backends.length]).sort()).toEqual([
      ['10.96.0.1:80/TCP', 0],
      ['10.96.0.2:80/TCP', 1],
    ]);
  });
});

describe("service change tracker and this node's zone", () => {
  function node(name: string, zone?: string, extra: Record<string, string> = {}): Node {
    return {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name, labels: { ...(zone ? { 'topology.kubernetes.io/zone': zone } : {}), ...extra } },
    };
  }

  /** A slice whose endpoints carry zone hints: ip -> zone. */
  function zonal(name: string, service: string, zones: Record<string, string>): EndpointSlice {
    const s = slice(name, service, Object.keys(zones));
    s.endpoints = s.endpoints.map((e) => ({ ...e, hints: { forZones: [zones[e.addresses[0]]] } }));
    return s;
  }

  function setup() {
    const store = new ObjectStore();
    store.upsert(node('node-1', 'zone-a'));
    store.upsert(svc('zonal', '10.96.0.1'));
    store.upsert(zonal('zonal-a', 'zonal', { '10.1.0.1': 'zone-a', '10.1.0.2': 'zone-b' }));
    store.upsert(svc('plain', '10.96.0.2'));
    store.upsert(slice('plain-a', 'plain', ['10.1.0.3', '10.1.0.4']));
    const t = new ServiceTracker(store, { nodeName: 'node-1' });
    const first = t.collect();
    return { store, t, first };
  }

  const backends = (b: { frontends: Array<{ id: string; backends: Array<{ ip: string }> }> }) =>
    Object.fromEntries(b.frontends.map((f) => [f.id, f.backends.map((x) => x.ip)]));

  it("the first batch selects with the Node's zone", () => {
    const { first } = setup();
    expect(backends(first)).toEqual({ '10.96.0.1:80/TCP': ['10.1.0.1'], '10.96.0.2:80/TCP': ['10.1.0.3', '10.1.0.4'] });
  });

  it('a zone change recomputes only the Services zone hints decided', () => {
    const { store, t } = setup();
    store.upsert(node('node-1', 'zone-b'));
    expect(t.pending).toBe(true);
    const b = t.collect();
    expect(backends(b)).toEqual({ '10.96.0.1:80/TCP': ['10.1.0.2'] });
    expect([...b.scope!]).toEqual(['10.96.0.1:80/TCP']);
    expect(b.services).toBe(1);
  });

  it('a zone that no hint names still depends on the zone: back to every endpoint, and back again', () => {
    const { store, t } = setup();
    store.delete('Node/node-1');
    expect(backends(t.collect())).toEqual({ '10.96.0.1:80/TCP': ['10.1.0.1', '10.1.0.2'] });
    store.upsert(node('node-1', 'zone-a'));
    expect(backends(t.collect())).toEqual({ '10.96.0.1:80/TCP': ['10.1.0.1'] });
  });

  it('other label changes of this Node, and any change of another Node, recompute nothing', () => {
    const { store, t } = setup();
    store.upsert(node('node-1', 'zone-a', { 'node-role.kubernetes.io/worker': '' }));
    store.upsert(node('node-2', 'zone-b'));
    expect(t.pending).toBe(false);
  });

  it('a Service follows the zone from the moment its slices carry hints, and stops when they lose them', () => {
    const { store, t } = setup();
    store.upsert(zonal('plain-a', 'plain', { '10.1.0.3': 'zone-a', '10.1.0.4': 'zone-b' }));
    expect(backends(t.collect())).toEqual({ '10.96.0.2:80/TCP': ['10.1.0.3'] });
    store.upsert(node('node-1', 'zone-b'));
    expect(Object.keys(backends(t.collect())).sort()).toEqual(['10.96.0.1:80/TCP', '10.96.0.2:80/TCP']);
    store.upsert(slice('plain-a', 'plain', ['10.1.0.3', '10.1.0.4']));
    t.collect();
    store.upsert(node('node-1', 'zone-c'));
    expect(Object.keys(backends(t.collect()))).toEqual(['10.96.0.1:80/TCP']);
  });
});

describe('full batches in chunks', () => {
  it('a full batch comes in chunks of Services; a VIP claimed in an earlier chunk stays with that Service', () => {
    const store = new ObjectStore();
    for (let i = 0; i < 2500; i++) store.upsert(svc(`s${String(i).padStart(4, '0')}`, `10.96.${i >> 8}.${i & 255}`));
    store.upsert(svc('s9999', '10.96.0.5')); // sorts last, after s0005 took the VIP
    const t = new ServiceTracker(store);
    const batch = t.collectChunks();
    expect(batch.scope).toBeUndefined();
    const chunks = [...batch.chunks];
    expect(chunks.map((c) => c.length)).toEqual([1000, 1000, 500]);
    expect(batch.services).toBe(2500);
    expect(chunks.flat().find((f) => f.id === '10.96.0.5:80/TCP')?.service).toBe('default/s0005');
    expect(t.pending).toBe(false);
  });

  it('a full batch not taken to the end is computed whole again by the next collect', () => {
    const store = new ObjectStore();
    for (let i = 0; i < 1500; i++) store.upsert(svc(`s${i}`, `10.96.${i >> 8}.${i & 255}`));
    const t = new ServiceTracker(store);
    const first = t.collectChunks().chunks[Symbol.iterator]();
    first.next();
    expect(t.pending).toBe(true);
    const again = t.collect();
    expect([again.scope, again.frontends.length]).toEqual([undefined, 1500]);
  });
});
