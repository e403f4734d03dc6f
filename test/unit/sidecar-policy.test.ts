/* Istio's sidecar annotations and the mode decision, with Istio's meaning and defaults. */
import { describe, expect, it } from 'vitest';
import { POL_IN_ALL, POL_OUT_ALL, POL_TPROXY, policyCodec } from '../../src/bpf/layout';
import { decideMode } from '../../src/mesh/mode';
import { describePolicy, sidecarPolicy } from '../../src/mesh/sidecar-policy';
import type { Pod } from '../../src/k8s/types';

const STATUS = { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}' };
const T = 'traffic.sidecar.istio.io/';

/** An injected pod: the app and Istio's sidecar container, as the injector writes them. */
function pod(annotations: Record<string, string>, namespace = 'shop', extra: Partial<Pod['spec']> = {}): Pod {
  const containers = [{ name: 'app' }, { name: 'istio-proxy', args: ['proxy', 'sidecar'] }];
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'cart-1', namespace, annotations },
    spec: { nodeName: 'n1', containers, ...extra },
  } as Pod;
}

const opts = { excludeNamespaces: ['kube-system', 'istio-system'] };

describe('sidecar policy', () => {
  it('defaults capture every outbound range and every inbound port to 15001/15006', () => {
    const { policy } = sidecarPolicy({}, ['10.1.0.5']);
    expect(policy).toMatchObject({
      mode: 'sidecar',
      outboundPort: 15001,
      inboundPort: 15006,
      includeCidrs: [],
      includeInPorts: [],
      podIps: ['10.1.0.5'],
    });
    expect(policy!.flags & POL_OUT_ALL).toBeTruthy();
    expect(policy!.flags & POL_IN_ALL).toBeTruthy();
  });

  it('reads every traffic annotation', () => {
    const { policy } = sidecarPolicy(
      {
        [`${T}includeOutboundIPRanges`]: '10.96.0.0/12, fd00:96::/64',
        [`${T}excludeOutboundIPRanges`]: '10.96.0.10/32',
        [`${T}includeOutboundPorts`]: '8443,9000',
        [`${T}excludeOutboundPorts`]: '5432',
        [`${T}includeInboundPorts`]: '8080,9090',
        [`${T}excludeInboundPorts`]: '9091',
      },
      ['10.1.0.5', 'fd00::5'],
    );
    expect(policy).toMatchObject({
      includeCidrs: [
        { ip: '10.96.0.0', prefix: 12 },
        { ip: 'fd00:96::', prefix: 64 },
      ],
      excludeCidrs: [{ ip: '10.96.0.10', prefix: 32 }],
      includeOutPorts: [8443, 9000],
      excludeOutPorts: [5432],
      includeInPorts: [8080, 9090],
      excludeInPorts: [9091],
    });
    expect(policy!.flags & (POL_OUT_ALL | POL_IN_ALL)).toBe(0);
    expect(describePolicy(policy!)).toBe(
      'out=10.96.0.0/12,fd00:96::/64 out-exclude=10.96.0.10/32 out-ports=8443,9000 out-exclude-ports=5432 in=8080,9090 in-exclude-ports=9091',
    );
  });

  it('excludeOutboundPorts defaults to the proxy status port 15020 when absent, as istio-cni; present and empty means none', () => {
    expect(sidecarPolicy({}, []).policy?.excludeOutPorts).toEqual([15020]);
    expect(sidecarPolicy({ [`${T}excludeOutboundPorts`]: '' }, []).policy?.excludeOutPorts).toEqual([]);
  });

  it('empty include lists capture nothing by range or inbound port, as in Istio', () => {
    const { policy } = sidecarPolicy({ [`${T}includeOutboundIPRanges`]: '', [`${T}includeInboundPorts`]: '' }, []);
    expect(policy!.flags).toBe(0);
    expect(policy!.includeCidrs).toEqual([]);
    expect(policy!.includeInPorts).toEqual([]);
  });

  it('invalid values refuse the whole policy with the annotation, the value and why', () => {
    expect(sidecarPolicy({ [`${T}excludeOutboundPorts`]: '80,x' }, []).refused).toBe(
      'Cannot parse annotation traffic.sidecar.istio.io/excludeOutboundPorts "80,x": "x" is not a port',
    );
    expect(sidecarPolicy({ [`${T}includeOutboundIPRanges`]: '10.0.0.1' }, []).refused).toMatch(/"10.0.0.1" is not a CIDR/);
    expect(sidecarPolicy({ [`${T}excludeOutboundIPRanges`]: '10.0.0.0/33' }, []).refused).toMatch(/not a CIDR/);
    expect(sidecarPolicy({ [`${T}includeInboundPorts`]: '70000' }, []).refused).toMatch(/"70000" is not a port/);
    const many = Array.from({ length: 17 }, (_, i) => `10.${i}.0.0/16`).join(',');
    expect(sidecarPolicy({ [`${T}excludeOutboundIPRanges`]: many }, []).refused).toMatch(/at most 16/);
    expect(sidecarPolicy({ 'sidecar.istio.io/interceptionMode': 'FAST' }, []).refused).toMatch(
      /expected REDIRECT, TPROXY or NONE/,
    );
  });

  it('interceptionMode TPROXY is REDIRECT plus the TPROXY flag, shown in the description', () => {
    const redirect = sidecarPolicy({ 'sidecar.istio.io/interceptionMode': 'REDIRECT', [`${T}excludeInboundPorts`]: '9090' }, [
      '10.1.0.5',
    ]).policy!;
    const tproxy = sidecarPolicy({ 'sidecar.istio.io/interceptionMode': 'TPROXY', [`${T}excludeInboundPorts`]: '9090' }, [
      '10.1.0.5',
    ]).policy!;
    expect(tproxy).toEqual({ ...redirect, flags: redirect.flags | POL_TPROXY });
    expect(redirect.flags & POL_TPROXY).toBe(0);
    expect(describePolicy(tproxy)).toBe(`${describePolicy(redirect)} interception=TPROXY`);
    expect(sidecarPolicy({ 'sidecar.istio.io/interceptionMode': 'NONE' }, []).refused).toMatch(/NONE: Istio captures nothing/);
  });

  it('the policy round-trips through the kernel layout', () => {
    const { policy } = sidecarPolicy(
      { [`${T}includeOutboundIPRanges`]: '10.96.0.0/12,fd00::/8', [`${T}excludeInboundPorts`]: '1,65535' },
      ['10.1.0.5', 'fd00::5'],
    );
    const buf = Buffer.alloc(policyCodec.size);
    policyCodec.encode(policy!, buf, 0);
    expect(buf[84 + 16]).toBe(96 + 12); // IPv4 prefixes are stored over the mapped 128 bits
    expect(policyCodec.decode(buf, 0)).toEqual(policy);
  });
});

