/* The metrics' logic without a kernel: kube-proxy's programming latency rules, per-pod counter
 * totals that stay monotonic, CNI result codes, the agent's metrics fed through their hooks,
 * and the HTTP endpoints (on 127.0.0.1, any free port).
 */
import * as http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { RawReply } from '../../src/agent/local-api';
import { svcKeyCodec, svcKeySlot } from '../../src/bpf/layout';
import { ObjectStore } from '../../src/k8s/store';
import type { EndpointSlice, Service } from '../../src/k8s/types';
import {
  AgentHttp,
  AgentMetrics,
  cniReplyCode,
  HttpEndpoint,
  LAST_CHANGE_TRIGGER_TIME,
  lastChangeTriggerTime,
  PodCounterTotals,
  PROGRAMMING_BUCKETS,
  ProgrammingLatency,
} from '../../src/metrics';

const T0 = Date.parse('2026-01-01T00:00:00Z');

function service(name: string): Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'default' },
    spec: { clusterIP: '10.96.0.1', ports: [{ port: 80 }] },
  };
}

function slice(name: string, svc: string, trigger?: string, ip = '10.0.0.1'): EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name,
      namespace: 'default',
      labels: { 'kubernetes.io/service-name': svc },
      ...(trigger ? { annotations: { [LAST_CHANGE_TRIGGER_TIME]: trigger } } : {}),
    },
    addressType: 'IPv4',
    endpoints: [{ addresses: [ip], conditions: { ready: true } }],
    ports: [{ port: 80 }],
  } as EndpointSlice;
}

/** A ProgrammingLatency fed by a store, on a fake clock. */
function latencyRig(readTimeWithoutAnnotation: boolean) {
  let now = T0 + 60_000; // the agent started at T0, a minute ago
  const observed: number[] = [];
  const pl = new ProgrammingLatency((s) => observed.push(s), { startedAtMs: T0, readTimeWithoutAnnotation, now: () => now });
  const store = new ObjectStore();
  store.on('change', (ev) => pl.changed(ev));
  return { pl, store, observed, advance: (ms: number) => (now += ms), at: (ms: number) => new Date(now + ms).toISOString() };
}

describe("network programming latency (kube-proxy's rules)", () => {
  it("the EndpointSlice controller's trigger time is parsed as RFC 3339 with nanoseconds; anything else is ignored", () => {
    expect(lastChangeTriggerTime({ [LAST_CHANGE_TRIGGER_TIME]: '2026-01-01T00:00:01.123456789Z' })).toBe(T0 + 1123);
    expect(lastChangeTriggerTime({ [LAST_CHANGE_TRIGGER_TIME]: '2026-01-01T02:00:01+02:00' })).toBe(T0 + 1000);
    expect(lastChangeTriggerTime({ [LAST_CHANGE_TRIGGER_TIME]: 'Jan 1 2026' })).toBeUndefined();
    expect(lastChangeTriggerTime({})).toBeUndefined();
  });

  it('an annotated change is observed once, after the sync that wrote it, from its trigger time', () => {
    const r = latencyRig(false);
    r.store.upsert(slice('web-1', 'web', r.at(-1500)));
    r.advance(500);
    r.pl.programmed();
    expect(r.observed).toEqual([2]);
    r.pl.programmed();
    expect(r.observed).toEqual([2]); // once
  });

  it('trigger times from before the agent started are not observed, nor are API-mode changes without one', () => {
    const r = latencyRig(false);
    r.store.upsert(slice('old', 'web', new Date(T0 - 1).toISOString()));
    r.store.upsert(service('web'));
    r.store.upsert(slice('plain', 'web'));
    r.pl.programmed();
    expect(r.observed).toEqual([]);
  });

  it("a slice deletion drops the Service's pending times, as kube-proxy does", () => {
    const r = latencyRig(false);
    r.store.upsert(slice('web-1', 'web', r.at(-100)));
    r.store.delete('EndpointSlice/default/web-1');
    r.pl.programmed();
    expect(r.observed).toEqual([]);
  });

  it('a Service that failed to program keeps its times until a sync programs it', () => {
    const r = latencyRig(false);
    r.store.upsert(slice('a-1', 'a', r.at(-100)));
    r.store.upsert(slice('b-1', 'b', r.at(-100)));
    r.pl.programmed(['default/b']);
    expect(r.observed).toEqual([0.1]);
    expect(r.pl.pendingServices).toBe(1);
    r.advance(5000);
    r.pl.programmed();
    expect(r.observed).toEqual([0.1, 5.1]);
  });

  it('standalone mode: a change without the annotation counts from when it was read, once the first sync is done', () => {
    const r = latencyRig(true);
    r.store.upsert(service('web'));
    r.store.upsert(slice('web-1', 'web'));
    r.pl.programmed(); // the first sync: start-up, not a change
    expect(r.observed).toEqual([]);
    r.store.upsert(slice('web-1', 'web', undefined, '10.0.0.2'));
    r.advance(30);
    r.pl.programmed();
    expect(r.observed).toEqual([0.03]);
  });

  it("a trigger time ahead of the agent's clock counts as 0, not negative", () => {
    const r = latencyRig(false);
    r.store.upsert(slice('web-1', 'web', r.at(2000)));
    r.pl.programmed();
    expect(r.observed).toEqual([0]);
  });

  it("the histogram has every bucket boundary of kube-proxy's, and finer ones below", () => {
    const kubeProxy = [
      0.25,
      0.5,
      ...Array.from({ length: 59 }, (_, i) => i + 1),
      ...Array.from({ length: 12 }, (_, i) => 60 + 5 * i),
      ...Array.from({ length: 7 }, (_, i) => 120 + 30 * i),
    ];
    expect(PROGRAMMING_BUCKETS.filter((b) => b >= 0.25)).toEqual(kubeProxy);
    expect(PROGRAMMING_BUCKETS.filter((b) => b < 0.25).length).toBeGreaterThan(3);
    expect([...PROGRAMMING_BUCKETS].sort((a, b) => a - b)).toEqual(PROGRAMMING_BUCKETS);
  });
});

