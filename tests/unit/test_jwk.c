/* Unit tests of service/jwk.c: the RFC 7638 thumbprint (the kid of every
 * signing-key version) against the RFCs' own examples, the JWK members per
 * key type, and PEM. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include "jwk.h"
#include "km.h"
#include "unit.h"

/* RFC 7638 section 3.1: the RSA key of RFC 7517 appendix A.1 ... */
static const char rfc7638_n[] =
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7"
    "aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBX"
    "Arwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9"
    "c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM"
    "4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
static const char rfc7638_e[] = "AQAB";
/* ... and its thumbprint, section 3.1's last line. */
static const char rfc7638_kid[] = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

/* RFC 8037 appendix A.2 (the Ed25519 public key) and A.3 (its thumbprint). */
static const char rfc8037_x[] = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
static const char rfc8037_kid[] = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

static unsigned char *
unb64url(const char *s, size_t *n)
{
	unsigned char *out = NULL;

	CU_ASSERT_EQUAL_FATAL(km_b64url_decode(s, strlen(s), &out, n), KM_OK);
	return out;
}

/* DER SPKI of an RSA public key given as base64url n and e. */
static unsigned char *
rsa_spki(const char *n64, const char *e64, size_t *len)
{
	unsigned char *n, *e, *der = NULL;
	size_t nl, el;
	BIGNUM *bn, *be;
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	EVP_PKEY *pkey = NULL;
	int dl;

	n = unb64url(n64, &nl);
	e = unb64url(e64, &el);
	bn = BN_bin2bn(n, (int)nl, NULL);
	be = BN_bin2bn(e, (int)el, NULL);
	OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn);
	OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be);
	params = OSSL_PARAM_BLD_to_param(bld);
	CU_ASSERT_EQUAL_FATAL(EVP_PKEY_fromdata_init(ctx), 1);
	CU_ASSERT_EQUAL_FATAL(EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY,
	    params), 1);
	dl = i2d_PUBKEY(pkey, &der);
	CU_ASSERT_FATAL(dl > 0);
	*len = (size_t)dl;
	EVP_PKEY_free(pkey);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn);
	BN_free(be);
	free(n);
	free(e);
	return der;
}

static const char *
str(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s != NULL ? s : "";
}

static void
test_rfc7638_example(void)
{
	unsigned char *der;
	size_t len;
	json_t *jwk = NULL;
	char kid[44];

	der = rsa_spki(rfc7638_n, rfc7638_e, &len);
	CU_ASSERT_EQUAL_FATAL(jwk_from_spki(der, len, &jwk, kid), KM_OK);
	CU_ASSERT_STRING_EQUAL(kid, rfc7638_kid);
	CU_ASSERT_STRING_EQUAL(str(jwk, "kid"), rfc7638_kid);
	CU_ASSERT_STRING_EQUAL(str(jwk, "kty"), "RSA");
	CU_ASSERT_STRING_EQUAL(str(jwk, "n"), rfc7638_n);
	CU_ASSERT_STRING_EQUAL(str(jwk, "e"), rfc7638_e);
	/* Only the required members and the kid: no private parts. */
	CU_ASSERT_EQUAL(json_object_size(jwk), 4);
	json_decref(jwk);
	OPENSSL_free(der);
}

static void
test_rfc8037_example(void)
{
	unsigned char *x, *der = NULL;
	size_t xl;
	EVP_PKEY *pkey;
	json_t *jwk = NULL;
	char kid[44];
	int dl;

	x = unb64url(rfc8037_x, &xl);
	CU_ASSERT_EQUAL_FATAL(xl, 32);
	pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, xl);
	CU_ASSERT_PTR_NOT_NULL_FATAL(pkey);
	dl = i2d_PUBKEY(pkey, &der);
	CU_ASSERT_FATAL(dl > 0);
	CU_ASSERT_EQUAL_FATAL(jwk_from_spki(der, (size_t)dl, &jwk, kid), KM_OK);
	CU_ASSERT_STRING_EQUAL(kid, rfc8037_kid);
	CU_ASSERT_STRING_EQUAL(str(jwk, "kty"), "OKP");
	CU_ASSERT_STRING_EQUAL(str(jwk, "crv"), "Ed25519");
	CU_ASSERT_STRING_EQUAL(str(jwk, "x"), rfc8037_x);
	CU_ASSERT_EQUAL(json_object_size(jwk), 4);
	json_decref(jwk);
	OPENSSL_free(der);
	EVP_PKEY_free(pkey);
	free(x);
}

/* jwk_kid is jwk_from_spki's kid, asked once or again, for many keys
 * (more than the memo holds) and refuses what jwk_from_spki refuses. */
