/* Benchmark of signing: sign/s and verify/s per algorithm through the HTTP
 * API, and JWKS GET/s (a full 200 and a conditional 304), against a live
 * kmsd on a temporary SoftHSM token (the integration harness). Not a test:
 * tests/bench/run sign prints the table.
 *
 *   sign_bench [SECONDS [THREADS]]    each row runs SECONDS (default 3)
 *                                     with THREADS clients (default 4)
 *
 * KMSD_BIN and KMSCTL_BIN name the binaries. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <CUnit/Basic.h>
#include <curl/curl.h>
#include <jansson.h>

#include "harness.h"

#define MAX_THREADS 64

static double seconds = 3.0;
static int threads = 4;
static char *app;

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct worker {
	pthread_t tid;
	const char *path;	/* POST path, or NULL for the JWKS */
	const char *body;
	const char *if_none_match;
	long want;		/* the status that counts */
	double until;
	unsigned long ok, bad;
};

static size_t
discard(char *p, size_t size, size_t n, void *arg)
{
	(void)p;
	(void)arg;
	return size * n;
}

static void *
run_worker(void *arg)
{
	struct worker *w = arg;
	CURL *c = curl_easy_init();
	struct curl_slist *hl = NULL;
	char url[512], hdr[256], id[33];
	long st;

	if (w->path == NULL) {
		snprintf(url, sizeof(url), "%s/.well-known/jwks.json",
		    ith_base_url());
		curl_easy_setopt(c, CURLOPT_URL, url);
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
		if (w->if_none_match != NULL) {
			snprintf(hdr, sizeof(hdr), "If-None-Match: %s",
			    w->if_none_match);
			hl = curl_slist_append(hl, hdr);
			curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
		}
	}
	while (now_s() < w->until) {
		if (w->path != NULL) {
			json_t *a = ith_post_mt(c, w->path, app, w->body, &st, id);

			json_decref(a);
		} else {
			st = 0;
			if (curl_easy_perform(c) == CURLE_OK)
				curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
		}
		if (st == w->want)
			w->ok++;
		else
			w->bad++;
	}
	curl_slist_free_all(hl);
	curl_easy_cleanup(c);
	return NULL;
}

/* Runs `threads` clients for `seconds` and prints a table row. */
static void
row(const char *what, const char *alg, const char *path, const char *body,
    const char *inm, long want)
{
	struct worker w[MAX_THREADS];
	unsigned long ok = 0, bad = 0;
	double t0 = now_s(), t1;
	int i;

	for (i = 0; i < threads; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].path = path;
		w[i].body = body;
		w[i].if_none_match = inm;
		w[i].want = want;
		w[i].until = t0 + seconds;
		pthread_create(&w[i].tid, NULL, run_worker, &w[i]);
	}
	for (i = 0; i < threads; i++) {
		pthread_join(w[i].tid, NULL);
		ok += w[i].ok;
		bad += w[i].bad;
	}
	t1 = now_s();
	printf("| %-22s | %-14s | %7d | %8lu | %9.0f | %6lu |\n", what, alg,
	    threads, ok, (double)ok / (t1 - t0), bad);
	fflush(stdout);
}

