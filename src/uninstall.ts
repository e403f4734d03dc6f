/* `sluice uninstall`: removes every link (detaching the programs), map and directory that sluice
 * pinned. The agent should be stopped first (a running agent would attach again on restart).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Config } from './config';
import { cniInstaller } from './cni/install-config';
import { inpodRouting } from './bpf';
import { INBOUND_ROUTING, LINKS_DIR, NETNS_LINKS_DIR, PROGS_DIR, TCX_LINKS_DIR, tcxLinkPin, uninstallDatapath } from './datapath';
import { readPodRegistrations } from './agent/pod-registry';

/** The routing rules sluice put into captured pods (source-preserving inbound) go first. */
function removeInpodRouting(cfg: Config): string[] {
  const out: string[] = [];
  for (const reg of readPodRegistrations(cfg.stateDir)) {
    const linkPin = tcxLinkPin(cfg.bpfPinDir, reg.netnsCookie);
    if (!fs.existsSync(linkPin) || !fs.existsSync(reg.netnsPath)) continue;
    try {
      inpodRouting(
        '',
        reg.netnsPath,
        linkPin,
        { ...INBOUND_ROUTING, ipv6: reg.ips.some((ip) => ip.includes(':')) ? 1 : 0 },
        false,
      );
      out.push(`removed the inbound routing of ${reg.namespace}/${reg.name} (${reg.netnsPath})`);
    } catch (e) {
      out.push(`could not remove the inbound routing of ${reg.namespace}/${reg.name}: ${(e as Error).message}`);
    }
  }
  return out;
}

export function uninstall(cfg: Config): string[] {
  const out: string[] = [];
  if (cfg.cniConfDir) out.push(...cniInstaller(cfg).uninstall());
  if (!fs.existsSync(cfg.bpfPinDir)) return [...out, `nothing pinned at ${cfg.bpfPinDir}`];
  out.push(...removeInpodRouting(cfg));
  for (const p of uninstallDatapath(cfg.bpfPinDir)) out.push(`removed ${p}`);
  for (const dir of [NETNS_LINKS_DIR, TCX_LINKS_DIR, LINKS_DIR, PROGS_DIR, '.'].map((d) => path.join(cfg.bpfPinDir, d))) {
    try {
      fs.rmdirSync(dir);
      out.push(`removed ${dir}/`);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOTEMPTY') out.push(`kept ${dir}/: it holds pins sluice did not create (${fs.readdirSync(dir).join(', ')})`);
      else if (code !== 'ENOENT') throw e;
    }
  }
  return out;
}
