/* Integration tests of the Idempotency-Key header on batch rewrap: a
 * repeat gets the stored answer byte for byte and a replay record, another
 * body under the key is refused, keys are per token, bad keys and other
 * routes are refused, a failed request leaves no entry, and concurrent
 * duplicates execute once. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "itest.h"

#define N_CONC 6

static int
suite_init(void)
{
	return it_ready();
}

/* A key rotated to version 2 and `n` blobs wrapped under version 1, as
 * the body of a batch rewrap (a JSON text, caller frees). */
static char *
rewrap_body(const char *key, size_t n)
{
	json_t *items = json_array(), *batch = json_array(), *ans, *b;
	unsigned char pt[32];
	char *b64, *text;
	size_t i;

	for (i = 0; i < n; i++) {
		ith_random(pt, sizeof(pt));
		b64 = ith_b64(pt, sizeof(pt));
		json_array_append_new(items, json_pack("{s:s, s:{s:s}}",
		    "plaintext", b64, "context", "doc", "x"));
		free(b64);
	}
	ans = ith_call("POST", it_kpath(key, "wrap"), T.app,
	    json_pack("{s:o}", "batch", items), 200, NULL);
	for (i = 0; i < json_array_size(json_object_get(ans, "results")); i++)
		json_array_append_new(batch, json_pack("{s:O, s:{s:s}}",
		    "ciphertext", json_object_get(json_array_get(json_object_get(ans,
		    "results"), i), "ciphertext"), "context", "doc", "x"));
	json_decref(ans);
	json_decref(ith_call("POST", it_kpath(key, "rotate"), T.admin, NULL, 200,
	    NULL));
	b = json_pack("{s:o}", "batch", batch);
	text = json_dumps(b, JSON_COMPACT);
	json_decref(b);
	return text;
}

/* POSTs `body` to `path` with "Idempotency-Key: <idem>" (NULL: none);
 * returns the status, *raw the answer text (caller frees), *rid its id. */
static long
post_idem(const char *path, const char *token, const char *body,
    const char *idem, char **raw, char rid[128])
{
	struct ith_headers h;
	char line[400];
	const char *hdrs[] = { line, NULL };
	long status = 0;

	/* "Name;" is how curl sends a header with an empty value. */
	if (idem != NULL && idem[0] == '\0')
		snprintf(line, sizeof(line), "Idempotency-Key;");
	else
		snprintf(line, sizeof(line), "Idempotency-Key: %s", idem ? idem : "");
	*raw = NULL;
	(void)ith_request_raw("POST", path, token, body,
	    strlen(body), idem != NULL ? hdrs : NULL, &status, raw, NULL, NULL,
	    &h);
	if (rid != NULL)
		snprintf(rid, 128, "%s", h.request_id);
	return status;
}

/* The rewrap records of key `key` carrying Idempotency-Key `idem`:
 * executions (with items) and replays (of the execution `orig`). */
static void
audit_of(const char *key, const char *idem, const char *orig,
    int *executions, int *replays, int *items)
{
	char path[400];
	json_t *ans, *rec;
	size_t i;

	*executions = *replays = *items = 0;
	snprintf(path, sizeof(path), "/v1/audit/records?op=rewrap&key=%s", key);
	ans = ith_call("GET", path, T.auditor, NULL, 200, NULL);
	json_array_foreach(json_object_get(ans, "records"), i, rec) {
		const char *k = json_string_value(json_object_get(rec,
		    "idempotency_key"));

		if (k == NULL || strcmp(k, idem) != 0)
			continue;
		if (json_is_true(json_object_get(rec, "replay"))) {
			(*replays)++;
			CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(rec,
			    "outcome")), "ok");
			CU_ASSERT_PTR_NULL(json_object_get(rec, "items"));
			if (orig != NULL)
				CU_ASSERT_STRING_EQUAL(json_string_value(
				    json_object_get(rec, "replay_of")), orig);
		} else if (strcmp(json_string_value(json_object_get(rec,
		    "outcome")), "ok") == 0) {
			(*executions)++;
			*items += (int)json_array_size(json_object_get(rec, "items"));
		}
	}
	json_decref(ans);
}

/* A repeat returns the stored answer byte for byte, recorded as a replay
 * of the first request; the token rewrapped the items once. */
