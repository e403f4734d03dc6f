/*
 * The fake Kubernetes API server (test/harness/apiserver.ts): checked against the real kubectl
 * (which proves it is faithful enough for kubectl's discovery, get, get -w and patch), against
 * @kubernetes/client-node, and with raw HTTPS for the protocol details the agent's reflector relies on.
 * Everything listens on 127.0.0.1 only.
 */

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { CoreV1Api, KubeConfig, PatchStrategy, Watch, setHeaderOptions } from '@kubernetes/client-node';
import { FakeApiServer, type Obj } from '../harness/apiserver';
import { run, sleep, waitFor } from '../harness/exec';

/* ------------------------------------------------------------------------------------------ */
/* helpers                                                                                    */
/* ------------------------------------------------------------------------------------------ */

function pod(name: string, namespace = 'default', nodeName = 'node-a', labels: Record<string, string> = {}): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels },
    spec: { nodeName, containers: [{ name: 'app', image: 'busybox' }] },
    status: { phase: 'Running', podIP: '10.244.0.10' },
  };
}

interface Resp {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: any;
}

interface CallOpts {
  token?: string;
  body?: unknown;
  contentType?: string;
  accept?: string;
}

/** One request with the server's CA and token (or opts.token), a fresh connection each time. */
function call(s: FakeApiServer, method: string, p: string, opts: CallOpts = {}): Promise<Resp> {
  const u = new URL(p, s.url);
  const mod = u.protocol === 'https:' ? https : http;
  const body = opts.body === undefined ? undefined : typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
  return new Promise((resolve, reject) => {
    const req = mod.request(
      u,
      {
        method,
        ca: s.caPem || undefined,
        agent: false,
        headers: {
          Accept: opts.accept ?? 'application/json',
          ...(opts.token === '' ? {} : { Authorization: `Bearer ${opts.token ?? s.token}` }),
          // Content-Length: Node's client sends a DELETE body unframed otherwise
          ...(body !== undefined
            ? { 'Content-Type': opts.contentType ?? 'application/json', 'Content-Length': String(Buffer.byteLength(body)) }
            : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: any;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
      },
    );
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** A raw watch stream: collects the newline-delimited events. */
class Stream {
  readonly events: Array<{ type: string; object: any }> = [];
  status = 0;
  ended = false;
  /** 'end' (clean close) or the error that cut it. */
  how = '';
  private req!: http.ClientRequest;

  static open(s: FakeApiServer, p: string, token?: string): Promise<Stream> {
    const st = new Stream();
    const u = new URL(p, s.url);
    const mod = u.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      st.req = mod.request(
        u,
        { method: 'GET', ca: s.caPem || undefined, agent: false, headers: { Authorization: `Bearer ${token ?? s.token}` } },
        (res) => {
          st.status = res.statusCode ?? 0;
          let buf = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => {
            buf += c;
            let nl: number;
            while ((nl = buf.indexOf('\n')) >= 0) {
              const line = buf.slice(0, nl);
              buf = buf.slice(nl + 1);
              if (line.trim()) st.events.push(JSON.parse(line));
            }
          });
          res.on('end', () => {
            st.ended = true;
            st.how = st.how || 'end';
          });
          res.on('error', (e) => {
            st.ended = true;
            st.how = st.how || String(e.message);
          });
          res.on('aborted', () => {
            st.ended = true;
            st.how = st.how || 'aborted';
          });
          resolve(st);
        },
      );
      st.req.on('error', (e) => {
        st.ended = true;
        st.how = st.how || e.message;
        reject(e);
      });
      st.req.end();
    });
  }

  /** Waits until `count` events (not bookmarks unless withBookmarks) have arrived; returns them. */
  async take(
    count: number,
    opts: { withBookmarks?: boolean; timeoutMs?: number } = {},
  ): Promise<Array<{ type: string; object: any }>> {
    const pick = (): Array<{ type: string; object: any }> =>
      this.events.filter((e) => opts.withBookmarks || e.type !== 'BOOKMARK');
    await waitFor(
      `${count} watch events (have ${JSON.stringify(pick().map((e) => e.type))})`,
      () => pick().length >= count,
      opts.timeoutMs ?? 5000,
      10,
    );
    return pick().slice(0, count);
  }

  async untilEnded(timeoutMs = 5000): Promise<void> {
    await waitFor('the watch to end', () => this.ended, timeoutMs, 10);
  }

  close(): void {
    this.req.destroy();
  }
}

const names = (evs: Array<{ type: string; object: any }>): string[] =>
  evs.map((e) => `${e.type} ${e.object?.metadata?.name ?? ''}`.trim());

let servers: FakeApiServer[] = [];
const streams: Stream[] = [];

async function server(opts: Parameters<typeof FakeApiServer.start>[0] = {}): Promise<FakeApiServer> {
  const s = await FakeApiServer.start(opts);
  servers.push(s);
  return s;
}

afterEach(async () => {
  for (const st of streams.splice(0)) st.close();
  await Promise.all(servers.map((s) => s.stop()));
  servers = [];
});

/* ------------------------------------------------------------------------------------------ */
/* kubectl                                                                                    */
/* ------------------------------------------------------------------------------------------ */

const hasKubectl = spawnSync('kubectl', ['version', '--client'], { stdio: 'ignore' }).status === 0;

describe.skipIf(!hasKubectl)('FakeApiServer with the real kubectl', () => {
  let cacheDir: string;
  const children: ChildProcess[] = [];

  beforeAll(() => {
    cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-kubectl-cache-'));
  });
  afterEach(() => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });
  afterAll(() => {
    fs.rmSync(cacheDir, { recursive: true, force: true });
  });

  /** kubectl against s; a fresh discovery cache per server (the cache is keyed by host:port). */
  async function kubectl(
    s: FakeApiServer,
    args: string[],
    allowFail = false,
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    return run(['kubectl', '--kubeconfig', s.kubeconfig(), '--cache-dir', cacheDir, '--request-timeout', '10s', ...args], {
      allowFail,
      timeoutMs: 30000,
    });
  }

  test('get pods -A -o json lists the applied pods (discovery through /api, /apis and the group versions)', async () => {
    const s = await server();
    s.apply(pod('web-1', 'shop', 'node-a', { app: 'web' }));
    s.apply(pod('db-1', 'data', 'node-b'));
    const r = await kubectl(s, ['get', 'pods', '-A', '-o', 'json']);
    const list = JSON.parse(r.stdout);
    expect(list.kind).toBe('List');
    expect(list.items.map((p: Obj) => `${p.metadata.namespace}/${p.metadata.name}`).sort()).toEqual(['data/db-1', 'shop/web-1']);
    // kubectl fills in kind/apiVersion of the items the server sends without them
    expect(list.items[0]).toMatchObject({ apiVersion: 'v1', kind: 'Pod' });
    const paths = s.requests.map((q) => q.path);
    expect(paths).toEqual(
      expect.arrayContaining([
        '/version',
        '/api',
        '/apis',
        '/api/v1',
        '/apis/discovery.k8s.io/v1',
        '/apis/events.k8s.io/v1',
        '/api/v1/pods',
      ]),
    );
    const lists = s.requests.filter((q) => q.path === '/api/v1/pods');
    expect(lists[0]).toMatchObject({ verb: 'list', resource: 'pods', status: 200 });
    expect(lists[0].userAgent).toMatch(/^kubectl\//);
  });

  test('get pods -A -w -o json receives a pod applied after the watch started', async () => {
    const s = await server();
    s.apply(pod('before', 'ns1'));
    const child = spawn(
      'kubectl',
      ['--kubeconfig', s.kubeconfig(), '--cache-dir', cacheDir, 'get', 'pods', '-A', '-w', '-o', 'json'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.push(child);
    let out = '';
    let err = '';
    child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
    const w = await s.waitForWatch((x) => x.resource === 'pods' && /^kubectl\//.test(x.userAgent), 20000);
    // it lists, then watches from the resourceVersion of its list (101: one pod applied)
    expect(s.requests.find((q) => q.path === '/api/v1/pods' && q.verb === 'list')).toMatchObject({
      status: 200,
      query: { limit: '500' },
    });
    expect(w.query.resourceVersion).toBe('101');
    s.apply(pod('after', 'ns1'));
    await waitFor(
      `kubectl -w to print the new pod (stdout: ${out}, stderr: ${err})`,
      () => out.includes('"name": "after"'),
      10000,
    );
    expect(out).toContain('"name": "before"');
    child.kill('SIGTERM');
    const watchReq = s.requests.find((q) => q.verb === 'watch' && q.resource === 'pods')!;
    expect(watchReq).toMatchObject({ path: '/api/v1/pods', status: 200 });
    expect(watchReq.query.watch).toBe('true');
  });

  test('patch pod --type merge changes the object; the same patch again is "no change" and keeps the resourceVersion', async () => {
    const s = await server();
    s.apply(pod('p', 'ns'));
    const rv0 = s.get('Pod', 'ns', 'p')!.metadata.resourceVersion;
    const r = await kubectl(s, [
      'patch',
      'pod',
      '-n',
      'ns',
      'p',
      '--type',
      'merge',
      '-p',
      '{"metadata":{"annotations":{"a":"b"}}}',
    ]);
    expect(r.stdout.trim()).toBe('pod/p patched');
    const after = s.get('Pod', 'ns', 'p')!;
    expect(after.metadata.annotations).toEqual({ a: 'b' });
    expect(Number(after.metadata.resourceVersion)).toBeGreaterThan(Number(rv0));
    const again = await kubectl(s, [
      'patch',
      'pod',
      '-n',
      'ns',
      'p',
      '--type',
      'merge',
      '-p',
      '{"metadata":{"annotations":{"a":"b"}}}',
    ]);
    expect(again.stdout.trim()).toBe('pod/p patched (no change)');
    expect(s.get('Pod', 'ns', 'p')!.metadata.resourceVersion).toBe(after.metadata.resourceVersion);
    // strategic (kubectl's default) and JSON patch, with a ~1-escaped key
    await kubectl(s, ['patch', 'pod', '-n', 'ns', 'p', '-p', '{"metadata":{"labels":{"x":"y"}}}']);
    await kubectl(s, [
      'patch',
      'pod',
      '-n',
      'ns',
      'p',
      '--type',
      'json',
      '-p',
      '[{"op":"add","path":"/metadata/annotations/ambient.istio.io~1redirection","value":"enabled"}]',
    ]);
    const last = s.get('Pod', 'ns', 'p')!;
    expect(last.metadata.labels).toEqual({ x: 'y' });
    expect(last.metadata.annotations).toEqual({ a: 'b', 'ambient.istio.io/redirection': 'enabled' });
    const patches = s.requests.filter((q) => q.method === 'PATCH');
    expect(patches.map((q) => [q.verb, q.resource, q.namespace, q.name])).toEqual(Array(4).fill(['patch', 'pods', 'ns', 'p']));
    // a missing pod: kubectl prints the server's NotFound Status (after checking the namespace exists;
    // without a Namespace object it reports 'namespaces "ns" not found' instead)
    const noNs = await kubectl(s, ['patch', 'pod', '-n', 'ns', 'nope', '--type', 'merge', '-p', '{}'], true);
    expect(noNs.stderr).toContain('namespaces "ns" not found');
    s.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'ns' } });
    const missing = await kubectl(s, ['patch', 'pod', '-n', 'ns', 'nope', '--type', 'merge', '-p', '{}'], true);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain('pods "nope" not found');
  });

  test('get ns, get svc -A, get endpointslices -A, get events -A print the server-side tables', async () => {
    const s = await server();
    s.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' }, status: { phase: 'Active' } });
    s.apply({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'web', namespace: 'shop' },
      spec: { clusterIP: '10.96.0.10', ports: [{ port: 80, protocol: 'TCP' }] },
    });
    s.apply({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'web-abcde', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      endpoints: [{ addresses: ['10.244.0.10'] }],
      ports: [{ port: 8080 }],
    });
    s.apply({
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name: 'web-1.abc', namespace: 'shop' },
      involvedObject: { kind: 'Pod', name: 'web-1', namespace: 'shop' },
      reason: 'Redirected',
      message: 'traffic captured',
      type: 'Normal',
    });
    // an events.k8s.io/v1 Event is the same storage: kubectl get events (core) shows it too
    s.apply({
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      metadata: { name: 'web-2.def', namespace: 'shop' },
      regarding: { kind: 'Pod', name: 'web-2', namespace: 'shop' },
      reason: 'Enrolled',
      note: 'ambient',
      type: 'Normal',
      reportingController: 'sluice',
      reportingInstance: 'node-a',
      action: 'Enroll',
      eventTime: new Date().toISOString(),
    });
    const ns = await kubectl(s, ['get', 'ns']);
    expect(ns.stdout).toMatch(/^NAME\s+STATUS\s+AGE\nshop\s+Active\s+\d+s\n$/);
    const svc = await kubectl(s, ['get', 'svc', '-A']);
    expect(svc.stdout).toMatch(
      /NAMESPACE\s+NAME\s+TYPE\s+CLUSTER-IP\s+EXTERNAL-IP\s+PORT\(S\)\s+AGE\nshop\s+web\s+ClusterIP\s+10\.96\.0\.10\s+<none>\s+80\/TCP\s+\d+s/,
    );
    const eps = await kubectl(s, ['get', 'endpointslices', '-A']);
    expect(eps.stdout).toMatch(
      /NAMESPACE\s+NAME\s+ADDRESSTYPE\s+PORTS\s+ENDPOINTS\s+AGE\nshop\s+web-abcde\s+IPv4\s+8080\s+10\.244\.0\.10\s+\d+s/,
    );
    const ev = await kubectl(s, ['get', 'events', '-A']);
    expect(ev.stdout).toMatch(/NAMESPACE\s+LAST SEEN\s+TYPE\s+REASON\s+OBJECT\s+MESSAGE/);
    expect(ev.stdout).toMatch(/shop\s+\S+\s+Normal\s+Redirected\s+pod\/web-1\s+traffic captured/);
    expect(ev.stdout).toMatch(/shop\s+\S+\s+Normal\s+Enrolled\s+pod\/web-2\s+ambient/);
    const evJson = JSON.parse((await kubectl(s, ['get', 'events.events.k8s.io', '-n', 'shop', '-o', 'json'])).stdout);
    expect(evJson.items.map((e: Obj) => [e.metadata.name, e.note, e.regarding?.name])).toEqual([
      ['web-1.abc', 'traffic captured', 'web-1'],
      ['web-2.def', 'ambient', 'web-2'],
    ]);
    // short names resolve through discovery
    expect((await kubectl(s, ['get', 'po,svc,ns', '-A', '-o', 'name'])).stdout.split('\n').filter((l) => l)).toEqual([
      'service/web',
      'namespace/shop',
    ]);
    expect(s.requests.filter((q) => q.resource === 'events').map((q) => q.apiGroup)).toEqual(['', 'events.k8s.io']);
  });

  test('kubectl reads a token file, and a rotated token makes it fail with Unauthorized', async () => {
    const s = await server();
    s.apply(pod('p', 'ns'));
    const tokenFile = path.join(cacheDir, 'token');
    const kc = s.kubeconfig(path.join(cacheDir, 'kc-tokenfile'), { tokenFile });
    const args = ['--kubeconfig', kc, '--cache-dir', cacheDir, 'get', 'pods', '-n', 'ns', '-o', 'name'];
    expect((await run(['kubectl', ...args])).stdout.trim()).toBe('pod/p');
    s.rotateToken('rotated-token');
    const denied = await run(['kubectl', ...args], { allowFail: true });
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toMatch(/Unauthorized|must be logged in/);
    fs.writeFileSync(tokenFile, 'rotated-token');
    expect((await run(['kubectl', ...args])).stdout.trim()).toBe('pod/p');
  });
});

