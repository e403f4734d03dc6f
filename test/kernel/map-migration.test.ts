/* Map migration on the real datapath: this tree's objects rebuilt with changed layouts (a field
 * added, fields moved, a counter more, a bigger socket-storage value, a map more, a field
 * retyped), installed over the maps pinned by the running datapath while connections flow, and
 * back again (a downgrade). Checks what each map became, that no connection failed, and what
 * sockets that lived through the change still see.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, waitFor, type SimPod } from '../harness';
import { BpfMap, netnsCookieOf, pinnedLinkInfo, possibleCpus } from '../../src/bpf';
import { perCpuU64Codec, u32Codec } from '../../src/bpf/layout';
import { loadWithMigration, type MapMigration } from '../../src/bpf/migrate';
import { layoutId, pinnedMapSpec } from '../../src/bpf/map-spec';
import { MapMigrationError } from '../../src/bpf/migration-error';
import { socketFdsUnder } from '../../src/bpf/socket-owners';
import { installDatapath, OBJECTS, sockLinkPin, type DatapathOptions } from '../../src/datapath';
import { DATAPATH_MIGRATIONS } from '../../src/map-migrations';
import { parseConfig } from '../../src/config';
import { buildBpfVariant, EDIT, type BpfEdit } from './bpf-variant';
import { holdSocket, type HeldSocket } from './held-socket';
import {
  answeredBy,
  lbList,
  probe,
  serviceYaml,
  sliceYaml,
  sluice,
  startAgent,
  stopAgent,
  TCP_PORT,
  UDP_PORT,
  waitForBackends,
  writeObjects,
} from './lb-env';
import { addMeshPod, createMeshEnv, sidecarReply, startApp, startSidecar, type MeshEnv } from './mesh-env';

const VIP = '10.96.0.10';
const DEFAULTS = parseConfig({ 'cgroup-root': '/unused' });
const STICKY = '10.96.0.12';
const STATUS = { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}' };

/** A later release: every kind of change the migration carries without loss. */
const V2: BpfEdit[] = [
  {
    file: 'lib/shared.h',
    what: 'sl_svc_val gains a field',
    find: /(struct sl_svc_val \{[^}]*)\};/,
    replace: '$1\t__u32 weight;\n};',
  },
  {
    file: 'lib/shared.h',
    what: 'sl_affinity_val fields move, one more',
    find: /struct sl_affinity_val \{[^}]*\};/,
    replace: 'struct sl_affinity_val {\n\t__u32 backend_id;\n\t__u32 hits;\n\t__u64 last_ns;\n};',
  },
  EDIT.counterMore,
  EDIT.biggerSockhash,
  EDIT.mapMore,
];

/** Socket storage changes: nothing can carry it. */
const V3: BpfEdit[] = [
  {
    file: 'lib/shared.h',
    what: 'more reverse slots per socket',
    find: /#define SL_SOCK_REV_SLOTS \d+/,
    replace: '#define SL_SOCK_REV_SLOTS 16',
  },
  {
    file: 'lib/shared.h',
    what: 'sl_orig_dst padding becomes a field',
    find: /(struct sl_orig_dst \{[^}]*)__u8 pad;/,
    replace: '$1__u8 flags;',
  },
];

/** A retyped field in a map that may start empty, which the agent refills. */
const V5: BpfEdit[] = [
  { file: 'lib/shared.h', what: 'sl_ep_stats.outbound becomes signed', find: /__u64 outbound;/, replace: '__s64 outbound;' },
];

/** A re-keyed sockhash (its size changes too: the kernel keeps no BTF for it). */
const V6: BpfEdit[] = [
  {
    file: 'lib/shared.h',
    what: 'sl_listener_key.family becomes signed, a field more',
    find: /(struct sl_listener_key \{[^}]*)__u8 family;([^}]*)\};/,
    replace: '$1__s8 family;$2\t__u32 zone;\n};',
  },
];

/** A retyped field: no field-by-field conversion, and sl_lb_svc may not start empty. */
const V4: BpfEdit[] = [
  { file: 'lib/shared.h', what: 'sl_svc_val.count becomes signed', find: /__u16 count;/, replace: '__s16 count;' },
];

