/* libFuzzer target: whole requests through api_dispatch, in process,
 * against a real SoftHSM token, SQLite store and audit log that
 * LLVMFuzzerInitialize makes once (as `kmsctl init --init-token` and kmsd's
 * main do). It reaches every endpoint's JSON parsing, field checks, context
 * canonicalisation, blob parsing, the role and key-pattern checks and the
 * audit record, with the state a running kmsd has.
 *
 * Input (text, so the seeds under corpus/fuzz_api read as requests):
 *   line 1  METHOD SP PATH[?QUERY]    PATH as it came off the wire: %XX is
 *                                      decoded as libmicrohttpd would (an
 *                                      encoded NUL stays encoded)
 *   line 2  caller: admin | app | matter | auditor | officer | none, or any
 *           other text, sent as the raw Authorization header
 *   rest    the body; every "@CT@" becomes a ciphertext wrapped under
 *           matter-1 version 1 with context {"matter":"m-1"}
 * Keys that exist: matter-1, other-1, req-1 (required_context ["tenant"]),
 * sig-1 (ec-p256). Ceremonies run as in kmsd (cer_new); no officers are
 * registered, so ceremony requests end at the officer checks.
 * Checked on every answer: no crash, leak or undefined behaviour; never a
 * 5xx (the token, store and log are healthy, so a 5xx is a bug); an error
 * is {"error":{"code","message","request_id"}} with this request's id; the
 * answer serialises; every authenticated route wrote its audit record; a
 * batch answered 200 has one result object per item. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "api.h"
#include "audit.h"
#include "boot.h"
#include "cer_run.h"
#include "cfg.h"
#include "fuzz.h"
#include "hsm.h"
#include "jwk.h"
#include "log.h"
#include "store.h"
#include "usage.h"

#define MAX_ARGS 16

static char dir[PATH_MAX];
static struct cfg *cfg;
static struct api_ctx ctx;
static char *tok_admin, *tok_app, *tok_matter, *tok_auditor, *tok_officer;
static char *ciphertext;
static unsigned long counter;

struct args {
	char *name[MAX_ARGS], *value[MAX_ARGS];
	size_t n;
};

static const char *
get_arg(void *conn, const char *name)
{
	struct args *a = conn;
	size_t i;

	for (i = 0; i < a->n; i++)
		if (strcmp(a->name[i], name) == 0)
			return a->value[i];
	return NULL;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* service/server.c's on_unescape: a value holding "%00" stays as it is;
 * otherwise valid %XX escapes are decoded in place. */
static void
unescape(char *s)
{
	char *r = s, *w = s;

	if (strstr(s, "%00") != NULL)
		return;
	while (*r != '\0') {
		if (r[0] == '%' && hexval(r[1]) >= 0 && hexval(r[2]) >= 0) {
			*w++ = (char)(hexval(r[1]) << 4 | hexval(r[2]));
			r += 3;
		} else {
			*w++ = *r++;
		}
	}
	*w = '\0';
}

static void
parse_query(char *q, struct args *a)
{
	char *save = NULL, *p;

	for (p = strtok_r(q, "&", &save); p != NULL && a->n < MAX_ARGS;
	    p = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(p, '=');

		if (eq != NULL)
			*eq++ = '\0';
		unescape(p);
		if (eq != NULL)
			unescape(eq);
		a->name[a->n] = p;
		a->value[a->n++] = eq != NULL ? eq : (char *)"";
	}
}

/* A batch answered 200 has one result per item, each an object: a
 * client matches results to items by position. */
static void
check_batch(const struct api_req *rq, const char *text)
{
	json_t *body, *batch, *results;
	size_t i;

	if (rq->status != 200 || rq->body_len == 0)
		return;
	body = json_loadb((const char *)rq->body, rq->body_len, 0, NULL);
	batch = json_object_get(body, "batch");
	results = json_object_get(rq->answer, "results");
	if (json_is_array(batch) && results != NULL) {
		fuzz_assert(json_is_array(results) &&
		    json_array_size(results) == json_array_size(batch),
		    "%zu batch items, %zu results: %.300s", json_array_size(batch),
		    json_array_size(results), text ? text : "");
		for (i = 0; i < json_array_size(results); i++)
			fuzz_assert(json_is_object(json_array_get(results, i)),
			    "result %zu is not an object", i);
	}
	json_decref(body);
}

