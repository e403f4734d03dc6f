/* The Service and EndpointSlice fields kube-proxy honours, end to end through the model: objects
 * as the API server sends them (parsed by parseObject), this node's name and zone, and the
 * frontends and backends the socket LB would program.
 */
import { describe, expect, test } from 'vitest';
import { computeFrontends, type LbFrontend } from '../../src/lb/model';
import { parseObject } from '../../src/k8s/validate';
import type { EndpointSlice, Service } from '../../src/k8s/types';

const NODE = 'node-1';

type Obj = Record<string, unknown>;

function service(name: string, spec: Obj, extra: { labels?: Record<string, string>; status?: Obj } = {}): Service {
  return parseObject({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'shop', ...(extra.labels ? { labels: extra.labels } : {}) },
    spec: { ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }], ...spec },
    ...(extra.status ? { status: extra.status } : {}),
  }) as Service;
}

let n = 0;
function slice(svcName: string, endpoints: Obj[], opts: { family?: 4 | 6; labels?: Record<string, string> } = {}): EndpointSlice {
  return parseObject({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${svcName}-${++n}`, namespace: 'shop', labels: { 'kubernetes.io/service-name': svcName, ...opts.labels } },
    addressType: `IPv${opts.family ?? 4}`,
    endpoints,
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  }) as EndpointSlice;
}

/** An endpoint as the EndpointSlice controller writes it. */
function ep(
  ip: string,
  o: { ready?: boolean; serving?: boolean; terminating?: boolean; node?: string; zones?: string[]; nodes?: string[] } = {},
): Obj {
  const conditions: Obj = {};
  for (const k of ['ready', 'serving', 'terminating'] as const) if (o[k] !== undefined) conditions[k] = o[k];
  const hints: Obj = {};
  if (o.zones) hints.forZones = o.zones.map((name) => ({ name }));
  if (o.nodes) hints.forNodes = o.nodes.map((name) => ({ name }));
  return {
    addresses: [ip],
    conditions,
    ...(o.node ? { nodeName: o.node } : {}),
    ...(o.zones || o.nodes ? { hints } : {}),
  };
}

function frontends(
  services: Service[],
  slices: EndpointSlice[],
  node: { nodeName?: string; zone?: string } = { nodeName: NODE },
): LbFrontend[] {
  return computeFrontends(services, slices, {
    ...node,
    warn: (msg, fields) => {
      throw new Error(`unexpected warning: ${msg} ${JSON.stringify(fields)}`);
    },
  });
}

/** id -> backend IPs (ports are all 8080 here). */
function table(list: LbFrontend[]): Record<string, string[]> {
  return Object.fromEntries(list.map((f) => [f.id, f.backends.map((b) => b.ip)]));
}

describe('endpoint conditions (nil ready and serving mean true, nil terminating false)', () => {
  test('ready endpoints are used; unready ones are not while any is ready', () => {
    const s = slice('web', [
      ep('10.0.0.1'),
      ep('10.0.0.2', { ready: true }),
      ep('10.0.0.3', { ready: false, serving: true, terminating: true }),
    ]);
    expect(table(frontends([service('web', { clusterIP: '10.96.0.10' })], [s]))).toEqual({
      '10.96.0.10:80/TCP': ['10.0.0.1', '10.0.0.2'],
    });
  });

  test('with no ready endpoint, the serving and terminating ones are used (nil serving counts as serving)', () => {
    const s = slice('web', [
      ep('10.0.0.1', { ready: false, terminating: true }), // serving nil: true
      ep('10.0.0.2', { ready: false, serving: false, terminating: true }),
      ep('10.0.0.3', { ready: false, serving: true, terminating: true }),
      ep('10.0.0.4', { ready: false }), // not terminating: unusable
    ]);
    const [f] = frontends([service('web', { clusterIP: '10.96.0.10' })], [s]);
    expect(f.backends.map((b) => b.ip)).toEqual(['10.0.0.1', '10.0.0.3']);
    expect(f.noLocalEndpoints).toBe(false);
  });

  test('nothing ready or serving-terminating: no backends, refused as "no endpoints"', () => {
    const [f] = frontends(
      [service('web', { clusterIP: '10.96.0.10' })],
      [slice('web', [ep('10.0.0.1', { ready: false, serving: false })])],
    );
    expect([f.backends, f.noLocalEndpoints]).toEqual([[], false]);
  });

  test('an endpoint in two slices keeps its non-terminating entry, whichever slice comes first', () => {
    const svc = service('web', { clusterIP: '10.96.0.10' });
    const dying = slice('web', [
      ep('10.0.0.1', { ready: false, serving: true, terminating: true }),
      ep('10.0.0.2', { ready: false, serving: true, terminating: true }),
    ]);
    const fresh = slice('web', [ep('10.0.0.1', { ready: true })]);
    // 10.0.0.1 is ready through the fresh entry: the Cluster set is the ready one, not the fallback
    expect(table(frontends([svc], [dying, fresh]))).toEqual({ '10.96.0.10:80/TCP': ['10.0.0.1'] });
    expect(table(frontends([svc], [fresh, dying]))).toEqual({ '10.96.0.10:80/TCP': ['10.0.0.1'] });
  });
});

describe('internalTrafficPolicy: Local', () => {
  const svc = service('web', {
    clusterIP: '10.96.0.10',
    clusterIPs: ['10.96.0.10'],
    internalTrafficPolicy: 'Local',
    externalIPs: ['192.0.2.1'],
  });

  test("the ClusterIP uses this node's endpoints; an externalIP of the same Service uses all", () => {
    const s = slice('web', [ep('10.0.0.1', { node: NODE }), ep('10.0.0.2', { node: 'node-2' }), ep('10.0.0.3')]);
    expect(table(frontends([svc], [s]))).toEqual({
      '10.96.0.10:80/TCP': ['10.0.0.1'],
      '192.0.2.1:80/TCP': ['10.0.0.1', '10.0.0.2', '10.0.0.3'],
    });
  });

  test("this node's terminating endpoint serves while another node has ready ones", () => {
    const s = slice('web', [
      ep('10.0.0.1', { ready: false, serving: true, terminating: true, node: NODE }),
      ep('10.0.0.2', { node: 'node-2' }),
    ]);
    expect(table(frontends([svc], [s]))['10.96.0.10:80/TCP']).toEqual(['10.0.0.1']);
  });

  test('endpoints only on other nodes: no backends, flagged as no local endpoints', () => {
    const s = slice('web', [ep('10.0.0.2', { node: 'node-2' })]);
    const f = frontends([svc], [s]).find((x) => x.scope === 'clusterIP')!;
    expect([f.backends, f.noLocalEndpoints]).toEqual([[], true]);
  });

  test('no endpoints anywhere: no backends, and not flagged (that is the plain no-endpoints refusal)', () => {
    const f = frontends([svc], [slice('web', [ep('10.0.0.2', { ready: false, serving: false, node: NODE })])]).find(
      (x) => x.scope === 'clusterIP',
    )!;
    expect([f.backends, f.noLocalEndpoints]).toEqual([[], false]);
  });

  test('without a node name nothing is local', () => {
    const s = slice('web', [ep('10.0.0.1', { node: NODE })]);
    const f = frontends([svc], [s], { nodeName: '' }).find((x) => x.scope === 'clusterIP')!;
    expect([f.backends, f.noLocalEndpoints]).toEqual([[], true]);
  });

  test('topology hints do not narrow Local endpoints', () => {
    const s = slice('web', [
      ep('10.0.0.1', { node: NODE, zones: ['zone-b'] }),
      ep('10.0.0.2', { node: NODE, zones: ['zone-a'] }),
    ]);
    const f = frontends([svc], [s], { nodeName: NODE, zone: 'zone-a' }).find((x) => x.scope === 'clusterIP')!;
    expect([f.backends.map((b) => b.ip), f.zoneSensitive]).toEqual([['10.0.0.1', '10.0.0.2'], false]);
  });
});

describe('topology hints (written by the EndpointSlice controller from trafficDistribution)', () => {
  const svc = service('web', { clusterIP: '10.96.0.10', trafficDistribution: 'PreferSameZone' });

  test("zone hints for this node's zone narrow the Cluster set; the frontend is zone-sensitive", () => {
    const s = slice('web', [ep('10.0.0.1', { zones: ['zone-a'] }), ep('10.0.0.2', { zones: ['zone-b'] })]);
    const [f] = frontends([svc], [s], { nodeName: NODE, zone: 'zone-a' });
    expect([f.backends.map((b) => b.ip), f.zoneSensitive]).toEqual([['10.0.0.1'], true]);
    const [other] = frontends([svc], [s], { nodeName: NODE, zone: 'zone-b' });
    expect(other.backends.map((b) => b.ip)).toEqual(['10.0.0.2']);
  });

  test('no endpoint for this zone, or an endpoint without hints: all endpoints', () => {
    const hinted = slice('web', [ep('10.0.0.1', { zones: ['zone-a'] }), ep('10.0.0.2', { zones: ['zone-b'] })]);
    expect(frontends([svc], [hinted], { nodeName: NODE, zone: 'zone-c' })[0].backends).toHaveLength(2);
    expect(frontends([svc], [hinted], { nodeName: NODE })[0].backends).toHaveLength(2); // zone unknown
    const partial = slice('web', [ep('10.0.0.1', { zones: ['zone-a'] }), ep('10.0.0.2')]);
    const [f] = frontends([svc], [partial], { nodeName: NODE, zone: 'zone-a' });
    expect([f.backends.length, f.zoneSensitive]).toEqual([2, false]);
  });

  test("node hints (PreferSameNode) pick this node's endpoints, whatever the zone", () => {
    const s = slice('web', [
      ep('10.0.0.1', { node: NODE, nodes: [NODE], zones: ['zone-a'] }),
      ep('10.0.0.2', { node: 'node-2', nodes: ['node-2'], zones: ['zone-a'] }),
    ]);
    const [f] = frontends([svc], [s], { nodeName: NODE, zone: 'zone-a' });
    expect([f.backends.map((b) => b.ip), f.zoneSensitive]).toEqual([['10.0.0.1'], false]);
  });

  test("the Service's trafficDistribution itself selects nothing: only hints do, as in kube-proxy", () => {
    const s = slice('web', [ep('10.0.0.1', { node: NODE }), ep('10.0.0.2', { node: 'node-2' })]);
    const sameNode = service('web', { clusterIP: '10.96.0.10', trafficDistribution: 'PreferSameNode' });
    expect(frontends([sameNode], [s])[0].backends).toHaveLength(2);
  });
});

describe("labels that make the Service someone else's", () => {
  test('service.kubernetes.io/service-proxy-name and service.kubernetes.io/headless on a Service: no frontends', () => {
    const s = [slice('a', [ep('10.0.0.1')]), slice('b', [ep('10.0.0.2')])];
    const list = frontends(
      [
        service('a', { clusterIP: '10.96.0.1' }, { labels: { 'service.kubernetes.io/service-proxy-name': 'other-proxy' } }),
        service('b', { clusterIP: '10.96.0.2' }, { labels: { 'service.kubernetes.io/headless': '' } }),
        service('c', { clusterIP: '10.96.0.3' }, { labels: { 'service.kubernetes.io/service-proxy-name-x': 'unrelated' } }),
      ],
      s,
    );
    expect(list.map((f) => f.id)).toEqual(['10.96.0.3:80/TCP']);
  });

  test("an EndpointSlice carrying either label is ignored, as kube-proxy's informer never sees it", () => {
    const list = frontends(
      [service('web', { clusterIP: '10.96.0.10' })],
      [
        slice('web', [ep('10.0.0.1')], { labels: { 'service.kubernetes.io/service-proxy-name': 'other' } }),
        slice('web', [ep('10.0.0.2')], { labels: { 'service.kubernetes.io/headless': '' } }),
        slice('web', [ep('10.0.0.3')]),
      ],
    );
    expect(table(list)).toEqual({ '10.96.0.10:80/TCP': ['10.0.0.3'] });
  });
});

describe('LoadBalancer ingress IPs', () => {
  const lb = (status: Obj[], spec: Obj = {}) =>
    service(
      'web',
      {
        type: 'LoadBalancer',
        clusterIP: '10.96.0.10',
        clusterIPs: ['10.96.0.10', 'fd00::a'],
        ipFamilies: ['IPv4', 'IPv6'],
        ...spec,
      },
      { status: { loadBalancer: { ingress: status } } },
    );
  const slices = [slice('web', [ep('10.0.0.1')]), slice('web', [ep('fd00:1::1')], { family: 6 })];

  test('an IP with ipMode VIP or none becomes a frontend like an externalIP; Proxy and hostname-only entries do not', () => {
    const list = frontends(
      [
        lb([
          { ip: '203.0.113.1' },
          { ip: '203.0.113.2', ipMode: 'VIP' },
          { ip: '203.0.113.3', ipMode: 'Proxy' },
          { hostname: 'lb.example.com' },
          { ip: '2001:db8::1' },
        ]),
      ],
      slices,
    );
    expect(list.map((f) => [f.id, f.scope, f.backends.map((b) => b.ip)])).toEqual([
      ['10.96.0.10:80/TCP', 'clusterIP', ['10.0.0.1']],
      ['203.0.113.1:80/TCP', 'loadBalancerIP', ['10.0.0.1']],
      ['203.0.113.2:80/TCP', 'loadBalancerIP', ['10.0.0.1']],
      ['[2001:db8::1]:80/TCP', 'loadBalancerIP', ['fd00:1::1']],
      ['[fd00::a]:80/TCP', 'clusterIP', ['fd00:1::1']],
    ]);
  });

  test('a LoadBalancer IP of a family without a ClusterIP is left alone (kube-proxy has no service port there)', () => {
    const single = service(
      'web',
      { type: 'LoadBalancer', clusterIP: '10.96.0.10' },
      { status: { loadBalancer: { ingress: [{ ip: '203.0.113.1' }, { ip: '2001:db8::1' }] } } },
    );
    expect(frontends([single], slices).map((f) => f.id)).toEqual(['10.96.0.10:80/TCP', '203.0.113.1:80/TCP']);
  });

  test("loadBalancerSourceRanges of a family leave that family's LoadBalancer IPs alone; a /0 or another family's ranges do not", () => {
    const ingress = [{ ip: '203.0.113.1' }, { ip: '2001:db8::1' }];
    const ids = (spec: Obj) =>
      frontends([lb(ingress, spec)], slices)
        .filter((f) => f.scope === 'loadBalancerIP')
        .map((f) => f.id);
    expect(ids({ loadBalancerSourceRanges: [' 198.51.100.0/24 '] })).toEqual(['[2001:db8::1]:80/TCP']);
    expect(ids({ loadBalancerSourceRanges: ['198.51.100.0/24', '2001:db8:ffff::/48'] })).toEqual([]);
    expect(ids({ loadBalancerSourceRanges: ['198.51.100.0/24', '0.0.0.0/0'] })).toEqual([
      '203.0.113.1:80/TCP',
      '[2001:db8::1]:80/TCP',
    ]);
    expect(ids({})).toEqual(['203.0.113.1:80/TCP', '[2001:db8::1]:80/TCP']);
  });
});

describe('externalTrafficPolicy: Local', () => {
  test('connections from this node to an externalIP or LoadBalancer IP use every endpoint, as kube-proxy routes locally originated traffic', () => {
    const svc = service(
      'web',
      {
        type: 'LoadBalancer',
        clusterIP: '10.96.0.10',
        externalIPs: ['192.0.2.1'],
        externalTrafficPolicy: 'Local',
      },
      { status: { loadBalancer: { ingress: [{ ip: '203.0.113.1' }] } } },
    );
    const s = slice('web', [ep('10.0.0.1', { node: NODE }), ep('10.0.0.2', { node: 'node-2' })]);
    expect(table(frontends([svc], [s]))).toEqual({
      '10.96.0.10:80/TCP': ['10.0.0.1', '10.0.0.2'],
      '192.0.2.1:80/TCP': ['10.0.0.1', '10.0.0.2'],
      '203.0.113.1:80/TCP': ['10.0.0.1', '10.0.0.2'],
    });
  });

  test("with no endpoint on this node, those connections still reach the other nodes' endpoints", () => {
    const svc = service('web', {
      type: 'NodePort',
      clusterIP: '10.96.0.10',
      externalIPs: ['192.0.2.1'],
      externalTrafficPolicy: 'Local',
    });
    const [, ext] = frontends([svc], [slice('web', [ep('10.0.0.2', { node: 'node-2' })])]);
    expect([ext.id, ext.backends.map((b) => b.ip), ext.noLocalEndpoints]).toEqual(['192.0.2.1:80/TCP', ['10.0.0.2'], false]);
  });
});
