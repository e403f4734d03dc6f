/* The scale benchmark (`make bench` runs it; `node_modules/.bin/tsx test/bench/scale.ts [options]`
 * after `make all`; needs root). One run, side by side at each size (default 10,000 Services;
 * BENCH_SCALE=1: 10,000, 50,000 and 100,000, each Service with 5 endpoints, so 500,000 at the top):
 *
 *  1. Initial sync in API mode, as on a cluster: the in-process stand-in API server
 *     (test/harness/apiserver.ts) holds the Services and EndpointSlices (generate.ts addresses) plus
 *     one measured Service whose endpoints are two real backend pods; a cold start of the agent
 *     (fresh pins) is timed from the arrival of its first LIST request to its first full "services
 *     synced" log line and to `status` ready, split into listing (every page of every kind) and
 *     the map sync; the agent's peak RSS (VmHWM) is read right after. Several cold starts per size
 *     (--starts): medians, with the range.
 *  2. Watch event → map latency (at the largest size, or every size with --changes-at-all): one
 *     EndpointSlice change at a time, each to another Service, its first endpoint replaced by a new
 *     IP; from just before the stand-in applies it until this process, polling the pinned maps
 *     every ~0.5 ms, sees the new IP (as test/bench/api.ts measures it).
 *  3. TCP connect latency from a pod at the largest size: sl-probe bench to the measured Service's
 *     VIP (sluice) and to one of its backends directly (same node state: the hooks run and miss),
 *     back to back in each round, the order alternating; the ratio is the median of the per-round
 *     ratios. Each mode has its own server port (see run.ts's header for why), both pinned to the
 *     CPU the client is not on.
 * A Markdown report on stdout and in build/bench/scale.md (raw numbers in scale.json).
 *
 * Options (environment variables in brackets):
 *   --sizes 10000,50000,100000 [BENCH_SCALE_SIZES; BENCH_SCALE=1 for these three]  --endpoints 5
 *   --starts 3 (cold starts per size: medians reported, ranges in brackets)
 *   --changes 200  --changes-at-all  --count 3000 --warmup 300 --rounds 7 (connect latency)
 *   --out build/bench  --quick (sizes 2000, 1 start, 50 changes, 2 rounds of 1,000 connects)
 *   run.ts's other options are accepted and ignored (make bench passes the same BENCH_ARGS to both)
 *
 * Safety: the harness's `sltest-` namespaces and cgroup only (createLbEnv); the agent runs in this
 * process's network namespace to reach the stand-in on 127.0.0.1, and attaches its programs to the
 * test cgroup only; every wait is bounded; the node is destroyed and the stand-in stopped in
 * `finally` (on signals, by the harness's exit handlers).
 */
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { ChildProcess } from 'node:child_process';
import { FakeApiServer } from '../harness/apiserver';
import { sleep } from '../harness';
import { createLbEnv, PROBE, ROOT, SLUICE, sluice, stopAgent, writeConfig, type LbEnv } from '../kernel/lb-env';
import { callAgent } from '../../src/agent/local-api';
import { LbMaps } from '../../src/lb/maps';
import { endpointIp, serviceVip } from './generate';
import { intArg, intListArg, parseOptions, RUN_OPTIONS } from './args';
import {
  agentLogs,
  agentSocket,
  checkCanRun,
  destroyBenchEnv,
  fmt,
  int,
  loadAvg,
  logged,
  machineInfo,
  mapBackends,
  MEASURED_VIP,
  NODE,
  pause,
  procStatusKiB,
  progressLogger,
  quantile,
  runMain,
  serviceObj,
  sliceObj,
  slProbeBench,
  spawnAgent,
  SVC_PORT,
  tsOf,
  writeReport,
  yieldLoop,
} from './lib';

interface Opts {
  sizes: number[];
  endpoints: number;
  changes: number;
  changesAtAll: boolean;
  count: number;
  warmup: number;
  rounds: number;
  /** cold starts of the agent per size */
  starts: number;
  out: string;
  quick: boolean;
}

/** scale.ts's options, over run.ts's (make bench passes BENCH_ARGS to both; those of run.ts alone are ignored). */
const SCALE_OPTIONS = {
  ...RUN_OPTIONS,
  endpoints: { type: 'string' },
  changes: { type: 'string' },
  'changes-at-all': { type: 'boolean' },
  starts: { type: 'string' },
} as const;

