/* Unit tests of the shared basics in service/km.c: error strings, the
 * bounded buffer, base64/base64url/hex, RFC 3339 times and durations, and
 * km_grow. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>

#include "km.h"
#include "unit.h"

/* --- errors ------------------------------------------------------------- */

static void
test_strerror(void)
{
	int i, j;

	for (i = 0; i < KM_ERR_COUNT; i++) {
		const char *s = km_strerror((km_err)i);

		CU_ASSERT_PTR_NOT_NULL_FATAL(s);
		CU_ASSERT(s[0] != '\0');
		CU_ASSERT(strcmp(s, "unknown error") != 0);
		for (j = 0; j < i; j++)
			CU_ASSERT(strcmp(s, km_strerror((km_err)j)) != 0);
	}
	CU_ASSERT_STRING_EQUAL(km_strerror(KM_ERR_COUNT), "unknown error");
	CU_ASSERT_STRING_EQUAL(km_strerror((km_err)-1), "unknown error");
}

/* --- bounded buffer ----------------------------------------------------- */

static void
test_buf_append(void)
{
	struct km_buf b = KM_BUF_INIT(1024);
	char *s;

	CU_ASSERT_EQUAL(km_buf_append(&b, "abc", 3), KM_OK);
	CU_ASSERT_EQUAL(km_buf_append_str(&b, "def"), KM_OK);
	CU_ASSERT_EQUAL(km_buf_append_u32be(&b, 0x01020304u), KM_OK);
	CU_ASSERT_EQUAL(km_buf_append_u32be(&b, 0xfffffffeu), KM_OK);
	CU_ASSERT_EQUAL(b.len, 14);
	CU_ASSERT_FALSE(b.failed);
	UT_ASSERT_BYTES(b.data, b.len,
	    "abcdef\x01\x02\x03\x04\xff\xff\xff\xfe", (size_t)14);
	/* Always NUL-terminated past len, so text can be handed over. */
	CU_ASSERT_EQUAL(b.data[b.len], '\0');
	CU_ASSERT(b.cap >= b.len && b.cap <= b.limit);
	km_buf_free(&b);
	CU_ASSERT_PTR_NULL(b.data);
	CU_ASSERT_EQUAL(b.len, 0);

	/* Reusable after free. */
	CU_ASSERT_EQUAL(km_buf_append_str(&b, "hello"), KM_OK);
	s = km_buf_take_str(&b);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_STRING_EQUAL(s, "hello");
	CU_ASSERT_PTR_NULL(b.data);
	CU_ASSERT_EQUAL(b.len, 0);
	free(s);

	/* Nothing appended: an empty string, not NULL. */
	s = km_buf_take_str(&b);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_STRING_EQUAL(s, "");
	free(s);
	km_buf_free(&b);
}

static void
test_buf_growth(void)
{
	struct km_buf b = KM_BUF_INIT(100000);
	unsigned char chunk[333];
	size_t i;

	/* Many appends across several reallocations keep every byte. */
	for (i = 0; i < 300; i++) {
		memset(chunk, (int)(i & 0xff), sizeof(chunk));
		CU_ASSERT_EQUAL_FATAL(km_buf_append(&b, chunk, sizeof(chunk)),
		    KM_OK);
	}
	CU_ASSERT_EQUAL(b.len, 300 * sizeof(chunk));
	CU_ASSERT(b.cap <= b.limit);
	for (i = 0; i < b.len; i++)
		if (b.data[i] != ((i / sizeof(chunk)) & 0xff))
			break;
	CU_ASSERT_EQUAL(i, b.len);
	km_buf_free(&b);
}

