/* Keeps the socket-LB maps equal to the desired frontends, writing only differences. The maps are
 * the source of truth: restore() reads them back after a restart, so an unchanged service is never
 * rewritten and no connection fails while the agent restarts or resyncs.
 *
 * Write order keeps every intermediate state valid for the programs: new backends, then slots,
 * then the service entry (its count), then surplus slots, removed services and unused backends.
 */
import { BpfError } from '../bpf';
import {
  IPPROTO_TCP,
  IPPROTO_UDP,
  protoName,
  protoNumber,
  SVC_F_AFFINITY,
  SVC_F_EXTERNAL,
  SVC_F_NO_LOCAL,
  SVC_F_NODEPORT,
  type Backend,
  type DeadKey,
  type SvcKey,
  type SvcVal,
} from '../bpf/layout';
import type { LbMaps } from './maps';
import type { LbFrontend } from './model';

const E2BIG = 7;
/** frontends written per step of a full sync */
const APPLY_CHUNK = 2000;

interface Programmed {
  vip: string;
  port: number;
  proto: number;
  id: number;
  flags: number;
  affinitySec: number;
  backendIds: number[];
  /** highest slot number that may exist in the map (for cleanup after partial writes) */
  slotsPresent: number;
  /** set when a write failed: rewrite on the next apply */
  dirty: boolean;
}

interface Change {
  f: LbFrontend;
  cur?: Programmed;
  next: Programmed;
}

export interface SyncFailure {
  frontend: string;
  service: string;
  reason: string;
}

/**
 * A backend that left a frontend it was programmed in: its endpoint was deleted, or is neither
 * ready nor serving any more, or the frontend itself went away. (An endpoint that is still ready
 * or serving but no longer chosen here, by topology hints or a traffic policy, has not left.)
 * Sockets the frontend translated to it are to be destroyed (src/lb/sock-destroy.ts). Named by
 * addresses, as sockets record their translation (struct sl_sock_rev_entry): the frontend's key
 * (vip: a nodePort's is the unspecified address) and the backend.
 */
export interface Departure extends DeadKey {
  /** the frontend's id (`ip:port/PROTO`) */
  frontend: string;
}

export interface SyncReport {
  added: number;
  updated: number;
  removed: number;
  unchanged: number;
  backends: number;
  failed: SyncFailure[];
}

/** `ip:port/PROTO`, IPv6 in brackets: the id of a frontend, as the model and the CLI print it. */
export function frontendId(ip: string, port: number, proto: string): string {
  return `${ip.includes(':') ? `[${ip}]` : ip}:${port}/${proto}`;
}

/**
 * A backend's identity as a Map key. An IPv4 backend of TCP or UDP is one number (address, port
 * and protocol packed below 2^49): a full sync looks up 500,000 of them, and building and hashing
 * a string for each was a good part of its time. Anything else is `ip|port|proto`.
 */
type BackendKey = number | string;

function backendKey(b: Backend): BackendKey {
  if (b.proto === IPPROTO_TCP || b.proto === IPPROTO_UDP) {
    const v4 = ipv4Number(b.ip);
    if (v4 >= 0) return (v4 * 65536 + b.port) * 2 + (b.proto === IPPROTO_UDP ? 1 : 0);
  }
  return `${b.ip}|${b.port}|${b.proto}`;
}

/** The backend a key stands for (departures name their backend by address). */
function backendOfKey(k: BackendKey): Backend {
  if (typeof k === 'string') {
    const [ip, port, proto] = k.split('|');
    return { ip, port: Number(port), proto: Number(proto) };
  }
  const proto = k % 2 ? IPPROTO_UDP : IPPROTO_TCP;
  const port = Math.floor(k / 2) % 65536;
  const ip = Math.floor(k / 131072);
  return { ip: `${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`, port, proto };
}

/** A canonical dotted-quad IPv4 address as a number; -1 for anything else (IPv6). */
function ipv4Number(ip: string): number {
  let n = 0;
  let octet = 0;
  let dots = 0;
  for (let i = 0; i < ip.length; i++) {
    const c = ip.charCodeAt(i);
    if (c === 46) {
      n = n * 256 + octet;
      octet = 0;
      dots++;
    } else if (c >= 48 && c <= 57) octet = octet * 10 + (c - 48);
    else return -1;
  }
  return dots === 3 ? n * 256 + octet : -1;
}

