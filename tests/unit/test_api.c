/* Unit tests of the pure parts of api/: key names, key visibility for app
 * tokens, the km_err -> HTTP table, the route table, roles and token
 * minting; plus dispatch of requests that never reach the store. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>
#include <jansson.h>
#include <openssl/sha.h>

#include "api.h"
#include "audit.h"
#include "km.h"
#include "log.h"
#include "store.h"
#include "unit.h"

static char dir[256];

static int
suite_init(void)
{
	log_set_level(LOG_ERROR);
	return ut_mkdtemp("api", dir, sizeof(dir));
}

static int
suite_clean(void)
{
	ut_rmtree(dir);
	return 0;
}

/* --- key names ---------------------------------------------------------- */

static void
test_key_name_valid(void)
{
	static const char *const good[] = {
		"a", "Z", "7", "matter-1", "matter_2024.q1", "A.b-C_d", "a-", "a.",
		"a..b", "0-0", "x_", NULL,
	};
	static const char *const bad[] = {
		"", "-a", ".a", "_a", "a b", " a", "a ", "a/b", "a\\b", "a:b",
		"a*", "a?", "a,b", "a%2f", "a\tb", "a\n", "\xc3\xa4", "a\xc3\xa4",
		"..", ".", "/v1", "a+b", "a@b", "a=b", "a#b", "a;b", "a'b",
		"a\"b", "{a}", NULL,
	};
	char longest[130];
	size_t i;

	for (i = 0; good[i] != NULL; i++) {
		if (!api_key_name_valid(good[i])) {
			fprintf(stderr, "\napi_key_name_valid refused \"%s\"\n",
			    good[i]);
			CU_FAIL("a valid key name was refused");
		}
	}
	for (i = 0; bad[i] != NULL; i++) {
		if (api_key_name_valid(bad[i])) {
			fprintf(stderr, "\napi_key_name_valid accepted \"%s\"\n",
			    bad[i]);
			CU_FAIL("an invalid key name was accepted");
		}
	}
	/* 1..128 bytes. */
	memset(longest, 'k', sizeof(longest));
	longest[128] = '\0';
	CU_ASSERT_TRUE(api_key_name_valid(longest));
	longest[128] = 'k';
	longest[129] = '\0';
	CU_ASSERT_FALSE(api_key_name_valid(longest));
}

/* --- key visibility ----------------------------------------------------- */

static struct api_principal
principal(int authenticated, enum api_role role, const char *keys)
{
	struct api_principal p;

	memset(&p, 0, sizeof(p));
	p.authenticated = authenticated;
	p.role = role;
	p.keys = keys != NULL ? strdup(keys) : NULL;
	if (keys != NULL)
		CU_ASSERT_PTR_NOT_NULL_FATAL(p.keys);
	snprintf(p.actor, sizeof(p.actor), "token:0123456789abcdef");
	return p;
}

static void
expect_visible(const char *keys, const char *name, int want)
{
	struct api_principal p = principal(1, ROLE_APP, keys);
	int got = api_key_visible(&p, name);

	if (got != want) {
		fprintf(stderr, "\napi_key_visible(app \"%s\", \"%s\") = %d, "
		    "want %d\n", keys ? keys : "(null)", name, got, want);
		CU_FAIL("api_key_visible");
	}
	/* The principal's patterns are not modified by the lookup. */
	if (keys != NULL)
		CU_ASSERT_STRING_EQUAL(p.keys, keys);
	api_principal_clear(&p);
}

