/* The CNI installer as the agent's configuration defines it (shared by the agent and uninstall). */
import * as path from 'node:path';
import { packageRoot } from '../bpf';
import type { Config } from '../config';
import { CniInstaller } from './install';

export function cniInstaller(cfg: Config): CniInstaller {
  return new CniInstaller({
    confDir: cfg.cniConfDir,
    binDir: cfg.cniBinDir,
    exclusive: cfg.cniExclusive,
    confFileName: cfg.cniConfFileName || undefined,
    pluginBinary: path.join(packageRoot(), 'bin', 'sluice-cni'),
    pluginConf: { type: 'sluice-cni', agentSocket: cfg.agentSocket },
    backupDir: path.join(cfg.stateDir, 'cni-backup'),
  });
}
