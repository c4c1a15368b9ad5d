/* Per-token request rate limits: a token bucket per principal. */
#ifndef RATELIMIT_H
#define RATELIMIT_H

#include <stdint.h>

#include "km.h"

struct rl;

/* `rate` requests per second on average, bursts of up to `burst`. */
int rl_new(double rate, double burst, struct rl **out) KM_WUR;
void rl_free(struct rl *r);
/* Takes one request for `who` at `now_us`: KM_OK, or KM_ERR_RATE_LIMITED
 * with *retry_after_s set to the whole seconds until one is available. */
int rl_take(struct rl *r, const char *who, int64_t now_us,
    unsigned *retry_after_s) KM_WUR;

#endif
