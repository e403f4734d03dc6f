/* A simulated node with the agent, the CNI plugin installed, pods added through the chain, and
 * Pod objects in the objects dir: the setting of the capture suites.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { callAgent } from '../../src/agent/local-api';
import type { Pod } from '../../src/k8s/types';
import { parseObject } from '../../src/k8s/validate';
import { waitFor, type SimPod } from '../harness';
import { createLbEnv, PROBE, sluice, startAgent, writeConfig, writeObjects, type LbEnv } from './lb-env';

export interface MeshEnv extends LbEnv {
  confDir: string;
  binDir: string;
  stateDir: string;
}

/** `agentBin`: start another release's agent (default: this tree's). */
export async function createMeshEnv(
  opts: { backends?: number; extraConfig?: Record<string, string>; agentBin?: string } = {},
): Promise<MeshEnv> {
  const env = (await createLbEnv({ backends: opts.backends ?? 2 })) as MeshEnv;
  env.confDir = path.join(env.node.workDir, 'net.d');
  env.binDir = path.join(env.node.workDir, 'cni-bin');
  env.stateDir = path.join(env.node.workDir, 'state');
  fs.mkdirSync(env.confDir);
  fs.writeFileSync(
    path.join(env.confDir, '10-podnet.conflist'),
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'podnet',
      plugins: [{ type: 'bridge', bridge: 'slbr0', ipam: { type: 'host-local' } }],
    }),
  );
  writeConfig(env, { 'cni-conf-dir': env.confDir, 'cni-bin-dir': env.binDir, 'state-dir': env.stateDir, ...opts.extraConfig });
  await startAgent(env, { bin: opts.agentBin });
  return env;
}

function sluiceEntry(env: MeshEnv): Record<string, unknown> {
  const list = JSON.parse(fs.readFileSync(path.join(env.confDir, '10-podnet.conflist'), 'utf8'));
  return list.plugins.find((p: { type: string }) => p.type === 'sluice-cni');
}

/** A container of a test Pod: the fields sluice reads (an image is added for realism). */
export interface ContainerYaml {
  name: string;
  args?: string[];
  env?: Array<{ name: string; value?: string }>;
  securityContext?: { runAsUser?: number; runAsGroup?: number };
}

export interface PodYamlOptions {
  namespace?: string;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  /** default: `app`, and Istio's sidecar (ISTIO_PROXY) when the annotation sidecar.istio.io/status is given */
  containers?: ContainerYaml[];
  initContainers?: ContainerYaml[];
}

/** Istio's injected sidecar container as the injector writes it: `pilot-agent proxy sidecar`. */
export const ISTIO_PROXY: ContainerYaml = { name: 'istio-proxy', args: ['proxy', 'sidecar'] };

function podObject(name: string, o: PodYamlOptions): Record<string, unknown> {
  const injected = o.annotations?.['sidecar.istio.io/status'] !== undefined;
  const containers = o.containers ?? (injected ? [{ name: 'app' }, ISTIO_PROXY] : [{ name: 'app' }]);
  const withImage = (cs: ContainerYaml[]) => cs.map((c) => ({ image: c.name, ...c }));
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: o.namespace ?? 'default', annotations: o.annotations ?? {}, labels: o.labels ?? {} },
    spec: {
      nodeName: 'sim-node',
      containers: withImage(containers),
      ...(o.initContainers ? { initContainers: withImage(o.initContainers) } : {}),
    },
  };
}

/** A Pod document (JSON, which is YAML) for the objects dir. */
export function podYaml(name: string, o: PodYamlOptions = {}): string {
  return JSON.stringify(podObject(name, o));
}

export function namespaceYaml(name: string, labels: Record<string, string> = {}): string {
  return `apiVersion: v1\nkind: Namespace\nmetadata: {name: ${name}, labels: {${Object.entries(labels)
    .map(([k, v]) => `${JSON.stringify(k)}: ${JSON.stringify(v)}`)
    .join(', ')}}}`;
}

/** Adds a pod through bridge + host-local + sluice-cni (its Pod object written first). */
export async function addMeshPod(env: MeshEnv, name: string, o: PodYamlOptions = {}): Promise<SimPod> {
  writeObjects(env, `pod-${o.namespace ?? 'default'}-${name}.yaml`, [podYaml(name, o)]);
  await waitForPodObject(env, name, o);
  return env.node.addPod(name, { namespace: o.namespace, extraPlugins: [sluiceEntry(env)], binDirs: [env.binDir] });
}

