/* src/agent/cni-requests.ts: the agent's decisions around a CNI request that need no kernel, with
 * the real handleCni and PodRegistry (in a temp dir) and fakes of the mesh, the enroller, ZDS and
 * the API server. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CniRequests, ZDS_ADD_WAIT_MS, type CniRequestDeps } from '../../src/agent/cni-requests';
import type { RawReply } from '../../src/agent/local-api';
import { PodRegistry, type PodRegistration } from '../../src/agent/pod-registry';
import type { Policy } from '../../src/bpf/layout';
import type { CniRequest } from '../../src/cni/handler';
import { SUPPORTED_VERSIONS } from '../../src/cni/spec';
import type { ZdsPodStatus } from '../../src/mesh/ambient-zds';
import type { ModeDecision } from '../../src/mesh/mode';

const PREV = '{"cniVersion":"VER","ips":[{"address":"10.1.0.5/24"}]}';

function req(command: string, version: string): CniRequest {
  return {
    command,
    stdin: `{"cniVersion":"${version}","name":"podnet","type":"sluice-cni","prevResult":${PREV.replace('VER', version)}}`,
    netnsCookie: '4242',
    env: {
      CNI_CONTAINERID: 'c0ffee',
      CNI_NETNS: '/var/run/netns/x',
      CNI_IFNAME: 'eth0',
      CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-1;K8S_POD_UID=u-1',
    },
  };
}

/** The reply as the plugin gets it: exit code, then its stdout. */
function parse(bytes: string): { code: number; stdout: string } {
  const nl = bytes.indexOf('\n');
  return { code: Number(bytes.slice(0, nl)), stdout: bytes.slice(nl + 1) };
}

let dir: string;
let registry: PodRegistry;
/** what the fakes were asked */
let calls: string[];
let decision: ModeDecision;
let pods: Set<string>;

