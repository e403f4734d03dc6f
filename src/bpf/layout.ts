/* Encodings of the socket-LB map keys and values: the one TypeScript mirror of bpf/lib/shared.h.
 * Field offsets follow the C structs (little-endian host); test/unit/layout.test.ts checks the
 * sizes against the BTF of the built object and the counter list against the header.
 */
import * as net from 'node:net';
import type { Codec } from './map';

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

export const SVC_F_AFFINITY = 1 << 0;
/** an externalIP or LoadBalancer IP frontend (informational: `lb list`) */
export const SVC_F_EXTERNAL = 1 << 1;
/** count 0 because internalTrafficPolicy Local has no endpoint on this node (others have) */
export const SVC_F_NO_LOCAL = 1 << 2;
/** a nodePort: keyed by the unspecified address of its family, serves every node address */
export const SVC_F_NODEPORT = 1 << 3;

/** Datapath counters, in the order of enum sl_counter. Never renumber; retire by renaming. */
export const COUNTERS = [
  'translated',
  'no_backend',
  'hostns_skip',
  'slot_miss',
  'rev_translated',
  'affinity_hit',
  'no_storage',
  'no_local_backend',
  'pod_opt_out',
  'sock_destroyed',
] as const;
export type CounterName = (typeof COUNTERS)[number];

/**
 * Writes a dotted-quad IPv4 address (no leading zeros, as net.isIP wants it) IPv4-mapped at
 * offset; false, with nothing written, for anything else. A full sync encodes a million
 * addresses: this is the common case, without the generic parse.
 */
function encodeV4Fast(ip: string, into: Buffer, offset: number): boolean {
  let octet = 0;
  let digits = 0;
  let dots = 0;
  const out = offset + 12;
  for (let i = 0; i < ip.length; i++) {
    const c = ip.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || dots === 3) return false;
      into[out + dots++] = octet;
      octet = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && octet === 0) return false; // a leading zero
      octet = octet * 10 + (c - 48);
      if (++digits > 3 || octet > 255) return false;
    } else return false;
  }
  if (digits === 0 || dots !== 3) return false;
  into[out + 3] = octet;
  into.fill(0, offset, offset + 10);
  into[offset + 10] = 0xff;
  into[offset + 11] = 0xff;
  return true;
}

/** Encodes an IPv4 or IPv6 address as the 16 bytes of struct sl_addr (IPv4 mapped). */
export function encodeAddr(ip: string, into: Buffer, offset: number): void {
  if (encodeV4Fast(ip, into, offset)) return;
  const fam = net.isIP(ip);
  into.fill(0, offset, offset + 16);
  if (fam === 4) {
    into[offset + 10] = 0xff;
    into[offset + 11] = 0xff;
    ip.split('.').forEach((o, i) => (into[offset + 12 + i] = Number(o)));
    return;
  }
  if (fam !== 6) throw new TypeError(`Cannot encode address "${ip}": not an IP address`);
  const sock = new net.SocketAddress({ address: ip, family: 'ipv6' });
  const [head, tail] = expandV6(sock.address);
  const groups = [...head, ...new Array(8 - head.length - tail.length).fill(0), ...tail];
  groups.forEach((g, i) => into.writeUInt16BE(g, offset + i * 2));
}

function expandV6(ip: string): [number[], number[]] {
  const parse = (s: string): number[] => {
    if (s === '') return [];
    const parts = s.split(':');
    const out: number[] = [];
    for (const p of parts) {
      if (p.includes('.')) {
        const o = p.split('.').map(Number);
        out.push((o[0] << 8) | o[1], (o[2] << 8) | o[3]);
      } else out.push(parseInt(p, 16));
    }
    return out;
  };
  const dbl = ip.indexOf('::');
  if (dbl < 0) return [parse(ip), []];
  return [parse(ip.slice(0, dbl)), parse(ip.slice(dbl + 2))];
}

