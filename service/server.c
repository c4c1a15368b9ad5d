/* HTTP server on libmicrohttpd: body limits, request ids, JSON answers. */
#include "server.h"

#include <arpa/inet.h>
#include <malloc.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/x509.h>

#include "api.h"
#include "cfg.h"
#include "log.h"

struct mtls_entry {
	char token_id[17];
	char *subject;		/* RFC 2253 */
};

struct server {
	struct MHD_Daemon *daemon;
	struct api_ctx *ctx;
	size_t max_body;
	/* PEM text handed to libmicrohttpd; kept until the daemon stops. */
	char *tls_cert, *tls_key, *tls_ca;
	size_t tls_key_len;
	struct mtls_entry *mtls;
	size_t n_mtls;
};

/* Per-connection request state, created on the first callback. */
struct conn_state {
	struct km_buf body;
	int too_large;			/* 1: answered 413; 2: 413 due at the end */
	size_t dropped;			/* body bytes read past the limit */
	char tls_subject[512];		/* verified client certificate */
	const char *tls_token_id;	/* what it maps to, or NULL */
};

static void
wipe_free(void *p)
{
	if (p == NULL)
		return;
	/* The answer may hold a plaintext DEK or a new token secret. */
	OPENSSL_cleanse(p, malloc_usable_size(p));
	free(p);
}

static const char *
get_arg(void *conn, const char *name)
{
	return MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);
}

static enum MHD_Result
send_json(struct MHD_Connection *conn, int status, json_t *answer,
    const char *request_id, const char *allow, unsigned retry_after)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char *text;

	text = answer ? json_dumps(answer, JSON_COMPACT) : NULL;
	if (text == NULL) {
		static const char oom[] = "{\"error\":{\"code\":\"unavailable\","
		    "\"message\":\"out of memory\",\"request_id\":\"\"}}";

		status = 503;
		resp = MHD_create_response_from_buffer(sizeof(oom) - 1,
		    (void *)oom, MHD_RESPMEM_PERSISTENT);
	} else {
		resp = MHD_create_response_from_buffer_with_free_callback(
		    strlen(text), text, wipe_free);
	}
	if (resp == NULL) {
		wipe_free(text);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "application/json");
	MHD_add_response_header(resp, "X-Request-Id", request_id);
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	if (status == 405 && allow != NULL && allow[0] != '\0')
		MHD_add_response_header(resp, "Allow", allow);
	if (status == 429) {
		char secs[16];

		snprintf(secs, sizeof(secs), "%u", retry_after ? retry_after : 1);
		MHD_add_response_header(resp, "Retry-After", secs);
	}
	ret = MHD_queue_response(conn, (unsigned)status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* A non-JSON answer (an audit segment, the JWKS), or a 304 Not Modified
 * without a body; takes ownership of rq->raw. The handler may set an ETag
 * and a Cache-Control other than no-store (the public JWKS does). */
static enum MHD_Result
send_raw(struct MHD_Connection *conn, struct api_req *rq)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	int not_modified = rq->status == 304;

	if (not_modified)
		resp = MHD_create_response_from_buffer(0, (void *)"",
		    MHD_RESPMEM_PERSISTENT);
	else
		resp = MHD_create_response_from_buffer_with_free_callback(
		    rq->raw_len, rq->raw, free);
	if (resp == NULL) {
		free(rq->raw);
		return MHD_NO;
	}
	if (not_modified)
		free(rq->raw);
	else
		MHD_add_response_header(resp, "Content-Type", rq->raw_type ?
		    rq->raw_type : "application/octet-stream");
	MHD_add_response_header(resp, "X-Request-Id", rq->request_id);
	if (rq->etag[0] != '\0')
		MHD_add_response_header(resp, "ETag", rq->etag);
	MHD_add_response_header(resp, "Cache-Control",
	    rq->cache_control[0] != '\0' ? rq->cache_control : "no-store");
	ret = MHD_queue_response(conn, not_modified ? 304 : 200, resp);
	MHD_destroy_response(resp);
	return ret;
}

