/*
 * Validation of decoded Kubernetes documents (YAML or JSON) into the typed
 * objects of types.ts. The output is a projection: only the fields we model
 * are kept, nulls are treated as absent (as the API server does for optional
 * fields), and the namespace is defaulted like kubectl does. Anything the
 * load-balancer model reads is type- and range-checked here so the model can
 * trust it; errors name the object and the offending field.
 */
import { isIP } from 'node:net';
import {
  type Container,
  type Endpoint,
  type EndpointConditions,
  type EndpointHints,
  type EndpointPort,
  type EndpointSlice,
  type EnvVar,
  type IPFamily,
  type K8sKind,
  type K8sObject,
  LAST_CHANGE_TRIGGER_TIME,
  type LoadBalancerIngress,
  type Namespace,
  type Node,
  type NamespacedObjectMeta,
  type ObjectMeta,
  type Pod,
  type PodIP,
  type Protocol,
  type ServicePort,
  type ServiceSpec,
  type ServiceStatus,
} from './types';

/** apiVersion each supported kind must carry. */
export const SUPPORTED_KINDS: Readonly<Record<K8sKind, string>> = {
  Namespace: 'v1',
  Pod: 'v1',
  Service: 'v1',
  EndpointSlice: 'discovery.k8s.io/v1',
  Node: 'v1',
};

const CLUSTER_SCOPED_KINDS: ReadonlySet<K8sKind> = new Set<K8sKind>(['Namespace', 'Node']);
const DEFAULT_NAMESPACE = 'default';
const PROTOCOLS: readonly Protocol[] = ['TCP', 'UDP', 'SCTP'];
const SERVICE_TYPES = ['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'] as const;
const SESSION_AFFINITIES = ['None', 'ClientIP'] as const;
const IP_FAMILIES: readonly IPFamily[] = ['IPv4', 'IPv6'];
const ADDRESS_TYPES = ['IPv4', 'IPv6', 'FQDN'] as const;
const TRAFFIC_POLICIES = ['Cluster', 'Local'] as const;
const IP_MODES = ['VIP', 'Proxy'] as const;
/** Same bound as the API server's validation of sessionAffinityConfig.clientIP.timeoutSeconds. */
const MAX_AFFINITY_TIMEOUT_SEC = 86400;
/** The API server's bound for runAsUser and runAsGroup (IsValidUserID / IsValidGroupID: 0..MaxInt32). */
const MAX_UNIX_ID = 2147483647;

/**
 * A well-formed object of a kind (or apiVersion) the agent does not model, such
 * as a ConfigMap. Distinct from malformed documents so callers can log it at
 * debug level: a directory of mixed manifests is normal.
 */
export class UnsupportedKindError extends TypeError {
  constructor(
    readonly apiVersion: string,
    readonly kind: string,
  ) {
    super(`Cannot parse kind "${apiVersion}/${kind}": not supported (supported: ${supportedList()})`);
    this.name = 'UnsupportedKindError';
  }
}

function supportedList(): string {
  return Object.entries(SUPPORTED_KINDS)
    .map(([kind, apiVersion]) => `${apiVersion}/${kind}`)
    .join(', ');
}

export function isNamespacedKind(kind: K8sKind): boolean {
  return !CLUSTER_SCOPED_KINDS.has(kind);
}

/** Store key of an object: `Kind/namespace/name`, or `Kind/name` for cluster-scoped kinds. */
export function objectKey(o: K8sObject): string {
  return isNamespacedKind(o.kind)
    ? `${o.kind}/${o.metadata.namespace ?? DEFAULT_NAMESPACE}/${o.metadata.name}`
    : `${o.kind}/${o.metadata.name}`;
}

type Json = Record<string, unknown>;

function isRecord(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'an array';
  if (v === null) return 'null';
  const text = typeof v === 'object' ? '{...}' : JSON.stringify(v);
  return text.length > 64 ? `${text.slice(0, 61)}...` : text;
}

