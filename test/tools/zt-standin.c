/*
 * zt-standin: a stand-in for Istio's node proxy, ztunnel, for sluice's kernel tests.
 *
 * Build (from the repository root; `make all` does this):
 *
 *   cc -O2 -Wall -Wextra -Werror -pthread -o build/zt-standin test/tools/zt-standin.c
 *
 * Only libc and pthreads. Istio's ztunnel binary cannot run on the test machines, so this
 * program plays its part towards sluice's agent, which serves ZDS as istio-cni's node agent
 * does. It is written from ztunnel's protocol and documented behaviour (istio/ztunnel
 * proto/zds.proto, src/inpod/{protocol,statemanager,workloadmanager,netns,config}.rs,
 * src/socket.rs, src/proxy.rs, src/proxy/{inbound_passthrough,outbound}.rs, src/config.rs)
 * and istio's server side (istio/istio cni/pkg/nodeagent/ztunnelserver*.go), never from
 * sluice's own code: it is meant to be an independent peer.
 *
 *   zt-standin --uds PATH --id ID [--mark N (0x539)] [--reconnect-ms MS (200)]
 *              [--nack-uid UID]... [--nack-adds N (0)] [--ack-delay-ms MS (0)]
 *              [--termination-deadline-ms MS (5000)] [--upstream-timeout-ms MS (2000)]
 *
 * ZDS, as ztunnel speaks it. ztunnel is the client of an AF_UNIX SOCK_SEQPACKET socket; it
 * connects (retrying every --reconnect-ms while the path is absent or refuses), sends
 * ZdsHello{V1}, then answers every WorkloadRequest with exactly one WorkloadResponse{ack{error}}
 * (empty error: ack). Requests are read into 1024 bytes with room for a few fds.
 *   add{uid, workload_info}  + exactly one SCM_RIGHTS fd, the pod's netns: start the pod's
 *                            proxy inside that netns (same netns by st_dev/st_ino: nothing to
 *                            do; another netns: the old proxy is stopped first).
 *   keep{uid}                only before snapshot_sent: the uid survives the reconcile.
 *   del{uid}                 stop the pod's proxy (before snapshot_sent: only forget the uid,
 *                            so the reconcile stops it, as ztunnel does).
 *   snapshot_sent{}          reconcile: proxies running from before this connection that were
 *                            neither added nor kept during it are stopped.
 * What ztunnel does on errors, this does too:
 *   - a message it cannot read (truncated, undecodable, no payload, add without exactly one fd,
 *     any other request with an fd): nack "failure to read message : ...", then drop the
 *     connection and reconnect (workloadmanager.rs: ReceiveMessageError ends the stream);
 *   - a proxy that fails to start: nack "failure to start proxy : ...", the connection stays,
 *     and the workload is retried every 5 s while connected (statemanager.rs pending_workloads);
 *   - a protocol error (add without workload_info, keep after snapshot_sent, a second
 *     snapshot_sent): nack "failure to process message : ...", then ztunnel exits with status 1
 *     (app.rs: a WorkloadProxyManager error exits the process); so does this program.
 * On EOF the proxies keep running; the stand-in reconnects and says hello again.
 * Test knobs: --nack-uid UID nacks every add for UID with "injected nack", --nack-adds N the
 * first N well-formed adds of the process's lifetime (the request is otherwise ignored: a
 * running proxy for that uid keeps running, nothing becomes pending; the uid still counts as
 * named by the snapshot, as a failed add does in ztunnel); --ack-delay-ms waits before every
 * answer.
 *
 * The in-pod proxy, one per pod: a thread that setns()es into the pod's netns and opens, in
 * ztunnel's order (proxyfactory.rs: DNS first, then inbound, inbound plaintext, outbound):
 *   DNS   127.0.0.1:15053 TCP+UDP, and [::1]:15053 when lo's IPv6 is enabled in the pod
 *         (ztunnel reads /proc/sys/net/ipv6/conf/lo/disable_ipv6 inside the pod);
 *   15008 (HBONE), 15006 (inbound plaintext), 15001 (outbound) TCP on [::] with IPV6_V6ONLY=0
 *         (dual stack), or on 0.0.0.0 where AF_INET6 sockets are unavailable;
 * every socket with SO_MARK (--mark; 0 sets none, as ztunnel's NonZeroU32), SO_REUSEPORT,
 * TCP ones SO_REUSEADDR and listen(128), and the three proxy listeners IP_TRANSPARENT (plus
 * IPV6_TRANSPARENT), best effort as ztunnel's maybe_set_transparent. Then `listening`, then ack.
 *
 * Connections (one thread each up to CONN_THREADS_MAX, beyond that handled by the pod's
 * thread; never on the ZDS thread), every reply one line, then FIN:
 *   15001 ztunnel ID via=out orig=A how=H local=A peer=A upstream_peer=A upstream=LINE
 *   15006 ztunnel ID via=in orig=A how=H local=A peer=A upstream_src=A upstream=LINE
 *   15008 ztunnel ID via=hbone local=A peer=A
 *   15053 ztunnel ID via=dns local=A peer=A        (TCP: the line; UDP: one datagram)
 * orig is read as ztunnel reads it (socket.rs orig_dst_addr_or_default, through socket2):
 * getsockopt(SOL_IP, SO_ORIGINAL_DST) into a zeroed sockaddr_storage with optlen 128, else
 * getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST) the same way, else the local address; `how` says
 * which answered (ipv4|ipv6|local). The upstream is a new socket in the pod's netns with the
 * mark, connected within --upstream-timeout-ms; LINE is its first line (<= 512 bytes, within the
 * same time again), or ERR:<errno>
 * (ERR:40, ELOOP, without connecting, for a destination on the proxy's own ports, as ztunnel's
 * illegal_ports check refuses: outbound only towards loopback, inbound always). Inbound
 * connects from the client's own address (IP_TRANSPARENT + IP_FREEBIND, bind to the peer's
 * address, port 0) unless the listener could not be made transparent or the client's address
 * is the destination's (proxy.rs freebind_connect). An address unknown is printed `-`.
 * Stopping a pod's proxy (del, snapshot, replaced) closes its sockets and cuts its connections
 * at once (ztunnel drains a removed pod with DrainMode::Immediate, inpod/statemanager.rs): a
 * connection cut while waiting on its upstream replies ERR:125 (ECANCELED) and is closed.
 * Addresses: IPv4 `a.b.c.d:port` (IPv4-mapped IPv6 as plain IPv4), IPv6 `[addr]:port`.
 *
 * Output: one JSON object per line on stdout (line-buffered), errors as text on stderr.
 *   {"event":"connected"} {"event":"hello"} {"event":"disconnected","reason":R}
 *   {"event":"add","uid":U,"name":N,"namespace":NS,"serviceAccount":SA,"error":E,"proxy":P}
 *       P: started|replaced|unchanged|pending|none
 *   {"event":"listening","uid":U,"hbone":A,"inbound":A,"outbound":A,"dns":[A..],"transparent":B}
 *   {"event":"keep","uid":U,"error":E}   {"event":"del","uid":U,"stopped":B,"error":E}
 *   {"event":"snapshot","kept":[U..],"removed":[U..],"pending":[U..],"error":E}
 *   {"event":"stopped","uid":U,"reason":"del|snapshot|replaced|exit"}
 *   {"event":"retry","uid":U,"error":E}   {"event":"read-error","error":E}
 *   {"event":"protocol-error","error":E}  {"event":"exit","status":N}
 *   {"event":"conn","uid":U,"via":"out|in|hbone|dns", ...the reply's fields...}
 *   {"event":"draining","proxies":N,"connections":N,"deadlineMs":N}  {"event":"drained","cut":N}
 * Events are printed before the answer (or reply) they describe is sent.
 * SIGTERM/SIGINT: a graceful drain, as ztunnel's (app.rs Bound::wait_termination starts
 * DrainMode::Graceful; drain.rs run_with_drain; config.rs self_termination_deadline, by default
 * DEFAULT_CONNECTION_TERMINATION_DEADLINE, 5 s). The ZDS connection, if any, ends
 * (`disconnected` "stopping"); every pod's proxy stops accepting, all at once: its serve loop
 * ends and its sockets close (`draining` once all have, or at the deadline: how many
 * connections are open); the connections go on and end on their own until
 * --termination-deadline-ms after the drain began; those still open then are cut as a stop
 * cuts them (`drained`: how many). Then `stopped` "exit" per pod and
 * `exit` 0. A second signal during the drain exits at once with status 1. A protocol error
 * (status 1) stops the proxies at once, as ztunnel's process::exit does.
 */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sock-util.h"

#define EXIT_PROTOCOL 1
#define EXIT_USAGE    2

/* --id goes into every reply line: one short token. */
#define ID_MAX		    64
/* Both ends of ZDS read into 1024 bytes (protocol.rs, ztunnelserver_linux.go). */
#define ZDS_MSG_MAX	    1024
/* Room for more fds than the one allowed, so a request with two is seen and rejected. */
#define ZDS_FDS_MAX	    4
/* A nack's text; keeps every response well under the server's 1024 bytes. */
#define ZDS_ERR_MAX	    512
/* istio's readWriteDeadline: a send the server does not take within it is a dead connection. */
#define ZDS_SEND_TIMEOUT_MS 5000
/* ztunnel's RETRY_DURATION for proxies that failed to start. */
#define RETRY_PENDING_MS    5000
#define NACK_UIDS_MAX	    64
/* Running plus pending workloads; each running one holds 8-9 fds and a thread. */
#define WORKLOADS_MAX	    512
/* uids added or kept before snapshot_sent on one connection. */
#define SNAPSHOT_NAMES_MAX  4096
/* Connection threads across all pods; beyond, the pod's own thread handles the connection. */
#define CONN_THREADS_MAX    256
#define THREAD_STACK_SIZE   (256 * 1024)
/* Upstream connect, and the read of its line, each (--upstream-timeout-ms). */
#define UPSTREAM_MS	    2000
#define UPSTREAM_LINE_MAX   512
/* Holds the longest reply: id, five addresses and an upstream line. */
#define REPLY_MAX	    1024
/* After the reply: how long and how many reads to wait for the client's EOF. */
#define FINISH_MS	    2000
#define FINISH_READS_MAX    16
/* Connections (or datagrams) taken from one socket per poll() round. */
#define ACCEPT_BATCH	    16
/* ztunnel's listen(128) (inpod/config.rs InPodSocketPortReuseFactory). */
#define LISTEN_BACKLOG	    128
#define MS_MAX		    3600000L
/* ztunnel's DEFAULT_CONNECTION_TERMINATION_DEADLINE (config.rs): a drain's connections get
 * this long to end on their own */
#define DRAIN_DEADLINE_MS   5000
/* An event line longer than this (it would take ~500 long uids) is dropped with an error. */
#define EVENT_MAX	    (4 * 1024 * 1024)
#define ADDR_TEXT_MAX	    (INET6_ADDRSTRLEN + 16)

#define PORT_OUTBOUND	  15001
#define PORT_INBOUND	  15006
#define PORT_HBONE	  15008
#define PORT_DNS	  15053
/* 15008, 15006, 15001 and DNS TCP+UDP on 127.0.0.1 and ::1 */
#define PROXY_SOCKETS_MAX 7

