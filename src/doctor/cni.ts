/* The CNI chain as the container runtime will run it: the config file it loads from cni-conf-dir
 * (the first loadable one by name, as libcni, containerd and CRI-O choose) must end with exactly
 * one sluice-cni entry that talks to this agent, and the sluice-cni binary in cni-bin-dir must be
 * this sluice's build (same bytes: the plugin has no version string of its own).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { packageRoot } from '../bpf';
import {
  compareFileNames,
  isConfigFileName,
  isSluiceEntry,
  parseCniConfig,
  SLUICE_PLUGIN_TYPE,
  type JsonObject,
} from '../cni/conflist';
import type { Config } from '../config';
import { fail, ok, type CheckResult } from './report';

export interface CniFacts {
  confDir: string;
  /** cni-conf-dir is set: the agent manages the chain */
  managed: boolean;
  /** cni-conf-file-name, when set */
  confFileName?: string;
  agentSocket: string;
  /** config files of confDir by name, or why the directory could not be read */
  files?: Array<{ name: string; text: string }>;
  dirError?: string;
  installedBinary: { path: string; sha256?: string; error?: string };
  agentBinary: { path: string; sha256?: string; error?: string };
}

function hashFile(file: string): { path: string; sha256?: string; error?: string } {
  try {
    return { path: file, sha256: createHash('sha256').update(fs.readFileSync(file)).digest('hex') };
  } catch (e) {
    return { path: file, error: (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : (e as Error).message };
  }
}

export function gatherCniFacts(cfg: Config): CniFacts {
  const facts: CniFacts = {
    confDir: cfg.cniConfDir,
    managed: cfg.cniConfDir !== '',
    confFileName: cfg.cniConfFileName || undefined,
    agentSocket: cfg.agentSocket,
    installedBinary: hashFile(path.join(cfg.cniBinDir, SLUICE_PLUGIN_TYPE)),
    agentBinary: hashFile(path.join(packageRoot(), 'bin', SLUICE_PLUGIN_TYPE)),
  };
  if (!facts.managed) return facts;
  try {
    facts.files = fs
      .readdirSync(cfg.cniConfDir)
      .filter(isConfigFileName)
      .flatMap((name) => {
        const file = path.join(cfg.cniConfDir, name);
        return fs.statSync(file).isFile() ? [{ name, text: fs.readFileSync(file, 'utf8') }] : [];
      });
  } catch (e) {
    facts.dirError = (e as Error).message;
  }
  return facts;
}

/** The file the runtime loads: the first by name that it can parse (libcni's order). */
export function runtimeConfig(files: Array<{ name: string; text: string }>): { name: string; text: string } | undefined {
  return [...files]
    .sort((a, b) => compareFileNames(a.name, b.name))
    .find((f) => parseCniConfig(f.name, f.text).kind !== 'invalid');
}

export function judgeCni(f: CniFacts): CheckResult[] {
  const id = 'cni.chain';
  if (!f.managed) return [ok(id, 'cni-conf-dir is empty: the agent does not manage the CNI chain (not checked)')];
  const fix =
    'start the agent (it chains sluice-cni into the file the runtime loads and keeps it there), or fix cni-conf-dir / cni-conf-file-name';
  if (f.dirError) return [fail(id, `cannot read cni-conf-dir ${f.confDir}: ${f.dirError}`, fix)];
  const out: CheckResult[] = [];
  const loaded = runtimeConfig(f.files ?? []);
  if (!loaded)
    return [
      fail(
        id,
        `no loadable CNI config in ${f.confDir}: the runtime cannot start pods (the primary CNI has not written its config)`,
        'install or fix the primary CNI plugin',
      ),
    ];
  const file = path.join(f.confDir, loaded.name);
  const parsed = parseCniConfig(loaded.name, loaded.text);
  const stem = (n: string) => n.replace(/\.[^.]*$/, '');
  if (f.confFileName && f.confFileName !== loaded.name && stem(f.confFileName) !== stem(loaded.name)) {
    out.push(
      fail(
        id,
        `the runtime loads ${file}, but cni-conf-file-name is ${f.confFileName}: sluice is chained into a file the runtime does not read`,
        'clear cni-conf-file-name, or rename the configs so that the runtime loads that file',
      ),
    );
  }
  if (parsed.kind !== 'list') {
    out.push(
      fail(
        id,
        `${file} (the file the runtime loads) is a single-plugin config: sluice-cni is not in the chain, new pods start uncaptured`,
        fix,
      ),
    );
  } else {
    const types = parsed.plugins.map((p) => String(p.type));
    const entries = parsed.plugins.filter(isSluiceEntry) as JsonObject[];
    if (entries.length === 0)
      out.push(
        fail(
          id,
          `${file} (the file the runtime loads) has no ${SLUICE_PLUGIN_TYPE} entry (plugins: ${types.join(', ')}): new pods start uncaptured`,
          fix,
        ),
      );
    else if (entries.length > 1)
      out.push(fail(id, `${file} has ${entries.length} ${SLUICE_PLUGIN_TYPE} entries (plugins: ${types.join(', ')})`, fix));
    else if (!isSluiceEntry(parsed.plugins[parsed.plugins.length - 1])) {
      out.push(
        fail(
          id,
          `${SLUICE_PLUGIN_TYPE} is not the last plugin in ${file} (plugins: ${types.join(', ')}): plugins after it change the pod unseen`,
          fix,
        ),
      );
    } else {
      const socket = entries[0].agentSocket ?? '/var/run/sluice/agent.sock';
      if (socket !== f.agentSocket)
        out.push(
          fail(
            id,
            `${SLUICE_PLUGIN_TYPE} in ${file} calls the agent at ${String(socket)}, the agent listens at ${f.agentSocket} (agent-socket)`,
            fix,
          ),
        );
    }
  }
  const bin = f.installedBinary;
  const mine = f.agentBinary;
  if (bin.error)
    out.push(
      fail(
        'cni.binary',
        `${bin.path}: ${bin.error}: the runtime cannot run sluice-cni`,
        'start the agent: it installs the binary',
      ),
    );
  else if (mine.error)
    out.push(
      fail('cni.binary', `cannot read this sluice's ${mine.path} to compare: ${mine.error}`, 'run doctor from the agent image'),
    );
  else if (bin.sha256 !== mine.sha256) {
    out.push(
      fail(
        'cni.binary',
        `${bin.path} is not this sluice's build (sha256 ${bin.sha256!.slice(0, 12)}…, this sluice's ${mine.sha256!.slice(0, 12)}…): another version answers the runtime`,
        'restart the agent: it installs its own binary',
      ),
    );
  } else out.push(ok('cni.binary', `${bin.path} is this sluice's build (sha256 ${bin.sha256!.slice(0, 12)}…)`));
  if (!out.some((r) => r.check === id)) {
    const types = parsed.kind === 'list' ? parsed.plugins.map((p) => String(p.type)).join(' → ') : '';
    out.unshift(ok(id, `the runtime loads ${file}: ${types} (sluice-cni last, agent ${f.agentSocket})`));
  }
  return out;
}
