/* The demo itself, run as `make demo` runs it: it must finish, tell every scene, check what it
 * narrates (it exits non-zero when a check fails) and leave nothing of its node behind.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { findCgroup2Mount, run } from '../harness';
import { ROOT } from '../kernel/lb-env';

const SCENES = [
  'A simulated node',
  'sluice chains itself into the primary CNI config',
  'Socket-LB',
  'The agent is killed (SIGKILL)',
  'Istio sidecar mode',
  'Istio ambient mode',
  'bpftool prints named fields',
  'sluice doctor',
  'sluice monitor',
  'Metrics',
  'Uninstall',
  'Cleaned up',
];

describe.skipIf(process.getuid?.() !== 0)('make demo (needs root)', () => {
  it('runs every scene, checks what it tells and removes its node', async () => {
    const res = spawnSync(path.join(ROOT, 'node_modules/.bin/tsx'), ['test/demo/run.ts'], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 170000,
    });
    expect(res.status, `${res.stdout}\n${res.stderr}`).toBe(0);
    const headings = res.stdout
      .split('\n')
      .filter((l) => l.startsWith('== '))
      .map((l) => l.slice(3));
    expect(headings).toHaveLength(SCENES.length);
    SCENES.forEach((s, i) => expect(headings[i]).toContain(s));
    expect(res.stdout).toContain('mode=sidecar');
    expect(res.stdout).toMatch(/mode=ambient .*zds=acked/);
    const id = /node (sltest-[0-9a-f]{6}):/.exec(res.stdout)?.[1];
    expect(id).toBeDefined();
    expect((await run(['ip', 'netns', 'list'])).stdout).not.toContain(`${id}-`);
    for (const left of [`/sys/fs/bpf/${id}`, path.join(findCgroup2Mount(), id!), path.join(os.tmpdir(), id!)]) {
      expect(fs.existsSync(left), left).toBe(false);
    }
  }, 180000);
});
