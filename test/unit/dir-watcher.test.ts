/* src/fs/dir-watcher.ts. Real inotify events, fake timers for the debounce and the rescan period:
 * an event is awaited as an event (the watcher's ignore() or schedule seeing it), and what the
 * watcher does with it is then checked by advancing the fake clock, never by sleeping. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi, type MockInstance } from 'vitest';
import { DirWatcher, type DirChangeCause, type DirWatcherOptions } from '../../src/fs/dir-watcher';
import { log } from '../../src/log';

/* Lets a test make fs.watch fail, as when inotify watches run out. */
const hooks = vi.hoisted(() => ({
  failWatch: undefined as string | undefined,
  lastWatcher: undefined as import('node:fs').FSWatcher | undefined,
}));

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  return {
    ...real,
    watch: (...args: Parameters<typeof real.watch>) => {
      if (hooks.failWatch) throw Object.assign(new Error(`${hooks.failWatch}: cannot watch`), { code: hooks.failWatch });
      hooks.lastWatcher = real.watch(...args);
      return hooks.lastWatcher;
    },
  };
});

let root: string;
let dir: string;
let watchers: DirWatcher[];
let causes: DirChangeCause[];
let seen: string[];
let warn: MockInstance<typeof log.warn>;
let debug: MockInstance<typeof log.debug>;

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-dirwatch-'));
  dir = path.join(root, 'd');
  fs.mkdirSync(dir);
  watchers = [];
  causes = [];
  seen = [];
  hooks.failWatch = undefined;
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval'] });
  warn = vi.spyOn(log, 'warn').mockImplementation(() => undefined);
  debug = vi.spyOn(log, 'debug').mockImplementation(() => undefined);
  vi.spyOn(log, 'info').mockImplementation(() => undefined);
  vi.spyOn(log, 'error').mockImplementation(() => undefined);
});

afterEach(() => {
  for (const w of watchers) w.stop();
  vi.useRealTimers();
  vi.restoreAllMocks();
  fs.rmSync(root, { recursive: true, force: true });
});

/** A watcher whose ignore() records every named event it is asked about (and ignores `*.tmp`). */
function watcher(opts: DirWatcherOptions = {}, onChange = (cause: DirChangeCause) => void causes.push(cause)): DirWatcher {
  const w = new DirWatcher(dir, onChange, {
    debounceMs: 100,
    rescanMs: 1000,
    ignore: (name) => {
      seen.push(name);
      return name.endsWith('.tmp');
    },
    ...opts,
  });
  watchers.push(w);
  return w;
}

