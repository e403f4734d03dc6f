/* netns-cookie.c: the network namespace cookie of netns-cookie.h. */
#define _GNU_SOURCE
#include "netns-cookie.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "debug.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

int netns_cookie(const char *path, uint64_t *cookie, char *err, size_t errlen)
{
	int orig, fd, sk, rc = -1;
	uint64_t v = 0;
	socklen_t vlen = sizeof(v);

	orig = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (orig < 0) /* not fatal: unix socket paths do not depend on the network namespace */
		cni_debug("cannot open /proc/self/ns/net: %s", strerror(errno));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "open: %s", strerror(errno));
		goto out;
	}
	if (setns(fd, CLONE_NEWNET) < 0) {
		snprintf(err, errlen, "setns: %s", strerror(errno));
		close(fd);
		goto out;
	}
	close(fd);
	sk = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sk < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		goto restore;
	}
	if (getsockopt(sk, SOL_SOCKET, SO_NETNS_COOKIE, &v, &vlen) < 0) {
		snprintf(err, errlen, "getsockopt: %s", strerror(errno));
	} else if (vlen != sizeof(v)) {
		snprintf(err, errlen, "getsockopt: unexpected option length %u", (unsigned)vlen);
	} else {
		*cookie = v;
		rc = 0;
	}
	close(sk);
restore:
	if (orig >= 0 && setns(orig, CLONE_NEWNET) < 0)
		cni_debug("cannot return to the original network namespace: %s", strerror(errno));
out:
	if (orig >= 0)
		close(orig);
	return rc;
}
