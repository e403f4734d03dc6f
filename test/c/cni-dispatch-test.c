/* Unit tests of cni/dispatch.c, in-process: every local error path, VERSION per cniVersion, the
 * agent-down policy (excludeNamespaces included), and the exchange with an agent, played here by
 * a thread on a real unix socket. CNI_NETNS is the test's own network namespace
 * (/proc/self/ns/net): reading its cookie needs setns, so run as root.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "check.h"
#include "dispatch.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

static const char *const versions[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
#define N_VERSIONS (sizeof(versions) / sizeof(versions[0]))
#define SUPPORTED  "[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]"

/* A prevResult as bridge writes it, with formatting a re-serialisation would not keep. */
#define PREV                                                                                \
	"{\n    \"cniVersion\": \"1.0.0\",\n    \"ips\": [{\"interface\": 1, \"address\": " \
	"\"10.1.0.5/24\"}],\n    \"x-extra\": 1.50\n}"

#define EXCLUDE ",\"excludeNamespaces\":[\"kube-system\",\"istio-system\"]"

/* ---- invocations ---------------------------------------------------------------------------- */

/* A socket path where nothing listens. */
static char absent_socket[128];

static void make_absent_socket(void)
{
	char dir[] = "/tmp/slcni-test-XXXXXX";

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		exit(2);
	}
	rmdir(dir); /* the directory is gone too: connect fails with ENOENT */
	snprintf(absent_socket, sizeof(absent_socket), "%s/agent.sock", dir);
}

/* The configuration a runtime passes to the last plugin of a chain. */
static char *conf(const char *version, const char *socket, const char *extra, const char *prev)
{
	char *s;

	if (asprintf(&s,
		     "{\"cniVersion\":\"%s\",\"name\":\"podnet\",\"type\":\"sluice-cni\","
		     "\"agentSocket\":\"%s\"%s%s%s}",
		     version, socket, extra ? extra : "", prev ? ",\"prevResult\":" : "",
		     prev ? prev : "") < 0)
		exit(2);
	return s;
}

static struct cni_invocation invocation(const char *command, const char *stdin_text)
{
	struct cni_invocation inv = {
		.env =
			{
				.command = command,
				.container_id = "c0ffee",
				.netns = "/proc/self/ns/net",
				.ifname = "eth0",
				.args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-"
					"1",
				.path = "/opt/cni/bin",
			},
		.stdin_data = stdin_text,
		.stdin_len = strlen(stdin_text),
	};
	return inv;
}

struct result {
	int code;
	char *out;
};

static struct result dispatch(const struct cni_invocation *inv)
{
	struct buf out = {0};
	struct result r;

	r.code = cni_dispatch(inv, &out);
	r.out = out.p ? out.p : strdup("");
	return r;
}

static struct result run(const char *command, const char *stdin_text)
{
	struct cni_invocation inv = invocation(command, stdin_text);

	return dispatch(&inv);
}

/* The error object dispatch prints, exactly. */
static char *error_json(const char *version, int code, const char *msg, const char *details)
{
	char *s;

	if (asprintf(&s, "{\"cniVersion\":\"%s\",\"code\":%d,\"msg\":\"%s\"%s%s%s}\n", version,
		     code, msg, details ? ",\"details\":\"" : "", details ? details : "",
		     details ? "\"" : "") < 0)
		exit(2);
	return s;
}

#define CHECK_ERROR(r, version, code_, msg, details)                    \
	do {                                                            \
		char *want_ = error_json(version, code_, msg, details); \
		CHECK_INT((r).code, 1);                                 \
		CHECK_STR((r).out, want_);                              \
		free(want_);                                            \
	} while (0)

/* Only the code, for paths whose message another case pins. */
static int error_code(const struct result *r)
{
	const char *p = strstr(r->out, "\"code\":");

	return r->code == 1 && p ? atoi(p + 7) : -1;
}

static uint64_t own_netns_cookie(void)
{
	uint64_t v = 0;
	socklen_t len = sizeof(v);
	int sk = socket(AF_UNIX, SOCK_DGRAM, 0);

	if (sk < 0 || getsockopt(sk, SOL_SOCKET, SO_NETNS_COOKIE, &v, &len) < 0) {
		perror("SO_NETNS_COOKIE");
		exit(2);
	}
	close(sk);
	return v;
}

/* ---- a fake agent ------------------------------------------------------------------------- */

struct fake_agent {
	char dir[32];
	char path[64];
	int lfd;
	pthread_t thread;
	const char *answer; /* NULL: close without answering */
	char request[1 << 16];
	size_t request_len;
};

