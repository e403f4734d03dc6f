/* A small HTTP listener for the agent's GET endpoints (/metrics; /healthz and /readyz), on an
 * address from the config. Kept apart from the unix-socket API: kubelet and Prometheus speak
 * HTTP over TCP, and nothing here accepts input beyond the path.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { formatListenAddress, type ListenAddress } from '../config';
import { log } from '../log';

export interface HttpAnswer {
  status: number;
  contentType: string;
  body: string;
}

export type Route = () => HttpAnswer | Promise<HttpAnswer>;

/** Slow or idle clients may not hold sockets for long: probes and scrapes are quick. */
const REQUEST_TIMEOUT_MS = 30_000;

export class HttpEndpoint {
  private constructor(
    private readonly server: http.Server,
    /** the address actually bound, "host:port" (the port chosen when the config said 0) */
    readonly address: string,
  ) {}

  /**
   * Listens on `addr` and answers GET (and HEAD) on `routes`; anything else gets 404 or 405.
   * Rejects, naming `what` (the config key), the address and the cause, when it cannot listen.
   */
  static async listen(what: string, addr: ListenAddress, routes: Record<string, Route>): Promise<HttpEndpoint> {
    const server = http.createServer((req, res) => void answer(routes, req, res));
    server.requestTimeout = REQUEST_TIMEOUT_MS;
    server.headersTimeout = REQUEST_TIMEOUT_MS;
    server.keepAliveTimeout = 5_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(new Error(`Cannot listen on ${what} "${formatListenAddress(addr)}": ${e.code ?? ''} ${e.message}`.trim())),
      );
      // an empty host listens on every address, IPv6 and IPv4, as Go's ":port" does
      server.listen({ port: addr.port, host: addr.host || undefined }, () => resolve());
    });
    const bound = server.address() as AddressInfo;
    return new HttpEndpoint(server, formatListenAddress({ host: addr.host === '' ? '' : bound.address, port: bound.port }));
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

function pathOf(url: string | undefined): string {
  try {
    return new URL(url ?? '/', 'http://localhost').pathname;
  } catch {
    return '';
  }
}

async function answer(routes: Record<string, Route>, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const route = Object.hasOwn(routes, pathOf(req.url)) ? routes[pathOf(req.url)] : undefined;
  let a: HttpAnswer;
  if (!route)
    a = { status: 404, contentType: 'text/plain; charset=utf-8', body: `not found; try ${Object.keys(routes).join(', ')}\n` };
  else if (req.method !== 'GET' && req.method !== 'HEAD')
    a = { status: 405, contentType: 'text/plain; charset=utf-8', body: 'only GET\n' };
  else {
    try {
      a = await route();
    } catch (e) {
      log.warn('http endpoint failed', { path: req.url, err: e });
      a = { status: 500, contentType: 'text/plain; charset=utf-8', body: `${(e as Error).message}\n` };
    }
  }
  res.writeHead(a.status, { 'Content-Type': a.contentType, 'Content-Length': Buffer.byteLength(a.body) });
  res.end(req.method === 'HEAD' ? undefined : a.body);
}