/* ztunnel's nack texts start with these (workloadmanager.rs); servers may log or match them. */
#define NACK_READ     "failure to read message : "
#define NACK_START    "failure to start proxy : "
#define NACK_PROCESS  "failure to process message : "
#define NACK_PROTOCOL NACK_PROCESS "protocol error: "

/* ------------------------------------------------------------------ */
/* options                                                             */
/* ------------------------------------------------------------------ */

struct options {
	const char *uds;
	const char *id;
	uint32_t mark;
	long reconnect_ms;
	long ack_delay_ms;
	long nack_adds;
	long termination_deadline_ms;
	long upstream_ms;
	const char *nack_uids[NACK_UIDS_MAX];
	unsigned n_nack_uids;
};

static struct options opt = {.mark = 0x539,
			     .reconnect_ms = 200,
			     .termination_deadline_ms = DRAIN_DEADLINE_MS,
			     .upstream_ms = UPSTREAM_MS};

/* Set once by the signal thread; stop_fd becomes readable at the same time. */
static atomic_bool stopping;
static int stop_fd = -1;
static atomic_uint conn_threads;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

/* ------------------------------------------------------------------ */
/* time, waiting, errors                                               */
/* ------------------------------------------------------------------ */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int remaining_ms(int64_t deadline)
{
	int64_t left = deadline - now_ms();

	return left < 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
}

enum wait_result { WAIT_READY, WAIT_TIMEOUT, WAIT_CANCELLED, WAIT_ERROR };

/* Waits for `events` on fd (none when fd < 0), or for cancel_fd to become readable, or for the
 * deadline (< 0: none). errno is ETIMEDOUT / ECANCELED / poll's for the non-ready results. */
static enum wait_result wait_fd(int fd, short events, int cancel_fd, int64_t deadline)
{
	for (;;) {
		struct pollfd p[2] = {{.fd = fd, .events = events},
				      {.fd = cancel_fd, .events = POLLIN}};
		int r = poll(p, 2, deadline < 0 ? -1 : remaining_ms(deadline));

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return WAIT_ERROR;
		if (p[1].revents) {
			errno = ECANCELED;
			return WAIT_CANCELLED;
		}
		if (r == 0) {
			errno = ETIMEDOUT;
			return WAIT_TIMEOUT;
		}
		return WAIT_READY;
	}
}

/* Sleeps ms unless the process is told to stop; true when it is. */
static bool sleep_unless_stopped(long ms)
{
	return wait_fd(-1, 0, stop_fd, now_ms() + ms) == WAIT_CANCELLED || atomic_load(&stopping);
}

/* Thread-safe strerror. */
static const char *errtext(int err)
{
	const char *s = strerrordesc_np(err);

	return s ? s : "unknown error";
}

/* One line on stderr, written at once so threads do not interleave. */
__attribute__((format(printf, 1, 2))) static void log_err(const char *fmt, ...)
{
	char line[1024];
	int n = snprintf(line, sizeof(line), "zt-standin %s: ", opt.id ? opt.id : "-");
	va_list ap;

	if (n < 0 || (size_t)n >= sizeof(line))
		return;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		return;
	size_t len = strlen(line);
	line[len++] = '\n';
	(void)!write(STDERR_FILENO, line, len);
}

/* ------------------------------------------------------------------ */
/* UTF-8 (protobuf strings must be valid; JSON output stays valid)     */
/* ------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at p (1..4), 0 when p does not start one. */
static size_t utf8_seq(const uint8_t *p, size_t n)
{
	if (n == 0)
		return 0;
	if (p[0] < 0x80)
		return 1;
	size_t len = p[0] >= 0xc2 && p[0] <= 0xdf   ? 2
		     : p[0] >= 0xe0 && p[0] <= 0xef ? 3
		     : p[0] >= 0xf0 && p[0] <= 0xf4 ? 4
						    : 0;
	if (len == 0 || len > n)
		return 0;
	for (size_t i = 1; i < len; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	/* overlong forms, UTF-16 surrogates and code points past U+10FFFF */
	if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] > 0x9f) ||
	    (p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] > 0x8f))
		return 0;
	return len;
}

static bool utf8_valid(const uint8_t *p, size_t n)
{
	while (n > 0) {
		size_t len = utf8_seq(p, n);

		if (len == 0)
			return false;
		p += len;
		n -= len;
	}
	return true;
}

/* The longest prefix of s (valid UTF-8) of at most max bytes that ends on a character. */
static size_t utf8_clip(const char *s, size_t max)
{
	size_t len = strlen(s);

	if (len <= max)
		return len;
	while (max > 0 && ((uint8_t)s[max] & 0xc0) == 0x80)
		max--;
	return max;
}

/* ------------------------------------------------------------------ */
/* owned byte strings (uids may hold any valid UTF-8, NUL included)    */
/* ------------------------------------------------------------------ */

struct text {
	size_t len;
	char *s; /* NUL-terminated; len is authoritative */
};

static bool text_set(struct text *t, const char *s, size_t len)
{
	char *copy = malloc(len + 1);

	if (!copy)
		return false;
	memcpy(copy, s, len);
	copy[len] = '\0';
	free(t->s);
	t->s = copy;
	t->len = len;
	return true;
}

static void text_free(struct text *t)
{
	free(t->s);
	t->s = NULL;
	t->len = 0;
}

static bool text_eq(const struct text *t, const char *s, size_t len)
{
	return t->len == len && memcmp(t->s, s, len) == 0;
}

/* ------------------------------------------------------------------ */
/* events: one JSON object per line on stdout                          */
/* ------------------------------------------------------------------ */

struct jline {
	char *buf;
	size_t len, cap;
	bool failed; /* out of memory or over EVENT_MAX: the event is dropped */
};

static void jl_append(struct jline *j, const char *s, size_t n)
{
	if (j->failed)
		return;
	if (j->len + n + 2 > j->cap) {
		size_t cap = j->cap ? j->cap : 256;

		while (cap < j->len + n + 2)
			cap *= 2;
		char *buf = cap <= EVENT_MAX ? realloc(j->buf, cap) : NULL;
		if (!buf) {
			j->failed = true;
			return;
		}
		j->buf = buf;
		j->cap = cap;
	}
	memcpy(j->buf + j->len, s, n);
	j->len += n;
}

static void jl_raw(struct jline *j, const char *s)
{
	jl_append(j, s, strlen(s));
}

/* A JSON string; bytes that are not valid UTF-8 become U+FFFD. */
static void jl_string(struct jline *j, const char *s, size_t n)
{
	const uint8_t *p = (const uint8_t *)s;

	jl_raw(j, "\"");
	while (n > 0) {
		size_t len = utf8_seq(p, n);
		char esc[8];

		if (len == 0) {
			jl_raw(j, "\\ufffd");
			len = 1;
		} else if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			jl_append(j, esc, 2);
		} else if (*p < 0x20 || *p == 0x7f) {
			snprintf(esc, sizeof(esc), "\\u%04x", *p);
			jl_raw(j, esc);
		} else {
			jl_append(j, (const char *)p, len);
		}
		p += len;
		n -= len;
	}
	jl_raw(j, "\"");
}

static void jl_begin(struct jline *j, const char *event)
{
	memset(j, 0, sizeof(*j));
	jl_raw(j, "{\"event\":");
	jl_string(j, event, strlen(event));
}

static void jl_field(struct jline *j, const char *key, const char *s, size_t n)
{
	jl_raw(j, ",\"");
	jl_raw(j, key);
	jl_raw(j, "\":");
	jl_string(j, s, n);
}

static void jl_cstr(struct jline *j, const char *key, const char *s)
{
	jl_field(j, key, s, strlen(s));
}

static void jl_text(struct jline *j, const char *key, const struct text *t)
{
	jl_field(j, key, t->s ? t->s : "", t->len);
}

static void jl_bool(struct jline *j, const char *key, bool v)
{
	jl_raw(j, ",\"");
	jl_raw(j, key);
	jl_raw(j, v ? "\":true" : "\":false");
}

/* Closes the object and writes it as one line. */
static void jl_emit(struct jline *j)
{
	jl_raw(j, "}\n");
	if (j->failed) {
		log_err("an event line could not be built (out of memory or over %d bytes); "
			"dropped",
			EVENT_MAX);
	} else {
		pthread_mutex_lock(&out_lock);
		fwrite(j->buf, 1, j->len, stdout);
		fflush(stdout);
		pthread_mutex_unlock(&out_lock);
	}
	free(j->buf);
	memset(j, 0, sizeof(*j));
}

static void emit_simple(const char *event, const char *key, const char *value)
{
	struct jline j;

	jl_begin(&j, event);
	if (key)
		jl_cstr(&j, key, value);
	jl_emit(&j);
}

/* ------------------------------------------------------------------ */
/* protobuf: the few ZDS messages, by the field numbers of zds.proto   */
/* ------------------------------------------------------------------ */

enum pb_wire { PB_VARINT = 0, PB_I64 = 1, PB_LEN = 2, PB_SGROUP = 3, PB_EGROUP = 4, PB_I32 = 5 };

struct pb_reader {
	const uint8_t *p, *end;
};

#define PB_GROUP_DEPTH_MAX 16

struct pb_error {
	char text[256];
};

__attribute__((format(printf, 2, 3))) static bool pb_fail(struct pb_error *e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(e->text, sizeof(e->text), fmt, ap);
	va_end(ap);
	return false;
}

static bool pb_varint(struct pb_reader *r, uint64_t *v)
{
	uint64_t x = 0;

	for (unsigned i = 0; i < 10; i++) {
		if (r->p >= r->end)
			return false;
		uint8_t b = *r->p++;
		/* the tenth byte holds bit 63 only */
		if (i == 9 && b > 1)
			return false;
		x |= (uint64_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80)) {
			*v = x;
			return true;
		}
	}
	return false;
}

static bool pb_key(struct pb_reader *r, uint32_t *field, unsigned *wire, const char *msg,
		   struct pb_error *e)
{
	uint64_t key;

	if (!pb_varint(r, &key))
		return pb_fail(e, "%s: truncated or overlong field key", msg);
	if (key > UINT32_MAX || (key >> 3) == 0)
		return pb_fail(e, "%s: invalid field key %llu", msg, (unsigned long long)key);
	*field = (uint32_t)(key >> 3);
	*wire = (unsigned)(key & 7);
	return true;
}

/* The payload of a length-delimited field. */
static bool pb_len(struct pb_reader *r, struct pb_reader *sub, const char *msg, uint32_t field,
		   struct pb_error *e)
{
	uint64_t len;

	if (!pb_varint(r, &len))
		return pb_fail(e, "%s field %u: truncated or overlong length", msg, field);
	if (len > (uint64_t)(r->end - r->p))
		return pb_fail(e, "%s field %u: length %llu past the end of the message (%zu left)",
			       msg, field, (unsigned long long)len, (size_t)(r->end - r->p));
	sub->p = r->p;
	sub->end = r->p + len;
	r->p += len;
	return true;
}

