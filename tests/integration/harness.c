/* Integration-test harness: runs a real kmsd on 127.0.0.1:0 with a temporary
 * SoftHSM token and talks to it over HTTP, checking every answer. */
#include "harness.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#define START_TIMEOUT_MS 15000
#define STOP_TIMEOUT_MS 15000
#define INIT_TIMEOUT_MS 60000
#define MAX_ANSWER (64u << 20)

extern char **environ;

static struct {
	char dir[PATH_MAX];
	char conf[PATH_MAX + 16];
	char port_file[PATH_MAX + 16];
	char log[PATH_MAX + 16];
	char kmsd[PATH_MAX];
	char kmsctl[PATH_MAX];
	char base_url[64];
	char admin[512];
	pid_t pid;
	CURL *curl;
	int curl_inited;
	int expect_503;
	/* every X-Request-Id seen: an open-addressing set */
	char (*ids)[33];
	size_t n_ids, cap_ids;
} H = { .pid = -1 };

/* --- small utilities ---------------------------------------------------- */

long long
ith_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
ith_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int
write_text(const char *path, const char *text, mode_t mode)
{
	int fd;
	size_t n = strlen(text), off = 0;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)) < 0)
		return -1;
	while (off < n) {
		ssize_t w = write(fd, text + off, n - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			close(fd);
			return -1;
		}
		off += (size_t)w;
	}
	return close(fd);
}

/* <dir>/officers/<name>.pem (private) and <name>.pub.pem for the three
 * officers every test kmsd registers at init (quorum 2). */
static int
officers_make(const char *dir)
{
	static const char *const names[] = { "alice", "bob", "carol" };
	char path[PATH_MAX + 64];
	EVP_PKEY *pk;
	size_t i;
	FILE *f;
	int ok;

	snprintf(path, sizeof(path), "%s/officers", dir);
	if (mkdir(path, 0700) != 0)
		return -1;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if ((pk = EVP_EC_gen("P-256")) == NULL)
			return -1;
		snprintf(path, sizeof(path), "%s/officers/%s.pem", dir, names[i]);
		ok = (f = fopen(path, "w")) != NULL &&
		    PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) == 1;
		if (f != NULL && fclose(f) != 0)
			ok = 0;
		snprintf(path, sizeof(path), "%s/officers/%s.pub.pem", dir, names[i]);
		ok = ok && (f = fopen(path, "w")) != NULL &&
		    PEM_write_PUBKEY(f, pk) == 1;
		if (ok && fclose(f) != 0)
			ok = 0;
		EVP_PKEY_free(pk);
		if (!ok)
			return -1;
	}
	return 0;
}

unsigned char *
ith_read_file(const char *path, size_t *len)
{
	FILE *f;
	unsigned char *buf = NULL;
	size_t cap = 0, n = 0;

	if (len != NULL)
		*len = 0;
	if ((f = fopen(path, "rb")) == NULL)
		return NULL;
	for (;;) {
		size_t got;

		if (n + 65536 + 1 > cap) {
			unsigned char *nb;

			cap = cap ? cap * 2 : 131072;
			if ((nb = realloc(buf, cap)) == NULL) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
		}
		got = fread(buf + n, 1, 65536, f);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		free(buf);
		fclose(f);
		return NULL;
	}
	fclose(f);
	buf[n] = '\0';
	if (len != NULL)
		*len = n;
	return buf;
}

static void
find_binary(char *out, size_t outlen, const char *env, const char *const *fallbacks)
{
	const char *v = getenv(env);
	size_t i;

	if (v != NULL && *v != '\0') {
		snprintf(out, outlen, "%s", v);
		return;
	}
	for (i = 0; fallbacks[i] != NULL; i++)
		if (access(fallbacks[i], X_OK) == 0) {
			snprintf(out, outlen, "%s", fallbacks[i]);
			return;
		}
	snprintf(out, outlen, "%s", fallbacks[0]);
}

/* Settings of the caller's environment must not leak into the daemon under
 * test (KMS_LISTEN would move it, KMS_PIN would override the token PIN). */
static void
scrub_environment(void)
{
	char *names[256];
	size_t n = 0, i;
	char **e;

	for (e = environ; *e != NULL && n < 256; e++) {
		const char *eq = strchr(*e, '=');

		if (strncmp(*e, "KMS_", 4) != 0 || eq == NULL)
			continue;
		if (strncmp(*e, "KMS_TEST_", 9) == 0)
			continue;
		names[n++] = strndup(*e, (size_t)(eq - *e));
	}
	for (i = 0; i < n; i++) {
		if (names[i] != NULL)
			unsetenv(names[i]);
		free(names[i]);
	}
}

/* Runs argv with stdout+stderr appended to `logpath`; returns the exit
 * status, or -1 when it could not run or did not finish in time. */
static int
run_command(char *const argv[], const char *logpath, long timeout_ms)
{
	pid_t pid;
	int status;
	long long deadline = ith_now_ms() + timeout_ms;

	if ((pid = fork()) < 0)
		return -1;
	if (pid == 0) {
		int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);
		int nul = open("/dev/null", O_RDONLY);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (nul >= 0)
			dup2(nul, 0);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execv(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);

		if (w == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
		if (w < 0 && errno != EINTR)
			return -1;
		if (ith_now_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			fprintf(stderr, "harness: %s did not finish in %ld ms\n",
			    argv[0], timeout_ms);
			return -1;
		}
		ith_sleep_ms(20);
	}
}

static void
kill_at_exit(void)
{
	if (H.pid > 0) {
		kill(H.pid, SIGKILL);
		waitpid(H.pid, NULL, 0);
		H.pid = -1;
	}
}

void
ith_print_log_tail(int lines)
{
	size_t len, i;
	unsigned char *buf;
	int seen = 0;

	if (H.dir[0] == '\0' || (buf = ith_read_file(H.log, &len)) == NULL)
		return;
	i = len;
	while (i > 0) {
		if (buf[i - 1] == '\n' && i != len && ++seen >= lines)
			break;
		i--;
	}
	fprintf(stderr, "---- last lines of %s ----\n%s---- end ----\n",
	    H.log, (char *)buf + i);
	free(buf);
}

