/* The change tracker recomputes only the Services whose objects changed. */
import { describe, expect, it } from 'vitest';
import { ObjectStore } from '../../src/k8s/store';
import { ServiceTracker } from '../../src/lb/tracker';
import type { EndpointSlice, Service } from '../../src/k8s/types';

function svc(name: string, ip: string): Service {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'default' }, spec: { clusterIP: ip, ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }] } } as Service;
}

function slice(name: string, service: string, ips: string[]): EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
    metadata: { name, namespace: 'default', labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4', endpoints: ips.map((ip) => ({ addresses: [ip] })), ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
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
    expect(b.frontends.map((f) => [f.id, f.backends.length]).sort()).toEqual([['10.96.0.1:80/TCP', 0], ['10.96.0.2:80/TCP', 1]]);
  });
});
