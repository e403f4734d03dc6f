/* dispatch.c: the dispatcher of dispatch.h.
 *
 * Order, as skel.go checks: the command and the environment it requires (code 4), stdin (5, 6),
 * the configuration's cniVersion (7 when missing, 1 when not spoken) and the members every
 * command needs (7), the command's own version floor (1), the chaining (7), the network
 * namespace (4). Only then is the agent asked, so an error that retrying cannot fix is never
 * answered with 11 (try again later).
 *
 * When the agent is not reachable, the plugin decides what it can alone:
 *  - DEL and GC succeed silently: they must not block pod deletion, and the agent
 *    garbage-collects registrations of vanished namespaces when it starts;
 *  - STATUS fails with 50 (plugin not available);
 *  - ADD and CHECK of a pod whose namespace (K8S_POD_NAMESPACE in CNI_ARGS) is in the entry's
 *    excludeNamespaces succeed, ADD printing the prevResult unchanged: the agent would never
 *    capture such a pod (istio-cni carries exclude_namespaces in its entry for the same reason);
 *  - every other ADD and CHECK fails with 11, so that no pod starts outside the mesh.
 */
#include "dispatch.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "agent-client.h"
#include "debug.h"
#include "json-scan.h"
#include "netns-cookie.h"

/* The members of the configuration the plugin reads itself; the agent reads the rest. */
enum conf_member {
	CONF_CNI_VERSION,
	CONF_NAME,
	CONF_TYPE,
	CONF_AGENT_SOCKET,
	CONF_EXCLUDE_NAMESPACES,
	CONF_PREV_RESULT,
	CONF_MEMBERS,
};

struct dispatch {
	const struct cni_invocation *inv;
	enum cni_command cmd;
	struct json_member conf[CONF_MEMBERS];
	/* the cniVersion of every answer: the caller's when its configuration has one */
	const char *version;
	struct buf *out;
};

/* Replaces out with a CNI error object. Returns the exit code, 1, or CNI_EXIT_OOM. */
static int fail(struct dispatch *d, int code, const char *msg, const char *details)
{
	char num[16];

	snprintf(num, sizeof(num), "%d", code);
	cni_debug("error %d: %s%s%s", code, msg, details && *details ? ": " : "",
		  details ? details : "");
	d->out->len = 0;
	if (buf_adds(d->out, "{\"cniVersion\":") < 0 || buf_add_json_cstr(d->out, d->version) < 0 ||
	    buf_adds(d->out, ",\"code\":") < 0 || buf_adds(d->out, num) < 0 ||
	    buf_adds(d->out, ",\"msg\":") < 0 || buf_add_json_cstr(d->out, msg) < 0)
		return CNI_EXIT_OOM;
	if (details && *details &&
	    (buf_adds(d->out, ",\"details\":") < 0 || buf_add_json_cstr(d->out, details) < 0))
		return CNI_EXIT_OOM;
	return buf_adds(d->out, "}\n") < 0 ? CNI_EXIT_OOM : 1;
}

/* VERSION: the one place it is answered. Needs nothing but the caller's cniVersion (SPEC.md:
 * "the value of cniVersion specified on input"); stdin that does not decode gets the newest. */
static int version_reply(struct dispatch *d)
{
	if (buf_adds(d->out, "{\"cniVersion\":") < 0 || buf_add_json_cstr(d->out, d->version) < 0 ||
	    buf_adds(d->out, ",\"supportedVersions\":") < 0 ||
	    buf_adds(d->out, cni_supported_versions_json) < 0 || buf_adds(d->out, "}\n") < 0)
		return CNI_EXIT_OOM;
	return 0;
}

static const char *conf_string(const struct dispatch *d, enum conf_member m)
{
	return d->conf[m].present ? d->conf[m].str.p : NULL;
}