function parseOpts(argv: string[]): Opts {
  const v = parseOptions(argv, SCALE_OPTIONS, __filename);
  const env = process.env;
  const quick = v.quick || env.BENCH_QUICK === '1';
  const sizes = v.sizes ?? env.BENCH_SCALE_SIZES ?? (quick ? '2000' : env.BENCH_SCALE === '1' ? '10000,50000,100000' : '10000');
  const o: Opts = {
    sizes: intListArg('--sizes', sizes, { min: 1, max: 100000 }).sort((a, b) => a - b),
    endpoints: intArg('--endpoints', v.endpoints ?? 5, { min: 1, max: 64 }),
    changes: intArg('--changes', v.changes ?? (quick ? 50 : 200), { max: 5000 }),
    changesAtAll: v['changes-at-all'] ?? false,
    count: intArg('--count', v.count ?? (quick ? 1000 : 3000), { min: 10, max: 1_000_000 }),
    warmup: intArg('--warmup', v.warmup ?? (quick ? 100 : 300), { max: 1_000_000 }),
    rounds: intArg('--rounds', v.rounds ?? (quick ? 2 : 7), { min: 1, max: 50 }),
    starts: intArg('--starts', v.starts ?? (quick ? 1 : 3), { min: 1, max: 20 }),
    out: path.resolve(v.out ?? path.join(ROOT, 'build/bench')),
    quick,
  };
  // the backend map (bpf-lb-backend-map-max, 524,288) holds the endpoints and one per change
  const ips = Math.max(...o.sizes) * o.endpoints + o.changes + 2;
  if (ips > 524288) throw new Error(`${ips} endpoints (size × endpoints + changes) do not fit bpf-lb-backend-map-max (524,288)`);
  return o;
}

// ---------------------------------------------------------------------------------------------
// helpers

const t0Run = Date.now();
const progress = progressLogger('bench-scale', t0Run);

// nearest rank, as this report has always given it (lib's median interpolates between the middle two)
const median = (xs: number[]) => quantile(xs, 0.5);

const PORT_SLUICE = 8081;
const PORT_DIRECT = 8082;

// ---------------------------------------------------------------------------------------------
// one size

interface BenchRun {
  connect_median_us: number;
  connect_p99_us: number;
  errors: number;
}

/** One cold start of the agent. */
interface Start {
  loadAvg: string;
  listToSyncedMs: number;
  listToReadyMs: number;
  listMs: number;
  syncMs: number;
  spawnToFirstListMs: number;
  vmHwmKiB: number;
  heapUsedMiB: number;
  synced: Record<string, unknown>;
}

interface SizeResult {
  services: number;
  endpoints: number;
  applyMs: number;
  starts: Start[];
  /** event → map, ms */
  changes: number[];
  changeTimeouts: number;
  vmHwmAfterChangesKiB: number;
  connect?: { direct: BenchRun[]; sluice: BenchRun[] };
}

