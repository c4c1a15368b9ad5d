/* MEK rotation (DESIGN.md section 2): a worker thread rewraps every
 * named-key version from the old MEK version to the new one inside the
 * token, in batches that each commit with their progress (the cursor), so
 * a killed kmsd resumes where the last commit left off; versions already
 * under the new MEK are never touched again. When a pass finds nothing
 * more, a count of the versions left under the old MEK (created during the
 * pass) either starts another pass or, at 0, marks the rotation verified. */
#include "cer_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "audit.h"
#include "cfg.h"
#include "hsm.h"
#include "log.h"

struct rec_hook {
	struct cer *c;
	const char *op;
	json_t *fields;
};

static int
rec_hook_fn(void *arg)
{
	struct rec_hook *h = arg;

	return cer_audit_record(h->c, NULL, h->op, h->fields, "ok");
}

/* One batch, or the end of a pass. *finished is 1 when nothing is left to
 * do (no running rotation, or it was just verified). */
static int
rotation_step(struct cer *c, int *finished, char why[CER_WHY])
{
	struct cer_rewrap_item *it = NULL;
	struct cer_rotation rot;
	struct rec_hook h = { c, NULL, NULL };
	enum hsm_key_type type;
	size_t n = 0, i, changed = 0;
	int64_t left;
	int rc, found;

	*finished = 0;
	if ((rc = cer_store_rotation_last(c->ctx->store, &rot, &found)) != KM_OK) {
		cer_why(why, "reading the rotation failed");
		goto out;
	}
	if (!found || strcmp(rot.state, "running") != 0) {
		*finished = 1;
		goto out;
	}
	if ((rc = cer_store_rewrap_batch(c->ctx->store, rot.old_version,
	    rot.cursor_key, rot.cursor_version,
	    (size_t)c->ctx->cfg->mek_rewrap_batch, &it, &n)) != KM_OK) {
		cer_why(why, "reading a batch failed");
		goto out;
	}
	if (n == 0) {
		if ((rc = cer_store_count_under(c->ctx->store, rot.old_version,
		    &left)) != KM_OK) {
			cer_why(why, "counting the versions left failed");
			goto out;
		}
		if (left > 0) {
			/* Created under the old MEK while this pass ran. */
			log_info("MEK rotation %" PRId64 ": %" PRId64 " versions "
			    "left under v%u, another pass", rot.id, left,
			    rot.old_version);
			rc = cer_store_rotation_new_pass(c->ctx->store, rot.id);
			goto out;
		}
		h.op = "mek.verify";
		h.fields = json_pack("{s:I, s:s, s:I, s:I, s:I, s:I, s:I}",
		    "rotation", (json_int_t)rot.id, "ceremony_id", rot.ceremony_id,
		    "from", (json_int_t)rot.old_version, "to",
		    (json_int_t)rot.new_version, "remaining", (json_int_t)0,
		    "rewrapped", (json_int_t)rot.done, "passes",
		    (json_int_t)rot.passes);
		if (h.fields == NULL) {
			rc = KM_ERR_NOMEM;
			goto out;
		}
		if ((rc = cer_store_rotation_finish(c->ctx->store, rot.id,
		    rot.old_version, rec_hook_fn, &h)) != KM_OK) {
			/* Raced with a version created meanwhile: next pass. */
			if (rc == KM_ERR_STATE_CHANGED)
				rc = KM_OK;
			else
				cer_why(why, "marking the rotation verified failed");
			goto out;
		}
		log_info("MEK rotation %" PRId64 ": verified, 0 key versions under "
		    "v%u (%" PRId64 " rewrapped, %" PRId64 " passes); the old MEK "
		    "version may now be disabled (mek.disable)", rot.id,
		    rot.old_version, rot.done, rot.passes);
		if (audit_checkpoint(c->ctx->audit) != KM_OK)
			log_warn("MEK rotation: checkpoint after verification failed");
		*finished = 1;
		goto out;
	}
	for (i = 0; i < n; i++) {
		if ((rc = hsm_key_type_parse(it[i].type, &type)) != KM_OK) {
			cer_why(why, "key id %" PRId64 " has type %s, which this kmsd "
			    "cannot rewrap", it[i].key_id, it[i].type);
			goto out;
		}
		if ((rc = hsm_key_rewrap(c->ctx->hsm, type, rot.old_version,
		    rot.new_version, it[i].wrapped, it[i].wrapped_len, &it[i].out,
		    &it[i].out_len)) != KM_OK) {
			cer_why(why, "the token could not rewrap key id %" PRId64
			    " version %u", it[i].key_id, it[i].version);
			goto out;
		}
	}
	h.op = "mek.rewrap";
	h.fields = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "rotation",
	    (json_int_t)rot.id, "from", (json_int_t)rot.old_version, "to",
	    (json_int_t)rot.new_version, "batch", (json_int_t)n, "cursor_key",
	    (json_int_t)it[n - 1].key_id, "cursor_version",
	    (json_int_t)it[n - 1].version);
	if (h.fields == NULL) {
		rc = KM_ERR_NOMEM;
		goto out;
	}
	if ((rc = cer_store_rewrap_commit(c->ctx->store, &rot, it, n,
	    it[n - 1].key_id, it[n - 1].version, &changed, rec_hook_fn,
	    &h)) != KM_OK) {
		cer_why(why, "committing a batch failed");
		goto out;
	}
	log_debug("MEK rotation %" PRId64 ": %zu of %zu rewrapped, %" PRId64
	    " of %" PRId64, rot.id, changed, n, rot.done + (int64_t)changed,
	    rot.total);
	rc = KM_OK;