static void agent_listen(struct fake_agent *a)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	strcpy(a->dir, "/tmp/slcni-agent-XXXXXX");
	if (!mkdtemp(a->dir)) {
		perror("mkdtemp");
		exit(2);
	}
	snprintf(a->path, sizeof(a->path), "%s/agent.sock", a->dir);
	strcpy(sa.sun_path, a->path);
	a->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (a->lfd < 0 || bind(a->lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(a->lfd, 16) < 0) {
		perror("fake agent");
		exit(2);
	}
}

/* Connections made to the agent and not yet served. */
static int agent_pending(struct fake_agent *a)
{
	int n = 0, fd;

	while ((fd = accept4(a->lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
		close(fd);
		n++;
	}
	return n;
}

static void *agent_serve(void *arg)
{
	struct fake_agent *a = arg;
	struct pollfd pfd = {.fd = a->lfd, .events = POLLIN};
	int fd;

	if (poll(&pfd, 1, 10000) != 1 || (fd = accept4(a->lfd, NULL, NULL, SOCK_CLOEXEC)) < 0)
		return NULL;
	/* the request is one line */
	while (a->request_len < sizeof(a->request) - 1) {
		struct pollfd in = {.fd = fd, .events = POLLIN};
		ssize_t r;

		if (poll(&in, 1, 10000) != 1)
			break;
		r = read(fd, a->request + a->request_len, sizeof(a->request) - 1 - a->request_len);
		if (r <= 0)
			break;
		a->request_len += (size_t)r;
		a->request[a->request_len] = '\0';
		if (memchr(a->request, '\n', a->request_len))
			break;
	}
	if (a->answer && write(fd, a->answer, strlen(a->answer)) < 0)
		perror("fake agent write");
	close(fd);
	return NULL;
}

/* Serves one connection with answer, in a thread; agent_join waits for it. */
static void agent_serve_once(struct fake_agent *a, const char *answer)
{
	a->answer = answer;
	a->request_len = 0;
	a->request[0] = '\0';
	if (pthread_create(&a->thread, NULL, agent_serve, a) != 0)
		exit(2);
}

static void agent_join(struct fake_agent *a)
{
	pthread_join(a->thread, NULL);
}

static void agent_close(struct fake_agent *a)
{
	close(a->lfd);
	unlink(a->path);
	rmdir(a->dir);
}

/* ---- the command and its environment ------------------------------------------------------ */

static void a_missing_or_empty_CNI_COMMAND_is_code_4(void)
{
	char *c = conf("1.0.0", absent_socket, NULL, PREV);
	struct result r = run(NULL, c);

	CHECK_ERROR(r, "1.0.0", 4, "CNI_COMMAND is not set", NULL);
	r = run("", c);
	CHECK_ERROR(r, "1.0.0", 4, "CNI_COMMAND is not set", NULL);
}

static void an_unknown_CNI_COMMAND_is_code_4_naming_it(void)
{
	struct result r = run("add", conf("0.4.0", absent_socket, NULL, PREV));

	CHECK_ERROR(r, "0.4.0", 4, "unknown CNI_COMMAND",
		    "CNI_COMMAND=\\\"add\\\"; supported: ADD, DEL, CHECK, VERSION, STATUS, GC");
}

static void add_and_check_need_CNI_CONTAINERID_CNI_NETNS_and_CNI_IFNAME(void)
{
	static const char *const commands[] = {"ADD", "CHECK"};
	char *c = conf("1.0.0", absent_socket, NULL, PREV);
	size_t i;

	for (i = 0; i < 2; i++) {
		struct cni_invocation inv = invocation(commands[i], c);
		struct result r;

		inv.env.container_id = NULL;
		r = dispatch(&inv);
		CHECK_ERROR(r, "1.0.0", 4,
			    "required environment variable CNI_CONTAINERID is missing", NULL);
		inv = invocation(commands[i], c);
		inv.env.netns = "";
		r = dispatch(&inv);
		CHECK_ERROR(r, "1.0.0", 4, "required environment variable CNI_NETNS is missing",
			    NULL);
		inv = invocation(commands[i], c);
		inv.env.ifname = NULL;
		r = dispatch(&inv);
		CHECK_ERROR(r, "1.0.0", 4, "required environment variable CNI_IFNAME is missing",
			    NULL);
		/* CNI_ARGS and CNI_PATH are optional for them (SPEC.md) */
		inv = invocation(commands[i], c);
		inv.env.args = NULL;
		inv.env.path = NULL;
		r = dispatch(&inv);
		CHECK_INT(error_code(&r), 11);
	}
}

static void several_missing_variables_are_named_together(void)
{
	struct cni_invocation inv = invocation("ADD", conf("1.0.0", absent_socket, NULL, PREV));
	struct result r;

	inv.env.container_id = inv.env.netns = inv.env.ifname = NULL;
	r = dispatch(&inv);
	CHECK_ERROR(
		r, "1.0.0", 4,
		"required environment variables CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME are missing",
		NULL);
}

static void del_needs_CNI_CONTAINERID_and_CNI_IFNAME_but_not_CNI_NETNS(void)
{
	char *c = conf("1.0.0", absent_socket, NULL, PREV);
	struct cni_invocation inv = invocation("DEL", c);
	struct result r;

	inv.env.netns = NULL;
	inv.env.path = NULL;
	r = dispatch(&inv);
	CHECK_INT(r.code, 0);
	CHECK_STR(r.out, "");
	inv.env.container_id = "";
	r = dispatch(&inv);
	CHECK_ERROR(r, "1.0.0", 4, "required environment variable CNI_CONTAINERID is missing", NULL);
	inv = invocation("DEL", c);
	inv.env.ifname = NULL;
	r = dispatch(&inv);
	CHECK_ERROR(r, "1.0.0", 4, "required environment variable CNI_IFNAME is missing", NULL);
}

static void gc_needs_CNI_PATH_and_status_needs_nothing(void)
{
	char *c = conf("1.1.0", absent_socket, NULL, NULL);
	struct cni_invocation inv = invocation("GC", c);
	struct result r;

	inv.env.path = NULL;
	r = dispatch(&inv);
	CHECK_ERROR(r, "1.1.0", 4, "required environment variable CNI_PATH is missing", NULL);
	/* GC names no attachment: neither CNI_CONTAINERID nor CNI_IFNAME is read */
	inv = invocation("GC", c);
	inv.env.container_id = inv.env.netns = inv.env.ifname = NULL;
	r = dispatch(&inv);
	CHECK_INT(r.code, 0);
	inv = invocation("STATUS", c);
	inv.env.container_id = inv.env.netns = inv.env.ifname = inv.env.args = inv.env.path = NULL;
	r = dispatch(&inv);
	CHECK_INT(error_code(&r), 50);
}

static void an_invalid_container_id_or_interface_name_is_code_4(void)
{
	static const struct {
		const char *container_id, *ifname, *msg, *details;
	} cases[] = {
		{"-c0ffee", "eth0", "invalid characters in CNI_CONTAINERID",
		 "\\\"-c0ffee\\\" does not match [a-zA-Z0-9][a-zA-Z0-9_.-]*"},
		{"c0/ffee", "eth0", "invalid characters in CNI_CONTAINERID",
		 "\\\"c0/ffee\\\" does not match [a-zA-Z0-9][a-zA-Z0-9_.-]*"},
		{"c0ffee", "eth0:1", "invalid interface name in CNI_IFNAME",
		 "\\\"eth0:1\\\" contains '/', ':' or whitespace"},
		{"c0ffee", "eth 0", "invalid interface name in CNI_IFNAME",
		 "\\\"eth 0\\\" contains '/', ':' or whitespace"},
		{"c0ffee", "..", "invalid interface name in CNI_IFNAME", "\\\"..\\\" is . or .."},
		{"c0ffee", "abcdefghijklmnop", "invalid interface name in CNI_IFNAME",
		 "\\\"abcdefghijklmnop\\\" is longer than 15 bytes (the kernel's IFNAMSIZ)"},
	};
	char *c = conf("1.0.0", absent_socket, NULL, PREV);
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cni_invocation inv = invocation(i % 2 ? "DEL" : "ADD", c);
		struct result r;

		inv.env.container_id = cases[i].container_id;
		inv.env.ifname = cases[i].ifname;
		r = dispatch(&inv);
		CHECK_ERROR(r, "1.0.0", 4, cases[i].msg, cases[i].details);
	}
	/* the longest valid name, and the characters container ids may hold, pass */
	{
		struct cni_invocation inv = invocation("DEL", c);
		struct result r;

		inv.env.container_id = "A9_b.c-d";
		inv.env.ifname = "abcdefghijklmno";
		r = dispatch(&inv);
		CHECK_INT(r.code, 0);
	}
}

/* ---- VERSION ---------------------------------------------------------------------------- */

static void version_echoes_each_supported_cniVersion_with_the_supported_list(void)
{
	size_t i;

	for (i = 0; i < N_VERSIONS; i++) {
		char *stdin_text, *want;
		struct result r;

		if (asprintf(&stdin_text, "{\"cniVersion\":\"%s\"}", versions[i]) < 0 ||
		    asprintf(&want, "{\"cniVersion\":\"%s\",\"supportedVersions\":" SUPPORTED "}\n",
			     versions[i]) < 0)
			exit(2);
		r = run("VERSION", stdin_text);
		CHECK_INT(r.code, 0);
		CHECK_STR(r.out, want);
	}
}

static void version_needs_nothing_but_the_command(void)
{
	const char *want = "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":" SUPPORTED "}\n";
	struct cni_invocation inv = invocation("VERSION", "");
	struct result r;

	inv.env.container_id = inv.env.netns = inv.env.ifname = inv.env.args = inv.env.path = NULL;
	r = dispatch(&inv);
	CHECK_INT(r.code, 0);
	CHECK_STR(r.out, want);
	inv.stdin_data = "{\"cniVersion\": ";
	inv.stdin_len = strlen(inv.stdin_data);
	r = dispatch(&inv);
	CHECK_STR(r.out, want);
	inv.stdin_errno = EIO;
	r = dispatch(&inv);
	CHECK_INT(r.code, 0);
	CHECK_STR(r.out, want);
	/* a version the plugin does not speak is still echoed: the caller compares the list */
	r = run("VERSION", "{\"cniVersion\":\"0.2.0\"}");
	CHECK_STR(r.out, "{\"cniVersion\":\"0.2.0\",\"supportedVersions\":" SUPPORTED "}\n");
}

