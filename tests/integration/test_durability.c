/* Audit durability against a live kmsd of its own: fail closed when the log
 * cannot be written (a file-size limit stands in for a full disk) and
 * recover when it can again; kill -9 under 32 concurrent clients loses no
 * acknowledged record and leaves a chain that verifies. */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <curl/curl.h>

#include "harness.h"

#define MAX_ANSWERS 20000

static char *app_token;

struct answer {
	long status;
	int phase;		/* the main thread's phase when it came */
	char id[33];
};

struct client {
	pthread_t tid;
	const char *key;
	struct answer *answers;
	size_t n;
};

static atomic_int phase;	/* 0 before, 1 failing, 2 recovered */
static atomic_int stop_clients;

static void *
client_loop(void *arg)
{
	struct client *cl = arg;
	CURL *c = curl_easy_init();
	char path[200], body[200], *b64;
	unsigned char pt[32];

	if (c == NULL)
		return NULL;
	snprintf(path, sizeof(path), "/v1/keys/%s/wrap", cl->key);
	while (!atomic_load(&stop_clients) && cl->n < MAX_ANSWERS) {
		struct answer *a = &cl->answers[cl->n];
		json_t *j;

		ith_random(pt, sizeof(pt));
		b64 = ith_b64(pt, sizeof(pt));
		snprintf(body, sizeof(body), "{\"plaintext\":\"%s\"}", b64);
		free(b64);
		j = ith_post_mt(c, path, app_token, body, &a->status, a->id);
		json_decref(j);
		a->phase = atomic_load(&phase);
		if (a->status == 0) {
			/* No answer: kmsd is gone (the kill test). */
			if (atomic_load(&stop_clients))
				break;
			ith_sleep_ms(5);
			continue;
		}
		cl->n++;
	}
	curl_easy_cleanup(c);
	return NULL;
}

static struct client *
clients_start(int n, const char *key)
{
	struct client *cls = calloc((size_t)n, sizeof(*cls));
	int i;

	atomic_store(&stop_clients, 0);
	for (i = 0; cls != NULL && i < n; i++) {
		cls[i].key = key;
		cls[i].answers = calloc(MAX_ANSWERS, sizeof(struct answer));
		if (cls[i].answers == NULL ||
		    pthread_create(&cls[i].tid, NULL, client_loop, &cls[i]) != 0)
			ith_fail("cannot start client %d", i);
	}
	return cls;
}

static void
clients_stop(struct client *cls, int n)
{
	int i;

	atomic_store(&stop_clients, 1);
	for (i = 0; i < n; i++)
		if (cls[i].tid != 0)
			pthread_join(cls[i].tid, NULL);
}

static void
clients_free(struct client *cls, int n)
{
	int i;

	for (i = 0; i < n; i++)
		free(cls[i].answers);
	free(cls);
}

/* Every 2xx answer a client got must have its record in the log. */
static void
check_acknowledged(const struct ith_audit *l, struct client *cls, int n,
    size_t *ok_out)
{
	size_t ok = 0, missing = 0;
	int i;

	for (i = 0; i < n; i++) {
		size_t k;

		for (k = 0; k < cls[i].n; k++) {
			if (cls[i].answers[k].status / 100 != 2)
				continue;
			ok++;
			if (ith_audit_find(l, cls[i].answers[k].id) == NULL &&
			    missing++ < 3)
				ith_fail("answer %ld with request id %s has no audit "
				    "record", cls[i].answers[k].status,
				    cls[i].answers[k].id);
		}
	}
	ith_check(missing == 0, "%zu of %zu acknowledged requests are missing "
	    "from the audit log", missing, ok);
	if (ok_out != NULL)
		*ok_out = ok;
}