static void
test_key_visible(void)
{
	static const enum api_role others[] = { ROLE_ADMIN, ROLE_AUDITOR,
	    ROLE_OFFICER };
	struct api_principal p;
	size_t i;

	/* One pattern. */
	expect_visible("matter-*", "matter-1", 1);
	expect_visible("matter-*", "matter-acme.2024", 1);
	expect_visible("matter-*", "matter", 0);
	expect_visible("matter-*", "matters-1", 0);
	expect_visible("matter-*", "other-matter-1", 0);
	expect_visible("matter-*", "xmatter-1", 0);
	expect_visible("matter-*", "MATTER-1", 0);
	expect_visible("matter-*", "tenant-1", 0);

	/* A list. */
	expect_visible("a-*,b-*", "a-1", 1);
	expect_visible("a-*,b-*", "b-2", 1);
	expect_visible("a-*,b-*", "c-3", 0);
	expect_visible("a-*,b-*", "a", 0);
	expect_visible("a-*,b-*", "ab-1", 0);
	expect_visible("a-*,b-*", "a-*,b-*", 1);
	expect_visible("a-*,b-*", "b", 0);

	/* Exact names, everything, nothing. */
	expect_visible("payroll", "payroll", 1);
	expect_visible("payroll", "payroll-2", 0);
	expect_visible("payroll", "payrol", 0);
	expect_visible("*", "anything", 1);
	expect_visible("", "anything", 0);
	expect_visible(",", "anything", 0);
	expect_visible(NULL, "anything", 0);

	/* Other roles see every key; nobody unauthenticated sees any. */
	for (i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
		p = principal(1, others[i], NULL);
		CU_ASSERT_TRUE(api_key_visible(&p, "matter-1"));
		CU_ASSERT_TRUE(api_key_visible(&p, "zzz"));
		api_principal_clear(&p);
		p = principal(0, others[i], NULL);
		CU_ASSERT_FALSE(api_key_visible(&p, "matter-1"));
		api_principal_clear(&p);
	}
	p = principal(0, ROLE_APP, "*");
	CU_ASSERT_FALSE(api_key_visible(&p, "matter-1"));
	api_principal_clear(&p);
	CU_ASSERT_PTR_NULL(p.keys);
	CU_ASSERT_FALSE(p.authenticated);
}

/* --- errors ------------------------------------------------------------- */

static int
snake_case(const char *s)
{
	size_t i, n = strlen(s);

	if (n == 0 || s[0] == '_' || s[n - 1] == '_')
		return 0;
	for (i = 0; i < n; i++) {
		if (!((s[i] >= 'a' && s[i] <= 'z') || s[i] == '_' ||
		    (i > 0 && s[i] >= '0' && s[i] <= '9')))
			return 0;
		if (s[i] == '_' && s[i + 1] == '_')
			return 0;
	}
	return 1;
}

static void
test_err_table(void)
{
	int e;

	for (e = KM_ERR_INTERNAL; e < KM_ERR_COUNT; e++) {
		int st = api_err_status((km_err)e);
		const char *code = api_err_code((km_err)e);
		int is500 = e == KM_ERR_INTERNAL || e == KM_ERR_CONFIG;

		CU_ASSERT_PTR_NOT_NULL_FATAL(code);
		if (st < 400 || st > 599 || !snake_case(code) ||
		    (st == 500) != is500) {
			fprintf(stderr, "\n%s (%d) -> %d \"%s\"\n",
			    km_strerror((km_err)e), e, st, code);
			CU_FAIL("km_err maps to a bad status or code");
		}
	}
	/* A few that clients depend on. */
	CU_ASSERT_EQUAL(api_err_status(KM_ERR_INVALID_REQUEST), 400);
	CU_ASSERT_EQUAL(api_err_status(KM_ERR_INVALID_JSON), 400);
	CU_ASSERT_EQUAL(api_err_status(KM_ERR_INVALID_CIPHERTEXT), 400);
	CU_ASSERT_EQUAL(api_err_status(KM_ERR_UNAUTHENTICATED), 401);
	CU_ASSERT_EQUAL(api_err_status(KM_ERR_FORBIDDEN), 403);
	CU_ASSERT_EQUAL(api_err_status(KM_ERR_KEY_NOT_FOUND), 404);
	CU_ASSERT_EQUAL(api_err_status(KM_ERR_METHOD), 405);
	CU_ASSERT_EQUAL(api_err_status(KM_ERR_KEY_EXISTS), 409);
	CU_ASSERT_EQUAL(api_err_status(KM_ERR_TOO_LARGE), 413);
	CU_ASSERT_EQUAL(api_err_status(KM_ERR_AUDIT), 503);
	CU_ASSERT_STRING_EQUAL(api_err_code(KM_ERR_INVALID_CIPHERTEXT),
	    "invalid_ciphertext");
	CU_ASSERT_STRING_EQUAL(api_err_code(KM_ERR_KEY_NOT_FOUND),
	    "key_not_found");
	CU_ASSERT_STRING_EQUAL(api_err_code(KM_ERR_TOO_LARGE),
	    "payload_too_large");
	/* Out of range: an internal error, never a crash or a 2xx. */
	CU_ASSERT_EQUAL(api_err_status(KM_ERR_COUNT), 500);
	CU_ASSERT_EQUAL(api_err_status((km_err)-1), 500);
	CU_ASSERT_EQUAL(api_err_status((km_err)100000), 500);
	CU_ASSERT_STRING_EQUAL(api_err_code(KM_ERR_COUNT), "internal");
	CU_ASSERT_STRING_EQUAL(api_err_code((km_err)-1), "internal");

	/* The batch-item form carries the same code. */
	{
		json_t *j = api_item_error(KM_ERR_INVALID_CIPHERTEXT, NULL);
		json_t *err = json_object_get(j, "error");

		CU_ASSERT_PTR_NOT_NULL_FATAL(err);
		CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(err,
		    "code")), "invalid_ciphertext");
		CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(err,
		    "message")), km_strerror(KM_ERR_INVALID_CIPHERTEXT));
		json_decref(j);
	}
}

