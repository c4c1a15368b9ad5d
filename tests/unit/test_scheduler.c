/* Unit tests of service/scheduler.c with a fake clock, against a real
 * SQLite store, a real SoftHSM token and a real audit log: due keys rotate
 * exactly once (jitter, repeated ticks, restarts, a kill inside the
 * rotation's transaction, two instances racing), failures are audited,
 * counted and retried with backoff, and expiry alerts fire once at 30, 7
 * and 1 days and on expiry. */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <pthread.h>

#include <CUnit/Basic.h>
#include <jansson.h>

#include "api.h"
#include "audit.h"
#include "hsm.h"
#include "metrics.h"
#include "scheduler.h"
#include "store.h"
#include "unit.h"

#define MODULE "softhsm2"
#define LABEL "kms-sched"
#define USER_PIN "1234-user"
#define HOUR (3600LL * 1000000)
#define DAY (24 * HOUR)
/* A fixed start: 2030-01-01T00:00:00Z. */
#define T0 (1893456000LL * 1000000)

static char dir[512];

/* Crash injection: in a child, the crash_after-th fdatasync of a file
 * whose path contains crash_path ("audit-": the audit log's, inside the
 * rotation's commit hook; ".db-wal": SQLite's at COMMIT) kills the process
 * instead, as kill -9 at that instant would. The test executable's
 * definition wins over libc's for the static kmcore library and for
 * libsqlite3 (which calls fdatasync). */
static atomic_int crash_after;
static const char *crash_path;

int
fdatasync(int fd)
{
	char link[64], target[1024];
	ssize_t n;

	if (atomic_load(&crash_after) > 0 && crash_path != NULL) {
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		n = readlink(link, target, sizeof(target) - 1);
		target[n > 0 ? n : 0] = '\0';
		if (strstr(target, crash_path) != NULL &&
		    atomic_fetch_sub(&crash_after, 1) == 1)
			raise(SIGKILL);
	}
	return (int)syscall(SYS_fdatasync, fd);
}

struct fake_clock {
	int64_t now;
};

static int64_t
fake_now(void *arg)
{
	return ((struct fake_clock *)arg)->now;
}

/* One kmsd's worth of state, as main wires it. */
struct env {
	struct api_ctx ctx;
	struct sched *sched;
	struct fake_clock clock;
};

static int
write_conf(void)
{
	char path[600], tokens[600], text[700];

	snprintf(tokens, sizeof(tokens), "%s/tokens", dir);
	snprintf(path, sizeof(path), "%s/softhsm2.conf", dir);
	if (mkdir(tokens, 0700) != 0)
		return -1;
	snprintf(text, sizeof(text), "directories.tokendir = %s\n"
	    "objectstore.backend = file\nlog.level = ERROR\n", tokens);
	if (ut_write_file(path, "w", text, strlen(text)) != 0)
		return -1;
	return setenv("SOFTHSM2_CONF", path, 1);
}

static int
open_hsm(struct hsm **out)
{
	struct hsm_config c = {
		.module = MODULE, .token_uri = "pkcs11:token=" LABEL,
		.pin = USER_PIN, .pin_len = strlen(USER_PIN), .sessions = 4,
		.key_cache = 16,
	};

	return hsm_open(&c, out);
}

static void
env_close(struct env *e)
{
	sched_free(e->sched);
	metrics_free(e->ctx.metrics);
	audit_free(e->ctx.audit);
	store_free(e->ctx.store);
	hsm_free(e->ctx.hsm);
	memset(e, 0, sizeof(*e));
}

/* Opens the token, the store <dir>/<tag>.db and the audit log
 * <dir>/<tag>-audit (each test its own, so keys of one test never fall
 * due in another) and a scheduler on the fake clock at `now`. */
