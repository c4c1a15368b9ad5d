/* JOSE algorithms, ECDSA signature forms, OpenSSL verification, JWS parts. */
#include "sig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

static const struct {
	enum hsm_sig_alg alg;
	const char *name;
} alg_names[] = {
	{ HSM_SIG_ES256, "ES256" },
	{ HSM_SIG_RS256, "RS256" },
	{ HSM_SIG_PS256, "PS256" },
	{ HSM_SIG_EDDSA, "EdDSA" },
};

const char *
sig_alg_name(enum hsm_sig_alg alg)
{
	size_t i;

	for (i = 0; i < sizeof(alg_names) / sizeof(alg_names[0]); i++)
		if (alg_names[i].alg == alg)
			return alg_names[i].name;
	return "none";
}

int
sig_alg_parse(const char *name, enum hsm_sig_alg *out)
{
	size_t i;

	for (i = 0; i < sizeof(alg_names) / sizeof(alg_names[0]); i++) {
		if (strcmp(alg_names[i].name, name) == 0) {
			*out = alg_names[i].alg;
			return KM_OK;
		}
	}
	return KM_ERR_INVALID_REQUEST;
}

size_t
sig_algs_of_type(const char *type, enum hsm_sig_alg out[2])
{
	if (strcmp(type, "ec-p256") == 0) {
		out[0] = HSM_SIG_ES256;
		return 1;
	}
	if (strcmp(type, "rsa-2048") == 0 || strcmp(type, "rsa-3072") == 0) {
		out[0] = HSM_SIG_RS256;
		out[1] = HSM_SIG_PS256;
		return 2;
	}
	if (strcmp(type, "ed25519") == 0) {
		out[0] = HSM_SIG_EDDSA;
		return 1;
	}
	return 0;
}

int
sig_alg_allowed(const char *type, enum hsm_sig_alg alg)
{
	enum hsm_sig_alg a[2];
	size_t i, n = sig_algs_of_type(type, a);

	for (i = 0; i < n; i++)
		if (a[i] == alg)
			return 1;
	return 0;
}

int
sig_ecdsa_raw_to_der(const unsigned char raw[64], unsigned char **der,
    size_t *der_len)
{
	ECDSA_SIG *es = NULL;
	BIGNUM *r = NULL, *s = NULL;
	unsigned char *p = NULL;
	int n, rc = KM_ERR_NOMEM;

	*der = NULL;
	*der_len = 0;
	if ((es = ECDSA_SIG_new()) == NULL ||
	    (r = BN_bin2bn(raw, 32, NULL)) == NULL ||
	    (s = BN_bin2bn(raw + 32, 32, NULL)) == NULL ||
	    !ECDSA_SIG_set0(es, r, s))
		goto out;
	r = s = NULL;		/* owned by es now */
	if ((n = i2d_ECDSA_SIG(es, &p)) <= 0) {
		rc = KM_ERR_INTERNAL;
		goto out;
	}
	if ((*der = malloc((size_t)n)) == NULL)
		goto out;
	memcpy(*der, p, (size_t)n);
	*der_len = (size_t)n;
	rc = KM_OK;
out:
	OPENSSL_free(p);
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(es);
	return rc;
}

int
sig_ecdsa_der_to_raw(const unsigned char *der, size_t der_len,
    unsigned char raw[64])
{
	const unsigned char *p = der;
	const BIGNUM *r, *s;
	unsigned char *again = NULL;
	ECDSA_SIG *es;
	int n, rc = KM_ERR_INVALID_REQUEST;

	if (der_len == 0 || der_len > 80 ||
	    (es = d2i_ECDSA_SIG(NULL, &p, (long)der_len)) == NULL)
		return KM_ERR_INVALID_REQUEST;
	/* Exactly one value, in DER: re-encoding gives the same bytes. */
	if ((size_t)(p - der) != der_len ||
	    (n = i2d_ECDSA_SIG(es, &again)) <= 0 || (size_t)n != der_len ||
	    memcmp(again, der, der_len) != 0)
		goto out;
	ECDSA_SIG_get0(es, &r, &s);
	if (BN_num_bytes(r) > 32 || BN_num_bytes(s) > 32 ||
	    BN_bn2binpad(r, raw, 32) != 32 || BN_bn2binpad(s, raw + 32, 32) != 32)
		goto out;
	rc = KM_OK;
out:
	OPENSSL_free(again);
	ECDSA_SIG_free(es);
	return rc;
}

