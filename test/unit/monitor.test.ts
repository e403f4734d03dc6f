/* sluice monitor without a kernel: the hub over a test double of the EventFeed (the real feed is
 * tested with the datapath), with the real name resolver over a real registry and object store,
 * the filters, the printer, the local API's stream over a real unix socket, and the CLI itself
 * (bin/sluice) against an in-process agent API.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { LocalApiServer, callAgent } from '../../src/agent/local-api';
import { type PodRegistration, PodRegistry } from '../../src/agent/pod-registry';
import { ObjectStore } from '../../src/k8s/store';
import type { Pod, Service } from '../../src/k8s/types';
import { AgentMetrics } from '../../src/metrics';
import { parseFilter, matches } from '../../src/monitor/filter';
import { MonitorHub, type MonitorReader } from '../../src/monitor/hub';
import { MonitorNames } from '../../src/monitor/names';
import { formatJson, formatText, monotonicToWall } from '../../src/monitor/printer';
import { eventRecord, type EventRecord, type MonitorMessage } from '../../src/monitor/record';
import { monitorStream } from '../../src/monitor/stream';
import { EVENT_TYPE_NAMES, type DatapathEvent, type EventFeed, type EventTypeName } from '../../src/monitor/types';

const ROOT = path.resolve(__dirname, '../..');
const SLUICE = path.join(ROOT, 'bin/sluice');

const HOST = 4096n;
const CLIENT = 4097n;
const BACKEND = 4098n;

/** The EventFeed as the hub sees it: counts starts and stops, emits what a test hands it. */
class FakeFeed extends EventEmitter implements EventFeed {
  starts = 0;
  stops = 0;
  lostCount = 0n;
  failStart?: Error;
  private onEvent?: (e: DatapathEvent) => void;

  start(onEvent: (e: DatapathEvent) => void): void {
    if (this.failStart) throw this.failStart;
    if (this.onEvent) return;
    this.starts++;
    this.onEvent = onEvent;
    this.emit('start');
  }

  stop(): void {
    if (!this.onEvent) return;
    this.stops++;
    this.onEvent = undefined;
    this.emit('stop');
  }

  lost(): bigint {
    return this.lostCount;
  }

  get running(): boolean {
    return this.onEvent !== undefined;
  }

  send(e: DatapathEvent): void {
    this.onEvent?.(e);
  }
}

function ev(type: EventTypeName, o: Partial<DatapathEvent> = {}): DatapathEvent {
  return {
    tsNs: 1_123_000_000n,
    netnsCookie: CLIENT,
    sockCookie: 77n,
    type,
    reason: '',
    proto: 'tcp',
    mode: '',
    src: '',
    srcPort: 0,
    dst: '',
    dstPort: 0,
    to: '',
    toPort: 0,
    errno: 0,
    ...o,
  };
}

function service(name: string, ip: string, ports: Service['spec']['ports'], type?: Service['spec']['type']): Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'default' },
    spec: { type, clusterIP: ip, clusterIPs: [ip], ports },
  };
}

function pod(ns: string, name: string, ip: string, hostNetwork = false): Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns },
    spec: { hostNetwork },
    status: { podIP: ip, podIPs: [{ ip }] },
  };
}

function registration(ns: string, name: string, cookie: bigint, ips: string[]): PodRegistration {
  return {
    containerId: `c-${name}`,
    ifName: 'eth0',
    namespace: ns,
    name,
    uid: `uid-${name}`,
    ips,
    netnsCookie: cookie.toString(),
    netnsPath: `/var/run/netns/${name}`,
    network: 'podnet',
    createdAt: '2026-12-04T00:00:00Z',
  };
}

/** A node as the agent knows it: two registered pods, Services, a Pod elsewhere and a hostNetwork one. */
function cluster(dir: string) {
  const registry = new PodRegistry(dir);
  registry.load();
  registry.put(registration('default', 'client', CLIENT, ['10.244.0.5', 'fd00::5']));
  registry.put(registration('shop', 'web-1', BACKEND, ['10.244.0.7']));
  const store = new ObjectStore();
  store.upsert(service('web', '10.96.0.10', [{ name: 'http', port: 8080, protocol: 'TCP', nodePort: 30080 }], 'NodePort'));
  store.upsert(service('dns', '10.96.0.53', [{ port: 53, protocol: 'UDP' }]));
  store.upsert(pod('shop', 'web-2', '10.244.1.9')); // on another node: known from its Pod object only
  store.upsert(pod('kube-system', 'hostnet', '192.168.1.10', true));
  const names = new MonitorNames({ registry, store, hostNetnsCookie: HOST });
  return { registry, store, names };
}

