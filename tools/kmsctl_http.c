/* kmsctl's HTTP client: libcurl for the transport, jansson for the bodies. */
#include "kmsctl_http.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "kmsd_version.h"

#define CLI_DEFAULT_ADDR "http://127.0.0.1:8420"
#define CLI_MAX_TOKEN 1024
#define CLI_MAX_URL 8192

struct cli_http {
	CURL *curl;
	char *base;			/* KMS_ADDR without a trailing '/' */
	const char *cacert;		/* KMS_CACERT or NULL */
	struct curl_slist *headers;	/* holds the bearer token; wiped on free */
	struct curl_slist *stream_headers;	/* the same for get_stream */
	int have_token;
	char request_id[128];		/* X-Request-Id of the last answer */
	char last_code[64];		/* error.code of the last answer, or "" */
	long last_status;		/* HTTP status of the last answer, or 0 */
	struct km_buf resp;
	char errbuf[CURL_ERROR_SIZE];
};

static void *
cli_json_malloc(size_t n)
{
	return malloc(n);
}

/* jansson does not know the size of what it frees; glibc does. Wiping here
 * covers base64 plaintext in parsed answers and in request bodies alike. */
static void
cli_json_free(void *p)
{
	if (p == NULL)
		return;
	OPENSSL_cleanse(p, malloc_usable_size(p));
	free(p);
}

void
cli_json_setup(void)
{
	json_set_alloc_funcs(cli_json_malloc, cli_json_free);
}

void
cli_json_str_free(char *s)
{
	cli_json_free(s);
}

/* A token ends up in an HTTP header: printable ASCII only, so a stray CR or
 * LF in a token file cannot inject a header. */
static int
token_ok(const char *t)
{
	if (*t == '\0')
		return 0;
	for (; *t != '\0'; t++)
		if (*t < 0x21 || *t > 0x7e)
			return 0;
	return 1;
}

int
cli_read_token_file(const char *path, char **out)
{
	char buf[CLI_MAX_TOKEN + 2];
	FILE *f = NULL;
	size_t n;
	int r = CLI_USAGE;

	*out = NULL;
	if ((f = fopen(path, "r")) == NULL) {
		fprintf(stderr, "kmsctl: cannot open token file %s: %s\n", path,
		    strerror(errno));
		goto out;
	}
	if (fgets(buf, sizeof(buf), f) == NULL) {
		fprintf(stderr, "kmsctl: token file %s is empty\n", path);
		goto out;
	}
	n = strcspn(buf, "\r\n");
	if (buf[n] == '\0' && n > CLI_MAX_TOKEN) {
		fprintf(stderr, "kmsctl: token file %s: first line is too long\n",
		    path);
		goto out;
	}
	while (n > 0 && isspace((unsigned char)buf[n - 1]))
		n--;
	buf[n] = '\0';
	if (!token_ok(buf)) {
		fprintf(stderr, "kmsctl: token file %s does not hold a token on "
		    "its first line\n", path);
		goto out;
	}
	if ((*out = strdup(buf)) == NULL) {
		fprintf(stderr, "kmsctl: out of memory\n");
		goto out;
	}
	r = CLI_OK;
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	if (f != NULL)
		fclose(f);
	return r;
}

