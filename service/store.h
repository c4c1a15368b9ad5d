/* Metadata store: keys, key versions, MEK versions and API tokens in SQLite.
 * Never holds plaintext key material: named-key secrets are stored only
 * wrapped under an MEK version, tokens only as SHA-256 hashes. */
#ifndef STORE_H
#define STORE_H

#include <stddef.h>
#include <stdint.h>

#include "km.h"

struct store;

/* Key version states, DESIGN.md section 3. */
enum km_state {
	KM_STATE_PRIMARY = 1,
	KM_STATE_ACTIVE,
	KM_STATE_RETIRED,
	KM_STATE_ARCHIVED,
	KM_STATE_REVOKED,
	KM_STATE_DESTROYED,
};

const char *km_state_name(enum km_state s);
/* KM_ERR_INVALID_REQUEST for an unknown name. */
int km_state_parse(const char *name, enum km_state *out) KM_WUR;

/* Where a version's secret lives. */
enum store_storage {
	STORE_WRAPPED = 1,	/* `wrapped` holds the secret under MEK `mek_version` */
	STORE_TOKEN = 2,	/* a token object labelled kms-<key>-v<N> */
};

struct store_version {
	uint32_t version;
	enum km_state state;
	int64_t created_at;		/* microseconds since the epoch */
	uint32_t mek_version;
	enum store_storage storage;
	unsigned char *wrapped;		/* owned; NULL when storage is TOKEN */
	size_t wrapped_len;
	unsigned char *public_key;	/* DER SubjectPublicKeyInfo or NULL */
	size_t public_key_len;
	int64_t last_used_at;		/* microseconds; 0 = never */
	uint64_t use_count;
};

struct store_key {
	int64_t id;
	char name[129];
	char type[16];			/* "aes256-gcm", "ec-p256", ... */
	char purpose[16];		/* "encrypt" or "sign" */
	uint32_t primary_version;	/* 0 = no primary */
	int64_t rotation_period;	/* seconds; 0 = none */
	int64_t next_rotation_at;	/* microseconds; 0 = none */
	int64_t expires_at;		/* microseconds; 0 = none */
	int64_t created_at;		/* microseconds */
	char **required_context;	/* owned strings */
	size_t n_required;
	struct store_version *versions;	/* owned, sorted by version */
	size_t n_versions;
};

struct store_token {
	char id[17];			/* 16 lower-case hex digits */
	unsigned char hash[32];		/* SHA-256 of the secret part */
	char role[16];			/* "app", "admin", "auditor", "officer" */
	char *keys;			/* owned; NULL unless role is app */
	char *description;		/* owned; may be NULL */
	int64_t created_at;		/* microseconds */
	int64_t expires_at;		/* microseconds; 0 = never */
	int64_t revoked_at;		/* microseconds; 0 = not revoked */
};

/* One usage delta, flushed periodically from memory (see store_usage_flush). */
struct store_usage {
	int64_t key_id;
	uint32_t version;
	uint64_t uses;
	int64_t last_used_at;
};

/* Runs inside the write transaction just before COMMIT. A non-zero return
 * rolls the transaction back and becomes the caller's return value. kmsd
 * writes the audit record here, so no state change commits without its
 * durable record. A hook must not call back into the store. */
typedef int (*store_commit_hook)(void *arg);

/* Opens (creating if needed) the database at `path`, with WAL, synchronous
 * FULL, a busy timeout, and all schema migrations applied. */
int store_open(const char *path, struct store **out) KM_WUR;
void store_free(struct store *st);
/* KM_OK when the database answers a read and can take a write lock. */
int store_check(struct store *st) KM_WUR;
/* Schema version after migrations. */
int store_schema_version(struct store *st);

/* For a module with tables of its own (ceremony/cer_store.c): runs `fn` on
 * the writer connection inside BEGIN IMMEDIATE, under the writer lock; when
 * fn returns KM_OK the hook runs and the transaction commits, otherwise it
 * rolls back. fn prepares and finalizes its own statements and must not
 * call other store functions. Returns fn's, the hook's or COMMIT's error. */
struct sqlite3;
int store_write_tx(struct store *st, int (*fn)(struct sqlite3 *db, void *arg),
    void *arg, store_commit_hook hook, void *harg) KM_WUR;
/* Runs `fn` inside one read transaction on a read-only connection (one
 * snapshot for all its queries). Returns fn's result. */
