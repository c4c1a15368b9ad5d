/* Unit tests of service/audit.c: the hash chain on disk, reopening,
 * torn-tail recovery, refusal of a garbage tail, concurrent appends. */
#include <inttypes.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <CUnit/CUnit.h>
#include <jansson.h>
#include <openssl/sha.h>

#include "audit.h"
#include "km.h"
#include "log.h"
#include "unit.h"

#define SEGMENT "audit-000000000000.jsonl"
#define ZERO64 "0000000000000000000000000000000000000000000000000000000000000000"

static char root[256];

static int
suite_init(void)
{
	log_set_level(LOG_ERROR);
	return ut_mkdtemp("audit", root, sizeof(root));
}

static int
suite_clean(void)
{
	ut_rmtree(root);
	return 0;
}

/* A fresh, not yet existing log directory under the scratch root. */
static const char *
new_dir(char *out, size_t outlen)
{
	static int n;

	snprintf(out, outlen, "%s/log%d", root, ++n);
	return out;
}

static const char *
seg_path(const char *dir)
{
	static char p[400];

	snprintf(p, sizeof(p), "%s/" SEGMENT, dir);
	return p;
}

static void
append(struct audit *a, const char *op, uint64_t want_seq)
{
	json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:i}", "request_id",
	    "r-1", "actor", "token:0123456789abcdef", "op", op, "outcome", "ok",
	    "status", 200);
	uint64_t seq = UINT64_MAX;

	CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
	CU_ASSERT_EQUAL(audit_append(a, rec, &seq), KM_OK);
	CU_ASSERT_EQUAL(seq, want_seq);
	json_decref(rec);
}

/* What verify_log found. */
struct chain {
	size_t n;			/* whole lines */
	uint64_t bad_seq;		/* first line whose checks failed, or UINT64_MAX */
	char last_hash[65];		/* hex SHA-256 of the last line */
	json_t *last;			/* the last record, parsed (owned) */
};

static void
chain_init(struct chain *ch)
{
	memset(ch, 0, sizeof(*ch));
	ch->bad_seq = UINT64_MAX;
	snprintf(ch->last_hash, sizeof(ch->last_hash), "%s", ZERO64);
}

/* Checks the lines of `data` as the continuation of `ch`: each ends in
 * '\n' and starts with {"seq":<n>,"ts":"<RFC 3339 UTC, microseconds>",
 * "prev":"<hex>", with seq contiguous (from 0 for a fresh chain) and prev
 * the hex SHA-256 of the previous line's bytes without the newline (64
 * zeros for seq 0), and parses as a JSON object whose seq agrees with the
 * text. Reports the first failure on stderr. */
static void
chain_feed(struct chain *ch, const char *label, const char *data, size_t len)
{
	const char *line, *nl;
	char head[160], ts[40];
	unsigned char md[SHA256_DIGEST_LENGTH];
	size_t line_len;

	if (len > 0 && data[len - 1] != '\n') {
		fprintf(stderr, "\n%s: does not end in a newline\n", label);
		CU_FAIL("audit segment ends in a partial line");
	}
	for (line = data; line < data + len; line = nl + 1) {
		json_t *rec;
		int hlen, ok;
		int64_t t;

		if ((nl = memchr(line, '\n', (size_t)(data + len - line))) == NULL)
			break;
		line_len = (size_t)(nl - line);
		rec = json_loadb(line, line_len, JSON_REJECT_DUPLICATES, NULL);
		ok = json_is_object(rec);
		ts[0] = '\0';
		if (ok) {
			const char *r_ts = json_string_value(json_object_get(rec,
			    "ts"));

			snprintf(ts, sizeof(ts), "%s", r_ts ? r_ts : "");
			ok = strlen(ts) == 27 && ts[19] == '.' && ts[26] == 'Z' &&
			    km_time_parse(ts, &t) == KM_OK &&
			    json_integer_value(json_object_get(rec, "seq")) ==
			    (json_int_t)ch->n;
		}
		/* Field order and values, checked on the bytes. */
		hlen = snprintf(head, sizeof(head),
		    "{\"seq\":%zu,\"ts\":\"%s\",\"prev\":\"%s\",", ch->n, ts,
		    ch->last_hash);
		ok = ok && line_len > (size_t)hlen &&
		    memcmp(line, head, (size_t)hlen) == 0;
		if (!ok && ch->bad_seq == UINT64_MAX) {
			fprintf(stderr, "\n%s: record %zu breaks the chain or format"
			    "\n  want prefix: %s\n  got: %.*s\n", label, ch->n, head,
			    (int)(line_len > 300 ? 300 : line_len), line);
			ch->bad_seq = ch->n;
		}
		SHA256((const unsigned char *)line, line_len, md);
		km_hex(md, sizeof(md), ch->last_hash);
		json_decref(ch->last);
		ch->last = rec;
		ch->n++;
	}
}