out:
	json_decref(h.fields);
	cer_rewrap_items_free(it, n);
	return rc;
}

static void *
worker_main(void *arg)
{
	struct cer *c = arg;
	struct timespec until;
	char why[CER_WHY];
	long pause = c->ctx->cfg->mek_rewrap_pause_ms;
	int finished = 0, stop, rc;

	for (;;) {
		pthread_mutex_lock(&c->wlock);
		stop = c->stop;
		pthread_mutex_unlock(&c->wlock);
		if (stop)
			break;
		why[0] = '\0';
		if ((rc = rotation_step(c, &finished, why)) != KM_OK) {
			log_error("MEK rotation stopped: %s: %s (kmsctl mek rotate "
			    "--resume, or a restart, continues it)", why,
			    km_strerror(rc));
			pthread_mutex_lock(&c->wlock);
			snprintf(c->last_error, sizeof(c->last_error), "%s: %s", why,
			    km_strerror(rc));
			pthread_mutex_unlock(&c->wlock);
			break;
		}
		if (finished)
			break;
		if (pause > 0) {
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += pause / 1000;
			until.tv_nsec += (pause % 1000) * 1000000L;
			if (until.tv_nsec >= 1000000000L) {
				until.tv_sec++;
				until.tv_nsec -= 1000000000L;
			}
			pthread_mutex_lock(&c->wlock);
			while (!c->stop && pthread_cond_timedwait(&c->wcond, &c->wlock,
			    &until) != ETIMEDOUT)
				;
			pthread_mutex_unlock(&c->wlock);
		}
	}
	pthread_mutex_lock(&c->wlock);
	c->running = 0;
	pthread_mutex_unlock(&c->wlock);
	return NULL;
}

int
cer_mek_start(struct cer *c)
{
	struct cer_rotation rot;
	int rc, found;

	if ((rc = cer_store_rotation_last(c->ctx->store, &rot, &found)) != KM_OK)
		return rc;
	if (!found || strcmp(rot.state, "running") != 0)
		return KM_OK;
	pthread_mutex_lock(&c->wlock);
	if (c->running || c->stop) {
		pthread_mutex_unlock(&c->wlock);
		return KM_OK;
	}
	/* A worker that finished (an error) is joined before a new one. */
	if (c->joinable) {
		(void)pthread_join(c->worker, NULL);
		c->joinable = 0;
	}
	c->running = 1;
	c->last_error[0] = '\0';
	c->rate_t0 = km_now_us();
	c->rate_done0 = rot.done;
	if (pthread_create(&c->worker, NULL, worker_main, c) != 0) {
		c->running = 0;
		pthread_mutex_unlock(&c->wlock);
		log_error("MEK rotation: cannot start the worker thread");
		return KM_ERR_INTERNAL;
	}
	c->joinable = 1;
	pthread_mutex_unlock(&c->wlock);
	log_info("MEK rotation %" PRId64 ": v%u -> v%u, %" PRId64 " of %" PRId64
	    " done, resuming", rot.id, rot.old_version, rot.new_version, rot.done,
	    rot.total);
	return KM_OK;
}

