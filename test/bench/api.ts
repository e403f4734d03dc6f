/* The API-mode benchmark (`make bench` runs it after run.ts, or `node_modules/.bin/tsx
 * test/bench/api.ts [options]` after `make all`; needs root). The agent follows the in-process
 * stand-in API server (test/harness/apiserver.ts) on a simulated node of the kernel-test harness,
 * running in this process's network namespace to reach it on 127.0.0.1. One run measures:
 *
 *  1. Initial sync of N Services / N×E endpoints (default 10,000 / 50,000; fake endpoint IPs from
 *     10.241.0.1, VIPs in 172.16.0.0/12: generate.ts) applied to the stand-in before the agent starts: from
 *     the arrival of the agent's first LIST request (the stand-in's request record) to the first
 *     full "services synced" log line, and to the agent's status reporting ready (what `sluice
 *     status` exits 0 on); the agent's peak RSS (VmHWM) right after. Several cold starts with
 *     `sluice uninstall` between them (fresh pins), medians reported.
 *  2. Watch event → map latency: with the agent synced at N services, one EndpointSlice at a time
 *     (a different Service each time) gets its first endpoint replaced by a new unique IP; t0 is
 *     just before api.apply(), t1 when this process, polling the pinned maps (LbMaps) about every
 *     0.5 ms, sees the new IP among the Service's backends. The next change waits for the previous
 *     one. Then bursts: B changes applied back to back, latency until all are visible.
 *  3. Repair of P running pods that predate the agent (bridge chain without sluice-cni, one
 *     `sleep` in each pod's netns inside the test cgroup, Pod objects with this node's name and
 *     the pods' IPs): the agent starts with repair-mode "repair" and a few Services; reported are
 *     the repair's own duration (the `ms` of "pods that predate the agent") and spans from the
 *     agent's log; all P must be listed by `sluice endpoint list -o json`. Repeated with a fresh
 *     state dir and fresh pins.
 *  A Markdown report on stdout and in build/bench/api.md (raw numbers in api.json).
 *
 * The stand-in runs in this process: its serving time (JSON of 40 pages of 500 objects, over TLS)
 * is inside the sync measurement, as a real API server's would be; the report gives this process's
 * event-loop busy time over each start to show how much. Status readiness is polled in-process on
 * the agent's socket every 10 ms (the harness's startAgent polls by starting the CLI every 50 ms,
 * each a Node start that competes with the agent for the CPUs); one `sluice status` confirms it.
 *
 * Options (`make bench BENCH_ARGS="--quick"`; run.ts's own options are accepted and ignored):
 *   --services 10000  --endpoints 5 (per Service)  --starts 3 (cold starts)
 *   --changes 1000 (single changes)  --bursts 100  --burst-size 10  --gap-ms 5 (pause after each)
 *   --pods 100  --repair-services 10  --repair-runs 3
 *   --pin AGENT_CPU,BENCH_CPU   pin the agent and this process (default: no pinning)
 *   --agent-node-flags FLAGS    run the agent as `node FLAGS build/dist/cli.js agent` (what bin/sluice
 *             runs), for diagnostics: "--trace-gc" (to the agent's stdout), "--cpu-prof --cpu-prof-dir=DIR"
 *             (written when the agent stops)
 *   --keep-logs   write the agents' stdout and stderr to the out dir (api-agent-<part>.log)
 *   --skip-sync (implies --skip-watch)  --skip-watch  --skip-repair  --out build/bench
 *   --quick   smoke run: 1,000 services, 1 start, 100 changes, 10 bursts, 20 pods, 1 repair run
 *
 * Safety: only the harness's `sltest-` namespaces and cgroup (createLbEnv); traffic only to the
 * stand-in on 127.0.0.1 and the agent's socket; nodes destroyed and the stand-in stopped in
 * `finally` (and on signals by the harness's exit handlers); every wait is bounded.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { FakeApiServer } from '../harness/apiserver';
import { run, sleep, type SimPod } from '../harness';
import { createLbEnv, ROOT, SLUICE, sluice, stopAgent, writeConfig, type LbEnv } from '../kernel/lb-env';
import { LbMaps } from '../../src/lb/maps';
import { endpointIp, serviceVip } from './generate';
import { intArg, parseOptions, pinArg, RUN_OPTIONS } from './args';
import {
  agentLogs,
  checkCanRun,
  destroyBenchEnv,
  fmt,
  int,
  loadAvg,
  logged,
  machineInfo,
  mapBackends,
  median,
  NODE,
  pause,
  procStatusKiB,
  progressLogger,
  quantile,
  runMain,
  serviceObj,
  sliceObj,
  spawnAgent as spawnAgentWith,
  table,
  tsOf,
  verdict,
  writeReport,
  yieldLoop,
  type AgentLog,
} from './lib';

// ---------------------------------------------------------------------------------------------
// options

interface Opts {
  services: number;
  endpoints: number;
  starts: number;
  changes: number;
  bursts: number;
  burstSize: number;
  gapMs: number;
  pods: number;
  repairServices: number;
  repairRuns: number;
  pin?: [number, number];
  /** node flags for the agent (diagnostics: --trace-gc, --cpu-prof ...) */
  agentNodeFlags?: string[];
  /** write the agents' stdout/stderr to the out dir */
  keepLogs: boolean;
  skipSync: boolean;
  skipWatch: boolean;
  skipRepair: boolean;
  quick: boolean;
  out: string;
}

