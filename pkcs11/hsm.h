/* The only door to the PKCS#11 token: module loading through p11-kit, a
 * session pool, login, MEK and named-key generation (AES keys and signing
 * key pairs), key wrapping under the MEK, a bounded cache of unwrapped keys,
 * AES-256-GCM, signing and the token RNG. No caller ever sees plaintext
 * bytes of the MEK or of a named key. */
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
	HSM_KEY_AES256 = 1,	/* "aes256-gcm" */
	HSM_KEY_EC_P256,	/* "ec-p256": ECDSA P-256 (ES256) */
	HSM_KEY_RSA2048,	/* "rsa-2048": RSA, e = 65537 (RS256, PS256) */
	HSM_KEY_RSA3072,	/* "rsa-3072" */
	HSM_KEY_ED25519,	/* "ed25519": EdDSA through CKM_EDDSA */
};

/* Signature algorithms (RFC 7518 names). */
enum hsm_sig_alg {
	HSM_SIG_ES256 = 1,	/* CKM_ECDSA over a SHA-256 digest; raw r || s */
	HSM_SIG_RS256,		/* CKM_RSA_PKCS over DigestInfo(SHA-256) */
	HSM_SIG_PS256,		/* CKM_RSA_PKCS_PSS, SHA-256, MGF1-SHA-256, salt 32 */
	HSM_SIG_EDDSA,		/* CKM_EDDSA (pure Ed25519) over the message */
};

/* Largest signature hsm_sign writes (RSA-4096). */
#define HSM_SIG_MAX 512

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

/* The km_err of a PKCS#11 return value (a CK_RV) other than CKR_OK:
 * KM_ERR_HSM_AUTH for a PIN that is wrong, expired or locked,
 * KM_ERR_NOMEM for CKR_HOST_MEMORY, else KM_ERR_HSM. Also used by
 * officer_sign.c for an officer's own token. */
int hsm_rv_error(unsigned long rv);
/* KM_OK while the token answers and the session is logged in. */
int hsm_ping(struct hsm *h) KM_WUR;

/* Creates MEK version `version` as a token object labelled kms-mek-v<N>:
 * AES-256, CKA_SENSITIVE, not extractable, wrap/unwrap only.
 * KM_ERR_KEY_EXISTS when that label exists already. */
int hsm_mek_create(struct hsm *h, uint32_t version) KM_WUR;
/* KM_OK if MEK version `version` is in the token, KM_ERR_NOT_FOUND if not. */
int hsm_mek_find(struct hsm *h, uint32_t version) KM_WUR;

/* The key type of a store type name ("aes256-gcm", "ec-p256", "rsa-2048",
 * "rsa-3072", "ed25519"); KM_ERR_UNSUPPORTED_KEY_TYPE for anything else.
 * MEK rotation uses it to pick the template for hsm_key_rewrap. */
int hsm_key_type_parse(const char *name, enum hsm_key_type *out) KM_WUR;
/* 1 for the signing types (key pairs), 0 for AES. */
int hsm_key_type_is_pair(enum hsm_key_type type);
/* KM_OK when the token has every mechanism `type` needs (generation and
 * use); KM_ERR_UNSUPPORTED_KEY_TYPE naming the missing one in the log when
 * it does not (a token without CKM_EDDSA cannot hold ed25519 keys). */
int hsm_key_type_supported(struct hsm *h, enum hsm_key_type type) KM_WUR;

/* A new named-key version as hsm_key_create made it. */
struct hsm_new_key {
	unsigned char *wrapped;		/* under the MEK; NULL when on_token */
	size_t wrapped_len;
	unsigned char *public_key;	/* DER SubjectPublicKeyInfo; NULL for AES */
	size_t public_key_len;
	int on_token;			/* 1: the private key is a token object */
};

