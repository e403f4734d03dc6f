/* Metrics and health endpoints of a running agent, scraped over HTTP on 127.0.0.1 (API mode
 * against the stand-in API server, real programs on a simulated node): every metric is checked by
 * name, with values that follow what the test did (CNI ADDs, Services synced, captured and
 * refused connections, a pod repaired, ztunnel connecting, the API server going away).
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { COUNTERS } from '../../src/bpf/layout';
import { LAST_CHANGE_TRIGGER_TIME } from '../../src/metrics';
import { FakeApiServer } from '../harness/apiserver';
import { waitFor } from '../harness';
import { addPodThroughChain } from './api-mode-helpers';
import {
  createLbEnv,
  lbList,
  probe,
  serviceYaml,
  SLUICE,
  sliceYaml,
  sluice,
  startAgent,
  stopAgent,
  TCP_PORT,
  UDP_PORT,
  waitForBackends,
  writeConfig,
  writeObjects,
  type LbEnv,
} from './lb-env';
import { startApp, startSidecar, type MeshEnv } from './mesh-env';
import { startZtunnel } from './ztunnel-env';

const NODE = 'sim-node';
const VIP = '10.96.0.10';
const EMPTY_VIP = '10.96.0.11';
const STATUS = { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}' };

/** Every metric the agent must export (README "Metrics"). */
const METRICS = [
  'sluice_cni_requests_total',
  'sluice_cni_add_duration_seconds',
  'sluice_lb_frontends',
  'sluice_lb_backends',
  'sluice_bpf_map_pressure',
  'sluice_datapath_events_total',
  'sluice_endpoints',
  'sluice_capture_connections_total',
  'sluice_k8s_events_total',
  'sluice_k8s_api_reachable',
  'sluice_network_programming_duration_seconds',
  'sluice_repair_pods_total',
  'sluice_zds_connected',
  'sluice_zds_pending',
  // prom-client's process and runtime metrics
  'process_cpu_user_seconds_total',
  'process_resident_memory_bytes',
  'nodejs_heap_size_used_bytes',
];

interface Scrape {
  text: string;
  /** `name{labels}` -> value */
  s: Map<string, number>;
  v(key: string): number;
}

function parse(text: string): Scrape {
  const s = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    s.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return {
    text,
    s,
    v(key) {
      const x = s.get(key);
      if (x === undefined) throw new Error(`no sample ${key} in the scrape`);
      return x;
    },
  };
}

function podObject(name: string, o: { ns?: string; annotations?: Record<string, string>; ip?: string; uid?: string } = {}) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: o.ns ?? 'default', uid: o.uid, annotations: o.annotations ?? {} },
    // an injected pod has Istio's sidecar container (istio-cni captures only those)
    spec: {
      nodeName: NODE,
      containers: [
        { name: 'app', image: 'app' },
        ...(o.annotations?.['sidecar.istio.io/status']
          ? [{ name: 'istio-proxy', image: 'proxyv2', args: ['proxy', 'sidecar'] }]
          : []),
      ],
    },
    ...(o.ip ? { status: { phase: 'Running', podIP: o.ip, podIPs: [{ ip: o.ip }] } } : {}),
  };
}

function serviceObject(name: string, ip: string, ports: Array<{ name: string; port: number; protocol: 'TCP' | 'UDP' }>) {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'default' },
    spec: { clusterIP: ip, clusterIPs: [ip], ports: ports.map((p) => ({ ...p, targetPort: p.port })) },
  };
}

/** An EndpointSlice as the controller writes it, with the time of the change that caused it. */
function sliceObject(
  name: string,
  service: string,
  ips: string[],
  ports: Array<{ name: string; port: number; protocol: 'TCP' | 'UDP' }>,
) {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name,
      namespace: 'default',
      labels: { 'kubernetes.io/service-name': service },
      annotations: { [LAST_CHANGE_TRIGGER_TIME]: new Date().toISOString() },
    },
    addressType: 'IPv4',
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
    ports,
  };
}

