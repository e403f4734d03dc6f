/* Every Prometheus metric the agent exports, defined here and nowhere else (prom-client). The
 * agent feeds events through a few hooks (CNI requests, store changes, syncs, repair sweeps);
 * what the kernel holds (maps, counters) and what live objects know (ZDS, API reachability) is
 * read by collect callbacks when Prometheus scrapes, never polled in between. Labels have
 * bounded values: no pod, Service or address ever becomes a label.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { RawReply } from '../agent/local-api';
import type { PodRegistration } from '../agent/pod-registry';
import type { RepairReport } from '../agent/repair';
import { COUNTERS, type MeshMode } from '../bpf/layout';
import type { Config } from '../config';
import type { ChangeEvent, ObjectStore } from '../k8s/store';
import type { K8sKind } from '../k8s/types';
import type { SyncReport } from '../lb/sync';
import { log } from '../log';
import type { LostReason } from '../monitor/record';
import type { AmbientZds } from '../mesh/ambient-zds';
import { CAPTURE_DIRECTIONS, readKernelView, type KernelView } from './kernel-view';
import { PodCounterTotals } from './pod-counter-totals';
import { ProgrammingLatency } from './programming-latency';

/** CNI_COMMAND values of the spec; anything else is counted as "other". */
const CNI_COMMANDS = new Set(['ADD', 'DEL', 'CHECK', 'VERSION', 'STATUS', 'GC']);
const K8S_KINDS: readonly K8sKind[] = ['Service', 'EndpointSlice', 'Pod', 'Namespace', 'Node'];
const MODES: readonly MeshMode[] = ['sidecar', 'ambient', 'none'];
/** what a repair sweep did to one pod, per repair-mode (metric label `result`) */
const REPAIR_RESULTS: Record<Config['repairMode'], readonly string[]> = {
  repair: ['repaired', 'not_found', 'failed'],
  label: ['labelled', 'failed'],
  delete: ['deleted', 'failed'],
  off: [],
};

const LOST_REASONS: readonly LostReason[] = ['ring', 'queue'];

/** CNI ADD as the agent handles it: milliseconds normally, up to ZDS's 5 s wait for ztunnel. */
const CNI_ADD_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * kube-proxy's buckets for network_programming_duration_seconds (0.25 s, 0.5 s, 1–59 s, 60–115 s
 * by 5, 2–5 min by 30 s), so the two histograms compare bucket by bucket, preceded by finer ones:
 * socket-LB programs in milliseconds, which kube-proxy's first bucket would hide.
 */
export const PROGRAMMING_BUCKETS = [
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  ...Array.from({ length: 59 }, (_, i) => 1 + i),
  ...Array.from({ length: 12 }, (_, i) => 60 + 5 * i),
  ...Array.from({ length: 7 }, (_, i) => 120 + 30 * i),
];

/** What the metrics read from the agent at scrape time. */
export interface AgentState {
  /** the registered pods */
  registrations(): readonly PodRegistration[];
  /** the ZDS hand-off to ztunnel, when ZDS is served */
  zds(): AmbientZds | undefined;
  /** whether the API server answers (API mode); undefined before the source exists */
  apiReachable(): boolean | undefined;
}

