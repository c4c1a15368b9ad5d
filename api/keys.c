/* Key resource: create, list, show, rotate, and version state moves. */
#include "api.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "hsm.h"
#include "jwk.h"
#include "log.h"
#include "store.h"
#include "usage.h"

#define MAX_LIST 1000

static json_t *
version_json(struct api_req *rq, const struct store_key *k,
    const struct store_version *v)
{
	uint64_t pending = 0;
	int64_t last = 0;

	json_t *o, *jwk = NULL;
	char kid[44];

	usage_pending(rq->ctx->usage, k->id, v->version, &pending, &last);
	if (v->last_used_at > last)
		last = v->last_used_at;
	o = json_pack("{s:I, s:s, s:o, s:o, s:o, s:I}",
	    "version", (json_int_t)v->version,
	    "state", km_state_name(v->state),
	    "created_at", api_time_json(v->created_at),
	    "mek_version", v->storage == STORE_TOKEN ? json_null() :
	    json_integer((json_int_t)v->mek_version),
	    "last_used_at", api_time_json(last),
	    "use_count", (json_int_t)(v->use_count + pending));
	/* Signing keys: the RFC 7638 kid that JWS headers and the JWKS name
	 * this version by, and where its private key lives. */
	if (o != NULL && strcmp(k->purpose, "sign") == 0) {
		json_object_set_new(o, "storage", json_string(v->storage ==
		    STORE_TOKEN ? "token" : "wrapped"));
		if (v->public_key != NULL && jwk_from_spki(v->public_key,
		    v->public_key_len, &jwk, kid) == KM_OK)
			json_object_set_new(o, "kid", json_string(kid));
		json_decref(jwk);
	}
	return o;
}

json_t *
api_key_json(struct api_req *rq, const void *store_key)
{
	const struct store_key *k = store_key;
	json_t *o, *versions, *req;
	char period[32];
	size_t i;

	versions = json_array();
	req = json_array();
	for (i = 0; i < k->n_versions; i++)
		json_array_append_new(versions, version_json(rq, k, &k->versions[i]));
	for (i = 0; i < k->n_required; i++)
		json_array_append_new(req, json_string(k->required_context[i]));
	km_duration_format(k->rotation_period, period, sizeof(period));
	o = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
	    "name", k->name, "type", k->type, "purpose", k->purpose,
	    "primary_version", k->primary_version ?
	    json_integer(k->primary_version) : json_null(),
	    "rotation_period", k->rotation_period ? json_string(period) :
	    json_null(),
	    "next_rotation_at", api_time_json(k->next_rotation_at),
	    "expires_at", api_time_json(k->expires_at),
	    "required_context", req,
	    "created_at", api_time_json(k->created_at),
	    "versions", versions);
	return o;
}

static int
parse_required_context(struct api_req *rq, json_t *body, struct store_key *k)
{
	json_t *arr = json_object_get(body, "required_context"), *v;
	size_t i, j;

	if (arr == NULL || json_is_null(arr))
		return 0;
	if (!json_is_array(arr) || json_array_size(arr) > 16) {
		api_error(rq, KM_ERR_INVALID_REQUEST,
		    "required_context must be an array of at most 16 names");
		return -1;
	}
	if ((k->required_context = calloc(json_array_size(arr) + 1,
	    sizeof(char *))) == NULL) {
		api_error(rq, KM_ERR_NOMEM, "out of memory");
		return -1;
	}
	json_array_foreach(arr, i, v) {
		const char *s = json_string_value(v);

		if (s == NULL || s[0] == '\0' || strlen(s) > 256 ||
		    strlen(s) != json_string_length(v)) {
			api_error(rq, KM_ERR_INVALID_REQUEST, "required_context "
			    "entries must be names of 1..256 bytes");
			return -1;
		}
		for (j = 0; j < k->n_required; j++) {
			if (strcmp(k->required_context[j], s) == 0) {
				api_error(rq, KM_ERR_INVALID_REQUEST,
				    "required_context names '%s' twice", s);
				return -1;
			}
		}
		if ((k->required_context[k->n_required] = strdup(s)) == NULL) {
			api_error(rq, KM_ERR_NOMEM, "out of memory");
			return -1;
		}
		k->n_required++;
	}
	return 0;
}

