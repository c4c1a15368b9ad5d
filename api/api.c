/* Request dispatch, the error table, JSON input helpers and audit records. */
#include "api.h"

#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "ratelimit.h"
#include "store.h"
#include "log.h"

static const struct {
	int status;
	const char *code;
} err_table[KM_ERR_COUNT] = {
	[KM_OK] = { 200, "ok" },
	[KM_ERR_INTERNAL] = { 500, "internal" },
	[KM_ERR_NOMEM] = { 503, "unavailable" },
	[KM_ERR_IO] = { 503, "unavailable" },
	[KM_ERR_CONFIG] = { 500, "internal" },
	[KM_ERR_INVALID_JSON] = { 400, "invalid_json" },
	[KM_ERR_INVALID_REQUEST] = { 400, "invalid_request" },
	[KM_ERR_INVALID_CIPHERTEXT] = { 400, "invalid_ciphertext" },
	[KM_ERR_MISSING_CONTEXT] = { 400, "missing_context" },
	[KM_ERR_UNSUPPORTED_KEY_TYPE] = { 400, "unsupported_key_type" },
	[KM_ERR_UNAUTHENTICATED] = { 401, "unauthenticated" },
	[KM_ERR_FORBIDDEN] = { 403, "forbidden" },
	[KM_ERR_CEREMONY_REQUIRED] = { 403, "ceremony_required" },
	[KM_ERR_INVALID_SIGNATURE] = { 403, "invalid_signature" },
	[KM_ERR_CEREMONY_NOT_FOUND] = { 404, "ceremony_not_found" },
	[KM_ERR_CEREMONY_CLOSED] = { 409, "ceremony_closed" },
	[KM_ERR_QUORUM_NOT_MET] = { 409, "quorum_not_met" },
	[KM_ERR_STATE_CHANGED] = { 409, "state_changed" },
	[KM_ERR_DECISION_FINAL] = { 409, "decision_final" },
	[KM_ERR_ROTATION_IN_PROGRESS] = { 409, "rotation_in_progress" },
	[KM_ERR_IDEMPOTENCY_IN_PROGRESS] = { 409, "idempotency_key_in_progress" },
	[KM_ERR_IDEMPOTENCY_REUSED] = { 422, "idempotency_key_reused" },
	[KM_ERR_NOT_FOUND] = { 404, "not_found" },
	[KM_ERR_KEY_NOT_FOUND] = { 404, "key_not_found" },
	[KM_ERR_VERSION_NOT_FOUND] = { 404, "version_not_found" },
	[KM_ERR_TOKEN_NOT_FOUND] = { 404, "token_not_found" },
	[KM_ERR_METHOD] = { 405, "method_not_allowed" },
	[KM_ERR_KEY_EXISTS] = { 409, "key_exists" },
	[KM_ERR_VERSION_STATE] = { 409, "version_state" },
	[KM_ERR_NO_PRIMARY] = { 409, "no_primary_version" },
	[KM_ERR_INVALID_TRANSITION] = { 409, "invalid_transition" },
	[KM_ERR_VERSION_IN_USE] = { 409, "version_in_use" },
	[KM_ERR_TOO_LARGE] = { 413, "payload_too_large" },
	[KM_ERR_RATE_LIMITED] = { 429, "rate_limited" },
	[KM_ERR_HSM] = { 503, "hsm_unavailable" },
	[KM_ERR_HSM_AUTH] = { 503, "hsm_unavailable" },
	[KM_ERR_STORE] = { 503, "store_unavailable" },
	[KM_ERR_AUDIT] = { 503, "audit_unavailable" },
};

int
api_err_status(km_err e)
{
	if ((int)e <= 0 || e >= KM_ERR_COUNT || err_table[e].code == NULL)
		return 500;
	return err_table[e].status;
}

const char *
api_err_code(km_err e)
{
	if ((int)e <= 0 || e >= KM_ERR_COUNT || err_table[e].code == NULL)
		return "internal";
	return err_table[e].code;
}

void
api_answer(struct api_req *rq, int status, json_t *body)
{
	json_decref(rq->answer);
	rq->status = body != NULL ? status : 503;
	rq->answer = body;
}

static void
set_error(struct api_req *rq, km_err e, const char *msg)
{
	json_decref(rq->answer);
	rq->status = api_err_status(e);
	rq->answer = json_pack("{s:{s:s, s:s, s:s}}", "error", "code",
	    api_err_code(e), "message", msg, "request_id", rq->request_id);
	rq->answer_secret = 0;
}