/* Checks one segment file as a whole chain from seq 0. */
static void
verify_log(const char *path, struct chain *ch)
{
	char *data;
	size_t len;

	chain_init(ch);
	data = ut_read_file(path, &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(data);
	chain_feed(ch, path, data, len);
	free(data);
}

static int
cmp_str(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

/* Checks all segments of `dir` in order as one chain; each segment's name
 * must carry the seq of its first record. *n_seg gets the file count. */
static void
verify_dir(const char *dir, struct chain *ch, size_t *n_seg)
{
	char *names[512], path[600], want[64], *data;
	struct dirent *de;
	size_t n = 0, i, len;
	DIR *d;

	chain_init(ch);
	d = opendir(dir);
	CU_ASSERT_PTR_NOT_NULL_FATAL(d);
	while ((de = readdir(d)) != NULL && n < 512)
		if (strncmp(de->d_name, "audit-", 6) == 0)
			names[n++] = strdup(de->d_name);
	closedir(d);
	qsort(names, n, sizeof(names[0]), cmp_str);
	*n_seg = n;
	for (i = 0; i < n; i++) {
		CU_ASSERT_PTR_NOT_NULL_FATAL(names[i]);
		snprintf(want, sizeof(want), "audit-%012zu.jsonl", ch->n);
		if (strcmp(names[i], want) != 0) {
			fprintf(stderr, "\nsegment %s: expected the name %s\n",
			    names[i], want);
			CU_FAIL("segment name does not carry its first seq");
		}
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		data = ut_read_file(path, &len);
		CU_ASSERT_PTR_NOT_NULL_FATAL(data);
		chain_feed(ch, path, data, len);
		free(data);
	}
	for (i = 0; i < n; i++)
		free(names[i]);
}

static void
chain_clear(struct chain *ch)
{
	json_decref(ch->last);
	ch->last = NULL;
}

static void
test_chain(void)
{
	struct audit *a = NULL;
	struct chain ch;
	struct stat st;
	char d[300], prev[65];
	uint64_t next, i;
	json_t *rec;

	CU_ASSERT_EQUAL_FATAL(audit_open(new_dir(d, sizeof(d)), &a), KM_OK);
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	/* The directory is created private. */
	CU_ASSERT_EQUAL_FATAL(stat(d, &st), 0);
	CU_ASSERT_EQUAL(st.st_mode & 0777, 0700);
	audit_head(a, &next, prev);
	CU_ASSERT_EQUAL(next, 0);
	CU_ASSERT_STRING_EQUAL(prev, ZERO64);
	CU_ASSERT_EQUAL(audit_check(a), KM_OK);

	for (i = 0; i < 10; i++)
		append(a, "wrap", i);

	/* A record that tries to set seq/ts/prev itself does not: those are
	 * the log's. The caller's object is not modified. */
	rec = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s}", "seq", (json_int_t)999,
	    "ts", "1999-01-01T00:00:00.000000Z", "prev", "forged", "op", "forge",
	    "actor", "x", "request_id", "r");
	CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
	CU_ASSERT_EQUAL(audit_append(a, rec, &next), KM_OK);
	CU_ASSERT_EQUAL(next, 10);
	CU_ASSERT_EQUAL(json_object_size(rec), 6);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(rec, "seq")), 999);
	json_decref(rec);
	/* A NULL seq pointer is allowed. */
	rec = json_pack("{s:s}", "op", "noseq");
	CU_ASSERT_EQUAL(audit_append(a, rec, NULL), KM_OK);
	json_decref(rec);

	verify_log(seg_path(d), &ch);
	CU_ASSERT_EQUAL(ch.n, 12);
	CU_ASSERT_EQUAL(ch.bad_seq, UINT64_MAX);
	audit_head(a, &next, prev);
	CU_ASSERT_EQUAL(next, 12);
	CU_ASSERT_STRING_EQUAL(prev, ch.last_hash);
	chain_clear(&ch);

	/* The forged fields did not reach the line; the others did. */
	{
		char *data;
		size_t len;

		data = ut_read_file(seg_path(d), &len);
		CU_ASSERT_PTR_NOT_NULL_FATAL(data);
		CU_ASSERT_PTR_NULL(strstr(data, "forged"));
		CU_ASSERT_PTR_NULL(strstr(data, "1999-01-01"));
		CU_ASSERT_PTR_NULL(strstr(data, ":999"));
		CU_ASSERT_PTR_NOT_NULL(strstr(data, "\"op\":\"forge\""));
		CU_ASSERT_PTR_NOT_NULL(strstr(data,
		    "\"actor\":\"token:0123456789abcdef\""));
		free(data);
	}
	/* The segment file is private. */
	CU_ASSERT_EQUAL_FATAL(stat(seg_path(d), &st), 0);
	CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
	audit_free(a);
	audit_free(NULL);
}

static void
test_reopen(void)
{
	struct audit *a = NULL;
	struct chain ch;
	char d[300], prev[65], prev_before[65];
	uint64_t next, i;

	new_dir(d, sizeof(d));
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	for (i = 0; i < 3; i++)
		append(a, "key.create", i);
	audit_head(a, &next, prev_before);
	audit_free(a);

	/* Reopening an empty-but-present log, and a non-empty one, resumes
	 * at the head: same next seq, same hash. */
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	audit_head(a, &next, prev);
	CU_ASSERT_EQUAL(next, 3);
	CU_ASSERT_STRING_EQUAL(prev, prev_before);
	for (i = 3; i < 5; i++)
		append(a, "wrap", i);
	audit_free(a);
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	append(a, "unwrap", 5);
	audit_free(a);

	verify_log(seg_path(d), &ch);
	CU_ASSERT_EQUAL(ch.n, 6);
	CU_ASSERT_EQUAL(ch.bad_seq, UINT64_MAX);
	chain_clear(&ch);

	/* A log that was created but never written. */
	new_dir(d, sizeof(d));
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	audit_free(a);
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	audit_head(a, &next, prev);
	CU_ASSERT_EQUAL(next, 0);
	CU_ASSERT_STRING_EQUAL(prev, ZERO64);
	append(a, "first", 0);
	audit_free(a);
	verify_log(seg_path(d), &ch);
	CU_ASSERT_EQUAL(ch.n, 1);
	CU_ASSERT_EQUAL(ch.bad_seq, UINT64_MAX);
	chain_clear(&ch);
}

