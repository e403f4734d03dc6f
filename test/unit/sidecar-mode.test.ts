/* Which pods are in sidecar mode, with which proxy uid/gid and DNS capture: istio-cni's own test
 * cases (istio/istio cni/pkg/plugin/plugin_test.go and plugin_dryrun_test.go), read as sluice's
 * mode decision. Where istio-cni's test relies on a quirk of its mock (a label written as an
 * annotation), the case says what it checks instead.
 */
import { describe, expect, it } from 'vitest';
import { POL_DNS } from '../../src/bpf/layout';
import type { Container, Namespace, Pod } from '../../src/k8s/types';
import { decideMode, type ModeOptions } from '../../src/mesh/mode';

const STATUS_KEY = 'sidecar.istio.io/status';
const INJECT_KEY = 'sidecar.istio.io/inject';
const AMBIENT_NS = { 'istio.io/dataplane-mode': 'ambient' };
const opts: ModeOptions = { excludeNamespaces: ['testExcludeNS'] };

interface PodOptions {
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  containers?: Container[];
  initContainers?: Container[];
  namespace?: string;
}

/** istio-cni's buildFakePodAndNSForClient: containers "foo-init" and "mockContainer", no annotations. */
function testPod(o: PodOptions = {}): Pod {
  const spec: Pod['spec'] = { containers: o.containers ?? [{ name: 'foo-init' }, { name: 'mockContainer' }] };
  if (o.initContainers) spec.initContainers = o.initContainers;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: 'testPod',
      namespace: o.namespace ?? 'testNS',
      annotations: o.annotations ?? {},
      ...(o.labels ? { labels: o.labels } : {}),
    },
    spec,
    status: {},
  };
}

function testNs(labels: Record<string, string> = {}, name = 'testNS'): Namespace {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } };
}

/** The app and a sidecar proxy, as TestCmdAddTwoContainers builds them. */
function withProxy(proxy: Partial<Container> = {}): Container[] {
  return [{ name: 'mockContainer' }, { name: 'istio-proxy', ...proxy }];
}

const decide = (pod: Pod, ns: Namespace = testNs(), o: Partial<ModeOptions> = {}) =>
  decideMode(pod, ns, ['10.0.0.2'], { ...opts, ...o });

