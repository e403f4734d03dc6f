/* Istio's own iptables rules and sluice give the proxy the same original destinations for the same
 * connections.
 *
 * One mesh env, two meshed pods with the same stand-in sidecar (sl-probe sidecar --forward, uid/gid
 * 1337) and the same app servers (8080 on the pod IPs, 9099 on 127.0.0.1 and ::1):
 *  - S is enrolled by sluice (sidecar.istio.io/status plus the case's traffic annotations);
 *  - I is not enrolled (no status annotation: mode=none) and gets the rules istio-iptables writes
 *    for the same options (./istio-iptables.ts). Every process of I runs OUTSIDE the test cgroup,
 *    so no sluice program touches it (socket-LB would otherwise translate a VIP before iptables
 *    sees it); the client pod connecting to I does too.
 * Each connection of the matrix runs once against S and once against I, with the pod-specific
 * addresses substituted, and what the proxy saw is compared: whether the connection reached the
 * proxy at all (or went direct: answeredBy, or failed: errno), the listener it arrived on (`via`)
 * and SO_ORIGINAL_DST (`orig`), and what the proxy's forwarded connection reached. Addresses are
 * written symbolically (self, be1, VIP, ...) so S's and I's pod addresses compare equal.
 *
 * Known, accepted difference, left out of the comparison on purpose: under REDIRECT the accepted
 * socket's local address is the proxy's port (POD:15006, 127.0.0.1:15001, ...), while sluice keeps
 * the original destination as the local address. `local` is therefore not compared; `orig` is.
 * A VIP is only reachable with socket-LB, which I does not have: for VIP destinations only the
 * captured/not-captured outcome and via/orig are compared.
 *
 * One deliberate deviation, asserted as sluice's own outcome (`deviation`): inbound to the
 * sidecar's outbound port 15001 is never steered to 15006 (Istio's chain would). The suite first
 * found four real differences (excluded ranges before included ports; a loopback include range;
 * excludeInboundPorts with a port list; inbound 15000), all fixed in bpf/ since.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SimPod } from '../harness';
import { describePolicy, sidecarPolicy } from '../../src/mesh/sidecar-policy';
import { applyIstioRules, istioAnnotations, type IstioCaptureOpts } from './istio-iptables';
import { PROBE, serviceYaml, sliceYaml, stopAgent, TCP_PORT, waitForBackends, writeObjects, type ProbeResult } from './lb-env';
import { addMeshPod, createMeshEnv, endpoint, sidecarReply, startApp, updatePodObject, type MeshEnv } from './mesh-env';

const VIP = '10.96.0.10';
const VIP6 = 'fd00:96::10';
const STATUS = { 'sidecar.istio.io/status': '{"initContainers":null,"containers":["istio-proxy"]}' };
const LOCAL_PORT = 9099; // the app also listens on 127.0.0.1 / ::1 here

type Side = 'S' | 'I';

interface Conn {
  name: string;
  /** from the pod's app (default) or from the env's client pod (inbound) */
  from?: 'app' | 'client';
  /** destination: a symbolic name (self, self6, be1, be16, be2, VIP, VIP6, lo, lo6) */
  to: string;
  port: number;
  uid?: number;
  gid?: number;
  /** bind the client socket to this address first (127.0.0.6 / ::6: Envoy's passthrough source) */
  bind?: string;
  /** what Istio's rules do (checked on I): "<via> <orig> > <forwarded to>", "direct <who>", "fail <errno>" */
  want: string;
  /** a deliberate difference from Istio's rules: why, and sluice's own expected outcome */
  deviation?: { why: string; sluice: string };
}

interface Group {
  name: string;
  /** the options, given the first backend pod (some ranges name its address) */
  opts: (be1: SimPod) => IstioCaptureOpts;
  cases: Conn[];
}

interface Row {
  group: string;
  conn: Conn;
  s: string;
  i: string;
  sKey: string;
  iKey: string;
}

// --- the matrix ---

const inbound = (to: string, port: number, want: string, extra: Partial<Conn> = {}): Conn => ({ name: `inbound from client to ${to}:${port}`, from: 'client', to, port, want, ...extra });

