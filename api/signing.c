/* Signing keys: sign (raw or JWS), verify, public keys, and the JWKS served
 * from memory. Signing happens in the token; verification is OpenSSL
 * against the public key in the store (see docs/SIGNING.md for why). */
#include "api.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "cfg.h"
#include "hsm.h"
#include "jwk.h"
#include "log.h"
#include "sig.h"
#include "store.h"
#include "usage.h"

/* The JWKS is rebuilt at least this often while it is asked for, so a
 * change made by another kmsd instance, or by a code path that does not
 * call api_jwks_changed, shows within this time. */
#define JWKS_REFRESH_US (5 * 1000000LL)
#define JWKS_PAGE 1000
/* Largest signature /verify takes, decoded (RSA-4096 is 512 bytes). */
#define MAX_SIGNATURE 1024

/* Version states whose public key verifies and is published. */
#define PUBLISHED ((1u << KM_STATE_PRIMARY) | (1u << KM_STATE_ACTIVE) | \
	(1u << KM_STATE_RETIRED) | (1u << KM_STATE_ARCHIVED))

/* Protected header members a caller may not set: alg and kid are kmsd's;
 * crit and b64 change how a verifier processes the JWS; jku, jwk, x5u,
 * x5c and the x5t thumbprints point a verifier at other keys. */
static const char *const reserved_header[] = {
	"alg", "kid", "crit", "b64", "jku", "jwk", "x5u", "x5c", "x5t",
	"x5t#S256", NULL,
};

/* ---- the JWKS cache --------------------------------------------------- */

static atomic_uint_fast64_t jwks_generation = 1;

static struct {
	pthread_mutex_t lock;		/* guards everything below */
	int valid;
	uint64_t generation;		/* jwks_generation the copy was built at */
	int64_t built_at;		/* microseconds */
	char *body;			/* {"keys":[...]} */
	size_t body_len;
	char etag[72];			/* "\"<hex SHA-256 of body>\"" */
	char (*kids)[44];		/* the kids in it, sorted */
	size_t n_kids;
} jwks = { .lock = PTHREAD_MUTEX_INITIALIZER };

void
api_jwks_changed(void)
{
	atomic_fetch_add(&jwks_generation, 1);
}

static int
kid_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* 1 when `kid` is in the JWKS as last built (0 when none was built). */
static int
jwks_has_kid(const char *kid)
{
	int found;

	pthread_mutex_lock(&jwks.lock);
	found = jwks.valid && bsearch(kid, jwks.kids, jwks.n_kids,
	    sizeof(*jwks.kids), kid_cmp) != NULL;
	pthread_mutex_unlock(&jwks.lock);
	return found;
}

/* JWKS entries of one version: the JWK with "use":"sig" and "alg". An RSA
 * version is listed once per algorithm, with the same kid: a verifier that
 * picks keys by kid and alg (as RFC 8725 section 3.1 recommends) finds
 * the entry for RS256 and for PS256 tokens alike. */
static int
jwks_add_version(const struct store_key *k, const struct store_version *v,
    json_t *keys, char (**kids)[44], size_t *n_kids, size_t *cap)
{
	enum hsm_sig_alg algs[2];
	size_t i, n = sig_algs_of_type(k->type, algs);
	json_t *jwk = NULL, *e;
	char kid[44];
	int r;

	if ((r = jwk_from_spki(v->public_key, v->public_key_len, &jwk,
	    kid)) != KM_OK) {
		log_warn("version %u of %s has an unreadable public key; it is "
		    "left out of the JWKS", v->version, k->name);
		return KM_OK;
	}
	for (i = 0; i < n; i++) {
		if ((e = json_deep_copy(jwk)) == NULL ||
		    json_object_set_new(e, "use", json_string("sig")) != 0 ||
		    json_object_set_new(e, "alg",
		    json_string(sig_alg_name(algs[i]))) != 0 ||
		    json_array_append_new(keys, e) != 0) {
			json_decref(jwk);
			return KM_ERR_NOMEM;
		}
	}
	json_decref(jwk);
	if (*n_kids == *cap) {
		size_t ncap = *cap ? *cap * 2 : 64;
		char (*grown)[44] = realloc(*kids, ncap * sizeof(**kids));

		if (grown == NULL)
			return KM_ERR_NOMEM;
		*kids = grown;
		*cap = ncap;
	}
	memcpy((*kids)[(*n_kids)++], kid, 44);
	return KM_OK;
}

