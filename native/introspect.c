/* libsluice: see introspect.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>

#include "introspect.h"
#include "internal.h"

/* Newer than the headers libbpf 1.1 builds against here (kernel 6.6). */
#define SL_BPF_TCX_INGRESS   46
#define SL_BPF_LINK_TYPE_TCX 11
/* An ifindex no interface has: the tcx probe must never attach anything. */
#define SL_NO_SUCH_IFINDEX   0x7fffffff
#define SL_MAX_PROG_MAPS     64

#define fail sl_fail

int sl_link_describe(const char *link_pin, struct sl_link_desc *out)
{
	struct bpf_link_info info;
	int err = sl_pinned_link_info(link_pin, &info);

	if (err)
		return err;
	out->type = info.type;
	out->prog_id = info.prog_id;
	switch (info.type) {
	case BPF_LINK_TYPE_CGROUP:
		out->target = info.cgroup.cgroup_id;
		break;
	case BPF_LINK_TYPE_NETNS:
		out->target = info.netns.netns_ino;
		break;
	case SL_BPF_LINK_TYPE_TCX:
		/* struct bpf_link_info's tcx member {ifindex, attach_type} sits where netns's
		 * {netns_ino, attach_type} does; these headers predate it.
		 */
		out->target = info.netns.netns_ino;
		break;
	default:
		out->target = 0;
	}
	return 0;
}

/* Appends one "name offset size" line; false when vars is full. */
static int append_var(char *vars, size_t cap, size_t *used, const char *name, __u32 offset, __u32 size)
{
	int n = snprintf(vars + *used, cap - *used, "%s %u %u\n", name, offset, size);

	if (n < 0 || (size_t)n >= cap - *used)
		return 0;
	*used += (size_t)n;
	return 1;
}

/* 1 when map_id is a .rodata (a DATASEC of that name in its BTF) and was read; 0 when it is
 * another map.
 */
static int read_rodata_map(__u32 map_id, void *value, __u32 value_cap, __u32 *value_len, char *vars,
			   size_t vars_cap)
{
	struct bpf_map_info info;
	__u32 len = sizeof(info), key = 0;
	const struct btf_var_secinfo *vs;
	const struct btf_type *sec;
	struct btf *btf;
	size_t used = 0;
	int fd, err, i, ret = 0;

	fd = bpf_map_get_fd_by_id(map_id);
	if (fd < 0)
		return fail(fd, "open map id %u", map_id);
	memset(&info, 0, sizeof(info));
	err = bpf_obj_get_info_by_fd(fd, &info, &len);
	if (err) {
		ret = fail(err, "map info of map id %u", map_id);
		goto out_fd;
	}
	if (!info.btf_id || !info.btf_value_type_id)
		goto out_fd;
	btf = btf__load_from_kernel_by_id(info.btf_id);
	if (!btf) {
		ret = fail(errno, "BTF id %u of map %s", info.btf_id, info.name);
		goto out_fd;
	}
	sec = btf__type_by_id(btf, info.btf_value_type_id);
	if (!sec || !btf_is_datasec(sec) ||
	    strcmp(btf__name_by_offset(btf, sec->name_off), ".rodata") != 0)
		goto out_btf;
	if (info.value_size > value_cap) {
		ret = fail(E2BIG, "map %s: .rodata of %u bytes, room for %u", info.name,
			   info.value_size, value_cap);
		goto out_btf;
	}
	err = bpf_map_lookup_elem(fd, &key, value);
	if (err) {
		ret = fail(err, "read .rodata map %s", info.name);
		goto out_btf;
	}
	*value_len = info.value_size;
	vs = btf_var_secinfos(sec);
	for (i = 0; i < btf_vlen(sec); i++, vs++) {
		const struct btf_type *var = btf__type_by_id(btf, vs->type);

		if (!append_var(vars, vars_cap, &used, btf__name_by_offset(btf, var->name_off),
				vs->offset, vs->size)) {
			ret = fail(E2BIG, "map %s: variable list longer than %zu bytes", info.name,
				   vars_cap);
			goto out_btf;
		}
	}
	ret = 1;
out_btf:
	btf__free(btf);
out_fd:
	close(fd);
	return ret;
}

