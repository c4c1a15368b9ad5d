/* Bearer-token authentication: tokens are stored as SHA-256 hashes and
 * compared in constant time. */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "store.h"

static const struct {
	enum api_role role;
	const char *name;
} role_names[] = {
	{ ROLE_ADMIN, "admin" },
	{ ROLE_APP, "app" },
	{ ROLE_AUDITOR, "auditor" },
	{ ROLE_OFFICER, "officer" },
};

const char *
api_role_name(enum api_role r)
{
	size_t i;

	for (i = 0; i < sizeof(role_names) / sizeof(role_names[0]); i++)
		if (role_names[i].role == r)
			return role_names[i].name;
	return "none";
}

int
api_role_parse(const char *s, enum api_role *out)
{
	size_t i;

	for (i = 0; i < sizeof(role_names) / sizeof(role_names[0]); i++) {
		if (strcmp(role_names[i].name, s) == 0) {
			*out = role_names[i].role;
			return KM_OK;
		}
	}
	return KM_ERR_INVALID_REQUEST;
}

void
api_principal_clear(struct api_principal *who)
{
	free(who->keys);
	who->keys = NULL;
	who->authenticated = 0;
}

/* Splits "kms.<16 hex>.<64 hex>" into id and secret bytes. */
static int
token_split(const char *tok, char id[17], unsigned char secret[32])
{
	size_t i;

	if (strlen(tok) != 4 + 16 + 1 + 64 || strncmp(tok, "kms.", 4) != 0 ||
	    tok[20] != '.')
		return KM_ERR_UNAUTHENTICATED;
	for (i = 0; i < 16; i++) {
		char c = tok[4 + i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return KM_ERR_UNAUTHENTICATED;
		id[i] = c;
	}
	id[16] = '\0';
	if (km_unhex(tok + 21, secret, 32) != KM_OK)
		return KM_ERR_UNAUTHENTICATED;
	return KM_OK;
}

/* Resolves token `id` into rq->who. `digest` is the SHA-256 of the bearer
 * secret, or NULL when a verified client certificate vouches for the id. */
static int
principal_from_token(struct api_req *rq, const char *id,
    const unsigned char *digest)
{
	struct store_token *t = NULL;
	int r;

	if ((r = store_token_get(rq->ctx->store, id, &t)) != KM_OK) {
		r = r == KM_ERR_TOKEN_NOT_FOUND ? KM_ERR_UNAUTHENTICATED : r;
		goto out;
	}
	/* Constant time, so response timing says nothing about the hash. */
	if ((digest != NULL &&
	    CRYPTO_memcmp(digest, t->hash, SHA256_DIGEST_LENGTH) != 0) ||
	    t->revoked_at != 0 ||
	    (t->expires_at != 0 && t->expires_at <= km_now_us()) ||
	    api_role_parse(t->role, &rq->who.role) != KM_OK) {
		r = KM_ERR_UNAUTHENTICATED;
		goto out;
	}
	if (t->keys != NULL && (rq->who.keys = strdup(t->keys)) == NULL) {
		r = KM_ERR_NOMEM;
		goto out;
	}
	snprintf(rq->who.token_id, sizeof(rq->who.token_id), "%s", id);
	snprintf(rq->who.actor, sizeof(rq->who.actor), "token:%s", id);
	rq->who.authenticated = 1;
	r = KM_OK;
out:
	store_token_free(t);
	return r;
}

int
api_authenticate(struct api_req *rq)
{
	unsigned char secret[32], digest[SHA256_DIGEST_LENGTH];
	const char *h = rq->auth_header;
	char id[17];
	int r;

	api_principal_clear(&rq->who);
	if (h == NULL && rq->tls_token_id != NULL)
		return principal_from_token(rq, rq->tls_token_id, NULL);
	if (h == NULL || strncmp(h, "Bearer ", 7) != 0)
		return KM_ERR_UNAUTHENTICATED;
	if ((r = token_split(h + 7, id, secret)) != KM_OK)
		goto out;
	/* A bearer token and a client certificate must name one principal. */
	if (rq->tls_token_id != NULL && strcmp(id, rq->tls_token_id) != 0) {
		r = KM_ERR_UNAUTHENTICATED;
		goto out;
	}
	SHA256(secret, sizeof(secret), digest);
	r = principal_from_token(rq, id, digest);
out:
	OPENSSL_cleanse(secret, sizeof(secret));
	OPENSSL_cleanse(digest, sizeof(digest));
	return r;
}

int
api_token_mint(struct store_token *t, char out[96])
{
	unsigned char id_bytes[8], secret[32];
	char secret_hex[65];
	int r = KM_ERR_INTERNAL;

	if (km_random(id_bytes, sizeof(id_bytes)) != KM_OK ||
	    km_random(secret, sizeof(secret)) != KM_OK)
		goto out;
	km_hex(id_bytes, sizeof(id_bytes), t->id);
	SHA256(secret, sizeof(secret), t->hash);
	km_hex(secret, sizeof(secret), secret_hex);
	snprintf(out, 96, "kms.%s.%s", t->id, secret_hex);
	r = KM_OK;
out:
	OPENSSL_cleanse(secret, sizeof(secret));
	OPENSSL_cleanse(secret_hex, sizeof(secret_hex));
	return r;
}