/** Decodes struct sl_addr; IPv4-mapped addresses come back as dotted IPv4. */
export function decodeAddr(from: Buffer, offset: number): string {
  let mapped = from[offset + 10] === 0xff && from[offset + 11] === 0xff;
  for (let i = 0; i < 10 && mapped; i++) if (from[offset + i] !== 0) mapped = false;
  if (mapped) return Array.from(from.subarray(offset + 12, offset + 16)).join('.');
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(from.readUInt16BE(offset + i * 2).toString(16));
  return new net.SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address;
}

export type Proto = 'TCP' | 'UDP';

export function protoNumber(p: Proto): number {
  return p === 'TCP' ? IPPROTO_TCP : IPPROTO_UDP;
}

export function protoName(n: number): Proto | string {
  return n === IPPROTO_TCP ? 'TCP' : n === IPPROTO_UDP ? 'UDP' : `proto-${n}`;
}

export interface SvcKey {
  vip: string;
  port: number;
  proto: number;
  slot: number;
}

/** struct sl_svc_key: vip[16] port:u16 proto:u8 pad:u8 slot:u16 pad2:u16 (24 bytes). */
export const svcKeyCodec: Codec<SvcKey> = {
  size: 24,
  encode(k, b, o) {
    encodeAddr(k.vip, b, o);
    b.writeUInt16LE(k.port, o + 16);
    b.writeUInt8(k.proto, o + 18);
    b.writeUInt8(0, o + 19);
    b.writeUInt16LE(k.slot, o + 20);
    b.writeUInt16LE(0, o + 22);
  },
  decode(b, o) {
    return { vip: decodeAddr(b, o), port: b.readUInt16LE(o + 16), proto: b.readUInt8(o + 18), slot: b.readUInt16LE(o + 20) };
  },
};

/** The slot of a raw struct sl_svc_key (0: the service entry itself), without decoding the rest. */
export function svcKeySlot(raw: Buffer, offset = 0): number {
  return raw.readUInt16LE(offset + 20);
}

export interface SvcVal {
  /** slot 0: service id; slot > 0: backend id */
  id: number;
  /** slot 0: number of backend slots (0: refuse) */
  count: number;
  flags: number;
  affinitySec: number;
}

/** struct sl_svc_val: id:u32 count:u16 flags:u16 affinity_s:u32 (12 bytes). */
export const svcValCodec: Codec<SvcVal> = {
  size: 12,
  encode(v, b, o) {
    b.writeUInt32LE(v.id, o);
    b.writeUInt16LE(v.count, o + 4);
    b.writeUInt16LE(v.flags, o + 6);
    b.writeUInt32LE(v.affinitySec, o + 8);
  },
  decode(b, o) {
    return { id: b.readUInt32LE(o), count: b.readUInt16LE(o + 4), flags: b.readUInt16LE(o + 6), affinitySec: b.readUInt32LE(o + 8) };
  },
};

export const u32Codec: Codec<number> = {
  size: 4,
  encode(v, b, o) {
    b.writeUInt32LE(v, o);
  },
  decode(b, o) {
    return b.readUInt32LE(o);
  },
};

export interface Backend {
  ip: string;
  port: number;
  proto: number;
}

/** struct sl_backend: ip[16] port:u16 proto:u8 pad:u8 (20 bytes). */
export const backendCodec: Codec<Backend> = {
  size: 20,
  encode(v, b, o) {
    encodeAddr(v.ip, b, o);
    b.writeUInt16LE(v.port, o + 16);
    b.writeUInt8(v.proto, o + 18);
    b.writeUInt8(0, o + 19);
  },
  decode(b, o) {
    return { ip: decodeAddr(b, o), port: b.readUInt16LE(o + 16), proto: b.readUInt8(o + 18) };
  },
};

export interface AffinityKey {
  netnsCookie: bigint;
  svcId: number;
}

/** struct sl_affinity_key: netns_cookie:u64 svc_id:u32 pad:u32 (16 bytes). */
export const affinityKeyCodec: Codec<AffinityKey> = {
  size: 16,
  encode(k, b, o) {
    b.writeBigUInt64LE(k.netnsCookie, o);
    b.writeUInt32LE(k.svcId, o + 8);
    b.writeUInt32LE(0, o + 12);
  },
  decode(b, o) {
    return { netnsCookie: b.readBigUInt64LE(o), svcId: b.readUInt32LE(o + 8) };
  },
};

