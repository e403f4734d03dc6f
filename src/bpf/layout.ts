/* Encodings of the map keys and values: the one TypeScript mirror of bpf/lib/shared.h, one codec
 * per struct, each encoding by its field table (little-endian host). test/unit/contract-layout.test.ts
 * checks every table, member by member, against the BTF of the built objects, and
 * test/unit/contract-constants.test.ts the flags, limits and counters against the C headers.
 */
import * as net from 'node:net';
import type { Codec } from './map';
import { defineStruct, structCodec, type StructCodec } from './struct-layout';

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

const ADDR = defineStruct('sl_addr', 16, [['b', 0, 16]]);

/** struct sl_addr: an IPv4 or IPv6 address, IPv4 stored IPv4-mapped. */
export const addrCodec: StructCodec<string> = structCodec(ADDR, { encode: encodeAddr, decode: decodeAddr });

export interface SvcKey {
  vip: string;
  port: number;
  proto: number;
  slot: number;
}

const SVC_KEY = defineStruct('sl_svc_key', 24, [
  ['vip', 0, ADDR.size],
  ['port', 16, 2],
  ['proto', 18, 1],
  ['pad', 19, 1],
  ['slot', 20, 2],
  ['pad2', 22, 2],
]);

/** struct sl_svc_key */
export const svcKeyCodec: StructCodec<SvcKey> = structCodec(SVC_KEY, {
  encode(k, b, o) {
    b.fill(0, o, o + SVC_KEY.size);
    encodeAddr(k.vip, b, o + SVC_KEY.at.vip);
    b.writeUInt16LE(k.port, o + SVC_KEY.at.port);
    b.writeUInt8(k.proto, o + SVC_KEY.at.proto);
    b.writeUInt16LE(k.slot, o + SVC_KEY.at.slot);
  },
  decode(b, o) {
    return {
      vip: decodeAddr(b, o + SVC_KEY.at.vip),
      port: b.readUInt16LE(o + SVC_KEY.at.port),
      proto: b.readUInt8(o + SVC_KEY.at.proto),
      slot: b.readUInt16LE(o + SVC_KEY.at.slot),
    };
  },
});

/** The slot of a raw struct sl_svc_key (0: the service entry itself), without decoding the rest. */
export function svcKeySlot(raw: Buffer, offset = 0): number {
  return raw.readUInt16LE(offset + SVC_KEY.at.slot);
}

export interface SvcVal {
  /** slot 0: service id; slot > 0: backend id */
  id: number;
  /** slot 0: number of backend slots (0: refuse) */
  count: number;
  flags: number;
  affinitySec: number;
}

const SVC_VAL = defineStruct('sl_svc_val', 12, [
  ['id', 0, 4],
  ['count', 4, 2],
  ['flags', 6, 2],
  ['affinity_s', 8, 4],
]);

/** struct sl_svc_val */
export const svcValCodec: StructCodec<SvcVal> = structCodec(SVC_VAL, {
  encode(v, b, o) {
    b.writeUInt32LE(v.id, o + SVC_VAL.at.id);
    b.writeUInt16LE(v.count, o + SVC_VAL.at.count);
    b.writeUInt16LE(v.flags, o + SVC_VAL.at.flags);
    b.writeUInt32LE(v.affinitySec, o + SVC_VAL.at.affinity_s);
  },
  decode(b, o) {
    return {
      id: b.readUInt32LE(o + SVC_VAL.at.id),
      count: b.readUInt16LE(o + SVC_VAL.at.count),
      flags: b.readUInt16LE(o + SVC_VAL.at.flags),
      affinitySec: b.readUInt32LE(o + SVC_VAL.at.affinity_s),
    };
  },
});

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

const BACKEND = defineStruct('sl_backend', 20, [
  ['ip', 0, ADDR.size],
  ['port', 16, 2],
  ['proto', 18, 1],
  ['pad', 19, 1],
]);

/** struct sl_backend */
export const backendCodec: StructCodec<Backend> = structCodec(BACKEND, {
  encode(v, b, o) {
    b.fill(0, o, o + BACKEND.size);
    encodeAddr(v.ip, b, o + BACKEND.at.ip);
    b.writeUInt16LE(v.port, o + BACKEND.at.port);
    b.writeUInt8(v.proto, o + BACKEND.at.proto);
  },
  decode(b, o) {
    return {
      ip: decodeAddr(b, o + BACKEND.at.ip),
      port: b.readUInt16LE(o + BACKEND.at.port),
      proto: b.readUInt8(o + BACKEND.at.proto),
    };
  },
});

