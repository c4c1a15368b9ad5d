/* Integration tests of authentication (bearer tokens) and authorisation
 * (roles, app key patterns). */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "itest.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static int
suite_init(void)
{
	return it_ready();
}

static json_t *
wrap_body(void)
{
	return json_pack("{s:s, s:{s:s}}", "plaintext", "AAECAw==", "context",
	    "matter", "m-1");
}

static void
test_app_pattern(void)
{
	char mine[160], other[160];
	json_t *ctx = json_pack("{s:s}", "matter", "m-1"), *a, *keys, *k;
	unsigned char pt[32];
	char *ct_mine = NULL, *ct_other = NULL, after[200] = "", path[300];
	size_t i;
	int seen_mine = 0, seen_other = 0, foreign = 0;

	snprintf(mine, sizeof(mine), "%s", it_new_key("matter", NULL));
	snprintf(other, sizeof(other), "%s", it_new_key("other", NULL));
	ith_random(pt, sizeof(pt));

	/* matter-* covers matter-N */
	if ((ct_mine = ith_wrap(mine, T.matter, pt, 32, ctx, NULL)) != NULL)
		(void)ith_unwrap_expect(mine, T.matter, ct_mine, ctx, pt, 32, NULL,
		    NULL);
	json_decref(ith_call("GET", it_kpath(mine, NULL), T.matter, NULL, 200, NULL));
	json_decref(ith_call("POST", it_kpath(mine, "datakey"), T.matter,
	    json_pack("{s:i, s:O}", "bits", 256, "context", ctx), 200, NULL));
	if (ct_mine != NULL)
		json_decref(ith_call("POST", it_kpath(mine, "rewrap"), T.matter,
		    json_pack("{s:s, s:O}", "ciphertext", ct_mine, "context", ctx),
		    200, NULL));

	/* but not other-N */
	(void)ith_expect_error("POST", it_kpath(other, "wrap"), T.matter,
	    wrap_body(), 403, "forbidden");
	(void)ith_expect_error("GET", it_kpath(other, NULL), T.matter, NULL, 403,
	    "forbidden");
	(void)ith_expect_error("POST", it_kpath(other, "datakey"), T.matter,
	    json_pack("{s:i, s:O}", "bits", 256, "context", ctx), 403, "forbidden");
	if ((ct_other = ith_wrap(other, T.app, pt, 32, ctx, NULL)) != NULL) {
		(void)ith_expect_error("POST", it_kpath(other, "unwrap"), T.matter,
		    json_pack("{s:s, s:O}", "ciphertext", ct_other, "context", ctx),
		    403, "forbidden");
		(void)ith_expect_error("POST", it_kpath(other, "rewrap"), T.matter,
		    json_pack("{s:s, s:O}", "ciphertext", ct_other, "context", ctx),
		    403, "forbidden");
		/* from other-N to matter-N: the source is not covered */
		(void)ith_expect_error("POST", it_kpath(other, "rewrap"), T.matter,
		    json_pack("{s:s, s:O, s:s}", "ciphertext", ct_other, "context",
		    ctx, "destination_key", mine), 403, "forbidden");
		(void)ith_expect_error("POST", it_kpath(other, "wrap"), T.matter,
		    json_pack("{s:[{s:s}]}", "batch", "plaintext", "AAECAw=="), 403,
		    "forbidden");
	}
	/* a key outside the pattern is refused whether it exists or not */
	(void)ith_expect_error("POST", it_kpath("hr-no-such-key", "wrap"), T.matter,
	    wrap_body(), 403, "forbidden");
	(void)ith_expect_error("GET", it_kpath("hr-no-such-key", NULL), T.matter,
	    NULL, 403, "forbidden");
	/* from matter-N to other-N: the destination is not covered */
	if (ct_mine != NULL)
		(void)ith_expect_error("POST", it_kpath(mine, "rewrap"), T.matter,
		    json_pack("{s:s, s:O, s:s}", "ciphertext", ct_mine, "context", ctx,
		    "destination_key", other), 403, "forbidden");

	/* the list holds only matter-* keys */
	for (i = 0; i < 1000; i++) {
		json_t *next;
		size_t j;

		snprintf(path, sizeof(path), "/v1/keys?limit=1000%s%s",
		    after[0] ? "&after=" : "", after);
		if ((a = ith_call("GET", path, T.matter, NULL, 200, NULL)) == NULL)
			break;
		keys = json_object_get(a, "keys");
		json_array_foreach(keys, j, k) {
			const char *n = json_string_value(json_object_get(k, "name"));

			if (n == NULL || fnmatch("matter-*", n, 0) != 0)
				foreign++;
			if (n && strcmp(n, mine) == 0)
				seen_mine++;
			if (n && strcmp(n, other) == 0)
				seen_other++;
		}
		next = json_object_get(a, "next");
		if (!json_is_string(next)) {
			json_decref(a);
			break;
		}
		snprintf(after, sizeof(after), "%s", json_string_value(next));
		json_decref(a);
	}
	ith_check(foreign == 0 && seen_other == 0, "GET /v1/keys with a matter-* "
	    "token lists %d keys outside matter-* (%s among them: %s)", foreign,
	    other, seen_other ? "yes" : "no");
	ith_check(seen_mine == 1, "GET /v1/keys with a matter-* token lists %s "
	    "%d times", mine, seen_mine);
	free(ct_mine);
	free(ct_other);
	json_decref(ctx);
}

