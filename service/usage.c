/* In-memory use counters per key version, flushed to the store in batches. */
#include "usage.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store.h"

#define USAGE_BUCKETS 4096

struct usage_entry {
	int64_t key_id;
	uint32_t version;
	uint64_t uses;
	int64_t last_used_at;
	struct usage_entry *next;
};

struct usage {
	pthread_mutex_t lock;
	struct usage_entry *buckets[USAGE_BUCKETS];
	size_t count;
};

static size_t
bucket_of(int64_t key_id, uint32_t version)
{
	uint64_t h = (uint64_t)key_id * 0x9e3779b97f4a7c15ULL ^ version;

	return (size_t)(h >> 20) % USAGE_BUCKETS;
}

int
usage_new(struct usage **out)
{
	struct usage *u;

	if ((u = calloc(1, sizeof(*u))) == NULL)
		return KM_ERR_NOMEM;
	pthread_mutex_init(&u->lock, NULL);
	*out = u;
	return KM_OK;
}

static void
free_chain(struct usage_entry *e)
{
	struct usage_entry *next;

	for (; e != NULL; e = next) {
		next = e->next;
		free(e);
	}
}

void
usage_free(struct usage *u)
{
	size_t i;

	if (u == NULL)
		return;
	for (i = 0; i < USAGE_BUCKETS; i++)
		free_chain(u->buckets[i]);
	pthread_mutex_destroy(&u->lock);
	free(u);
}

static struct usage_entry *
find(struct usage *u, int64_t key_id, uint32_t version)
{
	struct usage_entry *e;

	for (e = u->buckets[bucket_of(key_id, version)]; e; e = e->next)
		if (e->key_id == key_id && e->version == version)
			return e;
	return NULL;
}

void
usage_note(struct usage *u, int64_t key_id, uint32_t version, int64_t now_us)
{
	struct usage_entry *e;
	size_t b;

	pthread_mutex_lock(&u->lock);
	if ((e = find(u, key_id, version)) == NULL &&
	    (e = calloc(1, sizeof(*e))) != NULL) {
		b = bucket_of(key_id, version);
		e->key_id = key_id;
		e->version = version;
		e->next = u->buckets[b];
		u->buckets[b] = e;
		u->count++;
	}
	/* Losing one count on allocation failure is acceptable: counters
	 * are an operational signal, the audit log is the record. */
	if (e != NULL) {
		e->uses++;
		if (now_us > e->last_used_at)
			e->last_used_at = now_us;
	}
	pthread_mutex_unlock(&u->lock);
}

void
usage_pending(struct usage *u, int64_t key_id, uint32_t version,
    uint64_t *uses, int64_t *last_used_at)
{
	struct usage_entry *e;

	pthread_mutex_lock(&u->lock);
	e = find(u, key_id, version);
	*uses = e ? e->uses : 0;
	*last_used_at = e ? e->last_used_at : 0;
	pthread_mutex_unlock(&u->lock);
}

/* Puts the taken entries back after a failed flush. */
static void
merge_back(struct usage *u, struct store_usage *arr, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		struct usage_entry *e;
		size_t b;

		pthread_mutex_lock(&u->lock);
		if ((e = find(u, arr[i].key_id, arr[i].version)) == NULL &&
		    (e = calloc(1, sizeof(*e))) != NULL) {
			b = bucket_of(arr[i].key_id, arr[i].version);
			e->key_id = arr[i].key_id;
			e->version = arr[i].version;
			e->next = u->buckets[b];
			u->buckets[b] = e;
			u->count++;
		}
		if (e != NULL) {
			e->uses += arr[i].uses;
			if (arr[i].last_used_at > e->last_used_at)
				e->last_used_at = arr[i].last_used_at;
		}
		pthread_mutex_unlock(&u->lock);
	}
}

int
usage_flush(struct usage *u, struct store *st)
{
	struct usage_entry *taken[USAGE_BUCKETS], *e;
	struct store_usage *arr = NULL;
	size_t i, n = 0, count;
	int r;

	pthread_mutex_lock(&u->lock);
	count = u->count;
	memcpy(taken, u->buckets, sizeof(taken));
	memset(u->buckets, 0, sizeof(u->buckets));
	u->count = 0;
	pthread_mutex_unlock(&u->lock);
	if (count == 0)
		return KM_OK;
	if ((arr = calloc(count, sizeof(*arr))) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	for (i = 0; i < USAGE_BUCKETS; i++) {
		for (e = taken[i]; e != NULL && n < count; e = e->next) {
			arr[n].key_id = e->key_id;
			arr[n].version = e->version;
			arr[n].uses = e->uses;
			arr[n].last_used_at = e->last_used_at;
			n++;
		}
	}
	if ((r = store_usage_flush(st, arr, n)) != KM_OK) {
		log_warn("usage counters not flushed (%s); kept for the next try",
		    km_strerror(r));
		merge_back(u, arr, n);
	}
out:
	if (arr == NULL && count > 0) {
		/* Could not even build the array: put the chains back. */
		pthread_mutex_lock(&u->lock);
		for (i = 0; i < USAGE_BUCKETS; i++) {
			struct usage_entry *last = taken[i];

			if (last == NULL)
				continue;
			while (last->next != NULL)
				last = last->next;
			last->next = u->buckets[i];
			u->buckets[i] = taken[i];
			taken[i] = NULL;
		}
		u->count += count;
		pthread_mutex_unlock(&u->lock);
	}
	for (i = 0; i < USAGE_BUCKETS; i++)
		free_chain(taken[i]);
	free(arr);
	return r;
}
