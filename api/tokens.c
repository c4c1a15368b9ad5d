/* API tokens: created by an admin, stored as SHA-256 hashes only. */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "store.h"

static json_t *
token_json(const struct store_token *t)
{
	return json_pack("{s:s, s:s, s:o, s:o, s:o, s:o, s:o}", "id", t->id,
	    "role", t->role,
	    "keys", t->keys ? json_string(t->keys) : json_null(),
	    "description", t->description ? json_string(t->description) :
	    json_null(),
	    "created_at", api_time_json(t->created_at),
	    "expires_at", api_time_json(t->expires_at),
	    "revoked_at", api_time_json(t->revoked_at));
}

static int
token_fields_or_respond(struct api_req *rq, json_t *body, struct store_token *t)
{
	const char *role = NULL, *keys = NULL, *desc = NULL, *ttl = NULL;
	enum api_role r;
	int64_t secs = 0;

	if (api_string_or_respond(rq, body, "role", 1, &role) ||
	    api_string_or_respond(rq, body, "keys", 0, &keys) ||
	    api_string_or_respond(rq, body, "description", 0, &desc) ||
	    api_string_or_respond(rq, body, "ttl", 0, &ttl))
		return -1;
	if (api_role_parse(role, &r) != KM_OK) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "role must be app, admin, "
		    "auditor or officer");
		return -1;
	}
	if ((r == ROLE_APP) != (keys != NULL) ||
	    (keys != NULL && (keys[0] == '\0' || strlen(keys) > 1024))) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "keys (1..1024 bytes of "
		    "comma-separated patterns) is required for app tokens and "
		    "not allowed for others");
		return -1;
	}
	if (desc != NULL && strlen(desc) > 256) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "description is at most "
		    "256 bytes");
		return -1;
	}
	if (ttl != NULL && km_duration_parse(ttl, &secs) != KM_OK) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "ttl '%s' is not a duration "
		    "like 30d or 1h", ttl);
		return -1;
	}
	snprintf(t->role, sizeof(t->role), "%s", role);
	t->keys = keys ? strdup(keys) : NULL;
	t->description = desc ? strdup(desc) : NULL;
	t->created_at = km_now_us();
	t->expires_at = secs ? t->created_at + secs * 1000000 : 0;
	if ((keys && !t->keys) || (desc && !t->description)) {
		api_error(rq, KM_ERR_NOMEM, "out of memory");
		return -1;
	}
	return 0;
}

void
api_tokens_create(struct api_req *rq)
{
	struct store_token t;
	char token[96];
	json_t *body = NULL, *answer;
	int r;

	static const char *const fields[] = { "role", "keys", "description",
		"ttl", NULL };

	memset(&t, 0, sizeof(t));
	if (api_body_or_respond(rq, fields, &body) ||
	    token_fields_or_respond(rq, body, &t))
		goto out;
	if (api_token_mint(&t, token) != KM_OK) {
		api_error(rq, KM_ERR_INTERNAL, "no randomness");
		goto out;
	}
	api_audit_set(rq, "token_id", json_string(t.id));
	api_audit_set(rq, "role", json_string(t.role));
	if (t.keys)
		api_audit_set(rq, "keys", json_string(t.keys));
	rq->status = 201;
	if ((r = store_token_create(rq->ctx->store, &t, api_audit_ok_hook, rq)) != KM_OK) {
		api_error(rq, r, "the token was not created");
		goto out;
	}
	if ((answer = token_json(&t)) != NULL)
		json_object_set_new(answer, "token", json_string(token));
	api_answer(rq, 201, answer);
	rq->answer_secret = 1;
out:
	OPENSSL_cleanse(token, sizeof(token));
	free(t.keys);
	free(t.description);
	json_decref(body);
}

void
api_tokens_list(struct api_req *rq)
{
	struct store_token **toks = NULL;
	size_t n = 0, i;
	json_t *arr;
	int r;

	if ((r = store_token_list(rq->ctx->store, &toks, &n)) != KM_OK) {
		api_error(rq, r, "listing tokens failed");
		return;
	}
	arr = json_array();
	for (i = 0; i < n; i++) {
		json_array_append_new(arr, token_json(toks[i]));
		store_token_free(toks[i]);
	}
	free(toks);
	api_answer(rq, 200, json_pack("{s:o}", "tokens", arr));
}

void
api_tokens_revoke(struct api_req *rq)
{
	const char *id = rq->params[0];
	int64_t now = km_now_us();
	char ts[40];
	int r;

	api_audit_set(rq, "token_id", json_string(id));
	rq->status = 200;
	if ((r = store_token_revoke(rq->ctx->store, id, now, api_audit_ok_hook,
	    rq)) != KM_OK) {
		api_error(rq, r, "token '%s' %s", id, r == KM_ERR_TOKEN_NOT_FOUND ?
		    "does not exist or is revoked already" : "was not revoked");
		return;
	}
	km_time_format(now, 0, ts, sizeof(ts));
	api_answer(rq, 200, json_pack("{s:s, s:s}", "id", id, "revoked_at", ts));
}
