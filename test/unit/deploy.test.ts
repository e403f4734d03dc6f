/* What an operator applies: the kustomize base in deploy/ (rendered with `kubectl kustomize`),
 * the opt-in repair-delete overlay, the uninstall DaemonSet, the conflist example, the Docker
 * image's layout (`make install DESTDIR=…`) and deploy/README.md.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { CONFIG_KEYS, loadConfigDir, parseConfig } from '../../src/config';
import { withSluiceEntryLast } from '../../src/cni/conflist';
import { sluiceCniEntry } from '../../src/cni/install-config';
import { setLogLevel } from '../../src/log';
import {
  expectNoUnknownFields,
  expectSchemaValid,
  kustomize as render,
  one,
  ROOT,
  tmpDirMaker,
  type Obj,
} from './deploy-objects';

const DEPLOY = path.join(ROOT, 'deploy');

// Keys of src/config.ts that the production ConfigMap leaves out on purpose.
const NOT_IN_CONFIGMAP = ['k8s-objects-dir', 'k8s-kubeconfig']; // standalone mode; a kubeconfig is for runs outside a pod

/* eslint-disable @typescript-eslint/no-explicit-any */

const tmpDir = tmpDirMaker();

let base: Obj[];
let repairDelete: Obj[];
let uninstall: Obj[];
beforeAll(() => {
  base = render('.');
  repairDelete = render('overlays/repair-delete');
  uninstall = render('uninstall');
});

const agentDs = () => one(base, 'DaemonSet', 'sluice-agent');
const agentPod = () => agentDs().spec.template.spec;
const agent = () => agentPod().containers.find((c: any) => c.name === 'agent');
const configData = (objs = base): Record<string, string> => one(objs, 'ConfigMap', 'sluice-config').data;

/** volumeMount name → {hostPath, type, mountPath, propagation, readOnly} for a pod's container. */
function hostMounts(
  pod: any,
  container: any,
): Record<string, { hostPath?: string; type?: string; mountPath: string; propagation?: string; readOnly?: boolean }> {
  const out: Record<string, any> = {};
  for (const m of container.volumeMounts ?? []) {
    const v = pod.volumes.find((x: any) => x.name === m.name);
    out[m.name] = {
      hostPath: v?.hostPath?.path,
      type: v?.hostPath?.type,
      mountPath: m.mountPath,
      propagation: m.mountPropagation,
      readOnly: m.readOnly,
    };
  }
  return out;
}

/** The container path under which the host path `host` (or a directory in it) appears. */
function containerPathOf(mounts: ReturnType<typeof hostMounts>, host: string): string | undefined {
  const m = Object.values(mounts).find((x) => x.hostPath && (host === x.hostPath || host.startsWith(x.hostPath + '/')));
  return m && m.mountPath + host.slice(m.hostPath!.length);
}

