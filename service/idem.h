/* Idempotency keys: the stored answer of a request sent with an
 * Idempotency-Key header, so that a client that lost the answer can send
 * the same request again and get the same answer without a second
 * execution (store migration 4; docs/API.md "Idempotency-Key"). */
#ifndef IDEM_H
#define IDEM_H

#include <stddef.h>
#include <stdint.h>

#include "km.h"
#include "store.h"

/* Longest key; keys are 1..IDEM_MAX_KEY of [A-Za-z0-9._:-]. */
#define IDEM_MAX_KEY	128

/* What idem_begin found for (actor, key). */
enum idem_state {
	IDEM_NEW = 1,		/* recorded as running: execute, then finish */
	IDEM_REPLAY,		/* done before: answer with the stored answer */
	IDEM_IN_PROGRESS,	/* another request with this key is running */
	IDEM_MISMATCH,		/* the key was used for a different request */
};

/* The stored answer of a finished request. */
struct idem_entry {
	int status;
	char *answer;			/* owned JSON text, or NULL */
	char request_id[33];		/* the request that executed it */
	int64_t created_at;		/* microseconds */
};

/* 1 when `key` is 1..IDEM_MAX_KEY characters of [A-Za-z0-9._:-]. */
int idem_key_valid(const char *key);

/* SHA-256 over method, path and body, the identity of a request. */
int idem_request_hash(const char *method, const char *path,
    const unsigned char *body, size_t body_len, unsigned char out[32]) KM_WUR;

/* Looks up (actor, key) in one write transaction; an entry created before
 * now_us - ttl_us counts as absent and is deleted, and a few other expired
 * entries go with it. Absent: inserts a running entry for `request_id`
 * and *state is IDEM_NEW. Present with another hash: IDEM_MISMATCH;
 * running: IDEM_IN_PROGRESS; done: IDEM_REPLAY with *e filled (the
 * caller clears it with idem_entry_clear). */
int idem_begin(struct store *st, const char *actor, const char *key,
    const unsigned char hash[32], const char *request_id, int64_t now_us,
    int64_t ttl_us, enum idem_state *state, struct idem_entry *e) KM_WUR;

/* Stores the answer of the running entry (actor, key); `hook` runs before
 * the commit (kmsd writes the audit record there). KM_ERR_NOT_FOUND when
 * the entry is no longer running. */
int idem_finish(struct store *st, const char *actor, const char *key,
    int status, const char *answer, store_commit_hook hook, void *arg) KM_WUR;

/* Deletes the running entry (actor, key): the request failed and may be
 * executed again. */
int idem_abandon(struct store *st, const char *actor, const char *key) KM_WUR;

/* Deletes every running entry: at start-up none can still be running. */
int idem_clear_running(struct store *st) KM_WUR;

void idem_entry_clear(struct idem_entry *e);

#endif