/* ---- stdin and the configuration ------------------------------------------------------- */

static void unreadable_stdin_is_code_5_and_stdin_over_16_MiB_code_6(void)
{
	struct cni_invocation inv = invocation("ADD", "");
	struct result r;

	inv.stdin_errno = EIO;
	r = dispatch(&inv);
	CHECK_ERROR(r, "1.1.0", 5, "cannot read stdin", "Input/output error");
	inv.stdin_errno = E2BIG;
	r = dispatch(&inv);
	CHECK_ERROR(r, "1.1.0", 6, "stdin too large", "more than 16 MiB");
}

static void an_undecodable_configuration_is_code_6_with_the_reason(void)
{
	struct result r = run("ADD", "{\"cniVersion\": \"1.0.0\", \"name\": ");

	CHECK_ERROR(r, "1.1.0", 6, "cannot decode network configuration",
		    "unexpected end of input, expected a value at offset 32");
	r = run("DEL", "[1,2]");
	CHECK_ERROR(r, "1.1.0", 6, "cannot decode network configuration",
		    "invalid character '[', expected '{' (a JSON object) at offset 0");
	r = run("ADD", "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"t\","
		       "\"excludeNamespaces\":\"kube-system\"}");
	CHECK_ERROR(r, "1.1.0", 6, "cannot decode network configuration",
		    "\\\"excludeNamespaces\\\" is not a list of strings at offset 64");
}

