/* Ceremony resource (DESIGN.md section 7, docs/CEREMONIES.md): ceremonies,
 * officers' signed decisions, execution, the officer registry, the MEK
 * status, and the signed emergency revoke of a key version. */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cer_run.h"
#include "hsm.h"
#include "jwk.h"
#include "store.h"

#define LIST_DEFAULT	100
#define LIST_MAX	1000

/* The ceremony runtime, or an answer that there is none. */
static int
cer_or_respond(struct api_req *rq, struct cer **c)
{
	*c = rq->ctx->cer;
	if (*c != NULL)
		return 0;
	api_error(rq, KM_ERR_INTERNAL, "ceremonies are not running in this kmsd");
	return -1;
}

/* The {id} of the path, or a 404 that does not echo it: ids are 16
 * lower-case hex digits, anything else (bytes that are not even UTF-8
 * included) names no ceremony. */
static int
id_or_respond(struct api_req *rq, const char **id)
{
	const char *s = rq->params[0];
	size_t i;

	*id = s;
	for (i = 0; s[i] != '\0' && i <= CER_ID_HEX; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			break;
	if (i == CER_ID_HEX && s[i] == '\0') {
		api_audit_set(rq, "ceremony_id", json_string(s));
		return 0;
	}
	api_error(rq, KM_ERR_CEREMONY_NOT_FOUND, "no such ceremony (an id is 16 "
	    "lower-case hex digits)");
	return -1;
}

/* Fills `a` so that cer_* add their audit members to this request's
 * record and write it, as outcome ok with rq->status, before COMMIT. */
static int
actor_or_respond(struct api_req *rq, struct cer_actor *a)
{
	memset(a, 0, sizeof(*a));
	if (rq->audit == NULL && (rq->audit = json_object()) == NULL) {
		api_error(rq, KM_ERR_NOMEM, "out of memory");
		return -1;
	}
	a->request_id = rq->request_id;
	a->actor = rq->who.actor;
	a->fields = rq->audit;
	a->commit = api_audit_ok_hook;
	a->commit_arg = rq;
	return 0;
}

static void
answer_ceremony(struct api_req *rq, struct cer *c, const char *id, int status)
{
	json_t *j = NULL;

	/* The change is committed and audited; a failed re-read must not
	 * turn it into an error the client would retry. */
	if (cer_get_json(c, id, &j) == KM_OK)
		api_answer(rq, status, j);
	else
		api_answer(rq, status, json_pack("{s:s}", "id", id));
}

/* The answer to a change of ceremony `id` that returned `r`: its `why`
 * (or the code's text) when it failed, else the ceremony as it now is. */
static void
answer_change(struct api_req *rq, struct cer *c, const char *id, int r,
    const char *why, int status)
{
	if (r != KM_OK)
		api_error(rq, r, "%s", why[0] ? why : km_strerror(r));
	else
		answer_ceremony(rq, c, id, status);
}

/* A GET of `read`'s JSON; on failure "reading `what` failed". */
static void
answer_read(struct api_req *rq, int (*read)(struct cer *, json_t **),
    const char *what)
{
	struct cer *c;
	json_t *j = NULL;
	int r;

	if (cer_or_respond(rq, &c))
		return;
	if ((r = read(c, &j)) != KM_OK) {
		api_error(rq, r, "reading %s failed", what);
		return;
	}
	api_answer(rq, 200, j);
}

/* An empty body, or a JSON object with only `fields`. */
static int
optional_body_or_respond(struct api_req *rq, const char *const *fields,
    json_t **body)
{
	*body = NULL;
	if (rq->body_len == 0)
		return 0;
	return api_body_or_respond(rq, fields, body);
}

void
api_cer_create(struct api_req *rq)
{
	static const char *const fields[] = { "operation", "params", "expires_in",
		"officer", "ts", "signature", "wrapped", NULL };
	struct cer_actor a;
	struct cer *c;
	const char *op = NULL, *expires = NULL, *officer = NULL, *ts = NULL;
	const char *sig = NULL, *wrapped = NULL;
	unsigned char *upload = NULL;
	size_t upload_len = 0;
	json_t *body = NULL, *params;
	int64_t ttl = 86400;
	char why[CER_WHY], id[CER_ID_HEX + 1];
	int r;

	if (cer_or_respond(rq, &c) || actor_or_respond(rq, &a) ||
	    api_body_or_respond(rq, fields, &body) ||
	    api_string_or_respond(rq, body, "operation", 1, &op) ||
	    api_string_or_respond(rq, body, "expires_in", 0, &expires) ||
	    api_string_or_respond(rq, body, "officer", 0, &officer) ||
	    api_string_or_respond(rq, body, "ts", 0, &ts) ||
	    api_string_or_respond(rq, body, "signature", 0, &sig) ||
	    api_string_or_respond(rq, body, "wrapped", 0, &wrapped))
		goto out;
	if (wrapped != NULL && (strlen(wrapped) > CER_UPLOAD_MAX * 2 ||
	    km_b64_decode(wrapped, strlen(wrapped), &upload, &upload_len) !=
	    KM_OK || upload_len == 0 || upload_len > CER_UPLOAD_MAX)) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "wrapped must be base64 of "
		    "1..%d bytes", CER_UPLOAD_MAX);
		goto out;
	}
	params = json_object_get(body, "params");
	if (params != NULL && !json_is_null(params) && !json_is_object(params)) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "params must be an object");
		goto out;
	}
	if (json_is_null(params))
		params = NULL;
	if (expires != NULL && km_duration_parse(expires, &ttl) != KM_OK) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "expires_in '%s' is not a "
		    "duration like 24h or 3d", expires);
		goto out;
	}
	if ((officer != NULL) != (sig != NULL) || (officer != NULL) != (ts != NULL)) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "officer, ts and signature go "
		    "together (a request signed by an officer)");
		goto out;
	}
	rq->status = 201;
	r = cer_create_upload(c, op, params, upload, upload_len, ttl, officer, ts,
	    sig, &a, id, why);
	answer_change(rq, c, id, r, why, 201);