describe('which pods istio-cni redirects (plugin_test.go)', () => {
  it('TestCmdAddTwoContainers: istio-proxy and the status annotation: redirected, every inbound port', () => {
    const d = decide(testPod({ containers: withProxy(), annotations: { [STATUS_KEY]: 'true' } }));
    expect(d).toMatchObject({ mode: 'sidecar', rule: 'istio-proxy sidecar with annotation sidecar.istio.io/status' });
    expect(d.policy?.includeInPorts).toEqual([]); // "*": every port
  });

  it('TestCmdAddTwoContainersWithoutSideCar: istio-proxy without the status annotation is not redirected', () => {
    expect(decide(testPod({ containers: withProxy() }))).toMatchObject({
      mode: 'none',
      rule: expect.stringMatching(/^no sidecar\.istio\.io\/status annotation/),
    });
  });

  it('TestCmdAddTwoContainersWithAnnotation: inject "false" is not redirected, even with the status annotation', () => {
    const d = decide(testPod({ containers: withProxy(), annotations: { [STATUS_KEY]: 'true', [INJECT_KEY]: 'false' } }));
    expect(d).toMatchObject({ mode: 'none', rule: 'annotation sidecar.istio.io/inject=false' });
  });

  it('TestCmdAddTwoContainersWithLabel: the inject label opts out too, and wins over the annotation', () => {
    expect(
      decide(testPod({ containers: withProxy(), labels: { [INJECT_KEY]: 'false' }, annotations: { [STATUS_KEY]: 'true' } })),
    ).toMatchObject({
      mode: 'none',
      rule: 'label sidecar.istio.io/inject=false',
    });
    const labelTrue = testPod({
      containers: withProxy(),
      labels: { [INJECT_KEY]: 'true' },
      annotations: { [STATUS_KEY]: 'true', [INJECT_KEY]: 'false' },
    });
    expect(decide(labelTrue).mode).toBe('sidecar');
  });

  it('inject values strconv.ParseBool reads as false opt out; "" and unreadable values do not', () => {
    for (const v of ['false', '0', 'f', 'F', 'FALSE', 'False']) {
      expect(decide(testPod({ containers: withProxy(), annotations: { [STATUS_KEY]: 'true', [INJECT_KEY]: v } })).mode, v).toBe(
        'none',
      );
    }
    for (const v of ['', 'no', 'disabled', 'true']) {
      expect(decide(testPod({ containers: withProxy(), annotations: { [STATUS_KEY]: 'true', [INJECT_KEY]: v } })).mode, v).toBe(
        'sidecar',
      );
    }
    // an empty label still replaces the annotation, as in istio-cni
    const emptyLabel = testPod({
      containers: withProxy(),
      labels: { [INJECT_KEY]: '' },
      annotations: { [STATUS_KEY]: 'true', [INJECT_KEY]: 'false' },
    });
    expect(decide(emptyLabel).mode).toBe('sidecar');
  });

  it('TestCmdAddExcludePod / TestCmdAddPodInExcludedNamespace: an excluded namespace is never captured', () => {
    const p = testPod({ containers: withProxy(), annotations: { [STATUS_KEY]: 'true' }, namespace: 'testExcludeNS' });
    expect(decide(p, testNs(AMBIENT_NS, 'testExcludeNS'))).toMatchObject({
      mode: 'none',
      rule: 'namespace testExcludeNS is in exclude-namespaces',
    });
  });

  it('TestCmdAddExcludePodWithIstioInitContainer: a pod with istio-init redirects itself', () => {
    const p = testPod({ containers: [...withProxy(), { name: 'istio-init' }], annotations: { [STATUS_KEY]: 'true' } });
    expect(decide(p)).toMatchObject({ mode: 'none', rule: 'container istio-init present: the pod sets up its own redirection' });
    // where the injector puts it: an init container
    const asInit = testPod({
      containers: withProxy(),
      initContainers: [{ name: 'istio-init', args: ['istio-iptables'] }],
      annotations: { [STATUS_KEY]: 'true' },
    });
    expect(decide(asInit).rule).toMatch(/^container istio-init present/);
  });

  it('TestCmdAddExcludePodWithEnvoyDisableEnv: excluded (by its istio-init container, checked first)', () => {
    const p = testPod({
      containers: [...withProxy(), { name: 'istio-init', env: [{ name: 'DISABLE_ENVOY', value: 'true' }] }],
      annotations: { [STATUS_KEY]: 'true' },
    });
    expect(decide(p).rule).toMatch(/^container istio-init present/);
  });

  it('DISABLE_ENVOY on istio-proxy excludes the pod when ParseBool reads it as true, and only on istio-proxy', () => {
    const disabled = (value: string | undefined, on = 'istio-proxy') =>
      decide(
        testPod({
          containers: [
            { name: 'mockContainer', ...(on === 'mockContainer' ? { env: [{ name: 'DISABLE_ENVOY', value }] } : {}) },
            { name: 'istio-proxy', ...(on === 'istio-proxy' ? { env: [{ name: 'DISABLE_ENVOY', value }] } : {}) },
          ],
          annotations: { [STATUS_KEY]: 'true' },
        }),
      );
    for (const v of ['true', '1', 't', 'T', 'TRUE', 'True'])
      expect(disabled(v), v).toMatchObject({ mode: 'none', rule: `istio-proxy env DISABLE_ENVOY=${v}: no proxy runs` });
    for (const v of ['false', '0', 'yes', '']) expect(disabled(v).mode, v).toBe('sidecar');
    expect(disabled(undefined).mode).toBe('sidecar'); // valueFrom: no literal value, ParseBool("") fails
    expect(disabled('true', 'mockContainer').mode).toBe('sidecar');
  });

  it('a pod without an istio-proxy container is not redirected, naming the containers it has', () => {
    expect(decide(testPod({ annotations: { [STATUS_KEY]: 'true' } }))).toMatchObject({
      mode: 'none',
      rule: 'no istio-proxy container (have foo-init,mockContainer)',
    });
    expect(decide(testPod({ containers: [], annotations: { [STATUS_KEY]: 'true' } })).rule).toBe(
      'no istio-proxy container (have none)',
    );
  });

  it('a gateway (istio-proxy runs `proxy router`) is not redirected, though the injector wrote the status annotation', () => {
    const gw = testPod({
      containers: [{ name: 'istio-proxy', args: ['proxy', 'router', '--domain', 'istio-system.svc.cluster.local'] }],
      annotations: { [STATUS_KEY]: '{}' },
    });
    expect(decide(gw)).toMatchObject({ mode: 'none', rule: 'istio-proxy is a router proxy (args: proxy router), not a sidecar' });
    expect(decide(gw).policy).toBeUndefined();
    // nor is it ambient: a pod with the status annotation never is
    expect(decide(gw, testNs(AMBIENT_NS)).mode).toBe('none');
  });

  it('the proxy type is the second arg after "proxy"; without one the proxy counts as a sidecar', () => {
    const type = (args: string[] | undefined) =>
      decide(testPod({ containers: withProxy(args ? { args } : {}), annotations: { [STATUS_KEY]: 'true' } })).mode;
    expect(type(['proxy', 'sidecar', '--domain', 'x'])).toBe('sidecar');
    expect(type(undefined)).toBe('sidecar');
    expect(type(['proxy'])).toBe('sidecar');
    expect(type(['router', 'proxy'])).toBe('sidecar'); // args[0] must be "proxy"
    expect(type(['proxy', 'router'])).toBe('none');
    expect(type(['proxy', 'ztunnel'])).toBe('none');
  });

  it('a native sidecar (istio-proxy as an init container) is redirected', () => {
    const p = testPod({
      containers: [{ name: 'app' }],
      initContainers: [
        { name: 'istio-proxy', args: ['proxy', 'sidecar'], securityContext: { runAsUser: 1337, runAsGroup: 1337 } },
      ],
      annotations: { [STATUS_KEY]: '{}' },
    });
    expect(decide(p)).toMatchObject({ mode: 'sidecar', proxy: { uid: 1337, gid: 1337 } });
  });

  it("the checks run in istio-cni's order: istio-init, DISABLE_ENVOY, istio-proxy, proxy type, inject", () => {
    const base = { annotations: { [STATUS_KEY]: 'true', [INJECT_KEY]: 'false' } };
    const router = { name: 'istio-proxy', args: ['proxy', 'router'], env: [{ name: 'DISABLE_ENVOY', value: 'true' }] };
    expect(decide(testPod({ ...base, containers: [router, { name: 'istio-init' }] })).rule).toMatch(/^container istio-init/);
    expect(decide(testPod({ ...base, containers: [router] })).rule).toMatch(/DISABLE_ENVOY=true/);
    expect(decide(testPod({ ...base, containers: [{ ...router, env: [] }] })).rule).toMatch(/router proxy/);
    expect(decide(testPod({ ...base, containers: [{ name: 'istio-proxy' }] })).rule).toBe(
      'annotation sidecar.istio.io/inject=false',
    );
  });

  it('TestCmdAddPodWithProxySidecarAmbientEnabledNS: the status annotation wins over an ambient namespace', () => {
    expect(decide(testPod({ containers: withProxy(), annotations: { [STATUS_KEY]: 'true' } }), testNs(AMBIENT_NS)).mode).toBe(
      'sidecar',
    );
  });

  it('TestCmdAddPodWithGenericSidecar: an istio-proxy container without the status annotation stays ambient', () => {
    expect(decide(testPod({ containers: withProxy() }), testNs(AMBIENT_NS)).mode).toBe('ambient');
  });
});

