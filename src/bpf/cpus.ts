/* The number of possible CPUs: the stride of per-CPU map values as user space sees them. */
import * as fs from 'node:fs';

let cached: number | undefined;

export function possibleCpus(): number {
  if (cached !== undefined) return cached;
  const text = fs.readFileSync('/sys/devices/system/cpu/possible', 'utf8').trim();
  let n = 0;
  for (const part of text.split(',')) {
    const [a, b] = part.split('-').map(Number);
    n += b === undefined ? 1 : b - a + 1;
  }
  cached = n;
  return n;
}
