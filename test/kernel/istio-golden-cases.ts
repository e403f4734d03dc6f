/* Which capture config each of Istio's golden files stands for, as the pod annotations (and sluice
 * settings) that mean the same: the case table of the golden-driven equivalence suite.
 *
 * Taken from the upstream test tables at the goldens' commit (istio/istio @ 86c9f01):
 *  - istio-cni: cni/pkg/plugin/plugin_dryrun_test.go, TestIPTablesRuleGeneration. Each entry gives
 *    the pod's annotations (sidecar.istio.io/status: "true" plus traffic annotations, read by
 *    cni/pkg/plugin/sidecar_redirect.go with its defaults), the istio-proxy container's env and
 *    its securityContext uid/gid. The proxy env is given to S's istio-proxy container as upstream
 *    gives it (sluice reads ISTIO_META_DNS_CAPTURE per pod); the uid/gid sluice's kernel takes
 *    from node-wide settings (mesh-proxy-uid, mesh-proxy-gid): for the one pod under test that is
 *    the same config.
 *  - istio-iptables: tools/istio-iptables/pkg/capture/run_test.go, getCommonTestCases, each on top
 *    of constructTestConfig (proxy uid/gid 1337, ports 15001/15006/15008, and NO outbound range:
 *    OutboundIPRangesInclude is left ""). Expressed as annotations: InboundPortsInclude ->
 *    includeInboundPorts (unset means ""), OutboundIPRangesInclude -> includeOutboundIPRanges (""
 *    unless set), OutboundPortsInclude -> includeOutboundPorts, InboundPortsExclude ->
 *    excludeInboundPorts, OutboundIPRangesExclude -> excludeOutboundIPRanges, and
 *    excludeOutboundPorts: "" (istio-iptables gets no excluded port here, while istio-cni's
 *    default for an absent annotation is 15020).
 * Every golden is either a case (GOLDEN_CASES) or listed with the reason sluice cannot express it
 * (NOT_EXPRESSIBLE); test/unit/istio-golden-table.test.ts checks that against the files.
 * test/istio-derived/ adds two rule files of this repository's own for what no golden covers.
 */
import { probeMatrix, type Family } from './istio-probes';

export const STATUS_ANNOTATION = 'sidecar.istio.io/status';
const INTERCEPTION = 'sidecar.istio.io/interceptionMode';
const T = 'traffic.sidecar.istio.io/';
/** The istio-cni dry-run test pods' status annotation. */
const STATUS = { [STATUS_ANNOTATION]: 'true' };
/** interceptionMode TPROXY, as the tproxy entries of both upstream tables set it. */
const TPROXY = { [INTERCEPTION]: 'TPROXY' };

/**
 * A TPROXY case: the stand-in proxy runs as Istio's injector runs the proxy in that mode
 * (runAsUser 0, runAsGroup the proxy gid, NET_ADMIN: injection-template.yaml) and as Envoy's
 * inbound then behaves (transparent 15006 listener, connects to the app from the client's own
 * address with mark 1337: istiod's original_src filter), and the reference pod gets the routes
 * istio-iptables adds beside its rules (tools/common/tproxy/run_linux.go: "fwmark 1337 lookup
 * 133", "local default dev lo table 133").
 */
export function isTproxyCase(c: GoldenCase): boolean {
  return c.annotations[INTERCEPTION] === 'TPROXY';
}

/** A difference sluice makes on purpose: both outcomes are asserted. */
export interface Deviation {
  /** the probe's name (see probeMatrix) */
  probe: string;
  why: string;
  istio: string;
  sluice: string;
}

export interface GoldenCase {
  /** the golden file, relative to the repository root */
  golden: string;
  /** the upstream test entry that maps it to its config (file, test, entry name) */
  upstream: string;
  /** the annotations of sluice's pod S (sidecar.istio.io/status included) */
  annotations: Record<string, string>;
  /** sluice agent settings (node-wide) standing for what istio-cni reads from the proxy container */
  agent?: Record<string, string>;
  /** the env of S's istio-proxy container, as the upstream entry gives it */
  proxyEnv?: Array<{ name: string; value: string }>;
  /** the proxy's uid and gid (the golden's owner rules; the stand-in sidecar runs as them) */
  proxy: { uid: number; gid: number };
  /** how the mapping was read, when more than the entry's fields */
  note?: string;
  deviations: Deviation[];
}