describe('interface annotations', () => {
  const EXCLUDE = `${T}excludeInterfaces`;
  const KUBEVIRT = `${T}kubevirtInterfaces`;
  const REROUTE = 'istio.io/reroute-virtual-interfaces';

  // istio/istio pkg/util/net/ip_test.go TestValidateInterfaceNames, case by case
  const names: Array<[string, string, boolean]> = [
    ['single valid interface', 'eth0', true],
    ['multiple valid interfaces', 'eth0,eth1,lo', true],
    ['interface with underscore', 'eth_0', true],
    ['interface with hyphen', 'eth-0', true],
    ['interface with dot', 'eth0.1', true],
    ['interface starting with number', '0eth', false],
    ['interface starting with underscore', '_eth0', false],
    ['complex valid names', 'veth123abc,br-docker0,bond0.100', true],
    ['max length interface', 'a23456789012345', true],
    ['too long interface name', '1234567890123456', false],
    ['interface with space', 'eth0 -d 10.0.0.50', false],
    ['iptables injection attempt', 'eth0 -d 10.0.0.50 -p tcp --dport 8080', false],
    ['interface with semicolon', 'eth0;echo', false],
    ['interface with pipe', 'eth0|cat', false],
    ['interface with backtick', 'eth0`id`', false],
    ['interface with dollar sign', 'eth0$PATH', false],
    ['empty interface in list', 'eth0,,eth1', false],
    ['interface with leading space (trimmed)', ' eth0', true],
    ['interface with trailing space (trimmed)', 'eth0 ', true],
    ['spaces around comma (trimmed)', 'eth0 , eth1', true],
    ['interface with slash', 'eth0/1', false],
    ['interface with colon', 'eth0:1', false],
    ['interface with at sign', 'veth@if123', false],
  ];

  for (const key of [EXCLUDE, KUBEVIRT, REROUTE]) {
    const quoted = key.replace(/[./]/g, '\\$&');
    it.each(names)(`${key}: %s (%j) valid=%s, as Istio validates it`, (_, value, valid) => {
      const refused = sidecarPolicy({ [key]: value }, []).refused;
      // valid names are then refused as unsupported, invalid ones as unparsable
      expect(refused).toMatch(
        new RegExp(valid ? `^${quoted} ".*" is not supported by sluice` : `^Cannot parse annotation ${quoted} `),
      );
    });
  }

  it("absent or empty interface lists change nothing, as Istio's defaults are empty", () => {
    expect(sidecarPolicy({ [EXCLUDE]: '', [KUBEVIRT]: '', [REROUTE]: '' }, ['10.1.0.5']).policy).toEqual(
      sidecarPolicy({}, ['10.1.0.5']).policy,
    );
  });

  it('excludeInterfaces is refused: the egress interface of a connect is not known at connect time', () => {
    expect(sidecarPolicy({ [EXCLUDE]: 'net1, net2' }, []).refused).toBe(
      'traffic.sidecar.istio.io/excludeInterfaces "net1,net2" is not supported by sluice: Istio leaves traffic arriving on these ' +
        'interfaces and connections routed out of them uncaptured, and a connect() hook runs before the route is chosen, ' +
        'so it cannot know the egress interface',
    );
  });

  it('virtual interfaces are refused: forwarded traffic never passes a socket of the pod', () => {
    expect(sidecarPolicy({ [KUBEVIRT]: 'tap0' }, []).refused).toMatch(
      /^traffic\.sidecar\.istio\.io\/kubevirtInterfaces "tap0" is not supported by sluice: .*forwarded traffic never passes a socket of this pod/,
    );
  });

  it('reroute-virtual-interfaces wins over kubevirtInterfaces whenever present, even empty; the other is then not read', () => {
    expect(sidecarPolicy({ [REROUTE]: '', [KUBEVIRT]: 'tap0' }, []).refused).toBeUndefined();
    expect(sidecarPolicy({ [REROUTE]: 'tap1', [KUBEVIRT]: 'tap0' }, []).refused).toMatch(
      /^istio\.io\/reroute-virtual-interfaces "tap1"/,
    );
    expect(sidecarPolicy({ [REROUTE]: 'tap1', [KUBEVIRT]: '0bad' }, []).refused).toMatch(
      /^istio\.io\/reroute-virtual-interfaces "tap1" is not supported/,
    );
    expect(sidecarPolicy({ [REROUTE]: '0bad', [KUBEVIRT]: 'tap0' }, []).refused).toMatch(
      /^Cannot parse annotation istio\.io\/reroute-virtual-interfaces "0bad"/,
    );
  });

  it("an invalid port is reported before any interface, in istio-cni's order", () => {
    expect(sidecarPolicy({ [`${T}includeOutboundPorts`]: 'x', [EXCLUDE]: 'eth0;echo' }, []).refused).toMatch(
      /includeOutboundPorts "x"/,
    );
    expect(sidecarPolicy({ [EXCLUDE]: '0bad', [KUBEVIRT]: 'tap0' }, []).refused).toMatch(
      /^Cannot parse annotation traffic\.sidecar\.istio\.io\/excludeInterfaces/,
    );
  });
});