static void
test_buf_limit(void)
{
	struct km_buf b = KM_BUF_INIT(10);
	char *s;

	/* Exactly the limit fits. */
	CU_ASSERT_EQUAL(km_buf_append(&b, "0123456789", 10), KM_OK);
	CU_ASSERT_EQUAL(b.len, 10);
	CU_ASSERT_FALSE(b.failed);
	/* One more byte does not, and the buffer is left as it was. */
	CU_ASSERT_EQUAL(km_buf_append(&b, "x", 1), KM_ERR_TOO_LARGE);
	CU_ASSERT_TRUE(b.failed);
	CU_ASSERT_EQUAL(b.len, 10);
	UT_ASSERT_BYTES(b.data, b.len, "0123456789", (size_t)10);
	/* Sticky: even an append that would fit fails now, so callers can
	 * append many times and check once. */
	CU_ASSERT_NOT_EQUAL(km_buf_append(&b, "", 0), KM_OK);
	CU_ASSERT_NOT_EQUAL(km_buf_append_u32be(&b, 1), KM_OK);
	CU_ASSERT_EQUAL(b.len, 10);
	CU_ASSERT_TRUE(b.failed);
	/* A failed buffer hands nothing over. */
	CU_ASSERT_PTR_NULL(km_buf_take_str(&b));
	/* Free clears the flag; the buffer can be used again. */
	km_buf_free(&b);
	CU_ASSERT_FALSE(b.failed);
	CU_ASSERT_EQUAL(km_buf_append_str(&b, "ok"), KM_OK);
	s = km_buf_take_str(&b);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	CU_ASSERT_STRING_EQUAL(s, "ok");
	free(s);
	km_buf_free(&b);

	/* A too-large append into an empty buffer. */
	CU_ASSERT_EQUAL(km_buf_append(&b, "0123456789A", 11), KM_ERR_TOO_LARGE);
	CU_ASSERT_TRUE(b.failed);
	CU_ASSERT_EQUAL(b.len, 0);
	km_buf_free(&b);

	/* Several small appends crossing the limit. */
	CU_ASSERT_EQUAL(km_buf_append_u32be(&b, 1), KM_OK);
	CU_ASSERT_EQUAL(km_buf_append_u32be(&b, 2), KM_OK);
	CU_ASSERT_EQUAL(km_buf_append_u32be(&b, 3), KM_ERR_TOO_LARGE);
	CU_ASSERT_EQUAL(b.len, 8);
	km_buf_free(&b);
}

static void
test_buf_overflow(void)
{
	struct km_buf b = KM_BUF_INIT(SIZE_MAX);
	int r;

	/* len + extra would wrap around: refused before any arithmetic
	 * reaches malloc. */
	CU_ASSERT_EQUAL(km_buf_append(&b, "abcd", 4), KM_OK);
	r = km_buf_reserve(&b, SIZE_MAX - 1);
	CU_ASSERT_NOT_EQUAL(r, KM_OK);
	CU_ASSERT_TRUE(b.failed);
	CU_ASSERT_EQUAL(b.len, 4);
	km_buf_free(&b);

	CU_ASSERT_EQUAL(km_buf_append(&b, "abcd", 4), KM_OK);
	r = km_buf_reserve(&b, SIZE_MAX);
	CU_ASSERT_NOT_EQUAL(r, KM_OK);
	CU_ASSERT_TRUE(b.failed);
	km_buf_free(&b);

}

static int
reserve_to_size_max(void *arg)
{
	struct km_buf b = KM_BUF_INIT(SIZE_MAX);
	int r;

	(void)arg;
	if (km_buf_append(&b, "abcd", 4) != KM_OK)
		return 2;
	/* len + extra == SIZE_MAX does not wrap, but the block it needs
	 * (SIZE_MAX + 1 bytes with the NUL) cannot exist. */
	r = km_buf_reserve(&b, SIZE_MAX - 4);
	if (r == KM_OK)
		return 1;
	if (!b.failed || b.len != 4 || memcmp(b.data, "abcd", 4) != 0)
		return 3;
	km_buf_free(&b);
	return 0;
}

static void
test_buf_overflow_size_max(void)
{
	/* In a child: a wrong answer here may already have corrupted the
	 * heap. */
	int rc = ut_in_child(reserve_to_size_max, NULL);

	if (rc != 0)
		fprintf(stderr, "\nkm_buf_reserve(limit SIZE_MAX, len 4, extra "
		    "SIZE_MAX - 4): child status %d (1: returned KM_OK, "
		    "2/3: buffer damaged, >128: killed by a signal)\n", rc);
	CU_ASSERT_EQUAL(rc, 0);
}

