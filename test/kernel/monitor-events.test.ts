/* The datapath's decisions as events, end to end: a node with socket-LB Services, a sidecar pod
 * (the stand-in sidecar) and a captured pod without its proxy; the event feed reads the agent's
 * pinned ring. Each of the eight event types is caused by real traffic and its decoded fields
 * checked (type, reason, addresses and ports, the pod's netns cookie, TCP and UDP, IPv4 and IPv6,
 * sidecar and ambient capture); with the gate closed the same traffic queues nothing; a ring too
 * small for what is sent counts what it dropped; a gate left open by a killed agent is closed at
 * the next start. Single events never wake the reader (monitor_submit): they reach the feed
 * through its drain timer, a burst past a quarter of the ring through a wakeup.
 */
import * as path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BpfMap, netnsCookieOf, readMapInfo } from '../../src/bpf';
import { EVENTS_RING_BYTES } from '../../src/bpf/constants';
import { probeFeature } from '../../src/bpf/introspect';
import { EVENT_MAPS, PinnedEventFeed } from '../../src/bpf/event-feed';
import { u32Codec } from '../../src/bpf/layout';
import { checkErrno, loadShim } from '../../src/bpf/shim';
import type { DatapathEvent } from '../../src/monitor/types';
import { closePoller } from '../../src/native';
import { RingReader } from '../../src/native/ring-buffer';
import { waitFor, type SimPod } from '../harness';
import {
  answeredBy,
  PROBE,
  probe,
  serviceYaml,
  sliceYaml,
  sluice,
  startAgent,
  stopAgent,
  TCP_PORT,
  UDP_PORT,
  waitForBackends,
  writeConfig,
  writeObjects,
  startSteadyClient,
} from './lb-env';
import {
  addMeshPod,
  createMeshEnv,
  namespaceYaml,
  sidecarReply,
  startApp,
  startSidecar,
  waitForMode,
  type MeshEnv,
} from './mesh-env';

const VIP = '10.96.7.10';
const VIP6 = 'fd00:96::7:10';
const VIP_EMPTY = '10.96.7.20';
const VIP_DNS = '10.96.7.53';
const STATUS = { 'sidecar.istio.io/status': '{"initContainers":null,"containers":["istio-proxy"]}' };