/* Skips a field this program has no use for, of any wire type (groups included). */
static bool pb_skip(struct pb_reader *r, uint32_t field, unsigned wire, unsigned depth,
		    const char *msg, struct pb_error *e)
{
	struct pb_reader sub;
	uint64_t v;

	switch (wire) {
	case PB_VARINT:
		if (!pb_varint(r, &v))
			return pb_fail(e, "%s field %u: truncated or overlong varint", msg, field);
		return true;
	case PB_I64:
	case PB_I32: {
		size_t n = wire == PB_I64 ? 8 : 4;
		if ((size_t)(r->end - r->p) < n)
			return pb_fail(e, "%s field %u: truncated fixed%zu", msg, field, n * 8);
		r->p += n;
		return true;
	}
	case PB_LEN:
		return pb_len(r, &sub, msg, field, e);
	case PB_SGROUP:
		if (depth >= PB_GROUP_DEPTH_MAX)
			return pb_fail(e, "%s field %u: groups nested deeper than %d", msg, field,
				       PB_GROUP_DEPTH_MAX);
		for (;;) {
			uint32_t f;
			unsigned w;

			if (r->p >= r->end)
				return pb_fail(e, "%s field %u: group without its end", msg, field);
			if (!pb_key(r, &f, &w, msg, e))
				return false;
			if (w == PB_EGROUP) {
				if (f != field)
					return pb_fail(e, "%s: group %u ended by field %u", msg,
						       field, f);
				return true;
			}
			if (!pb_skip(r, f, w, depth + 1, msg, e))
				return false;
		}
	case PB_EGROUP:
		return pb_fail(e, "%s field %u: end of a group that was not started", msg, field);
	default:
		return pb_fail(e, "%s field %u: invalid wire type %u", msg, field, wire);
	}
}

/* A string field; holds at most a whole message, so the buffer always fits it. */
struct zstr {
	size_t len;
	char s[ZDS_MSG_MAX + 1];
};

static bool pb_string(struct pb_reader *r, uint32_t field, unsigned wire, const char *what,
		      struct zstr *out, struct pb_error *e)
{
	struct pb_reader sub;

	if (wire != PB_LEN)
		return pb_fail(e, "%s: wire type %u, expected %u (string)", what, wire, PB_LEN);
	if (!pb_len(r, &sub, what, field, e))
		return false;
	size_t n = (size_t)(sub.end - sub.p);
	if (!utf8_valid(sub.p, n))
		return pb_fail(e, "%s: string is not valid UTF-8", what);
	memcpy(out->s, sub.p, n);
	out->s[n] = '\0';
	out->len = n;
	return true;
}

enum zds_kind { ZDS_NONE, ZDS_ADD, ZDS_KEEP, ZDS_DEL, ZDS_SNAPSHOT_SENT };

/* WorkloadRequest, flattened: the oneof's variant and the fields of all variants. */
struct zds_request {
	enum zds_kind kind;
	struct zstr uid;
	bool has_info;
	struct zstr name, ns, sa;
};

/* WorkloadInfo: name = 1, namespace = 2, service_account = 3 (4 is reserved). */
static bool decode_workload_info(struct pb_reader r, struct zds_request *q, struct pb_error *e)
{
	while (r.p < r.end) {
		uint32_t f;
		unsigned w;
		bool ok;

		if (!pb_key(&r, &f, &w, "WorkloadInfo", e))
			return false;
		switch (f) {
		case 1:
			ok = pb_string(&r, f, w, "WorkloadInfo.name", &q->name, e);
			break;
		case 2:
			ok = pb_string(&r, f, w, "WorkloadInfo.namespace", &q->ns, e);
			break;
		case 3:
			ok = pb_string(&r, f, w, "WorkloadInfo.service_account", &q->sa, e);
			break;
		default:
			ok = pb_skip(&r, f, w, 0, "WorkloadInfo", e);
		}
		if (!ok)
			return false;
	}
	return true;
}

/* The variant's fields: AddWorkload{uid = 1, workload_info = 2}, KeepWorkload{uid = 1},
 * DelWorkload{uid = 2}, SnapshotSent{}. Repeated fields merge as protobuf says: the last
 * scalar wins, embedded messages merge. */
static bool decode_variant(struct pb_reader r, struct zds_request *q, struct pb_error *e)
{
	static const char *const names[] = {"", "AddWorkload", "KeepWorkload", "DelWorkload",
					    "SnapshotSent"};
	const char *msg = names[q->kind];

	while (r.p < r.end) {
		uint32_t f;
		unsigned w;
		bool ok;

		if (!pb_key(&r, &f, &w, msg, e))
			return false;
		if ((q->kind == ZDS_ADD || q->kind == ZDS_KEEP) && f == 1) {
			const char *what = q->kind == ZDS_ADD ? "AddWorkload.uid"
							      : "KeepWorkload.uid";

			ok = pb_string(&r, f, w, what, &q->uid, e);
		} else if (q->kind == ZDS_DEL && f == 2) {
			ok = pb_string(&r, f, w, "DelWorkload.uid", &q->uid, e);
		} else if (q->kind == ZDS_ADD && f == 2) {
			struct pb_reader sub;

			if (w != PB_LEN)
				return pb_fail(e,
					       "AddWorkload.workload_info: wire type %u, "
					       "expected %u",
					       w, PB_LEN);
			ok = pb_len(&r, &sub, msg, f, e) && decode_workload_info(sub, q, e);
			q->has_info = true;
		} else {
			ok = pb_skip(&r, f, w, 0, msg, e);
		}
		if (!ok)
			return false;
	}
	return true;
}

/* WorkloadRequest{oneof payload: add = 1, del = 2, snapshot_sent = 3, keep = 5}. */
static bool zds_decode_request(const uint8_t *buf, size_t len, struct zds_request *q,
			       struct pb_error *e)
{
	struct pb_reader r = {buf, buf + len};

	memset(q, 0, sizeof(*q));
	while (r.p < r.end) {
		uint32_t f;
		unsigned w;

		if (!pb_key(&r, &f, &w, "WorkloadRequest", e))
			return false;
		enum zds_kind kind = f == 1   ? ZDS_ADD
				     : f == 5 ? ZDS_KEEP
				     : f == 2 ? ZDS_DEL
				     : f == 3 ? ZDS_SNAPSHOT_SENT
					      : ZDS_NONE;
		if (kind == ZDS_NONE) {
			if (!pb_skip(&r, f, w, 0, "WorkloadRequest", e))
				return false;
			continue;
		}
		if (w != PB_LEN)
			return pb_fail(e, "WorkloadRequest field %u: wire type %u, expected %u", f,
				       w, PB_LEN);
		/* another variant of the oneof replaces the one before; the same one merges */
		if (kind != q->kind) {
			memset(q, 0, sizeof(*q));
			q->kind = kind;
		}
		struct pb_reader sub;
		if (!pb_len(&r, &sub, "WorkloadRequest", f, e) || !decode_variant(sub, q, e))
			return false;
	}
	return true;
}

static size_t pb_put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

/* WorkloadResponse{ack = 1: Ack{error = 1}}; an empty error is left out, as protobuf does.
 * error is at most ZDS_ERR_MAX bytes, so the result fits buf[ZDS_ERR_MAX + 16]. */
static size_t zds_encode_ack(uint8_t *buf, const char *error, size_t error_len)
{
	uint8_t inner[ZDS_ERR_MAX + 8];
	size_t n = 0, m = 0;

	if (error_len > 0) {
		inner[n++] = 1 << 3 | PB_LEN;
		n += pb_put_varint(inner + n, error_len);
		memcpy(inner + n, error, error_len);
		n += error_len;
	}
	buf[m++] = 1 << 3 | PB_LEN;
	m += pb_put_varint(buf + m, n);
	memcpy(buf + m, inner, n);
	return m + n;
}

/* ZdsHello{version = 1: V1 = 1} */
static const uint8_t zds_hello[] = {1 << 3 | PB_VARINT, 1};

/* ------------------------------------------------------------------ */
/* addresses                                                           */
/* ------------------------------------------------------------------ */

/* IPv4-mapped IPv6 becomes IPv4, as ztunnel's to_canonical. */
static void sa_canonical(struct sockaddr_storage *ss)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

	if (ss->ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
		return;
	struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = s6->sin6_port};
	memcpy(&s4.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, &s4, sizeof(s4));
}

static socklen_t sa_len(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static unsigned sa_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

static bool sa_same_ip(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
		      &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
}

static bool sa_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
	return ss->ss_family == AF_INET6 &&
	       IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)ss)->sin6_addr);
}

/* `a.b.c.d:port` or `[addr]:port`; `-` for anything else. */
static void sa_text(const struct sockaddr_storage *in, char *buf, size_t len)
{
	struct sockaddr_storage ss = *in;
	char host[INET6_ADDRSTRLEN];

	sa_canonical(&ss);
	if (ss.ss_family == AF_INET &&
	    inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host)))
		snprintf(buf, len, "%s:%u", host, sa_port(&ss));
	else if (ss.ss_family == AF_INET6 &&
		 inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host)))
		snprintf(buf, len, "[%s]:%u", host, sa_port(&ss));
	else
		snprintf(buf, len, "-");
}

static void sa_v4(struct sockaddr_storage *ss, uint32_t addr, unsigned port)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

	memset(ss, 0, sizeof(*ss));
	s4->sin_family = AF_INET;
	s4->sin_addr.s_addr = htonl(addr);
	s4->sin_port = htons((uint16_t)port);
}

static void sa_v6(struct sockaddr_storage *ss, const struct in6_addr *addr, unsigned port)
{
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	s6->sin6_family = AF_INET6;
	s6->sin6_addr = *addr;
	s6->sin6_port = htons((uint16_t)port);
}

/* ------------------------------------------------------------------ */
/* in-pod proxy: types                                                 */
/* ------------------------------------------------------------------ */

enum via { VIA_OUT, VIA_IN, VIA_HBONE, VIA_DNS };
static const char *const via_names[] = {"out", "in", "hbone", "dns"};

struct proxy_socket {
	int fd;
	enum via via;
	int type; /* SOCK_STREAM or SOCK_DGRAM */
	struct sockaddr_storage addr;
};

/* CLOSED: the serve loop has ended and the listeners are closed; it accepts nothing more. */
enum proxy_state { PROXY_STARTING, PROXY_LISTENING, PROXY_FAILED, PROXY_CLOSED };

/* One pod's proxy. Its thread lives in the pod's netns; the connection threads it creates
 * inherit that netns, so their upstream sockets are the pod's too. */
struct proxy {
	struct text uid;
	int netns_fd; /* the workload's, read by the starting thread only */
	uint32_t mark;
	/* eventfds, each written once: stop_fd ends the serve loop (the listeners close), cut_fd
	 * cuts the connections (their threads poll it); a stop writes both, a drain stop_fd first */
	int stop_fd;
	int cut_fd;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* under lock */
	enum proxy_state state;
	unsigned conns;
	char error[ZDS_ERR_MAX];
	/* owned by the proxy's thread; read by others only once LISTENING */
	struct proxy_socket sockets[PROXY_SOCKETS_MAX];
	unsigned nsockets;
	/* IP_TRANSPARENT took on the inbound listener: inbound connects from the client's address
	 * (ztunnel's enable_orig_src) */
	bool transparent;
};

/* An accepted connection, handed to its own thread (or handled by the proxy's thread). */
struct conn {
	struct proxy *p;
	int fd;
	enum via via;
	struct sockaddr_storage peer;
};

/* What a connection saw, for its event and its reply line. */
struct conn_report {
	const char *how; /* ipv4|ipv6|local, for out and in */
	char orig[ADDR_TEXT_MAX], local[ADDR_TEXT_MAX], peer[ADDR_TEXT_MAX];
	char upstream_addr[ADDR_TEXT_MAX]; /* upstream_peer (out) or upstream_src (in) */
	char upstream[UPSTREAM_LINE_MAX + 1];
};

