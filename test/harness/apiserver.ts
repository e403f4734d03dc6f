/*
 * An in-process stand-in for the Kubernetes API server, for tests that drive a "cluster" for real:
 * the agent (through @kubernetes/client-node) and kubectl talk to it over HTTPS with a bearer token,
 * and the test changes the cluster state and injects faults from the same process.
 *
 * What it speaks (see test/unit/apiserver.test.ts, which checks it against the real kubectl):
 *  - legacy discovery (/api, /api/v1, /apis, /apis/<group>[/<version>]), /version, /healthz|livez|readyz;
 *    /openapi/* is 404 (kubectl get/patch don't need it);
 *  - core/v1 namespaces, pods, services, events, nodes; discovery.k8s.io/v1 endpointslices;
 *    events.k8s.io/v1 events (one storage with core/v1 events, converted, as in the real server);
 *  - get, list (field and label selectors, limit/continue from a consistent snapshot,
 *    resourceVersion/resourceVersionMatch), watch (replay from a bounded history, 410 Expired when
 *    too old, bookmarks, sendInitialEvents, timeoutSeconds, selector transitions), create, update,
 *    patch (JSON patch, merge patch, strategic merge patch as a merge patch), delete, deletecollection;
 *    the status subresource of pods/services/namespaces/nodes;
 *  - meta.k8s.io/v1 Table responses (what kubectl's human-readable output asks for);
 *  - Status objects for every error, as the real server sends them.
 * One global resourceVersion counter (integers as strings, shared across kinds, like etcd).
 *
 * Known differences from the real server: no admission or validation beyond names, namespaces and
 * preconditions (a POST into a namespace that doesn't exist works; pods get no defaults); strategic
 * merge patch replaces lists whole; no server-side apply (415); DELETE removes at once (no graceful
 * deletion, no finalizers, no cascading); no aggregated discovery (kubectl falls back to the legacy
 * documents), no OpenAPI (kubectl create/apply need --validate=false), no authorization APIs.
 */

import { randomBytes, randomUUID, createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import type * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { makeCerts } from './apiserver-certs';

/* eslint-disable @typescript-eslint/no-explicit-any */
export type Obj = { [key: string]: any };

export interface ApiServerOptions {
  /** HTTPS with a throw-away CA and a server certificate for 127.0.0.1/::1/localhost (default true). */
  tls?: boolean;
  /** The bearer token every request must carry (default: random). */
  token?: string;
  /** How often an open watch that asked for bookmarks gets one (default 1000 ms). */
  bookmarkIntervalMs?: number;
  /** How many changes the watch history keeps (default 10000); older resourceVersions are "too old". */
  historyLimit?: number;
  /** Port to listen on (default 0: any free port). Always on 127.0.0.1. */
  port?: number;
  /** What /version reports (default 1.32.0). kubectl's version dispatcher picks its binary from it. */
  version?: { major: string; minor: string };
}

export type Verb = 'get' | 'list' | 'watch' | 'create' | 'update' | 'patch' | 'delete' | 'deletecollection';

export interface RequestRecord {
  method: string;
  path: string;
  query: Record<string, string>;
  /** RBAC verb as the real server's RequestInfo resolves it; for non-resource URLs the lower-cased method. */
  verb: string;
  /** '' for non-resource URLs (discovery, /version, ...). */
  resource: string;
  /** '' for the core group. */
  apiGroup: string;
  namespace?: string;
  name?: string;
  subresource?: string;
  /** HTTP status sent (0 while not answered yet, or if the client went away first). */
  status: number;
  /** Date.now() when it arrived. */
  at: number;
  userAgent: string;
}

export interface FailureSpec {
  /** Answer with this status (and a matching Status body) instead of serving. */
  status?: number;
  /** Hold each affected request this long before answering (or serving it, if no status). */
  delayMs?: number;
  /** How many requests it affects (default Infinity). */
  forRequests?: number;
  /** Only requests it returns true for are affected (and counted). */
  match?: (r: RequestRecord) => boolean;
  /** Status message (default "injected failure"). */
  message?: string;
}

export interface WatchInfo {
  resource: string;
  apiGroup: string;
  namespace?: string;
  query: Record<string, string>;
  userAgent: string;
  /** resourceVersion the watch last delivered (or started from). */
  lastResourceVersion: string;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

/* ------------------------------------------------------------------------------------------ */
/* Resources                                                                                  */
/* ------------------------------------------------------------------------------------------ */

interface Column {
  name: string;
  type: string;
  format: string;
  description: string;
  priority: number;
}

interface ResourceDef {
  group: string;
  version: string;
  plural: string;
  singular: string;
  kind: string;
  namespaced: boolean;
  shortNames: string[];
  categories: string[];
  verbs: Verb[];
  /** Subresources served: only 'status' (get/update/patch on the same object). */
  status: boolean;
  /** Storage shared by resources with the same key (core and events.k8s.io events). */
  store: string;
  /** Field selectors besides metadata.name/metadata.namespace, evaluated on the stored form. */
  fields: Record<string, (o: Obj) => string>;
  columns: Column[];
  cells: (o: Obj, now: number) => unknown[];
  /** DELETE answers with the object (pods, namespaces) rather than a Success Status. */
  deleteReturnsObject: boolean;
  /** Stored form <-> served form (identity except for events.k8s.io). */
  toStored: (o: Obj) => Obj;
  fromStored: (o: Obj) => Obj;
}

const ALL_VERBS: Verb[] = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];

function apiVersionOf(d: { group: string; version: string }): string {
  return d.group ? `${d.group}/${d.version}` : d.version;
}

function col(name: string, type = 'string', priority = 0, format = '', description = ''): Column {
  return { name, type, format, description: description || `${name} column`, priority };
}

const NAME_COL = col(
  'Name',
  'string',
  0,
  'name',
  'Name must be unique within a namespace. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names',
);
const AGE_COL = col(
  'Age',
  'string',
  0,
  '',
  'CreationTimestamp is a timestamp representing the server time when this object was created.',
);

const str = (v: unknown): string => (v === undefined || v === null ? '' : String(v));
const age = (o: Obj, now: number): string => ageOf(o.metadata?.creationTimestamp, now);

function ageOf(ts: string | undefined, now: number): string {
  if (!ts) return '<unknown>';
  const t = Date.parse(ts);
  return Number.isNaN(t) ? '<unknown>' : humanDuration(now - t);
}

/** k8s.io/apimachinery/pkg/util/duration.HumanDuration. */
export function humanDuration(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < -1) return '<invalid>';
  if (s < 0) return '0s';
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return s % 60 === 0 ? `${m}m` : `${m}m${s % 60}s`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 8) return m % 60 === 0 ? `${h}h` : `${h}h${m % 60}m`;
  if (h < 48) return `${h}h`;
  if (h < 24 * 8) return h % 24 === 0 ? `${Math.floor(h / 24)}d` : `${Math.floor(h / 24)}d${h % 24}h`;
  if (h < 24 * 365 * 2) return `${Math.floor(h / 24)}d`;
  const y = Math.floor(h / 24 / 365);
  const d = Math.floor(h / 24) % 365;
  if (h < 24 * 365 * 8) return d === 0 ? `${y}y` : `${y}y${d}d`;
  return `${y}y`;
}

const identity = (o: Obj): Obj => o;

const EVENT_FIELDS: Record<string, (o: Obj) => string> = {
  'involvedObject.kind': (o) => str(o.involvedObject?.kind),
  'involvedObject.namespace': (o) => str(o.involvedObject?.namespace),
  'involvedObject.name': (o) => str(o.involvedObject?.name),
  'involvedObject.uid': (o) => str(o.involvedObject?.uid),
  'involvedObject.apiVersion': (o) => str(o.involvedObject?.apiVersion),
  'involvedObject.resourceVersion': (o) => str(o.involvedObject?.resourceVersion),
  'involvedObject.fieldPath': (o) => str(o.involvedObject?.fieldPath),
  reason: (o) => str(o.reason),
  reportingComponent: (o) => str(o.reportingComponent),
  source: (o) => str(o.source?.component),
  type: (o) => str(o.type),
};

/** events.k8s.io/v1 field names map onto the same stored (core) fields. */
const EVENTS_V1_FIELDS: Record<string, (o: Obj) => string> = {
  ...EVENT_FIELDS,
  ...Object.fromEntries(
    Object.entries(EVENT_FIELDS)
      .filter(([k]) => k.startsWith('involvedObject.'))
      .map(([k, f]) => [k.replace('involvedObject.', 'regarding.'), f]),
  ),
  reportingController: EVENT_FIELDS.reportingComponent,
  deprecatedSource: EVENT_FIELDS.source,
};

const EVENT_COLUMNS = [
  col('Last Seen'),
  col('Type'),
  col('Reason'),
  col('Object'),
  col('Subobject', 'string', 1),
  col('Source', 'string', 1),
  col('Message'),
  col('First Seen', 'string', 1),
  col('Count', 'string', 1),
  { ...NAME_COL, priority: 1 },
];

/** Cells of a core (stored-form) Event. */
function eventCells(e: Obj, now: number): unknown[] {
  const last = e.lastTimestamp || e.eventTime || e.series?.lastObservedTime || e.metadata?.creationTimestamp;
  const first = e.firstTimestamp || e.eventTime || e.metadata?.creationTimestamp;
  const io = e.involvedObject ?? {};
  return [
    ageOf(last, now),
    str(e.type),
    str(e.reason),
    `${str(io.kind).toLowerCase()}/${str(io.name)}`,
    str(io.fieldPath),
    [e.source?.component || e.reportingComponent, e.source?.host].filter(Boolean).join(', '),
    str(e.message).trim(),
    ageOf(first, now),
    str(e.series?.count ?? e.count ?? 1),
    str(e.metadata?.name),
  ];
}