static int
parse_type(struct api_req *rq, const char *type, struct store_key *k)
{
	enum hsm_key_type t;

	if (hsm_key_type_parse(type, &t) != KM_OK) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "unknown key type '%.64s' "
		    "(aes256-gcm, ec-p256, rsa-2048, rsa-3072, ed25519)", type);
		return -1;
	}
	/* Asked before anything is generated, so a token without CKM_EDDSA
	 * answers with the reason rather than a token failure. */
	if (hsm_key_type_supported(rq->ctx->hsm, t) != KM_OK) {
		api_error(rq, KM_ERR_UNSUPPORTED_KEY_TYPE, "the token lacks a "
		    "mechanism that key type '%s' needs%s (kmsd's log names it)",
		    type, t == HSM_KEY_ED25519 ? " (CKM_EDDSA)" : "");
		return -1;
	}
	snprintf(k->type, sizeof(k->type), "%s", type);
	snprintf(k->purpose, sizeof(k->purpose), "%s",
	    hsm_key_type_is_pair(t) ? "sign" : "encrypt");
	return 0;
}

int
api_key_new_version(struct api_ctx *ctx, const char *type, int64_t now_us,
    struct store_version *v, const char **why)
{
	struct hsm_new_key nk;
	enum hsm_key_type t;
	unsigned char rnd[8];
	char label[HSM_LABEL_MAX], hex[17];
	uint32_t mek;
	int r;

	memset(v, 0, sizeof(*v));
	*why = NULL;
	if (hsm_key_type_parse(type, &t) != KM_OK) {
		*why = "this build cannot make versions of that key type";
		return KM_ERR_UNSUPPORTED_KEY_TYPE;
	}
	if ((r = store_mek_current(ctx->store, &mek)) != KM_OK) {
		*why = "no MEK version is recorded; run kmsctl init";
		return r == KM_ERR_NOT_FOUND ? KM_ERR_HSM : r;
	}
	/* A version the token will not wrap stays a token object. Its number
	 * is assigned in the store transaction, so it starts with a
	 * provisional label; api_key_version_settle (or its first use) names
	 * it kms-<key>-v<N>. It is found by its public key, not its label. */
	if ((r = km_random(rnd, sizeof(rnd))) != KM_OK) {
		*why = "no random bytes for a label";
		return r;
	}
	km_hex(rnd, sizeof(rnd), hex);
	snprintf(label, sizeof(label), "kms-new-%s", hex);
	if ((r = hsm_key_create(ctx->hsm, t, mek, label, &nk)) != KM_OK) {
		*why = r == KM_ERR_UNSUPPORTED_KEY_TYPE ? "the token cannot "
		    "make keys of that type" : "the token could not generate "
		    "the key";
		return r;
	}
	v->state = KM_STATE_PRIMARY;
	v->created_at = now_us;
	v->wrapped = nk.wrapped;
	v->wrapped_len = nk.wrapped_len;
	v->public_key = nk.public_key;
	v->public_key_len = nk.public_key_len;
	/* A token object is under no MEK: MEK rotation has nothing to do. */
	v->mek_version = nk.on_token ? 0 : mek;
	v->storage = nk.on_token ? STORE_TOKEN : STORE_WRAPPED;
	return KM_OK;
}

void
api_key_version_settle(struct api_ctx *ctx, const char *name,
    const struct store_version *v, int committed)
{
	char label[HSM_LABEL_MAX];

	if (v->public_key != NULL && committed)
		api_jwks_changed();
	if (v->storage != STORE_TOKEN || v->public_key == NULL)
		return;
	if (committed) {
		hsm_version_label(name, v->version, label, sizeof(label));
		if (hsm_token_key_label(ctx->hsm, label, v->public_key,
		    v->public_key_len) != KM_OK)
			log_warn("version %u of %s keeps its provisional token "
			    "label until first use", v->version, name);
	} else if (hsm_token_key_destroy(ctx->hsm, v->public_key,
	    v->public_key_len) != KM_OK) {
		log_warn("the token object of an uncommitted version of %s is "
		    "left in the token", name);
	}
}

