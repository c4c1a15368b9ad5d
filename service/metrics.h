/* Prometheus metrics of kmsd (GET /metrics): request counters and latency
 * histograms kept in memory with atomics, and gauges read from the store,
 * the audit log, the token and the scheduler when a scrape renders them.
 * The catalog is in docs/MONITORING.md. */
#ifndef METRICS_H
#define METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "km.h"

struct api_ctx;
struct metrics;

/* The registry; `ops` (NULL-terminated, borrowed for the registry's
 * lifetime) are the operation names requests are counted by, usually the
 * route table's ops. Requests with another op count as "other". */
int metrics_new(const char *const *ops, size_t n_ops, struct metrics **out)
    KM_WUR;
void metrics_free(struct metrics *m);

/* CLOCK_MONOTONIC in nanoseconds, for request latencies. */
int64_t metrics_monotonic_ns(void);

/* Counts one request of operation `op` (may be NULL) answered with HTTP
 * `status` after `elapsed_ns`. `items` > 0 is the number of envelope items
 * it carried (1 for a single wrap, the batch size for a batch) of which
 * `failed_items` failed. Lock-free; safe from any thread. */
void metrics_request(struct metrics *m, const char *op, int status,
    int64_t elapsed_ns, long items, long failed_items);

/* Scheduler events. `result` is "ok", "failed" or "lost_race". */
void metrics_rotation(struct metrics *m, const char *result);
/* An alert was raised: kind "expiry", "expired" or "rotation_failed",
 * threshold in seconds (0 when none). */
void metrics_alert(struct metrics *m, const char *kind, int64_t threshold);
/* A scheduler pass finished at `at_us` (wall clock). */
void metrics_scheduler_run(struct metrics *m, int64_t at_us);

/* Where the pending-ceremony count comes from once ceremonies exist;
 * until set, kmsd_ceremonies_pending is 0. `fn` returns KM_OK and *n. */
void metrics_set_ceremonies_source(struct metrics *m,
    int (*fn)(void *arg, uint64_t *n), void *arg);

/* Renders the Prometheus text format (version 0.0.4) of everything into
 * *out (NUL-terminated, *len bytes, owned by the caller). Per-key series
 * are limited to `key_series` keys per family (the soonest rotations, the
 * soonest expiries, the most recently used old versions). Reads ctx's
 * store, audit log, token and use counters; `now_us` is the wall clock. */
int metrics_render(struct metrics *m, struct api_ctx *ctx, int64_t now_us,
    size_t key_series, char **out, size_t *len) KM_WUR;

#endif
