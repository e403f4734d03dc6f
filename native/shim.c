/* libsluice: see shim.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "fail.h"
#include "shim.h"
#include "internal.h"

#define fail sl_fail

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

static __thread char last_error[8192];

/* libbpf prints verifier logs and warnings through this hook; keep the tail for error messages. */
static __thread char libbpf_log[65536];
static __thread size_t libbpf_log_len;

const char *sl_last_error(void)
{
	return last_error;
}

int sl_fail_v(int err, const char *fmt, va_list ap)
{
	size_t n = (size_t)vsnprintf(last_error, sizeof(last_error), fmt, ap);
	char cause[128];

	/* libbpf's own codes (4000 and up: "Invalid ELF format" ...) as well as errnos */
	libbpf_strerror(err > 0 ? err : -err, cause, sizeof(cause));
	if (n < sizeof(last_error))
		snprintf(last_error + n, sizeof(last_error) - n, ": %s", cause);
	return err > 0 ? -err : err;
}

/* Records the message of a failure (with strerror of err appended) for sl_last_error(); returns
 * -errno. Shared with the shim's other files through internal.h.
 */
int sl_fail(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err = sl_fail_v(err, fmt, ap);
	va_end(ap);
	return err;
}

#define fail sl_fail

static int log_to_buffer(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	size_t room = sizeof(libbpf_log) - libbpf_log_len;
	int n;

	if (level == LIBBPF_DEBUG || room <= 1)
		return 0;
	n = vsnprintf(libbpf_log + libbpf_log_len, room, fmt, ap);
	if (n > 0)
		libbpf_log_len += (size_t)n < room ? (size_t)n : room - 1;
	return 0;
}

struct bpf_object *sl_obj_open(const char *path)
{
	struct bpf_object *obj;

	libbpf_set_print(log_to_buffer);
	obj = bpf_object__open_file(path, NULL);
	if (!obj) {
		fail(errno, "open bpf object %s", path);
		return NULL;
	}
	return obj;
}

/* The object's .rodata map and its DATASEC in BTF; NULL map when the object has none. */
static const struct btf_type *rodata_of(struct bpf_object *obj, struct bpf_map **map, struct btf **btf)
{
	struct bpf_map *m;
	int id;

	*map = NULL;
	*btf = bpf_object__btf(obj);
	bpf_object__for_each_map(m, obj)
	{
		const char *name = bpf_map__name(m);
		size_t n = strlen(name);

		if (n >= 7 && strcmp(name + n - 7, ".rodata") == 0)
			*map = m;
	}
	if (!*map || !*btf)
		return NULL;
	id = btf__find_by_name_kind(*btf, ".rodata", BTF_KIND_DATASEC);
	return id < 0 ? NULL : btf__type_by_id(*btf, id);
}

/* Lists the `const volatile` globals of an opened object's .rodata into buf, one "name size" line
 * each. Returns the bytes written (0: no .rodata), -ENOSPC when buf is too small.
 */
int sl_obj_rodata_vars(struct bpf_object *obj, char *buf, size_t len)
{
	const struct btf_var_secinfo *vs;
	const struct btf_type *sec;
	struct bpf_map *map;
	struct btf *btf;
	size_t used = 0;
	int i, n;

	if (len)
		buf[0] = 0;
	sec = rodata_of(obj, &map, &btf);
	if (!sec)
		return 0;
	vs = btf_var_secinfos(sec);
	for (i = 0; i < btf_vlen(sec); i++, vs++) {
		const struct btf_type *t = btf__type_by_id(btf, vs->type);

		n = snprintf(buf + used, len - used, "%s %u\n",
			     btf__name_by_offset(btf, t->name_off), vs->size);
		if (n < 0 || (size_t)n >= len - used)
			return fail(ENOSPC, "list the .rodata of %s: more than %zu bytes",
				    bpf_object__name(obj), len);
		used += (size_t)n;
	}
	return (int)used;
}

