/* The CNI command handler, once per supported cniVersion, without a process. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PodRegistry } from '../../src/agent/pod-registry';
import { cniError, handleCni, type CniDeps, type CniRequest } from '../../src/cni/handler';
import { parseCniArgs, rawMember, SUPPORTED_VERSIONS } from '../../src/cni/spec';

let dir: string;
let deps: CniDeps;
let ready: { ready: boolean; reason: string };

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slcni-'));
  ready = { ready: true, reason: 'ok' };
  deps = { registry: new PodRegistry(dir), readiness: () => ready };
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/* A prevResult as bridge writes it, with formatting JSON.stringify would not reproduce. */
const PREV = `{
    "cniVersion": "VER",
    "interfaces": [{"name": "slbr0", "mac": "aa:bb:cc:dd:ee:ff"}, {"name": "eth0", "sandbox": "/var/run/netns/x"}],
    "ips": [{"interface": 1, "address": "10.1.0.5/24", "gateway": "10.1.0.1"}, {"interface": 1, "address": "fd00::5/64"}],
    "dns": {}
}`;

function conf(version: string, extra = ''): string {
  return `{"cniVersion":"${version}","name":"podnet","type":"sluice-cni","agentSocket":"/x.sock"${extra},"prevResult":${PREV.replace('VER', version)}}`;
}

function req(command: string, stdin: string, env: Record<string, string> = {}): CniRequest {
  return {
    command,
    stdin,
    netnsCookie: '4242',
    env: {
      CNI_CONTAINERID: 'c0ffee',
      CNI_NETNS: '/var/run/netns/x',
      CNI_IFNAME: 'eth0',
      CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-1;K8S_POD_UID=u-1',
      ...env,
    },
  };
}

function error(reply: { code: number; stdout: string }) {
  expect(reply.code).toBe(1);
  return JSON.parse(reply.stdout);
}

describe.each(SUPPORTED_VERSIONS)('cniVersion %s', (version) => {
  it('ADD registers the pod and prints the prevResult byte for byte', () => {
    const reply = handleCni(req('ADD', conf(version)), deps);
    expect(reply).toEqual({ code: 0, stdout: PREV.replace('VER', version) + '\n' });
    const reg = deps.registry.get('c0ffee', 'eth0')!;
    expect(reg).toMatchObject({
      namespace: 'shop',
      name: 'cart-1',
      uid: 'u-1',
      ips: ['10.1.0.5', 'fd00::5'],
      netnsCookie: '4242',
      network: 'podnet',
    });
  });

  it('DEL unregisters and is idempotent', () => {
    handleCni(req('ADD', conf(version)), deps);
    expect(handleCni(req('DEL', conf(version)), deps)).toEqual({ code: 0, stdout: '' });
    expect(deps.registry.get('c0ffee', 'eth0')).toBeUndefined();
    expect(handleCni(req('DEL', conf(version), { CNI_NETNS: '' }), deps)).toEqual({ code: 0, stdout: '' });
  });

  it('errors answer in the version called with', () => {
    expect(error(handleCni(req('ADD', conf(version), { CNI_IFNAME: '' }), deps))).toMatchObject({ cniVersion: version, code: 4 });
  });

  it('VERSION is not answered here: the plugin answers it alone (test/c/cni-dispatch-test.c)', () => {
    expect(error(handleCni(req('VERSION', `{"cniVersion":"${version}"}`), deps))).toEqual({
      cniVersion: version,
      code: 4,
      msg: 'VERSION is answered by the sluice-cni plugin, not by the agent',
    });
  });

  it("cniError answers in the caller's cniVersion", () => {
    expect(cniError(conf(version), 11, 'sluice agent failed', 'boom')).toEqual({
      code: 1,
      stdout: `{"cniVersion":"${version}","code":11,"msg":"sluice agent failed","details":"boom"}\n`,
    });
  });
});

