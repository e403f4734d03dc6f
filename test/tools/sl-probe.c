/*
 * sl-probe: traffic client/server for the sluice kernel tests and benchmark.
 *
 * Build (from the repository root):
 *
 *   cc -O2 -Wall -Wextra -pthread -o build/sl-probe test/tools/sl-probe.c
 *
 * -pthread is needed because `bench --concurrency C` runs C worker threads.
 * Only libc (and libpthread, which is part of libc on current glibc) is used.
 *
 * Subcommands:
 *   serve    answer every TCP connection / UDP datagram with one line that
 *            names the server instance and both ends of the flow, so a test
 *            can see which backend was chosen and what addresses it saw.
 *   connect  make N attempts and print one JSON object per attempt plus a
 *            summary line; exit status says whether all attempts succeeded.
 *   bench    measure TCP connection setup latency and connection rate.
 *
 * Output goes to stdout, line-buffered, so a test harness reading a pipe sees
 * every line (in particular `ready`) as soon as it is printed.
 */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE 2
#define ID_MAX 64
#define REPLY_MAX 512
#define PEER_MAX (INET6_ADDRSTRLEN + 16)
#define COUNT_MAX 1000000L
#define MS_MAX 3600000L
/* How long serve blocks in poll() before re-checking the stop flag; this
 * closes the race where a signal lands just before a blocking call. */
#define SERVE_POLL_MS 200
/* A server line is < 200 bytes, so a handful of reads always reaches EOF. */
#define BENCH_MAX_READS 64
#define DRAIN_MAX_READS 4

/* Set by the SIGTERM/SIGINT handler; the only global mutable state. */
static volatile sig_atomic_t g_stop;

struct target {
	struct sockaddr_storage ss;
	socklen_t len;
};

enum cmd { CMD_SERVE = 1, CMD_CONNECT = 2, CMD_BENCH = 4 };

struct opts {
	const char *proto;
	const char *addr;
	const char *id;
	const char *udp_mode;
	long port;
	long count;
	long interval_ms;
	long timeout_ms;
	long warmup;
	long concurrency;
	bool same_socket;
};

enum optkind { OPT_STR, OPT_LONG, OPT_FLAG };

struct optdef {
	const char *name;
	unsigned cmds; /* subcommands that accept this option */
	enum optkind kind;
	size_t off;    /* field in struct opts */
	long min, max; /* range for OPT_LONG */
};

#define ALL_CMDS (CMD_SERVE | CMD_CONNECT | CMD_BENCH)
#define OFF(f) offsetof(struct opts, f)

static const struct optdef optdefs[] = {
	{ "--proto", CMD_SERVE | CMD_CONNECT, OPT_STR, OFF(proto), 0, 0 },
	{ "--addr", ALL_CMDS, OPT_STR, OFF(addr), 0, 0 },
	{ "--port", ALL_CMDS, OPT_LONG, OFF(port), 1, 65535 },
	{ "--id", CMD_SERVE, OPT_STR, OFF(id), 0, 0 },
	{ "--count", CMD_CONNECT | CMD_BENCH, OPT_LONG, OFF(count), 1, COUNT_MAX },
	{ "--interval-ms", CMD_CONNECT, OPT_LONG, OFF(interval_ms), 0, MS_MAX },
	{ "--timeout-ms", CMD_CONNECT | CMD_BENCH, OPT_LONG, OFF(timeout_ms), 1, MS_MAX },
	{ "--udp-mode", CMD_CONNECT, OPT_STR, OFF(udp_mode), 0, 0 },
	{ "--same-socket", CMD_CONNECT, OPT_FLAG, OFF(same_socket), 0, 0 },
	{ "--warmup", CMD_BENCH, OPT_LONG, OFF(warmup), 0, COUNT_MAX },
	{ "--concurrency", CMD_BENCH, OPT_LONG, OFF(concurrency), 1, 1024 },
};

#define N_OPTDEFS (sizeof(optdefs) / sizeof(optdefs[0]))