/* Writes a `const volatile` global of .rodata before load, found by name through BTF. */
int sl_obj_set_rodata(struct bpf_object *obj, const char *var, const void *data, size_t len)
{
	const struct btf_var_secinfo *vs;
	const struct btf_type *sec;
	struct bpf_map *map;
	struct btf *btf;
	size_t size;
	char *init, *buf;
	int i, err;

	sec = rodata_of(obj, &map, &btf);
	if (!sec)
		return fail(ENOENT, "set %s: object %s has no .rodata with BTF", var,
			    bpf_object__name(obj));
	vs = btf_var_secinfos(sec);
	for (i = 0; i < btf_vlen(sec); i++, vs++) {
		const struct btf_type *t = btf__type_by_id(btf, vs->type);

		if (strcmp(btf__name_by_offset(btf, t->name_off), var) != 0)
			continue;
		if (vs->size != len)
			return fail(EINVAL, "set %s: size %zu, value has %zu bytes", var,
				    (size_t)vs->size, len);
		init = (char *)bpf_map__initial_value(map, &size);
		if (!init || vs->offset + len > size)
			return fail(EINVAL, "set %s: .rodata has no room", var);
		/* libbpf 1.1 returns the pre-load image as const: write through its setter */
		buf = malloc(size);
		if (!buf)
			return fail(ENOMEM, "set %s", var);
		memcpy(buf, init, size);
		memcpy(buf + vs->offset, data, len);
		err = bpf_map__set_initial_value(map, buf, size);
		free(buf);
		return err ? fail(err, "set %s", var) : 0;
	}
	return fail(ENOENT, "set %s: no such variable in the .rodata of %s", var,
		    bpf_object__name(obj));
}

int sl_obj_set_map(struct bpf_object *obj, const char *name, uint32_t max_entries,
		   const char *pin_path)
{
	struct bpf_map *map = bpf_object__find_map_by_name(obj, name);
	int err;

	if (!map)
		return fail(ENOENT, "map %s not in object %s", name, bpf_object__name(obj));
	if (max_entries) {
		err = bpf_map__set_max_entries(map, max_entries);
		if (err)
			return fail(err, "map %s of %s: set max_entries %u", name,
				    bpf_object__name(obj), max_entries);
	}
	if (pin_path) {
		/* libbpf reuses a compatible map already pinned there, and fails the load when
		 * the pinned one differs (type, key/value size, max_entries, flags).
		 */
		err = bpf_map__set_pin_path(map, pin_path);
		if (err)
			return fail(err, "map %s of %s: set pin path %s", name,
				    bpf_object__name(obj), pin_path);
	}
	return 0;
}

/* Pins every map of the object (not .rodata/.bss/.data) at dir/<map name>: objects that declare
 * the same map share it, and a restart reuses the pinned contents.
 */
int sl_obj_pin_maps(struct bpf_object *obj, const char *dir)
{
	struct bpf_map *m;
	char path[4096];
	int err;

	bpf_object__for_each_map(m, obj)
	{
		const char *name = bpf_map__name(m);

		if (strchr(name, '.'))
			continue; /* internal maps: per load, never shared */
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
			return fail(ENAMETOOLONG, "pin path for %s", name);
		err = bpf_map__set_pin_path(m, path);
		if (err)
			return fail(err, "map %s: set pin path %s", name, path);
	}
	return 0;
}

/* Pins a loaded program (replacing an older pin) so later attachments can open it. */
int sl_obj_pin_prog(struct bpf_object *obj, const char *name, const char *path)
{
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, name);
	int err;

	if (!prog)
		return fail(ENOENT, "program %s not in object %s", name, bpf_object__name(obj));
	unlink(path);
	err = bpf_obj_pin(bpf_program__fd(prog), path);
	return err ? fail(err, "pin program %s at %s", name, path) : 0;
}

int sl_obj_load(struct bpf_object *obj)
{
	int err;

	libbpf_log_len = 0;
	libbpf_log[0] = 0;
	err = bpf_object__load(obj);
	if (err) {
		/* keep the end of the log: the verifier's reason is at the bottom */
		const char *tail = libbpf_log;

		if (libbpf_log_len > 6000)
			tail = libbpf_log + libbpf_log_len - 6000;
		fail(err, "load bpf object %s\n%s", bpf_object__name(obj), tail);
		return err < 0 ? err : -err;
	}
	return 0;
}

/* Runs a loaded program once through BPF_PROG_TEST_RUN: data is the packet (tc, xdp), ctx the
 * context struct for program types that take one (written back when the kernel returns it).
 */
int sl_prog_test_run(int prog_fd, const void *data, uint32_t data_len, void *ctx, uint32_t ctx_len,
		     uint32_t *retval)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = data, .data_size_in = data_len, .ctx_in = ctx,
		    .ctx_size_in = ctx_len, .ctx_out = ctx, .ctx_size_out = ctx_len, .repeat = 1);
	int err = bpf_prog_test_run_opts(prog_fd, &opts);

	if (err)
		return fail(err, "test run of program fd %d", prog_fd);
	*retval = opts.retval;
	return 0;
}

