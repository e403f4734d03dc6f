/* The node's datapath: two eBPF objects (sock_lb.o: sock_addr hooks for socket-LB and outbound
 * capture; capture.o: sockops, getsockopt, sk_lookup) attached to the cgroup, and a third
 * (sock_destroy.o: socket iterators) pinned for the agent to run, their maps pinned under the pin
 * dir and shared between them. install() is also the restart path: pinned maps are
 * reused with their contents, and pinned links get the freshly loaded programs swapped in.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BpfError, BpfObject, kernelHasKfunc, packageRoot, updateLinkProgram, type AttachResult } from './bpf';
import { encodeAddr } from './bpf/layout';

/** cgroup programs of each object, attached to cgroup-root. */
export const OBJECTS = {
  'sock_lb.o': [
    'sl_connect4', 'sl_connect6', 'sl_sendmsg4', 'sl_sendmsg6',
    'sl_recvmsg4', 'sl_recvmsg6', 'sl_getpeername4', 'sl_getpeername6',
  ],
  'capture.o': ['sl_sockops', 'sl_getsockopt'],
} as const;

/**
 * Socket destroy (bpf/sock_destroy.c): iterator programs, never attached to a hook; pinned under
 * PROGS_DIR for the agent to run. Loaded only when the kernel has the kfunc they call.
 */
export const SOCK_DESTROY_OBJECT = 'sock_destroy.o';
export const SOCK_DESTROY_PROGS = { tcp: 'sl_destroy_tcp', udp: 'sl_destroy_udp' } as const;
export const SOCK_DESTROY_KFUNC = 'bpf_sock_destroy';

/** Every pinned map, by its name in the ELF (= its pin file name). */
export const PINNED_MAPS = [
  'sl_lb_svc', 'sl_lb_backend', 'sl_lb_affinity', 'sl_lb_sock_rev', 'sl_lb_counters', 'sl_lb_pod_opt_out', 'sl_lb_sock_dead',
  'sl_endpoints', 'sl_pod_ips', 'sl_cap_sock', 'sl_origdst', 'sl_listeners', 'sl_ep_stats', 'sl_node_ips', 'sl_bypass_flows',
] as const;

export const LINKS_DIR = 'links';
/** per-pod sk_lookup links, one per captured pod's netns, named by its netns cookie */
export const NETNS_LINKS_DIR = 'links/netns';
/** per-pod tcx links on lo (source-preserving inbound), named by the pod's netns cookie */
export const TCX_LINKS_DIR = 'links/tcx';
export const PROGS_DIR = 'progs';
export const SK_LOOKUP_PROG = 'sl_sk_lookup';
export const LO_MARK_PROG = 'sl_lo_mark';

/**
 * Routing of source-preserving inbound in a captured pod, Istio's values: the proxy's looped-back
 * connections to the app are re-marked 0x111/0xfff, and "fwmark 0x111/0xfff pref 32764 lookup 100"
 * with "local default dev lo table 100" brings the app's replies back to the proxy.
 */
export const INBOUND_ROUTING = { mark: 0x111, mask: 0xfff, table: 100, pref: 32764 } as const;

export interface MapSizes {
  /** sl_lb_svc entries: one per service port plus one per backend slot. */
  service: number;
  backend: number;
  affinity: number;
}

export interface DatapathOptions {
  pinDir: string;
  cgroupRoot: string;
  hostnsOnly: boolean;
  hostNetnsCookie: bigint;
  proxyUid: number;
  proxyGid: number;
  /** resolvers DNS capture applies to (empty: all) */
  dnsServers: string[];
  /** the node proxy's socket mark and mask (ambient) */
  proxyMark: { mark: number; mask: number };
  sizes: MapSizes;
  /** directory of the built objects; default: build/bpf of this package */
  objectDir?: string;
}

export interface InstallResult {
  links: Record<string, AttachResult>;
  /** per-pod sk_lookup and tcx links updated to the new programs */
  netnsLinks: number;
  /** whether the socket-destroy iterators are pinned, and why not */
  sockDestroy: { available: boolean; reason: string };
}

