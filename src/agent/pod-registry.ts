/* The registry of pods the CNI plugin announced (pod registrations): one JSON file per attachment
 * under <state-dir>/endpoints, written atomically and durably (fsync'ed) before ADD returns, so
 * registrations survive agent restarts and node crashes, and `sluice endpoint list` can read them
 * while the agent is down.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { removeStaleTempFiles, writeFileAtomic } from '../fs/atomic-write';
import { log } from '../log';

/** One attachment the CNI plugin registered (ADD); the file's JSON fields are what scripts read. */
export interface PodRegistration {
  containerId: string;
  ifName: string;
  /** Kubernetes namespace and name from CNI_ARGS; empty for callers that are not Kubernetes */
  namespace: string;
  name: string;
  uid: string;
  ips: string[];
  /** decimal network-namespace cookie: the pod's identity in the kernel */
  netnsCookie: string;
  netnsPath: string;
  /** the CNI network (conflist name) the attachment belongs to */
  network: string;
  createdAt: string;
}

/** The pod a registration is for, in log lines: `namespace/name`, or its container id's start. */
export function podLabel(reg: PodRegistration): string {
  return reg.namespace || reg.name ? `${reg.namespace}/${reg.name}` : reg.containerId.slice(0, 12);
}

/** Named `endpoints` as Cilium names its per-pod state; kept so existing nodes' registrations are read. */
function registryDir(stateDir: string): string {
  return path.join(stateDir, 'endpoints');
}

/** File name of an attachment: container ids and interface names are [A-Za-z0-9_.-] in practice. */
function fileName(containerId: string, ifName: string): string {
  return `${encodeURIComponent(containerId)}_${encodeURIComponent(ifName)}.json`;
}

export class PodRegistry {
  private readonly dir: string;
  private readonly byKey = new Map<string, PodRegistration>();
  private changes = 0;

  constructor(stateDir: string) {
    this.dir = registryDir(stateDir);
  }

  /**
   * Reads the registrations on disk; unreadable files are logged and skipped.
   * @param opts.owner the caller is the agent, the registry's only writer: it also removes the
   *   temp files of writes a crash interrupted. Default true; a reader beside a running agent
   *   (the CLI) passes false, or it could remove a write in flight.
   */
  load(opts: { owner?: boolean } = {}): number {
    fs.mkdirSync(this.dir, { recursive: true });
    if (opts.owner ?? true) removeStaleTempFiles(this.dir);
    this.byKey.clear();
    this.changes++;
    for (const f of fs.readdirSync(this.dir)) {
      if (!f.endsWith('.json') || f.startsWith('.')) continue;
      try {
        const reg = JSON.parse(fs.readFileSync(path.join(this.dir, f), 'utf8')) as PodRegistration;
        if (typeof reg.containerId !== 'string' || typeof reg.ifName !== 'string')
          throw new TypeError('missing containerId/ifName');
        this.byKey.set(fileName(reg.containerId, reg.ifName), reg);
      } catch (e) {
        log.warn('pod registration skipped', { file: f, err: (e as Error).message });
      }
    }
    return this.byKey.size;
  }

  /** Grows with every change of the registrations: readers' caches built from list() compare it. */
  get generation(): number {
    return this.changes;
  }

  get(containerId: string, ifName: string): PodRegistration | undefined {
    return this.byKey.get(fileName(containerId, ifName));
  }

  list(): PodRegistration[] {
    return [...this.byKey.values()].sort(
      (a, b) =>
        `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`) || a.containerId.localeCompare(b.containerId),
    );
  }

  /** Stores (or replaces) a registration durably. */
  put(reg: PodRegistration): void {
    const name = fileName(reg.containerId, reg.ifName);
    fs.mkdirSync(this.dir, { recursive: true });
    writeFileAtomic(path.join(this.dir, name), JSON.stringify(reg, null, 2) + '\n', { mode: 0o644, what: 'pod registration' });
    this.byKey.set(name, reg);
    this.changes++;
  }

  /** Removes a registration; false when there was none (DEL is idempotent). */
  remove(containerId: string, ifName: string): PodRegistration | undefined {
    const name = fileName(containerId, ifName);
    const reg = this.byKey.get(name);
    fs.rmSync(path.join(this.dir, name), { force: true });
    this.byKey.delete(name);
    this.changes++;
    return reg;
  }
}

/** Reads the registry directly (for the CLI while the agent may be down). */
export function readPodRegistrations(stateDir: string): PodRegistration[] {
  const registry = new PodRegistry(stateDir);
  if (!fs.existsSync(registryDir(stateDir))) return [];
  registry.load({ owner: false });
  return registry.list();
}
