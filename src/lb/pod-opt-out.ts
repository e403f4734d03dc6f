/* Per-pod opt-out of socket-LB: a pod annotated `socket-lb.sluice.io/disabled: "true"` has its
 * sockets left untranslated (asked of Cilium since 2024, cilium#34225). Keyed in the kernel by
 * the pod's network-namespace cookie (map sl_lb_pod_opt_out), as every per-pod decision in sluice;
 * decided whenever the agent re-decides a registered pod, so a changed annotation takes effect
 * without restarting the pod (sockets already translated keep their backend).
 */
import { type BpfMap, openPinnedSet } from '../bpf';
import { u64Codec, u8Codec } from '../bpf/layout';
import type { Pod } from '../k8s/types';
import { log } from '../log';

export const SOCKET_LB_DISABLED_ANNOTATION = 'socket-lb.sluice.io/disabled';

/**
 * Whether a pod opted out of socket-LB. "true" opts out, "false" or no annotation does not; any
 * other value is not an opt-out and is reported through `invalid` (the pod keeps socket-LB, as
 * with a misspelt annotation name).
 */
export function socketLbDisabled(pod: Pick<Pod, 'metadata'> | undefined): { disabled: boolean; invalid?: string } {
  const value = pod?.metadata.annotations?.[SOCKET_LB_DISABLED_ANNOTATION];
  if (value === undefined || value === 'false') return { disabled: false };
  if (value === 'true') return { disabled: true };
  return {
    disabled: false,
    invalid: `Cannot parse annotation ${SOCKET_LB_DISABLED_ANNOTATION} "${value}": expected "true" or "false"; socket-LB stays on`,
  };
}

export interface OptOutTarget {
  /** decimal network-namespace cookie of the pod */
  netnsCookie: string;
  namespace: string;
  name: string;
}

export class PodLbOptOut {
  /** cookies the kernel holds an opt-out for, as last written or read back */
  private readonly disabled = new Set<string>();
  /** the invalid value last reported per pod, so that a bad annotation is logged once */
  private readonly reported = new Map<string, string>();

  private constructor(private readonly map: BpfMap<bigint, number>) {
    for (const cookie of map.keys()) this.disabled.add(cookie.toString());
  }

  /** Opens the pinned map (the agent's restart path reads back what the kernel holds). */
  static open(pinDir: string): PodLbOptOut {
    return openPinnedSet(pinDir, (open) => new PodLbOptOut(open('sl_lb_pod_opt_out', u64Codec, u8Codec)));
  }

  /** Brings the kernel in line with the pod's annotation; a map write only when it changed. */
  apply(t: OptOutTarget, pod: Pick<Pod, 'metadata'> | undefined): boolean {
    const { disabled, invalid } = socketLbDisabled(pod);
    const key = `${t.namespace}/${t.name}`;
    if (invalid && this.reported.get(t.netnsCookie) !== invalid)
      log.warn('pod annotation ignored', { pod: key, reason: invalid });
    if (invalid) this.reported.set(t.netnsCookie, invalid);
    else this.reported.delete(t.netnsCookie);
    if (disabled === this.disabled.has(t.netnsCookie)) return disabled;
    if (disabled) {
      this.map.set(BigInt(t.netnsCookie), 1);
      this.disabled.add(t.netnsCookie);
    } else {
      this.map.delete(BigInt(t.netnsCookie));
      this.disabled.delete(t.netnsCookie);
    }
    log.info(disabled ? 'socket-LB disabled for pod' : 'socket-LB enabled for pod', { pod: key, netnsCookie: t.netnsCookie });
    return disabled;
  }

  /** The pod is gone (CNI DEL): its entry goes. Idempotent. */
  forget(netnsCookie: string): void {
    this.reported.delete(netnsCookie);
    if (!this.disabled.delete(netnsCookie)) return;
    this.map.delete(BigInt(netnsCookie));
  }

  /** Drops entries of pods no longer registered (deleted while the agent was down). */
  forgetAllBut(known: ReadonlySet<string>): number {
    let n = 0;
    for (const cookie of [...this.disabled]) {
      if (known.has(cookie)) continue;
      this.forget(cookie);
      n++;
    }
    return n;
  }

  isDisabled(netnsCookie: string): boolean {
    return this.disabled.has(netnsCookie);
  }

  close(): void {
    this.map.close();
  }
}