/* 0 when the configuration is one sluice-cni can act on, else the exit code of the error. */
static int check_conf(struct dispatch *d)
{
	static const struct {
		enum cni_command cmd;
		const char *name, *min;
	} floors[] = {
		{CMD_CHECK, "CHECK needs cniVersion 0.4.0 or later", "0.4.0"},
		{CMD_STATUS, "STATUS needs cniVersion 1.1.0", "1.1.0"},
		{CMD_GC, "GC needs cniVersion 1.1.0", "1.1.0"},
	};
	const char *version = conf_string(d, CONF_CNI_VERSION);
	const struct json_member *prev = &d->conf[CONF_PREV_RESULT];
	struct buf details = {0};
	size_t i;
	int rc = 0;

	if (!version || !*version)
		return fail(d, CNI_ERR_INVALID_CONFIG, "invalid network configuration",
			    "cniVersion is required");
	if (!cni_version_supported(version)) {
		if (buf_adds(&details, "config is ") < 0 || buf_add_json_cstr(&details, version) < 0 ||
		    buf_adds(&details, ", plugin supports ") < 0 ||
		    buf_adds(&details, cni_supported_versions_json) < 0)
			rc = CNI_EXIT_OOM;
		else
			rc = fail(d, CNI_ERR_INCOMPATIBLE_VERSION, "incompatible CNI versions",
				  details.p);
		goto out;
	}
	if (!conf_string(d, CONF_NAME) || !*conf_string(d, CONF_NAME))
		return fail(d, CNI_ERR_INVALID_CONFIG, "invalid network configuration",
			    "name is required");
	if (!conf_string(d, CONF_TYPE) || !*conf_string(d, CONF_TYPE))
		return fail(d, CNI_ERR_INVALID_CONFIG, "invalid network configuration",
			    "type is required");
	for (i = 0; i < sizeof(floors) / sizeof(floors[0]); i++) {
		if (floors[i].cmd != d->cmd || cni_version_at_least(version, floors[i].min))
			continue;
		if (buf_adds(&details, "config is ") < 0 || buf_add_json_cstr(&details, version) < 0)
			rc = CNI_EXIT_OOM;
		else
			rc = fail(d, CNI_ERR_INCOMPATIBLE_VERSION, floors[i].name, details.p);
		goto out;
	}
	if (prev->present && d->inv->stdin_data[prev->raw_off] != '{')
		return fail(d, CNI_ERR_INVALID_CONFIG, "invalid network configuration",
			    "prevResult must be an object");
	/* A chained plugin passes the previous result on; run alone, there is nothing to pass. */
	if (!prev->present && (d->cmd == CMD_ADD || d->cmd == CMD_CHECK))
		return fail(d, CNI_ERR_INVALID_CONFIG,
			    "sluice-cni must be chained after the primary plugin",
			    "no prevResult in the configuration");
out:
	buf_free(&details);
	return rc;
}

static int add_env(struct buf *b, const char *name, const char *value, int *first)
{
	if (!value)
		return 0;
	if ((!*first && buf_addc(b, ',') < 0) || buf_add_json_cstr(b, name) < 0 ||
	    buf_addc(b, ':') < 0 || buf_add_json_cstr(b, value) < 0)
		return -1;
	*first = 0;
	return 0;
}

/* The request line of agent-client.h: {"op":"cni","command":..,"env":{the CNI_* variables that
 * are set},"stdin":..,"netnsCookie":"<decimal u64>" | "netnsError":"<why>"}. */
static int build_request(const struct dispatch *d, struct buf *req, const char *cookie,
			 const char *netns_error)
{
	const struct cni_env *e = &d->inv->env;
	int first = 1;

	if (buf_adds(req, "{\"op\":\"cni\",\"command\":") < 0 ||
	    buf_add_json_cstr(req, e->command) < 0 || buf_adds(req, ",\"env\":{") < 0 ||
	    add_env(req, "CNI_CONTAINERID", e->container_id, &first) < 0 ||
	    add_env(req, "CNI_NETNS", e->netns, &first) < 0 ||
	    add_env(req, "CNI_IFNAME", e->ifname, &first) < 0 ||
	    add_env(req, "CNI_ARGS", e->args, &first) < 0 ||
	    add_env(req, "CNI_PATH", e->path, &first) < 0 || buf_adds(req, "},\"stdin\":") < 0 ||
	    buf_add_json_str(req, d->inv->stdin_data, d->inv->stdin_len) < 0)
		return -1;
	if (cookie && (buf_adds(req, ",\"netnsCookie\":\"") < 0 || buf_adds(req, cookie) < 0 ||
		       buf_addc(req, '"') < 0))
		return -1;
	if (netns_error &&
	    (buf_adds(req, ",\"netnsError\":") < 0 || buf_add_json_cstr(req, netns_error) < 0))
		return -1;
	return buf_adds(req, "}\n");
}

