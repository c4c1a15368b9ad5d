/* Audit log writer: hash chain, group-committed fsync, torn-tail recovery. */
#include "audit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "log.h"

#define SEGMENT_PREFIX "audit-"
#define SEGMENT_SUFFIX ".jsonl"
#define MAX_LINE (4u << 20)

struct audit {
	char *dir;
	char *path;
	int fd;
	pthread_mutex_t lock;
	pthread_cond_t synced;
	uint64_t next_seq;		/* seq of the next record */
	uint64_t written_seq;		/* records < written_seq are in the file */
	uint64_t durable_seq;		/* records < durable_seq are fsynced */
	off_t size;			/* bytes of whole records in the file */
	unsigned char prev[SHA256_DIGEST_LENGTH];
	int syncing;
	int failed;			/* a write or fsync failed: fail closed */
};

static int
fsync_dir(const char *dir)
{
	int fd, r = KM_OK;

	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return KM_ERR_AUDIT;
	if (fsync(fd) != 0) {
		log_error("audit: fsync of directory %s failed: %s", dir,
		    strerror(errno));
		r = KM_ERR_AUDIT;
	}
	close(fd);
	return r;
}

/* Newest segment name in `dir`, or NULL when there is none. */
static int
newest_segment(const char *dir, char **name)
{
	struct dirent *de;
	DIR *d;
	size_t plen = strlen(SEGMENT_PREFIX), slen = strlen(SEGMENT_SUFFIX);

	*name = NULL;
	if ((d = opendir(dir)) == NULL) {
		log_error("audit: cannot open %s: %s", dir, strerror(errno));
		return KM_ERR_AUDIT;
	}
	while ((de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name);

		if (n != plen + 12 + slen ||
		    strncmp(de->d_name, SEGMENT_PREFIX, plen) != 0 ||
		    strcmp(de->d_name + n - slen, SEGMENT_SUFFIX) != 0)
			continue;
		/* Fixed-width numbers: string order is seq order. */
		if (*name == NULL || strcmp(de->d_name, *name) > 0) {
			free(*name);
			if ((*name = strdup(de->d_name)) == NULL) {
				closedir(d);
				return KM_ERR_NOMEM;
			}
		}
	}
	closedir(d);
	return KM_OK;
}

static int
read_file(int fd, unsigned char **data, off_t *size)
{
	struct stat st;
	unsigned char *buf;
	off_t got = 0;
	ssize_t n;

	*data = NULL;
	*size = 0;
	if (fstat(fd, &st) != 0)
		return KM_ERR_AUDIT;
	if ((buf = malloc((size_t)st.st_size + 1)) == NULL)
		return KM_ERR_NOMEM;
	while (got < st.st_size) {
		n = pread(fd, buf + got, (size_t)(st.st_size - got), got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(buf);
			return KM_ERR_AUDIT;
		}
		got += n;
	}
	*data = buf;
	*size = got;
	return KM_OK;
}

/* Reads the tail of the current segment: cuts a torn last line and sets
 * next_seq and prev from the last whole line. *cut is the bytes cut. */
static int
recover_tail(struct audit *a, uint64_t first_seq, off_t *cut)
{
	unsigned char *data = NULL;
	off_t size, end, start;
	json_t *rec = NULL, *seq;
	int r;

	*cut = 0;
	if ((r = read_file(a->fd, &data, &size)) != KM_OK)
		goto out;
	end = size;
	while (end > 0 && data[end - 1] != '\n')
		end--;
	if (end != size) {
		log_warn("audit: %s ends in a torn line of %jd bytes; cutting it",
		    a->path, (intmax_t)(size - end));
		if (ftruncate(a->fd, end) != 0 || fsync(a->fd) != 0) {
			log_error("audit: cannot cut torn line of %s: %s",
			    a->path, strerror(errno));
			r = KM_ERR_AUDIT;
			goto out;
		}
		*cut = size - end;
	}
	a->size = end;
	if (end == 0) {
		a->next_seq = first_seq;
		if (first_seq == 0)
			memset(a->prev, 0, sizeof(a->prev));
		r = KM_OK;
		goto out;
	}
	start = end - 1;
	while (start > 0 && data[start - 1] != '\n')
		start--;
	rec = json_loadb((const char *)data + start, (size_t)(end - 1 - start),
	    0, NULL);
	if (rec == NULL || !json_is_integer(seq = json_object_get(rec, "seq")) ||
	    json_integer_value(seq) < 0) {
		log_error("audit: last record of %s is not valid; refusing to "
		    "append after it", a->path);
		r = KM_ERR_AUDIT;
		goto out;
	}
	a->next_seq = (uint64_t)json_integer_value(seq) + 1;
	SHA256(data + start, (size_t)(end - 1 - start), a->prev);
	r = KM_OK;
out:
	json_decref(rec);
	free(data);
	return r;
}