/* ------------------------------------------------------------------ */
/* in-pod proxy: connections                                           */
/* ------------------------------------------------------------------ */

static int set_int_opt(int fd, int level, int name, int value)
{
	return setsockopt(fd, level, name, &value, sizeof(value));
}

/* The original destination as ztunnel asks for it (socket2's original_dst_v4/_v6): a zeroed
 * sockaddr_storage, optlen = its size, the family as the kernel wrote it. */
static const char *read_orig_dst(int fd, struct sockaddr_storage *orig)
{
	socklen_t len = sizeof(*orig);

	memset(orig, 0, sizeof(*orig));
	if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, orig, &len) == 0)
		return "ipv4";
	len = sizeof(*orig);
	memset(orig, 0, sizeof(*orig));
	if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, orig, &len) == 0)
		return "ipv6";
	len = sizeof(*orig);
	memset(orig, 0, sizeof(*orig));
	if (getsockname(fd, (struct sockaddr *)orig, &len) != 0)
		memset(orig, 0, sizeof(*orig));
	return "local";
}

static bool is_proxy_port(unsigned port)
{
	return port == PORT_OUTBOUND || port == PORT_INBOUND || port == PORT_HBONE;
}

/* Non-blocking connect bounded by deadline; 0, or -1 with errno. */
static int connect_within(int fd, const struct sockaddr_storage *dst, int cancel_fd, int64_t deadline)
{
	if (connect(fd, (const struct sockaddr *)dst, sa_len(dst)) == 0)
		return 0;
	if (errno != EINPROGRESS)
		return -1;
	if (wait_fd(fd, POLLOUT, cancel_fd, deadline) != WAIT_READY)
		return -1;
	return connect_result(fd);
}

/* The upstream's first line, without its end; 0, or -1 with errno. A peer that closes
 * without a newline gives what it sent. */
static int read_line(int fd, char *line, size_t cap, int cancel_fd, int64_t deadline)
{
	size_t len = 0;

	while (len < cap - 1) {
		if (wait_fd(fd, POLLIN, cancel_fd, deadline) != WAIT_READY)
			return -1;
		ssize_t n = recv(fd, line + len, cap - 1 - len, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		char *nl = memchr(line + len, '\n', (size_t)n);
		len += (size_t)n;
		if (nl) {
			len = (size_t)(nl - line);
			break;
		}
	}
	if (len > 0 && line[len - 1] == '\r')
		len--;
	line[len] = '\0';
	/* a NUL would cut the reply line short; show it */
	for (size_t i = 0; i < len; i++)
		if (line[i] == '\0')
			line[i] = '?';
	return 0;
}

/* A new TCP socket for an upstream connection, configured as ztunnel's in-pod socket
 * factory does: the mark, TCP_NODELAY. */
static int upstream_socket(int family, uint32_t mark)
{
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if ((mark && set_int_opt(fd, SOL_SOCKET, SO_MARK, (int)mark) < 0) ||
	    set_int_opt(fd, IPPROTO_TCP, TCP_NODELAY, 1) < 0) {
		int err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

/* ztunnel's set_freebind_and_transparent; failures are logged and the socket is left
 * unbound, as freebind_connect does. */
static void bind_to_client(int fd, const struct sockaddr_storage *client, const char *uid)
{
	struct sockaddr_storage src = *client;
	char text[ADDR_TEXT_MAX];
	bool v6 = src.ss_family == AF_INET6;

	if (v6)
		((struct sockaddr_in6 *)&src)->sin6_port = 0;
	else
		((struct sockaddr_in *)&src)->sin_port = 0;
	sa_text(&src, text, sizeof(text));
	if ((v6 ? set_int_opt(fd, SOL_IPV6, IPV6_TRANSPARENT, 1)
		: set_int_opt(fd, SOL_IP, IP_TRANSPARENT, 1)) < 0 ||
	    (v6 ? set_int_opt(fd, SOL_IPV6, IPV6_FREEBIND, 1)
		: set_int_opt(fd, SOL_IP, IP_FREEBIND, 1)) < 0) {
		log_err("pod %s: inbound: transparent/freebind for source %s: %s; connecting from "
			"the pod's own address",
			uid, text, errtext(errno));
		return;
	}
	if (bind(fd, (const struct sockaddr *)&src, sa_len(&src)) < 0)
		log_err("pod %s: inbound: bind to the client's address %s: %s; connecting unbound",
			uid, text, errtext(errno));
}

/* Connects to the original destination and reads its line into the report. */
static void forward(const struct conn *c, const struct sockaddr_storage *dst, struct conn_report *r)
{
	const struct proxy *p = c->p;
	bool inbound = c->via == VIA_IN;
	/* freebind_connect: from the client's address unless it is the destination's own */
	bool from_client = inbound && p->transparent && !sa_same_ip(&c->peer, dst);
	int64_t deadline = now_ms() + opt.upstream_ms;
	int fd = upstream_socket(from_client ? c->peer.ss_family : dst->ss_family, p->mark);
	struct sockaddr_storage addr;
	socklen_t len = sizeof(addr);

	if (fd < 0)
		goto fail;
	if (from_client)
		bind_to_client(fd, &c->peer, p->uid.s);
	if (connect_within(fd, dst, p->cut_fd, deadline) < 0)
		goto fail;
	memset(&addr, 0, sizeof(addr));
	if ((inbound ? getsockname(fd, (struct sockaddr *)&addr, &len)
		     : getpeername(fd, (struct sockaddr *)&addr, &len)) == 0)
		sa_text(&addr, r->upstream_addr, sizeof(r->upstream_addr));
	if (read_line(fd, r->upstream, sizeof(r->upstream), p->cut_fd, now_ms() + opt.upstream_ms) < 0)
		goto fail;
	close(fd);
	return;
fail:
	snprintf(r->upstream, sizeof(r->upstream), "ERR:%d", errno);
	if (fd >= 0) {
		/* for inbound, the source that was tried helps when the connect fails */
		memset(&addr, 0, sizeof(addr));
		len = sizeof(addr);
		if (inbound && r->upstream_addr[0] == '-' &&
		    getsockname(fd, (struct sockaddr *)&addr, &len) == 0 && sa_port(&addr) != 0)
			sa_text(&addr, r->upstream_addr, sizeof(r->upstream_addr));
		close(fd);
	}
}

/* Outbound and inbound: the original destination, then the upstream. */
static void proxy_connection(const struct conn *c, struct conn_report *r)
{
	struct sockaddr_storage orig;

	r->how = read_orig_dst(c->fd, &orig);
	if (orig.ss_family != AF_INET && orig.ss_family != AF_INET6) {
		/* ztunnel would fail to convert this address (socket2 as_socket: None) */
		log_err("pod %s: %s connection: original destination (%s) has address family %u",
			c->p->uid.s, via_names[c->via], r->how, orig.ss_family);
		snprintf(r->upstream, sizeof(r->upstream), "ERR:%d", EAFNOSUPPORT);
		return;
	}
	sa_canonical(&orig);
	sa_text(&orig, r->orig, sizeof(r->orig));
	/* ztunnel's illegal_ports: never a proxy port (outbound: on loopback), so never a loop */
	if (is_proxy_port(sa_port(&orig)) && (c->via == VIA_IN || sa_loopback(&orig))) {
		snprintf(r->upstream, sizeof(r->upstream), "ERR:%d", ELOOP);
		return;
	}
	forward(c, &orig, r);
}

static void emit_conn(const struct conn *c, const struct conn_report *r, const char *proto)
{
	struct jline j;

	jl_begin(&j, "conn");
	jl_text(&j, "uid", &c->p->uid);
	jl_cstr(&j, "via", via_names[c->via]);
	if (proto)
		jl_cstr(&j, "proto", proto);
	if (c->via == VIA_OUT || c->via == VIA_IN) {
		jl_cstr(&j, "orig", r->orig);
		jl_cstr(&j, "how", r->how);
	}
	jl_cstr(&j, "local", r->local);
	jl_cstr(&j, "peer", r->peer);
	if (c->via == VIA_OUT || c->via == VIA_IN) {
		jl_cstr(&j, c->via == VIA_OUT ? "upstream_peer" : "upstream_src", r->upstream_addr);
		jl_cstr(&j, "upstream", r->upstream);
	}
	jl_emit(&j);
}

static int format_reply(char *line, size_t cap, enum via via, const struct conn_report *r)
{
	int n;

	if (via == VIA_OUT || via == VIA_IN)
		n = snprintf(
			line, cap,
			"ztunnel %s via=%s orig=%s how=%s local=%s peer=%s %s=%s upstream=%s\n",
			opt.id, via_names[via], r->orig, r->how, r->local, r->peer,
			via == VIA_OUT ? "upstream_peer" : "upstream_src", r->upstream_addr,
			r->upstream);
	else
		n = snprintf(line, cap, "ztunnel %s via=%s local=%s peer=%s\n", opt.id,
			     via_names[via], r->local, r->peer);
	return n < 0 ? 0 : (size_t)n >= cap ? (int)cap - 1 : n;
}

/* After the reply: FIN, then read until the client's EOF (bounded) before closing, so data
 * the client sent is not answered with a reset that could discard the reply. */
static void finish_connection(int fd, int cancel_fd)
{
	char scratch[4096];
	int64_t deadline = now_ms() + FINISH_MS;

	shutdown(fd, SHUT_WR);
	for (unsigned i = 0; i < FINISH_READS_MAX; i++) {
		if (wait_fd(fd, POLLIN, cancel_fd, deadline) != WAIT_READY)
			break;
		ssize_t n = recv(fd, scratch, sizeof(scratch), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			break;
	}
	close(fd);
}

static void handle_connection(struct conn *c)
{
	struct conn_report r = {.how = "local"};
	struct sockaddr_storage local;
	socklen_t len = sizeof(local);
	char line[REPLY_MAX];

	strcpy(r.orig, "-");
	strcpy(r.upstream_addr, "-");
	(void)set_int_opt(c->fd, IPPROTO_TCP, TCP_NODELAY, 1);
	sa_text(&c->peer, r.peer, sizeof(r.peer));
	memset(&local, 0, sizeof(local));
	if (getsockname(c->fd, (struct sockaddr *)&local, &len) == 0)
		sa_text(&local, r.local, sizeof(r.local));
	else
		strcpy(r.local, "-");
	if (c->via == VIA_OUT || c->via == VIA_IN)
		proxy_connection(c, &r);
	emit_conn(c, &r, c->via == VIA_DNS ? "tcp" : NULL);
	int n = format_reply(line, sizeof(line), c->via, &r);
	(void)send(c->fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
	finish_connection(c->fd, c->p->cut_fd);
}

/* The last touch of the proxy: once conns is 0 its thread may free it. */
static void connection_done(struct conn *c)
{
	struct proxy *p = c->p;

	free(c);
	pthread_mutex_lock(&p->lock);
	if (--p->conns == 0)
		pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

static void *connection_thread(void *arg)
{
	struct conn *c = arg;

	handle_connection(c);
	connection_done(c);
	atomic_fetch_sub(&conn_threads, 1);
	return NULL;
}

static bool claim_thread_slot(void)
{
	unsigned n = atomic_load(&conn_threads);

	while (n < CONN_THREADS_MAX)
		if (atomic_compare_exchange_weak(&conn_threads, &n, n + 1))
			return true;
	return false;
}

static void dispatch_connection(struct proxy *p, int fd, enum via via,
				const struct sockaddr_storage *peer)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c) {
		log_err("pod %s: out of memory for a %s connection; closing it", p->uid.s,
			via_names[via]);
		close(fd);
		return;
	}
	*c = (struct conn){.p = p, .fd = fd, .via = via, .peer = *peer};
	pthread_mutex_lock(&p->lock);
	p->conns++;
	pthread_mutex_unlock(&p->lock);
	if (claim_thread_slot()) {
		pthread_attr_t attr;
		pthread_t t;
		int err = pthread_attr_init(&attr);

		if (err == 0) {
			pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
			pthread_attr_setstacksize(&attr, THREAD_STACK_SIZE);
			err = pthread_create(&t, &attr, connection_thread, c);
			pthread_attr_destroy(&attr);
		}
		if (err == 0)
			return;
		atomic_fetch_sub(&conn_threads, 1);
		log_err("pod %s: thread for a %s connection: %s; handling it inline", p->uid.s,
			via_names[via], errtext(err));
	}
	/* over the thread bound: this proxy's thread handles it (bounded by the timeouts) */
	handle_connection(c);
	connection_done(c);
}

static void accept_some(struct proxy *p, const struct proxy_socket *s)
{
	for (unsigned i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage peer;
		socklen_t len = sizeof(peer);

		memset(&peer, 0, sizeof(peer));
		int fd = accept4(s->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_err("pod %s: accept on the %s listener: %s", p->uid.s,
					via_names[s->via], errtext(errno));
			return;
		}
		/* dual-stack listeners see IPv4 clients as ::ffff:a.b.c.d; ztunnel canonicalizes */
		sa_canonical(&peer);
		dispatch_connection(p, fd, s->via, &peer);
	}
}

/* DNS over UDP: one datagram back to each sender. */
static void answer_datagrams(struct proxy *p, const struct proxy_socket *s)
{
	for (unsigned i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage peer;
		socklen_t len = sizeof(peer);
		char query[1500], line[REPLY_MAX];

		memset(&peer, 0, sizeof(peer));
		ssize_t n = recvfrom(s->fd, query, sizeof(query), MSG_DONTWAIT,
				     (struct sockaddr *)&peer, &len);
		if (n < 0) {
			if (errno != EAGAIN && errno != EINTR)
				log_err("pod %s: recvfrom on DNS UDP: %s", p->uid.s, errtext(errno));
			return;
		}
		struct conn c = {.p = p, .fd = s->fd, .via = VIA_DNS, .peer = peer};
		struct conn_report r = {.how = "local"};
		sa_text(&peer, r.peer, sizeof(r.peer));
		sa_text(&s->addr, r.local, sizeof(r.local));
		emit_conn(&c, &r, "udp");
		int m = format_reply(line, sizeof(line), VIA_DNS, &r);
		if (sendto(s->fd, line, (size_t)m, MSG_DONTWAIT | MSG_NOSIGNAL,
			   (const struct sockaddr *)&peer, len) < 0)
			log_err("pod %s: DNS UDP reply to %s: %s", p->uid.s, r.peer, errtext(errno));
	}
}

static void serve(struct proxy *p)
{
	struct pollfd pfd[PROXY_SOCKETS_MAX + 1];

	pfd[0] = (struct pollfd){.fd = p->stop_fd, .events = POLLIN};
	for (unsigned i = 0; i < p->nsockets; i++)
		pfd[i + 1] = (struct pollfd){.fd = p->sockets[i].fd, .events = POLLIN};
	for (;;) {
		int r = poll(pfd, p->nsockets + 1, -1);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			log_err("pod %s: poll: %s; the proxy stops serving", p->uid.s,
				errtext(errno));
			return;
		}
		if (pfd[0].revents)
			return;
		for (unsigned i = 0; i < p->nsockets; i++) {
			if (!pfd[i + 1].revents)
				continue;
			if (p->sockets[i].type == SOCK_STREAM)
				accept_some(p, &p->sockets[i]);
			else
				answer_datagrams(p, &p->sockets[i]);
		}
	}
}

/* ------------------------------------------------------------------ */
/* in-pod proxy: sockets                                               */
/* ------------------------------------------------------------------ */

__attribute__((format(printf, 3, 4))) static int fail_text(char *err, size_t n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, n, fmt, ap);
	va_end(ap);
	return -1;
}

/* One socket as ztunnel's in-pod factory makes it (inpod/config.rs): mark first, SO_REUSEPORT
 * before bind, TCP listen(128). The socket joins p->sockets. 0, or the errno that failed
 * (described in err). */
static int open_socket(struct proxy *p, enum via via, int type, const struct sockaddr_storage *addr,
		       char *err, size_t n)
{
	const char *proto = type == SOCK_STREAM ? "tcp" : "udp";
	char text[ADDR_TEXT_MAX];
	int e;

	sa_text(addr, text, sizeof(text));
	int fd = socket(addr->ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		e = errno;
		fail_text(err, n, "socket for %s (%s): %s (errno %d)", text, proto, errtext(e), e);
		return e;
	}
	const char *step = NULL;
	if (p->mark && set_int_opt(fd, SOL_SOCKET, SO_MARK, (int)p->mark) < 0)
		step = "SO_MARK";
	else if (addr->ss_family == AF_INET6 && set_int_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0) < 0)
		step = "IPV6_V6ONLY=0";
	else if (set_int_opt(fd, SOL_SOCKET, SO_REUSEPORT, 1) < 0)
		step = "SO_REUSEPORT";
	else if (type == SOCK_STREAM && set_int_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1) < 0)
		step = "SO_REUSEADDR";
	else if (bind(fd, (const struct sockaddr *)addr, sa_len(addr)) < 0)
		step = "bind";
	else if (type == SOCK_STREAM && listen(fd, LISTEN_BACKLOG) < 0)
		step = "listen";
	if (step) {
		e = errno;
		close(fd);
		fail_text(err, n, "%s %s (%s): %s (errno %d)", step, text, proto, errtext(e), e);
		return e;
	}
	p->sockets[p->nsockets++] = (struct proxy_socket){
		.fd = fd, .via = via, .type = type, .addr = *addr};
	return 0;
}

