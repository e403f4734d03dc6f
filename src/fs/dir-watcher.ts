/*
 * One way to follow a directory: fs.watch (inotify), debounced, plus a periodic rescan as the
 * safety net for what inotify misses (overflows, network filesystems, a watch that could not be
 * created for lack of inotify watches, a directory removed or replaced by another one). The owner
 * gets one callback per burst of events and one per rescan period, and re-reads the directory
 * itself: events say that something changed, never what. Used by the CNI installer
 * (src/cni/install.ts, cni-conf-dir) and the manifest directory source (src/k8s/dir-source.ts).
 */
import { statSync, watch, type FSWatcher } from 'node:fs';
import { log } from '../log';

export interface DirWatcherOptions {
  /** Delay between the first event of a burst and the callback, in ms. Default 100. */
  debounceMs?: number;
  /** Period of the safety-net rescan, in ms; 0 disables it. Default 10000. */
  rescanMs?: number;
  /** Events naming an entry for which this returns true are ignored (the owner's own temp files). Default: none. */
  ignore?: (name: string) => boolean;
  /** What the directory is, for logs: "CNI config directory". Default "directory". */
  what?: string;
  /** A directory that does not exist (yet) is a normal wait, logged at debug level. Default false. */
  missingIsNormal?: boolean;
}

/** Why the callback runs: a burst of fs events, the periodic rescan, or requestRescan(). */
export type DirChangeCause = 'event' | 'rescan' | 'requested';

function checkDuration(name: string, value: number): number {
  if (!Number.isFinite(value) || value < 0) {
    throw new RangeError(`Cannot use directory watcher option ${name} ${value}: must be a non-negative number of milliseconds`);
  }
  return value;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class DirWatcher {
  private readonly debounceMs: number;
  private readonly rescanMs: number;
  private readonly ignore: (name: string) => boolean;
  private readonly what: string;
  private readonly missingIsNormal: boolean;
  private watcher: FSWatcher | undefined;
  /** Inode of the directory the watch was created on: a replaced directory needs a new watch. */
  private watchedIno: number | undefined;
  private watchFailures = 0;
  private debounceTimer: NodeJS.Timeout | undefined;
  private rescanTimer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(
    readonly dir: string,
    private readonly onChange: (cause: DirChangeCause) => void,
    opts: DirWatcherOptions = {},
  ) {
    this.debounceMs = checkDuration('debounceMs', opts.debounceMs ?? 100);
    this.rescanMs = checkDuration('rescanMs', opts.rescanMs ?? 10000);
    this.ignore = opts.ignore ?? (() => false);
    this.what = opts.what ?? 'directory';
    this.missingIsNormal = opts.missingIsNormal === true;
  }

  /** Whether fs.watch is active (false: only the periodic rescan runs). */
  get watching(): boolean {
    return this.watcher !== undefined;
  }

  /** Watches now (a failure is retried at every rescan) and starts the periodic rescan. Idempotent. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.ensureWatching();
    if (this.rescanMs > 0) this.rescanTimer = setInterval(() => this.onRescanTick(), this.rescanMs);
  }

  /** No callback runs after stop(). */
  stop(): void {
    this.running = false;
    clearTimeout(this.debounceTimer);
    clearInterval(this.rescanTimer);
    this.debounceTimer = this.rescanTimer = undefined;
    this.watcher?.close();
    this.watcher = undefined;
  }

  /** A callback after the debounce delay, as for an event (sharing a pending one). */
  requestRescan(): void {
    this.schedule('requested');
  }

  private schedule(cause: DirChangeCause): void {
    if (!this.running || this.debounceTimer !== undefined) return;
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = undefined;
      this.followReplacedDirectory();
      this.notify(cause);
    }, this.debounceMs);
  }

  private onRescanTick(): void {
    this.followReplacedDirectory();
    this.ensureWatching();
    this.notify('rescan');
  }

  private notify(cause: DirChangeCause): void {
    if (!this.running) return;
    try {
      this.onChange(cause);
    } catch (err) {
      // The owner reports its own failures; this only keeps a throwing callback from ending the process.
      log.error(`Handling a change of the ${this.what} failed`, { dir: this.dir, cause, err: errorMessage(err) });
    }
  }

  private ensureWatching(): void {
    if (!this.running || this.watcher !== undefined) return;
    try {
      const watcher = watch(this.dir, (_event, filename) => {
        // Events without a name (overflow) always count; ConfigMap volumes swap a hidden `..data` link.
        if (typeof filename === 'string' && this.ignore(filename)) return;
        this.schedule('event');
      });
      watcher.on('error', (err) => {
        watcher.close();
        if (this.watcher === watcher) this.watcher = undefined;
        this.noteWatchFailure(err);
      });
      this.watcher = watcher;
      this.watchedIno = statSync(this.dir).ino;
      if (this.watchFailures > 0) log.info(`Watching the ${this.what} again`, { dir: this.dir });
      this.watchFailures = 0;
    } catch (err) {
      this.watcher?.close();
      this.watcher = undefined;
      this.noteWatchFailure(err);
    }
  }

  /** A watch follows the inode it was created on: after a remove or replace it hears nothing. */
  private followReplacedDirectory(): void {
    if (this.watcher === undefined) return;
    let ino: number | undefined;
    try {
      ino = statSync(this.dir).ino;
    } catch {
      ino = undefined;
    }
    if (ino === this.watchedIno) return;
    this.watcher.close();
    this.watcher = undefined;
    this.ensureWatching();
  }

  private noteWatchFailure(err: unknown): void {
    this.watchFailures++;
    // Retried at every rescan: said loudly once, then quietly. A missing directory may be the
    // expected wait (for the primary CNI plugin to create cni-conf-dir).
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    const report = this.watchFailures === 1 && !(missing && this.missingIsNormal) ? log.warn : log.debug;
    report(`Cannot watch ${this.what}; relying on the periodic rescan`, {
      dir: this.dir,
      err: errorMessage(err),
      rescanMs: this.rescanMs,
    });
  }
}