static void
new_request_id(char out[33])
{
	unsigned char b[16];

	if (km_random(b, sizeof(b)) != KM_OK)
		memset(b, 0, sizeof(b));
	km_hex(b, sizeof(b), out);
}

/* Answers 413 without reading the body. The refusal is audited like any
 * other, with the caller's identity when its token is valid. */
static enum MHD_Result
answer_too_large(struct server *srv, struct MHD_Connection *conn,
    const char *url, const char *method)
{
	struct api_req rq;
	enum MHD_Result ret;

	memset(&rq, 0, sizeof(rq));
	rq.ctx = srv->ctx;
	rq.method = method;
	rq.path = url;
	rq.op = "oversized";
	rq.auth_header = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_AUTHORIZATION);
	new_request_id(rq.request_id);
	snprintf(rq.who.actor, sizeof(rq.who.actor), "anonymous");
	if (rq.auth_header != NULL && api_authenticate(&rq) != KM_OK)
		snprintf(rq.who.actor, sizeof(rq.who.actor), "anonymous");
	api_audit_set(&rq, "method", json_string(method));
	api_audit_set(&rq, "path", json_string(url));
	api_error(&rq, KM_ERR_TOO_LARGE, "request body is over %zu bytes",
	    srv->max_body);
	if (api_audit_now(&rq, "error", rq.status) != KM_OK)
		api_error(&rq, KM_ERR_AUDIT, "the audit record could not be "
		    "written");
	api_metrics_observe(&rq, api_metrics_clock());
	ret = send_json(conn, rq.status, rq.answer, rq.request_id, NULL, 0);
	api_req_clear(&rq);
	return ret;
}

static int
declared_too_large(struct server *srv, struct MHD_Connection *conn)
{
	const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_CONTENT_LENGTH);
	char *end;
	unsigned long long n;

	if (cl == NULL)
		return 0;
	n = strtoull(cl, &end, 10);
	return *end != '\0' || n > srv->max_body;
}

/* The RFC 2253 subject of the client's certificate, if it verifies
 * against tls_client_ca_file (chain and validity dates). -1 otherwise. */
static int
client_subject(struct MHD_Connection *conn, char *out, size_t outlen)
{
	const union MHD_ConnectionInfo *ci;
	const gnutls_datum_t *peers;
	const unsigned char *p;
	gnutls_session_t s;
	unsigned status = 1, n = 0;
	X509 *x = NULL;
	BIO *bio = NULL;
	int len, r = -1;

	out[0] = '\0';
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	if (ci == NULL || (s = ci->tls_session) == NULL)
		return -1;
	if (gnutls_certificate_verify_peers2(s, &status) != GNUTLS_E_SUCCESS ||
	    status != 0)
		return -1;
	if ((peers = gnutls_certificate_get_peers(s, &n)) == NULL || n == 0)
		return -1;
	p = peers[0].data;
	if ((x = d2i_X509(NULL, &p, (long)peers[0].size)) == NULL ||
	    (bio = BIO_new(BIO_s_mem())) == NULL ||
	    X509_NAME_print_ex(bio, X509_get_subject_name(x), 0,
	    XN_FLAG_RFC2253) < 0)
		goto out;
	len = BIO_read(bio, out, (int)outlen - 1);
	if (len <= 0)
		goto out;
	out[len] = '\0';
	r = 0;
out:
	BIO_free(bio);
	X509_free(x);
	return r;
}

static void
map_client(struct server *srv, struct MHD_Connection *conn,
    struct conn_state *cs)
{
	size_t i;

	if (srv->n_mtls == 0 ||
	    client_subject(conn, cs->tls_subject, sizeof(cs->tls_subject)) != 0)
		return;
	for (i = 0; i < srv->n_mtls; i++) {
		if (strcmp(srv->mtls[i].subject, cs->tls_subject) == 0) {
			cs->tls_token_id = srv->mtls[i].token_id;
			return;
		}
	}
}

static enum MHD_Result
count_auth(void *cls, enum MHD_ValueKind kind, const char *key,
    const char *value)
{
	unsigned *n = cls;

	(void)kind;
	(void)value;
	if (strcasecmp(key, MHD_HTTP_HEADER_AUTHORIZATION) == 0)
		(*n)++;
	return MHD_YES;
}

