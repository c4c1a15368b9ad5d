/* Ceremonies in kmsd: create, decide, execute, cancel, the signed revoke,
 * their JSON, the audit-signing key switch and kmsctl init's officers. */
#include "cer_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/sha.h>

#include "api.h"
#include "audit.h"
#include "cfg.h"
#include "hsm.h"
#include "jwk.h"
#include "log.h"
#include "store.h"

#define TTL_MAX_S	(7 * 86400)

/* ---- small helpers ---- */

static int
random_hex(char *out, size_t bytes)
{
	unsigned char b[32];
	int rc;

	if (bytes > sizeof(b))
		return KM_ERR_INTERNAL;
	if ((rc = km_random(b, bytes)) != KM_OK)
		return rc;
	km_hex(b, bytes, out);
	return KM_OK;
}

static void
fset(struct cer_actor *a, const char *k, json_t *v)
{
	if (a->fields == NULL || v == NULL) {
		json_decref(v);
		return;
	}
	json_object_set_new(a->fields, k, v);
}

static json_t *
params_json(const struct cer_request *r)
{
	json_t *o = json_object();
	size_t i;

	for (i = 0; o != NULL && i < r->n_params; i++)
		json_object_set_new(o, r->params[i].name,
		    json_string(r->params[i].value));
	return o;
}

/* The audit members every step of a ceremony carries. */
static void
fields_base(struct cer_actor *a, const struct cer_record *rec)
{
	const char *key = cer_param_get(&rec->req, "key");
	uint64_t v = 0;

	fset(a, "ceremony_id", json_string(rec->req.id));
	fset(a, "operation", json_string(rec->req.operation));
	fset(a, "digest", json_string(rec->digest));
	fset(a, "requester", json_string(rec->req.requester));
	fset(a, "params", params_json(&rec->req));
	if (key != NULL)
		fset(a, "key", json_string(key));
	if (cer_param_get(&rec->req, "version") != NULL &&
	    strcmp(rec->req.operation, "mek.disable") != 0) {
		v = strtoull(cer_param_get(&rec->req, "version"), NULL, 10);
		fset(a, "version", json_integer((json_int_t)v));
	}
}

static int
is_expired(const struct cer_record *rec, int64_t now)
{
	return now >= rec->req.expires;
}

/* ---- lifecycle ---- */

int
cer_audit_record(struct cer *c, const char *request_id, const char *op,
    json_t *fields, const char *outcome)
{
	char rid[33];
	json_t *rec;
	int rc;

	if (request_id == NULL) {
		if ((rc = random_hex(rid, 16)) != KM_OK)
			return rc;
		request_id = rid;
	}
	rec = json_pack("{s:s, s:s, s:s, s:s, s:i}", "request_id", request_id,
	    "actor", "kmsd", "op", op, "outcome", outcome, "status", 0);
	if (rec == NULL)
		return KM_ERR_NOMEM;
	if (fields != NULL)
		json_object_update(rec, fields);
	if (json_object_get(rec, "key") == NULL)
		json_object_set_new(rec, "key", json_null());
	if (json_object_get(rec, "version") == NULL)
		json_object_set_new(rec, "version", json_null());
	rc = audit_append(c->ctx->audit, rec, NULL);
	json_decref(rec);
	return rc;
}

/* Checkpoint signatures: ECDSA P-256 in the token over SHA-256(msg), as DER
 * (the same as kmsd's first signer in service/main.c). */
static int
sign_checkpoint(void *arg, const unsigned char *msg, size_t len,
    unsigned char **sig, size_t *sig_len)
{
	struct cer_signer *s = arg;
	unsigned char digest[SHA256_DIGEST_LENGTH], raw[64], *der = NULL;
	ECDSA_SIG *es = NULL;
	BIGNUM *r = NULL, *ss = NULL;
	int n, rc = KM_ERR_NOMEM;

	*sig = NULL;
	*sig_len = 0;
	SHA256(msg, len, digest);
	if ((rc = hsm_ec_sign(s->hsm, s->label, digest, raw)) != KM_OK)
		goto out;
	rc = KM_ERR_NOMEM;
	if ((es = ECDSA_SIG_new()) == NULL ||
	    (r = BN_bin2bn(raw, 32, NULL)) == NULL ||
	    (ss = BN_bin2bn(raw + 32, 32, NULL)) == NULL ||
	    ECDSA_SIG_set0(es, r, ss) != 1)
		goto out;
	r = ss = NULL;
	if ((n = i2d_ECDSA_SIG(es, &der)) <= 0)
		goto out;
	if ((*sig = malloc((size_t)n)) == NULL)
		goto out;
	memcpy(*sig, der, (size_t)n);
	*sig_len = (size_t)n;
	rc = KM_OK;
out:
	BN_free(r);
	BN_free(ss);
	ECDSA_SIG_free(es);
	OPENSSL_free(der);
	return rc;
}

/* {label, kid, pem, jwk} of token key `label`; *kid_out (44 bytes). */
static int
audit_key_entry(struct cer *c, const char *label, json_t **out, char *kid_out)
{
	unsigned char *der = NULL;
	size_t der_len = 0;
	json_t *jwk = NULL;
	char kid[44], *pem = NULL;
	int rc;

	*out = NULL;
	if ((rc = hsm_ec_public(c->ctx->hsm, label, &der, &der_len)) != KM_OK) {
		log_error("ceremony: audit-signing key %s is not in the token", label);
		goto out;
	}
	if ((rc = jwk_from_spki(der, der_len, &jwk, kid)) != KM_OK ||
	    (rc = jwk_spki_pem(der, der_len, &pem)) != KM_OK)
		goto out;
	if ((*out = json_pack("{s:s, s:s, s:s, s:O}", "label", label, "kid", kid,
	    "pem", pem, "jwk", jwk)) == NULL) {
		rc = KM_ERR_NOMEM;
		goto out;
	}
	if (kid_out != NULL)
		memcpy(kid_out, kid, sizeof(kid));
	rc = KM_OK;
out:
	json_decref(jwk);
	free(pem);
	free(der);
	return rc;
}

