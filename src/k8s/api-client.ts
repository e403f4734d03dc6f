/* A minimal Kubernetes API client: credentials resolved by @kubernetes/client-node's KubeConfig
 * (in a short-lived child process, see credentials-worker.ts), then GET, PATCH, POST and streaming watches
 * with Node's https, so that the reflector controls resourceVersions, bookmarks and 410s itself.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as path from 'node:path';
import { fork } from 'node:child_process';
import { load as loadYaml } from 'js-yaml';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly reason?: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export interface ApiClientOptions {
  /** k8s-kubeconfig: a kubeconfig file; default: in-cluster service account */
  kubeconfig?: string;
  /** k8s-api-server: overrides the server URL */
  server?: string;
}

const SA_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';
/** Projected service-account tokens rotate; re-read this often, and at once after a 401. */
const TOKEN_REREAD_MS = 60_000;

/** The token file a kubeconfig's user names (`tokenFile`, client-go's spelling, or `token-file`). */
function kubeconfigTokenFile(file: string, userName: string | undefined): string | undefined {
  try {
    const doc = loadYaml(fs.readFileSync(file, 'utf8')) as { users?: Array<{ name: string; user?: Record<string, unknown> }> };
    const u = doc?.users?.find((x) => x.name === userName)?.user;
    const f = u?.tokenFile ?? u?.['token-file'];
    return typeof f === 'string' && f ? f : undefined;
  } catch {
    return undefined;
  }
}

/** What a request needs, as the kubeconfig resolves it. */
export interface Credentials {
  server: string;
  ca?: string;
  cert?: string;
  key?: string;
  rejectUnauthorized: boolean;
  /** "Bearer …" (or "Basic …"), from a token or an auth plugin */
  authorization?: string;
  user?: string;
}