static void
test_pattern_list(void)
{
	/* several fnmatch patterns, comma-separated */
	char *tok = ith_token_create("app", "patb-?,patt-*", NULL, NULL);
	static const char *const names[] = { "patb-1", "patb-12", "patt-x", "patx-1" };
	static const int allowed[] = { 1, 0, 1, 0 };
	size_t i;

	if (tok == NULL)
		return;
	for (i = 0; i < N_OF(names); i++) {
		if (ith_key_create(names[i], NULL) != 0)
			continue;
		if (allowed[i])
			json_decref(ith_call("POST", it_kpath(names[i], "wrap"), tok,
			    wrap_body(), 200, NULL));
		else
			(void)ith_expect_error("POST", it_kpath(names[i], "wrap"), tok,
			    wrap_body(), 403, "forbidden");
	}
	free(tok);
}

static void
test_unauthenticated(void)
{
	const char *key = it_new_key("au", NULL);
	char unknown[128], wrong_secret[256];
	unsigned char rnd[40];
	static const char *const bad_headers[][2] = {
		{ "Authorization: Basic YWRtaW46YWRtaW4=", NULL },
		{ "Authorization: Bearer", NULL },
		{ "Authorization: Bearer ", NULL },
		{ "Authorization: Token abc", NULL },
		{ "Authorization:", NULL },
	};
	size_t i;
	long st;

	/* no Authorization at all */
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), NULL, wrap_body(),
	    401, "unauthenticated");
	(void)ith_expect_error("GET", "/v1/keys", NULL, NULL, 401, "unauthenticated");
	(void)ith_expect_error("GET", it_kpath(key, NULL), NULL, NULL, 401,
	    "unauthenticated");
	(void)ith_expect_error("POST", "/v1/keys", NULL, json_pack("{s:s, s:s}",
	    "name", "au-x", "type", "aes256-gcm"), 401, "unauthenticated");
	(void)ith_expect_error("POST", "/v1/tokens", NULL, json_pack("{s:s}",
	    "role", "admin"), 401, "unauthenticated");
	/* garbage and malformed schemes */
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), "garbage",
	    wrap_body(), 401, "unauthenticated");
	(void)ith_expect_error("GET", "/v1/keys", "kms.", NULL, 401,
	    "unauthenticated");
	(void)ith_expect_error("GET", "/v1/keys", "kms..", NULL, 401,
	    "unauthenticated");
	for (i = 0; i < N_OF(bad_headers); i++) {
		char *raw = NULL;
		json_t *a = NULL;
		const char *code;

		if (ith_request_raw("GET", "/v1/keys", NULL, NULL, 0, bad_headers[i],
		    &st, &raw, NULL, &a, NULL) != 0)
			continue;
		code = json_string_value(json_object_get(json_object_get(a, "error"),
		    "code"));
		ith_check(st == 401 && code && strcmp(code, "unauthenticated") == 0,
		    "GET /v1/keys with '%s': expected 401 unauthenticated, got %ld %.200s",
		    bad_headers[i][0], st, raw);
		free(raw);
		json_decref(a);
	}
	/* well formed but unknown */
	ith_random(rnd, sizeof(rnd));
	{
		char hex[81];

		ith_hex(rnd, sizeof(rnd), hex, 0);
		snprintf(unknown, sizeof(unknown), "kms.%.16s.%.64s", hex, hex + 16);
	}
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), unknown, wrap_body(),
	    401, "unauthenticated");
	(void)ith_expect_error("GET", "/v1/keys", unknown, NULL, 401,
	    "unauthenticated");
	/* a real id with a wrong secret, and a real token with extra bytes */
	if (T.app != NULL && strlen(T.app) < sizeof(wrong_secret) - 2) {
		size_t n = strlen(T.app);

		snprintf(wrong_secret, sizeof(wrong_secret), "%s", T.app);
		wrong_secret[n - 1] = wrong_secret[n - 1] == '0' ? '1' : '0';
		(void)ith_expect_error("POST", it_kpath(key, "wrap"), wrong_secret,
		    wrap_body(), 401, "unauthenticated");
		snprintf(wrong_secret, sizeof(wrong_secret), "%s0", T.app);
		(void)ith_expect_error("POST", it_kpath(key, "wrap"), wrong_secret,
		    wrap_body(), 401, "unauthenticated");
		snprintf(wrong_secret, sizeof(wrong_secret), "%.*s", (int)n - 1, T.app);
		(void)ith_expect_error("POST", it_kpath(key, "wrap"), wrong_secret,
		    wrap_body(), 401, "unauthenticated");
	}
	/* health and ready need no token */
	json_decref(ith_call("GET", "/v1/health", NULL, NULL, 200, NULL));
	json_decref(ith_call("GET", "/v1/ready", NULL, NULL, 200, NULL));
}

