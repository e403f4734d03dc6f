/* API mode end to end: the agent follows a stand-in API server (list/watch, bookmarks, 410,
 * faults) through @kubernetes/client-node's configuration, on a simulated node with real programs.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { load as loadYaml } from 'js-yaml';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FakeApiServer } from '../harness/apiserver';
import { run, waitFor, type SimPod } from '../harness';
import { answeredBy, lbList, probe, sluice, startAgent, stopAgent, TCP_PORT, waitForBackends } from './lb-env';
import { endpoint, sidecarReply, startSidecar, waitForMode, type MeshEnv } from './mesh-env';

const NODE = 'sim-node';

function svc(name: string, ip: string, ns = 'default') {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: ns },
    spec: { clusterIP: ip, clusterIPs: [ip], ports: [{ name: 'http', port: 80, targetPort: TCP_PORT, protocol: 'TCP' }] },
  };
}

function slice(name: string, service: string, ips: string[], ns = 'default') {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: ns, labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
    ports: [{ name: 'http', port: TCP_PORT, protocol: 'TCP' }],
  };
}

/** A Pod; with the injector's status annotation it also runs Istio's sidecar container (`proxy sidecar`). */
function pod(
  name: string,
  o: { ns?: string; annotations?: Record<string, string>; labels?: Record<string, string>; node?: string } = {},
) {
  const containers: Array<{ name: string; image: string; args?: string[] }> = [{ name: 'app', image: 'app' }];
  if (o.annotations?.['sidecar.istio.io/status'] !== undefined)
    containers.push({ name: 'istio-proxy', image: 'proxyv2', args: ['proxy', 'sidecar'] });
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: o.ns ?? 'default', annotations: o.annotations ?? {}, labels: o.labels ?? {} },
    spec: { nodeName: o.node ?? NODE, containers },
  };
}

