/* The request context shared by all handlers, the route table, and the
 * helpers that let a handler read straight down: each *_or_respond helper
 * answers the client itself and returns non-zero when the input is bad. */
#ifndef API_H
#define API_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "km.h"

struct cfg;
struct hsm;
struct store;
struct audit;
struct usage;
struct metrics;
struct rl;
struct cer;

/* Everything a handler may use; owned by main. */
struct api_ctx {
	const struct cfg *cfg;
	struct hsm *hsm;
	struct store *store;
	struct audit *audit;
	struct usage *usage;
	struct metrics *metrics;	/* request and scheduler counters, or NULL */
	struct rl *rl;		/* per-token rate limits, or NULL */
	long max_json_depth;
	const char *audit_origin;
	/* [{label, kid, pem, jwk}] of checkpoint keys. An audit_key.rotate
	 * ceremony swaps the array atomically: read it with
	 * __atomic_load_n(..., __ATOMIC_ACQUIRE) and take a reference. */
	json_t *audit_keys;
	struct cer *cer;	/* ceremonies (ceremony/cer_run.h), or NULL */
};

enum api_role {
	ROLE_ADMIN = 1 << 0,
	ROLE_APP = 1 << 1,
	ROLE_AUDITOR = 1 << 2,
	ROLE_OFFICER = 1 << 3,
};
#define ROLE_ANY (ROLE_ADMIN | ROLE_APP | ROLE_AUDITOR | ROLE_OFFICER)

struct api_principal {
	int authenticated;
	enum api_role role;
	char token_id[17];
	char *keys;		/* app key patterns, owned */
	char actor[32];		/* "token:<id>" or "anonymous" */
};

#define API_MAX_PARAMS 4

struct api_req {
	struct api_ctx *ctx;
	const char *method;
	const char *path;
	const char *params[API_MAX_PARAMS];	/* captured {segments} */
	char request_id[33];
	const char *auth_header;	/* borrowed from the connection */
	/* Token id that a verified TLS client certificate maps to, or NULL. */
	const char *tls_token_id;
	const char *if_none_match;
	/* Idempotency-Key header (borrowed) and how many the request had. */
	const char *idempotency_key;
	int n_idempotency_keys;
	int idem_running;		/* this request holds a running entry */
	char allow[64];			/* methods of the path, for a 405 */
	unsigned retry_after;		/* seconds, for a 429 */
	/* Query-string lookup, provided by the HTTP layer. */
	const char *(*get_arg)(void *conn, const char *name);
	void *conn;
	const unsigned char *body;
	size_t body_len;
	struct api_principal who;

	/* The answer. */
	int status;
	json_t *answer;
	int answer_secret;		/* answer holds plaintext: wipe it */
	unsigned char *raw;		/* a non-JSON answer (owned), or NULL */
	size_t raw_len;
	const char *raw_type;		/* its Content-Type */
	char etag[72];			/* an ETag header for `raw` or a 304, or "" */
	char cache_control[64];		/* Cache-Control instead of no-store, or "" */

	/* The audit record. */
	const char *op;
	json_t *audit;			/* fields added by the handler */
	int audited;			/* the handler already wrote it */
	int no_audit;			/* health, ready */
};

typedef void (*api_handler)(struct api_req *rq);

struct api_route {
	const char *method;
	const char *pattern;	/* "/v1/keys/{}/wrap" */
	api_handler handler;
	const char *op;		/* audit op name */
	unsigned roles;		/* 0: unauthenticated */
};

/* The route table, NULL-terminated; defined in api/routes.c. */
extern const struct api_route api_routes[];

/* Runs one request to completion: routing, authentication, role check,
 * handler, audit record. On return rq->status and rq->answer are set. */
void api_dispatch(struct api_req *rq);
void api_req_clear(struct api_req *rq);

/* The one table from km_err to HTTP status and JSON error code. */
int api_err_status(km_err e);
const char *api_err_code(km_err e);

