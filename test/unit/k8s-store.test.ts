import { afterEach, describe, expect, test, vi } from 'vitest';
import { log } from '../../src/log';
import { ObjectStore, type ChangeEvent } from '../../src/k8s/store';
import type { K8sObject, Service } from '../../src/k8s/types';

function svc(name: string, clusterIP = '10.96.0.1', resourceVersion?: string, namespace = 'default'): Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace, ...(resourceVersion === undefined ? {} : { resourceVersion }) },
    spec: { clusterIP, ports: [{ port: 80 }] },
  };
}

function ns(name: string): K8sObject {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name } };
}

function recorder(store: ObjectStore): ChangeEvent[] {
  const events: ChangeEvent[] = [];
  store.on('change', (ev) => events.push(ev));
  return events;
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('ObjectStore', () => {
  test('upsert stores an object under its key and emits an upsert event', () => {
    const store = new ObjectStore();
    const events = recorder(store);
    const web = svc('web');
    expect(store.upsert(web)).toBe(true);
    expect(store.get('Service/default/web')).toBe(web);
    expect(events).toEqual([
      { type: 'upsert', kind: 'Service', key: 'Service/default/web', obj: web, old: undefined, revision: 1 },
    ]);
    expect(store.revision).toBe(1);
    expect(store.size).toBe(1);
  });

  test('upsert of a changed object reports the old one', () => {
    const store = new ObjectStore();
    const before = svc('web', '10.96.0.1');
    store.upsert(before);
    const events = recorder(store);
    const after = svc('web', '10.96.0.2');
    store.upsert(after);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ type: 'upsert', obj: after, old: before, revision: 2 });
  });

  test('upsert of an equal object differing only in resourceVersion emits nothing', () => {
    const store = new ObjectStore();
    store.upsert(svc('web', '10.96.0.1', '1'));
    const events = recorder(store);
    const newer = svc('web', '10.96.0.1', '2');
    expect(store.upsert(newer)).toBe(false);
    expect(events).toEqual([]);
    expect(store.revision).toBe(1);
    expect(store.get('Service/default/web')?.metadata.resourceVersion).toBe('2');
  });

  test('delete removes the object and emits a delete event with the old object', () => {
    const store = new ObjectStore();
    const web = svc('web');
    store.upsert(web);
    const events = recorder(store);
    expect(store.delete('Service/default/web')).toBe(true);
    expect(store.get('Service/default/web')).toBeUndefined();
    expect(events).toEqual([{ type: 'delete', kind: 'Service', key: 'Service/default/web', old: web, revision: 2 }]);
  });

  test('delete of an unknown key is a no-op', () => {
    const store = new ObjectStore();
    const events = recorder(store);
    expect(store.delete('Service/default/nope')).toBe(false);
    expect(events).toEqual([]);
    expect(store.revision).toBe(0);
  });

  test('list returns the objects of one kind sorted by key', () => {
    const store = new ObjectStore();
    store.upsert(svc('b'));
    store.upsert(svc('a', '10.96.0.1', undefined, 'zz'));
    store.upsert(svc('a'));
    store.upsert(ns('default'));
    expect(store.list('Service').map((s) => `${s.metadata.namespace}/${s.metadata.name}`)).toEqual([
      'default/a',
      'default/b',
      'zz/a',
    ]);
    expect(store.list('Namespace')).toHaveLength(1);
    expect(store.list('Pod')).toEqual([]);
  });

  test('list reflects later changes', () => {
    const store = new ObjectStore();
    store.upsert(svc('a'));
    expect(store.list('Service')).toHaveLength(1);
    store.upsert(svc('b'));
    expect(store.list('Service')).toHaveLength(2);
    store.delete('Service/default/a');
    expect(store.list('Service').map((s) => s.metadata.name)).toEqual(['b']);
  });

  test('replaceAll emits only the differences', () => {
    const store = new ObjectStore();
    store.replaceAll('f.yaml', [svc('keep'), svc('change', '10.96.0.1'), svc('gone')]);
    const events = recorder(store);
    store.replaceAll('f.yaml', [svc('keep'), svc('change', '10.96.0.2'), svc('new')]);
    expect(events.map((e) => `${e.type} ${e.key}`)).toEqual([
      'upsert Service/default/change',
      'delete Service/default/gone',
      'upsert Service/default/new',
    ]);
    expect(store.revision).toBe(6);
  });

  test('replaceAll with an unchanged set emits nothing, ignoring resourceVersion', () => {
    const store = new ObjectStore();
    store.replaceAll('f.yaml', [svc('a', '10.96.0.1', '1'), svc('b', '10.96.0.2', '1')]);
    const events = recorder(store);
    expect(store.replaceAll('f.yaml', [svc('b', '10.96.0.2', '9'), svc('a', '10.96.0.1', '9')])).toBe(0);
    expect(events).toEqual([]);
  });

  test('replaceAll applies the whole batch before listeners run', () => {
    const store = new ObjectStore();
    const seen: number[] = [];
    store.on('change', () => seen.push(store.list('Service').length));
    store.replaceAll('f.yaml', [svc('a'), svc('b'), svc('c')]);
    expect(seen).toEqual([3, 3, 3]);
  });

  test('replaceAll with an empty list withdraws everything the source supplied', () => {
    const store = new ObjectStore();
    store.replaceAll('a.yaml', [svc('a')]);
    store.replaceAll('b.yaml', [svc('b')]);
    store.replaceAll('a.yaml', []);
    expect(store.list('Service').map((s) => s.metadata.name)).toEqual(['b']);
    expect(store.sources()).toEqual(['b.yaml']);
  });

  test('replaceAll leaves objects of other sources alone', () => {
    const store = new ObjectStore();
    store.upsert(svc('direct'));
    store.replaceAll('a.yaml', [svc('a')]);
    store.replaceAll('a.yaml', [svc('a2')]);
    expect(store.list('Service').map((s) => s.metadata.name)).toEqual(['a2', 'direct']);
  });

  test('a key defined by two sources is won by the source sorting last, whatever the read order', () => {
    const warn = vi.spyOn(log, 'warn').mockImplementation(() => undefined);
    const first = new ObjectStore();
    first.replaceAll('/m/a.yaml', [svc('web', '10.96.0.1')]);
    first.replaceAll('/m/b.yaml', [svc('web', '10.96.0.2')]);
    const second = new ObjectStore();
    second.replaceAll('/m/b.yaml', [svc('web', '10.96.0.2')]);
    second.replaceAll('/m/a.yaml', [svc('web', '10.96.0.1')]);
    for (const store of [first, second]) {
      expect((store.get('Service/default/web') as Service).spec.clusterIP).toBe('10.96.0.2');
    }
    expect(warn).toHaveBeenCalledWith(
      expect.stringContaining('several sources'),
      expect.objectContaining({ key: 'Service/default/web', winner: '/m/b.yaml' }),
    );
  });

  test('withdrawing the winning source falls back to the other definition', () => {
    vi.spyOn(log, 'warn').mockImplementation(() => undefined);
    const store = new ObjectStore();
    store.replaceAll('/m/a.yaml', [svc('web', '10.96.0.1')]);
    store.replaceAll('/m/b.yaml', [svc('web', '10.96.0.2')]);
    const events = recorder(store);
    store.replaceAll('/m/b.yaml', []);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ type: 'upsert', key: 'Service/default/web' });
    expect((store.get('Service/default/web') as Service).spec.clusterIP).toBe('10.96.0.1');
  });

  test('the conflict warning is logged once, not on every re-read', () => {
    const warn = vi.spyOn(log, 'warn').mockImplementation(() => undefined);
    const store = new ObjectStore();
    store.replaceAll('/m/a.yaml', [svc('web')]);
    store.replaceAll('/m/b.yaml', [svc('web')]);
    store.replaceAll('/m/b.yaml', [svc('web')]);
    store.replaceAll('/m/a.yaml', [svc('web')]);
    expect(warn).toHaveBeenCalledTimes(1);
  });

  test('a duplicate key within one source keeps the later object and warns', () => {
    const warn = vi.spyOn(log, 'warn').mockImplementation(() => undefined);
    const store = new ObjectStore();
    store.replaceAll('f.yaml', [svc('web', '10.96.0.1'), svc('web', '10.96.0.2')]);
    expect((store.get('Service/default/web') as Service).spec.clusterIP).toBe('10.96.0.2');
    expect(warn).toHaveBeenCalledWith(expect.stringContaining('Duplicate'), expect.objectContaining({ source: 'f.yaml' }));
  });

  test('moving an identical object from one source to another emits nothing', () => {
    const store = new ObjectStore();
    store.replaceAll('a.yaml', [svc('web')]);
    const events = recorder(store);
    store.replaceAll('a.yaml', []);
    expect(events.map((e) => e.type)).toEqual(['delete']);
    events.length = 0;
    store.replaceAll('a.yaml', [svc('web')]);
    vi.spyOn(log, 'warn').mockImplementation(() => undefined);
    store.replaceAll('b.yaml', [svc('web')]);
    store.replaceAll('a.yaml', []);
    expect(events.map((e) => e.type)).toEqual(['upsert']);
  });

  test('delete withdraws only the given source', () => {
    vi.spyOn(log, 'warn').mockImplementation(() => undefined);
    const store = new ObjectStore();
    store.replaceAll('z.yaml', [svc('web', '10.96.0.9')]);
    store.upsert(svc('web', '10.96.0.1'), { source: 'api' });
    expect((store.get('Service/default/web') as Service).spec.clusterIP).toBe('10.96.0.9');
    store.delete('Service/default/web', { source: 'z.yaml' });
    expect((store.get('Service/default/web') as Service).spec.clusterIP).toBe('10.96.0.1');
    store.delete('Service/default/web', { source: 'api' });
    expect(store.get('Service/default/web')).toBeUndefined();
  });

  test('revision counts effective changes only', () => {
    const store = new ObjectStore();
    store.upsert(svc('a'));
    store.upsert(svc('a'));
    store.replaceAll('f', [svc('b'), svc('c')]);
    store.replaceAll('f', [svc('b'), svc('c')]);
    store.delete('Service/default/a');
    store.delete('Service/default/a');
    expect(store.revision).toBe(4);
  });

  test('once and off work for change listeners', () => {
    const store = new ObjectStore();
    const once = vi.fn();
    const removed = vi.fn();
    store.once('change', once);
    store.on('change', removed);
    store.off('change', removed);
    store.upsert(svc('a'));
    store.upsert(svc('b'));
    expect(once).toHaveBeenCalledTimes(1);
    expect(removed).not.toHaveBeenCalled();
  });
});