/** core/v1 Event fields <-> events.k8s.io/v1 Event fields (pkg/apis/events/v1 conversion). */
const EVENT_RENAMES: Array<[string, string]> = [
  ['involvedObject', 'regarding'],
  ['message', 'note'],
  ['reportingComponent', 'reportingController'],
  ['source', 'deprecatedSource'],
  ['firstTimestamp', 'deprecatedFirstTimestamp'],
  ['lastTimestamp', 'deprecatedLastTimestamp'],
  ['count', 'deprecatedCount'],
];

function renameFields(o: Obj, pairs: Array<[string, string]>, apiVersion: string): Obj {
  const out: Obj = { ...o, apiVersion, kind: 'Event' };
  for (const [from, to] of pairs) {
    delete out[from];
    if (o[from] !== undefined) out[to] = o[from];
  }
  return out;
}

const eventToEventsV1 = (o: Obj): Obj => renameFields(o, EVENT_RENAMES, 'events.k8s.io/v1');
const eventsV1ToEvent = (o: Obj): Obj =>
  renameFields(
    o,
    EVENT_RENAMES.map(([a, b]) => [b, a]),
    'v1',
  );

function podCells(p: Obj, now: number): unknown[] {
  const containers: Obj[] = p.spec?.containers ?? [];
  const statuses: Obj[] = p.status?.containerStatuses ?? [];
  const ready = statuses.filter((s) => s.ready).length;
  const restarts = statuses.reduce((n, s) => n + (Number(s.restartCount) || 0), 0);
  let phase = str(p.status?.reason || p.status?.phase);
  for (const s of statuses) if (s.state?.waiting?.reason) phase = s.state.waiting.reason;
  if (p.metadata?.deletionTimestamp) phase = 'Terminating';
  return [
    p.metadata?.name,
    `${ready}/${containers.length}`,
    phase,
    restarts,
    age(p, now),
    p.status?.podIP || '<none>',
    p.spec?.nodeName || '<none>',
    p.status?.nominatedNodeName || '<none>',
    '<none>',
  ];
}

function svcCells(s: Obj, now: number): unknown[] {
  const ports: Obj[] = s.spec?.ports ?? [];
  const ext: string[] = (s.status?.loadBalancer?.ingress ?? [])
    .map((i: Obj) => i.ip || i.hostname)
    .concat(s.spec?.externalIPs ?? []);
  const sel = Object.entries(s.spec?.selector ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  return [
    s.metadata?.name,
    s.spec?.type || 'ClusterIP',
    s.spec?.clusterIP || '<none>',
    ext.length ? ext.join(',') : s.spec?.type === 'LoadBalancer' ? '<pending>' : '<none>',
    ports.length ? ports.map((p) => `${p.port}${p.nodePort ? ':' + p.nodePort : ''}/${p.protocol || 'TCP'}`).join(',') : '<none>',
    age(s, now),
    sel || '<none>',
  ];
}

function sliceCells(e: Obj, now: number): unknown[] {
  const ports: Obj[] = e.ports ?? [];
  const addrs: string[] = (e.endpoints ?? []).flatMap((x: Obj) => x.addresses ?? []);
  const shown = addrs.slice(0, 3).join(',');
  return [
    e.metadata?.name,
    str(e.addressType),
    ports.length ? ports.map((p) => (p.port === undefined ? '<unset>' : String(p.port))).join(',') : '<unset>',
    addrs.length === 0 ? '<unset>' : addrs.length > 3 ? `${shown} + ${addrs.length - 3} more...` : shown,
    age(e, now),
  ];
}

function nodeCells(n: Obj, now: number): unknown[] {
  const readyCond = (n.status?.conditions ?? []).find((c: Obj) => c.type === 'Ready');
  let st = readyCond ? (readyCond.status === 'True' ? 'Ready' : 'NotReady') : 'Unknown';
  if (n.spec?.unschedulable) st += ',SchedulingDisabled';
  const roles = Object.keys(n.metadata?.labels ?? {})
    .filter((k) => k.startsWith('node-role.kubernetes.io/'))
    .map((k) => k.slice('node-role.kubernetes.io/'.length));
  const addr = (t: string): string => (n.status?.addresses ?? []).find((a: Obj) => a.type === t)?.address || '<none>';
  return [
    n.metadata?.name,
    st,
    roles.join(',') || '<none>',
    age(n, now),
    str(n.status?.nodeInfo?.kubeletVersion),
    addr('InternalIP'),
    addr('ExternalIP'),
  ];
}

function def(
  d: Partial<ResourceDef> & Pick<ResourceDef, 'group' | 'plural' | 'singular' | 'kind' | 'namespaced' | 'columns' | 'cells'>,
): ResourceDef {
  return {
    version: 'v1',
    shortNames: [],
    categories: [],
    verbs: ALL_VERBS,
    status: false,
    fields: {},
    deleteReturnsObject: false,
    toStored: identity,
    fromStored: identity,
    store: `${d.group || 'core'}/${d.plural}`,
    ...d,
  };
}

const RESOURCES: ResourceDef[] = [
  def({
    group: '',
    plural: 'namespaces',
    singular: 'namespace',
    kind: 'Namespace',
    namespaced: false,
    shortNames: ['ns'],
    verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
    status: true,
    deleteReturnsObject: true,
    fields: { 'status.phase': (o) => str(o.status?.phase) },
    columns: [NAME_COL, col('Status'), AGE_COL],
    cells: (o, now) => [o.metadata?.name, o.status?.phase || 'Active', age(o, now)],
  }),
  def({
    group: '',
    plural: 'nodes',
    singular: 'node',
    kind: 'Node',
    namespaced: false,
    shortNames: ['no'],
    status: true,
    fields: { 'spec.unschedulable': (o) => String(o.spec?.unschedulable === true) },
    columns: [
      NAME_COL,
      col('Status'),
      col('Roles'),
      AGE_COL,
      col('Version'),
      col('Internal-IP', 'string', 1),
      col('External-IP', 'string', 1),
    ],
    cells: nodeCells,
  }),
  def({
    group: '',
    plural: 'pods',
    singular: 'pod',
    kind: 'Pod',
    namespaced: true,
    shortNames: ['po'],
    categories: ['all'],
    status: true,
    deleteReturnsObject: true,
    fields: {
      'spec.nodeName': (o) => str(o.spec?.nodeName),
      'spec.restartPolicy': (o) => str(o.spec?.restartPolicy),
      'spec.schedulerName': (o) => str(o.spec?.schedulerName),
      'spec.serviceAccountName': (o) => str(o.spec?.serviceAccountName),
      'spec.hostNetwork': (o) => String(o.spec?.hostNetwork === true),
      'status.phase': (o) => str(o.status?.phase),
      'status.podIP': (o) => str(o.status?.podIP),
      'status.nominatedNodeName': (o) => str(o.status?.nominatedNodeName),
    },
    columns: [
      NAME_COL,
      col('Ready'),
      col('Status'),
      col('Restarts', 'string'),
      AGE_COL,
      col('IP', 'string', 1),
      col('Node', 'string', 1),
      col('Nominated Node', 'string', 1),
      col('Readiness Gates', 'string', 1),
    ],
    cells: podCells,
  }),
  def({
    group: '',
    plural: 'services',
    singular: 'service',
    kind: 'Service',
    namespaced: true,
    shortNames: ['svc'],
    categories: ['all'],
    status: true,
    fields: { 'spec.clusterIP': (o) => str(o.spec?.clusterIP), 'spec.type': (o) => str(o.spec?.type || 'ClusterIP') },
    columns: [
      NAME_COL,
      col('Type'),
      col('Cluster-IP'),
      col('External-IP'),
      col('Port(s)'),
      AGE_COL,
      col('Selector', 'string', 1),
    ],
    cells: svcCells,
  }),
  def({
    group: '',
    plural: 'events',
    singular: 'event',
    kind: 'Event',
    namespaced: true,
    shortNames: ['ev'],
    store: 'events',
    fields: EVENT_FIELDS,
    columns: EVENT_COLUMNS,
    cells: eventCells,
  }),
  def({
    group: 'discovery.k8s.io',
    plural: 'endpointslices',
    singular: 'endpointslice',
    kind: 'EndpointSlice',
    namespaced: true,
    columns: [NAME_COL, col('AddressType'), col('Ports'), col('Endpoints'), AGE_COL],
    cells: sliceCells,
  }),
  def({
    group: 'events.k8s.io',
    plural: 'events',
    singular: 'event',
    kind: 'Event',
    namespaced: true,
    shortNames: ['ev'],
    store: 'events',
    fields: EVENTS_V1_FIELDS,
    columns: EVENT_COLUMNS,
    cells: (o, now) => eventCells(eventsV1ToEvent(o), now),
    toStored: eventsV1ToEvent,
    fromStored: eventToEventsV1,
  }),
];

/** Groups other than core, in discovery order. */
const GROUPS = [...new Set(RESOURCES.map((r) => r.group).filter((g) => g))];

function findDef(group: string, version: string, plural: string): ResourceDef | undefined {
  return RESOURCES.find((r) => r.group === group && r.version === version && r.plural === plural);
}

/**
 * A kind as tests name it: a Kind ("Pod"), plural, singular or short name, optionally qualified with
 * its group ("Event.events.k8s.io", "endpointslices.discovery.k8s.io") or apiVersion ("events.k8s.io/v1/Event").
 * Unqualified names prefer the core group, as kubectl does.
 */
function resolveKind(kind: string): ResourceDef {
  let name = kind;
  let group: string | undefined;
  const slash = kind.lastIndexOf('/');
  if (slash >= 0) {
    const gv = kind.slice(0, slash);
    name = kind.slice(slash + 1);
    group = gv.includes('/') ? gv.slice(0, gv.indexOf('/')) : gv === 'v1' ? '' : gv;
  } else if (kind.includes('.')) {
    name = kind.slice(0, kind.indexOf('.'));
    group = kind.slice(kind.indexOf('.') + 1);
  }
  const lower = name.toLowerCase();
  const hits = RESOURCES.filter(
    (r) =>
      (group === undefined || r.group === group) &&
      (r.kind.toLowerCase() === lower || r.plural === lower || r.singular === lower || r.shortNames.includes(lower)),
  );
  const hit = hits.find((r) => r.group === '') ?? hits[0];
  if (!hit) throw new Error(`FakeApiServer: unknown kind ${JSON.stringify(kind)}`);
  return hit;
}

function defForObject(o: Obj): ResourceDef {
  if (!o || typeof o !== 'object' || typeof o.kind !== 'string' || typeof o.apiVersion !== 'string') {
    throw new Error('FakeApiServer.apply: the object needs apiVersion and kind');
  }
  const group = o.apiVersion.includes('/') ? o.apiVersion.slice(0, o.apiVersion.indexOf('/')) : '';
  const version = o.apiVersion.includes('/') ? o.apiVersion.slice(o.apiVersion.indexOf('/') + 1) : o.apiVersion;
  const hit = RESOURCES.find((r) => r.group === group && r.version === version && r.kind === o.kind);
  if (!hit) throw new Error(`FakeApiServer.apply: ${o.apiVersion} ${o.kind} is not served`);
  return hit;
}

/* ------------------------------------------------------------------------------------------ */
/* Errors, JSON helpers                                                                       */
/* ------------------------------------------------------------------------------------------ */

const REASONS: Record<number, string> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'NotFound',
  405: 'MethodNotAllowed',
  406: 'NotAcceptable',
  409: 'Conflict',
  410: 'Expired',
  413: 'RequestEntityTooLarge',
  415: 'UnsupportedMediaType',
  422: 'Invalid',
  429: 'TooManyRequests',
  500: 'InternalError',
  503: 'ServiceUnavailable',
  504: 'Timeout',
};

