/* libsluice: event-driven I/O for the agent; see io.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"
#include "io.h"

#define fail sl_fail

/* --- the poller ---------------------------------------------------------------------------- */

/* epoll data of the stop eventfd; registered fds carry (tag << 32 | fd), and no tag is all ones
 * together with fd -1.
 */
#define STOP_MARK	  UINT64_MAX
#define EVENTS_PER_WAKEUP 64

static pthread_mutex_t poller_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	int running;
	int epoll_fd;
	int stop_fd;   /* eventfd: sl_poller_close wakes the thread through it */
	int notify_fd; /* the thread's end of the socketpair */
	int caller_fd; /* the end handed to the caller */
	pthread_t thread;
} poller = {.epoll_fd = -1, .stop_fd = -1, .notify_fd = -1, .caller_fd = -1};

/* Blocking write of whole records: the reader is Node's event loop, and at most one record per
 * armed fd is ever outstanding (ONESHOT), so the socket buffer bounds nothing that matters.
 * Fails with EPIPE once sl_poller_close shut the socket down or the caller closed its end.
 */
static int write_notes(int fd, const struct sl_poller_note *notes, size_t count)
{
	const char *p = (const char *)notes;
	size_t left = count * sizeof(*notes);

	while (left) {
		ssize_t n = send(fd, p, left, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		left -= (size_t)n;
	}
	return 0;
}

static void *poller_thread(void *arg)
{
	struct epoll_event events[EVENTS_PER_WAKEUP];
	struct sl_poller_note notes[EVENTS_PER_WAKEUP];

	(void)arg;
	for (;;) {
		size_t count = 0;
		int stop = 0, n, i;

		n = epoll_wait(poller.epoll_fd, events, EVENTS_PER_WAKEUP, -1);
		if (n < 0) {
			struct sl_poller_note died = {.fd = -1, .tag = (uint32_t)errno};

			if (errno == EINTR)
				continue;
			write_notes(poller.notify_fd, &died, 1);
			return NULL;
		}
		for (i = 0; i < n; i++) {
			uint64_t data = events[i].data.u64;

			if (data == STOP_MARK) {
				stop = 1;
				continue;
			}
			notes[count].fd = (int32_t)(uint32_t)data;
			notes[count].tag = (uint32_t)(data >> 32);
			count++;
		}
		if (stop)
			return NULL;
		if (count && write_notes(poller.notify_fd, notes, count))
			return NULL; /* the reader is gone: nobody to report to */
	}
}

static void poller_release(void)
{
	if (poller.epoll_fd >= 0)
		close(poller.epoll_fd);
	if (poller.stop_fd >= 0)
		close(poller.stop_fd);
	if (poller.notify_fd >= 0)
		close(poller.notify_fd);
	poller.epoll_fd = poller.stop_fd = poller.notify_fd = poller.caller_fd = -1;
}

int sl_poller_open(void)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = STOP_MARK};
	sigset_t all, old;
	int pair[2], err, ret;

	pthread_mutex_lock(&poller_lock);
	if (poller.running) {
		ret = poller.caller_fd;
		goto out;
	}
	poller.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (poller.epoll_fd < 0) {
		ret = fail(errno, "poller: epoll_create1");
		goto fail;
	}
	poller.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (poller.stop_fd < 0) {
		ret = fail(errno, "poller: eventfd");
		goto fail;
	}
	if (epoll_ctl(poller.epoll_fd, EPOLL_CTL_ADD, poller.stop_fd, &ev)) {
		ret = fail(errno, "poller: register its stop eventfd %d", poller.stop_fd);
		goto fail;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair)) {
		ret = fail(errno, "poller: socketpair");
		goto fail;
	}
	poller.caller_fd = pair[0];
	poller.notify_fd = pair[1];

	/* Signals stay with Node's thread: the poller thread blocks them all. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&poller.thread, NULL, poller_thread, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		close(poller.caller_fd);
		ret = fail(err, "poller: start its thread");
		goto fail;
	}
	pthread_setname_np(poller.thread, "sl-poller");
	poller.running = 1;
	ret = poller.caller_fd;
	goto out;
fail:
	poller_release();
out:
	pthread_mutex_unlock(&poller_lock);
	return ret;
}

int sl_poller_arm(int fd, uint32_t tag)
{
	struct epoll_event ev = {
		.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT,
		.data.u64 = (uint64_t)tag << 32 | (uint32_t)fd,
	};

	if (!poller.running)
		return fail(EBADF, "arm fd %d: the poller is not open", fd);
	if (fd < 0)
		return fail(EBADF, "arm fd %d", fd);
	/* Re-arming is the common case; the first arm finds no registration. */
	if (epoll_ctl(poller.epoll_fd, EPOLL_CTL_MOD, fd, &ev) == 0)
		return 0;
	if (errno != ENOENT)
		return fail(errno, "re-arm fd %d in the poller", fd);
	if (epoll_ctl(poller.epoll_fd, EPOLL_CTL_ADD, fd, &ev))
		return fail(errno, "add fd %d to the poller", fd);
	return 0;
}

