/* Endpoint selection against kube-proxy's own table: every case of TestCategorizeEndpoints
 * (kubernetes/kubernetes pkg/proxy/topology_test.go, hints-only version) restated as sluice's
 * selection inputs, then the node-hint (PreferSameNode) rules of the current topology.go, which
 * that table predates, and the zone sensitivity the tracker relies on.
 *
 * Endpoints are written as the Go table writes BaseEndpointInfo: a field left out is false (so
 * `serving` is false unless given); the API's nil defaults are the model's job (lb-model tests).
 */
import { describe, expect, test } from 'vitest';
import { selectEndpoints, type SelectableEndpoint, type SelectionPolicy, type TopologyMode } from '../../src/lb/selection';

const NODE = 'node-1';

interface Ep {
  ep: string;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  local?: boolean;
  zones?: string[];
  nodes?: string[];
}

function endpoint(e: Ep): SelectableEndpoint {
  const [ip, port] = e.ep.split(':');
  return {
    ip,
    port: Number(port),
    ready: e.ready ?? false,
    serving: e.serving ?? false,
    terminating: e.terminating ?? false,
    isLocal: e.local ?? false,
    zoneHints: e.zones,
    nodeHints: e.nodes,
  };
}

/** kube-proxy's BaseServicePortInfo fields that matter: ITP/ETP Local, and a nodePort (externally accessible). */
interface Svc {
  itpLocal?: boolean;
  etpLocal?: boolean;
  nodePort?: number;
}

function policy(s: Svc): SelectionPolicy {
  const externallyAccessible = (s.nodePort ?? 0) !== 0;
  return { internalPolicyLocal: s.itpLocal ?? false, externalPolicyLocal: s.etpLocal ?? false, externallyAccessible };
}

interface Case {
  name: string;
  /** the Node's topology.kubernetes.io/zone ('' when the label is missing or empty) */
  zone?: string;
  svc: Svc;
  endpoints: Ep[];
  /** undefined: the port never uses that policy (Go's nil) */
  cluster?: string[];
  local?: string[];
  /** hasAnyEndpoints although both lists are empty (Go's onlyRemoteEndpoints) */
  onlyRemote?: boolean;
}

const r = (ep: string, zones?: string[], more: Partial<Ep> = {}): Ep => ({ ep, ready: true, zones, ...more });

