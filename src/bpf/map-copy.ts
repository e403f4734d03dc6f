/* Copies the entries of a live map into another, converting each. Maps of data (hash, array, LRU,
 * per-CPU) are read and written from user space. A sockhash (or sockmap) reads back as socket
 * cookies: each socket is found again through a process that holds it (pidfd_getfd) and put
 * into the new map under its converted key. A copy can run twice: before the programs are
 * swapped (everything), and after (only what the new map lacks: entries the old programs
 * created in between).
 */
import { isPerCpu, MAP_TYPE, type MapSpec } from './map-spec';
import { MapMigrationError } from './migration-error';
import { BpfError, loadShim } from './shim';
import type { SocketFd } from './socket-owners';

/** One converted entry; undefined leaves the entry behind. Per-CPU values hold every CPU's slot. */
export type EntryConvert = (key: Buffer, value: Buffer) => { key: Buffer; value: Buffer } | undefined;

export type CopyMethod =
  | { kind: 'user'; convert: EntryConvert }
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

/** Bytes user space reads and writes for one value of this map. */
export function userValueSize(spec: MapSpec, cpus: number): number {
  return isPerCpu(spec.type) ? Math.ceil(spec.valueSize / 8) * 8 * cpus : spec.valueSize;
}

function isArray(spec: MapSpec): boolean {
  return spec.type === MAP_TYPE.array || spec.type === MAP_TYPE.percpu_array;
}

/** Every entry of a map as raw key and value, read with get_next_key (bounded). */
function* rawEntries(from: LiveMap, valueSize: number): Generator<[Buffer, Buffer]> {
  const s = loadShim();
  const key = Buffer.alloc(from.spec.keySize);
  const value = Buffer.alloc(valueSize);
  const limit = from.spec.maxEntries * 2 + 16;
  let prev: Buffer | null = null;
  for (let i = 0; i < limit; i++) {
    const ret = s.mapNextKey(from.fd, prev, key);
    if (ret === -ENOENT) return;
    if (ret < 0) throw new BpfError(`iterate map ${from.spec.name}`, -ret);
    prev = Buffer.from(key);
    const got = s.mapLookup(from.fd, key, value);
    if (got === -ENOENT) continue; // removed while we walked
    if (got < 0) throw new BpfError(`read map ${from.spec.name}`, -got);
    yield [prev, value];
  }
}

/** The kernel reads exactly the map's sizes from user memory: a converter must return them. */
function checkSize(to: LiveMap, what: 'key' | 'value', got: number, want: number): void {
  if (got !== want) throw new RangeError(`Cannot write map ${to.spec.name}: the converter returned a ${what} of ${got} bytes, the map's ${what}s have ${want}`);
}

function doesNotFit(to: LiveMap, copied: number): MapMigrationError {
  return new MapMigrationError(
    'does-not-fit',
    to.spec.name,
    `map ${to.spec.name}: the new map holds ${to.spec.maxEntries} entries, the pinned one has more (full after ${copied} of them)`,
  );
}

function userCopy(convert: EntryConvert, from: LiveMap, to: LiveMap, o: CopyOptions): CopyResult {
  // array slots always exist: after the swap the new programs own them, nothing is "missing"
  if (o.onlyMissing && isArray(to.spec)) return { entries: 0, copied: 0 };
  const s = loadShim();
  let entries = 0;
  let copied = 0;
  let beyond = 0;
  for (const [key, value] of rawEntries(from, userValueSize(from.spec, o.cpus))) {
    entries++;
    const out = convert(key, value);
    if (!out) continue;
    checkSize(to, 'key', out.key.length, to.spec.keySize);
    checkSize(to, 'value', out.value.length, userValueSize(to.spec, o.cpus));
    // an older release knows fewer counters: the slots it has no room for are left behind
    if (isArray(to.spec) && out.key.readUInt32LE(0) >= to.spec.maxEntries) {
      beyond++;
      continue;
    }
    const put = s.mapUpdate(to.fd, out.key, out.value, o.onlyMissing ? BPF_NOEXIST : BPF_ANY);
    if (put === -EEXIST && o.onlyMissing) continue;
    if (put === -E2BIG) throw doesNotFit(to, copied);
    if (put < 0) throw new BpfError(`write map ${to.spec.name} (entry ${copied + 1})`, -put);
    copied++;
  }
  return beyond ? { entries, copied, beyond } : { entries, copied };
}

function socketCopy(convertKey: (key: Buffer, cookie: Buffer) => Buffer | undefined, from: LiveMap, to: LiveMap, o: CopyOptions): CopyResult {
  const s = loadShim();
  // a sockhash's 8-byte value reads back as the socket's cookie
  const wanted = new Map<bigint, Buffer[]>();
  let entries = 0;
  for (const [key, value] of rawEntries(from, 8)) {
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
      if (ret < 0) throw new BpfError(`put socket ${owner.pid}/${owner.fd} into ${to.spec.name}`, -ret, s.lastError(), { whole: true });
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
      return userCopy(method.convert, from, to, o);
    case 'sockets':
      return socketCopy(method.convertKey, from, to, o);
    case 'none':
      return { entries: 0, copied: 0 };
  }
}
