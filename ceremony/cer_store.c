/* SQL of the ceremony tables (store migration 3) and of MEK rotation. */
#include "cer_store.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <sqlite3.h>

#include "log.h"

#define CER_LIST_MAX	1000

static int
db_err(sqlite3 *db, int rc, const char *what)
{
	log_error("ceremony store: %s: %s (%s)", what, sqlite3_errmsg(db),
	    sqlite3_errstr(rc));
	return (rc & 0xff) == SQLITE_NOMEM ? KM_ERR_NOMEM : KM_ERR_STORE;
}

/* Binds the arguments described by `fmt`: 't' text (NULL gives NULL),
 * 'i' int64, 'z' int64 with 0 as NULL, 'b' blob + size_t length. The
 * values must stay alive until the statement is finalized. */
static int
bindv(sqlite3_stmt *s, const char *fmt, va_list ap)
{
	const unsigned char *p;
	const char *t;
	int64_t v;
	size_t len;
	int i, rc = SQLITE_OK;

	for (i = 1; *fmt != '\0' && rc == SQLITE_OK; fmt++, i++) {
		switch (*fmt) {
		case 't':
			t = va_arg(ap, const char *);
			rc = t == NULL ? sqlite3_bind_null(s, i) :
			    sqlite3_bind_text(s, i, t, -1, SQLITE_STATIC);
			break;
		case 'i':
			rc = sqlite3_bind_int64(s, i, va_arg(ap, int64_t));
			break;
		case 'z':
			v = va_arg(ap, int64_t);
			rc = v == 0 ? sqlite3_bind_null(s, i) :
			    sqlite3_bind_int64(s, i, v);
			break;
		case 'b':
			p = va_arg(ap, const unsigned char *);
			len = va_arg(ap, size_t);
			if (len > INT_MAX)
				return SQLITE_TOOBIG;
			rc = p == NULL ? sqlite3_bind_null(s, i) :
			    sqlite3_bind_blob(s, i, p, (int)len, SQLITE_STATIC);
			break;
		default:
			return SQLITE_MISUSE;
		}
	}
	return rc;
}

/* Prepares `sql` and binds per `fmt`; *s is finalized by the caller. */
static int
query(sqlite3 *db, sqlite3_stmt **s, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int rc;

	*s = NULL;
	if ((rc = sqlite3_prepare_v2(db, sql, -1, s, NULL)) != SQLITE_OK)
		return db_err(db, rc, sql);
	va_start(ap, fmt);
	rc = bindv(*s, fmt, ap);
	va_end(ap);
	if (rc != SQLITE_OK)
		return db_err(db, rc, sql);
	return KM_OK;
}

/* Runs a statement that returns no rows; *changes (may be NULL) gets the
 * number of rows it changed. */
static int
exec(sqlite3 *db, int *changes, const char *sql, const char *fmt, ...)
{
	sqlite3_stmt *s = NULL;
	va_list ap;
	int rc, r = KM_ERR_INTERNAL;

	if ((rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL)) != SQLITE_OK) {
		r = db_err(db, rc, sql);
		goto out;
	}
	va_start(ap, fmt);
	rc = bindv(s, fmt, ap);
	va_end(ap);
	if (rc != SQLITE_OK || (rc = sqlite3_step(s)) != SQLITE_DONE) {
		r = db_err(db, rc, sql);
		goto out;
	}
	if (changes != NULL)
		*changes = sqlite3_changes(db);
	r = KM_OK;
out:
	(void)sqlite3_finalize(s);	/* repeats the step's error, handled */
	return r;
}

/* Steps a query: 1 row, 0 done, or an error (negative km_err). */
static int
step(sqlite3 *db, sqlite3_stmt *s, int *row)
{
	int rc = sqlite3_step(s);

	*row = 0;
	if (rc == SQLITE_ROW) {
		*row = 1;
		return KM_OK;
	}
	if (rc == SQLITE_DONE)
		return KM_OK;
	return db_err(db, rc, sqlite3_sql(s));
}

static void
col_text(sqlite3_stmt *s, int col, char *dst, size_t cap)
{
	const unsigned char *t = sqlite3_column_text(s, col);

	snprintf(dst, cap, "%s", t != NULL ? (const char *)t : "");
}

/* ---- officers and the quorum ---- */

/* A query whose rows fill a new array: its SQL (no parameters), the row
 * size, how to fill one row and to free the rows; then the array and its
 * length. */
struct rows_arg {
	const char *sql;
	size_t elem;
	int (*fill)(sqlite3_stmt *s, void *row);
	void (*free_rows)(void *arr, size_t n);
	void *arr;
	size_t n;
};

static int
rows_tx(sqlite3 *db, void *arg)
{
	struct rows_arg *a = arg;
	sqlite3_stmt *s = NULL;
	size_t cap = 0;
	int r, row;

	if ((r = query(db, &s, a->sql, "")) != KM_OK)
		goto out;
	for (;;) {
		if ((r = step(db, s, &row)) != KM_OK)
			goto out;
		if (!row)
			break;
		if ((r = km_grow(&a->arr, &cap, a->n + 1, a->elem)) != KM_OK)
			goto out;
		/* Counted (zeroed) before it is filled, so the caller's
		 * cleanup frees a half-read row too. */
		a->n++;
		if ((r = a->fill(s, (char *)a->arr + (a->n - 1) * a->elem)) !=
		    KM_OK)
			goto out;
	}
	r = KM_OK;
out:
	(void)sqlite3_finalize(s);
	return r;
}

