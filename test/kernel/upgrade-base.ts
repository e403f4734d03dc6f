/* The first release, v0.1.0 (commit cef7974 of this repository), built to run beside this tree:
 * checked out in a temporary git worktree under a test's work dir, built with `make all` against
 * this tree's node_modules (a symlink: nothing is installed), and the result kept under
 * build/upgrade-base/<commit id> so that later runs start at once. The worktree is removed
 * afterwards, also when the build fails.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { run } from '../harness';

export const ROOT = path.resolve(__dirname, '../..');
/** v0.1.0 */
export const BASE_REF = 'cef7974';

export interface BaseRelease {
  commit: string;
  /** the release's package root: bin/, build/, package.json, node_modules (a symlink) */
  dir: string;
  /** its `sluice` executable */
  sluice: string;
  /** its eBPF objects */
  objectDir: string;
}

function git(args: string[]): string {
  return execFileSync('git', ['-C', ROOT, ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 30000,
  }).trim();
}

/**
 * The full commit id of v0.1.0, or why the history does not have it. Only a clone without that
 * history (shallow, or no git at all) is a reason to skip; a full clone that lacks it is an error.
 */
export function baseCommit(): { commit: string } | { skip: string } {
  try {
    git(['rev-parse', '--git-dir']);
  } catch {
    return { skip: `no git history at ${ROOT}: the upgrade test builds v0.1.0 (${BASE_REF}) from it` };
  }
  try {
    return { commit: git(['rev-parse', '--verify', '--quiet', `${BASE_REF}^{commit}`]) };
  } catch {
    if (git(['rev-parse', '--is-shallow-repository']) === 'true') {
      return {
        skip: `shallow clone: v0.1.0 (${BASE_REF}) is not in its history (git fetch --unshallow to run the upgrade test)`,
      };
    }
    throw new Error(`v0.1.0 (${BASE_REF}) is not in the history of ${ROOT}, which is not shallow: was the history rewritten?`);
  }
}

function release(dir: string, commit: string): BaseRelease {
  return { commit, dir, sluice: path.join(dir, 'bin', 'sluice'), objectDir: path.join(dir, 'build', 'bpf') };
}

/** Builds v0.1.0 once per commit id; workDir holds the temporary worktree. */
export async function buildBaseRelease(commit: string, workDir: string): Promise<BaseRelease> {
  const cache = path.join(ROOT, 'build', 'upgrade-base', commit);
  if (fs.existsSync(path.join(cache, '.complete'))) return release(cache, commit);
  const src = path.join(workDir, `v0.1.0-src-${process.pid}`);
  const staging = `${cache}.tmp-${process.pid}`;
  fs.mkdirSync(workDir, { recursive: true });
  await run(['git', '-C', ROOT, 'worktree', 'add', '--detach', src, commit], { timeoutMs: 60000 });
  try {
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(src, 'node_modules'));
    await run(['make', '-C', src, 'all'], { timeoutMs: 600000 });
    fs.rmSync(staging, { recursive: true, force: true });
    fs.mkdirSync(staging, { recursive: true });
    for (const part of ['bin', 'build', 'package.json'])
      fs.cpSync(path.join(src, part), path.join(staging, part), { recursive: true });
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(staging, 'node_modules'));
    fs.writeFileSync(path.join(staging, '.complete'), `${commit}\n`);
    fs.rmSync(cache, { recursive: true, force: true });
    fs.renameSync(staging, cache);
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
    // removes the directory and its entry under .git/worktrees (never `prune`: other worktrees)
    const removed = await run(['git', '-C', ROOT, 'worktree', 'remove', '--force', src], { allowFail: true, timeoutMs: 60000 });
    if (removed.code !== 0) console.error(`[upgrade-base] git worktree remove ${src} failed: ${removed.stderr.trim()}`);
    fs.rmSync(src, { recursive: true, force: true });
  }
  return release(cache, commit);
}
