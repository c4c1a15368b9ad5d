/* The operations a quorum of officers runs: for each, its parameters, its
 * preconditions, the state it acts on, and what it does (docs/CEREMONIES.md
 * has the runbook of each). */
#include "cer_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "api.h"
#include "cfg.h"
#include "hsm.h"
#include "jwk.h"
#include "log.h"
#include "store.h"

#define STATE_MAX	(64 * 1024)

void
cer_why(char why[CER_WHY], const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, CER_WHY, fmt, ap);
	va_end(ap);
}

size_t
cer_active_count(const struct cer_officer *o, size_t n)
{
	size_t i, k = 0;

	for (i = 0; i < n; i++)
		k += o[i].active != 0;
	return k;
}

/* ---- parameters ---- */

/* Copies client param `name` (a string, or an integer written in decimal)
 * into the request; answers why when it is missing or malformed. */
static int
param_copy(json_t *params, struct cer_request *r, const char *name,
    char why[CER_WHY])
{
	json_t *v = json_object_get(params, name);
	char num[32];
	const char *s = NULL;

	if (json_is_integer(v)) {
		snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
		    json_integer_value(v));
		s = num;
	} else if (json_is_string(v) &&
	    strlen(json_string_value(v)) == json_string_length(v))
		s = json_string_value(v);
	if (s == NULL) {
		cer_why(why, "param '%s' is required (a string or an integer)",
		    name);
		return KM_ERR_INVALID_REQUEST;
	}
	if (cer_param_set(r, name, s) != KM_OK) {
		cer_why(why, "param '%s' must be 1..%d printable ASCII characters "
		    "without spaces at either end", name, CER_PARAM_VALUE_MAX);
		return KM_ERR_INVALID_REQUEST;
	}
	return KM_OK;
}

