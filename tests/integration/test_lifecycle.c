/* Integration tests of key objects, listing, rotation, rewrap and the
 * version state table of docs/API.md (a test per state x operation). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "itest.h"
#include "officers.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static int
suite_init(void)
{
	return it_ready();
}

static const char *
str_of(json_t *j, const char *k)
{
	const char *s = json_string_value(json_object_get(j, k));

	return s ? s : "(none)";
}

/* State of version `v` in a key object, or "(none)". */
static const char *
version_state(json_t *key, long v)
{
	json_t *vs = json_object_get(key, "versions"), *x;
	size_t i;

	json_array_foreach(vs, i, x)
		if (json_integer_value(json_object_get(x, "version")) == v)
			return str_of(x, "state");
	return "(none)";
}

static json_t *
get_key(const char *key)
{
	return ith_call("GET", it_kpath(key, NULL), T.admin, NULL, 200, NULL);
}

static json_t *
state_body(const char *state, int force)
{
	json_t *b = json_pack("{s:s}", "state", state);

	if (force >= 0)
		json_object_set_new(b, "force", json_boolean(force));
	return b;
}

static const char *
vpath(const char *key, long v)
{
	static char ring[4][64];
	static unsigned slot;
	char *out = ring[slot++ % 4];

	snprintf(out, sizeof(ring[0]), "versions/%ld/state", v);
	return it_kpath(key, out);
}

/* ------------------------------------------------------------ key object */

static void
test_key_object(void)
{
	const char *name = ith_name("obj");
	json_t *a, *g, *v0, *vs;

	a = ith_call("POST", "/v1/keys", T.admin, json_pack(
	    "{s:s, s:s, s:s, s:s, s:[s]}", "name", name, "type", "aes256-gcm",
	    "rotation_period", "90d", "expires_at", "2027-12-31T00:00:00Z",
	    "required_context", "matter"), 201, NULL);
	if (a == NULL)
		return;
	vs = json_object_get(a, "versions");
	v0 = json_array_get(vs, 0);
	ith_check(strcmp(str_of(a, "name"), name) == 0, "name is %s", str_of(a, "name"));
	ith_check(strcmp(str_of(a, "type"), "aes256-gcm") == 0, "type is %s",
	    str_of(a, "type"));
	ith_check(strcmp(str_of(a, "purpose"), "encrypt") == 0, "purpose is %s",
	    str_of(a, "purpose"));
	ith_check(json_integer_value(json_object_get(a, "primary_version")) == 1,
	    "primary_version is not 1");
	ith_check(strcmp(str_of(a, "rotation_period"), "90d") == 0,
	    "rotation_period is %s, expected 90d", str_of(a, "rotation_period"));
	ith_check(json_is_string(json_object_get(a, "next_rotation_at")),
	    "next_rotation_at is not a string for a key with a rotation_period");
	ith_check(strncmp(str_of(a, "expires_at"), "2027-12-31T00:00:00", 19) == 0,
	    "expires_at is %s", str_of(a, "expires_at"));
	ith_check(json_is_string(json_object_get(a, "created_at")),
	    "created_at is not a string");
	ith_check(json_array_size(vs) == 1 &&
	    json_integer_value(json_object_get(v0, "version")) == 1 &&
	    strcmp(str_of(v0, "state"), "primary") == 0 &&
	    json_is_string(json_object_get(v0, "created_at")) &&
	    json_integer_value(json_object_get(v0, "mek_version")) == 1 &&
	    json_is_null(json_object_get(v0, "last_used_at")) &&
	    json_is_integer(json_object_get(v0, "use_count")) &&
	    json_integer_value(json_object_get(v0, "use_count")) == 0,
	    "versions is not [{version 1, state primary, created_at, mek_version 1,"
	    " last_used_at null, use_count 0}]");
	g = get_key(name);
	ith_check(g && json_equal(a, g), "GET %s differs from the POST answer", name);
	json_decref(g);
	json_decref(a);

	name = ith_name("obj");
	a = ith_call("POST", "/v1/keys", T.admin, json_pack("{s:s, s:s}", "name",
	    name, "type", "aes256-gcm"), 201, NULL);
	ith_check(a && json_is_null(json_object_get(a, "rotation_period")) &&
	    json_is_null(json_object_get(a, "next_rotation_at")) &&
	    json_is_null(json_object_get(a, "expires_at")),
	    "a key without options: rotation_period/next_rotation_at/expires_at "
	    "are not null");
	json_decref(a);

	/* only name is required: type defaults to aes256-gcm */
	name = ith_name("obj");
	a = ith_call("POST", "/v1/keys", T.admin, json_pack("{s:s}", "name", name),
	    201, NULL);
	ith_check(a && strcmp(str_of(a, "type"), "aes256-gcm") == 0 &&
	    strcmp(str_of(a, "purpose"), "encrypt") == 0 &&
	    json_is_array(json_object_get(a, "required_context")) &&
	    json_array_size(json_object_get(a, "required_context")) == 0,
	    "POST /v1/keys {name}: expected type aes256-gcm, purpose encrypt, "
	    "required_context []");
	json_decref(a);
	{
		static const long four[] = { 400 };
		long st;

		json_decref(ith_call_any("POST", "/v1/keys", T.admin,
		    "{\"name\":\"obj-badtype\",\"type\":\"aes128\"}", four, 1, &st));
		json_decref(ith_call_any("POST", "/v1/keys", T.admin,
		    "{\"name\":\"obj-badtype2\",\"type\":\"\"}", four, 1, &st));
	}
	/* signing types: 400 unsupported_key_type until signing lands, then a
	 * key of purpose sign */
	{
		char *raw = NULL;
		long st;

		name = ith_name("obj-sig");
		a = NULL;
		st = 0;
		{
			json_t *b = json_pack("{s:s, s:s}", "name", name, "type", "ec-p256");
			char *text = json_dumps(b, JSON_COMPACT);

			json_decref(b);
			(void)ith_request_raw("POST", "/v1/keys", T.admin, text,
			    strlen(text), NULL, &st, &raw, NULL, &a, NULL);
			free(text);
		}
		ith_check((st == 400 && strcmp(str_of(json_object_get(a, "error"),
		    "code"), "unsupported_key_type") == 0) || (st == 201 &&
		    strcmp(str_of(a, "purpose"), "sign") == 0),
		    "POST /v1/keys type ec-p256: expected 400 unsupported_key_type or "
		    "201 purpose sign, got %ld %.200s", st, raw ? raw : "");
		json_decref(a);
		free(raw);
	}
}