static void a_missing_cniVersion_is_code_7_and_an_unsupported_one_code_1(void)
{
	struct result r = run("ADD", "{\"name\":\"n\",\"type\":\"sluice-cni\",\"prevResult\":{}}");

	CHECK_ERROR(r, "1.1.0", 7, "invalid network configuration", "cniVersion is required");
	r = run("DEL", conf("0.2.0", absent_socket, NULL, PREV));
	CHECK_ERROR(r, "0.2.0", 1, "incompatible CNI versions",
		    "config is \\\"0.2.0\\\", plugin supports "
		    "[\\\"0.3.0\\\",\\\"0.3.1\\\",\\\"0.4.0\\\",\\\"1.0.0\\\",\\\"1.1.0\\\"]");
}

static void a_missing_name_or_type_is_code_7(void)
{
	struct result r = run(
		"ADD", "{\"cniVersion\":\"1.0.0\",\"type\":\"sluice-cni\",\"prevResult\":{}}");

	CHECK_ERROR(r, "1.0.0", 7, "invalid network configuration", "name is required");
	r = run("ADD", "{\"cniVersion\":\"1.0.0\",\"name\":\"\",\"type\":\"sluice-cni\","
		       "\"prevResult\":{}}");
	CHECK_ERROR(r, "1.0.0", 7, "invalid network configuration", "name is required");
	r = run("ADD", "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"prevResult\":{}}");
	CHECK_ERROR(r, "1.0.0", 7, "invalid network configuration", "type is required");
}

