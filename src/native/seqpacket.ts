/* AF_UNIX SOCK_SEQPACKET sockets with fd passing, for Istio's ZDS protocol (the agent is the
 * server ztunnel connects to; each message may carry one network-namespace fd as SCM_RIGHTS).
 * Node cannot open these itself (libuv refuses SEQPACKET fds); the sockets live in libsluice and
 * the poller tells us when they are readable. Every call here is non-blocking.
 *
 * fds are plain numbers. An fd that arrives with a message belongs to the message handler,
 * which must close it (fs.closeSync) when done; an fd passed to send() stays the caller's.
 */
import * as fs from 'node:fs';
import { log } from '../log';
import { checkIo, Errno, ioError, loadIo, MSG_CTRUNC, MSG_TRUNC, NativeIoError } from './io-lib';
import { type Unwatch, watch } from './poller';

/** ZDS messages are at most 1024 bytes (istio-cni and ztunnel both read into 1024 bytes). */
export const DEFAULT_MAX_MESSAGE_BYTES = 1024;
/** Messages read per readiness report before yielding to the event loop (the rest come next turn). */
const MESSAGES_PER_WAKEUP = 64;
/** Connections accepted per readiness report, likewise. */
const ACCEPTS_PER_WAKEUP = 64;
/** After accept fails for lack of fds or memory the pending connection stays queued, and the
 * listener stays readable: wait this long before trying again instead of spinning.
 */
const ACCEPT_RETRY_MS = 1000;

export interface SeqpacketConnOptions {
  /** Bytes read per message; a longer message arrives cut to this size with truncated = true
   * (the rest is lost, as with recvmsg). Default 1024 (DEFAULT_MAX_MESSAGE_BYTES). */
  maxMessageBytes?: number;
}

export interface SeqpacketServerOptions extends SeqpacketConnOptions {
  /** listen() backlog: connections queued before accept. Default 128. */
  backlog?: number;
}

/**
 * Called once per message. `fd`: the first fd that came with it (now the handler's to close);
 * any further ones were closed. `truncated`: the message (MSG_TRUNC) or its fds (MSG_CTRUNC)
 * did not fit and were cut.
 */
export type MessageHandler = (msg: Buffer, fd: number | undefined, truncated: boolean) => void;
/** Called once when the connection closes: err is set when a receive failed (e.g. ECONNRESET),
 * unset at the peer's end of stream or after close(). */
export type CloseHandler = (err?: NativeIoError) => void;

function messageBytes(opts: SeqpacketConnOptions): number {
  const n = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  if (!Number.isInteger(n) || n < 1 || n > 1 << 20) {
    throw new RangeError(`Cannot use maxMessageBytes ${n}: must be an integer from 1 to ${1 << 20}`);
  }
  return n;
}

/** One connected SOCK_SEQPACKET socket: message boundaries are kept, one message per callback. */
export class SeqpacketConn {
  private readonly buf: Buffer;
  private readonly fdOut = new Int32Array(1);
  private readonly flagsOut = new Int32Array(1);
  private messageHandler?: MessageHandler;
  private closeHandlers: CloseHandler[] = [];
  private unwatch?: Unwatch;
  private closeReason?: { err?: NativeIoError };

  /** Connects to a listening SOCK_SEQPACKET socket (a full backlog throws EAGAIN, never waits). */
  static connect(path: string, opts: SeqpacketConnOptions = {}): SeqpacketConn {
    const size = messageBytes(opts);
    const fd = checkIo(loadIo().seqpacketConnect(path), `Cannot connect to seqpacket socket ${path}`);
    return new SeqpacketConn(fd, `seqpacket connection to ${path}`, { maxMessageBytes: size });
  }

  /**
   * Takes ownership of a connected, non-blocking SOCK_SEQPACKET fd. `label` names it in errors.
   * Reading starts when a message handler is set (like a paused stream until then).
   */
  constructor(
    readonly fd: number,
    readonly label: string,
    opts: SeqpacketConnOptions = {},
  ) {
    this.buf = Buffer.alloc(messageBytes(opts));
  }

  get closed(): boolean {
    return this.closeReason !== undefined;
  }

  /**
   * Sends one message, with fds (one, or several) passed as SCM_RIGHTS; the caller keeps its
   * own fds open or closes them, the peer gets duplicates. Never blocks: throws a NativeIoError
   * with code EAGAIN when the peer's receive queue is full, EPIPE when the peer has gone.
   */
  send(msg: Buffer, fds?: number | readonly number[]): void {
    const op = `Cannot send a ${msg.length}-byte message on ${this.label}`;
    if (this.closeReason) throw new NativeIoError(op, Errno.EBADF, 'the connection is closed (EBADF)');
    const list = fds === undefined ? [] : typeof fds === 'number' ? [fds] : fds;
    for (const f of list) {
      if (!Number.isInteger(f) || f < 0) throw new RangeError(`${op}: ${f} is not a file descriptor`);
    }
    const arr = list.length ? Int32Array.from(list) : null;
    checkIo(loadIo().seqpacketSendFds(this.fd, msg, msg.length, arr, list.length), op);
  }

  /** Sets the handler of incoming messages (replacing an earlier one) and starts reading. */
  onMessage(handler: MessageHandler): void {
    this.messageHandler = handler;
    if (!this.unwatch && !this.closeReason) this.unwatch = watch(this.fd, () => this.readReady());
  }

