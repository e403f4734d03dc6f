/* Istio's sidecar traffic annotations, parsed with Istio's meaning and defaults, into the policy
 * the datapath enforces. An invalid value refuses the whole policy: a pod is never enrolled with
 * a half-parsed one. The interface annotations are checked by sidecar-interfaces.ts, which pods
 * get a policy at all by sidecar-pod.ts.
 */
import { isIP } from 'node:net';
import { PROXY_PORT } from '../bpf/constants';
import {
  MAX_CIDRS,
  MAX_PORTS,
  POL_DNS,
  POL_IN_ALL,
  POL_LOOPBACK_RANGE,
  POL_OUT_ALL,
  POL_TPROXY,
  type Cidr,
  type Policy,
} from '../bpf/layout';
import { interfaceRefusal } from './sidecar-interfaces';

export const ANNOTATION = {
  status: 'sidecar.istio.io/status',
  interceptionMode: 'sidecar.istio.io/interceptionMode',
  includeOutboundIPRanges: 'traffic.sidecar.istio.io/includeOutboundIPRanges',
  excludeOutboundIPRanges: 'traffic.sidecar.istio.io/excludeOutboundIPRanges',
  includeOutboundPorts: 'traffic.sidecar.istio.io/includeOutboundPorts',
  excludeOutboundPorts: 'traffic.sidecar.istio.io/excludeOutboundPorts',
  includeInboundPorts: 'traffic.sidecar.istio.io/includeInboundPorts',
  excludeInboundPorts: 'traffic.sidecar.istio.io/excludeInboundPorts',
} as const;

/** istio-cni's default for excludeOutboundPorts when the annotation is absent: the proxy's
 * status port (cni/pkg/plugin/sidecar_redirect.go, defaultRedirectExcludePort). */
const DEFAULT_EXCLUDE_OUTBOUND_PORTS = '15020';

/** Istio's proxy ports (also the defaults sluice captures to). The datapath enrols the proxy's
 * listeners on its own list of ports (PROXY_PORT, bpf/lib/mesh_consts.h), which these must be. */
export const PROXY_PORTS = { outbound: PROXY_PORT.outbound, inbound: PROXY_PORT.inbound, dns: 15053 } as const;