static void check_below_0_4_0_and_status_and_gc_below_1_1_0_are_code_1(void)
{
	struct result r = run("CHECK", conf("0.3.1", absent_socket, NULL, PREV));

	CHECK_ERROR(r, "0.3.1", 1, "CHECK needs cniVersion 0.4.0 or later",
		    "config is \\\"0.3.1\\\"");
	r = run("STATUS", conf("1.0.0", absent_socket, NULL, NULL));
	CHECK_ERROR(r, "1.0.0", 1, "STATUS needs cniVersion 1.1.0", "config is \\\"1.0.0\\\"");
	r = run("GC", conf("0.4.0", absent_socket, NULL, NULL));
	CHECK_ERROR(r, "0.4.0", 1, "GC needs cniVersion 1.1.0", "config is \\\"0.4.0\\\"");
}

static void add_and_check_run_only_chained(void)
{
	struct result r = run("ADD", conf("1.0.0", absent_socket, NULL, NULL));

	CHECK_ERROR(r, "1.0.0", 7, "sluice-cni must be chained after the primary plugin",
		    "no prevResult in the configuration");
	r = run("CHECK", conf("1.0.0", absent_socket, NULL, "null"));
	CHECK_ERROR(r, "1.0.0", 7, "sluice-cni must be chained after the primary plugin",
		    "no prevResult in the configuration");
	r = run("DEL", conf("1.0.0", absent_socket, NULL, "[]"));
	CHECK_ERROR(r, "1.0.0", 7, "invalid network configuration", "prevResult must be an object");
	/* DEL without a prevResult is fine (SPEC.md: plugins should still return without error) */
	r = run("DEL", conf("1.0.0", absent_socket, NULL, NULL));
	CHECK_INT(r.code, 0);
}

static void an_unusable_CNI_NETNS_fails_add_and_check_with_code_4(void)
{
	char *c = conf("1.0.0", absent_socket, NULL, PREV);
	struct cni_invocation inv = invocation("ADD", c);
	struct result r;

	inv.env.netns = "/nonexistent/netns";
	r = dispatch(&inv);
	CHECK_ERROR(r, "1.0.0", 4, "CNI_NETNS /nonexistent/netns is not usable",
		    "open: No such file or directory");
	inv.env.command = "CHECK";
	inv.env.netns = "/proc/self/status"; /* a file, not a namespace */
	r = dispatch(&inv);
	CHECK_ERROR(r, "1.0.0", 4, "CNI_NETNS /proc/self/status is not usable",
		    "setns: Invalid argument");
}

static void errors_answer_in_the_callers_cniVersion(void)
{
	size_t i;

	for (i = 0; i < N_VERSIONS; i++) {
		struct cni_invocation inv = invocation("ADD",
						       conf(versions[i], absent_socket, NULL, PREV));
		struct result r;

		inv.env.ifname = NULL;
		r = dispatch(&inv);
		CHECK_ERROR(r, versions[i], 4,
			    "required environment variable CNI_IFNAME is missing", NULL);
		r = run("ADD", conf(versions[i], absent_socket, NULL, PREV));
		CHECK_INT(error_code(&r), 11);
		CHECK_CONTAINS(r.out, versions[i]);
	}
}

/* Each permanent error above, with a live agent listening: none of them reaches it. */
static void permanent_errors_never_reach_the_agent(void)
{
	struct fake_agent a;
	struct {
		const char *command;
		char *stdin_text;
		int code;
		const char *unset; /* a variable to unset: "netns", "ifname", "path" */
		const char *netns;
	} cases[8];
	size_t i, n = 0;

	agent_listen(&a);
	cases[n++] = (typeof(cases[0])){"ADD", conf("0.2.0", a.path, NULL, PREV), 1, NULL, NULL};
	cases[n++] = (typeof(cases[0])){"CHECK", conf("0.3.1", a.path, NULL, PREV), 1, NULL, NULL};
	cases[n++] = (typeof(cases[0])){"ADD", conf("1.0.0", a.path, NULL, PREV), 4, "ifname", NULL};
	cases[n++] = (typeof(cases[0])){"GC", conf("1.1.0", a.path, NULL, NULL), 4, "path", NULL};
	cases[n++] = (typeof(cases[0])){"ADD", conf("1.0.0", a.path, NULL, PREV), 4, NULL,
					"/nonexistent"};
	cases[n++] = (typeof(cases[0])){"ADD", conf("1.0.0", a.path, NULL, NULL), 7, NULL, NULL};
	cases[n++] = (typeof(cases[0])){"STATUS", conf("1.0.0", a.path, NULL, NULL), 1, NULL, NULL};
	cases[n++] = (typeof(cases[0])){"ADD", strdup("{\"cniVersion\":\"1.0.0\",\"name\":"), 6,
					NULL, NULL};
	for (i = 0; i < n; i++) {
		struct cni_invocation inv = invocation(cases[i].command, cases[i].stdin_text);
		struct result r;

		if (cases[i].unset && !strcmp(cases[i].unset, "ifname"))
			inv.env.ifname = NULL;
		if (cases[i].unset && !strcmp(cases[i].unset, "path"))
			inv.env.path = NULL;
		if (cases[i].netns)
			inv.env.netns = cases[i].netns;
		r = dispatch(&inv);
		CHECK_INT(error_code(&r), cases[i].code);
		CHECK_INT(agent_pending(&a), 0);
	}
	/* and the same agent does see a valid request (the check above can fail) */
	{
		struct result r;

		agent_serve_once(&a, "0\n");
		r = run("ADD", conf("1.0.0", a.path, NULL, PREV));
		agent_join(&a);
		CHECK_INT(r.code, 0);
		CHECK_CONTAINS(a.request, "{\"op\":\"cni\",\"command\":\"ADD\"");
	}
	agent_close(&a);
}

