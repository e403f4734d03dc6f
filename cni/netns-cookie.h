/* netns-cookie.h: the cookie of a network namespace given by path (CNI_NETNS), which is how the
 * kernel side of sluice knows a pod. Only readable from inside that namespace.
 */
#ifndef SLUICE_CNI_NETNS_COOKIE_H
#define SLUICE_CNI_NETNS_COOKIE_H

#include <stddef.h>
#include <stdint.h>

/* Enters the namespace at path, reads SO_NETNS_COOKIE from a socket created there, and returns
 * to the original namespace. Returns 0, or -1 with "<step>: <strerror>" in err. */
int netns_cookie(const char *path, uint64_t *cookie, char *err, size_t errlen);

#endif
