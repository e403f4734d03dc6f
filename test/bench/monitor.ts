/* What datapath events cost: TCP connect latency through socket-LB to a VIP, side by side in one
 * run (`node_modules/.bin/tsx test/bench/monitor.ts [--quick]` after `make all`; needs root).
 *
 * The claim measured: with no monitor attached, the programs that can emit events connect as fast
 * as programs built without them (ratio <= 1.02); with a monitor attached the cost is shown.
 * Three simulated nodes (createLbEnv: a client pod, two backend pods), each with its own agent,
 * cgroup and pin dir, the same Service (one VIP, two backends):
 *  - noev: the agent runs the objects built with -DSL_NO_EVENTS (build/bpf-noev): the baseline;
 *  - closed: the normal objects, the gate closed (no monitor: what every node pays);
 *  - reader: the normal objects, the gate open and a reader in this process consuming every event
 *    (PinnedEventFeed, as `sluice monitor` would);
 *  - before (only with --before DIR): as reader, but the agent runs the objects of DIR, e.g. an
 *    earlier build's build/bpf copied aside, to compare a change to the emitters in one run.
 * Rounds interleave the variants (noev, closed, reader, then reader, closed, noev, ...); each runs
 * `sl-probe bench` (socket + blocking connect, concurrency 1) from the node's client pod. Reported:
 * per variant the median over rounds of the connect median and p99, and per pair the median over
 * rounds of the paired ratio to noev.
 *
 * Options: --quick (2,000 connections, 5 rounds), --rounds N, --count N, --warmup N, --out DIR
 * (default build/bench), --before DIR (adds the variant before). Output: a Markdown table on stdout and in DIR/monitor.md, the raw figures
 * in DIR/monitor.json. Exit 1 when a connect failed or the reader saw no events.
 *
 * Safety: every program is attached to a node's own test cgroup and pod namespaces; the nodes are
 * destroyed in `finally` (and by the harness's exit handlers).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PinnedEventFeed } from '../../src/bpf/event-feed';
import { closePoller } from '../../src/native';
import {
  createLbEnv,
  PROBE,
  ROOT,
  serviceYaml,
  sliceYaml,
  sluice,
  startAgent,
  stopAgent,
  TCP_PORT,
  waitForBackends,
  writeObjects,
  type LbEnv,
} from '../kernel/lb-env';
import { intArg, LATENCY_OPTIONS, parseOptions } from './args';

const VIP = '10.96.9.10';
const ALL_VARIANTS = ['noev', 'closed', 'reader', 'before'] as const;
type Variant = (typeof ALL_VARIANTS)[number];
const LABEL: Record<Variant, string> = {
  noev: 'built without events (-DSL_NO_EVENTS)',
  closed: 'events built in, gate closed (no monitor)',
  reader: 'events built in, monitor attached (gate open, events read)',
  before: 'monitor attached, objects of --before',
};

interface Opts {
  quick: boolean;
  rounds: number;
  count: number;
  warmup: number;
  out: string;
  before?: string;
}

function parseOpts(argv: string[]): Opts {
  const v = parseOptions(argv, { ...LATENCY_OPTIONS, before: { type: 'string' } }, __filename);
  const quick = v.quick ?? false;
  return {
    quick,
    rounds: intArg('--rounds', v.rounds ?? (quick ? 5 : 9), { min: 1, max: 50 }),
    count: intArg('--count', v.count ?? (quick ? 2000 : 5000), { min: 10, max: 1_000_000 }),
    warmup: intArg('--warmup', v.warmup ?? (quick ? 200 : 500), { max: 1_000_000 }),
    out: path.resolve(v.out ?? path.join(ROOT, 'build/bench')),
    before: v.before === undefined ? undefined : path.resolve(v.before),
  };
}

interface BenchResult {
  count: number;
  errors: number;
  connect_median_us: number;
  connect_p99_us: number;
  rate_per_s: number;
}

const t0 = Date.now();
function progress(msg: string): void {
  process.stderr.write(`[monitor bench +${((Date.now() - t0) / 1000).toFixed(0)}s] ${msg}\n`);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** A node with the Service, its agent running the objects of objectDir (default: build/bpf). */
async function node(objectDir?: string): Promise<LbEnv> {
  const env = await createLbEnv({ backends: 2 });
  try {
    const [a, b] = env.backends;
    writeObjects(env, 'svc.yaml', [
      serviceYaml('web', { clusterIP: VIP, ports: [{ name: 'http', port: 80, targetPort: TCP_PORT }] }),
      sliceYaml('web-1', {
        service: 'web',
        family: 4,
        endpoints: [{ ip: a.ipv4 }, { ip: b.ipv4 }],
        ports: [{ name: 'http', port: TCP_PORT }],
      }),
    ]);
    await startAgent(env, { env: objectDir ? { SLUICE_BPF_DIR: objectDir } : undefined });
    await waitForBackends(env, `${VIP}:80/TCP`, [`${a.ipv4}:${TCP_PORT}`, `${b.ipv4}:${TCP_PORT}`]);
  } catch (e) {
    await stopAgent(env).catch(() => undefined);
    await env.node.destroy();
    throw e;
  }
  return env;
}

