/* Unit tests of service/usage.c: in-memory use counters and their flush
 * into a real SQLite store (service/store.c). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>

#include "km.h"
#include "store.h"
#include "unit.h"
#include "usage.h"

static int
suite_init(void)
{
	return ut_scratch_init("usage");
}

static struct store *
open_store(void)
{
	return ut_store_open("u");
}

/* Creates key `name` with versions 1..nv (the last primary, the others
 * active, all wrapped under MEK 1) and returns its id. */
static int64_t
create_key(struct store *st, const char *name, size_t nv)
{
	struct store_key k;
	struct store_version *v;
	int64_t id;
	size_t i;

	memset(&k, 0, sizeof(k));
	snprintf(k.name, sizeof(k.name), "%s", name);
	snprintf(k.type, sizeof(k.type), "aes256-gcm");
	snprintf(k.purpose, sizeof(k.purpose), "encrypt");
	k.created_at = 1700000000000000LL;
	k.primary_version = (uint32_t)nv;
	v = calloc(nv, sizeof(*v));
	CU_ASSERT_PTR_NOT_NULL_FATAL(v);
	for (i = 0; i < nv; i++) {
		v[i].version = (uint32_t)(i + 1);
		v[i].state = i + 1 == nv ? KM_STATE_PRIMARY : KM_STATE_ACTIVE;
		v[i].created_at = k.created_at;
		v[i].mek_version = 1;
		v[i].storage = STORE_WRAPPED;
		v[i].wrapped = malloc(40);
		CU_ASSERT_PTR_NOT_NULL_FATAL(v[i].wrapped);
		memset(v[i].wrapped, 0x5a, 40);
		v[i].wrapped_len = 40;
	}
	k.versions = v;
	k.n_versions = nv;
	CU_ASSERT_EQUAL_FATAL(store_key_create(st, &k, NULL, NULL), KM_OK);
	id = k.id;
	CU_ASSERT(id > 0);
	for (i = 0; i < nv; i++)
		free(v[i].wrapped);
	free(v);
	return id;
}

/* use_count and last_used_at of version `ver` of `name` in the store. */
static void
stored(struct store *st, const char *name, uint32_t ver, uint64_t *uses,
    int64_t *last)
{
	struct store_key *k = NULL;
	size_t i;

	*uses = UINT64_MAX;
	*last = -1;
	CU_ASSERT_EQUAL_FATAL(store_key_get(st, name, &k), KM_OK);
	for (i = 0; i < k->n_versions; i++) {
		if (k->versions[i].version == ver) {
			*uses = k->versions[i].use_count;
			*last = k->versions[i].last_used_at;
		}
	}
	store_key_free(k);
}

static void
test_note_pending(void)
{
	struct usage *u = NULL;
	uint64_t uses;
	int64_t last;

	CU_ASSERT_EQUAL_FATAL(usage_new(&u), KM_OK);
	usage_pending(u, 1, 1, &uses, &last);
	CU_ASSERT_EQUAL(uses, 0);
	CU_ASSERT_EQUAL(last, 0);

	usage_note(u, 1, 1, 1000);
	usage_note(u, 1, 1, 3000);
	usage_note(u, 1, 1, 2000);	/* out of order: last stays 3000 */
	usage_note(u, 1, 2, 500);
	usage_note(u, 2, 1, 700);
	usage_pending(u, 1, 1, &uses, &last);
	CU_ASSERT_EQUAL(uses, 3);
	CU_ASSERT_EQUAL(last, 3000);
	usage_pending(u, 1, 2, &uses, &last);
	CU_ASSERT_EQUAL(uses, 1);
	CU_ASSERT_EQUAL(last, 500);
	usage_pending(u, 2, 1, &uses, &last);
	CU_ASSERT_EQUAL(uses, 1);
	CU_ASSERT_EQUAL(last, 700);
	usage_pending(u, 2, 2, &uses, &last);
	CU_ASSERT_EQUAL(uses, 0);
	CU_ASSERT_EQUAL(last, 0);
	/* Ids and versions that differ only in high bits stay apart. */
	usage_note(u, (int64_t)1 << 40 | 1, 1, 9);
	usage_note(u, 1, 1u | 1u << 31, 8);
	usage_pending(u, 1, 1, &uses, &last);
	CU_ASSERT_EQUAL(uses, 3);
	usage_pending(u, (int64_t)1 << 40 | 1, 1, &uses, &last);
	CU_ASSERT_EQUAL(uses, 1);
	CU_ASSERT_EQUAL(last, 9);
	usage_free(u);
	usage_free(NULL);

	/* Many entries: every one kept apart, across hash collisions. */
	CU_ASSERT_EQUAL_FATAL(usage_new(&u), KM_OK);
	{
		int64_t id;
		uint32_t v;
		size_t bad = 0;

		for (id = 1; id <= 2000; id++)
			for (v = 1; v <= 5; v++) {
				usage_note(u, id, v, id * 10 + v);
				if (v == 3)
					usage_note(u, id, v, id);
			}
		for (id = 1; id <= 2000; id++)
			for (v = 1; v <= 5; v++) {
				usage_pending(u, id, v, &uses, &last);
				if (uses != (v == 3 ? 2u : 1u) ||
				    last != id * 10 + (int64_t)v)
					bad++;
			}
		CU_ASSERT_EQUAL(bad, 0);
	}
	usage_free(u);
}

