/* Bulk rewrap against a live kmsd of its own: 200,000 DEKs in an SQLite
 * table are moved to a new key version by `kmsctl rewrap`, which is
 * stopped with SIGTERM, killed with SIGKILL at a random point and killed
 * again right after kmsd answered a batch (kmsctl's test hook), and
 * resumed; the audit log proves every DEK was rewrapped by the token
 * exactly once, the batch in flight at a kill answered again from kmsd's
 * stored answer (a replay record), the final count of blobs not at the
 * primary is 0, and every DEK still unwraps to its bytes. A JSON-lines
 * run is killed and resumed the same way. KMS_TEST_REWRAP_N changes the
 * number of DEKs (at least 3000). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <curl/curl.h>
#include <sqlite3.h>

#include "harness.h"

#define KEY "bulk-1"
#define BATCH "500"
#define DEK_LEN 32

static char *app, *auditor;
static char app_file[4200], db_path[4200], kmsctl[4200];
static size_t n_deks = 200000;
static unsigned char *deks;		/* n_deks * DEK_LEN, the plaintexts */

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Starts kmsctl with `args` (NULL-terminated), stdout and stderr appended
 * to <data dir>/<log>; returns its pid. */
static pid_t
kmsctl_start_env(const char *log, const char *const *args,
    const char *kill_after)
{
	char path[4300];
	const char *argv[40];
	size_t i;
	pid_t pid;
	int fd;

	argv[0] = kmsctl;
	for (i = 0; args[i] != NULL && i < 38; i++)
		argv[i + 1] = args[i];
	argv[i + 1] = NULL;
	snprintf(path, sizeof(path), "%s/%s", ith_data_dir(), log);
	if ((pid = fork()) != 0)
		return pid;
	if ((fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600)) >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
	}
	setenv("KMS_ADDR", ith_base_url(), 1);
	if (kill_after != NULL)
		setenv("KMSCTL_TEST_KILL_AFTER_ANSWER", kill_after, 1);
	execv(kmsctl, (char *const *)argv);
	_exit(127);
}

static pid_t
kmsctl_start(const char *log, const char *const *args)
{
	return kmsctl_start_env(log, args, NULL);
}

