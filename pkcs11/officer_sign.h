/* An officer's own PKCS#11 token (a smartcard, a USB token, a SoftHSM
 * token) for kmsctl: make an ECDSA P-256 key pair on it, read its public
 * key, sign with it. Kept apart from pkcs11/hsm.c, kmsd's token: this one
 * is the officer's and is opened only for one signature. */
#ifndef OFFICER_SIGN_H
#define OFFICER_SIGN_H

#include <stddef.h>

#include "km.h"

/* Where the key is: `module` is a p11-kit module name ("softhsm2") or a
 * module path, or NULL to take the URI's module-path= or module-name=;
 * `uri` a PKCS#11 URI naming the token and the key
 * ("pkcs11:token=alice-card;object=alice"); `pin` the user PIN, or NULL
 * when the URI carries pin-value (or the token needs no login). */
struct osign_key {
	const char *module;
	const char *uri;
	const char *pin;
};

/* ECDSA (CKM_ECDSA) over a 32-byte digest with the private key the URI
 * names (exactly one must match); `sig` receives r || s. KM_ERR_HSM_AUTH
 * for a wrong PIN, KM_ERR_NOT_FOUND when no key (or more than one)
 * matches, KM_ERR_HSM otherwise; the token's reason is logged. */
int osign_sign(const struct osign_key *k, const unsigned char digest[32],
    unsigned char sig[64]) KM_WUR;
/* The DER SubjectPublicKeyInfo of the key pair the URI names (from its
 * public-key object); *spki is owned by the caller (free()). */
int osign_public(const struct osign_key *k, unsigned char **spki,
    size_t *spki_len) KM_WUR;
/* Generates an ECDSA P-256 key pair on the token, labelled with the URI's
 * object= value: the private half sensitive, never extractable, sign
 * only. KM_ERR_KEY_EXISTS when a private key with that label exists. */
int osign_keygen(const struct osign_key *k) KM_WUR;

#endif
