/* Where sluice differs from Istio's golden rules and should not: the bugs to fix next.
 *
 * Each entry is a probe of the golden-driven equivalence suite (istio-golden.test.ts) whose
 * outcome in sluice's pod differs from the outcome in the pod running Istio's golden rules. The
 * suite runs each of these probes as `it.fails`, so it turns red when the difference is fixed:
 * then remove the entry. It also checks that both recorded outcomes are still what it observes,
 * so an entry never outlives the behaviour it describes. Outcomes are written as
 * test/kernel/istio-probes.ts explains.
 */

export interface KnownDifference {
  /** the golden file, relative to the repository root (a GOLDEN_CASES entry) */
  golden: string;
  /** the probe's name (see probeMatrix) */
  probe: string;
  /** what the connection does under Istio's golden rules */
  istio: string;
  /** what it does under sluice */
  sluice: string;
  /** the rule that differs, as far as the rules and sluice's code tell */
  cause: string;
}

// None left. The suite's first run found 20 (three causes), all fixed in sluice since:
//  - istio-cni's default excludeOutboundPorts "15020" when the annotation is absent;
//  - the proxy's gid alone reaching Istio's gid ISTIO_IN_REDIRECT rule when an included range
//    covers loopback (Istio then drops its "-o lo ! --gid-owner RETURN" rule);
//  - the same gid rule taking TCP port 53 with DNS capture (only the uid rule excludes 53).
export const KNOWN_DIFFERENCES: KnownDifference[] = [];
