/* DNS capture (mesh-dns-capture: "true"): UDP and TCP port 53 to the resolvers goes to the proxy's
 * 15053, replies show the resolver; the proxy's own queries and other destinations are left alone;
 * a proxy's ISTIO_META_DNS_CAPTURE overrides the node default for its pod.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SimPod } from '../harness';
import { answeredBy, PROBE, probe, stopAgent } from './lb-env';
import {
  addMeshPod,
  createMeshEnv,
  endpoint,
  ISTIO_PROXY,
  sidecarReply,
  startSidecar,
  waitForMode,
  type MeshEnv,
} from './mesh-env';

describe.skipIf(process.getuid?.() !== 0)('sidecar DNS capture (needs root)', () => {
  let env: MeshEnv;
  let app: SimPod;
  let resolver: SimPod;
  let other: SimPod;

  async function udpServer(pod: SimPod, addr: string, port: number, id: string, uid?: number) {
    const c = env.node.spawn([PROBE, 'serve', '--proto', 'udp', '--addr', addr, '--port', String(port), '--id', id], {
      netnsPath: pod.netnsPath,
      inCgroup: false,
      uid,
      gid: uid,
    });
    await env.node.waitForLine(c, 'ready');
  }

  beforeAll(async () => {
    env = await createMeshEnv({ backends: 2 });
    [resolver, other] = env.backends;
    // configure the resolver list before the agent loads (rodata): restart with DNS capture on
    await stopAgent(env);
    const { writeConfig, startAgent } = await import('./lb-env');
    writeConfig(env, {
      'cni-conf-dir': env.confDir,
      'cni-bin-dir': env.binDir,
      'state-dir': env.stateDir,
      'mesh-dns-capture': 'true',
      'mesh-dns-servers': resolver.ipv4,
    });
    await startAgent(env);
    await udpServer(resolver, resolver.ipv4, 53, 'real-resolver');
    await udpServer(other, other.ipv4, 53, 'other-dns');
    app = await addMeshPod(env, 'meshed', { annotations: { 'sidecar.istio.io/status': '{}' } });
    await startSidecar(env, app, ['--extra-port', '15053']);
    await udpServer(app, '127.0.0.1', 15053, 'dns-proxy', 1337);
  });

  afterAll(async () => {
    await stopAgent(env);
    await env?.node.destroy();
  });

  it('UDP queries to the resolver reach the proxy, and replies come from the resolver', async () => {
    const unconnected = await probe(env, resolver.ipv4, 53, { proto: 'udp', udpMode: 'unconnected', from: app, count: 3 });
    expect(unconnected.map((r) => [answeredBy(r), r.peer])).toEqual(Array(3).fill(['dns-proxy', `${resolver.ipv4}:53`]));
    const connected = await probe(env, resolver.ipv4, 53, { proto: 'udp', udpMode: 'connected', from: app });
    expect([answeredBy(connected[0]), connected[0].peer]).toEqual(['dns-proxy', `${resolver.ipv4}:53`]);
  });

  it('TCP DNS to the resolver reaches the proxy on 15053 with the original destination', async () => {
    const r = sidecarReply((await probe(env, resolver.ipv4, 53, { from: app }))[0].reply)!;
    expect(r).toMatchObject({ via: '15053', orig: `${resolver.ipv4}:53` });
  });

  it("the proxy's own queries and other destinations are not captured", async () => {
    const own = await probe(env, resolver.ipv4, 53, { proto: 'udp', udpMode: 'unconnected', from: app, uid: 1337 });
    expect(answeredBy(own[0])).toBe('real-resolver');
    const elsewhere = await probe(env, other.ipv4, 53, { proto: 'udp', udpMode: 'unconnected', from: app });
    expect(answeredBy(elsewhere[0])).toBe('other-dns');
  });

  it('excludeOutboundPorts "53" keeps UDP DNS out of the proxy too (Istio: "-p udp --dport 53 -j RETURN")', async () => {
    const excluded = await addMeshPod(env, 'dns-excluded', {
      annotations: { 'sidecar.istio.io/status': '{}', 'traffic.sidecar.istio.io/excludeOutboundPorts': '53' },
    });
    await udpServer(excluded, '127.0.0.1', 15053, 'dns-proxy-excluded', 1337);
    await waitForMode(env, excluded, 'sidecar');
    expect(answeredBy((await probe(env, resolver.ipv4, 53, { proto: 'udp', udpMode: 'unconnected', from: excluded }))[0])).toBe(
      'real-resolver',
    );
    expect(answeredBy((await probe(env, resolver.ipv4, 53, { proto: 'udp', udpMode: 'connected', from: excluded }))[0])).toBe(
      'real-resolver',
    );
  });

  it("a proxy with ISTIO_META_DNS_CAPTURE=false keeps its pod's DNS uncaptured, whatever mesh-dns-capture says", async () => {
    const off = await addMeshPod(env, 'dns-off', {
      annotations: { 'sidecar.istio.io/status': '{}' },
      containers: [{ name: 'app' }, { ...ISTIO_PROXY, env: [{ name: 'ISTIO_META_DNS_CAPTURE', value: 'false' }] }],
    });
    await startSidecar(env, off, ['--extra-port', '15053']);
    await udpServer(off, '127.0.0.1', 15053, 'dns-proxy-off', 1337);
    const ep = await waitForMode(env, off, 'sidecar');
    expect(ep.reason).toContain('dns-capture=off(ISTIO_META_DNS_CAPTURE=false)');
    expect(answeredBy((await probe(env, resolver.ipv4, 53, { proto: 'udp', udpMode: 'unconnected', from: off }))[0])).toBe(
      'real-resolver',
    );
    // the pod without the env takes the node default
    expect((await endpoint(env, app))?.reason).toContain('dns-capture=on(mesh-dns-capture)');
  });

  it('a pod without a sidecar is not captured', async () => {
    const res = await probe(env, resolver.ipv4, 53, { proto: 'udp', udpMode: 'unconnected' });
    expect(answeredBy(res[0])).toBe('real-resolver');
  });
});