const DEFAULT_CASES: Conn[] = [
  { name: 'app to a VIP', to: 'VIP', port: 80, want: 'out VIP:80' },
  { name: 'app to another pod IP', to: 'be1', port: TCP_PORT, want: 'out be1:8080 > be1' },
  { name: 'app to 127.0.0.1 (app listening there)', to: 'lo', port: LOCAL_PORT, want: 'direct app' },
  { name: 'app to its own pod IP', to: 'self', port: 8080, want: 'direct app' },
  { name: 'uid 1337 to a backend pod IP', to: 'be1', port: TCP_PORT, uid: 1337, want: 'direct be1' },
  { name: 'uid 1337 to its own pod IP (inbound redirect)', to: 'self', port: 8080, uid: 1337, want: 'in self:8080 > app' },
  { name: 'uid 1337 to 127.0.0.1', to: 'lo', port: LOCAL_PORT, uid: 1337, want: 'direct app' },
  { name: 'uid 1337 to its own pod IP:15008 (HBONE, not redirected)', to: 'self', port: 15008, uid: 1337, want: 'fail 111' },
  { name: 'uid 1337 to 127.0.0.2 (loopback, not 127.0.0.1)', to: '127.0.0.2', port: LOCAL_PORT, uid: 1337, want: 'in 127.0.0.2:9099 > ERR:111' },
  { name: "uid 1337 to its own pod IP:15006 (the proxy's inbound port)", to: 'self', port: 15006, uid: 1337, want: 'in self:15006 > ERR:40' },
  { name: 'gid 1337 only to a backend pod IP', to: 'be1', port: TCP_PORT, gid: 1337, want: 'direct be1' },
  { name: 'gid 1337 only to a VIP', to: 'VIP', port: 80, gid: 1337, want: 'not captured' },
  { name: 'gid 1337 only to its own pod IP', to: 'self', port: 8080, gid: 1337, want: 'direct app' },
  { name: 'from 127.0.0.6 to its own pod IP', to: 'self', port: 8080, bind: '127.0.0.6', want: 'direct app' },
  inbound('self', 8080, 'in self:8080 > app'),
  inbound('self', 9090, 'in self:9090 > ERR:111'),
  inbound('self', 15008, 'fail 111'),
  inbound('self', 15020, 'fail 111'),
  inbound('self', 15021, 'fail 111'),
  inbound('self', 15090, 'fail 111'),
  inbound('self', 15006, 'in self:15006 > ERR:40'),
  inbound('self', 15001, 'in self:15001 > sidecar(out)'),
  inbound('self', 15000, 'in self:15000 > ERR:111'),
  { name: 'IPv6: app to a VIP', to: 'VIP6', port: 80, want: 'out [VIP6]:80' },
  { name: 'IPv6: app to another pod IP', to: 'be16', port: TCP_PORT, want: 'out [be16]:8080 > be1' },
  { name: 'IPv6: app to ::1', to: 'lo6', port: LOCAL_PORT, want: 'direct app' },
  { name: 'IPv6: app to its own pod IP', to: 'self6', port: 8080, want: 'direct app' },
  { name: 'IPv6: uid 1337 to its own pod IP (inbound redirect)', to: 'self6', port: 8080, uid: 1337, want: 'in [self6]:8080 > app' },
  { name: 'IPv6: uid 1337 to a backend pod IP', to: 'be16', port: TCP_PORT, uid: 1337, want: 'direct be1' },
  { name: 'IPv6: from ::6 to its own pod IP', to: 'self6', port: 8080, bind: '::6', want: 'direct app' },
  { ...inbound('self6', 8080, 'in [self6]:8080 > app'), name: 'IPv6: inbound from client to self6:8080' },
  { ...inbound('self6', 9090, 'in [self6]:9090 > ERR:111'), name: 'IPv6: inbound from client to self6:9090' },
  { ...inbound('self6', 15020, 'fail 111'), name: 'IPv6: inbound from client to self6:15020' },
];

