/* What the benchmarks (run.ts, api.ts, scale.ts) share: progress lines, statistics, the agent's
 * log and /proc figures, starting the agent in this process's netns, reading the pinned LB maps,
 * the stand-in API server's objects, Markdown helpers and the preamble and ending of a run.
 * Nothing here measures on its own; each benchmark decides what it times.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { sleep } from '../harness';
import { PROBE, SLUICE, sluice, stopAgent, TCP_PORT, type LbEnv } from '../kernel/lb-env';
import { callAgent } from '../../src/agent/local-api';
import type { LbMaps } from '../../src/lb/maps';
import { IPPROTO_TCP } from '../../src/bpf/layout';

/** The port of the benchmarks' Services. */
export const SVC_PORT = 80;
/** The measured Service's VIP, the same at every size (see run.ts's header); outside generate.ts's VIP range, so never generated for others. */
export const MEASURED_VIP = '10.250.255.254';
/** The node name the agent is given in API mode. */
export const NODE = 'bench-node';

// ---------------------------------------------------------------------------------------------
// progress and the end of a run

/** A progress logger to stderr: `[tag +Ns] msg`, N seconds since t0. */
export function progressLogger(tag: string, t0: number): (msg: string) => void {
  return (msg) => process.stderr.write(`[${tag} +${((Date.now() - t0) / 1000).toFixed(0)}s] ${msg}\n`);
}

/** Runs a benchmark's main; on failure prints `<tag> failed: <stack>` and exits 1. */
export function runMain(tag: string, main: () => Promise<void>): void {
  main().catch((e) => {
    process.stderr.write(`${tag} failed: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  });
}

/** Throws unless this process is root and every file of the build is there. */
export function checkCanRun(files: string[]): void {
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root (namespaces, cgroups, BPF)');
  for (const f of files) {
    if (!fs.existsSync(f)) throw new Error(`${f} is missing: run \`make all\` first`);
  }
}

/** The machine, for a report's first line. */
export function machineInfo(): { kernel: string; cpus: string; cpuModel: string; memory: string } {
  const cpus = os.cpus();
  return {
    kernel: os.release(),
    cpus: String(cpus.length),
    cpuModel: cpus[0]?.model?.trim() ?? 'unknown',
    memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB RAM`,
  };
}

/**
 * Tears a benchmark's node down: stops the agent, by default runs `sluice uninstall` (the pins),
 * destroys the node and reports what its cleanup could not do.
 */
export async function destroyBenchEnv(
  env: LbEnv,
  progress: (msg: string) => void,
  opts: { uninstall?: boolean } = {},
): Promise<void> {
  await stopAgent(env).catch(() => undefined);
  if (opts.uninstall ?? true) await sluice(env, ['uninstall'], true).catch(() => undefined);
  await env.node.destroy();
  if (env.node.destroyReport.length) progress(`cleanup warnings: ${env.node.destroyReport.join('; ')}`);
}

/** Writes <dir>/<name>.md and <name>.json, prints the report and says so. */
export function writeReport(
  dir: string,
  name: string,
  md: string,
  data: unknown,
  progress: (msg: string) => void,
  totalS: number,
): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, `${name}.md`), md);
  fs.writeFileSync(path.join(dir, `${name}.json`), JSON.stringify(data, null, 2) + '\n');
  process.stdout.write(md);
  progress(
    `done in ${fmt(totalS / 60, 1)} min; wrote ${path.relative(process.cwd(), path.join(dir, `${name}.md`))} and ${name}.json`,
  );
}

// ---------------------------------------------------------------------------------------------
// statistics and Markdown

/** The median; of an even count, the mean of the two middle values. */
export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  // nearest rank: the smallest value with at least q of the samples at or below it
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

export const fmt = (v: number, digits = 1) => (Number.isFinite(v) ? v.toFixed(digits) : 'n/a');
export const int = (v: number) => (Number.isFinite(v) ? Math.round(v).toLocaleString('en-US') : 'n/a');
export const verdict = (ok: boolean) => (ok ? 'met' : '**missed**');

/** A Markdown table; the first `left` columns are left-aligned, the others right-aligned. */
export function table(head: string[], rows: string[][], left = 1): string {
  const align = head.map((_, i) => (i < left ? ' --- ' : ' ---: '));
  return [`| ${head.join(' | ')} |`, `|${align.join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

// ---------------------------------------------------------------------------------------------
// /proc

/** The first n load averages of /proc/loadavg (1, 5, 15 min), space-separated. */
export function loadAvg(n = 1): string {
  return fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, n).join(' ');
}

export function procStatusKiB(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]);
}

// ---------------------------------------------------------------------------------------------
// the agent

export interface AgentLog {
  ts?: string;
  msg?: string;
  [k: string]: unknown;
}

/** The JSON lines the current agent logged to stderr (none without an agent). */
export function agentLogs(env: LbEnv): AgentLog[] {
  if (!env.agent) return [];
  const out: AgentLog[] = [];
  for (const l of env.node.output(env.agent).stderr.split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      out.push(JSON.parse(l) as AgentLog);
    } catch {
      /* the first line may be cut by the harness's 1 MiB bound */
    }
  }
  return out;
}