/* Messages echo names from the request, which may be any bytes, and may
 * be cut in the middle of a UTF-8 sequence: either would make the JSON
 * answer itself fail, so messages are printable ASCII. */
static void
ascii_only(char *msg)
{
	for (; *msg != '\0'; msg++)
		if ((unsigned char)*msg < 0x20 || (unsigned char)*msg >= 0x7f)
			*msg = '?';
}

void
api_error(struct api_req *rq, km_err e, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ascii_only(msg);
	set_error(rq, e, msg);
}

json_t *
api_item_error(km_err e, const char *message)
{
	char msg[512];

	snprintf(msg, sizeof(msg), "%s", message ? message : km_strerror(e));
	ascii_only(msg);
	return json_pack("{s:{s:s, s:s}}", "error", "code", api_err_code(e),
	    "message", msg);
}

const char *
api_arg(struct api_req *rq, const char *name)
{
	return rq->get_arg != NULL ? rq->get_arg(rq->conn, name) : NULL;
}

const char *
api_unknown_field(json_t *obj, const char *const *fields)
{
	const char *name;
	json_t *v;
	size_t i;

	json_object_foreach(obj, name, v) {
		for (i = 0; fields[i] != NULL; i++)
			if (strcmp(fields[i], name) == 0)
				break;
		if (fields[i] == NULL)
			return name;
	}
	return NULL;
}

/* Deepest nesting of objects and arrays, outside strings. Checked before
 * parsing: jansson recurses per level, and no request needs more than a
 * few. */
static size_t
json_depth(const unsigned char *p, size_t n)
{
	size_t depth = 0, max = 0, i;
	int in_str = 0;

	for (i = 0; i < n; i++) {
		if (in_str) {
			if (p[i] == '\\')
				i++;
			else if (p[i] == '"')
				in_str = 0;
		} else if (p[i] == '"') {
			in_str = 1;
		} else if (p[i] == '{' || p[i] == '[') {
			if (++depth > max)
				max = depth;
		} else if ((p[i] == '}' || p[i] == ']') && depth > 0) {
			depth--;
		}
	}
	return max;
}

int
api_object_or_respond(struct api_req *rq, json_t **obj)
{
	json_error_t jerr;
	json_t *j;
	size_t limit = rq->ctx && rq->ctx->max_json_depth > 0 ?
	    (size_t)rq->ctx->max_json_depth : 32;

	*obj = NULL;
	if (rq->body_len == 0) {
		api_error(rq, KM_ERR_INVALID_JSON, "request body is empty");
		return -1;
	}
	if (json_depth(rq->body, rq->body_len) > limit) {
		api_error(rq, KM_ERR_INVALID_JSON, "body nests deeper than %zu "
		    "levels", limit);
		return -1;
	}
	j = json_loadb((const char *)rq->body, rq->body_len,
	    JSON_REJECT_DUPLICATES, &jerr);
	if (j == NULL) {
		api_error(rq, KM_ERR_INVALID_JSON, "body is not valid JSON: %s "
		    "(line %d, column %d)", jerr.text, jerr.line, jerr.column);
		return -1;
	}
	if (!json_is_object(j)) {
		json_decref(j);
		api_error(rq, KM_ERR_INVALID_JSON, "body must be a JSON object");
		return -1;
	}
	*obj = j;
	return 0;
}

int
api_body_or_respond(struct api_req *rq, const char *const *fields,
    json_t **obj)
{
	const char *bad;

	if (api_object_or_respond(rq, obj))
		return -1;
	if ((bad = api_unknown_field(*obj, fields)) != NULL) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "unknown field '%.64s'", bad);
		json_decref(*obj);
		*obj = NULL;
		return -1;
	}
	return 0;
}

int
api_string_or_respond(struct api_req *rq, json_t *obj, const char *field,
    int required, const char **out)
{
	json_t *v = json_object_get(obj, field);

	if (v == NULL || json_is_null(v)) {
		if (!required)
			return 0;
		api_error(rq, KM_ERR_INVALID_REQUEST, "field '%s' is required",
		    field);
		return -1;
	}
	if (!json_is_string(v)) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "field '%s' must be a string",
		    field);
		return -1;
	}
	if (strlen(json_string_value(v)) != json_string_length(v)) {
		api_error(rq, KM_ERR_INVALID_REQUEST,
		    "field '%s' must not contain NUL", field);
		return -1;
	}
	*out = json_string_value(v);
	return 0;
}