/* The pod's namespace is one the agent never captures, per the entry's excludeNamespaces.
 * Returns 1 or 0, or -1 out of memory. */
static int pod_namespace_excluded(const struct dispatch *d, struct buf *ns)
{
	int found = cni_args_get(d->inv->env.args, "K8S_POD_NAMESPACE", ns);

	if (found <= 0)
		return found;
	return json_list_contains(&d->conf[CONF_EXCLUDE_NAMESPACES], ns->p);
}

/* What the plugin answers alone when the agent is not reachable (see the top of this file). */
static int agent_unreachable(struct dispatch *d, const char *socket_path, const char *why)
{
	const struct json_member *prev = &d->conf[CONF_PREV_RESULT];
	struct buf details = {0}, ns = {0};
	int rc, excluded;

	cni_debug("%s %s: agent %s: %s", d->inv->env.command,
		  d->inv->env.container_id ? d->inv->env.container_id : "-", socket_path, why);
	if (d->cmd == CMD_DEL || d->cmd == CMD_GC)
		return 0;
	if (buf_adds(&details, socket_path) < 0 || buf_adds(&details, ": ") < 0 ||
	    buf_adds(&details, why) < 0) {
		rc = CNI_EXIT_OOM;
		goto out;
	}
	if (d->cmd == CMD_STATUS) {
		rc = fail(d, CNI_ERR_NOT_AVAILABLE, "sluice agent is not available", details.p);
		goto out;
	}
	excluded = pod_namespace_excluded(d, &ns);
	if (excluded < 0) {
		rc = CNI_EXIT_OOM;
	} else if (excluded) {
		cni_debug("namespace %s is in excludeNamespaces: %s without the agent", ns.p,
			  d->inv->env.command);
		rc = 0;
		if (d->cmd == CMD_ADD &&
		    (buf_add(d->out, d->inv->stdin_data + prev->raw_off, prev->raw_len) < 0 ||
		     buf_addc(d->out, '\n') < 0))
			rc = CNI_EXIT_OOM;
	} else {
		rc = fail(d, CNI_ERR_TRY_LATER, "sluice agent is not reachable; try again later",
			  details.p);
	}
out:
	buf_free(&details);
	buf_free(&ns);
	return rc;
}

/* Everything after the local checks: the cookie, the agent, its answer. */
static int forward(struct dispatch *d)
{
	const char *netns = d->inv->env.netns;
	const char *socket_path = conf_string(d, CONF_AGENT_SOCKET);
	struct agent_answer ans = {0};
	struct buf req = {0}, why = {0}, details = {0};
	char cookie[32] = "", netns_err[256] = "";
	uint64_t v;
	int rc;

	if (!socket_path || !*socket_path)
		socket_path = CNI_DEFAULT_AGENT_SOCKET;
	/* The cookie is the pod's identity in the kernel; only ADD, CHECK and DEL name a pod. */
	if ((d->cmd == CMD_ADD || d->cmd == CMD_CHECK || d->cmd == CMD_DEL) && netns && *netns) {
		if (netns_cookie(netns, &v, netns_err, sizeof(netns_err)) == 0) {
			snprintf(cookie, sizeof(cookie), "%" PRIu64, v);
		} else if (d->cmd != CMD_DEL) {
			/* For DEL a namespace that is already gone is normal: the agent decides. */
			if (buf_adds(&details, "CNI_NETNS ") < 0 || buf_adds(&details, netns) < 0 ||
			    buf_adds(&details, " is not usable") < 0)
				rc = CNI_EXIT_OOM;
			else
				rc = fail(d, CNI_ERR_INVALID_ENV, details.p, netns_err);
			buf_free(&details);
			return rc;
		}
	}
	if (build_request(d, &req, cookie[0] ? cookie : NULL, netns_err[0] ? netns_err : NULL) < 0) {
		rc = CNI_EXIT_OOM;
		goto out;
	}
	switch (agent_call(socket_path, &req, &ans, &why)) {
	case AGENT_ANSWERED:
		cni_debug("%s: agent answered with exit code %d and %zu bytes", d->inv->env.command,
			  ans.exit_code, ans.raw.len - ans.body_off);
		rc = buf_add(d->out, ans.raw.p + ans.body_off, ans.raw.len - ans.body_off) < 0
			     ? CNI_EXIT_OOM
			     : ans.exit_code;
		break;
	case AGENT_MALFORMED:
		rc = fail(d, CNI_ERR_TRY_LATER, "sluice agent sent a malformed answer",
			  why.p ? why.p : "");
		break;
	default:
		rc = agent_unreachable(d, socket_path, why.p ? why.p : "");
		break;
	}
out:
	buf_free(&req);
	buf_free(&why);
	buf_free(&ans.raw);
	return rc;
}