static int
append_nothing_to_fresh(void *arg)
{
	struct km_buf b = KM_BUF_INIT(16);
	int r1, r2, bad;

	(void)arg;
	r1 = km_buf_append(&b, "", 0);
	r2 = km_buf_append_str(&b, "");
	bad = r1 != KM_OK || r2 != KM_OK || b.len != 0 || b.failed;
	km_buf_free(&b);
	return bad ? 1 : 0;
}

static void
test_buf_append_empty(void)
{
	/* Appending zero bytes (an empty context value, an empty string) to
	 * a buffer that has not allocated yet must succeed and leave it
	 * empty. Run in a child: a NULL write here must fail this test, not
	 * end the whole run. */
	int rc = ut_in_child(append_nothing_to_fresh, NULL);

	if (rc != 0)
		fprintf(stderr, "\nkm_buf_append(fresh buffer, \"\", 0): child "
		    "status %d (1: wrong result, >128: killed by a signal)\n",
		    rc);
	CU_ASSERT_EQUAL(rc, 0);
}

/* --- base64 ------------------------------------------------------------- */

static int
b64_dec(const char *s, unsigned char **out, size_t *outlen)
{
	return km_b64_decode(s, strlen(s), out, outlen);
}

static void
test_b64_vectors(void)
{
	/* RFC 4648 section 10. */
	static const struct {
		const char *raw, *enc;
	} v[] = {
		{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
		{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" },
		{ "foobar", "Zm9vYmFy" },
	};
	unsigned char *dec;
	size_t i, declen;
	char *enc;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		CU_ASSERT_EQUAL_FATAL(km_b64_encode((const unsigned char *)v[i].raw,
		    strlen(v[i].raw), &enc), KM_OK);
		CU_ASSERT_STRING_EQUAL(enc, v[i].enc);
		free(enc);
		CU_ASSERT_EQUAL_FATAL(b64_dec(v[i].enc, &dec, &declen), KM_OK);
		UT_ASSERT_BYTES(dec, declen, v[i].raw, strlen(v[i].raw));
		km_secure_free(dec, declen);
	}
	/* All 256 byte values and both non-alnum alphabet characters. */
	CU_ASSERT_EQUAL(km_b64_encode((const unsigned char *)"\xfb\xff\xbf", 3,
	    &enc), KM_OK);
	CU_ASSERT_STRING_EQUAL(enc, "+/+/");
	free(enc);
}

static void
test_b64_strict(void)
{
	static const char *const bad[] = {
		/* wrong length */
		"Z", "Zg", "Zg=", "Zm9vY", "Zm9vYg=", "Zm9vYg===",
		/* whitespace, anywhere */
		"Zm9v Yg==", " Zm9vYg==", "Zm9vYg== ", "Zm9v\nYg==",
		"Zm9vYg==\n", "Zm9v\tYmFy", "Zm9v\r\nYmFy",
		/* '=' where it does not belong */
		"Zm=v", "=m9v", "Z=9v", "Zm9v=mFy", "Zg==Zm9v", "Zg==Zg==",
		"Z===", "====", "Zm9vY===",
		/* outside the alphabet (base64url characters included) */
		"Zm9v-_8=", "Zm9v*A==", "Zm9v.A==", "Zm9v\x80\x80==",
		"Zm9vYg%3D", "Zm9v_mFy", "Zm9v-mFy",
		NULL,
	};
	unsigned char *dec;
	size_t i, declen;

	for (i = 0; bad[i] != NULL; i++) {
		dec = (unsigned char *)"sentinel";
		declen = 99;
		if (b64_dec(bad[i], &dec, &declen) == KM_OK) {
			fprintf(stderr, "\nkm_b64_decode accepted \"%s\"\n", bad[i]);
			CU_FAIL("strict base64 decode accepted a bad input");
			km_secure_free(dec, declen);
			continue;
		}
		CU_ASSERT_PTR_NULL(dec);
		CU_ASSERT_EQUAL(declen, 0);
	}
	/* An embedded NUL is not alphabet either (length given explicitly). */
	CU_ASSERT_NOT_EQUAL(km_b64_decode("Zm\0v", 4, &dec, &declen), KM_OK);
}

static void
test_b64_canonical(void)
{
	/* The pad bits of the last quantum must be zero (RFC 4648 3.5):
	 * "Zh==" and "Zm9=" carry stray bits and decode to the same bytes as
	 * "Zg==" and "Zm8=", so accepting them gives one blob two
	 * spellings. km.c's own comment promises exactly one spelling. */
	static const char *const bad[] = { "Zh==", "Zm9=", "Zn==", "Zm9vYh==",
	    "Zm9vYmF=", NULL };
	unsigned char *dec;
	size_t i, declen;

	for (i = 0; bad[i] != NULL; i++) {
		if (b64_dec(bad[i], &dec, &declen) == KM_OK) {
			fprintf(stderr, "\nkm_b64_decode accepted non-canonical "
			    "\"%s\" (%zu bytes)\n", bad[i], declen);
			CU_FAIL("base64 with non-zero pad bits accepted");
			km_secure_free(dec, declen);
		}
	}
}

static void
test_b64_roundtrip(void)
{
	unsigned char in[300], *dec;
	size_t n, declen;
	char *enc;

	for (n = 0; n <= sizeof(in); n++) {
		ut_random(in, n);
		CU_ASSERT_EQUAL_FATAL(km_b64_encode(in, n, &enc), KM_OK);
		CU_ASSERT_EQUAL(strlen(enc), 4 * ((n + 2) / 3));
		CU_ASSERT_EQUAL_FATAL(km_b64_decode(enc, strlen(enc), &dec,
		    &declen), KM_OK);
		UT_ASSERT_BYTES(dec, declen, in, n);
		km_secure_free(dec, declen);
		free(enc);
	}
}

static void
test_b64url(void)
{
	unsigned char in[300], *dec;
	size_t n, declen;
	char *enc;

	/* RFC 7515 appendix C: no padding, '-' and '_'. */
	CU_ASSERT_EQUAL(km_b64url_encode((const unsigned char *)"\xfb\xff\xbf",
	    3, &enc), KM_OK);
	CU_ASSERT_STRING_EQUAL(enc, "-_-_");
	free(enc);
	CU_ASSERT_EQUAL(km_b64url_encode((const unsigned char *)"f", 1, &enc),
	    KM_OK);
	CU_ASSERT_STRING_EQUAL(enc, "Zg");
	free(enc);
	CU_ASSERT_EQUAL(km_b64url_encode((const unsigned char *)"fo", 2, &enc),
	    KM_OK);
	CU_ASSERT_STRING_EQUAL(enc, "Zm8");
	free(enc);
	CU_ASSERT_EQUAL(km_b64url_encode((const unsigned char *)"", 0, &enc),
	    KM_OK);
	CU_ASSERT_STRING_EQUAL(enc, "");
	free(enc);

	for (n = 0; n <= sizeof(in); n++) {
		ut_random(in, n);
		CU_ASSERT_EQUAL_FATAL(km_b64url_encode(in, n, &enc), KM_OK);
		CU_ASSERT_EQUAL(strlen(enc), (4 * n + 2) / 3);
		CU_ASSERT_PTR_NULL(strpbrk(enc, "+/="));
		CU_ASSERT_EQUAL_FATAL(km_b64url_decode(enc, strlen(enc), &dec,
		    &declen), KM_OK);
		UT_ASSERT_BYTES(dec, declen, in, n);
		km_secure_free(dec, declen);
		free(enc);
	}

	/* Decoding: padding, the standard alphabet's '+' '/', whitespace
	 * and impossible lengths are refused. */
	{
		static const char *const bad[] = { "Zg==", "Zm8=", "+_-_",
		    "-/-_", "Z", "Zm9vY", "Zm 9v", "Zm9v\n", "Zm9*", NULL };
		size_t i;

		for (i = 0; bad[i] != NULL; i++) {
			if (km_b64url_decode(bad[i], strlen(bad[i]), &dec,
			    &declen) == KM_OK) {
				fprintf(stderr, "\nkm_b64url_decode accepted "
				    "\"%s\"\n", bad[i]);
				CU_FAIL("base64url decode accepted a bad input");
				km_secure_free(dec, declen);
				continue;
			}
			CU_ASSERT_PTR_NULL(dec);
		}
	}
	CU_ASSERT_EQUAL(km_b64url_decode("-_-_", 4, &dec, &declen), KM_OK);
	UT_ASSERT_BYTES(dec, declen, "\xfb\xff\xbf", (size_t)3);
	km_secure_free(dec, declen);
}

/* --- hex ---------------------------------------------------------------- */

static void
test_hex(void)
{
	unsigned char in[64], out[64];
	char hex[129];
	size_t n;

	km_hex((const unsigned char *)"\x00\x01\x7f\x80\xab\xff", 6, hex);
	CU_ASSERT_STRING_EQUAL(hex, "00017f80abff");
	km_hex(in, 0, hex);
	CU_ASSERT_STRING_EQUAL(hex, "");

	CU_ASSERT_EQUAL(km_unhex("00017f80abff", out, 6), KM_OK);
	UT_ASSERT_BYTES(out, (size_t)6, "\x00\x01\x7f\x80\xab\xff", (size_t)6);
	CU_ASSERT_EQUAL(km_unhex("", out, 0), KM_OK);

	for (n = 0; n <= sizeof(in); n++) {
		ut_random(in, n);
		km_hex(in, n, hex);
		CU_ASSERT_EQUAL(strlen(hex), 2 * n);
		CU_ASSERT_EQUAL(strspn(hex, "0123456789abcdef"), 2 * n);
		memset(out, 0, sizeof(out));
		CU_ASSERT_EQUAL_FATAL(km_unhex(hex, out, n), KM_OK);
		UT_ASSERT_BYTES(out, n, in, n);
	}

	/* Wrong length (short, long, odd) and non-hex characters. */
	CU_ASSERT_NOT_EQUAL(km_unhex("0001", out, 3), KM_OK);
	CU_ASSERT_NOT_EQUAL(km_unhex("000102", out, 2), KM_OK);
	CU_ASSERT_NOT_EQUAL(km_unhex("00010", out, 2), KM_OK);
	CU_ASSERT_NOT_EQUAL(km_unhex("0g", out, 1), KM_OK);
	CU_ASSERT_NOT_EQUAL(km_unhex("g0", out, 1), KM_OK);
	CU_ASSERT_NOT_EQUAL(km_unhex(" 0", out, 1), KM_OK);
	CU_ASSERT_NOT_EQUAL(km_unhex("0x", out, 1), KM_OK);
	CU_ASSERT_NOT_EQUAL(km_unhex("-1", out, 1), KM_OK);
}

/* --- time --------------------------------------------------------------- */

static int64_t
tparse(const char *s, int *ok)
{
	int64_t us = -1;

	*ok = km_time_parse(s, &us) == KM_OK;
	return us;
}

#define ASSERT_TIME(str, want) do {					\
	int ok_;							\
	int64_t got_ = tparse((str), &ok_);				\
	CU_ASSERT_TRUE(ok_);						\
	CU_ASSERT_EQUAL(got_, (int64_t)(want));				\
	if (!ok_ || got_ != (int64_t)(want))				\
		fprintf(stderr, "\nkm_time_parse(\"%s\"): ok=%d got %lld "	\
		    "want %lld\n", (str), ok_, (long long)got_,		\
		    (long long)(want));					\
} while (0)

