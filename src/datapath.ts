/* The node's datapath: two eBPF objects (sock_lb.o: sock_addr hooks for socket-LB and outbound
/* The node's datapath: two eBPF objects (sock_lb.o: sock_addr hooks for socket-LB and outbound
 * capture; capture.o: sockops, getsockopt, sk_lookup) attached to the cgroup, and a third
 * (sock_destroy.o: socket iterators) pinned for the agent to run, their maps pinned under the pin
 * dir and shared between them. install() is also the restart and upgrade path: pinned maps are
 * reused with their contents (or migrated when a release changed them), and pinned links get the
 * freshly loaded programs swapped in.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  applySettings,
  loadWithMigration,
  packageRoot,
  socketFdsUnder,
  type AttachResult,
  type BpfObject,
  type MapMigration,
  type MigrationRegistry,
} from './bpf';
import { EVENTS_RING_BYTES, INBOUND_MARK, MAX_DNS_SERVERS } from './bpf/constants';
import { probeFeature } from './bpf/introspect';
import { addrCodec } from './bpf/layout';
import type { Config } from './config';
import { DATAPATH_MIGRATIONS } from './map-migrations';

/** cgroup programs of each object, attached to cgroup-root. */
export const OBJECTS = {
  'sock_lb.o': [
    'sl_connect4',
    'sl_connect6',
    'sl_sendmsg4',
    'sl_sendmsg6',
    'sl_recvmsg4',
    'sl_recvmsg6',
    'sl_getpeername4',
    'sl_getpeername6',
  ],
  'capture.o': ['sl_sockops', 'sl_getsockopt'],
} as const;

/**
 * Socket destroy (bpf/sock_destroy.c): iterator programs, never attached to a hook; pinned under
 * PROGS_DIR for the agent to run. Loaded only when the kernel has the kfunc they call.
 */
export const SOCK_DESTROY_OBJECT = 'sock_destroy.o';
export const SOCK_DESTROY_PROGS = { tcp: 'sl_destroy_tcp', udp: 'sl_destroy_udp' } as const;

/** Every pinned map, by its name in the ELF (= its pin file name). */
export const PINNED_MAPS = [
  'sl_lb_svc',
  'sl_lb_backend',
  'sl_lb_affinity',
  'sl_lb_sock_rev',
  'sl_lb_counters',
  'sl_lb_pod_opt_out',
  'sl_lb_sock_dead',
  'sl_endpoints',
  'sl_pod_ips',
  'sl_cap_sock',
  'sl_origdst_syn',
  'sl_origdst_stat',
  'sl_origdst_sock',
  'sl_origdst',
  'sl_listeners',
  'sl_ep_stats',
  'sl_node_ips',
  'sl_bypass_flows',
  // datapath events (bpf/lib/events.h): the ring, the monitor's gate, the events the ring had no room for
  'sl_events',
  'sl_monitor',
  'sl_events_lost',
] as const;

/** The `const volatile` settings programSettings() gives the objects, by their names in C. */
export type SettingName =
  | 'cfg_hostns_only'
  | 'cfg_host_netns_cookie'
  | 'cfg_proxy_uid'
  | 'cfg_proxy_gid'
  | 'cfg_proxy_mark'
  | 'cfg_proxy_mark_mask'
  | 'cfg_inbound_mark'
  | 'cfg_inbound_mark_mask'
  | 'cfg_dns_servers'
  | 'cfg_n_dns_servers';

/** What each object must declare and have configured before load: its .rodata settings and the maps sized by config. */
export interface ObjectConfig {
  /** every global of its .rodata: one it lacks, or one more, fails the load (src/bpf/settings.ts) */
  settings: readonly SettingName[];
  /** maps whose max_entries come from config (bpf-lb-*-map-max): one it lacks fails the load */
  sizedMaps: readonly SizedMap[];
}

/** The maps sized by config, and the field of MapSizes that sizes each. */
const SIZED_MAPS = {
  sl_lb_svc: 'service',
  sl_lb_backend: 'backend',
  sl_lb_affinity: 'affinity',
  sl_events: 'events',
} as const satisfies Record<string, keyof MapSizes>;
export type SizedMap = keyof typeof SIZED_MAPS;

const MESH_SETTINGS = [
  'cfg_host_netns_cookie',
  'cfg_proxy_uid',
  'cfg_proxy_gid',
  'cfg_proxy_mark',
  'cfg_proxy_mark_mask',
  'cfg_inbound_mark',
  'cfg_inbound_mark_mask',
  'cfg_dns_servers',
  'cfg_n_dns_servers',
] as const satisfies readonly SettingName[];