/* The key must be what the algorithm signs with. */
static int
key_fits(EVP_PKEY *pkey, enum hsm_sig_alg alg)
{
	switch (alg) {
	case HSM_SIG_ES256: {
		char group[64];

		return EVP_PKEY_is_a(pkey, "EC") &&
		    EVP_PKEY_get_utf8_string_param(pkey, "group", group,
		    sizeof(group), NULL) && strcmp(group, "prime256v1") == 0;
	}
	case HSM_SIG_RS256:
	case HSM_SIG_PS256:
		return EVP_PKEY_is_a(pkey, "RSA") && EVP_PKEY_get_bits(pkey) >= 2048;
	case HSM_SIG_EDDSA:
		return EVP_PKEY_is_a(pkey, "ED25519");
	}
	return 0;
}

int
sig_verify(const unsigned char *spki, size_t spki_len, enum hsm_sig_alg alg,
    int prehashed, const unsigned char *msg, size_t msg_len,
    const unsigned char *sig, size_t sig_len, int *valid)
{
	const unsigned char *p = spki;
	unsigned char digest[SHA256_DIGEST_LENGTH], *der = NULL;
	size_t der_len = 0;
	EVP_PKEY *pkey = NULL;
	EVP_PKEY_CTX *pctx = NULL;
	EVP_MD_CTX *md = NULL;
	int r = KM_ERR_INTERNAL;

	*valid = 0;
	if ((pkey = d2i_PUBKEY(NULL, &p, (long)spki_len)) == NULL ||
	    !key_fits(pkey, alg)) {
		r = KM_ERR_INVALID_REQUEST;
		goto out;
	}
	if (alg == HSM_SIG_EDDSA) {
		/* Pure Ed25519 signs the message itself: no digest. */
		if (prehashed) {
			r = KM_ERR_INVALID_REQUEST;
			goto out;
		}
		if ((md = EVP_MD_CTX_new()) == NULL ||
		    EVP_DigestVerifyInit(md, NULL, NULL, NULL, pkey) != 1)
			goto out;
		*valid = sig_len == 64 &&
		    EVP_DigestVerify(md, sig, sig_len, msg, msg_len) == 1;
		r = KM_OK;
		goto out;
	}
	if (prehashed) {
		if (msg_len != sizeof(digest)) {
			r = KM_ERR_INVALID_REQUEST;
			goto out;
		}
		memcpy(digest, msg, sizeof(digest));
	} else {
		SHA256(msg, msg_len, digest);
	}
	if (alg == HSM_SIG_ES256) {
		if (sig_len != 64) {
			r = KM_OK;	/* not a P-256 signature: invalid */
			goto out;
		}
		if ((r = sig_ecdsa_raw_to_der(sig, &der, &der_len)) != KM_OK)
			goto out;
		sig = der;
		sig_len = der_len;
	}
	r = KM_ERR_INTERNAL;
	if ((pctx = EVP_PKEY_CTX_new(pkey, NULL)) == NULL ||
	    EVP_PKEY_verify_init(pctx) != 1 ||
	    EVP_PKEY_CTX_set_signature_md(pctx, EVP_sha256()) != 1)
		goto out;
	if (alg == HSM_SIG_RS256 &&
	    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
		goto out;
	if (alg == HSM_SIG_PS256 &&
	    (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
	    EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) != 1 ||
	    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, SHA256_DIGEST_LENGTH) != 1))
		goto out;
	*valid = EVP_PKEY_verify(pctx, sig, sig_len, digest, sizeof(digest)) == 1;
	r = KM_OK;
out:
	free(der);
	EVP_MD_CTX_free(md);
	EVP_PKEY_CTX_free(pctx);
	EVP_PKEY_free(pkey);
	return r;
}