static void
test_time_format(void)
{
	char out[40];

	km_time_format(0, 1, out, sizeof(out));
	CU_ASSERT_STRING_EQUAL(out, "1970-01-01T00:00:00.000000Z");
	km_time_format(0, 0, out, sizeof(out));
	CU_ASSERT_STRING_EQUAL(out, "1970-01-01T00:00:00Z");
	km_time_format(1795458016123456LL, 1, out, sizeof(out));
	CU_ASSERT_STRING_EQUAL(out, "2026-11-23T18:20:16.123456Z");
	km_time_format(1795458016123456LL, 0, out, sizeof(out));
	CU_ASSERT_STRING_EQUAL(out, "2026-11-23T18:20:16Z");
	km_time_format(1709164800000001LL, 1, out, sizeof(out));
	CU_ASSERT_STRING_EQUAL(out, "2024-02-29T00:00:00.000001Z");
	km_time_format(253402300799999999LL, 1, out, sizeof(out));
	CU_ASSERT_STRING_EQUAL(out, "9999-12-31T23:59:59.999999Z");
}

static void
test_time_parse(void)
{
	ASSERT_TIME("1970-01-01T00:00:00Z", 0);
	ASSERT_TIME("2026-11-23T18:20:16Z", 1795458016000000LL);
	ASSERT_TIME("2026-11-23T18:20:16.123456Z", 1795458016123456LL);
	ASSERT_TIME("2024-02-29T00:00:00Z", 1709164800000000LL);
	ASSERT_TIME("2000-01-01T00:00:00Z", 946684800000000LL);
	/* RFC 3339 allows lower-case separators. */
	ASSERT_TIME("2026-11-23t18:20:16z", 1795458016000000LL);
	/* Fractions: any number of digits, scaled, truncated past 6. */
	ASSERT_TIME("2026-11-23T18:20:16.5Z", 1795458016500000LL);
	ASSERT_TIME("2026-11-23T18:20:16.05Z", 1795458016050000LL);
	ASSERT_TIME("2026-11-23T18:20:16.000001Z", 1795458016000001LL);
	ASSERT_TIME("2026-11-23T18:20:16.1234567Z", 1795458016123456LL);
	ASSERT_TIME("2026-11-23T18:20:16.999999999Z", 1795458016999999LL);
	/* Offsets: local time minus offset is UTC. */
	ASSERT_TIME("2026-11-23T18:20:16+00:00", 1795458016000000LL);
	ASSERT_TIME("2026-11-23T18:20:16-00:00", 1795458016000000LL);
	ASSERT_TIME("2026-11-23T23:50:16+05:30", 1795458016000000LL);
	ASSERT_TIME("2026-11-23T10:20:16-08:00", 1795458016000000LL);
	ASSERT_TIME("2026-11-24T02:20:16.25+08:00", 1795458016250000LL);
	/* The offset moves the date across midnight and a month end. */
	ASSERT_TIME("2026-12-01T01:00:00+02:00", 1796079600000000LL);
	ASSERT_TIME("2026-11-30T20:00:00-03:00", 1796079600000000LL);
}