const TOPOLOGY_TEST_GO: Case[] = [
  {
    name: "should use topology since all endpoints have hints, node has a zone label and and there are endpoints for the node's zone",
    zone: 'zone-a',
    svc: {},
    endpoints: [
      r('10.1.2.3:80', ['zone-a']),
      r('10.1.2.4:80', ['zone-b']),
      r('10.1.2.5:80', ['zone-c']),
      r('10.1.2.6:80', ['zone-a']),
    ],
    cluster: ['10.1.2.3:80', '10.1.2.6:80'],
  },
  {
    name: 'externalTrafficPolicy: Local, topology ignored for Local endpoints',
    zone: 'zone-a',
    svc: { etpLocal: true, nodePort: 8080 },
    endpoints: [
      r('10.1.2.3:80', ['zone-a'], { local: true }),
      r('10.1.2.4:80', ['zone-b'], { local: true }),
      r('10.1.2.5:80', ['zone-c']),
      r('10.1.2.6:80', ['zone-a']),
    ],
    cluster: ['10.1.2.3:80', '10.1.2.6:80'],
    local: ['10.1.2.3:80', '10.1.2.4:80'],
  },
  {
    name: 'internalTrafficPolicy: Local, topology ignored for Local endpoints',
    zone: 'zone-a',
    svc: { itpLocal: true, etpLocal: false, nodePort: 8080 },
    endpoints: [
      r('10.1.2.3:80', ['zone-a'], { local: true }),
      r('10.1.2.4:80', ['zone-b'], { local: true }),
      r('10.1.2.5:80', ['zone-c']),
      r('10.1.2.6:80', ['zone-a']),
    ],
    cluster: ['10.1.2.3:80', '10.1.2.6:80'],
    local: ['10.1.2.3:80', '10.1.2.4:80'],
  },
  { name: 'empty node labels', zone: '', svc: {}, endpoints: [r('10.1.2.3:80', ['zone-a'])], cluster: ['10.1.2.3:80'] },
  { name: 'empty zone label', zone: '', svc: {}, endpoints: [r('10.1.2.3:80', ['zone-a'])], cluster: ['10.1.2.3:80'] },
  {
    name: 'node in different zone, no endpoint filtering',
    zone: 'zone-b',
    svc: {},
    endpoints: [r('10.1.2.3:80', ['zone-a'])],
    cluster: ['10.1.2.3:80'],
  },
  {
    name: 'unready endpoint',
    zone: 'zone-a',
    svc: {},
    endpoints: [
      r('10.1.2.3:80', ['zone-a']),
      r('10.1.2.4:80', ['zone-b']),
      r('10.1.2.5:80', ['zone-c']),
      r('10.1.2.6:80', ['zone-a'], { ready: false }),
    ],
    cluster: ['10.1.2.3:80'],
  },
  {
    name: 'only unready endpoints in same zone (should not filter)',
    zone: 'zone-a',
    svc: {},
    endpoints: [
      r('10.1.2.3:80', ['zone-a'], { ready: false }),
      r('10.1.2.4:80', ['zone-b']),
      r('10.1.2.5:80', ['zone-c']),
      r('10.1.2.6:80', ['zone-a'], { ready: false }),
    ],
    cluster: ['10.1.2.4:80', '10.1.2.5:80'],
  },
  {
    name: 'missing hints, no filtering applied',
    zone: 'zone-a',
    svc: {},
    endpoints: [r('10.1.2.3:80', ['zone-a']), r('10.1.2.4:80', ['zone-b']), r('10.1.2.5:80'), r('10.1.2.6:80', ['zone-a'])],
    cluster: ['10.1.2.3:80', '10.1.2.4:80', '10.1.2.5:80', '10.1.2.6:80'],
  },
  {
    name: 'multiple hints per endpoint, filtering includes any endpoint with zone included',
    zone: 'zone-c',
    svc: {},
    endpoints: [
      r('10.1.2.3:80', ['zone-a', 'zone-b', 'zone-c']),
      r('10.1.2.4:80', ['zone-b', 'zone-c']),
      r('10.1.2.5:80', ['zone-b', 'zone-d']),
      r('10.1.2.6:80', ['zone-c']),
    ],
    cluster: ['10.1.2.3:80', '10.1.2.4:80', '10.1.2.6:80'],
  },
  {
    name: 'conflicting topology and localness require merging allEndpoints',
    zone: 'zone-a',
    svc: { itpLocal: false, etpLocal: true, nodePort: 8080 },
    endpoints: [
      r('10.0.0.0:80', ['zone-a'], { local: true }),
      r('10.0.0.1:80', ['zone-b'], { local: true }),
      r('10.0.0.2:80', ['zone-a']),
      r('10.0.0.3:80', ['zone-b']),
    ],
    cluster: ['10.0.0.0:80', '10.0.0.2:80'],
    local: ['10.0.0.0:80', '10.0.0.1:80'],
  },
  { name: 'internalTrafficPolicy: Local, with empty endpoints', svc: { itpLocal: true }, endpoints: [], local: [] },
  {
    name: 'internalTrafficPolicy: Local, but all endpoints are remote',
    svc: { itpLocal: true },
    endpoints: [r('10.0.0.0:80'), r('10.0.0.1:80')],
    local: [],
    onlyRemote: true,
  },
  {
    name: 'internalTrafficPolicy: Local, all endpoints are local',
    svc: { itpLocal: true },
    endpoints: [r('10.0.0.0:80', undefined, { local: true }), r('10.0.0.1:80', undefined, { local: true })],
    local: ['10.0.0.0:80', '10.0.0.1:80'],
  },
  {
    name: 'internalTrafficPolicy: Local, some endpoints are local',
    svc: { itpLocal: true },
    endpoints: [r('10.0.0.0:80', undefined, { local: true }), r('10.0.0.1:80')],
    local: ['10.0.0.0:80'],
  },
  {
    name: 'Cluster traffic policy, endpoints not Ready',
    svc: {},
    endpoints: [
      { ep: '10.0.0.0:80', ready: false },
      { ep: '10.0.0.1:80', ready: false },
    ],
    cluster: [],
  },
  {
    name: 'Cluster traffic policy, some endpoints are Ready',
    svc: {},
    endpoints: [
      { ep: '10.0.0.0:80', ready: false },
      { ep: '10.0.0.1:80', ready: true },
    ],
    cluster: ['10.0.0.1:80'],
  },
  {
    name: 'Cluster traffic policy, all endpoints are terminating',
    svc: {},
    endpoints: [
      { ep: '10.0.0.0:80', ready: false, serving: true, terminating: true, local: true },
      { ep: '10.0.0.1:80', ready: false, serving: true, terminating: true, local: false },
    ],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
  },
  {
    name: 'iTP: Local, eTP: Cluster, some endpoints local',
    svc: { itpLocal: true, etpLocal: false, nodePort: 8080 },
    endpoints: [r('10.0.0.0:80', undefined, { local: true }), r('10.0.0.1:80')],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
    local: ['10.0.0.0:80'],
  },
  {
    name: 'iTP: Cluster, eTP: Local, some endpoints local',
    svc: { itpLocal: false, etpLocal: true, nodePort: 8080 },
    endpoints: [r('10.0.0.0:80', undefined, { local: true }), r('10.0.0.1:80')],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
    local: ['10.0.0.0:80'],
  },
  {
    name: 'iTP: Local, eTP: Local, some endpoints local',
    svc: { itpLocal: true, etpLocal: true, nodePort: 8080 },
    endpoints: [r('10.0.0.0:80', undefined, { local: true }), r('10.0.0.1:80')],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
    local: ['10.0.0.0:80'],
  },
  {
    name: 'iTP: Local, eTP: Local, all endpoints remote',
    svc: { itpLocal: true, etpLocal: true, nodePort: 8080 },
    endpoints: [r('10.0.0.0:80'), r('10.0.0.1:80')],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
    local: [],
  },
  {
    name: 'iTP: Local, eTP: Local, all endpoints remote and terminating',
    svc: { itpLocal: true, etpLocal: true, nodePort: 8080 },
    endpoints: [
      { ep: '10.0.0.0:80', ready: false, serving: true, terminating: true },
      { ep: '10.0.0.1:80', ready: false, serving: true, terminating: true },
    ],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
    local: [],
    onlyRemote: true,
  },
  {
    name: 'iTP: Cluster, eTP: Local, with terminating endpoints',
    svc: { itpLocal: false, etpLocal: true, nodePort: 8080 },
    endpoints: [
      { ep: '10.0.0.0:80', ready: true, local: false },
      { ep: '10.0.0.1:80', ready: false, serving: false, local: true },
      { ep: '10.0.0.2:80', ready: false, serving: true, terminating: true, local: true },
      { ep: '10.0.0.3:80', ready: false, serving: true, terminating: true, local: false },
    ],
    cluster: ['10.0.0.0:80'],
    local: ['10.0.0.2:80'],
  },
  {
    name: 'externalTrafficPolicy ignored if not externally accessible',
    svc: { etpLocal: true },
    endpoints: [r('10.0.0.0:80'), r('10.0.0.1:80', undefined, { local: true })],
    cluster: ['10.0.0.0:80', '10.0.0.1:80'],
  },
  {
    name: 'no cluster endpoints for iTP:Local internal-only service',
    svc: { itpLocal: true },
    endpoints: [r('10.0.0.0:80'), r('10.0.0.1:80', undefined, { local: true })],
    local: ['10.0.0.1:80'],
  },
];

