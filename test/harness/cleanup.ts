/*
 * Host plumbing for the kernel-test harness: where cgroup2 and bpffs are, and
 * synchronous best-effort removal of everything the harness creates (names
 * prefixed `sltest-`). Everything here is synchronous so it can also run from
 * process 'exit' / signal handlers.
 */

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** Every name the harness creates starts with this. */
export const PREFIX = 'sltest-';
/** A node id: PREFIX + 6 hex digits; pod netns names are `<id>-<pod>`. */
export const ID_RE = /^(sltest-[0-9a-f]{6})(?:-|$)/;

export const NETNS_DIR = '/var/run/netns';
export const BPFFS_DIR = '/sys/fs/bpf';
const OWNER_FILE = 'owner.json';

interface MountEntry {
  source: string;
  target: string;
  fstype: string;
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

function readMounts(): MountEntry[] {
  return fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const f = l.split(' ');
      return { source: unescapeMount(f[0]), target: unescapeMount(f[1]), fstype: f[2] };
    });
}

/** Mount point of the cgroup2 hierarchy: the first /proc/mounts line with fstype cgroup2. */
export function findCgroup2Mount(): string {
  const m = readMounts().find((e) => e.fstype === 'cgroup2');
  if (!m) throw new Error('no cgroup2 mount in /proc/mounts');
  return m.target;
}

/** True when a bpf filesystem is mounted at /sys/fs/bpf. */
export function bpffsMounted(): boolean {
  return readMounts().some((e) => e.target === BPFFS_DIR && e.fstype === 'bpf');
}

/** Mounts bpffs at /sys/fs/bpf unless one is there already (serialised with flock against concurrent runs). */
export function ensureBpffs(): void {
  if (bpffsMounted()) return;
  fs.mkdirSync(BPFFS_DIR, { recursive: true });
  execFileSync(
    'flock',
    [
      '-w',
      '10',
      '/run/lock/sltest-bpffs.lock',
      'sh',
      '-c',
      `awk '$2 == "${BPFFS_DIR}" && $3 == "bpf" { f = 1 } END { exit !f }' /proc/mounts || mount -t bpf bpf ${BPFFS_DIR}`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], timeout: 15000 },
  );
  if (!bpffsMounted()) throw new Error(`bpffs is still not mounted at ${BPFFS_DIR}`);
}

/** Sleeps synchronously (for the cleanup paths that must not yield). */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function procStartTime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** Records in <workDir>/owner.json which live process owns a node, so concurrent runs don't sweep each other. */
export function writeOwner(workDir: string): void {
  fs.writeFileSync(
    path.join(workDir, OWNER_FILE),
    JSON.stringify({ pid: process.pid, start: procStartTime(process.pid), created: new Date().toISOString() }),
  );
}

/** Whether the process that created node `id` is still alive (false when unknown). */
export function ownerAlive(id: string): boolean {
  try {
    const o = JSON.parse(fs.readFileSync(path.join(os.tmpdir(), id, OWNER_FILE), 'utf8')) as { pid: number; start?: string };
    if (typeof o.pid !== 'number') return false;
    const start = procStartTime(o.pid);
    return start !== undefined && (o.start === undefined || o.start === start);
  } catch {
    return false;
  }
}

function assertOurs(p: string): void {
  if (!path.basename(p).startsWith(PREFIX)) throw new Error(`refusing to touch ${p}: not an ${PREFIX}* name`);
}