/* The audit fields of a new version: its MEK version, and for a signing
 * key its kid and where the private key lives. */
static void
audit_new_version(struct api_req *rq, const struct store_version *v)
{
	json_t *jwk = NULL;
	char kid[44];

	api_audit_set(rq, "mek_version", v->storage == STORE_TOKEN ? json_null() :
	    json_integer(v->mek_version));
	if (v->public_key == NULL)
		return;
	api_audit_set(rq, "storage", json_string(v->storage == STORE_TOKEN ?
	    "token" : "wrapped"));
	if (jwk_from_spki(v->public_key, v->public_key_len, &jwk, kid) == KM_OK)
		api_audit_set(rq, "kid", json_string(kid));
	json_decref(jwk);
}

/* A fresh version under the current MEK: generated and wrapped in the token. */
static int
new_version_or_respond(struct api_req *rq, const char *type,
    struct store_version *v)
{
	const char *why;
	int r;

	if ((r = api_key_new_version(rq->ctx, type, km_now_us(), v,
	    &why)) != KM_OK) {
		api_error(rq, r, "%s", why);
		return -1;
	}
	return 0;
}

static int
parse_times(struct api_req *rq, json_t *body, struct store_key *k)
{
	const char *period = NULL, *expires = NULL;

	if (api_string_or_respond(rq, body, "rotation_period", 0, &period) ||
	    api_string_or_respond(rq, body, "expires_at", 0, &expires))
		return -1;
	if (period != NULL &&
	    km_duration_parse(period, &k->rotation_period) != KM_OK) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "rotation_period '%s' is "
		    "not a duration like 90d, 12h, 30m or 3600s", period);
		return -1;
	}
	if (expires != NULL && (km_time_parse(expires, &k->expires_at) != KM_OK ||
	    k->expires_at <= km_now_us())) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "expires_at must be an "
		    "RFC 3339 time in the future");
		return -1;
	}
	return 0;
}

void
api_keys_create(struct api_req *rq)
{
	struct store_key k = { 0 };
	struct store_version v;
	const char *name = NULL, *type = "aes256-gcm";
	json_t *body = NULL;
	int r;

	memset(&v, 0, sizeof(v));
	static const char *const fields[] = { "name", "type", "rotation_period",
		"expires_at", "required_context", NULL };

	if (api_body_or_respond(rq, fields, &body) ||
	    api_string_or_respond(rq, body, "name", 1, &name) ||
	    api_string_or_respond(rq, body, "type", 0, &type))
		goto out;
	api_audit_set(rq, "key", json_string(name));
	if (!api_key_name_valid(name)) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "key names are 1..128 "
		    "characters of A-Z a-z 0-9 . _ - starting with a letter or digit");
		goto out;
	}
	snprintf(k.name, sizeof(k.name), "%s", name);
	if (parse_type(rq, type, &k) || parse_times(rq, body, &k) ||
	    parse_required_context(rq, body, &k))
		goto out;
	if (new_version_or_respond(rq, k.type, &v))
		goto out;
	v.version = 1;
	k.created_at = v.created_at;
	k.primary_version = 1;
	if (k.rotation_period)
		k.next_rotation_at = k.created_at + k.rotation_period * 1000000;
	k.versions = &v;
	k.n_versions = 1;
	api_audit_set(rq, "version", json_integer(1));
	api_audit_set(rq, "type", json_string(k.type));
	audit_new_version(rq, &v);
	rq->status = 201;
	r = store_key_create(rq->ctx->store, &k, api_audit_ok_hook, rq);
	api_key_version_settle(rq->ctx, k.name, &v, r == KM_OK);
	if (r != KM_OK) {
		api_error(rq, r, r == KM_ERR_KEY_EXISTS ? "key '%s' exists" :
		    "key '%s' was not created", name);
		goto out;
	}
	api_answer(rq, 201, api_key_json(rq, &k));
out:
	k.versions = NULL;
	k.n_versions = 0;
	free(v.wrapped);
	free(v.public_key);
	for (size_t i = 0; i < k.n_required; i++)
		free(k.required_context[i]);
	free(k.required_context);
	json_decref(body);
}