/* --- routes ------------------------------------------------------------- */

/* DESIGN.md section 4: health, ready, JWKS and metrics need no token. */
static int
unauthenticated_ok(const struct api_route *r)
{
	return strcmp(r->method, "GET") == 0 &&
	    (strcmp(r->pattern, "/v1/health") == 0 ||
	    strcmp(r->pattern, "/v1/ready") == 0 ||
	    strcmp(r->pattern, "/.well-known/jwks.json") == 0 ||
	    strcmp(r->pattern, "/metrics") == 0);
}

static void
test_routes(void)
{
	static const char *const methods[] = { "GET", "POST", "PUT", "PATCH",
	    "DELETE" };
	const struct api_route *r, *q;
	int n = 0, have_health = 0, have_ready = 0;
	size_t m;

	for (r = api_routes; r->pattern != NULL; r++, n++) {
		CU_ASSERT_PTR_NOT_NULL_FATAL(r->method);
		CU_ASSERT_PTR_NOT_NULL(r->handler);
		CU_ASSERT_PTR_NOT_NULL(r->op);
		CU_ASSERT(r->op != NULL && r->op[0] != '\0');
		CU_ASSERT_EQUAL(r->pattern[0], '/');
		for (m = 0; m < sizeof(methods) / sizeof(methods[0]); m++)
			if (strcmp(r->method, methods[m]) == 0)
				break;
		CU_ASSERT(m < sizeof(methods) / sizeof(methods[0]));
		/* No pair twice: the second would never be reached. */
		for (q = api_routes; q < r; q++) {
			if (strcmp(q->method, r->method) == 0 &&
			    strcmp(q->pattern, r->pattern) == 0) {
				fprintf(stderr, "\nroute %s %s is listed twice\n",
				    r->method, r->pattern);
				CU_FAIL("duplicate route");
			}
		}
		/* Roles: only the documented public endpoints have none, and
		 * no route names a bit outside the known roles. */
		if (r->roles == 0 && !unauthenticated_ok(r)) {
			fprintf(stderr, "\nroute %s %s has no roles\n", r->method,
			    r->pattern);
			CU_FAIL("a non-health route needs no authentication");
		}
		CU_ASSERT_EQUAL(r->roles & ~(unsigned)ROLE_ANY, 0);
		if (strcmp(r->pattern, "/v1/health") == 0 &&
		    strcmp(r->method, "GET") == 0) {
			have_health = 1;
			CU_ASSERT_EQUAL(r->roles, 0);
		}
		if (strcmp(r->pattern, "/v1/ready") == 0 &&
		    strcmp(r->method, "GET") == 0) {
			have_ready = 1;
			CU_ASSERT_EQUAL(r->roles, 0);
		}
		/* Crypto on a key is for application tokens only. */
		if (strstr(r->pattern, "/wrap") != NULL ||
		    strstr(r->pattern, "/unwrap") != NULL ||
		    strstr(r->pattern, "/rewrap") != NULL ||
		    strstr(r->pattern, "/datakey") != NULL)
			CU_ASSERT_EQUAL(r->roles, ROLE_APP);
		/* Token administration is for admins only. */
		if (strncmp(r->pattern, "/v1/tokens", 10) == 0)
			CU_ASSERT_EQUAL(r->roles, ROLE_ADMIN);
	}
	CU_ASSERT(n >= 3);
	CU_ASSERT_TRUE(have_health);
	CU_ASSERT_TRUE(have_ready);
	CU_ASSERT_PTR_NULL(r->method);
	CU_ASSERT_PTR_NULL(r->handler);
}

