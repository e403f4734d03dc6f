/* Where sluice differs from Istio's golden rules and should not: the bugs to fix next.
 *
 * Each entry is a probe of the golden-driven equivalence suite (istio-golden.test.ts) whose
 * outcome in sluice's pod differs from the outcome in the pod running Istio's golden rules. The
 * suite runs each of these probes as `it.fails`, so it turns red when the difference is fixed:
 * then remove the entry. It also checks that both recorded outcomes are still what it observes,
 * so an entry never outlives the behaviour it describes. Outcomes are written as
 * test/kernel/istio-probes.ts explains.
 */

export interface KnownDifference {
  /** the golden file, relative to the repository root (a GOLDEN_CASES entry) */
  golden: string;
  /** the probe's name (see probeMatrix) */
  probe: string;
  /** what the connection does under Istio's golden rules */
  istio: string;
  /** what it does under sluice */
  sluice: string;
  /** the rule that differs, as far as the rules and sluice's code tell */
  cause: string;
}

const CNI = 'test/istio-golden/cni/pkg/plugin/testdata';
const CNI_BASIC = `${CNI}/basic.txt.golden`;
const CNI_INCLUDE_EXCLUDE_IP = `${CNI}/include-exclude-ip.txt.golden`;
const CNI_DNS = `${CNI}/dns.txt.golden`;
const CNI_CUSTOM_UID = `${CNI}/custom-uid.txt.golden`;
const DERIVED_PORTS_RANGES = 'test/istio-derived/dual-stack-include-ports-ranges.golden';

/** 1. istio-cni's default excluded outbound port. */
const EXCLUDE_15020 =
  'istio-cni excludes outbound port 15020 when traffic.sidecar.istio.io/excludeOutboundPorts is absent (cni/pkg/plugin/sidecar_redirect.go: ' +
  'excludeOutboundPorts defaults to defaultProxyStatusPort "15020"; basic.txt.golden: "-A ISTIO_OUTPUT -p tcp --dport 15020 -j RETURN", first in ISTIO_OUTPUT). ' +
  'sluice defaults the annotation to "" (src/mesh/sidecar-policy.ts), so the app\'s connection to another pod\'s 15020 goes to 15001 and the ' +
  'proxy\'s own connection to its pod IP:15020 is steered to 15006, where Istio lets both through.';

/** 2. The proxy's gid alone, when an included range is loopback. */
const LOOPBACK_RANGE_GID =
  'with a loopback range in includeOutboundIPRanges, istio-iptables drops its "-o lo -m owner ! --uid-owner/--gid-owner 1337 -j RETURN" rules ' +
  '(run.go: HasLoopBackIP), so a socket with the proxy\'s gid and another uid reaches "-o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner ' +
  '--gid-owner 1337 -j ISTIO_IN_REDIRECT" and a connection to any local address but 127.0.0.1 (the pod IP, 127.0.0.2, ...) goes to 15006. ' +
  'sluice steers only the proxy uid\'s local connections to 15006; for the gid it returns "the proxy\'s own socket, never captured" ' +
  '(bpf/lib/capture.h capture_connect: "if (gid == cfg_proxy_gid) ... return CAP_PROXY").';

/** 3. The proxy's gid alone, TCP to a local port 53, with DNS capture. */
const DNS_GID =
  'with DNS capture, Istio\'s uid rules leave port 53 alone ("-m multiport ! --dports 53,15008 ... --uid-owner 1337 -j ISTIO_IN_REDIRECT", ' +
  '"-o lo -p tcp ! --dport 53 -m owner ! --uid-owner 1337 -j RETURN") but its gid ISTIO_IN_REDIRECT rule does not ("! --dport 15008" only; ' +
  'dns.txt.golden), so TCP to port 53 of a local address other than 127.0.0.1 from a socket with the proxy\'s gid and another uid goes to 15006. ' +
  'sluice treats the gid as the proxy\'s own socket and never captures it. (An asymmetry of Istio\'s own rules: matching it, or declaring ' +
  'this a deliberate deviation, is a decision to make.)';

