/* CNI ADD/DEL latency of sluice-cni next to the reference bridge plugin (`node_modules/.bin/tsx
 * test/bench/cni-add.ts` after `make all`; needs root). The claim measured: sluice's ADD adds no
 * more than the bridge plugin's own ADD time to the chain (median and p99).
 *
 * One simulated node, the agent running with a cni-conf-dir holding a bridge + host-local conflist
 * (chain A), which the agent extends with sluice-cni (chain B: the installed file, read back).
 * Pods alternate A, B, A, B, ... (200 by default, BENCH_PODS), each a fresh netns. The plugins of
 * a chain are executed one by one as a runtime does (libcni semantics, the harness's
 * buildPluginConfig/invokePlugin: prevResult chaining on ADD, reverse order with the cached
 * result on DEL), each exec timed with process.hrtime from spawn to exit, in the node's netns
 * (`nsenter --net=<node> -- plugin`, as the harness runs them; the nsenter exec is in every
 * plugin's time alike). All ADDs first (the bridge gains a port per pod), then all DELs in the same
 * order. The first BENCH_WARMUP (4) pods are run but not counted. IPv4 only unless BENCH_IPV6=1.
 * Each pod also times `nsenter --net=<node> -- /bin/true` the same way: the floor under every
 * plugin time (process creation and the namespace switch).
 *
 * At the end no registration may be left (`sluice endpoint list -o json` is []); after the ADDs
 * it must list exactly the chain-B pods. Output: a Markdown table on stdout and in
 * build/bench/cni-add.md, every counted pod's times in build/bench/cni-add.json (what
 * test/bench/charts.ts draws; BENCH_OUT overrides the directory). Exit 1 on any error or leak.
 *
 * Safety: the plugins run only in the node's netns (never the machine's); pod namespaces are
 * named <node id>-<pod>, so the node's destroy() removes any that are left; the node is destroyed
 * in `finally` and by the harness's exit/signal handlers.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { buildPluginConfig, invokePlugin, run, type CniConfList, type CniResult, type CniRuntimeConf } from '../harness';
import { createLbEnv, ROOT, sluice, startAgent, stopAgent, writeConfig, type LbEnv } from '../kernel/lb-env';

const PODS = Number(process.env.BENCH_PODS ?? 200);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 4);
const IPV6 = process.env.BENCH_IPV6 === '1';
const OUT = path.resolve(ROOT, process.env.BENCH_OUT ?? 'build/bench');
const REFERENCE_BIN = '/usr/lib/cni';

type Chain = 'A' | 'B';

interface BenchPod {
  index: number;
  chain: Chain;
  netnsName: string;
  rt: CniRuntimeConf;
  result?: CniResult;
  /** ADD and DEL times per plugin type (ms), and of the whole chain */
  add: Record<string, number>;
  del: Record<string, number>;
  addTotal?: number;
  delTotal?: number;
  /** the same exec path running /bin/true: the floor under every plugin time */
  floor?: number;
  counted: boolean;
}

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

/** Runs the plugins of a list one by one; returns the final result and per-plugin times. */
async function timedAdd(
  list: CniConfList,
  rt: CniRuntimeConf,
  times: Record<string, number>,
): Promise<{ result: CniResult; total: number }> {
  const t0 = process.hrtime.bigint();
  let prev: CniResult | undefined;
  for (const plugin of list.plugins) {
    const conf = buildPluginConfig(list, plugin, prev, rt);
    const t = process.hrtime.bigint();
    const res = await invokePlugin('ADD', conf, rt);
    times[plugin.type] = ms(t);
    if (res === undefined) throw new Error(`${plugin.type} ADD printed no result`);
    prev = res;
  }
  return { result: prev!, total: ms(t0) };
}

async function timedDel(
  list: CniConfList,
  rt: CniRuntimeConf,
  prevResult: CniResult | undefined,
  times: Record<string, number>,
): Promise<number> {
  const t0 = process.hrtime.bigint();
  for (const plugin of [...list.plugins].reverse()) {
    const conf = buildPluginConfig(list, plugin, prevResult, rt);
    const t = process.hrtime.bigint();
    await invokePlugin('DEL', conf, rt);
    times[plugin.type] = ms(t);
  }
  return ms(t0);
}