/* Runs one request; returns the answer (caller decrefs), *status. */
static json_t *
dispatch(const char *method, char *path, const char *auth,
    const unsigned char *body, size_t body_len, int *status, int check)
{
	struct api_req rq;
	struct args a = { .n = 0 };
	char *q, *text;
	json_t *ans, *err;
	const char *rid;

	if ((q = strchr(path, '?')) != NULL) {
		*q++ = '\0';
		parse_query(q, &a);
	}
	unescape(path);
	memset(&rq, 0, sizeof(rq));
	rq.ctx = &ctx;
	rq.method = method;
	rq.path = path;
	rq.body = body;
	rq.body_len = body_len;
	rq.auth_header = auth;
	rq.get_arg = get_arg;
	rq.conn = &a;
	snprintf(rq.request_id, sizeof(rq.request_id), "%032lx", ++counter);
	api_dispatch(&rq);
	*status = rq.status;
	if (check) {
		fuzz_assert(rq.status >= 200 && rq.status <= 599, "status %d",
		    rq.status);
		fuzz_assert(rq.answer != NULL || (rq.raw != NULL &&
		    rq.status == 200), "no answer");
		text = rq.answer ? json_dumps(rq.answer, JSON_COMPACT) : NULL;
		fuzz_assert(rq.answer == NULL || text != NULL,
		    "the answer does not serialise (the server would send 503)");
		fuzz_assert(rq.status < 500, "%s %s -> %d %s", method, path,
		    rq.status, text ? text : "");
		if (rq.status >= 400) {
			err = json_object_get(rq.answer, "error");
			rid = json_string_value(json_object_get(err, "request_id"));
			fuzz_assert(json_is_string(json_object_get(err, "code")) &&
			    json_is_string(json_object_get(err, "message")) &&
			    rid != NULL && strcmp(rid, rq.request_id) == 0,
			    "malformed error answer %s", text ? text : "");
		}
		fuzz_assert(rq.no_audit || rq.audited,
		    "%s %s -> %d was not audited", method, path, rq.status);
		check_batch(&rq, text);
		free(text);
	}
	ans = json_incref(rq.answer);
	api_req_clear(&rq);
	return ans;
}

/* A setup call that must succeed; returns the answer. */
static json_t *
must(const char *method, const char *path, const char *token, const char *body,
    int want)
{
	char auth[200], p[512];
	json_t *ans;
	int st;

	snprintf(auth, sizeof(auth), "Bearer %s", token);
	snprintf(p, sizeof(p), "%s", path);
	ans = dispatch(method, p, auth, (const unsigned char *)body,
	    body ? strlen(body) : 0, &st, 0);
	if (st != want) {
		char *t = ans ? json_dumps(ans, 0) : NULL;

		fprintf(stderr, "fuzz_api: setup %s %s -> %d %s\n", method, path,
		    st, t ? t : "");
		exit(1);
	}
	return ans;
}

static char *
new_token(const char *body)
{
	json_t *a = must("POST", "/v1/tokens", tok_admin, body, 201);
	char *t = strdup(json_string_value(json_object_get(a, "token")));

	json_decref(a);
	return t;
}

static void
cleanup(void)
{
	cer_stop(ctx.cer);
	usage_free(ctx.usage);
	audit_free(ctx.audit);
	cer_free(ctx.cer);
	json_decref(ctx.audit_keys);
	store_free(ctx.store);
	hsm_free(ctx.hsm);
	cfg_free(cfg);
	free(tok_admin);
	free(tok_app);
	free(tok_matter);
	free(tok_auditor);
	free(tok_officer);
	free(ciphertext);
	if (getenv("FUZZ_KEEP") == NULL)
		fuzz_rm_tree(dir);
}