/* Builds the JWKS body from the store: every signing key, by name, each
 * published version in version order, so equal sets give equal bytes and
 * equal ETags. Runs with jwks.lock held. */
static int
jwks_rebuild_locked(struct api_ctx *ctx, uint64_t generation)
{
	struct store_key **page = NULL;
	json_t *doc = NULL, *keys = json_array();
	char (*kids)[44] = NULL, after[sizeof(page[0]->name)] = "";
	unsigned char digest[SHA256_DIGEST_LENGTH];
	char hex[2 * SHA256_DIGEST_LENGTH + 1], *body = NULL;
	size_t n = 0, i, j, n_kids = 0, cap = 0;
	int r = KM_ERR_NOMEM;

	if (keys == NULL)
		goto out;
	for (;;) {
		if ((r = store_key_list(ctx->store, after[0] ? after : NULL,
		    JWKS_PAGE, NULL, NULL, &page, &n)) != KM_OK)
			goto out;
		for (i = 0; i < n && r == KM_OK; i++) {
			const struct store_key *k = page[i];

			if (strcmp(k->purpose, "sign") != 0)
				continue;
			for (j = 0; j < k->n_versions && r == KM_OK; j++)
				if ((PUBLISHED & (1u << k->versions[j].state)) &&
				    k->versions[j].public_key != NULL)
					r = jwks_add_version(k, &k->versions[j],
					    keys, &kids, &n_kids, &cap);
		}
		if (n > 0)
			snprintf(after, sizeof(after), "%s", page[n - 1]->name);
		for (i = 0; i < n; i++)
			store_key_free(page[i]);
		free(page);
		page = NULL;
		if (r != KM_OK)
			goto out;
		if (n < JWKS_PAGE)
			break;
	}
	if ((doc = json_pack("{s:O}", "keys", keys)) == NULL ||
	    (body = json_dumps(doc, JSON_COMPACT)) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	if (n_kids > 1)
		qsort(kids, n_kids, sizeof(*kids), kid_cmp);
	SHA256((const unsigned char *)body, strlen(body), digest);
	km_hex(digest, sizeof(digest), hex);
	free(jwks.body);
	free(jwks.kids);
	jwks.body = body;
	jwks.body_len = strlen(body);
	body = NULL;
	snprintf(jwks.etag, sizeof(jwks.etag), "\"%s\"", hex);
	jwks.kids = kids;
	jwks.n_kids = n_kids;
	kids = NULL;
	jwks.generation = generation;
	jwks.built_at = km_now_us();
	jwks.valid = 1;
	r = KM_OK;
out:
	free(body);
	free(kids);
	json_decref(doc);
	json_decref(keys);
	return r;
}

/* RFC 9110 section 13.1.2: If-None-Match is "*" or a list of entity tags,
 * compared weakly (a W/ prefix is ignored). */
static int
etag_matches(const char *header, const char *etag)
{
	size_t elen = strlen(etag);
	const char *p = header;

	while (*p != '\0') {
		const char *q;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '*')
			return 1;
		if (strncmp(p, "W/", 2) == 0)
			p += 2;
		if (*p != '"')
			return 0;
		if ((q = strchr(p + 1, '"')) == NULL)
			return 0;
		if ((size_t)(q + 1 - p) == elen && memcmp(p, etag, elen) == 0)
			return 1;
		p = q + 1;
	}
	return 0;
}

void
api_jwks(struct api_req *rq)
{
	uint64_t gen = atomic_load(&jwks_generation);
	int r = KM_OK;

	pthread_mutex_lock(&jwks.lock);
	if (!jwks.valid || jwks.generation != gen ||
	    km_now_us() - jwks.built_at >= JWKS_REFRESH_US)
		r = jwks_rebuild_locked(rq->ctx, gen);
	if (r != KM_OK && !jwks.valid) {
		pthread_mutex_unlock(&jwks.lock);
		api_error(rq, r, "the key set could not be read");
		return;
	}
	if (r != KM_OK)
		log_warn("JWKS rebuild failed (%s); serving the previous set",
		    km_strerror(r));
	snprintf(rq->etag, sizeof(rq->etag), "%s", jwks.etag);
	snprintf(rq->cache_control, sizeof(rq->cache_control),
	    "public, max-age=%ld", rq->ctx->cfg->jwks_max_age);
	if (rq->if_none_match != NULL && etag_matches(rq->if_none_match,
	    jwks.etag)) {
		pthread_mutex_unlock(&jwks.lock);
		rq->status = 304;
		return;
	}
	if ((rq->raw = malloc(jwks.body_len)) == NULL) {
		pthread_mutex_unlock(&jwks.lock);
		api_error(rq, KM_ERR_NOMEM, "out of memory");
		return;
	}
	memcpy(rq->raw, jwks.body, jwks.body_len);
	rq->raw_len = jwks.body_len;
	pthread_mutex_unlock(&jwks.lock);
	rq->raw_type = "application/json";
	rq->status = 200;
}

