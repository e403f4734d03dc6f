/* src/agent/repair-sweeper.ts: when repair sweeps run, with the repair itself faked (each call
 * waits until the test releases it), so the scheduling is observed without a kernel or a clock. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { RepairDeps, RepairReport } from '../../src/agent/repair';
import { RepairSweeper, type SweepDeps } from '../../src/agent/repair-sweeper';
import type { Config } from '../../src/config';

const REPORT: RepairReport = { candidates: 0, ms: 0, repaired: [], labelled: [], deleted: [], notFound: [], listeners: 0 };

/** A fake repairPods: records each call's deps and finishes it only when release() is called. */
function fakeRepair() {
  const calls: RepairDeps[] = [];
  const pending: Array<() => void> = [];
  const repair = (deps: RepairDeps) => {
    calls.push(deps);
    return new Promise<RepairReport>((resolve) => pending.push(() => resolve(REPORT)));
  };
  /** Finishes the oldest unfinished call and lets its continuations run. */
  const release = async () => {
    pending.shift()!();
    await flush();
  };
  return { calls, repair, release };
}

/** Lets every settled promise's continuations run (no timers involved). */
async function flush(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

const deps = {
  cfg: { repairMode: 'repair' } as Config,
  store: {},
  registry: {},
  enrol: () => ({ mode: 'none' }),
} as unknown as SweepDeps;

afterEach(() => vi.useRealTimers());

describe('RepairSweeper', () => {
  it('Pod changes during a running sweep make one more sweep, right after it', async () => {
    const f = fakeRepair();
    const reports: RepairReport[] = [];
    const sweeper = new RepairSweeper(deps, { repair: f.repair, onReport: (r) => reports.push(r) });
    const started = sweeper.start();
    await flush();
    expect(f.calls).toHaveLength(1);
    for (const pod of ['shop/a', 'shop/b', 'shop/c']) {
      sweeper.podChanged(pod, false);
      sweeper.sweepIfDue();
    }
    await flush();
    expect(f.calls).toHaveLength(1); // one sweep at a time
    await f.release();
    await started;
    expect(reports).toEqual([REPORT]);
    sweeper.sweepIfDue();
    await flush();
    expect(f.calls).toHaveLength(2); // the three changes coalesced into one sweep, run when the first ended
    await f.release();
    sweeper.sweepIfDue();
    await flush();
    expect(f.calls).toHaveLength(2); // nothing changed since that sweep began
    await sweeper.stop();
  });

  it('stop waits for the sweep under way, and no sweep starts after it', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const f = fakeRepair();
    const sweeper = new RepairSweeper(deps, { repair: f.repair, onReport: () => undefined, intervalMs: 1000 });
    const started = sweeper.start();
    await flush();
    let stopped = false;
    const stopping = sweeper.stop().then(() => (stopped = true));
    await flush();
    expect(stopped).toBe(false);
    await f.release();
    await Promise.all([started, stopping]);
    expect(stopped).toBe(true);
    sweeper.podChanged('shop/a', false);
    sweeper.sweepIfDue();
    vi.advanceTimersByTime(5000);
    await flush();
    expect(f.calls).toHaveLength(1);
  });

  it('sweeps periodically, and forgets what it did to a pod once the pod is deleted', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const f = fakeRepair();
    const sweeper = new RepairSweeper(deps, { repair: f.repair, onReport: () => undefined, intervalMs: 1000 });
    const started = sweeper.start();
    await flush();
    f.calls[0].acted!.add('shop/a');
    f.calls[0].missed!.set('shop/b', 1);
    expect(f.calls[0].retryMissedMs).toBe(1000);
    await f.release();
    await started;
    vi.advanceTimersByTime(1000);
    await flush();
    expect(f.calls).toHaveLength(2);
    // the same bookkeeping is handed to every sweep; a Pod update keeps it, a deletion clears it
    expect(f.calls[1].acted).toBe(f.calls[0].acted);
    sweeper.podChanged('shop/a', false);
    expect([...f.calls[1].acted!]).toEqual(['shop/a']);
    sweeper.podChanged('shop/a', true);
    sweeper.podChanged('shop/b', true);
    expect(f.calls[1].acted!.size).toBe(0);
    expect(f.calls[1].missed!.size).toBe(0);
    await f.release();
    expect(f.calls).toHaveLength(3); // the pods changed during the second sweep: one more follows it
    const stopping = sweeper.stop();
    await f.release();
    await stopping;
  });
});