static int
kmsctl_wait(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void
print_log(const char *log)
{
	char path[4300];
	unsigned char *t;

	snprintf(path, sizeof(path), "%s/%s", ith_data_dir(), log);
	if ((t = ith_read_file(path, NULL)) != NULL)
		fprintf(stderr, "\n---- %s ----\n%s---- end ----\n", log, (char *)t);
	free(t);
}

static sqlite3 *
db_open(void)
{
	sqlite3 *db = NULL;

	if (sqlite3_open(db_path, &db) != SQLITE_OK) {
		ith_fail("cannot open %s", db_path);
		sqlite3_close(db);
		return NULL;
	}
	sqlite3_busy_timeout(db, 30000);
	return db;
}

static long long
db_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *s = NULL;
	long long v = -1;

	if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

static void
test_start(void)
{
	const char *n = getenv("KMS_TEST_REWRAP_N"), *b = getenv("KMSCTL_BIN");
	FILE *f;

	if (n != NULL && atol(n) > 0)
		n_deks = atol(n) < 3000 ? 3000 : (size_t)atol(n);
	snprintf(kmsctl, sizeof(kmsctl), "%s", b ? b : "tools/kmsctl");
	CU_ASSERT_EQUAL_FATAL(ith_setup("usage_flush_seconds = 1\n"
	    "audit_checkpoint_records = 100000\n"), 0);
	app = ith_token_create("app", "bulk-*", NULL, NULL);
	auditor = ith_token_create("auditor", NULL, NULL, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(app);
	CU_ASSERT_PTR_NOT_NULL_FATAL(auditor);
	snprintf(app_file, sizeof(app_file), "%s/app.token", ith_data_dir());
	CU_ASSERT_PTR_NOT_NULL_FATAL(f = fopen(app_file, "w"));
	fprintf(f, "%s\n", app);
	fclose(f);
	snprintf(db_path, sizeof(db_path), "%s/app.db", ith_data_dir());
	CU_ASSERT_EQUAL_FATAL(ith_key_create(KEY, NULL), 0);
}

/* The application's table: n_deks DEKs wrapped under version 1 with the
 * context {tenant, doc}, written 1000 per batch wrap. */
static void
test_populate(void)
{
	sqlite3 *db = db_open();
	sqlite3_stmt *ins = NULL;
	json_t *body, *batch, *ans, *res;
	double t0 = now_s();
	size_t i, j, m;
	char doc[32], tenant[16];

	CU_ASSERT_PTR_NOT_NULL_FATAL(db);
	CU_ASSERT_PTR_NOT_NULL_FATAL(deks = malloc(n_deks * DEK_LEN));
	ith_random(deks, n_deks * DEK_LEN);
	CU_ASSERT_EQUAL_FATAL(sqlite3_exec(db, "PRAGMA journal_mode = WAL;"
	    "CREATE TABLE deks (id INTEGER PRIMARY KEY, tenant TEXT, doc TEXT,"
	    " wrapped TEXT);", NULL, NULL, NULL), SQLITE_OK);
	CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, "INSERT INTO deks VALUES "
	    "(?1, ?2, ?3, ?4)", -1, &ins, NULL), SQLITE_OK);
	for (i = 0; i < n_deks; i += m) {
		m = n_deks - i < 1000 ? n_deks - i : 1000;
		batch = json_array();
		for (j = 0; j < m; j++) {
			char *b64 = ith_b64(deks + (i + j) * DEK_LEN, DEK_LEN);

			snprintf(tenant, sizeof(tenant), "t%zu", (i + j) % 7);
			snprintf(doc, sizeof(doc), "d%zu", i + j + 1);
			json_array_append_new(batch, json_pack("{s:s, s:{s:s, s:s}}",
			    "plaintext", b64, "context", "tenant", tenant, "doc", doc));
			free(b64);
		}
		body = json_pack("{s:o}", "batch", batch);
		ans = ith_call("POST", "/v1/keys/" KEY "/wrap", app, body, 200, NULL);
		res = json_object_get(ans, "results");
		CU_ASSERT_EQUAL_FATAL(json_array_size(res), m);
		sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
		for (j = 0; j < m; j++) {
			const char *ct = json_string_value(json_object_get(
			    json_array_get(res, j), "ciphertext"));

			CU_ASSERT_PTR_NOT_NULL_FATAL(ct);
			snprintf(tenant, sizeof(tenant), "t%zu", (i + j) % 7);
			snprintf(doc, sizeof(doc), "d%zu", i + j + 1);
			sqlite3_reset(ins);
			sqlite3_bind_int64(ins, 1, (sqlite3_int64)(i + j + 1));
			sqlite3_bind_text(ins, 2, tenant, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(ins, 3, doc, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(ins, 4, ct, -1, SQLITE_TRANSIENT);
			CU_ASSERT_EQUAL_FATAL(sqlite3_step(ins), SQLITE_DONE);
		}
		sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
		json_decref(ans);
	}
	sqlite3_finalize(ins);
	CU_ASSERT_EQUAL(db_int(db, "SELECT count(*) FROM deks WHERE wrapped "
	    "LIKE 'kms:v1:%'"), (long long)n_deks);
	sqlite3_close(db);
	fprintf(stderr, "\n  %zu DEKs wrapped in %.1f s\n", n_deks, now_s() - t0);
	json_decref(ith_call("POST", "/v1/keys/" KEY "/rotate", ith_admin_token(),
	    NULL, 200, NULL));
}

/* Waits until the checkpoint passes `row`; returns it (or -1 when the
 * run ended first). */
static long long
wait_checkpoint(pid_t pid, long long row)
{
	sqlite3 *db = db_open();
	long long last = -1;
	int st;

	for (;;) {
		last = db_int(db, "SELECT last_rowid FROM kmsctl_rewrap_progress");
		if (last >= row)
			break;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			last = -1;
			break;
		}
		ith_sleep_ms(20);
	}
	sqlite3_close(db);
	return last;
}

static long long term_at, kill_at, hook_at; /* checkpoints after each stop */

static void
test_stop_kill_resume(void)
{
	const char *args[] = { "--token-file", app_file, "rewrap", "--sqlite",
		db_path, "--table", "deks", "--column", "wrapped",
		"--context-columns", "tenant,doc", "--key", KEY, "--batch", BATCH,
		"--progress", "plain", NULL };
	sqlite3 *db;
	double t0 = now_s(), t1;
	pid_t pid;
	int rc;

	/* 1. SIGTERM at about 30%: the batch in flight is finished. */
	pid = kmsctl_start("rewrap-1.log", args);
	CU_ASSERT(wait_checkpoint(pid, (long long)n_deks * 3 / 10) > 0);
	kill(pid, SIGTERM);
	rc = kmsctl_wait(pid);
	CU_ASSERT_EQUAL(rc, 1);
	db = db_open();
	term_at = db_int(db, "SELECT last_rowid FROM kmsctl_rewrap_progress");
	/* The checkpoint and the rows are one transaction: exactly the rows
	 * up to it are at version 2. */
	CU_ASSERT_EQUAL(db_int(db, "SELECT count(*) FROM deks WHERE wrapped "
	    "LIKE 'kms:v2:%'"), term_at);
	sqlite3_close(db);

	/* 2. SIGKILL at about 60%: the batch in flight is lost. */
	pid = kmsctl_start("rewrap-2.log", args);
	CU_ASSERT(wait_checkpoint(pid, (long long)n_deks * 6 / 10) > 0);
	kill(pid, SIGKILL);
	rc = kmsctl_wait(pid);
	CU_ASSERT_EQUAL(rc, 128 + SIGKILL);
	db = db_open();
	kill_at = db_int(db, "SELECT last_rowid FROM kmsctl_rewrap_progress");
	CU_ASSERT_EQUAL(db_int(db, "SELECT count(*) FROM deks WHERE wrapped "
	    "LIKE 'kms:v2:%'"), kill_at);
	sqlite3_close(db);

	/* 3. Killed right after kmsd answered its third request, before the
	 * checkpoint: the batch stays in flight, its rows unchanged. */
	pid = kmsctl_start_env("rewrap-3k.log", args, "3");
	rc = kmsctl_wait(pid);
	CU_ASSERT_EQUAL(rc, 128 + SIGKILL);
	db = db_open();
	hook_at = db_int(db, "SELECT last_rowid FROM kmsctl_rewrap_progress");
	CU_ASSERT(hook_at > kill_at);
	CU_ASSERT_EQUAL(db_int(db, "SELECT count(*) FROM kmsctl_rewrap_inflight"),
	    1);
	CU_ASSERT_EQUAL(db_int(db, "SELECT count(*) FROM deks WHERE wrapped "
	    "LIKE 'kms:v2:%'"), hook_at);
	sqlite3_close(db);

	/* 4. Resume to the end; verification count 0, exit 0. */
	t1 = now_s();
	pid = kmsctl_start("rewrap-3.log", args);
	rc = kmsctl_wait(pid);
	CU_ASSERT_EQUAL(rc, 0);
	if (rc != 0)
		print_log("rewrap-3.log");
	fprintf(stderr, "\n  stopped at row %lld (SIGTERM), killed at row %lld "
	    "(SIGKILL) and at row %lld (after an answer); last run %.1f s; whole "
	    "rewrap %.1f s\n", term_at, kill_at, hook_at, now_s() - t1,
	    now_s() - t0);
	db = db_open();
	CU_ASSERT_EQUAL(db_int(db, "SELECT count(*) FROM deks WHERE wrapped "
	    "NOT LIKE 'kms:v2:%'"), 0);
	CU_ASSERT_EQUAL(db_int(db, "SELECT done FROM kmsctl_rewrap_progress"), 1);
	CU_ASSERT_EQUAL(db_int(db, "SELECT count(*) FROM kmsctl_rewrap_failures"),
	    0);
	CU_ASSERT_EQUAL(db_int(db, "SELECT count(*) FROM kmsctl_rewrap_inflight"),
	    0);
	sqlite3_close(db);
	/* A second run finds nothing to do. */
	pid = kmsctl_start("rewrap-4.log", args);
	CU_ASSERT_EQUAL(kmsctl_wait(pid), 0);
}

/* What the audit log says about the rewraps of the DEKs whose doc
 * context is <prefix><k>, k in first..first + n - 1. */
struct audit_count {
	long long total;	/* items rewrapped by the token */
	long long twice;	/* DEKs rewrapped more than once */
	long long missing;	/* DEKs never rewrapped */
	long long replays;	/* replay records (stored answers sent again) */
	long long orphans;	/* replays of no rewrap record */
	long long bad_replays;	/* replays that are not ok or carry items */
};

static void
audit_count(char prefix, size_t first, size_t n, struct audit_count *c)
{
	unsigned char *seen = calloc(n, 1);
	json_t *ans, *recs, *rec, *items, *it, *ids = json_object(), *replayed;
	long long from = 0;
	char path[256];
	const char *rid;
	size_t i, j, k;

	memset(c, 0, sizeof(*c));
	replayed = json_array();
	CU_ASSERT_PTR_NOT_NULL_FATAL(seen);
	for (;;) {
		snprintf(path, sizeof(path), "/v1/audit/records?op=rewrap&key=" KEY
		    "&limit=50&from=%lld", from);
		ans = ith_call("GET", path, auditor, NULL, 200, NULL);
		CU_ASSERT_PTR_NOT_NULL_FATAL(ans);
		recs = json_object_get(ans, "records");
		json_array_foreach(recs, i, rec) {
			rid = json_string_value(json_object_get(rec, "request_id"));
			if (json_is_true(json_object_get(rec, "replay"))) {
				c->replays++;
				json_array_append(replayed, json_object_get(rec,
				    "replay_of"));
				if (strcmp(json_string_value(json_object_get(rec,
				    "outcome")), "ok") != 0 ||
				    json_object_get(rec, "items") != NULL)
					c->bad_replays++;
				continue;
			}
			if (rid != NULL)
				json_object_set_new(ids, rid, json_true());
			items = json_object_get(rec, "items");
			json_array_foreach(items, j, it) {
				const char *d = json_string_value(json_object_get(
				    json_object_get(it, "context"), "doc"));

				if (strcmp(json_string_value(json_object_get(it,
				    "outcome")), "ok") != 0 || d == NULL ||
				    d[0] != prefix)
					continue;
				k = (size_t)atol(d + 1);
				CU_ASSERT_FATAL(k >= first && k < first + n);
				c->total++;
				if (seen[k - first]++ == 1)
					c->twice++;
			}
		}
		if (!json_is_integer(json_object_get(ans, "next"))) {
			json_decref(ans);
			break;
		}
		from = json_integer_value(json_object_get(ans, "next"));
		json_decref(ans);
	}
	for (k = 0; k < n; k++)
		if (seen[k] == 0)
			c->missing++;
	json_array_foreach(replayed, i, it)
		if (!json_is_string(it) || json_object_get(ids,
		    json_string_value(it)) == NULL)
			c->orphans++;
	json_decref(replayed);
	json_decref(ids);
	free(seen);
}

/* Every DEK was rewrapped by the token exactly once, although a run was
 * killed with a batch in flight twice: the resumed runs sent those
 * batches again under their idempotency keys and got kmsd's stored
 * answers, each visible as a replay record of the original request. */
static void
test_audit_proves_once(void)
{
	struct audit_count c;
	double t0 = now_s();

	audit_count('d', 1, n_deks, &c);
	CU_ASSERT_EQUAL(c.missing, 0);
	CU_ASSERT_EQUAL(c.twice, 0);
	CU_ASSERT_EQUAL(c.total, (long long)n_deks);
	/* The kill after an answer always leaves a batch to replay. */
	CU_ASSERT(c.replays >= 1);
	CU_ASSERT_EQUAL(c.orphans, 0);
	CU_ASSERT_EQUAL(c.bad_replays, 0);
	fprintf(stderr, "\n  audit: %lld rewraps of %zu DEKs, none twice; %lld "
	    "replayed answer(s); read in %.1f s\n", c.total, n_deks, c.replays,
	    now_s() - t0);
}

/* Every DEK (or every n-th with KMS_TEST_REWRAP_SAMPLE) unwraps to its
 * bytes under version 2. */
static void
test_unwrap_all(void)
{
	const char *sm = getenv("KMS_TEST_REWRAP_SAMPLE");
	size_t every = sm != NULL && atol(sm) > 0 ? (size_t)atol(sm) : 1;
	sqlite3 *db = db_open();
	sqlite3_stmt *s = NULL;
	json_t *batch = json_array(), *body, *ans, *res;
	long long ids[1000];
	size_t m = 0, checked = 0, bad = 0, i;
	double t0 = now_s();
	int rc;

	CU_ASSERT_PTR_NOT_NULL_FATAL(db);
	CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, "SELECT id, tenant, doc, "
	    "wrapped FROM deks ORDER BY id", -1, &s, NULL), SQLITE_OK);
	for (;;) {
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW && (size_t)sqlite3_column_int64(s, 0) % every != 0)
			continue;
		if (rc == SQLITE_ROW) {
			ids[m++] = sqlite3_column_int64(s, 0);
			json_array_append_new(batch, json_pack("{s:s, s:{s:s, s:s}}",
			    "ciphertext", sqlite3_column_text(s, 3), "context",
			    "tenant", sqlite3_column_text(s, 1), "doc",
			    sqlite3_column_text(s, 2)));
		}
		if (m == 1000 || (rc != SQLITE_ROW && m > 0)) {
			body = json_pack("{s:o}", "batch", batch);
			ans = ith_call("POST", "/v1/keys/" KEY "/unwrap", app, body,
			    200, NULL);
			res = json_object_get(ans, "results");
			for (i = 0; i < m; i++) {
				json_t *r1 = json_array_get(res, i);
				unsigned char *pt = NULL;
				size_t len = 0;

				if (json_integer_value(json_object_get(r1,
				    "key_version")) != 2 || ith_unb64(json_string_value(
				    json_object_get(r1, "plaintext")), &pt, &len) != 0 ||
				    len != DEK_LEN || memcmp(pt, deks + (ids[i] - 1) *
				    DEK_LEN, DEK_LEN) != 0)
					bad++;
				free(pt);
			}
			checked += m;
			m = 0;
			json_decref(ans);
			batch = json_array();
		}
		if (rc != SQLITE_ROW)
			break;
	}
	json_decref(batch);
	sqlite3_finalize(s);
	sqlite3_close(db);
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT(checked >= 2000 || checked == n_deks);
	fprintf(stderr, "\n  %zu DEKs unwrapped under version 2 (%zu wrong) in "
	    "%.1f s\n", checked, bad, now_s() - t0);
}

