/* Metadata store on SQLite: one locked writer, a pool of readers, migrations. */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <sqlite3.h>

#include "log.h"
#include "rowcache.h"

/* Read connections. Each serves one reader at a time; WAL lets them read
 * the last committed state while the writer sits in a commit hook. */
#define STORE_READERS		4
#define STORE_BUSY_MS		5000
/* Longest joined keys.required_context value we write. */
#define STORE_CONTEXT_MAX	(64 * 1024)

/* The CHECK constraints in migration 1 spell these values out. */
_Static_assert(KM_STATE_PRIMARY == 1 && KM_STATE_ACTIVE == 2 &&
    KM_STATE_DESTROYED == 6, "key_versions.state CHECK depends on km_state");
_Static_assert(STORE_WRAPPED == 1 && STORE_TOKEN == 2,
    "key_versions.storage CHECK depends on store_storage");

/*
 * Schema migrations: entry i is schema version i + 1. Each is applied in its
 * own transaction together with its schema_migrations row. Never edit an
 * entry that has shipped; append a new one.
 *
 * Conventions: where a struct field says 0 means none (primary_version,
 * rotation_period, the *_at times, mek_version), the column holds NULL.
 * keys.required_context holds the context names joined with '\n' (no
 * trailing newline), NULL when there are none; store_key_create refuses
 * empty names and names containing '\n', so the split is unambiguous.
 * mek_versions.state is "active" when added (MEK rotation may add others).
 */
static const char *const migrations[] = {
	/* 1: keys, versions, MEK versions, API tokens. */
	"CREATE TABLE keys ("
	" id INTEGER PRIMARY KEY,"
	" name TEXT UNIQUE NOT NULL,"
	" type TEXT NOT NULL,"
	" purpose TEXT NOT NULL,"
	" primary_version INTEGER,"
	" rotation_period INTEGER,"
	" next_rotation_at INTEGER,"
	" expires_at INTEGER,"
	" required_context TEXT,"
	" created_at INTEGER NOT NULL);"
	"CREATE TABLE key_versions ("
	" key_id INTEGER NOT NULL REFERENCES keys(id),"
	" version INTEGER NOT NULL CHECK (version >= 1),"
	" state INTEGER NOT NULL CHECK (state BETWEEN 1 AND 6),"
	" created_at INTEGER NOT NULL,"
	" mek_version INTEGER,"
	" storage INTEGER NOT NULL CHECK (storage IN (1, 2)),"
	" wrapped BLOB,"
	" public_key BLOB,"
	" last_used_at INTEGER,"
	" use_count INTEGER NOT NULL DEFAULT 0,"
	" PRIMARY KEY (key_id, version));"
	/* MEK rotation walks the versions under one MEK version in
	 * checkpointed batches ordered by (key_id, version). */
	"CREATE INDEX key_versions_mek ON key_versions (mek_version, key_id, version);"
	"CREATE TABLE mek_versions ("
	" version INTEGER PRIMARY KEY,"
	" state TEXT NOT NULL,"
	" created_at INTEGER NOT NULL);"
	"CREATE TABLE api_tokens ("
	" id TEXT PRIMARY KEY,"
	" hash BLOB NOT NULL,"
	" role TEXT NOT NULL,"
	" keys TEXT,"
	" description TEXT,"
	" created_at INTEGER NOT NULL,"
	" expires_at INTEGER,"
	" revoked_at INTEGER);",
	/* 2: the scheduler finds due and expiring keys by index, and
	 * remembers which alerts it raised (each once, across restarts). */
	"CREATE INDEX keys_next_rotation ON keys (next_rotation_at)"
	" WHERE next_rotation_at IS NOT NULL;"
	"CREATE INDEX keys_expires ON keys (expires_at)"
	" WHERE expires_at IS NOT NULL;"
	"CREATE INDEX key_versions_state ON key_versions (state, key_id);"
	"CREATE TABLE key_alerts ("
	" id INTEGER PRIMARY KEY,"
	" key_id INTEGER NOT NULL REFERENCES keys(id),"
	" kind TEXT NOT NULL,"
	" threshold INTEGER NOT NULL,"
	" ref_at INTEGER NOT NULL,"
	" raised_at INTEGER NOT NULL,"
	" detail TEXT,"
	" UNIQUE (key_id, kind, threshold, ref_at));",
	/* 3: ceremonies (ceremony/cer_store.c reads and writes these through
	 * store_write_tx/store_read_tx): officers, settings (the quorum),
	 * ceremony requests and signed decisions, MEK rotation progress, and
	 * the audit-signing keys after the first audit_key.rotate. */
	"CREATE TABLE officers ("
	" name TEXT PRIMARY KEY,"
	" public_key BLOB NOT NULL,"
	" state TEXT NOT NULL CHECK (state IN ('active', 'removed')),"
	" added_at INTEGER NOT NULL,"
	" added_by TEXT NOT NULL,"
	" removed_at INTEGER);"
	"CREATE TABLE settings ("
	" name TEXT PRIMARY KEY,"
	" value TEXT NOT NULL);"
	"CREATE TABLE ceremonies ("
	" id TEXT PRIMARY KEY,"
	" operation TEXT NOT NULL,"
	" request_text TEXT NOT NULL,"
	" digest TEXT NOT NULL,"
	" params TEXT NOT NULL,"
	" quorum INTEGER NOT NULL CHECK (quorum >= 1),"
	" requester TEXT NOT NULL,"
	" created_at INTEGER NOT NULL,"
	" expires_at INTEGER NOT NULL,"
	" state_hash TEXT NOT NULL,"
	" status TEXT NOT NULL CHECK (status IN"
	"  ('open', 'executed', 'cancelled', 'rejected', 'stale')),"
	" closed_at INTEGER,"
	" closed_by TEXT,"
	" result TEXT);"
	"CREATE INDEX ceremonies_created ON ceremonies (created_at, id);"
	"CREATE TABLE ceremony_decisions ("
	" ceremony_id TEXT NOT NULL REFERENCES ceremonies(id),"
	" officer TEXT NOT NULL REFERENCES officers(name),"
	" decision TEXT NOT NULL CHECK (decision IN ('approve', 'reject')),"
	" signature TEXT NOT NULL,"
	" at INTEGER NOT NULL,"
	" PRIMARY KEY (ceremony_id, officer));"
	"CREATE TABLE mek_rotations ("
	" id INTEGER PRIMARY KEY,"
	" ceremony_id TEXT REFERENCES ceremonies(id),"
	" old_version INTEGER NOT NULL,"
	" new_version INTEGER NOT NULL,"
	" state TEXT NOT NULL CHECK (state IN ('running', 'verified')),"
	" cursor_key INTEGER NOT NULL DEFAULT 0,"
	" cursor_version INTEGER NOT NULL DEFAULT 0,"
	" total INTEGER NOT NULL,"
	" done INTEGER NOT NULL DEFAULT 0,"
	" passes INTEGER NOT NULL DEFAULT 1,"
	" started_at INTEGER NOT NULL,"
	" updated_at INTEGER NOT NULL,"
	" finished_at INTEGER);"
	"CREATE TABLE audit_keys ("
	" label TEXT PRIMARY KEY,"
	" kid TEXT NOT NULL,"
	" generation INTEGER UNIQUE NOT NULL,"
	" created_at INTEGER NOT NULL,"
	" ceremony_id TEXT);",
	/* 4: Idempotency-Key of batch rewraps (service/idem.c reads and
	 * writes it through store_write_tx): per actor and key, the SHA-256
	 * of the request, the request that ran it, and its answer (status
	 * and body; both NULL while it runs). */
	"CREATE TABLE idempotency_keys ("
	" actor TEXT NOT NULL,"
	" idem_key TEXT NOT NULL,"
	" request_sha256 BLOB NOT NULL,"
	" request_id TEXT NOT NULL,"
	" status INTEGER,"
	" answer TEXT,"
	" created_at INTEGER NOT NULL,"
	" PRIMARY KEY (actor, idem_key));"
	"CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);",
	/* 5: bytes uploaded with a ceremony that are too large for the
	 * signed text, which carries their SHA-256 instead (key.import: the
	 * wrapped key). Deleted when the ceremony closes. */
	"CREATE TABLE ceremony_uploads ("
	" ceremony_id TEXT PRIMARY KEY REFERENCES ceremonies(id),"
	" data BLOB NOT NULL);",
};

#define N_MIGRATIONS	(sizeof(migrations) / sizeof(migrations[0]))

/* Prepared statements, cached per connection and prepared on first use. */
enum stmt_id {
	S_BEGIN,
	S_BEGIN_IMMEDIATE,
	S_COMMIT,
	S_ROLLBACK,
	S_SCHEMA_VERSION,
	S_MIGRATION_INSERT,
	S_KEY_BY_NAME,
	S_KEY_BY_ID,
	S_KEY_ID_BY_NAME,
	S_KEY_NAMES_AFTER,
	S_KEY_INSERT,
	S_KEY_SET_PRIMARY,
	S_KEY_CLEAR_PRIMARY,
	S_KEY_SET_CONFIG,
	S_VERSIONS_OF_KEY,
	S_VERSION_INSERT,
	S_VERSION_MAX,
	S_VERSION_DEMOTE_PRIMARY,
	S_VERSION_STATE,
	S_VERSION_SET_STATE,
	S_VERSION_USAGE,
	S_MEK_EXISTS,
	S_MEK_INSERT,
	S_MEK_MAX,
	S_TOKEN_EXISTS,
	S_TOKEN_INSERT,
	S_TOKEN_GET,
	S_TOKEN_LIST,
	S_TOKEN_REVOKE,
	S_KEY_ROTATION_STATE,
	S_KEYS_DUE,
	S_KEYS_BY_NEXT,
	S_KEYS_BY_EXPIRY,
	S_KEYS_EXPIRING,
	S_ALERT_INSERT,
	S_ALERT_LIST,
	S_STATE_STATS,
	S_KEY_COUNT,
	S_VERSION_USES,
	S_COUNT
};

#define KEY_COLS "id, name, type, purpose, primary_version, rotation_period," \
	" next_rotation_at, expires_at, required_context, created_at"
#define VERSION_COLS "version, state, created_at, mek_version, storage," \
	" wrapped, public_key, last_used_at, use_count"
#define TOKEN_COLS "id, hash, role, keys, description, created_at," \
	" expires_at, revoked_at"
/* store_sched_key, with the creation time of the primary version. */
#define SCHED_FROM "SELECT k.id, k.name, k.type, k.primary_version," \
	" k.rotation_period, k.next_rotation_at, k.expires_at, v.created_at" \
	" FROM keys k LEFT JOIN key_versions v" \
	" ON v.key_id = k.id AND v.version = k.primary_version"