/* Best effort, as ztunnel's maybe_set_transparent; IP_TRANSPARENT is the one ztunnel sets
 * and checks, IPV6_TRANSPARENT covers IPv6 connections on the dual-stack socket. */
static bool set_transparent(const struct proxy *p, const struct proxy_socket *s)
{
	bool ok = set_int_opt(s->fd, SOL_IP, IP_TRANSPARENT, 1) == 0;

	if (!ok)
		log_err("pod %s: IP_TRANSPARENT on the %s listener: %s", p->uid.s,
			via_names[s->via], errtext(errno));
	if (s->addr.ss_family == AF_INET6 && set_int_opt(s->fd, SOL_IPV6, IPV6_TRANSPARENT, 1) < 0)
		log_err("pod %s: IPV6_TRANSPARENT on the %s listener: %s", p->uid.s,
			via_names[s->via], errtext(errno));
	return ok;
}

/* ztunnel's ipv6_enabled_on_localhost, read in the pod's netns (this thread's). */
static bool lo_ipv6_enabled(void)
{
	char value[8] = "";
	int fd = open("/proc/sys/net/ipv6/conf/lo/disable_ipv6", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return false; /* no IPv6 at all in this kernel */
	ssize_t n = read(fd, value, sizeof(value) - 1);
	close(fd);
	return n > 0 && value[0] != '1';
}

static void close_sockets(struct proxy *p)
{
	for (unsigned i = 0; i < p->nsockets; i++)
		close(p->sockets[i].fd);
	p->nsockets = 0;
}

/* Every socket of the proxy, in ztunnel's order: DNS, then 15008, 15006, 15001. */
static int open_sockets(struct proxy *p, char *err, size_t n)
{
	static const struct {
		unsigned port;
		enum via via;
	} listeners[] = {{PORT_HBONE, VIA_HBONE}, {PORT_INBOUND, VIA_IN}, {PORT_OUTBOUND, VIA_OUT}};
	struct sockaddr_storage addr;

	sa_v4(&addr, INADDR_LOOPBACK, PORT_DNS);
	if (open_socket(p, VIA_DNS, SOCK_STREAM, &addr, err, n) ||
	    open_socket(p, VIA_DNS, SOCK_DGRAM, &addr, err, n))
		return -1;
	if (lo_ipv6_enabled()) {
		sa_v6(&addr, &in6addr_loopback, PORT_DNS);
		if (open_socket(p, VIA_DNS, SOCK_STREAM, &addr, err, n) ||
		    open_socket(p, VIA_DNS, SOCK_DGRAM, &addr, err, n))
			return -1;
	}
	/* [::] serves IPv4 too (IPV6_V6ONLY=0); 0.0.0.0 only where AF_INET6 is unavailable */
	bool v6 = true;
	for (unsigned i = 0; i < sizeof(listeners) / sizeof(listeners[0]); i++) {
		if (v6)
			sa_v6(&addr, &in6addr_any, listeners[i].port);
		else
			sa_v4(&addr, INADDR_ANY, listeners[i].port);
		int e = open_socket(p, listeners[i].via, SOCK_STREAM, &addr, err, n);
		if (e) {
			if (!(v6 && i == 0 && (e == EAFNOSUPPORT || e == EADDRNOTAVAIL)))
				return -1;
			log_err("pod %s: no IPv6 in the pod (%s); listening on 0.0.0.0", p->uid.s,
				err);
			v6 = false;
			i--;
			continue;
		}
		bool transparent = set_transparent(p, &p->sockets[p->nsockets - 1]);
		if (listeners[i].via == VIA_IN)
			p->transparent = transparent;
	}
	return 0;
}

static void *proxy_thread(void *arg)
{
	struct proxy *p = arg;
	char err[ZDS_ERR_MAX] = "";
	int ok;

	if (setns(p->netns_fd, CLONE_NEWNET) < 0)
		ok = fail_text(err, sizeof(err),
			       "setns(CLONE_NEWNET) with the pod's netns fd: %s (errno %d)",
			       errtext(errno), errno);
	else
		ok = open_sockets(p, err, sizeof(err));
	if (ok < 0)
		close_sockets(p);
	pthread_mutex_lock(&p->lock);
	p->state = ok < 0 ? PROXY_FAILED : PROXY_LISTENING;
	snprintf(p->error, sizeof(p->error), "%s", err);
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	if (ok < 0)
		return NULL;
	serve(p);
	/* stopping: close the listeners, then wait for the connections to end (on their own, or
	 * cut through cut_fd) */
	close_sockets(p);
	pthread_mutex_lock(&p->lock);
	p->state = PROXY_CLOSED;
	pthread_cond_broadcast(&p->cond);
	while (p->conns > 0)
		pthread_cond_wait(&p->cond, &p->lock);
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static void proxy_free(struct proxy *p)
{
	if (p->stop_fd >= 0)
		close(p->stop_fd);
	if (p->cut_fd >= 0)
		close(p->cut_fd);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	text_free(&p->uid);
	free(p);
}

/* Starts a pod's proxy and waits until it listens (NULL and err when it cannot). */
static struct proxy *proxy_start(const struct text *uid, int netns_fd, char *err, size_t n)
{
	struct proxy *p = calloc(1, sizeof(*p));
	pthread_attr_t attr;
	int e;

	if (!p || !text_set(&p->uid, uid->s, uid->len)) {
		free(p);
		fail_text(err, n, "out of memory");
		return NULL;
	}
	p->netns_fd = netns_fd;
	p->mark = opt.mark;
	p->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	p->cut_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	pthread_mutex_init(&p->lock, NULL);
	/* the drain's timed waits count on the clock now_ms() reads */
	pthread_condattr_t cattr;
	pthread_condattr_init(&cattr);
	pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cond, &cattr);
	pthread_condattr_destroy(&cattr);
	if (p->stop_fd < 0 || p->cut_fd < 0) {
		fail_text(err, n, "eventfd: %s (errno %d)", errtext(errno), errno);
		proxy_free(p);
		return NULL;
	}
	e = pthread_attr_init(&attr);
	if (e == 0) {
		pthread_attr_setstacksize(&attr, THREAD_STACK_SIZE);
		e = pthread_create(&p->thread, &attr, proxy_thread, p);
		pthread_attr_destroy(&attr);
	}
	if (e != 0) {
		fail_text(err, n, "pthread_create: %s (errno %d)", errtext(e), e);
		proxy_free(p);
		return NULL;
	}
	pthread_mutex_lock(&p->lock);
	while (p->state == PROXY_STARTING)
		pthread_cond_wait(&p->cond, &p->lock);
	pthread_mutex_unlock(&p->lock);
	if (p->state == PROXY_LISTENING)
		return p;
	pthread_join(p->thread, NULL);
	snprintf(err, n, "%s", p->error);
	proxy_free(p);
	return NULL;
}

static void proxy_signal(struct proxy *p, int fd, const char *what)
{
	if (eventfd_write(fd, 1) < 0)
		log_err("pod %s: eventfd_write to %s: %s", p->uid.s, what, errtext(errno));
}

/* A drain's first step: the serve loop ends and closes the listeners; connections go on. */
static void proxy_stop_accepting(struct proxy *p)
{
	proxy_signal(p, p->stop_fd, "stop accepting");
}

/* Waits until the proxy accepts nothing more (its serve loop has returned and closed the
 * listeners, so no connection can be added behind the count) and, when `conns_too`, until its
 * connections have ended; or until deadline. Returns the connections still open. */
static unsigned proxy_wait(struct proxy *p, bool conns_too, int64_t deadline)
{
	struct timespec at = {.tv_sec = deadline / 1000, .tv_nsec = (deadline % 1000) * 1000000};
	unsigned open;

	pthread_mutex_lock(&p->lock);
	while ((p->state != PROXY_CLOSED || (conns_too && p->conns > 0)) &&
	       pthread_cond_timedwait(&p->cond, &p->lock, &at) != ETIMEDOUT)
		;
	open = p->conns;
	pthread_mutex_unlock(&p->lock);
	return open;
}

/* Closes the proxy's sockets and cuts its connections (ztunnel drains a deleted pod's
 * proxy with DrainMode::Immediate); returns once all of its threads are gone. After a drain
 * (drain_proxies) this only joins what is left. */
static void proxy_stop(struct proxy *p)
{
	proxy_signal(p, p->stop_fd, "stop the proxy");
	proxy_signal(p, p->cut_fd, "cut the connections");
	pthread_join(p->thread, NULL);
	proxy_free(p);
}

static void emit_listening(const struct proxy *p)
{
	char text[ADDR_TEXT_MAX];
	struct jline j;
	bool first = true;

	jl_begin(&j, "listening");
	jl_text(&j, "uid", &p->uid);
	for (unsigned i = 0; i < p->nsockets; i++) {
		const struct proxy_socket *s = &p->sockets[i];
		static const char *const keys[] = {"outbound", "inbound", "hbone"};

		if (s->via == VIA_DNS)
			continue;
		sa_text(&s->addr, text, sizeof(text));
		jl_cstr(&j, keys[s->via], text);
	}
	jl_raw(&j, ",\"dns\":[");
	for (unsigned i = 0; i < p->nsockets; i++) {
		const struct proxy_socket *s = &p->sockets[i];

		if (s->via != VIA_DNS || s->type != SOCK_STREAM)
			continue;
		sa_text(&s->addr, text, sizeof(text));
		if (!first)
			jl_raw(&j, ",");
		jl_string(&j, text, strlen(text));
		first = false;
	}
	jl_raw(&j, "]");
	jl_bool(&j, "transparent", p->transparent);
	jl_emit(&j);
}

/* ------------------------------------------------------------------ */
/* workloads: ztunnel's running proxies and pending (failed) ones      */
/* ------------------------------------------------------------------ */

struct workload {
	struct text uid, name, ns, sa;
	int netns_fd; /* held while served, as ztunnel's InpodNetns */
	dev_t dev;
	ino_t ino;
	struct proxy *proxy; /* NULL: pending, retried every RETRY_PENDING_MS while connected */
};

static struct workload *workloads[WORKLOADS_MAX];
static size_t n_workloads;

static struct workload *workload_find(const char *uid, size_t len, size_t *index)
{
	for (size_t i = 0; i < n_workloads; i++) {
		if (text_eq(&workloads[i]->uid, uid, len)) {
			if (index)
				*index = i;
			return workloads[i];
		}
	}
	return NULL;
}

/* Stops the workload's proxy (if running), closes its netns fd and forgets it. A stopped
 * proxy is announced once its sockets are closed. */
static void workload_drop(size_t index, const char *reason)
{
	struct workload *w = workloads[index];

	if (w->proxy) {
		struct jline j;

		proxy_stop(w->proxy);
		jl_begin(&j, "stopped");
		jl_text(&j, "uid", &w->uid);
		jl_cstr(&j, "reason", reason);
		jl_emit(&j);
	}
	close(w->netns_fd);
	text_free(&w->uid);
	text_free(&w->name);
	text_free(&w->ns);
	text_free(&w->sa);
	free(w);
	workloads[index] = workloads[--n_workloads];
	workloads[n_workloads] = NULL;
}

static bool workload_set_info(struct workload *w, const struct zds_request *q)
{
	return text_set(&w->uid, q->uid.s, q->uid.len) &&
	       text_set(&w->name, q->name.s, q->name.len) && text_set(&w->ns, q->ns.s, q->ns.len) &&
	       text_set(&w->sa, q->sa.s, q->sa.len);
}

/* Starts the workload's proxy; on failure it stays pending. */
static bool workload_start(struct workload *w, char *err, size_t n)
{
	w->proxy = proxy_start(&w->uid, w->netns_fd, err, n);
	if (!w->proxy) {
		log_err("pod %s: proxy failed to start: %s", w->uid.s, err);
		return false;
	}
	emit_listening(w->proxy);
	return true;
}

/* SIGTERM/SIGINT, as ztunnel's DrainMode::Graceful (app.rs Bound::wait_termination,
 * drain.rs run_with_drain): every proxy stops accepting at once, then the connections get until
 * the deadline to end on their own, then what is left is cut. The proxies are joined and
 * announced after (workload_drop). */
static void drain_proxies(void)
{
	int64_t deadline = now_ms() + opt.termination_deadline_ms;
	unsigned open = 0, cut = 0, n = 0;
	char text[64];
	struct jline j;

	for (size_t i = 0; i < n_workloads; i++)
		if (workloads[i]->proxy)
			proxy_stop_accepting(workloads[i]->proxy);
	for (size_t i = 0; i < n_workloads; i++) {
		if (workloads[i]->proxy) {
			open += proxy_wait(workloads[i]->proxy, false, deadline);
			n++;
		}
	}
	jl_begin(&j, "draining");
	snprintf(text, sizeof(text), ",\"proxies\":%u,\"connections\":%u,\"deadlineMs\":%ld", n,
		 open, opt.termination_deadline_ms);
	jl_raw(&j, text);
	jl_emit(&j);
	for (size_t i = 0; i < n_workloads; i++) {
		struct proxy *p = workloads[i]->proxy;
		unsigned left = p ? proxy_wait(p, true, deadline) : 0;

		if (left > 0) {
			cut += left;
			proxy_signal(p, p->cut_fd, "cut the connections");
		}
	}
	if (cut > 0)
		log_err("drain deadline of %ld ms passed with %u connections open; cutting them",
			opt.termination_deadline_ms, cut);
	jl_begin(&j, "drained");
	snprintf(text, sizeof(text), ",\"cut\":%u", cut);
	jl_raw(&j, text);
	jl_emit(&j);
}

/* ------------------------------------------------------------------ */
/* ZDS: one connection                                                 */
/* ------------------------------------------------------------------ */

/* How a request ends: answered and go on, or (after the answer) end the connection. */
enum verdict { GO_ON, END_RECONNECT, END_PROTOCOL };

struct answer {
	char error[ZDS_ERR_MAX]; /* "" is an ack */
	enum verdict verdict;
};

__attribute__((format(printf, 3, 4))) static void answer_set(struct answer *a, enum verdict v,
							     const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(a->error, sizeof(a->error), fmt, ap);
	va_end(ap);
	a->verdict = v;
}

struct session {
	bool snapshot_received;
	struct text names[SNAPSHOT_NAMES_MAX]; /* added or kept before snapshot_sent */
	size_t n_names;
	int64_t retry_at; /* next retry of pending workloads; 0: none scheduled */
};

static bool names_has(const struct session *s, const struct text *uid)
{
	for (size_t i = 0; i < s->n_names; i++)
		if (text_eq(&s->names[i], uid->s, uid->len))
			return true;
	return false;
}

/* Remembers a uid the snapshot named; false (and the reason in a) when it cannot. */
static bool names_insert(struct session *s, const struct zstr *uid, struct answer *a)
{
	struct text t = {.len = uid->len, .s = (char *)uid->s};

	if (names_has(s, &t))
		return true;
	if (s->n_names == SNAPSHOT_NAMES_MAX) {
		answer_set(a, GO_ON, NACK_PROCESS "more than %d workloads in one snapshot",
			   SNAPSHOT_NAMES_MAX);
		return false;
	}
	memset(&s->names[s->n_names], 0, sizeof(s->names[0]));
	if (!text_set(&s->names[s->n_names], uid->s, uid->len)) {
		answer_set(a, GO_ON, NACK_PROCESS "out of memory for the snapshot's uids");
		return false;
	}
	s->n_names++;
	return true;
}

static void names_remove(struct session *s, const struct zstr *uid)
{
	for (size_t i = 0; i < s->n_names; i++) {
		if (text_eq(&s->names[i], uid->s, uid->len)) {
			text_free(&s->names[i]);
			s->names[i] = s->names[--s->n_names];
			memset(&s->names[s->n_names], 0, sizeof(s->names[0]));
			return;
		}
	}
}

static void names_clear(struct session *s)
{
	for (size_t i = 0; i < s->n_names; i++)
		text_free(&s->names[i]);
	s->n_names = 0;
}

static long nack_adds_done;

static bool injected_nack(const struct zstr *uid)
{
	for (unsigned i = 0; i < opt.n_nack_uids; i++)
		if (strlen(opt.nack_uids[i]) == uid->len &&
		    memcmp(opt.nack_uids[i], uid->s, uid->len) == 0)
			return true;
	if (nack_adds_done < opt.nack_adds) {
		nack_adds_done++;
		return true;
	}
	return false;
}

static void schedule_retry(struct session *s)
{
	if (s->retry_at == 0)
		s->retry_at = now_ms() + RETRY_PENDING_MS;
}

/* statemanager.rs process_msg(AddWorkload) and add_workload_inner. netns_fd is consumed. */
static const char *zds_add(struct session *s, const struct zds_request *q, int netns_fd,
			   struct answer *a)
{
	struct stat st;
	char err[ZDS_ERR_MAX];
	size_t index;

	if (!q->has_info) {
		close(netns_fd);
		answer_set(a, END_PROTOCOL,
			   NACK_PROTOCOL "workload_info is required but not present");
		return "none";
	}
	if (!s->snapshot_received && !names_insert(s, &q->uid, a)) {
		close(netns_fd);
		return "none";
	}
	if (fstat(netns_fd, &st) < 0) {
		answer_set(a, GO_ON, NACK_START "fstat of the netns fd: %s (errno %d)",
			   errtext(errno), errno);
		close(netns_fd);
		return "none";
	}
	if (injected_nack(&q->uid)) {
		close(netns_fd);
		answer_set(a, GO_ON, "injected nack");
		return "none";
	}
	struct workload *w = workload_find(q->uid.s, q->uid.len, &index);
	const char *started = "started";

	if (w && w->proxy) {
		if (w->dev == st.st_dev && w->ino == st.st_ino) {
			/* idempotent: the same netns is already served */
			close(netns_fd);
			return "unchanged";
		}
		/* a new netns for the same pod (its sandbox was re-created): replace the proxy */
		workload_drop(index, "replaced");
		w = NULL;
		started = "replaced";
	}
	if (w) {
		/* pending: the new add replaces what was waiting */
		close(w->netns_fd);
	} else {
		if (n_workloads == WORKLOADS_MAX) {
			close(netns_fd);
			answer_set(a, GO_ON, NACK_START "more than %d workloads", WORKLOADS_MAX);
			return "none";
		}
		w = calloc(1, sizeof(*w));
		if (!w) {
			close(netns_fd);
			answer_set(a, GO_ON, NACK_START "out of memory");
			return "none";
		}
		index = n_workloads;
		workloads[n_workloads++] = w;
	}
	w->netns_fd = netns_fd;
	w->dev = st.st_dev;
	w->ino = st.st_ino;
	if (!workload_set_info(w, q)) {
		workload_drop(index, "");
		answer_set(a, GO_ON, NACK_START "out of memory");
		return "none";
	}
	if (!workload_start(w, err, sizeof(err))) {
		schedule_retry(s);
		answer_set(a, GO_ON, NACK_START "%s", err);
		return "pending";
	}
	return started;
}

static void emit_add(const struct zds_request *q, const struct answer *a, const char *proxy)
{
	struct jline j;

	jl_begin(&j, "add");
	jl_field(&j, "uid", q->uid.s, q->uid.len);
	jl_field(&j, "name", q->name.s, q->name.len);
	jl_field(&j, "namespace", q->ns.s, q->ns.len);
	jl_field(&j, "serviceAccount", q->sa.s, q->sa.len);
	jl_cstr(&j, "error", a->error);
	jl_cstr(&j, "proxy", proxy);
	jl_emit(&j);
}

static void zds_keep(struct session *s, const struct zds_request *q, struct answer *a)
{
	struct jline j;

	if (s->snapshot_received)
		answer_set(a, END_PROTOCOL, NACK_PROTOCOL "pod keep received after snapshot");
	else
		names_insert(s, &q->uid, a);
	jl_begin(&j, "keep");
	jl_field(&j, "uid", q->uid.s, q->uid.len);
	jl_cstr(&j, "error", a->error);
	jl_emit(&j);
}

/* Before snapshot_sent only the snapshot's names forget the uid: the reconcile stops the
 * proxy (statemanager.rs). Unknown uids are fine: deletes are idempotent. */
static void zds_del(struct session *s, const struct zds_request *q)
{
	struct workload *w;
	size_t index;
	bool stopped = false;
	struct jline j;

	if (!s->snapshot_received)
		names_remove(s, &q->uid);
	w = workload_find(q->uid.s, q->uid.len, &index);
	if (w && (!w->proxy || s->snapshot_received)) {
		stopped = w->proxy != NULL;
		workload_drop(index, "del");
	}
	jl_begin(&j, "del");
	jl_field(&j, "uid", q->uid.s, q->uid.len);
	jl_bool(&j, "stopped", stopped);
	jl_cstr(&j, "error", "");
	jl_emit(&j);
}

static void jl_uid_list(struct jline *j, const char *key, bool running)
{
	bool first = true;

	jl_raw(j, ",\"");
	jl_raw(j, key);
	jl_raw(j, "\":[");
	for (size_t i = 0; i < n_workloads; i++) {
		if ((workloads[i]->proxy != NULL) != running)
			continue;
		if (!first)
			jl_raw(j, ",");
		jl_string(j, workloads[i]->uid.s, workloads[i]->uid.len);
		first = false;
	}
	jl_raw(j, "]");
}

/* statemanager.rs reconcile(): running proxies that the snapshot did not name are stopped;
 * pending ones stay pending. */
static void zds_snapshot_sent(struct session *s, struct answer *a)
{
	struct jline removed, j;
	bool first = true;

	if (s->snapshot_received) {
		answer_set(a, END_PROTOCOL, NACK_PROTOCOL "pod snapshot received already");
		emit_simple("snapshot", "error", a->error);
		return;
	}
	memset(&removed, 0, sizeof(removed));
	for (size_t i = 0; i < n_workloads;) {
		struct workload *w = workloads[i];

		if (!w->proxy || names_has(s, &w->uid)) {
			i++;
			continue;
		}
		if (!first)
			jl_raw(&removed, ",");
		jl_string(&removed, w->uid.s, w->uid.len);
		first = false;
		workload_drop(i, "snapshot"); /* moves the last workload into slot i */
	}
	names_clear(s);
	s->snapshot_received = true;
	jl_begin(&j, "snapshot");
	jl_uid_list(&j, "kept", true);
	jl_raw(&j, ",\"removed\":[");
	if (removed.len)
		jl_append(&j, removed.buf, removed.len);
	j.failed |= removed.failed;
	jl_raw(&j, "]");
	jl_uid_list(&j, "pending", false);
	jl_cstr(&j, "error", "");
	jl_emit(&j);
	free(removed.buf);
}

/* statemanager.rs retry_pending(). */
static void retry_pending(struct session *s)
{
	s->retry_at = 0;
	for (size_t i = 0; i < n_workloads; i++) {
		struct workload *w = workloads[i];
		char err[ZDS_ERR_MAX] = "";
		struct jline j;

		if (w->proxy)
			continue;
		bool ok = workload_start(w, err, sizeof(err));
		jl_begin(&j, "retry");
		jl_text(&j, "uid", &w->uid);
		jl_cstr(&j, "error", err);
		jl_emit(&j);
		if (!ok)
			schedule_retry(s);
	}
}

/* A new connection forgets pending workloads (statemanager.rs reset_snapshot). */
static void drop_pending(void)
{
	for (size_t i = 0; i < n_workloads;) {
		if (workloads[i]->proxy)
			i++;
		else
			workload_drop(i, "");
	}
}

enum read_result { READ_OK, READ_EOF, READ_BAD, READ_IO_ERROR };

static void close_fds(const int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

/* One request, checked as protocol.rs read_message / get_workload_data does: fds first (so
 * none leaks whatever else is wrong), then truncation, then the message. */
static enum read_result zds_read(int fd, struct zds_request *q, int *netns_fd, char *err, size_t n)
{
	uint8_t buf[ZDS_MSG_MAX];
	union {
		struct cmsghdr align;
		char space[CMSG_SPACE(sizeof(int) * ZDS_FDS_MAX)];
	} control;
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
	struct msghdr mh = {.msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = control.space,
			    .msg_controllen = sizeof(control.space)};
	int fds[ZDS_FDS_MAX];
	unsigned n_fds = 0, total_fds = 0;
	ssize_t len;
	struct pb_error pe;

	*netns_fd = -1;
	do
		len = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	while (len < 0 && errno == EINTR);
	if (len < 0) {
		fail_text(err, n, "recvmsg: %s (errno %d)", errtext(errno), errno);
		return READ_IO_ERROR;
	}
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
			log_err("ZDS: ignoring a control message of level %d type %d",
				c->cmsg_level, c->cmsg_type);
			continue;
		}
		size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < count; i++) {
			int rfd;

			memcpy(&rfd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (n_fds < ZDS_FDS_MAX)
				fds[n_fds++] = rfd;
			else
				close(rfd);
		}
		total_fds += (unsigned)count;
	}
	if (len == 0) {
		/* SEQPACKET: the server closed (ztunnel takes an empty read as EOF too) */
		close_fds(fds, n_fds);
		return READ_EOF;
	}
	if (total_fds > 1) {
		close_fds(fds, n_fds);
		fail_text(err, n, "Expected 1 FD, got %u", total_fds);
		return READ_BAD;
	}
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		close_fds(fds, n_fds);
		fail_text(err, n, "received truncated message (%s)",
			  mh.msg_flags & MSG_TRUNC ? "MSG_TRUNC" : "MSG_CTRUNC");
		return READ_BAD;
	}
	int netns = total_fds == 1 ? fds[0] : -1;
	if (!zds_decode_request(buf, (size_t)len, q, &pe)) {
		close_fds(&netns, 1);
		fail_text(err, n, "failed to decode WorkloadRequest (%zd bytes): %s", len, pe.text);
		return READ_BAD;
	}
	if (q->kind == ZDS_NONE) {
		close_fds(&netns, 1);
		fail_text(err, n, "no payload");
		return READ_BAD;
	}
	if (q->kind == ZDS_ADD && netns < 0) {
		fail_text(err, n, "No control message");
		return READ_BAD;
	}
	if (q->kind != ZDS_ADD && netns >= 0) {
		close(netns);
		fail_text(err, n, "Unexpected control message");
		return READ_BAD;
	}
	*netns_fd = netns;
	return READ_OK;
}

