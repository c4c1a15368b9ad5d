/* kmsctl's HTTP client: one reused libcurl handle, JSON in and out, and the
 * mapping of every failure to one of kmsctl's exit codes. */
#ifndef KMSCTL_HTTP_H
#define KMSCTL_HTTP_H

#include <stdint.h>

#include <jansson.h>

#include "km.h"

/* kmsctl's exit codes; docs/KMSCTL.md lists them. */
enum cli_exit {
	CLI_OK = 0,		/* done */
	CLI_FAIL = 1,		/* the server refused (4xx) or the operation failed */
	CLI_USAGE = 2,		/* bad arguments, or a local file could not be read/written */
	CLI_UNREACHABLE = 3,	/* no connection, a timeout, a 5xx or an answer that is not JSON */
};

/* Largest answer kmsctl accepts from the server. */
#define CLI_MAX_RESPONSE (64u << 20)

/* Makes jansson wipe every block it frees, so plaintext that passed
 * through a json_t does not linger on the heap. Call once, before any
 * other jansson call. */
void cli_json_setup(void);

/* Frees a string from json_dumps() after wiping it; NULL is a no-op. */
void cli_json_str_free(char *s);

struct cli_http;

/* Reads KMS_ADDR (default http://127.0.0.1:8420) and KMS_CACERT, and the
 * bearer token from `token_file` when it is not NULL, else from KMS_TOKEN
 * (no token at all is allowed; the server then answers 401).
 * Returns CLI_OK, or CLI_USAGE after printing why. */
int cli_http_new(const char *token_file, struct cli_http **out) KM_WUR;
void cli_http_free(struct cli_http *h);

/* Sends `method` to `path` (starting with "/"), with `body` as JSON when it
 * is not NULL. On a 2xx answer *answer is the JSON object the server sent
 * (the caller decrefs it) and CLI_OK is returned. Otherwise the server's
 * error code, message and request id (or the transport error) are printed
 * to stderr, *answer is NULL and CLI_FAIL (4xx) or CLI_UNREACHABLE
 * (transport failure, 5xx, malformed answer) is returned. */
int cli_http_call(struct cli_http *h, const char *method, const char *path,
    const json_t *body, json_t **answer) KM_WUR;

/* The longest Idempotency-Key kmsd accepts (docs/API.md). */
#define CLI_MAX_IDEMPOTENCY_KEY 128

/* Like cli_http_call, with the body given as text sent byte for byte (or
 * NULL) and, when `idempotency_key` is not NULL, an Idempotency-Key
 * header: a repeat of the same body with the same key gets the stored
 * answer of the first (kmsd docs/API.md). */
int cli_http_call_text(struct cli_http *h, const char *method,
    const char *path, const char *body, const char *idempotency_key,
    json_t **answer) KM_WUR;

/* GETs `path` like cli_http_call, for an answer that is not JSON (an audit
 * segment, checkpoints.jsonl): sent with Accept: application/x-ndjson, no
 * overall timeout (only a transfer stalled for 60 s is given up), and the
 * body of a 2xx answer handed to sink(arg, p, n) as it arrives, at most
 * `max` bytes. sink returns 0, or an errno value that stops the transfer
 * (EFBIG: too large). Returns CLI_OK; or, after printing why, CLI_FAIL
 * (4xx), CLI_UNREACHABLE (transport failure, 5xx, more than `max`) or
 * CLI_USAGE (sink failed otherwise). */
int cli_http_get_stream(struct cli_http *h, const char *path, uint64_t max,
    int (*sink)(void *arg, const char *p, size_t n), void *arg) KM_WUR;

/* After a failed cli_http_call: the server's error.code ("http_error"
 * when the answer had none; "" after a transport failure) and the HTTP
 * status (0 when no answer came). After any call: its X-Request-Id. */
const char *cli_http_last_code(const struct cli_http *h);
long cli_http_last_status(const struct cli_http *h);
const char *cli_http_last_request_id(const struct cli_http *h);

/* *out = prefix + percent-encoded `segment` + suffix (suffix may be NULL),
 * owned by the caller (free()). Returns CLI_OK or CLI_USAGE. */
int cli_http_path(struct cli_http *h, const char *prefix, const char *segment,
    const char *suffix, char **out) KM_WUR;

/* Reads a bearer token from the first line of `path` into *out (the caller
 * frees it with km_secure_free(*out, strlen(*out))). Returns CLI_OK or
 * CLI_USAGE after printing why. */
int cli_read_token_file(const char *path, char **out) KM_WUR;

#endif
