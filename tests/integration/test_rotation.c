/* Rotation in operation against a live kmsd of its own: GET /metrics
 * parses (every line, HELP/TYPE before samples) and moves with traffic;
 * metrics_public = false wants a token; the scheduler rotates a due key
 * and raises expiry alerts (GET /v1/alerts, audit, metrics); kmsctl
 * emergency-rotate rotates, rewraps, revokes (signed by an officer) and
 * reports exactly the uses of the exposed version; kmsctl key inventory
 * counts old-version uses; POST /v1/keys/{name}/config and kmsctl key
 * config change a key's schedule and expiry, which the scheduler follows. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
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

static char *app, *app2, *auditor;
static char kmsctl[4200], app_f[4300], aud_f[4300], adm_f[4300];

static void
write_token(char *path, size_t len, const char *name, const char *tok)
{
	FILE *f;

	snprintf(path, len, "%s/%s", ith_data_dir(), name);
	if ((f = fopen(path, "w")) == NULL) {
		ith_fail("cannot write %s", path);
		return;
	}
	fprintf(f, "%s\n", tok);
	fclose(f);
}

/* Runs kmsctl with args (NULL-terminated); stdout+stderr go to
 * <dir>/<log>, whose text is returned in *out (may be NULL; caller
 * frees). Returns the exit status. */