int sl_poller_forget(int fd)
{
	if (!poller.running)
		return 0; /* closing the poller forgot everything */
	if (epoll_ctl(poller.epoll_fd, EPOLL_CTL_DEL, fd, NULL))
		return fail(errno, "remove fd %d from the poller", fd);
	return 0;
}

void sl_poller_close(void)
{
	uint64_t one = 1;

	pthread_mutex_lock(&poller_lock);
	if (poller.running) {
		if (write(poller.stop_fd, &one, sizeof(one)) != sizeof(one)) {
			/* an eventfd write fails only on counter overflow; never left waiting */
		}
		/* A thread blocked writing to a reader that stopped reading gets EPIPE now. */
		shutdown(poller.notify_fd, SHUT_RDWR);
		pthread_join(poller.thread, NULL);
		poller.running = 0;
		poller_release();
	}
	pthread_mutex_unlock(&poller_lock);
}

/* --- SOCK_SEQPACKET unix sockets ------------------------------------------------------------ */

static int unix_address(const char *path, struct sockaddr_un *addr, const char *what)
{
	size_t len = strlen(path);

	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	if (len == 0 || len >= sizeof(addr->sun_path))
		return fail(ENAMETOOLONG, "%s %s: a socket path has 1 to %zu bytes, this one %zu",
			    what, path, sizeof(addr->sun_path) - 1, len);
	memcpy(addr->sun_path, path, len);
	return 0;
}

int sl_seqpacket_listen(const char *path, int backlog)
{
	struct sockaddr_un addr;
	struct stat st;
	int fd, err;

	err = unix_address(path, &addr, "listen on");
	if (err)
		return err;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return fail(EEXIST,
				    "listen on %s: a file that is not a socket is in the way", path);
		if (unlink(path) && errno != ENOENT)
			return fail(errno, "listen on %s: remove the old socket file", path);
	} else if (errno != ENOENT) {
		return fail(errno, "listen on %s: stat", path);
	}
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail(errno, "listen on %s: socket", path);
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr))) {
		err = fail(errno, "listen on %s: bind", path);
		close(fd);
		return err;
	}
	if (listen(fd, backlog)) {
		err = fail(errno, "listen on %s: listen (backlog %d)", path, backlog);
		close(fd);
		unlink(path);
		return err;
	}
	return fd;
}

int sl_seqpacket_connect(const char *path)
{
	struct sockaddr_un addr;
	int fd, err;

	err = unix_address(path, &addr, "connect to");
	if (err)
		return err;
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail(errno, "connect to %s: socket", path);
	/* A unix connect completes at once or fails; non-blocking, a full backlog is EAGAIN. */
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr))) {
		err = fail(errno, "connect to %s", path);
		close(fd);
		return err;
	}
	return fd;
}

