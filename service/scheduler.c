/* Scheduled rotations and expiry alerts, one bounded pass per tick. */
#include "scheduler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api.h"
#include "audit.h"
#include "log.h"
#include "metrics.h"
#include "store.h"

#define SCHED_ACTOR		"kmsd:scheduler"
/* Due keys read per tick: more than max_rotations_per_tick, so keys still
 * inside their jitter or retry wait do not hide ones that are ready. */
#define SCHED_DUE_FACTOR	4
#define SCHED_EXPIRY_PAGE	512
#define SCHED_MAX_RETRY_S	3600
#define SCHED_BACKOFF_SLOTS	256

/* A key whose last rotation attempt failed: not retried before retry_at.
 * Kept in memory only; a restart retries at once, which is harmless. */
struct backoff {
	int64_t key_id;
	int64_t due_at;		/* the next_rotation_at that failed */
	int64_t retry_at;
	unsigned failures;
};

struct sched {
	struct api_ctx *ctx;
	struct sched_config cfg;
	struct sched_clock clock;
	int64_t next_expiry_check;
	struct backoff backoff[SCHED_BACKOFF_SLOTS];
};

static int64_t
wall_clock(void *arg)
{
	(void)arg;
	return km_now_us();
}

int
sched_new(struct api_ctx *ctx, const struct sched_config *cfg,
    const struct sched_clock *clock, struct sched **out)
{
	struct sched *s;

	*out = NULL;
	if (ctx == NULL || ctx->store == NULL || ctx->audit == NULL ||
	    cfg->jitter_seconds < 0 || cfg->expiry_check_seconds < 0 ||
	    cfg->retry_seconds < 0)
		return KM_ERR_INVALID_REQUEST;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return KM_ERR_NOMEM;
	s->ctx = ctx;
	s->cfg = *cfg;
	if (s->cfg.max_rotations_per_tick == 0)
		s->cfg.max_rotations_per_tick = 1;
	if (clock != NULL && clock->now_us != NULL)
		s->clock = *clock;
	else
		s->clock.now_us = wall_clock;
	*out = s;
	return KM_OK;
}

void
sched_free(struct sched *s)
{
	free(s);
}

const char *
sched_threshold_name(int64_t threshold)
{
	switch (threshold) {
	case SCHED_EXPIRY_30D: return "30d";
	case SCHED_EXPIRY_7D: return "7d";
	case SCHED_EXPIRY_1D: return "1d";
	case 0: return "0d";
	default: return "other";
	}
}

int64_t
sched_jitter_us(const struct sched *s, const char *name,
    int64_t next_rotation_at, int64_t rotation_period)
{
	uint64_t h = 14695981039346656037ULL, span;
	int64_t max_s = s->cfg.jitter_seconds;
	size_t i;

	if (rotation_period / 10 < max_s)
		max_s = rotation_period / 10;
	if (max_s <= 0)
		return 0;
	/* FNV-1a over the name and the due time: stable across restarts and
	 * equal on every instance, so no state is needed for it. */
	for (i = 0; name[i] != '\0'; i++)
		h = (h ^ (unsigned char)name[i]) * 1099511628211ULL;
	for (i = 0; i < 8; i++)
		h = (h ^ (((uint64_t)next_rotation_at >> (8 * i)) & 0xff)) *
		    1099511628211ULL;
	span = (uint64_t)max_s * 1000000u;
	return (int64_t)(h % span);
}

static struct backoff *
backoff_find(struct sched *s, int64_t key_id)
{
	size_t i;

	for (i = 0; i < SCHED_BACKOFF_SLOTS; i++)
		if (s->backoff[i].key_id == key_id)
			return &s->backoff[i];
	return NULL;
}

/* Records a failure of key_id's rotation due at due_at. When the table is
 * full the oldest retry is forgotten (that key is retried early). */
