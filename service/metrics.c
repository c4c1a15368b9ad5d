/* Prometheus metrics: atomic request counters, and a text rendering that
 * reads the store, the audit log and the token at scrape time. */
#include "metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "audit.h"
#include "hsm.h"
#include "kmsd_version.h"
#include "store.h"
#include "usage.h"

/* Operations beyond this many count as "other". */
#define METRICS_MAX_OPS		64
/* A scrape larger than this is cut off with an error (16 MiB; with the
 * default per-key limit a scrape is well under 1 MiB). */
#define METRICS_MAX_BYTES	(16u << 20)

/* Latency buckets in seconds (upper bounds); +Inf is implicit. */
static const double bucket_le[] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
	2.5, 5, 10,
};
#define N_BUCKETS (sizeof(bucket_le) / sizeof(bucket_le[0]))

/* Status codes kmsd answers with; anything else counts as "other". */
static const int statuses[] = {
	200, 201, 304, 400, 401, 403, 404, 405, 409, 413, 429, 500, 503,
};
#define N_STATUS (sizeof(statuses) / sizeof(statuses[0]) + 1)

static const char *const rotation_results[] = { "ok", "failed", "lost_race" };
#define N_ROT (sizeof(rotation_results) / sizeof(rotation_results[0]))

static const char *const alert_kinds[] = { "expiry", "expired",
	"rotation_failed" };
#define N_KINDS (sizeof(alert_kinds) / sizeof(alert_kinds[0]))
static const int64_t thresholds[] = { 30 * 86400, 7 * 86400, 86400, 0 };
static const char *const threshold_names[] = { "30d", "7d", "1d", "0d" };
#define N_THRESH (sizeof(thresholds) / sizeof(thresholds[0]))

struct cell {
	atomic_uint_fast64_t count;
	atomic_uint_fast64_t sum_ns;
	atomic_uint_fast64_t buckets[N_BUCKETS];	/* non-cumulative */
};

struct metrics {
	const char *ops[METRICS_MAX_OPS + 1];	/* the last is "other" */
	size_t n_ops;
	struct cell cells[METRICS_MAX_OPS + 1][N_STATUS];
	atomic_uint_fast64_t items_ok[METRICS_MAX_OPS + 1];
	atomic_uint_fast64_t items_failed[METRICS_MAX_OPS + 1];
	atomic_uint_fast64_t rotations[N_ROT];
	atomic_uint_fast64_t alerts[N_KINDS];
	atomic_uint_fast64_t expiry_alerts[N_THRESH];
	atomic_uint_fast64_t sched_runs;
	atomic_int_fast64_t sched_last_run_us;
	int64_t start_us;
	int (*ceremonies_fn)(void *arg, uint64_t *n);
	void *ceremonies_arg;
};

int
metrics_new(const char *const *ops, size_t n_ops, struct metrics **out)
{
	struct metrics *m;
	size_t i, j;

	*out = NULL;
	if ((m = calloc(1, sizeof(*m))) == NULL)
		return KM_ERR_NOMEM;
	for (i = 0; i < n_ops && m->n_ops < METRICS_MAX_OPS; i++) {
		if (ops[i] == NULL)
			continue;
		for (j = 0; j < m->n_ops; j++)
			if (strcmp(m->ops[j], ops[i]) == 0)
				break;
		if (j == m->n_ops)
			m->ops[m->n_ops++] = ops[i];
	}
	m->ops[m->n_ops] = "other";
	m->start_us = km_now_us();
	*out = m;
	return KM_OK;
}

void
metrics_free(struct metrics *m)
{
	free(m);
}

int64_t
metrics_monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The registry never changes after metrics_new, so lookups need no lock. */
static size_t
op_index(const struct metrics *m, const char *op)
{
	size_t i;

	if (op == NULL)
		return m->n_ops;
	for (i = 0; i < m->n_ops; i++)
		if (m->ops[i] == op || strcmp(m->ops[i], op) == 0)
			return i;
	return m->n_ops;
}

