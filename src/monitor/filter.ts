/* The filters of `sluice monitor`: parsed from the command line's words by the CLI (a bad one is a
 * usage error) and again by the agent from the request (the same rules, one place).
 */
import type { EventRecord } from './record';
import { EVENT_TYPE_NAMES, type EventTypeName } from './types';

/** The filters as typed: `--pod NS/NAME|host`, `--namespace NS`, `--type T[,T]`. */
export interface FilterArgs {
  pod?: string;
  namespace?: string;
  type?: string;
}

export interface MonitorFilter {
  /** `namespace/name`, or `host` for the node's own network namespace; undefined: any */
  pod?: string;
  namespace?: string;
  /** undefined: every type */
  types?: ReadonlySet<EventTypeName>;
}

const TYPES: ReadonlySet<string> = new Set(EVENT_TYPE_NAMES);

/** @throws RangeError naming the flag, the value and what is accepted */
export function parseFilter(args: FilterArgs): MonitorFilter {
  const f: MonitorFilter = {};
  if (args.pod !== undefined) {
    const parts = args.pod.split('/');
    if (args.pod !== 'host' && (parts.length !== 2 || !parts[0] || !parts[1])) {
      throw new RangeError(`--pod ${JSON.stringify(args.pod)}: expected NAMESPACE/NAME or host`);
    }
    f.pod = args.pod;
  }
  if (args.namespace !== undefined) {
    if (!args.namespace || args.namespace.includes('/'))
      throw new RangeError(`--namespace ${JSON.stringify(args.namespace)}: expected a namespace name`);
    f.namespace = args.namespace;
  }
  if (args.type !== undefined) {
    const types = args.type.split(',').map((t) => t.trim());
    const bad = types.filter((t) => !TYPES.has(t));
    if (bad.length)
      throw new RangeError(
        `--type ${JSON.stringify(args.type)}: unknown type ${bad.map((t) => JSON.stringify(t)).join(', ')}; valid types: ${EVENT_TYPE_NAMES.join(', ')}`,
      );
    f.types = new Set(types as EventTypeName[]);
  }
  return f;
}

/** The namespace of a resolved name (`ns/name`, `ns/svc:port`); '' for `host` and unresolved ones. */
function namespaceOf(name: string): string {
  const slash = name.indexOf('/');
  return slash > 0 ? name.slice(0, slash) : '';
}

/**
 * Whether an event passes. `--pod` and `--namespace` match either end, as hubble's do: the pod
 * whose socket decided, or the pod (or, for a namespace, the Service) the connection was for or
 * went to; `--pod host` matches the node's own sockets only.
 */
export function matches(f: MonitorFilter, r: EventRecord): boolean {
  if (f.types && !f.types.has(r.type)) return false;
  const ends = f.pod === 'host' ? [r.pod] : [r.pod, r.srcName, r.dstName, r.toName];
  if (f.pod !== undefined && !ends.includes(f.pod)) return false;
  if (f.namespace !== undefined && !ends.some((n) => namespaceOf(n) === f.namespace)) return false;
  return true;
}