int
cli_http_new(const char *token_file, struct cli_http **out)
{
	struct cli_http *h = NULL;
	struct km_buf hdr = KM_BUF_INIT(CLI_MAX_TOKEN + 64);
	struct curl_slist *l;
	const char *addr, *env_token;
	char *token = NULL, *line = NULL;
	size_t n;
	int r = CLI_USAGE;

	*out = NULL;
	if ((h = calloc(1, sizeof(*h))) == NULL)
		goto nomem;
	h->resp = (struct km_buf)KM_BUF_INIT(CLI_MAX_RESPONSE);
	if ((addr = getenv("KMS_ADDR")) == NULL || *addr == '\0')
		addr = CLI_DEFAULT_ADDR;
	if (strncmp(addr, "http://", 7) != 0 &&
	    strncmp(addr, "https://", 8) != 0) {
		fprintf(stderr, "kmsctl: KMS_ADDR '%s' must start with http:// "
		    "or https://\n", addr);
		goto out;
	}
	if ((h->base = strdup(addr)) == NULL)
		goto nomem;
	n = strlen(h->base);
	while (n > 0 && h->base[n - 1] == '/')
		h->base[--n] = '\0';
	if ((h->cacert = getenv("KMS_CACERT")) != NULL && *h->cacert == '\0')
		h->cacert = NULL;

	if (token_file != NULL) {
		if ((r = cli_read_token_file(token_file, &token)) != CLI_OK)
			goto out;
		r = CLI_USAGE;
	} else if ((env_token = getenv("KMS_TOKEN")) != NULL &&
	    *env_token != '\0') {
		if (!token_ok(env_token)) {
			fprintf(stderr, "kmsctl: KMS_TOKEN is not a token\n");
			goto out;
		}
		if ((token = strdup(env_token)) == NULL)
			goto nomem;
	}
	if (token != NULL) {
		km_buf_append_str(&hdr, "Authorization: Bearer ");
		km_buf_append_str(&hdr, token);
		if ((line = km_buf_take_str(&hdr)) == NULL) {
			fprintf(stderr, "kmsctl: the token is too long\n");
			goto out;
		}
		h->have_token = 1;
	}
	if ((l = curl_slist_append(NULL, "Content-Type: application/json")) == NULL)
		goto nomem;
	h->headers = l;
	/* libmicrohttpd answers 100-continue, but without Expect curl sends
	 * the body at once and saves a round trip. */
	if ((l = curl_slist_append(h->headers, "Accept: application/json")) == NULL ||
	    (l = curl_slist_append(h->headers, "Expect:")) == NULL ||
	    (line != NULL && (l = curl_slist_append(h->headers, line)) == NULL))
		goto nomem;
	if ((l = curl_slist_append(NULL, "Accept: application/x-ndjson, "
	    "application/json")) == NULL)
		goto nomem;
	h->stream_headers = l;
	if (line != NULL && curl_slist_append(h->stream_headers, line) == NULL)
		goto nomem;
	if ((h->curl = curl_easy_init()) == NULL)
		goto nomem;
	*out = h;
	h = NULL;
	r = CLI_OK;
	goto out;
nomem:
	fprintf(stderr, "kmsctl: out of memory\n");
	r = CLI_USAGE;
out:
	if (token != NULL)
		km_secure_free(token, strlen(token));
	if (line != NULL)
		km_secure_free(line, strlen(line));
	km_buf_free(&hdr);
	cli_http_free(h);
	return r;
}

/* Frees a header list after wiping it (it holds the bearer token). */
static void
headers_free(struct curl_slist *list)
{
	struct curl_slist *l;

	for (l = list; l != NULL; l = l->next)
		OPENSSL_cleanse(l->data, strlen(l->data));
	curl_slist_free_all(list);
}

void
cli_http_free(struct cli_http *h)
{
	if (h == NULL)
		return;
	if (h->curl != NULL)
		curl_easy_cleanup(h->curl);
	headers_free(h->headers);
	headers_free(h->stream_headers);
	km_buf_free(&h->resp);
	free(h->base);
	free(h);
}

static size_t
on_body(char *p, size_t size, size_t nmemb, void *arg)
{
	struct cli_http *h = arg;

	/* size is 1 for libcurl's write callback; a short count aborts. */
	if (size != 1 || km_buf_append(&h->resp, p, nmemb) != KM_OK)
		return 0;
	return nmemb;
}

static size_t
on_header(char *p, size_t size, size_t nmemb, void *arg)
{
	static const char name[] = "x-request-id:";
	struct cli_http *h = arg;
	size_t n = size * nmemb, i;

	if (n > sizeof(name) - 1 && strncasecmp(p, name, sizeof(name) - 1) == 0) {
		p += sizeof(name) - 1;
		n -= sizeof(name) - 1;
		while (n > 0 && (*p == ' ' || *p == '\t')) {
			p++;
			n--;
		}
		while (n > 0 && isspace((unsigned char)p[n - 1]))
			n--;
		if (n >= sizeof(h->request_id))
			n = sizeof(h->request_id) - 1;
		for (i = 0; i < n; i++)
			h->request_id[i] = isprint((unsigned char)p[i]) ? p[i] : '?';
		h->request_id[n] = '\0';
	}
	return size * nmemb;
}

