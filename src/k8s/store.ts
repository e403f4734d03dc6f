/*
 * In-memory cache of the cluster objects the agent follows, fed by one or more
 * ClusterSources. Every object is claimed by a "source" (a file path, the API
 * server, ...). When several sources claim the same key, the one whose name
 * sorts last wins: for a directory of manifests that is "the file read last in
 * sorted order", independent of the order events arrived in.
 *
 * Only effective changes are emitted: re-delivering an object that is deep
 * equal (ignoring metadata.resourceVersion) is silent, so consumers can
 * recompute on every event without churn.
 */
import { EventEmitter } from 'node:events';
import { log } from '../log';
import type { K8sKind, K8sObject, KindMap } from './types';
import { objectKey } from './validate';

export type ChangeEvent =
  | { type: 'upsert'; kind: K8sKind; key: string; obj: K8sObject; old?: K8sObject; revision: number }
  | { type: 'delete'; kind: K8sKind; key: string; obj?: undefined; old: K8sObject; revision: number };

/** Source used by upsert/delete when none is given. */
export const DEFAULT_SOURCE = 'default';

export interface SourceOption {
  /** Which origin supplies (or withdraws) the object. Default DEFAULT_SOURCE. */
  source?: string;
}

/** Deep equality of JSON-like values; keys whose value is undefined count as absent. */
function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!deepEqual(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  return sameFields(a as Record<string, unknown>, b as Record<string, unknown>);
}

/** Field-wise equality of two plain objects, optionally ignoring one key. */
function sameFields(a: Record<string, unknown>, b: Record<string, unknown>, ignore?: string): boolean {
  let aCount = 0;
  for (const k in a) {
    if (k === ignore || a[k] === undefined) continue;
    aCount++;
    if (!deepEqual(a[k], b[k])) return false;
  }
  let bCount = 0;
  for (const k in b) if (k !== ignore && b[k] !== undefined) bCount++;
  return aCount === bCount;
}

/** Equal for our purposes: the API server bumps resourceVersion on changes we do not model. */
export function sameObject(a: K8sObject, b: K8sObject): boolean {
  if (a === b) return true;
  const top = a as unknown as Record<string, unknown>;
  const other = b as unknown as Record<string, unknown>;
  return (
    sameFields(top, other, 'metadata') &&
    sameFields(
      a.metadata as unknown as Record<string, unknown>,
      b.metadata as unknown as Record<string, unknown>,
      'resourceVersion',
    )
  );
}

/** One source's claim on a key: the common case, without a Map per key (a Map costs ~300 bytes). */
interface Claim {
  source: string;
  obj: K8sObject;
}

/** The claims on one key: one, or (two sources defining the same object) several by source. */
type Claims = Claim | Map<string, K8sObject>;

/** The object that wins for a key: the source whose name sorts last. */
function winner(claims: Claims): K8sObject | undefined {
  if (!(claims instanceof Map)) return claims.obj;
  let best: [string, K8sObject] | undefined;
  for (const entry of claims) if (best === undefined || entry[0] > best[0]) best = entry;
  return best?.[1];
}

export class ObjectStore extends EventEmitter<{ change: [ev: ChangeEvent] }> {
  /** key -> the object each source supplies for it. */
  private readonly claims = new Map<string, Claims>();
  /** source -> keys it claims, so replaceAll can find what a source withdrew. */
  private readonly keysBySource = new Map<string, Set<string>>();
  /** kind -> key -> effective object (a key starts with its kind: objectKey) */
  private readonly byKind = new Map<K8sKind, Map<string, K8sObject>>();
  private count = 0;
  /** Sorted list(kind) results, dropped when that kind changes. */
  private readonly listCache = new Map<K8sKind, readonly K8sObject[]>();
  private rev = 0;

  /** Number of effective changes applied so far (each emitted event counts one). */
  get revision(): number {
    return this.rev;
  }

  /** Number of distinct keys held. */
  get size(): number {
    return this.count;
  }

  get(key: string): K8sObject | undefined {
    return this.byKind.get(key.slice(0, key.indexOf('/')) as K8sKind)?.get(key);
  }

  /** Objects of one kind, sorted by key. The array is shared: do not mutate it. */
  list<K extends K8sKind>(kind: K): readonly KindMap[K][] {
    let cached = this.listCache.get(kind);
    if (cached === undefined) {
      const entries = [...(this.byKind.get(kind) ?? new Map<string, K8sObject>())];
      entries.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
      cached = entries.map((e) => e[1]);
      this.listCache.set(kind, cached);
    }
    return cached as readonly KindMap[K][];
  }

