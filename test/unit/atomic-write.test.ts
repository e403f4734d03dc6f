/* src/fs/atomic-write.ts: replacement by rename, durability by fsync of the file and its directory. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { fsyncDirectory, isAtomicWriteTempFile, removeStaleTempFiles, writeFileAtomic } from '../../src/fs/atomic-write';

/* Records what fsync is called on: the written file's fd and the directory's. */
const hooks = vi.hoisted(() => ({ fsynced: [] as string[] }));

vi.mock('node:fs', async (importOriginal) =>
  (await import('./fsync-recorder')).recordingFsync(await importOriginal<typeof import('node:fs')>(), hooks),
);

let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-atomic-'));
  hooks.fsynced = [];
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const entries = () => fs.readdirSync(dir).sort();

describe('writeFileAtomic', () => {
  it('creates a file with the mode asked for and leaves no temp file', () => {
    const file = path.join(dir, 'a.json');
    writeFileAtomic(file, '{"a":1}\n', { mode: 0o640, what: 'test record' });
    expect(fs.readFileSync(file, 'utf8')).toBe('{"a":1}\n');
    expect(fs.statSync(file).mode & 0o7777).toBe(0o640);
    expect(entries()).toEqual(['a.json']);
  });

  it('replaces by rename: a reader holding the old file keeps the old content whole', () => {
    const file = path.join(dir, 'a.json');
    fs.writeFileSync(file, 'old content');
    const before = fs.statSync(file).ino;
    const reader = fs.openSync(file, 'r');
    writeFileAtomic(file, Buffer.from('new'), { mode: 0o644, what: 'test record' });
    expect(fs.readFileSync(reader, 'utf8')).toBe('old content');
    fs.closeSync(reader);
    expect(fs.readFileSync(file, 'utf8')).toBe('new');
    expect(fs.statSync(file).ino).not.toBe(before);
  });

  it('fsyncs the data before the rename and the directory after it', () => {
    const file = path.join(dir, 'a.json');
    writeFileAtomic(file, 'x', { mode: 0o644, what: 'test record' });
    expect(hooks.fsynced).toHaveLength(2);
    expect(isAtomicWriteTempFile(path.basename(hooks.fsynced[0]))).toBe(true); // the temp file, before its rename
    expect(path.dirname(hooks.fsynced[0])).toBe(dir);
    expect(hooks.fsynced[1]).toBe(dir);
  });

  it('writes where a symlink points, so the link stays a link', () => {
    fs.mkdirSync(path.join(dir, 'real'));
    const target = path.join(dir, 'real', 'conf.json');
    fs.writeFileSync(target, 'old');
    const link = path.join(dir, 'link.json');
    fs.symlinkSync(target, link);
    writeFileAtomic(link, 'new', { mode: 0o644, what: 'test record' });
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
    expect(fs.readFileSync(target, 'utf8')).toBe('new');
  });

  it('names what failed, the file and the cause, and removes its temp file', () => {
    const file = path.join(dir, 'sub');
    fs.mkdirSync(file); // rename of a file over a directory fails
    expect(() => writeFileAtomic(file, 'x', { mode: 0o644, what: 'pod registration' })).toThrow(
      new RegExp(`^Cannot write pod registration ${file}: EISDIR`),
    );
    expect(entries()).toEqual(['sub']);
    expect(() => writeFileAtomic(path.join(dir, 'missing', 'f'), 'x', { mode: 0o644, what: 'CNI config' })).toThrow(
      /^Cannot write CNI config .*missing\/f: ENOENT/,
    );
  });
});

describe('temp files', () => {
  it('removeStaleTempFiles removes only what an interrupted write left', () => {
    for (const name of [
      '.a.json.0123456789ab.sluice-tmp',
      '.b.0123456789ab.sluice-tmp',
      'a.json',
      '.a.json.tmp',
      'x.sluice-tmp',
      '.a.json.0123.sluice-tmp',
    ]) {
      fs.writeFileSync(path.join(dir, name), '');
    }
    removeStaleTempFiles(dir);
    expect(entries()).toEqual(['.a.json.0123.sluice-tmp', '.a.json.tmp', 'a.json', 'x.sluice-tmp']);
    expect(() => removeStaleTempFiles(path.join(dir, 'missing'))).not.toThrow();
  });

  it("isAtomicWriteTempFile tells the writer's temp files from everything else", () => {
    expect(isAtomicWriteTempFile('.10-calico.conflist.0123456789ab.sluice-tmp')).toBe(true);
    expect(isAtomicWriteTempFile('10-calico.conflist')).toBe(false);
    expect(isAtomicWriteTempFile('10-calico.conflist.sluice_bak')).toBe(false);
  });

  it('fsyncDirectory fails loudly on a missing directory', () => {
    expect(() => fsyncDirectory(path.join(dir, 'missing'))).toThrow(/ENOENT/);
  });
});
