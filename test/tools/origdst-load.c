/*
 * origdst-load: many concurrent captured connections, each with its own original destination,
 * and a stand-in proxy that checks what SO_ORIGINAL_DST answers for every one of them while all
 * are open. The load test of sluice's original-destination bookkeeping (bpf/lib/capture_maps.h).
 *
 * Build (from the repository root; `make all` does it):
 *
 *   cc -O2 -Wall -Wextra -Werror -o build/origdst-load test/tools/origdst-load.c
 *
 * Subcommands (run both in one captured pod, both in the cgroup sluice's programs attach to):
 *
 *   origdst-load proxy --count N [--port P (15001)] [--wait-stdin] [--timeout-s T (120)]
 *       Listens on 0.0.0.0:P and [::]:P (v6-only), prints "ready", and accepts N connections.
 *       For each it asks SO_ORIGINAL_DST (IPv6: IP6T_SO_ORIGINAL_DST) as soon as it is accepted,
 *       and reads the 8 bytes the client sent: family (4 or 6) and index, each a u32 in network
 *       order. Once it holds all N it prints {"proxy":true,"event":"accepted",...}; with
 *       --wait-stdin it then waits for a line (or EOF) on stdin, so that several pods' proxies
 *       check while every pod's connections are open. Then it asks every connection again,
 *       compares both answers with dest(family, index), prints one JSON line {"proxy":true,
 *       "event":"checked",...} and closes them all. Exit 0 when every answer was right both
 *       times, each (family, index) came once and no connection beyond N arrived.
 *   origdst-load client --count-v4 N4 --count-v6 N6 [--first-index K (0)] [--parallel C (256)]
 *       [--timeout-s T (120)]
 *       Connects N4 IPv4 and N6 IPv6 TCP sockets to dest(4, K..K+N4-1) and dest(6, K..K+N6-1),
 *       with at most C handshakes in flight, checks that getpeername shows that destination,
 *       sends family and index on each, prints {"client":true,"event":"open",...} once all are
 *       open, keeps them open until the proxy closes them, then prints {"client":true,
 *       "event":"done",...} and exits 0 when every connection opened, showed its destination
 *       and was closed by the proxy.
 *
 * dest(4, i) = 198.18.0.0 + i (RFC 2544's benchmarking range, never routed anywhere here),
 * dest(6, i) = 2001:db8::/96 + i (documentation range), port 10000 + i % 5000 for both: every
 * destination is distinct, and no port is one a sidecar leaves uncaptured (15001-15090).
 * Without capture the connects go nowhere and time out: the run fails.
 *
 * Both raise RLIMIT_NOFILE's soft limit to what they need: one process holds at most its hard
 * limit (20,000 on the test machines, without CAP_SYS_RESOURCE), so a larger load is several
 * pods, each a client and a proxy. The pod's ephemeral port range bounds connections per
 * family (28,232 with Linux's default range).
 * Timing and peak RSS are in the JSON lines; "ms" fields are wall-clock milliseconds.
 */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sock-util.h"

#define EXIT_USAGE 2
#define COUNT_MAX  100000L /* per family: 198.18.0.0/15 holds 131072 addresses */
#define PORT_BASE  10000
#define PORT_SPAN  5000
#define MSG_LEN	   8
#define EVENTS_MAX 1024
#define BAD_SHOWN  5  /* wrong answers quoted in the summary */
#define FD_SLACK   64 /* listeners, epoll, stdio */

static void usage(FILE *f)
{
	fputs("usage:\n"
	      "  origdst-load proxy --count N [--port P (15001)] [--wait-stdin] [--timeout-s T "
	      "(120)]\n"
	      "  origdst-load client --count-v4 N4 --count-v6 N6 [--first-index K (0)]\n"
	      "      [--parallel C (256)] [--timeout-s T (120)]\n"
	      "K + N4 and K + N6 at most 100000; see the header of test/tools/origdst-load.c.\n",
	      f);
}

