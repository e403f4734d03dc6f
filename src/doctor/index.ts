/* `sluice doctor`: what is, not what is intended. Each group of checks gathers its facts from the
 * kernel, the pins, the state dir, the cluster objects and (when it answers) the agent, then
 * judges them; a group that cannot run at all becomes one failed line instead of stopping the rest.
 */
import type { Config } from '../config';
import { gatherAgentFacts, judgeAgent } from './agent';
import { gatherCniFacts, judgeCni } from './cni';
import { judgeCluster } from './cluster';
import { gatherKernelFacts, judgeKernel } from './kernel';
import { gatherLbFacts, judgeLb } from './lb';
import { gatherMapUsage, judgeMapPressure } from './map-pressure';
import { judgeCompat } from './mesh-compat';
import { readClusterObjects, type ClusterObjects } from './objects';
import { gatherPodFacts, judgePods } from './pods';
import { gatherProgramFacts, judgeLinks, judgeSettings } from './programs';
import { buildReport, fail, type CheckResult, type DoctorReport } from './report';

export { exitCode, formatReport, type CheckResult, type CheckStatus, type DoctorReport } from './report';

async function section(out: CheckResult[], check: string, run: () => CheckResult[] | Promise<CheckResult[]>): Promise<void> {
  try {
    out.push(...(await run()));
  } catch (e) {
    out.push(fail(check, `the check could not run: ${(e as Error).message}`));
  }
}

export async function runDoctor(cfg: Config): Promise<DoctorReport> {
  const out: CheckResult[] = [];
  const agent = await gatherAgentFacts(cfg);
  out.push(...judgeAgent(agent));
  let pinned = false;
  await section(out, 'kernel', () => {
    const k = gatherKernelFacts(cfg);
    pinned = k.pinDir.exists && k.pinDir.fstype === 'bpf';
    return judgeKernel(k);
  });
  if (pinned) {
    await section(out, 'datapath.links', () => {
      const p = gatherProgramFacts(cfg, agent.hostNetnsCookie ?? 0n, agent.hostNetnsCookieFrom);
      return [...judgeLinks(p), ...judgeSettings(p)];
    });
    await section(out, 'maps.pressure', () => judgeMapPressure(gatherMapUsage(cfg.bpfPinDir)));
  } else {
    out.push(
      fail(
        'datapath.links',
        `nothing pinned under bpf-pin-dir ${cfg.bpfPinDir}: no program is attached by sluice`,
        'start the agent',
      ),
    );
  }
  let objects: ClusterObjects | undefined;
  let objectsError: string | undefined;
  try {
    objects = await readClusterObjects(cfg);
  } catch (e) {
    objectsError = (e as Error).message;
  }
  if (pinned) await section(out, 'lb.services', () => judgeLb(gatherLbFacts(cfg, objects, objectsError)));
  await section(out, 'cni.chain', () => judgeCni(gatherCniFacts(cfg)));
  await section(out, 'pods.mode', async () => judgePods(await gatherPodFacts(cfg, agent, objects)));
  if (objects) {
    const o = objects;
    await section(out, 'cluster.source', () => judgeCluster(cfg, o));
    // objects that could not be read at all prove no absence: the checklist says nothing then
    const unread = (o.source === 'api' && !o.api?.reachable) || o.unreadable.some((u) => u.what.startsWith('objects directory'));
    if (!unread) await section(out, 'compat.visible', () => judgeCompat(cfg, o));
  } else out.push(fail('cluster.source', `cannot read the cluster objects: ${objectsError}`));
  return buildReport(out);
}
