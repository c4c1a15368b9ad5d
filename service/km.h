/* Shared basics of kmsd and kmsctl: the error enum, a bounded byte buffer,
 * base64/hex on top of OpenSSL, and time formatting. */
#ifndef KM_H
#define KM_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define KM_WUR __attribute__((warn_unused_result))

/* One error type for the whole daemon. api/api_err.c maps each value to
 * exactly one HTTP status and JSON error code. */
typedef enum {
	KM_OK = 0,
	KM_ERR_INTERNAL,
	KM_ERR_NOMEM,
	KM_ERR_IO,
	KM_ERR_CONFIG,
	KM_ERR_INVALID_JSON,
	KM_ERR_INVALID_REQUEST,
	KM_ERR_INVALID_CIPHERTEXT,
	KM_ERR_MISSING_CONTEXT,
	KM_ERR_UNSUPPORTED_KEY_TYPE,
	KM_ERR_UNAUTHENTICATED,
	KM_ERR_FORBIDDEN,
	KM_ERR_CEREMONY_REQUIRED,
	KM_ERR_INVALID_SIGNATURE,
	KM_ERR_CEREMONY_NOT_FOUND,
	KM_ERR_CEREMONY_CLOSED,
	KM_ERR_QUORUM_NOT_MET,
	KM_ERR_STATE_CHANGED,
	KM_ERR_DECISION_FINAL,
	KM_ERR_ROTATION_IN_PROGRESS,
	KM_ERR_IDEMPOTENCY_IN_PROGRESS,
	KM_ERR_IDEMPOTENCY_REUSED,
	KM_ERR_NOT_FOUND,
	KM_ERR_KEY_NOT_FOUND,
	KM_ERR_VERSION_NOT_FOUND,
	KM_ERR_TOKEN_NOT_FOUND,
	KM_ERR_METHOD,
	KM_ERR_KEY_EXISTS,
	KM_ERR_VERSION_STATE,
	KM_ERR_NO_PRIMARY,
	KM_ERR_INVALID_TRANSITION,
	KM_ERR_VERSION_IN_USE,
	KM_ERR_TOO_LARGE,
	KM_ERR_RATE_LIMITED,
	KM_ERR_HSM,
	KM_ERR_HSM_AUTH,
	KM_ERR_STORE,
	KM_ERR_AUDIT,
	KM_ERR_COUNT
} km_err;

const char *km_strerror(km_err e);

/* A growable byte buffer that never grows past `limit` bytes. Growth past
 * the limit or a failed allocation sets `failed`; callers may append many
 * times and check once. Contents are wiped before they are released. */
struct km_buf {
	unsigned char *data;
	size_t len;
	size_t cap;
	size_t limit;
	int failed;
};

#define KM_BUF_INIT(lim) { NULL, 0, 0, (lim), 0 }

int km_buf_reserve(struct km_buf *b, size_t extra) KM_WUR;
int km_buf_append(struct km_buf *b, const void *p, size_t n);
int km_buf_append_str(struct km_buf *b, const char *s);
int km_buf_append_u32be(struct km_buf *b, uint32_t v);
/* Wipes and frees the contents; the buffer can be reused. */
void km_buf_free(struct km_buf *b);
/* Hands the contents over NUL-terminated; the buffer is left empty. */
char *km_buf_take_str(struct km_buf *b);

/* Makes room in *arr, an array with room for *cap entries of `elem` bytes,
 * for at least `need` entries: twice the room (16 at first, or `need` if
 * that is more), the new entries zeroed. For arrays of rows, not secrets
 * (the old block is realloc'd, not wiped). Returns KM_OK, or KM_ERR_NOMEM
 * (also when the size would overflow) with *arr and *cap unchanged. */
int km_grow(void **arr, size_t *cap, size_t need, size_t elem) KM_WUR;

/* Copies `in` into out[size] for printing on a terminal, control
 * characters (C0 and DEL) replaced by '?' and cut at size - 1 bytes, so
 * an escape sequence in a server's or file's text cannot act on the
 * terminal. Returns out. size must be at least 1. */
const char *km_terminal_safe(const char *in, char *out, size_t size);

/* Standard padded base64 (RFC 4648 section 4). *out is NUL-terminated and
 * owned by the caller. */
int km_b64_encode(const unsigned char *in, size_t len, char **out) KM_WUR;
/* Strict decode: rejects whitespace, bad padding and non-alphabet bytes.
 * *out (caller frees with km_secure_free(*out, *outlen)) holds *outlen bytes. */
int km_b64_decode(const char *in, size_t inlen, unsigned char **out,
    size_t *outlen) KM_WUR;
/* base64url without padding (RFC 7515 section 2). */
int km_b64url_encode(const unsigned char *in, size_t len, char **out) KM_WUR;
int km_b64url_decode(const char *in, size_t inlen, unsigned char **out,
    size_t *outlen) KM_WUR;

/* Lower-case hex; `out` has room for 2*len+1 bytes. */
void km_hex(const unsigned char *in, size_t len, char *out);
int km_unhex(const char *in, unsigned char *out, size_t outlen) KM_WUR;

/* OPENSSL_cleanse then free; NULL is a no-op. */
void km_secure_free(void *p, size_t len);

/* Cryptographically random bytes from OpenSSL's DRBG. */
int km_random(unsigned char *out, size_t len) KM_WUR;

/* Wall clock in microseconds since the epoch. */
int64_t km_now_us(void);
/* RFC 3339 UTC with microseconds ("2026-11-23T18:20:16.123456Z"), or with
 * seconds only when `micro` is 0. `out` holds at least 32 bytes. */
void km_time_format(int64_t us, int micro, char *out, size_t outlen);
/* Parses RFC 3339 ("YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm)") into microseconds. */
int km_time_parse(const char *s, int64_t *us) KM_WUR;
/* Parses a duration "<n>s|m|h|d" into seconds (1 s .. 100 years). */
int km_duration_parse(const char *s, int64_t *seconds) KM_WUR;
/* Formats seconds back into the largest exact unit ("90d"). */
void km_duration_format(int64_t seconds, char *out, size_t outlen);

#endif
