/* Helpers shared by the unit tests (see unit.h). */
#include "unit.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "km.h"
#include "log.h"
#include "store.h"

static char scratch[256];

int
ut_main(const char *suite, CU_InitializeFunc init, CU_CleanupFunc clean,
    const struct ut_test *tests)
{
	const struct ut_test *t;
	CU_pSuite s;
	unsigned failed;
	int bad_setup = 0;

	if (CU_initialize_registry() != CUE_SUCCESS) {
		fprintf(stderr, "CUnit: %s\n", CU_get_error_msg());
		return 1;
	}
	if ((s = CU_add_suite(suite, init, clean)) == NULL) {
		fprintf(stderr, "CUnit: %s\n", CU_get_error_msg());
		CU_cleanup_registry();
		return 1;
	}
	for (t = tests; t->name != NULL; t++) {
		if (CU_add_test(s, t->name, t->fn) == NULL) {
			fprintf(stderr, "CUnit: %s\n", CU_get_error_msg());
			CU_cleanup_registry();
			return 1;
		}
	}
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
	/* A suite whose init failed runs no tests: that is a failure too. */
	if (CU_get_run_summary()->nSuitesFailed > 0)
		bad_setup = 1;
	CU_cleanup_registry();
	return failed > 0 || bad_setup ? 1 : 0;
}

int
ut_mkdtemp(const char *tag, char *out, size_t outlen)
{
	const char *base = getenv("TMPDIR");
	int n;

	if (base == NULL || base[0] == '\0')
		base = "/tmp";
	n = snprintf(out, outlen, "%s/kms-%s-XXXXXX", base, tag);
	if (n < 0 || (size_t)n >= outlen)
		return -1;
	return mkdtemp(out) != NULL ? 0 : -1;
}

int
ut_scratch_init(const char *tag)
{
	log_set_level(LOG_ERROR);
	return ut_mkdtemp(tag, scratch, sizeof(scratch));
}

int
ut_scratch_clean(void)
{
	ut_rmtree(scratch);
	return 0;
}

struct store *
ut_store_open(const char *prefix)
{
	static int n;
	struct store *st = NULL;
	char path[sizeof(scratch) + 64];

	snprintf(path, sizeof(path), "%s/%s%d.db", scratch, prefix, ++n);
	CU_ASSERT_EQUAL_FATAL(store_open(path, &st), KM_OK);
	CU_ASSERT_PTR_NOT_NULL_FATAL(st);
	return st;
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

void
ut_rmtree(const char *dir)
{
	if (dir == NULL || dir[0] == '\0')
		return;
	(void)nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

char *
ut_read_file(const char *path, size_t *len)
{
	char *buf = NULL, *n;
	size_t cap = 0, used = 0, got;
	FILE *f;

	*len = 0;
	if ((f = fopen(path, "rb")) == NULL)
		return NULL;
	for (;;) {
		if (cap - used < 4096) {
			cap = cap ? cap * 2 : 8192;
			if ((n = realloc(buf, cap + 1)) == NULL) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = n;
		}
		got = fread(buf + used, 1, cap - used, f);
		used += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		free(buf);
		fclose(f);
		return NULL;
	}
	fclose(f);
	buf[used] = '\0';
	*len = used;
	return buf;
}

int
ut_write_file(const char *path, const char *mode, const void *data,
    size_t len)
{
	FILE *f;
	int r = 0;

	if ((f = fopen(path, mode)) == NULL)
		return -1;
	if (len > 0 && fwrite(data, 1, len, f) != len)
		r = -1;
	if (fclose(f) != 0)
		r = -1;
	return r;
}

long long
ut_file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

int
ut_in_child(int (*fn)(void *arg), void *arg)
{
	pid_t pid;
	int status;

	fflush(NULL);
	if ((pid = fork()) < 0)
		return -1;
	if (pid == 0)
		_exit(fn(arg) & 0x7f);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return -1;
}

void
ut_random(unsigned char *p, size_t n)
{
	CU_ASSERT_EQUAL_FATAL(km_random(p, n), KM_OK);
}

static void
dump(const char *label, const unsigned char *p, size_t n, size_t mark)
{
	size_t i;

	fprintf(stderr, "  %s (%zu bytes):", label, n);
	for (i = 0; i < n; i++) {
		if (i % 16 == 0)
			fprintf(stderr, "\n    %04zx ", i);
		fprintf(stderr, i == mark ? "[%02x]" : " %02x ", p[i]);
	}
	fprintf(stderr, "\n");
}

void
ut_hexdiff(const char *what, const unsigned char *got, size_t got_len,
    const unsigned char *want, size_t want_len)
{
	size_t i, n = got_len < want_len ? got_len : want_len;

	for (i = 0; i < n && got[i] == want[i]; i++)
		;
	fprintf(stderr, "\n%s: first difference at byte %zu\n", what, i);
	dump("got", got, got_len, i);
	dump("want", want, want_len, i);
}