static const char *const stmt_sql[S_COUNT] = {
	[S_BEGIN] = "BEGIN",
	[S_BEGIN_IMMEDIATE] = "BEGIN IMMEDIATE",
	[S_COMMIT] = "COMMIT",
	[S_ROLLBACK] = "ROLLBACK",
	[S_SCHEMA_VERSION] =
	    "SELECT coalesce(max(version), 0) FROM schema_migrations",
	[S_MIGRATION_INSERT] =
	    "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
	[S_KEY_BY_NAME] = "SELECT " KEY_COLS " FROM keys WHERE name = ?1",
	[S_KEY_BY_ID] = "SELECT " KEY_COLS " FROM keys WHERE id = ?1",
	[S_KEY_ID_BY_NAME] = "SELECT id FROM keys WHERE name = ?1",
	/* Walks the name index lazily: rows are read only as they are stepped. */
	[S_KEY_NAMES_AFTER] =
	    "SELECT id, name FROM keys WHERE name > ?1 ORDER BY name",
	[S_KEY_INSERT] =
	    "INSERT INTO keys (name, type, purpose, primary_version,"
	    " rotation_period, next_rotation_at, expires_at, required_context,"
	    " created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
	[S_KEY_SET_PRIMARY] =
	    "UPDATE keys SET primary_version = ?2, next_rotation_at = ?3"
	    " WHERE id = ?1",
	[S_KEY_SET_CONFIG] =
	    "UPDATE keys SET rotation_period = ?2, next_rotation_at = ?3,"
	    " expires_at = ?4 WHERE name = ?1",
	[S_KEY_CLEAR_PRIMARY] =
	    "UPDATE keys SET primary_version = NULL"
	    " WHERE id = ?1 AND primary_version = ?2",
	[S_VERSIONS_OF_KEY] =
	    "SELECT " VERSION_COLS " FROM key_versions WHERE key_id = ?1"
	    " ORDER BY version",
	[S_VERSION_INSERT] =
	    "INSERT INTO key_versions (key_id, " VERSION_COLS ")"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
	[S_VERSION_MAX] =
	    "SELECT coalesce(max(version), 0) FROM key_versions WHERE key_id = ?1",
	[S_VERSION_DEMOTE_PRIMARY] =
	    "UPDATE key_versions SET state = ?2 WHERE key_id = ?1 AND state = ?3",
	[S_VERSION_STATE] =
	    "SELECT state FROM key_versions WHERE key_id = ?1 AND version = ?2",
	[S_VERSION_SET_STATE] =
	    "UPDATE key_versions SET state = ?4,"
	    " wrapped = CASE WHEN ?5 THEN NULL ELSE wrapped END"
	    " WHERE key_id = ?1 AND version = ?2 AND state = ?3",
	/* Saturates instead of overflowing: SQLite would turn an overflowing
	 * integer sum into a REAL. */
	[S_VERSION_USAGE] =
	    "UPDATE key_versions SET"
	    " use_count = CASE WHEN use_count > 9223372036854775807 - ?3"
	    " THEN 9223372036854775807 ELSE use_count + ?3 END,"
	    " last_used_at = CASE WHEN ?4 > coalesce(last_used_at, 0)"
	    " THEN ?4 ELSE last_used_at END"
	    " WHERE key_id = ?1 AND version = ?2",
	[S_MEK_EXISTS] = "SELECT 1 FROM mek_versions WHERE version = ?1",
	[S_MEK_INSERT] =
	    "INSERT INTO mek_versions (version, state, created_at)"
	    " VALUES (?1, 'active', ?2)",
	[S_MEK_MAX] = "SELECT max(version) FROM mek_versions",
	[S_TOKEN_EXISTS] = "SELECT 1 FROM api_tokens WHERE id = ?1",
	[S_TOKEN_INSERT] =
	    "INSERT INTO api_tokens (" TOKEN_COLS ")"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
	[S_TOKEN_GET] = "SELECT " TOKEN_COLS " FROM api_tokens WHERE id = ?1",
	[S_TOKEN_LIST] =
	    "SELECT " TOKEN_COLS " FROM api_tokens ORDER BY created_at, id",
	[S_TOKEN_REVOKE] =
	    "UPDATE api_tokens SET revoked_at = ?2"
	    " WHERE id = ?1 AND revoked_at IS NULL",
	[S_KEY_ROTATION_STATE] =
	    "SELECT primary_version, next_rotation_at FROM keys WHERE id = ?1",
	[S_KEYS_DUE] = SCHED_FROM
	    " WHERE k.next_rotation_at IS NOT NULL AND k.next_rotation_at <= ?1"
	    " ORDER BY k.next_rotation_at, k.id LIMIT ?2",
	[S_KEYS_BY_NEXT] = SCHED_FROM
	    " WHERE k.next_rotation_at IS NOT NULL"
	    " ORDER BY k.next_rotation_at, k.id LIMIT ?1",
	[S_KEYS_BY_EXPIRY] = SCHED_FROM
	    " WHERE k.expires_at IS NOT NULL"
	    " ORDER BY k.expires_at, k.id LIMIT ?1",
	/* ?1 now (us); ?2 < ?3 < ?4 thresholds (s); the tightest crossed
	 * threshold of each key, unless its alert exists (unique index). */
	[S_KEYS_EXPIRING] =
	    "SELECT e.id, e.name, e.expires_at, e.th FROM ("
	    " SELECT id, name, expires_at, CASE"
	    " WHEN expires_at <= ?1 THEN 0"
	    " WHEN expires_at <= ?1 + ?2 * 1000000 THEN ?2"
	    " WHEN expires_at <= ?1 + ?3 * 1000000 THEN ?3"
	    " ELSE ?4 END AS th FROM keys"
	    " WHERE expires_at IS NOT NULL AND expires_at <= ?1 + ?4 * 1000000"
	    ") AS e WHERE NOT EXISTS (SELECT 1 FROM key_alerts a"
	    " WHERE a.key_id = e.id"
	    " AND a.kind = CASE WHEN e.th = 0 THEN 'expired' ELSE 'expiry' END"
	    " AND a.threshold = e.th AND a.ref_at = e.expires_at)"
	    " ORDER BY e.expires_at, e.id LIMIT ?5",
	[S_ALERT_INSERT] =
	    "INSERT OR IGNORE INTO key_alerts (key_id, kind, threshold, ref_at,"
	    " raised_at, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[S_ALERT_LIST] =
	    "SELECT a.id, a.key_id, k.name, a.kind, a.threshold, a.ref_at,"
	    " a.raised_at, a.detail FROM key_alerts a JOIN keys k"
	    " ON k.id = a.key_id WHERE a.id > ?1 AND (?2 IS NULL OR k.name = ?2)"
	    " ORDER BY a.id LIMIT ?3",
	/* total() rather than sum(): sum() fails on integer overflow. */
	[S_STATE_STATS] =
	    "SELECT state, count(*), total(use_count) FROM key_versions"
	    " GROUP BY state",
	[S_KEY_COUNT] = "SELECT count(*) FROM keys",
	[S_VERSION_USES] =
	    "SELECT v.key_id, k.name, v.version, v.state, v.use_count,"
	    " v.last_used_at, v.created_at FROM key_versions v"
	    " JOIN keys k ON k.id = v.key_id"
	    " WHERE v.key_id IN (SELECT key_id FROM key_versions"
	    " WHERE state IN (2, 3) GROUP BY key_id"
	    " ORDER BY max(coalesce(last_used_at, 0)) DESC, key_id LIMIT ?1)"
	    " AND v.state IN (1, 2, 3) ORDER BY k.name, v.version",
};

struct conn {
	sqlite3 *db;
	sqlite3_stmt *stmt[S_COUNT];
	int in_use;			/* readers only; under store.rlock */
};

struct store {
	pthread_mutex_t wlock;		/* held for the whole write transaction */
	pthread_mutex_t rlock;		/* guards conn.in_use of the readers */
	pthread_cond_t rcond;		/* a reader was returned */
	int n_sync;			/* how many of the three above exist */
	struct conn w;
	struct conn r[STORE_READERS];
	struct rowcache *rows;		/* stale after every write_abort */
};

/* The store whose write lock this thread holds, so that a commit hook that
 * writes to the store fails instead of deadlocking on the writer mutex. */
static _Thread_local const struct store *tl_writing;

static const char *const state_names[] = {
	[KM_STATE_PRIMARY] = "primary",
	[KM_STATE_ACTIVE] = "active",
	[KM_STATE_RETIRED] = "retired",
	[KM_STATE_ARCHIVED] = "archived",
	[KM_STATE_REVOKED] = "revoked",
	[KM_STATE_DESTROYED] = "destroyed",
};

static int
state_valid(int64_t s)
{
	return s >= KM_STATE_PRIMARY && s <= KM_STATE_DESTROYED;
}

const char *
km_state_name(enum km_state s)
{
	if (!state_valid(s))
		return "unknown";
	return state_names[s];
}

int
km_state_parse(const char *name, enum km_state *out)
{
	int s;

	*out = 0;
	if (name == NULL)
		return KM_ERR_INVALID_REQUEST;
	for (s = KM_STATE_PRIMARY; s <= KM_STATE_DESTROYED; s++) {
		if (strcmp(name, state_names[s]) == 0) {
			*out = (enum km_state)s;
			return KM_OK;
		}
	}
	return KM_ERR_INVALID_REQUEST;
}

/* Logs a failed SQLite call with SQLite's own reason and converts it. */
static int
sql_err(sqlite3 *db, int rc, const char *what)
{
	log_error("store: %s: %s (%s)", what,
	    db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc),
	    sqlite3_errstr(rc));
	return (rc & 0xff) == SQLITE_NOMEM ? KM_ERR_NOMEM : KM_ERR_STORE;
}

static int
corrupt(sqlite3_stmt *s, int col)
{
	log_error("store: unexpected value in column %s",
	    sqlite3_column_name(s, col));
	return KM_ERR_STORE;
}

/* Hands out the cached statement `id`, reset and with no bindings. */
static int
conn_stmt(struct conn *c, enum stmt_id id, sqlite3_stmt **out)
{
	int rc;

	*out = NULL;
	if (c->stmt[id] == NULL) {
		rc = sqlite3_prepare_v3(c->db, stmt_sql[id], -1,
		    SQLITE_PREPARE_PERSISTENT, &c->stmt[id], NULL);
		if (rc != SQLITE_OK)
			return sql_err(c->db, rc, stmt_sql[id]);
	} else {
		/* sqlite3_reset repeats the last step's error, which was
		 * handled when it happened; clear_bindings cannot fail. */
		(void)sqlite3_reset(c->stmt[id]);
		(void)sqlite3_clear_bindings(c->stmt[id]);
	}
	*out = c->stmt[id];
	return KM_OK;
}

/* Resets every cached statement: ends the implicit read transaction a
 * half-stepped query holds (which would pin the WAL) and drops bindings
 * that point into caller memory. */
