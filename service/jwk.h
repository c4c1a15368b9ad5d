/* Public keys as JWK (RFC 7517) with RFC 7638 thumbprints, and as PEM. */
#ifndef JWK_H
#define JWK_H

#include <stddef.h>

#include <jansson.h>

#include "km.h"

/* Builds the public JWK of a DER SubjectPublicKeyInfo (EC P-256, RSA or
 * Ed25519 as an RFC 8037 OKP key) and its RFC 7638 SHA-256 thumbprint
 * (base64url, 43 chars) in `kid`.
 * *jwk holds only the required members plus "kid"; the caller decrefs. */
int jwk_from_spki(const unsigned char *der, size_t der_len, json_t **jwk,
    char kid[44]) KM_WUR;
/* Only the kid of jwk_from_spki, remembered for the last few hundred
 * keys: decoding the DER costs 1.7M instructions with OpenSSL 3, two
 * thirds of an ES256 sign request. */
int jwk_kid(const unsigned char *der, size_t der_len, char kid[44]) KM_WUR;
/* PEM text of a DER SubjectPublicKeyInfo; *pem is owned by the caller. */
int jwk_spki_pem(const unsigned char *der, size_t der_len, char **pem) KM_WUR;

#endif
