/* What the shim's source files share and nothing else includes: the error recorder. */
#ifndef SLUICE_SHIM_INTERNAL_H
#define SLUICE_SHIM_INTERNAL_H

int sl_fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif /* SLUICE_SHIM_INTERNAL_H */
