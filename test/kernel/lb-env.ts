/* A simulated node running the sluice agent in standalone mode: a client pod, backend pods serving
 * TCP 8080 and UDP 5353 on IPv4 and IPv6 (each answers with its pod name), and helpers to write
 * Kubernetes objects, start/stop the agent and probe through VIPs. Shared by the kernel suites and
 * the demo.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createNode, run, waitFor, type SimNode, type SimPod } from '../harness';

export const ROOT = path.resolve(__dirname, '../..');
export const SLUICE = path.join(ROOT, 'bin/sluice');
export const PROBE = path.join(ROOT, 'build/sl-probe');
export const TCP_PORT = 8080;
export const UDP_PORT = 5353;

export interface ProbeResult {
  ok: boolean;
  reply?: string;
  peer?: string;
  /** TCP: the client socket's own address (getsockname) */
  local?: string;
  errno?: number;
  stage?: string;
}

export interface LbEnv {
  node: SimNode;
  /** the sluice CLI the helpers run (default: this tree's; the upgrade test uses the old release's) */
  cliBin?: string;
  client: SimPod;
  backends: SimPod[];
  objectsDir: string;
  configPath: string;
  agent?: ChildProcess;
  /** restarts keep the agent where startAgent first put it */
  agentInTestNetns?: boolean;
}

export async function createLbEnv(opts: { backends?: number } = {}): Promise<LbEnv> {
  const node = await createNode();
  const objectsDir = path.join(node.workDir, 'objects');
  fs.mkdirSync(objectsDir, { recursive: true });
  const env: LbEnv = {
    node,
    client: undefined as unknown as SimPod,
    backends: [],
    objectsDir,
    configPath: path.join(node.workDir, 'sluice.yaml'),
  };
  try {
    env.client = await node.addPod('client');
    for (let i = 1; i <= (opts.backends ?? 2); i++) {
      const pod = await node.addPod(`be${i}`);
      env.backends.push(pod);
      await serve(env, pod);
    }
    writeConfig(env);
  } catch (e) {
    await node.destroy();
    throw e;
  }
  return env;
}

/** Starts sl-probe servers in a pod: TCP and UDP, IPv4 and IPv6, each answering with `name`. */
export async function serve(env: LbEnv, pod: SimPod, name = pod.name): Promise<void> {
  for (const ip of [pod.ipv4, pod.ipv6].filter(Boolean) as string[]) {
    for (const [proto, port] of [
      ['tcp', TCP_PORT],
      ['udp', UDP_PORT],
    ] as const) {
      const child = env.node.spawn([PROBE, 'serve', '--proto', proto, '--addr', ip, '--port', String(port), '--id', name], {
        netnsPath: pod.netnsPath,
        inCgroup: false,
      });
      await env.node.waitForLine(child, 'ready');
    }
  }
}

export function writeConfig(env: LbEnv, extra: Record<string, string> = {}): void {
  const data: Record<string, string> = {
    'bpf-pin-dir': env.node.pinDir,
    'cgroup-root': env.node.cgroupPath,
    'k8s-objects-dir': env.objectsDir,
    'agent-socket': path.join(env.node.workDir, 'agent.sock'),
    // never the production defaults (/var/run/sluice, /var/run/ztunnel) on a shared machine
    'state-dir': path.join(env.node.workDir, 'state'),
    'ztunnel-uds-address': path.join(env.node.workDir, 'ztunnel.sock'),
    // any free port on loopback: the production ports (9967, 9968) may be taken by another run
    'prometheus-serve-addr': '127.0.0.1:0',
    'health-serve-addr': '127.0.0.1:0',
    ...extra,
  };
  fs.writeFileSync(
    env.configPath,
    Object.entries(data)
      .map(([k, v]) => `${k}: "${v}"`)
      .join('\n') + '\n',
  );
}

/** Replaces a file in the objects dir the way a careful writer does: temp file, then rename. */
export function writeObjects(env: LbEnv, file: string, docs: string[]): void {
  const tmp = path.join(env.objectsDir, `.${file}.tmp`);
  fs.writeFileSync(tmp, docs.join('\n---\n'));
  fs.renameSync(tmp, path.join(env.objectsDir, file));
}

export function removeObjects(env: LbEnv, file: string): void {
  fs.rmSync(path.join(env.objectsDir, file), { force: true });
}

export async function sluice(env: LbEnv, args: string[], allowFail = false) {
  return run([env.cliBin ?? SLUICE, ...args, '--config', env.configPath], { allowFail });
}

