/* Typed eBPF maps: a raw map fd plus the codec of its key and value, converted once where the
 * map enters the code. Batch updates are used where the kernel has them.
 */
import { possibleCpus } from './cpus';
import { MapMigrationError } from './migration-error';
import { checkErrno, loadShim } from './shim';

export interface Codec<T> {
  readonly size: number;
  encode(value: T, into: Buffer, offset: number): void;
  decode(from: Buffer, offset: number): T;
}

const BPF_ANY = 0n;
const BPF_NOEXIST = 1n;
const ENOENT = 2;
const EINVAL = 22;
const ENOTSUPP = 524;
const EOPNOTSUPP = 95;
/* BPF_MAP_TYPE_PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH */
const PERCPU_TYPES = new Set([5, 6, 10]);

export interface MapInfo {
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
}

/** struct bpf_map_info of a map fd; `what` names the map in the error. */
export function readMapInfo(fd: number, what: string): MapInfo {
  const buf = Buffer.alloc(96);
  const len = new Uint32Array([buf.length]);
  checkErrno(loadShim().mapInfo(fd, buf, len), `map info ${what}`);
  const nameBytes = buf.subarray(24, 40);
  const end = nameBytes.indexOf(0);
  return {
    type: buf.readUInt32LE(0),
    id: buf.readUInt32LE(4),
    keySize: buf.readUInt32LE(8),
    valueSize: buf.readUInt32LE(12),
    maxEntries: buf.readUInt32LE(16),
    flags: buf.readUInt32LE(20),
    name: nameBytes.subarray(0, end < 0 ? 16 : end).toString(),
  };
}

/** Bytes as they are: for maps whose layout the caller does not know. */
function rawCodec(size: number): Codec<Buffer> {
  return {
    size,
    encode(v, b, o) {
      v.copy(b, o, 0, size);
    },
    decode(b, o) {
      return Buffer.from(b.subarray(o, o + size));
    },
  };
}

export class BpfMap<K, V> {
  private readonly keyBuf: Buffer;
  private readonly valBuf: Buffer;
  private batchSupported = true;
  private owned = true;

  private constructor(
    readonly name: string,
    private fd: number,
    readonly key: Codec<K>,
    readonly value: Codec<V>,
  ) {
    this.keyBuf = Buffer.alloc(key.size);
    this.valBuf = Buffer.alloc(value.size);
  }

  /** Wraps an fd owned by someone else (a loaded object); close() will not close it. */
  static fromFd<K, V>(name: string, fd: number, key: Codec<K>, value: Codec<V>): BpfMap<K, V> {
    const m = new BpfMap(name, fd, key, value);
    m.checkLayout();
    m.owned = false;
    return m;
  }

  /** Opens a pinned map; the caller owns the fd and must close(). */
  static openPinned<K, V>(pinPath: string, key: Codec<K>, value: Codec<V>): BpfMap<K, V> {
    const s = loadShim();
    const fd = checkErrno(s.objGet(pinPath), `open pinned map ${pinPath}`);
    const m = new BpfMap(pinPath, fd, key, value);
    try {
      m.checkLayout();
    } catch (e) {
      s.close(fd);
      throw e;
    }
    return m;
  }

  /**
   * Opens a pinned map of any layout, keys and values as raw bytes, sized from what the kernel
   * reports (for inspection: counting entries, dumping); the caller owns the fd and must close().
   */
  static openPinnedRaw(pinPath: string): BpfMap<Buffer, Buffer> {
    const s = loadShim();
    const fd = checkErrno(s.objGet(pinPath), `open pinned map ${pinPath}`);
    let i: MapInfo;
    try {
      i = new BpfMap(pinPath, fd, rawCodec(0), rawCodec(0)).info();
    } catch (e) {
      s.close(fd);
      throw e;
    }
    const valueSize = PERCPU_TYPES.has(i.type) ? Math.ceil(i.valueSize / 8) * 8 * possibleCpus() : i.valueSize;
    return new BpfMap(pinPath, fd, rawCodec(i.keySize), rawCodec(valueSize));
  }

  info(): MapInfo {
    return readMapInfo(this.fd, this.name);
  }

  private checkLayout(): void {
    const i = this.info();
    // Per-CPU maps report one CPU's value size; user space reads one 8-byte-aligned slot per CPU.
    const valueSize = PERCPU_TYPES.has(i.type) ? Math.ceil(i.valueSize / 8) * 8 * possibleCpus() : i.valueSize;
    if (i.keySize !== this.key.size || valueSize !== this.value.size) {
      throw new MapMigrationError(
        'incompatible',
        this.name,
        `Cannot use map ${this.name}: the kernel's has key ${i.keySize}/value ${valueSize} bytes, this release reads ${this.key.size}/${this.value.size} ` +
          '(another release pinned it: the agent migrates it at start, `sluice bpf migrate` with the agent stopped)',
      );
    }
  }