describe.skipIf(process.getuid?.() !== 0)('datapath events (needs root)', () => {
  let env: MeshEnv;
  let app: SimPod; // sidecar pod: the stand-in sidecar and an app on 8080
  let bare: SimPod; // sidecar pod whose proxy never started
  let plain: SimPod; // a registered pod without capture: the agent destroys sockets in its netns
  let clientCookie: bigint;
  let appCookie: bigint;
  let feed: PinnedEventFeed;
  const events: DatapathEvent[] = [];
  const clients: ChildProcess[] = [];

  const backendIp = (name: string | undefined, family: 4 | 6 = 4) => {
    const b = env.backends.find((p) => p.name === name);
    if (!b) throw new Error(`no backend named ${name}`);
    return family === 4 ? b.ipv4 : b.ipv6!;
  };

  /** The first event since the last clear() that matches, waiting for it to arrive. */
  function eventWhere(what: string, pred: (e: DatapathEvent) => boolean): Promise<DatapathEvent> {
    return waitFor(what, () => events.find(pred), 5000);
  }

  function services(dnsBackends: SimPod[]): string[] {
    const [a, b] = env.backends;
    const http = [{ name: 'http', port: 80, targetPort: TCP_PORT }];
    const sliceHttp = [{ name: 'http', port: TCP_PORT }];
    return [
      serviceYaml('web', { clusterIP: VIP, ports: [...http, { name: 'dns', port: 53, targetPort: UDP_PORT, protocol: 'UDP' }] }),
      sliceYaml('web-1', {
        service: 'web',
        family: 4,
        endpoints: [{ ip: a.ipv4 }, { ip: b.ipv4 }],
        ports: [...sliceHttp, { name: 'dns', port: UDP_PORT, protocol: 'UDP' }],
      }),
      serviceYaml('web6', { clusterIP: VIP6, ports: http }),
      sliceYaml('web6-1', { service: 'web6', family: 6, endpoints: [{ ip: a.ipv6! }, { ip: b.ipv6! }], ports: sliceHttp }),
      serviceYaml('empty', { clusterIP: VIP_EMPTY, ports: http }),
      serviceYaml('dns', { clusterIP: VIP_DNS, ports: [{ name: 'dns', port: 53, targetPort: UDP_PORT, protocol: 'UDP' }] }),
      sliceYaml('dns-1', {
        service: 'dns',
        family: 4,
        endpoints: dnsBackends.map((p) => ({ ip: p.ipv4 })),
        ports: [{ name: 'dns', port: UDP_PORT, protocol: 'UDP' }],
      }),
    ];
  }

  function gate(): BpfMap<number, number> {
    return BpfMap.openPinned(path.join(env.node.pinDir, EVENT_MAPS.gate), u32Codec, u32Codec);
  }

  function gateValue(): number | undefined {
    const g = gate();
    try {
      return g.get(0);
    } finally {
      g.close();
    }
  }

  function setGate(open: boolean): void {
    const g = gate();
    try {
      g.set(0, open ? 1 : 0);
    } finally {
      g.close();
    }
  }

  /** Records queued in the ring and not read yet, read without touching the gate. */
  function unreadRecords(): number {
    const pin = path.join(env.node.pinDir, EVENT_MAPS.ring);
    const fd = checkErrno(loadShim().objGet(pin), `open ${pin}`);
    const reader = new RingReader(fd, () => {});
    try {
      return reader.drain();
    } finally {
      reader.close();
      loadShim().close(fd);
    }
  }

  beforeAll(async () => {
    env = await createMeshEnv({ backends: 2 });
    const [a, b] = env.backends;
    writeObjects(env, 'svc.yaml', services([a]));
    await waitForBackends(env, `${VIP}:80/TCP`, [`${a.ipv4}:${TCP_PORT}`, `${b.ipv4}:${TCP_PORT}`]);
    await waitForBackends(env, `${VIP_DNS}:53/UDP`, [`${a.ipv4}:${UDP_PORT}`]);
    app = await addMeshPod(env, 'meshed', { annotations: STATUS });
    await startSidecar(env, app);
    await startApp(env, app, 8080);
    bare = await addMeshPod(env, 'bare', { annotations: STATUS });
    plain = await addMeshPod(env, 'plain');
    clientCookie = netnsCookieOf(env.client.netnsPath);
    appCookie = netnsCookieOf(app.netnsPath);
    feed = new PinnedEventFeed(env.node.pinDir);
    feed.start((e) => events.push(e));
  });

  afterAll(async () => {
    feed?.close();
    closePoller();
    for (const c of clients) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    await stopAgent(env);
    if (env) await sluice(env, ['uninstall'], true);
    await env?.node.destroy();
  });

  const clear = () => void (events.length = 0);

  it('the feed opened the gate, and the ring has the default size', () => {
    expect(gateValue()).toBe(1);
    const fd = checkErrno(loadShim().objGet(path.join(env.node.pinDir, EVENT_MAPS.ring)), 'open ring');
    try {
      expect(readMapInfo(fd, 'sl_events').maxEntries).toBe(EVENTS_RING_BYTES);
    } finally {
      loadShim().close(fd);
    }
  });

  it('lb-translate: a TCP connect to a VIP, from the pod, to the backend it reached (IPv4 and IPv6)', async () => {
    clear();
    const [r] = await probe(env, VIP, 80);
    expect(r.ok).toBe(true);
    const e = await eventWhere(
      'lb-translate tcp',
      (x) => x.type === 'lb-translate' && x.netnsCookie === clientCookie && x.dst === VIP,
    );
    expect(e).toMatchObject({
      reason: '',
      proto: 'tcp',
      mode: '',
      dst: VIP,
      dstPort: 80,
      to: backendIp(answeredBy(r)),
      toPort: TCP_PORT,
      errno: 0,
    });
    expect(e.sockCookie).not.toBe(0n);
    expect(e.tsNs).toBeGreaterThan(0n);

    const [r6] = await probe(env, VIP6, 80);
    expect(r6.ok).toBe(true);
    const e6 = await eventWhere('lb-translate ipv6', (x) => x.type === 'lb-translate' && x.dst === VIP6);
    expect(e6).toMatchObject({
      netnsCookie: clientCookie,
      proto: 'tcp',
      dstPort: 80,
      to: backendIp(answeredBy(r6), 6),
      toPort: TCP_PORT,
    });
  });

  it('lb-translate: a UDP datagram to a VIP', async () => {
    clear();
    const [r] = await probe(env, VIP, 53, { proto: 'udp' });
    expect(r.ok).toBe(true);
    const e = await eventWhere('lb-translate udp', (x) => x.type === 'lb-translate' && x.proto === 'udp' && x.dst === VIP);
    expect(e).toMatchObject({ netnsCookie: clientCookie, dstPort: 53, to: backendIp(answeredBy(r)), toPort: UDP_PORT });
  });

  it('lb-refuse: a Service without endpoints answers ECONNREFUSED, reason no-backend', async () => {
    clear();
    const [r] = await probe(env, VIP_EMPTY, 80);
    expect(r).toMatchObject({ ok: false, errno: 111 });
    const e = await eventWhere('lb-refuse', (x) => x.type === 'lb-refuse');
    expect(e).toMatchObject({
      reason: 'no-backend',
      errno: 111,
      netnsCookie: clientCookie,
      dst: VIP_EMPTY,
      dstPort: 80,
      to: '',
      toPort: 0,
      proto: 'tcp',
    });
  });

  it("capture-out to the sidecar, then the proxy's own connect as bypass-out (proxy-uid) and lb-translate", async () => {
    clear();
    const [r] = await probe(env, VIP, 80, { from: app });
    expect(r.ok).toBe(true);
    const out = await eventWhere('capture-out', (x) => x.type === 'capture-out');
    expect(out).toMatchObject({
      netnsCookie: appCookie,
      mode: 'sidecar',
      reason: '',
      proto: 'tcp',
      dst: VIP,
      dstPort: 80,
      to: '127.0.0.1',
      toPort: 15001,
      errno: 0,
    });
    // bound to the pod's address before it is sent to loopback (as under REDIRECT)
    expect(out.src).toBe(app.ipv4);
    const bypass = await eventWhere('bypass-out proxy-uid', (x) => x.type === 'bypass-out' && x.reason === 'proxy-uid');
    expect(bypass).toMatchObject({ netnsCookie: appCookie, mode: 'sidecar', dst: VIP, dstPort: 80, to: '' });
    const lb = await eventWhere("the proxy's lb-translate", (x) => x.type === 'lb-translate' && x.netnsCookie === appCookie);
    expect(lb.sockCookie).toBe(bypass.sockCookie); // one socket, two decisions
    expect(lb.sockCookie).not.toBe(out.sockCookie);
  });

  it("bypass-out: the app's connect to 127.0.0.1 is left alone (a local address: Istio's rule 4)", async () => {
    clear();
    await probe(env, '127.0.0.1', 9099, { from: app, timeoutMs: 300 });
    const e = await eventWhere('bypass-out loopback', (x) => x.type === 'bypass-out' && x.netnsCookie === appCookie);
    expect(e).toMatchObject({ reason: 'local', mode: 'sidecar', dst: '127.0.0.1', dstPort: 9099, to: '' });
  });

  it("capture-in to the sidecar's inbound listener, and bypass-in for the sidecar's own port", async () => {
    clear();
    const [r] = await probe(env, app.ipv4, 8080);
    expect(r.ok).toBe(true);
    const e = await eventWhere('capture-in', (x) => x.type === 'capture-in');
    expect(e).toMatchObject({
      netnsCookie: appCookie,
      mode: 'sidecar',
      proto: 'tcp',
      src: env.client.ipv4,
      dst: app.ipv4,
      dstPort: 8080,
      to: app.ipv4,
      toPort: 15006,
      sockCookie: 0n,
    });
    // the sidecar hands the connection to the app from 127.0.0.6: not captured again
    await eventWhere('bypass-in from-pod', (x) => x.type === 'bypass-in' && x.reason === 'from-pod' && x.dstPort === 8080);
    clear();
    await probe(env, app.ipv4, 15001, { timeoutMs: 500 });
    const own = await eventWhere('bypass-in proxy-port', (x) => x.type === 'bypass-in');
    expect(own).toMatchObject({
      reason: 'proxy-port',
      netnsCookie: appCookie,
      src: env.client.ipv4,
      dst: app.ipv4,
      dstPort: 15001,
      to: '',
    });
  });

  it('no-listener: inbound to a captured pod whose proxy does not listen', async () => {
    clear();
    const [r] = await probe(env, bare.ipv4, 8080, { timeoutMs: 300 });
    expect(r.ok).toBe(false);
    const e = await eventWhere('no-listener', (x) => x.type === 'no-listener');
    expect(e).toMatchObject({
      netnsCookie: netnsCookieOf(bare.netnsPath),
      mode: 'sidecar',
      src: env.client.ipv4,
      dst: bare.ipv4,
      dstPort: 8080,
      toPort: 15006,
    });
  });

  it.skipIf(process.getuid?.() !== 0 || !probeFeature('tcx'))(
    "ambient (Linux >= 6.6): capture-out to the node proxy's 15001, capture-in to 15006, HBONE's 15008 left alone",
    async () => {
      writeObjects(env, 'ns-amb.yaml', [namespaceYaml('amb', { 'istio.io/dataplane-mode': 'ambient' })]);
      const amb = await addMeshPod(env, 'zt', { namespace: 'amb' });
      await waitForMode(env, amb, 'ambient');
      // the node proxy's stand-in, as in ambient.test.ts: ztunnel's ports and its mark 0x539
      const zt = env.node.spawn([PROBE, 'sidecar', '--id', 'zt', '--mark', '0x539', '--extra-port', '15008', '--forward'], {
        netnsPath: amb.netnsPath,
      });
      clients.push(zt);
      await env.node.waitForLine(zt, 'ready');
      await startApp(env, amb, 8080);
      const ambCookie = netnsCookieOf(amb.netnsPath);

      clear();
      const [r] = await probe(env, VIP, 80, { from: amb });
      expect(sidecarReply(r.reply)).toMatchObject({ id: 'zt', via: 'out', orig: `${VIP}:80` });
      const out = await eventWhere('ambient capture-out', (x) => x.type === 'capture-out' && x.netnsCookie === ambCookie);
      expect(out).toMatchObject({
        mode: 'ambient',
        reason: '',
        proto: 'tcp',
        src: amb.ipv4,
        dst: VIP,
        dstPort: 80,
        to: '127.0.0.1',
        toPort: 15001,
        errno: 0,
      });
      // the node proxy's own connect upstream carries its mark
      const own = await eventWhere('bypass-out proxy-mark', (x) => x.type === 'bypass-out' && x.reason === 'proxy-mark');
      expect(own).toMatchObject({ netnsCookie: ambCookie, mode: 'ambient', dst: VIP, dstPort: 80, to: '' });

      clear();
      const [rin] = await probe(env, amb.ipv4, 8080);
      expect(sidecarReply(rin.reply)).toMatchObject({ id: 'zt', via: 'in', orig: `${amb.ipv4}:8080` });
      const inbound = await eventWhere('ambient capture-in', (x) => x.type === 'capture-in' && x.netnsCookie === ambCookie);
      expect(inbound).toMatchObject({
        mode: 'ambient',
        reason: '',
        proto: 'tcp',
        src: env.client.ipv4,
        dst: amb.ipv4,
        dstPort: 8080,
        to: amb.ipv4,
        toPort: 15006,
        sockCookie: 0n,
      });

      clear();
      const [rh] = await probe(env, amb.ipv4, 15008);
      expect(sidecarReply(rh.reply)).toMatchObject({ via: '15008', local: `${amb.ipv4}:15008` });
      const hbone = await eventWhere('bypass-in hbone', (x) => x.type === 'bypass-in' && x.netnsCookie === ambCookie);
      expect(hbone).toMatchObject({
        reason: 'hbone',
        mode: 'ambient',
        src: env.client.ipv4,
        dst: amb.ipv4,
        dstPort: 15008,
        to: '',
        toPort: 0,
      });
      zt.kill('SIGTERM');
    },
  );

  it.skipIf(process.getuid?.() !== 0 || !probeFeature('sock_destroy'))(
    'sock-destroy: a connected UDP socket whose backend left the Service (Linux >= 6.5)',
    async () => {
      const [a, b] = env.backends;
      const client = startSteadyClient(env, { proto: 'udp', addr: VIP_DNS, port: 53, from: plain });
      clients.push(client);
      await eventWhere("the client's lb-translate", (x) => x.type === 'lb-translate' && x.dst === VIP_DNS);
      clear();
      writeObjects(env, 'svc.yaml', services([b]));
      const e = await eventWhere('sock-destroy', (x) => x.type === 'sock-destroy');
      expect(e).toMatchObject({
        reason: 'backend-gone',
        proto: 'udp',
        netnsCookie: netnsCookieOf(plain.netnsPath),
        dst: VIP_DNS,
        dstPort: 53,
        to: a.ipv4,
        toPort: UDP_PORT,
      });
      expect(e.sockCookie).not.toBe(0n);
      expect(e.src).toBe(plain.ipv4);
      client.kill('SIGTERM');
    },
  );

  it('with the gate closed the same traffic queues nothing; opened, it does', async () => {
    feed.stop();
    expect(gateValue()).toBe(0);
    unreadRecords(); // what was queued before the gate closed
    const before = events.length;
    for (const [addr, port, proto] of [
      [VIP, 80, 'tcp'],
      [VIP, 53, 'udp'],
      [VIP_EMPTY, 80, 'tcp'],
    ] as const)
      await probe(env, addr, port, { proto });
    await probe(env, VIP, 80, { from: app });
    await probe(env, app.ipv4, 8080);
    expect(unreadRecords()).toBe(0);
    expect(events.length).toBe(before);
    // the control: the same probe with the gate open leaves records for a reader
    setGate(true);
    try {
      await probe(env, VIP, 80);
    } finally {
      setGate(false);
    }
    expect(unreadRecords()).toBeGreaterThan(0);
  });

  it('a gate left open by a killed agent is closed at start; monitor-ring-bytes sizes the ring; a full ring counts what it dropped', async () => {
    setGate(true);
    await stopAgent(env, 'SIGKILL');
    writeConfig(env, {
      'cni-conf-dir': env.confDir,
      'cni-bin-dir': env.binDir,
      'state-dir': env.stateDir,
      'monitor-ring-bytes': '4096',
    });
    await startAgent(env);
    expect(gateValue()).toBe(0);
    const fd = checkErrno(loadShim().objGet(path.join(env.node.pinDir, EVENT_MAPS.ring)), 'open ring');
    try {
      expect(readMapInfo(fd, 'sl_events').maxEntries).toBe(4096);
    } finally {
      loadShim().close(fd);
    }
    // nobody reads: 60 datagrams' events (96 bytes each in the ring) overflow 4 KiB
    const counting = new PinnedEventFeed(env.node.pinDir);
    try {
      expect(counting.lost()).toBe(0n);
      setGate(true);
      try {
        const res = await probe(env, VIP, 53, { proto: 'udp', udpMode: 'unconnected', sameSocket: true, count: 60 });
        expect(res.filter((x) => x.ok)).toHaveLength(60);
      } finally {
        setGate(false);
      }
      const queued = unreadRecords();
      expect(queued).toBeGreaterThan(0);
      expect(queued).toBeLessThan(60);
      expect(counting.lost()).toBe(BigInt(60 - queued));
    } finally {
      counting.close();
    }
  });

  it('a burst past a quarter of the ring wakes the reader (a feed without its drain timer reads it)', async () => {
    const woken: DatapathEvent[] = [];
    const untimed = new PinnedEventFeed(env.node.pinDir, { drainEveryMs: 0 });
    untimed.start((e) => woken.push(e));
    try {
      // 4 KiB ring, 96 bytes an event: the 11th unread passes 1 KiB; 30 fit without a loss
      const res = await probe(env, VIP, 53, { proto: 'udp', udpMode: 'unconnected', sameSocket: true, count: 30 });
      expect(res.filter((x) => x.ok)).toHaveLength(30);
      await waitFor('the woken reader', () => woken.length >= 11, 5000);
      expect(woken.every((e) => e.type === 'lb-translate' && e.dst === VIP && e.proto === 'udp')).toBe(true);
      expect(untimed.lost()).toBe(0n);
    } finally {
      untimed.close();
    }
  });
});