struct list_filter {
	const struct api_principal *who;
};

static int
list_match(const char *name, void *arg)
{
	struct list_filter *f = arg;

	return api_key_visible(f->who, name);
}

void
api_keys_list(struct api_req *rq)
{
	struct list_filter f = { &rq->who };
	struct store_key **keys = NULL;
	const char *after = api_arg(rq, "after"), *lim = api_arg(rq, "limit");
	size_t n = 0, i, limit = 100;
	json_t *arr;
	char *end;
	int r;

	if (lim != NULL) {
		long l = strtol(lim, &end, 10);

		if (*lim == '\0' || *end != '\0' || l < 1 || l > MAX_LIST) {
			api_error(rq, KM_ERR_INVALID_REQUEST,
			    "limit must be 1..%d", MAX_LIST);
			return;
		}
		limit = (size_t)l;
	}
	/* One more than asked tells whether a next page exists, so the
	 * last page says next: null instead of leading to an empty one. */
	if ((r = store_key_list(rq->ctx->store, after, limit + 1, list_match,
	    &f, &keys, &n)) != KM_OK) {
		api_error(rq, r, "listing keys failed");
		return;
	}
	arr = json_array();
	for (i = 0; i < n && i < limit; i++)
		json_array_append_new(arr, api_key_json(rq, keys[i]));
	api_answer(rq, 200, json_pack("{s:o, s:o}", "keys", arr, "next",
	    n > limit ? json_string(keys[limit - 1]->name) : json_null()));
	for (i = 0; i < n; i++)
		store_key_free(keys[i]);
	free(keys);
}

/* Loads key params[0] after the access check, or answers. */
static int
key_or_respond(struct api_req *rq, struct store_key **k)
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
	return 0;
}

void
api_keys_get(struct api_req *rq)
{
	struct store_key *k;

	if (key_or_respond(rq, &k))
		return;
	api_answer(rq, 200, api_key_json(rq, k));
	store_key_free(k);
}

static void
answer_key_again(struct api_req *rq, const char *name, int status)
{
	struct store_key *k = NULL;

	/* The change is committed and audited; a failed re-read must not
	 * turn it into an error the client would retry. */
	if (store_key_get(rq->ctx->store, name, &k) == KM_OK)
		api_answer(rq, status, api_key_json(rq, k));
	else
		api_answer(rq, status, json_pack("{s:s}", "name", name));
	store_key_free(k);
}

struct rotate_arg {
	struct api_req *rq;
	const struct store_version *v;
};

static int
rotate_hook(void *arg)
{
	struct rotate_arg *ra = arg;

	api_audit_set(ra->rq, "version", json_integer(ra->v->version));
	return api_audit_now(ra->rq, "ok", ra->rq->status);
}

void
api_keys_rotate(struct api_req *rq)
{
	struct store_key *k = NULL;
	struct store_version v;
	struct rotate_arg ra = { rq, &v };
	int64_t next = 0;
	int r;

	memset(&v, 0, sizeof(v));
	if (key_or_respond(rq, &k) || new_version_or_respond(rq, k->type, &v))
		goto out;
	if (k->rotation_period)
		next = v.created_at + k->rotation_period * 1000000;
	api_audit_set(rq, "previous_version", k->primary_version ?
	    json_integer(k->primary_version) : json_null());
	audit_new_version(rq, &v);
	rq->status = 200;
	/* The new version number is assigned inside the transaction; the
	 * hook records it. */
	r = store_key_rotate(rq->ctx->store, k->name, &v, next, rotate_hook, &ra);
	api_key_version_settle(rq->ctx, k->name, &v, r == KM_OK);
	if (r != KM_OK) {
		api_error(rq, r, "rotating key '%s' failed", k->name);
		goto out;
	}
	answer_key_again(rq, k->name, 200);
out:
	free(v.wrapped);
	free(v.public_key);
	store_key_free(k);
}

/* The creation time of k's primary version, or 0. */
static int64_t
primary_created_at(const struct store_key *k)
{
	const struct store_version *v = k->primary_version ?
	    api_find_version(k, k->primary_version) : NULL;

	return v != NULL ? v->created_at : 0;
}

