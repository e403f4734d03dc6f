/*
 * What sluice keeps so that it can give the primary CNI plugin its files back:
 *  - the original bytes of each config file before sluice's first edit of it, one JSON file per
 *    original in backupDir (`cni-original.<name>.json`, a directory only sluice writes);
 *  - with cni-exclusive, the other configs moved aside in cni-conf-dir to `<name>.sluice_bak` (not
 *    a config extension, so no runtime loads them), renamed back by uninstall.
 * Deciding when to save, restore or move is the installer's (src/cni/install.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fsyncDirectory, writeFileAtomic } from '../fs/atomic-write';
import { log } from '../log';
import { compareFileNames } from './conflist';

/** Suffix of configs moved aside by cni-exclusive. */
export const MOVED_ASIDE_SUFFIX = '.sluice_bak';

const ORIGINAL_PREFIX = 'cni-original.';
const ORIGINAL_SUFFIX = '.json';

/** A config file as the primary CNI wrote it, saved before sluice's first edit. */
export interface SavedOriginal {
  /** Name in cni-conf-dir of the file as the primary CNI wrote it. */
  file: string;
  /** Set when that file was a single-plugin config that sluice replaced by this `.conflist`. */
  convertedTo?: string;
  /** Permission bits of the original. */
  mode: number;
  /** The original bytes, base64, so that they can be restored byte-exact. */
  original: string;
  savedAt: string;
}

/** Saved originals by the name of the file they came from. */
export type SavedOriginals = Map<string, SavedOriginal>;

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Whether a name is taken (a dangling symlink takes it too). */
function exists(file: string): boolean {
  try {
    fs.lstatSync(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

function isSavedOriginal(value: Partial<SavedOriginal>): boolean {
  return (
    typeof value.file === 'string' &&
    typeof value.original === 'string' &&
    typeof value.mode === 'number' &&
    (value.convertedTo === undefined || typeof value.convertedTo === 'string')
  );
}

export class BackupStore {
  /** Saved originals that could not be read, warned about once each. */
  private readonly reportedBadOriginals = new Set<string>();

  /**
   * @param backupDir where originals are saved; created (0700) at the first save.
   * @param confDir cni-conf-dir, where configs are moved aside.
   */
  constructor(
    readonly backupDir: string,
    readonly confDir: string,
  ) {}

  private originalPath(name: string): string {
    return path.join(this.backupDir, `${ORIGINAL_PREFIX}${name}${ORIGINAL_SUFFIX}`);
  }

  /** The saved originals; unreadable ones are warned about once and left out. */
  loadOriginals(): SavedOriginals {
    const originals: SavedOriginals = new Map();
    let names: string[];
    try {
      names = fs.readdirSync(this.backupDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return originals;
      throw new Error(`Cannot read backup directory ${this.backupDir}: ${errorMessage(err)}`);
    }
    for (const name of names.sort(compareFileNames)) {
      if (!name.startsWith(ORIGINAL_PREFIX) || !name.endsWith(ORIGINAL_SUFFIX)) continue;
      const file = path.join(this.backupDir, name);
      try {
        const saved = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<SavedOriginal>;
        if (!isSavedOriginal(saved)) throw new Error('missing or mistyped fields');
        originals.set(saved.file as string, saved as SavedOriginal);
      } catch (err) {
        if (!this.reportedBadOriginals.has(file))
          log.warn('Ignoring unreadable saved CNI config original', { file, err: errorMessage(err) });
        this.reportedBadOriginals.add(file);
      }
    }
    return originals;
  }

  /** Saves an original durably (nothing is written when the same one is saved already). */
  saveOriginal(originals: SavedOriginals, saved: SavedOriginal): void {
    const known = originals.get(saved.file);
    if (
      known !== undefined &&
      known.original === saved.original &&
      known.convertedTo === saved.convertedTo &&
      known.mode === saved.mode
    )
      return;
    try {
      fs.mkdirSync(this.backupDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new Error(`Cannot create backup directory ${this.backupDir}: ${errorMessage(err)}`);
    }
    writeFileAtomic(this.originalPath(saved.file), JSON.stringify(saved, null, 2) + '\n', {
      mode: 0o600,
      what: 'saved CNI config original',
    });
    originals.set(saved.file, saved);
  }

  dropOriginal(originals: SavedOriginals, name: string): void {
    fs.rmSync(this.originalPath(name), { force: true });
    originals.delete(name);
  }

  /** Renames each file of cni-conf-dir to `<name>.sluice_bak`; an older backup of the same name is replaced (the newer file is what the runtime would have loaded). */
  moveAside(names: readonly string[]): void {
    for (const name of names) {
      const file = path.join(this.confDir, name);
      const aside = file + MOVED_ASIDE_SUFFIX;
      fs.renameSync(file, aside);
      log.info('CNI config moved aside (cni-exclusive)', { file, movedTo: aside });
    }
    if (names.length > 0) fsyncDirectory(this.confDir);
  }

  /** Renames every `<name>.sluice_bak` back, unless `<name>` exists again. One line per file. */
  restoreMovedAside(): string[] {
    const lines: string[] = [];
    let restored = false;
    for (const name of fs.readdirSync(this.confDir).sort(compareFileNames)) {
      if (!name.endsWith(MOVED_ASIDE_SUFFIX) || name.length === MOVED_ASIDE_SUFFIX.length) continue;
      const aside = path.join(this.confDir, name);
      const original = aside.slice(0, -MOVED_ASIDE_SUFFIX.length);
      if (exists(original)) {
        lines.push(`kept ${aside}: ${original} exists again`);
        continue;
      }
      fs.renameSync(aside, original);
      restored = true;
      lines.push(`restored ${original} (moved aside by cni-exclusive)`);
    }
    if (restored) fsyncDirectory(this.confDir);
    return lines;
  }
}