/* ---- shared helpers --------------------------------------------------- */

/* Loads signing key params[0] after the access check, or answers. */
static int
sign_key_or_respond(struct api_req *rq, struct store_key **k)
{
	const char *name = rq->params[0];
	int r;

	*k = NULL;
	api_audit_set(rq, "key", json_string(name));
	if (api_key_access_or_respond(rq, name))
		return -1;
	if ((r = store_key_get(rq->ctx->store, name, k)) != KM_OK) {
		api_error(rq, r, r == KM_ERR_KEY_NOT_FOUND ? "no key named '%s'" :
		    "reading key '%s' failed", name);
		return -1;
	}
	if (strcmp((*k)->purpose, "sign") != 0) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "key '%s' is not a signing "
		    "key", name);
		return -1;
	}
	return 0;
}

/* The kid of a version (RFC 7638 thumbprint of its public key). */
static int
version_kid(const struct store_version *v, char kid[44])
{
	kid[0] = '\0';
	if (v->public_key == NULL)
		return KM_ERR_NOT_FOUND;
	return jwk_kid(v->public_key, v->public_key_len, kid);
}

/* "ES256", or "RS256 or PS256", for messages. */
static void
algs_text(const char *type, char *out, size_t outlen)
{
	enum hsm_sig_alg a[2];
	size_t n = sig_algs_of_type(type, a);

	if (n == 2)
		snprintf(out, outlen, "%s or %s", sig_alg_name(a[0]),
		    sig_alg_name(a[1]));
	else if (n == 1)
		snprintf(out, outlen, "%s", sig_alg_name(a[0]));
	else
		snprintf(out, outlen, "nothing");
}

/* Parses the optional "alg" of a request for key `k`; the key type's
 * default when absent. */
static int
alg_or_respond(struct api_req *rq, const struct store_key *k,
    const char *name, enum hsm_sig_alg *alg)
{
	enum hsm_sig_alg a[2];
	char allowed[32];

	if (sig_algs_of_type(k->type, a) == 0) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "key '%s' is not a signing "
		    "key", k->name);
		return -1;
	}
	*alg = a[0];
	if (name == NULL)
		return 0;
	if (sig_alg_parse(name, alg) != KM_OK || !sig_alg_allowed(k->type, *alg)) {
		algs_text(k->type, allowed, sizeof(allowed));
		api_error(rq, KM_ERR_INVALID_REQUEST, "alg '%.32s' is not an "
		    "algorithm of key type %s (%s)", name, k->type, allowed);
		return -1;
	}
	return 0;
}

/* Decodes base64 field `field` (already a string) of at most `max` bytes;
 * KM_ERR_TOO_LARGE (413) over it. */
static int
b64_or_respond(struct api_req *rq, const char *field, const char *s,
    size_t max, unsigned char **out, size_t *outlen)
{
	size_t n = strlen(s);

	*out = NULL;
	*outlen = 0;
	/* Refuse by the encoded length first: no decode of a huge input. */
	if (n / 4 * 3 > max + 2) {
		api_error(rq, KM_ERR_TOO_LARGE, "%s is over %zu bytes", field, max);
		return -1;
	}
	if (km_b64_decode(s, n, out, outlen) != KM_OK) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "%s must be standard "
		    "base64 (RFC 4648, padded)", field);
		return -1;
	}
	if (*outlen > max) {
		km_secure_free(*out, *outlen);
		*out = NULL;
		api_error(rq, KM_ERR_TOO_LARGE, "%s is over %zu bytes", field, max);
		return -1;
	}
	return 0;
}