/* ------------------------------------------------------------------ */
/* Usage and argument parsing                                          */
/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fputs("usage:\n"
	      "  sl-probe serve --proto tcp|udp --addr ADDR --port PORT --id ID\n"
	      "      Serve until SIGTERM/SIGINT; prints 'ready' once bound.\n"
	      "      Each TCP connection / UDP datagram gets the line\n"
	      "      'ID PEERADDR PEERPORT LOCALADDR LOCALPORT'.\n"
	      "  sl-probe connect --proto tcp|udp --addr ADDR --port PORT\n"
	      "      [--count N (1)] [--interval-ms M (0)] [--timeout-ms T (1000)]\n"
	      "      [--udp-mode connected|unconnected (connected)] [--same-socket]\n"
	      "      One JSON line per attempt, then a summary line.\n"
	      "      --same-socket reuses one UDP socket for all attempts.\n"
	      "      Exit 0 if all attempts succeeded, 1 otherwise.\n"
	      "  sl-probe bench --addr ADDR --port PORT [--count N (2000)]\n"
	      "      [--warmup W (200)] [--concurrency C (1)] [--timeout-ms T (5000)]\n"
	      "      TCP connect latency / connection rate against 'serve'.\n"
	      "      Exit 0 if no operation failed, 1 otherwise.\n"
	      "  sl-probe --help\n"
	      "ADDR is an IPv4 or IPv6 literal. Bad arguments exit with status 2.\n",
	      f);
}

static void usage_error(const char *msg, const char *arg)
{
	if (arg)
		fprintf(stderr, "sl-probe: %s: %s\n", msg, arg);
	else
		fprintf(stderr, "sl-probe: %s\n", msg);
	fputs("try 'sl-probe --help'\n", stderr);
	exit(EXIT_USAGE);
}

static bool is_help(const char *s)
{
	return strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0;
}

static long parse_long(const char *name, const char *s, long min, long max)
{
	char *end;

	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
		fprintf(stderr, "sl-probe: %s must be an integer in [%ld, %ld]: %s\n",
			name, min, max, s);
		exit(EXIT_USAGE);
	}
	return v;
}

static const struct optdef *find_optdef(const char *name)
{
	for (size_t i = 0; i < N_OPTDEFS; i++)
		if (strcmp(optdefs[i].name, name) == 0)
			return &optdefs[i];
	return NULL;
}

static void set_defaults(enum cmd cmd, struct opts *o)
{
	memset(o, 0, sizeof(*o));
	o->port = -1;
	o->udp_mode = "connected";
	o->count = cmd == CMD_BENCH ? 2000 : 1;
	/* bench uses blocking connect(); its timeout only guards against hangs */
	o->timeout_ms = cmd == CMD_BENCH ? 5000 : 1000;
	o->warmup = 200;
	o->concurrency = 1;
}

static void apply_option(const struct optdef *d, const char *val, struct opts *o)
{
	char *field = (char *)o + d->off;

	switch (d->kind) {
	case OPT_STR:
		*(const char **)field = val;
		break;
	case OPT_LONG:
		*(long *)field = parse_long(d->name, val, d->min, d->max);
		break;
	case OPT_FLAG:
		*(bool *)field = true;
		break;
	}
}

static void validate_opts(enum cmd cmd, const struct opts *o)
{
	if (!o->addr)
		usage_error("missing --addr", NULL);
	if (o->port < 0)
		usage_error("missing --port", NULL);
	if (cmd != CMD_BENCH) {
		if (!o->proto)
			usage_error("missing --proto", NULL);
		if (strcmp(o->proto, "tcp") != 0 && strcmp(o->proto, "udp") != 0)
			usage_error("--proto must be tcp or udp", o->proto);
	}
	if (cmd == CMD_SERVE) {
		if (!o->id)
			usage_error("missing --id", NULL);
		/* The id is the first field of a space-separated reply line. */
		size_t n = strlen(o->id);
		if (n == 0 || n > ID_MAX || strpbrk(o->id, " \t\r\n") != NULL)
			usage_error("--id must be 1-64 chars without whitespace", o->id);
	}
	if (cmd == CMD_CONNECT && strcmp(o->udp_mode, "connected") != 0 &&
	    strcmp(o->udp_mode, "unconnected") != 0)
		usage_error("--udp-mode must be connected or unconnected", o->udp_mode);
}

static void parse_opts(enum cmd cmd, int argc, char **argv, struct opts *o)
{
	set_defaults(cmd, o);
	for (int i = 0; i < argc; i++) {
		if (is_help(argv[i])) {
			usage(stdout);
			exit(0);
		}
		const struct optdef *d = find_optdef(argv[i]);
		if (!d || !(d->cmds & cmd))
			usage_error("unknown option for this subcommand", argv[i]);
		const char *val = NULL;
		if (d->kind != OPT_FLAG) {
			if (i + 1 >= argc)
				usage_error("option needs a value", argv[i]);
			val = argv[++i];
		}
		apply_option(d, val, o);
	}
	validate_opts(cmd, o);
}