static int
kmsctl_run(const char *log, char **out, const char *const *args)
{
	char path[4300];
	const char *argv[48];
	size_t i;
	pid_t pid;
	int fd, st;

	argv[0] = kmsctl;
	for (i = 0; args[i] != NULL && i < 46; i++)
		argv[i + 1] = args[i];
	argv[i + 1] = NULL;
	snprintf(path, sizeof(path), "%s/%s", ith_data_dir(), log);
	if ((pid = fork()) == 0) {
		if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		setenv("KMS_ADDR", ith_base_url(), 1);
		unsetenv("KMS_TOKEN");
		execv(kmsctl, (char *const *)argv);
		_exit(127);
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	if (out != NULL)
		*out = (char *)ith_read_file(path, NULL);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- metrics ---- */

static char *
scrape(const char *token, long want)
{
	struct ith_headers h;
	char *raw = NULL;
	long st = 0;

	ith_request_raw("GET", "/metrics", token, NULL, 0, NULL, &st, &raw, NULL,
	    NULL, &h);
	ith_check(st == want, "GET /metrics: %ld, expected %ld", st, want);
	if (want == 200)
		ith_check(strncmp(h.content_type, "text/plain; version=0.0.4", 25)
		    == 0, "GET /metrics: Content-Type %s", h.content_type);
	return raw;
}

static double
metric(const char *text, const char *series)
{
	const char *p = text;
	size_t n = strlen(series);

	while (p != NULL && (p = strstr(p, series)) != NULL) {
		if ((p == text || p[-1] == '\n') && p[n] == ' ')
			return strtod(p + n + 1, NULL);
		p += n;
	}
	return NAN;
}

static int
name_char(int c)
{
	return isalnum(c) || c == '_' || c == ':';
}

/* Every line: "# HELP name text", "# TYPE name counter|gauge|histogram"
 * (right after its HELP), or a sample of an announced family with valid
 * labels and a float value. Returns the number of bad lines. */
static int
exposition_errors(const char *text)
{
	char *copy = strdup(text), *line, *save = NULL, fam[200][128];
	size_t nf = 0, i, n;
	int bad = 0, help_pending = 0;

	for (line = strtok_r(copy, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		const char *p = line;
		char *end;

		if (strncmp(line, "# HELP ", 7) == 0) {
			for (n = 0; name_char((unsigned char)line[7 + n]); n++)
				;
			if (n == 0 || line[7 + n] != ' ' || nf == 200)
				goto bad;
			snprintf(fam[nf++], sizeof(fam[0]), "%.*s", (int)n, line + 7);
			help_pending = 1;
			continue;
		}
		if (strncmp(line, "# TYPE ", 7) == 0) {
			n = strlen(fam[nf - 1]);
			if (!help_pending || strncmp(line + 7, fam[nf - 1], n) != 0 ||
			    (strcmp(line + 8 + n, "counter") != 0 &&
			    strcmp(line + 8 + n, "gauge") != 0 &&
			    strcmp(line + 8 + n, "histogram") != 0))
				goto bad;
			help_pending = 0;
			continue;
		}
		if (line[0] == '#' || help_pending)
			goto bad;
		while (name_char((unsigned char)*p))
			p++;
		n = (size_t)(p - line);
		for (i = 0; i < nf; i++) {
			size_t fl = strlen(fam[i]);

			if (strncmp(line, fam[i], fl) == 0 && (n == fl ||
			    (n == fl + 7 && strncmp(line + fl, "_bucket", 7) == 0) ||
			    (n == fl + 4 && strncmp(line + fl, "_sum", 4) == 0) ||
			    (n == fl + 6 && strncmp(line + fl, "_count", 6) == 0)))
				break;
		}
		if (n == 0 || i == nf || isdigit((unsigned char)line[0]))
			goto bad;
		if (*p == '{') {
			for (p++; *p != '}'; ) {
				const char *q = p;

				while (isalnum((unsigned char)*p) || *p == '_')
					p++;
				if (p == q || p[0] != '=' || p[1] != '"')
					goto bad;
				for (p += 2; *p != '"'; p++) {
					if (*p == '\0')
						goto bad;
					if (*p == '\\' && (p[1] == '"' || p[1] == '\\' ||
					    p[1] == 'n'))
						p++;
				}
				p++;
				if (*p == ',')
					p++;
				else if (*p != '}')
					goto bad;
			}
			p++;
		}
		if (*p++ != ' ')
			goto bad;
		if (strcmp(p, "+Inf") == 0 || strcmp(p, "NaN") == 0)
			continue;
		(void)strtod(p, &end);
		if (end == p || *end != '\0')
			goto bad;
		continue;
bad:
		fprintf(stderr, "\n  bad metrics line: %s\n", line);
		bad++;
	}
	free(copy);
	return bad;
}

static void
test_start(void)
{
	const char *b = getenv("KMSCTL_BIN");

	snprintf(kmsctl, sizeof(kmsctl), "%s", b ? b : "tools/kmsctl");
	CU_ASSERT_EQUAL_FATAL(ith_setup("usage_flush_seconds = 1\n"
	    "expiry_check_seconds = 1\nrotation_jitter_seconds = 0\n"), 0);
	app = ith_token_create("app", "*", NULL, NULL);
	app2 = ith_token_create("app", "em-*", NULL, NULL);
	auditor = ith_token_create("auditor", NULL, NULL, NULL);
	CU_ASSERT_FATAL(app != NULL && app2 != NULL && auditor != NULL);
	write_token(app_f, sizeof(app_f), "app.token", app);
	write_token(aud_f, sizeof(aud_f), "auditor.token", auditor);
	snprintf(adm_f, sizeof(adm_f), "%s/admin.token", ith_data_dir());
}

static void
test_metrics(void)
{
	char *a, *b, path[200];
	unsigned char pt[32];
	double w0, w1, i0, i1, r0, r1, k0, k1;

	a = scrape(NULL, 200);
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	CU_ASSERT_EQUAL(exposition_errors(a), 0);
	CU_ASSERT_EQUAL(metric(a, "kmsd_ready"), 1);
	CU_ASSERT(metric(a, "kmsd_hsm_session_pool_size") >= 1);
	w0 = metric(a, "kmsd_http_requests_total{op=\"wrap\",status=\"200\"}");
	i0 = metric(a, "kmsd_crypto_items_total{op=\"wrap\",outcome=\"ok\"}");
	r0 = metric(a, "kmsd_audit_records_total");
	k0 = metric(a, "kmsd_keys");
	CU_ASSERT_EQUAL_FATAL(ith_key_create("met-1", NULL), 0);
	ith_random(pt, sizeof(pt));
	free(ith_wrap("met-1", app, pt, sizeof(pt), NULL, NULL));
	snprintf(path, sizeof(path), "/v1/keys/met-1/wrap");
	json_decref(ith_call("POST", path, app, json_pack("{s:[{s:s},{s:s},"
	    "{s:s}]}", "batch", "plaintext", "AAEC", "plaintext", "AAEC",
	    "plaintext", "!!"), 200, NULL));
	b = scrape(NULL, 200);
	CU_ASSERT_PTR_NOT_NULL_FATAL(b);
	CU_ASSERT_EQUAL(exposition_errors(b), 0);
	w1 = metric(b, "kmsd_http_requests_total{op=\"wrap\",status=\"200\"}");
	i1 = metric(b, "kmsd_crypto_items_total{op=\"wrap\",outcome=\"ok\"}");
	r1 = metric(b, "kmsd_audit_records_total");
	k1 = metric(b, "kmsd_keys");
	/* The series appear with their first request. */
	CU_ASSERT_EQUAL(isnan(w0) ? 0 : w0, w1 - 2);
	CU_ASSERT_EQUAL(isnan(i0) ? 0 : i0, i1 - 3);
	CU_ASSERT_EQUAL(metric(b,
	    "kmsd_crypto_items_total{op=\"wrap\",outcome=\"error\"}"), 1);
	CU_ASSERT_EQUAL(metric(b, "kmsd_http_request_duration_seconds_count"
	    "{op=\"wrap\",status=\"200\"}"), w1);
	CU_ASSERT(r1 >= r0 + 3);
	CU_ASSERT_EQUAL(k1, k0 + 1);
	CU_ASSERT_EQUAL(metric(b,
	    "kmsd_http_requests_total{op=\"key.create\",status=\"201\"}"), 1);
	/* An open ceremony is a pending one. */
	CU_ASSERT_EQUAL(metric(b, "kmsd_ceremonies_pending"), 0);
	json_decref(ith_call("POST", "/v1/ceremonies", ith_admin_token(),
	    json_pack("{s:s, s:{s:s}}", "operation", "quorum.set", "params",
	    "quorum", "3"), 201, NULL));
	free(a);
	a = scrape(NULL, 200);
	CU_ASSERT_EQUAL(metric(a, "kmsd_ceremonies_pending"), 1);
	/* promtool's linter, when it is installed. */
	if (system("command -v promtool >/dev/null 2>&1") == 0) {
		char file[4300], cmd[8800];
		FILE *f;

		snprintf(file, sizeof(file), "%s/metrics.txt", ith_data_dir());
		if ((f = fopen(file, "w")) != NULL) {
			fputs(b, f);
			fclose(f);
		}
		snprintf(cmd, sizeof(cmd), "promtool check metrics < %s", file);
		CU_ASSERT_EQUAL(system(cmd), 0);
	} else {
		fprintf(stderr, "\n  promtool not installed: lint skipped\n");
	}
	free(a);
	free(b);
}

static void
test_metrics_private(void)
{
	char *t;

	setenv("KMS_METRICS_PUBLIC", "false", 1);
	CU_ASSERT_EQUAL_FATAL(ith_restart(), 0);
	free(scrape(NULL, 401));
	free(scrape("kms.0000000000000000.00", 401));
	t = scrape(auditor, 200);
	CU_ASSERT(t != NULL && exposition_errors(t) == 0);
	free(t);
	unsetenv("KMS_METRICS_PUBLIC");
	CU_ASSERT_EQUAL_FATAL(ith_restart(), 0);
	free(scrape(NULL, 200));
}

static json_t *
key_get(const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), "/v1/keys/%s", name);
	return ith_call("GET", path, ith_admin_token(), NULL, 200, NULL);
}

static void
test_scheduler_rotates(void)
{
	json_t *k = NULL, *recs;
	char *m;
	size_t n = 0;
	int i;

	CU_ASSERT_EQUAL_FATAL(ith_key_create("sch-1", json_pack("{s:s}",
	    "rotation_period", "2s")), 0);
	for (i = 0; i < 300 && n < 2; i++) {
		json_decref(k);
		k = key_get("sch-1");
		n = json_array_size(json_object_get(k, "versions"));
		if (n < 2)
			ith_sleep_ms(100);
	}
	CU_ASSERT(n >= 2);
	json_decref(k);
	recs = ith_call("GET", "/v1/audit/records?op=key.rotate&key=sch-1"
	    "&actor=kmsd:scheduler", auditor, NULL, 200, NULL);
	CU_ASSERT(json_array_size(json_object_get(recs, "records")) >= 1);
	json_decref(recs);
	m = scrape(NULL, 200);
	CU_ASSERT(metric(m, "kmsd_scheduler_rotations_total{result=\"ok\"}") >= 1);
	CU_ASSERT(metric(m, "kmsd_key_next_rotation_seconds{key=\"sch-1\"}") <= 2);
	CU_ASSERT(metric(m, "kmsd_scheduler_runs_total") >= 1);
	free(m);
}

/* The alerts of key `key` as "kind/threshold ..." */
static void
alerts_of(const char *key, const char *token, char *out, size_t len)
{
	char path[256];
	json_t *a, *x;
	size_t i, o = 0;

	out[0] = '\0';
	snprintf(path, sizeof(path), "/v1/alerts?key=%s", key);
	a = ith_call("GET", path, token, NULL, 200, NULL);
	json_array_foreach(json_object_get(a, "alerts"), i, x) {
		ith_check(json_is_string(json_object_get(x, "at")) &&
		    json_is_string(json_object_get(x, "expires_at")) &&
		    strcmp(json_string_value(json_object_get(x, "key")), key) == 0,
		    "alert %zu of %s lacks at/expires_at/key", i, key);
		o += (size_t)snprintf(out + o, o < len ? len - o : 0, "%s%s/%s",
		    i ? " " : "", json_string_value(json_object_get(x, "kind")),
		    json_string_value(json_object_get(x, "threshold")));
	}
	json_decref(a);
}

static void
test_expiry_alerts(void)
{
	char exp2d[40], exp6s[40], got[256];
	time_t t = time(NULL);
	struct tm tm;
	json_t *recs;
	char *m;
	int i;

	t += 2 * 86400;
	gmtime_r(&t, &tm);
	strftime(exp2d, sizeof(exp2d), "%Y-%m-%dT%H:%M:%SZ", &tm);
	t = time(NULL) + 6;
	gmtime_r(&t, &tm);
	strftime(exp6s, sizeof(exp6s), "%Y-%m-%dT%H:%M:%SZ", &tm);
	CU_ASSERT_EQUAL_FATAL(ith_key_create("exp-2d", json_pack("{s:s}",
	    "expires_at", exp2d)), 0);
	CU_ASSERT_EQUAL_FATAL(ith_key_create("exp-6s", json_pack("{s:s}",
	    "expires_at", exp6s)), 0);
	for (i = 0; i < 300; i++) {
		alerts_of("exp-6s", auditor, got, sizeof(got));
		if (strstr(got, "expired") != NULL)
			break;
		ith_sleep_ms(100);
	}
	/* 6 s left: the 1d alert, then on expiry the expired one. */
	CU_ASSERT_STRING_EQUAL(got, "expiry/1d expired/0d");
	alerts_of("exp-2d", ith_admin_token(), got, sizeof(got));
	CU_ASSERT_STRING_EQUAL(got, "expiry/7d");
	(void)ith_expect_error("GET", "/v1/alerts", app, NULL, 403, "forbidden");
	recs = ith_call("GET", "/v1/audit/records?op=key.alert&key=exp-6s",
	    auditor, NULL, 200, NULL);
	CU_ASSERT_EQUAL(json_array_size(json_object_get(recs, "records")), 2);
	json_decref(recs);
	m = scrape(NULL, 200);
	CU_ASSERT(metric(m, "kmsd_expiry_alerts_total{threshold=\"0d\"}") >= 1);
	CU_ASSERT(metric(m, "kmsd_expiry_alerts_total{threshold=\"7d\"}") >= 1);
	CU_ASSERT(metric(m, "kmsd_key_expiry_seconds{key=\"exp-6s\"}") <= 0);
	free(m);
}

/* ---- key config ---- */

static json_t *
key_config(const char *key, const char *token, json_t *body, long expect,
    const char *code)
{
	char path[256];

	snprintf(path, sizeof(path), "/v1/keys/%s/config", key);
	return ith_call("POST", path, token, body, expect, code);
}

/* Seconds since the epoch of an RFC 3339 "YYYY-MM-DDTHH:MM:SSZ", or 0. */
static long long
utc_seconds(const char *s)
{
	struct tm tm;
	const char *end;

	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return end != NULL && *end == '\0' ? (long long)timegm(&tm) : 0;
}

static const char *
jstr(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s != NULL ? s : "";
}

/* The API: set, clear, validate, refuse; the audit record. */
static void
test_key_config_api(void)
{
	char exp2d[40];
	time_t t = time(NULL) + 2 * 86400;
	struct tm tm;
	json_t *k, *recs, *rec;
	long long created, next;

	gmtime_r(&t, &tm);
	strftime(exp2d, sizeof(exp2d), "%Y-%m-%dT%H:%M:%SZ", &tm);
	CU_ASSERT_EQUAL_FATAL(ith_key_create("cfg-1", NULL), 0);
	k = key_config("cfg-1", ith_admin_token(), json_pack("{s:s}",
	    "rotation_period", "30d"), 200, NULL);
	CU_ASSERT_STRING_EQUAL(jstr(k, "rotation_period"), "30d");
	CU_ASSERT(json_is_null(json_object_get(k, "expires_at")));
	/* next_rotation_at = the primary's creation + 30 days. */
	created = utc_seconds(jstr(json_array_get(json_object_get(k, "versions"),
	    0), "created_at"));
	next = utc_seconds(jstr(k, "next_rotation_at"));
	CU_ASSERT(created > 0);
	CU_ASSERT_EQUAL(next - created, 30 * 86400);
	json_decref(k);
	/* Absent members stay; expires_at set. */
	k = key_config("cfg-1", ith_admin_token(), json_pack("{s:s}",
	    "expires_at", exp2d), 200, NULL);
	CU_ASSERT_STRING_EQUAL(jstr(k, "rotation_period"), "30d");
	CU_ASSERT_STRING_EQUAL(jstr(k, "expires_at"), exp2d);
	json_decref(k);
	/* null clears either. */
	k = key_config("cfg-1", ith_admin_token(), json_pack("{s:n, s:n}",
	    "rotation_period", "expires_at"), 200, NULL);
	CU_ASSERT(json_is_null(json_object_get(k, "rotation_period")));
	CU_ASSERT(json_is_null(json_object_get(k, "next_rotation_at")));
	CU_ASSERT(json_is_null(json_object_get(k, "expires_at")));
	json_decref(k);
	/* Validated as POST /v1/keys. */
	json_decref(key_config("cfg-1", ith_admin_token(), json_pack("{s:s}",
	    "rotation_period", "soon"), 400, "invalid_request"));
	json_decref(key_config("cfg-1", ith_admin_token(), json_pack("{s:s}",
	    "expires_at", "2001-01-01T00:00:00Z"), 400, "invalid_request"));
	json_decref(key_config("cfg-1", ith_admin_token(), json_pack("{s:i}",
	    "rotation_period", 5), 400, "invalid_request"));
	json_decref(key_config("cfg-1", ith_admin_token(), json_pack("{s:s}",
	    "rotation_periode", "1d"), 400, "invalid_request"));
	json_decref(key_config("cfg-1", ith_admin_token(), json_object(), 400,
	    "invalid_request"));
	json_decref(key_config("cfg-1", app, json_pack("{s:s}",
	    "rotation_period", "1d"), 403, "forbidden"));
	json_decref(key_config("cfg-none", ith_admin_token(), json_pack("{s:s}",
	    "rotation_period", "1d"), 404, "key_not_found"));
	/* One ok record per change, with what it replaced. */
	recs = ith_call("GET", "/v1/audit/records?op=key.config&key=cfg-1",
	    auditor, NULL, 200, NULL);
	CU_ASSERT_EQUAL(json_array_size(json_object_get(recs, "records")), 9);
	rec = json_array_get(json_object_get(recs, "records"), 1);
	CU_ASSERT_STRING_EQUAL(jstr(rec, "outcome"), "ok");
	CU_ASSERT_STRING_EQUAL(jstr(rec, "previous_rotation_period"), "30d");
	CU_ASSERT(json_is_null(json_object_get(rec, "previous_expires_at")));
	CU_ASSERT_STRING_EQUAL(jstr(rec, "expires_at"), exp2d);
	json_decref(recs);
}

/* kmsctl key config, and the scheduler following the new settings: an
 * expiry raises its alert, a period already past rotates the key. */
static void
test_key_config_kmsctl(void)
{
	char exp2d[40], got[256], *out = NULL;
	time_t t = time(NULL) + 2 * 86400;
	struct tm tm;
	json_t *k;
	int i;
	const char *set[] = { "--token-file", adm_f, "key", "config", "cfg-2",
		"--expires-at", exp2d, "--json", NULL };
	const char *clr[] = { "--token-file", adm_f, "key", "config", "cfg-2",
		"--no-expiry", NULL };
	const char *due[] = { "--token-file", adm_f, "key", "config", "cfg-2",
		"--rotation-period", "1s", NULL };
	const char *none[] = { "--token-file", adm_f, "key", "config", "cfg-2",
		NULL };
	const char *off[] = { "--token-file", adm_f, "key", "config", "cfg-2",
		"--no-rotation", NULL };
	const char *both[] = { "--token-file", adm_f, "key", "config", "cfg-2",
		"--expires-at", exp2d, "--no-expiry", NULL };

	gmtime_r(&t, &tm);
	strftime(exp2d, sizeof(exp2d), "%Y-%m-%dT%H:%M:%SZ", &tm);
	CU_ASSERT_EQUAL_FATAL(ith_key_create("cfg-2", NULL), 0);
	CU_ASSERT_EQUAL(kmsctl_run("cfg-1.log", &out, set), 0);
	k = out != NULL ? json_loads(out, 0, NULL) : NULL;
	CU_ASSERT_STRING_EQUAL(jstr(k, "expires_at"), exp2d);
	json_decref(k);
	free(out);
	for (i = 0; i < 300; i++) {
		alerts_of("cfg-2", auditor, got, sizeof(got));
		if (got[0] != '\0')
			break;
		ith_sleep_ms(100);
	}
	CU_ASSERT_STRING_EQUAL(got, "expiry/7d");
	CU_ASSERT_EQUAL(kmsctl_run("cfg-2.log", NULL, clr), 0);
	k = ith_call("GET", "/v1/keys/cfg-2", ith_admin_token(), NULL, 200, NULL);
	CU_ASSERT(json_is_null(json_object_get(k, "expires_at")));
	json_decref(k);
	CU_ASSERT_EQUAL(kmsctl_run("cfg-3.log", NULL, none), 2);
	CU_ASSERT_EQUAL(kmsctl_run("cfg-4.log", NULL, both), 2);
	/* A period of 1 s from a primary older than that: due at once. */
	CU_ASSERT_EQUAL(kmsctl_run("cfg-5.log", NULL, due), 0);
	for (i = 0; i < 300; i++) {
		k = ith_call("GET", "/v1/keys/cfg-2", ith_admin_token(), NULL, 200,
		    NULL);
		if (json_integer_value(json_object_get(k, "primary_version")) >= 2)
			break;
		json_decref(k);
		k = NULL;
		ith_sleep_ms(100);
	}
	CU_ASSERT_PTR_NOT_NULL(k);
	json_decref(k);
	/* Or it would rotate every second for the rest of the suite. */
	CU_ASSERT_EQUAL(kmsctl_run("cfg-6.log", NULL, off), 0);
}

/* ---- emergency-rotate ---- */

struct expect {
	char id[33];
	int uses;	/* items of that request that used the exposed version */
	int seen;
};

static struct expect expected[32];
static size_t n_expected;

/* A request whose X-Request-Id is recorded with `uses` expected uses. */
static json_t *
call_rec(const char *method, const char *path, const char *token,
    json_t *body, long want, int uses)
{
	struct ith_headers h;
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_t *ans = NULL;
	long st = 0;

	json_decref(body);
	ith_request(method, path, token, text, &st, &ans, &h);
	free(text);
	ith_check(st == want, "%s %s: %ld, expected %ld", method, path, st, want);
	if (uses > 0 && n_expected < 32) {
		snprintf(expected[n_expected].id, 33, "%.32s", h.request_id);
		expected[n_expected++].uses = uses;
	}
	return ans;
}

static char *
ct_of(json_t *ans, size_t i)
{
	json_t *r = json_object_get(ans, "results");
	const char *c = json_string_value(json_object_get(r ? json_array_get(r, i) :
	    ans, "ciphertext"));

	return c ? strdup(c) : NULL;
}

/* A table of 20 blobs under `v1` and 20 under `v2` lists (docs d0..d39). */
static void
make_table(const char *db_path, char **v1, char **v2)
{
	sqlite3 *db = NULL;
	char sql[512];
	int i;

	CU_ASSERT_EQUAL_FATAL(sqlite3_open(db_path, &db), SQLITE_OK);
	CU_ASSERT_EQUAL(sqlite3_exec(db, "CREATE TABLE t (id INTEGER PRIMARY KEY,"
	    " doc TEXT, wrapped TEXT)", NULL, NULL, NULL), SQLITE_OK);
	for (i = 0; i < 40; i++) {
		snprintf(sql, sizeof(sql), "INSERT INTO t VALUES (%d, 'd%d', '%s')",
		    i + 1, i, i < 20 ? v1[i] : v2[i - 20]);
		CU_ASSERT_EQUAL(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	}
	sqlite3_close(db);
}

static long long
table_count(const char *db_path, const char *where)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	char sql[256];
	long long n = -1;

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM t WHERE %s", where);
	if (sqlite3_open(db_path, &db) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW)
		n = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return n;
}

/* 20 blobs of key `key` under its primary, contexts {doc: d<base+i>};
 * with `record`, the request counts as 20 expected uses. */
static void
wrap20(const char *key, const char *token, int base, char **out, int record)
{
	json_t *batch = json_array(), *ans;
	char path[256], doc[16];
	int i;

	for (i = 0; i < 20; i++) {
		snprintf(doc, sizeof(doc), "d%d", base + i);
		json_array_append_new(batch, json_pack("{s:s, s:{s:s}}", "plaintext",
		    "AAECAwQFBgc=", "context", "doc", doc));
	}
	snprintf(path, sizeof(path), "/v1/keys/%s/wrap", key);
	ans = call_rec("POST", path, token, json_pack("{s:o}", "batch", batch),
	    200, record ? 20 : 0);
	for (i = 0; i < 20; i++)
		out[i] = ct_of(ans, (size_t)i);
	json_decref(ans);
}

static void
test_emergency(void)
{
	char db_path[4300], report[4300], pem[4300], *out = NULL, *t1, *b1, *b2,
	    *b3, *b4, *v1[20], *v2[20], *unused;
	json_t *ans, *k, *doc, *u;
	size_t i, j, other = 0;
	int rc;

	CU_ASSERT_EQUAL_FATAL(ith_key_create("em-1", NULL), 0);
	CU_ASSERT_EQUAL_FATAL(ith_key_create("em-2", NULL), 0);
	/* Version 1: three blobs and 20 rows. */
	ans = call_rec("POST", "/v1/keys/em-1/wrap", app, json_pack("{s:[{s:s, "
	    "s:{s:s}},{s:s, s:{s:s}},{s:s, s:{s:s}}]}", "batch", "plaintext",
	    "AQID", "context", "doc", "b1", "plaintext", "AQID", "context", "doc",
	    "b2", "plaintext", "AQID", "context", "doc", "b3"), 200, 0);
	b1 = ct_of(ans, 0);
	b2 = ct_of(ans, 1);
	b3 = ct_of(ans, 2);
	json_decref(ans);
	wrap20("em-1", app, 0, v1, 0);
	json_decref(ith_call("POST", "/v1/keys/em-1/rotate", ith_admin_token(),
	    NULL, 200, NULL));
	json_decref(ith_call("POST", "/v1/keys/em-2/rotate", ith_admin_token(),
	    NULL, 200, NULL));
	/* Version 2 (primary, to be exposed): every kind of use. */
	n_expected = 0;
	ans = call_rec("POST", "/v1/keys/em-1/wrap", app, json_pack("{s:s, s:{s:s}}",
	    "plaintext", "AQID", "context", "doc", "b4"), 200, 1);
	b4 = ct_of(ans, 0);
	json_decref(ans);
	json_decref(call_rec("POST", "/v1/keys/em-1/wrap", app2, json_pack(
	    "{s:[{s:s},{s:s},{s:s}]}", "batch", "plaintext", "AQ==", "plaintext",
	    "Ag==", "plaintext", "Aw=="), 200, 3));
	json_decref(call_rec("POST", "/v1/keys/em-1/unwrap", app2, json_pack(
	    "{s:s, s:{s:s}}", "ciphertext", b4, "context", "doc", "b4"), 200, 1));
	/* A refused attempt names the version too. */
	json_decref(call_rec("POST", "/v1/keys/em-1/unwrap", app, json_pack(
	    "{s:s, s:{s:s}}", "ciphertext", b4, "context", "doc", "other"), 400, 1));
	ans = call_rec("POST", "/v1/keys/em-1/rewrap", app, json_pack(
	    "{s:s, s:{s:s}}", "ciphertext", b1, "context", "doc", "b1"), 200, 1);
	json_decref(ans);
	json_decref(call_rec("POST", "/v1/keys/em-1/rewrap", app, json_pack(
	    "{s:[{s:s, s:{s:s}},{s:s, s:{s:s}}]}", "batch", "ciphertext", b2,
	    "context", "doc", "b2", "ciphertext", b3, "context", "doc", "b3"), 200,
	    2));
	json_decref(call_rec("POST", "/v1/keys/em-1/datakey", app, json_pack(
	    "{s:i}", "bits", 128), 200, 1));
	/* Not uses of em-1 v2: version 1, and another key's version 2. */
	json_decref(call_rec("POST", "/v1/keys/em-1/unwrap", app, json_pack(
	    "{s:s, s:{s:s}}", "ciphertext", b1, "context", "doc", "b1"), 200, 0));
	unused = ith_wrap("em-2", app, (const unsigned char *)"abc", 3, NULL, NULL);
	free(unused);
	wrap20("em-1", app, 20, v2, 1);

	snprintf(db_path, sizeof(db_path), "%s/em.db", ith_data_dir());
	snprintf(report, sizeof(report), "%s/exposure.json", ith_data_dir());
	snprintf(pem, sizeof(pem), "%s/officers/alice.pem", ith_data_dir());
	make_table(db_path, v1, v2);
	{
		const char *args[] = { "emergency-rotate", "em-1",
			"--admin-token-file", adm_f, "--officer", "alice",
			"--officer-key", pem, "--auditor-token-file", aud_f,
			"--app-token-file", app_f, "--sqlite", db_path, "--table", "t",
			"--column", "wrapped", "--context-columns", "doc",
			"--rewrap-first", "--report", report, "--progress", "none",
			NULL };

		rc = kmsctl_run("emergency-1.log", &out, args);
	}
	CU_ASSERT_EQUAL(rc, 0);
	if (rc != 0 || getenv("KMS_TEST_VERBOSE"))
		fprintf(stderr, "\n%s\n", out ? out : "");
	CU_ASSERT_PTR_NOT_NULL(out != NULL ? strstr(out, "step 1/4 rotate") : NULL);
	CU_ASSERT_PTR_NOT_NULL(out != NULL ? strstr(out, "step 2/4 rewrap") : NULL);
	CU_ASSERT_PTR_NOT_NULL(out != NULL ? strstr(out, "step 3/4 revoke") : NULL);
	CU_ASSERT_PTR_NOT_NULL(out != NULL ? strstr(out,
	    "step 4/4 exposure report") : NULL);
	free(out);
	/* Version 2 revoked, version 3 primary, every row at version 3. */
	k = key_get("em-1");
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(k, "primary_version")),
	    3);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_array_get(
	    json_object_get(k, "versions"), 1), "state")), "revoked");
	json_decref(k);
	CU_ASSERT_EQUAL(table_count(db_path, "wrapped NOT LIKE 'kms:v3:%'"), 0);
	/* The report: exactly the uses above, plus the emergency's own
	 * rewrap of the 20 rows under version 2. */
	doc = json_load_file(report, 0, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(doc);
	json_array_foreach(json_object_get(doc, "records"), i, u) {
		const char *rid = json_string_value(json_object_get(u, "request_id"));

		for (j = 0; j < n_expected; j++)
			if (strcmp(expected[j].id, rid) == 0) {
				expected[j].seen++;
				break;
			}
		if (j == n_expected) {
			/* Not one of ours: must be the emergency's rewrap. */
			other++;
			ith_check(strcmp(json_string_value(json_object_get(u, "op")),
			    "rewrap") == 0 && json_integer_value(json_object_get(u,
			    "version")) == 2 && json_integer_value(json_object_get(u,
			    "destination_version")) == 3, "unexpected use in the "
			    "report: %s", rid);
		}
	}
	for (j = 0; j < n_expected; j++)
		ith_check(expected[j].seen == expected[j].uses, "request %s: %d "
		    "uses in the report, expected %d", expected[j].id,
		    expected[j].seen, expected[j].uses);
	CU_ASSERT_EQUAL(other, 20);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(doc, "ok_uses")),
	    json_integer_value(json_object_get(doc, "uses")) - 1);
	json_decref(doc);

	/* The default order (DESIGN.md: rotate, revoke, report, rewrap) on a
	 * key with blobs under the exposed version: those can no longer be
	 * rewrapped; the command says so and exits 1. CSV report. */
	for (i = 0; i < 20; i++) {
		free(v1[i]);
		free(v2[i]);
	}
	CU_ASSERT_EQUAL_FATAL(ith_key_create("em-3", NULL), 0);
	wrap20("em-3", app, 0, v1, 0);
	json_decref(ith_call("POST", "/v1/keys/em-3/rotate", ith_admin_token(),
	    NULL, 200, NULL));
	wrap20("em-3", app, 20, v2, 0);
	snprintf(db_path, sizeof(db_path), "%s/em3.db", ith_data_dir());
	snprintf(report, sizeof(report), "%s/exposure3.csv", ith_data_dir());
	make_table(db_path, v1, v2);
	{
		const char *args[] = { "emergency-rotate", "em-3",
			"--admin-token-file", adm_f, "--officer", "bob",
			"--officer-key", pem, "--auditor-token-file", aud_f,
			"--app-token-file", app_f, "--sqlite", db_path, "--table", "t",
			"--column", "wrapped", "--context-columns", "doc",
			"--report", report, "--progress", "none", NULL };
		char bob[4300];

		snprintf(bob, sizeof(bob), "%s/officers/bob.pem", ith_data_dir());
		args[7] = bob;
		rc = kmsctl_run("emergency-3.log", &out, args);
	}
	CU_ASSERT_EQUAL(rc, 1);
	CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "under the revoked version") :
	    NULL);
	CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "step 4/4 rewrap") : NULL);
	free(out);
	CU_ASSERT_EQUAL(table_count(db_path, "wrapped LIKE 'kms:v3:%'"), 20);
	CU_ASSERT_EQUAL(table_count(db_path, "wrapped LIKE 'kms:v2:%'"), 20);
	t1 = (char *)ith_read_file(report, NULL);
	CU_ASSERT_PTR_NOT_NULL_FATAL(t1);
	CU_ASSERT_EQUAL(strncmp(t1, "seq,ts,actor,op,outcome,status,request_id,",
	    42), 0);
	/* The header and the 20 wraps under version 2 (one batch): the
	 * report runs before the rewrap step here. */
	for (i = 0, j = 0; t1[i] != '\0'; i++)
		j += t1[i] == '\n';
	CU_ASSERT_EQUAL(j, 21);
	free(t1);
	for (i = 0; i < 20; i++) {
		free(v1[i]);
		free(v2[i]);
	}
	free(b1);
	free(b2);
	free(b3);
	free(b4);
}

