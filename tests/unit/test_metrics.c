/* Unit tests of service/metrics.c: the text format of every line (HELP and
 * TYPE before samples, names, labels, values), histogram invariants, the
 * op and status registry, and counters that move. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "api.h"
#include "metrics.h"
#include "unit.h"

/* 1 when `s` is a metric name: [a-zA-Z_:][a-zA-Z0-9_:]*. */
static int
is_name(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
		return 0;
	for (i = 1; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':'))
			return 0;
	return 1;
}

/* Checks one sample line: name{label="value",...} value. Returns the
 * name length, 0 when malformed. */
static size_t
check_sample(const char *line, double *value)
{
	const char *p = line, *q;
	size_t n;
	char *end;

	while (isalnum((unsigned char)*p) || *p == '_' || *p == ':')
		p++;
	n = (size_t)(p - line);
	if (!is_name(line, n))
		return 0;
	if (*p == '{') {
		p++;
		while (*p != '}') {
			q = p;
			while (isalnum((unsigned char)*p) || *p == '_')
				p++;
			if (p == q || *p != '=' || p[1] != '"')
				return 0;
			p += 2;
			while (*p != '"') {
				if (*p == '\0' || *p == '\n')
					return 0;
				if (*p == '\\') {
					if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
						return 0;
					p++;
				}
				p++;
			}
			p++;
			if (*p == ',')
				p++;
			else if (*p != '}')
				return 0;
		}
		p++;
	}
	if (*p != ' ')
		return 0;
	p++;
	if (strcmp(p, "+Inf") == 0 || strcmp(p, "-Inf") == 0 ||
	    strcmp(p, "NaN") == 0) {
		*value = 0;
		return n;
	}
	*value = strtod(p, &end);
	return *end == '\0' && end != p ? n : 0;
}

/* Every line valid; every sample's family (name without _bucket, _sum,
 * _count for histograms) announced by HELP and TYPE before it. */
