/*
 * Desired socket-LB state: which virtual IP:port/protocol frontends exist and
 * which backends each one spreads connections over. A pure function of the
 * Services, EndpointSlices and this node (name, zone), warnings aside, following
 * kube-proxy's rules so that the socket LB and kube-proxy agree on every Service
 * (the README's Service table lists each field and what becomes of it):
 *  - Services or EndpointSlices labelled service.kubernetes.io/service-proxy-name
 *    or service.kubernetes.io/headless are not ours (kube-proxy's informers
 *    select them away);
 *  - ClusterIP, NodePort and LoadBalancer Services contribute each of their
 *    clusterIPs; headless (clusterIP None), unallocated and ExternalName
 *    Services contribute nothing at all, not even their externalIPs;
 *  - a port's nodePort becomes one frontend per family the Service has a
 *    ClusterIP of, keyed by that family's unspecified address (0.0.0.0, ::):
 *    the datapath serves it on every address of the node (and loopback from
 *    the node itself), as kube-proxy's KUBE-NODEPORTS does for addresses of
 *    type LOCAL;
 *  - spec.externalIPs become frontends for every port, and so do the IPs of
 *    status.loadBalancer.ingress whose ipMode is VIP or absent (Proxy-mode
 *    load balancers send to the nodes; their IP is left alone), in the
 *    families the Service has a ClusterIP of, except where
 *    loadBalancerSourceRanges restrict that family;
 *  - only TCP and UDP (SCTP is left to kube-proxy), missing protocol = TCP;
 *  - endpoints come from the Service's EndpointSlices of the VIP's family; the
 *    backend port is the slice port with the service port's name and protocol,
 *    which resolves named and numeric targetPorts alike; only the first of an
 *    endpoint's fungible addresses is used;
 *  - which endpoints a frontend may use is selection.ts (kube-proxy's
 *    CategorizeEndpoints): a ClusterIP frontend of an internalTrafficPolicy
 *    Local Service uses this node's endpoints, every other frontend (nodePorts
 *    included) the Cluster set (ready, topology hints, serving-terminating
 *    fallback): connections sluice sees start on this node, and kube-proxy
 *    sends locally originated traffic to external destinations and nodePorts
 *    to the Cluster endpoints whatever the externalTrafficPolicy.
 * Inputs need not come from parseObject: anything the datapath would choke on
 * (bad IPs, ports) is skipped with a warning rather than thrown.
 */
import { isIP, SocketAddress } from 'node:net';
import type { EndpointSlice, Service } from '../k8s/types';
import { HEADLESS_LABEL, SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL } from '../k8s/types';
import { log, type Fields } from '../log';
import { selectEndpoints, type NodeTopology, type SelectableEndpoint, type Selection, type SelectionPolicy } from './selection';

export type L4Proto = 'TCP' | 'UDP';

export interface LbBackend {
  /** Canonical text form (IPv6 lowercase and compressed, as inet_ntop prints it). */
  ip: string;
  port: number;
}

export interface LbFrontend {
  /** `${ip}:${port}/${proto}`, IPv6 as `[ip]:port/proto`, canonical. */
  id: string;
  /** `namespace/name` of the Service. */
  service: string;
  /** Service port name ('' when unnamed). */
  portName: string;
  ip: string;
  port: number;
  proto: L4Proto;
  family: 4 | 6;
  /** nodePort: ip is the family's unspecified address and stands for every address of the node */
  scope: 'clusterIP' | 'externalIP' | 'loadBalancerIP' | 'nodePort';
  /**
   * The endpoints this node may use for this frontend (selection.ts); deduplicated; sorted by
   * (ip, port). Empty: the datapath must refuse connections.
   */
  backends: LbBackend[];
  /**
   * Endpoints of this port that are still ready or serving but not among `backends` (topology
   * hints, internalTrafficPolicy Local, serving-and-terminating while others are ready): an endpoint
   * that moves from `backends` to here has not left the Service, so sockets already on it are kept.
   * Sorted like `backends`; usually empty (one shared frozen array).
   */
  stillServing: readonly LbBackend[];
  /** 0 = no affinity; otherwise the ClientIP affinity timeout. */
  affinityTimeoutSec: number;
  /**
   * backends is empty because internalTrafficPolicy is Local and only other nodes have usable
   * endpoints (a refusal counted apart from "no endpoints at all").
   */
  noLocalEndpoints: boolean;
  /** backends were narrowed (or not) by zone hints: a change of this node's zone may change them. */
  zoneSensitive: boolean;
}