/* ---- the agent is not reachable ------------------------------------------------------------- */

static void agent_down_add_and_check_fail_with_11_del_and_gc_succeed_status_is_50(void)
{
	char *c = conf("1.1.0", absent_socket, EXCLUDE, PREV);
	char details[256];
	struct result r;

	snprintf(details, sizeof(details), "%s: No such file or directory", absent_socket);
	r = run("ADD", c);
	CHECK_ERROR(r, "1.1.0", 11, "sluice agent is not reachable; try again later", details);
	r = run("CHECK", c);
	CHECK_ERROR(r, "1.1.0", 11, "sluice agent is not reachable; try again later", details);
	r = run("DEL", c);
	CHECK_INT(r.code, 0);
	CHECK_STR(r.out, "");
	r = run("GC", conf("1.1.0", absent_socket, NULL, NULL));
	CHECK_INT(r.code, 0);
	CHECK_STR(r.out, "");
	r = run("STATUS", conf("1.1.0", absent_socket, NULL, NULL));
	CHECK_ERROR(r, "1.1.0", 50, "sluice agent is not available", details);
}

static void agent_down_a_pod_of_an_excluded_namespace_starts_with_the_prevResult_unchanged(void)
{
	size_t i;

	for (i = 0; i < N_VERSIONS; i++) {
		char *c = conf(versions[i], absent_socket, EXCLUDE, PREV);
		struct cni_invocation inv = invocation("ADD", c);
		struct result r;

		inv.env.args = "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-1;K8S_POD_UID=u";
		r = dispatch(&inv);
		CHECK_INT(r.code, 0);
		CHECK_STR(r.out, PREV "\n");
		if (cni_version_at_least(versions[i], "0.4.0")) {
			inv.env.command = "CHECK";
			r = dispatch(&inv);
			CHECK_INT(r.code, 0);
			CHECK_STR(r.out, "");
		}
	}
}

static void agent_down_every_other_pod_still_fails_closed(void)
{
	static const char *const args[] = {
		"K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
		"K8S_POD_NAMESPACE=kube-system-2",
		"K8S_POD_NAMESPACE=kube",
		"K8S_POD_NAMESPACE=",
		"K8S_POD_NAME=no-namespace",
		"K8S_POD_NAMESPACE=kube-system;K8S_POD_NAMESPACE=default", /* the last one counts */
		"X_K8S_POD_NAMESPACE=kube-system",
		NULL,
	};
	char *c = conf("1.0.0", absent_socket, EXCLUDE, PREV);
	size_t i;

	for (i = 0; i < sizeof(args) / sizeof(args[0]); i++) {
		struct cni_invocation inv = invocation("ADD", c);
		struct result r;

		inv.env.args = args[i];
		r = dispatch(&inv);
		CHECK_INT(error_code(&r), 11);
	}
	/* without excludeNamespaces in the entry (an entry from before this existed) */
	{
		struct cni_invocation inv = invocation("ADD",
						       conf("1.0.0", absent_socket, NULL, PREV));
		struct result r;

		inv.env.args = "K8S_POD_NAMESPACE=kube-system";
		r = dispatch(&inv);
		CHECK_INT(error_code(&r), 11);
		inv.stdin_data = conf("1.0.0", absent_socket, ",\"excludeNamespaces\":[]", PREV);
		inv.stdin_len = strlen(inv.stdin_data);
		r = dispatch(&inv);
		CHECK_INT(error_code(&r), 11);
	}
	/* and the other way round: the earlier duplicate key is overridden */
	{
		struct cni_invocation inv = invocation(
			"ADD",
			conf("1.0.0",
			     absent_socket, ",\"excludeNamespaces\":[\"default\"],\"excludeNamespaces\":[\"kube-system\"]",
			     PREV));
		struct result r;

		inv.env.args = "K8S_POD_NAMESPACE=default";
		r = dispatch(&inv);
		CHECK_INT(error_code(&r), 11);
		inv.env.args = "K8S_POD_NAMESPACE=kube-system";
		r = dispatch(&inv);
		CHECK_INT(r.code, 0);
	}
}

