import {
  chmodSync,
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test, vi, type MockInstance } from 'vitest';
import { CniInstaller, type CniInstallOptions } from '../../src/cni/install';
import { sluiceCniEntry } from '../../src/cni/install-config';
import { log } from '../../src/log';

/* Lets a test make fs.watch fail, as when inotify watches run out, to exercise the poll alone. */
const hooks = vi.hoisted(() => ({ failWatch: false }));

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  return {
    ...real,
    watch: (...args: Parameters<typeof real.watch>) => {
      if (hooks.failWatch)
        throw Object.assign(new Error('ENOSPC: System limit for number of file watchers reached'), { code: 'ENOSPC' });
      return real.watch(...args);
    },
  };
});

const ENTRY = { type: 'sluice-cni', agentSocket: '/var/run/sluice/agent.sock' };

/** A Calico-like primary conflist, hand-formatted, with a 64-bit integer JSON.parse cannot hold. */
const PRIMARY_TEXT = `{
  "name": "k8s-pod-network",
  "cniVersion": "0.3.1",
  "disableCheck": true,
  "plugins": [
    {
      "type": "calico",
      "mtu": 0,
      "ipam": {"type": "calico-ipam", "blockId": 18446744073709551615},
      "kubernetes": { "kubeconfig": "/etc/cni/net.d/calico-kubeconfig" }
    },
    {
      "type": "portmap",
      "snat": true,
      "capabilities": {"portMappings": true}
    }
  ]
}
`;

/** A flannel-like single-plugin .conf. */
const SINGLE_TEXT = `{
  "name": "cbr0",
  "cniVersion": "0.4.0",
  "type": "flannel",
  "delegate": {
    "hairpinMode": true,
    "isDefaultGateway": true
  }
}
`;

function conflist(name: string, ...types: string[]): string {
  return JSON.stringify({ name, cniVersion: '1.0.0', plugins: types.map((type) => ({ type })) }, null, 2) + '\n';
}

let root: string;
let confDir: string;
let binDir: string;
let backupDir: string;
let pluginBinary: string;
let installers: CniInstaller[];
let infoSpy: MockInstance<typeof log.info>;
let warnSpy: MockInstance<typeof log.warn>;

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'sluice-cni-install-'));
  confDir = join(root, 'net.d');
  binDir = join(root, 'bin');
  backupDir = join(root, 'state');
  pluginBinary = join(root, 'build-sluice-cni');
  mkdirSync(confDir);
  mkdirSync(binDir);
  writeFileSync(pluginBinary, '#!/bin/sh\necho sluice-cni v1\n');
  installers = [];
  hooks.failWatch = false;
  infoSpy = vi.spyOn(log, 'info').mockImplementation(() => undefined);
  warnSpy = vi.spyOn(log, 'warn').mockImplementation(() => undefined);
  vi.spyOn(log, 'error').mockImplementation(() => undefined);
  vi.spyOn(log, 'debug').mockImplementation(() => undefined);
});

afterEach(() => {
  for (const installer of installers) installer.stop();
  vi.restoreAllMocks();
  rmSync(root, { recursive: true, force: true });
});

function installer(opts: Partial<CniInstallOptions> = {}): CniInstaller {
  const made = new CniInstaller({
    confDir,
    binDir,
    backupDir,
    pluginBinary,
    exclusive: false,
    pluginConf: ENTRY,
    pollMs: 100,
    ...opts,
  });
  installers.push(made);
  return made;
}

function conf(name: string): string {
  return join(confDir, name);
}

function write(name: string, text: string): void {
  writeFileSync(conf(name), text);
}

/** Writes as a careful primary CNI does: a temp file renamed into place. */
function rewrite(name: string, text: string): void {
  const temp = join(confDir, `.${name}.primary-tmp`);
  writeFileSync(temp, text);
  renameSync(temp, conf(name));
}

function readJson(name: string): Record<string, unknown> {
  return JSON.parse(readFileSync(conf(name), 'utf8')) as Record<string, unknown>;
}

function pluginTypes(name: string): string[] {
  return (readJson(name).plugins as { type: string }[]).map((p) => p.type);
}