static int
is_hexn(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

static void
test_token_lifecycle(void)
{
	const char *key = it_new_key("tok", NULL);
	char *id = NULL, *tok, path[128], *raw = NULL;
	json_t *a, *list, *t;
	size_t i;
	long st;
	int found = 0;

	if ((tok = ith_token_create("app", "tok-*", "30d", &id)) == NULL)
		return;
	ith_check(strlen(tok) == 4 + 16 + 1 + 64 && strncmp(tok, "kms.", 4) == 0 &&
	    is_hexn(tok + 4, 16) && tok[20] == '.' && is_hexn(tok + 21, 64),
	    "token '%.12s...' is not kms.<16 hex>.<64 hex>", tok);
	ith_check(id && strlen(tok) > 20 && strncmp(tok + 4, id, 16) == 0 &&
	    strlen(id) == 16, "token id %s is not the token's middle part", id ? id : "-");
	json_decref(ith_call("POST", it_kpath(key, "wrap"), tok, wrap_body(), 200,
	    NULL));

	/* the list shows it, without any secret */
	if (ith_request_raw("GET", "/v1/tokens", T.admin, NULL, 0, NULL, &st, &raw,
	    NULL, &a, NULL) == 0) {
		list = json_object_get(a, "tokens");
		ith_check(st == 200 && json_is_array(list), "GET /v1/tokens: %ld", st);
		json_array_foreach(list, i, t)
			if (id && strcmp(json_string_value(json_object_get(t, "id")) ?
			    json_string_value(json_object_get(t, "id")) : "", id) == 0) {
				found++;
				ith_check(json_object_get(t, "token") == NULL &&
				    json_is_null(json_object_get(t, "revoked_at")) &&
				    strcmp(json_string_value(json_object_get(t, "role")) ?
				    json_string_value(json_object_get(t, "role")) : "",
				    "app") == 0 && json_is_string(json_object_get(t,
				    "expires_at")), "GET /v1/tokens entry of %s: expected "
				    "role app, a expires_at, revoked_at null, no token", id);
			}
		ith_check(found == 1, "GET /v1/tokens lists token %s %d times",
		    id ? id : "-", found);
		ith_check(strstr(raw, tok + 21) == NULL && strstr(raw,
		    ith_admin_token()) == NULL, "GET /v1/tokens shows a token secret");
		json_decref(a);
		free(raw);
	}

	/* revoked: 401 at once */
	snprintf(path, sizeof(path), "/v1/tokens/%s", id ? id : "x");
	a = ith_call("DELETE", path, T.admin, NULL, 200, NULL);
	ith_check(a && json_is_string(json_object_get(a, "revoked_at")) &&
	    id && strcmp(json_string_value(json_object_get(a, "id")) ?
	    json_string_value(json_object_get(a, "id")) : "", id) == 0,
	    "DELETE %s: expected {id, revoked_at}", path);
	json_decref(a);
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), tok, wrap_body(), 401,
	    "unauthenticated");
	(void)ith_expect_error("GET", "/v1/keys", tok, NULL, 401, "unauthenticated");
	/* a second revoke: 404; the list keeps it, with revoked_at */
	(void)ith_expect_error("DELETE", path, T.admin, NULL, 404, "token_not_found");
	a = ith_call("GET", "/v1/tokens", T.admin, NULL, 200, NULL);
	found = 0;
	json_array_foreach(json_object_get(a, "tokens"), i, t)
		if (id && json_is_string(json_object_get(t, "id")) &&
		    strcmp(json_string_value(json_object_get(t, "id")), id) == 0) {
			found++;
			ith_check(json_is_string(json_object_get(t, "revoked_at")),
			    "GET /v1/tokens: revoked token %s has no revoked_at", id);
		}
	ith_check(found == 1, "GET /v1/tokens lists the revoked token %d times",
	    found);
	json_decref(a);
	free(tok);
	free(id);
}

