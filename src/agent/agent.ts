/* The node agent: loads and attaches the datapath, follows the cluster through a ClusterSource,
 * keeps the maps in step, and answers on the local API. Killing it leaves the datapath running
 * from its pins; starting it again re-opens them and writes only differences.
 */
import { netnsCookieOf, netnsCookieSelf, type MapMigration } from '../bpf';
import type { CniRequest } from '../cni/handler';
import type { CniInstaller } from '../cni/install';
import { cniInstaller } from '../cni/install-config';
import * as os from 'node:os';
import * as v8 from 'node:v8';
import type { Config } from '../config';
import { ApiClient } from '../k8s/api-client';
import { ApiSource } from '../k8s/api-source';
import { DirectorySource } from '../k8s/dir-source';
import { WriteBack } from '../k8s/write-back';
import type { ClusterSource } from '../k8s/source';
import { ObjectStore } from '../k8s/store';
import { ServiceTracker } from '../lb/tracker';
import { datapathOptions, installDatapath } from '../datapath';
import { closeEventGate, PinnedEventFeed } from '../bpf/event-feed';
import { LbMaps } from '../lb/maps';
import { PodLbOptOut } from '../lb/pod-opt-out';
import { SocketDestroyer } from '../lb/sock-destroy';
import { LbSync } from '../lb/sync';
import { log } from '../log';
import { AmbientZds } from '../mesh/ambient-zds';
import type { ZtunnelStatus } from '../mesh/zds/server';
import { CaptureMaps } from '../mesh/maps';
import { closePoller, SeqpacketServer, watchAddresses, type AddressWatch } from '../native';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Enroller } from '../mesh/enroller';
import { MeshController } from '../mesh/controller';
import { CniRequests } from './cni-requests';
import { LocalApiServer } from './local-api';
import { PodRegistry } from './pod-registry';
import { RepairSweeper } from './repair-sweeper';
import { ServiceSyncLoop, type LastSync } from './service-sync-loop';
import { AgentHttp, AgentMetrics } from '../metrics';
import { MonitorHub } from '../monitor/hub';
import { MonitorNames } from '../monitor/names';
import { monitorStream } from '../monitor/stream';

export type Phase = 'starting' | 'ready' | 'stopping' | 'failed';

export interface AgentStatus {
  ready: boolean;
  phase: Phase;
  reason: string;
  pid: number;
  startedAt: string;
  config: { bpfPinDir: string; cgroupRoot: string; lbSockHostnsOnly: boolean; k8sObjectsDir: string };
  datapath?: {
    links: Record<string, string>;
    services: number;
    backends: number;
    counters: Record<string, number>;
    /** what the start did with each pinned map (reused, created, migrated, rebuilt, removed) */
    migration: MapMigration[];
    /** 'available', or why sockets on removed backends are not destroyed (an older kernel) */
    sockDestroy: string;
  };
  lastSync?: LastSync;
  source?: unknown;
  cni?: { installed: boolean; file?: string; reason?: string };
  memory?: { rssMiB: number; heapUsedMiB: number };
  /** pod registrations (`endpoints`: the name `status -o json` has always had) */
  endpoints: number;
  /** the ZDS server and the ztunnels connected to it */
  zds?: { address: string; ztunnels: ZtunnelStatus[] };
  /** where /metrics and /healthz, /readyz are served ("host:port" as bound) */
  http?: { metrics?: string; health?: string };
  /** `sluice monitor`s attached now */
  monitors: number;
}

export class Agent {
  private phase: Phase = 'starting';
  private reason = 'loading the datapath';
  private readonly startedAt = new Date();
  private maps?: LbMaps;
  private sync?: LbSync;
  private links: Record<string, string> = {};
  private migration: MapMigration[] = [];
  private source?: ClusterSource & { status?(): unknown };
  private readonly store = new ObjectStore();
  private localApi?: LocalApiServer;
  private services?: ServiceSyncLoop;
  private readonly registry: PodRegistry;
  private tracker?: ServiceTracker;
  private apiSource?: ApiSource;
  private apiClient?: ApiClient;
  private writeBack?: WriteBack;
  private capture?: CaptureMaps;
  private enroller?: Enroller;
  private installer?: CniInstaller;
  private zds?: AmbientZds;
  private mesh?: MeshController;
  private addrWatch?: AddressWatch;
  private repair?: RepairSweeper;
  private readonly metrics: AgentMetrics;
  private http?: AgentHttp;
  private lbOptOut?: PodLbOptOut;
  private destroyer?: SocketDestroyer;
  private monitor?: MonitorHub;
  private readonly cniRequests: CniRequests;

