/* Integration tests of the crypto API (wrap, unwrap, rewrap, datakey,
 * batches, context binding) and of error handling and request ids. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "itest.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
#define MIB (1024 * 1024)

static int
suite_init(void)
{
	return it_ready();
}

/* Splits "kms:v<N>:<b64>" into N and the decoded payload. 0 or -1. */
static int
blob_parse(const char *ct, long *version, unsigned char **payload, size_t *len)
{
	const char *p, *colon;
	char *end;

	*payload = NULL;
	*len = 0;
	if (strncmp(ct, "kms:v", 5) != 0)
		return -1;
	p = ct + 5;
	*version = strtol(p, &end, 10);
	colon = strchr(p, ':');
	if (colon == NULL || end != colon || end == p)
		return -1;
	return ith_unb64(colon + 1, payload, len);
}

/* "kms:v<version>:" + base64(payload); caller frees. */
static char *
blob_make(const char *header, const unsigned char *payload, size_t len)
{
	char *b64 = ith_b64(payload, len), *out;

	if (asprintf(&out, "%s%s", header, b64) < 0)
		abort();
	free(b64);
	return out;
}

#define check_blob(ct, v, ptlen) check_blob_at(__FILE__, __LINE__, ct, v, ptlen)
static void
check_blob_at(const char *file, int line, const char *ct, long v, size_t ptlen)
{
	unsigned char *payload;
	size_t len;
	long got;
	char prefix[32];

	snprintf(prefix, sizeof(prefix), "kms:v%ld:", v);
	ith_check_at(strncmp(ct, prefix, strlen(prefix)) == 0, file, line,
	    "ciphertext '%.40s...' does not start with %s", ct, prefix);
	if (!ith_check_at(blob_parse(ct, &got, &payload, &len) == 0, file, line,
	    "ciphertext '%.60s' is not kms:v<N>:<padded base64>", ct))
		return;
	ith_check_at(len == 12 + ptlen + 16, file, line,
	    "ciphertext payload is %zu bytes, expected nonce 12 + %zu + tag 16",
	    len, ptlen);
	free(payload);
}

static json_t *
unwrap_body(const char *ct, json_t *ctx)
{
	json_t *b = json_pack("{s:s}", "ciphertext", ct);

	if (ctx != NULL)
		json_object_set(b, "context", ctx);
	return b;
}

/* ---------------------------------------------------------------- basics */

static void
test_health_ready(void)
{
	json_t *a, *c;

	a = ith_call("GET", "/v1/health", NULL, NULL, 200, NULL);
	ith_check(a && strcmp(json_string_value(json_object_get(a, "status")) ?
	    json_string_value(json_object_get(a, "status")) : "", "ok") == 0,
	    "GET /v1/health: expected status \"ok\"");
	json_decref(a);
	a = ith_call("GET", "/v1/ready", NULL, NULL, 200, NULL);
	c = json_object_get(a, "checks");
	ith_check(a && json_is_true(json_object_get(a, "ready")),
	    "GET /v1/ready: ready is not true");
	ith_check(json_is_true(json_object_get(c, "token")) &&
	    json_is_true(json_object_get(c, "store")) &&
	    json_is_true(json_object_get(c, "audit")),
	    "GET /v1/ready: checks token/store/audit are not all true");
	json_decref(a);
}

static void
test_request_ids(void)
{
	static const char *const paths[] = { "/v1/health", "/v1/ready",
	    "/v1/keys", "/v1/nope", "/v1/keys/no-such-key" };
	size_t before = ith_request_ids_seen(), i;
	struct ith_headers h1, h2;
	long st;

	/* answers of every kind: 200, 401, 404; the harness checks each id is
	 * 32 hex characters and never seen before */
	for (i = 0; i < 100; i++) {
		const char *tok = (i % 3 == 0) ? NULL : T.admin;

		(void)ith_request("GET", paths[i % N_OF(paths)], tok, NULL, &st,
		    NULL, NULL);
	}
	ith_check(ith_request_ids_seen() == before + 100,
	    "100 answers carried %zu new distinct request ids",
	    ith_request_ids_seen() - before);
	/* two identical requests in a row still get different ids */
	(void)ith_request("GET", "/v1/health", NULL, NULL, &st, NULL, &h1);
	(void)ith_request("GET", "/v1/health", NULL, NULL, &st, NULL, &h2);
	ith_check(strcmp(h1.request_id, h2.request_id) != 0,
	    "two answers share X-Request-Id %s", h1.request_id);
}

static void
test_content_type(void)
{
	static const char *const paths[] = { "/v1/health", "/v1/keys",
	    "/v1/nope" };
	struct ith_headers h;
	long st;
	size_t i;

	for (i = 0; i < N_OF(paths); i++) {
		if (ith_request("GET", paths[i], T.admin, NULL, &st, NULL, &h) != 0)
			continue;
		ith_check(strncasecmp(h.content_type, "application/json", 16) == 0,
		    "GET %s -> %ld: Content-Type is '%s', expected application/json",
		    paths[i], st, h.content_type);
	}
}

/* ------------------------------------------------------------ round trip */

static void
test_roundtrip_sizes(void)
{
	static const size_t sizes[] = { 1, 2, 15, 16, 17, 31, 32, 33, 255, 256,
	    1000, 4095, 4096 };
	static unsigned char pt[4096];
	const char *key = it_new_key("rt", NULL);
	json_t *ctx = it_ctx("matter", "m-1");
	size_t i;

	for (i = 0; i < N_OF(sizes); i++) {
		json_t *c = (i % 2) ? ctx : NULL;
		char *ct, *ct2;
		long v;
		int rr;

		ith_random(pt, sizes[i]);
		if ((ct = ith_wrap(key, T.app, pt, sizes[i], c, &v)) == NULL)
			continue;
		ith_check(v == 1, "wrap of %zu bytes: key_version %ld, expected 1",
		    sizes[i], v);
		check_blob(ct, 1, sizes[i]);
		if (ith_unwrap_expect(key, T.app, ct, c, pt, sizes[i], &v, &rr) == 0)
			ith_check(v == 1 && rr == 0,
			    "unwrap of %zu bytes: key_version %ld rewrap_recommended %d,"
			    " expected 1 and false", sizes[i], v, rr);
		/* a fresh nonce per wrap: the same input never gives the same blob */
		if ((ct2 = ith_wrap(key, T.app, pt, sizes[i], c, NULL)) != NULL)
			ith_check(strcmp(ct, ct2) != 0,
			    "two wraps of the same %zu bytes gave the same ciphertext",
			    sizes[i]);
		free(ct);
		free(ct2);
	}
	json_decref(ctx);
}

static void
test_plaintext_bounds(void)
{
	static unsigned char big[4097];
	const char *key = it_new_key("rt", NULL);
	char *b64;

	(void)ith_expect_error("POST", it_kpath(key, "wrap"), T.app,
	    json_pack("{s:s}", "plaintext", ""), 400, "invalid_request");
	ith_random(big, sizeof(big));
	b64 = ith_b64(big, sizeof(big));
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), T.app,
	    json_pack("{s:s}", "plaintext", b64), 400, "invalid_request");
	free(b64);
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), T.app,
	    json_pack("{s:s, s:{s:s}}", "plaintext", "", "context", "matter", "m"),
	    400, "invalid_request");
}

#define BATCH 1000
static unsigned char batch_pt[BATCH][64];
static size_t batch_len[BATCH];
static unsigned char batch_nonce[BATCH][12];

static int
cmp_nonce(const void *x, const void *y)
{
	return memcmp(x, y, 12);
}

/* Every blob of a batch has a nonce of its own (they are drawn from the
 * DRBG in groups). */