void
api_keys_config(struct api_req *rq)
{
	static const char *const fields[] = { "rotation_period", "expires_at",
		NULL };
	struct store_key *k = NULL, t = { 0 };
	json_t *body = NULL, *rp, *ex;
	int64_t period, next, expires, base;
	char buf[32];
	int r;

	if (key_or_respond(rq, &k) || api_body_or_respond(rq, fields, &body))
		goto out;
	rp = json_object_get(body, "rotation_period");
	ex = json_object_get(body, "expires_at");
	if (rp == NULL && ex == NULL) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "send rotation_period "
		    "and/or expires_at (null clears either)");
		goto out;
	}
	/* Validated as POST /v1/keys does; null clears, absent keeps. */
	if (parse_times(rq, body, &t))
		goto out;
	period = rp == NULL ? k->rotation_period : t.rotation_period;
	expires = ex == NULL ? k->expires_at : t.expires_at;
	next = k->next_rotation_at;
	if (rp != NULL) {
		/* The schedule counts from the primary's creation, as after a
		 * rotation: a shorter period can make the key due at once. */
		base = primary_created_at(k);
		next = period == 0 ? 0 : (base ? base : km_now_us()) +
		    period * 1000000;
	}
	km_duration_format(k->rotation_period, buf, sizeof(buf));
	api_audit_set(rq, "previous_rotation_period", k->rotation_period ?
	    json_string(buf) : json_null());
	api_audit_set(rq, "previous_expires_at", api_time_json(k->expires_at));
	km_duration_format(period, buf, sizeof(buf));
	api_audit_set(rq, "rotation_period", period ? json_string(buf) :
	    json_null());
	api_audit_set(rq, "next_rotation_at", api_time_json(next));
	api_audit_set(rq, "expires_at", api_time_json(expires));
	rq->status = 200;
	r = store_key_set_config(rq->ctx->store, k->name, period, next, expires,
	    api_audit_ok_hook, rq);
	if (r != KM_OK) {
		api_error(rq, r, "changing the configuration of key '%s' failed",
		    k->name);
		goto out;
	}
	answer_key_again(rq, k->name, 200);
out:
	json_decref(body);
	store_key_free(k);
}

/* Decides whether `who` may move a version from `from` to `to` without a
 * ceremony (DESIGN.md section 3, docs/API.md). */
static km_err
transition_check(const struct api_principal *who, enum km_state from,
    enum km_state to, const char **why)
{
	*why = NULL;
	if (from == KM_STATE_REVOKED || from == KM_STATE_DESTROYED) {
		*why = "revoked and destroyed are final";
		return KM_ERR_INVALID_TRANSITION;
	}
	if (to == KM_STATE_DESTROYED) {
		*why = "destroying key material needs an M-of-N ceremony "
		    "(key.destroy)";
		return KM_ERR_CEREMONY_REQUIRED;
	}
	/* No bearer token revokes: an officer's signature does, through
	 * POST .../versions/{v}/revoke (api/ceremonies.c). */
	if (to == KM_STATE_REVOKED) {
		*why = "a revoke needs a security officer's signature: POST "
		    "/v1/keys/{name}/versions/{v}/revoke";
		return KM_ERR_FORBIDDEN;
	}
	if (who->role != ROLE_ADMIN) {
		*why = "officers move versions only by ceremonies and the signed "
		    "revoke";
		return KM_ERR_FORBIDDEN;
	}
	if (to == KM_STATE_PRIMARY) {
		*why = "a version becomes primary only by rotation";
		return KM_ERR_INVALID_TRANSITION;
	}
	if (to == KM_STATE_ACTIVE && from == KM_STATE_ARCHIVED) {
		*why = "archived -> active needs an M-of-N ceremony (key.restore)";
		return KM_ERR_CEREMONY_REQUIRED;
	}
	if ((to == KM_STATE_RETIRED && from == KM_STATE_ACTIVE) ||
	    (to == KM_STATE_ACTIVE && from == KM_STATE_RETIRED) ||
	    (to == KM_STATE_ARCHIVED &&
	    (from == KM_STATE_ACTIVE || from == KM_STATE_RETIRED)))
		return KM_OK;
	*why = "that move is not allowed";
	return KM_ERR_INVALID_TRANSITION;
}

