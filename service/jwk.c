/* JWK and PEM forms of public keys; kid = RFC 7638 thumbprint. */
#include "jwk.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

static int
b64url_json(const unsigned char *p, size_t n, json_t **out)
{
	char *s;
	int r;

	if ((r = km_b64url_encode(p, n, &s)) != KM_OK)
		return r;
	*out = json_string(s);
	free(s);
	return *out ? KM_OK : KM_ERR_NOMEM;
}

static int
bn_json(const EVP_PKEY *pkey, const char *param, size_t pad, json_t **out)
{
	BIGNUM *bn = NULL;
	unsigned char buf[1024];
	int n, r = KM_ERR_INTERNAL;

	*out = NULL;
	if (!EVP_PKEY_get_bn_param(pkey, param, &bn))
		return KM_ERR_INTERNAL;
	n = pad ? BN_bn2binpad(bn, buf, (int)pad) : BN_bn2bin(bn, buf);
	if (n > 0 && (size_t)n <= sizeof(buf))
		r = b64url_json(buf, (size_t)n, out);
	BN_free(bn);
	return r;
}

/* Required members only, in lexicographic order (RFC 7638 section 3.2). */
static int
jwk_members(const EVP_PKEY *pkey, json_t **out)
{
	json_t *a = NULL, *b = NULL;
	int r;

	*out = NULL;
	if (EVP_PKEY_is_a(pkey, "EC")) {
		char group[64];

		if (!EVP_PKEY_get_utf8_string_param(pkey,
		    OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL) ||
		    strcmp(group, "prime256v1") != 0)
			return KM_ERR_UNSUPPORTED_KEY_TYPE;
		if ((r = bn_json(pkey, OSSL_PKEY_PARAM_EC_PUB_X, 32, &a)) != KM_OK ||
		    (r = bn_json(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, 32, &b)) != KM_OK)
			goto fail;
		*out = json_pack("{s:s, s:s, s:o, s:o}", "crv", "P-256", "kty",
		    "EC", "x", a, "y", b);
	} else if (EVP_PKEY_is_a(pkey, "ED25519")) {
		unsigned char raw[32];
		size_t n = sizeof(raw);

		/* RFC 8037 section 2: an OKP key, the public key as "x". */
		if (!EVP_PKEY_get_raw_public_key(pkey, raw, &n) || n != 32)
			return KM_ERR_INTERNAL;
		if ((r = b64url_json(raw, n, &a)) != KM_OK)
			goto fail;
		*out = json_pack("{s:s, s:s, s:o}", "crv", "Ed25519", "kty", "OKP",
		    "x", a);
	} else if (EVP_PKEY_is_a(pkey, "RSA")) {
		if ((r = bn_json(pkey, OSSL_PKEY_PARAM_RSA_E, 0, &a)) != KM_OK ||
		    (r = bn_json(pkey, OSSL_PKEY_PARAM_RSA_N, 0, &b)) != KM_OK)
			goto fail;
		*out = json_pack("{s:o, s:s, s:o}", "e", a, "kty", "RSA", "n", b);
	} else {
		return KM_ERR_UNSUPPORTED_KEY_TYPE;
	}
	return *out ? KM_OK : KM_ERR_NOMEM;
fail:
	json_decref(a);
	json_decref(b);
	return r;
}

int
jwk_from_spki(const unsigned char *der, size_t der_len, json_t **jwk,
    char kid[44])
{
	const unsigned char *p = der;
	unsigned char digest[SHA256_DIGEST_LENGTH];
	EVP_PKEY *pkey;
	json_t *j = NULL;
	char *canon = NULL, *k = NULL;
	int r;

	*jwk = NULL;
	kid[0] = '\0';
	if ((pkey = d2i_PUBKEY(NULL, &p, (long)der_len)) == NULL)
		return KM_ERR_INVALID_REQUEST;
	if ((r = jwk_members(pkey, &j)) != KM_OK)
		goto out;
	/* Sorted keys, no whitespace: the RFC 7638 canonical form. */
	if ((canon = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS)) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	SHA256((unsigned char *)canon, strlen(canon), digest);
	if ((r = km_b64url_encode(digest, sizeof(digest), &k)) != KM_OK)
		goto out;
	memcpy(kid, k, 44);
	json_object_set_new(j, "kid", json_string(kid));
	*jwk = j;
	j = NULL;
	r = KM_OK;
out:
	free(canon);
	free(k);
	json_decref(j);
	EVP_PKEY_free(pkey);
	return r;
}

/* Thumbprints of recently used public keys, by SHA-256 of their DER. */
#define KID_MEMO_SLOTS 256

static struct {
	unsigned char spki_hash[SHA256_DIGEST_LENGTH];
	char kid[44];
	int used;
} kid_memo[KID_MEMO_SLOTS];
static pthread_mutex_t kid_memo_lock = PTHREAD_MUTEX_INITIALIZER;

int
jwk_kid(const unsigned char *der, size_t der_len, char kid[44])
{
	unsigned char h[SHA256_DIGEST_LENGTH];
	json_t *jwk = NULL;
	size_t slot;
	int r, hit = 0;

	SHA256(der, der_len, h);
	slot = ((size_t)h[0] << 8 | h[1]) % KID_MEMO_SLOTS;
	pthread_mutex_lock(&kid_memo_lock);
	if (kid_memo[slot].used && memcmp(kid_memo[slot].spki_hash, h,
	    sizeof(h)) == 0) {
		memcpy(kid, kid_memo[slot].kid, 44);
		hit = 1;
	}
	pthread_mutex_unlock(&kid_memo_lock);
	if (hit)
		return KM_OK;
	if ((r = jwk_from_spki(der, der_len, &jwk, kid)) != KM_OK)
		return r;
	json_decref(jwk);
	pthread_mutex_lock(&kid_memo_lock);
	memcpy(kid_memo[slot].spki_hash, h, sizeof(h));
	memcpy(kid_memo[slot].kid, kid, 44);
	kid_memo[slot].used = 1;
	pthread_mutex_unlock(&kid_memo_lock);
	return KM_OK;
}

int
jwk_spki_pem(const unsigned char *der, size_t der_len, char **pem)
{
	const unsigned char *p = der;
	EVP_PKEY *pkey;
	BIO *bio = NULL;
	char *data;
	long n;
	int r = KM_ERR_INTERNAL;

	*pem = NULL;
	if ((pkey = d2i_PUBKEY(NULL, &p, (long)der_len)) == NULL)
		return KM_ERR_INVALID_REQUEST;
	if ((bio = BIO_new(BIO_s_mem())) == NULL ||
	    !PEM_write_bio_PUBKEY(bio, pkey) ||
	    (n = BIO_get_mem_data(bio, &data)) <= 0)
		goto out;
	if ((*pem = strndup(data, (size_t)n)) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	r = KM_OK;
out:
	BIO_free(bio);
	EVP_PKEY_free(pkey);
	return r;
}
