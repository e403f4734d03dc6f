/* The decision tests' side of test/bpf: codecs of the inputs and results of decision_io.h (field
 * tables checked against the test objects' BTF), and a loaded test object whose programs run with
 * BPF_PROG_RUN on cases built here, over maps the test fills through the real codecs. Loading
 * attaches nothing: the programs run only when a test runs them.
 */
import * as net from 'node:net';
import * as path from 'node:path';
import { BpfMap, BpfObject, runProgram, type Codec } from '../../src/bpf';
import { SOCK_REV_SLOTS } from '../../src/bpf/constants';
import { addrCodec, u32Codec } from '../../src/bpf/layout';
import { defineStruct, structCodec, type StructCodec } from '../../src/bpf/struct-layout';
import { programSettings, type ProgramSettingsInput } from '../../src/datapath';

export const TEST_OBJECT_DIR = path.resolve(__dirname, '../../build/test/bpf');

export const AF_INET = 2;
export const AF_INET6 = 10;

export interface SockCall {
  netnsCookie: bigint;
  socketCookie?: bigint;
  nowNs?: bigint;
  uid?: number;
  gid?: number;
  random?: number;
  /** the hook's family: AF_INET (connect4/sendmsg4) or AF_INET6 */
  family?: number;
  /** 6 (TCP, default) or 17 (UDP) */
  protocol?: number;
  /** default true: a connect hook; false: sendmsg */
  atConnect?: boolean;
  /** default true: the hook has a socket */
  hasSk?: boolean;
  noStorage?: boolean;
  skMark?: number;
  /** the address the socket is bound to (IPv4 or IPv6), if any */
  boundTo?: string;
  dst: string;
  dport: number;
}

export interface SockResult {
  ret: number;
  /** the errno the decision set through bpf_set_retval (negative), or 0 */
  retval: number;
  dst: string;
  dport: number;
  /** the address it bound the socket to, if it did */
  bound?: string;
}

const SOCK_CALL = defineStruct('t_sock_call', 104, [
  ['netns_cookie', 0, 8],
  ['socket_cookie', 8, 8],
  ['now_ns', 16, 8],
  ['uid', 24, 4],
  ['gid', 28, 4],
  ['random', 32, 4],
  ['family', 36, 4],
  ['protocol', 40, 4],
  ['at_connect', 44, 4],
  ['has_sk', 48, 4],
  ['no_storage', 52, 4],
  ['sk_mark', 56, 4],
  ['sk_src_ip4', 60, 4],
  ['sk_src_ip6', 64, 16],
  ['dst', 80, 16],
  ['dport', 96, 2],
  ['pad', 98, 2],
  ['pad2', 100, 4],
]);

export const sockCallCodec: StructCodec<SockCall> = structCodec(SOCK_CALL, {
  encode(c, b, o) {
    const at = SOCK_CALL.at;
    b.fill(0, o, o + SOCK_CALL.size);
    b.writeBigUInt64LE(c.netnsCookie, o + at.netns_cookie);
    b.writeBigUInt64LE(c.socketCookie ?? 0n, o + at.socket_cookie);
    b.writeBigUInt64LE(c.nowNs ?? 0n, o + at.now_ns);
    b.writeUInt32LE(c.uid ?? 1000, o + at.uid);
    b.writeUInt32LE(c.gid ?? 1000, o + at.gid);
    b.writeUInt32LE(c.random ?? 0, o + at.random);
    b.writeUInt32LE(c.family ?? (net.isIPv6(c.dst) ? AF_INET6 : AF_INET), o + at.family);
    b.writeUInt32LE(c.protocol ?? 6, o + at.protocol);
    b.writeUInt32LE(c.atConnect === false ? 0 : 1, o + at.at_connect);
    b.writeUInt32LE(c.hasSk === false ? 0 : 1, o + at.has_sk);
    b.writeUInt32LE(c.noStorage ? 1 : 0, o + at.no_storage);
    b.writeUInt32LE(c.skMark ?? 0, o + at.sk_mark);
    if (c.boundTo && net.isIPv4(c.boundTo)) c.boundTo.split('.').forEach((x, i) => (b[o + at.sk_src_ip4 + i] = Number(x)));
    if (c.boundTo && net.isIPv6(c.boundTo)) addrCodec.encode(c.boundTo, b, o + at.sk_src_ip6);
    addrCodec.encode(c.dst, b, o + at.dst);
    b.writeUInt16LE(c.dport, o + at.dport);
  },
  decode() {
    throw new Error('t_sock_call is only written');
  },
});

