/*
 * A simulated Kubernetes node for kernel tests: its own network namespace with
 * a bridge (made by the reference `bridge` CNI plugin), pods as further network
 * namespaces wired by a CNI chain, a cgroup2 directory that the pods' and
 * clients' processes join, a bpffs directory and a work directory. All names
 * start with `sltest-`; destroy() (and the exit/signal handlers) remove them.
 */

import { type ChildProcess, execFileSync, spawn as cpSpawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cniAdd, cniDel, type CniConfList, type CniRuntimeConf } from './cni';
import {
  BPFFS_DIR,
  deleteNetnsSync,
  ensureBpffs,
  findCgroup2Mount,
  killCgroupSync,
  listNetns,
  NETNS_DIR,
  removeCgroupSync,
  rmrfSync,
  writeOwner,
} from './cleanup';
import { run, type RunResult, sleep, waitFor } from './exec';

export const DEFAULT_CNI_BIN_DIR = '/usr/lib/cni';
export const BRIDGE_NAME = 'slbr0';

export interface SimPod {
  name: string;
  namespace: string;
  /** Kubernetes-style pod UID (passed as K8S_POD_UID). */
  uid: string;
  containerId: string;
  netnsName: string;
  netnsPath: string;
  /** Pod interface name inside its netns ('eth0'). */
  ifName: string;
  ipv4: string;
  ipv6?: string;
  /** The final CNI ADD result of the pod's conflist. */
  result: any;
  /** The conflist the pod was added with (kept for CHECK/DEL). */
  conflist: CniConfList;
  /** The runtime conf the pod was added with (kept for CHECK/DEL). */
  runtimeConf: CniRuntimeConf;
}

export interface SpawnOpts {
  /** Network namespace to run in; default: the node's netns. */
  netnsPath?: string;
  /** Join the node's test cgroup (default true). */
  inCgroup?: boolean;
  uid?: number;
  gid?: number;
  /** Merged over process.env. */
  env?: Record<string, string>;
}

export interface AddPodOpts {
  /** Default 'default'. */
  namespace?: string;
  /** Appended to the conflist after bridge. */
  extraPlugins?: object[];
  /** Prepended to /usr/lib/cni for finding the plugins (and CNI_PATH). */
  binDirs?: string[];
  /** Extra CNI_ARGS (after the K8S_* ones). */
  extraArgs?: Record<string, string>;
  /** Extra environment for the plugin processes. */
  env?: Record<string, string>;
}

export interface ChildOutput {
  stdout: string;
  stderr: string;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  exited: boolean;
}

export interface SimNode {
  /** Short random id, e.g. 'sltest-3fa9c2'; prefix of every resource name of the node. */
  id: string;
  /** The node's own netns: `<id>-node`, at /var/run/netns/<id>-node. Holds the bridge slbr0 (gateway addresses). */
  netnsName: string;
  netnsPath: string;
  /** Fresh dir <cgroup2 mount>/<id>; spawned processes join it (unless inCgroup: false). Attach cgroup programs here. */
  cgroupPath: string;
  /** Fresh dir /sys/fs/bpf/<id>, for pins of the code under test. */
  pinDir: string;
  /** Fresh dir <tmpdir>/<id>: configs, k8s objects, host-local data (ipam/), logs. */
  workDir: string;
  cidr4: string;
  cidr6?: string;
  /** The bridge's addresses (first host of each range). */
  gateway4: string;
  gateway6?: string;
  pods: SimPod[];
  /** Warnings collected by destroy() (leftovers it could not remove, links still attached, ...); [] when clean. */
  destroyReport: string[];
  /** Creates netns `<id>-<name>` and runs loopback (lo) then the bridge chain (eth0) in the node netns. */
  addPod(name: string, opts?: AddPodOpts): Promise<SimPod>;
  /** Kills children spawned in the pod's netns, CNI DEL (chain, then loopback), deletes the netns. Throws on DEL errors (after cleaning up). */
  removePod(pod: SimPod): Promise<void>;
  /** Starts a long-running process (cgroup, then netns, then optional setpriv). Its pid is the command's pid. */
  spawn(cmd: string[], opts?: SpawnOpts): ChildProcess;
  /** Runs a command to completion like spawn() would start it; throws on non-zero exit unless allowFail. */
  exec(cmd: string[], opts?: SpawnOpts & { timeoutMs?: number; allowFail?: boolean }): Promise<RunResult>;
  /**
   * Resolves with the first stdout line of a spawned child that matches (substring or RegExp), looking at the
   * output from the start (lines printed before the call count); rejects with the captured stderr when the
   * child exits first or after timeoutMs (default 10000).
   */
  waitForLine(child: ChildProcess, pattern: RegExp | string, timeoutMs?: number): Promise<string>;
  /** What a spawned child printed so far (last 1 MiB of each stream) and whether it exited. */
  output(child: ChildProcess): ChildOutput;
  /** Removes everything (idempotent, never throws; problems go to destroyReport and stderr). */
  destroy(): Promise<void>;
}

