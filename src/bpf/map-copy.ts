/* Copies the entries of a live map into another, converting each. Maps of data (hash, array, LRU,
 * per-CPU) are read and written from user space. A sockhash (or sockmap) reads back as socket
 * cookies: each socket is found again through a process that holds it (pidfd_getfd) and put
 * into the new map under its converted key. A copy can run twice: before the programs are
 * swapped (everything), and after (only what the new map lacks: entries the old programs
 * created in between).
 */
import { applyPlan, type ConversionPlan } from './convert';
import { isPerCpu, MAP_TYPE, type MapSpec } from './map-spec';
import { MapMigrationError } from './migration-error';
import { BpfError, loadShim } from './shim';
import type { SocketFd } from './socket-owners';

/** One converted entry; undefined leaves the entry behind. Per-CPU values hold every CPU's slot. */
export type EntryConvert = (key: Buffer, value: Buffer) => { key: Buffer; value: Buffer } | undefined;

export type CopyMethod =
  /** a registered converter, entry by entry */
  | { kind: 'user'; convert: EntryConvert }
  /** field by field (or verbatim): byte copies straight into the new entries; per-CPU values slot by slot */
  | { kind: 'plan'; key: ConversionPlan; value: ConversionPlan; oldSlot: number; newSlot: number; slots: number }
  /** sockhash/sockmap: each socket under its converted key (undefined: left behind), found through its owner */
  | { kind: 'sockets'; convertKey: (key: Buffer, cookie: Buffer) => Buffer | undefined }
  /** nothing to carry (ring buffers, perf event arrays) */
  | { kind: 'none' };

export interface LiveMap {
  fd: number;
  spec: MapSpec;
}

export interface CopyOptions {
  /** leave alone what the new map already holds (the pass after the swap) */
  onlyMissing: boolean;
  /** possible CPUs: per-CPU values hold one slot each */
  cpus: number;
  /** socket fds of the processes whose sockets the datapath handles (sockhash copies) */
  socketOwners: () => SocketFd[];
}

export interface CopyResult {
  /** entries the old map held when the copy read it */
  entries: number;
  copied: number;
  /** array slots past the new map's max_entries, left behind (a shorter counter array) */
  beyond?: number;
  /** sockets no process under the cgroup holds any more (closing, or handed elsewhere) */
  unowned?: number;
}

const BPF_ANY = 0n;
const BPF_NOEXIST = 1n;
const ENOENT = 2;
const E2BIG = 7;
const EEXIST = 17;
const EINVAL = 22;
const EOPNOTSUPP = 95;
const ENOTSUPP = 524;
/** entries per batch syscall */
const BATCH = 4096;

/** Bytes user space reads and writes for one value of this map. */
export function userValueSize(spec: MapSpec, cpus: number): number {
  return isPerCpu(spec.type) ? Math.ceil(spec.valueSize / 8) * 8 * cpus : spec.valueSize;
}

function isArray(spec: MapSpec): boolean {
  return spec.type === MAP_TYPE.array || spec.type === MAP_TYPE.percpu_array;
}

/** Entries read from a map: `count` keys and values, back to back. */
interface Entries {
  keys: Buffer;
  values: Buffer;
  count: number;
}

/** struct bpf_map_batch_opts { sz; elem_flags; flags } */
function batchOpts(elemFlags: bigint): Buffer {
  const opts = Buffer.alloc(24);
  opts.writeBigUInt64LE(24n, 0);
  opts.writeBigUInt64LE(elemFlags, 8);
  return opts;
}

/** Entries one at a time, with get_next_key (bounded): maps without batch lookup (sockhash, LPM). */
function readOneByOne(from: LiveMap, valueSize: number): Entries {
  const s = loadShim();
  const keys: Buffer[] = [];
  const values: Buffer[] = [];
  const key = Buffer.alloc(from.spec.keySize);
  const limit = from.spec.maxEntries * 2 + 16;
  let prev: Buffer | null = null;
  for (let i = 0; i < limit; i++) {
    const ret = s.mapNextKey(from.fd, prev, key);
    if (ret === -ENOENT) break;
    if (ret < 0) throw new BpfError(`iterate map ${from.spec.name}`, -ret);
    prev = Buffer.from(key);
    const value = Buffer.alloc(valueSize);
    const got = s.mapLookup(from.fd, key, value);
    if (got === -ENOENT) continue; // removed while we walked
    if (got < 0) throw new BpfError(`read map ${from.spec.name}`, -got);
    keys.push(prev);
    values.push(value);
  }
  return { keys: Buffer.concat(keys), values: Buffer.concat(values), count: keys.length };
}