static void
test_time_invalid(void)
{
	static const char *const bad[] = {
		"", "2026", "2026-11-23", "2026-11-23T18:20", "2026-11-23 18:20:16Z",
		"2026-11-23T18:20:16", "2026-11-23T18:20:16.Z",
		"2026-11-23T18:20:16ZZ", "2026-11-23T18:20:16Z ",
		" 2026-11-23T18:20:16Z", "2026-11-23T18:20:16+0530",
		"2026-11-23T18:20:16+5:30", "2026-11-23T18:20:16+24:00",
		"2026-11-23T18:20:16+05:60", "2026-11-23T18:20:16+05",
		"26-11-23T18:20:16Z", "2026-1-23T18:20:16Z", "2026/11/23T18:20:16Z",
		"+2026-11-23T18:20:16Z", "2026-11-23T18:20:16.12a3Z",
		"2026-11-23T1a:20:16Z",
		/* out-of-range fields */
		"2026-00-10T00:00:00Z", "2026-13-10T00:00:00Z",
		"2026-11-00T00:00:00Z", "2026-11-32T00:00:00Z",
		"2026-11-23T24:00:00Z", "2026-11-23T23:60:00Z",
		"2026-11-23T23:59:61Z", "1969-12-31T23:59:59Z",
		/* days that do not exist in their month */
		"2026-02-29T00:00:00Z", "2025-02-29T00:00:00Z",
		"2100-02-29T00:00:00Z", "2026-02-30T00:00:00Z",
		"2026-02-31T00:00:00Z", "2026-04-31T00:00:00Z",
		"2026-06-31T00:00:00Z", "2026-09-31T00:00:00Z",
		"2026-11-31T00:00:00Z",
		NULL,
	};
	size_t i;
	int64_t us;

	for (i = 0; bad[i] != NULL; i++) {
		us = 12345;
		if (km_time_parse(bad[i], &us) == KM_OK) {
			char back[40];

			km_time_format(us, 0, back, sizeof(back));
			fprintf(stderr, "\nkm_time_parse accepted \"%s\" as %s\n",
			    bad[i], back);
			CU_FAIL("km_time_parse accepted an invalid time");
		}
	}
	/* The real leap days are fine. */
	CU_ASSERT_EQUAL(km_time_parse("2000-02-29T00:00:00Z", &us), KM_OK);
	CU_ASSERT_EQUAL(km_time_parse("2028-02-29T12:00:00Z", &us), KM_OK);
	CU_ASSERT_EQUAL(km_time_parse("2026-12-31T23:59:59.999999Z", &us),
	    KM_OK);
}