function isBpffs(dir: string): boolean {
  const real = fs.realpathSync(dir);
  let best = '';
  let type = '';
  for (const line of fs.readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const [, mnt, fstype] = line.split(' ');
    if (!mnt) continue;
    if ((real === mnt || real.startsWith(mnt.endsWith('/') ? mnt : mnt + '/')) && mnt.length >= best.length) {
      best = mnt;
      type = fstype;
    }
  }
  return type === 'bpf';
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

export function sockLinkPin(pinDir: string, prog: string): string {
  return path.join(pinDir, LINKS_DIR, prog);
}

export function netnsLinkPin(pinDir: string, netnsCookie: bigint | string): string {
  return path.join(pinDir, NETNS_LINKS_DIR, String(netnsCookie));
}

export function tcxLinkPin(pinDir: string, netnsCookie: bigint | string): string {
  return path.join(pinDir, TCX_LINKS_DIR, String(netnsCookie));
}

export function sockDestroyProgPin(pinDir: string, proto: keyof typeof SOCK_DESTROY_PROGS): string {
  return path.join(pinDir, PROGS_DIR, SOCK_DESTROY_PROGS[proto]);
}

/** Sets the rodata and map sizes every object shares, and pins its maps under the pin dir. */
function configure(obj: BpfObject, opts: DatapathOptions): void {
  const cookie = Buffer.alloc(8);
  cookie.writeBigUInt64LE(opts.hostNetnsCookie);
  obj.setRodata('cfg_hostns_only', Buffer.from([opts.hostnsOnly ? 1 : 0]), { ifPresent: true });
  obj.setRodata('cfg_host_netns_cookie', cookie, { ifPresent: true });
  obj.setRodata('cfg_proxy_uid', u32(opts.proxyUid), { ifPresent: true });
  obj.setRodata('cfg_proxy_gid', u32(opts.proxyGid), { ifPresent: true });
  obj.setRodata('cfg_proxy_mark', u32(opts.proxyMark.mark), { ifPresent: true });
  obj.setRodata('cfg_proxy_mark_mask', u32(opts.proxyMark.mask), { ifPresent: true });
  obj.setRodata('cfg_inbound_mark', u32(INBOUND_ROUTING.mark), { ifPresent: true });
  obj.setRodata('cfg_inbound_mark_mask', u32(INBOUND_ROUTING.mask), { ifPresent: true });
  const dns = Buffer.alloc(16 * 4);
  opts.dnsServers.forEach((ip, i) => encodeAddr(ip, dns, 16 * i));
  obj.setRodata('cfg_dns_servers', dns, { ifPresent: true });
  obj.setRodata('cfg_n_dns_servers', Buffer.from([opts.dnsServers.length]), { ifPresent: true });
  obj.pinMaps(opts.pinDir);
  obj.configureMap('sl_lb_svc', { maxEntries: opts.sizes.service, ifPresent: true });
  obj.configureMap('sl_lb_backend', { maxEntries: opts.sizes.backend, ifPresent: true });
  obj.configureMap('sl_lb_affinity', { maxEntries: opts.sizes.affinity, ifPresent: true });
}

/** Loads an object; a pinned map that does not match says what to do about it. */
function load(obj: BpfObject, pinDir: string): void {
  try {
    obj.load();
  } catch (e) {
    if (e instanceof BpfError && /reuse|pinned/i.test(e.message)) {
      throw new BpfError(
        e.op,
        e.errno,
        `${e.message}\nA map pinned under ${pinDir} does not match this configuration (size or layout changed): ` +
          `restore the previous bpf-lb-*-map-max values, or run "sluice uninstall" and start again.`,
      );
    }
    throw e;
  }
}

/**
 * Pins the socket-destroy iterators when the kernel can run them (bpf_sock_destroy, Linux 6.5);
 * otherwise removes pins an older run left and says why. Sockets are never destroyed then: a
 * connected UDP socket stays on a backend that left its service until the client reconnects.
 */
function installSockDestroy(opts: DatapathOptions, dir: string): InstallResult['sockDestroy'] {
  if (!kernelHasKfunc(SOCK_DESTROY_KFUNC)) {
    for (const proto of ['tcp', 'udp'] as const) fs.rmSync(sockDestroyProgPin(opts.pinDir, proto), { force: true });
    return { available: false, reason: `the kernel has no ${SOCK_DESTROY_KFUNC} kfunc (needs Linux 6.5 or later)` };
  }
  const obj = BpfObject.open(path.join(dir, SOCK_DESTROY_OBJECT));
  try {
    configure(obj, opts);
    load(obj, opts.pinDir);
    for (const proto of ['tcp', 'udp'] as const) obj.pinProgram(SOCK_DESTROY_PROGS[proto], sockDestroyProgPin(opts.pinDir, proto));
  } finally {
    obj.close();
  }
  return { available: true, reason: '' };
}

/** Loads the objects with this configuration, reusing (or creating) the pinned maps. */
export function installDatapath(opts: DatapathOptions): InstallResult {
  for (const d of [LINKS_DIR, NETNS_LINKS_DIR, TCX_LINKS_DIR, PROGS_DIR]) fs.mkdirSync(path.join(opts.pinDir, d), { recursive: true });
  if (!isBpffs(opts.pinDir)) {
    throw new Error(`Cannot pin under bpf-pin-dir "${opts.pinDir}": not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)`);
  }
  const dir = opts.objectDir ?? path.join(packageRoot(), 'build', 'bpf');
  const links: Record<string, AttachResult> = {};
  let netnsLinks = 0;
  for (const [file, programs] of Object.entries(OBJECTS)) {
    const obj = BpfObject.open(path.join(dir, file));
    try {
      configure(obj, opts);
      load(obj, opts.pinDir);
      for (const prog of programs) links[prog] = obj.attachCgroup(prog, opts.cgroupRoot, sockLinkPin(opts.pinDir, prog));
      if (file === 'capture.o') {
        for (const [prog, dir] of [[SK_LOOKUP_PROG, NETNS_LINKS_DIR], [LO_MARK_PROG, TCX_LINKS_DIR]]) {
          const progPin = path.join(opts.pinDir, PROGS_DIR, prog);
          obj.pinProgram(prog, progPin);
          netnsLinks += updateLinks(path.join(opts.pinDir, dir), progPin);
        }
      }
    } finally {
      // Pins and links keep programs and maps alive; the object's own fds are not needed.
      obj.close();
    }
  }
  return { links, netnsLinks, sockDestroy: installSockDestroy(opts, dir) };
}

/** Swaps the new program into every pod's link of a kind (a restart keeps pods captured). */
function updateLinks(dir: string, progPin: string): number {
  const names = fs.readdirSync(dir);
  for (const name of names) updateLinkProgram(path.join(dir, name), progPin);
  return names.length;
}

/** Removes the links (detaching the programs), the pinned programs and every pinned map. */
export function uninstallDatapath(pinDir: string): string[] {
  const removed: string[] = [];
  const rm = (p: string) => {
    if (fs.existsSync(p)) {
      fs.rmSync(p);
      removed.push(p);
    }
  };
  for (const d of [NETNS_LINKS_DIR, TCX_LINKS_DIR]) {
    const dir = path.join(pinDir, d);
    if (fs.existsSync(dir)) for (const name of fs.readdirSync(dir)) rm(path.join(dir, name));
  }
  for (const progs of Object.values(OBJECTS)) for (const prog of progs) rm(sockLinkPin(pinDir, prog));
  rm(path.join(pinDir, PROGS_DIR, SK_LOOKUP_PROG));
  rm(path.join(pinDir, PROGS_DIR, LO_MARK_PROG));
  for (const proto of ['tcp', 'udp'] as const) rm(sockDestroyProgPin(pinDir, proto));
  for (const name of PINNED_MAPS) rm(path.join(pinDir, name));
  return removed;
}