/** topology.go's topologyModeFromHints with node hints (PreferSameTrafficDistribution, GA). */
const NODE_HINTS: Array<Case & { mode: TopologyMode; zoneSensitive: boolean }> = [
  {
    name: 'every ready endpoint has a node hint and one names this node: only that node',
    zone: 'zone-a',
    svc: {},
    endpoints: [
      r('10.0.0.1:80', ['zone-a'], { nodes: [NODE] }),
      r('10.0.0.2:80', ['zone-a'], { nodes: ['node-2'] }),
      r('10.0.0.3:80', ['zone-b'], { nodes: ['node-3'] }),
    ],
    cluster: ['10.0.0.1:80'],
    mode: 'PreferSameNode',
    zoneSensitive: false,
  },
  {
    name: 'node hints for other nodes only: the zone hints decide',
    zone: 'zone-a',
    svc: {},
    endpoints: [
      r('10.0.0.2:80', ['zone-a'], { nodes: ['node-2'] }),
      r('10.0.0.3:80', ['zone-b'], { nodes: ['node-3'] }),
      r('10.0.0.4:80', ['zone-a'], { nodes: ['node-4'] }),
    ],
    cluster: ['10.0.0.2:80', '10.0.0.4:80'],
    mode: 'PreferSameZone',
    zoneSensitive: true,
  },
  {
    name: 'a ready endpoint without a node hint: the zone hints decide',
    zone: 'zone-a',
    svc: {},
    endpoints: [
      r('10.0.0.1:80', ['zone-a'], { nodes: [NODE] }),
      r('10.0.0.2:80', ['zone-a']),
      r('10.0.0.3:80', ['zone-b'], { nodes: ['node-3'] }),
    ],
    cluster: ['10.0.0.1:80', '10.0.0.2:80'],
    mode: 'PreferSameZone',
    zoneSensitive: true,
  },
  {
    name: 'neither node nor zone hints usable: every ready endpoint',
    zone: 'zone-a',
    svc: {},
    endpoints: [r('10.0.0.2:80', ['zone-a'], { nodes: ['node-2'] }), r('10.0.0.3:80', undefined, { nodes: ['node-3'] })],
    cluster: ['10.0.0.2:80', '10.0.0.3:80'],
    mode: '',
    zoneSensitive: false,
  },
  {
    name: 'node hints without zone hints (zones unknown to the controller)',
    zone: '',
    svc: {},
    endpoints: [r('10.0.0.1:80', undefined, { nodes: [NODE] }), r('10.0.0.2:80', undefined, { nodes: ['node-2'] })],
    cluster: ['10.0.0.1:80'],
    mode: 'PreferSameNode',
    zoneSensitive: false,
  },
  {
    name: 'an unready endpoint without hints does not stop node hints',
    zone: 'zone-a',
    svc: {},
    endpoints: [r('10.0.0.1:80', ['zone-a'], { nodes: [NODE] }), { ep: '10.0.0.2:80', ready: false }],
    cluster: ['10.0.0.1:80'],
    mode: 'PreferSameNode',
    zoneSensitive: false,
  },
  {
    name: 'only unready endpoints hinted for this node: node hints do not apply (should not filter)',
    zone: 'zone-a',
    svc: {},
    endpoints: [
      r('10.0.0.1:80', undefined, { nodes: [NODE], ready: false }),
      r('10.0.0.2:80', undefined, { nodes: ['node-2'] }),
      r('10.0.0.3:80', undefined, { nodes: ['node-3'] }),
    ],
    cluster: ['10.0.0.2:80', '10.0.0.3:80'],
    mode: '',
    zoneSensitive: false,
  },
  {
    name: 'the serving-terminating fallback ignores hints',
    zone: 'zone-a',
    svc: {},
    endpoints: [
      { ep: '10.0.0.1:80', serving: true, terminating: true, zones: ['zone-b'], nodes: ['node-2'] },
      { ep: '10.0.0.2:80', serving: true, terminating: true, zones: ['zone-c'], nodes: ['node-3'] },
      { ep: '10.0.0.3:80', serving: false, terminating: true, zones: ['zone-a'], nodes: [NODE] },
    ],
    cluster: ['10.0.0.1:80', '10.0.0.2:80'],
    mode: '',
    zoneSensitive: false,
  },
  {
    name: 'Local policy ignores node hints as it ignores zone hints',
    zone: 'zone-a',
    svc: { itpLocal: true },
    endpoints: [
      r('10.0.0.1:80', ['zone-a'], { nodes: ['node-2'], local: true }),
      r('10.0.0.2:80', ['zone-a'], { nodes: [NODE] }),
    ],
    local: ['10.0.0.1:80'],
    mode: '',
    zoneSensitive: false,
  },
];