export interface NotExpressible {
  golden: string;
  upstream: string;
  reason: string;
}

const CNI = 'test/istio-golden/cni/pkg/plugin/testdata';
const IPT = 'test/istio-golden/tools/istio-iptables/pkg/capture/testdata';
const DERIVED = 'test/istio-derived';
const CNI_TEST = 'cni/pkg/plugin/plugin_dryrun_test.go TestIPTablesRuleGeneration';
const IPT_TEST = 'tools/istio-iptables/pkg/capture/run_test.go getCommonTestCases';
const PROXY = { uid: 1337, gid: 1337 };

/** istio-iptables' capture config as annotations (see the header). */
function iptablesConfig(c: {
  inboundPortsInclude?: string;
  inboundPortsExclude?: string;
  outboundIPRangesInclude?: string;
  outboundIPRangesExclude?: string;
  outboundPortsInclude?: string;
}): Record<string, string> {
  const a: Record<string, string> = {
    ...STATUS,
    [`${T}includeInboundPorts`]: c.inboundPortsInclude ?? '',
    [`${T}includeOutboundIPRanges`]: c.outboundIPRangesInclude ?? '',
    [`${T}excludeOutboundPorts`]: '',
  };
  if (c.inboundPortsExclude !== undefined) a[`${T}excludeInboundPorts`] = c.inboundPortsExclude;
  if (c.outboundIPRangesExclude !== undefined) a[`${T}excludeOutboundIPRanges`] = c.outboundIPRangesExclude;
  if (c.outboundPortsInclude !== undefined) a[`${T}includeOutboundPorts`] = c.outboundPortsInclude;
  return a;
}

const OWN_15001 =
  "sluice never steers the sidecar's own ports inbound: a connection to 15001 reaches the proxy's outbound listener as it was sent, where Istio's ISTIO_INBOUND '-j ISTIO_IN_REDIRECT' sends every port but 15008 and the excluded ones to 15006";

/** Inbound to 15001 while Istio redirects every inbound port: the deliberate deviation, per family. */
function inbound15001(families: Family[]): Deviation[] {
  return families.map((f) => {
    const self = f === 4 ? 'self:15001' : '[self6]:15001';
    return { probe: `client → ${self}`, why: OWN_15001, istio: `in ${self} > sidecar(out)`, sluice: `out ${self} > ERR:40` };
  });
}

const INJECTOR_PORTS =
  "istio-cni appends 15020,15021,15090 to every pod's excludeInboundPorts (cni/pkg/plugin/sidecar_redirect.go), and sluice keeps them out of inbound capture for every pod as istio-cni does; this istio-iptables run had no such exclusion, a config no pod annotation can produce";

const HBONE_TPROXY =
  "sluice never steers HBONE's port 15008 inbound; Istio's TPROXY rules have no 15008 exception (the nat ISTIO_INBOUND chain that holds it is not jumped to in TPROXY mode), so there it reaches 15006";
const OWN_15001_TPROXY =
  "sluice never steers the sidecar's own ports inbound: the proxy gid's connect to its pod IP's 15001 reaches the outbound listener as sent, where Istio's TPROXY mangle rules (mark 1338, then TPROXY) send it to 15006";

/**
 * The deliberate deviations a TPROXY case adds, per family: port 15008 inbound from another pod
 * and from the proxy itself (the uid's connect, which nat leaves alone for 15008, and the gid's,
 * both sent on to 15006 by Istio's mangle rules); with every inbound port captured, the gid's
 * connect to 15001; without istio-cni's injector exclusions, 15020, 15021 and 15090 from another
 * pod and from the gid.
 */