/* inet_pton accepts only literals, so no DNS lookups can sneak in. */
static bool parse_target(const char *addr, long port, struct target *t)
{
	memset(t, 0, sizeof(*t));
	struct sockaddr_in *in4 = (struct sockaddr_in *)&t->ss;
	if (inet_pton(AF_INET, addr, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons((unsigned short)port);
		t->len = sizeof(*in4);
		return true;
	}
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&t->ss;
	if (inet_pton(AF_INET6, addr, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((unsigned short)port);
		t->len = sizeof(*in6);
		return true;
	}
	return false;
}

/* ------------------------------------------------------------------ */
/* Small shared helpers                                                */
/* ------------------------------------------------------------------ */

/* Host part in inet_ntop form plus host-order port. */
static bool format_host(const struct sockaddr_storage *ss, char *host, size_t hostlen,
			unsigned *port)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in4 = (const struct sockaddr_in *)ss;
		*port = ntohs(in4->sin_port);
		return inet_ntop(AF_INET, &in4->sin_addr, host, (socklen_t)hostlen) != NULL;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
		*port = ntohs(in6->sin6_port);
		return inet_ntop(AF_INET6, &in6->sin6_addr, host, (socklen_t)hostlen) != NULL;
	}
	return false;
}

/* "ADDR:PORT" for IPv4, "[ADDR]:PORT" for IPv6 (so the port is unambiguous). */
static void format_peer(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];
	unsigned port;

	if (!format_host(ss, host, sizeof(host), &port))
		snprintf(buf, len, "?");
	else if (ss->ss_family == AF_INET6)
		snprintf(buf, len, "[%s]:%u", host, port);
	else
		snprintf(buf, len, "%s:%u", host, port);
}

static struct timeval ms_to_timeval(long ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
	return tv;
}