/** Content, inode and mtime: what must stay the same when a file is left untouched. */
function identity(file: string): { content: string; ino: number; mtimeMs: number; mode: number } {
  const st = statSync(file);
  return { content: readFileSync(file, 'latin1'), ino: st.ino, mtimeMs: st.mtimeMs, mode: st.mode };
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function hasEntryLast(name: string): boolean {
  try {
    const plugins = readJson(name).plugins as Record<string, unknown>[];
    return (
      plugins.filter((p) => p.type === 'sluice-cni').length === 1 &&
      JSON.stringify(plugins[plugins.length - 1]) === JSON.stringify(ENTRY)
    );
  } catch {
    return false;
  }
}

function repairs(): unknown[][] {
  return infoSpy.mock.calls.filter((call) => call[0] === 'CNI config repaired');
}

describe('choosing the file the runtime would load', () => {
  test('picks the first valid config by byte order among .conflist, .conf and .json', () => {
    write('20-b.conflist', conflist('b', 'bridge'));
    write('10-a.json', conflist('a', 'bridge'));
    write('10-A.conf', JSON.stringify({ name: 'A', type: 'bridge' }));
    expect(installer().status().file).toBe(conf('10-A.conf'));
    unlinkSync(conf('10-A.conf'));
    expect(installer().status().file).toBe(conf('10-a.json'));
    unlinkSync(conf('10-a.json'));
    expect(installer().status().file).toBe(conf('20-b.conflist'));
  });

  test('skips invalid JSON, configs libcni rejects, other extensions, backups and directories', () => {
    write('01-broken.conflist', '{"name": "broken", "plugins": [');
    write('02-noname.conflist', JSON.stringify({ plugins: [{ type: 'bridge' }] }));
    write('03-empty.conflist', JSON.stringify({ name: 'empty', plugins: [] }));
    write('04-notype.conf', JSON.stringify({ name: 'x', bridge: 'br0' }));
    write('05-untyped-plugin.json', JSON.stringify({ name: 'x', plugins: [{ bridge: 'br0' }] }));
    write('.00-hidden.conflist.swp', conflist('swap', 'bridge'));
    write('00-readme.txt', conflist('txt', 'bridge'));
    write('00-old.conflist.sluice_bak', conflist('old', 'bridge'));
    mkdirSync(conf('00-dir.conflist'));
    write('50-good.conflist', conflist('good', 'bridge'));
    expect(installer().status()).toMatchObject({ installed: false, file: conf('50-good.conflist') });
  });

  test('a dot file with a config extension counts like any other: libcni lists it (ConfFiles)', () => {
    write('10-calico.conflist', PRIMARY_TEXT);
    write('.05-hidden.conflist', conflist('hidden', 'bridge'));
    expect(installer().status()).toMatchObject({ installed: false, file: conf('.05-hidden.conflist') });
  });

  test('reports why when no file is loadable', () => {
    write('10-broken.conflist', '{ not json');
    const status = installer().status();
    expect(status.installed).toBe(false);
    expect(status.reason).toContain('no loadable CNI config');
    expect(status.reason).toContain('10-broken.conflist');
  });

  test('confFileName pins the file even when another sorts first', () => {
    write('10-first.conflist', conflist('first', 'bridge'));
    write('20-pinned.conflist', conflist('pinned', 'ptp'));
    const first = readFileSync(conf('10-first.conflist'), 'utf8');
    const inst = installer({ confFileName: '20-pinned.conflist' });
    inst.install();
    expect(inst.status()).toEqual({ installed: true, file: conf('20-pinned.conflist') });
    expect(pluginTypes('20-pinned.conflist')).toEqual(['ptp', 'sluice-cni']);
    expect(readFileSync(conf('10-first.conflist'), 'utf8')).toBe(first);
  });

  test('a pinned file that does not exist yet is waited for, then installed into', async () => {
    write('10-first.conflist', conflist('first', 'bridge'));
    const inst = installer({ confFileName: '20-pinned.conflist' });
    inst.install();
    expect(inst.status()).toMatchObject({ installed: false });
    expect(inst.status().reason).toContain('waiting for CNI config');
    inst.watch();
    rewrite('20-pinned.conflist', conflist('pinned', 'ptp'));
    await waitFor('the entry in the pinned file', () => inst.status().installed);
    expect(pluginTypes('20-pinned.conflist')).toEqual(['ptp', 'sluice-cni']);
    expect(pluginTypes('10-first.conflist')).toEqual(['bridge']);
  });

  test('a missing confDir is reported, not created, and installed into once the primary creates it', async () => {
    rmSync(confDir, { recursive: true });
    const inst = installer();
    inst.install();
    expect(existsSync(confDir)).toBe(false);
    expect(inst.status()).toMatchObject({ installed: false });
    expect(inst.status().reason).toMatch(/CNI config directory .* does not exist/);
    inst.watch();
    mkdirSync(confDir);
    rewrite('10-calico.conflist', PRIMARY_TEXT);
    await waitFor('the entry once the directory exists', () => hasEntryLast('10-calico.conflist'));
    expect(inst.status()).toEqual({ installed: true, file: conf('10-calico.conflist') });
  });
});

describe('install', () => {
  test('appends the entry last and keeps the other entries and top-level fields', () => {
    write('10-calico.conflist', PRIMARY_TEXT);
    const inst = installer();
    inst.install();
    const before = JSON.parse(PRIMARY_TEXT) as { plugins: unknown[] };
    expect(readJson('10-calico.conflist')).toEqual({ ...before, plugins: [...before.plugins, ENTRY] });
    expect(inst.status()).toEqual({ installed: true, file: conf('10-calico.conflist') });
  });

  test('edits the text: the other entries keep their bytes, including integers JSON.parse cannot hold', () => {
    write('10-calico.conflist', PRIMARY_TEXT);
    installer().install();
    const after = readFileSync(conf('10-calico.conflist'), 'utf8');
    const cut = PRIMARY_TEXT.lastIndexOf('\n  ]'); // the end of the portmap entry
    expect(after.startsWith(PRIMARY_TEXT.slice(0, cut))).toBe(true);
    expect(after.endsWith(PRIMARY_TEXT.slice(cut))).toBe(true);
    expect(after).toContain('"blockId": 18446744073709551615');
  });

  test('a second install writes nothing (config and binary keep inode and mtime)', () => {
    write('10-calico.conflist', PRIMARY_TEXT);
    const inst = installer();
    inst.install();
    const config = identity(conf('10-calico.conflist'));
    const binary = identity(join(binDir, 'sluice-cni'));
    const saved = readdirSync(backupDir).map((n) => identity(join(backupDir, n)));
    inst.install();
    installer().install(); // a restarted agent too
    expect(identity(conf('10-calico.conflist'))).toEqual(config);
    expect(identity(join(binDir, 'sluice-cni'))).toEqual(binary);
    expect(readdirSync(backupDir).map((n) => identity(join(backupDir, n)))).toEqual(saved);
  });

  test('an outdated sluice entry is replaced in place, other entries untouched', () => {
    write(
      '10-net.conflist',
      JSON.stringify({ name: 'net', plugins: [{ type: 'bridge' }, { type: 'sluice-cni', agentSocket: '/old.sock' }] }, null, 2),
    );
    installer().install();
    expect(readJson('10-net.conflist')).toEqual({ name: 'net', plugins: [{ type: 'bridge' }, ENTRY] });
  });

  test('a sluice entry followed by other plugins is moved last, and duplicates are dropped', () => {
    const plugins = [{ type: 'sluice-cni' }, { type: 'bridge', bridge: 'cni0' }, ENTRY, { type: 'portmap' }];
    write('10-net.conflist', JSON.stringify({ name: 'net', cniVersion: '1.0.0', plugins }, null, 2));
    const inst = installer();
    expect(inst.status().reason).toContain('2 sluice-cni entries');
    inst.install();
    expect(readJson('10-net.conflist')).toEqual({ name: 'net', cniVersion: '1.0.0', plugins: [plugins[1], plugins[3], ENTRY] });
    expect(inst.status().installed).toBe(true);
  });

  test('a one-line conflist stays on one line', () => {
    write('10-net.conflist', '{"name":"net","plugins":[{"type":"bridge"}, {"type":"portmap"}]}');
    installer().install();
    expect(readFileSync(conf('10-net.conflist'), 'utf8')).toBe(
      '{"name":"net","plugins":[{"type":"bridge"}, {"type":"portmap"}, {"type":"sluice-cni","agentSocket":"/var/run/sluice/agent.sock"}]}',
    );
  });

  test('strings holding brackets, braces and escaped quotes do not confuse the text edit', () => {
    const text = '{"name": "n]}", "plugins": [{"type": "bridge", "args": "a]b\\"},{[\\u005d"}], "x": ["plugins"]}\n';
    write('10-net.conflist', text);
    const inst = installer();
    inst.install();
    expect(readJson('10-net.conflist')).toEqual({
      ...(JSON.parse(text) as object),
      plugins: [{ type: 'bridge', args: 'a]b"},{[]' }, ENTRY],
    });
    inst.uninstall();
    expect(readFileSync(conf('10-net.conflist'), 'utf8')).toBe(text);
  });

  test('keeps the file mode and leaves no temp file behind', () => {
    write('10-calico.conflist', PRIMARY_TEXT);
    chmodSync(conf('10-calico.conflist'), 0o640);
    installer().install();
    expect(statSync(conf('10-calico.conflist')).mode & 0o7777).toBe(0o640);
    expect(readdirSync(confDir)).toEqual(['10-calico.conflist']);
  });

  test('converts a single-plugin .conf into a .conflist with the entry last; uninstall restores the .conf byte-exact', () => {
    write('10-flannel.conf', SINGLE_TEXT);
    chmodSync(conf('10-flannel.conf'), 0o600);
    const inst = installer();
    inst.install();
    expect(readdirSync(confDir)).toEqual(['10-flannel.conflist']);
    const single = JSON.parse(SINGLE_TEXT) as Record<string, unknown>;
    const { name, cniVersion, ...plugin } = single;
    expect(readJson('10-flannel.conflist')).toEqual({ cniVersion, name, plugins: [plugin, ENTRY] });
    expect(statSync(conf('10-flannel.conflist')).mode & 0o7777).toBe(0o600);
    expect(inst.status()).toEqual({ installed: true, file: conf('10-flannel.conflist') });
    inst.install();
    expect(readdirSync(confDir)).toEqual(['10-flannel.conflist']);

    const lines = inst.uninstall();
    expect(readdirSync(confDir)).toEqual(['10-flannel.conf']);
    expect(readFileSync(conf('10-flannel.conf'), 'utf8')).toBe(SINGLE_TEXT);
    expect(statSync(conf('10-flannel.conf')).mode & 0o7777).toBe(0o600);
    expect(lines).toContain(`restored ${conf('10-flannel.conf')}`);
  });

  test('a .conf without cniVersion and a .json without plugins convert with cniVersion 0.3.1', () => {
    write('10-a.json', JSON.stringify({ name: 'a', type: 'bridge', bridge: 'cni0' }));
    installer().install();
    expect(readJson('10-a.conflist')).toEqual({
      cniVersion: '0.3.1',
      name: 'a',
      plugins: [{ type: 'bridge', bridge: 'cni0' }, ENTRY],
    });
    expect(existsSync(conf('10-a.json'))).toBe(false);
  });

  test('refuses to convert a .conf when a .conflist of the same stem exists', () => {
    write('10-net.conf', SINGLE_TEXT);
    write('10-net.conflist', conflist('other', 'bridge'));
    const list = identity(conf('10-net.conflist'));
    const inst = installer();
    expect(() => inst.install()).toThrow(/Cannot convert CNI config .*10-net\.conf to .*10-net\.conflist/);
    expect(readFileSync(conf('10-net.conf'), 'utf8')).toBe(SINGLE_TEXT);
    expect(identity(conf('10-net.conflist'))).toEqual(list);
    expect(inst.status()).toMatchObject({ installed: false, file: conf('10-net.conf') });
  });

  test('installs the binary atomically with mode 0755 (replaced by rename, never rewritten in place)', () => {
    write('10-calico.conflist', PRIMARY_TEXT);
    const inst = installer();
    inst.install();
    const installed = join(binDir, 'sluice-cni');
    expect(readFileSync(installed, 'utf8')).toBe('#!/bin/sh\necho sluice-cni v1\n');
    expect(statSync(installed).mode & 0o7777).toBe(0o755);
    // A hard link sees the old inode: a rename leaves it the old content, an in-place write would not.
    linkSync(installed, join(root, 'old-binary'));
    writeFileSync(pluginBinary, '#!/bin/sh\necho sluice-cni v2\n');
    inst.install();
    expect(readFileSync(installed, 'utf8')).toBe('#!/bin/sh\necho sluice-cni v2\n');
    expect(readFileSync(join(root, 'old-binary'), 'utf8')).toBe('#!/bin/sh\necho sluice-cni v1\n');
    expect(statSync(installed).mode & 0o7777).toBe(0o755);
    expect(readdirSync(binDir)).toEqual(['sluice-cni']);
  });

  test('status says the binary is missing', () => {
    write('10-calico.conflist', PRIMARY_TEXT);
    const inst = installer();
    inst.install();
    unlinkSync(join(binDir, 'sluice-cni'));
    expect(inst.status()).toMatchObject({ installed: false, reason: expect.stringContaining('binary') });
  });

  test('rejects an entry whose type is not sluice-cni and a confFileName outside confDir', () => {
    expect(() => installer({ pluginConf: { type: 'bridge' } })).toThrow(TypeError);
    expect(() => installer({ confFileName: '../10-x.conflist' })).toThrow(/cni-conf-file-name/);
    expect(() => installer({ pollMs: 0 })).toThrow(RangeError);
  });
});

describe("the agent's entry (install-config)", () => {
  test('carries exclude-namespaces, and an agent started with other ones rewrites it in place', () => {
    write('10-calico.conflist', PRIMARY_TEXT);
    const agentSocket = '/var/run/sluice/agent.sock';
    const first = installer({ pluginConf: sluiceCniEntry({ agentSocket, excludeNamespaces: ['kube-system', 'istio-system'] }) });
    first.install();
    const entryOf = () =>
      (readJson('10-calico.conflist').plugins as Record<string, unknown>[]).filter((p) => p.type === 'sluice-cni');
    expect(entryOf()).toEqual([{ type: 'sluice-cni', agentSocket, excludeNamespaces: ['kube-system', 'istio-system'] }]);
    first.stop();
    // the next agent start, with the key changed
    const next = installer({ pluginConf: sluiceCniEntry({ agentSocket, excludeNamespaces: ['kube-system', 'monitoring'] }) });
    next.install();
    expect(entryOf()).toEqual([{ type: 'sluice-cni', agentSocket, excludeNamespaces: ['kube-system', 'monitoring'] }]);
    expect(pluginTypes('10-calico.conflist')).toEqual(['calico', 'portmap', 'sluice-cni']);
    expect(infoSpy).toHaveBeenCalledWith('CNI config installed', {
      file: conf('10-calico.conflist'),
      reason: 'sluice-cni entry outdated',
    });
    expect(next.status()).toEqual({ installed: true, file: conf('10-calico.conflist') });
    // and uninstall still gives the primary its bytes back
    next.uninstall();
    expect(readFileSync(conf('10-calico.conflist'), 'utf8')).toBe(PRIMARY_TEXT);
  });
});

describe('uninstall', () => {
  test('leaves the primary file byte-identical to before install, and removes the binary and saved originals', () => {
    write('10-calico.conflist', PRIMARY_TEXT);
    chmodSync(conf('10-calico.conflist'), 0o644);
    const inst = installer();
    inst.install();
    const lines = inst.uninstall();
    expect(readFileSync(conf('10-calico.conflist'), 'utf8')).toBe(PRIMARY_TEXT);
    expect(statSync(conf('10-calico.conflist')).mode & 0o7777).toBe(0o644);
    expect(existsSync(join(binDir, 'sluice-cni'))).toBe(false);
    expect(readdirSync(backupDir)).toEqual([]);
    expect(lines).toEqual([
      `restored ${conf('10-calico.conflist')} to its original content`,
      `removed ${join(binDir, 'sluice-cni')}`,
    ]);
    expect(inst.status().installed).toBe(false);
  });

  test('after the primary rewrote the file, removes only the sluice entry', () => {
    write('10-calico.conflist', PRIMARY_TEXT);
    const inst = installer();
    inst.install();
    // The primary (or an admin) changes its own entry and keeps sluice's.
    const changed = readFileSync(conf('10-calico.conflist'), 'utf8').replace('"mtu": 0', '"mtu": 1450');
    rewrite('10-calico.conflist', changed);
    const lines = inst.uninstall();
    const expected = JSON.parse(PRIMARY_TEXT) as { plugins: Record<string, unknown>[] };
    expected.plugins[0].mtu = 1450;
    expect(readJson('10-calico.conflist')).toEqual(expected);
    expect(readFileSync(conf('10-calico.conflist'), 'utf8')).toBe(PRIMARY_TEXT.replace('"mtu": 0', '"mtu": 1450'));
    expect(lines[0]).toContain('removed the sluice-cni entry');
  });

  test('works from a fresh installer after an agent restart, from the saved originals', () => {
    write('10-flannel.conf', SINGLE_TEXT);
    write('20-calico.conflist', PRIMARY_TEXT);
    installer().install();
    installer().uninstall();
    expect(readdirSync(confDir).sort()).toEqual(['10-flannel.conf', '20-calico.conflist']);
    expect(readFileSync(conf('10-flannel.conf'), 'utf8')).toBe(SINGLE_TEXT);
    expect(readFileSync(conf('20-calico.conflist'), 'utf8')).toBe(PRIMARY_TEXT);
  });

  test('removes an entry it has no saved original for', () => {
    write('10-calico.conflist', PRIMARY_TEXT);
    installer().install();
    rmSync(backupDir, { recursive: true });
    installer().uninstall();
    expect(readFileSync(conf('10-calico.conflist'), 'utf8')).toBe(PRIMARY_TEXT);
  });
});

describe('other files', () => {
  function others(): Record<string, ReturnType<typeof identity>> {
    const names = ['20-other.conflist', '30-single.conf', '40-broken.conflist', 'README', '.10-calico.conflist.swp'];
    return Object.fromEntries(names.map((n) => [n, identity(conf(n))]));
  }

  function writeOthers(): void {
    write('20-other.conflist', conflist('other', 'bridge', 'portmap'));
    write('30-single.conf', SINGLE_TEXT);
    write('40-broken.conflist', '{"name": ');
    write('README', 'managed by the primary CNI\n');
    write('.10-calico.conflist.swp', conflist('swap', 'bridge')); // an editor's swap file: not a config
  }

  test('without cni-exclusive, install, repairs and uninstall leave every other file untouched', async () => {
    write('10-calico.conflist', PRIMARY_TEXT);
    writeOthers();
    const before = others();
    const inst = installer();
    inst.install();
    expect(others()).toEqual(before);
    inst.watch();
    rewrite('10-calico.conflist', PRIMARY_TEXT);
    await waitFor('the repair', () => hasEntryLast('10-calico.conflist'));
    expect(others()).toEqual(before);
    inst.uninstall();
    expect(others()).toEqual(before);
    expect(readFileSync(conf('10-calico.conflist'), 'utf8')).toBe(PRIMARY_TEXT);
  });

  test('cni-exclusive moves the other loadable configs to .sluice_bak, and uninstall restores them', () => {
    write('10-calico.conflist', PRIMARY_TEXT);
    writeOthers();
    const before = others();
    const inst = installer({ exclusive: true });
    inst.install();
    expect(readdirSync(confDir).sort()).toEqual(
      [
        '.10-calico.conflist.swp',
        '10-calico.conflist',
        '20-other.conflist.sluice_bak',
        '30-single.conf.sluice_bak',
        '40-broken.conflist',
        'README',
      ].sort(),
    );
    expect(inst.status()).toEqual({ installed: true, file: conf('10-calico.conflist') });
    // A file of a moved-aside name written again meanwhile wins: its backup is kept and reported.
    write('30-single.conf', SINGLE_TEXT.replace('cbr0', 'cbr1'));
    const lines = inst.uninstall();
    expect(readFileSync(conf('10-calico.conflist'), 'utf8')).toBe(PRIMARY_TEXT);
    const after = others();
    expect(after['20-other.conflist']).toEqual(before['20-other.conflist']); // renamed back: same inode and mtime
    expect(after['40-broken.conflist']).toEqual(before['40-broken.conflist']);
    expect(after.README).toEqual(before.README);
    expect(after['.10-calico.conflist.swp']).toEqual(before['.10-calico.conflist.swp']);
    expect(existsSync(conf('30-single.conf.sluice_bak'))).toBe(true);
    expect(lines).toContain(`restored ${conf('20-other.conflist')} (moved aside by cni-exclusive)`);
    expect(lines).toContain(`kept ${conf('30-single.conf.sluice_bak')}: ${conf('30-single.conf')} exists again`);
  });

  test('cni-exclusive while watching: a config written later is moved aside too', async () => {
    write('10-calico.conflist', PRIMARY_TEXT);
    const inst = installer({ exclusive: true });
    inst.install();
    inst.watch();
    rewrite('99-podman.conflist', conflist('podman', 'bridge'));
    await waitFor(
      'the move aside',
      () => existsSync(conf('99-podman.conflist.sluice_bak')) && !existsSync(conf('99-podman.conflist')),
    );
    expect(inst.status()).toEqual({ installed: true, file: conf('10-calico.conflist') });
  });

  test('an invalid JSON file is never rewritten, even pinned, and is warned about once per content', async () => {
    write('05-broken.conflist', '{"name": "broken", "plugins": [{"type": "bridge"}');
    write('10-calico.conflist', PRIMARY_TEXT);
    const broken = identity(conf('05-broken.conflist'));
    const pinned = installer({ confFileName: '05-broken.conflist' });
    pinned.install();
    expect(pinned.status()).toMatchObject({ installed: false, reason: expect.stringContaining('Cannot parse CNI config') });
    pinned.uninstall();
    expect(identity(conf('05-broken.conflist'))).toEqual(broken);

    const inst = installer();
    inst.install();
    inst.watch();
    await sleep(350); // a few polls
    expect(identity(conf('05-broken.conflist'))).toEqual(broken);
    expect(hasEntryLast('10-calico.conflist')).toBe(true);
    const warnings = () => warnSpy.mock.calls.filter((c) => c[0] === 'Skipping CNI config that is not valid JSON').length;
    const seen = warnings();
    expect(seen).toBeGreaterThanOrEqual(1);
    await sleep(250);
    expect(warnings()).toBe(seen);
    rewrite('05-broken.conflist', '{"still": broken');
    await waitFor('a warning for the new content', () => warnings() > seen);
    await sleep(250);
    expect(warnings()).toBe(seen + 1);
    expect(readFileSync(conf('05-broken.conflist'), 'utf8')).toBe('{"still": broken');
  });
});

describe('watch', () => {
  test('re-inserts the entry after the primary rewrites its file, and uninstall restores that rewrite', async () => {
    write('10-calico.conflist', PRIMARY_TEXT);
    const inst = installer({ pollMs: 1000 }); // the fs.watch path, not the poll
    inst.install();
    inst.watch();
    const rewritten = PRIMARY_TEXT.replace('"mtu": 0', '"mtu": 1400');
    rewrite('10-calico.conflist', rewritten);
    await waitFor('the repair', () => hasEntryLast('10-calico.conflist'), 1000);
    expect(readFileSync(conf('10-calico.conflist'), 'utf8')).toContain('"mtu": 1400');
    expect(repairs()).toEqual([
      ['CNI config repaired', { file: conf('10-calico.conflist'), reason: 'sluice-cni entry missing' }],
    ]);
    inst.uninstall();
    expect(readFileSync(conf('10-calico.conflist'), 'utf8')).toBe(rewritten);
  });

  test('repairs from the poll alone when fs.watch is unavailable', async () => {
    hooks.failWatch = true;
    write('10-calico.conflist', PRIMARY_TEXT);
    const inst = installer({ pollMs: 100 });
    inst.install();
    inst.watch();
    write('10-calico.conflist', PRIMARY_TEXT); // in place, as a careless primary would
    await waitFor('the repair', () => hasEntryLast('10-calico.conflist'));
  });

  test('moves to a new file that sorts first and restores the old one byte-exact', async () => {
    write('20-calico.conflist', PRIMARY_TEXT);
    const inst = installer();
    inst.install();
    inst.watch();
    rewrite('10-cilium.conflist', conflist('cilium', 'cilium-cni'));
    await waitFor(
      'the move',
      () => hasEntryLast('10-cilium.conflist') && readFileSync(conf('20-calico.conflist'), 'utf8') === PRIMARY_TEXT,
    );
    expect(inst.status()).toEqual({ installed: true, file: conf('10-cilium.conflist') });
    expect(repairs()[0][1]).toMatchObject({
      file: conf('10-cilium.conflist'),
      reason: expect.stringContaining('moved from 20-calico.conflist'),
    });
  });

  test('moves away from a converted .conf and restores it', async () => {
    write('20-flannel.conf', SINGLE_TEXT);
    const inst = installer();
    inst.install();
    inst.watch();
    rewrite('10-net.conflist', conflist('net', 'bridge'));
    await waitFor('the move', () => hasEntryLast('10-net.conflist') && existsSync(conf('20-flannel.conf')));
    expect(readdirSync(confDir).sort()).toEqual(['10-net.conflist', '20-flannel.conf']);
    expect(readFileSync(conf('20-flannel.conf'), 'utf8')).toBe(SINGLE_TEXT);
  });

  test('re-converts when the primary writes its .conf again', async () => {
    write('10-flannel.conf', SINGLE_TEXT);
    const inst = installer();
    inst.install();
    inst.watch();
    const rewritten = SINGLE_TEXT.replace('"hairpinMode": true', '"hairpinMode": false');
    rewrite('10-flannel.conf', rewritten);
    await waitFor(
      'the new conversion',
      () =>
        !existsSync(conf('10-flannel.conf')) &&
        (readJson('10-flannel.conflist').plugins as { delegate?: { hairpinMode: boolean } }[])[0].delegate?.hairpinMode === false,
    );
    expect(hasEntryLast('10-flannel.conflist')).toBe(true);
    inst.uninstall();
    expect(readdirSync(confDir)).toEqual(['10-flannel.conf']);
    expect(readFileSync(conf('10-flannel.conf'), 'utf8')).toBe(rewritten);
  });

  test('follows to the next file when the chosen file is deleted', async () => {
    write('10-a.conflist', conflist('a', 'bridge'));
    write('20-b.conflist', conflist('b', 'ptp'));
    const inst = installer();
    inst.install();
    expect(pluginTypes('20-b.conflist')).toEqual(['ptp']);
    inst.watch();
    unlinkSync(conf('10-a.conflist'));
    await waitFor('the entry in the next file', () => hasEntryLast('20-b.conflist'));
    expect(inst.status()).toEqual({ installed: true, file: conf('20-b.conflist') });
    expect(repairs()[0][1]).toMatchObject({ reason: expect.stringContaining('10-a.conflist was deleted') });
    expect(readdirSync(backupDir)).toEqual(['cni-original.20-b.conflist.json']);
  });

  test('does not loop on its own writes: after a repair the file stays put', async () => {
    write('10-calico.conflist', PRIMARY_TEXT);
    const inst = installer({ pollMs: 100 });
    inst.install();
    inst.watch();
    rewrite('10-calico.conflist', PRIMARY_TEXT);
    await waitFor('the repair', () => hasEntryLast('10-calico.conflist'));
    const repaired = identity(conf('10-calico.conflist'));
    await sleep(1100); // ~10 polls and the events of the repair itself
    expect(identity(conf('10-calico.conflist'))).toEqual(repaired);
    expect(repairs()).toHaveLength(1);
  });

  test('stop() leaves the installation in place and repairs no more', async () => {
    write('10-calico.conflist', PRIMARY_TEXT);
    const inst = installer({ pollMs: 50 });
    inst.install();
    inst.watch();
    inst.stop();
    expect(inst.status().installed).toBe(true);
    rewrite('10-calico.conflist', PRIMARY_TEXT);
    await sleep(300);
    expect(readFileSync(conf('10-calico.conflist'), 'utf8')).toBe(PRIMARY_TEXT);
  });

  test('never adds the entry while the binary is missing (pods would fail to start)', async () => {
    write('10-calico.conflist', PRIMARY_TEXT);
    rmSync(pluginBinary);
    const inst = installer({ pollMs: 50 });
    expect(() => inst.install()).toThrow(/Cannot read CNI plugin binary/);
    inst.watch();
    await sleep(300);
    expect(readFileSync(conf('10-calico.conflist'), 'utf8')).toBe(PRIMARY_TEXT);
    writeFileSync(pluginBinary, '#!/bin/sh\n');
    inst.install();
    expect(inst.status().installed).toBe(true);
  });

  test('puts a deleted binary back', async () => {
    write('10-calico.conflist', PRIMARY_TEXT);
    const inst = installer({ pollMs: 50 });
    inst.install();
    inst.watch();
    unlinkSync(join(binDir, 'sluice-cni'));
    await waitFor('the binary', () => existsSync(join(binDir, 'sluice-cni')));
    expect(statSync(join(binDir, 'sluice-cni')).mode & 0o7777).toBe(0o755);
  });
});