static enum MHD_Result
count_idem(void *cls, enum MHD_ValueKind kind, const char *key,
    const char *value)
{
	int *n = cls;

	(void)kind;
	(void)value;
	if (strcasecmp(key, "Idempotency-Key") == 0)
		(*n)++;
	return MHD_YES;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	struct server *srv = cls;
	struct conn_state *cs = *con_cls;
	struct api_req rq;
	enum MHD_Result ret;
	unsigned n_auth = 0;
	int64_t started;

	(void)version;
	if (cs == NULL) {
		if ((cs = calloc(1, sizeof(*cs))) == NULL)
			return MHD_NO;
		cs->body.limit = srv->max_body;
		*con_cls = cs;
		map_client(srv, conn, cs);
		if (declared_too_large(srv, conn)) {
			cs->too_large = 1;
			return answer_too_large(srv, conn, url, method);
		}
		return MHD_YES;
	}
	if (*upload_data_size != 0) {
		/* libmicrohttpd 0.9.75 takes no answer in the middle of an
		 * upload: past the limit the rest is read and dropped, and 413
		 * goes out when the body ends. A client that streams on far
		 * past the limit is cut off. */
		if (cs->too_large) {
			cs->dropped += *upload_data_size;
			*upload_data_size = 0;
			return cs->dropped > 16 * srv->max_body ? MHD_NO : MHD_YES;
		}
		if (km_buf_append(&cs->body, upload_data, *upload_data_size) != KM_OK) {
			cs->too_large = 2;
			km_buf_free(&cs->body);
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
	/* 1: refused on Content-Length, answered already; 2: answer now. */
	if (cs->too_large == 1)
		return MHD_YES;
	if (cs->too_large == 2) {
		cs->too_large = 1;
		return answer_too_large(srv, conn, url, method);
	}

	memset(&rq, 0, sizeof(rq));
	rq.ctx = srv->ctx;
	rq.method = method;
	rq.path = url;
	rq.body = cs->body.data;
	rq.body_len = cs->body.len;
	rq.auth_header = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_AUTHORIZATION);
	rq.if_none_match = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_IF_NONE_MATCH);
	rq.idempotency_key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
	    "Idempotency-Key");
	MHD_get_connection_values(conn, MHD_HEADER_KIND, count_idem,
	    &rq.n_idempotency_keys);
	rq.get_arg = get_arg;
	rq.conn = conn;
	rq.tls_token_id = cs->tls_token_id;
	new_request_id(rq.request_id);
	if (cs->tls_token_id != NULL)
		api_audit_set(&rq, "tls_subject", json_string(cs->tls_subject));
	/* Two Authorization headers are two claims of identity: which one
	 * counts would depend on the parser, so neither does. */
	MHD_get_connection_values(conn, MHD_HEADER_KIND, count_auth, &n_auth);
	if (n_auth > 1)
		rq.auth_header = "ambiguous";
	started = api_metrics_clock();
	api_dispatch(&rq);
	api_metrics_observe(&rq, started);
	if ((rq.raw != NULL && rq.status == 200) || rq.status == 304) {
		ret = send_raw(conn, &rq);
		rq.raw = NULL;
	} else {
		ret = send_json(conn, rq.status, rq.answer, rq.request_id,
		    rq.allow, rq.retry_after);
	}
	api_req_clear(&rq);
	km_buf_free(&cs->body);
	return ret;
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct conn_state *cs = *con_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	if (cs == NULL)
		return;
	km_buf_free(&cs->body);
	free(cs);
	*con_cls = NULL;
}

/* libmicrohttpd decodes URLs in place, so "%00" would end the path early
 * and "/v1/keys/a%00x" would reach key "a". A value holding an encoded NUL
 * is left undecoded: '%' is in no route or key name, so it goes nowhere. */
static size_t
on_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
	const char *p;

	(void)cls;
	(void)conn;
	for (p = s; (p = strchr(p, '%')) != NULL; p++)
		if (p[1] == '0' && p[2] == '0')
			return strlen(s);
	return MHD_http_unescape(s);
}