static off_t
segment_size(void)
{
	char adir[4200], path[4500], newest[300] = "";
	struct dirent *de;
	struct stat st;
	DIR *d;

	snprintf(adir, sizeof(adir), "%s/audit", ith_data_dir());
	if ((d = opendir(adir)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (strncmp(de->d_name, "audit-", 6) == 0 &&
		    strcmp(de->d_name, newest) > 0)
			snprintf(newest, sizeof(newest), "%s", de->d_name);
	closedir(d);
	snprintf(path, sizeof(path), "%s/%s", adir, newest);
	return stat(path, &st) == 0 ? st.st_size : -1;
}

static int
set_fsize(rlim_t limit)
{
	struct rlimit rl = { limit, RLIM_INFINITY };

	return prlimit(ith_pid(), RLIMIT_FSIZE, &rl, NULL);
}

static long
ready_status(void)
{
	long st = 0;

	ith_request("GET", "/v1/ready", NULL, NULL, &st, NULL, NULL);
	return st;
}

static size_t
versions_of(const char *key)
{
	char path[200];
	json_t *k;
	size_t n;

	snprintf(path, sizeof(path), "/v1/keys/%s", key);
	k = ith_call("GET", path, ith_admin_token(), NULL, 200, NULL);
	n = json_array_size(json_object_get(k, "versions"));
	json_decref(k);
	return n;
}

static void
count_phases(struct client *cls, int n, size_t *s503, size_t *ok_after)
{
	int i;

	*s503 = *ok_after = 0;
	for (i = 0; i < n; i++) {
		size_t k;

		for (k = 0; k < cls[i].n; k++) {
			if (cls[i].answers[k].status == 503)
				(*s503)++;
			if (cls[i].answers[k].status == 200 &&
			    cls[i].answers[k].phase == 2)
				(*ok_after)++;
		}
	}
}

static void
test_fail_closed_and_recover(void)
{
	if (app_token == NULL) {
		CU_FAIL("kmsd did not start");
		return;
	}
	const int nclients = 8;
	struct ith_audit l;
	struct client *cls;
	size_t s503, ok_after, acked;
	long st;
	int waited;

	CU_ASSERT_EQUAL_FATAL(ith_key_create("fc-1", NULL), 0);
	atomic_store(&phase, 0);
	ith_expect_503(1);
	cls = clients_start(nclients, "fc-1");
	ith_sleep_ms(400);

	/* The disk "fills": no write past the log's current end succeeds. */
	atomic_store(&phase, 1);
	ith_check(set_fsize((rlim_t)segment_size()) == 0, "prlimit failed");
	ith_sleep_ms(600);
	st = ready_status();
	ith_check(st == 503, "ready answered %ld while the log cannot be written",
	    st);
	json_decref(ith_call("POST", "/v1/keys/fc-1/rotate", ith_admin_token(),
	    NULL, 503, NULL));

	/* Space returns: kmsd recovers by itself. */
	ith_check(set_fsize(RLIM_INFINITY) == 0, "prlimit failed");
	for (waited = 0; waited < 5000 && ready_status() != 200; waited += 100)
		ith_sleep_ms(100);
	ith_check(waited < 5000, "ready did not come back within 5 s");
	atomic_store(&phase, 2);
	ith_sleep_ms(500);
	clients_stop(cls, nclients);
	ith_expect_503(0);

	count_phases(cls, nclients, &s503, &ok_after);
	ith_check(s503 > 0, "no client saw 503 while the log was full");
	ith_check(ok_after > 0, "no wrap succeeded after recovery");
	ith_check(versions_of("fc-1") == 1, "the rotate refused during the "
	    "failure changed the key anyway");
	ith_check(ith_audit_read(&l, 0), "the audit chain does not verify");
	check_acknowledged(&l, cls, nclients, &acked);
	ith_check(acked > 0, "no wrap was acknowledged at all");
	ith_audit_free(&l);
	clients_free(cls, nclients);
}

static void
test_kill9_under_32_clients(void)
{
	const int nclients = 32, rounds = 2;
	int round;

	if (app_token == NULL) {
		CU_FAIL("kmsd did not start");
		return;
	}
	CU_ASSERT_EQUAL_FATAL(ith_key_create("k9-1", NULL), 0);
	for (round = 0; round < rounds; round++) {
		struct ith_audit l;
		struct client *cls;
		size_t acked;
		int torn, before;

		cls = clients_start(nclients, "k9-1");
		ith_sleep_ms(300 + 200 * round);
		ith_check(ith_kill9() == 0, "kill -9 failed");
		clients_stop(cls, nclients);
		torn = ith_audit_torn();
		CU_ASSERT_EQUAL_FATAL(ith_audit_read(&l, 1), 1);
		before = l.recovery_records;
		ith_audit_free(&l);
		CU_ASSERT_EQUAL_FATAL(ith_start(), 0);
		ith_check(ith_audit_read(&l, 0), "round %d: the chain does not "
		    "verify after the restart", round);
		if (torn)
			ith_check(l.recovery_records > before, "round %d: a torn "
			    "line was cut without a recovery record", round);
		check_acknowledged(&l, cls, nclients, &acked);
		ith_check(acked > 0, "round %d: nothing was acknowledged before "
		    "the kill", round);
		ith_audit_free(&l);
		clients_free(cls, nclients);
	}
}

/* Runs first, as a test: the harness records its checks into CUnit. */
static void
test_start(void)
{
	/* Small checkpoints so they happen during the tests. */
	CU_ASSERT_EQUAL_FATAL(ith_setup("audit_checkpoint_records = 50\n"), 0);
	app_token = ith_token_create("app", "*", NULL, NULL);
	CU_ASSERT_PTR_NOT_NULL(app_token);
}

static int
suite_clean(void)
{
	free(app_token);
	ith_teardown();
	return 0;
}

static const struct ith_test tests[] = {
	{ "start kmsd", test_start },
	{ "fail closed when the log cannot be written, then recover",
	    test_fail_closed_and_recover },
	{ "kill -9 under 32 clients loses no acknowledged record",
	    test_kill9_under_32_clients },
	{ NULL, NULL },
};

int
main(void)
{
	return ith_suite_main("durability", suite_clean, tests);
}
