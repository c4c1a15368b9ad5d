/* The ceremony tables of store migration 3 (officers, settings, ceremonies,
 * ceremony_decisions, mek_rotations, audit_keys) and the MEK-rotation
 * queries on key_versions. All SQL of ceremony/ lives here, run through
 * store_write_tx (the one writer, commit hook before COMMIT) and
 * store_read_tx (a read-only connection, one snapshot). */
#ifndef CER_STORE_H
#define CER_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "cer.h"
#include "store.h"

/* A ceremony as stored. */
struct cer_record {
	struct cer_request req;
	char *text;			/* the canonical request text (owned) */
	char digest[65];
	char status[16];		/* open executed cancelled rejected stale */
	int64_t closed_at;		/* microseconds; 0 while open */
	char closed_by[CER_REQUESTER_MAX + 1];
	char *result;			/* JSON text of what execution did, or NULL */
	struct cer_decision *decisions;	/* owned, in the order they came */
	size_t n_decisions;
	/* Bytes uploaded with the request (key.import), written by
	 * cer_store_insert; not loaded by cer_store_get (cer_store_upload). */
	const unsigned char *upload;
	size_t upload_len;
};
void cer_record_free(struct cer_record *c);
void cer_records_free(struct cer_record **c, size_t n);

/* Every officer, active and removed, sorted by name. */
int cer_store_officers(struct store *st, struct cer_officer **out, size_t *n)
    KM_WUR;
/* The quorum M; 0 when none is set (before kmsctl init --officers). */
int cer_store_quorum(struct store *st, int *quorum) KM_WUR;
/* kmsctl init: registers the first officers and M in one transaction.
 * KM_ERR_KEY_EXISTS when officers are registered already. */
int cer_store_bootstrap(struct store *st, const struct cer_officer *o,
    size_t n, int quorum, store_commit_hook hook, void *arg) KM_WUR;

/* Stores a new open ceremony. */
int cer_store_insert(struct store *st, const struct cer_record *c,
    store_commit_hook hook, void *arg) KM_WUR;
/* The bytes uploaded with ceremony `id`; *data (free()) NULL and
 * KM_ERR_NOT_FOUND when there are none (or no longer: closing a ceremony
 * deletes them). */
int cer_store_upload(struct store *st, const char *id, unsigned char **data,
    size_t *len) KM_WUR;
/* KM_ERR_CEREMONY_NOT_FOUND when absent. */
int cer_store_get(struct store *st, const char *id, struct cer_record **out)
    KM_WUR;
/* The newest `limit` ceremonies (created before `before_us` when it is not
 * 0), with status `status` when not NULL, newest first. Decisions are
 * loaded too. */
int cer_store_list(struct store *st, const char *status, int64_t before_us,
    size_t limit, struct cer_record ***out, size_t *n) KM_WUR;
/* Records officer d->officer's decision on open ceremony `id` (replacing
 * an approval when `replace`), and when `close_status` is not NULL closes
 * the ceremony with it (a reject that leaves the quorum out of reach).
 * KM_ERR_CEREMONY_CLOSED when the ceremony is no longer open. */
int cer_store_decide(struct store *st, const char *id,
    const struct cer_decision *d, int replace, const char *close_status,
    store_commit_hook hook, void *arg) KM_WUR;
/* Closes open ceremony `id` with `status` (cancelled, stale). */
int cer_store_close(struct store *st, const char *id, const char *status,
    const char *by, store_commit_hook hook, void *arg) KM_WUR;

/* What an execution changes, in the transaction that marks it executed. */
enum cer_change_kind {
	CER_CH_NONE = 0,
	CER_CH_OFFICER_ADD,	/* name, spki */
	CER_CH_OFFICER_REMOVE,	/* name */
	CER_CH_QUORUM,		/* quorum */
	CER_CH_KEY_STATE,	/* key, version, from, to, erase */
	CER_CH_MEK_ROTATE,	/* mek_old, mek_new, total */
	CER_CH_MEK_DISABLE,	/* mek_old */
	CER_CH_AUDIT_KEY,	/* label, kid, prev_label, prev_kid */
	CER_CH_KEY_IMPORT,	/* key, version, wrapped, mek_new, create */
};