static size_t
batch_repeated_nonces(json_t *res)
{
	size_t i, n = 0, repeated = 0;

	for (i = 0; i < BATCH; i++) {
		const char *ct = json_string_value(json_object_get(
		    json_array_get(res, i), "ciphertext"));
		const char *p = ct ? strrchr(ct, ':') : NULL;
		unsigned char *raw = NULL;
		size_t len = 0;

		if (p != NULL && ith_unb64(p + 1, &raw, &len) == 0 && len > 12)
			memcpy(batch_nonce[n++], raw, 12);
		free(raw);
	}
	qsort(batch_nonce, n, 12, cmp_nonce);
	for (i = 1; i < n; i++)
		if (memcmp(batch_nonce[i - 1], batch_nonce[i], 12) == 0)
			repeated++;
	return n == BATCH ? repeated : BATCH;
}

static void
test_batch_roundtrip(void)
{
	const char *key = it_new_key("batch", NULL);
	json_t *items = json_array(), *a, *res;
	size_t i, bad = 0, first_bad = 0;
	char ctxval[32];

	for (i = 0; i < BATCH; i++) {
		char *b64;

		batch_len[i] = 1 + i % 64;
		ith_random(batch_pt[i], batch_len[i]);
		b64 = ith_b64(batch_pt[i], batch_len[i]);
		snprintf(ctxval, sizeof(ctxval), "item-%zu", i);
		json_array_append_new(items, json_pack("{s:s, s:{s:s}}",
		    "plaintext", b64, "context", "item", ctxval));
		free(b64);
	}
	a = ith_call("POST", it_kpath(key, "wrap"), T.app,
	    json_pack("{s:o}", "batch", items), 200, NULL);
	res = json_object_get(a, "results");
	if (!ith_check(json_is_array(res) && json_array_size(res) == BATCH,
	    "batch wrap of %d: results is not an array of %d", BATCH, BATCH)) {
		json_decref(a);
		return;
	}
	items = json_array();
	for (i = 0; i < BATCH; i++) {
		json_t *r = json_array_get(res, i);
		const char *ct = json_string_value(json_object_get(r, "ciphertext"));

		snprintf(ctxval, sizeof(ctxval), "item-%zu", i);
		if (ct == NULL || json_integer_value(json_object_get(r,
		    "key_version")) != 1 || json_object_get(r, "error") != NULL) {
			if (bad++ == 0)
				first_bad = i;
			ct = "kms:v1:AAAA";
		}
		json_array_append_new(items, json_pack("{s:s, s:{s:s}}",
		    "ciphertext", ct, "context", "item", ctxval));
	}
	ith_check(bad == 0, "batch wrap: %zu of %d results lack ciphertext/key_version 1"
	    " (first: %zu)", bad, BATCH, first_bad);
	ith_check(batch_repeated_nonces(res) == 0, "batch wrap: nonces repeat "
	    "or are missing");
	json_decref(a);

	a = ith_call("POST", it_kpath(key, "unwrap"), T.app,
	    json_pack("{s:o}", "batch", items), 200, NULL);
	res = json_object_get(a, "results");
	if (!ith_check(json_is_array(res) && json_array_size(res) == BATCH,
	    "batch unwrap of %d: results is not an array of %d", BATCH, BATCH)) {
		json_decref(a);
		return;
	}
	bad = 0;
	for (i = 0; i < BATCH; i++) {
		json_t *r = json_array_get(res, i);
		const char *p = json_string_value(json_object_get(r, "plaintext"));
		unsigned char *got = NULL;
		size_t glen = 0;

		if (p == NULL || ith_unb64(p, &got, &glen) != 0 ||
		    glen != batch_len[i] || memcmp(got, batch_pt[i], glen) != 0 ||
		    json_integer_value(json_object_get(r, "key_version")) != 1 ||
		    !json_is_false(json_object_get(r, "rewrap_recommended"))) {
			if (bad++ == 0)
				first_bad = i;
		}
		free(got);
	}
	{
		char *dump = bad ? json_dumps(json_array_get(res, first_bad),
		    JSON_COMPACT) : NULL;

		ith_check(bad == 0, "batch unwrap: %zu of %d results differ from "
		    "what was wrapped (first: item %zu: %.200s)", bad, BATCH,
		    first_bad, dump ? dump : "");
		free(dump);
	}
	json_decref(a);
}

static void
test_batch_limits(void)
{
	const char *key = it_new_key("batch", NULL);
	static const char *const ops[] = { "wrap", "unwrap", "rewrap" };
	size_t i, k;

	for (k = 0; k < N_OF(ops); k++) {
		json_t *items = json_array();

		for (i = 0; i < BATCH + 1; i++)
			json_array_append_new(items, k == 0 ?
			    json_pack("{s:s}", "plaintext", "AAECAw==") :
			    json_pack("{s:s}", "ciphertext", "kms:v1:AAAA"));
		(void)ith_expect_error("POST", it_kpath(key, ops[k]), T.app,
		    json_pack("{s:o}", "batch", items), 400, "invalid_request");
		(void)ith_expect_error("POST", it_kpath(key, ops[k]), T.app,
		    json_pack("{s:[]}", "batch"), 400, "invalid_request");
		(void)ith_expect_error("POST", it_kpath(key, ops[k]), T.app,
		    json_pack("{s:{}}", "batch"), 400, "invalid_request");
	}
}

static int
item_error_is(json_t *r, const char *code)
{
	json_t *e = json_object_get(r, "error");
	const char *c = json_string_value(json_object_get(e, "code"));

	return json_is_object(e) && c != NULL && strcmp(c, code) == 0 &&
	    json_is_string(json_object_get(e, "message")) &&
	    json_object_get(r, "ciphertext") == NULL &&
	    json_object_get(r, "plaintext") == NULL;
}

static void
test_batch_bad_item(void)
{
	const char *key = it_new_key("batch", NULL);
	unsigned char pt[5][32];
	char *cts[5] = { 0 }, *b64, *dump;
	json_t *items = json_array(), *a, *res, *ctx = it_ctx("matter", "m-1");
	size_t i;

	for (i = 0; i < 5; i++) {
		ith_random(pt[i], 32);
		b64 = ith_b64(pt[i], 32);
		json_array_append_new(items, json_pack("{s:s, s:O}", "plaintext",
		    i == 2 ? "%%% not base64 %%%" : b64, "context", ctx));
		free(b64);
	}
	a = ith_call("POST", it_kpath(key, "wrap"), T.app,
	    json_pack("{s:o}", "batch", items), 200, NULL);
	res = json_object_get(a, "results");
	if (ith_check(json_array_size(res) == 5, "batch wrap: expected 5 results")) {
		dump = json_dumps(json_array_get(res, 2), JSON_COMPACT);
		ith_check(item_error_is(json_array_get(res, 2), "invalid_request"),
		    "batch wrap item 2 (bad base64): expected only an error "
		    "invalid_request, got %s", dump ? dump : "(none)");
		free(dump);
		for (i = 0; i < 5; i++) {
			const char *ct = json_string_value(json_object_get(
			    json_array_get(res, i), "ciphertext"));

			if (i == 2)
				continue;
			if (ith_check(ct != NULL, "batch wrap item %zu: no ciphertext", i))
				cts[i] = strdup(ct);
		}
	}
	json_decref(a);
	for (i = 0; i < 5; i++)
		if (cts[i] != NULL)
			(void)ith_unwrap_expect(key, T.app, cts[i], ctx, pt[i], 32,
			    NULL, NULL);
	if (cts[0] == NULL || cts[1] == NULL || cts[3] == NULL || cts[4] == NULL)
		goto out;

	/* unwrap and rewrap batches with one tampered blob */
	{
		static const char *const ops[] = { "unwrap", "rewrap" };
		size_t k;
		char *tampered = strdup(cts[3]);

		tampered[strlen(tampered) - 3] ^= 0x01;
		for (k = 0; k < N_OF(ops); k++) {
			items = json_array();
			for (i = 0; i < 5; i++) {
				if (i == 2)
					continue;
				json_array_append_new(items, json_pack("{s:s, s:O}",
				    "ciphertext", i == 3 ? tampered : cts[i],
				    "context", ctx));
			}
			a = ith_call("POST", it_kpath(key, ops[k]), T.app,
			    json_pack("{s:o}", "batch", items), 200, NULL);
			res = json_object_get(a, "results");
			if (ith_check(json_array_size(res) == 4,
			    "batch %s: expected 4 results", ops[k])) {
				dump = json_dumps(json_array_get(res, 2), JSON_COMPACT);
				ith_check(item_error_is(json_array_get(res, 2),
				    "invalid_ciphertext"), "batch %s item 2 (tampered):"
				    " expected only an error invalid_ciphertext, got %s",
				    ops[k], dump ? dump : "(none)");
				free(dump);
				for (i = 0; i < 4; i++) {
					json_t *r = json_array_get(res, i);

					if (i == 2)
						continue;
					ith_check(json_object_get(r, "error") == NULL &&
					    json_is_string(json_object_get(r, k == 0 ?
					    "plaintext" : "ciphertext")),
					    "batch %s item %zu: a good item failed next to a bad one",
					    ops[k], i);
				}
				if (k == 0) {
					const char *p = json_string_value(json_object_get(
					    json_array_get(res, 3), "plaintext"));
					unsigned char *got = NULL;
					size_t glen = 0;

					ith_check(p && ith_unb64(p, &got, &glen) == 0 &&
					    glen == 32 && memcmp(got, pt[4], 32) == 0,
					    "batch unwrap: item after the bad one has the wrong plaintext");
					free(got);
				}
			}
			json_decref(a);
		}
		free(tampered);
	}
out:
	for (i = 0; i < 5; i++)
		free(cts[i]);
	json_decref(ctx);
}