  constructor(private readonly cfg: Config) {
    this.registry = new PodRegistry(cfg.stateDir);
    this.metrics = new AgentMetrics(
      cfg,
      { registrations: () => this.registry.list(), zds: () => this.zds, apiReachable: () => this.apiSource?.status().reachable },
      { startedAtMs: this.startedAt.getTime(), processMetrics: cfg.prometheusServeAddr !== undefined },
    );
    // CNI requests may come at any time: what the agent has not created yet is asked for per request
    this.cniRequests = new CniRequests({
      registry: this.registry,
      readiness: () => this.readiness(),
      store: this.store,
      apiSource: () => this.apiSource,
      mesh: () => this.mesh,
      enroller: () => this.enroller,
      zds: () => this.zds,
      metrics: this.metrics,
    });
  }

  async start(): Promise<void> {
    this.localApi = new LocalApiServer(this.cfg.agentSocket, {
      status: () => this.status(),
      cni: (req) => this.cniRequests.handle(req as unknown as CniRequest),
      // the agent's view of one object (`Kind/namespace/name`): for debugging and tests
      object: (req) => this.store.get(String(req.key)) ?? null,
      monitor: (req) => {
        if (!this.monitor) throw new Error('the agent is still loading the datapath');
        return monitorStream(this.monitor, req);
      },
    });
    await this.localApi.listen();
    this.http = await AgentHttp.start(this.cfg, this.metrics, {
      readiness: () => this.readiness(),
      alive: () => this.phase !== 'failed',
    });
    this.loadRegistrations();

    const cookie = netnsCookieSelf();
    const { links, netnsLinks, migration, sockDestroy } = installDatapath(datapathOptions(this.cfg, cookie));
    // a monitor attached to an agent that was killed left the programs queueing events for no one
    if (closeEventGate(this.cfg.bpfPinDir)) log.info('closed the datapath event gate a previous agent left open');
    // the event feed reads the pins: monitors can attach once the datapath is in place
    const names = new MonitorNames({ registry: this.registry, store: this.store, hostNetnsCookie: cookie });
    this.monitor = new MonitorHub(() => new PinnedEventFeed(this.cfg.bpfPinDir), names, {
      onLost: (reason, n) => this.metrics.monitorLost(reason, n),
    });
    const maps = LbMaps.open(this.cfg.bpfPinDir);
    this.maps = maps;
    this.lbOptOut = PodLbOptOut.open(this.cfg.bpfPinDir);
    this.destroyer = SocketDestroyer.open(this.cfg.bpfPinDir, sockDestroy.reason, {
      terminateTcp: this.cfg.lbSockTerminatePodConnections,
    });
    this.capture = CaptureMaps.open(this.cfg.bpfPinDir);
    this.enroller = new Enroller(this.capture, this.cfg.bpfPinDir);
    // the node's addresses change at run time (a bridge or cilium_host address appears after
    // the primary CNI's first pod): followed live through rtnetlink
    this.addrWatch = watchAddresses(() => this.enroller?.setNodeIps(nodeAddresses()));
    this.enroller.setNodeIps(nodeAddresses());
    this.links = links;
    this.migration = migration;
    this.sync = new LbSync(maps);
    const restored = this.sync.restore();
    const actions: Record<string, number> = {};
    for (const m of migration) actions[m.action] = (actions[m.action] ?? 0) + 1;
    log.info('datapath attached', {
      cgroup: this.cfg.cgroupRoot,
      pinDir: this.cfg.bpfPinDir,
      hostnsOnly: this.cfg.lbSockHostnsOnly,
      netnsCookie: cookie.toString(),
      links,
      netnsLinks,
      restoredServices: restored.services,
      restoredBackends: restored.backends,
      maps: actions,
      sockDestroy: sockDestroy.available ? 'available' : sockDestroy.reason,
    });
    for (const m of migration) {
      if (m.action === 'reused') continue;
      if (m.lost || m.dropped) log.warn(`map ${m.action}`, { ...m });
      else log.info(`map ${m.action}`, { ...m });
    }
    this.refillMaps();

    this.reason = 'waiting for the first sync of cluster objects';
    if (this.cfg.source === 'api') {
      const client = await ApiClient.create({
        kubeconfig: this.cfg.k8sKubeconfig || undefined,
        server: this.cfg.k8sApiServer || undefined,
      });
      this.apiClient = client;
      this.apiSource = new ApiSource(client, { nodeName: this.cfg.nodeName });
      this.writeBack = new WriteBack(client, this.cfg.nodeName);
      this.source = this.apiSource;
      log.info('cluster source: API server', { server: client.serverUrl().origin, node: this.cfg.nodeName });
    } else {
      this.source = new DirectorySource(this.cfg.k8sObjectsDir);
      log.info('cluster source: standalone directory', { dir: this.cfg.k8sObjectsDir });
    }
    this.metrics.followStore(this.store);
    await this.source.start(this.store);
    this.tracker = new ServiceTracker(this.store, { nodeName: this.cfg.nodeName });
    if (this.cfg.ztunnelUdsAddress) this.zds = this.ambientZds(this.cfg.ztunnelUdsAddress);
    this.mesh = new MeshController({
      store: this.store,
      registry: this.registry,
      enroller: this.enroller,
      writeBack: this.writeBack,
      zds: this.zds,
      lbOptOut: this.lbOptOut,
      decisionsFile: path.join(this.cfg.stateDir, 'decisions.json'),
      mode: {
        excludeNamespaces: this.cfg.excludeNamespaces,
        dnsCapture: this.cfg.meshDnsCapture,
        ambientDnsCapture: this.cfg.ambientDnsCapture,
        proxyUid: this.cfg.meshProxyUid,
        proxyGid: this.cfg.meshProxyGid,
      },
    });
    this.mesh.prune();
    this.mesh.markAll(); // Pods and Namespaces may have changed while the agent was down
    const mesh = this.mesh;
    this.repair = new RepairSweeper(
      { cfg: this.cfg, store: this.store, registry: this.registry, enrol: (reg) => mesh.apply(reg), api: this.apiClient },
      { onReport: (r) => this.metrics.repaired(this.cfg.repairMode, r) },
    );
    const services = new ServiceSyncLoop({
      tracker: this.tracker,
      sync: this.sync,
      destroyer: this.destroyer,
      podNetns: () => this.registry.list().map((e) => e.netnsPath),
      // first the pods whose Pod or Namespace changed are re-decided and (once ready) pods running
      // without sluice looked for if a Pod changed; then the changed Services are written
      beforeSync: () => {
        this.mesh?.flush();
        if (this.phase === 'ready') this.repair?.sweepIfDue();
      },
      onReport: (r) => this.metrics.programmed(r),
    });
    this.services = services;
    if (this.phase === 'stopping') services.stop(); // stop() came during the start: no sync is scheduled
    this.store.on('change', (ev) => {
      this.mesh?.changed(ev);
      if (ev.kind === 'Pod') this.repair?.podChanged(ev.key.slice('Pod/'.length), ev.type === 'delete');
      services.changed();
    });
    services.syncNow();
    const known = new Set(this.registry.list().map((e) => e.netnsCookie));
    const stale = this.enroller.releaseUnknown(known);
    if (stale) log.info('released capture of pods no longer registered', { count: stale });
    this.lbOptOut.forgetAllBut(known);
    await this.repair.start();
    // ztunnel gets its snapshot only once every registered pod was decided: a snapshot missing
    // a pod would make ztunnel drop it
    this.zds?.start();
    if (this.cfg.cniConfDir) this.installCni();
    this.phase = 'ready';
    this.reason = '';
    log.info('agent ready', { services: this.sync.serviceCount, endpoints: this.registry.list().length });
  }

