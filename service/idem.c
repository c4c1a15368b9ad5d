/* Idempotency keys on SQLite (table idempotency_keys, store migration 4). */
#include "idem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <sqlite3.h>

#include "log.h"

/* Expired entries deleted per idem_begin besides the one looked up: the
 * table shrinks as fast as it grows without a long write transaction. */
#define IDEM_PRUNE	64

static int
db_err(sqlite3 *db, int rc, const char *what)
{
	log_error("idempotency keys: %s: %s (%s)", what, sqlite3_errmsg(db),
	    sqlite3_errstr(rc));
	return (rc & 0xff) == SQLITE_NOMEM ? KM_ERR_NOMEM : KM_ERR_STORE;
}

int
idem_key_valid(const char *key)
{
	size_t i, n = key != NULL ? strlen(key) : 0;

	if (n == 0 || n > IDEM_MAX_KEY)
		return 0;
	for (i = 0; i < n; i++) {
		char c = key[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
		    c == '-'))
			return 0;
	}
	return 1;
}

int
idem_request_hash(const char *method, const char *path,
    const unsigned char *body, size_t body_len, unsigned char out[32])
{
	EVP_MD_CTX *md = NULL;
	unsigned int len = 0;
	int r = KM_ERR_INTERNAL;

	/* NUL separators: a method or path never holds one. */
	if ((md = EVP_MD_CTX_new()) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(md, method, strlen(method) + 1) != 1 ||
	    EVP_DigestUpdate(md, path, strlen(path) + 1) != 1 ||
	    (body_len > 0 && EVP_DigestUpdate(md, body, body_len) != 1) ||
	    EVP_DigestFinal_ex(md, out, &len) != 1 || len != 32) {
		log_error("idempotency keys: SHA-256 of the request failed");
		goto out;
	}
	r = KM_OK;
out:
	EVP_MD_CTX_free(md);
	return r;
}

/* Prepares `sql` with (actor, key) bound as ?1, ?2. */
static int
prep(sqlite3 *db, const char *sql, const char *actor, const char *key,
    sqlite3_stmt **s)
{
	int rc;

	*s = NULL;
	if ((rc = sqlite3_prepare_v2(db, sql, -1, s, NULL)) != SQLITE_OK ||
	    (rc = sqlite3_bind_text(*s, 1, actor, -1, SQLITE_STATIC)) !=
	    SQLITE_OK || (rc = sqlite3_bind_text(*s, 2, key, -1,
	    SQLITE_STATIC)) != SQLITE_OK)
		return db_err(db, rc, sql);
	return KM_OK;
}

/* Steps a statement that returns no rows, then finalizes it. */
static int
run(sqlite3 *db, sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);
	int r = rc == SQLITE_DONE ? KM_OK : db_err(db, rc, sqlite3_sql(s));

	(void)sqlite3_finalize(s);	/* repeats the step's error, handled */
	return r;
}

struct begin_args {
	const char *actor, *key, *request_id;
	const unsigned char *hash;
	int64_t now, cutoff;
	enum idem_state state;
	struct idem_entry *e;
};

static int
begin_prune(sqlite3 *db, struct begin_args *a)
{
	sqlite3_stmt *s = NULL;
	int r, rc;

	if ((r = prep(db, "DELETE FROM idempotency_keys WHERE actor = ?1 AND"
	    " idem_key = ?2 AND created_at < ?3", a->actor, a->key, &s)) !=
	    KM_OK)
		goto fail;
	if ((rc = sqlite3_bind_int64(s, 3, a->cutoff)) != SQLITE_OK) {
		r = db_err(db, rc, "binding the expiry");
		goto fail;
	}
	if ((r = run(db, s)) != KM_OK)
		return r;
	s = NULL;
	if ((rc = sqlite3_prepare_v2(db, "DELETE FROM idempotency_keys WHERE"
	    " rowid IN (SELECT rowid FROM idempotency_keys WHERE created_at < ?1"
	    " ORDER BY created_at LIMIT ?2)", -1, &s, NULL)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 1, a->cutoff)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int(s, 2, IDEM_PRUNE)) != SQLITE_OK) {
		r = db_err(db, rc, "pruning expired idempotency keys");
		goto fail;
	}
	return run(db, s);
fail:
	(void)sqlite3_finalize(s);
	return r;
}

