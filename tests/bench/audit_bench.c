/* Benchmark of the audit writer: records/s and fsyncs/s with 1, 8 and 64
 * concurrent writers, with and without group commit. Run on demand
 * (tests/bench/run); not part of the test suites. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "audit.h"

struct job {
	struct audit *a;
	int records;
	int errors;
};

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *
writer(void *arg)
{
	struct job *j = arg;
	json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:i, s:{s:s}}",
	    "request_id", "0123456789abcdef0123456789abcdef", "actor",
	    "token:0123456789abcdef", "op", "wrap", "outcome", "ok", "status",
	    200, "key", "matter-1", "version", 1, "context", "matter", "m-1");
	int i;

	for (i = 0; i < j->records; i++)
		if (audit_append(j->a, rec, NULL) != KM_OK)
			j->errors++;
	json_decref(rec);
	return NULL;
}

static int
run(const char *dir, int threads, int group)
{
	pthread_t tid[64];
	struct job jobs[64];
	struct audit *a = NULL;
	uint64_t recs, fsyncs, fails;
	double t0, dt;
	int i, per, errors = 0;

	if (audit_open(dir, &a) != KM_OK)
		return -1;
	audit_set_group_commit(a, group);
	/* A few seconds per row on an ordinary disk. */
	per = group ? 4000 / threads + 50 : 1500 / threads + 20;
	t0 = now_s();
	for (i = 0; i < threads; i++) {
		jobs[i].a = a;
		jobs[i].records = per;
		jobs[i].errors = 0;
		pthread_create(&tid[i], NULL, writer, &jobs[i]);
	}
	for (i = 0; i < threads; i++) {
		pthread_join(tid[i], NULL);
		errors += jobs[i].errors;
	}
	dt = now_s() - t0;
	audit_stats(a, &recs, &fsyncs, &fails);
	printf("| %-13s | %7d | %9.0f | %8.0f | %14.1f |%s\n",
	    group ? "group commit" : "fsync each", threads, recs / dt,
	    fsyncs / dt, (double)recs / (fsyncs ? fsyncs : 1),
	    errors ? " errors!" : "");
	audit_free(a);
	return errors ? -1 : 0;
}

int
main(int argc, char **argv)
{
	static const int clients[] = { 1, 8, 64 };
	char tmpl[] = "/var/tmp/kms-audit-bench-XXXXXX", dir[300], cmd[400];
	const char *base = argc > 1 ? argv[1] : NULL;
	size_t i;
	int g, rc = 0, n = 0;

	if (base == NULL && (base = mkdtemp(tmpl)) == NULL) {
		perror("mkdtemp");
		return 2;
	}
	printf("| mode          | writers | records/s | fsyncs/s | records/fsync |\n"
	    "|---|---|---|---|---|\n");
	for (g = 0; g <= 1; g++) {
		for (i = 0; i < sizeof(clients) / sizeof(clients[0]); i++) {
			snprintf(dir, sizeof(dir), "%s/run-%d", base, n++);
			if (run(dir, clients[i], g) != 0)
				rc = 1;
		}
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
	if (argc <= 1 && system(cmd) != 0)
		rc = 1;
	return rc;
}