int
cli_http_path(struct cli_http *h, const char *prefix, const char *segment,
    const char *suffix, char **out)
{
	struct km_buf b = KM_BUF_INIT(CLI_MAX_URL);
	char *esc = NULL;
	int r = CLI_USAGE;

	*out = NULL;
	if ((esc = curl_easy_escape(h->curl, segment, 0)) == NULL) {
		fprintf(stderr, "kmsctl: out of memory\n");
		goto out;
	}
	km_buf_append_str(&b, prefix);
	km_buf_append_str(&b, esc);
	if (suffix != NULL)
		km_buf_append_str(&b, suffix);
	if ((*out = km_buf_take_str(&b)) == NULL) {
		fprintf(stderr, "kmsctl: name '%s' is too long\n", segment);
		goto out;
	}
	r = CLI_OK;
out:
	curl_free(esc);
	km_buf_free(&b);
	return r;
}

/* Prints the server's error object, or what is known without one. */
static void
print_error(const struct cli_http *h, long status, const json_t *doc)
{
	const char *code = NULL, *msg = NULL, *rid = NULL;
	char code_buf[128], msg_buf[1024], rid_buf[128];
	json_t *err;

	if (doc != NULL && (err = json_object_get(doc, "error")) != NULL) {
		code = json_string_value(json_object_get(err, "code"));
		msg = json_string_value(json_object_get(err, "message"));
		rid = json_string_value(json_object_get(err, "request_id"));
	}
	if (rid == NULL && h->request_id[0] != '\0')
		rid = h->request_id;
	fprintf(stderr, "kmsctl: error: %s: %s (HTTP %ld, request id %s)\n",
	    code != NULL ? km_terminal_safe(code, code_buf, sizeof(code_buf)) :
	    "http_error",
	    msg != NULL ? km_terminal_safe(msg, msg_buf, sizeof(msg_buf)) :
	    "the server's answer has no error object",
	    status, rid != NULL ? km_terminal_safe(rid, rid_buf, sizeof(rid_buf)) :
	    "none");
	if (status == 401 && !h->have_token)
		fprintf(stderr, "kmsctl: no token given: set KMS_TOKEN or use "
		    "--token-file FILE\n");
}

/* Every option again on each call: curl_easy_reset() between requests keeps
 * the connection and DNS caches but forgets the previous method and body.
 * The options of every request: `url`, `headers`, the body to
 * write(data), the TLS CA and the connect timeout. */
static int
setup_common(struct cli_http *h, const char *url, struct curl_slist *headers,
    curl_write_callback on_write, void *data)
{
	CURL *c = h->curl;

	curl_easy_reset(c);
	h->errbuf[0] = '\0';
	if (curl_easy_setopt(c, CURLOPT_URL, url) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
	    /* Send exactly the path built here: no dot-segment folding. */
	    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_USERAGENT, "kmsctl/" KMSD_VERSION) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_WRITEDATA, data) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_HEADERDATA, h) != CURLE_OK)
		return -1;
	if (h->cacert != NULL &&
	    curl_easy_setopt(c, CURLOPT_CAINFO, h->cacert) != CURLE_OK)
		return -1;
	return 0;
}

static int
setup_request(struct cli_http *h, const char *method, const char *url,
    const char *req, size_t req_len)
{
	CURL *c = h->curl;

	if (setup_common(h, url, h->headers, on_body, h) != 0 ||
	    curl_easy_setopt(c, CURLOPT_TIMEOUT, 300L) != CURLE_OK)
		return -1;
	/* A POST without a body (rotate) still says Content-Length: 0. */
	if (req == NULL && strcmp(method, "POST") == 0) {
		req = "";
		req_len = 0;
	}
	if (req != NULL) {
		if (curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)req_len) != CURLE_OK ||
		    curl_easy_setopt(c, CURLOPT_POSTFIELDS, req) != CURLE_OK)
			return -1;
	}
	if (strcmp(method, req != NULL ? "POST" : "GET") != 0 &&
	    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK)
		return -1;
	return 0;
}

/* Forgets the last answer and returns the URL of `path` (free()), or
 * NULL when it would be too long. */
