/* kmsctl's command-line plumbing shared by every subcommand: option
 * parsing with kmsctl's own messages, usage errors and help, and reading
 * and writing the local files named on the command line. */
#ifndef KMSCTL_CLI_H
#define KMSCTL_CLI_H

#include <getopt.h>
#include <stddef.h>

#include "km.h"

/* Prints "kmsctl: <message>" and a hint to run `kmsctl <cmd>--help`
 * (`cmd` is "" or the subcommand words followed by one space, e.g.
 * "key create "). Returns CLI_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The hint alone, after cli_next_opt() has printed what was wrong; `cmd`
 * as for cli_usage_error(). Returns CLI_USAGE. */
int cli_usage_hint(const char *cmd);

/* Writes `text` to stdout and flushes it. Returns CLI_OK, or CLI_USAGE when
 * stdout could not be written. */
int cli_print_help(const char *text) KM_WUR;

/* Prints kmsctl's one wording of a bad option `opt`: "option '...' needs
 * a value" when `needs_value`, else "unknown option '...'". */
void cli_option_error(const char *opt, int needs_value);

/* getopt_long() (with getopt's own messages off) over `opts`. Returns the
 * option, -1 after the last one, or '?' after printing to stderr which
 * option was unknown or lacked its value (the caller adds the hint). */
int cli_next_opt(int argc, char **argv, const struct option *opts);

/* cli_next_opt() that adds the hint for `cmd` (as for cli_usage_error())
 * after a bad option. */
int cli_next_opt_hint(int argc, char **argv, const struct option *opts,
    const char *cmd);

/* Reads `path` ("-" or NULL: stdin) whole into `b`, whose limit must be at
 * least `max` + 1; more than `max` bytes is refused. The bytes go straight
 * into `b` (no other copy is left behind) and are NUL-terminated.
 * Returns CLI_OK, or CLI_USAGE after printing why. */
int cli_read_input(const char *path, size_t max, struct km_buf *b) KM_WUR;

/* Writes `len` bytes at `p` to `path` ("-" or NULL: stdout). A `secret`
 * file is created with mode 0600, and an existing one is set to 0600
 * before it is written. Returns CLI_OK, or CLI_USAGE after printing why. */
int cli_write_output(const char *path, const void *p, size_t len, int secret)
    KM_WUR;

#endif