export interface CreateNodeOpts {
  /** Default true. */
  ipv6?: boolean;
  /** Default 10.<rand>.<rand>.0/24. */
  cidr4?: string;
  /** Default fd00:<rand>::/64 (only when ipv6). */
  cidr6?: string;
}

// ---------------------------------------------------------------------------
// address helpers

function parseIPv4(s: string): number {
  const p = s.split('.').map((x) => Number(x));
  if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) throw new Error(`bad IPv4 address ${s}`);
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
}

function fmtIPv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

function parseIPv6(s: string): bigint {
  let str = s;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(str);
  if (v4) {
    const n = parseIPv4(v4[1]);
    str = str.slice(0, -v4[1].length) + `${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const halves = str.split('::');
  if (halves.length > 2) throw new Error(`bad IPv6 address ${s}`);
  const head = halves[0] ? halves[0].split(':') : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(':') : [];
  const fill = halves.length === 2 ? 8 - head.length - tail.length : 0;
  const groups = [...head, ...Array(fill).fill('0'), ...tail];
  if (groups.length !== 8 || groups.some((g) => !/^[0-9a-fA-F]{1,4}$/.test(g))) throw new Error(`bad IPv6 address ${s}`);
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n);
}

function fmtIPv6(n: bigint): string {
  const g: string[] = [];
  for (let i = 7; i >= 0; i--) g.push(((n >> BigInt(i * 16)) & 0xffffn).toString(16));
  // compress the longest run of zero groups
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return g.join(':');
  return `${g.slice(0, best).join(':')}::${g.slice(best + bestLen).join(':')}`;
}

/** True when ip (v4 or v6, without prefix length) is inside cidr. */
export function ipInCidr(ip: string, cidr: string): boolean {
  const [net, lenStr] = cidr.split('/');
  const len = Number(lenStr);
  if (net.includes(':') !== ip.includes(':')) return false;
  if (ip.includes(':')) {
    const mask = len === 0 ? 0n : ((1n << 128n) - 1n) ^ ((1n << BigInt(128 - len)) - 1n);
    return (parseIPv6(ip) & mask) === (parseIPv6(net) & mask);
  }
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  return (parseIPv4(ip) & mask) >>> 0 === (parseIPv4(net) & mask) >>> 0;
}

/** The first host address of a subnet (host-local's default gateway). */
export function firstHost(cidr: string): string {
  const [net, lenStr] = cidr.split('/');
  const len = Number(lenStr);
  if (net.includes(':')) {
    const mask = len === 0 ? 0n : ((1n << 128n) - 1n) ^ ((1n << BigInt(128 - len)) - 1n);
    return fmtIPv6((parseIPv6(net) & mask) + 1n);
  }
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  return fmtIPv4((((parseIPv4(net) & mask) >>> 0) + 1) >>> 0);
}

// ---------------------------------------------------------------------------
// process plumbing

const MAX_KEEP = 1024 * 1024;
const MAX_LINES = 50000;

/* Joins the cgroup (when $1 is set), then the netns, then execs the command (so the child pid is the command's). */
const WRAPPER =
  'cg="$1"; ns="$2"; shift 2; ' +
  'if [ -n "$cg" ]; then echo $$ > "$cg/cgroup.procs" || { echo "sltest: cannot join cgroup $cg" >&2; exit 126; }; fi; ' +
  'exec nsenter --net="$ns" -- "$@"';

interface ChildRec {
  stdout: string;
  stderr: string;
  lines: string[];
  partial: string;
  exited: boolean;
  closed: boolean;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  netnsPath: string;
  events: EventEmitter;
}

function appendBounded(buf: string, d: string): string {
  const s = buf + d;
  return s.length > MAX_KEEP ? s.slice(s.length - MAX_KEEP) : s;
}

function nsRun(netnsPath: string, cmd: string[], timeoutMs = 20000, allowFail = false): Promise<RunResult> {
  return run(['nsenter', `--net=${netnsPath}`, '--', ...cmd], { timeoutMs, allowFail });
}

async function disableDad(netnsPath: string): Promise<void> {
  await nsRun(netnsPath, ['sysctl', '-q', '-w', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0']);
}

/** Waits until no IPv6 address in the netns is tentative (and fails on dadfailed). */
async function waitNoTentative(netnsPath: string, timeoutMs = 5000): Promise<void> {
  await waitFor(
    `IPv6 addresses to leave the tentative state in ${netnsPath}`,
    async () => {
      const r = await nsRun(netnsPath, ['ip', '-6', '-o', 'addr', 'show'], 5000);
      if (/dadfailed/.test(r.stdout)) throw new Error(`IPv6 DAD failed: ${r.stdout}`);
      return !/tentative/.test(r.stdout);
    },
    timeoutMs,
    25,
  );
}

function log(msg: string): void {
  process.stderr.write(`[sltest] ${msg}\n`);
}

// ---------------------------------------------------------------------------
// the node

const liveNodes = new Set<Node>();
let handlersInstalled = false;

function destroyAllSync(): void {
  for (const n of [...liveNodes]) {
    try {
      n.destroySync();
    } catch (e) {
      log(`emergency cleanup of ${n.id} failed: ${(e as Error).message}`);
    }
  }
}

function onSignal(sig: NodeJS.Signals): void {
  destroyAllSync();
  process.removeListener(sig, onSignal);
  // Keep the default behaviour (die by the signal) unless someone else handles it.
  if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
}

function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', destroyAllSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as NodeJS.Signals[]) process.on(sig, onSignal);
}

class Node implements SimNode {
  readonly netnsName: string;
  readonly netnsPath: string;
  readonly cgroupPath: string;
  readonly pinDir: string;
  readonly workDir: string;
  cidr4 = '';
  cidr6?: string;
  gateway4 = '';
  gateway6?: string;
  pods: SimPod[] = [];
  destroyReport: string[] = [];

  private children = new Map<ChildProcess, ChildRec>();
  private destroying?: Promise<void>;
  private created = { netns: false, cgroup: false, pinDir: false, workDir: false };
  /** nsfs inode numbers of every netns this node created (for the leftover-link check). */
  private netnsInos = new Set<number>();

  constructor(
    readonly id: string,
    cgroup2: string,
  ) {
    this.netnsName = `${id}-node`;
    this.netnsPath = path.join(NETNS_DIR, this.netnsName);
    this.cgroupPath = path.join(cgroup2, id);
    this.pinDir = path.join(BPFFS_DIR, id);
    this.workDir = path.join(os.tmpdir(), id);
  }

  async init(opts: CreateNodeOpts): Promise<void> {
    // workDir first: its owner.json keeps concurrent sweeps off our resources.
    fs.mkdirSync(this.workDir, { mode: 0o755 });
    this.created.workDir = true;
    writeOwner(this.workDir);
    fs.mkdirSync(path.join(this.workDir, 'ipam'));

    fs.mkdirSync(this.cgroupPath);
    this.created.cgroup = true;
    fs.mkdirSync(this.pinDir);
    this.created.pinDir = true;

    // 10.16.x.x .. 10.239.x.x, never 10.96/10.97: the tests' Service VIPs and externalIPs live
    // there, and a pod range inside them would make a pod IP match a VIP range
    let a = 16 + (randomBytes(1)[0] % 224);
    if (a === 96 || a === 97) a += 2;
    const b = randomBytes(1)[0];
    this.cidr4 = opts.cidr4 ?? `10.${a}.${b}.0/24`;
    if (!/^\d+\.\d+\.\d+\.\d+\/\d+$/.test(this.cidr4)) throw new Error(`bad cidr4 ${this.cidr4}`);
    this.gateway4 = firstHost(this.cidr4);
    if (opts.ipv6 ?? true) {
      this.cidr6 = opts.cidr6 ?? `fd00:${((a << 8) | b).toString(16)}::/64`;
      if (!/^[0-9a-fA-F:]+\/\d+$/.test(this.cidr6)) throw new Error(`bad cidr6 ${this.cidr6}`);
      this.gateway6 = firstHost(this.cidr6);
    }

    await run(['ip', 'netns', 'add', this.netnsName]);
    this.created.netns = true;
    this.noteNetns(this.netnsPath);
    await nsRun(this.netnsPath, ['ip', 'link', 'set', 'lo', 'up']);
    if (this.cidr6) await disableDad(this.netnsPath);
  }

  private noteNetns(p: string): void {
    const ino = inode(p);
    if (ino !== undefined) this.netnsInos.add(ino);
  }

  private checkAlive(): void {
    if (this.destroying) throw new Error(`node ${this.id} is destroyed`);
  }

  private conflist(extraPlugins: object[]): CniConfList {
    const ranges: object[][] = [[{ subnet: this.cidr4 }]];
    const routes: object[] = [{ dst: '0.0.0.0/0' }];
    if (this.cidr6) {
      ranges.push([{ subnet: this.cidr6 }]);
      routes.push({ dst: '::/0' });
    }
    return {
      cniVersion: '1.0.0',
      name: this.id,
      plugins: [
        {
          type: 'bridge',
          bridge: BRIDGE_NAME,
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: { type: 'host-local', dataDir: path.join(this.workDir, 'ipam'), ranges, routes },
        },
        ...(extraPlugins as CniConfList['plugins']),
      ],
    };
  }

  private loConflist(): CniConfList {
    return { cniVersion: '1.0.0', name: 'cni-loopback', plugins: [{ type: 'loopback' }] };
  }

  async addPod(name: string, opts: AddPodOpts = {}): Promise<SimPod> {
    this.checkAlive();
    if (!/^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$/.test(name)) throw new Error(`bad pod name ${JSON.stringify(name)}`);
    if (name === 'node') throw new Error(`pod name 'node' is reserved`);
    if (this.pods.some((p) => p.name === name)) throw new Error(`pod ${name} exists already`);
    const namespace = opts.namespace ?? 'default';
    const netnsName = `${this.id}-${name}`;
    const netnsPath = path.join(NETNS_DIR, netnsName);
    const containerId = randomBytes(32).toString('hex');
    const uid = randomUUID();
    const conflist = this.conflist(opts.extraPlugins ?? []);
    const rt: CniRuntimeConf = {
      containerId,
      netns: netnsPath,
      ifName: 'eth0',
      args: {
        K8S_POD_NAMESPACE: namespace,
        K8S_POD_NAME: name,
        K8S_POD_INFRA_CONTAINER_ID: containerId,
        K8S_POD_UID: uid,
        ...(opts.extraArgs ?? {}),
      },
      binDirs: [...(opts.binDirs ?? []), DEFAULT_CNI_BIN_DIR],
      runInNetns: this.netnsPath,
      env: opts.env,
    };
    const loRt: CniRuntimeConf = { ...rt, ifName: 'lo' };

    await run(['ip', 'netns', 'add', netnsName]);
    this.noteNetns(netnsPath);
    let loAdded = false;
    let mainAdded = false;
    try {
      if (this.cidr6) await disableDad(netnsPath);
      await cniAdd(this.loConflist(), loRt);
      loAdded = true;
      mainAdded = true; // from here a failed ADD still needs a DEL (as runtimes do)
      const result = await cniAdd(conflist, rt);
      const ips: { address: string }[] = Array.isArray(result.ips) ? result.ips : [];
      const ipv4 = ips.map((i) => i.address.split('/')[0]).find((a) => !a.includes(':'));
      const ipv6 = ips.map((i) => i.address.split('/')[0]).find((a) => a.includes(':'));
      if (!ipv4) throw new Error(`pod ${name}: CNI result has no IPv4 address: ${JSON.stringify(result)}`);
      if (this.cidr6 && !ipv6) throw new Error(`pod ${name}: CNI result has no IPv6 address: ${JSON.stringify(result)}`);
      if (this.cidr6) {
        await waitNoTentative(netnsPath);
        await waitNoTentative(this.netnsPath);
      }
      const pod: SimPod = {
        name,
        namespace,
        uid,
        containerId,
        netnsName,
        netnsPath,
        ifName: 'eth0',
        ipv4,
        ipv6,
        result,
        conflist,
        runtimeConf: rt,
      };
      this.pods.push(pod);
      return pod;
    } catch (e) {
      if (mainAdded) await cniDel(conflist, rt).catch((d) => log(`DEL after failed ADD of ${name}: ${(d as Error).message}`));
      if (loAdded) await cniDel(this.loConflist(), loRt).catch(() => undefined);
      try {
        deleteNetnsSync(netnsName);
      } catch (d) {
        log(`deleting netns ${netnsName}: ${(d as Error).message}`);
      }
      throw e;
    }
  }

  async removePod(pod: SimPod): Promise<void> {
    const idx = this.pods.indexOf(pod);
    if (idx < 0) return;
    this.pods.splice(idx, 1);
    const errors: string[] = [];
    // Processes in the pod's netns keep it (and its veth) alive: stop them first.
    await this.killChildren([...this.children].filter(([, r]) => r.netnsPath === pod.netnsPath).map(([c]) => c));
    try {
      await cniDel(pod.conflist, pod.runtimeConf, pod.result);
    } catch (e) {
      errors.push((e as Error).message);
    }
    try {
      await cniDel(this.loConflist(), { ...pod.runtimeConf, ifName: 'lo' });
    } catch (e) {
      errors.push((e as Error).message);
    }
    try {
      deleteNetnsSync(pod.netnsName);
    } catch (e) {
      errors.push(`deleting netns ${pod.netnsName}: ${(e as Error).message}`);
    }
    if (errors.length) throw new Error(`removePod ${pod.name}: ${errors.join('\n')}`);
  }

  private wrap(cmd: string[], opts: SpawnOpts): string[] {
    if (cmd.length === 0) throw new Error('empty command');
    const priv: string[] = [];
    if (opts.uid !== undefined || opts.gid !== undefined) {
      priv.push('setpriv');
      if (opts.uid !== undefined) priv.push(`--reuid=${opts.uid}`);
      const gid = opts.gid ?? opts.uid;
      if (gid !== undefined) priv.push(`--regid=${gid}`);
      priv.push('--clear-groups', '--');
    }
    const cg = (opts.inCgroup ?? true) ? this.cgroupPath : '';
    return ['/bin/sh', '-c', WRAPPER, 'sh', cg, opts.netnsPath ?? this.netnsPath, ...priv, ...cmd];
  }

  spawn(cmd: string[], opts: SpawnOpts = {}): ChildProcess {
    this.checkAlive();
    const argv = this.wrap(cmd, opts);
    const child = cpSpawn(argv[0], argv.slice(1), {
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true, // own process group, so destroy() can signal the whole group
    });
    const rec: ChildRec = {
      stdout: '',
      stderr: '',
      lines: [],
      partial: '',
      exited: false,
      closed: false,
      exitCode: null,
      signal: null,
      netnsPath: opts.netnsPath ?? this.netnsPath,
      events: new EventEmitter(),
    };
    rec.events.setMaxListeners(0);
    this.children.set(child, rec);
    child.stdin!.on('error', () => undefined);
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      rec.stdout = appendBounded(rec.stdout, d);
      const parts = (rec.partial + d).split('\n');
      rec.partial = parts.pop()!;
      if (rec.partial.length > MAX_KEEP) rec.partial = rec.partial.slice(-MAX_KEEP);
      for (const l of parts) {
        const line = l.replace(/\r$/, '');
        rec.lines.push(line);
        if (rec.lines.length > MAX_LINES) rec.lines.shift();
        rec.events.emit('line', line);
      }
    });
    child.stderr!.on('data', (d: string) => {
      rec.stderr = appendBounded(rec.stderr, d);
    });
    child.on('error', (err) => {
      rec.stderr = appendBounded(rec.stderr, `[spawn error: ${err.message}]\n`);
      rec.exited = true;
      rec.closed = true;
      rec.events.emit('close');
    });
    child.on('exit', (code, signal) => {
      rec.exited = true;
      rec.exitCode = code;
      rec.signal = signal;
    });
    child.on('close', (code, signal) => {
      rec.exited = true;
      rec.exitCode ??= code;
      rec.signal ??= signal;
      if (rec.partial) {
        rec.lines.push(rec.partial);
        rec.events.emit('line', rec.partial);
        rec.partial = '';
      }
      rec.closed = true;
      rec.events.emit('close');
    });
    return child;
  }

  output(child: ChildProcess): ChildOutput {
    const r = this.children.get(child);
    if (!r) throw new Error('output: not a child spawned by this node');
    return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode, signal: r.signal, exited: r.exited };
  }

  async exec(cmd: string[], opts: SpawnOpts & { timeoutMs?: number; allowFail?: boolean } = {}): Promise<RunResult> {
    this.checkAlive();
    return run(this.wrap(cmd, opts), { env: opts.env, timeoutMs: opts.timeoutMs, allowFail: opts.allowFail });
  }

  waitForLine(child: ChildProcess, pattern: RegExp | string, timeoutMs = 10000): Promise<string> {
    const rec = this.children.get(child);
    if (!rec) return Promise.reject(new Error('waitForLine: not a child spawned by this node'));
    const matches = (l: string) =>
      typeof pattern === 'string' ? l.includes(pattern) : new RegExp(pattern.source, pattern.flags.replace('g', '')).test(l);
    const hit = rec.lines.find(matches);
    if (hit !== undefined) return Promise.resolve(hit);
    const desc = () =>
      `pid ${child.pid}, exit ${rec.exitCode ?? '-'}${rec.signal ? ` (${rec.signal})` : ''}` +
      `\n--- stderr (tail) ---\n${rec.stderr.slice(-8000)}\n--- stdout (tail) ---\n${rec.stdout.slice(-4000)}`;
    if (rec.closed) return Promise.reject(new Error(`process exited before printing a line matching ${pattern}: ${desc()}`));
    return new Promise<string>((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        rec.events.removeListener('line', onLine);
        rec.events.removeListener('close', onClose);
      };
      const onLine = (l: string) => {
        if (matches(l)) {
          cleanup();
          resolve(l);
        }
      };
      const onClose = () => {
        cleanup();
        reject(new Error(`process exited before printing a line matching ${pattern}: ${desc()}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for a line matching ${pattern}: ${desc()}`));
      }, timeoutMs);
      rec.events.on('line', onLine);
      rec.events.once('close', onClose);
    });
  }

  /** SIGTERM to each child's process group, SIGKILL after 2 s. */
  private async killChildren(list: ChildProcess[]): Promise<void> {
    const signal = (c: ChildProcess, sig: NodeJS.Signals) => {
      if (!c.pid) return;
      try {
        process.kill(-c.pid, sig);
      } catch {
        try {
          c.kill(sig);
        } catch {
          /* gone */
        }
      }
    };
    const running = list.filter((c) => !this.children.get(c)?.closed);
    for (const c of running) signal(c, 'SIGTERM');
    const deadline = Date.now() + 2000;
    while (running.some((c) => !this.children.get(c)?.exited) && Date.now() < deadline) await sleep(25);
    for (const c of running) if (!this.children.get(c)?.exited) signal(c, 'SIGKILL');
    const hard = Date.now() + 2000;
    while (running.some((c) => !this.children.get(c)?.closed) && Date.now() < hard) await sleep(25);
    // Descendants may still hold the process group after the leader died.
    for (const c of running) signal(c, 'SIGKILL');
    for (const c of list) {
      const r = this.children.get(c);
      if (r?.closed) {
        c.stdin?.destroy();
        c.stdout?.destroy();
        c.stderr?.destroy();
      }
    }
  }

  destroy(): Promise<void> {
    this.destroying ??= this.doDestroy();
    return this.destroying;
  }

  private warn(msg: string): void {
    this.destroyReport.push(msg);
    log(`${this.id}: ${msg}`);
  }

  private async doDestroy(): Promise<void> {
    const step = async (what: string, fn: () => Promise<void> | void) => {
      try {
        await fn();
      } catch (e) {
        this.warn(`${what}: ${(e as Error).message}`);
      }
    };
    await step('killing children', () => this.killChildren([...this.children.keys()]));
    for (const pod of [...this.pods].reverse()) await step(`removing pod ${pod.name}`, () => this.removePod(pod));
    if (this.created.cgroup) {
      await step('reporting cgroup attachments', async () => {
        if (!fs.existsSync(this.cgroupPath)) return;
        const r = await run(['bpftool', '-j', 'cgroup', 'show', this.cgroupPath], { allowFail: true, timeoutMs: 5000 });
        const progs = r.code === 0 && r.stdout.trim() ? (JSON.parse(r.stdout) as unknown[]) : [];
        if (progs.length) {
          log(
            `${this.id}: BPF programs still attached to ${this.cgroupPath} at destroy (released with the cgroup): ${r.stdout.trim()}`,
          );
        }
      });
    }
    this.destroySync(true);
  }

  /** The synchronous part of destroy (also the emergency path from exit/signal handlers). */
  destroySync(fromDestroy = false): void {
    const step = (what: string, fn: () => void) => {
      try {
        fn();
      } catch (e) {
        const msg = `${what}: ${(e as Error).message}`;
        if (fromDestroy) this.warn(msg);
        else log(`${this.id}: ${msg}`);
      }
    };
    this.destroying ??= Promise.resolve();
    // Identities of what BPF objects may be attached to, to check afterwards that nothing stays attached.
    const cgroupId = inode(this.cgroupPath);
    const netnsInos = [...this.netnsInos];

    for (const [c, r] of this.children) {
      if (!r.closed && c.pid) step(`killing pid ${c.pid}`, () => process.kill(-c.pid!, 'SIGKILL'));
    }
    if (this.created.cgroup) step('killing cgroup processes', () => killCgroupSync(this.cgroupPath));
    for (const p of this.pods) step(`deleting netns ${p.netnsName}`, () => deleteNetnsSync(p.netnsName));
    this.pods = [];
    // Stray pod namespaces of this node (e.g. an interrupted addPod).
    for (const n of listNetns().filter((x) => x.startsWith(`${this.id}-`) && x !== this.netnsName)) {
      step(`deleting netns ${n}`, () => deleteNetnsSync(n));
    }
    if (this.created.pinDir) {
      step(`removing ${this.pinDir}`, () => {
        const left = listTree(this.pinDir);
        rmrfSync(this.pinDir);
        if (left.length) log(`${this.id}: unpinned ${left.length} object(s) left in ${this.pinDir}: ${left.join(' ')}`);
      });
    }
    if (this.created.netns) step(`deleting netns ${this.netnsName}`, () => deleteNetnsSync(this.netnsName));
    if (this.created.cgroup) step(`removing ${this.cgroupPath}`, () => removeCgroupSync(this.cgroupPath));
    if (this.created.workDir) step(`removing ${this.workDir}`, () => rmrfSync(this.workDir));
    if (fromDestroy) this.checkLinksGone(cgroupId, netnsInos);
    liveNodes.delete(this);
  }

  /**
   * Reports bpf links that still point at our cgroup or netns after everything
   * was removed (someone outside the node still holds them).
   */
  private checkLinksGone(cgroupId: number | undefined, netnsInos: number[]): void {
    let links: { id: number; type?: string; cgroup_id?: number; netns_ino?: number }[];
    try {
      const out = execFileSync('bpftool', ['-j', 'link', 'show'], {
        encoding: 'utf8',
        timeout: 5000,
        stdio: ['ignore', 'pipe', 'ignore'],
      });
      links = JSON.parse(out.trim() || '[]');
    } catch {
      return; // bpftool missing
    }
    const ours = links.filter(
      (l) =>
        (cgroupId !== undefined && l.cgroup_id === cgroupId) || (l.netns_ino !== undefined && netnsInos.includes(l.netns_ino)),
    );
    if (ours.length) {
      this.warn(
        `bpf links still attached to this node's cgroup/netns after destroy: ${ours.map((l) => `${l.id}(${l.type})`).join(' ')}`,
      );
    }
  }
}

