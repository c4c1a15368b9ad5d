/* Integration test of concurrent clients: round trips stay correct and
 * request ids stay unique while requests run in parallel. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "itest.h"

#define THREADS 4
#define ROUNDS 50

static int
suite_init(void)
{
	return it_ready();
}

struct worker {
	pthread_t tid;
	char key[160];
	int ok, failed;
	char first_error[300];
	char ids[2 * ROUNDS][33];
	int n_ids;
};

static void
note_error(struct worker *w, const char *what, long st, int round)
{
	if (w->failed++ == 0)
		snprintf(w->first_error, sizeof(w->first_error),
		    "round %d: %s answered %ld", round, what, st);
}

static void *
work(void *arg)
{
	struct worker *w = arg;
	CURL *c = curl_easy_init();
	char path[300], body[400], *b64, *ct = NULL;
	unsigned char pt[32], *got = NULL;
	size_t glen;
	int r;

	if (c == NULL) {
		w->failed = 1;
		return NULL;
	}
	for (r = 0; r < ROUNDS; r++) {
		json_t *a;
		long st;
		const char *s;

		ith_random(pt, sizeof(pt));
		b64 = ith_b64(pt, sizeof(pt));
		snprintf(body, sizeof(body),
		    "{\"plaintext\":\"%s\",\"context\":{\"round\":\"%d\"}}", b64, r);
		free(b64);
		snprintf(path, sizeof(path), "/v1/keys/%s/wrap", w->key);
		a = ith_post_mt(c, path, T.app, body, &st, w->ids[w->n_ids]);
		if (w->ids[w->n_ids][0] != '\0')
			w->n_ids++;
		s = json_string_value(json_object_get(a, "ciphertext"));
		if (st != 200 || s == NULL) {
			note_error(w, "wrap", st, r);
			json_decref(a);
			continue;
		}
		ct = strdup(s);
		json_decref(a);
		snprintf(body, sizeof(body),
		    "{\"ciphertext\":\"%s\",\"context\":{\"round\":\"%d\"}}", ct, r);
		free(ct);
		snprintf(path, sizeof(path), "/v1/keys/%s/unwrap", w->key);
		a = ith_post_mt(c, path, T.app, body, &st, w->ids[w->n_ids]);
		if (w->ids[w->n_ids][0] != '\0')
			w->n_ids++;
		s = json_string_value(json_object_get(a, "plaintext"));
		if (st != 200 || s == NULL || ith_unb64(s, &got, &glen) != 0 ||
		    glen != 32 || memcmp(got, pt, 32) != 0)
			note_error(w, "unwrap (or with other bytes)", st, r);
		else
			w->ok++;
		free(got);
		got = NULL;
		json_decref(a);
	}
	curl_easy_cleanup(c);
	return NULL;
}

static void
test_parallel_round_trips(void)
{
	static struct worker w[THREADS];
	const char *shared = it_new_key("par", NULL);
	int i, j, ids = 0, dup = 0;

	for (i = 0; i < THREADS; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		/* two threads share a key, the others have their own */
		snprintf(w[i].key, sizeof(w[i].key), "%s",
		    i < 2 ? shared : it_new_key("par", NULL));
	}
	for (i = 0; i < THREADS; i++)
		if (pthread_create(&w[i].tid, NULL, work, &w[i]) != 0) {
			ith_fail("pthread_create failed");
			w[i].tid = 0;
		}
	for (i = 0; i < THREADS; i++)
		if (w[i].tid != 0)
			pthread_join(w[i].tid, NULL);
	for (i = 0; i < THREADS; i++) {
		ith_check(w[i].ok == ROUNDS, "parallel client %d: %d of %d round trips "
		    "on %s; first error: %s", i, w[i].ok, ROUNDS, w[i].key,
		    w[i].first_error);
		for (j = 0; j < w[i].n_ids; j++) {
			ids++;
			if (!ith_record_request_id(w[i].ids[j]))
				dup++;
		}
	}
	ith_check(ids == THREADS * ROUNDS * 2, "parallel clients: %d of %d answers "
	    "carried an X-Request-Id", ids, THREADS * ROUNDS * 2);
	ith_check(dup == 0, "parallel clients: %d request ids were repeated", dup);
}

int
it_register_concurrent(void)
{
	CU_pSuite s;

	if ((s = CU_add_suite("concurrency", suite_init, NULL)) == NULL ||
	    !CU_add_test(s, "4 clients in parallel", test_parallel_round_trips))
		return -1;
	return 0;
}