export interface AffinityKey {
  netnsCookie: bigint;
  svcId: number;
}

const AFFINITY_KEY = defineStruct('sl_affinity_key', 16, [
  ['netns_cookie', 0, 8],
  ['svc_id', 8, 4],
  ['pad', 12, 4],
]);

/** struct sl_affinity_key */
export const affinityKeyCodec: StructCodec<AffinityKey> = structCodec(AFFINITY_KEY, {
  encode(k, b, o) {
    b.fill(0, o, o + AFFINITY_KEY.size);
    b.writeBigUInt64LE(k.netnsCookie, o + AFFINITY_KEY.at.netns_cookie);
    b.writeUInt32LE(k.svcId, o + AFFINITY_KEY.at.svc_id);
  },
  decode(b, o) {
    return {
      netnsCookie: b.readBigUInt64LE(o + AFFINITY_KEY.at.netns_cookie),
      svcId: b.readUInt32LE(o + AFFINITY_KEY.at.svc_id),
    };
  },
});

export interface AffinityVal {
  lastNs: bigint;
  backendId: number;
}

const AFFINITY_VAL = defineStruct('sl_affinity_val', 16, [
  ['last_ns', 0, 8],
  ['backend_id', 8, 4],
  ['pad', 12, 4],
]);

/** struct sl_affinity_val */
export const affinityValCodec: StructCodec<AffinityVal> = structCodec(AFFINITY_VAL, {
  encode(v, b, o) {
    b.fill(0, o, o + AFFINITY_VAL.size);
    b.writeBigUInt64LE(v.lastNs, o + AFFINITY_VAL.at.last_ns);
    b.writeUInt32LE(v.backendId, o + AFFINITY_VAL.at.backend_id);
  },
  decode(b, o) {
    return { lastNs: b.readBigUInt64LE(o + AFFINITY_VAL.at.last_ns), backendId: b.readUInt32LE(o + AFFINITY_VAL.at.backend_id) };
  },
});

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

const DEAD_KEY = defineStruct('sl_dead_key', 40, [
  ['vip', 0, 16],
  ['backend', 16, 16],
  ['vip_port', 32, 2],
  ['backend_port', 34, 2],
  ['proto', 36, 1],
  ['pad', 37, 3],
]);

/** struct sl_dead_key: the key of sl_lb_sock_dead. */
export const deadKeyCodec: StructCodec<DeadKey> = structCodec(DEAD_KEY, {
  encode(k, b, o) {
    encodeAddr(k.vip, b, o + DEAD_KEY.at.vip);
    encodeAddr(k.backend, b, o + DEAD_KEY.at.backend);
    b.writeUInt16LE(k.vipPort, o + DEAD_KEY.at.vip_port);
    b.writeUInt16LE(k.backendPort, o + DEAD_KEY.at.backend_port);
    b.writeUInt8(k.proto, o + DEAD_KEY.at.proto);
    b.fill(0, o + DEAD_KEY.at.pad, o + DEAD_KEY.size);
  },
  decode(b, o) {
    return {
      vip: decodeAddr(b, o + DEAD_KEY.at.vip),
      backend: decodeAddr(b, o + DEAD_KEY.at.backend),
      vipPort: b.readUInt16LE(o + DEAD_KEY.at.vip_port),
      backendPort: b.readUInt16LE(o + DEAD_KEY.at.backend_port),
      proto: b.readUInt8(o + DEAD_KEY.at.proto),
    };
  },
});

export interface Destroyed {
  /** the backend the socket was connected to */
  peer: string;
  peerPort: number;
  /** the address and port the socket had dialed (a VIP, or a node address for a nodePort) */
  vip: string;
  vipPort: number;
  proto: number;
}

const DESTROYED = defineStruct('sl_destroyed', 40, [
  ['peer', 0, 16],
  ['vip', 16, 16],
  ['peer_port', 32, 2],
  ['vip_port', 34, 2],
  ['proto', 36, 1],
  ['pad', 37, 3],
]);

