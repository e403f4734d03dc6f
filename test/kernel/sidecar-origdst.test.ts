/* Original destinations of captured connections live exactly as long as the connection: more
 * concurrent captured connections on the node than the node-wide LRU of earlier versions held
 * (65,536), each asked for its original destination by its proxy when accepted and again while
 * all of them are open. Both ends are test/tools/origdst-load.c, an app and a stand-in proxy in
 * each of PODS sidecar-captured pods (a process may hold 20,000 descriptors here), in the test
 * cgroup. Also: the handshake table empties itself, and a full one refuses connects at once.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, type SimPod } from '../harness';
import { pinnedMapSpec } from '../../src/bpf/map-spec';
import { PROBE, ROOT, sluice, startAgent, stopAgent } from './lb-env';
import { addMeshPod, createMeshEnv, type MeshEnv } from './mesh-env';

const LOAD = path.join(ROOT, 'build/origdst-load');
const STATUS = { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}' };
/** 65,536 entries was the old map: PODS × 2 × PER_FAMILY = 70,000, half of them IPv6. */
const PODS = 4;
const PER_FAMILY = 8750;
const TOTAL = PODS * 2 * PER_FAMILY;
/** bpf/lib/capture_maps.h: SL_HANDSHAKES_ADMIT */
const HANDSHAKES_ADMIT = 262144 - 4096;

/** Kernel slab memory (kB), machine-wide: other work on the machine shows in it too. */
function slabKb(): number {
  const m = /^Slab:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) : NaN;
}

interface Counters {
  capture_handshakes: number;
  capture_full: number;
}