int
api_bool_or_respond(struct api_req *rq, json_t *obj, const char *field,
    int *out)
{
	json_t *v = json_object_get(obj, field);

	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_boolean(v)) {
		api_error(rq, KM_ERR_INVALID_REQUEST,
		    "field '%s' must be true or false", field);
		return -1;
	}
	*out = json_is_true(v);
	return 0;
}

int
api_int_or_respond(struct api_req *rq, json_t *obj, const char *field,
    json_int_t min, json_int_t max, json_int_t *out)
{
	json_t *v = json_object_get(obj, field);

	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < min ||
	    json_integer_value(v) > max) {
		api_error(rq, KM_ERR_INVALID_REQUEST,
		    "field '%s' must be an integer in %" JSON_INTEGER_FORMAT
		    "..%" JSON_INTEGER_FORMAT, field, min, max);
		return -1;
	}
	*out = json_integer_value(v);
	return 0;
}

int
api_role_or_respond(struct api_req *rq, unsigned roles)
{
	if (rq->who.authenticated && (rq->who.role & roles))
		return 0;
	api_error(rq, KM_ERR_FORBIDDEN, "role '%s' may not %s",
	    api_role_name(rq->who.role), rq->op);
	return -1;
}

int
api_key_visible(const struct api_principal *who, const char *name)
{
	char *pats, *p, *save = NULL;
	int ok = 0;

	if (!who->authenticated)
		return 0;
	if (who->role != ROLE_APP)
		return 1;
	if (who->keys == NULL || (pats = strdup(who->keys)) == NULL)
		return 0;
	for (p = strtok_r(pats, ",", &save); p != NULL && !ok;
	    p = strtok_r(NULL, ",", &save))
		ok = fnmatch(p, name, 0) == 0;
	free(pats);
	return ok;
}

int
api_key_access_or_respond(struct api_req *rq, const char *name)
{
	if (api_key_visible(&rq->who, name))
		return 0;
	api_error(rq, KM_ERR_FORBIDDEN, "token may not use key '%s'", name);
	return -1;
}

int
api_key_name_valid(const char *name)
{
	size_t i, n = strlen(name);

	if (n == 0 || n > 128)
		return 0;
	for (i = 0; i < n; i++) {
		char c = name[i];
		int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9');

		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return 0;
	}
	return 1;
}

void
api_audit_set(struct api_req *rq, const char *field, json_t *value)
{
	if (rq->audit == NULL)
		rq->audit = json_object();
	if (rq->audit == NULL || value == NULL) {
		json_decref(value);
		return;
	}
	json_object_set_new(rq->audit, field, value);
}

json_t *
api_time_json(int64_t us)
{
	char ts[40];

	if (us == 0)
		return json_null();
	km_time_format(us, 0, ts, sizeof(ts));
	return json_string(ts);
}

const struct store_version *
api_find_version(const struct store_key *k, uint32_t version)
{
	size_t i;

	for (i = 0; i < k->n_versions; i++)
		if (k->versions[i].version == version)
			return &k->versions[i];
	return NULL;
}

int
api_audit_ok_hook(void *arg)
{
	struct api_req *rq = arg;

	return api_audit_now(rq, "ok", rq->status);
}

static const char *
outcome_for(int status)
{
	if (status < 400)
		return "ok";
	if (status == 401 || status == 403)
		return "denied";
	return "error";
}

int
api_audit_now(struct api_req *rq, const char *outcome, int status)
{
	json_t *rec;
	int r;

	rec = json_pack("{s:s, s:s, s:s, s:s, s:i}", "request_id",
	    rq->request_id, "actor", rq->who.actor, "op",
	    rq->op ? rq->op : "unknown", "outcome", outcome, "status", status);
	if (rec == NULL)
		return KM_ERR_NOMEM;
	if (rq->audit != NULL)
		json_object_update_missing(rec, rq->audit);
	if (json_object_get(rec, "key") == NULL)
		json_object_set_new(rec, "key", json_null());
	if (json_object_get(rec, "version") == NULL)
		json_object_set_new(rec, "version", json_null());
	r = audit_append(rq->ctx->audit, rec, NULL);
	json_decref(rec);
	if (r == KM_OK)
		rq->audited = 1;
	return r;
}

static int
segment_match(const char *pattern, const char *path, const char **params,
    char *scratch, size_t scratch_len)
{
	size_t np = 0, used = 0;

	while (*pattern != '\0' || *path != '\0') {
		if (pattern[0] == '{' && pattern[1] == '}') {
			size_t n = strcspn(path, "/");

			if (n == 0 || np >= API_MAX_PARAMS ||
			    used + n + 1 > scratch_len)
				return 0;
			memcpy(scratch + used, path, n);
			scratch[used + n] = '\0';
			params[np++] = scratch + used;
			used += n + 1;
			pattern += 2;
			path += n;
			continue;
		}
		if (*pattern != *path)
			return 0;
		pattern++;
		path++;
	}
	return 1;
}