export class LbSync {
  private readonly services = new Map<string, Programmed>();
  private readonly backendIds = new Map<BackendKey, number>();
  /** backend id -> its key (ip|port|proto): ids in use, and what to forget when one goes */
  private readonly backends = new Map<number, BackendKey>();
  /** backend id -> how many programmed services use it (absent: none) */
  private readonly refs = new Map<number, number>();
  /** backend ids that may have lost their last user: removed from the map at the end of an apply */
  private readonly unreferenced = new Set<number>();
  private readonly usedSvcIds = new Set<number>();
  private nextBackendId = 1;
  private nextSvcId = 1;
  /** departures since the last takeDepartures() */
  private departures: Departure[] = [];

  constructor(private readonly maps: LbMaps) {}

  /** Rebuilds the in-memory view from the pinned maps (agent restart). */
  restore(): { services: number; backends: number } {
    this.services.clear();
    this.backendIds.clear();
    this.backends.clear();
    this.refs.clear();
    this.unreferenced.clear();
    this.usedSvcIds.clear();
    for (const [id, b] of this.maps.backend.entries()) {
      const key = backendKey(b);
      this.backends.set(id, key);
      this.backendIds.set(key, id);
    }
    const slots = new Map<string, Map<number, number>>();
    const slotKeys = new Map<string, SvcKey[]>();
    for (const [k, v] of this.maps.svc.entries()) {
      const fid = frontendId(k.vip, k.port, protoName(k.proto));
      if (k.slot === 0) {
        this.services.set(fid, {
          vip: k.vip,
          port: k.port,
          proto: k.proto,
          id: v.id,
          flags: v.flags,
          affinitySec: v.affinitySec,
          backendIds: [],
          slotsPresent: v.count,
          dirty: false,
        });
        this.usedSvcIds.add(v.id);
      } else {
        if (!slots.has(fid)) slots.set(fid, new Map());
        slots.get(fid)!.set(k.slot, v.id);
        if (!slotKeys.has(fid)) slotKeys.set(fid, []);
        slotKeys.get(fid)!.push(k);
      }
    }
    for (const [fid, p] of this.services) {
      const s = slots.get(fid) ?? new Map<number, number>();
      for (let i = 1; i <= p.slotsPresent; i++) {
        const id = s.get(i);
        if (id === undefined || !this.backends.has(id)) p.dirty = true;
        p.backendIds.push(id ?? 0);
      }
      p.slotsPresent = Math.max(p.slotsPresent, ...s.keys(), 0);
    }
    // Slots whose service entry is gone (a crash mid-removal) are removed on the next apply.
    for (const [fid, keys] of slotKeys) {
      if (!this.services.has(fid)) for (const k of keys) this.maps.svc.delete(k);
    }
    for (const p of this.services.values()) this.reference(p.backendIds, 1);
    for (const id of this.backends.keys()) if (!this.refs.has(id)) this.unreferenced.add(id);
    for (const id of this.backends.keys()) this.nextBackendId = Math.max(this.nextBackendId, id + 1);
    for (const id of this.usedSvcIds) this.nextSvcId = Math.max(this.nextSvcId, id + 1);
    return { services: this.services.size, backends: this.backends.size };
  }

  private allocSvcId(): number {
    while (this.usedSvcIds.has(this.nextSvcId) || this.nextSvcId === 0) this.nextSvcId = (this.nextSvcId + 1) >>> 0;
    const id = this.nextSvcId;
    this.usedSvcIds.add(id);
    this.nextSvcId = (this.nextSvcId + 1) >>> 0;
    return id;
  }

  private allocBackendId(): number {
    while (this.backends.has(this.nextBackendId) || this.nextBackendId === 0) this.nextBackendId = (this.nextBackendId + 1) >>> 0;
    return this.nextBackendId++;
  }

  /**
   * Writes the differences between the maps and `desired`. With `scope`, desired speaks only for
   * those frontend ids (the frontends of the Services that changed): others are left alone.
   * A full sync is written in chunks, then the removals: the transient buffers of one chunk, not
   * of 10,000 Services at once, set the agent's peak memory.
   */
  apply(desired: LbFrontend[], opts: { scope?: Set<string> } = {}): SyncReport {
    if (opts.scope || desired.length <= APPLY_CHUNK) return this.applyScoped(desired, opts.scope);
    const chunks = function* () {
      for (let i = 0; i < desired.length; i += APPLY_CHUNK) yield desired.slice(i, i + APPLY_CHUNK);
    };
    return this.applyChunks({ chunks: chunks() });
  }

