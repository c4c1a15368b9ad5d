/* Officer keys and signatures: ECDSA P-256 with SHA-256, DER signatures in
 * base64, public keys as DER SubjectPublicKeyInfo, all through OpenSSL. */
#include "cer.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "log.h"

/* A DER ECDSA P-256 signature is at most 72 bytes. */
#define SIG_DER_MAX	72

/* 1 when `pk` is an EC key on P-256. */
static int
is_p256(EVP_PKEY *pk)
{
	char group[64];
	size_t glen = 0;

	if (EVP_PKEY_get_base_id(pk) != EVP_PKEY_EC)
		return 0;
	if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME,
	    group, sizeof(group), &glen) != 1)
		return 0;
	return strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0;
}

/* DER or PEM into a P-256 EVP_PKEY; NULL when it is neither. */
static EVP_PKEY *
pubkey_load(const void *in, size_t len)
{
	const unsigned char *p = in;
	EVP_PKEY *pk = NULL;
	BIO *bio = NULL;

	if (len > 8192)
		return NULL;
	if (len > 10 && memcmp(in, "-----BEGIN", 10) == 0) {
		if ((bio = BIO_new_mem_buf(in, (int)len)) != NULL)
			pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
		BIO_free(bio);
	} else
		pk = d2i_PUBKEY(NULL, &p, (long)len);
	if (pk != NULL && !is_p256(pk)) {
		EVP_PKEY_free(pk);
		pk = NULL;
	}
	return pk;
}

int
cer_pubkey_parse(const void *in, size_t len, unsigned char **spki,
    size_t *spki_len)
{
	EVP_PKEY *pk = NULL;
	unsigned char *der = NULL;
	int n, rc = KM_ERR_INVALID_REQUEST;

	*spki = NULL;
	*spki_len = 0;
	if (in == NULL || (pk = pubkey_load(in, len)) == NULL)
		goto out;
	if ((n = i2d_PUBKEY(pk, &der)) <= 0) {
		rc = KM_ERR_NOMEM;
		goto out;
	}
	if ((*spki = malloc((size_t)n)) == NULL) {
		rc = KM_ERR_NOMEM;
		goto out;
	}
	memcpy(*spki, der, (size_t)n);
	*spki_len = (size_t)n;
	rc = KM_OK;
out:
	OPENSSL_free(der);
	EVP_PKEY_free(pk);
	return rc;
}

int
cer_pubkey_pem(const unsigned char *spki, size_t len, char **pem)
{
	EVP_PKEY *pk = NULL;
	BIO *bio = NULL;
	char *data;
	long n;
	int rc = KM_ERR_INVALID_REQUEST;

	*pem = NULL;
	if ((pk = pubkey_load(spki, len)) == NULL)
		goto out;
	if ((bio = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_PUBKEY(bio, pk) != 1 ||
	    (n = BIO_get_mem_data(bio, &data)) <= 0) {
		rc = KM_ERR_NOMEM;
		goto out;
	}
	if ((*pem = malloc((size_t)n + 1)) == NULL) {
		rc = KM_ERR_NOMEM;
		goto out;
	}
	memcpy(*pem, data, (size_t)n);
	(*pem)[n] = '\0';
	rc = KM_OK;
out:
	BIO_free(bio);
	EVP_PKEY_free(pk);
	return rc;
}

int
cer_verify(const unsigned char *spki, size_t spki_len, const char *msg,
    size_t msg_len, const char *sig_b64)
{
	EVP_PKEY *pk = NULL;
	EVP_MD_CTX *md = NULL;
	ECDSA_SIG *es = NULL;
	unsigned char *sig = NULL, *again = NULL;
	const unsigned char *p;
	size_t sig_len = 0, b64_len;
	int n, rc = KM_ERR_INVALID_SIGNATURE;

	if (sig_b64 == NULL || (b64_len = strlen(sig_b64)) == 0 ||
	    b64_len > CER_SIG_B64_MAX)
		goto out;
	if (km_b64_decode(sig_b64, b64_len, &sig, &sig_len) != KM_OK ||
	    sig_len > SIG_DER_MAX)
		goto out;
	/* Only the canonical DER encoding: one signature has one spelling. */
	p = sig;
	if ((es = d2i_ECDSA_SIG(NULL, &p, (long)sig_len)) == NULL ||
	    p != sig + sig_len)
		goto out;
	if ((n = i2d_ECDSA_SIG(es, &again)) <= 0 || (size_t)n != sig_len ||
	    memcmp(again, sig, sig_len) != 0)
		goto out;
	if ((pk = pubkey_load(spki, spki_len)) == NULL) {
		log_error("ceremony: a registered officer key does not parse");
		goto out;
	}
	if ((md = EVP_MD_CTX_new()) == NULL) {
		rc = KM_ERR_NOMEM;
		goto out;
	}
	if (EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pk) != 1 ||
	    EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)msg,
	    msg_len) != 1)
		goto out;
	rc = KM_OK;
out:
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pk);
	ECDSA_SIG_free(es);
	OPENSSL_free(again);
	free(sig);
	return rc;
}

int
cer_sig_from_raw(const unsigned char rs[64], char **sig_b64)
{
	ECDSA_SIG *es = NULL;
	BIGNUM *r = NULL, *s = NULL;
	unsigned char *der = NULL;
	int n, rc = KM_ERR_NOMEM;

	*sig_b64 = NULL;
	if ((es = ECDSA_SIG_new()) == NULL ||
	    (r = BN_bin2bn(rs, 32, NULL)) == NULL ||
	    (s = BN_bin2bn(rs + 32, 32, NULL)) == NULL)
		goto out;
	if (ECDSA_SIG_set0(es, r, s) != 1)
		goto out;
	r = s = NULL;
	if ((n = i2d_ECDSA_SIG(es, &der)) <= 0)
		goto out;
	rc = km_b64_encode(der, (size_t)n, sig_b64);
out:
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(es);
	OPENSSL_free(der);
	return rc;
}