const GROUPS: Group[] = [
    { name: 'default annotations', opts: () => ({}), cases: DEFAULT_CASES },
    {
      name: 'excludeOutboundPorts=8080',
      opts: () => ({ excludeOutboundPorts: '8080' }),
      cases: [
        { name: 'app to another pod IP, excluded port', to: 'be1', port: TCP_PORT, want: 'direct be1' },
        { name: 'IPv6: app to another pod IP, excluded port', to: 'be16', port: TCP_PORT, want: 'direct be1' },
        { name: 'app to a VIP, other port', to: 'VIP', port: 80, want: 'out VIP:80' },
        { name: 'uid 1337 to its own pod IP, excluded port', to: 'self', port: 8080, uid: 1337, want: 'direct app' },
        inbound('self', 8080, 'in self:8080 > app'),
      ],
    },
    {
      name: 'includeOutboundIPRanges=<be1>/32',
      opts: (be1) => ({ includeOutboundIPRanges: `${be1.ipv4}/32` }),
      cases: [
        { name: 'app to the included pod IP', to: 'be1', port: TCP_PORT, want: 'out be1:8080 > be1' },
        { name: 'app to a pod IP outside the range', to: 'be2', port: TCP_PORT, want: 'direct be2' },
        { name: 'app to a VIP outside the range', to: 'VIP', port: 80, want: 'not captured' },
        { name: 'IPv6: app to the included pod (no IPv6 range)', to: 'be16', port: TCP_PORT, want: 'direct be1' },
        { name: 'uid 1337 to its own pod IP', to: 'self', port: 8080, uid: 1337, want: 'in self:8080 > app' },
        inbound('self', 8080, 'in self:8080 > app'),
      ],
    },
    {
      name: 'excludeOutboundIPRanges=<be1>/32',
      opts: (be1) => ({ excludeOutboundIPRanges: `${be1.ipv4}/32` }),
      cases: [
        { name: 'app to the excluded pod IP', to: 'be1', port: TCP_PORT, want: 'direct be1' },
        { name: 'app to another pod IP', to: 'be2', port: TCP_PORT, want: 'out be2:8080 > be2' },
        { name: 'app to a VIP', to: 'VIP', port: 80, want: 'out VIP:80' },
        { name: 'IPv6: app to the excluded pod (IPv4 range only)', to: 'be16', port: TCP_PORT, want: 'out [be16]:8080 > be1' },
      ],
    },
    {
      name: 'includeOutboundPorts=8080, includeOutboundIPRanges=""',
      opts: () => ({ includeOutboundPorts: '8080', includeOutboundIPRanges: '' }),
      cases: [
        { name: 'app to a pod IP on the included port', to: 'be1', port: TCP_PORT, want: 'out be1:8080 > be1' },
        { name: 'IPv6: app to a pod IP on the included port', to: 'be16', port: TCP_PORT, want: 'out [be16]:8080 > be1' },
        { name: 'app to a VIP on another port', to: 'VIP', port: 80, want: 'not captured' },
        { name: 'app to its own pod IP on the included port', to: 'self', port: 8080, want: 'direct app' },
        { name: 'uid 1337 to a pod IP on the included port', to: 'be1', port: TCP_PORT, uid: 1337, want: 'direct be1' },
      ],
    },
    {
      name: 'includeOutboundPorts=8080, includeOutboundIPRanges="", excludeOutboundIPRanges=<be1>/32',
      opts: (be1) => ({ includeOutboundPorts: '8080', includeOutboundIPRanges: '', excludeOutboundIPRanges: `${be1.ipv4}/32` }),
      cases: [
        {
          name: 'app to an excluded pod IP on an included port',
          to: 'be1',
          port: TCP_PORT,
          want: 'direct be1',
        },
        { name: 'app to another pod IP on an included port', to: 'be2', port: TCP_PORT, want: 'out be2:8080 > be2' },
      ],
    },
    {
      name: 'includeOutboundIPRanges=127.0.0.0/8,<be1>/32 (a loopback range)',
      opts: (be1) => ({ includeOutboundIPRanges: `127.0.0.0/8,${be1.ipv4}/32` }),
      cases: [
        {
          name: 'app to 127.0.0.2 (inside the included loopback range)',
          to: '127.0.0.2',
          port: LOCAL_PORT,
          want: 'out 127.0.0.2:9099 > sidecar(in)',
        },
        { name: 'app to 127.0.0.1 (always returned)', to: 'lo', port: LOCAL_PORT, want: 'direct app' },
        { name: 'app to the included pod IP', to: 'be1', port: TCP_PORT, want: 'out be1:8080 > be1' },
        { name: 'app to its own pod IP (not in the ranges)', to: 'self', port: 8080, want: 'direct app' },
      ],
    },
    {
      name: 'includeInboundPorts=8080,9090',
      opts: () => ({ includeInboundPorts: '8080,9090' }),
      cases: [
        inbound('self', 8080, 'in self:8080 > app'),
        inbound('self', 9090, 'in self:9090 > ERR:111'),
        inbound('self', 443, 'fail 111'),
        inbound('self', 15020, 'fail 111'),
        { ...inbound('self6', 9090, 'in [self6]:9090 > ERR:111'), name: 'IPv6: inbound from client to self6:9090' },
        { ...inbound('self6', 443, 'fail 111'), name: 'IPv6: inbound from client to self6:443' },
        { name: 'uid 1337 to its own pod IP, port not included', to: 'self', port: 443, uid: 1337, want: 'in self:443 > ERR:111' },
      ],
    },
    {
      name: 'excludeInboundPorts=9090',
      opts: () => ({ excludeInboundPorts: '9090' }),
      cases: [
        inbound('self', 9090, 'fail 111'),
        inbound('self', 8080, 'in self:8080 > app'),
        inbound('self', 443, 'in self:443 > ERR:111'),
        { ...inbound('self6', 9090, 'fail 111'), name: 'IPv6: inbound from client to self6:9090' },
      ],
    },
    {
      name: 'includeInboundPorts=8080,9090, excludeInboundPorts=9090',
      opts: () => ({ includeInboundPorts: '8080,9090', excludeInboundPorts: '9090' }),
      cases: [
        inbound('self', 8080, 'in self:8080 > app'),
        inbound('self', 9090, 'in self:9090 > ERR:111'),
      ],
    },
];