static char *
request_begin(struct cli_http *h, const char *path)
{
	struct km_buf url = KM_BUF_INIT(CLI_MAX_URL);
	char *u;

	h->request_id[0] = '\0';
	h->last_code[0] = '\0';
	h->last_status = 0;
	km_buf_free(&h->resp);
	km_buf_append_str(&url, h->base);
	km_buf_append_str(&url, path);
	u = km_buf_take_str(&url);
	km_buf_free(&url);
	return u;
}

/* A non-2xx answer (`doc` its JSON object, or NULL): printed and kept for
 * cli_http_last_code/status. Returns CLI_FAIL (4xx) or CLI_UNREACHABLE. */
static int
answer_error(struct cli_http *h, long status, const json_t *doc)
{
	const char *code;

	print_error(h, status, doc);
	h->last_status = status;
	code = json_string_value(json_object_get(json_object_get(doc, "error"),
	    "code"));
	snprintf(h->last_code, sizeof(h->last_code), "%s",
	    code != NULL ? code : "http_error");
	return status >= 400 && status < 500 ? CLI_FAIL : CLI_UNREACHABLE;
}

/* The call itself: `req` is the body text (or NULL), `extra` one more
 * header line for this request only (or NULL). */
static int
http_call(struct cli_http *h, const char *method, const char *path,
    const char *req, const char *extra, json_t **answer)
{
	struct curl_slist *last = NULL, *one = NULL;
	char *u = NULL;
	json_t *doc = NULL;
	json_error_t jerr;
	CURLcode cc;
	long status = 0;
	int r = CLI_UNREACHABLE;

	*answer = NULL;
	if ((u = request_begin(h, path)) == NULL) {
		fprintf(stderr, "kmsctl: URL too long\n");
		r = CLI_USAGE;
		goto out;
	}
	if (extra != NULL) {
		/* Linked after the shared headers for this call only. */
		if ((one = curl_slist_append(NULL, extra)) == NULL) {
			fprintf(stderr, "kmsctl: out of memory\n");
			r = CLI_USAGE;
			goto out;
		}
		for (last = h->headers; last->next != NULL; last = last->next)
			;
		last->next = one;
	}
	if (setup_request(h, method, u, req, req != NULL ? strlen(req) : 0) != 0) {
		fprintf(stderr, "kmsctl: cannot set up the HTTP request\n");
		r = CLI_USAGE;
		goto out;
	}
	if ((cc = curl_easy_perform(h->curl)) != CURLE_OK) {
		if (cc == CURLE_WRITE_ERROR && h->resp.failed)
			fprintf(stderr, "kmsctl: %s %s: the answer is larger than "
			    "%u bytes\n", method, path, CLI_MAX_RESPONSE);
		else
			fprintf(stderr, "kmsctl: cannot reach %s: %s\n", h->base,
			    h->errbuf[0] != '\0' ? h->errbuf : curl_easy_strerror(cc));
		goto out;
	}
	if (curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK) {
		fprintf(stderr, "kmsctl: no HTTP status from %s\n", h->base);
		goto out;
	}
	doc = json_loadb(h->resp.data != NULL ? (const char *)h->resp.data : "",
	    h->resp.len, JSON_REJECT_DUPLICATES, &jerr);
	if (doc != NULL && !json_is_object(doc)) {
		json_decref(doc);
		doc = NULL;
	}
	if (status >= 200 && status < 300) {
		if (doc == NULL) {
			fprintf(stderr, "kmsctl: %s %s: the answer is not a JSON "
			    "object (HTTP %ld, request id %s)\n", method, path,
			    status, h->request_id[0] ? h->request_id : "none");
			goto out;
		}
		*answer = doc;
		doc = NULL;
		r = CLI_OK;
		goto out;
	}
	r = answer_error(h, status, doc);
out:
	if (last != NULL)
		last->next = NULL;
	curl_slist_free_all(one);
	json_decref(doc);
	free(u);
	km_buf_free(&h->resp);
	return r;
}

int
cli_http_call(struct cli_http *h, const char *method, const char *path,
    const json_t *body, json_t **answer)
{
	char *req = NULL;
	int r;

	*answer = NULL;
	if (body != NULL && (req = json_dumps(body, JSON_COMPACT)) == NULL) {
		fprintf(stderr, "kmsctl: cannot encode the request\n");
		return CLI_USAGE;
	}
	r = http_call(h, method, path, req, NULL, answer);
	cli_json_str_free(req);
	return r;
}

