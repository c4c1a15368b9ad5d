/* Inside ceremony/: the runtime struct and what cer_run.c, cer_ops.c and
 * cer_mek.c share. Not for other modules. */
#ifndef CER_INT_H
#define CER_INT_H

#include <pthread.h>
#include <stdint.h>

#include <jansson.h>

#include "cer.h"
#include "cer_run.h"
#include "cer_store.h"

struct cer_signer {
	struct hsm *hsm;
	char label[65];
};

struct cer {
	struct api_ctx *ctx;
	/* Serialises create, decide, execute, cancel and revoke: each reads
	 * the registry and the ceremony, then writes; one at a time. */
	pthread_mutex_t lock;
	int n_sync;

	/* Checkpoint signing: the key in use, and what was handed to the
	 * audit log or published (freed by cer_free, after the log). */
	pthread_mutex_t akeys_lock;
	char audit_label[65];
	char audit_kid[65];
	struct cer_signer **signers;
	size_t n_signers;
	json_t **old_keys;
	size_t n_old_keys;

	/* The MEK rotation worker. */
	pthread_mutex_t wlock;
	pthread_cond_t wcond;
	pthread_t worker;
	int joinable;		/* a thread to join */
	int running;		/* it has not finished */
	int stop;		/* asked to stop */
	char last_error[CER_WHY];
	int64_t rate_t0;	/* when the current worker started */
	int64_t rate_done0;	/* rotation done count then */
};

/* What one execution changes, and the storage behind the pointers. */
struct cer_exec {
	struct cer_change ch;
	char name[CER_NAME_MAX + 1];
	char key[129];
	int64_t key_id;
	char label[65], kid[65], prev_label[65], prev_kid[65];
	unsigned char *spki;
	size_t spki_len;
	unsigned char *blob;	/* key.import: the version under the MEK */
	size_t blob_len;
	json_t *result;		/* what the execution did (owned) */
};

struct cer_opdef {
	const char *name;
	/* The parameters a client may send (NULL-terminated). */
	const char *const *params;
	/* Turns the client's params into canonical ones (derived ones too)
	 * and checks the preconditions, at creation. */
	int (*prepare)(struct cer *c, json_t *params, struct cer_request *r,
	    char why[CER_WHY]);
	/* The preconditions again, at execution. */
	int (*check)(struct cer *c, const struct cer_request *r,
	    char why[CER_WHY]);
	/* The lines of the state the operation acts on (hashed into the
	 * request's `state`). */
	int (*state)(struct cer *c, const struct cer_request *r,
	    struct km_buf *b);
	/* The token side effects before the commit; fills x->ch, x->result. */
	int (*run)(struct cer *c, const struct cer_record *rec,
	    struct cer_exec *x, char why[CER_WHY]);
	/* After the commit (may be NULL). */
	void (*after)(struct cer *c, const struct cer_record *rec,
	    const struct cer_exec *x);
	/* For an operation that takes uploaded bytes (NULL: it takes none):
	 * checks them at creation and adds their canonical params. */
	int (*upload)(struct cer *c, const unsigned char *data, size_t len,
	    struct cer_request *r, char why[CER_WHY]);
};

const struct cer_opdef *cer_op_find(const char *name);
/* SHA-256 of "kms-ceremony-state/v1\noperation: <op>\n" and op->state. */
int cer_state_hash(struct cer *c, const struct cer_opdef *op,
    const struct cer_request *r, char hex[65]) KM_WUR;

void cer_why(char why[CER_WHY], const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A record of kmsd's own (actor "kmsd"): rotation batches, closing a
 * stale ceremony. `request_id` NULL: a fresh one. `fields` is merged. */
int cer_audit_record(struct cer *c, const char *request_id, const char *op,
    json_t *fields, const char *outcome) KM_WUR;
/* Signs checkpoints with token key `label` from now on and publishes it
 * with every earlier key at /v1/audit/keys. */
int cer_audit_switch(struct cer *c, const char *label) KM_WUR;
/* Starts the rotation worker when a rotation is running and no worker is. */
int cer_mek_start(struct cer *c) KM_WUR;
/* The active officers. */
size_t cer_active_count(const struct cer_officer *o, size_t n);

#endif