int sl_obj_prog_fd(struct bpf_object *obj, const char *name)
{
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, name);

	if (!prog)
		return fail(ENOENT, "program %s not in object %s", name, bpf_object__name(obj));
	return bpf_program__fd(prog);
}

int sl_obj_map_fd(struct bpf_object *obj, const char *name)
{
	struct bpf_map *map = bpf_object__find_map_by_name(obj, name);

	if (!map)
		return fail(ENOENT, "map %s not in object %s", name, bpf_object__name(obj));
	return bpf_map__fd(map);
}

void sl_obj_close(struct bpf_object *obj)
{
	bpf_object__close(obj);
}

int sl_cgroup_id(const char *cgroup_path, uint64_t *id)
{
	struct stat st;

	/* On cgroup2 the kernel's cgroup id is the directory's inode number. */
	if (stat(cgroup_path, &st))
		return fail(errno, "stat cgroup %s", cgroup_path);
	*id = st.st_ino;
	return 0;
}

/* The bpf_link_info of a pinned link (shared with introspect.c through internal.h). */
int sl_pinned_link_info(const char *link_pin, struct bpf_link_info *info)
{
	__u32 len = sizeof(*info);
	int fd, err;

	fd = bpf_obj_get(link_pin);
	if (fd < 0)
		return fail(fd, "open link pin %s", link_pin);
	memset(info, 0, sizeof(*info));
	err = bpf_obj_get_info_by_fd(fd, info, &len);
	close(fd);
	return err ? fail(err, "link info %s", link_pin) : 0;
}

int sl_link_cgroup_id(const char *link_pin, uint64_t *cgroup_id, uint32_t *prog_id)
{
	struct bpf_link_info info;
	int err = sl_pinned_link_info(link_pin, &info);

	if (err)
		return err;
	*cgroup_id = info.type == BPF_LINK_TYPE_CGROUP ? info.cgroup.cgroup_id : 0;
	*prog_id = info.prog_id;
	return 0;
}

int sl_link_prog_id(const char *link_pin, uint32_t *prog_id)
{
	struct bpf_link_info info;
	int err = sl_pinned_link_info(link_pin, &info);

	if (err)
		return err;
	*prog_id = info.prog_id;
	return 0;
}

/* Attaches a program to a cgroup through a pinned bpf_link. When the pin already holds a link to
 * the same cgroup (an agent restart), the program is swapped atomically with BPF_LINK_UPDATE, so
 * no socket call ever runs without a program. A pin for another cgroup is replaced.
 * Returns 0 when a link was created, 1 when an existing one was updated.
 */
int sl_cgroup_link(struct bpf_object *obj, const char *name, const char *cgroup_path,
		   const char *link_pin)
{
	struct bpf_program *prog = bpf_object__find_program_by_name(obj, name);
	uint64_t want_cg, have_cg;
	uint32_t prog_id;
	int prog_fd, cg_fd, link_fd, err;

	if (!prog)
		return fail(ENOENT, "program %s not in object %s", name, bpf_object__name(obj));
	prog_fd = bpf_program__fd(prog);
	if (prog_fd < 0)
		return fail(EBADF, "program %s not loaded", name);
	err = sl_cgroup_id(cgroup_path, &want_cg);
	if (err)
		return err;

	if (sl_link_cgroup_id(link_pin, &have_cg, &prog_id) == 0 && have_cg == want_cg) {
		link_fd = bpf_obj_get(link_pin);
		if (link_fd < 0)
			return fail(link_fd, "open link pin %s", link_pin);
		err = bpf_link_update(link_fd, prog_fd, NULL);
		close(link_fd);
		if (err)
			return fail(err, "update link %s to program %s", link_pin, name);
		return 1;
	}

	cg_fd = open(cgroup_path, O_RDONLY | O_DIRECTORY);
	if (cg_fd < 0)
		return fail(errno, "open cgroup %s", cgroup_path);
	link_fd = bpf_link_create(prog_fd, cg_fd, bpf_program__expected_attach_type(prog), NULL);
	close(cg_fd);
	if (link_fd < 0)
		return fail(link_fd, "attach %s to cgroup %s", name, cgroup_path);
	/* A stale pin (other cgroup, or a detached link) is replaced by the new one. */
	unlink(link_pin);
	err = bpf_obj_pin(link_fd, link_pin);
	close(link_fd);
	if (err)
		return fail(err, "pin link %s", link_pin);
	return 0;
}