static int
env_open(struct env *e, const char *tag, int64_t now, int64_t jitter_s)
{
	char path[600];
	struct sched_config sc = {
		.jitter_seconds = jitter_s, .max_rotations_per_tick = 100,
		.expiry_check_seconds = 1, .retry_seconds = 60,
	};
	struct sched_clock clk;
	uint32_t mek;

	memset(e, 0, sizeof(*e));
	e->clock.now = now;
	clk.now_us = fake_now;
	clk.arg = &e->clock;
	snprintf(path, sizeof(path), "%s/%s.db", dir, tag);
	if (open_hsm(&e->ctx.hsm) != KM_OK ||
	    store_open(path, &e->ctx.store) != KM_OK)
		goto fail;
	snprintf(path, sizeof(path), "%s/%s-audit", dir, tag);
	if (audit_open(path, &e->ctx.audit) != KM_OK ||
	    metrics_new(NULL, 0, &e->ctx.metrics) != KM_OK ||
	    sched_new(&e->ctx, &sc, &clk, &e->sched) != KM_OK)
		goto fail;
	if (store_mek_current(e->ctx.store, &mek) == KM_ERR_NOT_FOUND &&
	    store_mek_add(e->ctx.store, 1, now, NULL, NULL) != KM_OK)
		goto fail;
	return 0;
fail:
	env_close(e);
	return -1;
}

static int
suite_init(void)
{
	struct env e;
	uint32_t mek;
	int r;

	if (ut_mkdtemp("sched", dir, sizeof(dir)) != 0 || write_conf() != 0 ||
	    hsm_token_init(MODULE, LABEL, "5678-so", USER_PIN) != KM_OK)
		return -1;
	if (env_open(&e, "init", T0, 0) != 0)
		return -1;
	r = hsm_mek_create(e.ctx.hsm, 1) == KM_OK &&
	    store_mek_current(e.ctx.store, &mek) == KM_OK && mek == 1 ? 0 : -1;
	env_close(&e);
	return r;
}

static int
suite_clean(void)
{
	ut_rmtree(dir);
	return 0;
}

/* Creates key `name` with version 1 made in the token at `now`. */
static void
key_create(struct env *e, const char *name, const char *type,
    int64_t period_s, int64_t expires_at, int64_t now)
{
	struct store_key k;
	struct store_version v;
	const char *why = NULL;

	memset(&k, 0, sizeof(k));
	memset(&v, 0, sizeof(v));
	if (strcmp(type, "aes256-gcm") == 0) {
		CU_ASSERT_EQUAL_FATAL(api_key_new_version(&e->ctx, type, now, &v,
		    &why), KM_OK);
	} else {
		/* A type no build can make versions of: every rotation fails. */
		v.state = KM_STATE_PRIMARY;
		v.created_at = now;
		v.storage = STORE_TOKEN;
	}
	v.version = 1;
	snprintf(k.name, sizeof(k.name), "%s", name);
	snprintf(k.type, sizeof(k.type), "%s", type);
	snprintf(k.purpose, sizeof(k.purpose), "encrypt");
	k.primary_version = 1;
	k.rotation_period = period_s;
	k.next_rotation_at = period_s ? now + period_s * 1000000 : 0;
	k.expires_at = expires_at;
	k.created_at = now;
	k.versions = &v;
	k.n_versions = 1;
	CU_ASSERT_EQUAL_FATAL(store_key_create(e->ctx.store, &k, NULL, NULL),
	    KM_OK);
	free(v.wrapped);
}

static struct store_key *
key_get(struct env *e, const char *name)
{
	struct store_key *k = NULL;

	CU_ASSERT_EQUAL_FATAL(store_key_get(e->ctx.store, name, &k), KM_OK);
	return k;
}

/* Audit records of the scheduler about `key` with op `op` (and outcome
 * `outcome` unless NULL), counted over the whole log. */
struct count {
	const char *key, *op, *outcome, *field, *value;
	int n;
};

