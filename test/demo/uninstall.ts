/* Scene 9: uninstall. The demo's meshed pods are deleted the way a runtime deletes them (CNI DEL
 * through the chain), the agent stops, and `sluice uninstall` removes the chain entry, the plugin,
 * every program and every pin: the primary's conflist is byte for byte what it was.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { run } from '../harness';
import { probe, sluice, stopAgent } from '../kernel/lb-env';
import { BPFTOOL, SVC_PORT, VIP, type DemoCtx } from './context';
import { check, say, scene, shell } from './narrate';

export async function showUninstall(ctx: DemoCtx): Promise<void> {
  const { env } = ctx;
  scene('Uninstall');
  for (const pod of [ctx.sidecarPod, ctx.ambientPod]) {
    if (pod) await env.node.removePod(pod); // CNI DEL through bridge + sluice-cni, as a runtime does
  }
  const left = JSON.parse((await sluice(env, ['endpoint', 'list', '-o', 'json'])).stdout) as unknown[];
  check(left.length === 0, 'CNI DEL deregistered the deleted pods', left);
  say('the meshed pods are deleted (CNI DEL through the chain deregisters them), the agent stops, then:');
  await stopAgent(env);
  const out = await sluice(env, ['uninstall']);
  shell('sluice uninstall', out.stdout + out.stderr, { maxLines: 40 });

  const conflist = fs.readFileSync(ctx.conflistPath, 'utf8');
  check(conflist === ctx.conflistBefore, "the primary's conflist is byte for byte what it was", conflist);
  check(!fs.existsSync(path.join(env.binDir, 'sluice-cni')), 'the sluice-cni binary is removed');
  check(!fs.existsSync(env.node.pinDir), `${env.node.pinDir} is removed`);
  const cg = await run([BPFTOOL, 'cgroup', 'show', env.node.cgroupPath]);
  check(cg.stdout.trim() === '', `no program is attached to ${env.node.cgroupPath}`, cg.stdout);
  const [r] = await probe(env, VIP, SVC_PORT, { timeoutMs: 300 });
  check(r !== undefined && !r.ok, `${VIP}:${SVC_PORT} is no longer translated`, r);
  say(`the conflist is back to the primary's own bytes, ${env.node.pinDir} is gone, nothing is attached to the cgroup,`);
  say(
    `and ${VIP}:${SVC_PORT} is not translated any more (the connect fails, errno ${r.errno ?? '-'}: nothing serves that address)`,
  );
  shell(`cat ${path.basename(ctx.conflistPath)}`, conflist);
}