export interface ComputeFrontendsOptions {
  /** Receives each skipped input or conflict. Default log.warn. */
  warn?: (msg: string, fields: Fields) => void;
  /** This node's name: endpoints whose nodeName equals it are local. Default '' (none is local). */
  nodeName?: string;
  /** This node's topology.kubernetes.io/zone label. Default '' (zone hints match nothing). */
  zone?: string;
}

/** kube-proxy's default for sessionAffinity ClientIP without an explicit timeout (3 hours). */
export const DEFAULT_AFFINITY_TIMEOUT_SEC = 10800;
const MAX_AFFINITY_TIMEOUT_SEC = 86400;
const LB_SERVICE_TYPES: ReadonlySet<string> = new Set(['ClusterIP', 'NodePort', 'LoadBalancer']);
const NONE_STILL_SERVING: readonly LbBackend[] = Object.freeze([]);
/** The address a nodePort frontend is keyed by in each family: it stands for every node address. */
export const NODE_PORT_ADDRESS: Readonly<Record<4 | 6, string>> = { 4: '0.0.0.0', 6: '::' };

export interface CanonicalIp {
  ip: string;
  family: 4 | 6;
}

/**
 * Canonical form of an IP address, or undefined when it is not a plain
 * address (zone suffixes such as `%eth0` are rejected: they are not valid in
 * the Kubernetes API and meaningless for a VIP).
 */
export function canonicalIp(text: string): CanonicalIp | undefined {
  if (typeof text !== 'string' || text.includes('%')) return undefined;
  const family = isIP(text);
  // net.isIP accepts only dotted quads without leading zeros, which are already canonical.
  if (family === 4) return { ip: text, family: 4 };
  if (family === 6) return { ip: new SocketAddress({ address: text, family: 'ipv6' }).address, family: 6 };
  return undefined;
}

/** An IPv4 address as a number (canonical dotted quad): orders addresses numerically. */
function ipv4Number(ip: string): number {
  let n = 0;
  let octet = 0;
  for (let i = 0; i < ip.length; i++) {
    const c = ip.charCodeAt(i);
    if (c === 46) {
      n = n * 256 + octet;
      octet = 0;
    } else octet = octet * 10 + (c - 48);
  }
  return n * 256 + octet;
}

/** Sort key ordering addresses numerically (10.0.0.9 before 10.0.0.10), for canonical input. */
function ipSortKey(ip: string, family: 4 | 6): string | number {
  if (family === 4) return ipv4Number(ip);
  let text = ip;
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted !== null) {
    // IPv4-mapped/compatible tail: rewrite as two hex groups.
    const [a, b, c, d] = dotted.slice(1).map(Number);
    text = text.slice(0, dotted.index) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = new Array<string>(8 - headGroups.length - tailGroups.length).fill('0');
  return [...headGroups, ...(tail === undefined ? [] : zeros), ...tailGroups].map((g) => g.padStart(4, '0')).join('');
}

function isPort(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535;
}

