/*
 * Which endpoints of one service port a node may send a connection to: kube-proxy's rules
 * (kubernetes/kubernetes pkg/proxy/topology.go, CategorizeEndpoints, as of the release that made
 * PreferSameTrafficDistribution GA), restated over sluice's endpoint records so that the socket LB
 * and kube-proxy pick the same set for every Service:
 *  - "Cluster" policy: the ready endpoints, narrowed by topology hints when they apply; when none
 *    is ready, the endpoints that are serving and terminating (topology ignored);
 *  - "Local" policy: this node's ready endpoints, else this node's serving-and-terminating ones;
 *    topology never applies;
 *  - topology comes from the hints alone (the EndpointSlice controller writes them from the
 *    Service's trafficDistribution): node hints when every ready endpoint has one and one names
 *    this node; else zone hints when every ready endpoint has one and one names this node's zone;
 *    else none (all ready endpoints).
 * Pure and free of I/O; model.ts decides which policy each frontend uses.
 */

/** One endpoint of one service port, with what selection reads from its EndpointSlice entry. */
export interface SelectableEndpoint {
  /** Canonical IP (the endpoint's first address). */
  ip: string;
  port: number;
  /** conditions.ready, nil meaning true (kube-proxy's IsReady). */
  ready: boolean;
  /** conditions.serving, nil meaning true. */
  serving: boolean;
  /** conditions.terminating, nil meaning false. */
  terminating: boolean;
  /** nodeName equals this node's name (never true when either is empty). */
  isLocal: boolean;
  /** hints.forZones names; undefined or empty: no zone hint. */
  zoneHints?: readonly string[];
  /** hints.forNodes names; undefined or empty: no node hint. */
  nodeHints?: readonly string[];
}

/** The traffic policies of one service port, in kube-proxy's terms (pkg/proxy/serviceport.go). */
export interface SelectionPolicy {
  /** internalTrafficPolicy: Local */
  internalPolicyLocal: boolean;
  /** externalTrafficPolicy: Local on an externally accessible Service */
  externalPolicyLocal: boolean;
  /** reachable other than through the ClusterIP: a nodePort, a LoadBalancer VIP or an externalIP of this family */
  externallyAccessible: boolean;
}

/** Where the agent runs: its node name and that Node's topology.kubernetes.io/zone ('' when unknown). */
export interface NodeTopology {
  nodeName: string;
  zone: string;
}

/** The topology mode kube-proxy derives from the hints ('' = no topology: every ready endpoint). */
export type TopologyMode = '' | 'PreferSameZone' | 'PreferSameNode';

export interface Selection<E extends SelectableEndpoint> {
  /** Usable endpoints under the Cluster policy; undefined when the port never uses that policy. */
  cluster?: E[];
  /** Usable endpoints under the Local policy; undefined when the port never uses that policy. */
  local?: E[];
  /** Some node has a usable endpoint (true even when `local` is empty). */
  hasAnyEndpoints: boolean;
  topologyMode: TopologyMode;
  /**
   * The Cluster choice looked at this node's zone (every ready endpoint had a zone hint and node
   * hints did not decide): a change of the Node's zone label may change it, nothing else may.
   */
  zoneSensitive: boolean;
}

/** kube-proxy's UsesClusterEndpoints: ITP Cluster, or any external access (ETP Local needs them to short-circuit). */
function usesClusterEndpoints(p: SelectionPolicy): boolean {
  return !p.internalPolicyLocal || p.externallyAccessible;
}

/** kube-proxy's UsesLocalEndpoints. */
function usesLocalEndpoints(p: SelectionPolicy): boolean {
  return p.internalPolicyLocal || (p.externalPolicyLocal && p.externallyAccessible);
}

function hasHint(hints: readonly string[] | undefined, name: string): boolean {
  return hints?.includes(name) ?? false;
}

/** kube-proxy's topologyModeFromHints: which hints apply, judged over the ready endpoints only. */
function topologyFromHints(
  endpoints: readonly SelectableEndpoint[],
  node: NodeTopology,
): { mode: TopologyMode; zoneSensitive: boolean } {
  let hasReady = false;
  let allNodeHints = true;
  let hintedForNode = false;
  let allZoneHints = true;
  let hintedForZone = false;
  for (const e of endpoints) {
    if (!e.ready) continue;
    hasReady = true;
    if (!e.nodeHints?.length) allNodeHints = false;
    else if (hasHint(e.nodeHints, node.nodeName)) hintedForNode = true;
    if (!e.zoneHints?.length) allZoneHints = false;
    else if (hasHint(e.zoneHints, node.zone)) hintedForZone = true;
  }
  if (!hasReady) return { mode: '', zoneSensitive: false };
  if (allNodeHints && hintedForNode) return { mode: 'PreferSameNode', zoneSensitive: false };
  if (allZoneHints) return { mode: hintedForZone ? 'PreferSameZone' : '', zoneSensitive: true };
  return { mode: '', zoneSensitive: false };
}

function availableForTopology(e: SelectableEndpoint, mode: TopologyMode, node: NodeTopology): boolean {
  if (mode === 'PreferSameNode') return hasHint(e.nodeHints, node.nodeName);
  if (mode === 'PreferSameZone') return hasHint(e.zoneHints, node.zone);
  return true;
}

/**
 * Splits the endpoints of one service port (one IP family) into what the Cluster and the Local
 * traffic policies may use on this node. Order is kept; deduplication is the caller's.
 */
export function selectEndpoints<E extends SelectableEndpoint>(
  endpoints: readonly E[],
  policy: SelectionPolicy,
  node: NodeTopology,
): Selection<E> {
  const out: Selection<E> = { hasAnyEndpoints: false, topologyMode: '', zoneSensitive: false };
  if (usesClusterEndpoints(policy)) {
    const topology = topologyFromHints(endpoints, node);
    out.topologyMode = topology.mode;
    out.zoneSensitive = topology.zoneSensitive;
    let cluster = endpoints.filter((e) => e.ready && availableForTopology(e, topology.mode, node));
    // No ready endpoint (topology already fell back to all zones when this one had none): keep
    // connections working on endpoints that still serve while terminating, topology ignored.
    if (cluster.length === 0) cluster = endpoints.filter((e) => e.serving && e.terminating);
    out.cluster = cluster;
    out.hasAnyEndpoints = cluster.length > 0;
  }
  if (!usesLocalEndpoints(policy)) return out;

  let localReady = false;
  let localServingTerminating = false;
  for (const e of endpoints) {
    if (e.ready) {
      out.hasAnyEndpoints = true;
      if (e.isLocal) localReady = true;
    } else if (e.serving && e.terminating) {
      out.hasAnyEndpoints = true;
      if (e.isLocal) localServingTerminating = true;
    }
  }
  if (localReady) out.local = endpoints.filter((e) => e.isLocal && e.ready);
  else if (localServingTerminating) out.local = endpoints.filter((e) => e.isLocal && e.serving && e.terminating);
  else out.local = [];
  return out;
}