/* The private key of version `v`, from the token's cache. */
static int
acquire_or_respond(struct api_req *rq, const struct store_key *k,
    const struct store_version *v, struct hsm_key **hk)
{
	char id[64], label[HSM_LABEL_MAX];
	enum hsm_key_type t;
	int r;

	*hk = NULL;
	if ((r = hsm_key_type_parse(k->type, &t)) != KM_OK) {
		api_error(rq, r, "key type '%s' cannot sign", k->type);
		return -1;
	}
	hsm_cache_id(k->id, v->version, id, sizeof(id));
	if (v->storage == STORE_TOKEN) {
		hsm_version_label(k->name, v->version, label, sizeof(label));
		r = hsm_key_acquire_token(rq->ctx->hsm, id, label, v->public_key,
		    v->public_key_len, hk);
	} else if (v->wrapped != NULL) {
		r = hsm_key_acquire(rq->ctx->hsm, id, t, v->mek_version,
		    v->wrapped, v->wrapped_len, hk);
	} else {
		r = KM_ERR_VERSION_STATE;
	}
	if (r != KM_OK) {
		api_error(rq, r == KM_ERR_NOT_FOUND || r == KM_ERR_VERSION_STATE ?
		    KM_ERR_HSM : r, "the token could not load version %u of '%s'",
		    v->version, k->name);
		return -1;
	}
	return 0;
}

/* ---- POST /v1/keys/{name}/sign ---------------------------------------- */

/* The protected header {"alg","kid"} plus the caller's extra members, or
 * answers 400. */
static int
header_or_respond(struct api_req *rq, json_t *extra, enum hsm_sig_alg alg,
    const char *kid, json_t **out)
{
	const char *name;
	json_t *h, *val;
	char *text;
	size_t i, n;
	int dumped;

	*out = NULL;
	if ((h = json_pack("{s:s, s:s}", "alg", sig_alg_name(alg), "kid",
	    kid)) == NULL) {
		api_error(rq, KM_ERR_NOMEM, "out of memory");
		return -1;
	}
	if (extra != NULL && !json_is_null(extra)) {
		if (!json_is_object(extra)) {
			json_decref(h);
			api_error(rq, KM_ERR_INVALID_REQUEST, "header must be an "
			    "object of extra protected header members");
			return -1;
		}
		json_object_foreach(extra, name, val) {
			for (i = 0; reserved_header[i] != NULL; i++) {
				if (strcmp(name, reserved_header[i]) == 0) {
					json_decref(h);
					api_error(rq, KM_ERR_INVALID_REQUEST,
					    "header member '%s' is set by kmsd or "
					    "not allowed", name);
					return -1;
				}
			}
			json_object_set(h, name, val);
		}
	}
	text = json_dumps(h, JSON_COMPACT);
	dumped = text != NULL;
	n = dumped ? strlen(text) : 0;
	free(text);
	if (!dumped || n > SIG_MAX_HEADER) {
		json_decref(h);
		api_error(rq, dumped ? KM_ERR_TOO_LARGE : KM_ERR_INVALID_REQUEST,
		    "the protected header must serialize to at most %d bytes of "
		    "JSON", SIG_MAX_HEADER);
		return -1;
	}
	*out = h;
	return 0;
}