/** Waits (on real time, setImmediate turns) until the inotify event for name has reached the watcher. */
async function eventFor(name: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!seen.includes(name)) {
    if (Date.now() > deadline) throw new Error(`no fs event for ${name} within 5 s`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

describe('DirWatcher', () => {
  it('calls back once per burst of events, after the debounce delay', async () => {
    watcher().start();
    for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(dir, `f${i}.conf`), 'x');
    await eventFor('f19.conf');
    expect(causes).toEqual([]);
    vi.advanceTimersByTime(99);
    expect(causes).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(causes).toEqual(['event']);
  });

  it('ignores events for the names the owner says are its own', async () => {
    watcher().start();
    fs.writeFileSync(path.join(dir, 'write.tmp'), 'x');
    await eventFor('write.tmp');
    expect(vi.getTimerCount()).toBe(1); // the rescan period only: no debounce pending
    vi.advanceTimersByTime(500); // past any debounce, short of the rescan period
    expect(causes).toEqual([]);
    fs.writeFileSync(path.join(dir, 'real.conf'), 'x');
    await eventFor('real.conf');
    vi.advanceTimersByTime(100);
    expect(causes).toEqual(['event']);
  });

  it('rescans every period, and not at all with rescanMs 0', () => {
    watcher().start();
    vi.advanceTimersByTime(3000);
    expect(causes).toEqual(['rescan', 'rescan', 'rescan']);
    causes = [];
    const quiet = new DirWatcher(dir, (c) => causes.push(c), { rescanMs: 0 });
    watchers.push(quiet);
    quiet.start();
    expect(vi.getTimerCount()).toBe(1); // the first watcher's only
  });

  it('requestRescan calls back after the debounce delay, sharing one pending with events', () => {
    const w = watcher();
    w.start();
    w.requestRescan();
    w.requestRescan();
    vi.advanceTimersByTime(100);
    expect(causes).toEqual(['requested']);
  });

  it('falls back to the rescan when fs.watch fails, warns once, and watches again once it can', () => {
    hooks.failWatch = 'ENOSPC';
    const w = watcher();
    w.start();
    expect(w.watching).toBe(false);
    vi.advanceTimersByTime(2000);
    expect(causes).toEqual(['rescan', 'rescan']);
    const warnings = warn.mock.calls.filter(([msg]) => msg === 'Cannot watch directory; relying on the periodic rescan');
    expect(warnings).toEqual([
      ['Cannot watch directory; relying on the periodic rescan', { dir, err: 'ENOSPC: cannot watch', rescanMs: 1000 }],
    ]);
    hooks.failWatch = undefined;
    vi.advanceTimersByTime(1000);
    expect(w.watching).toBe(true);
  });

  it('a missing directory is a quiet wait when the owner expects it, a warning otherwise', () => {
    fs.rmSync(dir, { recursive: true });
    const expected = watcher({ missingIsNormal: true, what: 'CNI config directory' });
    expected.start();
    expect(expected.watching).toBe(false);
    expect(warn).not.toHaveBeenCalled();
    expect(debug).toHaveBeenCalledWith(
      'Cannot watch CNI config directory; relying on the periodic rescan',
      expect.objectContaining({ err: expect.stringContaining('ENOENT') }),
    );
    const unexpected = watcher({ what: 'manifest directory' });
    unexpected.start();
    expect(warn).toHaveBeenCalledWith(
      'Cannot watch manifest directory; relying on the periodic rescan',
      expect.objectContaining({ dir }),
    );
    fs.mkdirSync(dir);
    vi.advanceTimersByTime(1000);
    expect(expected.watching).toBe(true);
  });

  it('a watcher error event falls back to the rescan', () => {
    const w = watcher();
    w.start();
    hooks.lastWatcher?.emit('error', new Error('EMFILE'));
    expect(w.watching).toBe(false);
    expect(warn).toHaveBeenCalledWith(
      'Cannot watch directory; relying on the periodic rescan',
      expect.objectContaining({ err: 'EMFILE' }),
    );
  });

  it('follows a directory replaced by another one at the same path', async () => {
    const w = watcher();
    w.start();
    const first = hooks.lastWatcher;
    fs.renameSync(dir, path.join(root, 'old'));
    fs.mkdirSync(dir);
    vi.advanceTimersByTime(1000);
    expect(hooks.lastWatcher).not.toBe(first);
    expect(w.watching).toBe(true);
    causes = [];
    fs.writeFileSync(path.join(dir, 'in-new.conf'), 'x');
    await eventFor('in-new.conf');
    vi.advanceTimersByTime(100);
    expect(causes).toEqual(['event']);
  });

  it('stop() leaves no timer and no watch behind', async () => {
    const w = watcher();
    w.start();
    fs.writeFileSync(path.join(dir, 'a.conf'), 'x');
    await eventFor('a.conf');
    w.stop();
    expect(w.watching).toBe(false);
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(5000);
    expect(causes).toEqual([]);
  });

  it('a callback that throws is logged, and the watcher goes on', () => {
    const error = vi.mocked(log.error);
    let calls = 0;
    watcher({}, () => {
      calls++;
      throw new Error('boom');
    }).start();
    vi.advanceTimersByTime(2000);
    expect(calls).toBe(2);
    expect(error).toHaveBeenCalledWith(
      'Handling a change of the directory failed',
      expect.objectContaining({ cause: 'rescan', err: 'boom' }),
    );
  });

  it('rejects negative or non-finite durations', () => {
    expect(() => new DirWatcher(dir, () => undefined, { debounceMs: -1 })).toThrow(RangeError);
    expect(() => new DirWatcher(dir, () => undefined, { rescanMs: Number.NaN })).toThrow(/rescanMs NaN/);
  });
});