static void
check_recovery(const char *d, const char *torn, size_t whole_before)
{
	struct audit *a = NULL;
	struct chain ch;
	char prev[65], *before;
	size_t before_len;
	uint64_t next;

	before = ut_read_file(seg_path(d), &before_len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(before);
	CU_ASSERT_EQUAL_FATAL(ut_write_file(seg_path(d), "a", torn,
	    strlen(torn)), 0);

	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	/* The torn bytes are gone and one recovery record follows the last
	 * whole line, chained to it. */
	verify_log(seg_path(d), &ch);
	CU_ASSERT_EQUAL(ch.bad_seq, UINT64_MAX);
	CU_ASSERT_EQUAL_FATAL(ch.n, whole_before + 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(ch.last);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(ch.last, "op")),
	    "recovery");
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(ch.last,
	    "cut_bytes")), (json_int_t)strlen(torn));
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(ch.last, "seq")),
	    (json_int_t)whole_before);
	audit_head(a, &next, prev);
	CU_ASSERT_EQUAL(next, whole_before + 1);
	CU_ASSERT_STRING_EQUAL(prev, ch.last_hash);
	chain_clear(&ch);
	{
		/* Nothing of the torn line survives: the file is the old whole
		 * lines plus the recovery line. */
		char *data;
		size_t len;

		data = ut_read_file(seg_path(d), &len);
		CU_ASSERT_PTR_NOT_NULL_FATAL(data);
		CU_ASSERT_FATAL(len > before_len);
		CU_ASSERT(memcmp(data, before, before_len) == 0);
		CU_ASSERT_EQUAL(strncmp(data + before_len, "{\"seq\":", 7), 0);
		CU_ASSERT_PTR_NOT_NULL(strstr(data + before_len,
		    "\"op\":\"recovery\""));
		/* Exactly one line after the old ones. */
		CU_ASSERT_EQUAL(data[len - 1], '\n');
		CU_ASSERT_PTR_EQUAL(strchr(data + before_len, '\n'),
		    data + len - 1);
		free(data);
	}
	free(before);
	/* And the log goes on from there. */
	append(a, "after", whole_before + 1);
	audit_free(a);
	verify_log(seg_path(d), &ch);
	CU_ASSERT_EQUAL(ch.n, whole_before + 2);
	CU_ASSERT_EQUAL(ch.bad_seq, UINT64_MAX);
	chain_clear(&ch);

	/* A second reopen finds nothing to recover. */
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	audit_head(a, &next, prev);
	CU_ASSERT_EQUAL(next, whole_before + 2);
	audit_free(a);
	verify_log(seg_path(d), &ch);
	CU_ASSERT_EQUAL(ch.n, whole_before + 2);
	chain_clear(&ch);
}

static void
test_torn_tail(void)
{
	struct audit *a = NULL;
	char d[300];
	uint64_t i;

	new_dir(d, sizeof(d));
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	for (i = 0; i < 4; i++)
		append(a, "wrap", i);
	audit_free(a);
	/* A crash in the middle of writing record 4. */
	check_recovery(d, "{\"seq\":4,\"ts\":\"2026-11-23T18:2", 4);

	/* A torn line that is the whole file. */
	new_dir(d, sizeof(d));
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	audit_free(a);
	check_recovery(d, "{\"se", 0);

	/* A torn tail that happens to be valid JSON is still torn: no
	 * newline, no record. */
	new_dir(d, sizeof(d));
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	append(a, "wrap", 0);
	audit_free(a);
	check_recovery(d, "{\"seq\":1}", 1);
}

static void
test_garbage_tail(void)
{
	static const char *const garbage[] = {
		"this is not a record\n",
		"{\"seq\":4,\"ts\":\"2026-11-23T18:20:16\n",	/* cut, then newline */
		"{\"op\":\"wrap\"}\n",				/* no seq */
		"{\"seq\":\"4\"}\n",				/* seq not a number */
		"{\"seq\":-1}\n",
		"[4]\n",
		"\n",						/* empty line */
		NULL,
	};
	struct audit *a;
	char d[300];
	size_t i;
	uint64_t j;

	for (i = 0; garbage[i] != NULL; i++) {
		long long size;

		new_dir(d, sizeof(d));
		CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
		for (j = 0; j < 4; j++)
			append(a, "wrap", j);
		audit_free(a);
		CU_ASSERT_EQUAL_FATAL(ut_write_file(seg_path(d), "a", garbage[i],
		    strlen(garbage[i])), 0);
		size = ut_file_size(seg_path(d));

		a = (struct audit *)1;
		if (audit_open(d, &a) != KM_ERR_AUDIT) {
			fprintf(stderr, "\naudit_open accepted a log ending in "
			    "\"%.*s\\n\"\n", (int)strlen(garbage[i]) - 1,
			    garbage[i]);
			CU_FAIL("audit_open appended after a garbage last line");
			if (a != (struct audit *)1)
				audit_free(a);
			continue;
		}
		CU_ASSERT_PTR_NULL(a);
		/* Refusing leaves the evidence alone. */
		CU_ASSERT_EQUAL(ut_file_size(seg_path(d)), size);
	}
}