/* Sets the error answer; `fmt` is the message (no secrets). */
void api_error(struct api_req *rq, km_err e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sets a success answer, taking ownership of `body`. */
void api_answer(struct api_req *rq, int status, json_t *body);
/* Builds {"code","message"} for a batch item. */
json_t *api_item_error(km_err e, const char *message);

/* Parses the body as a JSON object whose members are all named in
 * `fields` (NULL-terminated), or answers 400: a misspelt optional field
 * must not silently change what happens. */
int api_body_or_respond(struct api_req *rq, const char *const *fields,
    json_t **obj);
/* Parses the body as a JSON object, members unchecked, or answers 400. */
int api_object_or_respond(struct api_req *rq, json_t **obj);
/* The first member of `obj` not named in `fields`, or NULL. */
const char *api_unknown_field(json_t *obj, const char *const *fields);
/* Field getters: answer 400 invalid_request naming the field on a wrong
 * type or a missing required field. Absent optional fields leave the
 * output untouched. */
int api_string_or_respond(struct api_req *rq, json_t *obj, const char *field,
    int required, const char **out);
int api_bool_or_respond(struct api_req *rq, json_t *obj, const char *field,
    int *out);
int api_int_or_respond(struct api_req *rq, json_t *obj, const char *field,
    json_int_t min, json_int_t max, json_int_t *out);
/* Answers 403 unless the caller's role is in `roles`. */
int api_role_or_respond(struct api_req *rq, unsigned roles);
/* Answers 403 unless an app token's patterns match `name` (other roles
 * pass). */
int api_key_access_or_respond(struct api_req *rq, const char *name);
/* 1 when the principal may see key `name`. */
int api_key_visible(const struct api_principal *who, const char *name);
/* Validates a key name (1..128 of [A-Za-z0-9._-], starting alphanumeric). */
int api_key_name_valid(const char *name);

/* An RFC 3339 string of `us`, or JSON null for 0 (unset). */
json_t *api_time_json(int64_t us);
struct store_key;
struct store_version;
/* Version `version` of `k`, or NULL. */
const struct store_version *api_find_version(const struct store_key *k,
    uint32_t version);

/* Audit helpers: add a field to this request's record. */
void api_audit_set(struct api_req *rq, const char *field, json_t *value);
/* Writes this request's audit record now, with the given outcome; used as
 * a store commit hook so a state change commits only with its record. */
int api_audit_now(struct api_req *rq, const char *outcome, int status);
/* A store commit hook (arg: the api_req) recording outcome ok with
 * rq->status, so a state change commits only with its durable record. */
int api_audit_ok_hook(void *arg);

/* A query-string argument or NULL. */
const char *api_arg(struct api_req *rq, const char *name);

/* Authentication: resolves the bearer token of rq into rq->who. */
int api_authenticate(struct api_req *rq) KM_WUR;
void api_principal_clear(struct api_principal *who);
struct store_token;
/* Gives `t` a fresh random id and secret: fills t->id and t->hash and
 * writes the bearer string "kms.<id>.<secret hex>" to `out` (96 bytes),
 * which the caller wipes after use. */
int api_token_mint(struct store_token *t, char out[96]) KM_WUR;
const char *api_role_name(enum api_role r);
int api_role_parse(const char *s, enum api_role *out) KM_WUR;

/* Handlers. */
void api_health(struct api_req *rq);
void api_ready(struct api_req *rq);
void api_keys_create(struct api_req *rq);
void api_keys_list(struct api_req *rq);
void api_keys_get(struct api_req *rq);
void api_keys_rotate(struct api_req *rq);
void api_keys_config(struct api_req *rq);
void api_keys_state(struct api_req *rq);
void api_crypto_wrap(struct api_req *rq);
void api_crypto_unwrap(struct api_req *rq);
void api_crypto_rewrap(struct api_req *rq);
void api_crypto_datakey(struct api_req *rq);
void api_tokens_create(struct api_req *rq);
void api_tokens_list(struct api_req *rq);
void api_tokens_revoke(struct api_req *rq);
void api_audit_head(struct api_req *rq);
void api_audit_checkpoints(struct api_req *rq);
void api_audit_keys(struct api_req *rq);
void api_audit_records(struct api_req *rq);
void api_audit_files(struct api_req *rq);
void api_audit_file(struct api_req *rq);
/* Ceremonies, officers, the MEK status and the signed revoke
 * (api/ceremonies.c). */
void api_cer_create(struct api_req *rq);
void api_cer_list(struct api_req *rq);
void api_cer_get(struct api_req *rq);
void api_cer_approve(struct api_req *rq);
void api_cer_execute(struct api_req *rq);
void api_cer_cancel(struct api_req *rq);
void api_officers_list(struct api_req *rq);
void api_mek_get(struct api_req *rq);
void api_import_key_get(struct api_req *rq);
void api_mek_resume(struct api_req *rq);
void api_keys_revoke(struct api_req *rq);

/* A key object as served by GET /v1/keys/{name}. */
json_t *api_key_json(struct api_req *rq, const void *store_key);

/* A new version of a key of `type`, generated in the token under the
 * current MEK, state primary, created_at `now_us`; v->wrapped is owned by
 * the caller. On failure *why says what failed (no secrets). Used by
 * rotate and by the scheduler (service/scheduler.c). */
struct store_version;
int api_key_new_version(struct api_ctx *ctx, const char *type, int64_t now_us,
    struct store_version *v, const char **why) KM_WUR;

/* After the store commit (committed 1) or a failed commit (0) of a new
 * version `v` of key `name` made by api_key_new_version: names a version
 * kept on the token kms-<name>-v<N>, or destroys its token object when
 * the version was not committed; a committed signing version is announced
 * to the JWKS. No-op for AES versions. */
void api_key_version_settle(struct api_ctx *ctx, const char *name,
    const struct store_version *v, int committed);

/* Signing keys and the JWKS (api/signing.c). */
void api_sign(struct api_req *rq);
void api_verify(struct api_req *rq);
void api_public(struct api_req *rq);
void api_jwks(struct api_req *rq);
/* The set of published signing-key versions may have changed (create,
 * rotate, a state move, a destroy): the next GET /.well-known/jwks.json
 * rebuilds it from the store. Cheap; call it after any such commit. */
void api_jwks_changed(void);

/* Idempotency-Key (api/idem.c; docs/API.md). Before the handler: 0 when
 * the request has no key or holds a new running entry (run the handler),
 * non-zero when it was answered (a replay of the stored answer, or a 4xx).
 * After the handler: stores a success answer together with the audit
 * record, or releases the key when the request failed. */
int api_idem_begin(struct api_req *rq, const struct api_route *rt);
void api_idem_finish(struct api_req *rq);

/* GET /metrics (api/metrics.c) and GET /v1/alerts (api/alerts.c). */
void api_metrics(struct api_req *rq);
void api_alerts_list(struct api_req *rq);
/* Request instrumentation, called by the HTTP layer around api_dispatch:
 * a monotonic start time, then the count and latency of the answered
 * request (op, status, batch items) into ctx->metrics. */
int64_t api_metrics_clock(void);
void api_metrics_observe(struct api_req *rq, int64_t started_ns);

#endif