/* --------------------------------------------------------------- datakey */

static void
test_datakey(void)
{
	static const int bits[] = { 128, 256 };
	const char *key = it_new_key("dk", NULL);
	json_t *ctx = it_ctx("matter", "m-1"), *a;
	char *seen[4] = { 0 };
	size_t i;
	int mode;

	for (i = 0; i < N_OF(bits); i++)
		/* mode 0: return_plaintext true, 1: false, 2: absent */
		for (mode = 0; mode < 3; mode++) {
			json_t *body = json_pack("{s:i, s:O}", "bits", bits[i],
			    "context", ctx);
			const char *ct, *p;
			unsigned char *pt = NULL;
			size_t plen = 0;
			json_t *u;

			if (mode < 2)
				json_object_set_new(body, "return_plaintext",
				    json_boolean(mode == 0));
			a = ith_call("POST", it_kpath(key, "datakey"), T.app, body,
			    200, NULL);
			if (a == NULL)
				continue;
			ct = json_string_value(json_object_get(a, "ciphertext"));
			p = json_string_value(json_object_get(a, "plaintext"));
			ith_check(json_integer_value(json_object_get(a, "key_version")) == 1,
			    "datakey: key_version is not 1");
			if (!ith_check(ct != NULL, "datakey bits %d: no ciphertext", bits[i])) {
				json_decref(a);
				continue;
			}
			check_blob(ct, 1, (size_t)bits[i] / 8);
			if (mode == 0) {
				if (ith_check(p != NULL && ith_unb64(p, &pt, &plen) == 0 &&
				    plen == (size_t)bits[i] / 8, "datakey bits %d "
				    "return_plaintext true: plaintext is not %d bytes of "
				    "base64", bits[i], bits[i] / 8)) {
					(void)ith_unwrap_expect(key, T.app, ct, ctx, pt, plen,
					    NULL, NULL);
					seen[i * 2] = strdup(p);
				}
			} else {
				ith_check(json_object_get(a, "plaintext") == NULL,
				    "datakey bits %d return_plaintext %s: the answer has a "
				    "plaintext", bits[i], mode == 1 ? "false" : "absent");
				u = ith_call("POST", it_kpath(key, "unwrap"), T.app,
				    unwrap_body(ct, ctx), 200, NULL);
				p = json_string_value(json_object_get(u, "plaintext"));
				ith_check(p && ith_unb64(p, &pt, &plen) == 0 &&
				    plen == (size_t)bits[i] / 8, "datakey bits %d: its "
				    "ciphertext does not unwrap to %d bytes", bits[i],
				    bits[i] / 8);
				json_decref(u);
			}
			free(pt);
			json_decref(a);
		}
	/* default bits is 256 */
	a = ith_call("POST", it_kpath(key, "datakey"), T.app,
	    json_pack("{s:O, s:b}", "context", ctx, "return_plaintext", 1), 200, NULL);
	if (a != NULL) {
		unsigned char *pt = NULL;
		size_t plen = 0;
		const char *p = json_string_value(json_object_get(a, "plaintext"));

		ith_check(p && ith_unb64(p, &pt, &plen) == 0 && plen == 32,
		    "datakey without bits: plaintext is not 32 bytes");
		ith_check(p && seen[2] && strcmp(p, seen[2]) != 0,
		    "two 256-bit datakeys are equal");
		free(pt);
		json_decref(a);
	}
	/* bad bits */
	(void)ith_expect_error("POST", it_kpath(key, "datakey"), T.app,
	    json_pack("{s:i}", "bits", 192), 400, "invalid_request");
	(void)ith_expect_error("POST", it_kpath(key, "datakey"), T.app,
	    json_pack("{s:i}", "bits", 0), 400, "invalid_request");
	(void)ith_expect_error("POST", it_kpath(key, "datakey"), T.app,
	    json_pack("{s:i}", "bits", 512), 400, "invalid_request");
	(void)ith_expect_error("POST", it_kpath(key, "datakey"), T.app,
	    json_pack("{s:s}", "bits", "256"), 400, "invalid_request");
	(void)ith_expect_error("POST", it_kpath(key, "datakey"), T.app,
	    json_pack("{s:s}", "return_plaintext", "yes"), 400, "invalid_request");
	for (i = 0; i < 4; i++)
		free(seen[i]);
	json_decref(ctx);
}

/* ------------------------------------------------------- context binding */

#define expect_bad_unwrap(key, ct, ctx, what) \
	expect_bad_unwrap_at(__FILE__, __LINE__, key, ct, ctx, what)
static void
expect_bad_unwrap_at(const char *file, int line, const char *key,
    const char *ct, json_t *ctx, const char *what)
{
	json_t *a;
	long st;
	char *body, *raw = NULL;
	const char *code;
	json_t *b = unwrap_body(ct, ctx);

	body = json_dumps(b, JSON_COMPACT);
	json_decref(b);
	if (ith_request_raw_at(file, line, "POST", it_kpath(key, "unwrap"),
	    T.app, body, strlen(body), NULL, &st, &raw, NULL, &a, NULL) == 0) {
		code = json_string_value(json_object_get(json_object_get(a,
		    "error"), "code"));
		ith_check_at(st == 400 && code && strcmp(code, "invalid_ciphertext") == 0,
		    file, line, "unwrap %s: expected 400 invalid_ciphertext, got %ld: %.300s",
		    what, st, raw);
		json_decref(a);
	}
	free(raw);
	free(body);
}