/* The last line of `path` without its newline, and its length. */
static char *
last_line(const char *path, size_t *n)
{
	char *data, *start, *out;
	size_t len;

	*n = 0;
	data = ut_read_file(path, &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(data);
	CU_ASSERT_FATAL(len > 0 && data[len - 1] == '\n');
	data[len - 1] = '\0';
	start = strrchr(data, '\n');
	start = start ? start + 1 : data;
	out = strdup(start);
	CU_ASSERT_PTR_NOT_NULL_FATAL(out);
	*n = strlen(out);
	free(data);
	return out;
}

static void
test_unchained_tail(void)
{
	/* Whole lines that parse and carry a seq, but are not the next
	 * record of this chain: kmsd must not chain its next record onto
	 * them (fail closed; DESIGN.md section 5). */
	struct audit *a;
	char d[300], line[512], ts[40], hex[65];
	unsigned char md[SHA256_DIGEST_LENGTH];
	size_t n, c;
	uint64_t j;
	char *last;

	for (c = 0; c < 4; c++) {
		new_dir(d, sizeof(d));
		CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
		for (j = 0; j < 4; j++)
			append(a, "wrap", j);
		audit_free(a);
		last = last_line(seg_path(d), &n);
		SHA256((unsigned char *)last, n, md);
		km_hex(md, sizeof(md), hex);
		free(last);
		km_time_format(km_now_us(), 1, ts, sizeof(ts));
		switch (c) {
		case 0:		/* no ts, no prev */
			snprintf(line, sizeof(line), "{\"seq\":4}\n");
			break;
		case 1:		/* prev is not the hash of the line before */
			snprintf(line, sizeof(line), "{\"seq\":4,\"ts\":\"%s\","
			    "\"prev\":\"%s\",\"op\":\"wrap\"}\n", ts, ZERO64);
			break;
		case 2:		/* seq skips ahead */
			snprintf(line, sizeof(line), "{\"seq\":9,\"ts\":\"%s\","
			    "\"prev\":\"%s\",\"op\":\"wrap\"}\n", ts, hex);
			break;
		default:	/* seq repeats */
			snprintf(line, sizeof(line), "{\"seq\":3,\"ts\":\"%s\","
			    "\"prev\":\"%s\",\"op\":\"wrap\"}\n", ts, hex);
			break;
		}
		CU_ASSERT_EQUAL_FATAL(ut_write_file(seg_path(d), "a", line,
		    strlen(line)), 0);
		a = (struct audit *)1;
		if (audit_open(d, &a) != KM_ERR_AUDIT) {
			fprintf(stderr, "\naudit_open chained onto a last line that "
			    "does not continue the chain: %s", line);
			CU_FAIL("audit_open accepted an unchained last line");
			if (a != (struct audit *)1)
				audit_free(a);
		}
	}
	/* The control: the same construction with the right seq and prev
	 * is accepted. */
	new_dir(d, sizeof(d));
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	for (j = 0; j < 4; j++)
		append(a, "wrap", j);
	audit_free(a);
	last = last_line(seg_path(d), &n);
	SHA256((unsigned char *)last, n, md);
	km_hex(md, sizeof(md), hex);
	free(last);
	km_time_format(km_now_us(), 1, ts, sizeof(ts));
	snprintf(line, sizeof(line), "{\"seq\":4,\"ts\":\"%s\",\"prev\":\"%s\","
	    "\"op\":\"wrap\"}\n", ts, hex);
	CU_ASSERT_EQUAL_FATAL(ut_write_file(seg_path(d), "a", line,
	    strlen(line)), 0);
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	append(a, "wrap", 5);
	audit_free(a);
}

#define N_THREADS 8
#define N_PER_THREAD 200

struct worker {
	struct audit *a;
	int id;
	int failures;
	uint64_t seqs[N_PER_THREAD];
};

static void *
worker_run(void *arg)
{
	struct worker *w = arg;
	int i;

	for (i = 0; i < N_PER_THREAD; i++) {
		json_t *rec = json_pack("{s:s, s:i, s:i, s:s}", "op", "wrap",
		    "thread", w->id, "n", i, "outcome", "ok");

		if (rec == NULL || audit_append(w->a, rec, &w->seqs[i]) != KM_OK)
			w->failures++;
		json_decref(rec);
	}
	return NULL;
}

static void
test_concurrent(void)
{
	static struct worker w[N_THREADS];
	pthread_t th[N_THREADS];
	static unsigned char seen[N_THREADS * N_PER_THREAD];
	int next_n[N_THREADS];
	struct audit *a = NULL;
	struct chain ch;
	char d[300], prev[65], *data, *line, *nl;
	size_t len, dup = 0, order_bad = 0, i;
	uint64_t next;
	int t, k;

	new_dir(d, sizeof(d));
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	for (t = 0; t < N_THREADS; t++) {
		w[t].a = a;
		w[t].id = t;
		w[t].failures = 0;
		CU_ASSERT_EQUAL_FATAL(pthread_create(&th[t], NULL, worker_run,
		    &w[t]), 0);
	}
	for (t = 0; t < N_THREADS; t++)
		CU_ASSERT_EQUAL(pthread_join(th[t], NULL), 0);

	memset(seen, 0, sizeof(seen));
	for (t = 0; t < N_THREADS; t++) {
		CU_ASSERT_EQUAL(w[t].failures, 0);
		for (k = 0; k < N_PER_THREAD; k++) {
			uint64_t s = w[t].seqs[k];

			if (s >= N_THREADS * N_PER_THREAD || seen[s]++)
				dup++;
			/* One thread's own records are in its order. */
			if (k > 0 && s <= w[t].seqs[k - 1])
				order_bad++;
		}
	}
	CU_ASSERT_EQUAL(dup, 0);
	CU_ASSERT_EQUAL(order_bad, 0);
	audit_head(a, &next, prev);
	CU_ASSERT_EQUAL(next, N_THREADS * N_PER_THREAD);
	audit_free(a);

	verify_log(seg_path(d), &ch);
	CU_ASSERT_EQUAL(ch.n, N_THREADS * N_PER_THREAD);
	CU_ASSERT_EQUAL(ch.bad_seq, UINT64_MAX);
	CU_ASSERT_STRING_EQUAL(ch.last_hash, prev);
	chain_clear(&ch);

	/* Every (thread, n) is in the file exactly once, in n order per
	 * thread, at the seq its append returned. */
	data = ut_read_file(seg_path(d), &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(data);
	memset(next_n, 0, sizeof(next_n));
	order_bad = 0;
	for (line = data, i = 0; (nl = strchr(line, '\n')) != NULL;
	    line = nl + 1, i++) {
		json_t *rec = json_loadb(line, (size_t)(nl - line), 0, NULL);
		json_int_t th_id = json_integer_value(json_object_get(rec,
		    "thread"));
		json_int_t n = json_integer_value(json_object_get(rec, "n"));

		if (rec == NULL || th_id < 0 || th_id >= N_THREADS || n < 0 ||
		    n >= N_PER_THREAD || n != next_n[th_id] ||
		    w[th_id].seqs[n] != i)
			order_bad++;
		else
			next_n[th_id]++;
		json_decref(rec);
	}
	CU_ASSERT_EQUAL(order_bad, 0);
	for (t = 0; t < N_THREADS; t++)
		CU_ASSERT_EQUAL(next_n[t], N_PER_THREAD);
	free(data);
}

/* Writers racing at a segment's end roll it once: every segment but the
 * newest reached the size limit. */
static void
test_concurrent_roll(void)
{
	static struct worker w[N_THREADS];
	pthread_t th[N_THREADS];
	char d[300], path[600], *names[512];
	struct dirent *de;
	struct chain ch;
	struct stat st;
	size_t n = 0, i, nseg, small = 0;
	DIR *dd;
	struct audit *a = NULL;
	int t;

	new_dir(d, sizeof(d));
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	audit_set_segment_bytes(a, 4096);
	for (t = 0; t < N_THREADS; t++) {
		w[t].a = a;
		w[t].id = t;
		w[t].failures = 0;
		CU_ASSERT_EQUAL_FATAL(pthread_create(&th[t], NULL, worker_run,
		    &w[t]), 0);
	}
	for (t = 0; t < N_THREADS; t++) {
		CU_ASSERT_EQUAL(pthread_join(th[t], NULL), 0);
		CU_ASSERT_EQUAL(w[t].failures, 0);
	}
	audit_free(a);
	verify_dir(d, &ch, &nseg);
	CU_ASSERT_EQUAL(ch.n, N_THREADS * N_PER_THREAD);
	CU_ASSERT_EQUAL(ch.bad_seq, UINT64_MAX);
	chain_clear(&ch);
	dd = opendir(d);
	CU_ASSERT_PTR_NOT_NULL_FATAL(dd);
	while ((de = readdir(dd)) != NULL && n < 512)
		if (strncmp(de->d_name, "audit-", 6) == 0)
			names[n++] = strdup(de->d_name);
	closedir(dd);
	qsort(names, n, sizeof(names[0]), cmp_str);
	for (i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/%s", d, names[i]);
		if (i + 1 < n && (stat(path, &st) != 0 || st.st_size < 4096))
			small++;
		free(names[i]);
	}
	CU_ASSERT_EQUAL(small, 0);
}

/* The writer's seq, ts and prev come first and win over members of the
 * same name; the record's members follow in their order; an empty record
 * is a line of those three only. */
static void
test_line_layout(void)
{
	struct audit *a = NULL;
	char d[300], *data, *nl, *second;
	json_t *rec, *line;
	const char *tail = ",\"op\":\"x\",\"b\":1,\"a\":2}";
	size_t len;

	new_dir(d, sizeof(d));
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	rec = json_pack("{s:s, s:i, s:i, s:i, s:s, s:s}", "op", "x", "seq", 99,
	    "b", 1, "a", 2, "ts", "then", "prev", "none");
	CU_ASSERT_EQUAL(audit_append(a, rec, NULL), KM_OK);
	json_decref(rec);
	rec = json_object();
	CU_ASSERT_EQUAL(audit_append(a, rec, NULL), KM_OK);
	json_decref(rec);
	audit_free(a);

	data = ut_read_file(seg_path(d), &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(data);
	nl = strchr(data, '\n');
	CU_ASSERT_PTR_NOT_NULL_FATAL(nl);
	*nl = '\0';
	second = nl + 1;
	CU_ASSERT_EQUAL(strncmp(data, "{\"seq\":0,\"ts\":\"", 14), 0);
	CU_ASSERT(strlen(data) > strlen(tail) &&
	    strcmp(data + strlen(data) - strlen(tail), tail) == 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(data, ",\"prev\":\"" "0000000000000000"));
	CU_ASSERT_PTR_NULL(strstr(data, "then"));
	CU_ASSERT_PTR_NULL(strstr(data, "none"));
	/* ":99", not "99": the timestamp's fraction may hold a 99. */
	CU_ASSERT_PTR_NULL(strstr(data, ":99"));
	nl = strchr(second, '\n');
	CU_ASSERT_PTR_NOT_NULL_FATAL(nl);
	*nl = '\0';
	line = json_loads(second, 0, NULL);
	CU_ASSERT_PTR_NOT_NULL(line);
	CU_ASSERT_EQUAL(json_object_size(line), 3);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(line, "seq")), 1);
	CU_ASSERT_EQUAL(strncmp(second, "{\"seq\":1,\"ts\":\"", 14), 0);
	json_decref(line);
	free(data);
}

static void
test_segments(void)
{
	struct audit *a = NULL;
	struct chain ch;
	char d[300], prev[65];
	size_t nseg;
	uint64_t i, next;

	new_dir(d, sizeof(d));
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	/* About four records a segment. */
	audit_set_segment_bytes(a, 1000);
	for (i = 0; i < 40; i++)
		append(a, "wrap", i);
	audit_head(a, &next, prev);
	CU_ASSERT_EQUAL(next, 40);
	audit_free(a);

	/* The chain runs on across files: the first record of a segment
	 * links to the last record of the one before. */
	verify_dir(d, &ch, &nseg);
	CU_ASSERT_EQUAL(ch.n, 40);
	CU_ASSERT_EQUAL(ch.bad_seq, UINT64_MAX);
	CU_ASSERT(nseg >= 5);
	CU_ASSERT_STRING_EQUAL(ch.last_hash, prev);
	chain_clear(&ch);

	/* Reopening picks the newest segment and goes on from its end. */
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	audit_head(a, &next, prev);
	CU_ASSERT_EQUAL(next, 40);
	audit_set_segment_bytes(a, 1000);
	for (i = 40; i < 50; i++)
		append(a, "unwrap", i);
	audit_free(a);
	verify_dir(d, &ch, &nseg);
	CU_ASSERT_EQUAL(ch.n, 50);
	CU_ASSERT_EQUAL(ch.bad_seq, UINT64_MAX);
	chain_clear(&ch);

	/* A torn tail in the newest segment is cut there, and the
	 * recovery record still links into the chain. */
	{
		char newest[600], name[300];
		struct dirent *de;
		DIR *dd = opendir(d);

		CU_ASSERT_PTR_NOT_NULL_FATAL(dd);
		name[0] = '\0';
		while ((de = readdir(dd)) != NULL)
			if (strncmp(de->d_name, "audit-", 6) == 0 &&
			    strcmp(de->d_name, name) > 0)
				snprintf(name, sizeof(name), "%s", de->d_name);
		closedir(dd);
		snprintf(newest, sizeof(newest), "%s/%s", d, name);
		CU_ASSERT_EQUAL_FATAL(ut_write_file(newest, "a", "{\"seq\":50,", 10),
		    0);
	}
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	audit_free(a);
	verify_dir(d, &ch, &nseg);
	CU_ASSERT_EQUAL(ch.n, 51);
	CU_ASSERT_EQUAL(ch.bad_seq, UINT64_MAX);
	CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(ch.last, "op")),
	    "recovery");
	chain_clear(&ch);
}