static int
push_ptr(void ***arr, size_t *n, void *p)
{
	void **grown = realloc(*arr, (*n + 1) * sizeof(**arr));

	if (grown == NULL)
		return KM_ERR_NOMEM;
	grown[(*n)++] = p;
	*arr = grown;
	return KM_OK;
}

int
cer_audit_switch(struct cer *c, const char *label)
{
	const struct cfg *cfg = c->ctx->cfg;
	struct cer_audit_key *k = NULL;
	struct cer_signer *sg = NULL;
	json_t *keys = NULL, *e = NULL, *old;
	char kid[44] = "", ekid[44];
	size_t n = 0, i;
	int rc, have = 0;

	if ((rc = cer_store_audit_keys(c->ctx->store, &k, &n)) != KM_OK)
		goto out;
	if ((keys = json_array()) == NULL) {
		rc = KM_ERR_NOMEM;
		goto out;
	}
	/* Every key that ever signed, oldest first: checkpoints already in
	 * the log stay verifiable. */
	if (n == 0) {
		if ((rc = audit_key_entry(c, cfg->audit_key_label, &e, ekid)) != KM_OK)
			goto out;
		if (strcmp(cfg->audit_key_label, label) == 0) {
			memcpy(kid, ekid, sizeof(kid));
			have = 1;
		}
		json_array_append_new(keys, e);
	}
	for (i = 0; i < n; i++) {
		if ((rc = audit_key_entry(c, k[i].label, &e, ekid)) != KM_OK)
			goto out;
		if (strcmp(k[i].label, label) == 0) {
			memcpy(kid, ekid, sizeof(kid));
			have = 1;
		}
		json_array_append_new(keys, e);
	}
	if (!have) {
		if ((rc = audit_key_entry(c, label, &e, kid)) != KM_OK)
			goto out;
		json_array_append_new(keys, e);
	}
	if ((sg = calloc(1, sizeof(*sg))) == NULL) {
		rc = KM_ERR_NOMEM;
		goto out;
	}
	sg->hsm = c->ctx->hsm;
	snprintf(sg->label, sizeof(sg->label), "%s", label);
	pthread_mutex_lock(&c->akeys_lock);
	if ((rc = push_ptr((void ***)&c->signers, &c->n_signers, sg)) != KM_OK) {
		pthread_mutex_unlock(&c->akeys_lock);
		goto out;
	}
	sg = NULL;
	rc = audit_set_signer(c->ctx->audit, sign_checkpoint,
	    c->signers[c->n_signers - 1], kid, cfg->audit_origin,
	    (uint64_t)cfg->audit_checkpoint_records, cfg->audit_checkpoint_seconds);
	if (rc == KM_OK) {
		/* Readers (GET /v1/audit/keys) take the pointer atomically and
		 * a reference at once; the old array stays alive until
		 * cer_free, so a reader never sees it freed. */
		old = __atomic_exchange_n(&c->ctx->audit_keys, keys,
		    __ATOMIC_ACQ_REL);
		keys = NULL;
		if (old != NULL &&
		    push_ptr((void ***)&c->old_keys, &c->n_old_keys, old) != KM_OK)
			log_warn("ceremony: an old audit key list leaks");
		snprintf(c->audit_label, sizeof(c->audit_label), "%s", label);
		snprintf(c->audit_kid, sizeof(c->audit_kid), "%s", kid);
	}
	pthread_mutex_unlock(&c->akeys_lock);
	if (rc == KM_OK)
		log_info("ceremony: checkpoints are signed with %s (kid %s)", label,
		    kid);
out:
	free(sg);
	json_decref(keys);
	free(k);
	return rc;
}

int
cer_new(struct api_ctx *ctx, struct cer **out)
{
	struct cer_audit_key *k = NULL;
	unsigned char *der = NULL;
	size_t n = 0, der_len = 0;
	struct cer *c = NULL;
	json_t *jwk = NULL;
	char kid[44];
	int rc = KM_ERR_INTERNAL;

	*out = NULL;
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		rc = KM_ERR_NOMEM;
		goto out;
	}
	c->ctx = ctx;
	if (pthread_mutex_init(&c->lock, NULL) != 0)
		goto out;
	c->n_sync++;
	if (pthread_mutex_init(&c->akeys_lock, NULL) != 0)
		goto out;
	c->n_sync++;
	if (pthread_mutex_init(&c->wlock, NULL) != 0)
		goto out;
	c->n_sync++;
	if (pthread_cond_init(&c->wcond, NULL) != 0)
		goto out;
	c->n_sync++;
	if ((rc = cer_store_audit_keys(ctx->store, &k, &n)) != KM_OK)
		goto out;
	if (n > 0) {
		if ((rc = cer_audit_switch(c, k[n - 1].label)) != KM_OK)
			goto out;
	} else {
		if ((rc = hsm_ec_public(ctx->hsm, ctx->cfg->audit_key_label, &der,
		    &der_len)) != KM_OK ||
		    (rc = jwk_from_spki(der, der_len, &jwk, kid)) != KM_OK)
			goto out;
		snprintf(c->audit_label, sizeof(c->audit_label), "%s",
		    ctx->cfg->audit_key_label);
		snprintf(c->audit_kid, sizeof(c->audit_kid), "%s", kid);
	}
	if ((rc = cer_mek_start(c)) != KM_OK)
		goto out;
	*out = c;
	c = NULL;
	rc = KM_OK;
out:
	if (c != NULL) {
		cer_stop(c);
		cer_free(c);
	}
	json_decref(jwk);
	free(der);
	free(k);
	return rc;
}

void
cer_free(struct cer *c)
{
	size_t i;

	if (c == NULL)
		return;
	cer_stop(c);
	for (i = 0; i < c->n_signers; i++)
		free(c->signers[i]);
	free(c->signers);
	for (i = 0; i < c->n_old_keys; i++)
		json_decref(c->old_keys[i]);
	free(c->old_keys);
	if (c->n_sync > 3)
		pthread_cond_destroy(&c->wcond);
	if (c->n_sync > 2)
		pthread_mutex_destroy(&c->wlock);
	if (c->n_sync > 1)
		pthread_mutex_destroy(&c->akeys_lock);
	if (c->n_sync > 0)
		pthread_mutex_destroy(&c->lock);
	free(c);
}

