/* Unit tests of service/sig.c: JOSE algorithm names per key type, the two
 * ECDSA signature forms, OpenSSL verification (against keys made here) and
 * the compact JWS parser on good and hostile input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "km.h"
#include "sig.h"
#include "unit.h"

static void
test_alg_names(void)
{
	enum hsm_sig_alg a[2], x;

	CU_ASSERT_EQUAL(sig_algs_of_type("ec-p256", a), 1);
	CU_ASSERT_EQUAL(a[0], HSM_SIG_ES256);
	CU_ASSERT_EQUAL(sig_algs_of_type("rsa-3072", a), 2);
	CU_ASSERT_EQUAL(a[0], HSM_SIG_RS256);	/* the default */
	CU_ASSERT_EQUAL(a[1], HSM_SIG_PS256);
	CU_ASSERT_EQUAL(sig_algs_of_type("ed25519", a), 1);
	CU_ASSERT_EQUAL(a[0], HSM_SIG_EDDSA);
	CU_ASSERT_EQUAL(sig_algs_of_type("aes256-gcm", a), 0);
	CU_ASSERT_TRUE(sig_alg_allowed("rsa-2048", HSM_SIG_PS256));
	CU_ASSERT_FALSE(sig_alg_allowed("ec-p256", HSM_SIG_RS256));
	CU_ASSERT_STRING_EQUAL(sig_alg_name(HSM_SIG_EDDSA), "EdDSA");
	CU_ASSERT_EQUAL(sig_alg_parse("PS256", &x), KM_OK);
	CU_ASSERT_EQUAL(x, HSM_SIG_PS256);
	/* JOSE names are case-sensitive; none, HS256 are never accepted. */
	CU_ASSERT_EQUAL(sig_alg_parse("es256", &x), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(sig_alg_parse("none", &x), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(sig_alg_parse("HS256", &x), KM_ERR_INVALID_REQUEST);
}

static unsigned char *
spki_of(EVP_PKEY *pkey, size_t *len)
{
	unsigned char *der = NULL;
	int n = i2d_PUBKEY(pkey, &der);

	CU_ASSERT_FATAL(n > 0);
	*len = (size_t)n;
	return der;
}

/* ECDSA: DER <-> raw round trip, strict DER, and verification of a
 * signature OpenSSL made, in both forms. */
static void
test_ecdsa(void)
{
	static const unsigned char msg[] = "message";
	EVP_PKEY *pkey = EVP_EC_gen("P-256");
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char der[80], raw[64], *again = NULL, *spki, digest[32];
	size_t derlen = sizeof(der), againlen = 0, spkilen;
	int valid = -1;

	CU_ASSERT_EQUAL_FATAL(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL,
	    pkey), 1);
	CU_ASSERT_EQUAL_FATAL(EVP_DigestSign(md, der, &derlen, msg,
	    sizeof(msg) - 1), 1);
	CU_ASSERT_EQUAL_FATAL(sig_ecdsa_der_to_raw(der, derlen, raw), KM_OK);
	CU_ASSERT_EQUAL_FATAL(sig_ecdsa_raw_to_der(raw, &again, &againlen), KM_OK);
	UT_ASSERT_BYTES(again, againlen, der, derlen);
	/* Trailing bytes, a cut, a wrong tag: not DER. */
	der[derlen] = 0;
	CU_ASSERT_EQUAL(sig_ecdsa_der_to_raw(der, derlen + 1, raw),
	    KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(sig_ecdsa_der_to_raw(der, derlen - 1, raw),
	    KM_ERR_INVALID_REQUEST);
	der[0] = 0x31;
	CU_ASSERT_EQUAL(sig_ecdsa_der_to_raw(der, derlen, raw),
	    KM_ERR_INVALID_REQUEST);

	spki = spki_of(pkey, &spkilen);
	CU_ASSERT_EQUAL(sig_verify(spki, spkilen, HSM_SIG_ES256, 0, msg,
	    sizeof(msg) - 1, raw, 64, &valid), KM_OK);
	CU_ASSERT_EQUAL(valid, 1);
	EVP_Digest(msg, sizeof(msg) - 1, digest, NULL, EVP_sha256(), NULL);
	CU_ASSERT_EQUAL(sig_verify(spki, spkilen, HSM_SIG_ES256, 1, digest, 32,
	    raw, 64, &valid), KM_OK);
	CU_ASSERT_EQUAL(valid, 1);
	raw[10] ^= 1;
	CU_ASSERT_EQUAL(sig_verify(spki, spkilen, HSM_SIG_ES256, 0, msg,
	    sizeof(msg) - 1, raw, 64, &valid), KM_OK);
	CU_ASSERT_EQUAL(valid, 0);
	CU_ASSERT_EQUAL(sig_verify(spki, spkilen, HSM_SIG_ES256, 0, msg,
	    sizeof(msg) - 1, raw, 63, &valid), KM_OK);
	CU_ASSERT_EQUAL(valid, 0);
	/* An EC key is not an RSA or Ed25519 key. */
	CU_ASSERT_EQUAL(sig_verify(spki, spkilen, HSM_SIG_RS256, 0, msg,
	    sizeof(msg) - 1, raw, 64, &valid), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(sig_verify(spki, spkilen, HSM_SIG_EDDSA, 0, msg,
	    sizeof(msg) - 1, raw, 64, &valid), KM_ERR_INVALID_REQUEST);
	OPENSSL_free(spki);
	free(again);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pkey);
}

/* RS256 and PS256 (salt 32) from OpenSSL verify; a PSS signature with
 * another salt length does not: RFC 7518 fixes it to the hash length. */
static void
test_rsa(void)
{
	static const unsigned char msg[] = "rsa message";
	EVP_PKEY *pkey = EVP_RSA_gen(2048);
	unsigned char sig[256], *spki;
	size_t siglen, spkilen;
	int valid, salt, i;

	spki = spki_of(pkey, &spkilen);
	for (i = 0; i < 3; i++) {
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		EVP_PKEY_CTX *pctx = NULL;
		enum hsm_sig_alg alg = i == 0 ? HSM_SIG_RS256 : HSM_SIG_PS256;

		salt = i == 2 ? 20 : 32;
		siglen = sizeof(sig);
		CU_ASSERT_EQUAL_FATAL(EVP_DigestSignInit(md, &pctx, EVP_sha256(),
		    NULL, pkey), 1);
		if (alg == HSM_SIG_PS256) {
			EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
			EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, salt);
		}
		CU_ASSERT_EQUAL_FATAL(EVP_DigestSign(md, sig, &siglen, msg,
		    sizeof(msg) - 1), 1);
		valid = -1;
		CU_ASSERT_EQUAL(sig_verify(spki, spkilen, alg, 0, msg,
		    sizeof(msg) - 1, sig, siglen, &valid), KM_OK);
		CU_ASSERT_EQUAL(valid, i == 2 ? 0 : 1);
		/* RS256 is not PS256. */
		if (i == 0) {
			CU_ASSERT_EQUAL(sig_verify(spki, spkilen, HSM_SIG_PS256, 0,
			    msg, sizeof(msg) - 1, sig, siglen, &valid), KM_OK);
			CU_ASSERT_EQUAL(valid, 0);
		}
		EVP_MD_CTX_free(md);
	}
	OPENSSL_free(spki);
	EVP_PKEY_free(pkey);
}