static void usage_error(const char *msg, const char *arg)
{
	fprintf(stderr, "origdst-load: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
	usage(stderr);
	exit(EXIT_USAGE);
}

static long parse_long(const char *name, const char *s, long min, long max)
{
	char *end;

	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
		fprintf(stderr, "origdst-load: %s must be an integer in [%ld, %ld]: %s\n", name,
			min, max, s);
		exit(EXIT_USAGE);
	}
	return v;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long maxrss_kb(void)
{
	struct rusage ru;

	return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : -1;
}

/* Room for `n` descriptors: the soft limit raised, up to the hard one (CAP_SYS_RESOURCE could
 * raise that too, and is tried). */
static int raise_nofile(long n)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		fprintf(stderr, "origdst-load: getrlimit RLIMIT_NOFILE: %s\n", strerror(errno));
		return -1;
	}
	if (rl.rlim_cur >= (rlim_t)n)
		return 0;
	rl.rlim_cur = (rlim_t)n;
	if (rl.rlim_max < (rlim_t)n)
		rl.rlim_max = (rlim_t)n;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
		getrlimit(RLIMIT_NOFILE, &rl);
		fprintf(stderr, "origdst-load: RLIMIT_NOFILE to %ld (hard limit %llu): %s; use more processes\n",
			n, (unsigned long long)rl.rlim_max, strerror(errno));
		return -1;
	}
	return 0;
}

/* The destination the client connects to for (family, index). */
static void dest(int family, uint32_t i, struct sockaddr_storage *ss, socklen_t *len)
{
	uint16_t port = htons((uint16_t)(PORT_BASE + i % PORT_SPAN));

	memset(ss, 0, sizeof(*ss));
	if (family == 4) {
		struct sockaddr_in *in4 = (struct sockaddr_in *)ss;

		in4->sin_family = AF_INET;
		in4->sin_port = port;
		in4->sin_addr.s_addr = htonl((198u << 24 | 18u << 16) + i);
		*len = sizeof(*in4);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

		in6->sin6_family = AF_INET6;
		in6->sin6_port = port;
		in6->sin6_addr.s6_addr[0] = 0x20;
		in6->sin6_addr.s6_addr[1] = 0x01;
		in6->sin6_addr.s6_addr[2] = 0x0d;
		in6->sin6_addr.s6_addr[3] = 0xb8;
		in6->sin6_addr.s6_addr32[3] = htonl(i);
		*len = sizeof(*in6);
	}
}

static void format_addr(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in4 = (const void *)ss;
		inet_ntop(AF_INET, &in4->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(in4->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)ss;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(in6->sin6_port));
	} else {
		snprintf(buf, len, "family-%d", ss->ss_family);
	}
}

static int epoll_set(int ep, int op, int fd, uint32_t events, uint64_t data)
{
	struct epoll_event ev = {.events = events, .data.u64 = data};

	return epoll_ctl(ep, op, fd, &ev);
}

/* ------------------------------------------------------------------ */
/* proxy                                                               */
/* ------------------------------------------------------------------ */

struct pconn {
	int fd;
	int family;	/* AF_INET / AF_INET6 of the accepted socket */
	int err_accept; /* errno of the first SO_ORIGINAL_DST, 0 when answered */
	struct sockaddr_storage at_accept;
	uint8_t msg[MSG_LEN];
	int got; /* bytes of msg read */
};

struct proxy {
	long count;
	struct pconn *c;
	long accepted, messages, extra;
	int ep;
	int ls[2];
	char bad[BAD_SHOWN][200];
	int nbad;
};

/* Where the connection was going (get_orig_dst): 0, or the errno. */
static int orig_dst(int fd, int family, struct sockaddr_storage *ss)
{
	return get_orig_dst(fd, family, ss) < 0 ? errno : 0;
}