/* Runs the query of `a` in one read transaction and hands its rows to
 * *out and *n; on failure frees them (a half-read row too). */
static int
rows_read(struct store *st, struct rows_arg *a, void **out, size_t *n)
{
	int r;

	*out = NULL;
	*n = 0;
	if ((r = store_read_tx(st, rows_tx, a)) != KM_OK) {
		a->free_rows(a->arr, a->n);
		return r;
	}
	*out = a->arr;
	*n = a->n;
	return KM_OK;
}

/* free_rows for rows that own no memory. */
static void
rows_free(void *arr, size_t n)
{
	(void)n;
	free(arr);
}

static void
officers_free(void *arr, size_t n)
{
	cer_officers_free(arr, n);
}

static int
officer_fill(sqlite3_stmt *s, void *row)
{
	struct cer_officer *o = row;
	int r;

	col_text(s, 0, o->name, sizeof(o->name));
	if ((r = store_col_blob(s, 1, &o->spki, &o->spki_len)) != KM_OK)
		return r;
	o->active = strcmp((const char *)sqlite3_column_text(s, 2), "active") == 0;
	o->added_at = sqlite3_column_int64(s, 3);
	o->removed_at = sqlite3_column_int64(s, 4);
	return KM_OK;
}

int
cer_store_officers(struct store *st, struct cer_officer **out, size_t *n)
{
	struct rows_arg a = { "SELECT name, public_key, state, added_at,"
	    " removed_at FROM officers ORDER BY name", sizeof(**out),
	    officer_fill, officers_free, NULL, 0 };

	return rows_read(st, &a, (void **)out, n);
}

static int
quorum_read(sqlite3 *db, void *arg)
{
	sqlite3_stmt *s = NULL;
	int *q = arg, r, row;
	long v;

	*q = 0;
	if ((r = query(db, &s, "SELECT value FROM settings WHERE name ="
	    " 'quorum'", "")) != KM_OK || (r = step(db, s, &row)) != KM_OK)
		goto out;
	if (row) {
		v = strtol((const char *)sqlite3_column_text(s, 0), NULL, 10);
		if (v < 1 || v > CER_MAX_OFFICERS) {
			log_error("ceremony store: settings.quorum is out of range");
			r = KM_ERR_STORE;
			goto out;
		}
		*q = (int)v;
	}
	r = KM_OK;
out:
	(void)sqlite3_finalize(s);
	return r;
}

int
cer_store_quorum(struct store *st, int *quorum)
{
	return store_read_tx(st, quorum_read, quorum);
}

static int
quorum_write(sqlite3 *db, int quorum)
{
	char v[16];

	snprintf(v, sizeof(v), "%d", quorum);
	return exec(db, NULL, "INSERT INTO settings (name, value) VALUES"
	    " ('quorum', ?1) ON CONFLICT (name) DO UPDATE SET value = ?1", "t", v);
}

struct boot_arg {
	const struct cer_officer *o;
	size_t n;
	int quorum;
};

static int
bootstrap_tx(sqlite3 *db, void *arg)
{
	struct boot_arg *a = arg;
	sqlite3_stmt *s = NULL;
	size_t i;
	int r, row;

	if ((r = query(db, &s, "SELECT 1 FROM officers LIMIT 1", "")) != KM_OK ||
	    (r = step(db, s, &row)) != KM_OK)
		goto out;
	if (row) {
		r = KM_ERR_KEY_EXISTS;
		goto out;
	}
	for (i = 0; i < a->n; i++)
		if ((r = exec(db, NULL, "INSERT INTO officers (name, public_key,"
		    " state, added_at, added_by) VALUES (?1, ?2, 'active', ?3,"
		    " 'kmsctl-init')", "tbi", a->o[i].name, a->o[i].spki,
		    a->o[i].spki_len, (int64_t)km_now_us())) != KM_OK)
			goto out;
	r = quorum_write(db, a->quorum);
out:
	(void)sqlite3_finalize(s);
	return r;
}

int
cer_store_bootstrap(struct store *st, const struct cer_officer *o, size_t n,
    int quorum, store_commit_hook hook, void *arg)
{
	struct boot_arg a = { o, n, quorum };

	return store_write_tx(st, bootstrap_tx, &a, hook, arg);
}

/* ---- ceremonies ---- */

void
cer_record_free(struct cer_record *c)
{
	if (c == NULL)
		return;
	free(c->text);
	free(c->result);
	free(c->decisions);
	free(c);
}

void
cer_records_free(struct cer_record **c, size_t n)
{
	size_t i;

	for (i = 0; c != NULL && i < n; i++)
		cer_record_free(c[i]);
	free(c);
}

static int
insert_tx(sqlite3 *db, void *arg)
{
	const struct cer_record *c = arg;
	char params[CER_MAX_PARAMS * (CER_PARAM_NAME_MAX + CER_PARAM_VALUE_MAX +
	    8) + 8];
	size_t i, used = 0;
	int r;

	/* params as "name=value\n" lines: the request text is the truth; this
	 * column only makes the table readable without parsing it. */
	params[0] = '\0';
	for (i = 0; i < c->req.n_params; i++)
		used += (size_t)snprintf(params + used, sizeof(params) - used,
		    "%s=%s\n", c->req.params[i].name, c->req.params[i].value);
	if ((r = exec(db, NULL, "INSERT INTO ceremonies (id, operation,"
	    " request_text, digest, params, quorum, requester, created_at,"
	    " expires_at, state_hash, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6,"
	    " ?7, ?8, ?9, ?10, 'open')", "tttttitiit", c->req.id,
	    c->req.operation, c->text, c->digest, params, (int64_t)c->req.quorum,
	    c->req.requester, c->req.created, c->req.expires,
	    c->req.state)) != KM_OK || c->upload == NULL)
		return r;
	return exec(db, NULL, "INSERT INTO ceremony_uploads (ceremony_id, data)"
	    " VALUES (?1, ?2)", "tb", c->req.id, c->upload, c->upload_len);
}

