/* cni-spec.h: what the CNI specification (1.1, SPEC.md) fixes and sluice-cni needs: error codes,
 * the versions the plugin speaks, the commands and the environment each one requires.
 * Mirrored in TypeScript by src/cni/spec.ts.
 */
#ifndef SLUICE_CNI_SPEC_H
#define SLUICE_CNI_SPEC_H

#include "buf.h"

/* Error codes (SPEC.md "Error codes"). */
#define CNI_ERR_INCOMPATIBLE_VERSION 1
#define CNI_ERR_INVALID_ENV	     4
#define CNI_ERR_IO		     5
#define CNI_ERR_DECODE		     6
#define CNI_ERR_INVALID_CONFIG	     7
#define CNI_ERR_TRY_LATER	     11
#define CNI_ERR_NOT_AVAILABLE	     50

/* The version answers are given in when the caller's is not known. */
#define CNI_NEWEST_VERSION "1.1.0"

enum cni_command { CMD_ADD, CMD_DEL, CMD_CHECK, CMD_VERSION, CMD_STATUS, CMD_GC, CMD_UNKNOWN };

/* The environment a runtime passes; NULL where a variable is unset. */
struct cni_env {
	const char *command;	  /* CNI_COMMAND */
	const char *container_id; /* CNI_CONTAINERID */
	const char *netns;	  /* CNI_NETNS */
	const char *ifname;	  /* CNI_IFNAME */
	const char *args;	  /* CNI_ARGS */
	const char *path;	  /* CNI_PATH */
};

/* The versions the plugin accepts, oldest first, and the same list as the JSON array VERSION
 * answers, e.g. ["0.3.0",...,"1.1.0"] (test/c/contract-constants.c prints both for the test that
 * compares them with src/cni/spec.ts). */
extern const char *const cni_supported_versions[];
extern const unsigned cni_n_supported_versions;
extern const char cni_supported_versions_json[];

enum cni_command cni_command_of(const char *name);
int cni_version_supported(const char *version);
/* Whether version (a supported one) is min or later. */
int cni_version_at_least(const char *version, const char *min);

/* Checks the variables SPEC.md requires for cmd and the values skel.go validates (container id
 * characters, interface name rules). Returns 0 when they are usable, 1 when not (with the CNI
 * error's msg and details appended), -1 when memory ran out. */
int cni_env_check(enum cni_command cmd, const struct cni_env *env, struct buf *msg,
		  struct buf *details);

/* The value of key in CNI_ARGS ("K=V;K=V", the last occurrence wins, as libcni's LoadArgs
 * applies them in order). Returns 1 with the value in out, 0 when absent, -1 out of memory. */
int cni_args_get(const char *args, const char *key, struct buf *out);

#endif