/** Resolves credentials with client-node in a short-lived child process. */
export function resolveCredentials(opts: ApiClientOptions, timeoutMs = 30_000): Promise<Credentials> {
  return new Promise((resolve, reject) => {
    const child = fork(path.join(__dirname, 'credentials-worker.js'), [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`resolving API credentials took over ${timeoutMs} ms`));
    }, timeoutMs);
    child.once('message', (m: { ok: boolean; creds?: Credentials; error?: string }) => {
      clearTimeout(timer);
      if (m.ok) resolve(m.creds!);
      else reject(new Error(m.error));
    });
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the credentials resolver exited (${code}) without an answer`));
    });
    child.send(opts);
  });
}

const guarded = new WeakSet<object>();
/**
 * One line of a watch stream, not validated yet: `object` is the changed object, a bookmark's
 * metadata, or (type ERROR) a Status; typed only as far as the stream itself reads it.
 */
export interface WatchEvent {
  type: string;
  object?: { code?: number; message?: string; metadata?: { resourceVersion?: string } };
}

/** One no-op 'error' listener per pooled socket: a late socket error must not crash the agent. */
function guardSocket(sock: NodeJS.EventEmitter): void {
  if (guarded.has(sock)) return;
  guarded.add(sock);
  sock.on('error', () => undefined);
}

export class ApiClient {
  private tokenFile?: string;
  private tokenReadAt = 0;
  private authorization?: string;
  private readonly agent: https.Agent | http.Agent;

  private constructor(
    private creds: Credentials,
    private readonly opts: ApiClientOptions,
  ) {
    this.authorization = creds.authorization;
    // in-cluster (or a kubeconfig naming a token file): the token is read by us, so a rotated one
    // is picked up after a 401 rather than up to a minute later
    this.tokenFile = opts.kubeconfig ? kubeconfigTokenFile(opts.kubeconfig, creds.user) : SA_TOKEN;
    if (this.tokenFile && !fs.existsSync(this.tokenFile)) this.tokenFile = undefined;
    this.agent =
      this.serverUrl().protocol === 'https:' ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });
  }

  static async create(opts: ApiClientOptions = {}): Promise<ApiClient> {
    return new ApiClient(await resolveCredentials(opts), opts);
  }

  serverUrl(): URL {
    return new URL(this.creds.server);
  }

  private refreshToken(force = false): void {
    if (!this.tokenFile) return;
    if (!force && Date.now() - this.tokenReadAt < TOKEN_REREAD_MS) return;
    this.authorization = `Bearer ${fs.readFileSync(this.tokenFile, 'utf8').trim()}`;
    this.tokenReadAt = Date.now();
  }

  /** After a 401: re-read the token file, or let client-node resolve again (exec plugins). */
  private async reauthenticate(): Promise<boolean> {
    if (this.tokenFile) {
      this.refreshToken(true);
      return true;
    }
    try {
      this.creds = await resolveCredentials(this.opts);
      this.authorization = this.creds.authorization;
      return true;
    } catch {
      return false;
    }
  }

  private async options(method: string, reqPath: string, headers: Record<string, string> = {}): Promise<https.RequestOptions> {
    this.refreshToken();
    const url = new URL(reqPath, this.serverUrl());
    return {
      method,
      protocol: url.protocol,
      hostname: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port,
      path: url.pathname + url.search,
      headers: { Accept: 'application/json', ...(this.authorization ? { Authorization: this.authorization } : {}), ...headers },
      agent: this.agent as https.Agent,
      ca: this.creds.ca,
      cert: this.creds.cert,
      key: this.creds.key,
      rejectUnauthorized: this.creds.rejectUnauthorized,
    };
  }

  /** One request; the JSON body of a 2xx answer, else an ApiError with the Status' message. */
  async request<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    opts: { contentType?: string; timeoutMs?: number } = {},
  ): Promise<T> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['Content-Type'] = opts.contentType ?? 'application/json';
    return this.withReauth(async () => this.send<T>(await this.options(method, path, headers), body, opts.timeoutMs ?? 30_000));
  }

  /** Runs a request; after a 401 (a rotated token) authenticates again and runs it once more. */
  private async withReauth<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (e) {
      if (e instanceof ApiError && e.status === 401 && (await this.reauthenticate())) return run();
      throw e;
    }
  }

  private send<T>(ro: https.RequestOptions, body: unknown, timeoutMs: number): Promise<T> {
    const mod = ro.protocol === 'https:' ? https : http;
    return new Promise<T>((resolve, reject) => {
      const req = mod.request(ro, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = text ? JSON.parse(text) : undefined;
          } catch {
            json = undefined;
          }
          const status = res.statusCode ?? 0;
          // a failed request's answer is a Status object, or text from something in between
          const st = json as { message?: string; reason?: string } | undefined;
          if (status >= 200 && status < 300) resolve(json as T);
          else
            reject(new ApiError(status, `${ro.method} ${ro.path}: ${status} ${st?.message ?? text.slice(0, 200)}`, st?.reason));
        });
        res.on('error', reject);
      });
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`${ro.method} ${ro.path}: no answer within ${timeoutMs} ms`)));
      req.on('error', reject);
      if (body !== undefined) req.write(typeof body === 'string' ? body : JSON.stringify(body));
      req.end();
    });
  }

  /**
   * A watch stream: calls onEvent for every event line, resolves when the server closes the
   * stream, rejects on a failed start (an ApiError carries 410 for "too old resource version").
   * abort() ends it.
   */
  async watch(path: string, onEvent: (ev: WatchEvent) => void, signal: AbortSignal): Promise<void> {
    return this.withReauth(async () => this.stream(await this.options('GET', path), onEvent, signal));
  }

  private stream(ro: https.RequestOptions, onEvent: (ev: WatchEvent) => void, signal: AbortSignal): Promise<void> {
    const mod = ro.protocol === 'https:' ? https : http;
    return new Promise<void>((resolve, reject) => {
      if (signal.aborted) return resolve();
      // Ending a stream is destroying its request: an AbortSignal passed to the request would
      // instead emit an AbortError on the pooled TLS socket, where nobody listens (and Node
      // turns an unhandled 'error' event into a crash).
      const onAbort = () => {
        req.destroy();
        resolve();
      };
      signal.addEventListener('abort', onAbort, { once: true });
      const done = (fn: () => void) => {
        signal.removeEventListener('abort', onAbort);
        fn();
      };
      const req = mod.request(ro, (res) => {
        const status = res.statusCode ?? 0;
        if (status !== 200) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            let msg = '';
            let reason: string | undefined;
            try {
              const j = JSON.parse(Buffer.concat(chunks).toString('utf8'));
              msg = j.message;
              reason = j.reason;
            } catch {
              /* not a Status */
            }
            done(() => reject(new ApiError(status, `watch ${ro.path}: ${status} ${msg}`, reason)));
          });
          return;
        }
        res.setEncoding('utf8');
        let buf = '';
        res.on('data', (chunk: string) => {
          buf += chunk;
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (!line) continue;
            let ev: WatchEvent;
            try {
              ev = JSON.parse(line);
            } catch {
              continue; // a torn line: the stream is restarted from the last resourceVersion anyway
            }
            onEvent(ev);
          }
        });
        res.on('end', () => done(resolve));
        res.on('error', (e) => done(() => (signal.aborted ? resolve() : reject(e))));
        res.on('aborted', () => done(resolve));
      });
      req.on('socket', guardSocket); // errors are reported through req/res
      req.on('error', (e: NodeJS.ErrnoException) => done(() => (signal.aborted ? resolve() : reject(e))));
      req.end();
    });
  }
}
