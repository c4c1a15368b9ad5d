/* Unit tests of service/idem.c: Idempotency-Key entries in a real SQLite
 * store, with explicit clocks (no waiting). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>

#include "idem.h"
#include "km.h"
#include "store.h"
#include "unit.h"

#define T0	1700000000000000LL	/* microseconds */
#define TTL	(3600LL * 1000000)

static int
suite_init(void)
{
	return ut_scratch_init("idem");
}

static struct store *
open_store(void)
{
	return ut_store_open("i");
}

static void
hash_of(const char *body, unsigned char h[32])
{
	CU_ASSERT_FATAL(idem_request_hash("POST", "/v1/keys/k/rewrap",
	    (const unsigned char *)body, strlen(body), h) == KM_OK);
}

static enum idem_state
begin(struct store *st, const char *actor, const char *key, const char *body,
    const char *rid, int64_t now, struct idem_entry *e)
{
	unsigned char h[32];
	enum idem_state s = 0;

	hash_of(body, h);
	CU_ASSERT_EQUAL(idem_begin(st, actor, key, h, rid, now, TTL, &s, e),
	    KM_OK);
	return s;
}

static void
test_key_valid(void)
{
	char longk[IDEM_MAX_KEY + 2];

	CU_ASSERT(idem_key_valid("rw-0123abcd-17-0"));
	CU_ASSERT(idem_key_valid("a.b_c:d-E"));
	CU_ASSERT(!idem_key_valid(""));
	CU_ASSERT(!idem_key_valid(NULL));
	CU_ASSERT(!idem_key_valid("has space"));
	CU_ASSERT(!idem_key_valid("semi;colon"));
	CU_ASSERT(!idem_key_valid("caf\xc3\xa9"));
	memset(longk, 'a', sizeof(longk));
	longk[IDEM_MAX_KEY] = '\0';
	CU_ASSERT(idem_key_valid(longk));
	longk[IDEM_MAX_KEY] = 'a';
	longk[IDEM_MAX_KEY + 1] = '\0';
	CU_ASSERT(!idem_key_valid(longk));
}

static void
test_hash_binds_path(void)
{
	unsigned char a[32], b[32];

	CU_ASSERT_FATAL(idem_request_hash("POST", "/v1/keys/a/rewrap",
	    (const unsigned char *)"{}", 2, a) == KM_OK);
	CU_ASSERT_FATAL(idem_request_hash("POST", "/v1/keys/b/rewrap",
	    (const unsigned char *)"{}", 2, b) == KM_OK);
	CU_ASSERT(memcmp(a, b, 32) != 0);
}

/* New, running, finished and replayed; another body is refused. */
static void
test_lifecycle(void)
{
	struct store *st = open_store();
	struct idem_entry e;

	CU_ASSERT_EQUAL(begin(st, "token:a", "k1", "{\"batch\":[1]}", "r1", T0,
	    &e), IDEM_NEW);
	CU_ASSERT_EQUAL(begin(st, "token:a", "k1", "{\"batch\":[1]}", "r2",
	    T0 + 1, &e), IDEM_IN_PROGRESS);
	CU_ASSERT_EQUAL(idem_finish(st, "token:a", "k1", 200,
	    "{\"results\":[\"x\"]}", NULL, NULL), KM_OK);
	/* Finished once: a second finish finds no running entry. */
	CU_ASSERT_EQUAL(idem_finish(st, "token:a", "k1", 200, "{}", NULL, NULL),
	    KM_ERR_NOT_FOUND);
	CU_ASSERT_EQUAL(begin(st, "token:a", "k1", "{\"batch\":[1]}", "r3",
	    T0 + 2, &e), IDEM_REPLAY);
	CU_ASSERT_EQUAL(e.status, 200);
	CU_ASSERT_STRING_EQUAL(e.answer, "{\"results\":[\"x\"]}");
	CU_ASSERT_STRING_EQUAL(e.request_id, "r1");
	CU_ASSERT_EQUAL(e.created_at, T0);
	idem_entry_clear(&e);
	CU_ASSERT_EQUAL(begin(st, "token:a", "k1", "{\"batch\":[2]}", "r4",
	    T0 + 3, &e), IDEM_MISMATCH);
	CU_ASSERT_PTR_NULL(e.answer);
	store_free(st);
}