/* Attaches an sk_lookup program to a network namespace through a pinned link; a pin already
 * linking that namespace gets the program swapped in. Returns 0 created, 1 updated.
 */
int sl_netns_link(int prog_fd, const char *netns_path, const char *link_pin)
{
	struct bpf_link_info info;
	__u32 len = sizeof(info);
	struct stat st;
	int ns_fd, link_fd, err;

	if (stat(netns_path, &st))
		return fail(errno, "netns %s", netns_path);
	link_fd = bpf_obj_get(link_pin);
	if (link_fd >= 0) {
		memset(&info, 0, sizeof(info));
		err = bpf_obj_get_info_by_fd(link_fd, &info, &len);
		if (!err && info.type == BPF_LINK_TYPE_NETNS && info.netns.netns_ino == st.st_ino) {
			err = bpf_link_update(link_fd, prog_fd, NULL);
			close(link_fd);
			return err ? fail(err, "update link %s", link_pin) : 1;
		}
		close(link_fd);
	}
	ns_fd = open(netns_path, O_RDONLY | O_CLOEXEC);
	if (ns_fd < 0)
		return fail(errno, "open netns %s", netns_path);
	link_fd = bpf_link_create(prog_fd, ns_fd, BPF_SK_LOOKUP, NULL);
	close(ns_fd);
	if (link_fd < 0)
		return fail(link_fd, "attach sk_lookup to netns %s", netns_path);
	unlink(link_pin);
	err = bpf_obj_pin(link_fd, link_pin);
	close(link_fd);
	return err ? fail(err, "pin link %s", link_pin) : 0;
}

/* Swaps the program of a pinned link (agent restart: new program, same attachments). */
int sl_link_update_prog(const char *link_pin, int prog_fd)
{
	int link_fd = bpf_obj_get(link_pin), err;

	if (link_fd < 0)
		return fail(link_fd, "open link pin %s", link_pin);
	err = bpf_link_update(link_fd, prog_fd, NULL);
	close(link_fd);
	return err ? fail(err, "update link %s", link_pin) : 0;
}

/* Puts another process's socket into a sockhash: a listener opened before sluice's sockops program
 * could see it (a pod that predates the agent). pidfd_getfd needs PTRACE_MODE_ATTACH on the
 * owner (CAP_SYS_PTRACE); the map holds its own reference, our duplicate is closed at once.
 */
int sl_sockhash_add_from_pid(int map_fd, const void *key, int pid, int fd)
{
	__u64 value;
	int pidfd, sfd, err;

	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0)
		return fail(errno, "pidfd_open %d", pid);
	sfd = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
	err = errno;
	close(pidfd);
	if (sfd < 0)
		return fail(err, "pidfd_getfd %d/%d (needs CAP_SYS_PTRACE)", pid, fd);
	value = (__u64)sfd;
	err = bpf_map_update_elem(map_fd, key, &value, BPF_ANY);
	close(sfd);
	return err ? fail(err, "sockhash update with socket %d/%d", pid, fd) : 0;
}

static int socket_netns_cookie(uint64_t *cookie)
{
	socklen_t len = sizeof(*cookie);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int err = 0;

	if (fd < 0)
		return -errno;
	if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, cookie, &len))
		err = -errno;
	close(fd);
	return err;
}

int sl_netns_cookie_self(uint64_t *cookie)
{
	int err = socket_netns_cookie(cookie);

	return err ? fail(err, "SO_NETNS_COOKIE (needs Linux 5.14)") : 0;
}

struct netns_job {
	const char *path;
	uint64_t cookie;
	int err;
	char what[64];
};

/* Runs on its own thread: setns changes only the calling thread, and this one ends here. */
static void *netns_cookie_thread(void *arg)
{
	struct netns_job *job = arg;
	int fd = open(job->path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		job->err = -errno;
		snprintf(job->what, sizeof(job->what), "open");
		return NULL;
	}
	if (setns(fd, CLONE_NEWNET)) {
		job->err = -errno;
		snprintf(job->what, sizeof(job->what), "setns");
		close(fd);
		return NULL;
	}
	close(fd);
	job->err = socket_netns_cookie(&job->cookie);
	if (job->err)
		snprintf(job->what, sizeof(job->what), "SO_NETNS_COOKIE");
	return NULL;
}