static int
open_segment(struct audit *a, const char *name)
{
	size_t n = strlen(a->dir) + strlen(name) + 2;

	if ((a->path = malloc(n)) == NULL)
		return KM_ERR_NOMEM;
	snprintf(a->path, n, "%s/%s", a->dir, name);
	a->fd = open(a->path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (a->fd < 0) {
		log_error("audit: cannot open %s: %s", a->path, strerror(errno));
		return KM_ERR_AUDIT;
	}
	return fsync_dir(a->dir);
}

int
audit_open(const char *dir, struct audit **out)
{
	struct audit *a;
	char *name = NULL;
	uint64_t first = 0;
	off_t cut = 0;
	int r = KM_ERR_NOMEM;

	*out = NULL;
	if ((a = calloc(1, sizeof(*a))) == NULL)
		return KM_ERR_NOMEM;
	a->fd = -1;
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->synced, NULL);
	if ((a->dir = strdup(dir)) == NULL)
		goto out;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		log_error("audit: cannot create %s: %s", dir, strerror(errno));
		r = KM_ERR_AUDIT;
		goto out;
	}
	if ((r = newest_segment(dir, &name)) != KM_OK)
		goto out;
	if (name == NULL) {
		if ((name = strdup(SEGMENT_PREFIX "000000000000" SEGMENT_SUFFIX)) == NULL) {
			r = KM_ERR_NOMEM;
			goto out;
		}
	} else {
		first = strtoull(name + strlen(SEGMENT_PREFIX), NULL, 10);
	}
	if ((r = open_segment(a, name)) != KM_OK)
		goto out;
	if ((r = recover_tail(a, first, &cut)) != KM_OK)
		goto out;
	a->written_seq = a->durable_seq = a->next_seq;
	if (cut > 0) {
		json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:I}",
		    "request_id", "", "actor", "kmsd", "op", "recovery",
		    "outcome", "ok", "cut_bytes", (json_int_t)cut);

		r = rec ? audit_append(a, rec, NULL) : KM_ERR_NOMEM;
		json_decref(rec);
		if (r != KM_OK)
			goto out;
	}
	*out = a;
	a = NULL;
	r = KM_OK;
out:
	free(name);
	audit_free(a);
	return r;
}

void
audit_free(struct audit *a)
{
	if (a == NULL)
		return;
	if (a->fd >= 0)
		close(a->fd);
	pthread_mutex_destroy(&a->lock);
	pthread_cond_destroy(&a->synced);
	free(a->path);
	free(a->dir);
	free(a);
}

static int
write_all(int fd, const char *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Builds the line for `rec` with seq/ts/prev first. Called with the lock. */
static char *
format_line(struct audit *a, json_t *rec)
{
	char ts[40], prev_hex[65];
	json_t *line;
	char *s;

	km_time_format(km_now_us(), 1, ts, sizeof(ts));
	km_hex(a->prev, sizeof(a->prev), prev_hex);
	line = json_pack("{s:I, s:s, s:s}", "seq", (json_int_t)a->next_seq,
	    "ts", ts, "prev", prev_hex);
	if (line == NULL)
		return NULL;
	if (json_object_update_missing(line, rec) != 0) {
		json_decref(line);
		return NULL;
	}
	s = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(line);
	return s;
}

/* Waits until record `seq` is durable, running the fsync itself when no
 * other thread is: every thread that wrote while an fsync was running is
 * covered by the next one (group commit). Called and returns with the lock. */
static int
wait_durable(struct audit *a, uint64_t seq)
{
	while (a->durable_seq <= seq && !a->failed) {
		uint64_t target;
		int rc;

		if (a->syncing) {
			pthread_cond_wait(&a->synced, &a->lock);
			continue;
		}
		a->syncing = 1;
		target = a->written_seq;
		pthread_mutex_unlock(&a->lock);
		rc = fdatasync(a->fd);
		pthread_mutex_lock(&a->lock);
		a->syncing = 0;
		if (rc != 0) {
			log_error("audit: fdatasync of %s failed: %s", a->path,
			    strerror(errno));
			a->failed = 1;
		} else if (target > a->durable_seq) {
			a->durable_seq = target;
		}
		pthread_cond_broadcast(&a->synced);
	}
	return a->durable_seq > seq ? KM_OK : KM_ERR_AUDIT;
}

int
audit_append(struct audit *a, json_t *rec, uint64_t *seq)
{
	char *line = NULL;
	size_t len;
	uint64_t my;
	int r;

	if (seq != NULL)
		*seq = 0;
	pthread_mutex_lock(&a->lock);
	if (a->failed) {
		r = KM_ERR_AUDIT;
		goto out;
	}
	if ((line = format_line(a, rec)) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	len = strlen(line);
	if (len + 1 > MAX_LINE) {
		log_error("audit: record of %zu bytes is over the line limit", len);
		r = KM_ERR_AUDIT;
		goto out;
	}
	line[len] = '\n';
	if (write_all(a->fd, line, len + 1) != 0) {
		log_error("audit: write to %s failed: %s", a->path,
		    strerror(errno));
		/* Cut back whatever part of the line reached the file, so the
		 * chain stays whole; if even that fails, stay failed. */
		if (ftruncate(a->fd, a->size) != 0)
			log_error("audit: cannot cut partial line: %s",
			    strerror(errno));
		a->failed = 1;
		r = KM_ERR_AUDIT;
		goto out;
	}
	SHA256((unsigned char *)line, len, a->prev);
	a->size += (off_t)(len + 1);
	my = a->next_seq++;
	a->written_seq = a->next_seq;
	r = wait_durable(a, my);
	if (r == KM_OK && seq != NULL)
		*seq = my;
out:
	pthread_mutex_unlock(&a->lock);
	free(line);
	return r;
}

int
audit_check(struct audit *a)
{
	int r;

	pthread_mutex_lock(&a->lock);
	r = a->failed ? KM_ERR_AUDIT : KM_OK;
	pthread_mutex_unlock(&a->lock);
	return r;
}

void
audit_head(struct audit *a, uint64_t *next_seq, char prev_hex[65])
{
	pthread_mutex_lock(&a->lock);
	*next_seq = a->next_seq;
	km_hex(a->prev, sizeof(a->prev), prev_hex);
	pthread_mutex_unlock(&a->lock);
}
