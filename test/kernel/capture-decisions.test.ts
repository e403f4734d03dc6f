/* The capture decisions of bpf/lib/capture.h run alone with BPF_PROG_RUN (test/bpf/capture_test.c):
 * contexts built here, the real maps filled through the real codecs, the helpers that need a real
 * socket answered by stand-ins. Nothing is attached. Covers each rule of Istio's ISTIO_OUTPUT as
 * capture_sidecar_nat numbers them, what TPROXY mode adds, ambient outbound, DNS, the inbound
 * decision (ISTIO_INBOUND) and the connections inbound capture leaves alone.
 */
import * as net from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CAPTURE_OUTCOME, INBOUND_DECISION, PROXY_PORT, TPROXY_MARK } from '../../src/bpf/constants';
import {
  addrCodec,
  epStatsCodec,
  listenerKeyCodec,
  origdstStatCodec,
  POL_DNS,
  POL_IN_ALL,
  POL_LOOPBACK_RANGE,
  POL_NO_INBOUND,
  POL_OUT_ALL,
  POL_TPROXY,
  policyCodec,
  u32Codec,
  u64Codec,
  u8Codec,
  type EpStats,
  type Policy,
} from '../../src/bpf/layout';
import { layoutMismatches, readObjectBtf } from '../unit/contract/btf';
import {
  bypassCallCodec,
  bypassResultCodec,
  DecisionObject,
  flowKeyCodec,
  inboundCallCodec,
  inboundResultCodec,
  IO_CODECS,
  origDstCodec,
  sockCallCodec,
  sockResultCodec,
  TEST_OBJECT_DIR,
  type BypassCall,
  type InboundCall,
  type OrigDst,
  type SockCall,
  type SockResult,
} from './decision-programs';

const root = process.getuid?.() === 0;

const POD = '10.1.0.5';
const POD6 = 'fd00:1::5';
const COOKIE = 4242n;
const OTHER_NETNS = 777n;
const HOST_NETNS = 1n; // DEFAULT_SETTINGS.hostNetnsCookie
const VIP = '10.96.0.10';
const APP = 1000;
const PROXY = 1337;
const SNAT_PROBES = '169.254.7.127';
/** sl_origdst_syn's size less the room kept for connects in flight (capture_maps.h) */
const HANDSHAKES_ADMIT = 262144 - 4096;
const ZERO_STATS: EpStats = { outbound: 0n, inbound: 0n, proxyBypass: 0n, noListener: 0n };
const { none: NONE, proxy: PROXIED, redirected: REDIRECTED, refused: REFUSED } = CAPTURE_OUTCOME;

function policy(mode: Policy['mode'], flags: number, more: Partial<Policy> = {}): Policy {
  return {
    mode,
    flags,
    outboundPort: PROXY_PORT.outbound,
    inboundPort: PROXY_PORT.inbound,
    dnsPort: 15053,
    podIps: [POD, POD6],
    includeCidrs: [],
    excludeCidrs: [],
    includeOutPorts: [],
    excludeOutPorts: [],
    includeInPorts: [],
    excludeInPorts: [],
    ...more,
  };
}

/** The kernel's view after one call: the decision, and what it left in the socket storage and the pod's counters. */
interface Outcome extends SockResult {
  storage: OrigDst;
  stats: EpStats;
}

