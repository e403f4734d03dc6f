/* `make demo`: the whole mission on one simulated node, narrated for a cluster operator, in under
 * a minute. sluice chains into an existing conflist, load-balances a Service at the socket,
 * captures an Istio sidecar pod while load-balancing its proxy, enrols an ambient namespace live
 * and hands its pod to a ztunnel stand-in over ZDS; then the operator's views (bpftool, doctor,
 * monitor, metrics) and uninstall.
 *
 * Safety: everything lives in the kernel-test harness's node (its own network namespaces, cgroup,
 * bpffs directory and work directory; agent socket, state, ZDS socket and metrics ports are
 * test-local, never the production defaults). The node is destroyed in `finally`, and on Ctrl-C
 * or SIGTERM by the harness's signal handlers.
 */
import * as fs from 'node:fs';
import { ROOT, SLUICE, stopAgent } from '../kernel/lb-env';
import { showAmbient } from './ambient';
import { createDemoNode, showChaining } from './chaining';
import type { DemoCtx } from './context';
import { detectFeatures } from './features';
import { showBpftool, showDoctor, showMetrics, showMonitor } from './inspect';
import { say, scene } from './narrate';
import { showSidecar } from './sidecar';
import { showSocketLb } from './socket-lb';
import { showUninstall } from './uninstall';

const NEEDED = ['bin/sluice', 'bin/sluice-cni', 'build/dist/cli.js', 'build/sl-probe', 'build/zt-standin'];

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo needs root (network namespaces, cgroups, eBPF)');
  const missing = NEEDED.filter((f) => !fs.existsSync(`${ROOT}/${f}`));
  if (missing.length) throw new Error(`${missing.join(', ')} missing in ${ROOT}: run \`make all\` first`);
  const t0 = Date.now();
  const features = await detectFeatures(SLUICE);
  let ctx: DemoCtx | undefined;
  try {
    ctx = await createDemoNode(features);
    await showChaining(ctx);
    await showSocketLb(ctx);
    await showSidecar(ctx);
    await showAmbient(ctx);
    await showBpftool(ctx);
    await showDoctor(ctx);
    await showMonitor(ctx);
    await showMetrics(ctx);
    await showUninstall(ctx);
  } finally {
    if (ctx) {
      await stopAgent(ctx.env).catch(() => undefined);
      await ctx.env.node.destroy();
      scene('Cleaned up');
      say(
        `namespaces, cgroup, pins and files of node ${ctx.env.node.id} removed${ctx.env.node.destroyReport.length ? ` (with warnings: ${ctx.env.node.destroyReport.join('; ')})` : ''}; ${((Date.now() - t0) / 1000).toFixed(1)} s in all`,
      );
    }
  }
}

main().catch((e) => {
  process.stderr.write(`demo failed: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