function killPidsSync(pids: number[]): void {
  for (const pid of pids) {
    if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid || pid === process.ppid) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

function readPids(file: string): number[] {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function cgroupTreeEmpty(dir: string): boolean {
  if (readPids(path.join(dir, 'cgroup.procs')).length > 0) return false;
  let subs: fs.Dirent[] = [];
  try {
    subs = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return true;
  }
  return subs.filter((d) => d.isDirectory()).every((d) => cgroupTreeEmpty(path.join(dir, d.name)));
}

function killCgroupTree(dir: string): void {
  let subs: fs.Dirent[] = [];
  try {
    subs = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return;
  }
  try {
    fs.writeFileSync(path.join(dir, 'cgroup.kill'), '1'); // kills the whole subtree (kernel >= 5.14)
  } catch {
    /* older kernel: by hand below */
  }
  killPidsSync(readPids(path.join(dir, 'cgroup.procs')));
  for (const d of subs) if (d.isDirectory()) killCgroupTree(path.join(dir, d.name));
}

function rmdirCgroupTree(dir: string): void {
  let subs: fs.Dirent[] = [];
  try {
    subs = fs.readdirSync(dir, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  for (const d of subs) if (d.isDirectory()) rmdirCgroupTree(path.join(dir, d.name));
  fs.rmdirSync(dir);
}

/** Kills every process in the cgroup (and its sub-cgroups) and waits until they are gone. */
export function killCgroupSync(dir: string, timeoutMs = 3000): void {
  assertOurs(dir);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    killCgroupTree(dir);
    if (cgroupTreeEmpty(dir)) return;
    if (Date.now() >= deadline) {
      throw new Error(`cgroup ${dir} still has processes: ${readPids(path.join(dir, 'cgroup.procs')).join(' ')}`);
    }
    sleepSync(25);
  }
}

/**
 * Kills every process in the cgroup (and its sub-cgroups) and removes the
 * directories, retrying for up to timeoutMs. Throws when it could not.
 */
export function removeCgroupSync(dir: string, timeoutMs = 3000): void {
  assertOurs(dir);
  if (!fs.existsSync(dir)) return;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    killCgroupTree(dir);
    if (cgroupTreeEmpty(dir)) {
      try {
        rmdirCgroupTree(dir);
        return;
      } catch (e) {
        if (Date.now() >= deadline) throw new Error(`rmdir ${dir}: ${(e as Error).message}`);
      }
    } else if (Date.now() >= deadline) {
      throw new Error(`cgroup ${dir} still has processes: ${readPids(path.join(dir, 'cgroup.procs')).join(' ')}`);
    }
    sleepSync(50);
  }
}

/** Kills the processes inside a named netns and deletes it (no-op when absent). */
export function deleteNetnsSync(name: string): void {
  assertOurs(name);
  if (!fs.existsSync(path.join(NETNS_DIR, name))) return;
  try {
    const out = execFileSync('ip', ['netns', 'pids', name], {
      encoding: 'utf8',
      timeout: 10000,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    killPidsSync(out.split(/\s+/).filter(Boolean).map(Number));
  } catch {
    /* no pids, or not readable */
  }
  execFileSync('ip', ['netns', 'delete', name], { timeout: 10000, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** rm -rf (works on bpffs too: unpinning maps, programs and links). Throws when something remains. */
export function rmrfSync(p: string): void {
  assertOurs(p);
  fs.rmSync(p, { recursive: true, force: true, maxRetries: 3, retryDelay: 50 });
  if (fs.existsSync(p)) throw new Error(`${p} still exists after rm -rf`);
}

/** Lists the netns names under /var/run/netns. */
export function listNetns(): string[] {
  try {
    return fs.readdirSync(NETNS_DIR);
  } catch {
    return [];
  }
}

function listPrefixed(dir: string): string[] {
  try {
    return fs.readdirSync(dir).filter((n) => n.startsWith(PREFIX));
  } catch {
    return [];
  }
}

export interface SweepReport {
  removed: string[];
  /** Left alone because their creating process is still alive. */
  skipped: string[];
  errors: string[];
}

/**
 * Removes leftovers of earlier (crashed) runs: netns named sltest-*, cgroup dirs
 * <cgroup2>/sltest-* (processes killed first), /sys/fs/bpf/sltest-* and
 * <tmpdir>/sltest-*. Resources of a node whose creating process is still alive
 * are skipped unless `all` is set, so concurrent test runs don't break each other.
 */
export function sweepStaleSync(opts: { all?: boolean } = {}): SweepReport {
  const rep: SweepReport = { removed: [], skipped: [], errors: [] };
  const stale = (name: string): boolean => {
    if (opts.all) return true;
    const m = ID_RE.exec(name);
    if (m && ownerAlive(m[1])) {
      rep.skipped.push(name);
      return false;
    }
    return true;
  };
  const attempt = (what: string, fn: () => void) => {
    try {
      fn();
      rep.removed.push(what);
    } catch (e) {
      rep.errors.push(`${what}: ${(e as Error).message}`);
    }
  };

  let cg2: string | undefined;
  try {
    cg2 = findCgroup2Mount();
  } catch (e) {
    rep.errors.push((e as Error).message);
  }

  // Processes first (they hold netns, links and maps), then the netns, pins, cgroups, temp dirs.
  const cgroups = cg2 ? listPrefixed(cg2).filter(stale) : [];
  for (const n of cgroups) {
    try {
      killCgroupTree(path.join(cg2!, n));
    } catch {
      /* reported by removal below */
    }
  }
  for (const n of listNetns()
    .filter((x) => x.startsWith(PREFIX))
    .filter(stale)) {
    attempt(`netns ${n}`, () => deleteNetnsSync(n));
  }
  if (bpffsMounted()) {
    for (const n of listPrefixed(BPFFS_DIR).filter(stale)) attempt(`${BPFFS_DIR}/${n}`, () => rmrfSync(path.join(BPFFS_DIR, n)));
  }
  for (const n of cgroups) attempt(`${cg2}/${n}`, () => removeCgroupSync(path.join(cg2!, n)));
  for (const n of listPrefixed(os.tmpdir()).filter(stale)) {
    attempt(`${os.tmpdir()}/${n}`, () => rmrfSync(path.join(os.tmpdir(), n)));
  }
  return rep;
}

/** Async wrapper of sweepStaleSync; logs what it removed and what failed. */
export async function sweepStale(opts: { all?: boolean; quiet?: boolean } = {}): Promise<SweepReport> {
  const rep = sweepStaleSync(opts);
  if (!opts.quiet && rep.removed.length) console.warn(`[sltest] swept stale: ${rep.removed.join(', ')}`);
  if (rep.errors.length) console.warn(`[sltest] sweep errors: ${rep.errors.join('; ')}`);
  return rep;
}
