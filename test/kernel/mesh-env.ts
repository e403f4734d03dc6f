/* A simulated node with the agent, the CNI plugin installed, pods added through the chain, and
 * Pod objects in the objects dir: the setting of the capture suites.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { callAgent } from '../../src/agent/api';
import { waitFor, type SimPod } from '../harness';
import { createLbEnv, PROBE, sluice, startAgent, writeConfig, writeObjects, type LbEnv } from './lb-env';

export interface MeshEnv extends LbEnv {
  confDir: string;
  binDir: string;
  stateDir: string;
}

/** `agentBin`: start another release's agent (default: this tree's). */
export async function createMeshEnv(opts: { backends?: number; extraConfig?: Record<string, string>; agentBin?: string } = {}): Promise<MeshEnv> {
  const env = (await createLbEnv({ backends: opts.backends ?? 2 })) as MeshEnv;
  env.confDir = path.join(env.node.workDir, 'net.d');
  env.binDir = path.join(env.node.workDir, 'cni-bin');
  env.stateDir = path.join(env.node.workDir, 'state');
  fs.mkdirSync(env.confDir);
  fs.writeFileSync(
    path.join(env.confDir, '10-podnet.conflist'),
    JSON.stringify({ cniVersion: '1.0.0', name: 'podnet', plugins: [{ type: 'bridge', bridge: 'slbr0', ipam: { type: 'host-local' } }] }),
  );
  writeConfig(env, { 'cni-conf-dir': env.confDir, 'cni-bin-dir': env.binDir, 'state-dir': env.stateDir, ...opts.extraConfig });
  await startAgent(env, { bin: opts.agentBin });
  return env;
}

function sluiceEntry(env: MeshEnv): Record<string, unknown> {
  const list = JSON.parse(fs.readFileSync(path.join(env.confDir, '10-podnet.conflist'), 'utf8'));
  return list.plugins.find((p: { type: string }) => p.type === 'sluice-cni');
}

export function podYaml(name: string, o: { namespace?: string; annotations?: Record<string, string>; labels?: Record<string, string> } = {}): string {
  const map = (m?: Record<string, string>) => (m ? `{${Object.entries(m).map(([k, v]) => `${JSON.stringify(k)}: ${JSON.stringify(v)}`).join(', ')}}` : '{}');
  return [
    'apiVersion: v1',
    'kind: Pod',
    `metadata: {name: ${name}, namespace: ${o.namespace ?? 'default'}, annotations: ${map(o.annotations)}, labels: ${map(o.labels)}}`,
    'spec: {nodeName: sim-node, containers: [{name: app, image: app}]}',
  ].join('\n');
}

export function namespaceYaml(name: string, labels: Record<string, string> = {}): string {
  return `apiVersion: v1\nkind: Namespace\nmetadata: {name: ${name}, labels: {${Object.entries(labels).map(([k, v]) => `${JSON.stringify(k)}: ${JSON.stringify(v)}`).join(', ')}}}`;
}

/** Adds a pod through bridge + host-local + sluice-cni (its Pod object written first). */
export async function addMeshPod(env: MeshEnv, name: string, o: { namespace?: string; annotations?: Record<string, string>; labels?: Record<string, string> } = {}): Promise<SimPod> {
  writeObjects(env, `pod-${o.namespace ?? 'default'}-${name}.yaml`, [podYaml(name, o)]);
  await waitForPodObject(env, o.namespace ?? 'default', name, o.annotations ?? {});
  return env.node.addPod(name, { namespace: o.namespace, extraPlugins: [sluiceEntry(env)], binDirs: [env.binDir] });
}

/** Rewrites a pod's object (labels/annotations change at run time). */
export async function updatePodObject(env: MeshEnv, pod: SimPod, o: { annotations?: Record<string, string>; labels?: Record<string, string> }): Promise<void> {
  writeObjects(env, `pod-${pod.namespace}-${pod.name}.yaml`, [podYaml(pod.name, { namespace: pod.namespace, ...o })]);
  await waitForPodObject(env, pod.namespace, pod.name, o.annotations ?? {});
}

/** The agent reads objects asynchronously: wait until it holds this Pod with these annotations. */
export async function waitForPodObject(env: MeshEnv, namespace: string, name: string, annotations: Record<string, string>): Promise<void> {
  const want = JSON.stringify(annotations);
  await waitFor(`Pod ${namespace}/${name} loaded`, async () => {
    const pod = (await callAgent(path.join(env.node.workDir, 'agent.sock'), { op: 'object', key: `Pod/${namespace}/${name}` })) as { metadata?: { annotations?: Record<string, string> } } | null;
    return pod !== null && JSON.stringify(pod.metadata?.annotations ?? {}) === want;
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
  return waitFor(`${pod.namespace}/${pod.name} mode=${mode}`, async () => {
    const ep = await endpoint(env, pod);
    return ep?.mode === mode ? ep : undefined;
  }, timeoutMs);
}

/** Starts the stand-in sidecar in a pod, as uid/gid 1337 (Envoy's), forwarding to the original destination. */
export async function startSidecar(env: MeshEnv, pod: SimPod, extra: string[] = []): Promise<ChildProcess> {
  const child = env.node.spawn([PROBE, 'sidecar', '--id', `sc-${pod.name}`, '--forward', '--bind-inbound-source', '127.0.0.6', '--bind-inbound-source', '::6', ...extra], {
    netnsPath: pod.netnsPath,
    uid: 1337,
    gid: 1337,
  });
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
  return { id: head.split(' ')[1], via: f.via, orig: f.orig, local: f.local, peer: f.peer, upstreamPeer: f.upstream_peer, upstream };
}

export async function startApp(env: MeshEnv, pod: SimPod, port: number, ip = pod.ipv4): Promise<ChildProcess> {
  const child = env.node.spawn([PROBE, 'serve', '--proto', 'tcp', '--addr', ip, '--port', String(port), '--id', `app-${pod.name}`], { netnsPath: pod.netnsPath, inCgroup: false });
  await env.node.waitForLine(child, 'ready');
  return child;
}