/* ---- the agent answers ------------------------------------------------------------------- */

static void the_request_carries_the_command_the_set_variables_stdin_and_the_netns_cookie(void)
{
	struct fake_agent a;
	struct cni_invocation inv;
	struct result r;
	char *c, *want;

	agent_listen(&a);
	if (asprintf(&c,
		     "{\"cniVersion\":\"1.0.0\",\"name\":\"n\",\"type\":\"sluice-cni\","
		     "\"agentSocket\":\"%s\",\"prevResult\":{\"a\":\"\\u00e9\\n\"}}\n",
		     a.path) < 0)
		exit(2);
	inv = invocation("ADD", c);
	inv.env.path = NULL; /* unset: not sent */
	inv.env.args = "";   /* set but empty: sent as "" */
	agent_serve_once(&a, "0\n{}\n");
	r = dispatch(&inv);
	agent_join(&a);
	CHECK_INT(r.code, 0);
	if (asprintf(&want,
		     "{\"op\":\"cni\",\"command\":\"ADD\",\"env\":{\"CNI_CONTAINERID\":\"c0ffee\","
		     "\"CNI_NETNS\":\"/proc/self/ns/"
		     "net\",\"CNI_IFNAME\":\"eth0\",\"CNI_ARGS\":\"\"},"
		     "\"stdin\":\"{\\\"cniVersion\\\":\\\"1.0.0\\\",\\\"name\\\":\\\"n\\\","
		     "\\\"type\\\":"
		     "\\\"sluice-cni\\\",\\\"agentSocket\\\":\\\"%s\\\",\\\"prevResult\\\":{"
		     "\\\"a\\\":"
		     "\\\"\\\\u00e9\\\\n\\\"}}\\u000a\",\"netnsCookie\":\"%" PRIu64 "\"}\n",
		     a.path, own_netns_cookie()) < 0)
		exit(2);
	CHECK_STR(a.request, want);
	agent_close(&a);
}

static void del_of_a_vanished_namespace_leaves_the_decision_to_the_agent(void)
{
	struct fake_agent a;
	struct cni_invocation inv;
	struct result r;

	agent_listen(&a);
	inv = invocation("DEL", conf("1.0.0", a.path, NULL, PREV));
	inv.env.netns = "/nonexistent/netns";
	agent_serve_once(&a, "0\n");
	r = dispatch(&inv);
	agent_join(&a);
	CHECK_INT(r.code, 0);
	CHECK_STR(r.out, "");
	CHECK_CONTAINS(a.request, ",\"netnsError\":\"open: No such file or directory\"}\n");
	CHECK(!strstr(a.request, "netnsCookie"));
	/* GC and STATUS name no namespace */
	inv = invocation("STATUS", conf("1.1.0", a.path, NULL, NULL));
	agent_serve_once(&a, "0\n");
	r = dispatch(&inv);
	agent_join(&a);
	CHECK_INT(r.code, 0);
	CHECK(!strstr(a.request, "netnsCookie") && !strstr(a.request, "netnsError"));
	agent_close(&a);
}

static void the_agents_answer_is_printed_verbatim_with_its_exit_code(void)
{
	static const struct {
		const char *answer, *out;
		int code;
	} cases[] = {
		{"0\n" PREV "\n", PREV "\n", 0},
		{"1\n{\"cniVersion\":\"1.0.0\",\"code\":101,\"msg\":\"m\"}\n",
		 "{\"cniVersion\":\"1.0.0\",\"code\":101,\"msg\":\"m\"}\n", 1},
		{"255\n", "", 255},
		{"0\n", "", 0},
	};
	struct fake_agent a;
	size_t i;

	agent_listen(&a);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cni_invocation inv = invocation("ADD", conf("1.0.0", a.path, EXCLUDE, PREV));
		struct result r;

		/* an excluded namespace too: with the agent up, the agent decides */
		inv.env.args = i % 2 ? "K8S_POD_NAMESPACE=kube-system" : inv.env.args;
		agent_serve_once(&a, cases[i].answer);
		r = dispatch(&inv);
		agent_join(&a);
		CHECK_INT(r.code, cases[i].code);
		CHECK_STR(r.out, cases[i].out);
	}
	agent_close(&a);
}