int cni_dispatch(const struct cni_invocation *inv, struct buf *out)
{
	struct dispatch d = {
		.inv = inv,
		.version = CNI_NEWEST_VERSION,
		.out = out,
		.conf =
			{
				[CONF_CNI_VERSION] = {"cniVersion", JSON_WANT_STRING},
				[CONF_NAME] = {"name", JSON_WANT_STRING},
				[CONF_TYPE] = {"type", JSON_WANT_STRING},
				[CONF_AGENT_SOCKET] = {"agentSocket", JSON_WANT_STRING},
				[CONF_EXCLUDE_NAMESPACES] = {"excludeNamespaces",
							     JSON_WANT_STRING_LIST},
				[CONF_PREV_RESULT] = {"prevResult", JSON_WANT_RAW},
			},
	};
	const char *command = inv->env.command;
	struct buf msg = {0}, details = {0};
	char decode_err[200] = "";
	int decoded = 0, rc;

	/* Decoded first, for the cniVersion errors are answered in; judged in skel.go's order. */
	if (inv->stdin_errno == 0)
		decoded = json_scan_object(inv->stdin_data, inv->stdin_len, d.conf, CONF_MEMBERS,
					   decode_err, sizeof(decode_err)) == 0;
	if (decoded && conf_string(&d, CONF_CNI_VERSION) && *conf_string(&d, CONF_CNI_VERSION))
		d.version = conf_string(&d, CONF_CNI_VERSION);

	if (!command || !*command) {
		rc = fail(&d, CNI_ERR_INVALID_ENV, "CNI_COMMAND is not set", NULL);
		goto out;
	}
	d.cmd = cni_command_of(command);
	if (d.cmd == CMD_UNKNOWN) {
		if (buf_adds(&details, "CNI_COMMAND=") < 0 ||
		    buf_add_json_cstr(&details, command) < 0 ||
		    buf_adds(&details, "; supported: ADD, DEL, CHECK, VERSION, STATUS, GC") < 0)
			rc = CNI_EXIT_OOM;
		else
			rc = fail(&d, CNI_ERR_INVALID_ENV, "unknown CNI_COMMAND", details.p);
		goto out;
	}
	if (d.cmd == CMD_VERSION) {
		if (!decoded)
			cni_debug("VERSION: configuration not decoded (%s), answering with %s",
				  inv->stdin_errno ? strerror(inv->stdin_errno) : decode_err,
				  CNI_NEWEST_VERSION);
		rc = version_reply(&d);
		goto out;
	}
	rc = cni_env_check(d.cmd, &inv->env, &msg, &details);
	if (rc != 0) {
		rc = rc < 0 ? CNI_EXIT_OOM : fail(&d, CNI_ERR_INVALID_ENV, msg.p, details.p);
		goto out;
	}
	if (inv->stdin_errno == E2BIG) {
		rc = fail(&d, CNI_ERR_DECODE, "stdin too large", "more than 16 MiB");
		goto out;
	}
	if (inv->stdin_errno == ENOMEM) {
		rc = CNI_EXIT_OOM;
		goto out;
	}
	if (inv->stdin_errno) {
		rc = fail(&d, CNI_ERR_IO, "cannot read stdin", strerror(inv->stdin_errno));
		goto out;
	}
	if (!decoded) {
		rc = fail(&d, CNI_ERR_DECODE, "cannot decode network configuration", decode_err);
		goto out;
	}
	rc = check_conf(&d);
	if (rc == 0)
		rc = forward(&d);
out:
	buf_free(&msg);
	buf_free(&details);
	json_members_free(d.conf, CONF_MEMBERS);
	return rc;
}