/** api.ts's options, over run.ts's (make bench passes BENCH_ARGS to both; those of run.ts alone are ignored). */
const API_OPTIONS = {
  ...RUN_OPTIONS,
  services: { type: 'string' },
  endpoints: { type: 'string' },
  starts: { type: 'string' },
  changes: { type: 'string' },
  bursts: { type: 'string' },
  'burst-size': { type: 'string' },
  'gap-ms': { type: 'string' },
  pods: { type: 'string' },
  'repair-services': { type: 'string' },
  'repair-runs': { type: 'string' },
  'agent-node-flags': { type: 'string' },
  'keep-logs': { type: 'boolean' },
  'skip-watch': { type: 'boolean' },
  'skip-repair': { type: 'boolean' },
} as const;

function parseOpts(argv: string[]): Opts {
  // FLAGS start with a dash ("--trace-gc"), which parseArgs takes for a forgotten value: pass them
  // as --agent-node-flags=FLAGS, so the spaced form the header shows keeps working
  const i = argv.indexOf('--agent-node-flags');
  if (i >= 0 && i + 1 < argv.length) argv = [...argv.slice(0, i), `--agent-node-flags=${argv[i + 1]}`, ...argv.slice(i + 2)];
  const v = parseOptions(argv, API_OPTIONS, __filename);
  const quick = v.quick || process.env.BENCH_QUICK === '1';
  const services = intArg('--services', v.services ?? (quick ? 1000 : 10000), { min: 1, max: 100000 });
  const o: Opts = {
    services,
    endpoints: intArg('--endpoints', v.endpoints ?? 5, { min: 1, max: 64 }),
    starts: intArg('--starts', v.starts ?? (quick ? 1 : 3), { min: 1, max: 20 }),
    changes: intArg('--changes', v.changes ?? (quick ? 100 : 1000), { max: 100000 }),
    bursts: intArg('--bursts', v.bursts ?? (quick ? 10 : 100), { max: 10000 }),
    burstSize: intArg('--burst-size', v['burst-size'] ?? 10, { min: 1, max: Math.min(1000, services) }),
    gapMs: intArg('--gap-ms', v['gap-ms'] ?? 5, { max: 10000 }),
    pods: intArg('--pods', v.pods ?? (quick ? 20 : 100), { min: 1, max: 200 }), // one /24 per node, shared with the client pod
    repairServices: intArg('--repair-services', v['repair-services'] ?? 10, { min: 1, max: 1000 }),
    repairRuns: intArg('--repair-runs', v['repair-runs'] ?? (quick ? 1 : 3), { min: 1, max: 20 }),
    pin: v.pin === undefined ? undefined : pinArg('--pin', v.pin, { form: 'AGENT_CPU,BENCH_CPU' }),
    agentNodeFlags: v['agent-node-flags']?.split(/\s+/).filter(Boolean),
    keepLogs: v['keep-logs'] ?? false,
    skipSync: v['skip-sync'] ?? false,
    skipWatch: (v['skip-sync'] || v['skip-watch']) ?? false,
    skipRepair: v['skip-repair'] ?? false,
    quick,
    out: path.resolve(v.out ?? path.join(ROOT, 'build/bench')),
  };
  // the harness keeps the last 1 MiB of the agent's stderr: ~170 bytes per "services synced" line
  if (o.changes + 2 * o.bursts > 5000)
    throw new Error("at most 5,000 changes + 2 × bursts (the agent's log lines are read back)");
  const ips = o.services * o.endpoints + o.changes + o.bursts * o.burstSize;
  if (ips > 524288)
    throw new Error(
      `the fake endpoint IPs (${ips}: initial endpoints + one per change) must fit bpf-lb-backend-map-max (524,288)`,
    );
  return o;
}

// ---------------------------------------------------------------------------------------------
// helpers

const t0Run = Date.now();
const progress = progressLogger('bench-api', t0Run);

/** The VIP of Service i (generate.ts: 172.16.0.0/12). */
const vipFor = serviceVip;

/** Fake endpoint address idx (generate.ts: 10.241.0.1 upwards, outside every harness pod /24). */
const fakeIp = endpointIp;

function podObj(p: SimPod, node: string) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: p.name, namespace: p.namespace, uid: p.uid },
    spec: { nodeName: node, containers: [{ name: 'app', image: 'app' }] },
    status: { phase: 'Running', podIP: p.ipv4, podIPs: [{ ip: p.ipv4 }, ...(p.ipv6 ? [{ ip: p.ipv6 }] : [])] },
  };
}

/** Starts the agent in this process's netns (lib.ts), pinned and with node flags as the options say. */
function spawnAgent(env: LbEnv, o: Opts, timeoutMs = 60000): Promise<{ spawnAt: number; readyAt: number }> {
  const pin = o.pin ? ['taskset', '-c', String(o.pin[0])] : [];
  const cli = o.agentNodeFlags ? ['node', ...o.agentNodeFlags, path.join(ROOT, 'build/dist/cli.js')] : [SLUICE];
  return spawnAgentWith(env, timeoutMs, { command: [...pin, ...cli] });
}

interface Status {
  pid: number;
  ready: boolean;
  datapath?: { services: number; backends: number };
  endpoints: number;
  memory?: { rssMiB: number; heapUsedMiB: number };
}

async function cliStatus(env: LbEnv): Promise<Status> {
  const r = await sluice(env, ['status', '-o', 'json'], true);
  if (r.code !== 0) throw new Error(`sluice status exited ${r.code}: ${r.stdout.trim()}`);
  return JSON.parse(r.stdout) as Status;
}

