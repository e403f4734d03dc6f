import { describe, expect, test } from 'vitest';
import { expandList, objectKey, parseObject, UnsupportedKindError } from '../../src/k8s/validate';
import { sameObject } from '../../src/k8s/store';
import type { EndpointSlice, Pod, Service } from '../../src/k8s/types';

function service(spec: Record<string, unknown>, metadata: Record<string, unknown> = { name: 'web', namespace: 'shop' }) {
  return { apiVersion: 'v1', kind: 'Service', metadata, spec };
}

function slice(extra: Record<string, unknown>) {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'web-abc', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4',
    ...extra,
  };
}

describe('parseObject', () => {
  test('accepts a full Service and projects only modelled fields', () => {
    const svc = parseObject({
      ...service({
        type: 'NodePort',
        clusterIP: '10.96.0.10',
        clusterIPs: ['10.96.0.10', 'fd00::10'],
        externalIPs: ['192.0.2.1'],
        ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 'http', nodePort: 30080 }],
        sessionAffinity: 'ClientIP',
        sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } },
        ipFamilies: ['IPv4', 'IPv6'],
        selector: { app: 'web' },
      }),
      status: { loadBalancer: {} },
    }) as Service;
    expect(svc).toEqual({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'web', namespace: 'shop' },
      spec: {
        type: 'NodePort',
        clusterIP: '10.96.0.10',
        clusterIPs: ['10.96.0.10', 'fd00::10'],
        externalIPs: ['192.0.2.1'],
        ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 'http', nodePort: 30080 }],
        sessionAffinity: 'ClientIP',
        sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } },
        ipFamilies: ['IPv4', 'IPv6'],
      },
    });
  });

  test('Services and EndpointSlices keep only name, namespace and labels of their metadata: an annotation-only change is no change', () => {
    const meta = {
      name: 'web',
      namespace: 'shop',
      uid: 'u1',
      resourceVersion: '7',
      labels: { a: 'b' },
      annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{"big":"json"}' },
    };
    const svc = parseObject({ apiVersion: 'v1', kind: 'Service', metadata: meta, spec: { clusterIP: '10.96.0.1' } });
    const slice = parseObject({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: meta,
      addressType: 'IPv4',
      endpoints: [],
    });
    for (const o of [svc, slice])
      expect(JSON.parse(JSON.stringify(o.metadata))).toEqual({ name: 'web', namespace: 'shop', labels: { a: 'b' } });
    const changed = parseObject({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { ...meta, resourceVersion: '8', annotations: { x: 'y' } },
      spec: { clusterIP: '10.96.0.1' },
    });
    expect(sameObject(svc, changed)).toBe(true);
  });

  test('an EndpointSlice keeps its last-change-trigger-time annotation (the programming latency metric reads it), and only that one', () => {
    const trigger = { 'endpoints.kubernetes.io/last-change-trigger-time': '2026-01-01T00:00:00Z' };
    const meta = {
      name: 'web-1',
      namespace: 'shop',
      labels: { a: 'b' },
      annotations: { ...trigger, 'kubectl.kubernetes.io/last-applied-configuration': '{}' },
    };
    const slice = parseObject({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: meta,
      addressType: 'IPv4',
      endpoints: [],
    });
    expect(slice.metadata).toEqual({ name: 'web-1', namespace: 'shop', labels: { a: 'b' }, annotations: trigger });
    const svc = parseObject({ apiVersion: 'v1', kind: 'Service', metadata: meta, spec: { clusterIP: '10.96.0.1' } });
    expect(svc.metadata.annotations).toBeUndefined();
    expect(() =>
      parseObject({
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { ...meta, annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': 7 } },
        addressType: 'IPv4',
        endpoints: [],
      }),
    ).toThrow(/metadata\.annotations\["endpoints\.kubernetes\.io\/last-change-trigger-time"\]/);
  });

  test('keeps metadata uid, labels, annotations and resourceVersion', () => {
    const ns = parseObject({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'shop', uid: 'u1', labels: { a: 'b' }, annotations: { c: 'd' }, resourceVersion: '7', generation: 3 },
    });
    expect(ns.metadata).toEqual({ name: 'shop', uid: 'u1', labels: { a: 'b' }, annotations: { c: 'd' }, resourceVersion: '7' });
  });

  test('defaults the namespace of namespaced kinds to "default" like kubectl', () => {
    expect(parseObject(service({}, { name: 'web' })).metadata.namespace).toBe('default');
    expect(parseObject(service({}, { name: 'web', namespace: '' })).metadata.namespace).toBe('default');
  });

  test('drops a namespace given on a cluster-scoped Namespace', () => {
    const ns = parseObject({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', namespace: 'x' } });
    expect(ns.metadata.namespace).toBeUndefined();
    expect(objectKey(ns)).toBe('Namespace/shop');
  });

  test('treats null optional fields as absent', () => {
    const svc = parseObject(service({ clusterIP: null, ports: null, externalIPs: null })) as Service;
    expect(svc.spec).toEqual({});
  });

  test('accepts headless and unallocated clusterIPs', () => {
    expect((parseObject(service({ clusterIP: 'None', clusterIPs: ['None'] })) as Service).spec.clusterIP).toBe('None');
    expect((parseObject(service({ type: 'ExternalName', clusterIP: '' })) as Service).spec.clusterIP).toBe('');
  });

  test('accepts a numeric targetPort', () => {
    const svc = parseObject(service({ ports: [{ port: 53, protocol: 'UDP', targetPort: 5353 }] })) as Service;
    expect(svc.spec.ports).toEqual([{ port: 53, protocol: 'UDP', targetPort: 5353 }]);
  });

  test('accepts an EndpointSlice with conditions, nodeName and ports', () => {
    const s = parseObject(
      slice({
        endpoints: [
          { addresses: ['10.0.0.1'], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'n1', zone: 'a' },
        ],
        ports: [{ name: 'http', port: 8080, protocol: 'TCP', appProtocol: 'http' }],
      }),
    ) as EndpointSlice;
    expect(s.endpoints).toEqual([
      { addresses: ['10.0.0.1'], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'n1' },
    ]);
    expect(s.ports).toEqual([{ name: 'http', port: 8080, protocol: 'TCP' }]);
    expect(s.metadata.labels?.['kubernetes.io/service-name']).toBe('web');
  });

  test('keeps endpoint hints as the lists of zone and node names', () => {
    const s = parseObject(
      slice({
        endpoints: [
          { addresses: ['10.0.0.1'], hints: { forZones: [{ name: 'zone-a' }], forNodes: [{ name: 'n1' }] } },
          { addresses: ['10.0.0.2'], hints: { forZones: [{ name: 'zone-a' }] } },
          { addresses: ['10.0.0.3'], hints: { forZones: [{ name: 'zone-a' }] } },
          { addresses: ['10.0.0.4'], hints: null },
        ],
      }),
    ) as EndpointSlice;
    expect(s.endpoints.map((e) => e.hints)).toEqual([
      { forZones: ['zone-a'], forNodes: ['n1'] },
      { forZones: ['zone-a'] },
      { forZones: ['zone-a'] },
      undefined,
    ]);
    expect(s.endpoints[1].hints).toBe(s.endpoints[2].hints); // one shared object per shape
    expect(() => parseObject(slice({ endpoints: [{ addresses: ['10.0.0.1'], hints: { forZones: [{ name: '' }] } }] }))).toThrow(
      'Cannot parse EndpointSlice "shop/web-abc": endpoints[0].hints.forZones[0].name must not be empty',
    );
    expect(() => parseObject(slice({ endpoints: [{ addresses: ['10.0.0.1'], hints: { forNodes: ['n1'] } }] }))).toThrow(
      'endpoints[0].hints.forNodes[0] must be an object, got "n1"',
    );
  });

  test('accepts the traffic policy, source ranges and LoadBalancer ingress of a Service', () => {
    const svc = parseObject({
      ...service({
        type: 'LoadBalancer',
        clusterIP: '10.96.0.10',
        internalTrafficPolicy: 'Local',
        externalTrafficPolicy: 'Local',
        loadBalancerSourceRanges: [' 198.51.100.0/24', '2001:db8::/32'],
        trafficDistribution: 'PreferSameZone',
      }),
      status: {
        loadBalancer: {
          ingress: [
            { ip: '203.0.113.1', ipMode: 'VIP' },
            { ip: '203.0.113.2', ipMode: 'Proxy', ports: [{ port: 80, protocol: 'TCP' }] },
            { ip: '2001:db8::1' },
            { hostname: 'lb.example.com' },
            { ip: '', hostname: 'lb2.example.com' },
          ],
        },
      },
    }) as Service;
    expect(svc.spec).toEqual({
      type: 'LoadBalancer',
      clusterIP: '10.96.0.10',
      internalTrafficPolicy: 'Local',
      loadBalancerSourceRanges: [' 198.51.100.0/24', '2001:db8::/32'],
    });
    expect(svc.status).toEqual({
      loadBalancer: {
        ingress: [{ ip: '203.0.113.1', ipMode: 'VIP' }, { ip: '203.0.113.2', ipMode: 'Proxy' }, { ip: '2001:db8::1' }],
      },
    });
    const hostnameOnly = parseObject({
      ...service({ clusterIP: '10.96.0.10' }),
      status: { loadBalancer: { ingress: [{ hostname: 'x' }] } },
    }) as Service;
    expect(hostnameOnly.status).toBeUndefined();
  });

  test('rejects a bad traffic policy, source range or ingress', () => {
    expect(() => parseObject(service({ internalTrafficPolicy: 'PreferLocal' }))).toThrow(
      'Cannot parse Service "shop/web": spec.internalTrafficPolicy must be one of Cluster|Local, got "PreferLocal"',
    );
    expect(() => parseObject(service({ loadBalancerSourceRanges: ['10.0.0.0/33'] }))).toThrow(
      'spec.loadBalancerSourceRanges[0] must be a CIDR such as 10.0.0.0/8, got "10.0.0.0/33"',
    );
    expect(() => parseObject(service({ loadBalancerSourceRanges: ['10.0.0.1'] }))).toThrow(RangeError);
    expect(() =>
      parseObject({ ...service({}), status: { loadBalancer: { ingress: [{ ip: '203.0.113.1', ipMode: 'Direct' }] } } }),
    ).toThrow('status.loadBalancer.ingress[0].ipMode must be one of VIP|Proxy, got "Direct"');
    expect(() => parseObject({ ...service({}), status: { loadBalancer: { ingress: [{ ip: 'lb.example.com' }] } } })).toThrow(
      'status.loadBalancer.ingress[0].ip must be an IP address',
    );
  });

  test('accepts a Node: cluster-scoped, its labels kept, its spec and status dropped', () => {
    const node = parseObject({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: 'node-1', namespace: 'ignored', labels: { 'topology.kubernetes.io/zone': 'zone-a' } },
      spec: { podCIDR: '10.244.1.0/24' },
      status: { addresses: [{ type: 'InternalIP', address: '192.0.2.10' }] },
    });
    expect(node).toEqual({
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: 'node-1', labels: { 'topology.kubernetes.io/zone': 'zone-a' } },
    });
    expect(objectKey(node)).toBe('Node/node-1');
  });

  test('defaults missing EndpointSlice endpoints to an empty list', () => {
    expect((parseObject(slice({ endpoints: null })) as EndpointSlice).endpoints).toEqual([]);
  });

  test('accepts FQDN EndpointSlice addresses without IP checks', () => {
    const s = parseObject(slice({ addressType: 'FQDN', endpoints: [{ addresses: ['db.example.com'] }] })) as EndpointSlice;
    expect(s.endpoints[0].addresses).toEqual(['db.example.com']);
  });

  test('accepts a Pod with node, host network and pod IPs', () => {
    const pod = parseObject({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'p', namespace: 'shop' },
      spec: { nodeName: 'n1', hostNetwork: false, containers: [] },
      status: { podIP: '10.0.0.5', podIPs: [{ ip: '10.0.0.5' }, { ip: 'fd00::5' }], phase: 'Running' },
    }) as Pod;
    expect(pod.spec).toEqual({ nodeName: 'n1', hostNetwork: false, containers: [] });
    expect(pod.status).toEqual({ podIP: '10.0.0.5', podIPs: [{ ip: '10.0.0.5' }, { ip: 'fd00::5' }] });
  });

  test('keeps of each container only what the capture decision reads: name, args, env values, runAsUser/runAsGroup', () => {
    const proxy = {
      name: 'istio-proxy',
      image: 'docker.io/istio/proxyv2:1.26.0',
      command: ['/usr/local/bin/pilot-agent'],
      args: ['proxy', 'sidecar', '--domain', '$(POD_NAMESPACE).svc.cluster.local'],
      env: [
        { name: 'ISTIO_META_DNS_CAPTURE', value: 'true' },
        { name: 'POD_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.name' } } },
        { name: 'EMPTY', value: null },
      ],
      ports: [{ containerPort: 15090, name: 'http-envoy-prom', protocol: 'TCP' }],
      resources: { limits: { cpu: '2' } },
      securityContext: { runAsUser: 1000670000, runAsGroup: 1000670001, runAsNonRoot: true, capabilities: { drop: ['ALL'] } },
    };
    const pod = parseObject({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'p', namespace: 'shop' },
      spec: {
        initContainers: [
          { name: 'istio-validation', image: 'x', args: ['istio-iptables', '--run-validation'], securityContext: {} },
        ],
        containers: [{ name: 'app', image: 'app:1', ports: [{ containerPort: 8080 }] }, proxy],
      },
    }) as Pod;
    expect(pod.spec).toEqual({
      initContainers: [{ name: 'istio-validation', args: ['istio-iptables', '--run-validation'], securityContext: {} }],
      containers: [
        { name: 'app' },
        {
          name: 'istio-proxy',
          args: ['proxy', 'sidecar', '--domain', '$(POD_NAMESPACE).svc.cluster.local'],
          env: [{ name: 'ISTIO_META_DNS_CAPTURE', value: 'true' }, { name: 'POD_NAME' }, { name: 'EMPTY' }],
          securityContext: { runAsUser: 1000670000, runAsGroup: 1000670001 },
        },
      ],
    });
  });

  test('rejects malformed containers, naming the field', () => {
    const pod = (spec: unknown) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'shop' }, spec });
    expect(() => parseObject(pod({ containers: {} }))).toThrow(
      'Cannot parse Pod "shop/p": spec.containers must be an array, got {...}',
    );
    expect(() => parseObject(pod({ containers: [{ image: 'x' }] }))).toThrow(
      'Cannot parse Pod "shop/p": spec.containers[0].name must be a string, got nothing',
    );
    expect(() => parseObject(pod({ initContainers: [{ name: '' }] }))).toThrow('spec.initContainers[0].name must not be empty');
    expect(() => parseObject(pod({ containers: [{ name: 'c', args: 'proxy sidecar' }] }))).toThrow(
      'spec.containers[0].args must be an array, got "proxy sidecar"',
    );
    expect(() => parseObject(pod({ containers: [{ name: 'c', args: ['proxy', 1] }] }))).toThrow(
      'spec.containers[0].args[1] must be a string, got 1',
    );
    expect(() => parseObject(pod({ containers: [{ name: 'c', env: [{ value: 'x' }] }] }))).toThrow(
      'spec.containers[0].env[0].name must be a string, got nothing',
    );
    expect(() => parseObject(pod({ containers: [{ name: 'c', env: [{ name: 'A', value: true }] }] }))).toThrow(
      'spec.containers[0].env[0].value must be a string, got true',
    );
    expect(() => parseObject(pod({ containers: [{ name: 'c', securityContext: { runAsUser: '1337' } }] }))).toThrow(
      'spec.containers[0].securityContext.runAsUser must be an integer, got "1337"',
    );
    expect(() => parseObject(pod({ containers: [{ name: 'c', securityContext: { runAsGroup: -1 } }] }))).toThrow(RangeError);
    expect(() => parseObject(pod({ containers: [{ name: 'c', securityContext: { runAsUser: 2147483648 } }] }))).toThrow(
      'spec.containers[0].securityContext.runAsUser must be in 0..2147483647, got 2147483648',
    );
  });

  test('accepts null container fields as absent, as the API serializes them', () => {
    const pod = parseObject({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'p' },
      spec: { containers: [{ name: 'c', args: null, env: null, securityContext: { runAsUser: null } }], initContainers: null },
    }) as Pod;
    expect(pod.spec).toEqual({ containers: [{ name: 'c', securityContext: {} }] });
  });

  test('treats an empty podIP as absent', () => {
    const pod = parseObject({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' }, status: { podIP: '' } }) as Pod;
    expect(pod.status).toEqual({});
  });

  test('rejects non-object documents', () => {
    expect(() => parseObject('hello')).toThrow(TypeError);
    expect(() => parseObject([1])).toThrow(/must be an object/);
    expect(() => parseObject(null)).toThrow(TypeError);
  });

  test('rejects a document without apiVersion or kind', () => {
    expect(() => parseObject({ kind: 'Service', metadata: { name: 'x' } })).toThrow(/apiVersion must be a string/);
    expect(() => parseObject({ apiVersion: 'v1', metadata: { name: 'x' } })).toThrow(/kind must be a string/);
  });

  test('reports unsupported kinds with UnsupportedKindError', () => {
    let caught: unknown;
    try {
      parseObject({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'c' } });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(UnsupportedKindError);
    expect(caught).toBeInstanceOf(TypeError);
    expect((caught as UnsupportedKindError).kind).toBe('ConfigMap');
    expect((caught as UnsupportedKindError).message).toContain('v1/ConfigMap');
  });

  test('reports a supported kind at an unsupported apiVersion as unsupported', () => {
    expect(() => parseObject({ ...slice({}), apiVersion: 'discovery.k8s.io/v1beta1' })).toThrow(UnsupportedKindError);
  });

  test('requires a non-empty metadata.name', () => {
    expect(() => parseObject(service({}, { namespace: 'shop' }))).toThrow('Cannot parse Service: metadata.name must be a string');
    expect(() => parseObject(service({}, { name: '' }))).toThrow(/metadata.name must not be empty/);
    expect(() => parseObject({ apiVersion: 'v1', kind: 'Service', spec: {} })).toThrow(/metadata must be an object/);
  });

  test('rejects names containing the key separator', () => {
    expect(() => parseObject(service({}, { name: 'a/b' }))).toThrow(RangeError);
  });

  test('names kind, namespace/name and the field in errors', () => {
    expect(() => parseObject(service({ ports: [{ port: 80 }, { port: 70000 }] }))).toThrow(
      'Cannot parse Service "shop/web": spec.ports[1].port must be in 1..65535, got 70000',
    );
  });

  test('rejects service ports that are not integers', () => {
    expect(() => parseObject(service({ ports: [{ port: '80' }] }))).toThrow(TypeError);
    expect(() => parseObject(service({ ports: [{ port: 80.5 }] }))).toThrow(/must be an integer/);
    expect(() => parseObject(service({ ports: [{ name: 'x' }] }))).toThrow(
      /spec.ports\[0\].port must be an integer, got nothing/,
    );
    expect(() => parseObject(service({ ports: [{ port: 0 }] }))).toThrow(RangeError);
  });

  test('rejects bad targetPorts', () => {
    expect(() => parseObject(service({ ports: [{ port: 80, targetPort: 0 }] }))).toThrow(RangeError);
    expect(() => parseObject(service({ ports: [{ port: 80, targetPort: '' }] }))).toThrow(/targetPort must not be empty/);
    expect(() => parseObject(service({ ports: [{ port: 80, targetPort: true }] }))).toThrow(TypeError);
  });

  test('accepts protocols TCP, UDP and SCTP only', () => {
    expect((parseObject(service({ ports: [{ port: 9, protocol: 'SCTP' }] })) as Service).spec.ports?.[0].protocol).toBe('SCTP');
    expect(() => parseObject(service({ ports: [{ port: 80, protocol: 'tcp' }] }))).toThrow(
      'Cannot parse Service "shop/web": spec.ports[0].protocol must be one of TCP|UDP|SCTP, got "tcp"',
    );
    expect(() => parseObject(slice({ endpoints: [], ports: [{ port: 80, protocol: 'ICMP' }] }))).toThrow(RangeError);
  });

  test('rejects invalid IP strings', () => {
    expect(() => parseObject(service({ clusterIP: '10.96.0.300' }))).toThrow(/spec.clusterIP must be an IP address/);
    expect(() => parseObject(service({ clusterIPs: ['10.96.0.1', 'nope'] }))).toThrow(/spec.clusterIPs\[1\]/);
    expect(() => parseObject(service({ externalIPs: ['fe80::1%eth0'] }))).toThrow(RangeError);
    expect(() => parseObject(service({ externalIPs: '1.2.3.4' }))).toThrow(/spec.externalIPs must be an array/);
  });

  test('requires EndpointSlice addresses to match the addressType', () => {
    expect(() => parseObject(slice({ endpoints: [{ addresses: ['fd00::1'] }] }))).toThrow(
      'Cannot parse EndpointSlice "shop/web-abc": endpoints[0].addresses[0] must be an IPv4 address, got "fd00::1"',
    );
    expect(() => parseObject(slice({ endpoints: [{ addresses: [] }] }))).toThrow(/addresses must not be empty/);
    expect(() => parseObject(slice({ addressType: 'IPv5' }))).toThrow(RangeError);
  });

  test('rejects non-boolean endpoint conditions', () => {
    expect(() => parseObject(slice({ endpoints: [{ addresses: ['10.0.0.1'], conditions: { ready: 'yes' } }] }))).toThrow(
      /endpoints\[0\].conditions.ready must be a boolean/,
    );
  });

  test('checks session affinity and its timeout', () => {
    expect(() => parseObject(service({ sessionAffinity: 'Cookie' }))).toThrow(RangeError);
    const timeout = (t: unknown) =>
      service({ sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: t } } });
    expect(() => parseObject(timeout(0))).toThrow(RangeError);
    expect(() => parseObject(timeout(86401))).toThrow(/must be in 1..86400/);
    expect(() => parseObject(timeout(1.5))).toThrow(TypeError);
    expect((parseObject(timeout(86400)) as Service).spec.sessionAffinityConfig?.clientIP?.timeoutSeconds).toBe(86400);
  });

  test('rejects an unknown Service type and IP family', () => {
    expect(() => parseObject(service({ type: 'Magic' }))).toThrow(/spec.type must be one of/);
    expect(() => parseObject(service({ ipFamilies: ['IPv4', 'IPX'] }))).toThrow(/spec.ipFamilies\[1\]/);
  });

  test('requires label and annotation values to be strings', () => {
    expect(() => parseObject(service({}, { name: 'web', labels: { version: 1 } }))).toThrow(
      /metadata.labels\["version"\] must be a string/,
    );
  });

  test('keeps a "__proto__" label as a plain entry', () => {
    const labels = JSON.parse('{"__proto__": "x", "app": "web"}') as Record<string, unknown>;
    const parsed = parseObject(service({}, { name: 'web', labels }));
    expect(Object.keys(parsed.metadata.labels ?? {})).toEqual(['__proto__', 'app']);
    expect(Object.getPrototypeOf(parsed.metadata.labels)).toBe(Object.prototype);
  });

  test('rejects non-string pod IPs and non-boolean hostNetwork', () => {
    const pod = (spec: unknown, status: unknown) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p' }, spec, status });
    expect(() => parseObject(pod({ hostNetwork: 'true' }, {}))).toThrow(/spec.hostNetwork must be a boolean/);
    expect(() => parseObject(pod({}, { podIPs: [{ ip: 'x' }] }))).toThrow(/status.podIPs\[0\].ip must be an IP address/);
  });
});