static int proxy_listen(int family, long port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int one = 1;
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		len = sizeof(*in4);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		len = sizeof(*in6);
	}
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    (family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
	    bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 65535) < 0) {
		fprintf(stderr, "origdst-load proxy: listen on %s port %ld: %s\n",
			family == AF_INET ? "0.0.0.0" : "[::]", port, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* A wrong answer: counted, the first few quoted. */
static void proxy_note_bad(struct proxy *p, const char *what, const char *want, const char *got)
{
	if (p->nbad < BAD_SHOWN)
		snprintf(p->bad[p->nbad], sizeof(p->bad[0]), "%s: want %s, got %s", what, want, got);
	p->nbad++;
}

static void proxy_accept_some(struct proxy *p, int lfd)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return; /* EAGAIN: drained; anything else: the next round retries */
		if (p->accepted >= p->count) {
			p->extra++;
			close(fd);
			continue;
		}
		struct pconn *c = &p->c[p->accepted];
		c->fd = fd;
		c->family = lfd == p->ls[0] ? AF_INET : AF_INET6;
		c->err_accept = orig_dst(fd, c->family, &c->at_accept);
		if (epoll_set(p->ep, EPOLL_CTL_ADD, fd, EPOLLIN, (uint64_t)p->accepted + 2) < 0) {
			fprintf(stderr, "origdst-load proxy: epoll add: %s\n", strerror(errno));
			exit(1);
		}
		p->accepted++;
	}
}

static void proxy_read(struct proxy *p, struct pconn *c)
{
	ssize_t n = read(c->fd, c->msg + c->got, (size_t)(MSG_LEN - c->got));

	if (n > 0)
		c->got += (int)n;
	if (c->got == MSG_LEN || n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		/* done with this one (a short message shows as wrong in the check) */
		epoll_ctl(p->ep, EPOLL_CTL_DEL, c->fd, NULL);
		p->messages++;
	}
}

/* Every connection: the family and index it carries, its two answers, each (family, index) once. */
static long proxy_check(struct proxy *p, long *ok_accept, long *ok_end, long *dup)
{
	uint8_t *seen[2] = {calloc((size_t)COUNT_MAX, 1), calloc((size_t)COUNT_MAX, 1)};
	char want_s[64], got_s[80];
	long ok = 0;

	if (!seen[0] || !seen[1]) {
		fprintf(stderr, "origdst-load proxy: out of memory\n");
		exit(1);
	}
	*ok_accept = *ok_end = *dup = 0;
	for (long k = 0; k < p->accepted; k++) {
		struct pconn *c = &p->c[k];
		struct sockaddr_storage want, at_end;
		socklen_t wlen;
		uint32_t fam, idx;

		memcpy(&fam, c->msg, 4);
		memcpy(&idx, c->msg + 4, 4);
		fam = ntohl(fam);
		idx = ntohl(idx);
		if (c->got != MSG_LEN || (fam != 4 && fam != 6) || idx >= COUNT_MAX ||
		    (int)(fam == 4 ? AF_INET : AF_INET6) != c->family) {
			snprintf(got_s, sizeof(got_s), "%d bytes, family %u, index %u", c->got, fam,
				 idx);
			proxy_note_bad(p, "message", "family and index", got_s);
			continue;
		}
		if (seen[fam == 6][idx]++)
			(*dup)++;
		dest((int)fam, idx, &want, &wlen);
		format_addr(&want, want_s, sizeof(want_s));
		bool a = c->err_accept == 0 && same_sockaddr(&c->at_accept, &want);
		int err_end = orig_dst(c->fd, c->family, &at_end);
		bool e = err_end == 0 && same_sockaddr(&at_end, &want);
		*ok_accept += a;
		*ok_end += e;
		ok += a && e;
		if (!a) {
			if (c->err_accept)
				snprintf(got_s, sizeof(got_s), "ERR:%d", c->err_accept);
			else
				format_addr(&c->at_accept, got_s, sizeof(got_s));
			proxy_note_bad(p, "at accept", want_s, got_s);
		}
		if (!e) {
			if (err_end)
				snprintf(got_s, sizeof(got_s), "ERR:%d", err_end);
			else
				format_addr(&at_end, got_s, sizeof(got_s));
			proxy_note_bad(p, "with all open", want_s, got_s);
		}
	}
	free(seen[0]);
	free(seen[1]);
	return ok;
}