struct scan_seen {
	uint64_t first, last;
	size_t n;
	int bad;
	const char *data;	/* the concatenated log, to compare lines */
};

static int
scan_cb(void *arg, uint64_t seq, const char *line, size_t len)
{
	struct scan_seen *s = arg;
	char head[40];
	int hlen = snprintf(head, sizeof(head), "{\"seq\":%llu,",
	    (unsigned long long)seq);

	if (s->n == 0)
		s->first = seq;
	else if (seq != s->last + 1)
		s->bad++;
	if (len <= (size_t)hlen || memcmp(line, head, (size_t)hlen) != 0 ||
	    line[len - 1] != '}' || memchr(line, '\n', len) != NULL)
		s->bad++;
	s->last = seq;
	s->n++;
	return 0;
}

static int
scan_stop_cb(void *arg, uint64_t seq, const char *line, size_t len)
{
	(void)line;
	(void)len;
	(void)seq;
	return ++*(size_t *)arg >= 3;
}

/* Removes the `k`-th segment file (name order) of `dir`. */
static void
remove_segment(const char *dir, size_t k)
{
	struct dirent **list = NULL;
	char path[700];
	int n, i;
	size_t seen = 0;

	n = scandir(dir, &list, NULL, alphasort);
	for (i = 0; i < n; i++) {
		if (strncmp(list[i]->d_name, "audit-", 6) == 0 && seen++ == k) {
			snprintf(path, sizeof(path), "%s/%s", dir, list[i]->d_name);
			CU_ASSERT_EQUAL(unlink(path), 0);
		}
		free(list[i]);
	}
	free(list);
}

