/* buf.h: a growable byte buffer, always NUL-terminated, and JSON string output into it.
 * Included by every part of sluice-cni and by its C unit tests.
 */
#ifndef SLUICE_CNI_BUF_H
#define SLUICE_CNI_BUF_H

#include <stddef.h>

struct buf {
	char *p;
	size_t len, cap;
};

/* Each returns 0, or -1 when memory ran out (the buffer then holds what it held before). */
int buf_reserve(struct buf *b, size_t extra);
int buf_add(struct buf *b, const void *s, size_t n);
int buf_adds(struct buf *b, const char *s);
int buf_addc(struct buf *b, char c);
/* Appends s[0..n) as a JSON string literal with its quotes: '"' and '\\' escaped, control
 * characters as \u00XX, every other byte (UTF-8 included) copied as it is. */
int buf_add_json_str(struct buf *b, const char *s, size_t n);
int buf_add_json_cstr(struct buf *b, const char *s);
void buf_free(struct buf *b);

#endif