static void
backoff_note(struct sched *s, int64_t key_id, int64_t due_at, int64_t now)
{
	struct backoff *b = backoff_find(s, key_id), *victim = NULL;
	int64_t wait;
	size_t i;

	if (b == NULL) {
		for (i = 0; i < SCHED_BACKOFF_SLOTS && b == NULL; i++) {
			if (s->backoff[i].key_id == 0)
				b = &s->backoff[i];
			else if (victim == NULL ||
			    s->backoff[i].retry_at < victim->retry_at)
				victim = &s->backoff[i];
		}
		if (b == NULL)
			b = victim;
		memset(b, 0, sizeof(*b));
		b->key_id = key_id;
	}
	if (b->due_at != due_at) {
		b->due_at = due_at;
		b->failures = 0;
	}
	b->failures++;
	wait = s->cfg.retry_seconds > 0 ? s->cfg.retry_seconds : 1;
	for (i = 1; i < b->failures && wait < SCHED_MAX_RETRY_S; i++)
		wait *= 2;
	if (wait > SCHED_MAX_RETRY_S)
		wait = SCHED_MAX_RETRY_S;
	b->retry_at = now + wait * 1000000;
}

static void
backoff_clear(struct sched *s, int64_t key_id)
{
	struct backoff *b = backoff_find(s, key_id);

	if (b != NULL)
		memset(b, 0, sizeof(*b));
}

/* A new audit record of the scheduler: request_id, actor, op, outcome and
 * status 0 (no HTTP request), key, version (null until known). */
static json_t *
record_new(const char *op, const char *outcome, const char *key)
{
	unsigned char rid[16];
	char rid_hex[33];

	if (km_random(rid, sizeof(rid)) != KM_OK)
		return NULL;
	km_hex(rid, sizeof(rid), rid_hex);
	return json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:n}", "request_id",
	    rid_hex, "actor", SCHED_ACTOR, "op", op, "outcome", outcome,
	    "status", 0, "key", key, "version");
}

static json_t *
time_json(int64_t us)
{
	char ts[40];

	if (us == 0)
		return json_null();
	km_time_format(us, 0, ts, sizeof(ts));
	return json_string(ts);
}

/* Appends `rec` (consumed) to the audit log. */
static int
record_write(struct sched *s, json_t *rec)
{
	int r;

	if (rec == NULL)
		return KM_ERR_NOMEM;
	r = audit_append(s->ctx->audit, rec, NULL);
	json_decref(rec);
	return r;
}

struct rotate_hook_arg {
	struct sched *s;
	const struct store_sched_key *k;
	const struct store_version *v;
	int64_t next;
};

/* Inside the rotation's transaction: the version number is assigned, so
 * the record names it; the rotation commits only if this is durable. */
static int
rotate_hook(void *arg)
{
	struct rotate_hook_arg *ra = arg;
	json_t *rec = record_new("key.rotate", "ok", ra->k->name);

	if (rec == NULL)
		return KM_ERR_NOMEM;
	json_object_set_new(rec, "version", json_integer(ra->v->version));
	json_object_set_new(rec, "previous_version", ra->k->primary_version ?
	    json_integer(ra->k->primary_version) : json_null());
	json_object_set_new(rec, "mek_version", json_integer(ra->v->mek_version));
	json_object_set_new(rec, "scheduled", json_true());
	json_object_set_new(rec, "due_at", time_json(ra->k->next_rotation_at));
	json_object_set_new(rec, "next_rotation_at", time_json(ra->next));
	return record_write(ra->s, rec);
}

struct failure_hook_arg {
	struct sched *s;
	json_t *rec;		/* the failure's record, written by the hook */
	int written;
};

static int
failure_hook(void *arg)
{
	struct failure_hook_arg *fa = arg;
	int r;

	json_object_set_new(fa->rec, "alert", json_string("rotation_failed"));
	if ((r = audit_append(fa->s->ctx->audit, fa->rec, NULL)) == KM_OK)
		fa->written = 1;
	return r;
}

/* Audits and counts a failed rotation; the first failure of a due slot
 * also raises a rotation_failed alert (committed with the record). */