  /**
   * Refills what an upgrade had to start empty and only the agent can fill (src/map-migrations.ts
   * says per map what "rebuild" means; node addresses are written at every start anyway): every
   * enrolled pod needs its counter entry, the programs count only into existing ones.
   */
  private refillMaps(): void {
    const stats = this.enroller?.restoreStats() ?? 0;
    if (stats) log.info('per-pod counters recreated', { pods: stats });
  }

  private ambientZds(address: string): AmbientZds {
    fs.mkdirSync(path.dirname(address), { recursive: true });
    return new AmbientZds({
      path: address,
      listen: (p, onConnection) => SeqpacketServer.listen(p, onConnection),
      stateFile: path.join(this.cfg.stateDir, 'zds.json'),
      onState: (w, st) => this.writeBack?.redirection(w, st.state === 'acked' ? 'enabled' : 'pending'),
    });
  }

  /** Registrations survive restarts; those whose network namespace is gone are dropped. */
  private loadRegistrations(): void {
    const n = this.registry.load();
    let dropped = 0;
    for (const reg of this.registry.list()) {
      let cookie: string | undefined;
      try {
        cookie = netnsCookieOf(reg.netnsPath).toString();
      } catch {
        cookie = undefined;
      }
      if (cookie === reg.netnsCookie) continue;
      this.registry.remove(reg.containerId, reg.ifName);
      dropped++;
      log.info('pod registration dropped: its network namespace is gone', {
        pod: `${reg.namespace}/${reg.name}`,
        containerId: reg.containerId,
        netns: reg.netnsPath,
      });
    }
    log.info('pod registrations loaded', { registered: n - dropped, dropped });
  }