int sl_netns_cookie_of(const char *netns_path, uint64_t *cookie)
{
	struct netns_job job = {.path = netns_path};
	pthread_t t;
	int err;

	err = pthread_create(&t, NULL, netns_cookie_thread, &job);
	if (err)
		return fail(err, "netns cookie of %s: thread", netns_path);
	pthread_join(t, NULL);
	if (job.err)
		return fail(job.err, "netns cookie of %s: %s", netns_path, job.what);
	*cookie = job.cookie;
	return 0;
}

/* ---- In-pod setup for source-preserving inbound (ambient ztunnel, sidecar TPROXY) ----
 * Inside a captured pod's network namespace: tcp_fwmark_accept (an accepted socket inherits the
 * SYN's mark), fwmark_reflect for IPv4 and IPv6 (the kernel's own answers without a socket, a
 * RST from a port nobody serves or an ICMP error, carry the mark of what they answer, so they
 * reach the proxy as Istio's CONNMARK restore sends them), "ip rule fwmark MARK/MASK pref PREF
 * lookup TABLE" and "ip route replace local default dev lo table TABLE" for IPv4 (and IPv6), and
 * a tcx ingress link on lo running the marking program. Done with rtnetlink from a thread that
 * entered the namespace: no process is spawned per pod. Also tcp_migrate_req: when one of the
 * proxy's SO_REUSEPORT listeners closes (the old ztunnel of an upgrade), the connections queued on
 * it, established or in their handshake, move to another listener of the group instead of being
 * reset (the kernel's default). The sysctls stay set on removal: without a mark rule the first
 * three change nothing, and migrating instead of resetting only spares connections.
 */
#include <linux/fib_rules.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#define SL_BPF_TCX_INGRESS  46 /* enum bpf_attach_type, kernel >= 6.6 (newer than these headers) */
#define SL_LOOPBACK_IFINDEX 1

struct nl_req {
	struct nlmsghdr nh;
	union {
		struct fib_rule_hdr frh;
		struct rtmsg rtm;
	};
	char attrs[128];
};

static void nl_put_u32(struct nl_req *r, unsigned short type, uint32_t v)
{
	struct rtattr *rta = (struct rtattr *)((char *)r + NLMSG_ALIGN(r->nh.nlmsg_len));

	rta->rta_type = type;
	rta->rta_len = RTA_LENGTH(sizeof(v));
	memcpy(RTA_DATA(rta), &v, sizeof(v));
	r->nh.nlmsg_len = NLMSG_ALIGN(r->nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);
}

/* Sends one request and returns the kernel's answer: 0 or a negative errno. */
static int nl_call(int fd, struct nl_req *r)
{
	char buf[1024];
	struct nlmsghdr *nh = (struct nlmsghdr *)buf;
	ssize_t n;

	r->nh.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	if (send(fd, r, r->nh.nlmsg_len, 0) < 0)
		return -errno;
	n = recv(fd, buf, sizeof(buf), 0);
	if (n < 0)
		return -errno;
	if (!NLMSG_OK(nh, (size_t)n) || nh->nlmsg_type != NLMSG_ERROR)
		return -EPROTO;
	return ((struct nlmsgerr *)NLMSG_DATA(nh))->error;
}

static int inpod_rule(int nl, int family, int add, const struct sl_inpod_cfg *cfg)
{
	struct nl_req r = {0};
	int err;

	r.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct fib_rule_hdr));
	r.nh.nlmsg_type = add ? RTM_NEWRULE : RTM_DELRULE;
	r.nh.nlmsg_flags = add ? NLM_F_CREATE | NLM_F_EXCL : 0;
	r.frh.family = (unsigned char)family;
	r.frh.action = FR_ACT_TO_TBL;
	r.frh.table = cfg->table < 256 ? (unsigned char)cfg->table : RT_TABLE_UNSPEC;
	nl_put_u32(&r, FRA_PRIORITY, cfg->pref);
	nl_put_u32(&r, FRA_FWMARK, cfg->mark);
	nl_put_u32(&r, FRA_FWMASK, cfg->mask);
	nl_put_u32(&r, FRA_TABLE, cfg->table);
	err = nl_call(nl, &r);
	if ((add && err == -EEXIST) || (!add && err == -ENOENT))
		return 0;
	return err;
}

