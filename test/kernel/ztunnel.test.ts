/* Ambient mode with ztunnel as Istio runs it: the agent serves ZDS, and a stand-in ztunnel
 * (test/tools/zt-standin.c, written from ztunnel's protocol and behaviour) opens its sockets only
 * inside pods it was handed, with mark 0x539, SO_REUSEPORT and IP_TRANSPARENT, reads the original
 * destination as ztunnel does and connects inbound to the app from the client's own address.
 */
import * as fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNode, joinNodes, run, waitFor, type SimNode, type SimPod } from '../harness';
import {
  answeredBy,
  PROBE,
  probe,
  type ProbeResult,
  serviceYaml,
  sliceYaml,
  sluice,
  startAgent,
  stopAgent,
  TCP_PORT,
  waitForBackends,
  writeObjects,
} from './lb-env';
import { addMeshPod, createMeshEnv, namespaceYaml, startApp, updatePodObject, waitForMode, type MeshEnv } from './mesh-env';
import { startZtunnel, type ZtEvent, ztReply, type Ztunnel } from './ztunnel-env';

const VIP = '10.96.0.20';
const VIP6 = 'fd00:96::20';
const APP_PORT = 8080;
const SLOW_PORT = 7070;

interface ListedZds {
  name: string;
  namespace: string;
  mode: string;
  reason: string;
  zds?: { state: string; error?: string; attempts: number };
}

