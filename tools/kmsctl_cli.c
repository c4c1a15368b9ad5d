/* kmsctl's command-line plumbing: options, usage errors, help text and the
 * local files a subcommand reads or writes. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "km.h"
#include "kmsctl_cli.h"
#include "kmsctl_http.h"

int
cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fputs("kmsctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'kmsctl %s--help'.\n", cmd);
	return CLI_USAGE;
}

/* After cli_next_opt() has printed what was wrong. */
int
cli_usage_hint(const char *cmd)
{
	fprintf(stderr, "Try 'kmsctl %s--help'.\n", cmd);
	return CLI_USAGE;
}

int
cli_print_help(const char *text)
{
	if (fputs(text, stdout) == EOF || fflush(stdout) == EOF)
		return CLI_USAGE;
	return CLI_OK;
}

void
cli_option_error(const char *opt, int needs_value)
{
	if (needs_value)
		fprintf(stderr, "kmsctl: option '%s' needs a value\n", opt);
	else
		fprintf(stderr, "kmsctl: unknown option '%s'\n", opt);
}

/* getopt_long with the error text ours: returns the option, '?' after
 * printing a usage error. */
int
cli_next_opt(int argc, char **argv, const struct option *opts)
{
	char shortopt[3] = { '-', '\0', '\0' };
	int c;

	opterr = 0;
	c = getopt_long(argc, argv, ":", opts, NULL);
	if (c == '?') {
		/* A short option: optopt is the letter; a long one: 0. */
		if (optopt > 0 && optopt < 256 &&
		    strncmp(argv[optind - 1], "--", 2) != 0) {
			shortopt[1] = (char)optopt;
			cli_option_error(shortopt, 0);
		} else
			cli_option_error(argv[optind - 1], 0);
	} else if (c == ':') {
		cli_option_error(argv[optind - 1], 1);
		c = '?';
	}
	return c;
}

int
cli_next_opt_hint(int argc, char **argv, const struct option *opts,
    const char *cmd)
{
	int c = cli_next_opt(argc, argv, opts);

	if (c == '?')
		(void)cli_usage_hint(cmd);
	return c;
}

/* Reads `path` ("-" or NULL: stdin) whole into `b` (whose limit is the
 * largest accepted size plus one). */
int
cli_read_input(const char *path, size_t max, struct km_buf *b)
{
	int fd = STDIN_FILENO, r = CLI_USAGE;
	const char *name = "standard input";
	ssize_t n;

	if (path != NULL && strcmp(path, "-") != 0) {
		name = path;
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
			fprintf(stderr, "kmsctl: cannot open %s: %s\n", path,
			    strerror(errno));
			return CLI_USAGE;
		}
	}
	for (;;) {
		size_t room = max + 1 - b->len;

		if (room == 0) {
			fprintf(stderr, "kmsctl: %s is larger than %zu bytes\n",
			    name, max);
			goto out;
		}
		if (room > 4096)
			room = 4096;
		if (km_buf_reserve(b, room) != KM_OK) {
			fprintf(stderr, "kmsctl: out of memory\n");
			goto out;
		}
		n = read(fd, b->data + b->len, room);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "kmsctl: reading %s: %s\n", name,
			    strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		b->len += (size_t)n;
	}
	if (km_buf_reserve(b, 0) == KM_OK && b->data != NULL)
		b->data[b->len] = '\0';
	r = CLI_OK;
out:
	if (fd != STDIN_FILENO)
		close(fd);
	return r;
}

static int
write_all(int fd, const unsigned char *p, size_t len)
{
	ssize_t n;

	while (len > 0) {
		if ((n = write(fd, p, len)) < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Writes `p` to `path` ("-" or NULL: stdout). A `secret` file is created
 * with mode 0600, and an existing one is set to 0600 before it is written. */
int
cli_write_output(const char *path, const void *p, size_t len, int secret)
{
	int fd, r = CLI_USAGE;

	if (path == NULL || strcmp(path, "-") == 0) {
		if (fflush(stdout) == EOF || write_all(STDOUT_FILENO, p, len) != 0) {
			fprintf(stderr, "kmsctl: writing standard output: %s\n",
			    strerror(errno));
			return CLI_USAGE;
		}
		return CLI_OK;
	}
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    secret ? 0600 : 0666)) < 0) {
		fprintf(stderr, "kmsctl: cannot create %s: %s\n", path,
		    strerror(errno));
		return CLI_USAGE;
	}
	if (secret && fchmod(fd, 0600) != 0) {
		fprintf(stderr, "kmsctl: chmod 0600 %s: %s\n", path, strerror(errno));
		goto out;
	}
	if (write_all(fd, p, len) != 0) {
		fprintf(stderr, "kmsctl: writing %s: %s\n", path, strerror(errno));
		goto out;
	}
	r = CLI_OK;
out:
	if (close(fd) != 0 && r == CLI_OK) {
		fprintf(stderr, "kmsctl: writing %s: %s\n", path, strerror(errno));
		r = CLI_USAGE;
	}
	return r;
}