int store_read_tx(struct store *st, int (*fn)(struct sqlite3 *db, void *arg),
    void *arg) KM_WUR;
/* Column readers for such an fn: a TEXT column as a new string (NULL for
 * NULL), a BLOB column as a new buffer (NULL, 0 for NULL or empty).
 * KM_OK or KM_ERR_NOMEM. */
struct sqlite3_stmt;
int store_col_text_dup(struct sqlite3_stmt *s, int col, char **out) KM_WUR;
int store_col_blob(struct sqlite3_stmt *s, int col, unsigned char **out,
    size_t *len) KM_WUR;
/* After key material was erased outside store_version_set_state: truncates
 * the WAL so old page images of the blob go (best effort). */
void store_wal_scrub(struct store *st);

void store_key_free(struct store_key *k);
void store_token_free(struct store_token *t);

/* Inserts `key` with its versions. KM_ERR_KEY_EXISTS if the name is taken.
 * On success key->id is set. */
int store_key_create(struct store *st, struct store_key *key,
    store_commit_hook hook, void *arg) KM_WUR;
/* KM_ERR_KEY_NOT_FOUND when absent. *out is owned by the caller. */
int store_key_get(struct store *st, const char *name, struct store_key **out) KM_WUR;
/* Keys with name > `after` (NULL: from the start), in name order, that
 * `match` accepts (NULL: all), at most `limit`. *out is an array of
 * *n keys; free each with store_key_free and the array with free(). */
int store_key_list(struct store *st, const char *after, size_t limit,
    int (*match)(const char *name, void *arg), void *match_arg,
    struct store_key ***out, size_t *n) KM_WUR;
/* Adds `nv` as the new primary version of `name`: assigns nv->version
 * (max existing + 1) before the hook runs, turns the previous primary (if
 * any) into active, and sets next_rotation_at. */
int store_key_rotate(struct store *st, const char *name,
    struct store_version *nv, int64_t next_rotation_at,
    store_commit_hook hook, void *arg) KM_WUR;
/* Sets the rotation schedule and expiry of key `name` (0: none for each).
 * KM_ERR_KEY_NOT_FOUND when absent. */
int store_key_set_config(struct store *st, const char *name,
    int64_t rotation_period, int64_t next_rotation_at, int64_t expires_at,
    store_commit_hook hook, void *arg) KM_WUR;
/* Moves `version` of `name` from `from` to `to` atomically: if its state is
 * no longer `from`, KM_ERR_INVALID_TRANSITION. Leaving primary clears the
 * key's primary_version. KM_ERR_KEY_NOT_FOUND / KM_ERR_VERSION_NOT_FOUND. */
int store_version_set_state(struct store *st, const char *name,
    uint32_t version, enum km_state from, enum km_state to,
    store_commit_hook hook, void *arg) KM_WUR;
/* Adds uses and raises last_used_at for each entry, in one transaction. */
int store_usage_flush(struct store *st, const struct store_usage *u,
    size_t n) KM_WUR;

/* Records MEK version `version` (created in the token already). */
int store_mek_add(struct store *st, uint32_t version, int64_t created_at,
    store_commit_hook hook, void *arg) KM_WUR;
/* Highest MEK version; KM_ERR_NOT_FOUND when there is none. */
int store_mek_current(struct store *st, uint32_t *version) KM_WUR;

/* KM_ERR_INVALID_REQUEST if the id exists. */
int store_token_create(struct store *st, const struct store_token *t,
    store_commit_hook hook, void *arg) KM_WUR;
/* KM_ERR_TOKEN_NOT_FOUND when absent. */
int store_token_get(struct store *st, const char *id,
    struct store_token **out) KM_WUR;
int store_token_list(struct store *st, struct store_token ***out,
    size_t *n) KM_WUR;
/* Sets revoked_at; KM_ERR_TOKEN_NOT_FOUND when absent or already revoked. */
int store_token_revoke(struct store *st, const char *id, int64_t at,
    store_commit_hook hook, void *arg) KM_WUR;

/* ---- Scheduler, alerts and metrics (service/scheduler.c, metrics.c) ---- */

/* Like store_key_rotate, but only while the key is as the caller saw it:
 * its primary_version is `expect_primary` and its next_rotation_at is
 * `expect_next` (0 = none), read under the write lock in the same
 * transaction as the rotation. KM_ERR_INVALID_TRANSITION when either moved
 * (another instance, an admin or an earlier run rotated it first): nothing
 * is written and the hook does not run. */