static void
test_key_list(void)
{
	char path[300], after[200] = "", prev[200] = "";
	const char *mine[5];
	int found[5] = { 0 };
	size_t i, pages = 0, total = 0;
	int sorted = 1;

	for (i = 0; i < 5; i++) {
		static char names[5][64];

		snprintf(names[i], sizeof(names[i]), "%s", it_new_key("list", NULL));
		mine[i] = names[i];
	}
	for (;;) {
		json_t *a, *keys, *k, *next;
		size_t j;

		if (after[0])
			snprintf(path, sizeof(path), "/v1/keys?limit=2&after=%s", after);
		else
			snprintf(path, sizeof(path), "/v1/keys?limit=2");
		if ((a = ith_call("GET", path, T.admin, NULL, 200, NULL)) == NULL)
			break;
		keys = json_object_get(a, "keys");
		next = json_object_get(a, "next");
		ith_check(json_is_array(keys) && json_array_size(keys) <= 2,
		    "GET %s: keys is not an array of at most 2", path);
		json_array_foreach(keys, j, k) {
			const char *n = str_of(k, "name");

			if (prev[0] && strcmp(prev, n) >= 0)
				sorted = 0;
			snprintf(prev, sizeof(prev), "%s", n);
			for (i = 0; i < 5; i++)
				if (strcmp(n, mine[i]) == 0)
					found[i]++;
			total++;
		}
		pages++;
		if (json_is_null(next) || next == NULL || pages > 10000) {
			json_decref(a);
			break;
		}
		if (!ith_check(json_is_string(next), "GET %s: next is neither a "
		    "string nor null", path)) {
			json_decref(a);
			break;
		}
		snprintf(after, sizeof(after), "%s", json_string_value(next));
		json_decref(a);
	}
	ith_check(sorted, "GET /v1/keys pages are not sorted by name without repeats");
	for (i = 0; i < 5; i++)
		ith_check(found[i] == 1, "key %s appeared %d times while paging",
		    mine[i], found[i]);
	{
		static const char *const bad[] = { "/v1/keys?limit=0",
		    "/v1/keys?limit=1001", "/v1/keys?limit=abc", "/v1/keys?limit=-1" };
		json_t *a;

		for (i = 0; i < N_OF(bad); i++)
			(void)ith_expect_error("GET", bad[i], T.admin, NULL, 400,
			    "invalid_request");
		a = ith_call("GET", "/v1/keys?limit=1000", T.admin, NULL, 200, NULL);
		ith_check(a && json_array_size(json_object_get(a, "keys")) == total,
		    "GET /v1/keys?limit=1000 has %zu keys, paging found %zu",
		    json_array_size(json_object_get(a, "keys")), total);
		json_decref(a);
		a = ith_call("GET", "/v1/keys", T.admin, NULL, 200, NULL);
		ith_check(a && json_array_size(json_object_get(a, "keys")) ==
		    (total < 100 ? total : 100), "GET /v1/keys (default limit 100) "
		    "has %zu keys of %zu", json_array_size(json_object_get(a, "keys")),
		    total);
		json_decref(a);
	}
}

/* -------------------------------------------------------------- rotation */

