/* How full a pinned map is: its entries counted in the kernel against its max_entries. Only map
 * types that fill up have a census: arrays always hold max_entries, socket storage has no limit.
 * Counting reads the map in batches (BPF_MAP_LOOKUP_BATCH, a few syscalls for 100,000 entries);
 * maps without batch lookups (sockhash) are walked key by key with get_next_key. Measured here
 * on 200,000 entries of a hash map: 1.7 s key by key through the FFI, 0.16-0.33 s in batches
 * (2-core VM, load average 15+).
 */
import { possibleCpus } from './cpus';
import { readMapInfo, type MapInfo } from './map';
import { BpfError, checkErrno, loadShim } from './shim';

const ENOENT = 2;
const EINVAL = 22;
const EOPNOTSUPP = 95;
const ENOTSUPP = 524;

/** Map types whose entries come and go up to max_entries, by BPF_MAP_TYPE_* number. */
export const FILLING_MAP_TYPES: ReadonlyMap<number, string> = new Map([
  [1, 'hash'],
  [5, 'percpu_hash'],
  [9, 'lru_hash'],
  [10, 'lru_percpu_hash'],
  [18, 'sockhash'],
]);
const PERCPU_TYPES = new Set([5, 10]);

/** Bytes of keys and values one batch reads: bounded memory whatever the map's size. */
const BATCH_BYTES = 1 << 20;

export interface MapCensus {
  /** the map's name in the kernel (its ELF name, truncated to 15 bytes) */
  name: string;
  type: number;
  maxEntries: number;
  /** entries counted now; undefined for map types that do not fill (arrays, socket storage) */
  entries?: number;
}

/**
 * Sees each key's raw bytes at `offset` in `keys` (a buffer reused between calls: copy what you
 * keep); no Buffer is made per key, which would cost more than the count itself.
 */
export type KeyVisitor = (keys: Buffer, offset: number) => void;

/**
 * Counts the entries of the map pinned at `pinPath`, showing each key to `onKey`. Under
 * concurrent changes a count is a moment's view, bounded by max_entries.
 */
export function censusPinnedMap(pinPath: string, onKey?: KeyVisitor): MapCensus {
  const s = loadShim();
  const fd = checkErrno(s.objGet(pinPath), `open pinned map ${pinPath}`);
  try {
    const info = readMapInfo(fd, pinPath);
    const census: MapCensus = { name: info.name, type: info.type, maxEntries: info.maxEntries };
    if (!FILLING_MAP_TYPES.has(info.type)) return census;
    const entries = countInBatches(fd, info, pinPath, onKey) ?? countKeyByKey(fd, info, pinPath, onKey);
    census.entries = Math.min(entries, info.maxEntries);
    return census;
  } finally {
    s.close(fd);
  }
}

/** Undefined when the map type has no batch lookup (nothing was read then). */
function countInBatches(fd: number, info: MapInfo, what: string, onKey?: KeyVisitor): number | undefined {
  const s = loadShim();
  const valueSize = PERCPU_TYPES.has(info.type) ? Math.ceil(info.valueSize / 8) * 8 * possibleCpus() : info.valueSize;
  // at least 64 a batch: the kernel needs room for a whole hash bucket (ENOSPC otherwise)
  const per = Math.max(64, Math.floor(BATCH_BYTES / (info.keySize + valueSize)));
  const keys = Buffer.alloc(per * info.keySize);
  const values = Buffer.alloc(per * valueSize);
  // the batch token is the kernel's cursor (a bucket number for hash maps): opaque, u32 or a key
  let inBatch = Buffer.alloc(Math.max(8, info.keySize));
  let outBatch = Buffer.alloc(Math.max(8, info.keySize));
  const count = new Uint32Array(1);
  const opts = Buffer.alloc(24);
  opts.writeBigUInt64LE(24n, 0); // sz; elem_flags, flags 0
  let total = 0;
  for (let first = true; ; first = false) {
    count[0] = per;
    const ret = s.mapLookupBatch(fd, first ? null : inBatch, outBatch, keys, values, count, opts);
    if (ret < 0 && ret !== -ENOENT) {
      if (first && (ret === -EINVAL || ret === -EOPNOTSUPP || ret === -ENOTSUPP)) return undefined;
      throw new BpfError(`map batch lookup ${what} (after ${total} entries)`, -ret);
    }
    if (onKey) for (let i = 0; i < count[0]; i++) onKey(keys, i * info.keySize);
    total += count[0];
    if (ret === -ENOENT || total > info.maxEntries * 2) return total; // ENOENT: the walk is complete
    [inBatch, outBatch] = [outBatch, inBatch];
  }
}

function countKeyByKey(fd: number, info: MapInfo, what: string, onKey?: KeyVisitor): number {
  const s = loadShim();
  let prev = Buffer.alloc(info.keySize);
  let next = Buffer.alloc(info.keySize);
  let entries = 0;
  // a walk restarts when its key was deleted meanwhile: twice the size plus slack bounds it
  const limit = info.maxEntries * 2 + 16;
  for (let i = 0; i < limit; i++) {
    const ret = s.mapNextKey(fd, i === 0 ? null : prev, next);
    if (ret === -ENOENT) break;
    if (ret < 0) throw new BpfError(`map iterate ${what}`, -ret);
    entries++;
    onKey?.(next, 0);
    [prev, next] = [next, prev];
  }
  return entries;
}
