/* The rotation scheduler: rotates keys whose next_rotation_at has come
 * (with a per-key jitter, each due rotation at most once even across
 * restarts and instances) and raises expiry alerts at 30, 7 and 1 days and
 * on expiry, each once per key. Called from kmsd's main loop about once a
 * second; every action is audited and counted (docs/ROTATION.md). */
#ifndef SCHEDULER_H
#define SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "km.h"

struct api_ctx;
struct sched;

/* Where the scheduler reads the time: wall-clock microseconds since the
 * epoch. Tests pass a fake clock; NULL means km_now_us(). */
struct sched_clock {
	int64_t (*now_us)(void *arg);
	void *arg;
};

struct sched_config {
	/* A due key waits up to this long (a deterministic per-key share,
	 * at most a tenth of its rotation period), so that keys created
	 * together do not all rotate in the same second. 0: no jitter. */
	int64_t jitter_seconds;
	/* Rotations per tick at most; the rest wait for the next tick. */
	size_t max_rotations_per_tick;
	/* How often to look for keys that crossed an expiry threshold. */
	int64_t expiry_check_seconds;
	/* After a failed rotation a key is retried after this long, doubling
	 * per failure up to an hour. */
	int64_t retry_seconds;
};

/* Expiry thresholds in seconds before expires_at (DESIGN.md section 3). */
#define SCHED_EXPIRY_30D	(30 * 86400)
#define SCHED_EXPIRY_7D		(7 * 86400)
#define SCHED_EXPIRY_1D		(1 * 86400)

/* What a tick did; also counted in ctx->metrics. */
struct sched_result {
	size_t rotated;		/* committed rotations */
	size_t failed;		/* rotations that failed (audited, retried later) */
	size_t lost_race;	/* someone else rotated the key first */
	size_t deferred;	/* due but waiting for their jitter or a retry */
	size_t alerts;		/* expiry alerts raised */
};

/* The scheduler works on ctx's store, token, audit log and metrics, all
 * borrowed. `clock` (may be NULL) is copied. */
int sched_new(struct api_ctx *ctx, const struct sched_config *cfg,
    const struct sched_clock *clock, struct sched **out) KM_WUR;
void sched_free(struct sched *s);

/* One pass: due rotations (at most max_rotations_per_tick), then the
 * expiry check when it is due. *res (may be NULL) says what happened.
 * Returns KM_OK unless the store could not be read; single failures are
 * audited and counted, not returned. */
int sched_tick(struct sched *s, struct sched_result *res) KM_WUR;

/* The jitter of a due rotation in microseconds: a deterministic function
 * of the key name and its next_rotation_at, below min(jitter_seconds,
 * period / 10). Exposed for tests. */
int64_t sched_jitter_us(const struct sched *s, const char *name,
    int64_t next_rotation_at, int64_t rotation_period);

/* "30d", "7d", "1d" or "0d" for an expiry threshold in seconds. */
const char *sched_threshold_name(int64_t threshold);

#endif