static size_t
status_index(int status)
{
	size_t i;

	for (i = 0; i < N_STATUS - 1; i++)
		if (statuses[i] == status)
			return i;
	return N_STATUS - 1;
}

void
metrics_request(struct metrics *m, const char *op, int status,
    int64_t elapsed_ns, long items, long failed_items)
{
	struct cell *c;
	size_t o, b;

	if (m == NULL)
		return;
	if (elapsed_ns < 0)
		elapsed_ns = 0;
	o = op_index(m, op);
	c = &m->cells[o][status_index(status)];
	for (b = 0; b < N_BUCKETS; b++)
		if ((double)elapsed_ns <= bucket_le[b] * 1e9)
			break;
	atomic_fetch_add_explicit(&c->count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&c->sum_ns, (uint64_t)elapsed_ns,
	    memory_order_relaxed);
	if (b < N_BUCKETS)
		atomic_fetch_add_explicit(&c->buckets[b], 1, memory_order_relaxed);
	if (items > 0) {
		if (failed_items < 0)
			failed_items = 0;
		if (failed_items > items)
			failed_items = items;
		atomic_fetch_add_explicit(&m->items_ok[o],
		    (uint64_t)(items - failed_items), memory_order_relaxed);
		atomic_fetch_add_explicit(&m->items_failed[o],
		    (uint64_t)failed_items, memory_order_relaxed);
	}
}

void
metrics_rotation(struct metrics *m, const char *result)
{
	size_t i;

	if (m == NULL || result == NULL)
		return;
	for (i = 0; i < N_ROT; i++)
		if (strcmp(rotation_results[i], result) == 0)
			atomic_fetch_add_explicit(&m->rotations[i], 1,
			    memory_order_relaxed);
}

void
metrics_alert(struct metrics *m, const char *kind, int64_t threshold)
{
	size_t i;

	if (m == NULL || kind == NULL)
		return;
	for (i = 0; i < N_KINDS; i++)
		if (strcmp(alert_kinds[i], kind) == 0)
			atomic_fetch_add_explicit(&m->alerts[i], 1,
			    memory_order_relaxed);
	if (strcmp(kind, "rotation_failed") == 0)
		return;
	for (i = 0; i < N_THRESH; i++)
		if (thresholds[i] == threshold)
			atomic_fetch_add_explicit(&m->expiry_alerts[i], 1,
			    memory_order_relaxed);
}

void
metrics_scheduler_run(struct metrics *m, int64_t at_us)
{
	if (m == NULL)
		return;
	atomic_fetch_add_explicit(&m->sched_runs, 1, memory_order_relaxed);
	atomic_store_explicit(&m->sched_last_run_us, at_us, memory_order_relaxed);
}

void
metrics_set_ceremonies_source(struct metrics *m,
    int (*fn)(void *arg, uint64_t *n), void *arg)
{
	if (m == NULL)
		return;
	m->ceremonies_fn = fn;
	m->ceremonies_arg = arg;
}

/* ---- rendering ---- */

static void
out_fmt(struct km_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
out_fmt(struct km_buf *b, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line)) {
		b->failed = 1;
		return;
	}
	km_buf_append(b, line, (size_t)n);
}

