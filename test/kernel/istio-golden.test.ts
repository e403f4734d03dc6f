/* Istio's own golden files are the oracle for sluice's sidecar capture: the same connections do
 * the same thing under sluice as under the rules Istio writes for the same annotations.
 *
 * One simulated node for every case (createMeshEnv: the agent, the CNI chain with sluice-cni), two
 * backend pods (be1 also answers DNS on UDP 53; be2 also holds the far address 192.0.2.10, outside
 * every pod range and outside 10.0.0.0/8), Services with a VIP per family, and two meshed pods
 * with the same stand-in proxy (sl-probe sidecar --forward, as the proxy's uid/gid, TCP 15001,
 * 15006 and 15053, plus a UDP DNS answerer on 127.0.0.1/::1:15053) and the same app servers
 * (8080 on the pod IPs, 9099 on 127.0.0.1 and ::1, a UDP resolver on 127.0.0.53:53):
 *  - S is captured by sluice: sidecar.istio.io/status plus the case's annotations;
 *  - I is not enrolled (no status annotation: mode=none) and runs the case's golden, loaded as it
 *    is with iptables-restore / ip6tables-restore (istio-golden.ts). Every process of I, and of
 *    the client pod when it connects to I, runs OUTSIDE the test cgroup, so no sluice program
 *    touches them.
 * Per case (istio-golden-cases.ts): S is re-annotated (and the agent restarted when the case needs
 * other node-wide settings), I's tables are replaced by the golden, and the probe matrix
 * (istio-probes.ts) runs in both pods, batched (one sl-probe per identity and pod). Every probe
 * is one test: S's outcome must equal I's; a deliberate deviation asserts both recorded outcomes;
 * a known difference (istio-known-differences.ts) is an `it.fails`.
 * The full table goes to build/istio-golden.md; differences are printed at the end.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor, type SimPod } from '../harness';
import { describePolicy, sidecarPolicy } from '../../src/mesh/sidecar-policy';
import { GOLDEN_CASES, STATUS_ANNOTATION, caseProbes, isTproxyCase, type GoldenCase } from './istio-golden-cases';
import { loadGolden, readGolden } from './istio-golden';
import { KNOWN_DIFFERENCES } from './istio-known-differences';
import {
  comparable,
  DNS_PORT,
  FAR_V4,
  LOCAL_PORT,
  LOCAL_RESOLVER,
  outcome,
  PROXY_DNS_PORT,
  VIP,
  VIP6,
  type Family,
  type Identity,
  type Probe,
  type Symbols,
} from './istio-probes';
import { PROBE, ROOT, startAgent, stopAgent, TCP_PORT, writeConfig, writeWebService, type ProbeResult } from './lb-env';
import { addMeshPod, createMeshEnv, endpoint, ISTIO_PROXY, startApp, updatePodObject, type MeshEnv } from './mesh-env';

type Side = 'S' | 'I';

interface Row {
  golden: string;
  probe: Probe;
  s: string;
  i: string;
  verdict: 'equal' | 'deliberate' | 'known' | 'DIFFERENT';
}

const PROBE_TIMEOUT_MS = 3000;

/** Cases grouped by agent settings (each change restarts the agent), default settings first. */
function byAgentSettings(cases: GoldenCase[]): GoldenCase[] {
  const groups = new Map<string, GoldenCase[]>([['{}', []]]);
  for (const c of cases) {
    const key = JSON.stringify(c.agent ?? {});
    groups.set(key, [...(groups.get(key) ?? []), c]);
  }
  return [...groups.values()].flat();
}

const CASES = byAgentSettings(GOLDEN_CASES);

function familiesOf(c: GoldenCase): Family[] {
  return readGolden(c.golden).v6 ? [4, 6] : [4];
}

