/* Token buckets keyed by principal, in a bounded hash table. */
#include "ratelimit.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#define RL_BUCKETS 1024
#define RL_MAX_ENTRIES 65536
#define RL_IDLE_US (120 * 1000000LL)

struct rl_entry {
	char who[40];
	double tokens;
	int64_t last_us;
	struct rl_entry *next;
};

struct rl {
	pthread_mutex_t lock;
	double rate, burst;
	size_t count;
	int64_t last_sweep_us;
	struct rl_entry *buckets[RL_BUCKETS];
};

int
rl_new(double rate, double burst, struct rl **out)
{
	struct rl *r;

	*out = NULL;
	if (rate <= 0 || burst < 1)
		return KM_ERR_CONFIG;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return KM_ERR_NOMEM;
	pthread_mutex_init(&r->lock, NULL);
	r->rate = rate;
	r->burst = burst;
	*out = r;
	return KM_OK;
}

void
rl_free(struct rl *r)
{
	struct rl_entry *e, *next;
	size_t i;

	if (r == NULL)
		return;
	for (i = 0; i < RL_BUCKETS; i++)
		for (e = r->buckets[i]; e != NULL; e = next) {
			next = e->next;
			free(e);
		}
	pthread_mutex_destroy(&r->lock);
	free(r);
}

static size_t
slot_of(const char *who)
{
	uint32_t h = 2166136261u;

	for (; *who != '\0'; who++)
		h = (h ^ (unsigned char)*who) * 16777619u;
	return h % RL_BUCKETS;
}

/* Drops entries idle long enough to have refilled: they are full buckets,
 * the same as absent ones. Called with the lock when the table is full. */
static void
sweep(struct rl *r, int64_t now_us)
{
	struct rl_entry **pp, *e;
	size_t i;

	for (i = 0; i < RL_BUCKETS; i++) {
		for (pp = &r->buckets[i]; (e = *pp) != NULL;) {
			if (now_us - e->last_us > RL_IDLE_US) {
				*pp = e->next;
				free(e);
				r->count--;
			} else {
				pp = &e->next;
			}
		}
	}
}

static struct rl_entry *
entry_for(struct rl *r, const char *who, int64_t now_us)
{
	size_t s = slot_of(who);
	struct rl_entry *e;

	for (e = r->buckets[s]; e != NULL; e = e->next)
		if (strcmp(e->who, who) == 0)
			return e;
	/* At most one sweep a second: a flood of new principals on a full
	 * table must not cost a full scan each. */
	if (r->count >= RL_MAX_ENTRIES && now_us - r->last_sweep_us >= 1000000) {
		sweep(r, now_us);
		r->last_sweep_us = now_us;
	}
	if (r->count >= RL_MAX_ENTRIES || (e = calloc(1, sizeof(*e))) == NULL)
		return NULL;
	snprintf(e->who, sizeof(e->who), "%s", who);
	e->tokens = r->burst;
	e->last_us = now_us;
	e->next = r->buckets[s];
	r->buckets[s] = e;
	r->count++;
	return e;
}

int
rl_take(struct rl *r, const char *who, int64_t now_us, unsigned *retry_after_s)
{
	struct rl_entry *e;
	int rc = KM_OK;

	*retry_after_s = 0;
	pthread_mutex_lock(&r->lock);
	/* A full table lets requests through: tokens are few and made by
	 * admins, so running out of entries means a bug, not an attack. */
	if ((e = entry_for(r, who, now_us)) != NULL) {
		if (now_us > e->last_us)
			e->tokens = fmin(r->burst, e->tokens +
			    (double)(now_us - e->last_us) / 1e6 * r->rate);
		e->last_us = now_us;
		if (e->tokens >= 1.0) {
			e->tokens -= 1.0;
		} else {
			*retry_after_s = (unsigned)ceil((1.0 - e->tokens) / r->rate);
			rc = KM_ERR_RATE_LIMITED;
		}
	}
	pthread_mutex_unlock(&r->lock);
	return rc;
}