export const KNOWN_DIFFERENCES: KnownDifference[] = [
  { golden: CNI_BASIC, probe: 'app → be1:15020', istio: 'fail 111', sluice: 'out be1:15020 > ERR:111', cause: EXCLUDE_15020 },
  { golden: CNI_BASIC, probe: 'uid 1337 → self:15020', istio: 'fail 111', sluice: 'in self:15020 > ERR:111', cause: EXCLUDE_15020 },
  { golden: CNI_INCLUDE_EXCLUDE_IP, probe: 'uid 1337 → self:15020', istio: 'fail 111', sluice: 'in self:15020 > ERR:111', cause: EXCLUDE_15020 },
  { golden: CNI_INCLUDE_EXCLUDE_IP, probe: 'gid 1337 → self:53', istio: 'in self:53 > ERR:111', sluice: 'fail 111', cause: LOOPBACK_RANGE_GID },
  { golden: CNI_INCLUDE_EXCLUDE_IP, probe: 'gid 1337 → self:8080', istio: 'in self:8080 > app', sluice: 'direct app', cause: LOOPBACK_RANGE_GID },
  { golden: CNI_INCLUDE_EXCLUDE_IP, probe: 'gid 1337 → self:9090', istio: 'in self:9090 > ERR:111', sluice: 'fail 111', cause: LOOPBACK_RANGE_GID },
  { golden: CNI_INCLUDE_EXCLUDE_IP, probe: 'gid 1337 → self:15001', istio: 'in self:15001 > sidecar(out)', sluice: 'out self:15001 > ERR:40', cause: LOOPBACK_RANGE_GID },
  { golden: CNI_INCLUDE_EXCLUDE_IP, probe: 'gid 1337 → self:15021', istio: 'in self:15021 > ERR:111', sluice: 'fail 111', cause: LOOPBACK_RANGE_GID },
  { golden: CNI_INCLUDE_EXCLUDE_IP, probe: 'gid 1337 → self:15090', istio: 'in self:15090 > ERR:111', sluice: 'fail 111', cause: LOOPBACK_RANGE_GID },
  { golden: CNI_INCLUDE_EXCLUDE_IP, probe: 'gid 1337 → 127.0.0.2:9099', istio: 'in 127.0.0.2:9099 > ERR:111', sluice: 'fail 111', cause: LOOPBACK_RANGE_GID },
  { golden: CNI_INCLUDE_EXCLUDE_IP, probe: 'gid 1337 → 127.0.0.53:53', istio: 'in 127.0.0.53:53 > ERR:111', sluice: 'fail 111', cause: LOOPBACK_RANGE_GID },
  { golden: CNI_DNS, probe: 'app → be1:15020', istio: 'fail 111', sluice: 'out be1:15020 > ERR:111', cause: EXCLUDE_15020 },
  { golden: CNI_DNS, probe: 'uid 1337 → self:15020', istio: 'fail 111', sluice: 'in self:15020 > ERR:111', cause: EXCLUDE_15020 },
  { golden: CNI_DNS, probe: 'gid 1337 → self:53', istio: 'in self:53 > ERR:111', sluice: 'fail 111', cause: DNS_GID },
  { golden: CNI_DNS, probe: 'gid 1337 → 127.0.0.53:53', istio: 'in 127.0.0.53:53 > ERR:111', sluice: 'fail 111', cause: DNS_GID },
  { golden: CNI_CUSTOM_UID, probe: 'app → be1:15020', istio: 'fail 111', sluice: 'out be1:15020 > ERR:111', cause: EXCLUDE_15020 },
  { golden: CNI_CUSTOM_UID, probe: 'uid 1000670000 → self:15020', istio: 'fail 111', sluice: 'in self:15020 > ERR:111', cause: EXCLUDE_15020 },
  { golden: DERIVED_PORTS_RANGES, probe: 'app → be1:15020', istio: 'fail 111', sluice: 'out be1:15020 > ERR:111', cause: EXCLUDE_15020 },
  { golden: DERIVED_PORTS_RANGES, probe: 'uid 1337 → self:15020', istio: 'fail 111', sluice: 'in self:15020 > ERR:111', cause: EXCLUDE_15020 },
  { golden: DERIVED_PORTS_RANGES, probe: 'uid 1337 → [self6]:15020', istio: 'fail 111', sluice: 'in [self6]:15020 > ERR:111', cause: EXCLUDE_15020 },
];