int
cli_http_call_text(struct cli_http *h, const char *method, const char *path,
    const char *body, const char *idempotency_key, json_t **answer)
{
	char line[64 + CLI_MAX_IDEMPOTENCY_KEY];

	*answer = NULL;
	if (idempotency_key == NULL)
		return http_call(h, method, path, body, NULL, answer);
	if (strlen(idempotency_key) > CLI_MAX_IDEMPOTENCY_KEY) {
		fprintf(stderr, "kmsctl: idempotency key too long\n");
		return CLI_USAGE;
	}
	snprintf(line, sizeof(line), "Idempotency-Key: %s", idempotency_key);
	return http_call(h, method, path, body, line, answer);
}

/* cli_http_get_stream's transfer: what the body goes to and how much of
 * it has gone. */
struct stream {
	struct cli_http *h;
	int (*sink)(void *arg, const char *p, size_t n);
	void *arg;
	uint64_t bytes, max;
	int werr;		/* what sink returned; EFBIG: too large */
};

static size_t
on_stream(char *p, size_t size, size_t n, void *arg)
{
	struct stream *st = arg;
	long status = 0;

	/* size is 1 for libcurl's write callback; a short count aborts. */
	if (size != 1 || n == 0)
		return size * n;
	(void)curl_easy_getinfo(st->h->curl, CURLINFO_RESPONSE_CODE, &status);
	if (status < 200 || status >= 300) {
		/* The error object; bounded, and a cut one is still shown. */
		(void)km_buf_append(&st->h->resp, p, n);
		return n;
	}
	if (n > st->max - st->bytes)
		st->werr = EFBIG;
	else
		st->werr = st->sink(st->arg, p, n);
	if (st->werr != 0)
		return 0;
	st->bytes += n;
	return n;
}

int
cli_http_get_stream(struct cli_http *h, const char *path, uint64_t max,
    int (*sink)(void *arg, const char *p, size_t n), void *arg)
{
	struct stream st = { h, sink, arg, 0, max, 0 };
	char *u = NULL;
	json_t *doc = NULL;
	CURLcode cc;
	long status = 0;
	int r = CLI_UNREACHABLE;

	if ((u = request_begin(h, path)) == NULL ||
	    setup_common(h, u, h->stream_headers, on_stream, &st) != 0 ||
	    /* Segments can be large: give up only on a stalled transfer. */
	    curl_easy_setopt(h->curl, CURLOPT_LOW_SPEED_LIMIT, 1L) != CURLE_OK ||
	    curl_easy_setopt(h->curl, CURLOPT_LOW_SPEED_TIME, 60L) != CURLE_OK) {
		fprintf(stderr, "kmsctl: cannot set up GET %s\n", path);
		r = CLI_USAGE;
		goto out;
	}
	if ((cc = curl_easy_perform(h->curl)) != CURLE_OK) {
		if (st.werr == EFBIG)
			fprintf(stderr, "kmsctl: GET %s: the answer is larger than %"
			    PRIu64 " bytes\n", path, max);
		else if (st.werr != 0) {
			fprintf(stderr, "kmsctl: GET %s: %s\n", path,
			    strerror(st.werr));
			r = CLI_USAGE;
		} else
			fprintf(stderr, "kmsctl: cannot reach %s: %s\n", h->base,
			    h->errbuf[0] != '\0' ? h->errbuf : curl_easy_strerror(cc));
		goto out;
	}
	(void)curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &status);
	if (status >= 200 && status < 300) {
		r = CLI_OK;
		goto out;
	}
	doc = json_loadb(h->resp.data != NULL ? (const char *)h->resp.data : "",
	    h->resp.len, 0, NULL);
	r = answer_error(h, status, json_is_object(doc) ? doc : NULL);
out:
	json_decref(doc);
	free(u);
	km_buf_free(&h->resp);
	return r;
}

const char *
cli_http_last_code(const struct cli_http *h)
{
	return h->last_code;
}

long
cli_http_last_status(const struct cli_http *h)
{
	return h->last_status;
}

const char *
cli_http_last_request_id(const struct cli_http *h)
{
	return h->request_id;
}