out:
	free(upload);
	json_decref(body);
}

/* The import key of key.import: made in the token on the first read. */
void
api_import_key_get(struct api_req *rq)
{
	static const enum hsm_oaep_hash hashes[] = { HSM_OAEP_SHA256,
		HSM_OAEP_SHA1 };
	unsigned char *spki = NULL;
	size_t spki_len = 0, i;
	char *pem = NULL, *b64 = NULL, fp[65];
	json_t *j = NULL, *oaep = NULL;
	struct cer *c;
	int r, created = 0;

	if (cer_or_respond(rq, &c))
		return;
	if ((r = cer_import_key(c, 1, &spki, &spki_len, &created)) != KM_OK) {
		api_error(rq, r == KM_ERR_NOT_FOUND ? KM_ERR_HSM : r, "the token "
		    "could not make or read import key %s", CER_IMPORT_LABEL);
		goto out;
	}
	if (created)
		api_audit_set(rq, "created", json_true());
	api_audit_set(rq, "label", json_string(CER_IMPORT_LABEL));
	if ((oaep = json_array()) == NULL) {
		api_error(rq, KM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < sizeof(hashes) / sizeof(hashes[0]); i++)
		if (hsm_import_oaep_supported(rq->ctx->hsm, CER_IMPORT_LABEL,
		    hashes[i]))
			json_array_append_new(oaep,
			    json_string(hsm_oaep_hash_name(hashes[i])));
	cer_digest_hex(spki, spki_len, fp);
	if ((r = jwk_spki_pem(spki, spki_len, &pem)) != KM_OK ||
	    (r = km_b64_encode(spki, spki_len, &b64)) != KM_OK) {
		api_error(rq, r, "encoding import key %s failed", CER_IMPORT_LABEL);
		goto out;
	}
	j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:O, s:[s]}", "label",
	    CER_IMPORT_LABEL, "algorithm", "RSA-3072", "public_key", pem, "spki",
	    b64, "sha256", fp, "oaep_hashes", oaep, "key_types", "aes256-gcm");
	if (j == NULL) {
		api_error(rq, KM_ERR_NOMEM, "out of memory");
		goto out;
	}
	api_answer(rq, 200, j);
