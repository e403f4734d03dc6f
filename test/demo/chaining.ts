/* Scene 1: the simulated node and sluice chaining itself into the primary CNI's conflist,
 * non-exclusively (the primary's entries and every other file stay as they are).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createLbEnv, startAgent, writeConfig } from '../kernel/lb-env';
import type { MeshEnv } from '../kernel/mesh-env';
import { HEALTH_ADDR, METRICS_ADDR, type DemoCtx } from './context';
import type { BuildFeatures } from './features';
import { check, say, scene, shell } from './narrate';

/** The file name mesh-env's addMeshPod reads the installed sluice entry from. */
const PRIMARY_FILE = '10-podnet.conflist';

/** The node, its pods (a client and two backends serving TCP 8080) and the primary's conflist; no agent yet. */
export async function createDemoNode(features: BuildFeatures): Promise<DemoCtx> {
  scene('A simulated node: a network namespace, pods wired by the reference CNI plugins');
  const env = (await createLbEnv({ backends: 2 })) as MeshEnv;
  env.confDir = path.join(env.node.workDir, 'net.d');
  env.binDir = path.join(env.node.workDir, 'cni-bin');
  env.stateDir = path.join(env.node.workDir, 'state');
  fs.mkdirSync(env.confDir);
  const conflistPath = path.join(env.confDir, PRIMARY_FILE);
  const primary = {
    cniVersion: '1.0.0',
    name: 'podnet',
    plugins: [{ type: 'bridge', bridge: 'slbr0', ipam: { type: 'host-local' } }],
  };
  fs.writeFileSync(conflistPath, JSON.stringify(primary, null, 2) + '\n');
  // Test-local paths and ports only (writeConfig adds pins, cgroup, agent socket, ZDS socket).
  const extra: Record<string, string> = { 'cni-conf-dir': env.confDir, 'cni-bin-dir': env.binDir, 'state-dir': env.stateDir };
  if (features.configKeys.has('prometheus-serve-addr')) extra['prometheus-serve-addr'] = METRICS_ADDR;
  if (features.configKeys.has('health-serve-addr')) extra['health-serve-addr'] = HEALTH_ADDR;
  writeConfig(env, extra);

  say(`node ${env.node.id}: pods on ${env.node.cidr4} and ${env.node.cidr6}, bridge slbr0, cgroup and pins of its own`);
  for (const p of [env.client, ...env.backends]) say(`  pod ${p.name.padEnd(7)} ${p.ipv4.padEnd(14)} ${p.ipv6 ?? ''}`);
  say(`sluice commands below run with --config ${env.configPath}`);
  return { env, features, conflistPath, conflistBefore: fs.readFileSync(conflistPath, 'utf8') };
}

export async function showChaining(ctx: DemoCtx): Promise<void> {
  const { env } = ctx;
  scene('sluice chains itself into the primary CNI config (non-exclusive)');
  say('the runtime loads this conflist: the primary network (bridge + host-local) alone');
  const filesBefore = fs.readdirSync(env.confDir).join('\n');
  shell(`ls ${env.confDir}`, filesBefore);
  shell(`cat ${path.basename(ctx.conflistPath)}`, ctx.conflistBefore);

  say('the agent starts (standalone mode: Kubernetes objects from a directory of YAML)');
  await startAgent(env);
  const after = fs.readFileSync(ctx.conflistPath, 'utf8');
  const plugins = (JSON.parse(after) as { plugins: Array<{ type: string }> }).plugins;
  check(plugins.map((p) => p.type).join(',') === 'bridge,sluice-cni', 'the agent appended sluice-cni after bridge', after);
  check(
    JSON.stringify(plugins[0]) === JSON.stringify((JSON.parse(ctx.conflistBefore) as { plugins: unknown[] }).plugins[0]),
    "the primary's own entry is unchanged",
    plugins[0],
  );
  const filesAfter = fs.readdirSync(env.confDir).join('\n');
  check(filesAfter === filesBefore, 'no file in the conf dir was renamed, added or removed', filesAfter);
  say("sluice-cni is appended last; the primary's entry is untouched and no file is renamed or added:");
  shell(`ls ${env.confDir}`, filesAfter);
  shell(`cat ${path.basename(ctx.conflistPath)}`, after);
}