describe('mode decision', () => {
  it('a pod with the injector status annotation is in sidecar mode', () => {
    expect(decideMode(pod(STATUS), undefined, ['10.1.0.5'], opts)).toMatchObject({
      mode: 'sidecar',
      rule: 'istio-proxy sidecar with annotation sidecar.istio.io/status',
    });
  });

  it('excluded namespaces, the host network and missing objects are never captured', () => {
    expect(decideMode(pod(STATUS, 'istio-system'), undefined, [], opts)).toMatchObject({
      mode: 'none',
      rule: 'namespace istio-system is in exclude-namespaces',
    });
    expect(decideMode(pod(STATUS, 'shop', { hostNetwork: true }), undefined, [], opts).mode).toBe('none');
    expect(decideMode(undefined, undefined, [], opts)).toMatchObject({ mode: 'none', rule: 'no Pod object for this endpoint' });
    expect(decideMode(pod({}), undefined, [], opts)).toMatchObject({
      mode: 'none',
      rule: 'no sidecar.istio.io/status annotation, no istio.io/dataplane-mode=ambient label',
    });
  });

  it('an invalid annotation leaves the pod out, saying why', () => {
    const d = decideMode(pod({ ...STATUS, [`${T}excludeInboundPorts`]: 'all' }), undefined, [], opts);
    expect(d.mode).toBe('none');
    expect(d.refused).toMatch(/excludeInboundPorts "all": "all" is not a port/);
  });
});