/** The first line logged with msg (and accepted by pred); throws when there is none. */
export function logged(logs: AgentLog[], msg: string, pred: (l: AgentLog) => boolean = () => true): AgentLog {
  const l = logs.find((x) => x.msg === msg && pred(x));
  if (!l) throw new Error(`the agent did not log "${msg}"`);
  return l;
}

export const tsOf = (l: AgentLog): number => Date.parse(String(l.ts));

export const agentSocket = (env: LbEnv) => path.join(env.node.workDir, 'agent.sock');

/**
 * Starts the agent as the harness's startAgent({ inTestNetns: true }) does (outside the test
 * cgroup, in this process's netns), but polls readiness on the agent's socket in-process every
 * 10 ms instead of starting the CLI. Returns the spawn time and the first time status said ready.
 * Options: `command`, what runs `agent --config …` (default: bin/sluice).
 */
export async function spawnAgent(
  env: LbEnv,
  timeoutMs: number,
  opts: { command?: string[] } = {},
): Promise<{ spawnAt: number; readyAt: number }> {
  env.agentInTestNetns = true;
  const spawnAt = Date.now();
  const agent = env.node.spawn([...(opts.command ?? [SLUICE]), 'agent', '--config', env.configPath], {
    inCgroup: false,
    netnsPath: `/proc/${process.pid}/ns/net`,
  });
  env.agent = agent;
  const deadline = spawnAt + timeoutMs;
  for (;;) {
    const out = env.node.output(agent);
    if (out.exited) throw new Error(`agent exited (${out.exitCode ?? out.signal}): ${out.stderr.slice(-2000)}`);
    try {
      const st = (await callAgent(agentSocket(env), { op: 'status' }, 2000)) as { ready: boolean };
      if (st.ready) return { spawnAt, readyAt: Date.now() };
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Error(`agent not ready after ${timeoutMs} ms: ${out.stderr.slice(-2000)}`);
    await sleep(10);
  }
}

/** The backend IPs the pinned maps hold for the frontend vip:80/TCP (undefined: no service entry). */
export function mapBackends(maps: LbMaps, vip: string): string[] | undefined {
  const key = { vip, port: SVC_PORT, proto: IPPROTO_TCP, slot: 0 };
  const head = maps.svc.get(key);
  if (!head) return undefined;
  const ips: string[] = [];
  for (let slot = 1; slot <= head.count; slot++) {
    const v = maps.svc.get({ ...key, slot });
    const b = v && maps.backend.get(v.id);
    if (b) ips.push(b.ip);
  }
  return ips;
}

/** Blocks this thread for about `ms` without spinning (the event loop is stalled meanwhile). */
const waitCell = new Int32Array(new SharedArrayBuffer(4));
export function pause(ms: number): void {
  Atomics.wait(waitCell, 0, 0, ms);
}
export const yieldLoop = () => new Promise<void>((r) => setImmediate(r));

// ---------------------------------------------------------------------------------------------
// objects for the stand-in API server

/** A ClusterIP Service with one TCP port `http` (80 → targetPort). */
export function serviceObj(name: string, vip: string, targetPort = TCP_PORT) {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'default' },
    spec: { clusterIP: vip, clusterIPs: [vip], ports: [{ name: 'http', port: SVC_PORT, targetPort, protocol: 'TCP' }] },
  };
}

/** The one IPv4 EndpointSlice of a Service, every endpoint ready. */
export function sliceObj(service: string, ips: string[], port = TCP_PORT) {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${service}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
    ports: [{ name: 'http', port, protocol: 'TCP' }],
  };
}

// ---------------------------------------------------------------------------------------------
// sl-probe

/**
 * Runs `sl-probe bench` from the client pod, inside the test cgroup (the sluice programs apply
 * when attached), and returns the JSON it printed last. Options: `concurrency` (default: sl-probe's),
 * `cpu`, the CPU to pin the client to (default: not pinned).
 */
export async function slProbeBench<T>(
  env: LbEnv,
  addr: string,
  port: number,
  o: { count: number; warmup: number; concurrency?: number; cpu?: number },
): Promise<T> {
  const args = [
    ...(o.cpu !== undefined ? ['taskset', '-c', String(o.cpu)] : []),
    PROBE,
    'bench',
    '--addr',
    addr,
    '--port',
    String(port),
    '--count',
    String(o.count),
    '--warmup',
    String(o.warmup),
    ...(o.concurrency !== undefined ? ['--concurrency', String(o.concurrency)] : []),
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
  if (!line) throw new Error(`sl-probe bench ${addr}:${port} printed no result (exit ${r.code}): ${r.stderr.trim()}`);
  return JSON.parse(line) as T;
}
