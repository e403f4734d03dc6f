/* The ZDS server: istio-cni's role towards ztunnel (istio/istio cni/pkg/nodeagent/ztunnelserver*.go).
 * ztunnel connects to a SOCK_SEQPACKET unix socket and says hello; the server replays every
 * ambient pod (AddWorkload with the pod's netns as the one SCM_RIGHTS fd, or KeepWorkload when
 * the netns cannot be opened), then SnapshotSent; later Adds go to the NEWEST connection and Dels
 * to ALL (during a ztunnel upgrade the old one must drop its pods too). One request is
 * outstanding per connection, each answered by one WorkloadResponse{ack}; 5 s deadlines.
 *
 * One difference from istio-cni, on purpose: an ack that does not arrive within the deadline
 * closes the connection (ztunnel reconnects and gets a fresh snapshot) rather than reading on,
 * where a late ack would be taken as the answer to the next request.
 */
import * as fs from 'node:fs';
import { log } from '../../log';
import {
  decodeAck,
  decodeHello,
  encodeRequest,
  requestKind,
  ZDS_MAX_MESSAGE,
  type WorkloadInfo,
  type WorkloadRequest,
} from './messages';

/** One message-preserving connection (the native seqpacket layer, or a test double). */
export interface PacketConn {
  send(buf: Buffer, fd?: number): void;
  onMessage(cb: (msg: Buffer, fd: number | undefined, truncated: boolean) => void): void;
  onClose(cb: () => void): void;
  close(): void;
}

export type Listen = (path: string, onConnection: (c: PacketConn) => void) => { close(): void };

/** A pod as ZDS names it, with the netns to hand over. */
export interface ZdsWorkload extends WorkloadInfo {
  uid: string;
  netnsPath: string;
}

export type AddResult = { ok: true } | { ok: false; error: string };

export interface ZdsServerOptions {
  /** ztunnel-uds-address */
  path: string;
  /** the ambient pods a newly connected ztunnel must be given */
  snapshot(): ZdsWorkload[];
  /** the answer to an Add sent in a snapshot (adds sent by add() resolve their promise instead) */
  onSnapshotResult(uid: string, result: AddResult): void;
  /** opens the listening socket; default: the native seqpacket server */
  listen: Listen;
  /** per-request deadline; default 5000 (istio-cni's readWriteDeadline) */
  deadlineMs?: number;
}

/** Thrown by add() when no ztunnel is connected: the pod goes in the next snapshot. */
export class NoZtunnelError extends Error {
  constructor() {
    super('no ztunnel connected');
    this.name = 'NoZtunnelError';
  }
}

interface Pending {
  req: WorkloadRequest;
  netnsPath?: string;
  resolve(ackError: string): void;
  reject(err: Error): void;
}

export interface ZtunnelStatus {
  id: number;
  connectedAt: string;
  state: 'hello' | 'snapshot' | 'ready';
  version?: number;
  queued: number;
}

const DEFAULT_DEADLINE_MS = 5000;

class ZtunnelConn {
  state: ZtunnelStatus['state'] = 'hello';
  version?: number;
  closed = false;
  readonly connectedAt = new Date();
  private readonly queue: Pending[] = [];
  private current?: Pending;
  private timer?: NodeJS.Timeout;
  private helloTimer?: NodeJS.Timeout;

  constructor(
    readonly id: number,
    private readonly conn: PacketConn,
    private readonly deadlineMs: number,
    private readonly onHello: (c: ZtunnelConn) => void,
    private readonly onGone: (c: ZtunnelConn) => void,
  ) {
    conn.onMessage((msg, fd, truncated) => this.message(msg, fd, truncated));
    conn.onClose(() => this.close('ztunnel closed the connection'));
    this.helloTimer = setTimeout(() => this.close('no hello within the deadline'), deadlineMs);
  }

  get queued(): number {
    return this.queue.length + (this.current ? 1 : 0);
  }

