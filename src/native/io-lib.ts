/* Bindings to the event-driven I/O half of libsluice (native/io.c, described in native/io.h),
 * through the same koffi handle as src/bpf/shim.ts, and the error its failures become.
 */
import * as os from 'node:os';
import koffi from 'koffi';
import { loadLibrary } from '../bpf/shim';

/** A failed socket or poller call: `op` says what was attempted, `errno`/`code` are matchable. */
export class NativeIoError extends Error {
  /** The errno name, e.g. 'EAGAIN', 'EPIPE' ('E<number>' when Node does not know it). */
  readonly code: string;

  constructor(
    readonly op: string,
    readonly errno: number,
    detail: string,
  ) {
    super(`${op}: ${detail}`);
    this.name = 'NativeIoError';
    this.code = errnoName(errno);
  }
}

// The first name of a number wins: EAGAIN rather than its alias EWOULDBLOCK.
const errnoNames = new Map<number, string>();
for (const [name, n] of Object.entries(os.constants.errno)) if (!errnoNames.has(n)) errnoNames.set(n, name);

export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

/** errno values the callers branch on. */
export const Errno = {
  EBADF: os.constants.errno.EBADF,
  ENOENT: os.constants.errno.ENOENT,
  EAGAIN: os.constants.errno.EAGAIN,
  EPIPE: os.constants.errno.EPIPE,
  EINTR: os.constants.errno.EINTR,
  EMFILE: os.constants.errno.EMFILE,
  ENFILE: os.constants.errno.ENFILE,
  ENOBUFS: os.constants.errno.ENOBUFS,
  ENOMEM: os.constants.errno.ENOMEM,
  ECONNABORTED: os.constants.errno.ECONNABORTED,
} as const;

/** Linux msg_flags bits reported by sl_seqpacket_recv. */
export const MSG_CTRUNC = 0x08;
export const MSG_TRUNC = 0x20;

/** Size of a struct sl_poller_note record on the notify socket. */
export const POLLER_NOTE_BYTES = 8;

export interface IoLib {
  lastError(): string;
  pollerOpen(): number;
  pollerArm(fd: number, tag: number): number;
  pollerForget(fd: number): number;
  pollerClose(): void;
  seqpacketListen(path: string, backlog: number): number;
  seqpacketConnect(path: string): number;
  seqpacketAccept(listenFd: number): number;
  seqpacketSendFds(fd: number, buf: Buffer, len: number, fds: Int32Array | null, nfds: number): number;
  seqpacketRecv(fd: number, buf: Buffer, len: number, fdOut: Int32Array, flagsOut: Int32Array): number;
  addrWatchOpen(rcvbufBytes: number): number;
  fdDrain(fd: number, overrun: Int32Array): number;
  close(fd: number): number;
}

let io: IoLib | undefined;

export function loadIo(): IoLib {
  if (io) return io;
  const lib = loadLibrary();
  io = {
    lastError: lib.func('const char *sl_last_error()'),
    pollerOpen: lib.func('int sl_poller_open()'),
    pollerArm: lib.func('int sl_poller_arm(int fd, uint32_t tag)'),
    pollerForget: lib.func('int sl_poller_forget(int fd)'),
    pollerClose: lib.func('void sl_poller_close()'),
    seqpacketListen: lib.func('int sl_seqpacket_listen(const char *path, int backlog)'),
    seqpacketConnect: lib.func('int sl_seqpacket_connect(const char *path)'),
    seqpacketAccept: lib.func('int sl_seqpacket_accept(int listen_fd)'),
    seqpacketSendFds: lib.func('int sl_seqpacket_send_fds(int fd, const void *buf, size_t len, const int *fds, int nfds)'),
    seqpacketRecv: lib.func('int sl_seqpacket_recv(int fd, void *buf, size_t len, int *fd_out, int *flags_out)'),
    addrWatchOpen: lib.func('int sl_addr_watch_open(int rcvbuf_bytes)'),
    fdDrain: lib.func('int sl_fd_drain(int fd, int *overrun)'),
    // the fds here are plain numbers that Node's fs does not track
    close: koffi.load('libc.so.6').func('int close(int fd)'),
  };
  return io;
}

/** Turns a negative return of an io.c call into a NativeIoError carrying the C side's message. */
export function ioError(ret: number, op: string): NativeIoError {
  const detail = loadIo().lastError() || errnoName(-ret);
  return new NativeIoError(op, -ret, `${detail} (${errnoName(-ret)})`);
}

/** Returns ret when >= 0, else throws ioError(ret, op). */
export function checkIo(ret: number, op: string): number {
  if (ret >= 0) return ret;
  throw ioError(ret, op);
}