static void
test_missing_middle_segment(void)
{
	struct audit *a = NULL;
	char d[300];
	uint64_t i;

	new_dir(d, sizeof(d));
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	audit_set_segment_bytes(a, 1000);
	for (i = 0; i < 40; i++)
		append(a, "wrap", i);
	audit_free(a);
	a = NULL;
	/* Intact: it opens. */
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	audit_free(a);
	a = NULL;
	/* A segment gone from the middle: refused at start. */
	remove_segment(d, 2);
	CU_ASSERT_EQUAL(audit_open(d, &a), KM_ERR_AUDIT);
	CU_ASSERT_PTR_NULL(a);
}

static void
test_scan(void)
{
	struct audit *a = NULL;
	struct scan_seen s;
	char d[300];
	size_t stops = 0;
	uint64_t i;

	new_dir(d, sizeof(d));
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	audit_set_segment_bytes(a, 1500);
	for (i = 0; i < 30; i++)
		append(a, "wrap", i);

	/* A range inside, across segment boundaries. */
	memset(&s, 0, sizeof(s));
	CU_ASSERT_EQUAL(audit_scan(a, 7, 22, scan_cb, &s), KM_OK);
	CU_ASSERT_EQUAL(s.n, 16);
	CU_ASSERT_EQUAL(s.first, 7);
	CU_ASSERT_EQUAL(s.last, 22);
	CU_ASSERT_EQUAL(s.bad, 0);
	/* Everything; a `to` past the end stops at the head. */
	memset(&s, 0, sizeof(s));
	CU_ASSERT_EQUAL(audit_scan(a, 0, UINT64_MAX, scan_cb, &s), KM_OK);
	CU_ASSERT_EQUAL(s.n, 30);
	CU_ASSERT_EQUAL(s.first, 0);
	CU_ASSERT_EQUAL(s.last, 29);
	CU_ASSERT_EQUAL(s.bad, 0);
	/* Nothing. */
	memset(&s, 0, sizeof(s));
	CU_ASSERT_EQUAL(audit_scan(a, 30, 100, scan_cb, &s), KM_OK);
	CU_ASSERT_EQUAL(s.n, 0);
	/* A non-zero return stops the scan. */
	CU_ASSERT_EQUAL(audit_scan(a, 0, 29, scan_stop_cb, &stops), KM_OK);
	CU_ASSERT_EQUAL(stops, 3);
	audit_free(a);
}

