import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test, vi, type MockInstance } from 'vitest';
import { DirectorySource, isManifestFileName } from '../../src/k8s/dir-source';
import { ObjectStore } from '../../src/k8s/store';
import type { Service } from '../../src/k8s/types';
import { computeFrontends } from '../../src/lb/model';
import { log } from '../../src/log';

/* Counts js-yaml parses, and lets a test make fs.watch fail as when inotify watches run out. */
const hooks = vi.hoisted(() => ({
  yamlParses: 0,
  failWatch: false,
  lastWatcher: undefined as import('node:fs').FSWatcher | undefined,
}));

vi.mock('js-yaml', async (importOriginal) => {
  const real = await importOriginal<typeof import('js-yaml')>();
  return {
    ...real,
    loadAll: (...args: Parameters<typeof real.loadAll>) => {
      hooks.yamlParses++;
      return real.loadAll(...args);
    },
  };
});

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  return {
    ...real,
    watch: (...args: Parameters<typeof real.watch>) => {
      if (hooks.failWatch)
        throw Object.assign(new Error('ENOSPC: System limit for number of file watchers reached'), { code: 'ENOSPC' });
      hooks.lastWatcher = real.watch(...args);
      return hooks.lastWatcher;
    },
  };
});

function serviceYaml(name: string, clusterIP: string, namespace = 'default'): string {
  return [
    'apiVersion: v1',
    'kind: Service',
    'metadata:',
    `  name: ${name}`,
    `  namespace: ${namespace}`,
    'spec:',
    `  clusterIP: ${clusterIP}`,
    '  ports:',
    '  - name: http',
    '    port: 80',
    '    targetPort: 8080',
    '',
  ].join('\n');
}

function clusterIPOf(store: ObjectStore, name: string, namespace = 'default'): string | undefined {
  return (store.get(`Service/${namespace}/${name}`) as Service | undefined)?.spec.clusterIP;
}

/** Resolves once cond(store) holds, re-checking on each change event; rejects after timeoutMs. */
function waitFor(store: ObjectStore, cond: (s: ObjectStore) => boolean, timeoutMs = 5000): Promise<void> {
  return new Promise((resolve, reject) => {
    if (cond(store)) return resolve();
    const timer = setTimeout(() => {
      store.off('change', onChange);
      reject(new Error('Timed out waiting for the store'));
    }, timeoutMs);
    const onChange = (): void => {
      if (!cond(store)) return;
      clearTimeout(timer);
      store.off('change', onChange);
      resolve();
    };
    store.on('change', onChange);
  });
}

let dir: string;
let store: ObjectStore;
let source: DirectorySource | undefined;
let warn: MockInstance<typeof log.warn>;
let debug: MockInstance<typeof log.debug>;

function write(name: string, text: string): void {
  writeFileSync(join(dir, name), text);
}

/** The safe way to update a manifest: write a temp file next to it, then rename over it. */
function replace(name: string, text: string): void {
  const tmp = join(dir, `.${name}.tmp`);
  writeFileSync(tmp, text);
  renameSync(tmp, join(dir, name));
}

async function startSource(opts: { debounceMs?: number; rescanMs?: number } = {}): Promise<DirectorySource> {
  source = new DirectorySource(dir, { debounceMs: 10, rescanMs: 0, ...opts });
  await source.start(store);
  return source;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-dir-source-'));
  store = new ObjectStore();
  hooks.failWatch = false;
  warn = vi.spyOn(log, 'warn').mockImplementation(() => undefined);
  debug = vi.spyOn(log, 'debug').mockImplementation(() => undefined);
  vi.spyOn(log, 'info').mockImplementation(() => undefined);
});

afterEach(async () => {
  await source?.stop();
  source = undefined;
  vi.restoreAllMocks();
  rmSync(dir, { recursive: true, force: true });
});