/** A metav1.Status for a failure, as the real server sends it. */
export function statusObject(code: number, message: string, reason = REASONS[code] ?? '', details?: Obj): Obj {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    ...(reason ? { reason } : {}),
    ...(details ? { details } : {}),
    code,
  };
}

class HttpError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly reason?: string,
    readonly details?: Obj,
  ) {
    super(message);
  }
  status(): Obj {
    return statusObject(this.code, this.message, this.reason ?? REASONS[this.code], this.details);
  }
}

function clone<T>(o: T): T {
  return o === undefined ? o : (JSON.parse(JSON.stringify(o)) as T);
}

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** JSON with sorted keys, for "did anything change" checks. */
function canon(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canon).join(',')}]`;
  if (isObj(v))
    return `{${Object.keys(v)
      .sort()
      .filter((k) => v[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canon(v[k])}`)
      .join(',')}}`;
  return JSON.stringify(v);
}

function nowStamp(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
}

const NAME_CHARS = 'bcdfghjklmnpqrstvwxz2456789';
function randomSuffix(): string {
  const b = randomBytes(5);
  return [...b].map((x) => NAME_CHARS[x % NAME_CHARS.length]).join('');
}

function truthy(v: string | undefined): boolean {
  return v !== undefined && ['1', 't', 'T', 'true', 'TRUE', 'True'].includes(v);
}

/* ------------------------------------------------------------------------------------------ */
/* Patches                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/** RFC 7386 JSON merge patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObj(patch)) return clone(patch);
  const out: Obj = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

const DELETE_MARK = Symbol('delete');

/**
 * Strategic merge patch, approximated: a merge patch that understands the $patch: replace|delete map
 * directive and ignores the other $-directives. Lists are replaced whole (the real server merges lists
 * such as containers by their merge key).
 */
export function strategicMergePatch(target: unknown, patch: unknown): unknown {
  const r = smp(target, patch);
  return r === DELETE_MARK ? {} : r;
}

function smp(target: unknown, patch: unknown): unknown {
  if (!isObj(patch)) return clone(patch);
  const directive = patch.$patch;
  if (directive === 'delete') return DELETE_MARK;
  const base: Obj = directive === 'replace' || !isObj(target) ? {} : { ...target };
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith('$')) continue;
    if (v === null) {
      delete base[k];
      continue;
    }
    const r = smp(base[k], v);
    if (r === DELETE_MARK) delete base[k];
    else base[k] = r;
  }
  return base;
}

class PatchError extends Error {}

function pointer(p: unknown): string[] {
  if (typeof p !== 'string') throw new PatchError('missing path');
  if (p === '') return [];
  if (!p.startsWith('/')) throw new PatchError(`invalid JSON pointer: "${p}"`);
  return p
    .slice(1)
    .split('/')
    .map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function arrayIndex(tok: string, len: number, allowEnd: boolean): number {
  if (allowEnd && tok === '-') return len;
  if (!/^(0|[1-9]\d*)$/.test(tok)) throw new PatchError(`invalid array index: ${tok}`);
  const i = Number(tok);
  if (i > len || (!allowEnd && i === len)) throw new PatchError(`array index out of bounds: ${tok}`);
  return i;
}

/** The container holding the last token of path (which must exist up to there). */
function parentOf(root: unknown, toks: string[], op: string, p: string): unknown {
  let cur = root;
  for (const t of toks.slice(0, -1)) {
    if (Array.isArray(cur)) cur = cur[arrayIndex(t, cur.length, false)];
    else if (isObj(cur) && t in cur) cur = cur[t];
    else throw new PatchError(`${op} operation does not apply: doc is missing path: "${p}"`);
  }
  if (!Array.isArray(cur) && !isObj(cur)) throw new PatchError(`${op} operation does not apply: doc is missing path: "${p}"`);
  return cur;
}

function getAt(root: unknown, p: string, op: string): unknown {
  const toks = pointer(p);
  if (toks.length === 0) return root;
  const parent = parentOf(root, toks, op, p);
  const last = toks[toks.length - 1];
  if (Array.isArray(parent)) return parent[arrayIndex(last, parent.length, false)];
  if (!(last in (parent as Obj))) throw new PatchError(`${op} operation does not apply: doc is missing path: "${p}"`);
  return (parent as Obj)[last];
}

function addAt(root: unknown, p: string, value: unknown, op: string, replace: boolean): unknown {
  const toks = pointer(p);
  if (toks.length === 0) return value;
  const parent = parentOf(root, toks, op, p);
  const last = toks[toks.length - 1];
  if (Array.isArray(parent)) {
    const i = arrayIndex(last, parent.length, !replace);
    parent.splice(i, replace ? 1 : 0, value);
  } else {
    if (replace && !(last in (parent as Obj))) throw new PatchError(`${op} operation does not apply: doc is missing key: "${p}"`);
    (parent as Obj)[last] = value;
  }
  return root;
}

function removeAt(root: unknown, p: string, op: string): unknown {
  const toks = pointer(p);
  if (toks.length === 0) throw new PatchError(`${op} operation does not apply: cannot remove the whole document`);
  const parent = parentOf(root, toks, op, p);
  const last = toks[toks.length - 1];
  if (Array.isArray(parent)) parent.splice(arrayIndex(last, parent.length, false), 1);
  else {
    if (!(last in (parent as Obj))) throw new PatchError(`${op} operation does not apply: doc is missing path: "${p}"`);
    delete (parent as Obj)[last];
  }
  return root;
}

/** RFC 6902 JSON patch; throws PatchError. */
export function jsonPatch(doc: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw new HttpError(400, 'json: cannot unmarshal object into Go value of type jsonpatch.Patch');
  let root = clone(doc);
  for (const o of ops as Obj[]) {
    const op = String(o?.op);
    switch (op) {
      case 'add':
        root = addAt(root, o.path, clone(o.value), op, false);
        break;
      case 'replace':
        root = addAt(root, o.path, clone(o.value), op, true);
        break;
      case 'remove':
        root = removeAt(root, o.path, op);
        break;
      case 'move': {
        const v = getAt(root, o.from, op);
        root = removeAt(root, o.from, op);
        root = addAt(root, o.path, v, op, false);
        break;
      }
      case 'copy':
        root = addAt(root, o.path, clone(getAt(root, o.from, op)), op, false);
        break;
      case 'test':
        if (canon(getAt(root, o.path, op)) !== canon(o.value))
          throw new PatchError(`testing value ${o.path} failed: test failed`);
        break;
      default:
        throw new PatchError(`Unexpected kind: ${op}`);
    }
  }
  return root;
}

/* ------------------------------------------------------------------------------------------ */
/* Selectors                                                                                  */
/* ------------------------------------------------------------------------------------------ */

type Pred = (o: Obj) => boolean;

function splitTopLevel(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out.map((x) => x.trim()).filter((x) => x !== '');
}

const LABEL_KEY = '[A-Za-z0-9][-A-Za-z0-9_./]*';
const LABEL_VALUE = '(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?';

/** Equality- and set-based label selectors (k=v, k==v, k!=v, k, !k, k in (a,b), k notin (a,b)). */
export function parseLabelSelector(sel: string | undefined): Pred {
  if (!sel) return () => true;
  const preds: Pred[] = [];
  for (const term of splitTopLevel(sel)) {
    let m: RegExpMatchArray | null;
    const labels = (o: Obj): Record<string, string> => o.metadata?.labels ?? {};
    if ((m = term.match(new RegExp(`^!\\s*(${LABEL_KEY})$`)))) {
      const k = m[1];
      preds.push((o) => !(k in labels(o)));
    } else if ((m = term.match(new RegExp(`^(${LABEL_KEY})\\s+(in|notin)\\s*\\(([^)]*)\\)$`)))) {
      const [, k, op, list] = m;
      const vals = list
        .split(',')
        .map((v) => v.trim())
        .filter((v) => v !== '');
      if (vals.some((v) => !new RegExp(`^${LABEL_VALUE}$`).test(v)))
        throw new HttpError(400, `unable to parse requirement: ${term}`);
      preds.push(
        op === 'in'
          ? (o) => k in labels(o) && vals.includes(labels(o)[k])
          : (o) => !(k in labels(o)) || !vals.includes(labels(o)[k]),
      );
    } else if ((m = term.match(new RegExp(`^(${LABEL_KEY})\\s*(==|=|!=)\\s*(${LABEL_VALUE})$`)))) {
      const [, k, op, v] = m;
      preds.push(op === '!=' ? (o) => labels(o)[k] !== v : (o) => k in labels(o) && labels(o)[k] === v);
    } else if ((m = term.match(new RegExp(`^(${LABEL_KEY})$`)))) {
      const k = m[1];
      preds.push((o) => k in labels(o));
    } else {
      throw new HttpError(400, `unable to parse requirement: found '${term}', expected: label selector`);
    }
  }
  return (o) => preds.every((p) => p(o));
}

interface FieldSel {
  pred: Pred;
  /** The value of metadata.name=..., when the selector requires it exactly. */
  exactName?: string;
}

/** Field selectors: k=v, k==v, k!=v, on the fields the resource supports. Evaluated on the stored form. */
function parseFieldSelector(sel: string | undefined, d: ResourceDef): FieldSel {
  if (!sel) return { pred: () => true };
  const fields: Record<string, (o: Obj) => string> = {
    'metadata.name': (o) => str(o.metadata?.name),
    'metadata.namespace': (o) => str(o.metadata?.namespace),
    ...d.fields,
  };
  const preds: Pred[] = [];
  let exactName: string | undefined;
  for (const term of sel
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t)) {
    const m = term.match(/^([^=!]+?)\s*(==|=|!=)\s*(.*)$/);
    if (!m) throw new HttpError(400, `invalid selector: '${sel}'; can't understand '${term}'`);
    const [, k, op, v] = m;
    const get = fields[k];
    if (!get) throw new HttpError(400, `field label not supported: ${k}`);
    if (k === 'metadata.name' && op !== '!=') exactName = v;
    preds.push(op === '!=' ? (o) => get(o) !== v : (o) => get(o) === v);
  }
  return { pred: (o) => preds.every((p) => p(o)), exactName };
}