static void
test_time_roundtrip(void)
{
	unsigned char r[8];
	char s[40];
	int64_t t, back;
	uint64_t x;
	int i;

	for (i = 0; i < 2000; i++) {
		ut_random(r, sizeof(r));
		memcpy(&x, r, sizeof(x));
		/* 1970 .. 9999 */
		t = (int64_t)(x % 253402300800000000ULL);
		km_time_format(t, 1, s, sizeof(s));
		CU_ASSERT_EQUAL(strlen(s), 27);
		CU_ASSERT_EQUAL_FATAL(km_time_parse(s, &back), KM_OK);
		CU_ASSERT_EQUAL(back, t);
		km_time_format(t, 0, s, sizeof(s));
		CU_ASSERT_EQUAL(strlen(s), 20);
		CU_ASSERT_EQUAL_FATAL(km_time_parse(s, &back), KM_OK);
		CU_ASSERT_EQUAL(back, t - t % 1000000);
	}
	/* Now, too. */
	t = km_now_us();
	km_time_format(t, 1, s, sizeof(s));
	CU_ASSERT_EQUAL(km_time_parse(s, &back), KM_OK);
	CU_ASSERT_EQUAL(back, t);
}

/* --- durations ---------------------------------------------------------- */

static void
test_duration_parse(void)
{
	static const struct {
		const char *s;
		int64_t secs;
	} ok[] = {
		{ "1s", 1 }, { "45s", 45 }, { "30m", 1800 }, { "12h", 43200 },
		{ "1d", 86400 }, { "90d", 7776000 }, { "365d", 31536000 },
		/* 100 years of 365 days, in every unit */
		{ "36500d", 3153600000LL }, { "876000h", 3153600000LL },
		{ "52560000m", 3153600000LL }, { "3153600000s", 3153600000LL },
	};
	static const char *const bad[] = {
		"", "d", "1", "0s", "0d", "00d", "-1d", "+1d", " 1d", "1d ",
		"1 d", "1.5h", "1dd", "1w", "1y", "1ms", "d1", "0x10s",
		/* more than 100 years, in every unit */
		"36601d", "878401h", "52704001m", "3162240001s",
		"99999999999999999999s", "9223372036854775807s",
		"9223372036854775807d",
		NULL,
	};
	int64_t secs;
	size_t i;

	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		secs = -1;
		CU_ASSERT_EQUAL(km_duration_parse(ok[i].s, &secs), KM_OK);
		CU_ASSERT_EQUAL(secs, ok[i].secs);
		if (secs != ok[i].secs)
			fprintf(stderr, "\nkm_duration_parse(\"%s\") = %lld\n",
			    ok[i].s, (long long)secs);
	}
	for (i = 0; bad[i] != NULL; i++) {
		if (km_duration_parse(bad[i], &secs) == KM_OK) {
			fprintf(stderr, "\nkm_duration_parse accepted \"%s\" as "
			    "%lld s\n", bad[i], (long long)secs);
			CU_FAIL("km_duration_parse accepted a bad duration");
		}
	}
}