static int inpod_route(int nl, int family, int add, const struct sl_inpod_cfg *cfg)
{
	struct nl_req r = {0};
	int err;

	r.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
	r.nh.nlmsg_type = add ? RTM_NEWROUTE : RTM_DELROUTE;
	r.nh.nlmsg_flags = add ? NLM_F_CREATE | NLM_F_REPLACE : 0;
	r.rtm.rtm_family = (unsigned char)family;
	r.rtm.rtm_table = cfg->table < 256 ? (unsigned char)cfg->table : RT_TABLE_UNSPEC;
	r.rtm.rtm_protocol = RTPROT_BOOT;
	r.rtm.rtm_scope = RT_SCOPE_HOST;
	r.rtm.rtm_type = RTN_LOCAL;
	nl_put_u32(&r, RTA_OIF, SL_LOOPBACK_IFINDEX);
	nl_put_u32(&r, RTA_TABLE, cfg->table);
	err = nl_call(nl, &r);
	if (!add && (err == -ESRCH || err == -ENOENT))
		return 0;
	return err;
}

/* The tcx ingress link on lo, pinned; a pin already there gets the program swapped in. */
static int inpod_tcx(int prog_fd, const char *link_pin)
{
	int link_fd = bpf_obj_get(link_pin), err;

	if (link_fd >= 0) {
		err = bpf_link_update(link_fd, prog_fd, NULL);
		close(link_fd);
		return err;
	}
	link_fd = bpf_link_create(prog_fd, SL_LOOPBACK_IFINDEX,
				  (enum bpf_attach_type)SL_BPF_TCX_INGRESS, NULL);
	if (link_fd < 0)
		return link_fd;
	err = bpf_obj_pin(link_fd, link_pin);
	close(link_fd);
	return err;
}

struct inpod_job {
	const char *netns_path;
	int prog_fd;
	const char *link_pin;
	int add;
	const struct sl_inpod_cfg *cfg;
	int err;
	char what[96];
};

static int inpod_step(struct inpod_job *job, int err, const char *what)
{
	if (err && !job->err) {
		job->err = err;
		snprintf(job->what, sizeof(job->what), "%s", what);
	}
	return err;
}

/* Writes "1" to a sysctl of the namespace the thread is in; a kernel without it (ENOENT) is an
 * error only when the sysctl is required. */
static int inpod_sysctl_on(struct inpod_job *job, const char *path, const char *what, int required)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), err = 0;

	if (fd < 0 && errno == ENOENT && !required)
		return 0;
	if (fd < 0 || write(fd, "1", 1) != 1)
		err = -errno;
	if (fd >= 0)
		close(fd);
	return inpod_step(job, err, what);
}

static void *inpod_thread(void *arg)
{
	struct inpod_job *job = arg;
	const struct sl_inpod_cfg *cfg = job->cfg;
	int ns = open(job->netns_path, O_RDONLY | O_CLOEXEC), nl;

	if (ns < 0) {
		inpod_step(job, -errno, "open");
		return NULL;
	}
	if (setns(ns, CLONE_NEWNET)) {
		inpod_step(job, -errno, "setns");
		close(ns);
		return NULL;
	}
	close(ns);
	if (job->add && (inpod_sysctl_on(job, "/proc/sys/net/ipv4/tcp_fwmark_accept",
					 "sysctl net.ipv4.tcp_fwmark_accept=1", 1) ||
			 inpod_sysctl_on(job, "/proc/sys/net/ipv4/fwmark_reflect",
					 "sysctl net.ipv4.fwmark_reflect=1", 1) ||
			 (cfg->ipv6 && inpod_sysctl_on(job, "/proc/sys/net/ipv6/fwmark_reflect",
						       "sysctl net.ipv6.fwmark_reflect=1", 1)) ||
			 /* Linux >= 5.14; older ones reset the queue as before */
			 inpod_sysctl_on(job, "/proc/sys/net/ipv4/tcp_migrate_req",
					 "sysctl net.ipv4.tcp_migrate_req=1", 0)))
		return NULL;
	nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (nl < 0) {
		inpod_step(job, -errno, "netlink socket");
		return NULL;
	}
	/* removal goes on past a failed step: as much as possible is undone */
	if (inpod_step(job, inpod_rule(nl, AF_INET, job->add, cfg), "ip rule (IPv4)") && job->add)
		goto out;
	if (inpod_step(job, inpod_route(nl, AF_INET, job->add, cfg),
		       "ip route local default table (IPv4)") &&
	    job->add)
		goto out;
	if (cfg->ipv6) {
		if (inpod_step(job, inpod_rule(nl, AF_INET6, job->add, cfg), "ip rule (IPv6)") &&
		    job->add)
			goto out;
		if (inpod_step(job, inpod_route(nl, AF_INET6, job->add, cfg),
			       "ip route local default table (IPv6)") &&
		    job->add)
			goto out;
	}
	if (job->add)
		inpod_step(job, inpod_tcx(job->prog_fd, job->link_pin), "tcx ingress link on lo");
	else if (unlink(job->link_pin) && errno != ENOENT)
		inpod_step(job, -errno, "unpin tcx link");
out:
	close(nl);
	return NULL;
}

