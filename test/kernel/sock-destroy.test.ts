/* Sockets left on a dead backend, end to end: clients that keep one connected socket (sl-probe
 * connect --persist) in a registered pod and in the node's own namespace, a backend removed from
 * its Service while they send. Connected UDP sockets are destroyed within the sync that removes the
 * backend (the client sees an error, connects again and reaches a live backend), whatever the
 * config; TCP ones only with bpf-lb-sock-terminate-pod-connections "true". Sockets that did not
 * reach the backend through that Service (a direct connection, an unconnected UDP socket) are
 * kept. The backends keep running throughout, so a socket that is not destroyed keeps being
 * answered by the removed one: nothing but the destroy can move a client. Both families; the
 * Service is a NodePort, and a socket that dialled the nodePort (a node address, loopback from the
 * node) is found through the nodePort's frontend.
 * Needs bpf_sock_destroy (Linux 6.5); skipped, by the feature, where the kernel lacks it.
 */
import * as fs from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { waitFor, type SimPod } from '../harness';
import { addMeshPod, createMeshEnv, type MeshEnv } from './mesh-env';
import {
  PROBE,
  serviceYaml,
  sliceYaml,
  sluice,
  startAgent,
  stopAgent,
  UDP_PORT,
  waitForBackends,
  writeConfig,
  writeObjects,
  attemptsOf,
  moreAttempts,
  startSteadyClient,
  type SteadyAttempt,
} from './lb-env';

/** The backends' TCP servers that keep connections open (serve --hold). */
const HOLD_PORT = 8090;
const VIP4 = '10.96.4.10';
const VIP6 = 'fd00:96::4:10';
const NP_TCP = 30480;
const NP_UDP = 30453;
const PORTS = [
  { name: 'web', port: 80, targetPort: HOLD_PORT, protocol: 'TCP' as const, nodePort: NP_TCP },
  { name: 'dns', port: 53, targetPort: UDP_PORT, protocol: 'UDP' as const, nodePort: NP_UDP },
];
const SLICE_PORTS = [
  { name: 'web', port: HOLD_PORT, protocol: 'TCP' as const },
  { name: 'dns', port: UDP_PORT, protocol: 'UDP' as const },
];

function kernelHasSockDestroy(): boolean {
  try {
    return fs.readFileSync('/proc/kallsyms', 'utf8').includes(' bpf_sock_destroy\n');
  } catch {
    return false;
  }
}