static void
test_context_binding(void)
{
	const char *key = it_new_key("ctx", NULL);
	char other[160];
	unsigned char pt[32], pt2[32];
	json_t *A = json_pack("{s:s, s:s}", "matter", "m-1", "client", "c-9");
	json_t *A_reordered = json_pack("{s:s, s:s}", "client", "c-9", "matter", "m-1");
	json_t *B = json_pack("{s:s, s:s}", "matter", "m-2", "client", "c-9");
	json_t *A_extra = json_pack("{s:s, s:s, s:s}", "matter", "m-1", "client",
	    "c-9", "x", "y");
	json_t *A_less = json_pack("{s:s}", "matter", "m-1");
	json_t *A_case = json_pack("{s:s, s:s}", "matter", "M-1", "client", "c-9");
	json_t *empty = json_object();
	json_t *abc = json_pack("{s:s}", "a", "bc"), *ab_c = json_pack("{s:s}", "ab", "c");
	json_t *a_b_c = json_pack("{s:s, s:s}", "a", "b", "c", "");
	char *ct, *ct2, *ct3;

	snprintf(other, sizeof(other), "%s", it_new_key("ctx", NULL));
	ith_random(pt, sizeof(pt));
	ith_random(pt2, sizeof(pt2));
	if ((ct = ith_wrap(key, T.app, pt, 32, A, NULL)) == NULL)
		goto out;
	(void)ith_unwrap_expect(key, T.app, ct, A, pt, 32, NULL, NULL);
	(void)ith_unwrap_expect(key, T.app, ct, A_reordered, pt, 32, NULL, NULL);
	expect_bad_unwrap(key, ct, B, "under context B");
	expect_bad_unwrap(key, ct, empty, "under context {}");
	expect_bad_unwrap(key, ct, NULL, "without a context field");
	expect_bad_unwrap(key, ct, A_extra, "with an extra pair");
	expect_bad_unwrap(key, ct, A_less, "with a pair missing");
	expect_bad_unwrap(key, ct, A_case, "with a value in another case");
	expect_bad_unwrap(other, ct, A, "under another key (same version 1)");
	(void)ith_expect_error("POST", it_kpath(key, "rewrap"), T.app,
	    unwrap_body(ct, B), 400, "invalid_ciphertext");
	(void)ith_expect_error("POST", it_kpath(other, "rewrap"), T.app,
	    unwrap_body(ct, A), 400, "invalid_ciphertext");

	/* length-prefixed canonical form: {"a":"bc"} is not {"ab":"c"} */
	if ((ct2 = ith_wrap(key, T.app, pt2, 32, abc, NULL)) != NULL) {
		(void)ith_unwrap_expect(key, T.app, ct2, abc, pt2, 32, NULL, NULL);
		expect_bad_unwrap(key, ct2, ab_c, "{\"a\":\"bc\"} blob under {\"ab\":\"c\"}");
		expect_bad_unwrap(key, ct2, a_b_c, "{\"a\":\"bc\"} blob under {\"a\":\"b\",\"c\":\"\"}");
		free(ct2);
	}
	/* no context is the same as {} */
	if ((ct3 = ith_wrap(key, T.app, pt2, 32, NULL, NULL)) != NULL) {
		(void)ith_unwrap_expect(key, T.app, ct3, empty, pt2, 32, NULL, NULL);
		(void)ith_unwrap_expect(key, T.app, ct3, NULL, pt2, 32, NULL, NULL);
		expect_bad_unwrap(key, ct3, A, "context-free blob under context A");
		free(ct3);
	}
	free(ct);
out:
	json_decref(A);
	json_decref(A_reordered);
	json_decref(B);
	json_decref(A_extra);
	json_decref(A_less);
	json_decref(A_case);
	json_decref(empty);
	json_decref(abc);
	json_decref(ab_c);
	json_decref(a_b_c);
}

/* Unwraps `ct` and returns 1 when the answer is 400 invalid_ciphertext;
 * describes the answer in `got` otherwise. No assertion of its own. */
static int
unwrap_refused(const char *key, const char *ct, json_t *ctx, char *got,
    size_t gotlen)
{
	json_t *b = unwrap_body(ct, ctx), *a = NULL;
	char *body = json_dumps(b, JSON_COMPACT), *raw = NULL;
	const char *code;
	long st = 0;
	int ok = 0;

	json_decref(b);
	if (ith_request_raw("POST", it_kpath(key, "unwrap"), T.app, body,
	    strlen(body), NULL, &st, &raw, NULL, &a, NULL) == 0) {
		code = json_string_value(json_object_get(json_object_get(a,
		    "error"), "code"));
		ok = st == 400 && code != NULL && strcmp(code, "invalid_ciphertext") == 0;
		snprintf(got, gotlen, "%ld %.120s", st, raw);
	} else
		snprintf(got, gotlen, "no answer");
	json_decref(a);
	free(raw);
	free(body);
	return ok;
}

static void
test_flip_every_payload_byte(void)
{
	const char *key = it_new_key("flip", NULL);
	json_t *ctx = it_ctx("matter", "m-1");
	unsigned char pt[32], *payload = NULL, *copy;
	size_t len = 0, pos, bad = 0;
	char *ct, *mod, got[200], first[260] = "";
	long v;

	ith_random(pt, sizeof(pt));
	if ((ct = ith_wrap(key, T.app, pt, sizeof(pt), ctx, &v)) == NULL)
		goto out;
	if (!ith_check(blob_parse(ct, &v, &payload, &len) == 0 && len > 28,
	    "cannot parse ciphertext %s", ct))
		goto out;
	copy = malloc(len + 1);
	for (pos = 0; pos < len; pos++) {
		memcpy(copy, payload, len);
		copy[pos] ^= 0x01;
		mod = blob_make("kms:v1:", copy, len);
		if (!unwrap_refused(key, mod, ctx, got, sizeof(got)) && bad++ == 0)
			snprintf(first, sizeof(first), "byte %zu: %s", pos, got);
		free(mod);
	}
	ith_check(bad == 0, "flipping one payload byte: %zu of %zu positions were "
	    "not refused with 400 invalid_ciphertext (first %s)", bad, len, first);

	/* truncated, extended, empty payloads */
	{
		static const struct { long cut; const char *what; } cuts[] = {
			{ 1, "last byte cut" }, { 16, "tag cut" },
			{ -1, "one byte appended" },
		};
		size_t i;

		for (i = 0; i < N_OF(cuts); i++) {
			size_t n = cuts[i].cut > 0 ? len - (size_t)cuts[i].cut : len + 1;

			memcpy(copy, payload, len);
			copy[len] = 0;
			mod = blob_make("kms:v1:", copy, n);
			ith_check(unwrap_refused(key, mod, ctx, got, sizeof(got)),
			    "unwrap with %s: expected 400 invalid_ciphertext, got %s",
			    cuts[i].what, got);
			free(mod);
		}
		mod = blob_make("kms:v1:", payload, 12);
		ith_check(unwrap_refused(key, mod, ctx, got, sizeof(got)),
		    "unwrap of a nonce only: expected 400 invalid_ciphertext, got %s", got);
		free(mod);
		mod = blob_make("kms:v1:", payload, 27);
		ith_check(unwrap_refused(key, mod, ctx, got, sizeof(got)),
		    "unwrap of 27 bytes: expected 400 invalid_ciphertext, got %s", got);
		free(mod);
		ith_check(unwrap_refused(key, "kms:v1:", ctx, got, sizeof(got)),
		    "unwrap of an empty payload: expected 400 invalid_ciphertext, got %s",
		    got);
		ith_check(unwrap_refused(key, "", ctx, got, sizeof(got)),
		    "unwrap of \"\": expected 400 invalid_ciphertext, got %s", got);
		ith_check(unwrap_refused(key, "kms:v1:!!!!", ctx, got, sizeof(got)),
		    "unwrap with a non-base64 payload: expected 400 invalid_ciphertext,"
		    " got %s", got);
	}
	free(copy);
out:
	free(payload);
	free(ct);
	json_decref(ctx);
}