static int
check_exposition(const char *text)
{
	char *copy = strdup(text), *line, *save = NULL;
	char families[256][128], types[256][16];
	size_t nf = 0, i, n;
	int bad = 0, lineno = 0;
	double v;

	CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
	CU_ASSERT(text[strlen(text) - 1] == '\n');
	for (line = strtok_r(copy, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		lineno++;
		if (strncmp(line, "# HELP ", 7) == 0) {
			n = strcspn(line + 7, " ");
			if (!is_name(line + 7, n) || line[7 + n] != ' ' ||
			    line[8 + n] == '\0' || nf >= 256) {
				bad++;
				continue;
			}
			snprintf(families[nf], sizeof(families[nf]), "%.*s", (int)n,
			    line + 7);
			types[nf][0] = '\0';
			nf++;
			continue;
		}
		if (strncmp(line, "# TYPE ", 7) == 0) {
			n = strcspn(line + 7, " ");
			if (nf == 0 || strncmp(families[nf - 1], line + 7, n) != 0 ||
			    (strcmp(line + 8 + n, "counter") != 0 &&
			    strcmp(line + 8 + n, "gauge") != 0 &&
			    strcmp(line + 8 + n, "histogram") != 0)) {
				bad++;
				continue;
			}
			snprintf(types[nf - 1], sizeof(types[nf - 1]), "%s",
			    line + 8 + n);
			continue;
		}
		if (line[0] == '#') {
			bad++;
			continue;
		}
		if ((n = check_sample(line, &v)) == 0) {
			fprintf(stderr, "\n  bad line %d: %s\n", lineno, line);
			bad++;
			continue;
		}
		for (i = 0; i < nf; i++) {
			size_t fl = strlen(families[i]);

			if (fl == n && strncmp(families[i], line, n) == 0 &&
			    types[i][0] != '\0')
				break;
			if (strcmp(types[i], "histogram") == 0 && n > fl &&
			    strncmp(families[i], line, fl) == 0 &&
			    (strncmp(line + fl, "_bucket", n - fl) == 0 ||
			    strncmp(line + fl, "_sum", n - fl) == 0 ||
			    strncmp(line + fl, "_count", n - fl) == 0))
				break;
		}
		if (i == nf) {
			fprintf(stderr, "\n  no HELP/TYPE before: %s\n", line);
			bad++;
		}
	}
	free(copy);
	return bad;
}

static double
sample(const char *text, const char *series)
{
	const char *p = text;
	size_t n = strlen(series);

	while ((p = strstr(p, series)) != NULL) {
		if ((p == text || p[-1] == '\n') && p[n] == ' ')
			return strtod(p + n + 1, NULL);
		p += n;
	}
	return NAN;
}

static void
test_format_and_counters(void)
{
	static const char *const ops[] = { "wrap", "key.rotate", "wrap", NULL };
	struct api_ctx ctx;
	struct metrics *m = NULL;
	char *text = NULL;
	size_t len = 0;

	memset(&ctx, 0, sizeof(ctx));
	CU_ASSERT_EQUAL_FATAL(metrics_new(ops, 3, &m), KM_OK);
	ctx.metrics = m;
	metrics_request(m, "wrap", 200, 300000, 1, 0);		/* 0.3 ms */
	metrics_request(m, "wrap", 200, 20000000, 500, 2);	/* 20 ms */
	metrics_request(m, "wrap", 409, 1000000, 1, 1);
	metrics_request(m, "key.rotate", 200, 7000000, 0, 0);
	metrics_request(m, "nonsense", 418, 1, 0, 0);		/* other/other */
	metrics_request(m, NULL, 200, 1, 0, 0);
	metrics_rotation(m, "ok");
	metrics_rotation(m, "failed");
	metrics_rotation(m, "bogus");
	metrics_alert(m, "expiry", 7 * 86400);
	metrics_alert(m, "expired", 0);
	metrics_scheduler_run(m, 1893456000LL * 1000000);
	CU_ASSERT_EQUAL_FATAL(metrics_render(m, &ctx, 0, 10, &text, &len), KM_OK);
	CU_ASSERT_EQUAL(strlen(text), len);
	CU_ASSERT_EQUAL(check_exposition(text), 0);
	CU_ASSERT_EQUAL(sample(text,
	    "kmsd_http_requests_total{op=\"wrap\",status=\"200\"}"), 2);
	CU_ASSERT_EQUAL(sample(text,
	    "kmsd_http_requests_total{op=\"wrap\",status=\"409\"}"), 1);
	CU_ASSERT_EQUAL(sample(text,
	    "kmsd_http_requests_total{op=\"other\",status=\"other\"}"), 1);
	CU_ASSERT_EQUAL(sample(text,
	    "kmsd_http_requests_total{op=\"other\",status=\"200\"}"), 1);
	/* Cumulative buckets: 0.3 ms in le=0.0005, 20 ms first in 0.025. */
	CU_ASSERT_EQUAL(sample(text, "kmsd_http_request_duration_seconds_bucket"
	    "{op=\"wrap\",status=\"200\",le=\"0.0005\"}"), 1);
	CU_ASSERT_EQUAL(sample(text, "kmsd_http_request_duration_seconds_bucket"
	    "{op=\"wrap\",status=\"200\",le=\"0.01\"}"), 1);
	CU_ASSERT_EQUAL(sample(text, "kmsd_http_request_duration_seconds_bucket"
	    "{op=\"wrap\",status=\"200\",le=\"0.025\"}"), 2);
	CU_ASSERT_EQUAL(sample(text, "kmsd_http_request_duration_seconds_bucket"
	    "{op=\"wrap\",status=\"200\",le=\"+Inf\"}"), 2);
	CU_ASSERT_EQUAL(sample(text, "kmsd_http_request_duration_seconds_count"
	    "{op=\"wrap\",status=\"200\"}"), 2);
	CU_ASSERT(fabs(sample(text, "kmsd_http_request_duration_seconds_sum"
	    "{op=\"wrap\",status=\"200\"}") - 0.0203) < 1e-9);
	CU_ASSERT_EQUAL(sample(text,
	    "kmsd_crypto_items_total{op=\"wrap\",outcome=\"ok\"}"), 499);
	CU_ASSERT_EQUAL(sample(text,
	    "kmsd_crypto_items_total{op=\"wrap\",outcome=\"error\"}"), 3);
	CU_ASSERT_EQUAL(sample(text,
	    "kmsd_scheduler_rotations_total{result=\"ok\"}"), 1);
	CU_ASSERT_EQUAL(sample(text,
	    "kmsd_scheduler_rotations_total{result=\"failed\"}"), 1);
	CU_ASSERT_EQUAL(sample(text,
	    "kmsd_expiry_alerts_total{threshold=\"7d\"}"), 1);
	CU_ASSERT_EQUAL(sample(text,
	    "kmsd_expiry_alerts_total{threshold=\"0d\"}"), 1);
	CU_ASSERT_EQUAL(sample(text, "kmsd_scheduler_last_run_timestamp_seconds"),
	    1893456000.0);
	/* Without a token, store and log: not ready, everything else 0. */
	CU_ASSERT_EQUAL(sample(text, "kmsd_ready"), 0);
	CU_ASSERT_EQUAL(sample(text, "kmsd_ceremonies_pending"), 0);
	free(text);
	metrics_free(m);
	metrics_free(NULL);
	metrics_request(NULL, "wrap", 200, 1, 1, 0);	/* no-ops */
	metrics_rotation(NULL, "ok");
}

static int
pending_source(void *arg, uint64_t *n)
{
	*n = *(uint64_t *)arg;
	return KM_OK;
}

static void
test_ceremonies_source(void)
{
	struct api_ctx ctx;
	struct metrics *m = NULL;
	uint64_t pending = 3;
	char *text = NULL;
	size_t len;

	memset(&ctx, 0, sizeof(ctx));
	CU_ASSERT_EQUAL_FATAL(metrics_new(NULL, 0, &m), KM_OK);
	metrics_set_ceremonies_source(m, pending_source, &pending);
	CU_ASSERT_EQUAL_FATAL(metrics_render(m, &ctx, 0, 10, &text, &len), KM_OK);
	CU_ASSERT_EQUAL(sample(text, "kmsd_ceremonies_pending"), 3);
	CU_ASSERT_EQUAL(check_exposition(text), 0);
	free(text);
	metrics_free(m);
}

int
main(void)
{
	static const struct ut_test tests[] = {
		{ "text format and counters", test_format_and_counters },
		{ "pending ceremonies come from the source", test_ceremonies_source },
		{ NULL, NULL },
	};

	return ut_main("metrics", NULL, NULL, tests);
}
