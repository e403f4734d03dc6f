/* `sluice doctor` on a simulated node: healthy (every check ok, exit 0), then each broken state it
 * detects, made for real (a link detached with bpftool, a service deleted from the pinned map,
 * iptables rules added in a pod, ...), each giving the right failed line and exit 1, and repaired
 * before the next.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DoctorReport } from '../../src/doctor';
import { LbMaps } from '../../src/lb/maps';
import { CaptureMaps } from '../../src/mesh/maps';
import { run, waitFor, type SimPod } from '../harness';
import { FakeApiServer } from '../harness/apiserver';
import { loadGolden, readGolden } from './istio-golden';
import {
  serviceYaml,
  sliceYaml,
  sluice,
  SLUICE,
  startAgent,
  stopAgent,
  TCP_PORT,
  waitForBackends,
  writeConfig,
  writeObjects,
  removeObjects,
} from './lb-env';
import { addMeshPod, createMeshEnv, namespaceYaml, startSidecar, type MeshEnv } from './mesh-env';
import { startZtunnel, type Ztunnel } from './ztunnel-env';
import type { ChildProcess } from 'node:child_process';

const VIP = '10.96.0.30';

describe.skipIf(process.getuid?.() !== 0)('sluice doctor (needs root)', () => {
  let env: MeshEnv;
  let sc: SimPod; // sidecar pod with its stand-in proxy
  let amb: SimPod; // ambient pod served by the ztunnel stand-in
  let sidecar: ChildProcess;
  let zt: Ztunnel;
  let meshConfig: Record<string, string>;

  /** Runs doctor in the node's network namespace, as the DaemonSet's hostNetwork pod does. */
  async function doctor(): Promise<{ code: number; report: DoctorReport }> {
    const json = await env.node.exec([SLUICE, 'doctor', '-o', 'json', '--config', env.configPath], {
      inCgroup: false,
      allowFail: true,
      timeoutMs: 30000,
    });
    return { code: json.code, report: JSON.parse(json.stdout) as DoctorReport };
  }

  /** The text form: one line per check result, then the summary. */
  async function doctorText(): Promise<{ code: number; text: string }> {
    const r = await env.node.exec([SLUICE, 'doctor', '--config', env.configPath], {
      inCgroup: false,
      allowFail: true,
      timeoutMs: 30000,
    });
    return { code: r.code, text: r.stdout };
  }

  function notOk(r: DoctorReport) {
    return r.checks.filter((c) => c.status !== 'ok');
  }

  async function expectHealthy(): Promise<void> {
    const d = await doctor();
    expect(notOk(d.report), JSON.stringify(d.report.checks, null, 1)).toEqual([]);
    expect(d.code).toBe(0);
  }

  /** A restarted agent hands the ambient pod to ztunnel again: healthy once ztunnel acked it. */
  async function startAgentAcked(): Promise<void> {
    await startAgent(env);
    await waitFor('amb acked by ztunnel after the agent started', async () => (await zdsState(amb)) === 'acked', 10000);
  }

  async function restartAgent(): Promise<void> {
    await stopAgent(env);
    await startAgentAcked();
  }

  async function zdsState(pod: SimPod): Promise<string | undefined> {
    const eps = JSON.parse((await sluice(env, ['endpoint', 'list', '-o', 'json'])).stdout) as Array<{
      name: string;
      zds?: { state: string };
    }>;
    return eps.find((e) => e.name === pod.name)?.zds?.state;
  }

  async function stopChild(c: ChildProcess): Promise<void> {
    if (c.exitCode !== null || c.signalCode !== null) return;
    const gone = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    await gone;
  }

  beforeAll(async () => {
    env = await createMeshEnv({ backends: 2 });
    meshConfig = { 'cni-conf-dir': env.confDir, 'cni-bin-dir': env.binDir, 'state-dir': env.stateDir };
    const [b1, b2] = env.backends;
    writeObjects(env, 'svc.yaml', [
      serviceYaml('web', { clusterIP: VIP, ports: [{ name: 'http', port: 80, targetPort: TCP_PORT }] }),
      sliceYaml('web-4', {
        service: 'web',
        family: 4,
        endpoints: [{ ip: b1.ipv4 }, { ip: b2.ipv4 }],
        ports: [{ name: 'http', port: TCP_PORT }],
      }),
    ]);
    await waitForBackends(env, `${VIP}:80/TCP`, [`${b1.ipv4}:${TCP_PORT}`, `${b2.ipv4}:${TCP_PORT}`]);
    writeObjects(env, 'ns.yaml', [namespaceYaml('shop', { 'istio.io/dataplane-mode': 'ambient' })]);
    sc = await addMeshPod(env, 'sc', { annotations: { 'sidecar.istio.io/status': '{}' }, labels: { app: 'sc' } });
    sidecar = await startSidecar(env, sc);
    zt = startZtunnel(env, 'zt1');
    amb = await addMeshPod(env, 'amb', { namespace: 'shop', labels: { app: 'amb' } });
    await waitFor('amb acked by ztunnel', async () => (await zdsState(amb)) === 'acked', 10000);
  });

  afterAll(async () => {
    await stopAgent(env);
    await env?.node.destroy();
  });

  it('a healthy node: every check ok, exit 0, one line per check', async () => {
    const d = await doctor();
    expect(notOk(d.report), JSON.stringify(d.report.checks, null, 1)).toEqual([]);
    expect(d.code).toBe(0);
    expect(d.report.healthy).toBe(true);
    const checks = new Set(d.report.checks.map((c) => c.check));
    for (const id of [
      'agent',
      'kernel.version',
      'kernel.btf',
      'kernel.netns_cookie',
      'kernel.set_retval',
      'kernel.sk_lookup',
      'kernel.tcx',
      'kernel.sock_destroy',
      'kernel.cgroup2',
      'kernel.bpffs',
      'datapath.links',
      'datapath.settings',
      'maps.pressure',
      'lb.services',
      'cni.chain',
      'cni.binary',
      'pods.mode',
      'pods.links',
      'pods.ztunnel',
      'pods.proxy',
      'pods.iptables',
      'cluster.source',
      'compat.visible',
    ])
      expect(checks, id).toContain(id);
    const t = await doctorText();
    expect(t.code).toBe(0);
    expect(t.text.trim().split('\n')).toHaveLength(d.report.checks.length + 1);
    expect(t.text).toMatch(
      /^ok +datapath\.settings +the loaded programs' settings equal the config .*bpf-lb-sock-hostns-only=false/m,
    );
    expect(t.text).toMatch(/^ok +pods\.mode +2 registered pods: .*sidecar 1, ambient 1/m);
    expect(t.text).toMatch(/^ok +lb\.services +the pinned maps hold the model exactly: 1 frontend of 1 Service\b/m);
    expect(t.text).toMatch(/^healthy: \d+ ok, 0 warn, 0 fail$/m);
  });

  /** The lines of one check that are not ok. */
  function failures(r: DoctorReport, check: string) {
    return r.checks.filter((c) => c.check === check && c.status !== 'ok');
  }

  it('a program link detached: datapath.links fails naming the program; a restart repairs', async () => {
    const pin = path.join(env.node.pinDir, 'links', 'sl_connect4');
    await run(['bpftool', 'link', 'detach', 'pinned', pin]);
    const d = await doctor();
    expect(d.code).toBe(1);
    expect(failures(d.report, 'datapath.links')).toEqual([
      expect.objectContaining({
        status: 'fail',
        message: expect.stringMatching(/^sl_connect4: the link pinned at .*sl_connect4 is detached/),
        fix: expect.stringContaining('restart the agent'),
      }),
    ]);
    const t = await doctorText();
    expect(t.code).toBe(1);
    expect(t.text).toMatch(/^fail +datapath\.links +sl_connect4: .* is detached .* — fix: restart the agent/m);
    expect(t.text).toMatch(/^unhealthy: \d+ ok, 0 warn, 1 fail$/m);
    await restartAgent();
    await expectHealthy();
  });

  it('bpf-lb-sock-hostns-only changed in the config without a restart: datapath.settings fails naming both values', async () => {
    writeConfig(env, { ...meshConfig, 'bpf-lb-sock-hostns-only': 'true' });
    try {
      const d = await doctor();
      expect(d.code).toBe(1);
      const f = failures(d.report, 'datapath.settings');
      expect(f).toHaveLength(1);
      expect(f[0].message).toMatch(
        /^cfg_hostns_only: the loaded programs have false, bpf-lb-sock-hostns-only is true now \(sl_connect4, sl_connect6, /,
      );
      expect(f[0].fix).toMatch(/restart the agent/);
      // the fix works: the restarted agent's programs carry the new value, read back from the kernel
      await restartAgent();
      const after = await doctor();
      expect(after.report.checks.find((c) => c.check === 'datapath.settings')).toMatchObject({
        status: 'ok',
        message: expect.stringContaining('bpf-lb-sock-hostns-only=true'),
      });
    } finally {
      writeConfig(env, meshConfig);
    }
    await restartAgent();
    await expectHealthy();
  });

  it('a service removed from the pinned map: lb.services fails naming the Service and its frontend', async () => {
    const maps = LbMaps.open(env.node.pinDir);
    try {
      for (const k of maps.svc.keys()) if (k.vip === VIP && k.port === 80) maps.svc.delete(k);
    } finally {
      maps.close();
    }
    const d = await doctor();
    expect(d.code).toBe(1);
    expect(failures(d.report, 'lb.services')).toEqual([
      expect.objectContaining({ status: 'fail', message: `Service default/web: ${VIP}:80/TCP is missing from sl_lb_svc` }),
    ]);
    await restartAgent(); // the agent reads the maps back and writes what is missing
    await expectHealthy();
  });

  it('the conflist without sluice (agent down): cni.chain fails, the kernel-side checks still run', async () => {
    await stopAgent(env);
    const file = path.join(env.confDir, '10-podnet.conflist');
    const list = JSON.parse(fs.readFileSync(file, 'utf8'));
    list.plugins = list.plugins.filter((p: { type: string }) => p.type !== 'sluice-cni');
    fs.writeFileSync(file, JSON.stringify(list));
    const d = await doctor();
    expect(d.code).toBe(1);
    expect(failures(d.report, 'cni.chain')).toEqual([
      expect.objectContaining({
        status: 'fail',
        message: `${file} (the file the runtime loads) has no sluice-cni entry (plugins: bridge): new pods start uncaptured`,
      }),
    ]);
    expect(d.report.checks.find((c) => c.check === 'agent')).toMatchObject({
      status: 'warn',
      message: expect.stringMatching(/^agent down/),
    });
    for (const id of ['kernel.version', 'datapath.links', 'datapath.settings', 'lb.services', 'pods.mode', 'pods.proxy']) {
      expect(
        d.report.checks.filter((c) => c.check === id).map((c) => c.status),
        id,
      ).toEqual(['ok']);
    }
    await startAgentAcked(); // puts sluice back into the conflist
    await expectHealthy();
  });

  it("a pod's policy deleted from sl_endpoints: pods.mode fails naming the pod and both modes", async () => {
    const maps = CaptureMaps.open(env.node.pinDir);
    const cookie = fs
      .readdirSync(path.join(env.stateDir, 'endpoints'))
      .map((f) => JSON.parse(fs.readFileSync(path.join(env.stateDir, 'endpoints', f), 'utf8')))
      .find((e) => e.name === 'sc').netnsCookie as string;
    try {
      expect(maps.endpoints.delete(BigInt(cookie))).toBe(true);
    } finally {
      maps.close();
    }
    const d = await doctor();
    expect(d.code).toBe(1);
    expect(failures(d.report, 'pods.mode')).toEqual([
      expect.objectContaining({
        status: 'fail',
        message: `default/sc: intended mode=sidecar (istio-proxy sidecar with annotation sidecar.istio.io/status), the kernel holds nothing (no sl_endpoints entry for netns cookie ${cookie})`,
      }),
    ]);
    await restartAgent(); // it re-applies every pod's decision at start
    await expectHealthy();
  });

  it("istio-cni's rules loaded in a captured pod (Istio's golden basic.txt.golden): pods.iptables fails (double capture)", async () => {
    await loadGolden(env.node, sc, readGolden('test/istio-golden/cni/pkg/plugin/testdata/basic.txt.golden'));
    try {
      const d = await doctor();
      expect(d.code).toBe(1);
      expect(failures(d.report, 'pods.iptables')).toEqual([
        expect.objectContaining({
          status: 'fail',
          message:
            "default/sc (sidecar): Istio's own capture rules are in its network namespace (nft table ip nat: ISTIO_INBOUND, ISTIO_REDIRECT, ISTIO_IN_REDIRECT, ISTIO_OUTPUT): connections are redirected twice",
        }),
      ]);
    } finally {
      await loadGolden(env.node, sc, { file: 'no rules', v4: [] }); // iptables-restore of empty tables removes the chains
    }
    await expectHealthy();
  });

  it('the sidecar not listening: pods.proxy fails naming the pod and the ports', async () => {
    await stopChild(sidecar);
    const d = await doctor();
    expect(d.code).toBe(1);
    expect(failures(d.report, 'pods.proxy')).toEqual([
      expect.objectContaining({
        status: 'fail',
        message:
          'default/sc (sidecar): nothing listens on 15001, 15006 in its network namespace: the sidecar is not running there, captured connections fail closed',
      }),
    ]);
    sidecar = await startSidecar(env, sc);
    await expectHealthy();
  });

  it("an ambient pod ztunnel does not ack: pods.ztunnel fails with ztunnel's reason", async () => {
    await stopChild(zt.child);
    zt = startZtunnel(env, 'zt2', ['--nack-uid', amb.uid]);
    await waitFor('amb nacked', async () => (await zdsState(amb)) === 'nack', 10000);
    const d = await doctor();
    expect(d.code).toBe(1);
    const f = failures(d.report, 'pods.ztunnel');
    expect(f).toEqual([
      expect.objectContaining({
        status: 'fail',
        message: expect.stringMatching(/^shop\/amb: ztunnel refused it: .*injected nack \(attempt \d+\)$/),
      }),
    ]);
    await stopChild(zt.child);
    zt = startZtunnel(env, 'zt3');
    await waitFor('amb acked again', async () => (await zdsState(amb)) === 'acked', 10000);
    await expectHealthy();
  });

  it("Cilium's and Istio's objects visible: the checklist fails on socket-LB in pods and on L7 policy over mTLS, warns on cni-exclusive and istiod", async () => {
    writeObjects(env, 'cilium-istio.yaml', [
      'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cilium-config, namespace: kube-system}\ndata: {kube-proxy-replacement: "true", bpf-lb-sock-hostns-only: "false", cni-exclusive: "true", routing-mode: tunnel}',
      'apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: l7, namespace: default}\nspec: {endpointSelector: {matchLabels: {app: sc}}, ingress: [{toPorts: [{ports: [{port: "8080", protocol: TCP}], rules: {http: [{method: GET}]}}]}]}',
      'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: istiod, namespace: istio-system, labels: {app: istiod}}\nspec: {template: {spec: {containers: [{name: discovery, image: pilot}]}}}',
    ]);
    try {
      const d = await waitFor('the checklist', async () => {
        const r = await doctor();
        return r.report.checks.some((c) => c.check === 'compat.cilium_socket_lb') ? r : undefined;
      });
      expect(d.code).toBe(1);
      const compat = d.report.checks.filter((c) => c.check.startsWith('compat.'));
      expect(compat.map((c) => [c.check, c.status])).toEqual([
        ['compat.cilium_socket_lb', 'fail'],
        ['compat.cilium_cni_exclusive', 'warn'],
        ['compat.l7_split_brain', 'fail'],
        ['compat.istiod_host_network', 'warn'],
      ]);
      expect(compat[2].message).toBe(
        "CiliumNetworkPolicy default/l7 has HTTP rules for default/sc (sidecar, Istio mTLS PERMISSIVE): Cilium's L7 proxy sees Istio's encrypted bytes and cannot apply the rules (split brain)",
      );
      expect(compat[0].message).toMatch(/kube-proxy-replacement=true, bpf-lb-sock-hostns-only is not "true"/);
      expect(compat[3].message).toMatch(
        /^istiod \(istio-system\/istiod\) is not on hostNetwork while Cilium runs an overlay \(routing-mode=tunnel\)/,
      );
    } finally {
      removeObjects(env, 'cilium-istio.yaml');
    }
    await expectHealthy();
  });
});

