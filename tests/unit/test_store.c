/* Unit tests of the SQLite metadata store (service/store.c). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <sqlite3.h>

#include "km.h"
#include "log.h"
#include "store.h"

static char tmpdir[256];
static int db_seq;

/* A fresh database path in the temp dir. */
static void
db_path(char *out, size_t outlen)
{
	snprintf(out, outlen, "%s/t%d.db", tmpdir, ++db_seq);
}

static struct store *
open_fresh(char *path, size_t pathlen)
{
	struct store *st = NULL;
	char local[300];

	if (path == NULL) {
		path = local;
		pathlen = sizeof(local);
	}
	db_path(path, pathlen);
	CU_ASSERT_EQUAL_FATAL(store_open(path, &st), KM_OK);
	CU_ASSERT_PTR_NOT_NULL_FATAL(st);
	return st;
}

static int
hook_count(void *arg)
{
	(*(int *)arg)++;
	return 0;
}

static int
hook_fail(void *arg)
{
	if (arg != NULL)
		(*(int *)arg)++;
	return KM_ERR_AUDIT;
}

static unsigned char *
bytes_dup(const void *p, size_t n)
{
	unsigned char *b = malloc(n);

	CU_ASSERT_PTR_NOT_NULL_FATAL(b);
	memcpy(b, p, n);
	return b;
}

/* A key with `nv` versions 1..nv; the last one is primary, the others
 * active. Freed with store_key_free. */
static struct store_key *
make_key(const char *name, size_t nv)
{
	struct store_key *k = calloc(1, sizeof(*k));
	unsigned char w[40];
	size_t i;

	CU_ASSERT_PTR_NOT_NULL_FATAL(k);
	snprintf(k->name, sizeof(k->name), "%s", name);
	snprintf(k->type, sizeof(k->type), "aes256-gcm");
	snprintf(k->purpose, sizeof(k->purpose), "encrypt");
	k->created_at = 1700000000000000LL;
	k->rotation_period = 90 * 86400;
	if (nv > 0) {
		k->versions = calloc(nv, sizeof(*k->versions));
		CU_ASSERT_PTR_NOT_NULL_FATAL(k->versions);
		k->n_versions = nv;
	}
	for (i = 0; i < nv; i++) {
		struct store_version *v = &k->versions[i];

		memset(w, (int)(0xa0 + i), sizeof(w));
		v->version = (uint32_t)(i + 1);
		v->state = i + 1 == nv ? KM_STATE_PRIMARY : KM_STATE_ACTIVE;
		v->created_at = k->created_at + (int64_t)i;
		v->mek_version = 1;
		v->storage = STORE_WRAPPED;
		v->wrapped = bytes_dup(w, sizeof(w));
		v->wrapped_len = sizeof(w);
	}
	k->primary_version = (uint32_t)nv;
	return k;
}

static int
create_simple(struct store *st, const char *name)
{
	struct store_key *k = make_key(name, 1);
	int r = store_key_create(st, k, NULL, NULL);

	store_key_free(k);
	return r;
}

static const struct store_version *
find_version(const struct store_key *k, uint32_t v)
{
	size_t i;

	for (i = 0; i < k->n_versions; i++)
		if (k->versions[i].version == v)
			return &k->versions[i];
	return NULL;
}

static struct store_version
new_version(unsigned char fill)
{
	struct store_version v;
	unsigned char w[48];

	memset(&v, 0, sizeof(v));
	memset(w, fill, sizeof(w));
	v.state = KM_STATE_ACTIVE;	/* the store must make it primary */
	v.created_at = km_now_us();
	v.mek_version = 1;
	v.storage = STORE_WRAPPED;
	v.wrapped = bytes_dup(w, sizeof(w));
	v.wrapped_len = sizeof(w);
	return v;
}

/* --- tests --------------------------------------------------------------- */