  private installCni(): void {
    this.installer = cniInstaller(this.cfg);
    this.installer.install();
    this.installer.watch();
    log.info('CNI plugin installed', { ...this.installer.status(), exclusive: this.cfg.cniExclusive });
  }

  /** Readiness for pods: the datapath programmed and, when configured, the plugin installed. */
  private readiness(): { ready: boolean; reason: string } {
    if (this.phase !== 'ready') return { ready: false, reason: this.reason || this.phase };
    const cni = this.installer?.status();
    if (cni && !cni.installed) return { ready: false, reason: `CNI plugin not installed: ${cni.reason ?? 'unknown'}` };
    return { ready: true, reason: 'programs attached, first sync done' + (cni ? `, CNI plugin in ${cni.file}` : '') };
  }

  status(): AgentStatus {
    const { ready, reason } = this.readiness();
    return {
      ready,
      phase: this.phase,
      reason,
      cni: this.installer?.status(),
      endpoints: this.registry.list().length,
      pid: process.pid,
      startedAt: this.startedAt.toISOString(),
      config: {
        bpfPinDir: this.cfg.bpfPinDir,
        cgroupRoot: this.cfg.cgroupRoot,
        lbSockHostnsOnly: this.cfg.lbSockHostnsOnly,
        k8sObjectsDir: this.cfg.k8sObjectsDir,
      },
      datapath: this.maps && {
        links: this.links,
        services: this.sync?.serviceCount ?? 0,
        backends: this.services?.lastSync?.report.backends ?? 0,
        counters: this.maps.readCounters(),
        migration: this.migration,
        sockDestroy: this.destroyer?.unavailable || 'available',
      },
      lastSync: this.services?.lastSync,
      memory: {
        rssMiB: Math.round(process.memoryUsage().rss / 1048576),
        heapUsedMiB: Math.round(process.memoryUsage().heapUsed / 1048576),
      },
      source: this.source?.status?.(),
      zds: this.zds && { address: this.cfg.ztunnelUdsAddress, ztunnels: this.zds.server.status() },
      http: this.http?.addresses(),
      monitors: this.monitor?.subscribers ?? 0,
    };
  }

  /** Stops following the cluster and closes the API; the datapath stays in the kernel. */
  async stop(): Promise<void> {
    this.phase = 'stopping';
    this.services?.stop();
    await this.repair?.stop();
    this.installer?.stop();
    await this.source?.stop();
    this.zds?.close();
    this.addrWatch?.close();
    await this.writeBack?.flush(); // annotations and Events already under way
    this.monitor?.close(); // closes the kernel's gate: no events without a reader
    await this.http?.close();
    await this.localApi?.close();
    this.maps?.close();
    this.capture?.close();
    this.lbOptOut?.close();
    this.destroyer?.close();
    closePoller(); // the native I/O thread, if anything started it (ZDS, address watch)
    log.info('agent stopped; datapath left running from its pins', { pinDir: this.cfg.bpfPinDir });
  }
}

/** This node's own addresses (the agent runs in the node's network namespace). */
function nodeAddresses(): string[] {
  return Object.values(os.networkInterfaces())
    .flat()
    .filter((a): a is os.NetworkInterfaceInfo => a !== undefined && !a.internal)
    .map((a) => a.address.split('%')[0]);
}

/** Runs the agent until SIGTERM/SIGINT. */
export async function runAgent(cfg: Config): Promise<void> {
  // A node agent's memory is the node's: grow the V8 heap by a quarter per full GC (instead of up
  // to several times) with the small young generation the launcher sets (bin/sluice: 2 MiB per
  // semi-space). Measured here against --optimize-for-size, the previous choice: peak RSS about
  // the same (~125 MiB at 10,000 Services, ~500 MiB at 100,000), first syncs 15-30% faster
  // (that flag also makes V8 compile and collect for size, not speed).
  v8.setFlagsFromString('--heap-growing-percent=25');
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
