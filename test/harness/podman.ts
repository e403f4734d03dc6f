/*
 * A throwaway podman (Debian's 4.3, CNI backend) for kernel tests, bound to a simulated node:
 *
 *  - podman itself always runs inside the node's network namespace (nsenter), because its CNI
 *    backend executes the plugins in podman's own namespace and the bridge plugin creates its
 *    bridge there. It is never run in the machine's namespace, not even to clean up.
 *  - Everything it keeps lives under <node.workDir>/podman: storage (--root, vfs driver, so no
 *    overlay mounts), run root, tmp dir (locks as files, not in /dev/shm), events log, and its
 *    containers.conf (network_backend "cni" — podman 4.3 has no --network-backend flag, and
 *    netavark is installed too — the given plugin dirs and config dir). CONTAINERS_CONF points
 *    there; podman hands it on to conmon, whose exit command (`podman container cleanup`, the
 *    CNI DEL when a container exits on its own) gets the other flags on its command line.
 *  - Containers get `--ipc none` (no shm tmpfs mounted on the host), `--cgroups no-conmon` and
 *    `--cgroup-parent /<node.id>/podman`: in cgroup2 that is inside the node's test cgroup, so the
 *    code under test sees them as the node's pods and node.destroy() kills them on any failure.
 *  - The OCI runtime is runc (Debian package runc) when installed: crun 1.8, podman's default,
 *    refuses to start anything on a hybrid cgroup machine whose cgroup2 mount offers a controller
 *    ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2"; here: hugetlb).
 *  - `--ulimit nofile=20000:20000 --ulimit nproc=1000:1000`: podman's default nofile limit is above
 *    the hard limit here and the runtime fails with EPERM setting it.
 *
 * What podman still writes outside the work dir, and destroy() removes: the container's network
 * namespace (/run/netns/netns-<uuid>, removed by `podman rm`), the runtime's state (/run/runc/<id>,
 * removed by `podman rm`; /run/runc itself only when it did not exist before), libcni's result cache
 * (/var/lib/cni/results/<network>-<id>-<if>, removed by `podman rm`), the cgroup v1 directories
 * under /sys/fs/cgroup/<controller>/<node.id>, and the image blob-info cache
 * /var/lib/containers/cache (written by `podman import` whatever --root says; removed only when
 * /var/lib/containers did not exist before). A process exit or signal runs the synchronous part
 * (no podman commands); sweepStalePodmanSync() removes what a SIGKILLed run left.
 */

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ID_RE, NETNS_DIR, ownerAlive, PREFIX } from './cleanup';
import { run, type RunResult } from './exec';
import type { SimNode } from './sim-node';

export const CNI_CACHE_DIR = '/var/lib/cni';
const BLOB_CACHE_ROOT = '/var/lib/containers';
const NETNS_NAME_RE = /^netns-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$/;

export interface PodmanOpts {
  /** podman's network_config_dir: the conflists it offers as networks (by their `name`). */
  networkConfigDir: string;
  /** Where podman (libcni) looks for plugins, in order. */
  cniPluginDirs: string[];
  /** The network used when `--network` is not given (so podman creates no default "podman" network). */
  defaultNetwork: string;
  /** Default: runc when installed, else podman's default. */
  runtime?: string;
}

export interface PodmanRunOpts {
  allowFail?: boolean;
  /** default 60000 */
  timeoutMs?: number;
}

export interface Podman {
  /** <node.workDir>/podman */
  dir: string;
  /** The OCI runtime in use ('' = podman's default). */
  runtime: string;
  /** Runs `podman <private global flags> ...args` in the node's netns. */
  podman(args: string[], opts?: PodmanRunOpts): Promise<RunResult>;
  /** Flags every `podman run/create` here needs (cgroup placement, ipc, ulimits). */
  runFlags(): string[];
  /** Builds a busybox rootfs (/bin/busybox + applet symlinks), tars it and `podman import`s it as ref. */
  importBusybox(ref: string, applets?: string[]): Promise<string>;
  /** `podman inspect` of one container; remembers its network namespace for the cleanup. */
  inspect(nameOrId: string): Promise<any>;
  /** Removes all containers (podman rm -f), then everything listed above. Never throws; returns the problems. */
  destroy(): Promise<string[]>;
}

