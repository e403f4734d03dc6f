/* libsluice, map migration at upgrade (src/bpf/migrate.ts drives it):
 *  - the spec of every map an object declares, and of a live (pinned) map, as JSON: type, sizes,
 *    flags and the key and value layouts read from BTF, so that user space can tell a compatible
 *    pin from one whose layout changed, and convert entries field by field;
 *  - sharing a map created by one object with the next one (bpf_map__reuse_fd);
 *  - a socket's cookie through its owner (pidfd_getfd): sockhash entries read back as cookies,
 *    and are put into the new map through the owner's fd.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "shim.h"
#include "internal.h"

/* Deep enough for any map layout; a deeper (or cyclic) type is described as "other". */
#define LAYOUT_MAX_DEPTH 12

struct jbuf {
	char *buf;
	size_t len;
	size_t used;
	int overflow;
};

__attribute__((format(printf, 2, 3))) static void jprintf(struct jbuf *j, const char *fmt, ...)
{
	va_list ap;
	size_t room = j->used < j->len ? j->len - j->used : 0;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(j->buf + (room ? j->used : 0), room, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= room)
		j->overflow = 1;
	j->used += n > 0 ? (size_t)n : 0;
}

/* BTF names are C identifiers: nothing to escape. */
static void jname(struct jbuf *j, const struct btf *btf, __u32 name_off)
{
	const char *name = btf__name_by_offset(btf, name_off);

	jprintf(j, "\"%s\"", name ? name : "");
}

/* One type as {"k": kind, ...}: ints (and enums) by size and signedness, arrays by count and
 * element, structs and unions by members (name, bit offset, bitfield size, type). Typedefs and
 * qualifiers are looked through: renaming a typedef does not change a layout.
 */
static void describe_type(struct jbuf *j, const struct btf *btf, __u32 id, int depth)
{
	const struct btf_type *t;
	int i;

	if (depth > LAYOUT_MAX_DEPTH) {
		jprintf(j, "{\"k\":\"other\"}");
		return;
	}
	t = btf__type_by_id(btf, id);
	while (t && (btf_is_typedef(t) || btf_is_mod(t))) {
		id = t->type;
		t = btf__type_by_id(btf, id);
	}
	if (!t) {
		jprintf(j, "{\"k\":\"other\"}");
		return;
	}
	if (btf_is_int(t)) {
		__u8 enc = btf_int_encoding(t);

		jprintf(j, "{\"k\":\"int\",\"size\":%u,\"signed\":%s,\"bits\":%u}", t->size,
			(enc & BTF_INT_SIGNED) ? "true" : "false", btf_int_bits(t));
	} else if (btf_is_enum(t) || btf_is_enum64(t)) {
		jprintf(j, "{\"k\":\"int\",\"size\":%u,\"signed\":%s,\"bits\":%u}", t->size,
			btf_kflag(t) ? "true" : "false", t->size * 8);
	} else if (btf_is_array(t)) {
		const struct btf_array *a = btf_array(t);

		jprintf(j, "{\"k\":\"array\",\"n\":%u,\"of\":", a->nelems);
		describe_type(j, btf, a->type, depth + 1);
		jprintf(j, "}");
	} else if (btf_is_composite(t)) {
		const struct btf_member *m = btf_members(t);

		jprintf(j, "{\"k\":\"%s\",\"size\":%u,\"m\":[",
			btf_is_struct(t) ? "struct" : "union", t->size);
		for (i = 0; i < btf_vlen(t); i++, m++) {
			jprintf(j, "%s{\"name\":", i ? "," : "");
			jname(j, btf, m->name_off);
			jprintf(j, ",\"off\":%u,\"bits\":%u,\"t\":", btf_member_bit_offset(t, i),
				btf_member_bitfield_size(t, i));
			describe_type(j, btf, m->type, depth + 1);
			jprintf(j, "}");
		}
		jprintf(j, "]}");
	} else if (btf_is_ptr(t)) {
		jprintf(j, "{\"k\":\"ptr\"}");
	} else if (btf_is_float(t)) {
		jprintf(j, "{\"k\":\"float\",\"size\":%u}", t->size);
	} else {
		jprintf(j, "{\"k\":\"other\"}");
	}
}

static void describe_layout(struct jbuf *j, const char *field, const struct btf *btf, __u32 id)
{
	jprintf(j, ",\"%s\":", field);
	if (!btf || !id) {
		jprintf(j, "null");
		return;
	}
	describe_type(j, btf, id, 0);
}

