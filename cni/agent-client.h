/* agent-client.h: one request to the sluice agent over its unix socket, and its answer.
 *
 * Protocol (one connection per invocation):
 *   request:  one line, a JSON object ended by '\n' (built by the dispatcher); the plugin never
 *             half-closes its side (a Node server with allowHalfOpen: false would end the socket
 *             before answering).
 *   answer:   "<decimal exit code 0..255>\n" followed by the exact bytes for stdout, ended by the
 *             agent closing the connection.
 */
#ifndef SLUICE_CNI_AGENT_CLIENT_H
#define SLUICE_CNI_AGENT_CLIENT_H

#include <stddef.h>

#include "buf.h"

#define AGENT_CONNECT_TIMEOUT_MS 2000
#define AGENT_IO_TIMEOUT_MS	 10000		    /* the whole exchange, after connecting */
#define AGENT_ANSWER_CAP	 ((size_t)64 << 20) /* a larger answer is malformed */

enum agent_outcome {
	AGENT_ANSWERED,	   /* exit_code and the body are set */
	AGENT_UNREACHABLE, /* no socket, refused, timed out, or closed without a byte */
	AGENT_MALFORMED,   /* an answer that does not follow the protocol */
};

struct agent_answer {
	int exit_code;
	struct buf raw;	 /* every byte the agent sent */
	size_t body_off; /* where the bytes for stdout start in raw */
};

/* Sends request to the agent at socket_path and reads its answer. For AGENT_UNREACHABLE and
 * AGENT_MALFORMED, why holds the reason. The caller frees ans->raw. */
enum agent_outcome agent_call(const char *socket_path, const struct buf *request,
			      struct agent_answer *ans, struct buf *why);

#endif
