/* Helpers shared by the libFuzzer targets: a scratch directory (tmpfs when
 * there is one) and a way to keep kmsd's log lines off stderr while an
 * input runs, unless FUZZ_VERBOSE is set (tests/fuzz/run sets it when it
 * replays a crash, so the stack of a crash inside a quiet call is shown). */
#ifndef FUZZ_H
#define FUZZ_H

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fuzz_saved_stderr = -1;

/* Sends fd 2 to /dev/null until fuzz_quiet_end(). */
static inline void
fuzz_quiet_begin(void)
{
	int nul;

	if (getenv("FUZZ_VERBOSE") != NULL || fuzz_saved_stderr >= 0)
		return;
	if ((nul = open("/dev/null", O_WRONLY | O_CLOEXEC)) < 0)
		return;
	fflush(stderr);
	fuzz_saved_stderr = fcntl(2, F_DUPFD_CLOEXEC, 3);
	dup2(nul, 2);
	close(nul);
}

static inline void
fuzz_quiet_end(void)
{
	if (fuzz_saved_stderr < 0)
		return;
	fflush(stderr);
	dup2(fuzz_saved_stderr, 2);
	close(fuzz_saved_stderr);
	fuzz_saved_stderr = -1;
}

/* Prints a broken invariant and aborts, so libFuzzer keeps the input. */
#define fuzz_assert(cond, ...) do {					\
	if (!(cond)) {							\
		fuzz_quiet_end();					\
		fprintf(stderr, "fuzz invariant broken at %s:%d: %s: ",	\
		    __FILE__, __LINE__, #cond);				\
		fprintf(stderr, __VA_ARGS__);				\
		fputc('\n', stderr);					\
		abort();						\
	}								\
} while (0)

/* Makes a fresh directory under $FUZZ_SCRATCH, /dev/shm or /tmp into
 * `out` (PATH_MAX bytes). 0 or -1. */
static inline int
fuzz_scratch_dir(const char *tag, char *out, size_t outlen)
{
	const char *base = getenv("FUZZ_SCRATCH");

	if (base == NULL || *base == '\0')
		base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(out, outlen, "%s/kmsd-fuzz-%s-XXXXXX", base, tag);
	return mkdtemp(out) != NULL ? 0 : -1;
}

static int
fuzz_rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	(void)remove(p);
	return 0;
}

static inline void
fuzz_rm_tree(const char *dir)
{
	if (dir != NULL && dir[0] != '\0')
		(void)nftw(dir, fuzz_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
