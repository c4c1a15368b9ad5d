/* Audit log writer: hash chain, group-committed fsync, segments, signed
 * checkpoints, torn-tail recovery and self-recovery after I/O failures. */
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

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "log.h"

#define SEGMENT_PREFIX "audit-"
#define SEGMENT_SUFFIX ".jsonl"
#define CHECKPOINTS "checkpoints.jsonl"
#define MAX_LINE (4u << 20)
#define DEFAULT_SEGMENT_BYTES ((uint64_t)64 << 20)

struct audit {
	char *dir;
	char *path;			/* current segment */
	int fd;
	uint64_t first_seq;		/* of the current segment */
	uint64_t segment_bytes;
	pthread_mutex_t lock;
	/* Group commit: the waiters of fsync number n wait on synced[n & 1];
	 * those that wrote after it started wait for n + 1 on the other. */
	pthread_cond_t synced[2];
	uint64_t sync_epoch;		/* number of the running or last fsync */
	uint64_t sync_target;		/* records < sync_target: covered by it */
	uint64_t next_seq;		/* seq of the next record */
	uint64_t written_seq;		/* records < written_seq are in the file */
	uint64_t durable_seq;		/* records < durable_seq are fsynced */
	off_t size;			/* bytes of whole records in the segment */
	off_t durable_size;		/* of those, fsynced */
	unsigned char prev[SHA256_DIGEST_LENGTH];	/* hash of line next_seq-1 */
	unsigned char seg_prev[SHA256_DIGEST_LENGTH];	/* prev of the segment's first line */
	unsigned char durable_hash[SHA256_DIGEST_LENGTH]; /* of durable_seq-1 */
	int syncing;
	int failed;			/* a write or fsync failed: fail closed */
	int64_t failed_since;
	int group_commit;
	uint64_t n_records, n_fsyncs, n_failures;
	int64_t last_recover_try;

	/* Checkpoints. */
	pthread_mutex_t cp_lock;
	int cp_fd;
	off_t cp_size;
	audit_sign_fn sign;
	void *sign_arg;
	char kid[64];
	char *origin;
	uint64_t every_n;
	int64_t every_us;
	int64_t last_cp_seq;		/* -1: none */
	int64_t last_cp_time;
	json_t *last_cp;
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

static int
segment_name_ok(const char *name, uint64_t *first)
{
	size_t plen = strlen(SEGMENT_PREFIX), slen = strlen(SEGMENT_SUFFIX);
	size_t n = strlen(name), i;

	if (n != plen + 12 + slen || strncmp(name, SEGMENT_PREFIX, plen) != 0 ||
	    strcmp(name + n - slen, SEGMENT_SUFFIX) != 0)
		return 0;
	for (i = plen; i < plen + 12; i++)
		if (name[i] < '0' || name[i] > '9')
			return 0;
	if (first != NULL)
		*first = strtoull(name + plen, NULL, 10);
	return 1;
}

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Segment names in `dir`, sorted (fixed-width numbers: name order is seq
 * order). *names and each name are owned by the caller. */
static int
list_segments(const char *dir, char ***names, size_t *n)
{
	struct dirent *de;
	char **v = NULL, **nv;
	size_t cnt = 0, cap = 0;
	DIR *d;

	*names = NULL;
	*n = 0;
	if ((d = opendir(dir)) == NULL) {
		log_error("audit: cannot open %s: %s", dir, strerror(errno));
		return KM_ERR_AUDIT;
	}
	while ((de = readdir(d)) != NULL) {
		if (!segment_name_ok(de->d_name, NULL))
			continue;
		if (cnt == cap) {
			cap = cap ? cap * 2 : 16;
			if ((nv = realloc(v, cap * sizeof(*v))) == NULL)
				goto nomem;
			v = nv;
		}
		if ((v[cnt] = strdup(de->d_name)) == NULL)
			goto nomem;
		cnt++;
	}
	closedir(d);
	if (cnt > 0)
		qsort(v, cnt, sizeof(*v), cmp_names);
	*names = v;
	*n = cnt;
	return KM_OK;
nomem:
	closedir(d);
	while (cnt > 0)
		free(v[--cnt]);
	free(v);
	return KM_ERR_NOMEM;
}

static void
free_names(char **names, size_t n)
{
	while (n > 0)
		free(names[--n]);
	free(names);
}

static int
read_fd(int fd, unsigned char **data, off_t *size)
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
	buf[got] = '\0';
	*data = buf;
	*size = got;
	return KM_OK;
}

static int
read_path(const char *path, unsigned char **data, off_t *size)
{
	int fd, r;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return errno == ENOENT ? KM_ERR_NOT_FOUND : KM_ERR_AUDIT;
	r = read_fd(fd, data, size);
	close(fd);
	return r;
}

static char *
join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);

	if (p != NULL)
		snprintf(p, n, "%s/%s", dir, name);
	return p;
}

/* 1 when the line data[start..end-1) is a record that continues the
 * chain: it has seq, ts and prev; its seq is one more than the line
 * before (or the segment's first seq) and its prev is that line's hash
 * (or the link into this segment). */
