/* Integration tests: one CUnit registry over a live kmsd (see harness.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "itest.h"

struct it_tokens T;
static int setup_ok;

int
it_ready(void)
{
	return setup_ok && ith_running() ? 0 : -1;
}

const char *
it_kpath(const char *key, const char *op)
{
	static char ring[8][512];
	static unsigned slot;
	char *out = ring[slot++ % 8];

	if (op == NULL)
		snprintf(out, sizeof(ring[0]), "/v1/keys/%s", key);
	else
		snprintf(out, sizeof(ring[0]), "/v1/keys/%s/%s", key, op);
	return out;
}

const char *
it_new_key(const char *prefix, json_t *extra)
{
	static char ring[8][160];
	static unsigned slot;
	char *out = ring[slot++ % 8];

	snprintf(out, sizeof(ring[0]), "%s", ith_name(prefix));
	(void)ith_key_create(out, extra);
	return out;
}

json_t *
it_ctx(const char *k, const char *v)
{
	return json_pack("{s:s}", k, v);
}

/* The first test: everything else runs against what it starts. */
static void
test_start_kmsd(void)
{
	json_t *a;

	if (!ith_check(ith_setup(NULL) == 0,
	    "could not start kmsd (see the harness messages on stderr)"))
		return;
	T.admin = ith_admin_token();
	T.app = ith_token_create("app", "*", NULL, NULL);
	T.matter = ith_token_create("app", "matter-*", NULL, NULL);
	T.auditor = ith_token_create("auditor", NULL, NULL, NULL);
	T.officer = ith_token_create("officer", NULL, NULL, NULL);
	if (T.app == NULL || T.matter == NULL || T.auditor == NULL ||
	    T.officer == NULL)
		return;
	a = ith_call("GET", "/v1/health", NULL, NULL, 200, NULL);
	ith_check(a != NULL && json_is_string(json_object_get(a, "status")) &&
	    strcmp(json_string_value(json_object_get(a, "status")), "ok") == 0,
	    "GET /v1/health: expected {\"status\":\"ok\"}");
	json_decref(a);
	setup_ok = 1;
}

int
main(void)
{
	CU_pSuite s;
	unsigned failed;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	if ((s = CU_add_suite("harness", NULL, NULL)) == NULL ||
	    CU_add_test(s, "start kmsd and create role tokens", test_start_kmsd) == NULL ||
	    it_register_api() != 0 || it_register_lifecycle() != 0 ||
	    it_register_authz() != 0 || it_register_authz_matrix() != 0 ||
	    it_register_malformed() != 0 ||
	    it_register_concurrent() != 0 ||
	    it_register_signing() != 0 ||
	    it_register_idempotency() != 0 ||
	    it_register_persist() != 0) {
		fprintf(stderr, "registering the suites failed: %s\n", CU_get_error_msg());
		CU_cleanup_registry();
		return 2;
	}
	failed = ith_cu_run();
	if (failed != 0)
		ith_print_log_tail(40);
	fprintf(stderr, "integration: %zu distinct request ids seen\n",
	    ith_request_ids_seen());
	CU_cleanup_registry();
	free(T.app);
	free(T.matter);
	free(T.auditor);
	free(T.officer);
	ith_teardown();
	return failed != 0 || !setup_ok ? 1 : 0;
}