describe.skipIf(process.getuid?.() !== 0)('ambient with ztunnel over ZDS (needs root)', () => {
  let env: MeshEnv;
  let zt: Ztunnel | undefined;
  let a1: SimPod; // enrolled before any ztunnel connected
  let resolver: SimPod;
  let be: string[];

  async function zdsOf(pod: SimPod): Promise<ListedZds | undefined> {
    const eps: ListedZds[] = JSON.parse((await sluice(env, ['endpoint', 'list', '-o', 'json'])).stdout);
    return eps.find((e) => e.name === pod.name && e.namespace === pod.namespace);
  }

  async function waitZds(pod: SimPod, state: string, timeoutMs = 8000): Promise<ListedZds> {
    return waitFor(
      `${pod.name} zds=${state}`,
      async () => {
        const e = await zdsOf(pod);
        return e?.zds?.state === state ? e : undefined;
      },
      timeoutMs,
      25,
    );
  }

  async function stopZtunnel(z: Ztunnel | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (!z || env.node.output(z.child).exited) return;
    const gone = new Promise((r) => z.child.once('exit', r));
    z.child.kill(signal);
    await gone;
  }

  function ambientPod(
    name: string,
    o: { annotations?: Record<string, string>; labels?: Record<string, string> } = {},
  ): Promise<SimPod> {
    return addMeshPod(env, name, { namespace: 'amb', ...o });
  }

  beforeAll(async () => {
    env = await createMeshEnv({ backends: 2 });
    be = env.backends.map((p) => p.name);
    const [b1, b2] = env.backends;
    writeObjects(env, 'svc.yaml', [
      serviceYaml('web', { clusterIP: VIP, ports: [{ name: 'http', port: 80, targetPort: TCP_PORT }] }),
      sliceYaml('web-4', {
        service: 'web',
        family: 4,
        endpoints: [{ ip: b1.ipv4 }, { ip: b2.ipv4 }],
        ports: [{ name: 'http', port: TCP_PORT }],
      }),
      serviceYaml('web6', { clusterIP: VIP6, ports: [{ name: 'http', port: 80, targetPort: TCP_PORT }] }),
      sliceYaml('web6-6', {
        service: 'web6',
        family: 6,
        endpoints: [{ ip: b1.ipv6! }, { ip: b2.ipv6! }],
        ports: [{ name: 'http', port: TCP_PORT }],
      }),
    ]);
    await waitForBackends(env, `${VIP}:80/TCP`, [`${b1.ipv4}:${TCP_PORT}`, `${b2.ipv4}:${TCP_PORT}`]);
    writeObjects(env, 'ns.yaml', [namespaceYaml('amb', { 'istio.io/dataplane-mode': 'ambient' }), namespaceYaml('plain')]);
    resolver = await addMeshPod(env, 'resolver', { namespace: 'plain' });
    for (const proto of ['udp', 'tcp']) {
      const c = env.node.spawn([PROBE, 'serve', '--proto', proto, '--addr', resolver.ipv4, '--port', '53', '--id', 'resolver'], {
        netnsPath: resolver.netnsPath,
        inCgroup: false,
      });
      await env.node.waitForLine(c, 'ready');
    }
    a1 = await ambientPod('a1');
    await startApp(env, a1, APP_PORT);
    await startApp(env, a1, APP_PORT, a1.ipv6);
  });

  afterAll(async () => {
    await stopAgent(env);
    await env?.node.destroy();
  });

  it('without ztunnel an enrolled pod is pending and fails closed; on connect ztunnel gets the snapshot', async () => {
    const before = await waitZds(a1, 'pending');
    expect(before.mode).toBe('ambient');
    expect(before.reason).toContain('zds=pending');
    expect((await probe(env, VIP, 80, { from: a1, timeoutMs: 1000 }))[0]).toMatchObject({ ok: false, errno: 111 });

    zt = startZtunnel(env, 'zt1');
    const add = await zt.waitEvent((e) => e.event === 'add' && e.uid === a1.uid);
    expect(add).toMatchObject({ name: 'a1', namespace: 'amb', serviceAccount: 'default', error: '' });
    await zt.waitEvent((e) => e.event === 'snapshot');
    const kinds = zt.events().map((e) => (e.event === 'add' ? `add:${e.uid}` : e.event));
    expect(kinds.indexOf(`add:${a1.uid}`)).toBeLessThan(kinds.indexOf('snapshot'));
    expect((await waitZds(a1, 'acked')).reason).toMatch(/zds=acked/);
    const line = (await sluice(env, ['endpoint', 'list'])).stdout.split('\n').find((l) => l.includes('amb/a1'))!;
    expect(line.split(/\s+/).slice(1, 3)).toEqual(['amb/a1', 'mode=ambient']);
    const st = JSON.parse((await sluice(env, ['status', '-o', 'json'])).stdout);
    expect(st.zds.ztunnels).toHaveLength(1);
    expect(st.zds.ztunnels[0]).toMatchObject({ state: 'ready', version: 1 });
  });

  it('outbound reaches ztunnel with the original destination and the pod IP as source; ztunnel gets socket-LB', async () => {
    const [r] = await probe(env, VIP, 80, { from: a1 });
    const z = ztReply(r.reply)!;
    expect(z).toMatchObject({ id: 'zt1', via: 'out', orig: `${VIP}:80`, how: 'ipv4' });
    expect(z.peer?.split(':')[0]).toBe(a1.ipv4); // REDIRECT keeps the pod's address as source
    expect(r.local?.split(':')[0]).toBe(a1.ipv4); // and the app's getsockname says so too
    expect(be).toContain(z.upstream?.split(' ')[0]); // the marked upstream connect was load-balanced
    const [r6] = await probe(env, VIP6, 80, { from: a1 });
    const z6 = ztReply(r6.reply)!;
    expect(z6).toMatchObject({ via: 'out', orig: `[${VIP6}]:80`, how: 'ipv6' });
    expect(z6.peer).toContain(a1.ipv6!);
    expect(be).toContain(z6.upstream?.split(' ')[0]);
  });

  it("inbound goes through ztunnel, which reaches the app from the client's own address (IPv4 and IPv6)", async () => {
    for (const [dst, src] of [
      [a1.ipv4, env.client.ipv4],
      [a1.ipv6!, env.client.ipv6!],
    ]) {
      const [r] = await probe(env, dst, APP_PORT);
      const z = ztReply(r.reply)!;
      expect(z, JSON.stringify(r)).toMatchObject({ via: 'in' });
      expect(z.orig).toContain(dst);
      expect(z.upstreamSrc).toContain(src);
      // the app answered ztunnel's transparent connection: its replies were routed back in the pod
      const [app, peer] = z.upstream!.split(' ');
      expect([app, peer]).toEqual(['app-a1', src]);
    }
    expect(ztReply((await probe(env, a1.ipv4, 15008))[0].reply)).toMatchObject({ via: 'hbone' });
  });

  it('a new pod is handed to ztunnel before its ADD returns: its first connection is served', async () => {
    const from = zt!.events().length;
    const a2 = await ambientPod('a2');
    const [r] = await probe(env, VIP, 80, { from: a2, timeoutMs: 2000 });
    expect(ztReply(r.reply), JSON.stringify(r)).toMatchObject({ via: 'out', orig: `${VIP}:80` });
    await zt!.waitEvent((e) => e.event === 'add' && e.uid === a2.uid, { from });
    expect((await zdsOf(a2))?.zds?.state).toBe('acked');
  });

  it('probes from the node are not captured, also from an address the node got after the agent started', async () => {
    expect(answeredBy((await probe(env, a1.ipv4, APP_PORT, { from: 'node' }))[0])).toBe('app-a1');
    const late = '192.0.2.77';
    await run(['nsenter', `--net=${env.node.netnsPath}`, '--', 'ip', 'addr', 'add', `${late}/32`, 'dev', 'lo']);
    await waitFor(
      'late node address probed directly',
      async () => {
        const res = await env.node.exec(
          [PROBE, 'connect', '--proto', 'tcp', '--addr', a1.ipv4, '--port', String(APP_PORT), '--bind', late],
          { netnsPath: env.node.netnsPath, allowFail: true },
        );
        const r = JSON.parse(res.stdout.split('\n')[0]);
        return answeredBy(r) === 'app-a1' && r.reply.split(' ')[1] === late;
      },
      3000,
    );
  });

  it('traffic forwarded through the node with a node source address is still captured', async () => {
    let far: SimNode | undefined;
    try {
      far = await createNode();
      await joinNodes(env.node, far);
      const client = await far.addPod('far');
      // the node SNATs what it forwards into its pods to its own bridge address (a NodePort path)
      await run([
        'nsenter',
        `--net=${env.node.netnsPath}`,
        '--',
        'iptables',
        '-t',
        'nat',
        '-A',
        'POSTROUTING',
        '-s',
        far.cidr4,
        '-o',
        'slbr0',
        '-j',
        'SNAT',
        '--to-source',
        env.node.gateway4,
      ]);
      const res = await far.exec(
        [PROBE, 'connect', '--proto', 'tcp', '--addr', a1.ipv4, '--port', String(APP_PORT), '--timeout-ms', '2000'],
        { netnsPath: client.netnsPath, allowFail: true },
      );
      const z = ztReply(JSON.parse(res.stdout.split('\n')[0]).reply);
      expect(z, res.stdout).toMatchObject({ via: 'in' });
      expect(z!.peer?.split(':')[0]).toBe(env.node.gateway4);
    } finally {
      await run(['nsenter', `--net=${env.node.netnsPath}`, '--', 'iptables', '-t', 'nat', '-F', 'POSTROUTING'], {
        allowFail: true,
      });
      await far?.destroy();
    }
  });

  it("DNS over UDP and TCP goes to ztunnel's 15053; replies show the resolver; ztunnel's own queries pass; the pod annotation opts out", async () => {
    const [u] = await probe(env, resolver.ipv4, 53, { proto: 'udp', udpMode: 'unconnected', from: a1 });
    expect(ztReply(u.reply), JSON.stringify(u)).toMatchObject({ via: 'dns' });
    expect(u.peer).toBe(`${resolver.ipv4}:53`);
    const [t] = await probe(env, resolver.ipv4, 53, { from: a1 });
    expect(ztReply(t.reply)).toMatchObject({ via: 'dns' });
    const own = await env.node.exec(
      [
        PROBE,
        'connect',
        '--proto',
        'udp',
        '--addr',
        resolver.ipv4,
        '--port',
        '53',
        '--mark',
        '0x539',
        '--udp-mode',
        'unconnected',
      ],
      { netnsPath: a1.netnsPath, allowFail: true },
    );
    expect(answeredBy(JSON.parse(own.stdout.split('\n')[0]))).toBe('resolver');
    const noDns = await ambientPod('no-dns', { annotations: { 'ambient.istio.io/dns-capture': 'false' } });
    await waitZds(noDns, 'acked');
    expect(answeredBy((await probe(env, resolver.ipv4, 53, { proto: 'udp', udpMode: 'unconnected', from: noDns }))[0])).toBe(
      'resolver',
    );
    expect(ztReply((await probe(env, VIP, 80, { from: noDns }))[0].reply)?.via).toBe('out');
  });

  it('bypass-inbound-capture leaves inbound to the app while outbound is still captured', async () => {
    const gw = await ambientPod('gateway', { annotations: { 'ambient.istio.io/bypass-inbound-capture': 'true' } });
    await startApp(env, gw, APP_PORT);
    await waitZds(gw, 'acked');
    expect(answeredBy((await probe(env, gw.ipv4, APP_PORT))[0])).toBe('app-gateway');
    expect(ztReply((await probe(env, VIP, 80, { from: gw }))[0].reply)?.via).toBe('out');
  });

  it('release and deletion send del; a nack is retried with backoff and visible', async () => {
    const leaving = await ambientPod('leaving');
    await waitZds(leaving, 'acked');
    let from = zt!.events().length;
    await updatePodObject(env, leaving, { labels: { 'istio.io/dataplane-mode': 'none' } });
    await waitForMode(env, leaving, 'none');
    await zt!.waitEvent((e) => e.event === 'del' && e.uid === leaving.uid, { from });
    await env.node.removePod(leaving);
    // a pod deleted while ambient
    const gone = await ambientPod('gone');
    await waitZds(gone, 'acked');
    from = zt!.events().length;
    await env.node.removePod(gone);
    await zt!.waitEvent((e) => e.event === 'del' && e.uid === gone.uid, { from });

    // a ztunnel that refuses one pod: the others are served, that one is nack and retried
    await stopZtunnel(zt);
    const stubborn = await ambientPod('stubborn');
    zt = startZtunnel(env, 'zt2', ['--nack-uid', stubborn.uid]);
    await waitZds(a1, 'acked');
    const nack = await waitZds(stubborn, 'nack');
    expect(nack.reason).toContain('zds-error="injected nack"');
    const attempts = nack.zds!.attempts;
    await waitFor('retried', async () => ((await zdsOf(stubborn))?.zds?.attempts ?? 0) > attempts, 5000);
    // a ztunnel restart with a ztunnel that takes it: snapshot on connect, acked
    await stopZtunnel(zt, 'SIGKILL');
    zt = startZtunnel(env, 'zt3');
    await waitZds(stubborn, 'acked', 15000);
    expect(ztReply((await probe(env, VIP, 80, { from: stubborn }))[0].reply)).toMatchObject({ id: 'zt3', via: 'out' });
  });

  it('an agent SIGKILL and restart fails no connection; ztunnel is reconciled with nothing dropped', async () => {
    const stream = probe(env, VIP, 80, { from: a1, count: 150, intervalMs: 20, timeoutMs: 2000 });
    await new Promise((r) => setTimeout(r, 500));
    await stopAgent(env, 'SIGKILL');
    const from = zt!.events().length;
    await startAgent(env);
    const res = await stream;
    expect(res.filter((r) => !r.ok)).toEqual([]);
    expect(res.every((r) => ztReply(r.reply)?.via === 'out')).toBe(true);
    await zt!.waitEvent((e) => e.event === 'hello', { from, timeoutMs: 15000 });
    const snap = await zt!.waitEvent((e) => e.event === 'snapshot', { from, timeoutMs: 15000 });
    expect(snap.removed ?? []).toEqual([]);
    await waitZds(a1, 'acked');
  });

  it('during a ztunnel upgrade new adds go to the new ztunnel, dels to both, and traffic survives the old one leaving', async () => {
    const oldZt = zt!;
    // a long upstream timeout: the drain test after this one holds a connection on its upstream
    const newZt = startZtunnel(env, 'zt-new', ['--upstream-timeout-ms', '15000']);
    await newZt.waitEvent((e) => e.event === 'snapshot');
    const fromOld = oldZt.events().length;
    const b1 = await ambientPod('b1');
    await newZt.waitEvent((e) => e.event === 'add' && e.uid === b1.uid);
    await waitZds(b1, 'acked');
    expect(
      oldZt
        .events()
        .slice(fromOld)
        .some((e) => e.event === 'add' && e.uid === b1.uid),
    ).toBe(false);
    const b2 = await ambientPod('b2');
    await waitZds(b2, 'acked');
    const [fo, fn] = [oldZt.events().length, newZt.events().length];
    await env.node.removePod(b2);
    await oldZt.waitEvent((e) => e.event === 'del' && e.uid === b2.uid, { from: fo });
    await newZt.waitEvent((e) => e.event === 'del' && e.uid === b2.uid, { from: fn });

    // both listen in a1 (reuseport); the old one goes away under a stream of connections
    const stream = probe(env, VIP, 80, { from: a1, count: 100, intervalMs: 10, timeoutMs: 2000 });
    const inbound = probe(env, a1.ipv4, APP_PORT, { count: 100, intervalMs: 10, timeoutMs: 2000 });
    await new Promise((r) => setTimeout(r, 300));
    await stopZtunnel(oldZt);
    const [out, inn] = await Promise.all([stream, inbound]);
    expect(out.filter((r) => !r.ok)).toEqual([]);
    expect(inn.filter((r) => !r.ok)).toEqual([]);
    expect(ztReply(out.at(-1)!.reply)?.id).toBe('zt-new');
    expect(ztReply(inn.at(-1)!.reply)?.id).toBe('zt-new');
    zt = newZt;
  });

  it('SIGTERM drains ztunnel as ztunnel does: all listeners close, a connection in progress completes; past --termination-deadline-ms one is cut', async () => {
    // a backend that accepts only when told: ztunnel's upstream connect waits in its accept queue
    const slowPod = await addMeshPod(env, 'slow', { namespace: 'plain' });
    const slow = env.node.spawn(
      [PROBE, 'sidecar', '--id', 'slow', '--v4-only', '--accept-on-stdin', '--extra-port', String(SLOW_PORT)],
      { netnsPath: slowPod.netnsPath, inCgroup: false },
    );
    await env.node.waitForLine(slow, 'ready');
    const lines = async (pod: SimPod, args: string[]) =>
      (await env.node.exec(['ss', '-Hn', ...args], { netnsPath: pod.netnsPath, inCgroup: false })).stdout
        .split('\n')
        .filter((l) => l.trim() !== '');
    /** a1's connection to the slow backend, held by ztunnel until the backend answers (--upstream-timeout-ms 15000). */
    async function held(): Promise<{ result: Promise<ProbeResult[]> }> {
      const result = probe(env, slowPod.ipv4, SLOW_PORT, { from: a1, timeoutMs: 10000 });
      await waitFor(
        "ztunnel's upstream connect queued at the slow backend",
        async () => (await lines(slowPod, ['-t', 'state', 'established', 'sport', '=', `:${SLOW_PORT}`])).length === 1,
        8000,
        20,
      );
      return { result };
    }
    async function terminate(z: Ztunnel): Promise<{ from: number; gone: Promise<unknown> }> {
      const from = z.events().length;
      const gone = new Promise((r) => z.child.once('exit', r));
      z.child.kill('SIGTERM');
      return { from, gone };
    }

    // graceful: the listeners close at once, the connection in progress goes on and completes
    const draining = zt!;
    const proxyPorts = /:(15001|15006|15008|15053)$/;
    const proxyListeners = async () => (await lines(a1, ['-lntu'])).filter((l) => proxyPorts.test(l.split(/\s+/)[4]));
    expect((await proxyListeners()).length).toBeGreaterThan(0);
    const conn = await held();
    const { from, gone } = await terminate(draining);
    expect(await draining.waitEvent((e) => e.event === 'draining', { from })).toMatchObject({
      connections: 1,
      deadlineMs: 5000,
    });
    expect(await proxyListeners()).toEqual([]);
    const [late] = await probe(env, VIP, 80, { from: a1, timeoutMs: 500 });
    expect(ztReply(late.reply)?.id, JSON.stringify(late)).not.toBe(draining.id);
    slow.stdin!.write('accept\n');
    const [r] = await conn.result;
    const z = ztReply(r.reply);
    expect(z, JSON.stringify(r)).toMatchObject({ id: draining.id, via: 'out', orig: `${slowPod.ipv4}:${SLOW_PORT}` });
    expect(z!.upstream).toMatch(/^sidecar slow /);
    await gone;
    expect(env.node.output(draining.child)).toMatchObject({ exitCode: 0 });
    let ev = draining.events().slice(from);
    const at = (pred: (e: ZtEvent) => boolean) => ev.findIndex(pred);
    expect(ev.find((e) => e.event === 'drained')).toMatchObject({ cut: 0 });
    const order = [
      at((e) => e.event === 'draining'),
      at((e) => e.event === 'conn' && e.uid === a1.uid),
      at((e) => e.event === 'drained'),
      at((e) => e.event === 'stopped' && e.uid === a1.uid && e.reason === 'exit'),
      at((e) => e.event === 'exit' && e.status === 0),
    ];
    expect(
      order.every((i, k) => i >= 0 && (k === 0 || i > order[k - 1])),
      JSON.stringify(ev),
    ).toBe(true);

    // a connection still open at the deadline is cut: ztunnel answers ECANCELED for its upstream
    const short = startZtunnel(env, 'zt-short', ['--termination-deadline-ms', '300', '--upstream-timeout-ms', '15000']);
    zt = short;
    await short.waitEvent((e) => e.event === 'snapshot');
    await waitZds(a1, 'acked');
    const cutConn = await held();
    const t = await terminate(short);
    const [c] = await cutConn.result;
    expect(ztReply(c.reply), JSON.stringify(c)).toMatchObject({ id: 'zt-short', via: 'out', upstream: 'ERR:125' });
    await t.gone;
    expect(env.node.output(short.child)).toMatchObject({ exitCode: 0 });
    ev = short.events().slice(t.from);
    expect(ev.find((e) => e.event === 'draining')).toMatchObject({ connections: 1, deadlineMs: 300 });
    expect(ev.find((e) => e.event === 'drained')).toMatchObject({ cut: 1 });
    slow.stdin!.end();

    zt = startZtunnel(env, 'zt4');
    await zt.waitEvent((e) => e.event === 'snapshot');
    await waitZds(a1, 'acked');
  });

  it('100 running pods labelled ambient are enrolled and acked by ztunnel (time measured)', async () => {
    writeObjects(env, 'ns-bulk.yaml', [namespaceYaml('bulk')]);
    const pods: SimPod[] = [];
    for (let i = 0; i < 100; i++) pods.push(await addMeshPod(env, `bulk-${i}`, { namespace: 'bulk' }));
    const logFrom = env.node.output(env.agent!).stderr.length;
    const t0 = Date.now();
    writeObjects(env, 'ns-bulk.yaml', [namespaceYaml('bulk', { 'istio.io/dataplane-mode': 'ambient' })]);
    await waitFor(
      '100 pods acked',
      async () => {
        const eps: ListedZds[] = JSON.parse((await sluice(env, ['endpoint', 'list', '-o', 'json'])).stdout);
        return eps.filter((e) => e.namespace === 'bulk' && e.zds?.state === 'acked').length === 100;
      },
      30000,
      50,
    );
    const lines = env.node.output(env.agent!).stderr.slice(logFrom).split('\n');
    const at = (msg: string) =>
      lines.filter((l) => l.includes(`"msg":"${msg}"`) && l.includes('bulk/')).map((l) => Date.parse(JSON.parse(l).ts));
    const enrolled = at('pod enrolled');
    const acked = at('ztunnel acked the pod');
    expect([enrolled.length, acked.length]).toEqual([100, 100]);
    const result = {
      pods: 100,
      enrolledMs: Math.max(...enrolled) - t0,
      ackedMs: Math.max(...acked) - t0,
      firstAckMs: Math.min(...acked) - t0,
    };
    console.log(
      `[measure] 100 pods: label → last enrolled ${result.enrolledMs} ms, → last acked by ztunnel ${result.ackedMs} ms (first ack ${result.firstAckMs} ms)`,
    );
    fs.mkdirSync('build/bench', { recursive: true });
    fs.writeFileSync('build/bench/ztunnel-enrol.json', JSON.stringify(result) + '\n');
  }, 180000);

  it('uninstall removes the in-pod routing with the datapath', async () => {
    const rules = async () =>
      (await run(['nsenter', `--net=${a1.netnsPath}`, '--', 'ip', 'rule'])).stdout +
      (await run(['nsenter', `--net=${a1.netnsPath}`, '--', 'ip', '-6', 'rule'])).stdout;
    expect(await rules()).toContain('fwmark 0x111/0xfff lookup 100');
    await stopZtunnel(zt);
    await stopAgent(env);
    const out = (await sluice(env, ['uninstall'])).stdout;
    expect(out).toContain('removed the inbound routing of amb/a1');
    expect(await rules()).not.toContain('lookup 100');
    expect(fs.existsSync(env.node.pinDir)).toBe(false);
  });
});
