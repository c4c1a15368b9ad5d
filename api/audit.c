/* Audit resource: chain head, signed checkpoints, their public keys, the
 * record query (the exposure report of an emergency rotation) and raw
 * segment files for `kmsctl audit export`. */
#include "api.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"

#define MAX_RECORDS 1000

void
api_audit_head(struct api_req *rq)
{
	uint64_t next;
	char hash[65];
	json_t *cp = audit_last_checkpoint(rq->ctx->audit);

	audit_head(rq->ctx->audit, &next, hash);
	api_answer(rq, 200, json_pack("{s:o, s:s, s:s, s:o}",
	    "seq", next ? json_integer((json_int_t)next - 1) : json_null(),
	    "hash", hash, "origin", rq->ctx->audit_origin,
	    "checkpoint", cp ? cp : json_null()));
}

void
api_audit_keys(struct api_req *rq)
{
	api_answer(rq, 200, json_pack("{s:s, s:O}", "origin",
	    rq->ctx->audit_origin, "keys",
	    __atomic_load_n(&rq->ctx->audit_keys, __ATOMIC_ACQUIRE)));
}

static int
u64_arg_or_respond(struct api_req *rq, const char *name, uint64_t *out)
{
	const char *s = api_arg(rq, name);
	char *end;
	unsigned long long v;

	if (s == NULL)
		return 0;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (*s < '0' || *s > '9' || *end != '\0' || errno != 0) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "%s must be a non-negative "
		    "integer", name);
		return -1;
	}
	*out = v;
	return 0;
}

static int
time_arg_or_respond(struct api_req *rq, const char *name, int64_t *out)
{
	const char *s = api_arg(rq, name);

	if (s == NULL)
		return 0;
	if (km_time_parse(s, out) != KM_OK) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "%s must be an RFC 3339 time",
		    name);
		return -1;
	}
	return 0;
}

void
api_audit_checkpoints(struct api_req *rq)
{
	unsigned char *data = NULL;
	size_t len = 0, pos = 0, eol;
	uint64_t from = 0;
	json_t *arr;
	int r;

	if (u64_arg_or_respond(rq, "from", &from))
		return;
	if ((r = audit_read_file(rq->ctx->audit, "checkpoints.jsonl", &data,
	    &len)) != KM_OK && r != KM_ERR_NOT_FOUND) {
		api_error(rq, r, "reading checkpoints failed");
		return;
	}
	arr = json_array();
	while (pos < len) {
		json_t *cp;

		for (eol = pos; eol < len && data[eol] != '\n'; eol++)
			;
		cp = json_loadb((const char *)data + pos, eol - pos, 0, NULL);
		if (cp != NULL && json_integer_value(json_object_get(cp, "seq")) >=
		    (json_int_t)from)
			json_array_append(arr, cp);
		json_decref(cp);
		pos = eol + 1;
	}
	free(data);
	api_answer(rq, 200, json_pack("{s:o}", "checkpoints", arr));
}

struct record_query {
	const char *key, *actor, *op;
	int has_version, has_since, has_until;
	json_int_t version;
	int64_t since, until;
	size_t limit;
	json_t *out;
	uint64_t next;
	int more;
};

static int
version_matches(json_t *rec, json_int_t v)
{
	json_t *items, *it;
	size_t i;

	if (json_integer_value(json_object_get(rec, "version")) == v &&
	    json_is_integer(json_object_get(rec, "version")))
		return 1;
	items = json_object_get(rec, "items");
	json_array_foreach(items, i, it)
		if (json_is_integer(json_object_get(it, "version")) &&
		    json_integer_value(json_object_get(it, "version")) == v)
			return 1;
	return 0;
}

static int
str_field_is(json_t *rec, const char *field, const char *want)
{
	const char *v = json_string_value(json_object_get(rec, field));

	return v != NULL && strcmp(v, want) == 0;
}

/* A record matches when every given filter holds. A key filter matches the
 * record's key (the source of a rewrap) or its destination key. */
