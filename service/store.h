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

#endif