/* ------------------------------------------------------------------------------------------ */
/* Request info (k8s.io/apiserver/pkg/endpoints/request.RequestInfoFactory)                   */
/* ------------------------------------------------------------------------------------------ */

interface ReqInfo {
  isResource: boolean;
  verb: string;
  group: string;
  version: string;
  resource: string;
  namespace?: string;
  name?: string;
  subresource?: string;
  /** /api/v1/watch/... */
  legacyWatch: boolean;
  /** Extra path segments past the subresource (not served). */
  extra: boolean;
  parts: string[];
}

const NAMESPACE_SUBRESOURCES = ['status', 'finalize'];

function requestInfo(method: string, pathname: string, query: Record<string, string>): ReqInfo {
  const parts = pathname
    .split('/')
    .filter((p) => p !== '')
    .map((p) => decodeURIComponent(p));
  const methodVerb: Record<string, string> = {
    GET: 'get',
    HEAD: 'get',
    POST: 'create',
    PUT: 'update',
    PATCH: 'patch',
    DELETE: 'delete',
  };
  const nonResource: ReqInfo = {
    isResource: false,
    verb: method.toLowerCase(),
    group: '',
    version: '',
    resource: '',
    legacyWatch: false,
    extra: false,
    parts,
  };
  let cur: string[];
  let group = '';
  let version: string;
  if (parts[0] === 'api' && parts.length >= 3) {
    version = parts[1];
    cur = parts.slice(2);
  } else if (parts[0] === 'apis' && parts.length >= 4) {
    group = parts[1];
    version = parts[2];
    cur = parts.slice(3);
  } else return nonResource;
  let verb = methodVerb[method] ?? method.toLowerCase();
  let legacyWatch = false;
  if (cur[0] === 'watch' && cur.length > 1) {
    verb = 'watch';
    legacyWatch = true;
    cur = cur.slice(1);
  }
  let namespace: string | undefined;
  if (cur[0] === 'namespaces' && cur.length > 1) {
    namespace = cur[1];
    if (cur.length > 2 && !NAMESPACE_SUBRESOURCES.includes(cur[2])) cur = cur.slice(2);
  }
  const info: ReqInfo = {
    isResource: true,
    verb,
    group,
    version,
    resource: cur[0],
    name: cur[1],
    subresource: cur[2],
    namespace,
    legacyWatch,
    extra: cur.length > 3,
    parts,
  };
  if (!info.name && info.verb === 'get') {
    info.verb = truthy(query.watch) ? 'watch' : 'list';
    const m = (query.fieldSelector ?? '')
      .split(',')
      .map((t) => t.trim().match(/^metadata\.name\s*==?\s*(.+)$/))
      .find((x) => x);
    if (m && /^[^/%]+$/.test(m[1]) && m[1] !== '.' && m[1] !== '..') info.name = m[1];
  }
  if (!info.name && info.verb === 'delete') info.verb = 'deletecollection';
  return info;
}

/* ------------------------------------------------------------------------------------------ */
/* The server                                                                                 */
/* ------------------------------------------------------------------------------------------ */

type ChangeType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface Change {
  rv: number;
  store: string;
  key: string;
  type: ChangeType;
  /** The new state (DELETED: the final state, with the deletion's resourceVersion); stored form. */
  obj: Obj;
  /** The state before (MODIFIED, DELETED). */
  prev?: Obj;
}

interface Watcher {
  def: ResourceDef;
  namespace?: string;
  name?: string;
  field: Pred;
  label: Pred;
  table: boolean;
  includeObject: string;
  sentColumns: boolean;
  res: http.ServerResponse;
  info: WatchInfo;
  lastRv: number;
  timers: NodeJS.Timeout[];
  closed: boolean;
}

interface ActiveFailure {
  status?: number;
  delayMs: number;
  remaining: number;
  match?: (r: RequestRecord) => boolean;
  message: string;
}

const INITIAL_RV = 100;

function keyOf(def: ResourceDef, namespace: string | undefined, name: string): string {
  return def.namespaced ? `${namespace ?? ''}/${name}` : name;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', () => resolve(Buffer.concat(chunks)));
    req.on('close', () => resolve(Buffer.concat(chunks)));
  });
}

export class FakeApiServer {
  /** Every request, in arrival order. */
  readonly requests: RequestRecord[] = [];
  /** Event objects created through the API (core/v1 and events.k8s.io/v1 POSTs), as posted (after defaulting). */
  readonly events: Obj[] = [];

  private server!: http.Server;
  private port = 0;
  private readonly tls: boolean;
  private tokenValue: string;
  private readonly dir: string;
  private readonly certs?: ReturnType<typeof makeCerts>;
  private readonly bookmarkIntervalMs: number;
  private readonly historyLimit: number;
  private readonly versionInfo: { major: string; minor: string };

  private rv = INITIAL_RV;
  /** Watches and exact lists from a resourceVersion below this get 410. */
  private historyStart = INITIAL_RV;
  private history: Change[] = [];
  /**
   * Sorted snapshots of a store at a resourceVersion, shared by the pages of one paginated LIST
   * (100,000 objects in pages of 500 would otherwise copy and sort the store 200 times). A store at
   * a given resourceVersion never changes, so an entry stays right; the few newest are kept.
   */
  private readonly listSnapshots = new Map<string, { keys: string[]; state: Map<string, Obj> }>();
  private readonly stores = new Map<string, Map<string, Obj>>();
  private readonly watchers = new Set<Watcher>();
  private readonly sockets = new Set<net.Socket>();
  private failure: ActiveFailure | null = null;
  private readonly bus = new EventEmitter();
  private stopped = false;

  private constructor(opts: ApiServerOptions) {
    this.tls = opts.tls ?? true;
    this.tokenValue = opts.token ?? randomBytes(24).toString('base64url');
    this.bookmarkIntervalMs = opts.bookmarkIntervalMs ?? 1000;
    this.historyLimit = opts.historyLimit ?? 10000;
    this.versionInfo = opts.version ?? { major: '1', minor: '32' };
    this.port = opts.port ?? 0;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-apiserver-'));
    if (this.tls) this.certs = makeCerts(this.dir);
    this.bus.setMaxListeners(0);
  }

  static async start(opts: ApiServerOptions = {}): Promise<FakeApiServer> {
    const s = new FakeApiServer(opts);
    try {
      await s.listen();
    } catch (e) {
      fs.rmSync(s.dir, { recursive: true, force: true });
      throw e;
    }
    return s;
  }

