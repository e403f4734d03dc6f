/* The programs as the kernel holds them: each cgroup program attached, through its pinned link,
 * to cgroup-root (not detached, not another cgroup), running the program of its name, and loaded
 * with the settings the config asks for now. The socket-destroy iterators are programs too, but
 * never attached: the agent runs them (pinned under progs/ when the kernel has bpf_sock_destroy). Settings are compiled into a program when it loads
 * (`const volatile` globals, .rodata): a changed config key does nothing until the agent restarts,
 * which is what Cilium users meet as "changed bpf-lb-sock-hostns-only, forgot the restart".
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cgroupId } from '../bpf';
import { addrCodec } from '../bpf/layout';
import { describeLink, LINK_TYPE, loadedProgram, probeFeature, type LinkDesc, type LoadedProgram } from '../bpf/introspect';
import type { Config } from '../config';
import {
  LO_MARK_PROG,
  OBJECTS,
  programSettings,
  programSettingsInput,
  PROGS_DIR,
  SK_LOOKUP_PROG,
  SOCK_DESTROY_PROGS,
  sockDestroyProgPin,
  sockLinkPin,
  type SettingName,
} from '../datapath';
import { count, fail, ok, warn, type CheckResult } from './report';

export interface LinkFacts {
  prog: string;
  pin: string;
  exists: boolean;
  link?: LinkDesc;
  loaded?: LoadedProgram;
  /** why the link or its program could not be read */
  error?: string;
}

export interface ProgramFacts {
  cgroupRoot: string;
  /** undefined when cgroup-root cannot be stat'ed */
  cgroupId?: bigint;
  links: LinkFacts[];
  /** per-pod programs pinned under progs/ (sk_lookup, tcx on lo) */
  pinnedProgs: Array<{ name: string; pin: string; exists: boolean }>;
  /**
   * the socket-destroy iterators pinned under progs/, and whether the kernel can run them
   * (undefined: the probe failed; the kernel checks say why)
   */
  iterators?: { kernel?: boolean; pins: Array<{ name: string; pin: string; exists: boolean }> };
  /** the settings the config asks for, by variable */
  expected: Map<string, Buffer>;
  hostNetnsCookieFrom: 'agent' | 'doctor';
}

export function gatherProgramFacts(cfg: Config, hostNetnsCookie: bigint, hostNetnsCookieFrom: 'agent' | 'doctor'): ProgramFacts {
  let cg: bigint | undefined;
  try {
    cg = cgroupId(cfg.cgroupRoot);
  } catch {
    cg = undefined;
  }
  const links: LinkFacts[] = [];
  for (const prog of Object.values(OBJECTS).flat()) {
    const pin = sockLinkPin(cfg.bpfPinDir, prog);
    const f: LinkFacts = { prog, pin, exists: fs.existsSync(pin) };
    if (f.exists) {
      try {
        f.link = describeLink(pin);
        f.loaded = loadedProgram(f.link.progId);
      } catch (e) {
        f.error = (e as Error).message;
      }
    }
    links.push(f);
  }
  const pinnedProgs = [SK_LOOKUP_PROG, LO_MARK_PROG].map((name) => {
    const pin = path.join(cfg.bpfPinDir, PROGS_DIR, name);
    return { name, pin, exists: fs.existsSync(pin) };
  });
  let kernel: boolean | undefined;
  try {
    kernel = probeFeature('sock_destroy');
  } catch {
    kernel = undefined;
  }
  const iterators = {
    kernel,
    pins: (['tcp', 'udp'] as const).map((proto) => {
      const pin = sockDestroyProgPin(cfg.bpfPinDir, proto);
      return { name: SOCK_DESTROY_PROGS[proto], pin, exists: fs.existsSync(pin) };
    }),
  };
  const expected = programSettings(programSettingsInput(cfg, hostNetnsCookie));
  return { cgroupRoot: cfg.cgroupRoot, cgroupId: cg, links, pinnedProgs, iterators, expected, hostNetnsCookieFrom };
}

const FIX_ATTACH = 'restart the agent: it attaches every program again through its pinned link';