  /** Queues a request; resolves with the ack's error text ('' = ack). */
  request(req: WorkloadRequest, netnsPath?: string): Promise<string> {
    if (this.closed) return Promise.reject(new Error(`ztunnel connection ${this.id} is closed`));
    return new Promise((resolve, reject) => {
      this.queue.push({ req, netnsPath, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    if (this.current || this.closed || this.state === 'hello') return;
    const next = this.queue.shift();
    if (!next) return;
    this.current = next;
    let fd: number | undefined;
    let sending = false;
    try {
      const buf = encodeRequest(next.req);
      if (next.netnsPath !== undefined) fd = fs.openSync(next.netnsPath, 'r');
      sending = true;
      this.conn.send(buf, fd);
    } catch (e) {
      this.current = undefined;
      next.reject(e as Error);
      // an encoding or open failure concerns this request only; a failed send, the connection
      if (sending) this.close(`send failed: ${(e as Error).message}`);
      else this.pump();
      return;
    } finally {
      // the kernel holds its own reference in the message
      if (fd !== undefined) fs.closeSync(fd);
    }
    this.timer = setTimeout(
      () => this.close(`no answer to ${requestKind(next.req)} within ${this.deadlineMs} ms`),
      this.deadlineMs,
    );
  }

  private message(msg: Buffer, fd: number | undefined, truncated: boolean): void {
    if (fd !== undefined) fs.closeSync(fd); // ztunnel never sends fds
    if (truncated) return this.close(`message over ${ZDS_MAX_MESSAGE} bytes`);
    try {
      if (this.state === 'hello') {
        clearTimeout(this.helloTimer);
        this.version = decodeHello(msg);
        this.state = 'snapshot';
        this.onHello(this);
        this.pump();
        return;
      }
      const cur = this.current;
      if (!cur) return this.close('protocol error: a message with no request outstanding');
      const ackError = decodeAck(msg);
      clearTimeout(this.timer);
      this.current = undefined;
      cur.resolve(ackError);
      this.pump();
    } catch (e) {
      this.close(`protocol error: ${(e as Error).message}`);
    }
  }

  close(why: string): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    clearTimeout(this.helloTimer);
    const err = new Error(`ztunnel connection ${this.id} closed: ${why}`);
    for (const p of [...(this.current ? [this.current] : []), ...this.queue.splice(0)]) p.reject(err);
    this.current = undefined;
    this.conn.close();
    log.info('ztunnel disconnected', { conn: this.id, reason: why });
    this.onGone(this);
  }
}

export class ZdsServer {
  private readonly conns: ZtunnelConn[] = [];
  private listener?: { close(): void };
  private nextId = 1;
  private readonly deadlineMs: number;

  constructor(private readonly opts: ZdsServerOptions) {
    this.deadlineMs = opts.deadlineMs ?? DEFAULT_DEADLINE_MS;
  }

  listen(): void {
    this.listener = this.opts.listen(this.opts.path, (c) => {
      const zc = new ZtunnelConn(
        this.nextId++,
        c,
        this.deadlineMs,
        (z) => this.sendSnapshot(z),
        (z) => this.forget(z),
      );
      this.conns.push(zc);
      log.info('ztunnel connected', { conn: zc.id, connected: this.conns.length });
    });
    log.info('ZDS server listening', { path: this.opts.path });
  }

  /** Connections that said hello (the snapshot may still be under way). */
  get connected(): number {
    return this.conns.filter((c) => c.state !== 'hello').length;
  }

  status(): ZtunnelStatus[] {
    return this.conns.map((c) => ({
      id: c.id,
      connectedAt: c.connectedAt.toISOString(),
      state: c.state,
      version: c.version,
      queued: c.queued,
    }));
  }

  /** Hands a pod to the newest ztunnel; resolves with its answer. Throws NoZtunnelError. */
  async add(w: ZdsWorkload): Promise<AddResult> {
    const conn = [...this.conns].reverse().find((c) => c.state !== 'hello');
    if (!conn) throw new NoZtunnelError();
    const ackError = await conn.request({ add: { uid: w.uid, workloadInfo: info(w) } }, w.netnsPath);
    return ackError ? { ok: false, error: ackError } : { ok: true };
  }

  /** Tells every connected ztunnel that the pod is gone (old and new during an upgrade). */
  async del(uid: string): Promise<void> {
    const results = await Promise.allSettled(
      this.conns.filter((c) => c.state !== 'hello').map((c) => c.request({ del: { uid } })),
    );
    for (const r of results) {
      if (r.status === 'rejected') log.warn('ZDS del not delivered', { uid, err: (r.reason as Error).message });
      else if (r.value) log.warn('ztunnel refused a del', { uid, error: r.value });
    }
  }

  private sendSnapshot(conn: ZtunnelConn): void {
    const pods = this.opts.snapshot();
    log.info('ztunnel said hello; sending the snapshot', { conn: conn.id, version: conn.version, pods: pods.length });
    for (const w of pods) {
      let openable = true;
      try {
        fs.accessSync(w.netnsPath, fs.constants.R_OK);
      } catch {
        openable = false;
      }
      if (!openable) {
        // istio-cni's rule: a pod whose netns cannot be opened (after our restart) is kept
        void conn.request({ keep: { uid: w.uid } }).catch(() => undefined);
        continue;
      }
      conn.request({ add: { uid: w.uid, workloadInfo: info(w) } }, w.netnsPath).then(
        (ackError) => this.opts.onSnapshotResult(w.uid, ackError ? { ok: false, error: ackError } : { ok: true }),
        (e: Error) => this.opts.onSnapshotResult(w.uid, { ok: false, error: e.message }),
      );
    }
    conn.request({ snapshotSent: {} }).then(
      (ackError) => {
        if (ackError) log.warn('ztunnel refused the snapshot', { conn: conn.id, error: ackError });
        if (!conn.closed) conn.state = 'ready';
        log.info('snapshot sent to ztunnel', { conn: conn.id });
      },
      () => undefined, // the connection is gone; logged there
    );
  }

  private forget(conn: ZtunnelConn): void {
    const i = this.conns.indexOf(conn);
    if (i >= 0) this.conns.splice(i, 1);
  }

  close(): void {
    this.listener?.close();
    this.listener = undefined;
    for (const c of [...this.conns]) c.close('the agent is stopping');
  }
}

function info(w: ZdsWorkload): WorkloadInfo {
  return { name: w.name, namespace: w.namespace, serviceAccount: w.serviceAccount };
}
