/* Public API of the native I/O layer: the poller, SOCK_SEQPACKET sockets with fd passing, and
 * address-change notifications (see each module).
 */
export { watch, closePoller, watchedCount } from './poller';
export type { Unwatch } from './poller';
export { SeqpacketConn, SeqpacketServer, DEFAULT_MAX_MESSAGE_BYTES } from './seqpacket';
export type { SeqpacketConnOptions, SeqpacketServerOptions, MessageHandler, CloseHandler } from './seqpacket';
export { watchAddresses } from './addr-watch';
export type { AddressChange, AddressWatch, WatchAddressesOptions } from './addr-watch';
export { NativeIoError } from './io-lib';