/* ------------------------------------------------------------------------------------------ */
/* protocol                                                                                   */
/* ------------------------------------------------------------------------------------------ */

describe('FakeApiServer protocol (raw HTTPS)', () => {
  test('discovery documents name the resources with kinds, scopes, verbs and short names', async () => {
    const s = await server();
    const core = (await call(s, 'GET', '/api/v1')).json;
    expect(core).toMatchObject({ kind: 'APIResourceList', groupVersion: 'v1' });
    const byName = Object.fromEntries(core.resources.map((r: Obj) => [r.name, r]));
    expect(byName.pods).toMatchObject({ kind: 'Pod', namespaced: true, shortNames: ['po'], singularName: 'pod' });
    expect(byName.pods.verbs).toEqual(expect.arrayContaining(['get', 'list', 'watch', 'patch', 'delete', 'create']));
    expect(byName.services).toMatchObject({ kind: 'Service', namespaced: true, shortNames: ['svc'] });
    expect(byName.namespaces).toMatchObject({ kind: 'Namespace', namespaced: false, shortNames: ['ns'] });
    expect(byName.events).toMatchObject({ kind: 'Event', namespaced: true, shortNames: ['ev'] });
    expect(byName['pods/status']).toMatchObject({ kind: 'Pod', verbs: ['get', 'patch', 'update'] });
    expect((await call(s, 'GET', '/api')).json).toMatchObject({ kind: 'APIVersions', versions: ['v1'] });
    const groups = (await call(s, 'GET', '/apis')).json;
    expect(groups.kind).toBe('APIGroupList');
    expect(groups.groups.map((g: Obj) => g.preferredVersion.groupVersion)).toEqual(['discovery.k8s.io/v1', 'events.k8s.io/v1']);
    expect((await call(s, 'GET', '/apis/discovery.k8s.io/v1')).json.resources[0]).toMatchObject({
      name: 'endpointslices',
      kind: 'EndpointSlice',
      namespaced: true,
    });
    expect((await call(s, 'GET', '/apis/events.k8s.io/v1')).json.resources[0]).toMatchObject({
      name: 'events',
      kind: 'Event',
      shortNames: ['ev'],
    });
    expect((await call(s, 'GET', '/version')).json).toMatchObject({ major: '1', minor: '32', gitVersion: 'v1.32.0' });
    expect((await call(s, 'GET', '/openapi/v2')).status).toBe(404);
    const unknown = await call(s, 'GET', '/api/v1/configmaps');
    expect(unknown.status).toBe(404);
    expect(unknown.json).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'NotFound', code: 404 });
  });

  test('list: items without kind/apiVersion, the current resourceVersion (global, shared across kinds); get: the object, or a NotFound Status', async () => {
    const s = await server();
    const a = s.apply(pod('a', 'ns1'));
    const svc = s.apply({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'svc', namespace: 'ns1' }, spec: {} });
    const b = s.apply(pod('b', 'ns2'));
    expect([a, svc, b].map((o) => Number(o.metadata.resourceVersion))).toEqual([101, 102, 103]);
    expect(a.metadata.uid).toMatch(/^[0-9a-f-]{36}$/);
    const list = (await call(s, 'GET', '/api/v1/pods')).json;
    expect(list).toMatchObject({ kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: '103' } });
    expect(list.items.map((p: Obj) => p.metadata.name)).toEqual(['a', 'b']);
    expect(list.items[0].kind).toBeUndefined();
    expect(list.items[0].apiVersion).toBeUndefined();
    expect((await call(s, 'GET', '/api/v1/namespaces/ns2/pods')).json.items.map((p: Obj) => p.metadata.name)).toEqual(['b']);
    const one = await call(s, 'GET', '/api/v1/namespaces/ns1/pods/a');
    expect(one.json).toMatchObject({
      kind: 'Pod',
      apiVersion: 'v1',
      metadata: { name: 'a', namespace: 'ns1', resourceVersion: '101' },
    });
    const missing = await call(s, 'GET', '/api/v1/namespaces/ns1/pods/zzz');
    expect(missing.status).toBe(404);
    expect(missing.json).toEqual({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: 'pods "zzz" not found',
      reason: 'NotFound',
      details: { name: 'zzz', kind: 'pods' },
      code: 404,
    });
    // the test side of the state
    expect(s.list('pods').map((p) => p.metadata.name)).toEqual(['a', 'b']);
    expect(s.get('po', 'ns1', 'a')!.kind).toBe('Pod');
    expect(s.remove('Pod', 'ns1', 'a')).toBe(true);
    expect(s.get('Pod', 'ns1', 'a')).toBeUndefined();
    expect(s.resourceVersion).toBe('104');
  });

  test('watch from a list resourceVersion gets the later changes only, in order, with their resourceVersions', async () => {
    const s = await server();
    s.apply(pod('old', 'ns'));
    const rv = (await call(s, 'GET', '/api/v1/pods')).json.metadata.resourceVersion;
    const w = await Stream.open(s, `/api/v1/pods?watch=true&resourceVersion=${rv}`);
    streams.push(w);
    expect(w.status).toBe(200);
    s.apply(pod('new', 'ns'));
    s.apply({ ...pod('old', 'ns'), metadata: { name: 'old', namespace: 'ns', labels: { v: '2' } } });
    s.remove('Pod', 'ns', 'new');
    s.apply({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'other-kind', namespace: 'ns' }, spec: {} });
    const evs = await w.take(3);
    expect(names(evs)).toEqual(['ADDED new', 'MODIFIED old', 'DELETED new']);
    expect(evs.map((e) => Number(e.object.metadata.resourceVersion))).toEqual([Number(rv) + 1, Number(rv) + 2, Number(rv) + 3]);
    expect(evs[0].object).toMatchObject({ kind: 'Pod', apiVersion: 'v1' });
    await sleep(100);
    expect(w.events).toHaveLength(3); // the Service went to nobody here
    // a second watch from the same rv replays the same history
    const again = await Stream.open(s, `/api/v1/pods?watch=1&resourceVersion=${rv}`);
    streams.push(again);
    expect(names(await again.take(3))).toEqual(['ADDED new', 'MODIFIED old', 'DELETED new']);
    // without a resourceVersion (or "0"): ADDED for every current object first
    const fresh = await Stream.open(s, '/api/v1/namespaces/ns/pods?watch=true');
    streams.push(fresh);
    expect(names(await fresh.take(1))).toEqual(['ADDED old']);
    const zero = await Stream.open(s, '/api/v1/pods?watch=true&resourceVersion=0');
    streams.push(zero);
    expect(names(await zero.take(1))).toEqual(['ADDED old']);
    expect(s.watches.map((x) => x.resource)).toEqual(['pods', 'pods', 'pods', 'pods']);
    expect(s.requests.filter((q) => q.query.watch).every((q) => q.verb === 'watch' && q.resource === 'pods')).toBe(true);
  });

  test('bookmarks arrive with allowWatchBookmarks, carrying the current resourceVersion; sendInitialEvents ends the initial events with one', async () => {
    const s = await server({ bookmarkIntervalMs: 100 });
    s.apply(pod('a', 'ns'));
    const w = await Stream.open(s, `/api/v1/pods?watch=true&allowWatchBookmarks=true&resourceVersion=${s.resourceVersion}`);
    streams.push(w);
    const [bm] = await w.take(1, { withBookmarks: true });
    expect(bm).toEqual({ type: 'BOOKMARK', object: { kind: 'Pod', apiVersion: 'v1', metadata: { resourceVersion: '101' } } });
    s.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'unrelated' } });
    await waitFor(
      'a bookmark at rv 102',
      () => w.events.some((e) => e.type === 'BOOKMARK' && e.object.metadata.resourceVersion === '102'),
      3000,
      10,
    );
    const plain = await Stream.open(s, `/api/v1/pods?watch=true&resourceVersion=${s.resourceVersion}`);
    streams.push(plain);
    await sleep(350);
    expect(plain.events).toEqual([]);
    const list = await Stream.open(
      s,
      '/api/v1/pods?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan',
    );
    streams.push(list);
    const [added, end] = await list.take(2, { withBookmarks: true });
    expect(names([added])).toEqual(['ADDED a']);
    expect(end).toMatchObject({
      type: 'BOOKMARK',
      object: { metadata: { resourceVersion: '102', annotations: { 'k8s.io/initial-events-end': 'true' } } },
    });
  });

  test('expireWatches(): open watches get ERROR 410 Expired and are closed; a watch from an older resourceVersion then gets 410; list still works', async () => {
    const s = await server();
    s.apply(pod('a', 'ns'));
    const rv = s.resourceVersion;
    const w = await Stream.open(s, `/api/v1/pods?watch=true&resourceVersion=${rv}`);
    streams.push(w);
    s.apply(pod('b', 'ns'));
    await w.take(1);
    s.expireWatches();
    await w.untilEnded();
    expect(w.how).toBe('end');
    const err = w.events[w.events.length - 1];
    expect(err).toEqual({
      type: 'ERROR',
      object: {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: 'too old resource version: 102 (102)',
        reason: 'Expired',
        code: 410,
      },
    });
    expect(s.watches).toEqual([]);
    const late = await Stream.open(s, `/api/v1/pods?watch=true&resourceVersion=${rv}`);
    streams.push(late);
    expect(late.status).toBe(200); // like the real server: 200, then the ERROR event, then the end
    await late.untilEnded();
    expect(late.events).toEqual([
      {
        type: 'ERROR',
        object: expect.objectContaining({ code: 410, reason: 'Expired', message: `too old resource version: ${rv} (102)` }),
      },
    ]);
    const list = await call(s, 'GET', '/api/v1/pods');
    expect(list.status).toBe(200);
    expect(list.json.items).toHaveLength(2);
    // from the list's (current) resourceVersion it works again
    const ok = await Stream.open(s, `/api/v1/pods?watch=true&resourceVersion=${list.json.metadata.resourceVersion}`);
    streams.push(ok);
    s.apply(pod('c', 'ns'));
    expect(names(await ok.take(1))).toEqual(['ADDED c']);
    // compact() alone: open watches stay, older resourceVersions are too old
    const before = s.resourceVersion;
    s.apply(pod('d', 'ns'));
    s.compact();
    const tooOld = await Stream.open(s, `/api/v1/pods?watch=true&resourceVersion=${before}`);
    streams.push(tooOld);
    await tooOld.untilEnded();
    expect(tooOld.events.map((e) => e.object.code)).toEqual([410]);
    expect(names(await ok.take(2))).toEqual(['ADDED c', 'ADDED d']);
    expect(ok.ended).toBe(false);
    // an exact list from a compacted resourceVersion is 410 too
    const exact = await call(s, 'GET', `/api/v1/pods?resourceVersion=${before}&resourceVersionMatch=Exact`);
    expect(exact.status).toBe(410);
    expect(exact.json).toMatchObject({ kind: 'Status', reason: 'Expired', code: 410 });
  });

  test('the watch history is bounded (historyLimit): older resourceVersions are too old', async () => {
    const s = await server({ historyLimit: 5 });
    const start = s.resourceVersion;
    for (let i = 0; i < 10; i++) s.apply(pod(`p${i}`, 'ns'));
    const old = await Stream.open(s, `/api/v1/pods?watch=true&resourceVersion=${start}`);
    streams.push(old);
    await old.untilEnded();
    expect(old.events[0].object).toMatchObject({ code: 410, message: `too old resource version: ${start} (105)` });
    const recent = await Stream.open(s, '/api/v1/pods?watch=true&resourceVersion=107');
    streams.push(recent);
    expect(names(await recent.take(3))).toEqual(['ADDED p7', 'ADDED p8', 'ADDED p9']);
  });

  test('fieldSelector spec.nodeName and labelSelector filter list and watch; leaving the selection is DELETED, entering it ADDED', async () => {
    const s = await server();
    s.apply(pod('a1', 'ns', 'node-a', { app: 'web', tier: 'front' }));
    s.apply(pod('a2', 'ns', 'node-a', { app: 'db' }));
    s.apply(pod('b1', 'other', 'node-b', { app: 'web' }));
    const q = (sel: string): Promise<string[]> =>
      call(s, 'GET', `/api/v1/pods?${sel}`).then((r) => {
        expect(r.status).toBe(200);
        return r.json.items.map((p: Obj) => p.metadata.name);
      });
    expect(await q('fieldSelector=spec.nodeName%3Dnode-a')).toEqual(['a1', 'a2']);
    expect(await q('fieldSelector=spec.nodeName%3D%3Dnode-b')).toEqual(['b1']);
    expect(await q('fieldSelector=spec.nodeName!%3Dnode-a')).toEqual(['b1']);
    expect(await q('fieldSelector=metadata.name%3Da2')).toEqual(['a2']);
    expect(await q('fieldSelector=metadata.namespace%3Dother')).toEqual(['b1']);
    expect(await q('fieldSelector=spec.nodeName%3Dnode-a,metadata.name%3Da1')).toEqual(['a1']);
    expect(await q('labelSelector=app%3Dweb')).toEqual(['a1', 'b1']);
    expect(await q('labelSelector=app%3Dweb,tier!%3Dfront')).toEqual(['b1']);
    expect(await q('labelSelector=tier')).toEqual(['a1']);
    expect(await q('labelSelector=!tier')).toEqual(['a2', 'b1']);
    expect(await q('labelSelector=' + encodeURIComponent('app in (db, web),tier notin (back)'))).toEqual(['a1', 'a2', 'b1']);
    const bad = await call(s, 'GET', '/api/v1/pods?fieldSelector=spec.bogus%3Dx');
    expect(bad.status).toBe(400);
    expect(bad.json).toMatchObject({ kind: 'Status', reason: 'BadRequest', message: 'field label not supported: spec.bogus' });
    // EndpointSlices by their Service's label
    s.apply({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'web-1', namespace: 'ns', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      endpoints: [],
    });
    s.apply({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'db-1', namespace: 'ns', labels: { 'kubernetes.io/service-name': 'db' } },
      addressType: 'IPv4',
      endpoints: [],
    });
    const slices = await call(
      s,
      'GET',
      '/apis/discovery.k8s.io/v1/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dweb',
    );
    expect(slices.json.items.map((e: Obj) => e.metadata.name)).toEqual(['web-1']);

    const rv = s.resourceVersion;
    const w = await Stream.open(s, `/api/v1/pods?watch=true&resourceVersion=${rv}&fieldSelector=spec.nodeName%3Dnode-a`);
    streams.push(w);
    const lw = await Stream.open(s, `/api/v1/pods?watch=true&resourceVersion=${rv}&labelSelector=app%3Dweb`);
    streams.push(lw);
    s.apply(pod('a3', 'ns', 'node-a'));
    s.apply(pod('b2', 'ns', 'node-b', { app: 'web' }));
    s.apply(pod('a2', 'ns', 'node-a', { app: 'web' })); // a2 starts matching app=web
    s.apply(pod('a1', 'ns', 'node-a', { app: 'gone' })); // a1 stops matching app=web
    s.remove('Pod', 'other', 'b1');
    expect(names(await w.take(3))).toEqual(['ADDED a3', 'MODIFIED a2', 'MODIFIED a1']);
    expect(names(await lw.take(4))).toEqual(['ADDED b2', 'ADDED a2', 'DELETED a1', 'DELETED b1']);
    const gone = lw.events[2].object;
    expect(gone.metadata.labels).toEqual({ app: 'web', tier: 'front' }); // the last state that matched...
    expect(gone.metadata.resourceVersion).toBe(String(Number(rv) + 4)); // ...at the change's resourceVersion
    await sleep(50);
    expect(w.events).toHaveLength(3);
  });

  test('Nodes by fieldSelector metadata.name: get, list and watch of one Node, recorded with its name for RBAC', async () => {
    const s = await server();
    const node = (name: string, zone: string): Obj => ({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name, labels: { 'topology.kubernetes.io/zone': zone } },
    });
    s.apply(node('node-a', 'zone-1'));
    s.apply(node('node-b', 'zone-1'));
    const one = await call(s, 'GET', '/api/v1/nodes?fieldSelector=metadata.name%3Dnode-a');
    expect(one.json.items.map((n: Obj) => n.metadata.name)).toEqual(['node-a']);
    const got = await call(s, 'GET', '/api/v1/nodes/node-a');
    expect(got.json.metadata.labels).toEqual({ 'topology.kubernetes.io/zone': 'zone-1' });
    expect((await call(s, 'GET', '/api/v1/nodes/node-z')).status).toBe(404);
    const w = await Stream.open(
      s,
      `/api/v1/nodes?watch=true&resourceVersion=${one.json.metadata.resourceVersion}&fieldSelector=metadata.name%3Dnode-a`,
    );
    streams.push(w);
    s.apply(node('node-b', 'zone-2'));
    s.apply(node('node-a', 'zone-2'));
    s.remove('Node', undefined, 'node-a');
    const events = await w.take(2);
    expect(events.map((e) => [e.type, e.object.metadata.name, e.object.metadata.labels['topology.kubernetes.io/zone']])).toEqual([
      ['MODIFIED', 'node-a', 'zone-2'],
      ['DELETED', 'node-a', 'zone-2'],
    ]);
    const reqs = s.requests.filter((r) => r.resource === 'nodes');
    expect(reqs.map((r) => [r.verb, r.name])).toEqual([
      ['list', 'node-a'],
      ['get', 'node-a'],
      ['get', 'node-z'],
      ['watch', 'node-a'],
    ]);
  });

  test('limit + continue page through a consistent snapshot; a compacted continue token is 410', async () => {
    const s = await server();
    for (const n of ['a', 'b', 'c', 'd', 'e']) s.apply(pod(n, 'ns'));
    const p1 = (await call(s, 'GET', '/api/v1/pods?limit=2')).json;
    expect(p1.items.map((p: Obj) => p.metadata.name)).toEqual(['a', 'b']);
    expect(p1.metadata).toMatchObject({ resourceVersion: '105', remainingItemCount: 3 });
    expect(typeof p1.metadata.continue).toBe('string');
    // changes after the first page don't show in the later ones (the list is from rv 105)
    s.remove('Pod', 'ns', 'c');
    s.apply(pod('bb', 'ns'));
    const p2 = (await call(s, 'GET', `/api/v1/pods?limit=2&continue=${encodeURIComponent(p1.metadata.continue)}`)).json;
    expect(p2.items.map((p: Obj) => p.metadata.name)).toEqual(['c', 'd']);
    expect(p2.metadata.resourceVersion).toBe('105');
    const p3 = (await call(s, 'GET', `/api/v1/pods?limit=2&continue=${encodeURIComponent(p2.metadata.continue)}`)).json;
    expect(p3.items.map((p: Obj) => p.metadata.name)).toEqual(['e']);
    expect(p3.metadata.continue).toBeUndefined();
    // selectors and pages together: no remainingItemCount
    const sel = (await call(s, 'GET', '/api/v1/pods?limit=1&fieldSelector=spec.nodeName%3Dnode-a')).json;
    expect(sel.items).toHaveLength(1);
    expect(sel.metadata.remainingItemCount).toBeUndefined();
    expect(sel.metadata.continue).toBeDefined();
    s.compact();
    const expired = await call(s, 'GET', `/api/v1/pods?limit=2&continue=${encodeURIComponent(p1.metadata.continue)}`);
    expect(expired.status).toBe(410);
    expect(expired.json).toMatchObject({ reason: 'Expired', code: 410 });
    expect((await call(s, 'GET', '/api/v1/pods?limit=2&continue=garbage')).status).toBe(400);
    // resourceVersion / resourceVersionMatch are accepted
    expect((await call(s, 'GET', '/api/v1/pods?resourceVersion=0')).status).toBe(200);
    expect(
      (await call(s, 'GET', `/api/v1/pods?resourceVersion=${s.resourceVersion}&resourceVersionMatch=NotOlderThan`)).status,
    ).toBe(200);
    expect((await call(s, 'GET', '/api/v1/pods?resourceVersion=999999&resourceVersionMatch=NotOlderThan')).json).toMatchObject({
      code: 504,
      reason: 'Timeout',
    });
  });

  test('timeoutSeconds ends the watch cleanly', async () => {
    const s = await server();
    const w = await Stream.open(s, `/api/v1/pods?watch=true&resourceVersion=${s.resourceVersion}&timeoutSeconds=1`);
    streams.push(w);
    const t0 = Date.now();
    await w.untilEnded(5000);
    expect(w.how).toBe('end');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(800);
    expect(w.events).toEqual([]);
  });

  test('patch: merge, strategic merge and JSON patch; null deletes; no-op keeps the resourceVersion; stale resourceVersion is 409', async () => {
    const s = await server();
    s.apply({ ...pod('p', 'ns'), metadata: { name: 'p', namespace: 'ns', labels: { keep: '1', drop: '1' } } });
    const w = await Stream.open(s, `/api/v1/pods?watch=true&resourceVersion=${s.resourceVersion}`);
    streams.push(w);
    const url = '/api/v1/namespaces/ns/pods/p';
    const merge = await call(s, 'PATCH', url, {
      contentType: 'application/merge-patch+json',
      body: { metadata: { labels: { drop: null, added: 'x' }, annotations: { a: 'b' } } },
    });
    expect(merge.status).toBe(200);
    expect(merge.json.metadata.labels).toEqual({ keep: '1', added: 'x' });
    expect(merge.json.metadata.resourceVersion).toBe('102');
    const smp = await call(s, 'PATCH', url, {
      contentType: 'application/strategic-merge-patch+json',
      body: { metadata: { annotations: { c: 'd', a: null } } },
    });
    expect(smp.json.metadata.annotations).toEqual({ c: 'd' });
    const jp = await call(s, 'PATCH', url, {
      contentType: 'application/json-patch+json',
      body: [
        { op: 'add', path: '/metadata/annotations/ambient.istio.io~1redirection', value: 'enabled' },
        { op: 'replace', path: '/metadata/labels/keep', value: '2' },
        { op: 'remove', path: '/metadata/annotations/c' },
      ],
    });
    expect(jp.status).toBe(200);
    expect(jp.json.metadata.annotations).toEqual({ 'ambient.istio.io/redirection': 'enabled' });
    expect(jp.json.metadata.labels.keep).toBe('2');
    // like the real server: a JSON patch "add" under a missing parent fails
    s.apply(pod('bare', 'ns'));
    const noParent = await call(s, 'PATCH', '/api/v1/namespaces/ns/pods/bare', {
      contentType: 'application/json-patch+json',
      body: [{ op: 'add', path: '/metadata/annotations/x', value: 'y' }],
    });
    expect(noParent.status).toBe(422);
    expect(noParent.json).toMatchObject({ kind: 'Status', code: 422 });
    const noop = await call(s, 'PATCH', url, {
      contentType: 'application/merge-patch+json',
      body: { metadata: { labels: { keep: '2' } } },
    });
    expect(noop.json.metadata.resourceVersion).toBe(jp.json.metadata.resourceVersion);
    const stale = await call(s, 'PATCH', url, {
      contentType: 'application/merge-patch+json',
      body: { metadata: { resourceVersion: '101', labels: { x: 'y' } } },
    });
    expect(stale.status).toBe(409);
    expect(stale.json).toMatchObject({ reason: 'Conflict', code: 409 });
    const apply = await call(s, 'PATCH', url, { contentType: 'application/apply-patch+yaml', body: '{}' });
    expect(apply.status).toBe(415);
    // status can't be changed through the main resource; it can through /status
    await call(s, 'PATCH', url, { contentType: 'application/merge-patch+json', body: { status: { phase: 'Failed' } } });
    expect(s.get('Pod', 'ns', 'p')!.status.phase).toBe('Running');
    await call(s, 'PATCH', `${url}/status`, {
      contentType: 'application/merge-patch+json',
      body: { status: { phase: 'Failed' } },
    });
    expect(s.get('Pod', 'ns', 'p')!.status.phase).toBe('Failed');
    // a namespace too
    s.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'ns' } });
    const nsPatch = await call(s, 'PATCH', '/api/v1/namespaces/ns', {
      contentType: 'application/merge-patch+json',
      body: { metadata: { labels: { 'istio.io/dataplane-mode': 'ambient' } } },
    });
    expect(nsPatch.json.metadata.labels).toEqual({ 'istio.io/dataplane-mode': 'ambient' });
    expect(names(await w.take(5))).toEqual(['MODIFIED p', 'MODIFIED p', 'MODIFIED p', 'ADDED bare', 'MODIFIED p']);
    const rec = s.requests
      .filter((q) => q.method === 'PATCH')
      .map((q) => [q.verb, q.resource, q.namespace, q.name, q.subresource, q.status]);
    expect(rec.slice(-2)).toEqual([
      ['patch', 'pods', 'ns', 'p', 'status', 200],
      ['patch', 'namespaces', 'ns', 'ns', undefined, 200],
    ]);
  });

  test('POST events (core/v1 and events.k8s.io/v1): stored in one storage, named from generateName, 201, recorded in events', async () => {
    const s = await server();
    const core = await call(s, 'POST', '/api/v1/namespaces/ns/events', {
      body: {
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { generateName: 'web-1.' },
        involvedObject: { kind: 'Pod', namespace: 'ns', name: 'web-1' },
        reason: 'Captured',
        message: 'm',
        type: 'Normal',
      },
    });
    expect(core.status).toBe(201);
    expect(core.json.metadata.name).toMatch(/^web-1\.[a-z0-9]{5}$/);
    expect(core.json.metadata).toMatchObject({ namespace: 'ns', resourceVersion: '101' });
    const v1 = await call(s, 'POST', '/apis/events.k8s.io/v1/namespaces/ns/events', {
      body: {
        apiVersion: 'events.k8s.io/v1',
        kind: 'Event',
        metadata: { name: 'web-1.x' },
        regarding: { kind: 'Pod', namespace: 'ns', name: 'web-1' },
        reason: 'Enrolled',
        note: 'ambient',
        type: 'Normal',
        action: 'Enroll',
        reportingController: 'sluice.dev/agent',
        reportingInstance: 'node-a',
        eventTime: '2025-01-01T00:00:00.000000Z',
      },
    });
    expect(v1.status).toBe(201);
    expect(v1.json).toMatchObject({
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      note: 'ambient',
      regarding: { name: 'web-1' },
    });
    expect(s.events.map((e) => [e.apiVersion, e.reason])).toEqual([
      ['v1', 'Captured'],
      ['events.k8s.io/v1', 'Enrolled'],
    ]);
    // one storage: the events.k8s.io one is a core Event too, converted
    const asCore = (await call(s, 'GET', '/api/v1/namespaces/ns/events/web-1.x')).json;
    expect(asCore).toMatchObject({
      apiVersion: 'v1',
      kind: 'Event',
      message: 'ambient',
      involvedObject: { name: 'web-1' },
      reportingComponent: 'sluice.dev/agent',
    });
    expect((await call(s, 'GET', '/apis/events.k8s.io/v1/events')).json.items).toHaveLength(2);
    expect(
      (await call(s, 'GET', '/api/v1/events?fieldSelector=reason%3DEnrolled')).json.items.map((e: Obj) => e.metadata.name),
    ).toEqual(['web-1.x']);
    // errors as the real server gives them
    const dup = await call(s, 'POST', '/api/v1/namespaces/ns/events', {
      body: { metadata: { name: 'web-1.x' }, involvedObject: {} },
    });
    expect(dup.status).toBe(409);
    expect(dup.json).toMatchObject({ reason: 'AlreadyExists', message: 'events "web-1.x" already exists' });
    const noName = await call(s, 'POST', '/api/v1/namespaces/ns/events', { body: { metadata: {}, involvedObject: {} } });
    expect(noName.status).toBe(422);
    expect(noName.json.message).toContain('name or generateName is required');
    const wrongNs = await call(s, 'POST', '/api/v1/namespaces/ns/events', {
      body: { metadata: { name: 'z', namespace: 'other' } },
    });
    expect(wrongNs.status).toBe(400);
    expect(s.requests.filter((q) => q.method === 'POST').map((q) => [q.verb, q.apiGroup, q.resource, q.namespace])[0]).toEqual([
      'create',
      '',
      'events',
      'ns',
    ]);
  });

  test('DELETE a pod: the object back, a DELETED event; preconditions; deletecollection', async () => {
    const s = await server();
    const p = s.apply(pod('p', 'ns'));
    s.apply(pod('q', 'ns', 'node-b'));
    s.apply(pod('r', 'ns', 'node-b'));
    const w = await Stream.open(s, `/api/v1/pods?watch=true&resourceVersion=${s.resourceVersion}`);
    streams.push(w);
    const wrongUid = await call(s, 'DELETE', '/api/v1/namespaces/ns/pods/p', { body: { preconditions: { uid: 'not-it' } } });
    expect(wrongUid.status).toBe(409);
    const del = await call(s, 'DELETE', '/api/v1/namespaces/ns/pods/p', { body: { preconditions: { uid: p.metadata.uid } } });
    expect(del.status).toBe(200);
    expect(del.json).toMatchObject({ kind: 'Pod', metadata: { name: 'p', uid: p.metadata.uid, resourceVersion: '104' } });
    expect(s.get('Pod', 'ns', 'p')).toBeUndefined();
    expect((await call(s, 'DELETE', '/api/v1/namespaces/ns/pods/p')).status).toBe(404);
    const coll = await call(s, 'DELETE', '/api/v1/namespaces/ns/pods?fieldSelector=spec.nodeName%3Dnode-b');
    expect(coll.json.items.map((x: Obj) => x.metadata.name)).toEqual(['q', 'r']);
    expect(names(await w.take(3))).toEqual(['DELETED p', 'DELETED q', 'DELETED r']);
    expect(s.requests.filter((q) => q.method === 'DELETE').map((q) => q.verb)).toEqual([
      'delete',
      'delete',
      'delete',
      'deletecollection',
    ]);
    // other kinds answer with a Success Status
    s.apply({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'svc', namespace: 'ns' }, spec: {} });
    expect((await call(s, 'DELETE', '/api/v1/namespaces/ns/services/svc')).json).toMatchObject({
      kind: 'Status',
      status: 'Success',
      details: { name: 'svc', kind: 'services' },
    });
  });

  test('401 Status without the token, with a wrong one, and with the old one after rotateToken()', async () => {
    const s = await server({ token: 'first' });
    const ok = await call(s, 'GET', '/api/v1/pods');
    expect(ok.status).toBe(200);
    for (const token of ['', 'wrong']) {
      const r = await call(s, 'GET', '/api/v1/pods', { token });
      expect(r.status).toBe(401);
      expect(r.json).toEqual({
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: 'Unauthorized',
        reason: 'Unauthorized',
        code: 401,
      });
    }
    expect((await call(s, 'GET', '/version', { token: 'wrong' })).status).toBe(401);
    const w = await Stream.open(s, `/api/v1/pods?watch=true&resourceVersion=${s.resourceVersion}`);
    streams.push(w);
    s.rotateToken('second');
    expect(s.token).toBe('second');
    expect((await call(s, 'GET', '/api/v1/pods', { token: 'first' })).status).toBe(401);
    expect((await call(s, 'GET', '/api/v1/pods')).status).toBe(200);
    // an open watch is not re-authenticated
    s.apply(pod('p'));
    expect(names(await w.take(1))).toEqual(['ADDED p']);
    expect(s.requests.filter((q) => q.status === 401)).toHaveLength(4);
  });

  test('setFailure({status: 500, forRequests: 2}) fails exactly 2 requests; 503 and 429 with their reasons; match narrows it', async () => {
    const s = await server();
    s.setFailure({ status: 500, forRequests: 2 });
    const codes: number[] = [];
    for (let i = 0; i < 4; i++) codes.push((await call(s, 'GET', '/api/v1/pods')).status);
    expect(codes).toEqual([500, 500, 200, 200]);
    s.setFailure({ status: 503, forRequests: 1 });
    const r = await call(s, 'GET', '/api/v1/pods');
    expect(r.json).toEqual({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: 'injected failure',
      reason: 'ServiceUnavailable',
      code: 503,
    });
    s.setFailure({ status: 429, forRequests: 1 });
    const tm = await call(s, 'GET', '/api/v1/pods');
    expect(tm.status).toBe(429);
    expect(tm.headers['retry-after']).toBe('1');
    // only watches fail; a watch fails before its stream starts (non-200)
    s.setFailure({ status: 500, match: (q) => q.verb === 'watch' });
    expect((await call(s, 'GET', '/api/v1/pods')).status).toBe(200);
    const w = await Stream.open(s, '/api/v1/pods?watch=true');
    streams.push(w);
    expect(w.status).toBe(500);
    s.setFailure(null);
    const ok = await Stream.open(s, '/api/v1/pods?watch=true');
    streams.push(ok);
    expect(ok.status).toBe(200);
    expect(s.requests.map((q) => q.status)).toEqual([500, 500, 200, 200, 503, 429, 200, 500, 200]);
  });

  test('setFailure({delayMs}) delays requests (a watch included) for forRequests of them', async () => {
    const s = await server();
    s.setFailure({ delayMs: 400, forRequests: 2 });
    let t0 = Date.now();
    expect((await call(s, 'GET', '/api/v1/pods')).status).toBe(200);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(380);
    t0 = Date.now();
    const w = await Stream.open(s, '/api/v1/pods?watch=true');
    streams.push(w);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(380);
    t0 = Date.now();
    await call(s, 'GET', '/api/v1/pods');
    expect(Date.now() - t0).toBeLessThan(300);
    // delay and then fail
    s.setFailure({ delayMs: 200, status: 504, forRequests: 1 });
    t0 = Date.now();
    expect((await call(s, 'GET', '/api/v1/pods')).json).toMatchObject({ code: 504, reason: 'Timeout' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(180);
  });

  test('restart() keeps the port, the state, the CA and the token; open watches are dropped; closeAllConnections() drops them and keeps listening', async () => {
    const s = await server();
    s.apply(pod('p', 'ns'));
    const url = s.url;
    const rv = s.resourceVersion;
    const w = await Stream.open(s, `/api/v1/pods?watch=true&resourceVersion=${rv}`);
    streams.push(w);
    await s.restart();
    await w.untilEnded();
    expect(w.how).not.toBe('end'); // cut, not closed cleanly
    expect(s.url).toBe(url);
    expect(s.watches).toEqual([]);
    const list = (await call(s, 'GET', '/api/v1/pods')).json;
    expect(list.items.map((p: Obj) => p.metadata.name)).toEqual(['p']);
    expect(list.metadata.resourceVersion).toBe(rv);
    // history survives a restart: a watch resumes from the old rv
    s.apply(pod('q', 'ns'));
    const again = await Stream.open(s, `/api/v1/pods?watch=true&resourceVersion=${rv}`);
    streams.push(again);
    expect(names(await again.take(1))).toEqual(['ADDED q']);
    s.closeAllConnections();
    await again.untilEnded();
    expect(again.how).not.toBe('end');
    expect((await call(s, 'GET', '/api/v1/pods')).status).toBe(200);
    // down for a while: connections are refused meanwhile
    const down = s.restart({ downMs: 500 });
    await sleep(150);
    const refused = await new Promise<string>((resolve) => {
      const sock = net.connect(Number(new URL(url).port), '127.0.0.1');
      sock.on('connect', () => {
        sock.destroy();
        resolve('connected');
      });
      sock.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    });
    expect(refused).toBe('ECONNREFUSED');
    await down;
    expect((await call(s, 'GET', '/api/v1/pods')).status).toBe(200);
    // stop(): the temp dir (CA, kubeconfig) goes
    const kc = s.kubeconfig();
    await s.stop();
    expect(fs.existsSync(kc)).toBe(false);
    expect(fs.existsSync(s.caFile)).toBe(false);
  });

  test('requests carry the RBAC verb, resource, namespace, name and subresource as the real server resolves them', async () => {
    const s = await server();
    s.apply(pod('p', 'ns'));
    s.apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'ns' } });
    await call(s, 'GET', '/api/v1/pods');
    await call(s, 'GET', '/api/v1/namespaces/ns/pods?fieldSelector=metadata.name%3Dp');
    const w = await Stream.open(s, '/api/v1/namespaces/ns/pods?watch=true&fieldSelector=metadata.name%3Dp');
    streams.push(w);
    await w.take(1);
    await call(s, 'GET', '/api/v1/namespaces/ns/pods/p');
    await call(s, 'GET', '/api/v1/namespaces/ns/pods/p/status');
    await call(s, 'GET', '/api/v1/namespaces/ns');
    await call(s, 'GET', '/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices');
    const legacy = await Stream.open(s, '/api/v1/watch/namespaces/ns/pods');
    streams.push(legacy);
    await legacy.take(1);
    await call(s, 'GET', '/api');
    await call(s, 'PUT', '/api/v1/namespaces/ns/pods/p', { body: s.get('Pod', 'ns', 'p') });
    const rows = s.requests.map((q) => [q.verb, q.apiGroup, q.resource, q.namespace, q.name, q.subresource]);
    expect(rows).toEqual([
      ['list', '', 'pods', undefined, undefined, undefined],
      ['list', '', 'pods', 'ns', 'p', undefined],
      ['watch', '', 'pods', 'ns', 'p', undefined],
      ['get', '', 'pods', 'ns', 'p', undefined],
      ['get', '', 'pods', 'ns', 'p', 'status'],
      ['get', '', 'namespaces', 'ns', 'ns', undefined],
      ['list', 'discovery.k8s.io', 'endpointslices', 'ns', undefined, undefined],
      ['watch', '', 'pods', 'ns', undefined, undefined],
      ['get', '', '', undefined, undefined, undefined],
      ['update', '', 'pods', 'ns', 'p', undefined],
    ]);
    expect(s.requests.every((q) => q.at > 0 && q.status > 0)).toBe(true);
  });

  test("a Table for clients that ask for one (kubectl's human-readable output)", async () => {
    const s = await server();
    s.apply(pod('p', 'ns'));
    const accept =
      'application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json';
    const t = (await call(s, 'GET', '/api/v1/pods', { accept })).json;
    expect(t).toMatchObject({ kind: 'Table', apiVersion: 'meta.k8s.io/v1', metadata: { resourceVersion: '101' } });
    expect(t.columnDefinitions.map((c: Obj) => c.name).slice(0, 5)).toEqual(['Name', 'Ready', 'Status', 'Restarts', 'Age']);
    expect(t.rows[0].cells.slice(0, 4)).toEqual(['p', '0/1', 'Running', 0]);
    expect(t.rows[0].object).toMatchObject({ kind: 'PartialObjectMetadata', metadata: { name: 'p', namespace: 'ns' } });
  });

  test('plain HTTP with tls: false', async () => {
    const s = await server({ tls: false, token: 't' });
    expect(s.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(s.caFile).toBe('');
    s.apply(pod('p'));
    expect((await call(s, 'GET', '/api/v1/namespaces/default/pods/p')).json.metadata.name).toBe('p');
    const kc = JSON.parse(fs.readFileSync(s.kubeconfig(), 'utf8'));
    expect(kc.clusters[0].cluster).toEqual({ server: s.url });
  });
});