static void
conn_reset_all(struct conn *c)
{
	size_t i;

	for (i = 0; i < S_COUNT; i++) {
		if (c->stmt[i] == NULL)
			continue;
		(void)sqlite3_reset(c->stmt[i]);	/* see conn_stmt */
		(void)sqlite3_clear_bindings(c->stmt[i]);
	}
}

/* Steps a statement that returns no rows. */
static int
stmt_run(struct conn *c, sqlite3_stmt *s, const char *what)
{
	int rc;

	if ((rc = sqlite3_step(s)) != SQLITE_DONE)
		return sql_err(c->db, rc, what);
	return KM_OK;
}

/* Steps a query; *row is 1 when a row is available, 0 at the end. */
static int
stmt_row(struct conn *c, sqlite3_stmt *s, int *row, const char *what)
{
	int rc;

	*row = 0;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*row = 1;
		return KM_OK;
	}
	if (rc != SQLITE_DONE)
		return sql_err(c->db, rc, what);
	return KM_OK;
}

/* Runs one of the cached transaction statements (BEGIN, COMMIT, ...). */
static int
conn_tx(struct conn *c, enum stmt_id id)
{
	sqlite3_stmt *s;
	int r = KM_ERR_INTERNAL;

	if ((r = conn_stmt(c, id, &s)) != KM_OK)
		return r;
	r = stmt_run(c, s, stmt_sql[id]);
	(void)sqlite3_reset(s);		/* result handled just above */
	return r;
}

/* Rolls back whatever transaction is open on `c`, if any. */
static void
conn_rollback(struct conn *c)
{
	conn_reset_all(c);
	if (sqlite3_get_autocommit(c->db))
		return;
	if (conn_tx(c, S_ROLLBACK) != KM_OK || !sqlite3_get_autocommit(c->db))
		log_error("store: transaction still open after ROLLBACK");
}

static int
conn_exec(struct conn *c, const char *sql, const char *what)
{
	int rc;

	if ((rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL)) != SQLITE_OK)
		return sql_err(c->db, rc, what);
	return KM_OK;
}

/* Runs a PRAGMA that answers one row and copies its first column. */
static int
conn_pragma(struct conn *c, const char *sql, char *out, size_t outlen)
{
	sqlite3_stmt *s = NULL;
	const unsigned char *t;
	int r = KM_ERR_INTERNAL, rc, row;

	out[0] = '\0';
	if ((rc = sqlite3_prepare_v2(c->db, sql, -1, &s, NULL)) != SQLITE_OK) {
		r = sql_err(c->db, rc, sql);
		goto out;
	}
	if ((r = stmt_row(c, s, &row, sql)) != KM_OK)
		goto out;
	if (row && (t = sqlite3_column_text(s, 0)) != NULL)
		snprintf(out, outlen, "%s", (const char *)t);
	r = KM_OK;
out:
	/* finalize repeats the last step's error, handled above */
	(void)sqlite3_finalize(s);
	return r;
}

static int
conn_open(const char *path, int flags, struct conn *c)
{
	int rc;

	rc = sqlite3_open_v2(path, &c->db, flags | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		log_error("store: cannot open %s", path);
		return sql_err(c->db, rc, "open");
	}
	if ((rc = sqlite3_extended_result_codes(c->db, 1)) != SQLITE_OK)
		return sql_err(c->db, rc, "extended result codes");
	if ((rc = sqlite3_busy_timeout(c->db, STORE_BUSY_MS)) != SQLITE_OK)
		return sql_err(c->db, rc, "busy timeout");
	return KM_OK;
}

static void
conn_close(struct conn *c)
{
	size_t i;
	int rc;

	if (c->db == NULL)
		return;
	for (i = 0; i < S_COUNT; i++) {
		/* finalize repeats the last step's error, handled then */
		(void)sqlite3_finalize(c->stmt[i]);
		c->stmt[i] = NULL;
	}
	if ((rc = sqlite3_close(c->db)) != SQLITE_OK)
		sql_err(c->db, rc, "close");
	c->db = NULL;
}

/* Durability and integrity settings of the writer connection. */
static int
writer_setup(struct conn *c)
{
	char v[32];
	int r = KM_ERR_INTERNAL;

	if ((r = conn_pragma(c, "PRAGMA journal_mode = WAL", v, sizeof(v))) != KM_OK)
		goto out;
	if (strcmp(v, "wal") != 0) {
		log_error("store: cannot switch to WAL (journal_mode is %s)", v);
		r = KM_ERR_STORE;
		goto out;
	}
	/* FULL: a commit is on disk before COMMIT returns, so nothing that
	 * was acknowledged (and audited) can be lost to a power cut. */
	if ((r = conn_exec(c, "PRAGMA synchronous = FULL", "synchronous")) != KM_OK)
		goto out;
	if ((r = conn_exec(c, "PRAGMA foreign_keys = ON", "foreign_keys")) != KM_OK)
		goto out;
	/* Overwrite deleted content, so a destroyed version's wrapped blob
	 * does not linger in free space of the database file. */
	if ((r = conn_exec(c, "PRAGMA secure_delete = ON", "secure_delete")) != KM_OK)
		goto out;
	if ((r = conn_pragma(c, "PRAGMA foreign_keys", v, sizeof(v))) != KM_OK)
		goto out;
	if (strcmp(v, "1") != 0) {
		log_error("store: SQLite does not enforce foreign keys");
		r = KM_ERR_STORE;
		goto out;
	}
	r = KM_OK;
out:
	return r;
}

static int
schema_version_read(struct conn *c, int64_t *version)
{
	sqlite3_stmt *s;
	int r = KM_ERR_INTERNAL, row;

	*version = 0;
	if ((r = conn_stmt(c, S_SCHEMA_VERSION, &s)) != KM_OK)
		goto out;
	if ((r = stmt_row(c, s, &row, "read schema version")) != KM_OK)
		goto out;
	if (row)
		*version = sqlite3_column_int64(s, 0);
	/* Done with it: a migration may change the schema next. */
	(void)sqlite3_reset(s);
	r = KM_OK;
out:
	return r;
}

/* Applies the migrations the database lacks, one transaction each. */
static int
migrate(struct conn *c)
{
	sqlite3_stmt *s;
	int64_t have = 0;
	size_t i;
	int r = KM_ERR_INTERNAL, rc;
	char what[48];

	if ((r = conn_exec(c, "CREATE TABLE IF NOT EXISTS schema_migrations ("
	    "version INTEGER PRIMARY KEY, applied_at INTEGER)",
	    "create schema_migrations")) != KM_OK)
		goto out;
	for (i = 0; i < N_MIGRATIONS; i++) {
		if ((r = conn_tx(c, S_BEGIN_IMMEDIATE)) != KM_OK)
			goto out;
		/* Read under the write lock: another process may be
		 * migrating the same file. */
		if ((r = schema_version_read(c, &have)) != KM_OK)
			goto out;
		if (have > (int64_t)N_MIGRATIONS) {
			log_error("store: database schema version %lld is newer "
			    "than this kmsd knows (%zu)", (long long)have,
			    N_MIGRATIONS);
			r = KM_ERR_STORE;
			goto out;
		}
		if (have < (int64_t)(i + 1)) {
			snprintf(what, sizeof(what), "schema migration %zu", i + 1);
			if ((r = conn_exec(c, migrations[i], what)) != KM_OK)
				goto out;
			if ((r = conn_stmt(c, S_MIGRATION_INSERT, &s)) != KM_OK)
				goto out;
			if ((rc = sqlite3_bind_int64(s, 1, (int64_t)(i + 1))) != SQLITE_OK ||
			    (rc = sqlite3_bind_int64(s, 2, km_now_us())) != SQLITE_OK) {
				r = sql_err(c->db, rc, what);
				goto out;
			}
			if ((r = stmt_run(c, s, what)) != KM_OK)
				goto out;
			log_info("store: applied %s", what);
		}
		conn_reset_all(c);
		if ((r = conn_tx(c, S_COMMIT)) != KM_OK)
			goto out;
	}
	r = KM_OK;
out:
	if (r != KM_OK)
		conn_rollback(c);
	conn_reset_all(c);
	return r;
}

/* Creates the file mode 0600 before SQLite opens it. SQLite gives the -wal
 * and -shm files the database file's mode, so this covers all three. */
static int
db_precreate(const char *path)
{
	struct stat sb;
	int fd = -1, r = KM_ERR_IO;

	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) == -1) {
		log_error("store: cannot create %s: %s", path, strerror(errno));
		goto out;
	}
	if (fstat(fd, &sb) == -1) {
		log_error("store: cannot stat %s: %s", path, strerror(errno));
		goto out;
	}
	if ((sb.st_mode & 077) != 0)
		log_warn("store: %s is accessible to group or others (mode %04o)",
		    path, (unsigned)(sb.st_mode & 07777));
	r = KM_OK;
out:
	if (fd != -1)
		(void)close(fd);	/* nothing was written through fd */
	return r;
}

/* Takes a free read connection, waiting for one if all are busy. */
static struct conn *
reader_get(struct store *st)
{
	struct conn *c = NULL;
	size_t i;

	pthread_mutex_lock(&st->rlock);
	for (;;) {
		for (i = 0; i < STORE_READERS && c == NULL; i++)
			if (!st->r[i].in_use)
				c = &st->r[i];
		if (c != NULL)
			break;
		pthread_cond_wait(&st->rcond, &st->rlock);
	}
	c->in_use = 1;
	pthread_mutex_unlock(&st->rlock);
	return c;
}

/* Ends any read transaction on `c` and returns it to the pool. */
static void
reader_put(struct store *st, struct conn *c)
{
	conn_rollback(c);
	pthread_mutex_lock(&st->rlock);
	c->in_use = 0;
	pthread_cond_signal(&st->rcond);
	pthread_mutex_unlock(&st->rlock);
}

/* Takes a reader and opens a read transaction, so that several queries
 * see one snapshot. On failure the reader is already returned. */
static int
reader_begin(struct store *st, struct conn **out)
{
	struct conn *c;
	int r = KM_ERR_INTERNAL;

	c = reader_get(st);
	if ((r = conn_tx(c, S_BEGIN)) != KM_OK) {
		reader_put(st, c);
		*out = NULL;
		return r;
	}
	*out = c;
	return KM_OK;
}

/* Takes the writer and opens BEGIN IMMEDIATE. On failure nothing is held. */
static int
write_begin(struct store *st)
{
	int r = KM_ERR_INTERNAL;

	if (tl_writing == st) {
		log_error("store: write attempted from inside a commit hook");
		return KM_ERR_INTERNAL;
	}
	pthread_mutex_lock(&st->wlock);
	tl_writing = st;
	/* A failed ROLLBACK earlier may have left a transaction open. */
	conn_rollback(&st->w);
	if ((r = conn_tx(&st->w, S_BEGIN_IMMEDIATE)) != KM_OK) {
		tl_writing = NULL;
		pthread_mutex_unlock(&st->wlock);
		return r;
	}
	return KM_OK;
}

