/* Sidecar capture cost: sluice vs Istio-style iptables REDIRECT, same proxy, same node, one run
 * (`node_modules/.bin/tsx test/bench/capture.ts [--quick]` after `make all`; needs root).
 *
 * The claim measured: app -> sidecar stand-in -> server, request latency (median, p99) and
 * connection rate are at least as good with sluice capture as with Istio's iptables rules.
 *
 * One simulated node (createMeshEnv: the agent, the CNI chain with sluice-cni) and:
 *  - server: a backend pod running `sl-probe serve` on 8080 (outside the test cgroup);
 *  - S: a pod enrolled by sluice (sidecar.istio.io/status), its stand-in sidecar
 *    (`sl-probe sidecar --forward`, uid/gid 1337) and its app inside the test cgroup, where the
 *    sluice programs apply;
 *  - I: a pod sluice does not enroll, with the rules Istio itself expects istio-cni to write for a
 *    pod with default annotations (its golden test/istio-golden/cni/pkg/plugin/testdata/
 *    basic.txt.golden, loaded as it is by test/kernel/istio-golden.ts), the same sidecar and the app
 *    OUTSIDE the cgroup, so only iptables applies;
 *  - direct: the env's plain client pod, outside the cgroup and without rules, connecting straight
 *    to the server: the floor (one TCP connection per request instead of two).
 * Each request of `sl-probe bench --addr <server> --port 8080` is: connect, the capture sends it
 * to the sidecar (15001), the sidecar asks SO_ORIGINAL_DST, connects to the server, reads its line,
 * answers, closes; the app reads to EOF. Rounds interleave the variants (S, I, direct, then
 * I, S, direct, ...); each round runs a latency pass (concurrency 1: latency median/p99 and rate)
 * and a rate pass (concurrency RATE_C). Reported: the median over rounds of each round's figure,
 * with the ratio sluice/iptables (latency: <= 1 meets the target; rate: >= 1 does).
 *
 * Options: --quick (fewer requests, 5 rounds), --rounds N (>= 5), --count N, --warmup N,
 * --rate-concurrency C, --out DIR (default build/bench), --pin APP_CPU,PROXY_CPU (taskset: the apps on
 * one CPU, both sidecars and the server on another; default 0,1 with >= 2 CPUs, as test/bench/run.ts),
 * --no-pin or --pin none (let the scheduler place them). Output: a Markdown table on stdout and
 * in DIR/capture.md, the raw figures of every pass in DIR/capture.json (with the latency pass's
 * distribution, sl-probe bench --percentiles; test/bench/charts.ts draws it). Exit 1 when a request
 * failed or the setup check failed.
 *
 * Safety: iptables rules only in pod I's netns (loadGolden checks it is a pod of this node);
 * all traffic inside the node's namespaces; the node is destroyed in `finally` and by the harness's
 * exit/signal handlers.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { run, type SimPod } from '../harness';
import { loadGolden, readGolden } from '../kernel/istio-golden';
import { PROBE, ROOT, stopAgent, TCP_PORT } from '../kernel/lb-env';
import { addMeshPod, createMeshEnv, endpoint, sidecarReply, type MeshEnv } from '../kernel/mesh-env';
import { intArg, LATENCY_OPTIONS, parseOptions, pinOption } from './args';

const STATUS = { 'sidecar.istio.io/status': '{"initContainers":null,"containers":["istio-proxy"]}' };
/** Istio's rules for a sidecar pod with default annotations (istio-cni's dry-run test "basic"). */
const ISTIO_RULES = 'test/istio-golden/cni/pkg/plugin/testdata/basic.txt.golden';

interface Opts {
  quick: boolean;
  rounds: number;
  count: number;
  warmup: number;
  rateC: number;
  out: string;
  /** [app CPU, CPU of the sidecars and the server], or undefined: no pinning */
  pin?: [number, number];
}

