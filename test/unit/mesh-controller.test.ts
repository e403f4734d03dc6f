/* The mesh controller re-decides only what a change can affect: a Pod its own registrations, a
 * Namespace the registrations in it, and a Service or EndpointSlice nothing. The kernel side is a
 * recording stand-in for the Enroller and for socket-LB's per-pod opt-out, which the controller
 * decides with each pod (the kernel suites cover the real ones).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PodRegistry, type PodRegistration } from '../../src/agent/pod-registry';
import type { Policy } from '../../src/bpf/layout';
import { ObjectStore } from '../../src/k8s/store';
import { parseObject } from '../../src/k8s/validate';
import { setLogLevel } from '../../src/log';
import { MeshController, readDecisions } from '../../src/mesh/controller';
import type { Enroller } from '../../src/mesh/enroller';

setLogLevel('error');

class RecordingEnroller {
  readonly programmedBy = new Map<string, Policy>();
  readonly calls: string[] = [];
  programmed(cookie: string): Policy | undefined {
    return this.programmedBy.get(cookie);
  }
  enrol(t: { netnsCookie: string }, p: Policy): void {
    this.calls.push(`enrol ${t.netnsCookie} ${p.mode}`);
    this.programmedBy.set(t.netnsCookie, p);
  }
  release(t: { netnsCookie: string }): boolean {
    this.calls.push(`release ${t.netnsCookie}`);
    return this.programmedBy.delete(t.netnsCookie);
  }
}

function registration(name: string, namespace: string, cookie: string): PodRegistration {
  return {
    containerId: `c-${name}`,
    ifName: 'eth0',
    namespace,
    name,
    uid: `u-${name}`,
    ips: ['10.1.0.' + cookie],
    netnsCookie: cookie,
    netnsPath: `/proc/self/ns/net`,
    network: 'n',
    createdAt: '',
  };
}

const obj = (o: object) => parseObject(o);
const ns = (name: string, labels: Record<string, string> = {}) =>
  obj({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });
const pod = (name: string, namespace: string, labels: Record<string, string> = {}, annotations: Record<string, string> = {}) =>
  obj({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels, annotations },
    spec: { nodeName: 'n1', containers: [{ name: 'app' }] },
  });

/** What the controller asks of socket-LB's opt-out: the annotation it saw per call, and forgets. */
class RecordingOptOut {
  readonly calls: string[] = [];
  apply(t: { netnsCookie: string }, p: { metadata: { annotations?: Record<string, string> } } | undefined): boolean {
    this.calls.push(`apply ${t.netnsCookie} ${p?.metadata.annotations?.['socket-lb.sluice.io/disabled'] ?? '-'}`);
    return false;
  }
  forget(cookie: string): void {
    this.calls.push(`forget ${cookie}`);
  }
}

describe('MeshController', () => {
  let dir: string;
  let store: ObjectStore;
  let registry: PodRegistry;
  let enroller: RecordingEnroller;
  let mesh: MeshController;
  let optOut: RecordingOptOut;

  beforeEach(() => {
    optOut = new RecordingOptOut();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mesh-'));
    store = new ObjectStore();
    registry = new PodRegistry(dir);
    enroller = new RecordingEnroller();
    for (const o of [
      ns('amb', { 'istio.io/dataplane-mode': 'ambient' }),
      ns('plain'),
      pod('a', 'amb'),
      pod('b', 'amb'),
      pod('p', 'plain'),
    ])
      store.upsert(o);
    for (const e of [registration('a', 'amb', '1'), registration('b', 'amb', '2'), registration('p', 'plain', '3')])
      registry.put(e);
    mesh = new MeshController({
      store,
      registry,
      enroller: enroller as unknown as Enroller,
      lbOptOut: optOut,
      mode: { excludeNamespaces: [] },
      decisionsFile: path.join(dir, 'decisions.json'),
    });
    store.on('change', (ev) => mesh.changed(ev));
    mesh.markAll();
    mesh.flush();
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('decides every registration at start and keeps the decisions apart from the registrations', () => {
    expect(enroller.calls.sort()).toEqual(['enrol 1 ambient', 'enrol 2 ambient']);
    expect(readDecisions(path.join(dir, 'decisions.json'))).toMatchObject({
      'c-a/eth0': { mode: 'ambient', rule: expect.stringContaining('namespace label') },
      'c-p/eth0': { mode: 'none' },
    });
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'endpoints', 'c-a_eth0.json'), 'utf8')).decision).toBeUndefined();
  });

  it('a Service or EndpointSlice change re-decides no pod', () => {
    store.upsert(
      obj({
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 's', namespace: 'amb' },
        spec: { clusterIP: '10.96.0.1', ports: [{ port: 80 }] },
      }),
    );
    store.upsert(
      obj({
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { name: 's-1', namespace: 'amb', labels: { 'kubernetes.io/service-name': 's' } },
        addressType: 'IPv4',
        endpoints: [],
      }),
    );
    expect(mesh.flush()).toBe(0);
  });

  it('a Pod change re-decides that pod only; a Namespace change the pods in it only', () => {
    store.upsert(pod('a', 'amb', { 'istio.io/dataplane-mode': 'none' }));
    expect(mesh.flush()).toBe(1);
    expect(enroller.calls.at(-1)).toBe('release 1');
    store.upsert(ns('plain', { 'istio.io/dataplane-mode': 'ambient' }));
    expect(mesh.flush()).toBe(1);
    expect(enroller.calls.at(-1)).toBe('enrol 3 ambient');
  });

  it('DEL releases the pod and forgets its decision', () => {
    const a = registry.get('c-a', 'eth0')!;
    registry.remove(a.containerId, a.ifName);
    mesh.removed(a);
    expect(enroller.calls.at(-1)).toBe('release 1');
    expect(readDecisions(path.join(dir, 'decisions.json'))['c-a/eth0']).toBeUndefined();
    expect(optOut.calls.at(-1)).toBe('forget 1');
  });

  it('socket-LB opt-out is decided with the pod: at start, when its Pod changes (annotation live), never for another pod', () => {
    expect(optOut.calls.sort()).toEqual(['apply 1 -', 'apply 2 -', 'apply 3 -']);
    optOut.calls.length = 0;
    store.upsert(pod('p', 'plain', {}, { 'socket-lb.sluice.io/disabled': 'true' }));
    expect(mesh.flush()).toBe(1);
    expect(optOut.calls).toEqual(['apply 3 true']);
    store.upsert(
      obj({
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 's', namespace: 'plain' },
        spec: { clusterIP: '10.96.0.1', ports: [{ port: 80 }] },
      }),
    );
    expect(mesh.flush()).toBe(0);
    expect(optOut.calls).toEqual(['apply 3 true']);
  });
});