describe('proxy uid/gid (plugin_dryrun_test.go custom-uid cases)', () => {
  const sidecar = (securityContext?: Container['securityContext'], o: Partial<ModeOptions> = {}) =>
    decide(
      testPod({ containers: withProxy(securityContext ? { securityContext } : {}), annotations: { [STATUS_KEY]: 'true' } }),
      testNs(),
      o,
    );

  it('custom-uid: runAsUser and runAsGroup of istio-proxy (OpenShift assigns random ones)', () => {
    expect(sidecar({ runAsUser: 1000670000, runAsGroup: 1000670001 }).proxy).toEqual({ uid: 1000670000, gid: 1000670001 });
  });

  it('custom-uid-zero and an absent securityContext: the configured proxy uid/gid (1337 by default)', () => {
    expect(sidecar({ runAsUser: 0 }).proxy).toEqual({ uid: 1337, gid: 1337 });
    expect(sidecar(undefined).proxy).toEqual({ uid: 1337, gid: 1337 });
    expect(sidecar({}, { proxyUid: 2000, proxyGid: 3000 }).proxy).toEqual({ uid: 2000, gid: 3000 });
  });

  it('uid and gid fall back each on its own', () => {
    expect(sidecar({ runAsUser: 1000670000 }, { proxyGid: 3000 }).proxy).toEqual({ uid: 1000670000, gid: 3000 });
    expect(sidecar({ runAsUser: 0, runAsGroup: 1000670001 }, { proxyUid: 2000 }).proxy).toEqual({ uid: 2000, gid: 1000670001 });
  });

  it('only the istio-proxy container counts', () => {
    const p = testPod({
      containers: [{ name: 'app', securityContext: { runAsUser: 1000 } }, { name: 'istio-proxy' }],
      annotations: { [STATUS_KEY]: 'true' },
    });
    expect(decide(p).proxy).toEqual({ uid: 1337, gid: 1337 });
  });

  it('pods that are not redirected carry no proxy identity', () => {
    expect(decide(testPod({ containers: withProxy({ securityContext: { runAsUser: 5 } }) })).proxy).toBeUndefined();
  });
});

