/* Officer signatures for the integration suites: the harness registers
 * alice, bob and carol (quorum 2) at init with keys in
 * <data dir>/officers/<name>.pem; these helpers sign with them. */
#ifndef OFFICERS_H
#define OFFICERS_H

#include <jansson.h>

/* Base64 DER ECDSA P-256/SHA-256 signature by officer `name` over `msg`
 * (or by the PEM private key at `pem_path` when it is not NULL); NULL
 * after recording a failure. Caller frees. */
char *ito_sign(const char *name, const char *msg);
char *ito_sign_with(const char *pem_path, const char *msg);

/* The body of the signed revoke of `key` v`version` by officer `name`,
 * with ts = now + `ts_skew_s` and a fresh nonce. */
json_t *ito_revoke_body(const char *name, const char *key, long version,
    long ts_skew_s);

/* POST /v1/keys/<key>/versions/<v>/revoke signed by `officer`, sent with
 * `token`; records a failure unless the status is `expect` (and, when
 * `code` is not NULL, error.code is `code`). Returns the answer or NULL. */
json_t *ito_revoke_at(const char *file, int line, const char *key,
    long version, const char *officer, const char *token, long expect,
    const char *code);
#define ito_revoke(...) ito_revoke_at(__FILE__, __LINE__, __VA_ARGS__)

/* An approval body {officer, decision, signature} over `digest`. */
json_t *ito_decision(const char *name, const char *digest,
    const char *decision);

#endif