/* Closing a ceremony, whatever the way, drops what was uploaded with it. */
static int
upload_drop(sqlite3 *db, const char *id)
{
	return exec(db, NULL, "DELETE FROM ceremony_uploads WHERE ceremony_id ="
	    " ?1", "t", id);
}

struct upload_arg {
	const char *id;
	unsigned char *data;
	size_t len;
};

static int
upload_tx(sqlite3 *db, void *arg)
{
	struct upload_arg *a = arg;
	sqlite3_stmt *s = NULL;
	int r, row;

	if ((r = query(db, &s, "SELECT data FROM ceremony_uploads WHERE"
	    " ceremony_id = ?1", "t", a->id)) != KM_OK ||
	    (r = step(db, s, &row)) != KM_OK)
		goto out;
	r = row ? store_col_blob(s, 0, &a->data, &a->len) : KM_OK;
	if (r == KM_OK && a->data == NULL)
		r = KM_ERR_NOT_FOUND;
out:
	(void)sqlite3_finalize(s);
	return r;
}

int
cer_store_upload(struct store *st, const char *id, unsigned char **data,
    size_t *len)
{
	struct upload_arg a = { id, NULL, 0 };
	int r;

	*data = NULL;
	*len = 0;
	if ((r = store_read_tx(st, upload_tx, &a)) != KM_OK) {
		free(a.data);
		return r;
	}
	*data = a.data;
	*len = a.len;
	return KM_OK;
}

int
cer_store_insert(struct store *st, const struct cer_record *c,
    store_commit_hook hook, void *arg)
{
	return store_write_tx(st, insert_tx, (void *)c, hook, arg);
}

#define CER_COLS "id, request_text, digest, status, closed_at, closed_by," \
	" result"

/* A row of CER_COLS and its decisions. */
static int
record_from_row(sqlite3 *db, sqlite3_stmt *s, struct cer_record **out)
{
	struct cer_record *c = NULL;
	sqlite3_stmt *d = NULL;
	size_t cap = 0;
	int r, row;

	*out = NULL;
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	if ((r = store_col_text_dup(s, 1, &c->text)) != KM_OK ||
	    (r = store_col_text_dup(s, 6, &c->result)) != KM_OK)
		goto out;
	if (c->text == NULL ||
	    cer_request_parse(c->text, strlen(c->text), &c->req) != KM_OK) {
		log_error("ceremony store: ceremony %s has a malformed request text",
		    (const char *)sqlite3_column_text(s, 0));
		r = KM_ERR_STORE;
		goto out;
	}
	col_text(s, 2, c->digest, sizeof(c->digest));
	col_text(s, 3, c->status, sizeof(c->status));
	c->closed_at = sqlite3_column_int64(s, 4);
	col_text(s, 5, c->closed_by, sizeof(c->closed_by));
	if ((r = query(db, &d, "SELECT officer, decision, signature, at FROM"
	    " ceremony_decisions WHERE ceremony_id = ?1 ORDER BY at, officer",
	    "t", c->req.id)) != KM_OK)
		goto out;
	for (;;) {
		if ((r = step(db, d, &row)) != KM_OK)
			goto out;
		if (!row)
			break;
		if (c->n_decisions == CER_MAX_OFFICERS * 2) {
			r = KM_ERR_STORE;
			goto out;
		}
		if ((r = km_grow((void **)&c->decisions, &cap, c->n_decisions + 1,
		    sizeof(*c->decisions))) != KM_OK)
			goto out;
		col_text(d, 0, c->decisions[c->n_decisions].officer,
		    sizeof(c->decisions[0].officer));
		c->decisions[c->n_decisions].approve = strcmp((const char *)
		    sqlite3_column_text(d, 1), "approve") == 0;
		col_text(d, 2, c->decisions[c->n_decisions].signature,
		    sizeof(c->decisions[0].signature));
		c->decisions[c->n_decisions].at = sqlite3_column_int64(d, 3);
		c->n_decisions++;
	}
	*out = c;
	c = NULL;
	r = KM_OK;
out:
	(void)sqlite3_finalize(d);
	cer_record_free(c);
	return r;
}

struct get_arg {
	const char *id;
	struct cer_record *c;
};

static int
get_tx(sqlite3 *db, void *arg)
{
	struct get_arg *a = arg;
	sqlite3_stmt *s = NULL;
	int r, row;

	if ((r = query(db, &s, "SELECT " CER_COLS " FROM ceremonies WHERE id ="
	    " ?1", "t", a->id)) != KM_OK || (r = step(db, s, &row)) != KM_OK)
		goto out;
	if (!row) {
		r = KM_ERR_CEREMONY_NOT_FOUND;
		goto out;
	}
	r = record_from_row(db, s, &a->c);
out:
	(void)sqlite3_finalize(s);
	return r;
}