/* Rolls back and releases the writer. */
static void
write_abort(struct store *st)
{
	conn_rollback(&st->w);
	rowcache_changed(st->rows);
	tl_writing = NULL;
	pthread_mutex_unlock(&st->wlock);
}

/* Finishes the write transaction begun by write_begin: with r == KM_OK
 * runs the hook, then commits; otherwise, or when the hook refuses, rolls
 * back. Releases the writer and returns the outcome. */
static int
write_end(struct store *st, int r, store_commit_hook hook, void *arg)
{
	int hr;

	if (r == KM_OK && hook != NULL && (hr = hook(arg)) != 0)
		r = hr;
	if (r == KM_OK) {
		conn_reset_all(&st->w);
		if (conn_tx(&st->w, S_COMMIT) != KM_OK)
			r = KM_ERR_STORE;
	}
	write_abort(st);
	return r;
}

/* After a version is destroyed: copy the WAL into the database file and
 * truncate it, so the old page images holding the wrapped blob go away
 * (secure_delete already zeroed the freed space in the new pages). Best
 * effort: the state change has committed either way. */
static void
wal_scrub(struct store *st)
{
	int rc, nlog = 0, nckpt = 0;

	pthread_mutex_lock(&st->wlock);
	rc = sqlite3_wal_checkpoint_v2(st->w.db, NULL,
	    SQLITE_CHECKPOINT_TRUNCATE, &nlog, &nckpt);
	if (rc != SQLITE_OK)
		log_warn("store: WAL truncation after destroy incomplete: %s "
		    "(retried at the next checkpoint)", sqlite3_errmsg(st->w.db));
	pthread_mutex_unlock(&st->wlock);
}

int
store_write_tx(struct store *st, int (*fn)(struct sqlite3 *db, void *arg),
    void *arg, store_commit_hook hook, void *harg)
{
	int r = KM_ERR_INTERNAL;

	if ((r = write_begin(st)) != KM_OK)
		return r;
	r = fn(st->w.db, arg);
	return write_end(st, r, hook, harg);
}

int
store_read_tx(struct store *st, int (*fn)(struct sqlite3 *db, void *arg),
    void *arg)
{
	struct conn *c = NULL;
	int r = KM_ERR_INTERNAL;

	if ((r = reader_begin(st, &c)) != KM_OK)
		return r;
	r = fn(c->db, arg);
	reader_put(st, c);
	return r;
}

void
store_wal_scrub(struct store *st)
{
	wal_scrub(st);
}

void
store_free(struct store *st)
{
	size_t i;

	if (st == NULL)
		return;
	/* Readers first: the writer's close checkpoints and removes the WAL
	 * only when it is the last connection. */
	for (i = 0; i < STORE_READERS; i++)
		conn_close(&st->r[i]);
	conn_close(&st->w);
	if (st->n_sync > 2)
		pthread_cond_destroy(&st->rcond);
	if (st->n_sync > 1)
		pthread_mutex_destroy(&st->rlock);
	if (st->n_sync > 0)
		pthread_mutex_destroy(&st->wlock);
	rowcache_free(st->rows);
	free(st);
}

int
store_open(const char *path, struct store **out)
{
	struct store *st = NULL;
	size_t i;
	int r = KM_ERR_INTERNAL;

	*out = NULL;
	if (path == NULL || path[0] == '\0' || strcmp(path, ":memory:") == 0) {
		/* Each connection would get its own in-memory database. */
		log_error("store: a database file path is required");
		r = KM_ERR_CONFIG;
		goto out;
	}
	if (!sqlite3_threadsafe()) {
		log_error("store: SQLite was built without thread support");
		r = KM_ERR_STORE;
		goto out;
	}
	if ((st = calloc(1, sizeof(*st))) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	if (pthread_mutex_init(&st->wlock, NULL) != 0)
		goto out;
	st->n_sync++;
	if (pthread_mutex_init(&st->rlock, NULL) != 0)
		goto out;
	st->n_sync++;
	if (pthread_cond_init(&st->rcond, NULL) != 0)
		goto out;
	st->n_sync++;
	if ((r = rowcache_new(&st->rows)) != KM_OK)
		goto out;
	if ((r = db_precreate(path)) != KM_OK)
		goto out;
	if ((r = conn_open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
	    &st->w)) != KM_OK)
		goto out;
	if ((r = writer_setup(&st->w)) != KM_OK)
		goto out;
	if ((r = migrate(&st->w)) != KM_OK)
		goto out;
	/* Read-only connections: a bug on a read path cannot write. */
	for (i = 0; i < STORE_READERS; i++)
		if ((r = conn_open(path, SQLITE_OPEN_READONLY, &st->r[i])) != KM_OK)
			goto out;
	*out = st;
	st = NULL;
	r = KM_OK;
out:
	store_free(st);
	return r;
}

int
store_check(struct store *st)
{
	int r = KM_ERR_INTERNAL;
	int version;

	/* A query that reads the database, where "SELECT 1" would be
	 * answered without touching the file. */
	if ((version = store_schema_version(st)) < 1) {
		log_error("store: check: schema not readable");
		r = KM_ERR_STORE;
		goto out;
	}
	/* The reader is back in the pool before we wait for the writer. */
	if ((r = write_begin(st)) != KM_OK)
		goto out;
	write_abort(st);
	r = KM_OK;
out:
	return r;
}

int
store_schema_version(struct store *st)
{
	struct conn *c;
	int64_t version = 0;
	int r = KM_ERR_INTERNAL;

	c = reader_get(st);
	r = schema_version_read(c, &version);
	reader_put(st, c);
	if (r != KM_OK || version < 0 || version > INT_MAX)
		return -1;
	return (int)version;
}

void
store_key_free(struct store_key *k)
{
	size_t i;

	if (k == NULL)
		return;
	for (i = 0; i < k->n_versions && k->versions != NULL; i++) {
		km_secure_free(k->versions[i].wrapped, k->versions[i].wrapped_len);
		free(k->versions[i].public_key);
	}
	free(k->versions);
	for (i = 0; i < k->n_required && k->required_context != NULL; i++)
		free(k->required_context[i]);
	free(k->required_context);
	OPENSSL_cleanse(k, sizeof(*k));
	free(k);
}

void
store_token_free(struct store_token *t)
{
	if (t == NULL)
		return;
	free(t->keys);
	free(t->description);
	OPENSSL_cleanse(t, sizeof(*t));
	free(t);
}

/* Non-empty and NUL-terminated within its array. */
static int
str_ok(const char *s, size_t cap)
{
	return s[0] != '\0' && strnlen(s, cap) < cap;
}

static int
blob_ok(const unsigned char *p, size_t len)
{
	return (p == NULL) == (len == 0) && len <= INT_MAX;
}

/* Where the secret lives and the blobs; the state is checked by callers
 * (rotate sets it). */
static int
version_ok(const struct store_version *v)
{
	return (v->storage == STORE_WRAPPED || v->storage == STORE_TOKEN) &&
	    blob_ok(v->wrapped, v->wrapped_len) &&
	    blob_ok(v->public_key, v->public_key_len);
}

/* What store_key_create accepts: the names fit, required_context names can
 * be joined, version numbers are distinct, and primary_version names the
 * one version in state primary (or is 0 when there is none). */
static int
key_validate(const struct store_key *k)
{
	size_t i, j, n_primary = 0;
	uint32_t primary = 0;

	if (!str_ok(k->name, sizeof(k->name)) ||
	    !str_ok(k->type, sizeof(k->type)) ||
	    !str_ok(k->purpose, sizeof(k->purpose)) ||
	    k->rotation_period < 0)
		return KM_ERR_INVALID_REQUEST;
	if (k->n_required > 0 && k->required_context == NULL)
		return KM_ERR_INVALID_REQUEST;
	for (i = 0; i < k->n_required; i++) {
		if (k->required_context[i] == NULL ||
		    k->required_context[i][0] == '\0' ||
		    strchr(k->required_context[i], '\n') != NULL)
			return KM_ERR_INVALID_REQUEST;
	}
	if (k->n_versions > 0 && k->versions == NULL)
		return KM_ERR_INVALID_REQUEST;
	for (i = 0; i < k->n_versions; i++) {
		if (k->versions[i].version == 0 ||
		    !state_valid(k->versions[i].state) ||
		    !version_ok(&k->versions[i]))
			return KM_ERR_INVALID_REQUEST;
		for (j = 0; j < i; j++)
			if (k->versions[j].version == k->versions[i].version)
				return KM_ERR_INVALID_REQUEST;
		if (k->versions[i].state == KM_STATE_PRIMARY) {
			n_primary++;
			primary = k->versions[i].version;
		}
	}
	if (n_primary > 1 || k->primary_version != primary)
		return KM_ERR_INVALID_REQUEST;
	return KM_OK;
}