/** Per object of OBJECTS (test/unit/contract-settings.test.ts checks it against each object's BTF). */
// every object queues its events in the one ring: sized alike, or the pins would not match
export const OBJECT_CONFIG: Record<keyof typeof OBJECTS | typeof SOCK_DESTROY_OBJECT, ObjectConfig> = {
  'sock_lb.o': {
    settings: ['cfg_hostns_only', ...MESH_SETTINGS],
    sizedMaps: ['sl_lb_svc', 'sl_lb_backend', 'sl_lb_affinity', 'sl_events'],
  },
  'capture.o': { settings: MESH_SETTINGS, sizedMaps: ['sl_events'] },
  // the iterators read socket-LB's maps: sized as sock_lb.o sizes them, or the pins would not match
  'sock_destroy.o': { settings: [], sizedMaps: ['sl_lb_svc', 'sl_lb_backend', 'sl_lb_affinity', 'sl_events'] },
};

// sl_origdst (v0.1.0's node-wide LRU of original destinations) is kept with v0.1.0's layout beside
// sl_origdst_syn and sl_origdst_sock, so that a switch either way loses no connection's original
// destination (bpf/lib/capture_maps.h).

export const LINKS_DIR = 'links';
/** per-pod sk_lookup links, one per captured pod's netns, named by its netns cookie */
export const NETNS_LINKS_DIR = 'links/netns';
/** per-pod tcx links on lo (source-preserving inbound), named by the pod's netns cookie */
export const TCX_LINKS_DIR = 'links/tcx';
export const PROGS_DIR = 'progs';
export const SK_LOOKUP_PROG = 'sl_sk_lookup';
export const LO_MARK_PROG = 'sl_lo_mark';

/**
 * Routing of source-preserving inbound in a captured pod (ambient pods, and sidecars in TPROXY
 * mode), Istio's in-pod ambient values: the proxy's looped-back connections to the app are
 * re-marked 0x111/0xfff, and "fwmark 0x111/0xfff pref 32764 lookup 100" with "local default dev
 * lo table 100" brings the app's replies back to the proxy. (Istio's TPROXY sidecar rules do the
 * same with CONNMARK 1337 and table 133; one set serves both here, as the re-marking program does.)
 */
export const INBOUND_ROUTING = { mark: INBOUND_MARK.mark, mask: INBOUND_MARK.mask, table: 100, pref: 32764 } as const;

export interface MapSizes {
  /** sl_lb_svc entries: one per service port plus one per backend slot. */
  service: number;
  backend: number;
  affinity: number;
  /** bytes of the event ring sl_events (monitor-ring-bytes); default EVENTS_RING_BYTES */
  events?: number;
}

/** What the programs are compiled with: `const volatile` globals in their .rodata, set before load. */
export interface ProgramSettingsInput {
  hostnsOnly: boolean;
  hostNetnsCookie: bigint;
  proxyUid: number;
  proxyGid: number;
  /** resolvers DNS capture applies to (empty: all) */
  dnsServers: string[];
  /** the node proxy's socket mark and mask (ambient) */
  proxyMark: { mark: number; mask: number };
}

export interface DatapathOptions extends ProgramSettingsInput {
  pinDir: string;
  cgroupRoot: string;
  sizes: MapSizes;
  /** directory of the built objects; default: $SLUICE_BPF_DIR, else build/bpf of this package */
  objectDir?: string;
  /** what each map may become when its layout changed; default: src/map-migrations.ts */
  registry?: MigrationRegistry;
  /**
   * `other`: the objects are another release's (`bpf migrate --object-dir`, a downgrade); settings
   * and sized maps they lack are skipped and reported (InstallResult.skipped). Default `this`:
   * anything OBJECT_CONFIG names that an object lacks fails the load.
   */
  objectRelease?: 'this' | 'other';
}

/** The program settings the configuration asks for (the agent loads them, `sluice doctor` checks them); hostNetnsCookie: the agent's own netns. */
export function programSettingsInput(cfg: Config, hostNetnsCookie: bigint): ProgramSettingsInput {
  return {
    hostnsOnly: cfg.lbSockHostnsOnly,
    hostNetnsCookie,
    proxyUid: cfg.meshProxyUid,
    proxyGid: cfg.meshProxyGid,
    dnsServers: cfg.meshDnsServers,
    proxyMark: cfg.ambientProxyMark,
  };
}