static void
test_flip_every_header_byte(void)
{
	const char *key = it_new_key("flip", NULL);
	json_t *ctx = it_ctx("matter", "m-1"), *a;
	unsigned char pt[32];
	char *ct1 = NULL, *ct2 = NULL, *mod, got[200];
	const char *p1, *p2;
	size_t pos;

	ith_random(pt, sizeof(pt));
	if ((ct1 = ith_wrap(key, T.app, pt, sizeof(pt), ctx, NULL)) == NULL)
		goto out;
	a = ith_call("POST", it_kpath(key, "rotate"), T.admin, NULL, 200, NULL);
	json_decref(a);
	if ((ct2 = ith_wrap(key, T.app, pt, sizeof(pt), ctx, NULL)) == NULL)
		goto out;
	if (!ith_check(strncmp(ct1, "kms:v1:", 7) == 0 &&
	    strncmp(ct2, "kms:v2:", 7) == 0, "blobs are not v1 and v2: %.10s %.10s",
	    ct1, ct2))
		goto out;
	p1 = ct1 + 7;
	p2 = ct2 + 7;
	/* version moved to one that exists: authentication must fail */
	if (asprintf(&mod, "kms:v2:%s", p1) > 0) {
		ith_check(unwrap_refused(key, mod, ctx, got, sizeof(got)),
		    "v1 blob relabelled kms:v2: expected 400 invalid_ciphertext, got %s", got);
		free(mod);
	}
	if (asprintf(&mod, "kms:v1:%s", p2) > 0) {
		ith_check(unwrap_refused(key, mod, ctx, got, sizeof(got)),
		    "v2 blob relabelled kms:v1: expected 400 invalid_ciphertext, got %s", got);
		free(mod);
	}
	/* each header byte changed in its lowest bit: jms, kls, kmr, ';', w, v0 */
	for (pos = 0; pos < 7; pos++) {
		mod = strdup(ct1);
		mod[pos] ^= 0x01;
		ith_check(unwrap_refused(key, mod, ctx, got, sizeof(got)),
		    "header byte %zu flipped ('%.7s'): expected 400 invalid_ciphertext,"
		    " got %s", pos, mod, got);
		free(mod);
	}
	{
		static const char *const headers[] = { "kmz:v1:", "KMS:v1:",
		    "kms:V1:", "kms:v3:", "kms:v:", "kms:v-1:", "kms:1:",
		    "kms:v1::", "kms::v1:", "kms:v1", "kmsv1:",
		    "kms:v99999999999999999999:" };
		size_t i;

		for (i = 0; i < N_OF(headers); i++) {
			if (asprintf(&mod, "%s%s", headers[i], p1) < 0)
				continue;
			ith_check(unwrap_refused(key, mod, ctx, got, sizeof(got)),
			    "header '%s': expected 400 invalid_ciphertext, got %s",
			    headers[i], got);
			free(mod);
		}
	}
out:
	free(ct1);
	free(ct2);
	json_decref(ctx);
}

/* Non-canonical spellings of the version number must not be accepted as
 * the same version (blob malleability; kmsctl rewrap compares headers). */
static void
test_header_strict_version(void)
{
	const char *key = it_new_key("flip", NULL);
	json_t *ctx = it_ctx("matter", "m-1");
	unsigned char pt[32];
	char *ct, *mod, got[200];
	static const char *const headers[] = { "kms:v01:", "kms:v+1:",
	    "kms:v 1:", "kms:v4294967297:", "kms:v18446744073709551617:",
	    " kms:v1:" };
	size_t i;

	ith_random(pt, sizeof(pt));
	if ((ct = ith_wrap(key, T.app, pt, sizeof(pt), ctx, NULL)) == NULL)
		goto out;
	for (i = 0; i < N_OF(headers); i++) {
		if (asprintf(&mod, "%s%s", headers[i], ct + 7) < 0)
			continue;
		ith_check(unwrap_refused(key, mod, ctx, got, sizeof(got)),
		    "header '%s' (a non-canonical v1): expected 400 invalid_ciphertext,"
		    " got %s", headers[i], got);
		free(mod);
	}
	if (asprintf(&mod, "%s ", ct) > 0) {
		ith_check(unwrap_refused(key, mod, ctx, got, sizeof(got)),
		    "blob with a trailing space: expected 400 invalid_ciphertext, got %s",
		    got);
		free(mod);
	}
	free(ct);
out:
	json_decref(ctx);
}

static void
test_required_context(void)
{
	const char *key = it_new_key("rc", json_pack("{s:[s]}",
	    "required_context", "matter"));
	json_t *m = it_ctx("matter", "m-1"), *other = it_ctx("client", "x");
	json_t *both = json_pack("{s:s, s:s}", "matter", "m-1", "client", "x");
	json_t *a, *rc, *res, *items;
	unsigned char pt[32];
	char *b64, *ct;

	a = ith_call("GET", it_kpath(key, NULL), T.admin, NULL, 200, NULL);
	rc = json_object_get(a, "required_context");
	ith_check(json_is_array(rc) && json_array_size(rc) == 1 &&
	    json_is_string(json_array_get(rc, 0)) &&
	    strcmp(json_string_value(json_array_get(rc, 0)), "matter") == 0,
	    "GET %s: required_context is not [\"matter\"]", key);
	json_decref(a);

	ith_random(pt, sizeof(pt));
	b64 = ith_b64(pt, sizeof(pt));
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), T.app,
	    json_pack("{s:s}", "plaintext", b64), 400, "missing_context");
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), T.app,
	    json_pack("{s:s, s:{}}", "plaintext", b64, "context"), 400,
	    "missing_context");
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), T.app,
	    json_pack("{s:s, s:O}", "plaintext", b64, "context", other), 400,
	    "missing_context");
	(void)ith_expect_error("POST", it_kpath(key, "datakey"), T.app,
	    json_pack("{s:i}", "bits", 256), 400, "missing_context");
	if ((ct = ith_wrap(key, T.app, pt, sizeof(pt), m, NULL)) != NULL) {
		(void)ith_unwrap_expect(key, T.app, ct, m, pt, sizeof(pt), NULL, NULL);
		(void)ith_expect_error("POST", it_kpath(key, "unwrap"), T.app,
		    json_pack("{s:s}", "ciphertext", ct), 400, "missing_context");
		(void)ith_expect_error("POST", it_kpath(key, "rewrap"), T.app,
		    json_pack("{s:s, s:O}", "ciphertext", ct, "context", other), 400,
		    "missing_context");
		free(ct);
	}
	if ((ct = ith_wrap(key, T.app, pt, sizeof(pt), both, NULL)) != NULL) {
		(void)ith_unwrap_expect(key, T.app, ct, both, pt, sizeof(pt), NULL,
		    NULL);
		free(ct);
	}
	/* in a batch, the item without it fails alone */
	items = json_pack("[{s:s, s:O}, {s:s}]", "plaintext", b64, "context", m,
	    "plaintext", b64);
	a = ith_call("POST", it_kpath(key, "wrap"), T.app,
	    json_pack("{s:o}", "batch", items), 200, NULL);
	res = json_object_get(a, "results");
	ith_check(json_array_size(res) == 2 &&
	    json_is_string(json_object_get(json_array_get(res, 0), "ciphertext")) &&
	    item_error_is(json_array_get(res, 1), "missing_context"),
	    "batch wrap on a key with required_context: expected [ok, "
	    "missing_context]");
	json_decref(a);
	free(b64);
	json_decref(m);
	json_decref(other);
	json_decref(both);
}