async function oneSize(env: LbEnv, o: Opts, size: number, last: boolean): Promise<SizeResult> {
  // history bigger than what is applied: the stand-in trims it by shifting an array
  const api = await FakeApiServer.start({ historyLimit: 4 * (size * 2 + o.changes) + 1000 });
  try {
    writeConfig(env, {
      'k8s-kubeconfig': api.kubeconfig(path.join(env.node.workDir, 'kubeconfig')),
      'node-name': NODE,
      'state-dir': path.join(env.node.workDir, 'state'),
    });
    const t = performance.now();
    api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'default' } });
    const eps: string[][] = [];
    for (let i = 0; i < size; i++) {
      const ips = Array.from({ length: o.endpoints }, (_, j) => endpointIp(i * o.endpoints + j));
      eps.push(ips);
      api.apply(serviceObj(`svc-${i}`, serviceVip(i)));
      api.apply(sliceObj(`svc-${i}`, ips));
    }
    api.apply(serviceObj('measured', MEASURED_VIP, PORT_SLUICE));
    api.apply(
      sliceObj(
        'measured',
        env.backends.map((b) => b.ipv4),
        PORT_SLUICE,
      ),
    );
    const applyMs = performance.now() - t;
    progress(
      `${size}: ${size + 1} Services / ${size * o.endpoints + 2} endpoints in the stand-in (${applyMs.toFixed(0)} ms); load ${loadAvg()}`,
    );

    const r: SizeResult = {
      services: size + 1,
      endpoints: size * o.endpoints + 2,
      applyMs,
      starts: [],
      changes: [],
      changeTimeouts: 0,
      vmHwmAfterChangesKiB: 0,
    };
    for (let k = 0; k < o.starts; k++) {
      await stopAgent(env);
      await sluice(env, ['uninstall'], true); // fresh pins
      await sleep(1000);
      const load = loadAvg();
      const mark = api.requests.length;
      const { spawnAt, readyAt } = await spawnAgent(env, Math.max(60000, size * 3));
      const pid = (JSON.parse((await sluice(env, ['status', '-o', 'json'])).stdout) as { pid: number }).pid;
      const vmHwmKiB = procStatusKiB(pid, 'VmHWM');
      const st = (await callAgent(agentSocket(env), { op: 'status' })) as {
        datapath?: { services: number };
        memory?: { heapUsedMiB: number };
      };
      if (st.datapath?.services !== size + 1)
        throw new Error(`the agent programmed ${st.datapath?.services} services, expected ${size + 1}`);
      const lists = api.requests.slice(mark).filter((q) => q.verb === 'list');
      const firstList = Math.min(...lists.map((q) => q.at));
      const logs = agentLogs(env);
      const synced = logged(logs, 'services synced', (l) => l.full === true);
      if (synced.failed !== 0) throw new Error(`the agent failed to program ${String(synced.failed)} services`);
      const apiSynced = logged(logs, 'API server synced');
      const { ts: _ts, level: _lv, msg: _m, ...syncedFields } = synced;
      const x: Start = {
        loadAvg: load,
        listToSyncedMs: tsOf(synced) - firstList,
        listToReadyMs: readyAt - firstList,
        listMs: tsOf(apiSynced) - firstList,
        syncMs: Number(synced.ms),
        spawnToFirstListMs: firstList - spawnAt,
        vmHwmKiB,
        heapUsedMiB: st.memory?.heapUsedMiB ?? NaN,
        synced: syncedFields,
      };
      r.starts.push(x);
      progress(
        `${size}: start ${k + 1}/${o.starts}: first LIST → synced ${x.listToSyncedMs} ms (listing ${x.listMs} ms, map sync ${x.syncMs} ms), → ready ${x.listToReadyMs} ms; VmHWM ${(vmHwmKiB / 1024).toFixed(0)} MiB; load ${load}`,
      );
    }

    if (last || o.changesAtAll) await changes(api, env, o, size, eps, r);
    if (last) r.connect = await connectLatency(env, o, size);
    await stopAgent(env);
    return r;
  } finally {
    await stopAgent(env).catch(() => undefined);
    await api.stop();
  }
}

async function changes(api: FakeApiServer, env: LbEnv, o: Opts, size: number, eps: string[][], r: SizeResult): Promise<void> {
  await sleep(1000); // let the start settle
  const maps = LbMaps.open(env.node.pinDir);
  try {
    for (let c = 0; c < o.changes; c++) {
      const i = (c * 7919 + 13) % size;
      const ip = endpointIp(size * o.endpoints + c);
      eps[i] = [ip, ...eps[i].slice(1)];
      const t0 = performance.now();
      api.apply(sliceObj(`svc-${i}`, eps[i]));
      let seen = false;
      while (performance.now() - t0 < 10000) {
        if (mapBackends(maps, serviceVip(i))?.includes(ip)) {
          seen = true;
          break;
        }
        pause(0.5);
        await yieldLoop();
      }
      if (seen) r.changes.push(performance.now() - t0);
      else r.changeTimeouts++;
      await sleep(5);
    }
  } finally {
    maps.close();
  }
  const pid = (JSON.parse((await sluice(env, ['status', '-o', 'json'])).stdout) as { pid: number }).pid;
  r.vmHwmAfterChangesKiB = procStatusKiB(pid, 'VmHWM');
  progress(
    `${size}: ${o.changes} changes: median ${fmt(median(r.changes))} ms, p99 ${fmt(quantile(r.changes, 0.99))} ms, ${r.changeTimeouts} not seen`,
  );
}

function probeBench(env: LbEnv, o: Opts, addr: string, port: number): Promise<BenchRun> {
  return slProbeBench<BenchRun>(env, addr, port, { count: o.count, warmup: o.warmup, cpu: 0 });
}

