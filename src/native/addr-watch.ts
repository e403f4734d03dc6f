/* Live notification of the node's address changes: an rtnetlink socket subscribed to IPv4 and
 * IPv6 address events (RTM_NEWADDR/RTM_DELADDR) in the caller's network namespace, read when the
 * poller reports it readable. Node has no way to watch these itself.
 */
import { log } from '../log';
import { checkIo, ioError, loadIo } from './io-lib';
import { watch } from './poller';

export interface AddressChange {
  /** The kernel dropped notifications (receive buffer overrun): everything must be re-read. */
  overrun: boolean;
}

export interface AddressWatch {
  /** Stops watching (idempotent); no callback runs after it. */
  close(): void;
}

export interface WatchAddressesOptions {
  /** Receive buffer of the netlink socket in bytes; default 1 MiB (capped by net.core.rmem_max).
   * Tests make it small to provoke an overrun. */
  receiveBufferBytes?: number;
}

/**
 * Calls onChange whenever an address is added to or removed from any interface of the current
 * network namespace. Calls are coalesced: all notifications read in one turn of the event loop
 * make one call, on the next setImmediate. The callback says only that something changed (the
 * caller re-reads the addresses, e.g. os.networkInterfaces()); an overrun is reported the same
 * way, with `overrun: true`, so it can never be missed. Keeps the process alive until closed.
 */
export function watchAddresses(onChange: (change: AddressChange) => void, opts: WatchAddressesOptions = {}): AddressWatch {
  const rcvbuf = opts.receiveBufferBytes ?? 0;
  if (!Number.isInteger(rcvbuf) || rcvbuf < 0) {
    throw new RangeError(`Cannot watch addresses with receiveBufferBytes ${rcvbuf}: must be a non-negative integer`);
  }
  const io = loadIo();
  const fd = checkIo(io.addrWatchOpen(rcvbuf), 'Cannot watch address changes');
  const overrunOut = new Int32Array(1);
  let closed = false;
  let scheduled: NodeJS.Immediate | undefined;
  let overrun = false;

  const schedule = () => {
    scheduled ??= setImmediate(() => {
      scheduled = undefined;
      const change = { overrun };
      overrun = false;
      if (!closed) onChange(change);
    });
  };

  let unwatch: () => void;
  try {
    unwatch = watch(fd, () => {
      const n = io.fdDrain(fd, overrunOut);
      if (n < 0) {
        // Unknown state after a failed read: tell the caller to re-read, as for an overrun.
        log.warn('reading address notifications failed; reporting a change to re-read', {
          err: ioError(n, 'Cannot read address notifications').message,
        });
        overrun = true;
        schedule();
        return;
      }
      if (overrunOut[0]) overrun = true;
      if (n > 0 || overrunOut[0]) schedule();
    });
  } catch (e) {
    io.close(fd);
    throw e;
  }

  return {
    close() {
      if (closed) return;
      closed = true;
      if (scheduled) clearImmediate(scheduled);
      unwatch();
      io.close(fd);
    },
  };
}
