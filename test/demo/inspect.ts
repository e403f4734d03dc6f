/* Scenes 5–8: looking at the node as an operator does. bpftool on a pinned map (BTF: named
 * fields), `sluice doctor`, a few `sluice monitor` lines and the metrics endpoint. doctor, monitor
 * and metrics are run when this build has them and announced as "(not in this build)" otherwise.
 */
import * as path from 'node:path';
import { run, waitFor } from '../harness';
import { SLUICE, probe, sluice } from '../kernel/lb-env';
import { BPFTOOL, METRICS_ADDR, SVC_PORT, VIP, type DemoCtx } from './context';
import { check, notInThisBuild, say, scene, shell } from './narrate';

/** sl_lb_backend is the shortest map with named fields: backend id → {ip, port, proto}. */
const DUMPED_MAP = 'sl_lb_backend';

export async function showBpftool(ctx: DemoCtx): Promise<void> {
  const pinned = path.join(ctx.env.node.pinDir, DUMPED_MAP);
  scene('The pinned maps carry BTF: bpftool prints named fields');
  const r = await run([BPFTOOL, 'map', 'dump', 'pinned', pinned]);
  check(/"ip"|ip = |"port"/.test(r.stdout), `bpftool prints the named fields of ${DUMPED_MAP}`, r.stdout.slice(0, 400));
  say(`each backend: id → {ip (16 bytes, IPv4 as ::ffff:a.b.c.d), port, proto}`);
  shell(`bpftool map dump pinned ${pinned}`, r.stdout, { maxLines: 30 });
}

export async function showDoctor(ctx: DemoCtx): Promise<void> {
  scene('sluice doctor: what is, checked against what should be');
  if (!ctx.features.commands.has('doctor')) return notInThisBuild('sluice doctor');
  const r = await sluice(ctx.env, ['doctor'], true);
  shell('sluice doctor', r.stdout + r.stderr, { maxLines: 40, exitCode: r.code });
}

/** Traffic from every kind of pod of the demo, so the monitor has decisions of each kind to show. */
async function traffic(ctx: DemoCtx): Promise<void> {
  const from = [ctx.env.client, ctx.sidecarPod, ctx.ambientPod].filter((p) => p !== undefined);
  for (const pod of from) await probe(ctx.env, VIP, SVC_PORT, { from: pod, count: 2, timeoutMs: 1000 });
}

export async function showMonitor(ctx: DemoCtx): Promise<void> {
  scene("sluice monitor: the datapath's decisions, live");
  if (!ctx.features.commands.has('monitor')) return notInThisBuild('sluice monitor');
  const { env } = ctx;
  const mon = env.node.spawn([SLUICE, 'monitor', '--config', env.configPath], { inCgroup: false });
  try {
    say('connections from the client, the sidecar pod and the ambient pod while the monitor is attached:');
    // Events flow only while a monitor is attached, and attaching takes a moment: send traffic
    // until decisions show up (bounded: 20 rounds).
    const decisions = () =>
      env.node
        .output(mon)
        .stdout.split('\n')
        .filter((l) => l.trim() !== '');
    await waitFor(
      'sluice monitor to print decisions',
      async () => {
        if (env.node.output(mon).exited) throw new Error(`sluice monitor exited: ${env.node.output(mon).stderr.slice(-1000)}`);
        await traffic(ctx);
        return decisions().length >= 6;
      },
      20 * 1000,
      100,
    );
    shell('sluice monitor', decisions().slice(0, 12).join('\n'), { maxLines: 12 });
  } finally {
    const gone = new Promise((resolve) => mon.once('close', resolve));
    if (!env.node.output(mon).exited) mon.kill('SIGINT');
    await gone;
  }
}

export async function showMetrics(ctx: DemoCtx): Promise<void> {
  scene('Metrics: what Prometheus scrapes');
  if (!ctx.features.configKeys.has('prometheus-serve-addr')) return notInThisBuild('prometheus-serve-addr (/metrics)');
  const url = `http://${METRICS_ADDR}/metrics`;
  // The agent runs in the simulated node's network namespace: its loopback is where it listens.
  const r = await run(['nsenter', `--net=${ctx.env.node.netnsPath}`, '--', 'curl', '-sS', '--max-time', '5', url], {
    allowFail: true,
  });
  check(r.code === 0, `curl ${url} in the node's network namespace`, r.stderr);
  const samples = r.stdout.split('\n').filter((l) => l.startsWith('sluice_'));
  check(samples.length > 0, '/metrics carries sluice_ samples', r.stdout.slice(0, 400));
  say(
    `the agent serves ${METRICS_ADDR} in the node's namespace (prometheus-serve-addr); ${samples.length} sluice_ samples, a few of them:`,
  );
  // One sample per metric name, so the sample shows the breadth; a histogram by its _count.
  const seen = new Set<string>();
  const one = samples.filter((l) => {
    const name = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(l)![0];
    if (/_(bucket|sum)$/.test(name)) return false;
    const metric = name.replace(/_count$/, '');
    if (seen.has(metric)) return false;
    seen.add(metric);
    return true;
  });
  shell(`curl -s ${url} | grep ^sluice_`, one.join('\n'), { maxLines: 16 });
}