/* A stand-in for the token: the "signature" is SHA-256 of the message,
 * and every signed text is kept so the test can read it back. */
struct fake_signer {
	int calls;
	int fail;
	char texts[8][512];
};

static int
fake_sign(void *arg, const unsigned char *msg, size_t msg_len,
    unsigned char **sig, size_t *sig_len)
{
	struct fake_signer *f = arg;

	*sig = NULL;
	*sig_len = 0;
	if (f->fail)
		return KM_ERR_HSM;
	if (f->calls < 8)
		snprintf(f->texts[f->calls], sizeof(f->texts[0]), "%.*s",
		    (int)msg_len, (const char *)msg);
	f->calls++;
	if ((*sig = malloc(SHA256_DIGEST_LENGTH)) == NULL)
		return KM_ERR_NOMEM;
	SHA256(msg, msg_len, *sig);
	*sig_len = SHA256_DIGEST_LENGTH;
	return KM_OK;
}

/* hex SHA-256 of line `seq` of the single segment of `dir`. */
static void
line_hash(const char *dir, uint64_t seq, char out[65])
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	char *data, *line, *nl;
	size_t len;
	uint64_t i;

	out[0] = '\0';
	data = ut_read_file(seg_path(dir), &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(data);
	for (line = data, i = 0; (nl = strchr(line, '\n')) != NULL;
	    line = nl + 1, i++) {
		if (i == seq) {
			SHA256((unsigned char *)line, (size_t)(nl - line), md);
			km_hex(md, sizeof(md), out);
			break;
		}
	}
	free(data);
}

