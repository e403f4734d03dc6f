/* json-scan.h: validates a whole input as one JSON object and extracts the top-level members a
 * caller names (as strings, lists of strings, or their exact text). Used by the dispatcher.
 *
 * The rules follow Go's encoding/json as libcni and the reference plugins read a configuration:
 * when a key appears more than once the last one wins; null leaves a string member as it was and
 * makes a list or raw member absent (Go sets a slice or map to nil). Keys match exactly (as
 * JavaScript's JSON.parse in the agent does). Nested objects are validated and skipped: a nested
 * key never counts.
 */
#ifndef SLUICE_CNI_JSON_SCAN_H
#define SLUICE_CNI_JSON_SCAN_H

#include <stddef.h>

#include "buf.h"

enum json_want {
	/* A string, decoded; \u0000 and lone surrogates are rejected (no C string holds them). */
	JSON_WANT_STRING,
	/* An array of strings, each decoded as above and stored NUL-separated in `list`. */
	JSON_WANT_STRING_LIST,
	/* Any value, kept as its exact text (raw_off, raw_len), e.g. a prevResult to pass on. */
	JSON_WANT_RAW,
};

struct json_member {
	const char *key;
	enum json_want want;
	/* Results: */
	int present;	 /* the key appeared with a value (see above for null) */
	struct buf str;	 /* JSON_WANT_STRING */
	struct buf list; /* JSON_WANT_STRING_LIST: the items, each followed by a NUL */
	size_t list_count;
	size_t raw_off, raw_len; /* JSON_WANT_RAW: where the value's text is in the input */
};

/* Scans data[0..len). Returns 0, or -1 with the reason and its offset in err. */
int json_scan_object(const char *data, size_t len, struct json_member *members, size_t n, char *err,
		     size_t errlen);

/* Whether a JSON_WANT_STRING_LIST member holds s. */
int json_list_contains(const struct json_member *m, const char *s);

void json_members_free(struct json_member *members, size_t n);

#endif
