/* The wrapped-DEK format: "kms:v<version>:<base64(nonce || ct || tag)>",
 * and the AES-GCM additional data that binds a blob to its key name, key
 * version and canonical context (docs/FORMATS.md). Pure functions. */
#ifndef BLOB_H
#define BLOB_H

#include <stddef.h>
#include <stdint.h>

#include "km.h"

#define BLOB_NONCE_LEN 12
#define BLOB_TAG_LEN 16
#define BLOB_MAX_PLAINTEXT 4096
#define BLOB_MAX_CONTEXT_PAIRS 16
#define BLOB_MAX_CONTEXT_BYTES 256
/* The largest AAD blob_aad makes: prefix, a 128-byte key name, version,
 * count and 16 pairs at the 256-byte limits. */
#define BLOB_MAX_AAD (10 + 4 + 128 + 4 + 4 + \
    BLOB_MAX_CONTEXT_PAIRS * (8 + 2 * BLOB_MAX_CONTEXT_BYTES))

struct blob_pair {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
};

/* A context: borrowed pairs, sorted by blob_context_sort. */
struct blob_context {
	struct blob_pair pairs[BLOB_MAX_CONTEXT_PAIRS];
	size_t n;
};

/* Adds one pair, checking the limits of DESIGN.md section 4 (names
 * 1..256 bytes, values 0..256 bytes, at most 16 pairs, no repeated name).
 * KM_ERR_INVALID_REQUEST otherwise. */
int blob_context_add(struct blob_context *c, const char *name, size_t name_len,
    const char *value, size_t value_len) KM_WUR;
/* Sorts the pairs by name, bytewise; shorter first on a common prefix. */
void blob_context_sort(struct blob_context *c);
/* 1 when every name in `names` is present in `c`; else 0 and *missing
 * points at the first absent name. */
int blob_context_has(const struct blob_context *c, char *const *names,
    size_t n_names, const char **missing);

/* Appends the AAD for (key name, version, sorted context) to `out`:
 * "kms-aad/v1" || u32be(len name) || name || u32be(version) || u32be(n)
 * || for each pair: u32be(len name) || name || u32be(len value) || value */
int blob_aad(const char *key_name, uint32_t version,
    const struct blob_context *c, struct km_buf *out) KM_WUR;

/* Formats "kms:v<version>:" + base64(nonce || sealed). *out is owned by the
 * caller. */
int blob_format(uint32_t version, const unsigned char nonce[BLOB_NONCE_LEN],
    const unsigned char *sealed, size_t sealed_len, char **out) KM_WUR;
/* Parses a blob. On success *raw (free with km_secure_free(*raw, *raw_len))
 * holds nonce || ct || tag, at least nonce + 1 + tag bytes and at most
 * nonce + 4096 + tag. KM_ERR_INVALID_CIPHERTEXT for anything malformed. */
int blob_parse(const char *s, size_t len, uint32_t *version,
    unsigned char **raw, size_t *raw_len) KM_WUR;

#endif
