/* A captured connection keeps its original destination while the datapath changes release under
 * it, both ways between v0.1.0 and this tree (the upgrade by this tree's agent, the documented
 * downgrade by `bpf migrate` to v0.1.0's objects). The proxy stand-in accepts nothing until told
 * (listen backlog 0): one connection the app made under the old programs waits established in
 * its accept queue, a second one's handshake is in flight (its SYN dropped while the queue is
 * full, retried by the kernel). Only after the programs were swapped does the proxy accept them
 * and ask SO_ORIGINAL_DST, so the question reaches the new release's programs about connections
 * whose record the old release wrote; nothing here depends on timing.
 */
import type { ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, waitFor, type SimPod } from '../harness';
import type { MapMigration } from '../../src/bpf/migrate';
import { PROBE, SLUICE, sluice, startAgent, stopAgent, writeConfig } from './lb-env';
import { addMeshPod, createMeshEnv, sidecarReply, waitForMode, type MeshEnv } from './mesh-env';
import { baseCommit, buildBaseRelease, type BaseRelease } from './upgrade-base';

const STATUS = { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}' };
/** where the app connects: captured to its sidecar's 15001, never reached */
const DEST = '198.18.0.1';
const base = baseCommit();
const root = process.getuid?.() === 0;

describe.skipIf(!root || 'skip' in base)('original destinations across a release switch (needs root and git history)', () => {
  let env: MeshEnv;
  let old: BaseRelease;
  let pod: SimPod;
  let proxy: ChildProcess;
  let accepted = 0;

  /** TcpExtListenOverflows of the pod's namespace: SYNs dropped because an accept queue was full. */
  async function listenOverflows(): Promise<number> {
    const res = await env.node.exec(['cat', '/proc/net/netstat'], { netnsPath: pod.netnsPath, inCgroup: false });
    const [names, values] = res.stdout
      .split('\n')
      .filter((l) => l.startsWith('TcpExt:'))
      .map((l) => l.split(/\s+/).slice(1));
    return Number(values[names.indexOf('ListenOverflows')]);
  }

  /** Two captured connects of the app: one established and queued at the proxy, one in its handshake. */
  async function holdTwo(): Promise<ChildProcess[]> {
    const before = await listenOverflows();
    const apps = [0, 1].map(() =>
      env.node.spawn([PROBE, 'hold', '--proto', 'tcp', '--addr', DEST, '--port', '80', '--timeout-ms', '120000'], {
        netnsPath: pod.netnsPath,
      }),
    );
    // a dropped SYN: the queue is full (one established connection) and the other connect ran
    await waitFor('a handshake held back by the full accept queue', async () => (await listenOverflows()) > before, 10000);
    return apps;
  }

  /** The proxy accepts both connections now and answers each with what SO_ORIGINAL_DST said. */
  async function acceptBoth(apps: ChildProcess[]): Promise<Array<string | undefined>> {
    const lines = () =>
      env.node
        .output(proxy)
        .stdout.split('\n')
        .filter((l) => l.startsWith('{"conn"'));
    proxy.stdin!.write('accept\naccept\n');
    accepted += 2;
    const got = await waitFor(
      'the proxy accepted both',
      () => (lines().length >= accepted ? lines().slice(accepted - 2) : undefined),
      130000,
    );
    const replies = await Promise.all(
      apps.map((app) =>
        waitFor(
          'the app has its reply',
          () => {
            const l = env.node
              .output(app)
              .stdout.split('\n')
              .find((x) => x.startsWith('{'));
            return l ? (JSON.parse(l) as { ok: boolean; reply?: string }) : undefined;
          },
          10000,
        ),
      ),
    );
    for (const app of apps) app.stdin!.end();
    expect(got.map((l) => JSON.parse(l).conn)).toEqual([true, true]);
    expect(replies.map((r) => r.ok)).toEqual([true, true]);
    return replies.map((r) => sidecarReply(r.reply)?.orig);
  }

  beforeAll(async () => {
    if ('skip' in base) return;
    old = await buildBaseRelease(base.commit, path.resolve(__dirname, '../../build/upgrade-base'));
    env = await createMeshEnv({ backends: 0, agentBin: old.sluice });
    pod = await addMeshPod(env, 'meshed', { annotations: STATUS });
    await waitForMode(env, pod, 'sidecar');
    proxy = env.node.spawn([PROBE, 'sidecar', '--id', 'held', '--v4-only', '--accept-on-stdin'], {
      netnsPath: pod.netnsPath,
      uid: 1337,
      gid: 1337,
    });
    await env.node.waitForLine(proxy, 'ready');
  }, 900000);

  afterAll(async () => {
    if (!env) return;
    proxy?.stdin?.end();
    await stopAgent(env);
    await env.node.destroy();
  });

  it('v0.1.0 → this tree (its agent takes over): connections v0.1.0 captured, queued or in their handshake, get their original destination', async () => {
    const apps = await holdTwo();
    await stopAgent(env);
    await startAgent(env);
    expect(await acceptBoth(apps)).toEqual([`${DEST}:80`, `${DEST}:80`]);
    // the very map v0.1.0 writes, so no connection falls between a copy and the swap
    const st = JSON.parse((await sluice(env, ['status', '-o', 'json'])).stdout);
    expect((st.datapath.migration as MapMigration[]).find((m) => m.map === 'sl_origdst')).toMatchObject({ action: 'reused' });
  }, 240000);

  it('this tree → v0.1.0 (bpf migrate to its objects): connections this tree captured, queued or in their handshake, get their original destination', async () => {
    const apps = await holdTwo();
    await stopAgent(env);
    // v0.1.0's map sizes (deploy/README.md, Downgrade)
    writeConfig(env, {
      'cni-conf-dir': env.confDir,
      'cni-bin-dir': env.binDir,
      'state-dir': env.stateDir,
      'bpf-lb-service-map-max': '262144',
      'bpf-lb-backend-map-max': '65536',
    });
    const migrated = JSON.parse(
      (await run([SLUICE, 'bpf', 'migrate', '--object-dir', old.objectDir, '-o', 'json', '--config', env.configPath])).stdout,
    ) as MapMigration[];
    expect(await acceptBoth(apps)).toEqual([`${DEST}:80`, `${DEST}:80`]);
    expect(migrated.find((m) => m.map === 'sl_origdst')).toMatchObject({ action: 'reused' });
  }, 240000);
});
