/*
 * Durable, atomic file replacement: readers see the old content or the new one, never a mix, and
 * after a crash the file holds one of them. The data goes to a temp file in the same directory
 * (hidden, and with an extension no reader of sluice's directories loads), is fsync'ed, renamed
 * over the target, and the directory is fsync'ed so that the rename itself survives a crash.
 * Used for CNI configs and the plugin binary (src/cni) and the endpoint registry (src/agent).
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface AtomicWriteOptions {
  /** Permission bits of the written file. */
  mode: number;
  /** Kept when the process may (it runs as root); ignored otherwise. Default: the process's. */
  owner?: { uid: number; gid: number };
  /** What the file is, for error messages: "CNI config", "pod registration". */
  what: string;
}

/** Temp files: `.<name>.<12 hex>.sluice-tmp`. */
const TEMP_SUFFIX = '.sluice-tmp';
const TEMP_FILE_PATTERN = /^\..*\.[0-9a-f]{12}\.sluice-tmp$/;

/** Whether a directory entry is a temp file of writeFileAtomic (a watcher ignores its events). */
export function isAtomicWriteTempFile(name: string): boolean {
  return name.endsWith(TEMP_SUFFIX);
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Makes a rename or unlink durable: without it, a node crash can bring the old entry back. */
export function fsyncDirectory(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** A symlinked file is replaced where it points, so the link stays a link. */
function writeTargetOf(file: string): string {
  try {
    return fs.lstatSync(file).isSymbolicLink() ? fs.realpathSync(file) : file;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return file;
    throw err;
  }
}

/** Replaces (or creates) file with data; throws `Cannot write <what> <file>: <cause>`. */
export function writeFileAtomic(file: string, data: string | Buffer, opts: AtomicWriteOptions): void {
  const target = writeTargetOf(file);
  const dir = path.dirname(target);
  const temp = path.join(dir, `.${path.basename(target)}.${randomBytes(6).toString('hex')}${TEMP_SUFFIX}`);
  try {
    const fd = fs.openSync(temp, 'wx', 0o600);
    try {
      fs.writeFileSync(fd, data);
      fs.fchmodSync(fd, opts.mode);
      if (opts.owner !== undefined) {
        try {
          fs.fchownSync(fd, opts.owner.uid, opts.owner.gid);
        } catch {
          // Not root: the file gets our owner, as any other writer's would.
        }
      }
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(temp, target);
    fsyncDirectory(dir);
  } catch (err) {
    fs.rmSync(temp, { force: true });
    throw new Error(`Cannot write ${opts.what} ${file}: ${errorMessage(err)}`);
  }
}

/** Removes the temp files of writes a crash interrupted; a missing directory has none. */
export function removeStaleTempFiles(dir: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) if (TEMP_FILE_PATTERN.test(name)) fs.rmSync(path.join(dir, name), { force: true });
}
