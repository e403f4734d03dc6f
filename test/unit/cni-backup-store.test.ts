/* src/cni/backup-store.ts: saved originals in backupDir, configs moved aside in cni-conf-dir. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi, type MockInstance } from 'vitest';
import { BackupStore, MOVED_ASIDE_SUFFIX, type SavedOriginal } from '../../src/cni/backup-store';
import { log } from '../../src/log';

let root: string;
let confDir: string;
let backupDir: string;
let store: BackupStore;
let warn: MockInstance<typeof log.warn>;

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-backups-'));
  confDir = path.join(root, 'net.d');
  backupDir = path.join(root, 'state', 'cni-backup');
  fs.mkdirSync(confDir);
  store = new BackupStore(backupDir, confDir);
  warn = vi.spyOn(log, 'warn').mockImplementation(() => undefined);
  vi.spyOn(log, 'info').mockImplementation(() => undefined);
});

afterEach(() => {
  vi.restoreAllMocks();
  fs.rmSync(root, { recursive: true, force: true });
});

const original = (file: string, text: string, extra: Partial<SavedOriginal> = {}): SavedOriginal => ({
  file,
  mode: 0o644,
  original: Buffer.from(text).toString('base64'),
  savedAt: '2026-01-01T00:00:00.000Z',
  ...extra,
});

describe('saved originals', () => {
  it('round-trip through backupDir, created private at the first save', () => {
    const originals = store.loadOriginals();
    expect(originals.size).toBe(0);
    expect(fs.existsSync(backupDir)).toBe(false);
    store.saveOriginal(originals, original('10-calico.conflist', '{"a": 1}'));
    store.saveOriginal(originals, original('20-flannel.conf', '{"b": 2}', { convertedTo: '20-flannel.conflist' }));
    expect(fs.statSync(backupDir).mode & 0o777).toBe(0o700);
    expect(fs.readdirSync(backupDir).sort()).toEqual([
      'cni-original.10-calico.conflist.json',
      'cni-original.20-flannel.conf.json',
    ]);
    expect(fs.statSync(path.join(backupDir, 'cni-original.10-calico.conflist.json')).mode & 0o777).toBe(0o600);
    const again = new BackupStore(backupDir, confDir).loadOriginals();
    expect([...again.values()]).toEqual([...originals.values()]);
    expect(Buffer.from(again.get('20-flannel.conf')!.original, 'base64').toString()).toBe('{"b": 2}');
  });

  it('saving the same original again writes nothing', () => {
    const originals = store.loadOriginals();
    store.saveOriginal(originals, original('a.conflist', 'x'));
    const file = path.join(backupDir, 'cni-original.a.conflist.json');
    const ino = fs.statSync(file).ino;
    store.saveOriginal(originals, original('a.conflist', 'x', { savedAt: 'later' }));
    expect(fs.statSync(file).ino).toBe(ino);
    store.saveOriginal(originals, original('a.conflist', 'y'));
    expect(fs.statSync(file).ino).not.toBe(ino);
  });

  it('an unreadable original is left out and warned about once', () => {
    fs.mkdirSync(backupDir, { recursive: true });
    fs.writeFileSync(path.join(backupDir, 'cni-original.bad.conflist.json'), '{"file": 1}');
    fs.writeFileSync(path.join(backupDir, 'cni-original.torn.conflist.json'), '{"file": "torn.con');
    fs.writeFileSync(path.join(backupDir, 'unrelated.json'), 'not ours');
    expect(store.loadOriginals().size).toBe(0);
    expect(store.loadOriginals().size).toBe(0);
    const warned = warn.mock.calls.map((c) => (c[1] as { file: string }).file).sort();
    expect(warned).toEqual([
      path.join(backupDir, 'cni-original.bad.conflist.json'),
      path.join(backupDir, 'cni-original.torn.conflist.json'),
    ]);
  });

  it('dropOriginal forgets it on disk and in the map', () => {
    const originals = store.loadOriginals();
    store.saveOriginal(originals, original('a.conflist', 'x'));
    store.dropOriginal(originals, 'a.conflist');
    expect(originals.has('a.conflist')).toBe(false);
    expect(fs.readdirSync(backupDir)).toEqual([]);
  });
});

describe('configs moved aside (cni-exclusive)', () => {
  it('are renamed to .sluice_bak and back, keeping inode and content', () => {
    fs.writeFileSync(path.join(confDir, '20-other.conflist'), 'other');
    fs.writeFileSync(path.join(confDir, '30-single.conf'), 'single');
    const ino = fs.statSync(path.join(confDir, '20-other.conflist')).ino;
    store.moveAside(['20-other.conflist', '30-single.conf']);
    expect(fs.readdirSync(confDir).sort()).toEqual([
      `20-other.conflist${MOVED_ASIDE_SUFFIX}`,
      `30-single.conf${MOVED_ASIDE_SUFFIX}`,
    ]);
    expect(store.restoreMovedAside()).toEqual([
      `restored ${path.join(confDir, '20-other.conflist')} (moved aside by cni-exclusive)`,
      `restored ${path.join(confDir, '30-single.conf')} (moved aside by cni-exclusive)`,
    ]);
    expect(fs.statSync(path.join(confDir, '20-other.conflist')).ino).toBe(ino);
    expect(fs.readFileSync(path.join(confDir, '30-single.conf'), 'utf8')).toBe('single');
  });

  it('a newer file replaces an older backup of the same name', () => {
    fs.writeFileSync(path.join(confDir, `a.conflist${MOVED_ASIDE_SUFFIX}`), 'older');
    fs.writeFileSync(path.join(confDir, 'a.conflist'), 'newer');
    store.moveAside(['a.conflist']);
    expect(fs.readFileSync(path.join(confDir, `a.conflist${MOVED_ASIDE_SUFFIX}`), 'utf8')).toBe('newer');
  });

  it('a backup whose name was written again meanwhile is kept, and said so', () => {
    fs.writeFileSync(path.join(confDir, `a.conflist${MOVED_ASIDE_SUFFIX}`), 'aside');
    fs.writeFileSync(path.join(confDir, 'a.conflist'), 'written again');
    fs.writeFileSync(path.join(confDir, MOVED_ASIDE_SUFFIX), 'a file named only by the suffix');
    expect(store.restoreMovedAside()).toEqual([
      `kept ${path.join(confDir, `a.conflist${MOVED_ASIDE_SUFFIX}`)}: ${path.join(confDir, 'a.conflist')} exists again`,
    ]);
    expect(fs.readFileSync(path.join(confDir, 'a.conflist'), 'utf8')).toBe('written again');
  });
});
