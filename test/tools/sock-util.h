/* Socket helpers of the test tools (sl-probe.c, origdst-load.c, zt-standin.c): static inline. */
#ifndef SLUICE_TEST_TOOLS_SOCK_UTIL_H
#define SLUICE_TEST_TOOLS_SOCK_UTIL_H

#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>

/* The netfilter values, without pulling in the netfilter headers. */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

/* Where the connection was going before the redirect, as Envoy asks: SOL_IP for IPv4, SOL_IPV6
 * for IPv6. 0, or -1 with errno. */
static inline int get_orig_dst(int fd, int family, struct sockaddr_storage *ss)
{
	socklen_t len = family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);

	memset(ss, 0, sizeof(*ss));
	int r = family == AF_INET6 ? getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, ss, &len)
				   : getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, ss, &len);
	if (r == 0)
		ss->ss_family = (sa_family_t)family;
	return r;
}

/* Same family, address and port. */
static inline bool same_sockaddr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
	return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
}

/* The outcome of a non-blocking connect once its socket is writable: 0, or -1 with errno (the
 * connect's own error, SO_ERROR). */
static inline int connect_result(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return -1;
	if (err != 0) {
		errno = err;
		return -1;
	}
	return 0;
}

#endif