static void
rotation_failed(struct sched *s, const struct store_sched_key *k, int64_t now,
    km_err err, const char *why)
{
	struct failure_hook_arg fa = { s, NULL, 0 };
	struct store_alert a;
	int r;

	log_warn("scheduler: rotating %s failed: %s (%s)", k->name,
	    why != NULL ? why : km_strerror(err), km_strerror(err));
	metrics_rotation(s->ctx->metrics, "failed");
	backoff_note(s, k->key_id, k->next_rotation_at, now);
	if ((fa.rec = record_new("key.rotate", "error", k->name)) == NULL)
		goto out;
	json_object_set_new(fa.rec, "previous_version", k->primary_version ?
	    json_integer(k->primary_version) : json_null());
	json_object_set_new(fa.rec, "scheduled", json_true());
	json_object_set_new(fa.rec, "due_at", time_json(k->next_rotation_at));
	json_object_set_new(fa.rec, "error", json_string(api_err_code(err)));
	json_object_set_new(fa.rec, "message", json_string(why != NULL ? why :
	    km_strerror(err)));
	memset(&a, 0, sizeof(a));
	a.key_id = k->key_id;
	snprintf(a.kind, sizeof(a.kind), "rotation_failed");
	a.ref_at = k->next_rotation_at;
	a.raised_at = now;
	snprintf(a.detail, sizeof(a.detail), "%s", api_err_code(err));
	r = store_alert_add(s->ctx->store, &a, failure_hook, &fa);
	if (r == KM_OK) {
		metrics_alert(s->ctx->metrics, "rotation_failed", 0);
		goto out;
	}
	if (fa.written)
		goto out;
	/* Raised already for this slot, or the store is what failed: the
	 * attempt is still recorded. */
	json_object_del(fa.rec, "alert");
	if ((r = audit_append(s->ctx->audit, fa.rec, NULL)) != KM_OK)
		log_error("scheduler: cannot audit the failed rotation of %s: %s",
		    k->name, km_strerror(r));
out:
	json_decref(fa.rec);
}

/* Rotates `k` if it is still as listed. Returns 1 when it rotated. */
static int
rotate_one(struct sched *s, const struct store_sched_key *k, int64_t now,
    struct sched_result *res)
{
	struct store_version v;
	struct rotate_hook_arg ra;
	const char *why = NULL;
	int64_t next;
	int r, done = 0;

	memset(&v, 0, sizeof(v));
	if ((r = api_key_new_version(s->ctx, k->type, now, &v, &why)) != KM_OK) {
		rotation_failed(s, k, now, r, why);
		res->failed++;
		goto out;
	}
	next = now + k->rotation_period * 1000000;
	ra.s = s;
	ra.k = k;
	ra.v = &v;
	ra.next = next;
	/* The due check and the rotation are one transaction keyed on what
	 * was listed: a second instance, an admin's rotate or a run before a
	 * restart that committed already make this a no-op. */
	r = store_key_rotate_if(s->ctx->store, k->name, k->primary_version,
	    k->next_rotation_at, &v, next, rotate_hook, &ra);
	/* Names a version kept on the token, or removes it when nothing
	 * committed; announces a new signing version to the JWKS. */
	api_key_version_settle(s->ctx, k->name, &v, r == KM_OK);
	if (r == KM_ERR_INVALID_TRANSITION) {
		log_info("scheduler: %s was rotated by someone else", k->name);
		metrics_rotation(s->ctx->metrics, "lost_race");
		res->lost_race++;
		goto out;
	}
	if (r != KM_OK) {
		rotation_failed(s, k, now, r, "the rotation was not committed");
		res->failed++;
		goto out;
	}
	log_info("scheduler: rotated %s to version %u (next %lld s)", k->name,
	    v.version, (long long)k->rotation_period);
	backoff_clear(s, k->key_id);
	metrics_rotation(s->ctx->metrics, "ok");
	res->rotated++;
	done = 1;
out:
	km_secure_free(v.wrapped, v.wrapped_len);
	free(v.public_key);
	return done;
}

