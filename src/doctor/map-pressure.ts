/* Map pressure, as Cilium's bpf_map_pressure: entries / max_entries of every pinned map that has a
 * bound (hash, LRU and sockhash maps; arrays are always full, socket storage has no bound).
 * Above 0.9 is a warning; a full map that is not LRU refuses new entries, which fails.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BpfMap } from '../bpf';
import { PINNED_MAPS } from '../datapath';
import { fail, ok, warn, type CheckResult } from './report';

export const PRESSURE_WARN = 0.9;

const MAP_TYPE = { hash: 1, percpuHash: 5, lruHash: 9, lruPercpuHash: 10, sockhash: 18 } as const;
const COUNTED_TYPES = new Set<number>(Object.values(MAP_TYPE));
const LRU_TYPES = new Set<number>([MAP_TYPE.lruHash, MAP_TYPE.lruPercpuHash]);

/** The config key that sizes a map; the others are sized in the object (bpf/lib/*_maps.h). */
const SIZE_KEYS: Record<string, string> = {
  sl_lb_svc: 'bpf-lb-service-map-max',
  sl_lb_backend: 'bpf-lb-backend-map-max',
  sl_lb_affinity: 'bpf-lb-affinity-map-max',
};

export interface MapUsage {
  name: string;
  type: number;
  maxEntries: number;
  entries: number;
}

/** Usage of every pinned map with a bound; maps that cannot be opened are reported apart (each line names its map). */
export function gatherMapUsage(pinDir: string): { maps: MapUsage[]; errors: string[] } {
  const maps: MapUsage[] = [];
  const errors: string[] = [];
  for (const name of PINNED_MAPS) {
    const pin = path.join(pinDir, name);
    if (!fs.existsSync(pin)) {
      errors.push(`map ${name} is not pinned at ${pin}`);
      continue;
    }
    let m: BpfMap<Buffer, Buffer> | undefined;
    try {
      m = BpfMap.openPinnedRaw(pin);
      const info = m.info();
      if (COUNTED_TYPES.has(info.type))
        maps.push({ name, type: info.type, maxEntries: info.maxEntries, entries: m.keys().length });
    } catch (e) {
      // the loader's message names the pin and the cause
      errors.push((e as Error).message);
    } finally {
      m?.close();
    }
  }
  return { maps, errors };
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

export function judgeMapPressure(usage: { maps: MapUsage[]; errors: string[] }): CheckResult[] {
  const id = 'maps.pressure';
  const out: CheckResult[] = [];
  for (const e of usage.errors) out.push(fail(id, `cannot read the maps: ${e}`, 'restart the agent: it pins every map at start'));
  for (const m of usage.maps) {
    const p = m.maxEntries ? m.entries / m.maxEntries : 0;
    // kept for a switch to or from v0.1.0 only (bpf/lib/capture_maps.h): this release never
    // reads its own connections' entries from it, so an eviction costs nothing here
    if (p <= PRESSURE_WARN || m.name === 'sl_origdst') continue;
    const lru = LRU_TYPES.has(m.type);
    const fix = SIZE_KEYS[m.name]
      ? `raise ${SIZE_KEYS[m.name]} and restart the agent (it migrates the map to the new size, entries and all)`
      : `the size of ${m.name} is fixed in bpf/lib/*_maps.h: build sluice with a larger one`;
    const msg = `${m.name} is ${pct(p)} full (${m.entries}/${m.maxEntries})`;
    if (p >= 1 && !lru) out.push(fail(id, `${msg}: new entries are refused`, fix));
    else out.push(warn(id, lru ? `${msg}: the oldest entries are being evicted` : msg, fix));
  }
  if (out.length === 0) {
    const top = [...usage.maps].sort((a, b) => b.entries / (b.maxEntries || 1) - a.entries / (a.maxEntries || 1))[0];
    out.push(
      ok(
        id,
        `every map below ${pct(PRESSURE_WARN)}` +
          (top ? `; highest ${top.name} ${pct(top.entries / (top.maxEntries || 1))} (${top.entries}/${top.maxEntries})` : ''),
      ),
    );
  }
  return out;
}