static void
test_state_names(void)
{
	enum km_state s, p;

	CU_ASSERT_STRING_EQUAL(km_state_name(KM_STATE_PRIMARY), "primary");
	CU_ASSERT_STRING_EQUAL(km_state_name(KM_STATE_ACTIVE), "active");
	CU_ASSERT_STRING_EQUAL(km_state_name(KM_STATE_RETIRED), "retired");
	CU_ASSERT_STRING_EQUAL(km_state_name(KM_STATE_ARCHIVED), "archived");
	CU_ASSERT_STRING_EQUAL(km_state_name(KM_STATE_REVOKED), "revoked");
	CU_ASSERT_STRING_EQUAL(km_state_name(KM_STATE_DESTROYED), "destroyed");
	for (s = KM_STATE_PRIMARY; s <= KM_STATE_DESTROYED; s++) {
		CU_ASSERT_EQUAL(km_state_parse(km_state_name(s), &p), KM_OK);
		CU_ASSERT_EQUAL(p, s);
	}
	CU_ASSERT_EQUAL(km_state_parse("Primary", &p), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(km_state_parse("", &p), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(km_state_parse(NULL, &p), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_STRING_EQUAL(km_state_name((enum km_state)0), "unknown");
	CU_ASSERT_STRING_EQUAL(km_state_name((enum km_state)7), "unknown");
	store_free(NULL);
	store_key_free(NULL);
	store_token_free(NULL);
}

static void
test_open_reopen(void)
{
	struct store *st;
	struct store_key *k = NULL;
	sqlite3_stmt *q = NULL;
	sqlite3 *db = NULL;
	struct stat sb;
	char path[300];
	int ver;

	st = open_fresh(path, sizeof(path));
	ver = store_schema_version(st);
	CU_ASSERT(ver >= 1);
	CU_ASSERT_EQUAL(store_check(st), KM_OK);
	CU_ASSERT_EQUAL_FATAL(stat(path, &sb), 0);
	CU_ASSERT_EQUAL(sb.st_mode & 0777, 0600);
	CU_ASSERT_EQUAL(create_simple(st, "persist"), KM_OK);
	CU_ASSERT_EQUAL(store_mek_add(st, 1, 5, NULL, NULL), KM_OK);
	store_free(st);

	st = NULL;
	CU_ASSERT_EQUAL_FATAL(store_open(path, &st), KM_OK);
	CU_ASSERT_EQUAL(store_schema_version(st), ver);
	CU_ASSERT_EQUAL(store_key_get(st, "persist", &k), KM_OK);
	CU_ASSERT_PTR_NOT_NULL(k);
	if (k != NULL) {
		CU_ASSERT_STRING_EQUAL(k->name, "persist");
		CU_ASSERT_EQUAL(k->n_versions, 1);
	}
	store_key_free(k);
	store_free(st);

	/* One schema_migrations row per migration; a schema newer than this
	 * build is refused rather than used. */
	CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
	CU_ASSERT_EQUAL(sqlite3_prepare_v2(db, "SELECT count(*), max(version), "
	    "min(applied_at) FROM schema_migrations", -1, &q, NULL), SQLITE_OK);
	CU_ASSERT_EQUAL(sqlite3_step(q), SQLITE_ROW);
	CU_ASSERT_EQUAL(sqlite3_column_int(q, 0), ver);
	CU_ASSERT_EQUAL(sqlite3_column_int(q, 1), ver);
	CU_ASSERT(sqlite3_column_int64(q, 2) > 0);
	CU_ASSERT_EQUAL(sqlite3_finalize(q), SQLITE_OK);
	CU_ASSERT_EQUAL(sqlite3_exec(db, "INSERT INTO schema_migrations "
	    "VALUES (1000, 0)", NULL, NULL, NULL), SQLITE_OK);
	CU_ASSERT_EQUAL(sqlite3_close(db), SQLITE_OK);
	st = NULL;
	CU_ASSERT_EQUAL(store_open(path, &st), KM_ERR_STORE);
	CU_ASSERT_PTR_NULL(st);

	CU_ASSERT_EQUAL(store_open(":memory:", &st), KM_ERR_CONFIG);
	CU_ASSERT_PTR_NULL(st);
	snprintf(path, sizeof(path), "%s/no/such/dir/x.db", tmpdir);
	CU_ASSERT_NOT_EQUAL(store_open(path, &st), KM_OK);
	CU_ASSERT_PTR_NULL(st);
}

static void
test_roundtrip(void)
{
	struct store *st = open_fresh(NULL, 0);
	struct store_key *k, *g = NULL;
	const struct store_version *gv;
	unsigned char wrapped[300], pub[91];
	char *ctx[] = { "tenant", "matter", "x=y z" };
	size_t i;
	int calls = 0;

	for (i = 0; i < sizeof(wrapped); i++)
		wrapped[i] = (unsigned char)(i * 7);	/* includes zero bytes */
	for (i = 0; i < sizeof(pub); i++)
		pub[i] = (unsigned char)(255 - i);

	k = make_key("matter-4711", 3);
	snprintf(k->type, sizeof(k->type), "ec-p256");
	snprintf(k->purpose, sizeof(k->purpose), "sign");
	k->rotation_period = 7776000;
	k->next_rotation_at = 1800000000000001LL;
	k->expires_at = 1900000000000002LL;
	k->created_at = 1700000000000003LL;
	k->required_context = calloc(3, sizeof(char *));
	CU_ASSERT_PTR_NOT_NULL_FATAL(k->required_context);
	for (i = 0; i < 3; i++)
		k->required_context[i] = strdup(ctx[i]);
	k->n_required = 3;
	/* Given out of order; read back sorted. v3 is primary, v1 retired,
	 * v2 lives in the token. */
	k->versions[0].version = 3;
	k->versions[0].state = KM_STATE_PRIMARY;
	k->versions[0].mek_version = 9;
	free(k->versions[0].wrapped);
	k->versions[0].wrapped = bytes_dup(wrapped, sizeof(wrapped));
	k->versions[0].wrapped_len = sizeof(wrapped);
	k->versions[0].public_key = bytes_dup(pub, sizeof(pub));
	k->versions[0].public_key_len = sizeof(pub);
	k->versions[0].last_used_at = 1750000000000000LL;
	k->versions[0].use_count = (1ULL << 40) + 3;
	k->versions[1].version = 1;
	k->versions[1].state = KM_STATE_RETIRED;
	k->versions[2].version = 2;
	k->versions[2].state = KM_STATE_ACTIVE;
	k->versions[2].storage = STORE_TOKEN;
	k->versions[2].mek_version = 0;
	km_secure_free(k->versions[2].wrapped, k->versions[2].wrapped_len);
	k->versions[2].wrapped = NULL;
	k->versions[2].wrapped_len = 0;
	k->primary_version = 3;

	CU_ASSERT_EQUAL(store_key_create(st, k, hook_count, &calls), KM_OK);
	CU_ASSERT_EQUAL(calls, 1);
	CU_ASSERT(k->id > 0);
	CU_ASSERT_EQUAL_FATAL(store_key_get(st, "matter-4711", &g), KM_OK);
	CU_ASSERT_PTR_NOT_NULL_FATAL(g);
	CU_ASSERT_EQUAL(g->id, k->id);
	CU_ASSERT_STRING_EQUAL(g->name, "matter-4711");
	CU_ASSERT_STRING_EQUAL(g->type, "ec-p256");
	CU_ASSERT_STRING_EQUAL(g->purpose, "sign");
	CU_ASSERT_EQUAL(g->primary_version, 3);
	CU_ASSERT_EQUAL(g->rotation_period, 7776000);
	CU_ASSERT_EQUAL(g->next_rotation_at, 1800000000000001LL);
	CU_ASSERT_EQUAL(g->expires_at, 1900000000000002LL);
	CU_ASSERT_EQUAL(g->created_at, 1700000000000003LL);
	CU_ASSERT_EQUAL_FATAL(g->n_required, 3);
	for (i = 0; i < 3; i++)
		CU_ASSERT_STRING_EQUAL(g->required_context[i], ctx[i]);
	CU_ASSERT_EQUAL_FATAL(g->n_versions, 3);
	for (i = 0; i < 3; i++)
		CU_ASSERT_EQUAL(g->versions[i].version, i + 1);

	gv = &g->versions[2];
	CU_ASSERT_EQUAL(gv->state, KM_STATE_PRIMARY);
	CU_ASSERT_EQUAL(gv->mek_version, 9);
	CU_ASSERT_EQUAL(gv->storage, STORE_WRAPPED);
	CU_ASSERT_EQUAL(gv->created_at, k->versions[0].created_at);
	CU_ASSERT_EQUAL_FATAL(gv->wrapped_len, sizeof(wrapped));
	CU_ASSERT(memcmp(gv->wrapped, wrapped, sizeof(wrapped)) == 0);
	CU_ASSERT_EQUAL_FATAL(gv->public_key_len, sizeof(pub));
	CU_ASSERT(memcmp(gv->public_key, pub, sizeof(pub)) == 0);
	CU_ASSERT_EQUAL(gv->last_used_at, 1750000000000000LL);
	CU_ASSERT_EQUAL(gv->use_count, (1ULL << 40) + 3);

	gv = &g->versions[0];
	CU_ASSERT_EQUAL(gv->state, KM_STATE_RETIRED);
	CU_ASSERT_EQUAL(gv->storage, STORE_WRAPPED);
	CU_ASSERT_EQUAL(gv->wrapped_len, 40);
	CU_ASSERT_PTR_NULL(gv->public_key);
	CU_ASSERT_EQUAL(gv->last_used_at, 0);
	CU_ASSERT_EQUAL(gv->use_count, 0);

	gv = &g->versions[1];
	CU_ASSERT_EQUAL(gv->state, KM_STATE_ACTIVE);
	CU_ASSERT_EQUAL(gv->storage, STORE_TOKEN);
	CU_ASSERT_EQUAL(gv->mek_version, 0);
	CU_ASSERT_PTR_NULL(gv->wrapped);
	CU_ASSERT_EQUAL(gv->wrapped_len, 0);
	store_key_free(g);
	store_key_free(k);

	/* No context, no versions, no optional times: all read back as 0. */
	k = make_key("bare", 0);
	k->rotation_period = 0;
	CU_ASSERT_EQUAL(store_key_create(st, k, NULL, NULL), KM_OK);
	store_key_free(k);
	g = NULL;
	CU_ASSERT_EQUAL_FATAL(store_key_get(st, "bare", &g), KM_OK);
	CU_ASSERT_EQUAL(g->n_required, 0);
	CU_ASSERT_PTR_NULL(g->required_context);
	CU_ASSERT_EQUAL(g->n_versions, 0);
	CU_ASSERT_EQUAL(g->primary_version, 0);
	CU_ASSERT_EQUAL(g->rotation_period, 0);
	CU_ASSERT_EQUAL(g->next_rotation_at, 0);
	CU_ASSERT_EQUAL(g->expires_at, 0);
	store_key_free(g);

	g = (struct store_key *)1;
	CU_ASSERT_EQUAL(store_key_get(st, "nope", &g), KM_ERR_KEY_NOT_FOUND);
	CU_ASSERT_PTR_NULL(g);
	store_free(st);
}

static void
test_create_invalid(void)
{
	struct store *st = open_fresh(NULL, 0);
	struct store_key *k, *g = NULL;

	/* A context name with '\n' could not be split again. */
	k = make_key("bad-ctx", 1);
	k->required_context = calloc(1, sizeof(char *));
	k->required_context[0] = strdup("a\nb");
	k->n_required = 1;
	CU_ASSERT_EQUAL(store_key_create(st, k, NULL, NULL), KM_ERR_INVALID_REQUEST);
	store_key_free(k);

	/* Two primaries. */
	k = make_key("two-primaries", 2);
	k->versions[0].state = KM_STATE_PRIMARY;
	CU_ASSERT_EQUAL(store_key_create(st, k, NULL, NULL), KM_ERR_INVALID_REQUEST);
	store_key_free(k);

	/* primary_version naming a non-primary version. */
	k = make_key("wrong-primary", 2);
	k->primary_version = 1;
	CU_ASSERT_EQUAL(store_key_create(st, k, NULL, NULL), KM_ERR_INVALID_REQUEST);
	store_key_free(k);

	/* Duplicate version numbers. */
	k = make_key("dup-versions", 2);
	k->versions[0].version = 2;
	CU_ASSERT_EQUAL(store_key_create(st, k, NULL, NULL), KM_ERR_INVALID_REQUEST);
	store_key_free(k);

	k = make_key("", 1);
	CU_ASSERT_EQUAL(store_key_create(st, k, NULL, NULL), KM_ERR_INVALID_REQUEST);
	store_key_free(k);

	CU_ASSERT_EQUAL(store_key_get(st, "bad-ctx", &g), KM_ERR_KEY_NOT_FOUND);
	CU_ASSERT_EQUAL(store_key_get(st, "two-primaries", &g), KM_ERR_KEY_NOT_FOUND);
	store_free(st);
}

static void
test_duplicate(void)
{
	struct store *st = open_fresh(NULL, 0);
	struct store_key *k, *g = NULL;
	int calls = 0;

	CU_ASSERT_EQUAL(create_simple(st, "dup"), KM_OK);
	k = make_key("dup", 2);
	CU_ASSERT_EQUAL(store_key_create(st, k, hook_count, &calls), KM_ERR_KEY_EXISTS);
	CU_ASSERT_EQUAL(calls, 0);
	CU_ASSERT_EQUAL(k->id, 0);
	store_key_free(k);
	CU_ASSERT_EQUAL_FATAL(store_key_get(st, "dup", &g), KM_OK);
	CU_ASSERT_EQUAL(g->n_versions, 1);
	store_key_free(g);
	store_free(st);
}

static void
test_hook_rollback(void)
{
	struct store *st = open_fresh(NULL, 0);
	struct store_key *k, *g = NULL;
	struct store_version nv;
	uint32_t mek;
	int calls = 0;

	k = make_key("rolled-back", 1);
	CU_ASSERT_EQUAL(store_key_create(st, k, hook_fail, &calls), KM_ERR_AUDIT);
	CU_ASSERT_EQUAL(calls, 1);
	CU_ASSERT_EQUAL(k->id, 0);
	CU_ASSERT_EQUAL(store_key_get(st, "rolled-back", &g), KM_ERR_KEY_NOT_FOUND);
	/* The name is free again and the writer is usable. */
	CU_ASSERT_EQUAL(store_key_create(st, k, hook_count, &calls), KM_OK);
	CU_ASSERT_EQUAL(calls, 2);
	store_key_free(k);

	nv = new_version(0x55);
	CU_ASSERT_EQUAL(store_key_rotate(st, "rolled-back", &nv, 0, hook_fail, NULL),
	    KM_ERR_AUDIT);
	km_secure_free(nv.wrapped, nv.wrapped_len);
	CU_ASSERT_EQUAL(store_version_set_state(st, "rolled-back", 1,
	    KM_STATE_PRIMARY, KM_STATE_REVOKED, hook_fail, NULL), KM_ERR_AUDIT);
	CU_ASSERT_EQUAL_FATAL(store_key_get(st, "rolled-back", &g), KM_OK);
	CU_ASSERT_EQUAL(g->n_versions, 1);
	CU_ASSERT_EQUAL(g->primary_version, 1);
	CU_ASSERT_EQUAL(g->versions[0].state, KM_STATE_PRIMARY);
	store_key_free(g);

	CU_ASSERT_EQUAL(store_mek_add(st, 3, 1, hook_fail, NULL), KM_ERR_AUDIT);
	CU_ASSERT_EQUAL(store_mek_current(st, &mek), KM_ERR_NOT_FOUND);
	store_free(st);
}

struct reentry {
	struct store *st;
	int inner;
};

static int
hook_reenter(void *arg)
{
	struct reentry *re = arg;

	re->inner = store_mek_add(re->st, 42, 1, NULL, NULL);
	return 0;
}

static void
test_hook_reentry(void)
{
	struct store *st = open_fresh(NULL, 0);
	struct reentry re = { st, -1 };
	uint32_t mek;

	/* Would deadlock on the writer mutex without the guard. */
	CU_ASSERT_EQUAL(store_mek_add(st, 1, 1, hook_reenter, &re), KM_OK);
	CU_ASSERT_EQUAL(re.inner, KM_ERR_INTERNAL);
	CU_ASSERT_EQUAL(store_mek_current(st, &mek), KM_OK);
	CU_ASSERT_EQUAL(mek, 1);
	store_free(st);
}

static void
test_rotate(void)
{
	struct store *st = open_fresh(NULL, 0);
	struct store_version nv;
	struct store_key *g = NULL;
	int calls = 0;

	CU_ASSERT_EQUAL(create_simple(st, "rot"), KM_OK);

	nv = new_version(0x11);
	CU_ASSERT_EQUAL(store_key_rotate(st, "rot", &nv, 1800000000000000LL,
	    hook_count, &calls), KM_OK);
	CU_ASSERT_EQUAL(calls, 1);
	CU_ASSERT_EQUAL(nv.version, 2);
	CU_ASSERT_EQUAL(nv.state, KM_STATE_PRIMARY);
	km_secure_free(nv.wrapped, nv.wrapped_len);
	CU_ASSERT_EQUAL_FATAL(store_key_get(st, "rot", &g), KM_OK);
	CU_ASSERT_EQUAL(g->primary_version, 2);
	CU_ASSERT_EQUAL(g->next_rotation_at, 1800000000000000LL);
	CU_ASSERT_EQUAL_FATAL(g->n_versions, 2);
	CU_ASSERT_EQUAL(g->versions[0].state, KM_STATE_ACTIVE);
	CU_ASSERT_EQUAL(g->versions[1].state, KM_STATE_PRIMARY);
	CU_ASSERT_EQUAL(g->versions[1].wrapped_len, 48);
	CU_ASSERT_EQUAL(g->versions[1].wrapped[0], 0x11);
	store_key_free(g);

	nv = new_version(0x22);
	nv.state = 0;		/* rotate sets it */
	CU_ASSERT_EQUAL(store_key_rotate(st, "rot", &nv, 0, NULL, NULL), KM_OK);
	CU_ASSERT_EQUAL(nv.version, 3);
	km_secure_free(nv.wrapped, nv.wrapped_len);
	CU_ASSERT_EQUAL_FATAL(store_key_get(st, "rot", &g), KM_OK);
	CU_ASSERT_EQUAL(g->primary_version, 3);
	CU_ASSERT_EQUAL(g->next_rotation_at, 0);
	CU_ASSERT_EQUAL_FATAL(g->n_versions, 3);
	CU_ASSERT_EQUAL(g->versions[0].state, KM_STATE_ACTIVE);
	CU_ASSERT_EQUAL(g->versions[1].state, KM_STATE_ACTIVE);
	CU_ASSERT_EQUAL(g->versions[2].state, KM_STATE_PRIMARY);
	store_key_free(g);

	/* After an emergency revoke there is no primary; rotating makes one
	 * and leaves the revoked version revoked. */
	CU_ASSERT_EQUAL(store_version_set_state(st, "rot", 3, KM_STATE_PRIMARY,
	    KM_STATE_REVOKED, NULL, NULL), KM_OK);
	nv = new_version(0x33);
	CU_ASSERT_EQUAL(store_key_rotate(st, "rot", &nv, 0, NULL, NULL), KM_OK);
	CU_ASSERT_EQUAL(nv.version, 4);
	km_secure_free(nv.wrapped, nv.wrapped_len);
	CU_ASSERT_EQUAL_FATAL(store_key_get(st, "rot", &g), KM_OK);
	CU_ASSERT_EQUAL(g->primary_version, 4);
	CU_ASSERT_EQUAL(find_version(g, 3)->state, KM_STATE_REVOKED);
	CU_ASSERT_EQUAL(find_version(g, 4)->state, KM_STATE_PRIMARY);
	store_key_free(g);

	nv = new_version(0x44);
	CU_ASSERT_EQUAL(store_key_rotate(st, "missing", &nv, 0, hook_count, &calls),
	    KM_ERR_KEY_NOT_FOUND);
	CU_ASSERT_EQUAL(calls, 1);
	km_secure_free(nv.wrapped, nv.wrapped_len);
	store_free(st);
}

static void
test_set_state(void)
{
	struct store *st = open_fresh(NULL, 0);
	struct store_key *k, *g = NULL;
	int calls = 0;

	k = make_key("ss", 3);		/* v1, v2 active; v3 primary */
	k->versions[0].public_key = bytes_dup("PUB", 3);
	k->versions[0].public_key_len = 3;
	CU_ASSERT_EQUAL_FATAL(store_key_create(st, k, NULL, NULL), KM_OK);
	store_key_free(k);

	/* CAS: v3 is primary, not active. */
	CU_ASSERT_EQUAL(store_version_set_state(st, "ss", 3, KM_STATE_ACTIVE,
	    KM_STATE_RETIRED, hook_count, &calls), KM_ERR_INVALID_TRANSITION);
	CU_ASSERT_EQUAL(calls, 0);
	CU_ASSERT_EQUAL(store_version_set_state(st, "ss", 9, KM_STATE_ACTIVE,
	    KM_STATE_RETIRED, NULL, NULL), KM_ERR_VERSION_NOT_FOUND);
	CU_ASSERT_EQUAL(store_version_set_state(st, "nokey", 1, KM_STATE_ACTIVE,
	    KM_STATE_RETIRED, NULL, NULL), KM_ERR_KEY_NOT_FOUND);
	CU_ASSERT_EQUAL(store_version_set_state(st, "ss", 1, KM_STATE_ACTIVE,
	    KM_STATE_PRIMARY, NULL, NULL), KM_ERR_INVALID_TRANSITION);
	CU_ASSERT_EQUAL(store_version_set_state(st, "ss", 1, KM_STATE_ACTIVE,
	    (enum km_state)0, NULL, NULL), KM_ERR_INVALID_REQUEST);

	CU_ASSERT_EQUAL(store_version_set_state(st, "ss", 2, KM_STATE_ACTIVE,
	    KM_STATE_RETIRED, hook_count, &calls), KM_OK);
	CU_ASSERT_EQUAL(calls, 1);
	/* The same move again: v2 is no longer active. */
	CU_ASSERT_EQUAL(store_version_set_state(st, "ss", 2, KM_STATE_ACTIVE,
	    KM_STATE_RETIRED, NULL, NULL), KM_ERR_INVALID_TRANSITION);

	/* Leaving primary clears primary_version. */
	CU_ASSERT_EQUAL(store_version_set_state(st, "ss", 3, KM_STATE_PRIMARY,
	    KM_STATE_REVOKED, NULL, NULL), KM_OK);
	/* Destroying erases the wrapped blob, keeps the public key. */
	CU_ASSERT_EQUAL(store_version_set_state(st, "ss", 1, KM_STATE_ACTIVE,
	    KM_STATE_DESTROYED, NULL, NULL), KM_OK);

	CU_ASSERT_EQUAL_FATAL(store_key_get(st, "ss", &g), KM_OK);
	CU_ASSERT_EQUAL(g->primary_version, 0);
	CU_ASSERT_EQUAL_FATAL(g->n_versions, 3);
	CU_ASSERT_EQUAL(g->versions[0].state, KM_STATE_DESTROYED);
	CU_ASSERT_PTR_NULL(g->versions[0].wrapped);
	CU_ASSERT_EQUAL(g->versions[0].wrapped_len, 0);
	CU_ASSERT_EQUAL_FATAL(g->versions[0].public_key_len, 3);
	CU_ASSERT(memcmp(g->versions[0].public_key, "PUB", 3) == 0);
	CU_ASSERT_EQUAL(g->versions[1].state, KM_STATE_RETIRED);
	CU_ASSERT_EQUAL(g->versions[1].wrapped_len, 40);
	CU_ASSERT_EQUAL(g->versions[2].state, KM_STATE_REVOKED);
	CU_ASSERT_EQUAL(g->versions[2].wrapped_len, 40);
	store_key_free(g);
	store_free(st);
}

static int
file_contains(const char *path, const unsigned char *pat, size_t patlen)
{
	unsigned char *buf = NULL;
	size_t len = 0, i;
	FILE *f;
	int found = 0;

	if ((f = fopen(path, "rb")) == NULL)
		return 0;
	if (fseek(f, 0, SEEK_END) == 0 && (len = (size_t)ftell(f)) > 0 &&
	    fseek(f, 0, SEEK_SET) == 0 && (buf = malloc(len)) != NULL &&
	    fread(buf, 1, len, f) == len) {
		for (i = 0; i + patlen <= len && !found; i++)
			found = memcmp(buf + i, pat, patlen) == 0;
	}
	free(buf);
	fclose(f);
	return found;
}

static int
db_files_contain(const char *path, const unsigned char *pat, size_t patlen)
{
	char wal[320];

	snprintf(wal, sizeof(wal), "%s-wal", path);
	return file_contains(path, pat, patlen) || file_contains(wal, pat, patlen);
}

static void
test_destroy_erases_file_bytes(void)
{
	struct store *st;
	struct store_key *k;
	unsigned char pat[64];
	char path[300];
	size_t i;

	for (i = 0; i < sizeof(pat); i++)
		pat[i] = (unsigned char)(0x5a ^ (i * 13));
	st = open_fresh(path, sizeof(path));
	k = make_key("erase-me", 2);
	memcpy(k->versions[0].wrapped, pat, 40);
	memcpy(k->versions[1].wrapped, pat + 24, 40);
	CU_ASSERT_EQUAL_FATAL(store_key_create(st, k, NULL, NULL), KM_OK);
	store_key_free(k);
	/* The test can fail: the bytes are on disk now. */
	CU_ASSERT(db_files_contain(path, pat, 40));
	CU_ASSERT_EQUAL(store_version_set_state(st, "erase-me", 1,
	    KM_STATE_ACTIVE, KM_STATE_DESTROYED, NULL, NULL), KM_OK);
	CU_ASSERT(!db_files_contain(path, pat, 40));
	CU_ASSERT(db_files_contain(path, pat + 24, 40));
	store_free(st);
	CU_ASSERT(!db_files_contain(path, pat, 40));
}

/* --- listing ------------------------------------------------------------- */

#define N_LIST 2500

struct match_ctx {
	int calls;
	int modulus;
};

static int
match_mod(const char *name, void *arg)
{
	struct match_ctx *m = arg;
	int num;

	m->calls++;
	if (sscanf(name, "k%d", &num) != 1)
		return 0;
	return num % m->modulus == 0;
}

static void
check_pages(struct store *st, size_t page, struct match_ctx *m, int expect_mod)
{
	struct store_key **keys = NULL;
	char after[140] = "";
	size_t n, i;
	int expect = 0, num, prev = -1, total = 0;

	for (;;) {
		CU_ASSERT_EQUAL_FATAL(store_key_list(st, after[0] ? after : NULL,
		    page, m != NULL ? match_mod : NULL, m, &keys, &n), KM_OK);
		CU_ASSERT(n <= page);
		if (n == 0)
			break;
		for (i = 0; i < n; i++) {
			CU_ASSERT_EQUAL_FATAL(sscanf(keys[i]->name, "k%d", &num), 1);
			/* strictly increasing: in order, no duplicates (fatal,
			 * or a repeating page would loop for ever) */
			CU_ASSERT_FATAL(num > prev);
			CU_ASSERT_EQUAL(num, expect);
			CU_ASSERT_EQUAL(keys[i]->n_versions, 1);
			CU_ASSERT_EQUAL(keys[i]->primary_version, 1);
			prev = num;
			expect += expect_mod;
			total++;
		}
		snprintf(after, sizeof(after), "%s", keys[n - 1]->name);
		for (i = 0; i < n; i++)
			store_key_free(keys[i]);
		free(keys);
		keys = NULL;
	}
	CU_ASSERT_EQUAL(total, (N_LIST + expect_mod - 1) / expect_mod);
	CU_ASSERT_PTR_NULL(keys);
}

static void
test_list(void)
{
	struct store *st = open_fresh(NULL, 0);
	struct store_key **keys = NULL;
	struct match_ctx m = { 0, 7 };
	int order[N_LIST], i, j, tmp;
	char name[32];
	size_t n;

	/* Insert in a shuffled order so name order is the store's doing. */
	for (i = 0; i < N_LIST; i++)
		order[i] = i;
	srand(4711);
	for (i = N_LIST - 1; i > 0; i--) {
		j = rand() % (i + 1);
		tmp = order[i];
		order[i] = order[j];
		order[j] = tmp;
	}
	for (i = 0; i < N_LIST; i++) {
		snprintf(name, sizeof(name), "k%05d", order[i]);
		CU_ASSERT_EQUAL_FATAL(create_simple(st, name), KM_OK);
	}

	check_pages(st, 100, NULL, 1);
	check_pages(st, 7, NULL, 1);
	check_pages(st, 50, &m, 7);
	/* Every name was offered to the filter exactly once over all pages. */
	CU_ASSERT_EQUAL(m.calls, N_LIST);

	/* Lazy: a short page looks at as few names as it needs. */
	m.calls = 0;
	m.modulus = 1;
	CU_ASSERT_EQUAL_FATAL(store_key_list(st, NULL, 10, match_mod, &m, &keys, &n), KM_OK);
	CU_ASSERT_EQUAL(n, 10);
	CU_ASSERT_EQUAL(m.calls, 10);
	for (i = 0; i < (int)n; i++)
		store_key_free(keys[i]);
	free(keys);

	m.calls = 0;
	m.modulus = 100;
	CU_ASSERT_EQUAL_FATAL(store_key_list(st, "k00100", 3, match_mod, &m, &keys, &n), KM_OK);
	CU_ASSERT_EQUAL_FATAL(n, 3);
	CU_ASSERT_STRING_EQUAL(keys[0]->name, "k00200");
	CU_ASSERT_STRING_EQUAL(keys[2]->name, "k00400");
	CU_ASSERT_EQUAL(m.calls, 300);
	for (i = 0; i < (int)n; i++)
		store_key_free(keys[i]);
	free(keys);

	CU_ASSERT_EQUAL(store_key_list(st, "k02499", 10, NULL, NULL, &keys, &n), KM_OK);
	CU_ASSERT_EQUAL(n, 0);
	free(keys);
	CU_ASSERT_EQUAL(store_key_list(st, NULL, 0, NULL, NULL, &keys, &n), KM_OK);
	CU_ASSERT_EQUAL(n, 0);
	free(keys);
	store_free(st);
}

static void
test_usage_flush(void)
{
	struct store *st = open_fresh(NULL, 0);
	struct store_key *k, *g = NULL;
	struct store_usage u[4];
	int64_t id;

	k = make_key("used", 2);
	CU_ASSERT_EQUAL_FATAL(store_key_create(st, k, NULL, NULL), KM_OK);
	id = k->id;
	store_key_free(k);

	memset(u, 0, sizeof(u));
	u[0] = (struct store_usage){ id, 1, 5, 1000 };
	u[1] = (struct store_usage){ id, 1, 3, 500 };	/* older: max stays */
	u[2] = (struct store_usage){ id, 2, 7, 2000 };
	u[3] = (struct store_usage){ id, 99, 1, 3000 };	/* unknown: dropped */
	CU_ASSERT_EQUAL(store_usage_flush(st, u, 4), KM_OK);
	CU_ASSERT_EQUAL_FATAL(store_key_get(st, "used", &g), KM_OK);
	CU_ASSERT_EQUAL(g->versions[0].use_count, 8);
	CU_ASSERT_EQUAL(g->versions[0].last_used_at, 1000);
	CU_ASSERT_EQUAL(g->versions[1].use_count, 7);
	CU_ASSERT_EQUAL(g->versions[1].last_used_at, 2000);
	CU_ASSERT_EQUAL(g->n_versions, 2);
	store_key_free(g);

	u[0] = (struct store_usage){ id, 1, 2, 200 };
	u[1] = (struct store_usage){ id, 2, 1, 0 };	/* no time: keep */
	CU_ASSERT_EQUAL(store_usage_flush(st, u, 2), KM_OK);
	CU_ASSERT_EQUAL(store_usage_flush(st, u, 0), KM_OK);
	CU_ASSERT_EQUAL_FATAL(store_key_get(st, "used", &g), KM_OK);
	CU_ASSERT_EQUAL(g->versions[0].use_count, 10);
	CU_ASSERT_EQUAL(g->versions[0].last_used_at, 1000);
	CU_ASSERT_EQUAL(g->versions[1].use_count, 8);
	CU_ASSERT_EQUAL(g->versions[1].last_used_at, 2000);
	store_key_free(g);

	/* Saturates instead of wrapping or turning into a REAL. */
	u[0] = (struct store_usage){ id, 1, UINT64_MAX, 5000 };
	CU_ASSERT_EQUAL(store_usage_flush(st, u, 1), KM_OK);
	CU_ASSERT_EQUAL(store_usage_flush(st, u, 1), KM_OK);
	CU_ASSERT_EQUAL_FATAL(store_key_get(st, "used", &g), KM_OK);
	CU_ASSERT_EQUAL(g->versions[0].use_count, (uint64_t)INT64_MAX);
	CU_ASSERT_EQUAL(g->versions[0].last_used_at, 5000);
	store_key_free(g);
	store_free(st);
}

static void
test_mek(void)
{
	struct store *st = open_fresh(NULL, 0);
	uint32_t v = 77;
	int calls = 0;

	CU_ASSERT_EQUAL(store_mek_current(st, &v), KM_ERR_NOT_FOUND);
	CU_ASSERT_EQUAL(v, 0);
	CU_ASSERT_EQUAL(store_mek_add(st, 1, 100, hook_count, &calls), KM_OK);
	CU_ASSERT_EQUAL(calls, 1);
	CU_ASSERT_EQUAL(store_mek_current(st, &v), KM_OK);
	CU_ASSERT_EQUAL(v, 1);
	CU_ASSERT_EQUAL(store_mek_add(st, 2, 200, NULL, NULL), KM_OK);
	CU_ASSERT_EQUAL(store_mek_current(st, &v), KM_OK);
	CU_ASSERT_EQUAL(v, 2);
	CU_ASSERT_EQUAL(store_mek_add(st, 1, 300, NULL, NULL), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(store_mek_add(st, 0, 300, NULL, NULL), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(store_mek_current(st, &v), KM_OK);
	CU_ASSERT_EQUAL(v, 2);
	store_free(st);
}

static struct store_token
make_token(const char *id, const char *role, int64_t created)
{
	struct store_token t;
	size_t i;

	memset(&t, 0, sizeof(t));
	snprintf(t.id, sizeof(t.id), "%s", id);
	snprintf(t.role, sizeof(t.role), "%s", role);
	for (i = 0; i < sizeof(t.hash); i++)
		t.hash[i] = (unsigned char)(id[0] + i);
	t.created_at = created;
	return t;
}

static void
test_tokens(void)
{
	struct store *st = open_fresh(NULL, 0);
	struct store_token a, b, c, *g = NULL, **list = NULL;
	size_t n, i;
	int calls = 0;

	a = make_token("aaaaaaaaaaaaaaaa", "app", 3000);
	a.keys = "matter-*,tenant-?";
	a.description = "billing service";
	a.expires_at = 9000;
	b = make_token("bbbbbbbbbbbbbbbb", "admin", 1000);
	c = make_token("0ccccccccccccccc", "auditor", 3000);

	CU_ASSERT_EQUAL(store_token_create(st, &a, hook_count, &calls), KM_OK);
	CU_ASSERT_EQUAL(calls, 1);
	CU_ASSERT_EQUAL(store_token_create(st, &b, NULL, NULL), KM_OK);
	CU_ASSERT_EQUAL(store_token_create(st, &c, NULL, NULL), KM_OK);
	CU_ASSERT_EQUAL(store_token_create(st, &b, hook_count, &calls),
	    KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(calls, 1);

	CU_ASSERT_EQUAL_FATAL(store_token_get(st, a.id, &g), KM_OK);
	CU_ASSERT_STRING_EQUAL(g->id, a.id);
	CU_ASSERT(memcmp(g->hash, a.hash, sizeof(a.hash)) == 0);
	CU_ASSERT_STRING_EQUAL(g->role, "app");
	CU_ASSERT_STRING_EQUAL(g->keys, "matter-*,tenant-?");
	CU_ASSERT_STRING_EQUAL(g->description, "billing service");
	CU_ASSERT_EQUAL(g->created_at, 3000);
	CU_ASSERT_EQUAL(g->expires_at, 9000);
	CU_ASSERT_EQUAL(g->revoked_at, 0);
	store_token_free(g);
	g = NULL;
	CU_ASSERT_EQUAL_FATAL(store_token_get(st, b.id, &g), KM_OK);
	CU_ASSERT_PTR_NULL(g->keys);
	CU_ASSERT_PTR_NULL(g->description);
	CU_ASSERT_EQUAL(g->expires_at, 0);
	store_token_free(g);
	g = NULL;
	CU_ASSERT_EQUAL(store_token_get(st, "ffffffffffffffff", &g),
	    KM_ERR_TOKEN_NOT_FOUND);
	CU_ASSERT_PTR_NULL(g);

	/* created_at, then id */
	CU_ASSERT_EQUAL_FATAL(store_token_list(st, &list, &n), KM_OK);
	CU_ASSERT_EQUAL_FATAL(n, 3);
	CU_ASSERT_STRING_EQUAL(list[0]->id, b.id);
	CU_ASSERT_STRING_EQUAL(list[1]->id, c.id);
	CU_ASSERT_STRING_EQUAL(list[2]->id, a.id);
	for (i = 0; i < n; i++)
		store_token_free(list[i]);
	free(list);

	CU_ASSERT_EQUAL(store_token_revoke(st, a.id, 5000, hook_count, &calls), KM_OK);
	CU_ASSERT_EQUAL(calls, 2);
	CU_ASSERT_EQUAL(store_token_revoke(st, a.id, 6000, hook_count, &calls),
	    KM_ERR_TOKEN_NOT_FOUND);
	CU_ASSERT_EQUAL(calls, 2);
	CU_ASSERT_EQUAL(store_token_revoke(st, "ffffffffffffffff", 6000, NULL, NULL),
	    KM_ERR_TOKEN_NOT_FOUND);
	CU_ASSERT_EQUAL(store_token_revoke(st, b.id, 6000, hook_fail, NULL),
	    KM_ERR_AUDIT);
	CU_ASSERT_EQUAL_FATAL(store_token_get(st, a.id, &g), KM_OK);
	CU_ASSERT_EQUAL(g->revoked_at, 5000);
	store_token_free(g);
	g = NULL;
	CU_ASSERT_EQUAL_FATAL(store_token_get(st, b.id, &g), KM_OK);
	CU_ASSERT_EQUAL(g->revoked_at, 0);
	store_token_free(g);
	store_free(st);
}

/* A row read again comes from the cache with the same contents, and every
 * write transaction, even a rolled-back one, makes the next read see the
 * database again: a revocation shows on the very next read. */
static void
test_cached_rows(void)
{
	struct store *st = open_fresh(NULL, 0);
	struct store_key *k, *g1 = NULL, *g2 = NULL;
	struct store_token t, *tg = NULL;
	char *ctx[] = { "tenant", "matter" };
	size_t i;

	k = make_key("rc", 2);
	k->required_context = ctx;
	k->n_required = 2;
	k->versions[0].public_key = bytes_dup("PUB", 3);
	k->versions[0].public_key_len = 3;
	CU_ASSERT_EQUAL_FATAL(store_key_create(st, k, NULL, NULL), KM_OK);
	k->required_context = NULL;
	k->n_required = 0;
	store_key_free(k);
	CU_ASSERT_EQUAL_FATAL(store_key_get(st, "rc", &g1), KM_OK);
	CU_ASSERT_EQUAL_FATAL(store_key_get(st, "rc", &g2), KM_OK);
	CU_ASSERT_PTR_NOT_EQUAL(g1, g2);
	CU_ASSERT_STRING_EQUAL(g2->name, "rc");
	CU_ASSERT_EQUAL(g2->id, g1->id);
	CU_ASSERT_EQUAL(g2->primary_version, 2);
	CU_ASSERT_EQUAL_FATAL(g2->n_required, 2);
	CU_ASSERT_STRING_EQUAL(g2->required_context[0], g1->required_context[0]);
	CU_ASSERT_STRING_EQUAL(g2->required_context[1], g1->required_context[1]);
	CU_ASSERT_EQUAL_FATAL(g2->n_versions, 2);
	for (i = 0; i < 2; i++) {
		CU_ASSERT_EQUAL(g2->versions[i].state, g1->versions[i].state);
		CU_ASSERT_EQUAL_FATAL(g2->versions[i].wrapped_len, 40);
		CU_ASSERT(memcmp(g2->versions[i].wrapped, g1->versions[i].wrapped,
		    40) == 0);
	}
	CU_ASSERT_EQUAL_FATAL(g2->versions[0].public_key_len, 3);
	CU_ASSERT(memcmp(g2->versions[0].public_key, "PUB", 3) == 0);
	CU_ASSERT_PTR_NULL(g2->versions[1].public_key);
	store_key_free(g1);
	store_key_free(g2);
	g1 = g2 = NULL;

	CU_ASSERT_EQUAL(store_version_set_state(st, "rc", 2, KM_STATE_PRIMARY,
	    KM_STATE_REVOKED, NULL, NULL), KM_OK);
	CU_ASSERT_EQUAL_FATAL(store_key_get(st, "rc", &g1), KM_OK);
	CU_ASSERT_EQUAL(g1->versions[1].state, KM_STATE_REVOKED);
	CU_ASSERT_EQUAL(g1->primary_version, 0);
	store_key_free(g1);
	g1 = NULL;
	/* A refused write changes nothing; the row read after it agrees. */
	CU_ASSERT_EQUAL(store_version_set_state(st, "rc", 1, KM_STATE_ACTIVE,
	    KM_STATE_RETIRED, hook_fail, NULL), KM_ERR_AUDIT);
	CU_ASSERT_EQUAL_FATAL(store_key_get(st, "rc", &g1), KM_OK);
	CU_ASSERT_EQUAL(g1->versions[0].state, KM_STATE_ACTIVE);
	store_key_free(g1);

	t = make_token("cccccccccccccccc", "app", 3000);
	t.keys = "rc";
	CU_ASSERT_EQUAL_FATAL(store_token_create(st, &t, NULL, NULL), KM_OK);
	for (i = 0; i < 2; i++) {
		CU_ASSERT_EQUAL_FATAL(store_token_get(st, t.id, &tg), KM_OK);
		CU_ASSERT_STRING_EQUAL(tg->keys, "rc");
		CU_ASSERT_PTR_NULL(tg->description);
		CU_ASSERT(memcmp(tg->hash, t.hash, sizeof(t.hash)) == 0);
		CU_ASSERT_EQUAL(tg->revoked_at, 0);
		store_token_free(tg);
		tg = NULL;
	}
	CU_ASSERT_EQUAL(store_token_revoke(st, t.id, 5000, NULL, NULL), KM_OK);
	CU_ASSERT_EQUAL_FATAL(store_token_get(st, t.id, &tg), KM_OK);
	CU_ASSERT_EQUAL(tg->revoked_at, 5000);
	store_token_free(tg);
	store_free(st);
}

/* --- concurrency --------------------------------------------------------- */

struct hold {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int in_hook;
	int release;
	int done;
};

/* A commit hook that stays in the transaction until told to go on, like
 * an audit fsync that takes its time. Gives up after 5 s. */
static int
hook_hold(void *arg)
{
	struct hold *h = arg;
	struct timespec until;
	int r = 0;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 5;
	pthread_mutex_lock(&h->mu);
	h->in_hook = 1;
	pthread_cond_broadcast(&h->cv);
	while (!h->release && r == 0)
		r = pthread_cond_timedwait(&h->cv, &h->mu, &until);
	pthread_mutex_unlock(&h->mu);
	return r == 0 ? 0 : KM_ERR_AUDIT;
}

struct hold_arg {
	struct store *st;
	struct hold *h;
	int r;
};

static void *
rotate_held(void *arg)
{
	struct hold_arg *ha = arg;
	struct store_version nv = new_version(0x66);

	ha->r = store_key_rotate(ha->st, "held", &nv, 0, hook_hold, ha->h);
	km_secure_free(nv.wrapped, nv.wrapped_len);
	/* Wakes the test up if the rotation failed before its hook. */
	pthread_mutex_lock(&ha->h->mu);
	ha->h->done = 1;
	pthread_cond_broadcast(&ha->h->cv);
	pthread_mutex_unlock(&ha->h->mu);
	return NULL;
}

static void
test_read_during_hook(void)
{
	struct store *st = open_fresh(NULL, 0);
	struct hold h = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0 };
	struct hold_arg ha = { st, &h, -1 };
	struct store_key *g = NULL, **keys = NULL;
	struct store_token *t = NULL;
	pthread_t th;
	uint32_t mek;
	size_t n, i;

	CU_ASSERT_EQUAL_FATAL(create_simple(st, "held"), KM_OK);
	CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, rotate_held, &ha), 0);
	pthread_mutex_lock(&h.mu);
	while (!h.in_hook && !h.done)
		pthread_cond_wait(&h.cv, &h.mu);
	pthread_mutex_unlock(&h.mu);
	CU_ASSERT_EQUAL(h.in_hook, 1);

	/* The writer is inside its hook; every read must still answer, with
	 * the last committed state. */
	CU_ASSERT_EQUAL(store_key_get(st, "held", &g), KM_OK);
	if (g != NULL) {
		CU_ASSERT_EQUAL(g->primary_version, 1);
		CU_ASSERT_EQUAL(g->n_versions, 1);
	}
	store_key_free(g);
	g = NULL;
	CU_ASSERT_EQUAL(store_key_list(st, NULL, 10, NULL, NULL, &keys, &n), KM_OK);
	CU_ASSERT_EQUAL(n, 1);
	for (i = 0; i < n; i++)
		store_key_free(keys[i]);
	free(keys);
	CU_ASSERT_EQUAL(store_mek_current(st, &mek), KM_ERR_NOT_FOUND);
	CU_ASSERT_EQUAL(store_token_get(st, "x", &t), KM_ERR_TOKEN_NOT_FOUND);
	CU_ASSERT(store_schema_version(st) >= 1);

	pthread_mutex_lock(&h.mu);
	h.release = 1;
	pthread_cond_broadcast(&h.cv);
	pthread_mutex_unlock(&h.mu);
	pthread_join(th, NULL);
	CU_ASSERT_EQUAL(ha.r, KM_OK);
	CU_ASSERT_EQUAL_FATAL(store_key_get(st, "held", &g), KM_OK);
	CU_ASSERT_EQUAL(g->primary_version, 2);
	store_key_free(g);
	store_free(st);
}

#define C_KEYS		8
#define C_READERS	6
#define C_WRITERS	3
#define C_ROUNDS	40

struct cshared {
	struct store *st;
	int64_t ids[C_KEYS];
	atomic_int errors;
	atomic_int writers_done;
};

struct cthread {
	struct cshared *sh;
	int idx;
};

static void
cfail(struct cshared *sh, const char *what, int r)
{
	fprintf(stderr, "concurrency: %s: %s\n", what, km_strerror(r));
	atomic_fetch_add(&sh->errors, 1);
}

/* A snapshot is consistent: one primary, and primary_version names it. */
static int
key_consistent(const struct store_key *k)
{
	size_t i, primaries = 0;

	for (i = 0; i < k->n_versions; i++) {
		if (i > 0 && k->versions[i].version <= k->versions[i - 1].version)
			return 0;
		if (k->versions[i].state == KM_STATE_PRIMARY) {
			primaries++;
			if (k->versions[i].version != k->primary_version)
				return 0;
		}
	}
	return primaries == 1;
}

static void *
creader(void *arg)
{
	struct cthread *ct = arg;
	struct cshared *sh = ct->sh;
	struct store_key *k, **keys;
	char name[32];
	size_t n, i;
	int r, round = 0;

	while (atomic_load(&sh->writers_done) < C_WRITERS || round < 20) {
		snprintf(name, sizeof(name), "c%d", (ct->idx + round) % C_KEYS);
		k = NULL;
		if ((r = store_key_get(sh->st, name, &k)) != KM_OK)
			cfail(sh, "get", r);
		else if (!key_consistent(k))
			cfail(sh, "inconsistent snapshot", KM_ERR_INTERNAL);
		store_key_free(k);
		if ((r = store_key_list(sh->st, NULL, 5, NULL, NULL, &keys, &n)) != KM_OK)
			cfail(sh, "list", r);
		else {
			for (i = 0; i < n; i++) {
				if (!key_consistent(keys[i]))
					cfail(sh, "inconsistent list", KM_ERR_INTERNAL);
				store_key_free(keys[i]);
			}
			free(keys);
		}
		round++;
	}
	return NULL;
}

static int
hook_slow(void *arg)
{
	(void)arg;
	usleep(500);		/* an audit fsync */
	return 0;
}

static void *
cwriter(void *arg)
{
	struct cthread *ct = arg;
	struct cshared *sh = ct->sh;
	struct store_version nv;
	struct store_usage u;
	char name[32];
	int i, r;

	for (i = 0; i < C_ROUNDS; i++) {
		/* writer w rotates keys w, w + C_WRITERS, ... in turn */
		int key = (ct->idx + i * C_WRITERS) % C_KEYS;

		snprintf(name, sizeof(name), "c%d", key);
		nv = new_version((unsigned char)i);
		if ((r = store_key_rotate(sh->st, name, &nv, 0, hook_slow, NULL)) != KM_OK)
			cfail(sh, "rotate", r);
		km_secure_free(nv.wrapped, nv.wrapped_len);
		u = (struct store_usage){ sh->ids[key], 1, 1, 1000 + i };
		if ((r = store_usage_flush(sh->st, &u, 1)) != KM_OK)
			cfail(sh, "usage", r);
		snprintf(name, sizeof(name), "new-%d-%d", ct->idx, i);
		if ((r = create_simple(sh->st, name)) != KM_OK)
			cfail(sh, "create", r);
	}
	atomic_fetch_add(&sh->writers_done, 1);
	return NULL;
}

static void
test_concurrency(void)
{
	struct cshared sh;
	struct cthread ct[C_READERS + C_WRITERS];
	pthread_t th[C_READERS + C_WRITERS];
	struct store_key *k, **keys = NULL;
	uint64_t uses = 0;
	size_t n, total_versions = 0, i;
	char name[32];

	memset(&sh, 0, sizeof(sh));
	sh.st = open_fresh(NULL, 0);
	for (i = 0; i < C_KEYS; i++) {
		snprintf(name, sizeof(name), "c%zu", i);
		k = make_key(name, 1);
		CU_ASSERT_EQUAL_FATAL(store_key_create(sh.st, k, NULL, NULL), KM_OK);
		sh.ids[i] = k->id;
		store_key_free(k);
	}
	for (i = 0; i < C_READERS + C_WRITERS; i++) {
		ct[i].sh = &sh;
		ct[i].idx = (int)(i < C_READERS ? i : i - C_READERS);
		CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL,
		    i < C_READERS ? creader : cwriter, &ct[i]), 0);
	}
	for (i = 0; i < C_READERS + C_WRITERS; i++)
		pthread_join(th[i], NULL);
	CU_ASSERT_EQUAL(atomic_load(&sh.errors), 0);

	for (i = 0; i < C_KEYS; i++) {
		snprintf(name, sizeof(name), "c%zu", i);
		k = NULL;
		CU_ASSERT_EQUAL_FATAL(store_key_get(sh.st, name, &k), KM_OK);
		CU_ASSERT(key_consistent(k));
		CU_ASSERT_EQUAL(k->primary_version, k->n_versions);
		total_versions += k->n_versions;
		uses += k->versions[0].use_count;
		store_key_free(k);
	}
	CU_ASSERT_EQUAL(total_versions, C_KEYS + C_WRITERS * C_ROUNDS);
	CU_ASSERT_EQUAL(uses, C_WRITERS * C_ROUNDS);

	CU_ASSERT_EQUAL_FATAL(store_key_list(sh.st, NULL, 100000, NULL, NULL,
	    &keys, &n), KM_OK);
	CU_ASSERT_EQUAL(n, C_KEYS + C_WRITERS * C_ROUNDS);
	for (i = 1; i < n; i++)
		CU_ASSERT(strcmp(keys[i - 1]->name, keys[i]->name) < 0);
	for (i = 0; i < n; i++)
		store_key_free(keys[i]);
	free(keys);
	CU_ASSERT_EQUAL(store_check(sh.st), KM_OK);
	store_free(sh.st);
}

#define HOT_ROTATIONS	300
#define HOT_READERS	3

struct hot {
	struct store *st;
	atomic_int stop;
	atomic_int errors;
	atomic_int reads;
};

static void *
hot_reader(void *arg)
{
	struct hot *h = arg;
	struct store_key *k;
	int r;

	while (!atomic_load(&h->stop)) {
		k = NULL;
		if ((r = store_key_get(h->st, "hot", &k)) != KM_OK ||
		    !key_consistent(k))
			atomic_fetch_add(&h->errors, 1);
		store_key_free(k);
		atomic_fetch_add(&h->reads, 1);
	}
	return NULL;
}

/* Readers racing a fast rotator must never see a key row from one commit
 * with versions from another (primary_version naming a missing version). */
static void
test_snapshot_consistency(void)
{
	struct hot h;
	struct store_version nv;
	pthread_t th[HOT_READERS];
	int i, fails = 0;

	memset(&h, 0, sizeof(h));
	h.st = open_fresh(NULL, 0);
	CU_ASSERT_EQUAL_FATAL(create_simple(h.st, "hot"), KM_OK);
	for (i = 0; i < HOT_READERS; i++)
		CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, hot_reader, &h), 0);
	for (i = 0; i < HOT_ROTATIONS; i++) {
		nv = new_version(0x77);
		if (store_key_rotate(h.st, "hot", &nv, 0, NULL, NULL) != KM_OK)
			fails++;
		km_secure_free(nv.wrapped, nv.wrapped_len);
	}
	atomic_store(&h.stop, 1);
	for (i = 0; i < HOT_READERS; i++)
		pthread_join(th[i], NULL);
	CU_ASSERT_EQUAL(fails, 0);
	CU_ASSERT_EQUAL(atomic_load(&h.errors), 0);
	CU_ASSERT(atomic_load(&h.reads) > HOT_READERS);
	store_free(h.st);
}