int sl_seqpacket_accept(int listen_fd)
{
	int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd >= 0)
		return fd;
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return -EAGAIN;
	return fail(errno, "accept on socket fd %d", listen_fd);
}

int sl_seqpacket_send_fds(int fd, const void *buf, size_t len, const int *fds, int nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * SL_SEQPACKET_MAX_FDS)];
		struct cmsghdr align;
	} control;
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t n;

	if (len == 0)
		return fail(EINVAL, "send on socket fd %d: an empty message reads as end of stream",
			    fd);
	if (nfds < 0 || nfds > SL_SEQPACKET_MAX_FDS)
		return fail(EINVAL, "send on socket fd %d: %d fds, at most %d fit in one message",
			    fd, nfds, SL_SEQPACKET_MAX_FDS);
	if (nfds > 0) {
		struct cmsghdr *c;

		memset(&control, 0, sizeof(control));
		msg.msg_control = control.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
	}
	do
		n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return fail(EAGAIN,
				    "send on socket fd %d: the peer's receive queue is full", fd);
		return fail(errno, "send with %d fd(s) on socket fd %d", nfds, fd);
	}
	return (int)n;
}

int sl_seqpacket_send(int fd, const void *buf, size_t len, int pass_fd)
{
	return sl_seqpacket_send_fds(fd, buf, len, &pass_fd, pass_fd >= 0 ? 1 : 0);
}

int sl_seqpacket_recv(int fd, void *buf, size_t len, int *fd_out, int *flags_out)
{
	/* Room for every fd a message can carry: none is dropped by the kernel unseen, and every
	 * one but the first is closed here.
	 */
	union {
		char buf[CMSG_SPACE(sizeof(int) * SL_SEQPACKET_MAX_FDS)];
		struct cmsghdr align;
	} control;
	struct iovec iov = {.iov_base = buf, .iov_len = len};
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = control.buf,
		.msg_controllen = sizeof(control.buf),
	};
	struct cmsghdr *c;
	ssize_t n;

	*fd_out = -1;
	*flags_out = 0;
	do
		n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return -EAGAIN;
		return fail(errno, "receive on socket fd %d", fd);
	}
	for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		size_t i, count;
		int received;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < count; i++) {
			memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (*fd_out < 0)
				*fd_out = received;
			else
				close(received);
		}
	}
	*flags_out = msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC);
	return (int)n;
}

/* --- rtnetlink address notifications -------------------------------------------------------- */

#define ADDR_WATCH_DEFAULT_RCVBUF (1 << 20)
#define DRAIN_MAX_DATAGRAMS	  4096

int sl_addr_watch_open(int rcvbuf_bytes)
{
	struct sockaddr_nl addr = {
		.nl_family = AF_NETLINK,
		.nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR,
	};
	int size = rcvbuf_bytes > 0 ? rcvbuf_bytes : ADDR_WATCH_DEFAULT_RCVBUF;
	int fd, err;

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		return fail(errno, "address watch: netlink socket");
	/* A burst (an interface with many addresses going away) must not overflow the buffer;
	 * if it does anyway, sl_fd_drain reports the overrun.
	 */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size))) {
		err = fail(errno, "address watch: SO_RCVBUF %d", size);
		close(fd);
		return err;
	}
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr))) {
		err = fail(errno, "address watch: bind to the IPv4/IPv6 address groups");
		close(fd);
		return err;
	}
	return fd;
}

int sl_fd_drain(int fd, int *overrun)
{
	char buf[16384];
	int count = 0;

	*overrun = 0;
	while (count < DRAIN_MAX_DATAGRAMS) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n > 0) {
			count++;
			continue;
		}
		if (n == 0)
			break; /* end of stream on a stream socket; datagrams here are never empty */
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			break;
		if (errno == ENOBUFS) {
			/* the kernel dropped messages; the ones queued after are still read */
			*overrun = 1;
			continue;
		}
		return fail(errno, "drain fd %d", fd);
	}
	return count;
}