/** With --keep-logs, the current agent's output goes to <out>/api-agent-<what>.log. */
function keepLogs(env: LbEnv, o: Opts, what: string): void {
  if (!o.keepLogs || !env.agent) return;
  const out = env.node.output(env.agent);
  fs.mkdirSync(o.out, { recursive: true });
  fs.writeFileSync(path.join(o.out, `api-agent-${what}.log`), `--- stdout\n${out.stdout}\n--- stderr\n${out.stderr}`);
}

async function restartFresh(env: LbEnv): Promise<void> {
  await stopAgent(env);
  await sluice(env, ['uninstall']);
}

// ---------------------------------------------------------------------------------------------
// part 1: initial sync from the stand-in

interface SyncStart {
  loadAvg: string;
  listRequests: number;
  spawnToFirstListMs: number;
  spawnToAttachedMs: number;
  /** first LIST arrival → "API server synced" (every kind listed, pages included) */
  listToApiSyncedMs: number;
  /** first LIST arrival → the arrival of the last page request */
  listToLastListMs: number;
  /** "API server synced" → first full "services synced" */
  apiSyncedToServicesSyncedMs: number;
  /** the ms field of "services synced" (tracker collect + map writes) */
  syncMs: number;
  listToServicesSyncedMs: number;
  listToReadyMs: number;
  spawnToReadyMs: number;
  /** this process's event-loop busy time from spawn to ready (the stand-in serving, mostly) */
  benchBusyMs: number;
  vmHwmKiB: number;
  vmRssKiB: number;
  rssAnonKiB: number;
  rssFileKiB: number;
  heapUsedMiB: number;
  synced: Record<string, unknown>;
}

interface SyncResult {
  services: number;
  endpoints: number;
  applyMs: number;
  starts: SyncStart[];
}

function applySyncObjects(api: FakeApiServer, o: Opts): { eps: string[][]; applyMs: number } {
  const t = performance.now();
  api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'default' } });
  const eps: string[][] = [];
  for (let i = 0; i < o.services; i++) {
    const ips = Array.from({ length: o.endpoints }, (_, j) => fakeIp(i * o.endpoints + j));
    eps.push(ips);
    api.apply(serviceObj(`svc-${i}`, vipFor(i)));
    api.apply(sliceObj(`svc-${i}`, ips));
  }
  return { eps, applyMs: performance.now() - t };
}

async function syncPart(api: FakeApiServer, env: LbEnv, o: Opts, eps: string[][]): Promise<SyncStart[]> {
  const starts: SyncStart[] = [];
  for (let k = 0; k < o.starts; k++) {
    if (k > 0) keepLogs(env, o, `sync-${k}`);
    await restartFresh(env); // fresh pins (and, the first time, nothing left from an earlier run)
    await sleep(k === 0 ? 200 : 1000);
    const load = loadAvg(3);
    const mark = api.requests.length;
    const elu0 = performance.eventLoopUtilization();
    const { spawnAt, readyAt } = await spawnAgent(env, o, Math.max(60000, o.services * 2));
    const elu = performance.eventLoopUtilization(elu0);
    const st = await cliStatus(env);
    const vmHwmKiB = procStatusKiB(st.pid, 'VmHWM');
    const vmRssKiB = procStatusKiB(st.pid, 'VmRSS');
    const rssAnonKiB = procStatusKiB(st.pid, 'RssAnon');
    const rssFileKiB = procStatusKiB(st.pid, 'RssFile');
    if (!st.ready) throw new Error('sluice status -o json says not ready');
    if (st.datapath?.services !== o.services)
      throw new Error(`agent programmed ${st.datapath?.services} services, expected ${o.services}`);
    const lists = api.requests.slice(mark).filter((r) => r.verb === 'list');
    if (lists.length === 0) throw new Error('the stand-in saw no LIST request');
    const firstList = Math.min(...lists.map((r) => r.at));
    const lastList = Math.max(...lists.map((r) => r.at));
    const logs = agentLogs(env);
    const synced = logged(logs, 'services synced', (l) => l.full === true);
    if (synced.failed !== 0) throw new Error(`agent failed to program ${String(synced.failed)} services`);
    const apiSynced = logged(logs, 'API server synced');
    const attached = logged(logs, 'datapath attached');
    // spot check: a few services hold exactly their endpoints
    const maps = LbMaps.open(env.node.pinDir);
    try {
      for (const i of [0, Math.floor(o.services / 2), o.services - 1]) {
        const got = (mapBackends(maps, vipFor(i)) ?? []).sort().join(',');
        if (got !== [...eps[i]].sort().join(','))
          throw new Error(`service ${i}: maps hold [${got}], expected [${eps[i].join(',')}]`);
      }
    } finally {
      maps.close();
    }
    const { ts: _ts, level: _lv, msg: _m, ...syncedFields } = synced;
    const s: SyncStart = {
      loadAvg: load,
      listRequests: lists.length,
      spawnToFirstListMs: firstList - spawnAt,
      spawnToAttachedMs: tsOf(attached) - spawnAt,
      listToApiSyncedMs: tsOf(apiSynced) - firstList,
      listToLastListMs: lastList - firstList,
      apiSyncedToServicesSyncedMs: tsOf(synced) - tsOf(apiSynced),
      syncMs: Number(synced.ms),
      listToServicesSyncedMs: tsOf(synced) - firstList,
      listToReadyMs: readyAt - firstList,
      spawnToReadyMs: readyAt - spawnAt,
      benchBusyMs: elu.active,
      vmHwmKiB,
      vmRssKiB,
      rssAnonKiB,
      rssFileKiB,
      heapUsedMiB: st.memory?.heapUsedMiB ?? NaN,
      synced: syncedFields,
    };
    starts.push(s);
    progress(
      `sync: start ${k + 1}/${o.starts}: first LIST → services synced ${s.listToServicesSyncedMs} ms (lists ${s.listToApiSyncedMs} ms, ` +
        `map sync ${s.syncMs} ms), → ready ${s.listToReadyMs} ms; VmHWM ${(vmHwmKiB / 1024).toFixed(0)} MiB; stand-in busy ${s.benchBusyMs.toFixed(0)} ms; load ${load}`,
    );
  }
  return starts;
}

