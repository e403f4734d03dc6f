/* sluice-cni: the chained CNI plugin of sluice (CNI spec 1.1).
 *
 * The container runtime runs this once per pod ADD/DEL on the pod start-up path, so it is a thin,
 * fast forwarder written in C (libc only): it answers VERSION itself, computes the network
 * namespace cookie of CNI_NETNS (only possible from inside that namespace), and forwards
 * everything else to the node agent over its unix socket, where the real handler validates the
 * configuration and decides. When the agent is not reachable it applies a fixed policy: ADD and
 * CHECK fail with code 11 (try again later) so that no pod starts outside the mesh, DEL and GC
 * succeed silently (they must not block pod deletion; the agent garbage-collects on start-up),
 * STATUS fails with code 50 (plugin not available).
 *
 * Protocol with the agent (one connection per invocation):
 *   request:  one line, a JSON object terminated by '\n':
 *             {"op":"cni","command":"ADD","env":{"CNI_CONTAINERID":"..",...},
 *              "stdin":"<whole stdin>","netnsCookie":"<decimal u64>"}
 *             env holds only the CNI_* variables that are set; "netnsError":"<why>" replaces
 *             "netnsCookie" when the cookie could not be computed; neither for GC/STATUS or
 *             when CNI_NETNS is unset/empty. The plugin does not half-close its side.
 *   answer:   "<decimal exit code 0..255>\n" followed by the exact bytes for stdout, ended by
 *             the agent closing the connection.
 *
 * Build: cc -O2 -Wall -Wextra -Werror -o build/sluice-cni cni/sluice-cni.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

#define DEFAULT_CNI_VERSION "1.1.0"
#define DEFAULT_AGENT_SOCKET "/var/run/sluice/agent.sock"
#define SUPPORTED_VERSIONS "[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]"

#define STDIN_CAP ((size_t)16 << 20)  /* larger stdin: error 6 */
#define ANSWER_CAP ((size_t)64 << 20) /* larger agent answer: malformed */
#define CONNECT_TIMEOUT_MS 2000
#define IO_TIMEOUT_MS 10000
#define JSON_MAX_DEPTH 512
#define EINTR_MAX 1000 /* bound on retries of one syscall interrupted by signals */

/* CNI error codes (spec 1.1). */
#define CNI_ERR_INVALID_ENV 4
#define CNI_ERR_IO 5
#define CNI_ERR_DECODE 6
#define CNI_ERR_TRY_LATER 11
#define CNI_ERR_NOT_AVAILABLE 50

enum command { CMD_ADD, CMD_DEL, CMD_CHECK, CMD_VERSION, CMD_STATUS, CMD_GC };

static const struct {
	const char *name;
	enum command cmd;
} commands[] = {
	{"ADD", CMD_ADD},         {"DEL", CMD_DEL},       {"CHECK", CMD_CHECK},
	{"VERSION", CMD_VERSION}, {"STATUS", CMD_STATUS}, {"GC", CMD_GC},
};

static int debug_enabled;
/* cniVersion for our own answers: the one from stdin once decoded, else the default. */
static const char *out_version = DEFAULT_CNI_VERSION;

__attribute__((format(printf, 1, 2))) static void dbg(const char *fmt, ...)
{
	va_list ap;

	if (!debug_enabled)
		return;
	va_start(ap, fmt);
	fputs("sluice-cni: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ---- growable byte buffer ---------------------------------------------------------------- */

struct buf {
	char *p;
	size_t len, cap;
};

static int buf_reserve(struct buf *b, size_t extra)
{
	size_t need, ncap;
	char *np;

	if (extra > SIZE_MAX - b->len - 1)
		return -1;
	need = b->len + extra + 1; /* always room for a terminating NUL */
	if (need <= b->cap)
		return 0;
	ncap = b->cap ? b->cap : 256;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2) {
			ncap = need;
			break;
		}
		ncap *= 2;
	}
	np = realloc(b->p, ncap);
	if (!np)
		return -1;
	b->p = np;
	b->cap = ncap;
	return 0;
}