int
cer_store_get(struct store *st, const char *id, struct cer_record **out)
{
	struct get_arg a = { id, NULL };
	int r;

	*out = NULL;
	if (id == NULL)
		return KM_ERR_CEREMONY_NOT_FOUND;
	if ((r = store_read_tx(st, get_tx, &a)) != KM_OK) {
		cer_record_free(a.c);
		return r;
	}
	*out = a.c;
	return KM_OK;
}

struct list_arg {
	const char *status;
	int64_t before;
	size_t limit;
	struct cer_record **c;
	size_t n;
};

static int
list_tx(sqlite3 *db, void *arg)
{
	struct list_arg *a = arg;
	sqlite3_stmt *s = NULL;
	int r, row;

	if ((r = query(db, &s, "SELECT " CER_COLS " FROM ceremonies WHERE"
	    " (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR created_at < ?2)"
	    " ORDER BY created_at DESC, id DESC LIMIT ?3", "tzi", a->status,
	    a->before, (int64_t)a->limit)) != KM_OK)
		goto out;
	if ((a->c = calloc(a->limit ? a->limit : 1, sizeof(*a->c))) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	for (;;) {
		if ((r = step(db, s, &row)) != KM_OK)
			goto out;
		if (!row || a->n >= a->limit)
			break;
		if ((r = record_from_row(db, s, &a->c[a->n])) != KM_OK)
			goto out;
		a->n++;
	}
	r = KM_OK;
out:
	(void)sqlite3_finalize(s);
	return r;
}

int
cer_store_list(struct store *st, const char *status, int64_t before_us,
    size_t limit, struct cer_record ***out, size_t *n)
{
	struct list_arg a = { status, before_us, limit, NULL, 0 };
	int r;

	*out = NULL;
	*n = 0;
	if (a.limit == 0 || a.limit > CER_LIST_MAX)
		a.limit = CER_LIST_MAX;
	if ((r = store_read_tx(st, list_tx, &a)) != KM_OK) {
		cer_records_free(a.c, a.n);
		return r;
	}
	*out = a.c;
	*n = a.n;
	return KM_OK;
}

/* KM_OK when ceremony `id` is open, inside a write transaction. */
static int
require_open(sqlite3 *db, const char *id)
{
	sqlite3_stmt *s = NULL;
	int r, row;

	if ((r = query(db, &s, "SELECT status FROM ceremonies WHERE id = ?1",
	    "t", id)) != KM_OK || (r = step(db, s, &row)) != KM_OK)
		goto out;
	if (!row)
		r = KM_ERR_CEREMONY_NOT_FOUND;
	else if (strcmp((const char *)sqlite3_column_text(s, 0), "open") != 0)
		r = KM_ERR_CEREMONY_CLOSED;
out:
	(void)sqlite3_finalize(s);
	return r;
}

struct decide_arg {
	const char *id;
	const struct cer_decision *d;
	int replace;
	const char *close_status;
};

static int
decide_tx(sqlite3 *db, void *arg)
{
	struct decide_arg *a = arg;
	int r, n;

	if ((r = require_open(db, a->id)) != KM_OK)
		return r;
	if (a->replace)
		r = exec(db, &n, "UPDATE ceremony_decisions SET decision = ?3,"
		    " signature = ?4, at = ?5 WHERE ceremony_id = ?1 AND"
		    " officer = ?2 AND decision = 'approve'", "tttti", a->id,
		    a->d->officer, a->d->approve ? "approve" : "reject",
		    a->d->signature, a->d->at);
	else
		r = exec(db, &n, "INSERT INTO ceremony_decisions (ceremony_id,"
		    " officer, decision, signature, at) VALUES (?1, ?2, ?3, ?4,"
		    " ?5)", "tttti", a->id, a->d->officer,
		    a->d->approve ? "approve" : "reject", a->d->signature, a->d->at);
	if (r != KM_OK)
		return r;
	if (n != 1)
		return KM_ERR_DECISION_FINAL;
	if (a->close_status != NULL &&
	    (r = exec(db, NULL, "UPDATE ceremonies SET status = ?2, closed_at ="
	    " ?3, closed_by = 'quorum' WHERE id = ?1 AND status = 'open'",
	    "tti", a->id, a->close_status, (int64_t)km_now_us())) == KM_OK)
		r = upload_drop(db, a->id);
	return r;
}

int
cer_store_decide(struct store *st, const char *id,
    const struct cer_decision *d, int replace, const char *close_status,
    store_commit_hook hook, void *arg)
{
	struct decide_arg a = { id, d, replace, close_status };

	return store_write_tx(st, decide_tx, &a, hook, arg);
}

struct close_arg {
	const char *id, *status, *by;
};

static int
close_tx(sqlite3 *db, void *arg)
{
	struct close_arg *a = arg;
	int r, n;

	if ((r = require_open(db, a->id)) != KM_OK)
		return r;
	if ((r = exec(db, &n, "UPDATE ceremonies SET status = ?3, closed_at = ?2,"
	    " closed_by = ?4 WHERE id = ?1 AND status = 'open'", "titt", a->id,
	    (int64_t)km_now_us(), a->status, a->by)) != KM_OK)
		return r;
	return n == 1 ? upload_drop(db, a->id) : KM_ERR_CEREMONY_CLOSED;
}

int
cer_store_close(struct store *st, const char *id, const char *status,
    const char *by, store_commit_hook hook, void *arg)
{
	struct close_arg a = { id, status, by };

	return store_write_tx(st, close_tx, &a, hook, arg);
}

/* ---- execution ---- */

static int
officer_add_tx(sqlite3 *db, const struct cer_change *ch, const char *id)
{
	sqlite3_stmt *s = NULL;
	int r, row;

	if ((r = query(db, &s, "SELECT 1 FROM officers WHERE name = ?1 OR"
	    " public_key = ?2", "tb", ch->name, ch->spki, ch->spki_len)) != KM_OK ||
	    (r = step(db, s, &row)) != KM_OK)
		goto out;
	if (row) {
		r = KM_ERR_STATE_CHANGED;
		goto out;
	}
	r = exec(db, NULL, "INSERT INTO officers (name, public_key, state,"
	    " added_at, added_by) VALUES (?1, ?2, 'active', ?3, ?4)", "tbit",
	    ch->name, ch->spki, ch->spki_len, (int64_t)km_now_us(), id);
out:
	(void)sqlite3_finalize(s);
	return r;
}

static int
key_state_tx(sqlite3 *db, const struct cer_change *ch)
{
	int r, n;

	if ((r = exec(db, &n, "UPDATE key_versions SET state = ?4, wrapped ="
	    " CASE WHEN ?5 THEN NULL ELSE wrapped END WHERE key_id = (SELECT id"
	    " FROM keys WHERE name = ?1) AND version = ?2 AND state = ?3",
	    "tiiii", ch->key, (int64_t)ch->version, (int64_t)ch->from,
	    (int64_t)ch->to, (int64_t)ch->erase)) != KM_OK)
		return r;
	return n == 1 ? KM_OK : KM_ERR_STATE_CHANGED;
}

static int
count_under(sqlite3 *db, uint32_t mek, int64_t *n)
{
	sqlite3_stmt *s = NULL;
	int r, row;

	*n = 0;
	if ((r = query(db, &s, "SELECT count(*) FROM key_versions WHERE"
	    " mek_version = ?1 AND storage = 1 AND wrapped IS NOT NULL", "i",
	    (int64_t)mek)) != KM_OK || (r = step(db, s, &row)) != KM_OK)
		goto out;
	*n = row ? sqlite3_column_int64(s, 0) : 0;
out:
	(void)sqlite3_finalize(s);
	return r;
}

static int
mek_rotate_tx(sqlite3 *db, const struct cer_change *ch, const char *id)
{
	int64_t now = km_now_us();
	int r, n;

	if ((r = exec(db, &n, "UPDATE mek_versions SET state = 'retired' WHERE"
	    " version = ?1 AND state = 'active' AND NOT EXISTS (SELECT 1 FROM"
	    " mek_rotations WHERE state = 'running') AND ?1 = (SELECT max(version)"
	    " FROM mek_versions)", "i", (int64_t)ch->mek_old)) != KM_OK)
		return r;
	if (n != 1)
		return KM_ERR_STATE_CHANGED;
	if ((r = exec(db, NULL, "INSERT INTO mek_versions (version, state,"
	    " created_at) VALUES (?1, 'active', ?2)", "ii", (int64_t)ch->mek_new,
	    now)) != KM_OK)
		return r;
	return exec(db, NULL, "INSERT INTO mek_rotations (ceremony_id,"
	    " old_version, new_version, state, total, started_at, updated_at)"
	    " VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?5)", "tiiii", id,
	    (int64_t)ch->mek_old, (int64_t)ch->mek_new, ch->total, now);
}

static int
mek_disable_tx(sqlite3 *db, const struct cer_change *ch)
{
	int64_t left;
	int r, n;

	if ((r = count_under(db, ch->mek_old, &left)) != KM_OK)
		return r;
	if (left != 0)
		return KM_ERR_STATE_CHANGED;
	if ((r = exec(db, &n, "UPDATE mek_versions SET state = 'disabled' WHERE"
	    " version = ?1 AND state = 'retired'", "i",
	    (int64_t)ch->mek_old)) != KM_OK)
		return r;
	return n == 1 ? KM_OK : KM_ERR_STATE_CHANGED;
}

static int
audit_key_tx(sqlite3 *db, const struct cer_change *ch, const char *id)
{
	sqlite3_stmt *s = NULL;
	int64_t gen = 0, now = km_now_us();
	int r, row;

	if ((r = query(db, &s, "SELECT coalesce(max(generation), 0) FROM"
	    " audit_keys", "")) != KM_OK || (r = step(db, s, &row)) != KM_OK)
		goto out;
	gen = row ? sqlite3_column_int64(s, 0) : 0;
	/* The first rotation also records the key kmsctl init made. */
	if (gen == 0) {
		if ((r = exec(db, NULL, "INSERT INTO audit_keys (label, kid,"
		    " generation, created_at) VALUES (?1, ?2, 1, ?3)", "tti",
		    ch->prev_label, ch->prev_kid, now)) != KM_OK)
			goto out;
		gen = 1;
	}
	r = exec(db, NULL, "INSERT INTO audit_keys (label, kid, generation,"
	    " created_at, ceremony_id) VALUES (?1, ?2, ?3, ?4, ?5)", "ttiit",
	    ch->label, ch->kid, gen + 1, now, id);
out:
	(void)sqlite3_finalize(s);
	return r;
}

/* The imported version: a new aes256-gcm key with it as version 1 (no
 * rotation schedule, no required context), or a new primary version of
 * an existing aes256-gcm key whose primary becomes active. Either way only
 * if the key is as the ceremony found it (KM_ERR_STATE_CHANGED). */
static int
key_import_tx(sqlite3 *db, const struct cer_change *ch)
{
	sqlite3_stmt *s = NULL;
	int64_t now = km_now_us(), id = 0, max = 0, period = 0;
	int r, row;

	if ((r = query(db, &s, "SELECT k.id, k.type, k.rotation_period,"
	    " (SELECT coalesce(max(version), 0) FROM key_versions v WHERE"
	    " v.key_id = k.id) FROM keys k WHERE k.name = ?1", "t",
	    ch->key)) != KM_OK || (r = step(db, s, &row)) != KM_OK)
		goto out;
	if (row) {
		id = sqlite3_column_int64(s, 0);
		period = sqlite3_column_int64(s, 2);
		max = sqlite3_column_int64(s, 3);
		if (ch->create || sqlite3_column_text(s, 1) == NULL ||
		    strcmp((const char *)sqlite3_column_text(s, 1),
		    "aes256-gcm") != 0 || max + 1 != (int64_t)ch->version) {
			r = KM_ERR_STATE_CHANGED;
			goto out;
		}
	} else if (!ch->create || ch->version != 1) {
		r = KM_ERR_STATE_CHANGED;
		goto out;
	}
	if (ch->create) {
		if ((r = exec(db, NULL, "INSERT INTO keys (name, type, purpose,"
		    " created_at) VALUES (?1, 'aes256-gcm', 'encrypt', ?2)", "ti",
		    ch->key, now)) != KM_OK)
			goto out;
		id = sqlite3_last_insert_rowid(db);
	} else if ((r = exec(db, NULL, "UPDATE key_versions SET state = ?2"
	    " WHERE key_id = ?1 AND state = ?3", "iii", id,
	    (int64_t)KM_STATE_ACTIVE, (int64_t)KM_STATE_PRIMARY)) != KM_OK)
		goto out;
	if ((r = exec(db, NULL, "INSERT INTO key_versions (key_id, version,"
	    " state, created_at, mek_version, storage, wrapped) VALUES (?1, ?2,"
	    " ?3, ?4, ?5, ?6, ?7)", "iiiiiib", id, (int64_t)ch->version,
	    (int64_t)KM_STATE_PRIMARY, now, (int64_t)ch->mek_new,
	    (int64_t)STORE_WRAPPED, ch->wrapped, ch->wrapped_len)) != KM_OK)
		goto out;
	/* As a rotation does: the schedule, if any, counts from now. */
	r = exec(db, NULL, "UPDATE keys SET primary_version = ?2,"
	    " next_rotation_at = ?3 WHERE id = ?1", "iiz", id,
	    (int64_t)ch->version, period > 0 ? now + period * 1000000 : 0);
out:
	(void)sqlite3_finalize(s);
	return r;
}

struct exec_arg {
	const char *id, *by, *result;
	const struct cer_change *ch;
};

static int
execute_tx(sqlite3 *db, void *arg)
{
	struct exec_arg *a = arg;
	const struct cer_change *ch = a->ch;
	int r, n;

	if ((r = require_open(db, a->id)) != KM_OK)
		return r;
	/* At most once: the status moves from open inside this transaction. */
	if ((r = exec(db, &n, "UPDATE ceremonies SET status = 'executed',"
	    " closed_at = ?2, closed_by = ?3, result = ?4 WHERE id = ?1 AND"
	    " status = 'open'", "titt", a->id, (int64_t)km_now_us(), a->by,
	    a->result)) != KM_OK)
		return r;
	if (n != 1)
		return KM_ERR_CEREMONY_CLOSED;
	if ((r = upload_drop(db, a->id)) != KM_OK)
		return r;
	switch (ch->kind) {
	case CER_CH_NONE:
		return KM_OK;
	case CER_CH_OFFICER_ADD:
		return officer_add_tx(db, ch, a->id);
	case CER_CH_OFFICER_REMOVE:
		if ((r = exec(db, &n, "UPDATE officers SET state = 'removed',"
		    " removed_at = ?2 WHERE name = ?1 AND state = 'active'", "ti",
		    ch->name, (int64_t)km_now_us())) != KM_OK)
			return r;
		return n == 1 ? KM_OK : KM_ERR_STATE_CHANGED;
	case CER_CH_QUORUM:
		return quorum_write(db, ch->quorum);
	case CER_CH_KEY_STATE:
		return key_state_tx(db, ch);
	case CER_CH_MEK_ROTATE:
		return mek_rotate_tx(db, ch, a->id);
	case CER_CH_MEK_DISABLE:
		return mek_disable_tx(db, ch);
	case CER_CH_AUDIT_KEY:
		return audit_key_tx(db, ch, a->id);
	case CER_CH_KEY_IMPORT:
		return key_import_tx(db, ch);
	}
	return KM_ERR_INTERNAL;
}

int
cer_store_execute(struct store *st, const char *id, const char *by,
    const char *result, const struct cer_change *ch, store_commit_hook hook,
    void *arg)
{
	struct exec_arg a = { id, by, result, ch };

	return store_write_tx(st, execute_tx, &a, hook, arg);
}

/* ---- MEK versions and rotation ---- */

static int
mek_fill(sqlite3_stmt *s, void *row)
{
	struct cer_mek *m = row;

	m->version = (uint32_t)sqlite3_column_int64(s, 0);
	col_text(s, 1, m->state, sizeof(m->state));
	m->created_at = sqlite3_column_int64(s, 2);
	m->versions = sqlite3_column_int64(s, 3);
	return KM_OK;
}

int
cer_store_meks(struct store *st, struct cer_mek **out, size_t *n)
{
	struct rows_arg a = { "SELECT m.version, m.state, m.created_at,"
	    " (SELECT count(*) FROM key_versions v WHERE v.mek_version ="
	    " m.version AND v.storage = 1 AND v.wrapped IS NOT NULL) FROM"
	    " mek_versions m ORDER BY m.version", sizeof(**out), mek_fill,
	    rows_free, NULL, 0 };

	return rows_read(st, &a, (void **)out, n);
}

struct count_arg {
	uint32_t mek;
	int64_t n;
};

static int
count_tx(sqlite3 *db, void *arg)
{
	struct count_arg *a = arg;

	return count_under(db, a->mek, &a->n);
}

int
cer_store_count_under(struct store *st, uint32_t mek, int64_t *n)
{
	struct count_arg a = { mek, 0 };
	int r;

	r = store_read_tx(st, count_tx, &a);
	*n = a.n;
	return r;
}

struct rot_arg {
	struct cer_rotation *rot;
	int found;
};

static int
rotation_tx(sqlite3 *db, void *arg)
{
	struct rot_arg *a = arg;
	sqlite3_stmt *s = NULL;
	struct cer_rotation *o = a->rot;
	int r, row;

	if ((r = query(db, &s, "SELECT id, ceremony_id, old_version,"
	    " new_version, state, cursor_key, cursor_version, total, done,"
	    " passes, started_at, updated_at, finished_at FROM mek_rotations"
	    " ORDER BY id DESC LIMIT 1", "")) != KM_OK ||
	    (r = step(db, s, &row)) != KM_OK)
		goto out;
	if (!row)
		goto out;
	a->found = 1;
	o->id = sqlite3_column_int64(s, 0);
	col_text(s, 1, o->ceremony_id, sizeof(o->ceremony_id));
	o->old_version = (uint32_t)sqlite3_column_int64(s, 2);
	o->new_version = (uint32_t)sqlite3_column_int64(s, 3);
	col_text(s, 4, o->state, sizeof(o->state));
	o->cursor_key = sqlite3_column_int64(s, 5);
	o->cursor_version = (uint32_t)sqlite3_column_int64(s, 6);
	o->total = sqlite3_column_int64(s, 7);
	o->done = sqlite3_column_int64(s, 8);
	o->passes = sqlite3_column_int64(s, 9);
	o->started_at = sqlite3_column_int64(s, 10);
	o->updated_at = sqlite3_column_int64(s, 11);
	o->finished_at = sqlite3_column_int64(s, 12);
out:
	(void)sqlite3_finalize(s);
	return r;
}

int
cer_store_rotation_last(struct store *st, struct cer_rotation *out, int *found)
{
	struct rot_arg a = { out, 0 };
	int r;

	memset(out, 0, sizeof(*out));
	r = store_read_tx(st, rotation_tx, &a);
	*found = a.found;
	return r;
}

void
cer_rewrap_items_free(struct cer_rewrap_item *it, size_t n)
{
	size_t i;

	for (i = 0; it != NULL && i < n; i++) {
		km_secure_free(it[i].wrapped, it[i].wrapped_len);
		km_secure_free(it[i].out, it[i].out_len);
	}
	free(it);
}

struct batch_arg {
	uint32_t old;
	int64_t after_key;
	uint32_t after_version;
	size_t limit;
	struct cer_rewrap_item *it;
	size_t n;
};

static int
batch_tx(sqlite3 *db, void *arg)
{
	struct batch_arg *a = arg;
	sqlite3_stmt *s = NULL;
	int r, row;

	/* The index key_versions_mek (mek_version, key_id, version) makes
	 * this a range scan from the cursor. */
	if ((r = query(db, &s, "SELECT v.key_id, v.version, k.type, v.wrapped"
	    " FROM key_versions v JOIN keys k ON k.id = v.key_id WHERE"
	    " v.mek_version = ?1 AND v.storage = 1 AND v.wrapped IS NOT NULL"
	    " AND (v.key_id, v.version) > (?2, ?3) ORDER BY v.key_id, v.version"
	    " LIMIT ?4", "iiii", (int64_t)a->old, a->after_key,
	    (int64_t)a->after_version, (int64_t)a->limit)) != KM_OK)
		goto out;
	if ((a->it = calloc(a->limit, sizeof(*a->it))) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	for (;;) {
		if ((r = step(db, s, &row)) != KM_OK)
			goto out;
		if (!row || a->n >= a->limit)
			break;
		a->it[a->n].key_id = sqlite3_column_int64(s, 0);
		a->it[a->n].version = (uint32_t)sqlite3_column_int64(s, 1);
		col_text(s, 2, a->it[a->n].type, sizeof(a->it[0].type));
		a->n++;
		if ((r = store_col_blob(s, 3, &a->it[a->n - 1].wrapped,
		    &a->it[a->n - 1].wrapped_len)) != KM_OK)
			goto out;
	}
	r = KM_OK;
out:
	(void)sqlite3_finalize(s);
	return r;
}

int
cer_store_rewrap_batch(struct store *st, uint32_t old, int64_t after_key,
    uint32_t after_version, size_t limit, struct cer_rewrap_item **out,
    size_t *n)
{
	struct batch_arg a = { old, after_key, after_version, limit, NULL, 0 };
	int r;

	*out = NULL;
	*n = 0;
	if (limit == 0)
		return KM_ERR_INVALID_REQUEST;
	if ((r = store_read_tx(st, batch_tx, &a)) != KM_OK) {
		cer_rewrap_items_free(a.it, a.n);
		return r;
	}
	*out = a.it;
	*n = a.n;
	return KM_OK;
}

struct commit_arg {
	const struct cer_rotation *rot;
	const struct cer_rewrap_item *it;
	size_t n;
	int64_t cursor_key;
	uint32_t cursor_version;
	size_t changed;
};

static int
commit_tx(sqlite3 *db, void *arg)
{
	struct commit_arg *a = arg;
	sqlite3_stmt *s = NULL;
	size_t i;
	int r = KM_OK, rc;

	a->changed = 0;
	/* One prepared statement for the whole batch. */
	if ((rc = sqlite3_prepare_v2(db, "UPDATE key_versions SET wrapped = ?1,"
	    " mek_version = ?2 WHERE key_id = ?3 AND version = ?4 AND"
	    " mek_version = ?5 AND wrapped = ?6", -1, &s, NULL)) != SQLITE_OK) {
		r = db_err(db, rc, "prepare rewrap update");
		goto out;
	}
	for (i = 0; i < a->n; i++) {
		const struct cer_rewrap_item *x = &a->it[i];

		if (x->out == NULL)
			continue;
		(void)sqlite3_reset(s);
		if ((rc = sqlite3_bind_blob(s, 1, x->out, (int)x->out_len,
		    SQLITE_STATIC)) != SQLITE_OK ||
		    (rc = sqlite3_bind_int64(s, 2, a->rot->new_version)) != SQLITE_OK ||
		    (rc = sqlite3_bind_int64(s, 3, x->key_id)) != SQLITE_OK ||
		    (rc = sqlite3_bind_int64(s, 4, x->version)) != SQLITE_OK ||
		    (rc = sqlite3_bind_int64(s, 5, a->rot->old_version)) != SQLITE_OK ||
		    (rc = sqlite3_bind_blob(s, 6, x->wrapped, (int)x->wrapped_len,
		    SQLITE_STATIC)) != SQLITE_OK ||
		    (rc = sqlite3_step(s)) != SQLITE_DONE) {
			r = db_err(db, rc, "rewrap update");
			goto out;
		}
		a->changed += (size_t)sqlite3_changes(db);
	}
	r = exec(db, NULL, "UPDATE mek_rotations SET cursor_key = ?2,"
	    " cursor_version = ?3, done = done + ?4, updated_at = ?5 WHERE"
	    " id = ?1 AND state = 'running'", "iiiii", a->rot->id, a->cursor_key,
	    (int64_t)a->cursor_version, (int64_t)a->changed,
	    (int64_t)km_now_us());
out:
	(void)sqlite3_finalize(s);
	return r;
}

int
cer_store_rewrap_commit(struct store *st, const struct cer_rotation *rot,
    const struct cer_rewrap_item *it, size_t n, int64_t cursor_key,
    uint32_t cursor_version, size_t *changed, store_commit_hook hook,
    void *arg)
{
	struct commit_arg a = { rot, it, n, cursor_key, cursor_version, 0 };
	int r;

	*changed = 0;
	r = store_write_tx(st, commit_tx, &a, hook, arg);
	if (r == KM_OK)
		*changed = a.changed;
	return r;
}

static int
new_pass_tx(sqlite3 *db, void *arg)
{
	return exec(db, NULL, "UPDATE mek_rotations SET cursor_key = 0,"
	    " cursor_version = 0, passes = passes + 1, updated_at = ?2 WHERE"
	    " id = ?1 AND state = 'running'", "ii", *(int64_t *)arg,
	    (int64_t)km_now_us());
}

int
cer_store_rotation_new_pass(struct store *st, int64_t id)
{
	return store_write_tx(st, new_pass_tx, &id, NULL, NULL);
}

struct finish_arg {
	int64_t id;
	uint32_t old;
};

static int
finish_tx(sqlite3 *db, void *arg)
{
	struct finish_arg *a = arg;
	int64_t left, now = km_now_us();
	int r, n;

	if ((r = count_under(db, a->old, &left)) != KM_OK)
		return r;
	if (left != 0)
		return KM_ERR_STATE_CHANGED;
	if ((r = exec(db, &n, "UPDATE mek_rotations SET state = 'verified',"
	    " finished_at = ?2, updated_at = ?2 WHERE id = ?1 AND state ="
	    " 'running'", "ii", a->id, now)) != KM_OK)
		return r;
	return n == 1 ? KM_OK : KM_ERR_STATE_CHANGED;
}

int
cer_store_rotation_finish(struct store *st, int64_t id, uint32_t old,
    store_commit_hook hook, void *arg)
{
	struct finish_arg a = { id, old };

	return store_write_tx(st, finish_tx, &a, hook, arg);
}

/* ---- audit-signing keys ---- */

static int
audit_key_fill(sqlite3_stmt *s, void *row)
{
	struct cer_audit_key *k = row;

	col_text(s, 0, k->label, sizeof(k->label));
	col_text(s, 1, k->kid, sizeof(k->kid));
	k->generation = sqlite3_column_int(s, 2);
	k->created_at = sqlite3_column_int64(s, 3);
	return KM_OK;
}

int
cer_store_audit_keys(struct store *st, struct cer_audit_key **out, size_t *n)
{
	struct rows_arg a = { "SELECT label, kid, generation, created_at FROM"
	    " audit_keys ORDER BY generation", sizeof(**out), audit_key_fill,
	    rows_free, NULL, 0 };

	return rows_read(st, &a, (void **)out, n);
}
