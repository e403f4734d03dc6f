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
 *   sidecar  stand-in for Istio's Envoy sidecar (and ztunnel): listen on the
 *            capture ports, report each connection's original destination
 *            (SO_ORIGINAL_DST) and optionally forward to it, so a test can
 *            see what the proxy saw and where the traffic went next.
 *   batch    one attempt to each of many targets (TCP, UDP) from one process:
 *            a probe matrix costs one process per identity, not per probe.
 *
 * Output goes to stdout, line-buffered, so a test harness reading a pipe sees
 * every line (in particular `ready`) as soon as it is printed.
 */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <ctype.h>
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

#include "sock-util.h"

#define EXIT_USAGE	       2
#define ID_MAX		       64
/* Room for a sidecar line, which embeds an upstream line of < UPSTREAM_MAX. */
#define REPLY_MAX	       1024
#define UPSTREAM_MAX	       512
#define PEER_MAX	       (INET6_ADDRSTRLEN + 16)
#define COUNT_MAX	       1000000L
#define MS_MAX		       3600000L
/* How long serve blocks in poll() before re-checking the stop flag; this
 * closes the race where a signal lands just before a blocking call. */
#define SERVE_POLL_MS	       200
/* A server line is < 200 bytes, so a handful of reads always reaches EOF. */
#define BENCH_MAX_READS	       64
#define DRAIN_MAX_READS	       4
/* --extra-port may be given this many times */
#define PORTS_MAX	       8
/* out, in and the extra ports, each IPv4 and IPv6 */
#define LISTENERS_MAX	       ((2 + PORTS_MAX) * 2)
/* Connections handled by their own thread; beyond that, inline. */
#define SIDECAR_THREADS_MAX    256
#define SIDECAR_STACK_SIZE     (256 * 1024)
/* Upstream connect and read timeout (each). */
#define SIDECAR_UPSTREAM_MS    2000
/* On stop, wait this long for connection threads to finish. */
#define SIDECAR_STOP_WAIT_S    10
/* Connections accepted from one listener per poll() round. */
#define SIDECAR_ACCEPT_BATCH   16
/* --accept-on-stdin: how long one line waits for a connection to accept */
#define SIDECAR_ACCEPT_WAIT_MS 60000L
/* Bound upstream sockets remembered at once (one per connection thread, plus inline ones). */
#define SIDECAR_OWN_MAX	       (SIDECAR_THREADS_MAX + 16)

/* Set by the SIGTERM/SIGINT handler; the only global mutable state. */
static volatile sig_atomic_t g_stop;

struct target {
	struct sockaddr_storage ss;
	socklen_t len;
};

enum cmd {
	CMD_SERVE = 1,
	CMD_CONNECT = 2,
	CMD_BENCH = 4,
	CMD_SIDECAR = 8,
	CMD_BATCH = 16,
	CMD_HOLD = 32
};

/* Repeatable options: --extra-port, --bind-inbound-source (once per family). */
struct port_list {
	long v[PORTS_MAX];
	int n;
};

struct addr_list {
	const char *v[2];
	int n;
};

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
	const char *bind;
	long mark; /* SO_MARK value, -1 if not set */
	long out_port;
	long in_port;
	struct port_list extra_ports;
	struct addr_list inbound_src;
	long tproxy_mark; /* --tproxy: Envoy's TPROXY inbound, -1 if not set */
	bool forward;
	bool v4_only;
	bool percentiles; /* bench: also print the op latency at PERCENTILES_PM */
	bool hold;	  /* serve: keep TCP connections, one reply line per line received */
	bool persist; /* connect: one connected socket for every attempt, a new one after a failure */
	bool accept_on_stdin; /* sidecar: accept one connection per line read, backlog 0 */
	bool reuseport;	      /* sidecar: SO_REUSEPORT on the listeners (ztunnel's) */
};

enum optkind { OPT_STR, OPT_LONG, OPT_FLAG, OPT_MARK, OPT_PORTS, OPT_ADDRS };

struct optdef {
	const char *name;
	unsigned cmds; /* subcommands that accept this option */
	enum optkind kind;
	size_t off;    /* field in struct opts */
	long min, max; /* range for OPT_LONG and each OPT_PORTS value */
};

#define ALL_CMDS (CMD_SERVE | CMD_CONNECT | CMD_BENCH | CMD_HOLD)
#define MARK_MAX 0xffffffffUL
#define OFF(f)	 offsetof(struct opts, f)

static const struct optdef optdefs[] = {
	{"--proto", CMD_SERVE | CMD_CONNECT | CMD_HOLD, OPT_STR, OFF(proto), 0, 0},
	{"--addr", ALL_CMDS, OPT_STR, OFF(addr), 0, 0},
	{"--port", ALL_CMDS, OPT_LONG, OFF(port), 1, 65535},
	{"--id", CMD_SERVE | CMD_SIDECAR, OPT_STR, OFF(id), 0, 0},
	{"--count", CMD_CONNECT | CMD_BENCH, OPT_LONG, OFF(count), 1, COUNT_MAX},
	{"--interval-ms", CMD_CONNECT, OPT_LONG, OFF(interval_ms), 0, MS_MAX},
	{"--timeout-ms", CMD_CONNECT | CMD_BENCH | CMD_HOLD, OPT_LONG, OFF(timeout_ms), 1, MS_MAX},
	{"--udp-mode", CMD_CONNECT, OPT_STR, OFF(udp_mode), 0, 0},
	{"--same-socket", CMD_CONNECT, OPT_FLAG, OFF(same_socket), 0, 0},
	{"--warmup", CMD_BENCH, OPT_LONG, OFF(warmup), 0, COUNT_MAX},
	{"--concurrency", CMD_BENCH, OPT_LONG, OFF(concurrency), 1, 1024},
	{"--percentiles", CMD_BENCH, OPT_FLAG, OFF(percentiles), 0, 0},
	{"--bind", CMD_CONNECT, OPT_STR, OFF(bind), 0, 0},
	{"--mark", CMD_CONNECT | CMD_SIDECAR, OPT_MARK, OFF(mark), 0, 0},
	{"--out-port", CMD_SIDECAR, OPT_LONG, OFF(out_port), 1, 65535},
	{"--in-port", CMD_SIDECAR, OPT_LONG, OFF(in_port), 1, 65535},
	{"--extra-port", CMD_SIDECAR, OPT_PORTS, OFF(extra_ports), 1, 65535},
	{"--forward", CMD_SIDECAR, OPT_FLAG, OFF(forward), 0, 0},
	{"--bind-inbound-source", CMD_SIDECAR, OPT_ADDRS, OFF(inbound_src), 0, 0},
	{"--tproxy", CMD_SIDECAR, OPT_MARK, OFF(tproxy_mark), 0, 0},
	{"--v4-only", CMD_SIDECAR, OPT_FLAG, OFF(v4_only), 0, 0},
	{"--hold", CMD_SERVE, OPT_FLAG, OFF(hold), 0, 0},
	{"--persist", CMD_CONNECT, OPT_FLAG, OFF(persist), 0, 0},
	{"--accept-on-stdin", CMD_SIDECAR, OPT_FLAG, OFF(accept_on_stdin), 0, 0},
	{"--reuseport", CMD_SIDECAR, OPT_FLAG, OFF(reuseport), 0, 0},
};

#define N_OPTDEFS (sizeof(optdefs) / sizeof(optdefs[0]))