/* Generates a named-key version of `type` inside the token.
 * AES keys and the private keys the token agrees to wrap are made as
 * temporary extractable session objects, wrapped under MEK `mek_version`
 * with CKM_AES_KEY_WRAP_PAD and destroyed in the same call. A private key
 * the token refuses to wrap (CKR_KEY_NOT_WRAPPABLE: Ed25519 on SoftHSM 2.6)
 * is made again as a token object labelled `token_label`: sensitive, never
 * extractable, sign only, with CKA_ID = SHA-256 of its public key. That
 * CKA_ID is how kmsd finds the object again; the label is for people
 * (kms-<key>-v<N>, see hsm_version_label) and may be provisional, when the
 * version number is not known yet: hsm_key_acquire_token and
 * hsm_token_key_label set the final one. Without a `token_label` an
 * unwrappable type fails with KM_ERR_UNSUPPORTED_KEY_TYPE. The token's
 * refusal is remembered, so later versions of that type go to the token at
 * once.
 * *out is cleared on entry; release it with hsm_new_key_clear. */
int hsm_key_create(struct hsm *h, enum hsm_key_type type, uint32_t mek_version,
    const char *token_label, struct hsm_new_key *out) KM_WUR;
void hsm_new_key_clear(struct hsm_new_key *k);

/* hsm_key_create for keys that end up wrapped, without the public key: the
 * secret wrapped under MEK `mek_version` with CKM_AES_KEY_WRAP_PAD.
 * *wrapped is owned by the caller (free()). */
int hsm_key_generate(struct hsm *h, enum hsm_key_type type,
    uint32_t mek_version, unsigned char **wrapped, size_t *wrapped_len) KM_WUR;

/* The token label of version `version` of named key `key` when it is kept
 * on the token: "kms-<key>-v<N>" (DESIGN.md section 2). */
#define HSM_LABEL_MAX 160
void hsm_version_label(const char *key, uint32_t version, char *out,
    size_t outlen);

/* Sets the label of the token object of a version kept on the token (found
 * by its public key). KM_ERR_NOT_FOUND when absent. */
int hsm_token_key_label(struct hsm *h, const char *label,
    const unsigned char *public_key, size_t public_key_len) KM_WUR;
/* Destroys the token object of a version kept on the token (found by the
 * public key it was created with), for the destroy ceremony and for a
 * version whose store commit failed. KM_ERR_NOT_FOUND when absent. A
 * handle still cached for it fails on its next use. */
int hsm_token_key_destroy(struct hsm *h, const unsigned char *public_key,
    size_t public_key_len) KM_WUR;

/* MEK rotation, inside the token: unwraps `wrapped` (under `old_mek`) into
 * a temporary extractable session object of `type`, wraps it under
 * `new_mek` and destroys the temporary. *out (free()) is the new wrapped
 * blob. Versions kept on the token (hsm_new_key.on_token) have no blob and
 * are not rewrapped: KM_ERR_UNSUPPORTED_KEY_TYPE for ed25519. */
int hsm_key_rewrap(struct hsm *h, enum hsm_key_type type, uint32_t old_mek,
    uint32_t new_mek, const unsigned char *wrapped, size_t wrapped_len,
    unsigned char **out, size_t *out_len) KM_WUR;
/* Turns off CKA_WRAP and CKA_UNWRAP of MEK `version`, so nothing can be
 * unwrapped under it any more (the object stays, for a restore from a
 * backup token). KM_ERR_NOT_FOUND when absent. */
int hsm_mek_disable(struct hsm *h, uint32_t version) KM_WUR;

/* Returns a reference to the unwrapped key for cache identity `cache_id`
 * (key id + version), unwrapping `wrapped` under `mek_version` into a
 * session object when it is not cached: sensitive, not extractable, able
 * only to encrypt/decrypt (AES) or to sign (private keys). Release with
 * hsm_key_release. */
int hsm_key_acquire(struct hsm *h, const char *cache_id, enum hsm_key_type type,
    uint32_t mek_version, const unsigned char *wrapped, size_t wrapped_len,
    struct hsm_key **out) KM_WUR;
/* The same for a version kept on the token: finds the private key object
 * whose CKA_ID is SHA-256(`public_key`), gives it the label `label` if it
 * has another, and caches its handle (the object itself is never destroyed
 * by the cache). KM_ERR_NOT_FOUND when the token has no such object. */
int hsm_key_acquire_token(struct hsm *h, const char *cache_id,
    const char *label, const unsigned char *public_key, size_t public_key_len,
    struct hsm_key **out) KM_WUR;
void hsm_key_release(struct hsm *h, struct hsm_key *k);
/* The cache identity of version `version` of the key with store id
 * `key_id`, as every caller of hsm_key_acquire* names it. */