export interface AffinityVal {
  lastNs: bigint;
  backendId: number;
}

/** struct sl_affinity_val: last_ns:u64 backend_id:u32 pad:u32 (16 bytes). */
export const affinityValCodec: Codec<AffinityVal> = {
  size: 16,
  encode(v, b, o) {
    b.writeBigUInt64LE(v.lastNs, o);
    b.writeUInt32LE(v.backendId, o + 8);
    b.writeUInt32LE(0, o + 12);
  },
  decode(b, o) {
    return { lastNs: b.readBigUInt64LE(o), backendId: b.readUInt32LE(o + 8) };
  },
};

/**
 * struct sl_sock_rev_entry: backend[16] vip[16] backend_port:u16 vip_port:u16 (36 bytes), as in
 * v0.1.0; user space never reads it (socket storage), the size is checked against the BTF so that
 * a change, which would cost every live socket its reverse translation at an upgrade, is seen.
 */
export const SOCK_REV_ENTRY_SIZE = 36;

export interface DeadKey {
  /** the frontend's address as its sl_lb_svc key holds it (a nodePort: the unspecified address) */
  vip: string;
  vipPort: number;
  backend: string;
  backendPort: number;
  proto: number;
}

/** struct sl_dead_key: vip[16] backend[16] vip_port:u16 backend_port:u16 proto:u8 pad[3] (40 bytes). */
export const deadKeyCodec: Codec<DeadKey> = {
  size: 40,
  encode(k, b, o) {
    encodeAddr(k.vip, b, o);
    encodeAddr(k.backend, b, o + 16);
    b.writeUInt16LE(k.vipPort, o + 32);
    b.writeUInt16LE(k.backendPort, o + 34);
    b.writeUInt8(k.proto, o + 36);
    b.fill(0, o + 37, o + 40);
  },
  decode(b, o) {
    return { vip: decodeAddr(b, o), backend: decodeAddr(b, o + 16), vipPort: b.readUInt16LE(o + 32), backendPort: b.readUInt16LE(o + 34), proto: b.readUInt8(o + 36) };
  },
};

export interface Destroyed {
  /** the backend the socket was connected to */
  peer: string;
  peerPort: number;
  /** the address and port the socket had dialed (a VIP, or a node address for a nodePort) */
  vip: string;
  vipPort: number;
  proto: number;
}

/** struct sl_destroyed: peer[16] vip[16] peer_port:u16 vip_port:u16 proto:u8 pad[3] (40 bytes), what the socket-destroy iterators write per socket. */
export const destroyedCodec: Codec<Destroyed> = {
  size: 40,
  encode(v, b, o) {
    encodeAddr(v.peer, b, o);
    encodeAddr(v.vip, b, o + 16);
    b.writeUInt16LE(v.peerPort, o + 32);
    b.writeUInt16LE(v.vipPort, o + 34);
    b.writeUInt8(v.proto, o + 36);
    b.fill(0, o + 37, o + 40);
  },
  decode(b, o) {
    return { peer: decodeAddr(b, o), vip: decodeAddr(b, o + 16), peerPort: b.readUInt16LE(o + 32), vipPort: b.readUInt16LE(o + 34), proto: b.readUInt8(o + 36) };
  },
};

/** A per-CPU u64 counter: the kernel returns one 8-byte slot per possible CPU; we sum them. */
export function perCpuU64Codec(possibleCpus: number): Codec<bigint> {
  return {
    size: 8 * possibleCpus,
    encode(v, b, o) {
      b.fill(0, o, o + 8 * possibleCpus);
      b.writeBigUInt64LE(v, o);
    },
    decode(b, o) {
      let sum = 0n;
      for (let i = 0; i < possibleCpus; i++) sum += b.readBigUInt64LE(o + 8 * i);
      return sum;
    },
  };
}

// ---- mesh capture (struct sl_policy and friends) ----

