/* Unit tests of cni/json-scan.c: what the plugin reads from its configuration, and how it fails. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "json-scan.h"

enum { M_VERSION, M_SOCKET, M_EXCLUDE, M_PREV, M_COUNT };

struct scanned {
	int rc;
	char err[200];
	struct json_member m[M_COUNT];
};

static struct scanned scan(const char *text)
{
	struct scanned s = {
		.m =
			{
				[M_VERSION] = {.key = "cniVersion", .want = JSON_WANT_STRING},
				[M_SOCKET] = {.key = "agentSocket", .want = JSON_WANT_STRING},
				[M_EXCLUDE] = {.key = "excludeNamespaces",
					       .want = JSON_WANT_STRING_LIST},
				[M_PREV] = {.key = "prevResult", .want = JSON_WANT_RAW},
			},
	};

	s.rc = json_scan_object(text, strlen(text), s.m, M_COUNT, s.err, sizeof(s.err));
	return s;
}

static char *raw(const char *text, const struct json_member *m)
{
	return strndup(text + m->raw_off, m->raw_len);
}

static void strings_are_decoded_and_other_members_skipped(void)
{
	const char *text = " {\"name\": \"n\", \"cniVersion\" : \"1.0.0\", \"x\": [1, {\"a\": "
			   "null}, -2.5e3],"
			   " \"agentSocket\": \"/run/s\\u00e9\\/a\\\"b\\n\"}\n";
	struct scanned s = scan(text);

	CHECK_INT(s.rc, 0);
	CHECK_INT(s.m[M_VERSION].present, 1);
	CHECK_STR(s.m[M_VERSION].str.p, "1.0.0");
	CHECK_STR(s.m[M_SOCKET].str.p, "/run/s\xc3\xa9/a\"b\n");
	CHECK_INT(s.m[M_EXCLUDE].present, 0);
	CHECK_INT(s.m[M_PREV].present, 0);
	json_members_free(s.m, M_COUNT);
}

static void the_last_duplicate_wins_and_null_leaves_a_string_as_it_was(void)
{
	const char *text =
		"{\"cniVersion\":\"0.4.0\",\"cniVersion\":\"1.1.0\",\"agentSocket\":\"/a\","
		"\"agentSocket\":null,\"prevResult\":{\"a\":1},\"prevResult\":{ \"b\" : [2] },"
		"\"excludeNamespaces\":[\"x\"],\"excludeNamespaces\":[\"y\",\"z\"]}";
	struct scanned s = scan(text);
	char *prev;

	CHECK_INT(s.rc, 0);
	CHECK_STR(s.m[M_VERSION].str.p, "1.1.0");
	CHECK_STR(s.m[M_SOCKET].str.p, "/a");
	prev = raw(text, &s.m[M_PREV]);
	CHECK_STR(prev, "{ \"b\" : [2] }");
	CHECK_INT(s.m[M_EXCLUDE].list_count, 2);
	CHECK(!json_list_contains(&s.m[M_EXCLUDE], "x"));
	CHECK(json_list_contains(&s.m[M_EXCLUDE], "y"));
	CHECK(json_list_contains(&s.m[M_EXCLUDE], "z"));
	free(prev);
	json_members_free(s.m, M_COUNT);
}

static void null_makes_a_list_or_raw_member_absent(void)
{
	struct scanned s = scan("{\"prevResult\":{\"a\":1},\"excludeNamespaces\":[\"x\"],"
				"\"prevResult\":null,\"excludeNamespaces\":null}");

	CHECK_INT(s.rc, 0);
	CHECK_INT(s.m[M_PREV].present, 0);
	CHECK_INT(s.m[M_EXCLUDE].present, 0);
	CHECK(!json_list_contains(&s.m[M_EXCLUDE], "x"));
	json_members_free(s.m, M_COUNT);
	s = scan("{\"prevResult\":null,\"prevResult\":{}}");
	CHECK_INT(s.rc, 0);
	CHECK_INT(s.m[M_PREV].present, 1);
	json_members_free(s.m, M_COUNT);
}

static void nested_keys_do_not_count(void)
{
	struct scanned s = scan("{\"plugins\":[{\"cniVersion\":\"9\"}],\"o\":{\"prevResult\":{}}}");

	CHECK_INT(s.rc, 0);
	CHECK_INT(s.m[M_VERSION].present, 0);
	CHECK_INT(s.m[M_PREV].present, 0);
	json_members_free(s.m, M_COUNT);
}

static void raw_members_keep_their_exact_text(void)
{
	const char *text = "{\"prevResult\":  {\n  \"ips\": [ {\"address\": \"10.0.0.5/24\"} ],\n"
			   "  \"x\": 1.50, \"s\": \"}\\\"]\" }  , \"k\": 1}";
	struct scanned s = scan(text);
	char *prev = raw(text, &s.m[M_PREV]);

	CHECK_INT(s.rc, 0);
	CHECK_STR(prev, "{\n  \"ips\": [ {\"address\": \"10.0.0.5/24\"} ],\n  \"x\": 1.50, \"s\": "
			"\"}\\\"]\" }");
	free(prev);
	json_members_free(s.m, M_COUNT);
	s = scan("{\"prevResult\": 42}");
	CHECK_INT(s.rc, 0);
	prev = raw("{\"prevResult\": 42}", &s.m[M_PREV]);
	CHECK_STR(prev, "42");
	free(prev);
	json_members_free(s.m, M_COUNT);
}

static void string_lists_take_empty_and_escaped_items(void)
{
	struct scanned s = scan("{\"excludeNamespaces\":[ ], \"excludeNamespaces\": [\"\", "
				"\"kube\\u002dsystem\"]}");

	CHECK_INT(s.rc, 0);
	CHECK_INT(s.m[M_EXCLUDE].present, 1);
	CHECK_INT(s.m[M_EXCLUDE].list_count, 2);
	CHECK(json_list_contains(&s.m[M_EXCLUDE], ""));
	CHECK(json_list_contains(&s.m[M_EXCLUDE], "kube-system"));
	CHECK(!json_list_contains(&s.m[M_EXCLUDE], "kube"));
	json_members_free(s.m, M_COUNT);
}

static void a_member_of_the_wrong_type_is_an_error_naming_it(void)
{
	struct scanned s = scan("{\"cniVersion\": 1}");

	CHECK_INT(s.rc, -1);
	CHECK_STR(s.err, "\"cniVersion\" is not a string at offset 15");
	json_members_free(s.m, M_COUNT);
	s = scan("{\"excludeNamespaces\": \"kube-system\"}");
	CHECK_INT(s.rc, -1);
	CHECK_STR(s.err, "\"excludeNamespaces\" is not a list of strings at offset 22");
	json_members_free(s.m, M_COUNT);
	s = scan("{\"excludeNamespaces\": [\"a\", 1]}");
	CHECK_INT(s.rc, -1);
	CHECK_STR(s.err, "\"excludeNamespaces\" is not a list of strings at offset 22");
	json_members_free(s.m, M_COUNT);
	/* a syntax error inside the mistyped value is reported first */
	s = scan("{\"excludeNamespaces\": [\"a\", tru]}");
	CHECK_INT(s.rc, -1);
	CHECK_STR(s.err, "invalid character 't', expected a value at offset 28");
	json_members_free(s.m, M_COUNT);
}