static void
test_rotation(void)
{
	const char *key = it_new_key("rot", NULL);
	json_t *ctx = json_pack("{s:s}", "matter", "m-7"), *a, *items, *res;
	unsigned char pt[5][32], npt[32];
	char *ct[5] = { 0 }, *nct = NULL;
	long v;
	int rr;
	size_t i;

	for (i = 0; i < 5; i++) {
		ith_random(pt[i], 32);
		ct[i] = ith_wrap(key, T.app, pt[i], 32, ctx, NULL);
	}
	a = ith_call("POST", it_kpath(key, "rotate"), T.admin, NULL, 200, NULL);
	ith_check(a && json_integer_value(json_object_get(a, "primary_version")) == 2 &&
	    json_array_size(json_object_get(a, "versions")) == 2 &&
	    strcmp(version_state(a, 1), "active") == 0 &&
	    strcmp(version_state(a, 2), "primary") == 0,
	    "rotate: expected primary_version 2, v1 active, v2 primary; got v1 %s v2 %s",
	    version_state(a, 1), version_state(a, 2));
	json_decref(a);

	/* old blobs still unwrap, with rewrap_recommended */
	for (i = 0; i < 5; i++)
		if (ct[i] != NULL &&
		    ith_unwrap_expect(key, T.app, ct[i], ctx, pt[i], 32, &v, &rr) == 0)
			ith_check(v == 1 && rr == 1, "unwrap of a v1 blob after rotate: "
			    "key_version %ld rewrap_recommended %d, expected 1 and true",
			    v, rr);
	/* new wraps are v2 */
	ith_random(npt, sizeof(npt));
	if ((nct = ith_wrap(key, T.app, npt, 32, ctx, &v)) != NULL) {
		ith_check(v == 2 && strncmp(nct, "kms:v2:", 7) == 0,
		    "wrap after rotate: key_version %ld, blob %.8s, expected v2", v, nct);
		if (ith_unwrap_expect(key, T.app, nct, ctx, npt, 32, &v, &rr) == 0)
			ith_check(v == 2 && rr == 0, "unwrap of a v2 blob: key_version "
			    "%ld rewrap_recommended %d, expected 2 and false", v, rr);
	}
	/* rewrap moves a v1 blob to v2; the plaintext never comes back */
	if (ct[0] != NULL) {
		a = ith_call("POST", it_kpath(key, "rewrap"), T.app, json_pack(
		    "{s:s, s:O}", "ciphertext", ct[0], "context", ctx), 200, NULL);
		if (a != NULL) {
			const char *r = json_string_value(json_object_get(a, "ciphertext"));

			ith_check(json_object_get(a, "plaintext") == NULL,
			    "rewrap answer carries a plaintext");
			ith_check(strcmp(str_of(a, "key"), key) == 0,
			    "rewrap without destination: answer's key is %s, expected %s",
			    str_of(a, "key"), key);
			ith_check(json_integer_value(json_object_get(a, "key_version")) == 2 &&
			    r && strncmp(r, "kms:v2:", 7) == 0,
			    "rewrap of a v1 blob: expected kms:v2 and key_version 2, got %.10s",
			    r ? r : "(none)");
			if (r && ith_unwrap_expect(key, T.app, r, ctx, pt[0], 32, &v,
			    &rr) == 0)
				ith_check(v == 2 && rr == 0, "unwrap of a rewrapped blob: "
				    "key_version %ld rewrap_recommended %d", v, rr);
			json_decref(a);
		}
	}
	/* a v2 blob rewraps to v2 */
	if (nct != NULL) {
		a = ith_call("POST", it_kpath(key, "rewrap"), T.app, json_pack(
		    "{s:s, s:O}", "ciphertext", nct, "context", ctx), 200, NULL);
		ith_check(a && json_integer_value(json_object_get(a, "key_version")) == 2,
		    "rewrap of a v2 blob: key_version is not 2");
		json_decref(a);
	}
	/* batch rewrap */
	items = json_array();
	for (i = 0; i < 5; i++)
		json_array_append_new(items, json_pack("{s:s, s:O}", "ciphertext",
		    ct[i] ? ct[i] : "kms:v1:AAAA", "context", ctx));
	a = ith_call("POST", it_kpath(key, "rewrap"), T.app,
	    json_pack("{s:o}", "batch", items), 200, NULL);
	res = json_object_get(a, "results");
	if (ith_check(json_array_size(res) == 5, "batch rewrap: expected 5 results"))
		for (i = 0; i < 5; i++) {
			json_t *r = json_array_get(res, i);
			const char *c = json_string_value(json_object_get(r, "ciphertext"));

			if (ith_check(c && strncmp(c, "kms:v2:", 7) == 0 &&
			    json_integer_value(json_object_get(r, "key_version")) == 2,
			    "batch rewrap item %zu: not a v2 ciphertext", i))
				(void)ith_unwrap_expect(key, T.app, c, ctx, pt[i], 32, NULL,
				    NULL);
		}
	json_decref(a);
	/* a second rotation */
	a = ith_call("POST", it_kpath(key, "rotate"), T.admin, NULL, 200, NULL);
	ith_check(a && json_integer_value(json_object_get(a, "primary_version")) == 3 &&
	    json_array_size(json_object_get(a, "versions")) == 3 &&
	    strcmp(version_state(a, 1), "active") == 0 &&
	    strcmp(version_state(a, 2), "active") == 0 &&
	    strcmp(version_state(a, 3), "primary") == 0,
	    "second rotate: expected v1 active, v2 active, v3 primary; got %s %s %s",
	    version_state(a, 1), version_state(a, 2), version_state(a, 3));
	json_decref(a);
	if (ct[1] != NULL && ith_unwrap_expect(key, T.app, ct[1], ctx, pt[1], 32,
	    &v, &rr) == 0)
		ith_check(v == 1 && rr == 1, "v1 blob after two rotations: key_version"
		    " %ld rewrap_recommended %d", v, rr);
	for (i = 0; i < 5; i++)
		free(ct[i]);
	free(nct);
	json_decref(ctx);
}

