/* kmsctl rewrap, bulk form: moves an application's wrapped DEKs to their
 * key's primary version through the batch rewrap API, one checkpoint per
 * batch, resumable after a kill, ending with a verification count. */
#include "kmsctl_rewrap.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "kmsctl_cli.h"
#include "kmsctl_http.h"

#define RW_MAX_BATCH		1000	/* DESIGN.md section 4 */
#define RW_DEFAULT_BATCH	500
#define RW_MAX_LINE		(1u << 20)
#define RW_RETRIES		6	/* transport failures before giving up */
#define RW_PLAIN_EVERY_S	5.0
#define RW_PROGRESS_TABLE	"kmsctl_rewrap_progress"
#define RW_FAILURE_TABLE	"kmsctl_rewrap_failures"
#define RW_INFLIGHT_TABLE	"kmsctl_rewrap_inflight"

static volatile sig_atomic_t rw_stop;

static void
on_stop(int sig)
{
	(void)sig;
	rw_stop = 1;
}

static double
mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint32_t
rw_blob_version(const char *blob)
{
	unsigned long v = 0;
	const char *p;

	if (blob == NULL || strncmp(blob, "kms:v", 5) != 0)
		return 0;
	for (p = blob + 5; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (unsigned long)(*p - '0');
		if (v > UINT32_MAX)
			return 0;
	}
	if (p == blob + 5 || *p != ':')
		return 0;
	return (uint32_t)v;
}

/* ---- keys: primary version and version states, fetched once ---- */

struct rw_key {
	char *name;
	uint32_t primary;		/* 0: none */
	uint32_t *dead;			/* versions revoked or destroyed */
	size_t n_dead;
	char code[64];			/* why the key could not be read, or "" */
};

struct rw_keys {
	struct rw_key *k;
	size_t n, cap;
};

static void
keys_free(struct rw_keys *ks)
{
	size_t i;

	for (i = 0; i < ks->n; i++) {
		free(ks->k[i].name);
		free(ks->k[i].dead);
	}
	free(ks->k);
	memset(ks, 0, sizeof(*ks));
}

/* Reads key `name` from kmsd into *out (an entry of ks). A key that cannot
 * be read (404, 403) is cached with its error code; only a transport
 * failure is returned (CLI_UNREACHABLE). */
static int
key_lookup(struct cli_http *h, struct rw_keys *ks, const char *name,
    struct rw_key **out)
{
	struct rw_key *k;
	json_t *ans = NULL, *vs, *v;
	char *path = NULL;
	const char *st;
	size_t i;
	int r;

	*out = NULL;
	for (i = 0; i < ks->n; i++) {
		if (strcmp(ks->k[i].name, name) == 0) {
			*out = &ks->k[i];
			return CLI_OK;
		}
	}
	if (ks->n == ks->cap) {
		size_t ncap = ks->cap ? ks->cap * 2 : 16;
		struct rw_key *g = realloc(ks->k, ncap * sizeof(*g));

		if (g == NULL)
			return CLI_USAGE;
		ks->k = g;
		ks->cap = ncap;
	}
	k = &ks->k[ks->n];
	memset(k, 0, sizeof(*k));
	if ((k->name = strdup(name)) == NULL)
		return CLI_USAGE;
	if ((r = cli_http_path(h, "/v1/keys/", name, NULL, &path)) != CLI_OK) {
		free(k->name);
		return r;
	}
	r = cli_http_call(h, "GET", path, NULL, &ans);
	free(path);
	if (r == CLI_UNREACHABLE || r == CLI_USAGE) {
		free(k->name);
		return r;
	}
	if (r != CLI_OK) {
		snprintf(k->code, sizeof(k->code), "%s", cli_http_last_code(h));
	} else {
		k->primary = (uint32_t)json_integer_value(json_object_get(ans,
		    "primary_version"));
		vs = json_object_get(ans, "versions");
		if ((k->dead = calloc(json_array_size(vs) + 1,
		    sizeof(*k->dead))) == NULL) {
			json_decref(ans);
			free(k->name);
			return CLI_USAGE;
		}
		json_array_foreach(vs, i, v) {
			st = json_string_value(json_object_get(v, "state"));
			if (st != NULL && (strcmp(st, "revoked") == 0 ||
			    strcmp(st, "destroyed") == 0))
				k->dead[k->n_dead++] = (uint32_t)json_integer_value(
				    json_object_get(v, "version"));
		}
	}
	json_decref(ans);
	ks->n++;
	*out = k;
	return CLI_OK;
}

static int
key_version_dead(const struct rw_key *k, uint32_t v)
{
	size_t i;

	for (i = 0; i < k->n_dead; i++)
		if (k->dead[i] == v)
			return 1;
	return 0;
}

/* ---- progress ---- */

struct progress {
	enum rw_progress mode;
	const char *label;
	double start, last;
	uint64_t base;		/* rows done before this run */
	int shown;
};

static void
progress_init(struct progress *p, enum rw_progress mode, const char *label,
    uint64_t base)
{
	memset(p, 0, sizeof(*p));
	if (mode == RW_PROGRESS_AUTO)
		mode = isatty(STDERR_FILENO) ? RW_PROGRESS_BAR : RW_PROGRESS_PLAIN;
	p->mode = mode;
	p->label = label != NULL ? label : "rewrap";
	p->start = p->last = mono_s();
	p->base = base;
}

