/* debug.c: the stderr diagnostics of debug.h. */
#include "debug.h"

#include <stdarg.h>
#include <stdio.h>

int cni_debug_enabled;

void cni_debug(const char *fmt, ...)
{
	va_list ap;

	if (!cni_debug_enabled)
		return;
	va_start(ap, fmt);
	fputs("sluice-cni: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}