/* --- request-id bookkeeping --------------------------------------------- */

static uint64_t
fnv1a(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

/* Returns 1 when `id` was new (and records it), 0 when seen before. */
static int
ids_insert(const char *id)
{
	size_t i;

	if (H.n_ids * 2 >= H.cap_ids) {
		size_t ncap = H.cap_ids ? H.cap_ids * 2 : 8192, j;
		char (*nids)[33] = calloc(ncap, sizeof(*nids));

		if (nids == NULL)
			return 1;
		for (j = 0; j < H.cap_ids; j++) {
			if (H.ids[j][0] == '\0')
				continue;
			i = fnv1a(H.ids[j]) & (ncap - 1);
			while (nids[i][0] != '\0')
				i = (i + 1) & (ncap - 1);
			memcpy(nids[i], H.ids[j], 33);
		}
		free(H.ids);
		H.ids = nids;
		H.cap_ids = ncap;
	}
	i = fnv1a(id) & (H.cap_ids - 1);
	while (H.ids[i][0] != '\0') {
		if (strcmp(H.ids[i], id) == 0)
			return 0;
		i = (i + 1) & (H.cap_ids - 1);
	}
	snprintf(H.ids[i], 33, "%s", id);
	H.n_ids++;
	return 1;
}

int
ith_record_request_id(const char *id)
{
	return ids_insert(id);
}

size_t
ith_request_ids_seen(void)
{
	return H.n_ids;
}

void
ith_expect_503(int on)
{
	H.expect_503 = on;
}

/* --- failure reporting -------------------------------------------------- */

static void
vfail(const char *file, int line, const char *fmt, va_list ap)
{
	char msg[2048];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	CU_assertImplementation(CU_FALSE, (unsigned)line, msg, file, "", CU_FALSE);
}

void
ith_fail_at(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfail(file, line, fmt, ap);
	va_end(ap);
}

int
ith_check_at(int cond, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	if (cond) {
		CU_assertImplementation(CU_TRUE, (unsigned)line, "", file, "", CU_FALSE);
		return 1;
	}
	va_start(ap, fmt);
	vfail(file, line, fmt, ap);
	va_end(ap);
	return 0;
}

/* --- HTTP --------------------------------------------------------------- */

struct answer {
	char *data;
	size_t len, cap;
	int overflow;
	struct ith_headers *h;
};

static size_t
on_body(char *p, size_t size, size_t nmemb, void *arg)
{
	struct answer *a = arg;
	size_t n = size * nmemb;

	if (a->len + n + 1 > MAX_ANSWER) {
		a->overflow = 1;
		return 0;
	}
	if (a->len + n + 1 > a->cap) {
		size_t ncap = a->cap ? a->cap : 4096;
		char *nd;

		while (ncap < a->len + n + 1)
			ncap *= 2;
		if ((nd = realloc(a->data, ncap)) == NULL)
			return 0;
		a->data = nd;
		a->cap = ncap;
	}
	memcpy(a->data + a->len, p, n);
	a->len += n;
	a->data[a->len] = '\0';
	return n;
}

static void
header_value(const char *p, size_t n, char *out, size_t outlen)
{
	while (n > 0 && (*p == ' ' || *p == '\t'))
		p++, n--;
	while (n > 0 && isspace((unsigned char)p[n - 1]))
		n--;
	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, p, n);
	out[n] = '\0';
}

static size_t
on_header(char *p, size_t size, size_t nmemb, void *arg)
{
	struct answer *a = arg;
	size_t n = size * nmemb;

	/* a new status line (after a 100 Continue) starts a new header set */
	if (n >= 5 && strncmp(p, "HTTP/", 5) == 0) {
		memset(a->h, 0, sizeof(*a->h));
		return n;
	}
	if (n > 13 && strncasecmp(p, "X-Request-Id:", 13) == 0) {
		a->h->n_request_id++;
		header_value(p + 13, n - 13, a->h->request_id,
		    sizeof(a->h->request_id));
	} else if (n > 13 && strncasecmp(p, "Content-Type:", 13) == 0)
		header_value(p + 13, n - 13, a->h->content_type,
		    sizeof(a->h->content_type));
	return n;
}

static int
curl_ready(void)
{
	if (!H.curl_inited) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return -1;
		H.curl_inited = 1;
	}
	if (H.curl == NULL && (H.curl = curl_easy_init()) == NULL)
		return -1;
	return 0;
}

/* Performs one request without any checks. Returns 0 with an answer,
 * -1 with `err` filled. */