static void
family(struct km_buf *b, const char *name, const char *type, const char *help)
{
	out_fmt(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value with \, " and newline escaped (text format 0.0.4). Key
 * names cannot hold them, but the writer must not depend on that. */
static const char *
label(const char *s, char *buf, size_t len)
{
	size_t o = 0;

	for (; *s != '\0' && o + 3 < len; s++) {
		if (*s == '\\' || *s == '"') {
			buf[o++] = '\\';
			buf[o++] = *s;
		} else if (*s == '\n') {
			buf[o++] = '\\';
			buf[o++] = 'n';
		} else
			buf[o++] = *s;
	}
	buf[o] = '\0';
	return buf;
}

static double
seconds(int64_t us)
{
	return (double)us / 1e6;
}

static void
render_requests(struct metrics *m, struct km_buf *b)
{
	size_t o, s, k;
	char st[16], l[256];
	uint64_t count, cum;

	family(b, "kmsd_http_requests_total", "counter",
	    "HTTP requests answered, by operation and status.");
	for (o = 0; o <= m->n_ops; o++) {
		for (s = 0; s < N_STATUS; s++) {
			count = atomic_load_explicit(&m->cells[o][s].count,
			    memory_order_relaxed);
			if (count == 0)
				continue;
			if (s < N_STATUS - 1)
				snprintf(st, sizeof(st), "%d", statuses[s]);
			else
				snprintf(st, sizeof(st), "other");
			out_fmt(b, "kmsd_http_requests_total{op=\"%s\",status=\"%s\"}"
			    " %" PRIu64 "\n", label(m->ops[o], l, sizeof(l)), st,
			    count);
		}
	}
	family(b, "kmsd_http_request_duration_seconds", "histogram",
	    "Time from routing to the answer (audit record included), by "
	    "operation and status.");
	for (o = 0; o <= m->n_ops; o++) {
		for (s = 0; s < N_STATUS; s++) {
			struct cell *c = &m->cells[o][s];

			count = atomic_load_explicit(&c->count, memory_order_relaxed);
			if (count == 0)
				continue;
			if (s < N_STATUS - 1)
				snprintf(st, sizeof(st), "%d", statuses[s]);
			else
				snprintf(st, sizeof(st), "other");
			label(m->ops[o], l, sizeof(l));
			cum = 0;
			for (k = 0; k < N_BUCKETS; k++) {
				cum += atomic_load_explicit(&c->buckets[k],
				    memory_order_relaxed);
				/* Counters move while we read: keep the
				 * buckets monotonic and within the count. */
				if (cum > count)
					cum = count;
				out_fmt(b, "kmsd_http_request_duration_seconds_bucket"
				    "{op=\"%s\",status=\"%s\",le=\"%g\"} %" PRIu64 "\n",
				    l, st, bucket_le[k], cum);
			}
			out_fmt(b, "kmsd_http_request_duration_seconds_bucket"
			    "{op=\"%s\",status=\"%s\",le=\"+Inf\"} %" PRIu64 "\n",
			    l, st, count);
			out_fmt(b, "kmsd_http_request_duration_seconds_sum"
			    "{op=\"%s\",status=\"%s\"} %.9f\n", l, st,
			    (double)atomic_load_explicit(&c->sum_ns,
			    memory_order_relaxed) / 1e9);
			out_fmt(b, "kmsd_http_request_duration_seconds_count"
			    "{op=\"%s\",status=\"%s\"} %" PRIu64 "\n", l, st, count);
		}
	}
	family(b, "kmsd_crypto_items_total", "counter",
	    "Envelope items (single requests and batch items) by operation "
	    "and outcome; rewrap items are the server side of kmsctl rewrap.");
	for (o = 0; o <= m->n_ops; o++) {
		uint64_t ok = atomic_load_explicit(&m->items_ok[o],
		    memory_order_relaxed);
		uint64_t bad = atomic_load_explicit(&m->items_failed[o],
		    memory_order_relaxed);

		if (ok == 0 && bad == 0)
			continue;
		label(m->ops[o], l, sizeof(l));
		out_fmt(b, "kmsd_crypto_items_total{op=\"%s\",outcome=\"ok\"} %"
		    PRIu64 "\n", l, ok);
		out_fmt(b, "kmsd_crypto_items_total{op=\"%s\",outcome=\"error\"} %"
		    PRIu64 "\n", l, bad);
	}
}

static void
render_scheduler(struct metrics *m, struct km_buf *b)
{
	size_t i;

	family(b, "kmsd_scheduler_rotations_total", "counter",
	    "Scheduled rotations by result: ok, failed (audited, retried with "
	    "backoff), lost_race (another instance or an admin rotated first).");
	for (i = 0; i < N_ROT; i++)
		out_fmt(b, "kmsd_scheduler_rotations_total{result=\"%s\"} %"
		    PRIu64 "\n", rotation_results[i],
		    (uint64_t)atomic_load(&m->rotations[i]));
	family(b, "kmsd_alerts_raised_total", "counter",
	    "Alerts raised by this process (each is also an audit record and "
	    "an entry of GET /v1/alerts), by kind.");
	for (i = 0; i < N_KINDS; i++)
		out_fmt(b, "kmsd_alerts_raised_total{kind=\"%s\"} %" PRIu64 "\n",
		    alert_kinds[i], (uint64_t)atomic_load(&m->alerts[i]));
	family(b, "kmsd_expiry_alerts_total", "counter",
	    "Expiry alerts raised by this process, by threshold before "
	    "expires_at (0d: expired).");
	for (i = 0; i < N_THRESH; i++)
		out_fmt(b, "kmsd_expiry_alerts_total{threshold=\"%s\"} %" PRIu64
		    "\n", threshold_names[i],
		    (uint64_t)atomic_load(&m->expiry_alerts[i]));
	family(b, "kmsd_scheduler_runs_total", "counter",
	    "Scheduler passes (about one a second).");
	out_fmt(b, "kmsd_scheduler_runs_total %" PRIu64 "\n",
	    (uint64_t)atomic_load(&m->sched_runs));
	family(b, "kmsd_scheduler_last_run_timestamp_seconds", "gauge",
	    "When the scheduler last ran (0: never).");
	out_fmt(b, "kmsd_scheduler_last_run_timestamp_seconds %.3f\n",
	    seconds(atomic_load(&m->sched_last_run_us)));
}

static void
render_process(struct metrics *m, struct api_ctx *ctx, struct km_buf *b)
{
	uint64_t records = 0, fsyncs = 0, failures = 0, pending = 0;
	size_t in_use = 0, size = 0;
	int token, st, au;

	family(b, "kmsd_build_info", "gauge", "Always 1; the version label.");
	out_fmt(b, "kmsd_build_info{version=\"%s\"} 1\n", KMSD_VERSION);
	family(b, "process_start_time_seconds", "gauge",
	    "Start time of kmsd since the epoch.");
	out_fmt(b, "process_start_time_seconds %.3f\n", seconds(m->start_us));
	token = ctx->hsm != NULL && hsm_ping(ctx->hsm) == KM_OK;
	st = ctx->store != NULL && store_check(ctx->store) == KM_OK;
	au = ctx->audit != NULL && audit_check(ctx->audit) == KM_OK;
	family(b, "kmsd_ready", "gauge",
	    "1 while GET /v1/ready would answer 200 (token, store and audit "
	    "log all usable).");
	out_fmt(b, "kmsd_ready %d\n", token && st && au);
	family(b, "kmsd_ready_check", "gauge",
	    "Each readiness check: 1 ok, 0 failing.");
	out_fmt(b, "kmsd_ready_check{check=\"token\"} %d\n", token);
	out_fmt(b, "kmsd_ready_check{check=\"store\"} %d\n", st);
	out_fmt(b, "kmsd_ready_check{check=\"audit\"} %d\n", au);
	if (ctx->audit != NULL)
		audit_stats(ctx->audit, &records, &fsyncs, &failures);
	family(b, "kmsd_audit_records_total", "counter",
	    "Audit records made durable since start.");
	out_fmt(b, "kmsd_audit_records_total %" PRIu64 "\n", records);
	family(b, "kmsd_audit_fsyncs_total", "counter",
	    "fsyncs of the audit log since start (group commit shares them).");
	out_fmt(b, "kmsd_audit_fsyncs_total %" PRIu64 "\n", fsyncs);
	family(b, "kmsd_audit_failures_total", "counter",
	    "Audit writes that failed since start; each refused its operation "
	    "(fail closed).");
	out_fmt(b, "kmsd_audit_failures_total %" PRIu64 "\n", failures);
	if (ctx->hsm != NULL)
		hsm_pool_stats(ctx->hsm, &in_use, &size);
	family(b, "kmsd_hsm_sessions_in_use", "gauge",
	    "PKCS#11 sessions of the pool held by a request now.");
	out_fmt(b, "kmsd_hsm_sessions_in_use %zu\n", in_use);
	family(b, "kmsd_hsm_session_pool_size", "gauge",
	    "PKCS#11 sessions in the pool (hsm_sessions).");
	out_fmt(b, "kmsd_hsm_session_pool_size %zu\n", size);
	family(b, "kmsd_hsm_key_cache_entries", "gauge",
	    "Unwrapped key versions cached as token session objects.");
	out_fmt(b, "kmsd_hsm_key_cache_entries %zu\n",
	    ctx->hsm != NULL ? hsm_key_cache_count(ctx->hsm) : (size_t)0);
	if (m->ceremonies_fn != NULL &&
	    m->ceremonies_fn(m->ceremonies_arg, &pending) != KM_OK)
		pending = 0;
	family(b, "kmsd_ceremonies_pending", "gauge",
	    "Ceremonies waiting for approvals or execution.");
	out_fmt(b, "kmsd_ceremonies_pending %" PRIu64 "\n", pending);
}

static int
render_store(struct api_ctx *ctx, struct km_buf *b, int64_t now,
    size_t key_series)
{
	struct store_state_stats ss;
	struct store_sched_key *keys = NULL;
	struct store_version_use *vu = NULL;
	size_t n = 0, i;
	char l[400];
	int s, r;

	if ((r = store_state_stats(ctx->store, &ss)) != KM_OK)
		goto out;
	family(b, "kmsd_keys", "gauge", "Keys in the store.");
	out_fmt(b, "kmsd_keys %" PRIu64 "\n", ss.keys);
	family(b, "kmsd_key_versions", "gauge", "Key versions by state.");
	for (s = KM_STATE_PRIMARY; s <= KM_STATE_DESTROYED; s++)
		out_fmt(b, "kmsd_key_versions{state=\"%s\"} %" PRIu64 "\n",
		    km_state_name((enum km_state)s), ss.versions[s]);
	family(b, "kmsd_key_version_uses", "gauge",
	    "Uses of all versions in each state, as last flushed to the store "
	    "(usage_flush_seconds); a version that changes state moves its "
	    "uses with it.");
	for (s = KM_STATE_PRIMARY; s <= KM_STATE_DESTROYED; s++)
		out_fmt(b, "kmsd_key_version_uses{state=\"%s\"} %" PRIu64 "\n",
		    km_state_name((enum km_state)s), ss.uses[s]);

	if ((r = store_keys_scheduled(ctx->store, 0, key_series + 1, &keys,
	    &n)) != KM_OK)
		goto out;
	family(b, "kmsd_key_next_rotation_seconds", "gauge",
	    "Seconds until the key's next scheduled rotation (negative: "
	    "overdue); the keys that rotate soonest, up to metrics_key_series.");
	for (i = 0; i < n && i < key_series; i++)
		out_fmt(b, "kmsd_key_next_rotation_seconds{key=\"%s\"} %.3f\n",
		    label(keys[i].name, l, sizeof(l)),
		    seconds(keys[i].next_rotation_at - now));
	family(b, "kmsd_key_series_limited", "gauge",
	    "1 when a per-key family was cut at metrics_key_series keys.");
	out_fmt(b, "kmsd_key_series_limited{family=\"next_rotation\"} %d\n",
	    n > key_series);
	free(keys);
	keys = NULL;
	if ((r = store_keys_scheduled(ctx->store, 1, key_series + 1, &keys,
	    &n)) != KM_OK)
		goto out;
	out_fmt(b, "kmsd_key_series_limited{family=\"expiry\"} %d\n",
	    n > key_series);
	family(b, "kmsd_key_expiry_seconds", "gauge",
	    "Seconds until the key's expires_at (negative: expired); the keys "
	    "that expire soonest, up to metrics_key_series.");
	for (i = 0; i < n && i < key_series; i++)
		out_fmt(b, "kmsd_key_expiry_seconds{key=\"%s\"} %.3f\n",
		    label(keys[i].name, l, sizeof(l)),
		    seconds(keys[i].expires_at - now));

	if ((r = store_version_uses(ctx->store, key_series, &vu, &n)) != KM_OK)
		goto out;
	family(b, "kmsd_key_version_uses_total", "counter",
	    "Uses (wrap, unwrap, rewrap to or from, datakey) of each primary, "
	    "active and retired version of keys that still have old versions: "
	    "the old-key-usage signal. Includes uses not yet flushed.");
	for (i = 0; i < n; i++) {
		uint64_t pend = 0;
		int64_t last = 0;

		if (ctx->usage != NULL)
			usage_pending(ctx->usage, vu[i].key_id, vu[i].version,
			    &pend, &last);
		out_fmt(b, "kmsd_key_version_uses_total{key=\"%s\",version=\"%u\","
		    "state=\"%s\"} %" PRIu64 "\n", label(vu[i].name, l, sizeof(l)),
		    vu[i].version, km_state_name(vu[i].state),
		    vu[i].use_count + pend);
	}
	family(b, "kmsd_key_version_last_used_timestamp_seconds", "gauge",
	    "Last use of each version of the keys above (0: never).");
	for (i = 0; i < n; i++) {
		uint64_t pend = 0;
		int64_t last = 0;

		if (ctx->usage != NULL)
			usage_pending(ctx->usage, vu[i].key_id, vu[i].version,
			    &pend, &last);
		if (vu[i].last_used_at > last)
			last = vu[i].last_used_at;
		out_fmt(b, "kmsd_key_version_last_used_timestamp_seconds{key=\"%s\","
		    "version=\"%u\",state=\"%s\"} %.3f\n",
		    label(vu[i].name, l, sizeof(l)), vu[i].version,
		    km_state_name(vu[i].state), seconds(last));
	}
	family(b, "kmsd_key_version_created_timestamp_seconds", "gauge",
	    "Creation time of each version of the keys above; for the primary "
	    "it is the time of the last rotation.");
	for (i = 0; i < n; i++)
		out_fmt(b, "kmsd_key_version_created_timestamp_seconds{key=\"%s\","
		    "version=\"%u\",state=\"%s\"} %.3f\n",
		    label(vu[i].name, l, sizeof(l)), vu[i].version,
		    km_state_name(vu[i].state), seconds(vu[i].created_at));
	r = KM_OK;
out:
	free(keys);
	free(vu);
	return r;
}

int
metrics_render(struct metrics *m, struct api_ctx *ctx, int64_t now_us,
    size_t key_series, char **out, size_t *len)
{
	struct km_buf b = KM_BUF_INIT(METRICS_MAX_BYTES);
	int r = KM_ERR_INTERNAL;

	*out = NULL;
	*len = 0;
	if (m == NULL || ctx == NULL) {
		r = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	render_process(m, ctx, &b);
	render_requests(m, &b);
	render_scheduler(m, &b);
	if (ctx->store != NULL &&
	    (r = render_store(ctx, &b, now_us, key_series)) != KM_OK)
		goto out;
	if (b.failed) {
		r = KM_ERR_TOO_LARGE;
		goto out;
	}
	*len = b.len;
	if ((*out = km_buf_take_str(&b)) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	r = KM_OK;
out:
	km_buf_free(&b);
	return r;
}
