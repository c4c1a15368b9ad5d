/* Unit tests of service/ratelimit.c with a hand-driven clock. */
#include <CUnit/Basic.h>

#include "ratelimit.h"
#include "unit.h"

#define SEC 1000000LL

static void
test_burst_then_refill(void)
{
	struct rl *r = NULL;
	unsigned wait = 0;
	int64_t t = 1000 * SEC;
	int i;

	CU_ASSERT_EQUAL_FATAL(rl_new(2, 3, &r), KM_OK);
	for (i = 0; i < 3; i++)
		CU_ASSERT_EQUAL(rl_take(r, "a", t, &wait), KM_OK);
	CU_ASSERT_EQUAL(rl_take(r, "a", t, &wait), KM_ERR_RATE_LIMITED);
	CU_ASSERT_EQUAL(wait, 1);
	/* Another principal has its own bucket. */
	CU_ASSERT_EQUAL(rl_take(r, "b", t, &wait), KM_OK);
	/* Half a second at 2/s refills one request, not two. */
	CU_ASSERT_EQUAL(rl_take(r, "a", t + SEC / 2, &wait), KM_OK);
	CU_ASSERT_EQUAL(rl_take(r, "a", t + SEC / 2, &wait), KM_ERR_RATE_LIMITED);
	/* A long pause refills to the burst, never beyond. */
	for (i = 0; i < 3; i++)
		CU_ASSERT_EQUAL(rl_take(r, "a", t + 100 * SEC, &wait), KM_OK);
	CU_ASSERT_EQUAL(rl_take(r, "a", t + 100 * SEC, &wait), KM_ERR_RATE_LIMITED);
	rl_free(r);
}

static void
test_slow_rate_retry_after(void)
{
	struct rl *r = NULL;
	unsigned wait = 0;

	CU_ASSERT_EQUAL_FATAL(rl_new(1, 1, &r), KM_OK);
	CU_ASSERT_EQUAL(rl_take(r, "x", 0, &wait), KM_OK);
	CU_ASSERT_EQUAL(rl_take(r, "x", SEC / 4, &wait), KM_ERR_RATE_LIMITED);
	CU_ASSERT_EQUAL(wait, 1);
	rl_free(r);
	CU_ASSERT_EQUAL(rl_new(0, 1, &r), KM_ERR_CONFIG);
	CU_ASSERT_PTR_NULL(r);
	rl_free(NULL);
}

static void
test_many_principals(void)
{
	struct rl *r = NULL;
	unsigned wait;
	char who[32];
	int i, refused = 0;

	CU_ASSERT_EQUAL_FATAL(rl_new(1, 1, &r), KM_OK);
	for (i = 0; i < 100000; i++) {
		snprintf(who, sizeof(who), "t%d", i);
		refused += rl_take(r, who, (int64_t)i, &wait) != KM_OK;
	}
	/* Past the table's bound new principals pass unlimited (fail open). */
	CU_ASSERT_EQUAL(refused, 0);
	/* Those in the table have spent their single token. */
	CU_ASSERT_EQUAL(rl_take(r, "t0", 100000, &wait), KM_ERR_RATE_LIMITED);
	CU_ASSERT_EQUAL(rl_take(r, "t65535", 100000, &wait), KM_ERR_RATE_LIMITED);
	rl_free(r);
}

int
main(void)
{
	static const struct ut_test tests[] = {
		{ "burst, then refill at the rate", test_burst_then_refill },
		{ "Retry-After rounds up", test_slow_rate_retry_after },
		{ "100,000 principals", test_many_principals },
		{ NULL, NULL },
	};

	return ut_main("ratelimit", NULL, NULL, tests);
}
