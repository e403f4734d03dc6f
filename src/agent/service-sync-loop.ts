/* When the agent writes changed Services into the maps: a burst of object changes (a file with
 * 10,000 Services is one burst) becomes one sync soon after; Services that did not fit are
 * retried later, without delaying a change; after each sync the sockets left on backends it
 * removed are destroyed, in the node and every registered pod.
 */
import type { DestroyReport, NetnsPath, SocketDestroyer } from '../lb/sock-destroy';
import type { LbSync, SyncReport } from '../lb/sync';
import type { ServiceTracker } from '../lb/tracker';
import { log } from '../log';

/** Coalesces bursts of object changes (a file with 10,000 services is one burst). */
export const RESYNC_DELAY_MS = 20;
/** Services that did not fit (a full map), or a sync that threw, are retried this often. */
export const RETRY_FAILED_MS = 5000;

/** The last sync that wrote Services (`sluice status`). */
export interface LastSync {
  at: string;
  ms: number;
  report: SyncReport;
}

export interface ServiceSyncDeps {
  /** which Services changed, and their frontends */
  tracker: Pick<ServiceTracker, 'pending' | 'collectChunks' | 'markAll'>;
  /** writes them into the maps */
  sync: Pick<LbSync, 'applyChunks' | 'takeDepartures'>;
  /** destroys sockets on departed backends */
  destroyer: Pick<SocketDestroyer, 'destroy'>;
  /** the network namespaces of the registered pods (the node's own is added) */
  podNetns(): NetnsPath[];
  /** called first in every sync, also when no Service changed (the agent: pod decisions, repair) */
  beforeSync?(): void;
  /** called with every sync's report, before sockets are destroyed (the agent's metrics) */
  onReport?(report: SyncReport): void;
}

export class ServiceSyncLoop {
  /** the last sync that wrote Services; undefined until one did */
  lastSync?: LastSync;
  private timer?: NodeJS.Timeout;
  private timerDueMs = 0;
  private stopped = false;

  constructor(private readonly deps: ServiceSyncDeps) {}

  /** Objects changed: a sync follows within RESYNC_DELAY_MS (one for a whole burst). */
  changed(): void {
    this.schedule(RESYNC_DELAY_MS);
  }

  /** Syncs at once (the agent's first sync); throws what the sync throws. */
  syncNow(): void {
    this.deps.beforeSync?.();
    const { tracker, sync } = this.deps;
    if (!tracker.pending) return;
    const t0 = process.hrtime.bigint();
    const batch = tracker.collectChunks();
    const report = sync.applyChunks(batch);
    this.deps.onReport?.(report);
    this.destroySockets();
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    this.lastSync = { at: new Date().toISOString(), ms, report };
    const { failed, ...counts } = report;
    log.info('services synced', {
      ...counts,
      failed: failed.length,
      services: batch.services,
      full: !batch.scope,
      ms: Math.round(ms * 10) / 10,
    });
    for (const f of failed) log.error('service not programmed', { frontend: f.frontend, service: f.service, reason: f.reason });
    if (failed.length) {
      tracker.markAll(); // room may have been freed anywhere
      this.schedule(RETRY_FAILED_MS);
    }
  }

  /** Cancels the sync to come; no sync is scheduled after this. */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  /** A change syncs soon; a retry of failed services waits longer but never delays a change. */
  private schedule(delayMs: number): void {
    if (this.stopped) return;
    if (this.timer) {
      if (this.timerDueMs <= Date.now() + delayMs) return;
      clearTimeout(this.timer);
    }
    this.timerDueMs = Date.now() + delayMs;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      try {
        this.syncNow();
      } catch (e) {
        // the changes it took are not lost: every Service is written again on the retry
        log.error('sync failed; retrying', { err: e, inMs: RETRY_FAILED_MS });
        this.deps.tracker.markAll();
        this.schedule(RETRY_FAILED_MS);
      }
    }, delayMs);
  }

  /** Sockets left on backends that the sync just removed, in the node and every registered pod. */
  private destroySockets(): void {
    const departures = this.deps.sync.takeDepartures();
    if (!departures.length) return;
    let r: DestroyReport | undefined;
    try {
      r = this.deps.destroyer.destroy(departures, [undefined, ...this.deps.podNetns()]);
    } catch (e) {
      // the maps are written already: a failed destroy leaves sockets as they were, nothing more
      log.error('sockets on departed backends not destroyed', { departures: departures.length, err: e });
      return;
    }
    if (!r) return;
    const fields = { ...r, ms: Math.round(r.ms * 10) / 10 };
    if (r.tcp || r.udp || r.failed.length) log.info('sockets on departed backends destroyed', fields);
    else log.debug('no socket on departed backends', fields);
  }
}
