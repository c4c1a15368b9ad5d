/* The authorisation matrix, generated from the route table (api_routes in
 * api/routes.c, linked from kmcore): every route x every caller. A route
 * added to the table is in the matrix at once; one this file has no
 * template for still gets the generic request (path parameters filled by
 * the segment before them, an empty JSON object as a POST body), which is
 * enough for every refusal below.
 *
 * Callers: admin, app-in-pattern, app-out-of-pattern, auditor, officer,
 * none (no Authorization header), and three that must count as none: a
 * well-formed unknown token, a revoked token and an expired one.
 *
 * Per cell:
 *   route without roles   answers without authentication (2xx for none)
 *   none-like caller      401 unauthenticated
 *   role not allowed      403 forbidden
 *   app token outside its key pattern, on a /v1/keys/{name} route the
 *                         role may use: 403 forbidden
 *   allowed               never 401, never 403 forbidden (a 403 for another
 *                         reason, e.g. invalid_signature, is the handler's
 *                         answer to the request, not to the caller); 2xx
 *                         where the template is a valid request
 * and every refusal (401/403) is in the audit log as outcome "denied". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "itest.h"
#include "officers.h"

enum who {
	W_ADMIN, W_APP_IN, W_APP_OUT, W_AUDITOR, W_OFFICER,
	W_NONE, W_UNKNOWN, W_REVOKED, W_EXPIRED, W_N
};

static const char *const who_name[W_N] = {
	"admin", "app-in-pattern", "app-out-of-pattern", "auditor", "officer",
	"none", "unknown-token", "revoked-token", "expired-token",
};

/* What the matrix works on, made once. */
static struct {
	char *tok[W_N];
	char enc[64];		/* aes256-gcm key in the app-in pattern */
	char sig[64];		/* ec-p256 key in the app-in pattern */
	char *ct;		/* wrapped under enc, context {"m":"1"} */
	char *signature;	/* raw signature by sig over "aGVsbG8=" */
	char token_id[40];	/* an existing token's id */
	char segment[64];	/* an audit segment file name */
	char cer_id[40];	/* an open ceremony */
	int ready;
} M;

#define MAX_DENIED 1024
static char denied[MAX_DENIED][33];
static size_t n_denied;

static unsigned
role_of(enum who w)
{
	switch (w) {
	case W_ADMIN: return ROLE_ADMIN;
	case W_APP_IN:
	case W_APP_OUT: return ROLE_APP;
	case W_AUDITOR: return ROLE_AUDITOR;
	case W_OFFICER: return ROLE_OFFICER;
	default: return 0;
	}
}

/* A fresh aes256-gcm key in the app-in pattern, for calls that change
 * the key they act on; returned in a ring of static buffers. */
static const char *
fresh_key(void)
{
	static char ring[4][64];
	static unsigned slot;
	char *k = ring[slot++ % 4];

	snprintf(k, sizeof(ring[0]), "%s", ith_name("mxk-f"));
	(void)ith_key_create(k, NULL);
	return k;
}

/* A fresh key rotated once, so version 1 is active (a version a
 * key.destroy ceremony may act on). */
static const char *
fresh_rotated_key(void)
{
	const char *k = fresh_key();
	char path[200];

	snprintf(path, sizeof(path), "/v1/keys/%s/rotate", k);
	json_decref(ith_call("POST", path, M.tok[W_ADMIN], NULL, 200, NULL));
	return k;
}

/* An open key.destroy ceremony on a fresh key; *digest gets its digest. */
static const char *
fresh_ceremony(char digest[65])
{
	static char id[40];
	json_t *a, *p = json_pack("{s:s, s:s}", "key", fresh_rotated_key(),
	    "version", "1");
	const char *i, *d;

	id[0] = digest[0] = '\0';
	a = ith_call("POST", "/v1/ceremonies", M.tok[W_ADMIN], json_pack("{s:s, "
	    "s:o}", "operation", "key.destroy", "params", p), 201, NULL);
	i = json_string_value(json_object_get(a, "id"));
	d = json_string_value(json_object_get(a, "digest"));
	if (i != NULL && d != NULL) {
		snprintf(id, sizeof(id), "%s", i);
		snprintf(digest, 65, "%s", d);
	}
	json_decref(a);
	return id[0] ? id : "0000000000000000";
}

