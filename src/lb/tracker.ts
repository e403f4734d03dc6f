/* Which Services changed since the last sync, from the store's change events, and their new
 * frontends: an EndpointSlice update recomputes one Service, not 10,000 (the full model pass cost
 * ~200 ms at that size; a tracked change costs well under a millisecond). A change of this node's
 * zone recomputes only the Services whose frontends zone hints decided. A full batch is computed
 * chunk by chunk as the sync takes it, so the frontends of 100,000 Services never exist at once
 * (they would outlive the young generation and make every full GC of the sync longer).
 */
import type { ChangeEvent, ObjectStore } from '../k8s/store';
import { SERVICE_NAME_LABEL, ZONE_LABEL, type EndpointSlice, type Node, type Service } from '../k8s/types';
import { log } from '../log';
import { computeFrontends, type LbFrontend } from './model';

export interface FrontendBatch {
  /** the new frontends of the changed Services (all frontends for a full batch) */
  frontends: LbFrontend[];
  /** frontend ids the batch speaks for (undefined: all, a full sync) */
  scope?: Set<string>;
  services: number;
}

/**
 * A batch whose frontends come in chunks, computed as they are taken (take each chunk once, in
 * order, and all of them: a full batch left unfinished is computed again by the next collect).
 */
export interface FrontendChunks {
  chunks: Iterable<LbFrontend[]>;
  /** frontend ids the batch speaks for (undefined: all, a full sync) */
  scope?: Set<string>;
  /** Services the batch computed (known once every chunk was taken) */
  readonly services: number;
}

/** Services per chunk of a full batch. */
const FULL_CHUNK_SERVICES = 1000;

export interface ServiceTrackerOptions {
  /**
   * The node the agent runs on (config node-name): its endpoints are local, and the Node object
   * of that name gives the zone topology hints are matched against. Default '' (no node).
   */
  nodeName?: string;
}

function serviceKeyOfSlice(s: EndpointSlice): string | undefined {
  const svc = s.metadata.labels?.[SERVICE_NAME_LABEL];
  return svc ? `Service/${s.metadata.namespace}/${svc}` : undefined;
}

function zoneOf(node: Node | undefined): string {
  return node?.metadata.labels?.[ZONE_LABEL] ?? '';
}

export class ServiceTracker {
  /** a Service's slices (a short list: one Map per Service would cost more than it saves) */
  private readonly slicesByService = new Map<string, EndpointSlice[]>();
  private readonly idsByService = new Map<string, string[]>();
  private readonly ownerOfFrontend = new Map<string, string>();
  /** Services with a frontend that zone hints decided: the ones a zone change must recompute */
  private readonly zoneSensitive = new Set<string>();
  private readonly dirty = new Set<string>();
  private full = true;
  private readonly nodeName: string;
  private readonly nodeKey: string;
  private zone: string;

  constructor(
    private readonly store: ObjectStore,
    opts: ServiceTrackerOptions = {},
  ) {
    this.nodeName = opts.nodeName ?? '';
    this.nodeKey = `Node/${this.nodeName}`;
    this.zone = zoneOf(store.get(this.nodeKey) as Node | undefined);
    for (const s of store.list('EndpointSlice')) this.indexSlice(s, true);
    store.on('change', (ev: ChangeEvent) => this.onChange(ev));
  }

  private indexSlice(s: EndpointSlice, add: boolean): void {
    const svc = serviceKeyOfSlice(s);
    if (!svc) return;
    const others = (this.slicesByService.get(svc) ?? []).filter((x) => x.metadata.name !== s.metadata.name);
    if (add) others.push(s);
    if (others.length) this.slicesByService.set(svc, others);
    else this.slicesByService.delete(svc);
    this.dirty.add(svc);
  }

  private onChange(ev: ChangeEvent): void {
    if (ev.kind === 'Service') this.dirty.add(ev.key);
    if (ev.kind === 'Node' && ev.key === this.nodeKey) this.onNodeChange(ev.obj as Node | undefined);
    if (ev.kind !== 'EndpointSlice') return;
    if (ev.old) this.indexSlice(ev.old as EndpointSlice, false);
    if (ev.obj) this.indexSlice(ev.obj as EndpointSlice, true);
  }