static void
test_context_limits(void)
{
	const char *key = it_new_key("cl", NULL);
	json_t *ctx16 = json_object(), *ctx17, *c;
	unsigned char pt[16];
	char name[300], *b64, *ct;
	int i;

	ith_random(pt, sizeof(pt));
	b64 = ith_b64(pt, sizeof(pt));
	for (i = 0; i < 16; i++) {
		snprintf(name, sizeof(name), "k%02d", i);
		json_object_set_new(ctx16, name, json_string("v"));
	}
	if ((ct = ith_wrap(key, T.app, pt, sizeof(pt), ctx16, NULL)) != NULL) {
		(void)ith_unwrap_expect(key, T.app, ct, ctx16, pt, sizeof(pt), NULL,
		    NULL);
		free(ct);
	}
	ctx17 = json_deep_copy(ctx16);
	json_object_set_new(ctx17, "k16", json_string("v"));
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), T.app,
	    json_pack("{s:s, s:o}", "plaintext", b64, "context", ctx17), 400,
	    "invalid_request");

	/* names 1..256 bytes, values 0..256 bytes */
	memset(name, 'n', 256);
	name[256] = '\0';
	c = json_pack("{s:s}", name, "");
	if ((ct = ith_wrap(key, T.app, pt, sizeof(pt), c, NULL)) != NULL) {
		(void)ith_unwrap_expect(key, T.app, ct, c, pt, sizeof(pt), NULL, NULL);
		free(ct);
	}
	json_decref(c);
	c = json_pack("{s:s}", "m", name);
	if ((ct = ith_wrap(key, T.app, pt, sizeof(pt), c, NULL)) != NULL) {
		(void)ith_unwrap_expect(key, T.app, ct, c, pt, sizeof(pt), NULL, NULL);
		free(ct);
	}
	json_decref(c);
	name[256] = 'n';
	name[257] = '\0';
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), T.app,
	    json_pack("{s:s, s:{s:s}}", "plaintext", b64, "context", name, "v"),
	    400, "invalid_request");
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), T.app,
	    json_pack("{s:s, s:{s:s}}", "plaintext", b64, "context", "m", name),
	    400, "invalid_request");
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), T.app,
	    json_pack("{s:s, s:{s:s}}", "plaintext", b64, "context", "", "v"),
	    400, "invalid_request");
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), T.app,
	    json_pack("{s:s, s:{s:i}}", "plaintext", b64, "context", "m", 1),
	    400, "invalid_request");
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), T.app,
	    json_pack("{s:s, s:{s:n}}", "plaintext", b64, "context", "m"),
	    400, "invalid_request");
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), T.app,
	    json_pack("{s:s, s:s}", "plaintext", b64, "context", "m=1"),
	    400, "invalid_request");
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), T.app,
	    json_pack("{s:s, s:[s]}", "plaintext", b64, "context", "m"),
	    400, "invalid_request");
	free(b64);
	json_decref(ctx16);
}

/* ---------------------------------------------------- errors, robustness */

static void
expect_raw_error_at(const char *file, int line, const char *method,
    const char *path, const char *token, const void *body, size_t len,
    long status, const char *code)
{
	json_t *a = NULL;
	char *raw = NULL;
	long st;
	const char *c;

	if (ith_request_raw_at(file, line, method, path, token, body, len, NULL,
	    &st, &raw, NULL, &a, NULL) != 0)
		return;
	c = json_string_value(json_object_get(json_object_get(a, "error"), "code"));
	ith_check_at(st == status && (code == NULL || (c && strcmp(c, code) == 0)),
	    file, line, "%s %s with body '%.60s': expected %ld %s, got %ld: %.300s",
	    method, path, body ? (const char *)body : "", status, code ? code : "",
	    st, raw);
	json_decref(a);
	free(raw);
}
#define expect_raw_error(m, p, t, body, st, code) \
	expect_raw_error_at(__FILE__, __LINE__, m, p, t, body, \
	    (body) ? strlen(body) : 0, st, code)

static void
test_invalid_json(void)
{
	static const char *const bodies[] = {
		"{not json", "", "[1,2]", "[{\"plaintext\":\"AAECAw==\"}]",
		"\"AAECAw==\"", "null", "42", "{\"plaintext\":\"AAECAw==\"} x",
		"{\"plaintext\":\"AAECAw==\",}",
		"{\"plaintext\":\"AAECAw==\",\"plaintext\":\"AAECAw==\"}",
		"{\"plaintext\":\"AAECAw==\",\"context\":{\"m\":\"a\",\"m\":\"b\"}}",
		"{\"plaintext\":\"\xff\xfe\"}",
		"{\"plaintext\":\"AAECAw==\",\"context\":{\"m\":\"\xc3\x28\"}}",
	};
	const char *key = it_new_key("err", NULL);
	size_t i;

	for (i = 0; i < N_OF(bodies); i++)
		expect_raw_error("POST", it_kpath(key, "wrap"), T.app, bodies[i], 400,
		    "invalid_json");
	expect_raw_error("POST", "/v1/keys", T.admin,
	    "{\"name\":\"dup-a\",\"name\":\"dup-b\",\"type\":\"aes256-gcm\"}", 400,
	    "invalid_json");
	expect_raw_error("POST", "/v1/tokens", T.admin,
	    "{\"role\":\"app\",\"keys\":\"a-*\",\"keys\":\"*\"}", 400,
	    "invalid_json");
	expect_raw_error("POST", "/v1/keys", T.admin, "[\"name\"]", 400,
	    "invalid_json");
}

static void
test_wrong_types(void)
{
	static const char *const wrap_bodies[] = {
		"{\"plaintext\":12}", "{\"plaintext\":null}",
		"{\"plaintext\":[\"AAECAw==\"]}", "{\"plaintext\":true}",
		"{}", "{\"context\":{\"m\":\"a\"}}",
		"{\"plaintext\":\"AAECAw==\",\"context\":\"m\"}",
		"{\"plaintext\":\"AAECAw==\",\"context\":7}",
		"{\"batch\":\"x\"}",
	};
	static const char *const unwrap_bodies[] = {
		"{\"ciphertext\":12}", "{\"ciphertext\":null}", "{}",
		"{\"ciphertext\":{\"v\":1}}",
	};
	const char *key = it_new_key("err", NULL);
	size_t i;

	for (i = 0; i < N_OF(wrap_bodies); i++)
		expect_raw_error("POST", it_kpath(key, "wrap"), T.app, wrap_bodies[i],
		    400, "invalid_request");
	for (i = 0; i < N_OF(unwrap_bodies); i++) {
		expect_raw_error("POST", it_kpath(key, "unwrap"), T.app,
		    unwrap_bodies[i], 400, "invalid_request");
		expect_raw_error("POST", it_kpath(key, "rewrap"), T.app,
		    unwrap_bodies[i], 400, "invalid_request");
	}
	expect_raw_error("POST", "/v1/keys", T.admin,
	    "{\"name\":5,\"type\":\"aes256-gcm\"}", 400, "invalid_request");
	expect_raw_error("POST", "/v1/keys", T.admin, "{\"type\":\"aes256-gcm\"}",
	    400, "invalid_request");
	expect_raw_error("POST", "/v1/keys", T.admin,
	    "{\"name\":\"wt-t\",\"type\":7}", 400, "invalid_request");
	expect_raw_error("POST", "/v1/keys", T.admin,
	    "{\"name\":\"wt-past\",\"expires_at\":\"2020-01-01T00:00:00Z\"}",
	    400, "invalid_request");
	expect_raw_error("POST", "/v1/keys", T.admin,
	    "{\"name\":\"wt-dup\",\"required_context\":[\"m\",\"m\"]}",
	    400, "invalid_request");
	expect_raw_error("POST", "/v1/keys", T.admin,
	    "{\"name\":\"wt-rc\",\"required_context\":[\"\"]}",
	    400, "invalid_request");
	expect_raw_error("POST", "/v1/keys", T.admin,
	    "{\"name\":\"wt-rc2\",\"required_context\":[1]}",
	    400, "invalid_request");
	{
		/* at most 16 required names */
		json_t *names = json_array();
		char nm[8];
		int i2;

		for (i2 = 0; i2 < 17; i2++) {
			snprintf(nm, sizeof(nm), "r%02d", i2);
			json_array_append_new(names, json_string(nm));
		}
		(void)ith_expect_error("POST", "/v1/keys", T.admin,
		    json_pack("{s:s, s:o}", "name", "wt-rc17", "required_context",
		    names), 400, "invalid_request");
	}
	/* nothing of the refused creates exists */
	(void)ith_expect_error("GET", it_kpath("wt-past", NULL), T.admin, NULL, 404,
	    "key_not_found");
	(void)ith_expect_error("GET", it_kpath("wt-dup", NULL), T.admin, NULL, 404,
	    "key_not_found");
	(void)ith_expect_error("GET", it_kpath("wt-rc17", NULL), T.admin, NULL, 404,
	    "key_not_found");
	expect_raw_error("POST", "/v1/keys", T.admin,
	    "{\"name\":\"wt-y\",\"type\":\"aes256-gcm\",\"required_context\":\"m\"}",
	    400, "invalid_request");
	expect_raw_error("POST", "/v1/keys", T.admin,
	    "{\"name\":\"wt-z\",\"type\":\"aes256-gcm\",\"rotation_period\":\"soon\"}",
	    400, "invalid_request");
	expect_raw_error("POST", "/v1/keys", T.admin,
	    "{\"name\":\"wt-w\",\"type\":\"aes256-gcm\",\"expires_at\":\"tomorrow\"}",
	    400, "invalid_request");
	expect_raw_error("POST", it_kpath(key, "versions/1/state"), T.admin,
	    "{\"state\":7}", 400, "invalid_request");
	expect_raw_error("POST", it_kpath(key, "versions/1/state"), T.admin,
	    "{\"state\":\"sleeping\"}", 400, "invalid_request");
}

