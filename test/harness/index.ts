/* Public API of the kernel-test harness. */

export { run, sleep, waitFor, showCmd, RunError } from './exec';
export type { RunOpts, RunResult } from './exec';

export {
  cniAdd,
  cniDel,
  cniCheck,
  invokePlugin,
  buildPluginConfig,
  cniArgsString,
  findPlugin,
  CniPluginError,
} from './cni';
export type { CniConfList, CniPluginConf, CniRuntimeConf, CniCommand, CniResult } from './cni';

export {
  createNode,
  destroyAllNodesSync,
  ipInCidr,
  firstHost,
  DEFAULT_CNI_BIN_DIR,
  BRIDGE_NAME,
} from './sim-node';
export type { SimNode, SimPod, SpawnOpts, AddPodOpts, CreateNodeOpts, ChildOutput } from './sim-node';

export {
  sweepStale,
  sweepStaleSync,
  ensureBpffs,
  bpffsMounted,
  findCgroup2Mount,
  PREFIX,
} from './cleanup';
export type { SweepReport } from './cleanup';

export { joinNodes } from './join';