static void
die(const char *what)
{
	fprintf(stderr, "fuzz_api: %s failed (scratch %s)\n", what, dir);
	exit(1);
}

static void
setup_world(void)
{
	struct boot_options bo = { .init_token = 1 };
	struct hsm_config hc = { 0 };
	unsigned char *der = NULL, *adm = NULL;
	char path[PATH_MAX + 32], *text, *pin = NULL, kid[44], *pem = NULL;
	size_t pin_len = 0, der_len = 0, n;
	json_t *jwk = NULL, *a;
	FILE *f;

	if (fuzz_scratch_dir("api", dir, sizeof(dir)) != 0)
		die("scratch dir");
	atexit(cleanup);
	snprintf(path, sizeof(path), "%s/tokens", dir);
	if (mkdir(path, 0700) != 0)
		die("mkdir tokens");
	snprintf(path, sizeof(path), "%s/softhsm2.conf", dir);
	if ((f = fopen(path, "w")) == NULL)
		die("softhsm2.conf");
	fprintf(f, "directories.tokendir = %s/tokens\nobjectstore.backend = file\n"
	    "log.level = ERROR\n", dir);
	fclose(f);
	setenv("SOFTHSM2_CONF", path, 1);
	unsetenv("KMS_PIN");
	unsetenv("KMS_CONFIG");
	setenv("KMS_DATA_DIR", dir, 1);
	setenv("KMS_LOG_LEVEL", "error", 1);
	if (cfg_load(NULL, &cfg) != KM_OK)
		die("cfg_load");
	log_set_level(LOG_ERROR);
	fuzz_quiet_begin();
	if (boot_init(cfg, &bo) != KM_OK)
		die("boot_init");
	fuzz_quiet_end();
	if (cfg_read_pin(cfg, &pin, &pin_len) != KM_OK)
		die("PIN");
	hc.module = cfg->pkcs11_module;
	hc.token_uri = cfg->pkcs11_token;
	hc.pin = pin;
	hc.pin_len = pin_len;
	hc.sessions = 4;
	hc.key_cache = 64;
	if (hsm_open(&hc, &ctx.hsm) != KM_OK)
		die("hsm_open");
	km_secure_free(pin, pin_len);
	if (store_open(cfg->db_path, &ctx.store) != KM_OK ||
	    audit_open(cfg->audit_dir, &ctx.audit) != KM_OK ||
	    usage_new(&ctx.usage) != KM_OK)
		die("store/audit/usage");
	if (hsm_ec_public(ctx.hsm, cfg->audit_key_label, &der, &der_len) != KM_OK ||
	    jwk_from_spki(der, der_len, &jwk, kid) != KM_OK ||
	    jwk_spki_pem(der, der_len, &pem) != KM_OK)
		die("audit key");
	ctx.cfg = cfg;
	ctx.max_json_depth = cfg->max_json_depth;
	ctx.audit_origin = cfg->audit_origin;
	ctx.audit_keys = json_pack("[{s:s, s:s, s:s, s:o}]", "label",
	    cfg->audit_key_label, "kid", kid, "pem", pem, "jwk", jwk);
	free(der);
	free(pem);
	if (cer_new(&ctx, &ctx.cer) != KM_OK)
		die("cer_new");

	snprintf(path, sizeof(path), "%s/admin.token", dir);
	if ((f = fopen(path, "r")) == NULL ||
	    (adm = malloc(256)) == NULL || fgets((char *)adm, 256, f) == NULL)
		die("admin.token");
	fclose(f);
	n = strcspn((char *)adm, "\r\n");
	adm[n] = '\0';
	tok_admin = (char *)adm;
	tok_app = new_token("{\"role\":\"app\",\"keys\":\"*\"}");
	tok_matter = new_token("{\"role\":\"app\",\"keys\":\"matter-*\"}");
	tok_auditor = new_token("{\"role\":\"auditor\"}");
	tok_officer = new_token("{\"role\":\"officer\"}");
	json_decref(must("POST", "/v1/keys", tok_admin,
	    "{\"name\":\"matter-1\",\"type\":\"aes256-gcm\"}", 201));
	json_decref(must("POST", "/v1/keys", tok_admin,
	    "{\"name\":\"other-1\",\"type\":\"aes256-gcm\"}", 201));
	json_decref(must("POST", "/v1/keys", tok_admin,
	    "{\"name\":\"req-1\",\"required_context\":[\"tenant\"]}", 201));
	json_decref(must("POST", "/v1/keys", tok_admin,
	    "{\"name\":\"sig-1\",\"type\":\"ec-p256\"}", 201));
	a = must("POST", "/v1/keys/matter-1/wrap", tok_app,
	    "{\"plaintext\":\"AAECAwQFBgcICQoLDA0ODw==\",\"context\":"
	    "{\"matter\":\"m-1\"}}", 200);
	text = (char *)json_string_value(json_object_get(a, "ciphertext"));
	if (text == NULL || (ciphertext = strdup(text)) == NULL)
		die("wrap");
	json_decref(a);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	setup_world();
	return 0;
}