function inode(p: string): number | undefined {
  try {
    return fs.statSync(p).ino;
  } catch {
    return undefined;
  }
}

function listTree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, depth: number) => {
    if (depth > 16) return;
    let ents: fs.Dirent[] = [];
    try {
      ents = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of ents) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p, depth + 1);
      else out.push(path.relative(dir, p));
    }
  };
  walk(dir, 0);
  return out;
}

/** Creates a simulated node (netns, cgroup, pin dir, work dir). Destroy it with node.destroy(). */
export async function createNode(opts: CreateNodeOpts = {}): Promise<SimNode> {
  ensureBpffs();
  const cg2 = findCgroup2Mount();
  let node: Node | undefined;
  for (let i = 0; i < 5 && !node; i++) {
    const id = `sltest-${randomBytes(3).toString('hex')}`;
    if (!fs.existsSync(path.join(os.tmpdir(), id)) && !fs.existsSync(path.join(cg2, id))) node = new Node(id, cg2);
  }
  if (!node) throw new Error('could not pick a free node id');
  installExitHandlers();
  liveNodes.add(node);
  try {
    await node.init(opts);
  } catch (e) {
    await node.destroy();
    throw e;
  }
  return node;
}

/** Synchronously destroys every node of this process that is still alive (what the exit handlers do). */
export function destroyAllNodesSync(): void {
  destroyAllSync();
}