static void
test_eddsa(void)
{
	static const unsigned char msg[] = "ed message";
	EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char sig[64], *spki;
	size_t siglen = sizeof(sig), spkilen;
	int valid = -1;

	CU_ASSERT_EQUAL_FATAL(EVP_DigestSignInit(md, NULL, NULL, NULL, pkey), 1);
	CU_ASSERT_EQUAL_FATAL(EVP_DigestSign(md, sig, &siglen, msg,
	    sizeof(msg) - 1), 1);
	spki = spki_of(pkey, &spkilen);
	CU_ASSERT_EQUAL(sig_verify(spki, spkilen, HSM_SIG_EDDSA, 0, msg,
	    sizeof(msg) - 1, sig, siglen, &valid), KM_OK);
	CU_ASSERT_EQUAL(valid, 1);
	/* Ed25519 signs the message, never a digest. */
	CU_ASSERT_EQUAL(sig_verify(spki, spkilen, HSM_SIG_EDDSA, 1, msg, 32, sig,
	    siglen, &valid), KM_ERR_INVALID_REQUEST);
	OPENSSL_free(spki);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pkey);
}

static int
parse(const char *text, km_err want, const char *why_has)
{
	struct sig_jws j;
	char why[160] = "";
	int r = sig_jws_parse(text, strlen(text), &j, why, sizeof(why));

	if (r != (int)want || (why_has != NULL && strstr(why, why_has) == NULL)) {
		fprintf(stderr, "\nsig_jws_parse(\"%.80s\") = %d (%s), want %d\n",
		    text, r, why, (int)want);
		sig_jws_clear(&j);
		return 0;
	}
	sig_jws_clear(&j);
	return 1;
}

/* {"alg":"ES256","kid":"k1"} and variants, base64url. */
#define H_OK "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0"
#define H_NO_KID "eyJhbGciOiJFUzI1NiJ9"			/* {"alg":"ES256"} */
#define H_CRIT "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIiwiY3JpdCI6WyJ4Il19"
#define H_DUP "eyJhbGciOiJFUzI1NiIsImFsZyI6Im5vbmUiLCJraWQiOiJrMSJ9"
#define H_ARRAY "WzFd"						/* [1] */
#define H_B64 "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIiwiYjY0IjpmYWxzZX0"