/* --wait-stdin: a line or EOF on stdin, or the deadline. */
static void proxy_wait_stdin(int64_t deadline)
{
	struct pollfd pfd = {.fd = 0, .events = POLLIN};
	char line[64];

	while (now_ms() < deadline) {
		int r = poll(&pfd, 1, 200);
		if (r > 0) {
			if (read(0, line, sizeof(line)) <= 0 || memchr(line, '\n', sizeof(line)))
				return;
		} else if (r < 0 && errno != EINTR) {
			return;
		}
	}
}

static int run_proxy(long count, long port, bool wait_stdin, long timeout_s)
{
	struct proxy p = {.count = count};
	struct epoll_event evs[EVENTS_MAX];
	int64_t start, deadline, all_open = 0;

	if (raise_nofile(count + FD_SLACK) < 0)
		return 1;
	p.c = calloc((size_t)count, sizeof(*p.c));
	p.ep = epoll_create1(EPOLL_CLOEXEC);
	if (!p.c || p.ep < 0) {
		fprintf(stderr, "origdst-load proxy: setup: %s\n", strerror(errno));
		return 1;
	}
	for (int f = 0; f < 2; f++) {
		p.ls[f] = proxy_listen(f == 0 ? AF_INET : AF_INET6, port);
		if (p.ls[f] < 0 || epoll_set(p.ep, EPOLL_CTL_ADD, p.ls[f], EPOLLIN, (uint64_t)f) < 0)
			return 1;
	}
	printf("ready\n");
	fflush(stdout);
	start = 0;
	deadline = now_ms() + timeout_s * 1000;
	while ((p.accepted < count || p.messages < count) && now_ms() < deadline) {
		int n = epoll_wait(p.ep, evs, EVENTS_MAX, 200);
		if (n < 0 && errno != EINTR) {
			fprintf(stderr, "origdst-load proxy: epoll_wait: %s\n", strerror(errno));
			return 1;
		}
		for (int i = 0; i < n; i++) {
			uint64_t d = evs[i].data.u64;
			if (d < 2) {
				if (start == 0)
					start = now_ms();
				proxy_accept_some(&p, p.ls[d]);
			} else {
				proxy_read(&p, &p.c[d - 2]);
			}
		}
	}
	all_open = now_ms();
	printf("{\"proxy\":true,\"event\":\"accepted\",\"accepted\":%ld,\"messages\":%ld,\"accept_"
	       "ms\":%lld}\n",
	       p.accepted, p.messages, (long long)(start ? all_open - start : 0));
	fflush(stdout);
	if (wait_stdin)
		proxy_wait_stdin(deadline);
	int64_t check_start = now_ms();
	long ok_accept, ok_end, dup;
	long ok = proxy_check(&p, &ok_accept, &ok_end, &dup);
	int64_t checked = now_ms();

	/* connections beyond N that arrived while waiting count as extra */
	proxy_accept_some(&p, p.ls[0]);
	proxy_accept_some(&p, p.ls[1]);
	printf("{\"proxy\":true,\"event\":\"checked\",\"count\":%ld,\"accepted\":%ld,\"messages\":%"
	       "ld,"
	       "\"extra\":%ld,\"ok\":%ld,\"ok_at_accept\":%ld,\"ok_all_open\":%ld,\"duplicates\":%"
	       "ld,"
	       "\"accept_ms\":%lld,\"check_ms\":%lld,\"maxrss_kb\":%ld,\"bad\":[",
	       count, p.accepted, p.messages, p.extra, ok, ok_accept, ok_end, dup,
	       (long long)(start ? all_open - start : 0), (long long)(checked - check_start),
	       maxrss_kb());
	for (int i = 0; i < p.nbad && i < BAD_SHOWN; i++)
		printf("%s\"%s\"", i ? "," : "", p.bad[i]);
	printf("],\"bad_count\":%d}\n", p.nbad);
	fflush(stdout);
	for (long k = 0; k < p.accepted; k++)
		close(p.c[k].fd);
	return ok == count && p.accepted == count && dup == 0 && p.extra == 0 ? 0 : 1;
}

/* ------------------------------------------------------------------ */
/* client                                                              */
/* ------------------------------------------------------------------ */

enum cstate { C_IDLE, C_CONNECTING, C_OPEN, C_CLOSED, C_FAILED };