static int
record_matches(const struct record_query *q, json_t *rec)
{
	int64_t ts;

	if (q->key && !str_field_is(rec, "key", q->key) &&
	    !str_field_is(rec, "destination_key", q->key))
		return 0;
	if (q->actor && !str_field_is(rec, "actor", q->actor))
		return 0;
	if (q->op && !str_field_is(rec, "op", q->op))
		return 0;
	if (q->has_version && !version_matches(rec, q->version))
		return 0;
	if (q->has_since || q->has_until) {
		const char *t = json_string_value(json_object_get(rec, "ts"));

		if (t == NULL || km_time_parse(t, &ts) != KM_OK ||
		    (q->has_since && ts < q->since) ||
		    (q->has_until && ts > q->until))
			return 0;
	}
	return 1;
}

static int
collect(void *arg, uint64_t seq, const char *line, size_t len)
{
	struct record_query *q = arg;
	json_t *rec;

	/* As strict as the offline verifier: a line with a repeated member
	 * is not a record, so no query shows a value it would refuse. */
	if ((rec = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL)) == NULL)
		return 0;
	if (record_matches(q, rec)) {
		/* The page is full: this match starts the next one. */
		if (json_array_size(q->out) >= q->limit) {
			q->next = seq;
			q->more = 1;
			json_decref(rec);
			return 1;
		}
		json_array_append(q->out, rec);
	}
	json_decref(rec);
	return 0;
}

void
api_audit_records(struct api_req *rq)
{
	struct record_query q = { 0 };
	uint64_t from = 0, to = UINT64_MAX, version = 0, limit = 100;
	const char *v = api_arg(rq, "version");
	int r;

	if (u64_arg_or_respond(rq, "from", &from) ||
	    u64_arg_or_respond(rq, "to", &to) ||
	    u64_arg_or_respond(rq, "version", &version) ||
	    u64_arg_or_respond(rq, "limit", &limit) ||
	    time_arg_or_respond(rq, "since", &q.since) ||
	    time_arg_or_respond(rq, "until", &q.until))
		return;
	if (limit < 1 || limit > MAX_RECORDS) {
		api_error(rq, KM_ERR_INVALID_REQUEST, "limit must be 1..%d",
		    MAX_RECORDS);
		return;
	}
	/* Who looked at whose exposure is itself worth recording. */
	api_audit_set(rq, "query", json_pack("{s:I, s:o?, s:s?, s:s?, s:s?, s:s?, s:s?, s:s?}",
	    "from", (json_int_t)from, "to", to == UINT64_MAX ? NULL :
	    json_integer((json_int_t)to), "key", api_arg(rq, "key"), "version", v,
	    "actor", api_arg(rq, "actor"), "op", api_arg(rq, "op"),
	    "since", api_arg(rq, "since"), "until", api_arg(rq, "until")));
	q.has_since = api_arg(rq, "since") != NULL;
	q.has_until = api_arg(rq, "until") != NULL;
	q.key = api_arg(rq, "key");
	q.actor = api_arg(rq, "actor");
	q.op = api_arg(rq, "op");
	q.has_version = v != NULL;
	q.version = (json_int_t)version;
	q.limit = (size_t)limit;
	q.out = json_array();
	if ((r = audit_scan(rq->ctx->audit, from, to, collect, &q)) != KM_OK) {
		json_decref(q.out);
		api_error(rq, r, "reading the audit log failed");
		return;
	}
	api_answer(rq, 200, json_pack("{s:o, s:o}", "records", q.out, "next",
	    q.more ? json_integer((json_int_t)q.next) : json_null()));
}

void
api_audit_files(struct api_req *rq)
{
	json_t *segs = NULL;
	int r;

	if ((r = audit_segments(rq->ctx->audit, &segs)) != KM_OK) {
		api_error(rq, r, "listing the audit log failed");
		return;
	}
	api_answer(rq, 200, json_pack("{s:o, s:s}", "segments", segs,
	    "checkpoints", "checkpoints.jsonl"));
}

void
api_audit_file(struct api_req *rq)
{
	const char *name = rq->params[0];
	unsigned char *data = NULL;
	size_t len = 0;
	int r;

	api_audit_set(rq, "file", json_string(name));
	if ((r = audit_read_file(rq->ctx->audit, name, &data, &len)) != KM_OK) {
		api_error(rq, r == KM_ERR_NOT_FOUND ? KM_ERR_NOT_FOUND : r,
		    "no audit file named '%s'", name);
		return;
	}
	rq->raw = data;
	rq->raw_len = len;
	rq->raw_type = "application/x-ndjson";
	api_answer(rq, 200, json_pack("{s:s}", "file", name));
}