/* JSON lines: 3000 lines under version 2 (and 10 already at version 3)
 * are rewrapped with small batches, killed, resumed; other members of
 * each line are kept. */
static void
test_jsonl(void)
{
	char in[4300], out[4400], prog[4500];
	const char *args[] = { "--token-file", app_file, "rewrap", "--jsonl", in,
		"--key", KEY, "--batch", "20", "--progress", "plain", NULL };
	size_t n = 3000, i, lines = 0, at3 = 0, bad = 0;
	json_t *batch = json_array(), *ans, *res, *j, *pj;
	struct audit_count c;
	unsigned char *text;
	char *line, *save = NULL;
	FILE *f;
	pid_t pid;
	int rc;

	snprintf(in, sizeof(in), "%s/deks.jsonl", ith_data_dir());
	snprintf(out, sizeof(out), "%s.rewrapped.jsonl", in);
	snprintf(prog, sizeof(prog), "%s.progress", out);
	for (i = 0; i < n; i++) {
		char *b64 = ith_b64(deks + i * DEK_LEN, DEK_LEN), doc[32];

		snprintf(doc, sizeof(doc), "j%zu", i);
		json_array_append_new(batch, json_pack("{s:s, s:{s:s}}", "plaintext",
		    b64, "context", "doc", doc));
		free(b64);
		if (json_array_size(batch) == 1000) {
			ans = ith_call("POST", "/v1/keys/" KEY "/wrap", app,
			    json_pack("{s:o}", "batch", batch), 200, NULL);
			res = json_object_get(ans, "results");
			CU_ASSERT_PTR_NOT_NULL_FATAL(f = fopen(in, i < 1000 ? "w" : "a"));
			json_array_foreach(res, lines, j)
				fprintf(f, "{\"id\":%zu,\"ciphertext\":\"%s\",\"context\":"
				    "{\"doc\":\"j%zu\"}}\n", i - 999 + lines,
				    json_string_value(json_object_get(j, "ciphertext")),
				    i - 999 + lines);
			fclose(f);
			json_decref(ans);
			batch = json_array();
		}
	}
	json_decref(batch);
	json_decref(ith_call("POST", "/v1/keys/" KEY "/rotate", ith_admin_token(),
	    NULL, 200, NULL));
	/* Killed right after the 50th answer, before its checkpoint. */
	pid = kmsctl_start_env("jsonl-1.log", args, "50");
	CU_ASSERT_EQUAL(kmsctl_wait(pid), 128 + SIGKILL);
	pj = json_load_file(prog, 0, NULL);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(pj, "lines")), 980);
	CU_ASSERT(json_is_object(json_object_get(pj, "inflight")));
	json_decref(pj);
	pid = kmsctl_start("jsonl-2.log", args);
	rc = kmsctl_wait(pid);
	CU_ASSERT_EQUAL(rc, 0);
	if (rc != 0)
		print_log("jsonl-2.log");
	CU_ASSERT_PTR_NOT_NULL_FATAL(text = ith_read_file(out, NULL));
	lines = 0;
	for (line = strtok_r((char *)text, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		json_t *o = json_loads(line, 0, NULL);
		const char *ct = json_string_value(json_object_get(o, "ciphertext"));

		if (json_integer_value(json_object_get(o, "id")) != (json_int_t)lines)
			bad++;
		if (ct != NULL && strncmp(ct, "kms:v3:", 7) == 0)
			at3++;
		json_decref(o);
		lines++;
	}
	free(text);
	CU_ASSERT_EQUAL(lines, n);	/* no line lost or doubled by the kill */
	CU_ASSERT_EQUAL(at3, n);
	CU_ASSERT_EQUAL(bad, 0);
	pj = json_load_file(prog, 0, NULL);
	CU_ASSERT(json_is_true(json_object_get(pj, "done")));
	CU_ASSERT_PTR_NULL(json_object_get(pj, "inflight"));
	json_decref(pj);
	audit_count('j', 0, n, &c);
	CU_ASSERT_EQUAL(c.missing, 0);
	CU_ASSERT_EQUAL(c.twice, 0);
	CU_ASSERT_EQUAL(c.total, (long long)n);
	CU_ASSERT_EQUAL(c.orphans, 0);
}

static int
suite_clean(void)
{
	free(app);
	free(auditor);
	free(deks);
	ith_teardown();
	return 0;
}

static const struct ith_test tests[] = {
	{ "start kmsd", test_start },
	{ "populate the table and rotate", test_populate },
	{ "SIGTERM, SIGKILL, resume: count 0", test_stop_kill_resume },
	{ "audit: every DEK rewrapped exactly once, in-flight batches replayed",
	    test_audit_proves_once },
	{ "every DEK unwraps to its bytes", test_unwrap_all },
	{ "JSON lines: kill and resume", test_jsonl },
	{ NULL, NULL },
};

int
main(void)
{
	return ith_suite_main("rewrap", suite_clean, tests);
}