struct cer_change {
	enum cer_change_kind kind;
	const char *name;
	const unsigned char *spki;
	size_t spki_len;
	int quorum;
	const char *key;
	uint32_t version;
	int from, to;			/* enum km_state */
	int erase;			/* clear the wrapped blob */
	uint32_t mek_old, mek_new;
	int64_t total;
	const char *label, *kid, *prev_label, *prev_kid;
	/* key.import: the version's blob under MEK mek_new; create: a new
	 * key `key` of type aes256-gcm, else a new primary version of it. */
	const unsigned char *wrapped;
	size_t wrapped_len;
	int create;
};

/* Marks open ceremony `id` executed (closed_by `by`, result JSON text) and
 * applies `ch`, all or nothing, with the hook before COMMIT.
 * KM_ERR_CEREMONY_CLOSED when it was not open; KM_ERR_STATE_CHANGED when
 * the change no longer applies (a version left its state, an officer name
 * was taken meanwhile, ...). */
int cer_store_execute(struct store *st, const char *id, const char *by,
    const char *result, const struct cer_change *ch, store_commit_hook hook,
    void *arg) KM_WUR;

/* MEK versions with the number of key versions whose material is wrapped
 * under each. */
struct cer_mek {
	uint32_t version;
	char state[16];			/* active, retired, disabled */
	int64_t created_at;
	int64_t versions;
};
int cer_store_meks(struct store *st, struct cer_mek **out, size_t *n) KM_WUR;
/* Key versions with material wrapped under MEK `mek`. */
int cer_store_count_under(struct store *st, uint32_t mek, int64_t *n) KM_WUR;

struct cer_rotation {
	int64_t id;
	char ceremony_id[CER_ID_HEX + 1];
	uint32_t old_version, new_version;
	char state[16];			/* running, verified */
	int64_t cursor_key;
	uint32_t cursor_version;
	int64_t total, done, passes;
	int64_t started_at, updated_at, finished_at;
};
/* The newest rotation; *found is 0 when there was none. */
int cer_store_rotation_last(struct store *st, struct cer_rotation *out,
    int *found) KM_WUR;

struct cer_rewrap_item {
	int64_t key_id;
	uint32_t version;
	char type[16];
	unsigned char *wrapped;		/* owned, under the old MEK */
	size_t wrapped_len;
	unsigned char *out;		/* owned, under the new MEK, or NULL */
	size_t out_len;
};
void cer_rewrap_items_free(struct cer_rewrap_item *it, size_t n);
/* Up to `limit` versions under MEK `old` after (key_id, version) in
 * (key_id, version) order. */
int cer_store_rewrap_batch(struct store *st, uint32_t old, int64_t after_key,
    uint32_t after_version, size_t limit, struct cer_rewrap_item **out,
    size_t *n) KM_WUR;
/* Writes each item's `out` blob under rot->new_version where the row still
 * holds the old blob under rot->old_version (*changed counts those), moves
 * the rotation's cursor to (cursor_key, cursor_version) and adds to done. */
int cer_store_rewrap_commit(struct store *st, const struct cer_rotation *rot,
    const struct cer_rewrap_item *it, size_t n, int64_t cursor_key,
    uint32_t cursor_version, size_t *changed, store_commit_hook hook,
    void *arg) KM_WUR;
/* Starts another pass from the beginning (versions created under the old
 * MEK while the first pass ran). */
int cer_store_rotation_new_pass(struct store *st, int64_t id) KM_WUR;
/* Marks the rotation verified when no version is left under its old MEK
 * (checked in the same transaction: KM_ERR_STATE_CHANGED otherwise). */
int cer_store_rotation_finish(struct store *st, int64_t id, uint32_t old,
    store_commit_hook hook, void *arg) KM_WUR;

struct cer_audit_key {
	char label[65];
	char kid[65];
	int generation;
	int64_t created_at;
};
/* The audit-signing keys recorded by audit_key.rotate, oldest first (none
 * before the first rotation: then only cfg->audit_key_label exists). */
int cer_store_audit_keys(struct store *st, struct cer_audit_key **out,
    size_t *n) KM_WUR;

#endif