describe.skipIf(process.getuid?.() !== 0)('map migration between releases (needs root)', () => {
  let env: MeshEnv;
  let meshed: SimPod;
  let sticky: string;
  let v2: string;
  let v3: string;
  let v4: string;
  let v6: string;
  let v5: string;
  /** `lb list` before the first migration: what every later step must still show */
  let listed: Awaited<ReturnType<typeof lbList>>;

  function options(objectDir?: string, registry = DATAPATH_MIGRATIONS): DatapathOptions {
    return {
      pinDir: env.node.pinDir,
      cgroupRoot: env.node.cgroupPath,
      hostnsOnly: false,
      hostNetnsCookie: netnsCookieOf(env.node.netnsPath),
      proxyUid: 1337,
      proxyGid: 1337,
      dnsServers: [],
      proxyMark: { mark: 0x539, mask: 0xfff },
      // the sizes the agent runs with (its config defaults), so that only layouts differ
      sizes: { service: DEFAULTS.lbServiceMapMax, backend: DEFAULTS.lbBackendMapMax, affinity: DEFAULTS.lbAffinityMapMax },
      objectDir,
      registry,
    };
  }

  function byMap(report: MapMigration[]): Record<string, MapMigration> {
    return Object.fromEntries(report.map((m) => [m.map, m]));
  }

  function pins(): string[] {
    return fs
      .readdirSync(env.node.pinDir)
      .filter((n) => n.startsWith('sl_'))
      .sort();
  }

  function mapIds(): Record<string, number | undefined> {
    return Object.fromEntries(pins().map((n) => [n, pinnedMapSpec(path.join(env.node.pinDir, n))?.id]));
  }

  function linkPrograms(): Record<string, number | undefined> {
    const out: Record<string, number | undefined> = {};
    for (const progs of Object.values(OBJECTS))
      for (const p of progs) out[p] = pinnedLinkInfo(sockLinkPin(env.node.pinDir, p))?.progId;
    return out;
  }

  /** Counter 0 (translated), read from the pin whatever the layout of the other maps. */
  function translatedCount(): bigint {
    const m = BpfMap.openPinned(path.join(env.node.pinDir, 'sl_lb_counters'), u32Codec, perCpuU64Codec(possibleCpus()));
    try {
      return m.get(0) ?? 0n;
    } finally {
      m.close();
    }
  }

  /** sl_lb_svc as bpftool prints it with the map's own BTF: key → value fields. */
  async function svcDump(): Promise<Map<string, Record<string, unknown>>> {
    const out = JSON.parse(
      (await run(['bpftool', '-j', 'map', 'dump', 'pinned', path.join(env.node.pinDir, 'sl_lb_svc')])).stdout,
    ) as Array<{
      formatted: { key: unknown; value: Record<string, unknown> };
    }>;
    return new Map(out.map((e) => [JSON.stringify(e.formatted.key), e.formatted.value]));
  }

  /** Streams of TCP, UDP and affinity connections; resolves once they are under way. */
  async function streams(count: number) {
    const before = translatedCount();
    const s = {
      tcp: probe(env, VIP, 80, { count, intervalMs: 5, timeoutMs: 2000 }),
      udp: probe(env, VIP, 53, { proto: 'udp', udpMode: 'unconnected', count, intervalMs: 5, timeoutMs: 2000 }),
      sticky: probe(env, STICKY, 80, { count: Math.ceil(count / 3), intervalMs: 15, timeoutMs: 2000 }),
    };
    await waitFor('connections flowing', () => translatedCount() >= before + 20n);
    return s;
  }

  async function expectStreamsClean(s: Awaited<ReturnType<typeof streams>>, count: number): Promise<void> {
    const [tcp, udp, st] = await Promise.all([s.tcp, s.udp, s.sticky]);
    expect(tcp).toHaveLength(count);
    expect(tcp.filter((r) => !r.ok || r.peer !== `${VIP}:80`)).toEqual([]);
    expect(udp.filter((r) => !r.ok || r.peer !== `${VIP}:53`)).toEqual([]);
    expect(st.filter((r) => !r.ok || answeredBy(r) !== sticky)).toEqual([]);
  }

  async function holdAll(): Promise<{ tcp: HeldSocket; udp: HeldSocket; captured: HeldSocket }> {
    const held = {
      tcp: await holdSocket(env, env.client, 'tcp', VIP, 80),
      udp: await holdSocket(env, env.client, 'udp', VIP, 53),
      captured: await holdSocket(env, meshed, 'tcp', VIP, 80),
    };
    expect(held.tcp.first.peer).toBe(`${VIP}:80`);
    expect(held.udp.first.peer).toBe(`${VIP}:53`);
    expect(held.captured.first.peer).toBe(`${VIP}:80`);
    expect(held.captured.first.reply).toMatch(/^sidecar /);
    return held;
  }

  beforeAll(async () => {
    env = await createMeshEnv({ backends: 2 });
    const [a, b] = env.backends;
    writeObjects(env, 'svc.yaml', [
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
        endpoints: [{ ip: a.ipv4 }, { ip: b.ipv4 }],
        ports: [
          { name: 'http', port: TCP_PORT },
          { name: 'dns', port: UDP_PORT, protocol: 'UDP' },
        ],
      }),
      serviceYaml('sticky', { clusterIP: STICKY, ports: [{ name: 'http', port: 80, targetPort: TCP_PORT }], affinitySec: 600 }),
      sliceYaml('sticky-1', {
        service: 'sticky',
        family: 4,
        endpoints: [{ ip: a.ipv4 }, { ip: b.ipv4 }],
        ports: [{ name: 'http', port: TCP_PORT }],
      }),
    ]);
    await waitForBackends(env, `${STICKY}:80/TCP`, [`${a.ipv4}:${TCP_PORT}`, `${b.ipv4}:${TCP_PORT}`]);
    meshed = await addMeshPod(env, 'meshed', { annotations: STATUS });
    await startSidecar(env, meshed);
    await startApp(env, meshed, TCP_PORT);
    const first = await probe(env, STICKY, 80, { count: 1 });
    sticky = answeredBy(first[0])!;
    v2 = buildBpfVariant(env.node.workDir, 'v2', V2);
    v3 = buildBpfVariant(env.node.workDir, 'v3', V3);
    v4 = buildBpfVariant(env.node.workDir, 'v4', V4);
    v6 = buildBpfVariant(env.node.workDir, 'v6', V6);
    v5 = buildBpfVariant(env.node.workDir, 'v5', V5);
  });

  afterAll(async () => {
    await stopAgent(env);
    await env?.node.destroy();
  });

  it('a restart with unchanged objects reuses every pinned map as it is', async () => {
    const ids = mapIds();
    await stopAgent(env);
    await startAgent(env);
    const st = JSON.parse((await sluice(env, ['status', '-o', 'json'])).stdout);
    const migration = st.datapath.migration as MapMigration[];
    expect(migration.map((m) => m.map).sort()).toEqual(pins());
    expect(migration.filter((m) => m.action !== 'reused')).toEqual([]);
    expect(mapIds()).toEqual(ids);
  });

  it('changed layouts are migrated under traffic: entries converted, live sockets keep their translation, nothing fails', async () => {
    await stopAgent(env);
    listed = await lbList(env);
    const services = await svcDump();
    const ids = mapIds();
    const held = await holdAll();
    const s = await streams(300);
    const { migration } = installDatapath(options(v2));
    await expectStreamsClean(s, 300);

    const m = byMap(migration);
    expect(m.sl_lb_svc).toMatchObject({ action: 'migrated', converter: 'by-field', added: ['weight'] });
    expect(m.sl_lb_svc.copied).toBe(m.sl_lb_svc.entries);
    expect(m.sl_lb_svc.entries).toBeGreaterThanOrEqual(9); // 3 frontends, 2 slots each
    expect(m.sl_lb_affinity).toMatchObject({ action: 'migrated', converter: 'by-field', added: ['hits'] });
    expect(m.sl_lb_affinity.copied).toBeGreaterThanOrEqual(1);
    expect(m.sl_lb_counters).toMatchObject({ action: 'migrated', converter: 'verbatim' });
    expect(m.sl_lb_counters.reason).toMatch(/max entries \d+ → \d+/);
    // the sidecar's listeners on 15001 and 15006, IPv4 and IPv6, found again by cookie
    expect(m.sl_listeners).toMatchObject({ action: 'migrated', converter: 'sockets-by-cookie' });
    expect(m.sl_listeners.entries).toBeGreaterThanOrEqual(4);
    expect(m.sl_listeners.copied).toBe(m.sl_listeners.entries);
    expect(m.sl_variant_added).toMatchObject({ action: 'created' });
    // socket storage whose layout is unchanged is kept: live sockets keep their state
    for (const name of [
      'sl_lb_sock_rev',
      'sl_cap_sock',
      'sl_lb_backend',
      'sl_endpoints',
      'sl_pod_ips',
      'sl_origdst_syn',
      'sl_ep_stats',
      'sl_node_ips',
    ]) {
      expect(m[name], name).toMatchObject({ action: 'reused' });
      expect(mapIds()[name], name).toBe(ids[name]);
    }
    expect(mapIds().sl_lb_svc).not.toBe(ids.sl_lb_svc);
    expect(pinnedMapSpec(path.join(env.node.pinDir, 'sl_lb_svc'))?.valueSize).toBe(16);
    expect(fs.readdirSync(env.node.pinDir).filter((n) => n.endsWith(':pending'))).toEqual([]);

    // sockets that lived through it still see the VIP; the captured one still its destination
    expect((await held.tcp.ask()).peer).toBe(`${VIP}:80`);
    expect(await held.udp.ask()).toMatchObject({ ok: true, peer: `${VIP}:53`, from: `${VIP}:53` });
    expect((await held.captured.ask()).peer).toBe(`${VIP}:80`);
    // every entry carried field by field: same values, the new field zero
    const converted = await svcDump();
    expect([...converted.keys()].sort()).toEqual([...services.keys()].sort());
    for (const [k, v] of services) expect(converted.get(k), k).toEqual({ ...v, weight: 0 });
    const after = await probe(env, STICKY, 80, { count: 5 });
    expect(after.every((r) => r.ok && answeredBy(r) === sticky)).toBe(true);
    // inbound capture finds the sidecar's listener in the new sockhash
    const inbound = await probe(env, meshed.ipv4, 8080, { count: 3 });
    expect(
      inbound.map((r) => sidecarReply(r.reply)?.via),
      JSON.stringify(inbound),
    ).toEqual(['in', 'in', 'in']);
    for (const h of Object.values(held)) h.close();
  });

  it('migrating back (a downgrade) converts by field again; the agent starts on it with the same services', async () => {
    const held = await holdAll();
    const s = await streams(200);
    const { migration } = installDatapath(options());
    await expectStreamsClean(s, 200);
    const m = byMap(migration);
    expect(m.sl_lb_svc).toMatchObject({ action: 'migrated', converter: 'by-field', dropped: ['weight'] });
    expect(m.sl_lb_affinity).toMatchObject({ action: 'migrated', converter: 'by-field', dropped: ['hits'] });
    expect(m.sl_listeners).toMatchObject({ action: 'migrated', converter: 'sockets-by-cookie' });
    expect(m.sl_listeners.copied).toBe(m.sl_listeners.entries);
    expect(m.sl_lb_counters.lost).toMatch(/1 array slots past the new max_entries/);
    expect(m.sl_variant_added).toMatchObject({ action: 'removed' });
    expect(pins()).not.toContain('sl_variant_added');
    expect((await held.tcp.ask()).peer).toBe(`${VIP}:80`);
    expect((await held.udp.ask()).from).toBe(`${VIP}:53`);
    expect((await held.captured.ask()).peer).toBe(`${VIP}:80`);
    for (const h of Object.values(held)) h.close();

    await startAgent(env);
    expect(await lbList(env)).toEqual(listed);
    const st = JSON.parse((await sluice(env, ['status', '-o', 'json'])).stdout);
    expect((st.datapath.migration as MapMigration[]).filter((x) => x.action !== 'reused')).toEqual([]);
    const ep = (await sluice(env, ['endpoint', 'list'])).stdout;
    expect(ep).toMatch(/default\/meshed\s+mode=sidecar/);
  });

  it('socket storage whose fields move starts empty: live sockets lose their reverse translation, new ones are unaffected', async () => {
    await stopAgent(env);
    const held = await holdAll();
    const { migration } = installDatapath(options(v3));
    const m = byMap(migration);
    expect(m.sl_lb_sock_rev).toMatchObject({ action: 'rebuilt' });
    expect(m.sl_lb_sock_rev.lost).toMatch(/getpeername/);
    expect(m.sl_cap_sock).toMatchObject({ action: 'rebuilt' });
    expect(m.sl_origdst_syn).toMatchObject({ action: 'migrated', converter: 'by-field', added: ['flags'] });
    const backends = env.backends.map((p) => p.ipv4);
    // what the policy says they lose: the backend shows through
    const tcp = await held.tcp.ask();
    expect(backends.map((ip) => `${ip}:${TCP_PORT}`)).toContain(tcp.peer);
    const udp = await held.udp.ask();
    expect(udp.ok).toBe(true);
    expect(backends.map((ip) => `${ip}:${UDP_PORT}`)).toContain(udp.from);
    expect((await held.captured.ask()).peer).toBe('127.0.0.1:15001');
    // new sockets are translated both ways as before
    const fresh = await probe(env, VIP, 80, { count: 10 });
    expect(fresh.every((r) => r.ok && r.peer === `${VIP}:80`)).toBe(true);
    const freshUdp = await probe(env, VIP, 53, { proto: 'udp', count: 5 });
    expect(freshUdp.every((r) => r.ok && r.peer === `${VIP}:53`)).toBe(true);
    for (const h of Object.values(held)) h.close();

    const back = byMap(installDatapath(options()).migration);
    expect(back.sl_lb_sock_rev.action).toBe('rebuilt');
    await startAgent(env);
  });

  it('a map that starts empty is refilled by the agent: per-pod counters recreated, and counting again', async () => {
    for (const objects of [v5, undefined]) {
      await stopAgent(env);
      const agent = await startAgent(env, objects ? { env: { SLUICE_BPF_DIR: objects } } : {});
      const st = JSON.parse((await sluice(env, ['status', '-o', 'json'])).stdout);
      const m = byMap(st.datapath.migration);
      expect(m.sl_ep_stats).toMatchObject({ action: 'rebuilt' });
      expect(m.sl_ep_stats.lost).toMatch(
        /field outbound: signedness changed; starts empty: per-pod capture counters restart at zero/,
      );
      const log = env.node
        .output(agent)
        .stderr.split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l));
      expect(log.find((r) => r.msg === 'map rebuilt' && r.map === 'sl_ep_stats')).toBeDefined();
      expect(log.find((r) => r.msg === 'per-pod counters recreated')?.pods).toBe(1);
      const inbound = await probe(env, meshed.ipv4, TCP_PORT, { count: 3 });
      expect(
        inbound.map((r) => sidecarReply(r.reply)?.via),
        JSON.stringify(inbound),
      ).toEqual(['in', 'in', 'in']);
      const out = await probe(env, VIP, 80, { from: meshed, count: 2 });
      expect(out.every((r) => r.ok && sidecarReply(r.reply)?.via === 'out')).toBe(true);
      const ep = JSON.parse((await sluice(env, ['endpoint', 'list', '-o', 'json'])).stdout).find(
        (e: { name: string }) => e.name === 'meshed',
      );
      expect(ep.counters).toMatchObject({ outbound: 2, inbound: 3 });
    }
  });

  it('a change no converter covers is refused for a map that may not start empty; the running datapath is untouched', async () => {
    await stopAgent(env);
    const ids = mapIds();
    const progs = linkPrograms();
    let err: unknown;
    try {
      installDatapath(options(v4));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MapMigrationError);
    expect(err).toMatchObject({ kind: 'unconvertible', map: 'sl_lb_svc' });
    const oldId = layoutId(pinnedMapSpec(path.join(env.node.pinDir, 'sl_lb_svc'))!);
    expect((err as Error).message).toContain(oldId);
    expect((err as Error).message).toMatch(/field count: signedness changed/);
    expect((err as Error).message.match(/map sl_lb_svc/g)).toHaveLength(1); // context said once
    expect(mapIds()).toEqual(ids);
    expect(linkPrograms()).toEqual(progs);
    expect(fs.readdirSync(env.node.pinDir).filter((n) => n.endsWith(':pending'))).toEqual([]);
    const res = await probe(env, VIP, 80, { count: 5 });
    expect(res.every((r) => r.ok)).toBe(true);
    // a re-keyed sockhash may not start empty either: the proxies' listeners would be missing
    expect(() => installDatapath(options(v6))).toThrow(expect.objectContaining({ kind: 'unconvertible', map: 'sl_listeners' }));
    expect(mapIds()).toEqual(ids);
    expect(linkPrograms()).toEqual(progs);
  });

  it('a registered converter carries a change field by field cannot, both ways (a retyped sl_lb_svc field)', async () => {
    const before = pinnedMapSpec(path.join(env.node.pinDir, 'sl_lb_svc'))!;
    // the layout ids the refusal named; a u16 count that small reads the same as an s16
    const probeErr = (() => {
      try {
        installDatapath(options(v4));
      } catch (e) {
        return e as Error;
      }
      throw new Error('v4 was not refused');
    })();
    const [from, to] = /sl_lb_svc ([0-9a-f]{12}) → ([0-9a-f]{12})/.exec(probeErr.message)!.slice(1);
    expect(from).toBe(layoutId(before));
    const same = (key: Buffer, value: Buffer) => ({ key: Buffer.from(key), value: Buffer.from(value) });
    const registry = {
      ...DATAPATH_MIGRATIONS,
      converters: [
        { map: 'sl_lb_svc', from, to, name: 'count-signed', convert: same },
        { map: 'sl_lb_svc', from: to, to: from, name: 'count-unsigned', convert: same },
      ],
    };
    const listed = await lbList(env);
    const s = await streams(150);
    const up = byMap(installDatapath(options(v4, registry)).migration);
    await expectStreamsClean(s, 150);
    expect(up.sl_lb_svc).toMatchObject({ action: 'migrated', converter: 'registered:count-signed' });
    const down = byMap(installDatapath(options(undefined, registry)).migration);
    expect(down.sl_lb_svc).toMatchObject({ action: 'migrated', converter: 'registered:count-unsigned' });
    expect(layoutId(pinnedMapSpec(path.join(env.node.pinDir, 'sl_lb_svc'))!)).toBe(from);

    await startAgent(env);
    expect(await lbList(env)).toEqual(listed);
  });

  it('a failure while attaching puts the previous programs back and pins nothing new', async () => {
    await stopAgent(env);
    const ids = mapIds();
    const progs = linkPrograms();
    const s = await streams(150);
    expect(() =>
      loadWithMigration({
        pinDir: env.node.pinDir,
        objects: Object.keys(OBJECTS).map((f) => path.join(v2, f)),
        configure: () => undefined, // the objects' defaults are the config's defaults
        attach: (loaded, tx) => {
          const obj = loaded.get(path.join(v2, 'sock_lb.o'))!;
          for (const prog of OBJECTS['sock_lb.o'])
            tx.attachCgroup(obj, prog, env.node.cgroupPath, sockLinkPin(env.node.pinDir, prog));
          throw new Error('injected attach failure');
        },
        ownsPin: (n) => n.startsWith('sl_'),
        registry: DATAPATH_MIGRATIONS,
        socketOwners: () => socketFdsUnder(env.node.cgroupPath),
      }),
    ).toThrow('injected attach failure');
    await expectStreamsClean(s, 150);
    expect(linkPrograms()).toEqual(progs);
    expect(mapIds()).toEqual(ids);
    expect(pins()).not.toContain('sl_variant_added');
    await startAgent(env);
    const res = await probe(env, VIP, 80, { count: 5 });
    expect(res.every((r) => r.ok && r.peer === `${VIP}:80`)).toBe(true);
  });
});
