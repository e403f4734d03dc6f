/* Typed handles to the pinned socket-LB maps (see bpf/lib/lb_maps.h). */
import { type BpfMap, openPinnedSet, possibleCpus } from '../bpf';
import {
  affinityKeyCodec,
  affinityValCodec,
  backendCodec,
  COUNTERS,
  perCpuU64Codec,
  svcKeyCodec,
  svcValCodec,
  u32Codec,
  type AffinityKey,
  type AffinityVal,
  type Backend,
  type CounterName,
  type SvcKey,
  type SvcVal,
} from '../bpf/layout';

export class LbMaps {
  private constructor(
    readonly svc: BpfMap<SvcKey, SvcVal>,
    readonly backend: BpfMap<number, Backend>,
    readonly affinity: BpfMap<AffinityKey, AffinityVal>,
    readonly counters: BpfMap<number, bigint>,
  ) {}

  /** Opens the maps pinned under pinDir (works while the agent is down). */
  static open(pinDir: string): LbMaps {
    return openPinnedSet(
      pinDir,
      (open) =>
        new LbMaps(
          open('sl_lb_svc', svcKeyCodec, svcValCodec),
          open('sl_lb_backend', u32Codec, backendCodec),
          open('sl_lb_affinity', affinityKeyCodec, affinityValCodec),
          open('sl_lb_counters', u32Codec, perCpuU64Codec(possibleCpus())),
        ),
    );
  }

  readCounters(): Record<CounterName, number> {
    const out = {} as Record<CounterName, number>;
    COUNTERS.forEach((name, i) => (out[name] = Number(this.counters.get(i) ?? 0n)));
    return out;
  }

  close(): void {
    for (const m of [this.svc, this.backend, this.affinity, this.counters]) m.close();
  }
}
