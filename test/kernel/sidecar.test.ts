/* Sidecar-mode capture end to end: pods added through the CNI chain, the stand-in sidecar
 * (sl-probe sidecar, uid/gid 1337, forwarding to the original destination as Envoy does),
 * socket-LB on the same node.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SimPod } from '../harness';
import { answeredBy, PROBE, probe, sluice, stopAgent, TCP_PORT, UDP_PORT, writeWebService } from './lb-env';
import {
  addMeshPod,
  createMeshEnv,
  endpoint,
  ISTIO_PROXY,
  sidecarReply,
  startApp,
  startSidecar,
  updatePodObject,
  waitForMode,
  type MeshEnv,
  type PodYamlOptions,
} from './mesh-env';

const VIP = '10.96.0.10';
const VIP6 = 'fd00:96::10';
const STATUS = { 'sidecar.istio.io/status': '{"initContainers":null,"containers":["istio-proxy"]}' };
const T = 'traffic.sidecar.istio.io/';

describe.skipIf(process.getuid?.() !== 0)('sidecar capture (needs root)', () => {
  let env: MeshEnv;
  let app: SimPod; // meshed pod: app server on 8080, stand-in sidecar
  let be1: string;
  let be2: string;

  async function fromApp(addr: string, port: number, o: { uid?: number; count?: number } = {}) {
    return probe(env, addr, port, { from: app, count: o.count ?? 1, uid: o.uid });
  }

  beforeAll(async () => {
    env = await createMeshEnv({ backends: 2 });
    [be1, be2] = env.backends.map((p) => p.name);
    await writeWebService(env, VIP, VIP6);
    app = await addMeshPod(env, 'meshed', { annotations: STATUS });
    await startSidecar(env, app);
    await startApp(env, app, 8080);
    await startApp(env, app, 8080, app.ipv6);
  });

  afterAll(async () => {
    await stopAgent(env);
    await env?.node.destroy();
  });

  it('a pod with the injector annotation is captured as soon as its ADD returns', async () => {
    const ep = await endpoint(env, app);
    expect(ep?.mode).toBe('sidecar');
    const line = (await sluice(env, ['endpoint', 'list'])).stdout.split('\n').find((l) => l.includes('default/meshed'))!;
    expect(line.split(/\s+/).slice(1, 3)).toEqual(['default/meshed', 'mode=sidecar']);
    expect(line).toContain(' out=* out-exclude-ports=15020 in=* '); // istio-cni's default excludeOutboundPorts: the status port
  });

  it('outbound to a VIP reaches the sidecar with the VIP intact; the sidecar upstream gets socket-LB', async () => {
    const res = await fromApp(VIP, 80, { count: 20 });
    const replies = res.map((r) => sidecarReply(r.reply)!);
    expect(replies.every((r) => r.via === 'out' && r.orig === `${VIP}:80`)).toBe(true);
    expect(res.every((r) => r.peer === `${VIP}:80`)).toBe(true); // the app still sees the VIP as its peer
    expect(new Set(replies.map((r) => r.upstream?.split(' ')[0]))).toEqual(new Set([be1, be2])); // proxy's connect balanced
    expect(new Set(replies.map((r) => r.upstreamPeer))).toEqual(new Set([`${VIP}:80`]));
    // as under REDIRECT, the captured connection keeps the pod's address as its source
    expect(res.every((r) => r.local?.startsWith(`${app.ipv4}:`))).toBe(true);
    expect(replies.every((r) => r.peer.startsWith(`${app.ipv4}:`))).toBe(true);
  });

  it('outbound to a pod IP and over IPv6 keeps the original destination', async () => {
    const [a] = env.backends;
    const direct = sidecarReply((await fromApp(a.ipv4, TCP_PORT))[0].reply)!;
    expect(direct).toMatchObject({ via: 'out', orig: `${a.ipv4}:${TCP_PORT}` });
    expect(direct.upstream?.split(' ')[0]).toBe(be1);
    const [r6] = await fromApp(VIP6, 80);
    const v6 = sidecarReply(r6.reply)!;
    expect(v6).toMatchObject({ via: 'out', orig: `[${VIP6}]:80` });
    expect(r6.local?.startsWith(`[${app.ipv6}]:`)).toBe(true);
    expect([be1, be2]).toContain(v6.upstream?.split(' ')[0]);
  });

  it('the proxy uid and gid are never captured, and their connects get socket-LB', async () => {
    for (const uid of [1337]) {
      const res = await fromApp(VIP, 80, { uid, count: 10 });
      expect(res.every((r) => r.ok && [be1, be2].includes(answeredBy(r)!))).toBe(true);
    }
    // gid 1337 alone (uid 0): spawn with gid only
    const res = await env.node.exec(
      [
        '/bin/sh',
        '-c',
        `exec setpriv --regid=1337 --clear-groups -- ${process.cwd()}/build/sl-probe connect --proto tcp --addr ${VIP} --port 80 --count 5`,
      ],
      {
        netnsPath: app.netnsPath,
        allowFail: true,
      },
    );
    const lines = res.stdout
      .split('\n')
      .filter((l) => l.startsWith('{"ok"'))
      .map((l) => JSON.parse(l));
    expect(lines).toHaveLength(5);
    expect(lines.every((r) => r.ok && [be1, be2].includes(r.reply.split(' ')[0]))).toBe(true);
  });

  it('localhost is not captured', async () => {
    await startApp(env, app, 9099, '127.0.0.1');
    const res = await fromApp('127.0.0.1', 9099);
    expect(answeredBy(res[0])).toBe('app-meshed');
  });

  it('inbound to any port reaches the sidecar with the original destination as local address and SO_ORIGINAL_DST', async () => {
    for (const port of [8080, 9090, 443]) {
      const res = await probe(env, app.ipv4, port);
      const r = sidecarReply(res[0].reply)!;
      expect(r).toMatchObject({ via: 'in', orig: `${app.ipv4}:${port}`, local: `${app.ipv4}:${port}` });
    }
    // forwarded from 127.0.0.6 to the app, without being captured again
    const fwd = sidecarReply((await probe(env, app.ipv4, 8080))[0].reply)!;
    expect(fwd.upstream).toMatch(/^app-meshed 127\.0\.0\.6 \d+ /);
    const v6 = sidecarReply((await probe(env, app.ipv6!, 8080))[0].reply)!;
    expect(v6).toMatchObject({ via: 'in', orig: `[${app.ipv6}]:8080`, local: `[${app.ipv6}]:8080` });
    expect(v6.upstream).toMatch(/^app-meshed ::6 \d+ /); // Istio's IPv6 passthrough source, on lo as Istio sets it up
  });

  it("the sidecar's own ports are never redirected inbound", async () => {
    for (const port of [15001, 15006]) {
      const r = sidecarReply((await probe(env, app.ipv4, port))[0].reply)!;
      expect(r.via).toBe(port === 15001 ? 'out' : 'in');
      expect(r.local).toBe(`${app.ipv4}:${port}`); // reached directly, not steered
    }
  });

  it('a non-mesh pod on the same node keeps socket-LB', async () => {
    const res = await probe(env, VIP, 80, { count: 20 });
    expect(new Set(res.map(answeredBy))).toEqual(new Set([be1, be2]));
  });

  it('per-pod counters count captured connections', async () => {
    const before = (await endpoint(env, app))!.counters!;
    await fromApp(VIP, 80, { count: 3 });
    await probe(env, app.ipv4, 8080, { count: 2 });
    const after = (await endpoint(env, app))!.counters!;
    expect(after.outbound - before.outbound).toBeGreaterThanOrEqual(3);
    expect(after.inbound - before.inbound).toBe(2);
    expect(after.proxyBypass).toBeGreaterThan(before.proxyBypass); // the sidecar's upstream connects
  });

  it('excludeOutboundPorts and excludeOutboundIPRanges leave matching traffic alone', async () => {
    const [a] = env.backends;
    await updatePodObject(env, app, {
      annotations: { ...STATUS, [`${T}excludeOutboundPorts`]: `${TCP_PORT}`, [`${T}excludeOutboundIPRanges`]: '10.96.0.0/16' },
    });
    await waitFor(async () => (await endpoint(env, app))?.reason.includes('out-exclude-ports=8080'));
    expect(answeredBy((await fromApp(a.ipv4, TCP_PORT))[0])).toBe(be1); // direct, not via the sidecar
    expect([be1, be2]).toContain(answeredBy((await fromApp(VIP, 80))[0])); // excluded range: socket-LB
  });

  it('includeOutboundIPRanges limits capture to its ranges; includeOutboundPorts adds ports', async () => {
    const [a] = env.backends;
    await updatePodObject(env, app, { annotations: { ...STATUS, [`${T}includeOutboundIPRanges`]: '10.96.0.0/16' } });
    await waitFor(async () => (await endpoint(env, app))?.reason.includes('out=10.96.0.0/16'));
    expect(sidecarReply((await fromApp(VIP, 80))[0].reply)?.orig).toBe(`${VIP}:80`);
    expect(answeredBy((await fromApp(a.ipv4, TCP_PORT))[0])).toBe(be1);
    await updatePodObject(env, app, {
      annotations: { ...STATUS, [`${T}includeOutboundIPRanges`]: '', [`${T}includeOutboundPorts`]: `${TCP_PORT}` },
    });
    await waitFor(async () => (await endpoint(env, app))?.reason.includes('out-ports=8080'));
    expect(sidecarReply((await fromApp(a.ipv4, TCP_PORT))[0].reply)?.orig).toBe(`${a.ipv4}:${TCP_PORT}`);
    expect([be1, be2]).toContain(answeredBy((await fromApp(VIP, 80))[0]));
  });

  it('includeInboundPorts and excludeInboundPorts select the ports steered inbound, as istio-iptables does', async () => {
    await updatePodObject(env, app, {
      annotations: { ...STATUS, [`${T}includeInboundPorts`]: '8080,9090', [`${T}excludeInboundPorts`]: '9090' },
    });
    await waitFor(async () => (await endpoint(env, app))?.reason.includes('in=8080,9090'));
    expect(sidecarReply((await probe(env, app.ipv4, 8080))[0].reply)?.via).toBe('in');
    // with a port list Istio ignores excludeInboundPorts: 9090 is steered all the same
    expect(sidecarReply((await probe(env, app.ipv4, 9090))[0].reply)?.via).toBe('in');
    const notIncluded = await probe(env, app.ipv4, 443, { timeoutMs: 500 });
    expect(notIncluded[0]).toMatchObject({ ok: false, errno: 111 }); // reached the pod directly: nothing listens
    await updatePodObject(env, app, { annotations: { ...STATUS, [`${T}excludeInboundPorts`]: '9090' } });
    await waitFor(async () => (await endpoint(env, app))?.reason.includes('in=* in-exclude-ports=9090'));
    const excluded = await probe(env, app.ipv4, 9090, { timeoutMs: 500 });
    expect(excluded[0]).toMatchObject({ ok: false, errno: 111 });
    expect(sidecarReply((await probe(env, app.ipv4, 443))[0].reply)?.via).toBe('in');
  });

  it('an invalid annotation releases the pod and says why', async () => {
    await updatePodObject(env, app, { annotations: { ...STATUS, [`${T}excludeOutboundPorts`]: '80,x' } });
    const ep = await waitForMode(env, app, 'none');
    expect(ep.reason).toContain('excludeOutboundPorts \\"80,x\\": \\"x\\" is not a port'.replace(/\\/g, ''));
    const log = env.node.output(env.agent!).stderr;
    expect(log).toMatch(/"msg":"pod not enrolled".*"x\\" is not a port/);
    expect([be1, be2]).toContain(answeredBy((await fromApp(VIP, 80))[0]));
  });

  it('a pod whose annotation disappears is released, and enrolled again when it returns', async () => {
    await updatePodObject(env, app, { annotations: STATUS });
    await waitForMode(env, app, 'sidecar');
    await updatePodObject(env, app, { annotations: {} });
    await waitForMode(env, app, 'none');
    expect([be1, be2]).toContain(answeredBy((await fromApp(VIP, 80))[0]));
    const inbound = await probe(env, app.ipv4, 8080);
    expect(answeredBy(inbound[0])).toBe('app-meshed');
    await updatePodObject(env, app, { annotations: STATUS });
    await waitForMode(env, app, 'sidecar');
    expect(sidecarReply((await fromApp(VIP, 80))[0].reply)?.via).toBe('out');
  });

  describe('interceptionMode TPROXY', () => {
    const TPROXY = { ...STATUS, 'sidecar.istio.io/interceptionMode': 'TPROXY' };
    let tp: SimPod;

    /** The pod's policy routing rules (ip rule), both families. */
    async function rules(): Promise<string> {
      const o = { netnsPath: tp.netnsPath, inCgroup: false };
      return (
        (await env.node.exec(['ip', '-4', 'rule', 'show'], o)).stdout +
        (await env.node.exec(['ip', '-6', 'rule', 'show'], o)).stdout
      );
    }

    beforeAll(async () => {
      tp = await addMeshPod(env, 'tproxied', { annotations: TPROXY });
      // Istio's injector runs the proxy as uid 0, gid 1337 with NET_ADMIN in TPROXY mode;
      // Envoy's inbound listener is transparent and connects to the app from the client's
      // address with mark 1337 (original_src)
      const sc = env.node.spawn([PROBE, 'sidecar', '--id', 'sc-tproxied', '--forward', '--tproxy', '1337'], {
        netnsPath: tp.netnsPath,
        uid: 0,
        gid: 1337,
      });
      await env.node.waitForLine(sc, 'ready');
      await startApp(env, tp, 8080);
      await startApp(env, tp, 8080, tp.ipv6);
    });

    it('is enrolled with its routing for source-preserving inbound in place', async () => {
      const ep = await endpoint(env, tp);
      expect(ep?.mode).toBe('sidecar');
      expect(ep?.reason).toContain('interception=TPROXY');
      const r = await rules();
      expect(r.match(/fwmark 0x111\/0xfff lookup 100/g)).toHaveLength(2); // IPv4 and IPv6
    });

    it("inbound reaches the sidecar with the original destination, and the app sees the client's own address (IPv4 and IPv6)", async () => {
      for (const [dst, src] of [
        [tp.ipv4, env.client.ipv4],
        [tp.ipv6!, env.client.ipv6!],
      ]) {
        const [res] = await probe(env, dst, 8080);
        const r = sidecarReply(res.reply);
        const show = (a: string) => (a.includes(':') ? `[${a}]` : a);
        expect(r, `reply ${res.reply ?? res.errno}`).toMatchObject({
          via: 'in',
          orig: `${show(dst)}:8080`,
          local: `${show(dst)}:8080`,
        });
        expect(r!.upstream).toMatch(
          new RegExp(`^app-tproxied ${src.replace(/\./g, '\\.')} \\d+ ${dst.replace(/\./g, '\\.')} 8080$`),
        );
      }
      expect((await endpoint(env, tp))!.counters!.inbound).toBeGreaterThanOrEqual(2);
    });

    it("outbound is captured as under REDIRECT; the proxy's own connect to its pod IP reaches 15006 as Istio's TPROXY rules send it", async () => {
      const [out] = await probe(env, VIP, 80, { from: tp });
      expect(sidecarReply(out.reply)).toMatchObject({ via: 'out', orig: `${VIP}:80` });
      expect(out.local?.startsWith(`${tp.ipv4}:`)).toBe(true);
      // the proxy's gid alone (uid 0, as Istio runs it in TPROXY mode) to its own pod IP: nat
      // returns it (not the proxy uid), the mangle rules mark it 1338 and TPROXY it to 15006
      const res = await env.node.exec([PROBE, 'connect', '--proto', 'tcp', '--addr', tp.ipv4, '--port', '8080'], {
        netnsPath: tp.netnsPath,
        uid: 0,
        gid: 1337,
        allowFail: true,
      });
      const r = sidecarReply(JSON.parse(res.stdout.split('\n')[0]).reply);
      expect(r).toMatchObject({ via: 'in', orig: `${tp.ipv4}:8080` });
      expect(r!.upstream).toMatch(/^app-tproxied /);
    });

    it('back to REDIRECT and to TPROXY again: the in-pod routing follows the annotation', async () => {
      await updatePodObject(env, tp, { annotations: STATUS });
      await waitFor(async () => {
        const ep = await endpoint(env, tp);
        return ep?.mode === 'sidecar' && !ep.reason.includes('interception=');
      });
      expect(await rules()).not.toContain('fwmark 0x111');
      await updatePodObject(env, tp, { annotations: TPROXY });
      await waitFor(async () => (await endpoint(env, tp))?.reason.includes('interception=TPROXY'));
      expect((await rules()).match(/fwmark 0x111\/0xfff lookup 100/g)).toHaveLength(2);
      const [res] = await probe(env, tp.ipv4, 8080);
      expect(sidecarReply(res.reply)?.upstream).toMatch(new RegExp(`^app-tproxied ${env.client.ipv4.replace(/\./g, '\\.')} `));
    });
  });

  it('capture survives an agent restart', async () => {
    await stopAgent(env, 'SIGKILL');
    expect(sidecarReply((await probe(env, app.ipv4, 8080))[0].reply)?.via).toBe('in');
    expect(sidecarReply((await fromApp(VIP, 80))[0].reply)?.via).toBe('out');
    const { startAgent } = await import('./lb-env');
    await startAgent(env);
    expect((await endpoint(env, app))?.mode).toBe('sidecar');
    expect(sidecarReply((await probe(env, app.ipv4, 8080))[0].reply)?.via).toBe('in');
    expect(sidecarReply((await fromApp(VIP, 80))[0].reply)?.via).toBe('out');
  });

  describe('only pods istio-cni would redirect are captured (its checks, cni/pkg/plugin/plugin.go)', () => {
    /** A pod with everything a capture would use: the stand-in sidecar (uid 1337) and an app on 8080. */
    async function podWithSidecar(name: string, o: PodYamlOptions): Promise<SimPod> {
      const p = await addMeshPod(env, name, o);
      await startSidecar(env, p, ['--extra-port', '15053']);
      await startApp(env, p, 8080);
      return p;
    }

    /** Left alone: inbound reaches the app itself, outbound gets socket-LB, not the sidecar. */
    async function expectUncaptured(p: SimPod, rule: string): Promise<void> {
      const line = (await sluice(env, ['endpoint', 'list'])).stdout.split('\n').find((l) => l.includes(`default/${p.name} `))!;
      expect(line.split(/\s+/).slice(1, 3)).toEqual([`default/${p.name}`, 'mode=none']);
      expect(line).toContain(`rule="${rule}"`);
      expect(answeredBy((await probe(env, p.ipv4, 8080))[0])).toBe(`app-${p.name}`);
      const out = await probe(env, VIP, 80, { from: p, count: 5 });
      expect(out.map(answeredBy).every((by) => by === be1 || by === be2)).toBe(true);
    }

    it('a gateway (istio-proxy runs `proxy router`) with the status annotation is not captured: its inbound reaches its app', async () => {
      const gw = await podWithSidecar('gateway', {
        annotations: STATUS,
        containers: [{ name: 'istio-proxy', args: ['proxy', 'router', '--domain', 'default.svc.cluster.local'] }],
      });
      await expectUncaptured(gw, 'istio-proxy is a router proxy (args: proxy router), not a sidecar');
    });

    it('a pod with an istio-init init container redirects itself and is not captured', async () => {
      const p = await podWithSidecar('self-init', {
        annotations: STATUS,
        initContainers: [{ name: 'istio-init', args: ['istio-iptables', '-p', '15001'] }],
      });
      await expectUncaptured(p, 'container istio-init present: the pod sets up its own redirection');
    });

    it('sidecar.istio.io/inject "false" is not captured', async () => {
      const p = await podWithSidecar('no-inject', { annotations: { ...STATUS, 'sidecar.istio.io/inject': 'false' } });
      await expectUncaptured(p, 'annotation sidecar.istio.io/inject=false');
    });

    it("DNS capture follows the proxy's ISTIO_META_DNS_CAPTURE (mesh-dns-capture is off here)", async () => {
      const [resolverPod] = env.backends;
      const resolver = env.node.spawn(
        [PROBE, 'serve', '--proto', 'udp', '--addr', resolverPod.ipv4, '--port', '53', '--id', 'real-resolver'],
        { netnsPath: resolverPod.netnsPath, inCgroup: false },
      );
      await env.node.waitForLine(resolver, 'ready');
      const p = await podWithSidecar('dns-env', {
        annotations: STATUS,
        containers: [{ name: 'app' }, { ...ISTIO_PROXY, env: [{ name: 'ISTIO_META_DNS_CAPTURE', value: 'true' }] }],
      });
      const proxyDns = env.node.spawn(
        [PROBE, 'serve', '--proto', 'udp', '--addr', '127.0.0.1', '--port', '15053', '--id', 'dns-proxy'],
        { netnsPath: p.netnsPath, inCgroup: false, uid: 1337, gid: 1337 },
      );
      await env.node.waitForLine(proxyDns, 'ready');
      const ep = await waitForMode(env, p, 'sidecar');
      expect(ep.reason).toContain('dns-capture=on(ISTIO_META_DNS_CAPTURE=true)');
      expect(ep.reason).toMatch(/ dns=15053( |$)/);
      const captured = await probe(env, resolverPod.ipv4, 53, { proto: 'udp', udpMode: 'unconnected', from: p, count: 2 });
      expect(captured.map((r) => [answeredBy(r), r.peer])).toEqual(Array(2).fill(['dns-proxy', `${resolverPod.ipv4}:53`]));
      expect(sidecarReply((await probe(env, resolverPod.ipv4, 53, { from: p }))[0].reply)).toMatchObject({
        via: '15053',
        orig: `${resolverPod.ipv4}:53`,
      });
      // the pod without the env keeps the node default: not captured
      expect((await endpoint(env, app))?.reason).toContain('dns-capture=off(mesh-dns-capture)');
      expect(answeredBy((await probe(env, resolverPod.ipv4, 53, { proto: 'udp', udpMode: 'unconnected', from: app }))[0])).toBe(
        'real-resolver',
      );
    });

    it("endpoint list shows the proxy uid/gid from istio-proxy's securityContext, else mesh-proxy-uid/gid", async () => {
      const custom = await addMeshPod(env, 'custom-uid', {
        annotations: STATUS,
        containers: [{ name: 'app' }, { ...ISTIO_PROXY, securityContext: { runAsUser: 1000670000, runAsGroup: 1000670001 } }],
      });
      expect((await waitForMode(env, custom, 'sidecar')).reason).toMatch(
        /^rule="istio-proxy sidecar with annotation sidecar\.istio\.io\/status" proxy-uid=1000670000 proxy-gid=1000670001 /,
      );
      expect((await endpoint(env, app))?.reason).toContain(' proxy-uid=1337 proxy-gid=1337 ');
      // the kernel uses them: that pod's proxy uid connects straight (socket-LB), 1337 is an app there
      const [be] = env.backends;
      const connectAs = async (uid: number) =>
        JSON.parse(
          (
            await env.node.exec(
              [PROBE, 'connect', '--proto', 'tcp', '--addr', be.ipv4, '--port', String(TCP_PORT), '--timeout-ms', '1000'],
              { netnsPath: custom.netnsPath, uid, gid: uid, allowFail: true },
            )
          ).stdout.split('\n')[0],
        );
      expect(answeredBy(await connectAs(1000670000))).toBe(be.name);
      expect(await connectAs(1337)).toMatchObject({ ok: false, errno: 111 }); // captured to 15001, where nothing listens
    });

    it('an annotation sluice cannot honour (excludeInterfaces) or an invalid one fails the CNI ADD, naming it, as istio-cni does', async () => {
      await expect(
        addMeshPod(env, 'exclude-if', { annotations: { ...STATUS, [`${T}excludeInterfaces`]: 'net1' } }),
      ).rejects.toThrow(/"code":\s*102.*traffic\.sidecar\.istio\.io\/excludeInterfaces \\"net1\\" is not supported by sluice/s);
      await expect(
        addMeshPod(env, 'bad-ports', { annotations: { ...STATUS, [`${T}excludeOutboundPorts`]: '80,x' } }),
      ).rejects.toThrow(/"code":\s*102.*excludeOutboundPorts \\"80,x\\": \\"x\\" is not a port/s);
      const eps = JSON.parse((await sluice(env, ['endpoint', 'list', '-o', 'json'])).stdout) as Array<{ name: string }>;
      expect(eps.map((e) => e.name)).not.toContain('exclude-if');
      expect(eps.map((e) => e.name)).not.toContain('bad-ports');
      expect(env.node.output(env.agent!).stderr).toMatch(/"msg":"pod not enrolled".*excludeInterfaces/);
    });
  });

  async function waitFor(fn: () => Promise<boolean | undefined>): Promise<void> {
    for (let i = 0; i < 60; i++) {
      if (await fn()) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error('condition not reached in 3 s');
  }
  void UDP_PORT;
});