/* ------------------------------------------------------------------------------------------ */
/* @kubernetes/client-node                                                                    */
/* ------------------------------------------------------------------------------------------ */

describe('FakeApiServer with @kubernetes/client-node', () => {
  /** What a promise rejected with (client-node's ApiException has code, body, headers). */
  async function rejection(p: Promise<unknown>): Promise<{ code?: number; body?: string }> {
    try {
      await p;
    } catch (e) {
      return e as { code?: number; body?: string };
    }
    throw new Error('expected the call to fail');
  }

  function kubeConfig(s: FakeApiServer): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromFile(s.kubeconfig());
    return kc;
  }

  test('CoreV1Api lists pods (all namespaces, by node) and reports a 404 as an ApiException', async () => {
    const s = await server();
    s.apply(pod('a', 'ns1', 'node-a'));
    s.apply(pod('b', 'ns2', 'node-b'));
    const api = kubeConfig(s).makeApiClient(CoreV1Api);
    const list = await api.listPodForAllNamespaces();
    expect(list.items.map((p) => p.metadata?.name)).toEqual(['a', 'b']);
    expect(list.metadata?.resourceVersion).toBe('102');
    expect(list.items[0].spec?.nodeName).toBe('node-a');
    expect(list.items[0].metadata?.creationTimestamp).toBeInstanceOf(Date);
    const mine = await api.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=node-b' });
    expect(mine.items.map((p) => p.metadata?.name)).toEqual(['b']);
    const page = await api.listPodForAllNamespaces({ limit: 1 });
    expect(page.metadata?._continue).toBeTruthy();
    const rest = await api.listPodForAllNamespaces({ limit: 1, _continue: page.metadata?._continue });
    expect(rest.items.map((p) => p.metadata?.name)).toEqual(['b']);
    // client-node's patch sends application/json-patch+json unless told otherwise
    const patched = await api.patchNamespacedPod({
      name: 'a',
      namespace: 'ns1',
      body: [{ op: 'add', path: '/metadata/annotations', value: { x: 'y' } }],
    });
    expect(patched.metadata?.annotations).toEqual({ x: 'y' });
    const merged = await api.patchNamespacedPod(
      { name: 'a', namespace: 'ns1', body: { metadata: { annotations: { x: null, z: 'w' } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect(merged.metadata?.annotations).toEqual({ z: 'w' });
    expect(s.requests.filter((q) => q.verb === 'patch').map((q) => q.status)).toEqual([200, 200]);
    // a merge-patch body sent as a JSON patch is a 400, as on the real server
    const wrongType = await rejection(api.patchNamespacedPod({ name: 'a', namespace: 'ns1', body: { metadata: {} } }));
    expect(wrongType.code).toBe(400);
    const err = await rejection(api.readNamespacedPod({ name: 'zzz', namespace: 'ns1' }));
    expect(err.code).toBe(404);
    expect(JSON.parse(err.body!)).toMatchObject({ kind: 'Status', reason: 'NotFound' });
    s.rotateToken('other');
    const denied = await rejection(api.listPodForAllNamespaces());
    expect(denied.code).toBe(401);
    const agents = s.requests.map((q) => q.userAgent);
    expect(agents.every((a) => a === agents[0])).toBe(true);
  });

  test('Watch receives events and bookmarks; a 410 arrives as an ERROR event then done(null)', async () => {
    const s = await server({ bookmarkIntervalMs: 100 });
    s.apply(pod('a', 'ns'));
    const kc = kubeConfig(s);
    const rv = (await kc.makeApiClient(CoreV1Api).listPodForAllNamespaces()).metadata!.resourceVersion!;
    const seen: Array<[string, string | undefined, string | undefined, number | undefined]> = [];
    let done: unknown = 'not yet';
    const ctl = await new Watch(kc).watch(
      '/api/v1/pods',
      { allowWatchBookmarks: true, resourceVersion: rv },
      (type, obj) => seen.push([type, obj?.metadata?.name, obj?.metadata?.resourceVersion, obj?.code]),
      (e) => (done = e),
    );
    await s.waitForWatch();
    s.apply(pod('b', 'ns'));
    await waitFor(
      'an ADDED and a bookmark',
      () => seen.some((x) => x[0] === 'ADDED') && seen.some((x) => x[0] === 'BOOKMARK' && x[2] === '102'),
      5000,
      10,
    );
    expect(seen[0]).toEqual(['ADDED', 'b', '102', undefined]);
    s.expireWatches();
    await waitFor('done', () => done !== 'not yet', 5000, 10);
    expect(seen[seen.length - 1]).toEqual(['ERROR', undefined, undefined, 410]);
    expect(done).toBeNull();
    ctl.abort();
    // a watch from the now too old rv: the same
    const seen2: string[] = [];
    let done2: unknown = 'not yet';
    await new Watch(kc).watch(
      '/api/v1/pods',
      { resourceVersion: rv },
      (type, obj) => seen2.push(`${type} ${obj.code}`),
      (e) => (done2 = e),
    );
    await waitFor('done2', () => done2 !== 'not yet', 5000, 10);
    expect(seen2).toEqual(['ERROR 410']);
    expect(done2).toBeNull();
  });

  test('Watch surfaces a failed start as done(Error) with statusCode, and a dropped connection as done(premature close)', async () => {
    const s = await server();
    const kc = kubeConfig(s);
    s.setFailure({ status: 503, forRequests: 1 });
    let done: any = 'not yet';
    await new Watch(kc).watch(
      '/api/v1/pods',
      {},
      () => undefined,
      (e) => (done = e),
    );
    await waitFor('done', () => done !== 'not yet', 5000, 10);
    expect(done).toBeInstanceOf(Error);
    expect(done.statusCode).toBe(503);
    expect(done.message).toBe('Service Unavailable');
    let cut: any = 'not yet';
    const events: string[] = [];
    s.apply(pod('p'));
    await new Watch(kc).watch(
      '/api/v1/pods',
      {},
      (t, o) => events.push(`${t} ${o.metadata.name}`),
      (e) => (cut = e),
    );
    await s.waitForWatch();
    await waitFor('the initial ADDED', () => events.length === 1, 5000, 10);
    expect(events).toEqual(['ADDED p']);
    s.closeAllConnections();
    await waitFor('done after the cut', () => cut !== 'not yet', 5000, 10);
    expect(cut).toBeInstanceOf(Error);
    expect(cut.code).toBe('ERR_STREAM_PREMATURE_CLOSE');
  });
});
