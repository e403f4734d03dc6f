/* The registry of pod endpoints the CNI plugin announced: one JSON file per attachment under
 * <state-dir>/endpoints, written atomically and durably (fsync'ed) before ADD returns, so
 * registrations survive agent restarts and node crashes, and `sluice endpoint list` can read them
 * while the agent is down.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { removeStaleTempFiles, writeFileAtomic } from '../fs/atomic-write';
import { log } from '../log';


export interface Endpoint {
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

/** File name of an attachment: container ids and interface names are [A-Za-z0-9_.-] in practice. */
function fileName(containerId: string, ifName: string): string {
  return `${encodeURIComponent(containerId)}_${encodeURIComponent(ifName)}.json`;
}

export class EndpointRegistry {
  private readonly dir: string;
  private readonly byKey = new Map<string, Endpoint>();
  private changes = 0;

  constructor(stateDir: string) {
    this.dir = path.join(stateDir, 'endpoints');
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
        const ep = JSON.parse(fs.readFileSync(path.join(this.dir, f), 'utf8')) as Endpoint;
        if (typeof ep.containerId !== 'string' || typeof ep.ifName !== 'string') throw new TypeError('missing containerId/ifName');
        this.byKey.set(fileName(ep.containerId, ep.ifName), ep);
      } catch (e) {
        log.warn('endpoint record skipped', { file: f, err: (e as Error).message });
      }
    }
    return this.byKey.size;
  }

  /** Grows with every change of the registrations: readers' caches built from list() compare it. */
  get generation(): number {
    return this.changes;
  }

  get(containerId: string, ifName: string): Endpoint | undefined {
    return this.byKey.get(fileName(containerId, ifName));
  }

  list(): Endpoint[] {
    return [...this.byKey.values()].sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`) || a.containerId.localeCompare(b.containerId));
  }

  /** Stores (or replaces) a registration durably. */
  put(ep: Endpoint): void {
    const name = fileName(ep.containerId, ep.ifName);
    fs.mkdirSync(this.dir, { recursive: true });
    writeFileAtomic(path.join(this.dir, name), JSON.stringify(ep, null, 2) + '\n', { mode: 0o644, what: 'endpoint record' });
    this.byKey.set(name, ep);
    this.changes++;
  }

  /** Removes a registration; false when there was none (DEL is idempotent). */
  remove(containerId: string, ifName: string): Endpoint | undefined {
    const name = fileName(containerId, ifName);
    const ep = this.byKey.get(name);
    fs.rmSync(path.join(this.dir, name), { force: true });
    this.byKey.delete(name);
    this.changes++;
    return ep;
  }
}

/** Reads the registry directly (for the CLI while the agent may be down). */
export function readEndpoints(stateDir: string): Endpoint[] {
  const reg = new EndpointRegistry(stateDir);
  if (!fs.existsSync(path.join(stateDir, 'endpoints'))) return [];
  reg.load({ owner: false });
  return reg.list();
}