static int
perform(const char *method, const char *path, const char *token,
    const void *body, size_t body_len, const char *const *extra,
    long *status, struct answer *a, char *err, size_t errlen)
{
	struct curl_slist *hl = NULL;
	char url[2048], auth[1024];
	CURLcode rc;
	size_t i;
	int r = -1;

	*status = 0;
	err[0] = '\0';
	if (curl_ready() != 0) {
		snprintf(err, errlen, "curl init failed");
		return -1;
	}
	if (H.base_url[0] == '\0') {
		snprintf(err, errlen, "kmsd is not running");
		return -1;
	}
	snprintf(url, sizeof(url), "%s%s", H.base_url, path);
	curl_easy_reset(H.curl);
	curl_easy_setopt(H.curl, CURLOPT_URL, url);
	curl_easy_setopt(H.curl, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(H.curl, CURLOPT_PROXY, "");
	curl_easy_setopt(H.curl, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(H.curl, CURLOPT_PROTOCOLS_STR, "http");
	curl_easy_setopt(H.curl, CURLOPT_TIMEOUT, 120L);
	curl_easy_setopt(H.curl, CURLOPT_CONNECTTIMEOUT, 5L);
	curl_easy_setopt(H.curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(H.curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(H.curl, CURLOPT_WRITEDATA, a);
	curl_easy_setopt(H.curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(H.curl, CURLOPT_HEADERDATA, a);
	if (token != NULL) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
		hl = curl_slist_append(hl, auth);
	}
	if (body != NULL)
		hl = curl_slist_append(hl, "Content-Type: application/json");
	for (i = 0; extra != NULL && extra[i] != NULL; i++)
		hl = curl_slist_append(hl, extra[i]);
	if (hl != NULL)
		curl_easy_setopt(H.curl, CURLOPT_HTTPHEADER, hl);
	if (strcmp(method, "HEAD") == 0)
		curl_easy_setopt(H.curl, CURLOPT_NOBODY, 1L);
	else if (body != NULL) {
		curl_easy_setopt(H.curl, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(H.curl, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)body_len);
		if (strcmp(method, "POST") != 0)
			curl_easy_setopt(H.curl, CURLOPT_CUSTOMREQUEST, method);
	} else if (strcmp(method, "GET") == 0)
		curl_easy_setopt(H.curl, CURLOPT_HTTPGET, 1L);
	else if (strcmp(method, "POST") == 0) {
		curl_easy_setopt(H.curl, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(H.curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
	} else
		curl_easy_setopt(H.curl, CURLOPT_CUSTOMREQUEST, method);
	rc = curl_easy_perform(H.curl);
	if (rc != CURLE_OK) {
		snprintf(err, errlen, "no answer: %s%s", curl_easy_strerror(rc),
		    a->overflow ? " (answer too large)" : "");
		goto out;
	}
	curl_easy_getinfo(H.curl, CURLINFO_RESPONSE_CODE, status);
	r = 0;
out:
	curl_slist_free_all(hl);
	return r;
}

static int
is_hex32(const char *s)
{
	size_t i;

	for (i = 0; i < 32; i++)
		if (!isxdigit((unsigned char)s[i]))
			return 0;
	return s[32] == '\0';
}

static int
is_snake(const char *s)
{
	if (*s < 'a' || *s > 'z')
		return 0;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
			return 0;
	return 1;
}

/* Global checks every answer must pass. */
static void
check_answer(const char *file, int line, const char *method, const char *path,
    long status, const char *raw, json_t *j, const struct ith_headers *h)
{
	json_t *err, *code, *msg, *rid;
	char snippet[300];

	snprintf(snippet, sizeof(snippet), "%.280s", raw ? raw : "");
	if (ith_check_at(h->n_request_id == 1, file, line,
	    "%s %s -> %ld: expected exactly one X-Request-Id header, got %d",
	    method, path, status, h->n_request_id) &&
	    ith_check_at(is_hex32(h->request_id), file, line,
	    "%s %s -> %ld: X-Request-Id '%s' is not 32 hex characters",
	    method, path, status, h->request_id))
		ith_check_at(ids_insert(h->request_id), file, line,
		    "%s %s -> %ld: X-Request-Id %s was already used by an earlier answer",
		    method, path, status, h->request_id);
	if (status >= 500)
		ith_check_at(status == 503 && H.expect_503, file, line,
		    "%s %s -> unexpected %ld: %s", method, path, status, snippet);
	if (status < 400)
		return;
	err = json_object_get(j, "error");
	code = json_object_get(err, "code");
	msg = json_object_get(err, "message");
	rid = json_object_get(err, "request_id");
	if (!ith_check_at(json_is_object(j) && json_is_object(err), file, line,
	    "%s %s -> %ld: error body is not {\"error\":{...}}: %s",
	    method, path, status, snippet))
		return;
	ith_check_at(json_is_string(code) && is_snake(json_string_value(code)),
	    file, line, "%s %s -> %ld: error.code missing or not snake_case: %s",
	    method, path, status, snippet);
	ith_check_at(json_is_string(msg) && json_string_length(msg) > 0, file,
	    line, "%s %s -> %ld: error.message missing or empty: %s", method,
	    path, status, snippet);
	ith_check_at(json_is_string(rid) &&
	    strcmp(json_string_value(rid), h->request_id) == 0, file, line,
	    "%s %s -> %ld: error.request_id %s differs from X-Request-Id %s",
	    method, path, status, json_is_string(rid) ? json_string_value(rid) :
	    "(missing)", h->request_id);
}

int
ith_request_raw_at(const char *file, int line, const char *method,
    const char *path, const char *token, const void *body, size_t body_len,
    const char *const *extra_headers, long *status, char **raw,
    size_t *raw_len, json_t **answer, struct ith_headers *headers)
{
	struct ith_headers hbuf;
	struct answer a = { NULL, 0, 0, 0, NULL };
	char err[256];
	long st = 0;
	json_t *j = NULL;

	if (status != NULL)
		*status = 0;
	if (raw != NULL)
		*raw = NULL;
	if (raw_len != NULL)
		*raw_len = 0;
	if (answer != NULL)
		*answer = NULL;
	memset(&hbuf, 0, sizeof(hbuf));
	a.h = &hbuf;
	if (perform(method, path, token, body, body_len, extra_headers, &st, &a,
	    err, sizeof(err)) != 0) {
		ith_fail_at(file, line, "%s %s: %s", method, path, err);
		free(a.data);
		if (headers != NULL)
			*headers = hbuf;
		return -1;
	}
	if (a.len > 0)
		j = json_loadb(a.data, a.len, 0, NULL);
	check_answer(file, line, method, path, st, a.data, j, &hbuf);
	if (status != NULL)
		*status = st;
	if (headers != NULL)
		*headers = hbuf;
	if (answer != NULL)
		*answer = j;
	else
		json_decref(j);
	if (raw_len != NULL)
		*raw_len = a.len;
	if (raw != NULL)
		*raw = a.data ? a.data : strdup("");
	else
		free(a.data);
	return 0;
}

int
ith_request_at(const char *file, int line, const char *method,
    const char *path, const char *token, const char *body, long *status,
    json_t **answer, struct ith_headers *headers)
{
	return ith_request_raw_at(file, line, method, path, token, body,
	    body ? strlen(body) : 0, NULL, status, NULL, NULL, answer, headers);
}

static const char *
code_of(json_t *j)
{
	const char *c = json_string_value(json_object_get(json_object_get(j,
	    "error"), "code"));

	return c ? c : "(none)";
}

json_t *
ith_call_at(const char *file, int line, const char *method, const char *path,
    const char *token, json_t *body, long expect, const char *code)
{
	char *text = NULL, *raw = NULL;
	long st;
	json_t *j = NULL;

	if (body != NULL) {
		text = json_dumps(body, JSON_COMPACT);
		json_decref(body);
	}
	if (ith_request_raw_at(file, line, method, path, token, text,
	    text ? strlen(text) : 0, NULL, &st, &raw, NULL, &j, NULL) != 0)
		goto out;
	if (!ith_check_at(st == expect, file, line,
	    "%s %s: expected %ld%s%s, got %ld: %.400s", method, path, expect,
	    code ? " " : "", code ? code : "", st, raw)) {
		json_decref(j);
		j = NULL;
		goto out;
	}
	if (code != NULL && !ith_check_at(strcmp(code_of(j), code) == 0, file,
	    line, "%s %s: expected error code %s, got %ld %s: %.400s", method,
	    path, code, st, code_of(j), raw)) {
		json_decref(j);
		j = NULL;
	}
	if (j == NULL && code == NULL && expect < 300 && raw && *raw)
		ith_fail_at(file, line, "%s %s -> %ld: answer is not JSON: %.200s",
		    method, path, st, raw);
out:
	free(text);
	free(raw);
	return j;
}

json_t *
ith_call_any_at(const char *file, int line, const char *method,
    const char *path, const char *token, const char *body, const long *expect,
    size_t n, long *got)
{
	char *raw = NULL, want[128] = "";
	long st;
	json_t *j = NULL;
	size_t i, off = 0;
	int ok = 0;

	if (got != NULL)
		*got = 0;
	if (ith_request_raw_at(file, line, method, path, token, body,
	    body ? strlen(body) : 0, NULL, &st, &raw, NULL, &j, NULL) != 0)
		return NULL;
	for (i = 0; i < n; i++) {
		ok |= st == expect[i];
		off += (size_t)snprintf(want + off, sizeof(want) - off, "%s%ld",
		    i ? "|" : "", expect[i]);
		if (off >= sizeof(want))
			off = sizeof(want) - 1;
	}
	ith_check_at(ok, file, line, "%s %s: expected %s, got %ld: %.400s",
	    method, path, want, st, raw);
	if (got != NULL)
		*got = st;
	free(raw);
	return j;
}

int
ith_expect_error_at(const char *file, int line, const char *method,
    const char *path, const char *token, json_t *body, long status,
    const char *code)
{
	json_t *j = ith_call_at(file, line, method, path, token, body, status,
	    code);

	if (j == NULL)
		return -1;
	json_decref(j);
	return 0;
}

/* --- lifecycle ---------------------------------------------------------- */

int
ith_running(void)
{
	return H.pid > 0;
}

pid_t
ith_pid(void)
{
	return H.pid;
}

int
ith_kill9(void)
{
	int status;

	if (H.pid <= 0)
		return -1;
	if (H.curl != NULL) {
		curl_easy_cleanup(H.curl);
		H.curl = NULL;
	}
	kill(H.pid, SIGKILL);
	waitpid(H.pid, &status, 0);
	H.pid = -1;
	H.base_url[0] = '\0';
	return 0;
}

const char *
ith_data_dir(void)
{
	return H.dir;
}

const char *
ith_base_url(void)
{
	return H.base_url;
}

const char *
ith_admin_token(void)
{
	return H.admin;
}

/* GET /v1/ready without any assertion: 1 when it answered 200. */
static int
probe_ready(void)
{
	struct ith_headers hb;
	struct answer a = { NULL, 0, 0, 0, &hb };
	char err[256];
	long st = 0;
	int ok;

	memset(&hb, 0, sizeof(hb));
	ok = perform("GET", "/v1/ready", NULL, NULL, 0, NULL, &st, &a, err,
	    sizeof(err)) == 0 && st == 200;
	if (ok && hb.request_id[0] != '\0')
		(void)ids_insert(hb.request_id);
	free(a.data);
	return ok;
}

int
ith_start(void)
{
	long long deadline;
	pid_t pid;
	int status;

	if (H.pid > 0) {
		fprintf(stderr, "harness: kmsd already running\n");
		return -1;
	}
	(void)unlink(H.port_file);
	H.base_url[0] = '\0';
	if ((pid = fork()) < 0) {
		perror("harness: fork");
		return -1;
	}
	if (pid == 0) {
		int fd = open(H.log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		int nul = open("/dev/null", O_RDONLY);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (nul >= 0)
			dup2(nul, 0);
		/* never outlive the test binary */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execl(H.kmsd, H.kmsd, "--config", H.conf, (char *)NULL);
		fprintf(stderr, "exec %s: %s\n", H.kmsd, strerror(errno));
		_exit(127);
	}
	H.pid = pid;
	deadline = ith_now_ms() + START_TIMEOUT_MS;
	while (ith_now_ms() < deadline) {
		pid_t w = waitpid(pid, &status, WNOHANG);

		if (w == pid) {
			H.pid = -1;
			fprintf(stderr, "harness: kmsd exited during start-up (%s %d)\n",
			    WIFEXITED(status) ? "status" : "signal",
			    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
			ith_print_log_tail(30);
			return -1;
		}
		if (H.base_url[0] == '\0') {
			unsigned char *p = ith_read_file(H.port_file, NULL);
			long port = p ? strtol((char *)p, NULL, 10) : 0;

			free(p);
			if (port > 0 && port < 65536)
				snprintf(H.base_url, sizeof(H.base_url),
				    "http://127.0.0.1:%ld", port);
		}
		if (H.base_url[0] != '\0' && probe_ready())
			return 0;
		ith_sleep_ms(50);
	}
	fprintf(stderr, "harness: kmsd not ready after %d ms (port file %s, url '%s')\n",
	    START_TIMEOUT_MS, H.port_file, H.base_url);
	ith_print_log_tail(30);
	(void)ith_stop(NULL, 0);
	return -1;
}

int
ith_stop(char *how, size_t howlen)
{
	long long deadline;
	int status = 0, killed = 0;
	pid_t w = 0;

	if (how != NULL && howlen > 0)
		how[0] = '\0';
	if (H.pid <= 0)
		return -1;
	/* drop the kept-alive connection first so the drain is not held up */
	if (H.curl != NULL) {
		curl_easy_cleanup(H.curl);
		H.curl = NULL;
	}
	kill(H.pid, SIGTERM);
	deadline = ith_now_ms() + STOP_TIMEOUT_MS;
	while (ith_now_ms() < deadline) {
		w = waitpid(H.pid, &status, WNOHANG);
		if (w == H.pid || (w < 0 && errno != EINTR))
			break;
		ith_sleep_ms(20);
	}
	if (w != H.pid) {
		killed = 1;
		kill(H.pid, SIGKILL);
		waitpid(H.pid, &status, 0);
	}
	H.pid = -1;
	H.base_url[0] = '\0';
	if (how != NULL && howlen > 0) {
		if (killed)
			snprintf(how, howlen, "did not stop within %d ms of SIGTERM; killed",
			    STOP_TIMEOUT_MS);
		else if (WIFEXITED(status))
			snprintf(how, howlen, "exited with status %d", WEXITSTATUS(status));
		else
			snprintf(how, howlen, "died of signal %d", WTERMSIG(status));
	}
	return (!killed && WIFEXITED(status) && WEXITSTATUS(status) == 0) ? 0 : 1;
}

int
ith_restart(void)
{
	char how[128];

	if (ith_stop(how, sizeof(how)) > 0)
		fprintf(stderr, "harness: kmsd %s\n", how);
	return ith_start();
}

int
ith_setup(const char *extra_conf)
{
	static const char *const kmsd_fallbacks[] = { "service/kmsd",
	    "../../service/kmsd", "build/service/kmsd", NULL };
	static const char *const kmsctl_fallbacks[] = { "tools/kmsctl",
	    "../../tools/kmsctl", "build/tools/kmsctl", NULL };
	char path[PATH_MAX + 64], *text = NULL, officers[PATH_MAX + 16];
	char *argv[10];
	unsigned char *tok;
	size_t n;
	int rc;

	scrub_environment();
	find_binary(H.kmsd, sizeof(H.kmsd), "KMSD_BIN", kmsd_fallbacks);
	find_binary(H.kmsctl, sizeof(H.kmsctl), "KMSCTL_BIN", kmsctl_fallbacks);
	if (access(H.kmsd, X_OK) != 0 || access(H.kmsctl, X_OK) != 0) {
		fprintf(stderr, "harness: kmsd (%s) or kmsctl (%s) is not executable;"
		    " set KMSD_BIN and KMSCTL_BIN\n", H.kmsd, H.kmsctl);
		return -1;
	}
	atexit(kill_at_exit);
	snprintf(H.dir, sizeof(H.dir), "/tmp/kmsd-it-XXXXXX");
	if (mkdtemp(H.dir) == NULL) {
		perror("harness: mkdtemp");
		H.dir[0] = '\0';
		return -1;
	}
	snprintf(H.conf, sizeof(H.conf), "%s/kmsd.conf", H.dir);
	snprintf(H.port_file, sizeof(H.port_file), "%s/kmsd.port", H.dir);
	snprintf(H.log, sizeof(H.log), "%s/kmsd.log", H.dir);

	snprintf(path, sizeof(path), "%s/tokens", H.dir);
	if (mkdir(path, 0700) != 0) {
		perror("harness: mkdir tokens");
		return -1;
	}
	if (asprintf(&text, "directories.tokendir = %s/tokens\n"
	    "objectstore.backend = file\nlog.level = ERROR\n", H.dir) < 0)
		return -1;
	snprintf(path, sizeof(path), "%s/softhsm2.conf", H.dir);
	rc = write_text(path, text, 0600);
	free(text);
	if (rc != 0 || setenv("SOFTHSM2_CONF", path, 1) != 0) {
		fprintf(stderr, "harness: cannot write %s\n", path);
		return -1;
	}
	if (asprintf(&text, "# written by the integration harness\n"
	    "data_dir = %s\nlisten = 127.0.0.1:0\nport_file = %s\n%s%s",
	    H.dir, H.port_file, extra_conf ? extra_conf : "",
	    extra_conf && *extra_conf && extra_conf[strlen(extra_conf) - 1] != '\n'
	    ? "\n" : "") < 0)
		return -1;
	rc = write_text(H.conf, text, 0600);
	free(text);
	if (rc != 0) {
		fprintf(stderr, "harness: cannot write %s\n", H.conf);
		return -1;
	}

	/* Three officers, quorum 2 (the ceremony suites sign with their
	 * keys; see ith_data_dir()/officers). */
	if (officers_make(H.dir) != 0) {
		fprintf(stderr, "harness: cannot make the officer keys\n");
		return -1;
	}
	snprintf(officers, sizeof(officers), "%s/officers", H.dir);
	argv[0] = H.kmsctl;
	argv[1] = "init";
	argv[2] = "--config";
	argv[3] = H.conf;
	argv[4] = "--init-token";
	argv[5] = "--officers";
	argv[6] = officers;
	argv[7] = "--quorum";
	argv[8] = "2";
	argv[9] = NULL;
	snprintf(path, sizeof(path), "%s/init.log", H.dir);
	if ((rc = run_command(argv, path, INIT_TIMEOUT_MS)) != 0) {
		unsigned char *log = ith_read_file(path, NULL);

		fprintf(stderr, "harness: %s init --config %s --init-token failed (%d):\n%s\n",
		    H.kmsctl, H.conf, rc, log ? (char *)log : "");
		free(log);
		return -1;
	}
	snprintf(path, sizeof(path), "%s/admin.token", H.dir);
	if ((tok = ith_read_file(path, &n)) == NULL) {
		fprintf(stderr, "harness: kmsctl init wrote no %s\n", path);
		return -1;
	}
	n = strcspn((char *)tok, "\r\n");
	tok[n] = '\0';
	snprintf(H.admin, sizeof(H.admin), "%s", (char *)tok);
	OPENSSL_cleanse(tok, n);
	free(tok);
	if (H.admin[0] == '\0') {
		fprintf(stderr, "harness: %s is empty\n", path);
		return -1;
	}
	if (curl_ready() != 0) {
		fprintf(stderr, "harness: libcurl init failed\n");
		return -1;
	}
	return ith_start();
}

static int
rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	(void)remove(p);	/* best effort: keep walking */
	return 0;
}

void
ith_teardown(void)
{
	char how[128];

	if (H.pid > 0 && ith_stop(how, sizeof(how)) > 0)
		fprintf(stderr, "harness: at teardown kmsd %s\n", how);
	if (H.curl != NULL) {
		curl_easy_cleanup(H.curl);
		H.curl = NULL;
	}
	if (H.curl_inited) {
		curl_global_cleanup();
		H.curl_inited = 0;
	}
	free(H.ids);
	H.ids = NULL;
	H.n_ids = H.cap_ids = 0;
	if (H.dir[0] == '\0')
		return;
	if (getenv("KMS_TEST_KEEP") != NULL)
		fprintf(stderr, "harness: kept data dir %s\n", H.dir);
	else
		(void)nftw(H.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	H.dir[0] = '\0';
}

/* --- API helpers -------------------------------------------------------- */

char *
ith_token_create_at(const char *file, int line, const char *role,
    const char *keys, const char *ttl, char **id)
{
	json_t *body = json_pack("{s:s}", "role", role), *a;
	const char *t, *i;
	char *out = NULL;

	if (id != NULL)
		*id = NULL;
	if (keys != NULL)
		json_object_set_new(body, "keys", json_string(keys));
	if (ttl != NULL)
		json_object_set_new(body, "ttl", json_string(ttl));
	json_object_set_new(body, "description", json_string("integration test"));
	if ((a = ith_call_at(file, line, "POST", "/v1/tokens", H.admin, body,
	    201, NULL)) == NULL)
		return NULL;
	t = json_string_value(json_object_get(a, "token"));
	i = json_string_value(json_object_get(a, "id"));
	if (ith_check_at(t != NULL && i != NULL, file, line,
	    "POST /v1/tokens: answer lacks token or id")) {
		out = strdup(t);
		if (id != NULL)
			*id = strdup(i);
	}
	json_decref(a);
	return out;
}

int
ith_key_create_at(const char *file, int line, const char *name, json_t *extra)
{
	json_t *body = json_pack("{s:s, s:s}", "name", name, "type", "aes256-gcm");
	json_t *a;
	int ok;

	if (extra != NULL) {
		json_object_update(body, extra);
		json_decref(extra);
	}
	if ((a = ith_call_at(file, line, "POST", "/v1/keys", H.admin, body, 201,
	    NULL)) == NULL)
		return -1;
	ok = ith_check_at(json_is_string(json_object_get(a, "name")) &&
	    strcmp(json_string_value(json_object_get(a, "name")), name) == 0,
	    file, line, "POST /v1/keys %s: answer has another name", name);
	json_decref(a);
	return ok ? 0 : -1;
}

char *
ith_wrap_at(const char *file, int line, const char *key, const char *token,
    const unsigned char *pt, size_t len, json_t *ctx, long *version)
{
	char path[512], *b64 = ith_b64(pt, len), *out = NULL;
	json_t *body = json_pack("{s:s}", "plaintext", b64), *a, *ct, *kv;

	if (version != NULL)
		*version = 0;
	free(b64);
	if (ctx != NULL)
		json_object_set(body, "context", ctx);
	snprintf(path, sizeof(path), "/v1/keys/%s/wrap", key);
	if ((a = ith_call_at(file, line, "POST", path, token, body, 200, NULL)) == NULL)
		return NULL;
	ct = json_object_get(a, "ciphertext");
	kv = json_object_get(a, "key_version");
	if (ith_check_at(json_is_string(ct) && json_is_integer(kv), file, line,
	    "POST %s: answer lacks ciphertext or integer key_version", path)) {
		out = strdup(json_string_value(ct));
		if (version != NULL)
			*version = (long)json_integer_value(kv);
	}
	json_decref(a);
	return out;
}

int
ith_unwrap_expect_at(const char *file, int line, const char *key,
    const char *token, const char *ct, json_t *ctx, const unsigned char *pt,
    size_t len, long *version, int *rewrap)
{
	char path[512];
	json_t *body = json_pack("{s:s}", "ciphertext", ct), *a, *p, *kv, *rr;
	unsigned char *got = NULL;
	size_t glen = 0;
	int ok = 0;

	if (version != NULL)
		*version = 0;
	if (rewrap != NULL)
		*rewrap = -1;
	if (ctx != NULL)
		json_object_set(body, "context", ctx);
	snprintf(path, sizeof(path), "/v1/keys/%s/unwrap", key);
	if ((a = ith_call_at(file, line, "POST", path, token, body, 200, NULL)) == NULL)
		return -1;
	p = json_object_get(a, "plaintext");
	kv = json_object_get(a, "key_version");
	rr = json_object_get(a, "rewrap_recommended");
	if (ith_check_at(json_is_string(p) && json_is_integer(kv) &&
	    json_is_boolean(rr), file, line,
	    "POST %s: answer lacks plaintext, integer key_version or boolean "
	    "rewrap_recommended", path) &&
	    ith_check_at(ith_unb64(json_string_value(p), &got, &glen) == 0, file,
	    line, "POST %s: plaintext is not valid base64", path) &&
	    ith_check_at(glen == len && memcmp(got, pt, len) == 0, file, line,
	    "POST %s: unwrapped %zu bytes differ from the %zu wrapped", path,
	    glen, len)) {
		ok = 1;
		if (version != NULL)
			*version = (long)json_integer_value(kv);
		if (rewrap != NULL)
			*rewrap = json_is_true(rr);
	}
	free(got);
	json_decref(a);
	return ok ? 0 : -1;
}

/* --- bytes -------------------------------------------------------------- */

void
ith_random(unsigned char *buf, size_t n)
{
	if (RAND_bytes(buf, (int)n) != 1)
		abort();
}

char *
ith_b64(const unsigned char *in, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);

	if (out == NULL)
		abort();
	EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	return out;
}

static int
b64_val(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int
ith_unb64(const char *in, unsigned char **out, size_t *outlen)
{
	size_t n = strlen(in), i, o = 0;
	unsigned char *buf;

	*out = NULL;
	*outlen = 0;
	if (n % 4 != 0)
		return -1;
	if ((buf = malloc(n / 4 * 3 + 1)) == NULL)
		return -1;
	for (i = 0; i < n; i += 4) {
		int v[4], k, pad = 0;

		for (k = 0; k < 4; k++) {
			if (in[i + k] == '=' && i + 4 == n && k >= 2) {
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad > 0 || (v[k] = b64_val((unsigned char)in[i + k])) < 0) {
				free(buf);
				return -1;
			}
		}
		buf[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
		if (pad < 2)
			buf[o++] = (unsigned char)(v[1] << 4 | v[2] >> 2);
		if (pad < 1)
			buf[o++] = (unsigned char)(v[2] << 6 | v[3]);
	}
	*out = buf;
	*outlen = o;
	return 0;
}

char *
ith_b64url(const unsigned char *in, size_t len)
{
	char *s = ith_b64(in, len), *p;
	size_t n;

	for (p = s; *p; p++) {
		if (*p == '+')
			*p = '-';
		else if (*p == '/')
			*p = '_';
	}
	n = strlen(s);
	while (n > 0 && s[n - 1] == '=')
		s[--n] = '\0';
	return s;
}

void
ith_hex(const unsigned char *in, size_t len, char *out, int upper)
{
	const char *d = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	size_t i;

	for (i = 0; i < len; i++) {
		out[2 * i] = d[in[i] >> 4];
		out[2 * i + 1] = d[in[i] & 15];
	}
	out[2 * len] = '\0';
}

const char *
ith_name(const char *prefix)
{
	static char ring[16][160];
	static unsigned counter, slot;
	char *out = ring[slot++ % 16];

	snprintf(out, sizeof(ring[0]), "%s-%u", prefix, ++counter);
	return out;
}

struct mt_buf {
	char *p;
	size_t n;
};

static size_t
mt_on_data(char *p, size_t size, size_t nmemb, void *arg)
{
	struct mt_buf *b = arg;
	size_t n = size * nmemb;
	char *np = realloc(b->p, b->n + n + 1);

	if (np == NULL)
		return 0;
	memcpy(np + b->n, p, n);
	b->n += n;
	np[b->n] = '\0';
	b->p = np;
	return n;
}

static size_t
mt_on_hdr(char *p, size_t size, size_t nmemb, void *arg)
{
	char *id = arg;
	size_t n = size * nmemb, i = 13, k = 0;

	if (n > 13 && strncasecmp(p, "X-Request-Id:", 13) == 0) {
		while (i < n && p[i] == ' ')
			i++;
		while (i < n && k < 32 && p[i] != '\r' && p[i] != '\n')
			id[k++] = p[i++];
		id[k] = '\0';
	}
	return n;
}

json_t *
ith_post_mt(CURL *c, const char *path, const char *token, const char *body,
    long *status, char id[33])
{
	return ith_post_mt_hdr(c, path, token, body, NULL, status, id);
}

json_t *
ith_post_mt_hdr(CURL *c, const char *path, const char *token,
    const char *body, const char *header, long *status, char id[33])
{
	struct curl_slist *hl = NULL;
	struct mt_buf b = { NULL, 0 };
	char url[600], auth[300];
	json_t *j = NULL;

	id[0] = '\0';
	*status = 0;
	snprintf(url, sizeof(url), "%s%s", ith_base_url(), path);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
	hl = curl_slist_append(hl, auth);
	hl = curl_slist_append(hl, "Content-Type: application/json");
	if (header != NULL)
		hl = curl_slist_append(hl, header);
	curl_easy_reset(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_PROXY, "");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, mt_on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, mt_on_hdr);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, id);
	if (curl_easy_perform(c) == CURLE_OK) {
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
		if (b.p != NULL)
			j = json_loads(b.p, 0, NULL);
	}
	curl_slist_free_all(hl);
	free(b.p);
	return j;
}

int
ith_run(char *const argv[], const char *logpath, long timeout_ms)
{
	return run_command(argv, logpath, timeout_ms);
}

/* --- the audit log on disk ---------------------------------------------- */

static int
cmp_rec(const void *a, const void *b)
{
	return strcmp(((const struct ith_audit_rec *)a)->id,
	    ((const struct ith_audit_rec *)b)->id);
}

static int
cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
audit_add(struct ith_audit *l, const char *id, const char *outcome)
{
	struct ith_audit_rec *r;

	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 4096;

		if ((r = realloc(l->recs, ncap * sizeof(*r))) == NULL)
			abort();
		l->recs = r;
		l->cap = ncap;
	}
	r = &l->recs[l->n++];
	snprintf(r->id, sizeof(r->id), "%s", id);
	r->outcome = outcome == NULL ? '?' : outcome[0] == 'o' ? 'o' :
	    outcome[0] == 'd' ? 'd' : outcome[0] == 'e' ? 'e' : '?';
}

/* One record line (no newline): checks seq and prev against the line
 * before, then remembers its id. */
static int
audit_line(struct ith_audit *l, const char *line, size_t len,
    unsigned char prev[32], const char *file)
{
	char hex[65];
	json_t *rec = json_loadb(line, len, 0, NULL);
	const char *p = json_string_value(json_object_get(rec, "prev"));
	const char *id = json_string_value(json_object_get(rec, "request_id"));
	const char *op = json_string_value(json_object_get(rec, "op"));
	json_t *s = json_object_get(rec, "seq");
	int ok = 1;

	ith_hex(prev, 32, hex, 0);
	if (rec == NULL || !json_is_integer(s) || p == NULL) {
		ith_fail("%s: the record after seq %lld is not a JSON record",
		    file, l->last_seq);
		ok = 0;
	} else if (json_integer_value(s) != l->last_seq + 1) {
		ith_fail("%s: seq %lld follows seq %lld", file,
		    (long long)json_integer_value(s), l->last_seq);
		ok = 0;
	} else if (strcmp(p, hex) != 0) {
		ith_fail("%s: seq %lld: prev is not the hash of the line before",
		    file, (long long)json_integer_value(s));
		ok = 0;
	}
	if (id != NULL && id[0] != '\0')
		audit_add(l, id, json_string_value(json_object_get(rec, "outcome")));
	if (op != NULL && strcmp(op, "recovery") == 0)
		l->recovery_records++;
	if (json_is_integer(s))
		l->last_seq = json_integer_value(s);
	SHA256((const unsigned char *)line, len, prev);
	json_decref(rec);
	return ok;
}

int
ith_audit_read(struct ith_audit *l, int torn_ok)
{
	char adir[PATH_MAX + 16], path[PATH_MAX + 300], *names[4096], *line = NULL;
	unsigned char prev[32] = { 0 };
	size_t n = 0, i, cap = 0;
	struct dirent *de;
	ssize_t got;
	DIR *d;
	int ok = 1;

	memset(l, 0, sizeof(*l));
	l->last_seq = -1;
	snprintf(adir, sizeof(adir), "%s/audit", H.dir);
	if ((d = opendir(adir)) == NULL) {
		ith_fail("cannot open %s", adir);
		return 0;
	}
	while ((de = readdir(d)) != NULL && n < 4096)
		if (strncmp(de->d_name, "audit-", 6) == 0)
			names[n++] = strdup(de->d_name);
	closedir(d);
	qsort(names, n, sizeof(*names), cmp_name);
	for (i = 0; i < n; i++) {
		FILE *f;

		snprintf(path, sizeof(path), "%s/%s", adir, names[i]);
		if ((f = fopen(path, "r")) == NULL) {
			ith_fail("cannot read %s", path);
			ok = 0;
			free(names[i]);
			continue;
		}
		while (ok && (got = getline(&line, &cap, f)) > 0) {
			if (line[got - 1] != '\n') {
				if (torn_ok && i == n - 1)
					break;
				ith_fail("%s: torn last line after seq %lld", names[i],
				    l->last_seq);
				ok = 0;
				break;
			}
			ok &= audit_line(l, line, (size_t)got - 1, prev, names[i]);
		}
		fclose(f);
		free(names[i]);
	}
	free(line);
	qsort(l->recs, l->n, sizeof(*l->recs), cmp_rec);
	return ok;
}

const struct ith_audit_rec *
ith_audit_find(const struct ith_audit *l, const char *id)
{
	size_t lo = 0, hi = l->n;

	/* The first of equal ids: a lower bound, not bsearch. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (strcmp(l->recs[mid].id, id) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < l->n && strcmp(l->recs[lo].id, id) == 0 ? &l->recs[lo] : NULL;
}

void
ith_audit_free(struct ith_audit *l)
{
	free(l->recs);
	memset(l, 0, sizeof(*l));
}

int
ith_audit_torn(void)
{
	char adir[PATH_MAX + 16], path[PATH_MAX + 300], newest[300] = "";
	char last = '\n';
	struct dirent *de;
	FILE *f;
	DIR *d;

	snprintf(adir, sizeof(adir), "%s/audit", H.dir);
	if ((d = opendir(adir)) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		if (strncmp(de->d_name, "audit-", 6) == 0 &&
		    strcmp(de->d_name, newest) > 0)
			snprintf(newest, sizeof(newest), "%s", de->d_name);
	closedir(d);
	snprintf(path, sizeof(path), "%s/%s", adir, newest);
	if (newest[0] == '\0' || (f = fopen(path, "r")) == NULL)
		return 0;
	if (fseek(f, -1, SEEK_END) == 0)
		last = (char)fgetc(f);
	fclose(f);
	return last != '\n';
}

unsigned
ith_cu_run(void)
{
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	return CU_get_number_of_tests_failed() +
	    CU_get_number_of_suites_failed() + CU_get_number_of_failures();
}

/* ith_suite_main, its run verbose or silent (CU_BRM_SILENT). */
static int
suite_main(const char *suite, CU_CleanupFunc clean,
    const struct ith_test *tests, int verbose)
{
	CU_pSuite s;
	unsigned failed;
	int r = 2;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "curl_global_init failed\n");
		return 2;
	}
	if (CU_initialize_registry() != CUE_SUCCESS)
		goto out;
	if ((s = CU_add_suite(suite, NULL, clean)) == NULL)
		goto fail;
	for (; tests->name != NULL; tests++)
		if (CU_add_test(s, tests->name, tests->run) == NULL)
			goto fail;
	if (verbose)
		failed = ith_cu_run();
	else {
		CU_basic_set_mode(CU_BRM_SILENT);
		CU_basic_run_tests();
		failed = CU_get_number_of_tests_failed() +
		    CU_get_number_of_suites_failed() + CU_get_number_of_failures();
	}
	r = failed != 0 ? 1 : 0;
	CU_cleanup_registry();
	goto out;
fail:
	fprintf(stderr, "registering the suites failed: %s\n", CU_get_error_msg());
	CU_cleanup_registry();
out:
	curl_global_cleanup();
	return r;
}

int
ith_suite_main(const char *suite, CU_CleanupFunc clean,
    const struct ith_test *tests)
{
	return suite_main(suite, clean, tests, 1);
}

int
ith_bench_main(const char *suite, const struct ith_test *tests)
{
	return suite_main(suite, NULL, tests, 0);
}