interface Stats {
  n: number;
  median: number;
  p90: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentiles. */
function stats(xs: number[]): Stats {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
  return { n: s.length, median: q(0.5), p90: q(0.9), p99: q(0.99), max: s[s.length - 1] };
}

const f2 = (x: number) => x.toFixed(2);

function table(title: string, rows: Array<[string, Stats]>): string[] {
  const out = [`| ${title} | n | median ms | p90 ms | p99 ms | max ms |`, '| --- | ---: | ---: | ---: | ---: | ---: |'];
  for (const [name, s] of rows) out.push(`| ${name} | ${s.n} | ${f2(s.median)} | ${f2(s.p90)} | ${f2(s.p99)} | ${f2(s.max)} |`);
  return out;
}

/** The agent's own handling time per CNI call, from its `cni` log lines (JSON on stderr). */
function agentTimes(env: LbEnv, command: string, ids: Set<string>): number[] {
  const out: number[] = [];
  for (const line of env.node.output(env.agent!).stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const r = JSON.parse(line);
      if (r.msg === 'cni' && r.command === command && ids.has(r.containerId) && typeof r.ms === 'number') out.push(r.ms);
    } catch {
      /* not a log line */
    }
  }
  return out;
}

async function dpkgVersion(pkg: string): Promise<string> {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format syntax, not a template
  const r = await run(['dpkg-query', '-W', '-f', '${Version}', pkg], { allowFail: true });
  return r.code === 0 ? r.stdout.trim() : 'unknown';
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) throw new Error('needs root');
  if (!Number.isInteger(PODS) || PODS < 2) throw new Error(`BENCH_PODS must be an integer >= 2, not ${process.env.BENCH_PODS}`);
  const started = Date.now();
  const load0 = os.loadavg()[0];
  const env = await createLbEnv({ backends: 0 });
  const node = env.node;
  const pods: BenchPod[] = [];
  const errors: string[] = [];
  const chains: Partial<Record<Chain, CniConfList>> = {};
  try {
    const confDir = path.join(node.workDir, 'net.d');
    const binDir = path.join(node.workDir, 'cni-bin');
    const stateDir = path.join(node.workDir, 'state');
    fs.mkdirSync(confDir);
    // The node's bridge, network name and host-local data dir: the pods share the address pool of
    // the harness's own pods (the client pod), so no two get the same address on slbr0.
    const ranges: object[][] = [[{ subnet: node.cidr4 }]];
    const routes: object[] = [{ dst: '0.0.0.0/0' }];
    if (IPV6 && node.cidr6) {
      ranges.push([{ subnet: node.cidr6 }]);
      routes.push({ dst: '::/0' });
    }
    const chainA: CniConfList = {
      cniVersion: '1.0.0',
      name: node.id,
      plugins: [
        {
          type: 'bridge',
          bridge: 'slbr0',
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: { type: 'host-local', dataDir: path.join(node.workDir, 'ipam'), ranges, routes },
        },
      ],
    };
    const primary = path.join(confDir, '10-bench.conflist');
    fs.writeFileSync(primary, JSON.stringify(chainA, null, 2) + '\n');
    writeConfig(env, { 'cni-conf-dir': confDir, 'cni-bin-dir': binDir, 'state-dir': stateDir });
    await startAgent(env);
    const chainB = JSON.parse(fs.readFileSync(primary, 'utf8')) as CniConfList;
    chains.A = chainA;
    chains.B = chainB;
    const types = chainB.plugins.map((p) => p.type).join(',');
    if (types !== 'bridge,sluice-cni') throw new Error(`the agent did not install sluice-cni after bridge: ${types}`);

    const total = PODS + WARMUP;
    const tAdd0 = Date.now();
    for (let i = 0; i < total; i++) {
      const chain: Chain = i % 2 === 0 ? 'A' : 'B';
      const name = `p${i}`;
      const netnsName = `${node.id}-${name}`;
      const containerId = randomBytes(32).toString('hex');
      const rt: CniRuntimeConf = {
        containerId,
        netns: `/var/run/netns/${netnsName}`,
        ifName: 'eth0',
        args: {
          K8S_POD_NAMESPACE: 'bench',
          K8S_POD_NAME: name,
          K8S_POD_INFRA_CONTAINER_ID: containerId,
          K8S_POD_UID: randomUUID(),
        },
        binDirs: [binDir, REFERENCE_BIN],
        runInNetns: node.netnsPath,
      };
      const pod: BenchPod = { index: i, chain, netnsName, rt, add: {}, del: {}, counted: i >= WARMUP };
      await run(['ip', 'netns', 'add', netnsName]);
      pods.push(pod);
      if (IPV6)
        await run([
          'nsenter',
          `--net=${rt.netns}`,
          '--',
          'sysctl',
          '-q',
          '-w',
          'net.ipv6.conf.all.accept_dad=0',
          'net.ipv6.conf.default.accept_dad=0',
        ]);
      const tf = process.hrtime.bigint();
      await run(['nsenter', `--net=${node.netnsPath}`, '--', '/bin/true'], { input: '{}', env: { CNI_COMMAND: 'ADD' } });
      pod.floor = ms(tf);
      const { result, total: t } = await timedAdd(chain === 'A' ? chainA : chainB, rt, pod.add);
      pod.result = result;
      pod.addTotal = t;
    }
    const addWall = (Date.now() - tAdd0) / 1000;

    const listed = JSON.parse((await sluice(env, ['endpoint', 'list', '-o', 'json'])).stdout) as Array<{ containerId: string }>;
    const wantB = pods
      .filter((p) => p.chain === 'B')
      .map((p) => p.rt.containerId)
      .sort();
    const got = listed.map((e) => e.containerId).sort();
    if (JSON.stringify(got) !== JSON.stringify(wantB)) {
      errors.push(`after the ADDs sluice lists ${got.length} endpoints, expected exactly the ${wantB.length} chain-B pods`);
    }

    const tDel0 = Date.now();
    for (const pod of pods) {
      pod.delTotal = await timedDel(pod.chain === 'A' ? chainA : chainB, pod.rt, pod.result, pod.del);
      pod.result = undefined;
      await run(['ip', 'netns', 'del', pod.netnsName]);
    }
    const delWall = (Date.now() - tDel0) / 1000;

    const left = JSON.parse((await sluice(env, ['endpoint', 'list', '-o', 'json'])).stdout) as unknown[];
    if (left.length) errors.push(`${left.length} registrations leaked after DEL`);
    const leftFiles = fs.existsSync(path.join(stateDir, 'endpoints'))
      ? fs.readdirSync(path.join(stateDir, 'endpoints')).filter((f) => !f.startsWith('.'))
      : [];
    if (leftFiles.length) errors.push(`${leftFiles.length} files left in ${stateDir}/endpoints`);

    // --- report
    const counted = pods.filter((p) => p.counted);
    const A = counted.filter((p) => p.chain === 'A');
    const B = counted.filter((p) => p.chain === 'B');
    const bIds = new Set(B.map((p) => p.rt.containerId));
    const s = {
      addBridgeA: stats(A.map((p) => p.add.bridge)),
      addBridgeB: stats(B.map((p) => p.add.bridge)),
      addSluice: stats(B.map((p) => p.add['sluice-cni'])),
      addChainA: stats(A.map((p) => p.addTotal!)),
      addChainB: stats(B.map((p) => p.addTotal!)),
      addAgent: stats(agentTimes(env, 'ADD', bIds)),
      delBridgeA: stats(A.map((p) => p.del.bridge)),
      delBridgeB: stats(B.map((p) => p.del.bridge)),
      delSluice: stats(B.map((p) => p.del['sluice-cni'])),
      delChainA: stats(A.map((p) => p.delTotal!)),
      delChainB: stats(B.map((p) => p.delTotal!)),
      delAgent: stats(agentTimes(env, 'DEL', bIds)),
      floor: stats(counted.map((p) => p.floor!)),
    };
    const ratio = (a: Stats, b: Stats, k: 'median' | 'p99') => (a[k] / b[k]).toFixed(2);
    const verdict = (sl: Stats, br: Stats) =>
      `median ${sl.median <= br.median ? 'yes' : 'NO'} (${f2(sl.median)} ≤ ${f2(br.median)} ms), p99 ${sl.p99 <= br.p99 ? 'yes' : 'NO'} (${f2(sl.p99)} ≤ ${f2(br.p99)} ms)`;
    const cpus = os.cpus();
    const md = [
      '# CNI ADD/DEL latency: sluice-cni next to the reference bridge plugin',
      '',
      `${new Date().toISOString()}, kernel ${os.release()}, ${cpus.length} CPU(s) ${cpus[0]?.model ?? ''}, ` +
        `containernetworking-plugins ${await dpkgVersion('containernetworking-plugins')}, node ${process.version}.`,
      `${PODS} pods counted (${A.length} on chain A = bridge + host-local, ${B.length} on chain B = bridge + host-local + sluice-cni, ` +
        `alternating), after ${WARMUP} warm-up pods; ${IPV6 ? 'dual-stack' : 'IPv4 only'}; each plugin exec timed from spawn to exit ` +
        '(run as `nsenter --net=<node> -- <plugin>`, as the test harness runs them).',
      '',
      ...table('ADD', [
        ['bridge ADD (chain A)', s.addBridgeA],
        ['bridge ADD (chain B)', s.addBridgeB],
        ['sluice-cni ADD (chain B)', s.addSluice],
        ['… of which the agent handler', s.addAgent],
        ['whole chain A', s.addChainA],
        ['whole chain B', s.addChainB],
        ['exec floor: `nsenter … /bin/true` (every pod)', s.floor],
      ]),
      '',
      ...table('DEL', [
        ['bridge DEL (chain A)', s.delBridgeA],
        ['bridge DEL (chain B)', s.delBridgeB],
        ['sluice-cni DEL (chain B)', s.delSluice],
        ['… of which the agent handler', s.delAgent],
        ['whole chain A', s.delChainA],
        ['whole chain B', s.delChainB],
      ]),
      '',
      '| ratio | median | p99 |',
      '| --- | ---: | ---: |',
      `| sluice-cni ADD / bridge ADD (chain B) | ${ratio(s.addSluice, s.addBridgeB, 'median')} | ${ratio(s.addSluice, s.addBridgeB, 'p99')} |`,
      `| sluice-cni DEL / bridge DEL (chain B) | ${ratio(s.delSluice, s.delBridgeB, 'median')} | ${ratio(s.delSluice, s.delBridgeB, 'p99')} |`,
      `| chain B ADD / chain A ADD | ${ratio(s.addChainB, s.addChainA, 'median')} | ${ratio(s.addChainB, s.addChainA, 'p99')} |`,
      '',
      `sluice-cni ADD ≤ bridge ADD (chain B): ${verdict(s.addSluice, s.addBridgeB)}.`,
      `chain B − chain A, ADD: median +${f2(s.addChainB.median - s.addChainA.median)} ms, p99 +${f2(s.addChainB.p99 - s.addChainA.p99)} ms.`,
      `Registrations after the ADDs: ${got.length}, exactly the ${wantB.length} chain-B pods (warm-up included) and none of chain A: ${errors.some((e) => e.startsWith('after the ADDs')) ? 'NO' : 'yes'}; ` +
        `left after the DELs: ${left.length}.`,
      `Wall time: ADD phase ${addWall.toFixed(1)} s, DEL phase ${delWall.toFixed(1)} s, whole run ${((Date.now() - started) / 1000).toFixed(1)} s.`,
      ...(errors.length ? ['', '**Errors:**', ...errors.map((e) => `- ${e}`)] : []),
      '',
    ].join('\n');
    process.stdout.write(md);
    fs.mkdirSync(OUT, { recursive: true });
    fs.writeFileSync(path.join(OUT, 'cni-add.md'), md);
    const raw = {
      pods: PODS,
      warmup: WARMUP,
      ipv6: IPV6,
      kernel: os.release(),
      cpus: cpus.length,
      loadAvg: { before: load0, after: os.loadavg()[0] },
      errors,
      /** per counted pod: its chain and each plugin exec's time, ms (chain A: bridge; B: bridge, sluice-cni) */
      samples: counted.map((p) => ({
        chain: p.chain,
        add: p.add,
        del: p.del,
        addTotal: p.addTotal,
        delTotal: p.delTotal,
        floor: p.floor,
      })),
      /** the agent's own handling time of each chain-B ADD/DEL, ms (from its log) */
      agent: { add: agentTimes(env, 'ADD', bIds), del: agentTimes(env, 'DEL', bIds) },
    };
    fs.writeFileSync(path.join(OUT, 'cni-add.json'), JSON.stringify(raw, null, 2) + '\n');
    process.stderr.write(`written ${path.join(OUT, 'cni-add.md')} and cni-add.json\n`);
    return errors.length ? 1 : 0;
  } finally {
    // Pods still added (a failure midway): DEL them untimed, in the node's netns, then the netns.
    for (const pod of pods.filter((p) => p.result !== undefined)) {
      try {
        await timedDel(chains[pod.chain]!, pod.rt, pod.result, {});
      } catch (e) {
        process.stderr.write(`cleanup DEL of ${pod.netnsName}: ${(e as Error).message}\n`);
      }
    }
    if (env.agent) await stopAgent(env);
    await node.destroy();
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`cni-add bench failed: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  },
);