int sl_prog_rodata(uint32_t prog_id, char *name, size_t name_cap, void *value, uint32_t value_cap,
		   uint32_t *value_len, char *vars, size_t vars_cap)
{
	struct bpf_prog_info info;
	__u32 len = sizeof(info), map_ids[SL_MAX_PROG_MAPS], n, i;
	int fd, err, ret = 0;

	*value_len = 0;
	if (vars_cap)
		vars[0] = 0;
	fd = bpf_prog_get_fd_by_id(prog_id);
	if (fd < 0)
		return fail(fd, "open program id %u", prog_id);
	memset(&info, 0, sizeof(info));
	err = bpf_obj_get_info_by_fd(fd, &info, &len);
	if (err) {
		close(fd);
		return fail(err, "program info of id %u", prog_id);
	}
	snprintf(name, name_cap, "%s", info.name);
	n = info.nr_map_ids < SL_MAX_PROG_MAPS ? info.nr_map_ids : SL_MAX_PROG_MAPS;
	memset(&info, 0, sizeof(info));
	info.nr_map_ids = n;
	info.map_ids = (__u64)(unsigned long)map_ids;
	len = sizeof(info);
	err = bpf_obj_get_info_by_fd(fd, &info, &len);
	close(fd);
	if (err)
		return fail(err, "map ids of program id %u", prog_id);
	for (i = 0; i < n && ret == 0; i++)
		ret = read_rodata_map(map_ids[i], value, value_cap, value_len, vars, vars_cap);
	return ret;
}

/* Loads a tiny program; the verifier's log goes to log (for telling "unknown helper" apart). */
static int load_probe(enum bpf_prog_type type, enum bpf_attach_type expected,
		      const struct bpf_insn *insns, size_t n, char *log, size_t log_cap)
{
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = expected, .log_buf = log,
		    .log_size = (__u32)log_cap, .log_level = 1);

	log[0] = 0;
	return bpf_prog_load(type, NULL, "GPL", insns, n, &opts);
}

static int probe_set_retval(void)
{
	/* r1 = 0; call bpf_set_retval; r0 = 1; exit */
	const struct bpf_insn insns[] = {
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_1, .imm = 0},
		{.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_set_retval},
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 1},
		{.code = BPF_JMP | BPF_EXIT},
	};
	char log[4096];
	int fd = load_probe(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT, insns, 4, log,
			    sizeof(log));

	if (fd >= 0) {
		close(fd);
		return 1;
	}
	/* an unknown helper id ("invalid func"), or one this program type may not call ("unknown
	 * func" up to 6.x, "cannot use helper" since)
	 */
	if (strstr(log, "unknown func") || strstr(log, "invalid func") ||
	    strstr(log, "cannot use helper"))
		return 0;
	return fail(fd, "probe bpf_set_retval in cgroup/connect4: %.200s", log);
}

static int probe_tcx(void)
{
	/* r0 = 0 (TCX_PASS); exit */
	const struct bpf_insn insns[] = {
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0},
		{.code = BPF_JMP | BPF_EXIT},
	};
	char log[1024];
	int prog, link;

	prog = load_probe(BPF_PROG_TYPE_SCHED_CLS, 0, insns, 2, log, sizeof(log));
	if (prog < 0)
		return fail(prog, "probe tcx: load a tc program: %.200s", log);
	link = bpf_link_create(prog, SL_NO_SUCH_IFINDEX, (enum bpf_attach_type)SL_BPF_TCX_INGRESS,
			       NULL);
	close(prog);
	if (link >= 0) {
		close(link); /* an interface with that index after all: closing detaches again */
		return 1;
	}
	if (link == -ENODEV)
		return 1; /* the kernel knows tcx and looked for the device */
	if (link == -EINVAL)
		return 0;
	return fail(link, "probe tcx: link create");
}

static int probe_vmlinux_func(const char *name)
{
	struct btf *btf = btf__load_vmlinux_btf();
	int id;

	if (!btf)
		return fail(errno, "load the kernel's BTF");
	id = btf__find_by_name_kind(btf, name, BTF_KIND_FUNC);
	btf__free(btf);
	return id >= 0;
}

int sl_probe_feature(const char *feature)
{
	if (strcmp(feature, "btf") == 0) {
		struct btf *btf = btf__load_vmlinux_btf();

		btf__free(btf);
		return btf != NULL;
	}
	if (strcmp(feature, "sk_lookup") == 0) {
		int ret = libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SK_LOOKUP, NULL);

		return ret < 0 ? fail(ret, "probe sk_lookup programs") : ret;
	}
	if (strcmp(feature, "set_retval") == 0)
		return probe_set_retval();
	if (strcmp(feature, "tcx") == 0)
		return probe_tcx();
	if (strcmp(feature, "sock_destroy") == 0)
		return probe_vmlinux_func("bpf_sock_destroy");
	return fail(EINVAL, "unknown feature \"%s\"", feature);
}