int
sig_jws_signing_input(const json_t *header, const unsigned char *payload,
    size_t payload_len, char **out)
{
	struct km_buf b = KM_BUF_INIT(2 * SIG_MAX_INPUT + SIG_MAX_HEADER * 2);
	char *hjson = NULL, *h64 = NULL, *p64 = NULL;
	int r;

	*out = NULL;
	if ((hjson = json_dumps(header, JSON_COMPACT)) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	if ((r = km_b64url_encode((const unsigned char *)hjson, strlen(hjson),
	    &h64)) != KM_OK ||
	    (r = km_b64url_encode(payload, payload_len, &p64)) != KM_OK)
		goto out;
	km_buf_append_str(&b, h64);
	km_buf_append(&b, ".", 1);
	km_buf_append_str(&b, p64);
	if (b.failed) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	if ((*out = km_buf_take_str(&b)) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	r = KM_OK;
out:
	km_buf_free(&b);
	free(hjson);
	free(h64);
	free(p64);
	return r;
}

static int
b64url_ok(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return 0;
	}
	return n % 4 != 1;
}

static int
jws_fail(char *why, size_t whylen, km_err e, const char *msg)
{
	snprintf(why, whylen, "%s", msg);
	return e;
}

int
sig_jws_parse(const char *text, size_t len, struct sig_jws *out, char *why,
    size_t whylen)
{
	const char *d1, *d2, *hs = text, *ps, *ss;
	size_t hl, pl, sl;
	unsigned char *hraw = NULL;
	size_t hraw_len = 0;
	json_error_t jerr;
	json_t *alg, *kid;
	int r;

	memset(out, 0, sizeof(*out));
	if (len > SIG_MAX_JWS)
		return jws_fail(why, whylen, KM_ERR_TOO_LARGE,
		    "the JWS is over 96 KiB");
	if (memchr(text, '\0', len) != NULL ||
	    (d1 = memchr(text, '.', len)) == NULL ||
	    (d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - text))) == NULL ||
	    memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - text)) != NULL)
		return jws_fail(why, whylen, KM_ERR_INVALID_REQUEST,
		    "a compact JWS is three base64url segments joined by '.'");
	ps = d1 + 1;
	ss = d2 + 1;
	hl = (size_t)(d1 - hs);
	pl = (size_t)(d2 - ps);
	sl = len - (size_t)(ss - text);
	if (hl == 0 || sl == 0)
		return jws_fail(why, whylen, KM_ERR_INVALID_REQUEST,
		    "the JWS header or signature segment is empty");
	if (!b64url_ok(hs, hl) || !b64url_ok(ps, pl) || !b64url_ok(ss, sl))
		return jws_fail(why, whylen, KM_ERR_INVALID_REQUEST,
		    "a JWS segment is not base64url without padding");
	if (km_b64url_decode(hs, hl, &hraw, &hraw_len) != KM_OK ||
	    (pl > 0 && km_b64url_decode(ps, pl, &out->payload,
	    &out->payload_len) != KM_OK) ||
	    km_b64url_decode(ss, sl, &out->sig, &out->sig_len) != KM_OK) {
		r = jws_fail(why, whylen, KM_ERR_INVALID_REQUEST,
		    "a JWS segment is not canonical base64url");
		goto out;
	}
	if (out->payload_len > SIG_MAX_INPUT) {
		r = jws_fail(why, whylen, KM_ERR_TOO_LARGE,
		    "the JWS payload is over 64 KiB");
		goto out;
	}
	out->header = json_loadb((const char *)hraw, hraw_len,
	    JSON_REJECT_DUPLICATES, &jerr);
	if (out->header == NULL || !json_is_object(out->header)) {
		r = jws_fail(why, whylen, KM_ERR_INVALID_REQUEST,
		    "the JWS protected header is not a JSON object");
		goto out;
	}
	alg = json_object_get(out->header, "alg");
	kid = json_object_get(out->header, "kid");
	if (!json_is_string(alg) || !json_is_string(kid)) {
		r = jws_fail(why, whylen, KM_ERR_INVALID_REQUEST,
		    "the JWS protected header needs string members alg and kid");
		goto out;
	}
	/* RFC 7515 section 4.1.11: a JWS naming a critical extension the
	 * recipient does not understand is invalid; kmsd understands none. */
	if (json_object_get(out->header, "crit") != NULL) {
		r = jws_fail(why, whylen, KM_ERR_INVALID_REQUEST,
		    "the JWS names critical extensions (crit); none are supported");
		goto out;
	}
	/* RFC 7797 would change the signing input. */
	if (json_object_get(out->header, "b64") != NULL) {
		r = jws_fail(why, whylen, KM_ERR_INVALID_REQUEST,
		    "unencoded payloads (b64) are not supported");
		goto out;
	}
	out->alg = json_string_value(alg);
	out->kid = json_string_value(kid);
	out->signing_input_len = (size_t)(d2 - text);
	r = KM_OK;
out:
	km_secure_free(hraw, hraw_len);
	if (r != KM_OK)
		sig_jws_clear(out);
	return r;
}

void
sig_jws_clear(struct sig_jws *j)
{
	if (j == NULL)
		return;
	json_decref(j->header);
	km_secure_free(j->payload, j->payload_len);
	free(j->sig);
	memset(j, 0, sizeof(*j));
}