static void
bench(void)
{
	static const struct {
		const char *key, *type, *alg;
	} keys[] = {
		{ "bench-es", "ec-p256", "ES256" },
		{ "bench-rsa2048", "rsa-2048", "RS256" },
		{ "bench-rsa2048", "rsa-2048", "PS256" },
		{ "bench-rsa3072", "rsa-3072", "RS256" },
		{ "bench-rsa3072", "rsa-3072", "PS256" },
		{ "bench-ed", "ed25519", "EdDSA" },
	};
	char path[128], body[512], etag[128] = "", label[40];
	json_t *a;
	size_t i;

	CU_ASSERT_EQUAL_FATAL(ith_setup("usage_flush_seconds = 5\n"), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(app = ith_token_create("app", "bench-*",
	    NULL, NULL));
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (i == 0 || strcmp(keys[i].key, keys[i - 1].key) != 0)
			CU_ASSERT_EQUAL_FATAL(ith_key_create(keys[i].key,
			    json_pack("{s:s}", "type", keys[i].type)), 0);

	printf("| %-22s | %-14s | %7s | %8s | %9s | %6s |\n", "operation",
	    "key type, alg", "clients", "requests", "per second", "errors");
	printf("|------------------------|----------------|---------|----------|"
	    "-----------|--------|\n");
	/* Raw signatures over 32 input bytes: the token's signing plus HTTP,
	 * the audit record (group commit) and JSON. */
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		snprintf(path, sizeof(path), "/v1/keys/%s/sign", keys[i].key);
		snprintf(body, sizeof(body), "{\"input\":\"AAECAwQFBgcICQoLDA0ODxAR"
		    "EhMUFRYXGBkaGxwdHh8=\",\"alg\":\"%s\"}", keys[i].alg);
		snprintf(label, sizeof(label), "%s %s", keys[i].type, keys[i].alg);
		row("sign (raw, 32 bytes)", label, path, body, NULL, 200);
	}
	/* JWS verification: OpenSSL against the stored public key. */
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const char *jws;

		snprintf(path, sizeof(path), "/v1/keys/%s/sign", keys[i].key);
		snprintf(body, sizeof(body), "{\"input\":\"eyJzdWIiOiJiZW5jaCJ9\","
		    "\"format\":\"jws\",\"alg\":\"%s\"}", keys[i].alg);
		a = ith_call("POST", path, app, json_loads(body, 0, NULL), 200, NULL);
		jws = json_string_value(json_object_get(a, "signature"));
		if (jws != NULL) {
			size_t n = strlen(jws) + 16;
			char *vbody = malloc(n);

			snprintf(vbody, n, "{\"jws\":\"%s\"}", jws);
			snprintf(path, sizeof(path), "/v1/keys/%s/verify",
			    keys[i].key);
			snprintf(label, sizeof(label), "%s %s", keys[i].type,
			    keys[i].alg);
			row("verify (JWS)", label, path, vbody, NULL, 200);
			free(vbody);
		}
		json_decref(a);
	}
	/* The JWKS from memory: a full answer and a 304. */
	{
		struct ith_headers hd;
		char *raw = NULL;
		long st;

		if (ith_request_raw("GET", "/.well-known/jwks.json", NULL, NULL, 0,
		    NULL, &st, &raw, NULL, NULL, &hd) == 0 && raw != NULL) {
			/* The ETag is the quoted SHA-256 of the body. */
			CURL *c = curl_easy_init();
			char url[512];
			struct curl_header *h = NULL;

			snprintf(url, sizeof(url), "%s/.well-known/jwks.json",
			    ith_base_url());
			curl_easy_setopt(c, CURLOPT_URL, url);
			curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
			if (curl_easy_perform(c) == CURLE_OK &&
			    curl_easy_header(c, "ETag", 0, CURLH_HEADER, -1, &h) ==
			    CURLHE_OK)
				snprintf(etag, sizeof(etag), "%s", h->value);
			curl_easy_cleanup(c);
			printf("| %-22s | %-14s | %7s | %8zu | %9s | %6s |\n",
			    "(JWKS body bytes)", "", "", strlen(raw), "", "");
		}
		free(raw);
	}
	row("GET jwks.json (200)", "", NULL, NULL, NULL, 200);
	if (etag[0] != '\0')
		row("GET jwks.json (304)", "", NULL, NULL, etag, 304);
	free(app);
	ith_teardown();
}

int
main(int argc, char **argv)
{
	static const struct ith_test tests[] = {
		{ "sign, verify and JWKS throughput", bench },
		{ NULL, NULL },
	};

	if (argc > 1 && (seconds = atof(argv[1])) <= 0)
		seconds = 3.0;
	if (argc > 2 && ((threads = atoi(argv[2])) < 1 || threads > MAX_THREADS))
		threads = 4;
	/* A failed row says so in the table; the exit status stays 0. */
	return ith_bench_main("sign bench", tests) == 2 ? 2 : 0;
}
