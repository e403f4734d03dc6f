/* dispatch.h: one CNI invocation of sluice-cni, from what the runtime passed to what it prints,
 * with the environment, stdin and stdout passed in (as containernetworking/cni pkg/skel's
 * dispatcher), so that it runs in-process in the C unit tests.
 */
#ifndef SLUICE_CNI_DISPATCH_H
#define SLUICE_CNI_DISPATCH_H

#include <stddef.h>

#include "buf.h"
#include "cni-spec.h"

#define CNI_STDIN_CAP		 ((size_t)16 << 20)
#define CNI_DEFAULT_AGENT_SOCKET "/var/run/sluice/agent.sock"
/* cni_dispatch's result when not even an error could be formatted (out of memory). */
#define CNI_EXIT_OOM		 (-1)

/* What main read, once: the environment and all of stdin. */
struct cni_invocation {
	struct cni_env env;
	const char *stdin_data;
	size_t stdin_len;
	/* 0, or why stdin could not be read in full (E2BIG: more than CNI_STDIN_CAP bytes) */
	int stdin_errno;
};

/* Runs the command: appends the bytes for stdout to out and returns the exit code (or
 * CNI_EXIT_OOM). Permanent errors are answered here, before the agent is contacted; so is
 * VERSION, and nowhere else. */
int cni_dispatch(const struct cni_invocation *inv, struct buf *out);

#endif
