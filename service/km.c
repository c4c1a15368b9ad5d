/* Shared basics: error strings, bounded buffers, base64/hex, time. */
#include "km.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

static const char *const km_err_names[KM_ERR_COUNT] = {
	[KM_OK] = "ok",
	[KM_ERR_INTERNAL] = "internal error",
	[KM_ERR_NOMEM] = "out of memory",
	[KM_ERR_IO] = "I/O error",
	[KM_ERR_CONFIG] = "configuration error",
	[KM_ERR_INVALID_JSON] = "invalid JSON",
	[KM_ERR_INVALID_REQUEST] = "invalid request",
	[KM_ERR_INVALID_CIPHERTEXT] = "invalid ciphertext",
	[KM_ERR_MISSING_CONTEXT] = "missing required context",
	[KM_ERR_UNSUPPORTED_KEY_TYPE] = "unsupported key type",
	[KM_ERR_UNAUTHENTICATED] = "unauthenticated",
	[KM_ERR_FORBIDDEN] = "forbidden",
	[KM_ERR_CEREMONY_REQUIRED] = "ceremony required",
	[KM_ERR_INVALID_SIGNATURE] = "officer signature not valid",
	[KM_ERR_CEREMONY_NOT_FOUND] = "ceremony not found",
	[KM_ERR_CEREMONY_CLOSED] = "ceremony closed",
	[KM_ERR_QUORUM_NOT_MET] = "quorum not met",
	[KM_ERR_STATE_CHANGED] = "target state changed since the request",
	[KM_ERR_DECISION_FINAL] = "officer decision is final",
	[KM_ERR_ROTATION_IN_PROGRESS] = "MEK rotation in progress",
	[KM_ERR_IDEMPOTENCY_IN_PROGRESS] = "a request with this idempotency key is running",
	[KM_ERR_IDEMPOTENCY_REUSED] = "idempotency key used for another request",
	[KM_ERR_NOT_FOUND] = "not found",
	[KM_ERR_KEY_NOT_FOUND] = "key not found",
	[KM_ERR_VERSION_NOT_FOUND] = "key version not found",
	[KM_ERR_TOKEN_NOT_FOUND] = "token not found",
	[KM_ERR_METHOD] = "method not allowed",
	[KM_ERR_KEY_EXISTS] = "key exists",
	[KM_ERR_VERSION_STATE] = "key version state does not allow this",
	[KM_ERR_NO_PRIMARY] = "key has no primary version",
	[KM_ERR_INVALID_TRANSITION] = "state transition not allowed",
	[KM_ERR_VERSION_IN_USE] = "key version still in use",
	[KM_ERR_TOO_LARGE] = "payload too large",
	[KM_ERR_RATE_LIMITED] = "rate limited",
	[KM_ERR_HSM] = "token unavailable",
	[KM_ERR_HSM_AUTH] = "token login failed",
	[KM_ERR_STORE] = "metadata store unavailable",
	[KM_ERR_AUDIT] = "audit log unavailable",
};

const char *
km_strerror(km_err e)
{
	if ((int)e < 0 || e >= KM_ERR_COUNT || km_err_names[e] == NULL)
		return "unknown error";
	return km_err_names[e];
}

int
km_grow(void **arr, size_t *cap, size_t need, size_t elem)
{
	size_t ncap;
	void *g;

	if (need <= *cap)
		return KM_OK;
	ncap = *cap == 0 ? 16 : *cap > SIZE_MAX / 2 ? SIZE_MAX : *cap * 2;
	if (ncap < need)
		ncap = need;
	if (elem == 0 || ncap > SIZE_MAX / elem ||
	    (g = realloc(*arr, ncap * elem)) == NULL)
		return KM_ERR_NOMEM;
	memset((char *)g + *cap * elem, 0, (ncap - *cap) * elem);
	*arr = g;
	*cap = ncap;
	return KM_OK;
}

int
km_buf_reserve(struct km_buf *b, size_t extra)
{
	unsigned char *n;
	size_t want, cap;

	if (b->failed)
		return KM_ERR_NOMEM;
	/* One byte more is always allocated for the NUL: len + extra + 1
	 * must not wrap either. */
	if (extra >= SIZE_MAX - b->len || b->len + extra > b->limit) {
		b->failed = 1;
		return KM_ERR_TOO_LARGE;
	}
	want = b->len + extra;
	/* A buffer that has never allocated has no room for the NUL yet,
	 * even for a zero-byte append. */
	if (want <= b->cap && b->data != NULL)
		return KM_OK;
	cap = b->cap ? b->cap : 64;
	while (cap < want)
		cap = cap > SIZE_MAX / 2 ? want : cap * 2;
	if (cap > b->limit)
		cap = b->limit;
	/* Not realloc: the old block may hold secrets and must be wiped. */
	if ((n = malloc(cap + 1)) == NULL) {
		b->failed = 1;
		return KM_ERR_NOMEM;
	}
	if (b->data != NULL) {
		memcpy(n, b->data, b->len);
		km_secure_free(b->data, b->cap + 1);
	}
	b->data = n;
	b->cap = cap;
	return KM_OK;
}