static int
parse_version_or_respond(struct api_req *rq, uint32_t *version)
{
	const char *s = rq->params[1];
	char *end;
	unsigned long v;

	v = strtoul(s, &end, 10);
	if (*s < '1' || *s > '9' || *end != '\0' || v > UINT32_MAX) {
		api_error(rq, KM_ERR_VERSION_NOT_FOUND, "'%s' is not a version", s);
		return -1;
	}
	*version = (uint32_t)v;
	return 0;
}

/* Refuses to retire a version used within retire_idle_seconds, unless
 * forced: retiring is the step after old-version use has reached zero. */
static int
idle_or_respond(struct api_req *rq, const struct store_key *k,
    const struct store_version *v, int force)
{
	uint64_t pending;
	int64_t last, idle_us = (int64_t)rq->ctx->cfg->retire_idle_seconds * 1000000;

	usage_pending(rq->ctx->usage, k->id, v->version, &pending, &last);
	if (v->last_used_at > last)
		last = v->last_used_at;
	if (force || last == 0 || km_now_us() - last >= idle_us)
		return 0;
	api_error(rq, KM_ERR_VERSION_IN_USE, "version %u of '%s' was used "
	    "%lld s ago; rewrap its blobs first or send \"force\": true",
	    v->version, k->name, (long long)((km_now_us() - last) / 1000000));
	return -1;
}

/* A version that can no longer unwrap or sign leaves the key cache at
 * once, rather than when the cache bound pushes it out. */
static void
evict_unusable(struct api_req *rq, const struct store_key *k,
    uint32_t version, enum km_state to)
{
	char id[HSM_CACHE_ID_MAX];

	if (rq->ctx->hsm == NULL || (to != KM_STATE_ARCHIVED &&
	    to != KM_STATE_REVOKED && to != KM_STATE_DESTROYED))
		return;
	hsm_cache_id(k->id, version, id, sizeof(id));
	(void)hsm_key_evict(rq->ctx->hsm, id);
}

void
api_keys_state(struct api_req *rq)
{
	struct store_key *k = NULL;
	const struct store_version *v;
	const char *state = NULL, *why;
	enum km_state to;
	json_t *body = NULL;
	uint32_t version;
	int force = 0, r;

	static const char *const fields[] = { "state", "force", NULL };

	if (parse_version_or_respond(rq, &version) || key_or_respond(rq, &k) ||
	    api_body_or_respond(rq, fields, &body) ||
	    api_string_or_respond(rq, body, "state", 1, &state) ||
	    api_bool_or_respond(rq, body, "force", &force))
		goto out;
	api_audit_set(rq, "version", json_integer(version));
	if (km_state_parse(state, &to) != KM_OK) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "unknown state '%s'", state);
		goto out;
	}
	if ((v = api_find_version(k, version)) == NULL) {
		api_error(rq, KM_ERR_VERSION_NOT_FOUND, "key '%s' has no version %u",
		    k->name, version);
		goto out;
	}
	api_audit_set(rq, "from", json_string(km_state_name(v->state)));
	api_audit_set(rq, "to", json_string(km_state_name(to)));
	if ((r = transition_check(&rq->who, v->state, to, &why)) != KM_OK) {
		api_error(rq, r, "%s -> %s: %s", km_state_name(v->state),
		    km_state_name(to), why);
		goto out;
	}
	if (to == KM_STATE_RETIRED && idle_or_respond(rq, k, v, force))
		goto out;
	if (force)
		api_audit_set(rq, "force", json_true());
	rq->status = 200;
	if ((r = store_version_set_state(rq->ctx->store, k->name, version,
	    v->state, to, api_audit_ok_hook, rq)) != KM_OK) {
		api_error(rq, r, "moving version %u of '%s' to %s failed",
		    version, k->name, state);
		goto out;
	}
	/* A revoked signing version leaves the JWKS at once. */
	if (strcmp(k->purpose, "sign") == 0)
		api_jwks_changed();
	evict_unusable(rq, k, version, to);
	answer_key_again(rq, k->name, 200);
out:
	json_decref(body);
	store_key_free(k);
}
