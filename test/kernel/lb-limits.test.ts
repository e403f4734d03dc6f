/* Map limits: a full map is an error the agent reports, never silent loss of what did fit. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../harness';
import {
  answeredBy,
  createLbEnv,
  lbList,
  probe,
  serviceYaml,
  sliceYaml,
  SLUICE,
  sluice,
  startAgent,
  stopAgent,
  TCP_PORT,
  waitForAbsent,
  waitForBackends,
  writeConfig,
  writeObjects,
  type LbEnv,
} from './lb-env';

describe.skipIf(process.getuid?.() !== 0)('socket-LB map limits (needs root)', () => {
  let env: LbEnv;

  function services(n: number): string[] {
    const [a, b] = env.backends;
    const docs: string[] = [];
    for (let i = 1; i <= n; i++) {
      docs.push(serviceYaml(`s${i}`, { clusterIP: `10.96.1.${i}`, ports: [{ name: 'http', port: 80, targetPort: TCP_PORT }] }));
      docs.push(
        sliceYaml(`s${i}-1`, {
          service: `s${i}`,
          family: 4,
          endpoints: [{ ip: a.ipv4 }, { ip: b.ipv4 }],
          ports: [{ name: 'http', port: TCP_PORT }],
        }),
      );
    }
    return docs;
  }

  beforeAll(async () => {
    env = await createLbEnv({ backends: 2 });
    // 16 service-map entries: a service with 2 backends takes 3 (its entry and two slots)
    writeConfig(env, { 'bpf-lb-service-map-max': '16' });
    writeObjects(env, 'svc.yaml', services(3));
    await startAgent(env);
  });

  afterAll(async () => {
    await stopAgent(env);
    await env?.node.destroy();
  });

  it('services beyond a full map are reported, the ones that fit keep working', async () => {
    const [a, b] = env.backends;
    await waitForBackends(env, '10.96.1.3:80/TCP', [`${a.ipv4}:${TCP_PORT}`, `${b.ipv4}:${TCP_PORT}`]);
    writeObjects(env, 'svc.yaml', services(8));
    let st: any;
    for (let i = 0; i < 100; i++) {
      st = JSON.parse((await sluice(env, ['status', '-o', 'json'])).stdout);
      if (st.lastSync?.report.failed.length) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const failed = st.lastSync.report.failed as Array<{ frontend: string; reason: string }>;
    expect(failed.length).toBe(3); // 5 services fit in 16 entries (15), 3 do not
    expect(failed[0].reason).toMatch(/sl_lb_svc: map is full/);
    const listed = await lbList(env);
    expect(listed).toHaveLength(5);
    for (const s of listed) expect(s.backends).toHaveLength(2); // nothing half-programmed
    for (const s of listed) {
      const res = await probe(env, s.frontend.split(':')[0], 80, { count: 4 });
      expect(res.every((r) => r.ok && [a.name, b.name].includes(answeredBy(r)!))).toBe(true);
    }
    const log = env.node.output(env.agent!).stderr;
    expect(log).toMatch(/"msg":"service not programmed".*map is full/);
  });

  it('fewer services than the map holds clear the failures on the next sync', async () => {
    writeObjects(env, 'svc.yaml', services(4));
    await waitForAbsent(env, '10.96.1.5:80/TCP');
    const st = JSON.parse((await sluice(env, ['status', '-o', 'json'])).stdout);
    expect(st.lastSync.report).toMatchObject({ failed: [], removed: 1 });
    expect(await lbList(env)).toHaveLength(4);
  });

  it('a bigger map size is migrated at start: every service kept, the ones that did not fit now programmed', async () => {
    await stopAgent(env);
    writeConfig(env, { 'bpf-lb-service-map-max': '32' });
    writeObjects(env, 'svc.yaml', services(8)); // 24 entries: more than the old map holds
    const stream = probe(env, '10.96.1.1', 80, { count: 100, intervalMs: 5, timeoutMs: 2000 });
    await startAgent(env);
    const st = JSON.parse((await sluice(env, ['status', '-o', 'json'])).stdout);
    const svc = st.datapath.migration.find((m: { map: string }) => m.map === 'sl_lb_svc');
    expect(svc).toMatchObject({
      action: 'migrated',
      converter: 'verbatim',
      reason: 'max entries 16 → 32',
      entries: 12,
      copied: 12,
    });
    expect((await stream).filter((r) => !r.ok)).toEqual([]);
    await waitForBackends(env, '10.96.1.8:80/TCP', [
      `${env.backends[0].ipv4}:${TCP_PORT}`,
      `${env.backends[1].ipv4}:${TCP_PORT}`,
    ]);
    expect(await lbList(env)).toHaveLength(8);
  });

  it('a map size too small for what the pinned map holds is refused; the running datapath is untouched', async () => {
    await stopAgent(env);
    writeConfig(env, { 'bpf-lb-service-map-max': '16' });
    const res = await run([SLUICE, 'agent', '--config', env.configPath], { allowFail: true, timeoutMs: 10000 });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/map sl_lb_svc: the new map holds 16 entries, the pinned one has more/);
    const pinned = JSON.parse((await run(['bpftool', '-j', 'map', 'show', 'pinned', `${env.node.pinDir}/sl_lb_svc`])).stdout);
    expect(pinned.max_entries).toBe(32);
    const ok = await probe(env, '10.96.1.8', 80, { count: 3 });
    expect(ok.every((r) => r.ok)).toBe(true);
  });
});