static void
test_token_validation(void)
{
	(void)ith_expect_error("POST", "/v1/tokens", T.admin,
	    json_pack("{s:s}", "role", "app"), 400, "invalid_request");
	(void)ith_expect_error("POST", "/v1/tokens", T.admin,
	    json_pack("{s:s, s:s}", "role", "auditor", "keys", "*"), 400,
	    "invalid_request");
	(void)ith_expect_error("POST", "/v1/tokens", T.admin,
	    json_pack("{s:s}", "role", "root"), 400, "invalid_request");
	(void)ith_expect_error("POST", "/v1/tokens", T.admin,
	    json_pack("{s:s, s:s, s:s}", "role", "app", "keys", "*", "ttl",
	    "forever"), 400, "invalid_request");
	(void)ith_expect_error("POST", "/v1/tokens", T.admin, json_object(), 400,
	    "invalid_request");
	{
		char desc[258];

		memset(desc, 'd', 257);
		desc[257] = '\0';
		(void)ith_expect_error("POST", "/v1/tokens", T.admin, json_pack(
		    "{s:s, s:s}", "role", "auditor", "description", desc), 400,
		    "invalid_request");
		desc[256] = '\0';
		json_decref(ith_call("POST", "/v1/tokens", T.admin, json_pack(
		    "{s:s, s:s}", "role", "auditor", "description", desc), 201, NULL));
	}
}