static int
count_cb(void *arg, uint64_t seq, const char *line, size_t len)
{
	struct count *c = arg;
	json_t *rec = json_loadb(line, len, 0, NULL);
	const char *v;

	(void)seq;
	if (rec != NULL &&
	    (v = json_string_value(json_object_get(rec, "key"))) != NULL &&
	    strcmp(v, c->key) == 0 &&
	    strcmp(json_string_value(json_object_get(rec, "op")), c->op) == 0 &&
	    strcmp(json_string_value(json_object_get(rec, "actor")),
	    "kmsd:scheduler") == 0 &&
	    (c->outcome == NULL || strcmp(json_string_value(json_object_get(rec,
	    "outcome")), c->outcome) == 0) &&
	    (c->field == NULL || ((v = json_string_value(json_object_get(rec,
	    c->field))) != NULL && strcmp(v, c->value) == 0)))
		c->n++;
	json_decref(rec);
	return 0;
}

static int
audit_count(struct env *e, const char *key, const char *op,
    const char *outcome, const char *field, const char *value)
{
	struct count c = { key, op, outcome, field, value, 0 };

	CU_ASSERT_EQUAL(audit_scan(e->ctx.audit, 0, UINT64_MAX, count_cb, &c),
	    KM_OK);
	return c.n;
}

static void
test_due_key_rotates_once(void)
{
	struct env e;
	struct sched_result res;
	struct store_key *k;
	int64_t t = T0;

	CU_ASSERT_EQUAL_FATAL(env_open(&e, "due", t, 0), 0);
	key_create(&e, "due-1", "aes256-gcm", 3600, 0, t);
	key_create(&e, "never", "aes256-gcm", 0, 0, t);
	/* Not due yet. */
	e.clock.now = t + HOUR - 1;
	CU_ASSERT_EQUAL(sched_tick(e.sched, &res), KM_OK);
	CU_ASSERT_EQUAL(res.rotated, 0);
	/* Due: one rotation, and only one however often the tick runs. */
	e.clock.now = t + HOUR;
	CU_ASSERT_EQUAL(sched_tick(e.sched, &res), KM_OK);
	CU_ASSERT_EQUAL(res.rotated, 1);
	CU_ASSERT_EQUAL(sched_tick(e.sched, &res), KM_OK);
	CU_ASSERT_EQUAL(res.rotated, 0);
	e.clock.now = t + 2 * HOUR - 1;
	CU_ASSERT_EQUAL(sched_tick(e.sched, &res), KM_OK);
	CU_ASSERT_EQUAL(res.rotated, 0);
	k = key_get(&e, "due-1");
	CU_ASSERT_EQUAL(k->n_versions, 2);
	CU_ASSERT_EQUAL(k->primary_version, 2);
	CU_ASSERT_EQUAL(k->versions[0].state, KM_STATE_ACTIVE);
	CU_ASSERT_EQUAL(k->versions[1].state, KM_STATE_PRIMARY);
	CU_ASSERT_EQUAL(k->versions[1].created_at, t + HOUR);
	/* The next one is a period after the rotation. */
	CU_ASSERT_EQUAL(k->next_rotation_at, t + 2 * HOUR);
	store_key_free(k);
	k = key_get(&e, "never");
	CU_ASSERT_EQUAL(k->n_versions, 1);
	store_key_free(k);
	CU_ASSERT_EQUAL(audit_count(&e, "due-1", "key.rotate", "ok", NULL, NULL), 1);
	/* Next period: the second rotation. */
	e.clock.now = t + 2 * HOUR;
	CU_ASSERT_EQUAL(sched_tick(e.sched, &res), KM_OK);
	CU_ASSERT_EQUAL(res.rotated, 1);
	k = key_get(&e, "due-1");
	CU_ASSERT_EQUAL(k->primary_version, 3);
	store_key_free(k);
	env_close(&e);
}

