/* `sluice monitor`, the command's side: asks the agent for the stream over its local API and
 * prints each message until Ctrl-C, a closed pipe (`| head`) or the agent going away.
 */
import * as net from 'node:net';
import type { Writable } from 'node:stream';
import type { FilterArgs } from './filter';
import { formatJson, formatText, monotonicToWall } from './printer';
import type { MonitorMessage } from './record';

export interface RunMonitorOptions {
  /** default text */
  output?: 'text' | 'json';
  /** default process.stdout */
  out?: Writable;
  /** default process.stderr */
  err?: Writable;
}

/**
 * Streams the agent's monitor to `out`. Resolves with the exit code: 0 when stopped by SIGINT or
 * SIGTERM or when `out` is closed by its reader (EPIPE), 1 when the agent is not reachable,
 * refuses the request or ends the stream.
 */
export function runMonitor(socketPath: string, filter: FilterArgs, opts: RunMonitorOptions = {}): Promise<number> {
  const out = opts.out ?? process.stdout;
  const err = opts.err ?? process.stderr;
  const format = opts.output === 'json' ? formatJson : formatText;
  const wall = monotonicToWall();
  return new Promise((resolve) => {
    const conn = net.createConnection(socketPath);
    let attached = false;
    let done = false;
    let buf = '';
    const finish = (code: number, message?: string) => {
      if (done) return;
      done = true;
      process.off('SIGINT', interrupted);
      process.off('SIGTERM', interrupted);
      out.off('error', outFailed);
      conn.destroy();
      if (message) err.write(`sluice: ${message}\n`);
      resolve(code);
    };
    const interrupted = () => finish(0);
    // the reader of our output went away (`sluice monitor | head`): Node ignores SIGPIPE and
    // reports EPIPE here instead; the user got what they wanted
    const outFailed = (e: NodeJS.ErrnoException) =>
      finish(e.code === 'EPIPE' ? 0 : 1, e.code === 'EPIPE' ? undefined : `cannot write the output: ${e.message}`);
    process.on('SIGINT', interrupted);
    process.on('SIGTERM', interrupted);
    out.on('error', outFailed);

    const line = (text: string) => {
      const msg = JSON.parse(text) as { ok?: boolean; error?: string } & MonitorMessage;
      if (!attached) {
        if (!msg.ok) return finish(1, `the agent refused the monitor: ${msg.error ?? 'no reason given'}`);
        attached = true;
        return;
      }
      // a slow reader of our output slows our reading: the agent then drops, and says how many
      if (!out.write(format(msg, wall) + '\n')) {
        conn.pause();
        out.once('drain', () => conn.resume());
      }
    };
    conn.setEncoding('utf8');
    conn.on('connect', () => conn.write(JSON.stringify({ op: 'monitor', ...filter }) + '\n'));
    conn.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while (!done && (nl = buf.indexOf('\n')) >= 0) {
        const text = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          line(text);
        } catch {
          return finish(1, 'the agent sent a malformed monitor line');
        }
      }
    });
    conn.on('error', (e: NodeJS.ErrnoException) => {
      finish(
        1,
        attached
          ? `monitor stream failed: ${e.message}`
          : `agent not reachable at ${socketPath} (${e.code ?? e.message}): is it running?`,
      );
    });
    conn.on('close', () =>
      finish(
        1,
        attached
          ? 'the agent ended the monitor stream (stopped?)'
          : `the agent at ${socketPath} closed the connection without answering`,
      ),
    );
  });
}