/* The body with every @CT@ replaced; caller frees. */
static unsigned char *
body_of(const uint8_t *p, size_t n, size_t *out_len)
{
	size_t cl = strlen(ciphertext), i, o = 0, hits = 0;
	unsigned char *out;

	for (i = 0; i + 4 <= n; i++)
		if (memcmp(p + i, "@CT@", 4) == 0)
			hits++;
	if ((out = malloc(n + hits * cl + 1)) == NULL)
		abort();
	for (i = 0; i < n;) {
		if (i + 4 <= n && memcmp(p + i, "@CT@", 4) == 0) {
			memcpy(out + o, ciphertext, cl);
			o += cl;
			i += 4;
		} else {
			out[o++] = p[i++];
		}
	}
	*out_len = o;
	return out;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl1, *nl2, *sp;
	char *method, *path, *who, auth[300];
	const char *hdr = NULL, *tok = NULL;
	unsigned char *body;
	size_t body_len;
	json_t *ans;
	int st;

	if ((nl1 = memchr(data, '\n', size)) == NULL ||
	    (nl2 = memchr(nl1 + 1, '\n', size - (size_t)(nl1 + 1 - data))) == NULL ||
	    (sp = memchr(data, ' ', (size_t)(nl1 - data))) == NULL)
		return 0;
	/* C strings, as libmicrohttpd hands them over: they end at a NUL. */
	method = strndup((const char *)data, (size_t)(sp - data));
	path = strndup((const char *)sp + 1, (size_t)(nl1 - sp - 1));
	who = strndup((const char *)nl1 + 1, (size_t)(nl2 - nl1 - 1));
	if (method == NULL || path == NULL || who == NULL)
		abort();
	if (strcmp(who, "admin") == 0)
		tok = tok_admin;
	else if (strcmp(who, "app") == 0)
		tok = tok_app;
	else if (strcmp(who, "matter") == 0)
		tok = tok_matter;
	else if (strcmp(who, "auditor") == 0)
		tok = tok_auditor;
	else if (strcmp(who, "officer") == 0)
		tok = tok_officer;
	else if (strcmp(who, "none") != 0)
		hdr = who;
	if (tok != NULL) {
		snprintf(auth, sizeof(auth), "Bearer %s", tok);
		hdr = auth;
	}
	body = body_of(nl2 + 1, size - (size_t)(nl2 + 1 - data), &body_len);
	fuzz_quiet_begin();
	ans = dispatch(method, path, hdr, body, body_len, &st, 1);
	fuzz_quiet_end();
	json_decref(ans);
	free(body);
	free(method);
	free(path);
	free(who);
	return 0;
}