describe('CNI errors', () => {
  it("cniError answers in the newest version when the caller's stdin has none, and leaves out empty details", () => {
    for (const stdin of ['', '{"cniVersion": ', '{"name":"n"}', '{"cniVersion":""}', '[1]']) {
      expect(JSON.parse(cniError(stdin, 11, 'm', '').stdout)).toEqual({ cniVersion: '1.1.0', code: 11, msg: 'm' });
    }
  });

  it('a null prevResult is an absent one, as in Go: ADD is unchained, DEL is fine', () => {
    const nullPrev = '{"cniVersion":"1.0.0","name":"podnet","type":"sluice-cni","prevResult":null}';
    expect(error(handleCni(req('ADD', nullPrev), deps))).toMatchObject({
      code: 7,
      msg: 'sluice-cni must be chained after the primary plugin',
    });
    expect(handleCni(req('DEL', nullPrev), deps)).toEqual({ code: 0, stdout: '' });
    expect(error(handleCni(req('DEL', nullPrev.replace('null', '[]')), deps))).toMatchObject({
      code: 7,
      details: 'prevResult must be an object',
    });
  });

  it('an unsupported version is code 1', () => {
    const e = error(handleCni(req('ADD', conf('0.2.0')), deps));
    expect(e).toMatchObject({ code: 1, msg: 'incompatible CNI versions' });
    expect(e.details).toContain('0.2.0');
  });

  it('missing CNI_* variables are code 4', () => {
    for (const v of ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME']) {
      expect(error(handleCni(req('ADD', conf('1.0.0'), { [v]: '' }), deps))).toMatchObject({
        code: 4,
        msg: `required environment variable ${v} is missing`,
      });
    }
    expect(error(handleCni(req('FROB', conf('1.0.0')), deps)).code).toBe(4);
  });

  it('an unusable network namespace is code 4 with the reason', () => {
    const r = req('ADD', conf('1.0.0'));
    delete r.netnsCookie;
    r.netnsError = 'open: No such file or directory';
    expect(error(handleCni(r, deps))).toMatchObject({ code: 4, details: 'open: No such file or directory' });
  });

  it('undecodable stdin is code 6', () => {
    expect(error(handleCni(req('ADD', '{"cniVersion": '), deps)).code).toBe(6);
    expect(error(handleCni(req('ADD', '[1,2]'), deps)).code).toBe(6);
  });

  it('an invalid config is code 7, and so is running unchained', () => {
    expect(error(handleCni(req('ADD', '{"cniVersion":"1.0.0","type":"sluice-cni"}'), deps))).toMatchObject({
      code: 7,
      details: 'name is required',
    });
    expect(error(handleCni(req('ADD', '{"name":"n","type":"sluice-cni"}'), deps))).toMatchObject({
      code: 7,
      details: 'cniVersion is required',
    });
    const unchained = error(handleCni(req('ADD', '{"cniVersion":"1.0.0","name":"n","type":"sluice-cni"}'), deps));
    expect(unchained).toMatchObject({ code: 7, msg: 'sluice-cni must be chained after the primary plugin' });
  });

  it('an agent that is not ready answers ADD with code 11 and registers nothing', () => {
    ready = { ready: false, reason: 'loading the datapath' };
    expect(error(handleCni(req('ADD', conf('1.0.0')), deps))).toMatchObject({ code: 11, details: 'loading the datapath' });
    expect(deps.registry.list()).toEqual([]);
  });

  it('a failing datapath hook undoes the registration and answers 11', () => {
    deps.onAdd = () => {
      throw new Error('map full');
    };
    expect(error(handleCni(req('ADD', conf('1.0.0')), deps))).toMatchObject({ code: 11, details: 'map full' });
    expect(deps.registry.list()).toEqual([]);
  });
});

describe('CHECK, STATUS and GC', () => {
  it('CHECK verifies the registration, its namespace and its IPs', () => {
    expect(error(handleCni(req('CHECK', conf('1.0.0')), deps)).code).toBe(101);
    handleCni(req('ADD', conf('1.0.0')), deps);
    expect(handleCni(req('CHECK', conf('1.0.0')), deps)).toEqual({ code: 0, stdout: '' });
    const moved = req('CHECK', conf('1.0.0'));
    moved.netnsCookie = '7';
    expect(error(handleCni(moved, deps)).msg).toMatch(/another network namespace/);
    expect(error(handleCni(req('CHECK', conf('0.3.1')), deps)).code).toBe(1);
  });

  it('STATUS reports code 50 while the agent is not ready', () => {
    expect(handleCni(req('STATUS', '{"cniVersion":"1.1.0","name":"n","type":"sluice-cni"}'), deps)).toEqual({
      code: 0,
      stdout: '',
    });
    ready = { ready: false, reason: 'first sync pending' };
    expect(error(handleCni(req('STATUS', '{"cniVersion":"1.1.0","name":"n","type":"sluice-cni"}'), deps))).toMatchObject({
      code: 50,
    });
  });

  it('GC forgets attachments the runtime no longer lists, of its own network only', () => {
    handleCni(req('ADD', conf('1.1.0')), deps);
    handleCni(req('ADD', conf('1.1.0'), { CNI_CONTAINERID: 'keep' }), deps);
    handleCni(req('ADD', conf('1.1.0').replace('"podnet"', '"othernet"'), { CNI_CONTAINERID: 'other' }), deps);
    const gc =
      '{"cniVersion":"1.1.0","name":"podnet","type":"sluice-cni","cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}]}';
    expect(handleCni(req('GC', gc), deps)).toEqual({ code: 0, stdout: '' });
    expect(
      deps.registry
        .list()
        .map((e) => e.containerId)
        .sort(),
    ).toEqual(['keep', 'other']);
  });

  it('registrations survive a new registry on the same state dir', () => {
    handleCni(req('ADD', conf('1.0.0')), deps);
    const again = new PodRegistry(dir);
    expect(again.load()).toBe(1);
    expect(again.get('c0ffee', 'eth0')?.name).toBe('cart-1');
  });
});

describe('spec helpers', () => {
  it('rawMember returns the exact text of a top-level member', () => {
    const text = '{ "a" : "x\\"}" , "prevResult" : { "k": [1, {"z": "}"}] }  , "b": 2 }';
    expect(rawMember(text, 'prevResult')).toBe('{ "k": [1, {"z": "}"}] }');
    expect(rawMember(text, 'b')).toBe('2');
    expect(rawMember('{"nested": {"prevResult": 1}}', 'prevResult')).toBeUndefined();
  });

  it('rawMember gives the last of repeated keys, the value JSON.parse keeps', () => {
    const text = '{"prevResult": {"a": 1}, "x": 2, "prevResult" : { "b" : 2 } }';
    expect(JSON.parse(text).prevResult).toEqual({ b: 2 });
    expect(rawMember(text, 'prevResult')).toBe('{ "b" : 2 }');
  });

  it('parseCniArgs splits K=V pairs', () => {
    expect(parseCniArgs('IgnoreUnknown=1;K8S_POD_NAME=a=b;bad;K8S_POD_NAMESPACE=')).toEqual({
      IgnoreUnknown: '1',
      K8S_POD_NAME: 'a=b',
      K8S_POD_NAMESPACE: '',
    });
  });
});