export const MODE = { none: 0, sidecar: 1, ambient: 2 } as const;
export type MeshMode = keyof typeof MODE;
export const POL_OUT_ALL = 1 << 0;
export const POL_IN_ALL = 1 << 1;
export const POL_DNS = 1 << 2;
export const POL_LOOPBACK_RANGE = 1 << 3;
export const POL_NO_INBOUND = 1 << 4;
/** sidecar.istio.io/interceptionMode TPROXY */
export const POL_TPROXY = 1 << 5;
export const MAX_CIDRS = 16;
export const MAX_PORTS = 32;
export const MAX_POD_IPS = 4;

export interface Cidr {
  ip: string;
  /** prefix length in the address's own family (IPv4: 0-32) */
  prefix: number;
}

export interface Policy {
  mode: MeshMode;
  flags: number;
  outboundPort: number;
  inboundPort: number;
  dnsPort: number;
  podIps: string[];
  includeCidrs: Cidr[];
  excludeCidrs: Cidr[];
  includeOutPorts: number[];
  excludeOutPorts: number[];
  includeInPorts: number[];
  excludeInPorts: number[];
  /** the sidecar's uid and gid; absent (0 in the kernel): the node's mesh-proxy-uid/gid */
  proxyUid?: number;
  proxyGid?: number;
}

const P = {
  podIps: 20,
  includeCidrs: 84,
  excludeCidrs: 404,
  includeOutPorts: 724,
  excludeOutPorts: 788,
  includeInPorts: 852,
  excludeInPorts: 916,
  proxyUid: 980,
  proxyGid: 984,
  size: 988,
};

function checkCount(what: string, n: number, max: number): void {
  if (n > max) throw new RangeError(`Cannot encode policy: ${n} ${what}, at most ${max}`);
}

/** struct sl_policy (988 bytes). */
export const policyCodec: Codec<Policy> = {
  size: P.size,
  encode(p, b, o) {
    b.fill(0, o, o + P.size);
    checkCount('pod IPs', p.podIps.length, MAX_POD_IPS);
    checkCount('included ranges', p.includeCidrs.length, MAX_CIDRS);
    checkCount('excluded ranges', p.excludeCidrs.length, MAX_CIDRS);
    for (const [n, l] of [['included outbound ports', p.includeOutPorts], ['excluded outbound ports', p.excludeOutPorts], ['included inbound ports', p.includeInPorts], ['excluded inbound ports', p.excludeInPorts]] as const) {
      checkCount(n, l.length, MAX_PORTS);
    }
    b.writeUInt8(MODE[p.mode], o);
    b.writeUInt8(p.flags, o + 1);
    b.writeUInt8(p.includeCidrs.length, o + 2);
    b.writeUInt8(p.excludeCidrs.length, o + 3);
    b.writeUInt8(p.includeOutPorts.length, o + 4);
    b.writeUInt8(p.excludeOutPorts.length, o + 5);
    b.writeUInt8(p.includeInPorts.length, o + 6);
    b.writeUInt8(p.excludeInPorts.length, o + 7);
    b.writeUInt8(p.podIps.length, o + 8);
    b.writeUInt16LE(p.outboundPort, o + 12);
    b.writeUInt16LE(p.inboundPort, o + 14);
    b.writeUInt16LE(p.dnsPort, o + 16);
    p.podIps.forEach((ip, i) => encodeAddr(ip, b, o + P.podIps + 16 * i));
    const cidrs = (list: Cidr[], at: number) =>
      list.forEach((c, i) => {
        encodeAddr(c.ip, b, o + at + 20 * i);
        b.writeUInt8(c.ip.includes(':') ? c.prefix : c.prefix + 96, o + at + 20 * i + 16);
      });
    cidrs(p.includeCidrs, P.includeCidrs);
    cidrs(p.excludeCidrs, P.excludeCidrs);
    const ports = (list: number[], at: number) => list.forEach((port, i) => b.writeUInt16LE(port, o + at + 2 * i));
    ports(p.includeOutPorts, P.includeOutPorts);
    ports(p.excludeOutPorts, P.excludeOutPorts);
    ports(p.includeInPorts, P.includeInPorts);
    ports(p.excludeInPorts, P.excludeInPorts);
    b.writeUInt32LE(p.proxyUid ?? 0, o + P.proxyUid);
    b.writeUInt32LE(p.proxyGid ?? 0, o + P.proxyGid);
  },
  decode(b, o) {
    const modeNum = b.readUInt8(o);
    const mode = (Object.keys(MODE) as MeshMode[]).find((k) => MODE[k] === modeNum) ?? 'none';
    const cidrs = (n: number, at: number): Cidr[] =>
      Array.from({ length: n }, (_, i) => {
        const ip = decodeAddr(b, o + at + 20 * i);
        const raw = b.readUInt8(o + at + 20 * i + 16);
        return { ip, prefix: ip.includes(':') ? raw : raw - 96 };
      });
    const ports = (n: number, at: number) => Array.from({ length: n }, (_, i) => b.readUInt16LE(o + at + 2 * i));
    return {
      mode,
      flags: b.readUInt8(o + 1),
      outboundPort: b.readUInt16LE(o + 12),
      inboundPort: b.readUInt16LE(o + 14),
      dnsPort: b.readUInt16LE(o + 16),
      podIps: Array.from({ length: b.readUInt8(o + 8) }, (_, i) => decodeAddr(b, o + P.podIps + 16 * i)),
      includeCidrs: cidrs(b.readUInt8(o + 2), P.includeCidrs),
      excludeCidrs: cidrs(b.readUInt8(o + 3), P.excludeCidrs),
      includeOutPorts: ports(b.readUInt8(o + 4), P.includeOutPorts),
      excludeOutPorts: ports(b.readUInt8(o + 5), P.excludeOutPorts),
      includeInPorts: ports(b.readUInt8(o + 6), P.includeInPorts),
      excludeInPorts: ports(b.readUInt8(o + 7), P.excludeInPorts),
      ...(b.readUInt32LE(o + P.proxyUid) ? { proxyUid: b.readUInt32LE(o + P.proxyUid) } : {}),
      ...(b.readUInt32LE(o + P.proxyGid) ? { proxyGid: b.readUInt32LE(o + P.proxyGid) } : {}),
    };
  },
};