export function judgeLinks(f: ProgramFacts): CheckResult[] {
  const out: CheckResult[] = [];
  for (const l of f.links) {
    const id = 'datapath.links';
    if (!l.exists) out.push(fail(id, `${l.prog}: no link pinned at ${l.pin}: the program is not attached`, FIX_ATTACH));
    else if (l.error || !l.link) out.push(fail(id, `${l.prog}: cannot read the link pinned at ${l.pin}: ${l.error}`, FIX_ATTACH));
    else if (l.link.type !== LINK_TYPE.cgroup)
      out.push(fail(id, `${l.prog}: the link pinned at ${l.pin} is not a cgroup link (type ${l.link.type})`, FIX_ATTACH));
    else if (l.link.target === 0n)
      out.push(
        fail(
          id,
          `${l.prog}: the link pinned at ${l.pin} is detached (its cgroup is gone or someone detached it): the program runs nowhere`,
          FIX_ATTACH,
        ),
      );
    else if (f.cgroupId !== undefined && l.link.target !== f.cgroupId) {
      out.push(
        fail(
          id,
          `${l.prog}: attached to cgroup id ${l.link.target}, but cgroup-root ${f.cgroupRoot} is cgroup id ${f.cgroupId}`,
          FIX_ATTACH,
        ),
      );
    } else if (l.loaded && l.loaded.name !== l.prog.slice(0, 15)) {
      out.push(
        fail(id, `${l.prog}: the link pinned at ${l.pin} runs program "${l.loaded.name}" (id ${l.loaded.id})`, FIX_ATTACH),
      );
    }
  }
  for (const p of f.pinnedProgs) {
    if (!p.exists)
      out.push(
        fail(
          'datapath.links',
          `per-pod program ${p.name} is not pinned at ${p.pin}: pods cannot be enrolled`,
          'restart the agent: it pins the per-pod programs at start',
        ),
      );
  }
  // iterators are run by the agent, never attached: only their pins are looked for, and only
  // where the kernel can run them (without bpf_sock_destroy the kernel checks warn already)
  const iteratorsMissing = f.iterators?.kernel ? f.iterators.pins.filter((p) => !p.exists) : [];
  for (const p of iteratorsMissing) {
    out.push(
      warn(
        'datapath.links',
        `socket-destroy iterator ${p.name} is not pinned at ${p.pin}: sockets left on a backend that left its Service are not destroyed`,
        'restart the agent: it loads and pins the iterators at start when the kernel has bpf_sock_destroy',
      ),
    );
  }
  if (f.cgroupId === undefined)
    out.push(
      fail(
        'datapath.links',
        `cgroup-root ${f.cgroupRoot} cannot be read: where the programs should be attached is unknown`,
        'set cgroup-root to an existing cgroup2 directory',
      ),
    );
  if (out.length === 0) {
    const iterators = f.iterators?.kernel ? '; socket-destroy iterators pinned (run by the agent, not attached)' : '';
    out.push(
      ok(
        'datapath.links',
        `${count(f.links.length, 'program')} attached to cgroup-root ${f.cgroupRoot} (cgroup id ${f.cgroupId}) through their pinned links; per-pod programs pinned${iterators}`,
      ),
    );
  }
  return out;
}

/** How a setting reads in messages: the config key it comes from and its value in words. */
interface SettingSpec {
  key: string;
  show(value: Buffer): string;
}