function log(msg: string): void {
  process.stderr.write(`[sltest] ${msg}\n`);
}

function which(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    const p = path.join(dir, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}

/** True when the podman binary is installed. */
export function podmanInstalled(): boolean {
  return which('podman') !== undefined;
}

/** Mount points of the cgroup hierarchies (v1 controllers and name=systemd; with cgroup2 also its own). */
function cgroupMounts(withV2 = true): string[] {
  try {
    return fs
      .readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .map((l) => l.split(' '))
      .filter((f) => f[2] === 'cgroup' || (withV2 && f[2] === 'cgroup2'))
      .map((f) => f[1].replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
  } catch {
    return [];
  }
}

/** cgroup v1 at /sys/fs/cgroup with a cgroup2 mount that offers controllers (what crun 1.8 rejects). */
function hybridWithV2Controllers(): boolean {
  try {
    const v2 = fs
      .readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .map((l) => l.split(' '))
      .find((f) => f[2] === 'cgroup2');
    if (!v2 || v2[1] === '/sys/fs/cgroup') return false;
    return fs.readFileSync(path.join(v2[1], 'cgroup.controllers'), 'utf8').trim() !== '';
  } catch {
    return false;
  }
}

/** rmdir of a cgroup tree, deepest first; never kills (a busy cgroup is reported, not forced). */
function rmdirCgroupTree(dir: string): void {
  if (!path.basename(dir).startsWith(PREFIX) && !dir.includes(`/${PREFIX}`)) throw new Error(`refusing to touch ${dir}`);
  let subs: fs.Dirent[];
  try {
    subs = fs.readdirSync(dir, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  for (const d of subs) if (d.isDirectory()) rmdirCgroupTree(path.join(dir, d.name));
  fs.rmdirSync(dir);
}

/** Paths under `prefix` that are mount points. */
function mountsUnder(prefix: string): string[] {
  try {
    return fs
      .readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[1])
      .filter((t) => t !== undefined && (t === prefix || t.startsWith(prefix + '/')));
  } catch {
    return [];
  }
}

function deletePodmanNetnsSync(p: string): void {
  const name = path.basename(p);
  const dir = path.dirname(p);
  if ((dir !== NETNS_DIR && dir !== '/run/netns') || !NETNS_NAME_RE.test(name)) throw new Error(`refusing to delete netns ${p}`);
  if (!fs.existsSync(p)) return;
  execFileSync('ip', ['netns', 'delete', name], { timeout: 10000, stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * Removes libcni cache entries of networks named `<prefix>...`. With `orphans`, also what such an
 * entry names of a container whose run is gone: its netns (the result's sandbox paths) and the OCI
 * runtime's state directory.
 */
function removeCniCacheSync(namePrefix: string, problems: string[], orphans: boolean): void {
  const dir = path.join(CNI_CACHE_DIR, 'results');
  let files: string[] = [];
  try {
    files = fs.readdirSync(dir).filter((f) => f.startsWith(namePrefix));
  } catch {
    return;
  }
  for (const f of files) {
    const p = path.join(dir, f);
    try {
      if (orphans) {
        const entry = JSON.parse(fs.readFileSync(p, 'utf8'));
        const sandboxes = new Set<string>();
        for (const i of entry?.result?.interfaces ?? [])
          if (typeof i?.sandbox === 'string' && i.sandbox) sandboxes.add(i.sandbox);
        if (typeof entry?.netns === 'string' && entry.netns) sandboxes.add(entry.netns);
        for (const ns of sandboxes) deletePodmanNetnsSync(ns);
        const id = entry?.containerId;
        if (typeof id === 'string' && /^[0-9a-f]{64}$/.test(id)) {
          for (const rt of ['/run/runc', '/run/crun']) fs.rmSync(path.join(rt, id), { recursive: true, force: true });
        }
      }
      fs.rmSync(p, { force: true });
      problems.push(`removed leftover CNI cache entry ${p}`);
    } catch (e) {
      problems.push(`${p}: ${(e as Error).message}`);
    }
  }
}

function rmdirIfEmpty(p: string): void {
  try {
    fs.rmdirSync(p);
  } catch {
    /* not empty or gone */
  }
}

/**
 * Removes what podman left of runs that are gone (SIGKILLed): cgroup v1 directories named after
 * sltest nodes whose creator is dead (only empty ones; nothing is killed here), and their libcni
 * cache entries with the container netns and runtime state those name. Safe to run while other
 * runs are alive.
 */
export function sweepStalePodmanSync(): string[] {
  const out: string[] = [];
  for (const m of cgroupMounts(false)) {
    // cgroup2's are the harness's (sweepStale)
    let names: string[] = [];
    try {
      names = fs.readdirSync(m).filter((n) => ID_RE.test(n));
    } catch {
      continue;
    }
    for (const n of names) {
      if (ownerAlive(ID_RE.exec(n)![1])) continue;
      try {
        rmdirCgroupTree(path.join(m, n));
        out.push(`removed stale cgroup ${path.join(m, n)}`);
      } catch (e) {
        out.push(`stale cgroup ${path.join(m, n)}: ${(e as Error).message}`);
      }
    }
  }
  let cached: string[] = [];
  try {
    cached = fs.readdirSync(path.join(CNI_CACHE_DIR, 'results'));
  } catch {
    /* none */
  }
  for (const id of new Set(cached.map((f) => ID_RE.exec(f)?.[1]).filter((x): x is string => !!x))) {
    if (!ownerAlive(id)) removeCniCacheSync(`${id}-`, out, true);
  }
  return out;
}

class PodmanImpl implements Podman {
  readonly dir: string;
  readonly runtime: string;
  private readonly confFile: string;
  private readonly netnsSeen = new Set<string>();
  private readonly idsSeen = new Set<string>();
  private readonly runtimeRoot: string;
  private readonly hadRuntimeRoot: boolean;
  private readonly hadBlobCache: boolean;
  private readonly hadCniCache: boolean;
  private destroyed?: Promise<string[]>;
  private readonly exitHandler = () => this.emergencyCleanup();
  private readonly signalHandler = (sig: NodeJS.Signals) => {
    this.emergencyCleanup();
    this.removeHandlers();
    if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
  };

  constructor(
    private readonly node: SimNode,
    private readonly opts: PodmanOpts,
  ) {
    this.dir = path.join(node.workDir, 'podman');
    this.confFile = path.join(this.dir, 'containers.conf');
    this.runtime = opts.runtime ?? (which('runc') ? 'runc' : '');
    this.runtimeRoot = `/run/${path.basename(this.runtime || 'crun')}`;
    this.hadRuntimeRoot = fs.existsSync(this.runtimeRoot);
    this.hadBlobCache = fs.existsSync(BLOB_CACHE_ROOT);
    this.hadCniCache = fs.existsSync(CNI_CACHE_DIR);
  }

  init(): void {
    for (const d of ['root', 'run', 'tmp']) fs.mkdirSync(path.join(this.dir, d), { recursive: true });
    const q = (s: string) => JSON.stringify(s);
    fs.writeFileSync(
      this.confFile,
      [
        '[engine]',
        'cgroup_manager = "cgroupfs"',
        'events_logger = "file"',
        `events_logfile_path = ${q(path.join(this.dir, 'events.log'))}`,
        `tmp_dir = ${q(path.join(this.dir, 'tmp'))}`,
        'lock_type = "file"',
        '',
        '[network]',
        'network_backend = "cni"',
        `cni_plugin_dirs = [${this.opts.cniPluginDirs.map(q).join(', ')}]`,
        `network_config_dir = ${q(this.opts.networkConfigDir)}`,
        `default_network = ${q(this.opts.defaultNetwork)}`,
        '',
      ].join('\n'),
    );
    process.on('exit', this.exitHandler);
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as NodeJS.Signals[]) process.on(sig, this.signalHandler);
  }

  private emergencyCleanup(): void {
    const problems: string[] = [];
    this.cleanupSync(problems);
    for (const p of problems) log(`podman ${this.node.id} (emergency cleanup): ${p}`);
  }

  private removeHandlers(): void {
    process.removeListener('exit', this.exitHandler);
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as NodeJS.Signals[]) process.removeListener(sig, this.signalHandler);
  }

  private globalFlags(): string[] {
    const f = [
      '--root',
      path.join(this.dir, 'root'),
      '--runroot',
      path.join(this.dir, 'run'),
      '--tmpdir',
      path.join(this.dir, 'tmp'),
      '--storage-driver',
      'vfs',
      '--cgroup-manager',
      'cgroupfs',
      '--events-backend',
      'file',
      '--network-config-dir',
      this.opts.networkConfigDir,
    ];
    // The runtime keeps its state in its default root (/run/runc, /run/crun): a private one would
    // need --runtime-flag, which podman does not hand on to conmon's exit command (cleanup).
    if (this.runtime) f.push('--runtime', this.runtime);
    return f;
  }

  podman(args: string[], opts: PodmanRunOpts = {}): Promise<RunResult> {
    // Outside the node's cgroup: on cgroup2-only machines runc must enable controllers in the node
    // cgroup for the containers below it, which a process living in it would forbid.
    return this.node.exec(['podman', ...this.globalFlags(), ...args], {
      inCgroup: false,
      env: { CONTAINERS_CONF: this.confFile, TMPDIR: path.join(this.dir, 'tmp') },
      allowFail: opts.allowFail,
      timeoutMs: opts.timeoutMs ?? 60000,
    });
  }

  runFlags(): string[] {
    return [
      '--cgroups',
      'no-conmon',
      '--cgroup-parent',
      `/${this.node.id}/podman`,
      '--ipc',
      'none',
      '--ulimit',
      'nofile=20000:20000',
      '--ulimit',
      'nproc=1000:1000',
    ];
  }

  async importBusybox(ref: string, applets = ['sh', 'sleep', 'ip', 'cat', 'nc', 'ping', 'ls', 'hostname']): Promise<string> {
    const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => fs.existsSync(p));
    if (!busybox) throw new Error('busybox not found (Debian package busybox-static)');
    const out = (await run(['file', '-L', busybox], { allowFail: true })).stdout;
    if (out && !/statically linked|static-pie/.test(out))
      throw new Error(`${busybox} is not static (install busybox-static): ${out.trim()}`);
    const rootfs = path.join(this.dir, 'rootfs');
    fs.mkdirSync(path.join(rootfs, 'bin'), { recursive: true });
    fs.mkdirSync(path.join(rootfs, 'tmp'), { recursive: true });
    fs.copyFileSync(busybox, path.join(rootfs, 'bin/busybox'));
    fs.chmodSync(path.join(rootfs, 'bin/busybox'), 0o755);
    for (const a of applets) fs.symlinkSync('busybox', path.join(rootfs, 'bin', a));
    const tar = path.join(this.dir, 'rootfs.tar');
    await run(['tar', '--numeric-owner', '--owner=0', '--group=0', '-C', rootfs, '-cf', tar, '.']);
    const res = await this.podman(['import', '-q', tar, ref]);
    return res.stdout.trim();
  }

  async inspect(nameOrId: string): Promise<any> {
    const info = JSON.parse((await this.podman(['inspect', '--type', 'container', nameOrId])).stdout)[0];
    const key = info?.NetworkSettings?.SandboxKey;
    if (typeof key === 'string' && key) this.netnsSeen.add(key);
    if (typeof info?.Id === 'string' && /^[0-9a-f]{64}$/.test(info.Id)) this.idsSeen.add(info.Id);
    return info;
  }

  destroy(): Promise<string[]> {
    this.destroyed ??= this.doDestroy();
    return this.destroyed;
  }

  private async doDestroy(): Promise<string[]> {
    const problems: string[] = [];
    try {
      if (fs.existsSync(this.node.netnsPath)) {
        const ids = (await this.podman(['ps', '-a', '-q', '--no-trunc'], { allowFail: true })).stdout.split('\n').filter(Boolean);
        for (const id of ids) await this.inspect(id).catch(() => undefined);
        if (ids.length) {
          const rm = await this.podman(['rm', '-f', '-t', '0', ...ids], { allowFail: true });
          if (rm.code !== 0) problems.push(`podman rm -f: ${rm.stderr.trim()}`);
        }
      } else {
        problems.push('node netns is gone: containers not removed with podman (cleaned up by hand)');
      }
    } catch (e) {
      problems.push(`podman rm: ${(e as Error).message}`);
    }
    this.cleanupSync(problems);
    this.removeHandlers();
    for (const p of problems) log(`podman ${this.node.id}: ${p}`);
    return problems;
  }

  /** Everything that needs no podman command (also the exit/signal path). */
  private cleanupSync(problems: string[]): void {
    const step = (what: string, fn: () => void) => {
      try {
        fn();
      } catch (e) {
        problems.push(`${what}: ${(e as Error).message}`);
      }
    };
    for (const ns of this.netnsSeen) {
      if (fs.existsSync(ns)) {
        step(`deleting netns ${ns}`, () => deletePodmanNetnsSync(ns));
        problems.push(`container netns ${ns} was still there`);
      }
    }
    for (const id of this.idsSeen) {
      const st = path.join(this.runtimeRoot, id);
      if (fs.existsSync(st)) {
        problems.push(`runtime state ${st} was still there`);
        step(`removing ${st}`, () => fs.rmSync(st, { recursive: true, force: true }));
      }
    }
    if (!this.hadRuntimeRoot) rmdirIfEmpty(this.runtimeRoot);
    removeCniCacheSync(`${this.opts.defaultNetwork}-`, problems, false);
    if (!this.hadCniCache) {
      rmdirIfEmpty(path.join(CNI_CACHE_DIR, 'results'));
      rmdirIfEmpty(CNI_CACHE_DIR);
    }
    if (!this.hadBlobCache) {
      step('removing the blob-info cache', () => {
        fs.rmSync(path.join(BLOB_CACHE_ROOT, 'cache', 'blob-info-cache-v1.boltdb'), { force: true });
        rmdirIfEmpty(path.join(BLOB_CACHE_ROOT, 'cache'));
        rmdirIfEmpty(BLOB_CACHE_ROOT);
      });
    }
    for (const m of cgroupMounts()) {
      const d = path.join(m, this.node.id, 'podman');
      step(`removing cgroup ${d}`, () => {
        rmdirCgroupTree(d);
        if (m !== path.dirname(this.node.cgroupPath)) rmdirCgroupTree(path.join(m, this.node.id)); // cgroup2's is the node's own
      });
    }
    const mounts = mountsUnder(this.dir);
    for (const mp of mounts.reverse()) {
      step(`unmounting ${mp}`, () => execFileSync('umount', ['-l', mp], { timeout: 10000, stdio: ['ignore', 'ignore', 'pipe'] }));
    }
    if (mounts.length) problems.push(`mounts were left under ${this.dir}: ${mounts.join(' ')}`);
    step(`removing ${this.dir}`, () => fs.rmSync(this.dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 50 }));
  }
}

/** Sets up a private podman for the node (see the file comment). Destroy it before the node. */
export async function createPodman(node: SimNode, opts: PodmanOpts): Promise<Podman> {
  if (!podmanInstalled()) throw new Error('podman is not installed (Debian package podman; `make deps` installs it)');
  if (!opts.runtime && !which('runc') && hybridWithV2Controllers()) {
    throw new Error(
      'podman needs runc on this machine (Debian package runc): crun refuses hybrid cgroups whose cgroup2 has controllers',
    );
  }
  for (const p of sweepStalePodmanSync()) log(p);
  const pm = new PodmanImpl(node, opts);
  pm.init();
  return pm;
}