describe.skipIf(process.getuid?.() !== 0)('sluice doctor in API mode (stand-in API server)', () => {
  let api: FakeApiServer;
  let dir: string;
  let configPath: string;

  beforeAll(async () => {
    api = await FakeApiServer.start();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-doctor-api-'));
    configPath = path.join(dir, 'sluice.yaml');
    // nothing of the host's: no pins, no state, no ZDS socket, no CNI dirs
    const data = {
      'k8s-kubeconfig': api.kubeconfig(path.join(dir, 'kubeconfig')),
      'node-name': 'n1',
      'bpf-pin-dir': path.join(dir, 'pins'),
      'state-dir': path.join(dir, 'state'),
      'agent-socket': path.join(dir, 'agent.sock'),
      'ztunnel-uds-address': '',
    };
    fs.writeFileSync(
      configPath,
      Object.entries(data)
        .map(([k, v]) => `${k}: "${v}"`)
        .join('\n') + '\n',
    );
  });

  afterAll(async () => {
    await api?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  async function doctor(): Promise<{ code: number; report: DoctorReport }> {
    const r = await run([SLUICE, 'doctor', '-o', 'json', '--config', configPath], { allowFail: true, timeoutMs: 60000 });
    return { code: r.code, report: JSON.parse(r.stdout) as DoctorReport };
  }

  it('reads the objects from the API server, and fails a cluster without kube-proxy when k8s-api-server is not set', async () => {
    const from = api.requests.length;
    const d = await doctor();
    expect(d.code).toBe(1);
    expect(d.report.checks.find((c) => c.check === 'cluster.source')).toEqual({
      check: 'cluster.source',
      status: 'ok',
      message: `API server ${api.url} reachable (v1.32.0)`,
    });
    expect(d.report.checks.find((c) => c.check === 'cluster.kube_proxy')).toMatchObject({
      status: 'fail',
      fix: expect.stringContaining('k8s-api-server'),
    });
    const paths = api.requests
      .slice(from)
      .map((r) => `${r.method} ${r.path}${r.query.fieldSelector ? `?fieldSelector=${r.query.fieldSelector}` : ''}`);
    expect(paths).toEqual(
      expect.arrayContaining([
        'GET /api/v1/services',
        'GET /apis/discovery.k8s.io/v1/endpointslices',
        'GET /api/v1/pods?fieldSelector=spec.nodeName=n1',
      ]),
    );
    expect(api.requests.slice(from).every((r) => r.method === 'GET')).toBe(true); // doctor only reads
  });

  it('kube-proxy Pods visible: cluster.kube_proxy is ok', async () => {
    api.apply({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'kube-proxy-n1', namespace: 'kube-system', labels: { 'k8s-app': 'kube-proxy' } },
      spec: { nodeName: 'n1' },
    });
    const d = await doctor();
    expect(d.report.checks.find((c) => c.check === 'cluster.kube_proxy')).toEqual({
      check: 'cluster.kube_proxy',
      status: 'ok',
      message: 'kube-proxy runs: the kubernetes Service VIP is served without sluice',
    });
  });
});