/** Deps with a mesh that decides `decision`, a store holding `pods`, no API server and no ZDS. */
function deps(extra: Partial<CniRequestDeps> = {}): CniRequestDeps {
  return {
    registry,
    readiness: () => ({ ready: true, reason: 'ok' }),
    store: { get: (key) => (pods.has(key) ? ({} as never) : undefined) },
    apiSource: () => undefined,
    mesh: () => ({
      apply: (reg: PodRegistration) => {
        calls.push(`apply ${reg.containerId}`);
        return decision;
      },
      removed: (reg: PodRegistration) => void calls.push(`removed ${reg.containerId}`),
      podUid: (reg: PodRegistration) => reg.uid,
    }),
    enroller: () => undefined,
    zds: () => undefined,
    ...extra,
  };
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slcnireq-'));
  registry = new PodRegistry(dir);
  calls = [];
  decision = { mode: 'none', rule: 'no capture asked' };
  pods = new Set();
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

describe.each(SUPPORTED_VERSIONS)('cniVersion %s', (version) => {
  it('an ADD whose Pod the store lacks, with the API server unreachable, answers 11 "try again later"', async () => {
    const asked: string[] = [];
    const apiSource = {
      getPod: async (namespace: string, name: string) => {
        asked.push(`${namespace}/${name}`);
        throw new Error('connect ECONNREFUSED 127.0.0.1:6443');
      },
    };
    const reply = parse((await new CniRequests(deps({ apiSource: () => apiSource })).handle(req('ADD', version))).bytes);
    expect(asked).toEqual(['shop/cart-1']);
    expect(reply.code).toBe(1);
    expect(JSON.parse(reply.stdout)).toEqual({
      cniVersion: version,
      code: 11,
      msg: 'sluice agent cannot read the Pod from the API server; try again later',
      details: 'connect ECONNREFUSED 127.0.0.1:6443',
    });
    expect(registry.list()).toEqual([]);
    expect(calls).toEqual([]); // nothing was decided
  });

  it('an ADD whose Pod the store holds does not ask the API server, and applies the decision', async () => {
    pods.add('Pod/shop/cart-1');
    const apiSource = {
      getPod: async () => {
        throw new Error('must not be asked');
      },
    };
    const reply = parse((await new CniRequests(deps({ apiSource: () => apiSource })).handle(req('ADD', version))).bytes);
    expect(reply).toEqual({ code: 0, stdout: PREV.replace('VER', version) + '\n' });
    expect(calls).toEqual(['apply c0ffee']);
    expect(registry.get('c0ffee', 'eth0')).toMatchObject({ namespace: 'shop', name: 'cart-1' });
  });

  it('a refused mesh decision fails ADD with 102 naming the annotation, and forgets the pod', async () => {
    decision = {
      mode: 'none',
      rule: 'invalid annotation',
      refused: 'Cannot parse annotation traffic.sidecar.istio.io/excludeOutboundPorts "80,x": "x" is not a port',
    };
    const reply = parse((await new CniRequests(deps()).handle(req('ADD', version))).bytes);
    expect(reply.code).toBe(1);
    expect(JSON.parse(reply.stdout)).toEqual({
      cniVersion: version,
      code: 102,
      msg: 'sluice refuses the pod: Cannot parse annotation traffic.sidecar.istio.io/excludeOutboundPorts "80,x": "x" is not a port',
    });
    expect(calls).toEqual(['apply c0ffee', 'removed c0ffee']);
    expect(registry.list()).toEqual([]);
  });
});

describe('CniRequests', () => {
  it('an ambient ADD answers only once ztunnel answered over ZDS, bounded by ZDS_ADD_WAIT_MS', async () => {
    const waits: Array<[string, number]> = [];
    let answer!: (st: ZdsPodStatus) => void;
    const zds = {
      waitForAnswer: (uid: string, boundMs: number) => {
        waits.push([uid, boundMs]);
        return new Promise<ZdsPodStatus | undefined>((resolve) => (answer = resolve));
      },
    };
    const enroller = { programmed: (cookie: string) => (cookie === '4242' ? ({ mode: 'ambient' } as Policy) : undefined) };
    decision = { mode: 'ambient', rule: 'namespace label istio.io/dataplane-mode=ambient' };
    let done = false;
    const replied = new CniRequests(deps({ zds: () => zds, enroller: () => enroller })).handle(req('ADD', '1.0.0')).then((r) => {
      done = true;
      return parse(r.bytes);
    });
    for (let i = 0; i < 10; i++) await Promise.resolve();
    expect(waits).toEqual([['u-1', ZDS_ADD_WAIT_MS]]);
    expect(done).toBe(false);
    answer({ state: 'acked', attempts: 1, since: new Date().toISOString() });
    expect((await replied).code).toBe(0);
    expect(calls).toEqual(['apply c0ffee']);
  });

  it('a pod that is not ambient does not wait for ZDS', async () => {
    const zds = {
      waitForAnswer: async (): Promise<ZdsPodStatus | undefined> => {
        throw new Error('must not be asked');
      },
    };
    const enroller = { programmed: () => ({ mode: 'sidecar' }) as Policy };
    const reply = parse(
      (await new CniRequests(deps({ zds: () => zds, enroller: () => enroller })).handle(req('ADD', '1.0.0'))).bytes,
    );
    expect(reply.code).toBe(0);
  });

  it('DEL forgets the pod in the mesh, and is counted by the metrics wrapper', async () => {
    const counted: string[] = [];
    const metrics = {
      cni: (command: string, handle: () => Promise<RawReply>) => {
        counted.push(command);
        return handle();
      },
    };
    const r = new CniRequests(deps({ metrics }));
    expect(parse((await r.handle(req('ADD', '1.0.0'))).bytes).code).toBe(0);
    expect(parse((await r.handle(req('DEL', '1.0.0'))).bytes)).toEqual({ code: 0, stdout: '' });
    expect(calls).toEqual(['apply c0ffee', 'removed c0ffee']);
    expect(counted).toEqual(['ADD', 'DEL']);
    expect(registry.list()).toEqual([]);
  });
});