/**
 * Expands `kind: List` and typed lists (`ServiceList`, ...) into their items;
 * any other document is returned as the only element. Items of typed lists as
 * returned by the API server carry no kind/apiVersion: they inherit them from
 * the list. Nested lists are expanded too.
 */
export function expandList(raw: unknown): unknown[] {
  if (!isRecord(raw) || typeof raw.kind !== 'string') return [raw];
  const kind = raw.kind;
  const isList = kind === 'List' || (kind.endsWith('List') && Array.isArray(raw.items));
  if (!isList) return [raw];
  if (raw.items !== undefined && raw.items !== null && !Array.isArray(raw.items)) {
    throw new TypeError(`Cannot parse ${kind}: items must be an array, got ${describe(raw.items)}`);
  }
  const items = (raw.items ?? []) as unknown[];
  const itemKind = kind === 'List' ? undefined : kind.slice(0, -'List'.length);
  const out: unknown[] = [];
  for (const item of items) {
    let filled = item;
    if (itemKind !== undefined && isRecord(item) && (item.kind === undefined || item.apiVersion === undefined)) {
      filled = { ...item, kind: item.kind ?? itemKind, apiVersion: item.apiVersion ?? raw.apiVersion };
    }
    out.push(...expandList(filled));
  }
  return out;
}

/** Carries the object's identity into every error message. */
class Checker {
  constructor(private subject: string) {}

  rename(subject: string): void {
    this.subject = subject;
  }

  fail(field: string, reason: string, ErrorClass: typeof TypeError | typeof RangeError = TypeError): never {
    throw new ErrorClass(`Cannot parse ${this.subject}: ${field} ${reason}`);
  }

  /** null counts as absent, as for optional fields in the API. */
  optional<T>(v: unknown, field: string, check: (v: unknown, field: string) => T): T | undefined {
    return v === undefined || v === null ? undefined : check(v, field);
  }

  record(v: unknown, field: string): Json {
    if (!isRecord(v)) this.fail(field, `must be an object, got ${describe(v)}`);
    return v;
  }

  array(v: unknown, field: string): unknown[] {
    if (!Array.isArray(v)) this.fail(field, `must be an array, got ${describe(v)}`);
    return v;
  }

  string(v: unknown, field: string): string {
    if (typeof v !== 'string') this.fail(field, `must be a string, got ${describe(v)}`);
    return v;
  }

  nonEmptyString(v: unknown, field: string): string {
    const s = this.string(v, field);
    if (s === '') this.fail(field, 'must not be empty');
    return s;
  }

  boolean(v: unknown, field: string): boolean {
    if (typeof v !== 'boolean') this.fail(field, `must be a boolean, got ${describe(v)}`);
    return v;
  }

  integer(v: unknown, field: string, min: number, max: number): number {
    if (typeof v !== 'number' || !Number.isInteger(v)) this.fail(field, `must be an integer, got ${describe(v)}`);
    if (v < min || v > max) this.fail(field, `must be in ${min}..${max}, got ${v}`, RangeError);
    return v;
  }

  port(v: unknown, field: string): number {
    return this.integer(v, field, 1, 65535);
  }

  oneOf<T extends string>(v: unknown, field: string, allowed: readonly T[]): T {
    const s = this.string(v, field);
    if (!(allowed as readonly string[]).includes(s)) {
      this.fail(field, `must be one of ${allowed.join('|')}, got ${describe(s)}`, RangeError);
    }
    return s as T;
  }

  /** A plain IPv4 or IPv6 address; zone suffixes (`%eth0`) are not valid in the API. */
  ip(v: unknown, field: string, family?: 4 | 6): string {
    const s = this.string(v, field);
    const got = s.includes('%') ? 0 : isIP(s);
    if (got === 0) this.fail(field, `must be an IP address, got ${describe(s)}`, RangeError);
    if (family !== undefined && got !== family)
      this.fail(field, `must be an IPv${family} address, got ${describe(s)}`, RangeError);
    return s;
  }