function frontendId(ip: string, family: 4 | 6, port: number, proto: L4Proto): string {
  return family === 6 ? `[${ip}]:${port}/${proto}` : `${ip}:${port}/${proto}`;
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function affinityTimeout(svc: Service, service: string, warn: (msg: string, fields: Fields) => void): number {
  if (svc.spec.sessionAffinity !== 'ClientIP') return 0;
  const timeout = svc.spec.sessionAffinityConfig?.clientIP?.timeoutSeconds;
  if (timeout === undefined || timeout === null) return DEFAULT_AFFINITY_TIMEOUT_SEC;
  if (Number.isInteger(timeout) && timeout >= 1 && timeout <= MAX_AFFINITY_TIMEOUT_SEC) return timeout;
  warn('Invalid session affinity timeout; using the default', { service, timeoutSeconds: timeout });
  return DEFAULT_AFFINITY_TIMEOUT_SEC;
}

interface Vip extends CanonicalIp {
  scope: Exclude<LbFrontend['scope'], 'nodePort'>;
}

interface ServiceAddresses {
  vips: Vip[];
  /**
   * Families in which the Service is reachable other than through its ClusterIP (an externalIP
   * or a VIP-mode LoadBalancer IP, kept or not), as kube-proxy's ExternallyAccessible counts them.
   */
  externalFamilies: Set<4 | 6>;
}

/** The labels kube-proxy's informers select away (cmd/kube-proxy: DoesNotExist requirements). */
function notForUs(labels: Record<string, string> | undefined): boolean {
  return labels !== undefined && (Object.hasOwn(labels, SERVICE_PROXY_NAME_LABEL) || Object.hasOwn(labels, HEADLESS_LABEL));
}

/**
 * Families whose LoadBalancer IPs kube-proxy firewalls: loadBalancerSourceRanges of that family,
 * none of them zero-masked (a /0 allows everyone, as no ranges do). Unparsable ranges are skipped,
 * as kube-proxy skips them.
 */
function firewalledFamilies(ranges: readonly string[] | undefined): Set<4 | 6> {
  const byFamily = new Map<4 | 6, number[]>();
  for (const text of ranges ?? []) {
    const m = /^([^/]+)\/(\d{1,3})$/.exec(String(text).trim());
    const family = m ? isIP(m[1]) : 0;
    if (!m || (family !== 4 && family !== 6)) continue;
    byFamily.set(family, [...(byFamily.get(family) ?? []), Number(m[2])]);
  }
  return new Set([...byFamily].filter(([, prefixes]) => !prefixes.includes(0)).map(([family]) => family));
}

/** Canonical VIPs of a Service, or none when kube-proxy would skip it entirely. */
function serviceAddresses(svc: Service, service: string, warn: (msg: string, fields: Fields) => void): ServiceAddresses {
  const none: ServiceAddresses = { vips: [], externalFamilies: new Set() };
  if (!LB_SERVICE_TYPES.has(svc.spec.type ?? 'ClusterIP') || notForUs(svc.metadata.labels)) return none;
  const clusterIPs =
    svc.spec.clusterIPs !== undefined && svc.spec.clusterIPs.length > 0
      ? svc.spec.clusterIPs
      : svc.spec.clusterIP !== undefined
        ? [svc.spec.clusterIP]
        : [];
  const primary = clusterIPs[0];
  if (primary === undefined || primary === '' || primary === 'None') return none;
  const out: ServiceAddresses = { vips: [], externalFamilies: new Set() };
  const canonical = (text: string, scope: Vip['scope']): CanonicalIp | undefined => {
    const ip = canonicalIp(text);
    if (ip === undefined) warn('Skipping invalid service IP', { service, ip: text, scope });
    // the unspecified address is the socket's own host, and keys nodePorts in the datapath
    else if (ip.ip === NODE_PORT_ADDRESS[ip.family]) {
      warn('Skipping the unspecified address as a service IP', { service, ip: text, scope });
      return undefined;
    }
    return ip;
  };
  for (const text of clusterIPs) {
    if (text === 'None' || text === '') continue;
    const ip = canonical(text, 'clusterIP');
    if (ip) out.vips.push({ ...ip, scope: 'clusterIP' });
  }
  // kube-proxy handles a Service once per family it has a ClusterIP of (servicechangetracker.go:
  // no ClusterIP of the family, no service ports): an external address of another family is
  // nobody's, and sluice leaves it alone too.
  const families = new Set(out.vips.map((v) => v.family));
  for (const text of svc.spec.externalIPs ?? []) {
    const ip = canonical(text, 'externalIP');
    if (!ip || !families.has(ip.family)) continue;
    out.vips.push({ ...ip, scope: 'externalIP' });
    out.externalFamilies.add(ip.family);
  }
  // Behind a firewalled LoadBalancer IP kube-proxy admits only the listed sources. At connect()
  // the source is not chosen yet, so sluice leaves such IPs to kube-proxy or the load balancer.
  const firewalled = firewalledFamilies(svc.spec.loadBalancerSourceRanges);
  for (const ingress of svc.status?.loadBalancer?.ingress ?? []) {
    if (ingress.ip === undefined || ingress.ip === '' || (ingress.ipMode ?? 'VIP') !== 'VIP') continue;
    const ip = canonical(ingress.ip, 'loadBalancerIP');
    if (!ip || !families.has(ip.family)) continue;
    out.externalFamilies.add(ip.family);
    if (!firewalled.has(ip.family)) out.vips.push({ ...ip, scope: 'loadBalancerIP' });
  }
  return out;
}

/** A selectable endpoint with its sort key (a number for IPv4, a string for IPv6). */
interface ResolvedEndpoint extends SelectableEndpoint {
  sortKey: string | number;
}

function compareEndpoints(a: ResolvedEndpoint, b: ResolvedEndpoint): number {
  return a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : a.port - b.port;
}

/**
 * The endpoints of one service port in one family, one per ip:port (an endpoint listed by two
 * slices, e.g. while it moves between them, keeps the non-terminating entry, as kube-proxy's
 * EndpointSliceCache does), sorted numerically.
 */
function resolveEndpoints(
  slices: readonly EndpointSlice[],
  family: 4 | 6,
  portName: string,
  proto: L4Proto,
  nodeName: string,
  warn: (msg: string, fields: Fields) => void,
): ResolvedEndpoint[] {
  const addressType = family === 4 ? 'IPv4' : 'IPv6';
  const all: ResolvedEndpoint[] = [];
  for (const slice of slices) {
    if (slice.addressType !== addressType) continue;
    const slicePort = (slice.ports ?? []).find((p) => (p.name ?? '') === portName && (p.protocol ?? 'TCP') === proto);
    if (slicePort === undefined || slicePort.port === undefined || slicePort.port === null) continue;
    const slicePath = `${slice.metadata.namespace}/${slice.metadata.name}`;
    if (!isPort(slicePort.port)) {
      warn('Skipping EndpointSlice port out of range', { slice: slicePath, port: slicePort.port });
      continue;
    }
    for (const endpoint of slice.endpoints ?? []) {
      const text = endpoint.addresses?.[0];
      if (text === undefined) continue;
      const ip = canonicalIp(text);
      if (ip === undefined || ip.family !== family) {
        warn('Skipping invalid endpoint address', { slice: slicePath, address: text, addressType });
        continue;
      }
      const cond = endpoint.conditions;
      const resolved: ResolvedEndpoint = {
        ip: ip.ip,
        port: slicePort.port,
        ready: cond?.ready !== false,
        serving: cond?.serving !== false,
        terminating: cond?.terminating === true,
        isLocal: nodeName !== '' && endpoint.nodeName === nodeName,
        zoneHints: endpoint.hints?.forZones,
        nodeHints: endpoint.hints?.forNodes,
        sortKey: ipSortKey(ip.ip, family),
      };
      all.push(resolved);
    }
  }
  // sorted, an ip:port listed twice is adjacent: keep the later entry unless it is terminating
  all.sort(compareEndpoints);
  const out: ResolvedEndpoint[] = [];
  for (const e of all) {
    const last = out[out.length - 1];
    if (last === undefined || compareEndpoints(last, e) !== 0) out.push(e);
    else if (!e.terminating) out[out.length - 1] = e;
  }
  return out;
}

/** The endpoints still ready or serving that `chosen` leaves out (chosen is a subset, in order). */
function stillServing(endpoints: readonly ResolvedEndpoint[], chosen: readonly ResolvedEndpoint[]): readonly LbBackend[] {
  if (chosen.length === endpoints.length) return NONE_STILL_SERVING;
  const picked = new Set(chosen);
  const out: LbBackend[] = [];
  for (const e of endpoints) if (!picked.has(e) && (e.ready || e.serving)) out.push({ ip: e.ip, port: e.port });
  return out.length ? out : NONE_STILL_SERVING;
}

/**
 * Frontends for every Service port and VIP, sorted by id. When two Services
 * claim the same VIP:port/proto, the first in `namespace/name` order keeps it.
 */
export function computeFrontends(
  services: readonly Service[],
  slices: readonly EndpointSlice[],
  opts: ComputeFrontendsOptions = {},
): LbFrontend[] {
  const warn = opts.warn ?? log.warn;
  const node: NodeTopology = { nodeName: opts.nodeName ?? '', zone: opts.zone ?? '' };
  const slicesByService = new Map<string, EndpointSlice[]>();
  for (const slice of slices) {
    const serviceName = slice.metadata.labels?.[SERVICE_NAME_LABEL];
    if (serviceName === undefined || serviceName === '' || notForUs(slice.metadata.labels)) continue;
    const key = `${slice.metadata.namespace ?? 'default'}/${serviceName}`;
    let list = slicesByService.get(key);
    if (list === undefined) slicesByService.set(key, (list = []));
    list.push(slice);
  }

  const keyed = services.map((svc) => ({ svc, service: `${svc.metadata.namespace ?? 'default'}/${svc.metadata.name}` }));
  keyed.sort((a, b) => compareStrings(a.service, b.service));

  const byId = new Map<string, LbFrontend>();
  for (const { svc, service } of keyed) {
    const { vips, externalFamilies } = serviceAddresses(svc, service, warn);
    if (vips.length === 0) continue;
    // nodePorts are served in the families kube-proxy handles the Service in: its ClusterIPs'
    const clusterFamilies = [...new Set(vips.filter((v) => v.scope === 'clusterIP').map((v) => v.family))];
    const affinityTimeoutSec = affinityTimeout(svc, service, warn);
    const internalPolicyLocal = svc.spec.internalTrafficPolicy === 'Local';
    const serviceSlices = slicesByService.get(service) ?? [];
    for (const svcPort of svc.spec.ports ?? []) {
      const proto = svcPort.protocol ?? 'TCP';
      if (proto !== 'TCP' && proto !== 'UDP') continue;
      const portName = svcPort.name ?? '';
      if (!isPort(svcPort.port)) {
        warn('Skipping service port out of range', { service, portName, port: svcPort.port });
        continue;
      }
      const nodePort = isPort(svcPort.nodePort) ? svcPort.nodePort : undefined;
      if (svcPort.nodePort !== undefined && nodePort === undefined)
        warn('Skipping nodePort out of range', { service, portName, nodePort: svcPort.nodePort });
      // One selection per family serves every frontend of that family.
      const selections = new Map<4 | 6, { endpoints: ResolvedEndpoint[]; selection: Selection<ResolvedEndpoint> }>();
      const select = (family: 4 | 6) => {
        let s = selections.get(family);
        if (s === undefined) {
          const policy: SelectionPolicy = {
            internalPolicyLocal,
            // Every connection sluice sees starts on this node, and kube-proxy sends locally
            // originated traffic for external destinations (pods' and the host's) to the Cluster
            // endpoints whatever the externalTrafficPolicy (iptables proxier: "pod traffic for …
            // external destinations", "route LOCAL traffic for … external destinations"). So ETP
            // never picks endpoints here.
            externalPolicyLocal: false,
            // kube-proxy's ExternallyAccessible: a nodePort, or an external address of this family
            externallyAccessible: nodePort !== undefined || externalFamilies.has(family),
          };
          const endpoints = resolveEndpoints(serviceSlices, family, portName, proto, node.nodeName, warn);
          s = { endpoints, selection: selectEndpoints(endpoints, policy, node) };
          selections.set(family, s);
        }
        return s;
      };
      const add = (ip: string, family: 4 | 6, port: number, scope: LbFrontend['scope']) => {
        const id = frontendId(ip, family, port, proto);
        const existing = byId.get(id);
        if (existing !== undefined) {
          warn('Duplicate service frontend; keeping the first service', { id, kept: existing.service, skipped: service });
          return;
        }
        const { endpoints, selection } = select(family);
        const useLocal = scope === 'clusterIP' && internalPolicyLocal;
        const chosen = (useLocal ? selection.local : selection.cluster) ?? [];
        byId.set(id, {
          id,
          service,
          portName,
          ip,
          port,
          proto,
          family,
          scope,
          backends: chosen.map((e) => ({ ip: e.ip, port: e.port })),
          stillServing: stillServing(endpoints, chosen),
          affinityTimeoutSec,
          noLocalEndpoints: useLocal && chosen.length === 0 && selection.hasAnyEndpoints,
          zoneSensitive: !useLocal && selection.zoneSensitive,
        });
      };
      for (const vip of vips) add(vip.ip, vip.family, svcPort.port, vip.scope);
      if (nodePort !== undefined) {
        for (const family of clusterFamilies) add(NODE_PORT_ADDRESS[family], family, nodePort, 'nodePort');
      }
    }
  }
  return [...byId.values()].sort((a, b) => compareStrings(a.id, b.id));
}