/** Every entry of a map, BATCH at a time with BPF_MAP_LOOKUP_BATCH where the map type has it. */
function readAll(from: LiveMap, valueSize: number): Entries {
  const s = loadShim();
  const ks = from.spec.keySize;
  const keys: Buffer[] = [];
  const values: Buffer[] = [];
  let count = 0;
  let inBatch: Buffer | null = null;
  const rounds = Math.ceil(from.spec.maxEntries / BATCH) * 2 + 2;
  for (let round = 0; round < rounds; round++) {
    const k = Buffer.alloc(BATCH * ks);
    const v = Buffer.alloc(BATCH * valueSize);
    const n = new Uint32Array([BATCH]);
    const outBatch = Buffer.alloc(Math.max(8, ks)); // a hash map's position; an array's index
    const ret = s.mapLookupBatch(from.fd, inBatch, outBatch, k, v, n, batchOpts(0n));
    if (ret < 0 && ret !== -ENOENT) {
      if (round === 0 && (ret === -EINVAL || ret === -ENOTSUPP || ret === -EOPNOTSUPP)) return readOneByOne(from, valueSize);
      throw new BpfError(`read map ${from.spec.name} (after ${count} entries)`, -ret);
    }
    keys.push(k.subarray(0, n[0] * ks));
    values.push(v.subarray(0, n[0] * valueSize));
    count += n[0];
    if (ret === -ENOENT) break; // the last batch
    inBatch = outBatch;
  }
  return { keys: Buffer.concat(keys), values: Buffer.concat(values), count };
}

/** The kernel reads exactly the map's sizes from user memory: a converter must return them. */
function checkSize(to: LiveMap, what: 'key' | 'value', got: number, want: number): void {
  if (got !== want)
    throw new RangeError(
      `Cannot write map ${to.spec.name}: the converter returned a ${what} of ${got} bytes, the map's ${what}s have ${want}`,
    );
}

function doesNotFit(to: LiveMap, copied: number): MapMigrationError {
  return new MapMigrationError(
    'does-not-fit',
    to.spec.name,
    `map ${to.spec.name}: the new map holds ${to.spec.maxEntries} entries, the pinned one has more (full after ${copied} of them)`,
  );
}

/** Entries to write: `count` keys and values of the new map's sizes, back to back. */
interface Converted {
  keys: Buffer;
  values: Buffer;
  count: number;
  keySize: number;
  valueSize: number;
}

/** Writes entries BATCH at a time (BPF_ANY); undefined when the map type has no batch update. */
function writeBatches(to: LiveMap, e: Converted): number | undefined {
  const s = loadShim();
  let written = 0;
  for (let start = 0; start < e.count; start += BATCH) {
    const want = Math.min(BATCH, e.count - start);
    const n = new Uint32Array([want]);
    const keys = e.keys.subarray(start * e.keySize, (start + want) * e.keySize);
    const values = e.values.subarray(start * e.valueSize, (start + want) * e.valueSize);
    const ret = s.mapUpdateBatch(to.fd, keys, values, n, batchOpts(BPF_ANY));
    if (ret < 0 && start === 0 && (ret === -EINVAL || ret === -ENOTSUPP || ret === -EOPNOTSUPP)) return undefined;
    if (ret === -E2BIG) throw doesNotFit(to, written + n[0]);
    if (ret < 0) throw new BpfError(`write map ${to.spec.name} (${written + n[0]} of ${e.count} written)`, -ret);
    written += want;
  }
  return written;
}

/** Writes entries one by one; with BPF_NOEXIST, keys the map already has are left as they are. */
function writeEach(to: LiveMap, e: Converted, flags: bigint): number {
  const s = loadShim();
  let written = 0;
  for (let i = 0; i < e.count; i++) {
    const key = e.keys.subarray(i * e.keySize, (i + 1) * e.keySize);
    const value = e.values.subarray(i * e.valueSize, (i + 1) * e.valueSize);
    const put = s.mapUpdate(to.fd, key, value, flags);
    if (put === -EEXIST && flags === BPF_NOEXIST) continue;
    if (put === -E2BIG) throw doesNotFit(to, written);
    if (put < 0) throw new BpfError(`write map ${to.spec.name} (entry ${written + 1})`, -put);
    written++;
  }
  return written;
}

/** Writes converted entries: in batches into the empty new map, one by one (new keys only) after the swap. */
function writeAll(to: LiveMap, e: Converted, onlyMissing: boolean): number {
  if (onlyMissing) return writeEach(to, e, BPF_NOEXIST);
  return writeBatches(to, e) ?? writeEach(to, e, BPF_ANY);
}

/** The keys a map holds, as strings (to skip them after the swap). */
function keySet(m: LiveMap, valueSize: number): Set<string> {
  const e = readAll(m, valueSize);
  const ks = m.spec.keySize;
  const out = new Set<string>();
  for (let i = 0; i < e.count; i++) out.add(e.keys.toString('latin1', i * ks, (i + 1) * ks));
  return out;
}