static void
test_jitter(void)
{
	struct env e;
	struct sched_result res;
	struct store_key *k;
	int64_t t = T0, j, j2;

	CU_ASSERT_EQUAL_FATAL(env_open(&e, "jitter", t, 300), 0);
	key_create(&e, "jit-1", "aes256-gcm", 86400, 0, t);
	j = sched_jitter_us(e.sched, "jit-1", t + DAY, 86400);
	j2 = sched_jitter_us(e.sched, "jit-1", t + DAY, 86400);
	CU_ASSERT_EQUAL(j, j2);		/* deterministic: same on a restart */
	CU_ASSERT(j >= 0 && j < 300LL * 1000000);
	/* Bounded by a tenth of the period. */
	CU_ASSERT(sched_jitter_us(e.sched, "jit-1", t + DAY, 60) < 6LL * 1000000);
	CU_ASSERT_EQUAL(sched_jitter_us(e.sched, "jit-1", t, 5), 0);
	e.clock.now = t + DAY + j - 1;
	CU_ASSERT_EQUAL(sched_tick(e.sched, &res), KM_OK);
	CU_ASSERT_EQUAL(res.rotated, 0);
	CU_ASSERT_EQUAL(res.deferred, j > 0 ? 1 : 0);
	e.clock.now = t + DAY + j;
	CU_ASSERT_EQUAL(sched_tick(e.sched, &res), KM_OK);
	CU_ASSERT_EQUAL(res.rotated, 1);
	k = key_get(&e, "jit-1");
	CU_ASSERT_EQUAL(k->primary_version, 2);
	store_key_free(k);
	env_close(&e);
}

static void
test_restart_after_commit(void)
{
	struct env e;
	struct sched_result res;
	struct store_key *k;
	int64_t t = T0;

	CU_ASSERT_EQUAL_FATAL(env_open(&e, "restart", t, 0), 0);
	key_create(&e, "restart-1", "aes256-gcm", 3600, 0, t);
	e.clock.now = t + HOUR;
	CU_ASSERT_EQUAL(sched_tick(e.sched, &res), KM_OK);
	CU_ASSERT_EQUAL(res.rotated, 1);
	env_close(&e);
	/* A new process at the same instant (the clock did not move): the
	 * key is not due any more. */
	CU_ASSERT_EQUAL_FATAL(env_open(&e, "restart", t + HOUR, 0), 0);
	CU_ASSERT_EQUAL(sched_tick(e.sched, &res), KM_OK);
	CU_ASSERT_EQUAL(res.rotated, 0);
	k = key_get(&e, "restart-1");
	CU_ASSERT_EQUAL(k->n_versions, 2);
	store_key_free(k);
	env_close(&e);
}

struct crash_arg {
	const char *key;
	int64_t now;
	const char *path;
	int sync_no;
};

/* In a child: one tick that dies at the sync_no-th fdatasync. */
static int
crash_child(void *arg)
{
	struct crash_arg *ca = arg;
	struct env e;

	if (env_open(&e, ca->key, ca->now, 0) != 0)
		return 1;
	crash_path = ca->path;
	atomic_store(&crash_after, ca->sync_no);
	if (sched_tick(e.sched, NULL) != KM_OK)
		return 3;
	atomic_store(&crash_after, 0);
	env_close(&e);
	return 2;	/* the crash did not happen */
}

/* Keys <tag>-a and <tag>-b fall due together; a child's tick is killed
 * at the sync_no-th fdatasync of `path`. Whatever had committed stays
 * (want_a_after_crash versions of -a), and after a restart each key has
 * exactly one new version: nothing is rotated twice. */
