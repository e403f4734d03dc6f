/* src/agent/pod-registry.ts: registrations written durably (atomic write + fsync) before ADD returns. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { PodRegistry, readPodRegistrations, type PodRegistration } from '../../src/agent/pod-registry';

/* Records what fsync is called on. */
const hooks = vi.hoisted(() => ({ fsynced: [] as string[] }));

vi.mock('node:fs', async (importOriginal) =>
  (await import('./fsync-recorder')).recordingFsync(await importOriginal<typeof import('node:fs')>(), hooks),
);

let stateDir: string;
const endpointsDir = () => path.join(stateDir, 'endpoints');

const REG: PodRegistration = {
  containerId: 'c0ffee',
  ifName: 'eth0',
  namespace: 'shop',
  name: 'cart-1',
  uid: 'u-1',
  ips: ['10.1.0.5'],
  netnsCookie: '4242',
  netnsPath: '/var/run/netns/x',
  network: 'podnet',
  createdAt: '2026-01-01T00:00:00.000Z',
};

beforeEach(() => {
  stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-registry-'));
  hooks.fsynced = [];
});
afterEach(() => fs.rmSync(stateDir, { recursive: true, force: true }));

describe('PodRegistry', () => {
  it("put writes the record durably: data and directory fsync'ed, no temp file left", () => {
    const registry = new PodRegistry(stateDir);
    registry.load();
    registry.put(REG);
    expect(fs.readdirSync(endpointsDir())).toEqual(['c0ffee_eth0.json']);
    expect(JSON.parse(fs.readFileSync(path.join(endpointsDir(), 'c0ffee_eth0.json'), 'utf8'))).toEqual(REG);
    expect(fs.statSync(path.join(endpointsDir(), 'c0ffee_eth0.json')).mode & 0o777).toBe(0o644);
    expect(hooks.fsynced).toHaveLength(2);
    expect(path.basename(hooks.fsynced[0])).toMatch(/^\.c0ffee_eth0\.json\.[0-9a-f]{12}\.sluice-tmp$/);
    expect(hooks.fsynced[1]).toBe(endpointsDir());
  });

  it("the agent's load removes temp files of interrupted writes; a reader beside the agent does not", () => {
    const registry = new PodRegistry(stateDir);
    registry.load();
    registry.put(REG);
    const interrupted = path.join(endpointsDir(), '.other_eth0.json.0123456789ab.sluice-tmp');
    fs.writeFileSync(interrupted, '{"containerId": "oth');
    expect(readPodRegistrations(stateDir).map((e) => e.containerId)).toEqual(['c0ffee']);
    expect(fs.existsSync(interrupted)).toBe(true);
    expect(new PodRegistry(stateDir).load()).toBe(1);
    expect(fs.existsSync(interrupted)).toBe(false);
  });
});