static void
test_roles(void)
{
	const char *key = it_new_key("roles", NULL);
	unsigned char pt[16];
	char *ct;

	ith_random(pt, sizeof(pt));
	ct = ith_wrap(key, T.app, pt, sizeof(pt), NULL, NULL);

	/* auditor: read keys, never use them */
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), T.auditor,
	    wrap_body(), 403, "forbidden");
	if (ct != NULL)
		(void)ith_expect_error("POST", it_kpath(key, "unwrap"), T.auditor,
		    json_pack("{s:s}", "ciphertext", ct), 403, "forbidden");
	json_decref(ith_call("GET", "/v1/keys", T.auditor, NULL, 200, NULL));
	json_decref(ith_call("GET", it_kpath(key, NULL), T.auditor, NULL, 200, NULL));
	(void)ith_expect_error("POST", "/v1/keys", T.auditor, json_pack(
	    "{s:s, s:s}", "name", "roles-aud", "type", "aes256-gcm"), 403, "forbidden");
	(void)ith_expect_error("POST", "/v1/tokens", T.auditor, json_pack(
	    "{s:s}", "role", "auditor"), 403, "forbidden");
	(void)ith_expect_error("POST", it_kpath(key, "rotate"), T.auditor, NULL,
	    403, "forbidden");

	/* admin: manages keys, does not use them */
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), T.admin, wrap_body(),
	    403, "forbidden");
	(void)ith_expect_error("POST", it_kpath(key, "datakey"), T.admin,
	    json_pack("{s:i}", "bits", 256), 403, "forbidden");
	if (ct != NULL) {
		(void)ith_expect_error("POST", it_kpath(key, "unwrap"), T.admin,
		    json_pack("{s:s}", "ciphertext", ct), 403, "forbidden");
		(void)ith_expect_error("POST", it_kpath(key, "rewrap"), T.admin,
		    json_pack("{s:s}", "ciphertext", ct), 403, "forbidden");
	}
	(void)ith_key_create(ith_name("roles-admin"), NULL);

	/* app: uses keys, does not manage them or tokens */
	(void)ith_expect_error("POST", "/v1/keys", T.app, json_pack("{s:s, s:s}",
	    "name", "roles-app", "type", "aes256-gcm"), 403, "forbidden");
	(void)ith_expect_error("POST", "/v1/tokens", T.app, json_pack("{s:s, s:s}",
	    "role", "app", "keys", "*"), 403, "forbidden");
	(void)ith_expect_error("POST", "/v1/tokens", T.app, json_pack("{s:s}",
	    "role", "admin"), 403, "forbidden");
	(void)ith_expect_error("GET", "/v1/tokens", T.app, NULL, 403, "forbidden");
	(void)ith_expect_error("POST", it_kpath(key, "rotate"), T.app, NULL, 403,
	    "forbidden");

	/* officer: reads keys, no use, no management */
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), T.officer,
	    wrap_body(), 403, "forbidden");
	(void)ith_expect_error("POST", "/v1/keys", T.officer, json_pack(
	    "{s:s, s:s}", "name", "roles-off", "type", "aes256-gcm"), 403, "forbidden");
	json_decref(ith_call("GET", it_kpath(key, NULL), T.officer, NULL, 200, NULL));

	/* none of the refused calls changed anything */
	(void)ith_expect_error("GET", it_kpath("roles-aud", NULL), T.admin, NULL,
	    404, "key_not_found");
	(void)ith_expect_error("GET", it_kpath("roles-app", NULL), T.admin, NULL,
	    404, "key_not_found");
	free(ct);
}

static void
test_expired_token(void)
{
	const char *key = it_new_key("exp", NULL);
	char *tok = ith_token_create("app", "exp-*", "1s", NULL);
	long st;

	if (tok == NULL)
		return;
	/* usable at once (the first second), refused after it */
	if (ith_request("POST", it_kpath(key, "wrap"), tok,
	    "{\"plaintext\":\"AAECAw==\"}", &st, NULL, NULL) == 0)
		ith_check(st == 200, "wrap with a fresh ttl 1s token: expected 200, got %ld",
		    st);
	sleep(2);
	(void)ith_expect_error("POST", it_kpath(key, "wrap"), tok, wrap_body(), 401,
	    "unauthenticated");
	(void)ith_expect_error("GET", "/v1/keys", tok, NULL, 401, "unauthenticated");
	free(tok);
}

int
it_register_authz(void)
{
	CU_pSuite s;

	if ((s = CU_add_suite("authz", suite_init, NULL)) == NULL ||
	    !CU_add_test(s, "app token limited to matter-*", test_app_pattern) ||
	    !CU_add_test(s, "several key patterns", test_pattern_list) ||
	    !CU_add_test(s, "missing, garbage, unknown tokens 401", test_unauthenticated) ||
	    !CU_add_test(s, "token create, list, revoke", test_token_lifecycle) ||
	    !CU_add_test(s, "token create validation", test_token_validation) ||
	    !CU_add_test(s, "roles: auditor, admin, app, officer", test_roles) ||
	    !CU_add_test(s, "expired token 401", test_expired_token))
		return -1;
	return 0;
}