describe.skipIf(!root)('capture decisions under BPF_PROG_RUN (needs root: loads programs, attaches nothing)', () => {
  let t: DecisionObject;
  /** the same programs loaded with mesh-dns-servers naming one resolver */
  let withResolver: DecisionObject;

  beforeAll(() => {
    t = DecisionObject.load('capture_test.o');
    withResolver = DecisionObject.load('capture_test.o', { dnsServers: [VIP] });
  });
  afterAll(() => {
    t?.close();
    withResolver?.close();
  });

  function maps(o: DecisionObject) {
    return {
      endpoints: o.map('sl_endpoints', u64Codec, policyCodec),
      podIps: o.map('sl_pod_ips', addrCodec, u64Codec),
      stats: o.map('sl_ep_stats', u64Codec, epStatsCodec),
      origdstStat: o.map('sl_origdst_stat', u32Codec, origdstStatCodec),
      storage: o.map('t_cap_storage', u32Codec, origDstCodec),
      bypassFlows: o.map('sl_bypass_flows', flowKeyCodec, u8Codec),
      listeners: o.map('sl_listeners', listenerKeyCodec, u64Codec),
    };
  }

  /** The pod COOKIE with this policy, nothing else: no counters, no storage, no handshakes in flight. */
  function enrol(p: Policy | undefined, o = t): void {
    const m = maps(o);
    for (const k of m.endpoints.keys()) m.endpoints.delete(k);
    for (const k of m.podIps.keys()) m.podIps.delete(k);
    for (const k of m.bypassFlows.keys()) m.bypassFlows.delete(k);
    if (p) {
      m.endpoints.set(COOKIE, p);
      for (const ip of p.podIps) m.podIps.set(ip, COOKIE);
    }
    m.stats.set(COOKIE, ZERO_STATS);
    m.origdstStat.set(0, { inFlight: 0n, refused: 0n });
    m.storage.set(0, { addr: '::', port: 0, captured: 0 });
  }

  /** One socket call; each is a new socket (its storage starts empty), the pod's counters add up. */
  function connect(call: Partial<SockCall> & Pick<SockCall, 'dst' | 'dport'>, o = t): Outcome {
    maps(o).storage.set(0, { addr: '::', port: 0, captured: 0 });
    const r = o.run(
      't_capture_connect',
      { in: 't_sock_in', out: 't_sock_out' },
      { netnsCookie: COOKIE, uid: APP, gid: APP, ...call },
      { call: sockCallCodec, result: sockResultCodec },
    );
    const m = maps(o);
    return { ...r, storage: m.storage.get(0)!, stats: m.stats.get(COOKIE)! };
  }

  const loopback = (dst: string) => (net.isIPv6(dst) ? '::1' : '127.0.0.1');
  /** What a connect sent to the proxy's `port` looks like, the original destination kept in the socket. */
  const redirectedTo = (port: number, dst: string, dport: number, captured: 1 | 2) => ({
    ret: REDIRECTED,
    dst: loopback(dst),
    dport: port,
    storage: { addr: dst, port: dport, captured },
  });
  const untouched = (ret: number, dst: string, dport: number) => ({
    ret,
    dst,
    dport,
    storage: { addr: '::', port: 0, captured: 0 },
  });

  it('the test codecs match the test objects (decision_io.h and the kernel-only structs they read)', () => {
    for (const file of ['capture_test.o', 'lb_test.o']) {
      const btf = readObjectBtf(`${TEST_OBJECT_DIR}/${file}`);
      for (const c of IO_CODECS) {
        const s = btf.structs.get(c.layout.name);
        if (s) expect(layoutMismatches(c.layout, s), `${file} ${c.layout.name}`).toEqual([]);
      }
    }
  });

  describe('sidecar outbound: ISTIO_OUTPUT in its order', () => {
    const ALL_OUT = policy('sidecar', POL_OUT_ALL | POL_IN_ALL, {
      excludeOutPorts: [9999],
      excludeCidrs: [{ ip: '10.200.0.0', prefix: 16 }],
    });

    beforeEach(() => enrol(ALL_OUT));

    it('an app connect goes to 15001 on loopback, from the pod IP, its destination kept in the socket (IPv4 and IPv6)', () => {
      expect(connect({ dst: VIP, dport: 80 })).toMatchObject({
        ...redirectedTo(15001, VIP, 80, 1),
        bound: POD,
        stats: { outbound: 1n },
      });
      enrol(ALL_OUT);
      expect(connect({ dst: 'fd00:96::10', dport: 80 })).toMatchObject({
        ...redirectedTo(15001, 'fd00:96::10', 80, 1),
        bound: POD6,
      });
    });

    it('no bind at sendmsg, nor for a socket the app bound itself', () => {
      expect(connect({ dst: VIP, dport: 80, atConnect: false })).toMatchObject({ ret: REDIRECTED, dport: 15001 });
      expect(connect({ dst: VIP, dport: 80, atConnect: false }).bound).toBeUndefined();
      expect(connect({ dst: VIP, dport: 80, boundTo: '10.1.0.77' }).bound).toBeUndefined();
    });

    it('1: an excluded outbound port is left alone, even for the proxy to its own pod', () => {
      expect(connect({ dst: VIP, dport: 9999 })).toMatchObject(untouched(NONE, VIP, 9999));
      expect(connect({ dst: POD, dport: 9999, uid: PROXY })).toMatchObject(untouched(NONE, POD, 9999));
    });

    it("2: to a local address from a socket bound to 127.0.0.6 / ::6 (Envoy's inbound passthrough): left alone", () => {
      expect(connect({ dst: POD, dport: 8080, uid: PROXY, boundTo: '127.0.0.6' })).toMatchObject(untouched(NONE, POD, 8080));
      expect(connect({ dst: POD6, dport: 8080, uid: PROXY, boundTo: '::6' })).toMatchObject(untouched(NONE, POD6, 8080));
    });

    it('3: the proxy uid to its own pod IP goes to the inbound port 15006, except 127.0.0.1 and port 15008', () => {
      expect(connect({ dst: POD, dport: 8080, uid: PROXY })).toMatchObject(redirectedTo(15006, POD, 8080, 2));
      enrol(ALL_OUT);
      expect(connect({ dst: '127.0.0.1', dport: 8080, uid: PROXY })).toMatchObject(untouched(PROXIED, '127.0.0.1', 8080));
      expect(connect({ dst: POD, dport: 15008, uid: PROXY })).toMatchObject(untouched(PROXIED, POD, 15008));
    });

    it('4: another uid to a local address returns: the pod IP and loopback stay local', () => {
      expect(connect({ dst: POD, dport: 8080 })).toMatchObject(untouched(NONE, POD, 8080));
      expect(connect({ dst: '127.0.0.1', dport: 8080 })).toMatchObject(untouched(NONE, '127.0.0.1', 8080));
      expect(connect({ dst: '::1', dport: 8080, family: 10 })).toMatchObject(untouched(NONE, '::1', 8080));
    });

    it('5: the proxy uid elsewhere is not captured (socket-LB then applies), and counted', () => {
      expect(connect({ dst: VIP, dport: 80, uid: PROXY })).toMatchObject({
        ...untouched(PROXIED, VIP, 80),
        stats: { proxyBypass: 1n, outbound: 0n },
      });
    });

    it('6 and 8: the proxy gid with another uid: to its pod IP it meets rule 4 first, unless a range covers loopback; elsewhere not captured', () => {
      expect(connect({ dst: POD, dport: 8080, gid: PROXY })).toMatchObject(untouched(NONE, POD, 8080));
      expect(connect({ dst: VIP, dport: 80, gid: PROXY })).toMatchObject({
        ...untouched(PROXIED, VIP, 80),
        stats: { proxyBypass: 1n },
      });
      enrol({ ...ALL_OUT, flags: ALL_OUT.flags | POL_LOOPBACK_RANGE });
      expect(connect({ dst: POD, dport: 8080, gid: PROXY })).toMatchObject(redirectedTo(15006, POD, 8080, 2));
    });

    it("the pod's own proxy uid and gid win over the node's", () => {
      enrol({ ...ALL_OUT, proxyUid: 2000, proxyGid: 2001 });
      expect(connect({ dst: VIP, dport: 80, uid: 2000 })).toMatchObject({ ret: PROXIED });
      expect(connect({ dst: VIP, dport: 80, gid: 2001 })).toMatchObject({ ret: PROXIED });
      expect(connect({ dst: VIP, dport: 80, uid: PROXY })).toMatchObject({ ret: REDIRECTED, dport: 15001 });
    });

    it("9: with DNS capture, TCP 53 goes to 15053 (the uid's rule 3 excepts it, the gid's rule 6 does not)", () => {
      enrol({ ...ALL_OUT, flags: ALL_OUT.flags | POL_DNS });
      expect(connect({ dst: VIP, dport: 53 })).toMatchObject(redirectedTo(15053, VIP, 53, 1));
      enrol({ ...ALL_OUT, flags: ALL_OUT.flags | POL_DNS });
      expect(connect({ dst: POD, dport: 53 })).toMatchObject(redirectedTo(15053, POD, 53, 1));
      enrol({ ...ALL_OUT, flags: ALL_OUT.flags | POL_DNS });
      expect(connect({ dst: POD, dport: 53, uid: PROXY })).toMatchObject(untouched(PROXIED, POD, 53));
      expect(connect({ dst: POD, dport: 53, gid: PROXY })).toMatchObject(redirectedTo(15006, POD, 53, 2));
    });

    it('9: without DNS capture, TCP 53 to the pod stays local (rule 4) and elsewhere goes to 15001', () => {
      expect(connect({ dst: POD, dport: 53 })).toMatchObject(untouched(NONE, POD, 53));
      expect(connect({ dst: VIP, dport: 53 })).toMatchObject({ ret: REDIRECTED, dport: 15001 });
    });

    it('9: mesh-dns-servers limits DNS capture to the resolvers it names', () => {
      enrol({ ...ALL_OUT, flags: ALL_OUT.flags | POL_DNS }, withResolver);
      expect(connect({ dst: VIP, dport: 53 }, withResolver)).toMatchObject({ ret: REDIRECTED, dport: 15053 });
      expect(connect({ dst: '8.8.8.8', dport: 53 }, withResolver)).toMatchObject({ ret: REDIRECTED, dport: 15001 });
    });

    it('10 with a range covering loopback (rules 4 and 7 dropped): 127.0.0.1 returns, the rest of 127/8 is captured', () => {
      enrol({ ...ALL_OUT, flags: ALL_OUT.flags | POL_LOOPBACK_RANGE });
      expect(connect({ dst: '127.0.0.1', dport: 8080 })).toMatchObject(untouched(NONE, '127.0.0.1', 8080));
      const other = connect({ dst: '127.0.0.2', dport: 8080 });
      expect(other).toMatchObject(redirectedTo(15001, '127.0.0.2', 8080, 1));
      expect(other.bound).toBeUndefined(); // a loopback destination keeps a loopback source
    });

    it('11: an excluded range returns', () => {
      expect(connect({ dst: '10.200.3.4', dport: 80 })).toMatchObject(untouched(NONE, '10.200.3.4', 80));
    });

    it('12 and 13 without "*": included ports and included ranges are captured, nothing else', () => {
      enrol(
        policy('sidecar', POL_IN_ALL, {
          includeOutPorts: [3306],
          includeCidrs: [{ ip: '10.96.0.0', prefix: 12 }],
          excludeCidrs: [{ ip: '10.200.0.0', prefix: 16 }],
        }),
      );
      expect(connect({ dst: '192.168.1.1', dport: 3306 })).toMatchObject({ ret: REDIRECTED, dport: 15001 });
      expect(connect({ dst: VIP, dport: 80 })).toMatchObject({ ret: REDIRECTED, dport: 15001 });
      expect(connect({ dst: '192.168.1.1', dport: 80 })).toMatchObject(untouched(NONE, '192.168.1.1', 80));
      expect(connect({ dst: '10.200.0.1', dport: 3306 })).toMatchObject({ ret: NONE }); // 11 before 12
    });

    it("TPROXY mode: the proxy's own connect to a local address nat left alone reaches 15006, unless marked 1337 or from 127.0.0.6", () => {
      const tproxy = policy('sidecar', POL_OUT_ALL | POL_IN_ALL | POL_TPROXY, { excludeOutPorts: [8080] });
      enrol(tproxy);
      expect(connect({ dst: POD, dport: 8080, uid: PROXY })).toMatchObject(redirectedTo(15006, POD, 8080, 2));
      enrol(tproxy);
      expect(connect({ dst: POD, dport: 8080, uid: PROXY, skMark: TPROXY_MARK })).toMatchObject(untouched(NONE, POD, 8080));
      expect(connect({ dst: POD, dport: 8080, uid: PROXY, boundTo: '127.0.0.6' })).toMatchObject(untouched(NONE, POD, 8080));
      expect(connect({ dst: POD, dport: 15008, uid: PROXY })).toMatchObject(untouched(PROXIED, POD, 15008)); // not an inbound port
      enrol({ ...tproxy, flags: POL_OUT_ALL | POL_IN_ALL });
      expect(connect({ dst: POD, dport: 8080, uid: PROXY })).toMatchObject(untouched(NONE, POD, 8080)); // REDIRECT mode
    });

    it('a pod without a policy, or with mode none, is not captured', () => {
      enrol(undefined);
      expect(connect({ dst: VIP, dport: 80 })).toMatchObject(untouched(NONE, VIP, 80));
      enrol(policy('none', 0));
      expect(connect({ dst: VIP, dport: 80 })).toMatchObject(untouched(NONE, VIP, 80));
    });

    it('with every captured handshake slot taken, a connect to be captured is refused at once and counted', () => {
      maps(t).origdstStat.set(0, { inFlight: BigInt(HANDSHAKES_ADMIT), refused: 0n });
      expect(connect({ dst: VIP, dport: 80 })).toMatchObject(untouched(REFUSED, VIP, 80));
      expect(maps(t).origdstStat.get(0)).toEqual({ inFlight: BigInt(HANDSHAKES_ADMIT), refused: 1n });
      maps(t).origdstStat.set(0, { inFlight: BigInt(HANDSHAKES_ADMIT - 1), refused: 0n });
      expect(connect({ dst: VIP, dport: 80 })).toMatchObject({ ret: REDIRECTED });
    });

    it('without socket storage, or without a socket, nothing is redirected (the destination would be lost)', () => {
      expect(connect({ dst: VIP, dport: 80, noStorage: true })).toMatchObject(untouched(NONE, VIP, 80));
      expect(connect({ dst: VIP, dport: 80, hasSk: false })).toMatchObject(untouched(NONE, VIP, 80));
    });

    it("UDP DNS: an app query goes to 15053, the proxy's and excluded ones do not, other ports never", () => {
      enrol({ ...ALL_OUT, flags: ALL_OUT.flags | POL_DNS });
      expect(connect({ dst: VIP, dport: 53, protocol: 17 })).toMatchObject({
        ret: REDIRECTED,
        dst: '127.0.0.1',
        dport: 15053,
        stats: { outbound: 1n },
      });
      expect(connect({ dst: VIP, dport: 53, protocol: 17, uid: PROXY })).toMatchObject({ ret: PROXIED, dst: VIP, dport: 53 });
      expect(connect({ dst: VIP, dport: 5353, protocol: 17 })).toMatchObject({ ret: NONE, dst: VIP, dport: 5353 });
      enrol({ ...ALL_OUT, flags: ALL_OUT.flags | POL_DNS, excludeOutPorts: [53] });
      expect(connect({ dst: VIP, dport: 53, protocol: 17 })).toMatchObject({ ret: NONE, dst: VIP, dport: 53 });
      enrol(ALL_OUT);
      expect(connect({ dst: VIP, dport: 53, protocol: 17 })).toMatchObject({ ret: NONE, dst: VIP, dport: 53 });
    });
  });

  describe('ambient outbound', () => {
    const AMBIENT = policy('ambient', POL_DNS);

    beforeEach(() => enrol(AMBIENT));

    it("the node proxy's marked sockets (mark under mask) are not captured, and counted", () => {
      expect(connect({ dst: VIP, dport: 80, skMark: 0x539 })).toMatchObject({
        ...untouched(PROXIED, VIP, 80),
        stats: { proxyBypass: 1n },
      });
      expect(connect({ dst: VIP, dport: 80, skMark: 0x1539 })).toMatchObject({ ret: PROXIED });
    });

    it('anything but the pod itself goes to 15001; without a listener there it still does (fail closed), counted', () => {
      expect(connect({ dst: VIP, dport: 80 })).toMatchObject({
        ...redirectedTo(15001, VIP, 80, 1),
        bound: POD,
        stats: { outbound: 1n, noListener: 1n },
      });
      enrol(AMBIENT);
      expect(connect({ dst: POD, dport: 8080 })).toMatchObject(untouched(NONE, POD, 8080));
      expect(connect({ dst: '127.0.0.1', dport: 8080 })).toMatchObject(untouched(NONE, '127.0.0.1', 8080));
    });

    it('a listener of the proxy in the pod (any slot, or an IPv6 one for IPv4) means nothing is counted missing', async () => {
      const server = net.createServer();
      await new Promise<void>((resolve) => server.listen(0, '::1', resolve));
      try {
        const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
        const listeners = maps(t).listeners;
        listeners.set({ netnsCookie: COOKIE, port: PROXY_PORT.outbound, family: 6, slot: 2 }, BigInt(fd));
        try {
          expect(connect({ dst: VIP, dport: 80 })).toMatchObject({ ret: REDIRECTED, stats: { outbound: 1n, noListener: 0n } });
        } finally {
          for (const k of listeners.keys()) listeners.delete(k);
        }
      } finally {
        server.close();
      }
    });

    it('DNS: TCP 53 goes to 15053 unless to 127.0.0.1; UDP 53 too, unless to the pod or from the proxy', () => {
      expect(connect({ dst: VIP, dport: 53 })).toMatchObject(redirectedTo(15053, VIP, 53, 1));
      enrol(AMBIENT);
      expect(connect({ dst: '127.0.0.1', dport: 53 })).toMatchObject(untouched(NONE, '127.0.0.1', 53));
      expect(connect({ dst: VIP, dport: 53, protocol: 17 })).toMatchObject({ ret: REDIRECTED, dst: '127.0.0.1', dport: 15053 });
      expect(connect({ dst: POD, dport: 53, protocol: 17 })).toMatchObject({ ret: NONE, dst: POD, dport: 53 });
      expect(connect({ dst: VIP, dport: 53, protocol: 17, skMark: 0x539 })).toMatchObject({ ret: PROXIED, dst: VIP, dport: 53 });
    });
  });

  describe('inbound: ISTIO_INBOUND at sk_lookup', () => {
    const PEER = '10.1.0.9';

    function inbound(call: InboundCall): { decision: number; cookie: bigint } {
      return t.run('t_capture_inbound', { in: 't_inbound_in', out: 't_inbound_out' }, call, {
        call: inboundCallCodec,
        result: inboundResultCodec,
      });
    }
    const STEER = { decision: INBOUND_DECISION.steer, cookie: COOKIE };
    const PASS = { decision: INBOUND_DECISION.pass, cookie: 0n };

    it("a sidecar pod: every port but the excluded and the proxy's own goes to its inbound listener", () => {
      enrol(policy('sidecar', POL_IN_ALL, { excludeInPorts: [9090] }));
      expect(inbound({ local: POD, remote: PEER, port: 8080 })).toEqual(STEER);
      expect(inbound({ local: POD6, remote: 'fd00:1::9', port: 8080 })).toEqual(STEER);
      expect(inbound({ local: POD, remote: PEER, port: 9090 })).toEqual(PASS);
      for (const port of [15001, 15006, 15008, 15020, 15021, 15090])
        expect(inbound({ local: POD, remote: PEER, port }), `port ${port}`).toEqual(PASS);
    });

    it('a list of included ports is taken as it is', () => {
      enrol(policy('sidecar', 0, { includeInPorts: [8080] }));
      expect(inbound({ local: POD, remote: PEER, port: 8080 })).toEqual(STEER);
      expect(inbound({ local: POD, remote: PEER, port: 8081 })).toEqual(PASS);
    });

    it('connections from the pod itself pass: from lo, from loopback, from ::6, from its own IP', () => {
      enrol(policy('sidecar', POL_IN_ALL));
      expect(inbound({ local: POD, remote: PEER, port: 8080, ingressIfindex: 1 })).toEqual(PASS);
      expect(inbound({ local: POD, remote: '127.0.0.1', port: 8080 })).toEqual(PASS);
      expect(inbound({ local: POD6, remote: '::6', port: 8080 })).toEqual(PASS);
      expect(inbound({ local: POD, remote: POD, port: 8080 })).toEqual(PASS);
    });

    it('a flow recorded in sl_bypass_flows passes, the same peer on another port does not', () => {
      enrol(policy('sidecar', POL_IN_ALL));
      maps(t).bypassFlows.set({ pod: POD, peer: PEER, podPort: 8080, peerPort: 40000 }, 1);
      expect(inbound({ local: POD, remote: PEER, port: 8080, peerPort: 40000 })).toEqual(PASS);
      expect(inbound({ local: POD, remote: PEER, port: 8080, peerPort: 40001 })).toEqual(STEER);
    });

    it('not a pod, loopback, or a pod that is not captured: passes', () => {
      enrol(policy('sidecar', POL_IN_ALL));
      expect(inbound({ local: '10.9.9.9', remote: PEER, port: 8080 })).toEqual(PASS);
      expect(inbound({ local: '127.0.0.1', remote: PEER, port: 8080 })).toEqual(PASS);
      enrol(policy('none', POL_IN_ALL));
      expect(inbound({ local: POD, remote: PEER, port: 8080 })).toEqual(PASS);
    });

    it("an ambient pod: all but HBONE 15008, Istio's probe SNAT address, and pods that bypass inbound capture", () => {
      enrol(policy('ambient', 0));
      expect(inbound({ local: POD, remote: PEER, port: 8080 })).toEqual(STEER);
      expect(inbound({ local: POD, remote: PEER, port: 15008 })).toEqual(PASS);
      expect(inbound({ local: POD, remote: SNAT_PROBES, port: 8080 })).toEqual(PASS);
      enrol(policy('ambient', POL_NO_INBOUND));
      expect(inbound({ local: POD, remote: PEER, port: 8080 })).toEqual(PASS);
    });
  });

  describe('connections inbound capture leaves alone (sockops records them)', () => {
    function bypass(call: BypassCall): number {
      return t.run('t_capture_bypass', { in: 't_bypass_in', out: 't_bypass_out' }, call, {
        call: bypassCallCodec,
        result: bypassResultCodec,
      });
    }

    it("ambient: the node's own sockets, and the node proxy's marked ones from the pod itself", () => {
      enrol(policy('ambient', 0));
      expect(bypass({ netnsCookie: HOST_NETNS, pod: POD })).toBe(1);
      expect(bypass({ netnsCookie: COOKIE, nodeProxy: true, pod: POD })).toBe(1);
      expect(bypass({ netnsCookie: OTHER_NETNS, nodeProxy: true, pod: POD })).toBe(0);
      expect(bypass({ netnsCookie: COOKIE, tproxy: true, pod: POD })).toBe(0);
      expect(bypass({ netnsCookie: OTHER_NETNS, pod: POD })).toBe(0);
    });

    it("sidecar in TPROXY mode: Envoy's marked hand-off from the pod itself, nothing from the node", () => {
      enrol(policy('sidecar', POL_IN_ALL | POL_TPROXY));
      expect(bypass({ netnsCookie: COOKIE, tproxy: true, pod: POD })).toBe(1);
      expect(bypass({ netnsCookie: HOST_NETNS, pod: POD })).toBe(0);
      expect(bypass({ netnsCookie: COOKIE, nodeProxy: true, pod: POD })).toBe(0);
      enrol(policy('sidecar', POL_IN_ALL));
      expect(bypass({ netnsCookie: COOKIE, tproxy: true, pod: POD })).toBe(0);
    });

    it('an address that is no captured pod', () => {
      enrol(policy('ambient', 0));
      expect(bypass({ netnsCookie: HOST_NETNS, pod: '10.9.9.9' })).toBe(0);
    });
  });
});
