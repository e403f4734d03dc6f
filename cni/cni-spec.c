/* cni-spec.c: the CNI specification facts of cni-spec.h. */
#include "cni-spec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char cni_supported_versions_json[] = "[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]";

const char *const cni_supported_versions[] = {"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"};
const unsigned cni_n_supported_versions = sizeof(cni_supported_versions) /
					  sizeof(cni_supported_versions[0]);

static const struct {
	const char *name;
	enum cni_command cmd;
} commands[] = {
	{"ADD", CMD_ADD},	  {"DEL", CMD_DEL},	  {"CHECK", CMD_CHECK},
	{"VERSION", CMD_VERSION}, {"STATUS", CMD_STATUS}, {"GC", CMD_GC},
};

#define BIT(c)		    (1u << (c))
/* The commands that name an attachment (CNI_CONTAINERID, CNI_IFNAME). */
#define ATTACHMENT_COMMANDS (BIT(CMD_ADD) | BIT(CMD_CHECK) | BIT(CMD_DEL))

/* The required environment of each command, as SPEC.md section 2 lists it. skel.go is stricter
 * (it also requires CNI_PATH for ADD, CHECK, DEL and STATUS); sluice-cni never executes another
 * plugin, so it asks only what the specification asks. CNI_NETNS is optional for DEL. */
static const struct {
	const char *name;
	size_t offset;
	unsigned required_by;
} env_rules[] = {
	{"CNI_CONTAINERID", offsetof(struct cni_env, container_id), ATTACHMENT_COMMANDS},
	{"CNI_NETNS", offsetof(struct cni_env, netns), BIT(CMD_ADD) | BIT(CMD_CHECK)},
	{"CNI_IFNAME", offsetof(struct cni_env, ifname), ATTACHMENT_COMMANDS},
	{"CNI_PATH", offsetof(struct cni_env, path), BIT(CMD_GC)},
};

enum cni_command cni_command_of(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(name, commands[i].name) == 0)
			return commands[i].cmd;
	return CMD_UNKNOWN;
}

int cni_version_supported(const char *version)
{
	size_t i;

	for (i = 0; i < cni_n_supported_versions; i++)
		if (strcmp(version, cni_supported_versions[i]) == 0)
			return 1;
	return 0;
}

int cni_version_at_least(const char *version, const char *min)
{
	unsigned long a[3] = {0}, b[3] = {0};
	int i;

	sscanf(version, "%lu.%lu.%lu", &a[0], &a[1], &a[2]);
	sscanf(min, "%lu.%lu.%lu", &b[0], &b[1], &b[2]);
	for (i = 0; i < 3; i++)
		if (a[i] != b[i])
			return a[i] > b[i];
	return 1;
}

static int is_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* skel.go's ValidateContainerID: ^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$ */
static int container_id_valid(const char *id)
{
	const unsigned char *p = (const unsigned char *)id;

	if (!is_alnum(*p))
		return 0;
	for (p++; *p; p++)
		if (!is_alnum(*p) && *p != '_' && *p != '.' && *p != '-')
			return 0;
	return 1;
}

/* skel.go's ValidateInterfaceName (the kernel's dev_valid_name): shorter than IFNAMSIZ (16),
 * not "." or "..", no '/', ':' or whitespace. Returns why not, or NULL. */
static const char *ifname_problem(const char *name)
{
	const char *p;

	if (strlen(name) > 15)
		return "is longer than 15 bytes (the kernel's IFNAMSIZ)";
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return "is . or ..";
	for (p = name; *p; p++)
		if (*p == '/' || *p == ':' || *p == ' ' || (*p >= '\t' && *p <= '\r'))
			return "contains '/', ':' or whitespace";
	return NULL;
}

int cni_env_check(enum cni_command cmd, const struct cni_env *env, struct buf *msg,
		  struct buf *details)
{
	const char *missing[sizeof(env_rules) / sizeof(env_rules[0])];
	size_t i, n = 0;
	const char *why;

	for (i = 0; i < sizeof(env_rules) / sizeof(env_rules[0]); i++) {
		const char *v = *(const char *const *)((const char *)env + env_rules[i].offset);

		if ((env_rules[i].required_by & BIT(cmd)) && (!v || !*v))
			missing[n++] = env_rules[i].name;
	}
	if (n > 0) {
		if (buf_adds(msg, n == 1 ? "required environment variable "
					 : "required environment variables ") < 0)
			return -1;
		for (i = 0; i < n; i++)
			if ((i && buf_adds(msg, ", ") < 0) || buf_adds(msg, missing[i]) < 0)
				return -1;
		return buf_adds(msg, n == 1 ? " is missing" : " are missing") < 0 ? -1 : 1;
	}
	if (!(ATTACHMENT_COMMANDS & BIT(cmd)))
		return 0;
	if (!container_id_valid(env->container_id)) {
		if (buf_adds(msg, "invalid characters in CNI_CONTAINERID") < 0 ||
		    buf_add_json_cstr(details, env->container_id) < 0 ||
		    buf_adds(details, " does not match [a-zA-Z0-9][a-zA-Z0-9_.-]*") < 0)
			return -1;
		return 1;
	}
	why = ifname_problem(env->ifname);
	if (why) {
		if (buf_adds(msg, "invalid interface name in CNI_IFNAME") < 0 ||
		    buf_add_json_cstr(details, env->ifname) < 0 || buf_adds(details, " ") < 0 ||
		    buf_adds(details, why) < 0)
			return -1;
		return 1;
	}
	return 0;
}

int cni_args_get(const char *args, const char *key, struct buf *out)
{
	size_t klen = strlen(key);
	const char *p = args;
	int found = 0;

	if (!args)
		return 0;
	while (*p) {
		const char *end = strchr(p, ';');
		size_t n = end ? (size_t)(end - p) : strlen(p);

		if (n > klen && memcmp(p, key, klen) == 0 && p[klen] == '=') {
			out->len = 0;
			if (buf_add(out, p + klen + 1, n - klen - 1) < 0)
				return -1;
			found = 1;
		}
		p += n;
		if (*p == ';')
			p++;
	}
	return found;
}
