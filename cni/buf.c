/* buf.c: the growable byte buffer of buf.h. */
#include "buf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int buf_reserve(struct buf *b, size_t extra)
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

int buf_add(struct buf *b, const void *s, size_t n)
{
	if (buf_reserve(b, n) < 0)
		return -1;
	if (n)
		memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

int buf_adds(struct buf *b, const char *s)
{
	return buf_add(b, s, strlen(s));
}

int buf_addc(struct buf *b, char c)
{
	return buf_add(b, &c, 1);
}

int buf_add_json_str(struct buf *b, const char *s, size_t n)
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

int buf_add_json_cstr(struct buf *b, const char *s)
{
	return buf_add_json_str(b, s, strlen(s));
}

void buf_free(struct buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}
