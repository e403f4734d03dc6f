/* Reading back what the kernel holds (native/introspect.c): what a pinned link is attached to,
 * the settings a loaded program was loaded with, and probes of kernel features. For
 * `sluice doctor`, which checks what is rather than what was intended.
 */
import { check, loadLibrary } from './shim';

export const LINK_TYPE = { cgroup: 3, netns: 5, tcx: 11 } as const;

export interface LinkDesc {
  /** enum bpf_link_type (LINK_TYPE) */
  type: number;
  progId: number;
  /** cgroup id (cgroup links), netns inode (netns links) or ifindex (tcx links); 0 once detached */
  target: bigint;
}

/** One `const volatile` setting of a loaded program, where it sits in its .rodata. */
export interface RodataVar {
  name: string;
  offset: number;
  size: number;
}

export interface LoadedProgram {
  id: number;
  /** the kernel's copy of the name: at most 15 characters */
  name: string;
  /** the program's .rodata as loaded: undefined when it has none */
  rodata?: { vars: RodataVar[]; value: Buffer };
}

/** Kernel features sluice needs, each probed by asking the kernel (native/introspect.h). */
export type KernelFeature = 'btf' | 'sk_lookup' | 'set_retval' | 'tcx' | 'sock_destroy';

interface IntrospectLib {
  linkDescribe(pin: string, out: Buffer): number;
  progRodata(
    id: number,
    name: Buffer,
    nameCap: number,
    value: Buffer,
    valueCap: number,
    valueLen: Uint32Array,
    vars: Buffer,
    varsCap: number,
  ): number;
  probeFeature(feature: string): number;
}

let lib: IntrospectLib | undefined;

function introspectLib(): IntrospectLib {
  if (lib) return lib;
  const l = loadLibrary();
  lib = {
    // struct sl_link_desc: type u32, prog_id u32, target u64 (16 bytes)
    linkDescribe: l.func('int sl_link_describe(const char *pin, void *out)'),
    progRodata: l.func(
      'int sl_prog_rodata(uint32_t id, void *name, size_t name_cap, void *value, uint32_t value_cap, uint32_t *value_len, void *vars, size_t vars_cap)',
    ),
    probeFeature: l.func('int sl_probe_feature(const char *feature)'),
  };
  return lib;
}

/** What the link pinned at `pin` holds. */
export function describeLink(pin: string): LinkDesc {
  const out = Buffer.alloc(16);
  check(introspectLib().linkDescribe(pin, out), `describe link ${pin}`);
  return { type: out.readUInt32LE(0), progId: out.readUInt32LE(4), target: out.readBigUInt64LE(8) };
}

/** The loaded program with this id: its name and the .rodata it was loaded with. */
export function loadedProgram(id: number): LoadedProgram {
  const name = Buffer.alloc(16);
  const value = Buffer.alloc(4096);
  const valueLen = new Uint32Array(1);
  const vars = Buffer.alloc(4096);
  const has = check(
    introspectLib().progRodata(id, name, name.length, value, value.length, valueLen, vars, vars.length),
    `read program id ${id}`,
  );
  const text = (b: Buffer) => b.subarray(0, b.indexOf(0) < 0 ? b.length : b.indexOf(0)).toString();
  const prog: LoadedProgram = { id, name: text(name) };
  if (has === 1) {
    const list = text(vars)
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [n, offset, size] = line.split(' ');
        return { name: n, offset: Number(offset), size: Number(size) };
      });
    prog.rodata = { vars: list, value: Buffer.from(value.subarray(0, valueLen[0])) };
  }
  return prog;
}

/** true when the running kernel has the feature; a failed probe throws. */
export function probeFeature(feature: KernelFeature): boolean {
  return check(introspectLib().probeFeature(feature), `probe ${feature}`) === 1;
}