/** struct sl_destroyed: what the socket-destroy iterators write per socket. */
export const destroyedCodec: StructCodec<Destroyed> = structCodec(DESTROYED, {
  encode(v, b, o) {
    encodeAddr(v.peer, b, o + DESTROYED.at.peer);
    encodeAddr(v.vip, b, o + DESTROYED.at.vip);
    b.writeUInt16LE(v.peerPort, o + DESTROYED.at.peer_port);
    b.writeUInt16LE(v.vipPort, o + DESTROYED.at.vip_port);
    b.writeUInt8(v.proto, o + DESTROYED.at.proto);
    b.fill(0, o + DESTROYED.at.pad, o + DESTROYED.size);
  },
  decode(b, o) {
    return {
      peer: decodeAddr(b, o + DESTROYED.at.peer),
      vip: decodeAddr(b, o + DESTROYED.at.vip),
      peerPort: b.readUInt16LE(o + DESTROYED.at.peer_port),
      vipPort: b.readUInt16LE(o + DESTROYED.at.vip_port),
      proto: b.readUInt8(o + DESTROYED.at.proto),
    };
  },
});

/** struct sl_event, with the numbers as the programs wrote them (src/bpf/event-feed.ts names them). */
export interface EventRecord {
  tsNs: bigint;
  netnsCookie: bigint;
  sockCookie: bigint;
  /** '' when the program left the address zero (unknown, not rewritten) */
  src: string;
  dst: string;
  to: string;
  srcPort: number;
  dstPort: number;
  toPort: number;
  /** enum sl_event_type (EVENT_TYPES) */
  type: number;
  /** enum sl_event_reason (EVENT_REASONS), 0: none */
  reason: number;
  proto: number;
  /** MODE */
  mode: number;
  /** errno, positive; 0: none */
  err: number;
}

const EVENT = defineStruct('sl_event', 88, [
  ['ts_ns', 0, 8],
  ['netns_cookie', 8, 8],
  ['sock_cookie', 16, 8],
  ['src', 24, ADDR.size],
  ['dst', 40, ADDR.size],
  ['to', 56, ADDR.size],
  ['src_port', 72, 2],
  ['dst_port', 74, 2],
  ['to_port', 76, 2],
  ['type', 78, 1],
  ['reason', 79, 1],
  ['proto', 80, 1],
  ['mode', 81, 1],
  ['pad', 82, 2],
  ['err', 84, 4],
]);

function isZeroAddr(b: Buffer, o: number): boolean {
  for (let i = 0; i < ADDR.size; i++) if (b[o + i] !== 0) return false;
  return true;
}

function decodeOptionalAddr(b: Buffer, o: number): string {
  return isZeroAddr(b, o) ? '' : decodeAddr(b, o);
}

function encodeOptionalAddr(ip: string, b: Buffer, o: number): void {
  if (ip === '') b.fill(0, o, o + ADDR.size);
  else encodeAddr(ip, b, o);
}

/** struct sl_event: one datapath decision as the programs queue it in sl_events (bpf/lib/events.h). */
export const eventCodec: StructCodec<EventRecord> = structCodec(EVENT, {
  encode(v, b, o) {
    b.fill(0, o, o + EVENT.size);
    b.writeBigUInt64LE(v.tsNs, o + EVENT.at.ts_ns);
    b.writeBigUInt64LE(v.netnsCookie, o + EVENT.at.netns_cookie);
    b.writeBigUInt64LE(v.sockCookie, o + EVENT.at.sock_cookie);
    encodeOptionalAddr(v.src, b, o + EVENT.at.src);
    encodeOptionalAddr(v.dst, b, o + EVENT.at.dst);
    encodeOptionalAddr(v.to, b, o + EVENT.at.to);
    b.writeUInt16LE(v.srcPort, o + EVENT.at.src_port);
    b.writeUInt16LE(v.dstPort, o + EVENT.at.dst_port);
    b.writeUInt16LE(v.toPort, o + EVENT.at.to_port);
    b.writeUInt8(v.type, o + EVENT.at.type);
    b.writeUInt8(v.reason, o + EVENT.at.reason);
    b.writeUInt8(v.proto, o + EVENT.at.proto);
    b.writeUInt8(v.mode, o + EVENT.at.mode);
    b.writeInt32LE(v.err, o + EVENT.at.err);
  },
  decode(b, o) {
    return {
      tsNs: b.readBigUInt64LE(o + EVENT.at.ts_ns),
      netnsCookie: b.readBigUInt64LE(o + EVENT.at.netns_cookie),
      sockCookie: b.readBigUInt64LE(o + EVENT.at.sock_cookie),
      src: decodeOptionalAddr(b, o + EVENT.at.src),
      dst: decodeOptionalAddr(b, o + EVENT.at.dst),
      to: decodeOptionalAddr(b, o + EVENT.at.to),
      srcPort: b.readUInt16LE(o + EVENT.at.src_port),
      dstPort: b.readUInt16LE(o + EVENT.at.dst_port),
      toPort: b.readUInt16LE(o + EVENT.at.to_port),
      type: b.readUInt8(o + EVENT.at.type),
      reason: b.readUInt8(o + EVENT.at.reason),
      proto: b.readUInt8(o + EVENT.at.proto),
      mode: b.readUInt8(o + EVENT.at.mode),
      err: b.readInt32LE(o + EVENT.at.err),
    };
  },
});

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