static void
test_actor_scope(void)
{
	struct store *st = open_store();
	struct idem_entry e;

	CU_ASSERT_EQUAL(begin(st, "token:a", "k", "{}", "r1", T0, &e), IDEM_NEW);
	CU_ASSERT_EQUAL(idem_finish(st, "token:a", "k", 200, "{\"a\":1}", NULL,
	    NULL), KM_OK);
	/* The same key from another token is another key. */
	CU_ASSERT_EQUAL(begin(st, "token:b", "k", "{}", "r2", T0, &e), IDEM_NEW);
	CU_ASSERT_EQUAL(begin(st, "token:b", "k", "{\"x\":1}", "r3", T0, &e),
	    IDEM_MISMATCH);
	CU_ASSERT_EQUAL(begin(st, "token:a", "k", "{}", "r4", T0, &e),
	    IDEM_REPLAY);
	idem_entry_clear(&e);
	store_free(st);
}

/* Past the TTL an entry is gone: the same key starts afresh, with any
 * body; expired entries of other keys are pruned on the way. */
static void
test_expiry(void)
{
	struct store *st = open_store();
	struct idem_entry e;

	CU_ASSERT_EQUAL(begin(st, "token:a", "old", "{}", "r1", T0, &e),
	    IDEM_NEW);
	CU_ASSERT_EQUAL(idem_finish(st, "token:a", "old", 200, "{}", NULL,
	    NULL), KM_OK);
	CU_ASSERT_EQUAL(begin(st, "token:a", "old", "{}", "r2", T0 + TTL, &e),
	    IDEM_REPLAY);
	idem_entry_clear(&e);
	CU_ASSERT_EQUAL(begin(st, "token:a", "old", "{\"other\":1}", "r3",
	    T0 + TTL + 1, &e), IDEM_NEW);
	store_free(st);
}

static int
refuse(void *arg)
{
	(void)arg;
	return KM_ERR_AUDIT;
}

/* A refused commit hook stores nothing; abandon lets the key run again;
 * start-up clears running entries. */
static void
test_hook_abandon_clear(void)
{
	struct store *st = open_store();
	struct idem_entry e;

	CU_ASSERT_EQUAL(begin(st, "token:a", "k", "{}", "r1", T0, &e), IDEM_NEW);
	CU_ASSERT_EQUAL(idem_finish(st, "token:a", "k", 200, "{}", refuse, NULL),
	    KM_ERR_AUDIT);
	CU_ASSERT_EQUAL(begin(st, "token:a", "k", "{}", "r2", T0, &e),
	    IDEM_IN_PROGRESS);
	CU_ASSERT_EQUAL(idem_abandon(st, "token:a", "k"), KM_OK);
	CU_ASSERT_EQUAL(begin(st, "token:a", "k", "{}", "r3", T0, &e), IDEM_NEW);
	CU_ASSERT_EQUAL(begin(st, "token:a", "j", "{}", "r4", T0, &e), IDEM_NEW);
	CU_ASSERT_EQUAL(idem_finish(st, "token:a", "j", 200, "{}", NULL, NULL),
	    KM_OK);
	CU_ASSERT_EQUAL(idem_clear_running(st), KM_OK);
	CU_ASSERT_EQUAL(begin(st, "token:a", "k", "{}", "r5", T0, &e), IDEM_NEW);
	/* A finished entry survives the clearing. */
	CU_ASSERT_EQUAL(begin(st, "token:a", "j", "{}", "r6", T0, &e),
	    IDEM_REPLAY);
	idem_entry_clear(&e);
	store_free(st);
}

int
main(void)
{
	static const struct ut_test tests[] = {
		{ "key charset and length", test_key_valid },
		{ "request hash binds the path", test_hash_binds_path },
		{ "new, running, replay, mismatch", test_lifecycle },
		{ "keys are per actor", test_actor_scope },
		{ "expiry", test_expiry },
		{ "hook refusal, abandon, start-up clear", test_hook_abandon_clear },
		{ NULL, NULL },
	};

	return ut_main("idem", suite_init, ut_scratch_clean, tests);
}
