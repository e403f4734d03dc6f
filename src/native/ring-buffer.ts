/* A reader of a BPF ring buffer (BPF_MAP_TYPE_RINGBUF) on the process-wide poller: each time the
 * ring has records the reader drains it, handing every record to onRecord. Over native/ringbuf.c
 * (libbpf's ring_buffer), which copies many records per call into one buffer.
 */
import { BpfError, loadShim, type RingbufHandle } from '../bpf/shim';
import { watch, type Unwatch } from './poller';

export interface RingReaderOptions {
  /** bytes copied out per native call (records plus 4 bytes each); default 64 KiB */
  chunkBytes?: number;
}

export class RingReader {
  private handle: RingbufHandle | null;
  private unwatch: Unwatch | undefined;
  private readonly chunk: Buffer;
  private readonly more = new Int32Array(1);

  /**
   * Starts reading the ring of mapFd (the reader maps the ring itself: the caller may close the fd
   * afterwards). onRecord gets a view of each record, valid only during the call.
   */
  constructor(
    mapFd: number,
    private readonly onRecord: (record: Buffer) => void,
    opts: RingReaderOptions = {},
  ) {
    const s = loadShim();
    this.chunk = Buffer.alloc(opts.chunkBytes ?? 64 * 1024);
    this.handle = s.ringbufOpen(mapFd);
    if (!this.handle) throw new BpfError('open ring buffer reader', 0, s.lastError(), { whole: true });
    try {
      // the poller's registrations are one-shot and re-armed after each report: drain each time
      this.unwatch = watch(s.ringbufEpollFd(this.handle), () => this.drain());
    } catch (e) {
      s.ringbufFree(this.handle);
      this.handle = null;
      throw e;
    }
  }

  /** Reads every record waiting now; returns how many. */
  drain(): number {
    const s = loadShim();
    let n = 0;
    while (this.handle) {
      const bytes = s.ringbufConsume(this.handle, this.chunk, this.chunk.length, this.more);
      if (bytes < 0) throw new BpfError('read ring buffer', -bytes, s.lastError(), { whole: true });
      // a record handler may close the reader: what was copied after that is not delivered
      for (let off = 0; off < bytes && this.handle; ) {
        const len = this.chunk.readUInt32LE(off);
        this.onRecord(this.chunk.subarray(off + 4, off + 4 + len));
        off += 4 + len;
        n++;
      }
      if (!this.more[0]) break;
    }
    return n;
  }

  /** Stops watching and releases the reader. Idempotent. */
  close(): void {
    this.unwatch?.();
    this.unwatch = undefined;
    if (this.handle) loadShim().ringbufFree(this.handle);
    this.handle = null;
  }
}