static void
eta_text(double s, char *out, size_t len)
{
	long t = s < 0 ? 0 : (long)(s + 0.5);

	if (s < 0 || s > 1e7)
		snprintf(out, len, "--:--");
	else
		snprintf(out, len, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

static void
progress_show(struct progress *p, const struct rw_stats *st, int final)
{
	double now = mono_s(), el = now - p->start, rate, pct;
	uint64_t done = p->base + st->rows;
	char eta[32], bar[41];
	size_t i, fill;

	if (p->mode == RW_PROGRESS_NONE)
		return;
	if (!final && p->mode == RW_PROGRESS_PLAIN &&
	    now - p->last < RW_PLAIN_EVERY_S)
		return;
	if (!final && p->mode == RW_PROGRESS_BAR && now - p->last < 0.2)
		return;
	p->last = now;
	rate = el > 0 ? (double)st->rows / el : 0;
	pct = st->total ? 100.0 * (double)done / (double)st->total : 100.0;
	if (pct > 100)
		pct = 100;
	eta_text(rate > 0 && st->total > done ?
	    (double)(st->total - done) / rate : (st->total > done ? -1 : 0),
	    eta, sizeof(eta));
	if (p->mode == RW_PROGRESS_BAR) {
		fill = (size_t)(pct / 2.5);
		for (i = 0; i < 40; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[40] = '\0';
		fprintf(stderr, "\r%s [%s] %5.1f%% %" PRIu64 "/%" PRIu64
		    " %.0f/s ETA %s rewrapped %" PRIu64 " skipped %" PRIu64
		    " failed %" PRIu64 "\033[K%s", p->label, bar, pct, done,
		    st->total, rate, eta, st->rewrapped, st->skipped, st->failed,
		    final ? "\n" : "");
	} else {
		fprintf(stderr, "%s: %" PRIu64 "/%" PRIu64 " (%.1f%%), %.0f/s, "
		    "ETA %s, rewrapped %" PRIu64 ", skipped %" PRIu64 ", failed %"
		    PRIu64 "\n", p->label, done, st->total, pct, rate, eta,
		    st->rewrapped, st->skipped, st->failed);
	}
	fflush(stderr);
	p->shown = 1;
}

/* ---- one batch of items, sent per key ---- */

struct rw_item {
	int64_t row;		/* SQLite rowid, or the line number */
	char *old;		/* the blob as read (owned) */
	const char *key;	/* borrowed from the key cache */
	json_t *context;	/* owned; may be NULL */
	char *fresh;		/* the rewrapped blob (owned) */
	char code[64];		/* error code of a failed item */
	char msg[256];
	enum { IT_SEND, IT_SKIP, IT_OK, IT_FAIL, IT_NULL } st;
};

static void
item_clear(struct rw_item *it)
{
	free(it->old);
	free(it->fresh);
	json_decref(it->context);
	memset(it, 0, sizeof(*it));
}

static void
item_fail(struct rw_item *it, const char *code, const char *msg)
{
	it->st = IT_FAIL;
	snprintf(it->code, sizeof(it->code), "%s", code);
	snprintf(it->msg, sizeof(it->msg), "%s", msg != NULL ? msg : code);
}

/* Decides per item: skip (at the target), fail (no key, not a blob), or
 * send. Transport failures while reading keys are returned. */
static int
batch_classify(struct cli_http *h, struct rw_keys *ks, struct rw_item *it,
    size_t n, const char *const *names, struct rw_stats *st)
{
	struct rw_key *k;
	uint32_t v;
	size_t i;
	int r;

	for (i = 0; i < n; i++) {
		if (it[i].st == IT_NULL || it[i].st == IT_FAIL)
			continue;
		if (names[i] == NULL) {
			item_fail(&it[i], "no_key", "the row names no key");
			continue;
		}
		if ((r = key_lookup(h, ks, names[i], &k)) != CLI_OK)
			return r;
		it[i].key = k->name;
		if (k->code[0] != '\0') {
			item_fail(&it[i], k->code, "the key cannot be read");
			continue;
		}
		if ((v = rw_blob_version(it[i].old)) == 0) {
			item_fail(&it[i], "invalid_ciphertext", "not a kms:v<N>: blob");
			continue;
		}
		if (v == k->primary) {
			it[i].st = IT_SKIP;
			st->skipped++;
			continue;
		}
		it[i].st = IT_SEND;
	}
	return CLI_OK;
}

/* ---- the plan of a batch ----
 * Before the first request of a batch is sent, its plan is made durable
 * with the checkpoint state: every item's row and state, and per key the
 * request's Idempotency-Key and exact body. A run killed after kmsd
 * answered but before the checkpoint sends the same requests again on
 * resume and gets kmsd's stored answers: nothing is rewrapped twice. */

static const char *const item_st_names[] = {
	[IT_SEND] = "send", [IT_SKIP] = "skip", [IT_OK] = "ok",
	[IT_FAIL] = "fail", [IT_NULL] = "null",
};

/* This process's run id: the first part of every idempotency key. */
static int
run_id(char out[33])
{
	static char id[33];
	unsigned char r[16];
	size_t i;

	if (id[0] == '\0') {
		if (km_random(r, sizeof(r)) != KM_OK) {
			fprintf(stderr, "kmsctl: no random bytes for a run id\n");
			return CLI_USAGE;
		}
		for (i = 0; i < sizeof(r); i++)
			snprintf(id + 2 * i, 3, "%02x", r[i]);
	}
	memcpy(out, id, sizeof(id));
	return CLI_OK;
}

/* The request of the IT_SEND items of key `key`: {"idem", "key", "body",
 * "idx"}, or NULL when out of memory. */
static json_t *
plan_request(const char *run, uint64_t seq, size_t nreq, const char *key,
    const struct rw_item *it, size_t n)
{
	json_t *batch = json_array(), *idx = json_array(), *body = NULL;
	json_t *one, *req = NULL;
	char idem[CLI_MAX_IDEMPOTENCY_KEY + 1], *text = NULL;
	size_t i;

	if (batch == NULL || idx == NULL)
		goto out;
	for (i = 0; i < n; i++) {
		if (it[i].st != IT_SEND || strcmp(it[i].key, key) != 0)
			continue;
		one = json_pack("{s:s}", "ciphertext", it[i].old);
		if (one == NULL || (it[i].context != NULL &&
		    json_object_set(one, "context", it[i].context) != 0) ||
		    json_array_append_new(batch, one) != 0 ||
		    json_array_append_new(idx, json_integer((json_int_t)i)) != 0) {
			json_decref(one);
			goto out;
		}
	}
	if ((body = json_pack("{s:O}", "batch", batch)) == NULL ||
	    (text = json_dumps(body, JSON_COMPACT)) == NULL)
		goto out;
	snprintf(idem, sizeof(idem), "rw-%s-%" PRIu64 "-%zu", run, seq, nreq);
	req = json_pack("{s:s, s:s, s:s, s:O}", "idem", idem, "key", key, "body",
	    text, "idx", idx);
out:
	free(text);
	json_decref(body);
	json_decref(batch);
	json_decref(idx);
	return req;
}

/* The plan of classified items it[0..n): {"items": [{row, st, key?, code?,
 * msg?}], "requests": [...]}. */
static int
plan_build(const struct rw_item *it, size_t n, json_t **out)
{
	static uint64_t seq;
	json_t *plan = NULL, *items, *reqs, *o, *req;
	char run[33];
	size_t i, j, nreq = 0;
	int seen;

	*out = NULL;
	if (run_id(run) != CLI_OK)
		return CLI_USAGE;
	if ((plan = json_pack("{s:[], s:[]}", "items", "requests")) == NULL)
		goto nomem;
	items = json_object_get(plan, "items");
	reqs = json_object_get(plan, "requests");
	for (i = 0; i < n; i++) {
		o = json_pack("{s:I, s:s}", "row", (json_int_t)it[i].row, "st",
		    item_st_names[it[i].st]);
		if (o == NULL || (it[i].key != NULL && json_object_set_new(o,
		    "key", json_string(it[i].key)) != 0) || (it[i].st == IT_FAIL &&
		    (json_object_set_new(o, "code", json_string(it[i].code)) != 0 ||
		    json_object_set_new(o, "msg", json_string(it[i].msg)) != 0)) ||
		    json_array_append_new(items, o) != 0)
			goto nomem;
	}
	for (i = 0; i < n; i++) {
		if (it[i].st != IT_SEND)
			continue;
		for (seen = 0, j = 0; j < i && !seen; j++)
			seen = it[j].st == IT_SEND && strcmp(it[j].key, it[i].key) == 0;
		if (seen)
			continue;
		if ((req = plan_request(run, seq, nreq++, it[i].key, it, n)) ==
		    NULL || json_array_append_new(reqs, req) != 0)
			goto nomem;
	}
	seq++;
	*out = plan;
	return CLI_OK;
nomem:
	json_decref(plan);
	fprintf(stderr, "kmsctl: out of memory\n");
	return CLI_USAGE;
}

static int
item_st_parse(const char *name)
{
	size_t i;

	for (i = 0; name != NULL && i < sizeof(item_st_names) /
	    sizeof(item_st_names[0]); i++)
		if (item_st_names[i] != NULL && strcmp(item_st_names[i], name) == 0)
			return (int)i;
	return -1;
}

/* Rebuilds it[0..*n) from a stored plan: rows, states, keys (borrowed from
 * the plan) and, for the items to send, the blobs as the requests carry
 * them. Counts the skipped items into st. */
static int
plan_items(json_t *plan, struct rw_item *it, size_t cap, size_t *n,
    struct rw_stats *st)
{
	json_t *items = json_object_get(plan, "items"), *o, *req, *body, *idx;
	size_t i, j;
	int s;

	*n = json_array_size(items);
	if (*n == 0 || *n > cap)
		goto bad;
	json_array_foreach(items, i, o) {
		item_clear(&it[i]);
		it[i].row = (int64_t)json_integer_value(json_object_get(o, "row"));
		if ((s = item_st_parse(json_string_value(json_object_get(o,
		    "st")))) < 0 || s == IT_OK)
			goto bad;
		it[i].st = s;
		it[i].key = json_string_value(json_object_get(o, "key"));
		if (s == IT_SKIP)
			st->skipped++;
		if (s == IT_FAIL)
			item_fail(&it[i], json_string_value(json_object_get(o,
			    "code")) ? json_string_value(json_object_get(o, "code")) :
			    "error", json_string_value(json_object_get(o, "msg")));
		if (s == IT_SEND && it[i].key == NULL)
			goto bad;
	}
	json_array_foreach(json_object_get(plan, "requests"), i, req) {
		idx = json_object_get(req, "idx");
		body = json_loads(json_string_value(json_object_get(req, "body")) ?
		    json_string_value(json_object_get(req, "body")) : "", 0, NULL);
		if (json_array_size(json_object_get(body, "batch")) !=
		    json_array_size(idx)) {
			json_decref(body);
			goto bad;
		}
		for (j = 0; j < json_array_size(idx); j++) {
			json_int_t k = json_integer_value(json_array_get(idx, j));
			const char *ct = json_string_value(json_object_get(
			    json_array_get(json_object_get(body, "batch"), j),
			    "ciphertext"));

			if (k < 0 || (size_t)k >= *n || it[k].st != IT_SEND ||
			    ct == NULL || it[k].old != NULL ||
			    (it[k].old = strdup(ct)) == NULL) {
				json_decref(body);
				goto bad;
			}
		}
		json_decref(body);
	}
	return CLI_OK;
bad:
	fprintf(stderr, "kmsctl: the stored in-flight batch is damaged; "
	    "remove it to go on (docs/KMSCTL.md)\n");
	return CLI_USAGE;
}

/* A test hook, inert unless KMSCTL_TEST_KILL_AFTER_ANSWER=N is set: the
 * process kills itself with SIGKILL right after the N-th rewrap answer,
 * before that batch's checkpoint (tests/integration/test_rewrap.c). */
static void
test_kill_after_answer(void)
{
	static long answers;
	const char *e = getenv("KMSCTL_TEST_KILL_AFTER_ANSWER");

	if (e != NULL && ++answers == strtol(e, NULL, 10))
		(void)raise(SIGKILL);
}

/* Sends one planned request; retries transport failures, 5xx answers and
 * a 409 idempotency_key_in_progress (the same request, from a killed run,
 * still running in kmsd) with backoff; a 4xx fails the items. */
static int
send_request(struct cli_http *h, json_t *req, struct rw_item *it, size_t n)
{
	json_t *ans = NULL, *res, *one, *idx = json_object_get(req, "idx");
	const char *key = json_string_value(json_object_get(req, "key"));
	const char *body = json_string_value(json_object_get(req, "body"));
	const char *idem = json_string_value(json_object_get(req, "idem"));
	char *path = NULL;
	size_t j, m = json_array_size(idx);
	int r, attempt;

	if (key == NULL || body == NULL || idem == NULL) {
		fprintf(stderr, "kmsctl: a planned request is incomplete\n");
		return CLI_USAGE;
	}
	if ((r = cli_http_path(h, "/v1/keys/", key, "/rewrap", &path)) != CLI_OK)
		goto out;
	for (attempt = 0;; attempt++) {
		r = cli_http_call_text(h, "POST", path, body, idem, &ans);
		if (!(r == CLI_UNREACHABLE || (r == CLI_FAIL && strcmp(
		    cli_http_last_code(h), "idempotency_key_in_progress") == 0)) ||
		    attempt + 1 >= RW_RETRIES || rw_stop)
			break;
		fprintf(stderr, "kmsctl: rewrap: retrying in %d s\n", 1 << attempt);
		sleep(1u << attempt);
	}
	if (r == CLI_FAIL) {
		/* The request as a whole was refused (403, 404, 429 ...). */
		for (j = 0; j < m; j++)
			item_fail(&it[json_integer_value(json_array_get(idx, j))],
			    cli_http_last_code(h), "the batch was refused");
		r = CLI_OK;
		goto out;
	}
	if (r != CLI_OK)
		goto out;
	test_kill_after_answer();
	res = json_object_get(ans, "results");
	if (json_array_size(res) != m) {
		fprintf(stderr, "kmsctl: rewrap: %zu results for %zu items\n",
		    json_array_size(res), m);
		r = CLI_UNREACHABLE;
		goto out;
	}
	for (j = 0; j < m; j++) {
		json_int_t k = json_integer_value(json_array_get(idx, j));
		struct rw_item *x;
		json_t *e;
		const char *ct;

		if (k < 0 || (size_t)k >= n) {
			r = CLI_USAGE;
			goto out;
		}
		x = &it[k];
		one = json_array_get(res, j);
		if ((e = json_object_get(one, "error")) != NULL) {
			item_fail(x, json_string_value(json_object_get(e, "code")) ?
			    json_string_value(json_object_get(e, "code")) : "error",
			    json_string_value(json_object_get(e, "message")));
			continue;
		}
		if ((ct = json_string_value(json_object_get(one, "ciphertext"))) ==
		    NULL || (x->fresh = strdup(ct)) == NULL) {
			item_fail(x, "bad_answer", "no ciphertext in the result");
			continue;
		}
		x->st = IT_OK;
	}
	r = CLI_OK;
out:
	free(path);
	json_decref(ans);
	return r;
}

/* Sends every request of the plan. */
static int
plan_send(struct cli_http *h, json_t *plan, struct rw_item *it, size_t n)
{
	json_t *req;
	size_t i;
	int r;

	json_array_foreach(json_object_get(plan, "requests"), i, req)
		if ((r = send_request(h, req, it, n)) != CLI_OK)
			return r;
	return CLI_OK;
}

/* ---- SQLite ----
 * sqlite3_reset() only repeats the error of the statement's last step,
 * which was handled when it happened; its result is ignored on purpose. */

/* "name" with inner quotes doubled. */
static char *
quote_ident(const char *s)
{
	size_t n = strlen(s), i, o = 0;
	char *q;

	if (n > 1000 || (q = malloc(2 * n + 3)) == NULL)
		return NULL;
	q[o++] = '"';
	for (i = 0; i < n; i++) {
		if (s[i] == '"')
			q[o++] = '"';
		q[o++] = s[i];
	}
	q[o++] = '"';
	q[o] = '\0';
	return q;
}

struct sq {
	sqlite3 *db;
	sqlite3_stmt *sel, *upd, *prog_get, *prog_put, *fail_put, *fail_del;
	sqlite3_stmt *inf_get, *inf_put, *inf_del;
	sqlite3_stmt *count, *count_done, *scan;
	char *tq, *cq, *kq;
	char **ctxq;
	size_t n_ctx;
};

static int
sq_err(struct sq *q, const char *what)
{
	fprintf(stderr, "kmsctl: %s: %s\n", what, sqlite3_errmsg(q->db));
	return CLI_USAGE;
}

static void
sq_close(struct sq *q)
{
	size_t i;

	/* finalize repeats a step's error, handled when it happened */
	(void)sqlite3_finalize(q->sel);
	(void)sqlite3_finalize(q->upd);
	(void)sqlite3_finalize(q->prog_get);
	(void)sqlite3_finalize(q->prog_put);
	(void)sqlite3_finalize(q->fail_put);
	(void)sqlite3_finalize(q->fail_del);
	(void)sqlite3_finalize(q->inf_get);
	(void)sqlite3_finalize(q->inf_put);
	(void)sqlite3_finalize(q->inf_del);
	(void)sqlite3_finalize(q->count);
	(void)sqlite3_finalize(q->count_done);
	(void)sqlite3_finalize(q->scan);
	if (q->db != NULL && sqlite3_close(q->db) != SQLITE_OK)
		fprintf(stderr, "kmsctl: closing the database: %s\n",
		    sqlite3_errmsg(q->db));
	free(q->tq);
	free(q->cq);
	free(q->kq);
	for (i = 0; i < q->n_ctx; i++)
		free(q->ctxq[i]);
	free(q->ctxq);
	memset(q, 0, sizeof(*q));
}

static int
sq_exec(struct sq *q, const char *sql)
{
	if (sqlite3_exec(q->db, sql, NULL, NULL, NULL) != SQLITE_OK)
		return sq_err(q, sql);
	return CLI_OK;
}

static int
sq_prepare(struct sq *q, const char *sql, sqlite3_stmt **s)
{
	if (sqlite3_prepare_v2(q->db, sql, -1, s, NULL) != SQLITE_OK)
		return sq_err(q, "preparing a statement");
	return CLI_OK;
}

/* Opens the database and prepares every statement; checks that the
 * columns exist and that the table has rowids. */
static int
sq_open(struct sq *q, const struct rw_opts *o)
{
	struct km_buf b = KM_BUF_INIT(64 * 1024);
	char *sql = NULL;
	size_t i;
	int r = CLI_USAGE;

	memset(q, 0, sizeof(*q));
	if (sqlite3_open_v2(o->sqlite, &q->db, SQLITE_OPEN_READWRITE, NULL) !=
	    SQLITE_OK) {
		fprintf(stderr, "kmsctl: cannot open %s: %s\n", o->sqlite,
		    q->db ? sqlite3_errmsg(q->db) : "out of memory");
		goto out;
	}
	if (sqlite3_busy_timeout(q->db, 30000) != SQLITE_OK)
		goto out;
	if ((q->tq = quote_ident(o->table)) == NULL ||
	    (q->cq = quote_ident(o->column)) == NULL ||
	    (o->key_column != NULL && (q->kq = quote_ident(o->key_column)) == NULL) ||
	    (q->ctxq = calloc(o->n_context_columns + 1, sizeof(char *))) == NULL)
		goto nomem;
	for (i = 0; i < o->n_context_columns; i++) {
		if ((q->ctxq[i] = quote_ident(o->context_columns[i])) == NULL)
			goto nomem;
		q->n_ctx++;
	}
	/* SELECT rowid, C, ctx..., K FROM T WHERE rowid > ?1 ORDER BY rowid
	 * LIMIT ?2: a rowid table only (WITHOUT ROWID tables fail here). */
	km_buf_append_str(&b, "SELECT rowid, ");
	km_buf_append_str(&b, q->cq);
	for (i = 0; i < q->n_ctx; i++) {
		km_buf_append_str(&b, ", ");
		km_buf_append_str(&b, q->ctxq[i]);
	}
	if (q->kq != NULL) {
		km_buf_append_str(&b, ", ");
		km_buf_append_str(&b, q->kq);
	}
	km_buf_append_str(&b, " FROM ");
	km_buf_append_str(&b, q->tq);
	km_buf_append_str(&b, " WHERE rowid > ?1 ORDER BY rowid LIMIT ?2");
	if ((sql = km_buf_take_str(&b)) == NULL)
		goto nomem;
	if (sqlite3_prepare_v2(q->db, sql, -1, &q->sel, NULL) != SQLITE_OK) {
		fprintf(stderr, "kmsctl: %s: table %s or one of its columns "
		    "(%s%s%s, context columns) is not there, or it has no rowid: "
		    "%s\n", o->sqlite, o->table, o->column,
		    o->key_column ? ", " : "", o->key_column ? o->key_column : "",
		    sqlite3_errmsg(q->db));
		goto out;
	}
	free(sql);
	sql = NULL;
	if ((sql = sqlite3_mprintf("UPDATE %s SET %s = ?1 WHERE rowid = ?2 AND "
	    "%s = ?3", q->tq, q->cq, q->cq)) == NULL)
		goto nomem;
	if ((r = sq_prepare(q, sql, &q->upd)) != CLI_OK)
		goto out;
	sqlite3_free(sql);
	if ((sql = sqlite3_mprintf("SELECT count(*) FROM %s", q->tq)) == NULL)
		goto nomem;
	if ((r = sq_prepare(q, sql, &q->count)) != CLI_OK)
		goto out;
	sqlite3_free(sql);
	if ((sql = sqlite3_mprintf("SELECT count(*) FROM %s WHERE rowid <= ?1",
	    q->tq)) == NULL)
		goto nomem;
	if ((r = sq_prepare(q, sql, &q->count_done)) != CLI_OK)
		goto out;
	sqlite3_free(sql);
	sql = NULL;
	/* The checkpoint tables live in the application's database, so a
	 * batch's rows and its checkpoint commit in one transaction. */
	if ((r = sq_exec(q, "CREATE TABLE IF NOT EXISTS " RW_PROGRESS_TABLE " ("
	    "tbl TEXT NOT NULL, col TEXT NOT NULL, last_rowid INTEGER NOT NULL,"
	    " rewrapped INTEGER NOT NULL, skipped INTEGER NOT NULL,"
	    " failed INTEGER NOT NULL, changed INTEGER NOT NULL,"
	    " done INTEGER NOT NULL, started_at TEXT, updated_at TEXT,"
	    " PRIMARY KEY (tbl, col))")) != CLI_OK ||
	    (r = sq_exec(q, "CREATE TABLE IF NOT EXISTS " RW_FAILURE_TABLE " ("
	    "tbl TEXT NOT NULL, col TEXT NOT NULL, row INTEGER NOT NULL,"
	    " key TEXT, code TEXT, message TEXT, at TEXT,"
	    " PRIMARY KEY (tbl, col, row))")) != CLI_OK ||
	    (r = sq_exec(q, "CREATE TABLE IF NOT EXISTS " RW_INFLIGHT_TABLE " ("
	    "tbl TEXT NOT NULL, col TEXT NOT NULL, plan TEXT NOT NULL,"
	    " PRIMARY KEY (tbl, col))")) != CLI_OK)
		goto out;
	if ((r = sq_prepare(q, "SELECT last_rowid, rewrapped, skipped, failed,"
	    " changed, done FROM " RW_PROGRESS_TABLE " WHERE tbl = ?1 AND "
	    "col = ?2", &q->prog_get)) != CLI_OK ||
	    (r = sq_prepare(q, "INSERT OR REPLACE INTO " RW_PROGRESS_TABLE
	    " (tbl, col, last_rowid, rewrapped, skipped, failed, changed, done,"
	    " started_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,"
	    " coalesce((SELECT started_at FROM " RW_PROGRESS_TABLE
	    " WHERE tbl = ?1 AND col = ?2 AND ?9 = 0),"
	    " strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),"
	    " strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))", &q->prog_put)) != CLI_OK ||
	    (r = sq_prepare(q, "INSERT OR REPLACE INTO " RW_FAILURE_TABLE
	    " (tbl, col, row, key, code, message, at) VALUES (?1, ?2, ?3, ?4,"
	    " ?5, ?6, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))",
	    &q->fail_put)) != CLI_OK ||
	    (r = sq_prepare(q, "DELETE FROM " RW_FAILURE_TABLE " WHERE tbl = ?1"
	    " AND col = ?2 AND (?3 IS NULL OR row = ?3)", &q->fail_del)) != CLI_OK ||
	    (r = sq_prepare(q, "SELECT plan FROM " RW_INFLIGHT_TABLE
	    " WHERE tbl = ?1 AND col = ?2", &q->inf_get)) != CLI_OK ||
	    (r = sq_prepare(q, "INSERT OR REPLACE INTO " RW_INFLIGHT_TABLE
	    " (tbl, col, plan) VALUES (?1, ?2, ?3)", &q->inf_put)) != CLI_OK ||
	    (r = sq_prepare(q, "DELETE FROM " RW_INFLIGHT_TABLE " WHERE tbl = ?1"
	    " AND col = ?2", &q->inf_del)) != CLI_OK)
		goto out;
	r = CLI_OK;
	goto out;
nomem:
	fprintf(stderr, "kmsctl: out of memory\n");
	r = CLI_USAGE;
out:
	if (sql != NULL)
		sqlite3_free(sql);
	km_buf_free(&b);
	return r;
}

struct checkpoint {
	int64_t last_rowid;
	uint64_t rewrapped, skipped, failed, changed;
	int done, exists;
};

static int
sq_progress_get(struct sq *q, const struct rw_opts *o, struct checkpoint *c)
{
	int rc;

	memset(c, 0, sizeof(*c));
	(void)sqlite3_reset(q->prog_get);
	if (sqlite3_bind_text(q->prog_get, 1, o->table, -1, SQLITE_STATIC) !=
	    SQLITE_OK || sqlite3_bind_text(q->prog_get, 2, o->column, -1,
	    SQLITE_STATIC) != SQLITE_OK)
		return sq_err(q, "reading the checkpoint");
	rc = sqlite3_step(q->prog_get);
	if (rc == SQLITE_ROW) {
		c->exists = 1;
		c->last_rowid = sqlite3_column_int64(q->prog_get, 0);
		c->rewrapped = (uint64_t)sqlite3_column_int64(q->prog_get, 1);
		c->skipped = (uint64_t)sqlite3_column_int64(q->prog_get, 2);
		c->failed = (uint64_t)sqlite3_column_int64(q->prog_get, 3);
		c->changed = (uint64_t)sqlite3_column_int64(q->prog_get, 4);
		c->done = sqlite3_column_int(q->prog_get, 5);
	} else if (rc != SQLITE_DONE) {
		return sq_err(q, "reading the checkpoint");
	}
	(void)sqlite3_reset(q->prog_get);
	return CLI_OK;
}

static int
sq_progress_put(struct sq *q, const struct rw_opts *o,
    const struct checkpoint *c, int fresh)
{
	sqlite3_stmt *s = q->prog_put;

	(void)sqlite3_reset(s);
	if (sqlite3_bind_text(s, 1, o->table, -1, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_bind_text(s, 2, o->column, -1, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_bind_int64(s, 3, c->last_rowid) != SQLITE_OK ||
	    sqlite3_bind_int64(s, 4, (int64_t)c->rewrapped) != SQLITE_OK ||
	    sqlite3_bind_int64(s, 5, (int64_t)c->skipped) != SQLITE_OK ||
	    sqlite3_bind_int64(s, 6, (int64_t)c->failed) != SQLITE_OK ||
	    sqlite3_bind_int64(s, 7, (int64_t)c->changed) != SQLITE_OK ||
	    sqlite3_bind_int(s, 8, c->done) != SQLITE_OK ||
	    sqlite3_bind_int(s, 9, fresh) != SQLITE_OK ||
	    sqlite3_step(s) != SQLITE_DONE)
		return sq_err(q, "writing the checkpoint");
	(void)sqlite3_reset(s);
	return CLI_OK;
}

/* The plan of the batch in flight, or *plan NULL when there is none. */
static int
sq_inflight_get(struct sq *q, const struct rw_opts *o, json_t **plan)
{
	const unsigned char *t;
	int rc;

	*plan = NULL;
	(void)sqlite3_reset(q->inf_get);
	if (sqlite3_bind_text(q->inf_get, 1, o->table, -1, SQLITE_STATIC) !=
	    SQLITE_OK || sqlite3_bind_text(q->inf_get, 2, o->column, -1,
	    SQLITE_STATIC) != SQLITE_OK)
		return sq_err(q, "reading the in-flight batch");
	rc = sqlite3_step(q->inf_get);
	if (rc == SQLITE_ROW && (t = sqlite3_column_text(q->inf_get, 0)) != NULL &&
	    (*plan = json_loads((const char *)t, 0, NULL)) == NULL) {
		(void)sqlite3_reset(q->inf_get);
		fprintf(stderr, "kmsctl: %s: the in-flight batch is not JSON\n",
		    RW_INFLIGHT_TABLE);
		return CLI_USAGE;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return sq_err(q, "reading the in-flight batch");
	(void)sqlite3_reset(q->inf_get);
	return CLI_OK;
}

/* Stores `plan` (commits at once: it must be durable before the first
 * request goes out), or deletes the stored one when plan is NULL. */
static int
sq_inflight_put(struct sq *q, const struct rw_opts *o, const json_t *plan)
{
	sqlite3_stmt *s = plan != NULL ? q->inf_put : q->inf_del;
	char *text = NULL;
	int r = CLI_OK;

	if (plan != NULL && (text = json_dumps(plan, JSON_COMPACT)) == NULL) {
		fprintf(stderr, "kmsctl: out of memory\n");
		return CLI_USAGE;
	}
	(void)sqlite3_reset(s);
	if (sqlite3_bind_text(s, 1, o->table, -1, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_bind_text(s, 2, o->column, -1, SQLITE_STATIC) != SQLITE_OK ||
	    (text != NULL && sqlite3_bind_text(s, 3, text, -1, SQLITE_STATIC) !=
	    SQLITE_OK) || sqlite3_step(s) != SQLITE_DONE)
		r = sq_err(q, "writing the in-flight batch");
	(void)sqlite3_reset(s);
	free(text);
	return r;
}

static int
sq_count(struct sq *q, sqlite3_stmt *s, int64_t arg, uint64_t *n)
{
	(void)sqlite3_reset(s);
	if ((arg >= 0 && sqlite3_bind_int64(s, 1, arg) != SQLITE_OK) ||
	    sqlite3_step(s) != SQLITE_ROW)
		return sq_err(q, "counting rows");
	*n = (uint64_t)sqlite3_column_int64(s, 0);
	(void)sqlite3_reset(s);
	return CLI_OK;
}

/* Reads the next `limit` rows after `after` into it[] (cleared first). */
static int
sq_read(struct sq *q, const struct rw_opts *o, int64_t after, size_t limit,
    struct rw_item *it, char **names, size_t *n)
{
	const unsigned char *t;
	size_t i, col;
	int rc;

	*n = 0;
	(void)sqlite3_reset(q->sel);
	if (sqlite3_bind_int64(q->sel, 1, after) != SQLITE_OK ||
	    sqlite3_bind_int64(q->sel, 2, (int64_t)limit) != SQLITE_OK)
		return sq_err(q, "reading rows");
	while ((rc = sqlite3_step(q->sel)) == SQLITE_ROW) {
		struct rw_item *x = &it[*n];

		x->row = sqlite3_column_int64(q->sel, 0);
		names[*n] = NULL;
		if ((t = sqlite3_column_text(q->sel, 1)) == NULL) {
			x->st = IT_NULL;	/* no blob in this row */
		} else if ((x->old = strdup((const char *)t)) == NULL) {
			return CLI_USAGE;
		}
		for (i = 0, col = 2; i < q->n_ctx; i++, col++) {
			if ((t = sqlite3_column_text(q->sel, (int)col)) == NULL)
				continue;	/* NULL: the name is left out */
			if (x->context == NULL && (x->context = json_object()) == NULL)
				return CLI_USAGE;
			if (json_object_set_new(x->context, o->context_columns[i],
			    json_string((const char *)t)) != 0) {
				item_fail(x, "invalid_context", "a context value is "
				    "not valid UTF-8");
			}
		}
		if (q->kq != NULL) {
			if ((t = sqlite3_column_text(q->sel, (int)col)) != NULL &&
			    (names[*n] = strdup((const char *)t)) == NULL)
				return CLI_USAGE;
		} else if ((names[*n] = strdup(o->key)) == NULL) {
			return CLI_USAGE;
		}
		(*n)++;
	}
	if (rc != SQLITE_DONE)
		return sq_err(q, "reading rows");
	(void)sqlite3_reset(q->sel);
	return CLI_OK;
}

/* The rows of one batch and its checkpoint, in one transaction. An update
 * is a compare-and-swap on the blob read: a row the application changed
 * meanwhile keeps the application's value. */
static int
sq_commit(struct sq *q, const struct rw_opts *o, struct rw_item *it, size_t n,
    struct checkpoint *c, struct rw_stats *st)
{
	size_t i;
	int r = CLI_USAGE;

	if ((r = sq_exec(q, "BEGIN IMMEDIATE")) != CLI_OK)
		return r;
	for (i = 0; i < n; i++) {
		sqlite3_stmt *s;

		if (it[i].st == IT_OK) {
			s = q->upd;
			(void)sqlite3_reset(s);
			if (sqlite3_bind_text(s, 1, it[i].fresh, -1, SQLITE_STATIC) !=
			    SQLITE_OK || sqlite3_bind_int64(s, 2, it[i].row) !=
			    SQLITE_OK || sqlite3_bind_text(s, 3, it[i].old, -1,
			    SQLITE_STATIC) != SQLITE_OK ||
			    sqlite3_step(s) != SQLITE_DONE) {
				r = sq_err(q, "updating a row");
				goto out;
			}
			if (sqlite3_changes(q->db) == 1) {
				c->rewrapped++;
				st->rewrapped++;
			} else {
				c->changed++;
				st->changed++;
			}
			(void)sqlite3_reset(s);
		} else if (it[i].st == IT_FAIL) {
			s = q->fail_put;
			(void)sqlite3_reset(s);
			if (sqlite3_bind_text(s, 1, o->table, -1, SQLITE_STATIC) !=
			    SQLITE_OK || sqlite3_bind_text(s, 2, o->column, -1,
			    SQLITE_STATIC) != SQLITE_OK ||
			    sqlite3_bind_int64(s, 3, it[i].row) != SQLITE_OK ||
			    sqlite3_bind_text(s, 4, it[i].key, -1, SQLITE_STATIC) !=
			    SQLITE_OK || sqlite3_bind_text(s, 5, it[i].code, -1,
			    SQLITE_STATIC) != SQLITE_OK || sqlite3_bind_text(s, 6,
			    it[i].msg, -1, SQLITE_STATIC) != SQLITE_OK ||
			    sqlite3_step(s) != SQLITE_DONE) {
				r = sq_err(q, "recording a failed row");
				goto out;
			}
			c->failed++;
			st->failed++;
			(void)sqlite3_reset(s);
		} else if (it[i].st == IT_SKIP) {
			c->skipped++;
		}
		if (it[i].row > c->last_rowid)
			c->last_rowid = it[i].row;
	}
	if ((r = sq_progress_put(q, o, c, 0)) != CLI_OK ||
	    (r = sq_inflight_put(q, o, NULL)) != CLI_OK)
		goto out;
	r = sq_exec(q, "COMMIT");
out:
	if (r != CLI_OK && sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL) !=
	    SQLITE_OK)
		fprintf(stderr, "kmsctl: rollback failed: %s\n",
		    sqlite3_errmsg(q->db));
	return r;
}

/* Counts every blob of the table not at its key's primary version. */
static int
sq_verify(struct cli_http *h, struct sq *q, const struct rw_opts *o,
    struct rw_stats *st)
{
	struct rw_keys ks = { 0 };
	struct rw_item it[256];
	char *names[256];
	int64_t after = 0;
	size_t n = 0, i, shown = 0;
	struct rw_key *k;
	uint32_t v;
	int r = CLI_OK;

	memset(it, 0, sizeof(it));
	st->not_at_target = 0;
	st->under_revoked = 0;
	for (;;) {
		if ((r = sq_read(q, o, after, 256, it, names, &n)) != CLI_OK)
			goto out;
		if (n == 0)
			break;
		for (i = 0; i < n; i++) {
			after = it[i].row;
			if (it[i].st == IT_NULL)
				continue;
			k = NULL;
			if (names[i] != NULL &&
			    (r = key_lookup(h, &ks, names[i], &k)) != CLI_OK)
				goto out;
			v = rw_blob_version(it[i].old);
			if (k != NULL && k->code[0] == '\0' && v != 0 &&
			    v == k->primary)
				continue;
			st->not_at_target++;
			if (k != NULL && key_version_dead(k, v))
				st->under_revoked++;
			if (shown++ < 5)
				fprintf(stderr, "kmsctl: verify: row %lld: %s v%u, "
				    "primary v%u\n", (long long)it[i].row,
				    names[i] ? names[i] : "(no key)", v,
				    k ? k->primary : 0);
		}
		for (i = 0; i < n; i++) {
			item_clear(&it[i]);
			free(names[i]);
			names[i] = NULL;
		}
	}
out:
	for (i = 0; i < n; i++) {
		item_clear(&it[i]);
		free(names[i]);
	}
	keys_free(&ks);
	return r;
}

static int
run_sqlite(struct cli_http *h, const struct rw_opts *o, struct rw_stats *st)
{
	struct rw_keys ks = { 0 };
	struct rw_item *it = NULL;
	struct checkpoint c;
	struct progress p;
	json_t *plan = NULL;
	char **names = NULL;
	uint64_t done_before = 0;
	size_t n = 0, i;
	struct sq q;
	int r;

	if ((r = sq_open(&q, o)) != CLI_OK)
		goto out;
	if ((r = sq_count(&q, q.count, -1, &st->total)) != CLI_OK)
		goto out;
	if (o->verify_only)
		goto verify;
	if ((r = sq_progress_get(&q, o, &c)) != CLI_OK)
		goto out;
	if (c.exists && !c.done) {
		st->resumed = 1;
		if ((r = sq_count(&q, q.count_done, c.last_rowid,
		    &done_before)) != CLI_OK)
			goto out;
		fprintf(stderr, "%s: resuming %s.%s after row %lld (%" PRIu64
		    " rewrapped, %" PRIu64 " skipped, %" PRIu64 " failed so far)\n",
		    o->label, o->table, o->column, (long long)c.last_rowid,
		    c.rewrapped, c.skipped, c.failed);
		if ((r = sq_inflight_get(&q, o, &plan)) != CLI_OK)
			goto out;
	} else {
		/* A fresh pass: earlier failures are retried. */
		memset(&c, 0, sizeof(c));
		(void)sqlite3_reset(q.fail_del);
		if (sqlite3_bind_text(q.fail_del, 1, o->table, -1, SQLITE_STATIC) !=
		    SQLITE_OK || sqlite3_bind_text(q.fail_del, 2, o->column, -1,
		    SQLITE_STATIC) != SQLITE_OK || sqlite3_bind_null(q.fail_del, 3) !=
		    SQLITE_OK || sqlite3_step(q.fail_del) != SQLITE_DONE) {
			r = sq_err(&q, "clearing old failures");
			goto out;
		}
		(void)sqlite3_reset(q.fail_del);
		if ((r = sq_progress_put(&q, o, &c, 1)) != CLI_OK ||
		    (r = sq_inflight_put(&q, o, NULL)) != CLI_OK)
			goto out;
	}
	/* Room for a stored batch made with a larger --batch. */
	if ((it = calloc(RW_MAX_BATCH, sizeof(*it))) == NULL ||
	    (names = calloc(RW_MAX_BATCH, sizeof(*names))) == NULL) {
		fprintf(stderr, "kmsctl: out of memory\n");
		r = CLI_USAGE;
		goto out;
	}
	progress_init(&p, o->progress, o->label, done_before);
	while (!rw_stop) {
		if (plan != NULL) {
			fprintf(stderr, "%s: sending the batch in flight again with "
			    "its idempotency keys\n", o->label);
			if ((r = plan_items(plan, it, RW_MAX_BATCH, &n, st)) != CLI_OK)
				goto out;
		} else {
			if ((r = sq_read(&q, o, c.last_rowid, o->batch, it, names,
			    &n)) != CLI_OK)
				goto out;
			if (n == 0)
				break;
			if ((r = batch_classify(h, &ks, it, n,
			    (const char *const *)names, st)) != CLI_OK ||
			    (r = plan_build(it, n, &plan)) != CLI_OK)
				goto out;
			if (json_array_size(json_object_get(plan, "requests")) > 0 &&
			    (r = sq_inflight_put(&q, o, plan)) != CLI_OK)
				goto out;
		}
		if ((r = plan_send(h, plan, it, n)) != CLI_OK ||
		    (r = sq_commit(&q, o, it, n, &c, st)) != CLI_OK)
			goto out;
		json_decref(plan);
		plan = NULL;
		st->rows += n;
		for (i = 0; i < n; i++) {
			item_clear(&it[i]);
			free(names[i]);
			names[i] = NULL;
		}
		n = 0;
		progress_show(&p, st, 0);
	}
	progress_show(&p, st, 1);
	if (rw_stop) {
		st->interrupted = 1;
		fprintf(stderr, "%s: stopped after a checkpoint at row %lld; run "
		    "the same command to go on\n", o->label, (long long)c.last_rowid);
		r = CLI_FAIL;
		goto out;
	}
	c.done = 1;
	if ((r = sq_progress_put(&q, o, &c, 0)) != CLI_OK)
		goto out;
verify:
	r = sq_verify(h, &q, o, st);
out:
	for (i = 0; it != NULL && i < n; i++) {
		item_clear(&it[i]);
		free(names[i]);
	}
	free(it);
	free(names);
	json_decref(plan);
	keys_free(&ks);
	sq_close(&q);
	return r;
}

/* ---- JSON lines ---- */

struct jl_progress {
	long long in_off, out_bytes, lines;
	uint64_t rewrapped, skipped, failed;
	int done, exists;
	json_t *inflight;	/* the plan of the batch in flight, or NULL */
};

static int
jl_progress_read(const char *path, struct jl_progress *p)
{
	json_t *j;

	memset(p, 0, sizeof(*p));
	if ((j = json_load_file(path, 0, NULL)) == NULL)
		return access(path, F_OK) == 0 ? CLI_USAGE : CLI_OK;
	p->exists = 1;
	p->in_off = json_integer_value(json_object_get(j, "input_offset"));
	p->out_bytes = json_integer_value(json_object_get(j, "output_bytes"));
	p->lines = json_integer_value(json_object_get(j, "lines"));
	p->rewrapped = (uint64_t)json_integer_value(json_object_get(j, "rewrapped"));
	p->skipped = (uint64_t)json_integer_value(json_object_get(j, "skipped"));
	p->failed = (uint64_t)json_integer_value(json_object_get(j, "failed"));
	p->done = json_is_true(json_object_get(j, "done"));
	if (json_is_object(json_object_get(j, "inflight")))
		p->inflight = json_incref(json_object_get(j, "inflight"));
	json_decref(j);
	return CLI_OK;
}

/* Writes the checkpoint next to the output: a temporary file, fsync,
 * rename, so it is either the old or the new one after a crash. */
static int
jl_progress_write(const char *path, const struct jl_progress *p)
{
	char tmp[PATH_MAX];
	json_t *j;
	FILE *f;
	int ok;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return CLI_USAGE;
	j = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "input_offset",
	    (json_int_t)p->in_off, "output_bytes", (json_int_t)p->out_bytes,
	    "lines", (json_int_t)p->lines, "rewrapped", (json_int_t)p->rewrapped,
	    "skipped", (json_int_t)p->skipped, "failed", (json_int_t)p->failed,
	    "done", p->done);
	if (j != NULL && p->inflight != NULL &&
	    json_object_set(j, "inflight", p->inflight) != 0) {
		json_decref(j);
		j = NULL;
	}
	if (j == NULL || (f = fopen(tmp, "w")) == NULL) {
		json_decref(j);
		fprintf(stderr, "kmsctl: cannot write %s: %s\n", tmp, strerror(errno));
		return CLI_USAGE;
	}
	ok = json_dumpf(j, f, JSON_COMPACT) == 0 && fputc('\n', f) != EOF &&
	    fflush(f) == 0 && fsync(fileno(f)) == 0;
	ok = fclose(f) == 0 && ok;
	json_decref(j);
	if (!ok || rename(tmp, path) != 0) {
		fprintf(stderr, "kmsctl: cannot write %s: %s\n", path, strerror(errno));
		return CLI_USAGE;
	}
	return CLI_OK;
}

/* One line without its newline, into *line (grown); 0 at the end. */
static int
jl_getline(FILE *f, char **line, size_t *cap, size_t *len, long long *consumed)
{
	ssize_t n = getline(line, cap, f);

	if (n < 0)
		return 0;
	*consumed = n;
	while (n > 0 && ((*line)[n - 1] == '\n' || (*line)[n - 1] == '\r'))
		(*line)[--n] = '\0';
	*len = (size_t)n;
	return 1;
}

static int
write_all_f(FILE *f, const char *s, size_t n)
{
	return fwrite(s, 1, n, f) == n && fputc('\n', f) != EOF ? 0 : -1;
}

/* The output line of item x: the input object with the new ciphertext, or
 * the input line as it was. */
static int
jl_emit(FILE *out, json_t *obj, const struct rw_item *x, const char *raw,
    size_t raw_len, long long *bytes)
{
	char *s = NULL;
	int r;

	if (x->st == IT_OK && obj != NULL) {
		json_object_set_new(obj, "ciphertext", json_string(x->fresh));
		if ((s = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER)) ==
		    NULL)
			return -1;
		r = write_all_f(out, s, strlen(s));
		*bytes += (long long)strlen(s) + 1;
		cli_json_str_free(s);
		return r;
	}
	*bytes += (long long)raw_len + 1;
	return write_all_f(out, raw, raw_len);
}

static int
run_jsonl(struct cli_http *h, const struct rw_opts *o, struct rw_stats *st)
{
	struct rw_keys ks = { 0 };
	struct rw_item *it = NULL;
	struct jl_progress jp = { 0 }, before;
	struct progress p;
	json_t **objs = NULL, *plan = NULL;
	char **names = NULL, **raws = NULL, *line = NULL, outp[PATH_MAX];
	char progp[PATH_MAX];
	size_t cap = 0, len, n = 0, i, want, *raw_lens = NULL;
	long long consumed;
	FILE *in = NULL, *out = NULL;
	int r = CLI_USAGE, fd;

	if (snprintf(outp, sizeof(outp), "%s", o->out != NULL ? o->out : "") >=
	    (int)sizeof(outp) || (o->out == NULL && snprintf(outp, sizeof(outp),
	    "%s.rewrapped.jsonl", o->jsonl) >= (int)sizeof(outp)) ||
	    snprintf(progp, sizeof(progp), "%s.progress", outp) >=
	    (int)sizeof(progp)) {
		fprintf(stderr, "kmsctl: path too long\n");
		goto out;
	}
	if ((in = fopen(o->jsonl, "r")) == NULL) {
		fprintf(stderr, "kmsctl: cannot open %s: %s\n", o->jsonl,
		    strerror(errno));
		goto out;
	}
	while (jl_getline(in, &line, &cap, &len, &consumed))
		st->total++;
	rewind(in);
	if (o->verify_only)
		goto verify;
	if ((r = jl_progress_read(progp, &jp)) != CLI_OK) {
		fprintf(stderr, "kmsctl: %s is not a checkpoint\n", progp);
		goto out;
	}
	r = CLI_USAGE;
	if (jp.exists && !jp.done) {
		st->resumed = 1;
		fprintf(stderr, "%s: resuming %s at line %lld (%" PRIu64
		    " rewrapped so far)\n", o->label, o->jsonl, jp.lines,
		    jp.rewrapped);
		plan = jp.inflight;
		jp.inflight = NULL;
		/* Whatever was written after the checkpoint is written again. */
		if ((fd = open(outp, O_WRONLY | O_CLOEXEC)) < 0 ||
		    ftruncate(fd, (off_t)jp.out_bytes) != 0 || close(fd) != 0 ||
		    fseeko(in, (off_t)jp.in_off, SEEK_SET) != 0) {
			fprintf(stderr, "kmsctl: cannot resume %s: %s\n", outp,
			    strerror(errno));
			goto out;
		}
		out = fopen(outp, "a");
	} else {
		json_decref(jp.inflight);
		memset(&jp, 0, sizeof(jp));
		out = fopen(outp, "w");
	}
	if (out == NULL) {
		fprintf(stderr, "kmsctl: cannot write %s: %s\n", outp, strerror(errno));
		goto out;
	}
	/* Room for a stored batch made with a larger --batch. */
	if ((it = calloc(RW_MAX_BATCH, sizeof(*it))) == NULL ||
	    (names = calloc(RW_MAX_BATCH, sizeof(*names))) == NULL ||
	    (raws = calloc(RW_MAX_BATCH, sizeof(*raws))) == NULL ||
	    (raw_lens = calloc(RW_MAX_BATCH, sizeof(*raw_lens))) == NULL ||
	    (objs = calloc(RW_MAX_BATCH, sizeof(*objs))) == NULL) {
		fprintf(stderr, "kmsctl: out of memory\n");
		goto out;
	}
	progress_init(&p, o->progress, o->label, (uint64_t)jp.lines);
	for (;;) {
		if (rw_stop)
			break;
		/* The batch in flight is read again line for line. */
		want = o->batch;
		if (plan != NULL) {
			want = json_array_size(json_object_get(plan, "items"));
			if (want == 0 || want > RW_MAX_BATCH) {
				fprintf(stderr, "kmsctl: %s: the batch in flight is "
				    "damaged\n", progp);
				r = CLI_USAGE;
				goto out;
			}
		}
		before = jp;
		for (n = 0; n < want; n++) {
			const char *ct, *key;

			if (!jl_getline(in, &line, &cap, &len, &consumed))
				break;
			jp.in_off += consumed;
			it[n].row = jp.lines + (long long)n + 1;
			if ((raws[n] = strndup(line, len)) == NULL)
				goto nomem;
			raw_lens[n] = len;
			objs[n] = json_loadb(line, len, 0, NULL);
			if (!json_is_object(objs[n]) || (ct = json_string_value(
			    json_object_get(objs[n], "ciphertext"))) == NULL) {
				item_fail(&it[n], "invalid_line", "not a JSON object "
				    "with a ciphertext");
				continue;
			}
			if ((it[n].old = strdup(ct)) == NULL)
				goto nomem;
			if (json_is_object(json_object_get(objs[n], "context")))
				it[n].context = json_incref(json_object_get(objs[n],
				    "context"));
			key = json_string_value(json_object_get(objs[n], "key"));
			if (key == NULL)
				key = o->key;
			if (key != NULL && (names[n] = strdup(key)) == NULL)
				goto nomem;
		}
		if (n == 0)
			break;
		if (plan != NULL) {
			fprintf(stderr, "%s: sending the batch in flight again with "
			    "its idempotency keys\n", o->label);
			if (n != want) {
				fprintf(stderr, "kmsctl: %s is shorter than when the "
				    "batch in flight was read\n", o->jsonl);
				r = CLI_USAGE;
				goto out;
			}
			if ((r = plan_items(plan, it, RW_MAX_BATCH, &n, st)) != CLI_OK)
				goto out;
		} else {
			if ((r = batch_classify(h, &ks, it, n,
			    (const char *const *)names, st)) != CLI_OK ||
			    (r = plan_build(it, n, &plan)) != CLI_OK)
				goto out;
			/* Durable before the first request: the checkpoint as
			 * before this batch, with its plan. */
			before.inflight = plan;
			if (json_array_size(json_object_get(plan, "requests")) > 0 &&
			    (r = jl_progress_write(progp, &before)) != CLI_OK)
				goto out;
		}
		if ((r = plan_send(h, plan, it, n)) != CLI_OK)
			goto out;
		r = CLI_USAGE;
		for (i = 0; i < n; i++) {
			if (jl_emit(out, objs[i], &it[i], raws[i], raw_lens[i],
			    &jp.out_bytes) != 0) {
				fprintf(stderr, "kmsctl: writing %s: %s\n", outp,
				    strerror(errno));
				goto out;
			}
			if (it[i].st == IT_OK) {
				jp.rewrapped++;
				st->rewrapped++;
			} else if (it[i].st == IT_SKIP) {
				jp.skipped++;
			} else if (it[i].st == IT_FAIL) {
				jp.failed++;
				st->failed++;
				fprintf(stderr, "kmsctl: line %lld: %s: %s\n",
				    (long long)it[i].row, it[i].code, it[i].msg);
			}
		}
		/* The output first, then the checkpoint that counts it. */
		if (fflush(out) != 0 || fsync(fileno(out)) != 0) {
			fprintf(stderr, "kmsctl: writing %s: %s\n", outp,
			    strerror(errno));
			goto out;
		}
		jp.lines += (long long)n;
		if ((r = jl_progress_write(progp, &jp)) != CLI_OK)
			goto out;
		json_decref(plan);
		plan = NULL;
		st->rows += n;
		for (i = 0; i < n; i++) {
			item_clear(&it[i]);
			free(names[i]);
			free(raws[i]);
			json_decref(objs[i]);
			names[i] = raws[i] = NULL;
			objs[i] = NULL;
		}
		n = 0;
		progress_show(&p, st, 0);
	}
	progress_show(&p, st, 1);
	if (rw_stop) {
		st->interrupted = 1;
		fprintf(stderr, "%s: stopped after a checkpoint at line %lld; run "
		    "the same command to go on\n", o->label, jp.lines);
		r = CLI_FAIL;
		goto out;
	}
	jp.done = 1;
	if ((r = jl_progress_write(progp, &jp)) != CLI_OK)
		goto out;
	if (fclose(out) != 0) {
		out = NULL;
		fprintf(stderr, "kmsctl: writing %s failed\n", outp);
		r = CLI_USAGE;
		goto out;
	}
	out = NULL;
	fprintf(stderr, "%s: wrote %s\n", o->label, outp);
verify:
	/* Count the blobs of the output (or, with --verify-only, of the
	 * input) that are not at their key's primary version. */
	{
		const char *vp = o->verify_only ? o->jsonl : outp;
		FILE *vf = fopen(vp, "r");
		struct rw_key *k;
		uint32_t v;
		json_t *j;

		keys_free(&ks);
		if (vf == NULL) {
			fprintf(stderr, "kmsctl: cannot open %s: %s\n", vp,
			    strerror(errno));
			r = CLI_USAGE;
			goto out;
		}
		r = CLI_OK;
		st->not_at_target = 0;
		while (r == CLI_OK && jl_getline(vf, &line, &cap, &len, &consumed)) {
			const char *key, *ct;

			j = json_loadb(line, len, 0, NULL);
			ct = json_string_value(json_object_get(j, "ciphertext"));
			key = json_string_value(json_object_get(j, "key"));
			if (key == NULL)
				key = o->key;
			k = NULL;
			if (key != NULL)
				r = key_lookup(h, &ks, key, &k);
			v = rw_blob_version(ct);
			if (r == CLI_OK && (k == NULL || k->code[0] != '\0' ||
			    v == 0 || v != k->primary)) {
				st->not_at_target++;
				if (k != NULL && key_version_dead(k, v))
					st->under_revoked++;
			}
			json_decref(j);
		}
		fclose(vf);
	}
	goto out;
nomem:
	fprintf(stderr, "kmsctl: out of memory\n");
	r = CLI_USAGE;
out:
	for (i = 0; it != NULL && i < RW_MAX_BATCH; i++) {
		item_clear(&it[i]);
		if (names != NULL)
			free(names[i]);
		if (raws != NULL)
			free(raws[i]);
		if (objs != NULL)
			json_decref(objs[i]);
	}
	free(it);
	free(names);
	free(raws);
	free(raw_lens);
	free(objs);
	json_decref(plan);
	json_decref(jp.inflight);
	free(line);
	if (in != NULL)
		fclose(in);
	if (out != NULL)
		fclose(out);
	keys_free(&ks);
	return r;
}

int
rw_run(struct cli_http *h, const struct rw_opts *o, struct rw_stats *st)
{
	struct sigaction sa, old_int, old_term;
	double t0 = mono_s();
	int r;

	memset(st, 0, sizeof(*st));
	rw_stop = 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: a blocked read wakes up; curl retries its poll.
	 * The (void)s: sigaction fails only for a bad signal number. */
	(void)sigaction(SIGINT, &sa, &old_int);
	(void)sigaction(SIGTERM, &sa, &old_term);
	r = o->sqlite != NULL ? run_sqlite(h, o, st) : run_jsonl(h, o, st);
	(void)sigaction(SIGINT, &old_int, NULL);
	(void)sigaction(SIGTERM, &old_term, NULL);
	st->seconds = mono_s() - t0;
	if (r != CLI_OK)
		return r;
	fprintf(stderr, "%s: verification: %" PRIu64 " blob(s) not at their "
	    "key's primary version%s\n", o->label ? o->label : "rewrap",
	    st->not_at_target, st->not_at_target ? "" : " (all done)");
	if (st->under_revoked > 0)
		fprintf(stderr, "%s: %" PRIu64 " of them are under a revoked or "
		    "destroyed version: kmsd can no longer unwrap or rewrap them\n",
		    o->label ? o->label : "rewrap", st->under_revoked);
	return st->not_at_target == 0 ? CLI_OK : CLI_FAIL;
}

/* ---- the command ---- */

static const char usage_bulk[] =
    "Usage: kmsctl rewrap --sqlite FILE --table T --column C\n"
    "                     [--context-columns a,b] (--key-column K | --key KEY)\n"
    "                     [--batch N] [--progress auto|bar|plain|none]\n"
    "                     [--verify-only] [--token-file FILE]\n"
    "       kmsctl rewrap --jsonl FILE [--out FILE] [--key KEY] [--batch N] ...\n"
    "\n"
    "Moves every wrapped DEK of an SQLite table or a JSON-lines file to its\n"
    "key's primary version with the batch rewrap API (app token). Blobs\n"
    "already there are skipped. Each batch ends with a checkpoint (SQLite: the\n"
    "rows and table kmsctl_rewrap_progress in one transaction; JSON lines:\n"
    "the output, then OUT.progress), so a killed run resumes where it\n"
    "stopped when started again with the same arguments. SIGINT/SIGTERM stop\n"
    "after the batch in flight. Each batch's requests are stored before they\n"
    "are sent, with an Idempotency-Key each, and sent again on resume, so a\n"
    "kill never rewraps a DEK twice. Ends with a count of the blobs not at\n"
    "their key's primary version.\n"
    "\n"
    "  --sqlite FILE          the application's database (rowid tables)\n"
    "  --table T --column C   the table and its blob column (kms:v<N>:...)\n"
    "  --context-columns a,b  context of each blob: {\"a\": <a>, \"b\": <b>}\n"
    "                         (NULL values are left out)\n"
    "  --key-column K         the column naming each blob's key, or\n"
    "  --key KEY              one key for every blob\n"
    "  --jsonl FILE           lines {\"ciphertext\", \"context\", \"key\", ...};\n"
    "                         other members are kept\n"
    "  --out FILE             JSON lines output (default FILE.rewrapped.jsonl)\n"
    "  --batch N              items per request, 1..1000 (default 500)\n"
    "  --progress MODE        auto (a bar on a terminal, else a line every 5 s)\n"
    "  --verify-only          only count the blobs not at the primary version\n"
    "\n"
    "Exit status: 0 every blob is at its key's primary version; 1 some are\n"
    "not (refused items are in table kmsctl_rewrap_failures or on stderr),\n"
    "or the run was interrupted; 2 usage or local I/O error; 3 kmsd\n"
    "unreachable (run again to resume).\n";

int
cli_rewrap_is_bulk(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++)
		if (strncmp(argv[i], "--sqlite", 8) == 0 ||
		    strncmp(argv[i], "--jsonl", 7) == 0)
			return 1;
	return 0;
}

/* Splits "a,b" into *out (each strdup'ed). */
static int
split_names(const char *s, char ***out, size_t *n)
{
	char *copy = strdup(s), *p, *save = NULL;
	char **v = NULL;
	size_t cnt = 0;

	*out = NULL;
	*n = 0;
	if (copy == NULL || (v = calloc(strlen(s) / 2 + 2, sizeof(*v))) == NULL) {
		free(copy);
		return -1;
	}
	for (p = strtok_r(copy, ",", &save); p != NULL;
	    p = strtok_r(NULL, ",", &save))
		if ((v[cnt++] = strdup(p)) == NULL)
			break;
	free(copy);
	*out = v;
	*n = cnt;
	return 0;
}

int
rw_parse_opt(struct rw_opts *o, int ch, const char *arg)
{
	char *end;
	long v;

	switch (ch) {
	case RO_SQLITE: o->sqlite = arg; return 0;
	case RO_TABLE: o->table = arg; return 0;
	case RO_COLUMN: o->column = arg; return 0;
	case RO_KEYCOL: o->key_column = arg; return 0;
	case RO_KEY: o->key = arg; return 0;
	case RO_JSONL: o->jsonl = arg; return 0;
	case RO_OUT: o->out = arg; return 0;
	case RO_VERIFY: o->verify_only = 1; return 0;
	case RO_CTX:
		if (split_names(arg, &o->context_columns,
		    &o->n_context_columns) != 0) {
			fprintf(stderr, "kmsctl: out of memory\n");
			return -1;
		}
		return 0;
	case RO_BATCH:
		errno = 0;
		v = strtol(arg, &end, 10);
		if (errno != 0 || *end != '\0' || v < 1 || v > RW_MAX_BATCH) {
			fprintf(stderr, "kmsctl: --batch must be 1..%d\n",
			    RW_MAX_BATCH);
			return -1;
		}
		o->batch = (size_t)v;
		return 0;
	case RO_PROGRESS:
		if (strcmp(arg, "auto") == 0)
			o->progress = RW_PROGRESS_AUTO;
		else if (strcmp(arg, "bar") == 0)
			o->progress = RW_PROGRESS_BAR;
		else if (strcmp(arg, "plain") == 0)
			o->progress = RW_PROGRESS_PLAIN;
		else if (strcmp(arg, "none") == 0)
			o->progress = RW_PROGRESS_NONE;
		else {
			fprintf(stderr, "kmsctl: --progress is auto, bar, plain "
			    "or none\n");
			return -1;
		}
		return 0;
	}
	return -1;
}

int
rw_check_opts(const struct rw_opts *o)
{
	if ((o->sqlite == NULL) == (o->jsonl == NULL)) {
		fprintf(stderr, "kmsctl: give --sqlite or --jsonl (one of them)\n");
		return -1;
	}
	if (o->sqlite != NULL && (o->table == NULL || o->column == NULL)) {
		fprintf(stderr, "kmsctl: --sqlite needs --table and --column\n");
		return -1;
	}
	if (o->sqlite != NULL && (o->key == NULL) == (o->key_column == NULL)) {
		fprintf(stderr, "kmsctl: --sqlite needs --key KEY or --key-column "
		    "COLUMN (one of them)\n");
		return -1;
	}
	if (o->jsonl != NULL && (o->table != NULL || o->column != NULL ||
	    o->key_column != NULL || o->n_context_columns > 0)) {
		fprintf(stderr, "kmsctl: --table, --column, --key-column and "
		    "--context-columns are for --sqlite\n");
		return -1;
	}
	return 0;
}

void
rw_opts_free(struct rw_opts *o)
{
	size_t i;

	for (i = 0; i < o->n_context_columns; i++)
		free(o->context_columns[i]);
	free(o->context_columns);
	o->context_columns = NULL;
	o->n_context_columns = 0;
}

int
cli_rewrap_bulk_main(int argc, char **argv, const char *token_file)
{
	static const struct option opts[] = {
		RW_LONG_OPTS,
		{ "key", required_argument, NULL, RO_KEY },
		{ "verify-only", no_argument, NULL, RO_VERIFY },
		{ "token-file", required_argument, NULL, RO_TOKEN },
		{ "help", no_argument, NULL, RO_HELP },
		{ NULL, 0, NULL, 0 },
	};
	struct rw_opts o;
	struct rw_stats st;
	struct cli_http *h = NULL;
	int ch, r = CLI_USAGE;

	memset(&o, 0, sizeof(o));
	o.batch = RW_DEFAULT_BATCH;
	o.label = "rewrap";
	while ((ch = cli_next_opt(argc, argv, opts)) != -1) {
		if (ch == RO_HELP) {
			fputs(usage_bulk, stdout);
			r = CLI_OK;
			goto out;
		}
		if (ch == RO_TOKEN) {
			token_file = optarg;
			continue;
		}
		if (ch == '?')
			goto usage;
		if (rw_parse_opt(&o, ch, optarg) != 0)
			goto usage;
	}
	if (optind != argc) {
		fprintf(stderr, "kmsctl: unexpected argument '%s'\n", argv[optind]);
		goto usage;
	}
	if (rw_check_opts(&o) != 0)
		goto usage;
	if ((r = cli_http_new(token_file, &h)) != CLI_OK)
		goto out;
	r = rw_run(h, &o, &st);
	fprintf(stderr, "rewrap: %" PRIu64 " rewrapped, %" PRIu64 " skipped, %"
	    PRIu64 " failed, %" PRIu64 " changed meanwhile in %.1f s\n",
	    st.rewrapped, st.skipped, st.failed, st.changed, st.seconds);
	goto out;
usage:
	fprintf(stderr, "Try 'kmsctl rewrap --help'.\n");
	r = CLI_USAGE;
out:
	cli_http_free(h);
	rw_opts_free(&o);
	return r;
}