describe.skipIf(process.getuid?.() !== 0)('metrics and health endpoints (needs root)', () => {
  let api: FakeApiServer;
  let env: MeshEnv;
  let addrs: { metrics: string; health: string };

  const scrape = async (): Promise<Scrape> => {
    const res = await fetch(`http://${addrs.metrics}/metrics`);
    expect(res.status).toBe(200);
    return parse(await res.text());
  };
  const status = async () => JSON.parse((await sluice(env, ['status', '-o', 'json'], true)).stdout);

  beforeAll(async () => {
    api = await FakeApiServer.start({ bookmarkIntervalMs: 200 });
    env = (await createLbEnv({ backends: 2 })) as MeshEnv;
    env.confDir = path.join(env.node.workDir, 'net.d');
    env.binDir = path.join(env.node.workDir, 'cni-bin');
    env.stateDir = path.join(env.node.workDir, 'state');
    fs.mkdirSync(env.confDir); // empty: the primary CNI has not written its config yet
    api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'default' } });
    api.apply({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'amb', labels: { 'istio.io/dataplane-mode': 'ambient' } },
    });
    api.apply({ apiVersion: 'v1', kind: 'Node', metadata: { name: NODE } });
    // a pod that started before the agent (repaired in place) and one whose netns is nowhere
    const legacy = await env.node.addPod('legacy');
    env.node.spawn(['sleep', '300'], { netnsPath: legacy.netnsPath }); // a process of the pod, under cgroup-root
    api.apply(podObject('legacy', { ip: legacy.ipv4, uid: legacy.uid }));
    api.apply(podObject('ghost', { ip: '10.255.255.254' }));
    const kubeconfig = api.kubeconfig(path.join(env.node.workDir, 'kubeconfig'));
    writeConfig(env, {
      'k8s-kubeconfig': kubeconfig,
      'node-name': NODE,
      'cni-conf-dir': env.confDir,
      'cni-bin-dir': env.binDir,
      'state-dir': env.stateDir,
    });
    // in this process's network namespace, to reach the stand-in API server and the endpoints on
    // 127.0.0.1 (nothing is attached to it: programs go to the test cgroup and pods' namespaces)
    env.agent = env.node.spawn([SLUICE, 'agent', '--config', env.configPath], {
      inCgroup: false,
      netnsPath: `/proc/${process.pid}/ns/net`,
    });
    const agent = env.agent;
    const st = await waitFor(
      'agent synced (not ready: no CNI config yet)',
      async () => {
        const out = env.node.output(agent);
        if (out.exited) throw new Error(`agent exited (${out.exitCode ?? out.signal}): ${out.stderr.slice(-2000)}`);
        const s = await status();
        return s.phase === 'ready' ? s : undefined;
      },
      20000,
    );
    addrs = st.http;
  });

  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail' && env?.agent)
      console.error(`[agent log tail]\n${env.node.output(env.agent).stderr.split('\n').slice(-40).join('\n')}`);
  });

  afterAll(async () => {
    await stopAgent(env);
    await env?.node.destroy();
    await api?.stop();
  });

  it('both endpoints listen on 127.0.0.1 at the ports the test config left free (port 0)', () => {
    expect(addrs.health).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(addrs.metrics).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(addrs.health).not.toBe('127.0.0.1:9968');
    expect(addrs.metrics).not.toBe('127.0.0.1:9967');
  });

  it('/healthz is 200 while /readyz is 503 with the reason until the CNI plugin is installed, then 200', async () => {
    const healthz = await fetch(`http://${addrs.health}/healthz`);
    expect([healthz.status, await healthz.text()]).toEqual([200, 'ok\n']);
    const before = await fetch(`http://${addrs.health}/readyz`);
    expect(before.status).toBe(503);
    expect(await before.text()).toMatch(/^not ready: CNI plugin not installed: /);
    expect((await sluice(env, ['status'], true)).code).toBe(1); // the same meaning as `sluice status`
    fs.writeFileSync(
      path.join(env.confDir, '10-podnet.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'podnet',
        plugins: [{ type: 'bridge', bridge: 'slbr0', ipam: { type: 'host-local' } }],
      }),
    );
    await waitFor('/readyz 200', async () => (await fetch(`http://${addrs.health}/readyz`)).status === 200, 10000);
    expect(await (await fetch(`http://${addrs.health}/readyz`)).text()).toMatch(
      /^ready: programs attached, first sync done, CNI plugin in /,
    );
    expect((await sluice(env, ['status'], true)).code).toBe(0);
  });

  it('Services synced: frontends, backends and map pressure equal what the pinned maps hold; programming latency observed per change', async () => {
    const [a, b] = env.backends;
    const ports = [
      { name: 'http', port: TCP_PORT, protocol: 'TCP' as const },
      { name: 'dns', port: UDP_PORT, protocol: 'UDP' as const },
    ];
    const before = await scrape();
    api.apply(serviceObject('web', VIP, ports));
    api.apply(sliceObject('web-1', 'web', [a.ipv4, b.ipv4], ports));
    api.apply(serviceObject('empty', EMPTY_VIP, [ports[0]]));
    api.apply(sliceObject('empty-1', 'empty', [], [ports[0]]));
    await waitForBackends(env, `${VIP}:${TCP_PORT}/TCP`, [`${a.ipv4}:${TCP_PORT}`, `${b.ipv4}:${TCP_PORT}`]);
    await waitForBackends(env, `${VIP}:${UDP_PORT}/UDP`, [`${a.ipv4}:${UDP_PORT}`, `${b.ipv4}:${UDP_PORT}`]);
    await waitFor('empty programmed', async () => (await lbList(env)).some((s) => s.frontend === `${EMPTY_VIP}:${TCP_PORT}/TCP`));
    const listed = await lbList(env);
    const m = await scrape();
    expect(m.v('sluice_lb_frontends')).toBe(listed.length);
    expect(listed.length).toBe(3);
    const backends = new Set(listed.flatMap((s) => s.backends.map((x) => `${x}/${s.frontend.split('/')[1]}`)));
    expect(m.v('sluice_lb_backends')).toBe(backends.size);
    expect(backends.size).toBe(4);
    // one entry per frontend and one per backend slot, of bpf-lb-service-map-max (1048576 by
    // default) and bpf-lb-backend-map-max (524288)
    const svcEntries = listed.reduce((n, s) => n + 1 + s.backends.length, 0);
    expect(m.v('sluice_bpf_map_pressure{map_name="sl_lb_svc"}')).toBe(svcEntries / 1048576);
    expect(m.v('sluice_bpf_map_pressure{map_name="sl_lb_backend"}')).toBe(4 / 524288);
    for (const map of [
      'sl_lb_affinity',
      'sl_lb_pod_opt_out',
      'sl_lb_sock_dead',
      'sl_endpoints',
      'sl_pod_ips',
      'sl_ep_stats',
      'sl_origdst_syn',
      'sl_listeners',
      'sl_node_ips',
      'sl_bypass_flows',
    ]) {
      const p = m.v(`sluice_bpf_map_pressure{map_name="${map}"}`);
      expect(p, map).toBeGreaterThanOrEqual(0);
      expect(p, map).toBeLessThan(1);
    }
    expect(m.s.has('sluice_bpf_map_pressure{map_name="sl_lb_counters"}')).toBe(false); // an array does not fill
    // the two annotated slice changes, each observed once, from their trigger times
    const count = (x: Scrape) => x.v('sluice_network_programming_duration_seconds_count');
    expect(count(m) - count(before)).toBe(2);
    const seconds =
      m.v('sluice_network_programming_duration_seconds_sum') - before.v('sluice_network_programming_duration_seconds_sum');
    expect(seconds).toBeGreaterThan(0);
    expect(seconds).toBeLessThan(20);
    expect(
      m.v('sluice_k8s_events_total{kind="Service",type="create"}') -
        before.v('sluice_k8s_events_total{kind="Service",type="create"}'),
    ).toBe(2);
    expect(
      m.v('sluice_k8s_events_total{kind="EndpointSlice",type="create"}') -
        before.v('sluice_k8s_events_total{kind="EndpointSlice",type="create"}'),
    ).toBe(2);
    api.apply(sliceObject('web-1', 'web', [a.ipv4], ports));
    await waitForBackends(env, `${VIP}:${TCP_PORT}/TCP`, [`${a.ipv4}:${TCP_PORT}`]);
    const after = await scrape();
    expect(
      after.v('sluice_k8s_events_total{kind="EndpointSlice",type="update"}') -
        m.v('sluice_k8s_events_total{kind="EndpointSlice",type="update"}'),
    ).toBe(1);
    expect(count(after) - count(m)).toBe(1);
    expect(after.v('sluice_lb_backends')).toBe(2);
    api.apply(sliceObject('web-1', 'web', [a.ipv4, b.ipv4], ports));
    await waitForBackends(env, `${VIP}:${TCP_PORT}/TCP`, [`${a.ipv4}:${TCP_PORT}`, `${b.ipv4}:${TCP_PORT}`]);
  });

  it('CNI ADDs are counted by command and code and timed; a malformed request counts under its CNI error code', async () => {
    const before = await scrape();
    api.apply(podObject('meshed', { annotations: STATUS }));
    api.apply(podObject('nolisten', { annotations: STATUS }));
    await addPodThroughChain(env, 'meshed');
    await addPodThroughChain(env, 'nolisten');
    // what a broken plugin or runtime might send: no network configuration at all
    const reply = await new Promise<string>((resolve, reject) => {
      const c = net.createConnection(path.join(env.node.workDir, 'agent.sock'));
      let out = '';
      c.setEncoding('utf8');
      c.on('connect', () =>
        c.write(JSON.stringify({ op: 'cni', command: 'ADD', env: { CNI_COMMAND: 'ADD' }, stdin: '{}' }) + '\n'),
      );
      c.on('data', (d: string) => (out += d));
      c.on('end', () => resolve(out));
      c.on('error', reject);
    });
    const [exit, json] = [reply.slice(0, reply.indexOf('\n')), JSON.parse(reply.slice(reply.indexOf('\n') + 1))];
    expect(exit).toBe('1');
    const m = await scrape();
    const d = (k: string) => m.v(k) - (before.s.get(k) ?? 0);
    expect(d('sluice_cni_requests_total{command="ADD",code="0"}')).toBe(2);
    expect(d(`sluice_cni_requests_total{command="ADD",code="${json.code}"}`)).toBe(1);
    expect(d('sluice_cni_add_duration_seconds_count')).toBe(3);
    const sum = d('sluice_cni_add_duration_seconds_sum');
    expect(sum).toBeGreaterThan(0);
    expect(sum).toBeLessThan(15);
    expect(m.v('sluice_endpoints{mode="sidecar"}')).toBe(2);
  });

  it('captured connections, a refused connect and socket-LB move the datapath and capture counters', async () => {
    const meshed = env.node.pods.find((p) => p.name === 'meshed')!;
    const nolisten = env.node.pods.find((p) => p.name === 'nolisten')!;
    await startSidecar(env, meshed);
    await startApp(env, meshed, 8080);
    const before = await scrape();
    const d = (m: Scrape, k: string) => m.v(k) - before.v(k);
    // outbound from the meshed app: captured to its sidecar, whose own upstream connect is socket-LB
    const out = await probe(env, VIP, TCP_PORT, { from: meshed, count: 3 });
    expect(out.every((r) => r.ok && r.reply?.startsWith('sidecar '))).toBe(true);
    // inbound to the meshed pod: captured to the sidecar's 15006
    expect((await probe(env, meshed.ipv4, 8080, { count: 2 })).every((r) => r.ok)).toBe(true);
    // inbound to a sidecar pod whose proxy is not listening: dropped, fail closed
    expect((await probe(env, nolisten.ipv4, 8080, { timeoutMs: 300 }))[0].ok).toBe(false);
    // a Service without endpoints: refused at connect
    const refused = await probe(env, EMPTY_VIP, TCP_PORT, { count: 2 });
    expect(refused.map((r) => r.errno)).toEqual([111, 111]);
    const m = await scrape();
    expect(d(m, 'sluice_capture_connections_total{direction="outbound"}')).toBeGreaterThanOrEqual(3);
    expect(d(m, 'sluice_capture_connections_total{direction="inbound"}')).toBe(2);
    expect(d(m, 'sluice_capture_connections_total{direction="proxy_bypass"}')).toBeGreaterThanOrEqual(3);
    expect(d(m, 'sluice_capture_connections_total{direction="no_listener"}')).toBeGreaterThanOrEqual(1);
    expect(d(m, 'sluice_datapath_events_total{event="no_backend"}')).toBe(2);
    expect(d(m, 'sluice_datapath_events_total{event="translated"}')).toBeGreaterThanOrEqual(3);
    for (const event of COUNTERS) expect(m.s.has(`sluice_datapath_events_total{event="${event}"}`), event).toBe(true);
    // two sidecar pods enrolled (of 16384); the sidecar's listeners are in the sockhash, which
    // has no batch lookup and is counted key by key
    expect(m.v('sluice_bpf_map_pressure{map_name="sl_endpoints"}')).toBe(2 / 16384);
    expect(m.v('sluice_bpf_map_pressure{map_name="sl_listeners"}')).toBeGreaterThan(0);

    // the pod goes (CNI DEL): its kernel counters go with it, the node's totals do not go down
    await env.node.removePod(nolisten);
    await waitFor('nolisten released', async () => (await scrape()).v('sluice_endpoints{mode="sidecar"}') === 1);
    const gone = await scrape();
    for (const direction of ['outbound', 'inbound', 'proxy_bypass', 'no_listener']) {
      const k = `sluice_capture_connections_total{direction="${direction}"}`;
      expect(gone.v(k), k).toBeGreaterThanOrEqual(m.v(k));
    }
    expect(gone.v('sluice_cni_requests_total{command="DEL",code="0"}')).toBeGreaterThanOrEqual(1);
  });

  it('the repair sweep at start is counted by mode and result; registered pods by the mode the kernel holds', async () => {
    const m = await scrape();
    expect(m.v('sluice_repair_pods_total{mode="repair",result="repaired"}')).toBe(1); // legacy
    expect(m.v('sluice_repair_pods_total{mode="repair",result="not_found"}')).toBeGreaterThanOrEqual(1); // ghost
    expect(m.v('sluice_repair_pods_total{mode="repair",result="failed"}')).toBe(0);
    expect(m.v('sluice_endpoints{mode="none"}')).toBe(1); // legacy: no annotation, no ambient label
    expect(m.v('sluice_endpoints{mode="sidecar"}')).toBe(1);
    expect(m.v('sluice_endpoints{mode="ambient"}')).toBe(0);
    expect(m.v('sluice_k8s_events_total{kind="Pod",type="create"}')).toBeGreaterThanOrEqual(4);
  });

  it('ZDS: an ambient pod is pending while no ztunnel is connected, and acked once one connects', async () => {
    const before = await scrape();
    expect(before.v('sluice_zds_connected')).toBe(0);
    expect(before.v('sluice_zds_pending')).toBe(0);
    api.apply(podObject('amb1', { ns: 'amb' }));
    await addPodThroughChain(env, 'amb1', 'amb');
    const waiting = await scrape();
    expect(waiting.v('sluice_endpoints{mode="ambient"}')).toBe(1);
    expect(waiting.v('sluice_zds_pending')).toBe(1);
    expect(waiting.v('sluice_zds_connected')).toBe(0);
    const zt = startZtunnel(env, 'zt1');
    await zt.waitEvent((e) => e.event === 'snapshot');
    await waitFor('acked', async () => {
      const m = await scrape();
      return m.v('sluice_zds_connected') === 1 && m.v('sluice_zds_pending') === 0;
    });
    zt.child.kill('SIGTERM');
    await waitFor('ztunnel gone', async () => (await scrape()).v('sluice_zds_connected') === 0);
  });

  it('API server reachability: 1, then 0 while it is down, 1 again when it is back', async () => {
    expect((await scrape()).v('sluice_k8s_api_reachable')).toBe(1);
    const down = api.restart({ downMs: 4000 });
    await waitFor('reported unreachable', async () => (await scrape()).v('sluice_k8s_api_reachable') === 0, 4000);
    await down;
    api.apply(serviceObject('late', '10.96.0.12', [{ name: 'http', port: TCP_PORT, protocol: 'TCP' }])); // a watch event proves it
    await waitFor('reachable again', async () => (await scrape()).v('sluice_k8s_api_reachable') === 1, 10000);
  }, 30000);

  it('every metric is exported by name with its type, and the process metrics too', async () => {
    const m = await scrape();
    for (const name of METRICS) {
      expect(m.text, name).toMatch(new RegExp(`^# TYPE ${name} (counter|gauge|histogram)$`, 'm'));
      expect(
        [...m.s.keys()].some((k) => k === name || k.startsWith(`${name}{`) || k.startsWith(`${name}_`)),
        `${name} has samples`,
      ).toBe(true);
    }
    // no per-pod or per-Service label anywhere
    for (const k of m.s.keys()) expect(k, k).not.toMatch(/pod=|namespace=|service=|uid=/);
  });
});

