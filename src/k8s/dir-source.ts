/*
 * Standalone mode: the cluster is a directory of Kubernetes manifests (*.yaml,
 * *.yml, *.json, multi-document YAML and List objects allowed), e.g. a
 * ConfigMap volume or files dropped by an operator. The directory is followed
 * by src/fs/dir-watcher.ts: fs.watch, debounced, and a periodic rescan as a
 * safety net for missed events (inotify overflow, network filesystems, a
 * recreated dir).
 *
 * Failure policy, chosen so that a bad edit degrades one object, never the node:
 *  - a document that fails validation is logged and skipped; the rest of the
 *    file and directory are served;
 *  - a file that is not valid YAML/JSON as a whole (js-yaml fails the whole
 *    file, e.g. one half-written by an editor) keeps the objects previously
 *    loaded from it, with a warning, until it parses again or is deleted;
 *  - a deleted file withdraws its objects;
 *  - an unreadable directory after start keeps everything and is reported.
 * Writers should still write a temp file and rename it into place: a file
 * truncated exactly at a document boundary is valid YAML and would withdraw
 * the objects after the cut.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { loadAll } from 'js-yaml';
import { DirWatcher } from '../fs/dir-watcher';
import { log } from '../log';
import type { ClusterSource } from './source';
import { sameObject, type ObjectStore } from './store';
import type { K8sObject } from './types';
import { expandList, objectKey, parseObject, UnsupportedKindError } from './validate';

export interface DirectorySourceOptions {
  /** Delay between the first fs event of a burst and the rescan it triggers. Default 100. */
  debounceMs?: number;
  /** Period of the full safety-net rescan; 0 disables it. Default 10000. */
  rescanMs?: number;
}

export interface ManifestFileStatus {
  /** Full path; also the store source name of the file's objects. */
  file: string;
  /** Objects currently served from the file. */
  objects: number;
  /** Documents dropped as malformed at the last successful parse. */
  skippedDocuments: number;
  /** Documents of unsupported kinds (ConfigMap, ...) at the last successful parse. */
  ignoredDocuments: number;
  /** Why the last load failed (the objects above are then from an earlier load). */
  error?: string;
}

export interface DirectorySourceStatus {
  dir: string;
  synced: boolean;
  /** False when fs.watch failed and only the periodic rescan is running. */
  watching: boolean;
  scans: number;
  objects: number;
  skippedDocuments: number;
  ignoredDocuments: number;
  lastSyncError?: string;
  files: ManifestFileStatus[];
}

interface FileState {
  /** `mtimeMs:size:ino` of the version last parsed; '' forces a re-read. */
  fingerprint: string;
  objects: number;
  skippedDocuments: number;
  ignoredDocuments: number;
  error?: string;
}

const MANIFEST_EXTENSIONS = ['.yaml', '.yml', '.json'];

/** Manifest files we serve: not hidden (editor swap files, ConfigMap `..data`), not temp files. */
export function isManifestFileName(name: string): boolean {
  if (name.startsWith('.') || name.endsWith('~') || name.endsWith('.tmp')) return false;
  return MANIFEST_EXTENSIONS.some((ext) => name.endsWith(ext) && name.length > ext.length);
}

function errorMessage(err: unknown): string {
  // js-yaml messages carry a multi-line source snippet after the first line.
  return (err instanceof Error ? err.message : String(err)).split('\n')[0];
}

function errorCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * The documents of a file, decoded one at a time: each document's parse tree is garbage as soon
 * as the caller has taken its projection, so a 10,000-Service file never holds every tree at once
 * (that peak, not the objects kept, is what the agent's RSS would be). YAML documents start at a
 * line beginning with "---"; files using %-directives are decoded whole, as before.
 */
export function* decodeDocuments(file: string, text: string): Generator<unknown> {
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  if (file.endsWith('.json')) {
    if (body.trim() !== '') yield JSON.parse(body);
    return;
  }
  if (/^%/m.test(body)) {
    yield* loadAll(body, { filename: file });
    return;
  }
  let start = 0;
  const marker = /^---(?=[ \t\r\n]|$)/gm;
  for (let guard = 0; guard <= body.length; guard++) {
    marker.lastIndex = start + 1; // the next marker after the one this chunk starts with
    const m = marker.exec(body);
    const end = m ? m.index : body.length;
    const chunk = body.slice(start, end);
    if (chunk.trim() !== '' && chunk.trim() !== '---') yield* loadAll(chunk, { filename: file });
    if (!m) return;
    start = end;
  }
}

export class DirectorySource implements ClusterSource {
  readonly dir: string;
  private store: ObjectStore | undefined;
  /** By file name (not path), for files we currently serve or tried to. */
  private readonly files = new Map<string, FileState>();
  /** Every event, even on a hidden entry: ConfigMap volumes update by swapping the `..data` symlink. */
  private readonly watcher: DirWatcher;
  /** Tail of the scan queue: scans never overlap. */
  private scanChain: Promise<void> = Promise.resolve();
  /** A scan queued but not yet started; later requests share it. */
  private queuedScan: Promise<void> | undefined;
  private dirError: string | undefined;
  private scanCount = 0;
  private isSynced = false;
  private stopped = false;

  constructor(dir: string, opts: DirectorySourceOptions = {}) {
    this.dir = resolve(dir);
    this.watcher = new DirWatcher(this.dir, () => this.rescan().catch((err) => this.reportScanFailure(err)), {
      debounceMs: opts.debounceMs ?? 100,
      rescanMs: opts.rescanMs ?? 10000,
      what: 'manifest directory',
    });
  }

  get synced(): boolean {
    return this.isSynced;
  }

  /** Why the directory or some file could not be (fully) loaded, or undefined when all is served. */
  get lastSyncError(): string | undefined {
    if (this.dirError !== undefined) return this.dirError;
    for (const name of [...this.files.keys()].sort()) {
      const error = this.files.get(name)?.error;
      if (error !== undefined) return error;
    }
    return undefined;
  }

  /** Malformed documents currently skipped, over all files. */
  get skippedDocuments(): number {
    let n = 0;
    for (const f of this.files.values()) n += f.skippedDocuments;
    return n;
  }

  status(): DirectorySourceStatus {
    const files = [...this.files.keys()].sort().map((name): ManifestFileStatus => {
      const f = this.files.get(name) as FileState;
      const s: ManifestFileStatus = {
        file: join(this.dir, name),
        objects: f.objects,
        skippedDocuments: f.skippedDocuments,
        ignoredDocuments: f.ignoredDocuments,
      };
      if (f.error !== undefined) s.error = f.error;
      return s;
    });
    const status: DirectorySourceStatus = {
      dir: this.dir,
      synced: this.isSynced,
      watching: this.watcher.watching,
      scans: this.scanCount,
      objects: files.reduce((n, f) => n + f.objects, 0),
      skippedDocuments: this.skippedDocuments,
      ignoredDocuments: files.reduce((n, f) => n + f.ignoredDocuments, 0),
      files,
    };
    const error = this.lastSyncError;
    if (error !== undefined) status.lastSyncError = error;
    return status;
  }

  /** Rejects when the directory cannot be read: standalone mode without manifests is a configuration error. */
  async start(store: ObjectStore): Promise<void> {
    if (this.store !== undefined) throw new Error(`DirectorySource for "${this.dir}" was already started`);
    this.store = store;
    const started = Date.now();
    // Watch before the initial scan so that a file written while it runs is not missed;
    // but only once the directory is known to exist, so a typo yields one clear error.
    const isDir = await stat(this.dir).then(
      (st) => st.isDirectory(),
      () => false,
    );
    if (isDir) this.watcher.start();
    try {
      await this.rescan();
    } catch (err) {
      this.watcher.stop();
      throw err;
    }
    if (this.stopped) return;
    this.isSynced = true;
    const status = this.status();
    log.info('Manifest directory loaded', {
      dir: this.dir,
      files: status.files.length,
      objects: status.objects,
      skippedDocuments: status.skippedDocuments,
      ms: Date.now() - started,
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.isSynced = false;
    this.watcher.stop();
    await this.scanChain;
  }

  /**
   * Scans the directory now; resolves when a scan that began after this call
   * has finished. Events and the timer use it too. Rejects only when the
   * directory itself cannot be read.
   */
  rescan(): Promise<void> {
    if (this.queuedScan !== undefined) return this.queuedScan;
    const scan = this.scanChain.then(() => {
      this.queuedScan = undefined;
      return this.scanOnce();
    });
    this.queuedScan = scan;
    this.scanChain = scan.catch(() => undefined);
    return scan;
  }

  /** Directory errors were already logged by scanOnce; anything else (e.g. a throwing store listener) is not. */
  private reportScanFailure(err: unknown): void {
    if (errorMessage(err) !== this.dirError)
      log.error('Manifest directory scan failed', { dir: this.dir, err: errorMessage(err) });
  }

  private async scanOnce(): Promise<void> {
    if (this.stopped) return;
    this.scanCount++;
    let names: string[];
    try {
      const dirStat = await stat(this.dir);
      if (!dirStat.isDirectory()) throw new Error('not a directory');
      names = await readdir(this.dir);
    } catch (err) {
      const message = `Cannot read manifest directory "${this.dir}": ${errorMessage(err)}`;
      if (message !== this.dirError)
        log.warn('Cannot read manifest directory; keeping loaded objects', { dir: this.dir, err: message });
      this.dirError = message;
      throw new Error(message);
    }
    if (this.dirError !== undefined) log.info('Manifest directory readable again', { dir: this.dir });
    this.dirError = undefined;
    const present = new Set(names.filter(isManifestFileName));
    for (const name of [...this.files.keys()]) if (!present.has(name)) this.withdrawFile(name);
    for (const name of [...present].sort()) {
      if (this.stopped) return;
      await this.loadFile(name);
    }
  }

  private withdrawFile(name: string): void {
    const state = this.files.get(name);
    if (state === undefined || this.stopped) return;
    const file = join(this.dir, name);
    this.files.delete(name);
    this.store?.replaceAll(file, []);
    log.info('Manifest file removed', { file, objects: state.objects });
  }

  private async loadFile(name: string): Promise<void> {
    const file = join(this.dir, name);
    const prev = this.files.get(name);
    let text: string;
    let fingerprint: string;
    try {
      // stat before read: a write landing in between changes the fingerprint and triggers another load.
      const st = await stat(file);
      if (!st.isFile()) return this.withdrawFile(name);
      fingerprint = `${st.mtimeMs}:${st.size}:${st.ino}`;
      if (prev?.fingerprint === fingerprint) return;
      text = await readFile(file, 'utf8');
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return this.withdrawFile(name);
      // Not fingerprinted, so the next scan retries (e.g. after a chmod, which leaves mtime alone).
      this.keepPrevious(name, prev, '', `Cannot read "${file}": ${errorMessage(err)}`);
      return;
    }
    const objects: K8sObject[] = [];
    let skippedDocuments = 0;
    let ignoredDocuments = 0;
    let index = 0;
    const documents = decodeDocuments(file, text);
    for (;;) {
      let next: IteratorResult<unknown>;
      try {
        next = documents.next();
      } catch (err) {
        // A file that does not parse keeps what it served before (it may be half-written).
        this.keepPrevious(name, prev, fingerprint, `Cannot parse "${file}": ${errorMessage(err)}`);
        return;
      }
      if (next.done) break;
      const doc = next.value;
      const document = ++index;
      if (doc === null || doc === undefined) continue; // empty document, e.g. a trailing `---`
      let items: unknown[];
      try {
        items = expandList(doc);
      } catch (err) {
        skippedDocuments++;
        log.warn('Skipping malformed document', { file, document, err: errorMessage(err) });
        continue;
      }
      items.forEach((item, itemIndex) => {
        const where = items.length === 1 && item === doc ? { file, document } : { file, document, item: itemIndex + 1 };
        try {
          // An object equal to what the store holds keeps the stored instance: the fresh parse is
          // then garbage at once (young generation) instead of replacing 20,000 objects that
          // would all survive into the old generation on every edit of a large file.
          const obj = parseObject(item);
          const held = this.store?.get(objectKey(obj));
          objects.push(held && sameObject(held, obj) ? held : obj);
        } catch (err) {
          if (err instanceof UnsupportedKindError) {
            ignoredDocuments++;
            log.debug('Ignoring object of unsupported kind', { ...where, apiVersion: err.apiVersion, kind: err.kind });
          } else {
            skippedDocuments++;
            log.warn('Skipping malformed document', { ...where, err: errorMessage(err) });
          }
        }
      });
    }
    if (this.stopped || this.store === undefined) return;
    this.store.replaceAll(file, objects);
    this.files.set(name, { fingerprint, objects: objects.length, skippedDocuments, ignoredDocuments });
    if (prev?.error !== undefined) log.info('Manifest file loads again', { file, objects: objects.length });
    log.debug('Manifest file loaded', { file, objects: objects.length, skippedDocuments, ignoredDocuments });
  }

  /** Records a failed load while the objects from the last good load stay in the store. */
  private keepPrevious(name: string, prev: FileState | undefined, fingerprint: string, error: string): void {
    if (error !== prev?.error) {
      log.warn('Cannot load manifest file; keeping the objects previously loaded from it', {
        file: join(this.dir, name),
        err: error,
        kept: prev?.objects ?? 0,
      });
    }
    this.files.set(name, {
      fingerprint,
      objects: prev?.objects ?? 0,
      skippedDocuments: prev?.skippedDocuments ?? 0,
      ignoredDocuments: prev?.ignoredDocuments ?? 0,
      error,
    });
  }
}