static int
begin_tx(sqlite3 *db, void *arg)
{
	struct begin_args *a = arg;
	sqlite3_stmt *s = NULL;
	const void *h;
	const unsigned char *t;
	int r, rc;

	if ((r = begin_prune(db, a)) != KM_OK)
		return r;
	if ((r = prep(db, "SELECT request_sha256, status, answer, request_id,"
	    " created_at FROM idempotency_keys WHERE actor = ?1 AND"
	    " idem_key = ?2", a->actor, a->key, &s)) != KM_OK)
		goto out;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		h = sqlite3_column_blob(s, 0);
		if (sqlite3_column_bytes(s, 0) != 32 || h == NULL ||
		    memcmp(h, a->hash, 32) != 0) {
			a->state = IDEM_MISMATCH;
		} else if (sqlite3_column_type(s, 1) == SQLITE_NULL) {
			a->state = IDEM_IN_PROGRESS;
		} else {
			a->state = IDEM_REPLAY;
			a->e->status = sqlite3_column_int(s, 1);
			t = sqlite3_column_text(s, 2);
			if (t != NULL && (a->e->answer = strdup((const char *)t)) ==
			    NULL) {
				r = KM_ERR_NOMEM;
				goto out;
			}
			t = sqlite3_column_text(s, 3);
			snprintf(a->e->request_id, sizeof(a->e->request_id), "%s",
			    t != NULL ? (const char *)t : "");
			a->e->created_at = sqlite3_column_int64(s, 4);
		}
		r = KM_OK;
		goto out;
	}
	if (rc != SQLITE_DONE) {
		r = db_err(db, rc, "reading an idempotency key");
		goto out;
	}
	(void)sqlite3_finalize(s);
	if ((r = prep(db, "INSERT INTO idempotency_keys (actor, idem_key,"
	    " request_sha256, request_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
	    a->actor, a->key, &s)) != KM_OK)
		goto out;
	if ((rc = sqlite3_bind_blob(s, 3, a->hash, 32, SQLITE_STATIC)) !=
	    SQLITE_OK || (rc = sqlite3_bind_text(s, 4, a->request_id, -1,
	    SQLITE_STATIC)) != SQLITE_OK || (rc = sqlite3_bind_int64(s, 5,
	    a->now)) != SQLITE_OK) {
		r = db_err(db, rc, "recording an idempotency key");
		goto out;
	}
	r = run(db, s);
	s = NULL;
	if (r == KM_OK)
		a->state = IDEM_NEW;
out:
	(void)sqlite3_finalize(s);
	return r;
}

int
idem_begin(struct store *st, const char *actor, const char *key,
    const unsigned char hash[32], const char *request_id, int64_t now_us,
    int64_t ttl_us, enum idem_state *state, struct idem_entry *e)
{
	struct begin_args a;
	int r;

	memset(e, 0, sizeof(*e));
	*state = 0;
	memset(&a, 0, sizeof(a));
	a.actor = actor;
	a.key = key;
	a.request_id = request_id;
	a.hash = hash;
	a.now = now_us;
	a.cutoff = now_us - ttl_us;
	a.e = e;
	if ((r = store_write_tx(st, begin_tx, &a, NULL, NULL)) != KM_OK) {
		idem_entry_clear(e);
		return r;
	}
	*state = a.state;
	return KM_OK;
}

struct finish_args {
	const char *actor, *key, *answer;
	int status;
};

static int
finish_tx(sqlite3 *db, void *arg)
{
	struct finish_args *a = arg;
	sqlite3_stmt *s = NULL;
	int r, rc;

	if ((r = prep(db, "UPDATE idempotency_keys SET status = ?3, answer = ?4"
	    " WHERE actor = ?1 AND idem_key = ?2 AND status IS NULL", a->actor,
	    a->key, &s)) != KM_OK)
		goto fail;
	if ((rc = sqlite3_bind_int(s, 3, a->status)) != SQLITE_OK ||
	    (rc = sqlite3_bind_text(s, 4, a->answer, -1, SQLITE_STATIC)) !=
	    SQLITE_OK) {
		r = db_err(db, rc, "storing an answer");
		goto fail;
	}
	if ((r = run(db, s)) != KM_OK)
		return r;
	return sqlite3_changes(db) == 1 ? KM_OK : KM_ERR_NOT_FOUND;
fail:
	(void)sqlite3_finalize(s);
	return r;
}

int
idem_finish(struct store *st, const char *actor, const char *key, int status,
    const char *answer, store_commit_hook hook, void *arg)
{
	struct finish_args a = { actor, key, answer, status };

	return store_write_tx(st, finish_tx, &a, hook, arg);
}

struct abandon_args {
	const char *actor, *key;
};

static int
abandon_tx(sqlite3 *db, void *arg)
{
	struct abandon_args *a = arg;
	sqlite3_stmt *s = NULL;
	int r;

	if (a->actor == NULL) {
		r = sqlite3_prepare_v2(db, "DELETE FROM idempotency_keys WHERE"
		    " status IS NULL", -1, &s, NULL);
		if (r != SQLITE_OK) {
			(void)sqlite3_finalize(s);
			return db_err(db, r, "clearing running idempotency keys");
		}
		return run(db, s);
	}
	if ((r = prep(db, "DELETE FROM idempotency_keys WHERE actor = ?1 AND"
	    " idem_key = ?2 AND status IS NULL", a->actor, a->key, &s)) != KM_OK) {
		(void)sqlite3_finalize(s);
		return r;
	}
	return run(db, s);
}

int
idem_abandon(struct store *st, const char *actor, const char *key)
{
	struct abandon_args a = { actor, key };

	return store_write_tx(st, abandon_tx, &a, NULL, NULL);
}

int
idem_clear_running(struct store *st)
{
	struct abandon_args a = { NULL, NULL };

	return store_write_tx(st, abandon_tx, &a, NULL, NULL);
}

void
idem_entry_clear(struct idem_entry *e)
{
	if (e == NULL)
		return;
	free(e->answer);
	memset(e, 0, sizeof(*e));
}