static int buf_add(struct buf *b, const void *s, size_t n)
{
	if (buf_reserve(b, n) < 0)
		return -1;
	if (n)
		memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static int buf_adds(struct buf *b, const char *s)
{
	return buf_add(b, s, strlen(s));
}

static int buf_addc(struct buf *b, char c)
{
	return buf_add(b, &c, 1);
}

/* Appends s[0..n) as a JSON string literal (with quotes). Control characters become \u00XX,
 * '"' and '\\' are escaped, everything else (including bytes >= 0x80) is copied as-is. */
static int buf_add_json_str(struct buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, run = 0;

	/* Worst case 6 bytes per input byte: reserve once, so the loop below cannot fail. */
	if (n > (SIZE_MAX - 2) / 6 || buf_reserve(b, n * 6 + 2) < 0)
		return -1;
	b->p[b->len++] = '"';
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c != '"' && c != '\\') {
			run++;
			continue;
		}
		memcpy(b->p + b->len, s + i - run, run);
		b->len += run;
		run = 0;
		if (c == '"' || c == '\\') {
			b->p[b->len++] = '\\';
			b->p[b->len++] = (char)c;
		} else {
			memcpy(b->p + b->len, "\\u00", 4);
			b->p[b->len + 4] = hex[c >> 4];
			b->p[b->len + 5] = hex[c & 15];
			b->len += 6;
		}
	}
	memcpy(b->p + b->len, s + n - run, run);
	b->len += run;
	b->p[b->len++] = '"';
	b->p[b->len] = '\0';
	return 0;
}

static int buf_add_json_cstr(struct buf *b, const char *s)
{
	return buf_add_json_str(b, s, strlen(s));
}

/* ---- output ------------------------------------------------------------------------------ */

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

/* Prints a CNI error object on stdout and exits 1. */
__attribute__((noreturn)) static void die(int code, const char *msg, const char *details)
{
	static const char oom[] = "{\"cniVersion\":\"" DEFAULT_CNI_VERSION
				  "\",\"code\":11,\"msg\":\"out of memory\"}\n";
	struct buf b = {0};
	char num[16];
	int ok;

	snprintf(num, sizeof(num), "%d", code);
	ok = buf_adds(&b, "{\"cniVersion\":") == 0 && buf_add_json_cstr(&b, out_version) == 0 &&
	     buf_adds(&b, ",\"code\":") == 0 && buf_adds(&b, num) == 0 &&
	     buf_adds(&b, ",\"msg\":") == 0 && buf_add_json_cstr(&b, msg) == 0;
	if (ok && details && *details)
		ok = buf_adds(&b, ",\"details\":") == 0 && buf_add_json_cstr(&b, details) == 0;
	ok = ok && buf_adds(&b, "}\n") == 0;
	dbg("error %d: %s%s%s", code, msg, details && *details ? ": " : "",
	    details ? details : "");
	if (ok)
		(void)write_all(STDOUT_FILENO, b.p, b.len);
	else
		(void)write_all(STDOUT_FILENO, oom, sizeof(oom) - 1);
	free(b.p);
	exit(1);
}

__attribute__((noreturn)) static void die_oom(void)
{
	die(CNI_ERR_TRY_LATER, "out of memory", NULL);
}

/* ---- stdin ------------------------------------------------------------------------------- */