static char *
token_id_of(const char *role, const char *keys, char **id)
{
	return ith_token_create(role, keys, NULL, id);
}

static int
suite_init(void)
{
	memset(&M, 0, sizeof(M));
	return it_ready();
}

/* A test, not the suite's init: the harness records its checks into the
 * running CUnit test. */
static void
test_fixture(void)
{
	char path[256], *id = NULL, *b64;
	unsigned char pt[16] = { 1, 2, 3 };
	json_t *a, *ctx;

	M.tok[W_ADMIN] = strdup(ith_admin_token());
	M.tok[W_APP_IN] = token_id_of("app", "mxk-*", NULL);
	M.tok[W_APP_OUT] = token_id_of("app", "nomatch-*,other-*", NULL);
	M.tok[W_AUDITOR] = token_id_of("auditor", NULL, NULL);
	M.tok[W_OFFICER] = token_id_of("officer", NULL, &id);
	if (id != NULL)
		snprintf(M.token_id, sizeof(M.token_id), "%s", id);
	free(id);
	M.tok[W_UNKNOWN] = strdup("kms.0123456789abcdef."
	    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
	M.tok[W_REVOKED] = token_id_of("admin", NULL, &id);
	if (id != NULL) {
		snprintf(path, sizeof(path), "/v1/tokens/%s", id);
		json_decref(ith_call("DELETE", path, M.tok[W_ADMIN], NULL, 200, NULL));
	}
	free(id);
	M.tok[W_EXPIRED] = ith_token_create("admin", NULL, "1s", NULL);

	snprintf(M.enc, sizeof(M.enc), "%s", ith_name("mxk-enc"));
	snprintf(M.sig, sizeof(M.sig), "%s", ith_name("mxk-sig"));
	(void)ith_key_create(M.enc, NULL);
	(void)ith_key_create(M.sig, json_pack("{s:s}", "type", "ec-p256"));
	ctx = json_pack("{s:s}", "m", "1");
	M.ct = ith_wrap(M.enc, M.tok[W_APP_IN], pt, sizeof(pt), ctx, NULL);
	json_decref(ctx);
	snprintf(path, sizeof(path), "/v1/keys/%s/sign", M.sig);
	a = ith_call("POST", path, M.tok[W_APP_IN], json_pack("{s:s, s:s}",
	    "input", "aGVsbG8=", "format", "raw"), 200, NULL);
	b64 = (char *)json_string_value(json_object_get(a, "signature"));
	M.signature = b64 ? strdup(b64) : NULL;
	json_decref(a);
	a = ith_call("GET", "/v1/audit/files", M.tok[W_AUDITOR], NULL, 200, NULL);
	b64 = (char *)json_string_value(json_object_get(json_array_get(
	    json_object_get(a, "segments"), 0), "name"));
	snprintf(M.segment, sizeof(M.segment), "%s", b64 != NULL ? b64 :
	    "audit-000000000000.jsonl");
	json_decref(a);
	{
		char digest[65];

		snprintf(M.cer_id, sizeof(M.cer_id), "%s", fresh_ceremony(digest));
	}
	/* The expired token must be past its second by now. */
	sleep(2);
	M.ready = M.tok[W_APP_IN] && M.tok[W_APP_OUT] && M.tok[W_AUDITOR] &&
	    M.tok[W_OFFICER] && M.tok[W_REVOKED] && M.tok[W_EXPIRED] && M.ct &&
	    M.token_id[0];
	ith_check(M.ready, "the matrix fixture is incomplete (see above)");
}

static int
suite_clean(void)
{
	size_t i;

	for (i = 0; i < W_N; i++)
		free(M.tok[i]);
	free(M.ct);
	free(M.signature);
	return 0;
}

/* One request of the matrix. */
struct req {
	char path[600];
	json_t *body;		/* sent as JSON; NULL: no body */
	int valid;		/* allowed callers must get 2xx */
};

#define IS(m, p) (strcmp(rt->method, (m)) == 0 && strcmp(rt->pattern, (p)) == 0)

/* Fills the request for route `rt` and caller `w`: values for the path
 * parameters, and a body and query that make a valid request where this
 * file knows the route. Resources a successful call changes are made
 * fresh for each allowed caller. */
static void
prep(const struct api_route *rt, enum who w, struct req *r)
{
	const char *key = M.enc, *version = "1", *token = M.token_id;
	const char *cer = M.cer_id, *query = "";
	int allowed = (role_of(w) & rt->roles) != 0 && rt->roles != 0;
	char digest[65], *id = NULL, *tk;
	const char *p;
	size_t o = 0;

	r->body = NULL;
	r->valid = 0;
	if (strcmp(rt->method, "POST") == 0)
		r->body = json_object();

	if (IS("GET", "/v1/health") || IS("GET", "/v1/ready") ||
	    IS("GET", "/metrics") || IS("GET", "/.well-known/jwks.json") ||
	    IS("GET", "/v1/alerts") || IS("GET", "/v1/keys") ||
	    IS("GET", "/v1/keys/{}") || IS("GET", "/v1/tokens") ||
	    IS("GET", "/v1/audit/head") || IS("GET", "/v1/audit/checkpoints") ||
	    IS("GET", "/v1/audit/keys") || IS("GET", "/v1/audit/records") ||
	    IS("GET", "/v1/audit/files") || IS("GET", "/v1/audit/files/{}") ||
	    IS("GET", "/v1/ceremonies") || IS("GET", "/v1/ceremonies/{}") ||
	    IS("GET", "/v1/officers") || IS("GET", "/v1/mek"))
		r->valid = 1;
	if (IS("GET", "/v1/audit/records"))
		query = "?from=0&limit=5";
	if (IS("GET", "/v1/keys/{}/public")) {
		key = M.sig;
		r->valid = 1;
	}
	if (IS("POST", "/v1/keys")) {
		json_object_set_new(r->body, "name", json_string(ith_name("mxk-c")));
		json_object_set_new(r->body, "type", json_string("aes256-gcm"));
		r->valid = 1;
	}
	if (IS("POST", "/v1/keys/{}/rotate")) {
		key = allowed ? fresh_key() : key;
		r->valid = 1;
	}
	if (IS("POST", "/v1/keys/{}/versions/{}/state")) {
		/* active -> retired: a move without a ceremony or signature. */
		key = allowed ? fresh_rotated_key() : key;
		json_object_set_new(r->body, "state", json_string("retired"));
		json_object_set_new(r->body, "force", json_true());
		r->valid = 1;
	}
	if (IS("POST", "/v1/keys/{}/versions/{}/revoke")) {
		key = allowed ? fresh_key() : key;
		json_decref(r->body);
		r->body = ito_revoke_body("alice", key, 1, 0);
		r->valid = 1;
	}
	if (IS("POST", "/v1/keys/{}/wrap")) {
		json_object_set_new(r->body, "plaintext", json_string("AAECAw=="));
		json_object_set_new(r->body, "context", json_pack("{s:s}", "m", "1"));
		r->valid = 1;
	}
	if (IS("POST", "/v1/keys/{}/unwrap") || IS("POST", "/v1/keys/{}/rewrap")) {
		json_object_set_new(r->body, "ciphertext", json_string(M.ct ?
		    M.ct : "kms:v1:AAAA"));
		json_object_set_new(r->body, "context", json_pack("{s:s}", "m", "1"));
		r->valid = 1;
	}
	if (IS("POST", "/v1/keys/{}/datakey")) {
		json_object_set_new(r->body, "bits", json_integer(256));
		json_object_set_new(r->body, "context", json_pack("{s:s}", "m", "1"));
		r->valid = 1;
	}
	if (IS("POST", "/v1/keys/{}/sign")) {
		key = M.sig;
		json_object_set_new(r->body, "input", json_string("aGVsbG8="));
		json_object_set_new(r->body, "format", json_string("raw"));
		r->valid = 1;
	}
	if (IS("POST", "/v1/keys/{}/verify")) {
		key = M.sig;
		json_object_set_new(r->body, "input", json_string("aGVsbG8="));
		json_object_set_new(r->body, "signature", json_string(M.signature ?
		    M.signature : "AAAA"));
		r->valid = M.signature != NULL;
	}
	if (IS("POST", "/v1/tokens")) {
		json_object_set_new(r->body, "role", json_string("auditor"));
		r->valid = 1;
	}
	if (IS("DELETE", "/v1/tokens/{}")) {
		if (allowed && (tk = token_id_of("auditor", NULL, &id)) != NULL) {
			static char fresh[40];

			snprintf(fresh, sizeof(fresh), "%s", id);
			token = fresh;
			free(tk);
		}
		free(id);
		r->valid = 1;
	}
	if (IS("POST", "/v1/ceremonies")) {
		json_object_set_new(r->body, "operation", json_string("key.destroy"));
		json_object_set_new(r->body, "params", json_pack("{s:s, s:s}", "key",
		    allowed ? fresh_rotated_key() : M.enc, "version", "1"));
		r->valid = 1;
	}
	if (IS("POST", "/v1/ceremonies/{}/approvals")) {
		if (allowed) {
			cer = fresh_ceremony(digest);
			json_decref(r->body);
			r->body = ito_decision("bob", digest, "approve");
		} else {
			json_object_set_new(r->body, "officer", json_string("bob"));
			json_object_set_new(r->body, "decision", json_string("approve"));
			json_object_set_new(r->body, "signature", json_string("AAAA"));
		}
		r->valid = 1;
	}
	if (IS("POST", "/v1/ceremonies/{}/execute")) {
		if (allowed) {
			char path[200];

			cer = fresh_ceremony(digest);
			snprintf(path, sizeof(path), "/v1/ceremonies/%s/approvals", cer);
			json_decref(ith_call("POST", path, M.tok[W_OFFICER],
			    ito_decision("bob", digest, "approve"), 200, NULL));
			json_decref(ith_call("POST", path, M.tok[W_OFFICER],
			    ito_decision("carol", digest, "approve"), 200, NULL));
		}
		r->valid = 1;
	}
	if (IS("POST", "/v1/ceremonies/{}/cancel")) {
		cer = allowed ? fresh_ceremony(digest) : cer;
		r->valid = 1;
	}

	/* The path: each {} gets the value the segment before it names. */
	for (p = rt->pattern; *p != '\0' && o + 200 < sizeof(r->path);) {
		if (p[0] == '{' && p[1] == '}') {
			const char *seg_end = p - 1, *seg = seg_end, *v = "x";
			size_t n;

			while (seg > rt->pattern && seg[-1] != '/')
				seg--;
			n = (size_t)(seg_end - seg);
			if (n == 4 && strncmp(seg, "keys", 4) == 0)
				v = key;
			else if (n == 8 && strncmp(seg, "versions", 8) == 0)
				v = version;
			else if (n == 6 && strncmp(seg, "tokens", 6) == 0)
				v = token;
			else if (n == 5 && strncmp(seg, "files", 5) == 0)
				v = M.segment;
			else if (n == 10 && strncmp(seg, "ceremonies", 10) == 0)
				v = cer;
			o += (size_t)snprintf(r->path + o, sizeof(r->path) - o, "%s", v);
			p += 2;
			continue;
		}
		r->path[o++] = *p++;
	}
	r->path[o] = '\0';
	snprintf(r->path + o, sizeof(r->path) - o, "%s", query);
}

static const char *
code_of(json_t *a)
{
	const char *c = json_string_value(json_object_get(json_object_get(a,
	    "error"), "code"));

	return c != NULL ? c : "";
}

static void
test_matrix(void)
{
	const struct api_route *rt;
	size_t routes = 0, cells = 0;
	int w;

	if (!M.ready) {
		ith_fail("no fixture");
		return;
	}
	printf("\n%-7s %-36s", "method", "route");
	for (w = 0; w < W_N; w++)
		printf(" %5.5s", who_name[w]);
	printf("\n");
	for (rt = api_routes; rt->pattern != NULL; rt++) {
		int key_route = strncmp(rt->pattern, "/v1/keys/{}", 11) == 0;

		routes++;
		printf("%-7s %-36s", rt->method, rt->pattern);
		for (w = 0; w < W_N; w++) {
			struct ith_headers h;
			struct req r;
			char *text = NULL, *raw = NULL;
			const char *code;
			long st = 0;
			json_t *a = NULL;
			int refuse = 0;

			prep(rt, (enum who)w, &r);
			if (r.body != NULL)
				text = json_dumps(r.body, JSON_COMPACT);
			json_decref(r.body);
			(void)ith_request_raw(rt->method, r.path,
			    w == W_NONE ? NULL : M.tok[w], text,
			    text ? strlen(text) : 0, NULL, &st, &raw, NULL, &a, &h);
			code = code_of(a);
			cells++;
			printf(" %5ld", st);
			if (rt->roles == 0) {
				ith_check(st != 401 && st != 403 && st < 500 &&
				    (w != W_NONE || st / 100 == 2),
				    "%s %s as %s: an unauthenticated route answered "
				    "%ld %s", rt->method, r.path, who_name[w], st, code);
			} else if (w >= W_NONE) {
				refuse = 1;
				ith_check(st == 401 && strcmp(code, "unauthenticated") == 0,
				    "%s %s as %s: expected 401 unauthenticated, got %ld "
				    "%s", rt->method, r.path, who_name[w], st, code);
			} else if (!(role_of((enum who)w) & rt->roles)) {
				refuse = 1;
				ith_check(st == 403 && strcmp(code, "forbidden") == 0,
				    "%s %s as %s: the role may not call this route; "
				    "expected 403 forbidden, got %ld %s", rt->method,
				    r.path, who_name[w], st, code);
			} else if (w == W_APP_OUT && key_route) {
				refuse = 1;
				ith_check(st == 403 && strcmp(code, "forbidden") == 0,
				    "%s %s as %s: the key is outside the token's pattern;"
				    " expected 403 forbidden, got %ld %s", rt->method,
				    r.path, who_name[w], st, code);
			} else {
				ith_check(st != 401 && !(st == 403 &&
				    strcmp(code, "forbidden") == 0),
				    "%s %s as %s: an allowed caller was refused: %ld %s",
				    rt->method, r.path, who_name[w], st, code);
				if (r.valid)
					ith_check(st / 100 == 2, "%s %s as %s: a valid request "
					    "of an allowed caller got %ld: %.300s", rt->method,
					    r.path, who_name[w], st, raw ? raw : "");
			}
			if (refuse && (st == 401 || st == 403) && n_denied < MAX_DENIED)
				snprintf(denied[n_denied++], 33, "%.32s", h.request_id);
			json_decref(a);
			free(raw);
			free(text);
		}
		printf("\n");
	}
	printf("authz matrix: %zu routes x %d callers = %zu requests\n", routes,
	    W_N, cells);
	ith_check(routes >= 20, "only %zu routes in api_routes?", routes);
}

/* Every refusal above is in the audit log, as denied. */
static void
test_refusals_audited(void)
{
	struct ith_audit l;
	size_t i, missing = 0, wrong = 0;

	if (n_denied == 0)
		return;
	ith_check(ith_audit_read(&l, 0), "the audit chain does not verify");
	for (i = 0; i < n_denied; i++) {
		const struct ith_audit_rec *r = ith_audit_find(&l, denied[i]);

		if (r == NULL && missing++ < 3)
			ith_fail("refused request %s has no audit record", denied[i]);
		if (r != NULL && r->outcome != 'd' && wrong++ < 3)
			ith_fail("refused request %s is recorded with outcome '%c', "
			    "not denied", denied[i], r->outcome);
	}
	ith_check(missing == 0 && wrong == 0, "%zu of %zu refusals missing from "
	    "the audit log, %zu not recorded as denied", missing, n_denied, wrong);
	ith_audit_free(&l);
}

int
it_register_authz_matrix(void)
{
	CU_pSuite s = CU_add_suite("authz matrix", suite_init, suite_clean);

	if (s == NULL ||
	    CU_add_test(s, "tokens, keys, a ciphertext, a ceremony",
	    test_fixture) == NULL ||
	    CU_add_test(s, "every route x every caller", test_matrix) == NULL ||
	    CU_add_test(s, "every refusal is audited as denied",
	    test_refusals_audited) == NULL)
		return -1;
	return 0;
}