const SOCK_RESULT = defineStruct('t_sock_result', 44, [
  ['ret', 0, 4],
  ['retval', 4, 4],
  ['dst', 8, 16],
  ['dport', 24, 2],
  ['bound', 26, 2],
  ['bound_addr', 28, 16],
]);

export const sockResultCodec: StructCodec<SockResult> = structCodec(SOCK_RESULT, {
  encode() {
    throw new Error('t_sock_result is only read');
  },
  decode(b, o) {
    const at = SOCK_RESULT.at;
    const bound = b.readUInt16LE(o + at.bound) !== 0;
    return {
      ret: b.readInt32LE(o + at.ret),
      retval: b.readInt32LE(o + at.retval),
      dst: addrCodec.decode(b, o + at.dst),
      dport: b.readUInt16LE(o + at.dport),
      ...(bound ? { bound: addrCodec.decode(b, o + at.bound_addr) } : {}),
    };
  },
});

export interface InboundCall {
  local: string;
  remote: string;
  port: number;
  peerPort?: number;
  /** default 2 (eth0 of the pod) */
  ingressIfindex?: number;
}

export interface InboundResult {
  decision: number;
  cookie: bigint;
}

const INBOUND_CALL = defineStruct('t_inbound_call', 40, [
  ['local', 0, 16],
  ['remote', 16, 16],
  ['port', 32, 2],
  ['peer_port', 34, 2],
  ['ingress_ifindex', 36, 4],
]);

export const inboundCallCodec: StructCodec<InboundCall> = structCodec(INBOUND_CALL, {
  encode(c, b, o) {
    const at = INBOUND_CALL.at;
    addrCodec.encode(c.local, b, o + at.local);
    addrCodec.encode(c.remote, b, o + at.remote);
    b.writeUInt16LE(c.port, o + at.port);
    b.writeUInt16LE(c.peerPort ?? 40000, o + at.peer_port);
    b.writeUInt32LE(c.ingressIfindex ?? 2, o + at.ingress_ifindex);
  },
  decode() {
    throw new Error('t_inbound_call is only written');
  },
});

const INBOUND_RESULT = defineStruct('t_inbound_result', 16, [
  ['decision', 0, 4],
  ['pad', 4, 4],
  ['cookie', 8, 8],
]);

export const inboundResultCodec: StructCodec<InboundResult> = structCodec(INBOUND_RESULT, {
  encode() {
    throw new Error('t_inbound_result is only read');
  },
  decode(b, o) {
    return { decision: b.readInt32LE(o + INBOUND_RESULT.at.decision), cookie: b.readBigUInt64LE(o + INBOUND_RESULT.at.cookie) };
  },
});

export interface BypassCall {
  netnsCookie: bigint;
  nodeProxy?: boolean;
  tproxy?: boolean;
  pod: string;
}

const BYPASS_CALL = defineStruct('t_bypass_call', 32, [
  ['netns_cookie', 0, 8],
  ['node_proxy', 8, 4],
  ['tproxy', 12, 4],
  ['pod', 16, 16],
]);

export const bypassCallCodec: StructCodec<BypassCall> = structCodec(BYPASS_CALL, {
  encode(c, b, o) {
    const at = BYPASS_CALL.at;
    b.writeBigUInt64LE(c.netnsCookie, o + at.netns_cookie);
    b.writeUInt32LE(c.nodeProxy ? 1 : 0, o + at.node_proxy);
    b.writeUInt32LE(c.tproxy ? 1 : 0, o + at.tproxy);
    addrCodec.encode(c.pod, b, o + at.pod);
  },
  decode() {
    throw new Error('t_bypass_call is only written');
  },
});

const BYPASS_RESULT = defineStruct('t_bypass_result', 4, [['bypass', 0, 4]]);