/**
 * Starts the agent in the node's network namespace (outside the test cgroup) and waits for ready.
 * `inTestNetns`: run it in this test process's namespace instead, to reach an in-process stand-in
 * API server on 127.0.0.1 (nothing is attached to that namespace: programs go to the test cgroup
 * and the pods' namespaces only). `bin`: the sluice executable (default: this tree's); `env`: more
 * environment for it; `readyTimeoutMs` (default 20 s) bounds the wait for ready.
 */
export async function startAgent(
  env: LbEnv,
  opts: { inTestNetns?: boolean; bin?: string; env?: Record<string, string>; readyTimeoutMs?: number } = {},
): Promise<ChildProcess> {
  env.agentInTestNetns = opts.inTestNetns ?? env.agentInTestNetns;
  const netnsPath = env.agentInTestNetns ? `/proc/${process.pid}/ns/net` : undefined;
  // `bin`: another release's sluice (the upgrade test starts the first release)
  const agent = env.node.spawn([opts.bin ?? SLUICE, 'agent', '--config', env.configPath], {
    inCgroup: false,
    netnsPath,
    env: opts.env,
  });
  env.cliBin = opts.bin; // the CLI of the release whose agent runs reads its maps
  env.agent = agent;
  // an agent that dies on its own is a finding: say so with the end of its log
  agent.once('exit', (code, signal) => {
    if (env.agent !== agent) return; // stopped by the test
    console.error(
      `[sluice agent exited unexpectedly: code ${code} signal ${signal}]\n${env.node.output(agent).stderr.slice(-4000)}`,
    );
  });
  await waitFor(
    'agent ready',
    async () => {
      const out = env.node.output(agent);
      if (out.exited) throw new Error(`agent exited (${out.exitCode ?? out.signal}): ${out.stderr.slice(-2000)}`);
      return (await sluice(env, ['status'], true)).code === 0;
    },
    opts.readyTimeoutMs ?? 20000,
    50,
  );
  return agent;
}

export async function stopAgent(env: LbEnv, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  const agent = env.agent;
  if (!agent) return null;
  env.agent = undefined;
  if (agent.exitCode === null && agent.signalCode === null) {
    const exited = new Promise<void>((resolve) => agent.once('exit', () => resolve()));
    agent.kill(signal);
    await exited;
  }
  return agent.exitCode;
}

export interface ListedService {
  frontend: string;
  scope: string;
  affinitySec: number;
  /** refused because internalTrafficPolicy Local has no endpoint on this node */
  noLocalEndpoints: boolean;
  backends: string[];
}

export async function lbList(env: LbEnv): Promise<ListedService[]> {
  return JSON.parse((await sluice(env, ['bpf', 'lb', 'list', '-o', 'json'])).stdout);
}

/** Waits until the pinned maps hold `frontend` with exactly these backends (any order). */
export async function waitForBackends(env: LbEnv, frontend: string, backends: string[]): Promise<void> {
  const want = [...backends].sort().join(',');
  await waitFor(`${frontend} -> [${want}]`, async () => {
    const s = (await lbList(env)).find((x) => x.frontend === frontend);
    return s !== undefined && [...s.backends].sort().join(',') === want;
  });
}

export async function waitForAbsent(env: LbEnv, frontend: string): Promise<void> {
  await waitFor(`${frontend} removed`, async () => !(await lbList(env)).some((x) => x.frontend === frontend));
}

export interface ProbeOpts {
  proto?: 'tcp' | 'udp';
  count?: number;
  udpMode?: 'connected' | 'unconnected';
  sameSocket?: boolean;
  intervalMs?: number;
  timeoutMs?: number;
  /** run from this pod (default: the client pod) or from the node's own namespace */
  from?: SimPod | 'node';
  uid?: number;
}

/** An attempt of a steady client (sl-probe connect --persist): conn numbers its sockets (1, 2 …). */
export interface SteadyAttempt extends ProbeResult {
  conn?: number;
}

/**
 * A client that lives through a change: sl-probe connect keeping one connected socket and sending
 * every 20 ms (a new socket after a failure), or with `udpMode: 'unconnected'` one unconnected
 * UDP socket. Runs until killed (100,000 attempts).
 */
export function startSteadyClient(
  env: LbEnv,
  o: { proto: 'tcp' | 'udp'; addr: string; port: number; from: SimPod | 'node'; udpMode?: 'unconnected' },
): ChildProcess {
  const args = [PROBE, 'connect', '--proto', o.proto, '--addr', o.addr, '--port', String(o.port)];
  args.push('--count', '100000', '--interval-ms', '20', '--timeout-ms', '1000');
  if (o.udpMode) args.push('--udp-mode', o.udpMode, '--same-socket');
  else args.push('--persist');
  return env.node.spawn(args, { netnsPath: o.from === 'node' ? env.node.netnsPath : o.from.netnsPath });
}