function names(list: SelectableEndpoint[] | undefined): string[] | undefined {
  return list?.map((e) => `${e.ip}:${e.port}`).sort();
}

function run(c: Case) {
  return selectEndpoints(c.endpoints.map(endpoint), policy(c.svc), { nodeName: NODE, zone: c.zone ?? '' });
}

function check(c: Case): ReturnType<typeof run> {
  const got = run(c);
  expect(names(got.cluster)).toEqual(c.cluster?.slice().sort());
  expect(names(got.local)).toEqual(c.local?.slice().sort());
  const reachable = new Set([...(got.cluster ?? []), ...(got.local ?? [])]);
  expect(got.hasAnyEndpoints).toBe(reachable.size > 0 || (c.onlyRemote ?? false));
  return got;
}

describe('selectEndpoints: kube-proxy TestCategorizeEndpoints', () => {
  test.each(TOPOLOGY_TEST_GO.map((c) => [c.name, c] as const))('%s', (_, c) => {
    check(c);
  });
});

describe('selectEndpoints: node hints (PreferSameNode)', () => {
  test.each(NODE_HINTS.map((c) => [c.name, c] as const))('%s', (_, c) => {
    const got = check(c);
    expect(got.topologyMode).toBe(c.mode);
    expect(got.zoneSensitive).toBe(c.zoneSensitive);
  });
});