/* Reads stdin up to STDIN_CAP + 1 bytes. Returns 0, or -1 with errno set (E2BIG: too large). */
static int read_stdin(struct buf *b)
{
	int intr = 0;

	for (;;) {
		size_t room;
		ssize_t r;

		if (b->len > STDIN_CAP) {
			errno = E2BIG;
			return -1;
		}
		if (b->cap - b->len < 4096 + 1) {
			size_t grow = b->cap ? b->cap : 65536;

			if (grow > STDIN_CAP + 2 - b->len)
				grow = STDIN_CAP + 2 - b->len; /* never read much past the cap */
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

/* ---- minimal JSON scanner ---------------------------------------------------------------- */

/* Validates the whole input as one JSON object and extracts the string values of two of its
 * top-level keys. Nested values are validated and skipped. Duplicate keys: the last one wins and
 * null is ignored, as Go's encoding/json (used by libcni) does. */

struct scan {
	const unsigned char *p, *start, *end;
	char err[160];
};

struct conf {
	struct buf cni_version, agent_socket;
	int has_cni_version, has_agent_socket;
};

__attribute__((format(printf, 2, 3))) static int scan_fail(struct scan *s, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	if (s->err[0])
		return -1; /* keep the first (innermost) reason */
	va_start(ap, fmt);
	vsnprintf(s->err, sizeof(s->err), fmt, ap);
	va_end(ap);
	n = strlen(s->err);
	snprintf(s->err + n, sizeof(s->err) - n, " at offset %zu", (size_t)(s->p - s->start));
	return -1;
}

static int scan_unexpected(struct scan *s, const char *what)
{
	if (s->p >= s->end)
		return scan_fail(s, "unexpected end of input, expected %s", what);
	if (*s->p >= 0x20 && *s->p < 0x7f)
		return scan_fail(s, "invalid character '%c', expected %s", *s->p, what);
	return scan_fail(s, "invalid byte 0x%02x, expected %s", *s->p, what);
}

static void skip_ws(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

static int hex4(const unsigned char *p, unsigned *out)
{
	unsigned v = 0;
	int i;

	for (i = 0; i < 4; i++) {
		unsigned char c = p[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

static int add_utf8(struct buf *b, unsigned cp)
{
	char u[4];
	size_t n;

	if (cp < 0x80) {
		u[0] = (char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | (cp >> 6));
		u[1] = (char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | (cp >> 12));
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		u[0] = (char)(0xf0 | (cp >> 18));
		u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[3] = (char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	return buf_add(b, u, n);
}

enum str_mode {
	STR_SKIP,  /* validate only */
	STR_KEY,   /* decode; a lone surrogate becomes U+FFFD (the key then matches nothing) */
	STR_VALUE, /* decode; \u0000 and lone surrogates are rejected */
};

/* Scans a string starting at the opening quote; decodes into out unless mode is STR_SKIP. */
static int scan_string(struct scan *s, enum str_mode mode, struct buf *out, const char *name)
{
	const unsigned char *run;

	if (out)
		out->len = 0;
	s->p++; /* opening quote */
	run = s->p;
	for (;;) {
		unsigned char c;

		if (s->p >= s->end)
			return scan_fail(s, "unterminated string");
		c = *s->p;
		if (c != '"' && c != '\\' && c >= 0x20) {
			s->p++;
			continue;
		}
		if (mode != STR_SKIP && buf_add(out, run, (size_t)(s->p - run)) < 0)
			return scan_fail(s, "out of memory");
		if (c == '"') {
			s->p++;
			return 0;
		}
		if (c < 0x20)
			return scan_fail(s, "invalid control character 0x%02x in string", c);
		/* backslash */
		if (s->end - s->p < 2)
			return scan_fail(s, "unterminated escape in string");
		c = s->p[1];
		if (c == 'u') {
			unsigned cp, lo;

			if (s->end - s->p < 6 || hex4(s->p + 2, &cp) < 0)
				return scan_fail(s, "invalid \\u escape in string");
			s->p += 6;
			if (cp >= 0xd800 && cp < 0xdc00 && s->end - s->p >= 6 && s->p[0] == '\\' &&
			    s->p[1] == 'u' && hex4(s->p + 2, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000) {
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				s->p += 6;
			} else if (cp >= 0xd800 && cp < 0xe000) {
				if (mode == STR_VALUE) {
					s->p -= 6;
					return scan_fail(s, "unsupported lone surrogate escape in %s", name);
				}
				cp = 0xfffd;
			}
			if (cp == 0 && mode == STR_VALUE) {
				s->p -= 6;
				return scan_fail(s, "unsupported \\u0000 in %s", name);
			}
			if (mode != STR_SKIP && add_utf8(out, cp) < 0)
				return scan_fail(s, "out of memory");
		} else {
			char d;

			switch (c) {
			case '"': d = '"'; break;
			case '\\': d = '\\'; break;
			case '/': d = '/'; break;
			case 'b': d = '\b'; break;
			case 'f': d = '\f'; break;
			case 'n': d = '\n'; break;
			case 'r': d = '\r'; break;
			case 't': d = '\t'; break;
			default:
				s->p++;
				return scan_fail(s, "invalid escape '\\%c' in string",
						 c >= 0x20 && c < 0x7f ? c : '?');
			}
			if (mode != STR_SKIP && buf_addc(out, d) < 0)
				return scan_fail(s, "out of memory");
			s->p += 2;
		}
		run = s->p;
	}
}

static int digits(struct scan *s)
{
	const unsigned char *p0 = s->p;

	while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
		s->p++;
	return s->p > p0 ? 0 : scan_unexpected(s, "a digit");
}

static int scan_number(struct scan *s)
{
	if (*s->p == '-')
		s->p++;
	if (s->p < s->end && *s->p == '0')
		s->p++;
	else if (digits(s) < 0)
		return -1;
	if (s->p < s->end && *s->p == '.') {
		s->p++;
		if (digits(s) < 0)
			return -1;
	}
	if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
		s->p++;
		if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
			s->p++;
		if (digits(s) < 0)
			return -1;
	}
	return 0;
}

static int scan_literal(struct scan *s, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
		return scan_unexpected(s, "a value");
	s->p += n;
	return 0;
}

static int scan_value(struct scan *s, int depth);

/* Scans the members of an object whose '{' was consumed. At depth 0, decodes the keys and
 * extracts the wanted values into c. */
static int scan_object(struct scan *s, int depth, struct conf *c, struct buf *key)
{
	skip_ws(s);
	if (s->p < s->end && *s->p == '}') {
		s->p++;
		return 0;
	}
	for (;;) {
		struct buf *dst = NULL;
		int *has = NULL;
		const char *name = NULL;

		skip_ws(s);
		if (s->p >= s->end || *s->p != '"')
			return scan_unexpected(s, "a string (object key)");
		if (scan_string(s, c ? STR_KEY : STR_SKIP, c ? key : NULL, "key") < 0)
			return -1;
		if (c && key->len == 10 && memcmp(key->p, "cniVersion", 10) == 0) {
			dst = &c->cni_version;
			has = &c->has_cni_version;
			name = "cniVersion";
		} else if (c && key->len == 11 && memcmp(key->p, "agentSocket", 11) == 0) {
			dst = &c->agent_socket;
			has = &c->has_agent_socket;
			name = "agentSocket";
		}
		skip_ws(s);
		if (s->p >= s->end || *s->p != ':')
			return scan_unexpected(s, "':' after object key");
		s->p++;
		skip_ws(s);
		if (dst && s->p < s->end && *s->p == '"') {
			if (scan_string(s, STR_VALUE, dst, name) < 0)
				return -1;
			*has = 1;
		} else if (dst && s->p < s->end && *s->p == 'n') {
			if (scan_literal(s, "null") < 0) /* null leaves the field as it was */
				return -1;
		} else if (dst) {
			if (scan_value(s, depth + 1) < 0)
				return -1;
			return scan_fail(s, "\"%s\" is not a string", name);
		} else if (scan_value(s, depth + 1) < 0) {
			return -1;
		}
		skip_ws(s);
		if (s->p < s->end && *s->p == ',') {
			s->p++;
			continue;
		}
		if (s->p < s->end && *s->p == '}') {
			s->p++;
			return 0;
		}
		return scan_unexpected(s, "',' or '}' in object");
	}
}

static int scan_array(struct scan *s, int depth)
{
	skip_ws(s);
	if (s->p < s->end && *s->p == ']') {
		s->p++;
		return 0;
	}
	for (;;) {
		if (scan_value(s, depth + 1) < 0)
			return -1;
		skip_ws(s);
		if (s->p < s->end && *s->p == ',') {
			s->p++;
			continue;
		}
		if (s->p < s->end && *s->p == ']') {
			s->p++;
			return 0;
		}
		return scan_unexpected(s, "',' or ']' in array");
	}
}

/* Scans (validates and skips) any value; leading whitespace allowed. Recursion is bounded by
 * JSON_MAX_DEPTH. */
static int scan_value(struct scan *s, int depth)
{
	skip_ws(s);
	if (depth > JSON_MAX_DEPTH)
		return scan_fail(s, "nesting deeper than %d levels", JSON_MAX_DEPTH);
	if (s->p >= s->end)
		return scan_unexpected(s, "a value");
	switch (*s->p) {
	case '"':
		return scan_string(s, STR_SKIP, NULL, "string");
	case '{':
		s->p++;
		return scan_object(s, depth, NULL, NULL);
	case '[':
		s->p++;
		return scan_array(s, depth);
	case 't':
		return scan_literal(s, "true");
	case 'f':
		return scan_literal(s, "false");
	case 'n':
		return scan_literal(s, "null");
	default:
		if (*s->p == '-' || (*s->p >= '0' && *s->p <= '9'))
			return scan_number(s);
		return scan_unexpected(s, "a value");
	}
}

/* Returns 0, or -1 with the reason in s->err. */
static int scan_conf(struct scan *s, const char *data, size_t len, struct conf *c)
{
	struct buf key = {0};
	int rc;

	s->start = s->p = (const unsigned char *)data;
	s->end = s->p + len;
	s->err[0] = '\0';
	skip_ws(s);
	if (s->p >= s->end || *s->p != '{') {
		if (s->p >= s->end && len == 0)
			return scan_fail(s, "empty input, expected a JSON object");
		return scan_unexpected(s, "'{' (a JSON object)");
	}
	s->p++;
	rc = scan_object(s, 0, c, &key);
	free(key.p);
	if (rc < 0)
		return -1;
	skip_ws(s);
	if (s->p < s->end)
		return scan_fail(s, "unexpected data after the top-level object");
	return 0;
}

/* ---- network namespace cookie ------------------------------------------------------------ */

/* Enters the network namespace at path, reads its cookie through a socket created there, and
 * returns to the original namespace. Returns 0, or -1 with "<step>: <strerror>" in err. */
static int netns_cookie(const char *path, uint64_t *cookie, char *err, size_t errlen)
{
	int orig, fd, sk, rc = -1, e;
	uint64_t v = 0;
	socklen_t vlen = sizeof(v);

	orig = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (orig < 0) /* not fatal: unix socket paths do not depend on the network namespace */
		dbg("cannot open /proc/self/ns/net: %s", strerror(errno));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "open: %s", strerror(errno));
		goto out;
	}
	if (setns(fd, CLONE_NEWNET) < 0) {
		snprintf(err, errlen, "setns: %s", strerror(errno));
		close(fd);
		goto out;
	}
	close(fd);
	sk = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sk < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		goto restore;
	}
	if (getsockopt(sk, SOL_SOCKET, SO_NETNS_COOKIE, &v, &vlen) < 0) {
		snprintf(err, errlen, "getsockopt: %s", strerror(errno));
	} else if (vlen != sizeof(v)) {
		snprintf(err, errlen, "getsockopt: unexpected option length %u", (unsigned)vlen);
	} else {
		*cookie = v;
		rc = 0;
	}
	close(sk);
restore:
	if (orig >= 0 && setns(orig, CLONE_NEWNET) < 0) {
		e = errno;
		dbg("cannot return to the original network namespace: %s", strerror(e));
	}
out:
	if (orig >= 0)
		close(orig);
	return rc;
}

/* ---- agent connection -------------------------------------------------------------------- */

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

/* Connects to the unix stream socket at path within CONNECT_TIMEOUT_MS. Returns the
 * (non-blocking) fd, or -1 with the reason (strerror or "timed out") in err. */
static int agent_connect(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	size_t n = strlen(path);
	int64_t deadline = now_ms() + CONNECT_TIMEOUT_MS;
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
 * IO_TIMEOUT_MS. Returns 0 with a non-empty answer in ans; -1 when the agent is not reachable
 * (timeout, reset, closed without a byte); -2 when the answer exceeds ANSWER_CAP. The reason is
 * left in err. */
static int agent_exchange(int fd, const struct buf *req, struct buf *ans, char *err, size_t errlen)
{
	int64_t deadline = now_ms() + IO_TIMEOUT_MS;
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
		/* The agent may have answered (e.g. refused the request) before closing: read it. */
		send_errno = w < 0 ? errno : EIO;
		dbg("send: %s", strerror(send_errno));
		break;
	}
	intr = 0;
	for (;;) {
		ssize_t got;

		if (ans->len > ANSWER_CAP) {
			snprintf(err, errlen, "answer larger than %zu bytes", ANSWER_CAP);
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
		 * read; it means the agent closed without reading all of the request (e.g. it refused
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

/* ---- main -------------------------------------------------------------------------------- */

static int add_env(struct buf *b, const char *name, int *first)
{
	const char *v = getenv(name);

	if (!v)
		return 0;
	if ((!*first && buf_addc(b, ',') < 0) || buf_add_json_cstr(b, name) < 0 ||
	    buf_addc(b, ':') < 0 || buf_add_json_cstr(b, v) < 0)
		return -1;
	*first = 0;
	return 0;
}

int main(void)
{
	static const char *const env_names[] = {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME",
						"CNI_ARGS", "CNI_PATH"};
	const char *cmd_name, *netns, *sock_path = DEFAULT_AGENT_SOCKET, *dbg_env;
	struct buf in = {0}, req = {0}, ans = {0};
	struct conf conf;
	struct scan sc;
	enum command cmd = CMD_ADD;
	int found = 0, decoded, read_rc, read_errno = 0, first = 1, have_cookie = 0, code = 0;
	int fd, xrc, rc;
	uint64_t cookie = 0;
	char netns_err[256] = "", conn_err[256] = "", details[4096], num[32];
	long body;
	size_t i;

	memset(&conf, 0, sizeof(conf));
	dbg_env = getenv("SLUICE_CNI_DEBUG");
	debug_enabled = dbg_env && strcmp(dbg_env, "1") == 0;
	/* Writes to a closed stdout or agent socket must fail with EPIPE, not kill us. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		dbg("cannot ignore SIGPIPE: %s", strerror(errno));

	/* 1. the command */
	cmd_name = getenv("CNI_COMMAND");
	if (!cmd_name || !*cmd_name)
		die(CNI_ERR_INVALID_ENV, "CNI_COMMAND is not set", NULL);
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(cmd_name, commands[i].name) == 0) {
			cmd = commands[i].cmd;
			found = 1;
			break;
		}
	}
	if (!found) {
		struct buf d = {0};

		if (buf_adds(&d, "CNI_COMMAND=") < 0 || buf_add_json_cstr(&d, cmd_name) < 0 ||
		    buf_adds(&d, "; supported: ADD, DEL, CHECK, VERSION, STATUS, GC") < 0)
			die_oom();
		die(CNI_ERR_INVALID_ENV, "unknown CNI_COMMAND", d.p);
	}

	/* 2. stdin */
	read_rc = read_stdin(&in);
	if (read_rc < 0)
		read_errno = errno;

	/* 3. the two values we need from the configuration */
	decoded = read_rc == 0 && scan_conf(&sc, in.p ? in.p : "", in.len, &conf) == 0;
	if (decoded && conf.has_cni_version && conf.cni_version.len > 0)
		out_version = conf.cni_version.p;
	if (decoded && conf.has_agent_socket && conf.agent_socket.len > 0)
		sock_path = conf.agent_socket.p;

	/* 4. VERSION: always answered, locally */
	if (cmd == CMD_VERSION) {
		struct buf o = {0};

		if (!decoded)
			dbg("VERSION: configuration not decoded (%s), answering with %s",
			    read_rc < 0 ? strerror(read_errno) : sc.err, DEFAULT_CNI_VERSION);
		if (buf_adds(&o, "{\"cniVersion\":") < 0 || buf_add_json_cstr(&o, out_version) < 0 ||
		    buf_adds(&o, ",\"supportedVersions\":" SUPPORTED_VERSIONS "}\n") < 0)
			die_oom();
		rc = write_all(STDOUT_FILENO, o.p, o.len);
		if (rc < 0)
			dbg("cannot write stdout: %s", strerror(errno));
		free(o.p);
		free(in.p);
		free(conf.cni_version.p);
		free(conf.agent_socket.p);
		return rc < 0 ? 1 : 0;
	}
	if (read_rc < 0) {
		if (read_errno == E2BIG)
			die(CNI_ERR_DECODE, "stdin too large", "more than 16 MiB");
		if (read_errno == ENOMEM)
			die_oom();
		die(CNI_ERR_IO, "cannot read stdin", strerror(read_errno));
	}
	if (!decoded) {
		snprintf(details, sizeof(details), "cannot decode network configuration: %s", sc.err);
		die(CNI_ERR_DECODE, details, NULL);
	}

	/* 5. the network namespace cookie (ADD, DEL, CHECK only) */
	netns = getenv("CNI_NETNS");
	if ((cmd == CMD_ADD || cmd == CMD_DEL || cmd == CMD_CHECK) && netns && *netns) {
		if (netns_cookie(netns, &cookie, netns_err, sizeof(netns_err)) == 0)
			have_cookie = 1;
		else
			dbg("netns %s: %s", netns, netns_err);
	}

	/* 6. the request line */
	if (buf_adds(&req, "{\"op\":\"cni\",\"command\":") < 0 ||
	    buf_add_json_cstr(&req, cmd_name) < 0 || buf_adds(&req, ",\"env\":{") < 0)
		die_oom();
	for (i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++)
		if (add_env(&req, env_names[i], &first) < 0)
			die_oom();
	if (buf_adds(&req, "},\"stdin\":") < 0 ||
	    buf_add_json_str(&req, in.p ? in.p : "", in.len) < 0)
		die_oom();
	if (have_cookie) {
		snprintf(num, sizeof(num), "%" PRIu64, cookie);
		if (buf_adds(&req, ",\"netnsCookie\":\"") < 0 || buf_adds(&req, num) < 0 ||
		    buf_addc(&req, '"') < 0)
			die_oom();
	} else if (netns_err[0]) {
		if (buf_adds(&req, ",\"netnsError\":") < 0 || buf_add_json_cstr(&req, netns_err) < 0)
			die_oom();
	}
	if (buf_adds(&req, "}\n") < 0)
		die_oom();
	free(in.p);
	in.p = NULL;

	xrc = -1;
	fd = agent_connect(sock_path, conn_err, sizeof(conn_err));
	if (fd >= 0) {
		xrc = agent_exchange(fd, &req, &ans, conn_err, sizeof(conn_err));
		close(fd);
	}
	free(req.p);
	if (xrc == -2)
		die(CNI_ERR_TRY_LATER, "sluice agent sent a malformed answer", conn_err);

	/* 7. agent not reachable: the fixed policy */
	if (xrc < 0) {
		const char *cid = getenv("CNI_CONTAINERID");

		dbg("%s %s: agent %s: %s", cmd_name, cid ? cid : "-", sock_path, conn_err);
		snprintf(details, sizeof(details), "%s: %s", sock_path, conn_err);
		switch (cmd) {
		case CMD_DEL:
		case CMD_GC:
			free(ans.p);
			free(conf.cni_version.p);
			free(conf.agent_socket.p);
			return 0;
		case CMD_STATUS:
			die(CNI_ERR_NOT_AVAILABLE, "sluice agent is not available", details);
		default:
			die(CNI_ERR_TRY_LATER, "sluice agent is not reachable; try again later", details);
		}
	}

	/* the agent's answer, verbatim */
	body = parse_answer(&ans, &code);
	if (body < 0) {
		char head[64];
		size_t n = ans.len < sizeof(head) ? ans.len : sizeof(head);
		struct buf d = {0};

		for (i = 0; i < n; i++) /* keep the excerpt ASCII: it may cut a UTF-8 sequence */
			head[i] = (unsigned char)ans.p[i] < 0x80 ? ans.p[i] : '?';
		if (buf_adds(&d, "answer starts with ") < 0 || buf_add_json_str(&d, head, n) < 0)
			die_oom();
		die(CNI_ERR_TRY_LATER, "sluice agent sent a malformed answer", d.p);
	}
	rc = write_all(STDOUT_FILENO, ans.p + body, ans.len - (size_t)body);
	if (rc < 0) {
		dbg("cannot write stdout: %s", strerror(errno));
		code = 1;
	} else {
		dbg("%s: agent answered with exit code %d and %zu bytes", cmd_name, code,
		    ans.len - (size_t)body);
	}
	free(ans.p);
	free(conf.cni_version.p);
	free(conf.agent_socket.p);
	return code;
}