void
api_sign(struct api_req *rq)
{
	static const char *const fields[] = { "input", "format", "prehashed",
		"alg", "marshaling", "header", NULL };
	struct store_key *k = NULL;
	const struct store_version *v;
	struct hsm_key *hk = NULL;
	json_t *body = NULL, *hdr = NULL, *extra;
	const char *input = NULL, *format = "raw", *alg_name = NULL,
	    *marshaling = NULL;
	enum hsm_sig_alg alg;
	unsigned char *msg = NULL, digest[SHA256_DIGEST_LENGTH], sig[HSM_SIG_MAX],
	    *der = NULL;
	const unsigned char *data, *out_sig = sig;
	size_t msg_len = 0, data_len, sig_len = 0, der_len = 0;
	char kid[44], *signing_input = NULL, *enc = NULL, *jws = NULL;
	int prehashed = 0, is_jws, r;

	if (sign_key_or_respond(rq, &k) ||
	    api_body_or_respond(rq, fields, &body) ||
	    api_string_or_respond(rq, body, "input", 1, &input) ||
	    api_string_or_respond(rq, body, "format", 0, &format) ||
	    api_bool_or_respond(rq, body, "prehashed", &prehashed) ||
	    api_string_or_respond(rq, body, "alg", 0, &alg_name) ||
	    api_string_or_respond(rq, body, "marshaling", 0, &marshaling))
		goto out;
	if (strcmp(format, "raw") != 0 && strcmp(format, "jws") != 0) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "format must be raw or jws");
		goto out;
	}
	is_jws = strcmp(format, "jws") == 0;
	api_audit_set(rq, "format", json_string(format));
	if (alg_or_respond(rq, k, alg_name, &alg))
		goto out;
	api_audit_set(rq, "alg", json_string(sig_alg_name(alg)));
	if (marshaling != NULL && (is_jws || alg != HSM_SIG_ES256 ||
	    (strcmp(marshaling, "der") != 0 && strcmp(marshaling, "jws") != 0))) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "marshaling (der or jws) "
		    "applies only to raw ES256 signatures");
		goto out;
	}
	if (prehashed && (is_jws || alg == HSM_SIG_EDDSA)) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "prehashed applies only to "
		    "raw ES256, RS256 and PS256 signatures (EdDSA and JWS sign "
		    "the message itself)");
		goto out;
	}
	extra = json_object_get(body, "header");
	if (extra != NULL && !json_is_null(extra) && !is_jws) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "header applies only to "
		    "format jws");
		goto out;
	}
	if (b64_or_respond(rq, "input", input, prehashed ? SHA256_DIGEST_LENGTH :
	    SIG_MAX_INPUT, &msg, &msg_len))
		goto out;
	if (prehashed ? msg_len != SHA256_DIGEST_LENGTH : msg_len == 0) {
		api_error(rq, KM_ERR_INVALID_REQUEST, prehashed ? "a prehashed "
		    "input is the 32-byte SHA-256 digest" : "input must not be "
		    "empty");
		goto out;
	}
	if (k->primary_version == 0 ||
	    (v = api_find_version(k, k->primary_version)) == NULL) {
		api_error(rq, KM_ERR_NO_PRIMARY, "key '%s' has no primary version; "
		    "rotate it", k->name);
		goto out;
	}
	api_audit_set(rq, "version", json_integer(v->version));
	if (version_kid(v, kid) != KM_OK) {
		api_error(rq, KM_ERR_VERSION_STATE, "version %u of '%s' has no "
		    "public key", v->version, k->name);
		goto out;
	}
	api_audit_set(rq, "kid", json_string(kid));
	if (is_jws) {
		if (header_or_respond(rq, extra, alg, kid, &hdr))
			goto out;
		if ((r = sig_jws_signing_input(hdr, msg, msg_len,
		    &signing_input)) != KM_OK) {
			api_error(rq, r, "encoding the JWS failed");
			goto out;
		}
		data = (const unsigned char *)signing_input;
		data_len = strlen(signing_input);
	} else {
		data = msg;
		data_len = msg_len;
	}
	if (acquire_or_respond(rq, k, v, &hk))
		goto out;
	/* ECDSA and RSA sign a SHA-256 digest made here (CKM_ECDSA and
	 * CKM_RSA_PKCS take digests; not every token has the hashing
	 * variants); Ed25519 signs the message itself. */
	if (alg == HSM_SIG_EDDSA) {
		r = hsm_sign(rq->ctx->hsm, hk, alg, data, data_len, sig, &sig_len);
	} else {
		if (prehashed)
			memcpy(digest, msg, sizeof(digest));
		else
			SHA256(data, data_len, digest);
		r = hsm_sign(rq->ctx->hsm, hk, alg, digest, sizeof(digest), sig,
		    &sig_len);
	}
	if (r != KM_OK) {
		api_error(rq, r, "the token could not sign");
		goto out;
	}
	usage_note(rq->ctx->usage, k->id, v->version, km_now_us());
	/* A version the JWKS does not show yet (made by another instance, or
	 * by a path that did not announce it): rebuild it before a verifier
	 * comes asking for this kid. */
	if (!jwks_has_kid(kid))
		api_jwks_changed();
	if (is_jws) {
		struct km_buf b = KM_BUF_INIT(2 * SIG_MAX_JWS);

		if ((r = km_b64url_encode(sig, sig_len, &enc)) != KM_OK) {
			api_error(rq, r, "encoding failed");
			goto out;
		}
		km_buf_append_str(&b, signing_input);
		km_buf_append(&b, ".", 1);
		km_buf_append_str(&b, enc);
		jws = b.failed ? NULL : km_buf_take_str(&b);
		km_buf_free(&b);
		if (jws == NULL) {
			api_error(rq, KM_ERR_NOMEM, "out of memory");
			goto out;
		}
		api_answer(rq, 200, json_pack("{s:s, s:I, s:s, s:s}", "signature",
		    jws, "key_version", (json_int_t)v->version, "kid", kid, "alg",
		    sig_alg_name(alg)));
		goto out;
	}
	if (alg == HSM_SIG_ES256 && (marshaling == NULL ||
	    strcmp(marshaling, "der") == 0)) {
		if ((r = sig_ecdsa_raw_to_der(sig, &der, &der_len)) != KM_OK) {
			api_error(rq, r, "encoding failed");
			goto out;
		}
		out_sig = der;
		sig_len = der_len;
	}
	if ((r = km_b64_encode(out_sig, sig_len, &enc)) != KM_OK) {
		api_error(rq, r, "encoding failed");
		goto out;
	}
	api_answer(rq, 200, json_pack("{s:s, s:I, s:s, s:s}", "signature", enc,
	    "key_version", (json_int_t)v->version, "kid", kid, "alg",
	    sig_alg_name(alg)));