describe.skipIf(process.getuid?.() !== 0)('original destinations live as long as their connection (needs root)', () => {
  let env: MeshEnv;
  const pods: SimPod[] = [];
  let pod: SimPod;
  let statPin: string;

  async function counters(): Promise<Counters> {
    return JSON.parse((await sluice(env, ['bpf', 'lb', 'counters', '-o', 'json'])).stdout) as Counters;
  }

  /** Entries of the handshake table, as bpftool dumps them. */
  async function handshakeEntries(): Promise<unknown[]> {
    const res = await run(['bpftool', '-j', 'map', 'dump', 'pinned', path.join(env.node.pinDir, 'sl_origdst_syn')]);
    return JSON.parse(res.stdout) as unknown[];
  }

  /** Sets sl_origdst_stat's in_flight (u64 little-endian), keeping refused. */
  async function setInFlight(n: number): Promise<void> {
    const { capture_full } = await counters();
    const bytes = (v: number) => [...Buffer.from(new BigUint64Array([BigInt(v)]).buffer)].map((b) => String(b));
    await run([
      'bpftool',
      'map',
      'update',
      'pinned',
      statPin,
      'key',
      '0',
      '0',
      '0',
      '0',
      'value',
      ...bytes(n),
      ...bytes(capture_full),
    ]);
  }

  beforeAll(async () => {
    env = await createMeshEnv({ backends: 0 });
    statPin = path.join(env.node.pinDir, 'sl_origdst_stat');
    for (let i = 0; i < PODS; i++) pods.push(await addMeshPod(env, `loaded${i}`, { annotations: STATUS }));
    pod = pods[0];
  });

  afterAll(async () => {
    if (env) await stopAgent(env);
    await env?.node.destroy();
  });

  it(`${TOTAL} concurrent captured connections on the node: every proxy socket reads its own original destination, at accept and with all open`, async () => {
    const proxies = pods.map((p) =>
      env.node.spawn([LOAD, 'proxy', '--count', String(2 * PER_FAMILY), '--wait-stdin', '--timeout-s', '240'], {
        netnsPath: p.netnsPath,
      }),
    );
    for (const proxy of proxies) await env.node.waitForLine(proxy, 'ready');
    const slabBefore = slabKb();
    const started = Date.now();
    const clients = pods.map((p, i) =>
      env.node.spawn(
        [
          LOAD,
          'client',
          '--count-v4',
          String(PER_FAMILY),
          '--count-v6',
          String(PER_FAMILY),
          '--first-index',
          String(i * PER_FAMILY),
          '--timeout-s',
          '240',
        ],
        {
          netnsPath: p.netnsPath,
        },
      ),
    );
    const line = async (child: (typeof clients)[number], pattern: string) =>
      JSON.parse(await env.node.waitForLine(child, pattern, 240000));
    const opened = await Promise.all(clients.map((c) => line(c, '"event":"open"')));
    const accepted = await Promise.all(proxies.map((c) => line(c, '"event":"accepted"')));
    const allOpen = Date.now() - started;
    const slabAllOpen = slabKb();
    const handshakeMap = JSON.parse(
      (await run(['bpftool', '-j', 'map', 'show', 'pinned', path.join(env.node.pinDir, 'sl_origdst_syn')])).stdout,
    ) as { bytes_memlock?: number };
    // every pod's connections are open now: the proxies check, with all of them open
    for (const proxy of proxies) proxy.stdin!.end('check\n');
    const checked = await Promise.all(proxies.map((c) => line(c, '"event":"checked"')));
    const done = await Promise.all(clients.map((c) => line(c, '"event":"done"')));
    const elapsed = Date.now() - started;
    const report = {
      connections: TOTAL,
      pods: PODS,
      allOpenMs: allOpen,
      elapsedMs: elapsed,
      slabKb: {
        before: slabBefore,
        allOpen: slabAllOpen,
        perConnectionBytes: Math.round(((slabAllOpen - slabBefore) * 1024) / TOTAL),
      },
      handshakeMapMemlockBytes: handshakeMap.bytes_memlock,
      opened,
      accepted,
      checked,
      done,
    };
    console.log(`origdst load: ${JSON.stringify(report)}`);
    fs.mkdirSync(path.join(ROOT, 'build/bench'), { recursive: true });
    fs.writeFileSync(path.join(ROOT, 'build/bench/origdst-load.json'), JSON.stringify(report, null, 2) + '\n');
    const perPod = 2 * PER_FAMILY;
    expect(opened.map((o) => [o.open, o.failed])).toEqual(pods.map(() => [perPod, 0]));
    expect(
      checked.map((c) => ({
        accepted: c.accepted,
        extra: c.extra,
        ok_at_accept: c.ok_at_accept,
        ok_all_open: c.ok_all_open,
        duplicates: c.duplicates,
        bad: c.bad,
      })),
    ).toEqual(
      pods.map(() => ({ accepted: perPod, extra: 0, ok_at_accept: perPod, ok_all_open: perPod, duplicates: 0, bad: [] })),
    );
    expect(done.map((d) => ({ opened: d.opened, peer_mismatch: d.peer_mismatch, closed_by_proxy: d.closed_by_proxy }))).toEqual(
      pods.map(() => ({ opened: perPod, peer_mismatch: 0, closed_by_proxy: perPod })),
    );
    // every handshake moved into its accepted socket: nothing is left in flight
    expect((await counters()).capture_handshakes).toBe(0);
    expect(await handshakeEntries()).toEqual([]);
  }, 360000);

  it('a captured connect nobody accepts leaves no entry behind', async () => {
    // no proxy listens on 15001 now: the captured connect is refused by the kernel
    const res = await env.node.exec(
      [PROBE, 'connect', '--proto', 'tcp', '--addr', '198.18.0.1', '--port', '80', '--count', '3'],
      { netnsPath: pod.netnsPath, allowFail: true },
    );
    const attempts = res.stdout
      .split('\n')
      .filter((l) => l.startsWith('{"ok"'))
      .map((l) => JSON.parse(l));
    expect(attempts.map((a) => [a.ok, a.errno])).toEqual([
      [false, 111],
      [false, 111],
      [false, 111],
    ]);
    expect((await counters()).capture_handshakes).toBe(0);
    expect(await handshakeEntries()).toEqual([]);
  });

  it('when the handshakes in flight reach the limit, a captured connect is refused at once with EAGAIN and counted', async () => {
    const before = await counters();
    await setInFlight(HANDSHAKES_ADMIT);
    try {
      const res = await env.node.exec([PROBE, 'connect', '--proto', 'tcp', '--addr', '198.18.0.1', '--port', '80'], {
        netnsPath: pod.netnsPath,
        allowFail: true,
      });
      expect(JSON.parse(res.stdout.split('\n')[0])).toMatchObject({ ok: false, errno: 11, stage: 'connect' });
    } finally {
      await setInFlight(before.capture_handshakes);
    }
    const after = await counters();
    expect(after.capture_full - before.capture_full).toBe(1);
    // one below the limit: admitted again (and refused by the kernel: nothing listens)
    const res = await env.node.exec([PROBE, 'connect', '--proto', 'tcp', '--addr', '198.18.0.1', '--port', '80'], {
      netnsPath: pod.netnsPath,
      allowFail: true,
    });
    expect(JSON.parse(res.stdout.split('\n')[0])).toMatchObject({ ok: false, errno: 111 });
  });

  it("an agent started over v0.1.0's node-wide LRU keeps it, entries and all: what v0.1.0's programs recorded stays readable", async () => {
    const pin = path.join(env.node.pinDir, 'sl_origdst');
    await stopAgent(env);
    // what v0.1.0 pinned there (LRU_HASH, {netns, address, port} -> destination), with one entry
    fs.rmSync(pin);
    await run([
      'bpftool',
      'map',
      'create',
      pin,
      'type',
      'lru_hash',
      'key',
      '32',
      'value',
      '20',
      'entries',
      '65536',
      'name',
      'sl_origdst',
    ]);
    await run(['bpftool', 'map', 'update', 'pinned', pin, 'key', ...Array(32).fill('1'), 'value', ...Array(20).fill('2')]);
    const before = pinnedMapSpec(pin)!.id;
    await startAgent(env);
    expect(pinnedMapSpec(pin)?.id).toBe(before);
    const dump = JSON.parse((await run(['bpftool', '-j', 'map', 'dump', 'pinned', pin])).stdout) as unknown[];
    expect(dump).toHaveLength(1);
  });
});