const CIDR = defineStruct('sl_cidr', 20, [
  ['addr', 0, ADDR.size],
  ['prefix', 16, 1],
  ['pad', 17, 3],
]);

/** struct sl_cidr: the prefix is over the 16-byte address (IPv4 prefixes stored plus 96). */
export const cidrCodec: StructCodec<Cidr> = structCodec(CIDR, {
  encode(c, b, o) {
    b.fill(0, o, o + CIDR.size);
    encodeAddr(c.ip, b, o + CIDR.at.addr);
    b.writeUInt8(c.ip.includes(':') ? c.prefix : c.prefix + 96, o + CIDR.at.prefix);
  },
  decode(b, o) {
    const ip = decodeAddr(b, o + CIDR.at.addr);
    const raw = b.readUInt8(o + CIDR.at.prefix);
    return { ip, prefix: ip.includes(':') ? raw : raw - 96 };
  },
});

const POLICY = defineStruct('sl_policy', 988, [
  ['mode', 0, 1],
  ['flags', 1, 1],
  ['n_include_cidrs', 2, 1],
  ['n_exclude_cidrs', 3, 1],
  ['n_include_out_ports', 4, 1],
  ['n_exclude_out_ports', 5, 1],
  ['n_include_in_ports', 6, 1],
  ['n_exclude_in_ports', 7, 1],
  ['n_pod_ips', 8, 1],
  ['pad', 9, 3],
  ['outbound_port', 12, 2],
  ['inbound_port', 14, 2],
  ['dns_port', 16, 2],
  ['pad2', 18, 2],
  ['pod_ips', 20, MAX_POD_IPS * ADDR.size],
  ['include_cidrs', 84, MAX_CIDRS * CIDR.size],
  ['exclude_cidrs', 404, MAX_CIDRS * CIDR.size],
  ['include_out_ports', 724, MAX_PORTS * 2],
  ['exclude_out_ports', 788, MAX_PORTS * 2],
  ['include_in_ports', 852, MAX_PORTS * 2],
  ['exclude_in_ports', 916, MAX_PORTS * 2],
  ['proxy_uid', 980, 4],
  ['proxy_gid', 984, 4],
]);

function checkCount(what: string, n: number, max: number): void {
  if (n > max) throw new RangeError(`Cannot encode policy: ${n} ${what}, at most ${max}`);
}

type PolicyList = 'includeCidrs' | 'excludeCidrs' | 'includeOutPorts' | 'excludeOutPorts' | 'includeInPorts' | 'excludeInPorts';

/** Each list of the policy: its array member, count member and bound, for encode and decode alike. */
const POLICY_LISTS: ReadonlyArray<{
  list: PolicyList;
  what: string;
  array: keyof typeof POLICY.at;
  count: keyof typeof POLICY.at;
  max: number;
}> = [
  { list: 'includeCidrs', what: 'included ranges', array: 'include_cidrs', count: 'n_include_cidrs', max: MAX_CIDRS },
  { list: 'excludeCidrs', what: 'excluded ranges', array: 'exclude_cidrs', count: 'n_exclude_cidrs', max: MAX_CIDRS },
  {
    list: 'includeOutPorts',
    what: 'included outbound ports',
    array: 'include_out_ports',
    count: 'n_include_out_ports',
    max: MAX_PORTS,
  },
  {
    list: 'excludeOutPorts',
    what: 'excluded outbound ports',
    array: 'exclude_out_ports',
    count: 'n_exclude_out_ports',
    max: MAX_PORTS,
  },
  {
    list: 'includeInPorts',
    what: 'included inbound ports',
    array: 'include_in_ports',
    count: 'n_include_in_ports',
    max: MAX_PORTS,
  },
  {
    list: 'excludeInPorts',
    what: 'excluded inbound ports',
    array: 'exclude_in_ports',
    count: 'n_exclude_in_ports',
    max: MAX_PORTS,
  },
];

