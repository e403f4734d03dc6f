/* The agent's local API on the unix socket `agent-socket`: one JSON request per line, one JSON
 * answer per line. Line-delimited JSON keeps clients trivial (the CLI here, the C CNI plugin).
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { log } from '../log';

export type Request = { op: string; [k: string]: unknown };

/**
 * An answer written as is, after which the connection is closed: the CNI plugin reads
 * "<exit code>\n<stdout bytes>" without having to parse JSON in C.
 */
export class RawReply {
  constructor(readonly bytes: string) {}
}
/**
 * An answer that keeps the connection (`sluice monitor`): the server reads no more requests on it
 * and hands it to `attach` (also when the client is gone already: `conn.destroyed`), which writes
 * its own lines; the server destroys it when it closes.
 */
export class Stream {
  constructor(readonly attach: (conn: net.Socket) => void) {}
}
export type Handler = (req: Request) => Promise<unknown> | unknown;

/** The CNI plugin forwards stdin of up to 16 MiB, which JSON escaping can grow. */
const MAX_LINE = 64 << 20;

/** The agent's side of the local socket (named apart from the Kubernetes API server the agent is a client of). */
export class LocalApiServer {
  private server?: net.Server;
  /** connections a Stream holds: server.close() would wait for them forever */
  private readonly streams = new Set<net.Socket>();

  constructor(
    private readonly socketPath: string,
    private readonly handlers: Record<string, Handler>,
  ) {}

  async listen(): Promise<void> {
    fs.mkdirSync(path.dirname(this.socketPath), { recursive: true });
    // A socket file left by a killed agent would make listen fail with EADDRINUSE.
    try {
      fs.unlinkSync(this.socketPath);
    } catch {
      /* absent */
    }
    const server = net.createServer((c) => this.serve(c));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.socketPath, () => resolve());
    });
    fs.chmodSync(this.socketPath, 0o600);
    this.server = server;
  }

  private serve(conn: net.Socket): void {
    let buf = '';
    let streaming = false;
    conn.setEncoding('utf8');
    conn.on('error', () => conn.destroy());
    conn.on('data', (chunk: string) => {
      if (streaming) return;
      buf += chunk;
      if (buf.length > MAX_LINE) {
        conn.end(JSON.stringify({ ok: false, error: 'request too large' }) + '\n');
        return;
      }
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        void this.answer(line).then((out) => {
          if (out instanceof RawReply) conn.end(out.bytes);
          else if (out instanceof Stream) {
            streaming = true;
            if (!this.server)
              conn.destroy(); // answered after close(): nobody would end it
            else if (!conn.destroyed) {
              this.streams.add(conn);
              conn.once('close', () => this.streams.delete(conn));
            }
            out.attach(conn);
          } else conn.write(JSON.stringify(out) + '\n');
        });
      }
    });
  }

  private async answer(line: string): Promise<unknown | RawReply | Stream> {
    let req: Request;
    try {
      req = JSON.parse(line);
    } catch {
      return { ok: false, error: 'request is not JSON' };
    }
    const h = req && typeof req.op === 'string' ? this.handlers[req.op] : undefined;
    if (!h) return { ok: false, error: `unknown op ${JSON.stringify(req?.op)}` };
    try {
      const result = await h(req);
      return result instanceof RawReply || result instanceof Stream ? result : { ok: true, result };
    } catch (e) {
      log.warn('api request failed', { op: req.op, err: (e as Error).message });
      return { ok: false, error: (e as Error).message };
    }
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    const closed = new Promise<void>((resolve) => s.close(() => resolve()));
    for (const conn of this.streams) conn.destroy();
    await closed;
    try {
      fs.unlinkSync(this.socketPath);
    } catch {
      /* already gone */
    }
  }
}

/** Sends one request to the agent; rejects when it does not answer within timeoutMs. */
export function callAgent(socketPath: string, req: Request, timeoutMs = 3000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const conn = net.createConnection(socketPath);
    let buf = '';
    const timer = setTimeout(() => {
      conn.destroy();
      reject(new Error(`agent at ${socketPath} did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    conn.setEncoding('utf8');
    conn.on('connect', () => conn.write(JSON.stringify(req) + '\n'));
    conn.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      conn.end();
      let res: { ok: boolean; result?: unknown; error?: string };
      try {
        res = JSON.parse(buf.slice(0, nl));
      } catch {
        reject(new Error('agent answered with malformed JSON'));
        return;
      }
      if (res.ok) resolve(res.result);
      else reject(new Error(res.error ?? 'agent refused the request'));
    });
    conn.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new Error(`agent not reachable at ${socketPath} (${e.code ?? e.message})`));
    });
  });
}