static void
test_replay(void)
{
	const char *key = it_new_key("idem", NULL);
	char *body = rewrap_body(key, 5), *a1 = NULL, *a2 = NULL;
	char rid1[128], rid2[128];
	int ex, rp, items;

	CU_ASSERT_EQUAL(post_idem(it_kpath(key, "rewrap"), T.app, body, "rk-1",
	    &a1, rid1), 200);
	CU_ASSERT_EQUAL(post_idem(it_kpath(key, "rewrap"), T.app, body, "rk-1",
	    &a2, rid2), 200);
	CU_ASSERT_PTR_NOT_NULL_FATAL(a1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(a2);
	CU_ASSERT_STRING_EQUAL(a1, a2);
	CU_ASSERT(strstr(a1, "kms:v2:") != NULL);
	CU_ASSERT_STRING_NOT_EQUAL(rid1, rid2);
	audit_of(key, "rk-1", rid1, &ex, &rp, &items);
	CU_ASSERT_EQUAL(ex, 1);
	CU_ASSERT_EQUAL(rp, 1);
	CU_ASSERT_EQUAL(items, 5);
	free(a2);
	/* The same body without a key executes again: new ciphertexts. */
	CU_ASSERT_EQUAL(post_idem(it_kpath(key, "rewrap"), T.app, body, NULL,
	    &a2, NULL), 200);
	CU_ASSERT(a2 != NULL && strcmp(a1, a2) != 0);
	free(a1);
	free(a2);
	free(body);
}

/* Another body (or another key's path) under a used key: 422. */
static void
test_reused(void)
{
	const char *key = it_new_key("idem", NULL);
	const char *other = it_new_key("idem", NULL);
	char *b1 = rewrap_body(key, 2), *b2 = rewrap_body(key, 2), *a = NULL;
	json_t *j;

	CU_ASSERT_EQUAL(post_idem(it_kpath(key, "rewrap"), T.app, b1, "rk-2", &a,
	    NULL), 200);
	free(a);
	CU_ASSERT_EQUAL(post_idem(it_kpath(key, "rewrap"), T.app, b2, "rk-2", &a,
	    NULL), 422);
	j = a != NULL ? json_loads(a, 0, NULL) : NULL;
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(json_object_get(
	    j, "error"), "code")), "idempotency_key_reused");
	json_decref(j);
	free(a);
	CU_ASSERT_EQUAL(post_idem(it_kpath(other, "rewrap"), T.app, b1, "rk-2",
	    &a, NULL), 422);
	free(a);
	free(b1);
	free(b2);
}

/* The same key from another token is another key: a fresh execution. */
static void
test_other_actor(void)
{
	char name[160];
	const char *key;
	char *body, *a1 = NULL, *a2 = NULL;
	int ex, rp, items;

	snprintf(name, sizeof(name), "%s", ith_name("matter-idem"));
	CU_ASSERT_EQUAL_FATAL(ith_key_create(name, NULL), 0);
	key = name;
	body = rewrap_body(key, 3);
	CU_ASSERT_EQUAL(post_idem(it_kpath(key, "rewrap"), T.app, body, "rk-3",
	    &a1, NULL), 200);
	CU_ASSERT_EQUAL(post_idem(it_kpath(key, "rewrap"), T.matter, body,
	    "rk-3", &a2, NULL), 200);
	CU_ASSERT(a1 != NULL && a2 != NULL && strcmp(a1, a2) != 0);
	audit_of(key, "rk-3", NULL, &ex, &rp, &items);
	CU_ASSERT_EQUAL(ex, 2);
	CU_ASSERT_EQUAL(rp, 0);
	free(a1);
	free(a2);
	free(body);
}

/* Bad keys, two headers and routes other than rewrap: 400, nothing done. */
static void
test_refused(void)
{
	const char *key = it_new_key("idem", NULL);
	char *body = rewrap_body(key, 1), *a = NULL, longk[200];
	const char *two[] = { "Idempotency-Key: a", "Idempotency-Key: b", NULL };
	const char *bad[] = { "has space", "semi;colon", "caf\xc3\xa9", longk };
	long status = 0;
	size_t i;

	memset(longk, 'k', 129);
	longk[129] = '\0';
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CU_ASSERT_EQUAL(post_idem(it_kpath(key, "rewrap"), T.app, body,
		    bad[i], &a, NULL), 400);
		free(a);
	}
	CU_ASSERT_EQUAL(post_idem(it_kpath(key, "rewrap"), T.app, body, "", &a,
	    NULL), 400);
	free(a);
	(void)ith_request_raw("POST", it_kpath(key, "rewrap"), T.app, body,
	    strlen(body), two, &status, NULL, NULL, NULL, NULL);
	CU_ASSERT_EQUAL(status, 400);
	/* Answers with plaintext are never stored; wrap bodies hold it. */
	CU_ASSERT_EQUAL(post_idem(it_kpath(key, "wrap"), T.app,
	    "{\"plaintext\":\"AAAA\"}", "rk-4", &a, NULL), 400);
	free(a);
	CU_ASSERT_EQUAL(post_idem(it_kpath(key, "datakey"), T.app, "{}", "rk-4",
	    &a, NULL), 400);
	free(a);
	CU_ASSERT_EQUAL(post_idem(it_kpath(key, "unwrap"), T.app,
	    "{\"ciphertext\":\"x\"}", "rk-4", &a, NULL), 400);
	free(a);
	free(body);
}

