/* The processes in a cgroup (v2) and below it, read from /proc: what the datapath's cgroup
 * programs act on (repair looks for pods' namespaces among them, map migration for socket owners).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cgroup2Mount } from './config';

/** Pids of the processes in cgroupRoot or below it; a process that ends while it is read is left out. */
export function pidsUnder(cgroupRoot: string, mount = cgroup2Mount()): number[] {
  const root = cgroupRoot.endsWith('/') ? cgroupRoot : cgroupRoot + '/';
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    try {
      const line = fs
        .readFileSync(`/proc/${pid}/cgroup`, 'utf8')
        .split('\n')
        .find((l) => l.startsWith('0::'));
      if (!line) continue;
      const cg = path.join(mount, line.slice(3));
      if (cg === cgroupRoot || cg.startsWith(root)) out.push(pid);
    } catch {
      /* the process ended while we looked */
    }
  }
  return out;
}
