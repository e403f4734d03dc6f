/* The socket-LB datapath on a node: its programs attached to the cgroup, its maps pinned under
 * the pin dir. install() is also the restart path: pinned maps are reused with their contents,
 * and pinned links get the freshly loaded programs swapped in atomically.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BpfError, BpfMap, BpfObject, packageRoot, possibleCpus, type AttachResult } from '../bpf';
import {
  affinityKeyCodec,
  affinityValCodec,
  backendCodec,
  COUNTERS,
  perCpuU64Codec,
  svcKeyCodec,
  svcValCodec,
  u32Codec,
  type AffinityKey,
  type AffinityVal,
  type Backend,
  type CounterName,
  type SvcKey,
  type SvcVal,
} from '../bpf/layout';

export const LB_PROGRAMS = [
  'sl_connect4',
  'sl_connect6',
  'sl_sendmsg4',
  'sl_sendmsg6',
  'sl_recvmsg4',
  'sl_recvmsg6',
  'sl_getpeername4',
  'sl_getpeername6',
] as const;

/** Every pinned map of the socket-LB object, by its name in the ELF (= its pin file name). */
export const LB_MAPS = ['sl_lb_svc', 'sl_lb_backend', 'sl_lb_affinity', 'sl_lb_sock_rev', 'sl_lb_counters'] as const;

export const LINKS_DIR = 'links';

export interface LbMapSizes {
  /** sl_lb_svc entries: one per service port plus one per backend slot. */
  service: number;
  backend: number;
  affinity: number;
}

export interface LbInstallOptions {
  pinDir: string;
  cgroupRoot: string;
  hostnsOnly: boolean;
  hostNetnsCookie: bigint;
  sizes: LbMapSizes;
  /** Path of sock_lb.o; default: build/bpf/sock_lb.o of this package. */
  objectPath?: string;
}

export function defaultObjectPath(): string {
  return path.join(packageRoot(), 'build', 'bpf', 'sock_lb.o');
}

/** Typed handles to the pinned socket-LB maps. */
export class LbMaps {
  private constructor(
    readonly svc: BpfMap<SvcKey, SvcVal>,
    readonly backend: BpfMap<number, Backend>,
    readonly affinity: BpfMap<AffinityKey, AffinityVal>,
    readonly counters: BpfMap<number, bigint>,
  ) {}

  /** Opens the maps pinned under pinDir (works while the agent is down). */
  static open(pinDir: string): LbMaps {
    const opened: Array<BpfMap<any, any>> = [];
    const open = <K, V>(name: string, k: any, v: any): BpfMap<K, V> => {
      const m = BpfMap.openPinned<K, V>(path.join(pinDir, name), k, v);
      opened.push(m);
      return m;
    };
    try {
      return new LbMaps(
        open('sl_lb_svc', svcKeyCodec, svcValCodec),
        open('sl_lb_backend', u32Codec, backendCodec),
        open('sl_lb_affinity', affinityKeyCodec, affinityValCodec),
        open('sl_lb_counters', u32Codec, perCpuU64Codec(possibleCpus())),
      );
    } catch (e) {
      for (const m of opened) m.close();
      throw e;
    }
  }

  readCounters(): Record<CounterName, number> {
    const out = {} as Record<CounterName, number>;
    COUNTERS.forEach((name, i) => (out[name] = Number(this.counters.get(i) ?? 0n)));
    return out;
  }

  close(): void {
    for (const m of [this.svc, this.backend, this.affinity, this.counters]) m.close();
  }
}

function isBpffs(dir: string): boolean {
  // statfs is not in Node 20's fs for magic numbers; /proc/mounts tells the fstype.
  const mounts = fs.readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' '));
  let best = '';
  let type = '';
  const real = fs.realpathSync(dir);
  for (const [, mnt, fstype] of mounts) {
    if (!mnt) continue;
    if ((real === mnt || real.startsWith(mnt.endsWith('/') ? mnt : mnt + '/')) && mnt.length >= best.length) {
      best = mnt;
      type = fstype;
    }
  }
  return type === 'bpf';
}

/**
 * Loads the programs with this configuration, reusing (or creating) the pinned maps, and attaches
 * or updates the pinned links. Returns the open maps and what happened to each link.
 */
export function installLbDatapath(opts: LbInstallOptions): { maps: LbMaps; links: Record<string, AttachResult> } {
  fs.mkdirSync(path.join(opts.pinDir, LINKS_DIR), { recursive: true });
  if (!isBpffs(opts.pinDir)) {
    throw new Error(`Cannot pin under bpf-pin-dir "${opts.pinDir}": not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)`);
  }
  const obj = BpfObject.open(opts.objectPath ?? defaultObjectPath());
  try {
    obj.setRodata('cfg_hostns_only', Buffer.from([opts.hostnsOnly ? 1 : 0]));
    const cookie = Buffer.alloc(8);
    cookie.writeBigUInt64LE(opts.hostNetnsCookie);
    obj.setRodata('cfg_host_netns_cookie', cookie);
    const sizes: Record<string, number | undefined> = {
      sl_lb_svc: opts.sizes.service,
      sl_lb_backend: opts.sizes.backend,
      sl_lb_affinity: opts.sizes.affinity,
    };
    for (const name of LB_MAPS) obj.configureMap(name, { maxEntries: sizes[name], pinPath: path.join(opts.pinDir, name) });
    try {
      obj.load();
    } catch (e) {
      if (e instanceof BpfError && /reuse|pinned/i.test(e.message)) {
        throw new BpfError(
          e.op,
          e.errno,
          `${e.message}\nA map pinned under ${opts.pinDir} does not match this configuration (size or layout changed): ` +
            `restore the previous bpf-lb-*-map-max values, or run "sluice uninstall" and start again.`,
        );
      }
      throw e;
    }
    const links: Record<string, AttachResult> = {};
    for (const prog of LB_PROGRAMS) {
      links[prog] = obj.attachCgroup(prog, opts.cgroupRoot, path.join(opts.pinDir, LINKS_DIR, prog));
    }
    return { maps: LbMaps.open(opts.pinDir), links };
  } finally {
    // Pins and links keep programs and maps alive; the object's own fds are not needed.
    obj.close();
  }
}

/** Removes the links (detaching the programs) and the maps pinned under pinDir. */
export function uninstallLbDatapath(pinDir: string): string[] {
  const removed: string[] = [];
  const rm = (p: string) => {
    if (fs.existsSync(p)) {
      fs.rmSync(p);
      removed.push(p);
    }
  };
  for (const prog of LB_PROGRAMS) rm(path.join(pinDir, LINKS_DIR, prog));
  for (const name of LB_MAPS) rm(path.join(pinDir, name));
  return removed;
}