static void
crash_mid_rotation(const char *tag, const char *path, int sync_no,
    size_t want_a_after_crash)
{
	char a[64], b[64];
	struct crash_arg ca = { tag, T0 + HOUR + 1, path, sync_no };
	struct env e;
	struct sched_result res;
	struct store_key *k;
	int st;

	snprintf(a, sizeof(a), "%s-a", tag);
	snprintf(b, sizeof(b), "%s-b", tag);
	CU_ASSERT_EQUAL_FATAL(env_open(&e, tag, T0, 0), 0);
	key_create(&e, a, "aes256-gcm", 3600, 0, T0);
	key_create(&e, b, "aes256-gcm", 3600, 0, T0 + 1);
	env_close(&e);		/* the child opens the token itself */
	st = ut_in_child(crash_child, &ca);
	if (st != 128 + SIGKILL)
		fprintf(stderr, "\n  the child ended with %d, not SIGKILL\n", st);
	CU_ASSERT_EQUAL(st, 128 + SIGKILL);
	CU_ASSERT_EQUAL_FATAL(env_open(&e, tag, T0 + HOUR + 1, 0), 0);
	k = key_get(&e, a);
	fprintf(stderr, "\n  killed at fdatasync %d of *%s*: %s has %zu "
	    "version(s)\n", sync_no, path, a, k->n_versions);
	CU_ASSERT_EQUAL(k->n_versions, want_a_after_crash);
	store_key_free(k);
	CU_ASSERT_EQUAL(sched_tick(e.sched, &res), KM_OK);
	CU_ASSERT_EQUAL(res.rotated, want_a_after_crash == 2 ? 1 : 2);
	CU_ASSERT_EQUAL(sched_tick(e.sched, &res), KM_OK);
	CU_ASSERT_EQUAL(res.rotated, 0);
	k = key_get(&e, a);
	CU_ASSERT_EQUAL(k->n_versions, 2);
	CU_ASSERT_EQUAL(k->primary_version, 2);
	store_key_free(k);
	k = key_get(&e, b);
	CU_ASSERT_EQUAL(k->n_versions, 2);
	CU_ASSERT_EQUAL(k->primary_version, 2);
	store_key_free(k);
	env_close(&e);
}

/* Inside the commit hook of -a's rotation: its record is written, COMMIT
 * has not run. */
static void
test_kill_before_commit(void)
{
	crash_mid_rotation("crash1", "audit-", 1, 1);
}

/* At SQLite's first WAL sync of -a's COMMIT. */
static void
test_kill_during_commit(void)
{
	crash_mid_rotation("crash2", ".db-wal", 1, 1);
}

/* In -b's commit hook, after -a's rotation committed. */
static void
test_kill_after_commit(void)
{
	crash_mid_rotation("crash3", "audit-", 2, 2);
}

/* Two instances on one database (two store connections, as two kmsd
 * processes would have) tick at once over the same due keys. */
struct racer {
	struct api_ctx ctx;
	struct sched *sched;
	struct fake_clock clock;
	struct sched_result total;
	pthread_t tid;
};

static void *
race(void *arg)
{
	struct racer *r = arg;
	struct sched_result res;
	int i;

	for (i = 0; i < 5; i++) {
		if (sched_tick(r->sched, &res) != KM_OK)
			break;
		r->total.rotated += res.rotated;
		r->total.lost_race += res.lost_race;
		r->total.failed += res.failed;
	}
	return NULL;
}

