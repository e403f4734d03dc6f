/* Socket-LB's backend selection (lb_translate in bpf/lib/lb.h) run alone with BPF_PROG_RUN
 * (test/bpf/lb_test.c): contexts built here, sl_lb_svc, sl_lb_backend and sl_lb_affinity filled
 * through the agent's codecs, the random number, the clock and the socket cookie given by the
 * test. Nothing is attached.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { possibleCpus } from '../../src/bpf';
import { VERDICT } from '../../src/bpf/constants';
import {
  affinityKeyCodec,
  affinityValCodec,
  backendCodec,
  COUNTERS,
  IPPROTO_TCP,
  IPPROTO_UDP,
  perCpuU64Codec,
  SVC_F_AFFINITY,
  SVC_F_NO_LOCAL,
  svcKeyCodec,
  svcValCodec,
  u32Codec,
  type CounterName,
  type SvcVal,
} from '../../src/bpf/layout';
import {
  DecisionObject,
  sockCallCodec,
  sockResultCodec,
  sockRevCodec,
  type SockCall,
  type SockResult,
} from './decision-programs';

const root = process.getuid?.() === 0;

const VIP = '10.96.0.10';
const VIP6 = 'fd00:96::10';
const POD_NETNS = 4242n;
const HOST_NETNS = 1n; // DEFAULT_SETTINGS.hostNetnsCookie
const SVC_ID = 7;
const ECONNREFUSED = 111;
const SECOND = 1_000_000_000n;
const BACKENDS: Record<number, { ip: string; port: number; proto: number }> = {
  101: { ip: '10.2.0.1', port: 8080, proto: IPPROTO_TCP },
  102: { ip: '10.2.0.2', port: 8080, proto: IPPROTO_TCP },
  103: { ip: 'fd00:2::1', port: 8080, proto: IPPROTO_TCP },
  104: { ip: '10.2.0.4', port: 5353, proto: IPPROTO_UDP },
  105: { ip: '10.2.0.5', port: 5353, proto: IPPROTO_UDP },
};

describe.skipIf(!root)('socket-LB backend selection under BPF_PROG_RUN (needs root: loads programs, attaches nothing)', () => {
  let t: DecisionObject;
  /** the same program loaded with bpf-lb-sock-hostns-only */
  let hostnsOnly: DecisionObject;

  beforeAll(() => {
    t = DecisionObject.load('lb_test.o');
    hostnsOnly = DecisionObject.load('lb_test.o', { hostnsOnly: true });
  });
  afterAll(() => {
    t?.close();
    hostnsOnly?.close();
  });

  function maps(o: DecisionObject) {
    return {
      svc: o.map('sl_lb_svc', svcKeyCodec, svcValCodec),
      backend: o.map('sl_lb_backend', u32Codec, backendCodec),
      affinity: o.map('sl_lb_affinity', affinityKeyCodec, affinityValCodec),
      counters: o.map('sl_lb_counters', u32Codec, perCpuU64Codec(possibleCpus())),
      rev: o.map('t_rev_storage', u32Codec, sockRevCodec),
    };
  }

  /** A service port VIP:port/proto with its backend ids in slots 1..n (entry: slot 0). */
  function service(
    o: DecisionObject,
    vip: string,
    port: number,
    proto: number,
    ids: number[],
    entry: Partial<SvcVal> = {},
  ): void {
    const m = maps(o);
    m.svc.set({ vip, port, proto, slot: 0 }, { id: SVC_ID, count: ids.length, flags: 0, affinitySec: 0, ...entry });
    ids.forEach((id, i) => m.svc.set({ vip, port, proto, slot: i + 1 }, { id, count: 0, flags: 0, affinitySec: 0 }));
  }

  /** Empty maps and counters, the backends in place. */
  function reset(o: DecisionObject): void {
    const m = maps(o);
    for (const map of [m.svc, m.backend, m.affinity] as const)
      for (const k of map.keys() as unknown[]) (map as { delete(k: unknown): boolean }).delete(k);
    for (const [id, be] of Object.entries(BACKENDS)) m.backend.set(Number(id), be);
    COUNTERS.forEach((_, i) => m.counters.set(i, 0n));
  }

  function counters(o = t): Partial<Record<CounterName, number>> {
    const m = maps(o);
    const out: Partial<Record<CounterName, number>> = {};
    COUNTERS.forEach((name, i) => {
      const v = Number(m.counters.get(i) ?? 0n);
      if (v) out[name] = v;
    });
    return out;
  }

  /** One connect (or sendmsg, atConnect false) of a new socket. */
  function translate(call: Partial<SockCall> & Pick<SockCall, 'dst' | 'dport'>, o = t): SockResult {
    maps(o).rev.set(0, []);
    return o.run(
      't_lb_translate',
      { in: 't_sock_in', out: 't_sock_out' },
      { netnsCookie: POD_NETNS, ...call },
      { call: sockCallCodec, result: sockResultCodec },
    );
  }

  const allowed = (dst: string, dport: number) => ({ ret: VERDICT.allow, retval: 0, dst, dport });

  beforeEach(() => {
    reset(t);
    reset(hostnsOnly);
  });

  it('a destination that is no service port is left as it is, and nothing is counted', () => {
    service(t, VIP, 80, IPPROTO_TCP, [101, 102]);
    expect(translate({ dst: VIP, dport: 81 })).toEqual(allowed(VIP, 81));
    expect(translate({ dst: VIP, dport: 80, protocol: IPPROTO_UDP })).toEqual(allowed(VIP, 80));
    expect(translate({ dst: '10.96.0.11', dport: 80 })).toEqual(allowed('10.96.0.11', 80));
    expect(translate({ dst: VIP, dport: 80, protocol: 132 /* SCTP */ })).toEqual(allowed(VIP, 80));
    expect(counters()).toEqual({});
  });

  it('a connect takes the backend of slot (random mod count) + 1, and the socket remembers the VIP behind it', () => {
    service(t, VIP, 80, IPPROTO_TCP, [101, 102]);
    expect(translate({ dst: VIP, dport: 80, random: 0 })).toEqual(allowed('10.2.0.1', 8080));
    expect(maps(t).rev.get(0)).toEqual([{ backend: '10.2.0.1', backendPort: 8080, vip: VIP, vipPort: 80 }]);
    expect(translate({ dst: VIP, dport: 80, random: 1 })).toEqual(allowed('10.2.0.2', 8080));
    expect(translate({ dst: VIP, dport: 80, random: 7 })).toEqual(allowed('10.2.0.2', 8080));
    expect(counters()).toEqual({ translated: 3 });
  });

  it('IPv6 VIPs translate the same way', () => {
    service(t, VIP6, 80, IPPROTO_TCP, [103]);
    expect(translate({ dst: VIP6, dport: 80, random: 12345 })).toEqual(allowed('fd00:2::1', 8080));
  });

  it('no usable backend: refused at once with ECONNREFUSED, counted as no_backend', () => {
    service(t, VIP, 80, IPPROTO_TCP, []);
    expect(translate({ dst: VIP, dport: 80 })).toEqual({ ret: VERDICT.reject, retval: -ECONNREFUSED, dst: VIP, dport: 80 });
    expect(counters()).toEqual({ no_backend: 1 });
  });

  it('no backend on this node (internalTrafficPolicy Local): refused, counted apart as no_local_backend', () => {
    service(t, VIP, 80, IPPROTO_TCP, [], { flags: SVC_F_NO_LOCAL });
    expect(translate({ dst: VIP, dport: 80 })).toEqual({ ret: VERDICT.reject, retval: -ECONNREFUSED, dst: VIP, dport: 80 });
    expect(counters()).toEqual({ no_local_backend: 1 });
  });

  it('a slot or a backend missing (the agent mid-update): left untranslated, counted as slot_miss', () => {
    service(t, VIP, 80, IPPROTO_TCP, [101, 102]);
    maps(t).svc.set({ vip: VIP, port: 80, proto: IPPROTO_TCP, slot: 0 }, { id: SVC_ID, count: 3, flags: 0, affinitySec: 0 });
    expect(translate({ dst: VIP, dport: 80, random: 2 })).toEqual(allowed(VIP, 80));
    maps(t).backend.delete(102);
    expect(translate({ dst: VIP, dport: 80, random: 1 })).toEqual(allowed(VIP, 80));
    expect(counters()).toEqual({ slot_miss: 2 });
  });

  it('sendmsg chooses per flow: one socket keeps its backend whatever the random number, sockets spread over both', () => {
    service(t, VIP, 53, IPPROTO_UDP, [104, 105]);
    const first = translate({ dst: VIP, dport: 53, protocol: IPPROTO_UDP, atConnect: false, socketCookie: 77n, random: 0 });
    for (const random of [1, 2, 3, 99]) {
      expect(translate({ dst: VIP, dport: 53, protocol: IPPROTO_UDP, atConnect: false, socketCookie: 77n, random })).toEqual(
        first,
      );
    }
    const chosen = new Set<string>();
    for (let cookie = 1n; cookie <= 32n; cookie++)
      chosen.add(translate({ dst: VIP, dport: 53, protocol: IPPROTO_UDP, atConnect: false, socketCookie: cookie }).dst);
    expect([...chosen].sort()).toEqual(['10.2.0.4', '10.2.0.5']);
  });

  it('ClientIP affinity: a client namespace keeps its backend while it uses it within the timeout, then chooses again', () => {
    service(t, VIP, 80, IPPROTO_TCP, [101, 102], { flags: SVC_F_AFFINITY, affinitySec: 10 });
    expect(translate({ dst: VIP, dport: 80, random: 0, nowNs: 100n * SECOND })).toEqual(allowed('10.2.0.1', 8080));
    expect(maps(t).affinity.get({ netnsCookie: POD_NETNS, svcId: SVC_ID })).toEqual({ lastNs: 100n * SECOND, backendId: 101 });
    // within 10 s of the last use: the same backend, and the entry is refreshed
    expect(translate({ dst: VIP, dport: 80, random: 1, nowNs: 109n * SECOND })).toEqual(allowed('10.2.0.1', 8080));
    expect(translate({ dst: VIP, dport: 80, random: 1, nowNs: 118n * SECOND })).toEqual(allowed('10.2.0.1', 8080));
    expect(counters()).toEqual({ translated: 3, affinity_hit: 2 });
    // another client namespace has its own entry
    expect(translate({ dst: VIP, dport: 80, random: 1, nowNs: 118n * SECOND, netnsCookie: 9n })).toEqual(
      allowed('10.2.0.2', 8080),
    );
    // more than 10 s after the last use: chosen anew
    expect(translate({ dst: VIP, dport: 80, random: 1, nowNs: 128n * SECOND + 1n })).toEqual(allowed('10.2.0.2', 8080));
    expect(maps(t).affinity.get({ netnsCookie: POD_NETNS, svcId: SVC_ID })).toEqual({
      lastNs: 128n * SECOND + 1n,
      backendId: 102,
    });
  });

  it('ClientIP affinity naming a backend that is gone: chosen anew', () => {
    service(t, VIP, 80, IPPROTO_TCP, [101, 102], { flags: SVC_F_AFFINITY, affinitySec: 10 });
    maps(t).affinity.set({ netnsCookie: POD_NETNS, svcId: SVC_ID }, { lastNs: 100n * SECOND, backendId: 999 });
    expect(translate({ dst: VIP, dport: 80, random: 1, nowNs: 101n * SECOND })).toEqual(allowed('10.2.0.2', 8080));
    expect(counters()).toEqual({ translated: 1 });
  });

  it("bpf-lb-sock-hostns-only: a pod's connect is left to kube-proxy (hostns_skip), the host's is translated", () => {
    service(hostnsOnly, VIP, 80, IPPROTO_TCP, [101]);
    expect(translate({ dst: VIP, dport: 80 }, hostnsOnly)).toEqual(allowed(VIP, 80));
    expect(translate({ dst: VIP, dport: 80, netnsCookie: HOST_NETNS }, hostnsOnly)).toEqual(allowed('10.2.0.1', 8080));
    expect(counters(hostnsOnly)).toEqual({ hostns_skip: 1, translated: 1 });
  });

  it('without socket storage the connect is still translated, counted as no_storage', () => {
    service(t, VIP, 80, IPPROTO_TCP, [101]);
    expect(translate({ dst: VIP, dport: 80, noStorage: true })).toEqual(allowed('10.2.0.1', 8080));
    expect(counters()).toEqual({ translated: 1, no_storage: 1 });
  });
});