/** Collects what a subscription queues, read as a client would. */
function collector(): MonitorReader & {
  ready(): void;
  got: MonitorMessage[];
  closedCount: number;
  sub?: { next(): MonitorMessage | undefined };
} {
  const c = {
    got: [] as MonitorMessage[],
    closedCount: 0,
    sub: undefined as { next(): MonitorMessage | undefined } | undefined,
    ready() {
      for (let m = c.sub?.next(); m; m = c.sub?.next()) c.got.push(m);
    },
    closed() {
      c.closedCount++;
    },
  };
  return c;
}

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-monitor-'));
});
afterEach(() => {
  vi.useRealTimers();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('the monitor hub', () => {
  it('starts the feed for the first subscriber only and stops it after the last one left, following the objects only meanwhile', () => {
    const { store, names } = cluster(tmp);
    const feed = new FakeFeed();
    let created = 0;
    const hub = new MonitorHub(() => {
      created++;
      return feed;
    }, names);
    expect(feed.running).toBe(false);
    const a = hub.subscribe({}, collector());
    expect([feed.starts, feed.running, store.listenerCount('change')]).toEqual([1, true, 1]);
    const b = hub.subscribe({}, collector());
    expect([feed.starts, hub.subscribers]).toEqual([1, 2]);
    a.close();
    expect([feed.stops, feed.running]).toEqual([0, true]);
    b.close();
    b.close(); // idempotent
    expect([feed.stops, feed.running, hub.subscribers, store.listenerCount('change')]).toEqual([1, false, 0, 0]);
    hub.subscribe({}, collector()).close();
    expect([feed.starts, feed.stops, created]).toEqual([2, 2, 1]); // the same feed again
  });

  it('a feed that cannot start leaves nobody subscribed and is tried again by the next subscriber', () => {
    const { store, names } = cluster(tmp);
    const feed = new FakeFeed();
    feed.failStart = new Error('ring not pinned');
    const hub = new MonitorHub(() => feed, names);
    expect(() => hub.subscribe({}, collector())).toThrow('ring not pinned');
    expect([hub.subscribers, store.listenerCount('change')]).toEqual([0, 0]);
    feed.failStart = undefined;
    hub.subscribe({}, collector());
    expect(feed.running).toBe(true);
  });

  it('hands each event to the subscribers whose filter it passes, named', () => {
    const { names } = cluster(tmp);
    const feed = new FakeFeed();
    const hub = new MonitorHub(() => feed, names);
    const all = collector();
    const refusals = collector();
    all.sub = hub.subscribe({}, all);
    refusals.sub = hub.subscribe(parseFilter({ type: 'lb-refuse' }), refusals);
    feed.send(ev('lb-translate', { dst: '10.96.0.10', dstPort: 8080, to: '10.244.0.7', toPort: 8080 }));
    feed.send(ev('lb-refuse', { errno: 111, reason: 'no-backend' }));
    expect(all.got.map((m) => ('event' in m ? m.event.type : 'lost'))).toEqual(['lb-translate', 'lb-refuse']);
    expect(refusals.got.map((m) => ('event' in m ? m.event.type : 'lost'))).toEqual(['lb-refuse']);
    const first = all.got[0] as { event: EventRecord };
    expect([first.event.pod, first.event.dstName, first.event.toName]).toEqual([
      'default/client',
      'default/web:http',
      'shop/web-1',
    ]);
  });

  it('a subscriber that does not read keeps at most queueLimit messages: the rest is dropped, counted and announced where it was missed', () => {
    const { names } = cluster(tmp);
    const feed = new FakeFeed();
    const lost: Array<[string, number]> = [];
    const hub = new MonitorHub(() => feed, names, { queueLimit: 3, onLost: (reason, n) => lost.push([reason, n]) });
    const slow = collector(); // never reads until told to
    const sub = hub.subscribe({}, { ready: () => undefined, closed: () => undefined });
    for (let i = 0; i < 5; i++) feed.send(ev('capture-out', { srcPort: 1000 + i }));
    expect(sub.waiting).toBe(3);
    expect(lost).toEqual([
      ['queue', 1],
      ['queue', 1],
    ]);
    feed.send(ev('capture-out', { srcPort: 1005 })); // still full
    slow.sub = sub;
    slow.ready();
    feed.send(ev('capture-out', { srcPort: 1006 })); // room again: the gap is announced before it
    slow.ready();
    const seen = slow.got.map((m) => ('event' in m ? m.event.srcPort : `lost ${m.lost.reason} ${m.lost.count}`));
    expect(seen).toEqual([1000, 1001, 1002, 'lost queue 3', 1006]);
    expect(lost).toHaveLength(3);
  });

  it("reports the ring's lost events to every subscriber and to onLost as they grow", () => {
    vi.useFakeTimers();
    const { names } = cluster(tmp);
    const feed = new FakeFeed();
    feed.lostCount = 7n; // lost before anyone watched: not this monitor's
    const lost: Array<[string, number]> = [];
    const hub = new MonitorHub(() => feed, names, { lostCheckMs: 1000, onLost: (reason, n) => lost.push([reason, n]) });
    const a = collector();
    const b = collector();
    a.sub = hub.subscribe(parseFilter({ type: 'capture-in' }), a);
    b.sub = hub.subscribe({}, b);
    vi.advanceTimersByTime(1000);
    expect(lost).toEqual([]);
    feed.lostCount += 5n;
    vi.advanceTimersByTime(1000);
    vi.advanceTimersByTime(1000); // no growth, no notice
    expect(lost).toEqual([['ring', 5]]);
    expect(a.got).toEqual([{ lost: { reason: 'ring', count: 5 } }]);
    expect(b.got).toEqual([{ lost: { reason: 'ring', count: 5 } }]);
  });

  it("the agent's lost-events metric counts both reasons", async () => {
    const metrics = new AgentMetrics(
      { bpfPinDir: path.join(tmp, 'no-pins'), source: 'standalone', repairMode: 'off' },
      { registrations: () => [], zds: () => undefined, apiReachable: () => undefined },
    );
    const { names } = cluster(tmp);
    const feed = new FakeFeed();
    const hub = new MonitorHub(() => feed, names, { queueLimit: 1, onLost: (r, n) => metrics.monitorLost(r, n) });
    hub.subscribe({}, { ready: () => undefined, closed: () => undefined });
    for (let i = 0; i < 4; i++) feed.send(ev('bypass-out'));
    const text = await metrics.scrape();
    expect(text).toContain('sluice_monitor_events_lost_total{reason="queue"} 3');
    expect(text).toContain('sluice_monitor_events_lost_total{reason="ring"} 0');
  });

  it('close() detaches every monitor, telling each, and stops the feed', () => {
    const { names } = cluster(tmp);
    const feed = new FakeFeed();
    const hub = new MonitorHub(() => feed, names);
    const a = collector();
    const b = collector();
    hub.subscribe({}, a);
    hub.subscribe({}, b);
    hub.close();
    expect([a.closedCount, b.closedCount, feed.running, hub.subscribers]).toEqual([1, 1, false, 0]);
  });
});

describe('monitor filters', () => {
  const rec = (o: Partial<EventRecord>): EventRecord => ({
    ...eventRecord(ev('lb-translate'), { pod: '', srcName: '', dstName: '', toName: '' }),
    ...o,
  });

  it('an unknown type is refused with the list of valid ones; bad --pod and --namespace values too', () => {
    expect(() => parseFilter({ type: 'lb-translate,bogus' })).toThrow(
      `--type "lb-translate,bogus": unknown type "bogus"; valid types: ${EVENT_TYPE_NAMES.join(', ')}`,
    );
    expect(() => parseFilter({ type: '' })).toThrow(/unknown type ""/);
    expect(() => parseFilter({ pod: 'client' })).toThrow('--pod "client": expected NAMESPACE/NAME or host');
    expect(() => parseFilter({ pod: 'a/b/c' })).toThrow(/expected NAMESPACE\/NAME/);
    expect(() => parseFilter({ namespace: 'a/b' })).toThrow(/--namespace "a\/b"/);
    expect(parseFilter({ pod: 'host', namespace: 'shop', type: 'lb-refuse, capture-in' })).toEqual({
      pod: 'host',
      namespace: 'shop',
      types: new Set(['lb-refuse', 'capture-in']),
    });
  });

  it("--pod matches the pod that decided or the pod at the other end; --pod host only the node's own sockets", () => {
    const f = parseFilter({ pod: 'shop/web-1' });
    expect(matches(f, rec({ pod: 'shop/web-1' }))).toBe(true);
    expect(matches(f, rec({ pod: 'default/client', toName: 'shop/web-1' }))).toBe(true);
    expect(matches(f, rec({ pod: 'default/client', srcName: 'shop/web-1' }))).toBe(true);
    expect(matches(f, rec({ pod: 'default/client', dstName: 'shop/web-1:http' }))).toBe(false); // a Service is not the pod
    expect(matches(f, rec({ pod: 'default/client' }))).toBe(false);
    const host = parseFilter({ pod: 'host' });
    expect(matches(host, rec({ pod: 'host' }))).toBe(true);
    expect(matches(host, rec({ pod: 'default/client', dstName: 'host' }))).toBe(false);
  });

  it('--namespace matches either end, Services included; --type by name; combined, all must hold', () => {
    const ns = parseFilter({ namespace: 'shop' });
    expect(matches(ns, rec({ pod: 'shop/web-1' }))).toBe(true);
    expect(matches(ns, rec({ pod: 'default/client', dstName: 'shop/web:http' }))).toBe(true);
    expect(matches(ns, rec({ pod: 'default/client', dstName: 'default/web:http' }))).toBe(false);
    expect(matches(ns, rec({ pod: 'host' }))).toBe(false);
    expect(matches(ns, rec({ pod: '' }))).toBe(false);
    const types = parseFilter({ type: 'capture-in,no-listener' });
    expect(matches(types, rec({ type: 'no-listener' }))).toBe(true);
    expect(matches(types, rec({ type: 'capture-out' }))).toBe(false);
    const both = parseFilter({ namespace: 'default', type: 'lb-refuse' });
    expect(matches(both, rec({ pod: 'default/client', type: 'lb-refuse' }))).toBe(true);
    expect(matches(both, rec({ pod: 'default/client', type: 'lb-translate' }))).toBe(false);
    expect(matches(both, rec({ pod: 'shop/web-1', type: 'lb-refuse' }))).toBe(false);
    expect(matches({}, rec({}))).toBe(true);
  });
});

describe('monitor names', () => {
  it("a netns cookie names a registered pod, the host's own namespace is host, anything else stays unnamed", () => {
    const { names } = cluster(tmp);
    names.open();
    expect(names.pod(CLIENT)).toBe('default/client');
    expect(names.pod(HOST)).toBe('host');
    expect(names.pod(999n)).toBe('');
  });

  it('a Service frontend names its Service port (the port number when unnamed); a nodePort on any node address only for socket-LB decisions', () => {
    const { names } = cluster(tmp);
    names.open();
    expect(names.service('10.96.0.10', 8080, 'tcp')).toBe('default/web:http');
    expect(names.service('10.96.0.10', 8080, 'udp')).toBe('');
    expect(names.service('10.96.0.53', 53, 'udp')).toBe('default/dns:53');
    expect(names.service('::ffff:10.96.0.53', 53, 'udp')).toBe('default/dns:53');
    expect(names.resolve(ev('lb-translate', { dst: '192.168.1.10', dstPort: 30080 })).dstName).toBe('default/web:http');
    // the same address and port in a capture decision is just an address (its pod: the hostNetwork one has none)
    expect(names.resolve(ev('capture-out', { dst: '192.168.1.10', dstPort: 30080 })).dstName).toBe('');
  });

  it("pod IPs: this node's registrations, then Pod objects (not hostNetwork ones); unknown addresses stay unnamed", () => {
    const { names } = cluster(tmp);
    names.open();
    expect(names.podOfIp('10.244.0.7')).toBe('shop/web-1');
    expect(names.podOfIp('fd00:0:0::5')).toBe('default/client'); // canonical form
    expect(names.podOfIp('10.244.1.9')).toBe('shop/web-2');
    expect(names.podOfIp('192.168.1.10')).toBe('');
    expect(names.podOfIp('10.1.2.3')).toBe('');
    expect(
      names.resolve(
        ev('capture-in', { netnsCookie: BACKEND, src: '10.244.0.5', srcPort: 40000, dst: '10.244.0.7', dstPort: 8080 }),
      ),
    ).toEqual({
      pod: 'shop/web-1',
      srcName: 'default/client',
      dstName: 'shop/web-1',
      toName: '',
    });
  });

  it('follows registrations and Service and Pod changes while open, and forgets everything when closed', () => {
    const { registry, store, names } = cluster(tmp);
    names.open();
    expect(names.pod(5000n)).toBe('');
    registry.put(registration('shop', 'cart', 5000n, ['10.244.0.9']));
    expect([names.pod(5000n), names.podOfIp('10.244.0.9')]).toEqual(['shop/cart', 'shop/cart']);
    registry.remove('c-client', 'eth0');
    expect(names.pod(CLIENT)).toBe('');
    store.upsert(service('web', '10.96.0.10', [{ name: 'web', port: 8080, protocol: 'TCP' }]));
    expect(names.service('10.96.0.10', 8080, 'tcp')).toBe('default/web:web');
    store.delete('Service/default/dns');
    expect(names.service('10.96.0.53', 53, 'udp')).toBe('');
    store.upsert(pod('shop', 'web-3', '10.244.1.10'));
    expect(names.podOfIp('10.244.1.10')).toBe('shop/web-3');
    names.close();
    expect(store.listenerCount('change')).toBe(0);
    expect(names.service('10.96.0.10', 8080, 'tcp')).toBe('');
    expect(names.podOfIp('10.244.1.10')).toBe('');
  });
});

describe('monitor printer', () => {
  // the kernel's clock read 1.000 s when the wall clock read 05:31:02.000: 1.123 s is .123
  const wall = monotonicToWall(Date.parse('2026-12-04T05:31:02.000Z'), 1_000_000_000n);
  const now = new Date('2026-12-04T05:31:03.500Z');
  const T = '2026-12-04T05:31:02.123Z';
  const named = (e: DatapathEvent, n: Partial<EventRecord> = {}): MonitorMessage => ({
    event: eventRecord(e, { pod: 'default/client', srcName: '', dstName: '', toName: '', ...n }),
  });

  const cases: Array<[EventTypeName, MonitorMessage, string]> = [
    [
      'lb-translate',
      named(
        ev('lb-translate', {
          src: '10.244.0.5',
          srcPort: 41000,
          dst: '10.96.0.10',
          dstPort: 8080,
          to: '10.244.0.7',
          toPort: 8080,
        }),
        { dstName: 'default/web:http', toName: 'shop/web-1' },
      ),
      `${T} default/client lb-translate 10.244.0.5:41000 -> 10.96.0.10:8080 (default/web:http) => 10.244.0.7:8080 (shop/web-1) tcp`,
    ],
    [
      'lb-refuse',
      named(ev('lb-refuse', { dst: '10.96.0.11', dstPort: 80, errno: 111, reason: 'no-backend' }), {
        dstName: 'default/empty:http',
      }),
      `${T} default/client lb-refuse    ? -> 10.96.0.11:80 (default/empty:http) tcp ECONNREFUSED (no-backend)`,
    ],
    [
      'capture-out',
      named(
        ev('capture-out', {
          mode: 'sidecar',
          src: '10.244.0.5',
          srcPort: 41002,
          dst: '10.96.0.10',
          dstPort: 8080,
          to: '127.0.0.1',
          toPort: 15001,
        }),
        { dstName: 'default/web:http' },
      ),
      `${T} default/client capture-out  10.244.0.5:41002 -> 10.96.0.10:8080 (default/web:http) => 127.0.0.1:15001 tcp sidecar`,
    ],
    [
      'capture-in',
      named(
        ev('capture-in', {
          mode: 'ambient',
          src: 'fd00::9',
          srcPort: 50000,
          dst: 'fd00::5',
          dstPort: 8080,
          to: '::1',
          toPort: 15006,
        }),
        { srcName: 'shop/web-1', dstName: 'default/client' },
      ),
      `${T} default/client capture-in   [fd00::9]:50000 (shop/web-1) -> [fd00::5]:8080 => [::1]:15006 tcp ambient`,
    ],
    [
      'bypass-out',
      named(
        ev('bypass-out', {
          mode: 'sidecar',
          proto: 'udp',
          src: '10.244.0.5',
          srcPort: 5353,
          dst: '10.96.0.53',
          dstPort: 53,
          reason: 'proxy-uid',
        }),
        { dstName: 'default/dns:53' },
      ),
      `${T} default/client bypass-out   10.244.0.5:5353 -> 10.96.0.53:53 (default/dns:53) udp sidecar (proxy-uid)`,
    ],
    [
      'bypass-in',
      named(
        ev('bypass-in', {
          mode: 'sidecar',
          src: '10.244.0.7',
          srcPort: 41003,
          dst: '10.244.0.5',
          dstPort: 15020,
          reason: 'excluded-port',
        }),
      ),
      `${T} default/client bypass-in    10.244.0.7:41003 -> 10.244.0.5:15020 tcp sidecar (excluded-port)`,
    ],
    [
      'no-listener',
      named(
        ev('no-listener', {
          mode: 'sidecar',
          src: '10.244.0.7',
          srcPort: 41004,
          dst: '10.244.0.5',
          dstPort: 8080,
          to: '10.244.0.5',
          toPort: 15006,
        }),
      ),
      `${T} default/client no-listener  10.244.0.7:41004 -> 10.244.0.5:8080 => 10.244.0.5:15006 tcp sidecar`,
    ],
    [
      'sock-destroy',
      named(
        ev('sock-destroy', {
          netnsCookie: 5001n,
          proto: 'udp',
          src: '10.244.0.8',
          srcPort: 40001,
          dst: '10.96.0.53',
          dstPort: 53,
          to: '10.244.0.3',
          toPort: 53,
          reason: 'backend-gone',
        }),
        { pod: '' },
      ),
      `${T} netns:5001 sock-destroy 10.244.0.8:40001 -> 10.96.0.53:53 => 10.244.0.3:53 udp (backend-gone)`,
    ],
  ];

  it('covers every event type', () => {
    expect(cases.map((c) => c[0])).toEqual([...EVENT_TYPE_NAMES]);
  });

  it('the pod is named once: its own addresses go unnamed in text (JSON keeps every name)', () => {
    const m = named(
      ev('capture-out', { src: '10.244.0.5', srcPort: 41000, dst: '10.244.0.5', dstPort: 9090, to: '127.0.0.1', toPort: 15001 }),
      {
        srcName: 'default/client',
        dstName: 'default/client',
      },
    );
    expect(formatText(m, wall, now)).toBe(
      `${T} default/client capture-out  10.244.0.5:41000 -> 10.244.0.5:9090 => 127.0.0.1:15001 tcp`,
    );
    expect(JSON.parse(formatJson(m, wall, now))).toMatchObject({ srcName: 'default/client', dstName: 'default/client' });
  });

  it.each(cases)('%s: one text line, UTC with milliseconds, names beside addresses', (_type, m, line) => {
    expect(formatText(m, wall, now)).toBe(line);
  });

  it.each(cases)('%s: one JSON object with every field, the names and the time; bigints as decimal strings', (type, m) => {
    const out = formatJson(m, wall, now);
    expect(out).not.toContain('\n');
    const o = JSON.parse(out);
    const e = (m as { event: EventRecord }).event;
    expect(o).toEqual({ time: T, ...e });
    expect(o.type).toBe(type);
    for (const k of ['tsNs', 'netnsCookie', 'sockCookie']) expect(typeof o[k]).toBe('string');
    expect(o.sockCookie).toBe('77');
    for (const k of [
      'tsNs',
      'netnsCookie',
      'sockCookie',
      'type',
      'reason',
      'proto',
      'mode',
      'src',
      'srcPort',
      'dst',
      'dstPort',
      'to',
      'toPort',
      'errno',
      'pod',
      'srcName',
      'dstName',
      'toName',
    ]) {
      expect(o, k).toHaveProperty(k);
    }
  });

  it('lost notices: a text line saying how many and why, a JSON line of type lost', () => {
    expect(formatText({ lost: { reason: 'queue', count: 12 } }, wall, now)).toBe(
      '2026-12-04T05:31:03.500Z LOST 12 events: this monitor read too slowly',
    );
    expect(formatText({ lost: { reason: 'ring', count: 3 } }, wall, now)).toBe(
      '2026-12-04T05:31:03.500Z LOST 3 events: the ring buffer was full',
    );
    expect(JSON.parse(formatJson({ lost: { reason: 'ring', count: 3 } }, wall, now))).toEqual({
      type: 'lost',
      reason: 'ring',
      count: 3,
      time: '2026-12-04T05:31:03.500Z',
    });
  });

  it("the kernel's clock maps to the wall clock through process.hrtime (both CLOCK_MONOTONIC)", () => {
    const before = Date.now();
    const toWall = monotonicToWall();
    const t = toWall(process.hrtime.bigint()).getTime();
    expect(t).toBeGreaterThanOrEqual(before);
    expect(t).toBeLessThanOrEqual(Date.now());
  });
});

/** A client of the local API speaking the monitor op by hand: lines as parsed JSON. */
async function rawMonitor(socketPath: string, req: Record<string, unknown>) {
  const conn = net.createConnection(socketPath);
  await once(conn, 'connect');
  const lines: any[] = [];
  const waiters: Array<() => void> = [];
  let buf = '';
  conn.setEncoding('utf8');
  conn.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(buf.slice(0, nl)));
      buf = buf.slice(nl + 1);
    }
    for (const w of waiters.splice(0)) w();
  });
  conn.write(JSON.stringify({ op: 'monitor', ...req }) + '\n');
  const until = async (n: number) => {
    while (lines.length < n) await new Promise<void>((resolve) => waiters.push(resolve));
    return lines.slice(0, n);
  };
  return { conn, lines, until };
}