static void
test_inventory(void)
{
	const char *args[] = { "--token-file", adm_f, "key", "inventory", "--json",
		"--auditor-token-file", aud_f, NULL };
	char *out = NULL, *b1, *b2;
	json_t *doc, *k;
	size_t i;
	int rc, found = 0;

	CU_ASSERT_EQUAL_FATAL(ith_key_create("inv-1", NULL), 0);
	b1 = ith_wrap("inv-1", app, (const unsigned char *)"one", 3, NULL, NULL);
	b2 = ith_wrap("inv-1", app, (const unsigned char *)"two", 3, NULL, NULL);
	json_decref(ith_call("POST", "/v1/keys/inv-1/rotate", ith_admin_token(),
	    NULL, 200, NULL));
	(void)ith_unwrap_expect("inv-1", app, b1, NULL,
	    (const unsigned char *)"one", 3, NULL, NULL);
	(void)ith_unwrap_expect("inv-1", app, b2, NULL,
	    (const unsigned char *)"two", 3, NULL, NULL);
	json_decref(ith_call("POST", "/v1/keys/inv-1/rewrap", app, json_pack(
	    "{s:[{s:s},{s:s}]}", "batch", "ciphertext", b1, "ciphertext", b2), 200,
	    NULL));
	free(ith_wrap("inv-1", app, (const unsigned char *)"new", 3, NULL, NULL));
	rc = kmsctl_run("inventory.log", &out, args);
	CU_ASSERT_EQUAL(rc, 0);
	doc = out ? json_loads(out, 0, NULL) : NULL;
	CU_ASSERT_PTR_NOT_NULL(doc);
	json_array_foreach(json_object_get(doc, "keys"), i, k) {
		if (strcmp(json_string_value(json_object_get(k, "name")), "inv-1"))
			continue;
		found = 1;
		CU_ASSERT_EQUAL(json_integer_value(json_object_get(k, "versions")), 2);
		CU_ASSERT_EQUAL(json_integer_value(json_object_get(json_object_get(k,
		    "states"), "active")), 1);
		/* 2 unwraps + 2 rewrap items under version 1 after the rotation;
		 * the wraps (before it, and under version 2) do not count. */
		CU_ASSERT_EQUAL(json_integer_value(json_object_get(k,
		    "non_primary_uses")), 4);
		CU_ASSERT(json_is_string(json_object_get(k,
		    "non_primary_last_used_at")));
	}
	CU_ASSERT(found);
	if (!found || rc != 0)
		fprintf(stderr, "\n%s\n", out ? out : "");
	json_decref(doc);
	free(out);
	free(b1);
	free(b2);
}

static int
suite_clean(void)
{
	free(app);
	free(app2);
	free(auditor);
	ith_teardown();
	return 0;
}

static const struct ith_test tests[] = {
	{ "start kmsd", test_start },
	{ "GET /metrics parses and moves", test_metrics },
	{ "metrics_public = false wants a token", test_metrics_private },
	{ "the scheduler rotates a due key", test_scheduler_rotates },
	{ "expiry alerts: /v1/alerts, audit, metrics", test_expiry_alerts },
	{ "key config: set, clear, validate, audit", test_key_config_api },
	{ "kmsctl key config; the scheduler follows", test_key_config_kmsctl },
	{ "emergency-rotate: report lists exactly the uses", test_emergency },
	{ "key inventory counts old-version uses", test_inventory },
	{ NULL, NULL },
};

int
main(void)
{
	return ith_suite_main("rotation", suite_clean, tests);
}