/* ---- create ---- */

/* The client's params as single-line strings, for the officer-signed
 * request message. */
static int
client_params(const struct cer_opdef *op, json_t *params,
    struct cer_request *cp, char why[CER_WHY])
{
	const char *name;
	json_t *v;
	char num[32];
	const char *s;

	memset(cp, 0, sizeof(*cp));
	snprintf(cp->operation, sizeof(cp->operation), "%s", op->name);
	json_object_foreach(params, name, v) {
		s = NULL;
		if (json_is_integer(v)) {
			snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
			    json_integer_value(v));
			s = num;
		} else if (json_is_string(v))
			s = json_string_value(v);
		if (s == NULL || cer_param_set(cp, name, s) != KM_OK) {
			cer_why(why, "param '%s' cannot be signed: a signed request "
			    "carries single-line values (send public keys as base64 "
			    "DER)", name);
			return KM_ERR_INVALID_REQUEST;
		}
	}
	return KM_OK;
}

static int
officer_lookup(struct cer *c, const char *name, struct cer_officer **all,
    size_t *n, const struct cer_officer **o, char why[CER_WHY])
{
	size_t i;
	int rc;

	*o = NULL;
	if ((rc = cer_store_officers(c->ctx->store, all, n)) != KM_OK) {
		cer_why(why, "reading the officer registry failed");
		return rc;
	}
	for (i = 0; i < *n; i++)
		if (strcmp((*all)[i].name, name) == 0)
			*o = &(*all)[i];
	if (*o == NULL || !(*o)->active) {
		cer_why(why, "no active officer named '%s'", name);
		return KM_ERR_INVALID_SIGNATURE;
	}
	return KM_OK;
}

