/* Helpers shared by the CUnit unit tests: running a suite, scratch
 * directories, whole-file I/O and running a step in a child process so a
 * crash fails one test instead of the whole executable. */
#ifndef UNIT_H
#define UNIT_H

#include <stddef.h>

#include <CUnit/CUnit.h>

struct ut_test {
	const char *name;
	CU_TestFunc fn;
};

/* Registers `tests` (terminated by a NULL name) as suite `suite`, runs them
 * verbosely and returns the process exit code: 0 when every assertion
 * passed, 1 otherwise (also when registration or the suite init failed). */
int ut_main(const char *suite, CU_InitializeFunc init, CU_CleanupFunc clean,
    const struct ut_test *tests);

/* Creates a fresh directory "<TMPDIR or /tmp>/kms-<tag>-XXXXXX" and writes
 * its path to `out`. 0 on success. */
int ut_mkdtemp(const char *tag, char *out, size_t outlen);
/* Removes `dir` and everything under it; NULL or "" is a no-op. */
void ut_rmtree(const char *dir);

/* A suite's scratch directory: ut_scratch_init(tag) turns logging down to
 * errors and creates it with ut_mkdtemp (0 on success, for a CUnit suite
 * init); ut_scratch_clean() removes it (always 0, for a suite cleanup). */
int ut_scratch_init(const char *tag);
int ut_scratch_clean(void);

struct store;
/* Opens a fresh SQLite store "<scratch>/<prefix><n>.db" (n counts the
 * calls); fails the current test fatally if it cannot. */
struct store *ut_store_open(const char *prefix);

/* Reads a whole file; the result (NUL-terminated, *len bytes without the
 * NUL) is owned by the caller. NULL when it cannot be read. */
char *ut_read_file(const char *path, size_t *len);
/* Writes (mode "w") or appends (mode "a") `len` bytes. 0 on success. */
int ut_write_file(const char *path, const char *mode, const void *data,
    size_t len);
/* Size of a file in bytes, -1 when it cannot be stat'ed. */
long long ut_file_size(const char *path);

/* Runs fn(arg) in a forked child and returns its exit status: fn's return
 * value when it returns, 128 + signal number when the child was killed
 * (a crash), -1 when fork failed. */
int ut_in_child(int (*fn)(void *arg), void *arg);

/* Fills `p` with random bytes (fails the current test if it cannot). */
void ut_random(unsigned char *p, size_t n);

/* Hex dump of two byte strings to stderr, marking the first difference;
 * for failure messages of byte-exact comparisons. */
void ut_hexdiff(const char *what, const unsigned char *got, size_t got_len,
    const unsigned char *want, size_t want_len);

/* CU_ASSERT on equal lengths and equal bytes, with a hex diff on failure. */
#define UT_ASSERT_BYTES(got, got_len, want, want_len) do {		\
	int ut_eq_ = (got_len) == (want_len) &&				\
	    ((want_len) == 0 || memcmp((got), (want), (want_len)) == 0);	\
	CU_ASSERT(ut_eq_);						\
	if (!ut_eq_)							\
		ut_hexdiff(#got, (const unsigned char *)(got), (got_len),	\
		    (const unsigned char *)(want), (want_len));		\
} while (0)

#endif
