/* The API server as a ClusterSource: one reflector per kind (Namespaces, Services, EndpointSlices
 * cluster-wide; this node's Pods only; this Node only, for its zone). Each lists, then watches from
 * the list's resourceVersion with bookmarks; a 410 Gone relists and hands the store the whole
 * list, which applies only the difference, so an unchanged Service is never rewritten. Failures
 * reconnect with capped exponential backoff and jitter; the datapath keeps running from the pins
 * meanwhile.
 */
import { log } from '../log';
import { ApiError, type ApiClient } from './api-client';
import type { ClusterSource } from './source';
import type { ObjectStore } from './store';
import { ZONE_LABEL, type K8sKind, type K8sObject, type Node, type Pod } from './types';
import { objectKey, parseObject } from './validate';

interface ResourceSpec {
  kind: K8sKind;
  /** collection path; apiVersion/kind of items are filled in (list items omit them) */
  path: string;
  apiVersion: string;
  fieldSelector?: string;
}

export interface ApiSourceOptions {
  /** only this node's Pods (fieldSelector spec.nodeName) and this Node (metadata.name) are watched */
  nodeName: string;
  /** backoff after a failure: from minBackoffMs (default 200) doubling to maxBackoffMs (default 30000), ±50 % jitter */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** watch stream length asked of the server (timeoutSeconds; default 300) */
  watchTimeoutSeconds?: number;
  /** list page size (default 500) */
  pageSize?: number;
}

export interface ReflectorStatus {
  resourceVersion: string;
  lists: number;
  relistsAfterGone: number;
  watchStarts: number;
  events: number;
  skipped: number;
}

export interface ApiSourceStatus {
  server: string;
  synced: boolean;
  reachable: boolean;
  /** when the API server stopped answering (ISO time), while it does not */
  unreachableSince?: string;
  lastError?: string;
  resources: Record<string, ReflectorStatus>;
}

class Gone extends Error {}

class Reflector {
  rv = '';
  /** the current watch stream delivered something (so a later failure starts backoff afresh) */
  opened = false;
  readonly stats: ReflectorStatus = { resourceVersion: '', lists: 0, relistsAfterGone: 0, watchStarts: 0, events: 0, skipped: 0 };
  private readonly source: string;

  constructor(
    private readonly spec: ResourceSpec,
    private readonly client: ApiClient,
    private readonly store: ObjectStore,
    private readonly opts: Required<Omit<ApiSourceOptions, 'nodeName'>>,
    private readonly alive: () => void,
  ) {
    this.source = `api:${spec.kind}`;
  }

  private query(extra: Record<string, string>): string {
    const q = new URLSearchParams(extra);
    if (this.spec.fieldSelector) q.set('fieldSelector', this.spec.fieldSelector);
    return `${this.spec.path}?${q}`;
  }

  /** Parses an object from the API; a malformed one is logged with its name and skipped. */
  private parse(raw: unknown): K8sObject | undefined {
    try {
      return parseObject(raw, this.spec);
    } catch (e) {
      this.stats.skipped++;
      const m = (raw as { metadata?: { namespace?: string; name?: string } } | undefined)?.metadata ?? {};
      log.warn('Skipping malformed object from the API server', {
        kind: this.spec.kind,
        namespace: m.namespace,
        name: m.name,
        err: (e as Error).message,
      });
      return undefined;
    }
  }

  /**
   * Lists every page and replaces this kind's objects in the store (differences only). The next
   * page is asked for before this one's items are validated, so the server prepares it meanwhile
   * (100,000 Services are 200 pages).
   */
  async list(): Promise<void> {
    type Page = { metadata?: { resourceVersion?: string; continue?: string }; items?: unknown[] };
    const fetchPage = (cont: string): Promise<Page> => {
      const q: Record<string, string> = { limit: String(this.opts.pageSize) };
      if (cont) q.continue = cont;
      const p = this.client.request<Page>('GET', this.query(q));
      p.catch(() => undefined); // awaited below; not unhandled while the previous page is parsed
      return p;
    };
    const objects: K8sObject[] = [];
    let rv = '';
    let next: Promise<Page> | undefined = fetchPage('');
    for (let page = 0; page < 100_000 && next; page++) {
      const res: Page = await next;
      const cont = res.metadata?.continue ?? '';
      next = cont ? fetchPage(cont) : undefined;
      for (const item of res.items ?? []) {
        const o = this.parse(item);
        if (o) objects.push(o);
      }
      rv = res.metadata?.resourceVersion ?? rv;
    }
    if (next) throw new Error(`Cannot list ${this.spec.kind}: more than 100,000 pages`);
    this.store.replaceAll(this.source, objects);
    this.rv = rv;
    this.stats.resourceVersion = rv;
    this.stats.lists++;
  }