static void
test_jws_parse(void)
{
	struct sig_jws j;
	char why[160], *big;
	size_t n;

	CU_ASSERT_EQUAL_FATAL(sig_jws_parse(H_OK ".cGF5bG9hZA.c2ln",
	    strlen(H_OK ".cGF5bG9hZA.c2ln"), &j, why, sizeof(why)), KM_OK);
	CU_ASSERT_STRING_EQUAL(j.alg, "ES256");
	CU_ASSERT_STRING_EQUAL(j.kid, "k1");
	CU_ASSERT_EQUAL(j.payload_len, 7);
	CU_ASSERT_EQUAL(memcmp(j.payload, "payload", 7), 0);
	CU_ASSERT_EQUAL(j.sig_len, 3);
	CU_ASSERT_EQUAL(j.signing_input_len, strlen(H_OK ".cGF5bG9hZA"));
	sig_jws_clear(&j);

	/* Truncated or extra segments. */
	CU_ASSERT(parse(H_OK ".cGF5bG9hZA", KM_ERR_INVALID_REQUEST, "three"));
	CU_ASSERT(parse(H_OK, KM_ERR_INVALID_REQUEST, "three"));
	CU_ASSERT(parse(H_OK ".cGF5bG9hZA.c2ln.eA", KM_ERR_INVALID_REQUEST,
	    "three"));
	CU_ASSERT(parse(H_OK ".cGF5bG9hZA.", KM_ERR_INVALID_REQUEST, "empty"));
	CU_ASSERT(parse(".cGF5bG9hZA.c2ln", KM_ERR_INVALID_REQUEST, "empty"));
	CU_ASSERT(parse("", KM_ERR_INVALID_REQUEST, NULL));
	/* Not base64url: padding, '+', '/', spaces, a length of 4n+1. */
	CU_ASSERT(parse(H_OK ".cGF5bG9hZA==.c2ln", KM_ERR_INVALID_REQUEST,
	    "base64url"));
	CU_ASSERT(parse(H_OK ".cGF5b+9hZA.c2ln", KM_ERR_INVALID_REQUEST,
	    "base64url"));
	CU_ASSERT(parse(H_OK ".cGF5b/9hZA.c2ln", KM_ERR_INVALID_REQUEST,
	    "base64url"));
	CU_ASSERT(parse(H_OK " .cGF5bG9hZA.c2ln", KM_ERR_INVALID_REQUEST,
	    "base64url"));
	CU_ASSERT(parse(H_OK ".cGF5bG9hZAx.c2ln", KM_ERR_INVALID_REQUEST,
	    "base64url"));
	/* Non-canonical trailing bits ("c2k" is fine, "c2l" is not). */
	CU_ASSERT(parse(H_OK ".cGF5bG9hZA.c2l", KM_ERR_INVALID_REQUEST,
	    "canonical"));
	/* Headers: missing kid, not an object, duplicate alg, crit, b64. */
	CU_ASSERT(parse(H_NO_KID ".cGF5bG9hZA.c2ln", KM_ERR_INVALID_REQUEST,
	    "alg and kid"));
	CU_ASSERT(parse(H_ARRAY ".cGF5bG9hZA.c2ln", KM_ERR_INVALID_REQUEST,
	    "JSON object"));
	CU_ASSERT(parse(H_DUP ".cGF5bG9hZA.c2ln", KM_ERR_INVALID_REQUEST,
	    "JSON object"));
	CU_ASSERT(parse(H_CRIT ".cGF5bG9hZA.c2ln", KM_ERR_INVALID_REQUEST,
	    "crit"));
	CU_ASSERT(parse(H_B64 ".cGF5bG9hZA.c2ln", KM_ERR_INVALID_REQUEST, "b64"));
	/* Oversized. */
	n = SIG_MAX_JWS + 10;
	big = malloc(n + 1);
	memset(big, 'A', n);
	memcpy(big, H_OK ".", strlen(H_OK) + 1);
	big[n - 5] = '.';
	big[n] = '\0';
	CU_ASSERT(parse(big, KM_ERR_TOO_LARGE, "96 KiB"));
	free(big);
}

static void
test_jws_signing_input(void)
{
	json_t *h = json_pack("{s:s, s:s}", "alg", "ES256", "kid", "k1");
	char *s = NULL;

	CU_ASSERT_EQUAL_FATAL(sig_jws_signing_input(h,
	    (const unsigned char *)"payload", 7, &s), KM_OK);
	/* The header serializes compactly in insertion order. */
	CU_ASSERT_STRING_EQUAL(s, H_OK ".cGF5bG9hZA");
	free(s);
	json_decref(h);
}

int
main(void)
{
	static const struct ut_test tests[] = {
		{ "algorithm names per key type", test_alg_names },
		{ "ECDSA forms and verification", test_ecdsa },
		{ "RS256 and PS256 verification", test_rsa },
		{ "EdDSA verification", test_eddsa },
		{ "compact JWS parser", test_jws_parse },
		{ "JWS signing input", test_jws_signing_input },
		{ NULL, NULL },
	};

	return ut_main("sig", NULL, NULL, tests);
}