  /** Any other change of the Node (labels, annotations) selects nothing differently. */
  private onNodeChange(node: Node | undefined): void {
    const zone = zoneOf(node);
    if (zone === this.zone) return;
    log.info("this node's zone changed; recomputing the Services zone hints decide", {
      node: this.nodeName,
      from: this.zone,
      to: zone,
      services: this.zoneSensitive.size,
    });
    this.zone = zone;
    for (const key of this.zoneSensitive) this.dirty.add(key);
  }

  /** The next full batch recomputes everything (start-up, retries after a full map). */
  markAll(): void {
    this.full = true;
  }

  get pending(): boolean {
    return this.full || this.dirty.size > 0;
  }

  private compute(services: readonly Service[], slices: readonly EndpointSlice[]): LbFrontend[] {
    return computeFrontends(services, slices, { nodeName: this.nodeName, zone: this.zone });
  }

  /** The next batch with every frontend at once (tests, small clusters). */
  collect(): FrontendBatch {
    const batch = this.collectChunks();
    const frontends = [...batch.chunks].flat();
    return { frontends, scope: batch.scope, services: batch.services };
  }

  /** The next batch: every frontend after start-up or markAll(), else those of the Services that changed. */
  collectChunks(): FrontendChunks {
    if (this.full) {
      let services = 0;
      const tracker = this;
      return {
        chunks: (function* () {
          services = yield* tracker.fullChunks();
        })(),
        get services() {
          return services;
        },
      };
    }
    const { frontends, scope, services } = this.changed();
    return { chunks: [frontends], scope, services };
  }

  /** Every Service in namespace/name order, a chunk at a time; the first to claim a frontend keeps it. */
  private *fullChunks(): Generator<LbFrontend[], number> {
    this.dirty.clear();
    this.idsByService.clear();
    this.ownerOfFrontend.clear();
    this.zoneSensitive.clear();
    const all = this.store.list('Service');
    for (let i = 0; i < all.length; i += FULL_CHUNK_SERVICES) {
      const chunk = all.slice(i, i + FULL_CHUNK_SERVICES);
      const slices = chunk.flatMap(
        (svc) => this.slicesByService.get(`Service/${svc.metadata.namespace}/${svc.metadata.name}`) ?? [],
      );
      const out: LbFrontend[] = [];
      for (const f of this.compute(chunk, slices)) {
        const key = `Service/${f.service}`;
        const owner = this.ownerOfFrontend.get(f.id);
        if (owner !== undefined) {
          log.warn('Duplicate service frontend; keeping the first service', {
            id: f.id,
            kept: owner.slice('Service/'.length),
            skipped: f.service,
          });
          continue;
        }
        this.ownerOfFrontend.set(f.id, key);
        const ids = this.idsByService.get(key);
        if (ids) ids.push(f.id);
        else this.idsByService.set(key, [f.id]);
        if (f.zoneSensitive) this.zoneSensitive.add(key);
        out.push(f);
      }
      yield out;
    }
    // only a batch taken to the end is whole: one left unfinished leaves `full` set, to start over
    this.full = false;
    return this.idsByService.size;
  }

  /** The frontends of the Services that changed since the last batch. */
  private changed(): FrontendBatch {
    const scope = new Set<string>();
    const frontends: LbFrontend[] = [];
    for (const key of this.dirty) {
      for (const id of this.idsByService.get(key) ?? []) {
        scope.add(id);
        if (this.ownerOfFrontend.get(id) === key) this.ownerOfFrontend.delete(id);
      }
      this.idsByService.delete(key);
      this.zoneSensitive.delete(key);
      const svc = this.store.get(key) as Service | undefined;
      if (!svc) continue;
      const mine: string[] = [];
      for (const f of this.compute([svc], this.slicesByService.get(key) ?? [])) {
        const owner = this.ownerOfFrontend.get(f.id);
        if (owner && owner !== key) {
          log.warn('frontend already served by another Service; skipped', { frontend: f.id, service: f.service, owner });
          continue;
        }
        this.ownerOfFrontend.set(f.id, key);
        mine.push(f.id);
        scope.add(f.id);
        frontends.push(f);
        if (f.zoneSensitive) this.zoneSensitive.add(key);
      }
      if (mine.length) this.idsByService.set(key, mine);
    }
    const services = this.dirty.size;
    this.dirty.clear();
    return { frontends, scope, services };
  }
}