static int
line_continues(struct audit *a, const unsigned char *data, off_t start,
    off_t end, uint64_t *seq_out)
{
	unsigned char want[SHA256_DIGEST_LENGTH];
	char want_hex[2 * SHA256_DIGEST_LENGTH + 1];
	json_t *rec, *before, *v;
	uint64_t want_seq;
	off_t bstart;
	const char *prev;
	int ok = 0;

	rec = json_loadb((const char *)data + start, (size_t)(end - 1 - start),
	    0, NULL);
	if (rec == NULL || !json_is_integer(v = json_object_get(rec, "seq")) ||
	    json_integer_value(v) < 0 ||
	    !json_is_string(json_object_get(rec, "ts")) ||
	    (prev = json_string_value(json_object_get(rec, "prev"))) == NULL)
		goto out;
	*seq_out = (uint64_t)json_integer_value(v);
	if (start == 0) {
		want_seq = a->first_seq;
		memcpy(want, a->seg_prev, sizeof(want));
	} else {
		bstart = start - 1;
		while (bstart > 0 && data[bstart - 1] != '\n')
			bstart--;
		before = json_loadb((const char *)data + bstart,
		    (size_t)(start - 1 - bstart), 0, NULL);
		v = json_object_get(before, "seq");
		want_seq = json_is_integer(v) && json_integer_value(v) >= 0 ?
		    (uint64_t)json_integer_value(v) + 1 : UINT64_MAX;
		json_decref(before);
		SHA256(data + bstart, (size_t)(start - 1 - bstart), want);
	}
	km_hex(want, sizeof(want), want_hex);
	ok = *seq_out == want_seq && strcmp(prev, want_hex) == 0;
out:
	json_decref(rec);
	return ok;
}

/* Reads the tail of the current segment: cuts a torn last line and sets
 * next_seq and prev from the last whole line. *cut is the bytes cut. */
static int
recover_tail(struct audit *a, off_t *cut)
{
	unsigned char *data = NULL;
	off_t size, end, start;
	uint64_t seq = 0;
	int r;

	*cut = 0;
	if ((r = read_fd(a->fd, &data, &size)) != KM_OK)
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
		/* A new segment: the chain goes on from the previous one. */
		a->next_seq = a->first_seq;
		r = KM_OK;
		goto out;
	}
	start = end - 1;
	while (start > 0 && data[start - 1] != '\n')
		start--;
	if (!line_continues(a, data, start, end, &seq)) {
		log_error("audit: last record of %s is not valid or does not "
		    "continue the chain; refusing to append after it", a->path);
		r = KM_ERR_AUDIT;
		goto out;
	}
	a->next_seq = seq + 1;
	SHA256(data + start, (size_t)(end - 1 - start), a->prev);
	r = KM_OK;
out:
	free(data);
	return r;
}

/* The hash of the last line of segment `name` (the chain link into the
 * next segment). */
static int
last_line_hash(const char *dir, const char *name, unsigned char hash[32])
{
	unsigned char *data = NULL;
	char *path = join(dir, name);
	off_t size, end, start;
	int r;

	if (path == NULL)
		return KM_ERR_NOMEM;
	if ((r = read_path(path, &data, &size)) != KM_OK)
		goto out;
	end = size;
	if (end == 0 || data[end - 1] != '\n') {
		log_error("audit: sealed segment %s does not end in a whole line",
		    path);
		r = KM_ERR_AUDIT;
		goto out;
	}
	start = end - 1;
	while (start > 0 && data[start - 1] != '\n')
		start--;
	SHA256(data + start, (size_t)(end - 1 - start), hash);
	r = KM_OK;
out:
	free(data);
	free(path);
	return r;
}

