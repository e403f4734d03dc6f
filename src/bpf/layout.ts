/* Encodings of the socket-LB map keys and values: the one TypeScript mirror of bpf/lib/shared.h.
 * Field offsets follow the C structs (little-endian host); test/unit/layout.test.ts checks the
 * sizes against the BTF of the built object and the counter list against the header.
 */
import * as net from 'node:net';
import type { Codec } from './map';

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

export const SVC_F_AFFINITY = 1 << 0;
export const SVC_F_EXTERNAL = 1 << 1;

/** Datapath counters, in the order of enum sl_counter. Never renumber; retire by renaming. */
export const COUNTERS = [
  'translated',
  'no_backend',
  'hostns_skip',
  'slot_miss',
  'rev_translated',
  'affinity_hit',
  'no_storage',
] as const;
export type CounterName = (typeof COUNTERS)[number];

/** Encodes an IPv4 or IPv6 address as the 16 bytes of struct sl_addr (IPv4 mapped). */
export function encodeAddr(ip: string, into: Buffer, offset: number): void {
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