describe('selectEndpoints: the serving-terminating fallback', () => {
  test('takes only endpoints both serving and terminating, for Cluster and for Local', () => {
    const endpoints: Ep[] = [
      { ep: '10.0.0.1:80', serving: true, terminating: false, local: true }, // not ready, not terminating: unusable
      { ep: '10.0.0.2:80', serving: false, terminating: true, local: true }, // terminating, no longer serving
      { ep: '10.0.0.3:80', serving: true, terminating: true, local: true },
      { ep: '10.0.0.4:80', serving: true, terminating: true },
    ];
    check({ name: 'cluster', svc: {}, endpoints, cluster: ['10.0.0.3:80', '10.0.0.4:80'] });
    check({ name: 'local', svc: { itpLocal: true }, endpoints, local: ['10.0.0.3:80'] });
  });

  test('ready endpoints anywhere win over serving-terminating ones, also on this node', () => {
    const endpoints: Ep[] = [r('10.0.0.1:80'), { ep: '10.0.0.2:80', serving: true, terminating: true, local: true }];
    check({ name: 'cluster', svc: {}, endpoints, cluster: ['10.0.0.1:80'] });
    // Local looks at this node only: its terminating endpoint serves although another node has a ready one
    check({ name: 'local', svc: { itpLocal: true }, endpoints, local: ['10.0.0.2:80'] });
  });
});

describe('selectEndpoints: zone sensitivity', () => {
  test('zone hints on every ready endpoint make the Cluster choice depend on the zone, matching or not', () => {
    const endpoints = [r('10.0.0.1:80', ['zone-a']), r('10.0.0.2:80', ['zone-b'])].map(endpoint);
    const inA = selectEndpoints(endpoints, policy({}), { nodeName: NODE, zone: 'zone-a' });
    const inC = selectEndpoints(endpoints, policy({}), { nodeName: NODE, zone: 'zone-c' });
    expect([inA.topologyMode, inA.zoneSensitive, names(inA.cluster)]).toEqual(['PreferSameZone', true, ['10.0.0.1:80']]);
    expect([inC.topologyMode, inC.zoneSensitive, names(inC.cluster)]).toEqual(['', true, ['10.0.0.1:80', '10.0.0.2:80']]);
  });

  test('without complete zone hints, or without ready endpoints, the zone is not consulted', () => {
    const partial = [r('10.0.0.1:80', ['zone-a']), r('10.0.0.2:80')].map(endpoint);
    expect(selectEndpoints(partial, policy({}), { nodeName: NODE, zone: 'zone-a' }).zoneSensitive).toBe(false);
    const unready = [{ ep: '10.0.0.1:80', zones: ['zone-a'], serving: true, terminating: true }].map(endpoint);
    expect(selectEndpoints(unready, policy({}), { nodeName: NODE, zone: 'zone-a' }).zoneSensitive).toBe(false);
  });

  test('an ITP Local internal-only port never consults the zone (it has no Cluster choice)', () => {
    const got = selectEndpoints([r('10.0.0.1:80', ['zone-a'], { local: true })].map(endpoint), policy({ itpLocal: true }), {
      nodeName: NODE,
      zone: 'zone-a',
    });
    expect([got.cluster, got.zoneSensitive]).toEqual([undefined, false]);
  });
});