/* --- roles and tokens --------------------------------------------------- */

static void
test_roles(void)
{
	static const struct {
		const char *name;
		enum api_role role;
	} v[] = {
		{ "admin", ROLE_ADMIN }, { "app", ROLE_APP },
		{ "auditor", ROLE_AUDITOR }, { "officer", ROLE_OFFICER },
	};
	static const char *const bad[] = { "", "Admin", "root", "apps", "ap",
	    "admin ", "officer\n", NULL };
	enum api_role r;
	size_t i;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		r = (enum api_role)0;
		CU_ASSERT_EQUAL(api_role_parse(v[i].name, &r), KM_OK);
		CU_ASSERT_EQUAL(r, v[i].role);
		CU_ASSERT_STRING_EQUAL(api_role_name(v[i].role), v[i].name);
	}
	for (i = 0; bad[i] != NULL; i++)
		CU_ASSERT_EQUAL(api_role_parse(bad[i], &r), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_STRING_EQUAL(api_role_name((enum api_role)0), "none");
	CU_ASSERT_STRING_EQUAL(api_role_name(ROLE_ANY), "none");
}

static void
test_token_mint(void)
{
	struct store_token t1, t2;
	unsigned char secret[32], md[SHA256_DIGEST_LENGTH];
	char b1[96], b2[96];

	memset(&t1, 0, sizeof(t1));
	memset(&t2, 0, sizeof(t2));
	CU_ASSERT_EQUAL_FATAL(api_token_mint(&t1, b1), KM_OK);
	CU_ASSERT_EQUAL_FATAL(api_token_mint(&t2, b2), KM_OK);
	/* "kms.<16 hex>.<64 hex>" */
	CU_ASSERT_EQUAL_FATAL(strlen(b1), 4 + 16 + 1 + 64);
	CU_ASSERT_EQUAL(strncmp(b1, "kms.", 4), 0);
	CU_ASSERT_EQUAL(b1[20], '.');
	CU_ASSERT_EQUAL(strspn(b1 + 4, "0123456789abcdef"), 16);
	CU_ASSERT_EQUAL(strspn(b1 + 21, "0123456789abcdef"), 64);
	CU_ASSERT_EQUAL(strlen(t1.id), 16);
	CU_ASSERT_EQUAL(strncmp(b1 + 4, t1.id, 16), 0);
	/* Only the hash of the secret is kept. */
	CU_ASSERT_EQUAL_FATAL(km_unhex(b1 + 21, secret, sizeof(secret)), KM_OK);
	SHA256(secret, sizeof(secret), md);
	UT_ASSERT_BYTES(t1.hash, sizeof(t1.hash), md, sizeof(md));
	/* Fresh each time. */
	CU_ASSERT_NOT_EQUAL(strcmp(t1.id, t2.id), 0);
	CU_ASSERT_NOT_EQUAL(strcmp(b1 + 21, b2 + 21), 0);
	CU_ASSERT_NOT_EQUAL(memcmp(t1.hash, t2.hash, sizeof(t1.hash)), 0);
}

/* --- dispatch without a store ------------------------------------------- */