/** The attempts a running sl-probe connect has printed so far. */
export function attemptsOf(env: LbEnv, child: ChildProcess): SteadyAttempt[] {
  return env.node
    .output(child)
    .stdout.split('\n')
    .filter((l) => l.startsWith('{') && !l.includes('"summary"'))
    .map((l) => JSON.parse(l) as SteadyAttempt);
}

/** Waits until a running sl-probe connect has made `n` more attempts than `from`; returns those. */
export function moreAttempts(env: LbEnv, child: ChildProcess, from: number, n: number): Promise<SteadyAttempt[]> {
  return waitFor(
    `${n} more attempts`,
    () => {
      const all = attemptsOf(env, child);
      return all.length >= from + n ? all.slice(from, from + n) : undefined;
    },
    10000,
  );
}

/** Runs sl-probe connect inside the test cgroup and returns one result per attempt. */
export async function probe(env: LbEnv, addr: string, port: number, o: ProbeOpts = {}): Promise<ProbeResult[]> {
  const args = [
    PROBE,
    'connect',
    '--proto',
    o.proto ?? 'tcp',
    '--addr',
    addr,
    '--port',
    String(port),
    '--count',
    String(o.count ?? 1),
  ];
  if (o.udpMode) args.push('--udp-mode', o.udpMode);
  if (o.sameSocket) args.push('--same-socket');
  if (o.intervalMs) args.push('--interval-ms', String(o.intervalMs));
  args.push('--timeout-ms', String(o.timeoutMs ?? 1000));
  const from = o.from ?? env.client;
  const netnsPath = from === 'node' ? env.node.netnsPath : from.netnsPath;
  const count = o.count ?? 1;
  const res = await env.node.exec(args, {
    netnsPath,
    uid: o.uid,
    allowFail: true,
    timeoutMs: 20000 + count * ((o.intervalMs ?? 0) + 50),
  });
  return res.stdout
    .split('\n')
    .filter((l) => l.startsWith('{') && !l.includes('"summary"'))
    .map((l) => JSON.parse(l) as ProbeResult);
}

/** The backend that answered: sl-probe servers reply with their pod name first. */
export function answeredBy(r: ProbeResult): string | undefined {
  return r.ok ? r.reply?.split(' ')[0] : undefined;
}

// --- Kubernetes object builders (YAML text) ---

export interface PortSpec {
  name?: string;
  port: number;
  targetPort?: number | string;
  protocol?: 'TCP' | 'UDP';
  nodePort?: number;
}

export interface ServiceOpts {
  clusterIP: string;
  /** dual stack: every ClusterIP, the primary (clusterIP) first; default [clusterIP] */
  clusterIPs?: string[];
  ports: PortSpec[];
  externalIPs?: string[];
  affinitySec?: number;
  namespace?: string;
  type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer';
  labels?: Record<string, string>;
  internalTrafficPolicy?: 'Cluster' | 'Local';
  externalTrafficPolicy?: 'Cluster' | 'Local';
  trafficDistribution?: string;
  /** status.loadBalancer.ingress */
  loadBalancerIngress?: Array<{ ip: string; ipMode?: 'VIP' | 'Proxy' }>;
}

export function serviceYaml(name: string, spec: ServiceOpts): string {
  const labels = spec.labels ? `, labels: ${JSON.stringify(spec.labels)}` : '';
  const lines = [
    'apiVersion: v1',
    'kind: Service',
    `metadata: {name: ${name}, namespace: ${spec.namespace ?? 'default'}${labels}}`,
    'spec:',
    `  clusterIP: "${spec.clusterIP}"`,
    `  clusterIPs: [${(spec.clusterIPs ?? [spec.clusterIP]).map((ip) => `"${ip}"`).join(', ')}]`,
    '  ports:',
    ...spec.ports.map(
      (p) =>
        `  - {${p.name ? `name: ${p.name}, ` : ''}port: ${p.port}, targetPort: ${JSON.stringify(p.targetPort ?? p.port)}, protocol: ${p.protocol ?? 'TCP'}` +
        `${p.nodePort ? `, nodePort: ${p.nodePort}` : ''}}`,
    ),
  ];
  if (spec.type) lines.push(`  type: ${spec.type}`);
  if (spec.externalIPs) lines.push(`  externalIPs: [${spec.externalIPs.map((i) => `"${i}"`).join(', ')}]`);
  if (spec.affinitySec)
    lines.push('  sessionAffinity: ClientIP', `  sessionAffinityConfig: {clientIP: {timeoutSeconds: ${spec.affinitySec}}}`);
  if (spec.internalTrafficPolicy) lines.push(`  internalTrafficPolicy: ${spec.internalTrafficPolicy}`);
  if (spec.externalTrafficPolicy) lines.push(`  externalTrafficPolicy: ${spec.externalTrafficPolicy}`);
  if (spec.trafficDistribution) lines.push(`  trafficDistribution: ${spec.trafficDistribution}`);
  if (spec.loadBalancerIngress) lines.push(`status: {loadBalancer: {ingress: ${JSON.stringify(spec.loadBalancerIngress)}}}`);
  return lines.join('\n');
}