struct cconn {
	int fd;
	uint8_t state;
};

struct client {
	long n4, n6, count, first, parallel;
	struct cconn *c;
	long next, inflight, open, failed, closed, peer_bad;
	int first_errno;
	int ep;
};

static void client_fail(struct client *cl, struct cconn *c, int err)
{
	if (cl->first_errno == 0)
		cl->first_errno = err;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->state = C_FAILED;
	cl->failed++;
}

static void client_family_index(const struct client *cl, long k, int *family, uint32_t *idx)
{
	*family = k < cl->n4 ? 4 : 6;
	*idx = (uint32_t)(cl->first + (k < cl->n4 ? k : k - cl->n4));
}

static void client_start(struct client *cl, long k)
{
	struct cconn *c = &cl->c[k];
	struct sockaddr_storage ss;
	socklen_t len;
	int family;
	uint32_t idx;

	client_family_index(cl, k, &family, &idx);
	dest(family, idx, &ss, &len);
	c->fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		       0);
	if (c->fd < 0) {
		client_fail(cl, c, errno);
		return;
	}
	if (connect(c->fd, (struct sockaddr *)&ss, len) < 0 && errno != EINPROGRESS) {
		client_fail(cl, c, errno);
		return;
	}
	if (epoll_set(cl->ep, EPOLL_CTL_ADD, c->fd, EPOLLOUT, (uint64_t)k) < 0) {
		client_fail(cl, c, errno);
		return;
	}
	c->state = C_CONNECTING;
	cl->inflight++;
}

/* Connected (or not): check the peer the app sees, send family and index, wait for EOF. */
static void client_connected(struct client *cl, long k)
{
	struct cconn *c = &cl->c[k];
	struct sockaddr_storage want, peer;
	socklen_t wlen, plen = sizeof(peer);
	int err = 0, family;
	socklen_t elen = sizeof(err);
	uint32_t idx, msg[2];

	cl->inflight--;
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
		err = errno;
	if (err) {
		client_fail(cl, c, err);
		return;
	}
	client_family_index(cl, k, &family, &idx);
	dest(family, idx, &want, &wlen);
	if (getpeername(c->fd, (struct sockaddr *)&peer, &plen) < 0 || !same_sockaddr(&peer, &want))
		cl->peer_bad++;
	msg[0] = htonl((uint32_t)family);
	msg[1] = htonl(idx);
	if (send(c->fd, msg, sizeof(msg), MSG_NOSIGNAL) != (ssize_t)sizeof(msg)) {
		client_fail(cl, c, errno ? errno : EIO);
		return;
	}
	if (epoll_set(cl->ep, EPOLL_CTL_MOD, c->fd, EPOLLIN | EPOLLRDHUP, (uint64_t)k) < 0) {
		client_fail(cl, c, errno);
		return;
	}
	c->state = C_OPEN;
	cl->open++;
}

static void client_readable(struct client *cl, long k)
{
	struct cconn *c = &cl->c[k];
	char buf[64];
	ssize_t n = read(c->fd, buf, sizeof(buf));

	if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR)))
		return; /* the proxy sends nothing; keep waiting for its close */
	close(c->fd);
	c->fd = -1;
	c->state = C_CLOSED;
	cl->closed++;
}