/* After --ack-delay-ms; false when the process is stopping or the send failed. */
static bool zds_send_answer(int fd, const char *error)
{
	uint8_t buf[ZDS_ERR_MAX + 16];
	size_t error_len = utf8_clip(error, ZDS_ERR_MAX);

	if (opt.ack_delay_ms > 0 && sleep_unless_stopped(opt.ack_delay_ms))
		return false;
	size_t len = zds_encode_ack(buf, error, error_len);
	ssize_t n;
	do
		n = send(fd, buf, len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		log_err("ZDS: sending the %s: %s", error_len ? "nack" : "ack", errtext(errno));
		return false;
	}
	return true;
}

enum session_end { END_CONTINUE, END_EOF, END_ERROR, END_STOP, END_PROTOCOL_ERROR };

static enum session_end zds_handle_one(int fd, struct session *s, char *reason, size_t n)
{
	static struct zds_request q; /* large; one request at a time on this thread */
	struct answer a = {.verdict = GO_ON};
	int netns_fd;
	char err[ZDS_ERR_MAX];

	switch (zds_read(fd, &q, &netns_fd, err, sizeof(err))) {
	case READ_EOF:
		snprintf(reason, n, "eof");
		return END_EOF;
	case READ_IO_ERROR:
		log_err("ZDS: %s", err);
		snprintf(reason, n, "%s", err);
		return END_ERROR;
	case READ_BAD:
		answer_set(&a, END_RECONNECT, NACK_READ "%s", err);
		log_err("ZDS: %s; the connection will be dropped, as ztunnel does", a.error);
		emit_simple("read-error", "error", a.error);
		break;
	case READ_OK:
		switch (q.kind) {
		case ZDS_ADD: {
			const char *proxy = zds_add(s, &q, netns_fd, &a);
			emit_add(&q, &a, proxy);
			break;
		}
		case ZDS_KEEP:
			zds_keep(s, &q, &a);
			break;
		case ZDS_DEL:
			zds_del(s, &q);
			break;
		case ZDS_SNAPSHOT_SENT:
			zds_snapshot_sent(s, &a);
			break;
		case ZDS_NONE:
			break;
		}
		break;
	}
	if (a.error[0] && a.verdict != END_RECONNECT)
		log_err("ZDS: nack: %s", a.error);
	if (a.verdict == END_PROTOCOL)
		emit_simple("protocol-error", "error", a.error);
	if (!zds_send_answer(fd, a.error)) {
		snprintf(reason, n, atomic_load(&stopping) ? "stopping" : "send failed");
		return atomic_load(&stopping) ? END_STOP : END_ERROR;
	}
	if (a.verdict == END_PROTOCOL) {
		snprintf(reason, n, "protocol error");
		return END_PROTOCOL_ERROR;
	}
	if (a.verdict == END_RECONNECT) {
		snprintf(reason, n, "read error");
		return END_ERROR;
	}
	return END_CONTINUE;
}