/* *out is NULL when there are no names. */
static int
context_join(const struct store_key *k, char **out)
{
	struct km_buf b = KM_BUF_INIT(STORE_CONTEXT_MAX);
	size_t i;
	int r = KM_ERR_INTERNAL;

	*out = NULL;
	if (k->n_required == 0) {
		r = KM_OK;
		goto out;
	}
	for (i = 0; i < k->n_required; i++) {
		if (i > 0)
			km_buf_append_str(&b, "\n");
		km_buf_append_str(&b, k->required_context[i]);
	}
	if (b.failed) {
		r = KM_ERR_TOO_LARGE;
		goto out;
	}
	if ((*out = km_buf_take_str(&b)) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	r = KM_OK;
out:
	km_buf_free(&b);
	return r;
}

static int
context_split(const char *joined, struct store_key *k)
{
	const char *p, *nl;
	size_t n = 1, len;

	if (joined == NULL || joined[0] == '\0')
		return KM_OK;
	for (p = joined; (p = strchr(p, '\n')) != NULL; p++)
		n++;
	if ((k->required_context = calloc(n, sizeof(char *))) == NULL)
		return KM_ERR_NOMEM;
	for (p = joined; k->n_required < n; p = nl + 1) {
		nl = strchr(p, '\n');
		len = nl != NULL ? (size_t)(nl - p) : strlen(p);
		if ((k->required_context[k->n_required] = strndup(p, len)) == NULL)
			return KM_ERR_NOMEM;
		k->n_required++;
		if (nl == NULL)
			break;
	}
	return KM_OK;
}

static int
bind_opt(sqlite3_stmt *s, int i, int64_t v)
{
	return v == 0 ? sqlite3_bind_null(s, i) : sqlite3_bind_int64(s, i, v);
}

/* The blob must stay alive until the statement is reset (conn_reset_all). */
static int
bind_blob(sqlite3_stmt *s, int i, const unsigned char *p, size_t len)
{
	if (p == NULL || len == 0)
		return sqlite3_bind_null(s, i);
	if (len > INT_MAX)
		return SQLITE_TOOBIG;
	return sqlite3_bind_blob(s, i, p, (int)len, SQLITE_STATIC);
}

static int
bind_text(sqlite3_stmt *s, int i, const char *t)
{
	if (t == NULL)
		return sqlite3_bind_null(s, i);
	return sqlite3_bind_text(s, i, t, -1, SQLITE_STATIC);
}

static int
col_u32(sqlite3_stmt *s, int col, uint32_t *out)
{
	int64_t v = sqlite3_column_int64(s, col);

	*out = 0;
	if (v < 0 || v > UINT32_MAX)
		return corrupt(s, col);
	*out = (uint32_t)v;
	return KM_OK;
}

/* Copies a TEXT column into a fixed array; a NULL column gives "". */
static int
col_text_fixed(sqlite3_stmt *s, int col, char *dst, size_t cap)
{
	const unsigned char *t;
	int type, n;

	dst[0] = '\0';
	type = sqlite3_column_type(s, col);
	if (type == SQLITE_NULL)
		return KM_OK;
	t = sqlite3_column_text(s, col);
	n = sqlite3_column_bytes(s, col);
	if (t == NULL)
		return KM_ERR_NOMEM;
	if (n < 0 || (size_t)n >= cap)
		return corrupt(s, col);
	memcpy(dst, t, (size_t)n);
	dst[n] = '\0';
	return KM_OK;
}

int
store_col_text_dup(sqlite3_stmt *s, int col, char **out)
{
	const unsigned char *t;

	*out = NULL;
	if (sqlite3_column_type(s, col) == SQLITE_NULL)
		return KM_OK;
	if ((t = sqlite3_column_text(s, col)) == NULL ||
	    (*out = strdup((const char *)t)) == NULL)
		return KM_ERR_NOMEM;
	return KM_OK;
}

int
store_col_blob(sqlite3_stmt *s, int col, unsigned char **out, size_t *len)
{
	const void *p;
	int n;

	*out = NULL;
	*len = 0;
	if (sqlite3_column_type(s, col) == SQLITE_NULL)
		return KM_OK;
	p = sqlite3_column_blob(s, col);
	n = sqlite3_column_bytes(s, col);
	if (n <= 0)
		return KM_OK;
	if (p == NULL)
		return KM_ERR_NOMEM;
	if ((*out = malloc((size_t)n)) == NULL)
		return KM_ERR_NOMEM;
	memcpy(*out, p, (size_t)n);
	*len = (size_t)n;
	return KM_OK;
}

/* Columns VERSION_COLS into *v, which must be zeroed. */
static int
version_from_row(sqlite3_stmt *s, struct store_version *v)
{
	int64_t state, storage, uses;
	int r = KM_ERR_INTERNAL;

	if ((r = col_u32(s, 0, &v->version)) != KM_OK)
		goto out;
	state = sqlite3_column_int64(s, 1);
	storage = sqlite3_column_int64(s, 4);
	uses = sqlite3_column_int64(s, 8);
	if (!state_valid(state)) {
		r = corrupt(s, 1);
		goto out;
	}
	if (storage != STORE_WRAPPED && storage != STORE_TOKEN) {
		r = corrupt(s, 4);
		goto out;
	}
	if (uses < 0) {
		r = corrupt(s, 8);
		goto out;
	}
	v->state = (enum km_state)state;
	v->storage = (enum store_storage)storage;
	v->use_count = (uint64_t)uses;
	v->created_at = sqlite3_column_int64(s, 2);
	v->last_used_at = sqlite3_column_int64(s, 7);
	if ((r = col_u32(s, 3, &v->mek_version)) != KM_OK)
		goto out;
	if ((r = store_col_blob(s, 5, &v->wrapped, &v->wrapped_len)) != KM_OK)
		goto out;
	if ((r = store_col_blob(s, 6, &v->public_key, &v->public_key_len)) != KM_OK)
		goto out;
	r = KM_OK;
out:
	return r;
}

static int
key_load_versions(struct conn *c, struct store_key *k)
{
	sqlite3_stmt *s;
	size_t cap = 0;
	int r = KM_ERR_INTERNAL, rc, row;

	if ((r = conn_stmt(c, S_VERSIONS_OF_KEY, &s)) != KM_OK)
		goto out;
	if ((rc = sqlite3_bind_int64(s, 1, k->id)) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind versions of key");
		goto out;
	}
	for (;;) {
		if ((r = stmt_row(c, s, &row, "read key versions")) != KM_OK)
			goto out;
		if (!row)
			break;
		if ((r = km_grow((void **)&k->versions, &cap, k->n_versions + 1,
		    sizeof(*k->versions))) != KM_OK)
			goto out;
		/* Counted before it is filled (km_grow zeroed it), so
		 * store_key_free cleans up a half-read version too. */
		k->n_versions++;
		if ((r = version_from_row(s, &k->versions[k->n_versions - 1])) != KM_OK)
			goto out;
	}
	r = KM_OK;
out:
	return r;
}

/* Reads the key named `name` (or, when name is NULL, with id `id`) and its
 * versions. Call inside a read or write transaction. */
static int
key_read(struct conn *c, const char *name, int64_t id, struct store_key **out)
{
	struct store_key *k = NULL;
	sqlite3_stmt *s;
	char *joined = NULL;
	int r = KM_ERR_INTERNAL, rc, row;

	*out = NULL;
	if ((r = conn_stmt(c, name != NULL ? S_KEY_BY_NAME : S_KEY_BY_ID, &s)) != KM_OK)
		goto out;
	rc = name != NULL ? sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC) :
	    sqlite3_bind_int64(s, 1, id);
	if (rc != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind key lookup");
		goto out;
	}
	if ((r = stmt_row(c, s, &row, "read key")) != KM_OK)
		goto out;
	if (!row) {
		r = KM_ERR_KEY_NOT_FOUND;
		goto out;
	}
	if ((k = calloc(1, sizeof(*k))) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	k->id = sqlite3_column_int64(s, 0);
	if ((r = col_text_fixed(s, 1, k->name, sizeof(k->name))) != KM_OK ||
	    (r = col_text_fixed(s, 2, k->type, sizeof(k->type))) != KM_OK ||
	    (r = col_text_fixed(s, 3, k->purpose, sizeof(k->purpose))) != KM_OK ||
	    (r = col_u32(s, 4, &k->primary_version)) != KM_OK ||
	    (r = store_col_text_dup(s, 8, &joined)) != KM_OK)
		goto out;
	k->rotation_period = sqlite3_column_int64(s, 5);
	k->next_rotation_at = sqlite3_column_int64(s, 6);
	k->expires_at = sqlite3_column_int64(s, 7);
	k->created_at = sqlite3_column_int64(s, 9);
	if ((r = context_split(joined, k)) != KM_OK)
		goto out;
	if ((r = key_load_versions(c, k)) != KM_OK)
		goto out;
	*out = k;
	k = NULL;
	r = KM_OK;
out:
	free(joined);
	store_key_free(k);
	return r;
}

/* Looks up a key's id inside a write transaction; *found is 0 when absent. */
static int
key_id_by_name(struct conn *c, const char *name, int64_t *id, int *found)
{
	sqlite3_stmt *s;
	int r = KM_ERR_INTERNAL, rc;

	*id = 0;
	if ((r = conn_stmt(c, S_KEY_ID_BY_NAME, &s)) != KM_OK)
		goto out;
	if ((rc = sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC)) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind key name");
		goto out;
	}
	if ((r = stmt_row(c, s, found, "look up key")) != KM_OK)
		goto out;
	if (*found)
		*id = sqlite3_column_int64(s, 0);
	r = KM_OK;
out:
	return r;
}

static int
version_insert(struct conn *c, int64_t key_id, const struct store_version *v)
{
	sqlite3_stmt *s;
	int64_t uses;
	int r = KM_ERR_INTERNAL, rc;

	uses = v->use_count > INT64_MAX ? INT64_MAX : (int64_t)v->use_count;
	if ((r = conn_stmt(c, S_VERSION_INSERT, &s)) != KM_OK)
		goto out;
	if ((rc = sqlite3_bind_int64(s, 1, key_id)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 2, v->version)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 3, v->state)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 4, v->created_at)) != SQLITE_OK ||
	    (rc = bind_opt(s, 5, v->mek_version)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 6, v->storage)) != SQLITE_OK ||
	    (rc = bind_blob(s, 7, v->wrapped, v->wrapped_len)) != SQLITE_OK ||
	    (rc = bind_blob(s, 8, v->public_key, v->public_key_len)) != SQLITE_OK ||
	    (rc = bind_opt(s, 9, v->last_used_at)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 10, uses)) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind key version");
		goto out;
	}
	if ((r = stmt_run(c, s, "insert key version")) != KM_OK)
		goto out;
	r = KM_OK;
out:
	return r;
}

int
store_key_create(struct store *st, struct store_key *key,
    store_commit_hook hook, void *arg)
{
	struct conn *c = &st->w;
	sqlite3_stmt *s;
	char *joined = NULL;
	int64_t id;
	size_t i;
	int r = KM_ERR_INTERNAL, rc, found, began = 0;

	key->id = 0;
	if ((r = key_validate(key)) != KM_OK)
		goto out;
	if ((r = context_join(key, &joined)) != KM_OK)
		goto out;
	if ((r = write_begin(st)) != KM_OK)
		goto out;
	began = 1;
	if ((r = key_id_by_name(c, key->name, &id, &found)) != KM_OK)
		goto out;
	if (found) {
		r = KM_ERR_KEY_EXISTS;
		goto out;
	}
	if ((r = conn_stmt(c, S_KEY_INSERT, &s)) != KM_OK)
		goto out;
	if ((rc = bind_text(s, 1, key->name)) != SQLITE_OK ||
	    (rc = bind_text(s, 2, key->type)) != SQLITE_OK ||
	    (rc = bind_text(s, 3, key->purpose)) != SQLITE_OK ||
	    (rc = bind_opt(s, 4, key->primary_version)) != SQLITE_OK ||
	    (rc = bind_opt(s, 5, key->rotation_period)) != SQLITE_OK ||
	    (rc = bind_opt(s, 6, key->next_rotation_at)) != SQLITE_OK ||
	    (rc = bind_opt(s, 7, key->expires_at)) != SQLITE_OK ||
	    (rc = bind_text(s, 8, joined)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 9, key->created_at)) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind key");
		goto out;
	}
	if ((r = stmt_run(c, s, "insert key")) != KM_OK)
		goto out;
	/* Ours: the writer mutex is held. */
	id = sqlite3_last_insert_rowid(c->db);
	for (i = 0; i < key->n_versions; i++)
		if ((r = version_insert(c, id, &key->versions[i])) != KM_OK)
			goto out;
	key->id = id;
	r = KM_OK;
out:
	if (began)
		r = write_end(st, r, hook, arg);
	if (r != KM_OK)
		key->id = 0;
	free(joined);
	return r;
}

