/* Typed handles to the pinned capture maps (see bpf/lib/capture_maps.h). */
import * as path from 'node:path';
import { BpfMap, openPinnedSet } from '../bpf';
import {
  addrCodec,
  epStatsCodec,
  origdstStatCodec,
  policyCodec,
  u32Codec,
  u64Codec,
  u8Codec,
  type EpStats,
  type OrigdstStat,
  type Policy,
} from '../bpf/layout';

export class CaptureMaps {
  private constructor(
    readonly endpoints: BpfMap<bigint, Policy>,
    readonly podIps: BpfMap<string, bigint>,
    readonly stats: BpfMap<bigint, EpStats>,
    readonly nodeIps: BpfMap<string, number>,
  ) {}

  static open(pinDir: string): CaptureMaps {
    return openPinnedSet(
      pinDir,
      (open) =>
        new CaptureMaps(
          open('sl_endpoints', u64Codec, policyCodec),
          open('sl_pod_ips', addrCodec, u64Codec),
          open('sl_ep_stats', u64Codec, epStatsCodec),
          open('sl_node_ips', addrCodec, u8Codec),
        ),
    );
  }

  close(): void {
    for (const m of [this.endpoints, this.podIps, this.stats, this.nodeIps]) m.close();
  }
}

/** The node's captured handshakes in flight and the connects refused for want of room (sl_origdst_stat). */
export function readOrigdstStat(pinDir: string): OrigdstStat {
  const m = BpfMap.openPinned(path.join(pinDir, 'sl_origdst_stat'), u32Codec, origdstStatCodec);
  try {
    return m.get(0) ?? { inFlight: 0n, refused: 0n };
  } finally {
    m.close();
  }
}
