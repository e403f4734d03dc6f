/* What the shim's source files share and nothing else includes: the error recorder. */
#ifndef SLUICE_SHIM_INTERNAL_H
#define SLUICE_SHIM_INTERNAL_H

int sl_fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

struct bpf_link_info;
/* The bpf_link_info of a pinned link; negative errno with the message recorded. */
int sl_pinned_link_info(const char *link_pin, struct bpf_link_info *info);

#endif /* SLUICE_SHIM_INTERNAL_H */
