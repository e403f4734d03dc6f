/* Socket-LB endpoint selection as kube-proxy's, end to end on a simulated node: terminating
 * fallback, internalTrafficPolicy Local (and its own refusal counter), topology hints against the
 * zone of this node's Node object, the service-proxy-name label, LoadBalancer IPs (with
 * externalTrafficPolicy Local for connections from the pods and the node itself). Every case runs
 * over IPv4 and IPv6, TCP and UDP. The agent runs in standalone mode as node "sim-node".
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../harness';
import {
  answeredBy,
  createLbEnv,
  lbList,
  nodeYaml,
  probe,
  removeObjects,
  serviceYaml,
  sliceYaml,
  sluice,
  startAgent,
  stopAgent,
  TCP_PORT,
  UDP_PORT,
  waitForAbsent,
  waitForBackends,
  writeConfig,
  writeObjects,
  type EndpointSpec,
  type LbEnv,
  type ProbeOpts,
  type ServiceOpts,
} from './lb-env';

const NODE = 'sim-node';
const ZONE_LABEL = 'topology.kubernetes.io/zone';
const PORTS = [
  { name: 'http', port: 80, targetPort: TCP_PORT, protocol: 'TCP' as const },
  { name: 'dns', port: 53, targetPort: UDP_PORT, protocol: 'UDP' as const },
];
const SLICE_PORTS = [
  { name: 'http', port: TCP_PORT, protocol: 'TCP' as const },
  { name: 'dns', port: UDP_PORT, protocol: 'UDP' as const },
];

/** A Service's VIP in one family: the address a client connects to and how lb list names its frontends. */
interface Vip {
  ip: string;
  family: 4 | 6;
}

const frontendsOf = (v: Vip): string[] => {
  const host = v.family === 6 ? `[${v.ip}]` : v.ip;
  return [`${host}:80/TCP`, `${host}:53/UDP`];
};