/** struct sl_policy */
export const policyCodec: StructCodec<Policy> = structCodec(POLICY, {
  encode(p, b, o) {
    const at = POLICY.at;
    b.fill(0, o, o + POLICY.size);
    checkCount('pod IPs', p.podIps.length, MAX_POD_IPS);
    for (const l of POLICY_LISTS) checkCount(l.what, p[l.list].length, l.max);
    b.writeUInt8(MODE[p.mode], o + at.mode);
    b.writeUInt8(p.flags, o + at.flags);
    b.writeUInt8(p.podIps.length, o + at.n_pod_ips);
    b.writeUInt16LE(p.outboundPort, o + at.outbound_port);
    b.writeUInt16LE(p.inboundPort, o + at.inbound_port);
    b.writeUInt16LE(p.dnsPort, o + at.dns_port);
    p.podIps.forEach((ip, i) => encodeAddr(ip, b, o + at.pod_ips + ADDR.size * i));
    for (const l of POLICY_LISTS) {
      b.writeUInt8(p[l.list].length, o + at[l.count]);
      if (l.list === 'includeCidrs' || l.list === 'excludeCidrs')
        p[l.list].forEach((c, i) => cidrCodec.encode(c, b, o + at[l.array] + CIDR.size * i));
      else p[l.list].forEach((port, i) => b.writeUInt16LE(port, o + at[l.array] + 2 * i));
    }
    b.writeUInt32LE(p.proxyUid ?? 0, o + at.proxy_uid);
    b.writeUInt32LE(p.proxyGid ?? 0, o + at.proxy_gid);
  },
  decode(b, o) {
    const at = POLICY.at;
    const modeNum = b.readUInt8(o + at.mode);
    const mode = (Object.keys(MODE) as MeshMode[]).find((k) => MODE[k] === modeNum) ?? 'none';
    const cidrs = (count: keyof typeof at, array: keyof typeof at): Cidr[] =>
      Array.from({ length: b.readUInt8(o + at[count]) }, (_, i) => cidrCodec.decode(b, o + at[array] + CIDR.size * i));
    const ports = (count: keyof typeof at, array: keyof typeof at) =>
      Array.from({ length: b.readUInt8(o + at[count]) }, (_, i) => b.readUInt16LE(o + at[array] + 2 * i));
    const proxyUid = b.readUInt32LE(o + at.proxy_uid);
    const proxyGid = b.readUInt32LE(o + at.proxy_gid);
    return {
      mode,
      flags: b.readUInt8(o + at.flags),
      outboundPort: b.readUInt16LE(o + at.outbound_port),
      inboundPort: b.readUInt16LE(o + at.inbound_port),
      dnsPort: b.readUInt16LE(o + at.dns_port),
      podIps: Array.from({ length: b.readUInt8(o + at.n_pod_ips) }, (_, i) => decodeAddr(b, o + at.pod_ips + ADDR.size * i)),
      includeCidrs: cidrs('n_include_cidrs', 'include_cidrs'),
      excludeCidrs: cidrs('n_exclude_cidrs', 'exclude_cidrs'),
      includeOutPorts: ports('n_include_out_ports', 'include_out_ports'),
      excludeOutPorts: ports('n_exclude_out_ports', 'exclude_out_ports'),
      includeInPorts: ports('n_include_in_ports', 'include_in_ports'),
      excludeInPorts: ports('n_exclude_in_ports', 'exclude_in_ports'),
      ...(proxyUid ? { proxyUid } : {}),
      ...(proxyGid ? { proxyGid } : {}),
    };
  },
});

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

export interface EpStats {
  outbound: bigint;
  inbound: bigint;
  proxyBypass: bigint;
  noListener: bigint;
}

