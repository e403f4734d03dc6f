/* debug.h: diagnostics on stderr, on when SLUICE_CNI_DEBUG=1 (stdout belongs to the runtime). */
#ifndef SLUICE_CNI_DEBUG_H
#define SLUICE_CNI_DEBUG_H

extern int cni_debug_enabled;

__attribute__((format(printf, 1, 2))) void cni_debug(const char *fmt, ...);

#endif
