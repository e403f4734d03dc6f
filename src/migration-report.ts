/* `sluice bpf migrate` output: one line per map, what happened to it and why. */
import type { MapMigration } from './bpf';

export function formatMigration(maps: MapMigration[]): string {
  const width = Math.max(...maps.map((m) => m.map.length), 8) + 2;
  const lines = maps.map((m) => {
    const head = `${m.map.padEnd(width)}${m.action}`;
    const parts: string[] = [];
    if (m.reason) parts.push(m.reason);
    if (m.converter) parts.push(`converter ${m.converter}`);
    if (m.entries !== undefined) parts.push(`${m.copied ?? 0} of ${m.entries} entries copied`);
    if (m.caughtUp) parts.push(`${m.caughtUp} added meanwhile copied after the swap`);
    if (m.added?.length) parts.push(`added ${m.added.join(', ')}`);
    if (m.dropped?.length) parts.push(`dropped ${m.dropped.join(', ')}`);
    if (m.lost) parts.push(`lost: ${m.lost}`);
    if (m.action === 'removed' && m.from) parts.push(m.from);
    return parts.length ? `${head}: ${parts.join('; ')}` : head;
  });
  return lines.join('\n') + '\n';
}