// ---------------------------------------------------------------------------------------------
// part 2: watch event → map latency

interface WatchResult {
  loadAvgStart: string;
  loadAvgEnd: string;
  singles: number[];
  singleTimeouts: number;
  pollsPerChange: number;
  applyUs: number[];
  /** per single change, from its own "services synced" line (ms resolution) */
  parts: Array<{ latencyMs: number; toSyncStartMs: number; syncMs: number; syncStartToSeenMs: number; seenToLoggedMs: number }>;
  /** changes whose "services synced" line did not come within the bound, or came as several */
  unmatched: number;
  bursts: number[];
  burstTimeouts: number;
  /** "services synced" lines per burst (coalescing by the agent's 20 ms timer) */
  syncsPerBurst: number[];
  vmHwmBeforeKiB: number;
  vmHwmKiB: number;
}

const POLL_MS = 0.5;
const WAIT_LIMIT_MS = 10000;
const SYNC_MARK = '"msg":"services synced"';

function coprimeStride(n: number): number {
  const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));
  for (const p of [7919, 7907, 7901, 7883, 7879, 1]) if (gcd(p, n) === 1) return p;
  return 1;
}

/** Reads the agent's "services synced" lines as they come (the harness keeps the last 1 MiB of stderr). */
class SyncLines {
  private off: number;
  constructor(private readonly env: LbEnv) {
    this.off = this.text().length;
  }
  private text(): string {
    return this.env.node.output(this.env.agent!).stderr;
  }
  /** Complete lines logged since the last call. */
  take(): AgentLog[] {
    const s = this.text();
    if (s.length >= 1024 * 1024)
      throw new Error('the agent logged 1 MiB: the harness now drops the start of its stderr (use fewer --changes)');
    const out: AgentLog[] = [];
    for (;;) {
      const idx = s.indexOf(SYNC_MARK, this.off);
      if (idx < 0) break;
      const end = s.indexOf('\n', idx);
      if (end < 0) break; // not complete yet
      out.push(JSON.parse(s.slice(s.lastIndexOf('\n', idx) + 1, end)) as AgentLog);
      this.off = end + 1;
    }
    return out;
  }
  /** Waits (bounded) until pred accepts the lines logged since the last take(). */
  async waitFor(pred: (lines: AgentLog[]) => boolean, timeoutMs = 3000): Promise<AgentLog[]> {
    const t = performance.now();
    const lines: AgentLog[] = [];
    for (;;) {
      lines.push(...this.take());
      if (pred(lines) || performance.now() - t > timeoutMs) return lines;
      pause(POLL_MS);
      await yieldLoop();
    }
  }
}

async function watchPart(api: FakeApiServer, env: LbEnv, o: Opts, eps: string[][]): Promise<WatchResult> {
  const stride = coprimeStride(o.services);
  let seq = 0; // change number: picks the Service (a permutation of 0..N-1) and the new IP
  const next = () => {
    const i = (seq * stride + 13) % o.services;
    const ip = fakeIp(o.services * o.endpoints + seq);
    seq++;
    eps[i] = [ip, ...eps[i].slice(1)];
    return { i, ip, obj: sliceObj(`svc-${i}`, eps[i]) };
  };
  const r: WatchResult = {
    loadAvgStart: loadAvg(3),
    loadAvgEnd: '',
    singles: [],
    singleTimeouts: 0,
    pollsPerChange: 0,
    applyUs: [],
    parts: [],
    unmatched: 0,
    bursts: [],
    burstTimeouts: 0,
    syncsPerBurst: [],
    vmHwmBeforeKiB: procStatusKiB((await cliStatus(env)).pid, 'VmHWM'),
    vmHwmKiB: 0,
  };
  await sleep(1000); // let the start settle (GC, bookmarks)
  const maps = LbMaps.open(env.node.pinDir);
  const follow = new SyncLines(env);
  let polls = 0;
  try {
    for (let c = 0; c < o.changes; c++) {
      const ch = next();
      follow.take();
      const w0 = Date.now();
      const t0 = performance.now();
      api.apply(ch.obj);
      r.applyUs.push((performance.now() - t0) * 1000);
      let seen = false;
      while (performance.now() - t0 < WAIT_LIMIT_MS) {
        polls++;
        if (mapBackends(maps, vipFor(ch.i))?.includes(ch.ip)) {
          seen = true;
          break;
        }
        pause(POLL_MS);
        await yieldLoop();
      }
      const t1 = performance.now();
      const w1 = Date.now();
      if (!seen) {
        r.singleTimeouts++;
        progress(`watch: change ${c} (svc-${ch.i} → ${ch.ip}) not visible after ${WAIT_LIMIT_MS} ms`);
      } else r.singles.push(t1 - t0);
      // the next change waits for this one's sync to end (its log line), so they never overlap
      const lines = await follow.waitFor((ls) => ls.length > 0);
      if (seen && lines.length === 1) {
        const end = tsOf(lines[0]);
        const ms = Number(lines[0].ms);
        r.parts.push({
          latencyMs: t1 - t0,
          toSyncStartMs: end - ms - w0,
          syncMs: ms,
          syncStartToSeenMs: w1 - (end - ms),
          seenToLoggedMs: end - w1,
        });
      } else if (seen) r.unmatched++;
      if ((c + 1) % Math.max(1, Math.floor(o.changes / 4)) === 0)
        progress(
          `watch: ${c + 1}/${o.changes} single changes, median so far ${fmt(median(r.singles))} ms, max ${fmt(Math.max(...r.singles))} ms`,
        );
      if (o.gapMs) await sleep(o.gapMs);
    }
    r.pollsPerChange = polls / Math.max(1, o.changes);
    for (let b = 0; b < o.bursts; b++) {
      const chs = Array.from({ length: o.burstSize }, next);
      follow.take();
      const t0 = performance.now();
      for (const ch of chs) api.apply(ch.obj);
      let left = chs;
      while (left.length && performance.now() - t0 < WAIT_LIMIT_MS) {
        left = left.filter((ch) => !mapBackends(maps, vipFor(ch.i))?.includes(ch.ip));
        if (!left.length) break;
        pause(POLL_MS);
        await yieldLoop();
      }
      const t1 = performance.now();
      if (left.length) {
        r.burstTimeouts++;
        progress(`watch: burst ${b}: ${left.length} of ${o.burstSize} changes not visible after ${WAIT_LIMIT_MS} ms`);
      } else r.bursts.push(t1 - t0);
      const lines = await follow.waitFor((ls) => ls.reduce((n, l) => n + Number(l.services), 0) >= o.burstSize);
      r.syncsPerBurst.push(lines.length);
      await sleep(Math.max(o.gapMs, 10));
    }
    r.vmHwmKiB = procStatusKiB((await cliStatus(env)).pid, 'VmHWM');
  } finally {
    maps.close();
  }
  r.loadAvgEnd = loadAvg(3);
  return r;
}