function parseOpts(argv: string[]): Opts {
  const v = parseOptions(
    argv,
    { ...LATENCY_OPTIONS, 'rate-concurrency': { type: 'string' }, pin: { type: 'string' }, 'no-pin': { type: 'boolean' } },
    __filename,
  );
  const quick = v.quick ?? false;
  return {
    quick,
    rounds: intArg('--rounds', v.rounds ?? (quick ? 5 : 9), { min: 5, max: 50 }),
    count: intArg('--count', v.count ?? (quick ? 1000 : 4000), { min: 100, max: 200000 }),
    warmup: intArg('--warmup', v.warmup ?? (quick ? 100 : 400), { max: 100000 }),
    rateC: intArg('--rate-concurrency', v['rate-concurrency'] ?? 4, { min: 1, max: 64 }),
    out: path.resolve(v.out ?? path.join(ROOT, 'build/bench')),
    pin: pinOption(v, { form: 'APP_CPU,PROXY_CPU' }),
  };
}

type Variant = 'sluice' | 'iptables' | 'direct';

interface BenchOut {
  count: number;
  errors: number;
  connect_median_us: number | null;
  connect_p99_us: number | null;
  op_median_us: number | null;
  op_p99_us: number | null;
  rate_per_s: number;
  elapsed_s: number;
  /** [percentile, µs] of op latency (request latency), with --percentiles */
  op_percentiles_us?: Array<[number, number]>;
}

interface Sample {
  round: number;
  variant: Variant;
  lat: BenchOut;
  rate: BenchOut;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n === 0 ? NaN : n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
};

function progress(msg: string): void {
  process.stderr.write(`[capture-bench] ${msg}\n`);
}