static int
open_segment(struct audit *a, const char *name, uint64_t first)
{
	free(a->path);
	if ((a->path = join(a->dir, name)) == NULL)
		return KM_ERR_NOMEM;
	a->fd = open(a->path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (a->fd < 0) {
		log_error("audit: cannot open %s: %s", a->path, strerror(errno));
		return KM_ERR_AUDIT;
	}
	a->first_seq = first;
	a->size = a->durable_size = 0;
	return fsync_dir(a->dir);
}

/* Finds the line of record `seq` and hashes it. KM_ERR_NOT_FOUND when the
 * log has no such record. */
static int
record_hash(struct audit *a, uint64_t seq, unsigned char hash[32])
{
	char **names = NULL, *path = NULL;
	size_t n = 0, i, pick = 0;
	unsigned char *data = NULL;
	uint64_t first = 0, f, cur;
	off_t size, pos = 0, eol;
	int r, found = 0;

	if ((r = list_segments(a->dir, &names, &n)) != KM_OK)
		return r;
	for (i = 0; i < n; i++) {
		if (segment_name_ok(names[i], &f) && f <= seq) {
			pick = i;
			first = f;
			found = 1;
		}
	}
	r = KM_ERR_NOT_FOUND;
	if (!found)
		goto out;
	if ((path = join(a->dir, names[pick])) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	if ((r = read_path(path, &data, &size)) != KM_OK)
		goto out;
	r = KM_ERR_NOT_FOUND;
	for (cur = first; pos < size; cur++) {
		for (eol = pos; eol < size && data[eol] != '\n'; eol++)
			;
		if (eol == size)
			break;
		if (cur == seq) {
			SHA256(data + pos, (size_t)(eol - pos), hash);
			r = KM_OK;
			break;
		}
		pos = eol + 1;
	}
out:
	free(data);
	free(path);
	free_names(names, n);
	return r;
}

static json_t *
read_last_checkpoint(const char *dir, off_t *size)
{
	unsigned char *data = NULL;
	char *path = join(dir, CHECKPOINTS);
	off_t sz = 0, end, start;
	json_t *cp = NULL;

	*size = 0;
	if (path == NULL || read_path(path, &data, &sz) != KM_OK)
		goto out;
	end = sz;
	while (end > 0 && data[end - 1] != '\n')
		end--;
	*size = end;
	if (end == 0)
		goto out;
	start = end - 1;
	while (start > 0 && data[start - 1] != '\n')
		start--;
	cp = json_loadb((const char *)data + start, (size_t)(end - 1 - start),
	    0, NULL);
out:
	free(data);
	free(path);
	return cp;
}

/* The log must contain the newest checkpoint's record with the same hash:
 * anything else means records were cut or rewritten. */
static int
check_against_checkpoint(struct audit *a)
{
	unsigned char want[32], have[32];
	const char *hash_hex;
	json_int_t seq;
	json_t *cp = a->last_cp;

	if (cp == NULL)
		return KM_OK;
	seq = json_integer_value(json_object_get(cp, "seq"));
	hash_hex = json_string_value(json_object_get(cp, "hash"));
	if (seq < 0 || hash_hex == NULL || km_unhex(hash_hex, want, 32) != KM_OK) {
		log_error("audit: newest checkpoint in %s/%s is malformed", a->dir,
		    CHECKPOINTS);
		return KM_ERR_AUDIT;
	}
	if ((uint64_t)seq >= a->next_seq) {
		log_error("audit: the log ends at seq %" PRIu64 " but the newest "
		    "checkpoint seals seq %lld: records are missing; refusing to "
		    "start", a->next_seq ? a->next_seq - 1 : 0, (long long)seq);
		return KM_ERR_AUDIT;
	}
	if (record_hash(a, (uint64_t)seq, have) != KM_OK ||
	    CRYPTO_memcmp(want, have, 32) != 0) {
		log_error("audit: record %lld does not match the newest checkpoint:"
		    " the log was rewritten; refusing to start", (long long)seq);
		return KM_ERR_AUDIT;
	}
	a->last_cp_seq = seq;
	return KM_OK;
}

static int
open_checkpoints(struct audit *a)
{
	char *path = join(a->dir, CHECKPOINTS);
	int r = KM_OK;

	if (path == NULL)
		return KM_ERR_NOMEM;
	a->last_cp = read_last_checkpoint(a->dir, &a->cp_size);
	a->cp_fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (a->cp_fd < 0) {
		log_error("audit: cannot open %s: %s", path, strerror(errno));
		r = KM_ERR_AUDIT;
	} else if (ftruncate(a->cp_fd, a->cp_size) != 0) {
		/* A torn checkpoint line from a crash carries no signature
		 * anyone relied on; drop it. */
		log_error("audit: cannot cut %s: %s", path, strerror(errno));
		r = KM_ERR_AUDIT;
	}
	free(path);
	return r;
}

/* First and last line of a sealed segment: seq of each and the hash of
 * the last, read without loading the middle. */
static int
segment_edges(const char *path, json_int_t *first_seq, json_int_t *first_prev_ok,
    const unsigned char want_prev[32], json_int_t *last_seq,
    unsigned char last_hash[32])
{
	unsigned char *buf = NULL;
	char want_hex[65];
	json_t *rec = NULL;
	struct stat st;
	size_t chunk = 1 << 16, n;
	ssize_t got;
	off_t from;
	int fd, r = KM_ERR_AUDIT;

	km_hex(want_prev, 32, want_hex);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return KM_ERR_AUDIT;
	if (fstat(fd, &st) != 0 || st.st_size == 0 ||
	    (buf = malloc(MAX_LINE + 1)) == NULL)
		goto out;
	/* First line. */
	n = st.st_size < (off_t)MAX_LINE ? (size_t)st.st_size : MAX_LINE;
	if ((got = pread(fd, buf, n, 0)) <= 0)
		goto out;
	buf[got] = '\0';
	if ((n = strcspn((char *)buf, "\n")) == (size_t)got ||
	    (rec = json_loadb((char *)buf, n, 0, NULL)) == NULL)
		goto out;
	*first_seq = json_integer_value(json_object_get(rec, "seq"));
	*first_prev_ok = json_is_string(json_object_get(rec, "prev")) &&
	    strcmp(json_string_value(json_object_get(rec, "prev")), want_hex) == 0;
	json_decref(rec);
	rec = NULL;
	if (last_seq == NULL) {		/* the live segment: its tail may be torn */
		r = KM_OK;
		goto out;
	}
	/* Last line: read back from the end until a whole line is held. */
	for (;;) {
		from = st.st_size > (off_t)chunk ? st.st_size - (off_t)chunk : 0;
		if ((got = pread(fd, buf, (size_t)(st.st_size - from), from)) <= 0)
			goto out;
		if (buf[got - 1] != '\n')
			goto out;
		for (n = (size_t)got - 1; n > 0 && buf[n - 1] != '\n'; n--)
			;
		if (n > 0 || from == 0)
			break;
		if (chunk >= MAX_LINE)
			goto out;
		chunk *= 4;
	}
	if ((rec = json_loadb((char *)buf + n, (size_t)got - 1 - n, 0, NULL)) == NULL)
		goto out;
	*last_seq = json_integer_value(json_object_get(rec, "seq"));
	SHA256(buf + n, (size_t)got - 1 - n, last_hash);
	r = KM_OK;
out:
	json_decref(rec);
	free(buf);
	close(fd);
	return r;
}

/* Every sealed segment must start where the one before ended, with the
 * right link: a segment deleted or replaced in the middle of the log is
 * refused at start, not only by an auditor's verify. */
static int
check_segment_links(const char *dir, char **names, size_t n)
{
	unsigned char prev[32] = { 0 }, last[32];
	json_int_t first, last_seq = -1, prev_ok;
	uint64_t named;
	size_t i;
	char *path;
	int r;

	for (i = 0; i < n; i++) {
		int live = i + 1 == n;

		(void)segment_name_ok(names[i], &named);
		if ((path = join(dir, names[i])) == NULL)
			return KM_ERR_NOMEM;
		r = segment_edges(path, &first, &prev_ok, prev,
		    live ? NULL : &last_seq, last);
		free(path);
		/* An empty live segment (just rolled) has nothing to check. */
		if (live && r != KM_OK)
			break;
		if (r != KM_OK || first != (json_int_t)named ||
		    (i > 0 && !prev_ok) || (i == 0 && named == 0 && !prev_ok)) {
			log_error("audit: segment %s/%s does not continue the "
			    "chain; refusing to start", dir, names[i]);
			return KM_ERR_AUDIT;
		}
		if (live)
			break;
		(void)segment_name_ok(names[i + 1], &named);
		if (last_seq + 1 != (json_int_t)named) {
			log_error("audit: records %lld..%llu are missing before "
			    "%s/%s; refusing to start", (long long)last_seq + 1,
			    (unsigned long long)named - 1, dir, names[i + 1]);
			return KM_ERR_AUDIT;
		}
		memcpy(prev, last, sizeof(prev));
	}
	return KM_OK;
}

static int
open_current(struct audit *a, off_t *cut)
{
	char **names = NULL, *name = NULL;
	size_t n = 0;
	uint64_t first = 0;
	int r;

	memset(a->prev, 0, sizeof(a->prev));
	if ((r = list_segments(a->dir, &names, &n)) != KM_OK)
		return r;
	if ((r = check_segment_links(a->dir, names, n)) != KM_OK)
		goto out;
	if (n == 0) {
		name = strdup(SEGMENT_PREFIX "000000000000" SEGMENT_SUFFIX);
	} else {
		name = strdup(names[n - 1]);
		(void)segment_name_ok(name ? name : "", &first);
		/* The first record of a segment links to the last of the
		 * one before. */
		if (n > 1 && (r = last_line_hash(a->dir, names[n - 2],
		    a->prev)) != KM_OK)
			goto out;
	}
	if (name == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	memcpy(a->seg_prev, a->prev, sizeof(a->prev));
	if ((r = open_segment(a, name, first)) != KM_OK)
		goto out;
	r = recover_tail(a, cut);
out:
	free(name);
	free_names(names, n);
	return r;
}

int
audit_open(const char *dir, struct audit **out)
{
	struct audit *a;
	off_t cut = 0;
	int r = KM_ERR_NOMEM;

	*out = NULL;
	if ((a = calloc(1, sizeof(*a))) == NULL)
		return KM_ERR_NOMEM;
	a->fd = a->cp_fd = -1;
	a->last_cp_seq = -1;
	a->segment_bytes = DEFAULT_SEGMENT_BYTES;
	a->group_commit = 1;
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->synced[0], NULL);
	pthread_cond_init(&a->synced[1], NULL);
	pthread_mutex_init(&a->cp_lock, NULL);
	if ((a->dir = strdup(dir)) == NULL)
		goto out;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		log_error("audit: cannot create %s: %s", dir, strerror(errno));
		r = KM_ERR_AUDIT;
		goto out;
	}
	if ((r = open_current(a, &cut)) != KM_OK ||
	    (r = open_checkpoints(a)) != KM_OK ||
	    (r = check_against_checkpoint(a)) != KM_OK)
		goto out;
	a->written_seq = a->durable_seq = a->next_seq;
	a->durable_size = a->size;
	memcpy(a->durable_hash, a->prev, sizeof(a->prev));
	if (cut > 0) {
		json_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:i, s:n, s:n, s:I}",
		    "request_id", "", "actor", "kmsd", "op", "recovery",
		    "outcome", "ok", "status", 0, "key", "version",
		    "cut_bytes", (json_int_t)cut);

		r = rec ? audit_append(a, rec, NULL) : KM_ERR_NOMEM;
		json_decref(rec);
		if (r != KM_OK)
			goto out;
	}
	*out = a;
	a = NULL;
	r = KM_OK;
