/* A live kmsd for tests/bench/run, which drives it with wrk: a temporary
 * SoftHSM token and kmsd started by the integration harness (the same init
 * path as the tests), the keys and tokens the benchmark rows use, and a
 * pool of ciphertexts for the unwrap and rewrap rows. Not a test.
 *
 *   kmsd_env POOLSIZE
 *
 * It prints "name value" lines on stdout, ending with "ready" (or "error
 * <why>" and exits 1):
 *   url http://127.0.0.1:<port>    pid <kmsd pid>     dir <data dir>
 *   admin <token>   app <token, role app, keys "bench-*">
 *   pool <file: one ciphertext a line, under bench-1 with the context of
 *         KE_CONTEXT>
 * then reads commands on stdin, one a line:
 *   create FROM TO CONNS SECONDS
 *             creates keys bench-s<FROM> .. bench-s<TO-1> (aes256-gcm) with
 *             POST /v1/keys from CONNS clients at once, for at most SECONDS;
 *             answers "created <n> failed <m> ms <t> next <i> status <s>":
 *             n answered 201, m did not, t ms in all, i the first name not
 *             asked for, s the status of the last failure (0: no answer)
 *   restart   stops kmsd (SIGTERM) and starts it again; answers
 *             "started <ms> pid <pid> url <url>", ms from fork to
 *             GET /v1/ready == 200 (polled every 50 ms)
 *   quit      (or end of input) stops kmsd, removes the data dir, exits.
 *
 * KMSD_BIN and KMSCTL_BIN name the binaries. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <curl/curl.h>
#include <jansson.h>

#include "harness.h"

/* The two-pair context every bench request carries (also in lua/kms.lua). */
#define KE_CONTEXT "{\"tenant\":\"t-0001\",\"doc\":\"d-000001\"}"

/* Settings that would bend the measurement; everything else, and
 * http_threads and hsm_sessions in particular, stays at kmsd's default. */
#define KE_CONF "rate_limit = 0\nmax_connections_per_ip = 0\n"

#define KE_MAX_CONNS 256

static size_t pool_size = 1000;
static int failed;

/* The key creation command: the clients share the next name to ask for. */
static struct {
	pthread_mutex_t lock;
	long next, to, created, failed, bad_status;
	long long deadline_ms;
} C = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void
say(const char *name, const char *value)
{
	printf("%s %s\n", name, value);
	fflush(stdout);
}

static void
fail(const char *why)
{
	say("error", why);
	failed = 1;
}

/* The pool: batch wraps of up to 1000 random 32-byte DEKs. */
static int
write_pool(const char *app, const char *path)
{
	unsigned char dek[32];
	json_t *batch, *ans, *ctx, *res;
	size_t i, j, m;
	char *b64;
	FILE *f;
	int rc = -1;

	if ((f = fopen(path, "w")) == NULL)
		return -1;
	ctx = json_loads(KE_CONTEXT, 0, NULL);
	for (i = 0; i < pool_size; i += m) {
		m = pool_size - i < 1000 ? pool_size - i : 1000;
		batch = json_array();
		for (j = 0; j < m; j++) {
			ith_random(dek, sizeof(dek));
			b64 = ith_b64(dek, sizeof(dek));
			json_array_append_new(batch, json_pack("{s:s, s:O}",
			    "plaintext", b64, "context", ctx));
			free(b64);
		}
		ans = ith_call("POST", "/v1/keys/bench-1/wrap", app,
		    json_pack("{s:o}", "batch", batch), 200, NULL);
		res = json_object_get(ans, "results");
		for (j = 0; j < m; j++) {
			const char *ct = json_string_value(json_object_get(
			    json_array_get(res, j), "ciphertext"));

			if (ct == NULL) {
				json_decref(ans);
				goto out;
			}
			fprintf(f, "%s\n", ct);
		}
		json_decref(ans);
	}
	rc = 0;
out:
	json_decref(ctx);
	if (fclose(f) != 0)
		rc = -1;
	return rc;
}

static void
announce(void)
{
	char pid[32];

	snprintf(pid, sizeof(pid), "%ld", (long)ith_pid());
	say("url", ith_base_url());
	say("pid", pid);
}