struct run {
	struct api_ctx ctx;
	struct audit *audit;
	char path[300];
};

static void
run_open(struct run *r)
{
	static int n;

	memset(r, 0, sizeof(*r));
	snprintf(r->path, sizeof(r->path), "%s/audit%d", dir, ++n);
	CU_ASSERT_EQUAL_FATAL(audit_open(r->path, &r->audit), KM_OK);
	r->ctx.audit = r->audit;
}

static void
run_close(struct run *r)
{
	audit_free(r->audit);
}

/* Dispatches one request; returns the answer's status. */
static int
dispatch(struct run *r, const char *method, const char *path,
    const char *auth, json_t **answer)
{
	struct api_req rq;
	int status;

	memset(&rq, 0, sizeof(rq));
	rq.ctx = &r->ctx;
	rq.method = method;
	rq.path = path;
	rq.auth_header = auth;
	snprintf(rq.request_id, sizeof(rq.request_id), "req-%s", method);
	api_dispatch(&rq);
	status = rq.status;
	*answer = json_incref(rq.answer);
	api_req_clear(&rq);
	return status;
}

static json_t *
last_record(struct run *r, uint64_t *count)
{
	char seg[400], *data, *start;
	size_t len;
	uint64_t next;
	char prev[65];
	json_t *j;

	audit_head(r->audit, &next, prev);
	*count = next;
	if (next == 0)
		return NULL;
	snprintf(seg, sizeof(seg), "%s/audit-000000000000.jsonl", r->path);
	data = ut_read_file(seg, &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(data);
	CU_ASSERT_FATAL(len > 0 && data[len - 1] == '\n');
	data[len - 1] = '\0';
	start = strrchr(data, '\n');
	j = json_loads(start ? start + 1 : data, 0, NULL);
	free(data);
	CU_ASSERT_PTR_NOT_NULL(j);
	return j;
}

static const char *
jstr(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s != NULL ? s : "(absent)";
}

static void
expect_error(json_t *answer, const char *code, const char *request_id)
{
	json_t *e = json_object_get(answer, "error");

	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	CU_ASSERT_STRING_EQUAL(jstr(e, "code"), code);
	CU_ASSERT_STRING_EQUAL(jstr(e, "request_id"), request_id);
	CU_ASSERT(json_is_string(json_object_get(e, "message")));
}

static void
test_dispatch(void)
{
	struct run r;
	json_t *ans, *rec;
	uint64_t n;
	int st;

	run_open(&r);

	/* Health: no token, no audit record. */
	st = dispatch(&r, "GET", "/v1/health", NULL, &ans);
	CU_ASSERT_EQUAL(st, 200);
	CU_ASSERT_STRING_EQUAL(jstr(ans, "status"), "ok");
	json_decref(ans);
	rec = last_record(&r, &n);
	CU_ASSERT_EQUAL(n, 0);
	json_decref(rec);

	/* No such endpoint: 404, recorded. */
	st = dispatch(&r, "GET", "/v1/nope", NULL, &ans);
	CU_ASSERT_EQUAL(st, 404);
	expect_error(ans, "not_found", "req-GET");
	json_decref(ans);
	rec = last_record(&r, &n);
	CU_ASSERT_EQUAL(n, 1);
	CU_ASSERT_STRING_EQUAL(jstr(rec, "op"), "unrouted");
	CU_ASSERT_STRING_EQUAL(jstr(rec, "outcome"), "error");
	CU_ASSERT_STRING_EQUAL(jstr(rec, "request_id"), "req-GET");
	CU_ASSERT_STRING_EQUAL(jstr(rec, "actor"), "anonymous");
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(rec, "status")), 404);
	json_decref(rec);

	/* Known path, wrong method: 405. */
	st = dispatch(&r, "PUT", "/v1/keys", NULL, &ans);
	CU_ASSERT_EQUAL(st, 405);
	expect_error(ans, "method_not_allowed", "req-PUT");
	json_decref(ans);
	rec = last_record(&r, &n);
	CU_ASSERT_EQUAL(n, 2);
	CU_ASSERT_STRING_EQUAL(jstr(rec, "method"), "PUT");
	json_decref(rec);

	/* Paths that only look like routes. */
	st = dispatch(&r, "GET", "/v1/keys/", NULL, &ans);
	CU_ASSERT_EQUAL(st, 404);
	json_decref(ans);
	st = dispatch(&r, "GET", "/v1/keys/a/b", NULL, &ans);
	CU_ASSERT_EQUAL(st, 404);
	json_decref(ans);
	st = dispatch(&r, "GET", "/v1/healthz", NULL, &ans);
	CU_ASSERT_EQUAL(st, 404);
	json_decref(ans);
	st = dispatch(&r, "GET", "/v1/health/", NULL, &ans);
	CU_ASSERT_EQUAL(st, 404);
	json_decref(ans);

	/* A protected route without a usable token: 401, recorded as
	 * denied under the route's op. The store is never reached. */
	st = dispatch(&r, "POST", "/v1/keys", NULL, &ans);
	CU_ASSERT_EQUAL(st, 401);
	expect_error(ans, "unauthenticated", "req-POST");
	json_decref(ans);
	rec = last_record(&r, &n);
	CU_ASSERT_EQUAL(n, 7);
	CU_ASSERT_STRING_EQUAL(jstr(rec, "op"), "key.create");
	CU_ASSERT_STRING_EQUAL(jstr(rec, "outcome"), "denied");
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(rec, "status")), 401);
	json_decref(rec);
	{
		static const char *const bad_auth[] = {
			"", "Bearer", "Bearer ", "Basic a2V5OnNlY3JldA==",
			"bearer kms.0123456789abcdef.0000000000000000000000000000"
			    "000000000000000000000000000000000000",
			"Bearer kms.0123456789abcdef",
			"Bearer kms.0123456789ABCDEF.00000000000000000000000000000"
			    "00000000000000000000000000000000000",
			"Bearer kms.0123456789abcdef.0000000000000000000000000000"
			    "00000000000000000000000000000000000",
			"Bearer kms.0123456789abcdef.0000000000000000000000000000"
			    "0000000000000000000000000000000000000",
			"Bearer kms.0123456789abcdef.zz00000000000000000000000000"
			    "000000000000000000000000000000000000",
			NULL,
		};
		size_t i;

		for (i = 0; bad_auth[i] != NULL; i++) {
			st = dispatch(&r, "GET", "/v1/keys", bad_auth[i], &ans);
			if (st != 401)
				fprintf(stderr, "\nAuthorization \"%s\": %d\n",
				    bad_auth[i], st);
			CU_ASSERT_EQUAL(st, 401);
			json_decref(ans);
		}
		rec = last_record(&r, &n);
		CU_ASSERT_EQUAL(n, 7 + i);
		CU_ASSERT_STRING_EQUAL(jstr(rec, "outcome"), "denied");
		CU_ASSERT_STRING_EQUAL(jstr(rec, "op"), "key.list");
		json_decref(rec);
	}
	run_close(&r);

	/* The whole log so far: no bearer material in it. */
	{
		char seg[400], *data;
		size_t len;

		snprintf(seg, sizeof(seg), "%s/audit-000000000000.jsonl", r.path);
		data = ut_read_file(seg, &len);
		CU_ASSERT_PTR_NOT_NULL_FATAL(data);
		CU_ASSERT_PTR_NULL(strstr(data, "kms.0123456789"));
		CU_ASSERT_PTR_NULL(strstr(data, "a2V5OnNlY3JldA"));
		free(data);
	}
}

int
main(void)
{
	static const struct ut_test tests[] = {
		{ "key name validation", test_key_name_valid },
		{ "key visibility by role and pattern", test_key_visible },
		{ "km_err -> HTTP status and code", test_err_table },
		{ "route table", test_routes },
		{ "role names", test_roles },
		{ "token minting", test_token_mint },
		{ "dispatch without a store", test_dispatch },
		{ NULL, NULL },
	};

	return ut_main("api", suite_init, suite_clean, tests);
}