static int set_timeout(int fd, int optname, long ms)
{
	struct timeval tv = ms_to_timeval(ms);
	return setsockopt(fd, SOL_SOCKET, optname, &tv, sizeof(tv));
}

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* JSON string literal; server replies are untrusted bytes, so escape all. */
static void print_json_string(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

/* ------------------------------------------------------------------ */
/* serve                                                               */
/* ------------------------------------------------------------------ */

static void on_stop_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

static int install_signal_handlers(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	/* no SA_RESTART: blocking calls should return EINTR so we notice */
	if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
		return -1;
	/* a client that vanishes must not kill the server */
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

static int serve_fail(const char *what, int fd)
{
	fprintf(stderr, "sl-probe serve: %s: %s\n", what, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

/* Non-blocking so a connection that disappears between poll() and
 * accept() cannot wedge the loop (and thus the stop flag check). */
static int open_server_socket(const struct target *t, int type)
{
	int one = 1;
	int fd = socket(t->ss.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return serve_fail("socket", -1);
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		return serve_fail("SO_REUSEADDR", fd);
	/* v6-only so an IPv6 server never silently captures IPv4 traffic */
	if (t->ss.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
		return serve_fail("IPV6_V6ONLY", fd);
	if (bind(fd, (const struct sockaddr *)&t->ss, t->len) < 0)
		return serve_fail("bind", fd);
	if (type == SOCK_STREAM && listen(fd, SOMAXCONN) < 0)
		return serve_fail("listen", fd);
	return fd;
}

/* Returns 1 if readable, 0 on timeout or signal, -1 on error. */
static int wait_readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int r = poll(&p, 1, SERVE_POLL_MS);

	if (r < 0)
		return errno == EINTR ? 0 : -1;
	return r > 0 ? 1 : 0;
}

static int format_server_line(char *buf, size_t len, const char *id,
			      const struct sockaddr_storage *peer,
			      const struct sockaddr_storage *local)
{
	char phost[INET6_ADDRSTRLEN], lhost[INET6_ADDRSTRLEN];
	unsigned pport, lport;

	if (!format_host(peer, phost, sizeof(phost), &pport) ||
	    !format_host(local, lhost, sizeof(lhost), &lport))
		return -1;
	int n = snprintf(buf, len, "%s %s %u %s %u\n", id, phost, pport, lhost, lport);
	return (n < 0 || (size_t)n >= len) ? -1 : n;
}

static void serve_tcp_conn(int cfd, const char *id, const struct sockaddr_storage *peer)
{
	struct sockaddr_storage local;
	socklen_t llen = sizeof(local);
	char line[REPLY_MAX];
	char scratch[REPLY_MAX];

	if (getsockname(cfd, (struct sockaddr *)&local, &llen) == 0) {
		int n = format_server_line(line, sizeof(line), id, peer, &local);
		if (n > 0)
			(void)send(cfd, line, (size_t)n, MSG_NOSIGNAL);
	}
	shutdown(cfd, SHUT_WR);
	/* Eat anything the client already sent: closing with unread data
	 * makes the kernel send RST instead of FIN. */
	for (int i = 0; i < DRAIN_MAX_READS; i++)
		if (recv(cfd, scratch, sizeof(scratch), MSG_DONTWAIT) <= 0)
			break;
	close(cfd);
}

static int serve_tcp(int lfd, const char *id)
{
	while (!g_stop) {
		int r = wait_readable(lfd);
		if (r < 0)
			return serve_fail("poll", -1);
		if (r == 0)
			continue;
		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);
		int cfd = accept4(lfd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
		if (cfd < 0)
			continue; /* EAGAIN/EINTR/ECONNABORTED etc.: try again */
		serve_tcp_conn(cfd, id, &peer);
	}
	return 0;
}

static int serve_udp(int fd, const char *id)
{
	struct sockaddr_storage local;
	socklen_t llen = sizeof(local);
	char buf[2048];
	char line[REPLY_MAX];

	/* LOCAL in the reply is the bound address, read back once */
	if (getsockname(fd, (struct sockaddr *)&local, &llen) < 0)
		return serve_fail("getsockname", -1);
	while (!g_stop) {
		int r = wait_readable(fd);
		if (r < 0)
			return serve_fail("poll", -1);
		if (r == 0)
			continue;
		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);
		ssize_t got = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&peer, &plen);
		if (got < 0)
			continue; /* EAGAIN, or an ICMP error from an earlier reply */
		int n = format_server_line(line, sizeof(line), id, &peer, &local);
		if (n > 0)
			(void)sendto(fd, line, (size_t)n, 0, (struct sockaddr *)&peer, plen);
	}
	return 0;
}

static int run_serve(const struct opts *o, const struct target *t)
{
	bool tcp = strcmp(o->proto, "tcp") == 0;

	if (install_signal_handlers() < 0) {
		serve_fail("sigaction", -1);
		return 1;
	}
	int fd = open_server_socket(t, tcp ? SOCK_STREAM : SOCK_DGRAM);
	if (fd < 0)
		return 1;
	printf("ready\n");
	int rc = tcp ? serve_tcp(fd, o->id) : serve_udp(fd, o->id);
	close(fd);
	return rc < 0 ? 1 : 0;
}

/* ------------------------------------------------------------------ */
/* connect                                                             */
/* ------------------------------------------------------------------ */

struct attempt {
	bool ok;
	int err;
	const char *stage;
	char reply[REPLY_MAX];
	char peer[PEER_MAX];
};

/* Record errno at the failing stage; returns false for tail calls. */
static bool attempt_fail(struct attempt *a, const char *stage)
{
	a->ok = false;
	a->err = errno;
	a->stage = stage;
	return false;
}

static void strip_line_end(char *s)
{
	s[strcspn(s, "\r\n")] = '\0';
}

/* Non-blocking connect + poll so the timeout is ours, not the kernel's
 * SYN retry schedule (which is minutes). */
static int connect_with_timeout(int fd, const struct target *t, long timeout_ms)
{
	if (connect(fd, (const struct sockaddr *)&t->ss, t->len) == 0)
		return 0;
	if (errno != EINPROGRESS)
		return -1;
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	int r = poll(&p, 1, (int)timeout_ms);
	if (r < 0)
		return -1;
	if (r == 0) {
		errno = ETIMEDOUT;
		return -1;
	}
	int soerr = 0;
	socklen_t sl = sizeof(soerr);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		return -1;
	if (soerr != 0) {
		errno = soerr;
		return -1;
	}
	return 0;
}

static int set_blocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
}

/* Read until newline, EOF or full buffer. Every iteration consumes at least
 * one byte or returns, so the loop is bounded by the buffer size.
 * An empty reply (EOF before any byte) is reported as ENODATA. */
static int read_line(int fd, char *buf, size_t len)
{
	size_t used = 0;

	while (used + 1 < len) {
		ssize_t n = recv(fd, buf + used, len - 1 - used, 0);
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		used += (size_t)n;
		if (memchr(buf + used - (size_t)n, '\n', (size_t)n))
			break;
	}
	buf[used] = '\0';
	if (used == 0) {
		errno = ENODATA;
		return -1;
	}
	return 0;
}

static bool tcp_attempt_on(int fd, const struct target *t, long timeout_ms, struct attempt *a)
{
	if (connect_with_timeout(fd, t, timeout_ms) < 0)
		return attempt_fail(a, "connect");
	if (set_blocking(fd) < 0 || set_timeout(fd, SO_RCVTIMEO, timeout_ms) < 0)
		return attempt_fail(a, "socket");
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);
	if (getpeername(fd, (struct sockaddr *)&peer, &plen) < 0)
		return attempt_fail(a, "getpeername");
	format_peer(&peer, a->peer, sizeof(a->peer));
	if (read_line(fd, a->reply, sizeof(a->reply)) < 0)
		return attempt_fail(a, "recv");
	strip_line_end(a->reply);
	a->ok = true;
	return true;
}

static bool tcp_attempt(const struct target *t, long timeout_ms, struct attempt *a)
{
	int fd = socket(t->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return attempt_fail(a, "socket");
	bool ok = tcp_attempt_on(fd, t, timeout_ms, a);
	close(fd);
	return ok;
}

static int open_udp_client(const struct target *t, long timeout_ms)
{
	int fd = socket(t->ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (set_timeout(fd, SO_RCVTIMEO, timeout_ms) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static bool udp_recv_reply(int fd, struct attempt *a, struct sockaddr_storage *src,
			   socklen_t *srclen)
{
	ssize_t n = recvfrom(fd, a->reply, sizeof(a->reply) - 1, 0,
			     (struct sockaddr *)src, srclen);
	if (n < 0)
		return attempt_fail(a, "recv");
	a->reply[n] = '\0';
	strip_line_end(a->reply);
	return true;
}

/* Re-connecting an already connected UDP socket to the same address is
 * allowed and keeps its local port, so --same-socket needs no extra state. */
static bool udp_connected_attempt(int fd, const struct target *t, struct attempt *a)
{
	if (connect(fd, (const struct sockaddr *)&t->ss, t->len) < 0)
		return attempt_fail(a, "connect");
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);
	if (getpeername(fd, (struct sockaddr *)&peer, &plen) < 0)
		return attempt_fail(a, "getpeername");
	if (send(fd, "ping", 4, 0) < 0)
		return attempt_fail(a, "send");
	struct sockaddr_storage src;
	socklen_t slen = sizeof(src);
	if (!udp_recv_reply(fd, a, &src, &slen))
		return false;
	format_peer(&peer, a->peer, sizeof(a->peer));
	a->ok = true;
	return true;
}

/* The reply's source address is the point here: it shows whether replies
 * come back from the address the client sent to. */
static bool udp_unconnected_attempt(int fd, const struct target *t, struct attempt *a)
{
	if (sendto(fd, "ping", 4, 0, (const struct sockaddr *)&t->ss, t->len) < 0)
		return attempt_fail(a, "send");
	struct sockaddr_storage src;
	socklen_t slen = sizeof(src);
	if (!udp_recv_reply(fd, a, &src, &slen))
		return false;
	format_peer(&src, a->peer, sizeof(a->peer));
	a->ok = true;
	return true;
}

/* *shared_fd holds the socket kept across attempts with --same-socket. */
static bool udp_attempt(const struct opts *o, const struct target *t, int *shared_fd,
			struct attempt *a)
{
	int fd = o->same_socket ? *shared_fd : -1;

	if (fd < 0) {
		fd = open_udp_client(t, o->timeout_ms);
		if (fd < 0)
			return attempt_fail(a, "socket");
		if (o->same_socket)
			*shared_fd = fd;
	}
	bool ok = strcmp(o->udp_mode, "connected") == 0 ? udp_connected_attempt(fd, t, a)
							: udp_unconnected_attempt(fd, t, a);
	if (!o->same_socket)
		close(fd);
	return ok;
}

static void print_attempt(const struct attempt *a)
{
	if (a->ok) {
		printf("{\"ok\":true,\"reply\":");
		print_json_string(a->reply);
		printf(",\"peer\":");
		print_json_string(a->peer);
		printf("}\n");
	} else {
		printf("{\"ok\":false,\"errno\":%d,\"error\":", a->err);
		print_json_string(strerror(a->err));
		printf(",\"stage\":\"%s\"}\n", a->stage);
	}
}

static int run_connect(const struct opts *o, const struct target *t)
{
	bool tcp = strcmp(o->proto, "tcp") == 0;
	int shared_fd = -1;
	long ok = 0, failed = 0;

	for (long i = 0; i < o->count; i++) {
		if (i > 0 && o->interval_ms > 0)
			sleep_ms(o->interval_ms);
		struct attempt a;
		memset(&a, 0, sizeof(a));
		bool success = tcp ? tcp_attempt(t, o->timeout_ms, &a)
				   : udp_attempt(o, t, &shared_fd, &a);
		print_attempt(&a);
		if (success)
			ok++;
		else
			failed++;
	}
	if (shared_fd >= 0)
		close(shared_fd);
	printf("{\"summary\":true,\"ok\":%ld,\"failed\":%ld}\n", ok, failed);
	return failed == 0 ? 0 : 1;
}

/* ------------------------------------------------------------------ */
/* bench                                                               */
/* ------------------------------------------------------------------ */

struct bench_shared {
	const struct target *target;
	long timeout_ms;
	/* workers finish warmup, then all start measuring together */
	pthread_barrier_t start;
};

struct bench_worker {
	struct bench_shared *sh;
	pthread_t tid;
	long warmup;
	long count;
	double *connect_us; /* this worker's slice; first `ok` entries valid */
	double *op_us;
	long ok;
	long errors;
};

/* The server writes its line and closes; anything but data then EOF is an
 * error. Bounded by BENCH_MAX_READS. */
static bool read_until_eof(int fd)
{
	char buf[REPLY_MAX];
	size_t total = 0;

	for (int i = 0; i < BENCH_MAX_READS; i++) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0)
			return false;
		if (n == 0)
			return total > 0;
		total += (size_t)n;
	}
	return false;
}

/* One operation: socket, blocking connect, read to EOF, close.
 * SO_SNDTIMEO also bounds a blocking connect() on Linux. */
static bool bench_op(const struct bench_shared *sh, double *connect_us, double *op_us)
{
	const struct target *t = sh->target;
	double t0 = now_us();
	int fd = socket(t->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return false;
	if (set_timeout(fd, SO_SNDTIMEO, sh->timeout_ms) < 0 ||
	    set_timeout(fd, SO_RCVTIMEO, sh->timeout_ms) < 0 ||
	    connect(fd, (const struct sockaddr *)&t->ss, t->len) < 0) {
		close(fd);
		return false;
	}
	double t1 = now_us();
	bool ok = read_until_eof(fd);
	close(fd);
	double t2 = now_us();
	*connect_us = t1 - t0;
	*op_us = t2 - t0;
	return ok;
}

static void *bench_worker_main(void *arg)
{
	struct bench_worker *w = arg;
	double c, op;

	for (long i = 0; i < w->warmup; i++)
		(void)bench_op(w->sh, &c, &op);
	pthread_barrier_wait(&w->sh->start);
	for (long i = 0; i < w->count; i++) {
		if (bench_op(w->sh, &w->connect_us[w->ok], &w->op_us[w->ok]))
			w->ok++;
		else
			w->errors++;
	}
	return NULL;
}

/* Split `total` over `parts` so the shares add up exactly to `total`. */
static long share_of(long total, long parts, long i)
{
	return total / parts + (i < total % parts ? 1 : 0);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array; n must be > 0. */
static double percentile(const double *sorted, long n, long pct)
{
	long rank = (pct * n + 99) / 100;
	return sorted[rank > 0 ? rank - 1 : 0];
}

static void print_stat_field(const char *name, const double *sorted, long n, long pct)
{
	if (n > 0)
		printf("\"%s\":%.1f,", name, percentile(sorted, n, pct));
	else
		printf("\"%s\":null,", name);
}

/* Move each worker's valid samples into one contiguous prefix. Destination
 * never passes source, so memmove in place is safe. */
static long gather_samples(struct bench_worker *w, long nworkers, double *connect_us,
			   double *op_us)
{
	long n = 0;

	for (long i = 0; i < nworkers; i++) {
		memmove(connect_us + n, w[i].connect_us, (size_t)w[i].ok * sizeof(double));
		memmove(op_us + n, w[i].op_us, (size_t)w[i].ok * sizeof(double));
		n += w[i].ok;
	}
	return n;
}

static void print_bench_result(long count, long errors, double *connect_us, double *op_us,
			       long n, double elapsed_s)
{
	qsort(connect_us, (size_t)n, sizeof(double), cmp_double);
	qsort(op_us, (size_t)n, sizeof(double), cmp_double);
	printf("{\"count\":%ld,\"errors\":%ld,", count, errors);
	print_stat_field("connect_median_us", connect_us, n, 50);
	print_stat_field("connect_p99_us", connect_us, n, 99);
	print_stat_field("op_median_us", op_us, n, 50);
	print_stat_field("op_p99_us", op_us, n, 99);
	/* rate counts successful operations: fast failures are not throughput */
	double rate = elapsed_s > 0 ? (double)n / elapsed_s : 0.0;
	printf("\"rate_per_s\":%.1f,\"elapsed_s\":%.3f}\n", rate, elapsed_s);
}

static int run_bench(const struct opts *o, const struct target *t)
{
	long nw = o->concurrency;
	struct bench_shared sh = { .target = t, .timeout_ms = o->timeout_ms };
	double *connect_us = calloc((size_t)o->count, sizeof(double));
	double *op_us = calloc((size_t)o->count, sizeof(double));
	struct bench_worker *w = calloc((size_t)nw, sizeof(*w));

	if (!connect_us || !op_us || !w) {
		fprintf(stderr, "sl-probe bench: out of memory\n");
		return 1;
	}
	/* main joins the barrier too, so the clock starts after warmup */
	if (pthread_barrier_init(&sh.start, NULL, (unsigned)nw + 1) != 0) {
		fprintf(stderr, "sl-probe bench: pthread_barrier_init failed\n");
		return 1;
	}
	long offset = 0;
	for (long i = 0; i < nw; i++) {
		w[i].sh = &sh;
		w[i].warmup = share_of(o->warmup, nw, i);
		w[i].count = share_of(o->count, nw, i);
		w[i].connect_us = connect_us + offset;
		w[i].op_us = op_us + offset;
		offset += w[i].count;
		int err = pthread_create(&w[i].tid, NULL, bench_worker_main, &w[i]);
		if (err != 0) {
			/* earlier workers sit in the barrier; exit() ends them */
			fprintf(stderr, "sl-probe bench: pthread_create: %s\n", strerror(err));
			exit(1);
		}
	}
	pthread_barrier_wait(&sh.start);
	double t0 = now_us();
	long errors = 0;
	for (long i = 0; i < nw; i++) {
		pthread_join(w[i].tid, NULL);
		errors += w[i].errors;
	}
	double elapsed_s = (now_us() - t0) / 1e6;

	long n = gather_samples(w, nw, connect_us, op_us);
	print_bench_result(o->count, errors, connect_us, op_us, n, elapsed_s);
	pthread_barrier_destroy(&sh.start);
	free(w);
	free(op_us);
	free(connect_us);
	return errors == 0 ? 0 : 1;
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

static enum cmd parse_cmd(const char *s)
{
	if (strcmp(s, "serve") == 0)
		return CMD_SERVE;
	if (strcmp(s, "connect") == 0)
		return CMD_CONNECT;
	if (strcmp(s, "bench") == 0)
		return CMD_BENCH;
	usage_error("unknown subcommand", s);
	return CMD_SERVE; /* not reached */
}

int main(int argc, char **argv)
{
	struct opts o;
	struct target t;

	/* line-buffered even into a pipe: harnesses wait for each line */
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2)
		usage_error("missing subcommand", NULL);
	if (is_help(argv[1])) {
		usage(stdout);
		return 0;
	}
	enum cmd cmd = parse_cmd(argv[1]);
	parse_opts(cmd, argc - 2, argv + 2, &o);
	if (!parse_target(o.addr, o.port, &t))
		usage_error("--addr is not an IPv4 or IPv6 address", o.addr);

	switch (cmd) {
	case CMD_SERVE:
		return run_serve(&o, &t);
	case CMD_CONNECT:
		return run_connect(&o, &t);
	case CMD_BENCH:
		return run_bench(&o, &t);
	}
	return EXIT_USAGE;
}