int
km_buf_append(struct km_buf *b, const void *p, size_t n)
{
	int r;

	if ((r = km_buf_reserve(b, n)) != KM_OK)
		return r;
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return KM_OK;
}

int
km_buf_append_str(struct km_buf *b, const char *s)
{
	return km_buf_append(b, s, strlen(s));
}

int
km_buf_append_u32be(struct km_buf *b, uint32_t v)
{
	unsigned char be[4] = { v >> 24, v >> 16, v >> 8, v };

	return km_buf_append(b, be, sizeof(be));
}

void
km_buf_free(struct km_buf *b)
{
	if (b->data != NULL)
		km_secure_free(b->data, b->cap + 1);
	b->data = NULL;
	b->len = b->cap = 0;
	b->failed = 0;
}

char *
km_buf_take_str(struct km_buf *b)
{
	char *s;

	/* An empty buffer allocates here, so the caller gets "" not NULL. */
	if (b->failed || km_buf_reserve(b, 0) != KM_OK)
		return NULL;
	b->data[b->len] = '\0';
	s = (char *)b->data;
	b->data = NULL;
	b->len = b->cap = 0;
	return s;
}

void
km_secure_free(void *p, size_t len)
{
	if (p == NULL)
		return;
	OPENSSL_cleanse(p, len);
	free(p);
}

int
km_random(unsigned char *out, size_t len)
{
	if (len > INT_MAX || RAND_bytes(out, (int)len) != 1)
		return KM_ERR_INTERNAL;
	return KM_OK;
}

int
km_b64_encode(const unsigned char *in, size_t len, char **out)
{
	size_t outlen;
	char *s;

	*out = NULL;
	if (len > (INT_MAX / 4) * 3 - 3)
		return KM_ERR_TOO_LARGE;
	outlen = 4 * ((len + 2) / 3);
	if ((s = malloc(outlen + 1)) == NULL)
		return KM_ERR_NOMEM;
	if (EVP_EncodeBlock((unsigned char *)s, in, (int)len) != (int)outlen) {
		free(s);
		return KM_ERR_INTERNAL;
	}
	s[outlen] = '\0';
	*out = s;
	return KM_OK;
}

/* Value of a base64 alphabet character, -1 outside the alphabet. Not
 * isalnum(): that depends on the locale. */
static int
b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '+' ? 62 : c == '/' ? 63 : -1;
}

const char *
km_terminal_safe(const char *in, char *out, size_t size)
{
	size_t i;

	for (i = 0; in[i] != '\0' && i + 1 < size; i++)
		out[i] = ((unsigned char)in[i] < 0x20 || in[i] == 0x7f) ? '?' :
		    in[i];
	out[i] = '\0';
	return out;
}

int
km_b64_decode(const char *in, size_t inlen, unsigned char **out, size_t *outlen)
{
	unsigned char *buf;
	size_t pad = 0, i;
	int n;

	*out = NULL;
	*outlen = 0;
	/* EVP_DecodeBlock skips whitespace and accepts sloppy padding; check
	 * the canonical form first so one blob has exactly one spelling. */
	if (inlen % 4 != 0 || inlen > INT_MAX)
		return KM_ERR_INVALID_REQUEST;
	if (inlen >= 1 && in[inlen - 1] == '=')
		pad++;
	if (inlen >= 2 && in[inlen - 2] == '=')
		pad++;
	for (i = 0; i < inlen - pad; i++)
		if (b64_val((unsigned char)in[i]) < 0)
			return KM_ERR_INVALID_REQUEST;
	/* The bits under the padding must be zero (RFC 4648 section 3.5). */
	if (pad > 0 && (b64_val((unsigned char)in[inlen - pad - 1]) &
	    (pad == 2 ? 0x0f : 0x03)) != 0)
		return KM_ERR_INVALID_REQUEST;
	if ((buf = malloc(inlen / 4 * 3 + 1)) == NULL)
		return KM_ERR_NOMEM;
	n = EVP_DecodeBlock(buf, (const unsigned char *)in, (int)inlen);
	if (n < 0 || (size_t)n < pad) {
		km_secure_free(buf, inlen / 4 * 3 + 1);
		return KM_ERR_INVALID_REQUEST;
	}
	*out = buf;
	*outlen = (size_t)n - pad;
	return KM_OK;
}

int
km_b64url_encode(const unsigned char *in, size_t len, char **out)
{
	char *s, *p;
	int r;

	if ((r = km_b64_encode(in, len, &s)) != KM_OK)
		return r;
	for (p = s; *p != '\0'; p++) {
		if (*p == '+')
			*p = '-';
		else if (*p == '/')
			*p = '_';
		else if (*p == '=') {
			*p = '\0';
			break;
		}
	}
	*out = s;
	return KM_OK;
}