out:
	json_decref(oaep);
	free(spki);
	free(pem);
	free(b64);
}

void
api_cer_list(struct api_req *rq)
{
	const char *status = api_arg(rq, "state"), *lim = api_arg(rq, "limit");
	const char *before = api_arg(rq, "before");
	struct cer *c;
	json_t *j = NULL;
	int64_t before_us = 0;
	long limit = LIST_DEFAULT;
	char *end;
	int r;

	if (cer_or_respond(rq, &c))
		return;
	if (lim != NULL) {
		limit = strtol(lim, &end, 10);
		if (*lim == '\0' || *end != '\0' || limit < 1 || limit > LIST_MAX) {
			api_error(rq, KM_ERR_INVALID_REQUEST, "limit must be 1..%d",
			    LIST_MAX);
			return;
		}
	}
	if (before != NULL && km_time_parse(before, &before_us) != KM_OK) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "before must be an RFC 3339 "
		    "time");
		return;
	}
	if (status != NULL && strcmp(status, "open") != 0 &&
	    strcmp(status, "executed") != 0 && strcmp(status, "cancelled") != 0 &&
	    strcmp(status, "rejected") != 0 && strcmp(status, "stale") != 0 &&
	    strcmp(status, "expired") != 0) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "state must be open, executed, "
		    "cancelled, rejected, stale or expired");
		return;
	}
	if ((r = cer_list_json(c, status, before_us, (size_t)limit, &j)) != KM_OK) {
		api_error(rq, r, "listing ceremonies failed");
		return;
	}
	api_answer(rq, 200, j);
}

void
api_cer_get(struct api_req *rq)
{
	const char *id;
	struct cer *c;
	json_t *j = NULL;
	int r;

	if (cer_or_respond(rq, &c) || id_or_respond(rq, &id))
		return;
	if ((r = cer_get_json(c, id, &j)) != KM_OK) {
		api_error(rq, r, r == KM_ERR_CEREMONY_NOT_FOUND ? "no ceremony "
		    "%s" : "reading ceremony %s failed", id);
		return;
	}
	api_answer(rq, 200, j);
}

void
api_cer_approve(struct api_req *rq)
{
	static const char *const fields[] = { "officer", "decision", "signature",
		NULL };
	const char *officer = NULL, *decision = NULL, *sig = NULL, *id;
	struct cer_actor a;
	struct cer *c;
	json_t *body = NULL;
	char why[CER_WHY];
	int r, dup = 0;

	if (cer_or_respond(rq, &c) || id_or_respond(rq, &id) ||
	    actor_or_respond(rq, &a) ||
	    api_body_or_respond(rq, fields, &body) ||
	    api_string_or_respond(rq, body, "officer", 1, &officer) ||
	    api_string_or_respond(rq, body, "decision", 1, &decision) ||
	    api_string_or_respond(rq, body, "signature", 1, &sig))
		goto out;
	/* A reject has its own op, so a search of the log finds it. */
	if (strcmp(decision, "reject") == 0)
		rq->op = "ceremony.reject";
	rq->status = 200;
	r = cer_decide(c, id, officer, decision, sig, &a, &dup, why);
	answer_change(rq, c, id, r, why, 200);
out:
	json_decref(body);
}