  /**
   * Writes a batch that comes in chunks (ServiceTracker.collectChunks): with `scope`, the chunks
   * speak for those frontend ids only; without, for all of them, and every frontend no chunk
   * holds is removed at the end. Each chunk is written before the next is taken.
   */
  applyChunks(batch: { chunks: Iterable<LbFrontend[]>; scope?: Set<string> }): SyncReport {
    const total: SyncReport = { added: 0, updated: 0, removed: 0, unchanged: 0, backends: 0, failed: [] };
    const add = (r: SyncReport) => {
      total.added += r.added;
      total.updated += r.updated;
      total.removed += r.removed;
      total.unchanged += r.unchanged;
      total.backends = r.backends;
      total.failed.push(...r.failed);
    };
    if (batch.scope) {
      const desired: LbFrontend[] = [];
      for (const chunk of batch.chunks) desired.push(...chunk);
      add(this.applyScoped(desired, batch.scope));
      return total;
    }
    const wanted = new Set<string>();
    for (const chunk of batch.chunks) {
      for (let i = 0; i < chunk.length; i += APPLY_CHUNK) {
        const part = chunk.slice(i, i + APPLY_CHUNK);
        const ids = new Set(part.map((f) => f.id));
        for (const id of ids) wanted.add(id);
        add(this.applyScoped(part, ids));
      }
    }
    add(this.applyScoped([], new Set([...this.services.keys()].filter((id) => !wanted.has(id)))));
    return total;
  }

  private applyScoped(desired: LbFrontend[], scope?: Set<string>): SyncReport {
    const opts = { scope };
    const report: SyncReport = { added: 0, updated: 0, removed: 0, unchanged: 0, backends: 0, failed: [] };
    const failed = new Map<string, string>(); // frontend id -> reason
    const wanted = new Map<string, LbFrontend>();
    for (const f of desired) wanted.set(f.id, f);
    const affinityDropped = new Map<number, Set<number>>(); // svc id -> backend ids no longer in it

    // 1. services no longer wanted, first so that their room is free for new ones: the service
    //    entry first (lookups then miss), then its slots. A scoped apply looks at its scope only
    //    (a full sync applies thousands of chunks against 100,000 programmed services).
    for (const fid of opts.scope ?? [...this.services.keys()]) {
      const p = this.services.get(fid);
      if (p === undefined || wanted.has(fid)) continue;
      this.deleteSlots(p, 0, p.slotsPresent);
      this.departed(fid, p, p.backendIds);
      if (p.flags & SVC_F_AFFINITY) affinityDropped.set(p.id, new Set(p.backendIds));
      this.services.delete(fid);
      this.reference(p.backendIds, -1);
      this.usedSvcIds.delete(p.id);
      report.removed++;
    }

    // 2. backends that are new
    this.addBackends(wanted, failed);

    // 3. new and changed services: slots, then the service entry that makes them live
    const changes: Change[] = [];
    for (const f of wanted.values()) {
      if (failed.has(f.id)) continue;
      const proto = protoNumber(f.proto);
      const ids = f.backends.map((b) => this.backendIds.get(backendKey({ ip: b.ip, port: b.port, proto })));
      if (ids.some((id) => id === undefined)) {
        failed.set(f.id, 'a backend could not be written');
        continue;
      }
      const flags =
        (f.affinityTimeoutSec > 0 ? SVC_F_AFFINITY : 0) |
        (f.scope === 'externalIP' || f.scope === 'loadBalancerIP' ? SVC_F_EXTERNAL : 0) |
        (f.scope === 'nodePort' ? SVC_F_NODEPORT : 0) |
        (f.noLocalEndpoints ? SVC_F_NO_LOCAL : 0);
      const cur = this.services.get(f.id);
      const same =
        cur &&
        !cur.dirty &&
        cur.flags === flags &&
        cur.affinitySec === f.affinityTimeoutSec &&
        cur.backendIds.length === ids.length &&
        cur.backendIds.every((id, i) => id === ids[i]);
      if (same) {
        report.unchanged++;
        continue;
      }
      changes.push({
        f,
        cur,
        next: {
          vip: f.ip,
          port: f.port,
          proto,
          id: cur?.id ?? this.allocSvcId(),
          flags,
          affinitySec: f.affinityTimeoutSec,
          backendIds: ids as number[],
          slotsPresent: Math.max(cur?.slotsPresent ?? 0, ids.length),
          dirty: false,
        },
      });
    }
    this.writeServices(changes, failed);

    // 4. surplus slots, then record the result
    for (const { f, cur, next } of changes) {
      if (failed.has(f.id)) {
        if (cur)
          cur.dirty = true; // the old entry still serves; rewrite on the next sync
        else this.usedSvcIds.delete(next.id);
        continue;
      }
      this.deleteSlots(next, next.backendIds.length + 1, next.slotsPresent);
      next.slotsPresent = next.backendIds.length;
      if (cur) {
        report.updated++;
        const keep = new Set(next.backendIds);
        const gone = cur.backendIds.filter((id) => !keep.has(id));
        if (gone.length && cur.flags & SVC_F_AFFINITY) affinityDropped.set(cur.id, new Set(gone));
        if (gone.length) {
          const serving = new Set(f.stillServing.map((b) => backendKey({ ip: b.ip, port: b.port, proto: next.proto })));
          this.departed(
            f.id,
            cur,
            gone.filter((id) => !serving.has(this.backends.get(id) ?? -1)),
          );
        }
      } else report.added++;
      this.services.set(f.id, next);
      this.reference(next.backendIds, 1);
      if (cur) this.reference(cur.backendIds, -1);
    }

    // 5. backends nobody references any more
    for (const id of this.unreferenced) {
      const key = this.backends.get(id);
      if (this.refs.has(id) || key === undefined) continue;
      this.maps.backend.delete(id);
      this.backends.delete(id);
      this.backendIds.delete(key);
    }
    this.unreferenced.clear();
    if (affinityDropped.size) this.dropAffinity(affinityDropped);

    report.backends = this.backends.size;
    for (const [fid, reason] of failed) {
      report.failed.push({ frontend: fid, service: wanted.get(fid)?.service ?? '', reason });
    }
    return report;
  }