static void
test_duration_format(void)
{
	static const struct {
		int64_t secs;
		const char *s;
	} v[] = {
		{ 1, "1s" }, { 59, "59s" }, { 60, "1m" }, { 61, "61s" },
		{ 5400, "90m" }, { 3600, "1h" }, { 86400, "1d" },
		{ 90000, "25h" }, { 7776000, "90d" }, { 3153600000LL, "36500d" },
		{ 86401, "86401s" },
	};
	char out[32];
	int64_t back;
	size_t i;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		km_duration_format(v[i].secs, out, sizeof(out));
		CU_ASSERT_STRING_EQUAL(out, v[i].s);
		/* And back. */
		CU_ASSERT_EQUAL(km_duration_parse(out, &back), KM_OK);
		CU_ASSERT_EQUAL(back, v[i].secs);
	}
	/* A short output buffer is truncated, not overrun. */
	memset(out, 'X', sizeof(out));
	km_duration_format(7776000, out, 3);
	CU_ASSERT_STRING_EQUAL(out, "90");
	CU_ASSERT_EQUAL(out[3], 'X');
}

/* --- growing arrays ----------------------------------------------------- */

static void
test_grow(void)
{
	struct { int64_t a; char b[12]; } *arr = NULL;
	void *before;
	size_t cap = 0, i, j;

	/* Room for each new row, the new rows zeroed, the old ones kept. */
	for (i = 0; i < 100; i++) {
		CU_ASSERT_EQUAL_FATAL(km_grow((void **)&arr, &cap, i + 1,
		    sizeof(*arr)), KM_OK);
		CU_ASSERT_FATAL(cap >= i + 1);
		for (j = i; j < cap; j++)
			CU_ASSERT(arr[j].a == 0 && arr[j].b[11] == 0);
		arr[i].a = (int64_t)i + 1;
		memset(arr[i].b, 'x', sizeof(arr[i].b));
	}
	for (i = 0; i < 100; i++)
		CU_ASSERT(arr[i].a == (int64_t)i + 1 && arr[i].b[11] == 'x');
	/* Enough room already: nothing moves. */
	before = arr;
	CU_ASSERT_EQUAL(km_grow((void **)&arr, &cap, cap, sizeof(*arr)), KM_OK);
	CU_ASSERT_PTR_EQUAL(arr, before);
	/* A size that would overflow fails and leaves the array as it was. */
	i = cap;
	CU_ASSERT_EQUAL(km_grow((void **)&arr, &cap, SIZE_MAX / 2, sizeof(*arr)),
	    KM_ERR_NOMEM);
	CU_ASSERT_EQUAL(cap, i);
	CU_ASSERT_PTR_EQUAL(arr, before);
	free(arr);
}

