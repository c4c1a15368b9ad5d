/* Envelope operations: wrap, unwrap, rewrap and datakey, single or batch. */
#include "api.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "blob.h"
#include "hsm.h"
#include "store.h"
#include "usage.h"

#define MAX_BATCH 1000
#define MAX_DEST_KEYS 16
#define NONCE_POOL 64

/* One request's keys, loaded once for every item of a batch. */
struct job {
	struct api_req *rq;
	struct store_key *key;
	struct store_key *dests[MAX_DEST_KEYS];
	size_t n_dests;
	char msg[256];
	/* Nonces drawn ahead for the items still to come: RAND_bytes costs
	 * about 6.5k instructions a call whatever the length. */
	unsigned char nonces[NONCE_POOL * BLOB_NONCE_LEN];
	size_t nonces_left;
	size_t items_left;		/* of the request, this one included */
};

typedef km_err (*item_fn)(struct job *j, json_t *item, json_t **result,
    json_t *audit_item);

/* One envelope operation: its item handler and the fields an item may have. */
struct crypto_op {
	item_fn fn;
	const char *const *fields;
	int batch_ok;
};

static km_err
fail(struct job *j, km_err e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static km_err
fail(struct job *j, km_err e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(j->msg, sizeof(j->msg), fmt, ap);
	va_end(ap);
	return e;
}

/* Reads `field` as a context object into `c` (absent: empty) and checks
 * the key's required names. */
static km_err
context_of(struct job *j, const struct store_key *k, json_t *item,
    const char *field, struct blob_context *c)
{
	const char *name, *missing;
	json_t *obj = json_object_get(item, field), *v;

	memset(c, 0, sizeof(*c));
	if (obj != NULL && !json_is_null(obj)) {
		if (!json_is_object(obj))
			return fail(j, KM_ERR_INVALID_REQUEST,
			    "%s must be an object of strings", field);
		json_object_foreach(obj, name, v) {
			if (!json_is_string(v))
				return fail(j, KM_ERR_INVALID_REQUEST,
				    "%s values must be strings", field);
			if (blob_context_add(c, name, strlen(name),
			    json_string_value(v), json_string_length(v)) != KM_OK)
				return fail(j, KM_ERR_INVALID_REQUEST, "%s allows at "
				    "most 16 pairs, names of 1..256 bytes and "
				    "values of at most 256 bytes", field);
		}
	}
	blob_context_sort(c);
	if (!blob_context_has(c, k->required_context, k->n_required, &missing))
		return fail(j, KM_ERR_MISSING_CONTEXT, "key '%s' requires "
		    "context '%s'", k->name, missing);
	return KM_OK;
}

static json_t *
context_json(const struct blob_context *c)
{
	json_t *o = json_object();
	size_t i;

	for (i = 0; i < c->n; i++) {
		char name[BLOB_MAX_CONTEXT_BYTES + 1];

		memcpy(name, c->pairs[i].name, c->pairs[i].name_len);
		name[c->pairs[i].name_len] = '\0';
		json_object_set_new(o, name, json_stringn(c->pairs[i].value,
		    c->pairs[i].value_len));
	}
	return o;
}

static km_err
acquire(struct job *j, const struct store_key *k,
    const struct store_version *v, struct hsm_key **hk)
{
	char id[64];
	km_err r;

	if (v->storage != STORE_WRAPPED || v->wrapped == NULL)
		return fail(j, KM_ERR_VERSION_STATE, "version %u of '%s' has no "
		    "key material", v->version, k->name);
	hsm_cache_id(k->id, v->version, id, sizeof(id));
	r = hsm_key_acquire(j->rq->ctx->hsm, id, HSM_KEY_AES256, v->mek_version,
	    v->wrapped, v->wrapped_len, hk);
	if (r != KM_OK)
		return fail(j, r, "the token could not load version %u of '%s'",
		    v->version, k->name);
	return KM_OK;
}

/* A fresh random nonce: each comes from the DRBG once, a batch's in
 * draws of up to NONCE_POOL. */
static km_err
next_nonce(struct job *j, unsigned char out[BLOB_NONCE_LEN])
{
	size_t n;
	km_err r;

	if (j->nonces_left == 0) {
		n = j->items_left > NONCE_POOL ? NONCE_POOL :
		    j->items_left > 0 ? j->items_left : 1;
		if ((r = km_random(j->nonces, n * BLOB_NONCE_LEN)) != KM_OK)
			return r;
		j->nonces_left = n;
	}
	j->nonces_left--;
	memcpy(out, j->nonces + j->nonces_left * BLOB_NONCE_LEN,
	    BLOB_NONCE_LEN);
	/* Used once only, whatever happens to this item. */
	memset(j->nonces + j->nonces_left * BLOB_NONCE_LEN, 0, BLOB_NONCE_LEN);
	if (j->items_left > 0)
		j->items_left--;
	return KM_OK;
}

/* Encrypts under the primary version of `k`; *blob is owned by the caller. */
static km_err
seal(struct job *j, const struct store_key *k, const struct blob_context *c,
    const unsigned char *pt, size_t ptlen, char **blob, uint32_t *version)
{
	unsigned char nonce[BLOB_NONCE_LEN], *ct = NULL;
	struct km_buf aad = KM_BUF_INIT(BLOB_MAX_AAD);
	const struct store_version *v;
	struct hsm_key *hk = NULL;
	km_err r;

	*blob = NULL;
	if (k->primary_version == 0 ||
	    (v = api_find_version(k, k->primary_version)) == NULL) {
		r = fail(j, KM_ERR_NO_PRIMARY, "key '%s' has no primary version; "
		    "rotate it", k->name);
		goto out;
	}
	if ((r = acquire(j, k, v, &hk)) != KM_OK)
		goto out;
	if ((ct = malloc(ptlen + BLOB_TAG_LEN)) == NULL) {
		r = fail(j, KM_ERR_NOMEM, "out of memory");
		goto out;
	}
	/* A random 96-bit nonce per blob: safe for 2^32 wraps per version
	 * (NIST SP 800-38D 8.3); rotation periods keep far below that. */
	if ((r = next_nonce(j, nonce)) != KM_OK ||
	    (r = blob_aad(k->name, v->version, c, &aad)) != KM_OK) {
		r = fail(j, r, "preparing the encryption failed");
		goto out;
	}
	if ((r = hsm_gcm_encrypt(j->rq->ctx->hsm, hk, nonce, aad.data, aad.len,
	    pt, ptlen, ct)) != KM_OK) {
		r = fail(j, r, "the token could not encrypt");
		goto out;
	}
	if ((r = blob_format(v->version, nonce, ct, ptlen + BLOB_TAG_LEN,
	    blob)) != KM_OK) {
		r = fail(j, r, "formatting the blob failed");
		goto out;
	}
	usage_note(j->rq->ctx->usage, k->id, v->version, km_now_us());
	*version = v->version;
	r = KM_OK;
out:
	free(ct);
	km_buf_free(&aad);
	hsm_key_release(j->rq->ctx->hsm, hk);
	return r;
}

#define USE_UNWRAP ((1u << KM_STATE_PRIMARY) | (1u << KM_STATE_ACTIVE))
#define USE_REWRAP (USE_UNWRAP | (1u << KM_STATE_RETIRED))

/* Decrypts `text` under key `k` if the blob's version state is in
 * `allowed`. *pt (wiped and freed by the caller) holds *ptlen bytes. */
static km_err
open_blob(struct job *j, const struct store_key *k, const char *text,
    size_t text_len, const struct blob_context *c, unsigned allowed,
    unsigned char **pt, size_t *ptlen, uint32_t *version)
{
	struct km_buf aad = KM_BUF_INIT(BLOB_MAX_AAD);
	const struct store_version *v;
	struct hsm_key *hk = NULL;
	unsigned char *raw = NULL;
	size_t raw_len = 0;
	km_err r;

	*pt = NULL;
	*ptlen = 0;
	if (blob_parse(text, text_len, version, &raw, &raw_len) != KM_OK) {
		r = fail(j, KM_ERR_INVALID_CIPHERTEXT, "ciphertext is not a "
		    "kms:v<N>:<base64> blob of a valid length");
		goto out;
	}
	if ((v = api_find_version(k, *version)) == NULL) {
		r = fail(j, KM_ERR_INVALID_CIPHERTEXT, "key '%s' has no version "
		    "%u", k->name, *version);
		goto out;
	}
	if (!(allowed & (1u << v->state))) {
		r = fail(j, KM_ERR_VERSION_STATE, "version %u of '%s' is %s",
		    v->version, k->name, km_state_name(v->state));
		goto out;
	}
	if ((r = acquire(j, k, v, &hk)) != KM_OK)
		goto out;
	if ((r = blob_aad(k->name, v->version, c, &aad)) != KM_OK) {
		r = fail(j, r, "preparing the decryption failed");
		goto out;
	}
	if ((*pt = malloc(raw_len)) == NULL) {
		r = fail(j, KM_ERR_NOMEM, "out of memory");
		goto out;
	}
	r = hsm_gcm_decrypt(j->rq->ctx->hsm, hk, raw, aad.data, aad.len,
	    raw + BLOB_NONCE_LEN, raw_len - BLOB_NONCE_LEN, *pt, ptlen);
	if (r != KM_OK) {
		km_secure_free(*pt, raw_len);
		*pt = NULL;
		*ptlen = 0;
		r = fail(j, r, r == KM_ERR_INVALID_CIPHERTEXT ? "ciphertext does "
		    "not authenticate under this key and context" :
		    "the token could not decrypt");
		goto out;
	}
	usage_note(j->rq->ctx->usage, k->id, v->version, km_now_us());
	r = KM_OK;
out:
	km_secure_free(raw, raw_len);
	km_buf_free(&aad);
	hsm_key_release(j->rq->ctx->hsm, hk);
	return r;
}

static km_err
string_field(struct job *j, json_t *item, const char *field, const char **s,
    size_t *len)
{
	json_t *v = json_object_get(item, field);

	if (!json_is_string(v))
		return fail(j, KM_ERR_INVALID_REQUEST, "field '%s' is required "
		    "and must be a string", field);
	*s = json_string_value(v);
	*len = json_string_length(v);
	return KM_OK;
}

static km_err
wrap_item(struct job *j, json_t *item, json_t **result, json_t *audit_item)
{
	struct blob_context c;
	unsigned char *pt = NULL;
	size_t ptlen = 0, b64len = 0;
	const char *b64 = NULL;
	char *blob = NULL;
	uint32_t version = 0;
	km_err r;

	if ((r = string_field(j, item, "plaintext", &b64, &b64len)) != KM_OK ||
	    (r = context_of(j, j->key, item, "context", &c)) != KM_OK)
		goto out;
	json_object_set_new(audit_item, "context", context_json(&c));
	if (km_b64_decode(b64, b64len, &pt, &ptlen) != KM_OK || ptlen < 1 ||
	    ptlen > BLOB_MAX_PLAINTEXT) {
		r = fail(j, KM_ERR_INVALID_REQUEST, "plaintext must be base64 of "
		    "1..%d bytes", BLOB_MAX_PLAINTEXT);
		goto out;
	}
	if ((r = seal(j, j->key, &c, pt, ptlen, &blob, &version)) != KM_OK)
		goto out;
	json_object_set_new(audit_item, "version", json_integer(version));
	*result = json_pack("{s:s, s:I}", "ciphertext", blob, "key_version",
	    (json_int_t)version);
out:
	km_secure_free(pt, ptlen);
	free(blob);
	return r;
}

static km_err
unwrap_item(struct job *j, json_t *item, json_t **result, json_t *audit_item)
{
	struct blob_context c;
	unsigned char *pt = NULL;
	size_t ptlen = 0, ctlen = 0;
	const char *ct = NULL;
	char *b64 = NULL;
	uint32_t version = 0;
	km_err r;

	if ((r = string_field(j, item, "ciphertext", &ct, &ctlen)) != KM_OK ||
	    (r = context_of(j, j->key, item, "context", &c)) != KM_OK)
		goto out;
	json_object_set_new(audit_item, "context", context_json(&c));
	r = open_blob(j, j->key, ct, ctlen, &c, USE_UNWRAP, &pt, &ptlen, &version);
	if (version != 0)
		json_object_set_new(audit_item, "version", json_integer(version));
	if (r != KM_OK)
		goto out;
	if ((r = km_b64_encode(pt, ptlen, &b64)) != KM_OK) {
		r = fail(j, r, "encoding failed");
		goto out;
	}
	*result = json_pack("{s:s, s:I, s:b}", "plaintext", b64, "key_version",
	    (json_int_t)version, "rewrap_recommended",
	    version != j->key->primary_version);
	j->rq->answer_secret = 1;
out:
	km_secure_free(pt, ptlen);
	if (b64 != NULL)
		km_secure_free(b64, strlen(b64));
	return r;
}

/* The destination key of a rewrap: loaded once per request, checked for
 * access and purpose. */
static km_err
dest_key(struct job *j, const char *name, struct store_key **out)
{
	struct store_key *k = NULL;
	size_t i;
	km_err r;

	*out = NULL;
	if (name == NULL || strcmp(name, j->key->name) == 0) {
		*out = j->key;
		return KM_OK;
	}
	if (!api_key_visible(&j->rq->who, name))
		return fail(j, KM_ERR_FORBIDDEN, "token may not use key '%s'", name);
	for (i = 0; i < j->n_dests; i++) {
		if (strcmp(j->dests[i]->name, name) == 0) {
			*out = j->dests[i];
			return KM_OK;
		}
	}
	if (j->n_dests == MAX_DEST_KEYS)
		return fail(j, KM_ERR_INVALID_REQUEST, "one batch may rewrap into "
		    "at most %d other keys", MAX_DEST_KEYS);
	if ((r = store_key_get(j->rq->ctx->store, name, &k)) != KM_OK)
		return fail(j, r, "destination key '%s' %s", name,
		    r == KM_ERR_KEY_NOT_FOUND ? "does not exist" : "is unreadable");
	if (strcmp(k->purpose, "encrypt") != 0) {
		store_key_free(k);
		return fail(j, KM_ERR_INVALID_REQUEST, "destination key '%s' is "
		    "not an encryption key", name);
	}
	j->dests[j->n_dests++] = k;
	*out = k;
	return KM_OK;
}

static km_err
rewrap_item(struct job *j, json_t *item, json_t **result, json_t *audit_item)
{
	struct blob_context c, dc;
	struct store_key *dk;
	unsigned char *pt = NULL;
	size_t ptlen = 0, ctlen = 0;
	const char *ct = NULL, *dname = NULL, *dctx_field = "context";
	char *blob = NULL;
	uint32_t version = 0, newv = 0;
	json_t *d = json_object_get(item, "destination_key");
	km_err r;

	if (d != NULL && !json_is_null(d)) {
		if (!json_is_string(d)) {
			r = fail(j, KM_ERR_INVALID_REQUEST, "destination_key must "
			    "be a string");
			goto out;
		}
		dname = json_string_value(d);
	}
	if (json_object_get(item, "destination_context") != NULL)
		dctx_field = "destination_context";
	if ((r = string_field(j, item, "ciphertext", &ct, &ctlen)) != KM_OK ||
	    (r = context_of(j, j->key, item, "context", &c)) != KM_OK ||
	    (r = dest_key(j, dname, &dk)) != KM_OK ||
	    (r = context_of(j, dk, item, dctx_field, &dc)) != KM_OK)
		goto out;
	json_object_set_new(audit_item, "context", context_json(&c));
	json_object_set_new(audit_item, "destination_key", json_string(dk->name));
	json_object_set_new(audit_item, "destination_context", context_json(&dc));
	r = open_blob(j, j->key, ct, ctlen, &c, USE_REWRAP, &pt, &ptlen, &version);
	if (version != 0)
		json_object_set_new(audit_item, "version", json_integer(version));
	if (r != KM_OK)
		goto out;
	if ((r = seal(j, dk, &dc, pt, ptlen, &blob, &newv)) != KM_OK)
		goto out;
	json_object_set_new(audit_item, "destination_version", json_integer(newv));
	*result = json_pack("{s:s, s:I, s:s}", "ciphertext", blob, "key_version",
	    (json_int_t)newv, "key", dk->name);
out:
	km_secure_free(pt, ptlen);
	free(blob);
	return r;
}

static km_err
datakey_item(struct job *j, json_t *item, json_t **result, json_t *audit_item)
{
	struct blob_context c;
	unsigned char dek[32];
	json_t *bits_j = json_object_get(item, "bits"), *rp;
	char *blob = NULL, *b64 = NULL;
	size_t len = 32;
	uint32_t version = 0;
	int want_plain = 0;
	km_err r;

	if (bits_j != NULL && !json_is_null(bits_j)) {
		if (!json_is_integer(bits_j) || (json_integer_value(bits_j) != 128 &&
		    json_integer_value(bits_j) != 256)) {
			r = fail(j, KM_ERR_INVALID_REQUEST, "bits must be 128 or 256");
			goto out;
		}
		len = (size_t)json_integer_value(bits_j) / 8;
	}
	rp = json_object_get(item, "return_plaintext");
	if (rp != NULL && !json_is_null(rp)) {
		if (!json_is_boolean(rp)) {
			r = fail(j, KM_ERR_INVALID_REQUEST, "return_plaintext must "
			    "be true or false");
			goto out;
		}
		want_plain = json_is_true(rp);
	}
	if ((r = context_of(j, j->key, item, "context", &c)) != KM_OK)
		goto out;
	json_object_set_new(audit_item, "context", context_json(&c));
	json_object_set_new(audit_item, "bits", json_integer((json_int_t)len * 8));
	json_object_set_new(audit_item, "return_plaintext", json_boolean(want_plain));
	/* The DEK comes from the token's generator, not the host's. */
	if ((r = hsm_random(j->rq->ctx->hsm, dek, len)) != KM_OK) {
		r = fail(j, r, "the token could not generate random bytes");
		goto out;
	}
	if ((r = seal(j, j->key, &c, dek, len, &blob, &version)) != KM_OK)
		goto out;
	json_object_set_new(audit_item, "version", json_integer(version));
	*result = json_pack("{s:s, s:I}", "ciphertext", blob, "key_version",
	    (json_int_t)version);
	if (want_plain && *result != NULL) {
		if ((r = km_b64_encode(dek, len, &b64)) != KM_OK) {
			json_decref(*result);
			*result = NULL;
			r = fail(j, r, "encoding failed");
			goto out;
		}
		json_object_set_new(*result, "plaintext", json_string(b64));
		j->rq->answer_secret = 1;
	}
out:
	OPENSSL_cleanse(dek, sizeof(dek));
	if (b64 != NULL)
		km_secure_free(b64, strlen(b64));
	free(blob);
	return r;
}

static km_err
run_item(struct job *j, const struct crypto_op *op, json_t *item,
    json_t **result, json_t *audit_item)
{
	const char *bad;
	km_err r;

	*result = NULL;
	j->msg[0] = '\0';
	if (!json_is_object(item))
		return fail(j, KM_ERR_INVALID_REQUEST, "each item must be an object");
	if ((bad = api_unknown_field(item, op->fields)) != NULL)
		return fail(j, KM_ERR_INVALID_REQUEST, "unknown field '%.64s'", bad);
	r = op->fn(j, item, result, audit_item);
	if (r == KM_OK && *result == NULL)
		r = fail(j, KM_ERR_NOMEM, "out of memory");
	return r;
}

static void
run_batch(struct job *j, const struct crypto_op *op, json_t *batch)
{
	struct api_req *rq = j->rq;
	json_t *results, *items, *item, *res;
	size_t i, failed = 0;

	if (!json_is_array(batch) || json_array_size(batch) < 1 ||
	    json_array_size(batch) > MAX_BATCH) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "batch must be an array of "
		    "1..%d items", MAX_BATCH);
		return;
	}
	results = json_array();
	items = json_array();
	j->items_left = json_array_size(batch);
	json_array_foreach(batch, i, item) {
		json_t *ai = json_object();
		km_err r = run_item(j, op, item, &res, ai);

		if (r != KM_OK) {
			res = api_item_error(r, j->msg);
			json_object_set_new(ai, "outcome", json_string("error"));
			json_object_set_new(ai, "code", json_string(api_err_code(r)));
			failed++;
		} else {
			json_object_set_new(ai, "outcome", json_string("ok"));
		}
		json_array_append_new(results, res);
		json_array_append_new(items, ai);
	}
	api_audit_set(rq, "batch", json_integer((json_int_t)i));
	api_audit_set(rq, "failed", json_integer((json_int_t)failed));
	api_audit_set(rq, "items", items);
	api_answer(rq, 200, json_pack("{s:o}", "results", results));
}