static void
test_checkpoints(void)
{
	static struct fake_signer f;
	struct audit *a = NULL;
	char d[300], cpath[400], hash[65], text[512], *data, *line, *nl;
	size_t len, n;
	uint64_t i;
	json_t *cp;

	new_dir(d, sizeof(d));
	snprintf(cpath, sizeof(cpath), "%s/checkpoints.jsonl", d);
	memset(&f, 0, sizeof(f));
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	CU_ASSERT_PTR_NULL(audit_last_checkpoint(a));
	CU_ASSERT_EQUAL_FATAL(audit_set_signer(a, fake_sign, &f, "kid-1",
	    "origin-x", 5, 3600), KM_OK);
	/* Nothing to seal yet. */
	CU_ASSERT_EQUAL(audit_checkpoint(a), KM_OK);
	CU_ASSERT_EQUAL(f.calls, 0);
	/* Every 5 records a checkpoint: seq 4 and 9. */
	for (i = 0; i < 12; i++)
		append(a, "wrap", i);
	CU_ASSERT_EQUAL(f.calls, 2);
	/* One now seals the head (seq 11); another adds nothing. */
	CU_ASSERT_EQUAL(audit_checkpoint(a), KM_OK);
	CU_ASSERT_EQUAL(audit_checkpoint(a), KM_OK);
	CU_ASSERT_EQUAL_FATAL(f.calls, 3);
	cp = audit_last_checkpoint(a);
	CU_ASSERT_PTR_NOT_NULL_FATAL(cp);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(cp, "seq")), 11);
	json_decref(cp);

	/* A signer failure is reported and writes nothing. */
	f.fail = 1;
	append(a, "wrap", 12);
	CU_ASSERT_EQUAL(audit_checkpoint(a), KM_ERR_HSM);
	f.fail = 0;
	audit_free(a);

	/* checkpoints.jsonl: {seq, hash, ts, kid, sig} per line, hash the
	 * sealed line's, sig over DESIGN.md section 5's text. */
	data = ut_read_file(cpath, &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(data);
	for (line = data, n = 0; (nl = strchr(line, '\n')) != NULL;
	    line = nl + 1, n++) {
		static const uint64_t want_seq[] = { 4, 9, 11 };
		unsigned char md[SHA256_DIGEST_LENGTH], *sig = NULL;
		size_t sig_len = 0;
		json_t *j = json_loadb(line, (size_t)(nl - line), 0, NULL);
		const char *ts = json_string_value(json_object_get(j, "ts"));
		const char *sig_b64 = json_string_value(json_object_get(j, "sig"));

		CU_ASSERT_PTR_NOT_NULL_FATAL(j);
		CU_ASSERT_FATAL(n < 3);
		CU_ASSERT_EQUAL(json_object_size(j), 5);
		CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "seq")),
		    (json_int_t)want_seq[n]);
		line_hash(d, want_seq[n], hash);
		CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j,
		    "hash")), hash);
		CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j,
		    "kid")), "kid-1");
		CU_ASSERT_PTR_NOT_NULL_FATAL(ts);
		snprintf(text, sizeof(text), "kms-audit-checkpoint/v1\norigin-x\n"
		    "%llu\n%s\n%s\n", (unsigned long long)want_seq[n], hash, ts);
		CU_ASSERT_STRING_EQUAL(f.texts[n], text);
		CU_ASSERT_PTR_NOT_NULL_FATAL(sig_b64);
		CU_ASSERT_EQUAL_FATAL(km_b64_decode(sig_b64, strlen(sig_b64), &sig,
		    &sig_len), KM_OK);
		SHA256((unsigned char *)text, strlen(text), md);
		UT_ASSERT_BYTES(sig, sig_len, md, sizeof(md));
		km_secure_free(sig, sig_len);
		json_decref(j);
	}
	CU_ASSERT_EQUAL(n, 3);
	free(data);

	/* Intact: reopens, and knows its newest checkpoint. */
	CU_ASSERT_EQUAL_FATAL(audit_open(d, &a), KM_OK);
	cp = audit_last_checkpoint(a);
	CU_ASSERT_PTR_NOT_NULL(cp);
	CU_ASSERT_EQUAL(json_integer_value(json_object_get(cp, "seq")), 11);
	json_decref(cp);
	audit_free(a);

	/* A record under the newest checkpoint rewritten (same length,
	 * still valid JSON): refused. */
	data = ut_read_file(seg_path(d), &len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(data);
	{
		char *orig = strdup(data), *p11, *op;

		CU_ASSERT_PTR_NOT_NULL_FATAL(orig);
		p11 = strstr(data, "{\"seq\":11,");
		CU_ASSERT_PTR_NOT_NULL_FATAL(p11);
		op = strstr(p11, "\"op\":\"wrap\"");
		CU_ASSERT_PTR_NOT_NULL_FATAL(op);
		op[7] = 'R';
		CU_ASSERT_EQUAL_FATAL(ut_write_file(seg_path(d), "w", data, len), 0);
		a = (struct audit *)1;
		CU_ASSERT_EQUAL(audit_open(d, &a), KM_ERR_AUDIT);
		CU_ASSERT_PTR_NULL(a);

		/* Cut back to before the checkpointed seq 11 (log shorter
		 * than the newest checkpoint): refused. */
		*p11 = '\0';
		CU_ASSERT_EQUAL_FATAL(ut_write_file(seg_path(d), "w", orig,
		    (size_t)(p11 - data)), 0);
		a = (struct audit *)1;
		CU_ASSERT_EQUAL(audit_open(d, &a), KM_ERR_AUDIT);
		CU_ASSERT_PTR_NULL(a);

		/* Put back as it was: accepted again. */
		CU_ASSERT_EQUAL_FATAL(ut_write_file(seg_path(d), "w", orig, len),
		    0);
		CU_ASSERT_EQUAL(audit_open(d, &a), KM_OK);
		audit_free(a);
		free(orig);
	}
	free(data);
}

static void
test_open_errors(void)
{
	struct audit *a;
	char d[300], f[400];

	/* The directory cannot be created: its parent is a file. */
	new_dir(d, sizeof(d));
	CU_ASSERT_EQUAL_FATAL(ut_write_file(d, "w", "x", 1), 0);
	snprintf(f, sizeof(f), "%s/sub", d);
	a = (struct audit *)1;
	CU_ASSERT_EQUAL(audit_open(f, &a), KM_ERR_AUDIT);
	CU_ASSERT_PTR_NULL(a);
}

int
main(void)
{
	static const struct ut_test tests[] = {
		{ "records form a hash chain", test_chain },
		{ "reopen continues seq and chain", test_reopen },
		{ "torn last line is cut and recorded", test_torn_tail },
		{ "garbage last line is refused", test_garbage_tail },
		{ "unchained last line is refused", test_unchained_tail },
		{ "8 threads x 200 appends", test_concurrent },
		{ "line layout: writer's fields first", test_line_layout },
		{ "segments continue the chain", test_segments },
		{ "racing writers roll a segment once", test_concurrent_roll },
		{ "a missing middle segment is refused", test_missing_middle_segment },
		{ "scan by seq range", test_scan },
		{ "signed checkpoints", test_checkpoints },
		{ "open errors", test_open_errors },
		{ NULL, NULL },
	};

	return ut_main("audit", suite_init, suite_clean, tests);
}