void
api_cer_execute(struct api_req *rq)
{
	static const char *const fields[] = { NULL };
	struct cer_actor a;
	struct cer *c;
	const char *id;
	json_t *body = NULL;
	char why[CER_WHY];
	int r;

	if (cer_or_respond(rq, &c) || id_or_respond(rq, &id) ||
	    actor_or_respond(rq, &a) ||
	    optional_body_or_respond(rq, fields, &body))
		goto out;
	rq->status = 200;
	r = cer_execute(c, id, &a, why);
	answer_change(rq, c, id, r, why, 200);
out:
	json_decref(body);
}

void
api_cer_cancel(struct api_req *rq)
{
	static const char *const fields[] = { "reason", NULL };
	const char *reason = NULL, *id;
	struct cer_actor a;
	struct cer *c;
	json_t *body = NULL;
	char why[CER_WHY];
	int r;

	if (cer_or_respond(rq, &c) || id_or_respond(rq, &id) ||
	    actor_or_respond(rq, &a) ||
	    optional_body_or_respond(rq, fields, &body) ||
	    (body != NULL && api_string_or_respond(rq, body, "reason", 0, &reason)))
		goto out;
	if (reason != NULL)
		api_audit_set(rq, "reason", json_string(reason));
	rq->status = 200;
	r = cer_cancel(c, id, &a, why);
	answer_change(rq, c, id, r, why, 200);
out:
	json_decref(body);
}

void
api_officers_list(struct api_req *rq)
{
	answer_read(rq, cer_officers_json, "the officer registry");
}

void
api_mek_get(struct api_req *rq)
{
	answer_read(rq, cer_mek_json, "the MEK versions");
}

void
api_mek_resume(struct api_req *rq)
{
	struct cer *c;
	json_t *j = NULL;
	char why[CER_WHY];
	int r;

	if (cer_or_respond(rq, &c))
		return;
	if ((r = cer_mek_resume(c, why)) != KM_OK) {
		api_error(rq, r, "%s", why[0] ? why : km_strerror(r));
		return;
	}
	if (cer_mek_json(c, &j) != KM_OK)
		j = json_object();
	api_answer(rq, 202, j);
}

void
api_keys_revoke(struct api_req *rq)
{
	static const char *const fields[] = { "officer", "ts", "nonce",
		"signature", NULL };
	const char *officer = NULL, *ts = NULL, *nonce = NULL, *sig = NULL;
	const char *name = rq->params[0], *vs = rq->params[1];
	struct store_key *k = NULL;
	struct cer_actor a;
	struct cer *c;
	json_t *body = NULL;
	unsigned long v;
	char why[CER_WHY], *end;
	int r;

	api_audit_set(rq, "key", json_string(name));
	v = strtoul(vs, &end, 10);
	if (*vs < '1' || *vs > '9' || *end != '\0' || v > UINT32_MAX) {
		api_error(rq, KM_ERR_VERSION_NOT_FOUND, "'%s' is not a version", vs);
		return;
	}
	api_audit_set(rq, "version", json_integer((json_int_t)v));
	if (cer_or_respond(rq, &c) || actor_or_respond(rq, &a) ||
	    api_body_or_respond(rq, fields, &body) ||
	    api_string_or_respond(rq, body, "officer", 1, &officer) ||
	    api_string_or_respond(rq, body, "ts", 1, &ts) ||
	    api_string_or_respond(rq, body, "nonce", 1, &nonce) ||
	    api_string_or_respond(rq, body, "signature", 1, &sig))
		goto out;
	rq->status = 200;
	if ((r = cer_revoke(c, name, (uint32_t)v, officer, ts, nonce, sig, &a,
	    why)) != KM_OK) {
		api_error(rq, r, "%s", why[0] ? why : km_strerror(r));
		goto out;
	}
	if (store_key_get(rq->ctx->store, name, &k) == KM_OK)
		api_answer(rq, 200, api_key_json(rq, k));
	else
		api_answer(rq, 200, json_pack("{s:s}", "name", name));
out:
	store_key_free(k);
	json_decref(body);
}