describe('objectKey', () => {
  test('is Kind/namespace/name for namespaced kinds', () => {
    expect(objectKey(parseObject(service({})))).toBe('Service/shop/web');
    expect(objectKey(parseObject(slice({})))).toBe('EndpointSlice/shop/web-abc');
  });
});

describe('expandList', () => {
  test('returns a plain object as its only element', () => {
    const doc = service({});
    expect(expandList(doc)).toEqual([doc]);
  });

  test('expands kind List into its items', () => {
    const items = [service({}), slice({})];
    expect(expandList({ apiVersion: 'v1', kind: 'List', items })).toEqual(items);
  });

  test('treats a List without items as empty', () => {
    expect(expandList({ apiVersion: 'v1', kind: 'List' })).toEqual([]);
  });

  test('fills kind and apiVersion of typed list items from the list', () => {
    const items = expandList({ apiVersion: 'v1', kind: 'ServiceList', items: [{ metadata: { name: 'a' }, spec: {} }] });
    expect(items).toEqual([{ apiVersion: 'v1', kind: 'Service', metadata: { name: 'a' }, spec: {} }]);
    expect(objectKey(parseObject(items[0]))).toBe('Service/default/a');
  });

  test('expands nested lists', () => {
    const inner = { apiVersion: 'v1', kind: 'List', items: [service({})] };
    expect(expandList({ apiVersion: 'v1', kind: 'List', items: [inner, slice({})] })).toHaveLength(2);
  });

  test('rejects a List whose items is not an array', () => {
    expect(() => expandList({ apiVersion: 'v1', kind: 'List', items: {} })).toThrow(
      'Cannot parse List: items must be an array, got {...}',
    );
  });

  test('leaves a kind ending in List without items alone', () => {
    const doc = { apiVersion: 'example.com/v1', kind: 'AllowList', metadata: { name: 'a' } };
    expect(expandList(doc)).toEqual([doc]);
  });
});