static void
test_rewrap_destination(void)
{
	char src[160], dst[160], req[160];
	json_t *A = json_pack("{s:s}", "matter", "m-a");
	json_t *B = json_pack("{s:s}", "matter", "m-b");
	json_t *a;
	unsigned char pt[32];
	char *ct = NULL, *moved = NULL;
	long v;

	snprintf(src, sizeof(src), "%s", it_new_key("rwsrc", NULL));
	snprintf(dst, sizeof(dst), "%s", it_new_key("rwdst", NULL));
	snprintf(req, sizeof(req), "%s", it_new_key("rwreq", json_pack("{s:[s]}",
	    "required_context", "matter")));
	/* give the destination a different primary version than the source */
	json_decref(ith_call("POST", it_kpath(dst, "rotate"), T.admin, NULL, 200, NULL));
	ith_random(pt, sizeof(pt));
	if ((ct = ith_wrap(src, T.app, pt, 32, A, NULL)) == NULL)
		goto out;
	a = ith_call("POST", it_kpath(src, "rewrap"), T.app, json_pack(
	    "{s:s, s:O, s:s, s:O}", "ciphertext", ct, "context", A,
	    "destination_key", dst, "destination_context", B), 200, NULL);
	if (a != NULL) {
		const char *c = json_string_value(json_object_get(a, "ciphertext"));

		ith_check(json_integer_value(json_object_get(a, "key_version")) == 2 &&
		    c && strncmp(c, "kms:v2:", 7) == 0,
		    "rewrap to %s: expected its primary v2, got %.10s", dst, c ? c : "-");
		ith_check(strcmp(str_of(a, "key"), dst) == 0,
		    "rewrap to %s: answer's key is %s", dst, str_of(a, "key"));
		ith_check(json_object_get(a, "plaintext") == NULL,
		    "rewrap answer carries a plaintext");
		if (c != NULL)
			moved = strdup(c);
		json_decref(a);
	}
	if (moved != NULL) {
		(void)ith_unwrap_expect(dst, T.app, moved, B, pt, 32, &v, NULL);
		(void)ith_expect_error("POST", it_kpath(src, "unwrap"), T.app,
		    json_pack("{s:s, s:O}", "ciphertext", moved, "context", A), 400,
		    "invalid_ciphertext");
		(void)ith_expect_error("POST", it_kpath(src, "unwrap"), T.app,
		    json_pack("{s:s, s:O}", "ciphertext", moved, "context", B), 400,
		    "invalid_ciphertext");
		(void)ith_expect_error("POST", it_kpath(dst, "unwrap"), T.app,
		    json_pack("{s:s, s:O}", "ciphertext", moved, "context", A), 400,
		    "invalid_ciphertext");
		free(moved);
		moved = NULL;
	}
	/* destination_context defaults to context */
	a = ith_call("POST", it_kpath(src, "rewrap"), T.app, json_pack(
	    "{s:s, s:O, s:s}", "ciphertext", ct, "context", A, "destination_key",
	    dst), 200, NULL);
	if (a != NULL && json_is_string(json_object_get(a, "ciphertext"))) {
		moved = strdup(json_string_value(json_object_get(a, "ciphertext")));
		(void)ith_unwrap_expect(dst, T.app, moved, A, pt, 32, NULL, NULL);
		(void)ith_expect_error("POST", it_kpath(dst, "unwrap"), T.app,
		    json_pack("{s:s, s:O}", "ciphertext", moved, "context", B), 400,
		    "invalid_ciphertext");
	}
	json_decref(a);
	/* the source blob is unchanged and still works */
	(void)ith_unwrap_expect(src, T.app, ct, A, pt, 32, NULL, NULL);
	/* unknown destination, destination with required_context */
	(void)ith_expect_error("POST", it_kpath(src, "rewrap"), T.app, json_pack(
	    "{s:s, s:O, s:s}", "ciphertext", ct, "context", A, "destination_key",
	    "no-such-key"), 404, "key_not_found");
	(void)ith_expect_error("POST", it_kpath(src, "rewrap"), T.app, json_pack(
	    "{s:s, s:O, s:s, s:{}}", "ciphertext", ct, "context", A,
	    "destination_key", req, "destination_context"), 400, "missing_context");
	/* wrong source context never yields a blob under the destination */
	(void)ith_expect_error("POST", it_kpath(src, "rewrap"), T.app, json_pack(
	    "{s:s, s:O, s:s, s:O}", "ciphertext", ct, "context", B,
	    "destination_key", dst, "destination_context", B), 400,
	    "invalid_ciphertext");
out:
	free(ct);
	free(moved);
	json_decref(A);
	json_decref(B);
}