out:
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
	if (a->cp_fd >= 0)
		close(a->cp_fd);
	pthread_mutex_destroy(&a->lock);
	pthread_cond_destroy(&a->synced[0]);
	pthread_cond_destroy(&a->synced[1]);
	pthread_mutex_destroy(&a->cp_lock);
	json_decref(a->last_cp);
	free(a->origin);
	free(a->path);
	free(a->dir);
	free(a);
}

void
audit_set_segment_bytes(struct audit *a, uint64_t bytes)
{
	pthread_mutex_lock(&a->lock);
	a->segment_bytes = bytes > 0 ? bytes : DEFAULT_SEGMENT_BYTES;
	pthread_mutex_unlock(&a->lock);
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

/* The JSON text of `rec` without any seq/ts/prev of its own (the writer
 * sets those); built before the lock is taken. */
static char *
record_body(json_t *rec)
{
	json_t *copy = NULL;
	char *s;

	if (json_object_get(rec, "seq") != NULL ||
	    json_object_get(rec, "ts") != NULL ||
	    json_object_get(rec, "prev") != NULL) {
		if ((copy = json_copy(rec)) == NULL)
			return NULL;
		json_object_del(copy, "seq");
		json_object_del(copy, "ts");
		json_object_del(copy, "prev");
		rec = copy;
	}
	s = json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(copy);
	return s;
}

/* The line: seq/ts/prev first, then the members of `body` (record_body)
 * in their order. Called with the lock. */
static char *
format_line(struct audit *a, const char *body, size_t *len)
{
	char ts[40], prev_hex[65], head[160], *line;
	size_t hlen, blen = strlen(body);
	int n;

	km_time_format(km_now_us(), 1, ts, sizeof(ts));
	km_hex(a->prev, sizeof(a->prev), prev_hex);
	n = snprintf(head, sizeof(head), "{\"seq\":%" PRIu64 ",\"ts\":\"%s\","
	    "\"prev\":\"%s\"", a->next_seq, ts, prev_hex);
	if (n < 0 || (size_t)n >= sizeof(head) || blen < 2 || body[0] != '{')
		return NULL;
	hlen = (size_t)n;
	/* Room for the newline the caller adds. */
	if ((line = malloc(hlen + blen + 2)) == NULL)
		return NULL;
	memcpy(line, head, hlen);
	if (blen == 2) {
		line[hlen] = '}';
		*len = hlen + 1;
	} else {
		line[hlen] = ',';
		memcpy(line + hlen + 1, body + 1, blen - 1);
		*len = hlen + blen;
	}
	line[*len] = '\0';
	return line;
}

/* Runs one fsync covering every record written so far; with group
 * commit the lock is released across it. Called with the lock. */
static void
run_sync(struct audit *a)
{
	unsigned char hash[SHA256_DIGEST_LENGTH];
	off_t target_size = a->size;
	uint64_t epoch;
	int rc, fd = a->fd;

	a->syncing = 1;
	epoch = ++a->sync_epoch;
	a->sync_target = a->written_seq;
	memcpy(hash, a->prev, sizeof(hash));
	/* Without group commit the lock is held across the fsync, so
	 * every record pays for its own. */
	if (a->group_commit)
		pthread_mutex_unlock(&a->lock);
	rc = fdatasync(fd);
	if (a->group_commit)
		pthread_mutex_lock(&a->lock);
	a->syncing = 0;
	a->n_fsyncs++;
	if (rc != 0) {
		log_error("audit: fdatasync of %s failed: %s", a->path,
		    strerror(errno));
		a->failed = 1;
		a->failed_since = km_now_us();
		a->n_failures++;
	} else if (a->sync_target > a->durable_seq) {
		a->durable_seq = a->sync_target;
		a->durable_size = target_size;
		memcpy(a->durable_hash, hash, sizeof(hash));
	}
	/* Wake only the threads this fsync covered; of those that wrote
	 * during it, one is woken to run the next (all of them on failure). */
	pthread_cond_broadcast(&a->synced[epoch & 1]);
	if (a->failed)
		pthread_cond_broadcast(&a->synced[(epoch + 1) & 1]);
	else if (a->written_seq > a->durable_seq)
		pthread_cond_signal(&a->synced[(epoch + 1) & 1]);
}

/* Waits until record `seq` is durable, running the fsync itself when no
 * other thread is: every thread that wrote while an fsync was running is
 * covered by the next one (group commit). Called and returns with the lock. */
static int
wait_durable(struct audit *a, uint64_t seq)
{
	while (a->durable_seq <= seq && !a->failed) {
		if (a->syncing) {
			uint64_t e = a->sync_epoch + (seq < a->sync_target ? 0 : 1);

			pthread_cond_wait(&a->synced[e & 1], &a->lock);
			continue;
		}
		run_sync(a);
	}
	return a->durable_seq > seq ? KM_OK : KM_ERR_AUDIT;
}

/* Seals the current segment and starts the next one at next_seq. Called
 * with the lock; waits out a running fsync so it never hits a closed fd. */
static int
roll_segment(struct audit *a)
{
	char name[64];
	int r;

	while (a->syncing)
		pthread_cond_wait(&a->synced[a->sync_epoch & 1], &a->lock);
	/* Another writer may have rolled, or failed, while this one waited. */
	if (a->failed)
		return KM_ERR_AUDIT;
	if ((uint64_t)a->size < a->segment_bytes)
		return KM_OK;
	if (a->durable_seq < a->written_seq) {
		if (fdatasync(a->fd) != 0) {
			log_error("audit: fdatasync of %s failed: %s", a->path,
			    strerror(errno));
			a->failed = 1;
			return KM_ERR_AUDIT;
		}
		a->durable_seq = a->written_seq;
		memcpy(a->durable_hash, a->prev, sizeof(a->prev));
	}
	snprintf(name, sizeof(name), SEGMENT_PREFIX "%012" PRIu64 SEGMENT_SUFFIX,
	    a->next_seq);
	close(a->fd);
	a->fd = -1;
	memcpy(a->seg_prev, a->prev, sizeof(a->prev));
	if ((r = open_segment(a, name, a->next_seq)) != KM_OK) {
		a->failed = 1;
		return r;
	}
	log_info("audit: new segment %s", a->path);
	return KM_OK;
}

/* Writes one record and waits until it is durable. Called with the lock,
 * the log not failed. */
static int
append_locked(struct audit *a, const char *body, uint64_t *seq)
{
	char *line = NULL;
	size_t len = 0;
	uint64_t my;
	int r;

	if ((uint64_t)a->size >= a->segment_bytes &&
	    (r = roll_segment(a)) != KM_OK)
		goto out;
	if ((line = format_line(a, body, &len)) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
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
		 * chain stays whole; try_recover retries if this fails too. */
		if (ftruncate(a->fd, a->size) != 0)
			log_error("audit: cannot cut partial line: %s",
			    strerror(errno));
		a->failed = 1;
		a->failed_since = km_now_us();
		a->n_failures++;
		r = KM_ERR_AUDIT;
		goto out;
	}
	SHA256((unsigned char *)line, len, a->prev);
	a->size += (off_t)(len + 1);
	my = a->next_seq++;
	a->written_seq = a->next_seq;
	a->n_records++;
	r = wait_durable(a, my);
	if (r == KM_OK && seq != NULL)
		*seq = my;
out:
	/* A writer told to run the next fsync may fail here instead; wake
	 * every waiter so that none sleeps on with no fsync to come. */
	if (a->failed) {
		pthread_cond_broadcast(&a->synced[0]);
		pthread_cond_broadcast(&a->synced[1]);
	}
	free(line);
	return r;
}

void
audit_stats(struct audit *a, uint64_t *records, uint64_t *fsyncs,
    uint64_t *failures)
{
	pthread_mutex_lock(&a->lock);
	*records = a->n_records;
	*fsyncs = a->n_fsyncs;
	*failures = a->n_failures;
	pthread_mutex_unlock(&a->lock);
}

void
audit_set_group_commit(struct audit *a, int on)
{
	pthread_mutex_lock(&a->lock);
	a->group_commit = on;
	pthread_mutex_unlock(&a->lock);
}

/* After a failed write or fsync: re-reads the segment tail, goes on from
 * what is really on disk, and proves the log writable by making an
 * `audit.resume` record durable. Called with the lock, at most once a
 * second; the log stays failed unless that record lands. */
static void
try_recover(struct audit *a)
{
	int64_t now = km_now_us(), since_us = a->failed_since;
	char since[40], *body;
	json_t *rec;
	off_t cut = 0;

	if (!a->failed || a->syncing || now - a->last_recover_try < 1000000)
		return;
	a->last_recover_try = now;
	if (a->fd < 0 || ftruncate(a->fd, a->size) != 0 || fdatasync(a->fd) != 0)
		return;
	if (recover_tail(a, &cut) != KM_OK)
		return;
	a->written_seq = a->durable_seq = a->next_seq;
	a->durable_size = a->size;
	memcpy(a->durable_hash, a->prev, sizeof(a->prev));
	km_time_format(since_us, 1, since, sizeof(since));
	rec = json_pack("{s:s, s:s, s:s, s:s, s:i, s:n, s:n, s:s}",
	    "request_id", "", "actor", "kmsd", "op", "audit.resume",
	    "outcome", "ok", "status", 0, "key", "version", "failed_since", since);
	body = rec ? record_body(rec) : NULL;
	json_decref(rec);
	if (body == NULL)
		return;
	a->failed = 0;
	if (append_locked(a, body, NULL) == KM_OK) {
		log_warn("audit: log writable again at seq %" PRIu64,
		    a->next_seq - 1);
	} else {
		a->failed = 1;
		a->failed_since = since_us;
	}
	free(body);
}

static void maybe_checkpoint(struct audit *a);

int
audit_append(struct audit *a, json_t *rec, uint64_t *seq)
{
	char *body;
	int r;

	if (seq != NULL)
		*seq = 0;
	/* Serialised outside the lock: only seq, ts and prev need it. */
	if ((body = record_body(rec)) == NULL)
		return KM_ERR_NOMEM;
	pthread_mutex_lock(&a->lock);
	try_recover(a);
	r = a->failed ? KM_ERR_AUDIT : append_locked(a, body, seq);
	pthread_mutex_unlock(&a->lock);
	free(body);
	if (r == KM_OK)
		maybe_checkpoint(a);
	return r;
}

int
audit_check(struct audit *a)
{
	int r;

	pthread_mutex_lock(&a->lock);
	try_recover(a);
	r = a->failed ? KM_ERR_AUDIT : KM_OK;
	pthread_mutex_unlock(&a->lock);
	return r;
}

void
audit_head(struct audit *a, uint64_t *next_seq, char prev_hex[65])
{
	pthread_mutex_lock(&a->lock);
	*next_seq = a->durable_seq;
	km_hex(a->durable_hash, sizeof(a->durable_hash), prev_hex);
	pthread_mutex_unlock(&a->lock);
}

int
audit_set_signer(struct audit *a, audit_sign_fn sign, void *arg,
    const char *kid, const char *origin, uint64_t every_n,
    int64_t every_seconds)
{
	char *o = strdup(origin);

	if (o == NULL)
		return KM_ERR_NOMEM;
	pthread_mutex_lock(&a->cp_lock);
	free(a->origin);
	a->origin = o;
	a->sign = sign;
	a->sign_arg = arg;
	snprintf(a->kid, sizeof(a->kid), "%s", kid);
	a->every_n = every_n > 0 ? every_n : 1000;
	a->every_us = (every_seconds > 0 ? every_seconds : 60) * 1000000;
	a->last_cp_time = km_now_us();
	pthread_mutex_unlock(&a->cp_lock);
	return KM_OK;
}

/* Signs and appends the checkpoint for (seq, hash). Called with cp_lock. */
static int
write_checkpoint(struct audit *a, uint64_t seq, const unsigned char hash[32])
{
	char hash_hex[65], ts[40], *text = NULL, *b64 = NULL, *line = NULL;
	unsigned char *sig = NULL;
	size_t sig_len = 0, len;
	json_t *cp = NULL;
	int n, r;

	km_hex(hash, 32, hash_hex);
	km_time_format(km_now_us(), 1, ts, sizeof(ts));
	n = asprintf(&text, "kms-audit-checkpoint/v1\n%s\n%" PRIu64 "\n%s\n%s\n",
	    a->origin, seq, hash_hex, ts);
	if (n < 0) {
		text = NULL;
		r = KM_ERR_NOMEM;
		goto out;
	}
	if ((r = a->sign(a->sign_arg, (unsigned char *)text, (size_t)n, &sig,
	    &sig_len)) != KM_OK) {
		log_error("audit: signing checkpoint %" PRIu64 " failed: %s", seq,
		    km_strerror(r));
		goto out;
	}
	if ((r = km_b64_encode(sig, sig_len, &b64)) != KM_OK)
		goto out;
	cp = json_pack("{s:I, s:s, s:s, s:s, s:s}", "seq", (json_int_t)seq,
	    "hash", hash_hex, "ts", ts, "kid", a->kid, "sig", b64);
	if (cp == NULL ||
	    (line = json_dumps(cp, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	len = strlen(line);
	line[len] = '\n';
	if (write_all(a->cp_fd, line, len + 1) != 0 || fdatasync(a->cp_fd) != 0) {
		log_error("audit: writing checkpoint %" PRIu64 " failed: %s", seq,
		    strerror(errno));
		if (ftruncate(a->cp_fd, a->cp_size) != 0)
			log_error("audit: cannot cut partial checkpoint: %s",
			    strerror(errno));
		r = KM_ERR_AUDIT;
		goto out;
	}
	a->cp_size += (off_t)(len + 1);
	a->last_cp_seq = (int64_t)seq;
	a->last_cp_time = km_now_us();
	json_decref(a->last_cp);
	a->last_cp = cp;
	cp = NULL;
	r = KM_OK;
out:
	json_decref(cp);
	free(line);
	free(b64);
	free(sig);
	free(text);
	return r;
}

/* Checkpoints the durable head if it moved. Called with cp_lock. */
static int
checkpoint_locked(struct audit *a)
{
	unsigned char hash[32];
	uint64_t durable;

	if (a->sign == NULL)
		return KM_OK;
	pthread_mutex_lock(&a->lock);
	durable = a->durable_seq;
	memcpy(hash, a->durable_hash, sizeof(hash));
	pthread_mutex_unlock(&a->lock);
	if (durable == 0 || (int64_t)(durable - 1) <= a->last_cp_seq)
		return KM_OK;
	return write_checkpoint(a, durable - 1, hash);
}

int
audit_checkpoint(struct audit *a)
{
	int r;

	pthread_mutex_lock(&a->cp_lock);
	r = checkpoint_locked(a);
	pthread_mutex_unlock(&a->cp_lock);
	return r;
}

static void
maybe_checkpoint(struct audit *a)
{
	uint64_t durable;

	/* Only one thread signs; the others go on answering their clients. */
	if (pthread_mutex_trylock(&a->cp_lock) != 0)
		return;
	pthread_mutex_lock(&a->lock);
	durable = a->durable_seq;
	pthread_mutex_unlock(&a->lock);
	if (a->sign != NULL &&
	    (int64_t)durable - 1 - a->last_cp_seq >= (int64_t)a->every_n &&
	    checkpoint_locked(a) != KM_OK)
		log_warn("audit: count-due checkpoint not written");
	pthread_mutex_unlock(&a->cp_lock);
}

void
audit_tick(struct audit *a)
{
	if (audit_check(a) != KM_OK)
		return;
	pthread_mutex_lock(&a->cp_lock);
	if (a->sign != NULL && km_now_us() - a->last_cp_time >= a->every_us &&
	    checkpoint_locked(a) != KM_OK)
		log_warn("audit: time-due checkpoint not written");
	pthread_mutex_unlock(&a->cp_lock);
}

json_t *
audit_last_checkpoint(struct audit *a)
{
	json_t *cp;

	pthread_mutex_lock(&a->cp_lock);
	cp = a->last_cp ? json_deep_copy(a->last_cp) : NULL;
	pthread_mutex_unlock(&a->cp_lock);
	return cp;
}

static int
scan_segment(const char *path, uint64_t first, uint64_t from, uint64_t to,
    int (*cb)(void *, uint64_t, const char *, size_t), void *arg, int *stop)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	uint64_t seq = first;
	FILE *f;
	int r = KM_OK;

	if ((f = fopen(path, "r")) == NULL)
		return KM_ERR_AUDIT;
	while (!*stop && seq <= to && (n = getline(&line, &cap, f)) > 0) {
		if (line[n - 1] != '\n')
			break;		/* not yet whole */
		if (seq >= from && cb(arg, seq, line, (size_t)n - 1) != 0)
			*stop = 1;
		seq++;
	}
	if (ferror(f))
		r = KM_ERR_AUDIT;
	free(line);
	fclose(f);
	return r;
}

int
audit_scan(struct audit *a, uint64_t from, uint64_t to,
    int (*cb)(void *arg, uint64_t seq, const char *line, size_t len),
    void *arg)
{
	char **names = NULL, *path;
	size_t n = 0, i;
	uint64_t first, next_first, durable;
	int r, stop = 0;

	pthread_mutex_lock(&a->lock);
	durable = a->durable_seq;
	pthread_mutex_unlock(&a->lock);
	if (durable == 0)
		return KM_OK;
	if (to > durable - 1)
		to = durable - 1;
	if ((r = list_segments(a->dir, &names, &n)) != KM_OK)
		return r;
	for (i = 0; i < n && !stop && r == KM_OK; i++) {
		(void)segment_name_ok(names[i], &first);
		if (i + 1 < n && segment_name_ok(names[i + 1], &next_first) &&
		    next_first <= from)
			continue;
		if (first > to)
			break;
		if ((path = join(a->dir, names[i])) == NULL) {
			r = KM_ERR_NOMEM;
			break;
		}
		r = scan_segment(path, first, from, to, cb, arg, &stop);
		free(path);
	}
	free_names(names, n);
	return r;
}

int
audit_segments(struct audit *a, json_t **list)
{
	char **names = NULL, *path;
	size_t n = 0, i;
	uint64_t first;
	struct stat st;
	int r;

	*list = NULL;
	if ((r = list_segments(a->dir, &names, &n)) != KM_OK)
		return r;
	*list = json_array();
	for (i = 0; i < n; i++) {
		off_t bytes;

		(void)segment_name_ok(names[i], &first);
		if ((path = join(a->dir, names[i])) == NULL ||
		    stat(path, &st) != 0) {
			free(path);
			continue;
		}
		bytes = st.st_size;
		/* The live segment: only what is durable, as /files serves. */
		pthread_mutex_lock(&a->lock);
		if (a->path != NULL && strcmp(path, a->path) == 0)
			bytes = a->durable_size;
		pthread_mutex_unlock(&a->lock);
		free(path);
		json_array_append_new(*list, json_pack("{s:s, s:I, s:I}", "name",
		    names[i], "first_seq", (json_int_t)first, "bytes",
		    (json_int_t)bytes));
	}
	free_names(names, n);
	return *list ? KM_OK : KM_ERR_NOMEM;
}

int
audit_read_file(struct audit *a, const char *name, unsigned char **data,
    size_t *len)
{
	unsigned char *buf = NULL;
	char *path;
	off_t size = 0, limit = -1;
	int r;

	*data = NULL;
	*len = 0;
	if (!segment_name_ok(name, NULL) && strcmp(name, CHECKPOINTS) != 0)
		return KM_ERR_NOT_FOUND;
	if ((path = join(a->dir, name)) == NULL)
		return KM_ERR_NOMEM;
	pthread_mutex_lock(&a->lock);
	if (a->path != NULL && strcmp(path, a->path) == 0)
		limit = a->durable_size;
	pthread_mutex_unlock(&a->lock);
	r = read_path(path, &buf, &size);
	free(path);
	if (r != KM_OK)
		return r;
	if (limit >= 0 && size > limit)
		size = limit;
	/* Only whole lines: a record still being written is not served. */
	while (size > 0 && buf[size - 1] != '\n')
		size--;
	*data = buf;
	*len = (size_t)size;
	return KM_OK;
}