  /** One watch stream from the last resourceVersion; returns when the server ends it. */
  async watchOnce(signal: AbortSignal): Promise<void> {
    this.stats.watchStarts++;
    const path = this.query({
      watch: 'true',
      resourceVersion: this.rv,
      allowWatchBookmarks: 'true',
      timeoutSeconds: String(this.opts.watchTimeoutSeconds),
    });
    let gone = false;
    const ctrl = new AbortController();
    const onAbort = () => ctrl.abort();
    signal.addEventListener('abort', onAbort);
    try {
      await this.client.watch(
        path,
        (ev) => {
          if (gone) return;
          this.opened = true;
          this.alive(); // a streaming watch is an answering API server
          if (ev.type === 'ERROR') {
            if (ev.object?.code === 410) {
              gone = true;
              ctrl.abort();
              return;
            }
            log.warn('watch error event', { kind: this.spec.kind, status: ev.object?.code, message: ev.object?.message });
            return;
          }
          const rv = ev.object?.metadata?.resourceVersion;
          if (ev.type === 'BOOKMARK') {
            if (rv) this.rv = rv;
            return;
          }
          this.stats.events++;
          const o = this.parse(ev.object);
          if (rv) this.rv = rv;
          this.stats.resourceVersion = this.rv;
          if (!o) return;
          if (ev.type === 'DELETED') this.store.delete(objectKey(o), { source: this.source });
          else this.store.upsert(o, { source: this.source });
        },
        ctrl.signal,
      );
    } catch (e) {
      if (e instanceof ApiError && e.status === 410) gone = true;
      else throw e;
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
    if (gone) throw new Gone();
  }

  /** Relists after a 410: the store gets the full list and applies only differences. */
  async relist(): Promise<void> {
    this.stats.relistsAfterGone++;
    log.info('resourceVersion expired (410): relisting', { kind: this.spec.kind, resourceVersion: this.rv });
    await this.list();
  }
}

export class ApiSource implements ClusterSource {
  private reflectors: Reflector[] = [];
  private readonly abort = new AbortController();
  private started = false;
  private initialSync = false;
  private unreachableSince?: Date;
  private lastError?: string;
  private loops: Promise<void>[] = [];
  private readonly opts: Required<Omit<ApiSourceOptions, 'nodeName'>>;
  private store?: ObjectStore;

  constructor(
    private readonly client: ApiClient,
    private readonly sourceOpts: ApiSourceOptions,
  ) {
    this.opts = {
      minBackoffMs: sourceOpts.minBackoffMs ?? 200,
      maxBackoffMs: sourceOpts.maxBackoffMs ?? 30_000,
      watchTimeoutSeconds: sourceOpts.watchTimeoutSeconds ?? 300,
      pageSize: sourceOpts.pageSize ?? 500,
    };
  }

  get synced(): boolean {
    return this.initialSync && !this.abort.signal.aborted;
  }

  private specs(): ResourceSpec[] {
    return [
      { kind: 'Namespace', path: '/api/v1/namespaces', apiVersion: 'v1' },
      { kind: 'Service', path: '/api/v1/services', apiVersion: 'v1' },
      { kind: 'EndpointSlice', path: '/apis/discovery.k8s.io/v1/endpointslices', apiVersion: 'discovery.k8s.io/v1' },
      { kind: 'Pod', path: '/api/v1/pods', apiVersion: 'v1', fieldSelector: `spec.nodeName=${this.sourceOpts.nodeName}` },
      // only the zone label of this one Node is read: the other nodes' status churn never reaches us
      { kind: 'Node', path: '/api/v1/nodes', apiVersion: 'v1', fieldSelector: `metadata.name=${this.sourceOpts.nodeName}` },
    ];
  }

  /** Lists every kind (retrying until the API answers), then keeps watching in the background. */
  async start(store: ObjectStore): Promise<void> {
    if (this.started) throw new Error('ApiSource started twice');
    this.started = true;
    this.store = store;
    this.reflectors = this.specs().map((s) => new Reflector(s, this.client, store, this.opts, () => this.reachable()));
    await this.retry('read this Node', () => this.readOwnNode(store));
    // one kind at a time: the pages of two large kinds in flight together would double the peak
    // memory of the sync, for no gain in time (listing is CPU-bound on both ends)
    for (const r of this.reflectors) await this.retry('initial list', () => r.list());
    this.initialSync = true;
    log.info('API server synced', {
      server: this.client.serverUrl().origin,
      node: this.sourceOpts.nodeName,
      ...Object.fromEntries(this.reflectors.map((r, i) => [this.specs()[i].kind, r.rv])),
    });
    this.loops = this.reflectors.map((r) => this.watchLoop(r));
  }

