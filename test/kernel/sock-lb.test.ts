/* Socket-LB end to end on a simulated node: real programs on a test cgroup, pods wired by the
 * reference CNI plugins, the agent in standalone mode fed by a directory of YAML.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../harness';
import { probeFeature } from '../../src/bpf/introspect';
import { SOCK_DESTROY_PROGS } from '../../src/datapath';
import {
  answeredBy,
  createLbEnv,
  lbList,
  probe,
  removeObjects,
  serviceYaml,
  sliceYaml,
  sluice,
  startAgent,
  stopAgent,
  TCP_PORT,
  UDP_PORT,
  waitForAbsent,
  waitForBackends,
  writeConfig,
  writeObjects,
  type LbEnv,
} from './lb-env';

const SOCK_DESTROY_PROGRAMS = Object.values(SOCK_DESTROY_PROGS);
const VIP4 = '10.96.0.10';
const VIP6 = 'fd00:96::10';

describe.skipIf(process.getuid?.() !== 0)('socket load balancing (needs root)', () => {
  let env: LbEnv;
  let be1: string;
  let be2: string;

  function webObjects(
    endpoints4: Array<{ ip: string; ready?: boolean }>,
    endpoints6?: Array<{ ip: string; ready?: boolean }>,
  ): string[] {
    const ports = [
      { name: 'http', port: 80, targetPort: 'http-alt', protocol: 'TCP' as const },
      { name: 'dns', port: 53, targetPort: UDP_PORT, protocol: 'UDP' as const },
    ];
    const slicePorts = [
      { name: 'http', port: TCP_PORT, protocol: 'TCP' as const },
      { name: 'dns', port: UDP_PORT, protocol: 'UDP' as const },
    ];
    const [a, b] = env.backends;
    return [
      serviceYaml('web', { clusterIP: VIP4, ports, externalIPs: ['10.97.0.7'] }),
      sliceYaml('web-v4', { service: 'web', family: 4, endpoints: endpoints4, ports: slicePorts }),
      serviceYaml('web6', { clusterIP: VIP6, ports }),
      sliceYaml('web6-v6', {
        service: 'web6',
        family: 6,
        endpoints: endpoints6 ?? [{ ip: a.ipv6! }, { ip: b.ipv6! }],
        ports: slicePorts,
      }),
      serviceYaml('empty', { clusterIP: '10.96.0.11', ports: [{ port: 80, targetPort: TCP_PORT }] }),
    ];
  }

  beforeAll(async () => {
    env = await createLbEnv({ backends: 2 });
    [be1, be2] = env.backends.map((p) => p.name);
    const [a, b] = env.backends;
    writeObjects(env, 'web.yaml', webObjects([{ ip: a.ipv4 }, { ip: b.ipv4 }]));
    await startAgent(env);
  });

  afterAll(async () => {
    await stopAgent(env);
    await env?.node.destroy();
  });

  async function lbCounters(): Promise<Record<string, number>> {
    return JSON.parse((await sluice(env, ['bpf', 'lb', 'counters', '-o', 'json'])).stdout);
  }

  it('status reports ready with the programs attached', async () => {
    const st = JSON.parse((await sluice(env, ['status', '-o', 'json'])).stdout);
    expect(st.ready).toBe(true);
    expect(Object.keys(st.datapath.links)).toHaveLength(10);
    const cg = await run(['bpftool', 'cgroup', 'show', env.node.cgroupPath]);
    for (const hook of [
      'connect4',
      'connect6',
      'sendmsg4',
      'sendmsg6',
      'recvmsg4',
      'recvmsg6',
      'getpeername4',
      'getpeername6',
      'sock_ops',
      'getsockopt',
    ]) {
      expect(cg.stdout).toContain(hook);
    }
  });

  it('lb list prints each VIP with its backends, named targetPorts resolved', async () => {
    const [a, b] = env.backends;
    await waitForBackends(env, `${VIP4}:80/TCP`, [`${a.ipv4}:${TCP_PORT}`, `${b.ipv4}:${TCP_PORT}`]);
    const text = (await sluice(env, ['bpf', 'lb', 'list'])).stdout;
    expect(text).toContain(`${VIP4}:80/TCP`);
    expect(text).toContain(`${VIP4}:53/UDP`);
    expect(text).toContain(`[${VIP6}]:80/TCP`);
    expect(text).toMatch(/10\.96\.0\.11:80\/TCP\s+\(no backends/);
    expect(text).toContain(`${a.ipv4}:${TCP_PORT}`);
  });

  it('TCP to the VIP reaches every backend and getpeername shows the VIP', async () => {
    const res = await probe(env, VIP4, 80, { count: 40 });
    expect(res.every((r) => r.ok)).toBe(true);
    expect(new Set(res.map(answeredBy))).toEqual(new Set([be1, be2]));
    expect(new Set(res.map((r) => r.peer))).toEqual(new Set([`${VIP4}:80`]));
  });

  it('an externalIP is balanced like the ClusterIP', async () => {
    const res = await probe(env, '10.97.0.7', 80, { count: 30 });
    expect(res.every((r) => r.ok)).toBe(true);
    expect(new Set(res.map(answeredBy))).toEqual(new Set([be1, be2]));
  });

  it('connected UDP reaches every backend and getpeername shows the VIP', async () => {
    const res = await probe(env, VIP4, 53, { proto: 'udp', udpMode: 'connected', count: 40 });
    expect(res.every((r) => r.ok)).toBe(true);
    expect(new Set(res.map(answeredBy))).toEqual(new Set([be1, be2]));
    expect(new Set(res.map((r) => r.peer))).toEqual(new Set([`${VIP4}:53`]));
  });

  it('unconnected UDP replies come from the VIP and one socket sticks to one backend', async () => {
    const spread = await probe(env, VIP4, 53, { proto: 'udp', udpMode: 'unconnected', count: 40 });
    expect(spread.every((r) => r.ok)).toBe(true);
    expect(new Set(spread.map((r) => r.peer))).toEqual(new Set([`${VIP4}:53`]));
    expect(new Set(spread.map(answeredBy))).toEqual(new Set([be1, be2]));
    const c0 = await lbCounters();
    const flow = await probe(env, VIP4, 53, { proto: 'udp', udpMode: 'unconnected', sameSocket: true, count: 20 });
    expect(flow.every((r) => r.ok)).toBe(true);
    expect(new Set(flow.map(answeredBy)).size).toBe(1);
    // independently: every datagram was translated by the program (not sent once and cached), and
    // every reply rewritten back
    const c1 = await lbCounters();
    expect(c1.translated - c0.translated).toBe(20);
    expect(c1.rev_translated - c0.rev_translated).toBeGreaterThanOrEqual(20);
    expect(new Set(flow.map((r) => r.peer))).toEqual(new Set([`${VIP4}:53`]));
  });

  it('IPv6 VIPs work for TCP and UDP', async () => {
    const tcp = await probe(env, VIP6, 80, { count: 30 });
    expect(tcp.every((r) => r.ok)).toBe(true);
    expect(new Set(tcp.map(answeredBy))).toEqual(new Set([be1, be2]));
    expect(new Set(tcp.map((r) => r.peer))).toEqual(new Set([`[${VIP6}]:80`]));
    const udp = await probe(env, VIP6, 53, { proto: 'udp', udpMode: 'unconnected', count: 30 });
    expect(udp.every((r) => r.ok)).toBe(true);
    expect(new Set(udp.map((r) => r.peer))).toEqual(new Set([`[${VIP6}]:53`]));
    expect(new Set(udp.map(answeredBy))).toEqual(new Set([be1, be2]));
  });

  it('a service without ready backends refuses at once with ECONNREFUSED', async () => {
    const t0 = Date.now();
    const res = await probe(env, '10.96.0.11', 80, { count: 3, timeoutMs: 3000 });
    expect(res.map((r) => [r.ok, r.errno, r.stage])).toEqual(Array(3).fill([false, 111, 'connect']));
    // three attempts with a 3 s timeout each: a hang would take 9 s; refusal is immediate
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('a destination that is no VIP is left alone', async () => {
    const [a] = env.backends;
    const res = await probe(env, a.ipv4, TCP_PORT, { count: 3 });
    expect(res.map((r) => [r.ok, answeredBy(r), r.peer])).toEqual(Array(3).fill([true, be1, `${a.ipv4}:${TCP_PORT}`]));
  });

  it('endpoints removed, made unready and added back are followed live', async () => {
    const [a, b] = env.backends;
    writeObjects(env, 'web.yaml', webObjects([{ ip: a.ipv4 }, { ip: b.ipv4, ready: false }]));
    await waitForBackends(env, `${VIP4}:80/TCP`, [`${a.ipv4}:${TCP_PORT}`]);
    const one = await probe(env, VIP4, 80, { count: 20 });
    expect(new Set(one.map(answeredBy))).toEqual(new Set([be1]));

    writeObjects(env, 'web.yaml', webObjects([]));
    await waitForBackends(env, `${VIP4}:80/TCP`, []);
    const none = await probe(env, VIP4, 80);
    expect(none[0]).toMatchObject({ ok: false, errno: 111 });

    writeObjects(env, 'web.yaml', webObjects([{ ip: a.ipv4 }, { ip: b.ipv4 }]));
    await waitForBackends(env, `${VIP4}:80/TCP`, [`${a.ipv4}:${TCP_PORT}`, `${b.ipv4}:${TCP_PORT}`]);
    const both = await probe(env, VIP4, 80, { count: 30 });
    expect(new Set(both.map(answeredBy))).toEqual(new Set([be1, be2]));
  });

  it('sessionAffinity ClientIP keeps a client on one backend', async () => {
    const [a, b] = env.backends;
    writeObjects(env, 'sticky.yaml', [
      serviceYaml('sticky', {
        clusterIP: '10.96.0.20',
        ports: [{ name: 'http', port: 80, targetPort: TCP_PORT }],
        affinitySec: 300,
      }),
      sliceYaml('sticky-1', {
        service: 'sticky',
        family: 4,
        endpoints: [{ ip: a.ipv4 }, { ip: b.ipv4 }],
        ports: [{ name: 'http', port: TCP_PORT }],
      }),
    ]);
    await waitForBackends(env, '10.96.0.20:80/TCP', [`${a.ipv4}:${TCP_PORT}`, `${b.ipv4}:${TCP_PORT}`]);
    expect((await lbList(env)).find((s) => s.frontend === '10.96.0.20:80/TCP')?.affinitySec).toBe(300);
    const c0 = await lbCounters();
    const res = await probe(env, '10.96.0.20', 80, { count: 30 });
    expect(res.every((r) => r.ok)).toBe(true);
    expect(new Set(res.map(answeredBy)).size).toBe(1);
    // independently: all but the first connect took their backend from the affinity entry
    expect((await lbCounters()).affinity_hit - c0.affinity_hit).toBeGreaterThanOrEqual(29);
    removeObjects(env, 'sticky.yaml');
    await waitForAbsent(env, '10.96.0.20:80/TCP');
  });

  it('malformed objects are logged and skipped while the rest is served', async () => {
    const [a] = env.backends;
    fs.writeFileSync(`${env.objectsDir}/broken.yaml`, 'kind: [unclosed\n');
    writeObjects(env, 'mixed.yaml', [
      'apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {clusterIP: 10.96.0.30, ports: [{port: 99999}]}',
      'apiVersion: v1\nkind: Service\nmetadata: {namespace: default}\nspec: {clusterIP: 10.96.0.31}',
      serviceYaml('good', { clusterIP: '10.96.0.32', ports: [{ name: 'http', port: 80, targetPort: TCP_PORT }] }),
      sliceYaml('good-1', { service: 'good', family: 4, endpoints: [{ ip: a.ipv4 }], ports: [{ name: 'http', port: TCP_PORT }] }),
    ]);
    await waitForBackends(env, '10.96.0.32:80/TCP', [`${a.ipv4}:${TCP_PORT}`]);
    expect((await lbList(env)).some((s) => s.frontend.startsWith('10.96.0.30'))).toBe(false);
    expect((await sluice(env, ['status'])).code).toBe(0);
    const res = await probe(env, '10.96.0.32', 80);
    expect(answeredBy(res[0])).toBe(be1);
    const log = env.node.output(env.agent!).stderr;
    expect(log).toMatch(/mixed\.yaml/);
    expect(log).toMatch(/broken\.yaml/);
    removeObjects(env, 'mixed.yaml');
    removeObjects(env, 'broken.yaml');
    await waitForAbsent(env, '10.96.0.32:80/TCP');
  });

  it('lb list works and the datapath keeps serving while the agent is down', async () => {
    await stopAgent(env, 'SIGKILL');
    expect((await sluice(env, ['status'], true)).code).not.toBe(0);
    const listed = await lbList(env);
    expect(listed.find((s) => s.frontend === `${VIP4}:80/TCP`)?.backends).toHaveLength(2);
    const res = await probe(env, VIP4, 80, { count: 20 });
    expect(res.every((r) => r.ok)).toBe(true);
    expect(new Set(res.map(answeredBy))).toEqual(new Set([be1, be2]));
    await startAgent(env);
  });

  it('an agent killed and restarted under a steady stream of connections drops none', async () => {
    const stream = probe(env, VIP4, 80, { count: 600, intervalMs: 5, timeoutMs: 2000 });
    const udpStream = probe(env, VIP4, 53, { proto: 'udp', udpMode: 'unconnected', count: 600, intervalMs: 5, timeoutMs: 2000 });
    await new Promise((r) => setTimeout(r, 500));
    await stopAgent(env, 'SIGKILL');
    await startAgent(env);
    await stopAgent(env, 'SIGTERM');
    await startAgent(env);
    const [tcp, udp] = await Promise.all([stream, udpStream]);
    expect(tcp).toHaveLength(600);
    expect(tcp.filter((r) => !r.ok)).toEqual([]);
    expect(udp.filter((r) => !r.ok || r.peer !== `${VIP4}:53`)).toEqual([]);
    const log = env.node
      .output(env.agent!)
      .stderr.split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
    // the links were updated in place, not recreated, and no unchanged service was rewritten
    expect(log.find((r) => r.msg === 'datapath attached').links.sl_connect4).toBe('updated');
    const synced = log.find((r) => r.msg === 'services synced');
    expect(synced).toMatchObject({ added: 0, updated: 0, removed: 0, failed: 0 });
    expect(synced.unchanged).toBeGreaterThanOrEqual(6);
  });

  it('hostns-only leaves pod sockets alone and still serves the node namespace', async () => {
    const before = JSON.parse((await sluice(env, ['bpf', 'lb', 'counters', '-o', 'json'])).stdout);
    await stopAgent(env);
    writeConfig(env, { 'bpf-lb-sock-hostns-only': 'true' });
    await startAgent(env);
    const fromPod = await probe(env, VIP4, 80, { count: 2, timeoutMs: 500 });
    expect(fromPod.every((r) => !r.ok)).toBe(true); // untouched: the VIP is not routable here
    const after = JSON.parse((await sluice(env, ['bpf', 'lb', 'counters', '-o', 'json'])).stdout);
    expect(after.hostns_skip - before.hostns_skip).toBe(2);
    const fromNode = await probe(env, VIP4, 80, { count: 20, from: 'node' });
    expect(fromNode.every((r) => r.ok)).toBe(true);
    expect(new Set(fromNode.map(answeredBy))).toEqual(new Set([be1, be2]));

    await stopAgent(env);
    writeConfig(env, { 'bpf-lb-sock-hostns-only': 'false' });
    await startAgent(env);
    const again = await probe(env, VIP4, 80, { count: 10 });
    expect(again.every((r) => r.ok)).toBe(true);
  });

  it('a malformed config value stops start-up with a clear error', async () => {
    await stopAgent(env);
    writeConfig(env, { 'bpf-lb-sock-hostns-only': 'yes' });
    const res = await run([`${__dirname}/../../bin/sluice`, 'agent', '--config', env.configPath], { allowFail: true });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('bpf-lb-sock-hostns-only "yes"');
    writeConfig(env);
    await startAgent(env);
  });

  it('uninstall removes every program, link and pin', async () => {
    await stopAgent(env);
    // the socket-destroy iterators (pinned, never attached) and the maps of this release go too
    const iterators = probeFeature('sock_destroy')
      ? SOCK_DESTROY_PROGRAMS.map((p) => path.join(env.node.pinDir, 'progs', p))
      : [];
    for (const p of iterators) expect(fs.existsSync(p), p).toBe(true);
    const out = await sluice(env, ['uninstall']);
    expect(out.stdout).toContain('sl_lb_svc');
    for (const name of ['sl_lb_pod_opt_out', 'sl_lb_sock_dead', ...iterators]) expect(out.stdout).toContain(name);
    expect(fs.existsSync(env.node.pinDir)).toBe(false);
    const cg = await run(['bpftool', 'cgroup', 'show', env.node.cgroupPath]);
    expect(
      cg.stdout
        .trim()
        .split('\n')
        .filter((l) => /sl_/.test(l)),
    ).toEqual([]);
    const res = await probe(env, VIP4, 80, { timeoutMs: 500 });
    expect(res[0].ok).toBe(false);
  });
});
