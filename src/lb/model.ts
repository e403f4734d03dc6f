/*
 * Desired socket-LB state: which virtual IP:port/protocol frontends exist and
 * which backends each one spreads connections over. A pure function of the
 * Services and EndpointSlices (warnings aside), following kube-proxy's rules so
 * that the socket LB and kube-proxy agree on every Service:
 *  - ClusterIP, NodePort and LoadBalancer Services contribute each of their
 *    clusterIPs; headless (clusterIP None), unallocated and ExternalName
 *    Services contribute nothing at all, not even their externalIPs;
 *  - spec.externalIPs become frontends for every port;
 *  - only TCP and UDP (SCTP is left to kube-proxy), missing protocol = TCP;
 *  - endpoints come from the Service's EndpointSlices of the VIP's family; the
 *    backend port is the slice port with the service port's name and protocol,
 *    which resolves named and numeric targetPorts alike;
 *  - ready means conditions.ready !== false (nil is ready), and only the first
 *    of an endpoint's fungible addresses is used.
 * Inputs need not come from parseObject: anything the datapath would choke on
 * (bad IPs, ports) is skipped with a warning rather than thrown.
 */
import { isIP, SocketAddress } from 'node:net';
import type { EndpointSlice, Service } from '../k8s/types';
import { SERVICE_NAME_LABEL } from '../k8s/types';
import { log, type Fields } from '../log';

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
  scope: 'clusterIP' | 'externalIP';
  /** Ready endpoints only; deduplicated; sorted by (ip, port). Empty: the datapath must refuse connections. */
  backends: LbBackend[];
  /** 0 = no affinity; otherwise the ClientIP affinity timeout. */
  affinityTimeoutSec: number;
}

export interface ComputeFrontendsOptions {
  /** Receives each skipped input or conflict. Default log.warn. */
  warn?: (msg: string, fields: Fields) => void;
}

/** kube-proxy's default for sessionAffinity ClientIP without an explicit timeout (3 hours). */
export const DEFAULT_AFFINITY_TIMEOUT_SEC = 10800;
const MAX_AFFINITY_TIMEOUT_SEC = 86400;
const LB_SERVICE_TYPES: ReadonlySet<string> = new Set(['ClusterIP', 'NodePort', 'LoadBalancer']);

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

/** Sort key ordering addresses numerically (10.0.0.9 before 10.0.0.10), for canonical input. */
function ipSortKey(ip: string, family: 4 | 6): string {
  if (family === 4) return ip.split('.').map((o) => o.padStart(3, '0')).join('');
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
  scope: LbFrontend['scope'];
}

/** Canonical VIPs of a Service, or [] when kube-proxy would skip it entirely. */
function serviceVips(svc: Service, service: string, warn: (msg: string, fields: Fields) => void): Vip[] {
  if (!LB_SERVICE_TYPES.has(svc.spec.type ?? 'ClusterIP')) return [];
  const clusterIPs = svc.spec.clusterIPs !== undefined && svc.spec.clusterIPs.length > 0
    ? svc.spec.clusterIPs
    : svc.spec.clusterIP !== undefined ? [svc.spec.clusterIP] : [];
  const primary = clusterIPs[0];
  if (primary === undefined || primary === '' || primary === 'None') return [];
  const vips: Vip[] = [];
  const add = (text: string, scope: Vip['scope']): void => {
    const ip = canonicalIp(text);
    if (ip === undefined) warn('Skipping invalid service IP', { service, ip: text, scope });
    else vips.push({ ...ip, scope });
  };
  for (const ip of clusterIPs) if (ip !== 'None' && ip !== '') add(ip, 'clusterIP');
  for (const ip of svc.spec.externalIPs ?? []) add(ip, 'externalIP');
  return vips;
}

/** Ready backends of one service port in one family, deduplicated and sorted. */
function resolveBackends(
  slices: readonly EndpointSlice[],
  family: 4 | 6,
  portName: string,
  proto: L4Proto,
  warn: (msg: string, fields: Fields) => void,
): LbBackend[] {
  const addressType = family === 4 ? 'IPv4' : 'IPv6';
  const byAddress = new Map<string, LbBackend & { sortKey: string }>();
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
      if (endpoint.conditions?.ready === false) continue;
      const text = endpoint.addresses?.[0];
      if (text === undefined) continue;
      const ip = canonicalIp(text);
      if (ip === undefined || ip.family !== family) {
        warn('Skipping invalid endpoint address', { slice: slicePath, address: text, addressType });
        continue;
      }
      const addrKey = `${ip.ip}|${slicePort.port}`;
      if (!byAddress.has(addrKey)) {
        byAddress.set(addrKey, { ip: ip.ip, port: slicePort.port, sortKey: ipSortKey(ip.ip, family) });
      }
    }
  }
  const sorted = [...byAddress.values()].sort((a, b) => compareStrings(a.sortKey, b.sortKey) || a.port - b.port);
  return sorted.map(({ ip, port }) => ({ ip, port }));
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
  const slicesByService = new Map<string, EndpointSlice[]>();
  for (const slice of slices) {
    const serviceName = slice.metadata.labels?.[SERVICE_NAME_LABEL];
    if (serviceName === undefined || serviceName === '') continue;
    const key = `${slice.metadata.namespace ?? 'default'}/${serviceName}`;
    let list = slicesByService.get(key);
    if (list === undefined) slicesByService.set(key, (list = []));
    list.push(slice);
  }

  const keyed = services.map((svc) => ({ svc, service: `${svc.metadata.namespace ?? 'default'}/${svc.metadata.name}` }));
  keyed.sort((a, b) => compareStrings(a.service, b.service));

  const byId = new Map<string, LbFrontend>();
  for (const { svc, service } of keyed) {
    const vips = serviceVips(svc, service, warn);
    if (vips.length === 0) continue;
    const affinityTimeoutSec = affinityTimeout(svc, service, warn);
    const serviceSlices = slicesByService.get(service) ?? [];
    // A service port resolves to the same backends for every VIP of a family.
    const backendsFor = new Map<string, LbBackend[]>();
    for (const svcPort of svc.spec.ports ?? []) {
      const proto = svcPort.protocol ?? 'TCP';
      if (proto !== 'TCP' && proto !== 'UDP') continue;
      const portName = svcPort.name ?? '';
      if (!isPort(svcPort.port)) {
        warn('Skipping service port out of range', { service, portName, port: svcPort.port });
        continue;
      }
      for (const vip of vips) {
        const id = frontendId(vip.ip, vip.family, svcPort.port, proto);
        const existing = byId.get(id);
        if (existing !== undefined) {
          warn('Duplicate service frontend; keeping the first service', { id, kept: existing.service, skipped: service });
          continue;
        }
        const cacheKey = `${vip.family}|${portName}|${proto}`;
        let backends = backendsFor.get(cacheKey);
        if (backends === undefined) {
          backends = resolveBackends(serviceSlices, vip.family, portName, proto, warn);
          backendsFor.set(cacheKey, backends);
        }
        byId.set(id, {
          id,
          service,
          portName,
          ip: vip.ip,
          port: svcPort.port,
          proto,
          family: vip.family,
          scope: vip.scope,
          backends: backends.map((b) => ({ ...b })),
          affinityTimeoutSec,
        });
      }
    }
  }
  return [...byId.values()].sort((a, b) => compareStrings(a.id, b.id));
}
