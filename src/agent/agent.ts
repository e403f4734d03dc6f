/* The node agent: loads and attaches the datapath, follows the cluster through a ClusterSource,
 * keeps the maps in step, and answers on the local API. Killing it leaves the datapath running
 * from its pins; starting it again re-opens them and writes only differences.
 */
import type { Config } from '../config';
import { netnsCookieSelf } from '../bpf';
import { DirectorySource } from '../k8s/dir-source';
import type { ClusterSource } from '../k8s/source';
import { ObjectStore } from '../k8s/store';
import { computeFrontends } from '../lb/model';
import { installLbDatapath, type LbMaps } from '../lb/datapath';
import { LbSync, type SyncReport } from '../lb/sync';
import { log } from '../log';
import { ApiServer } from './api';

/** Coalesces bursts of object changes (a file with 10,000 services is one burst). */
const RESYNC_DELAY_MS = 20;
/** Services that did not fit (a full map) are retried this often, in case room was freed. */
const RETRY_FAILED_MS = 5000;

export type Phase = 'starting' | 'ready' | 'stopping' | 'failed';

export interface AgentStatus {
  ready: boolean;
  phase: Phase;
  reason: string;
  pid: number;
  startedAt: string;
  config: { bpfPinDir: string; cgroupRoot: string; lbSockHostnsOnly: boolean; k8sObjectsDir: string };
  datapath?: { links: Record<string, string>; services: number; backends: number; counters: Record<string, number> };
  lastSync?: { at: string; ms: number; report: SyncReport };
  source?: unknown;
}

export class Agent {
  private phase: Phase = 'starting';
  private reason = 'loading the datapath';
  private readonly startedAt = new Date();
  private maps?: LbMaps;
  private sync?: LbSync;
  private links: Record<string, string> = {};
  private source?: ClusterSource & { status?(): unknown };
  private readonly store = new ObjectStore();
  private api?: ApiServer;
  private timer?: NodeJS.Timeout;
  private timerDueMs = 0;
  private lastSync?: AgentStatus['lastSync'];

  constructor(private readonly cfg: Config) {}

  async start(): Promise<void> {
    this.api = new ApiServer(this.cfg.agentSocket, { status: () => this.status() });
    await this.api.listen();

    const cookie = netnsCookieSelf();
    const { maps, links } = installLbDatapath({
      pinDir: this.cfg.bpfPinDir,
      cgroupRoot: this.cfg.cgroupRoot,
      hostnsOnly: this.cfg.lbSockHostnsOnly,
      hostNetnsCookie: cookie,
      sizes: { service: this.cfg.lbServiceMapMax, backend: this.cfg.lbBackendMapMax, affinity: this.cfg.lbAffinityMapMax },
    });
    this.maps = maps;
    this.links = links;
    this.sync = new LbSync(maps);
    const restored = this.sync.restore();
    log.info('datapath attached', {
      cgroup: this.cfg.cgroupRoot, pinDir: this.cfg.bpfPinDir, hostnsOnly: this.cfg.lbSockHostnsOnly,
      netnsCookie: cookie.toString(), links, restoredServices: restored.services, restoredBackends: restored.backends,
    });

    this.reason = 'waiting for the first sync of cluster objects';
    this.source = new DirectorySource(this.cfg.k8sObjectsDir);
    await this.source.start(this.store);
    this.resync();
    this.store.on('change', () => this.scheduleResync());
    this.phase = 'ready';
    this.reason = '';
    log.info('agent ready', { services: this.sync.serviceCount });
  }

  /** A change syncs soon; a retry of failed services waits longer but never delays a change. */
  private scheduleResync(delayMs = RESYNC_DELAY_MS): void {
    if (this.phase === 'stopping') return;
    if (this.timer) {
      if (this.timerDueMs <= Date.now() + delayMs) return;
      clearTimeout(this.timer);
    }
    this.timerDueMs = Date.now() + delayMs;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      try {
        this.resync();
      } catch (e) {
        log.error('sync failed', { err: e });
      }
    }, delayMs);
  }

  /** Recomputes the frontends and writes the differences (a no-op diff costs one model pass). */
  private resync(): void {
    if (!this.sync) return;
    const t0 = process.hrtime.bigint();
    const frontends = computeFrontends([...this.store.list('Service')], [...this.store.list('EndpointSlice')]);
    const report = this.sync.apply(frontends);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    this.lastSync = { at: new Date().toISOString(), ms, report };
    const { failed, ...counts } = report;
    log.info('services synced', { ...counts, failed: failed.length, ms: Math.round(ms * 10) / 10 });
    for (const f of failed) log.error('service not programmed', { frontend: f.frontend, service: f.service, reason: f.reason });
    if (failed.length) this.scheduleResync(RETRY_FAILED_MS);
  }

  status(): AgentStatus {
    const ready = this.phase === 'ready';
    return {
      ready,
      phase: this.phase,
      reason: ready ? 'programs attached, first sync done' : this.reason,
      pid: process.pid,
      startedAt: this.startedAt.toISOString(),
      config: {
        bpfPinDir: this.cfg.bpfPinDir, cgroupRoot: this.cfg.cgroupRoot,
        lbSockHostnsOnly: this.cfg.lbSockHostnsOnly, k8sObjectsDir: this.cfg.k8sObjectsDir,
      },
      datapath: this.maps && {
        links: this.links,
        services: this.sync?.serviceCount ?? 0,
        backends: this.lastSync?.report.backends ?? 0,
        counters: this.maps.readCounters(),
      },
      lastSync: this.lastSync,
      source: this.source?.status?.(),
    };
  }

  /** Stops following the cluster and closes the API; the datapath stays in the kernel. */
  async stop(): Promise<void> {
    this.phase = 'stopping';
    if (this.timer) clearTimeout(this.timer);
    await this.source?.stop();
    await this.api?.close();
    this.maps?.close();
    log.info('agent stopped; datapath left running from its pins', { pinDir: this.cfg.bpfPinDir });
  }
}

/** Runs the agent until SIGTERM/SIGINT. */
export async function runAgent(cfg: Config): Promise<void> {
  const agent = new Agent(cfg);
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    log.info('signal received, stopping', { signal: sig });
    agent.stop().then(
      () => process.exit(0),
      (e) => {
        log.error('stop failed', { err: e });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  try {
    await agent.start();
  } catch (e) {
    log.error('agent failed to start', { err: e });
    await agent.stop().catch(() => undefined);
    process.exit(1);
  }
}