function tproxyDeviations(o: {
  families: Family[];
  proxy: { uid: number; gid: number };
  allInbound: boolean;
  injectorPorts: boolean;
}): Deviation[] {
  return o.families.flatMap((f) => {
    const self = (port: number) => (f === 4 ? `self:${port}` : `[self6]:${port}`);
    const out: Deviation[] = [
      `client → ${self(15008)}`,
      `uid ${o.proxy.uid} → ${self(15008)}`,
      `gid ${o.proxy.gid} → ${self(15008)}`,
    ].map((probe) => ({
      probe,
      why: HBONE_TPROXY,
      istio: `in ${self(15008)} > ERR:111`,
      sluice: 'fail 111',
    }));
    if (o.allInbound) {
      out.push({
        probe: `gid ${o.proxy.gid} → ${self(15001)}`,
        why: OWN_15001_TPROXY,
        istio: `in ${self(15001)} > sidecar(out)`,
        sluice: `out ${self(15001)} > ERR:40`,
      });
    }
    if (o.injectorPorts) {
      for (const port of [15020, 15021, 15090]) {
        for (const who of ['client', `gid ${o.proxy.gid}`]) {
          out.push({
            probe: `${who} → ${self(port)}`,
            why: INJECTOR_PORTS,
            istio: `in ${self(port)} > ERR:111`,
            sluice: 'fail 111',
          });
        }
      }
    }
    return out;
  });
}