  /** Adds a close handler; one added after the close is called too (on a microtask). */
  onClose(handler: CloseHandler): void {
    if (this.closeReason) {
      const { err } = this.closeReason;
      queueMicrotask(() => handler(err));
      return;
    }
    this.closeHandlers.push(handler);
  }

  /** Closes the socket (idempotent); close handlers run on a microtask. */
  close(): void {
    this.finish(undefined);
  }

  private readReady(): void {
    const io = loadIo();
    for (let i = 0; i < MESSAGES_PER_WAKEUP && !this.closeReason; i++) {
      const n = io.seqpacketRecv(this.fd, this.buf, this.buf.length, this.fdOut, this.flagsOut);
      if (n === -Errno.EAGAIN) return;
      if (n < 0) {
        this.finish(ioError(n, `Cannot receive on ${this.label}`));
        return;
      }
      const fd = this.fdOut[0] >= 0 ? this.fdOut[0] : undefined;
      if (n === 0 && fd === undefined) {
        // end of stream (send() refuses empty messages, ztunnel never sends one)
        this.finish(undefined);
        return;
      }
      const msg = Buffer.allocUnsafe(n);
      this.buf.copy(msg, 0, 0, n);
      const truncated = (this.flagsOut[0] & (MSG_TRUNC | MSG_CTRUNC)) !== 0;
      // reading starts in onMessage, so there is a handler
      this.messageHandler!(msg, fd, truncated);
    }
  }

  private finish(err: NativeIoError | undefined): void {
    if (this.closeReason) return;
    this.closeReason = { err };
    this.unwatch?.();
    this.unwatch = undefined;
    const ret = loadIo().close(this.fd);
    if (ret < 0) log.warn('closing a seqpacket connection failed', { conn: this.label, fd: this.fd });
    const handlers = this.closeHandlers;
    this.closeHandlers = [];
    if (handlers.length) {
      queueMicrotask(() => {
        for (const h of handlers) h(err);
      });
    }
  }
}

/** A listening SOCK_SEQPACKET socket: the ZDS server side. */
export class SeqpacketServer {
  private unwatch: Unwatch;
  private readonly fileIno: number;
  private retryTimer?: NodeJS.Timeout;
  private paused = false;
  private isClosed = false;

  /**
   * Listens at path (a socket file left by an earlier run is replaced; any other file there is
   * an error) and calls onConnection with each accepted connection, which starts reading when
   * its message handler is set.
   */
  static listen(path: string, onConnection: (conn: SeqpacketConn) => void, opts: SeqpacketServerOptions = {}): SeqpacketServer {
    const backlog = opts.backlog ?? 128;
    if (!Number.isInteger(backlog) || backlog < 1)
      throw new RangeError(`Cannot listen with backlog ${backlog}: must be a positive integer`);
    messageBytes(opts);
    const fd = checkIo(loadIo().seqpacketListen(path, backlog), `Cannot listen on seqpacket socket ${path}`);
    try {
      return new SeqpacketServer(fd, path, onConnection, opts);
    } catch (e) {
      loadIo().close(fd);
      throw e;
    }
  }

  private constructor(
    readonly fd: number,
    readonly path: string,
    private readonly onConnection: (conn: SeqpacketConn) => void,
    private readonly opts: SeqpacketConnOptions,
  ) {
    // The file is ours to remove on close only while it is the one we bound.
    this.fileIno = fs.lstatSync(path).ino;
    this.unwatch = watch(fd, () => this.acceptReady());
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Stops accepting and removes the socket file (if still ours); accepted connections stay open. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    clearTimeout(this.retryTimer);
    if (!this.paused) this.unwatch();
    loadIo().close(this.fd);
    try {
      if (fs.lstatSync(this.path).ino === this.fileIno) fs.unlinkSync(this.path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
        log.warn('cannot remove the seqpacket socket file', { path: this.path, err: e as Error });
      }
    }
  }

  private acceptReady(): void {
    const io = loadIo();
    for (let i = 0; i < ACCEPTS_PER_WAKEUP && !this.isClosed; i++) {
      const fd = io.seqpacketAccept(this.fd);
      if (fd === -Errno.EAGAIN) return;
      if (fd === -Errno.ECONNABORTED || fd === -Errno.EINTR) continue;
      if (fd < 0) {
        this.pause(ioError(fd, `Cannot accept on seqpacket socket ${this.path}`));
        return;
      }
      const conn = new SeqpacketConn(fd, `seqpacket connection accepted on ${this.path}`, this.opts);
      try {
        this.onConnection(conn);
      } catch (e) {
        conn.close(); // nobody holds it
        throw e;
      }
    }
  }

  private pause(err: NativeIoError): void {
    log.error('accepting a ZDS/seqpacket connection failed; retrying later', {
      path: this.path,
      retryMs: ACCEPT_RETRY_MS,
      err,
    });
    this.paused = true;
    this.unwatch();
    this.retryTimer = setTimeout(() => {
      this.paused = false;
      if (this.isClosed) return;
      // re-watching reports the still-queued connection at once
      this.unwatch = watch(this.fd, () => this.acceptReady());
    }, ACCEPT_RETRY_MS);
  }
}