async function bench(env: LbEnv, o: Opts): Promise<BenchResult> {
  const pin = os.cpus().length >= 2 ? ['taskset', '-c', '0'] : [];
  const args = [
    ...pin,
    PROBE,
    'bench',
    '--addr',
    VIP,
    '--port',
    '80',
    '--count',
    String(o.count),
    '--warmup',
    String(o.warmup),
    '--concurrency',
    '1',
  ];
  const r = await env.node.exec(args, {
    netnsPath: env.client.netnsPath,
    inCgroup: true,
    allowFail: true,
    timeoutMs: 60000 + (o.count + o.warmup) * 20,
  });
  const line = r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .pop();
  if (!line) throw new Error(`sl-probe bench printed no result (exit ${r.code}): ${r.stderr.trim()}`);
  return JSON.parse(line) as BenchResult;
}

function fmt(n: number, digits = 1): string {
  return n.toFixed(digits);
}

async function main(): Promise<number> {
  const o = parseOpts(process.argv.slice(2));
  const variants = ALL_VARIANTS.filter((v) => v !== 'before' || o.before);
  const envs = new Map<Variant, LbEnv>();
  const feeds: PinnedEventFeed[] = [];
  let events = 0;
  try {
    envs.set('noev', await node(path.join(ROOT, 'build/bpf-noev')));
    envs.set('closed', await node());
    envs.set('reader', await node());
    if (o.before) {
      LABEL.before = `monitor attached, objects of ${path.relative(ROOT, o.before)}`;
      envs.set('before', await node(o.before));
    }
    for (const v of ['reader', 'before'] as const) {
      if (!envs.has(v)) continue;
      const feed = new PinnedEventFeed(envs.get(v)!.node.pinDir);
      feeds.push(feed);
      feed.start(() => void events++);
    }
    progress(`${envs.size} nodes up; ${o.rounds} rounds of ${o.count} connects (+${o.warmup} warm-up) per variant`);
    const runs: Record<Variant, BenchResult[]> = { noev: [], closed: [], reader: [], before: [] };
    for (let round = 0; round < o.rounds; round++) {
      const order = round % 2 === 0 ? variants : [...variants].reverse();
      for (const v of order) {
        const r = await bench(envs.get(v)!, o);
        runs[v].push(r);
        progress(
          `round ${round + 1}/${o.rounds} ${v.padEnd(6)} connect median ${fmt(r.connect_median_us)} µs, p99 ${fmt(r.connect_p99_us)} µs, errors ${r.errors}`,
        );
      }
    }
    const lost = feeds.reduce((s, f) => s + f.lost(), 0n);
    for (const f of feeds) f.stop();
    const paired = (v: Variant, field: 'connect_median_us' | 'connect_p99_us') =>
      median(runs[v].map((r, i) => r[field] / runs.noev[i][field]));
    const summary = variants.map((v) => ({
      variant: v,
      label: LABEL[v],
      connect_median_us: median(runs[v].map((r) => r.connect_median_us)),
      connect_p99_us: median(runs[v].map((r) => r.connect_p99_us)),
      ratio_median: paired(v, 'connect_median_us'),
      ratio_p99: paired(v, 'connect_p99_us'),
      errors: runs[v].reduce((s, r) => s + r.errors, 0),
    }));
    const expectedEvents = o.rounds * (o.count + o.warmup) * feeds.length;
    const lines = [
      '#### Datapath events: connect latency through socket-LB',
      '',
      `Kernel ${os.release()}, ${os.cpus().length} CPUs, sl-probe bench --count ${o.count} --warmup ${o.warmup} --concurrency 1, ${o.rounds} rounds, ` +
        `variants interleaved; ratios are medians of per-round ratios to the build without events. The reader${feeds.length > 1 ? 's' : ''} received ${events} events ` +
        `(${expectedEvents} connects through the VIP) and the ring dropped ${lost}.`,
      '',
      '| variant | connect median µs | connect p99 µs | median × | p99 × | errors |',
      '| --- | ---: | ---: | ---: | ---: | ---: |',
      ...summary.map(
        (s) =>
          `| ${s.label} | ${fmt(s.connect_median_us)} | ${fmt(s.connect_p99_us)} | ${fmt(s.ratio_median, 3)} | ${fmt(s.ratio_p99, 3)} | ${s.errors} |`,
      ),
      '',
    ];
    fs.mkdirSync(o.out, { recursive: true });
    fs.writeFileSync(
      path.join(o.out, 'monitor.json'),
      JSON.stringify(
        { opts: o, kernel: os.release(), cpus: os.cpus().length, events, lost: String(lost), summary, runs },
        null,
        2,
      ),
    );
    fs.writeFileSync(path.join(o.out, 'monitor.md'), lines.join('\n'));
    process.stdout.write(lines.join('\n'));
    const failed = summary.some((s) => s.errors > 0) || events === 0;
    if (failed) progress('FAILED: connects failed or the reader saw no events');
    return failed ? 1 : 0;
  } finally {
    for (const f of feeds) f.close();
    closePoller();
    for (const env of envs.values()) {
      await stopAgent(env).catch(() => undefined);
      await sluice(env, ['uninstall'], true);
      await env.node.destroy();
    }
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`monitor bench failed: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  },
);