describe('per-pod counter totals', () => {
  it('stay monotonic when a pod is released (its entry deleted) and when it is enrolled again at zero', () => {
    const t = new PodCounterTotals(['out', 'in'] as const);
    expect(
      t.update(
        new Map([
          [1n, { out: 5, in: 1 }],
          [2n, { out: 2, in: 0 }],
        ]),
      ),
    ).toEqual({ out: 7, in: 1 });
    // pod 2 released: what it had counted stays in the total
    expect(t.update(new Map([[1n, { out: 6, in: 1 }]]))).toEqual({ out: 8, in: 1 });
    // pod 1 released and enrolled again between two scrapes: its entry starts at zero again
    expect(t.update(new Map([[1n, { out: 1, in: 0 }]]))).toEqual({ out: 9, in: 1 });
    expect(t.update(new Map())).toEqual({ out: 9, in: 1 });
  });
});

describe('raw map keys', () => {
  it('svcKeySlot reads the slot where the sl_svc_key codec writes it', () => {
    const b = Buffer.alloc(svcKeyCodec.size * 2);
    svcKeyCodec.encode({ vip: 'fd00::1', port: 443, proto: 6, slot: 7 }, b, svcKeyCodec.size);
    expect(svcKeySlot(b, svcKeyCodec.size)).toBe(7);
    expect(svcKeySlot(b, 0)).toBe(0);
  });
});

describe('CNI result codes', () => {
  it('0 on success, the CNI error JSON\'s code on failure, "unknown" when there is none', () => {
    expect(cniReplyCode(new RawReply('0\n{"cniVersion":"1.1.0"}\n'))).toBe('0');
    expect(cniReplyCode(new RawReply('1\n{"cniVersion":"1.1.0","code":11,"msg":"try again later"}\n'))).toBe('11');
    expect(cniReplyCode(new RawReply('1\nnot json'))).toBe('unknown');
    expect(cniReplyCode(new RawReply('1\n{"code":12345}'))).toBe('unknown');
  });
});