/* ------------------------------------------------------------------ */
/* Usage and argument parsing                                          */
/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fputs("usage:\n"
	      "  sl-probe serve --proto tcp|udp --addr ADDR --port PORT --id ID [--hold]\n"
	      "      Serve until SIGTERM/SIGINT; prints 'ready' once bound.\n"
	      "      Each TCP connection / UDP datagram gets the line\n"
	      "      'ID PEERADDR PEERPORT LOCALADDR LOCALPORT'.\n"
	      "      --hold keeps each TCP connection open (a thread each) and\n"
	      "      answers every line received with that line instead.\n"
	      "  sl-probe connect --proto tcp|udp --addr ADDR --port PORT\n"
	      "      [--count N (1)] [--interval-ms M (0)] [--timeout-ms T (1000)]\n"
	      "      [--udp-mode connected|unconnected (connected)] [--same-socket]\n"
	      "      [--bind ADDR] [--mark N]\n"
	      "      One JSON line per attempt, then a summary line.\n"
	      "      --same-socket reuses one UDP socket for all attempts.\n"
	      "      --persist connects one socket once and sends 'ping' on it\n"
	      "      for each attempt, reading one reply line (TCP needs a\n"
	      "      'serve --hold'); after a failed attempt the next one\n"
	      "      connects a new socket. Attempts then carry \"conn\":K,\n"
	      "      the number of the connection they used.\n"
	      "      --bind binds the client socket to ADDR port 0 before use;\n"
	      "      --mark sets SO_MARK=N on it.\n"
	      "      Exit 0 if all attempts succeeded, 1 otherwise.\n"
	      "  sl-probe hold --proto tcp|udp --addr ADDR --port PORT [--timeout-ms T (1000)]\n"
	      "      One socket kept open: connects (TCP: reads the reply line; UDP:\n"
	      "      connect, send, receive) and prints one JSON line with the reply and\n"
	      "      getpeername(); then, for each line read on stdin, prints\n"
	      "      getpeername() again (UDP: after another send/receive on the same\n"
	      "      connected socket, with the reply's source as \"from\"). Ends at EOF.\n"
	      "  sl-probe bench --addr ADDR --port PORT [--count N (2000)]\n"
	      "      [--warmup W (200)] [--concurrency C (1)] [--timeout-ms T (5000)]\n"
	      "      [--percentiles]\n"
	      "      TCP connect latency / connection rate against 'serve'.\n"
	      "      --percentiles adds op_percentiles_us: [[percentile, us], ...]\n"
	      "      at 1, 5, 10, 20, ... 90, 95, 99, 99.9 (the latency distribution).\n"
	      "      Exit 0 if no operation failed, 1 otherwise.\n"
	      "  sl-probe sidecar --id ID [--out-port P (15001)] [--in-port P (15006)]\n"
	      "      [--extra-port P]... [--forward] [--mark N]\n"
	      "      [--bind-inbound-source ADDR]... [--tproxy N] [--v4-only]\n"
	      "      [--reuseport] [--accept-on-stdin]\n"
	      "      Stand-in for Envoy/ztunnel: TCP listeners on 0.0.0.0 and [::]\n"
	      "      (v6-only) at each port; prints 'ready' once listening, serves\n"
	      "      until SIGTERM/SIGINT. Each connection gets the line\n"
	      "      'sidecar ID via=VIA orig=A local=A peer=A[ upstream_peer=A]\n"
	      "      [ upstream=LINE]' (VIA is out, in or the extra port; orig is\n"
	      "      SO_ORIGINAL_DST or ERR:errno) and is logged as a JSON line.\n"
	      "      --forward connects to orig (2 s timeout) and reads one line;\n"
	      "      --bind-inbound-source (once per address family) is the source\n"
	      "      of upstream connections for in-port connections;\n"
	      "      --mark sets SO_MARK=N on listeners and upstream sockets;\n"
	      "      --tproxy N is Envoy in TPROXY mode: the in-port listeners are\n"
	      "      transparent, and in-port connections are forwarded from the\n"
	      "      client's own address (IP_TRANSPARENT, port 0, SO_MARK=N: Istio's\n"
	      "      original_src mark 1337); not with --bind-inbound-source;\n"
	      "      --v4-only skips the IPv6 listeners.\n"
	      "      --reuseport sets SO_REUSEPORT on the listeners before bind, as\n"
	      "      ztunnel does: a second instance can listen beside the first.\n"
	      "      --accept-on-stdin listens with backlog 0 and accepts nothing\n"
	      "      until told: each line read on stdin accepts one connection\n"
	      "      (from any listener, waiting up to 60 s) and handles it as\n"
	      "      above, or prints {\"conn\":false}; ends at EOF. A test holds\n"
	      "      established connections in the accept queue, and a further\n"
	      "      handshake in flight (its SYN dropped while the queue is full).\n"
	      "  sl-probe batch [--timeout-ms T (1000)] TARGET...\n"
	      "      TARGET is PROTO/ADDR/PORT[/BIND]: PROTO tcp, udp (unconnected:\n"
	      "      the peer is the reply's source) or udpc (connected UDP); BIND as\n"
	      "      connect's --bind. One attempt per target, in order, each printed\n"
	      "      as connect prints it plus \"target\". Exit 0 once every target\n"
	      "      was tried (a failed attempt is a result), 2 on bad arguments.\n"
	      "  sl-probe --help\n"
	      "N (--mark) is decimal or 0x hex.\n"
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
		fprintf(stderr, "sl-probe: %s must be an integer in [%ld, %ld]: %s\n", name, min,
			max, s);
		exit(EXIT_USAGE);
	}
	return v;
}

/* SO_MARK value: decimal or 0x hex; no sign, no leading blanks. */
static long parse_mark(const char *name, const char *s)
{
	bool hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
	const char *digits = hex ? s + 2 : s;
	char *end;

	errno = 0;
	unsigned long v = 0;
	bool ok = hex ? isxdigit((unsigned char)*digits) : isdigit((unsigned char)*digits);
	if (ok) {
		v = strtoul(digits, &end, hex ? 16 : 10);
		ok = errno == 0 && *end == '\0' && v <= MARK_MAX;
	}
	if (!ok) {
		fprintf(stderr, "sl-probe: %s must be decimal or 0x hex in [0, 0x%lx]: %s\n", name,
			MARK_MAX, s);
		exit(EXIT_USAGE);
	}
	return (long)v;
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
	o->mark = -1;
	o->tproxy_mark = -1;
	o->out_port = 15001;
	o->in_port = 15006;
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
	case OPT_MARK:
		*(long *)field = parse_mark(d->name, val);
		break;
	case OPT_PORTS: {
		struct port_list *l = (struct port_list *)field;
		if (l->n >= PORTS_MAX)
			usage_error("option given too often", d->name);
		l->v[l->n++] = parse_long(d->name, val, d->min, d->max);
		break;
	}
	case OPT_ADDRS: {
		struct addr_list *l = (struct addr_list *)field;
		if (l->n >= 2)
			usage_error("option given too often", d->name);
		l->v[l->n++] = val;
		break;
	}
	}
}

