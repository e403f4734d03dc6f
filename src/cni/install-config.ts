/* The CNI installer as the agent's configuration defines it (shared by the agent and uninstall). */
import * as path from 'node:path';
import { packageRoot } from '../bpf';
import type { Config } from '../config';
import { CniInstaller } from './install';

/**
 * sluice's entry in the conflist. excludeNamespaces (config exclude-namespaces) lets the plugin
 * start pods that would never be captured while the agent is unreachable (cni/dispatch.c), as
 * istio-cni's entry carries exclude_namespaces; the installer rewrites an entry that differs, so a
 * changed key reaches the file when the agent starts again.
 */
export function sluiceCniEntry(cfg: Pick<Config, 'agentSocket' | 'excludeNamespaces'>): Record<string, unknown> {
  return { type: 'sluice-cni', agentSocket: cfg.agentSocket, excludeNamespaces: [...cfg.excludeNamespaces] };
}

export function cniInstaller(cfg: Config): CniInstaller {
  return new CniInstaller({
    confDir: cfg.cniConfDir,
    binDir: cfg.cniBinDir,
    exclusive: cfg.cniExclusive,
    confFileName: cfg.cniConfFileName || undefined,
    pluginBinary: path.join(packageRoot(), 'bin', 'sluice-cni'),
    pluginConf: sluiceCniEntry(cfg),
    backupDir: path.join(cfg.stateDir, 'cni-backup'),
  });
}
