/* Node-wide totals of per-pod kernel counters (sl_ep_stats) that stay monotonic, as a Prometheus
 * counter must, while pods come and go: a pod's entry is deleted when it is released, and
 * re-created at zero when it is enrolled again. What a pod had counted at the last scrape before
 * its entry vanished (or was reset) is kept in a retired sum; increments between that scrape and
 * the deletion are not seen (the kernel dropped them with the entry).
 */

export class PodCounterTotals<F extends string> {
  /** per pod (netns cookie): the values seen at the last scrape */
  private readonly last = new Map<bigint, Record<F, number>>();
  private readonly retired: Record<F, number>;

  constructor(private readonly fields: readonly F[]) {
    this.retired = zero(fields);
  }

  /** Takes the current per-pod values and returns the node-wide totals. */
  update(current: ReadonlyMap<bigint, Record<F, number>>): Record<F, number> {
    for (const [pod, was] of this.last) {
      const now = current.get(pod);
      // gone, or any field went down (released and enrolled again): its past is retired
      if (!now || this.fields.some((f) => now[f] < was[f])) {
        for (const f of this.fields) this.retired[f] += was[f];
        this.last.delete(pod);
      }
    }
    const total = { ...this.retired };
    for (const [pod, values] of current) {
      this.last.set(pod, { ...values });
      for (const f of this.fields) total[f] += values[f];
    }
    return total;
  }
}

function zero<F extends string>(fields: readonly F[]): Record<F, number> {
  return Object.fromEntries(fields.map((f) => [f, 0])) as Record<F, number>;
}