describe.skipIf(process.getuid?.() !== 0 || !kernelHasSockDestroy())(
  'sockets left on a backend that left its Service (needs root, Linux >= 6.5)',
  () => {
    let env: MeshEnv;
    let pod: SimPod;
    let be1: string;
    let be2: string;
    const clients: ChildProcess[] = [];

    const vipOf = (family: 4 | 6) => (family === 4 ? VIP4 : VIP6);
    const ipOf = (p: SimPod, family: 4 | 6) => (family === 4 ? p.ipv4 : p.ipv6!);

    /** The Service with these backend pods in both families. */
    function writeService(pods: SimPod[]): void {
      writeObjects(env, 'svc.yaml', [
        serviceYaml('svc', { clusterIP: VIP4, clusterIPs: [VIP4, VIP6], ports: PORTS, type: 'NodePort' }),
        sliceYaml('svc-v4', { service: 'svc', family: 4, endpoints: pods.map((p) => ({ ip: p.ipv4 })), ports: SLICE_PORTS }),
        sliceYaml('svc-v6', { service: 'svc', family: 6, endpoints: pods.map((p) => ({ ip: p.ipv6! })), ports: SLICE_PORTS }),
      ]);
    }

    async function waitForService(pods: SimPod[]): Promise<void> {
      for (const family of [4, 6] as const) {
        const host = (ip: string) => (family === 6 ? `[${ip}]` : ip);
        await waitForBackends(
          env,
          `${host(vipOf(family))}:80/TCP`,
          pods.map((p) => `${host(ipOf(p, family))}:${HOLD_PORT}`),
        );
        await waitForBackends(
          env,
          `${host(vipOf(family))}:53/UDP`,
          pods.map((p) => `${host(ipOf(p, family))}:${UDP_PORT}`),
        );
        await waitForBackends(
          env,
          `${host(family === 4 ? '0.0.0.0' : '::')}:${NP_UDP}/UDP`,
          pods.map((p) => `${host(ipOf(p, family))}:${UDP_PORT}`),
        );
      }
    }

    /** Puts the Service on be1 only and waits until every client that connects gets it. */
    async function resetToFirstBackend(): Promise<void> {
      writeService([env.backends[0]]);
      await waitForService([env.backends[0]]);
    }

    /** The agent's "services synced" lines so far: each marks a sync done, its socket destroy included. */
    function syncs(): number {
      return env.node
        .output(env.agent!)
        .stderr.split('\n')
        .filter((l) => l.includes('"msg":"services synced"')).length;
    }

    /** Changes the Service and waits for the sync that applies it to end. */
    async function moveServiceTo(pods: SimPod[]): Promise<void> {
      const before = syncs();
      writeService(pods);
      await waitForService(pods);
      await waitFor('the sync that removed the backend', async () => syncs() > before);
    }

    async function counter(name: string): Promise<number> {
      return JSON.parse((await sluice(env, ['bpf', 'lb', 'counters', '-o', 'json'])).stdout)[name];
    }

    /** A steady client (lb-env's startSteadyClient), stopped after each test. */
    function startClient(o: Parameters<typeof startSteadyClient>[1]): ChildProcess {
      const child = startSteadyClient(env, o);
      clients.push(child);
      return child;
    }

    const by = (a: SteadyAttempt) => (a.ok ? a.reply?.split(' ')[0] : undefined);

    async function stopClients(): Promise<void> {
      for (const c of clients.splice(0)) {
        if (c.exitCode !== null || c.signalCode !== null) continue;
        const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
        c.kill('SIGTERM');
        await exited;
      }
    }

    async function restartAgent(extra: Record<string, string>): Promise<void> {
      await stopAgent(env);
      writeConfig(env, { 'cni-conf-dir': env.confDir, 'cni-bin-dir': env.binDir, 'state-dir': env.stateDir, ...extra });
      await startAgent(env);
    }

    beforeAll(async () => {
      env = await createMeshEnv({ backends: 2 });
      [be1, be2] = env.backends.map((p) => p.name);
      for (const b of env.backends) {
        for (const ip of [b.ipv4, b.ipv6!]) {
          const child = env.node.spawn(
            [PROBE, 'serve', '--proto', 'tcp', '--addr', ip, '--port', String(HOLD_PORT), '--id', b.name, '--hold'],
            { netnsPath: b.netnsPath, inCgroup: false },
          );
          await env.node.waitForLine(child, 'ready');
        }
      }
      pod = await addMeshPod(env, 'client-a');
    });

    afterEach(async (ctx) => {
      if (ctx.task.result?.state === 'fail' && env?.agent) {
        console.error(`[agent log tail]\n${env.node.output(env.agent).stderr.split('\n').slice(-20).join('\n')}`);
        for (const c of clients) console.error(`[client]\n${env.node.output(c).stdout.split('\n').slice(-15).join('\n')}`);
      }
      await stopClients();
    });

    afterAll(async () => {
      await stopClients();
      await stopAgent(env);
      if (env) await sluice(env, ['uninstall'], true);
      await env?.node.destroy();
    });

    /** A client's attempts around a change: `during` were made while the sync ran, `after` once it was over. */
    interface Around {
      during: SteadyAttempt[];
      after: SteadyAttempt[];
    }

    /** The next `n` attempts of a client once the Service moved to `pods` (those made meanwhile too). */
    async function around(clients: ChildProcess[], pods: SimPod[], n: number): Promise<Around[]> {
      const before = clients.map((c) => attemptsOf(env, c).length);
      await moveServiceTo(pods);
      const synced = clients.map((c) => attemptsOf(env, c).length);
      return Promise.all(
        clients.map(async (c, i) => ({
          during: attemptsOf(env, c).slice(before[i], synced[i]),
          after: await moreAttempts(env, c, synced[i], n),
        })),
      );
    }

    /**
     * A client on one connected socket, from `from`, reaching the Service through `family`, while
     * the Service moves from be1 to be2.
     */
    async function moveUnder(
      proto: 'tcp' | 'udp',
      family: 4 | 6,
      from: SimPod | 'node',
      to?: { addr: string; port: number },
    ): Promise<Around> {
      await resetToFirstBackend();
      const client = startClient({ proto, addr: to?.addr ?? vipOf(family), port: to?.port ?? (proto === 'tcp' ? 80 : 53), from });
      const first = await moreAttempts(env, client, 0, 3);
      expect(first.map((a) => [a.ok, by(a), a.conn])).toEqual(Array(3).fill([true, be1, 1]));
      const [r] = await around([client], [env.backends[1]], 8);
      await stopClients();
      return r;
    }

    /**
     * The client moved within the sync: answered by be1 on its first connection until one attempt
     * failed (its socket destroyed), then by be2 on a second one; and once the sync was over, at
     * most one more attempt (one that was under way as the sync ended) came before be2's answers.
     */
    function expectMovedOnce(r: Around, what: string): void {
      const all = [...r.during, ...r.after];
      const failed = all.filter((a) => !a.ok);
      expect(failed.length, `${what}: failed attempts ${JSON.stringify(failed)}`).toBe(1);
      const i = all.indexOf(failed[0]);
      expect(
        all.slice(0, i).map((a) => [by(a), a.conn]),
        what,
      ).toEqual(Array(i).fill([be1, 1]));
      expect(
        all.slice(i + 1).map((a) => [by(a), a.conn]),
        what,
      ).toEqual(Array(all.length - i - 1).fill([be2, 2]));
      expect(i, `${what}: the failure came ${i - r.during.length} attempts after the sync`).toBeLessThanOrEqual(
        r.during.length + 1,
      );
    }

    it('sluice status says socket destroy is available on this kernel', async () => {
      const st = await sluice(env, ['status']);
      expect(st.stdout.split('\n')).toContain('socket destroy: available');
      expect(JSON.parse((await sluice(env, ['status', '-o', 'json'])).stdout).datapath.sockDestroy).toBe('available');
    });

    it('a connected UDP client reaches a live backend within the sync that removes its backend, from a pod and from the node', async () => {
      for (const family of [4, 6] as const) {
        for (const from of [pod, 'node'] as const) {
          const before = await counter('sock_destroyed');
          const r = await moveUnder('udp', family, from);
          const what = `UDP IPv${family} from ${from === 'node' ? 'the node' : 'a pod'}`;
          expectMovedOnce(r, what);
          expect(await counter('sock_destroyed'), what).toBe(before + 1);
        }
      }
      const log = env.node.output(env.agent!).stderr;
      expect(log).toContain('"msg":"sockets on departed backends destroyed"');
    });

    it('a connected UDP client of the nodePort moves too: through a node address from a pod, through loopback from the node', async () => {
      for (const family of [4, 6] as const) {
        const cases = [
          { from: pod, addr: family === 4 ? env.node.gateway4 : env.node.gateway6! },
          { from: 'node' as const, addr: family === 4 ? '127.0.0.1' : '::1' },
        ];
        for (const c of cases) {
          const before = await counter('sock_destroyed');
          const r = await moveUnder('udp', family, c.from, { addr: c.addr, port: NP_UDP });
          const what = `UDP ${c.addr}:${NP_UDP} from ${c.from === 'node' ? 'the node' : 'a pod'}`;
          expectMovedOnce(r, what);
          expect(await counter('sock_destroyed'), what).toBe(before + 1);
        }
      }
      const host = (ip: string) => (ip.includes(':') ? `[${ip}]` : ip);
      // the log names the backend and what the socket had dialled
      expect(env.node.output(env.agent!).stderr).toContain(`via ${host(env.node.gateway4)}:${NP_UDP}`);
    });

    it('a socket connected to the backend directly, and an unconnected UDP socket sending to the VIP, are kept', async () => {
      for (const family of [4, 6] as const) {
        await resetToFirstBackend();
        const direct = startClient({ proto: 'udp', addr: ipOf(env.backends[0], family), port: UDP_PORT, from: pod });
        const unconnected = startClient({ proto: 'udp', addr: vipOf(family), port: 53, from: pod, udpMode: 'unconnected' });
        for (const c of [direct, unconnected]) expect((await moreAttempts(env, c, 0, 2)).every((a) => a.ok)).toBe(true);
        const before = await counter('sock_destroyed');
        const [d, u] = await around([direct, unconnected], [env.backends[1]], 6);
        const dAll = [...d.during, ...d.after];
        expect(
          dAll.map((a) => [a.ok, by(a), a.conn]),
          `direct IPv${family}`,
        ).toEqual(Array(dAll.length).fill([true, be1, 1]));
        // it chooses a backend for each datagram: never an error, and be2 once the sync is over
        expect(
          u.during.filter((a) => !a.ok),
          `unconnected IPv${family}`,
        ).toEqual([]);
        expect(
          u.after.slice(1).map((a) => [a.ok, by(a)]),
          `unconnected IPv${family}`,
        ).toEqual(Array(5).fill([true, be2]));
        expect(await counter('sock_destroyed'), `IPv${family}`).toBe(before);
        await stopClients();
      }
    });

    it('TCP connections are kept with bpf-lb-sock-terminate-pod-connections unset (the default)', async () => {
      for (const family of [4, 6] as const) {
        for (const from of [pod, 'node'] as const) {
          const before = await counter('sock_destroyed');
          const r = await moveUnder('tcp', family, from);
          const what = `TCP IPv${family} from ${from === 'node' ? 'the node' : 'a pod'}`;
          const all = [...r.during, ...r.after];
          expect(
            all.map((a) => [a.ok, by(a), a.conn]),
            what,
          ).toEqual(Array(all.length).fill([true, be1, 1]));
          expect(await counter('sock_destroyed'), what).toBe(before);
        }
      }
    });

    it('TCP connections are destroyed with bpf-lb-sock-terminate-pod-connections "true"; the client reconnects to a live backend', async () => {
      await restartAgent({ 'bpf-lb-sock-terminate-pod-connections': 'true' });
      for (const family of [4, 6] as const) {
        for (const from of [pod, 'node'] as const) {
          const before = await counter('sock_destroyed');
          const r = await moveUnder('tcp', family, from);
          const what = `TCP IPv${family} from ${from === 'node' ? 'the node' : 'a pod'}`;
          expectMovedOnce(r, what);
          expect(await counter('sock_destroyed'), what).toBe(before + 1);
        }
      }
    });
  },
);
