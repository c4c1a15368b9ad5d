/* Benchmark of kmsctl rewrap: DEKs/s by batch size against a live kmsd
 * (a temporary SoftHSM token, like the integration suites). Not a test:
 * tests/bench/run rewrap prints the table.
 *
 *   rewrap_bench [N]      N DEKs (default 20000)
 *
 * KMSD_BIN and KMSCTL_BIN name the binaries. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <curl/curl.h>
#include <sqlite3.h>

#include "harness.h"

#define KEY "bench-1"

static size_t n_deks = 20000;

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
run_kmsctl(const char *kmsctl, const char *const *args)
{
	const char *argv[32];
	size_t i;
	pid_t pid;
	int st, fd;

	argv[0] = kmsctl;
	for (i = 0; args[i] != NULL && i < 30; i++)
		argv[i + 1] = args[i];
	argv[i + 1] = NULL;
	if ((pid = fork()) == 0) {
		if ((fd = open("/dev/null", O_WRONLY)) >= 0)
			dup2(fd, 2);
		setenv("KMS_ADDR", ith_base_url(), 1);
		execv(kmsctl, (char *const *)argv);
		_exit(127);
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void
bench(void)
{
	static const char *const batches[] = { "1", "10", "50", "100", "250",
		"500", "1000", NULL };
	const char *b = getenv("KMSCTL_BIN");
	char kmsctl[4200], db_path[4300], tok_path[4300], sql[256];
	unsigned char dek[32];
	sqlite3 *db = NULL;
	sqlite3_stmt *ins = NULL;
	json_t *batch, *ans, *res;
	char *app, *b64;
	size_t i, j, m;
	double t;
	FILE *f;
	int rc;

	snprintf(kmsctl, sizeof(kmsctl), "%s", b ? b : "tools/kmsctl");
	CU_ASSERT_EQUAL_FATAL(ith_setup("usage_flush_seconds = 5\n"), 0);
	CU_ASSERT_EQUAL_FATAL(ith_key_create(KEY, NULL), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(app = ith_token_create("app", "bench-*",
	    NULL, NULL));
	snprintf(tok_path, sizeof(tok_path), "%s/app.token", ith_data_dir());
	CU_ASSERT_PTR_NOT_NULL_FATAL(f = fopen(tok_path, "w"));
	fprintf(f, "%s\n", app);
	fclose(f);
	snprintf(db_path, sizeof(db_path), "%s/bench.db", ith_data_dir());
	CU_ASSERT_EQUAL_FATAL(sqlite3_open(db_path, &db), SQLITE_OK);
	sqlite3_exec(db, "PRAGMA journal_mode = WAL; CREATE TABLE deks (id "
	    "INTEGER PRIMARY KEY, doc TEXT, wrapped TEXT)", NULL, NULL, NULL);
	sqlite3_prepare_v2(db, "INSERT INTO deks VALUES (?1, ?2, ?3)", -1, &ins,
	    NULL);
	t = now_s();
	for (i = 0; i < n_deks; i += m) {
		m = n_deks - i < 1000 ? n_deks - i : 1000;
		batch = json_array();
		for (j = 0; j < m; j++) {
			char doc[32];

			ith_random(dek, sizeof(dek));
			b64 = ith_b64(dek, sizeof(dek));
			snprintf(doc, sizeof(doc), "d%zu", i + j);
			json_array_append_new(batch, json_pack("{s:s, s:{s:s}}",
			    "plaintext", b64, "context", "doc", doc));
			free(b64);
		}
		ans = ith_call("POST", "/v1/keys/" KEY "/wrap", app,
		    json_pack("{s:o}", "batch", batch), 200, NULL);
		res = json_object_get(ans, "results");
		sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
		for (j = 0; j < m; j++) {
			char doc[32];

			snprintf(doc, sizeof(doc), "d%zu", i + j);
			sqlite3_reset(ins);
			sqlite3_bind_int64(ins, 1, (sqlite3_int64)(i + j + 1));
			sqlite3_bind_text(ins, 2, doc, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(ins, 3, json_string_value(json_object_get(
			    json_array_get(res, j), "ciphertext")), -1, SQLITE_TRANSIENT);
			sqlite3_step(ins);
		}
		sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
		json_decref(ans);
	}
	sqlite3_finalize(ins);
	printf("%zu DEKs wrapped (batch wrap of 1000) in %.1f s: %.0f DEKs/s\n\n",
	    n_deks, now_s() - t, (double)n_deks / (now_s() - t));
	printf("| batch | DEKs | requests | median s (3 runs) | DEKs/s |\n"
	    "|---:|---:|---:|---:|---:|\n");
	for (i = 0; batches[i] != NULL; i++) {
		const char *args[] = { "--token-file", tok_path, "rewrap",
			"--sqlite", db_path, "--table", "deks", "--column", "wrapped",
			"--context-columns", "doc", "--key", KEY, "--batch", batches[i],
			"--progress", "none", NULL };
		size_t n = atoi(batches[i]) < 10 ? n_deks / 10 : n_deks;
		double runs[3], x;
		int k, bad = 0;

		/* Batches of 1 run on a tenth of the table. */
		if (n < n_deks) {
			snprintf(sql, sizeof(sql), "CREATE TABLE part AS "
			    "SELECT * FROM deks WHERE id <= %zu", n);
			sqlite3_exec(db, "DROP TABLE IF EXISTS part", NULL, NULL, NULL);
			sqlite3_exec(db, sql, NULL, NULL, NULL);
			args[6] = "part";
		}
		for (k = 0; k < 3; k++) {
			/* A fresh version to move every DEK to. */
			json_decref(ith_call("POST", "/v1/keys/" KEY "/rotate",
			    ith_admin_token(), NULL, 200, NULL));
			sqlite3_exec(db, "DELETE FROM kmsctl_rewrap_progress", NULL,
			    NULL, NULL);
			t = now_s();
			rc = run_kmsctl(kmsctl, args);
			runs[k] = now_s() - t;
			bad |= rc != 0;
		}
		/* The median of three. */
		if (runs[0] > runs[1]) { x = runs[0]; runs[0] = runs[1]; runs[1] = x; }
		if (runs[1] > runs[2]) { x = runs[1]; runs[1] = runs[2]; runs[2] = x; }
		if (runs[0] > runs[1]) { x = runs[0]; runs[0] = runs[1]; runs[1] = x; }
		printf("| %s | %zu | %zu | %.2f | %.0f |%s\n", batches[i], n,
		    (n + (size_t)atoi(batches[i]) - 1) / (size_t)atoi(batches[i]),
		    runs[1], (double)n / runs[1], bad ? " (failed)" : "");
		fflush(stdout);
	}
	sqlite3_close(db);
	free(app);
	ith_teardown();
}

int
main(int argc, char **argv)
{
	static const struct ith_test tests[] = {
		{ "rewrap throughput by batch size", bench },
		{ NULL, NULL },
	};

	if (argc > 1 && atol(argv[1]) > 0)
		n_deks = (size_t)atol(argv[1]);
	/* A failed row says so in the table; the exit status stays 0. */
	return ith_bench_main("rewrap bench", tests) == 2 ? 2 : 0;
}