/* ------------------------------------------------ state table, per cell */

enum { S_PRIMARY, S_ACTIVE, S_RETIRED, S_ARCHIVED, S_REVOKED, S_N };
static const char *const state_names[S_N] = { "primary", "active", "retired",
    "archived", "revoked" };

/* For each state: a key whose version 1 is in that state, and a blob of v1. */
static struct {
	char key[160];
	char *ct;
	unsigned char pt[32];
	long primary;		/* the key's primary version */
	int ready;
} F[S_N];

static json_t *fix_ctx;

static int
state_suite_init(void)
{
	if (it_ready() != 0)
		return -1;
	fix_ctx = json_pack("{s:s}", "matter", "st");
	return 0;
}

static int
state_suite_clean(void)
{
	int i;

	for (i = 0; i < S_N; i++)
		free(F[i].ct);
	json_decref(fix_ctx);
	return 0;
}

/* Moves each fixture key's v1 into its state through the API. */
static void
test_state_setup(void)
{
	int s;

	for (s = 0; s < S_N; s++) {
		json_t *a;
		long v;

		snprintf(F[s].key, sizeof(F[s].key), "%s", ith_name("st"));
		if (ith_key_create(F[s].key, NULL) != 0)
			continue;
		ith_random(F[s].pt, sizeof(F[s].pt));
		if ((F[s].ct = ith_wrap(F[s].key, T.app, F[s].pt, 32, fix_ctx, &v)) == NULL)
			continue;
		F[s].primary = 1;
		if (s == S_PRIMARY) {
			F[s].ready = 1;
			continue;
		}
		a = ith_call("POST", it_kpath(F[s].key, "rotate"), T.admin, NULL, 200, NULL);
		json_decref(a);
		if (a == NULL)
			continue;
		F[s].primary = 2;
		/* use v1 while active, so it counts as recently used */
		(void)ith_unwrap_expect(F[s].key, T.app, F[s].ct, fix_ctx, F[s].pt,
		    32, NULL, NULL);
		switch (s) {
		case S_RETIRED:
			(void)ith_expect_error("POST", vpath(F[s].key, 1), T.admin,
			    state_body("retired", -1), 409, "version_in_use");
			(void)ith_expect_error("POST", vpath(F[s].key, 1), T.admin,
			    state_body("retired", 0), 409, "version_in_use");
			a = ith_call("POST", vpath(F[s].key, 1), T.admin,
			    state_body("retired", 1), 200, NULL);
			break;
		case S_ARCHIVED:
			json_decref(ith_call("POST", vpath(F[s].key, 1), T.admin,
			    state_body("retired", 1), 200, NULL));
			a = ith_call("POST", vpath(F[s].key, 1), T.admin,
			    state_body("archived", -1), 200, NULL);
			break;
		case S_REVOKED:
			/* no bearer token revokes through /state; one
			 * officer's signature does, at once */
			(void)ith_expect_error("POST", vpath(F[s].key, 1), T.admin,
			    state_body("revoked", -1), 403, "forbidden");
			(void)ith_expect_error("POST", vpath(F[s].key, 1), T.officer,
			    state_body("revoked", -1), 403, "forbidden");
			a = ito_revoke(F[s].key, 1, "alice", T.officer, 200, NULL);
			break;
		default:
			a = get_key(F[s].key);
			break;
		}
		if (a == NULL)
			continue;
		ith_check(strcmp(version_state(a, 1), state_names[s]) == 0,
		    "state move answer: v1 of %s is %s, expected %s", F[s].key,
		    version_state(a, 1), state_names[s]);
		json_decref(a);
		a = get_key(F[s].key);
		if (ith_check(a && strcmp(version_state(a, 1), state_names[s]) == 0,
		    "GET %s: v1 is %s, expected %s", F[s].key,
		    a ? version_state(a, 1) : "-", state_names[s]))
			F[s].ready = 1;
		json_decref(a);
	}
}