describe.skipIf(process.getuid?.() !== 0)(
  "Istio's golden rules and sluice do the same with the same connections (needs root)",
  () => {
    let env: MeshEnv;
    let S: SimPod;
    let I: SimPod;
    let agentKey = '{}';
    /** the proxy processes of each side, who they run as and how they hand inbound to the app */
    const proxies: Record<Side, { uid: number; gid: number; tproxy: boolean; children: ChildProcess[] } | undefined> = {
      S: undefined,
      I: undefined,
    };
    const rows: Row[] = [];

    function symbols(side: Side): Symbols {
      const self = side === 'S' ? S : I;
      const [be1, be2] = env.backends;
      return new Map([
        ['self', self.ipv4],
        ['self6', self.ipv6!],
        ['be1', be1.ipv4],
        ['be16', be1.ipv6!],
        ['be2', be2.ipv4],
        ['be26', be2.ipv6!],
        ['client', env.client.ipv4],
        ['client6', env.client.ipv6!],
        ['far', FAR_V4],
        ['VIP', VIP],
        ['VIP6', VIP6],
      ]);
    }

    function address(side: Side, sym: string): string {
      const a = symbols(side).get(sym);
      if (a !== undefined) return a;
      if (/^[\d.]+$|:/.test(sym)) return sym; // a loopback literal
      throw new Error(`unknown destination symbol ${sym}`);
    }

    async function stopChild(child: ChildProcess): Promise<void> {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      await exited;
    }

    /**
     * The stand-in proxy of a pod, as the case's proxy runs (restarted when that changes): as its
     * uid/gid, handing inbound to the app from 127.0.0.6 / ::6; in a TPROXY case as uid 0 with the
     * proxy gid, handing it over from the client's address (see isTproxyCase).
     */
    async function ensureProxy(side: Side, c: GoldenCase): Promise<void> {
      const tproxy = isTproxyCase(c);
      const id = tproxy ? { uid: 0, gid: c.proxy.gid } : c.proxy;
      const cur = proxies[side];
      if (cur && cur.uid === id.uid && cur.gid === id.gid && cur.tproxy === tproxy) return;
      for (const child of cur?.children ?? []) await stopChild(child);
      const pod = side === 'S' ? S : I;
      const o = { netnsPath: pod.netnsPath, uid: id.uid, gid: id.gid, inCgroup: side === 'S' };
      const inbound = tproxy ? ['--tproxy', '1337'] : ['--bind-inbound-source', '127.0.0.6', '--bind-inbound-source', '::6'];
      const children = [
        env.node.spawn(
          [PROBE, 'sidecar', '--id', `sc-${pod.name}`, '--forward', ...inbound, '--extra-port', String(PROXY_DNS_PORT)],
          o,
        ),
        ...['127.0.0.1', '::1'].map((ip) =>
          env.node.spawn(
            [PROBE, 'serve', '--proto', 'udp', '--addr', ip, '--port', String(PROXY_DNS_PORT), '--id', `dns-${pod.name}`],
            o,
          ),
        ),
      ];
      for (const child of children) await env.node.waitForLine(child, 'ready');
      proxies[side] = { ...id, tproxy, children };
    }

    /** The case's node-wide settings: the agent restarts with them when they change. */
    async function ensureAgent(c: GoldenCase): Promise<void> {
      const key = JSON.stringify(c.agent ?? {});
      if (key === agentKey) return;
      await stopAgent(env);
      writeConfig(env, { 'cni-conf-dir': env.confDir, 'cni-bin-dir': env.binDir, 'state-dir': env.stateDir, ...c.agent });
      await startAgent(env);
      agentKey = key;
    }

    /** S carries the case's annotations and the kernel holds the policy they mean; I runs the golden. */
    async function configure(c: GoldenCase): Promise<void> {
      await ensureAgent(c);
      await Promise.all([ensureProxy('S', c), ensureProxy('I', c)]);
      await updatePodObject(env, S, {
        annotations: c.annotations,
        containers: [{ name: 'app' }, { ...ISTIO_PROXY, ...(c.proxyEnv ? { env: c.proxyEnv } : {}) }],
      });
      const dnsEnv = c.proxyEnv?.find((e) => e.name === 'ISTIO_META_DNS_CAPTURE')?.value;
      const want = sidecarPolicy(c.annotations, [S.ipv4, S.ipv6!], {
        dnsCapture: (dnsEnv ?? c.agent?.['mesh-dns-capture']) === 'true',
      });
      if (!want.policy) throw new Error(`sluice refuses the annotations of ${c.golden}: ${want.refused}`);
      // the agent reads the objects dir and reprograms the pod on its own: poll endpoint list
      const desc = ` ${describePolicy(want.policy)} `;
      await waitFor(`S enrolled with "${desc.trim()}" for ${c.golden}`, async () => {
        const ep = await endpoint(env, S);
        if (ep?.mode === 'sidecar' && ` ${ep.reason} `.includes(desc)) return true;
        throw new Error(`endpoint list says mode=${ep?.mode} ${ep?.reason ?? ''}`);
      });
      await loadGolden(env.node, I, readGolden(c.golden));
    }

    /** One sl-probe batch per identity and side; results by probe name. */
    async function runProbes(side: Side, c: GoldenCase, probes: Probe[]): Promise<Map<string, ProbeResult | undefined>> {
      const out = new Map<string, ProbeResult | undefined>();
      const groups = new Map<Identity, Probe[]>();
      for (const p of probes) groups.set(p.as, [...(groups.get(p.as) ?? []), p]);
      await Promise.all(
        [...groups].map(async ([as, ps]) => {
          const pod = as === 'client' ? env.client : side === 'S' ? S : I;
          const ids = as === 'uid' ? { uid: c.proxy.uid, gid: 0 } : as === 'gid' ? { uid: 0, gid: c.proxy.gid } : {};
          const targets = ps.map((p) => `${p.proto}/${address(side, p.to)}/${p.port}${p.bind ? `/${p.bind}` : ''}`);
          const res = await env.node.exec([PROBE, 'batch', '--timeout-ms', String(PROBE_TIMEOUT_MS), ...targets], {
            netnsPath: pod.netnsPath,
            ...ids,
            inCgroup: side === 'S',
            allowFail: true,
            timeoutMs: 30000 + ps.length * PROBE_TIMEOUT_MS,
          });
          if (res.code !== 0) throw new Error(`sl-probe batch (${side}, ${as}) exited ${res.code}: ${res.stderr.trim()}`);
          const byTarget = new Map<string, ProbeResult>();
          for (const l of res.stdout.split('\n')) {
            if (!l.startsWith('{')) continue;
            const r = JSON.parse(l) as ProbeResult & { target: string };
            byTarget.set(r.target, r);
          }
          ps.forEach((p, k) => out.set(p.name, byTarget.get(targets[k])));
        }),
      );
      return out;
    }

    beforeAll(async () => {
      env = await createMeshEnv({ backends: 2 });
      const [be1, be2] = env.backends;
      // a connection to a VIP from I (no socket-LB there) is refused at once instead of waiting out
      // its timeout: the node's netns takes the VIP ranges as local addresses, where nothing
      // listens (without a route the node's "unreachable" answers are rate-limited per sender)
      await env.node.exec(['ip', 'route', 'add', 'local', '10.96.0.0/16', 'dev', 'lo'], { inCgroup: false });
      await env.node.exec(['ip', '-6', 'route', 'add', 'local', 'fd00:96::/64', 'dev', 'lo'], { inCgroup: false });
      // the far address: on be2, routed by the node
      await env.node.exec(['ip', 'addr', 'add', `${FAR_V4}/32`, 'dev', 'eth0'], { netnsPath: be2.netnsPath, inCgroup: false });
      await env.node.exec(['ip', 'route', 'add', `${FAR_V4}/32`, 'via', be2.ipv4], { inCgroup: false });
      const servers = [
        env.node.spawn([PROBE, 'serve', '--proto', 'tcp', '--addr', FAR_V4, '--port', String(TCP_PORT), '--id', 'far'], {
          netnsPath: be2.netnsPath,
          inCgroup: false,
        }),
        ...[be1.ipv4, be1.ipv6!].map((ip) =>
          env.node.spawn([PROBE, 'serve', '--proto', 'udp', '--addr', ip, '--port', String(DNS_PORT), '--id', 'be1'], {
            netnsPath: be1.netnsPath,
            inCgroup: false,
          }),
        ),
      ];
      for (const c of servers) await env.node.waitForLine(c, 'ready');
      await writeWebService(env, VIP, VIP6);
      S = await addMeshPod(env, 'meshed', { annotations: { [STATUS_ANNOTATION]: 'true' } });
      I = await addMeshPod(env, 'istio', { annotations: {} });
      const epI = await endpoint(env, I);
      if (epI?.mode !== 'none') throw new Error(`the reference pod I must not be enrolled, endpoint list says mode=${epI?.mode}`);
      for (const pod of [S, I]) {
        for (const ip of [pod.ipv4, pod.ipv6!]) await startApp(env, pod, TCP_PORT, ip);
        for (const ip of ['127.0.0.1', '::1']) await startApp(env, pod, LOCAL_PORT, ip);
        const resolver = env.node.spawn(
          [
            PROBE,
            'serve',
            '--proto',
            'udp',
            '--addr',
            LOCAL_RESOLVER,
            '--port',
            String(DNS_PORT),
            '--id',
            `resolver-${pod.name}`,
          ],
          { netnsPath: pod.netnsPath, inCgroup: false },
        );
        await env.node.waitForLine(resolver, 'ready');
      }
    }, 120000);

    afterAll(async () => {
      if (rows.length) {
        const line = (r: Row) => `| ${path.relative('test', r.golden)} | ${r.probe.name} | ${r.s} | ${r.i} | ${r.verdict} |`;
        const head = ['| golden | probe | sluice (S) | Istio golden (I) | verdict |', '|---|---|---|---|---|'];
        fs.mkdirSync(path.join(ROOT, 'build'), { recursive: true });
        fs.writeFileSync(path.join(ROOT, 'build/istio-golden.md'), [...head, ...rows.map(line)].join('\n') + '\n');
        const count = (v: Row['verdict']) => rows.filter((r) => r.verdict === v).length;
        const odd = rows.filter((r) => r.verdict !== 'equal');
        console.log(
          `\nIstio golden rules vs sluice: ${rows.length} probes in ${new Set(rows.map((r) => r.golden)).size} cases: ${count('equal')} equal, ` +
            `${count('deliberate')} deliberate deviations, ${count('known')} known differences, ${count('DIFFERENT')} new differences ` +
            `(full table: build/istio-golden.md)\n${[...head, ...odd.map(line)].join('\n')}\n`,
        );
      }
      if (env) await stopAgent(env);
      await env?.node.destroy();
    });

    for (const c of CASES) {
      const families = familiesOf(c);
      const probes = caseProbes(c, families);
      const known = KNOWN_DIFFERENCES.filter((k) => k.golden === c.golden);
      describe(`${path.basename(c.golden)} (${c.upstream})`, () => {
        const result = new Map<string, { s: string; i: string; sKey: string; iKey: string }>();
        beforeAll(async () => {
          await configure(c);
          const [rs, ri] = await Promise.all([runProbes('S', c, probes), runProbes('I', c, probes)]);
          for (const p of probes) {
            const s = outcome(p, rs.get(p.name), { pod: S.name, symbols: symbols('S') });
            const i = outcome(p, ri.get(p.name), { pod: I.name, symbols: symbols('I') });
            const r = { s, i, sKey: comparable(p, s), iKey: comparable(p, i) };
            result.set(p.name, r);
            const verdict = c.deviations.some((d) => d.probe === p.name)
              ? 'deliberate'
              : known.some((k) => k.probe === p.name)
                ? 'known'
                : r.sKey === r.iKey
                  ? 'equal'
                  : 'DIFFERENT';
            rows.push({ golden: c.golden, probe: p, s, i, verdict });
          }
        }, 180000);

        it('the reference pod runs the golden: the proxy uid reaches 15006 via its own pod IP, 127.0.0.1 is left alone, every probe has a result', () => {
          expect(result.get(`uid ${c.proxy.uid} → self:${TCP_PORT}`)?.i).toBe(`in self:${TCP_PORT} > app`);
          expect(result.get(`app → 127.0.0.1:${LOCAL_PORT}`)?.i).toBe('direct app');
          const missing = [...result].filter(([, r]) => r.s === 'no result' || r.i === 'no result').map(([name]) => name);
          expect(missing).toEqual([]);
        });

        if (known.length) {
          it('the known differences recorded for this golden are still what the probes show', () => {
            expect(known.map((k) => ({ probe: k.probe, istio: result.get(k.probe)?.i, sluice: result.get(k.probe)?.s }))).toEqual(
              known.map((k) => ({ probe: k.probe, istio: k.istio, sluice: k.sluice })),
            );
          });
        }

        for (const p of probes) {
          const dev = c.deviations.find((d) => d.probe === p.name);
          const k = known.find((x) => x.probe === p.name);
          if (dev) {
            it(`${p.name} [deliberate deviation: Istio ${dev.istio}, sluice ${dev.sluice}]`, () => {
              const r = result.get(p.name);
              expect({ istio: r?.i, sluice: r?.s }, dev.why).toEqual({ istio: dev.istio, sluice: dev.sluice });
            });
          } else if (k) {
            it.fails(`${p.name} [known difference: Istio ${k.istio}, sluice ${k.sluice}]`, () => {
              const r = result.get(p.name);
              expect(r?.sKey).toBe(r?.iKey);
            });
          } else {
            it(p.name, () => {
              const r = result.get(p.name);
              expect(r, 'not run').toBeDefined();
              expect(r!.sKey, `sluice: ${r!.s}; Istio's golden: ${r!.i}`).toBe(r!.iKey);
            });
          }
        }
      });
    }
  },
);