/** The datapath as the configuration asks for it; hostNetnsCookie: the agent's own netns. */
export function datapathOptions(cfg: Config, hostNetnsCookie: bigint, objectDir?: string): DatapathOptions {
  return {
    pinDir: cfg.bpfPinDir,
    cgroupRoot: cfg.cgroupRoot,
    ...programSettingsInput(cfg, hostNetnsCookie),
    sizes: {
      service: cfg.lbServiceMapMax,
      backend: cfg.lbBackendMapMax,
      affinity: cfg.lbAffinityMapMax,
      events: cfg.monitorRingBytes,
    },
    objectDir,
  };
}

export interface InstallResult {
  links: Record<string, AttachResult>;
  /** per-pod sk_lookup and tcx links updated to the new programs */
  netnsLinks: number;
  /** what happened to each pinned map: reused, created, migrated, rebuilt, removed */
  migration: MapMigration[];
  /** whether the socket-destroy iterators are pinned, and why not */
  sockDestroy: { available: boolean; reason: string };
  /** settings and sized maps another release's objects lack (`object: name`), left as they were compiled */
  skipped: string[];
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

/**
 * The value of every setting, by variable name; OBJECT_CONFIG says which object has which.
 * `sluice doctor` compares the loaded programs' .rodata with the same list.
 */
export function programSettings(opts: ProgramSettingsInput): Map<SettingName, Buffer> {
  const cookie = Buffer.alloc(8);
  cookie.writeBigUInt64LE(opts.hostNetnsCookie);
  if (opts.dnsServers.length > MAX_DNS_SERVERS)
    throw new RangeError(
      `Cannot set mesh-dns-servers: ${opts.dnsServers.length} resolvers, the programs have room for ${MAX_DNS_SERVERS}`,
    );
  const dns = Buffer.alloc(addrCodec.size * MAX_DNS_SERVERS);
  opts.dnsServers.forEach((ip, i) => addrCodec.encode(ip, dns, addrCodec.size * i));
  return new Map<SettingName, Buffer>([
    ['cfg_hostns_only', Buffer.from([opts.hostnsOnly ? 1 : 0])],
    ['cfg_host_netns_cookie', cookie],
    ['cfg_proxy_uid', u32(opts.proxyUid)],
    ['cfg_proxy_gid', u32(opts.proxyGid)],
    ['cfg_proxy_mark', u32(opts.proxyMark.mark)],
    ['cfg_proxy_mark_mask', u32(opts.proxyMark.mask)],
    ['cfg_inbound_mark', u32(INBOUND_ROUTING.mark)],
    ['cfg_inbound_mark_mask', u32(INBOUND_ROUTING.mask)],
    ['cfg_dns_servers', dns],
    ['cfg_n_dns_servers', Buffer.from([opts.dnsServers.length])],
  ]);
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

/**
 * The object's settings: .rodata constants (the verifier prunes on them) and map sizes, as
 * OBJECT_CONFIG declares them for its file. Returns what another release's object lacked.
 */
function configureObject(obj: BpfObject, opts: DatapathOptions): string[] {
  const file = path.basename(obj.path);
  const declared = (OBJECT_CONFIG as Record<string, ObjectConfig | undefined>)[file];
  if (!declared) throw new Error(`Cannot configure ${obj.path}: no entry for ${file} in OBJECT_CONFIG (src/datapath.ts)`);
  const otherRelease = opts.objectRelease === 'other';
  const skipped = applySettings(obj, declared.settings, programSettings(opts), { otherRelease }).map((n) => `${file}: ${n}`);
  const maps = new Set(obj.mapSpecs().map((m) => m.name));
  for (const name of declared.sizedMaps) {
    if (otherRelease && !maps.has(name)) skipped.push(`${file}: map ${name}`);
    else obj.configureMap(name, { maxEntries: opts.sizes[SIZED_MAPS[name]] ?? EVENTS_RING_BYTES });
  }
  return skipped;
}

/**
 * Whether the socket-destroy iterators can be loaded from dir, and why not: the kernel needs the
 * bpf_sock_destroy kfunc (Linux 6.5), and the objects must have them (a downgrade with `bpf
 * migrate` to v0.1.0's objects has none). Without them sockets are never destroyed: a connected
 * UDP socket stays on a backend that left its service until the client reconnects.
 */
function sockDestroyAvailability(dir: string): InstallResult['sockDestroy'] {
  if (!fs.existsSync(path.join(dir, SOCK_DESTROY_OBJECT)))
    return { available: false, reason: `no ${SOCK_DESTROY_OBJECT} in ${dir}` };
  if (!probeFeature('sock_destroy'))
    return { available: false, reason: 'the kernel has no bpf_sock_destroy kfunc (needs Linux 6.5 or later)' };
  return { available: true, reason: '' };
}

/**
 * Loads the objects with this configuration over the pinned maps (reused when compatible,
 * migrated when their layout or size changed: src/bpf/migrate.ts), and attaches them: existing
 * pinned links get the new programs swapped in, per-pod sk_lookup links included. The
 * socket-destroy iterators are loaded with them (sharing their maps) and pinned, when the kernel
 * can run them; otherwise pins an earlier run left are removed.
 */
export function installDatapath(opts: DatapathOptions): InstallResult {
  for (const d of [LINKS_DIR, NETNS_LINKS_DIR, TCX_LINKS_DIR, PROGS_DIR])
    fs.mkdirSync(path.join(opts.pinDir, d), { recursive: true });
  if (!isBpffs(opts.pinDir)) {
    throw new Error(`Cannot pin under bpf-pin-dir "${opts.pinDir}": not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)`);
  }
  // SLUICE_BPF_DIR, like SLUICE_SHIM for the shim: run this agent with other objects (the
  // upgrade test's next release)
  const dir = opts.objectDir ?? process.env.SLUICE_BPF_DIR ?? path.join(packageRoot(), 'build', 'bpf');
  const sockDestroy = sockDestroyAvailability(dir);
  const files = [...Object.keys(OBJECTS), ...(sockDestroy.available ? [SOCK_DESTROY_OBJECT] : [])];
  const skipped: string[] = [];
  const { attached, maps } = loadWithMigration({
    pinDir: opts.pinDir,
    objects: files.map((file) => path.join(dir, file)),
    configure: (obj) => void skipped.push(...configureObject(obj, opts)),
    attach: (loaded, tx) => {
      const links: Record<string, AttachResult> = {};
      let netnsLinks = 0;
      for (const [file, programs] of Object.entries(OBJECTS)) {
        const obj = loaded.get(path.join(dir, file))!;
        for (const prog of programs) links[prog] = tx.attachCgroup(obj, prog, opts.cgroupRoot, sockLinkPin(opts.pinDir, prog));
        if (file === 'capture.o') {
          // a restart keeps pods captured: every pod's sk_lookup and tcx link gets the new program
          for (const [prog, linksDir] of [
            [SK_LOOKUP_PROG, NETNS_LINKS_DIR],
            [LO_MARK_PROG, TCX_LINKS_DIR],
          ]) {
            // v0.1.0's objects (a downgrade with `bpf migrate`) have no tcx program: the pods'
            // tcx links keep theirs, which reads no map
            if (!obj.hasProgram(prog)) continue;
            const progPin = path.join(opts.pinDir, PROGS_DIR, prog);
            tx.pinProgram(obj, prog, progPin);
            for (const name of fs.readdirSync(path.join(opts.pinDir, linksDir))) {
              tx.updateLink(path.join(opts.pinDir, linksDir, name), progPin);
              netnsLinks++;
            }
          }
        }
      }
      // iterators are never attached: pinned for the agent to run (src/lb/sock-destroy.ts)
      const iterators = loaded.get(path.join(dir, SOCK_DESTROY_OBJECT));
      if (iterators) {
        for (const proto of ['tcp', 'udp'] as const)
          tx.pinProgram(iterators, SOCK_DESTROY_PROGS[proto], sockDestroyProgPin(opts.pinDir, proto));
      }
      return { links, netnsLinks };
    },
    ownsPin: (name) => name.startsWith('sl_'),
    registry: opts.registry ?? DATAPATH_MIGRATIONS,
    // the sockets in sl_listeners belong to processes in the cgroup the programs watch
    socketOwners: () => socketFdsUnder(opts.cgroupRoot),
  });
  if (!sockDestroy.available)
    for (const proto of ['tcp', 'udp'] as const) fs.rmSync(sockDestroyProgPin(opts.pinDir, proto), { force: true });
  return { ...attached, migration: maps, sockDestroy, skipped };
}

/** Removes the links (detaching the programs), the pinned programs and every pinned sl_* map. */
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
  // maps of other releases (migrated away, or newer ones after a downgrade) and pins a
  // migration left half-way: every sluice map is named sl_*
  for (const name of fs.readdirSync(pinDir)) {
    const p = path.join(pinDir, name);
    if (name.startsWith('sl_') && fs.statSync(p).isFile()) rm(p);
  }
  return removed;
}