static void
test_flush(void)
{
	struct store *st = open_store();
	struct usage *u = NULL;
	int64_t a, b, last;
	uint64_t uses;
	int i;

	a = create_key(st, "matter-a", 2);
	b = create_key(st, "matter-b", 1);
	CU_ASSERT_NOT_EQUAL(a, b);
	CU_ASSERT_EQUAL_FATAL(usage_new(&u), KM_OK);

	/* Nothing pending: a no-op. */
	CU_ASSERT_EQUAL(usage_flush(u, st), KM_OK);
	stored(st, "matter-a", 1, &uses, &last);
	CU_ASSERT_EQUAL(uses, 0);
	CU_ASSERT_EQUAL(last, 0);

	for (i = 0; i < 5; i++)
		usage_note(u, a, 2, 1700000000000000LL + i);
	usage_note(u, a, 1, 1700000000000100LL);
	for (i = 0; i < 7; i++)
		usage_note(u, b, 1, 1700000000000200LL - i);
	/* Counters for a version that does not exist go nowhere quietly. */
	usage_note(u, a, 99, 1700000000000300LL);
	CU_ASSERT_EQUAL_FATAL(usage_flush(u, st), KM_OK);

	stored(st, "matter-a", 2, &uses, &last);
	CU_ASSERT_EQUAL(uses, 5);
	CU_ASSERT_EQUAL(last, 1700000000000004LL);
	stored(st, "matter-a", 1, &uses, &last);
	CU_ASSERT_EQUAL(uses, 1);
	CU_ASSERT_EQUAL(last, 1700000000000100LL);
	stored(st, "matter-b", 1, &uses, &last);
	CU_ASSERT_EQUAL(uses, 7);
	CU_ASSERT_EQUAL(last, 1700000000000200LL);

	/* Flushed counters are no longer pending. */
	usage_pending(u, a, 2, &uses, &last);
	CU_ASSERT_EQUAL(uses, 0);
	usage_pending(u, b, 1, &uses, &last);
	CU_ASSERT_EQUAL(uses, 0);
	usage_pending(u, a, 99, &uses, &last);
	CU_ASSERT_EQUAL(uses, 0);

	/* A second round adds up; an older time does not lower
	 * last_used_at. */
	usage_note(u, a, 2, 1600000000000000LL);
	usage_note(u, a, 2, 1600000000000001LL);
	usage_note(u, b, 1, 1800000000000000LL);
	CU_ASSERT_EQUAL_FATAL(usage_flush(u, st), KM_OK);
	stored(st, "matter-a", 2, &uses, &last);
	CU_ASSERT_EQUAL(uses, 7);
	CU_ASSERT_EQUAL(last, 1700000000000004LL);
	stored(st, "matter-b", 1, &uses, &last);
	CU_ASSERT_EQUAL(uses, 8);
	CU_ASSERT_EQUAL(last, 1800000000000000LL);
	stored(st, "matter-a", 1, &uses, &last);
	CU_ASSERT_EQUAL(uses, 1);

	/* And a flush with nothing new changes nothing. */
	CU_ASSERT_EQUAL(usage_flush(u, st), KM_OK);
	stored(st, "matter-a", 2, &uses, &last);
	CU_ASSERT_EQUAL(uses, 7);

	usage_free(u);
	store_free(st);
}

#define N_THREADS 4
#define N_NOTES 5000

struct noter {
	struct usage *u;
	int64_t key;
};

static void *
noter_run(void *arg)
{
	struct noter *n = arg;
	int i;

	for (i = 0; i < N_NOTES; i++)
		usage_note(n->u, n->key, 1 + (uint32_t)(i % 2), km_now_us());
	return NULL;
}

static struct usage *flusher_u;
static struct store *flusher_st;
static atomic_int flusher_stop;
static int flusher_failures;

static void *
flusher_run(void *arg)
{
	(void)arg;
	while (!flusher_stop)
		if (usage_flush(flusher_u, flusher_st) != KM_OK)
			flusher_failures++;
	return NULL;
}

static void
test_concurrent(void)
{
	struct store *st = open_store();
	struct usage *u = NULL;
	struct noter n[N_THREADS];
	pthread_t th[N_THREADS], fl;
	uint64_t u1, u2;
	int64_t id, last;
	int t;

	id = create_key(st, "busy", 2);
	CU_ASSERT_EQUAL_FATAL(usage_new(&u), KM_OK);
	/* Notes from several threads while another thread keeps flushing:
	 * no count is lost or counted twice. */
	flusher_u = u;
	flusher_st = st;
	flusher_stop = 0;
	flusher_failures = 0;
	CU_ASSERT_EQUAL_FATAL(pthread_create(&fl, NULL, flusher_run, NULL), 0);
	for (t = 0; t < N_THREADS; t++) {
		n[t].u = u;
		n[t].key = id;
		CU_ASSERT_EQUAL_FATAL(pthread_create(&th[t], NULL, noter_run,
		    &n[t]), 0);
	}
	for (t = 0; t < N_THREADS; t++)
		CU_ASSERT_EQUAL(pthread_join(th[t], NULL), 0);
	flusher_stop = 1;
	CU_ASSERT_EQUAL(pthread_join(fl, NULL), 0);
	CU_ASSERT_EQUAL(flusher_failures, 0);
	CU_ASSERT_EQUAL(usage_flush(u, st), KM_OK);

	stored(st, "busy", 1, &u1, &last);
	CU_ASSERT(last > 0);
	stored(st, "busy", 2, &u2, &last);
	CU_ASSERT_EQUAL(u1, N_THREADS * N_NOTES / 2);
	CU_ASSERT_EQUAL(u2, N_THREADS * N_NOTES / 2);
	CU_ASSERT(last > 0 && last <= km_now_us());
	usage_free(u);
	store_free(st);
}

int
main(void)
{
	static const struct ut_test tests[] = {
		{ "note and pending", test_note_pending },
		{ "flush into the store", test_flush },
		{ "concurrent notes and flushes", test_concurrent },
		{ NULL, NULL },
	};

	return ut_main("usage", suite_init, ut_scratch_clean, tests);
}