describe("the local API's monitor stream (a real unix socket)", () => {
  let server: LocalApiServer;
  let feed: FakeFeed;
  let hub: MonitorHub;
  let socketPath: string;

  beforeEach(async () => {
    socketPath = path.join(tmp, 'agent.sock');
    feed = new FakeFeed();
    hub = new MonitorHub(() => feed, cluster(tmp).names);
    server = new LocalApiServer(socketPath, { monitor: (req) => monitorStream(hub, req), status: () => ({ ready: true }) });
    await server.listen();
  });
  afterEach(async () => {
    hub.close();
    await server.close();
  });

  it('acknowledges, streams the events its filter passes, and unsubscribes when the client disconnects', async () => {
    const c = await rawMonitor(socketPath, { pod: 'default/client', type: 'lb-translate,lb-refuse' });
    expect(await c.until(1)).toEqual([{ ok: true, result: { monitoring: true } }]);
    expect(feed.running).toBe(true);
    feed.send(ev('lb-translate', { netnsCookie: BACKEND })); // another pod
    feed.send(ev('capture-out')); // another type
    feed.send(ev('lb-refuse', { dst: '10.96.0.53', dstPort: 53, proto: 'udp', errno: 111, reason: 'no-backend' }));
    const [, msg] = await c.until(2);
    expect(msg.event).toMatchObject({
      type: 'lb-refuse',
      pod: 'default/client',
      dstName: 'default/dns:53',
      errno: 111,
      netnsCookie: String(CLIENT),
    });
    const stopped = once(feed, 'stop');
    c.conn.destroy(); // the client dies
    await stopped;
    expect(hub.subscribers).toBe(0);
  });

  it('a bad filter is answered as an error and nothing stays subscribed; other ops on the socket still answer', async () => {
    const c = await rawMonitor(socketPath, { type: 'bogus' });
    const [answer] = await c.until(1);
    expect(answer.ok).toBe(false);
    expect(answer.error).toMatch(/unknown type "bogus"; valid types: lb-translate, /);
    expect([hub.subscribers, feed.starts]).toEqual([0, 0]);
    c.conn.destroy();
    expect(await callAgent(socketPath, { op: 'status' })).toEqual({ ready: true });
  });

  it('closing the server ends the streams it holds (the agent stopping does not wait for its monitors)', async () => {
    const c = await rawMonitor(socketPath, {});
    await c.until(1);
    const ended = once(c.conn, 'close');
    hub.close();
    await server.close();
    await ended;
    expect(feed.running).toBe(false);
  });
});