  /** `address/prefix` of either family, as the API validates loadBalancerSourceRanges (blanks around it allowed). */
  cidr(v: unknown, field: string): string {
    const s = this.string(v, field);
    const m = /^([^/]+)\/(\d{1,3})$/.exec(s.trim());
    const family = m ? isIP(m[1]) : 0;
    if (!m || family === 0 || Number(m[2]) > (family === 4 ? 32 : 128)) {
      this.fail(field, `must be a CIDR such as 10.0.0.0/8, got ${describe(s)}`, RangeError);
    }
    return s;
  }

  stringMap(v: unknown, field: string): Record<string, string> {
    const rec = this.record(v, field);
    const out: Record<string, string> = {};
    for (const [k, val] of Object.entries(rec)) {
      // defineProperty, not assignment: a "__proto__" key must stay a plain entry.
      Object.defineProperty(out, k, {
        value: this.string(val, `${field}["${k}"]`),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return out;
  }
}

/** A name usable in a store key: non-empty and without the key separator. */
function checkName(c: Checker, v: unknown, field: string): string {
  const s = c.nonEmptyString(v, field);
  if (s.includes('/')) c.fail(field, `must not contain "/", got ${describe(s)}`, RangeError);
  return s;
}

/*
 * Memory at scale (100,000 Services / 500,000 endpoints held in the store): the projections of
 * the most numerous objects (metadata, Service spec and ports, EndpointSlice endpoints and ports)
 * are built as one object literal each, absent optional fields as undefined (which every reader,
 * deepEqual and JSON treat as absent). Adding fields one by one to a smaller literal makes V8 move
 * them to a separate property array, ~40 bytes more per object. Strings that repeat across objects
 * (namespaces, node names) are interned: JSON.parse makes a new copy of every value.
 */

/** Bounded: beyond this many distinct strings, new ones are kept as they come. */
const INTERN_MAX = 8192;
const interned = new Map<string, string>();
function intern(s: string): string {
  const have = interned.get(s);
  if (have !== undefined) return have;
  if (interned.size < INTERN_MAX) interned.set(s, s);
  return s;
}

/**
 * Kinds whose objects come by the hundred thousand and are read for their name, namespace and
 * labels only: their uid, annotations (often kilobytes: kubectl's last-applied-configuration) and
 * resourceVersion are not kept, and a change to those alone is no change here. The annotations
 * listed are the exception: read by the agent (an EndpointSlice's trigger time is when the change
 * it carries happened, for the network programming latency metric).
 */
const LEAN_META_KINDS: ReadonlyMap<K8sKind, readonly string[]> = new Map([
  ['Service', []],
  ['EndpointSlice', [LAST_CHANGE_TRIGGER_TIME]],
]);

/** The annotations of `keep` that raw has (the others are not even read), or undefined. */
function keptAnnotations(c: Checker, raw: unknown, keep: readonly string[]): Record<string, string> | undefined {
  if (keep.length === 0 || raw === undefined || raw === null) return undefined;
  const all = c.record(raw, 'metadata.annotations');
  let out: Record<string, string> | undefined;
  for (const k of keep) if (Object.hasOwn(all, k)) (out ??= {})[k] = c.string(all[k], `metadata.annotations["${k}"]`);
  return out;
}

function parseMeta(c: Checker, kind: K8sKind, raw: unknown): ObjectMeta {
  const m = c.record(raw, 'metadata');
  const name = checkName(c, m.name, 'metadata.name');
  let namespace: string | undefined;
  if (isNamespacedKind(kind)) {
    // kubectl applies "default" to namespaced objects without a namespace (or with an empty one).
    const ns = m.namespace === undefined || m.namespace === null || m.namespace === '' ? DEFAULT_NAMESPACE : m.namespace;
    namespace = intern(checkName(c, ns, 'metadata.namespace'));
    c.rename(`${kind} "${namespace}/${name}"`);
  } else {
    c.rename(`${kind} "${name}"`);
  }
  const labels = c.optional(m.labels, 'metadata.labels', (v, f) => c.stringMap(v, f));
  const lean = LEAN_META_KINDS.get(kind);
  if (lean) {
    const annotations = keptAnnotations(c, m.annotations, lean);
    return annotations ? { name, namespace, labels, annotations } : { name, namespace, labels };
  }
  return {
    name,
    namespace,
    uid: c.optional(m.uid, 'metadata.uid', (v, f) => c.string(v, f)),
    labels,
    annotations: c.optional(m.annotations, 'metadata.annotations', (v, f) => c.stringMap(v, f)),
    resourceVersion: c.optional(m.resourceVersion, 'metadata.resourceVersion', (v, f) => c.string(v, f)),
  };
}

function parseServicePort(c: Checker, raw: unknown, field: string): ServicePort {
  const p = c.record(raw, field);
  return {
    port: c.port(p.port, `${field}.port`),
    name: c.optional(p.name, `${field}.name`, (v, f) => c.string(v, f)),
    protocol: c.optional(p.protocol, `${field}.protocol`, (v, f) => c.oneOf(v, f, PROTOCOLS)),
    targetPort: c.optional(p.targetPort, `${field}.targetPort`, (v, f) =>
      typeof v === 'number' ? c.port(v, f) : c.nonEmptyString(v, f),
    ),
    nodePort: c.optional(p.nodePort, `${field}.nodePort`, (v, f) => c.port(v, f)),
  };
}

/** clusterIP(s) hold an address, "None" for headless services, or "" when not allocated. */
function parseClusterIP(c: Checker, v: unknown, field: string): string {
  const s = c.string(v, field);
  return s === 'None' || s === '' ? s : c.ip(s, field);
}

function parseAffinityConfig(c: Checker, raw: unknown): ServiceSpec['sessionAffinityConfig'] {
  const affinityConfig = c.optional(raw, 'spec.sessionAffinityConfig', (v, f) => c.record(v, f));
  if (affinityConfig === undefined) return undefined;
  const config: NonNullable<ServiceSpec['sessionAffinityConfig']> = {};
  const clientIP = c.optional(affinityConfig.clientIP, 'spec.sessionAffinityConfig.clientIP', (v, f) => c.record(v, f));
  if (clientIP !== undefined) {
    config.clientIP = {};
    const field = 'spec.sessionAffinityConfig.clientIP.timeoutSeconds';
    const timeout = c.optional(clientIP.timeoutSeconds, field, (v, f) => c.integer(v, f, 1, MAX_AFFINITY_TIMEOUT_SEC));
    if (timeout !== undefined) config.clientIP.timeoutSeconds = timeout;
  }
  return config;
}

function parseServiceSpec(c: Checker, raw: unknown): ServiceSpec {
  const s = c.optional(raw, 'spec', (v, f) => c.record(v, f)) ?? {};
  return {
    type: c.optional(s.type, 'spec.type', (v, f) => c.oneOf(v, f, SERVICE_TYPES)),
    clusterIP: c.optional(s.clusterIP, 'spec.clusterIP', (v, f) => parseClusterIP(c, v, f)),
    clusterIPs: c.optional(s.clusterIPs, 'spec.clusterIPs', (v, f) =>
      c.array(v, f).map((ip, i) => parseClusterIP(c, ip, `${f}[${i}]`)),
    ),
    externalIPs: c.optional(s.externalIPs, 'spec.externalIPs', (v, f) => c.array(v, f).map((ip, i) => c.ip(ip, `${f}[${i}]`))),
    ports: c.optional(s.ports, 'spec.ports', (v, f) => c.array(v, f).map((p, i) => parseServicePort(c, p, `${f}[${i}]`))),
    sessionAffinity: c.optional(s.sessionAffinity, 'spec.sessionAffinity', (v, f) => c.oneOf(v, f, SESSION_AFFINITIES)),
    sessionAffinityConfig: parseAffinityConfig(c, s.sessionAffinityConfig),
    ipFamilies: c.optional(s.ipFamilies, 'spec.ipFamilies', (v, f) =>
      c.array(v, f).map((fam, i) => c.oneOf(fam, `${f}[${i}]`, IP_FAMILIES)),
    ),
    internalTrafficPolicy: c.optional(s.internalTrafficPolicy, 'spec.internalTrafficPolicy', (v, f) =>
      c.oneOf(v, f, TRAFFIC_POLICIES),
    ),
    loadBalancerSourceRanges: c.optional(s.loadBalancerSourceRanges, 'spec.loadBalancerSourceRanges', (v, f) =>
      c.array(v, f).map((r, i) => c.cidr(r, `${f}[${i}]`)),
    ),
  };
}

/**
 * status.loadBalancer.ingress: the entries that carry an IP, with their ipMode. Hostname-only
 * entries (some cloud load balancers) are dropped: no proxy can treat a hostname as a VIP.
 */
function parseServiceStatus(c: Checker, raw: unknown): ServiceStatus | undefined {
  const st = c.optional(raw, 'status', (v, f) => c.record(v, f));
  const lb = c.optional(st?.loadBalancer, 'status.loadBalancer', (v, f) => c.record(v, f));
  const list = c.optional(lb?.ingress, 'status.loadBalancer.ingress', (v, f) => c.array(v, f)) ?? [];
  const ingress: LoadBalancerIngress[] = [];
  list.forEach((raw, i) => {
    const field = `status.loadBalancer.ingress[${i}]`;
    const e = c.record(raw, field);
    // "" stands for "no IP" (a hostname entry) in some serializations, as for podIP
    const ip = e.ip === '' ? undefined : c.optional(e.ip, `${field}.ip`, (v, f) => c.ip(v, f));
    const mode = c.optional(e.ipMode, `${field}.ipMode`, (v, f) => c.oneOf(v, f, IP_MODES));
    if (ip === undefined) return;
    ingress.push(mode === undefined ? { ip } : { ip, ipMode: mode });
  });
  return ingress.length ? { loadBalancer: { ingress } } : undefined;
}

/**
 * Endpoint conditions take a handful of shapes: one frozen object per shape, shared by every
 * endpoint that has it (50,000 endpoints would otherwise hold 50,000 equal objects).
 */
const conditionShapes = new Map<string, EndpointConditions>();
function sharedConditions(c: EndpointConditions): EndpointConditions {
  const key = `${c.ready}|${c.serving}|${c.terminating}`;
  let shared = conditionShapes.get(key);
  if (!shared) conditionShapes.set(key, (shared = Object.freeze({ ...c })));
  return shared;
}

/**
 * Hints, like conditions, come in few shapes (the controller writes an endpoint's own zone and
 * node): one frozen object per shape, so the shapes are bounded by the cluster's zones and nodes.
 */
const hintShapes = new Map<string, EndpointHints>();
function sharedHints(h: EndpointHints): EndpointHints {
  const key = JSON.stringify([h.forZones, h.forNodes]);
  let shared = hintShapes.get(key);
  if (!shared) {
    shared = Object.freeze({
      ...(h.forZones ? { forZones: Object.freeze(h.forZones) as string[] } : {}),
      ...(h.forNodes ? { forNodes: Object.freeze(h.forNodes) as string[] } : {}),
    });
    hintShapes.set(key, shared);
  }
  return shared;
}

/** hints.forZones / hints.forNodes: lists of {name}; flattened to the names. */
function parseHints(c: Checker, raw: unknown, field: string): EndpointHints {
  const h = c.record(raw, field);
  const hints: EndpointHints = {};
  for (const kind of ['forZones', 'forNodes'] as const) {
    const list = c.optional(h[kind], `${field}.${kind}`, (v, f) =>
      c.array(v, f).map((entry, i) => c.nonEmptyString(c.record(entry, `${f}[${i}]`).name, `${f}[${i}].name`)),
    );
    if (list !== undefined) hints[kind] = list;
  }
  return sharedHints(hints);
}

function parseEndpoint(c: Checker, raw: unknown, field: string, family: 4 | 6 | undefined): Endpoint {
  const e = c.record(raw, field);
  const addresses = c
    .array(e.addresses, `${field}.addresses`)
    .map((a, i) =>
      family === undefined ? c.nonEmptyString(a, `${field}.addresses[${i}]`) : c.ip(a, `${field}.addresses[${i}]`, family),
    );
  if (addresses.length === 0) c.fail(`${field}.addresses`, 'must not be empty', RangeError);
  let conditions: EndpointConditions | undefined;
  const cond = c.optional(e.conditions, `${field}.conditions`, (v, f) => c.record(v, f));
  if (cond !== undefined) {
    const condition = (name: 'ready' | 'serving' | 'terminating') =>
      c.optional(cond[name], `${field}.conditions.${name}`, (v, f) => c.boolean(v, f));
    conditions = sharedConditions({
      ready: condition('ready'),
      serving: condition('serving'),
      terminating: condition('terminating'),
    });
  }
  const nodeName = c.optional(e.nodeName, `${field}.nodeName`, (v, f) => c.string(v, f));
  return {
    addresses,
    conditions,
    nodeName: nodeName === undefined ? undefined : intern(nodeName),
    hints: c.optional(e.hints, `${field}.hints`, (v, f) => parseHints(c, v, f)),
  };
}

function parseEndpointPort(c: Checker, raw: unknown, field: string): EndpointPort {
  const p = c.record(raw, field);
  return {
    name: c.optional(p.name, `${field}.name`, (v, f) => c.string(v, f)),
    port: c.optional(p.port, `${field}.port`, (v, f) => c.port(v, f)),
    protocol: c.optional(p.protocol, `${field}.protocol`, (v, f) => c.oneOf(v, f, PROTOCOLS)),
  };
}

function parseEndpointSlice(c: Checker, raw: Json, metadata: NamespacedObjectMeta): EndpointSlice {
  const addressType = c.oneOf(raw.addressType, 'addressType', ADDRESS_TYPES);
  const family = addressType === 'IPv4' ? 4 : addressType === 'IPv6' ? 6 : undefined;
  const endpoints = (c.optional(raw.endpoints, 'endpoints', (v, f) => c.array(v, f)) ?? []).map((e, i) =>
    parseEndpoint(c, e, `endpoints[${i}]`, family),
  );
  const ports = c.optional(raw.ports, 'ports', (v, f) => c.array(v, f).map((p, i) => parseEndpointPort(c, p, `${f}[${i}]`)));
  return { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata, addressType, endpoints, ports };
}

/** An env entry: its name and literal value; valueFrom (a reference the kubelet resolves) is ignored. */
function parseEnvVar(c: Checker, raw: unknown, field: string): EnvVar {
  const e = c.record(raw, field);
  const env: EnvVar = { name: c.nonEmptyString(e.name, `${field}.name`) };
  const value = c.optional(e.value, `${field}.value`, (v, f) => c.string(v, f));
  if (value !== undefined) env.value = value;
  return env;
}

/** A container, projected onto what the capture decision reads (see Container in types.ts). */
function parseContainer(c: Checker, raw: unknown, field: string): Container {
  const r = c.record(raw, field);
  const container: Container = { name: c.nonEmptyString(r.name, `${field}.name`) };
  const args = c.optional(r.args, `${field}.args`, (v, f) => c.array(v, f).map((a, i) => c.string(a, `${f}[${i}]`)));
  if (args !== undefined) container.args = args;
  const env = c.optional(r.env, `${field}.env`, (v, f) => c.array(v, f).map((e, i) => parseEnvVar(c, e, `${f}[${i}]`)));
  if (env !== undefined) container.env = env;
  const sc = c.optional(r.securityContext, `${field}.securityContext`, (v, f) => c.record(v, f));
  if (sc !== undefined) {
    const ctx: Container['securityContext'] = {};
    const user = c.optional(sc.runAsUser, `${field}.securityContext.runAsUser`, (v, f) => c.integer(v, f, 0, MAX_UNIX_ID));
    if (user !== undefined) ctx.runAsUser = user;
    const group = c.optional(sc.runAsGroup, `${field}.securityContext.runAsGroup`, (v, f) => c.integer(v, f, 0, MAX_UNIX_ID));
    if (group !== undefined) ctx.runAsGroup = group;
    container.securityContext = ctx;
  }
  return container;
}

function parsePod(c: Checker, raw: Json, metadata: NamespacedObjectMeta): Pod {
  const s = c.optional(raw.spec, 'spec', (v, f) => c.record(v, f)) ?? {};
  const st = c.optional(raw.status, 'status', (v, f) => c.record(v, f)) ?? {};
  const pod: Pod = { apiVersion: 'v1', kind: 'Pod', metadata, spec: {}, status: {} };
  const nodeName = c.optional(s.nodeName, 'spec.nodeName', (v, f) => c.string(v, f));
  if (nodeName !== undefined) pod.spec.nodeName = nodeName;
  const hostNetwork = c.optional(s.hostNetwork, 'spec.hostNetwork', (v, f) => c.boolean(v, f));
  if (hostNetwork !== undefined) pod.spec.hostNetwork = hostNetwork;
  const serviceAccountName = c.optional(s.serviceAccountName, 'spec.serviceAccountName', (v, f) => c.string(v, f));
  if (serviceAccountName !== undefined) pod.spec.serviceAccountName = serviceAccountName;
  for (const list of ['initContainers', 'containers'] as const) {
    const containers = c.optional(s[list], `spec.${list}`, (v, f) =>
      c.array(v, f).map((x, i) => parseContainer(c, x, `${f}[${i}]`)),
    );
    if (containers !== undefined) pod.spec[list] = containers;
  }
  // An unscheduled or just-created pod has podIP "" in some serializations: treat as absent.
  const podIP = st.podIP === '' ? undefined : c.optional(st.podIP, 'status.podIP', (v, f) => c.ip(v, f));
  if (podIP !== undefined) pod.status.podIP = podIP;
  const podIPs = c.optional(st.podIPs, 'status.podIPs', (v, f) =>
    c.array(v, f).map((entry, i): PodIP => ({ ip: c.ip(c.record(entry, `${f}[${i}]`).ip, `${f}[${i}].ip`) })),
  );
  if (podIPs !== undefined) pod.status.podIPs = podIPs;
  return pod;
}

/**
 * Validates one decoded document (already expanded from lists, see
 * expandList) and returns its typed projection. Throws UnsupportedKindError for
 * well-formed objects of other kinds, TypeError/RangeError for malformed ones.
 * `listed`: the apiVersion and kind of an item of a typed list, for items without them.
 */
export function parseObject(raw: unknown, listed?: { apiVersion: string; kind: K8sKind }): K8sObject {
  if (!isRecord(raw)) throw new TypeError(`Cannot parse document: must be an object, got ${describe(raw)}`);
  const c = new Checker('document');
  // items of a typed list (the API server's LIST and watch) carry no kind: the caller names it
  const apiVersion = c.nonEmptyString(raw.apiVersion ?? listed?.apiVersion, 'apiVersion');
  const kindName = c.nonEmptyString(raw.kind ?? listed?.kind, 'kind');
  if (!Object.hasOwn(SUPPORTED_KINDS, kindName) || SUPPORTED_KINDS[kindName as K8sKind] !== apiVersion) {
    throw new UnsupportedKindError(apiVersion, kindName);
  }
  const kind = kindName as K8sKind;
  c.rename(kind);
  const meta = parseMeta(c, kind, raw.metadata);
  switch (kind) {
    case 'Namespace': {
      const ns: Namespace = { apiVersion: 'v1', kind, metadata: meta };
      return ns;
    }
    case 'Service':
      return {
        apiVersion: 'v1',
        kind,
        metadata: meta as NamespacedObjectMeta,
        spec: parseServiceSpec(c, raw.spec),
        status: parseServiceStatus(c, raw.status),
      };
    case 'Node': {
      const node: Node = { apiVersion: 'v1', kind, metadata: meta };
      return node;
    }
    case 'EndpointSlice':
      return parseEndpointSlice(c, raw, meta as NamespacedObjectMeta);
    case 'Pod':
      return parsePod(c, raw, meta as NamespacedObjectMeta);
  }
}
