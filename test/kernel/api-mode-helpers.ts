/* Adding a pod through the CNI chain in API mode (the Pod object lives in the stand-in API). */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { SimPod } from '../harness';
import type { MeshEnv } from './mesh-env';

export async function addPodThroughChain(env: MeshEnv, name: string, namespace = 'default'): Promise<SimPod> {
  const list = JSON.parse(fs.readFileSync(path.join(env.confDir, '10-podnet.conflist'), 'utf8'));
  const entry = list.plugins.find((p: { type: string }) => p.type === 'sluice-cni');
  return env.node.addPod(name, { namespace, extraPlugins: [entry], binDirs: [env.binDir] });
}