static void
test_kid_memo(void)
{
	enum { N = 300 };
	static char first[N][44];
	unsigned char *ders[N];
	int lens[N], i, round, bad = 0;
	json_t *jwk;
	char kid[44], want[44];
	unsigned char junk[91] = { 0x30, 0x59 };

	for (i = 0; i < N; i++) {
		EVP_PKEY *pkey = EVP_EC_gen("P-256");

		ders[i] = NULL;
		CU_ASSERT_PTR_NOT_NULL_FATAL(pkey);
		lens[i] = i2d_PUBKEY(pkey, &ders[i]);
		CU_ASSERT_FATAL(lens[i] > 0);
		EVP_PKEY_free(pkey);
	}
	for (round = 0; round < 2; round++) {
		for (i = 0; i < N; i++) {
			jwk = NULL;
			if (jwk_from_spki(ders[i], (size_t)lens[i], &jwk, want) !=
			    KM_OK || jwk_kid(ders[i], (size_t)lens[i], kid) != KM_OK ||
			    strcmp(kid, want) != 0)
				bad++;
			if (round == 0)
				memcpy(first[i], kid, sizeof(kid));
			else if (strcmp(first[i], kid) != 0)
				bad++;
			json_decref(jwk);
		}
	}
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT_NOT_EQUAL(strcmp(first[0], first[1]), 0);
	CU_ASSERT_NOT_EQUAL(jwk_kid(junk, sizeof(junk), kid), KM_OK);
	CU_ASSERT_NOT_EQUAL(jwk_kid(junk, sizeof(junk), kid), KM_OK);
	for (i = 0; i < N; i++)
		OPENSSL_free(ders[i]);
}

/* P-256: x and y are 32 bytes each even with leading zero bytes, and the
 * kid is the SHA-256 of exactly {"crv","kty","x","y"} in that order. */
static void
test_ec_members(void)
{
	EVP_PKEY *pkey = EVP_EC_gen("P-256");
	unsigned char *der = NULL, *back = NULL;
	json_t *jwk = NULL, *canon;
	char kid[44], *text, *k64 = NULL;
	unsigned char digest[32];
	size_t n;
	int dl;

	CU_ASSERT_PTR_NOT_NULL_FATAL(pkey);
	dl = i2d_PUBKEY(pkey, &der);
	CU_ASSERT_FATAL(dl > 0);
	CU_ASSERT_EQUAL_FATAL(jwk_from_spki(der, (size_t)dl, &jwk, kid), KM_OK);
	CU_ASSERT_STRING_EQUAL(str(jwk, "kty"), "EC");
	CU_ASSERT_STRING_EQUAL(str(jwk, "crv"), "P-256");
	CU_ASSERT_EQUAL(strlen(str(jwk, "x")), 43);
	CU_ASSERT_EQUAL(strlen(str(jwk, "y")), 43);
	canon = json_pack("{s:s, s:s, s:s, s:s}", "crv", "P-256", "kty", "EC",
	    "x", str(jwk, "x"), "y", str(jwk, "y"));
	text = json_dumps(canon, JSON_COMPACT | JSON_SORT_KEYS);
	CU_ASSERT_PTR_NOT_NULL_FATAL(text);
	CU_ASSERT_EQUAL(strncmp(text, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"",
	    31), 0);
	EVP_Digest(text, strlen(text), digest, NULL, EVP_sha256(), NULL);
	CU_ASSERT_EQUAL(km_b64url_encode(digest, 32, &k64), KM_OK);
	CU_ASSERT_STRING_EQUAL(kid, k64);
	/* A P-384 key is not one kmsd makes: refused. */
	{
		EVP_PKEY *p384 = EVP_EC_gen("P-384");
		unsigned char *d2 = NULL;
		json_t *j2 = NULL;

		dl = i2d_PUBKEY(p384, &d2);
		CU_ASSERT_EQUAL(jwk_from_spki(d2, (size_t)dl, &j2, kid),
		    KM_ERR_UNSUPPORTED_KEY_TYPE);
		CU_ASSERT_PTR_NULL(j2);
		OPENSSL_free(d2);
		EVP_PKEY_free(p384);
	}
	/* Garbage is not a key. */
	json_decref(jwk);
	jwk = NULL;
	back = (unsigned char *)"\x30\x03\x02\x01\x01";
	n = 5;
	CU_ASSERT_EQUAL(jwk_from_spki(back, n, &jwk, kid) != KM_OK, 1);
	CU_ASSERT_PTR_NULL(jwk);
	free(text);
	free(k64);
	json_decref(canon);
	OPENSSL_free(der);
	EVP_PKEY_free(pkey);
}

static void
test_pem(void)
{
	unsigned char *der;
	size_t len;
	char *pem = NULL;

	der = rsa_spki(rfc7638_n, rfc7638_e, &len);
	CU_ASSERT_EQUAL_FATAL(jwk_spki_pem(der, len, &pem), KM_OK);
	CU_ASSERT_EQUAL(strncmp(pem, "-----BEGIN PUBLIC KEY-----\n", 27), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(pem, "-----END PUBLIC KEY-----\n"));
	free(pem);
	OPENSSL_free(der);
}

int
main(void)
{
	static const struct ut_test tests[] = {
		{ "RFC 7638 section 3.1 example thumbprint", test_rfc7638_example },
		{ "RFC 8037 appendix A.3 Ed25519 thumbprint", test_rfc8037_example },
		{ "P-256 members and canonical thumbprint", test_ec_members },
		{ "PEM of a public key", test_pem },
		{ "remembered kids are the computed ones", test_kid_memo },
		{ NULL, NULL },
	};

	return ut_main("jwk", NULL, NULL, tests);
}