static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];

	(void)cls;
	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	log_warn("http: %s", line);
}

/* Resolves "host:port" or "[v6]:port" into a socket address. */
static int
parse_listen(const char *listen, struct sockaddr_storage *ss, int *family)
{
	struct addrinfo hints, *res = NULL;
	char host[256], *port;
	int r;

	if (snprintf(host, sizeof(host), "%s", listen) >= (int)sizeof(host))
		return KM_ERR_CONFIG;
	if ((port = strrchr(host, ':')) == NULL)
		return KM_ERR_CONFIG;
	*port++ = '\0';
	if (host[0] == '[') {
		size_t n = strlen(host);

		if (n < 2 || host[n - 1] != ']')
			return KM_ERR_CONFIG;
		host[n - 1] = '\0';
		memmove(host, host + 1, n - 1);
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
	if ((r = getaddrinfo(host, port, &hints, &res)) != 0 || res == NULL) {
		log_error("listen address '%s' does not resolve: %s", listen,
		    gai_strerror(r));
		return KM_ERR_CONFIG;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*family = res->ai_family;
	freeaddrinfo(res);
	return KM_OK;
}

static int
read_text(const char *path, char **out, size_t *len)
{
	FILE *f;
	char *buf = NULL;
	long n;
	int r = KM_ERR_CONFIG;

	*out = NULL;
	if ((f = fopen(path, "r")) == NULL) {
		log_error("cannot open %s", path);
		return KM_ERR_CONFIG;
	}
	if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || n > (1 << 20) ||
	    fseek(f, 0, SEEK_SET) != 0 || (buf = malloc((size_t)n + 1)) == NULL ||
	    fread(buf, 1, (size_t)n, f) != (size_t)n) {
		log_error("cannot read %s", path);
		free(buf);
		goto out;
	}
	buf[n] = '\0';
	*out = buf;
	if (len != NULL)
		*len = (size_t)n;
	r = KM_OK;
out:
	fclose(f);
	return r;
}

/* Lines "<16-hex token id> <RFC 2253 subject>"; '#' starts a comment. */
static int
load_mtls_map(struct server *srv, const char *path)
{
	char line[1024];
	FILE *f;
	int lineno = 0, r = KM_OK;

	if ((f = fopen(path, "r")) == NULL) {
		log_error("cannot open mtls_subjects_file %s", path);
		return KM_ERR_CONFIG;
	}
	while (r == KM_OK && fgets(line, sizeof(line), f) != NULL) {
		struct mtls_entry *n;
		char *subj;
		size_t i;

		lineno++;
		line[strcspn(line, "\r\n")] = '\0';
		if (line[0] == '\0' || line[0] == '#')
			continue;
		for (i = 0; i < 16; i++)
			if (!((line[i] >= '0' && line[i] <= '9') ||
			    (line[i] >= 'a' && line[i] <= 'f')))
				break;
		subj = line + 17;
		if (i != 16 || line[16] != ' ' || *subj == '\0') {
			log_error("%s:%d: expected '<token id> <subject>'", path,
			    lineno);
			r = KM_ERR_CONFIG;
			break;
		}
		if ((n = realloc(srv->mtls, (srv->n_mtls + 1) * sizeof(*n))) == NULL) {
			r = KM_ERR_NOMEM;
			break;
		}
		srv->mtls = n;
		memcpy(n[srv->n_mtls].token_id, line, 16);
		n[srv->n_mtls].token_id[16] = '\0';
		if ((n[srv->n_mtls].subject = strdup(subj)) == NULL) {
			r = KM_ERR_NOMEM;
			break;
		}
		srv->n_mtls++;
	}
	fclose(f);
	return r;
}

static int
load_tls(struct server *srv, const struct cfg *c)
{
	int r;

	if (c->tls_cert_file == NULL)
		return KM_OK;
	if (c->tls_key_file == NULL) {
		log_error("tls_cert_file is set but tls_key_file is not");
		return KM_ERR_CONFIG;
	}
	if ((r = read_text(c->tls_cert_file, &srv->tls_cert, NULL)) != KM_OK ||
	    (r = read_text(c->tls_key_file, &srv->tls_key, &srv->tls_key_len)) != KM_OK)
		return r;
	if (c->tls_client_ca_file != NULL &&
	    (r = read_text(c->tls_client_ca_file, &srv->tls_ca, NULL)) != KM_OK)
		return r;
	if (c->mtls_subjects_file != NULL) {
		if (srv->tls_ca == NULL) {
			log_error("mtls_subjects_file needs tls_client_ca_file");
			return KM_ERR_CONFIG;
		}
		if ((r = load_mtls_map(srv, c->mtls_subjects_file)) != KM_OK)
			return r;
	}
	return KM_OK;
}

/* The TLS part of the daemon's options (an empty list without TLS). */
static struct MHD_OptionItem *
tls_options(struct server *srv, const struct cfg *c,
    struct MHD_OptionItem o[5])
{
	size_t n = 0;

	if (srv->tls_cert != NULL) {
		o[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_CERT, 0,
		    srv->tls_cert };
		o[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_KEY, 0,
		    srv->tls_key };
		o[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_PRIORITIES, 0,
		    c->tls_priorities };
		/* With a trust list libmicrohttpd asks for a client
		 * certificate; map_client verifies it. */
		if (srv->tls_ca != NULL)
			o[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_TRUST,
			    0, srv->tls_ca };
	}
	o[n] = (struct MHD_OptionItem){ MHD_OPTION_END, 0, NULL };
	return o;
}

static void
server_free(struct server *s)
{
	size_t i;

	if (s == NULL)
		return;
	for (i = 0; i < s->n_mtls; i++)
		free(s->mtls[i].subject);
	free(s->mtls);
	km_secure_free(s->tls_key, s->tls_key_len);
	free(s->tls_cert);
	free(s->tls_ca);
	free(s);
}

int
server_start(const struct cfg *c, struct api_ctx *ctx, struct server **out,
    uint16_t *port)
{
	struct sockaddr_storage ss;
	struct MHD_OptionItem tls_opts[5];
	const union MHD_DaemonInfo *info;
	struct server *srv;
	unsigned flags;
	int family, r;

	*out = NULL;
	*port = 0;
	if ((r = parse_listen(c->listen, &ss, &family)) != KM_OK) {
		log_error("listen = '%s' is not host:port", c->listen);
		return r;
	}
	if ((srv = calloc(1, sizeof(*srv))) == NULL)
		return KM_ERR_NOMEM;
	srv->ctx = ctx;
	srv->max_body = (size_t)c->max_body;
	if ((r = load_tls(srv, c)) != KM_OK) {
		server_free(srv);
		return r;
	}
	flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
	    MHD_USE_ERROR_LOG;
	if (family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if (srv->tls_cert != NULL)
		flags |= MHD_USE_TLS;
	/* The logger must come first or MHD logs the earlier options itself. */
	srv->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, srv,
	    MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
	    MHD_OPTION_THREAD_POOL_SIZE, (unsigned)c->http_threads,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)c->max_connections,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)c->max_connections_per_ip,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)c->connection_timeout,
	    /* libmicrohttpd zeroes this pool on every request of a
	     * kept-alive connection: 64 KiB cost 99k instructions a wrap,
	     * a fifth of all. It holds the request line, headers and read
	     * buffer; bodies go to conn_state. */
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16 * 1024,
	    MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
	    MHD_OPTION_UNESCAPE_CALLBACK, on_unescape, srv,
	    MHD_OPTION_ARRAY, tls_options(srv, c, tls_opts),
	    MHD_OPTION_END);
	if (srv->daemon == NULL) {
		log_error("cannot listen on %s%s", c->listen, srv->tls_cert ?
		    " (check the TLS certificate, key and priorities)" : "");
		server_free(srv);
		return KM_ERR_IO;
	}
	info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
	*port = info ? info->port : 0;
	*out = srv;
	return KM_OK;
}

void
server_stop(struct server *s)
{
	if (s == NULL)
		return;
	MHD_stop_daemon(s->daemon);
	server_free(s);
}
