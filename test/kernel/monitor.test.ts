/* sluice monitor end to end: the real agent on a simulated node (standalone mode, pods added
 * through the CNI chain so the agent knows their names), real traffic, and `bin/sluice monitor`
 * printing what the datapath decided, with pod and Service names, filtered by the agent.
 * Each test runs an unfiltered monitor beside the filtered one: what the filter hides is shown to
 * have happened while both were attached.
 */
import type { ChildProcess } from 'node:child_process';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { probeFeature } from '../../src/bpf/introspect';
import { type SimPod, waitFor } from '../harness';
import {
  answeredBy,
  lbList,
  probe,
  SLUICE,
  serve,
  serviceYaml,
  sliceYaml,
  sluice,
  stopAgent,
  TCP_PORT,
  UDP_PORT,
  waitForBackends,
  writeObjects,
  startSteadyClient,
} from './lb-env';
import { addMeshPod, createMeshEnv, type MeshEnv, namespaceYaml, startApp, startSidecar, waitForMode } from './mesh-env';

const VIP = '10.96.0.10';
const EMPTY_VIP = '10.96.0.11';
const DNS_VIP = '10.96.0.53';
const STATUS = { 'sidecar.istio.io/status': '{"initContainers":null,"containers":["istio-proxy"]}' };
const ECONNREFUSED = 111;

/** One line of `sluice monitor -o json`. */
interface Line {
  time: string;
  type: string;
  reason: string;
  proto: string;
  mode: string;
  netnsCookie: string;
  src: string;
  srcPort: number;
  dst: string;
  dstPort: number;
  to: string;
  toPort: number;
  errno: number;
  pod: string;
  srcName: string;
  dstName: string;
  toName: string;
}

interface Monitor {
  child: ChildProcess;
  /** what it printed so far, parsed */
  lines(): Line[];
}