describe('deploy/ (the kustomize base)', () => {
  it('renders a Namespace, ServiceAccount, ClusterRole and binding, ConfigMap and the agent DaemonSet, in sluice-system', () => {
    expect(base.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual([
      'ClusterRole/sluice-agent',
      'ClusterRoleBinding/sluice-agent',
      'ConfigMap/sluice-config',
      'DaemonSet/sluice-agent',
      'Namespace/sluice-system',
      'ServiceAccount/sluice-agent',
    ]);
    for (const o of base) {
      if (['Namespace', 'ClusterRole', 'ClusterRoleBinding'].includes(o.kind)) expect(o.metadata.namespace).toBeUndefined();
      else expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBe('sluice-system');
      expect(o.metadata.labels?.['app.kubernetes.io/part-of']).toBe('sluice');
    }
  });

  it('the agent runs on every node as a node-critical host agent, one node at a time on upgrade', () => {
    const ds = agentDs();
    const pod = agentPod();
    expect(pod.hostNetwork).toBe(true);
    expect(pod.hostPID).toBe(true);
    expect(pod.dnsPolicy).toBe('ClusterFirstWithHostNet');
    expect(pod.priorityClassName).toBe('system-node-critical');
    expect(pod.tolerations).toEqual([{ operator: 'Exists' }]);
    expect(pod.serviceAccountName).toBe('sluice-agent');
    expect(pod.terminationGracePeriodSeconds).toBe(30);
    expect(ds.spec.updateStrategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } });
    // The selector is the template's, and the part-of label kustomize adds is not in it.
    expect(ds.spec.selector.matchLabels).toEqual({ 'app.kubernetes.io/name': 'sluice', 'app.kubernetes.io/component': 'agent' });
    expect(pod).not.toHaveProperty('containers.0.lifecycle');
  });

  it('the image is the placeholder set by kustomize images:, for the agent and its init container alike', () => {
    const pod = agentPod();
    for (const c of [...pod.initContainers, ...pod.containers]) expect(c.image, c.name).toBe('ghcr.io/example/sluice:0.1.0');
    expect(fs.readFileSync(path.join(DEPLOY, 'base/daemonset.yaml'), 'utf8')).toMatch(/^\s+image: sluice$/m);
  });

  it('the agent reads the ConfigMap as a directory (--config-dir) and learns its node from the downward API', () => {
    const c = agent();
    expect(c.command).toEqual(['/opt/sluice/bin/sluice', 'agent', '--config-dir', '/etc/sluice/config']);
    const m = c.volumeMounts.find((x: any) => x.mountPath === '/etc/sluice/config');
    expect(m.readOnly).toBe(true);
    expect(agentPod().volumes.find((v: any) => v.name === m.name)).toEqual({
      name: m.name,
      configMap: { name: 'sluice-config' },
    });
    expect(c.env).toContainEqual({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    expect(configData()['node-name']).toBe('');
  });

  it("probes are httpGets on the agent's loopback health address: readiness /readyz, liveness and startup /healthz", () => {
    const c = agent();
    const health = parseConfig({ 'health-serve-addr': configData()['health-serve-addr'], 'cgroup-root': '/x' }).healthServeAddr!;
    expect(health).toEqual({ host: '127.0.0.1', port: 9968 });
    const get = (p: string) => ({ host: health.host, port: health.port, path: p });
    expect(c.readinessProbe.httpGet).toEqual(get('/readyz'));
    expect(c.readinessProbe.periodSeconds).toBe(5);
    expect(c.livenessProbe.httpGet).toEqual(get('/healthz'));
    expect(c.livenessProbe).toMatchObject({ failureThreshold: 6, initialDelaySeconds: 30 });
    const window = (p: any) => (p.periodSeconds ?? 10) * (p.failureThreshold ?? 3);
    expect(window(c.livenessProbe)).toBeGreaterThan(window(c.readinessProbe));
    // not ready (a long first sync, no primary CNI config yet) must never get the agent restarted
    expect(c.startupProbe.httpGet).toEqual(get('/healthz'));
    expect(window(c.startupProbe)).toBeGreaterThanOrEqual(300);
    for (const p of [c.readinessProbe, c.livenessProbe, c.startupProbe]) expect(p.exec).toBeUndefined();
    expect(c.resources).toEqual({ requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '512Mi' } });
  });

  it('metrics are served on every node address at the port the pod declares and its annotations name', () => {
    const metrics = parseConfig({ 'prometheus-serve-addr': configData()['prometheus-serve-addr'], 'cgroup-root': '/x' })
      .prometheusServeAddr!;
    expect(metrics).toEqual({ host: '', port: 9967 });
    expect(agent().ports).toEqual([{ name: 'prometheus', containerPort: metrics.port, hostPort: metrics.port, protocol: 'TCP' }]);
    expect(agentDs().spec.template.metadata.annotations).toEqual({
      'prometheus.io/scrape': 'true',
      'prometheus.io/port': String(metrics.port),
    });
  });

  it('the agent container is not privileged: it drops ALL capabilities and adds back only the five it uses', () => {
    const sc = agent().securityContext;
    expect(sc.privileged).toBeUndefined();
    expect(sc.capabilities.drop).toEqual(['ALL']);
    expect([...sc.capabilities.add].sort()).toEqual(['BPF', 'NET_ADMIN', 'PERFMON', 'SYS_ADMIN', 'SYS_PTRACE']);
    // Kubernetes rejects allowPrivilegeEscalation: false together with SYS_ADMIN.
    expect(sc.allowPrivilegeEscalation).toBeUndefined();
    expect(sc.appArmorProfile).toEqual({ type: 'Unconfined' });
    expect(sc.seLinuxOptions).toEqual({ type: 'spc_t', level: 's0' });
    // Every added capability carries its justification in the manifest.
    const text = fs.readFileSync(path.join(DEPLOY, 'base/daemonset.yaml'), 'utf8');
    for (const cap of sc.capabilities.add) expect(text, cap).toMatch(new RegExp(`#[^\\n]*\\n\\s+- ${cap}\\n`));
  });

  it('only the init container is privileged, and all it does is mount bpffs in the host mount namespace when missing', () => {
    const [init, ...others] = agentPod().initContainers;
    expect(others).toEqual([]);
    expect(init.name).toBe('mount-bpf-fs');
    expect(init.securityContext).toEqual({ privileged: true });
    expect(init.volumeMounts).toBeUndefined();
    const script = init.command.join(' ');
    expect(script).toContain('/proc/1/mounts');
    expect(script).toContain('nsenter --mount=/proc/1/ns/mnt -- mount -t bpf bpf /sys/fs/bpf');
  });

  it('every host directory the agent needs is mounted, with the propagation it needs', () => {
    const mounts = hostMounts(agentPod(), agent());
    const byHost = Object.fromEntries(
      Object.values(mounts)
        .filter((m) => m.hostPath)
        .map((m) => [m.hostPath, m]),
    );
    expect(byHost['/sys/fs/bpf']).toMatchObject({ mountPath: '/sys/fs/bpf', propagation: 'HostToContainer', type: 'Directory' });
    expect(byHost['/sys/fs/cgroup']).toMatchObject({ mountPath: '/run/sluice/cgroupv2', readOnly: true });
    expect(byHost['/etc/cni/net.d']).toMatchObject({ mountPath: '/host/etc/cni/net.d', type: 'DirectoryOrCreate' });
    expect(byHost['/opt/cni/bin']).toMatchObject({ mountPath: '/host/opt/cni/bin', type: 'DirectoryOrCreate' });
    expect(byHost['/var/run/netns']).toMatchObject({
      mountPath: '/var/run/netns',
      propagation: 'HostToContainer',
      type: 'DirectoryOrCreate',
    });
    expect(byHost['/var/run/sluice']).toMatchObject({ mountPath: '/run/sluice', type: 'DirectoryOrCreate' });
    expect(byHost['/var/run/ztunnel']).toMatchObject({ mountPath: '/run/ztunnel', type: 'DirectoryOrCreate' });
    expect(Object.keys(byHost).sort()).toEqual([
      '/etc/cni/net.d',
      '/opt/cni/bin',
      '/sys/fs/bpf',
      '/sys/fs/cgroup',
      '/var/run/netns',
      '/var/run/sluice',
      '/var/run/ztunnel',
    ]);
    // Bidirectional propagation would need a privileged container.
    for (const m of Object.values(mounts)) expect(m.propagation).not.toBe('Bidirectional');
  });

  it("the ConfigMap's paths are where the mounts put the host's directories", () => {
    const data = configData();
    const mounts = hostMounts(agentPod(), agent());
    // The image's /var/run is the link to /run (deploy/Dockerfile checks it).
    const inContainer = (p: string) => p.replace(/^\/var\/run\//, '/run/');
    expect(inContainer(data['bpf-pin-dir'])).toBe(containerPathOf(mounts, '/sys/fs/bpf/sluice'));
    expect(data['cgroup-root']).toBe(containerPathOf(mounts, '/sys/fs/cgroup'));
    expect(data['cni-conf-dir']).toBe(containerPathOf(mounts, '/etc/cni/net.d'));
    expect(data['cni-bin-dir']).toBe(containerPathOf(mounts, '/opt/cni/bin'));
    expect(inContainer(data['state-dir'])).toBe(containerPathOf(mounts, '/var/run/sluice'));
    // ztunnel's DaemonSet mounts the same host directory and connects to the socket there
    expect(inContainer(data['ztunnel-uds-address'])).toBe(containerPathOf(mounts, '/var/run/ztunnel/ztunnel.sock'));
    // The socket path goes into the conflist, for the plugin on the host: the same path there.
    expect(inContainer(data['agent-socket'])).toBe(containerPathOf(mounts, data['agent-socket']));
    // cgroup-root lies inside the state dir's mount: runtimes mount by path depth, parents first.
    const depth = (p: string) => p.split('/').filter(Boolean).length;
    expect(depth(mounts['sluice-run'].mountPath)).toBeLessThan(depth(mounts.cgroup2.mountPath));
  });

  it('the ConfigMap holds the production values, as strings, under exactly the keys the agent reads', () => {
    const data = configData();
    for (const [k, v] of Object.entries(data)) expect(typeof v, k).toBe('string');
    for (const k of Object.keys(data)) expect(CONFIG_KEYS.includes(k), `unknown key ${k}`).toBe(true);
    for (const k of CONFIG_KEYS) if (!NOT_IN_CONFIGMAP.includes(k)) expect(data, k).toHaveProperty([k]);
    for (const k of NOT_IN_CONFIGMAP) expect(data).not.toHaveProperty([k]);
    expect(data).toMatchObject({
      'bpf-pin-dir': '/sys/fs/bpf/sluice',
      'cgroup-root': '/run/sluice/cgroupv2',
      'agent-socket': '/var/run/sluice/agent.sock',
      'state-dir': '/var/run/sluice',
      'cni-conf-dir': '/host/etc/cni/net.d',
      'cni-bin-dir': '/host/opt/cni/bin',
      'cni-exclusive': 'false',
      'bpf-lb-sock-hostns-only': 'false',
      'exclude-namespaces': 'kube-system,istio-system',
      'mesh-proxy-uid': '1337',
      'mesh-proxy-gid': '1337',
      'ambient-proxy-mark': '0x539/0xfff',
      'k8s-api-server': '',
      'node-name': '',
      'repair-mode': 'repair',
      'prometheus-serve-addr': ':9967',
      'health-serve-addr': '127.0.0.1:9968',
    });
    const known = Object.fromEntries(Object.entries(data).filter(([k]) => CONFIG_KEYS.includes(k)));
    expect(parseConfig(known)).toMatchObject({
      cniExclusive: false,
      lbSockHostnsOnly: false,
      excludeNamespaces: ['kube-system', 'istio-system'],
      ambientProxyMark: { mark: 0x539, mask: 0xfff },
    });
  });

  it('--config-dir reads the ConfigMap as kubelet projects it (one file per key, behind ..data links)', () => {
    const data = configData();
    const dir = tmpDir('sluice-configmap-');
    const ts = path.join(dir, '..2026_01_01_00_00_00.000000000');
    fs.mkdirSync(ts);
    for (const [k, v] of Object.entries(data)) {
      fs.writeFileSync(path.join(ts, k), v);
      fs.symlinkSync(path.join('..data', k), path.join(dir, k));
    }
    fs.symlinkSync(path.basename(ts), path.join(dir, '..data'));
    const known = Object.fromEntries(Object.entries(data).filter(([k]) => CONFIG_KEYS.includes(k)));
    setLogLevel('error'); // the pending keys are warned about until src/config.ts knows them
    try {
      expect(loadConfigDir(dir)).toEqual(parseConfig(known));
    } finally {
      setLogLevel('info');
    }
  });

  it('RBAC grants exactly the verbs the agent uses: no secrets, no wildcards, no pod delete', () => {
    const role = one(base, 'ClusterRole', 'sluice-agent');
    const grants = new Set<string>();
    for (const r of role.rules)
      for (const g of r.apiGroups)
        for (const res of r.resources) for (const v of r.verbs) grants.add(`${g || 'core'}/${res}:${v}`);
    expect([...grants].sort()).toEqual([
      'core/events:create',
      'core/namespaces:list',
      'core/namespaces:watch',
      'core/nodes:get',
      'core/nodes:list',
      'core/nodes:watch',
      'core/pods:get',
      'core/pods:list',
      'core/pods:patch',
      'core/pods:watch',
      'core/services:list',
      'core/services:watch',
      'discovery.k8s.io/endpointslices:list',
      'discovery.k8s.io/endpointslices:watch',
    ]);
    for (const r of role.rules) {
      expect(Object.keys(r).sort()).toEqual(['apiGroups', 'resources', 'verbs']); // no resourceNames, no nonResourceURLs
      expect(JSON.stringify(r)).not.toContain('*');
      expect(r.resources).not.toContain('secrets');
      expect(r.verbs).not.toContain('delete');
    }
    expect(role.aggregationRule).toBeUndefined();
    const text = fs.readFileSync(path.join(DEPLOY, 'base/clusterrole.yaml'), 'utf8');
    for (const m of text.matchAll(/^(\s*)- apiGroups:/gm))
      expect(text.slice(0, m.index).trimEnd().split('\n').pop(), 'a comment above every rule').toMatch(/^\s*#/);
  });

  it("the ClusterRoleBinding gives the ClusterRole to the agent's ServiceAccount, and nothing else", () => {
    expect(one(base, 'ClusterRoleBinding', 'sluice-agent')).toMatchObject({
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'sluice-agent' },
      subjects: [{ kind: 'ServiceAccount', name: 'sluice-agent', namespace: 'sluice-system' }],
    });
    expect(one(base, 'ClusterRoleBinding', 'sluice-agent').subjects).toHaveLength(1);
  });
});

describe('deploy/overlays/repair-delete', () => {
  it('adds exactly one permission, delete on pods, and switches repair-mode to delete', () => {
    const baseRules = one(base, 'ClusterRole', 'sluice-agent').rules;
    const rules = one(repairDelete, 'ClusterRole', 'sluice-agent').rules;
    expect(rules.slice(0, baseRules.length)).toEqual(baseRules);
    expect(rules.slice(baseRules.length)).toEqual([{ apiGroups: [''], resources: ['pods'], verbs: ['delete'] }]);
    expect(configData(repairDelete)['repair-mode']).toBe('delete');
    // Everything else renders as in the base.
    const rest = (objs: Obj[]) => objs.filter((o) => o.kind !== 'ClusterRole' && o.kind !== 'ConfigMap');
    expect(rest(repairDelete)).toEqual(rest(base));
    const { 'repair-mode': _a, ...overlayData } = configData(repairDelete);
    const { 'repair-mode': _b, ...baseData } = configData(base);
    expect(overlayData).toEqual(baseData);
  });
});

describe('deploy/uninstall', () => {
  it("runs `sluice uninstall` on every node with the agent's ConfigMap and host directories, then stays up as its done signal", () => {
    expect(uninstall.map((o) => `${o.kind}/${o.metadata.namespace}/${o.metadata.name}`)).toEqual([
      'DaemonSet/sluice-system/sluice-uninstall',
    ]);
    const pod = uninstall[0].spec.template.spec;
    const [c, ...others] = pod.containers;
    expect(others).toEqual([]);
    expect(c.image).toBe(agent().image);
    const script = c.command.join(' ');
    expect(script).toContain('/opt/sluice/bin/sluice uninstall --config-dir "$cfg"');
    expect(script).toContain('cfg=/etc/sluice/config');
    expect(script).toMatch(/exec sleep infinity\s*$/);
    expect(c.readinessProbe.exec.command.join(' ')).toContain('done');
    expect(pod.tolerations).toEqual([{ operator: 'Exists' }]);
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(c.securityContext.privileged).toBeUndefined();
    expect(c.securityContext.capabilities).toEqual({ drop: ['ALL'] });
    expect(pod.volumes.find((v: any) => v.configMap)).toMatchObject({ configMap: { name: 'sluice-config' } });
    // What uninstall touches is mounted exactly where the agent has it, so the ConfigMap's paths hold.
    const mine = hostMounts(pod, c);
    const agents = hostMounts(agentPod(), agent());
    for (const name of ['bpf-maps', 'sluice-run', 'cni-conf', 'cni-bin']) {
      const { hostPath, mountPath, propagation } = agents[name];
      expect(mine[name], name).toMatchObject({ hostPath, mountPath, propagation });
    }
  });
});

describe('rendered objects against the Kubernetes API schemas', () => {
  it('every object of the base, the overlay and uninstall validates with its kubernetes-models class', () => {
    expectSchemaValid([...base, ...repairDelete, ...uninstall], (o) => `${o.kind}/${o.metadata.name}`);
  });

  it('no object has a field the API types lack (a misspelt field would otherwise be dropped silently)', () => {
    expectNoUnknownFields([...base, ...repairDelete, ...uninstall], tmpDir('sluice-deploy-types-'));
  });
});

describe('deploy/conflist-example.json', () => {
  it("is what the installer leaves: the primary's bridge + host-local entry, then sluice's, last", () => {
    const text = fs.readFileSync(path.join(DEPLOY, 'conflist-example.json'), 'utf8');
    const conf = JSON.parse(text);
    expect(conf.plugins).toHaveLength(2);
    expect(conf.plugins[0]).toMatchObject({ type: 'bridge', ipam: { type: 'host-local' } });
    // The entry the agent writes from this ConfigMap: the socket, and the namespaces whose pods
    // start while the agent is down (cni/README.md).
    const entry = sluiceCniEntry(parseConfig(configData()));
    expect(entry).toEqual({
      type: 'sluice-cni',
      agentSocket: configData()['agent-socket'],
      excludeNamespaces: configData()['exclude-namespaces'].split(','),
    });
    expect(conf.plugins[1]).toEqual(entry);
    // The installer, given this file, has nothing left to change.
    expect(withSluiceEntryLast(text, entry)).toEqual({ text, change: undefined });
    expect(fs.readFileSync(path.join(DEPLOY, 'README.md'), 'utf8')).toContain('conflist-example.json');
  });
});

describe("make install (the image's tree)", () => {
  let dest: string;
  let tree: string;
  beforeAll(() => {
    dest = tmpDir('sluice-destdir-');
    tree = path.join(dest, 'opt/sluice');
    const r = spawnSync('make', ['install', `DESTDIR=${dest}`], { cwd: ROOT, encoding: 'utf8', timeout: 180_000 });
    if (r.status !== 0) throw new Error(`make install failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  }, 200_000);

  /** The installed tree's environment: nothing pointing back at the repository. */
  const env = () => {
    const e: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: os.tmpdir() };
    return e;
  };

  it('lays out the launcher, the CNI plugin, the eBPF objects, the shim, the compiled JS and package.json under /opt/sluice', () => {
    for (const f of [
      'bin/sluice',
      'bin/sluice-cni',
      'build/libsluice.so',
      'build/dist/cli.js',
      'package.json',
      'package-lock.json',
    ]) {
      expect(fs.existsSync(path.join(tree, f)), f).toBe(true);
    }
    for (const f of ['bin/sluice', 'bin/sluice-cni']) expect(fs.statSync(path.join(tree, f)).mode & 0o111, f).toBe(0o111);
    const objs = fs
      .readdirSync(path.join(ROOT, 'bpf'))
      .filter((f) => f.endsWith('.c'))
      .map((f) => f.replace(/\.c$/, '.o'));
    expect(fs.readdirSync(path.join(tree, 'build/bpf')).sort()).toEqual(objs.sort());
    expect(fs.existsSync(path.join(tree, 'build/dist/.stamp'))).toBe(false);
    expect(fs.readdirSync(dest)).toEqual(['opt']);
  });

  it('`sluice --help` runs from the installed tree alone, and the shim loads from it', () => {
    const help = spawnSync(path.join(tree, 'bin/sluice'), ['--help'], { cwd: '/', env: env(), encoding: 'utf8' });
    expect(help.stderr).toBe('');
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^usage: sluice /);
    // The package root (build/libsluice.so, build/bpf, bin/sluice-cni) is the tree, and koffi and
    // the shim load from it.
    const probe = `const s = require(${JSON.stringify(path.join(tree, 'build/dist/bpf/shim.js'))}); s.loadShim(); process.stdout.write(s.packageRoot());`;
    const r = spawnSync(process.execPath, ['-e', probe], { cwd: '/', env: env(), encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(tree);
    const api = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(path.join(tree, 'build/dist/agent/agent.js'))})`], {
      cwd: '/',
      env: env(),
      encoding: 'utf8',
    });
    expect(api.stderr).toBe('');
    expect(api.status).toBe(0);
  });

  it('the installed sluice-cni answers VERSION with the version JSON', () => {
    const r = spawnSync(path.join(tree, 'bin/sluice-cni'), [], {
      input: '{"cniVersion":"1.0.0"}',
      env: { CNI_COMMAND: 'VERSION' },
      encoding: 'utf8',
    });
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      cniVersion: '1.0.0',
      supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'],
    });
  });

  it('the installed sluice-cni is statically linked: the runtime runs it on the node, with whatever libc the node has', () => {
    const elf = fs.readFileSync(path.join(tree, 'bin/sluice-cni'));
    expect(elf.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    expect(elf[4]).toBe(2); // 64-bit
    const phoff = Number(elf.readBigUInt64LE(0x20));
    const phentsize = elf.readUInt16LE(0x36);
    const phnum = elf.readUInt16LE(0x38);
    const types = Array.from({ length: phnum }, (_, i) => elf.readUInt32LE(phoff + i * phentsize));
    expect(types).not.toContain(3); // PT_INTERP: no dynamic loader
  });

  it('the installed node_modules hold the production dependencies and no devDependencies', () => {
    const mods = path.join(tree, 'node_modules');
    for (const dev of ['vitest', 'typescript', 'tsx', 'vite', 'kubernetes-models', 'esbuild'])
      expect(fs.existsSync(path.join(mods, dev)), dev).toBe(false);
    const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, { dev?: boolean; optional?: boolean }>;
    };
    const devOnly = Object.entries(lock.packages)
      .filter(([p, v]) => p && v.dev)
      .map(([p]) => p);
    expect(devOnly.length).toBeGreaterThan(0);
    expect(devOnly.filter((p) => fs.existsSync(path.join(tree, p)))).toEqual([]);
    const prod = Object.entries(lock.packages)
      .filter(([p, v]) => p && !v.dev && !v.optional)
      .map(([p]) => p);
    expect(prod.filter((p) => !fs.existsSync(path.join(tree, p)))).toEqual([]);
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
    for (const d of Object.keys(pkg.dependencies)) expect(fs.existsSync(path.join(mods, d)), d).toBe(true);
  });

  it("the DaemonSet's command and the Dockerfile name files the installed tree has", () => {
    const inTree = (p: string) => path.join(dest, p);
    expect(fs.existsSync(inTree(agent().command[0]))).toBe(true);
    const dockerfile = fs.readFileSync(path.join(DEPLOY, 'Dockerfile'), 'utf8');
    expect(dockerfile).toMatch(/^RUN make install DESTDIR=\/out\b/m);
    expect(dockerfile).toMatch(/^COPY --from=build \/out\/ \/$/m);
    const entrypoint = JSON.parse(/^ENTRYPOINT (\[.*\])$/m.exec(dockerfile)![1]) as string[];
    expect(fs.existsSync(inTree(entrypoint[0]))).toBe(true);
    expect(JSON.parse(/^CMD (\[.*\])$/m.exec(dockerfile)![1])).toEqual(agent().command.slice(1));
    expect(dockerfile).toMatch(/^FROM \$\{NODE_IMAGE\}$/m);
    expect(dockerfile).toMatch(/^ARG NODE_IMAGE=node:20-bookworm-slim$/m);
  });
});

describe('deploy/README.md', () => {
  it('covers install, upgrade, uninstall, the capabilities and why repair-delete is opt-in', () => {
    const readme = fs.readFileSync(path.join(DEPLOY, 'README.md'), 'utf8');
    for (const h of ['## Install', '## Upgrade', '## Uninstall', '## Capabilities', '## Repair by deletion'])
      expect(readme).toContain(h);
    expect(readme).toContain('kubectl apply -k deploy/');
    expect(readme).toContain('kubectl apply -k deploy/uninstall/');
    expect(readme).toContain('kubectl apply -k deploy/overlays/repair-delete/');
    expect(readme).toContain('ISTIO-SECURITY-2023-005');
    for (const cap of agent().securityContext.capabilities.add) expect(readme, cap).toContain(`\`${cap}\``);
  });
});
