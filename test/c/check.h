/* check.h: the runner of sluice's C unit tests (test/c/NAME-test.c), run by
 * test/unit/cni-plugin.test.ts.
 *
 *   <test> --list      prints one case name per line
 *   <test> NAME...     runs those cases; no NAME runs them all
 *
 * Each case runs in a child process with a 30 s alarm, so a crash or a hang fails that case
 * alone. A failed CHECK prints where and what, and the case goes on to report every mismatch.
 */
#ifndef SLUICE_TEST_CHECK_H
#define SLUICE_TEST_CHECK_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct test_case {
	const char *name;
	void (*fn)(void);
};

static int check_failures;

#define CHECK(cond)                                                                              \
	do {                                                                                     \
		if (!(cond)) {                                                                   \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
			check_failures++;                                                        \
		}                                                                                \
	} while (0)

#define CHECK_INT(got, want)                                                                  \
	do {                                                                                  \
		long long g_ = (long long)(got), w_ = (long long)(want);                      \
		if (g_ != w_) {                                                               \
			fprintf(stderr, "%s:%d: %s is %lld, want %lld\n", __FILE__, __LINE__, \
				#got, g_, w_);                                                \
			check_failures++;                                                     \
		}                                                                             \
	} while (0)

#define CHECK_STR(got, want)                                                                    \
	do {                                                                                    \
		const char *g_ = (got), *w_ = (want);                                           \
		if (!g_ || strcmp(g_, w_) != 0) {                                               \
			fprintf(stderr, "%s:%d: %s is\n  %s\nwant\n  %s\n", __FILE__, __LINE__, \
				#got, g_ ? g_ : "(null)", w_);                                  \
			check_failures++;                                                       \
		}                                                                               \
	} while (0)

#define CHECK_CONTAINS(got, part)                                                             \
	do {                                                                                  \
		const char *g_ = (got), *p_ = (part);                                         \
		if (!g_ || !strstr(g_, p_)) {                                                 \
			fprintf(stderr, "%s:%d: %s is\n  %s\nwhich does not contain\n  %s\n", \
				__FILE__, __LINE__, #got, g_ ? g_ : "(null)", p_);            \
			check_failures++;                                                     \
		}                                                                             \
	} while (0)

static int run_case(const struct test_case *c)
{
	pid_t pid;
	int status;

	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		return 1;
	}
	if (pid == 0) {
		alarm(30);
		c->fn();
		fflush(NULL);
		_exit(check_failures ? 1 : 0);
	}
	if (waitpid(pid, &status, 0) < 0) {
		perror("waitpid");
		return 1;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		printf("ok - %s\n", c->name);
		fflush(stdout);
		return 0;
	}
	if (WIFSIGNALED(status))
		printf("not ok - %s (killed by signal %d%s)\n", c->name, WTERMSIG(status),
		       WTERMSIG(status) == SIGALRM ? ": timed out" : "");
	else
		printf("not ok - %s\n", c->name);
	fflush(stdout);
	return 1;
}

static int test_main(int argc, char **argv, const struct test_case *cases, size_t n)
{
	size_t i;
	int a, failed = 0;

	if (argc == 2 && strcmp(argv[1], "--list") == 0) {
		for (i = 0; i < n; i++)
			printf("%s\n", cases[i].name);
		return 0;
	}
	if (argc == 1) {
		for (i = 0; i < n; i++)
			failed |= run_case(&cases[i]);
		return failed;
	}
	for (a = 1; a < argc; a++) {
		for (i = 0; i < n && strcmp(cases[i].name, argv[a]) != 0; i++)
			;
		if (i == n) {
			fprintf(stderr, "no test case named \"%s\"\n", argv[a]);
			failed = 1;
			continue;
		}
		failed |= run_case(&cases[i]);
	}
	return failed;
}

#endif
