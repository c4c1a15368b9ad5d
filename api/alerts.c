/* GET /v1/alerts: the expiry and rotation-failure alerts the scheduler
 * raised (service/scheduler.c), oldest first, paged by id. */
#include "api.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler.h"
#include "store.h"

#define MAX_ALERTS 1000

static json_t *
alert_json(const struct store_alert *a)
{
	int expiry = strcmp(a->kind, "rotation_failed") != 0;
	json_t *o;

	o = json_pack("{s:I, s:s, s:s, s:o, s:o, s:o}",
	    "id", (json_int_t)a->id, "key", a->key, "kind", a->kind,
	    "threshold", expiry ? json_string(sched_threshold_name(a->threshold)) :
	    json_null(),
	    "at", api_time_json(a->raised_at),
	    "expires_at", expiry ? api_time_json(a->ref_at) : json_null());
	if (o != NULL && !expiry) {
		json_object_set_new(o, "due_at", api_time_json(a->ref_at));
		json_object_set_new(o, "error", json_string(a->detail));
	}
	return o;
}

void
api_alerts_list(struct api_req *rq)
{
	const char *after_s = api_arg(rq, "after"), *lim = api_arg(rq, "limit");
	const char *key = api_arg(rq, "key");
	struct store_alert *list = NULL;
	long long after = 0, limit = 100;
	size_t n = 0, i;
	json_t *arr;
	char *end;
	int r;

	if (after_s != NULL) {
		errno = 0;
		after = strtoll(after_s, &end, 10);
		if (*after_s < '0' || *after_s > '9' || *end != '\0' ||
		    errno != 0) {
			api_error(rq, KM_ERR_INVALID_REQUEST, "after must be an "
			    "alert id");
			return;
		}
	}
	if (lim != NULL) {
		errno = 0;
		limit = strtoll(lim, &end, 10);
		if (*lim == '\0' || *end != '\0' || errno != 0 || limit < 1 ||
		    limit > MAX_ALERTS) {
			api_error(rq, KM_ERR_INVALID_REQUEST, "limit must be 1..%d",
			    MAX_ALERTS);
			return;
		}
	}
	if (key != NULL)
		api_audit_set(rq, "key", json_string(key));
	/* One more than asked tells whether a next page exists. */
	if ((r = store_alert_list(rq->ctx->store, (int64_t)after, key,
	    (size_t)limit + 1, &list, &n)) != KM_OK) {
		api_error(rq, r, "listing alerts failed");
		return;
	}
	arr = json_array();
	for (i = 0; i < n && i < (size_t)limit; i++)
		json_array_append_new(arr, alert_json(&list[i]));
	api_answer(rq, 200, json_pack("{s:o, s:o}", "alerts", arr, "next",
	    n > (size_t)limit ? json_integer((json_int_t)list[limit - 1].id) :
	    json_null()));
	free(list);
}
