/* json-scan.c: the JSON object scanner of json-scan.h. Recursion is bounded by JSON_MAX_DEPTH;
 * every failure names what was expected and where.
 */
#include "json-scan.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define JSON_MAX_DEPTH 512

struct scan {
	const unsigned char *p, *start, *end;
	char err[160];
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

/* Scans a string starting at the opening quote; appends it, decoded, to out unless mode is
 * STR_SKIP. name says what the string is, for errors. */
static int scan_string(struct scan *s, enum str_mode mode, struct buf *out, const char *name)
{
	const unsigned char *run;

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
			    s->p[1] == 'u' && hex4(s->p + 2, &lo) == 0 && lo >= 0xdc00 &&
			    lo < 0xe000) {
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				s->p += 6;
			} else if (cp >= 0xd800 && cp < 0xe000) {
				if (mode == STR_VALUE) {
					s->p -= 6;
					return scan_fail(s,
							 "unsupported lone surrogate "
							 "escape in %s",
							 name);
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
			case '"':
				d = '"';
				break;
			case '\\':
				d = '\\';
				break;
			case '/':
				d = '/';
				break;
			case 'b':
				d = '\b';
				break;
			case 'f':
				d = '\f';
				break;
			case 'n':
				d = '\n';
				break;
			case 'r':
				d = '\r';
				break;
			case 't':
				d = '\t';
				break;
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

static int is_null(const struct scan *s)
{
	return s->end - s->p >= 4 && memcmp(s->p, "null", 4) == 0;
}

/* Scans a value that must be an array of strings into m->list. On a type mismatch the value is
 * still scanned first, so that a syntax error later in it is reported instead. */
static int scan_string_list(struct scan *s, int depth, struct json_member *m)
{
	const unsigned char *at = s->p;

	m->list.len = 0;
	m->list_count = 0;
	if (*s->p != '[')
		goto not_a_list;
	s->p++;
	skip_ws(s);
	if (s->p < s->end && *s->p == ']') {
		s->p++;
		return 0;
	}
	for (;;) {
		skip_ws(s);
		if (s->p >= s->end || *s->p != '"') {
			s->p = at;
			goto not_a_list;
		}
		if (scan_string(s, STR_VALUE, &m->list, m->key) < 0)
			return -1;
		if (buf_addc(&m->list, '\0') < 0)
			return scan_fail(s, "out of memory");
		m->list_count++;
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
not_a_list:
	if (scan_value(s, depth + 1) < 0)
		return -1;
	s->p = at;
	return scan_fail(s, "\"%s\" is not a list of strings", m->key);
}

/* Scans one member's value into m (the value starts at s->p). */
static int scan_member(struct scan *s, int depth, struct json_member *m)
{
	const unsigned char *at = s->p;

	if (is_null(s)) {
		/* Go's encoding/json: null leaves a string as it was, and sets a slice or a map (a
		 * list, a prevResult) to nil, which is absent. */
		if (m->want != JSON_WANT_STRING) {
			m->present = 0;
			m->list_count = 0;
		}
		return scan_literal(s, "null");
	}
	switch (m->want) {
	case JSON_WANT_STRING:
		if (*s->p != '"') {
			if (scan_value(s, depth + 1) < 0)
				return -1;
			s->p = at;
			return scan_fail(s, "\"%s\" is not a string", m->key);
		}
		m->str.len = 0;
		if (scan_string(s, STR_VALUE, &m->str, m->key) < 0)
			return -1;
		break;
	case JSON_WANT_STRING_LIST:
		if (scan_string_list(s, depth, m) < 0)
			return -1;
		break;
	case JSON_WANT_RAW:
		if (scan_value(s, depth + 1) < 0)
			return -1;
		m->raw_off = (size_t)(at - s->start);
		m->raw_len = (size_t)(s->p - at);
		break;
	}
	m->present = 1;
	return 0;
}

/* Scans the members of an object whose '{' was consumed. With members (the top level), decodes
 * each key and extracts the values asked for. */
static int scan_object(struct scan *s, int depth, struct json_member *members, size_t n,
		       struct buf *key)
{
	skip_ws(s);
	if (s->p < s->end && *s->p == '}') {
		s->p++;
		return 0;
	}
	for (;;) {
		struct json_member *m = NULL;
		size_t i;

		skip_ws(s);
		if (s->p >= s->end || *s->p != '"')
			return scan_unexpected(s, "a string (object key)");
		if (members) {
			key->len = 0;
			if (scan_string(s, STR_KEY, key, "key") < 0)
				return -1;
			for (i = 0; i < n && !m; i++)
				if (strlen(members[i].key) == key->len &&
				    memcmp(members[i].key, key->p, key->len) == 0)
					m = &members[i];
		} else if (scan_string(s, STR_SKIP, NULL, "key") < 0) {
			return -1;
		}
		skip_ws(s);
		if (s->p >= s->end || *s->p != ':')
			return scan_unexpected(s, "':' after object key");
		s->p++;
		skip_ws(s);
		if (s->p >= s->end)
			return scan_unexpected(s, "a value");
		if (m ? scan_member(s, depth, m) < 0 : scan_value(s, depth + 1) < 0)
			return -1;
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

/* Scans (validates and skips) any value; leading whitespace allowed. */
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
		return scan_object(s, depth, NULL, 0, NULL);
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

int json_scan_object(const char *data, size_t len, struct json_member *members, size_t n, char *err,
		     size_t errlen)
{
	struct buf key = {0};
	struct scan s;
	int rc;

	s.start = s.p = (const unsigned char *)data;
	s.end = s.p + len;
	s.err[0] = '\0';
	skip_ws(&s);
	if (s.p >= s.end || *s.p != '{') {
		if (len == 0)
			scan_fail(&s, "empty input, expected a JSON object");
		else
			scan_unexpected(&s, "'{' (a JSON object)");
		rc = -1;
	} else {
		s.p++;
		rc = scan_object(&s, 0, members, n, &key);
		if (rc == 0) {
			skip_ws(&s);
			if (s.p < s.end)
				rc = scan_fail(&s, "unexpected data after the top-level object");
		}
	}
	buf_free(&key);
	if (rc < 0)
		snprintf(err, errlen, "%s", s.err);
	return rc;
}

int json_list_contains(const struct json_member *m, const char *s)
{
	const char *item = m->list.p;
	size_t i;

	if (!m->present)
		return 0;
	for (i = 0; i < m->list_count; i++) {
		if (strcmp(item, s) == 0)
			return 1;
		item += strlen(item) + 1;
	}
	return 0;
}

void json_members_free(struct json_member *members, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		buf_free(&members[i].str);
		buf_free(&members[i].list);
	}
}