describe("ambient enrolment rules, in Istio's order", () => {
  const ns = (labels: Record<string, string>) =>
    ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels } }) as never;
  const AMB = { 'istio.io/dataplane-mode': 'ambient' };
  const withLabels = (labels: Record<string, string>, annotations: Record<string, string> = {}) => {
    const p = pod(annotations);
    p.metadata.labels = labels;
    return p;
  };

  it('a namespace labelled ambient enrols its pods', () => {
    expect(decideMode(pod({}), ns(AMB), ['10.1.0.5'], opts)).toMatchObject({
      mode: 'ambient',
      rule: 'namespace label istio.io/dataplane-mode=ambient',
      policy: { mode: 'ambient', outboundPort: 15001, inboundPort: 15006 },
    });
  });

  it('a pod labelled ambient is enrolled in an unlabelled namespace', () => {
    expect(decideMode(withLabels(AMB), ns({}), [], opts)).toMatchObject({
      mode: 'ambient',
      rule: 'pod label istio.io/dataplane-mode=ambient',
    });
  });

  it('excluded namespaces come first', () => {
    const p = withLabels(AMB);
    p.metadata.namespace = 'kube-system';
    expect(decideMode(p, ns(AMB), [], opts).mode).toBe('none');
  });

  it('sidecar wins over ambient', () => {
    expect(decideMode(withLabels(AMB, STATUS), ns(AMB), [], opts)).toMatchObject({ mode: 'sidecar' });
  });

  it('the opt-outs win over the namespace label: the annotation and the label none', () => {
    expect(decideMode(pod({ 'ambient.istio.io/redirection': 'disabled' }), ns(AMB), [], opts)).toMatchObject({
      mode: 'none',
      rule: 'annotation ambient.istio.io/redirection=disabled',
    });
    expect(decideMode(withLabels({ 'istio.io/dataplane-mode': 'none' }), ns(AMB), [], opts)).toMatchObject({
      mode: 'none',
      rule: 'pod label istio.io/dataplane-mode=none',
    });
    // "enabled" is Istio's own status write-back, not an opt-out
    expect(decideMode(pod({ 'ambient.istio.io/redirection': 'enabled' }), ns(AMB), [], opts).mode).toBe('ambient');
  });
});