export const GOLDEN_CASES: GoldenCase[] = [
  {
    golden: `${CNI}/basic.txt.golden`,
    upstream: `${CNI_TEST} "basic" (and "custom-uid-zero": a securityContext uid 0 falls back to 1337, same golden)`,
    annotations: { ...STATUS },
    proxy: PROXY,
    deviations: inbound15001([4]),
  },
  {
    golden: `${CNI}/include-exclude-ip.txt.golden`,
    upstream: `${CNI_TEST} "include-exclude-ip"`,
    annotations: { ...STATUS, [`${T}includeOutboundIPRanges`]: '127.0.0.0/8', [`${T}excludeOutboundIPRanges`]: '10.0.0.0/8' },
    proxy: PROXY,
    note: 'the golden names 10.0.0.0/8: every pod of the simulated node is inside it (10.x/24), the far address 192.0.2.10 is outside',
    deviations: inbound15001([4]),
  },
  {
    golden: `${CNI}/include-exclude-ports.txt.golden`,
    upstream: `${CNI_TEST} "include-exclude-ports"`,
    annotations: {
      ...STATUS,
      [`${T}includeInboundPorts`]: '1111,2222',
      [`${T}excludeInboundPorts`]: '3333,4444',
      [`${T}excludeOutboundPorts`]: '5555,6666',
    },
    proxy: PROXY,
    deviations: [],
  },
  {
    golden: `${CNI}/dns.txt.golden`,
    upstream: `${CNI_TEST} "DNS" (proxy env ISTIO_META_DNS_CAPTURE=true)`,
    annotations: { ...STATUS },
    proxyEnv: [{ name: 'ISTIO_META_DNS_CAPTURE', value: 'true' }],
    proxy: PROXY,
    note: 'istio-cni sets CaptureAllDNS with DNS capture (sidecar_iptables_linux.go): every destination on port 53, as sluice with mesh-dns-servers empty',
    deviations: inbound15001([4]),
  },
  {
    golden: `${CNI}/custom-uid.txt.golden`,
    upstream: `${CNI_TEST} "custom-uid" (istio-proxy securityContext runAsUser 1000670000, runAsGroup 1000670001)`,
    annotations: { ...STATUS },
    agent: { 'mesh-proxy-uid': '1000670000', 'mesh-proxy-gid': '1000670001' },
    proxy: { uid: 1000670000, gid: 1000670001 },
    deviations: inbound15001([4]),
  },
  {
    golden: `${IPT}/empty.golden`,
    upstream: `${IPT_TEST} "empty"`,
    annotations: iptablesConfig({}),
    proxy: PROXY,
    deviations: [],
  },
  {
    golden: `${IPT}/ipv6-empty-inbound-ports.golden`,
    upstream: `${IPT_TEST} "ipv6-empty-inbound-ports" (InboundPortsInclude "", EnableIPv6)`,
    annotations: iptablesConfig({ inboundPortsInclude: '' }),
    proxy: PROXY,
    deviations: [],
  },
  {
    golden: `${IPT}/ipv6-inbound-ports.golden`,
    upstream: `${IPT_TEST} "ipv6-inbound-ports" (InboundPortsInclude "4000,5000", EnableIPv6)`,
    annotations: iptablesConfig({ inboundPortsInclude: '4000,5000' }),
    proxy: PROXY,
    deviations: [],
  },
  {
    golden: `${IPT}/ipv6-outbound-ports.golden`,
    upstream: `${IPT_TEST} "ipv6-outbound-ports" (InboundPortsInclude "", OutboundPortsInclude "32000,31000", EnableIPv6)`,
    annotations: iptablesConfig({ inboundPortsInclude: '', outboundPortsInclude: '32000,31000' }),
    proxy: PROXY,
    deviations: [],
  },
  {
    golden: `${IPT}/ipnets.golden`,
    upstream: `${IPT_TEST} "ipnets" (OutboundIPRangesInclude "10.0.0.0/8")`,
    annotations: iptablesConfig({ outboundIPRangesInclude: '10.0.0.0/8' }),
    proxy: PROXY,
    note: 'the golden names 10.0.0.0/8: every pod and the VIP are inside it, the far address 192.0.2.10 is outside',
    deviations: [],
  },
  {
    golden: `${IPT}/inbound-ports-include.golden`,
    upstream: `${IPT_TEST} "inbound-ports-include" (InboundPortsInclude "32000,31000")`,
    annotations: iptablesConfig({ inboundPortsInclude: '32000,31000' }),
    proxy: PROXY,
    deviations: [],
  },
  {
    golden: `${IPT}/inbound-ports-wildcard.golden`,
    upstream: `${IPT_TEST} "inbound-ports-wildcard" (InboundPortsInclude "*")`,
    annotations: iptablesConfig({ inboundPortsInclude: '*' }),
    proxy: PROXY,
    deviations: [
      ...inbound15001([4]),
      ...[15020, 15021, 15090].map((port) => ({
        probe: `client → self:${port}`,
        why: INJECTOR_PORTS,
        istio: `in self:${port} > ERR:111`,
        sluice: 'fail 111',
      })),
    ],
  },
  {
    golden: `${IPT}/outbound-ports-include.golden`,
    upstream: `${IPT_TEST} "outbound-ports-include" (OutboundPortsInclude "32000,31000")`,
    annotations: iptablesConfig({ outboundPortsInclude: '32000,31000' }),
    proxy: PROXY,
    deviations: [],
  },
  {
    golden: `${CNI}/tproxy.txt.golden`,
    upstream: `${CNI_TEST} "tproxy"`,
    annotations: { ...STATUS, ...TPROXY },
    proxy: PROXY,
    deviations: [
      ...inbound15001([4]),
      ...tproxyDeviations({ families: [4], proxy: PROXY, allInbound: true, injectorPorts: false }),
    ],
  },
  {
    golden: `${CNI}/custom-uid-tproxy.txt.golden`,
    upstream: `${CNI_TEST} "custom-uid-tproxy" (istio-proxy securityContext runAsUser 1000670000, runAsGroup 1000670001)`,
    annotations: { ...STATUS, ...TPROXY },
    agent: { 'mesh-proxy-uid': '1000670000', 'mesh-proxy-gid': '1000670001' },
    proxy: { uid: 1000670000, gid: 1000670001 },
    note: 'the stand-in proxy runs as uid 0 and the gid 1000670001 (TPROXY: the injector runs the proxy as root)',
    deviations: [
      ...inbound15001([4]),
      ...tproxyDeviations({ families: [4], proxy: { uid: 1000670000, gid: 1000670001 }, allInbound: true, injectorPorts: false }),
    ],
  },
  {
    golden: `${IPT}/tproxy.golden`,
    upstream:
      `${IPT_TEST} "tproxy" (InboundInterceptionMode TPROXY, InboundPortsInclude "*", OutboundIPRangesExclude "1.1.0.0/16", ` +
      'OutboundIPRangesInclude "9.9.0.0/16", RedirectDNS with DNSServersV4 127.0.0.53, ExcludeInterfaces "not-istio-nic", EnableIPv6)',
    annotations: {
      ...iptablesConfig({
        inboundPortsInclude: '*',
        outboundIPRangesExclude: '1.1.0.0/16',
        outboundIPRangesInclude: '9.9.0.0/16',
      }),
      ...TPROXY,
    },
    agent: { 'mesh-dns-capture': 'true', 'mesh-dns-servers': '127.0.0.53' },
    proxy: PROXY,
    note:
      "ExcludeInterfaces names an interface the pod does not have, so its rules ('-i/-o not-istio-nic -j RETURN') match nothing and the pod carries no " +
      "excludeInterfaces annotation; istio-iptables' DNSServersV4 is what sluice's node-wide mesh-dns-servers stands for",
    deviations: [
      ...inbound15001([4, 6]),
      ...tproxyDeviations({ families: [4, 6], proxy: PROXY, allInbound: true, injectorPorts: true }),
    ],
  },
  {
    golden: `${IPT}/inbound-ports-tproxy.golden`,
    upstream: `${IPT_TEST} "inbound-ports-tproxy" (InboundPortsInclude "32000,31000", InboundInterceptionMode TPROXY)`,
    annotations: { ...iptablesConfig({ inboundPortsInclude: '32000,31000' }), ...TPROXY },
    proxy: PROXY,
    deviations: [],
  },
  {
    golden: `${IPT}/inbound-ports-wildcard-tproxy.golden`,
    upstream: `${IPT_TEST} "inbound-ports-wildcard-tproxy" (InboundPortsInclude "*", InboundInterceptionMode TPROXY)`,
    annotations: { ...iptablesConfig({ inboundPortsInclude: '*' }), ...TPROXY },
    proxy: PROXY,
    deviations: [
      ...inbound15001([4]),
      ...tproxyDeviations({ families: [4], proxy: PROXY, allInbound: true, injectorPorts: true }),
    ],
  },
  {
    golden: `${DERIVED}/dual-stack-exclusions.golden`,
    upstream:
      'derived here (see the file header): basic.txt.golden + excludeInboundPorts 9090, excludeOutboundPorts 5555, excludeOutboundIPRanges 192.0.2.0/24, dual stack',
    annotations: {
      ...STATUS,
      [`${T}excludeInboundPorts`]: '9090',
      [`${T}excludeOutboundPorts`]: '5555',
      [`${T}excludeOutboundIPRanges`]: '192.0.2.0/24',
    },
    proxy: PROXY,
    deviations: inbound15001([4, 6]),
  },
  {
    golden: `${DERIVED}/dual-stack-include-ports-ranges.golden`,
    upstream:
      'derived here (see the file header): includeOutboundIPRanges 10.0.0.0/8, excludeOutboundIPRanges 192.0.2.0/24, includeOutboundPorts 8080, dual stack',
    annotations: {
      ...STATUS,
      [`${T}includeOutboundIPRanges`]: '10.0.0.0/8',
      [`${T}excludeOutboundIPRanges`]: '192.0.2.0/24',
      [`${T}includeOutboundPorts`]: '8080',
    },
    proxy: PROXY,
    deviations: inbound15001([4, 6]),
  },
];