static void a_malformed_answer_is_code_11_naming_its_start(void)
{
	static const struct {
		const char *answer, *details;
	} cases[] = {
		{"garbage", "answer starts with \\\"garbage\\\""},
		{"256\n{}", "answer starts with \\\"256\\\\u000a{}\\\""},
		{"\n", "answer starts with \\\"\\\\u000a\\\""},
		{"0", "answer starts with \\\"0\\\""},
		{"1234\n", "answer starts with \\\"1234\\\\u000a\\\""},
	};
	struct fake_agent a;
	size_t i;

	agent_listen(&a);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct result r;

		agent_serve_once(&a, cases[i].answer);
		r = run("ADD", conf("1.0.0", a.path, NULL, PREV));
		agent_join(&a);
		CHECK_ERROR(r, "1.0.0", 11, "sluice agent sent a malformed answer", cases[i].details);
	}
	agent_close(&a);
}

static void an_agent_that_closes_without_answering_counts_as_down(void)
{
	struct fake_agent a;
	struct cni_invocation inv;
	struct result r;
	char details[128];

	agent_listen(&a);
	snprintf(details, sizeof(details), "%s: connection closed without an answer", a.path);
	agent_serve_once(&a, NULL);
	r = run("ADD", conf("1.0.0", a.path, EXCLUDE, PREV));
	agent_join(&a);
	CHECK_ERROR(r, "1.0.0", 11, "sluice agent is not reachable; try again later", details);
	inv = invocation("ADD", conf("1.0.0", a.path, EXCLUDE, PREV));
	inv.env.args = "K8S_POD_NAMESPACE=istio-system";
	agent_serve_once(&a, NULL);
	r = dispatch(&inv);
	agent_join(&a);
	CHECK_INT(r.code, 0);
	CHECK_STR(r.out, PREV "\n");
	agent_close(&a);
}

int main(int argc, char **argv)
{
#define CASE(fn)        \
	{               \
#fn, fn \
	}
	static const struct test_case cases[] = {
		CASE(a_missing_or_empty_CNI_COMMAND_is_code_4),
		CASE(an_unknown_CNI_COMMAND_is_code_4_naming_it),
		CASE(add_and_check_need_CNI_CONTAINERID_CNI_NETNS_and_CNI_IFNAME),
		CASE(several_missing_variables_are_named_together),
		CASE(del_needs_CNI_CONTAINERID_and_CNI_IFNAME_but_not_CNI_NETNS),
		CASE(gc_needs_CNI_PATH_and_status_needs_nothing),
		CASE(an_invalid_container_id_or_interface_name_is_code_4),
		CASE(version_echoes_each_supported_cniVersion_with_the_supported_list),
		CASE(version_needs_nothing_but_the_command),
		CASE(unreadable_stdin_is_code_5_and_stdin_over_16_MiB_code_6),
		CASE(an_undecodable_configuration_is_code_6_with_the_reason),
		CASE(a_missing_cniVersion_is_code_7_and_an_unsupported_one_code_1),
		CASE(a_missing_name_or_type_is_code_7),
		CASE(check_below_0_4_0_and_status_and_gc_below_1_1_0_are_code_1),
		CASE(add_and_check_run_only_chained),
		CASE(an_unusable_CNI_NETNS_fails_add_and_check_with_code_4),
		CASE(errors_answer_in_the_callers_cniVersion),
		CASE(permanent_errors_never_reach_the_agent),
		CASE(agent_down_add_and_check_fail_with_11_del_and_gc_succeed_status_is_50),
		CASE(agent_down_a_pod_of_an_excluded_namespace_starts_with_the_prevResult_unchanged),
		CASE(agent_down_every_other_pod_still_fails_closed),
		CASE(the_request_carries_the_command_the_set_variables_stdin_and_the_netns_cookie),
		CASE(del_of_a_vanished_namespace_leaves_the_decision_to_the_agent),
		CASE(the_agents_answer_is_printed_verbatim_with_its_exit_code),
		CASE(a_malformed_answer_is_code_11_naming_its_start),
		CASE(an_agent_that_closes_without_answering_counts_as_down),
	};

	make_absent_socket();
	return test_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