  get(k: K): V | undefined {
    this.key.encode(k, this.keyBuf, 0);
    const ret = loadShim().mapLookup(this.fd, this.keyBuf, this.valBuf);
    if (ret === -ENOENT) return undefined;
    checkErrno(ret, `map lookup ${this.name}`);
    return this.value.decode(this.valBuf, 0);
  }

  /** Inserts or replaces; a full map throws a BpfError with errno E2BIG. */
  set(k: K, v: V, opts: { onlyNew?: boolean } = {}): void {
    this.key.encode(k, this.keyBuf, 0);
    this.value.encode(v, this.valBuf, 0);
    const ret = loadShim().mapUpdate(this.fd, this.keyBuf, this.valBuf, opts.onlyNew ? BPF_NOEXIST : BPF_ANY);
    checkErrno(ret, `map update ${this.name}`);
  }

  /** Deletes; returns false when the key was absent. */
  delete(k: K): boolean {
    this.key.encode(k, this.keyBuf, 0);
    const ret = loadShim().mapDelete(this.fd, this.keyBuf);
    if (ret === -ENOENT) return false;
    checkErrno(ret, `map delete ${this.name}`);
    return true;
  }

  /** Writes many entries, in order, with BPF_MAP_UPDATE_BATCH where the kernel has it. */
  setMany(entries: Array<[K, V]>): void {
    if (entries.length === 0) return;
    if (this.batchSupported) {
      const chunk = 4096;
      for (let start = 0; start < entries.length; start += chunk) {
        const part = entries.slice(start, start + chunk);
        const keys = Buffer.alloc(part.length * this.key.size);
        const vals = Buffer.alloc(part.length * this.value.size);
        part.forEach(([k, v], i) => {
          this.key.encode(k, keys, i * this.key.size);
          this.value.encode(v, vals, i * this.value.size);
        });
        const count = new Uint32Array([part.length]);
        const opts = Buffer.alloc(24);
        opts.writeBigUInt64LE(24n, 0); // sz; elem_flags = BPF_ANY, flags = 0
        const ret = loadShim().mapUpdateBatch(this.fd, keys, vals, count, opts);
        if (ret === -EINVAL || ret === -ENOTSUPP || ret === -EOPNOTSUPP) {
          if (start !== 0) checkErrno(ret, `map batch update ${this.name}`);
          this.batchSupported = false;
          break;
        }
        checkErrno(ret, `map batch update ${this.name} (${count[0]} of ${part.length} written)`);
      }
      if (this.batchSupported) return;
    }
    for (const [k, v] of entries) this.set(k, v);
  }

  /** All keys, read with get_next_key (bounded by the map's max entries, plus slack). */
  keys(): K[] {
    const s = loadShim();
    const out: K[] = [];
    const limit = this.info().maxEntries * 2 + 16;
    let prev: Buffer | null = null;
    const next = Buffer.alloc(this.key.size);
    for (let i = 0; i < limit; i++) {
      const ret = s.mapNextKey(this.fd, prev, next);
      if (ret === -ENOENT) break;
      checkErrno(ret, `map iterate ${this.name}`);
      out.push(this.key.decode(next, 0));
      prev = Buffer.from(next);
    }
    return out;
  }

  entries(): Array<[K, V]> {
    const out: Array<[K, V]> = [];
    for (const k of this.keys()) {
      const v = this.get(k);
      if (v !== undefined) out.push([k, v]);
    }
    return out;
  }

  close(): void {
    if (this.owned && this.fd >= 0) loadShim().close(this.fd);
    this.fd = -1;
  }
}

/**
 * Opens several pinned maps together: all or none (the ones already open are closed when one
 * fails). `open(name, key, value)` is called in order by the builder.
 */
export function openPinnedSet<T>(
  pinDir: string,
  build: (open: <K, V>(name: string, key: Codec<K>, value: Codec<V>) => BpfMap<K, V>) => T,
): T {
  const opened: Array<BpfMap<unknown, unknown>> = [];
  try {
    return build((name, key, value) => {
      const m = BpfMap.openPinned(`${pinDir}/${name}`, key, value);
      opened.push(m as BpfMap<unknown, unknown>);
      return m;
    });
  } catch (e) {
    for (const m of opened) m.close();
    throw e;
  }
}