  /** https://127.0.0.1:<port> (http:// without TLS). */
  get url(): string {
    return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.port}`;
  }

  /** The CA certificate file ('' without TLS). */
  get caFile(): string {
    return this.certs?.caFile ?? '';
  }

  /** The CA certificate, PEM ('' without TLS). */
  get caPem(): string {
    return this.certs?.caPem ?? '';
  }

  get token(): string {
    return this.tokenValue;
  }

  /** The current (latest) resourceVersion. */
  get resourceVersion(): string {
    return String(this.rv);
  }

  /** The open watches. */
  get watches(): WatchInfo[] {
    return [...this.watchers].map((w) => ({ ...w.info, lastResourceVersion: String(w.lastRv) }));
  }

  /**
   * Writes a kubeconfig (cluster server + CA, user token) and returns its path (default: in the
   * server's temp dir). With tokenFile, the current token is written there and the kubeconfig
   * names the file instead (as `tokenFile` for kubectl/client-go and `token-file` for client-node,
   * which reads it once, verbatim: so no trailing newline); rotateToken() does not rewrite it.
   */
  kubeconfig(file?: string, opts: { tokenFile?: string } = {}): string {
    const p = file ?? path.join(this.dir, 'kubeconfig');
    let user: Obj = { token: this.tokenValue };
    if (opts.tokenFile) {
      fs.writeFileSync(opts.tokenFile, this.tokenValue, { mode: 0o600 });
      user = { tokenFile: opts.tokenFile, 'token-file': opts.tokenFile };
    }
    const cfg = {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [
        { name: 'sluice-fake', cluster: { server: this.url, ...(this.tls ? { 'certificate-authority': this.caFile } : {}) } },
      ],
      users: [{ name: 'sluice-fake', user }],
      contexts: [{ name: 'sluice-fake', context: { cluster: 'sluice-fake', user: 'sluice-fake', namespace: 'default' } }],
      'current-context': 'sluice-fake',
      preferences: {},
    };
    fs.writeFileSync(p, JSON.stringify(cfg, null, 2) + '\n', { mode: 0o600 });
    return p;
  }

  /* ---------------------------------- cluster state ---------------------------------- */

  /** Creates or replaces an object (by apiVersion/kind/namespace/name); returns it as stored. */
  apply(obj: object): Obj {
    const d = defForObject(obj as Obj);
    const o = clone(obj as Obj);
    o.metadata = o.metadata ?? {};
    if (!o.metadata.name) throw new Error('FakeApiServer.apply: metadata.name is required');
    if (d.namespaced) o.metadata.namespace = o.metadata.namespace || 'default';
    else delete o.metadata.namespace;
    const stored = d.toStored(o);
    const key = keyOf(d, stored.metadata.namespace, stored.metadata.name);
    const prev = this.store(d).get(key);
    stored.metadata.uid = stored.metadata.uid ?? prev?.metadata?.uid ?? randomUUID();
    stored.metadata.creationTimestamp = stored.metadata.creationTimestamp ?? prev?.metadata?.creationTimestamp ?? nowStamp();
    return d.fromStored(this.write(d, key, stored, prev));
  }

  /** Deletes an object; emits DELETED. Returns whether it existed. */
  remove(kind: string, namespace: string | undefined, name: string): boolean {
    const d = resolveKind(kind);
    const key = keyOf(d, d.namespaced ? (namespace ?? 'default') : undefined, name);
    if (!this.store(d).has(key)) return false;
    this.erase(d, key);
    return true;
  }

  get(kind: string, namespace: string | undefined, name: string): Obj | undefined {
    const d = resolveKind(kind);
    const o = this.store(d).get(keyOf(d, d.namespaced ? (namespace ?? 'default') : undefined, name));
    return o && clone(d.fromStored(o));
  }

  /** Every object of a kind (all namespaces), ordered by namespace/name. */
  list(kind: string): Obj[] {
    const d = resolveKind(kind);
    const s = this.store(d);
    return [...s.keys()].sort().map((k) => clone(d.fromStored(s.get(k)!)));
  }

  /* ---------------------------------- fault injection --------------------------------- */

  /** Every open watch gets an ERROR 410 (Expired) and is closed; resourceVersions before now become too old. */
  expireWatches(): void {
    this.compact();
    for (const w of [...this.watchers]) {
      this.writeEvent(w, 'ERROR', statusObject(410, `too old resource version: ${w.lastRv} (${this.rv})`, 'Expired'));
      this.closeWatch(w);
    }
  }

  /** Makes every resourceVersion before the current one too old for watches and exact lists. */
  compact(): void {
    this.historyStart = this.rv;
    this.history = [];
  }

  /** Injects failures and/or latency into the next requests (null: clear). */
  setFailure(opts: FailureSpec | null): void {
    this.failure =
      opts === null
        ? null
        : {
            status: opts.status,
            delayMs: opts.delayMs ?? 0,
            remaining: opts.forRequests ?? Infinity,
            match: opts.match,
            message: opts.message ?? 'injected failure',
          };
  }

  /** Drops every TCP connection (open watches end abruptly, without an ERROR event); keeps listening. */
  closeAllConnections(): void {
    for (const s of this.sockets) s.destroy();
    for (const w of [...this.watchers]) this.closeWatch(w);
  }

  /** Stops listening and drops all connections, then listens again on the same port; the state is kept. */
  async restart(opts: { downMs?: number } = {}): Promise<void> {
    if (this.stopped) throw new Error('FakeApiServer.restart: stopped');
    await this.shutdown();
    if (opts.downMs) await sleep(opts.downMs);
    await this.listen();
  }

  /** Alias of restart(). */
  restartOnSamePort(opts: { downMs?: number } = {}): Promise<void> {
    return this.restart(opts);
  }

  /** Stops for good: closes everything and removes the temp dir (CA, kubeconfig). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.shutdown();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** From now on only newToken is accepted (open watches stay open, as on the real server). */
  rotateToken(newToken: string): void {
    this.tokenValue = newToken;
  }

  /* ---------------------------------- waiting helpers --------------------------------- */

  /** Resolves with the first request (from index `from` of `requests` on) that pred accepts. */
  waitForRequest(pred: (r: RequestRecord) => boolean, opts: { timeoutMs?: number; from?: number } = {}): Promise<RequestRecord> {
    const found = this.requests.slice(opts.from ?? 0).find(pred);
    if (found) return Promise.resolve(found);
    return this.waitOn('request', pred, opts.timeoutMs ?? 10000, 'request');
  }

  /** Resolves when a watch that pred accepts is open (after its initial events were sent). */
  waitForWatch(pred: (w: WatchInfo) => boolean = () => true, timeoutMs = 10000): Promise<WatchInfo> {
    const found = this.watches.find(pred);
    if (found) return Promise.resolve(found);
    return this.waitOn('watch', pred, timeoutMs, 'watch');
  }

  private waitOn<T>(ev: string, pred: (x: T) => boolean, timeoutMs: number, what: string): Promise<T> {
    return new Promise((resolve, reject) => {
      const onEv = (x: T): void => {
        if (!pred(x)) return;
        clearTimeout(t);
        this.bus.off(ev, onEv);
        resolve(x);
      };
      const t = setTimeout(() => {
        this.bus.off(ev, onEv);
        reject(new Error(`FakeApiServer: no matching ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.bus.on(ev, onEv);
    });
  }

  /* ---------------------------------- storage ---------------------------------- */

  private store(d: ResourceDef): Map<string, Obj> {
    let s = this.stores.get(d.store);
    if (!s) this.stores.set(d.store, (s = new Map()));
    return s;
  }

  /** Stores a (stored-form) object under a new resourceVersion; records and broadcasts the change. */
  private write(d: ResourceDef, key: string, obj: Obj, prev: Obj | undefined): Obj {
    const rv = ++this.rv;
    obj.metadata.resourceVersion = String(rv);
    this.store(d).set(key, obj);
    this.record({ rv, store: d.store, key, type: prev ? 'MODIFIED' : 'ADDED', obj, prev });
    return clone(obj);
  }

  private erase(d: ResourceDef, key: string): Obj {
    const prev = this.store(d).get(key)!;
    const rv = ++this.rv;
    const last = clone(prev);
    last.metadata.resourceVersion = String(rv);
    this.store(d).delete(key);
    this.record({ rv, store: d.store, key, type: 'DELETED', obj: last, prev });
    return clone(last);
  }

  private record(c: Change): void {
    this.history.push(c);
    while (this.history.length > this.historyLimit) this.historyStart = this.history.shift()!.rv;
    for (const w of [...this.watchers]) if (w.def.store === c.store) this.deliver(w, c);
  }

  /** The store at rv with its keys sorted; `state` gives that store (live when rv is the current one). */
  private listSnapshot(d: ResourceDef, rv: number, state: () => Map<string, Obj>): { keys: string[]; state: Map<string, Obj> } {
    const id = `${d.store}@${rv}`;
    let snap = this.listSnapshots.get(id);
    if (snap === undefined) {
      const frozen = new Map(state()); // the live store moves on; this rv's view must not
      snap = { keys: [...frozen.keys()].sort(), state: frozen };
      this.listSnapshots.set(id, snap);
      while (this.listSnapshots.size > 8) this.listSnapshots.delete(this.listSnapshots.keys().next().value!);
    }
    return snap;
  }

  /** The objects of a store as they were at resourceVersion rv (which must be >= historyStart). */
  private stateAt(d: ResourceDef, rv: number): Map<string, Obj> {
    const state = new Map(this.store(d));
    for (let i = this.history.length - 1; i >= 0 && this.history[i].rv > rv; i--) {
      const c = this.history[i];
      if (c.store !== d.store) continue;
      if (c.type === 'ADDED') state.delete(c.key);
      else state.set(c.key, c.prev!);
    }
    return state;
  }

  /* ---------------------------------- HTTP plumbing ---------------------------------- */

  private listen(): Promise<void> {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      this.handle(req, res).catch((e: unknown) => {
        try {
          if (!res.headersSent) {
            res.writeHead(500, { 'Content-Type': 'application/json' });
            res.end(JSON.stringify(statusObject(500, `fake apiserver: ${(e as Error)?.stack ?? e}`)));
          } else res.destroy();
        } catch {
          /* the client went away */
        }
      });
    };
    const server = this.tls
      ? https.createServer({ key: this.certs!.keyPem, cert: this.certs!.certPem }, handler)
      : http.createServer(handler);
    server.keepAliveTimeout = 65000;
    server.requestTimeout = 0;
    server.on('connection', (s: net.Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    server.on('clientError', (_e, s) => s.destroy());
    this.server = server;
    return new Promise((resolve, reject) => {
      const tryListen = (attempt: number): void => {
        const onError = (e: NodeJS.ErrnoException): void => {
          if (e.code === 'EADDRINUSE' && this.port !== 0 && attempt < 50) setTimeout(() => tryListen(attempt + 1), 100);
          else reject(e);
        };
        server.once('error', onError);
        server.listen(this.port, '127.0.0.1', () => {
          server.off('error', onError);
          this.port = (server.address() as net.AddressInfo).port;
          resolve();
        });
      };
      tryListen(0);
    });
  }

  private shutdown(): Promise<void> {
    const server = this.server;
    return new Promise((resolve) => {
      server.close(() => resolve());
      this.closeAllConnections();
    });
  }

  private respond(
    res: http.ServerResponse,
    rec: RequestRecord,
    code: number,
    body: unknown,
    headers: Record<string, string> = {},
  ): void {
    rec.status = code;
    if (res.destroyed || res.headersSent) return;
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    res.writeHead(code, {
      'Content-Type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json',
      'Content-Length': String(Buffer.byteLength(text)),
      'Cache-Control': 'no-cache, private',
      'Audit-Id': randomUUID(),
      ...headers,
    });
    res.end(text);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const query: Record<string, string> = {};
    for (const [k, v] of url.searchParams) query[k] = v;
    const method = (req.method ?? 'GET').toUpperCase();
    let info: ReqInfo;
    try {
      info = requestInfo(method, url.pathname, query);
    } catch {
      info = {
        isResource: false,
        verb: method.toLowerCase(),
        group: '',
        version: '',
        resource: '',
        legacyWatch: false,
        extra: false,
        parts: [],
      };
    }
    const rec: RequestRecord = {
      method,
      path: url.pathname,
      query,
      verb: info.verb,
      resource: info.resource ?? '',
      apiGroup: info.group,
      ...(info.namespace !== undefined ? { namespace: info.namespace } : {}),
      ...(info.name !== undefined ? { name: info.name } : {}),
      ...(info.subresource !== undefined ? { subresource: info.subresource } : {}),
      status: 0,
      at: Date.now(),
      userAgent: String(req.headers['user-agent'] ?? ''),
    };
    this.requests.push(rec);
    this.bus.emit('request', rec);
    const body = await readBody(req);

    const f = this.failure;
    if (f && f.remaining > 0 && (!f.match || f.match(rec))) {
      f.remaining--;
      if (f.remaining <= 0) this.failure = null;
      if (f.delayMs > 0) await sleep(f.delayMs);
      if (res.destroyed) return;
      if (f.status) {
        const headers: Record<string, string> = f.status === 429 ? { 'Retry-After': '1' } : {};
        const details = f.status === 429 ? { retryAfterSeconds: 1 } : undefined;
        this.respond(res, rec, f.status, statusObject(f.status, f.message, REASONS[f.status] ?? '', details), headers);
        return;
      }
    }

    const auth = String(req.headers.authorization ?? '');
    if (auth !== `Bearer ${this.tokenValue}`) {
      this.respond(res, rec, 401, statusObject(401, 'Unauthorized'));
      return;
    }

    try {
      if (!info.isResource) this.nonResource(info, res, rec);
      else this.resource(info, req, res, rec, query, body);
    } catch (e) {
      if (e instanceof HttpError) this.respond(res, rec, e.code, e.status());
      else throw e;
    }
  }

  /* ---------------------------------- discovery ---------------------------------- */

  private nonResource(info: ReqInfo, res: http.ServerResponse, rec: RequestRecord): void {
    const p = info.parts;
    const notFound = (): void => this.respond(res, rec, 404, '404 page not found\n');
    if (rec.method !== 'GET' && rec.method !== 'HEAD') {
      if (p[0] === 'api' || p[0] === 'apis')
        throw new HttpError(405, 'the server does not allow this method on the requested resource');
      return notFound();
    }
    const groupDoc = (g: string): Obj => {
      const versions = [...new Set(RESOURCES.filter((r) => r.group === g).map((r) => r.version))].map((v) => ({
        groupVersion: `${g}/${v}`,
        version: v,
      }));
      return { name: g, versions, preferredVersion: versions[0] };
    };
    const key = p.join('/');
    if (key === 'api') {
      return this.respond(res, rec, 200, {
        kind: 'APIVersions',
        versions: ['v1'],
        serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `127.0.0.1:${this.port}` }],
      });
    }
    if (key === 'apis') {
      return this.respond(res, rec, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups: GROUPS.map(groupDoc) });
    }
    if (p[0] === 'api' && p.length === 2) return this.respond(res, rec, 200, this.resourceList('', p[1]));
    if (p[0] === 'apis' && p.length === 2 && GROUPS.includes(p[1])) {
      return this.respond(res, rec, 200, { kind: 'APIGroup', apiVersion: 'v1', ...groupDoc(p[1]) });
    }
    if (p[0] === 'apis' && p.length === 3) return this.respond(res, rec, 200, this.resourceList(p[1], p[2]));
    if (key === 'version') {
      const { major, minor } = this.versionInfo;
      return this.respond(res, rec, 200, {
        major,
        minor,
        gitVersion: `v${major}.${minor}.0`,
        gitCommit: '0000000000000000000000000000000000000000',
        gitTreeState: 'clean',
        buildDate: '2025-01-01T00:00:00Z',
        goVersion: 'go1.23.0',
        compiler: 'gc',
        platform: 'linux/amd64',
      });
    }
    if (['healthz', 'livez', 'readyz'].includes(key)) return this.respond(res, rec, 200, 'ok');
    return notFound();
  }

  private resourceList(group: string, version: string): Obj {
    const defs = RESOURCES.filter((r) => r.group === group && r.version === version);
    if (defs.length === 0) throw new HttpError(404, 'the server could not find the requested resource', 'NotFound', {});
    const resources: Obj[] = [];
    for (const d of defs) {
      resources.push({
        name: d.plural,
        singularName: d.singular,
        namespaced: d.namespaced,
        kind: d.kind,
        verbs: d.verbs,
        ...(d.shortNames.length ? { shortNames: d.shortNames } : {}),
        ...(d.categories.length ? { categories: d.categories } : {}),
        storageVersionHash: createHash('sha256').update(`${d.group}/${d.version}/${d.kind}`).digest('base64').slice(0, 12),
      });
      if (d.status)
        resources.push({
          name: `${d.plural}/status`,
          singularName: '',
          namespaced: d.namespaced,
          kind: d.kind,
          verbs: ['get', 'patch', 'update'],
        });
    }
    return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: apiVersionOf({ group, version }), resources };
  }

  /* ---------------------------------- resources ---------------------------------- */

  private resource(
    info: ReqInfo,
    req: http.IncomingMessage,
    res: http.ServerResponse,
    rec: RequestRecord,
    query: Record<string, string>,
    body: Buffer,
  ): void {
    const notFound = (): never => {
      throw new HttpError(404, 'the server could not find the requested resource', 'NotFound', {});
    };
    const d = findDef(info.group, info.version, info.resource);
    if (!d || info.extra) return notFound();
    // /api/v1/namespaces/<name>: the namespace is also the name.
    const isNsObject = d.plural === 'namespaces';
    const namespace = isNsObject ? undefined : info.namespace;
    if (!d.namespaced && namespace !== undefined) return notFound();
    if (d.namespaced && info.name !== undefined && namespace === undefined && info.verb !== 'watch' && info.verb !== 'list')
      return notFound();
    if (info.subresource !== undefined && !(info.subresource === 'status' && d.status)) return notFound();
    const verb = info.verb as Verb;
    if (!d.verbs.includes(verb) || (info.subresource && !['get', 'update', 'patch'].includes(verb))) {
      throw new HttpError(405, 'the server does not allow this method on the requested resource');
    }
    const table = wantsTable(req);
    const includeObject = query.includeObject || 'Metadata';
    const status = info.subresource === 'status';
    switch (verb) {
      case 'list':
        return this.respond(res, rec, 200, this.doList(d, namespace, query, table, includeObject));
      case 'watch':
        return this.doWatch(d, namespace, info.legacyWatch ? info.name : undefined, query, res, rec, table, includeObject);
      case 'get': {
        const o = this.mustGet(d, namespace, info.name!);
        return this.respond(res, rec, 200, table ? this.table(d, [o], includeObject, String(this.rv)) : this.served(d, o));
      }
      case 'create':
        if (d.namespaced && namespace === undefined)
          throw new HttpError(405, 'the server does not allow this method on the requested resource');
        return this.respond(res, rec, 201, this.doCreate(d, namespace, parseJson(body)));
      case 'update':
        return this.respond(res, rec, 200, this.doUpdate(d, namespace, info.name!, parseJson(body), status));
      case 'patch':
        return this.respond(
          res,
          rec,
          200,
          this.doPatch(d, namespace, info.name!, String(req.headers['content-type'] ?? ''), body, status),
        );
      case 'delete':
        return this.respond(res, rec, 200, this.doDelete(d, namespace, info.name!, body));
      case 'deletecollection':
        return this.respond(res, rec, 200, this.doDeleteCollection(d, namespace, query));
    }
  }

  /** An object as served: the resource's form, with kind and apiVersion. */
  private served(d: ResourceDef, stored: Obj): Obj {
    const o = clone(d.fromStored(stored));
    const { metadata, ...rest } = o;
    return { ...rest, apiVersion: apiVersionOf(d), kind: d.kind, metadata };
  }

  /**
   * A list item as served: without kind and apiVersion, like the real server. A shallow copy is
   * enough: the response is serialized at once and nothing changes it (a page of 500 deep-cloned
   * objects was most of what serving a 100,000-object LIST cost).
   */
  private item(d: ResourceDef, stored: Obj): Obj {
    const { kind: _kind, apiVersion: _apiVersion, ...rest } = d.fromStored(stored);
    return rest;
  }

  private mustGet(d: ResourceDef, namespace: string | undefined, name: string): Obj {
    const o = this.store(d).get(keyOf(d, namespace, name));
    if (!o) throw this.notFoundError(d, name);
    return o;
  }

  private notFoundError(d: ResourceDef, name: string): HttpError {
    const res = d.group ? `${d.plural}.${d.group}` : d.plural;
    return new HttpError(404, `${res} "${name}" not found`, 'NotFound', {
      name,
      ...(d.group ? { group: d.group } : {}),
      kind: d.plural,
    });
  }

  private scope(d: ResourceDef, namespace: string | undefined, query: Record<string, string>): { pred: Pred; filtered: boolean } {
    const field = parseFieldSelector(query.fieldSelector, d);
    const label = parseLabelSelector(query.labelSelector);
    return {
      pred: (o) => (namespace === undefined || o.metadata?.namespace === namespace) && field.pred(o) && label(d.fromStored(o)),
      filtered: !!(query.fieldSelector || query.labelSelector),
    };
  }

  private doList(
    d: ResourceDef,
    namespace: string | undefined,
    query: Record<string, string>,
    table: boolean,
    includeObject: string,
  ): Obj {
    const { pred, filtered } = this.scope(d, namespace, query);
    const limit = query.limit ? Number(query.limit) : 0;
    if (!Number.isInteger(limit) || limit < 0) throw new HttpError(400, `invalid limit: ${query.limit}`);
    let listRv = this.rv;
    let start = '';
    // the store as of listRv, computed only when no page of this LIST has been served yet
    let state = (): Map<string, Obj> => this.store(d);
    if (query.continue) {
      let tok: { v?: string; rv?: number; start?: string };
      try {
        tok = JSON.parse(Buffer.from(query.continue, 'base64url').toString('utf8'));
      } catch {
        throw new HttpError(400, 'continue key is not valid: illegal base64 data');
      }
      if (tok.v !== 'meta.k8s.io/v1' || typeof tok.rv !== 'number' || typeof tok.start !== 'string') {
        throw new HttpError(400, 'continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)');
      }
      if (tok.rv < this.historyStart) {
        throw new HttpError(
          410,
          'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.',
          'Expired',
        );
      }
      listRv = tok.rv;
      start = tok.start;
      state = () => this.stateAt(d, tok.rv!);
    } else if (query.resourceVersion !== undefined && query.resourceVersion !== '' && query.resourceVersion !== '0') {
      const n = Number(query.resourceVersion);
      if (!/^\d+$/.test(query.resourceVersion)) throw new HttpError(400, `invalid resource version: ${query.resourceVersion}`);
      if (n > this.rv) {
        throw new HttpError(504, `Too large resource version: ${n}, current: ${this.rv}`, 'Timeout', {
          causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }],
          retryAfterSeconds: 1,
        });
      }
      const exact = query.resourceVersionMatch === 'Exact' || (!query.resourceVersionMatch && limit > 0);
      if (exact) {
        if (n < this.historyStart) throw new HttpError(410, `too old resource version: ${n} (${this.historyStart})`, 'Expired');
        listRv = n;
        state = () => this.stateAt(d, n);
      }
    } else if (query.resourceVersionMatch) {
      if (query.resourceVersionMatch !== 'NotOlderThan' || query.resourceVersion === undefined) {
        throw new HttpError(
          422,
          `resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided`,
          'Invalid',
        );
      }
    }
    const snap = this.listSnapshot(d, listRv, state);
    let from = 0;
    for (let hi = snap.keys.length; from < hi; ) {
      const mid = (from + hi) >> 1;
      if (snap.keys[mid] > start) hi = mid;
      else from = mid + 1;
    }
    const matched: Obj[] = [];
    // filtered lists scan on; unfiltered ones need one item past the page to know there is more
    for (let i = from; i < snap.keys.length && (filtered || limit === 0 || matched.length <= limit); i++) {
      const o = snap.state.get(snap.keys[i])!;
      if (pred(o)) matched.push(o);
    }
    let page = matched;
    const meta: Obj = { resourceVersion: String(listRv) };
    if (limit > 0 && matched.length > limit) {
      page = matched.slice(0, limit);
      const last = page[page.length - 1];
      const lastKey = keyOf(d, last.metadata.namespace, last.metadata.name);
      meta.continue = Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv: listRv, start: lastKey + '\u0000' })).toString(
        'base64url',
      );
      if (!filtered) meta.remainingItemCount = snap.keys.length - from - limit;
    }
    if (table) {
      const t = this.table(d, page, includeObject, meta.resourceVersion);
      t.metadata = meta;
      return t;
    }
    return { kind: `${d.kind}List`, apiVersion: apiVersionOf(d), metadata: meta, items: page.map((o) => this.item(d, o)) };
  }

  private table(d: ResourceDef, objs: Obj[], includeObject: string, resourceVersion: string, columns = true): Obj {
    const now = Date.now();
    return {
      kind: 'Table',
      apiVersion: 'meta.k8s.io/v1',
      metadata: { resourceVersion },
      columnDefinitions: columns ? d.columns : [],
      rows: objs.map((stored) => {
        const o = this.served(d, stored);
        const row: Obj = { cells: d.cells(o, now) };
        if (includeObject === 'Object') row.object = o;
        else if (includeObject !== 'None')
          row.object = { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: o.metadata };
        return row;
      }),
    };
  }

  private doCreate(d: ResourceDef, namespace: string | undefined, body: Obj): Obj {
    if (!isObj(body)) throw new HttpError(400, 'the body of the request must be an object');
    checkKind(d, body);
    const o = d.toStored({ ...clone(body), apiVersion: apiVersionOf(d), kind: d.kind });
    o.metadata = isObj(o.metadata) ? o.metadata : {};
    if (d.namespaced) {
      if (o.metadata.namespace && o.metadata.namespace !== namespace) {
        throw new HttpError(400, 'the namespace of the provided object does not match the namespace sent on the request');
      }
      o.metadata.namespace = namespace;
    } else delete o.metadata.namespace;
    if (!o.metadata.name) {
      if (!o.metadata.generateName) {
        throw new HttpError(
          422,
          `${d.kind} "" is invalid: metadata.name: Required value: name or generateName is required`,
          'Invalid',
          {
            kind: d.kind,
            ...(d.group ? { group: d.group } : {}),
            causes: [
              {
                reason: 'FieldValueRequired',
                message: 'Required value: name or generateName is required',
                field: 'metadata.name',
              },
            ],
          },
        );
      }
      o.metadata.name = o.metadata.generateName + randomSuffix();
    }
    const key = keyOf(d, namespace, o.metadata.name);
    if (this.store(d).has(key)) {
      const res = d.group ? `${d.plural}.${d.group}` : d.plural;
      throw new HttpError(409, `${res} "${o.metadata.name}" already exists`, 'AlreadyExists', {
        name: o.metadata.name,
        ...(d.group ? { group: d.group } : {}),
        kind: d.plural,
      });
    }
    o.metadata.uid = randomUUID();
    o.metadata.creationTimestamp = nowStamp();
    delete o.metadata.deletionTimestamp;
    const stored = this.write(d, key, o, undefined);
    const out = this.served(d, stored);
    if (d.store === 'events') this.events.push(clone(out));
    return out;
  }

  /** Keeps what the main resource / the status subresource may not change. */
  private merged(d: ResourceDef, cur: Obj, next: Obj, status: boolean): Obj {
    let o: Obj;
    if (d.status && status) o = { ...clone(cur), status: next.status };
    else if (d.status) {
      o = { ...next };
      if (cur.status === undefined) delete o.status;
      else o.status = clone(cur.status);
    } else o = next;
    o.apiVersion = cur.apiVersion;
    o.kind = cur.kind;
    o.metadata = { ...(isObj(o.metadata) ? o.metadata : {}) };
    for (const k of ['name', 'namespace', 'uid', 'creationTimestamp']) {
      if (cur.metadata[k] === undefined) delete o.metadata[k];
      else o.metadata[k] = cur.metadata[k];
    }
    return o;
  }

  /** Writes next over cur unless nothing changed (then, like the real server, no new resourceVersion). */
  private update(d: ResourceDef, key: string, cur: Obj, next: Obj): Obj {
    const strip = (o: Obj): Obj => ({ ...o, metadata: { ...o.metadata, resourceVersion: undefined } });
    if (canon(strip(cur)) === canon(strip(next))) return this.served(d, cur);
    return this.served(d, this.write(d, key, next, cur));
  }

  private checkIdentity(d: ResourceDef, namespace: string | undefined, name: string, cur: Obj, next: Obj): void {
    const m = isObj(next.metadata) ? next.metadata : {};
    if (m.name !== undefined && m.name !== name) {
      throw new HttpError(400, `the name of the object (${m.name}) does not match the name on the URL (${name})`);
    }
    if (d.namespaced && m.namespace !== undefined && m.namespace !== '' && m.namespace !== namespace) {
      throw new HttpError(400, 'the namespace of the provided object does not match the namespace sent on the request');
    }
    if (m.resourceVersion !== undefined && m.resourceVersion !== '' && m.resourceVersion !== cur.metadata.resourceVersion) {
      const res = d.group ? `${d.plural}.${d.group}` : d.plural;
      throw new HttpError(
        409,
        `Operation cannot be fulfilled on ${res} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        'Conflict',
        {
          name,
          ...(d.group ? { group: d.group } : {}),
          kind: d.plural,
        },
      );
    }
    if (m.uid !== undefined && m.uid !== '' && m.uid !== cur.metadata.uid) {
      throw new HttpError(
        409,
        `Precondition failed: UID in precondition: ${m.uid}, UID in object meta: ${cur.metadata.uid}`,
        'Conflict',
      );
    }
  }

  private doUpdate(d: ResourceDef, namespace: string | undefined, name: string, body: Obj, status: boolean): Obj {
    if (!isObj(body)) throw new HttpError(400, 'the body of the request must be an object');
    checkKind(d, body);
    const key = keyOf(d, namespace, name);
    const cur = this.mustGet(d, namespace, name);
    const next = d.toStored({ ...clone(body), apiVersion: apiVersionOf(d), kind: d.kind });
    if (!isObj(next.metadata) || !next.metadata.name)
      throw new HttpError(422, `${d.kind} "" is invalid: metadata.name: Required value: name is required`, 'Invalid');
    this.checkIdentity(d, namespace, name, cur, next);
    return this.update(d, key, cur, this.merged(d, cur, next, status));
  }

  private doPatch(
    d: ResourceDef,
    namespace: string | undefined,
    name: string,
    contentType: string,
    body: Buffer,
    status: boolean,
  ): Obj {
    const type = contentType.split(';')[0].trim().toLowerCase();
    const kinds = ['application/json-patch+json', 'application/merge-patch+json', 'application/strategic-merge-patch+json'];
    if (type === 'application/apply-patch+yaml' || type === 'application/apply-patch+cbor') {
      throw new HttpError(415, 'server-side apply is not supported by the fake apiserver', 'UnsupportedMediaType');
    }
    if (!kinds.includes(type)) {
      throw new HttpError(
        415,
        `the body of the request was in an unknown format - accepted media types include: ${kinds.join(', ')}, application/apply-patch+yaml`,
        'UnsupportedMediaType',
      );
    }
    const key = keyOf(d, namespace, name);
    const cur = this.mustGet(d, namespace, name);
    const patch = parseJson(body);
    const view = this.served(d, cur);
    let patched: unknown;
    try {
      if (type === 'application/json-patch+json') patched = jsonPatch(view, patch);
      else if (!isObj(patch)) throw new HttpError(400, 'the patch must be a JSON object');
      else if (type === 'application/merge-patch+json') patched = mergePatch(view, patch);
      else patched = strategicMergePatch(view, patch);
    } catch (e) {
      if (e instanceof PatchError) throw new HttpError(422, e.message, 'Invalid');
      throw e;
    }
    if (!isObj(patched)) throw new HttpError(422, 'the patched object is not a JSON object', 'Invalid');
    const next = d.toStored({ ...patched, apiVersion: apiVersionOf(d), kind: d.kind });
    this.checkIdentity(d, namespace, name, cur, next);
    return this.update(d, key, cur, this.merged(d, cur, next, status));
  }

  private doDelete(d: ResourceDef, namespace: string | undefined, name: string, body: Buffer): Obj {
    const key = keyOf(d, namespace, name);
    const cur = this.mustGet(d, namespace, name);
    const opts = body.length ? parseJson(body) : {};
    const pre = isObj(opts) && isObj(opts.preconditions) ? opts.preconditions : {};
    if (pre.uid && pre.uid !== cur.metadata.uid) {
      throw new HttpError(
        409,
        `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${cur.metadata.uid}`,
        'Conflict',
      );
    }
    if (pre.resourceVersion && pre.resourceVersion !== cur.metadata.resourceVersion) {
      throw new HttpError(
        409,
        `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${cur.metadata.resourceVersion}`,
        'Conflict',
      );
    }
    const last = this.erase(d, key);
    if (d.deleteReturnsObject) return this.served(d, last);
    return {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Success',
      details: { name, ...(d.group ? { group: d.group } : {}), kind: d.plural, uid: cur.metadata.uid },
    };
  }

  private doDeleteCollection(d: ResourceDef, namespace: string | undefined, query: Record<string, string>): Obj {
    const { pred } = this.scope(d, namespace, query);
    const s = this.store(d);
    const gone = [...s.keys()]
      .sort()
      .filter((k) => pred(s.get(k)!))
      .map((k) => this.erase(d, k));
    return {
      kind: `${d.kind}List`,
      apiVersion: apiVersionOf(d),
      metadata: { resourceVersion: String(this.rv) },
      items: gone.map((o) => this.item(d, o)),
    };
  }

  /* ---------------------------------- watch ---------------------------------- */

  private doWatch(
    d: ResourceDef,
    namespace: string | undefined,
    name: string | undefined,
    query: Record<string, string>,
    res: http.ServerResponse,
    rec: RequestRecord,
    table: boolean,
    includeObject: string,
  ): void {
    const { pred } = this.scope(d, namespace, query);
    const field: Pred = name === undefined ? pred : (o) => o.metadata?.name === name && pred(o);
    const rvParam = query.resourceVersion ?? '';
    let since: number | undefined;
    if (rvParam !== '' && rvParam !== '0') {
      if (!/^\d+$/.test(rvParam)) throw new HttpError(400, `invalid resource version: ${rvParam}`);
      since = Number(rvParam);
    }
    const sendInitial = truthy(query.sendInitialEvents);
    const bookmarks = truthy(query.allowWatchBookmarks);
    if (sendInitial && (!bookmarks || query.resourceVersionMatch !== 'NotOlderThan')) {
      throw new HttpError(
        422,
        'sendInitialEvents: Forbidden: sendInitialEvents requires allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan',
        'Invalid',
      );
    }
    rec.status = 200;
    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Cache-Control': 'no-cache, private',
      'Audit-Id': randomUUID(),
      'Transfer-Encoding': 'chunked',
    });
    res.flushHeaders();
    const w: Watcher = {
      def: d,
      namespace,
      name,
      field,
      label: () => true,
      table,
      includeObject,
      sentColumns: false,
      res,
      info: {
        resource: d.plural,
        apiGroup: d.group,
        ...(namespace !== undefined ? { namespace } : {}),
        query,
        userAgent: rec.userAgent,
        lastResourceVersion: '',
      },
      lastRv: since ?? this.rv,
      timers: [],
      closed: false,
    };
    if (since !== undefined && since < this.historyStart) {
      this.writeEvent(w, 'ERROR', statusObject(410, `too old resource version: ${since} (${this.historyStart})`, 'Expired'));
      res.end();
      return;
    }
    const initial = since === undefined || sendInitial;
    if (initial) {
      const s = this.store(d);
      for (const k of [...s.keys()].sort()) {
        const o = s.get(k)!;
        if (field(o)) this.writeEvent(w, 'ADDED', o);
      }
      w.lastRv = this.rv;
      if (sendInitial) this.writeBookmark(w, true);
    } else {
      for (const c of this.history) if (c.rv > since! && c.store === d.store) this.deliver(w, c);
      w.lastRv = Math.max(w.lastRv, this.rv);
    }
    this.watchers.add(w);
    // the response's close: the stream ended or the connection went (the request's own 'close' has
    // fired already: its body was read)
    res.on('close', () => this.closeWatch(w));
    if (bookmarks) {
      const t = setInterval(() => this.writeBookmark(w, false), this.bookmarkIntervalMs);
      t.unref();
      w.timers.push(t);
    }
    const timeout = Number(query.timeoutSeconds);
    if (timeout > 0) {
      const t = setTimeout(() => this.closeWatch(w), timeout * 1000);
      t.unref();
      w.timers.push(t);
    }
    this.bus.emit('watch', { ...w.info, lastResourceVersion: String(w.lastRv) });
  }

  /** Sends a change to a watcher, translated by its selectors (an object leaving the selection is DELETED for it). */
  private deliver(w: Watcher, c: Change): void {
    const ok = (o: Obj | undefined): boolean =>
      !!o && (w.namespace === undefined || o.metadata?.namespace === w.namespace) && w.field(o);
    const now = c.type !== 'DELETED' && ok(c.obj);
    const before = c.type === 'DELETED' ? ok(c.obj) : ok(c.prev);
    if (c.type === 'ADDED' && now) this.writeEvent(w, 'ADDED', c.obj);
    else if (c.type === 'MODIFIED' && now) this.writeEvent(w, before ? 'MODIFIED' : 'ADDED', c.obj);
    else if (c.type === 'MODIFIED' && before) {
      const gone = clone(c.prev!);
      gone.metadata.resourceVersion = String(c.rv);
      this.writeEvent(w, 'DELETED', gone);
    } else if (c.type === 'DELETED' && before) this.writeEvent(w, 'DELETED', c.obj);
    w.lastRv = c.rv;
  }

  private writeEvent(w: Watcher, type: WatchEventType, obj: Obj): void {
    if (w.closed || w.res.destroyed) return;
    let object: Obj;
    if (type === 'ERROR') object = obj;
    else if (w.table) {
      object = this.table(w.def, [obj], w.includeObject, obj.metadata.resourceVersion, !w.sentColumns);
      w.sentColumns = true;
    } else object = this.served(w.def, obj);
    w.res.write(JSON.stringify({ type, object }) + '\n');
  }

  private writeBookmark(w: Watcher, initialEventsEnd: boolean): void {
    if (w.closed || w.res.destroyed) return;
    w.lastRv = Math.max(w.lastRv, this.rv);
    const metadata: Obj = { resourceVersion: String(this.rv) };
    if (initialEventsEnd) metadata.annotations = { 'k8s.io/initial-events-end': 'true' };
    const object = w.table
      ? { kind: 'Table', apiVersion: 'meta.k8s.io/v1', metadata, columnDefinitions: [], rows: [] }
      : { kind: w.def.kind, apiVersion: apiVersionOf(w.def), metadata };
    w.res.write(JSON.stringify({ type: 'BOOKMARK', object }) + '\n');
  }

  private closeWatch(w: Watcher): void {
    if (w.closed) return;
    w.closed = true;
    for (const t of w.timers) clearTimeout(t);
    this.watchers.delete(w);
    if (!w.res.destroyed) w.res.end();
  }
}

function parseJson(body: Buffer): Obj {
  try {
    return JSON.parse(body.toString('utf8')) as Obj;
  } catch (e) {
    throw new HttpError(400, `the request body is not valid JSON: ${(e as Error).message}`);
  }
}

function checkKind(d: ResourceDef, body: Obj): void {
  if (body.apiVersion !== undefined && body.apiVersion !== apiVersionOf(d)) {
    throw new HttpError(
      400,
      `the API version in the data (${body.apiVersion}) does not match the expected API version (${apiVersionOf(d)})`,
    );
  }
  if (body.kind !== undefined && body.kind !== d.kind) {
    throw new HttpError(400, `the kind in the data (${body.kind}) does not match the expected kind (${d.kind})`);
  }
}

/** Whether the client asked for a meta.k8s.io Table (kubectl's human-readable output does). */
function wantsTable(req: http.IncomingMessage): boolean {
  const accept = String(req.headers.accept ?? '');
  return accept.split(',').some((part) => {
    const params = part.split(';').map((x) => x.trim());
    return (
      params.includes('as=Table') && params.includes('g=meta.k8s.io') && (params.includes('v=v1') || params.includes('v=v1beta1'))
    );
  });
}