static int run_client(long n4, long n6, long first, long parallel, long timeout_s)
{
	struct client cl = {
		.n4 = n4, .n6 = n6, .count = n4 + n6, .first = first, .parallel = parallel};
	struct epoll_event evs[EVENTS_MAX];
	int64_t start = now_ms(), deadline = start + timeout_s * 1000, opened = 0;

	if (cl.count == 0)
		usage_error("nothing to connect: --count-v4 and --count-v6 are both 0", NULL);
	if (raise_nofile(cl.count + FD_SLACK) < 0)
		return 1;
	cl.c = calloc((size_t)cl.count, sizeof(*cl.c));
	cl.ep = epoll_create1(EPOLL_CLOEXEC);
	if (!cl.c || cl.ep < 0) {
		fprintf(stderr, "origdst-load client: setup: %s\n", strerror(errno));
		return 1;
	}
	while (cl.closed + cl.failed < cl.count && now_ms() < deadline) {
		while (cl.next < cl.count && cl.inflight < cl.parallel)
			client_start(&cl, cl.next++);
		if (!opened && cl.open + cl.failed == cl.count) {
			opened = now_ms();
			printf("{\"client\":true,\"event\":\"open\",\"open\":%ld,\"failed\":%ld,"
			       "\"connect_ms\":%lld}\n",
			       cl.open, cl.failed, (long long)(opened - start));
			fflush(stdout);
		}
		int n = epoll_wait(cl.ep, evs, EVENTS_MAX, 200);
		if (n < 0 && errno != EINTR) {
			fprintf(stderr, "origdst-load client: epoll_wait: %s\n", strerror(errno));
			return 1;
		}
		for (int i = 0; i < n; i++) {
			long k = (long)evs[i].data.u64;
			if (cl.c[k].state == C_CONNECTING)
				client_connected(&cl, k);
			else if (cl.c[k].state == C_OPEN)
				client_readable(&cl, k);
		}
	}
	long unfinished = cl.count - cl.closed - cl.failed;
	printf("{\"client\":true,\"event\":\"done\",\"count\":%ld,\"opened\":%ld,\"failed\":%ld,"
	       "\"first_errno\":%d,"
	       "\"peer_mismatch\":%ld,\"closed_by_proxy\":%ld,\"unfinished\":%ld,\"connect_ms\":%"
	       "lld,"
	       "\"total_ms\":%lld,\"maxrss_kb\":%ld}\n",
	       cl.count, cl.open, cl.failed, cl.first_errno, cl.peer_bad, cl.closed, unfinished,
	       (long long)(opened ? opened - start : -1), (long long)(now_ms() - start), maxrss_kb());
	fflush(stdout);
	return cl.open == cl.count && cl.closed == cl.count && cl.peer_bad == 0 ? 0 : 1;
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	long count = -1, port = 15001, timeout_s = 120, n4 = -1, n6 = -1, first = 0, parallel = 256;
	bool wait_stdin = false;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2)
		usage_error("missing subcommand", NULL);
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	bool proxy = strcmp(argv[1], "proxy") == 0;
	if (!proxy && strcmp(argv[1], "client") != 0)
		usage_error("unknown subcommand", argv[1]);
	for (int i = 2; i < argc; i++) {
		const char *o = argv[i];
		if (proxy && strcmp(o, "--wait-stdin") == 0) {
			wait_stdin = true;
			continue;
		}
		if (i + 1 >= argc)
			usage_error("option without a value", o);
		const char *v = argv[++i];
		if (proxy && strcmp(o, "--count") == 0)
			count = parse_long(o, v, 1, 2 * COUNT_MAX);
		else if (proxy && strcmp(o, "--port") == 0)
			port = parse_long(o, v, 1, 65535);
		else if (!proxy && strcmp(o, "--count-v4") == 0)
			n4 = parse_long(o, v, 0, COUNT_MAX);
		else if (!proxy && strcmp(o, "--count-v6") == 0)
			n6 = parse_long(o, v, 0, COUNT_MAX);
		else if (!proxy && strcmp(o, "--first-index") == 0)
			first = parse_long(o, v, 0, COUNT_MAX);
		else if (!proxy && strcmp(o, "--parallel") == 0)
			parallel = parse_long(o, v, 1, 65536);
		else if (strcmp(o, "--timeout-s") == 0)
			timeout_s = parse_long(o, v, 1, 3600);
		else
			usage_error("unknown option", o);
	}
	if (proxy) {
		if (count < 0)
			usage_error("proxy needs --count", NULL);
		return run_proxy(count, port, wait_stdin, timeout_s);
	}
	if (n4 < 0 || n6 < 0)
		usage_error("client needs --count-v4 and --count-v6", NULL);
	if (first + n4 > COUNT_MAX || first + n6 > COUNT_MAX)
		usage_error("--first-index plus a family's count exceeds 100000", NULL);
	return run_client(n4, n6, first, parallel, timeout_s);
}