static int
setup(char **app)
{
	char pool[4200];
	json_t *sign;

	if (ith_setup(KE_CONF) != 0) {
		fail("kmsd did not start (see stderr)");
		return -1;
	}
	sign = json_pack("{s:s}", "type", "ec-p256");
	if (ith_key_create("bench-1", NULL) != 0 ||
	    ith_key_create("bench-sign", sign) != 0) {
		fail("cannot create the keys bench-1 and bench-sign");
		return -1;
	}
	if ((*app = ith_token_create("app", "bench-*", NULL, NULL)) == NULL) {
		fail("cannot create the app token");
		return -1;
	}
	snprintf(pool, sizeof(pool), "%s/pool.txt", ith_data_dir());
	if (write_pool(*app, pool) != 0) {
		fail("cannot write the ciphertext pool");
		return -1;
	}
	announce();
	say("dir", ith_data_dir());
	say("admin", ith_admin_token());
	say("app", *app);
	say("pool", pool);
	say("ready", "");
	return 0;
}

/* The next name to create, or -1 when all are asked for or time is up. */
static long
create_take(void)
{
	long n = -1;

	pthread_mutex_lock(&C.lock);
	if (C.next < C.to && ith_now_ms() < C.deadline_ms)
		n = C.next++;
	pthread_mutex_unlock(&C.lock);
	return n;
}

static void *
create_client(void *arg)
{
	CURL *c = curl_easy_init();
	char body[64], id[33];
	long n, st;

	(void)arg;
	while (c != NULL && (n = create_take()) >= 0) {
		snprintf(body, sizeof(body), "{\"name\":\"bench-s%ld\"}", n);
		json_decref(ith_post_mt(c, "/v1/keys", ith_admin_token(), body,
		    &st, id));
		pthread_mutex_lock(&C.lock);
		if (st == 201)
			C.created++;
		else {
			C.failed++;
			C.bad_status = st;
		}
		pthread_mutex_unlock(&C.lock);
	}
	if (c != NULL)
		curl_easy_cleanup(c);
	return NULL;
}

static void
create(const char *args)
{
	pthread_t tid[KE_MAX_CONNS];
	long from, to, conns, secs, i, started = 0;
	long long t0;
	char line[256];

	if (sscanf(args, "%ld %ld %ld %ld", &from, &to, &conns, &secs) != 4 ||
	    from < 0 || to < from || conns < 1 || conns > KE_MAX_CONNS ||
	    secs < 1) {
		say("error", "usage: create FROM TO CONNS SECONDS");
		return;
	}
	t0 = ith_now_ms();
	C.next = from;
	C.to = to;
	C.created = C.failed = C.bad_status = 0;
	C.deadline_ms = t0 + secs * 1000;
	for (i = 0; i < conns; i++)
		if (pthread_create(&tid[started], NULL, create_client, NULL) == 0)
			started++;
	for (i = 0; i < started; i++)
		pthread_join(tid[i], NULL);
	if (started == 0) {
		say("error", "cannot start a client thread");
		return;
	}
	snprintf(line, sizeof(line), "%ld failed %ld ms %lld next %ld status %ld",
	    C.created, C.failed, ith_now_ms() - t0, C.next, C.bad_status);
	say("created", line);
}

static void
restart(void)
{
	char how[128], line[256];
	long long t0;

	if (ith_stop(how, sizeof(how)) > 0)
		fprintf(stderr, "kmsd_env: kmsd %s\n", how);
	t0 = ith_now_ms();
	if (ith_start() != 0) {
		fail("kmsd did not start again");
		return;
	}
	snprintf(line, sizeof(line), "%lld pid %ld url %s", ith_now_ms() - t0,
	    (long)ith_pid(), ith_base_url());
	say("started", line);
}

static void
serve(void)
{
	char *app = NULL, line[256];

	if (setup(&app) == 0) {
		while (fgets(line, sizeof(line), stdin) != NULL) {
			line[strcspn(line, "\r\n")] = '\0';
			if (strcmp(line, "quit") == 0)
				break;
			if (strcmp(line, "restart") == 0)
				restart();
			else if (strncmp(line, "create ", 7) == 0)
				create(line + 7);
			else
				say("error", "unknown command");
		}
	}
	free(app);
	ith_teardown();
}

int
main(int argc, char **argv)
{
	static const struct ith_test tests[] = {
		{ "serve", serve },
		{ NULL, NULL },
	};
	int r;

	if (argc > 1 && atol(argv[1]) > 0)
		pool_size = (size_t)atol(argv[1]);
	/* A ^C reaches the whole process group: tests/bench/run answers it
	 * with "quit", which stops kmsd and removes the data dir. */
	signal(SIGINT, SIG_IGN);
	r = ith_bench_main("kmsd bench environment", tests);
	return r != 0 ? r : failed;
}
