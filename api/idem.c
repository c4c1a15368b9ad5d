/* Idempotency-Key on batch rewraps: a repeat of a request gets the stored
 * answer of the first instead of a second execution (docs/API.md). */
#include "api.h"

#include <string.h>

#include <jansson.h>

#include "cfg.h"
#include "idem.h"
#include "log.h"

/* Only rewrap: its request and answer hold ciphertexts and contexts, never
 * plaintext. The answers of unwrap and datakey hold plaintext, which must
 * not be stored, and the body of a wrap holds plaintext, of which even a
 * stored hash would let a low-entropy secret be guessed offline. */
static int
idem_supported(const struct api_route *rt)
{
	return strcmp(rt->method, "POST") == 0 && strcmp(rt->op, "rewrap") == 0;
}

static int
replay(struct api_req *rq, struct idem_entry *e)
{
	json_t *ans = NULL;

	if (e->answer != NULL)
		ans = json_loads(e->answer, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(ans)) {
		json_decref(ans);
		log_error("idempotency keys: the stored answer of request %s is "
		    "not a JSON object", e->request_id);
		api_error(rq, KM_ERR_STORE, "the stored answer of this "
		    "Idempotency-Key cannot be read");
		return -1;
	}
	api_audit_set(rq, "replay", json_true());
	api_audit_set(rq, "replay_of", json_string(e->request_id));
	api_answer(rq, e->status, ans);
	return -1;
}

int
api_idem_begin(struct api_req *rq, const struct api_route *rt)
{
	const char *key = rq->idempotency_key;
	unsigned char hash[32];
	struct idem_entry e;
	enum idem_state state;
	int64_t ttl;
	int r, answered = -1;

	memset(&e, 0, sizeof(e));
	rq->idem_running = 0;
	if (key == NULL && rq->n_idempotency_keys == 0)
		return 0;
	if (rq->n_idempotency_keys > 1) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "a request has at most one "
		    "Idempotency-Key header");
		goto out;
	}
	if (!idem_supported(rt)) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "Idempotency-Key is "
		    "accepted only on POST /v1/keys/{name}/rewrap (answers "
		    "holding plaintext are never stored)");
		goto out;
	}
	if (!idem_key_valid(key)) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "Idempotency-Key must be "
		    "1..%d characters of A-Z a-z 0-9 . _ : -", IDEM_MAX_KEY);
		goto out;
	}
	api_audit_set(rq, "idempotency_key", json_string(key));
	ttl = rq->ctx->cfg != NULL ? rq->ctx->cfg->idempotency_ttl_seconds :
	    86400;
	if ((r = idem_request_hash(rq->method, rq->path, rq->body,
	    rq->body_len, hash)) != KM_OK ||
	    (r = idem_begin(rq->ctx->store, rq->who.actor, key, hash,
	    rq->request_id, km_now_us(), ttl * 1000000, &state, &e)) != KM_OK) {
		api_error(rq, r, "the Idempotency-Key could not be recorded");
		goto out;
	}
	switch (state) {
	case IDEM_NEW:
		rq->idem_running = 1;
		answered = 0;
		break;
	case IDEM_IN_PROGRESS:
		api_error(rq, KM_ERR_IDEMPOTENCY_IN_PROGRESS, "a request with "
		    "Idempotency-Key '%s' is still running; send it again when "
		    "it has ended", key);
		break;
	case IDEM_MISMATCH:
		api_error(rq, KM_ERR_IDEMPOTENCY_REUSED, "Idempotency-Key '%s' "
		    "was used for a different request; use a new key", key);
		break;
	case IDEM_REPLAY:
		replay(rq, &e);
		break;
	}
out:
	idem_entry_clear(&e);
	return answered;
}

/* Best effort: a running entry left behind only makes a repeat answer 409
 * until it expires or kmsd restarts. */
static void
release(struct api_req *rq)
{
	if (idem_abandon(rq->ctx->store, rq->who.actor,
	    rq->idempotency_key) != KM_OK)
		log_warn("idempotency keys: could not release key '%s' of %s "
		    "(request %s)", rq->idempotency_key, rq->who.actor,
		    rq->request_id);
}

void
api_idem_finish(struct api_req *rq)
{
	char *text = NULL;
	int r;

	rq->idem_running = 0;
	/* Only a success is kept: a refused request may be sent again. */
	if (rq->status != 200 || rq->answer == NULL || rq->answer_secret ||
	    rq->raw != NULL) {
		release(rq);
		return;
	}
	if ((text = json_dumps(rq->answer, JSON_COMPACT)) == NULL) {
		release(rq);
		api_error(rq, KM_ERR_NOMEM, "out of memory");
		return;
	}
	/* The audit record is written in the commit hook: the stored answer
	 * and the record of the rewraps it holds commit together, before the
	 * answer leaves. */
	r = idem_finish(rq->ctx->store, rq->who.actor, rq->idempotency_key,
	    rq->status, text, api_audit_ok_hook, rq);
	free(text);
	if (r == KM_OK)
		return;
	release(rq);
	if (rq->audited)
		api_error(rq, r, "the answer could not be stored; nothing "
		    "returned, send the request again");
	else
		api_error(rq, r == KM_ERR_AUDIT || r == KM_ERR_IO ? KM_ERR_AUDIT :
		    r, "the audit record or the answer could not be written; "
		    "nothing returned");
}