int sl_inpod_setup(const char *netns_path, int prog_fd, const char *link_pin,
		   const struct sl_inpod_cfg *cfg, int add)
{
	struct inpod_job job = {.netns_path = netns_path,
				.prog_fd = prog_fd,
				.link_pin = link_pin,
				.add = add,
				.cfg = cfg};
	pthread_t t;
	int err;

	err = pthread_create(&t, NULL, inpod_thread, &job);
	if (err)
		return fail(err, "in-pod setup: thread");
	pthread_join(t, NULL);
	if (job.err)
		return fail(job.err, "in-pod %s: %s", add ? "setup" : "removal", job.what);
	return 0;
}

/* ---- Socket iterators ----
 * An iterator walks the sockets of the network namespace current on the thread that creates it
 * (bpf_iter_create), so a pod's sockets are reached from a thread that entered the pod's netns.
 */

int sl_iter_link(int prog_fd)
{
	int fd = bpf_link_create(prog_fd, 0, BPF_TRACE_ITER, NULL);

	return fd < 0 ? fail(fd, "create iterator link for program fd %d", prog_fd) : fd;
}

/* Bounds the read loop: each read returns at least one record or ends the iteration; this many
 * bytes of output would be millions of sockets.
 */
#define SL_ITER_MAX_BYTES (1LL << 30)

struct iter_job {
	int link_fd;
	const char *netns_path;
	char *out;
	size_t out_len;
	int64_t total;
	int err;
	char what[64];
};

static void iter_job_fail(struct iter_job *job, int err, const char *what)
{
	job->err = err;
	snprintf(job->what, sizeof(job->what), "%s", what);
}

static void *iter_thread(void *arg)
{
	struct iter_job *job = arg;
	char buf[4096];
	int ns, it;
	ssize_t n;

	if (job->netns_path && job->netns_path[0]) {
		ns = open(job->netns_path, O_RDONLY | O_CLOEXEC);
		if (ns < 0) {
			iter_job_fail(job, -errno, "open");
			return NULL;
		}
		if (setns(ns, CLONE_NEWNET)) {
			iter_job_fail(job, -errno, "setns");
			close(ns);
			return NULL;
		}
		close(ns);
	}
	it = bpf_iter_create(job->link_fd);
	if (it < 0) {
		iter_job_fail(job, it, "bpf_iter_create");
		return NULL;
	}
	while (job->total < SL_ITER_MAX_BYTES) {
		n = read(it, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			iter_job_fail(job, -errno, "read");
			break;
		}
		if (n == 0)
			break;
		if ((size_t)job->total < job->out_len) {
			size_t room = job->out_len - (size_t)job->total;

			memcpy(job->out + job->total, buf, (size_t)n < room ? (size_t)n : room);
		}
		job->total += n;
	}
	close(it);
	return NULL;
}

int64_t sl_iter_run(int link_fd, const char *netns_path, void *out, size_t out_len)
{
	struct iter_job job = {.link_fd = link_fd,
			       .netns_path = netns_path,
			       .out = out,
			       .out_len = out ? out_len : 0};
	const char *where = netns_path && netns_path[0] ? netns_path : "the agent's own netns";
	pthread_t t;
	int err;

	err = pthread_create(&t, NULL, iter_thread, &job);
	if (err)
		return fail(err, "socket iterator in %s: thread", where);
	pthread_join(t, NULL);
	if (job.err)
		return fail(job.err, "socket iterator in %s: %s", where, job.what);
	return job.total;
}