export const bypassResultCodec: StructCodec<number> = structCodec(BYPASS_RESULT, {
  encode() {
    throw new Error('t_bypass_result is only read');
  },
  decode(b, o) {
    return b.readInt32LE(o + BYPASS_RESULT.at.bypass);
  },
});

// Structs of shared.h only the programs write (no codec in src/bpf/layout.ts): what the tests put
// into sl_bypass_flows and read from the stand-in socket storage.

export interface FlowKey {
  pod: string;
  peer: string;
  podPort: number;
  peerPort: number;
}

const FLOW_KEY = defineStruct('sl_flow_key', 36, [
  ['pod', 0, 16],
  ['peer', 16, 16],
  ['pod_port', 32, 2],
  ['peer_port', 34, 2],
]);

export const flowKeyCodec: StructCodec<FlowKey> = structCodec(FLOW_KEY, {
  encode(k, b, o) {
    addrCodec.encode(k.pod, b, o + FLOW_KEY.at.pod);
    addrCodec.encode(k.peer, b, o + FLOW_KEY.at.peer);
    b.writeUInt16LE(k.podPort, o + FLOW_KEY.at.pod_port);
    b.writeUInt16LE(k.peerPort, o + FLOW_KEY.at.peer_port);
  },
  decode(b, o) {
    return {
      pod: addrCodec.decode(b, o + FLOW_KEY.at.pod),
      peer: addrCodec.decode(b, o + FLOW_KEY.at.peer),
      podPort: b.readUInt16LE(o + FLOW_KEY.at.pod_port),
      peerPort: b.readUInt16LE(o + FLOW_KEY.at.peer_port),
    };
  },
});

export interface OrigDst {
  addr: string;
  port: number;
  /** 0: none; 1: outbound to the proxy; 2: the proxy to its own pod IP, sent inbound */
  captured: number;
}

const ORIG_DST = defineStruct('sl_orig_dst', 20, [
  ['addr', 0, 16],
  ['port', 16, 2],
  ['captured', 18, 1],
  ['pad', 19, 1],
]);

export const origDstCodec: StructCodec<OrigDst> = structCodec(ORIG_DST, {
  encode(v, b, o) {
    b.fill(0, o, o + ORIG_DST.size);
    addrCodec.encode(v.addr, b, o + ORIG_DST.at.addr);
    b.writeUInt16LE(v.port, o + ORIG_DST.at.port);
    b.writeUInt8(v.captured, o + ORIG_DST.at.captured);
  },
  decode(b, o) {
    return {
      addr: addrCodec.decode(b, o + ORIG_DST.at.addr),
      port: b.readUInt16LE(o + ORIG_DST.at.port),
      captured: b.readUInt8(o + ORIG_DST.at.captured),
    };
  },
});

export interface RevEntry {
  backend: string;
  backendPort: number;
  vip: string;
  vipPort: number;
}

const REV_ENTRY = defineStruct('sl_sock_rev_entry', 36, [
  ['backend', 0, 16],
  ['vip', 16, 16],
  ['backend_port', 32, 2],
  ['vip_port', 34, 2],
]);

export const revEntryCodec: StructCodec<RevEntry> = structCodec(REV_ENTRY, {
  encode(v, b, o) {
    addrCodec.encode(v.backend, b, o + REV_ENTRY.at.backend);
    addrCodec.encode(v.vip, b, o + REV_ENTRY.at.vip);
    b.writeUInt16LE(v.backendPort, o + REV_ENTRY.at.backend_port);
    b.writeUInt16LE(v.vipPort, o + REV_ENTRY.at.vip_port);
  },
  decode(b, o) {
    return {
      backend: addrCodec.decode(b, o + REV_ENTRY.at.backend),
      backendPort: b.readUInt16LE(o + REV_ENTRY.at.backend_port),
      vip: addrCodec.decode(b, o + REV_ENTRY.at.vip),
      vipPort: b.readUInt16LE(o + REV_ENTRY.at.vip_port),
    };
  },
});

const REV_SLOTS = SOCK_REV_SLOTS;

const SOCK_REV = defineStruct('sl_sock_rev', 296, [
  ['next', 0, 4],
  ['used', 4, 4],
  ['e', 8, REV_SLOTS * REV_ENTRY.size],
]);