function items(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

function parsePorts(name: string, value: string): number[] {
  const out: number[] = [];
  for (const item of items(value)) {
    if (!/^\d+$/.test(item) || Number(item) < 1 || Number(item) > 65535) {
      throw new RangeError(`Cannot parse annotation ${name} "${value}": "${item}" is not a port`);
    }
    if (!out.includes(Number(item))) out.push(Number(item));
  }
  if (out.length > MAX_PORTS)
    throw new RangeError(`Cannot use annotation ${name}: ${out.length} ports, sluice supports at most ${MAX_PORTS}`);
  return out;
}

function parseCidrs(name: string, value: string): Cidr[] {
  const out: Cidr[] = [];
  for (const item of items(value)) {
    const m = /^([^/]+)\/(\d{1,3})$/.exec(item);
    const fam = m ? isIP(m[1]) : 0;
    const max = fam === 4 ? 32 : 128;
    if (!m || fam === 0 || Number(m[2]) > max) {
      throw new RangeError(`Cannot parse annotation ${name} "${value}": "${item}" is not a CIDR (address/prefix)`);
    }
    out.push({ ip: m[1].toLowerCase(), prefix: Number(m[2]) });
  }
  if (out.length > MAX_CIDRS)
    throw new RangeError(`Cannot use annotation ${name}: ${out.length} ranges, sluice supports at most ${MAX_CIDRS}`);
  return out;
}

/** Does a range include a loopback address (127.0.0.0/8 or ::1)? Istio then captures local traffic too. */
function coversLoopback(c: Cidr): boolean {
  if (!c.ip.includes(':')) {
    const first = Number(c.ip.split('.')[0]);
    return c.prefix === 0 || (c.prefix <= 8 ? first >> (8 - c.prefix) === 127 >> (8 - c.prefix) : first === 127);
  }
  return c.prefix === 0 || c.ip === '::1' || (c.ip === '::' && c.prefix <= 127);
}

export interface SidecarPolicyResult {
  policy?: Policy;
  /** why the pod is not enrolled, when it is not */
  refused?: string;
}

/**
 * The policy of a pod with an injected sidecar, from its annotations.
 * interceptionMode TPROXY (Envoy then hands inbound connections to the app from the client's own
 * address, transparent, mark 1337) captures as REDIRECT does, plus what Istio's TPROXY rules add:
 * the app's replies to such a connection are routed back to Envoy inside the pod (the enroller
 * sets that up), and the proxy's own connections to local addresses reach 15006 as Istio's mangle
 * rules send them (bpf/lib/capture.h, cap_tproxy_inbound).
 */
export function sidecarPolicy(
  annotations: Record<string, string>,
  podIps: string[],
  opts: { dnsCapture?: boolean } = {},
): SidecarPolicyResult {
  const mode = annotations[ANNOTATION.interceptionMode] ?? 'REDIRECT';
  if (mode === 'NONE') return { refused: `${ANNOTATION.interceptionMode} is NONE: Istio captures nothing for this pod` };
  if (mode !== 'REDIRECT' && mode !== 'TPROXY')
    return { refused: `Cannot parse annotation ${ANNOTATION.interceptionMode} "${mode}": expected REDIRECT, TPROXY or NONE` };
  try {
    let flags = opts.dnsCapture ? POL_DNS : 0;
    if (mode === 'TPROXY') flags |= POL_TPROXY;
    const incRanges = annotations[ANNOTATION.includeOutboundIPRanges] ?? '*';
    let includeCidrs: Cidr[] = [];
    if (incRanges.trim() === '*') flags |= POL_OUT_ALL;
    else includeCidrs = parseCidrs(ANNOTATION.includeOutboundIPRanges, incRanges);
    if (includeCidrs.some(coversLoopback)) flags |= POL_LOOPBACK_RANGE;
    const incIn = annotations[ANNOTATION.includeInboundPorts] ?? '*';
    let includeInPorts: number[] = [];
    if (incIn.trim() === '*') flags |= POL_IN_ALL;
    else includeInPorts = parsePorts(ANNOTATION.includeInboundPorts, incIn);
    const policy: Policy = {
      mode: 'sidecar',
      flags,
      outboundPort: PROXY_PORTS.outbound,
      inboundPort: PROXY_PORTS.inbound,
      dnsPort: PROXY_PORTS.dns,
      podIps,
      includeCidrs,
      excludeCidrs: parseCidrs(ANNOTATION.excludeOutboundIPRanges, annotations[ANNOTATION.excludeOutboundIPRanges] ?? ''),
      includeOutPorts: parsePorts(ANNOTATION.includeOutboundPorts, annotations[ANNOTATION.includeOutboundPorts] ?? ''),
      excludeOutPorts: parsePorts(
        ANNOTATION.excludeOutboundPorts,
        annotations[ANNOTATION.excludeOutboundPorts] ?? DEFAULT_EXCLUDE_OUTBOUND_PORTS,
      ),
      includeInPorts,
      excludeInPorts: parsePorts(ANNOTATION.excludeInboundPorts, annotations[ANNOTATION.excludeInboundPorts] ?? ''),
    };
    // istio-cni reads the interface annotations after the ports: an invalid port is reported first
    const refused = interfaceRefusal(annotations);
    return refused ? { refused } : { policy };
  } catch (e) {
    return { refused: (e as Error).message };
  }
}

/** One line for `endpoint list`: the effective policy, in the annotations' terms. */
export function describePolicy(p: Policy): string {
  const list = (xs: Array<string | number>) => (xs.length ? xs.join(',') : '-');
  const cidr = (c: Cidr) => `${c.ip}/${c.prefix}`;
  return [
    `out=${p.flags & POL_OUT_ALL ? '*' : list(p.includeCidrs.map(cidr))}`,
    p.excludeCidrs.length ? `out-exclude=${list(p.excludeCidrs.map(cidr))}` : '',
    p.includeOutPorts.length ? `out-ports=${list(p.includeOutPorts)}` : '',
    p.excludeOutPorts.length ? `out-exclude-ports=${list(p.excludeOutPorts)}` : '',
    `in=${p.flags & POL_IN_ALL ? '*' : list(p.includeInPorts)}`,
    p.excludeInPorts.length ? `in-exclude-ports=${list(p.excludeInPorts)}` : '',
    p.flags & POL_DNS ? `dns=${p.dnsPort}` : '',
    p.flags & POL_TPROXY ? 'interception=TPROXY' : '',
  ]
    .filter(Boolean)
    .join(' ');
}