out:
	hsm_key_release(rq->ctx->hsm, hk);
	km_secure_free(msg, msg_len);
	if (signing_input != NULL)
		km_secure_free(signing_input, strlen(signing_input));
	OPENSSL_cleanse(digest, sizeof(digest));
	free(enc);
	free(jws);
	free(der);
	json_decref(hdr);
	json_decref(body);
	store_key_free(k);
}

/* ---- POST /v1/keys/{name}/verify -------------------------------------- */

/* The answer of a verification. */
static void
verified(struct api_req *rq, int valid, const struct store_version *v,
    const char *kid, enum hsm_sig_alg alg, const char *reason)
{
	json_t *o;

	api_audit_set(rq, "valid", json_boolean(valid));
	if (reason != NULL)
		api_audit_set(rq, "reason", json_string(reason));
	if (v != NULL)
		api_audit_set(rq, "version", json_integer(v->version));
	if (kid != NULL && kid[0] != '\0')
		api_audit_set(rq, "kid", json_string(kid));
	o = json_pack("{s:b, s:o, s:o, s:s}", "valid", valid, "key_version",
	    v != NULL ? json_integer(v->version) : json_null(), "kid",
	    kid != NULL && kid[0] != '\0' ? json_string(kid) : json_null(),
	    "alg", sig_alg_name(alg));
	if (o != NULL && reason != NULL)
		json_object_set_new(o, "reason", json_string(reason));
	api_answer(rq, 200, o);
}

/* A version that may verify: published, with a public key. Otherwise
 * *reason says why not. */
static int
verifiable(const struct store_version *v, char *reason, size_t len)
{
	if (PUBLISHED & (1u << v->state))
		return 1;
	snprintf(reason, len, "version %u is %s", v->version,
	    km_state_name(v->state));
	return 0;
}

static void
verify_jws(struct api_req *rq, const struct store_key *k, const char *text,
    size_t text_len)
{
	struct sig_jws j;
	const struct store_version *v = NULL;
	enum hsm_sig_alg alg = HSM_SIG_ES256;
	char why[160], kid[44] = "", reason[96];
	size_t i;
	int valid = 0, r;

	api_audit_set(rq, "format", json_string("jws"));
	if ((r = sig_jws_parse(text, text_len, &j, why, sizeof(why))) != KM_OK) {
		api_error(rq, r, "%s", why);
		goto out;
	}
	if (sig_alg_parse(j.alg, &alg) != KM_OK ||
	    !sig_alg_allowed(k->type, alg)) {
		char allowed[32];

		algs_text(k->type, allowed, sizeof(allowed));
		api_error(rq, KM_ERR_INVALID_REQUEST, "the JWS header alg "
		    "'%.32s' is not an algorithm of key '%s' (%s)", j.alg,
		    k->name, allowed);
		goto out;
	}
	api_audit_set(rq, "alg", json_string(j.alg));
	for (i = 0; i < k->n_versions && v == NULL; i++)
		if (version_kid(&k->versions[i], kid) == KM_OK &&
		    strcmp(kid, j.kid) == 0)
			v = &k->versions[i];
	if (v == NULL) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "no version of key '%s' has "
		    "kid '%.64s'", k->name, j.kid);
		goto out;
	}
	if (!verifiable(v, reason, sizeof(reason))) {
		/* Revoked or destroyed: left the JWKS, and no longer valid
		 * here. Make sure the JWKS agrees (another instance may have
		 * revoked it). */
		if (jwks_has_kid(kid))
			api_jwks_changed();
		verified(rq, 0, v, kid, alg, reason);
		goto out;
	}
	if ((r = sig_verify(v->public_key, v->public_key_len, alg, 0,
	    (const unsigned char *)text, j.signing_input_len, j.sig, j.sig_len,
	    &valid)) != KM_OK) {
		api_error(rq, r, "version %u of '%s' cannot check an %s signature",
		    v->version, k->name, j.alg);
		goto out;
	}
	verified(rq, valid, v, kid, alg, valid ? NULL :
	    "the signature does not verify");
