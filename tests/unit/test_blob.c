/* Unit tests of service/blob.c: context limits and order, the exact AAD
 * bytes, and the "kms:v<N>:<base64>" ciphertext text format. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>

#include "blob.h"
#include "km.h"
#include "unit.h"

static int
add(struct blob_context *c, const char *name, const char *value)
{
	return blob_context_add(c, name, strlen(name), value, strlen(value));
}

/* --- context ------------------------------------------------------------ */

static void
test_context_limits(void)
{
	struct blob_context c;
	char names[BLOB_MAX_CONTEXT_PAIRS + 1][8];
	char big[BLOB_MAX_CONTEXT_BYTES + 2];
	size_t i;

	memset(&c, 0, sizeof(c));
	for (i = 0; i < BLOB_MAX_CONTEXT_PAIRS; i++) {
		snprintf(names[i], sizeof(names[i]), "n%zu", i);
		CU_ASSERT_EQUAL(add(&c, names[i], "v"), KM_OK);
	}
	CU_ASSERT_EQUAL(c.n, 16);
	snprintf(names[16], sizeof(names[16]), "n16");
	CU_ASSERT_EQUAL(add(&c, names[16], "v"), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(c.n, 16);

	/* Names 1..256 bytes, values 0..256 bytes. */
	memset(big, 'x', sizeof(big));
	memset(&c, 0, sizeof(c));
	CU_ASSERT_EQUAL(blob_context_add(&c, big, 256, "v", 1), KM_OK);
	CU_ASSERT_EQUAL(blob_context_add(&c, big, 257, "v", 1),
	    KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(blob_context_add(&c, "a", 1, big, 256), KM_OK);
	CU_ASSERT_EQUAL(blob_context_add(&c, "b", 1, big, 257),
	    KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(blob_context_add(&c, "c", 1, "", 0), KM_OK);
	CU_ASSERT_EQUAL(blob_context_add(&c, "", 0, "v", 1),
	    KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(c.n, 3);
	CU_ASSERT_EQUAL(c.pairs[0].name_len, 256);
	CU_ASSERT_EQUAL(c.pairs[1].value_len, 256);
	CU_ASSERT_EQUAL(c.pairs[2].value_len, 0);

	/* Repeated names are refused; a name that only shares a prefix is
	 * not a repeat. Lengths count, not NULs. */
	memset(&c, 0, sizeof(c));
	CU_ASSERT_EQUAL(add(&c, "matter", "1"), KM_OK);
	CU_ASSERT_EQUAL(add(&c, "matter", "2"), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(add(&c, "matte", "3"), KM_OK);
	CU_ASSERT_EQUAL(add(&c, "matters", "4"), KM_OK);
	CU_ASSERT_EQUAL(add(&c, "Matter", "5"), KM_OK);
	CU_ASSERT_EQUAL(blob_context_add(&c, "matter\0x", 8, "6", 1), KM_OK);
	CU_ASSERT_EQUAL(blob_context_add(&c, "matter\0x", 8, "7", 1),
	    KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(c.n, 5);
	CU_ASSERT_EQUAL(c.pairs[0].value[0], '1');
	/* Names are byte strings: bytes after a NUL still count. */
	memset(&c, 0, sizeof(c));
	CU_ASSERT_EQUAL(blob_context_add(&c, "n\0b", 3, "1", 1), KM_OK);
	CU_ASSERT_EQUAL(blob_context_add(&c, "n\0a", 3, "2", 1), KM_OK);
	CU_ASSERT_EQUAL_FATAL(c.n, 2);
	blob_context_sort(&c);
	CU_ASSERT_EQUAL(memcmp(c.pairs[0].name, "n\0a", 3), 0);
	CU_ASSERT_EQUAL(memcmp(c.pairs[1].name, "n\0b", 3), 0);
}

static void
test_context_sort(void)
{
	/* Bytewise (unsigned), a proper prefix first. */
	static const char *const in[] = { "b", "\xff", "ab", "a", "A", "aa",
	    "a\x80", "B", "_", "0", "abc" };
	static const char *const want[] = { "0", "A", "B", "_", "a", "aa",
	    "ab", "abc", "a\x80", "b", "\xff" };
	struct blob_context c;
	char vals[sizeof(in) / sizeof(in[0])][4];
	size_t i, j;

	memset(&c, 0, sizeof(c));
	for (i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		snprintf(vals[i], sizeof(vals[i]), "%zu", i);
		CU_ASSERT_EQUAL_FATAL(add(&c, in[i], vals[i]), KM_OK);
	}
	blob_context_sort(&c);
	CU_ASSERT_EQUAL_FATAL(c.n, sizeof(want) / sizeof(want[0]));
	for (i = 0; i < c.n; i++) {
		CU_ASSERT_EQUAL(c.pairs[i].name_len, strlen(want[i]));
		CU_ASSERT(memcmp(c.pairs[i].name, want[i], strlen(want[i])) == 0);
		/* Values travel with their names. */
		for (j = 0; j < sizeof(in) / sizeof(in[0]); j++)
			if (strcmp(in[j], want[i]) == 0)
				break;
		CU_ASSERT_STRING_EQUAL(c.pairs[i].value, vals[j]);
	}
	/* Sorting sorted input is a no-op; a second sort changes nothing. */
	blob_context_sort(&c);
	for (i = 0; i < c.n; i++)
		CU_ASSERT(c.pairs[i].name_len == strlen(want[i]) &&
		    memcmp(c.pairs[i].name, want[i], c.pairs[i].name_len) == 0);

	/* Order of insertion does not matter for the result. */
	{
		struct blob_context a, b;

		memset(&a, 0, sizeof(a));
		memset(&b, 0, sizeof(b));
		CU_ASSERT_EQUAL(add(&a, "x", "1"), KM_OK);
		CU_ASSERT_EQUAL(add(&a, "y", "2"), KM_OK);
		CU_ASSERT_EQUAL(add(&a, "xy", "3"), KM_OK);
		CU_ASSERT_EQUAL(add(&b, "xy", "3"), KM_OK);
		CU_ASSERT_EQUAL(add(&b, "y", "2"), KM_OK);
		CU_ASSERT_EQUAL(add(&b, "x", "1"), KM_OK);
		blob_context_sort(&a);
		blob_context_sort(&b);
		for (i = 0; i < 3; i++)
			CU_ASSERT_STRING_EQUAL(a.pairs[i].value, b.pairs[i].value);
		CU_ASSERT_STRING_EQUAL(a.pairs[0].name, "x");
		CU_ASSERT_STRING_EQUAL(a.pairs[1].name, "xy");
		CU_ASSERT_STRING_EQUAL(a.pairs[2].name, "y");
	}
}

static void
test_context_has(void)
{
	char *need[] = { "tenant", "matter" };
	char *need_more[] = { "tenant", "matte", "matter" };
	struct blob_context c;
	const char *missing = "x";

	memset(&c, 0, sizeof(c));
	CU_ASSERT_EQUAL(add(&c, "matter", "m-1"), KM_OK);
	CU_ASSERT_EQUAL(add(&c, "tenant", "t-1"), KM_OK);
	CU_ASSERT_EQUAL(blob_context_has(&c, need, 2, &missing), 1);
	CU_ASSERT_PTR_NULL(missing);
	CU_ASSERT_EQUAL(blob_context_has(&c, need, 0, &missing), 1);
	/* A prefix of a present name is not present. */
	CU_ASSERT_EQUAL(blob_context_has(&c, need_more, 3, &missing), 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(missing);
	CU_ASSERT_STRING_EQUAL(missing, "matte");
	memset(&c, 0, sizeof(c));
	CU_ASSERT_EQUAL(blob_context_has(&c, need, 2, &missing), 0);
	CU_ASSERT_STRING_EQUAL(missing, "tenant");
}

/* --- AAD ---------------------------------------------------------------- */

static int
aad_of(const char *key, uint32_t version, const struct blob_context *c,
    unsigned char *out, size_t outlen, size_t *len)
{
	struct km_buf b = KM_BUF_INIT(65536);
	int r = blob_aad(key, version, c, &b);

	*len = 0;
	if (r == KM_OK) {
		if (b.len > outlen) {
			r = KM_ERR_TOO_LARGE;
		} else {
			if (b.len > 0)
				memcpy(out, b.data, b.len);
			*len = b.len;
		}
	}
	km_buf_free(&b);
	return r;
}

static void
test_aad_exact(void)
{
	/* The documented format, built by hand:
	 *   "kms-aad/v1" || u32be(len name) || name || u32be(version)
	 *   || u32be(n) || { u32be(len n) || n || u32be(len v) || v } sorted */
	static const unsigned char want[] =
	    "kms-aad/v1"
	    "\x00\x00\x00\x0b" "matter-keys"
	    "\x00\x00\x01\x02"
	    "\x00\x00\x00\x02"
	    "\x00\x00\x00\x06" "matter" "\x00\x00\x00\x04" "m-42"
	    "\x00\x00\x00\x06" "tenant" "\x00\x00\x00\x05" "acme\xc3";
	struct blob_context c;
	unsigned char got[512];
	size_t len;

	memset(&c, 0, sizeof(c));
	/* Added out of order: the AAD uses the sorted context. */
	CU_ASSERT_EQUAL(add(&c, "tenant", "acme\xc3"), KM_OK);
	CU_ASSERT_EQUAL(add(&c, "matter", "m-42"), KM_OK);
	blob_context_sort(&c);
	CU_ASSERT_EQUAL_FATAL(aad_of("matter-keys", 258, &c, got, sizeof(got),
	    &len), KM_OK);
	UT_ASSERT_BYTES(got, len, want, sizeof(want) - 1);

	/* Empty context: just the header, n = 0. */
	{
		static const unsigned char want0[] = "kms-aad/v1"
		    "\x00\x00\x00\x01" "k" "\x00\x00\x00\x01" "\x00\x00\x00\x00";
		struct blob_context e;

		memset(&e, 0, sizeof(e));
		CU_ASSERT_EQUAL_FATAL(aad_of("k", 1, &e, got, sizeof(got), &len),
		    KM_OK);
		UT_ASSERT_BYTES(got, len, want0, sizeof(want0) - 1);
	}
	/* An empty value is encoded as a zero length. */
	{
		static const unsigned char want1[] = "kms-aad/v1"
		    "\x00\x00\x00\x01" "k" "\xff\xff\xff\xff" "\x00\x00\x00\x01"
		    "\x00\x00\x00\x01" "e" "\x00\x00\x00\x00";
		struct blob_context e;

		memset(&e, 0, sizeof(e));
		CU_ASSERT_EQUAL(add(&e, "e", ""), KM_OK);
		CU_ASSERT_EQUAL_FATAL(aad_of("k", UINT32_MAX, &e, got,
		    sizeof(got), &len), KM_OK);
		UT_ASSERT_BYTES(got, len, want1, sizeof(want1) - 1);
	}
}

static int
aad_equal(const char *k1, uint32_t v1, const struct blob_context *c1,
    const char *k2, uint32_t v2, const struct blob_context *c2)
{
	unsigned char a[2048], b[2048];
	size_t alen, blen;

	CU_ASSERT_EQUAL_FATAL(aad_of(k1, v1, c1, a, sizeof(a), &alen), KM_OK);
	CU_ASSERT_EQUAL_FATAL(aad_of(k2, v2, c2, b, sizeof(b), &blen), KM_OK);
	return alen == blen && memcmp(a, b, alen) == 0;
}

static void
test_aad_binds(void)
{
	char name[2][16] = { "matter", "tenant" };
	char value[2][16] = { "m-42", "acme" };
	struct blob_context base, c;
	size_t p, i, bit;

	/* Contexts borrow their bytes: the base gets its own copies, the
	 * variants below are built on the arrays that get mutated. */
	memset(&base, 0, sizeof(base));
	CU_ASSERT_EQUAL(add(&base, "matter", "m-42"), KM_OK);
	CU_ASSERT_EQUAL(add(&base, "tenant", "acme"), KM_OK);
	blob_context_sort(&base);
	/* The control: built from the arrays, unmutated, it is equal. */
	memset(&c, 0, sizeof(c));
	CU_ASSERT_EQUAL(add(&c, name[1], value[1]), KM_OK);
	CU_ASSERT_EQUAL(add(&c, name[0], value[0]), KM_OK);
	blob_context_sort(&c);
	CU_ASSERT_TRUE(aad_equal("k", 3, &base, "k", 3, &c));

	CU_ASSERT_TRUE(aad_equal("k", 3, &base, "k", 3, &base));
	/* Key name, version. */
	CU_ASSERT_FALSE(aad_equal("k", 3, &base, "K", 3, &base));
	CU_ASSERT_FALSE(aad_equal("k", 3, &base, "k2", 3, &base));
	CU_ASSERT_FALSE(aad_equal("k", 3, &base, "k", 4, &base));
	CU_ASSERT_FALSE(aad_equal("k", 3, &base, "k", 3u + (1u << 24), &base));

	/* Every single bit of every context name and value. */
	for (p = 0; p < 2; p++) {
		for (i = 0; i < strlen(name[p]); i++) {
			for (bit = 0; bit < 8; bit++) {
				char saved = name[p][i];

				name[p][i] = (char)(saved ^ (1 << bit));
				memset(&c, 0, sizeof(c));
				CU_ASSERT_EQUAL(add(&c, name[0], value[0]), KM_OK);
				CU_ASSERT_EQUAL(add(&c, name[1], value[1]), KM_OK);
				blob_context_sort(&c);
				CU_ASSERT_FALSE(aad_equal("k", 3, &base, "k", 3, &c));
				name[p][i] = saved;
			}
		}
		for (i = 0; i < strlen(value[p]); i++) {
			for (bit = 0; bit < 8; bit++) {
				char saved = value[p][i];

				value[p][i] = (char)(saved ^ (1 << bit));
				memset(&c, 0, sizeof(c));
				CU_ASSERT_EQUAL(add(&c, name[0], value[0]), KM_OK);
				CU_ASSERT_EQUAL(add(&c, name[1], value[1]), KM_OK);
				blob_context_sort(&c);
				CU_ASSERT_FALSE(aad_equal("k", 3, &base, "k", 3, &c));
				value[p][i] = saved;
			}
		}
	}

	/* Dropping or adding a pair, swapping values between names. */
	memset(&c, 0, sizeof(c));
	CU_ASSERT_EQUAL(add(&c, "matter", "m-42"), KM_OK);
	CU_ASSERT_FALSE(aad_equal("k", 3, &base, "k", 3, &c));
	CU_ASSERT_EQUAL(add(&c, "tenant", "acme"), KM_OK);
	CU_ASSERT_EQUAL(add(&c, "x", ""), KM_OK);
	blob_context_sort(&c);
	CU_ASSERT_FALSE(aad_equal("k", 3, &base, "k", 3, &c));
	memset(&c, 0, sizeof(c));
	CU_ASSERT_EQUAL(add(&c, "matter", "acme"), KM_OK);
	CU_ASSERT_EQUAL(add(&c, "tenant", "m-42"), KM_OK);
	CU_ASSERT_FALSE(aad_equal("k", 3, &base, "k", 3, &c));

	/* Length prefixes: moving bytes across a boundary changes the AAD. */
	{
		struct blob_context x, y;

		memset(&x, 0, sizeof(x));
		memset(&y, 0, sizeof(y));
		CU_ASSERT_EQUAL(add(&x, "ab", "c"), KM_OK);
		CU_ASSERT_EQUAL(add(&y, "a", "bc"), KM_OK);
		CU_ASSERT_FALSE(aad_equal("k", 1, &x, "k", 1, &y));
		/* Key name vs context. */
		memset(&x, 0, sizeof(x));
		CU_ASSERT_FALSE(aad_equal("ka", 1, &x, "k", 1, &x));
	}
}

/* --- blob text ---------------------------------------------------------- */

static void
test_blob_roundtrip(void)
{
	static const uint32_t versions[] = { 1, 2, 9, 10, 42, 65536,
	    UINT32_MAX - 1, UINT32_MAX };
	static const size_t lens[] = { 1 + BLOB_TAG_LEN, 2 + BLOB_TAG_LEN,
	    32 + BLOB_TAG_LEN, 1000, BLOB_MAX_PLAINTEXT + BLOB_TAG_LEN };
	unsigned char nonce[BLOB_NONCE_LEN], *sealed, *raw;
	char *s, head[32];
	size_t i, j, raw_len;
	uint32_t v;

	sealed = malloc(BLOB_MAX_PLAINTEXT + BLOB_TAG_LEN + 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(sealed);
	for (i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		for (j = 0; j < sizeof(lens) / sizeof(lens[0]); j++) {
			ut_random(nonce, sizeof(nonce));
			ut_random(sealed, lens[j]);
			CU_ASSERT_EQUAL_FATAL(blob_format(versions[i], nonce,
			    sealed, lens[j], &s), KM_OK);
			snprintf(head, sizeof(head), "kms:v%u:", versions[i]);
			CU_ASSERT_EQUAL(strncmp(s, head, strlen(head)), 0);
			CU_ASSERT_EQUAL(strlen(s), strlen(head) +
			    4 * ((BLOB_NONCE_LEN + lens[j] + 2) / 3));
			CU_ASSERT_EQUAL_FATAL(blob_parse(s, strlen(s), &v, &raw,
			    &raw_len), KM_OK);
			CU_ASSERT_EQUAL(v, versions[i]);
			CU_ASSERT_EQUAL_FATAL(raw_len, BLOB_NONCE_LEN + lens[j]);
			UT_ASSERT_BYTES(raw, (size_t)BLOB_NONCE_LEN, nonce,
			    (size_t)BLOB_NONCE_LEN);
			UT_ASSERT_BYTES(raw + BLOB_NONCE_LEN, lens[j], sealed,
			    lens[j]);
			km_secure_free(raw, raw_len);
			free(s);
		}
	}
	/* A fixed vector: nonce 00..0b, sealed 17 x 0xff. */
	for (i = 0; i < BLOB_NONCE_LEN; i++)
		nonce[i] = (unsigned char)i;
	memset(sealed, 0xff, 17);
	CU_ASSERT_EQUAL_FATAL(blob_format(7, nonce, sealed, 17, &s), KM_OK);
	CU_ASSERT_STRING_EQUAL(s, "kms:v7:AAECAwQFBgcICQoL//////////////////////8=");
	free(s);
	/* More than the largest plaintext plus tag does not format. */
	s = (char *)"sentinel";
	CU_ASSERT_NOT_EQUAL(blob_format(1, nonce, sealed, BLOB_MAX_PLAINTEXT +
	    BLOB_TAG_LEN + 1, &s), KM_OK);
	CU_ASSERT_PTR_NULL(s);
	free(sealed);
}

/* base64 of `n` bytes of 0x41, into a static buffer. */
static const char *
b64_of(size_t n)
{
	static char out[8192];
	unsigned char *raw = malloc(n + 1);
	char *enc = NULL;

	CU_ASSERT_PTR_NOT_NULL_FATAL(raw);
	memset(raw, 0x41, n);
	CU_ASSERT_EQUAL_FATAL(km_b64_encode(raw, n, &enc), KM_OK);
	CU_ASSERT_FATAL(strlen(enc) < sizeof(out));
	snprintf(out, sizeof(out), "%s", enc);
	free(enc);
	free(raw);
	return out;
}

static int
parse_str(const char *s, uint32_t *v, size_t *raw_len)
{
	unsigned char *raw = (unsigned char *)"sentinel";
	int r;

	*raw_len = 99;
	r = blob_parse(s, strlen(s), v, &raw, raw_len);
	if (r == KM_OK)
		km_secure_free(raw, *raw_len);
	else
		CU_ASSERT(raw == NULL && *raw_len == 0 && *v == 0);
	return r;
}

static void
test_blob_parse_rejects(void)
{
	const size_t min = BLOB_NONCE_LEN + 1 + BLOB_TAG_LEN;
	const size_t max = BLOB_NONCE_LEN + BLOB_MAX_PLAINTEXT + BLOB_TAG_LEN;
	char ok29[64], s[8300];
	size_t raw_len;
	uint32_t v;
	static const char *const bad_heads[] = {
		"", "kms:", "KMS:v1:", "kms:V1:", "kms1:", "kms:1:", "km:v1:",
		"xkms:v1:", " kms:v1:", "kms:v:", "kms:v0:", "kms:v00:",
		"kms:v01:", "kms:v007:", "kms:v-1:", "kms:v+1:", "kms:v 1:",
		"kms:v1 :", "kms:v1x:", "kms:v4294967296:", "kms:v4294967300:",
		"kms:v9999999999:", "kms:v10000000000:", "kms:v99999999999:",
		"kms:v184467440737095516160:", "kms:v1;", "kms:v1",
		"kms:v1::", "kms:v1:kms:v1:", "kms:v0x1:",
		NULL,
	};
	size_t i;

	snprintf(ok29, sizeof(ok29), "%s", b64_of(min));

	/* The baseline is accepted, so each rejection below is about the
	 * one thing changed. */
	snprintf(s, sizeof(s), "kms:v1:%s", ok29);
	CU_ASSERT_EQUAL(parse_str(s, &v, &raw_len), KM_OK);
	CU_ASSERT_EQUAL(v, 1);
	CU_ASSERT_EQUAL(raw_len, min);
	snprintf(s, sizeof(s), "kms:v4294967295:%s", ok29);
	CU_ASSERT_EQUAL(parse_str(s, &v, &raw_len), KM_OK);
	CU_ASSERT_EQUAL(v, UINT32_MAX);
	snprintf(s, sizeof(s), "kms:v1000000000:%s", ok29);
	CU_ASSERT_EQUAL(parse_str(s, &v, &raw_len), KM_OK);
	CU_ASSERT_EQUAL(v, 1000000000u);

	for (i = 0; bad_heads[i] != NULL; i++) {
		snprintf(s, sizeof(s), "%s%s", bad_heads[i], ok29);
		if (parse_str(s, &v, &raw_len) != KM_ERR_INVALID_CIPHERTEXT) {
			fprintf(stderr, "\nblob_parse did not refuse \"%s\"\n", s);
			CU_FAIL("blob_parse accepted a malformed prefix");
		}
	}
	/* Missing colon: the base64 directly after the version. */
	snprintf(s, sizeof(s), "kms:v1%s", ok29);
	CU_ASSERT_EQUAL(parse_str(s, &v, &raw_len), KM_ERR_INVALID_CIPHERTEXT);
	/* Nothing after the colon. */
	CU_ASSERT_EQUAL(parse_str("kms:v1:", &v, &raw_len),
	    KM_ERR_INVALID_CIPHERTEXT);

	/* Bad base64 in the payload. */
	{
		static const char *const bad_b64[] = { "!", " ", "\n", "=", "-",
		    "_", "." };

		for (i = 0; i < sizeof(bad_b64) / sizeof(bad_b64[0]); i++) {
			char mod[64];

			snprintf(mod, sizeof(mod), "%s", ok29);
			mod[5] = bad_b64[i][0];
			snprintf(s, sizeof(s), "kms:v1:%s", mod);
			CU_ASSERT_EQUAL(parse_str(s, &v, &raw_len),
			    KM_ERR_INVALID_CIPHERTEXT);
		}
		snprintf(s, sizeof(s), "kms:v1:%s ", ok29);
		CU_ASSERT_EQUAL(parse_str(s, &v, &raw_len),
		    KM_ERR_INVALID_CIPHERTEXT);
		snprintf(s, sizeof(s), "kms:v1:%s=", ok29);
		CU_ASSERT_EQUAL(parse_str(s, &v, &raw_len),
		    KM_ERR_INVALID_CIPHERTEXT);
		snprintf(s, sizeof(s), "kms:v1:%.*s", (int)strlen(ok29) - 1, ok29);
		CU_ASSERT_EQUAL(parse_str(s, &v, &raw_len),
		    KM_ERR_INVALID_CIPHERTEXT);
	}

	/* Sizes: nonce + 1 + tag .. nonce + 4096 + tag. */
	snprintf(s, sizeof(s), "kms:v1:%s", b64_of(min - 1));
	CU_ASSERT_EQUAL(parse_str(s, &v, &raw_len), KM_ERR_INVALID_CIPHERTEXT);
	snprintf(s, sizeof(s), "kms:v1:%s", b64_of(BLOB_NONCE_LEN + BLOB_TAG_LEN));
	CU_ASSERT_EQUAL(parse_str(s, &v, &raw_len), KM_ERR_INVALID_CIPHERTEXT);
	snprintf(s, sizeof(s), "kms:v1:%s", b64_of(BLOB_NONCE_LEN));
	CU_ASSERT_EQUAL(parse_str(s, &v, &raw_len), KM_ERR_INVALID_CIPHERTEXT);
	snprintf(s, sizeof(s), "kms:v1:%s", b64_of(1));
	CU_ASSERT_EQUAL(parse_str(s, &v, &raw_len), KM_ERR_INVALID_CIPHERTEXT);
	snprintf(s, sizeof(s), "kms:v1:%s", b64_of(max));
	CU_ASSERT_EQUAL(parse_str(s, &v, &raw_len), KM_OK);
	CU_ASSERT_EQUAL(raw_len, max);
	snprintf(s, sizeof(s), "kms:v1:%s", b64_of(max + 1));
	CU_ASSERT_EQUAL(parse_str(s, &v, &raw_len), KM_ERR_INVALID_CIPHERTEXT);
	snprintf(s, sizeof(s), "kms:v1:%s", b64_of(max + 3));
	CU_ASSERT_EQUAL(parse_str(s, &v, &raw_len), KM_ERR_INVALID_CIPHERTEXT);
}

static void
test_blob_parse_len(void)
{
	char s[128];
	unsigned char *raw;
	size_t raw_len, n;
	uint32_t v;

	/* Only `len` bytes are read: a valid blob followed by junk parses
	 * when len stops at the blob, and a cut-off blob does not. */
	snprintf(s, sizeof(s), "kms:v12:%s", b64_of(40));
	n = strlen(s);
	snprintf(s + n, sizeof(s) - n, "#!#!");
	CU_ASSERT_EQUAL(blob_parse(s, n, &v, &raw, &raw_len), KM_OK);
	CU_ASSERT_EQUAL(v, 12);
	CU_ASSERT_EQUAL(raw_len, 40);
	km_secure_free(raw, raw_len);
	CU_ASSERT_EQUAL(blob_parse(s, n + 4, &v, &raw, &raw_len),
	    KM_ERR_INVALID_CIPHERTEXT);
	CU_ASSERT_EQUAL(blob_parse(s, 7, &v, &raw, &raw_len),
	    KM_ERR_INVALID_CIPHERTEXT);
	CU_ASSERT_EQUAL(blob_parse(s, 8, &v, &raw, &raw_len),
	    KM_ERR_INVALID_CIPHERTEXT);
	CU_ASSERT_EQUAL(blob_parse(s, 0, &v, &raw, &raw_len),
	    KM_ERR_INVALID_CIPHERTEXT);
	/* The version digits must be followed by ':' within len. */
	CU_ASSERT_EQUAL(blob_parse("kms:v12", 6, &v, &raw, &raw_len),
	    KM_ERR_INVALID_CIPHERTEXT);
}

/* The largest context a request may carry, under the longest key name,
 * fits the AAD bound the handlers allocate. */
static void
test_aad_bound(void)
{
	static char names[BLOB_MAX_CONTEXT_PAIRS][BLOB_MAX_CONTEXT_BYTES];
	static char value[BLOB_MAX_CONTEXT_BYTES];
	struct km_buf aad = KM_BUF_INIT(BLOB_MAX_AAD);
	struct blob_context c;
	char key[129];
	size_t i;

	memset(&c, 0, sizeof(c));
	memset(key, 'k', 128);
	key[128] = '\0';
	memset(value, 'v', sizeof(value));
	for (i = 0; i < BLOB_MAX_CONTEXT_PAIRS; i++) {
		memset(names[i], 'a' + (int)i, sizeof(names[i]));
		CU_ASSERT_EQUAL(blob_context_add(&c, names[i], sizeof(names[i]),
		    value, sizeof(value)), KM_OK);
	}
	blob_context_sort(&c);
	CU_ASSERT_EQUAL(blob_aad(key, 4294967295u, &c, &aad), KM_OK);
	CU_ASSERT_EQUAL(aad.len, (size_t)BLOB_MAX_AAD);
	km_buf_free(&aad);
}

int
main(void)
{
	static const struct ut_test tests[] = {
		{ "the largest AAD fits its bound", test_aad_bound },
		{ "context limits", test_context_limits },
		{ "context sort order", test_context_sort },
		{ "context has required names", test_context_has },
		{ "AAD bytes match the documented format", test_aad_exact },
		{ "AAD binds name, version and context", test_aad_binds },
		{ "blob format/parse round trip", test_blob_roundtrip },
		{ "blob parse rejects", test_blob_parse_rejects },
		{ "blob parse honours len", test_blob_parse_len },
		{ NULL, NULL },
	};

	return ut_main("blob", NULL, NULL, tests);
}
