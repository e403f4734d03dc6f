/* A map's spec — what an object declares, or what the kernel holds for a pinned map: type, sizes,
 * flags, and the key and value layouts read from BTF (native/map_migrate.c describes them). The
 * layouts are flattened here into leaf fields, which is what compatibility and conversion look at.
 */
import { createHash } from 'node:crypto';
import { BpfError, check, loadShim, type ObjectHandle } from './shim';

/** A type as BTF describes it, typedefs and qualifiers looked through, type names left out. */
export type TypeLayout =
  | { k: 'int'; size: number; signed: boolean; bits: number }
  | { k: 'array'; n: number; of: TypeLayout }
  | { k: 'struct' | 'union'; size: number; m: Array<{ name: string; off: number; bits: number; t: TypeLayout }> }
  | { k: 'float'; size: number }
  | { k: 'ptr' }
  | { k: 'other' };

export interface MapSpec {
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  /** null: the map has no BTF for it (sizes are all that can be compared) */
  key: TypeLayout | null;
  value: TypeLayout | null;
  /** kernel map id (live maps only) */
  id?: number;
}

/** BPF_MAP_TYPE_* values the loader treats specially, and names for the others in messages. */
export const MAP_TYPE = {
  hash: 1,
  array: 2,
  prog_array: 3,
  perf_event_array: 4,
  percpu_hash: 5,
  percpu_array: 6,
  stack_trace: 7,
  cgroup_array: 8,
  lru_hash: 9,
  lru_percpu_hash: 10,
  lpm_trie: 11,
  array_of_maps: 12,
  hash_of_maps: 13,
  devmap: 14,
  sockmap: 15,
  cpumap: 16,
  xskmap: 17,
  sockhash: 18,
  cgroup_storage: 19,
  reuseport_sockarray: 20,
  percpu_cgroup_storage: 21,
  queue: 22,
  stack: 23,
  sk_storage: 24,
  devmap_hash: 25,
  struct_ops: 26,
  ringbuf: 27,
  inode_storage: 28,
  task_storage: 29,
  bloom_filter: 30,
} as const;

export function mapTypeName(type: number): string {
  return Object.entries(MAP_TYPE).find(([, v]) => v === type)?.[0] ?? `type-${type}`;
}

/** Maps whose user-space values hold one 8-byte-aligned slot per possible CPU. */
export function isPerCpu(type: number): boolean {
  return type === MAP_TYPE.percpu_hash || type === MAP_TYPE.percpu_array || type === MAP_TYPE.lru_percpu_hash;
}

const INITIAL_JSON_BUFFER = 64 * 1024;

const ENOSPC = 28;

/** Calls a shim describer with a buffer, growing it once to the room the shim says it needs. */
function describe(op: string, call: (buf: Buffer, len: number, needed: BigUint64Array) => number): unknown {
  const needed = new BigUint64Array(1);
  let buf = Buffer.alloc(INITIAL_JSON_BUFFER);
  let ret = call(buf, buf.length, needed);
  if (ret === -ENOSPC) {
    buf = Buffer.alloc(Number(needed[0]));
    ret = call(buf, buf.length, needed);
  }
  const n = check(ret, op);
  return JSON.parse(buf.subarray(0, n).toString('utf8'));
}

/** Every map an opened (not yet loaded) object declares, internal maps excluded. */
export function objectMapSpecs(obj: ObjectHandle, objectPath: string): MapSpec[] {
  return describe(`describe the maps of ${objectPath}`, (b, n, need) => loadShim().objMapsJson(obj, b, n, need)) as MapSpec[];
}

/** The spec of a live map (an fd from a pin, or from a loaded object). */
export function liveMapSpec(fd: number): MapSpec {
  return describe(`describe map fd ${fd}`, (b, n, need) => loadShim().mapSpecJson(fd, b, n, need)) as MapSpec;
}

/** A pinned map's spec, or undefined when nothing is pinned there. */
export function pinnedMapSpec(pinPath: string): MapSpec | undefined {
  const s = loadShim();
  const fd = s.objGet(pinPath);
  if (fd === -2 /* ENOENT */) return undefined;
  if (fd < 0) throw new BpfError(`open pinned map ${pinPath}`, -fd);
  try {
    return liveMapSpec(fd);
  } finally {
    s.close(fd);
  }
}