int
store_key_get(struct store *st, const char *name, struct store_key **out)
{
	struct conn *c = NULL;
	uint64_t gen;
	int r = KM_ERR_INTERNAL;

	*out = NULL;
	if (name == NULL) {
		r = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	if ((r = rowcache_key_get(st->rows, name, out)) != KM_ERR_NOT_FOUND)
		goto out;
	gen = rowcache_generation(st->rows);
	if ((r = reader_begin(st, &c)) != KM_OK)
		goto out;
	if ((r = key_read(c, name, 0, out)) != KM_OK)
		goto out;
	rowcache_key_put(st->rows, gen, *out);
	r = KM_OK;
out:
	if (c != NULL)
		reader_put(st, c);
	return r;
}

int
store_key_list(struct store *st, const char *after, size_t limit,
    int (*match)(const char *name, void *arg), void *match_arg,
    struct store_key ***out, size_t *n)
{
	struct store_key **keys = NULL, *k = NULL;
	struct conn *c = NULL;
	sqlite3_stmt *s;
	const char *name;
	size_t cnt = 0, cap = 0, i;
	int r = KM_ERR_INTERNAL, rc, row;

	*out = NULL;
	*n = 0;
	if (limit == 0) {
		r = KM_OK;
		goto out;
	}
	if ((r = reader_begin(st, &c)) != KM_OK)
		goto out;
	if ((r = conn_stmt(c, S_KEY_NAMES_AFTER, &s)) != KM_OK)
		goto out;
	/* Every stored name is non-empty, so "" starts at the beginning. */
	if ((rc = bind_text(s, 1, after != NULL ? after : "")) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind list cursor");
		goto out;
	}
	/* One cursor over the name index inside one read transaction: SQLite
	 * reads rows only as they are stepped, so a match that rejects most
	 * names costs an index step each, and only accepted keys are loaded
	 * (through other statements, which leave this cursor in place). */
	while (cnt < limit) {
		if ((r = stmt_row(c, s, &row, "list keys")) != KM_OK)
			goto out;
		if (!row)
			break;
		if ((name = (const char *)sqlite3_column_text(s, 1)) == NULL) {
			r = KM_ERR_NOMEM;
			goto out;
		}
		if (match != NULL && !match(name, match_arg))
			continue;
		if ((r = key_read(c, NULL, sqlite3_column_int64(s, 0), &k)) != KM_OK)
			goto out;
		if ((r = km_grow((void **)&keys, &cap, cnt + 1, sizeof(*keys))) !=
		    KM_OK)
			goto out;
		keys[cnt++] = k;
		k = NULL;
	}
	*out = keys;
	*n = cnt;
	keys = NULL;
	cnt = 0;
	r = KM_OK;
out:
	if (c != NULL)
		reader_put(st, c);
	store_key_free(k);
	for (i = 0; keys != NULL && i < cnt; i++)
		store_key_free(keys[i]);
	free(keys);
	return r;
}

/* What store_key_rotate_if expects to find under the write lock. */
struct rotate_expect {
	uint32_t primary;
	int64_t next;
};

/* Checks inside the write transaction that key `id` still has the primary
 * version and next rotation time the caller saw. */
static int
rotate_expect_check(struct conn *c, int64_t id, const struct rotate_expect *ex)
{
	sqlite3_stmt *s;
	int r = KM_ERR_INTERNAL, rc, row;

	if ((r = conn_stmt(c, S_KEY_ROTATION_STATE, &s)) != KM_OK)
		goto out;
	if ((rc = sqlite3_bind_int64(s, 1, id)) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind rotation state");
		goto out;
	}
	if ((r = stmt_row(c, s, &row, "read rotation state")) != KM_OK)
		goto out;
	if (!row || sqlite3_column_int64(s, 0) != (int64_t)ex->primary ||
	    sqlite3_column_int64(s, 1) != ex->next) {
		r = KM_ERR_INVALID_TRANSITION;
		goto out;
	}
	r = KM_OK;
out:
	return r;
}

static int
key_rotate(struct store *st, const char *name, const struct rotate_expect *ex,
    struct store_version *nv, int64_t next_rotation_at, store_commit_hook hook,
    void *arg);

int
store_key_rotate(struct store *st, const char *name, struct store_version *nv,
    int64_t next_rotation_at, store_commit_hook hook, void *arg)
{
	return key_rotate(st, name, NULL, nv, next_rotation_at, hook, arg);
}

int
store_key_rotate_if(struct store *st, const char *name,
    uint32_t expect_primary, int64_t expect_next, struct store_version *nv,
    int64_t next_rotation_at, store_commit_hook hook, void *arg)
{
	struct rotate_expect ex = { expect_primary, expect_next };

	return key_rotate(st, name, &ex, nv, next_rotation_at, hook, arg);
}

static int
key_rotate(struct store *st, const char *name, const struct rotate_expect *ex,
    struct store_version *nv, int64_t next_rotation_at, store_commit_hook hook,
    void *arg)
{
	struct conn *c = &st->w;
	sqlite3_stmt *s;
	int64_t id, max;
	int r = KM_ERR_INTERNAL, rc, found, row, began = 0;

	if (name == NULL || !version_ok(nv)) {
		r = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	if ((r = write_begin(st)) != KM_OK)
		goto out;
	began = 1;
	if ((r = key_id_by_name(c, name, &id, &found)) != KM_OK)
		goto out;
	if (!found) {
		r = KM_ERR_KEY_NOT_FOUND;
		goto out;
	}
	if (ex != NULL && (r = rotate_expect_check(c, id, ex)) != KM_OK)
		goto out;
	if ((r = conn_stmt(c, S_VERSION_MAX, &s)) != KM_OK)
		goto out;
	if ((rc = sqlite3_bind_int64(s, 1, id)) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind max version");
		goto out;
	}
	if ((r = stmt_row(c, s, &row, "read max version")) != KM_OK)
		goto out;
	max = row ? sqlite3_column_int64(s, 0) : 0;
	if (max < 0 || max >= UINT32_MAX) {
		log_error("store: key %s has no version number left", name);
		r = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	nv->version = (uint32_t)max + 1;
	nv->state = KM_STATE_PRIMARY;
	/* Demotes by state rather than by keys.primary_version: the same row
	 * whenever the two agree, and never two primaries if they do not. */
	if ((r = conn_stmt(c, S_VERSION_DEMOTE_PRIMARY, &s)) != KM_OK)
		goto out;
	if ((rc = sqlite3_bind_int64(s, 1, id)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 2, KM_STATE_ACTIVE)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 3, KM_STATE_PRIMARY)) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind demote primary");
		goto out;
	}
	if ((r = stmt_run(c, s, "demote primary")) != KM_OK)
		goto out;
	if ((r = version_insert(c, id, nv)) != KM_OK)
		goto out;
	if ((r = conn_stmt(c, S_KEY_SET_PRIMARY, &s)) != KM_OK)
		goto out;
	if ((rc = sqlite3_bind_int64(s, 1, id)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 2, nv->version)) != SQLITE_OK ||
	    (rc = bind_opt(s, 3, next_rotation_at)) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind set primary");
		goto out;
	}
	if ((r = stmt_run(c, s, "set primary")) != KM_OK)
		goto out;
	r = KM_OK;
out:
	if (began)
		r = write_end(st, r, hook, arg);
	return r;
}

int
store_key_set_config(struct store *st, const char *name,
    int64_t rotation_period, int64_t next_rotation_at, int64_t expires_at,
    store_commit_hook hook, void *arg)
{
	struct conn *c = &st->w;
	sqlite3_stmt *s;
	int r = KM_ERR_INTERNAL, rc, began = 0;

	if (name == NULL || rotation_period < 0 || next_rotation_at < 0 ||
	    expires_at < 0) {
		r = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	if ((r = write_begin(st)) != KM_OK)
		goto out;
	began = 1;
	if ((r = conn_stmt(c, S_KEY_SET_CONFIG, &s)) != KM_OK)
		goto out;
	if ((rc = bind_text(s, 1, name)) != SQLITE_OK ||
	    (rc = bind_opt(s, 2, rotation_period)) != SQLITE_OK ||
	    (rc = bind_opt(s, 3, next_rotation_at)) != SQLITE_OK ||
	    (rc = bind_opt(s, 4, expires_at)) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind key config");
		goto out;
	}
	if ((r = stmt_run(c, s, "set key config")) != KM_OK)
		goto out;
	r = sqlite3_changes(c->db) == 1 ? KM_OK : KM_ERR_KEY_NOT_FOUND;
out:
	if (began)
		r = write_end(st, r, hook, arg);
	return r;
}

int
store_version_set_state(struct store *st, const char *name, uint32_t version,
    enum km_state from, enum km_state to, store_commit_hook hook, void *arg)
{
	struct conn *c = &st->w;
	sqlite3_stmt *s;
	int64_t id;
	int r = KM_ERR_INTERNAL, rc, found, row, began = 0;

	if (name == NULL || !state_valid(from) || !state_valid(to)) {
		r = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	/* Primary is entered only by create and rotate, which keep
	 * keys.primary_version and the single primary version in step. */
	if (to == KM_STATE_PRIMARY) {
		r = KM_ERR_INVALID_TRANSITION;
		goto out;
	}
	if ((r = write_begin(st)) != KM_OK)
		goto out;
	began = 1;
	if ((r = key_id_by_name(c, name, &id, &found)) != KM_OK)
		goto out;
	if (!found) {
		r = KM_ERR_KEY_NOT_FOUND;
		goto out;
	}
	if ((r = conn_stmt(c, S_VERSION_STATE, &s)) != KM_OK)
		goto out;
	if ((rc = sqlite3_bind_int64(s, 1, id)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 2, version)) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind version state");
		goto out;
	}
	if ((r = stmt_row(c, s, &row, "read version state")) != KM_OK)
		goto out;
	if (!row) {
		r = KM_ERR_VERSION_NOT_FOUND;
		goto out;
	}
	if (sqlite3_column_int64(s, 0) != from) {
		r = KM_ERR_INVALID_TRANSITION;
		goto out;
	}
	if ((r = conn_stmt(c, S_VERSION_SET_STATE, &s)) != KM_OK)
		goto out;
	if ((rc = sqlite3_bind_int64(s, 1, id)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 2, version)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 3, from)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 4, to)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int(s, 5, to == KM_STATE_DESTROYED)) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind set state");
		goto out;
	}
	if ((r = stmt_run(c, s, "set version state")) != KM_OK)
		goto out;
	if (sqlite3_changes(c->db) != 1) {
		/* Cannot happen: the state was read under the write lock. */
		log_error("store: state of %s v%u changed under the write lock",
		    name, version);
		r = KM_ERR_INTERNAL;
		goto out;
	}
	if (from == KM_STATE_PRIMARY) {
		if ((r = conn_stmt(c, S_KEY_CLEAR_PRIMARY, &s)) != KM_OK)
			goto out;
		if ((rc = sqlite3_bind_int64(s, 1, id)) != SQLITE_OK ||
		    (rc = sqlite3_bind_int64(s, 2, version)) != SQLITE_OK) {
			r = sql_err(c->db, rc, "bind clear primary");
			goto out;
		}
		if ((r = stmt_run(c, s, "clear primary")) != KM_OK)
			goto out;
	}
	r = KM_OK;