export const u64Codec: Codec<bigint> = {
  size: 8,
  encode(v, b, o) {
    b.writeBigUInt64LE(v, o);
  },
  decode(b, o) {
    return b.readBigUInt64LE(o);
  },
};

export const u8Codec: Codec<number> = {
  size: 1,
  encode(v, b, o) {
    b.writeUInt8(v, o);
  },
  decode(b, o) {
    return b.readUInt8(o);
  },
};

export const addrCodec: Codec<string> = { size: 16, encode: encodeAddr, decode: decodeAddr };

export interface EpStats {
  outbound: bigint;
  inbound: bigint;
  proxyBypass: bigint;
  noListener: bigint;
}

/** struct sl_ep_stats: four u64 counters (32 bytes). */
export const epStatsCodec: Codec<EpStats> = {
  size: 32,
  encode(v, b, o) {
    b.writeBigUInt64LE(v.outbound, o);
    b.writeBigUInt64LE(v.inbound, o + 8);
    b.writeBigUInt64LE(v.proxyBypass, o + 16);
    b.writeBigUInt64LE(v.noListener, o + 24);
  },
  decode(b, o) {
    return { outbound: b.readBigUInt64LE(o), inbound: b.readBigUInt64LE(o + 8), proxyBypass: b.readBigUInt64LE(o + 16), noListener: b.readBigUInt64LE(o + 24) };
  },
};

export interface OrigdstStat {
  /** captured handshakes in flight on the node (entries of sl_origdst_syn) */
  inFlight: bigint;
  /** captured connects refused (EAGAIN) because inFlight had reached its limit */
  refused: bigint;
}

/** struct sl_origdst_stat: in_flight:u64 refused:u64 (16 bytes). */
export const origdstStatCodec: Codec<OrigdstStat> = {
  size: 16,
  encode(v, b, o) {
    b.writeBigUInt64LE(v.inFlight, o);
    b.writeBigUInt64LE(v.refused, o + 8);
  },
  decode(b, o) {
    return { inFlight: b.readBigUInt64LE(o), refused: b.readBigUInt64LE(o + 8) };
  },
};
