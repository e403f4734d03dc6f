/* agent-client.c: the agent exchange of agent-client.h. Every wait is bounded by a deadline, and
 * every syscall interrupted by signals is retried a bounded number of times. */
#include "agent-client.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "debug.h"

#define EINTR_MAX 1000

static int64_t now_ms(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
		return 0; /* cannot happen with CLOCK_MONOTONIC */
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for events on fd until deadline. Returns 1 when ready, 0 on timeout, -1 on error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	int intr = 0;

	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = events};
		int64_t left = deadline - now_ms();
		int r;

		if (left <= 0)
			return 0;
		r = poll(&pfd, 1, (int)(left > INT32_MAX ? INT32_MAX : left));
		if (r > 0)
			return 1;
		if (r == 0)
			continue; /* re-check the deadline with the clock */
		if (errno == EINTR && ++intr < EINTR_MAX)
			continue;
		return -1;
	}
}

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

	(void)nanosleep(&ts, NULL); /* an early wake-up (EINTR) only shortens the wait */
}

/* Connects within AGENT_CONNECT_TIMEOUT_MS. Returns the (non-blocking) fd, or -1 with the reason
 * in err. */
static int agent_connect(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	size_t n = strlen(path);
	int64_t deadline = now_ms() + AGENT_CONNECT_TIMEOUT_MS;
	int fd, intr = 0;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (n >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "%s", strerror(ENAMETOOLONG));
		return -1;
	}
	memcpy(sa.sun_path, path, n);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	for (;;) {
		int soerr = 0, r;
		socklen_t len = sizeof(soerr);

		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EISCONN)
			return fd;
		if (errno == EINTR && ++intr < EINTR_MAX)
			continue;
		if (errno == EAGAIN) {
			/* unix sockets: the listener's backlog is full; retry until the deadline */
			int64_t left = deadline - now_ms();

			if (left <= 0) {
				snprintf(err, errlen, "timed out");
				break;
			}
			sleep_ms(left < 10 ? (int)left : 10);
			continue;
		}
		if (errno != EINPROGRESS && errno != EALREADY) {
			snprintf(err, errlen, "%s", strerror(errno));
			break;
		}
		r = wait_fd(fd, POLLOUT, deadline);
		if (r == 0) {
			snprintf(err, errlen, "timed out");
			break;
		}
		if (r < 0) {
			snprintf(err, errlen, "poll: %s", strerror(errno));
			break;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0) {
			snprintf(err, errlen, "getsockopt: %s", strerror(errno));
			break;
		}
		if (soerr == 0)
			return fd;
		snprintf(err, errlen, "%s", strerror(soerr));
		break;
	}
	close(fd);
	return -1;
}

/* Sends req and reads the answer until the agent closes the connection, all within
 * AGENT_IO_TIMEOUT_MS. Returns 0 with a non-empty answer in ans; -1 when the agent is not
 * reachable; -2 when the answer exceeds AGENT_ANSWER_CAP. The reason is left in err. */
static int agent_exchange(int fd, const struct buf *req, struct buf *ans, char *err, size_t errlen)
{
	int64_t deadline = now_ms() + AGENT_IO_TIMEOUT_MS;
	size_t off = 0;
	int send_errno = 0, intr = 0, r;

	while (off < req->len) {
		ssize_t w = send(fd, req->p + off, req->len - off, MSG_NOSIGNAL);

		if (w > 0) {
			off += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR && ++intr < EINTR_MAX)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			r = wait_fd(fd, POLLOUT, deadline);
			if (r == 0) {
				snprintf(err, errlen, "timed out");
				return -1;
			}
			if (r > 0)
				continue;
		}
		/* The agent may have answered (refused the request) before closing: read it. */
		send_errno = w < 0 ? errno : EIO;
		cni_debug("send: %s", strerror(send_errno));
		break;
	}
	intr = 0;
	for (;;) {
		ssize_t got;

		if (ans->len > AGENT_ANSWER_CAP) {
			snprintf(err, errlen, "answer larger than %zu bytes", AGENT_ANSWER_CAP);
			return -2;
		}
		if (buf_reserve(ans, 65536) < 0) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		got = recv(fd, ans->p + ans->len, ans->cap - ans->len - 1, 0);
		if (got > 0) {
			ans->len += (size_t)got;
			ans->p[ans->len] = '\0';
			continue;
		}
		if (got == 0)
			break;
		if (errno == EINTR && ++intr < EINTR_MAX)
			continue;
		/* A unix socket reports ECONNRESET only after every byte the agent sent has been
		 * read; it means the agent closed without reading all of the request (it refused
		 * it early). With an answer in hand, that is the end of the answer. */
		if (errno == ECONNRESET && ans->len > 0)
			break;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			r = wait_fd(fd, POLLIN, deadline);
			if (r > 0)
				continue;
			if (r == 0)
				snprintf(err, errlen, "timed out");
			else
				snprintf(err, errlen, "poll: %s", strerror(errno));
			return -1;
		}
		snprintf(err, errlen, "%s", strerror(errno));
		return -1;
	}
	if (ans->len == 0) {
		if (send_errno)
			snprintf(err, errlen, "%s", strerror(send_errno));
		else
			snprintf(err, errlen, "connection closed without an answer");
		return -1;
	}
	return 0;
}

/* Parses "<code>\n": returns the offset of the body, or -1 when malformed. */
static long parse_answer(const struct buf *ans, int *code)
{
	size_t i;
	int v = 0;

	for (i = 0; i < ans->len && i < 4 && ans->p[i] >= '0' && ans->p[i] <= '9'; i++)
		v = v * 10 + (ans->p[i] - '0');
	if (i == 0 || i > 3 || i >= ans->len || ans->p[i] != '\n' || v > 255)
		return -1;
	*code = v;
	return (long)i + 1;
}

enum agent_outcome agent_call(const char *socket_path, const struct buf *request,
			      struct agent_answer *ans, struct buf *why)
{
	char err[256] = "", head[64];
	int fd, rc;
	long body;
	size_t i, n;

	fd = agent_connect(socket_path, err, sizeof(err));
	if (fd < 0) {
		(void)buf_adds(why, err);
		return AGENT_UNREACHABLE;
	}
	rc = agent_exchange(fd, request, &ans->raw, err, sizeof(err));
	close(fd);
	if (rc < 0) {
		(void)buf_adds(why, err);
		return rc == -2 ? AGENT_MALFORMED : AGENT_UNREACHABLE;
	}
	body = parse_answer(&ans->raw, &ans->exit_code);
	if (body >= 0) {
		ans->body_off = (size_t)body;
		return AGENT_ANSWERED;
	}
	/* Keep the excerpt ASCII: it may cut a UTF-8 sequence. */
	n = ans->raw.len < sizeof(head) ? ans->raw.len : sizeof(head);
	for (i = 0; i < n; i++)
		head[i] = (unsigned char)ans->raw.p[i] < 0x80 ? ans->raw.p[i] : '?';
	if (buf_adds(why, "answer starts with ") == 0)
		(void)buf_add_json_str(why, head, n);
	return AGENT_MALFORMED;
}
