/* Liveness and readiness. */
#include "api.h"

#include "audit.h"
#include "hsm.h"
#include "store.h"

void
api_health(struct api_req *rq)
{
	api_answer(rq, 200, json_pack("{s:s}", "status", "ok"));
}

void
api_ready(struct api_req *rq)
{
	int token = hsm_ping(rq->ctx->hsm) == KM_OK;
	int store = store_check(rq->ctx->store) == KM_OK;
	int audit = audit_check(rq->ctx->audit) == KM_OK;
	json_t *checks = json_pack("{s:b, s:b, s:b}", "token", token, "store",
	    store, "audit", audit);

	if (token && store && audit) {
		api_answer(rq, 200, json_pack("{s:b, s:o}", "ready", 1, "checks",
		    checks));
		return;
	}
	api_error(rq, !token ? KM_ERR_HSM : !store ? KM_ERR_STORE : KM_ERR_AUDIT,
	    "not ready");
	if (rq->answer != NULL) {
		json_object_set_new(rq->answer, "ready", json_false());
		json_object_set_new(rq->answer, "checks", checks);
	} else {
		json_decref(checks);
	}
}