/* Scratch space for captured path segments; lives with the request. */
static __thread char param_scratch[1024];

static const struct api_route *
route_find(struct api_req *rq, int *method_mismatch)
{
	const char *params[API_MAX_PARAMS];
	const struct api_route *rt;

	*method_mismatch = 0;
	rq->allow[0] = '\0';
	for (rt = api_routes; rt->pattern != NULL; rt++) {
		if (!segment_match(rt->pattern, rq->path, params, param_scratch,
		    sizeof(param_scratch)))
			continue;
		if (strcmp(rt->method, rq->method) != 0) {
			size_t n = strlen(rq->allow);

			*method_mismatch = 1;
			snprintf(rq->allow + n, sizeof(rq->allow) - n, "%s%s",
			    n ? ", " : "", rt->method);
			continue;
		}
		memcpy(rq->params, params, sizeof(params));
		return rt;
	}
	return NULL;
}

void
api_dispatch(struct api_req *rq)
{
	const struct api_route *rt;
	int mismatch, r;

	snprintf(rq->who.actor, sizeof(rq->who.actor), "anonymous");
	if ((rt = route_find(rq, &mismatch)) == NULL) {
		rq->op = "unrouted";
		api_audit_set(rq, "method", json_string(rq->method));
		api_audit_set(rq, "path", json_string(rq->path));
		if (mismatch)
			api_error(rq, KM_ERR_METHOD, "%s is not allowed here",
			    rq->method);
		else
			api_error(rq, KM_ERR_NOT_FOUND, "no such endpoint");
		goto audit;
	}
	rq->op = rt->op;
	if (rt->roles == 0) {
		rq->no_audit = 1;
		rt->handler(rq);
		return;
	}
	/* Name the key in the record before any refusal, so a search of the
	 * log by key finds denied attempts too. */
	if (strncmp(rt->pattern, "/v1/keys/{}", 11) == 0)
		api_audit_set(rq, "key", json_string(rq->params[0]));
	if ((r = api_authenticate(rq)) != KM_OK) {
		api_error(rq, r, "a valid bearer token is required");
		goto audit;
	}
	if (rq->ctx->rl != NULL && rl_take(rq->ctx->rl, rq->who.token_id,
	    km_now_us(), &rq->retry_after) != KM_OK) {
		api_error(rq, KM_ERR_RATE_LIMITED, "token %s is over its rate "
		    "limit; retry in %u s", rq->who.token_id, rq->retry_after);
		goto audit;
	}
	if (api_role_or_respond(rq, rt->roles) != 0)
		goto audit;
	if (api_idem_begin(rq, rt) != 0)
		goto audit;
	rt->handler(rq);
	if (rq->idem_running)
		api_idem_finish(rq);
	/* Whatever route changed a key's versions (a revoke, a ceremony),
	 * the JWKS shows it on its next request. */
	if (rq->status < 400 && (strncmp(rt->op, "key.", 4) == 0 ||
	    strcmp(rt->op, "ceremony.execute") == 0) &&
	    strcmp(rq->method, "GET") != 0)
		api_jwks_changed();
audit:
	if (rq->answer == NULL)
		api_error(rq, KM_ERR_NOMEM, "out of memory");
	/* The commit hook wrote "ok", then the store failed to commit: a
	 * second record with the same request id says what really happened. */
	if (rq->audited && rq->status >= 400 &&
	    api_audit_now(rq, "error", rq->status) != KM_OK) {
		api_error(rq, KM_ERR_AUDIT,
		    "the audit record could not be written; nothing returned");
		return;
	}
	if (!rq->audited &&
	    api_audit_now(rq, outcome_for(rq->status), rq->status) != KM_OK) {
		/* Fail closed: no result leaves without its durable record. */
		rq->answer_secret = 0;
		free(rq->raw);
		rq->raw = NULL;
		api_error(rq, KM_ERR_AUDIT,
		    "the audit record could not be written; nothing returned");
	}
}

void
api_req_clear(struct api_req *rq)
{
	json_decref(rq->answer);
	json_decref(rq->audit);
	rq->answer = rq->audit = NULL;
	free(rq->raw);
	rq->raw = NULL;
	api_principal_clear(&rq->who);
}