out:
	sig_jws_clear(&j);
}

void
api_verify(struct api_req *rq)
{
	static const char *const fields[] = { "input", "signature", "alg",
		"marshaling", "prehashed", "key_version", "jws", NULL };
	struct store_key *k = NULL;
	const struct store_version *v = NULL, *tried;
	json_t *body = NULL;
	const char *input = NULL, *signature = NULL, *alg_name = NULL,
	    *marshaling = NULL, *jws = NULL;
	json_int_t want = 0;
	enum hsm_sig_alg alg;
	unsigned char *msg = NULL, *sig = NULL, raw[64];
	const unsigned char *check_sig;
	size_t msg_len = 0, sig_len = 0, check_len, i;
	char kid[44] = "", reason[96] = "";
	int prehashed = 0, valid = 0, der_ok = 1, r;

	if (sign_key_or_respond(rq, &k) ||
	    api_body_or_respond(rq, fields, &body) ||
	    api_string_or_respond(rq, body, "jws", 0, &jws))
		goto out;
	if (jws != NULL) {
		if (json_object_size(body) != 1) {
			api_error(rq, KM_ERR_INVALID_REQUEST, "a JWS is verified "
			    "alone: {\"jws\": \"...\"} and no other member");
			goto out;
		}
		verify_jws(rq, k, jws, strlen(jws));
		goto out;
	}
	if (api_string_or_respond(rq, body, "input", 1, &input) ||
	    api_string_or_respond(rq, body, "signature", 1, &signature) ||
	    api_string_or_respond(rq, body, "alg", 0, &alg_name) ||
	    api_string_or_respond(rq, body, "marshaling", 0, &marshaling) ||
	    api_bool_or_respond(rq, body, "prehashed", &prehashed) ||
	    api_int_or_respond(rq, body, "key_version", 1, UINT32_MAX, &want) ||
	    alg_or_respond(rq, k, alg_name, &alg))
		goto out;
	api_audit_set(rq, "format", json_string("raw"));
	api_audit_set(rq, "alg", json_string(sig_alg_name(alg)));
	if (marshaling != NULL && (alg != HSM_SIG_ES256 ||
	    (strcmp(marshaling, "der") != 0 && strcmp(marshaling, "jws") != 0))) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "marshaling (der or jws) "
		    "applies only to ES256 signatures");
		goto out;
	}
	if (prehashed && alg == HSM_SIG_EDDSA) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "EdDSA verifies the message "
		    "itself; prehashed does not apply");
		goto out;
	}
	if (b64_or_respond(rq, "input", input, prehashed ? SHA256_DIGEST_LENGTH :
	    SIG_MAX_INPUT, &msg, &msg_len) ||
	    b64_or_respond(rq, "signature", signature, MAX_SIGNATURE, &sig,
	    &sig_len))
		goto out;
	if (prehashed && msg_len != SHA256_DIGEST_LENGTH) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "a prehashed input is the "
		    "32-byte SHA-256 digest");
		goto out;
	}
	check_sig = sig;
	check_len = sig_len;
	if (alg == HSM_SIG_ES256 && (marshaling == NULL ||
	    strcmp(marshaling, "der") == 0)) {
		/* Not DER at all: a signature that cannot verify, not bad
		 * input; the answer says so. */
		if (sig_ecdsa_der_to_raw(sig, sig_len, raw) == KM_OK) {
			check_sig = raw;
			check_len = sizeof(raw);
		} else
			der_ok = 0;
	}
	if (want != 0) {
		if ((v = api_find_version(k, (uint32_t)want)) == NULL) {
			api_error(rq, KM_ERR_VERSION_NOT_FOUND, "key '%s' has no "
			    "version %u", k->name, (uint32_t)want);
			goto out;
		}
		(void)version_kid(v, kid);
		if (!verifiable(v, reason, sizeof(reason))) {
			verified(rq, 0, v, kid, alg, reason);
			goto out;
		}
		if (!der_ok) {
			verified(rq, 0, v, kid, alg, "the signature is not a DER "
			    "ECDSA signature");
			goto out;
		}
		if ((r = sig_verify(v->public_key, v->public_key_len, alg,
		    prehashed, msg, msg_len, check_sig, check_len,
		    &valid)) != KM_OK) {
			api_error(rq, r, "version %u of '%s' cannot be checked",
			    v->version, k->name);
			goto out;
		}
		verified(rq, valid, v, kid, alg, valid ? NULL :
		    "the signature does not verify");
		goto out;
	}
	if (!der_ok) {
		verified(rq, 0, NULL, NULL, alg, "the signature is not a DER "
		    "ECDSA signature");
		goto out;
	}
	/* No version given: newest first, every version with a public key;
	 * a match under a revoked or destroyed version is reported as such. */
	for (i = k->n_versions; i-- > 0 && !valid;) {
		tried = &k->versions[i];
		if (tried->public_key == NULL)
			continue;
		if ((r = sig_verify(tried->public_key, tried->public_key_len, alg,
		    prehashed, msg, msg_len, check_sig, check_len,
		    &valid)) != KM_OK) {
			api_error(rq, r, "version %u of '%s' cannot be checked",
			    tried->version, k->name);
			goto out;
		}
		if (valid)
			v = tried;
	}
	if (v == NULL) {
		verified(rq, 0, NULL, NULL, alg, "the signature does not verify "
		    "under any version of the key");
		goto out;
	}
	(void)version_kid(v, kid);
	if (!verifiable(v, reason, sizeof(reason)))
		verified(rq, 0, v, kid, alg, reason);
	else
		verified(rq, 1, v, kid, alg, NULL);
