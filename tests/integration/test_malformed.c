/* The malformed-request corpus: tests/integration/malformed/cases.jsonl,
 * one hostile request a line, sent byte for byte over a plain socket (so
 * requests no HTTP client library would send can be in it). Each case
 * must get its expected status (a 4xx unless it says otherwise) with, when
 * kmsd itself answers, the JSON error of DESIGN.md section 4 whose
 * request_id is the X-Request-Id header; never a 5xx; kmsd keeps running
 * and GET /v1/health answers 200 after every 20 cases and at the end.
 * Every JSON error answer is in the audit log.
 *
 * A case (see malformed/README.md for every member):
 *   {"name", "method", "path", "auth", "headers": [...], "body" |
 *    "body_b64", "te": "chunked", "no_content_length", "content_type",
 *    "request_line", "no_host", "expect": "4xx" | 413 | ..., "json",
 *    "note"}
 * Strings (not body_b64) expand ${key}, ${ct}, ${sigkey}, the tokens
 * ${admin} ${app} ${auditor} ${officer}, and ${repeat:N:TEXT}. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "itest.h"

#define MAX_ANSWER (1u << 20)
#define IO_TIMEOUT_MS 10000
#define HEALTH_EVERY 20

static struct {
	char key[64];
	char sigkey[64];
	char *ct;
	int ready;
} F;

#define MAX_AUDITED 1024
static char audited[MAX_AUDITED][33];
static size_t n_audited;

static int
suite_init(void)
{
	memset(&F, 0, sizeof(F));
	return it_ready();
}

static int
suite_clean(void)
{
	free(F.ct);
	return 0;
}

static void
test_fixture(void)
{
	unsigned char pt[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	json_t *ctx = json_pack("{s:s}", "m", "1");

	snprintf(F.key, sizeof(F.key), "%s", ith_name("mal"));
	snprintf(F.sigkey, sizeof(F.sigkey), "%s", ith_name("malsig"));
	(void)ith_key_create(F.key, NULL);
	(void)ith_key_create(F.sigkey, json_pack("{s:s}", "type", "ec-p256"));
	F.ct = ith_wrap(F.key, T.app, pt, sizeof(pt), ctx, NULL);
	json_decref(ctx);
	F.ready = F.ct != NULL;
	ith_check(F.ready, "malformed corpus: fixture incomplete");
}

/* --- a growable byte string ---------------------------------------------- */

struct bytes {
	char *p;
	size_t n, cap;
};

static void
put(struct bytes *b, const void *p, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;

		while (cap < b->n + n + 1)
			cap *= 2;
		if ((b->p = realloc(b->p, cap)) == NULL)
			abort();
		b->cap = cap;
	}
	if (n > 0)
		memcpy(b->p + b->n, p, n);
	b->n += n;
	b->p[b->n] = '\0';
}

static void
puts_(struct bytes *b, const char *s)
{
	put(b, s, strlen(s));
}

/* Appends `s` with ${...} expanded. 0, or -1 for an unknown name. */
static int
expand(struct bytes *b, const char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		const char *end;
		char name[64];
		size_t n;

		if (s[i] != '$' || i + 1 >= len || s[i + 1] != '{') {
			put(b, s + i, 1);
			i++;
			continue;
		}
		if ((end = memchr(s + i + 2, '}', len - i - 2)) == NULL)
			return -1;
		n = (size_t)(end - (s + i + 2));
		if (strncmp(s + i + 2, "repeat:", 7) == 0) {
			char *colon, *num = strndup(s + i + 9, n - 7);
			long count;

			if (num == NULL || (colon = strchr(num, ':')) == NULL) {
				free(num);
				return -1;
			}
			*colon = '\0';
			count = strtol(num, NULL, 10);
			while (count-- > 0)
				puts_(b, colon + 1);
			free(num);
		} else {
			if (n >= sizeof(name))
				return -1;
			memcpy(name, s + i + 2, n);
			name[n] = '\0';
			if (strcmp(name, "key") == 0)
				puts_(b, F.key);
			else if (strcmp(name, "sigkey") == 0)
				puts_(b, F.sigkey);
			else if (strcmp(name, "ct") == 0)
				puts_(b, F.ct);
			else if (strcmp(name, "admin") == 0)
				puts_(b, T.admin);
			else if (strcmp(name, "app") == 0)
				puts_(b, T.app);
			else if (strcmp(name, "auditor") == 0)
				puts_(b, T.auditor);
			else if (strcmp(name, "officer") == 0)
				puts_(b, T.officer);
			else
				return -1;
		}
		i += n + 3;
	}
	return 0;
}