/** One endpoint of an EndpointSlice: conditions (omitted ones stay unset: the API's nil), node and hints. */
export interface EndpointSpec {
  ip: string;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  nodeName?: string;
  /** hints.forZones */
  zones?: string[];
  /** hints.forNodes */
  nodes?: string[];
}

function endpointYaml(e: EndpointSpec): string {
  const conditions = {
    ready: e.ready ?? true,
    ...(e.serving !== undefined ? { serving: e.serving } : {}),
    ...(e.terminating !== undefined ? { terminating: e.terminating } : {}),
  };
  const fields: Record<string, unknown> = { addresses: [e.ip], conditions };
  if (e.nodeName) fields.nodeName = e.nodeName;
  if (e.zones || e.nodes) {
    fields.hints = {
      ...(e.zones ? { forZones: e.zones.map((name) => ({ name })) } : {}),
      ...(e.nodes ? { forNodes: e.nodes.map((name) => ({ name })) } : {}),
    };
  }
  return `- ${JSON.stringify(fields)}`;
}

export function sliceYaml(
  name: string,
  spec: {
    service: string;
    family: 4 | 6;
    endpoints: EndpointSpec[];
    ports: Array<{ name?: string; port: number; protocol?: 'TCP' | 'UDP' }>;
    namespace?: string;
    labels?: Record<string, string>;
  },
): string {
  const labels = { 'kubernetes.io/service-name': spec.service, ...spec.labels };
  return [
    'apiVersion: discovery.k8s.io/v1',
    'kind: EndpointSlice',
    `metadata: {name: ${name}, namespace: ${spec.namespace ?? 'default'}, labels: ${JSON.stringify(labels)}}`,
    `addressType: IPv${spec.family}`,
    'endpoints:',
    ...(spec.endpoints.length ? spec.endpoints.map(endpointYaml) : ['[]']),
    'ports:',
    ...spec.ports.map(
      (p) => `- {${p.name !== undefined ? `name: "${p.name}", ` : ''}port: ${p.port}, protocol: ${p.protocol ?? 'TCP'}}`,
    ),
  ]
    .join('\n')
    .replace('endpoints:\n[]', 'endpoints: []');
}

/**
 * Service `web` (vip:80 → TCP_PORT) on the first two backend pods, and with vip6 also `web6`, the
 * same in IPv6, written to svc.yaml; waits until the IPv4 one is in the maps.
 */
export async function writeWebService(env: LbEnv, vip: string, vip6?: string): Promise<void> {
  const [a, b] = env.backends;
  writeObjects(env, 'svc.yaml', [
    serviceYaml('web', { clusterIP: vip, ports: [{ name: 'http', port: 80, targetPort: TCP_PORT }] }),
    sliceYaml('web-1', {
      service: 'web',
      family: 4,
      endpoints: [{ ip: a.ipv4 }, { ip: b.ipv4 }],
      ports: [{ name: 'http', port: TCP_PORT }],
    }),
    ...(vip6 === undefined
      ? []
      : [
          serviceYaml('web6', { clusterIP: vip6, ports: [{ name: 'http', port: 80, targetPort: TCP_PORT }] }),
          sliceYaml('web6-1', {
            service: 'web6',
            family: 6,
            endpoints: [{ ip: a.ipv6! }, { ip: b.ipv6! }],
            ports: [{ name: 'http', port: TCP_PORT }],
          }),
        ]),
  ]);
  await waitForBackends(env, `${vip}:80/TCP`, [`${a.ipv4}:${TCP_PORT}`, `${b.ipv4}:${TCP_PORT}`]);
}

/** A Node object; in standalone mode the agent reads its zone from the one named like config node-name. */
export function nodeYaml(name: string, labels: Record<string, string> = {}): string {
  return ['apiVersion: v1', 'kind: Node', `metadata: {name: ${name}, labels: ${JSON.stringify(labels)}}`].join('\n');
}