static int
fixture(int s)
{
	return ith_check(F[s].ready, "fixture: no key with a version in state %s "
	    "(see 'versions into each state')", state_names[s]);
}

/* wrap always uses the primary version: v1 is used only while it is primary */
static void
cell_wrap(int s)
{
	unsigned char pt[32];
	char *ct, prefix[16];
	long v;

	if (!fixture(s))
		return;
	ith_random(pt, sizeof(pt));
	if ((ct = ith_wrap(F[s].key, T.app, pt, 32, fix_ctx, &v)) == NULL)
		return;
	snprintf(prefix, sizeof(prefix), "kms:v%ld:", F[s].primary);
	ith_check(v == F[s].primary && strncmp(ct, prefix, strlen(prefix)) == 0,
	    "wrap with v1 %s: expected the primary v%ld, got key_version %ld (%.8s)",
	    state_names[s], F[s].primary, v, ct);
	free(ct);
}

static void
cell_unwrap(int s)
{
	long v;
	int rr;

	if (!fixture(s))
		return;
	if (s == S_PRIMARY || s == S_ACTIVE) {
		if (ith_unwrap_expect(F[s].key, T.app, F[s].ct, fix_ctx, F[s].pt, 32,
		    &v, &rr) == 0)
			ith_check(v == 1 && rr == (s != S_PRIMARY), "unwrap of a v1 "
			    "(%s) blob: key_version %ld rewrap_recommended %d",
			    state_names[s], v, rr);
	} else
		(void)ith_expect_error("POST", it_kpath(F[s].key, "unwrap"), T.app,
		    json_pack("{s:s, s:O}", "ciphertext", F[s].ct, "context",
		    fix_ctx), 409, "version_state");
}

static void
cell_rewrap(int s)
{
	json_t *a;

	if (!fixture(s))
		return;
	if (s == S_ARCHIVED || s == S_REVOKED) {
		(void)ith_expect_error("POST", it_kpath(F[s].key, "rewrap"), T.app,
		    json_pack("{s:s, s:O}", "ciphertext", F[s].ct, "context",
		    fix_ctx), 409, "version_state");
		return;
	}
	a = ith_call("POST", it_kpath(F[s].key, "rewrap"), T.app, json_pack(
	    "{s:s, s:O}", "ciphertext", F[s].ct, "context", fix_ctx), 200, NULL);
	if (a == NULL)
		return;
	if (ith_check(json_integer_value(json_object_get(a, "key_version")) ==
	    F[s].primary && json_is_string(json_object_get(a, "ciphertext")),
	    "rewrap from v1 %s: expected key_version %ld", state_names[s],
	    F[s].primary))
		(void)ith_unwrap_expect(F[s].key, T.app,
		    json_string_value(json_object_get(a, "ciphertext")), fix_ctx,
		    F[s].pt, 32, NULL, NULL);
	json_decref(a);
}

static void t_primary_wrap(void) { cell_wrap(S_PRIMARY); }
static void t_primary_unwrap(void) { cell_unwrap(S_PRIMARY); }
static void t_primary_rewrap(void) { cell_rewrap(S_PRIMARY); }
static void t_active_wrap(void) { cell_wrap(S_ACTIVE); }
static void t_active_unwrap(void) { cell_unwrap(S_ACTIVE); }
static void t_active_rewrap(void) { cell_rewrap(S_ACTIVE); }
static void t_retired_wrap(void) { cell_wrap(S_RETIRED); }
static void t_retired_unwrap(void) { cell_unwrap(S_RETIRED); }
static void t_retired_rewrap(void) { cell_rewrap(S_RETIRED); }
static void t_archived_wrap(void) { cell_wrap(S_ARCHIVED); }
static void t_archived_unwrap(void) { cell_unwrap(S_ARCHIVED); }
static void t_archived_rewrap(void) { cell_rewrap(S_ARCHIVED); }
static void t_revoked_wrap(void) { cell_wrap(S_REVOKED); }
static void t_revoked_unwrap(void) { cell_unwrap(S_REVOKED); }
static void t_revoked_rewrap(void) { cell_rewrap(S_REVOKED); }

/* the refusals also hold item by item inside a batch */
static void
test_state_in_batches(void)
{
	int s;

	for (s = S_RETIRED; s < S_N; s++) {
		static const char *const ops[] = { "unwrap", "rewrap" };
		size_t k;

		if (!fixture(s))
			continue;
		for (k = 0; k < 2; k++) {
			int refused = (k == 0) || s != S_RETIRED;
			json_t *a = ith_call("POST", it_kpath(F[s].key, ops[k]), T.app,
			    json_pack("{s:[{s:s, s:O}]}", "batch", "ciphertext", F[s].ct,
			    "context", fix_ctx), 200, NULL);
			json_t *r = json_array_get(json_object_get(a, "results"), 0);
			const char *code = json_string_value(json_object_get(
			    json_object_get(r, "error"), "code"));

			if (refused)
				ith_check(code && strcmp(code, "version_state") == 0,
				    "batch %s of a v1 %s blob: expected item error "
				    "version_state, got %s", ops[k], state_names[s],
				    code ? code : "success");
			else
				ith_check(code == NULL && json_is_string(json_object_get(r,
				    "ciphertext")), "batch rewrap of a v1 retired blob: "
				    "expected success, got %s", code ? code : "no ciphertext");
			json_decref(a);
		}
	}
}

