/* kmsctl's rotation commands: bulk rewrap of an application's wrapped DEKs
 * (an SQLite table or JSON lines), emergency-rotate and key inventory
 * (docs/ROTATION.md, docs/KMSCTL.md). */
#ifndef KMSCTL_REWRAP_H
#define KMSCTL_REWRAP_H

#include <stddef.h>
#include <stdint.h>

#include "km.h"

struct cli_http;

/* 1 when argv (of `kmsctl rewrap ...`) asks for the bulk form: it has
 * --sqlite or --jsonl. */
int cli_rewrap_is_bulk(int argc, char **argv);

/* `kmsctl rewrap --sqlite ...|--jsonl ...`; argv[0] is "rewrap".
 * `token_file` is kmsctl's global --token-file (may be NULL). Returns a
 * kmsctl exit code: 0 when every blob is at its key's primary version at
 * the end, 1 when some are not (or failed), 2 usage or local I/O, 3 kmsd
 * unreachable (the checkpoint is kept: run the same command again). */
int cli_rewrap_bulk_main(int argc, char **argv, const char *token_file) KM_WUR;

/* `kmsctl emergency-rotate KEY ...`; argv[0] is "emergency-rotate". */
int cli_emergency_main(int argc, char **argv, const char *token_file) KM_WUR;

/* `kmsctl key inventory ...`; argv[0] is "inventory". */
int cli_inventory_main(int argc, char **argv, const char *token_file) KM_WUR;

/* ---- the rewrap engine, shared by rewrap and emergency-rotate ---- */

enum rw_progress {
	RW_PROGRESS_AUTO = 0,	/* a bar on a terminal, plain lines otherwise */
	RW_PROGRESS_BAR,
	RW_PROGRESS_PLAIN,
	RW_PROGRESS_NONE,
};

struct rw_opts {
	/* SQLite input: the table, the blob column, context columns (names
	 * are the context names), and the key: a column or one name. */
	const char *sqlite, *table, *column, *key_column;
	char **context_columns;
	size_t n_context_columns;
	/* JSON lines input ({ciphertext, context, key, ...}) and where the
	 * rewrapped lines go (default <jsonl>.rewrapped.jsonl). */
	const char *jsonl, *out;
	const char *key;	/* the key of every blob, unless key_column */
	size_t batch;		/* items per request, 1..1000 */
	enum rw_progress progress;
	int verify_only;	/* only count the blobs not at the target */
	const char *label;	/* progress prefix, "rewrap" by default */
};

struct rw_stats {
	uint64_t rows;		/* rows or lines read in this run */
	uint64_t total;		/* rows or lines in the input */
	uint64_t rewrapped;	/* in this run */
	uint64_t skipped;	/* already at the target */
	uint64_t failed;	/* refused by kmsd (in this run) */
	uint64_t changed;	/* SQLite: the row changed meanwhile; left alone */
	uint64_t not_at_target;	/* the final verification count */
	uint64_t under_revoked;	/* of those, under a revoked/destroyed version */
	int resumed;		/* the run continued a checkpoint */
	int interrupted;	/* stopped by SIGINT/SIGTERM after a checkpoint */
	double seconds;
};

/* Runs a bulk rewrap (or only the verification) with client `h` (an app
 * token for the keys). Returns a kmsctl exit code as above; *st is filled
 * either way. */
int rw_run(struct cli_http *h, const struct rw_opts *o, struct rw_stats *st)
    KM_WUR;

/* The rewrap options, shared by rewrap and emergency-rotate: getopt ids
 * and struct option entries (the command adds --key, --token-file ...). */
enum {
	RO_SQLITE = 300, RO_TABLE, RO_COLUMN, RO_CTX, RO_KEYCOL, RO_KEY,
	RO_JSONL, RO_OUT, RO_BATCH, RO_PROGRESS, RO_VERIFY, RO_TOKEN, RO_HELP,
	RO_NEXT		/* the first id free for a command's own options */
};
#define RW_LONG_OPTS \
	{ "sqlite", required_argument, NULL, RO_SQLITE }, \
	{ "table", required_argument, NULL, RO_TABLE }, \
	{ "column", required_argument, NULL, RO_COLUMN }, \
	{ "context-columns", required_argument, NULL, RO_CTX }, \
	{ "key-column", required_argument, NULL, RO_KEYCOL }, \
	{ "jsonl", required_argument, NULL, RO_JSONL }, \
	{ "out", required_argument, NULL, RO_OUT }, \
	{ "batch", required_argument, NULL, RO_BATCH }, \
	{ "progress", required_argument, NULL, RO_PROGRESS }

/* Applies rewrap option `ch` with value `arg` to *o: 0, or -1 after
 * printing why. */
int rw_parse_opt(struct rw_opts *o, int ch, const char *arg);
/* Checks a complete set of options: 0, or -1 after printing why. */
int rw_check_opts(const struct rw_opts *o);
/* Frees what rw_parse_opt allocated (the context column names). */
void rw_opts_free(struct rw_opts *o);

/* Parses "kms:v<N>:" at the start of a blob; 0 when it is not one. */
uint32_t rw_blob_version(const char *blob);

#endif