/* A positive decimal without leading zeros, at most `max`. */
static int
parse_uint(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	*out = 0;
	if (s == NULL || s[0] < '1' || s[0] > '9' || strlen(s) > 10)
		return -1;
	for (i = 0; s[i] != '\0'; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

static int
param_uint(const struct cer_request *r, const char *name, uint64_t max,
    uint64_t *out, char why[CER_WHY])
{
	if (parse_uint(cer_param_get(r, name), max, out) != 0) {
		cer_why(why, "param '%s' must be an integer in 1..%" PRIu64, name,
		    max);
		return KM_ERR_INVALID_REQUEST;
	}
	return KM_OK;
}

/* ---- key.destroy, key.restore ---- */

static const char *const key_params[] = { "key", "version", NULL };

static int
key_prepare(struct cer *c, json_t *params, struct cer_request *r,
    char why[CER_WHY])
{
	int rc;

	(void)c;
	if ((rc = param_copy(params, r, "key", why)) != KM_OK ||
	    (rc = param_copy(params, r, "version", why)) != KM_OK)
		return rc;
	return KM_OK;
}

/* Loads the key and finds the version the request names. */
static int
key_version(struct cer *c, const struct cer_request *r, struct store_key **k,
    const struct store_version **v, char why[CER_WHY])
{
	const char *name = cer_param_get(r, "key");
	uint64_t ver;
	size_t i;
	int rc;

	*k = NULL;
	*v = NULL;
	if ((rc = param_uint(r, "version", UINT32_MAX, &ver, why)) != KM_OK)
		return rc;
	if (name == NULL || !api_key_name_valid(name)) {
		cer_why(why, "param 'key' is not a key name");
		return KM_ERR_INVALID_REQUEST;
	}
	if ((rc = store_key_get(c->ctx->store, name, k)) != KM_OK) {
		cer_why(why, rc == KM_ERR_KEY_NOT_FOUND ? "no key named '%s'" :
		    "reading key '%s' failed", name);
		return rc;
	}
	for (i = 0; i < (*k)->n_versions; i++)
		if ((*k)->versions[i].version == ver)
			*v = &(*k)->versions[i];
	if (*v == NULL) {
		cer_why(why, "key '%s' has no version %" PRIu64, name, ver);
		store_key_free(*k);
		*k = NULL;
		return KM_ERR_VERSION_NOT_FOUND;
	}
	return KM_OK;
}

static int
key_state(struct cer *c, const struct cer_request *r, struct km_buf *b)
{
	const struct store_version *v;
	struct store_key *k = NULL;
	char why[CER_WHY], line[256];
	int rc;

	if ((rc = key_version(c, r, &k, &v, why)) != KM_OK)
		return rc;
	snprintf(line, sizeof(line), "key: %s\nversion: %u\nstate: %s\n",
	    k->name, v->version, km_state_name(v->state));
	km_buf_append_str(b, line);
	store_key_free(k);
	return KM_OK;
}

static int
destroy_check(struct cer *c, const struct cer_request *r, char why[CER_WHY])
{
	const struct store_version *v;
	struct store_key *k = NULL;
	int rc;

	if ((rc = key_version(c, r, &k, &v, why)) != KM_OK)
		return rc;
	rc = KM_ERR_INVALID_TRANSITION;
	if (v->state == KM_STATE_PRIMARY)
		cer_why(why, "version %u of '%s' is the primary; rotate first",
		    v->version, k->name);
	else if (v->state == KM_STATE_DESTROYED)
		cer_why(why, "version %u of '%s' is destroyed already",
		    v->version, k->name);
	else
		rc = KM_OK;
	store_key_free(k);
	return rc;
}

static int
destroy_prepare(struct cer *c, json_t *params, struct cer_request *r,
    char why[CER_WHY])
{
	int rc;

	if ((rc = key_prepare(c, params, r, why)) != KM_OK)
		return rc;
	return destroy_check(c, r, why);
}

static int
destroy_run(struct cer *c, const struct cer_record *rec, struct cer_exec *x,
    char why[CER_WHY])
{
	const struct store_version *v;
	struct store_key *k = NULL;
	char label[160];
	int rc;

	if ((rc = key_version(c, &rec->req, &k, &v, why)) != KM_OK)
		return rc;
	if (v->storage == STORE_TOKEN) {
		/* The material is a token object: it goes first, so a failed
		 * commit leaves a version that cannot be used, never the
		 * reverse. Absent already (an earlier attempt) is fine. */
		snprintf(label, sizeof(label), "kms-%s-v%u", k->name, v->version);
		rc = hsm_token_key_destroy(c->ctx->hsm, v->public_key,
		    v->public_key_len);
		if (rc != KM_OK && rc != KM_ERR_NOT_FOUND) {
			cer_why(why, "the token could not destroy %s", label);
			goto out;
		}
	}
	snprintf(x->key, sizeof(x->key), "%s", k->name);
	x->key_id = k->id;
	x->ch.kind = CER_CH_KEY_STATE;
	x->ch.key = x->key;
	x->ch.version = v->version;
	x->ch.from = (int)v->state;
	x->ch.to = KM_STATE_DESTROYED;
	x->ch.erase = 1;
	x->result = json_pack("{s:s, s:I, s:s, s:s, s:s}", "key", k->name,
	    "version", (json_int_t)v->version, "from", km_state_name(v->state),
	    "to", "destroyed", "storage", v->storage == STORE_TOKEN ? "token" :
	    "wrapped");
	rc = x->result != NULL ? KM_OK : KM_ERR_NOMEM;
out:
	store_key_free(k);
	return rc;
}

static void
destroy_after(struct cer *c, const struct cer_record *rec,
    const struct cer_exec *x)
{
	char id[HSM_CACHE_ID_MAX];

	(void)rec;
	hsm_cache_id(x->key_id, x->ch.version, id, sizeof(id));
	(void)hsm_key_evict(c->ctx->hsm, id);
	/* secure_delete zeroed the blob's old space; the WAL still has a
	 * page image of it until a truncating checkpoint. */
	store_wal_scrub(c->ctx->store);
}

static int
restore_check(struct cer *c, const struct cer_request *r, char why[CER_WHY])
{
	const struct store_version *v;
	struct store_key *k = NULL;
	int rc;

	if ((rc = key_version(c, r, &k, &v, why)) != KM_OK)
		return rc;
	rc = KM_OK;
	if (v->state != KM_STATE_ARCHIVED) {
		cer_why(why, "version %u of '%s' is %s; only archived versions "
		    "are restored", v->version, k->name, km_state_name(v->state));
		rc = KM_ERR_INVALID_TRANSITION;
	}
	store_key_free(k);
	return rc;
}

static int
restore_prepare(struct cer *c, json_t *params, struct cer_request *r,
    char why[CER_WHY])
{
	int rc;

	if ((rc = key_prepare(c, params, r, why)) != KM_OK)
		return rc;
	return restore_check(c, r, why);
}

static int
restore_run(struct cer *c, const struct cer_record *rec, struct cer_exec *x,
    char why[CER_WHY])
{
	const struct store_version *v;
	struct store_key *k = NULL;
	int rc;

	if ((rc = key_version(c, &rec->req, &k, &v, why)) != KM_OK)
		return rc;
	snprintf(x->key, sizeof(x->key), "%s", k->name);
	x->ch.kind = CER_CH_KEY_STATE;
	x->ch.key = x->key;
	x->ch.version = v->version;
	x->ch.from = KM_STATE_ARCHIVED;
	x->ch.to = KM_STATE_ACTIVE;
	x->result = json_pack("{s:s, s:I, s:s, s:s}", "key", k->name, "version",
	    (json_int_t)v->version, "from", "archived", "to", "active");
	store_key_free(k);
	return x->result != NULL ? KM_OK : KM_ERR_NOMEM;
}

/* ---- officers and the quorum ---- */

struct registry {
	struct cer_officer *o;
	size_t n;
	int quorum;
};

static int
registry_load(struct cer *c, struct registry *g, char why[CER_WHY])
{
	int rc;

	memset(g, 0, sizeof(*g));
	if ((rc = cer_store_officers(c->ctx->store, &g->o, &g->n)) != KM_OK ||
	    (rc = cer_store_quorum(c->ctx->store, &g->quorum)) != KM_OK) {
		cer_why(why, "reading the officer registry failed");
		return rc;
	}
	return KM_OK;
}

static void
registry_free(struct registry *g)
{
	cer_officers_free(g->o, g->n);
	memset(g, 0, sizeof(*g));
}

static const struct cer_officer *
registry_find(const struct registry *g, const char *name)
{
	size_t i;

	for (i = 0; i < g->n; i++)
		if (strcmp(g->o[i].name, name) == 0)
			return &g->o[i];
	return NULL;
}

/* Every officer (sorted by name) with state and key fingerprint, and M. */
static int
registry_state(struct cer *c, const struct cer_request *r, struct km_buf *b)
{
	struct registry g;
	char why[CER_WHY], fp[65], line[256];
	size_t i;
	int rc;

	(void)r;
	if ((rc = registry_load(c, &g, why)) != KM_OK)
		return rc;
	for (i = 0; i < g.n; i++) {
		cer_digest_hex(g.o[i].spki, g.o[i].spki_len, fp);
		snprintf(line, sizeof(line), "officer: %s %s %s\n", g.o[i].name,
		    g.o[i].active ? "active" : "removed", fp);
		km_buf_append_str(b, line);
	}
	snprintf(line, sizeof(line), "quorum: %d\n", g.quorum);
	km_buf_append_str(b, line);
	registry_free(&g);
	return KM_OK;
}

static const char *const officer_add_params[] = { "name", "public_key", NULL };

/* The canonical key param is the base64 DER; the fingerprint beside it is
 * what officers compare out of band (`openssl pkey -pubin -outform DER |
 * sha256sum`). */
static int
officer_add_check(struct cer *c, const struct cer_request *r,
    char why[CER_WHY])
{
	const char *name = cer_param_get(r, "name"), *b64 =
	    cer_param_get(r, "public_key"), *fp = cer_param_get(r,
	    "public_key_sha256");
	unsigned char *der = NULL, *spki = NULL;
	size_t der_len = 0, spki_len = 0, i;
	struct registry g = { 0 };
	char want[65];
	int rc = KM_ERR_INVALID_REQUEST;

	if (!cer_officer_name_valid(name)) {
		cer_why(why, "param 'name' must be 1..%d of a-z 0-9 . _ - starting "
		    "with a letter or digit", CER_NAME_MAX);
		goto out;
	}
	if (b64 == NULL || km_b64_decode(b64, strlen(b64), &der, &der_len) !=
	    KM_OK || cer_pubkey_parse(der, der_len, &spki, &spki_len) != KM_OK ||
	    spki_len != der_len || memcmp(spki, der, der_len) != 0) {
		cer_why(why, "param 'public_key' must be an ECDSA P-256 public key");
		goto out;
	}
	cer_digest_hex(spki, spki_len, want);
	if (fp == NULL || strcmp(fp, want) != 0) {
		cer_why(why, "param 'public_key_sha256' does not match the key");
		goto out;
	}
	if ((rc = registry_load(c, &g, why)) != KM_OK)
		goto out;
	rc = KM_ERR_INVALID_REQUEST;
	if (registry_find(&g, name) != NULL) {
		cer_why(why, "an officer named '%s' exists or existed; names are "
		    "never reused", name);
		goto out;
	}
	for (i = 0; i < g.n; i++) {
		if (g.o[i].spki_len == spki_len &&
		    memcmp(g.o[i].spki, spki, spki_len) == 0) {
			cer_why(why, "that key belongs to officer '%s'", g.o[i].name);
			goto out;
		}
	}
	if (g.n >= CER_MAX_OFFICERS) {
		cer_why(why, "at most %d officers can be registered",
		    CER_MAX_OFFICERS);
		goto out;
	}
	rc = KM_OK;
out:
	registry_free(&g);
	free(der);
	free(spki);
	return rc;
}

static int
officer_add_prepare(struct cer *c, json_t *params, struct cer_request *r,
    char why[CER_WHY])
{
	json_t *pk = json_object_get(params, "public_key");
	unsigned char *spki = NULL, *der = NULL;
	size_t spki_len = 0, der_len = 0;
	const char *s;
	char *b64 = NULL, fp[65];
	int rc;

	if ((rc = param_copy(params, r, "name", why)) != KM_OK)
		goto out;
	rc = KM_ERR_INVALID_REQUEST;
	/* PEM ("-----BEGIN PUBLIC KEY-----...") or base64 of the DER. */
	if (!json_is_string(pk) || (s = json_string_value(pk)) == NULL) {
		cer_why(why, "param 'public_key' is required (PEM or base64 DER)");
		goto out;
	}
	if (strncmp(s, "-----BEGIN", 10) == 0)
		rc = cer_pubkey_parse(s, strlen(s), &spki, &spki_len);
	else if ((rc = km_b64_decode(s, strlen(s), &der, &der_len)) == KM_OK)
		rc = cer_pubkey_parse(der, der_len, &spki, &spki_len);
	if (rc != KM_OK) {
		cer_why(why, "param 'public_key' is not an ECDSA P-256 public key");
		rc = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	cer_digest_hex(spki, spki_len, fp);
	if ((rc = km_b64_encode(spki, spki_len, &b64)) != KM_OK ||
	    (rc = cer_param_set(r, "public_key", b64)) != KM_OK ||
	    (rc = cer_param_set(r, "public_key_sha256", fp)) != KM_OK)
		goto out;
	rc = officer_add_check(c, r, why);
out:
	free(b64);
	free(der);
	free(spki);
	return rc;
}

static int
officer_add_run(struct cer *c, const struct cer_record *rec,
    struct cer_exec *x, char why[CER_WHY])
{
	const char *b64 = cer_param_get(&rec->req, "public_key");
	unsigned char *der = NULL;
	size_t der_len = 0;
	int rc;

	(void)c;
	if (b64 == NULL || (rc = km_b64_decode(b64, strlen(b64), &der,
	    &der_len)) != KM_OK ||
	    (rc = cer_pubkey_parse(der, der_len, &x->spki, &x->spki_len)) != KM_OK) {
		cer_why(why, "the ceremony's public_key does not parse");
		free(der);
		return KM_ERR_INVALID_REQUEST;
	}
	free(der);
	snprintf(x->name, sizeof(x->name), "%s", cer_param_get(&rec->req, "name"));
	x->ch.kind = CER_CH_OFFICER_ADD;
	x->ch.name = x->name;
	x->ch.spki = x->spki;
	x->ch.spki_len = x->spki_len;
	x->result = json_pack("{s:s, s:s}", "officer", x->name,
	    "public_key_sha256", cer_param_get(&rec->req, "public_key_sha256"));
	return x->result != NULL ? KM_OK : KM_ERR_NOMEM;
}

static const char *const officer_remove_params[] = { "name", NULL };

static int
officer_remove_check(struct cer *c, const struct cer_request *r,
    char why[CER_WHY])
{
	const char *name = cer_param_get(r, "name");
	const struct cer_officer *o;
	struct registry g;
	int rc;

	if ((rc = registry_load(c, &g, why)) != KM_OK)
		return rc;
	rc = KM_ERR_INVALID_REQUEST;
	if (name == NULL || (o = registry_find(&g, name)) == NULL || !o->active)
		cer_why(why, "no active officer named '%s'", name ? name : "");
	else if (cer_active_count(g.o, g.n) - 1 < (size_t)g.quorum)
		cer_why(why, "removing '%s' would leave %zu active officers for a "
		    "quorum of %d; lower the quorum first (quorum.set)", name,
		    cer_active_count(g.o, g.n) - 1, g.quorum);
	else
		rc = KM_OK;
	registry_free(&g);
	return rc;
}

static int
officer_remove_prepare(struct cer *c, json_t *params, struct cer_request *r,
    char why[CER_WHY])
{
	int rc;

	if ((rc = param_copy(params, r, "name", why)) != KM_OK)
		return rc;
	return officer_remove_check(c, r, why);
}

static int
officer_remove_run(struct cer *c, const struct cer_record *rec,
    struct cer_exec *x, char why[CER_WHY])
{
	(void)c;
	(void)why;
	snprintf(x->name, sizeof(x->name), "%s", cer_param_get(&rec->req, "name"));
	x->ch.kind = CER_CH_OFFICER_REMOVE;
	x->ch.name = x->name;
	x->result = json_pack("{s:s}", "officer", x->name);
	return x->result != NULL ? KM_OK : KM_ERR_NOMEM;
}

static const char *const quorum_params[] = { "quorum", NULL };

static int
quorum_check(struct cer *c, const struct cer_request *r, char why[CER_WHY])
{
	struct registry g;
	uint64_t q;
	int rc;

	if ((rc = param_uint(r, "quorum", CER_MAX_OFFICERS, &q, why)) != KM_OK)
		return rc;
	if ((rc = registry_load(c, &g, why)) != KM_OK)
		return rc;
	rc = KM_ERR_INVALID_REQUEST;
	if (q > cer_active_count(g.o, g.n))
		cer_why(why, "a quorum of %" PRIu64 " needs at least that many "
		    "active officers (%zu)", q, cer_active_count(g.o, g.n));
	else if ((int)q == g.quorum)
		cer_why(why, "the quorum is %d already", g.quorum);
	else
		rc = KM_OK;
	registry_free(&g);
	return rc;
}

static int
quorum_prepare(struct cer *c, json_t *params, struct cer_request *r,
    char why[CER_WHY])
{
	int rc;

	if ((rc = param_copy(params, r, "quorum", why)) != KM_OK)
		return rc;
	return quorum_check(c, r, why);
}

static int
quorum_run(struct cer *c, const struct cer_record *rec, struct cer_exec *x,
    char why[CER_WHY])
{
	uint64_t q;
	int rc;

	(void)c;
	if ((rc = param_uint(&rec->req, "quorum", CER_MAX_OFFICERS, &q,
	    why)) != KM_OK)
		return rc;
	x->ch.kind = CER_CH_QUORUM;
	x->ch.quorum = (int)q;
	x->result = json_pack("{s:I}", "quorum", (json_int_t)q);
	return x->result != NULL ? KM_OK : KM_ERR_NOMEM;
}

/* ---- MEK ---- */

/* Every MEK version with its state, and the newest rotation. Not the
 * counts of key versions under each: keys are created and rotated all the
 * time (the scheduler too) and must not make a pending MEK ceremony stale;
 * mek.disable checks its count of 0 at execution instead. */
static int
mek_state(struct cer *c, const struct cer_request *r, struct km_buf *b)
{
	struct cer_rotation rot;
	struct cer_mek *m = NULL;
	size_t n = 0, i;
	char line[256];
	int rc, found;

	(void)r;
	if ((rc = cer_store_meks(c->ctx->store, &m, &n)) != KM_OK ||
	    (rc = cer_store_rotation_last(c->ctx->store, &rot, &found)) != KM_OK)
		goto out;
	for (i = 0; i < n; i++) {
		snprintf(line, sizeof(line), "mek: %u %s\n", m[i].version,
		    m[i].state);
		km_buf_append_str(b, line);
	}
	if (found)
		snprintf(line, sizeof(line), "rotation: %" PRId64 " %u %u %s\n",
		    rot.id, rot.old_version, rot.new_version, rot.state);
	else
		snprintf(line, sizeof(line), "rotation: none\n");
	km_buf_append_str(b, line);
out:
	free(m);
	return rc;
}

/* The current MEK version and whether a rotation is running. */
static int
mek_now(struct cer *c, uint32_t *current, int *running, char why[CER_WHY])
{
	struct cer_rotation rot;
	int rc, found;

	*running = 0;
	if ((rc = store_mek_current(c->ctx->store, current)) != KM_OK ||
	    (rc = cer_store_rotation_last(c->ctx->store, &rot, &found)) != KM_OK) {
		cer_why(why, "reading the MEK versions failed");
		return rc == KM_ERR_NOT_FOUND ? KM_ERR_HSM : rc;
	}
	*running = found && strcmp(rot.state, "running") == 0;
	return KM_OK;
}

static int
rotate_check(struct cer *c, const struct cer_request *r, char why[CER_WHY])
{
	uint64_t from, to;
	uint32_t cur;
	int rc, running;

	if ((rc = param_uint(r, "from", UINT32_MAX, &from, why)) != KM_OK ||
	    (rc = param_uint(r, "to", UINT32_MAX, &to, why)) != KM_OK ||
	    (rc = mek_now(c, &cur, &running, why)) != KM_OK)
		return rc;
	if (running) {
		cer_why(why, "a MEK rotation is running; it must finish first");
		return KM_ERR_ROTATION_IN_PROGRESS;
	}
	if (from != cur || to != (uint64_t)cur + 1) {
		cer_why(why, "the current MEK version is %u: from must be %u and "
		    "to %u", cur, cur, cur + 1);
		return KM_ERR_INVALID_REQUEST;
	}
	if (hsm_mek_find(c->ctx->hsm, cur) != KM_OK) {
		cer_why(why, "MEK version %u is not in the token", cur);
		return KM_ERR_HSM;
	}
	return KM_OK;
}

static const char *const no_params[] = { NULL };

static int
rotate_prepare(struct cer *c, json_t *params, struct cer_request *r,
    char why[CER_WHY])
{
	uint32_t cur;
	char v[16];
	int rc, running;

	(void)params;
	if ((rc = mek_now(c, &cur, &running, why)) != KM_OK)
		return rc;
	if (cur == UINT32_MAX) {
		cer_why(why, "no MEK version number is left");
		return KM_ERR_INVALID_REQUEST;
	}
	snprintf(v, sizeof(v), "%u", cur);
	if ((rc = cer_param_set(r, "from", v)) != KM_OK)
		return rc;
	snprintf(v, sizeof(v), "%u", cur + 1);
	if ((rc = cer_param_set(r, "to", v)) != KM_OK)
		return rc;
	return rotate_check(c, r, why);
}

static int
rotate_run(struct cer *c, const struct cer_record *rec, struct cer_exec *x,
    char why[CER_WHY])
{
	uint64_t from, to;
	int64_t total;
	int rc, sens = 0, extr = 1;

	if ((rc = param_uint(&rec->req, "from", UINT32_MAX, &from, why)) != KM_OK ||
	    (rc = param_uint(&rec->req, "to", UINT32_MAX, &to, why)) != KM_OK)
		return rc;
	rc = hsm_mek_create(c->ctx->hsm, (uint32_t)to);
	if (rc == KM_ERR_KEY_EXISTS) {
		/* Left by an execution whose commit failed. Only a key that
		 * can never leave the token is taken over. */
		if (hsm_mek_flags(c->ctx->hsm, (uint32_t)to, &sens, &extr) != KM_OK ||
		    !sens || extr) {
			cer_why(why, "kms-mek-v%" PRIu64 " exists in the token but is "
			    "not sensitive and non-extractable; remove it first", to);
			return KM_ERR_HSM;
		}
		log_warn("ceremony: kms-mek-v%" PRIu64 " existed already (an earlier"
		    " attempt); using it", to);
		rc = KM_OK;
	}
	if (rc != KM_OK) {
		cer_why(why, "the token could not create MEK version %" PRIu64, to);
		return rc;
	}
	if ((rc = cer_store_count_under(c->ctx->store, (uint32_t)from,
	    &total)) != KM_OK) {
		cer_why(why, "counting the versions under MEK %" PRIu64 " failed",
		    from);
		return rc;
	}
	x->ch.kind = CER_CH_MEK_ROTATE;
	x->ch.mek_old = (uint32_t)from;
	x->ch.mek_new = (uint32_t)to;
	x->ch.total = total;
	x->result = json_pack("{s:I, s:I, s:I}", "from", (json_int_t)from, "to",
	    (json_int_t)to, "total", (json_int_t)total);
	return x->result != NULL ? KM_OK : KM_ERR_NOMEM;
}

static void
rotate_after(struct cer *c, const struct cer_record *rec,
    const struct cer_exec *x)
{
	(void)rec;
	(void)x;
	if (cer_mek_start(c) != KM_OK)
		log_error("ceremony: the MEK rotation worker did not start; "
		    "`kmsctl mek rotate --resume` or a restart resumes it");
}

static const char *const disable_params[] = { "version", NULL };

static int
disable_check(struct cer *c, const struct cer_request *r, char why[CER_WHY])
{
	struct cer_mek *m = NULL;
	struct cer_rotation rot;
	uint64_t v;
	size_t n = 0, i;
	int rc, found;

	if ((rc = param_uint(r, "version", UINT32_MAX, &v, why)) != KM_OK)
		return rc;
	if ((rc = cer_store_meks(c->ctx->store, &m, &n)) != KM_OK ||
	    (rc = cer_store_rotation_last(c->ctx->store, &rot, &found)) != KM_OK) {
		cer_why(why, "reading the MEK versions failed");
		goto out;
	}
	rc = KM_ERR_INVALID_TRANSITION;
	for (i = 0; i < n && m[i].version != v; i++)
		;
	if (i == n) {
		cer_why(why, "there is no MEK version %" PRIu64, v);
		rc = KM_ERR_NOT_FOUND;
	} else if (strcmp(m[i].state, "retired") != 0)
		cer_why(why, "MEK version %" PRIu64 " is %s; only a version that a "
		    "verified rotation retired can be disabled", v, m[i].state);
	else if (found && strcmp(rot.state, "running") == 0 &&
	    rot.old_version == v)
		cer_why(why, "the rotation away from MEK version %" PRIu64 " is "
		    "still running", v);
	else if (m[i].versions != 0)
		cer_why(why, "%" PRId64 " key versions are still under MEK version %"
		    PRIu64, m[i].versions, v);
	else
		rc = KM_OK;
out:
	free(m);
	return rc;
}

static int
disable_prepare(struct cer *c, json_t *params, struct cer_request *r,
    char why[CER_WHY])
{
	int rc;

	if ((rc = param_copy(params, r, "version", why)) != KM_OK)
		return rc;
	return disable_check(c, r, why);
}

static int
disable_run(struct cer *c, const struct cer_record *rec, struct cer_exec *x,
    char why[CER_WHY])
{
	uint64_t v;
	int rc;

	if ((rc = param_uint(&rec->req, "version", UINT32_MAX, &v, why)) != KM_OK)
		return rc;
	/* The token first: if the commit then fails, execution can run again
	 * (disabling twice is harmless); the store never says disabled for a
	 * key the token still lets wrap. */
	if ((rc = hsm_mek_disable(c->ctx->hsm, (uint32_t)v)) != KM_OK) {
		cer_why(why, "the token could not disable MEK version %" PRIu64, v);
		return rc;
	}
	x->ch.kind = CER_CH_MEK_DISABLE;
	x->ch.mek_old = (uint32_t)v;
	x->result = json_pack("{s:I}", "mek_version", (json_int_t)v);
	return x->result != NULL ? KM_OK : KM_ERR_NOMEM;
}

/* ---- audit_key.rotate ---- */

static int
audit_state(struct cer *c, const struct cer_request *r, struct km_buf *b)
{
	struct cer_audit_key *k = NULL;
	size_t n = 0, i;
	char line[256];
	int rc;

	(void)r;
	if ((rc = cer_store_audit_keys(c->ctx->store, &k, &n)) != KM_OK)
		return rc;
	for (i = 0; i < n; i++) {
		snprintf(line, sizeof(line), "audit_key: %s %s\n", k[i].label,
		    k[i].kid);
		km_buf_append_str(b, line);
	}
	pthread_mutex_lock(&c->akeys_lock);
	snprintf(line, sizeof(line), "signing: %s %s\n", c->audit_label,
	    c->audit_kid);
	pthread_mutex_unlock(&c->akeys_lock);
	km_buf_append_str(b, line);
	free(k);
	return KM_OK;
}

static int
audit_check(struct cer *c, const struct cer_request *r, char why[CER_WHY])
{
	struct cer_audit_key *k = NULL;
	const char *label = cer_param_get(r, "label");
	size_t n = 0, i;
	int rc;

	if (label == NULL || strncmp(label, "kms-audit-v", 11) != 0) {
		cer_why(why, "param 'label' must be kms-audit-v<N>");
		return KM_ERR_INVALID_REQUEST;
	}
	if ((rc = cer_store_audit_keys(c->ctx->store, &k, &n)) != KM_OK)
		return rc;
	rc = KM_OK;
	for (i = 0; i < n; i++)
		if (strcmp(k[i].label, label) == 0)
			rc = KM_ERR_INVALID_REQUEST;
	pthread_mutex_lock(&c->akeys_lock);
	if (strcmp(c->audit_label, label) == 0)
		rc = KM_ERR_INVALID_REQUEST;
	pthread_mutex_unlock(&c->akeys_lock);
	if (rc != KM_OK)
		cer_why(why, "audit-signing key %s is in use already", label);
	free(k);
	return rc;
}

static int
audit_prepare(struct cer *c, json_t *params, struct cer_request *r,
    char why[CER_WHY])
{
	struct cer_audit_key *k = NULL;
	size_t n = 0;
	char label[65];
	int rc, gen;

	(void)params;
	if ((rc = cer_store_audit_keys(c->ctx->store, &k, &n)) != KM_OK)
		return rc;
	/* Before the first rotation the key kmsctl init made is generation
	 * 1 (whatever its label); the new one is the next. */
	gen = n > 0 ? k[n - 1].generation + 1 : 2;
	free(k);
	snprintf(label, sizeof(label), "kms-audit-v%d", gen);
	if ((rc = cer_param_set(r, "label", label)) != KM_OK)
		return rc;
	return audit_check(c, r, why);
}

static int
audit_run(struct cer *c, const struct cer_record *rec, struct cer_exec *x,
    char why[CER_WHY])
{
	const char *label = cer_param_get(&rec->req, "label");
	unsigned char *der = NULL;
	size_t der_len = 0;
	json_t *jwk = NULL;
	char kid[44];
	int rc;

	rc = hsm_ec_create(c->ctx->hsm, label);
	if (rc == KM_ERR_KEY_EXISTS) {
		log_warn("ceremony: %s existed already (an earlier attempt); using "
		    "it", label);
		rc = KM_OK;
	}
	if (rc != KM_OK) {
		cer_why(why, "the token could not create %s", label);
		goto out;
	}
	if ((rc = hsm_ec_public(c->ctx->hsm, label, &der, &der_len)) != KM_OK ||
	    (rc = jwk_from_spki(der, der_len, &jwk, kid)) != KM_OK) {
		cer_why(why, "reading the public half of %s failed", label);
		goto out;
	}
	snprintf(x->label, sizeof(x->label), "%s", label);
	snprintf(x->kid, sizeof(x->kid), "%s", kid);
	pthread_mutex_lock(&c->akeys_lock);
	snprintf(x->prev_label, sizeof(x->prev_label), "%s", c->audit_label);
	snprintf(x->prev_kid, sizeof(x->prev_kid), "%s", c->audit_kid);
	pthread_mutex_unlock(&c->akeys_lock);
	x->ch.kind = CER_CH_AUDIT_KEY;
	x->ch.label = x->label;
	x->ch.kid = x->kid;
	x->ch.prev_label = x->prev_label;
	x->ch.prev_kid = x->prev_kid;
	x->result = json_pack("{s:s, s:s, s:s, s:s}", "label", x->label, "kid",
	    x->kid, "previous_label", x->prev_label, "previous_kid", x->prev_kid);
	rc = x->result != NULL ? KM_OK : KM_ERR_NOMEM;
out:
	json_decref(jwk);
	free(der);
	return rc;
}

static void
audit_after(struct cer *c, const struct cer_record *rec,
    const struct cer_exec *x)
{
	(void)rec;
	if (cer_audit_switch(c, x->label) != KM_OK)
		log_error("ceremony: checkpoints are still signed with %s; the "
		    "next start switches to %s", x->prev_label, x->label);
}

/* ---- key.import (BYOK) ---- */

int
cer_import_key(struct cer *c, int create, unsigned char **spki,
    size_t *spki_len, int *created)
{
	int rc;

	*created = 0;
	rc = hsm_import_key_public(c->ctx->hsm, CER_IMPORT_LABEL, spki, spki_len);
	if (rc != KM_ERR_NOT_FOUND || !create)
		return rc;
	rc = hsm_import_key_create(c->ctx->hsm, CER_IMPORT_LABEL);
	if (rc == KM_OK)
		*created = 1;
	else if (rc != KM_ERR_KEY_EXISTS)	/* made by a racing request */
		return rc;
	return hsm_import_key_public(c->ctx->hsm, CER_IMPORT_LABEL, spki,
	    spki_len);
}

static const char *const import_params[] = { "key", "type", "oaep_hash",
	"wrapped_sha256", NULL };

/* The version an import into `name` makes: 1 for a new key, else one
 * past the newest of an aes256-gcm encryption key. */
static int
import_target(struct cer *c, const char *name, uint32_t *version,
    char why[CER_WHY])
{
	struct store_key *k = NULL;
	int rc;

	*version = 0;
	if (name == NULL || !api_key_name_valid(name)) {
		cer_why(why, "param 'key' is not a key name");
		return KM_ERR_INVALID_REQUEST;
	}
	rc = store_key_get(c->ctx->store, name, &k);
	if (rc == KM_ERR_KEY_NOT_FOUND) {
		*version = 1;
		return KM_OK;
	}
	if (rc != KM_OK) {
		cer_why(why, "reading key '%s' failed", name);
		return rc;
	}
	rc = KM_ERR_UNSUPPORTED_KEY_TYPE;
	if (strcmp(k->type, "aes256-gcm") != 0)
		cer_why(why, "key '%s' is %s; only aes256-gcm keys take imported "
		    "versions", name, k->type);
	else if (k->n_versions > 0 &&
	    k->versions[k->n_versions - 1].version == UINT32_MAX)
		cer_why(why, "key '%s' has no version number left", name);
	else {
		*version = k->n_versions > 0 ?
		    k->versions[k->n_versions - 1].version + 1 : 1;
		rc = KM_OK;
	}
	store_key_free(k);
	return rc;
}

static int
import_check(struct cer *c, const struct cer_request *r, char why[CER_WHY])
{
	const char *fp = cer_param_get(r, "import_key_sha256");
	const char *type = cer_param_get(r, "type");
	unsigned char *spki = NULL;
	size_t spki_len = 0;
	enum hsm_oaep_hash hash;
	uint64_t want;
	uint32_t next;
	char have[65];
	int rc, created;

	if (type == NULL || strcmp(type, "aes256-gcm") != 0) {
		cer_why(why, "param 'type' must be aes256-gcm (the only type "
		    "imported in this build)");
		return KM_ERR_UNSUPPORTED_KEY_TYPE;
	}
	if (hsm_oaep_hash_parse(cer_param_get(r, "oaep_hash"), &hash) != KM_OK) {
		cer_why(why, "param 'oaep_hash' must be sha256 or sha1");
		return KM_ERR_INVALID_REQUEST;
	}
	if ((rc = param_uint(r, "version", UINT32_MAX, &want, why)) != KM_OK ||
	    (rc = import_target(c, cer_param_get(r, "key"), &next, why)) != KM_OK)
		return rc;
	if (want != next) {
		cer_why(why, "an import into '%s' now makes version %u, not %"
		    PRIu64, cer_param_get(r, "key"), next, want);
		return KM_ERR_STATE_CHANGED;
	}
	if ((rc = cer_import_key(c, 0, &spki, &spki_len, &created)) != KM_OK) {
		cer_why(why, rc == KM_ERR_NOT_FOUND ? "the token has no import key "
		    "(GET /v1/import-key makes it)" : "reading the import key "
		    "failed");
		return rc == KM_ERR_NOT_FOUND ? KM_ERR_STATE_CHANGED : rc;
	}
	cer_digest_hex(spki, spki_len, have);
	free(spki);
	if (fp == NULL || strcmp(fp, have) != 0 ||
	    strcmp(cer_param_get(r, "import_key"), CER_IMPORT_LABEL) != 0) {
		cer_why(why, "the import key is no longer the one the request "
		    "names");
		return KM_ERR_STATE_CHANGED;
	}
	if (!hsm_import_oaep_supported(c->ctx->hsm, CER_IMPORT_LABEL, hash)) {
		cer_why(why, "this token does not unwrap RSA-OAEP with %s; see "
		    "oaep_hashes of GET /v1/import-key", hsm_oaep_hash_name(hash));
		return KM_ERR_INVALID_REQUEST;
	}
	return KM_OK;
}

static int
import_prepare(struct cer *c, json_t *params, struct cer_request *r,
    char why[CER_WHY])
{
	unsigned char *spki = NULL;
	size_t spki_len = 0;
	uint32_t next;
	char fp[65], v[16];
	int rc, created;

	if ((rc = param_copy(params, r, "key", why)) != KM_OK)
		return rc;
	/* Optional client params, with their defaults. */
	if (json_object_get(params, "type") == NULL)
		rc = cer_param_set(r, "type", "aes256-gcm");
	else
		rc = param_copy(params, r, "type", why);
	if (rc != KM_OK)
		return rc;
	if (json_object_get(params, "oaep_hash") == NULL)
		rc = cer_param_set(r, "oaep_hash", "sha256");
	else
		rc = param_copy(params, r, "oaep_hash", why);
	if (rc != KM_OK ||
	    (json_object_get(params, "wrapped_sha256") != NULL &&
	    (rc = param_copy(params, r, "wrapped_sha256", why)) != KM_OK))
		return rc;
	if ((rc = import_target(c, cer_param_get(r, "key"), &next, why)) != KM_OK)
		return rc;
	snprintf(v, sizeof(v), "%u", next);
	if ((rc = cer_import_key(c, 0, &spki, &spki_len, &created)) != KM_OK) {
		cer_why(why, rc == KM_ERR_NOT_FOUND ? "the token has no import key; "
		    "GET /v1/import-key makes it, then wrap under it" :
		    "reading the import key failed");
		return rc == KM_ERR_NOT_FOUND ? KM_ERR_INVALID_REQUEST : rc;
	}
	cer_digest_hex(spki, spki_len, fp);
	free(spki);
	if ((rc = cer_param_set(r, "version", v)) != KM_OK ||
	    (rc = cer_param_set(r, "import_key", CER_IMPORT_LABEL)) != KM_OK ||
	    (rc = cer_param_set(r, "import_key_sha256", fp)) != KM_OK)
		return rc;
	return import_check(c, r, why);
}

/* The uploaded wrapped key: its SHA-256 goes into the signed text (and
 * must equal a wrapped_sha256 the client sent, which an officer who
 * signs the request has signed). */
static int
import_upload(struct cer *c, const unsigned char *data, size_t len,
    struct cer_request *r, char why[CER_WHY])
{
	const char *given = cer_param_get(r, "wrapped_sha256");
	char hex[65];

	(void)c;
	if (len == 0) {
		cer_why(why, "the wrapped key is empty");
		return KM_ERR_INVALID_REQUEST;
	}
	cer_digest_hex(data, len, hex);
	if (given != NULL) {
		if (strcmp(given, hex) != 0) {
			cer_why(why, "param 'wrapped_sha256' is not the SHA-256 of the "
			    "uploaded wrapped key (%.16s...)", hex);
			return KM_ERR_INVALID_REQUEST;
		}
		return KM_OK;
	}
	return cer_param_set(r, "wrapped_sha256", hex);
}

/* The key's versions and their states (not its use counters), and the
 * import key: what the officers saw when they approved. */
static int
import_state(struct cer *c, const struct cer_request *r, struct km_buf *b)
{
	const char *name = cer_param_get(r, "key");
	struct store_key *k = NULL;
	unsigned char *spki = NULL;
	size_t spki_len = 0, i;
	char line[256], fp[65];
	int rc, created;

	rc = store_key_get(c->ctx->store, name, &k);
	if (rc == KM_ERR_KEY_NOT_FOUND) {
		snprintf(line, sizeof(line), "key: %s absent\n", name);
		km_buf_append_str(b, line);
	} else if (rc != KM_OK)
		return rc;
	else {
		snprintf(line, sizeof(line), "key: %s %s %u\n", k->name, k->type,
		    k->primary_version);
		km_buf_append_str(b, line);
		for (i = 0; i < k->n_versions; i++) {
			snprintf(line, sizeof(line), "version: %u %s\n",
			    k->versions[i].version,
			    km_state_name(k->versions[i].state));
			km_buf_append_str(b, line);
		}
		store_key_free(k);
	}
	rc = cer_import_key(c, 0, &spki, &spki_len, &created);
	if (rc == KM_OK) {
		cer_digest_hex(spki, spki_len, fp);
		snprintf(line, sizeof(line), "import_key: %s %s\n",
		    CER_IMPORT_LABEL, fp);
		free(spki);
	} else if (rc == KM_ERR_NOT_FOUND)
		snprintf(line, sizeof(line), "import_key: none\n");
	else
		return rc;
	km_buf_append_str(b, line);
	return KM_OK;
}

static int
import_run(struct cer *c, const struct cer_record *rec, struct cer_exec *x,
    char why[CER_WHY])
{
	const struct cer_request *r = &rec->req;
	const char *want = cer_param_get(r, "wrapped_sha256");
	unsigned char *data = NULL;
	enum hsm_oaep_hash hash;
	size_t len = 0;
	uint64_t version;
	uint32_t mek;
	char have[65];
	int rc;

	if ((rc = param_uint(r, "version", UINT32_MAX, &version, why)) != KM_OK ||
	    (rc = hsm_oaep_hash_parse(cer_param_get(r, "oaep_hash"), &hash)) !=
	    KM_OK)
		return rc;
	if ((rc = cer_store_upload(c->ctx->store, r->id, &data, &len)) != KM_OK) {
		cer_why(why, rc == KM_ERR_NOT_FOUND ? "the wrapped key of ceremony "
		    "%s is not stored" : "reading the wrapped key of ceremony %s "
		    "failed", r->id);
		rc = rc == KM_ERR_NOT_FOUND ? KM_ERR_STATE_CHANGED : rc;
		goto out;
	}
	/* What runs is what the officers signed. */
	cer_digest_hex(data, len, have);
	if (want == NULL || strcmp(want, have) != 0) {
		cer_why(why, "the stored wrapped key (SHA-256 %.16s...) is not the "
		    "one the signed request names (wrapped_sha256)", have);
		rc = KM_ERR_STATE_CHANGED;
		goto out;
	}
	if ((rc = store_mek_current(c->ctx->store, &mek)) != KM_OK) {
		cer_why(why, "reading the current MEK version failed");
		goto out;
	}
	rc = hsm_key_import(c->ctx->hsm, HSM_KEY_AES256, CER_IMPORT_LABEL, hash,
	    data, len, mek, &x->blob, &x->blob_len);
	if (rc != KM_OK) {
		cer_why(why, rc == KM_ERR_INVALID_CIPHERTEXT ? "the token could not "
		    "unwrap the wrapped key as a 32-byte AES key (RSA-OAEP %s under "
		    "%s); nothing was imported" : "the token could not import the "
		    "wrapped key", hsm_oaep_hash_name(hash), CER_IMPORT_LABEL);
		goto out;
	}
	snprintf(x->key, sizeof(x->key), "%s", cer_param_get(r, "key"));
	x->ch.kind = CER_CH_KEY_IMPORT;
	x->ch.key = x->key;
	x->ch.version = (uint32_t)version;
	x->ch.mek_new = mek;
	x->ch.wrapped = x->blob;
	x->ch.wrapped_len = x->blob_len;
	x->ch.create = version == 1;
	x->result = json_pack("{s:s, s:I, s:s, s:b, s:s, s:s, s:s, s:I}", "key",
	    x->key, "version", (json_int_t)version, "type", "aes256-gcm",
	    "created", version == 1, "import_key", CER_IMPORT_LABEL, "oaep_hash",
	    hsm_oaep_hash_name(hash), "wrapped_sha256", have, "mek_version",
	    (json_int_t)mek);
	rc = x->result != NULL ? KM_OK : KM_ERR_NOMEM;
out:
	free(data);
	return rc;
}

static const struct cer_opdef ops[] = {
	{ "mek.rotate", no_params, rotate_prepare, rotate_check, mek_state,
	    rotate_run, rotate_after, NULL },
	{ "mek.disable", disable_params, disable_prepare, disable_check,
	    mek_state, disable_run, NULL, NULL },
	{ "key.destroy", key_params, destroy_prepare, destroy_check, key_state,
	    destroy_run, destroy_after, NULL },
	{ "key.restore", key_params, restore_prepare, restore_check, key_state,
	    restore_run, NULL, NULL },
	{ "officer.add", officer_add_params, officer_add_prepare,
	    officer_add_check, registry_state, officer_add_run, NULL,
	    NULL },
	{ "officer.remove", officer_remove_params, officer_remove_prepare,
	    officer_remove_check, registry_state, officer_remove_run, NULL,
	    NULL },
	{ "quorum.set", quorum_params, quorum_prepare, quorum_check,
	    registry_state, quorum_run, NULL, NULL },
	{ "audit_key.rotate", no_params, audit_prepare, audit_check,
	    audit_state, audit_run, audit_after, NULL },
	{ "key.import", import_params, import_prepare, import_check,
	    import_state, import_run, NULL, import_upload },
	{ NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL },
};

const struct cer_opdef *
cer_op_find(const char *name)
{
	const struct cer_opdef *op;

	if (name == NULL)
		return NULL;
	for (op = ops; op->name != NULL; op++)
		if (strcmp(op->name, name) == 0)
			return op;
	return NULL;
}

int
cer_state_hash(struct cer *c, const struct cer_opdef *op,
    const struct cer_request *r, char hex[65])
{
	struct km_buf b = KM_BUF_INIT(STATE_MAX);
	int rc;

	hex[0] = '\0';
	km_buf_append_str(&b, "kms-ceremony-state/v1\noperation: ");
	km_buf_append_str(&b, op->name);
	km_buf_append_str(&b, "\n");
	if ((rc = op->state(c, r, &b)) != KM_OK)
		goto out;
	if (b.failed) {
		rc = KM_ERR_TOO_LARGE;
		goto out;
	}
	cer_digest_hex(b.data, b.len, hex);
	rc = KM_OK;
out:
	km_buf_free(&b);
	return rc;
}