// Inbound to the proxy's own outbound port 15001: Istio's "*" redirects it to 15006 like every
// port but 15008 and the excluded ones; sluice keeps the sidecar's ports out of inbound steering
// (as the design asks: 15001, 15006, 15008, 15020, 15021, 15090 are never redirected), so the
// connection reaches the proxy's outbound listener directly. A deliberate, documented deviation:
// asserted as sluice's own outcome, not hidden.
for (const c of DEFAULT_CASES.filter((x) => x.port === 15001 && x.from === 'client')) {
  c.deviation = {
    why: "sluice never steers the sidecar's own ports inbound; Istio's ISTIO_INBOUND sends 15001 to 15006",
    sluice: 'out self:15001 > ERR:40',
  };
}

// --- running a connection ---

function hostOf(a: string): string {
  return a.startsWith('[') ? a.slice(1, a.indexOf(']')) : a.slice(0, a.lastIndexOf(':'));
}

describe.skipIf(process.getuid?.() !== 0)("Istio's own iptables rules and sluice give the proxy the same original destinations for the same connections (needs root)", () => {
  let env: MeshEnv;
  let S: SimPod;
  let I: SimPod;
  const rows: Row[] = [];

  /** address -> symbol, per side */
  function symbols(side: Side): Map<string, string> {
    const self = side === 'S' ? S : I;
    const [be1, be2] = env.backends;
    return new Map([
      [self.ipv4, 'self'],
      [self.ipv6!, 'self6'],
      [be1.ipv4, 'be1'],
      [be1.ipv6!, 'be16'],
      [be2.ipv4, 'be2'],
      [be2.ipv6!, 'be26'],
      [env.client.ipv4, 'client'],
      [env.client.ipv6!, 'client6'],
      [VIP, 'VIP'],
      [VIP6, 'VIP6'],
      ['127.0.0.1', 'lo'],
      ['::1', 'lo6'],
    ]);
  }

  function address(side: Side, sym: string): string {
    for (const [a, s] of symbols(side)) if (s === sym) return a;
    if (/^[\d.]+$|:/.test(sym)) return sym; // a literal address
    throw new Error(`unknown destination ${sym}`);
  }

  /** Who answered, by role: the pod's own app, a backend, ... */
  function who(side: Side, id: string | undefined): string {
    if (id === undefined) return '?';
    if (id === `app-${(side === 'S' ? S : I).name}`) return 'app';
    return id;
  }

  function symAddr(side: Side, a: string): string {
    const host = hostOf(a);
    const sym = symbols(side).get(host);
    return sym === undefined ? a : a.replace(host, sym);
  }

  /** "<via> <orig> > <upstream>", "direct <who>" or "fail <errno>" */
  function outcome(side: Side, r: ProbeResult | undefined): string {
    if (!r) return 'no result';
    if (!r.ok) return `fail ${r.errno ?? r.stage ?? '?'}`;
    const sc = sidecarReply(r.reply);
    if (!sc) return `direct ${who(side, r.reply?.split(' ')[0])}`;
    const head = `${sc.via} ${symAddr(side, sc.orig)}`;
    if (sc.upstream === undefined) return head;
    let up: string;
    if (sc.upstream.startsWith('ERR:')) up = sc.upstream.split(':').slice(0, 2).join(':');
    else if (sc.upstream.startsWith('sidecar ')) up = `sidecar(${sidecarReply(sc.upstream)?.via})`;
    else up = who(side, sc.upstream.split(' ')[0]);
    return `${head} > ${up}`;
  }

  /** What is compared: the whole outcome; for a VIP only captured (via/orig) or not. */
  function key(c: Conn, o: string): string {
    if (!c.to.startsWith('VIP')) return o;
    return /^(out|in) /.test(o) ? o.split(' > ')[0] : 'not captured';
  }

  async function connect(side: Side, c: Conn): Promise<ProbeResult | undefined> {
    const pod = side === 'S' ? S : I;
    const from = c.from === 'client' ? env.client : pod;
    const args = [PROBE, 'connect', '--proto', 'tcp', '--addr', address(side, c.to), '--port', String(c.port), '--count', '1', '--timeout-ms', '4000'];
    if (c.bind) args.push('--bind', c.bind);
    const res = await env.node.exec(args, { netnsPath: from.netnsPath, uid: c.uid, gid: c.gid, inCgroup: side === 'S', allowFail: true, timeoutMs: 20000 });
    const line = res.stdout.split('\n').find((l) => l.startsWith('{') && !l.includes('"summary"'));
    return line ? (JSON.parse(line) as ProbeResult) : undefined;
  }

  async function configure(g: Group): Promise<void> {
    const opts = g.opts(env.backends[0]);
    const annotations = { ...STATUS, ...istioAnnotations(opts) };
    await updatePodObject(env, S, { annotations });
    const want = sidecarPolicy(annotations, [S.ipv4, S.ipv6!]);
    if (!want.policy) throw new Error(`sluice refuses ${g.name}: ${want.refused}`);
    const desc = ` ${describePolicy(want.policy)} `;
    let last = '';
    for (let i = 0; i < 100; i++) {
      const ep = await endpoint(env, S);
      last = ep?.reason ?? '';
      if (ep?.mode === 'sidecar' && ` ${last} `.includes(desc)) break;
      if (i === 99) throw new Error(`S not enrolled with "${desc.trim()}" (reason: ${last})`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await applyIstioRules(env.node, I, opts);
  }

  beforeAll(async () => {
    env = await createMeshEnv({ backends: 2 });
    const [a, b] = env.backends;
    writeObjects(env, 'svc.yaml', [
      serviceYaml('web', { clusterIP: VIP, ports: [{ name: 'http', port: 80, targetPort: TCP_PORT }] }),
      sliceYaml('web-1', { service: 'web', family: 4, endpoints: [{ ip: a.ipv4 }, { ip: b.ipv4 }], ports: [{ name: 'http', port: TCP_PORT }] }),
      serviceYaml('web6', { clusterIP: VIP6, ports: [{ name: 'http', port: 80, targetPort: TCP_PORT }] }),
      sliceYaml('web6-1', { service: 'web6', family: 6, endpoints: [{ ip: a.ipv6! }, { ip: b.ipv6! }], ports: [{ name: 'http', port: TCP_PORT }] }),
    ]);
    await waitForBackends(env, `${VIP}:80/TCP`, [`${a.ipv4}:${TCP_PORT}`, `${b.ipv4}:${TCP_PORT}`]);
    S = await addMeshPod(env, 'meshed', { annotations: STATUS });
    I = await addMeshPod(env, 'istio', { annotations: {} });
    expect((await endpoint(env, I))?.mode).toBe('none');
    await applyIstioRules(env.node, I, {});
    for (const [pod, inCgroup] of [[S, true], [I, false]] as const) {
      const sc = env.node.spawn([PROBE, 'sidecar', '--id', `sc-${pod.name}`, '--forward', '--bind-inbound-source', '127.0.0.6', '--bind-inbound-source', '::6'], {
        netnsPath: pod.netnsPath,
        uid: 1337,
        gid: 1337,
        inCgroup,
      });
      await env.node.waitForLine(sc, 'ready');
      for (const ip of [pod.ipv4, pod.ipv6!]) await startApp(env, pod, 8080, ip);
      for (const ip of ['127.0.0.1', '::1']) await startApp(env, pod, LOCAL_PORT, ip);
    }
  });

  afterAll(async () => {
    if (rows.length) {
      const w = [40, 62, 62];
      const cell = (s: string, n: number) => (s.length > n ? s : s.padEnd(n));
      const lines = [
        `| ${cell('case', w[0])} | ${cell('sluice (S)', w[1])} | ${cell('iptables (I)', w[2])} | equal? |`,
        `|${'-'.repeat(w[0] + 2)}|${'-'.repeat(w[1] + 2)}|${'-'.repeat(w[2] + 2)}|--------|`,
      ];
      let group = '';
      for (const r of rows) {
        if (r.group !== group) {
          group = r.group;
          lines.push(`| **${group}** | | | |`);
        }
        const eq = r.sKey === r.iKey ? 'yes' : r.conn.deviation ? 'NO (deliberate)' : 'NO';
        lines.push(`| ${cell(r.conn.name, w[0])} | ${cell(r.s, w[1])} | ${cell(r.i, w[2])} | ${eq} |`);
      }
      console.log(`\nIstio iptables vs sluice, what the proxy saw (via orig > what its forwarded connection reached):\n${lines.join('\n')}\n`);
    }
    if (env) await stopAgent(env);
    await env?.node.destroy();
  });

  for (const g of GROUPS) {
    describe(g.name, () => {
      const results = new Map<Conn, Row>();
      beforeAll(async () => {
        await configure(g);
        for (const c of g.cases) {
          const s = outcome('S', await connect('S', c));
          const i = outcome('I', await connect('I', c));
          const row: Row = { group: g.name, conn: c, s, i, sKey: key(c, s), iKey: key(c, i) };
          rows.push(row);
          results.set(c, row);
        }
      }, 120000);

      it('the iptables reference behaves as Istio documents (I matches the expected outcome)', () => {
        const got = g.cases.map((c) => `${c.name}: ${results.get(c)?.iKey}`);
        expect(got).toEqual(g.cases.map((c) => `${c.name}: ${key(c, c.want)}`));
      });

      for (const c of g.cases) {
        it(`${c.name}${c.deviation ? ' [deliberate deviation]' : ''}`, () => {
          const r = results.get(c);
          expect(r, 'not run').toBeDefined();
          if (c.deviation) expect(r!.sKey, c.deviation.why).toBe(key(c, c.deviation.sluice));
          else expect(r!.sKey).toBe(r!.iKey);
        });
      }
    });
  }
});