/* Requests until the connection ends; pending proxies are retried meanwhile. */
static enum session_end zds_session(int fd, char *reason, size_t n)
{
	static struct session s;

	names_clear(&s);
	s.snapshot_received = false;
	s.retry_at = 0;
	drop_pending();
	for (;;) {
		if (s.retry_at && now_ms() >= s.retry_at)
			retry_pending(&s);
		switch (wait_fd(fd, POLLIN, stop_fd, s.retry_at ? s.retry_at : -1)) {
		case WAIT_CANCELLED:
			snprintf(reason, n, "stopping");
			return END_STOP;
		case WAIT_TIMEOUT:
			continue;
		case WAIT_ERROR:
			snprintf(reason, n, "poll: %s", errtext(errno));
			return END_ERROR;
		case WAIT_READY:
			break;
		}
		enum session_end end = zds_handle_one(fd, &s, reason, n);
		if (end != END_CONTINUE)
			return end;
	}
}

/* ------------------------------------------------------------------ */
/* ZDS: connecting                                                     */
/* ------------------------------------------------------------------ */

/* Non-blocking connect, as ztunnel's packet::connect: a server whose backlog is full answers
 * EAGAIN, which is retried like an absent one, instead of blocking this thread. Then blocking,
 * with istio's 5 s deadline on sends. */
