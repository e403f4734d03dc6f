/* What each datapath map may become when an upgrade (or downgrade) changes its layout, and the
 * converters for changes a field-by-field copy cannot express. Read by installDatapath through
 * src/bpf/migrate.ts.
 *
 * A pinned map whose type, sizes, flags or BTF layout differ from the new objects' is created
 * anew and filled from the pinned one:
 *  - same layout (a size or flag changed): entries copied as they are;
 *  - layout changed: a converter registered below for (map, old layout id → new layout id) if
 *    there is one, else field by field (fields matched by name; new fields start at zero, arrays
 *    keep their first elements, unsigned integers may widen);
 *  - the sockhash (sl_listeners): each socket found again by its cookie through the process
 *    holding it (pidfd_getfd) and put in under its (converted) key.
 * Socket-local storage (sl_lb_sock_rev, sl_cap_sock) cannot be copied at all: it is kept as long
 * as its layout is unchanged (then it is compatible and reused, whatever else changes), and a
 * release that changes it costs what its policy says.
 * The kernel keeps a sockhash without BTF (libbpf creates sockmaps and sockhashes without it), so
 * for sl_listeners only type, sizes and flags are compared: change struct sl_listener_key only
 * together with its size, or the old keys would be reused under the new meaning.
 * When nothing applies, the policy decides: `rebuild` starts the map empty (and says what that
 * costs), `refuse` keeps the old datapath running and fails the start, naming the converter to
 * write. The layout ids are in that error and in `sluice status -o json`.
 */
import type { MapPolicy, MigrationRegistry, RegisteredConverter } from './bpf';

/** Per map, what happens when its entries cannot be converted. */
export const MAP_POLICIES: Record<string, MapPolicy> = {
  sl_lb_svc: {
    unconvertible: 'refuse',
    why: 'every VIP would go untranslated until the first sync, and affinity entries name the service ids it holds',
  },
  sl_lb_backend: {
    unconvertible: 'refuse',
    why: 'service slots name backend ids: every VIP would go untranslated until the first sync',
  },
  sl_lb_affinity: {
    unconvertible: 'rebuild',
    why: 'ClientIP affinity starts over: a client’s next connection may go to another backend',
  },
  sl_lb_sock_rev: {
    unconvertible: 'rebuild',
    why:
      'sockets translated before the upgrade lose their reverse entry: getpeername() of their TCP connections and the source ' +
      'of replies to connected UDP sockets show the backend instead of the VIP (an unconnected UDP socket gets it back at its ' +
      'next sendmsg to the VIP), and they are no longer found to be destroyed when their backend leaves its Service; new ' +
      'sockets are not affected. (Unchanged since v0.1.0: keep it so.)',
  },
  sl_lb_counters: { unconvertible: 'rebuild', why: 'the datapath counters restart at zero' },
  sl_lb_pod_opt_out: {
    unconvertible: 'rebuild',
    why:
      'pods annotated socket-lb.sluice.io/disabled get socket-LB on their connects until the agent has decided every ' +
      'registered pod again, right after its first sync of cluster objects (sockets already open keep what they have)',
  },
  sl_lb_sock_dead: {
    unconvertible: 'rebuild',
    why: 'nothing: it holds entries only while the agent destroys sockets, never across a restart',
  },
  sl_endpoints: {
    unconvertible: 'refuse',
    why: 'captured pods would be released until the agent enrols them again: their traffic would bypass the proxy',
  },
  sl_pod_ips: {
    unconvertible: 'refuse',
    why: 'inbound capture finds pods by IP: inbound connections would reach apps around their proxy until they are enrolled again',
  },
  sl_cap_sock: {
    unconvertible: 'rebuild',
    why:
      'connections captured before the upgrade lose their original destination in socket storage: getpeername() in the app ' +
      "shows the proxy (127.0.0.1:15001) instead; SO_ORIGINAL_DST is answered from the proxy socket's own storage and keeps working",
  },
  sl_origdst_syn: {
    unconvertible: 'rebuild',
    why: 'a captured handshake in flight during the switch (microseconds) gets the socket’s local address as its original destination',
  },
  sl_origdst_sock: {
    unconvertible: 'rebuild',
    why: 'proxy sockets accepted before the upgrade answer SO_ORIGINAL_DST with their local address',
  },
  sl_origdst_stat: { unconvertible: 'rebuild', why: 'the handshake counters restart at zero' },
  sl_origdst: {
    unconvertible: 'rebuild',
    why:
      "connections whose SYN v0.1.0's programs saw answer SO_ORIGINAL_DST with their local address (127.0.0.1:15001): " +
      "keep v0.1.0's layout so that the pin is reused both ways",
  },
  sl_listeners: {
    unconvertible: 'refuse',
    why:
      'the proxies’ listening sockets would be missing until they listen again: inbound connections to captured ports ' +
      'would be dropped and ambient outbound connects refused',
  },
  sl_ep_stats: {
    unconvertible: 'rebuild',
    why: 'per-pod capture counters restart at zero (the agent recreates the entry of every enrolled pod at start)',
  },
  sl_node_ips: { unconvertible: 'rebuild', why: 'the agent writes the node’s addresses at every start' },
  // datapath events: a new release (or a new monitor-ring-bytes) creates them anew
  sl_events: { unconvertible: 'rebuild', why: 'nothing: events not yet read by a monitor are dropped with the old ring' },
  sl_monitor: { unconvertible: 'rebuild', why: 'nothing: the gate starts closed, and an attached monitor opens it again' },
  sl_events_lost: { unconvertible: 'rebuild', why: 'the count of events a full ring dropped restarts at zero' },
  sl_bypass_flows: {
    unconvertible: 'rebuild',
    why: 'node-originated and proxy hand-off connections already open keep working (inbound capture decides at SYN only); new ones are recorded again',
  },
};

/**
 * Converters by map and layout ids (`layoutId` in src/bpf/map-spec.ts; both ids are printed when
 * one is missing). None is needed yet: every map of v0.1.0 has the layout it has today (sl_origdst
 * too, kept for the switch between the releases either way).
 */
export const CONVERTERS: RegisteredConverter[] = [];

export const DATAPATH_MIGRATIONS: MigrationRegistry = {
  policies: MAP_POLICIES,
  defaultPolicy: {
    unconvertible: 'refuse',
    why: 'no policy in src/map-migrations.ts says what this map may lose',
  },
  converters: CONVERTERS,
};