static void
run_single(struct job *j, const struct crypto_op *op, json_t *body)
{
	json_t *ai = json_object(), *res = NULL, *v;
	const char *k;
	km_err r = run_item(j, op, body, &res, ai);

	json_object_foreach(ai, k, v)
		api_audit_set(j->rq, k, json_incref(v));
	json_decref(ai);
	if (r != KM_OK) {
		api_error(j->rq, r, "%s", j->msg);
		return;
	}
	api_answer(j->rq, 200, res);
}

static void
run_crypto(struct api_req *rq, const struct crypto_op *op)
{
	struct job j;
	const char *name = rq->params[0];
	json_t *body = NULL, *batch;
	size_t i;
	int r;

	memset(&j, 0, sizeof(j));
	j.rq = rq;
	api_audit_set(rq, "key", json_string(name));
	if (api_key_access_or_respond(rq, name))
		goto out;
	if ((r = store_key_get(rq->ctx->store, name, &j.key)) != KM_OK) {
		api_error(rq, r, r == KM_ERR_KEY_NOT_FOUND ? "no key named '%s'" :
		    "reading key '%s' failed", name);
		goto out;
	}
	if (strcmp(j.key->purpose, "encrypt") != 0) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "key '%s' is not an "
		    "encryption key", name);
		goto out;
	}
	/* Members are checked per item; the single form is one item. */
	if (api_object_or_respond(rq, &body))
		goto out;
	if (op->batch_ok && (batch = json_object_get(body, "batch")) != NULL) {
		if (json_object_size(body) != 1) {
			api_error(rq, KM_ERR_INVALID_REQUEST, "a batch request has "
			    "only the member 'batch'");
			goto out;
		}
		run_batch(&j, op, batch);
	} else {
		run_single(&j, op, body);
	}
