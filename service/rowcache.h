/* Cache of token and key rows read from the store, valid while the store
 * has not committed a write since the row was read (see rowcache.c). */
#ifndef ROWCACHE_H
#define ROWCACHE_H

#include <stdint.h>

#include "store.h"

struct rowcache;

int rowcache_new(struct rowcache **out) KM_WUR;
void rowcache_free(struct rowcache *c);

/* Called after every write transaction of the store, committed or not,
 * before its caller learns the outcome: every row cached so far is stale. */
void rowcache_changed(struct rowcache *c);

/* The generation to pass to rowcache_*_put for a row about to be read:
 * taken before the read, so a commit that races the read stales it. */
uint64_t rowcache_generation(const struct rowcache *c);

/* KM_OK with a copy (caller frees) when a row of the current generation
 * is cached; KM_ERR_NOT_FOUND otherwise. */
int rowcache_key_get(struct rowcache *c, const char *name,
    struct store_key **out) KM_WUR;
int rowcache_token_get(struct rowcache *c, const char *id,
    struct store_token **out) KM_WUR;

/* Keeps a copy of a row read at generation `gen` (best effort). */
void rowcache_key_put(struct rowcache *c, uint64_t gen,
    const struct store_key *k);
void rowcache_token_put(struct rowcache *c, uint64_t gen,
    const struct store_token *t);

#endif