static void validate_opts(enum cmd cmd, const struct opts *o)
{
	if (cmd != CMD_SIDECAR && !o->addr)
		usage_error("missing --addr", NULL);
	if (cmd != CMD_SIDECAR && o->port < 0)
		usage_error("missing --port", NULL);
	if (cmd == CMD_SERVE || cmd == CMD_CONNECT || cmd == CMD_HOLD) {
		if (!o->proto)
			usage_error("missing --proto", NULL);
		if (strcmp(o->proto, "tcp") != 0 && strcmp(o->proto, "udp") != 0)
			usage_error("--proto must be tcp or udp", o->proto);
	}
	if (cmd == CMD_SERVE || cmd == CMD_SIDECAR) {
		if (!o->id)
			usage_error("missing --id", NULL);
		/* The id is the first field of a space-separated reply line. */
		size_t n = strlen(o->id);
		if (n == 0 || n > ID_MAX || strpbrk(o->id, " \t\r\n") != NULL)
			usage_error("--id must be 1-64 chars without whitespace", o->id);
	}
	if (cmd == CMD_SIDECAR && o->tproxy_mark >= 0 && o->inbound_src.n > 0)
		usage_error("--tproxy and --bind-inbound-source both choose the inbound source",
			    NULL);
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
static bool format_host(const struct sockaddr_storage *ss, char *host, size_t hostlen, unsigned *port)
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
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	return tv;
}

static int set_timeout(int fd, int optname, long ms)
{
	struct timeval tv = ms_to_timeval(ms);
	return setsockopt(fd, SOL_SOCKET, optname, &tv, sizeof(tv));
}

/* SO_MARK needs CAP_NET_ADMIN (or CAP_NET_RAW); EPERM otherwise. */
static int set_mark(int fd, long mark)
{
	unsigned int v = (unsigned int)mark;
	return setsockopt(fd, SOL_SOCKET, SO_MARK, &v, sizeof(v));
}

/* IP_TRANSPARENT (IPV6_TRANSPARENT for IPv6 sockets): bind to any address, accept TPROXY'd
 * connections. Needs CAP_NET_ADMIN (or CAP_NET_RAW). */
static int set_transparent(int fd, int family)
{
	int one = 1;

	return family == AF_INET6 ? setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one))
				  : setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one));
}

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
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