static void
test_invalid_base64(void)
{
	static const char *const bad[] = { "not base64!", "AAA", "AAECAw=",
	    "AA ECAw==", "AAECAw==\n", "A===", "AAECAw==AAECAw==", "AAE-Aw==",
	    "AAE_Aw==" };
	const char *key = it_new_key("err", NULL);
	size_t i;

	for (i = 0; i < N_OF(bad); i++)
		(void)ith_expect_error("POST", it_kpath(key, "wrap"), T.app,
		    json_pack("{s:s}", "plaintext", bad[i]), 400, "invalid_request");
}

static void
test_unknown_routes(void)
{
	static const char *const paths[] = { "/v1/nope", "/v2/keys", "/",
	    "/v1", "/v1/keys/x/y/z/w", "/v1/tokens/x/y", "/v1/healthz" };
	const char *key = it_new_key("err", NULL);
	size_t i;

	for (i = 0; i < N_OF(paths); i++) {
		(void)ith_expect_error("GET", paths[i], T.admin, NULL, 404, "not_found");
		/* answered before the token is looked at */
		(void)ith_expect_error("GET", paths[i], NULL, NULL, 404, "not_found");
		(void)ith_expect_error("GET", paths[i], "garbage", NULL, 404,
		    "not_found");
	}
	(void)ith_expect_error("POST", it_kpath(key, "frobnicate"), T.app,
	    json_object(), 404, "not_found");
}

static void
test_wrong_method(void)
{
	const char *key = it_new_key("err", NULL);
	/* each with a token that may use the route with its right method */
	const struct { const char *m; const char *op; const char *tok; } cases[] = {
		{ "GET", "wrap", T.app }, { "GET", "unwrap", T.app },
		{ "DELETE", "rewrap", T.app }, { "PUT", "datakey", T.app },
		{ "GET", "rotate", T.admin }, { "PUT", NULL, T.admin },
		{ "DELETE", NULL, T.admin }, { "POST", NULL, T.admin },
		{ "GET", "versions/1/state", T.admin },
	};
	size_t i;

	for (i = 0; i < N_OF(cases); i++) {
		(void)ith_expect_error(cases[i].m, it_kpath(key, cases[i].op),
		    cases[i].tok, NULL, 405, "method_not_allowed");
		/* answered before the token is looked at */
		(void)ith_expect_error(cases[i].m, it_kpath(key, cases[i].op),
		    NULL, NULL, 405, "method_not_allowed");
	}
	(void)ith_expect_error("DELETE", "/v1/keys", T.admin, NULL, 405,
	    "method_not_allowed");
	(void)ith_expect_error("POST", "/v1/health", NULL, NULL, 405,
	    "method_not_allowed");
	(void)ith_expect_error("PUT", "/v1/tokens", T.admin, NULL, 405,
	    "method_not_allowed");
}

static void
test_body_too_large(void)
{
	const char *key = it_new_key("err", NULL);
	size_t n;
	char *body;

	body = malloc(MIB + 2);
	/* {"plaintext":"AAAA...."} of exactly `n` bytes */
	for (n = MIB + 1; n >= MIB; n--) {
		size_t fill = n - strlen("{\"plaintext\":\"\"}");

		memcpy(body, "{\"plaintext\":\"", 14);
		memset(body + 14, 'A', fill);
		memcpy(body + 14 + fill, "\"}", 3);
		if (n == MIB + 1)
			expect_raw_error_at(__FILE__, __LINE__, "POST",
			    it_kpath(key, "wrap"), T.app, body, n, 413,
			    "payload_too_large");
		else
			/* 1 MiB itself is read and refused for what it says */
			expect_raw_error_at(__FILE__, __LINE__, "POST",
			    it_kpath(key, "wrap"), T.app, body, n, 400,
			    "invalid_request");
	}
	memset(body, ' ', MIB + 1);
	memcpy(body, "{}", 2);
	expect_raw_error_at(__FILE__, __LINE__, "POST", "/v1/keys", T.admin, body,
	    MIB + 1, 413, "payload_too_large");
	free(body);
	body = malloc(4 * MIB);
	memset(body, 'x', 4 * MIB);
	expect_raw_error_at(__FILE__, __LINE__, "POST", it_kpath(key, "unwrap"),
	    T.app, body, 4 * MIB, 413, "payload_too_large");
	free(body);
}

static void
test_bad_key_names(void)
{
	static const long nf[] = { 400, 404 };
	static const char *const bad_create[] = { "../etc", "a/b", "..", ".hidden",
	    "-x", "_x", "", "a b", "caf\xc3\xa9", "a%2Fb", "a\\b", "x\ny" };
	char longname[200], path[600];
	size_t i;
	json_t *a;
	long st;

	for (i = 0; i < N_OF(bad_create); i++)
		(void)ith_expect_error("POST", "/v1/keys", T.admin,
		    json_pack("{s:s, s:s}", "name", bad_create[i], "type",
		    "aes256-gcm"), 400, "invalid_request");
	memset(longname, 'k', 129);
	longname[129] = '\0';
	(void)ith_expect_error("POST", "/v1/keys", T.admin,
	    json_pack("{s:s, s:s}", "name", longname, "type", "aes256-gcm"), 400,
	    "invalid_request");
	snprintf(path, sizeof(path), "/v1/keys/%s", longname);
	json_decref(ith_call_any("GET", path, T.admin, NULL, nf, 2, &st));
	snprintf(path, sizeof(path), "/v1/keys/%s/wrap", longname);
	json_decref(ith_call_any("POST", path, T.app,
	    "{\"plaintext\":\"AAECAw==\"}", nf, 2, &st));

	/* 128 characters is allowed */
	longname[128] = '\0';
	if (ith_key_create(longname, NULL) == 0) {
		a = ith_call("GET", it_kpath(longname, NULL), T.admin, NULL, 200, NULL);
		json_decref(a);
		{
			unsigned char pt[8];
			char *ct;

			ith_random(pt, sizeof(pt));
			if ((ct = ith_wrap(longname, T.app, pt, 8, NULL, NULL)) != NULL) {
				(void)ith_unwrap_expect(longname, T.app, ct, NULL, pt, 8,
				    NULL, NULL);
				free(ct);
			}
		}
	}

	/* a NUL in the path must not cut it short onto an existing key */
	{
		const char *k = it_new_key("nul", NULL);

		snprintf(path, sizeof(path), "/v1/keys/%s%%00x", k);
		json_decref(ith_call_any("GET", path, T.admin, NULL, nf, 2, &st));
		snprintf(path, sizeof(path), "/v1/keys/%s%%00/wrap", k);
		json_decref(ith_call_any("POST", path, T.app,
		    "{\"plaintext\":\"AAECAw==\"}", nf, 2, &st));
		snprintf(path, sizeof(path), "/v1/keys/%s/wrap%%00x", k);
		json_decref(ith_call_any("POST", path, T.app,
		    "{\"plaintext\":\"AAECAw==\"}", nf, 2, &st));
	}

	/* traversal in the path is never routed anywhere else */
	{
		static const char *const paths[] = { "/v1/keys/../tokens",
		    "/v1/keys/..%2Ftokens", "/v1/keys/..%2F..%2Fetc%2Fpasswd",
		    "/v1/keys/%2e%2e", "/v1/keys/..", "/v1/keys/.",
		    "/v1/keys/a%00b", "/v1/keys/%2e%2e/tokens" };

		for (i = 0; i < N_OF(paths); i++) {
			a = ith_call_any("GET", paths[i], T.admin, NULL, nf, 2, &st);
			json_decref(a);
			snprintf(path, sizeof(path), "%s/wrap", paths[i]);
			a = ith_call_any("POST", path, T.app,
			    "{\"plaintext\":\"AAECAw==\"}", nf, 2, &st);
			json_decref(a);
		}
	}
}