// ---------------------------------------------------------------------------------------------
// part 3: repair of running pods

interface RepairRun {
  loadAvg: string;
  /** the ms field of "pods that predate the agent" */
  repairMs: number;
  candidates: number;
  repaired: number;
  notFound: number;
  /** "API server synced" → "pods that predate the agent" */
  apiSyncedToRepairedMs: number;
  /** "services synced" → "pods that predate the agent" */
  servicesSyncedToRepairedMs: number;
  /** repair start (report ts - ms) → first pod registered: the /proc scan */
  scanMs: number;
  /** first → last pod registered */
  registerMs: number;
  spawnToReadyMs: number;
  listed: number;
  /** requests to the stand-in other than list/watch during the run (write-back, GETs) */
  otherRequests: number;
}

interface RepairResult {
  pods: number;
  services: number;
  addPodsMs: number;
  /** context: reading /proc/<pid>/net/tcp and tcp6 of one pod's process, once each, median of 20 (ms) */
  procNetTcpMs: number;
  runs: RepairRun[];
}

async function repairPart(o: Opts, node: string): Promise<RepairResult> {
  const api = await FakeApiServer.start({});
  let env: LbEnv | undefined;
  try {
    env = await createLbEnv({ backends: 0 });
    const stateDir = path.join(env.node.workDir, 'state');
    const kubeconfig = api.kubeconfig(path.join(env.node.workDir, 'kubeconfig'));
    writeConfig(env, { 'k8s-kubeconfig': kubeconfig, 'node-name': node, 'state-dir': stateDir, 'repair-mode': 'repair' });
    api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'default' } });
    for (let i = 0; i < o.repairServices; i++) {
      api.apply(serviceObj(`svc-${i}`, vipFor(i)));
      api.apply(
        sliceObj(
          `svc-${i}`,
          Array.from({ length: 5 }, (_, j) => fakeIp(i * 5 + j)),
        ),
      );
    }
    progress(`repair: creating ${o.pods} pods (bridge chain, no sluice-cni), one sleep in each, load ${loadAvg(3)}`);
    const t = Date.now();
    const pods: SimPod[] = [];
    let firstPid = 0;
    for (let p = 0; p < o.pods; p++) {
      const pod = await env.node.addPod(`rp-${p}`);
      pods.push(pod);
      const c = env.node.spawn(['sleep', '600'], { netnsPath: pod.netnsPath }); // in the test cgroup
      firstPid ||= c.pid ?? 0;
      api.apply(podObj(pod, node));
    }
    const addPodsMs = Date.now() - t;
    api.apply(podObj(env.client, 'elsewhere')); // another node's pod: not a candidate
    progress(`repair: ${o.pods} pods in ${addPodsMs} ms`);
    await sleep(300); // the sleeps are in their namespaces
    // context for the repair's per-pod cost: the kernel walks its whole TCP hash tables (all
    // namespaces) for every read of /proc/<pid>/net/tcp{,6}, however few sockets the pod has
    const reads: number[] = [];
    for (let k = 0; k < 20 && firstPid; k++) {
      const t0 = performance.now();
      for (const f of ['tcp', 'tcp6']) fs.readFileSync(`/proc/${firstPid}/net/${f}`, 'utf8');
      reads.push(performance.now() - t0);
    }
    const procNetTcpMs = median(reads);

    const runs: RepairRun[] = [];
    for (let k = 0; k < o.repairRuns; k++) {
      await restartFresh(env);
      fs.rmSync(stateDir, { recursive: true, force: true }); // forget the registrations: every pod predates the agent again
      await sleep(k === 0 ? 200 : 1000);
      const load = loadAvg(3);
      const mark = api.requests.length;
      const { spawnAt, readyAt } = await spawnAgent(env, o, Math.max(60000, o.services * 2));
      const logs = agentLogs(env);
      const rep = logged(logs, 'pods that predate the agent');
      const regs = logs.filter((l) => l.msg === 'pod predates the agent: registered and enrolled in place');
      const listedEps = JSON.parse((await sluice(env, ['endpoint', 'list', '-o', 'json'])).stdout) as Array<{
        name: string;
        namespace: string;
      }>;
      const names = new Set(listedEps.map((e) => `${e.namespace}/${e.name}`));
      const missing = pods.filter((p) => !names.has(`${p.namespace}/${p.name}`));
      if (missing.length)
        throw new Error(
          `repair: ${missing.length} pods not in sluice endpoint list (e.g. ${missing
            .slice(0, 5)
            .map((p) => p.name)
            .join(', ')})`,
        );
      const repEnd = tsOf(rep);
      const repMs = Number(rep.ms);
      const x: RepairRun = {
        loadAvg: load,
        repairMs: repMs,
        candidates: Number(rep.candidates),
        repaired: Array.isArray(rep.repaired) ? rep.repaired.length : NaN,
        notFound: Array.isArray(rep.notFound) ? rep.notFound.length : NaN,
        apiSyncedToRepairedMs: repEnd - tsOf(logged(logs, 'API server synced')),
        servicesSyncedToRepairedMs: repEnd - tsOf(logged(logs, 'services synced')),
        scanMs: regs.length ? tsOf(regs[0]) - (repEnd - repMs) : NaN,
        registerMs: regs.length ? tsOf(regs[regs.length - 1]) - tsOf(regs[0]) : NaN,
        spawnToReadyMs: readyAt - spawnAt,
        listed: pods.length - missing.length,
        otherRequests: api.requests.slice(mark).filter((q) => q.verb !== 'list' && q.verb !== 'watch').length,
      };
      runs.push(x);
      keepLogs(env, o, `repair-${k + 1}`);
      progress(
        `repair: run ${k + 1}/${o.repairRuns}: ${x.repaired} repaired in ${x.repairMs} ms (scan ${x.scanMs} ms, registering ${x.registerMs} ms), API synced → done ${x.apiSyncedToRepairedMs} ms; load ${load}`,
      );
    }
    return { pods: o.pods, services: o.repairServices, addPodsMs, procNetTcpMs, runs };
  } finally {
    if (env) await destroyBenchEnv(env, progress);
    await api.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// report

/** "median (min–max)" over runs, or the value alone for one run. */
function medRange(xs: number[], f: (v: number) => string): string {
  if (xs.length === 0) return 'n/a';
  return xs.length > 1 ? `${f(median(xs))} (${f(Math.min(...xs))}–${f(Math.max(...xs))})` : f(xs[0]);
}

function report(
  o: Opts,
  envInfo: Record<string, string>,
  sync: SyncResult | undefined,
  watch: WatchResult | undefined,
  repair: RepairResult | undefined,
  totalS: number,
): string {
  const out: string[] = [];
  out.push(`## sluice API-mode benchmark (${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC)`, '');
  out.push(
    `Kernel ${envInfo.kernel}, ${envInfo.cpus} CPUs (${envInfo.cpuModel}), ${envInfo.memory}, Node ${process.version}; the agent follows the in-process ` +
      `stand-in API server over HTTPS on 127.0.0.1 (this process also polls the maps and serves the stand-in); ` +
      `${o.pin ? `agent pinned to CPU ${o.pin[0]}, this process to CPU ${o.pin[1]}` : 'no CPU pinning'}. Total run time ${fmt(totalS / 60, 1)} min${o.quick ? ' (--quick)' : ''}. ` +
      `Load average (1, 5, 15 min) at the start: ${envInfo.loadStart}.`,
    '',
  );
  const rows: string[][] = [];
  const ms = (xs: number[], d = 0) => medRange(xs, (v) => `${d ? fmt(v, d) : int(v)} ms`);
  if (sync) {
    const S = sync.starts;
    const f = (g: (s: SyncStart) => number) => S.map(g);
    rows.push(
      [
        `**1. initial sync**, ${int(sync.services)} Services / ${int(sync.endpoints)} endpoints (${S.length} cold start${S.length > 1 ? 's' : ''}, median (range))`,
        '',
        '',
        '',
      ],
      [
        'first LIST arrives → first full "services synced" logged',
        ms(f((s) => s.listToServicesSyncedMs)),
        '≤ 2,000 ms',
        verdict(median(f((s) => s.listToServicesSyncedMs)) <= 2000),
      ],
      [
        'first LIST arrives → status ready (`sluice status` exits 0)',
        ms(f((s) => s.listToReadyMs)),
        '≤ 2,000 ms',
        verdict(median(f((s) => s.listToReadyMs)) <= 2000),
      ],
      [
        '  of which: first LIST → "API server synced" (all kinds listed, 500 per page)',
        ms(f((s) => s.listToApiSyncedMs)),
        '',
        '',
      ],
      ['  of which: first LIST → last page request arrives', ms(f((s) => s.listToLastListMs)), '', ''],
      ['  of which: "API server synced" → "services synced"', ms(f((s) => s.apiSyncedToServicesSyncedMs)), '', ''],
      [
        '  of which: map sync ("services synced" ms: collect + map writes)',
        ms(
          f((s) => s.syncMs),
          1,
        ),
        '',
        '',
      ],
      ["  stand-in busy (this process's event loop, spawn → ready)", ms(f((s) => s.benchBusyMs)), '', ''],
      [
        'LIST requests per start',
        medRange(
          f((s) => s.listRequests),
          int,
        ),
        '',
        '',
      ],
      ['agent spawn → first LIST arrives (Node start, datapath load + attach)', ms(f((s) => s.spawnToFirstListMs)), '', ''],
      ['agent spawn → status ready', ms(f((s) => s.spawnToReadyMs)), '', ''],
      [
        'peak RSS right after the sync (VmHWM)',
        medRange(
          f((s) => s.vmHwmKiB / 1024),
          (v) => `${fmt(v)} MiB`,
        ),
        '≤ 150 MiB',
        verdict(median(f((s) => s.vmHwmKiB / 1024)) <= 150),
      ],
      [
        'RSS right after the sync (VmRSS): anonymous + file-backed; V8 heap used',
        `${fmt(median(f((s) => s.vmRssKiB / 1024)))} MiB: ${fmt(median(f((s) => s.rssAnonKiB / 1024)))} + ${fmt(median(f((s) => s.rssFileKiB / 1024)))} MiB; heap ${fmt(median(f((s) => s.heapUsedMiB)), 0)} MiB`,
        '',
        '',
      ],
    );
  }
  if (watch) {
    const q = (xs: number[]) =>
      `${fmt(median(xs))} / ${fmt(quantile(xs, 0.9))} / ${fmt(quantile(xs, 0.99))} / ${fmt(Math.max(...xs))} ms`;
    const P = watch.parts;
    const p99 = quantile(watch.singles, 0.99);
    const slow = P.filter((x) => x.latencyMs >= p99);
    rows.push(
      [
        `**2. watch event → map updated**, agent synced at ${int(o.services)} Services (maps polled in-process every ~${POLL_MS} ms; ${fmt(watch.pollsPerChange)} polls per change)`,
        '',
        '',
        '',
      ],
      [
        `one EndpointSlice change at a time (${watch.singles.length} changes${watch.singleTimeouts ? `, ${watch.singleTimeouts} not seen in ${WAIT_LIMIT_MS / 1000} s` : ''}): median / p90 / p99 / max`,
        q(watch.singles),
        'p99 ≤ 50 ms',
        verdict(p99 <= 50 && watch.singleTimeouts === 0),
      ],
      [
        `  of which, from each change's own "services synced" line (ms resolution; ${P.length} matched${watch.unmatched ? `, ${watch.unmatched} not` : ''}): apply → sync starts (watch delivery, decode, store, 20 ms coalescing timer)`,
        q(P.map((x) => x.toSyncStartMs)),
        '',
        '',
      ],
      ['  of which: sync starts → new IP seen in the maps', q(P.map((x) => x.syncStartToSeenMs)), '', ''],
      ['  the sync\'s own time ("services synced" ms)', q(P.map((x) => x.syncMs)), '', ''],
      ['  of which after the change is visible (seen → "services synced" logged)', q(P.map((x) => x.seenToLoggedMs)), '', ''],
      [
        `  the slowest 1% (${slow.length} changes ≥ p99): median apply → sync start / sync start → seen / sync ms`,
        `${fmt(median(slow.map((x) => x.toSyncStartMs)))} / ${fmt(median(slow.map((x) => x.syncStartToSeenMs)))} / ${fmt(median(slow.map((x) => x.syncMs)))} ms`,
        '',
        '',
      ],
      [
        '  api.apply() itself (clone, watch event JSON, TLS write): median / p99',
        `${fmt(median(watch.applyUs), 0)} / ${fmt(quantile(watch.applyUs, 0.99), 0)} µs`,
        '',
        '',
      ],
      [
        `bursts of ${o.burstSize} changes applied at once (${watch.bursts.length} bursts${watch.burstTimeouts ? `, ${watch.burstTimeouts} incomplete` : ''}): until all visible, median / p90 / p99 / max`,
        q(watch.bursts),
        '',
        '',
      ],
      ['  "services synced" lines per burst: median (min–max)', medRange(watch.syncsPerBurst, int), '', ''],
      [
        'agent peak RSS (VmHWM) before → after the changes',
        `${fmt(watch.vmHwmBeforeKiB / 1024)} → ${fmt(watch.vmHwmKiB / 1024)} MiB`,
        '≤ 150 MiB',
        verdict(watch.vmHwmKiB / 1024 <= 150),
      ],
    );
  }
  if (repair) {
    const R = repair.runs;
    const f = (g: (r: RepairRun) => number) => R.map(g);
    rows.push(
      [
        `**3. repair** of ${repair.pods} running pods that predate the agent, ${repair.services} Services (${R.length} run${R.length > 1 ? 's' : ''}, fresh pins and state each)`,
        '',
        '',
        '',
      ],
      [
        'repair duration ("pods that predate the agent" ms)',
        ms(f((r) => r.repairMs)),
        '≤ 1,000 ms',
        verdict(median(f((r) => r.repairMs)) <= 1000),
      ],
      ['  of which: /proc scan (repair start → first pod registered)', ms(f((r) => r.scanMs)), '', ''],
      ['  of which: registering + enrolling (first → last pod)', ms(f((r) => r.registerMs)), '', ''],
      [
        '  per pod (first → last / (pods - 1))',
        ms(
          f((r) => r.registerMs / Math.max(1, r.repaired - 1)),
          1,
        ),
        '',
        '',
      ],
      [
        '  context: this process reading /proc/<pod pid>/net/tcp + tcp6 once (median of 20)',
        `${fmt(repair.procNetTcpMs, 2)} ms`,
        '',
        '',
      ],
      [
        '  requests to the stand-in other than list/watch during the start',
        medRange(
          f((r) => r.otherRequests),
          int,
        ),
        '',
        '',
      ],
      ['"API server synced" → repair done', ms(f((r) => r.apiSyncedToRepairedMs)), '', ''],
      ['"services synced" → repair done', ms(f((r) => r.servicesSyncedToRepairedMs)), '', ''],
      [
        'pods repaired / candidates / not found / in `sluice endpoint list`',
        R.map((r) => `${r.repaired}/${r.candidates}/${r.notFound}/${r.listed}`).join(', '),
        `${repair.pods} listed`,
        verdict(R.every((r) => r.listed === repair.pods && r.repaired === repair.pods)),
      ],
      ['agent spawn → status ready', ms(f((r) => r.spawnToReadyMs)), '', ''],
    );
  }
  out.push(table(['measurement', 'value', 'target', ''], rows, 1), '');
  const loads: string[] = [];
  if (sync) loads.push(`sync starts: ${sync.starts.map((s) => s.loadAvg.split(' ')[0]).join(', ')}`);
  if (watch)
    loads.push(`watch part: ${watch.loadAvgStart.split(' ')[0]} at its start, ${watch.loadAvgEnd.split(' ')[0]} at its end`);
  if (repair) loads.push(`repair runs: ${repair.runs.map((r) => r.loadAvg.split(' ')[0]).join(', ')}`);
  out.push(
    `1-minute load average ${loads.join('; ')} (the machine may be shared; the agent and this process together keep up to 2 CPUs busy during a sync).`,
    '',
  );
  if (sync) {
    out.push(
      `Objects applied to the stand-in in ${int(sync.applyMs)} ms. First full sync reports: ${sync.starts.map((s) => `\`${JSON.stringify(s.synced)}\``).join(', ')}.`,
      '',
    );
  }
  if (repair)
    out.push(`The ${repair.pods} pods took ${fmt(repair.addPodsMs / 1000)} s to create (bridge + host-local, sequentially).`, '');
  out.push(
    'Reproduce: `make all && node_modules/.bin/tsx test/bench/api.ts` as root (`--quick` for a smoke run; options in the header of test/bench/api.ts).',
    '',
  );
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------
// main

async function main(): Promise<void> {
  const o = parseOpts(process.argv.slice(2));
  checkCanRun([SLUICE, path.join(ROOT, 'build/dist/cli.js'), path.join(ROOT, 'build/libsluice.so')]);
  if (o.pin) await run(['taskset', '-a', '-pc', String(o.pin[1]), String(process.pid)]);
  const envInfo: Record<string, string> = { ...machineInfo(), loadStart: loadAvg(3) };
  progress(
    `kernel ${envInfo.kernel}, ${envInfo.cpus} CPUs, load ${envInfo.loadStart}; ${o.services} services × ${o.endpoints}, ${o.starts} starts, ${o.changes} changes, ${o.bursts}×${o.burstSize} bursts, ${o.pods} pods`,
  );

  let sync: SyncResult | undefined;
  let watch: WatchResult | undefined;
  let repair: RepairResult | undefined;
  if (!o.skipSync) {
    // history bigger than what is applied: the stand-in trims its watch history by shifting an
    // array, which at 60,000 applies past a 10,000 limit costs seconds of its own
    const api = await FakeApiServer.start({ historyLimit: 4 * (o.services * 2 + o.changes + o.bursts * o.burstSize) + 1000 });
    let env: LbEnv | undefined;
    try {
      env = await createLbEnv({ backends: 0 });
      const kubeconfig = api.kubeconfig(path.join(env.node.workDir, 'kubeconfig'));
      writeConfig(env, { 'k8s-kubeconfig': kubeconfig, 'node-name': NODE, 'state-dir': path.join(env.node.workDir, 'state') });
      progress(`node ${env.node.id}; applying ${o.services} Services and EndpointSlices to the stand-in`);
      const { eps, applyMs } = applySyncObjects(api, o);
      progress(`applied in ${applyMs.toFixed(0)} ms; load ${loadAvg(3)}`);
      const starts = await syncPart(api, env, o, eps);
      sync = { services: o.services, endpoints: o.services * o.endpoints, applyMs, starts };
      if (o.skipWatch) keepLogs(env, o, `sync-${o.starts}`);
      if (!o.skipWatch) {
        progress(`watch: ${o.changes} single changes, then ${o.bursts} bursts of ${o.burstSize}; load ${loadAvg(3)}`);
        watch = await watchPart(api, env, o, eps);
        keepLogs(env, o, 'watch');
        progress(
          `watch: single median ${fmt(median(watch.singles))} ms, p99 ${fmt(quantile(watch.singles, 0.99))} ms, max ${fmt(Math.max(...watch.singles))} ms; ` +
            `bursts median ${fmt(median(watch.bursts))} ms, p99 ${fmt(quantile(watch.bursts, 0.99))} ms`,
        );
      }
    } finally {
      if (env) await destroyBenchEnv(env, progress);
      await api.stop();
    }
  }
  if (!o.skipRepair) repair = await repairPart(o, NODE);

  const totalS = (Date.now() - t0Run) / 1000;
  const md = report(o, envInfo, sync, watch, repair, totalS);
  writeReport(o.out, 'api', md, { opts: o, env: envInfo, sync, watch, repair, totalS }, progress, totalS);
}

runMain('bench-api', main);