  /** Adds or replaces the object `source` supplies for its key. Returns whether the effective object changed. */
  upsert(obj: K8sObject, opts: SourceOption = {}): boolean {
    const source = opts.source ?? DEFAULT_SOURCE;
    const key = objectKey(obj);
    this.claim(source, key, obj);
    this.sourceKeys(source).add(key);
    return this.commit([key]) > 0;
  }

  /**
   * Withdraws the object `source` supplied for key. If another source also
   * supplies it, that version becomes effective. Returns whether the effective object changed.
   */
  delete(key: string, opts: SourceOption = {}): boolean {
    const source = opts.source ?? DEFAULT_SOURCE;
    this.unclaim(source, key);
    return this.commit([key]) > 0;
  }

  /**
   * Atomically replaces everything `source` supplies with objs (an empty list
   * withdraws it all). Listeners run after the whole batch is applied, so they
   * see the final state. Duplicate keys within objs: the last one wins.
   * Returns the number of effective changes.
   */
  replaceAll(source: string, objs: readonly K8sObject[]): number {
    const next = new Map<string, K8sObject>();
    for (const obj of objs) {
      const key = objectKey(obj);
      if (next.has(key)) log.warn('Duplicate object in one source; the later one wins', { source, key });
      next.set(key, obj);
    }
    const previous = this.keysBySource.get(source) ?? new Set<string>();
    const touched = new Set<string>(previous);
    for (const key of previous) if (!next.has(key)) this.unclaim(source, key);
    for (const [key, obj] of next) {
      this.claim(source, key, obj);
      touched.add(key);
    }
    if (next.size === 0) this.keysBySource.delete(source);
    else this.keysBySource.set(source, new Set(next.keys()));
    return this.commit([...touched].sort());
  }

  /** Sources currently supplying at least one object, sorted. */
  sources(): string[] {
    return [...this.keysBySource.keys()].sort();
  }

  private sourceKeys(source: string): Set<string> {
    let keys = this.keysBySource.get(source);
    if (keys === undefined) this.keysBySource.set(source, (keys = new Set()));
    return keys;
  }

  private claim(source: string, key: string, obj: K8sObject): void {
    let claims = this.claims.get(key);
    if (claims === undefined || (!(claims instanceof Map) && claims.source === source)) {
      this.claims.set(key, { source, obj });
      return;
    }
    if (!(claims instanceof Map)) this.claims.set(key, (claims = new Map([[claims.source, claims.obj]])));
    const isNewConflict = !claims.has(source);
    claims.set(source, obj);
    if (isNewConflict) {
      const sources = [...claims.keys()].sort();
      log.warn('Object defined by several sources; the last in sorted order wins', {
        key,
        winner: sources[sources.length - 1],
        sources,
      });
    }
  }

  private unclaim(source: string, key: string): void {
    const claims = this.claims.get(key);
    if (claims === undefined) return;
    if (!(claims instanceof Map)) {
      if (claims.source === source) this.claims.delete(key);
    } else {
      claims.delete(source);
      if (claims.size === 1) {
        const [[other, obj]] = claims;
        this.claims.set(key, { source: other, obj });
      }
    }
    const keys = this.keysBySource.get(source);
    if (keys !== undefined) {
      keys.delete(key);
      if (keys.size === 0) this.keysBySource.delete(source);
    }
  }

  /** Recomputes the effective object of each key, applies all differences, then emits them. */
  private commit(keys: Iterable<string>): number {
    const events: ChangeEvent[] = [];
    for (const key of keys) {
      const claims = this.claims.get(key);
      const next = claims === undefined ? undefined : winner(claims);
      const old = this.get(key);
      if (next === undefined) {
        if (old === undefined) continue;
        this.setCurrent(key, old.kind, undefined);
        events.push({ type: 'delete', kind: old.kind, key, old, revision: ++this.rev });
      } else if (old === undefined || !sameObject(old, next)) {
        this.setCurrent(key, next.kind, next);
        events.push({ type: 'upsert', kind: next.kind, key, obj: next, old, revision: ++this.rev });
      } else if (old !== next) {
        // Same content (e.g. only resourceVersion moved): keep the newer copy, silently.
        this.setCurrent(key, next.kind, next);
      }
    }
    for (const ev of events) this.emit('change', ev);
    return events.length;
  }

  private setCurrent(key: string, kind: K8sKind, obj: K8sObject | undefined): void {
    let ofKind = this.byKind.get(kind);
    if (ofKind === undefined) this.byKind.set(kind, (ofKind = new Map()));
    if (obj === undefined) {
      if (ofKind.delete(key)) this.count--;
    } else {
      if (!ofKind.has(key)) this.count++;
      ofKind.set(key, obj);
    }
    this.listCache.delete(kind);
  }
}