static void
test_not_found_objects(void)
{
	const char *key = it_new_key("nf", NULL);

	(void)ith_expect_error("POST", it_kpath("no-such-key", "wrap"), T.app,
	    json_pack("{s:s}", "plaintext", "AAECAw=="), 404, "key_not_found");
	(void)ith_expect_error("POST", it_kpath("no-such-key", "unwrap"), T.app,
	    json_pack("{s:s}", "ciphertext", "kms:v1:AAAA"), 404, "key_not_found");
	(void)ith_expect_error("GET", it_kpath("no-such-key", NULL), T.admin, NULL,
	    404, "key_not_found");
	(void)ith_expect_error("POST", it_kpath("no-such-key", "rotate"), T.admin,
	    NULL, 404, "key_not_found");
	(void)ith_expect_error("POST", it_kpath(key, "versions/99/state"), T.admin,
	    json_pack("{s:s}", "state", "retired"), 404, "version_not_found");
	(void)ith_expect_error("POST", it_kpath(key, "versions/abc/state"), T.admin,
	    json_pack("{s:s}", "state", "retired"), 404, "version_not_found");
	(void)ith_expect_error("POST", it_kpath(key, "versions/0/state"), T.admin,
	    json_pack("{s:s}", "state", "retired"), 404, "version_not_found");
	(void)ith_expect_error("POST", it_kpath(key, "versions/-1/state"), T.admin,
	    json_pack("{s:s}", "state", "retired"), 404, "version_not_found");
	(void)ith_expect_error("DELETE", "/v1/tokens/0123456789abcdef", T.admin,
	    NULL, 404, "token_not_found");
	(void)ith_expect_error("POST", "/v1/keys", T.admin,
	    json_pack("{s:s, s:s}", "name", key, "type", "aes256-gcm"), 409,
	    "key_exists");
	/* a blob naming a version the key does not have */
	(void)ith_expect_error("POST", it_kpath(key, "unwrap"), T.app,
	    json_pack("{s:s}", "ciphertext",
	    "kms:v7:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), 400,
	    "invalid_ciphertext");
}

static int
port_of_base(void)
{
	const char *p = strrchr(ith_base_url(), ':');

	return p ? atoi(p + 1) : 0;
}

/* Sends `data` on a fresh connection, then reads (bounded) until the peer
 * closes or 2 s pass, then closes. */
static void
raw_exchange(const char *data, size_t len, int half_close)
{
	struct sockaddr_in sa;
	char buf[4096];
	int fd, i;

	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) < 0)
		return;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((unsigned short)port_of_base());
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return;
	}
	if (len > 0)
		(void)send(fd, data, len, MSG_NOSIGNAL);
	if (half_close)
		shutdown(fd, SHUT_WR);
	for (i = 0; i < 20; i++) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		ssize_t n;

		if (poll(&pfd, 1, 100) <= 0)
			continue;
		if ((n = recv(fd, buf, sizeof(buf), 0)) <= 0)
			break;
	}
	close(fd);
}

static void
test_raw_garbage(void)
{
	static const char *const junk[] = {
		"GARBAGE\r\n\r\n",
		"GET\r\n\r\n",
		"POST /v1/keys/x/wrap HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{\"pl",
		"POST /v1/keys/x/wrap HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
		"POST /v1/keys/x/wrap HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n",
		"GET /v1/health HTTP/1.1\r\nHost: a\r\nX: \x01\x02\x03\r\n\r\n",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
	};
	size_t i;
	json_t *a;

	for (i = 0; i < N_OF(junk); i++)
		raw_exchange(junk[i], strlen(junk[i]), i % 2);
	raw_exchange(NULL, 0, 1);
	a = ith_call("GET", "/v1/health", NULL, NULL, 200, NULL);
	json_decref(a);
}

static void
test_still_serving(void)
{
	json_t *a = ith_call("GET", "/v1/health", NULL, NULL, 200, NULL);

	json_decref(a);
	a = ith_call("GET", "/v1/ready", NULL, NULL, 200, NULL);
	json_decref(a);
	a = ith_call("GET", "/v1/keys", T.admin, NULL, 200, NULL);
	json_decref(a);
}

int
it_register_api(void)
{
	CU_pSuite s;

	if ((s = CU_add_suite("basics", suite_init, NULL)) == NULL ||
	    !CU_add_test(s, "health and ready", test_health_ready) ||
	    !CU_add_test(s, "X-Request-Id on every answer, never repeated", test_request_ids) ||
	    !CU_add_test(s, "answers are application/json", test_content_type))
		return -1;
	if ((s = CU_add_suite("wrap", suite_init, NULL)) == NULL ||
	    !CU_add_test(s, "round trip 1..4096 bytes", test_roundtrip_sizes) ||
	    !CU_add_test(s, "0 and 4097 bytes refused", test_plaintext_bounds) ||
	    !CU_add_test(s, "batch of 1000 wraps and unwraps", test_batch_roundtrip) ||
	    !CU_add_test(s, "batch of 1001 and empty batch refused", test_batch_limits) ||
	    !CU_add_test(s, "a bad batch item fails alone", test_batch_bad_item) ||
	    !CU_add_test(s, "datakey 128/256 with and without plaintext", test_datakey))
		return -1;
	if ((s = CU_add_suite("context", suite_init, NULL)) == NULL ||
	    !CU_add_test(s, "blob bound to context and key", test_context_binding) ||
	    !CU_add_test(s, "every payload byte flipped", test_flip_every_payload_byte) ||
	    !CU_add_test(s, "every header byte flipped", test_flip_every_header_byte) ||
	    !CU_add_test(s, "non-canonical version headers", test_header_strict_version) ||
	    !CU_add_test(s, "required_context", test_required_context) ||
	    !CU_add_test(s, "context limits and types", test_context_limits))
		return -1;
	if ((s = CU_add_suite("errors", suite_init, NULL)) == NULL ||
	    !CU_add_test(s, "invalid JSON", test_invalid_json) ||
	    !CU_add_test(s, "wrong types", test_wrong_types) ||
	    !CU_add_test(s, "invalid base64", test_invalid_base64) ||
	    !CU_add_test(s, "unknown routes 404", test_unknown_routes) ||
	    !CU_add_test(s, "wrong method 405", test_wrong_method) ||
	    !CU_add_test(s, "body over 1 MiB 413", test_body_too_large) ||
	    !CU_add_test(s, "bad key names", test_bad_key_names) ||
	    !CU_add_test(s, "missing objects", test_not_found_objects) ||
	    !CU_add_test(s, "garbage on the socket", test_raw_garbage) ||
	    !CU_add_test(s, "still serving", test_still_serving))
		return -1;
	return 0;
}