static void nul_and_lone_surrogates_are_refused_only_where_they_would_be_used(void)
{
	struct scanned s = scan("{\"other\":\"a\\u0000b\\ud800\",\"cniVersion\":\"1.0.0\"}");

	CHECK_INT(s.rc, 0);
	json_members_free(s.m, M_COUNT);
	s = scan("{\"agentSocket\":\"/a\\u0000b\"}");
	CHECK_INT(s.rc, -1);
	CHECK_STR(s.err, "unsupported \\u0000 in agentSocket at offset 18");
	json_members_free(s.m, M_COUNT);
	s = scan("{\"excludeNamespaces\":[\"\\udc00\"]}");
	CHECK_INT(s.rc, -1);
	CHECK_STR(s.err, "unsupported lone surrogate escape in excludeNamespaces at offset 23");
	json_members_free(s.m, M_COUNT);
	s = scan("{\"agentSocket\":\"\\ud83d\\ude00\"}");
	CHECK_INT(s.rc, 0);
	CHECK_STR(s.m[M_SOCKET].str.p, "\xf0\x9f\x98\x80");
	json_members_free(s.m, M_COUNT);
}

static void syntax_errors_say_what_was_expected_and_where(void)
{
	static const struct {
		const char *text, *err;
	} cases[] = {
		{"", "empty input, expected a JSON object at offset 0"},
		{"  ", "unexpected end of input, expected '{' (a JSON object) at offset 2"},
		{"[1,2]", "invalid character '[', expected '{' (a JSON object) at offset 0"},
		{"{\"cniVersion\": ", "unexpected end of input, expected a value at offset 15"},
		{"{\"a\":1} x", "unexpected data after the top-level object at offset 8"},
		{"{\"a\" 1}", "invalid character '1', expected ':' after object key at offset 5"},
		{"{\"a\":1,}", "invalid character '}', expected a string (object key) at offset 7"},
		{"{\"a\":[1 2]}",
		 "invalid character '2', expected ',' or ']' in array at offset 8"},
		{"{\"a\":01}", "invalid character '1', expected ',' or '}' in object at offset 6"},
		{"{\"a\":-}", "invalid character '}', expected a digit at offset 6"},
		{"{\"a\":\"x\ty\"}", "invalid control character 0x09 in string at offset 7"},
		{"{\"a\":\"\\q\"}", "invalid escape '\\q' in string at offset 7"},
		{"{\"a\":\"\\u12\"}", "invalid \\u escape in string at offset 6"},
		{"{\"a\":\"abc", "unterminated string at offset 9"},
		{"{\"a\":\xff}", "invalid byte 0xff, expected a value at offset 5"},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct scanned s = scan(cases[i].text);

		CHECK_INT(s.rc, -1);
		CHECK_STR(s.err, cases[i].err);
		json_members_free(s.m, M_COUNT);
	}
}

