/* Internal to libsluice (shim.c; the other files call its sl_fail, internal.h): how a failing
 * call records its message for sl_last_error(). Not part of the library's interface.
 */
#ifndef SLUICE_FAIL_H
#define SLUICE_FAIL_H

#include <stdarg.h>

/* Writes "<fmt...>: <strerror(err)>" to the calling thread's last-error slot and returns -|err|. */
__attribute__((visibility("hidden"), format(printf, 2, 0))) int sl_fail_v(int err, const char *fmt,
									  va_list ap);

#endif /* SLUICE_FAIL_H */