const UID_LISTS =
  'proxy uid "3,4" and gid "1,2" (lists): sluice has one proxy uid and one gid, and sets them node-wide (mesh-proxy-uid, mesh-proxy-gid)';
const VIRT =
  'RerouteVirtualInterfaces (traffic.sidecar.istio.io/kubevirtInterfaces): traffic routed in from those interfaces is not sent by a socket of the pod, so a socket hook cannot see it; sluice refuses such a pod (src/mesh/sidecar-interfaces.ts)';
const OWNER_GROUPS = 'owner-group include/exclude (ISTIO_OUTBOUND_OWNER_GROUPS*): sluice has no per-group capture setting';

export const NOT_EXPRESSIBLE: NotExpressible[] = [
  {
    golden: `${CNI}/invalid-drop.txt.golden`,
    upstream: `${CNI_TEST} "invalid-drop" (proxy env INVALID_DROP=true)`,
    reason:
      "--drop-invalid: a mangle PREROUTING rule drops conntrack-INVALID packets; sluice has no per-packet hook and no such setting (the golden's nat rules are basic.txt.golden's, covered there)",
  },
  {
    golden: `${CNI}/status-ports.txt.golden`,
    upstream: 'none: no test references it at 86c9f01, nor at its creation (3f8c750, istio#33992)',
    reason:
      'no upstream entry maps it to annotations; it holds the 2021 rule form (owner rules without the 15008 exception, excluded inbound port 22), not what istio-cni writes at 86c9f01',
  },
  {
    golden: `${IPT}/ip-range.golden`,
    upstream: `${IPT_TEST} "ip-range"`,
    reason: `${UID_LISTS}; also DNS capture for 127.0.0.53 only`,
  },
  {
    golden: `${IPT}/ipv6-virt-interfaces.golden`,
    upstream: `${IPT_TEST} "ipv6-virt-interfaces"`,
    reason: `${VIRT}; eth0, named here, is the pod's own interface: Istio leaves all traffic arriving on it alone`,
  },
  {
    golden: `${IPT}/ipv6-ipnets.golden`,
    upstream: `${IPT_TEST} "ipv6-ipnets"`,
    reason: `${VIRT}; eth0, named here, is the pod's own interface`,
  },
  { golden: `${IPT}/ipv6-uid-gid.golden`, upstream: `${IPT_TEST} "ipv6-uid-gid"`, reason: `${UID_LISTS}; also ${VIRT}` },
  { golden: `${IPT}/kube-virt-interfaces.golden`, upstream: `${IPT_TEST} "kube-virt-interfaces"`, reason: VIRT },
  {
    golden: `${IPT}/ipnets-with-kube-virt-interfaces.golden`,
    upstream: `${IPT_TEST} "ipnets-with-kube-virt-interfaces"`,
    reason: VIRT,
  },
  {
    golden: `${IPT}/basic-exclude-nic.golden`,
    upstream: `${IPT_TEST} "basic-exclude-nic"`,
    reason:
      'excludeInterfaces (traffic.sidecar.istio.io/excludeInterfaces): traffic through another interface is told apart per packet; a socket hook does not know the interface a connection will use, so sluice refuses such a pod (src/mesh/sidecar-interfaces.ts)',
  },
  {
    golden: `${IPT}/dns-uid-gid.golden`,
    upstream: `${IPT_TEST} "dns-uid-gid"`,
    reason: `${UID_LISTS}; also DNS capture for given servers only`,
  },
  { golden: `${IPT}/ipv6-dns-uid-gid.golden`, upstream: `${IPT_TEST} "ipv6-dns-uid-gid"`, reason: UID_LISTS },
  { golden: `${IPT}/outbound-owner-groups.golden`, upstream: `${IPT_TEST} "outbound-owner-groups"`, reason: OWNER_GROUPS },
  {
    golden: `${IPT}/outbound-owner-groups-exclude.golden`,
    upstream: `${IPT_TEST} "outbound-owner-groups-exclude"`,
    reason: OWNER_GROUPS,
  },
  {
    golden: `${IPT}/ipv6-dns-outbound-owner-groups.golden`,
    upstream: `${IPT_TEST} "ipv6-dns-outbound-owner-groups"`,
    reason: OWNER_GROUPS,
  },
  {
    golden: `${IPT}/ipv6-dns-outbound-owner-groups-exclude.golden`,
    upstream: `${IPT_TEST} "ipv6-dns-outbound-owner-groups-exclude"`,
    reason: OWNER_GROUPS,
  },
  {
    golden: `${IPT}/loopback-outbound-iprange.golden`,
    upstream: `${IPT_TEST} "loopback-outbound-iprange"`,
    reason: `${UID_LISTS}; also DNS capture for 127.0.0.53 only`,
  },
  {
    golden: `${IPT}/drop-invalid.golden`,
    upstream: `${IPT_TEST} "drop-invalid"`,
    reason:
      '--drop-invalid: a mangle PREROUTING rule drops conntrack-INVALID packets; sluice has no per-packet hook and no such setting',
  },
  {
    golden: `${IPT}/host-ipv4-loopback-cidr.golden`,
    upstream: `${IPT_TEST} "host-ipv4-loopback-cidr" (HostIPv4LoopbackCidr "127.0.0.1/8")`,
    reason:
      "istio-iptables' --host-ipv4-loopback-cidr has no pod annotation; sluice's localhost is Istio's default, 127.0.0.1/32 (and ::1)",
  },
];

/** The probes of a case (every deviation must name one of them: checked by the unit test). */
export function caseProbes(c: GoldenCase, families: Family[]) {
  return probeMatrix({ families, annotations: c.annotations, proxy: c.proxy });
}