/* ------------------------------------------------------------ transitions */

static void
test_transitions(void)
{
	const char *key = it_new_key("tr", NULL);
	json_t *a;

	/* from primary */
	(void)ith_expect_error("POST", vpath(key, 1), T.admin,
	    state_body("retired", 1), 409, "invalid_transition");
	(void)ith_expect_error("POST", vpath(key, 1), T.admin,
	    state_body("archived", -1), 409, "invalid_transition");
	(void)ith_expect_error("POST", vpath(key, 1), T.admin,
	    state_body("active", -1), 409, "invalid_transition");
	(void)ith_expect_error("POST", vpath(key, 1), T.admin,
	    state_body("destroyed", -1), 403, "ceremony_required");
	json_decref(ith_call("POST", it_kpath(key, "rotate"), T.admin, NULL, 200, NULL));
	/* v1 active, never used: retires without force */
	(void)ith_expect_error("POST", vpath(key, 1), T.admin,
	    state_body("primary", -1), 409, "invalid_transition");
	(void)ith_expect_error("POST", vpath(key, 1), T.admin,
	    state_body("destroyed", -1), 403, "ceremony_required");
	a = ith_call("POST", vpath(key, 1), T.admin, state_body("retired", -1), 200,
	    NULL);
	ith_check(a && strcmp(version_state(a, 1), "retired") == 0,
	    "retire of an unused active version without force: v1 is %s",
	    a ? version_state(a, 1) : "-");
	json_decref(a);
	/* undo a premature retire */
	a = ith_call("POST", vpath(key, 1), T.admin, state_body("active", -1), 200,
	    NULL);
	ith_check(a && strcmp(version_state(a, 1), "active") == 0,
	    "retired -> active: v1 is %s", a ? version_state(a, 1) : "-");
	json_decref(a);
	/* active -> archived directly */
	a = ith_call("POST", vpath(key, 1), T.admin, state_body("archived", -1),
	    200, NULL);
	ith_check(a && strcmp(version_state(a, 1), "archived") == 0,
	    "active -> archived: v1 is %s", a ? version_state(a, 1) : "-");
	json_decref(a);
	(void)ith_expect_error("POST", vpath(key, 1), T.admin,
	    state_body("active", -1), 403, "ceremony_required");
	(void)ith_expect_error("POST", vpath(key, 1), T.admin,
	    state_body("destroyed", -1), 403, "ceremony_required");
	/* archived -> revoked by an officer's signature; revoked is final */
	a = ito_revoke(key, 1, "bob", T.officer, 200, NULL);
	ith_check(a && strcmp(version_state(a, 1), "revoked") == 0,
	    "archived -> revoked: v1 is %s", a ? version_state(a, 1) : "-");
	json_decref(a);
	(void)ith_expect_error("POST", vpath(key, 1), T.admin,
	    state_body("active", -1), 409, "invalid_transition");
	(void)ith_expect_error("POST", vpath(key, 1), T.admin,
	    state_body("retired", 1), 409, "invalid_transition");
	(void)ith_expect_error("POST", vpath(key, 1), T.admin,
	    state_body("archived", -1), 409, "invalid_transition");
	a = get_key(key);
	ith_check(a && strcmp(version_state(a, 1), "revoked") == 0,
	    "after refused moves v1 is %s, expected revoked",
	    a ? version_state(a, 1) : "-");
	json_decref(a);

	/* who may move states */
	{
		const char *k2 = it_new_key("tr", NULL);

		json_decref(ith_call("POST", it_kpath(k2, "rotate"), T.admin, NULL,
		    200, NULL));
		(void)ith_expect_error("POST", vpath(k2, 1), T.app,
		    state_body("retired", 1), 403, "forbidden");
		(void)ith_expect_error("POST", vpath(k2, 1), T.auditor,
		    state_body("retired", 1), 403, "forbidden");
		(void)ith_expect_error("POST", vpath(k2, 1), T.officer,
		    state_body("retired", 1), 403, "forbidden");
		(void)ith_expect_error("POST", vpath(k2, 1), T.app,
		    state_body("revoked", -1), 403, "forbidden");
		(void)ith_expect_error("POST", vpath(k2, 1), T.auditor,
		    state_body("revoked", -1), 403, "forbidden");
		a = get_key(k2);
		ith_check(a && strcmp(version_state(a, 1), "active") == 0,
		    "after refused moves v1 of %s is %s, expected active", k2,
		    a ? version_state(a, 1) : "-");
		json_decref(a);
	}
}