static int
rotate_due(struct sched *s, int64_t now, struct sched_result *res)
{
	struct store_sched_key *due = NULL;
	struct backoff *b;
	size_t n = 0, i, limit = s->cfg.max_rotations_per_tick;
	int r;

	if ((r = store_keys_due(s->ctx->store, now, limit * SCHED_DUE_FACTOR,
	    &due, &n)) != KM_OK) {
		log_warn("scheduler: cannot list due keys: %s", km_strerror(r));
		goto out;
	}
	for (i = 0; i < n && res->rotated + res->failed < limit; i++) {
		const struct store_sched_key *k = &due[i];

		if (k->rotation_period <= 0)
			continue;
		if (now < k->next_rotation_at + sched_jitter_us(s, k->name,
		    k->next_rotation_at, k->rotation_period)) {
			res->deferred++;
			continue;
		}
		if ((b = backoff_find(s, k->key_id)) != NULL &&
		    b->due_at == k->next_rotation_at && now < b->retry_at) {
			res->deferred++;
			continue;
		}
		rotate_one(s, k, now, res);
	}
	r = KM_OK;
out:
	free(due);
	return r;
}

struct expiry_hook_arg {
	struct sched *s;
	const struct store_expiring *e;
};

static int
expiry_hook(void *arg)
{
	struct expiry_hook_arg *ea = arg;
	const struct store_expiring *e = ea->e;
	json_t *rec = record_new("key.alert", "ok", e->name);

	if (rec == NULL)
		return KM_ERR_NOMEM;
	json_object_set_new(rec, "kind", json_string(e->threshold == 0 ?
	    "expired" : "expiry"));
	json_object_set_new(rec, "threshold",
	    json_string(sched_threshold_name(e->threshold)));
	json_object_set_new(rec, "expires_at", time_json(e->expires_at));
	return record_write(ea->s, rec);
}

static int
check_expiry(struct sched *s, int64_t now, struct sched_result *res)
{
	struct store_expiring *list = NULL;
	struct expiry_hook_arg ea;
	struct store_alert a;
	size_t n = 0, i;
	int r;

	if ((r = store_keys_expiring(s->ctx->store, now, SCHED_EXPIRY_1D,
	    SCHED_EXPIRY_7D, SCHED_EXPIRY_30D, SCHED_EXPIRY_PAGE, &list,
	    &n)) != KM_OK) {
		log_warn("scheduler: cannot list expiring keys: %s",
		    km_strerror(r));
		goto out;
	}
	for (i = 0; i < n; i++) {
		memset(&a, 0, sizeof(a));
		a.key_id = list[i].key_id;
		snprintf(a.kind, sizeof(a.kind), "%s", list[i].threshold == 0 ?
		    "expired" : "expiry");
		a.threshold = list[i].threshold;
		a.ref_at = list[i].expires_at;
		a.raised_at = now;
		ea.s = s;
		ea.e = &list[i];
		r = store_alert_add(s->ctx->store, &a, expiry_hook, &ea);
		if (r == KM_ERR_KEY_EXISTS)
			continue;	/* another instance raised it */
		if (r != KM_OK) {
			log_warn("scheduler: cannot raise the %s alert of %s: %s",
			    sched_threshold_name(a.threshold), list[i].name,
			    km_strerror(r));
			continue;
		}
		log_warn("scheduler: key %s %s", list[i].name, a.threshold == 0 ?
		    "has expired" : "expires soon");
		metrics_alert(s->ctx->metrics, a.kind, a.threshold);
		res->alerts++;
	}
	/* A full page: look again at the next tick instead of waiting. */
	s->next_expiry_check = n == SCHED_EXPIRY_PAGE ? now :
	    now + s->cfg.expiry_check_seconds * 1000000;
	r = KM_OK;
out:
	free(list);
	return r;
}

int
sched_tick(struct sched *s, struct sched_result *res)
{
	struct sched_result local;
	int64_t now = s->clock.now_us(s->clock.arg);
	int r;

	if (res == NULL)
		res = &local;
	memset(res, 0, sizeof(*res));
	if ((r = rotate_due(s, now, res)) != KM_OK)
		goto out;
	if (now >= s->next_expiry_check &&
	    (r = check_expiry(s, now, res)) != KM_OK)
		goto out;
	r = KM_OK;
out:
	metrics_scheduler_run(s->ctx->metrics, now);
	return r;
}
