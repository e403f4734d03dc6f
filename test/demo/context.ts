/* What the demo's scenes share: the simulated node with the agent (a MeshEnv of the kernel
 * suites), what this build has, and the addresses the story uses.
 */
import type { SimPod } from '../harness';
import type { MeshEnv } from '../kernel/mesh-env';
import type { BuildFeatures } from './features';

export const BPFTOOL = 'bpftool';

/** The Service every scene talks to (a ClusterIP outside the harness's pod ranges). */
export const VIP = '10.96.0.10';
export const SVC_PORT = 80;

/**
 * Where the agent serves /metrics and /healthz when this build has those keys: loopback inside
 * the simulated node's own network namespace, never the production ports of the machine.
 */
export const METRICS_ADDR = '127.0.0.1:19967';
export const HEALTH_ADDR = '127.0.0.1:19968';

export interface DemoCtx {
  env: MeshEnv;
  features: BuildFeatures;
  /** the primary's conflist file and its bytes before sluice chained itself in */
  conflistPath: string;
  conflistBefore: string;
  /** pods the scenes add, for later scenes (monitor traffic) */
  sidecarPod?: SimPod;
  ambientPod?: SimPod;
}