describe('isManifestFileName', () => {
  test('accepts yaml, yml and json files only, skipping hidden and temp files', () => {
    expect(['a.yaml', 'a.yml', 'a.json', 'svc.v2.yaml'].every(isManifestFileName)).toBe(true);
    expect(['.a.yaml', 'a.yaml~', 'a.yaml.tmp', 'a.tmp', 'a.txt', '.yaml', '..data', 'yaml'].some(isManifestFileName)).toBe(
      false,
    );
  });
});

describe('DirectorySource', () => {
  test('loads every yaml, yml and json file with multiple documents before start resolves', async () => {
    write('a.yaml', `${serviceYaml('a', '10.96.0.1')}---\n${serviceYaml('b', '10.96.0.2')}`);
    write('c.yml', serviceYaml('c', '10.96.0.3'));
    write('d.json', JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } }));
    const src = await startSource();
    expect(src.synced).toBe(true);
    expect(store.list('Service').map((s) => s.metadata.name)).toEqual(['a', 'b', 'c']);
    expect(store.get('Namespace/shop')).toBeDefined();
    expect(src.status()).toMatchObject({ synced: true, objects: 4, skippedDocuments: 0, watching: true });
    expect(src.lastSyncError).toBeUndefined();
  });

  test('reads Node objects too (the agent takes its zone from the one named like its node)', async () => {
    write(
      'nodes.yaml',
      [
        'apiVersion: v1\nkind: Node\nmetadata:\n  name: node-1\n  labels: {topology.kubernetes.io/zone: zone-a}\nstatus: {capacity: {cpu: "2"}}',
        'apiVersion: v1\nkind: Node\nmetadata: {name: node-2}',
      ].join('\n---\n'),
    );
    await startSource();
    expect(store.list('Node').map((n) => [n.metadata.name, n.metadata.labels])).toEqual([
      ['node-1', { 'topology.kubernetes.io/zone': 'zone-a' }],
      ['node-2', undefined],
    ]);
    expect(store.get('Node/node-1')).toBeDefined();
  });

  test('ignores hidden files, temp files, other extensions and subdirectories', async () => {
    write('.hidden.yaml', serviceYaml('hidden', '10.96.0.1'));
    write('edit.yaml~', serviceYaml('backup', '10.96.0.2'));
    write('half.yaml.tmp', serviceYaml('temp', '10.96.0.3'));
    write('notes.txt', serviceYaml('text', '10.96.0.4'));
    mkdirSync(join(dir, 'sub'));
    writeFileSync(join(dir, 'sub', 'nested.yaml'), serviceYaml('nested', '10.96.0.5'));
    mkdirSync(join(dir, 'dir.yaml'));
    write('real.yaml', serviceYaml('real', '10.96.0.6'));
    await startSource();
    expect(store.list('Service').map((s) => s.metadata.name)).toEqual(['real']);
  });

  test('expands List documents into their items', async () => {
    write(
      'list.json',
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [
          { apiVersion: 'v1', kind: 'Service', metadata: { name: 'a' }, spec: { clusterIP: '10.96.0.1' } },
          { apiVersion: 'v1', kind: 'Service', metadata: { name: 'b' }, spec: { clusterIP: '10.96.0.2' } },
        ],
      }),
    );
    await startSource();
    expect(store.list('Service')).toHaveLength(2);
  });

  test('skips a malformed document with a warning naming file and document, and serves the rest', async () => {
    const bad = serviceYaml('bad', '10.96.0.2').replace('port: 80', 'port: 99999');
    write('a.yaml', `${serviceYaml('good1', '10.96.0.1')}---\n${bad}---\n${serviceYaml('good2', '10.96.0.3')}`);
    write('b.yaml', serviceYaml('other', '10.96.0.4'));
    const src = await startSource();
    expect(store.list('Service').map((s) => s.metadata.name)).toEqual(['good1', 'good2', 'other']);
    expect(src.skippedDocuments).toBe(1);
    expect(warn).toHaveBeenCalledWith(
      'Skipping malformed document',
      expect.objectContaining({ file: join(dir, 'a.yaml'), document: 2, err: expect.stringContaining('spec.ports[0].port') }),
    );
  });

  test('names the list item of a malformed object inside a List', async () => {
    write(
      'l.yaml',
      'apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: ok}\n- apiVersion: v1\n  kind: Service\n  metadata: {}\n',
    );
    await startSource();
    expect(store.list('Service')).toHaveLength(1);
    expect(warn).toHaveBeenCalledWith('Skipping malformed document', expect.objectContaining({ document: 1, item: 2 }));
  });

  test('ignores unsupported kinds at debug level without counting them as skipped', async () => {
    write('mixed.yaml', `apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n---\n${serviceYaml('a', '10.96.0.1')}---\n`);
    const src = await startSource();
    expect(store.size).toBe(1);
    expect(src.skippedDocuments).toBe(0);
    expect(src.status().ignoredDocuments).toBe(1);
    expect(warn).not.toHaveBeenCalled();
    expect(debug).toHaveBeenCalledWith('Ignoring object of unsupported kind', expect.objectContaining({ kind: 'ConfigMap' }));
  });

  test('picks up a new file through the directory watch', async () => {
    await startSource();
    write('new.yaml', serviceYaml('new', '10.96.0.9'));
    await waitFor(store, () => clusterIPOf(store, 'new') === '10.96.0.9');
  });

  test('picks up a file replaced by rename of a temp file', async () => {
    write('svc.yaml', serviceYaml('web', '10.96.0.1'));
    await startSource();
    replace('svc.yaml', serviceYaml('web', '10.96.0.2'));
    await waitFor(store, () => clusterIPOf(store, 'web') === '10.96.0.2');
  });

  test('picks up an in-place edit', async () => {
    write('svc.yaml', serviceYaml('web', '10.96.0.1'));
    await startSource();
    write('svc.yaml', serviceYaml('web', '10.96.0.3'));
    await waitFor(store, () => clusterIPOf(store, 'web') === '10.96.0.3');
  });

  test('withdraws the objects of a deleted file', async () => {
    write('a.yaml', serviceYaml('a', '10.96.0.1'));
    write('b.yaml', serviceYaml('b', '10.96.0.2'));
    await startSource();
    unlinkSync(join(dir, 'a.yaml'));
    await waitFor(store, () => store.get('Service/default/a') === undefined);
    expect(store.list('Service').map((s) => s.metadata.name)).toEqual(['b']);
  });

  test('keeps the objects of a file that stops parsing as YAML, until it parses again', async () => {
    write('svc.yaml', `${serviceYaml('a', '10.96.0.1')}---\n${serviceYaml('b', '10.96.0.2')}`);
    const src = await startSource();
    const events: string[] = [];
    store.on('change', (ev) => events.push(`${ev.type} ${ev.key}`));
    replace('svc.yaml', `${serviceYaml('a', '10.96.0.1')}---\nspec: [unclosed\n`);
    await src.rescan();
    expect(events).toEqual([]);
    expect(store.list('Service')).toHaveLength(2);
    expect(src.lastSyncError).toMatch(/^Cannot parse ".*svc\.yaml": /);
    expect(src.status().files[0]).toMatchObject({ objects: 2, error: expect.any(String) });
    expect(warn).toHaveBeenCalledWith(expect.stringContaining('keeping the objects'), expect.objectContaining({ kept: 2 }));

    replace('svc.yaml', serviceYaml('a', '10.96.0.1'));
    await waitFor(store, () => store.get('Service/default/b') === undefined);
    expect(src.lastSyncError).toBeUndefined();
  });

  test('keeps the objects of a JSON file with a syntax error', async () => {
    write('ns.json', JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } }));
    const src = await startSource();
    replace('ns.json', '{"apiVersion": "v1", "kind": ');
    await src.rescan();
    expect(store.get('Namespace/shop')).toBeDefined();
    expect(src.lastSyncError).toContain('ns.json');
  });

  test('serves the other files when one is not valid YAML from the start', async () => {
    write('a.yaml', 'key: [1, 2\n');
    write('b.yaml', serviceYaml('b', '10.96.0.2'));
    const src = await startSource();
    expect(store.list('Service').map((s) => s.metadata.name)).toEqual(['b']);
    expect(src.lastSyncError).toContain('a.yaml');
  });

  test('lets the file sorting last win when two files define the same object', async () => {
    write('20-override.yaml', serviceYaml('web', '10.96.0.2'));
    write('10-base.yaml', serviceYaml('web', '10.96.0.1'));
    await startSource();
    expect(clusterIPOf(store, 'web')).toBe('10.96.0.2');
    expect(warn).toHaveBeenCalledWith(
      expect.stringContaining('several sources'),
      expect.objectContaining({ key: 'Service/default/web' }),
    );
    unlinkSync(join(dir, '20-override.yaml'));
    await waitFor(store, () => clusterIPOf(store, 'web') === '10.96.0.1');
  });

  test('does not re-parse files whose mtime, size and inode are unchanged', async () => {
    write('a.yaml', serviceYaml('a', '10.96.0.1'));
    write('b.yaml', serviceYaml('b', '10.96.0.2'));
    const src = await startSource();
    const parsesAfterStart = hooks.yamlParses;
    await src.rescan();
    await src.rescan();
    expect(hooks.yamlParses).toBe(parsesAfterStart);
    replace('b.yaml', serviceYaml('b', '10.96.0.3'));
    await src.rescan();
    expect(hooks.yamlParses).toBe(parsesAfterStart + 1);
  });

  test('follows a ConfigMap-style volume that swaps its ..data symlink', async () => {
    mkdirSync(join(dir, '..2024_01'));
    writeFileSync(join(dir, '..2024_01', 'svc.yaml'), serviceYaml('web', '10.96.0.1'));
    symlinkSync('..2024_01', join(dir, '..data'));
    symlinkSync(join('..data', 'svc.yaml'), join(dir, 'svc.yaml'));
    await startSource();
    expect(clusterIPOf(store, 'web')).toBe('10.96.0.1');

    mkdirSync(join(dir, '..2024_02'));
    writeFileSync(join(dir, '..2024_02', 'svc.yaml'), serviceYaml('web', '10.96.0.2'));
    symlinkSync('..2024_02', join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
    await waitFor(store, () => clusterIPOf(store, 'web') === '10.96.0.2');
  });

  test('falls back to the periodic rescan when fs.watch cannot be created', async () => {
    hooks.failWatch = true;
    const src = await startSource({ rescanMs: 30 });
    expect(src.status().watching).toBe(false);
    expect(warn).toHaveBeenCalledWith(
      expect.stringContaining('periodic rescan'),
      expect.objectContaining({ err: expect.stringContaining('ENOSPC') }),
    );
    write('late.yaml', serviceYaml('late', '10.96.0.7'));
    await waitFor(store, () => store.get('Service/default/late') !== undefined);
    expect(warn.mock.calls.filter(([msg]) => String(msg).includes('Cannot watch'))).toHaveLength(1);
  });

  test('watches again at the next rescan once fs.watch works', async () => {
    hooks.failWatch = true;
    const src = await startSource({ rescanMs: 20 });
    hooks.failWatch = false;
    await vi.waitFor(() => expect(src.status().watching).toBe(true), { timeout: 5000 });
  });

  test('falls back to the periodic rescan after a watcher error event', async () => {
    hooks.lastWatcher = undefined;
    const src = await startSource({ rescanMs: 60_000 });
    const watcher = hooks.lastWatcher as import('node:fs').FSWatcher | undefined;
    expect(watcher).toBeDefined();
    watcher?.emit('error', new Error('EMFILE'));
    expect(src.status().watching).toBe(false);
    expect(warn).toHaveBeenCalledWith(expect.stringContaining('periodic rescan'), expect.objectContaining({ err: 'EMFILE' }));
  });

  test('rejects start when the directory does not exist', async () => {
    const missing = new DirectorySource(join(dir, 'missing'), { rescanMs: 0 });
    await expect(missing.start(store)).rejects.toThrow(/Cannot read manifest directory .*missing.*ENOENT/);
    expect(missing.synced).toBe(false);
  });

  test('keeps loaded objects when the directory becomes unreadable', async () => {
    const inner = join(dir, 'manifests');
    mkdirSync(inner);
    writeFileSync(join(inner, 'a.yaml'), serviceYaml('a', '10.96.0.1'));
    source = new DirectorySource(inner, { debounceMs: 10, rescanMs: 0 });
    await source.start(store);
    rmSync(inner, { recursive: true });
    await expect(source.rescan()).rejects.toThrow(/ENOENT/);
    expect(store.size).toBe(1);
    expect(source.lastSyncError).toMatch(/Cannot read manifest directory/);
  });

  test('stop closes the watch so later changes are not applied', async () => {
    const src = await startSource();
    await src.stop();
    expect(src.synced).toBe(false);
    write('after.yaml', serviceYaml('after', '10.96.0.8'));
    await new Promise((r) => setTimeout(r, 100)); // a negative check has no event to wait for
    expect(store.size).toBe(0);
  });

  test('rejects negative or non-finite durations', () => {
    expect(() => new DirectorySource(dir, { debounceMs: -1 })).toThrow(RangeError);
    expect(() => new DirectorySource(dir, { rescanMs: Number.NaN })).toThrow(/rescanMs/);
  });

  test('refuses to start twice', async () => {
    const src = await startSource();
    await expect(src.start(store)).rejects.toThrow(/already started/);
  });
});