static void
test_two_instances(void)
{
	struct sched_config sc = { 0, 100, 60, 60 };
	struct sched_clock clk;
	struct racer rc[2];
	struct env e;
	struct store_key *k;
	char path[600], name[32];
	size_t i, rotated = 0, lost = 0;

	CU_ASSERT_EQUAL_FATAL(env_open(&e, "race", T0, 0), 0);
	for (i = 0; i < 40; i++) {
		snprintf(name, sizeof(name), "race-%02zu", i);
		key_create(&e, name, "aes256-gcm", 3600, 0, T0);
	}
	memset(rc, 0, sizeof(rc));
	snprintf(path, sizeof(path), "%s/race.db", dir);
	for (i = 0; i < 2; i++) {
		rc[i].ctx = e.ctx;	/* token, audit log shared; own store */
		rc[i].ctx.metrics = NULL;
		rc[i].clock.now = T0 + HOUR;
		clk.now_us = fake_now;
		clk.arg = &rc[i].clock;
		CU_ASSERT_EQUAL_FATAL(store_open(path, &rc[i].ctx.store), KM_OK);
		CU_ASSERT_EQUAL_FATAL(sched_new(&rc[i].ctx, &sc, &clk,
		    &rc[i].sched), KM_OK);
	}
	for (i = 0; i < 2; i++)
		CU_ASSERT_EQUAL(pthread_create(&rc[i].tid, NULL, race, &rc[i]), 0);
	for (i = 0; i < 2; i++) {
		pthread_join(rc[i].tid, NULL);
		rotated += rc[i].total.rotated;
		lost += rc[i].total.lost_race;
		CU_ASSERT_EQUAL(rc[i].total.failed, 0);
		sched_free(rc[i].sched);
		store_free(rc[i].ctx.store);
	}
	fprintf(stderr, "\n  40 due keys, 2 instances: %zu rotations, %zu lost "
	    "races\n", rotated, lost);
	CU_ASSERT_EQUAL(rotated, 40);
	for (i = 0; i < 40; i++) {
		snprintf(name, sizeof(name), "race-%02zu", i);
		k = key_get(&e, name);
		CU_ASSERT_EQUAL(k->n_versions, 2);
		store_key_free(k);
		CU_ASSERT_EQUAL(audit_count(&e, name, "key.rotate", "ok", NULL,
		    NULL), 1);
	}
	env_close(&e);
}

/* An admin rotation between the listing and the scheduler's commit: the
 * scheduler's conditional rotation finds the key changed and does not
 * rotate it a second time. */
static void
test_admin_rotation_wins(void)
{
	struct env e;
	struct store_version v;
	struct store_key *k;
	const char *why;

	CU_ASSERT_EQUAL_FATAL(env_open(&e, "admin", T0, 0), 0);
	key_create(&e, "admin-1", "aes256-gcm", 3600, 0, T0);
	CU_ASSERT_EQUAL_FATAL(api_key_new_version(&e.ctx, "aes256-gcm",
	    T0 + HOUR, &v, &why), KM_OK);
	/* What the scheduler listed: primary 1, due at T0 + 1 h. An admin
	 * rotated meanwhile (primary 2, next in a period). */
	k = key_get(&e, "admin-1");
	CU_ASSERT_EQUAL(store_key_rotate(e.ctx.store, "admin-1", &v,
	    T0 + 2 * HOUR, NULL, NULL), KM_OK);
	CU_ASSERT_EQUAL(store_key_rotate_if(e.ctx.store, "admin-1", 1,
	    k->next_rotation_at, &v, T0 + 2 * HOUR, NULL, NULL),
	    KM_ERR_INVALID_TRANSITION);
	store_key_free(k);
	k = key_get(&e, "admin-1");
	CU_ASSERT_EQUAL(k->n_versions, 2);
	store_key_free(k);
	free(v.wrapped);
	env_close(&e);
}