/** Parses the Prometheus text format into name{labels} -> value. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    out.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return out;
}

describe('agent metrics fed through their hooks (no kernel: the pinned maps are absent)', () => {
  function metrics(source: 'api' | 'standalone', reachable?: boolean) {
    return new AgentMetrics(
      { bpfPinDir: '/nonexistent/sluice-pins', source, repairMode: 'repair' },
      { registrations: () => [], zds: () => undefined, apiReachable: () => reachable },
    );
  }

  it('CNI requests are counted by command and code, ADD is timed', async () => {
    const m = metrics('standalone');
    await m.cni('ADD', async () => new RawReply('0\n{}\n'));
    await m.cni('ADD', async () => new RawReply('1\n{"code":11,"msg":"try again later"}\n'));
    await m.cni('DEL', async () => new RawReply('0\n'));
    await m.cni('BOGUS', async () => new RawReply('1\n{"code":4}\n'));
    const s = samples(await m.scrape());
    expect(s.get('sluice_cni_requests_total{command="ADD",code="0"}')).toBe(1);
    expect(s.get('sluice_cni_requests_total{command="ADD",code="11"}')).toBe(1);
    expect(s.get('sluice_cni_requests_total{command="DEL",code="0"}')).toBe(1);
    expect(s.get('sluice_cni_requests_total{command="other",code="4"}')).toBe(1);
    expect(s.get('sluice_cni_add_duration_seconds_count')).toBe(2);
  });

  it('store changes are counted by kind and type; repair sweeps by mode and result', async () => {
    const m = metrics('standalone');
    const store = new ObjectStore();
    m.followStore(store);
    store.upsert(service('web'));
    store.upsert({ ...service('web'), spec: { clusterIP: '10.96.0.2', ports: [{ port: 80 }] } } as Service);
    store.upsert(service('web')); // an equal re-delivery is no change
    store.delete('Service/default/web');
    m.repaired('repair', { candidates: 4, ms: 1, repaired: ['a/b'], labelled: [], deleted: [], notFound: ['a/c'], listeners: 0 });
    const s = samples(await m.scrape());
    expect(s.get('sluice_k8s_events_total{kind="Service",type="create"}')).toBe(1);
    expect(s.get('sluice_k8s_events_total{kind="Service",type="update"}')).toBe(2);
    expect(s.get('sluice_k8s_events_total{kind="Service",type="delete"}')).toBe(1);
    expect(s.get('sluice_k8s_events_total{kind="Pod",type="create"}')).toBe(0);
    expect(s.get('sluice_repair_pods_total{mode="repair",result="repaired"}')).toBe(1);
    expect(s.get('sluice_repair_pods_total{mode="repair",result="not_found"}')).toBe(1);
    expect(s.get('sluice_repair_pods_total{mode="repair",result="failed"}')).toBe(2);
  });

  it("API reachability is a metric in API mode only; without a datapath the kernel's metrics have no samples", async () => {
    expect(samples(await metrics('api', false).scrape()).get('sluice_k8s_api_reachable')).toBe(0);
    expect(samples(await metrics('api', true).scrape()).get('sluice_k8s_api_reachable')).toBe(1);
    const text = await metrics('standalone').scrape();
    expect(text).not.toContain('sluice_k8s_api_reachable');
    expect(text).toContain('# TYPE sluice_bpf_map_pressure gauge');
    expect(
      [...samples(text).keys()].filter((k) =>
        /^sluice_(bpf_map_pressure|datapath_events_total|capture_connections_total|endpoints)\{/.test(k),
      ),
    ).toEqual([]);
    expect(samples(text).get('sluice_zds_connected')).toBe(0);
  });
});

function get(url: string, method = 'GET'): Promise<{ status: number; body: string; type?: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: res.headers['content-type'] }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('HTTP endpoints', () => {
  const open: Array<{ close(): Promise<void> }> = [];
  afterEach(async () => {
    for (const o of open.splice(0)) await o.close();
  });

  it('/healthz answers while the agent lives, /readyz says 503 and why until it is ready', async () => {
    let ready = false;
    let alive = true;
    const m = new AgentMetrics(
      { bpfPinDir: '/nonexistent', source: 'standalone', repairMode: 'off' },
      { registrations: () => [], zds: () => undefined, apiReachable: () => undefined },
    );
    const h = await AgentHttp.start(
      { healthServeAddr: { host: '127.0.0.1', port: 0 }, prometheusServeAddr: { host: '127.0.0.1', port: 0 } },
      m,
      {
        readiness: () => ({ ready, reason: ready ? 'programs attached' : 'CNI plugin not installed: no config' }),
        alive: () => alive,
      },
    );
    open.push(h);
    const { health, metrics } = h.addresses();
    expect(health).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(await get(`http://${health}/healthz`)).toMatchObject({ status: 200, body: 'ok\n' });
    expect(await get(`http://${health}/readyz`)).toMatchObject({
      status: 503,
      body: 'not ready: CNI plugin not installed: no config\n',
    });
    ready = true;
    expect(await get(`http://${health}/readyz`)).toMatchObject({ status: 200, body: 'ready: programs attached\n' });
    alive = false;
    expect((await get(`http://${health}/healthz`)).status).toBe(503);
    expect((await get(`http://${health}/metrics`)).status).toBe(404); // each address serves its own paths
    const scrape = await get(`http://${metrics}/metrics`);
    expect(scrape.status).toBe(200);
    expect(scrape.type).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(scrape.body).toContain('# TYPE sluice_cni_requests_total counter');
    expect((await get(`http://${metrics}/metrics`, 'POST')).status).toBe(405);
  });

  it('an address that cannot be bound fails with the config key, the address and the cause', async () => {
    const first = await HttpEndpoint.listen('health-serve-addr', { host: '127.0.0.1', port: 0 }, {});
    open.push(first);
    const port = Number(first.address.split(':')[1]);
    await expect(HttpEndpoint.listen('prometheus-serve-addr', { host: '127.0.0.1', port }, {})).rejects.toThrow(
      `Cannot listen on prometheus-serve-addr "127.0.0.1:${port}": EADDRINUSE`,
    );
  });
});
