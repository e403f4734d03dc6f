/* Keeps the socket-LB maps equal to the desired frontends, writing only differences. The maps are
 * the source of truth: restore() reads them back after a restart, so an unchanged service is never
 * rewritten and no connection fails while the agent restarts or resyncs.
 *
 * Write order keeps every intermediate state valid for the programs: new backends, then slots,
 * then the service entry (its count), then surplus slots, removed services and unused backends.
 */
import { BpfError } from '../bpf';
import { protoName, protoNumber, SVC_F_AFFINITY, SVC_F_EXTERNAL, type Backend, type SvcKey, type SvcVal } from '../bpf/layout';
import type { LbMaps } from './datapath';
import type { LbFrontend } from './model';

const E2BIG = 7;

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

export interface SyncFailure {
  frontend: string;
  service: string;
  reason: string;
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

function backendKey(b: Backend): string {
  return `${b.ip}|${b.port}|${b.proto}`;
}

export class LbSync {
  private readonly services = new Map<string, Programmed>();
  private readonly backendIds = new Map<string, number>();
  private readonly backends = new Map<number, Backend>();
  private readonly usedSvcIds = new Set<number>();
  private nextBackendId = 1;
  private nextSvcId = 1;

  constructor(private readonly maps: LbMaps) {}

  /** Rebuilds the in-memory view from the pinned maps (agent restart). */
  restore(): { services: number; backends: number } {
    this.services.clear();
    this.backendIds.clear();
    this.backends.clear();
    this.usedSvcIds.clear();
    for (const [id, b] of this.maps.backend.entries()) {
      this.backends.set(id, b);
      this.backendIds.set(backendKey(b), id);
    }
    const slots = new Map<string, Map<number, number>>();
    const slotKeys = new Map<string, SvcKey[]>();
    for (const [k, v] of this.maps.svc.entries()) {
      const fid = frontendId(k.vip, k.port, protoName(k.proto));
      if (k.slot === 0) {
        this.services.set(fid, {
          vip: k.vip, port: k.port, proto: k.proto, id: v.id, flags: v.flags, affinitySec: v.affinitySec,
          backendIds: [], slotsPresent: v.count, dirty: false,
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

  /** Writes entries, falling back to one at a time on failure to learn which entries failed. */
  private writeAll<K, V>(map: { setMany(e: Array<[K, V]>): void; set(k: K, v: V): void }, entries: Array<[K, V]>, owners: string[], failed: Map<string, string>): void {
    try {
      map.setMany(entries);
      return;
    } catch (e) {
      if (!(e instanceof BpfError)) throw e;
    }
    entries.forEach(([k, v], i) => {
      if (failed.has(owners[i])) return;
      try {
        map.set(k, v);
      } catch (e) {
        if (!(e instanceof BpfError)) throw e;
        failed.set(owners[i], e.errno === E2BIG ? `${e.op}: map is full` : e.message);
      }
    });
  }

  apply(desired: LbFrontend[]): SyncReport {
    const report: SyncReport = { added: 0, updated: 0, removed: 0, unchanged: 0, backends: 0, failed: [] };
    const failed = new Map<string, string>(); // frontend id -> reason
    const wanted = new Map<string, LbFrontend>();
    for (const f of desired) wanted.set(f.id, f);

    // 1. backends that are new
    const newBackends: Array<[number, Backend]> = [];
    const newOwners: string[] = [];
    const pendingIds = new Map<string, number>();
    for (const f of wanted.values()) {
      for (const b of f.backends) {
        const be: Backend = { ip: b.ip, port: b.port, proto: protoNumber(f.proto) };
        const bk = backendKey(be);
        if (this.backendIds.has(bk) || pendingIds.has(bk)) continue;
        const id = this.allocBackendId();
        pendingIds.set(bk, id);
        this.backends.set(id, be); // reserve the id; dropped below if its write fails
        newBackends.push([id, be]);
        newOwners.push(f.id);
      }
    }
    const backendFailed = new Map<string, string>();
    this.writeAll(this.maps.backend, newBackends, newBackends.map(([, b]) => backendKey(b)), backendFailed);
    for (const [bk, id] of pendingIds) {
      if (backendFailed.has(bk)) this.backends.delete(id);
      else this.backendIds.set(bk, id);
    }
    newOwners.forEach((fid, i) => {
      const reason = backendFailed.get(backendKey(newBackends[i][1]));
      if (reason && !failed.has(fid)) failed.set(fid, reason);
    });

    // 2. slots of new or changed services
    const changes: Array<{ f: LbFrontend; cur?: Programmed; next: Programmed }> = [];
    for (const f of wanted.values()) {
      if (failed.has(f.id)) continue;
      const proto = protoNumber(f.proto);
      const ids = f.backends.map((b) => this.backendIds.get(backendKey({ ip: b.ip, port: b.port, proto })));
      if (ids.some((id) => id === undefined)) {
        failed.set(f.id, 'a backend could not be written');
        continue;
      }
      const flags = (f.affinityTimeoutSec > 0 ? SVC_F_AFFINITY : 0) | (f.scope === 'externalIP' ? SVC_F_EXTERNAL : 0);
      const cur = this.services.get(f.id);
      const same =
        cur && !cur.dirty && cur.flags === flags && cur.affinitySec === f.affinityTimeoutSec &&
        cur.backendIds.length === ids.length && cur.backendIds.every((id, i) => id === ids[i]);
      if (same) {
        report.unchanged++;
        continue;
      }
      changes.push({
        f, cur,
        next: {
          vip: f.ip, port: f.port, proto, id: cur?.id ?? this.allocSvcId(), flags, affinitySec: f.affinityTimeoutSec,
          backendIds: ids as number[], slotsPresent: Math.max(cur?.slotsPresent ?? 0, ids.length), dirty: false,
        },
      });
    }
    const slotEntries: Array<[SvcKey, SvcVal]> = [];
    const slotOwners: string[] = [];
    for (const { f, next } of changes) {
      next.backendIds.forEach((id, i) => {
        slotEntries.push([{ vip: next.vip, port: next.port, proto: next.proto, slot: i + 1 }, { id, count: 0, flags: 0, affinitySec: 0 }]);
        slotOwners.push(f.id);
      });
    }
    this.writeAll(this.maps.svc, slotEntries, slotOwners, failed);

    // 3. service entries (the count that makes the new slots live)
    const masters: Array<[SvcKey, SvcVal]> = [];
    const masterOwners: string[] = [];
    for (const { f, next } of changes) {
      if (failed.has(f.id)) continue;
      masters.push([{ vip: next.vip, port: next.port, proto: next.proto, slot: 0 }, { id: next.id, count: next.backendIds.length, flags: next.flags, affinitySec: next.affinitySec }]);
      masterOwners.push(f.id);
    }
    this.writeAll(this.maps.svc, masters, masterOwners, failed);

    // 4. surplus slots, then record the result
    const affinityDropped = new Map<number, Set<number>>(); // svc id -> backend ids no longer in it
    for (const { f, cur, next } of changes) {
      if (failed.has(f.id)) {
        if (cur) cur.dirty = true;
        else if (next.slotsPresent > 0) this.services.set(f.id, { ...next, backendIds: [], dirty: true }); // slots to clean up
        else this.usedSvcIds.delete(next.id);
        if (cur) cur.slotsPresent = next.slotsPresent;
        continue;
      }
      for (let slot = next.backendIds.length + 1; slot <= next.slotsPresent; slot++) {
        this.maps.svc.delete({ vip: next.vip, port: next.port, proto: next.proto, slot });
      }
      next.slotsPresent = next.backendIds.length;
      if (cur) {
        report.updated++;
        const keep = new Set(next.backendIds);
        const gone = cur.backendIds.filter((id) => !keep.has(id));
        if (gone.length && (cur.flags & SVC_F_AFFINITY)) affinityDropped.set(cur.id, new Set(gone));
      } else report.added++;
      this.services.set(f.id, next);
    }

    // 5. services no longer wanted: the entry first (lookups then miss), then its slots
    for (const [fid, p] of this.services) {
      if (wanted.has(fid)) continue;
      this.maps.svc.delete({ vip: p.vip, port: p.port, proto: p.proto, slot: 0 });
      for (let slot = 1; slot <= p.slotsPresent; slot++) this.maps.svc.delete({ vip: p.vip, port: p.port, proto: p.proto, slot });
      if (p.flags & SVC_F_AFFINITY) affinityDropped.set(p.id, new Set(p.backendIds));
      this.services.delete(fid);
      this.usedSvcIds.delete(p.id);
      report.removed++;
    }

    // 6. backends nobody references any more
    const referenced = new Set<number>();
    for (const p of this.services.values()) for (const id of p.backendIds) referenced.add(id);
    for (const [id, b] of this.backends) {
      if (referenced.has(id)) continue;
      this.maps.backend.delete(id);
      this.backends.delete(id);
      this.backendIds.delete(backendKey(b));
    }
    if (affinityDropped.size) this.dropAffinity(affinityDropped);

    report.backends = this.backends.size;
    for (const [fid, reason] of failed) {
      report.failed.push({ frontend: fid, service: wanted.get(fid)?.service ?? '', reason });
    }
    return report;
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