out:
	for (i = 0; i < j.n_dests; i++)
		store_key_free(j.dests[i]);
	store_key_free(j.key);
	json_decref(body);
}

static const char *const wrap_fields[] = { "plaintext", "context", NULL };
static const char *const unwrap_fields[] = { "ciphertext", "context", NULL };
static const char *const rewrap_fields[] = { "ciphertext", "context",
	"destination_key", "destination_context", NULL };
static const char *const datakey_fields[] = { "bits", "context",
	"return_plaintext", NULL };

static const struct crypto_op wrap_op = { wrap_item, wrap_fields, 1 };
static const struct crypto_op unwrap_op = { unwrap_item, unwrap_fields, 1 };
static const struct crypto_op rewrap_op = { rewrap_item, rewrap_fields, 1 };
static const struct crypto_op datakey_op = { datakey_item, datakey_fields, 0 };

void
api_crypto_wrap(struct api_req *rq)
{
	run_crypto(rq, &wrap_op);
}

void
api_crypto_unwrap(struct api_req *rq)
{
	run_crypto(rq, &unwrap_op);
}

void
api_crypto_rewrap(struct api_req *rq)
{
	run_crypto(rq, &rewrap_op);
}

void
api_crypto_datakey(struct api_req *rq)
{
	run_crypto(rq, &datakey_op);
}