static void
test_revoke_primary(void)
{
	const char *key = it_new_key("rvp", NULL);
	json_t *ctx = json_pack("{s:s}", "matter", "m-r"), *a;
	unsigned char pt[32];
	char *ct, *ct3;
	long v;

	ith_random(pt, sizeof(pt));
	if ((ct = ith_wrap(key, T.app, pt, 32, ctx, NULL)) == NULL)
		goto out;
	/* the signature is what counts: an admin token may carry it */
	a = ito_revoke(key, 1, "carol", T.admin, 200, NULL);
	ith_check(a && strcmp(version_state(a, 1), "revoked") == 0 &&
	    json_is_null(json_object_get(a, "primary_version")),
	    "revoking the primary: expected v1 revoked and primary_version null");
	json_decref(a);
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), T.app, json_pack(
	    "{s:s, s:O}", "plaintext", "AAECAw==", "context", ctx), 409,
	    "no_primary_version");
	(void)ith_expect_error("POST", it_kpath(key, "datakey"), T.app, json_pack(
	    "{s:i, s:O}", "bits", 256, "context", ctx), 409, "no_primary_version");
	(void)ith_expect_error("POST", it_kpath(key, "unwrap"), T.app, json_pack(
	    "{s:s, s:O}", "ciphertext", ct, "context", ctx), 409, "version_state");
	(void)ith_expect_error("POST", it_kpath(key, "rewrap"), T.app, json_pack(
	    "{s:s, s:O}", "ciphertext", ct, "context", ctx), 409, "version_state");
	a = ith_call("POST", it_kpath(key, "rotate"), T.admin, NULL, 200, NULL);
	ith_check(a && json_integer_value(json_object_get(a, "primary_version")) == 2 &&
	    strcmp(version_state(a, 1), "revoked") == 0,
	    "rotate after revoking the primary: expected v2 primary, v1 still revoked");
	json_decref(a);
	if ((ct3 = ith_wrap(key, T.app, pt, 32, ctx, &v)) != NULL) {
		ith_check(v == 2, "wrap after the rotate: key_version %ld, expected 2", v);
		(void)ith_unwrap_expect(key, T.app, ct3, ctx, pt, 32, NULL, NULL);
		free(ct3);
	}
	(void)ith_expect_error("POST", it_kpath(key, "unwrap"), T.app, json_pack(
	    "{s:s, s:O}", "ciphertext", ct, "context", ctx), 409, "version_state");
	free(ct);
out:
	json_decref(ctx);
}

int
it_register_lifecycle(void)
{
	CU_pSuite s;

	if ((s = CU_add_suite("keys and rotation", suite_init, NULL)) == NULL ||
	    !CU_add_test(s, "key object", test_key_object) ||
	    !CU_add_test(s, "list and paging", test_key_list) ||
	    !CU_add_test(s, "rotate, unwrap old, rewrap", test_rotation) ||
	    !CU_add_test(s, "rewrap to a destination key and context",
	    test_rewrap_destination))
		return -1;
	if ((s = CU_add_suite("state table", state_suite_init, state_suite_clean)) == NULL ||
	    !CU_add_test(s, "versions into each state", test_state_setup) ||
	    !CU_add_test(s, "primary: wrap yes", t_primary_wrap) ||
	    !CU_add_test(s, "primary: unwrap yes", t_primary_unwrap) ||
	    !CU_add_test(s, "primary: rewrap-from yes", t_primary_rewrap) ||
	    !CU_add_test(s, "active: wrap no (uses primary)", t_active_wrap) ||
	    !CU_add_test(s, "active: unwrap yes", t_active_unwrap) ||
	    !CU_add_test(s, "active: rewrap-from yes", t_active_rewrap) ||
	    !CU_add_test(s, "retired: wrap no (uses primary)", t_retired_wrap) ||
	    !CU_add_test(s, "retired: unwrap no (409)", t_retired_unwrap) ||
	    !CU_add_test(s, "retired: rewrap-from yes", t_retired_rewrap) ||
	    !CU_add_test(s, "archived: wrap no (uses primary)", t_archived_wrap) ||
	    !CU_add_test(s, "archived: unwrap no (409)", t_archived_unwrap) ||
	    !CU_add_test(s, "archived: rewrap-from no (409)", t_archived_rewrap) ||
	    !CU_add_test(s, "revoked: wrap no (uses primary)", t_revoked_wrap) ||
	    !CU_add_test(s, "revoked: unwrap no (409)", t_revoked_unwrap) ||
	    !CU_add_test(s, "revoked: rewrap-from no (409)", t_revoked_rewrap) ||
	    !CU_add_test(s, "refusals per batch item", test_state_in_batches) ||
	    !CU_add_test(s, "transitions", test_transitions) ||
	    !CU_add_test(s, "revoking the primary", test_revoke_primary))
		return -1;
	return 0;
}