/* --- main ---------------------------------------------------------------- */

static int
rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	return remove(path);
}

int
main(void)
{
	const char *base = getenv("TMPDIR");
	CU_pSuite s;
	unsigned int failed;

	log_set_level(LOG_WARN);
	snprintf(tmpdir, sizeof(tmpdir), "%s/test_store.XXXXXX",
	    base != NULL && base[0] != '\0' ? base : "/tmp");
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 2;
	}
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	s = CU_add_suite("store", NULL, NULL);
	if (s == NULL ||
	    CU_add_test(s, "state names", test_state_names) == NULL ||
	    CU_add_test(s, "open, schema, reopen", test_open_reopen) == NULL ||
	    CU_add_test(s, "create/get round trip", test_roundtrip) == NULL ||
	    CU_add_test(s, "create refuses bad keys", test_create_invalid) == NULL ||
	    CU_add_test(s, "duplicate name", test_duplicate) == NULL ||
	    CU_add_test(s, "hook failure rolls back", test_hook_rollback) == NULL ||
	    CU_add_test(s, "hook cannot re-enter", test_hook_reentry) == NULL ||
	    CU_add_test(s, "rotate", test_rotate) == NULL ||
	    CU_add_test(s, "set state", test_set_state) == NULL ||
	    CU_add_test(s, "destroy erases bytes on disk", test_destroy_erases_file_bytes) == NULL ||
	    CU_add_test(s, "list paging and filter", test_list) == NULL ||
	    CU_add_test(s, "usage flush", test_usage_flush) == NULL ||
	    CU_add_test(s, "MEK versions", test_mek) == NULL ||
	    CU_add_test(s, "API tokens", test_tokens) == NULL ||
	    CU_add_test(s, "cached rows follow every write", test_cached_rows) == NULL ||
	    CU_add_test(s, "reads during a commit hook", test_read_during_hook) == NULL ||
	    CU_add_test(s, "concurrent readers and writers", test_concurrency) == NULL ||
	    CU_add_test(s, "snapshot consistency under rotation", test_snapshot_consistency) == NULL) {
		CU_cleanup_registry();
		return 2;
	}
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
	CU_cleanup_registry();
	if (nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
		perror("cleanup");
	return failed != 0 ? 1 : 0;
}