static void nesting_is_bounded(void)
{
	size_t depth = 600, i;
	char *text = malloc(depth * 2 + 16);
	struct scanned s;
	char *p = text;

	p += sprintf(p, "{\"a\":");
	for (i = 0; i < depth; i++)
		*p++ = '[';
	for (i = 0; i < depth; i++)
		*p++ = ']';
	strcpy(p, "}");
	s = scan(text);
	CHECK_INT(s.rc, -1);
	CHECK_CONTAINS(s.err, "nesting deeper than 512 levels");
	json_members_free(s.m, M_COUNT);
	free(text);
}

int main(int argc, char **argv)
{
	static const struct test_case cases[] = {
		{"strings are decoded and other members skipped",
		 strings_are_decoded_and_other_members_skipped},
		{"the last duplicate wins and null leaves a string as it was",
		 the_last_duplicate_wins_and_null_leaves_a_string_as_it_was},
		{"null makes a list or raw member absent, as Go sets a slice or map to nil",
		 null_makes_a_list_or_raw_member_absent},
		{"nested keys do not count", nested_keys_do_not_count},
		{"raw members keep their exact text", raw_members_keep_their_exact_text},
		{"string lists take empty and escaped items",
		 string_lists_take_empty_and_escaped_items},
		{"a member of the wrong type is an error naming it",
		 a_member_of_the_wrong_type_is_an_error_naming_it},
		{"NUL and lone surrogates are refused only where they would be used",
		 nul_and_lone_surrogates_are_refused_only_where_they_would_be_used},
		{"syntax errors say what was expected and where",
		 syntax_errors_say_what_was_expected_and_where},
		{"nesting is bounded", nesting_is_bounded},
	};

	return test_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
