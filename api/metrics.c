/* GET /metrics: the Prometheus text of service/metrics.c, and the request
 * instrumentation the HTTP layer calls around api_dispatch. */
#include "api.h"

#include <string.h>

#include "cfg.h"
#include "metrics.h"

/* Operations whose requests carry envelope items (single or batch). */
static int
is_item_op(const char *op)
{
	static const char *const ops[] = { "wrap", "unwrap", "rewrap",
		"datakey", "sign", "verify", NULL };
	size_t i;

	for (i = 0; op != NULL && ops[i] != NULL; i++)
		if (strcmp(op, ops[i]) == 0)
			return 1;
	return 0;
}

int64_t
api_metrics_clock(void)
{
	return metrics_monotonic_ns();
}

void
api_metrics_observe(struct api_req *rq, int64_t started_ns)
{
	long items = 0, failed = 0;
	json_t *batch;

	if (rq->ctx == NULL || rq->ctx->metrics == NULL)
		return;
	/* A replay of a stored answer (Idempotency-Key) ran no item. */
	if (is_item_op(rq->op) && rq->status != 401 && rq->status != 403 &&
	    !(rq->audit != NULL && json_is_true(json_object_get(rq->audit,
	    "replay")))) {
		batch = rq->audit != NULL ? json_object_get(rq->audit, "batch") :
		    NULL;
		if (json_is_integer(batch)) {
			items = (long)json_integer_value(batch);
			failed = (long)json_integer_value(json_object_get(rq->audit,
			    "failed"));
		} else {
			items = 1;
			failed = rq->status >= 400;
		}
	}
	metrics_request(rq->ctx->metrics, rq->op, rq->status,
	    metrics_monotonic_ns() - started_ns, items, failed);
}

void
api_metrics(struct api_req *rq)
{
	char *text = NULL;
	size_t len = 0;
	int r;

	/* metrics_public = false: any valid token may scrape. Refusals are
	 * audited; scrapes are not (one every 15 s would flood the log). */
	if (!rq->ctx->cfg->metrics_public) {
		if ((r = api_authenticate(rq)) != KM_OK) {
			api_error(rq, r, "metrics_public is off: a valid bearer "
			    "token is required");
			if (api_audit_now(rq, "denied", rq->status) != KM_OK)
				api_error(rq, KM_ERR_AUDIT, "the audit record could "
				    "not be written");
			return;
		}
	}
	if (rq->ctx->metrics == NULL) {
		api_error(rq, KM_ERR_NOT_FOUND, "metrics are not enabled");
		return;
	}
	if ((r = metrics_render(rq->ctx->metrics, rq->ctx, km_now_us(),
	    (size_t)rq->ctx->cfg->metrics_key_series, &text, &len)) != KM_OK) {
		api_error(rq, r, "rendering the metrics failed");
		return;
	}
	rq->raw = (unsigned char *)text;
	rq->raw_len = len;
	rq->raw_type = "text/plain; version=0.0.4; charset=utf-8";
	api_answer(rq, 200, json_object());
}