int
km_b64url_decode(const char *in, size_t inlen, unsigned char **out,
    size_t *outlen)
{
	char *s;
	size_t i, padded;
	int r;

	*out = NULL;
	*outlen = 0;
	if (inlen % 4 == 1 || inlen > INT_MAX - 4)
		return KM_ERR_INVALID_REQUEST;
	padded = (inlen + 3) / 4 * 4;
	if ((s = malloc(padded + 1)) == NULL)
		return KM_ERR_NOMEM;
	for (i = 0; i < inlen; i++) {
		char c = in[i];

		if (c == '+' || c == '/' || c == '=') {
			free(s);
			return KM_ERR_INVALID_REQUEST;
		}
		s[i] = c == '-' ? '+' : c == '_' ? '/' : c;
	}
	for (; i < padded; i++)
		s[i] = '=';
	s[padded] = '\0';
	r = km_b64_decode(s, padded, out, outlen);
	km_secure_free(s, padded + 1);
	return r;
}

void
km_hex(const unsigned char *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0xf];
	}
	out[2 * len] = '\0';
}

static int
hex_val(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int
km_unhex(const char *in, unsigned char *out, size_t outlen)
{
	size_t i;

	if (strlen(in) != 2 * outlen)
		return KM_ERR_INVALID_REQUEST;
	for (i = 0; i < outlen; i++) {
		int hi = hex_val(in[2 * i]), lo = hex_val(in[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return KM_ERR_INVALID_REQUEST;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return KM_OK;
}

int64_t
km_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void
km_time_format(int64_t us, int micro, char *out, size_t outlen)
{
	time_t secs = (time_t)(us / 1000000);
	struct tm tm;
	char base[32];

	gmtime_r(&secs, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	if (micro)
		snprintf(out, outlen, "%s.%06ldZ", base, (long)(us % 1000000));
	else
		snprintf(out, outlen, "%sZ", base);
}

static int
parse_digits(const char **p, int n, int *val)
{
	int v = 0, i;

	for (i = 0; i < n; i++) {
		if (!isdigit((unsigned char)(*p)[i]))
			return -1;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*val = v;
	return 0;
}

static int
days_in_month(int y, int m)
{
	static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31,
	    30, 31 };
	int leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);

	return m == 2 && leap ? 29 : days[m - 1];
}

int
km_time_parse(const char *s, int64_t *us)
{
	struct tm tm = { 0 };
	int y, mo, d, h, mi, sec, oh, om, frac_us = 0, scale = 100000;
	const char *p = s;
	int64_t t, off = 0;

	*us = 0;
	if (parse_digits(&p, 4, &y) || *p++ != '-' ||
	    parse_digits(&p, 2, &mo) || *p++ != '-' ||
	    parse_digits(&p, 2, &d) || (*p != 'T' && *p != 't') ||
	    (p++, parse_digits(&p, 2, &h)) || *p++ != ':' ||
	    parse_digits(&p, 2, &mi) || *p++ != ':' ||
	    parse_digits(&p, 2, &sec))
		return KM_ERR_INVALID_REQUEST;
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return KM_ERR_INVALID_REQUEST;
		for (; isdigit((unsigned char)*p); p++) {
			frac_us += (*p - '0') * scale;
			scale /= 10;
		}
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p++ == '-' ? -1 : 1;

		if (parse_digits(&p, 2, &oh) || *p++ != ':' ||
		    parse_digits(&p, 2, &om) || oh > 23 || om > 59)
			return KM_ERR_INVALID_REQUEST;
		off = sign * (oh * 3600 + om * 60);
	} else {
		return KM_ERR_INVALID_REQUEST;
	}
	if (*p != '\0' || y < 1970 || y > 9999 || mo < 1 || mo > 12 ||
	    d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60)
		return KM_ERR_INVALID_REQUEST;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	if ((t = (int64_t)timegm(&tm)) == -1)
		return KM_ERR_INVALID_REQUEST;
	*us = (t - off) * 1000000 + frac_us;
	return KM_OK;
}

int
km_duration_parse(const char *s, int64_t *seconds)
{
	char *end;
	long long n;
	int64_t mult;

	*seconds = 0;
	if (!isdigit((unsigned char)s[0]))
		return KM_ERR_INVALID_REQUEST;
	errno = 0;
	n = strtoll(s, &end, 10);
	if (errno != 0 || end == s || end[0] == '\0' || end[1] != '\0')
		return KM_ERR_INVALID_REQUEST;
	switch (end[0]) {
	case 's': mult = 1; break;
	case 'm': mult = 60; break;
	case 'h': mult = 3600; break;
	case 'd': mult = 86400; break;
	default: return KM_ERR_INVALID_REQUEST;
	}
	if (n < 1 || n > (int64_t)100 * 366 * 86400 / mult)
		return KM_ERR_INVALID_REQUEST;
	*seconds = n * mult;
	return KM_OK;
}

void
km_duration_format(int64_t seconds, char *out, size_t outlen)
{
	if (seconds % 86400 == 0)
		snprintf(out, outlen, "%lldd", (long long)(seconds / 86400));
	else if (seconds % 3600 == 0)
		snprintf(out, outlen, "%lldh", (long long)(seconds / 3600));
	else if (seconds % 60 == 0)
		snprintf(out, outlen, "%lldm", (long long)(seconds / 60));
	else
		snprintf(out, outlen, "%llds", (long long)seconds);
}
