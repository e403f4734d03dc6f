/* libsluice: the C shim the TypeScript loader calls through koffi. Multi-step libbpf work
 * (open/configure/load/attach-or-replace) and the syscalls Node lacks (setns, netns cookies).
 * Every int-returning function returns >= 0 on success or a negative errno; the message of the
 * last failure on the calling thread is in sl_last_error().
 */
#ifndef SLUICE_SHIM_H
#define SLUICE_SHIM_H

#include <stddef.h>
#include <stdint.h>

struct bpf_object;

const char *sl_last_error(void);

struct bpf_object *sl_obj_open(const char *path);
int sl_obj_set_rodata(struct bpf_object *obj, const char *var, const void *data, size_t len);
int sl_obj_rodata_vars(struct bpf_object *obj, char *buf, size_t len);
int sl_obj_set_map(struct bpf_object *obj, const char *map, uint32_t max_entries,
		   const char *pin_path);
int sl_obj_pin_maps(struct bpf_object *obj, const char *dir);
int sl_obj_load(struct bpf_object *obj);
int sl_obj_pin_prog(struct bpf_object *obj, const char *prog, const char *path);
int sl_obj_prog_fd(struct bpf_object *obj, const char *prog);
int sl_prog_test_run(int prog_fd, const void *data, uint32_t data_len, void *ctx, uint32_t ctx_len,
		     uint32_t *retval);
int sl_obj_map_fd(struct bpf_object *obj, const char *map);
void sl_obj_close(struct bpf_object *obj);

int sl_cgroup_link(struct bpf_object *obj, const char *prog, const char *cgroup_path,
		   const char *link_pin);
int sl_netns_link(int prog_fd, const char *netns_path, const char *link_pin);
int sl_link_update_prog(const char *link_pin, int prog_fd);
int sl_link_cgroup_id(const char *link_pin, uint64_t *cgroup_id, uint32_t *prog_id);
int sl_link_prog_id(const char *link_pin, uint32_t *prog_id);

/* Map migration (src/bpf/migrate.ts): specs as JSON, shared maps, sockets found by cookie. The
 * describers write the room their text needs into *needed, also when they fail with -ENOSPC. */
int sl_obj_maps_json(struct bpf_object *obj, char *buf, size_t len, size_t *needed);
int sl_map_spec_json(int map_fd, char *buf, size_t len, size_t *needed);
int sl_obj_reuse_map(struct bpf_object *obj, const char *map, int fd);
int sl_socket_cookie_of(int pid, int fd, uint64_t *cookie);

/* Routing of a captured pod's source-preserving inbound (see sl_inpod_setup). */
struct sl_inpod_cfg {
	uint32_t mark; /* the inbound mark the tcx program gives the proxy's looped-back packets */
	uint32_t mask;
	uint32_t table; /* the routing table holding "local default dev lo" */
	uint32_t pref;	/* the rule's priority */
	int32_t ipv6;	/* also for IPv6 */
};

int sl_inpod_setup(const char *netns_path, int prog_fd, const char *link_pin,
		   const struct sl_inpod_cfg *cfg, int add);
int sl_sockhash_add_from_pid(int map_fd, const void *key, int pid, int fd);
int sl_netns_cookie_self(uint64_t *cookie);
int sl_netns_cookie_of(const char *netns_path, uint64_t *cookie);
int sl_cgroup_id(const char *cgroup_path, uint64_t *id);

/* Socket iterators (socket destroy; whether the kernel can, is sl_probe_feature("sock_destroy")).
 * sl_iter_link: a BPF_TRACE_ITER link for a loaded iterator program (the caller closes it).
 * sl_iter_run: creates an iterator from the link on a thread that entered the network namespace
 * at netns_path (NULL or "": the caller's own) and reads it to the end; the first out_len bytes of
 * its output land in out. Returns the number of bytes it produced.
 */
int sl_iter_link(int prog_fd);
int64_t sl_iter_run(int link_fd, const char *netns_path, void *out, size_t out_len);

/* A reader of a BPF ring buffer (native/ringbuf.c), over libbpf's ring_buffer. sl_ringbuf_open:
 * on a BPF_MAP_TYPE_RINGBUF map fd (the reader keeps its own mapping; the caller may close the
 * fd). sl_ringbuf_epoll_fd: readable while records wait. sl_ringbuf_consume: copies waiting
 * records into out back to back, each as a uint32_t length (host order) then its bytes, and
 * returns the bytes written; stops early when out is full and sets *more (the record that did not
 * fit comes first next time). sl_ringbuf_free: releases the reader and its epoll fd.
 */
struct sl_ringbuf;
struct sl_ringbuf *sl_ringbuf_open(int map_fd);
int sl_ringbuf_epoll_fd(struct sl_ringbuf *r);
int sl_ringbuf_consume(struct sl_ringbuf *r, void *out, size_t out_len, int *more);
void sl_ringbuf_free(struct sl_ringbuf *r);

#endif /* SLUICE_SHIM_H */