#define HSM_CACHE_ID_MAX 48
void hsm_cache_id(int64_t key_id, uint32_t version, char *out, size_t outlen);
/* Takes `cache_id` out of the cache at once (a version revoked, archived
 * or destroyed): its session object is destroyed now, or when the last
 * reference held by a request in flight is released; no new request finds
 * it. 1 when it was cached, 0 when not. */
int hsm_key_evict(struct hsm *h, const char *cache_id);
/* Number of keys in the cache (for tests and metrics). */
size_t hsm_key_cache_count(struct hsm *h);
/* Sessions of the pool held by callers now, and the pool size (metrics). */
void hsm_pool_stats(struct hsm *h, size_t *in_use, size_t *size);

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

/* Signs with private key `k`. For ES256, RS256 and PS256 `in` is the
 * 32-byte SHA-256 digest of the message (hashing is done by the caller);
 * for EdDSA it is the whole message. `sig` receives *siglen bytes: r || s
 * (64) for ES256, the RSA signature (modulus length) or the 64-byte
 * Ed25519 signature. KM_ERR_INVALID_REQUEST when `in` has the wrong length
 * for `alg`. */
int hsm_sign(struct hsm *h, struct hsm_key *k, enum hsm_sig_alg alg,
    const unsigned char *in, size_t inlen, unsigned char sig[HSM_SIG_MAX],
    size_t *siglen) KM_WUR;

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

/* BYOK (docs/CEREMONIES.md, key.import). The import key is an RSA-3072
 * key pair of token objects labelled `label` (kms-import-v<N>): the
 * private half sensitive, never extractable, able only to unwrap; the
 * public half readable. KM_ERR_KEY_EXISTS when the label is taken.
 * Creations are serialised, so two callers never make two pairs. */
int hsm_import_key_create(struct hsm *h, const char *label) KM_WUR;
/* The public half of import key `label` as DER SubjectPublicKeyInfo.
 * *der is owned by the caller (free()). KM_ERR_NOT_FOUND when absent. */
int hsm_import_key_public(struct hsm *h, const char *label,
    unsigned char **der, size_t *der_len) KM_WUR;

/* The OAEP digests of an import (the same hash for MGF1, no label). */
enum hsm_oaep_hash {
	HSM_OAEP_SHA256 = 1,	/* "sha256": the one to use where supported */
	HSM_OAEP_SHA1,		/* "sha1": SoftHSM 2.6 accepts only this one */
};
/* "sha256" / "sha1" -> enum; KM_ERR_INVALID_REQUEST for anything else. */
int hsm_oaep_hash_parse(const char *name, enum hsm_oaep_hash *out) KM_WUR;
const char *hsm_oaep_hash_name(enum hsm_oaep_hash hash);
/* 1 when the token takes CKM_RSA_PKCS_OAEP with `hash` for C_UnwrapKey
 * under import key `label` (asked once with a dummy ciphertext: a token
 * that refuses the parameters says so before it decrypts), else 0. */
int hsm_import_oaep_supported(struct hsm *h, const char *label,
    enum hsm_oaep_hash hash);
/* Unwraps `wrapped` (RSAES-OAEP under import key `import_label`, with
 * `hash`) into a temporary extractable session object of `type` (only
 * HSM_KEY_AES256: a 32-byte key, CKA_VALUE_LEN checked), wraps it under
 * MEK `mek_version` with CKM_AES_KEY_WRAP_PAD exactly as hsm_key_create
 * stores a new version, and destroys the temporary on every path. *out
 * (free()) is the blob. KM_ERR_INVALID_CIPHERTEXT when the token cannot
 * unwrap the bytes or they hold no 32-byte key; KM_ERR_INVALID_REQUEST
 * when the token does not take `hash`; KM_ERR_NOT_FOUND without the
 * import key. */
int hsm_key_import(struct hsm *h, enum hsm_key_type type,
    const char *import_label, enum hsm_oaep_hash hash,
    const unsigned char *wrapped, size_t wrapped_len, uint32_t mek_version,
    unsigned char **out, size_t *out_len) KM_WUR;

/* Random bytes from the token's generator (C_GenerateRandom). */
int hsm_random(struct hsm *h, unsigned char *out, size_t len) KM_WUR;

#endif