const EP_STATS = defineStruct('sl_ep_stats', 32, [
  ['outbound', 0, 8],
  ['inbound', 8, 8],
  ['proxy_bypass', 16, 8],
  ['no_listener', 24, 8],
]);

/** struct sl_ep_stats */
export const epStatsCodec: StructCodec<EpStats> = structCodec(EP_STATS, {
  encode(v, b, o) {
    b.writeBigUInt64LE(v.outbound, o + EP_STATS.at.outbound);
    b.writeBigUInt64LE(v.inbound, o + EP_STATS.at.inbound);
    b.writeBigUInt64LE(v.proxyBypass, o + EP_STATS.at.proxy_bypass);
    b.writeBigUInt64LE(v.noListener, o + EP_STATS.at.no_listener);
  },
  decode(b, o) {
    return {
      outbound: b.readBigUInt64LE(o + EP_STATS.at.outbound),
      inbound: b.readBigUInt64LE(o + EP_STATS.at.inbound),
      proxyBypass: b.readBigUInt64LE(o + EP_STATS.at.proxy_bypass),
      noListener: b.readBigUInt64LE(o + EP_STATS.at.no_listener),
    };
  },
});

export interface OrigdstStat {
  /** captured handshakes in flight on the node (entries of sl_origdst_syn) */
  inFlight: bigint;
  /** captured connects refused (EAGAIN) because inFlight had reached its limit */
  refused: bigint;
}

const ORIGDST_STAT = defineStruct('sl_origdst_stat', 16, [
  ['in_flight', 0, 8],
  ['refused', 8, 8],
]);

/** struct sl_origdst_stat */
export const origdstStatCodec: StructCodec<OrigdstStat> = structCodec(ORIGDST_STAT, {
  encode(v, b, o) {
    b.writeBigUInt64LE(v.inFlight, o + ORIGDST_STAT.at.in_flight);
    b.writeBigUInt64LE(v.refused, o + ORIGDST_STAT.at.refused);
  },
  decode(b, o) {
    return {
      inFlight: b.readBigUInt64LE(o + ORIGDST_STAT.at.in_flight),
      refused: b.readBigUInt64LE(o + ORIGDST_STAT.at.refused),
    };
  },
});

export interface ListenerKey {
  netnsCookie: bigint;
  port: number;
  /** 4 or 6 */
  family: number;
  /** 0 .. LISTENER_SLOTS-1: several processes may listen on one port (SO_REUSEPORT) */
  slot: number;
}

const LISTENER_KEY = defineStruct('sl_listener_key', 16, [
  ['netns_cookie', 0, 8],
  ['port', 8, 2],
  ['family', 10, 1],
  ['slot', 11, 1],
  ['pad2', 12, 4],
]);

/** struct sl_listener_key (keys of the sockhash sl_listeners) */
export const listenerKeyCodec: StructCodec<ListenerKey> = structCodec(LISTENER_KEY, {
  encode(k, b, o) {
    b.fill(0, o, o + LISTENER_KEY.size);
    b.writeBigUInt64LE(k.netnsCookie, o + LISTENER_KEY.at.netns_cookie);
    b.writeUInt16LE(k.port, o + LISTENER_KEY.at.port);
    b.writeUInt8(k.family, o + LISTENER_KEY.at.family);
    b.writeUInt8(k.slot, o + LISTENER_KEY.at.slot);
  },
  decode(b, o) {
    return {
      netnsCookie: b.readBigUInt64LE(o + LISTENER_KEY.at.netns_cookie),
      port: b.readUInt16LE(o + LISTENER_KEY.at.port),
      family: b.readUInt8(o + LISTENER_KEY.at.family),
      slot: b.readUInt8(o + LISTENER_KEY.at.slot),
    };
  },
});

/** Every codec of a struct shared with the programs: what the layout contract test checks. */
export const STRUCT_CODECS: ReadonlyArray<StructCodec<unknown>> = [
  addrCodec,
  svcKeyCodec,
  svcValCodec,
  backendCodec,
  affinityKeyCodec,
  affinityValCodec,
  cidrCodec,
  policyCodec,
  epStatsCodec,
  origdstStatCodec,
  listenerKeyCodec,
  deadKeyCodec,
] as ReadonlyArray<StructCodec<unknown>>;
