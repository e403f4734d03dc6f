/* Upgrade from the first release: v0.1.0's agent runs a simulated node (socket-LB Services over TCP
 * and UDP, a ClientIP-affinity Service, a sidecar pod and an ambient pod with their stand-in
 * proxies) under steady streams of connections; then it is stopped and this tree's agent starts
 * on the same pins and state; then the agent again with objects whose maps changed (the next
 * release); then back to v0.1.0 by the documented downgrade. Nothing may fail at any step. A
 * connected UDP socket v0.1.0 translated keeps its reverse translation across the takeover (socket
 * storage keeps v0.1.0's layout) and is destroyed by this tree's agent when its backend leaves.
 */
import type { ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor, type SimPod } from '../harness';
import { BpfMap, possibleCpus } from '../../src/bpf';
import { perCpuU64Codec, u32Codec } from '../../src/bpf/layout';
import type { MapMigration } from '../../src/bpf/migrate';
import { pinnedMapSpec } from '../../src/bpf/map-spec';
import {
  answeredBy,
  lbList as listLb,
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
  type ProbeResult,
  attemptsOf,
  moreAttempts,
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
import { buildBpfVariant, EDIT, type BpfEdit } from './bpf-variant';
import { baseCommit, buildBaseRelease, type BaseRelease } from './upgrade-base';

const VIP = '10.96.0.10';
const STICKY = '10.96.0.12';
const STATUS = { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}' };
const AMBIENT = { 'istio.io/dataplane-mode': 'ambient' };

/**
 * The next release as far as its maps go: this tree with a counter more, a bigger sockhash and a
 * new map (changes the agent's own codecs do not see), so the upgrade path migrates for real.
 */
const NEXT_RELEASE: BpfEdit[] = [EDIT.counterMore, EDIT.biggerSockhash, EDIT.mapMore];
const base = baseCommit();
const root = process.getuid?.() === 0;

describe.skipIf(!root || 'skip' in base)('upgrade from v0.1.0 (needs root and git history)', () => {
  let env: MeshEnv;
  let old: BaseRelease;
  let meshed: SimPod;
  let ambient: SimPod;
  let sticky: string;
  /** whether this tree's maps are v0.1.0's (the first takeover reused every one) */
  let sameMapsAsBase: boolean;
  /** a client on one connected UDP socket to the VIP in the node's namespace, opened while v0.1.0 ran */
  let pinned: ChildProcess;

  /** The web Service on these backend pods (both at the start and after each step). */
  function writeWeb(pods: SimPod[]): void {
    writeObjects(env, 'web.yaml', [
      serviceYaml('web', {
        clusterIP: VIP,
        ports: [
          { name: 'http', port: 80, targetPort: TCP_PORT },
          { name: 'dns', port: 53, targetPort: UDP_PORT, protocol: 'UDP' },
        ],
      }),
      sliceYaml('web-1', {
        service: 'web',
        family: 4,
        endpoints: pods.map((p) => ({ ip: p.ipv4 })),
        ports: [
          { name: 'http', port: TCP_PORT },
          { name: 'dns', port: UDP_PORT, protocol: 'UDP' },
        ],
      }),
    ]);
  }

  /** Counter 0 (translated) straight from its pin: whichever release runs, whatever it is doing. */
  function translated(): bigint {
    const m = BpfMap.openPinned(path.join(env.node.pinDir, 'sl_lb_counters'), u32Codec, perCpuU64Codec(possibleCpus()));
    try {
      return m.get(0) ?? 0n;
    } finally {
      m.close();
    }
  }

  function mapIds(): Record<string, number | undefined> {
    const names = [
      'sl_lb_svc',
      'sl_lb_backend',
      'sl_lb_affinity',
      'sl_lb_sock_rev',
      'sl_lb_counters',
      'sl_endpoints',
      'sl_pod_ips',
      'sl_cap_sock',
      'sl_origdst',
      'sl_listeners',
      'sl_ep_stats',
      'sl_node_ips',
    ];
    // the maps pinned now (sl_origdst: v0.1.0's layout, kept by this tree for the switch either way)
    return Object.fromEntries(
      names.map((n) => [n, pinnedMapSpec(path.join(env.node.pinDir, n))?.id]).filter(([, id]) => id !== undefined),
    );
  }

  /** What `endpoint list -o json` says of each pod that both releases report (not counters, which traffic changes). */
  async function lbList(e: typeof env): Promise<unknown[]> {
    // fields both releases list (a newer one adds some, e.g. noLocalEndpoints)
    const keep = ['frontend', 'id', 'backends', 'scope', 'affinitySec'];
    return (await listLb(e)).map((x) => Object.fromEntries(keep.map((k) => [k, (x as unknown as Record<string, unknown>)[k]])));
  }

  async function endpoints(): Promise<unknown[]> {
    const eps = JSON.parse((await sluice(env, ['endpoint', 'list', '-o', 'json'])).stdout) as Array<Record<string, unknown>>;
    const keep = ['name', 'namespace', 'ips', 'mode', 'netnsCookie', 'netnsPath', 'containerId', 'ifName', 'uid'];
    return eps
      .map((e) => Object.fromEntries(keep.map((k) => [k, e[k]])))
      .sort((a, b) => String(a.name).localeCompare(String(b.name)));
  }

  interface Streams {
    tcp: Promise<ProbeResult[]>;
    udp: Promise<ProbeResult[]>;
    sticky: Promise<ProbeResult[]>;
    sidecarOut: Promise<ProbeResult[]>;
    sidecarIn: Promise<ProbeResult[]>;
    ambientOut: Promise<ProbeResult[]>;
  }

  /** Steady connections of every kind; resolves once they are under way. */
  async function startStreams(n: number): Promise<Streams> {
    const before = translated();
    const o = { intervalMs: 5, timeoutMs: 2000 };
    const s: Streams = {
      tcp: probe(env, VIP, 80, { count: n, ...o }),
      udp: probe(env, VIP, 53, { proto: 'udp', udpMode: 'unconnected', count: n, ...o }),
      sticky: probe(env, STICKY, 80, { count: n / 4, ...o, intervalMs: 20 }),
      sidecarOut: probe(env, VIP, 80, { from: meshed, count: n / 4, ...o, intervalMs: 20 }),
      sidecarIn: probe(env, meshed.ipv4, TCP_PORT, { count: n / 4, ...o, intervalMs: 20 }),
      ambientOut: probe(env, VIP, 80, { from: ambient, count: n / 4, ...o, intervalMs: 20 }),
    };
    await waitFor('connections flowing', () => translated() >= before + 20n);
    return s;
  }

  async function expectNothingFailed(s: Streams, n: number): Promise<void> {
    const [tcp, udp, st, scOut, scIn, ambOut] = await Promise.all([
      s.tcp,
      s.udp,
      s.sticky,
      s.sidecarOut,
      s.sidecarIn,
      s.ambientOut,
    ]);
    expect(tcp).toHaveLength(n);
    expect(tcp.filter((r) => !r.ok || r.peer !== `${VIP}:80`)).toEqual([]);
    expect(udp.filter((r) => !r.ok || r.peer !== `${VIP}:53`)).toEqual([]);
    // affinity kept across the switch: every connection on the backend it had
    expect(st.filter((r) => !r.ok || answeredBy(r) !== sticky)).toEqual([]);
    // every pod stayed captured: each connection went through its proxy
    const via = (r: ProbeResult) => sidecarReply(r.reply);
    expect(
      scOut.filter((r) => !r.ok || via(r)?.via !== 'out' || via(r)?.orig !== `${VIP}:80` || via(r)?.id !== `sc-${meshed.name}`),
    ).toEqual([]);
    expect(scIn.filter((r) => !r.ok || via(r)?.via !== 'in')).toEqual([]);
    expect(ambOut.filter((r) => !r.ok || via(r)?.via !== 'out' || via(r)?.id !== `zt-${ambient.name}`)).toEqual([]);
    for (const list of [st, scOut, scIn, ambOut]) expect(list).toHaveLength(n / 4);
  }

  beforeAll(async () => {
    if ('skip' in base) return;
    // the build takes minutes the first time (then it is cached under build/upgrade-base)
    old = await buildBaseRelease(base.commit, path.resolve(__dirname, '../../build/upgrade-base'));
    env = await createMeshEnv({ backends: 2, agentBin: old.sluice }); // its CLI reads its maps
    const [a, b] = env.backends;
    writeWeb([a, b]);
    writeObjects(env, 'svc.yaml', [
      serviceYaml('sticky', { clusterIP: STICKY, ports: [{ name: 'http', port: 80, targetPort: TCP_PORT }], affinitySec: 600 }),
      sliceYaml('sticky-1', {
        service: 'sticky',
        family: 4,
        endpoints: [{ ip: a.ipv4 }, { ip: b.ipv4 }],
        ports: [{ name: 'http', port: TCP_PORT }],
      }),
    ]);
    writeObjects(env, 'ns-shop.yaml', [namespaceYaml('shop', AMBIENT)]);
    await waitForBackends(env, `${STICKY}:80/TCP`, [`${a.ipv4}:${TCP_PORT}`, `${b.ipv4}:${TCP_PORT}`]);
    meshed = await addMeshPod(env, 'meshed', { annotations: STATUS });
    await startSidecar(env, meshed);
    await startApp(env, meshed, TCP_PORT);
    ambient = await addMeshPod(env, 'amb', { namespace: 'shop' });
    const proxy = env.node.spawn(
      [PROBE, 'sidecar', '--id', `zt-${ambient.name}`, '--mark', '0x539', '--extra-port', '15008', '--forward'],
      { netnsPath: ambient.netnsPath },
    );
    await env.node.waitForLine(proxy, 'ready');
    await waitForMode(env, meshed, 'sidecar');
    await waitForMode(env, ambient, 'ambient');
    sticky = answeredBy((await probe(env, STICKY, 80))[0])!;
  }, 900000);

  afterAll(async () => {
    if (!env) return;
    if (pinned && pinned.exitCode === null && pinned.signalCode === null) pinned.kill('SIGTERM');
    await stopAgent(env);
    await env.node.destroy();
  });

  it('the current agent takes over from v0.1.0 under traffic: nothing fails, pods stay captured, maps and listings unchanged', async () => {
    const lb = await lbList(env);
    const eps = await endpoints();
    expect(eps.map((e) => (e as { mode: string }).mode).sort()).toEqual(['ambient', 'sidecar']);
    const ids = mapIds();
    // the node's own namespace: sockets are destroyed there and in pods registered through CNI
    pinned = startSteadyClient(env, { proto: 'udp', addr: VIP, port: 53, from: 'node' });
    expect((await moreAttempts(env, pinned, 0, 3)).map((a) => [a.ok, a.conn, a.peer])).toEqual(
      Array(3).fill([true, 1, `${VIP}:53`]),
    );
    const s = await startStreams(400);
    await stopAgent(env);
    const agent = await startAgent(env);
    await expectNothingFailed(s, 400);

    expect(await lbList(env)).toEqual(lb);
    expect(await endpoints()).toEqual(eps);
    const st = JSON.parse((await sluice(env, ['status', '-o', 'json'])).stdout);
    expect(st.ready).toBe(true);
    const migration = st.datapath.migration as MapMigration[];
    // maps this tree added do not matter to v0.1.0, which never opens them
    sameMapsAsBase = migration.filter((m) => m.action !== 'created').every((m) => m.action === 'reused');
    expect(
      migration
        .filter((m) => m.action !== 'created')
        .map((m) => m.map)
        .sort(),
    ).toEqual(Object.keys(ids).sort());
    // each map either kept (the same kernel map) or migrated with every entry carried
    const now = mapIds();
    for (const m of migration) {
      if (m.action === 'reused') expect(now[m.map], m.map).toBe(ids[m.map]);
      else if (m.action === 'created') expect(ids[m.map], m.map).toBeUndefined();
      else if (m.action === 'removed')
        expect(now[m.map], m.map).toBeUndefined(); // a map this tree no longer has
      else {
        expect(m.action, m.map).toBe('migrated');
        expect(now[m.map], m.map).not.toBe(ids[m.map]);
        if (m.entries !== undefined) expect(m.copied, m.map).toBe(m.entries);
      }
    }
    const byMap = Object.fromEntries(migration.map((x) => [x.map, x]));
    // socket storage cannot be migrated: v0.1.0's layout is kept, the very map reused
    expect(byMap.sl_lb_sock_rev).toMatchObject({ action: 'reused' });
    expect(now.sl_lb_sock_rev).toBe(ids.sl_lb_sock_rev);
    // v0.1.0's original destinations: the very map, read by this tree's getsockopt as well
    expect(byMap.sl_origdst).toMatchObject({ action: 'reused' });
    // the new default sizes: the entries copied as they are
    for (const name of ['sl_lb_svc', 'sl_lb_backend'])
      expect(byMap[name], name).toMatchObject({ action: 'migrated', converter: 'verbatim' });
    expect(byMap.sl_lb_svc.copied).toBeGreaterThan(0);
    expect(byMap.sl_lb_counters).toMatchObject({ action: 'migrated', converter: 'verbatim' });
    for (const name of ['sl_lb_pod_opt_out', 'sl_lb_sock_dead']) expect(byMap[name], name).toMatchObject({ action: 'created' });
    expect(migration.filter((m) => m.action === 'rebuilt')).toEqual([]);
    // the socket v0.1.0 translated still shows the VIP as its peer, on its first connection
    const n = attemptsOf(env, pinned).length;
    expect((await moreAttempts(env, pinned, n, 3)).map((a) => [a.ok, a.conn, a.peer])).toEqual(
      Array(3).fill([true, 1, `${VIP}:53`]),
    );
    // bpf migrate never loads objects under a running agent
    const busy = await sluice(env, ['bpf', 'migrate'], true);
    expect(busy.code).toBe(1);
    expect(busy.stderr).toContain('stop it before "bpf migrate"');
    const log = env.node
      .output(agent)
      .stderr.split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
    const attached = log.find((r) => r.msg === 'datapath attached');
    expect(Object.values(attached.links).every((x) => x === 'updated')).toBe(true);
    expect(attached.netnsLinks).toBe(2);
  });

  it('a connected UDP socket v0.1.0 translated is destroyed by this agent when its backend leaves, and reconnects to a live one', async () => {
    const [a, b] = env.backends;
    const on = answeredBy(attemptsOf(env, pinned).at(-1)!);
    const [gone, live] = on === a.name ? [a, b] : [b, a];
    const from = attemptsOf(env, pinned).length;
    writeWeb([live]);
    await waitForBackends(env, `${VIP}:53/UDP`, [`${live.ipv4}:${UDP_PORT}`]);
    const moved = await waitFor(
      'the client on a second connection',
      () => {
        const later = attemptsOf(env, pinned).slice(from);
        return later.some((x) => x.ok && x.conn === 2) ? later : undefined;
      },
      10000,
    );
    // one attempt failed (its socket destroyed), every later one answered by the live backend
    const i = moved.findIndex((x) => !x.ok);
    expect(i, JSON.stringify(moved)).toBeGreaterThanOrEqual(0);
    expect(moved.slice(i + 1).map((x) => [x.ok, x.conn, answeredBy(x)])).toEqual(
      Array(moved.length - i - 1).fill([true, 2, live.name]),
    );
    expect(moved.slice(0, i).every((x) => x.conn === 1 && answeredBy(x) === gone.name)).toBe(true);
    expect(JSON.parse((await sluice(env, ['bpf', 'lb', 'counters', '-o', 'json'])).stdout).sock_destroyed).toBeGreaterThanOrEqual(
      1,
    );
    pinned.kill('SIGTERM');
    writeWeb([a, b]);
    await waitForBackends(env, `${VIP}:53/UDP`, [`${a.ipv4}:${UDP_PORT}`, `${b.ipv4}:${UDP_PORT}`]);
    await waitForBackends(env, `${VIP}:80/TCP`, [`${a.ipv4}:${TCP_PORT}`, `${b.ipv4}:${TCP_PORT}`]);
  });

  it('a plain rollback to v0.1.0 works while no map layout differs from its own, and is refused harmlessly once one does', async () => {
    const lb = await lbList(env);
    const eps = await endpoints();
    const ids = mapIds();
    const s = await startStreams(400);
    await stopAgent(env);
    if (sameMapsAsBase) {
      await startAgent(env, { bin: old.sluice });
    } else {
      // v0.1.0 has no migration: it exits before attaching anything, the datapath runs on
      const res = await env.node.exec([old.sluice, 'agent', '--config', env.configPath], {
        inCgroup: false,
        allowFail: true,
        timeoutMs: 20000,
      });
      expect(res.code).not.toBe(0);
      expect(res.stderr).toMatch(/does not match this configuration/);
    }
    await expectNothingFailed(s, 400);
    expect(mapIds()).toEqual(ids);
    expect(await lbList(env)).toEqual(lb);
    expect(await endpoints()).toEqual(eps);
    await stopAgent(env);
    await startAgent(env);
  });

  it('a next release whose maps changed (a counter more, a bigger sockhash, a map more) is migrated by the agent under traffic', async () => {
    const next = buildBpfVariant(env.node.workDir, 'next', NEXT_RELEASE);
    const lb = await lbList(env);
    const eps = await endpoints();
    const ids = mapIds();
    const s = await startStreams(400);
    await stopAgent(env);
    const agent = await startAgent(env, { env: { SLUICE_BPF_DIR: next } });
    await expectNothingFailed(s, 400);

    const st = JSON.parse((await sluice(env, ['status', '-o', 'json'])).stdout);
    const m = Object.fromEntries((st.datapath.migration as MapMigration[]).map((x) => [x.map, x]));
    expect(m.sl_lb_counters).toMatchObject({ action: 'migrated', converter: 'verbatim' });
    expect(m.sl_lb_counters.copied).toBe(m.sl_lb_counters.entries);
    // both proxies' listeners (sidecar: 15001, 15006; node proxy: 15001, 15006, 15008; v4 and v6)
    expect(m.sl_listeners).toMatchObject({ action: 'migrated', converter: 'sockets-by-cookie' });
    expect(m.sl_listeners.entries).toBeGreaterThanOrEqual(10);
    expect(m.sl_listeners.copied).toBe(m.sl_listeners.entries);
    expect(m.sl_variant_added).toMatchObject({ action: 'created' });
    const now = mapIds();
    for (const name of Object.keys(ids).filter((n) => n !== 'sl_lb_counters' && n !== 'sl_listeners')) {
      expect(m[name], name).toMatchObject({ action: 'reused' });
      expect(now[name], name).toBe(ids[name]);
    }
    expect(await lbList(env)).toEqual(lb);
    expect(await endpoints()).toEqual(eps);
    const log = env.node.output(agent).stderr;
    expect(log).toMatch(/"msg":"map migrated","map":"sl_listeners"/);
  });

  it('back to v0.1.0 (the documented downgrade: bpf migrate to its objects, then its agent) fails nothing either', async () => {
    const lb = await lbList(env);
    const eps = await endpoints();
    const ids = mapIds();
    const s = await startStreams(400);
    await stopAgent(env);
    // as it is, v0.1.0 refuses these pins and changes nothing
    const refused = await env.node.exec([old.sluice, 'agent', '--config', env.configPath], {
      inCgroup: false,
      allowFail: true,
      timeoutMs: 20000,
    });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/does not match this configuration/);
    expect(mapIds()).toEqual(ids);
    // bpf migrate sizes the maps as the config it reads says: v0.1.0's agent reads the same
    // config, and its defaults are smaller than this release's (deploy/README.md, Downgrade)
    writeConfig(env, {
      'cni-conf-dir': env.confDir,
      'cni-bin-dir': env.binDir,
      'state-dir': env.stateDir,
      'bpf-lb-service-map-max': '262144',
      'bpf-lb-backend-map-max': '65536',
    });
    const migrated = JSON.parse(
      (await sluice(env, ['bpf', 'migrate', '--object-dir', old.objectDir, '-o', 'json'])).stdout,
    ) as MapMigration[];
    const m = Object.fromEntries(migrated.map((x) => [x.map, x]));
    expect(m.sl_lb_counters.lost).toMatch(/[0-9]+ array slots past the new max_entries/);
    expect(m.sl_listeners).toMatchObject({ action: 'migrated', converter: 'sockets-by-cookie' });
    expect(m.sl_variant_added).toMatchObject({ action: 'removed' });
    // the map v0.1.0's getsockopt reads, which this tree's sockops kept filled: the very one
    expect(m.sl_origdst).toMatchObject({ action: 'reused' });
    await startAgent(env, { bin: old.sluice });
    await expectNothingFailed(s, 400);
    expect(await lbList(env)).toEqual(lb);
    expect(await endpoints()).toEqual(eps);
    expect((await sluice(env, ['status'])).code).toBe(0);
  });
});

if ('skip' in base) {
  console.warn(`[upgrade test] ${base.skip}`);
  describe('upgrade from v0.1.0', () => {
    it.skip(`skipped: ${base.skip}`, () => undefined);
  });
}