describe('DNS capture per pod (plugin_dryrun_test.go DNS case)', () => {
  const dns = (env: Container['env'], meshDefault?: boolean) => {
    const d = decide(testPod({ containers: withProxy(env ? { env } : {}), annotations: { [STATUS_KEY]: 'true' } }), testNs(), {
      dnsCapture: meshDefault,
    });
    return { on: Boolean(d.policy!.flags & POL_DNS), dns: d.dns };
  };

  it('ISTIO_META_DNS_CAPTURE=true on the proxy turns it on, whatever mesh-dns-capture says', () => {
    expect(dns([{ name: 'ISTIO_META_DNS_CAPTURE', value: 'true' }])).toEqual({
      on: true,
      dns: { capture: true, from: 'ISTIO_META_DNS_CAPTURE=true' },
    });
    expect(dns([{ name: 'ISTIO_META_DNS_CAPTURE', value: 'false' }], true)).toEqual({
      on: false,
      dns: { capture: false, from: 'ISTIO_META_DNS_CAPTURE=false' },
    });
  });

  it('without the env, mesh-dns-capture decides (off by default, as istio-cni)', () => {
    expect(dns(undefined)).toEqual({ on: false, dns: { capture: false, from: 'mesh-dns-capture' } });
    expect(dns(undefined, true)).toEqual({ on: true, dns: { capture: true, from: 'mesh-dns-capture' } });
  });

  it('a value ParseBool cannot read (or a valueFrom) means off, as in istio-cni, not the default', () => {
    expect(dns([{ name: 'ISTIO_META_DNS_CAPTURE', value: 'yes' }], true).on).toBe(false);
    expect(dns([{ name: 'ISTIO_META_DNS_CAPTURE' }], true).on).toBe(false);
  });

  it('the last entry of the same name wins, as istio-cni reads env into a map', () => {
    expect(
      dns([
        { name: 'ISTIO_META_DNS_CAPTURE', value: 'false' },
        { name: 'ISTIO_META_DNS_CAPTURE', value: 'true' },
      ]).on,
    ).toBe(true);
  });

  it('ISTIO_META_DNS_AUTO_ALLOCATE alone changes nothing: istio-cni does not read it', () => {
    expect(dns([{ name: 'ISTIO_META_DNS_AUTO_ALLOCATE', value: 'true' }])).toEqual(dns(undefined));
  });
});

describe('interface annotations on a redirected pod', () => {
  it('excludeInterfaces refuses the pod with the reason (another engineer fails its ADD on it)', () => {
    const d = decide(
      testPod({
        containers: withProxy(),
        annotations: { [STATUS_KEY]: 'true', 'traffic.sidecar.istio.io/excludeInterfaces': 'net1' },
      }),
    );
    expect(d).toMatchObject({
      mode: 'none',
      refused: expect.stringMatching(/excludeInterfaces "net1" is not supported by sluice/),
    });
    expect(d.rule).toBe(`sidecar refused: ${d.refused}`);
  });

  it('a pod istio-cni would not redirect is not refused for its annotations', () => {
    const gw = testPod({
      containers: [{ name: 'istio-proxy', args: ['proxy', 'router'] }],
      annotations: { [STATUS_KEY]: 'true', 'traffic.sidecar.istio.io/kubevirtInterfaces': 'tap0' },
    });
    expect(decide(gw).refused).toBeUndefined();
  });
});
