/* libsluice, event-driven I/O Node lacks: a readiness poller on its own thread, AF_UNIX
 * SOCK_SEQPACKET sockets with SCM_RIGHTS fd passing (Istio's ZDS), and rtnetlink address
 * notifications. Same conventions as shim.h: int-returning functions return >= 0 on success or a
 * negative errno, and a failure's message is in sl_last_error() (expected conditions, -EAGAIN
 * from accept/recv, leave no message). Every fd returned is non-blocking and close-on-exec, and
 * belongs to the caller.
 */
#ifndef SLUICE_IO_H
#define SLUICE_IO_H

#include <stddef.h>
#include <stdint.h>

/* --- the poller ---------------------------------------------------------------------------- */

/* What the poller thread writes to the notify socket for each ready fd: 8 bytes, host order.
 * `tag` is the caller's value from sl_poller_arm, so a notification for an fd number that was
 * forgotten (and maybe reused) meanwhile can be told from one for the current registration.
 * fd == -1 means the thread stopped on an error; tag then holds that errno.
 */
struct sl_poller_note {
	int32_t fd;
	uint32_t tag;
};

/* Starts the process's poller thread (once: later calls return the same fd until
 * sl_poller_close). Returns the notify fd to read sl_poller_note records from; the caller owns it
 * (closes it after sl_poller_close). open/arm/forget/close are meant for one thread (Node's).
 */
int sl_poller_open(void);
/* Registers fd (or re-arms it) for one readiness report: EPOLLIN|EPOLLRDHUP|EPOLLONESHOT. */
int sl_poller_arm(int fd, uint32_t tag);
/* Removes fd from the set; call before closing it (a dup elsewhere keeps a registration alive). */
int sl_poller_forget(int fd);
/* Stops and joins the thread, closes its fds (not the caller's notify fd). Idempotent. */
void sl_poller_close(void);

/* --- SOCK_SEQPACKET unix sockets ------------------------------------------------------------ */

/* The most fds one message can carry (the kernel's SCM_MAX_FD). */
#define SL_SEQPACKET_MAX_FDS 253

/* Listens at path; a socket file left there (a previous run) is removed first, as istio-cni
 * does; any other kind of file is left alone and fails with -EEXIST.
 */
int sl_seqpacket_listen(const char *path, int backlog);
/* Connects to path. A full backlog fails with -EAGAIN instead of blocking. */
int sl_seqpacket_connect(const char *path);
/* Accepts one pending connection; -EAGAIN when there is none. */
int sl_seqpacket_accept(int listen_fd);
/* Sends one message, with pass_fd as SCM_RIGHTS when >= 0. Never blocks and never raises
 * SIGPIPE: a full peer queue is -EAGAIN, a closed peer -EPIPE. Empty messages are refused
 * (-EINVAL): the peer could not tell one from end of stream. Returns len.
 */
int sl_seqpacket_send(int fd, const void *buf, size_t len, int pass_fd);
/* Same with nfds (0..SL_SEQPACKET_MAX_FDS) fds in one SCM_RIGHTS message. */
int sl_seqpacket_send_fds(int fd, const void *buf, size_t len, const int *fds, int nfds);
/* Receives one message into buf. Returns its length (at most len), 0 at end of stream, -EAGAIN
 * when none is queued. *fd_out: the first fd that came with it (close-on-exec, now the caller's)
 * or -1; further fds are closed here. *flags_out: MSG_TRUNC when the message was longer than
 * len (the rest is lost), MSG_CTRUNC when control data was cut off.
 */
int sl_seqpacket_recv(int fd, void *buf, size_t len, int *fd_out, int *flags_out);

/* --- rtnetlink address notifications -------------------------------------------------------- */

/* A NETLINK_ROUTE socket in the calling thread's network namespace, subscribed to IPv4 and IPv6
 * address changes (RTM_NEWADDR/RTM_DELADDR). rcvbuf_bytes > 0 sets its receive buffer (tests
 * use a small one), 0 asks for 1 MiB (capped by net.core.rmem_max).
 */
int sl_addr_watch_open(int rcvbuf_bytes);
/* Reads and discards what is queued on a datagram fd, up to 4096 datagrams per call (the poller
 * reports the rest). Returns how many were read. *overrun is set to 1 when the kernel dropped
 * notifications (ENOBUFS: the receive buffer overflowed): state must be re-read from scratch.
 */
int sl_fd_drain(int fd, int *overrun);

#endif /* SLUICE_IO_H */
