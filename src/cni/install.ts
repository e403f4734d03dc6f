/*
 * Chains sluice into the node's CNI configuration, as istio-cni and Cilium's
 * installers do: the sluice-cni binary goes to cni-bin-dir, and sluice's entry
 * is appended to the `plugins` of the config file the container runtime loads
 * (libcni / containerd / CRI-O: the first file of cni-conf-dir, by name, that
 * is a valid config). The primary CNI plugin owns that file and may rewrite it
 * at any time (typically when it restarts), so watch() puts the entry back.
 *
 * What sluice promises the primary CNI:
 *  - its entries and top-level fields keep their content and order; sluice's
 *    entry is edited into the text, so even the formatting stays;
 *  - before sluice's first edit, the file's bytes are saved in backupDir, and
 *    uninstall() writes them back when the file is still as sluice left it;
 *  - without cni-exclusive, no other file is ever renamed, rewritten or deleted;
 *  - a file that the runtime cannot load is never rewritten.
 * Every write is atomic and durable (src/fs/atomic-write.ts).
 *
 * This module is the orchestration; its parts live apart: which file the runtime
 * loads (runtime-choice.ts), the saved originals and moved-aside files
 * (backup-store.ts), text edits of a config (conflist.ts), following the
 * directory (src/fs/dir-watcher.ts).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fsyncDirectory, isAtomicWriteTempFile, removeStaleTempFiles, writeFileAtomic } from '../fs/atomic-write';
import { DirWatcher } from '../fs/dir-watcher';
import { log } from '../log';
import { BackupStore, type SavedOriginal, type SavedOriginals } from './backup-store';
import {
  isConfigFileName,
  isSluiceEntry,
  jsonEqual,
  listFileNameFor,
  parseCniConfig,
  singleToListText,
  SLUICE_PLUGIN_TYPE,
  withoutSluiceEntries,
  withoutSluiceValue,
  withSluiceEntryLast,
  type JsonObject,
  type ParsedCniConfig,
} from './conflist';
import { configFileNames, configTheRuntimeLoads } from './runtime-choice';

export { MOVED_ASIDE_SUFFIX } from './backup-store';

export interface CniInstallOptions {
  /** cni-conf-dir, e.g. /etc/cni/net.d. Never created by sluice: the primary CNI plugin creates it. */
  confDir: string;
  /** cni-bin-dir, e.g. /opt/cni/bin. Created (0755) when missing. */
  binDir: string;
  /** cni-exclusive: move every other loadable config aside to `<name>.sluice_bak`. Default false. */
  exclusive: boolean;
  /**
   * cni-conf-file-name: a file name inside confDir to chain into, instead of the
   * file the runtime would load. Default: the file the runtime would load.
   */
  confFileName?: string;
  /** The built sluice-cni executable, installed as `<binDir>/sluice-cni`. */
  pluginBinary: string;
  /** sluice's entry in the plugins list; its `type` must be "sluice-cni". */
  pluginConf: Record<string, unknown>;
  /** A directory sluice owns, for the originals it must be able to restore. Created (0700) when needed. */
  backupDir: string;
  /** Period of the safety-net rescan while watching, in ms. Default 1000. */
  pollMs?: number;
}

export interface CniInstallStatus {
  installed: boolean;
  /** The config file the runtime loads (or would, once sluice is in it). */
  file?: string;
  /** Why sluice is not installed. */
  reason?: string;
}

const DEFAULT_POLL_MS = 1000;
/** Delay between the first fs event of a burst and the rescan it triggers. */
const DEBOUNCE_MS = 100;
/** Attempts when a file changes between sluice reading and replacing it. */
const MAX_ATTEMPTS = 3;
/** Repairs per minute from which another writer is probably undoing sluice's entry each time. */
const REPAIRS_PER_MINUTE_WARNING = 10;

/** A config file as read, with what is needed to replace it safely. */
interface ConfigFile {
  name: string;
  /** Full path. */
  file: string;
  bytes: Buffer;
  text: string;
  mode: number;
  uid: number;
  gid: number;
  /** `ino:size:mtimeMs` when read: a write is abandoned when the file changed since. */
  version: string;
  parsed: ParsedCniConfig;
}

type Outcome<T> = ({ ok: true } & T) | { ok: false; reason: string };
type Trigger = 'install' | 'watch';

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function errorCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

function versionOf(st: fs.Stats): string {
  return `${st.ino}:${st.size}:${st.mtimeMs}`;
}