out:
	if (began)
		r = write_end(st, r, hook, arg);
	if (r == KM_OK && to == KM_STATE_DESTROYED)
		wal_scrub(st);
	return r;
}

int
store_usage_flush(struct store *st, const struct store_usage *u, size_t n)
{
	struct conn *c = &st->w;
	sqlite3_stmt *s;
	int64_t uses;
	size_t i;
	int r = KM_ERR_INTERNAL, rc, began = 0;

	if (n == 0) {
		r = KM_OK;
		goto out;
	}
	if ((r = write_begin(st)) != KM_OK)
		goto out;
	began = 1;
	for (i = 0; i < n; i++) {
		if (u[i].uses == 0 && u[i].last_used_at == 0)
			continue;
		uses = u[i].uses > INT64_MAX ? INT64_MAX : (int64_t)u[i].uses;
		if ((r = conn_stmt(c, S_VERSION_USAGE, &s)) != KM_OK)
			goto out;
		if ((rc = sqlite3_bind_int64(s, 1, u[i].key_id)) != SQLITE_OK ||
		    (rc = sqlite3_bind_int64(s, 2, u[i].version)) != SQLITE_OK ||
		    (rc = sqlite3_bind_int64(s, 3, uses)) != SQLITE_OK ||
		    (rc = sqlite3_bind_int64(s, 4, u[i].last_used_at)) != SQLITE_OK) {
			r = sql_err(c->db, rc, "bind usage");
			goto out;
		}
		if ((r = stmt_run(c, s, "flush usage")) != KM_OK)
			goto out;
		if (sqlite3_changes(c->db) == 0)
			log_debug("store: usage for unknown version %lld/%u dropped",
			    (long long)u[i].key_id, u[i].version);
	}
	r = KM_OK;
out:
	if (began)
		r = write_end(st, r, NULL, NULL);
	return r;
}

int
store_mek_add(struct store *st, uint32_t version, int64_t created_at,
    store_commit_hook hook, void *arg)
{
	struct conn *c = &st->w;
	sqlite3_stmt *s;
	int r = KM_ERR_INTERNAL, rc, row, began = 0;

	if (version == 0) {
		r = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	if ((r = write_begin(st)) != KM_OK)
		goto out;
	began = 1;
	if ((r = conn_stmt(c, S_MEK_EXISTS, &s)) != KM_OK)
		goto out;
	if ((rc = sqlite3_bind_int64(s, 1, version)) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind MEK version");
		goto out;
	}
	if ((r = stmt_row(c, s, &row, "look up MEK version")) != KM_OK)
		goto out;
	if (row) {
		r = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	if ((r = conn_stmt(c, S_MEK_INSERT, &s)) != KM_OK)
		goto out;
	if ((rc = sqlite3_bind_int64(s, 1, version)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 2, created_at)) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind MEK");
		goto out;
	}
	if ((r = stmt_run(c, s, "insert MEK version")) != KM_OK)
		goto out;
	r = KM_OK;
out:
	if (began)
		r = write_end(st, r, hook, arg);
	return r;
}

int
store_mek_current(struct store *st, uint32_t *version)
{
	struct conn *c;
	sqlite3_stmt *s;
	int r = KM_ERR_INTERNAL, row;

	*version = 0;
	c = reader_get(st);
	if ((r = conn_stmt(c, S_MEK_MAX, &s)) != KM_OK)
		goto out;
	if ((r = stmt_row(c, s, &row, "read MEK version")) != KM_OK)
		goto out;
	if (!row || sqlite3_column_type(s, 0) == SQLITE_NULL) {
		r = KM_ERR_NOT_FOUND;
		goto out;
	}
	if ((r = col_u32(s, 0, version)) != KM_OK)
		goto out;
	r = KM_OK;
out:
	reader_put(st, c);
	return r;
}

/* Columns TOKEN_COLS into a new token. */
static int
token_from_row(sqlite3_stmt *s, struct store_token **out)
{
	struct store_token *t = NULL;
	const void *hash;
	int r = KM_ERR_INTERNAL;

	*out = NULL;
	if ((t = calloc(1, sizeof(*t))) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	if ((r = col_text_fixed(s, 0, t->id, sizeof(t->id))) != KM_OK ||
	    (r = col_text_fixed(s, 2, t->role, sizeof(t->role))) != KM_OK ||
	    (r = store_col_text_dup(s, 3, &t->keys)) != KM_OK ||
	    (r = store_col_text_dup(s, 4, &t->description)) != KM_OK)
		goto out;
	hash = sqlite3_column_blob(s, 1);
	if (sqlite3_column_bytes(s, 1) != (int)sizeof(t->hash) || hash == NULL) {
		r = corrupt(s, 1);
		goto out;
	}
	memcpy(t->hash, hash, sizeof(t->hash));
	t->created_at = sqlite3_column_int64(s, 5);
	t->expires_at = sqlite3_column_int64(s, 6);
	t->revoked_at = sqlite3_column_int64(s, 7);
	*out = t;
	t = NULL;
	r = KM_OK;
out:
	store_token_free(t);
	return r;
}

int
store_token_create(struct store *st, const struct store_token *t,
    store_commit_hook hook, void *arg)
{
	struct conn *c = &st->w;
	sqlite3_stmt *s;
	int r = KM_ERR_INTERNAL, rc, row, began = 0;

	if (!str_ok(t->id, sizeof(t->id)) || !str_ok(t->role, sizeof(t->role))) {
		r = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	if ((r = write_begin(st)) != KM_OK)
		goto out;
	began = 1;
	if ((r = conn_stmt(c, S_TOKEN_EXISTS, &s)) != KM_OK)
		goto out;
	if ((rc = bind_text(s, 1, t->id)) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind token id");
		goto out;
	}
	if ((r = stmt_row(c, s, &row, "look up token")) != KM_OK)
		goto out;
	if (row) {
		r = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	if ((r = conn_stmt(c, S_TOKEN_INSERT, &s)) != KM_OK)
		goto out;
	if ((rc = bind_text(s, 1, t->id)) != SQLITE_OK ||
	    (rc = bind_blob(s, 2, t->hash, sizeof(t->hash))) != SQLITE_OK ||
	    (rc = bind_text(s, 3, t->role)) != SQLITE_OK ||
	    (rc = bind_text(s, 4, t->keys)) != SQLITE_OK ||
	    (rc = bind_text(s, 5, t->description)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 6, t->created_at)) != SQLITE_OK ||
	    (rc = bind_opt(s, 7, t->expires_at)) != SQLITE_OK ||
	    (rc = bind_opt(s, 8, t->revoked_at)) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind token");
		goto out;
	}
	if ((r = stmt_run(c, s, "insert token")) != KM_OK)
		goto out;
	r = KM_OK;
out:
	if (began)
		r = write_end(st, r, hook, arg);
	return r;
}

int
store_token_get(struct store *st, const char *id, struct store_token **out)
{
	struct conn *c = NULL;
	sqlite3_stmt *s;
	uint64_t gen;
	int r = KM_ERR_INTERNAL, rc, row;

	*out = NULL;
	if (id == NULL) {
		r = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	if ((r = rowcache_token_get(st->rows, id, out)) != KM_ERR_NOT_FOUND)
		goto out;
	gen = rowcache_generation(st->rows);
	c = reader_get(st);
	if ((r = conn_stmt(c, S_TOKEN_GET, &s)) != KM_OK)
		goto out;
	if ((rc = bind_text(s, 1, id)) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind token id");
		goto out;
	}
	if ((r = stmt_row(c, s, &row, "read token")) != KM_OK)
		goto out;
	if (!row) {
		r = KM_ERR_TOKEN_NOT_FOUND;
		goto out;
	}
	if ((r = token_from_row(s, out)) != KM_OK)
		goto out;
	rowcache_token_put(st->rows, gen, *out);
	r = KM_OK;
out:
	if (c != NULL)
		reader_put(st, c);
	return r;
}

int
store_token_list(struct store *st, struct store_token ***out, size_t *n)
{
	struct store_token **toks = NULL, *t = NULL;
	struct conn *c;
	sqlite3_stmt *s;
	size_t cnt = 0, cap = 0, i;
	int r = KM_ERR_INTERNAL, row;

	*out = NULL;
	*n = 0;
	c = reader_get(st);
	if ((r = conn_stmt(c, S_TOKEN_LIST, &s)) != KM_OK)
		goto out;
	for (;;) {
		if ((r = stmt_row(c, s, &row, "list tokens")) != KM_OK)
			goto out;
		if (!row)
			break;
		if ((r = token_from_row(s, &t)) != KM_OK)
			goto out;
		if ((r = km_grow((void **)&toks, &cap, cnt + 1, sizeof(*toks))) !=
		    KM_OK)
			goto out;
		toks[cnt++] = t;
		t = NULL;
	}
	*out = toks;
	*n = cnt;
	toks = NULL;
	cnt = 0;
	r = KM_OK;
out:
	reader_put(st, c);
	store_token_free(t);
	for (i = 0; toks != NULL && i < cnt; i++)
		store_token_free(toks[i]);
	free(toks);
	return r;
}

int
store_token_revoke(struct store *st, const char *id, int64_t at,
    store_commit_hook hook, void *arg)
{
	struct conn *c = &st->w;
	sqlite3_stmt *s;
	int r = KM_ERR_INTERNAL, rc, began = 0;

	/* 0 reads back as "not revoked". */
	if (id == NULL || at <= 0) {
		r = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	if ((r = write_begin(st)) != KM_OK)
		goto out;
	began = 1;
	if ((r = conn_stmt(c, S_TOKEN_REVOKE, &s)) != KM_OK)
		goto out;
	if ((rc = bind_text(s, 1, id)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 2, at)) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind token revoke");
		goto out;
	}
	if ((r = stmt_run(c, s, "revoke token")) != KM_OK)
		goto out;
	if (sqlite3_changes(c->db) == 0) {
		r = KM_ERR_TOKEN_NOT_FOUND;
		goto out;
	}
	r = KM_OK;
out:
	if (began)
		r = write_end(st, r, hook, arg);
	return r;
}

/* ---- Scheduler, alerts and metrics ---- */

static int64_t
limit_i64(size_t limit)
{
	return limit > INT64_MAX ? INT64_MAX : (int64_t)limit;
}

/* Steps `s` to its end into a new array of `elem`-byte rows, each zeroed
 * and then filled by fill(s, row); hands the array to *out and its length
 * to *n. `what` names the query in errors. Rows that own no memory only:
 * on failure the array is freed as it is. */
static int
rows_read(struct conn *c, sqlite3_stmt *s, const char *what, size_t elem,
    int (*fill)(sqlite3_stmt *s, void *row), void **out, size_t *n)
{
	void *arr = NULL;
	size_t cnt = 0, cap = 0;
	int r = KM_ERR_INTERNAL, row;

	for (;;) {
		if ((r = stmt_row(c, s, &row, what)) != KM_OK)
			goto out;
		if (!row)
			break;
		if ((r = km_grow(&arr, &cap, cnt + 1, elem)) != KM_OK ||
		    (r = fill(s, (char *)arr + cnt * elem)) != KM_OK)
			goto out;
		cnt++;
	}
	*out = arr;
	*n = cnt;
	arr = NULL;
	r = KM_OK;
out:
	free(arr);
	return r;
}

/* A row of a SCHED_FROM query. */
static int
sched_fill(sqlite3_stmt *s, void *row)
{
	struct store_sched_key *k = row;
	int r;

	k->key_id = sqlite3_column_int64(s, 0);
	if ((r = col_text_fixed(s, 1, k->name, sizeof(k->name))) != KM_OK ||
	    (r = col_text_fixed(s, 2, k->type, sizeof(k->type))) != KM_OK ||
	    (r = col_u32(s, 3, &k->primary_version)) != KM_OK)
		return r;
	k->rotation_period = sqlite3_column_int64(s, 4);
	k->next_rotation_at = sqlite3_column_int64(s, 5);
	k->expires_at = sqlite3_column_int64(s, 6);
	k->primary_created_at = sqlite3_column_int64(s, 7);
	return KM_OK;
}

/* Steps a SCHED_FROM query into a new array. */
static int
sched_rows(struct conn *c, sqlite3_stmt *s, struct store_sched_key **out,
    size_t *n)
{
	return rows_read(c, s, "list scheduled keys", sizeof(**out), sched_fill,
	    (void **)out, n);
}

int
store_keys_due(struct store *st, int64_t before, size_t limit,
    struct store_sched_key **out, size_t *n)
{
	struct conn *c;
	sqlite3_stmt *s;
	int r = KM_ERR_INTERNAL, rc;

	*out = NULL;
	*n = 0;
	c = reader_get(st);
	if ((r = conn_stmt(c, S_KEYS_DUE, &s)) != KM_OK)
		goto out;
	if ((rc = sqlite3_bind_int64(s, 1, before)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 2, limit_i64(limit))) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind due keys");
		goto out;
	}
	r = sched_rows(c, s, out, n);
out:
	reader_put(st, c);
	return r;
}

int
store_keys_scheduled(struct store *st, int by_expiry, size_t limit,
    struct store_sched_key **out, size_t *n)
{
	struct conn *c;
	sqlite3_stmt *s;
	int r = KM_ERR_INTERNAL, rc;

	*out = NULL;
	*n = 0;
	c = reader_get(st);
	if ((r = conn_stmt(c, by_expiry ? S_KEYS_BY_EXPIRY : S_KEYS_BY_NEXT,
	    &s)) != KM_OK)
		goto out;
	if ((rc = sqlite3_bind_int64(s, 1, limit_i64(limit))) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind scheduled keys");
		goto out;
	}
	r = sched_rows(c, s, out, n);
out:
	reader_put(st, c);
	return r;
}

static int
expiring_fill(sqlite3_stmt *s, void *row)
{
	struct store_expiring *e = row;
	int r;

	e->key_id = sqlite3_column_int64(s, 0);
	if ((r = col_text_fixed(s, 1, e->name, sizeof(e->name))) != KM_OK)
		return r;
	e->expires_at = sqlite3_column_int64(s, 2);
	e->threshold = sqlite3_column_int64(s, 3);
	return KM_OK;
}

int
store_keys_expiring(struct store *st, int64_t now, int64_t t1, int64_t t2,
    int64_t t3, size_t limit, struct store_expiring **out, size_t *n)
{
	struct conn *c;
	sqlite3_stmt *s;
	int r = KM_ERR_INTERNAL, rc;

	*out = NULL;
	*n = 0;
	if (t1 <= 0 || t2 <= t1 || t3 <= t2 || t3 > INT64_MAX / 2000000)
		return KM_ERR_INVALID_REQUEST;
	c = reader_get(st);
	if ((r = conn_stmt(c, S_KEYS_EXPIRING, &s)) != KM_OK)
		goto out;
	if ((rc = sqlite3_bind_int64(s, 1, now)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 2, t1)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 3, t2)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 4, t3)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 5, limit_i64(limit))) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind expiring keys");
		goto out;
	}
	r = rows_read(c, s, "list expiring keys", sizeof(**out), expiring_fill,
	    (void **)out, n);
