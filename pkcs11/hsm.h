/* The only door to the PKCS#11 token: module loading through p11-kit, a
 * session pool, login, MEK and named-key generation, key wrapping under the
 * MEK, a bounded cache of unwrapped keys, AES-256-GCM and the token RNG.
 * No caller ever sees plaintext bytes of the MEK or of a named key. */
#ifndef HSM_H
#define HSM_H

#include <stddef.h>
#include <stdint.h>

#include "km.h"

struct hsm;
struct hsm_key;

struct hsm_config {
	const char *module;	/* p11-kit module name, or a path containing '/' */
	const char *token_uri;	/* PKCS#11 URI; the first matching token is used */
	const char *pin;	/* user PIN; not kept after login */
	size_t pin_len;
	size_t sessions;	/* size of the session pool (>= 1) */
	size_t key_cache;	/* unwrapped key versions kept as session objects */
};

enum hsm_key_type {
	HSM_KEY_AES256 = 1,
};

#define HSM_GCM_IV_LEN 12
#define HSM_GCM_TAG_LEN 16

/* Loads the module, finds the token, opens the pool and logs in.
 * KM_ERR_HSM_AUTH for a wrong PIN, KM_ERR_HSM for everything else. */
int hsm_open(const struct hsm_config *cfg, struct hsm **out) KM_WUR;
/* Initialises the first uninitialised slot of `module` as a token named
 * `label` with the given SO and user PINs (C_InitToken, C_InitPIN). For
 * SoftHSM and test tokens. KM_ERR_KEY_EXISTS if a token with that label is
 * present already. */
int hsm_token_init(const char *module, const char *label, const char *so_pin,
    const char *user_pin) KM_WUR;
/* The token label a PKCS#11 URI asks for ("pkcs11:token=kmsd" -> "kmsd");
 * KM_ERR_CONFIG when the URI names no token label. */
int hsm_uri_token_label(const char *uri, char label[33]) KM_WUR;
/* Destroys cached session objects, logs out, finalizes. NULL is a no-op. */
void hsm_free(struct hsm *h);
/* KM_OK while the token answers and the session is logged in. */
int hsm_ping(struct hsm *h) KM_WUR;

/* Creates MEK version `version` as a token object labelled kms-mek-v<N>:
 * AES-256, CKA_SENSITIVE, not extractable, wrap/unwrap only.
 * KM_ERR_KEY_EXISTS when that label exists already. */
int hsm_mek_create(struct hsm *h, uint32_t version) KM_WUR;
/* KM_OK if MEK version `version` is in the token, KM_ERR_NOT_FOUND if not. */
int hsm_mek_find(struct hsm *h, uint32_t version) KM_WUR;

/* Generates a named-key secret inside the token and returns it wrapped
 * under MEK `mek_version` with CKM_AES_KEY_WRAP_PAD. *wrapped is owned by
 * the caller (free()). */
int hsm_key_generate(struct hsm *h, enum hsm_key_type type,
    uint32_t mek_version, unsigned char **wrapped, size_t *wrapped_len) KM_WUR;

/* MEK rotation, inside the token: unwraps `wrapped` (under `old_mek`) into
 * a temporary extractable session object, wraps it under `new_mek` and
 * destroys the temporary. *out (free()) is the new wrapped blob. */
int hsm_key_rewrap(struct hsm *h, enum hsm_key_type type, uint32_t old_mek,
    uint32_t new_mek, const unsigned char *wrapped, size_t wrapped_len,
    unsigned char **out, size_t *out_len) KM_WUR;
/* Turns off CKA_WRAP and CKA_UNWRAP of MEK `version`, so nothing can be
 * unwrapped under it any more (the object stays, for a restore from a
 * backup token). KM_ERR_NOT_FOUND when absent. */
int hsm_mek_disable(struct hsm *h, uint32_t version) KM_WUR;

/* Returns a reference to the unwrapped key for cache identity `cache_id`
 * (key id + version), unwrapping `wrapped` under `mek_version` into a
 * session object when it is not cached. Release with hsm_key_release. */
int hsm_key_acquire(struct hsm *h, const char *cache_id, enum hsm_key_type type,
    uint32_t mek_version, const unsigned char *wrapped, size_t wrapped_len,
    struct hsm_key **out) KM_WUR;
void hsm_key_release(struct hsm *h, struct hsm_key *k);
/* Number of keys in the cache (for tests and metrics). */
size_t hsm_key_cache_count(struct hsm *h);

/* Reads CKA_SENSITIVE and CKA_EXTRACTABLE of a cached key or of an MEK. */
int hsm_key_flags(struct hsm *h, struct hsm_key *k, int *sensitive,
    int *extractable) KM_WUR;
int hsm_mek_flags(struct hsm *h, uint32_t version, int *sensitive,
    int *extractable) KM_WUR;

/* AES-256-GCM with a 12-byte IV and a 16-byte tag appended to `out`,
 * which has room for inlen + HSM_GCM_TAG_LEN bytes. */
int hsm_gcm_encrypt(struct hsm *h, struct hsm_key *k,
    const unsigned char iv[HSM_GCM_IV_LEN], const unsigned char *aad,
    size_t aadlen, const unsigned char *in, size_t inlen, unsigned char *out)
    KM_WUR;
/* `in` is ciphertext || tag; `out` has room for inlen bytes (tokens may
 * want the whole length before they check the tag); *outlen is the result.
 * KM_ERR_INVALID_CIPHERTEXT when authentication fails. */
int hsm_gcm_decrypt(struct hsm *h, struct hsm_key *k,
    const unsigned char iv[HSM_GCM_IV_LEN], const unsigned char *aad,
    size_t aadlen, const unsigned char *in, size_t inlen, unsigned char *out,
    size_t *outlen) KM_WUR;

/* Creates an ECDSA P-256 key pair as token objects labelled `label`: the
 * private half sensitive, not extractable, sign only. For the audit
 * checkpoint key. KM_ERR_KEY_EXISTS when the label is taken. */
int hsm_ec_create(struct hsm *h, const char *label) KM_WUR;
/* The public half of token key `label` as DER SubjectPublicKeyInfo.
 * *der is owned by the caller (free()). KM_ERR_NOT_FOUND when absent. */
int hsm_ec_public(struct hsm *h, const char *label, unsigned char **der,
    size_t *der_len) KM_WUR;
/* ECDSA over a 32-byte digest with token key `label`; `sig` receives the
 * raw r || s (64 bytes). */
int hsm_ec_sign(struct hsm *h, const char *label,
    const unsigned char digest[32], unsigned char sig[64]) KM_WUR;

/* Random bytes from the token's generator (C_GenerateRandom). */
int hsm_random(struct hsm *h, unsigned char *out, size_t len) KM_WUR;

#endif