describe.skipIf(process.getuid?.() !== 0)('sluice monitor on a simulated node (needs root)', () => {
  let env: MeshEnv;
  let cl: SimPod; // default/cl: a plain pod (socket-LB), the client of every test
  let backends: SimPod[]; // default/be1, default/be2: the Service's endpoints
  let meshed: SimPod; // shop/meshed: sidecar mode, its stand-in sidecar and app running
  let bare: SimPod; // shop/bare: sidecar mode, no sidecar listening
  const monitors: ChildProcess[] = [];

  function startMonitor(args: string[]): Monitor {
    const child = env.node.spawn([SLUICE, 'monitor', '--config', env.configPath, ...args], { inCgroup: false });
    monitors.push(child);
    return {
      child,
      lines: () =>
        env.node
          .output(child)
          .stdout.split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as Line),
    };
  }

  /**
   * Sends rounds of traffic until each monitor printed what its check wants (events flow only once
   * a monitor is attached), then one more round, which every monitor saw whole: the check must
   * hold of that round's lines alone.
   */
  async function settle(traffic: () => Promise<void>, checks: Array<[Monitor, (lines: Line[]) => boolean]>): Promise<void> {
    await waitFor(
      'the monitors attached and printing',
      async () => {
        for (const [m] of checks) {
          const out = env.node.output(m.child);
          if (out.exited) throw new Error(`sluice monitor exited (${out.exitCode ?? out.signal}): ${out.stderr.slice(-1000)}`);
        }
        await traffic();
        return checks.every(([m, ok]) => ok(m.lines()));
      },
      30000,
      100,
    );
    const before = checks.map(([m]) => m.lines().length);
    await traffic();
    await waitFor('the last round printed', () => checks.every(([m, ok], i) => ok(m.lines().slice(before[i]))), 10000);
  }

  const fromClient = (addr: string, port: number, timeoutMs = 1000) => probe(env, addr, port, { from: cl, timeoutMs });

  beforeAll(async () => {
    env = await createMeshEnv({ backends: 0 });
    writeObjects(env, 'ns.yaml', [namespaceYaml('default'), namespaceYaml('shop')]);
    backends = [await addMeshPod(env, 'be1'), await addMeshPod(env, 'be2')];
    for (const be of backends) await serve(env, be);
    cl = await addMeshPod(env, 'cl');
    meshed = await addMeshPod(env, 'meshed', { namespace: 'shop', annotations: STATUS });
    bare = await addMeshPod(env, 'bare', { namespace: 'shop', annotations: STATUS });
    await waitForMode(env, meshed, 'sidecar');
    await waitForMode(env, bare, 'sidecar');
    await startSidecar(env, meshed);
    await startApp(env, meshed, TCP_PORT);
    writeObjects(env, 'svc.yaml', [
      serviceYaml('web', { clusterIP: VIP, ports: [{ name: 'http', port: 80, targetPort: TCP_PORT }] }),
      sliceYaml('web-1', {
        service: 'web',
        family: 4,
        endpoints: backends.map((b) => ({ ip: b.ipv4 })),
        ports: [{ name: 'http', port: TCP_PORT }],
      }),
      serviceYaml('empty', { clusterIP: EMPTY_VIP, ports: [{ name: 'http', port: 80, targetPort: TCP_PORT }] }),
      sliceYaml('empty-1', { service: 'empty', family: 4, endpoints: [], ports: [{ name: 'http', port: TCP_PORT }] }),
    ]);
    await waitForBackends(
      env,
      `${VIP}:80/TCP`,
      backends.map((b) => `${b.ipv4}:${TCP_PORT}`),
    );
    await waitFor('empty programmed', async () => (await lbList(env)).some((s) => s.frontend === `${EMPTY_VIP}:80/TCP`));
  });

  afterEach(async (ctx) => {
    if (ctx.task.result?.state === 'fail') {
      for (const m of monitors)
        console.error(
          `[monitor ${m.spawnargs.slice(2).join(' ')}]\n${env.node.output(m).stdout.slice(-3000)}\n${env.node.output(m).stderr.slice(-1000)}`,
        );
      if (env?.agent) console.error(`[agent log tail]\n${env.node.output(env.agent).stderr.split('\n').slice(-40).join('\n')}`);
    }
    for (const m of monitors.splice(0)) {
      if (env.node.output(m).exited) continue;
      const gone = new Promise((resolve) => m.once('close', resolve));
      m.kill('SIGINT');
      await gone;
    }
  });

  afterAll(async () => {
    await stopAgent(env);
    await env?.node.destroy();
  });

  it('socket-LB: lb-translate names the client pod, the Service port and the backend pod; lb-refuse the empty Service with ECONNREFUSED; --type keeps only those', async () => {
    const all = startMonitor(['-o', 'json']);
    const lb = startMonitor(['-o', 'json', '--type', 'lb-translate,lb-refuse']);
    const fromCl = (type: string) => (lines: Line[]) => lines.some((l) => l.type === type && l.pod === 'default/cl');
    await settle(async () => {
      await fromClient(VIP, 80);
      await fromClient(EMPTY_VIP, 80);
      await probe(env, VIP, 80, { from: meshed }); // captured: not socket-LB
    }, [
      [lb, (ls) => fromCl('lb-translate')(ls) && fromCl('lb-refuse')(ls)],
      [all, (ls) => ls.some((l) => l.type === 'capture-out' && l.pod === 'shop/meshed')],
    ]);
    const lines = lb.lines();
    const translate = lines.find((l) => l.type === 'lb-translate' && l.pod === 'default/cl')!;
    expect(translate).toMatchObject({
      proto: 'tcp',
      dst: VIP,
      dstPort: 80,
      dstName: 'default/web:http',
      toPort: TCP_PORT,
      errno: 0,
    });
    const backend = backends.find((b) => b.ipv4 === translate.to);
    expect(backend, `translated to ${translate.to}`).toBeDefined();
    expect(translate.toName).toBe(`default/${backend!.name}`);
    expect(translate.netnsCookie).toMatch(/^\d+$/);
    expect(translate.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(Math.abs(Date.parse(translate.time) - Date.now())).toBeLessThan(10 * 60 * 1000); // the kernel's clock mapped to the wall clock
    const refuse = lines.find((l) => l.type === 'lb-refuse' && l.pod === 'default/cl')!;
    expect(refuse).toMatchObject({
      proto: 'tcp',
      dst: EMPTY_VIP,
      dstPort: 80,
      dstName: 'default/empty:http',
      errno: ECONNREFUSED,
      reason: 'no-backend',
      to: '',
    });
    expect(new Set(lines.map((l) => l.type))).toEqual(new Set(['lb-translate', 'lb-refuse']));
  });

  it("sidecar capture: capture-out to 15001 with the Service named, the proxy's own connect bypass-out (proxy-uid), capture-in naming the client; --pod shows one pod's decisions", async () => {
    const all = startMonitor(['-o', 'json']);
    const pod = startMonitor(['-o', 'json', '--pod', 'shop/meshed']);
    // bypass-out to the VIP: the sidecar's upstream (its forward to the app from 127.0.0.6 is a
    // bypass-out too, inbound-passthrough)
    const has = (type: string) => (lines: Line[]) =>
      lines.some((l) => l.type === type && l.pod === 'shop/meshed' && (type !== 'bypass-out' || l.dst === VIP));
    await settle(async () => {
      await probe(env, VIP, 80, { from: meshed }); // the app's connect, captured; the sidecar's upstream, left alone
      await fromClient(meshed.ipv4, TCP_PORT); // inbound, steered to 15006
      await fromClient(VIP, 80); // another pod's socket-LB: not shop/meshed's
    }, [
      [pod, (ls) => ['capture-out', 'bypass-out', 'capture-in'].every((t) => has(t)(ls))],
      [all, (ls) => ls.some((l) => l.type === 'lb-translate' && l.pod === 'default/cl' && l.dst === VIP)],
    ]);
    const lines = pod.lines();
    expect(lines.find((l) => l.type === 'capture-out' && l.pod === 'shop/meshed')).toMatchObject({
      mode: 'sidecar',
      proto: 'tcp',
      dst: VIP,
      dstPort: 80,
      dstName: 'default/web:http',
      toPort: 15001,
    });
    expect(lines.find((l) => l.type === 'bypass-out' && l.pod === 'shop/meshed' && l.dst === VIP)).toMatchObject({
      mode: 'sidecar',
      reason: 'proxy-uid',
      dst: VIP,
      dstPort: 80,
      dstName: 'default/web:http',
    });
    expect(lines.find((l) => l.type === 'capture-in' && l.pod === 'shop/meshed')).toMatchObject({
      mode: 'sidecar',
      src: cl.ipv4,
      srcName: 'default/cl',
      dst: meshed.ipv4,
      dstPort: TCP_PORT,
      dstName: 'shop/meshed',
      toPort: 15006,
    });
    // every line has shop/meshed at one end; the client's own socket-LB to the VIP has none
    for (const l of lines) expect([l.pod, l.srcName, l.dstName, l.toName], JSON.stringify(l)).toContain('shop/meshed');
    expect(lines.some((l) => l.type === 'lb-translate' && l.pod === 'default/cl' && l.dst === VIP)).toBe(false);
  });

  it('no-listener: inbound to a sidecar pod whose proxy does not listen is dropped and shown; --namespace shop --type no-listener', async () => {
    const all = startMonitor(['-o', 'json']);
    const ns = startMonitor(['-o', 'json', '--namespace', 'shop', '--type', 'no-listener']);
    await settle(async () => {
      await fromClient(bare.ipv4, TCP_PORT, 300); // dropped: times out
      await fromClient(VIP, 80);
    }, [
      [ns, (ls) => ls.some((l) => l.type === 'no-listener' && l.pod === 'shop/bare')],
      [all, (ls) => ls.some((l) => l.type === 'lb-translate' && l.pod === 'default/cl')],
    ]);
    const lines = ns.lines();
    expect(lines.find((l) => l.type === 'no-listener')).toMatchObject({
      pod: 'shop/bare',
      mode: 'sidecar',
      proto: 'tcp',
      src: cl.ipv4,
      srcName: 'default/cl',
      dst: bare.ipv4,
      dstPort: TCP_PORT,
      dstName: 'shop/bare',
      toPort: 15006,
    });
    expect(lines.every((l) => l.type === 'no-listener' && l.pod.startsWith('shop/'))).toBe(true);
  });

  it("the node's own connects are `host` (--pod host); text output prints one hubble-like line each", async () => {
    const host = startMonitor(['-o', 'json', '--pod', 'host', '--type', 'lb-translate']);
    const text = startMonitor(['--type', 'lb-translate']);
    const textLines = () =>
      env.node
        .output(text.child)
        .stdout.split('\n')
        .filter((l) => l.includes(' lb-translate '));
    await settle(async () => {
      await probe(env, VIP, 80, { from: 'node' });
      await fromClient(VIP, 80);
    }, [
      [host, (ls) => ls.some((l) => l.dst === VIP)],
      [text, () => textLines().some((l) => l.includes(' default/cl lb-translate '))],
    ]);
    expect(host.lines().every((l) => l.pod === 'host' && l.type === 'lb-translate')).toBe(true);
    expect(host.lines().find((l) => l.dst === VIP)).toMatchObject({ dstName: 'default/web:http', toPort: TCP_PORT });
    const line = textLines().find((l) => l.includes(' default/cl '))!;
    expect(line).toMatch(
      /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z default\/cl lb-translate .+ -> 10\.96\.0\.10:80 \(default\/web:http\) => [\d.]+:8080 \(default\/be[12]\) tcp$/,
    );
  });

  it.skipIf(process.getuid?.() !== 0 || !probeFeature('sock_destroy'))(
    "sock-destroy (Linux >= 6.5): default/cl's connected UDP socket on default/be1, destroyed when be1 leaves the Service default/dns",
    async () => {
      const [be1, be2] = backends;
      const dns = (pods: SimPod[]) =>
        writeObjects(env, 'svc-dns.yaml', [
          serviceYaml('dns', { clusterIP: DNS_VIP, ports: [{ name: 'dns', port: 53, targetPort: UDP_PORT, protocol: 'UDP' }] }),
          sliceYaml('dns-1', {
            service: 'dns',
            family: 4,
            endpoints: pods.map((p) => ({ ip: p.ipv4 })),
            ports: [{ name: 'dns', port: UDP_PORT, protocol: 'UDP' }],
          }),
        ]);
      dns([be1]);
      await waitForBackends(env, `${DNS_VIP}:53/UDP`, [`${be1.ipv4}:${UDP_PORT}`]);
      const m = startMonitor(['-o', 'json']);
      await settle(() => fromClient(VIP, 80).then(() => undefined), [[m, (ls) => ls.some((l) => l.type === 'lb-translate')]]);
      // one connected socket, sending every 20 ms until it fails (then it connects again)
      const client = startSteadyClient(env, { proto: 'udp', addr: DNS_VIP, port: 53, from: cl });
      try {
        await env.node.waitForLine(client, `"reply":"${be1.name} `);
        dns([be2]);
        const gone = await waitFor('the sock-destroy line', () => m.lines().find((l) => l.type === 'sock-destroy'), 10000);
        expect(gone).toMatchObject({
          pod: 'default/cl',
          reason: 'backend-gone',
          proto: 'udp',
          src: cl.ipv4,
          srcName: 'default/cl',
          dst: DNS_VIP,
          dstPort: 53,
          dstName: 'default/dns:dns',
          to: be1.ipv4,
          toPort: UDP_PORT,
          toName: 'default/be1',
        });
        // the socket's first connect, to the same backend: the same Service and pods named
        expect(m.lines().find((l) => l.type === 'lb-translate' && l.dst === DNS_VIP && l.to === be1.ipv4)).toMatchObject({
          pod: 'default/cl',
          dstName: 'default/dns:dns',
          toName: 'default/be1',
        });
      } finally {
        client.kill('SIGTERM');
      }
    },
  );

  it('bypass-in: inbound to a port a sidecar pod excludes (traffic.sidecar.istio.io/excludeInboundPorts) reaches the app, the reason shown', async () => {
    const excl = await addMeshPod(env, 'excl', {
      namespace: 'shop',
      annotations: { ...STATUS, 'traffic.sidecar.istio.io/excludeInboundPorts': String(TCP_PORT) },
    });
    await waitForMode(env, excl, 'sidecar');
    await startApp(env, excl, TCP_PORT); // and no sidecar: a captured connection would fail
    const m = startMonitor(['-o', 'json', '--type', 'bypass-in']);
    const answered: Array<string | undefined> = [];
    await settle(async () => {
      answered.push(answeredBy((await fromClient(excl.ipv4, TCP_PORT))[0]));
    }, [[m, (ls) => ls.some((l) => l.pod === 'shop/excl')]]);
    expect(answered.at(-1)).toBe('app-excl');
    expect(m.lines().find((l) => l.pod === 'shop/excl')).toMatchObject({
      type: 'bypass-in',
      reason: 'excluded-port',
      mode: 'sidecar',
      proto: 'tcp',
      src: cl.ipv4,
      srcName: 'default/cl',
      dst: excl.ipv4,
      dstPort: TCP_PORT,
      dstName: 'shop/excl',
      to: '',
      toPort: 0,
    });
  });

  it('events are produced only while a monitor is attached: status counts the monitors, Ctrl-C detaches with exit 0', async () => {
    const monitorsNow = async () => JSON.parse((await sluice(env, ['status', '-o', 'json'])).stdout).monitors as number;
    expect(await monitorsNow()).toBe(0);
    const m = startMonitor(['-o', 'json', '--type', 'lb-translate']);
    await settle(() => fromClient(VIP, 80).then(() => undefined), [[m, (ls) => ls.length > 0]]);
    expect(await monitorsNow()).toBe(1);
    const exited = new Promise<number | null>((resolve) => m.child.once('exit', (code) => resolve(code)));
    m.child.kill('SIGINT');
    expect(await exited).toBe(0);
    await waitFor('the agent let the monitor go', async () => (await monitorsNow()) === 0);
  });
});