static void
test_failure_audited_and_retried(void)
{
	struct env e;
	struct sched_result res;
	struct store_alert *al = NULL;
	size_t n = 0, i, mine = 0;
	char *text = NULL;
	size_t len = 0;

	CU_ASSERT_EQUAL_FATAL(env_open(&e, "fail", T0, 0), 0);
	key_create(&e, "fail-1", "test-bogus", 3600, 0, T0);
	e.clock.now = T0 + HOUR;
	CU_ASSERT_EQUAL(sched_tick(e.sched, &res), KM_OK);
	CU_ASSERT_EQUAL(res.failed, 1);
	/* Backoff: not retried at once ... */
	e.clock.now = T0 + HOUR + 30LL * 1000000;
	CU_ASSERT_EQUAL(sched_tick(e.sched, &res), KM_OK);
	CU_ASSERT_EQUAL(res.failed, 0);
	CU_ASSERT_EQUAL(res.deferred, 1);
	/* ... but after retry_seconds, and then after twice that. */
	e.clock.now = T0 + HOUR + 60LL * 1000000;
	CU_ASSERT_EQUAL(sched_tick(e.sched, &res), KM_OK);
	CU_ASSERT_EQUAL(res.failed, 1);
	e.clock.now = T0 + HOUR + 119LL * 1000000;
	CU_ASSERT_EQUAL(sched_tick(e.sched, &res), KM_OK);
	CU_ASSERT_EQUAL(res.failed, 0);
	e.clock.now = T0 + HOUR + 180LL * 1000000;
	CU_ASSERT_EQUAL(sched_tick(e.sched, &res), KM_OK);
	CU_ASSERT_EQUAL(res.failed, 1);
	/* Every attempt audited; one rotation_failed alert for the slot. */
	CU_ASSERT_EQUAL(audit_count(&e, "fail-1", "key.rotate", "error", "error",
	    "unsupported_key_type"), 3);
	CU_ASSERT_EQUAL(audit_count(&e, "fail-1", "key.rotate", "error", "alert",
	    "rotation_failed"), 1);
	CU_ASSERT_EQUAL(store_alert_list(e.ctx.store, 0, "fail-1", 100, &al, &n),
	    KM_OK);
	for (i = 0; i < n; i++)
		if (strcmp(al[i].kind, "rotation_failed") == 0) {
			mine++;
			CU_ASSERT_EQUAL(al[i].ref_at, T0 + HOUR);
			CU_ASSERT_STRING_EQUAL(al[i].detail, "unsupported_key_type");
		}
	CU_ASSERT_EQUAL(mine, 1);
	free(al);
	/* Counted. */
	CU_ASSERT_EQUAL(metrics_render(e.ctx.metrics, &e.ctx, e.clock.now, 10,
	    &text, &len), KM_OK);
	CU_ASSERT_PTR_NOT_NULL(strstr(text,
	    "kmsd_scheduler_rotations_total{result=\"failed\"} 3\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text,
	    "kmsd_alerts_raised_total{kind=\"rotation_failed\"} 1\n"));
	free(text);
	env_close(&e);
}

/* The alerts of key `name` in order, as "kind/threshold" joined by ' '. */
static void
alerts_of(struct env *e, const char *name, char *out, size_t outlen)
{
	struct store_alert *al = NULL;
	size_t n = 0, i, used = 0;

	out[0] = '\0';
	CU_ASSERT_EQUAL(store_alert_list(e->ctx.store, 0, name, 100, &al, &n),
	    KM_OK);
	for (i = 0; i < n && used < outlen; i++)
		used += (size_t)snprintf(out + used, outlen - used, "%s%s/%s",
		    i ? " " : "", al[i].kind, sched_threshold_name(al[i].threshold));
	free(al);
}

static void
tick_at(struct env *e, int64_t now, size_t want_alerts)
{
	struct sched_result res;

	e->clock.now = now;
	CU_ASSERT_EQUAL(sched_tick(e->sched, &res), KM_OK);
	CU_ASSERT_EQUAL(res.alerts, want_alerts);
	if (res.alerts != want_alerts)
		fprintf(stderr, "\n  at T0%+.1fd: %zu alerts, expected %zu\n",
		    (double)(now - T0) / DAY, res.alerts, want_alerts);
}

