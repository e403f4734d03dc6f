/* The CNI plugin's C unit tests (test/c/NAME-test.c, built by `make all` into build/test), one
 * vitest case per C case; and the built plugin's VERSION answer against the versions the agent's
 * handler accepts (src/cni/spec.ts), so the two lists cannot drift apart.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SUPPORTED_VERSIONS } from '../../src/cni/spec';

const ROOT = path.resolve(__dirname, '../..');
const isRoot = process.getuid?.() === 0;

/** The case names a C test binary lists; a missing binary fails the file (run `make all`). */
function casesOf(binary: string): string[] {
  const r = spawnSync(binary, ['--list'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error(
      `Cannot list the cases of ${binary} (built by make all): ${r.error?.message ?? `exit ${r.status}: ${r.stderr}`}`,
    );
  }
  return r.stdout.split('\n').filter((line) => line !== '');
}

function cTestSuite(name: string): void {
  const binary = path.join(ROOT, 'build/test', name);
  const cases = casesOf(binary);
  it(`${name} has cases`, () => expect(cases.length).toBeGreaterThan(0));
  it.each(cases)('%s', (testCase) => {
    const r = spawnSync(binary, [testCase], { encoding: 'utf8', timeout: 60_000 });
    expect(r.error).toBeUndefined();
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    expect(r.stdout).toBe(`ok - ${testCase}\n`);
  });
}

describe('cni/json-scan.c', () => cTestSuite('json-scan-test'));

// CNI_NETNS in these cases is the test's own network namespace: reading its cookie takes setns.
describe.skipIf(!isRoot)('cni/dispatch.c (needs root)', () => cTestSuite('cni-dispatch-test'));

describe('bin/sluice-cni', () => {
  it.each(SUPPORTED_VERSIONS)('VERSION with cniVersion %s lists exactly the versions the agent accepts', (version) => {
    const r = spawnSync(path.join(ROOT, 'bin/sluice-cni'), [], {
      input: JSON.stringify({ cniVersion: version }),
      env: { CNI_COMMAND: 'VERSION' },
      encoding: 'utf8',
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe(JSON.stringify({ cniVersion: version, supportedVersions: SUPPORTED_VERSIONS }) + '\n');
  });

  it("answers an unknown command from the process environment with code 4, in the caller's version", () => {
    const r = spawnSync(path.join(ROOT, 'bin/sluice-cni'), [], {
      input: '{"cniVersion":"0.4.0"}',
      env: { CNI_COMMAND: 'FROB' },
      encoding: 'utf8',
    });
    expect(r.status).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ cniVersion: '0.4.0', code: 4, msg: 'unknown CNI_COMMAND' });
  });
});
