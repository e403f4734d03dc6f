/* Pods that started before the agent: repaired in place (registered, enrolled, their sidecar's
 * existing listeners adopted, no restart), or labelled, or deleted, per repair-mode.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeApiServer } from '../harness/apiserver';
import { waitFor, type SimPod } from '../harness';
import { createLbEnv, probe, sluice, startAgent, stopAgent, writeConfig } from './lb-env';
import { sidecarReply, startApp, startSidecar, type MeshEnv } from './mesh-env';

const NODE = 'sim-node';

/** A running Pod; with the injector's status annotation it also runs Istio's sidecar container. */
function podObject(p: SimPod, annotations: Record<string, string> = {}) {
  const sidecar =
    annotations['sidecar.istio.io/status'] !== undefined
      ? [{ name: 'istio-proxy', image: 'proxyv2', args: ['proxy', 'sidecar'] }]
      : [];
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: p.name, namespace: p.namespace, uid: p.uid, annotations },
    spec: { nodeName: NODE, containers: [{ name: 'app', image: 'app' }, ...sidecar] },
    status: { phase: 'Running', podIP: p.ipv4, podIPs: [{ ip: p.ipv4 }, ...(p.ipv6 ? [{ ip: p.ipv6 }] : [])] },
  };
}

describe.skipIf(process.getuid?.() !== 0)('repair of pods that predate the agent (needs root)', () => {
  let api: FakeApiServer;
  let env: MeshEnv;
  let legacy: SimPod; // sidecar annotation, its sidecar already listening before the agent starts
  let kubeconfig: string;

  function config(mode: string): void {
    writeConfig(env, { 'k8s-kubeconfig': kubeconfig, 'node-name': NODE, 'state-dir': env.stateDir, 'repair-mode': mode });
  }

  beforeAll(async () => {
    api = await FakeApiServer.start({});
    env = (await createLbEnv({ backends: 1 })) as MeshEnv;
    env.stateDir = path.join(env.node.workDir, 'state');
    kubeconfig = api.kubeconfig(path.join(env.node.workDir, 'kubeconfig'));
    api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'default' } });
    // created through bridge + host-local only: sluice was not there
    legacy = await env.node.addPod('legacy');
    await startSidecar(env, legacy);
    await startApp(env, legacy, 8080);
    api.apply(podObject(legacy, { 'sidecar.istio.io/status': '{}' }));
    env.node.spawn(['sleep', '300'], { netnsPath: env.client.netnsPath }); // a process of the pod, under cgroup-root
    api.apply(podObject(env.client)); // a plain pod: registered, mode none
    config('repair');
    await startAgent(env, { inTestNetns: true });
  });

  afterAll(async () => {
    await stopAgent(env);
    await env?.node.destroy();
    await api?.stop();
  });

  async function eps() {
    return JSON.parse((await sluice(env, ['endpoint', 'list', '-o', 'json'])).stdout) as Array<{
      name: string;
      mode: string;
      netnsPath: string;
    }>;
  }

  it('repair registers running pods and enrols them in place', async () => {
    const list = await eps();
    expect(list.find((e) => e.name === 'legacy')).toMatchObject({ mode: 'sidecar' });
    expect(list.find((e) => e.name === 'client')).toMatchObject({ mode: 'none' });
    expect(fs.statSync(list.find((e) => e.name === 'legacy')!.netnsPath).ino).toBe(fs.statSync(legacy.netnsPath).ino);
  });

  it('the sidecar that was already listening is captured without a restart', async () => {
    const inbound = sidecarReply((await probe(env, legacy.ipv4, 8080))[0].reply);
    expect(inbound).toMatchObject({ via: 'in', orig: `${legacy.ipv4}:8080` });
    const [be] = env.backends;
    const outbound = sidecarReply((await probe(env, be.ipv4, 8080, { from: legacy }))[0].reply);
    expect(outbound).toMatchObject({ via: 'out', orig: `${be.ipv4}:8080` });
    expect(env.node.output(env.agent!).stderr).toMatch(/"msg":"pods that predate the agent".*"listeners":[1-9]/);
  });

  it('a pod that starts outside the chain while the agent runs is repaired when its Pod appears', async () => {
    // the gap between the primary rewriting its conflist and sluice re-inserting itself
    const gap = await env.node.addPod('in-gap');
    env.node.spawn(['sleep', '300'], { netnsPath: gap.netnsPath });
    await startSidecar(env, gap);
    api.apply(podObject(gap, { 'sidecar.istio.io/status': '{}' }));
    await waitFor(
      'in-gap repaired without a restart',
      async () => (await eps()).find((e) => e.name === 'in-gap')?.mode === 'sidecar',
      10000,
    );
    const [be] = env.backends;
    expect(sidecarReply((await probe(env, be.ipv4, 8080, { from: gap }))[0].reply)).toMatchObject({ via: 'out' });
    expect(env.node.output(env.agent!).stderr).toMatch(/"msg":"pods running without sluice found","why":"pod change"/);
  });

  it('repair-mode label labels an unregistered pod', async () => {
    await stopAgent(env);
    const late = await env.node.addPod('late-label');
    api.apply(podObject(late));
    config('label');
    await startAgent(env, { inTestNetns: true });
    await waitFor(
      'labelled',
      () => (api.get('Pod', 'default', 'late-label') as any)?.metadata?.labels?.['cni.istio.io/uninitialized'] === 'true',
      5000,
    );
    expect((await eps()).some((e) => e.name === 'late-label')).toBe(false);
  });

  it('repair-mode off leaves an unregistered pod alone', async () => {
    await stopAgent(env);
    const late = await env.node.addPod('late-off');
    env.node.spawn(['sleep', '300'], { netnsPath: late.netnsPath });
    api.apply(podObject(late));
    const before = JSON.stringify(api.get('Pod', 'default', 'late-off'));
    config('off');
    await startAgent(env, { inTestNetns: true });
    expect((await eps()).some((e) => e.name === 'late-off')).toBe(false);
    expect(JSON.stringify(api.get('Pod', 'default', 'late-off'))).toBe(before);
    expect(api.requests.some((r) => r.name === 'late-off' && r.verb !== 'list' && r.verb !== 'watch')).toBe(false);
  });

  it('repair-mode delete deletes an unregistered pod so it is recreated through the chain', async () => {
    await stopAgent(env);
    const late = await env.node.addPod('late-delete');
    api.apply(podObject(late));
    config('delete');
    await startAgent(env, { inTestNetns: true });
    await waitFor('deleted', () => api.get('Pod', 'default', 'late-delete') === undefined, 5000);
    expect(api.requests.some((r) => r.verb === 'delete' && r.resource === 'pods' && r.name === 'late-delete')).toBe(true);
  });
});