async function connectLatency(env: LbEnv, o: Opts, size: number): Promise<{ direct: BenchRun[]; sluice: BenchRun[] }> {
  const out = { direct: [] as BenchRun[], sluice: [] as BenchRun[] };
  const check = await probeBench(env, { ...o, count: 10, warmup: 0 }, MEASURED_VIP, SVC_PORT);
  if (check.errors) throw new Error(`connects to ${MEASURED_VIP}:${SVC_PORT} fail`);
  for (let round = 0; round < o.rounds; round++) {
    const order: Array<'direct' | 'sluice'> = round % 2 ? ['sluice', 'direct'] : ['direct', 'sluice'];
    for (const m of order)
      out[m].push(
        m === 'direct'
          ? await probeBench(env, o, env.backends[0].ipv4, PORT_DIRECT)
          : await probeBench(env, o, MEASURED_VIP, SVC_PORT),
      );
    const [d, s] = [out.direct[round], out.sluice[round]];
    progress(
      `${size}: connect round ${round + 1}/${o.rounds}: direct ${d.connect_median_us} µs, sluice ${s.connect_median_us} µs (median)`,
    );
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// report

/** Median over rounds of the per-round ratio sluice/direct of a field. */
function ratio(c: { direct: BenchRun[]; sluice: BenchRun[] }, field: 'connect_median_us' | 'connect_p99_us'): number {
  return median(c.direct.map((d, i) => c.sluice[i][field] / d[field]));
}

function report(o: Opts, envInfo: Record<string, string>, sizes: SizeResult[], totalS: number): string {
  const cols = sizes.map((s) => int(s.services - 1));
  const row = (name: string, f: (s: SizeResult) => string, target = '') =>
    `| ${name} | ${sizes.map(f).join(' | ')} | ${target} |`;
  const mib = (k: number) => fmt(k / 1024);
  const med = (s: SizeResult, f: (x: Start) => number) => median(s.starts.map(f));
  /** median of the starts, the range in brackets when there are several */
  const span = (s: SizeResult, f: (x: Start) => number, show: (v: number) => string) => {
    const vs = s.starts.map(f);
    return `${show(median(vs))}${vs.length > 1 ? ` (${show(Math.min(...vs))}–${show(Math.max(...vs))})` : ''}`;
  };
  const verdict = (s: SizeResult) => {
    const top = s.services - 1 >= 100000;
    const okTime = med(s, (x) => x.listToSyncedMs) <= (top ? 15000 : 2000);
    const okMem = med(s, (x) => x.vmHwmKiB) / 1024 <= (top ? 600 : 150);
    return s.services - 1 === 10000 || top ? `${okTime ? 'met' : '**missed**'} / ${okMem ? 'met' : '**missed**'}` : '';
  };
  const out: string[] = [];
  out.push(`## sluice scale benchmark (${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC)`, '');
  out.push(
    `Kernel ${envInfo.kernel}, ${envInfo.cpus} CPUs (${envInfo.cpuModel}), ${envInfo.memory}, Node ${process.version}. API mode against the in-process ` +
      `stand-in API server (pages of 500), each Service ${o.endpoints} endpoints, plus one measured Service with 2 real backends. ` +
      `${o.starts} cold start(s) per size (fresh pins each): medians, ranges in brackets. Total run time ${fmt(totalS / 60)} min${o.quick ? ' (--quick)' : ''}.`,
    '',
  );
  out.push(
    `| Services (× ${o.endpoints} endpoints) | ${cols.join(' | ')} | target |`,
    `| --- |${sizes.map(() => ' ---: |').join('')} --- |`,
  );
  out.push(
    row(
      'first LIST → first full "services synced", ms',
      (s) => span(s, (x) => x.listToSyncedMs, int),
      '10k ≤ 2,000 ms; 100k ≤ 15,000 ms',
    ),
  );
  out.push(row('  of which: listing every page of every kind, ms', (s) => span(s, (x) => x.listMs, int)));
  out.push(row('  of which: map sync (compute frontends, write the maps), ms', (s) => span(s, (x) => x.syncMs, int)));
  out.push(row('first LIST → `status` ready, ms', (s) => span(s, (x) => x.listToReadyMs, int)));
  out.push(
    row('peak RSS after the first sync (VmHWM), MiB', (s) => span(s, (x) => x.vmHwmKiB, mib), '10k ≤ 150 MiB; 100k ≤ 600 MiB'),
  );
  out.push(row('V8 heap used after the sync, MiB', (s) => span(s, (x) => x.heapUsedMiB, int)));
  out.push(row('targets (time / memory)', verdict));
  out.push(
    row('watch event → map: median / p99', (s) =>
      s.changes.length ? `${fmt(median(s.changes))} / ${fmt(quantile(s.changes, 0.99))} ms` : '–',
    ),
  );
  out.push(row('peak RSS after the changes', (s) => (s.vmHwmAfterChangesKiB ? `${mib(s.vmHwmAfterChangesKiB)} MiB` : '–')));
  out.push(row('1-minute load average at the starts', (s) => s.starts.map((x) => x.loadAvg).join(', ')));
  out.push('');
  const top = sizes[sizes.length - 1];
  if (top.connect) {
    const m = (runs: BenchRun[], f: 'connect_median_us' | 'connect_p99_us') => median(runs.map((r) => r[f]));
    const rm = ratio(top.connect, 'connect_median_us');
    out.push(
      `TCP connect latency from a pod at ${int(top.services - 1)} Services (sl-probe bench, ${int(o.count)} connects × ${o.rounds} rounds, client on CPU 0): ` +
        `direct to a backend ${fmt(m(top.connect.direct, 'connect_median_us'))} µs median (p99 ${fmt(m(top.connect.direct, 'connect_p99_us'))}), ` +
        `through the VIP ${fmt(m(top.connect.sluice, 'connect_median_us'))} µs (p99 ${fmt(m(top.connect.sluice, 'connect_p99_us'))}); ` +
        `sluice/direct ${fmt(rm, 2)}× median, ${fmt(ratio(top.connect, 'connect_p99_us'), 2)}× p99 (target ≤ 1.10: ${rm <= 1.1 ? 'met' : '**missed**'}). ` +
        `Errors: ${top.connect.direct.reduce((n, r) => n + r.errors, 0) + top.connect.sluice.reduce((n, r) => n + r.errors, 0)}.`,
      '',
    );
  }
  if (top.changes.length) {
    out.push(
      `Watch event → map at ${int(top.services - 1)} Services: ${top.changes.length} single EndpointSlice changes (${top.changeTimeouts} not seen within 10 s); ` +
        `~21 ms of each is the agent's 20 ms coalescing timer.`,
      '',
    );
  }
  out.push(
    `First sync reports (last start of each size): ${sizes.map((s) => `\`${JSON.stringify(s.starts[s.starts.length - 1].synced)}\``).join(', ')}.`,
    '',
  );
  out.push(
    'Reproduce: `make all && BENCH_SCALE=1 node_modules/.bin/tsx test/bench/scale.ts` as root (options in its header).',
    '',
  );
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------
// main

async function main(): Promise<void> {
  const o = parseOpts(process.argv.slice(2));
  checkCanRun([SLUICE, PROBE, path.join(ROOT, 'build/dist/cli.js'), path.join(ROOT, 'build/libsluice.so')]);
  const cpus = os.cpus();
  const envInfo = machineInfo();
  progress(
    `kernel ${envInfo.kernel}, ${envInfo.cpus} CPUs, load ${loadAvg()}; sizes ${o.sizes.join(',')} × ${o.endpoints} endpoints, ${o.changes} changes, ${o.rounds} connect rounds`,
  );
  const env = await createLbEnv({ backends: 2 });
  const results: SizeResult[] = [];
  const servers: ChildProcess[] = [];
  try {
    // the measured servers on the other CPU than the client, alike for both modes
    for (const b of env.backends) {
      for (const port of [PORT_SLUICE, PORT_DIRECT]) {
        const child = env.node.spawn(
          [
            'taskset',
            '-c',
            String(Math.min(1, cpus.length - 1)),
            PROBE,
            'serve',
            '--proto',
            'tcp',
            '--addr',
            b.ipv4,
            '--port',
            String(port),
            '--id',
            b.name,
          ],
          { netnsPath: b.netnsPath, inCgroup: false },
        );
        servers.push(child);
        await env.node.waitForLine(child, 'ready');
      }
    }
    for (let k = 0; k < o.sizes.length; k++) results.push(await oneSize(env, o, o.sizes[k], k === o.sizes.length - 1));
  } finally {
    await destroyBenchEnv(env, progress);
  }
  const totalS = (Date.now() - t0Run) / 1000;
  const md = report(o, envInfo, results, totalS);
  writeReport(o.out, 'scale', md, { opts: o, env: envInfo, results, totalS }, progress, totalS);
}

runMain('bench-scale', main);