static int
expand_str(struct bytes *b, json_t *v)
{
	return expand(b, json_string_value(v), json_string_length(v));
}

/* --- the raw exchange ---------------------------------------------------- */

struct answer {
	long status;		/* 0: no status line came */
	char request_id[128];
	int n_request_id;
	char content_type[128];
	char *body;		/* NUL-terminated */
	size_t body_len;
	char why[160];		/* when status is 0 */
};

static int
connect_kmsd(void)
{
	struct sockaddr_in sa;
	const char *url = ith_base_url(), *colon = strrchr(url, ':');
	int fd;

	if (colon == NULL || (fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC,
	    0)) < 0)
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((unsigned short)atoi(colon + 1));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void
header_value(const char *p, const char *end, char *out, size_t outlen)
{
	size_t n;

	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	while (end > p && isspace((unsigned char)end[-1]))
		end--;
	n = (size_t)(end - p);
	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, p, n);
	out[n] = '\0';
}

/* Parses what came back: status line, headers, body (by Content-Length,
 * chunked is not used by kmsd's answers, else up to the close). */
static void
parse_answer(const char *buf, size_t len, struct answer *a)
{
	const char *hend = NULL, *p, *eol;
	size_t i;
	long cl = -1;

	for (i = 0; i + 3 < len; i++)
		if (memcmp(buf + i, "\r\n\r\n", 4) == 0) {
			hend = buf + i;
			break;
		}
	if (len < 12 || strncmp(buf, "HTTP/1.", 7) != 0 || hend == NULL) {
		snprintf(a->why, sizeof(a->why), "no HTTP answer (%zu bytes: %.40s)",
		    len, len ? buf : "");
		return;
	}
	a->status = strtol(buf + 9, NULL, 10);
	for (p = (const char *)memchr(buf, '\n', len) + 1; p < hend; p = eol + 1) {
		if ((eol = memchr(p, '\n', (size_t)(hend + 2 - p))) == NULL)
			break;
		if (strncasecmp(p, "X-Request-Id:", 13) == 0) {
			a->n_request_id++;
			header_value(p + 13, eol, a->request_id, sizeof(a->request_id));
		} else if (strncasecmp(p, "Content-Type:", 13) == 0) {
			header_value(p + 13, eol, a->content_type,
			    sizeof(a->content_type));
		} else if (strncasecmp(p, "Content-Length:", 15) == 0) {
			cl = strtol(p + 15, NULL, 10);
		}
	}
	p = hend + 4;
	a->body_len = (size_t)(buf + len - p);
	if (cl >= 0 && (size_t)cl < a->body_len)
		a->body_len = (size_t)cl;
	if ((a->body = malloc(a->body_len + 1)) == NULL)
		abort();
	memcpy(a->body, p, a->body_len);
	a->body[a->body_len] = '\0';
}

/* Sends `req` and reads until kmsd closes (every case says Connection:
 * close) or the answer is complete. A send that fails part way (kmsd
 * answered early and closed) still reads the answer. */