describe.skipIf(process.getuid?.() !== 0)('socket-LB endpoint selection as kube-proxy (needs root)', () => {
  let env: LbEnv;
  let be1: string;
  let be2: string;

  /** Endpoint of backend pod 0 or 1 in a family, with conditions, node and hints. */
  type EndpointOf = Omit<EndpointSpec, 'ip'> & { pod: 0 | 1 };

  /**
   * One Service per family (`name` and `name-6`, VIPs `vip4`/`vip6`), both with the same ports and
   * endpoints (the backend pods' addresses of that family), written to `<name>.yaml`.
   */
  function writeService(
    name: string,
    o: {
      vip4: string;
      vip6: string;
      svc?: Partial<ServiceOpts>;
      svc6?: Partial<ServiceOpts>;
      endpoints: EndpointOf[];
      sliceLabels?: Record<string, string>;
    },
  ): void {
    const docs: string[] = [];
    for (const [family, svcName, vip, extra] of [
      [4, name, o.vip4, o.svc],
      [6, `${name}-6`, o.vip6, { ...o.svc, ...o.svc6 }],
    ] as const) {
      docs.push(serviceYaml(svcName, { clusterIP: vip, ports: PORTS, ...extra }));
      const endpoints = o.endpoints.map(({ pod, ...rest }) => ({
        ...rest,
        ip: (family === 4 ? env.backends[pod].ipv4 : env.backends[pod].ipv6)!,
      }));
      docs.push(sliceYaml(`${svcName}-1`, { service: svcName, family, endpoints, ports: SLICE_PORTS, labels: o.sliceLabels }));
    }
    writeObjects(env, `${name}.yaml`, docs);
  }

  function writeNode(labels: Record<string, string>): void {
    writeObjects(env, 'nodes.yaml', [nodeYaml(NODE, labels), nodeYaml('other-node', { [ZONE_LABEL]: 'zone-z' })]);
  }

  /** Waits until lb list shows both frontends of every VIP with the given backend pods. */
  async function waitForPods(vips: Vip[], pods: Array<0 | 1>): Promise<void> {
    for (const v of vips) {
      const [tcp, udp] = frontendsOf(v);
      const addr = (p: 0 | 1) => (v.family === 4 ? env.backends[p].ipv4 : `[${env.backends[p].ipv6}]`);
      await waitForBackends(
        env,
        tcp,
        pods.map((p) => `${addr(p)}:${TCP_PORT}`),
      );
      await waitForBackends(
        env,
        udp,
        pods.map((p) => `${addr(p)}:${UDP_PORT}`),
      );
    }
  }

  /** TCP and connected UDP to each VIP: every attempt answered, by exactly the named backends. */
  async function expectAnsweredBy(vips: Vip[], names: string[], o: ProbeOpts = {}): Promise<void> {
    for (const v of vips) {
      for (const [proto, port] of [
        ['tcp', 80],
        ['udp', 53],
      ] as const) {
        const res = await probe(env, v.ip, port, { count: 20, ...o, proto, udpMode: 'connected' });
        expect(
          res.filter((r) => !r.ok),
          `${proto} ${v.ip}`,
        ).toEqual([]);
        expect(new Set(res.map(answeredBy)), `${proto} ${v.ip}`).toEqual(new Set(names));
      }
    }
  }

  async function counters(): Promise<Record<string, number>> {
    return JSON.parse((await sluice(env, ['bpf', 'lb', 'counters', '-o', 'json'])).stdout);
  }

  beforeAll(async () => {
    env = await createLbEnv({ backends: 2 });
    [be1, be2] = env.backends.map((p) => p.name);
    writeConfig(env, { 'node-name': NODE });
    writeNode({ [ZONE_LABEL]: 'zone-a' });
    await startAgent(env);
  });

  // a failure shows what the agent was doing
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail' && env?.agent)
      console.error(`[agent log tail]\n${env.node.output(env.agent).stderr.split('\n').slice(-30).join('\n')}`);
  });

  afterAll(async () => {
    await stopAgent(env);
    if (env) await sluice(env, ['uninstall'], true); // programs and pins go with the agent's own tool
    await env?.node.destroy();
  });

  it('with no ready endpoint, connections go to the serving and terminating ones; a ready one takes over again', async () => {
    const vips: Vip[] = [
      { ip: '10.96.1.10', family: 4 },
      { ip: 'fd00:96::1:10', family: 6 },
    ];
    const o = { vip4: vips[0].ip, vip6: vips[1].ip };
    writeService('term', {
      ...o,
      endpoints: [
        { pod: 0, ready: false, serving: true, terminating: true },
        { pod: 1, ready: false, serving: false, terminating: true },
      ],
    });
    await waitForPods(vips, [0]);
    await expectAnsweredBy(vips, [be1]);

    writeService('term', {
      ...o,
      endpoints: [
        { pod: 0, ready: false, serving: true, terminating: true },
        { pod: 1, ready: true },
      ],
    });
    await waitForPods(vips, [1]);
    await expectAnsweredBy(vips, [be2]);
    removeObjects(env, 'term.yaml');
    for (const v of vips) await waitForAbsent(env, frontendsOf(v)[0]);
  });

  it("internalTrafficPolicy Local: only this node's endpoint; none here: refused at once and counted as no_local_backend", async () => {
    const vips: Vip[] = [
      { ip: '10.96.1.20', family: 4 },
      { ip: 'fd00:96::1:20', family: 6 },
    ];
    const o = { vip4: vips[0].ip, vip6: vips[1].ip, svc: { internalTrafficPolicy: 'Local' as const } };
    writeService('itp', {
      ...o,
      endpoints: [
        { pod: 0, nodeName: NODE },
        { pod: 1, nodeName: 'other-node' },
      ],
    });
    await waitForPods(vips, [0]);
    await expectAnsweredBy(vips, [be1]);

    writeService('itp', {
      ...o,
      endpoints: [
        { pod: 0, nodeName: 'other-node' },
        { pod: 1, nodeName: 'other-node' },
      ],
    });
    await waitForPods(vips, []);
    const listed = (await lbList(env)).filter((s) => vips.some((v) => frontendsOf(v).includes(s.frontend)));
    expect(listed.map((s) => [s.frontend, s.noLocalEndpoints]).sort()).toEqual(
      vips
        .flatMap(frontendsOf)
        .map((f) => [f, true])
        .sort(),
    );
    expect((await sluice(env, ['bpf', 'lb', 'list'])).stdout).toContain(
      'no backends on this node (internalTrafficPolicy Local): connections refused',
    );

    const before = await counters();
    let attempts = 0;
    for (const v of vips) {
      for (const [proto, port] of [
        ['tcp', 80],
        ['udp', 53],
      ] as const) {
        // a 3 s timeout per attempt: a dropped SYN would end in ETIMEDOUT (110), a refusal is 111 at connect
        const res = await probe(env, v.ip, port, { proto, udpMode: 'connected', count: 3, timeoutMs: 3000 });
        expect(
          res.map((r) => [r.ok, r.errno, r.stage]),
          `${proto} ${v.ip}`,
        ).toEqual(Array(3).fill([false, 111, 'connect']));
        attempts += res.length;
      }
    }
    const after = await counters();
    expect(after.no_local_backend - before.no_local_backend).toBe(attempts);
    expect(after.no_backend - before.no_backend).toBe(0);
    expect((await sluice(env, ['bpf', 'lb', 'counters'])).stdout).toMatch(
      new RegExp(`^no_local_backend\\s+${after.no_local_backend}$`, 'm'),
    );

    // endpoints nowhere at all: the plain no-endpoints refusal, not the local one
    writeService('itp', { ...o, endpoints: [{ pod: 0, nodeName: NODE, ready: false, serving: false }] });
    await waitFor('no endpoints anywhere', async () =>
      (await lbList(env)).some((s) => s.frontend === frontendsOf(vips[0])[0] && !s.noLocalEndpoints),
    );
    const none = await probe(env, vips[0].ip, 80, { timeoutMs: 3000 });
    expect(none.map((r) => [r.ok, r.errno])).toEqual([[false, 111]]);
    const last = await counters();
    expect([last.no_backend - after.no_backend, last.no_local_backend - after.no_local_backend]).toEqual([1, 0]);
    removeObjects(env, 'itp.yaml');
    for (const v of vips) await waitForAbsent(env, frontendsOf(v)[0]);
  });

  it("topology hints follow the zone of this node's Node object, live; node hints win where they apply", async () => {
    const vips: Vip[] = [
      { ip: '10.96.1.30', family: 4 },
      { ip: 'fd00:96::1:30', family: 6 },
    ];
    const o = { vip4: vips[0].ip, vip6: vips[1].ip, svc: { trafficDistribution: 'PreferSameZone' } };
    writeService('zonal', {
      ...o,
      endpoints: [
        { pod: 0, nodeName: 'n-a', zones: ['zone-a'] },
        { pod: 1, nodeName: 'n-b', zones: ['zone-b'] },
      ],
    });
    await waitForPods(vips, [0]);
    await expectAnsweredBy(vips, [be1]);

    writeNode({ [ZONE_LABEL]: 'zone-b' });
    await waitForPods(vips, [1]);
    await expectAnsweredBy(vips, [be2]);

    writeNode({ [ZONE_LABEL]: 'zone-c' }); // no endpoint hinted for this zone: all of them
    await waitForPods(vips, [0, 1]);
    await expectAnsweredBy(vips, [be1, be2]);

    // PreferSameNode: every endpoint has a node hint and one names this node
    writeService('zonal', {
      ...o,
      endpoints: [
        { pod: 0, nodeName: 'n-a', nodes: ['n-a'], zones: ['zone-c'] },
        { pod: 1, nodeName: NODE, nodes: [NODE], zones: ['zone-c'] },
      ],
    });
    await waitForPods(vips, [1]);
    await expectAnsweredBy(vips, [be2]);
    writeNode({ [ZONE_LABEL]: 'zone-a' });
    removeObjects(env, 'zonal.yaml');
    for (const v of vips) await waitForAbsent(env, frontendsOf(v)[0]);
  });

  it('a Service labelled service.kubernetes.io/service-proxy-name is left alone, until the label goes', async () => {
    const vips: Vip[] = [
      { ip: '10.96.1.40', family: 4 },
      { ip: 'fd00:96::1:40', family: 6 },
    ];
    const both = [{ pod: 0 as const }, { pod: 1 as const }];
    writeService('foreign', {
      vip4: vips[0].ip,
      vip6: vips[1].ip,
      svc: { labels: { 'service.kubernetes.io/service-proxy-name': 'other-proxy' } },
      endpoints: both,
    });
    writeService('control', { vip4: '10.96.1.41', vip6: 'fd00:96::1:41', endpoints: both }); // written after: once it is served, so was the file above
    await waitForPods(
      [
        { ip: '10.96.1.41', family: 4 },
        { ip: 'fd00:96::1:41', family: 6 },
      ],
      [0, 1],
    );
    const listed = (await lbList(env)).map((s) => s.frontend);
    for (const f of vips.flatMap(frontendsOf)) expect(listed).not.toContain(f);

    const before = await counters();
    for (const v of vips) {
      // untranslated, the VIP is not routable here: the connect fails, but not by sluice's refusal
      const res = await probe(env, v.ip, 80, { timeoutMs: 500 });
      expect(res[0].ok, v.ip).toBe(false);
      expect(res[0].errno, v.ip).not.toBe(111);
    }
    const after = await counters();
    expect([after.translated - before.translated, after.no_backend - before.no_backend]).toEqual([0, 0]);

    writeService('foreign', { vip4: vips[0].ip, vip6: vips[1].ip, endpoints: both });
    await waitForPods(vips, [0, 1]);
    await expectAnsweredBy(vips, [be1, be2]);
    removeObjects(env, 'foreign.yaml');
    removeObjects(env, 'control.yaml');
    for (const v of vips) await waitForAbsent(env, frontendsOf(v)[0]);
  });

  it('LoadBalancer ingress IPs with ipMode VIP or none are served; Proxy ones are not; ETP Local still reaches every endpoint from the pods and the node', async () => {
    const lbIps: Vip[] = [
      { ip: '10.97.1.50', family: 4 },
      { ip: 'fd00:97::1:50', family: 6 },
    ];
    writeService('lb', {
      vip4: '10.96.1.50',
      vip6: 'fd00:96::1:50',
      svc: {
        type: 'LoadBalancer',
        externalTrafficPolicy: 'Local',
        loadBalancerIngress: [{ ip: lbIps[0].ip }, { ip: '10.97.1.51', ipMode: 'Proxy' }],
      },
      svc6: {
        loadBalancerIngress: [
          { ip: lbIps[1].ip, ipMode: 'VIP' },
          { ip: 'fd00:97::1:51', ipMode: 'Proxy' },
        ],
      },
      // no endpoint on this node: with ETP Local only outside clients would be limited to local ones
      endpoints: [
        { pod: 0, nodeName: 'other-node' },
        { pod: 1, nodeName: 'n-b' },
      ],
    });
    await waitForPods(lbIps, [0, 1]);
    const listed = await lbList(env);
    expect(
      listed.filter((s) => s.frontend.startsWith('10.97.1.50:') || s.frontend.startsWith('[fd00:97::1:50]:')).map((s) => s.scope),
    ).toEqual(Array(4).fill('externalIP'));
    expect(listed.filter((s) => /10\.97\.1\.51|fd00:97::1:51/.test(s.frontend))).toEqual([]);
    await expectAnsweredBy(lbIps, [be1, be2]);
    await expectAnsweredBy(lbIps, [be1, be2], { from: 'node' });
    removeObjects(env, 'lb.yaml');
    for (const v of lbIps) await waitForAbsent(env, frontendsOf(v)[0]);
  });
});
