/* NodePorts through socket-LB, end to end on a simulated node: a connect from a pod or from the
 * node itself to any of the node's addresses on a nodePort reaches a backend, and so does one to
 * loopback from the node (a pod's loopback stays its own). The node's addresses are followed live
 * (an address added to the node is served, a removed one no longer). Traffic from the node goes to
 * the Cluster endpoints whatever externalTrafficPolicy and internalTrafficPolicy say, as kube-proxy
 * routes it. Both families, TCP and UDP. The agent runs in standalone mode as node "sim-node".
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BRIDGE_NAME, waitFor } from '../harness';
import {
  answeredBy,
  createLbEnv,
  lbList,
  PROBE,
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
  type LbEnv,
  type ProbeOpts,
  type ServiceOpts,
} from './lb-env';

const NODE = 'sim-node';
const NP_TCP = 30080;
const NP_UDP = 30053;
const PORTS = [
  { name: 'http', port: 80, targetPort: TCP_PORT, protocol: 'TCP' as const, nodePort: NP_TCP },
  { name: 'dns', port: 53, targetPort: UDP_PORT, protocol: 'UDP' as const, nodePort: NP_UDP },
];
const SLICE_PORTS = [
  { name: 'http', port: TCP_PORT, protocol: 'TCP' as const },
  { name: 'dns', port: UDP_PORT, protocol: 'UDP' as const },
];
/** Addresses added to the node while the agent runs (documentation ranges, on the node's bridge). */
const EXTRA4 = '192.0.2.44';
const EXTRA6 = '2001:db8::44';