  /** Counts services' uses of backends; one that drops to none is a candidate for removal. */
  private reference(backendIds: readonly number[], delta: 1 | -1): void {
    for (const id of backendIds) {
      if (id === 0) continue; // a slot restore found missing
      const n = (this.refs.get(id) ?? 0) + delta;
      if (n > 0) this.refs.set(id, n);
      else {
        this.refs.delete(id);
        this.unreferenced.add(id);
      }
    }
  }

  /** Records backends that left a frontend (before an unreferenced backend is forgotten). */
  private departed(frontend: string, p: Pick<Programmed, 'vip' | 'port' | 'proto'>, backendIds: readonly number[]): void {
    for (const backendId of backendIds) {
      const key = this.backends.get(backendId);
      if (key === undefined) continue;
      const b = backendOfKey(key);
      this.departures.push({ frontend, vip: p.vip, vipPort: p.port, backend: b.ip, backendPort: b.port, proto: p.proto });
    }
  }

  /** The departures since the last call, oldest first; the list starts empty again. */
  takeDepartures(): Departure[] {
    const out = this.departures;
    this.departures = [];
    return out;
  }

  /** Deletes slots from..to of a service (slot 0 is the service entry itself). */
  private deleteSlots(p: Programmed, from: number, to: number): void {
    for (let slot = from; slot <= to; slot++) this.maps.svc.delete({ vip: p.vip, port: p.port, proto: p.proto, slot });
  }

  /** Writes the backends the wanted services need and the map lacks; first fit when it is full. */
  private addBackends(wanted: Map<string, LbFrontend>, failed: Map<string, string>): void {
    const entries: Array<[number, Backend]> = [];
    const keys: BackendKey[] = [];
    for (const f of wanted.values()) {
      const proto = protoNumber(f.proto);
      for (const b of f.backends) {
        const bk = backendKey({ ip: b.ip, port: b.port, proto });
        if (this.backendIds.has(bk)) continue;
        const id = this.allocBackendId();
        entries.push([id, { ip: b.ip, port: b.port, proto }]);
        keys.push(bk);
        // reserved now (later frontends of this batch find it); forgotten again if the write fails
        this.backendIds.set(bk, id);
        this.backends.set(id, bk);
        this.unreferenced.add(id); // until a service that uses it is programmed
      }
    }
    let reasons: Array<string | undefined> | undefined;
    try {
      this.maps.backend.setMany(entries);
    } catch (e) {
      if (!(e instanceof BpfError)) throw e;
      reasons = entries.map(([id, be]) => this.tryWrite(() => this.maps.backend.set(id, be)));
    }
    if (!reasons?.some((r) => r !== undefined)) return;
    // the frontends that needed a backend that could not be written fail (rare: found afterwards)
    const why = new Map<BackendKey, string>();
    entries.forEach(([id], i) => {
      const reason = reasons[i];
      if (reason === undefined) return;
      why.set(keys[i], reason);
      this.backendIds.delete(keys[i]);
      this.backends.delete(id);
    });
    for (const f of wanted.values()) {
      const proto = protoNumber(f.proto);
      for (const b of f.backends) {
        const reason = why.get(backendKey({ ip: b.ip, port: b.port, proto }));
        if (reason !== undefined && !failed.has(f.id)) failed.set(f.id, reason);
      }
    }
  }

