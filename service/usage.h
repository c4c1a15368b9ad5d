/* Per key-version use counters kept in memory and flushed to the store
 * every few seconds, so the hot path never writes SQLite. */
#ifndef USAGE_H
#define USAGE_H

#include <stdint.h>

#include "km.h"

struct usage;
struct store;

int usage_new(struct usage **out) KM_WUR;
void usage_free(struct usage *u);
/* Counts one use of (key_id, version) at `now_us`. */
void usage_note(struct usage *u, int64_t key_id, uint32_t version,
    int64_t now_us);
/* Not yet flushed uses and the latest use time of (key_id, version). */
void usage_pending(struct usage *u, int64_t key_id, uint32_t version,
    uint64_t *uses, int64_t *last_used_at);
/* Writes pending counters to the store; on failure they are kept. */
int usage_flush(struct usage *u, struct store *st) KM_WUR;

#endif