const u32 = (b: Buffer) => String(b.readUInt32LE(0));
const hex32 = (b: Buffer) => `0x${b.readUInt32LE(0).toString(16)}`;
/** Every setting the objects have (SettingName): a new one must say here how it reads. */
const SETTINGS: Record<SettingName, SettingSpec> = {
  cfg_hostns_only: { key: 'bpf-lb-sock-hostns-only', show: (b) => (b[0] ? 'true' : 'false') },
  cfg_host_netns_cookie: { key: "the agent's network-namespace cookie", show: (b) => String(b.readBigUInt64LE(0)) },
  cfg_proxy_uid: { key: 'mesh-proxy-uid', show: u32 },
  cfg_proxy_gid: { key: 'mesh-proxy-gid', show: u32 },
  cfg_proxy_mark: { key: 'ambient-proxy-mark (mark)', show: hex32 },
  cfg_proxy_mark_mask: { key: 'ambient-proxy-mark (mask)', show: hex32 },
  cfg_inbound_mark: { key: 'the in-pod inbound mark (built in)', show: hex32 },
  cfg_inbound_mark_mask: { key: 'the in-pod inbound mark mask (built in)', show: hex32 },
  cfg_dns_servers: {
    key: 'mesh-dns-servers',
    show: (b) => {
      const ips: string[] = [];
      for (let i = 0; i + addrCodec.size <= b.length; i += addrCodec.size)
        if (!b.subarray(i, i + addrCodec.size).every((x) => x === 0)) ips.push(addrCodec.decode(b, i));
      return ips.length ? ips.join(',') : '(empty: every resolver)';
    },
  },
  cfg_n_dns_servers: { key: 'mesh-dns-servers (count)', show: (b) => String(b[0]) },
};

/** The spec of a .rodata variable by its name: undefined for one this sluice does not set. */
function settingSpec(name: string): SettingSpec | undefined {
  return (SETTINGS as Record<string, SettingSpec | undefined>)[name];
}

function show(name: string, value: Buffer): string {
  return settingSpec(name)?.show(value) ?? `0x${value.toString('hex')}`;
}

/** Loaded settings vs the config: one fail per setting that differs, naming both values. */
export function judgeSettings(f: ProgramFacts): CheckResult[] {
  const id = 'datapath.settings';
  const mismatch = new Map<string, { loaded: string; expected: string; progs: string[] }>();
  const unknown = new Map<string, string[]>();
  let compared = 0;
  for (const l of f.links) {
    const rodata = l.loaded?.rodata;
    if (!rodata) continue;
    compared++;
    for (const v of rodata.vars) {
      const loaded = rodata.value.subarray(v.offset, v.offset + v.size);
      const want = f.expected.get(v.name);
      if (!want) {
        unknown.set(v.name, [...(unknown.get(v.name) ?? []), l.prog]);
        continue;
      }
      if (want.length !== loaded.length || !want.equals(loaded)) {
        const key = `${v.name}|${loaded.toString('hex')}`;
        const m = mismatch.get(key) ?? {
          loaded: show(v.name, loaded),
          expected: want.length === loaded.length ? show(v.name, want) : `${want.length} bytes`,
          progs: [],
        };
        m.progs.push(l.prog);
        mismatch.set(key, m);
      }
    }
  }
  const out: CheckResult[] = [];
  for (const [key, m] of mismatch) {
    const name = key.split('|')[0];
    const setting = settingSpec(name)?.key ?? name;
    const source =
      name === 'cfg_host_netns_cookie' && f.hostNetnsCookieFrom === 'doctor'
        ? ' (agent down: compared with the cookie of the namespace doctor runs in)'
        : '';
    out.push(
      fail(
        id,
        `${name}: the loaded programs have ${m.loaded}, ${setting} is ${m.expected} now${source} (${m.progs.join(', ')})`,
        'restart the agent: settings are compiled into the programs when they load, a changed key takes effect only then',
      ),
    );
  }
  for (const [name, progs] of unknown) {
    out.push(
      warn(
        id,
        `${name}: a setting this sluice does not know, in ${progs.join(', ')}: the programs come from another sluice version`,
        'run doctor from the same version as the agent',
      ),
    );
  }
  if (compared === 0) {
    if (f.links.some((l) => l.loaded))
      out.push(
        warn(
          id,
          'the attached programs have no .rodata: their settings cannot be read back',
          'restart the agent with this version of sluice',
        ),
      );
    return out;
  }
  if (out.length === 0) {
    const first = f.links.find((l) => l.loaded?.rodata)!.loaded!.rodata!;
    const summary = first.vars
      .filter((v) => v.name !== 'cfg_n_dns_servers' && settingSpec(v.name))
      .map((v) => `${settingSpec(v.name)!.key}=${show(v.name, first.value.subarray(v.offset, v.offset + v.size))}`);
    out.push(ok(id, `the loaded programs' settings equal the config (${count(compared, 'program')}): ${summary.join(', ')}`));
  }
  return out;
}
