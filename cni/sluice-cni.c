/* sluice-cni: the chained CNI plugin of sluice (CNI spec 1.1).
 *
 * The container runtime runs this once per pod ADD/DEL on the pod start-up path, so it is a thin,
 * fast forwarder written in C (libc only). This file is the process boundary: it reads the
 * environment and stdin once, hands them to the dispatcher (dispatch.c), prints what that returns
 * and exits with its code. What the plugin decides alone and what it asks the node agent is
 * described in dispatch.c and cni/README.md.
 *
 * Files: dispatch.c (the command), cni-spec.c (the specification's facts), json-scan.c (reading
 * the configuration), netns-cookie.c (the pod's identity), agent-client.c (the agent protocol),
 * buf.c, debug.c.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "debug.h"
#include "dispatch.h"

#define IO_TIMEOUT_MS 10000
#define EINTR_MAX     1000 /* bound on retries of one syscall interrupted by signals */

/* Reads stdin up to CNI_STDIN_CAP + 1 bytes. Returns 0, or -1 with errno set (E2BIG: too large). */
static int read_stdin(struct buf *b)
{
	int intr = 0;

	for (;;) {
		size_t room;
		ssize_t r;

		if (b->len > CNI_STDIN_CAP) {
			errno = E2BIG;
			return -1;
		}
		if (b->cap - b->len < 4096 + 1) {
			size_t grow = b->cap ? b->cap : 65536;

			/* never read much past the cap */
			if (grow > CNI_STDIN_CAP + 2 - b->len)
				grow = CNI_STDIN_CAP + 2 - b->len;
			if (buf_reserve(b, grow) < 0) {
				errno = ENOMEM;
				return -1;
			}
		}
		room = b->cap - b->len - 1;
		r = read(STDIN_FILENO, b->p + b->len, room);
		if (r < 0) {
			if (errno == EINTR && ++intr < EINTR_MAX)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				/* stdin inherited in non-blocking mode */
				struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};

				if (poll(&pfd, 1, IO_TIMEOUT_MS) > 0)
					continue;
				errno = ETIMEDOUT;
			}
			return -1;
		}
		if (r == 0)
			break;
		b->len += (size_t)r;
		b->p[b->len] = '\0';
	}
	return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
	int intr = 0;

	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR && ++intr < EINTR_MAX)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				/* stdout inherited in non-blocking mode: wait until it drains */
				struct pollfd pfd = {.fd = fd, .events = POLLOUT};

				if (poll(&pfd, 1, IO_TIMEOUT_MS) > 0)
					continue;
			}
			return -1;
		}
		if (w == 0) {
			errno = EIO;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int main(void)
{
	static const char oom[] = "{\"cniVersion\":\"" CNI_NEWEST_VERSION
				  "\",\"code\":11,\"msg\":\"out of memory\"}\n";
	const char *dbg = getenv("SLUICE_CNI_DEBUG");
	struct buf in = {0}, out = {0};
	struct cni_invocation inv = {
		.env =
			{
				.command = getenv("CNI_COMMAND"),
				.container_id = getenv("CNI_CONTAINERID"),
				.netns = getenv("CNI_NETNS"),
				.ifname = getenv("CNI_IFNAME"),
				.args = getenv("CNI_ARGS"),
				.path = getenv("CNI_PATH"),
			},
	};
	int code;

	cni_debug_enabled = dbg && strcmp(dbg, "1") == 0;
	/* Writes to a closed stdout or agent socket must fail with EPIPE, not kill us. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		cni_debug("cannot ignore SIGPIPE: %s", strerror(errno));
	if (read_stdin(&in) < 0)
		inv.stdin_errno = errno;
	inv.stdin_data = in.p ? in.p : "";
	inv.stdin_len = in.len;

	code = cni_dispatch(&inv, &out);
	if (code == CNI_EXIT_OOM) {
		code = 1;
		out.len = 0;
		if (write_all(STDOUT_FILENO, oom, sizeof(oom) - 1) < 0)
			cni_debug("cannot write stdout: %s", strerror(errno));
	} else if (write_all(STDOUT_FILENO, out.p ? out.p : "", out.len) < 0) {
		cni_debug("cannot write stdout: %s", strerror(errno));
		code = 1;
	}
	buf_free(&in);
	buf_free(&out);
	return code;
}
