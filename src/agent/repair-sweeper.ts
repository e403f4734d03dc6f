/* When the agent looks for pods of this node that run without a registration (src/agent/repair.ts
 * does the looking): once at start (pods that predate the agent), after Pod changes, and
 * periodically, since a pod created while sluice was not in the runtime's conflist (the primary
 * had just rewritten it) runs uncaptured until its Pod changes again. One sweep at a time.
 */
import { log } from '../log';
import { repairPods, type RepairDeps, type RepairReport } from './repair';

/** Pods that run without a registration are looked for this often, besides on every Pod change. */
export const REPAIR_SWEEP_MS = 60000;

/** What each sweep passes to repairPods; the bookkeeping across sweeps is the sweeper's. */
export type SweepDeps = Omit<RepairDeps, 'acted' | 'missed' | 'retryMissedMs'>;

export interface RepairSweeperOptions {
  /** called with every finished sweep's report (the agent's metrics) */
  onReport(report: RepairReport): void;
  /** time between periodic sweeps, also how long a pod whose namespace was not found waits
   * before it is looked for again. Default REPAIR_SWEEP_MS. */
  intervalMs?: number;
  /** the sweep itself. Default repairPods; tests inject a fake. */
  repair?: (deps: RepairDeps) => Promise<RepairReport>;
}

export class RepairSweeper {
  /** a Pod changed since the last sweep began */
  private due = false;
  private running?: Promise<void>;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  /** pods labelled or deleted by repair already (a Pod update must not make it act again) */
  private readonly acted = new Set<string>();
  private readonly missed = new Map<string, number>();
  private readonly intervalMs: number;
  private readonly repair: (deps: RepairDeps) => Promise<RepairReport>;

  constructor(
    private readonly deps: SweepDeps,
    private readonly opts: RepairSweeperOptions,
  ) {
    this.intervalMs = opts.intervalMs ?? REPAIR_SWEEP_MS;
    this.repair = opts.repair ?? repairPods;
  }

  /** The first sweep, awaited; then one every intervalMs (a timer that keeps no process alive). */
  async start(): Promise<void> {
    await this.sweep('start');
    if (this.stopped) return;
    this.timer = setInterval(() => void this.sweep('periodic'), this.intervalMs);
    this.timer.unref();
  }

  /**
   * A Pod (`namespace/name`) changed: the next sweepIfDue sweeps. A deleted pod's bookkeeping is
   * forgotten, so a new pod of the same name is acted on again.
   */
  podChanged(pod: string, deleted: boolean): void {
    this.due = true;
    if (deleted) {
      this.acted.delete(pod);
      this.missed.delete(pod);
    }
  }

  /**
   * Sweeps if a Pod changed since the last sweep began. The agent calls it after applying a burst
   * of changes; while a sweep runs, the change stays due and one more sweep follows it (a pod
   * created during a sweep may have been listed before it existed).
   */
  sweepIfDue(): void {
    if (this.due) void this.sweep('pod change');
  }

  /** Stops the periodic sweeps and waits for one under way. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.running;
  }

  private async sweep(why: string): Promise<void> {
    if (this.stopped) return;
    if (this.running) {
      this.due = true;
      return;
    }
    this.due = false;
    this.running = (async () => {
      const mode = this.deps.cfg.repairMode;
      try {
        const r = await this.repair({ ...this.deps, acted: this.acted, missed: this.missed, retryMissedMs: this.intervalMs });
        this.opts.onReport(r);
        if (r.candidates)
          log.info(why === 'start' ? 'pods that predate the agent' : 'pods running without sluice found', { why, mode, ...r });
      } catch (e) {
        log.warn('repair sweep failed', { why, err: e });
      }
    })();
    await this.running;
    this.running = undefined;
    if (this.due) void this.sweep('pod change');
  }
}
