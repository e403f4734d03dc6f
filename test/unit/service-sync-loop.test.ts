/* src/agent/service-sync-loop.ts: when Services are synced, on a fake clock, with the tracker,
 * the sync and the socket destroyer faked (no maps, no kernel). */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RESYNC_DELAY_MS, RETRY_FAILED_MS, ServiceSyncLoop, type ServiceSyncDeps } from '../../src/agent/service-sync-loop';
import type { DestroyReport } from '../../src/lb/sock-destroy';
import type { Departure, SyncFailure, SyncReport } from '../../src/lb/sync';

const FAILURE: SyncFailure = { frontend: '10.96.0.1:80/TCP', service: 'shop/cart', reason: 'map full' };

/** A fake tracker and sync: each change makes the tracker pending; each sync records its order. */
function fakes(opts: { fail?: () => boolean; departures?: () => Departure[] } = {}) {
  const order: string[] = [];
  let pending = true; // the first sync after start-up is a full one
  const tracker = {
    get pending() {
      return pending;
    },
    collectChunks: () => {
      pending = false;
      return { chunks: [], services: 1 };
    },
    markAll: () => {
      pending = true;
      order.push('markAll');
    },
  };
  const sync = {
    applyChunks: (): SyncReport => {
      order.push('sync');
      return { added: 1, updated: 0, removed: 0, unchanged: 0, backends: 2, failed: opts.fail?.() ? [FAILURE] : [] };
    },
    takeDepartures: () => opts.departures?.() ?? [],
  };
  const destroyer = {
    destroy: (departures: readonly Departure[], namespaces: readonly (string | undefined)[]) => {
      order.push(`destroy ${departures.length} in ${namespaces.map((n) => n ?? 'node').join(',')}`);
      const r: DestroyReport = {
        departures: departures.length,
        namespaces: namespaces.length,
        tcp: 0,
        udp: 1,
        peers: [],
        failed: [],
        ms: 0.1,
      };
      return r;
    },
  };
  const deps: ServiceSyncDeps = {
    tracker,
    sync,
    destroyer,
    podNetns: () => ['/var/run/netns/pod-a'],
    beforeSync: () => order.push('before'),
    onReport: () => order.push('report'),
  };
  /** An object changed: the tracker has something to sync, and the loop is told. */
  const change = (loop: ServiceSyncLoop) => {
    pending = true;
    loop.changed();
  };
  return { order, deps, change };
}

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe('ServiceSyncLoop', () => {
  it('a burst of changes makes one sync, RESYNC_DELAY_MS after the first', () => {
    const f = fakes();
    const loop = new ServiceSyncLoop(f.deps);
    loop.syncNow();
    expect(f.order).toEqual(['before', 'sync', 'report']);
    expect(loop.lastSync?.report.backends).toBe(2);
    f.order.length = 0;
    for (let i = 0; i < RESYNC_DELAY_MS; i++) {
      f.change(loop);
      if (i < RESYNC_DELAY_MS - 1) vi.advanceTimersByTime(1);
    }
    expect(f.order).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(f.order).toEqual(['before', 'sync', 'report']);
    vi.advanceTimersByTime(10 * RESYNC_DELAY_MS);
    expect(f.order).toEqual(['before', 'sync', 'report']);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('every sync runs beforeSync first, also with no Service to write', () => {
    const f = fakes();
    const loop = new ServiceSyncLoop(f.deps);
    loop.syncNow();
    f.order.length = 0;
    loop.changed(); // a change that concerns no Service (a Pod, say)
    vi.advanceTimersByTime(RESYNC_DELAY_MS);
    expect(f.order).toEqual(['before']);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('a failed service is retried after RETRY_FAILED_MS, and a change does not wait for the retry', () => {
    let fail = true;
    const f = fakes({ fail: () => fail });
    const loop = new ServiceSyncLoop(f.deps);
    loop.syncNow();
    expect(f.order).toEqual(['before', 'sync', 'report', 'markAll']);
    f.order.length = 0;
    vi.advanceTimersByTime(RETRY_FAILED_MS - 1);
    expect(f.order).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(f.order).toEqual(['before', 'sync', 'report', 'markAll']); // still failing: retried again later
    f.order.length = 0;
    fail = false;
    vi.advanceTimersByTime(1000);
    f.change(loop);
    vi.advanceTimersByTime(RESYNC_DELAY_MS);
    expect(f.order).toEqual(['before', 'sync', 'report']); // the change, long before the retry was due
    f.order.length = 0;
    vi.advanceTimersByTime(RETRY_FAILED_MS);
    expect(f.order).toEqual([]); // the retry was replaced by the sooner sync, which succeeded
    loop.stop();
  });

  it('a change due later than a pending retry is synced by the retry', () => {
    const f = fakes({ fail: () => true });
    const loop = new ServiceSyncLoop(f.deps);
    loop.syncNow(); // fails: a retry in RETRY_FAILED_MS
    f.order.length = 0;
    vi.advanceTimersByTime(RETRY_FAILED_MS - 5);
    f.change(loop); // due in RESYNC_DELAY_MS, later than the retry: the retry stays
    vi.advanceTimersByTime(5);
    expect(f.order).toEqual(['before', 'sync', 'report', 'markAll']);
    loop.stop();
  });

  it('stop cancels the sync to come, and no change schedules one after it', () => {
    const f = fakes();
    const loop = new ServiceSyncLoop(f.deps);
    loop.syncNow();
    f.order.length = 0;
    f.change(loop);
    loop.stop();
    f.change(loop);
    vi.advanceTimersByTime(RETRY_FAILED_MS);
    expect(f.order).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('stop cancels a retry of failed services', () => {
    const f = fakes({ fail: () => true });
    const loop = new ServiceSyncLoop(f.deps);
    loop.syncNow();
    f.order.length = 0;
    loop.stop();
    vi.advanceTimersByTime(2 * RETRY_FAILED_MS);
    expect(f.order).toEqual([]);
  });

  it('sockets on departed backends are destroyed after the sync, in the node and every pod', () => {
    const f = fakes({ departures: () => [{} as Departure] });
    const loop = new ServiceSyncLoop(f.deps);
    loop.syncNow();
    expect(f.order).toEqual(['before', 'sync', 'report', 'destroy 1 in node,/var/run/netns/pod-a']);
  });

  it('a sync that throws from the timer is logged, and later changes still sync', () => {
    let throws = true;
    const f = fakes();
    f.deps.sync.applyChunks = () => {
      if (throws) throw new Error('map update failed');
      f.order.push('sync');
      return { added: 0, updated: 0, removed: 0, unchanged: 0, backends: 0, failed: [] };
    };
    const loop = new ServiceSyncLoop(f.deps);
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      f.change(loop);
      vi.advanceTimersByTime(RESYNC_DELAY_MS);
      expect(stderr.mock.calls.map((c) => JSON.parse(String(c[0])).msg)).toContain('sync failed; retrying');
    } finally {
      stderr.mockRestore();
    }
    throws = false;
    f.order.length = 0;
    f.change(loop);
    vi.advanceTimersByTime(RESYNC_DELAY_MS);
    expect(f.order).toEqual(['before', 'sync', 'report']);
    loop.stop();
  });

  it('a sync that throws is retried in full after RETRY_FAILED_MS, with no further change', () => {
    let throws = true;
    const f = fakes();
    f.deps.sync.applyChunks = () => {
      if (throws) throw new Error('map update failed');
      f.order.push('sync');
      return { added: 0, updated: 0, removed: 0, unchanged: 0, backends: 0, failed: [] };
    };
    const loop = new ServiceSyncLoop(f.deps);
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      f.change(loop);
      vi.advanceTimersByTime(RESYNC_DELAY_MS);
    } finally {
      stderr.mockRestore();
    }
    // the throw consumed the tracker's changes: they come back as a full sync
    expect(f.order).toEqual(['before', 'markAll']);
    throws = false;
    f.order.length = 0;
    vi.advanceTimersByTime(RETRY_FAILED_MS - 1);
    expect(f.order).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(f.order).toEqual(['before', 'sync', 'report']);
    loop.stop();
  });
});