/* Checks an officer's signature over a request message. */
static int
check_request_sig(struct cer *c, const struct cer_opdef *op, json_t *params,
    const char *officer, const char *ts, const char *sig, char why[CER_WHY])
{
	struct cer_officer *all = NULL;
	const struct cer_officer *o;
	struct cer_request cp;
	size_t n = 0;
	char *msg = NULL;
	int rc;

	if (!cer_officer_name_valid(officer)) {
		cer_why(why, "'officer' is not an officer name");
		rc = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	if ((rc = client_params(op, params, &cp, why)) != KM_OK)
		goto out;
	if ((rc = cer_ts_fresh(ts, km_now_us())) != KM_OK) {
		cer_why(why, "ts must be an RFC 3339 time within %d s of kmsd's "
		    "clock", CER_TS_WINDOW_S);
		goto out;
	}
	if ((rc = officer_lookup(c, officer, &all, &n, &o, why)) != KM_OK)
		goto out;
	if ((rc = cer_request_message(&cp, officer, ts, &msg)) != KM_OK) {
		cer_why(why, "the request message cannot be formed");
		goto out;
	}
	if ((rc = cer_verify(o->spki, o->spki_len, msg, strlen(msg), sig)) != KM_OK) {
		cer_why(why, "the signature is not %s's over the request message",
		    officer);
		goto out;
	}
	rc = KM_OK;
out:
	free(msg);
	cer_officers_free(all, n);
	return rc;
}

static int
unknown_param(const struct cer_opdef *op, json_t *params, char why[CER_WHY])
{
	const char *name;
	json_t *v;
	size_t i;

	json_object_foreach(params, name, v) {
		for (i = 0; op->params[i] != NULL; i++)
			if (strcmp(op->params[i], name) == 0)
				break;
		if (op->params[i] == NULL) {
			cer_why(why, "%s takes no param '%.64s'", op->name, name);
			return KM_ERR_INVALID_REQUEST;
		}
	}
	return KM_OK;
}

static void
ops_list(char why[CER_WHY], const char *bad)
{
	cer_why(why, "unknown operation '%.64s' (mek.rotate, mek.disable, "
	    "key.destroy, key.restore, key.import, officer.add, officer.remove, "
	    "quorum.set, audit_key.rotate)", bad);
}

int
cer_create(struct cer *c, const char *operation, json_t *params,
    int64_t ttl_s, const char *officer, const char *officer_ts,
    const char *officer_sig, struct cer_actor *a, char id[CER_ID_HEX + 1],
    char why[CER_WHY])
{
	return cer_create_upload(c, operation, params, NULL, 0, ttl_s, officer,
	    officer_ts, officer_sig, a, id, why);
}

int
cer_create_upload(struct cer *c, const char *operation, json_t *params,
    const unsigned char *upload, size_t upload_len, int64_t ttl_s,
    const char *officer, const char *officer_ts, const char *officer_sig,
    struct cer_actor *a, char id[CER_ID_HEX + 1], char why[CER_WHY])
{
	const struct cer_opdef *op;
	struct cer_record *rec = NULL, *dup = NULL;
	json_t *empty = NULL;
	int64_t now;
	int rc, quorum = 0, locked = 0, tries;

	id[0] = '\0';
	why[0] = '\0';
	if ((op = cer_op_find(operation)) == NULL) {
		ops_list(why, operation ? operation : "");
		rc = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	fset(a, "operation", json_string(op->name));
	if (params == NULL && (params = empty = json_object()) == NULL) {
		rc = KM_ERR_NOMEM;
		goto out;
	}
	if ((rc = unknown_param(op, params, why)) != KM_OK)
		goto out;
	if ((op->upload == NULL) != (upload == NULL) || upload_len >
	    CER_UPLOAD_MAX) {
		cer_why(why, op->upload == NULL ? "%s takes no uploaded bytes" :
		    "%s needs the uploaded bytes (1..%d)", op->name, CER_UPLOAD_MAX);
		rc = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	if (ttl_s < c->ctx->cfg->ceremony_min_ttl || ttl_s > TTL_MAX_S) {
		cer_why(why, "expires_in must be %ld s .. %d s",
		    c->ctx->cfg->ceremony_min_ttl, TTL_MAX_S);
		rc = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	if (officer != NULL && (rc = check_request_sig(c, op, params, officer,
	    officer_ts, officer_sig, why)) != KM_OK)
		goto out;
	pthread_mutex_lock(&c->lock);
	locked = 1;
	if ((rc = cer_store_quorum(c->ctx->store, &quorum)) != KM_OK) {
		cer_why(why, "reading the quorum failed");
		goto out;
	}
	if (quorum == 0) {
		cer_why(why, "no officers are registered (kmsctl init --officers "
		    "DIR --quorum M)");
		rc = KM_ERR_QUORUM_NOT_MET;
		goto out;
	}
	if ((rec = calloc(1, sizeof(*rec))) == NULL) {
		rc = KM_ERR_NOMEM;
		goto out;
	}
	snprintf(rec->req.operation, sizeof(rec->req.operation), "%s", op->name);
	if ((rc = op->prepare(c, params, &rec->req, why)) != KM_OK)
		goto out;
	if (op->upload != NULL) {
		if ((rc = op->upload(c, upload, upload_len, &rec->req, why)) !=
		    KM_OK)
			goto out;
		rec->upload = upload;
		rec->upload_len = upload_len;
		fset(a, "upload_bytes", json_integer((json_int_t)upload_len));
	}
	now = km_now_us();
	rec->req.created = now - now % 1000000;
	rec->req.expires = rec->req.created + ttl_s * 1000000;
	rec->req.quorum = quorum;
	snprintf(rec->req.requester, sizeof(rec->req.requester), "%s",
	    officer != NULL ? officer : a->actor);
	if ((rc = random_hex(rec->req.nonce, CER_NONCE_HEX / 2)) != KM_OK)
		goto out;
	/* 64-bit random ids: a collision is all but impossible; check. */
	for (tries = 0; tries < 4; tries++) {
		if ((rc = random_hex(rec->req.id, CER_ID_HEX / 2)) != KM_OK)
			goto out;
		rc = cer_store_get(c->ctx->store, rec->req.id, &dup);
		cer_record_free(dup);
		dup = NULL;
		if (rc == KM_ERR_CEREMONY_NOT_FOUND)
			break;
	}
	if (rc != KM_ERR_CEREMONY_NOT_FOUND) {
		rc = rc == KM_OK ? KM_ERR_INTERNAL : rc;
		goto out;
	}
	if ((rc = cer_state_hash(c, op, &rec->req, rec->req.state)) != KM_OK) {
		cer_why(why, "reading the target state failed");
		goto out;
	}
	if ((rc = cer_request_text(&rec->req, &rec->text)) != KM_OK) {
		cer_why(why, "the request text cannot be formed");
		goto out;
	}
	cer_digest_hex(rec->text, strlen(rec->text), rec->digest);
	snprintf(rec->status, sizeof(rec->status), "open");
	fields_base(a, rec);
	fset(a, "quorum", json_integer(quorum));
	fset(a, "expires", api_time_json(rec->req.expires));
	if ((rc = cer_store_insert(c->ctx->store, rec, a->commit,
	    a->commit_arg)) != KM_OK) {
		cer_why(why, "the ceremony was not stored");
		goto out;
	}
	snprintf(id, CER_ID_HEX + 1, "%s", rec->req.id);
	rc = KM_OK;
out:
	if (locked)
		pthread_mutex_unlock(&c->lock);
	json_decref(empty);
	cer_record_free(rec);
	return rc;
}

/* ---- decide ---- */

/* Loads ceremony `id` and checks it is open and not expired. */
static int
load_open(struct cer *c, const char *id, struct cer_actor *a,
    struct cer_record **rec, char why[CER_WHY])
{
	char ts[40];
	int rc;

	*rec = NULL;
	if ((rc = cer_store_get(c->ctx->store, id, rec)) != KM_OK) {
		cer_why(why, rc == KM_ERR_CEREMONY_NOT_FOUND ? "no ceremony %.32s" :
		    "reading ceremony %.32s failed", id);
		return rc;
	}
	fields_base(a, *rec);
	if (strcmp((*rec)->status, "open") != 0) {
		cer_why(why, "ceremony %s is %s", id, (*rec)->status);
		return KM_ERR_CEREMONY_CLOSED;
	}
	if (is_expired(*rec, km_now_us())) {
		km_time_format((*rec)->req.expires, 0, ts, sizeof(ts));
		cer_why(why, "ceremony %s expired at %s", id, ts);
		return KM_ERR_CEREMONY_CLOSED;
	}
	return KM_OK;
}

/* The quorum that applies now: the ceremony's, or the registry's when it
 * was raised since (a lowered quorum does not lower a pending ceremony). */
static int
required_quorum(const struct cer_record *rec, int now_quorum)
{
	return now_quorum > rec->req.quorum ? now_quorum : rec->req.quorum;
}

int
cer_decide(struct cer *c, const char *id, const char *officer,
    const char *decision, const char *signature, struct cer_actor *a,
    int *duplicate, char why[CER_WHY])
{
	struct cer_decision d, *all = NULL;
	struct cer_officer *off = NULL;
	const struct cer_officer *o;
	struct cer_record *rec = NULL;
	struct cer_tally t;
	char *msg = NULL;
	size_t n_off = 0, i, n;
	int rc, approve, quorum = 0, replace = 0, locked = 0;

	*duplicate = 0;
	why[0] = '\0';
	fset(a, "officer", json_string(officer));
	fset(a, "decision", json_string(decision));
	if (!cer_officer_name_valid(officer)) {
		cer_why(why, "'officer' is not an officer name");
		rc = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	if (strcmp(decision, "approve") != 0 && strcmp(decision, "reject") != 0) {
		cer_why(why, "'decision' is approve or reject");
		rc = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	approve = decision[0] == 'a';
	pthread_mutex_lock(&c->lock);
	locked = 1;
	if ((rc = load_open(c, id, a, &rec, why)) != KM_OK)
		goto out;
	if ((rc = officer_lookup(c, officer, &off, &n_off, &o, why)) != KM_OK)
		goto out;
	if (strcmp(officer, rec->req.requester) == 0) {
		cer_why(why, "%s asked for this ceremony and cannot decide on it "
		    "(cancel it instead)", officer);
		rc = KM_ERR_FORBIDDEN;
		goto out;
	}
	if ((rc = cer_approval_message(rec->digest, officer, decision, &msg)) !=
	    KM_OK)
		goto out;
	if ((rc = cer_verify(o->spki, o->spki_len, msg, strlen(msg),
	    signature)) != KM_OK) {
		cer_why(why, "the signature is not %s's over kms-approval/v1, the "
		    "digest %.16s..., %s and %s", officer, rec->digest, officer,
		    decision);
		goto out;
	}
	for (i = 0; i < rec->n_decisions; i++) {
		if (strcmp(rec->decisions[i].officer, officer) != 0)
			continue;
		if (rec->decisions[i].approve == approve) {
			/* The same decision again: it counts once. */
			*duplicate = 1;
			fset(a, "duplicate", json_true());
			rc = KM_OK;
			goto out;
		}
		if (!rec->decisions[i].approve) {
			/* A reject is final: an old approval replayed later must
			 * not undo it. */
			cer_why(why, "%s rejected this ceremony; a reject is final",
			    officer);
			rc = KM_ERR_DECISION_FINAL;
			goto out;
		}
		replace = 1;
	}
	memset(&d, 0, sizeof(d));
	snprintf(d.officer, sizeof(d.officer), "%s", officer);
	d.approve = approve;
	d.at = km_now_us();
	if (snprintf(d.signature, sizeof(d.signature), "%s", signature) >=
	    (int)sizeof(d.signature)) {
		rc = KM_ERR_INVALID_SIGNATURE;
		goto out;
	}
	/* The tally with this decision in place. */
	if ((all = calloc(rec->n_decisions + 1, sizeof(*all))) == NULL) {
		rc = KM_ERR_NOMEM;
		goto out;
	}
	for (i = n = 0; i < rec->n_decisions; i++)
		if (strcmp(rec->decisions[i].officer, officer) != 0)
			all[n++] = rec->decisions[i];
	all[n++] = d;
	if ((rc = cer_store_quorum(c->ctx->store, &quorum)) != KM_OK ||
	    (rc = cer_tally(rec->digest, rec->req.requester,
	    required_quorum(rec, quorum), off, n_off, all, n, &t)) != KM_OK)
		goto out;
	fset(a, "approved", json_integer((json_int_t)t.approved));
	fset(a, "rejected", json_integer((json_int_t)t.rejected));
	fset(a, "required", json_integer(t.required));
	if (t.impossible)
		fset(a, "closed", json_string("rejected"));
	if ((rc = cer_store_decide(c->ctx->store, id, &d, replace,
	    t.impossible ? "rejected" : NULL, a->commit, a->commit_arg)) != KM_OK) {
		if (rc == KM_ERR_DECISION_FINAL)
			cer_why(why, "%s's decision changed meanwhile", officer);
		else if (rc == KM_ERR_CEREMONY_CLOSED)
			cer_why(why, "ceremony %s closed meanwhile", id);
		goto out;
	}
	rc = KM_OK;
out:
	if (locked)
		pthread_mutex_unlock(&c->lock);
	free(all);
	free(msg);
	cer_officers_free(off, n_off);
	cer_record_free(rec);
	return rc;
}

/* ---- execute ---- */

struct stale_arg {
	struct cer *c;
	const char *request_id;
	json_t *fields;
};

static int
stale_hook(void *arg)
{
	struct stale_arg *s = arg;

	return cer_audit_record(s->c, s->request_id, "ceremony.stale", s->fields,
	    "ok");
}

int
cer_execute(struct cer *c, const char *id, struct cer_actor *a,
    char why[CER_WHY])
{
	const struct cer_opdef *op;
	struct cer_officer *off = NULL;
	struct cer_record *rec = NULL;
	struct cer_exec x;
	struct cer_tally t;
	struct stale_arg sa;
	json_t *approvers = NULL, *sf = NULL;
	char state[65], *result = NULL;
	size_t n_off = 0, i;
	int rc, quorum = 0, locked = 0;

	memset(&x, 0, sizeof(x));
	why[0] = '\0';
	pthread_mutex_lock(&c->lock);
	locked = 1;
	if ((rc = load_open(c, id, a, &rec, why)) != KM_OK)
		goto out;
	if ((op = cer_op_find(rec->req.operation)) == NULL) {
		cer_why(why, "this kmsd cannot run %s", rec->req.operation);
		rc = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	if ((rc = cer_store_officers(c->ctx->store, &off, &n_off)) != KM_OK ||
	    (rc = cer_store_quorum(c->ctx->store, &quorum)) != KM_OK ||
	    (rc = cer_tally(rec->digest, rec->req.requester,
	    required_quorum(rec, quorum), off, n_off, rec->decisions,
	    rec->n_decisions, &t)) != KM_OK)
		goto out;
	if ((approvers = json_array()) == NULL) {
		rc = KM_ERR_NOMEM;
		goto out;
	}
	for (i = 0; i < t.approved; i++)
		json_array_append_new(approvers, json_string(t.approvers[i]));
	fset(a, "quorum", json_integer(t.required));
	fset(a, "approvers", json_incref(approvers));
	fset(a, "rejected", json_integer((json_int_t)t.rejected));
	if (!t.executable) {
		cer_why(why, "%zu of %d approvals by distinct active officers other "
		    "than the requester", t.approved, t.required);
		rc = KM_ERR_QUORUM_NOT_MET;
		goto out;
	}
	if ((rc = cer_state_hash(c, op, &rec->req, state)) != KM_OK) {
		cer_why(why, "reading the target state failed");
		goto out;
	}
	if (strcmp(state, rec->req.state) != 0) {
		/* The approvals were for another state: they are spent. */
		fset(a, "state_now", json_string(state));
		sf = json_pack("{s:s, s:s, s:s, s:s, s:s}", "ceremony_id", id,
		    "operation", rec->req.operation, "digest", rec->digest,
		    "state", rec->req.state, "state_now", state);
		sa.c = c;
		sa.request_id = a->request_id;
		sa.fields = sf;
		if (cer_store_close(c->ctx->store, id, "stale", "kmsd",
		    stale_hook, &sa) != KM_OK)
			log_error("ceremony %s: could not be closed as stale", id);
		cer_why(why, "the state %s acts on changed since the request; ask "
		    "for a new ceremony", rec->req.operation);
		rc = KM_ERR_STATE_CHANGED;
		goto out;
	}
	if ((rc = op->check(c, &rec->req, why)) != KM_OK)
		goto out;
	if ((rc = op->run(c, rec, &x, why)) != KM_OK)
		goto out;
	json_object_set(x.result, "approvers", approvers);
	json_object_set_new(x.result, "quorum", json_integer(t.required));
	fset(a, "result", json_incref(x.result));
	if ((result = json_dumps(x.result, JSON_COMPACT | JSON_SORT_KEYS)) == NULL) {
		rc = KM_ERR_NOMEM;
		goto out;
	}
	if ((rc = cer_store_execute(c->ctx->store, id, a->actor, result, &x.ch,
	    a->commit, a->commit_arg)) != KM_OK) {
		if (rc == KM_ERR_STATE_CHANGED)
			cer_why(why, "the state %s acts on changed during execution",
			    rec->req.operation);
		else if (rc == KM_ERR_CEREMONY_CLOSED)
			cer_why(why, "ceremony %s closed meanwhile", id);
		goto out;
	}
	log_info("ceremony %s: %s executed (%zu of quorum %d)", id,
	    rec->req.operation, t.approved, t.required);
	if (op->after != NULL)
		op->after(c, rec, &x);
	/* DESIGN.md section 5: a checkpoint after each execution. */
	if (audit_checkpoint(c->ctx->audit) != KM_OK)
		log_error("ceremony %s: the checkpoint after execution failed", id);
	rc = KM_OK;
out:
	if (locked)
		pthread_mutex_unlock(&c->lock);
	json_decref(approvers);
	json_decref(sf);
	json_decref(x.result);
	free(x.spki);
	free(x.blob);
	free(result);
	cer_officers_free(off, n_off);
	cer_record_free(rec);
	return rc;
}

int
cer_cancel(struct cer *c, const char *id, struct cer_actor *a,
    char why[CER_WHY])
{
	struct cer_record *rec = NULL;
	int rc;

	why[0] = '\0';
	pthread_mutex_lock(&c->lock);
	if ((rc = cer_store_get(c->ctx->store, id, &rec)) != KM_OK) {
		cer_why(why, "no ceremony %.32s", id);
		goto out;
	}
	fields_base(a, rec);
	if (strcmp(rec->status, "open") != 0) {
		cer_why(why, "ceremony %s is %s", id, rec->status);
		rc = KM_ERR_CEREMONY_CLOSED;
		goto out;
	}
	if ((rc = cer_store_close(c->ctx->store, id, "cancelled", a->actor,
	    a->commit, a->commit_arg)) != KM_OK)
		cer_why(why, "ceremony %s was not cancelled", id);
out:
	pthread_mutex_unlock(&c->lock);
	cer_record_free(rec);
	return rc;
}

/* ---- the signed revoke ---- */

int
cer_revoke(struct cer *c, const char *key, uint32_t version,
    const char *officer, const char *ts, const char *nonce,
    const char *signature, struct cer_actor *a, char why[CER_WHY])
{
	struct cer_officer *off = NULL;
	const struct cer_officer *o;
	struct store_key *k = NULL;
	const struct store_version *v = NULL;
	size_t n_off = 0, i;
	char *msg = NULL, cache_id[HSM_CACHE_ID_MAX];
	int rc, locked = 0;

	why[0] = '\0';
	fset(a, "officer", json_string(officer));
	fset(a, "ts", json_string(ts));
	fset(a, "nonce", json_string(nonce));
	if (cer_revoke_message(key, version, officer, ts, nonce, &msg) != KM_OK) {
		cer_why(why, "officer (an officer name), ts (RFC 3339) and nonce "
		    "(16..64 lower-case hex digits) are required");
		rc = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	if (cer_ts_fresh(ts, km_now_us()) != KM_OK) {
		cer_why(why, "ts is more than %d s from kmsd's clock; sign a fresh "
		    "revoke", CER_TS_WINDOW_S);
		rc = KM_ERR_INVALID_SIGNATURE;
		goto out;
	}
	pthread_mutex_lock(&c->lock);
	locked = 1;
	if ((rc = officer_lookup(c, officer, &off, &n_off, &o, why)) != KM_OK)
		goto out;
	if ((rc = cer_verify(o->spki, o->spki_len, msg, strlen(msg),
	    signature)) != KM_OK) {
		cer_why(why, "the signature is not %s's over the kms-revoke/v1 "
		    "message", officer);
		goto out;
	}
	fset(a, "signature", json_string(signature));
	if ((rc = store_key_get(c->ctx->store, key, &k)) != KM_OK) {
		cer_why(why, rc == KM_ERR_KEY_NOT_FOUND ? "no key named '%s'" :
		    "reading key '%s' failed", key);
		goto out;
	}
	for (i = 0; i < k->n_versions; i++)
		if (k->versions[i].version == version)
			v = &k->versions[i];
	if (v == NULL) {
		cer_why(why, "key '%s' has no version %u", key, version);
		rc = KM_ERR_VERSION_NOT_FOUND;
		goto out;
	}
	fset(a, "from", json_string(km_state_name(v->state)));
	fset(a, "to", json_string("revoked"));
	/* A replayed revoke of the same version finds it revoked: final. */
	if (v->state == KM_STATE_REVOKED || v->state == KM_STATE_DESTROYED) {
		cer_why(why, "version %u of '%s' is %s; revoked and destroyed are "
		    "final", version, key, km_state_name(v->state));
		rc = KM_ERR_INVALID_TRANSITION;
		goto out;
	}
	if ((rc = store_version_set_state(c->ctx->store, key, version, v->state,
	    KM_STATE_REVOKED, a->commit, a->commit_arg)) != KM_OK) {
		cer_why(why, "revoking version %u of '%s' failed", version, key);
		goto out;
	}
	log_info("key %s v%u revoked by officer %s", key, version, officer);
	hsm_cache_id(k->id, version, cache_id, sizeof(cache_id));
	(void)hsm_key_evict(c->ctx->hsm, cache_id);
	rc = KM_OK;
out:
	if (locked)
		pthread_mutex_unlock(&c->lock);
	free(msg);
	store_key_free(k);
	cer_officers_free(off, n_off);
	return rc;
}

/* ---- JSON ---- */

static json_t *
record_json(const struct cer_record *rec, const struct cer_officer *off,
    size_t n_off, int quorum_now)
{
	struct cer_tally t;
	json_t *o, *ap;
	const char *status = rec->status;
	size_t i;

	if (cer_tally(rec->digest, rec->req.requester, required_quorum(rec,
	    quorum_now), off, n_off, rec->decisions, rec->n_decisions, &t) !=
	    KM_OK)
		return NULL;
	if (strcmp(status, "open") == 0 && is_expired(rec, km_now_us()))
		status = "expired";
	if ((ap = json_array()) == NULL)
		return NULL;
	for (i = 0; i < rec->n_decisions; i++)
		json_array_append_new(ap, json_pack("{s:s, s:s, s:s, s:o, s:b, s:s}",
		    "officer", rec->decisions[i].officer, "decision",
		    rec->decisions[i].approve ? "approve" : "reject", "signature",
		    rec->decisions[i].signature, "at",
		    api_time_json(rec->decisions[i].at), "counted",
		    t.why[i] == CER_COUNTED, "reason", cer_why_name(t.why[i])));
	o = json_pack("{s:s, s:s, s:o, s:i, s:i, s:s, s:o, s:o, s:s, s:s, s:s,"
	    " s:s, s:s, s:o, s:I, s:I, s:b, s:o, s:o}",
	    "id", rec->req.id, "operation", rec->req.operation,
	    "params", params_json(&rec->req), "quorum", rec->req.quorum,
	    "required", t.required, "requester", rec->req.requester,
	    "created", api_time_json(rec->req.created),
	    "expires", api_time_json(rec->req.expires),
	    "nonce", rec->req.nonce, "state_hash", rec->req.state,
	    "request_text", rec->text, "digest", rec->digest,
	    "state", status, "approvals", ap,
	    "approved", (json_int_t)t.approved, "rejected", (json_int_t)t.rejected,
	    "executable", t.executable && strcmp(status, "open") == 0,
	    "closed_at", api_time_json(rec->closed_at),
	    "closed_by", rec->closed_by[0] ? json_string(rec->closed_by) :
	    json_null());
	if (o != NULL && rec->result != NULL)
		json_object_set_new(o, "result", json_loads(rec->result, 0, NULL));
	return o;
}

int
cer_get_json(struct cer *c, const char *id, json_t **out)
{
	struct cer_officer *off = NULL;
	struct cer_record *rec = NULL;
	size_t n_off = 0;
	int rc, quorum = 0;

	*out = NULL;
	if ((rc = cer_store_get(c->ctx->store, id, &rec)) != KM_OK ||
	    (rc = cer_store_officers(c->ctx->store, &off, &n_off)) != KM_OK ||
	    (rc = cer_store_quorum(c->ctx->store, &quorum)) != KM_OK)
		goto out;
	if ((*out = record_json(rec, off, n_off, quorum)) == NULL)
		rc = KM_ERR_NOMEM;
out:
	cer_officers_free(off, n_off);
	cer_record_free(rec);
	return rc;
}

int
cer_list_json(struct cer *c, const char *status, int64_t before_us,
    size_t limit, json_t **out)
{
	struct cer_officer *off = NULL;
	struct cer_record **recs = NULL;
	size_t n_off = 0, n = 0, i;
	json_t *arr = NULL;
	int rc, quorum = 0, expired = status != NULL &&
	    strcmp(status, "expired") == 0;

	*out = NULL;
	/* "expired" is open past its time: filter open ones below. */
	if ((rc = cer_store_list(c->ctx->store, expired ? "open" : status,
	    before_us, limit, &recs, &n)) != KM_OK ||
	    (rc = cer_store_officers(c->ctx->store, &off, &n_off)) != KM_OK ||
	    (rc = cer_store_quorum(c->ctx->store, &quorum)) != KM_OK)
		goto out;
	if ((arr = json_array()) == NULL) {
		rc = KM_ERR_NOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		json_t *j = record_json(recs[i], off, n_off, quorum);
		const char *st = json_string_value(json_object_get(j, "state"));

		if (j == NULL) {
			rc = KM_ERR_NOMEM;
			goto out;
		}
		if (status != NULL && (st == NULL || strcmp(st, status) != 0)) {
			json_decref(j);
			continue;
		}
		json_array_append_new(arr, j);
	}
	if ((*out = json_pack("{s:O}", "ceremonies", arr)) == NULL)
		rc = KM_ERR_NOMEM;
out:
	json_decref(arr);
	cer_officers_free(off, n_off);
	cer_records_free(recs, n);
	return rc;
}

int
cer_officers_json(struct cer *c, json_t **out)
{
	struct cer_officer *off = NULL;
	size_t n = 0, i;
	json_t *arr = NULL;
	char fp[65], *pem = NULL;
	int rc, quorum = 0;

	*out = NULL;
	if ((rc = cer_store_officers(c->ctx->store, &off, &n)) != KM_OK ||
	    (rc = cer_store_quorum(c->ctx->store, &quorum)) != KM_OK)
		goto out;
	if ((arr = json_array()) == NULL) {
		rc = KM_ERR_NOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		if ((rc = cer_pubkey_pem(off[i].spki, off[i].spki_len, &pem)) != KM_OK)
			goto out;
		cer_digest_hex(off[i].spki, off[i].spki_len, fp);
		json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s, s:o, s:o}",
		    "name", off[i].name, "state", off[i].active ? "active" :
		    "removed", "public_key", pem, "public_key_sha256", fp,
		    "added_at", api_time_json(off[i].added_at), "removed_at",
		    api_time_json(off[i].removed_at)));
		free(pem);
		pem = NULL;
	}
	if ((*out = json_pack("{s:O, s:i, s:I}", "officers", arr, "quorum", quorum,
	    "active", (json_int_t)cer_active_count(off, n))) == NULL)
		rc = KM_ERR_NOMEM;
out:
	json_decref(arr);
	cer_officers_free(off, n);
	return rc;
}

/* ---- kmsctl init --officers ---- */

struct boot_hook {
	struct audit *au;
	const char *request_id;
	const struct cer_officer *o;
	size_t n;
	int quorum;
};

static int
boot_record(struct boot_hook *b, const char *op, json_t *fields)
{
	json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:i, s:n, s:n}",
	    "request_id", b->request_id, "actor", "kmsctl-init", "op", op,
	    "outcome", "ok", "status", 0, "key", "version");
	int rc;

	if (rec == NULL || fields == NULL) {
		json_decref(rec);
		json_decref(fields);
		return KM_ERR_NOMEM;
	}
	json_object_update(rec, fields);
	json_decref(fields);
	rc = audit_append(b->au, rec, NULL);
	json_decref(rec);
	return rc;
}

static int
boot_hook_fn(void *arg)
{
	struct boot_hook *b = arg;
	char fp[65];
	size_t i;
	int rc;

	for (i = 0; i < b->n; i++) {
		cer_digest_hex(b->o[i].spki, b->o[i].spki_len, fp);
		if ((rc = boot_record(b, "officer.add", json_pack("{s:s, s:s}",
		    "officer", b->o[i].name, "public_key_sha256", fp))) != KM_OK)
			return rc;
	}
	return boot_record(b, "quorum.set", json_pack("{s:i}", "quorum",
	    b->quorum));
}

static int
cmp_officer(const void *a, const void *b)
{
	return strcmp(((const struct cer_officer *)a)->name,
	    ((const struct cer_officer *)b)->name);
}

/* Reads a small file whole. */
static int
read_small(const char *path, char **out, size_t *len)
{
	char buf[8193];
	ssize_t n;
	size_t got = 0;
	int fd, rc = KM_ERR_IO;

	*out = NULL;
	*len = 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return KM_ERR_IO;
	while (got < sizeof(buf) - 1 &&
	    (n = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0)
		got += (size_t)n;
	if (n < 0 || got >= sizeof(buf) - 1)
		goto out;
	buf[got] = '\0';
	if ((*out = strdup(buf)) == NULL) {
		rc = KM_ERR_NOMEM;
		goto out;
	}
	*len = got;
	rc = KM_OK;
out:
	close(fd);
	return rc;
}

int
cer_bootstrap(struct store *st, struct audit *au, const char *request_id,
    const char *dir, int quorum)
{
	static const char suffix[] = ".pub.pem";
	struct cer_officer *o = NULL, *have = NULL, *grown;
	struct boot_hook bh;
	struct dirent *de;
	DIR *d = NULL;
	size_t n = 0, n_have = 0, i, j, len, flen;
	char path[4096], fp[65], *text = NULL;
	int rc = KM_ERR_CONFIG, q = 0;

	if ((rc = cer_store_officers(st, &have, &n_have)) != KM_OK ||
	    (rc = cer_store_quorum(st, &q)) != KM_OK)
		goto out;
	if (n_have > 0) {
		printf("officers: %zu registered already (quorum %d), kept; later "
		    "changes are ceremonies\n", cer_active_count(have, n_have), q);
		rc = KM_OK;
		goto out;
	}
	rc = KM_ERR_CONFIG;
	if ((d = opendir(dir)) == NULL) {
		log_error("officers: cannot open %s: %s", dir, strerror(errno));
		goto out;
	}
	while ((de = readdir(d)) != NULL) {
		len = strlen(de->d_name);
		if (len <= sizeof(suffix) - 1 ||
		    strcmp(de->d_name + len - (sizeof(suffix) - 1), suffix) != 0)
			continue;
		if (n >= CER_MAX_OFFICERS) {
			log_error("officers: more than %d keys in %s", CER_MAX_OFFICERS,
			    dir);
			goto out;
		}
		if ((grown = realloc(o, (n + 1) * sizeof(*o))) == NULL) {
			rc = KM_ERR_NOMEM;
			goto out;
		}
		o = grown;
		memset(&o[n], 0, sizeof(o[n]));
		n++;
		if (len - (sizeof(suffix) - 1) > CER_NAME_MAX) {
			log_error("officers: %s: the name is longer than %d", de->d_name,
			    CER_NAME_MAX);
			goto out;
		}
		memcpy(o[n - 1].name, de->d_name, len - (sizeof(suffix) - 1));
		if (!cer_officer_name_valid(o[n - 1].name)) {
			log_error("officers: %s: '%s' is not an officer name (a-z 0-9 . "
			    "_ -, lower case)", de->d_name, o[n - 1].name);
			goto out;
		}
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		free(text);
		text = NULL;
		if (read_small(path, &text, &flen) != KM_OK ||
		    cer_pubkey_parse(text, flen, &o[n - 1].spki,
		    &o[n - 1].spki_len) != KM_OK) {
			log_error("officers: %s is not an ECDSA P-256 public key (PEM)",
			    path);
			goto out;
		}
		o[n - 1].active = 1;
	}
	if (n == 0) {
		log_error("officers: no <name>.pub.pem files in %s (kmsctl officer "
		    "keygen NAME --dir %s)", dir, dir);
		goto out;
	}
	qsort(o, n, sizeof(*o), cmp_officer);
	for (i = 0; i < n; i++)
		for (j = i + 1; j < n; j++)
			if (o[i].spki_len == o[j].spki_len &&
			    memcmp(o[i].spki, o[j].spki, o[i].spki_len) == 0) {
				log_error("officers: %s and %s have the same key",
				    o[i].name, o[j].name);
				goto out;
			}
	if (quorum < 1 || (size_t)quorum > n) {
		log_error("officers: a quorum of %d needs 1..%zu (the number of "
		    "officers)", quorum, n);
		goto out;
	}
	bh.au = au;
	bh.request_id = request_id;
	bh.o = o;
	bh.n = n;
	bh.quorum = quorum;
	if ((rc = cer_store_bootstrap(st, o, n, quorum, boot_hook_fn, &bh)) != KM_OK)
		goto out;
	for (i = 0; i < n; i++) {
		cer_digest_hex(o[i].spki, o[i].spki_len, fp);
		printf("officer: %s registered (public key SHA-256 %s)\n", o[i].name,
		    fp);
	}
	printf("quorum: %d of %zu officers\n", quorum, n);
	rc = KM_OK;
out:
	if (d != NULL)
		closedir(d);
	free(text);
	cer_officers_free(o, n);
	cer_officers_free(have, n_have);
	return rc;
}
