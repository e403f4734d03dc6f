/* Sidecar capture across two simulated nodes joined by a veth pair: inbound from a pod on the
 * other node reaches the sidecar; outbound to the other node goes through it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNode, joinNodes, type SimNode, type SimPod } from '../harness';
import { answeredBy, probe, PROBE, stopAgent, TCP_PORT } from './lb-env';
import { addMeshPod, createMeshEnv, sidecarReply, startApp, startSidecar, type MeshEnv } from './mesh-env';

describe.skipIf(process.getuid?.() !== 0)('sidecar capture across nodes (needs root)', () => {
  let env: MeshEnv; // node A: agent, meshed pod
  let nodeB: SimNode;
  let remote: SimPod; // on node B: a client and a server
  let app: SimPod;

  beforeAll(async () => {
    env = await createMeshEnv({ backends: 0 });
    nodeB = await createNode();
    await joinNodes(env.node, nodeB);
    remote = await nodeB.addPod('remote');
    const server = nodeB.spawn(
      [PROBE, 'serve', '--proto', 'tcp', '--addr', remote.ipv4, '--port', String(TCP_PORT), '--id', 'remote-server'],
      { netnsPath: remote.netnsPath, inCgroup: false },
    );
    await nodeB.waitForLine(server, 'ready');
    const server6 = nodeB.spawn(
      [PROBE, 'serve', '--proto', 'tcp', '--addr', remote.ipv6!, '--port', String(TCP_PORT), '--id', 'remote-server'],
      { netnsPath: remote.netnsPath, inCgroup: false },
    );
    await nodeB.waitForLine(server6, 'ready');
    app = await addMeshPod(env, 'meshed', { annotations: { 'sidecar.istio.io/status': '{}' } });
    await startSidecar(env, app);
    await startApp(env, app, 8080);
  });

  afterAll(async () => {
    await stopAgent(env);
    await nodeB?.destroy();
    await env?.node.destroy();
  });

  async function fromRemote(addr: string, port: number) {
    const res = await nodeB.exec([PROBE, 'connect', '--proto', 'tcp', '--addr', addr, '--port', String(port)], {
      netnsPath: remote.netnsPath,
      inCgroup: false,
      allowFail: true,
    });
    return JSON.parse(res.stdout.split('\n')[0]);
  }

  it('inbound from a pod on another node reaches the sidecar with the original destination', async () => {
    const r = sidecarReply((await fromRemote(app.ipv4, 8080)).reply)!;
    expect(r).toMatchObject({
      via: 'in',
      orig: `${app.ipv4}:8080`,
      local: `${app.ipv4}:8080`,
      peer: expect.stringContaining(remote.ipv4),
    });
    expect(r.upstream?.split(' ')[0]).toBe('app-meshed');
    const r6 = sidecarReply((await fromRemote(app.ipv6!, 9090)).reply)!;
    expect(r6).toMatchObject({ via: 'in', orig: `[${app.ipv6}]:9090` });
  });

  it('outbound to a pod on another node goes through the sidecar, which reaches it', async () => {
    const res = await probe(env, remote.ipv4, TCP_PORT, { from: app });
    const r = sidecarReply(res[0].reply)!;
    expect(r).toMatchObject({ via: 'out', orig: `${remote.ipv4}:${TCP_PORT}` });
    expect(r.upstream?.split(' ')[0]).toBe('remote-server');
    const r6 = sidecarReply((await probe(env, remote.ipv6!, TCP_PORT, { from: app }))[0].reply)!;
    expect(r6).toMatchObject({ via: 'out', orig: `[${remote.ipv6}]:${TCP_PORT}` });
    expect(r6.upstream?.split(' ')[0]).toBe('remote-server');
  });

  it('a pod on the other node is not captured (no agent there)', async () => {
    expect(answeredBy(await fromRemote(remote.ipv4, TCP_PORT))).toBe('remote-server');
  });
});