/* A request that failed keeps no entry: the key is free for the next. */
static void
test_failure_not_stored(void)
{
	const char *key = it_new_key("idem", NULL);
	char *body = rewrap_body(key, 2), *a = NULL;

	CU_ASSERT_EQUAL(post_idem(it_kpath(key, "rewrap"), T.app,
	    "{\"batch\":[]}", "rk-5", &a, NULL), 400);
	free(a);
	CU_ASSERT_EQUAL(post_idem(it_kpath(key, "rewrap"), T.app, body, "rk-5",
	    &a, NULL), 200);
	free(a);
	free(body);
}

struct dup {
	pthread_t tid;
	const char *path, *body;
	long status;
	char *answer;
	char id[33];
};

static void *
dup_run(void *arg)
{
	struct dup *d = arg;
	CURL *c = curl_easy_init();
	json_t *j;

	if (c == NULL)
		return NULL;
	j = ith_post_mt_hdr(c, d->path, T.app, d->body, "Idempotency-Key: rk-6",
	    &d->status, d->id);
	if (j != NULL)
		d->answer = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	curl_easy_cleanup(c);
	return NULL;
}

/* Concurrent duplicates: whatever the interleaving, one executes; the
 * others get its stored answer or 409 idempotency_key_in_progress. */
static void
test_concurrent(void)
{
	const char *key = it_new_key("idem", NULL);
	char *body = rewrap_body(key, 1000), *first = NULL;
	struct dup d[N_CONC];
	int i, ok = 0, busy = 0, ex, rp, items;

	memset(d, 0, sizeof(d));
	for (i = 0; i < N_CONC; i++) {
		d[i].path = it_kpath(key, "rewrap");
		d[i].body = body;
		CU_ASSERT_EQUAL_FATAL(pthread_create(&d[i].tid, NULL, dup_run,
		    &d[i]), 0);
	}
	for (i = 0; i < N_CONC; i++)
		pthread_join(d[i].tid, NULL);
	for (i = 0; i < N_CONC; i++) {
		(void)ith_record_request_id(d[i].id);
		if (d[i].status == 200) {
			ok++;
			if (first == NULL)
				first = d[i].answer;
			else
				CU_ASSERT(d[i].answer != NULL &&
				    strcmp(first, d[i].answer) == 0);
		} else {
			CU_ASSERT_EQUAL(d[i].status, 409);
			CU_ASSERT(d[i].answer != NULL && strstr(d[i].answer,
			    "idempotency_key_in_progress") != NULL);
			busy++;
		}
	}
	CU_ASSERT(ok >= 1);
	CU_ASSERT_EQUAL(ok + busy, N_CONC);
	audit_of(key, "rk-6", NULL, &ex, &rp, &items);
	CU_ASSERT_EQUAL(ex, 1);
	CU_ASSERT_EQUAL(items, 1000);
	CU_ASSERT_EQUAL(rp, ok - 1);
	for (i = 0; i < N_CONC; i++)
		free(d[i].answer);
	free(body);
}

int
it_register_idempotency(void)
{
	CU_pSuite s = CU_add_suite("idempotency", suite_init, NULL);

	if (s == NULL ||
	    CU_add_test(s, "repeat gets the stored answer", test_replay) == NULL ||
	    CU_add_test(s, "another request under a key: 422", test_reused) ==
	    NULL ||
	    CU_add_test(s, "keys are per token", test_other_actor) == NULL ||
	    CU_add_test(s, "bad keys and other routes: 400", test_refused) ==
	    NULL ||
	    CU_add_test(s, "a failed request keeps no entry",
	    test_failure_not_stored) == NULL ||
	    CU_add_test(s, "concurrent duplicates execute once",
	    test_concurrent) == NULL)
		return -1;
	return 0;
}