static void
exchange(const struct bytes *req, long timeout_ms, struct answer *a)
{
	struct bytes in = { NULL, 0, 0 };
	long long deadline = ith_now_ms() + timeout_ms;
	size_t off = 0;
	int fd;

	memset(a, 0, sizeof(*a));
	if ((fd = connect_kmsd()) < 0) {
		snprintf(a->why, sizeof(a->why), "cannot connect: %s",
		    strerror(errno));
		return;
	}
	while (off < req->n && ith_now_ms() < deadline) {
		struct pollfd pf = { fd, POLLOUT | POLLIN, 0 };
		ssize_t w;

		if (poll(&pf, 1, 100) <= 0)
			continue;
		if (pf.revents & (POLLIN | POLLHUP | POLLERR))
			break;		/* an early answer: stop sending */
		w = send(fd, req->p + off, req->n - off, MSG_NOSIGNAL);
		if (w < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	for (;;) {
		struct pollfd pf = { fd, POLLIN, 0 };
		char chunk[65536];
		ssize_t r;
		int left = (int)(deadline - ith_now_ms());

		if (left <= 0 || in.n > MAX_ANSWER)
			break;
		if (poll(&pf, 1, left) <= 0)
			break;
		r = recv(fd, chunk, sizeof(chunk), 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		put(&in, chunk, (size_t)r);
	}
	close(fd);
	if (in.n == 0) {
		snprintf(a->why, sizeof(a->why), "no answer within %ld ms (%zu of "
		    "%zu request bytes sent)", timeout_ms, off, req->n);
		return;
	}
	parse_answer(in.p, in.n, a);
	free(in.p);
}

/* --- building a case's request ------------------------------------------- */

static const char *
token_for(const char *auth)
{
	if (strcmp(auth, "admin") == 0)
		return T.admin;
	if (strcmp(auth, "app") == 0)
		return T.app;
	if (strcmp(auth, "matter") == 0)
		return T.matter;
	if (strcmp(auth, "auditor") == 0)
		return T.auditor;
	if (strcmp(auth, "officer") == 0)
		return T.officer;
	return NULL;
}

static int
build(json_t *c, struct bytes *req, char *err, size_t errlen)
{
	const char *auth = json_string_value(json_object_get(c, "auth"));
	const char *te = json_string_value(json_object_get(c, "te"));
	json_t *hdrs = json_object_get(c, "headers"), *h, *ctj;
	struct bytes body = { NULL, 0, 0 };
	const char *b64 = json_string_value(json_object_get(c, "body_b64"));
	size_t i;
	int has_body = 0;

	if (json_is_string(json_object_get(c, "request_line"))) {
		if (expand_str(req, json_object_get(c, "request_line")) != 0)
			goto bad;
	} else {
		if (expand_str(req, json_object_get(c, "method")) != 0)
			goto bad;
		puts_(req, " ");
		if (expand_str(req, json_object_get(c, "path")) != 0)
			goto bad;
		puts_(req, " HTTP/1.1");
	}
	puts_(req, "\r\n");
	if (!json_is_true(json_object_get(c, "no_host")))
		puts_(req, "Host: 127.0.0.1\r\n");
	puts_(req, "Connection: close\r\n");
	if (auth != NULL && token_for(auth) != NULL) {
		puts_(req, "Authorization: Bearer ");
		puts_(req, token_for(auth));
		puts_(req, "\r\n");
	}
	json_array_foreach(hdrs, i, h) {
		if (expand_str(req, h) != 0)
			goto bad;
		puts_(req, "\r\n");
	}
	if (b64 != NULL) {
		unsigned char *raw = NULL;
		size_t n = 0;

		if (ith_unb64(b64, &raw, &n) != 0) {
			snprintf(err, errlen, "body_b64 is not base64");
			return -1;
		}
		put(&body, raw, n);
		free(raw);
		has_body = 1;
	} else if (json_is_string(json_object_get(c, "body"))) {
		if (expand_str(&body, json_object_get(c, "body")) != 0)
			goto bad;
		has_body = 1;
	}
	ctj = json_object_get(c, "content_type");
	if (has_body && ctj == NULL)
		puts_(req, "Content-Type: application/json\r\n");
	else if (json_is_string(ctj)) {
		puts_(req, "Content-Type: ");
		puts_(req, json_string_value(ctj));
		puts_(req, "\r\n");
	}
	if (te != NULL && strcmp(te, "chunked") == 0) {
		size_t off = 0, step = 7;
		char line[32];

		puts_(req, "Transfer-Encoding: chunked\r\n\r\n");
		while (off < body.n) {
			size_t n = body.n - off < step ? body.n - off : step;

			snprintf(line, sizeof(line), "%zx\r\n", n);
			puts_(req, line);
			put(req, body.p + off, n);
			puts_(req, "\r\n");
			off += n;
			step = step * 3 + 1;
		}
		puts_(req, "0\r\n\r\n");
	} else {
		if (has_body && !json_is_true(json_object_get(c, "no_content_length"))) {
			char line[64];

			snprintf(line, sizeof(line), "Content-Length: %zu\r\n", body.n);
			puts_(req, line);
		}
		puts_(req, "\r\n");
		if (has_body)
			put(req, body.p, body.n);
	}
	free(body.p);
	return 0;
bad:
	free(body.p);
	snprintf(err, errlen, "a string has an unknown or unclosed ${...}");
	return -1;
}

/* --- the checks ----------------------------------------------------------- */

static int
status_expected(json_t *c, long st, char *want, size_t wantlen)
{
	json_t *e = json_object_get(c, "expect");
	const char *s = json_string_value(e);

	if (json_is_integer(e)) {
		snprintf(want, wantlen, "%lld", (long long)json_integer_value(e));
		return st == json_integer_value(e);
	}
	snprintf(want, wantlen, "%s", s ? s : "4xx");
	if (s == NULL || strcmp(s, "4xx") == 0)
		return st >= 400 && st < 500;
	if (strcmp(s, "none") == 0)
		return st == 0 || (st >= 400 && st < 500);
	if (strcmp(s, "2xx") == 0)
		return st >= 200 && st < 300;
	return 0;
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
health_ok(void)
{
	long st = 0;

	ith_request("GET", "/v1/health", NULL, NULL, &st, NULL, NULL);
	return st == 200;
}

static void
check_case(json_t *c, size_t lineno, const struct answer *a)
{
	const char *name = json_string_value(json_object_get(c, "name"));
	json_t *j = NULL, *err;
	const char *rid;
	char want[32];
	int want_json = !json_is_false(json_object_get(c, "json"));
	json_t *e = json_object_get(c, "expect");

	if (json_is_string(e) && strcmp(json_string_value(e), "none") == 0 &&
	    a->status == 0)
		return;
	if (!ith_check(a->status != 0, "case %zu %s: %s", lineno, name, a->why))
		return;
	/* A 5xx only where the case names it (505 for an HTTP version
	 * libmicrohttpd does not speak is RFC 9110's answer). */
	ith_check(a->status < 500 || (json_is_integer(e) &&
	    json_integer_value(e) == a->status), "case %zu %s: answered %ld: "
	    "%.300s", lineno, name, a->status, a->body);
	ith_check(status_expected(c, a->status, want, sizeof(want)),
	    "case %zu %s: expected %s, got %ld: %.300s", lineno, name, want,
	    a->status, a->body);
	if (!want_json || a->status == 0)
		return;
	/* kmsd's own answer: one fresh request id, JSON, and for an error
	 * the error object naming that id. */
	if (!ith_check(a->n_request_id == 1 && is_hex32(a->request_id),
	    "case %zu %s: %d X-Request-Id headers ('%s'); is this answer "
	    "libmicrohttpd's own? %.200s", lineno, name, a->n_request_id,
	    a->request_id, a->body))
		return;
	ith_check(ith_record_request_id(a->request_id), "case %zu %s: request id "
	    "%s was used before", lineno, name, a->request_id);
	ith_check(strncmp(a->content_type, "application/json", 16) == 0,
	    "case %zu %s: Content-Type '%s'", lineno, name, a->content_type);
	if (a->status < 400)
		return;
	j = json_loadb(a->body, a->body_len, 0, NULL);
	err = json_object_get(j, "error");
	rid = json_string_value(json_object_get(err, "request_id"));
	ith_check(json_is_string(json_object_get(err, "code")) &&
	    json_is_string(json_object_get(err, "message")) && rid != NULL &&
	    strcmp(rid, a->request_id) == 0, "case %zu %s: not the JSON error "
	    "with request_id = X-Request-Id %s: %.300s", lineno, name,
	    a->request_id, a->body);
	if (n_audited < MAX_AUDITED)
		snprintf(audited[n_audited++], 33, "%.32s", a->request_id);
	json_decref(j);
}

static char *
corpus_path(void)
{
	static const char *const tries[] = {
		"../tests/integration/malformed/cases.jsonl",
		"tests/integration/malformed/cases.jsonl",
		"../../tests/integration/malformed/cases.jsonl", NULL,
	};
	const char *env = getenv("KMS_TEST_MALFORMED");
	size_t i;

	if (env != NULL && *env != '\0')
		return strdup(env);
	for (i = 0; tries[i] != NULL; i++)
		if (access(tries[i], R_OK) == 0)
			return strdup(tries[i]);
	return NULL;
}

static void
test_corpus(void)
{
	char *path = corpus_path(), *text, *line, *save = NULL, err[200];
	size_t lineno = 0, cases = 0, names_cap = 0;
	char **names = NULL;

	if (!F.ready || !ith_check(path != NULL, "cannot find malformed/cases.jsonl;"
	    " set KMS_TEST_MALFORMED")) {
		free(path);
		return;
	}
	if ((text = (char *)ith_read_file(path, NULL)) == NULL) {
		ith_fail("cannot read %s", path);
		free(path);
		return;
	}
	for (line = strtok_r(text, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		struct bytes req = { NULL, 0, 0 };
		struct answer a;
		json_error_t je;
		json_t *c;
		const char *name;
		size_t k;

		lineno++;
		if (line[0] == '\0' || line[0] == '#')
			continue;
		if ((c = json_loads(line, JSON_REJECT_DUPLICATES |
		    JSON_ALLOW_NUL, &je)) == NULL ||
		    (name = json_string_value(json_object_get(c, "name"))) == NULL) {
			ith_fail("%s:%zu: not a case: %s", path, lineno, je.text);
			json_decref(c);
			continue;
		}
		for (k = 0; k < cases; k++)
			if (strcmp(names[k], name) == 0)
				ith_fail("%s:%zu: case name %s is used twice", path,
				    lineno, name);
		if (cases == names_cap) {
			char **nn;

			names_cap = names_cap ? names_cap * 2 : 256;
			if ((nn = realloc(names, names_cap * sizeof(*names))) == NULL)
				abort();
			names = nn;
		}
		names[cases++] = strdup(name);
		if (build(c, &req, err, sizeof(err)) != 0) {
			ith_fail("%s:%zu %s: %s", path, lineno, name, err);
		} else {
			json_t *to = json_object_get(c, "timeout_ms");

			exchange(&req, json_is_integer(to) ?
			    (long)json_integer_value(to) : IO_TIMEOUT_MS, &a);
			check_case(c, lineno, &a);
			free(a.body);
		}
		free(req.p);
		json_decref(c);
		if (!ith_check(ith_running() && kill(ith_pid(), 0) == 0,
		    "kmsd is gone after case %zu %s", lineno, name))
			break;
		if (cases % HEALTH_EVERY == 0)
			ith_check(health_ok(), "GET /v1/health is not 200 after case "
			    "%zu %s", lineno, name);
	}
	ith_check(health_ok(), "GET /v1/health is not 200 after the corpus");
	ith_check(cases >= 200, "the corpus has %zu cases; it should have at "
	    "least 200", cases);
	printf("malformed corpus: %zu cases from %s\n", cases, path);
	while (cases-- > 0)
		free(names[cases]);
	free(names);
	free(text);
	free(path);
}

/* Every JSON error answer of the corpus has its audit record. */
static void
test_audited(void)
{
	struct ith_audit l;
	size_t i, missing = 0;

	if (n_audited == 0)
		return;
	ith_check(ith_audit_read(&l, 0), "the audit chain does not verify");
	for (i = 0; i < n_audited; i++)
		if (ith_audit_find(&l, audited[i]) == NULL && missing++ < 5)
			ith_fail("error answer %s has no audit record", audited[i]);
	ith_check(missing == 0, "%zu of %zu error answers of the corpus have no "
	    "audit record", missing, n_audited);
	ith_audit_free(&l);
}

int
it_register_malformed(void)
{
	CU_pSuite s = CU_add_suite("malformed corpus", suite_init, suite_clean);

	if (s == NULL ||
	    CU_add_test(s, "a key and a ciphertext", test_fixture) == NULL ||
	    CU_add_test(s, "every case: 4xx JSON error, kmsd keeps serving",
	    test_corpus) == NULL ||
	    CU_add_test(s, "every error answer is audited", test_audited) == NULL)
		return -1;
	return 0;
}
