/* The ztunnel stand-in (build/zt-standin, test/tools/zt-standin.c) in the simulated node: a ZDS
 * client written from ztunnel's protocol and behaviour, which opens ztunnel's sockets inside each
 * pod it is handed and forwards as ztunnel does. Helpers to start it, follow its events and read
 * the lines its proxies answer with.
 */
import type { ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { waitFor } from '../harness';
import type { MeshEnv } from './mesh-env';

export const ZT_STANDIN = path.resolve(__dirname, '../../build/zt-standin');

export interface ZtEvent {
  event: string;
  uid?: string;
  name?: string;
  namespace?: string;
  serviceAccount?: string;
  error?: string;
  kept?: string[];
  removed?: string[];
  [k: string]: unknown;
}

export interface Ztunnel {
  id: string;
  child: ChildProcess;
  events(): ZtEvent[];
  /** Waits for an event (counted from `from`, an index into events()) matching pred. */
  waitEvent(pred: (e: ZtEvent) => boolean, opts?: { from?: number; timeoutMs?: number }): Promise<ZtEvent>;
}

export function udsPath(env: MeshEnv): string {
  return path.join(env.node.workDir, 'ztunnel.sock');
}

/** Starts a stand-in ztunnel in the node's network namespace (as the ztunnel DaemonSet runs). */
export function startZtunnel(env: MeshEnv, id: string, extra: string[] = []): Ztunnel {
  const child = env.node.spawn([ZT_STANDIN, '--uds', udsPath(env), '--id', id, ...extra]);
  const events = (): ZtEvent[] =>
    env.node
      .output(child)
      .stdout.split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as ZtEvent);
  return {
    id,
    child,
    events,
    waitEvent: (pred, opts = {}) =>
      waitFor(
        `ztunnel ${id} event`,
        async () =>
          events()
            .slice(opts.from ?? 0)
            .find(pred),
        opts.timeoutMs ?? 8000,
        20,
      ),
  };
}

export interface ZtReply {
  id: string;
  via: string;
  orig?: string;
  how?: string;
  local?: string;
  peer?: string;
  upstreamPeer?: string;
  upstreamSrc?: string;
  upstream?: string;
}

/** Parses `ztunnel ID via=.. orig=.. how=.. local=.. peer=.. upstream_peer|upstream_src=.. upstream=LINE`. */
export function ztReply(line: string | undefined): ZtReply | undefined {
  if (!line?.startsWith('ztunnel ')) return undefined;
  const [head, upstream] = line.split(' upstream=');
  const f: Record<string, string> = {};
  for (const part of head.split(' ').slice(2)) {
    const eq = part.indexOf('=');
    if (eq > 0) f[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return {
    id: head.split(' ')[1],
    via: f.via,
    orig: f.orig,
    how: f.how,
    local: f.local,
    peer: f.peer,
    upstreamPeer: f.upstream_peer,
    upstreamSrc: f.upstream_src,
    upstream,
  };
}
