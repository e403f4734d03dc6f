/* The chained CNI plugin end to end: installed by the agent into a conf dir next to a primary's
 * config, executed by the harness as a runtime executes a conflist (bridge + host-local +
 * sluice-cni), talking to the real agent over its socket.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { netnsCookieOf } from '../../src/bpf';
import { CniPluginError, run, waitFor, type SimPod } from '../harness';
import { createLbEnv, sluice, startAgent, stopAgent, writeConfig, type LbEnv } from './lb-env';

describe.skipIf(process.getuid?.() !== 0)('chained CNI plugin (needs root)', () => {
  let env: LbEnv;
  let confDir: string;
  let binDir: string;
  let stateDir: string;
  const primaryFile = () => path.join(confDir, '10-podnet.conflist');
  const primaryText =
    '{\n  "cniVersion": "1.0.0",\n  "name": "podnet",\n  "plugins": [\n    {"type": "bridge", "bridge": "slbr0", "ipam": {"type": "host-local"}}\n  ]\n}\n';

  function sluiceEntry(): Record<string, unknown> {
    const list = JSON.parse(fs.readFileSync(primaryFile(), 'utf8'));
    return list.plugins.find((p: { type: string }) => p.type === 'sluice-cni');
  }

  async function addPod(name: string): Promise<SimPod> {
    return env.node.addPod(name, { extraPlugins: [sluiceEntry()], binDirs: [binDir] });
  }

  /** Runs the installed plugin binary once, as a runtime would, with the given stdin. */
  async function plugin(command: string | undefined, stdin: string, extraEnv: Record<string, string> = {}) {
    const e: Record<string, string> = {
      CNI_CONTAINERID: 'direct-1',
      CNI_NETNS: env.client.netnsPath,
      CNI_IFNAME: 'eth9',
      CNI_PATH: binDir,
      ...extraEnv,
    };
    if (command) e.CNI_COMMAND = command;
    const res = await run([path.join(binDir, 'sluice-cni')], { input: stdin, env: e, allowFail: true });
    return { code: res.code, stdout: res.stdout, json: res.stdout ? JSON.parse(res.stdout) : undefined };
  }

  const conf = (extra: Record<string, unknown> = {}) =>
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'podnet',
      type: 'sluice-cni',
      agentSocket: path.join(env.node.workDir, 'agent.sock'),
      ...extra,
    });

  beforeAll(async () => {
    env = await createLbEnv({ backends: 0 });
    confDir = path.join(env.node.workDir, 'net.d');
    binDir = path.join(env.node.workDir, 'cni-bin');
    stateDir = path.join(env.node.workDir, 'state');
    fs.mkdirSync(confDir);
    fs.writeFileSync(primaryFile(), primaryText);
    fs.writeFileSync(path.join(confDir, '20-other.conf'), '{"cniVersion":"0.4.0","name":"other","type":"ptp"}\n');
    writeConfig(env, { 'cni-conf-dir': confDir, 'cni-bin-dir': binDir, 'state-dir': stateDir });
    await startAgent(env);
  });

  afterAll(async () => {
    await stopAgent(env);
    await env?.node.destroy();
  });

  it('the agent installs the plugin into the primary conflist and reports it in status', async () => {
    expect(fs.statSync(path.join(binDir, 'sluice-cni')).mode & 0o777).toBe(0o755);
    const list = JSON.parse(fs.readFileSync(primaryFile(), 'utf8'));
    expect(list.plugins.map((p: { type: string }) => p.type)).toEqual(['bridge', 'sluice-cni']);
    expect(list.plugins[0]).toEqual(JSON.parse(primaryText).plugins[0]);
    expect(fs.readFileSync(path.join(confDir, '20-other.conf'), 'utf8')).toBe(
      '{"cniVersion":"0.4.0","name":"other","type":"ptp"}\n',
    );
    const st = JSON.parse((await sluice(env, ['status', '-o', 'json'])).stdout);
    expect(st).toMatchObject({ ready: true, cni: { installed: true, file: primaryFile() } });
  });

  it('ADD through bridge + host-local + sluice-cni registers the pod with its IPs and netns cookie', async () => {
    const pod = await addPod('web-1');
    const out = (await sluice(env, ['endpoint', 'list'])).stdout;
    const line = out.split('\n').find((l) => l.includes('default/web-1'))!;
    expect(line.split(/\s+/).slice(0, 3)).toEqual([`${pod.ipv4},${pod.ipv6}`, 'default/web-1', 'mode=none']);
    expect(line).toContain(`netns-cookie=${netnsCookieOf(pod.netnsPath)}`);
    const eps = JSON.parse((await sluice(env, ['endpoint', 'list', '-o', 'json'])).stdout);
    expect(eps.find((e: { name: string }) => e.name === 'web-1')).toMatchObject({
      namespace: 'default',
      uid: pod.uid,
      containerId: pod.containerId,
      ifName: 'eth0',
    });
    await env.node.removePod(pod);
    expect((await sluice(env, ['endpoint', 'list'])).stdout).not.toContain('web-1');
  });

  it('ADD prints the prevResult byte for byte', async () => {
    const prev =
      '{ "cniVersion" : "1.0.0",\n  "ips": [ {"address": "10.9.9.9/24", "interface": 0} ],\n "interfaces":[{"name":"eth9"}], "x-extra": 1.50 }';
    const stdin = conf().replace(/}$/, `, "prevResult": ${prev}}`);
    const res = await plugin('ADD', stdin);
    expect(res.code).toBe(0);
    expect(res.stdout).toBe(prev + '\n');
    expect((await plugin('DEL', stdin)).code).toBe(0);
  });

  it('DEL twice, and DEL after the namespace is gone, succeed', async () => {
    const pod = await addPod('gone-1');
    const entry = sluiceEntry();
    await run(['ip', 'netns', 'del', pod.netnsName]);
    const delConf = conf({ ...entry, prevResult: pod.result });
    const first = await plugin('DEL', delConf, {
      CNI_CONTAINERID: pod.containerId,
      CNI_IFNAME: 'eth0',
      CNI_NETNS: pod.netnsPath,
    });
    expect(first).toMatchObject({ code: 0, stdout: '' });
    const second = await plugin('DEL', delConf, { CNI_CONTAINERID: pod.containerId, CNI_IFNAME: 'eth0', CNI_NETNS: '' });
    expect(second).toMatchObject({ code: 0, stdout: '' });
    expect((await sluice(env, ['endpoint', 'list'])).stdout).not.toContain('gone-1');
    env.node.pods.splice(env.node.pods.indexOf(pod), 1);
  });

  it('CHECK verifies the registration', async () => {
    const stdin = conf({ prevResult: { cniVersion: '1.0.0', ips: [{ address: '10.9.9.8/24' }] } });
    expect((await plugin('CHECK', stdin, { CNI_CONTAINERID: 'never-added' })).json).toMatchObject({ code: 101 });
    expect((await plugin('ADD', stdin, { CNI_CONTAINERID: 'checked' })).code).toBe(0);
    expect(await plugin('CHECK', stdin, { CNI_CONTAINERID: 'checked' })).toMatchObject({ code: 0, stdout: '' });
    expect((await plugin('DEL', stdin, { CNI_CONTAINERID: 'checked' })).code).toBe(0);
  });

  it('bad input gets CNI error JSON with the spec codes', async () => {
    const prev = { prevResult: { cniVersion: '1.0.0', ips: [] } };
    expect((await plugin(undefined, conf(prev))).json).toMatchObject({ code: 4 });
    expect((await plugin('ADD', conf(prev), { CNI_CONTAINERID: '' })).json).toMatchObject({
      code: 4,
      msg: 'required environment variable CNI_CONTAINERID is missing',
    });
    expect((await plugin('ADD', conf(prev), { CNI_NETNS: '/nonexistent/netns' })).json).toMatchObject({ code: 4 });
    expect((await plugin('ADD', '{"cniVersion": "1.0.0", "name": ')).json).toMatchObject({ code: 6 });
    expect((await plugin('ADD', conf({ name: '', ...prev }))).json).toMatchObject({ code: 7 });
    expect((await plugin('ADD', conf())).json).toMatchObject({
      code: 7,
      msg: 'sluice-cni must be chained after the primary plugin',
    });
    expect((await plugin('ADD', conf({ cniVersion: '0.2.0', ...prev }))).json).toMatchObject({ code: 1, cniVersion: '0.2.0' });
    const version = await plugin('VERSION', '{"cniVersion":"0.4.0"}');
    expect(version.json).toEqual({ cniVersion: '0.4.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
    for (const r of [await plugin('ADD', 'garbage')]) expect(r.stdout).not.toMatch(/at .*\.ts|Error:/);
  });

  it('with the agent down ADD fails with 11 so the runtime retries, DEL still succeeds', async () => {
    await stopAgent(env);
    const stdin = conf({ prevResult: { cniVersion: '1.0.0', ips: [] } });
    const add = await plugin('ADD', stdin, { CNI_CONTAINERID: 'while-down' });
    expect(add.code).not.toBe(0);
    expect(add.json).toMatchObject({ code: 11, msg: 'sluice agent is not reachable; try again later' });
    expect(await plugin('DEL', stdin, { CNI_CONTAINERID: 'while-down' })).toMatchObject({ code: 0, stdout: '' });
    expect((await plugin('STATUS', conf({ cniVersion: '1.1.0' }))).json).toMatchObject({ code: 50 });
    await expect(addPod('down-1')).rejects.toThrow(CniPluginError);
    await startAgent(env);
    const pod = await addPod('up-again');
    expect((await sluice(env, ['endpoint', 'list'])).stdout).toContain('default/up-again');
    await env.node.removePod(pod);
  });

  it('with the agent down a pod of an excluded namespace starts and one of default gets 11; permanent errors keep their codes', async () => {
    // the agent copied exclude-namespaces (here the default, kube-system,istio-system) into its entry
    expect(sluiceEntry()).toEqual({
      type: 'sluice-cni',
      agentSocket: path.join(env.node.workDir, 'agent.sock'),
      excludeNamespaces: ['kube-system', 'istio-system'],
    });
    await stopAgent(env);
    try {
      const system = await env.node.addPod('coredns-1', {
        namespace: 'kube-system',
        extraPlugins: [sluiceEntry()],
        binDirs: [binDir],
      });
      expect(system.ipv4).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
      const failed = await addPod('web-down').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(failed).toBeInstanceOf(CniPluginError);
      expect(failed).toMatchObject({ plugin: 'sluice-cni', command: 'ADD' });
      expect((failed as CniPluginError).cniError).toMatchObject({
        code: 11,
        msg: 'sluice agent is not reachable; try again later',
      });
      expect(env.node.pods.map((p) => p.name)).not.toContain('web-down');

      // the excluded pod's ADD prints the primary's result byte for byte, CHECK succeeds
      const prev = '{ "cniVersion" : "1.0.0",\n  "ips": [ {"address": "10.9.9.7/24", "interface": 0} ], "x-extra": 1.50 }';
      const stdin = conf(sluiceEntry()).replace(/}$/, `, "prevResult": ${prev}}`);
      const args = { CNI_CONTAINERID: 'sys-1', CNI_ARGS: 'K8S_POD_NAMESPACE=istio-system;K8S_POD_NAME=istiod-1' };
      expect(await plugin('ADD', stdin, args)).toMatchObject({ code: 0, stdout: prev + '\n' });
      expect(await plugin('CHECK', stdin, args)).toMatchObject({ code: 0, stdout: '' });
      // errors retrying cannot fix are never "try again later", agent or not
      expect((await plugin('ADD', stdin, { ...args, CNI_IFNAME: '' })).json).toMatchObject({
        code: 4,
        msg: 'required environment variable CNI_IFNAME is missing',
      });
      expect((await plugin('ADD', stdin.replace('"1.0.0"', '"0.2.0"'), args)).json).toMatchObject({
        code: 1,
        cniVersion: '0.2.0',
      });
      expect((await plugin('ADD', conf(sluiceEntry()), args)).json).toMatchObject({
        code: 7,
        msg: 'sluice-cni must be chained after the primary plugin',
      });
      await env.node.removePod(system); // DEL while the agent is down succeeds
    } finally {
      await startAgent(env);
    }
  });

  it('registrations survive an agent restart; those of vanished namespaces are dropped', async () => {
    const keep = await addPod('survivor');
    const lost = await addPod('lost');
    await stopAgent(env, 'SIGKILL');
    await run(['ip', 'netns', 'del', lost.netnsName]);
    await startAgent(env);
    const out = (await sluice(env, ['endpoint', 'list'])).stdout;
    expect(out).toContain('default/survivor');
    expect(out).not.toContain('default/lost');
    await env.node.removePod(keep);
    env.node.pods.splice(env.node.pods.indexOf(lost), 1);
  });

  it('200 pods created and deleted leave no registration behind', async () => {
    const pods: SimPod[] = [];
    for (let i = 0; i < 200; i++) pods.push(await addPod(`churn-${i}`));
    const eps = JSON.parse((await sluice(env, ['endpoint', 'list', '-o', 'json'])).stdout);
    expect(eps.filter((e: { name: string }) => e.name.startsWith('churn-'))).toHaveLength(200);
    expect(new Set(eps.map((e: { netnsCookie: string }) => e.netnsCookie)).size).toBe(eps.length);
    for (const p of pods) await env.node.removePod(p);
    expect(JSON.parse((await sluice(env, ['endpoint', 'list', '-o', 'json'])).stdout)).toEqual([]);
    expect(fs.readdirSync(path.join(stateDir, 'endpoints')).filter((f) => !f.startsWith('.'))).toEqual([]);
  }, 240000);

  it('a primary that rewrites its conflist gets sluice re-inserted', async () => {
    fs.writeFileSync(primaryFile() + '.tmp', primaryText);
    fs.renameSync(primaryFile() + '.tmp', primaryFile());
    await waitFor('sluice re-inserted', () => fs.readFileSync(primaryFile(), 'utf8').includes('sluice-cni'), 3000);
    expect(JSON.parse(fs.readFileSync(primaryFile(), 'utf8')).plugins.map((p: { type: string }) => p.type)).toEqual([
      'bridge',
      'sluice-cni',
    ]);
  });

  it('uninstall removes the entry and binary and leaves the primary exactly as it was', async () => {
    await stopAgent(env);
    await sluice(env, ['uninstall']);
    expect(fs.readFileSync(primaryFile(), 'utf8')).toBe(primaryText);
    expect(fs.existsSync(path.join(binDir, 'sluice-cni'))).toBe(false);
    expect(fs.readFileSync(path.join(confDir, '20-other.conf'), 'utf8')).toBe(
      '{"cniVersion":"0.4.0","name":"other","type":"ptp"}\n',
    );
    expect(fs.readdirSync(confDir).sort()).toEqual(['10-podnet.conflist', '20-other.conf']);
  });
});