/** Rewrites a pod's object (labels, annotations, containers change at run time). */
export async function updatePodObject(env: MeshEnv, pod: SimPod, o: Omit<PodYamlOptions, 'namespace'>): Promise<void> {
  const full = { namespace: pod.namespace, ...o };
  writeObjects(env, `pod-${pod.namespace}-${pod.name}.yaml`, [podYaml(pod.name, full)]);
  await waitForPodObject(env, pod.name, full);
}

/**
 * The agent reads objects asynchronously: wait until it holds this Pod as written (its metadata
 * and spec as the agent's validation projects them).
 */
export async function waitForPodObject(env: MeshEnv, name: string, o: PodYamlOptions): Promise<void> {
  const want = parseObject(podObject(name, o)) as Pod;
  const key = `Pod/${want.metadata.namespace}/${name}`;
  // the spec fields this agent keeps (an older release, in the upgrade test, keeps fewer)
  const view = (p: Pod, keys: string[]) =>
    JSON.stringify([
      p.metadata.annotations ?? {},
      p.metadata.labels ?? {},
      keys.map((k) => (p.spec as Record<string, unknown>)[k]),
    ]);
  await waitFor(`${key} loaded`, async () => {
    const pod = (await callAgent(path.join(env.node.workDir, 'agent.sock'), { op: 'object', key })) as Pod | null;
    if (pod === null) return false;
    const keys = Object.keys(pod.spec ?? {}).sort();
    return view(pod, keys) === view(want, keys);
  });
}

export interface ListedEp {
  name: string;
  namespace: string;
  mode: string;
  reason: string;
  netnsCookie: string;
  counters?: { outbound: number; inbound: number; proxyBypass: number; noListener: number };
}

export async function endpoint(env: MeshEnv, pod: SimPod): Promise<ListedEp | undefined> {
  const eps: ListedEp[] = JSON.parse((await sluice(env, ['endpoint', 'list', '-o', 'json'])).stdout);
  return eps.find((e) => e.name === pod.name && e.namespace === pod.namespace);
}

export async function waitForMode(env: MeshEnv, pod: SimPod, mode: string, timeoutMs = 3000): Promise<ListedEp> {
  return waitFor(
    `${pod.namespace}/${pod.name} mode=${mode}`,
    async () => {
      const ep = await endpoint(env, pod);
      return ep?.mode === mode ? ep : undefined;
    },
    timeoutMs,
  );
}

/** Starts the stand-in sidecar in a pod, as uid/gid 1337 (Envoy's), forwarding to the original destination. */
export async function startSidecar(env: MeshEnv, pod: SimPod, extra: string[] = []): Promise<ChildProcess> {
  const child = env.node.spawn(
    [
      PROBE,
      'sidecar',
      '--id',
      `sc-${pod.name}`,
      '--forward',
      '--bind-inbound-source',
      '127.0.0.6',
      '--bind-inbound-source',
      '::6',
      ...extra,
    ],
    {
      netnsPath: pod.netnsPath,
      uid: 1337,
      gid: 1337,
    },
  );
  await env.node.waitForLine(child, 'ready');
  return child;
}

export interface SidecarReply {
  id: string;
  via: string;
  orig: string;
  local: string;
  peer: string;
  upstream?: string;
  upstreamPeer?: string;
}

/** Parses the stand-in sidecar's answer line (`sidecar ID via=.. orig=.. ... upstream=<line>`). */
export function sidecarReply(line: string | undefined): SidecarReply | undefined {
  if (!line?.startsWith('sidecar ')) return undefined;
  const [head, upstream] = line.split(' upstream=');
  const f: Record<string, string> = {};
  for (const part of head.split(' ').slice(2)) {
    const eq = part.indexOf('=');
    f[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return {
    id: head.split(' ')[1],
    via: f.via,
    orig: f.orig,
    local: f.local,
    peer: f.peer,
    upstreamPeer: f.upstream_peer,
    upstream,
  };
}

export async function startApp(env: MeshEnv, pod: SimPod, port: number, ip = pod.ipv4): Promise<ChildProcess> {
  const child = env.node.spawn(
    [PROBE, 'serve', '--proto', 'tcp', '--addr', ip, '--port', String(port), '--id', `app-${pod.name}`],
    { netnsPath: pod.netnsPath, inCgroup: false },
  );
  await env.node.waitForLine(child, 'ready');
  return child;
}
