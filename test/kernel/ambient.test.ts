/* Ambient-mode capture end to end: Istio's enrolment rules on live Namespace and Pod objects, a
 * stand-in node proxy (sl-probe sidecar with mark 0x539, listening on 15001/15006/15008 inside
 * each enrolled pod's namespace, as ztunnel does), socket-LB for the proxy's own connects.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor, type SimPod } from '../harness';
import { answeredBy, PROBE, probe, sluice, stopAgent, TCP_PORT, UDP_PORT, writeObjects, writeWebService } from './lb-env';
import {
  addMeshPod,
  createMeshEnv,
  endpoint,
  namespaceYaml,
  sidecarReply,
  startApp,
  updatePodObject,
  waitForMode,
  type MeshEnv,
} from './mesh-env';

const VIP = '10.96.0.10';
const AMB = { 'istio.io/dataplane-mode': 'ambient' };

describe.skipIf(process.getuid?.() !== 0)('ambient capture (needs root)', () => {
  let env: MeshEnv;
  let plain: SimPod; // namespace shop, no pod labels: follows the namespace
  let optedOut: SimPod; // ambient.istio.io/redirection: disabled
  let labelledNone: SimPod; // istio.io/dataplane-mode=none
  let sidecar: SimPod; // sidecar.istio.io/status: sidecar wins
  let podLabelled: SimPod; // namespace other, pod labelled ambient
  let be1: string;
  let be2: string;

  async function startNodeProxy(pod: SimPod): Promise<void> {
    const c = env.node.spawn(
      [PROBE, 'sidecar', '--id', `zt-${pod.name}`, '--mark', '0x539', '--extra-port', '15008', '--forward'],
      { netnsPath: pod.netnsPath },
    );
    await env.node.waitForLine(c, 'ready');
  }

  function labelNamespace(labels: Record<string, string>): void {
    writeObjects(env, 'ns-shop.yaml', [namespaceYaml('shop', labels)]);
  }

  beforeAll(async () => {
    env = await createMeshEnv({ backends: 2 });
    [be1, be2] = env.backends.map((p) => p.name);
    await writeWebService(env, VIP);
    labelNamespace({});
    writeObjects(env, 'ns-other.yaml', [namespaceYaml('other')]);
    plain = await addMeshPod(env, 'plain', { namespace: 'shop' });
    optedOut = await addMeshPod(env, 'opted-out', {
      namespace: 'shop',
      annotations: { 'ambient.istio.io/redirection': 'disabled' },
    });
    labelledNone = await addMeshPod(env, 'labelled-none', { namespace: 'shop', labels: { 'istio.io/dataplane-mode': 'none' } });
    sidecar = await addMeshPod(env, 'with-sidecar', { namespace: 'shop', annotations: { 'sidecar.istio.io/status': '{}' } });
    podLabelled = await addMeshPod(env, 'pod-labelled', { namespace: 'other', labels: AMB });
    for (const p of [plain, podLabelled]) {
      await startNodeProxy(p);
      await startApp(env, p, 8080);
    }
  });

  afterAll(async () => {
    await stopAgent(env);
    await env?.node.destroy();
  });

  it('a pod labelled ambient is enrolled; its unlabelled namespace leaves the others out', async () => {
    expect((await endpoint(env, podLabelled))?.mode).toBe('ambient');
    expect((await endpoint(env, plain))?.mode).toBe('none');
    expect((await endpoint(env, sidecar))?.mode).toBe('sidecar');
  });

  it('labelling the namespace enrols its pods live, except the opted-out ones; sidecar wins', async () => {
    labelNamespace(AMB);
    const ep = await waitForMode(env, plain, 'ambient');
    expect(ep.reason).toContain('namespace label istio.io/dataplane-mode=ambient');
    expect(await endpoint(env, optedOut)).toMatchObject({
      mode: 'none',
      reason: expect.stringContaining('ambient.istio.io/redirection=disabled'),
    });
    expect(await endpoint(env, labelledNone)).toMatchObject({
      mode: 'none',
      reason: expect.stringContaining('istio.io/dataplane-mode=none'),
    });
    expect((await endpoint(env, sidecar))?.mode).toBe('sidecar');
    const line = (await sluice(env, ['endpoint', 'list'])).stdout.split('\n').find((l) => l.includes('shop/plain'))!;
    expect(line.split(/\s+/).slice(1, 3)).toEqual(['shop/plain', 'mode=ambient']);
    expect(env.node.output(env.agent!).stderr).toMatch(/"msg":"pod enrolled","pod":"shop\/plain","mode":"ambient"/);
  });

  it('outbound TCP goes to the node proxy with the VIP intact; its marked connects get socket-LB', async () => {
    const res = await probe(env, VIP, 80, { from: plain, count: 20 });
    const replies = res.map((r) => sidecarReply(r.reply)!);
    expect(replies.every((r) => r.id === 'zt-plain' && r.via === 'out' && r.orig === `${VIP}:80`)).toBe(true);
    expect(new Set(replies.map((r) => r.upstream?.split(' ')[0]))).toEqual(new Set([be1, be2]));
  });

  it("the node proxy's own marked sockets are not captured", async () => {
    const [a] = env.backends;
    const res = await env.node.exec(
      [PROBE, 'connect', '--proto', 'tcp', '--addr', a.ipv4, '--port', String(TCP_PORT), '--mark', '0x539'],
      { netnsPath: plain.netnsPath, allowFail: true },
    );
    expect(JSON.parse(res.stdout.split('\n')[0]).reply.split(' ')[0]).toBe(be1);
  });

  it('inbound TCP goes to 15006 with the original destination; 15008 reaches the proxy untouched', async () => {
    const r = sidecarReply((await probe(env, plain.ipv4, 8080))[0].reply)!;
    expect(r).toMatchObject({ id: 'zt-plain', via: 'in', orig: `${plain.ipv4}:8080`, local: `${plain.ipv4}:8080` });
    const hbone = sidecarReply((await probe(env, plain.ipv4, 15008))[0].reply)!;
    expect(hbone).toMatchObject({ via: '15008', local: `${plain.ipv4}:15008` });
  });

  it('traffic from the node itself (kubelet probes) is not captured', async () => {
    const res = await probe(env, plain.ipv4, 8080, { from: 'node' });
    expect(answeredBy(res[0])).toBe('app-plain');
  });

  it('UDP passes through untouched', async () => {
    const [a] = env.backends;
    const res = await probe(env, a.ipv4, UDP_PORT, { proto: 'udp', udpMode: 'unconnected', from: plain });
    expect([answeredBy(res[0]), res[0].peer]).toEqual([be1, `${a.ipv4}:${UDP_PORT}`]);
  });

  it('without a node-proxy socket, enrolled traffic fails closed and is counted', async () => {
    // with-sidecar has no proxy at all: make a fresh ambient pod with no node proxy
    const lonely = await addMeshPod(env, 'lonely', { namespace: 'shop' });
    await waitForMode(env, lonely, 'ambient');
    const out = await probe(env, VIP, 80, { from: lonely, timeoutMs: 1000 });
    expect(out[0]).toMatchObject({ ok: false, errno: 111 }); // refused, never sent around the proxy
    const inbound = await probe(env, lonely.ipv4, 8080, { timeoutMs: 300 });
    expect(inbound[0].ok).toBe(false);
    const ep = (await endpoint(env, lonely))!;
    expect(ep.counters!.noListener).toBeGreaterThanOrEqual(2);
  });

  it("a node proxy's listener that closes hands its queued connections to the next one of its SO_REUSEPORT group, as in a ztunnel upgrade", async () => {
    const pod = await addMeshPod(env, 'handover', { namespace: 'shop' });
    await waitForMode(env, pod, 'ambient');
    const sysctl = await env.node.exec(['cat', '/proc/sys/net/ipv4/tcp_migrate_req'], { netnsPath: pod.netnsPath });
    expect(sysctl.stdout.trim()).toBe('1');
    const nodeProxy = [PROBE, 'sidecar', '--mark', '0x539', '--extra-port', '15008', '--v4-only', '--reuseport'];
    // the old node proxy accepts nothing: the app's connection waits, established, in its queue
    const old = env.node.spawn([...nodeProxy, '--id', 'zt-old', '--accept-on-stdin'], { netnsPath: pod.netnsPath });
    await env.node.waitForLine(old, 'ready');
    const app = env.node.spawn([PROBE, 'connect', '--proto', 'tcp', '--addr', VIP, '--port', '80', '--timeout-ms', '30000'], {
      netnsPath: pod.netnsPath,
    });
    await waitFor('the connection queued on the old listener', async () => {
      const ss = await env.node.exec(['ss', '-Hltn', 'sport = :15001'], { netnsPath: pod.netnsPath });
      return ss.stdout.trim().split(/\s+/)[1] === '1'; // a listener's Recv-Q: its accept queue
    });
    const next = env.node.spawn([...nodeProxy, '--id', 'zt-new', '--forward'], { netnsPath: pod.netnsPath });
    await env.node.waitForLine(next, 'ready');
    old.kill('SIGKILL'); // its listeners close with the connection still queued
    const line = await waitFor(
      "the app's reply",
      () =>
        env.node
          .output(app)
          .stdout.split('\n')
          .find((l) => l.startsWith('{') && !l.includes('"summary"')),
      30000,
    );
    const res = JSON.parse(line) as { ok: boolean; reply?: string };
    expect(res.ok).toBe(true); // the kernel's default would have reset it
    expect(sidecarReply(res.reply!)).toMatchObject({ id: 'zt-new', via: 'out', orig: `${VIP}:80` });
    next.kill('SIGTERM');
  });

  it('pod label and annotation changes enrol and release live', async () => {
    await updatePodObject(env, plain, { annotations: { 'ambient.istio.io/redirection': 'disabled' } });
    await waitForMode(env, plain, 'none');
    expect(answeredBy((await probe(env, plain.ipv4, 8080))[0])).toBe('app-plain');
    await updatePodObject(env, plain, { labels: { 'istio.io/dataplane-mode': 'none' } });
    await waitForMode(env, plain, 'none');
    await updatePodObject(env, plain, {});
    await waitForMode(env, plain, 'ambient'); // back to following the namespace
    expect(sidecarReply((await probe(env, plain.ipv4, 8080))[0].reply)?.via).toBe('in');
    expect(env.node.output(env.agent!).stderr).toMatch(/"msg":"pod released","pod":"shop\/plain"/);
  });

  it('removing the namespace label releases its pods live', async () => {
    labelNamespace({});
    await waitForMode(env, plain, 'none');
    expect(answeredBy((await probe(env, plain.ipv4, 8080))[0])).toBe('app-plain');
    expect([be1, be2]).toContain(answeredBy((await probe(env, VIP, 80, { from: plain }))[0]));
    expect((await endpoint(env, podLabelled))?.mode).toBe('ambient'); // its own label still holds
  });
});