/** The CNI error code of a reply ("<exit code>\n<stdout>"): "0" on success, else the JSON's `code`. */
export function cniReplyCode(reply: RawReply): string {
  const nl = reply.bytes.indexOf('\n');
  if (reply.bytes.slice(0, nl) === '0') return '0';
  try {
    const code = (JSON.parse(reply.bytes.slice(nl + 1)) as { code?: unknown }).code;
    // the spec's codes are 1-999 (100 and up for plugins)
    if (typeof code === 'number' && Number.isInteger(code) && code > 0 && code < 1000) return String(code);
  } catch {
    /* not CNI error JSON */
  }
  return 'unknown';
}

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly programming: ProgrammingLatency;
  private readonly captureTotals = new PodCounterTotals(CAPTURE_DIRECTIONS);
  /** the kernel as read for the scrape under way (collect callbacks of one scrape share it) */
  private view?: KernelView;
  private viewRead = false;

  private readonly cniRequests: Counter<'command' | 'code'>;
  private readonly cniAddDuration: Histogram;
  private readonly k8sEvents: Counter<'kind' | 'type'>;
  private readonly repairPods: Counter<'mode' | 'result'>;
  private readonly monitorEventsLost: Counter<'reason'>;

  constructor(
    private readonly cfg: Pick<Config, 'bpfPinDir' | 'source' | 'repairMode'>,
    private readonly state: AgentState,
    opts: {
      /** ms since the epoch the agent started (default: now) */
      startedAtMs?: number;
      /** also Node's process and runtime metrics, prom-client's defaults (default false) */
      processMetrics?: boolean;
    } = {},
  ) {
    const registers = [this.registry];
    const metrics = this; // collect callbacks get their own metric as `this`

    this.cniRequests = new Counter({
      name: 'sluice_cni_requests_total',
      help: 'CNI requests the agent answered, by CNI_COMMAND and CNI result code (0: success)',
      labelNames: ['command', 'code'],
      registers,
    });
    this.cniAddDuration = new Histogram({
      name: 'sluice_cni_add_duration_seconds',
      help: 'Time the agent took to handle a CNI ADD, from the request to the reply (capture in place, ZDS answered)',
      buckets: CNI_ADD_BUCKETS,
      registers,
    });
    new Gauge({
      name: 'sluice_lb_frontends',
      help: 'Service frontends (VIP, port, protocol) programmed in sl_lb_svc, read from the kernel',
      registers,
      collect() {
        const v = metrics.kernel();
        if (v) this.set(v.frontends);
      },
    });
    new Gauge({
      name: 'sluice_lb_backends',
      help: 'Distinct backends (address, port, protocol) programmed in sl_lb_backend, read from the kernel',
      registers,
      collect() {
        const v = metrics.kernel();
        if (v) this.set(v.backends);
      },
    });
    new Gauge({
      name: 'sluice_bpf_map_pressure',
      help: 'Fill of a pinned map, entries / max_entries (0 to 1), tagged by map name; maps that do not fill (arrays, socket storage) are not listed',
      labelNames: ['map_name'],
      registers,
      collect() {
        const v = metrics.kernel();
        if (!v) return;
        this.reset();
        for (const [map_name, fill] of v.pressure) this.set({ map_name }, fill);
      },
    });
    new Counter({
      name: 'sluice_datapath_events_total',
      help: 'Datapath counters of sl_lb_counters summed over CPUs, by name (sluice bpf lb counters)',
      labelNames: ['event'],
      registers,
      collect() {
        const v = metrics.kernel();
        if (!v) return;
        // the kernel's counters are the truth: set them, a Counter has no set()
        this.reset();
        for (const event of COUNTERS) this.inc({ event }, v.datapath[event]);
      },
    });
    new Gauge({
      name: 'sluice_endpoints',
      help: 'Registered pods by the capture mode the kernel holds for them (sidecar, ambient, none)',
      labelNames: ['mode'],
      registers,
      collect() {
        const v = metrics.kernel();
        if (!v) return;
        for (const mode of MODES) this.set({ mode }, v.modes[mode]);
      },
    });
    new Counter({
      name: 'sluice_capture_connections_total',
      help: "Connections counted by the capture programs, summed over pods (sl_ep_stats): outbound and inbound captured, proxy_bypass (the proxy's own), no_listener (inbound dropped: no proxy listener)",
      labelNames: ['direction'],
      registers,
      collect() {
        const v = metrics.kernel();
        if (!v) return;
        const totals = metrics.captureTotals.update(v.podCounters);
        this.reset();
        for (const direction of CAPTURE_DIRECTIONS) this.inc({ direction }, totals[direction]);
      },
    });
    this.k8sEvents = new Counter({
      name: 'sluice_k8s_events_total',
      help: 'Effective changes of cluster objects the agent received (re-deliveries of an unchanged object are not counted), by kind and type (create, update, delete)',
      labelNames: ['kind', 'type'],
      registers,
    });
    for (const kind of K8S_KINDS) for (const type of ['create', 'update', 'delete']) this.k8sEvents.inc({ kind, type }, 0);
    if (cfg.source === 'api') {
      new Gauge({
        name: 'sluice_k8s_api_reachable',
        help: "1 when the API server answered the agent's last request, 0 while it does not",
        registers,
        collect() {
          const r = metrics.state.apiReachable();
          if (r !== undefined) this.set(r ? 1 : 0);
        },
      });
    }
    const programmingDuration = new Histogram({
      name: 'sluice_network_programming_duration_seconds',
      help: "From a Service's endpoints change (EndpointSlice last-change-trigger-time; standalone: when read) to the datapath serving it, as kube-proxy's network_programming_duration_seconds",
      buckets: PROGRAMMING_BUCKETS,
      registers,
    });
    this.programming = new ProgrammingLatency((s) => programmingDuration.observe(s), {
      startedAtMs: opts.startedAtMs ?? Date.now(),
      readTimeWithoutAnnotation: cfg.source === 'standalone',
    });
    this.repairPods = new Counter({
      name: 'sluice_repair_pods_total',
      help: 'Pods found running without a registration and what repair did to each, by repair-mode and result',
      labelNames: ['mode', 'result'],
      registers,
    });
    for (const result of REPAIR_RESULTS[cfg.repairMode]) this.repairPods.inc({ mode: cfg.repairMode, result }, 0);
    new Gauge({
      name: 'sluice_zds_connected',
      help: 'ztunnel connections over ZDS that said hello',
      registers,
      collect() {
        this.set(metrics.state.zds()?.server.connected ?? 0);
      },
    });
    new Gauge({
      name: 'sluice_zds_pending',
      help: 'Ambient pods handed to ztunnel over ZDS and not acked yet (pending or refused); their capture fails closed meanwhile',
      registers,
      collect() {
        this.set(metrics.state.zds()?.unacked ?? 0);
      },
    });
    this.monitorEventsLost = new Counter({
      name: 'sluice_monitor_events_lost_total',
      help: "Datapath events sluice monitor did not show: ring (the kernel's ring buffer was full), queue (a monitor read too slowly; counted per monitor)",
      labelNames: ['reason'],
      registers,
    });
    for (const reason of LOST_REASONS) this.monitorEventsLost.inc({ reason }, 0);
    if (opts.processMetrics) collectDefaultMetrics({ register: this.registry });
  }

  /** The Prometheus text of every metric, reading the kernel once for this scrape. */
  async scrape(): Promise<string> {
    // prom-client calls every collect callback synchronously at the start of metrics(): they
    // all see this one reading, and a concurrent scrape starts its own
    this.view = undefined;
    this.viewRead = false;
    try {
      return await this.registry.metrics();
    } finally {
      this.view = undefined;
      this.viewRead = false;
    }
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private kernel(): KernelView | undefined {
    if (!this.viewRead) {
      this.viewRead = true;
      try {
        this.view = readKernelView(this.cfg.bpfPinDir, this.state.registrations());
      } catch (e) {
        // the kernel's metrics keep their last values; the others are still served
        log.warn('metrics: cannot read the pinned maps', { pinDir: this.cfg.bpfPinDir, err: e });
        this.view = undefined;
      }
    }
    return this.view;
  }

  /** Wraps the handling of one CNI request: counts it by command and result, times ADD. */
  async cni(command: string, handle: () => Promise<RawReply>): Promise<RawReply> {
    const t0 = process.hrtime.bigint();
    const label = CNI_COMMANDS.has(command) ? command : 'other';
    let reply: RawReply;
    try {
      reply = await handle();
    } catch (e) {
      this.cniRequests.inc({ command: label, code: 'unknown' });
      throw e;
    }
    this.cniRequests.inc({ command: label, code: cniReplyCode(reply) });
    if (command === 'ADD') this.cniAddDuration.observe(Number(process.hrtime.bigint() - t0) / 1e9);
    return reply;
  }

  /** Counts the store's effective changes and notes when Services' endpoints changed. */
  followStore(store: ObjectStore): void {
    store.on('change', (ev: ChangeEvent) => {
      this.k8sEvents.inc({ kind: ev.kind, type: ev.type === 'delete' ? 'delete' : ev.old ? 'update' : 'create' });
      this.programming.changed(ev);
    });
  }

  /** A sync wrote the socket-LB maps: the changes it carried are served now (failed ones later). */
  programmed(report: Pick<SyncReport, 'failed'>): void {
    this.programming.programmed(report.failed.map((f) => f.service));
  }

  /** Events a monitor did not get (src/monitor/hub.ts). */
  monitorLost(reason: LostReason, count: number): void {
    this.monitorEventsLost.inc({ reason }, count);
  }

  /** One repair sweep's outcome. */
  repaired(mode: Config['repairMode'], r: RepairReport): void {
    const done = {
      repaired: r.repaired.length,
      labelled: r.labelled.length,
      deleted: r.deleted.length,
      not_found: r.notFound.length,
    };
    for (const [result, n] of Object.entries(done)) if (n) this.repairPods.inc({ mode, result }, n);
    const failed = r.candidates - Object.values(done).reduce((a, b) => a + b, 0);
    if (failed > 0) this.repairPods.inc({ mode, result: 'failed' }, failed);
  }
}