async function main(): Promise<number> {
  const o = parseOpts(process.argv.slice(2));
  const t0 = Date.now();
  let env: MeshEnv | undefined;
  try {
    env = await createMeshEnv({ backends: 1 });
    const server = env.backends[0];
    const S = await addMeshPod(env, 'meshed', { annotations: STATUS });
    const I = await addMeshPod(env, 'istio', { annotations: {} });
    const epS = await endpoint(env, S);
    const epI = await endpoint(env, I);
    if (epS?.mode !== 'sidecar' || epI?.mode !== 'none')
      throw new Error(`setup: S mode=${epS?.mode}, I mode=${epI?.mode} (want sidecar, none)`);
    await loadGolden(env.node, I, readGolden(ISTIO_RULES));
    // The sidecar logs a JSON line per connection: past its 'ready' line its stdout goes to
    // /dev/null, so the harness does not spend a CPU collecting tens of thousands of lines.
    const quiet = ['/bin/sh', '-c', '"$@" | { IFS= read -r l; printf "%s\\n" "$l"; exec cat >/dev/null; }', 'sh'];
    for (const [pod, inCgroup] of [
      [S, true],
      [I, false],
    ] as const) {
      const sc = env.node.spawn(
        [
          ...quiet,
          PROBE,
          'sidecar',
          '--id',
          `sc-${pod.name}`,
          '--forward',
          '--bind-inbound-source',
          '127.0.0.6',
          '--bind-inbound-source',
          '::6',
        ],
        {
          netnsPath: pod.netnsPath,
          uid: 1337,
          gid: 1337,
          inCgroup,
        },
      );
      await env.node.waitForLine(sc, 'ready');
    }
    if (o.pin) {
      // every process already in the sidecars' and the server's namespaces, all their threads
      for (const pod of [S, I, server]) {
        const pids = (await run(['ip', 'netns', 'pids', pod.netnsName])).stdout.split('\n').filter((l) => /^\d+$/.test(l.trim()));
        for (const pid of pids) await run(['taskset', '-apc', String(o.pin[1]), pid.trim()], { allowFail: true });
      }
      progress(`pinned the apps to CPU ${o.pin[0]}, the sidecars and the server to CPU ${o.pin[1]}`);
    }
    const from: Record<Variant, { pod: SimPod; inCgroup: boolean }> = {
      sluice: { pod: S, inCgroup: true },
      iptables: { pod: I, inCgroup: false },
      direct: { pod: env.client, inCgroup: false },
    };

    // Each path does what it claims before it is timed.
    for (const v of ['sluice', 'iptables', 'direct'] as Variant[]) {
      const r = await env.node.exec(
        [PROBE, 'connect', '--proto', 'tcp', '--addr', server.ipv4, '--port', String(TCP_PORT), '--timeout-ms', '2000'],
        {
          netnsPath: from[v].pod.netnsPath,
          inCgroup: from[v].inCgroup,
          allowFail: true,
        },
      );
      const line = r.stdout.split('\n').find((l) => l.startsWith('{"ok"'));
      const res = line ? JSON.parse(line) : undefined;
      const sc = sidecarReply(res?.reply);
      const ok =
        v === 'direct'
          ? res?.ok && res.reply.split(' ')[0] === server.name
          : res?.ok &&
            sc?.via === 'out' &&
            sc.orig === `${server.ipv4}:${TCP_PORT}` &&
            sc.upstream?.split(' ')[0] === server.name;
      if (!ok) throw new Error(`setup check (${v}): ${line ?? r.stdout + r.stderr}`);
      progress(`${v}: ${res.reply}`);
    }

    const bench = async (v: Variant, c: number): Promise<BenchOut> => {
      const args = [
        ...(o.pin ? ['taskset', '-c', String(o.pin[0])] : []),
        PROBE,
        'bench',
        '--addr',
        server.ipv4,
        '--port',
        String(TCP_PORT),
        '--count',
        String(o.count),
        '--warmup',
        String(o.warmup),
        '--concurrency',
        String(c),
      ];
      if (c === 1) args.push('--percentiles'); // the latency pass: its distribution is charted
      const r = await env!.node.exec(args, {
        netnsPath: from[v].pod.netnsPath,
        inCgroup: from[v].inCgroup,
        allowFail: true,
        timeoutMs: 300000,
      });
      const line = r.stdout.split('\n').find((l) => l.startsWith('{"count"'));
      if (!line) throw new Error(`bench (${v}) printed no result: ${r.stderr.slice(-500)}`);
      return JSON.parse(line) as BenchOut;
    };

    const load0 = os.loadavg()[0];
    const samples: Sample[] = [];
    for (let round = 1; round <= o.rounds; round++) {
      const order: Variant[] = round % 2 ? ['sluice', 'iptables', 'direct'] : ['iptables', 'sluice', 'direct'];
      for (const v of order) {
        const lat = await bench(v, 1);
        const rate = await bench(v, o.rateC);
        samples.push({ round, variant: v, lat, rate });
        progress(
          `round ${round} ${v.padEnd(8)} median ${lat.op_median_us} us p99 ${lat.op_p99_us} us rate ${lat.rate_per_s}/s, c=${o.rateC} rate ${rate.rate_per_s}/s` +
            (lat.errors + rate.errors ? ` ERRORS ${lat.errors + rate.errors}` : ''),
        );
      }
    }

    // --- report ---
    const errors = samples.reduce((n, s) => n + s.lat.errors + s.rate.errors, 0);
    const of = (v: Variant, f: (s: Sample) => number | null) =>
      median(samples.filter((s) => s.variant === v).map((s) => f(s) ?? NaN));
    const figures: Array<{ name: string; f: (s: Sample) => number | null; lowerIsBetter: boolean; unit: string }> = [
      { name: 'request latency, median', f: (s) => s.lat.op_median_us, lowerIsBetter: true, unit: 'µs' },
      { name: 'request latency, p99', f: (s) => s.lat.op_p99_us, lowerIsBetter: true, unit: 'µs' },
      { name: 'connect latency, median', f: (s) => s.lat.connect_median_us, lowerIsBetter: true, unit: 'µs' },
      { name: 'connection rate, concurrency 1', f: (s) => s.lat.rate_per_s, lowerIsBetter: false, unit: '/s' },
      { name: `connection rate, concurrency ${o.rateC}`, f: (s) => s.rate.rate_per_s, lowerIsBetter: false, unit: '/s' },
    ];
    const fmt = (x: number) => (Number.isFinite(x) ? (x >= 1000 ? x.toFixed(0) : x.toFixed(1)) : '-');
    const iptVer = (await run(['iptables', '--version'], { allowFail: true })).stdout.trim();
    const lines: string[] = [
      '# Sidecar capture: sluice vs Istio iptables REDIRECT',
      '',
      `app → stand-in sidecar (sl-probe sidecar --forward, uid 1337) → server pod, same node; ${o.rounds} interleaved rounds, ` +
        `${o.count} requests per pass after ${o.warmup} warm-up; median over rounds of each round's figure.`,
      `Kernel ${os.release()}, ${os.cpus().length} CPUs, ${iptVer}; ` +
        `${o.pin ? `apps pinned to CPU ${o.pin[0]}, sidecars and server to CPU ${o.pin[1]}` : 'no CPU pinning'}; ` +
        `load average ${load0.toFixed(2)} before the rounds, ${os.loadavg()[0].toFixed(2)} after (other work on the machine adds noise).`,
      '',
      '| figure | direct (no capture) | sluice | iptables | sluice/iptables | target | rounds sluice ahead |',
      '|---|---:|---:|---:|---:|---|---:|',
    ];
    let missed = 0;
    for (const fig of figures) {
      const d = of('direct', fig.f);
      const s = of('sluice', fig.f);
      const i = of('iptables', fig.f);
      const ratio = s / i;
      const met = fig.lowerIsBetter ? s <= i : s >= i;
      if (!met) missed++;
      let ahead = 0;
      for (let round = 1; round <= o.rounds; round++) {
        const rs = fig.f(samples.find((x) => x.round === round && x.variant === 'sluice')!) ?? NaN;
        const ri = fig.f(samples.find((x) => x.round === round && x.variant === 'iptables')!) ?? NaN;
        if (fig.lowerIsBetter ? rs <= ri : rs >= ri) ahead++;
      }
      lines.push(
        `| ${fig.name} (${fig.unit}) | ${fmt(d)} | ${fmt(s)} | ${fmt(i)} | ${ratio.toFixed(3)} | ${met ? 'met' : 'MISSED'} | ${ahead}/${o.rounds} |`,
      );
    }
    lines.push(
      '',
      `Target (sluice at least as fast as iptables on every figure): ${missed ? `missed on ${missed} figure(s)` : 'met on every figure'}. ` +
        `Failed requests: ${errors}. Run time ${((Date.now() - t0) / 1000).toFixed(0)} s.`,
      '',
      'Per round (request latency median / p99 in µs, rate c=1, rate c=' + o.rateC + ' in connections/s):',
      '',
      '| round | sluice | iptables | direct |',
      '|---:|---|---|---|',
    );
    for (let round = 1; round <= o.rounds; round++) {
      const cell = (v: Variant) => {
        const s = samples.find((x) => x.round === round && x.variant === v)!;
        return `${fmt(s.lat.op_median_us ?? NaN)} / ${fmt(s.lat.op_p99_us ?? NaN)}, ${fmt(s.lat.rate_per_s)}, ${fmt(s.rate.rate_per_s)}`;
      };
      lines.push(`| ${round} | ${cell('sluice')} | ${cell('iptables')} | ${cell('direct')} |`);
    }
    const md = lines.join('\n') + '\n';
    fs.mkdirSync(o.out, { recursive: true });
    fs.writeFileSync(path.join(o.out, 'capture.md'), md);
    const raw = {
      opts: o,
      kernel: os.release(),
      cpus: os.cpus().length,
      iptables: iptVer,
      loadAvg: { before: load0, after: os.loadavg()[0] },
      errors,
      samples,
    };
    fs.writeFileSync(path.join(o.out, 'capture.json'), JSON.stringify(raw, null, 2) + '\n');
    process.stdout.write(md);
    progress(`wrote ${path.join(o.out, 'capture.md')} and capture.json`);
    return errors ? 1 : 0;
  } finally {
    if (env) {
      await stopAgent(env).catch(() => undefined);
      await env.node.destroy();
    }
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`capture bench failed: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  },
);
