/* Signatures outside the token: JOSE algorithm names per key type, the two
 * ECDSA signature forms, verification with OpenSSL against a stored public
 * key, and the pieces of a JWS compact serialization (RFC 7515). */
#ifndef SIG_H
#define SIG_H

#include <stddef.h>

#include <jansson.h>

#include "hsm.h"
#include "km.h"

/* Largest message kmsd signs or verifies ("input", the JWS payload). */
#define SIG_MAX_INPUT (64u << 10)
/* Largest compact JWS /verify takes: a SIG_MAX_INPUT payload in base64url,
 * a protected header and an RSA-4096 signature, with room to spare. */
#define SIG_MAX_JWS (96u << 10)
/* Largest protected header, serialized. */
#define SIG_MAX_HEADER 4096

/* "ES256", "RS256", "PS256", "EdDSA". */
const char *sig_alg_name(enum hsm_sig_alg alg);
/* KM_ERR_INVALID_REQUEST for any other name (case matters, as in JOSE). */
int sig_alg_parse(const char *name, enum hsm_sig_alg *out) KM_WUR;
/* The algorithms a key type ("ec-p256", ...) signs with, the default
 * first; returns how many (0 for a type that does not sign). */
size_t sig_algs_of_type(const char *type, enum hsm_sig_alg out[2]);
/* 1 when `alg` is one of sig_algs_of_type(type). */
int sig_alg_allowed(const char *type, enum hsm_sig_alg alg);

/* ECDSA P-256: raw r || s (the JWS form, RFC 7518 section 3.4) to DER
 * ECDSA-Sig-Value (the form of `openssl dgst`, X.509, most libraries).
 * *der (free()) holds *der_len bytes. */
int sig_ecdsa_raw_to_der(const unsigned char raw[64], unsigned char **der,
    size_t *der_len) KM_WUR;
/* DER to raw r || s; KM_ERR_INVALID_REQUEST unless `der` is exactly one
 * DER ECDSA-Sig-Value with r and s that fit 32 bytes. */
int sig_ecdsa_der_to_raw(const unsigned char *der, size_t der_len,
    unsigned char raw[64]) KM_WUR;

/* Verifies `sig` over `msg` against DER SubjectPublicKeyInfo `spki` with
 * OpenSSL: no token involved. `sig` is in the JOSE form (ES256: raw
 * r || s). With `prehashed`, `msg` is the 32-byte SHA-256 digest (not for
 * EdDSA). PS256 wants a 32-byte salt (RFC 7518 section 3.5). *valid is 1
 * or 0; an error return means the inputs could not be checked at all
 * (KM_ERR_INVALID_REQUEST: the key does not fit the algorithm). */
int sig_verify(const unsigned char *spki, size_t spki_len, enum hsm_sig_alg alg,
    int prehashed, const unsigned char *msg, size_t msg_len,
    const unsigned char *sig, size_t sig_len, int *valid) KM_WUR;

/* "<base64url(JSON of header)>.<base64url(payload)>": the JWS signing
 * input. *out (free()) is NUL-terminated. */
int sig_jws_signing_input(const json_t *header, const unsigned char *payload,
    size_t payload_len, char **out) KM_WUR;

/* A parsed compact JWS. */
struct sig_jws {
	json_t *header;			/* the protected header (owned) */
	const char *alg;		/* borrowed from header */
	const char *kid;		/* borrowed from header */
	unsigned char *payload;		/* owned */
	size_t payload_len;
	unsigned char *sig;		/* owned */
	size_t sig_len;
	size_t signing_input_len;	/* bytes of "<header>.<payload>" */
};

/* Parses a compact JWS: three base64url segments (no padding, no other
 * bytes), a protected header that is a JSON object without duplicate
 * members holding string "alg" and "kid", no "crit" (kmsd understands no
 * extension) and no "b64" (RFC 7797). On failure `why` says what was wrong,
 * *out is left cleared and KM_ERR_INVALID_REQUEST (or KM_ERR_TOO_LARGE over
 * SIG_MAX_JWS) is returned; sig_jws_clear is safe either way. */
int sig_jws_parse(const char *text, size_t len, struct sig_jws *out,
    char *why, size_t whylen) KM_WUR;
void sig_jws_clear(struct sig_jws *j);

#endif