function userCopy(
  method: Extract<CopyMethod, { kind: 'user' | 'plan' }>,
  from: LiveMap,
  to: LiveMap,
  o: CopyOptions,
): CopyResult {
  // array slots always exist: after the swap the new programs own them, nothing is "missing"
  if (o.onlyMissing && isArray(to.spec)) return { entries: 0, copied: 0 };
  const ks = from.spec.keySize;
  const vs = userValueSize(from.spec, o.cpus);
  const nks = to.spec.keySize;
  const nvs = userValueSize(to.spec, o.cpus);
  const old = readAll(from, vs);
  const have = o.onlyMissing ? keySet(to, nvs) : undefined;
  // converted straight into the buffers that are written: no allocation per entry
  const out: Converted = {
    keys: Buffer.alloc(old.count * nks),
    values: Buffer.alloc(old.count * nvs),
    count: 0,
    keySize: nks,
    valueSize: nvs,
  };
  let beyond = 0;
  for (let i = 0; i < old.count; i++) {
    const kAt = out.count * nks;
    const vAt = out.count * nvs;
    if (method.kind === 'plan') {
      applyPlan(method.key, old.keys, i * ks, out.keys, kAt);
      for (let c = 0; c < method.slots; c++)
        applyPlan(method.value, old.values, i * vs + c * method.oldSlot, out.values, vAt + c * method.newSlot);
    } else {
      const e = method.convert(old.keys.subarray(i * ks, (i + 1) * ks), old.values.subarray(i * vs, (i + 1) * vs));
      if (!e) continue;
      checkSize(to, 'key', e.key.length, nks);
      checkSize(to, 'value', e.value.length, nvs);
      e.key.copy(out.keys, kAt);
      e.value.copy(out.values, vAt);
    }
    // an older release knows fewer counters: the slots it has no room for are left behind
    if (isArray(to.spec) && out.keys.readUInt32LE(kAt) >= to.spec.maxEntries) {
      beyond++;
      continue;
    }
    if (have?.has(out.keys.toString('latin1', kAt, kAt + nks))) continue;
    out.count++;
  }
  const copied = writeAll(to, out, o.onlyMissing);
  return beyond ? { entries: old.count, copied, beyond } : { entries: old.count, copied };
}

function socketCopy(
  convertKey: (key: Buffer, cookie: Buffer) => Buffer | undefined,
  from: LiveMap,
  to: LiveMap,
  o: CopyOptions,
): CopyResult {
  const s = loadShim();
  // a sockhash's 8-byte value reads back as the socket's cookie
  const wanted = new Map<bigint, Buffer[]>();
  let entries = 0;
  const old = readOneByOne(from, 8); // sockhashes have no batch lookup
  for (let i = 0; i < old.count; i++) {
    const key = old.keys.subarray(i * from.spec.keySize, (i + 1) * from.spec.keySize);
    const value = old.values.subarray(i * 8, (i + 1) * 8);
    entries++;
    const k = convertKey(key, value);
    if (!k) continue;
    checkSize(to, 'key', k.length, to.spec.keySize);
    if (o.onlyMissing && s.mapLookup(to.fd, k, Buffer.alloc(8)) === 0) continue;
    const cookie = value.readBigUInt64LE(0);
    wanted.set(cookie, [...(wanted.get(cookie) ?? []), k]);
  }
  let copied = 0;
  const cookie = new BigUint64Array(1);
  for (const owner of wanted.size ? o.socketOwners() : []) {
    if (s.socketCookieOf(owner.pid, owner.fd, cookie) < 0) continue; // gone meanwhile
    const keys = wanted.get(cookie[0]);
    if (!keys) continue;
    wanted.delete(cookie[0]);
    for (const k of keys) {
      const ret = s.sockhashAddFromPid(to.fd, k, owner.pid, owner.fd);
      if (ret === -E2BIG) throw doesNotFit(to, copied);
      if (ret < 0)
        throw new BpfError(`put socket ${owner.pid}/${owner.fd} into ${to.spec.name}`, -ret, s.lastError(), { whole: true });
      copied++;
    }
    if (wanted.size === 0) break;
  }
  const unowned = [...wanted.values()].reduce((n, keys) => n + keys.length, 0);
  return unowned ? { entries, copied, unowned } : { entries, copied };
}

/** Copies `from` into `to` with `method`. */
export function copyEntries(method: CopyMethod, from: LiveMap, to: LiveMap, o: CopyOptions): CopyResult {
  switch (method.kind) {
    case 'user':
    case 'plan':
      return userCopy(method, from, to, o);
    case 'sockets':
      return socketCopy(method.convertKey, from, to, o);
    case 'none':
      return { entries: 0, copied: 0 };
  }
}
