/* libsluice, reading back what the kernel holds (for `sluice doctor`): what a pinned link is
 * attached to, the settings (.rodata) a loaded program was loaded with, and probes of the kernel
 * features sluice needs. Same conventions as shim.h: int-returning functions return >= 0 on
 * success or a negative errno, with the failure's message in sl_last_error(). Nothing here
 * attaches a program anywhere.
 */
#ifndef SLUICE_INTROSPECT_H
#define SLUICE_INTROSPECT_H

#include <stddef.h>
#include <stdint.h>

/* What a pinned bpf_link holds. `target` depends on the link type: the cgroup id for cgroup links
 * (0 once detached), the network namespace's inode for netns links (sk_lookup; 0 once detached),
 * the ifindex for tcx links (0 once detached).
 */
struct sl_link_desc {
	uint32_t type; /* enum bpf_link_type: 3 cgroup, 5 netns, 11 tcx */
	uint32_t prog_id;
	uint64_t target;
};

int sl_link_describe(const char *link_pin, struct sl_link_desc *out);

/* The loaded program prog_id: its name (up to 15 characters and a NUL) and its .rodata, i.e. the
 * `const volatile` settings it was loaded with. The value of the .rodata map goes to value (up to
 * value_cap bytes, its size to *value_len); its variables, from the BTF the program was loaded
 * with, go to vars as text, one "name offset size\n" line each (NUL-terminated).
 * Returns 1 when the program has a .rodata, 0 when it has none (value_len and vars then empty).
 */
int sl_prog_rodata(uint32_t prog_id, char *name, size_t name_cap, void *value, uint32_t value_cap,
		   uint32_t *value_len, char *vars, size_t vars_cap);

/* Probes one kernel feature by asking the kernel, not by its version:
 *   "btf"          the kernel's own BTF (/sys/kernel/btf/vmlinux) loads
 *   "sk_lookup"    a BPF_PROG_TYPE_SK_LOOKUP program loads (5.9)
 *   "set_retval"   bpf_set_retval is allowed in cgroup sock_addr programs (5.18)
 *   "tcx"          the kernel knows tcx links (6.6): a link to an ifindex that does not exist
 *                  fails with ENODEV instead of EINVAL (so nothing is ever attached)
 *   "sock_destroy" the bpf_sock_destroy kfunc is in the kernel's BTF (6.5)
 * Returns 1 when present, 0 when absent, a negative errno when the probe itself failed.
 */
int sl_probe_feature(const char *feature);

#endif /* SLUICE_INTROSPECT_H */