/** struct sl_sock_rev, its used entries only */
export const sockRevCodec: StructCodec<RevEntry[]> = structCodec(SOCK_REV, {
  encode(list, b, o) {
    b.fill(0, o, o + SOCK_REV.size);
    b.writeUInt32LE(list.length % REV_SLOTS, o + SOCK_REV.at.next);
    b.writeUInt32LE(list.length, o + SOCK_REV.at.used);
    list.forEach((e, i) => revEntryCodec.encode(e, b, o + SOCK_REV.at.e + REV_ENTRY.size * i));
  },
  decode(b, o) {
    const used = Math.min(b.readUInt32LE(o + SOCK_REV.at.used), REV_SLOTS);
    return Array.from({ length: used }, (_, i) => revEntryCodec.decode(b, o + SOCK_REV.at.e + REV_ENTRY.size * i));
  },
});

/** Every codec of this file, for the check of their field tables against the test objects' BTF. */
export const IO_CODECS: ReadonlyArray<StructCodec<unknown>> = [
  sockCallCodec,
  sockResultCodec,
  inboundCallCodec,
  inboundResultCodec,
  bypassCallCodec,
  bypassResultCodec,
  flowKeyCodec,
  origDstCodec,
  revEntryCodec,
  sockRevCodec,
] as ReadonlyArray<StructCodec<unknown>>;

/** The node settings a test object is loaded with, unless the test gives others. */
export const DEFAULT_SETTINGS: ProgramSettingsInput = {
  hostnsOnly: false,
  hostNetnsCookie: 1n,
  proxyUid: 1337,
  proxyGid: 1337,
  dnsServers: [],
  proxyMark: { mark: 0x539, mask: 0xfff },
};

/** An ARRAY map of one entry, the case or the result of a test program. */
function ioMap<T>(obj: BpfObject, name: string, codec: Codec<T>): BpfMap<number, T> {
  return BpfMap.fromFd(name, obj.mapFd(name), u32Codec, codec);
}

/** Zero bytes of a struct's size: clears a result before its program runs. */
function zeros(size: number): Codec<null> {
  return {
    size,
    encode: (_v, b, o) => void b.fill(0, o, o + size),
    decode: () => null,
  };
}

/** A dummy Ethernet frame: tc programs run on a packet, these ones ignore it. */
const FRAME = Buffer.alloc(14);

/** A test object loaded with the node's settings; its maps are its own (nothing is pinned). */
export class DecisionObject {
  private constructor(
    readonly obj: BpfObject,
    readonly file: string,
  ) {}

  /** Loads build/test/bpf/<file> with these settings (every .rodata global it declares is set). */
  static load(file: string, settings: Partial<ProgramSettingsInput> = {}): DecisionObject {
    const obj = BpfObject.open(path.join(TEST_OBJECT_DIR, file));
    try {
      const values = programSettings({ ...DEFAULT_SETTINGS, ...settings });
      for (const v of obj.rodataVars()) {
        const value = values.get(v.name as never);
        if (!value) throw new Error(`${file} declares ${v.name}, which programSettings() has no value for`);
        obj.setRodata(v.name, value);
      }
      obj.load();
      return new DecisionObject(obj, file);
    } catch (e) {
      obj.close();
      throw e;
    }
  }

  /** One of the object's maps through codecs (the real ones for sl_* maps). */
  map<K, V>(name: string, key: Codec<K>, value: Codec<V>): BpfMap<K, V> {
    return BpfMap.fromFd(name, this.obj.mapFd(name), key, value);
  }

  /** Runs a program once on its case: clears its result, writes the case, runs, reads the result. */
  run<C, R>(prog: string, io: { in: string; out: string }, call: C, codecs: { call: Codec<C>; result: Codec<R> }): R {
    ioMap(this.obj, io.out, zeros(codecs.result.size)).set(0, null);
    ioMap(this.obj, io.in, codecs.call).set(0, call);
    const ret = runProgram(this.obj.progFd(prog), `${prog} of ${this.file}`, { data: FRAME });
    if (ret !== 0) throw new Error(`${prog} of ${this.file} returned ${ret}: its input or output map was not found`);
    return ioMap(this.obj, io.out, codecs.result).get(0)!;
  }

  close(): void {
    this.obj.close();
  }
}