/* --- text for a terminal ------------------------------------------------ */

static void
test_terminal_safe(void)
{
	char out[16];

	CU_ASSERT_STRING_EQUAL(km_terminal_safe("key not found", out,
	    sizeof(out)), "key not found");
	CU_ASSERT_STRING_EQUAL(km_terminal_safe("a\x1b[2Jb\r\n\x7f", out,
	    sizeof(out)), "a?[2Jb???");
	/* UTF-8 passes; only C0 and DEL are replaced. */
	CU_ASSERT_STRING_EQUAL(km_terminal_safe("caf\xc3\xa9", out, sizeof(out)),
	    "caf\xc3\xa9");
	CU_ASSERT_STRING_EQUAL(km_terminal_safe("0123456789abcdefXYZ", out,
	    sizeof(out)), "0123456789abcde");
	CU_ASSERT_STRING_EQUAL(km_terminal_safe("abc", out, 1), "");
}

int
main(void)
{
	static const struct ut_test tests[] = {
		{ "strerror covers every km_err", test_strerror },
		{ "buf append/take", test_buf_append },
		{ "buf growth keeps bytes", test_buf_growth },
		{ "buf limit and sticky failed flag", test_buf_limit },
		{ "buf size overflow", test_buf_overflow },
		{ "buf reserve up to SIZE_MAX", test_buf_overflow_size_max },
		{ "buf zero-byte append to fresh buffer", test_buf_append_empty },
		{ "base64 RFC 4648 vectors", test_b64_vectors },
		{ "base64 strict decode", test_b64_strict },
		{ "base64 canonical pad bits", test_b64_canonical },
		{ "base64 round trip 0..300", test_b64_roundtrip },
		{ "base64url", test_b64url },
		{ "hex/unhex", test_hex },
		{ "time format", test_time_format },
		{ "time parse", test_time_parse },
		{ "time parse rejects", test_time_invalid },
		{ "time round trip", test_time_roundtrip },
		{ "duration parse", test_duration_parse },
		{ "duration format", test_duration_format },
		{ "grow keeps rows, zeroes new ones, refuses overflow", test_grow },
		{ "terminal-safe text", test_terminal_safe },
		{ NULL, NULL },
	};

	return ut_main("km", NULL, NULL, tests);
}