static void
test_expiry_thresholds(void)
{
	struct env e;
	char got[512], *text = NULL;
	size_t len = 0;
	int64_t exp = T0 + 40 * DAY;

	CU_ASSERT_EQUAL_FATAL(env_open(&e, "expiry", T0, 0), 0);
	key_create(&e, "exp-1", "aes256-gcm", 0, exp, T0);
	key_create(&e, "exp-late", "aes256-gcm", 0, T0 + 5 * DAY, T0);
	/* exp-late starts inside 7 days: only its 7d alert, never 30d. */
	tick_at(&e, T0, 1);
	/* exp-1 has 30 d + 1 s left; exp-late expired meanwhile. */
	tick_at(&e, exp - 30 * DAY - 1000000, 1);
	tick_at(&e, exp - 30 * DAY, 1);			/* 30 d left */
	tick_at(&e, exp - 30 * DAY + 61000000, 0);	/* raised already */
	tick_at(&e, exp - 7 * DAY - 1000000, 0);
	tick_at(&e, exp - 7 * DAY + 1000000, 1);
	tick_at(&e, exp - 1 * DAY - 1000000, 0);
	tick_at(&e, exp - 1 * DAY + 2000000, 1);
	tick_at(&e, exp - 1000000, 0);
	/* exp-late was not looked at between T0 + 4 d (its 1d) and T0 + 5 d
	 * (its expiry): a tick raises only the tightest threshold crossed,
	 * so its 1d alert was skipped, not raised late. */
	alerts_of(&e, "exp-late", got, sizeof(got));
	CU_ASSERT_STRING_EQUAL(got, "expiry/7d expired/0d");
	tick_at(&e, exp, 1);				/* expired */
	tick_at(&e, exp + DAY, 0);
	alerts_of(&e, "exp-1", got, sizeof(got));
	CU_ASSERT_STRING_EQUAL(got, "expiry/30d expiry/7d expiry/1d expired/0d");
	CU_ASSERT_EQUAL(audit_count(&e, "exp-1", "key.alert", "ok", "threshold",
	    "30d"), 1);
	CU_ASSERT_EQUAL(audit_count(&e, "exp-1", "key.alert", "ok", "threshold",
	    "7d"), 1);
	CU_ASSERT_EQUAL(audit_count(&e, "exp-1", "key.alert", "ok", "threshold",
	    "1d"), 1);
	CU_ASSERT_EQUAL(audit_count(&e, "exp-1", "key.alert", "ok", "kind",
	    "expired"), 1);
	CU_ASSERT_EQUAL(metrics_render(e.ctx.metrics, &e.ctx, e.clock.now, 10,
	    &text, &len), KM_OK);
	CU_ASSERT_PTR_NOT_NULL(strstr(text,
	    "kmsd_expiry_alerts_total{threshold=\"30d\"} 1\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text,
	    "kmsd_expiry_alerts_total{threshold=\"0d\"} 2\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "kmsd_key_expiry_seconds{key=\"exp-1\"} "
	    "-86400.000\n"));
	free(text);
	env_close(&e);
	/* A restart raises nothing again. */
	CU_ASSERT_EQUAL_FATAL(env_open(&e, "expiry", exp + 2 * DAY, 0), 0);
	tick_at(&e, exp + 2 * DAY, 0);
	alerts_of(&e, "exp-1", got, sizeof(got));
	CU_ASSERT_STRING_EQUAL(got, "expiry/30d expiry/7d expiry/1d expired/0d");
	env_close(&e);
}

int
main(void)
{
	static const struct ut_test tests[] = {
		{ "a due key rotates once", test_due_key_rotates_once },
		{ "jitter is deterministic and bounded", test_jitter },
		{ "restart after a rotation: no second one", test_restart_after_commit },
		{ "kill -9 before COMMIT: one rotation after restart", test_kill_before_commit },
		{ "kill -9 during COMMIT: one rotation after restart", test_kill_during_commit },
		{ "kill -9 after a COMMIT: not rotated again", test_kill_after_commit },
		{ "two instances race: each key rotates once", test_two_instances },
		{ "an admin rotation wins over a stale listing", test_admin_rotation_wins },
		{ "failures are audited, alerted once, retried with backoff", test_failure_audited_and_retried },
		{ "expiry alerts at 30, 7, 1 days and on expiry, once", test_expiry_thresholds },
		{ NULL, NULL },
	};

	return ut_main("scheduler", suite_init, suite_clean, tests);
}