/* `who` names the subcommand (and for sidecar the listener) in the message. */
static int cmd_fail(const char *who, const char *what, int fd)
{
	fprintf(stderr, "sl-probe %s: %s: %s\n", who, what, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

static int serve_fail(const char *what, int fd)
{
	return cmd_fail("serve", what, fd);
}

/* Non-blocking so a connection that disappears between poll() and
 * accept() cannot wedge the loop (and thus the stop flag check).
 * mark < 0 leaves SO_MARK alone. */
static int open_server_socket(const char *who, const struct target *t, int type, long mark,
			      bool reuseport)
{
	int one = 1;
	int fd = socket(t->ss.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return cmd_fail(who, "socket", -1);
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		return cmd_fail(who, "SO_REUSEADDR", fd);
	/* v6-only so an IPv6 server never silently captures IPv4 traffic */
	if (t->ss.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
		return cmd_fail(who, "IPV6_V6ONLY", fd);
	if (mark >= 0 && set_mark(fd, mark) < 0)
		return cmd_fail(who, "SO_MARK", fd);
	if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		return cmd_fail(who, "SO_REUSEPORT", fd);
	if (bind(fd, (const struct sockaddr *)&t->ss, t->len) < 0)
		return cmd_fail(who, "bind", fd);
	if (type == SOCK_STREAM && listen(fd, SOMAXCONN) < 0)
		return cmd_fail(who, "listen", fd);
	return fd;
}

/* Returns 1 if readable, 0 on timeout or signal, -1 on error. */
static int wait_readable(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
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

/* After the reply: FIN, then close. */
static void finish_conn(int cfd)
{
	char scratch[REPLY_MAX];

	shutdown(cfd, SHUT_WR);
	/* Eat anything the client already sent: closing with unread data
	 * makes the kernel send RST instead of FIN. */
	for (int i = 0; i < DRAIN_MAX_READS; i++)
		if (recv(cfd, scratch, sizeof(scratch), MSG_DONTWAIT) <= 0)
			break;
	close(cfd);
}

static void serve_tcp_conn(int cfd, const char *id, const struct sockaddr_storage *peer)
{
	struct sockaddr_storage local;
	socklen_t llen = sizeof(local);
	char line[REPLY_MAX];

	if (getsockname(cfd, (struct sockaddr *)&local, &llen) == 0) {
		int n = format_server_line(line, sizeof(line), id, peer, &local);
		if (n > 0)
			(void)send(cfd, line, (size_t)n, MSG_NOSIGNAL);
	}
	finish_conn(cfd);
}

/* --hold: one connection, served on its own thread until the client closes or SIGTERM. */
struct held_conn {
	int fd;
	const char *id;
	struct sockaddr_storage peer;
};

static void *serve_held_conn(void *arg)
{
	struct held_conn *c = arg;
	struct sockaddr_storage local;
	socklen_t llen = sizeof(local);
	char line[REPLY_MAX], buf[REPLY_MAX];
	int n = -1;

	if (getsockname(c->fd, (struct sockaddr *)&local, &llen) == 0)
		n = format_server_line(line, sizeof(line), c->id, &c->peer, &local);
	while (n > 0 && !g_stop) {
		int r = wait_readable(c->fd);
		if (r < 0)
			break;
		if (r == 0)
			continue;
		ssize_t got = recv(c->fd, buf, sizeof(buf), 0);
		if (got <= 0)
			break;
		/* one reply per newline received */
		for (ssize_t i = 0; i < got; i++)
			if (buf[i] == '\n' && send(c->fd, line, (size_t)n, MSG_NOSIGNAL) < 0)
				got = -1;
		if (got < 0)
			break;
	}
	close(c->fd);
	free(c);
	return NULL;
}

static void serve_tcp_held(int cfd, const char *id, const struct sockaddr_storage *peer)
{
	struct held_conn *c = malloc(sizeof(*c));
	pthread_attr_t attr;
	pthread_t t;

	if (!c) {
		close(cfd);
		return;
	}
	c->fd = cfd;
	c->id = id;
	c->peer = *peer;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, SIDECAR_STACK_SIZE);
	if (pthread_create(&t, &attr, serve_held_conn, c) != 0) {
		close(cfd);
		free(c);
	}
	pthread_attr_destroy(&attr);
}

static int serve_tcp(int lfd, const char *id, bool hold)
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
		if (hold)
			serve_tcp_held(cfd, id, &peer);
		else
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
	int fd = open_server_socket("serve", t, tcp ? SOCK_STREAM : SOCK_DGRAM, -1, false);
	if (fd < 0)
		return 1;
	printf("ready\n");
	int rc = tcp ? serve_tcp(fd, o->id, o->hold) : serve_udp(fd, o->id);
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
	char local[PEER_MAX]; /* TCP: the client's own address (getsockname); empty otherwise */
	long conn; /* --persist: the number of the connection used (1, 2, ...); 0 otherwise */
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
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	int r = poll(&p, 1, (int)timeout_ms);
	if (r < 0)
		return -1;
	if (r == 0) {
		errno = ETIMEDOUT;
		return -1;
	}
	return connect_result(fd);
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

/* What is done to a client socket before it connects or sends: connect's
 * --mark/--bind, and the sidecar's upstream sockets. */
struct client_sock {
	long mark;	  /* SO_MARK value, or -1 */
	bool bind;	  /* bind to src (port 0) first */
	bool transparent; /* IP_TRANSPARENT / IPV6_TRANSPARENT first: src may be any address */
	struct target src;
};

/* On failure errno is set and *stage names the step, as in attempt.stage. */
static int prepare_client_socket(int fd, const struct client_sock *cs, const char **stage)
{
	if (cs->mark >= 0 && set_mark(fd, cs->mark) < 0) {
		*stage = "mark";
		return -1;
	}
	if (cs->transparent && set_transparent(fd, cs->src.ss.ss_family) < 0) {
		*stage = "transparent";
		return -1;
	}
	if (cs->bind && bind(fd, (const struct sockaddr *)&cs->src.ss, cs->src.len) < 0) {
		*stage = "bind";
		return -1;
	}
	return 0;
}

/* connect's --bind and --mark; --bind must be of the target's family. */
static void parse_client_sock(const struct opts *o, const struct target *t, struct client_sock *cs)
{
	memset(cs, 0, sizeof(*cs));
	cs->mark = o->mark;
	if (!o->bind)
		return;
	if (!parse_target(o->bind, 0, &cs->src))
		usage_error("--bind is not an IPv4 or IPv6 address", o->bind);
	if (cs->src.ss.ss_family != t->ss.ss_family)
		usage_error("--bind must be of the same address family as --addr", o->bind);
	cs->bind = true;
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
	plen = sizeof(peer);
	if (getsockname(fd, (struct sockaddr *)&peer, &plen) < 0)
		return attempt_fail(a, "getsockname");
	format_peer(&peer, a->local, sizeof(a->local));
	if (read_line(fd, a->reply, sizeof(a->reply)) < 0)
		return attempt_fail(a, "recv");
	strip_line_end(a->reply);
	a->ok = true;
	return true;
}

static bool tcp_attempt(const struct target *t, const struct client_sock *cs, long timeout_ms,
			struct attempt *a)
{
	const char *stage;
	int fd = socket(t->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return attempt_fail(a, "socket");
	bool ok = prepare_client_socket(fd, cs, &stage) == 0 ? tcp_attempt_on(fd, t, timeout_ms, a)
							     : attempt_fail(a, stage);
	close(fd);
	return ok;
}

static int open_udp_client(const struct target *t, const struct client_sock *cs, long timeout_ms,
			   const char **stage)
{
	*stage = "socket";
	int fd = socket(t->ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (set_timeout(fd, SO_RCVTIMEO, timeout_ms) < 0 || prepare_client_socket(fd, cs, stage) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static bool udp_recv_reply(int fd, struct attempt *a, struct sockaddr_storage *src, socklen_t *srclen)
{
	ssize_t n = recvfrom(fd, a->reply, sizeof(a->reply) - 1, 0, (struct sockaddr *)src, srclen);
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
static bool udp_attempt(const struct opts *o, const struct target *t, const struct client_sock *cs,
			int *shared_fd, struct attempt *a)
{
	int fd = o->same_socket ? *shared_fd : -1;

	if (fd < 0) {
		const char *stage;
		fd = open_udp_client(t, cs, o->timeout_ms, &stage);
		if (fd < 0)
			return attempt_fail(a, stage);
		if (o->same_socket)
			*shared_fd = fd;
	}
	bool ok = strcmp(o->udp_mode, "connected") == 0 ? udp_connected_attempt(fd, t, a)
							: udp_unconnected_attempt(fd, t, a);
	if (!o->same_socket)
		close(fd);
	return ok;
}

/* --persist: *fd is the socket kept between attempts (-1: connect a new one, counted in *conns). */
static bool persist_attempt(const struct opts *o, const struct target *t,
			    const struct client_sock *cs, int *fd, long *conns, struct attempt *a)
{
	bool tcp = strcmp(o->proto, "tcp") == 0;
	const char *stage = "socket";
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);
	bool ok = false;

	if (*fd < 0) {
		int nfd = tcp ? socket(t->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
			      : open_udp_client(t, cs, o->timeout_ms, &stage);
		if (nfd < 0)
			return attempt_fail(a, stage);
		if (tcp && prepare_client_socket(nfd, cs, &stage) < 0)
			goto fail_new;
		stage = "connect";
		if (tcp ? connect_with_timeout(nfd, t, o->timeout_ms) < 0
			: connect(nfd, (const struct sockaddr *)&t->ss, t->len) < 0)
			goto fail_new;
		stage = "socket";
		if (tcp && (set_blocking(nfd) < 0 || set_timeout(nfd, SO_RCVTIMEO, o->timeout_ms) < 0))
			goto fail_new;
		*fd = nfd;
		(*conns)++;
		goto connected;
	fail_new:
		attempt_fail(a, stage);
		close(nfd);
		a->conn = *conns + 1;
		return false;
	}
connected:
	a->conn = *conns;
	if (getpeername(*fd, (struct sockaddr *)&peer, &plen) < 0) {
		attempt_fail(a, "getpeername");
	} else if (send(*fd, "ping\n", 5, MSG_NOSIGNAL) < 0) {
		attempt_fail(a, "send");
	} else if (tcp && read_line(*fd, a->reply, sizeof(a->reply)) < 0) {
		attempt_fail(a, "recv");
	} else {
		struct sockaddr_storage src;
		socklen_t slen = sizeof(src);

		/* UDP: the reply; udp_recv_reply records a failure itself */
		if (tcp || udp_recv_reply(*fd, a, &src, &slen)) {
			strip_line_end(a->reply);
			format_peer(&peer, a->peer, sizeof(a->peer));
			a->ok = ok = true;
		}
	}
	if (!ok) {
		close(*fd);
		*fd = -1;
	}
	return ok;
}

/* target: batch's TARGET text, or NULL (connect). */
static void print_attempt(const struct attempt *a, const char *target)
{
	putchar('{');
	if (target) {
		printf("\"target\":");
		print_json_string(target);
		putchar(',');
	}
	if (a->conn > 0)
		printf("\"conn\":%ld,", a->conn);
	if (a->ok) {
		printf("\"ok\":true,\"reply\":");
		print_json_string(a->reply);
		printf(",\"peer\":");
		print_json_string(a->peer);
		if (a->local[0]) {
			printf(",\"local\":");
			print_json_string(a->local);
		}
		printf("}\n");
	} else {
		printf("\"ok\":false,\"errno\":%d,\"error\":", a->err);
		print_json_string(strerror(a->err));
		printf(",\"stage\":\"%s\"}\n", a->stage);
	}
}

static int run_connect(const struct opts *o, const struct target *t)
{
	bool tcp = strcmp(o->proto, "tcp") == 0;
	int shared_fd = -1;
	long ok = 0, failed = 0, conns = 0;
	struct client_sock cs;

	parse_client_sock(o, t, &cs);

	for (long i = 0; i < o->count; i++) {
		if (i > 0 && o->interval_ms > 0)
			sleep_ms(o->interval_ms);
		struct attempt a;
		memset(&a, 0, sizeof(a));
		bool success = o->persist ? persist_attempt(o, t, &cs, &shared_fd, &conns, &a)
			       : tcp	  ? tcp_attempt(t, &cs, o->timeout_ms, &a)
					  : udp_attempt(o, t, &cs, &shared_fd, &a);
		print_attempt(&a, NULL);
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
/* batch                                                               */
/* ------------------------------------------------------------------ */

/* Targets per batch run; a probe matrix of one identity stays well below. */
#define BATCH_MAX	512
#define TARGET_TEXT_MAX 128

struct batch_target {
	const char *text;  /* as given, echoed in the result */
	const char *proto; /* "tcp", "udp" or "udpc" */
	struct target t;
	struct client_sock cs;
};

/* PROTO/ADDR/PORT[/BIND]: '/' appears in no IP literal, so IPv6 needs no brackets. */
static void parse_batch_target(const char *text, struct batch_target *b)
{
	char buf[TARGET_TEXT_MAX];
	char *field[4];
	int n = 1;

	if (strlen(text) >= sizeof(buf))
		usage_error("batch target too long", text);
	snprintf(buf, sizeof(buf), "%s", text);
	field[0] = buf;
	for (char *p = strchr(buf, '/'); p; p = strchr(p, '/')) {
		if (n == 4)
			usage_error("batch target must be PROTO/ADDR/PORT[/BIND]", text);
		*p++ = '\0';
		field[n++] = p;
	}
	if (n < 3)
		usage_error("batch target must be PROTO/ADDR/PORT[/BIND]", text);
	memset(b, 0, sizeof(*b));
	b->text = text;
	if (strcmp(field[0], "tcp") == 0)
		b->proto = "tcp";
	else if (strcmp(field[0], "udp") == 0)
		b->proto = "udp";
	else if (strcmp(field[0], "udpc") == 0)
		b->proto = "udpc";
	else
		usage_error("batch target protocol must be tcp, udp or udpc", text);
	long port = parse_long("batch target port", field[2], 1, 65535);
	if (!parse_target(field[1], port, &b->t))
		usage_error("batch target address is not an IPv4 or IPv6 address", text);
	b->cs.mark = -1;
	if (n == 4) {
		if (!parse_target(field[3], 0, &b->cs.src))
			usage_error("batch target bind address is not an IPv4 or IPv6 address", text);
		if (b->cs.src.ss.ss_family != b->t.ss.ss_family)
			usage_error("batch target bind address must be of the target's family", text);
		b->cs.bind = true;
	}
}

static int run_batch(int argc, char **argv)
{
	static struct batch_target targets[BATCH_MAX];
	long timeout_ms = 1000;
	int n = 0;

	for (int i = 0; i < argc; i++) {
		if (is_help(argv[i])) {
			usage(stdout);
			exit(0);
		}
		if (strcmp(argv[i], "--timeout-ms") == 0) {
			if (i + 1 >= argc)
				usage_error("option needs a value", argv[i]);
			timeout_ms = parse_long("--timeout-ms", argv[++i], 1, MS_MAX);
			continue;
		}
		if (strncmp(argv[i], "--", 2) == 0)
			usage_error("unknown option for this subcommand", argv[i]);
		if (n >= BATCH_MAX)
			usage_error("too many batch targets", argv[i]);
		parse_batch_target(argv[i], &targets[n++]);
	}
	if (n == 0)
		usage_error("batch needs at least one TARGET", NULL);
	for (int i = 0; i < n; i++) {
		const struct batch_target *b = &targets[i];
		struct attempt a;

		memset(&a, 0, sizeof(a));
		if (strcmp(b->proto, "tcp") == 0) {
			tcp_attempt(&b->t, &b->cs, timeout_ms, &a);
		} else {
			struct opts o;
			int fd = -1;

			set_defaults(CMD_CONNECT, &o);
			o.timeout_ms = timeout_ms;
			o.udp_mode = strcmp(b->proto, "udpc") == 0 ? "connected" : "unconnected";
			udp_attempt(&o, &b->t, &b->cs, &fd, &a);
		}
		print_attempt(&a, b->text);
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* hold                                                                */
/* ------------------------------------------------------------------ */

/* One round on the held socket: what getpeername() (and, for UDP, a reply's source) say now.
 * The socket is never connected again, so only the kernel's reverse translation answers. */
static bool hold_round(int fd, bool tcp, struct attempt *a, char *from, size_t fromlen)
{
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);

	if (!tcp) {
		if (send(fd, "ping", 4, 0) < 0)
			return attempt_fail(a, "send");
		struct sockaddr_storage src;
		socklen_t slen = sizeof(src);
		if (!udp_recv_reply(fd, a, &src, &slen))
			return false;
		format_peer(&src, from, fromlen);
	}
	if (getpeername(fd, (struct sockaddr *)&peer, &plen) < 0)
		return attempt_fail(a, "getpeername");
	format_peer(&peer, a->peer, sizeof(a->peer));
	a->ok = true;
	return true;
}

static void print_hold(const struct attempt *a, const char *from)
{
	if (!a->ok || !from[0]) {
		print_attempt(a, NULL);
		return;
	}
	printf("{\"ok\":true,\"reply\":");
	print_json_string(a->reply);
	printf(",\"peer\":");
	print_json_string(a->peer);
	printf(",\"from\":");
	print_json_string(from);
	printf("}\n");
}

static int run_hold(const struct opts *o, const struct target *t)
{
	bool tcp = strcmp(o->proto, "tcp") == 0;
	struct client_sock cs;
	struct attempt a;
	char from[INET6_ADDRSTRLEN + 16] = "";
	char line[256];
	const char *stage;
	int fd;
	bool ok;

	parse_client_sock(o, t, &cs);
	memset(&a, 0, sizeof(a));
	if (tcp) {
		fd = socket(t->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		ok = fd >= 0 && tcp_attempt_on(fd, t, o->timeout_ms, &a);
		if (fd < 0)
			attempt_fail(&a, "socket");
	} else {
		fd = open_udp_client(t, &cs, o->timeout_ms, &stage);
		ok = fd >= 0 ? udp_connected_attempt(fd, t, &a) : attempt_fail(&a, stage);
	}
	print_attempt(&a, NULL);
	if (!ok)
		return 1;
	/* bounded by stdin: the harness closes it to end the process */
	while (fgets(line, sizeof(line), stdin)) {
		memset(&a, 0, sizeof(a));
		from[0] = '\0';
		hold_round(fd, tcp, &a, from, sizeof(from));
		print_hold(&a, from);
	}
	close(fd);
	return 0;
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

/* The same in per mille, for the tail (999 = p99.9). */
static double permille(const double *sorted, long n, long pm)
{
	long rank = (pm * n + 999) / 1000;
	return sorted[rank > 0 ? rank - 1 : 0];
}

/* Where --percentiles samples the distribution, in per mille: dense enough to draw it, with
 * the tail that separates capture paths (99, 99.9). */
static const long PERCENTILES_PM[] = {10,  50,	100, 200, 300, 400, 500,
				      600, 700, 800, 900, 950, 990, 999};

static void print_percentiles(const char *name, const double *sorted, long n)
{
	printf("\"%s\":[", name);
	for (size_t i = 0; n > 0 && i < sizeof(PERCENTILES_PM) / sizeof(PERCENTILES_PM[0]); i++)
		printf("%s[%g,%.1f]", i ? "," : "", (double)PERCENTILES_PM[i] / 10.0,
		       permille(sorted, n, PERCENTILES_PM[i]));
	printf("],");
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
static long gather_samples(struct bench_worker *w, long nworkers, double *connect_us, double *op_us)
{
	long n = 0;

	for (long i = 0; i < nworkers; i++) {
		memmove(connect_us + n, w[i].connect_us, (size_t)w[i].ok * sizeof(double));
		memmove(op_us + n, w[i].op_us, (size_t)w[i].ok * sizeof(double));
		n += w[i].ok;
	}
	return n;
}

static void print_bench_result(long count, long errors, double *connect_us, double *op_us, long n,
			       double elapsed_s, bool percentiles)
{
	qsort(connect_us, (size_t)n, sizeof(double), cmp_double);
	qsort(op_us, (size_t)n, sizeof(double), cmp_double);
	printf("{\"count\":%ld,\"errors\":%ld,", count, errors);
	print_stat_field("connect_median_us", connect_us, n, 50);
	print_stat_field("connect_p99_us", connect_us, n, 99);
	print_stat_field("op_median_us", op_us, n, 50);
	print_stat_field("op_p99_us", op_us, n, 99);
	if (percentiles)
		print_percentiles("op_percentiles_us", op_us, n);
	/* rate counts successful operations: fast failures are not throughput */
	double rate = elapsed_s > 0 ? (double)n / elapsed_s : 0.0;
	printf("\"rate_per_s\":%.1f,\"elapsed_s\":%.3f}\n", rate, elapsed_s);
}

static int run_bench(const struct opts *o, const struct target *t)
{
	long nw = o->concurrency;
	struct bench_shared sh = {.target = t, .timeout_ms = o->timeout_ms};
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
	print_bench_result(o->count, errors, connect_us, op_us, n, elapsed_s, o->percentiles);
	pthread_barrier_destroy(&sh.start);
	free(w);
	free(op_us);
	free(connect_us);
	return errors == 0 ? 0 : 1;
}

/* ------------------------------------------------------------------ */
/* sidecar                                                             */
/* ------------------------------------------------------------------ */

struct sc_listener {
	int fd;
	int family;
	bool inbound;	     /* the in-port: upstream may bind to the inbound source */
	char via[8];	     /* "out", "in" or the extra port's number */
	char name[PEER_MAX]; /* "0.0.0.0:15001", for messages */
};

/*
 * The local addresses of this sidecar's bound upstream sockets (inbound forwards from
 * 127.0.0.6 / ::6 or, with --tproxy, from the client's address) while they are open. A
 * connection accepted from one of them is the sidecar's own forward sent back to it by the
 * capture rules (a loop: with TPROXY and DNS capture Istio's gid rule does that for port 53); it
 * is answered ELOOP at once, so a loop ends at its second hop instead of whenever a nested
 * timeout fires.
 */
struct sc_own {
	pthread_mutex_t lock;
	struct sockaddr_storage a[SIDECAR_OWN_MAX];
	bool used[SIDECAR_OWN_MAX];
};

struct sidecar {
	const char *id;
	bool forward;
	bool accept_on_stdin;
	bool reuseport;
	long mark;
	long tproxy_mark; /* --tproxy, or -1 */
	struct sc_own *own;
	/* --bind-inbound-source by family: [0] IPv4, [1] IPv6 */
	bool has_src[2];
	struct target src[2];
	struct sc_listener ls[LISTENERS_MAX];
	int nls;
	pthread_attr_t attr;
	pthread_mutex_t lock; /* guards active */
	pthread_cond_t idle;  /* signalled when active drops to 0 */
	int active;	      /* connection threads running */
};

struct sc_conn {
	struct sidecar *sc;
	const struct sc_listener *l;
	int fd;
	struct sockaddr_storage peer;
};

/* What the proxy saw for one connection, as printed. */
struct sc_seen {
	char orig[PEER_MAX];
	char local[PEER_MAX];
	char peer[PEER_MAX];
	bool forwarded; /* upstream is set */
	bool has_upstream_peer;
	char upstream_peer[PEER_MAX];
	char upstream[UPSTREAM_MAX + 64];
};

static int family_index(int family)
{
	return family == AF_INET6 ? 1 : 0;
}

/* "ERR:<errno>:<strerror with '_' for spaces>", one token for the line. */
static void format_errno(char *buf, size_t len, int err)
{
	snprintf(buf, len, "ERR:%d:%s", err, strerror(err));
	for (char *p = buf; *p; p++)
		if (*p == ' ')
			*p = '_';
}

static unsigned sockaddr_port(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)(const void *)a)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)(const void *)a)->sin6_port);
}

/* The port a listener is bound to. */
static unsigned listener_port(const struct sc_listener *l)
{
	struct sockaddr_storage a;
	socklen_t len = sizeof(a);

	memset(&a, 0, sizeof(a));
	if (getsockname(l->fd, (struct sockaddr *)&a, &len) != 0)
		return 0;
	return sockaddr_port(&a);
}

/* Remembers a bound upstream socket's address; returns its slot, or -1 when full. */
static int sc_own_add(struct sc_own *own, int fd)
{
	struct sockaddr_storage a;
	socklen_t len = sizeof(a);
	int slot = -1;

	memset(&a, 0, sizeof(a));
	if (getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		return -1;
	pthread_mutex_lock(&own->lock);
	for (int i = 0; i < SIDECAR_OWN_MAX && slot < 0; i++) {
		if (!own->used[i]) {
			own->used[i] = true;
			own->a[i] = a;
			slot = i;
		}
	}
	pthread_mutex_unlock(&own->lock);
	return slot;
}

static void sc_own_remove(struct sc_own *own, int slot)
{
	if (slot < 0)
		return;
	pthread_mutex_lock(&own->lock);
	own->used[slot] = false;
	pthread_mutex_unlock(&own->lock);
}

static bool sc_own_has(struct sc_own *own, const struct sockaddr_storage *peer)
{
	bool hit = false;

	pthread_mutex_lock(&own->lock);
	for (int i = 0; i < SIDECAR_OWN_MAX && !hit; i++)
		hit = own->used[i] && same_sockaddr(&own->a[i], peer);
	pthread_mutex_unlock(&own->lock);
	return hit;
}

/* Connect, note the upstream's address, read its one line. errno on failure. A bound socket is
 * remembered in `own` while it is open (see struct sc_own). */
static int sc_upstream_on(int fd, const struct target *t, const struct client_sock *cs,
			  struct sc_own *own, struct sc_seen *s)
{
	const char *stage;
	struct sockaddr_storage peer;
	socklen_t plen = sizeof(peer);
	char line[UPSTREAM_MAX];
	int slot = -1, r = -1, err;

	if (prepare_client_socket(fd, cs, &stage) < 0)
		return -1;
	if (cs->bind)
		slot = sc_own_add(own, fd);
	if (connect_with_timeout(fd, t, SIDECAR_UPSTREAM_MS) == 0 && set_blocking(fd) == 0 &&
	    set_timeout(fd, SO_RCVTIMEO, SIDECAR_UPSTREAM_MS) == 0 &&
	    getpeername(fd, (struct sockaddr *)&peer, &plen) == 0) {
		format_peer(&peer, s->upstream_peer, sizeof(s->upstream_peer));
		s->has_upstream_peer = true;
		if (read_line(fd, line, sizeof(line)) == 0) {
			strip_line_end(line);
			snprintf(s->upstream, sizeof(s->upstream), "%s", line);
			r = 0;
		}
	}
	err = errno;
	sc_own_remove(own, slot);
	errno = err;
	return r;
}

static void sc_forward(const struct sidecar *sc, const struct sc_listener *l,
		       const struct sockaddr_storage *orig, const struct sockaddr_storage *peer,
		       struct sc_seen *s)
{
	struct target t = {.ss = *orig};
	struct client_sock cs = {.mark = sc->mark};
	int fi = family_index(orig->ss_family);

	t.len = orig->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
					    : sizeof(struct sockaddr_in);
	/* Envoy's inbound passthrough connects from 127.0.0.6 / ::6; in TPROXY mode
	 * (original_src) from the client's own address, marked */
	if (l->inbound && sc->tproxy_mark >= 0) {
		cs.mark = sc->tproxy_mark;
		cs.bind = true;
		cs.transparent = true;
		cs.src.ss = *peer;
		cs.src.len = t.len;
		if (peer->ss_family == AF_INET6)
			((struct sockaddr_in6 *)&cs.src.ss)->sin6_port = 0;
		else
			((struct sockaddr_in *)&cs.src.ss)->sin_port = 0;
	} else if (l->inbound && sc->has_src[fi]) {
		cs.bind = true;
		cs.src = sc->src[fi];
	}
	int fd = socket(orig->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || sc_upstream_on(fd, &t, &cs, sc->own, s) < 0)
		format_errno(s->upstream, sizeof(s->upstream), errno);
	if (fd >= 0)
		close(fd);
}

static void sc_observe(const struct sidecar *sc, const struct sc_listener *l, int cfd,
		       const struct sockaddr_storage *peer, struct sc_seen *s)
{
	struct sockaddr_storage local, orig;
	socklen_t llen = sizeof(local);
	int orig_err = 0;

	memset(s, 0, sizeof(*s));
	format_peer(peer, s->peer, sizeof(s->peer));
	memset(&local, 0, sizeof(local));
	if (getsockname(cfd, (struct sockaddr *)&local, &llen) == 0)
		format_peer(&local, s->local, sizeof(s->local));
	else
		snprintf(s->local, sizeof(s->local), "ERR:%d", errno);
	if (get_orig_dst(cfd, l->family, &orig) == 0) {
		format_peer(&orig, s->orig, sizeof(s->orig));
	} else {
		orig_err = errno;
		snprintf(s->orig, sizeof(s->orig), "ERR:%d", orig_err);
	}
	if (!sc->forward)
		return;
	s->forwarded = true;
	/* Without a redirect the original destination is this very
	 * listener; forwarding there would loop. (With sk_lookup steering,
	 * the local address legitimately equals the original destination,
	 * so only the listener's own port counts as a loop.) */
	if (orig_err == 0 && sockaddr_port(&orig) == sockaddr_port(&local) &&
	    sockaddr_port(&orig) == listener_port(l))
		orig_err = ELOOP;
	/* our own forward, sent back to us: see struct sc_own */
	if (orig_err == 0 && sc_own_has(sc->own, peer))
		orig_err = ELOOP;
	if (orig_err != 0)
		format_errno(s->upstream, sizeof(s->upstream), orig_err);
	else
		sc_forward(sc, l, &orig, peer, s);
}

/* One JSON line per connection; threads share stdout, so lock it. */
static void sc_log(const struct sc_listener *l, const struct sc_seen *s)
{
	flockfile(stdout);
	printf("{\"conn\":true,\"via\":");
	print_json_string(l->via);
	printf(",\"orig\":");
	print_json_string(s->orig);
	printf(",\"local\":");
	print_json_string(s->local);
	printf(",\"peer\":");
	print_json_string(s->peer);
	if (s->forwarded) {
		printf(",\"upstream\":");
		print_json_string(s->upstream);
	}
	if (s->has_upstream_peer) {
		printf(",\"upstream_peer\":");
		print_json_string(s->upstream_peer);
	}
	printf("}\n");
	fflush(stdout);
	funlockfile(stdout);
}

/* upstream goes last: the upstream's line may contain spaces. */
static void sc_reply(int cfd, const char *id, const struct sc_listener *l, const struct sc_seen *s)
{
	char line[REPLY_MAX];
	int n = snprintf(line, sizeof(line), "sidecar %s via=%s orig=%s local=%s peer=%s%s%s%s%s\n",
			 id, l->via, s->orig, s->local, s->peer,
			 s->has_upstream_peer ? " upstream_peer=" : "",
			 s->has_upstream_peer ? s->upstream_peer : "",
			 s->forwarded ? " upstream=" : "", s->forwarded ? s->upstream : "");

	if (n > 0 && (size_t)n < sizeof(line))
		(void)send(cfd, line, (size_t)n, MSG_NOSIGNAL);
	finish_conn(cfd);
}

/* Log before replying, so a client that has its reply finds the log line. */
static void sc_handle(const struct sidecar *sc, const struct sc_listener *l, int cfd,
		      const struct sockaddr_storage *peer)
{
	struct sc_seen s;

	sc_observe(sc, l, cfd, peer, &s);
	sc_log(l, &s);
	sc_reply(cfd, sc->id, l, &s);
}

static void sc_release_slot(struct sidecar *sc)
{
	pthread_mutex_lock(&sc->lock);
	if (--sc->active == 0)
		pthread_cond_broadcast(&sc->idle);
	pthread_mutex_unlock(&sc->lock);
}

static void *sc_conn_main(void *arg)
{
	struct sc_conn *c = arg;
	struct sidecar *sc = c->sc;

	sc_handle(sc, c->l, c->fd, &c->peer);
	free(c);
	sc_release_slot(sc);
	return NULL;
}

/* Signals stay with the main thread, so a worker's recv() never sees EINTR. */
static bool sc_spawn(struct sidecar *sc, struct sc_conn *c)
{
	sigset_t block, old;
	pthread_t tid;

	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	int err = pthread_create(&tid, &sc->attr, sc_conn_main, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return err == 0;
}

/* A thread per connection up to SIDECAR_THREADS_MAX, else inline. */
static void sc_dispatch(struct sidecar *sc, const struct sc_listener *l, int cfd,
			const struct sockaddr_storage *peer)
{
	pthread_mutex_lock(&sc->lock);
	bool slot = sc->active < SIDECAR_THREADS_MAX;
	if (slot)
		sc->active++;
	pthread_mutex_unlock(&sc->lock);

	struct sc_conn *c = slot ? malloc(sizeof(*c)) : NULL;
	if (c) {
		*c = (struct sc_conn){.sc = sc, .l = l, .fd = cfd, .peer = *peer};
		if (sc_spawn(sc, c))
			return;
		free(c);
	}
	if (slot)
		sc_release_slot(sc);
	sc_handle(sc, l, cfd, peer);
}

static void sc_accept_some(struct sidecar *sc, const struct sc_listener *l)
{
	for (int i = 0; i < SIDECAR_ACCEPT_BATCH && !g_stop; i++) {
		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);
		int cfd = accept4(l->fd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
		if (cfd < 0)
			return; /* EAGAIN: drained; others: try again next round */
		sc_dispatch(sc, l, cfd, &peer);
	}
}

static int sc_serve(struct sidecar *sc)
{
	struct pollfd p[LISTENERS_MAX];

	for (int i = 0; i < sc->nls; i++)
		p[i] = (struct pollfd){.fd = sc->ls[i].fd, .events = POLLIN};
	while (!g_stop) {
		int r = poll(p, (nfds_t)sc->nls, SERVE_POLL_MS);
		if (r < 0 && errno != EINTR)
			return cmd_fail("sidecar", "poll", -1);
		for (int i = 0; r > 0 && i < sc->nls; i++)
			if (p[i].revents & POLLIN)
				sc_accept_some(sc, &sc->ls[i]);
	}
	return 0;
}

/* --accept-on-stdin: one connection per line read, handled inline; bounded by stdin and
 * SIDECAR_ACCEPT_WAIT_MS per line. */
static int sc_serve_on_stdin(struct sidecar *sc)
{
	struct pollfd p[LISTENERS_MAX];
	char line[64];

	for (int i = 0; i < sc->nls; i++)
		p[i] = (struct pollfd){.fd = sc->ls[i].fd, .events = POLLIN};
	while (!g_stop && fgets(line, sizeof(line), stdin)) {
		int cfd = -1, i = 0;
		struct sockaddr_storage peer;

		for (long waited = 0; cfd < 0 && waited < SIDECAR_ACCEPT_WAIT_MS && !g_stop;
		     waited += SERVE_POLL_MS) {
			int r = poll(p, (nfds_t)sc->nls, SERVE_POLL_MS);
			if (r < 0 && errno != EINTR)
				return cmd_fail("sidecar", "poll", -1);
			for (i = 0; r > 0 && i < sc->nls; i++) {
				socklen_t plen = sizeof(peer);
				if ((p[i].revents & POLLIN) &&
				    (cfd = accept4(sc->ls[i].fd, (struct sockaddr *)&peer, &plen,
						   SOCK_CLOEXEC)) >= 0)
					break;
			}
		}
		if (cfd < 0) {
			printf("{\"conn\":false}\n");
			fflush(stdout);
			continue;
		}
		sc_handle(sc, &sc->ls[i], cfd, &peer);
	}
	return 0;
}

/* Bounded: every connection thread finishes within its timeouts. */
static void sc_wait_idle(struct sidecar *sc)
{
	struct timespec deadline;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += SIDECAR_STOP_WAIT_S;
	pthread_mutex_lock(&sc->lock);
	while (sc->active > 0)
		if (pthread_cond_timedwait(&sc->idle, &sc->lock, &deadline) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&sc->lock);
}

static int sc_add_listener(struct sidecar *sc, int family, long port, const char *via, bool inbound)
{
	struct target t;
	struct sc_listener *l = &sc->ls[sc->nls];
	char who[PEER_MAX + 16];

	parse_target(family == AF_INET6 ? "::" : "0.0.0.0", port, &t);
	format_peer(&t.ss, l->name, sizeof(l->name));
	snprintf(who, sizeof(who), "sidecar %s", l->name);
	l->fd = open_server_socket(who, &t, SOCK_STREAM, sc->mark, sc->reuseport);
	if (l->fd < 0)
		return -1;
	/* Envoy's inbound listener in TPROXY mode is transparent (Istio: listener.transparent) */
	if (inbound && sc->tproxy_mark >= 0 && set_transparent(l->fd, family) < 0)
		return cmd_fail(who, "IP_TRANSPARENT", l->fd);
	/* backlog 0: one established connection waits in the queue, the next SYN is dropped */
	if (sc->accept_on_stdin && listen(l->fd, 0) < 0)
		return cmd_fail(who, "listen", l->fd);
	l->family = family;
	l->inbound = inbound;
	snprintf(l->via, sizeof(l->via), "%s", via);
	sc->nls++;
	return 0;
}

/* out, in, then the extra ports; each IPv4 then IPv6. */
static int sc_open_listeners(struct sidecar *sc, const struct opts *o)
{
	int nports = 2 + o->extra_ports.n;

	for (int i = 0; i < nports; i++) {
		long port = i == 0 ? o->out_port : i == 1 ? o->in_port : o->extra_ports.v[i - 2];
		char via[8];
		if (i < 2)
			snprintf(via, sizeof(via), "%s", i == 0 ? "out" : "in");
		else
			snprintf(via, sizeof(via), "%ld", port);
		if (sc_add_listener(sc, AF_INET, port, via, i == 1) < 0)
			return -1;
		if (!o->v4_only && sc_add_listener(sc, AF_INET6, port, via, i == 1) < 0)
			return -1;
	}
	return 0;
}

/* Ports must differ (two listeners cannot share one); one source per family. */
static void sc_config(const struct opts *o, struct sidecar *sc)
{
	long ports[2 + PORTS_MAX] = {o->out_port, o->in_port};
	int nports = 2 + o->extra_ports.n;

	memcpy(ports + 2, o->extra_ports.v, (size_t)o->extra_ports.n * sizeof(long));
	for (int i = 0; i < nports; i++)
		for (int j = 0; j < i; j++)
			if (ports[i] == ports[j]) {
				fprintf(stderr, "sl-probe: sidecar port %ld given twice\n", ports[i]);
				exit(EXIT_USAGE);
			}
	memset(sc, 0, sizeof(*sc));
	sc->id = o->id;
	sc->forward = o->forward;
	sc->accept_on_stdin = o->accept_on_stdin;
	sc->reuseport = o->reuseport;
	sc->mark = o->mark;
	sc->tproxy_mark = o->tproxy_mark;
	for (int i = 0; i < o->inbound_src.n; i++) {
		struct target t;
		const char *a = o->inbound_src.v[i];
		if (!parse_target(a, 0, &t))
			usage_error("--bind-inbound-source is not an IPv4 or IPv6 address", a);
		int fi = family_index(t.ss.ss_family);
		if (sc->has_src[fi])
			usage_error("--bind-inbound-source given twice for one family", a);
		sc->has_src[fi] = true;
		sc->src[fi] = t;
	}
}

static int run_sidecar(const struct opts *o)
{
	struct sidecar sc;
	static struct sc_own own = {.lock = PTHREAD_MUTEX_INITIALIZER};

	sc_config(o, &sc);
	sc.own = &own;
	fprintf(stderr, "sl-probe sidecar: %s uid=%u gid=%u\n", sc.id, (unsigned)getuid(),
		(unsigned)getgid());
	if (install_signal_handlers() < 0) {
		cmd_fail("sidecar", "sigaction", -1);
		return 1;
	}
	if (pthread_attr_init(&sc.attr) != 0 ||
	    pthread_attr_setdetachstate(&sc.attr, PTHREAD_CREATE_DETACHED) != 0 ||
	    pthread_attr_setstacksize(&sc.attr, SIDECAR_STACK_SIZE) != 0 ||
	    pthread_mutex_init(&sc.lock, NULL) != 0 || pthread_cond_init(&sc.idle, NULL) != 0) {
		fprintf(stderr, "sl-probe sidecar: pthread setup failed\n");
		return 1;
	}
	int rc = sc_open_listeners(&sc, o) < 0 ? -1 : 0;
	if (rc == 0) {
		printf("ready\n");
		rc = sc.accept_on_stdin ? sc_serve_on_stdin(&sc) : sc_serve(&sc);
	}
	/* close the listeners first so nothing new arrives while we wait */
	for (int i = 0; i < sc.nls; i++)
		close(sc.ls[i].fd);
	sc_wait_idle(&sc);
	return rc < 0 ? 1 : 0;
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
	if (strcmp(s, "sidecar") == 0)
		return CMD_SIDECAR;
	if (strcmp(s, "batch") == 0)
		return CMD_BATCH;
	if (strcmp(s, "hold") == 0)
		return CMD_HOLD;
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
	/* batch has positional targets: it parses its own arguments */
	if (cmd == CMD_BATCH)
		return run_batch(argc - 2, argv + 2);
	parse_opts(cmd, argc - 2, argv + 2, &o);
	if (cmd == CMD_SIDECAR)
		return run_sidecar(&o);
	if (!parse_target(o.addr, o.port, &t))
		usage_error("--addr is not an IPv4 or IPv6 address", o.addr);

	switch (cmd) {
	case CMD_SERVE:
		return run_serve(&o, &t);
	case CMD_CONNECT:
		return run_connect(&o, &t);
	case CMD_BENCH:
		return run_bench(&o, &t);
	case CMD_HOLD:
		return run_hold(&o, &t);
	case CMD_SIDECAR:
	case CMD_BATCH:
		break; /* handled above: they have no --addr/--port */
	}
	return EXIT_USAGE;
}