function node(name: string, zone: string) {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: { 'topology.kubernetes.io/zone': zone } },
    status: { conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

describe.skipIf(process.getuid?.() !== 0)('API mode (needs root)', () => {
  let api: FakeApiServer;
  let env: MeshEnv;
  let tokenFile: string;
  let a: SimPod;
  let b: SimPod;

  beforeAll(async () => {
    api = await FakeApiServer.start({ bookmarkIntervalMs: 200 });
    const { createLbEnv, writeConfig } = await import('./lb-env');
    env = (await createLbEnv({ backends: 2 })) as MeshEnv;
    [a, b] = env.backends;
    env.confDir = path.join(env.node.workDir, 'net.d');
    env.binDir = path.join(env.node.workDir, 'cni-bin');
    env.stateDir = path.join(env.node.workDir, 'state');
    fs.mkdirSync(env.confDir);
    fs.writeFileSync(
      path.join(env.confDir, '10-podnet.conflist'),
      JSON.stringify({ cniVersion: '1.0.0', name: 'podnet', plugins: [{ type: 'bridge' }] }),
    );
    tokenFile = path.join(env.node.workDir, 'token');
    const kubeconfig = api.kubeconfig(path.join(env.node.workDir, 'kubeconfig'), { tokenFile });
    api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'default' } });
    api.apply(node(NODE, 'zone-a'));
    api.apply(node('elsewhere', 'zone-a'));
    api.apply(svc('web', '10.96.0.10'));
    api.apply(slice('web-1', 'web', [a.ipv4, b.ipv4]));
    api.apply(pod('on-other-node', { node: 'elsewhere' }));
    writeConfig(env, {
      'k8s-kubeconfig': kubeconfig,
      'node-name': NODE,
      'cni-conf-dir': env.confDir,
      'cni-bin-dir': env.binDir,
      'state-dir': env.stateDir,
    });
    await startAgent(env, { inTestNetns: true });
  });

  // a failure shows what the agent was doing
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail' && env?.agent)
      console.error(`[agent log tail]\n${env.node.output(env.agent).stderr.split('\n').slice(-40).join('\n')}`);
  });

  afterAll(async () => {
    if (process.env.SLUICE_TEST_AGENT_LOG && env?.agent)
      fs.writeFileSync(process.env.SLUICE_TEST_AGENT_LOG, env.node.output(env.agent).stderr);
    await stopAgent(env);
    await env?.node.destroy();
    await api?.stop();
  });

  const agentLog = () =>
    env.node
      .output(env.agent!)
      .stderr.split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l));

  it("the initial sync programs the Services from the API server; only this node's Pods are watched", async () => {
    await waitForBackends(env, '10.96.0.10:80/TCP', [`${a.ipv4}:${TCP_PORT}`, `${b.ipv4}:${TCP_PORT}`]);
    const res = await probe(env, '10.96.0.10', 80, { count: 20 });
    expect(new Set(res.map(answeredBy))).toEqual(new Set([a.name, b.name]));
    const podReqs = api.requests.filter((r) => r.resource === 'pods' && (r.verb === 'list' || r.verb === 'watch'));
    expect(podReqs.length).toBeGreaterThan(0);
    for (const r of podReqs) expect(r.query.fieldSelector).toBe(`spec.nodeName=${NODE}`);
    const watches = api.requests.filter((r) => r.verb === 'watch');
    expect(watches.every((r) => r.query.allowWatchBookmarks === 'true' && r.query.resourceVersion)).toBe(true);
  });

  it('only this Node is read (get, then list and watch by metadata.name); its zone change re-routes a zone-hinted Service', async () => {
    const nodeReqs = api.requests.filter((r) => r.resource === 'nodes');
    expect(new Set(nodeReqs.map((r) => r.verb))).toEqual(new Set(['get', 'list', 'watch']));
    for (const r of nodeReqs) {
      expect(r.name, `${r.verb} ${r.path}`).toBe(NODE);
      if (r.verb !== 'get') expect(r.query.fieldSelector).toBe(`metadata.name=${NODE}`);
    }
    const { callAgent } = await import('../../src/agent/local-api');
    const known = async (key: string) =>
      (await callAgent(path.join(env.node.workDir, 'agent.sock'), { op: 'object', key })) as any;
    expect((await known(`Node/${NODE}`))?.metadata?.labels).toEqual({ 'topology.kubernetes.io/zone': 'zone-a' });
    expect(await known('Node/elsewhere')).toBeNull();

    api.apply(svc('zonal', '10.96.0.15'));
    const hinted = slice('zonal-1', 'zonal', [a.ipv4, b.ipv4]) as any;
    hinted.endpoints[0].hints = { forZones: [{ name: 'zone-a' }] };
    hinted.endpoints[1].hints = { forZones: [{ name: 'zone-b' }] };
    api.apply(hinted);
    await waitForBackends(env, '10.96.0.15:80/TCP', [`${a.ipv4}:${TCP_PORT}`]);
    api.apply(node('elsewhere', 'zone-b')); // another node's zone changes nothing...
    api.apply(node(NODE, 'zone-b')); // ...this one's does, through the watch
    await waitForBackends(env, '10.96.0.15:80/TCP', [`${b.ipv4}:${TCP_PORT}`]);
    const res = await probe(env, '10.96.0.15', 80, { count: 10 });
    expect(new Set(res.map(answeredBy))).toEqual(new Set([b.name]));
    expect(await known('Node/elsewhere')).toBeNull();
    api.remove('Service', 'default', 'zonal');
    await waitFor('zonal removed', async () => !(await lbList(env)).some((s) => s.frontend === '10.96.0.15:80/TCP'));
  });

  it('live updates of Services and EndpointSlices reach the maps', async () => {
    api.apply(slice('web-1', 'web', [a.ipv4]));
    await waitForBackends(env, '10.96.0.10:80/TCP', [`${a.ipv4}:${TCP_PORT}`]);
    api.apply(svc('api', '10.96.0.11'));
    api.apply(slice('api-1', 'api', [b.ipv4]));
    await waitForBackends(env, '10.96.0.11:80/TCP', [`${b.ipv4}:${TCP_PORT}`]);
    api.remove('Service', 'default', 'api');
    await waitFor('api removed', async () => !(await lbList(env)).some((s) => s.frontend === '10.96.0.11:80/TCP'));
    api.apply(slice('web-1', 'web', [a.ipv4, b.ipv4]));
    await waitForBackends(env, '10.96.0.10:80/TCP', [`${a.ipv4}:${TCP_PORT}`, `${b.ipv4}:${TCP_PORT}`]);
  });

  it('410 Gone relists and rewrites nothing that did not change, under a steady connection stream', async () => {
    const stream = probe(env, '10.96.0.10', 80, { count: 300, intervalMs: 5 });
    await new Promise((r) => setTimeout(r, 300));
    // the reflectors' own relist counters, not a log line: a relist that did not list fails below
    const relists = async (): Promise<Record<string, number>> => {
      const st = JSON.parse((await sluice(env, ['status', '-o', 'json'])).stdout);
      return Object.fromEntries(
        Object.entries(st.source.resources as Record<string, { relistsAfterGone: number; lists: number }>).map(([k, v]) => [
          k,
          v.relistsAfterGone,
        ]),
      );
    };
    const relistsBefore = await relists();
    const before = agentLog().length;
    api.compact();
    api.expireWatches();
    await waitFor(
      'every kind relisted',
      async () => {
        const now = await relists();
        return Object.keys(now).every((k) => now[k] > relistsBefore[k]);
      },
      5000,
    );
    const res = await stream;
    expect(res.filter((r) => !r.ok)).toEqual([]);
    const synced = agentLog()
      .slice(before)
      .filter((l) => l.msg === 'services synced');
    for (const s of synced) expect(s).toMatchObject({ updated: 0, removed: 0, added: 0 });
    // a change made while the watches are expired is seen only through the relist: it is applied
    const sliceRelists = (await relists()).EndpointSlice;
    api.expireWatches();
    api.apply(slice('web-1', 'web', [b.ipv4])); // before the agent can watch again
    await waitForBackends(env, '10.96.0.10:80/TCP', [`${b.ipv4}:${TCP_PORT}`]);
    expect((await relists()).EndpointSlice).toBeGreaterThan(sliceRelists);
    api.apply(slice('web-1', 'web', [a.ipv4]));
    await waitForBackends(env, '10.96.0.10:80/TCP', [`${a.ipv4}:${TCP_PORT}`]);
    api.apply(slice('web-1', 'web', [a.ipv4, b.ipv4]));
    await waitForBackends(env, '10.96.0.10:80/TCP', [`${a.ipv4}:${TCP_PORT}`, `${b.ipv4}:${TCP_PORT}`]);
  });

  it('API server down: the datapath keeps working, status says since when; it converges when back', async () => {
    const down = api.restart({ downMs: 6000 }); // killed, back on the same port 6 s later
    await waitFor(
      'unreachable reported',
      async () => {
        const st = JSON.parse((await sluice(env, ['status', '-o', 'json'], true)).stdout);
        return st.source?.unreachableSince ? st : undefined;
      },
      6000,
    );
    const res = await probe(env, '10.96.0.10', 80, { count: 10 });
    expect(res.every((r) => r.ok)).toBe(true);
    await down;
    api.apply(svc('late', '10.96.0.12'));
    api.apply(slice('late-1', 'late', [a.ipv4]));
    await waitForBackends(env, '10.96.0.12:80/TCP', [`${a.ipv4}:${TCP_PORT}`]);
    await waitFor(
      'reachable again in status',
      async () => JSON.parse((await sluice(env, ['status', '-o', 'json'])).stdout).source.reachable === true,
      5000,
    );
    expect(agentLog().some((l) => l.msg === 'API server reachable again')).toBe(true);
  }, 60000);

  it('500s and slow responses are retried until they pass', async () => {
    api.setFailure({ status: 500, forRequests: 3, match: (r) => r.verb === 'watch' }); // three in a row: backoff 0.2, 0.4, 0.8 s (±50 %)
    api.expireWatches();
    api.apply(slice('late-1', 'late', [b.ipv4]));
    await waitForBackends(env, '10.96.0.12:80/TCP', [`${b.ipv4}:${TCP_PORT}`]);
    api.setFailure({ delayMs: 800, forRequests: 4 });
    api.apply(slice('late-1', 'late', [a.ipv4, b.ipv4]));
    await waitForBackends(env, '10.96.0.12:80/TCP', [`${a.ipv4}:${TCP_PORT}`, `${b.ipv4}:${TCP_PORT}`]);
    api.setFailure(null);
  }, 60000);

  it('a rotated service-account token is re-read', async () => {
    api.rotateToken('rotated-token-2');
    fs.writeFileSync(tokenFile, 'rotated-token-2');
    api.expireWatches();
    api.apply(slice('late-1', 'late', [a.ipv4]));
    await waitForBackends(env, '10.96.0.12:80/TCP', [`${a.ipv4}:${TCP_PORT}`]);
  }, 30000);

  it('a malformed object is logged with its name and skipped', async () => {
    api.apply({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'broken', namespace: 'default' },
      spec: { clusterIP: '10.96.0.13', ports: [{ port: 99999 }] },
    });
    api.apply(svc('after-broken', '10.96.0.14'));
    await waitFor('after-broken programmed', async () => (await lbList(env)).some((s) => s.frontend === '10.96.0.14:80/TCP'));
    expect(agentLog().some((l) => l.msg === 'Skipping malformed object from the API server' && l.name === 'broken')).toBe(true);
  });

  it('CNI ADD before the watch event: the agent GETs the Pod and captures it before ADD returns', async () => {
    const { addPodThroughChain } = await import('./api-mode-helpers');
    // the pod reflector's relist and next watch answer 3 s late: the Pod reaches the agent only
    // through the GET its ADD makes
    api.setFailure({
      delayMs: 3000,
      forRequests: 2,
      match: (r) => (r.verb === 'watch' || r.verb === 'list') && r.resource === 'pods',
    });
    api.compact();
    api.expireWatches();
    api.apply(pod('early', { annotations: { 'sidecar.istio.io/status': '{}' } }));
    const p = await addPodThroughChain(env, 'early');
    const ep = await endpoint(env, p);
    expect(ep?.mode).toBe('sidecar');
    expect(api.requests.some((r) => r.verb === 'get' && r.resource === 'pods' && r.name === 'early')).toBe(true);
    api.setFailure(null);
    await startSidecar(env, p);
    const r = sidecarReply((await probe(env, '10.96.0.10', 80, { from: p }))[0].reply);
    expect(r?.orig).toBe('10.96.0.10:80');
    // a live Pod update through the watch: the annotation goes, the pod is released (the pod
    // reflector's delayed relist and watch may still take up to 2 × 3 s to come back)
    api.apply(pod('early'));
    await waitForMode(env, p, 'none', 10000);
  }, 30000);

  it('an ambient pod is annotated pending, then enabled once ztunnel acked it over ZDS; Events; release removes the annotation', async () => {
    const { addPodThroughChain } = await import('./api-mode-helpers');
    api.apply({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'mesh', labels: { 'istio.io/dataplane-mode': 'ambient' } },
    });
    api.apply(pod('amb', { ns: 'mesh' }));
    const { callAgent } = await import('../../src/agent/local-api');
    const known = async (key: string) =>
      (await callAgent(path.join(env.node.workDir, 'agent.sock'), { op: 'object', key })) as any;
    await waitFor(
      'pod and namespace known',
      async () =>
        (await known('Pod/mesh/amb')) !== null &&
        (await known('Namespace/mesh'))?.metadata?.labels?.['istio.io/dataplane-mode'] === 'ambient',
      10000,
    );
    const p = await addPodThroughChain(env, 'amb', 'mesh');
    await waitForMode(env, p, 'ambient', 10000);
    const redirection = () => (api.get('Pod', 'mesh', 'amb') as any)?.metadata?.annotations?.['ambient.istio.io/redirection'];
    // captured in the kernel, but no ztunnel has taken it yet (istio-cni's partial enrolment)
    await waitFor('annotation pending', () => redirection() === 'pending', 5000);
    const { startZtunnel } = await import('./ztunnel-env');
    const zt = startZtunnel(env, 'zt-api');
    try {
      await zt.waitEvent((e) => e.event === 'add' && e.uid === p.uid);
      await waitFor('annotation enabled after the ack', () => redirection() === 'enabled', 5000);
    } finally {
      zt.child.kill('SIGTERM');
    }
    await waitFor('event', () => api.events.some((e: any) => e.involvedObject?.name === 'amb' && e.reason === 'Enrolled'), 5000);
    api.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'mesh', labels: {} } });
    await waitForMode(env, p, 'none', 10000);
    await waitFor(
      'annotation removed',
      () => (api.get('Pod', 'mesh', 'amb') as any)?.metadata?.annotations?.['ambient.istio.io/redirection'] === undefined,
      5000,
    );
    await waitFor(
      'release event',
      () => api.events.some((e: any) => e.involvedObject?.name === 'amb' && e.reason === 'Released'),
      5000,
    );
  }, 30000);

  it("every request the agent made is allowed by deploy/'s ClusterRole, which grants nothing unused", async () => {
    const rendered = (await run(['kubectl', 'kustomize', path.join(__dirname, '../../deploy')], { allowFail: true })).stdout;
    const docs = rendered ? (rendered.split(/^---$/m).map((d) => loadYaml(d)) as any[]) : [];
    const role =
      docs.find((d) => d?.kind === 'ClusterRole') ??
      (loadYaml(fs.readFileSync(path.join(__dirname, '../../deploy/base/clusterrole.yaml'), 'utf8')) as any);
    const granted = new Set<string>();
    for (const rule of role.rules)
      for (const g of rule.apiGroups) for (const r of rule.resources) for (const v of rule.verbs) granted.add(`${g}/${r}/${v}`);
    const groupOf = (res: string, group: string) =>
      res === 'endpointslices' ? 'discovery.k8s.io' : group === 'events.k8s.io' ? group : '';
    const used = new Set(
      api.requests
        .filter((r) => r.userAgent?.includes('node') || !r.userAgent?.includes('kubectl'))
        .filter((r) => r.resource)
        .map((r) => `${groupOf(r.resource, r.apiGroup)}/${r.resource}/${r.verb}`),
    );
    for (const u of used) expect(granted.has(u), `agent used ${u}`).toBe(true);
    // and the role grants nothing the agent never used (delete is only in the repair-delete overlay)
    expect(
      [...granted].filter((g) => !used.has(g)),
      JSON.stringify([...used]),
    ).toEqual([]);
  });
});