void
cer_stop(struct cer *c)
{
	int joinable;

	if (c == NULL || c->n_sync < 4)
		return;
	pthread_mutex_lock(&c->wlock);
	c->stop = 1;
	pthread_cond_broadcast(&c->wcond);
	joinable = c->joinable;
	c->joinable = 0;
	pthread_mutex_unlock(&c->wlock);
	if (joinable)
		(void)pthread_join(c->worker, NULL);
}

int
cer_mek_resume(struct cer *c, char why[CER_WHY])
{
	struct cer_rotation rot;
	int rc, found;

	why[0] = '\0';
	if ((rc = cer_store_rotation_last(c->ctx->store, &rot, &found)) != KM_OK)
		return rc;
	if (!found || strcmp(rot.state, "running") != 0) {
		cer_why(why, "no MEK rotation is unfinished");
		return KM_ERR_NOT_FOUND;
	}
	return cer_mek_start(c);
}

int
cer_mek_json(struct cer *c, json_t **out)
{
	struct cer_rotation rot;
	struct cer_mek *m = NULL;
	json_t *vs = NULL, *r = json_null();
	size_t n = 0, i;
	int64_t left = 0, now = km_now_us(), elapsed;
	uint32_t current = 0;
	int rc, found, running;
	char err[CER_WHY];
	double rate = 0;

	*out = NULL;
	if ((rc = cer_store_meks(c->ctx->store, &m, &n)) != KM_OK ||
	    (rc = cer_store_rotation_last(c->ctx->store, &rot, &found)) != KM_OK)
		goto out;
	if ((vs = json_array()) == NULL) {
		rc = KM_ERR_NOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		json_array_append_new(vs, json_pack("{s:I, s:s, s:o, s:I}",
		    "version", (json_int_t)m[i].version, "state", m[i].state,
		    "created_at", api_time_json(m[i].created_at), "key_versions",
		    (json_int_t)m[i].versions));
		if (m[i].version > current)
			current = m[i].version;
	}
	if (found) {
		if ((rc = cer_store_count_under(c->ctx->store, rot.old_version,
		    &left)) != KM_OK)
			goto out;
		pthread_mutex_lock(&c->wlock);
		running = c->running;
		snprintf(err, sizeof(err), "%s", c->last_error);
		elapsed = now - c->rate_t0;
		if (running && elapsed > 0)
			rate = (double)(rot.done - c->rate_done0) * 1e6 /
			    (double)elapsed;
		pthread_mutex_unlock(&c->wlock);
		r = json_pack("{s:I, s:s, s:I, s:I, s:s, s:I, s:I, s:I, s:I, s:o,"
		    " s:o, s:o, s:s, s:o, s:f}",
		    "id", (json_int_t)rot.id, "ceremony_id", rot.ceremony_id,
		    "from", (json_int_t)rot.old_version,
		    "to", (json_int_t)rot.new_version, "state", rot.state,
		    "total", (json_int_t)rot.total, "done", (json_int_t)rot.done,
		    "remaining", (json_int_t)left, "passes", (json_int_t)rot.passes,
		    "started_at", api_time_json(rot.started_at),
		    "updated_at", api_time_json(rot.updated_at),
		    "finished_at", api_time_json(rot.finished_at),
		    "worker", running ? "running" : strcmp(rot.state, "running") ==
		    0 ? "stopped" : "done",
		    "last_error", err[0] ? json_string(err) : json_null(),
		    "rate_per_s", rate);
	}
	if ((*out = json_pack("{s:I, s:O, s:o}", "current", (json_int_t)current,
	    "versions", vs, "rotation", r)) == NULL)
		rc = KM_ERR_NOMEM;
	r = NULL;
out:
	json_decref(r);
	json_decref(vs);
	free(m);
	return rc;
}
