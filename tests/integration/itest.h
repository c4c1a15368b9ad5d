/* Shared fixture of the integration suites: one kmsd, a token per role,
 * and the suite registration functions. */
#ifndef ITEST_H
#define ITEST_H

#include <stddef.h>

#include <CUnit/CUnit.h>
#include <jansson.h>

#include "harness.h"

/* Tokens created once against the shared kmsd (NULL until then). */
struct it_tokens {
	const char *admin;	/* from <dir>/admin.token */
	char *app;		/* role app, keys "*" */
	char *matter;		/* role app, keys "matter-*" */
	char *auditor;
	char *officer;
};
extern struct it_tokens T;

/* 0 when the shared kmsd runs and the tokens exist: suite init functions. */
int it_ready(void);

/* "/v1/keys/<key>" or "/v1/keys/<key>/<op>"; a ring of static buffers. */
const char *it_kpath(const char *key, const char *op);
/* A fresh key name "<prefix>-<n>" created as aes256-gcm (with `extra`
 * members, stolen, may be NULL); returned in a ring of static buffers. */
const char *it_new_key(const char *prefix, json_t *extra);
/* {"<k>":"<v>"} */
json_t *it_ctx(const char *k, const char *v);

/* Data keys wrapped by the key-material test, scanned for again after the
 * clean stop of the restart test. */
#define IT_MAX_SECRETS 256
struct it_secret {
	unsigned char b[32];
	size_t len;
};
extern struct it_secret it_secrets[IT_MAX_SECRETS];
extern size_t it_n_secrets;
/* Scans every file under the data dir (except harness files) for each
 * secret's raw bytes, base64, base64url, and hex forms; records a failure
 * per hit. Returns the number of hits. */
size_t it_scan_data_dir(const char *file, int line, const char *when);

int it_register_api(void);
int it_register_lifecycle(void);
int it_register_authz(void);
int it_register_authz_matrix(void);
int it_register_malformed(void);
int it_register_concurrent(void);
int it_register_persist(void);
int it_register_signing(void);
int it_register_idempotency(void);

#endif