out:
	km_secure_free(msg, msg_len);
	free(sig);
	json_decref(body);
	store_key_free(k);
}

/* ---- GET /v1/keys/{name}/public --------------------------------------- */

void
api_public(struct api_req *rq)
{
	struct store_key *k = NULL;
	const struct store_version *v;
	enum hsm_sig_alg algs[2];
	json_t *versions = NULL, *jwk, *algs_j, *o;
	char kid[44], *pem;
	size_t i, j, n;

	if (sign_key_or_respond(rq, &k))
		goto out;
	n = sig_algs_of_type(k->type, algs);
	if ((versions = json_array()) == NULL) {
		api_error(rq, KM_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < k->n_versions; i++) {
		v = &k->versions[i];
		if (!(PUBLISHED & (1u << v->state)) || v->public_key == NULL)
			continue;
		jwk = NULL;
		pem = NULL;
		if (jwk_from_spki(v->public_key, v->public_key_len, &jwk,
		    kid) != KM_OK ||
		    jwk_spki_pem(v->public_key, v->public_key_len, &pem) != KM_OK) {
			json_decref(jwk);
			free(pem);
			api_error(rq, KM_ERR_INTERNAL, "version %u of '%s' has an "
			    "unreadable public key", v->version, k->name);
			goto out;
		}
		json_object_set_new(jwk, "use", json_string("sig"));
		json_object_set_new(jwk, "alg", json_string(sig_alg_name(algs[0])));
		algs_j = json_array();
		for (j = 0; j < n; j++)
			json_array_append_new(algs_j, json_string(sig_alg_name(algs[j])));
		o = json_pack("{s:I, s:s, s:s, s:s, s:o, s:s, s:o}",
		    "version", (json_int_t)v->version,
		    "state", km_state_name(v->state), "kid", kid,
		    "alg", sig_alg_name(algs[0]), "algs", algs_j, "pem", pem,
		    "jwk", jwk);
		free(pem);
		if (o == NULL || json_array_append_new(versions, o) != 0) {
			api_error(rq, KM_ERR_NOMEM, "out of memory");
			goto out;
		}
	}
	api_answer(rq, 200, json_pack("{s:s, s:s, s:O}", "name", k->name, "type",
	    k->type, "versions", versions));
out:
	json_decref(versions);
	store_key_free(k);
}