describe.skipIf(process.getuid?.() !== 0)('socket-LB NodePorts (needs root)', () => {
  let env: LbEnv;
  let be1: string;
  let be2: string;

  const host = (ip: string) => (ip.includes(':') ? `[${ip}]` : ip);

  /** One dual-stack NodePort Service `name` with both backend pods in both families. */
  function writeNodePortService(
    name: string,
    svc: Partial<ServiceOpts>,
    endpoints: Array<{ nodeName?: string; ready?: boolean }> = [{}, {}],
  ): void {
    const eps = (family: 4 | 6) =>
      endpoints.map((e, i) => ({ ...e, ip: (family === 4 ? env.backends[i].ipv4 : env.backends[i].ipv6)! }));
    writeObjects(env, `${name}.yaml`, [
      serviceYaml(name, {
        clusterIP: '10.96.3.10',
        clusterIPs: ['10.96.3.10', 'fd00:96::3:10'],
        ports: PORTS,
        type: 'NodePort',
        ...svc,
      }),
      sliceYaml(`${name}-v4`, { service: name, family: 4, endpoints: eps(4), ports: SLICE_PORTS }),
      sliceYaml(`${name}-v6`, { service: name, family: 6, endpoints: eps(6), ports: SLICE_PORTS }),
    ]);
  }

  async function waitForNodePorts(pods: Array<0 | 1>): Promise<void> {
    for (const family of [4, 6] as const) {
      const any = family === 4 ? '0.0.0.0' : '[::]';
      const addr = (p: 0 | 1) => (family === 4 ? env.backends[p].ipv4 : `[${env.backends[p].ipv6}]`);
      await waitForBackends(
        env,
        `${any}:${NP_TCP}/TCP`,
        pods.map((p) => `${addr(p)}:${TCP_PORT}`),
      );
      await waitForBackends(
        env,
        `${any}:${NP_UDP}/UDP`,
        pods.map((p) => `${addr(p)}:${UDP_PORT}`),
      );
    }
  }

  /** TCP and connected UDP to ip on the nodePorts: every attempt answered, by exactly `names`, the peer shown as dialled. */
  async function expectServed(ip: string, names: string[], o: ProbeOpts = {}): Promise<void> {
    for (const [proto, port] of [
      ['tcp', NP_TCP],
      ['udp', NP_UDP],
    ] as const) {
      const res = await probe(env, ip, port, { count: 20, ...o, proto, udpMode: 'connected' });
      const where = `${proto} ${ip}:${port} from ${o.from === 'node' ? 'the node' : 'the client pod'}`;
      expect(
        res.filter((r) => !r.ok),
        where,
      ).toEqual([]);
      expect(new Set(res.map(answeredBy)), where).toEqual(new Set(names));
      expect(new Set(res.map((r) => r.peer)), where).toEqual(new Set([`${host(ip)}:${port}`]));
    }
  }

  async function counters(): Promise<Record<string, number>> {
    return JSON.parse((await sluice(env, ['bpf', 'lb', 'counters', '-o', 'json'])).stdout);
  }

  async function nodeCmd(cmd: string[]): Promise<void> {
    await env.node.exec(cmd, { inCgroup: false });
  }

  beforeAll(async () => {
    env = await createLbEnv({ backends: 2 });
    [be1, be2] = env.backends.map((p) => p.name);
    writeConfig(env, { 'node-name': NODE });
    await startAgent(env);
  });

  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail' && env?.agent)
      console.error(`[agent log tail]\n${env.node.output(env.agent).stderr.split('\n').slice(-30).join('\n')}`);
  });

  afterAll(async () => {
    await stopAgent(env);
    if (env) await sluice(env, ['uninstall'], true);
    await env?.node.destroy(); // the bridge and any address left on it go with the node's namespace
  });

  it('a nodePort is listed as 0.0.0.0 and [::] and reached through each node address, from a pod and from the node', async () => {
    writeNodePortService('np', {});
    await waitForNodePorts([0, 1]);
    const listed = (await lbList(env)).filter(
      (s) => s.frontend.endsWith(`:${NP_TCP}/TCP`) || s.frontend.endsWith(`:${NP_UDP}/UDP`),
    );
    expect(listed.map((s) => [s.frontend, s.scope]).sort()).toEqual([
      [`0.0.0.0:${NP_UDP}/UDP`, 'nodePort'],
      [`0.0.0.0:${NP_TCP}/TCP`, 'nodePort'],
      [`[::]:${NP_UDP}/UDP`, 'nodePort'],
      [`[::]:${NP_TCP}/TCP`, 'nodePort'],
    ]);
    for (const ip of [env.node.gateway4, env.node.gateway6!]) {
      await expectServed(ip, [be1, be2]);
      await expectServed(ip, [be1, be2], { from: 'node' });
    }
  });

  it("loopback reaches the nodePort from the node; a pod's loopback stays the pod's own", async () => {
    writeNodePortService('np', {});
    await waitForNodePorts([0, 1]);
    await expectServed('127.0.0.1', [be1, be2], { from: 'node' });
    await expectServed('::1', [be1, be2], { from: 'node' });

    // a server on the client pod's own loopback answers its connects to 127.0.0.1:nodePort
    const own = env.node.spawn(
      [PROBE, 'serve', '--proto', 'tcp', '--addr', '127.0.0.1', '--port', String(NP_TCP), '--id', 'pod-own-loopback'],
      {
        netnsPath: env.client.netnsPath,
        inCgroup: false,
      },
    );
    await env.node.waitForLine(own, 'ready');
    const before = await counters();
    const res = await probe(env, '127.0.0.1', NP_TCP, { count: 5 });
    expect(res.map(answeredBy)).toEqual(Array(5).fill('pod-own-loopback'));
    // nor is the unspecified address, which the pod's kernel takes as the pod itself
    const any = await probe(env, '0.0.0.0', NP_TCP, { count: 2 });
    expect(any.map(answeredBy)).toEqual(Array(2).fill('pod-own-loopback'));
    expect((await counters()).translated - before.translated).toBe(0);
    own.kill('SIGTERM');
  });

  it("the node's addresses are followed live: an added address is served, a removed one no longer", async () => {
    writeNodePortService('np', {});
    await waitForNodePorts([0, 1]);
    await nodeCmd(['ip', 'addr', 'add', `${EXTRA4}/32`, 'dev', BRIDGE_NAME]);
    await nodeCmd(['ip', 'addr', 'add', `${EXTRA6}/128`, 'dev', BRIDGE_NAME, 'nodad']);
    for (const ip of [EXTRA4, EXTRA6]) {
      await waitFor(`${ip} served as a node address`, async () => (await probe(env, ip, NP_TCP, { timeoutMs: 500 }))[0].ok);
      await expectServed(ip, [be1, be2]);
    }

    await nodeCmd(['ip', 'addr', 'del', `${EXTRA4}/32`, 'dev', BRIDGE_NAME]);
    await nodeCmd(['ip', 'addr', 'del', `${EXTRA6}/128`, 'dev', BRIDGE_NAME]);
    for (const ip of [EXTRA4, EXTRA6]) {
      await waitFor(`${ip} no longer served`, async () => {
        const before = await counters();
        const r = await probe(env, ip, NP_TCP, { timeoutMs: 300 });
        return !r[0].ok && (await counters()).translated === before.translated;
      });
    }
  });

  it("an address that is not the node's is left alone on a nodePort", async () => {
    writeNodePortService('np', {});
    await waitForNodePorts([0, 1]);
    const before = await counters();
    // an unused address of the pod subnet: another machine, as far as this node knows
    const other = env.node.gateway4.replace(/\.1$/, '.250');
    const res = await probe(env, other, NP_TCP, { timeoutMs: 300 });
    expect(res[0].ok).toBe(false);
    expect((await counters()).translated).toBe(before.translated);
  });

  it('externalTrafficPolicy and internalTrafficPolicy Local: the nodePort still reaches the endpoints on other nodes, the ClusterIP is refused', async () => {
    writeNodePortService('np', { externalTrafficPolicy: 'Local', internalTrafficPolicy: 'Local' }, [
      { nodeName: 'node-b' },
      { nodeName: 'node-c' },
    ]);
    await waitFor('ClusterIP without local endpoints', async () =>
      (await lbList(env)).some((s) => s.frontend === '10.96.3.10:80/TCP' && s.noLocalEndpoints),
    );
    await waitForNodePorts([0, 1]);
    for (const ip of [env.node.gateway4, env.node.gateway6!]) {
      await expectServed(ip, [be1, be2]);
      await expectServed(ip, [be1, be2], { from: 'node' });
    }
    await expectServed('127.0.0.1', [be1, be2], { from: 'node' });
    const refused = await probe(env, '10.96.3.10', 80, { timeoutMs: 2000 });
    expect(refused.map((r) => [r.ok, r.errno])).toEqual([[false, 111]]);
  });

  it('a nodePort without endpoints refuses at once, counted as no_backend', async () => {
    writeNodePortService('np', {}, [{ ready: false }, { ready: false }]);
    await waitForNodePorts([]);
    const before = await counters();
    for (const [ip, from] of [
      [env.node.gateway4, undefined],
      [env.node.gateway6!, undefined],
      ['127.0.0.1', 'node'],
    ] as const) {
      const res = await probe(env, ip, NP_TCP, { timeoutMs: 2000, from });
      expect(
        res.map((r) => [r.ok, r.errno, r.stage]),
        ip,
      ).toEqual([[false, 111, 'connect']]);
    }
    expect((await counters()).no_backend - before.no_backend).toBe(3);
    removeObjects(env, 'np.yaml');
    await waitForAbsent(env, `0.0.0.0:${NP_TCP}/TCP`);
    const gone = await probe(env, env.node.gateway4, NP_TCP, { timeoutMs: 500 });
    // nothing listens on the node: the kernel's own refusal, not sluice's
    expect([gone[0].ok, (await counters()).no_backend - before.no_backend]).toEqual([false, 3]);
  });
});