  /** Runs a map write; returns why it failed, or undefined. */
  private tryWrite(write: () => void): string | undefined {
    try {
      write();
      return undefined;
    } catch (e) {
      if (!(e instanceof BpfError)) throw e;
      return e.errno === E2BIG ? `${e.op}: map is full` : e.message;
    }
  }

  /**
   * Programs changed services. Fast path: all slots in one batch, then all service entries in one.
   * When the map fills up, undo the slots the batch may have added and go service by service
   * (first fit), so a service is either wholly programmed or left as it was, never half.
   */
  private writeServices(changes: Change[], failed: Map<string, string>): void {
    const key = (p: Programmed, slot: number): SvcKey => ({ vip: p.vip, port: p.port, proto: p.proto, slot });
    const slotVal = (id: number): SvcVal => ({ id, count: 0, flags: 0, affinitySec: 0 });
    const entryVal = (p: Programmed): SvcVal => ({
      id: p.id,
      count: p.backendIds.length,
      flags: p.flags,
      affinitySec: p.affinitySec,
    });
    try {
      const slots: Array<[SvcKey, SvcVal]> = [];
      for (const { next } of changes) next.backendIds.forEach((id, i) => slots.push([key(next, i + 1), slotVal(id)]));
      this.maps.svc.setMany(slots);
      this.maps.svc.setMany(changes.map(({ next }) => [key(next, 0), entryVal(next)]));
      return;
    } catch (e) {
      if (!(e instanceof BpfError)) throw e;
    }
    // Back to the state before the batch: old entries and slots, nothing added.
    for (const { cur, next } of changes) {
      if (cur) this.rewriteAsRecorded(cur);
      this.deleteSlots(next, cur ? cur.slotsPresent + 1 : 0, next.slotsPresent);
    }
    for (const { f, cur, next } of changes) {
      let reason: string | undefined;
      for (let i = 0; i < next.backendIds.length && !reason; i++) {
        reason = this.tryWrite(() => this.maps.svc.set(key(next, i + 1), slotVal(next.backendIds[i])));
      }
      reason ??= this.tryWrite(() => this.maps.svc.set(key(next, 0), entryVal(next)));
      if (!reason) continue;
      failed.set(f.id, reason);
      // Undo this service: a new one disappears, a changed one keeps serving as it was.
      if (cur) this.rewriteAsRecorded(cur);
      this.deleteSlots(next, cur ? cur.slotsPresent + 1 : 0, next.backendIds.length);
      next.slotsPresent = cur?.slotsPresent ?? 0;
    }
  }

  /** Rewrites a service's entry and slots as recorded (existing keys: needs no room in the map). */
  private rewriteAsRecorded(p: Programmed): void {
    p.backendIds.forEach((id, i) => {
      if (id)
        this.tryWrite(() =>
          this.maps.svc.set(
            { vip: p.vip, port: p.port, proto: p.proto, slot: i + 1 },
            { id, count: 0, flags: 0, affinitySec: 0 },
          ),
        );
    });
    this.tryWrite(() =>
      this.maps.svc.set(
        { vip: p.vip, port: p.port, proto: p.proto, slot: 0 },
        { id: p.id, count: p.backendIds.length, flags: p.flags, affinitySec: p.affinitySec },
      ),
    );
  }

  /** Forgets ClientIP affinity to backends that left a service, so clients choose again. */
  private dropAffinity(dropped: Map<number, Set<number>>): void {
    for (const k of this.maps.affinity.keys()) {
      const gone = dropped.get(k.svcId);
      if (!gone) continue;
      const v = this.maps.affinity.get(k);
      if (v && gone.has(v.backendId)) this.maps.affinity.delete(k);
    }
  }

  get serviceCount(): number {
    return this.services.size;
  }
}