/** One field of a flattened layout: a scalar, or an array of scalars (count elements). */
export interface Leaf {
  /** dotted member path, array elements of composite type as [i]: `e[3].vip.b` */
  path: string;
  /** byte offset in the key or value */
  off: number;
  kind: 'int' | 'float' | 'opaque';
  signed: boolean;
  /** bytes of one element */
  elemSize: number;
  /** elements (1 for a scalar) */
  count: number;
  /** a bitfield member: its bit offset and width (converted only when unchanged) */
  bitfield?: { bitOff: number; bits: number };
}

function typeSize(t: TypeLayout): number {
  switch (t.k) {
    case 'int':
    case 'float':
    case 'struct':
    case 'union':
      return t.size;
    case 'array':
      return t.n * typeSize(t.of);
    case 'ptr':
      return 8;
    default:
      return 0;
  }
}

/** The leaves of a layout in offset order. Unions and unknown kinds are opaque byte ranges. */
export function flatten(t: TypeLayout, at = 0, path = ''): Leaf[] {
  switch (t.k) {
    case 'int':
      return [{ path, off: at, kind: 'int', signed: t.signed, elemSize: t.size, count: 1 }];
    case 'float':
      return [{ path, off: at, kind: 'float', signed: true, elemSize: t.size, count: 1 }];
    case 'array': {
      const el = t.of;
      if (el.k === 'int' || el.k === 'float') {
        return [{ path, off: at, kind: el.k, signed: el.k === 'int' ? el.signed : true, elemSize: el.size, count: t.n }];
      }
      const size = typeSize(el);
      const out: Leaf[] = [];
      for (let i = 0; i < t.n; i++) out.push(...flatten(el, at + i * size, `${path}[${i}]`));
      return out;
    }
    case 'struct': {
      const out: Leaf[] = [];
      for (const m of t.m) {
        const name = m.name === '' ? path : path ? `${path}.${m.name}` : m.name;
        if (m.bits) {
          const leaf: Leaf = { path: name, off: at + Math.floor(m.off / 8), kind: 'int', signed: false, elemSize: 0, count: 1 };
          leaf.bitfield = { bitOff: m.off, bits: m.bits };
          out.push(leaf);
        } else {
          out.push(...flatten(m.t, at + m.off / 8, name));
        }
      }
      return out;
    }
    default:
      return [{ path, off: at, kind: 'opaque', signed: false, elemSize: typeSize(t), count: 1 }];
  }
}

/** Layout text for comparison: two layouts are the same when their texts are. */
export function layoutText(t: TypeLayout | null, size: number): string {
  return t === null ? `bytes:${size}` : JSON.stringify(t);
}

/**
 * A short id of a map's key and value layouts (12 hex digits), stable across builds: converters
 * are registered under the ids of the layouts they convert between.
 */
export function layoutId(spec: Pick<MapSpec, 'key' | 'value' | 'keySize' | 'valueSize'>): string {
  const text = `${layoutText(spec.key, spec.keySize)}|${layoutText(spec.value, spec.valueSize)}`;
  return createHash('sha256').update(text).digest('hex').slice(0, 12);
}

/** `hash key 24B value 12B max 262144 flags 0x1 layout 3fa2…`: a spec in one line, for logs. */
export function describeSpec(s: MapSpec): string {
  return `${mapTypeName(s.type)} key ${s.keySize}B value ${s.valueSize}B max ${s.maxEntries} flags 0x${s.flags.toString(16)} layout ${layoutId(s)}`;
}

/** Why a pinned map cannot be reused for `want`, or undefined when it can. */
export function incompatibility(pinned: MapSpec, want: MapSpec): string | undefined {
  const diffs: string[] = [];
  if (pinned.type !== want.type) diffs.push(`type ${mapTypeName(pinned.type)} → ${mapTypeName(want.type)}`);
  if (pinned.keySize !== want.keySize) diffs.push(`key size ${pinned.keySize} → ${want.keySize}`);
  if (pinned.valueSize !== want.valueSize) diffs.push(`value size ${pinned.valueSize} → ${want.valueSize}`);
  if (pinned.maxEntries !== want.maxEntries) diffs.push(`max entries ${pinned.maxEntries} → ${want.maxEntries}`);
  if (pinned.flags !== want.flags) diffs.push(`flags 0x${pinned.flags.toString(16)} → 0x${want.flags.toString(16)}`);
  // BTF decides only where both sides have it: a map created without BTF has sizes only
  if (pinned.key && want.key && layoutText(pinned.key, 0) !== layoutText(want.key, 0)) diffs.push('key layout');
  if (pinned.value && want.value && layoutText(pinned.value, 0) !== layoutText(want.value, 0)) diffs.push('value layout');
  return diffs.length ? diffs.join(', ') : undefined;
}
