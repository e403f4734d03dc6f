/* What the kernel holds, read from the pinned maps once per scrape (never polled in between):
 * how full each map is, the frontends and backends programmed, the datapath counters, the
 * per-pod capture counters and the mode each registered pod is captured in. Read from the pins,
 * not from the agent's intentions, like `sluice bpf lb list` and `sluice endpoint list`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { PodRegistration } from '../agent/pod-registry';
import { censusPinnedMap } from '../bpf';
import { svcKeySlot, type CounterName, type MeshMode } from '../bpf/layout';
import { PINNED_MAPS } from '../datapath';
import { LbMaps } from '../lb/maps';
import { CaptureMaps } from '../mesh/maps';

/** The per-pod capture counters of sl_ep_stats, by the names the metric labels them with. */
export const CAPTURE_DIRECTIONS = ['outbound', 'inbound', 'proxy_bypass', 'no_listener'] as const;
export type CaptureDirection = (typeof CAPTURE_DIRECTIONS)[number];

export interface KernelView {
  /** pinned map name -> entries / max_entries, for the maps that fill up */
  pressure: Map<string, number>;
  /** service entries (slot 0) of sl_lb_svc: one per VIP, port and protocol */
  frontends: number;
  /** entries of sl_lb_backend: distinct backend address, port and protocol */
  backends: number;
  /** sl_lb_counters summed over CPUs */
  datapath: Record<CounterName, number>;
  /** sl_ep_stats per pod netns cookie */
  podCounters: Map<bigint, Record<CaptureDirection, number>>;
  /** registered pods by the mode sl_endpoints holds for them (none: no entry) */
  modes: Record<MeshMode, number>;
}

/** Reads the pins under pinDir; undefined while the datapath is not installed yet. */
export function readKernelView(
  pinDir: string,
  registrations: ReadonlyArray<Pick<PodRegistration, 'netnsCookie'>>,
): KernelView | undefined {
  if (!fs.existsSync(path.join(pinDir, 'sl_lb_svc'))) return undefined;
  const pressure = new Map<string, number>();
  let frontends = 0;
  let backends = 0;
  for (const name of PINNED_MAPS) {
    const pin = path.join(pinDir, name);
    if (!fs.existsSync(pin)) continue;
    // sl_lb_svc's service entries are its slot-0 keys (slots 1..n hold the backends)
    const c = censusPinnedMap(
      pin,
      name !== 'sl_lb_svc'
        ? undefined
        : (keys, at) => {
            if (svcKeySlot(keys, at) === 0) frontends++;
          },
    );
    if (c.entries === undefined) continue;
    pressure.set(name, c.maxEntries > 0 ? c.entries / c.maxEntries : 0);
    if (name === 'sl_lb_backend') backends = c.entries;
  }

  const lb = LbMaps.open(pinDir);
  let datapath: Record<CounterName, number>;
  try {
    datapath = lb.readCounters();
  } finally {
    lb.close();
  }

  const capture = CaptureMaps.open(pinDir);
  const podCounters = new Map<bigint, Record<CaptureDirection, number>>();
  const modes: Record<MeshMode, number> = { sidecar: 0, ambient: 0, none: 0 };
  try {
    for (const [cookie, st] of capture.stats.entries()) {
      podCounters.set(cookie, {
        outbound: Number(st.outbound),
        inbound: Number(st.inbound),
        proxy_bypass: Number(st.proxyBypass),
        no_listener: Number(st.noListener),
      });
    }
    for (const reg of registrations) {
      const policy = reg.netnsCookie ? capture.endpoints.get(BigInt(reg.netnsCookie)) : undefined;
      modes[policy?.mode ?? 'none']++;
    }
  } finally {
    capture.close();
  }
  return { pressure, frontends, backends, datapath, podCounters, modes };
}
