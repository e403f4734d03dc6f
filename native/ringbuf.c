/* Ring buffer reading for the datapath's events (src/native/ring-buffer.ts): libbpf's
 * ring_buffer, with its records copied out into a caller's buffer so that Node reads many per
 * call. libbpf consumes a record before its callback can decline it, so the one that does not
 * fit is kept here and delivered first by the next call.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/libbpf.h>

#include "internal.h"
#include "shim.h"

#define fail sl_fail

struct sl_ringbuf {
	struct ring_buffer *rb;
	/* the caller's buffer during sl_ringbuf_consume */
	char *out;
	size_t cap;
	size_t used;
	/* a record that did not fit, delivered first next time */
	void *held;
	uint32_t held_len;
};

/* Appends one record; 0 when it does not fit. */
static int put(struct sl_ringbuf *r, const void *data, uint32_t len)
{
	if (r->used + sizeof(len) + len > r->cap)
		return 0;
	memcpy(r->out + r->used, &len, sizeof(len));
	memcpy(r->out + r->used + sizeof(len), data, len);
	r->used += sizeof(len) + len;
	return 1;
}

static int on_record(void *ctx, void *data, size_t size)
{
	struct sl_ringbuf *r = ctx;

	if (put(r, data, (uint32_t)size))
		return 0;
	r->held = malloc(size);
	if (!r->held)
		return -ENOMEM;
	memcpy(r->held, data, size);
	r->held_len = (uint32_t)size;
	/* stops libbpf's loop, this record consumed: it is held */
	return -ENOSPC;
}

struct sl_ringbuf *sl_ringbuf_open(int map_fd)
{
	struct sl_ringbuf *r = calloc(1, sizeof(*r));

	if (!r) {
		fail(ENOMEM, "ring buffer reader");
		return NULL;
	}
	r->rb = ring_buffer__new(map_fd, on_record, r, NULL);
	if (!r->rb) {
		fail(errno, "ring buffer reader on map fd %d", map_fd);
		free(r);
		return NULL;
	}
	return r;
}

int sl_ringbuf_epoll_fd(struct sl_ringbuf *r)
{
	return ring_buffer__epoll_fd(r->rb);
}

int sl_ringbuf_consume(struct sl_ringbuf *r, void *out, size_t out_len, int *more)
{
	int ret;

	*more = 0;
	r->out = out;
	r->cap = out_len;
	r->used = 0;
	if (r->held) {
		if (!put(r, r->held, r->held_len))
			return fail(EMSGSIZE,
				    "ring buffer: a %u-byte record does not fit in %zu bytes",
				    r->held_len, out_len);
		free(r->held);
		r->held = NULL;
	}
	ret = ring_buffer__consume(r->rb);
	if (ret == -ENOSPC) {
		*more = 1;
		return (int)r->used;
	}
	if (ret < 0)
		return fail(-ret, "ring buffer: consume");
	return (int)r->used;
}

void sl_ringbuf_free(struct sl_ringbuf *r)
{
	if (!r)
		return;
	ring_buffer__free(r->rb);
	free(r->held);
	free(r);
}