static int zds_connect(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct timeval tv = {.tv_sec = ZDS_SEND_TIMEOUT_MS / 1000};

	if (fd < 0)
		return -1;
	memcpy(sun.sun_path, path, strlen(path));
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static void emit_disconnected(const char *reason)
{
	emit_simple("disconnected", "reason", reason);
}

/* Connects, says hello, serves, and again, until stopped. Returns the exit status. */
static int zds_run(void)
{
	bool failing = false;

	while (!atomic_load(&stopping)) {
		int fd = zds_connect(opt.uds);
		char reason[ZDS_ERR_MAX];

		if (fd < 0) {
			/* once per outage: the retries themselves are not news */
			if (!failing)
				log_err("ZDS: connect to %s: %s; retrying every %ld ms", opt.uds,
					errtext(errno), opt.reconnect_ms);
			failing = true;
			if (sleep_unless_stopped(opt.reconnect_ms))
				break;
			continue;
		}
		failing = false;
		int64_t connected_at = now_ms();
		emit_simple("connected", NULL, NULL);
		if (send(fd, zds_hello, sizeof(zds_hello), MSG_NOSIGNAL) < 0) {
			log_err("ZDS: sending ZdsHello: %s", errtext(errno));
			close(fd);
			emit_disconnected("hello failed");
			if (sleep_unless_stopped(opt.reconnect_ms))
				break;
			continue;
		}
		emit_simple("hello", NULL, NULL);
		enum session_end end = zds_session(fd, reason, sizeof(reason));
		close(fd);
		emit_disconnected(reason);
		if (end == END_STOP)
			break;
		if (end == END_PROTOCOL_ERROR)
			return EXIT_PROTOCOL;
		/* ztunnel reconnects at once; a server that hangs up straight away is not
		 * hammered */
		if (now_ms() - connected_at < opt.reconnect_ms &&
		    sleep_unless_stopped(opt.reconnect_ms))
			break;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* process                                                             */
/* ------------------------------------------------------------------ */

static void *signal_thread(void *arg)
{
	const sigset_t *set = arg;
	int sig;

	while (sigwait(set, &sig) != 0)
		;
	atomic_store(&stopping, true);
	if (eventfd_write(stop_fd, 1) < 0)
		log_err("eventfd_write on signal %d: %s", sig, errtext(errno));
	/* a second signal while shutting down: leave now */
	while (sigwait(set, &sig) != 0)
		;
	log_err("second signal %d while stopping; exiting at once", sig);
	_exit(1);
}

static void usage(FILE *f)
{
	fputs("usage: zt-standin --uds PATH --id ID [--mark N (0x539)] [--reconnect-ms MS (200)]\n"
	      "         [--nack-uid UID]... [--nack-adds N (0)] [--ack-delay-ms MS (0)]\n"
	      "         [--termination-deadline-ms MS (5000)] [--upstream-timeout-ms MS (2000)]\n"
	      "  A stand-in for ztunnel: ZDS client on PATH, in-pod proxies on\n"
	      "  15001/15006/15008 and DNS on 15053 in each pod's netns. N is decimal or\n"
	      "  0x hex. JSON events on stdout, one per line; errors on stderr.\n"
	      "  SIGTERM/SIGINT drains: every proxy stops accepting, open connections get\n"
	      "  --termination-deadline-ms to end, then are cut; a second signal exits at once.\n",
	      f);
}

/* Decimal, or hex with 0x; the whole text, within [min, max]. */
static bool parse_number(const char *s, unsigned long long min, unsigned long long max,
			 unsigned long long *out)
{
	int base = 10;
	char *end;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	if (*s < '0' || (base == 10 && *s > '9') || (base == 16 && !isxdigit((unsigned char)*s)))
		return false;
	errno = 0;
	unsigned long long v = strtoull(s, &end, base);
	if (errno || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

static int parse_args(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		unsigned long long v;

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			exit(0);
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "zt-standin: %s needs a value (or is unknown)\n", a);
			return -1;
		}
		const char *val = argv[++i];
		if (strcmp(a, "--uds") == 0) {
			opt.uds = val;
		} else if (strcmp(a, "--id") == 0) {
			opt.id = val;
		} else if (strcmp(a, "--nack-uid") == 0) {
			if (opt.n_nack_uids == NACK_UIDS_MAX) {
				fprintf(stderr, "zt-standin: --nack-uid given more than %d times\n",
					NACK_UIDS_MAX);
				return -1;
			}
			opt.nack_uids[opt.n_nack_uids++] = val;
		} else if (strcmp(a, "--mark") == 0) {
			if (!parse_number(val, 0, UINT32_MAX, &v)) {
				fprintf(stderr,
					"zt-standin: --mark \"%s\" is not a 32-bit number\n", val);
				return -1;
			}
			opt.mark = (uint32_t)v;
		} else if (strcmp(a, "--reconnect-ms") == 0 || strcmp(a, "--ack-delay-ms") == 0) {
			bool reconnect = strcmp(a, "--reconnect-ms") == 0;
			if (!parse_number(val, reconnect ? 1 : 0, MS_MAX, &v)) {
				fprintf(stderr,
					"zt-standin: %s \"%s\" is not a number of ms in "
					"[%d, %ld]\n",
					a, val, reconnect ? 1 : 0, MS_MAX);
				return -1;
			}
			*(reconnect ? &opt.reconnect_ms : &opt.ack_delay_ms) = (long)v;
		} else if (strcmp(a, "--termination-deadline-ms") == 0 ||
			   strcmp(a, "--upstream-timeout-ms") == 0) {
			bool upstream = strcmp(a, "--upstream-timeout-ms") == 0;
			if (!parse_number(val, upstream ? 1 : 0, MS_MAX, &v)) {
				fprintf(stderr, "zt-standin: %s \"%s\" is not a number of ms in [%d, %ld]\n",
					a, val, upstream ? 1 : 0, MS_MAX);
				return -1;
			}
			*(upstream ? &opt.upstream_ms : &opt.termination_deadline_ms) = (long)v;
		} else if (strcmp(a, "--nack-adds") == 0) {
			if (!parse_number(val, 0, INT_MAX, &v)) {
				fprintf(stderr, "zt-standin: --nack-adds \"%s\" is not a count\n",
					val);
				return -1;
			}
			opt.nack_adds = (long)v;
		} else {
			fprintf(stderr, "zt-standin: unknown option %s\n", a);
			return -1;
		}
	}
	if (!opt.uds || !opt.id) {
		fprintf(stderr, "zt-standin: --uds and --id are required\n");
		return -1;
	}
	size_t path_max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
	if (strlen(opt.uds) == 0 || strlen(opt.uds) > path_max) {
		fprintf(stderr, "zt-standin: --uds \"%s\" must be 1..%zu bytes\n", opt.uds, path_max);
		return -1;
	}
	size_t id_len = strlen(opt.id);
	bool id_ok = id_len > 0 && id_len <= ID_MAX;
	for (size_t i = 0; i < id_len; i++)
		id_ok = id_ok && opt.id[i] > ' ' && opt.id[i] < 0x7f;
	if (!id_ok) {
		fprintf(stderr,
			"zt-standin: --id \"%s\" must be 1..%d printable ASCII characters "
			"without spaces (it is a token in every reply line)\n",
			opt.id, ID_MAX);
		return -1;
	}
	return 0;
}

/* Each pod's proxy holds ~9 fds; let the process use what the hard limit allows. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_err("raising RLIMIT_NOFILE to %llu: %s",
				(unsigned long long)rl.rlim_max, errtext(errno));
	}
}

int main(int argc, char **argv)
{
	static sigset_t stop_signals;
	pthread_t sig_thread;
	struct jline j;
	char status[16];

	if (parse_args(argc, argv) < 0) {
		usage(stderr);
		return EXIT_USAGE;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();
	stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (stop_fd < 0) {
		log_err("eventfd: %s", errtext(errno));
		return 1;
	}
	/* signals go to one thread, which turns them into stop_fd: every wait can see it */
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	int e = pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
	if (e == 0)
		e = pthread_create(&sig_thread, NULL, signal_thread, &stop_signals);
	if (e != 0) {
		log_err("signal thread: %s", errtext(e));
		return 1;
	}
	int rc = zds_run();
	/* stopped by a signal: drain; a protocol error exits at once, as ztunnel's process::exit */
	if (rc == 0)
		drain_proxies();
	while (n_workloads > 0)
		workload_drop(n_workloads - 1, "exit");
	snprintf(status, sizeof(status), "%d", rc);
	jl_begin(&j, "exit");
	jl_raw(&j, ",\"status\":");
	jl_raw(&j, status);
	jl_emit(&j);
	return rc;
}
