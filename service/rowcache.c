/* Cache of token and key rows, so that a request does not read the same
 * rows from SQLite as the one before it.
 *
 * Revoking a token or a key version must take effect on the very next
 * request. The store calls rowcache_changed after every write transaction
 * (before the writer's caller, and so before any answer, learns that it
 * committed), which bumps a generation; a row is used only while the
 * generation is the one taken before it was read. Any write stales every
 * row, which is cheap because writes are rare next to reads. This holds
 * for one kmsd process owning the store, as today; with a
 * shared store the generation has to come from the database (see
 * docs/PERFORMANCE.md). */
#include "rowcache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define ROWCACHE_KEY_SLOTS	1024
#define ROWCACHE_TOKEN_SLOTS	256

struct slot {
	pthread_mutex_t lock;
	uint64_t gen;
	void *row;			/* struct store_key or store_token */
};

struct rowcache {
	_Atomic uint64_t gen;
	struct slot keys[ROWCACHE_KEY_SLOTS];
	struct slot tokens[ROWCACHE_TOKEN_SLOTS];
	size_t n_locks;			/* initialised, keys first */
};

static size_t
slot_of(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ULL;	/* FNV-1a */

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return (size_t)(h % n);
}

static struct slot *
lock_at(struct rowcache *c, size_t i)
{
	return i < ROWCACHE_KEY_SLOTS ? &c->keys[i] :
	    &c->tokens[i - ROWCACHE_KEY_SLOTS];
}

void
rowcache_free(struct rowcache *c)
{
	size_t i;

	if (c == NULL)
		return;
	for (i = 0; i < c->n_locks; i++)
		pthread_mutex_destroy(&lock_at(c, i)->lock);
	for (i = 0; i < ROWCACHE_KEY_SLOTS; i++)
		store_key_free(c->keys[i].row);
	for (i = 0; i < ROWCACHE_TOKEN_SLOTS; i++)
		store_token_free(c->tokens[i].row);
	free(c);
}

int
rowcache_new(struct rowcache **out)
{
	struct rowcache *c;

	*out = NULL;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return KM_ERR_NOMEM;
	atomic_init(&c->gen, 1);
	for (; c->n_locks < ROWCACHE_KEY_SLOTS + ROWCACHE_TOKEN_SLOTS;
	    c->n_locks++) {
		if (pthread_mutex_init(&lock_at(c, c->n_locks)->lock, NULL) != 0) {
			rowcache_free(c);
			return KM_ERR_INTERNAL;
		}
	}
	*out = c;
	return KM_OK;
}

void
rowcache_changed(struct rowcache *c)
{
	atomic_fetch_add(&c->gen, 1);
}

uint64_t
rowcache_generation(const struct rowcache *c)
{
	return atomic_load(&((struct rowcache *)c)->gen);
}

static int
blob_dup(const unsigned char *p, size_t len, unsigned char **out)
{
	*out = NULL;
	if (p == NULL)
		return KM_OK;
	if ((*out = malloc(len > 0 ? len : 1)) == NULL)
		return KM_ERR_NOMEM;
	memcpy(*out, p, len);
	return KM_OK;
}

static struct store_key *
key_dup(const struct store_key *k)
{
	struct store_key *d;
	size_t i;

	if ((d = malloc(sizeof(*d))) == NULL)
		return NULL;
	*d = *k;
	d->versions = NULL;
	d->required_context = NULL;
	if (k->n_versions > 0 &&
	    (d->versions = calloc(k->n_versions, sizeof(*d->versions))) == NULL)
		goto fail;
	for (i = 0; i < k->n_versions; i++) {
		d->versions[i] = k->versions[i];
		d->versions[i].wrapped = NULL;
		d->versions[i].public_key = NULL;
		if (blob_dup(k->versions[i].wrapped, k->versions[i].wrapped_len,
		    &d->versions[i].wrapped) != KM_OK ||
		    blob_dup(k->versions[i].public_key,
		    k->versions[i].public_key_len,
		    &d->versions[i].public_key) != KM_OK)
			goto fail;
	}
	if (k->n_required > 0 && (d->required_context = calloc(k->n_required,
	    sizeof(*d->required_context))) == NULL)
		goto fail;
	for (i = 0; i < k->n_required; i++)
		if ((d->required_context[i] = strdup(k->required_context[i])) ==
		    NULL)
			goto fail;
	return d;
fail:
	if (d->versions == NULL)
		d->n_versions = 0;
	if (d->required_context == NULL)
		d->n_required = 0;
	store_key_free(d);
	return NULL;
}

static struct store_token *
token_dup(const struct store_token *t)
{
	struct store_token *d;

	if ((d = malloc(sizeof(*d))) == NULL)
		return NULL;
	*d = *t;
	d->keys = NULL;
	d->description = NULL;
	if ((t->keys != NULL && (d->keys = strdup(t->keys)) == NULL) ||
	    (t->description != NULL &&
	    (d->description = strdup(t->description)) == NULL)) {
		store_token_free(d);
		return NULL;
	}
	return d;
}

int
rowcache_key_get(struct rowcache *c, const char *name, struct store_key **out)
{
	struct slot *s = &c->keys[slot_of(name, ROWCACHE_KEY_SLOTS)];
	struct store_key *k;
	int r = KM_ERR_NOT_FOUND;

	*out = NULL;
	pthread_mutex_lock(&s->lock);
	k = s->row;
	if (k != NULL && s->gen == rowcache_generation(c) &&
	    strcmp(k->name, name) == 0)
		r = (*out = key_dup(k)) != NULL ? KM_OK : KM_ERR_NOMEM;
	pthread_mutex_unlock(&s->lock);
	return r;
}

int
rowcache_token_get(struct rowcache *c, const char *id,
    struct store_token **out)
{
	struct slot *s = &c->tokens[slot_of(id, ROWCACHE_TOKEN_SLOTS)];
	struct store_token *t;
	int r = KM_ERR_NOT_FOUND;

	*out = NULL;
	pthread_mutex_lock(&s->lock);
	t = s->row;
	if (t != NULL && s->gen == rowcache_generation(c) &&
	    strcmp(t->id, id) == 0)
		r = (*out = token_dup(t)) != NULL ? KM_OK : KM_ERR_NOMEM;
	pthread_mutex_unlock(&s->lock);
	return r;
}

void
rowcache_key_put(struct rowcache *c, uint64_t gen, const struct store_key *k)
{
	struct slot *s = &c->keys[slot_of(k->name, ROWCACHE_KEY_SLOTS)];
	struct store_key *d, *old = NULL;

	if (gen != rowcache_generation(c) || (d = key_dup(k)) == NULL)
		return;
	pthread_mutex_lock(&s->lock);
	old = s->row;
	s->row = d;
	s->gen = gen;
	pthread_mutex_unlock(&s->lock);
	store_key_free(old);
}

void
rowcache_token_put(struct rowcache *c, uint64_t gen,
    const struct store_token *t)
{
	struct slot *s = &c->tokens[slot_of(t->id, ROWCACHE_TOKEN_SLOTS)];
	struct store_token *d, *old = NULL;

	if (gen != rowcache_generation(c) || (d = token_dup(t)) == NULL)
		return;
	pthread_mutex_lock(&s->lock);
	old = s->row;
	s->row = d;
	s->gen = gen;
	pthread_mutex_unlock(&s->lock);
	store_token_free(old);
}