/* The length written, or -ENOSPC with the room the text needs (its NUL included) in *needed. */
static int finish(struct jbuf *j, const char *what, size_t *needed)
{
	*needed = j->used + 1;
	if (j->overflow)
		return sl_fail(ENOSPC, "describe %s: %zu bytes needed", what, j->used + 1);
	return (int)j->used;
}

/* Every map the object declares (internal .rodata/.bss/.data maps excluded), as a JSON array,
 * with the sizes as configured so far (call after max_entries are set, before load).
 */
int sl_obj_maps_json(struct bpf_object *obj, char *buf, size_t len, size_t *needed)
{
	struct jbuf j = {.buf = buf, .len = len};
	const struct btf *btf = bpf_object__btf(obj);
	struct bpf_map *m;
	int first = 1;

	jprintf(&j, "[");
	bpf_object__for_each_map(m, obj)
	{
		const char *name = bpf_map__name(m);

		if (strchr(name, '.'))
			continue;
		jprintf(&j, "%s{\"name\":\"%s\",\"type\":%u,\"keySize\":%u,\"valueSize\":%u,\"maxEntries\":%u,\"flags\":%u",
			first ? "" : ",", name, bpf_map__type(m), bpf_map__key_size(m),
			bpf_map__value_size(m), bpf_map__max_entries(m), bpf_map__map_flags(m));
		describe_layout(&j, "key", btf, bpf_map__btf_key_type_id(m));
		describe_layout(&j, "value", btf, bpf_map__btf_value_type_id(m));
		jprintf(&j, "}");
		first = 0;
	}
	jprintf(&j, "]");
	return finish(&j, "maps of the object", needed);
}

/* A live map's spec, layouts from the BTF it was created with (null when it has none). */
int sl_map_spec_json(int map_fd, char *buf, size_t len, size_t *needed)
{
	struct jbuf j = {.buf = buf, .len = len};
	struct bpf_map_info info;
	__u32 info_len = sizeof(info);
	struct btf *btf = NULL;
	int err;

	memset(&info, 0, sizeof(info));
	err = bpf_obj_get_info_by_fd(map_fd, &info, &info_len);
	if (err)
		return sl_fail(err, "map info of fd %d", map_fd);
	if (info.btf_id) {
		btf = btf__load_from_kernel_by_id(info.btf_id);
		if (!btf)
			return sl_fail(errno, "map %s: load its BTF (id %u)", info.name, info.btf_id);
	}
	jprintf(&j, "{\"name\":\"%s\",\"id\":%u,\"type\":%u,\"keySize\":%u,\"valueSize\":%u,\"maxEntries\":%u,\"flags\":%u",
		info.name, info.id, info.type, info.key_size, info.value_size, info.max_entries,
		info.map_flags);
	describe_layout(&j, "key", btf, info.btf_key_type_id);
	describe_layout(&j, "value", btf, info.btf_value_type_id);
	jprintf(&j, "}");
	btf__free(btf);
	return finish(&j, info.name, needed);
}

/* Makes the object use an existing map (shared, or reused from its pin) instead of creating one. */
int sl_obj_reuse_map(struct bpf_object *obj, const char *name, int fd)
{
	struct bpf_map *map = bpf_object__find_map_by_name(obj, name);
	int err;

	if (!map)
		return sl_fail(ENOENT, "map %s not in object %s", name, bpf_object__name(obj));
	err = bpf_map__reuse_fd(map, fd);
	return err ? sl_fail(err, "map %s: reuse fd %d", name, fd) : 0;
}

/* The cookie of socket fd of process pid (a duplicate through pidfd_getfd, closed at once):
 * sockhash entries are read back as cookies, and a socket is found again by its cookie.
 * Needs PTRACE_MODE_ATTACH on the owner (CAP_SYS_PTRACE).
 */
int sl_socket_cookie_of(int pid, int fd, uint64_t *cookie)
{
	socklen_t len = sizeof(*cookie);
	int pidfd, sfd, err;

	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0)
		return sl_fail(errno, "pidfd_open %d", pid);
	sfd = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
	err = errno;
	close(pidfd);
	if (sfd < 0)
		return sl_fail(err, "pidfd_getfd %d/%d (needs CAP_SYS_PTRACE)", pid, fd);
	err = getsockopt(sfd, SOL_SOCKET, SO_COOKIE, cookie, &len) ? errno : 0;
	close(sfd);
	return err ? sl_fail(err, "SO_COOKIE of socket %d/%d", pid, fd) : 0;
}
