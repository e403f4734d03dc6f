/* Per-pod opt-out of socket-LB, end to end: pods registered through the CNI chain, the annotation
 * socket-lb.sluice.io/disabled on their Pod objects. An opted-out pod's connects to a VIP (or a
 * nodePort) are left untranslated from its first connection on; changing the annotation switches
 * it live, without restarting the pod; other pods keep socket-LB. Both families, TCP and UDP.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { run, waitFor, type SimPod } from '../harness';
import { addMeshPod, createMeshEnv, endpoint, updatePodObject, type MeshEnv } from './mesh-env';
import {
  answeredBy,
  probe,
  serviceYaml,
  sliceYaml,
  sluice,
  stopAgent,
  TCP_PORT,
  UDP_PORT,
  waitForBackends,
  writeObjects,
} from './lb-env';

const ANNOTATION = 'socket-lb.sluice.io/disabled';
const VIP4 = '10.96.5.10';
const VIP6 = 'fd00:96::5:10';
const NODE_PORT = 30081;

describe.skipIf(process.getuid?.() !== 0)('per-pod socket-LB opt-out (needs root)', () => {
  let env: MeshEnv;
  let be: string[];

  async function counters(): Promise<Record<string, number>> {
    return JSON.parse((await sluice(env, ['bpf', 'lb', 'counters', '-o', 'json'])).stdout);
  }

  /** Every connect from the pod to each VIP (TCP and connected UDP) is answered by a backend. */
  async function expectTranslated(pod: SimPod): Promise<void> {
    for (const vip of [VIP4, VIP6]) {
      for (const [proto, port] of [
        ['tcp', 80],
        ['udp', 53],
      ] as const) {
        const res = await probe(env, vip, port, { from: pod, proto, udpMode: 'connected', count: 6 });
        expect(
          res.filter((r) => !r.ok),
          `${pod.name} ${proto} ${vip}`,
        ).toEqual([]);
        expect(new Set(res.map(answeredBy)).size, `${pod.name} ${proto} ${vip}`).toBeGreaterThan(0);
        expect(
          res.every((r) => be.includes(answeredBy(r)!)),
          `${pod.name} ${proto} ${vip}`,
        ).toBe(true);
      }
    }
  }

  /**
   * Every connect from the pod to each VIP, and to the node's address on the nodePort, is left as
   * dialled: counted as pod_opt_out, never translated. (Untranslated, a VIP leads nowhere here.)
   */
  async function expectUntouched(pod: SimPod): Promise<void> {
    const before = await counters();
    let attempts = 0;
    for (const [ip, port, proto] of [
      [VIP4, 80, 'tcp'],
      [VIP6, 80, 'tcp'],
      [VIP4, 53, 'udp'],
      [VIP6, 53, 'udp'],
      [env.node.gateway4, NODE_PORT, 'tcp'],
    ] as const) {
      const res = await probe(env, ip, port, { from: pod, proto, udpMode: 'connected', count: 2, timeoutMs: 300 });
      expect(
        res.filter((r) => r.ok),
        `${pod.name} ${proto} ${ip}:${port}`,
      ).toEqual([]);
      attempts += res.length;
    }
    const after = await counters();
    expect([after.translated - before.translated, after.pod_opt_out - before.pod_opt_out], pod.name).toEqual([0, attempts]);
  }

  async function waitForSocketLb(pod: SimPod, on: boolean): Promise<void> {
    await waitFor(
      `${pod.name} socket-lb ${on ? 'on' : 'off'}`,
      async () => ((await endpoint(env, pod)) as unknown as { socketLb: boolean } | undefined)?.socketLb === on,
    );
  }

  beforeAll(async () => {
    env = await createMeshEnv({ backends: 2 });
    be = env.backends.map((p) => p.name);
    const ports = [
      { name: 'http', port: 80, targetPort: TCP_PORT, protocol: 'TCP' as const, nodePort: NODE_PORT },
      { name: 'dns', port: 53, targetPort: UDP_PORT, protocol: 'UDP' as const },
    ];
    const slicePorts = [
      { name: 'http', port: TCP_PORT, protocol: 'TCP' as const },
      { name: 'dns', port: UDP_PORT, protocol: 'UDP' as const },
    ];
    writeObjects(env, 'svc.yaml', [
      serviceYaml('svc', { clusterIP: VIP4, clusterIPs: [VIP4, VIP6], ports, type: 'NodePort' }),
      sliceYaml('svc-v4', { service: 'svc', family: 4, endpoints: env.backends.map((p) => ({ ip: p.ipv4 })), ports: slicePorts }),
      sliceYaml('svc-v6', {
        service: 'svc',
        family: 6,
        endpoints: env.backends.map((p) => ({ ip: p.ipv6! })),
        ports: slicePorts,
      }),
    ]);
    await waitForBackends(
      env,
      `${VIP4}:80/TCP`,
      env.backends.map((p) => `${p.ipv4}:${TCP_PORT}`),
    );
    await waitForBackends(
      env,
      `[${VIP6}]:53/UDP`,
      env.backends.map((p) => `[${p.ipv6}]:${UDP_PORT}`),
    );
    await waitForBackends(
      env,
      `0.0.0.0:${NODE_PORT}/TCP`,
      env.backends.map((p) => `${p.ipv4}:${TCP_PORT}`),
    );
  });

  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail' && env?.agent)
      console.error(`[agent log tail]\n${env.node.output(env.agent).stderr.split('\n').slice(-30).join('\n')}`);
  });

  afterAll(async () => {
    await stopAgent(env);
    if (env) await sluice(env, ['uninstall'], true);
    await env?.node.destroy();
  });

  it('a pod started with the annotation is never translated, from its first connect; a pod without it is', async () => {
    const out = await addMeshPod(env, 'opted-out', { annotations: { [ANNOTATION]: 'true' } });
    const plain = await addMeshPod(env, 'plain');
    // no waiting: the decision is in the kernel when the CNI ADD returns
    await expectUntouched(out);
    await expectTranslated(plain);
    const listed = (await sluice(env, ['endpoint', 'list'])).stdout.split('\n');
    expect(listed.find((l) => l.includes('default/opted-out'))).toContain('socket-lb=off');
    expect(listed.find((l) => l.includes('default/plain'))).not.toContain('socket-lb=off');
  });

  it('changing the annotation switches socket-LB live, both ways, without restarting the pod', async () => {
    const pod = env.node.pods.find((p) => p.name === 'opted-out')!;
    await updatePodObject(env, pod, { annotations: { [ANNOTATION]: 'false' } });
    await waitForSocketLb(pod, true);
    await expectTranslated(pod);
    await updatePodObject(env, pod, { annotations: {} });
    await expectTranslated(pod);
    await updatePodObject(env, pod, { annotations: { [ANNOTATION]: 'true' } });
    await waitForSocketLb(pod, false);
    await expectUntouched(pod);
  });

  it('a value other than "true" or "false" keeps socket-LB and is logged with the value', async () => {
    const pod = env.node.pods.find((p) => p.name === 'opted-out')!;
    await updatePodObject(env, pod, { annotations: { [ANNOTATION]: 'yes' } });
    await waitForSocketLb(pod, true);
    await expectTranslated(pod);
    expect(env.node.output(env.agent!).stderr).toContain(
      `Cannot parse annotation ${ANNOTATION} \\"yes\\": expected \\"true\\" or \\"false\\"; socket-LB stays on`,
    );
  });

  it('a deleted pod leaves no opt-out entry behind', async () => {
    const pod = env.node.pods.find((p) => p.name === 'opted-out')!;
    await updatePodObject(env, pod, { annotations: { [ANNOTATION]: 'true' } });
    await waitForSocketLb(pod, false);
    const dump = async () =>
      JSON.parse(
        (await run(['bpftool', '-j', 'map', 'dump', 'pinned', `${env.node.pinDir}/sl_lb_pod_opt_out`])).stdout,
      ) as unknown[];
    expect(await dump()).toHaveLength(1);
    await env.node.removePod(pod);
    expect(await dump()).toEqual([]);
  });
});
