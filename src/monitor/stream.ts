/* The local API's `monitor` op, the agent's side of `sluice monitor`: the request carries the
 * filters; the answer keeps the connection, acknowledges with `{"ok":true,…}` and then writes one
 * JSON line per message (record.ts), as fast as the client reads them. Whatever the client does not
 * read waits in its bounded queue in the hub; when the client goes, so does its subscription.
 */
import type * as net from 'node:net';
import { Stream, type Request } from '../agent/local-api';
import { parseFilter } from './filter';
import type { MonitorHub, Subscription } from './hub';

function field(req: Request, name: string): string | undefined {
  return typeof req[name] === 'string' ? (req[name] as string) : undefined;
}

/** @throws RangeError for a bad filter, or what the feed threw: answered as `{ok:false,error}` */
export function monitorStream(hub: MonitorHub, req: Request): Stream {
  const filter = parseFilter({ pod: field(req, 'pod'), namespace: field(req, 'namespace'), type: field(req, 'type') });
  let conn: net.Socket | undefined;
  let paused = false;
  const pump = () => {
    if (!conn || paused) return;
    for (let m = sub.next(); m; m = sub.next()) {
      // write() returning false means the socket buffers beyond its mark: the rest waits in the
      // hub's bounded queue until the client has read
      if (!conn.write(JSON.stringify(m) + '\n')) {
        paused = true;
        return;
      }
    }
  };
  let ended = false;
  const sub: Subscription = hub.subscribe(filter, {
    ready: pump,
    closed: () => {
      ended = true;
      conn?.end();
    },
  });
  return new Stream((c) => {
    conn = c;
    if (c.destroyed) return sub.close(); // the client left while it was being subscribed
    if (ended) return c.end(); // the hub closed meanwhile (the agent stops)
    c.on('drain', () => {
      paused = false;
      pump();
    });
    c.once('close', () => sub.close());
    c.write(JSON.stringify({ ok: true, result: { monitoring: true } }) + '\n');
    pump();
  });
}