describe('DirectorySource at scale', () => {
  test('loads 10,000 Services and 10,000 EndpointSlices from one file and computes their frontends', async () => {
    const services = 10_000;
    const endpointsPerSlice = 5;
    const docs: string[] = [];
    for (let i = 0; i < services; i++) {
      const namespace = `ns-${i % 50}`;
      const endpoints: string[] = [];
      for (let j = 0; j < endpointsPerSlice; j++) {
        const k = i * endpointsPerSlice + j;
        endpoints.push(
          `- addresses: ["10.244.${(k >> 8) & 255}.${k & 255}"]\n  conditions: {ready: true}\n  nodeName: node-${k % 7}`,
        );
      }
      docs.push(
        serviceYaml(`svc-${i}`, `10.96.${i >> 8}.${i & 255}`, namespace),
        [
          'apiVersion: discovery.k8s.io/v1',
          'kind: EndpointSlice',
          'metadata:',
          `  name: svc-${i}-abcde`,
          `  namespace: ${namespace}`,
          '  labels:',
          `    kubernetes.io/service-name: svc-${i}`,
          'addressType: IPv4',
          'endpoints:',
          ...endpoints,
          'ports:',
          '- name: http',
          '  port: 8080',
          '  protocol: TCP',
          '',
        ].join('\n'),
      );
    }
    write('cluster.yaml', docs.join('---\n'));

    const loadStart = performance.now();
    const src = await startSource();
    const loadMs = performance.now() - loadStart;
    expect(store.list('Service')).toHaveLength(services);
    expect(store.list('EndpointSlice')).toHaveLength(services);
    expect(src.skippedDocuments).toBe(0);

    const computeStart = performance.now();
    const frontends = computeFrontends(store.list('Service'), store.list('EndpointSlice'));
    const computeMs = performance.now() - computeStart;
    expect(frontends).toHaveLength(services);
    expect(frontends.reduce((n, f) => n + f.backends.length, 0)).toBe(services * endpointsPerSlice);

    console.log(`scale: load ${loadMs.toFixed(0)} ms, computeFrontends ${computeMs.toFixed(0)} ms`);
  }, 120_000);
});