describe.skipIf(process.getuid?.() !== 0)("metrics of a standalone agent in the node's namespace (needs root)", () => {
  let env: LbEnv;

  /** Scrapes from inside the node's network namespace, where the agent listens on 127.0.0.1. */
  async function scrapeInNode(): Promise<Scrape> {
    const st = JSON.parse((await sluice(env, ['status', '-o', 'json'])).stdout);
    const script = `fetch('http://${st.http.metrics}/metrics').then(async (r) => { if (r.status !== 200) process.exit(1); process.stdout.write(await r.text()); })`;
    const res = await env.node.exec([process.execPath, '-e', script], { inCgroup: false });
    return parse(res.stdout);
  }

  beforeAll(async () => {
    env = await createLbEnv({ backends: 1 });
    await startAgent(env);
  });

  afterAll(async () => {
    await stopAgent(env);
    await env?.node.destroy();
  });

  it('a Service file read after the first sync is observed from when it was read; no API reachability without an API', async () => {
    const before = await scrapeInNode();
    const [a] = env.backends;
    writeObjects(env, 'web.yaml', [
      serviceYaml('web', { clusterIP: VIP, ports: [{ name: 'http', port: 80, targetPort: TCP_PORT }] }),
      sliceYaml('web-1', { service: 'web', family: 4, endpoints: [{ ip: a.ipv4 }], ports: [{ name: 'http', port: TCP_PORT }] }),
    ]);
    await waitForBackends(env, `${VIP}:80/TCP`, [`${a.ipv4}:${TCP_PORT}`]);
    const m = await scrapeInNode();
    // the Service and its slice, read in one batch: two changes, each observed once
    expect(
      m.v('sluice_network_programming_duration_seconds_count') - before.v('sluice_network_programming_duration_seconds_count'),
    ).toBe(2);
    expect(m.v('sluice_lb_frontends')).toBe(1);
    expect(m.v('sluice_k8s_events_total{kind="Service",type="create"}')).toBe(1);
    expect(m.text).not.toContain('sluice_k8s_api_reachable');
    expect(m.v('sluice_repair_pods_total{mode="repair",result="repaired"}')).toBe(0);
  });
});
