/* Ceremonies inside kmsd: create, decide, execute and cancel them against
 * the store and the token; the signed emergency revoke; the MEK rotation
 * worker; the audit-signing key switch; and the first officers that
 * `kmsctl init --officers` registers. One struct cer per kmsd (api_ctx). */
#ifndef CER_RUN_H
#define CER_RUN_H

#include <stdint.h>

#include <jansson.h>

#include "cer.h"
#include "store.h"

struct api_ctx;
struct audit;
struct cer;
struct cer_record;

/* Length of the explanation buffers (`why`): a sentence for the client. */
#define CER_WHY 256

/* Who acts, and how the record of their request reaches the audit log. */
struct cer_actor {
	const char *request_id;
	const char *actor;		/* "token:<id>" of the bearer */
	json_t *fields;			/* audit members; cer_* adds to it */
	/* Writes the request's ok record (with `fields`) inside the store
	 * transaction, before COMMIT. */
	store_commit_hook commit;
	void *commit_arg;
};

/* Starts the ceremony runtime of kmsd: switches checkpoint signing to the
 * newest audit-signing key a ceremony made, and resumes an unfinished MEK
 * rotation in a worker thread. */
int cer_new(struct api_ctx *ctx, struct cer **out) KM_WUR;
/* Stops the rotation worker (it resumes at the next start). NULL: no-op. */
void cer_stop(struct cer *c);
/* After cer_stop and after the audit log is closed (it may still sign
 * with a signer owned here until then). NULL is a no-op. */
void cer_free(struct cer *c);

/* The import key of key.import (docs/CEREMONIES.md): *label is
 * kms-import-v1, *spki (free()) its DER public key. With `create`, makes
 * it in the token when absent and sets *created; without, KM_ERR_NOT_FOUND
 * when absent. */
#define CER_IMPORT_LABEL "kms-import-v1"
int cer_import_key(struct cer *c, int create, unsigned char **spki,
    size_t *spki_len, int *created) KM_WUR;
/* Largest upload a ceremony takes (key.import: an RSA-3072 ciphertext is
 * 384 bytes). */
#define CER_UPLOAD_MAX 4096

/* Creates an open ceremony for `operation` with the client's `params`
 * (an object of strings or integers; NULL for none), valid for `ttl_s`
 * seconds. `requester` is a->actor, or an officer name when the request
 * is signed: then `officer_ts` and `officer_sig` are the ts and signature
 * of cer_request_message. `id` receives the new ceremony's id. */
int cer_create(struct cer *c, const char *operation, json_t *params,
    int64_t ttl_s, const char *officer, const char *officer_ts,
    const char *officer_sig, struct cer_actor *a, char id[CER_ID_HEX + 1],
    char why[CER_WHY]) KM_WUR;
/* cer_create with bytes uploaded beside the request (key.import's
 * wrapped key), stored with it; the operation puts their SHA-256 into
 * the signed text. Operations that take no upload refuse one. */
int cer_create_upload(struct cer *c, const char *operation, json_t *params,
    const unsigned char *upload, size_t upload_len, int64_t ttl_s,
    const char *officer, const char *officer_ts, const char *officer_sig,
    struct cer_actor *a, char id[CER_ID_HEX + 1], char why[CER_WHY]) KM_WUR;
/* Records an officer's signed decision. *duplicate is 1 when the same
 * decision was recorded already (nothing changes). A reject that leaves
 * fewer possible approvers than the quorum closes it as "rejected". */
int cer_decide(struct cer *c, const char *id, const char *officer,
    const char *decision, const char *signature, struct cer_actor *a,
    int *duplicate, char why[CER_WHY]) KM_WUR;
/* Runs the operation if the quorum is met, the ceremony is open and not
 * expired and the target state is unchanged; at most once. */
int cer_execute(struct cer *c, const char *id, struct cer_actor *a,
    char why[CER_WHY]) KM_WUR;
int cer_cancel(struct cer *c, const char *id, struct cer_actor *a,
    char why[CER_WHY]) KM_WUR;
/* The emergency revoke: one active officer's signature over
 * cer_revoke_message, with a ts within CER_TS_WINDOW_S. */
int cer_revoke(struct cer *c, const char *key, uint32_t version,
    const char *officer, const char *ts, const char *nonce,
    const char *signature, struct cer_actor *a, char why[CER_WHY]) KM_WUR;

/* JSON views for the API. */
int cer_get_json(struct cer *c, const char *id, json_t **out) KM_WUR;
int cer_list_json(struct cer *c, const char *status, int64_t before_us,
    size_t limit, json_t **out) KM_WUR;
int cer_officers_json(struct cer *c, json_t **out) KM_WUR;
int cer_mek_json(struct cer *c, json_t **out) KM_WUR;
/* Restarts the rotation worker if a rotation is unfinished and it is not
 * running. KM_ERR_NOT_FOUND when there is nothing to resume. */
int cer_mek_resume(struct cer *c, char why[CER_WHY]) KM_WUR;

/* kmsctl init --officers DIR --quorum M: registers every DIR/<name>.pub.pem
 * (ECDSA P-256 public keys) as an active officer and M as the quorum, with
 * audit records officer.add and quorum.set under `request_id`. Skipped
 * (KM_OK, a note printed) when officers exist. Prints one line a step. */
int cer_bootstrap(struct store *st, struct audit *au, const char *request_id,
    const char *dir, int quorum) KM_WUR;

#endif
