/* A real container engine on a conflist that includes sluice: Debian's podman 4.3 with its CNI
 * backend, run inside a simulated node's network namespace with private storage and config (see
 * test/harness/podman.ts), on a bridge + host-local conflist that the agent extends with
 * sluice-cni. What podman passes, as observed: CNI_CONTAINERID = the full 64-hex container id,
 * CNI_IFNAME = eth0, CNI_NETNS = /run/netns/netns-<uuid>, CNI_ARGS =
 * "IgnoreUnknown=1;K8S_POD_NAME=<container name>" (no namespace, no uid), and before each ADD/DEL
 * a VERSION call to every plugin of the list (libcni's validation).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { netnsCookieOf } from '../../src/bpf';
import { waitFor } from '../harness';
import { CNI_CACHE_DIR, createPodman, type Podman } from '../harness/podman';
import { createLbEnv, PROBE, sluice, startAgent, stopAgent, writeConfig, type LbEnv } from './lb-env';

const IMAGE = 'localhost/sltest-busybox:latest';
const SUBNET = '10.250.7.0/24'; // inside the node's netns only
const GATEWAY = '10.250.7.1';

interface Ep {
  containerId: string;
  ifName: string;
  namespace: string;
  name: string;
  uid: string;
  ips: string[];
  netnsCookie: string;
  netnsPath: string;
  network: string;
}

describe.skipIf(process.getuid?.() !== 0)('podman runs containers on a conflist that includes sluice (needs root)', () => {
  let env: LbEnv;
  let pm: Podman | undefined;
  let net: string;
  let confDir: string;
  let binDir: string;

  const endpoints = async (): Promise<Ep[]> => JSON.parse((await sluice(env, ['endpoint', 'list', '-o', 'json'])).stdout);
  const ctrName = (n: string) => `${env.node.id}-${n}`;
  const runCtr = (name: string, cmd: string[], allowFail = false) =>
    pm!.podman(['run', '-d', '--name', ctrName(name), '--network', net, ...pm!.runFlags(), IMAGE, ...cmd], { allowFail });
  const cacheEntries = () => {
    try {
      return fs.readdirSync(path.join(CNI_CACHE_DIR, 'results')).filter((f) => f.startsWith(`${net}-`));
    } catch {
      return [];
    }
  };

  beforeAll(async () => {
    env = await createLbEnv({ backends: 0 });
    net = `${env.node.id}-net`;
    confDir = path.join(env.node.workDir, 'net.d');
    binDir = path.join(env.node.workDir, 'cni-bin');
    fs.mkdirSync(confDir);
    fs.mkdirSync(path.join(env.node.workDir, 'ipam-podman'));
    const primary = {
      cniVersion: '1.0.0',
      name: net,
      plugins: [
        {
          type: 'bridge',
          bridge: 'slbr1',
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: 'host-local',
            dataDir: path.join(env.node.workDir, 'ipam-podman'),
            ranges: [[{ subnet: SUBNET }]],
            routes: [{ dst: '0.0.0.0/0' }],
          },
        },
      ],
    };
    const primaryFile = path.join(confDir, '10-podman.conflist');
    fs.writeFileSync(primaryFile, JSON.stringify(primary, null, 2) + '\n');
    writeConfig(env, { 'cni-conf-dir': confDir, 'cni-bin-dir': binDir, 'state-dir': path.join(env.node.workDir, 'state') });
    await startAgent(env);
    const installed = JSON.parse(fs.readFileSync(primaryFile, 'utf8'));
    expect(installed.plugins.map((p: { type: string }) => p.type)).toEqual(['bridge', 'sluice-cni']);
    pm = await createPodman(env.node, {
      networkConfigDir: confDir,
      cniPluginDirs: [binDir, '/usr/lib/cni'],
      defaultNetwork: net,
    });
    await pm.importBusybox(IMAGE);
    const nets = (await pm.podman(['network', 'ls', '--format', '{{.Name}}'])).stdout.split('\n');
    expect(nets).toContain(net);
  }, 120000);

  afterAll(async () => {
    const problems = (await pm?.destroy()) ?? [];
    if (env) await stopAgent(env);
    await env?.node.destroy();
    expect(problems.filter((p) => !p.startsWith('removed leftover'))).toEqual([]);
  }, 120000);

  it('podman run registers the container with sluice; podman rm -f removes the registration', async () => {
    const id = (await runCtr('web', ['sleep', '60'])).stdout.trim();
    expect(id).toMatch(/^[0-9a-f]{64}$/);
    const info = await pm!.inspect(id);
    expect(info.State).toMatchObject({ Status: 'running', Running: true });
    const ip: string = info.NetworkSettings.Networks[net].IPAddress;
    const netnsPath: string = info.NetworkSettings.SandboxKey;
    expect(ip).toMatch(/^10\.250\.7\.\d+$/);

    // podman passes its container id as CNI_CONTAINERID and the container name as K8S_POD_NAME
    const ep = (await endpoints()).find((e) => e.containerId === id);
    expect(ep).toMatchObject({ ifName: 'eth0', namespace: '', name: ctrName('web'), uid: '', netnsPath, network: net });
    expect(ep!.ips).toContain(ip);
    expect(ep!.netnsCookie).toMatch(/^[1-9]\d*$/);
    expect(ep!.netnsCookie).toBe(String(netnsCookieOf(netnsPath)));
    const line = (await sluice(env, ['endpoint', 'list'])).stdout
      .split('\n')
      .find((l) => l.includes(`container=${id.slice(0, 12)}`));
    expect(line?.split(/\s+/).slice(0, 2)).toEqual([ip, `-/${ctrName('web')}`]);

    const addr = (await pm!.podman(['exec', id, 'ip', '-4', 'addr', 'show', 'eth0'])).stdout;
    expect(addr).toContain(`inet ${ip}/24`);

    // the container reaches a TCP server on the node's side of the bridge, with its own address
    const srv = env.node.spawn([PROBE, 'serve', '--proto', 'tcp', '--addr', GATEWAY, '--port', '8080', '--id', 'gateway'], {
      inCgroup: false,
    });
    await env.node.waitForLine(srv, 'ready');
    const nc = await pm!.podman(['exec', id, 'nc', '-w', '3', GATEWAY, '8080']);
    expect(nc.stdout.split(' ').slice(0, 2)).toEqual(['gateway', ip]);
    expect(cacheEntries()).toEqual([`${net}-${id}-eth0`]);

    await pm!.podman(['rm', '-f', '-t', '0', id]);
    expect((await endpoints()).find((e) => e.containerId === id)).toBeUndefined();
    expect(fs.existsSync(netnsPath)).toBe(false);
    expect(cacheEntries()).toEqual([]);
    expect((await pm!.podman(['ps', '-a', '-q'])).stdout.trim()).toBe('');
  });

  it("a container that exits on its own is unregistered by podman's cleanup (DEL from conmon's exit command)", async () => {
    const id = (await runCtr('short', ['sleep', '3'])).stdout.trim();
    expect((await endpoints()).some((e) => e.containerId === id)).toBe(true);
    await waitFor(
      'the exited container to be unregistered',
      async () => !(await endpoints()).some((e) => e.containerId === id),
      20000,
      200,
    );
    expect((await pm!.inspect(id)).State.Status).toBe('exited');
    expect(cacheEntries()).toEqual([]);
    await pm!.podman(['rm', '-f', '-t', '0', id]);
  });

  it('with the agent down podman run fails on sluice-cni (error 11) and nothing runs; after a restart it works again', async () => {
    await stopAgent(env);
    const failed = await runCtr('while-down', ['sleep', '60'], true);
    expect(failed.code).not.toBe(0);
    // the code-11 answer of sluice-cni when the agent is unreachable (cni/README.md); podman prints msg: details
    expect(failed.stderr).toContain('plugin type="sluice-cni" failed (add)');
    expect(failed.stderr).toContain('sluice agent is not reachable; try again later');
    expect((await pm!.podman(['ps', '-q'])).stdout.trim()).toBe('');
    const down = await pm!.inspect(ctrName('while-down'));
    expect(down.State.Running).toBe(false);
    expect(down.State.Status).toBe('created');
    expect(cacheEntries()).toEqual([]); // podman called DEL after the failed ADD
    expect(await endpoints()).toEqual([]); // read from the state dir while the agent is down

    await startAgent(env);
    // the runtime's retry: starting the same container now succeeds
    await pm!.podman(['start', ctrName('while-down')]);
    const retried = await pm!.inspect(ctrName('while-down'));
    expect(retried.State.Running).toBe(true);
    const fresh = (await runCtr('after-restart', ['sleep', '60'])).stdout.trim();
    const eps = await endpoints();
    expect(eps.map((e) => e.containerId).sort()).toEqual([retried.Id, fresh].sort());
    expect(eps.find((e) => e.containerId === retried.Id)!.ips).toEqual([retried.NetworkSettings.Networks[net].IPAddress]);

    await pm!.podman(['rm', '-f', '-t', '0', retried.Id, fresh]);
    expect(await endpoints()).toEqual([]);
    expect(cacheEntries()).toEqual([]);
  });
});