describe('sluice monitor (bin/sluice against an in-process agent API)', () => {
  let server: LocalApiServer;
  let feed: FakeFeed;
  let hub: MonitorHub;
  let configPath: string;
  const children: ChildProcess[] = [];

  beforeAll(() => {
    if (!fs.existsSync(SLUICE)) throw new Error(`${SLUICE} missing: run make all`);
  });
  beforeEach(async () => {
    feed = new FakeFeed();
    hub = new MonitorHub(() => feed, cluster(tmp).names);
    const socketPath = path.join(tmp, 'agent.sock');
    server = new LocalApiServer(socketPath, { monitor: (req) => monitorStream(hub, req) });
    await server.listen();
    configPath = path.join(tmp, 'sluice.yaml');
    // never the production defaults: the socket and state live in this test's directory
    fs.writeFileSync(configPath, `agent-socket: "${socketPath}"\nstate-dir: "${path.join(tmp, 'state')}"\n`);
  });
  afterEach(async () => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    hub.close();
    await server.close();
  });

  function start(args: string[]) {
    const child = spawn(SLUICE, ['monitor', '--config', configPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const lines = async (n: number) => {
      while (stdout.split('\n').filter(Boolean).length < n) {
        if (child.exitCode !== null) throw new Error(`sluice monitor exited ${child.exitCode}: ${stderr}`);
        await once(child.stdout!, 'data');
      }
      return stdout.split('\n').filter(Boolean);
    };
    return { child, exited, lines, err: () => stderr };
  }

  it('-o json prints one object per event with the resolved names; Ctrl-C ends it with exit 0 and the feed stops', async () => {
    const m = start(['-o', 'json', '--namespace', 'shop']);
    await once(feed, 'start');
    feed.send(ev('lb-translate', { dst: '10.96.0.10', dstPort: 8080, to: '10.244.0.7', toPort: 8080 }));
    feed.send(ev('lb-translate', { dst: '10.96.0.10', dstPort: 8080, to: '10.1.1.1', toPort: 8080 })); // no end in shop
    feed.send(
      ev('capture-in', {
        netnsCookie: BACKEND,
        mode: 'sidecar',
        src: '10.244.0.5',
        srcPort: 40000,
        dst: '10.244.0.7',
        dstPort: 8080,
      }),
    );
    const lines = (await m.lines(2)).map((l) => JSON.parse(l));
    expect(lines.map((l) => [l.type, l.pod, l.toName || l.srcName])).toEqual([
      ['lb-translate', 'default/client', 'shop/web-1'],
      ['capture-in', 'shop/web-1', 'default/client'],
    ]);
    expect(lines[0].time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const stopped = once(feed, 'stop');
    m.child.kill('SIGINT');
    expect(await m.exited).toBe(0);
    await stopped;
  });

  it('text output ends quietly with exit 0 when its reader goes away (sluice monitor | head -1)', async () => {
    const m = start([]);
    await once(feed, 'start');
    feed.send(ev('capture-out', { mode: 'ambient', dst: '10.96.0.10', dstPort: 8080, to: '127.0.0.1', toPort: 15001 }));
    const [line] = await m.lines(1);
    expect(line).toMatch(
      / default\/client capture-out {2}\? -> 10\.96\.0\.10:8080 \(default\/web:http\) => 127\.0\.0\.1:15001 tcp ambient$/,
    );
    m.child.stdout!.destroy(); // what head does after its line
    const stopped = once(feed, 'stop');
    // the next write finds the pipe closed (a few, as the kernel may take one more)
    for (let i = 0; i < 3 && m.child.exitCode === null; i++) feed.send(ev('capture-out'));
    expect(await m.exited).toBe(0);
    expect(m.err()).toBe('');
    await stopped;
  });

  it('usage errors exit 2 naming the valid types; an agent that is not running exits 1 saying so', async () => {
    const bad = start(['--type', 'lb-translate,nope']);
    expect(await bad.exited).toBe(2);
    expect(bad.err()).toBe(
      `sluice: --type "lb-translate,nope": unknown type "nope"; valid types: ${EVENT_TYPE_NAMES.join(', ')}\n`,
    );
    const pod = start(['--pod', 'client']);
    expect(await pod.exited).toBe(2);
    expect(pod.err()).toMatch(/--pod "client": expected NAMESPACE\/NAME or host/);
    expect(feed.starts).toBe(0);
    await server.close();
    const down = start([]);
    expect(await down.exited).toBe(1);
    expect(down.err()).toMatch(/^sluice: agent not reachable at .*agent\.sock \(ENOENT\): is it running\?\n$/);
  });

  it('the agent going away ends the monitor with exit 1', async () => {
    const m = start([]);
    await once(feed, 'start');
    feed.send(ev('bypass-out'));
    await m.lines(1); // attached: the acknowledgement came before it
    hub.close();
    await server.close();
    expect(await m.exited).toBe(1);
    expect(m.err()).toMatch(/the agent ended the monitor stream/);
  });
});