int store_key_rotate_if(struct store *st, const char *name,
    uint32_t expect_primary, int64_t expect_next, struct store_version *nv,
    int64_t next_rotation_at, store_commit_hook hook, void *arg) KM_WUR;

/* A key with a rotation schedule, as the scheduler and metrics see it. */
struct store_sched_key {
	int64_t key_id;
	char name[129];
	char type[16];
	uint32_t primary_version;	/* 0 = none */
	int64_t rotation_period;	/* seconds */
	int64_t next_rotation_at;	/* microseconds; 0 = none */
	int64_t expires_at;		/* microseconds; 0 = none */
	int64_t primary_created_at;	/* microseconds; 0 = no primary */
};

/* Keys whose next_rotation_at is set and <= `before`, soonest first, at
 * most `limit`. *out (free()) holds *n entries. */
int store_keys_due(struct store *st, int64_t before, size_t limit,
    struct store_sched_key **out, size_t *n) KM_WUR;
/* Keys with a rotation schedule (by_expiry 0: next_rotation_at set, soonest
 * first) or an expiry (by_expiry 1: expires_at set, soonest first), at
 * most `limit`; for the per-key gauges of /metrics. */
int store_keys_scheduled(struct store *st, int by_expiry, size_t limit,
    struct store_sched_key **out, size_t *n) KM_WUR;

/* Expiry thresholds, DESIGN.md section 3. */
struct store_expiring {
	int64_t key_id;
	char name[129];
	int64_t expires_at;		/* microseconds */
	int64_t threshold;		/* seconds: the tightest one crossed */
};

/* Keys whose tightest crossed expiry threshold has no alert yet. The
 * thresholds are t1 < t2 < t3 seconds before expires_at, plus 0 (expired):
 * a key expiring at E has crossed threshold T at `now` when E - now <= T.
 * Soonest first, at most `limit`. */
int store_keys_expiring(struct store *st, int64_t now, int64_t t1, int64_t t2,
    int64_t t3, size_t limit, struct store_expiring **out, size_t *n) KM_WUR;

/* A raised alert. Alerts are raised once: (key, kind, threshold, ref_at)
 * is unique. */
struct store_alert {
	int64_t id;			/* assigned on insert, increasing */
	int64_t key_id;
	char key[129];			/* filled by store_alert_list */
	char kind[32];			/* "expiry", "expired", "rotation_failed" */
	int64_t threshold;		/* seconds before ref_at; 0 for others */
	int64_t ref_at;			/* expires_at, or the missed next_rotation_at */
	int64_t raised_at;		/* microseconds */
	char detail[128];		/* an error code, or "" */
};

/* Records `a` (a->id is set). KM_ERR_KEY_EXISTS when that alert was raised
 * already: nothing is written and the hook does not run. */
int store_alert_add(struct store *st, struct store_alert *a,
    store_commit_hook hook, void *arg) KM_WUR;
/* Alerts with id > `after`, oldest first, at most `limit`; only those of
 * key `key` when it is not NULL. *out (free()) holds *n entries. */
int store_alert_list(struct store *st, int64_t after, const char *key,
    size_t limit, struct store_alert **out, size_t *n) KM_WUR;

/* Versions per state over every key, and the sum of their use counters. */
struct store_state_stats {
	uint64_t versions[KM_STATE_DESTROYED + 1];	/* index: enum km_state */
	uint64_t uses[KM_STATE_DESTROYED + 1];
	uint64_t keys;
};
int store_state_stats(struct store *st, struct store_state_stats *out) KM_WUR;

/* One version of a key that is mid-rotation (has active or retired
 * versions): the old-key-usage signal. */
struct store_version_use {
	int64_t key_id;
	char name[129];
	uint32_t version;
	enum km_state state;
	uint64_t use_count;
	int64_t last_used_at;		/* microseconds; 0 = never */
	int64_t created_at;		/* microseconds */
};
/* Every primary, active and retired version of the (at most `max_keys`)
 * keys that have active or retired versions, most recently used old
 * version first; rows sorted by key name, version. */
int store_version_uses(struct store *st, size_t max_keys,
    struct store_version_use **out, size_t *n) KM_WUR;

#endif
