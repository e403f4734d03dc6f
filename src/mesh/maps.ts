/* Typed handles to the pinned capture maps (see bpf/lib/capture_maps.h). */
import * as path from 'node:path';
import { BpfMap } from '../bpf';
import { addrCodec, epStatsCodec, policyCodec, u64Codec, u8Codec, type EpStats, type Policy } from '../bpf/layout';

export class CaptureMaps {
  private constructor(
    readonly endpoints: BpfMap<bigint, Policy>,
    readonly podIps: BpfMap<string, bigint>,
    readonly stats: BpfMap<bigint, EpStats>,
    readonly nodeIps: BpfMap<string, number>,
  ) {}

  static open(pinDir: string): CaptureMaps {
    const opened: Array<BpfMap<any, any>> = [];
    const open = <K, V>(name: string, k: any, v: any): BpfMap<K, V> => {
      const m = BpfMap.openPinned<K, V>(path.join(pinDir, name), k, v);
      opened.push(m);
      return m;
    };
    try {
      return new CaptureMaps(
        open('sl_endpoints', u64Codec, policyCodec),
        open('sl_pod_ips', addrCodec, u64Codec),
        open('sl_ep_stats', u64Codec, epStatsCodec),
        open('sl_node_ips', addrCodec, u8Codec),
      );
    } catch (e) {
      for (const m of opened) m.close();
      throw e;
    }
  }

  close(): void {
    for (const m of [this.endpoints, this.podIps, this.stats, this.nodeIps]) m.close();
  }
}
