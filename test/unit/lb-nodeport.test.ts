/* NodePort frontends and the endpoints a frontend keeps serving, through the model: objects as the
 * API server sends them (parseObject), the frontends and backends the socket LB would program.
 * kube-proxy's rules read from kubernetes/kubernetes pkg/proxy/iptables/proxier.go (KUBE-NODEPORTS
 * for destinations of type LOCAL, the KUBE-EXT chain sending pod and LOCAL traffic to the Cluster
 * policy chain) and pkg/proxy/serviceport.go (ExternallyAccessible, UsesClusterEndpoints).
 */
import { describe, expect, test } from 'vitest';
import { computeFrontends, NODE_PORT_ADDRESS, type LbFrontend } from '../../src/lb/model';
import { parseObject } from '../../src/k8s/validate';
import type { EndpointSlice, Service } from '../../src/k8s/types';
import type { Fields } from '../../src/log';

const NODE = 'node-1';
type Obj = Record<string, unknown>;

function service(name: string, spec: Obj, status?: Obj): Service {
  return parseObject({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'shop' },
    spec: { ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', nodePort: 30080 }], type: 'NodePort', ...spec },
    ...(status ? { status } : {}),
  }) as Service;
}

let n = 0;
function slice(svcName: string, endpoints: Obj[], family: 4 | 6 = 4): EndpointSlice {
  return parseObject({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${svcName}-${++n}`, namespace: 'shop', labels: { 'kubernetes.io/service-name': svcName } },
    addressType: `IPv${family}`,
    endpoints,
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  }) as EndpointSlice;
}

function ep(
  ip: string,
  o: { ready?: boolean; serving?: boolean; terminating?: boolean; node?: string; zones?: string[] } = {},
): Obj {
  const conditions: Obj = {};
  for (const k of ['ready', 'serving', 'terminating'] as const) if (o[k] !== undefined) conditions[k] = o[k];
  return {
    addresses: [ip],
    conditions,
    ...(o.node ? { nodeName: o.node } : {}),
    ...(o.zones ? { hints: { forZones: o.zones.map((name) => ({ name })) } } : {}),
  };
}

function frontends(services: Service[], slices: EndpointSlice[], zone = ''): { list: LbFrontend[]; warnings: string[] } {
  const warnings: string[] = [];
  const list = computeFrontends(services, slices, {
    nodeName: NODE,
    zone,
    warn: (msg: string, f: Fields) => warnings.push(`${msg} ${JSON.stringify(f)}`),
  });
  return { list, warnings };
}

const byId = (list: LbFrontend[]) =>
  Object.fromEntries(
    list.map((f) => [
      f.id,
      { scope: f.scope, backends: f.backends.map((b) => b.ip), stillServing: f.stillServing.map((b) => b.ip) },
    ]),
  );

describe('nodePort frontends', () => {
  test('a nodePort is one frontend keyed by 0.0.0.0, with the Cluster endpoints', () => {
    const { list, warnings } = frontends(
      [service('web', { clusterIP: '10.96.0.10' })],
      [slice('web', [ep('10.0.0.1'), ep('10.0.0.2')])],
    );
    expect(warnings).toEqual([]);
    expect(byId(list)).toEqual({
      '0.0.0.0:30080/TCP': { scope: 'nodePort', backends: ['10.0.0.1', '10.0.0.2'], stillServing: [] },
      '10.96.0.10:80/TCP': { scope: 'clusterIP', backends: ['10.0.0.1', '10.0.0.2'], stillServing: [] },
    });
    const np = list.find((f) => f.scope === 'nodePort')!;
    expect([np.ip, np.port, np.family, np.service]).toEqual([NODE_PORT_ADDRESS[4], 30080, 4, 'shop/web']);
  });

  test("a dual-stack Service has its nodePort in both families, each with that family's endpoints", () => {
    const svc = service('web', {
      clusterIP: '10.96.0.10',
      clusterIPs: ['10.96.0.10', 'fd00:96::10'],
      ipFamilyPolicy: 'RequireDualStack',
    });
    const { list } = frontends([svc], [slice('web', [ep('10.0.0.1')]), slice('web', [ep('fd00::1')], 6)]);
    expect(byId(list)['0.0.0.0:30080/TCP'].backends).toEqual(['10.0.0.1']);
    expect(byId(list)['[::]:30080/TCP'].backends).toEqual(['fd00::1']);
  });

  test('a single-stack IPv6 Service has its nodePort only on [::] (kube-proxy handles it in that family only)', () => {
    const { list } = frontends(
      [service('web', { clusterIP: 'fd00:96::10', clusterIPs: ['fd00:96::10'] })],
      [slice('web', [ep('fd00::1')], 6)],
    );
    expect(Object.keys(byId(list)).sort()).toEqual(['[::]:30080/TCP', '[fd00:96::10]:80/TCP']);
  });

  test('internalTrafficPolicy Local narrows the ClusterIP only: the nodePort keeps the Cluster endpoints', () => {
    const svc = service('web', { clusterIP: '10.96.0.10', internalTrafficPolicy: 'Local' });
    const { list } = frontends([svc], [slice('web', [ep('10.0.0.1', { node: NODE }), ep('10.0.0.2', { node: 'node-2' })])]);
    expect(byId(list)).toEqual({
      '0.0.0.0:30080/TCP': { scope: 'nodePort', backends: ['10.0.0.1', '10.0.0.2'], stillServing: [] },
      // the remote endpoint is not chosen here but still serves: not a departure
      '10.96.0.10:80/TCP': { scope: 'clusterIP', backends: ['10.0.0.1'], stillServing: ['10.0.0.2'] },
    });
  });

  test('internalTrafficPolicy Local with no endpoint here: ClusterIP refused as no-local, the nodePort still reaches the others', () => {
    const svc = service('web', { clusterIP: '10.96.0.10', internalTrafficPolicy: 'Local' });
    const { list } = frontends([svc], [slice('web', [ep('10.0.0.2', { node: 'node-2' })])]);
    const [np, cip] = list;
    expect([np.id, np.backends.map((b) => b.ip), np.noLocalEndpoints]).toEqual(['0.0.0.0:30080/TCP', ['10.0.0.2'], false]);
    expect([cip.id, cip.backends, cip.noLocalEndpoints]).toEqual(['10.96.0.10:80/TCP', [], true]);
  });

  test('externalTrafficPolicy Local: traffic from this node to the nodePort goes to the Cluster endpoints', () => {
    const svc = service('web', { clusterIP: '10.96.0.10', externalTrafficPolicy: 'Local' });
    const { list } = frontends([svc], [slice('web', [ep('10.0.0.1', { node: 'node-2' }), ep('10.0.0.2', { node: 'node-3' })])]);
    expect(byId(list)['0.0.0.0:30080/TCP'].backends).toEqual(['10.0.0.1', '10.0.0.2']);
  });

  test('a LoadBalancer Service serves its nodePort next to its LoadBalancer IP', () => {
    const svc = service(
      'web',
      { type: 'LoadBalancer', clusterIP: '10.96.0.10' },
      { loadBalancer: { ingress: [{ ip: '192.0.2.7' }] } },
    );
    const { list } = frontends([svc], [slice('web', [ep('10.0.0.1')])]);
    expect(list.map((f) => [f.id, f.scope])).toEqual([
      ['0.0.0.0:30080/TCP', 'nodePort'],
      ['10.96.0.10:80/TCP', 'clusterIP'],
      ['192.0.2.7:80/TCP', 'loadBalancerIP'],
    ]);
  });

  test('no endpoints: the nodePort is programmed empty (refused, as kube-proxy REJECTs it)', () => {
    const { list } = frontends([service('web', { clusterIP: '10.96.0.10' })], []);
    expect(byId(list)['0.0.0.0:30080/TCP']).toEqual({ scope: 'nodePort', backends: [], stillServing: [] });
  });

  test('two Services on one nodePort (possible in standalone YAML only): the first by namespace/name keeps it', () => {
    const a = service('a', { clusterIP: '10.96.0.10' });
    const b = service('b', { clusterIP: '10.96.0.11' });
    const { list, warnings } = frontends([b, a], [slice('a', [ep('10.0.0.1')]), slice('b', [ep('10.0.0.2')])]);
    expect(list.find((f) => f.id === '0.0.0.0:30080/TCP')?.service).toBe('shop/a');
    expect(warnings).toEqual([
      expect.stringContaining(
        'Duplicate service frontend; keeping the first service {"id":"0.0.0.0:30080/TCP","kept":"shop/a","skipped":"shop/b"}',
      ),
    ]);
  });

  test('a headless Service has no nodePort frontend either', () => {
    const { list } = frontends([service('web', { clusterIP: 'None', type: 'ClusterIP' })], [slice('web', [ep('10.0.0.1')])]);
    expect(list).toEqual([]);
  });

  test('an externalIP that is the unspecified address is skipped: it would stand for the node itself', () => {
    const { list, warnings } = frontends(
      [service('web', { clusterIP: '10.96.0.10', externalIPs: ['0.0.0.0', '192.0.2.9'] })],
      [slice('web', [ep('10.0.0.1')])],
    );
    expect(list.map((f) => f.id)).toEqual(['0.0.0.0:30080/TCP', '10.96.0.10:80/TCP', '192.0.2.9:80/TCP']);
    expect(warnings).toEqual([expect.stringContaining('Skipping the unspecified address as a service IP')]);
  });

  test('a nodePort outside 1-65535 is refused when the object is parsed, naming the field', () => {
    expect(() => service('web', { clusterIP: '10.96.0.10', ports: [{ port: 80, nodePort: 70000 }] })).toThrow(
      /spec\.ports\[0\]\.nodePort/,
    );
  });
});

describe('stillServing: endpoints not chosen here that have not left the Service', () => {
  test('serving-and-terminating endpoints while others are ready', () => {
    const s = slice('web', [
      ep('10.0.0.1'),
      ep('10.0.0.2', { ready: false, serving: true, terminating: true }),
      ep('10.0.0.3', { ready: false, serving: false, terminating: true }),
    ]);
    const { list } = frontends(
      [service('web', { clusterIP: '10.96.0.10', type: 'ClusterIP', ports: [{ name: 'http', port: 80 }] })],
      [s],
    );
    expect(byId(list)['10.96.0.10:80/TCP']).toEqual({ scope: 'clusterIP', backends: ['10.0.0.1'], stillServing: ['10.0.0.2'] });
  });

  test('endpoints of other zones when zone hints apply', () => {
    const s = slice('web', [ep('10.0.0.1', { zones: ['a'] }), ep('10.0.0.2', { zones: ['b'] })]);
    const { list } = frontends(
      [service('web', { clusterIP: '10.96.0.10', type: 'ClusterIP', ports: [{ name: 'http', port: 80 }] })],
      [s],
      'a',
    );
    expect(byId(list)['10.96.0.10:80/TCP']).toEqual({ scope: 'clusterIP', backends: ['10.0.0.1'], stillServing: ['10.0.0.2'] });
  });

  test('never an endpoint that is neither ready nor serving', () => {
    const s = slice('web', [ep('10.0.0.1'), ep('10.0.0.2', { ready: false, serving: false })]);
    const { list } = frontends(
      [service('web', { clusterIP: '10.96.0.10', type: 'ClusterIP', ports: [{ name: 'http', port: 80 }] })],
      [s],
    );
    expect(byId(list)['10.96.0.10:80/TCP']).toEqual({ scope: 'clusterIP', backends: ['10.0.0.1'], stillServing: [] });
  });
});