  /**
   * Reads this Node by name once at start, as kube-proxy does before it watches its Node
   * (cmd/kube-proxy getNodeIPs): the log then says which zone topology hints are matched against,
   * or, on 404, that node-name names no Node (where a list by field selector just comes back
   * empty): a misspelt node-name makes no endpoint local and no zone hint match.
   */
  private async readOwnNode(store: ObjectStore): Promise<void> {
    const name = this.sourceOpts.nodeName;
    let raw: unknown;
    try {
      raw = await this.client.request('GET', `/api/v1/nodes/${encodeURIComponent(name)}`);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) throw e; // retried: the API did not answer
      log.warn(
        'No Node has the name in config node-name; if it is misspelt, no endpoint counts as local and zone hints match nothing',
        { node: name },
      );
      return;
    }
    let node: Node;
    try {
      node = parseObject({ apiVersion: 'v1', kind: 'Node', ...(raw as object) }) as Node;
    } catch (e) {
      log.warn('Skipping malformed object from the API server', { kind: 'Node', name, err: (e as Error).message });
      return;
    }
    store.upsert(node, { source: 'api:Node' }); // the Node reflector's source: its list replaces it
    log.info('this node', { node: name, zone: node.metadata.labels?.[ZONE_LABEL] ?? '' });
  }

  private reachable(): void {
    if (this.unreachableSince) log.info('API server reachable again', { since: this.unreachableSince.toISOString() });
    this.unreachableSince = undefined;
    this.lastError = undefined;
  }

  private unreachable(e: unknown): void {
    this.lastError = (e as Error).message;
    if (!this.unreachableSince) {
      this.unreachableSince = new Date();
      log.warn('API server unreachable; the datapath keeps running from its pins', { err: this.lastError });
    }
  }

  private backoff(attempt: number): number {
    const base = Math.min(this.opts.maxBackoffMs, this.opts.minBackoffMs * 2 ** Math.min(attempt, 20));
    return base * (0.5 + Math.random());
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.abort.signal.removeEventListener('abort', done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.abort.signal.addEventListener('abort', done);
    });
  }

  private async retry(what: string, fn: () => Promise<void>): Promise<void> {
    for (let attempt = 0; !this.abort.signal.aborted; attempt++) {
      try {
        await fn();
        this.reachable();
        return;
      } catch (e) {
        this.unreachable(e);
        log.debug('API request failed; retrying', { what, attempt, err: (e as Error).message });
        await this.sleep(this.backoff(attempt));
      }
    }
  }

  private async watchLoop(r: Reflector): Promise<void> {
    let attempt = 0;
    while (!this.abort.signal.aborted) {
      r.opened = false;
      try {
        await r.watchOnce(this.abort.signal);
        this.reachable();
        attempt = 0; // the server ended the stream normally: watch again from the last rv
      } catch (e) {
        if (this.abort.signal.aborted) return;
        // a stream that worked for a while resets the backoff: only consecutive failures grow it
        if (r.opened) attempt = 0;
        if (e instanceof Gone) {
          await this.retry('relist', () => r.relist());
          continue;
        }
        this.unreachable(e);
        await this.sleep(this.backoff(attempt++));
      }
    }
  }

  /**
   * The Pod straight from the API server (CNI ADD can come before its watch event), put into the
   * store. Undefined when it does not exist; throws when the API does not answer in time.
   */
  async getPod(namespace: string, name: string, timeoutMs = 2000): Promise<Pod | undefined> {
    try {
      const raw = await this.client.request(
        'GET',
        `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`,
        undefined,
        { timeoutMs },
      );
      const pod = parseObject({ apiVersion: 'v1', kind: 'Pod', ...(raw as object) }) as Pod;
      this.store?.upsert(pod, { source: 'api:Pod' });
      return pod;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return undefined;
      throw e;
    }
  }

  status(): ApiSourceStatus {
    const specs = this.specs();
    return {
      server: this.client.serverUrl().origin,
      synced: this.synced,
      reachable: !this.unreachableSince,
      unreachableSince: this.unreachableSince?.toISOString(),
      lastError: this.lastError,
      resources: Object.fromEntries(this.reflectors.map((r, i) => [specs[i].kind, { ...r.stats, resourceVersion: r.rv }])),
    };
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await Promise.allSettled(this.loops);
  }
}