/** The version of a file now; undefined when it is gone. */
function currentVersion(file: string): string | undefined {
  try {
    return versionOf(fs.statSync(file));
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

function exists(file: string): boolean {
  try {
    fs.lstatSync(file);
    return true;
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return false;
    throw err;
  }
}

function isRegularFile(file: string): boolean {
  try {
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** Repeats an operation that returns undefined when a file changed under it. */
function withRetries<T>(attempt: () => T | undefined): T | undefined {
  for (let i = 0; i < MAX_ATTEMPTS; i++) {
    const result = attempt();
    if (result !== undefined) return result;
  }
  return undefined;
}

function requirePath(name: string, value: unknown): string {
  if (typeof value !== 'string' || value === '')
    throw new TypeError(`Cannot use CNI install option ${name}: must be a non-empty path`);
  return path.resolve(value);
}

export class CniInstaller {
  private readonly confDir: string;
  private readonly binDir: string;
  private readonly exclusive: boolean;
  private readonly pinnedName: string | undefined;
  private readonly pluginBinary: string;
  /** pluginConf as it reads back from JSON, so comparisons with files are exact. */
  private readonly entry: JsonObject;
  private readonly backupDir: string;
  private readonly pollMs: number;
  private readonly binaryPath: string;

  private readonly backups: BackupStore;

  /** The file sluice's entry was last placed in, to follow a move or a deletion. */
  private current: string | undefined;
  /** Set while watching. */
  private dirWatcher: DirWatcher | undefined;
  /** Error of the last install or repair, when it failed. */
  private lastFailure: string | undefined;
  /** Why nothing could be installed at the last attempt, logged when it changes. */
  private waitingReason: string | undefined;
  /** Content hash of each skipped (unloadable) file, to warn once per content. */
  private readonly skippedContent = new Map<string, string>();
  private repairTimes: number[] = [];
  private fightReported = false;

  constructor(opts: CniInstallOptions) {
    this.confDir = requirePath('confDir', opts.confDir);
    this.binDir = requirePath('binDir', opts.binDir);
    this.pluginBinary = requirePath('pluginBinary', opts.pluginBinary);
    this.backupDir = requirePath('backupDir', opts.backupDir);
    if (this.backupDir === this.confDir) {
      throw new TypeError(`Cannot use CNI install option backupDir ${this.backupDir}: it must not be cni-conf-dir`);
    }
    this.exclusive = opts.exclusive === true;
    if (opts.confFileName !== undefined) {
      const name = opts.confFileName;
      if (name === '' || name !== path.basename(name) || !isConfigFileName(name)) {
        throw new TypeError(
          `Cannot use cni-conf-file-name "${name}": must be the name of a .conflist, .conf or .json file inside ${this.confDir}`,
        );
      }
      this.pinnedName = name;
    }
    const pollMs = opts.pollMs ?? DEFAULT_POLL_MS;
    if (!Number.isFinite(pollMs) || pollMs <= 0)
      throw new RangeError(`Cannot use CNI install option pollMs ${pollMs}: must be a positive number of milliseconds`);
    this.pollMs = pollMs;
    const entry: unknown = JSON.parse(JSON.stringify(opts.pluginConf ?? null));
    if (!isSluiceEntry(entry)) {
      throw new TypeError(
        `Cannot use the CNI plugin entry ${JSON.stringify(opts.pluginConf)}: its type must be "${SLUICE_PLUGIN_TYPE}"`,
      );
    }
    this.entry = entry as JsonObject;
    this.binaryPath = path.join(this.binDir, SLUICE_PLUGIN_TYPE);
    this.backups = new BackupStore(this.backupDir, this.confDir);
  }

  /**
   * Installs the binary and the entry now. Idempotent: writes nothing when both
   * are in place. When there is no config to chain into yet, returns with
   * status() saying why (watch() keeps trying); throws on I/O errors.
   */
  install(): void {
    try {
      removeStaleTempFiles(this.binDir);
      removeStaleTempFiles(this.confDir);
      removeStaleTempFiles(this.backupDir);
      if (this.installBinary()) log.info('CNI plugin binary installed', { file: this.binaryPath });
      this.reconcile('install');
      this.lastFailure = undefined;
    } catch (err) {
      this.lastFailure = errorMessage(err);
      throw err;
    }
  }

  /** Follows confDir (fs.watch, debounced, plus a rescan every pollMs) and repairs the installation. */
  watch(): void {
    if (this.dirWatcher !== undefined) return;
    this.dirWatcher = new DirWatcher(this.confDir, () => this.repair(), {
      debounceMs: DEBOUNCE_MS,
      rescanMs: this.pollMs,
      // Our temp files come and go with every write; the rename onto the target is reported too.
      ignore: isAtomicWriteTempFile,
      what: 'CNI config directory',
      // The normal wait for the primary CNI plugin to create it.
      missingIsNormal: true,
    });
    this.dirWatcher.start();
    // Catches what changed between install() and now.
    this.dirWatcher.requestRescan();
  }

  /** Stops watching; the installation stays in place. */
  stop(): void {
    this.dirWatcher?.stop();
    this.dirWatcher = undefined;
  }

  status(): CniInstallStatus {
    let scan: Outcome<{ files: ConfigFile[] }>;
    try {
      scan = this.readConfDir();
    } catch (err) {
      return { installed: false, reason: errorMessage(err) };
    }
    if (!scan.ok) return { installed: false, reason: scan.reason };
    const target = this.chooseTarget(scan.files, this.backups.loadOriginals());
    if (!target.ok) return { installed: false, reason: target.reason };
    const { file, parsed } = target.config;
    const notInstalled = (reason: string): CniInstallStatus => ({
      installed: false,
      file,
      reason: this.lastFailure === undefined ? reason : `${reason} (last attempt failed: ${this.lastFailure})`,
    });
    if (parsed.kind !== 'list') {
      return notInstalled(`${file} is a single-plugin config not yet converted to ${listFileNameFor(target.config.name)}`);
    }
    const entries = parsed.plugins.filter(isSluiceEntry).length;
    const last = parsed.plugins[parsed.plugins.length - 1];
    if (entries === 0) return notInstalled(`${file} has no ${SLUICE_PLUGIN_TYPE} entry`);
    if (entries > 1) return notInstalled(`${file} has ${entries} ${SLUICE_PLUGIN_TYPE} entries`);
    if (!isSluiceEntry(last)) return notInstalled(`the ${SLUICE_PLUGIN_TYPE} entry in ${file} is not the last plugin`);
    if (!jsonEqual(last, this.entry))
      return notInstalled(`the ${SLUICE_PLUGIN_TYPE} entry in ${file} differs from the configured one`);
    if (!isRegularFile(this.binaryPath)) return notInstalled(`CNI plugin binary ${this.binaryPath} is missing`);
    return { installed: true, file };
  }

  /**
   * Stops watching and undoes the installation: sluice's entry leaves every
   * config (the original bytes come back when the file is still as sluice left
   * it), converted and moved-aside files come back, the binary goes.
   * Returns one human-readable line per action.
   */
  uninstall(): string[] {
    this.stop();
    const lines: string[] = [];
    const originals = this.backups.loadOriginals();
    for (const saved of [...originals.values()]) {
      const released = withRetries(() => this.release(saved, originals, true));
      lines.push(
        ...(released ?? [`could not restore ${path.join(this.confDir, saved.file)}: it kept changing while sluice edited it`]),
      );
    }
    if (fs.existsSync(this.confDir)) {
      lines.push(...this.removeRemainingEntries());
      lines.push(...this.backups.restoreMovedAside());
      removeStaleTempFiles(this.confDir);
    } else {
      lines.push(`CNI config directory ${this.confDir} does not exist; no config to restore`);
    }
    try {
      fs.unlinkSync(this.binaryPath);
      lines.push(`removed ${this.binaryPath}`);
    } catch (err) {
      if (errorCode(err) !== 'ENOENT')
        throw new Error(`Cannot remove CNI plugin binary ${this.binaryPath}: ${errorMessage(err)}`);
      lines.push(`no CNI plugin binary at ${this.binaryPath}`);
    }
    removeStaleTempFiles(this.binDir);
    this.current = undefined;
    return lines;
  }

  /* ---- Binary ---- */

  /** Copies the binary unless identical; returns whether it wrote. */
  private installBinary(): boolean {
    let source: Buffer;
    try {
      source = fs.readFileSync(this.pluginBinary);
    } catch (err) {
      throw new Error(`Cannot read CNI plugin binary ${this.pluginBinary}: ${errorMessage(err)}`);
    }
    let installed: Buffer | undefined;
    try {
      installed = fs.readFileSync(this.binaryPath);
    } catch {
      installed = undefined;
    }
    if (installed?.equals(source)) {
      if ((fs.statSync(this.binaryPath).mode & 0o7777) !== 0o755) fs.chmodSync(this.binaryPath, 0o755);
      return false;
    }
    try {
      fs.mkdirSync(this.binDir, { recursive: true, mode: 0o755 });
    } catch (err) {
      throw new Error(`Cannot create CNI bin directory ${this.binDir}: ${errorMessage(err)}`);
    }
    // Rename, never write in place: a running sluice-cni would fail the write (ETXTBSY), and a
    // runtime exec'ing it mid-write would run a truncated binary.
    writeFileAtomic(this.binaryPath, source, { mode: 0o755, what: 'CNI plugin binary' });
    return true;
  }

  /** Cheap check for the watch loop (the full comparison reads the whole binary). */
  private binaryNeedsRepair(): boolean {
    try {
      const installed = fs.statSync(this.binaryPath);
      return !installed.isFile() || installed.size !== fs.statSync(this.pluginBinary).size;
    } catch (err) {
      return errorCode(err) === 'ENOENT' && isRegularFile(this.pluginBinary);
    }
  }

  /* ---- Reading confDir ---- */

  /** Reads a config; undefined when it is gone or not a regular file. */
  private readConfigFile(name: string): ConfigFile | undefined {
    const file = path.join(this.confDir, name);
    let bytes: Buffer;
    let st: fs.Stats;
    try {
      // stat first: opening a FIFO named x.conf would block.
      if (!fs.statSync(file).isFile()) return undefined;
      const fd = fs.openSync(file, 'r');
      try {
        st = fs.fstatSync(fd);
        bytes = fs.readFileSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    } catch (err) {
      if (errorCode(err) === 'ENOENT') return undefined;
      throw new Error(`Cannot read CNI config ${file}: ${errorMessage(err)}`);
    }
    const text = bytes.toString('utf8');
    const parsed = parseCniConfig(name, text);
    if (parsed.kind === 'invalid') this.noteSkipped(name, file, bytes, parsed.reason, parsed.notJson);
    else this.skippedContent.delete(name);
    return { name, file, bytes, text, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, version: versionOf(st), parsed };
  }

  private noteSkipped(name: string, file: string, bytes: Buffer, reason: string, notJson: boolean): void {
    const hash = createHash('sha256').update(bytes).digest('hex');
    if (this.skippedContent.get(name) === hash) return;
    this.skippedContent.set(name, hash);
    const msg = notJson ? 'Skipping CNI config that is not valid JSON' : 'Skipping CNI config that the runtime cannot load';
    log.warn(msg, { file, reason });
  }

  /** Config files of confDir in the order the runtime considers them. */
  private readConfDir(): Outcome<{ files: ConfigFile[] }> {
    let names: string[];
    try {
      names = fs.readdirSync(this.confDir);
    } catch (err) {
      const code = errorCode(err);
      if (code === 'ENOENT') {
        return {
          ok: false,
          reason: `CNI config directory ${this.confDir} does not exist yet (waiting for the primary CNI plugin to create it)`,
        };
      }
      if (code === 'ENOTDIR') return { ok: false, reason: `CNI config directory ${this.confDir} is not a directory` };
      throw new Error(`Cannot read CNI config directory ${this.confDir}: ${errorMessage(err)}`);
    }
    const present = new Set(names);
    for (const name of [...this.skippedContent.keys()]) if (!present.has(name)) this.skippedContent.delete(name);
    const files = configFileNames(names).flatMap((name) => this.readConfigFile(name) ?? []);
    return { ok: true, files };
  }

  /** The file to chain into: the pinned one, or the one the runtime loads. */
  private chooseTarget(files: ConfigFile[], originals: SavedOriginals): Outcome<{ config: ConfigFile }> {
    const pinned = this.pinnedName;
    if (pinned !== undefined) {
      let config = files.find((f) => f.name === pinned);
      // A pinned .conf that sluice converted lives on as its .conflist.
      const convertedTo = originals.get(pinned)?.convertedTo;
      if (config === undefined && convertedTo !== undefined) config = files.find((f) => f.name === convertedTo);
      if (config === undefined) {
        return { ok: false, reason: `waiting for CNI config ${path.join(this.confDir, pinned)} (cni-conf-file-name) to appear` };
      }
      if (config.parsed.kind === 'invalid')
        return { ok: false, reason: `Cannot parse CNI config ${config.file}: ${config.parsed.reason}` };
      return { ok: true, config };
    }
    // A conversion sorts where its .conf was: that is the position the primary CNI chose.
    const present = new Set(files.map((f) => f.name));
    const sortsAs = new Map<string, string>();
    for (const saved of originals.values()) {
      if (saved.convertedTo !== undefined && !present.has(saved.file)) sortsAs.set(saved.convertedTo, saved.file);
    }
    const choice = configTheRuntimeLoads(
      files.map((f) => ({ name: f.name, text: f.text })),
      { sortsAs },
    );
    const chosen = choice.found ? files.find((f) => f.name === choice.name) : undefined;
    if (chosen !== undefined) return { ok: true, config: chosen };
    const skipped = choice.skipped.map((f) => `${f.name}: ${f.reason}`);
    if (skipped.length > 0)
      return { ok: false, reason: `no loadable CNI config in ${this.confDir} (skipped ${skipped.join('; ')})` };
    return { ok: false, reason: `no CNI config in ${this.confDir} yet (waiting for the primary CNI plugin to write one)` };
  }

  /* ---- Placing and removing the entry ---- */

  /** Replaces a config read earlier; false (nothing written) when it changed since. */
  private writeConfig(config: ConfigFile, data: string | Buffer): boolean {
    if (currentVersion(config.file) !== config.version) return false;
    writeFileAtomic(config.file, data, { mode: config.mode, owner: config, what: 'CNI config' });
    return true;
  }

  private reportWrite(trigger: Trigger, file: string, reason: string): void {
    if (trigger === 'install') {
      log.info('CNI config installed', { file, reason });
      return;
    }
    log.info('CNI config repaired', { file, reason });
    const now = Date.now();
    this.repairTimes = this.repairTimes.filter((t) => now - t < 60_000);
    this.repairTimes.push(now);
    if (this.repairTimes.length < REPAIRS_PER_MINUTE_WARNING) {
      this.fightReported = false;
    } else if (!this.fightReported) {
      this.fightReported = true;
      log.warn('CNI config keeps losing the sluice-cni entry; another installer may be rewriting it', {
        file,
        repairsInLastMinute: this.repairTimes.length,
      });
    }
  }

  private reconcile(trigger: Trigger): void {
    for (let attempt = 1; !this.reconcileOnce(trigger); attempt++) {
      if (attempt === MAX_ATTEMPTS)
        throw new Error(`Cannot install into CNI config in ${this.confDir}: files kept changing while sluice edited them`);
    }
  }

  /** One pass; false when a file changed between reading and writing it (then the pass is repeated). */
  private reconcileOnce(trigger: Trigger): boolean {
    const scan = this.readConfDir();
    if (!scan.ok) {
      this.noteWaiting(scan.reason);
      return true;
    }
    const originals = this.backups.loadOriginals();
    const target = this.chooseTarget(scan.files, originals);
    if (!target.ok) {
      this.noteWaiting(target.reason);
      // Originals of files that are gone have nothing left to restore.
      for (const saved of [...originals.values()]) {
        if (!exists(path.join(this.confDir, saved.convertedTo ?? saved.file))) this.backups.dropOriginal(originals, saved.file);
      }
      return true;
    }
    // An entry without its binary fails every pod's CNI ADD: never add one before the binary is in place.
    if (!isRegularFile(this.binaryPath)) {
      this.noteWaiting(`CNI plugin binary ${this.binaryPath} is missing`);
      return true;
    }
    const config = target.config;
    const previous = this.current;
    const destination = config.parsed.kind === 'single' ? listFileNameFor(config.name) : config.name;
    let moveReason: string | undefined;
    if (previous !== undefined && previous !== destination) {
      moveReason = scan.files.some((f) => f.name === previous)
        ? `moved from ${previous}: ${config.name} is loaded first`
        : `followed to ${config.name}: ${previous} was deleted`;
    }
    const placed =
      config.parsed.kind === 'single'
        ? this.convertAndPlace(config, originals, trigger, moveReason)
        : this.placeInList(config, originals, trigger, moveReason);
    if (placed === undefined) return false;
    this.waitingReason = undefined;
    this.current = placed;

    // Give back every file sluice edited other than the one it is in now.
    const held = new Set([...originals.values()].map((s) => s.convertedTo ?? s.file));
    for (const saved of [...originals.values()]) {
      if (saved.file === config.name || (saved.convertedTo ?? saved.file) === placed) continue;
      const released = this.release(saved, originals, false);
      if (released === undefined) return false;
      if (released.length > 0)
        log.info('CNI config released', { file: path.join(this.confDir, saved.convertedTo ?? saved.file), actions: released });
    }
    if (previous !== undefined && previous !== placed && !held.has(previous)) {
      const old = this.readConfigFile(previous);
      if (old?.parsed.kind === 'list' && old.parsed.plugins.some(isSluiceEntry)) {
        if (!this.writeConfig(old, withoutSluiceEntries(old.text))) return false;
        log.info('CNI config released', { file: old.file, actions: [`removed the ${SLUICE_PLUGIN_TYPE} entry`] });
      }
    }
    if (this.exclusive) this.moveAsideOthers(placed);
    return true;
  }

  private noteWaiting(reason: string): void {
    if (reason !== this.waitingReason) log.warn('CNI config not installed', { reason });
    this.waitingReason = reason;
  }

  /** Puts the entry last in a list config; returns its name, or undefined when the file changed meanwhile. */
  private placeInList(config: ConfigFile, originals: SavedOriginals, trigger: Trigger, moveReason?: string): string | undefined {
    if (config.parsed.kind !== 'list') throw new Error(`Cannot edit CNI config ${config.file}: not a list`);
    const edit = withSluiceEntryLast(config.text, this.entry);
    if (edit.change === undefined) return config.name;
    // The original is the file as the primary CNI last wrote it: saved again whenever sluice's entry
    // is absent (the primary rewrote the file), kept while the entry is there (sluice's own edit).
    if (!config.parsed.plugins.some(isSluiceEntry)) {
      this.backups.saveOriginal(originals, {
        file: config.name,
        mode: config.mode,
        original: config.bytes.toString('base64'),
        savedAt: new Date().toISOString(),
      });
    }
    if (!this.writeConfig(config, edit.text)) return undefined;
    this.reportWrite(trigger, config.file, moveReason ?? edit.change);
    return config.name;
  }

  /**
   * Replaces a single-plugin config by `<stem>.conflist` ending with the entry:
   * the list is written before the original is removed, so the runtime always
   * finds one of them. Returns the list's name, or undefined when the original
   * changed meanwhile.
   */
  private convertAndPlace(
    config: ConfigFile,
    originals: SavedOriginals,
    trigger: Trigger,
    moveReason?: string,
  ): string | undefined {
    const listName = listFileNameFor(config.name);
    const listFile = path.join(this.confDir, listName);
    const listExists = exists(listFile);
    if (listExists && originals.get(config.name)?.convertedTo !== listName) {
      throw new Error(
        `Cannot convert CNI config ${config.file} to ${listFile}: ${listFile} already exists and is not sluice's (set cni-conf-file-name to chain into one of them)`,
      );
    }
    const text = withSluiceEntryLast(singleToListText(config.text), this.entry).text;
    this.backups.saveOriginal(originals, {
      file: config.name,
      convertedTo: listName,
      mode: config.mode,
      original: config.bytes.toString('base64'),
      savedAt: new Date().toISOString(),
    });
    if (!listExists || fs.readFileSync(listFile, 'utf8') !== text)
      writeFileAtomic(listFile, text, { mode: config.mode, owner: config, what: 'CNI config' });
    // The primary rewrote its .conf meanwhile: convert that version at the next pass.
    if (currentVersion(config.file) !== config.version) return undefined;
    fs.unlinkSync(config.file);
    fsyncDirectory(this.confDir);
    this.reportWrite(trigger, listFile, moveReason ?? `converted single-plugin config ${config.name} to ${listName}`);
    return listName;
  }

  /**
   * Gives a file back to its primary CNI: its original bytes when it is still as
   * sluice left it, else just without sluice's entry. `final` (uninstall) also
   * forgets originals of files that cannot be parsed now. Returns what it did,
   * or undefined when the file changed meanwhile.
   */
  private release(saved: SavedOriginal, originals: SavedOriginals, final: boolean): string[] | undefined {
    const heldName = saved.convertedTo ?? saved.file;
    const heldFile = path.join(this.confDir, heldName);
    const originalFile = path.join(this.confDir, saved.file);
    const original = Buffer.from(saved.original, 'base64');
    const config = this.readConfigFile(heldName);
    if (config === undefined) {
      this.backups.dropOriginal(originals, saved.file);
      return [
        saved.convertedTo === undefined
          ? `${heldFile} was deleted meanwhile; nothing to restore`
          : `${heldFile} was deleted meanwhile; not restoring ${originalFile}`,
      ];
    }
    if (config.parsed.kind !== 'list') {
      if (!final) return []; // Keep the original until the file parses again.
      this.backups.dropOriginal(originals, saved.file);
      return [`left ${heldFile} as it is: ${config.parsed.kind === 'invalid' ? config.parsed.reason : 'not a list config'}`];
    }
    let expected: unknown;
    try {
      const originalText = original.toString('utf8');
      expected = JSON.parse(saved.convertedTo === undefined ? originalText : singleToListText(originalText));
    } catch {
      expected = undefined; // A corrupt saved original: fall back to removing the entry.
    }
    const lines: string[] = [];
    const hasEntry = config.parsed.plugins.some(isSluiceEntry);
    if (expected !== undefined && jsonEqual(withoutSluiceValue(config.parsed.config), expected)) {
      if (saved.convertedTo !== undefined) {
        if (exists(originalFile)) {
          lines.push(`kept ${originalFile}: it was written again meanwhile`);
        } else {
          writeFileAtomic(originalFile, original, { mode: saved.mode, owner: config, what: 'CNI config' });
          lines.push(`restored ${originalFile}`);
        }
        if (currentVersion(heldFile) !== config.version) return undefined;
        fs.unlinkSync(heldFile);
        fsyncDirectory(this.confDir);
        lines.push(`removed ${heldFile} (sluice's conversion of ${saved.file})`);
      } else if (!config.bytes.equals(original)) {
        if (!this.writeConfig(config, original)) return undefined;
        lines.push(`restored ${heldFile} to its original content`);
      }
    } else if (hasEntry) {
      if (!this.writeConfig(config, withoutSluiceEntries(config.text))) return undefined;
      const notRestoring = saved.convertedTo === undefined ? '' : `; not restoring ${originalFile}`;
      lines.push(
        `removed the ${SLUICE_PLUGIN_TYPE} entry from ${heldFile} (it was changed by another writer since sluice edited it${notRestoring})`,
      );
    } else {
      lines.push(`left ${heldFile} as it is: it no longer has a ${SLUICE_PLUGIN_TYPE} entry`);
    }
    this.backups.dropOriginal(originals, saved.file);
    return lines;
  }

  /** Uninstall: entries sluice has no original for (e.g. backupDir was lost). */
  private removeRemainingEntries(): string[] {
    const lines: string[] = [];
    for (const name of configFileNames(fs.readdirSync(this.confDir))) {
      const done = withRetries(() => {
        const config = this.readConfigFile(name);
        if (config?.parsed.kind !== 'list' || !config.parsed.plugins.some(isSluiceEntry)) return '';
        if (!this.writeConfig(config, withoutSluiceEntries(config.text))) return undefined;
        return `removed the ${SLUICE_PLUGIN_TYPE} entry from ${config.file} (no saved original)`;
      });
      if (done === undefined)
        lines.push(`could not remove the ${SLUICE_PLUGIN_TYPE} entry from ${path.join(this.confDir, name)}: it kept changing`);
      else if (done !== '') lines.push(done);
    }
    return lines;
  }

  /* ---- cni-exclusive ---- */

  /** Moves aside every other config the runtime could load; files it cannot load are harmless and left alone. */
  private moveAsideOthers(keep: string): void {
    const others = configFileNames(fs.readdirSync(this.confDir)).filter((name) => {
      if (name === keep) return false;
      const config = this.readConfigFile(name);
      return config !== undefined && config.parsed.kind !== 'invalid';
    });
    this.backups.moveAside(others);
  }

  /* ---- Watching ---- */

  private repair(): void {
    if (this.dirWatcher === undefined) return;
    try {
      if (this.binaryNeedsRepair() && this.installBinary()) {
        log.info('CNI config repaired', { file: this.binaryPath, reason: 'CNI plugin binary missing or changed' });
      }
      this.reconcile('watch');
      if (this.lastFailure !== undefined) log.info('CNI config repairs work again', { dir: this.confDir });
      this.lastFailure = undefined;
    } catch (err) {
      const message = errorMessage(err);
      if (message !== this.lastFailure) log.error('CNI config repair failed', { dir: this.confDir, err: message });
      this.lastFailure = message;
    }
  }
}