out:
	reader_put(st, c);
	return r;
}

int
store_alert_add(struct store *st, struct store_alert *a,
    store_commit_hook hook, void *arg)
{
	struct conn *c = &st->w;
	sqlite3_stmt *s;
	int r = KM_ERR_INTERNAL, rc, began = 0;

	a->id = 0;
	if (a->key_id <= 0 || !str_ok(a->kind, sizeof(a->kind)) ||
	    strnlen(a->detail, sizeof(a->detail)) >= sizeof(a->detail)) {
		r = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	if ((r = write_begin(st)) != KM_OK)
		goto out;
	began = 1;
	if ((r = conn_stmt(c, S_ALERT_INSERT, &s)) != KM_OK)
		goto out;
	if ((rc = sqlite3_bind_int64(s, 1, a->key_id)) != SQLITE_OK ||
	    (rc = bind_text(s, 2, a->kind)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 3, a->threshold)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 4, a->ref_at)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 5, a->raised_at)) != SQLITE_OK ||
	    (rc = bind_text(s, 6, a->detail[0] ? a->detail : NULL)) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind alert");
		goto out;
	}
	if ((r = stmt_run(c, s, "insert alert")) != KM_OK)
		goto out;
	if (sqlite3_changes(c->db) == 0) {
		r = KM_ERR_KEY_EXISTS;
		goto out;
	}
	/* Ours: the writer mutex is held. */
	a->id = sqlite3_last_insert_rowid(c->db);
	r = KM_OK;
out:
	if (began)
		r = write_end(st, r, hook, arg);
	if (r != KM_OK)
		a->id = 0;
	return r;
}

static int
alert_fill(sqlite3_stmt *s, void *row)
{
	struct store_alert *a = row;
	int r;

	a->id = sqlite3_column_int64(s, 0);
	a->key_id = sqlite3_column_int64(s, 1);
	if ((r = col_text_fixed(s, 2, a->key, sizeof(a->key))) != KM_OK ||
	    (r = col_text_fixed(s, 3, a->kind, sizeof(a->kind))) != KM_OK ||
	    (r = col_text_fixed(s, 7, a->detail, sizeof(a->detail))) != KM_OK)
		return r;
	a->threshold = sqlite3_column_int64(s, 4);
	a->ref_at = sqlite3_column_int64(s, 5);
	a->raised_at = sqlite3_column_int64(s, 6);
	return KM_OK;
}

int
store_alert_list(struct store *st, int64_t after, const char *key,
    size_t limit, struct store_alert **out, size_t *n)
{
	struct conn *c;
	sqlite3_stmt *s;
	int r = KM_ERR_INTERNAL, rc;

	*out = NULL;
	*n = 0;
	c = reader_get(st);
	if ((r = conn_stmt(c, S_ALERT_LIST, &s)) != KM_OK)
		goto out;
	if ((rc = sqlite3_bind_int64(s, 1, after)) != SQLITE_OK ||
	    (rc = bind_text(s, 2, key)) != SQLITE_OK ||
	    (rc = sqlite3_bind_int64(s, 3, limit_i64(limit))) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind alert list");
		goto out;
	}
	r = rows_read(c, s, "list alerts", sizeof(**out), alert_fill,
	    (void **)out, n);
out:
	reader_put(st, c);
	return r;
}

int
store_state_stats(struct store *st, struct store_state_stats *out)
{
	struct conn *c = NULL;
	sqlite3_stmt *s;
	double uses;
	int64_t state;
	int r = KM_ERR_INTERNAL, row;

	memset(out, 0, sizeof(*out));
	if ((r = reader_begin(st, &c)) != KM_OK)
		goto out;
	if ((r = conn_stmt(c, S_KEY_COUNT, &s)) != KM_OK)
		goto out;
	if ((r = stmt_row(c, s, &row, "count keys")) != KM_OK)
		goto out;
	if (row && sqlite3_column_int64(s, 0) > 0)
		out->keys = (uint64_t)sqlite3_column_int64(s, 0);
	if ((r = conn_stmt(c, S_STATE_STATS, &s)) != KM_OK)
		goto out;
	for (;;) {
		if ((r = stmt_row(c, s, &row, "version statistics")) != KM_OK)
			goto out;
		if (!row)
			break;
		state = sqlite3_column_int64(s, 0);
		if (!state_valid(state)) {
			r = corrupt(s, 0);
			goto out;
		}
		out->versions[state] = (uint64_t)sqlite3_column_int64(s, 1);
		uses = sqlite3_column_double(s, 2);
		out->uses[state] = uses <= 0 ? 0 : uses >= 1.8e19 ?
		    UINT64_MAX : (uint64_t)uses;
	}
	r = KM_OK;
out:
	if (c != NULL)
		reader_put(st, c);
	return r;
}

static int
version_use_fill(sqlite3_stmt *s, void *row)
{
	struct store_version_use *u = row;
	int64_t state, uses;
	int r;

	u->key_id = sqlite3_column_int64(s, 0);
	if ((r = col_text_fixed(s, 1, u->name, sizeof(u->name))) != KM_OK ||
	    (r = col_u32(s, 2, &u->version)) != KM_OK)
		return r;
	state = sqlite3_column_int64(s, 3);
	uses = sqlite3_column_int64(s, 4);
	if (!state_valid(state) || uses < 0)
		return corrupt(s, state_valid(state) ? 4 : 3);
	u->state = (enum km_state)state;
	u->use_count = (uint64_t)uses;
	u->last_used_at = sqlite3_column_int64(s, 5);
	u->created_at = sqlite3_column_int64(s, 6);
	return KM_OK;
}

int
store_version_uses(struct store *st, size_t max_keys,
    struct store_version_use **out, size_t *n)
{
	struct conn *c = NULL;
	sqlite3_stmt *s;
	int r = KM_ERR_INTERNAL, rc;

	*out = NULL;
	*n = 0;
	if ((r = reader_begin(st, &c)) != KM_OK)
		goto out;
	if ((r = conn_stmt(c, S_VERSION_USES, &s)) != KM_OK)
		goto out;
	if ((rc = sqlite3_bind_int64(s, 1, limit_i64(max_keys))) != SQLITE_OK) {
		r = sql_err(c->db, rc, "bind version uses");
		goto out;
	}
	r = rows_read(c, s, "version uses", sizeof(**out), version_use_fill,
	    (void **)out, n);
out:
	if (c != NULL)
		reader_put(st, c);
	return r;
}
