/* The process-wide readiness poller: tells Node when an fd libuv cannot watch (a SOCK_SEQPACKET
 * or netlink socket) has something to read, without timers and without blocking the event loop
 * or libuv's thread pool.
 *
 * A thread in libsluice waits in epoll_wait; for each ready fd it writes a note (fd, tag) to a
 * socketpair whose other end is an ordinary net.Socket here. Registrations are one-shot: the
 * thread reports an fd once, Node calls its onReady (which does the non-blocking reads) and then
 * re-arms it, so the thread never spins on an fd Node has not drained, and a callback that leaves
 * data queued is called again on the next turn of the loop.
 */
import * as net from 'node:net';
import { log } from '../log';
import { checkIo, Errno, ioError, loadIo, POLLER_NOTE_BYTES } from './io-lib';

/** Stops watching an fd; call it before closing the fd. Idempotent. */
export type Unwatch = () => void;

interface Watch {
  fd: number;
  tag: number;
  onReady: () => void;
}

interface Poller {
  socket: net.Socket;
  watches: Map<number, Watch>;
  /** Leftover bytes of a note split across two reads. */
  partial: Buffer;
}

let poller: Poller | undefined;
/** Distinguishes successive watches of one fd number (the C side reports it back with the fd). */
let nextTag = 1;

function start(): Poller {
  const io = loadIo();
  const fd = checkIo(io.pollerOpen(), 'Cannot start the I/O poller');
  const socket = new net.Socket({ fd, readable: true, writable: false });
  const p: Poller = { socket, watches: new Map(), partial: Buffer.alloc(0) };
  socket.on('data', (chunk: Buffer) => deliver(p, chunk));
  socket.on('error', (err) => log.error('I/O poller: reading its notify socket failed', { err }));
  // Only watched fds keep the process alive, as with net.Server: the thread does not.
  socket.unref();
  return p;
}

function deliver(p: Poller, chunk: Buffer): void {
  let data = p.partial.length ? Buffer.concat([p.partial, chunk]) : chunk;
  const whole = data.length - (data.length % POLLER_NOTE_BYTES);
  p.partial = Buffer.from(data.subarray(whole));
  data = data.subarray(0, whole);
  for (let off = 0; off < whole; off += POLLER_NOTE_BYTES) {
    const fd = data.readInt32LE(off);
    const tag = data.readUInt32LE(off + 4);
    if (fd === -1) {
      log.error('I/O poller: its thread stopped; watched fds get no more readiness reports', {
        err: ioError(-tag, 'epoll_wait').message,
      });
      continue;
    }
    const w = p.watches.get(fd);
    // A note for an fd unwatched (and maybe reused) since the thread wrote it: not ours.
    if (!w || w.tag !== tag) continue;
    try {
      w.onReady();
    } catch (err) {
      // Surfaces as an uncaught exception, like a throwing event handler, but only after the
      // other notes of this read are delivered: none of their fds may be left un-armed.
      process.nextTick(() => {
        throw err;
      });
    }
    if (p.watches.get(fd) === w) rearm(p, w);
  }
}

function rearm(p: Poller, w: Watch): void {
  const ret = loadIo().pollerArm(w.fd, w.tag);
  if (ret >= 0) return;
  // Only a caller that closed the fd without unwatching it gets here: drop the watch.
  log.error('I/O poller: re-arming a watched fd failed; no longer watching it', {
    fd: w.fd,
    err: ioError(ret, `re-arm fd ${w.fd}`).message,
  });
  dropWatch(p, w);
}

function dropWatch(p: Poller, w: Watch): void {
  p.watches.delete(w.fd);
  if (p.watches.size === 0) p.socket.unref();
}

/**
 * Calls onReady once each time fd becomes readable (or hung up, or errored) until the returned
 * Unwatch is called. onReady must not block: it reads with non-blocking calls until EAGAIN (or
 * as far as it wants; what is left makes the fd ready again at once). It may also be called
 * when nothing is readable any more, and must take EAGAIN in its stride. Starts the poller on
 * first use. While an fd is watched the process stays alive.
 */
export function watch(fd: number, onReady: () => void): Unwatch {
  if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`Cannot watch fd ${fd}: not a file descriptor`);
  poller ??= start();
  const p = poller;
  if (p.watches.has(fd)) throw new Error(`Cannot watch fd ${fd}: it is watched already`);
  const w: Watch = { fd, tag: nextTag, onReady };
  nextTag = nextTag >= 0xffffffff ? 1 : nextTag + 1;
  checkIo(loadIo().pollerArm(fd, w.tag), `Cannot watch fd ${fd}`);
  p.watches.set(fd, w);
  if (p.watches.size === 1) p.socket.ref();
  return () => {
    if (poller !== p || p.watches.get(fd) !== w) return;
    dropWatch(p, w);
    const ret = loadIo().pollerForget(fd);
    // EBADF/ENOENT: closed already, which ended the registration with it.
    if (ret < 0 && -ret !== Errno.EBADF && -ret !== Errno.ENOENT) throw ioError(ret, `Cannot unwatch fd ${fd}`);
  };
}

/** How many fds are watched now (0 when the poller is not running). */
export function watchedCount(): number {
  return poller?.watches.size ?? 0;
}

/**
 * Stops the poller thread and releases its fds; watched fds get no more reports (their owners
 * should be closed first). The agent calls this on stop; a later watch() starts a new poller.
 */
export function closePoller(): void {
  if (!poller) return;
  const p = poller;
  poller = undefined;
  loadIo().pollerClose();
  p.watches.clear();
  p.socket.destroy();
}
