/* Officer signatures for the integration suites (see officers.h). */
#include "officers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "harness.h"

char *
ito_sign_with(const char *pem_path, const char *msg)
{
	unsigned char *der = NULL;
	EVP_MD_CTX *md = NULL;
	EVP_PKEY *pk = NULL;
	size_t len = 0;
	char *out = NULL;
	FILE *f;

	if ((f = fopen(pem_path, "r")) == NULL) {
		ith_fail("cannot open officer key %s", pem_path);
		return NULL;
	}
	pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (pk == NULL || (md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pk) != 1 ||
	    EVP_DigestSign(md, NULL, &len, (const unsigned char *)msg,
	    strlen(msg)) != 1 || (der = malloc(len)) == NULL ||
	    EVP_DigestSign(md, der, &len, (const unsigned char *)msg,
	    strlen(msg)) != 1)
		ith_fail("signing with %s failed", pem_path);
	else
		out = ith_b64(der, len);
	free(der);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pk);
	return out;
}

char *
ito_sign(const char *name, const char *msg)
{
	char path[4200];

	snprintf(path, sizeof(path), "%s/officers/%s.pem", ith_data_dir(), name);
	return ito_sign_with(path, msg);
}

json_t *
ito_revoke_body(const char *name, const char *key, long version,
    long ts_skew_s)
{
	unsigned char nb[16];
	char ts[40], nonce[33], msg[1024], *sig;
	time_t t = time(NULL) + ts_skew_s;
	struct tm tm;
	json_t *b;

	gmtime_r(&t, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	ith_random(nb, sizeof(nb));
	ith_hex(nb, sizeof(nb), nonce, 0);
	snprintf(msg, sizeof(msg), "kms-revoke/v1\nkey: %s\nversion: %ld\n"
	    "officer: %s\nts: %s\nnonce: %s\n", key, version, name, ts, nonce);
	if ((sig = ito_sign(name, msg)) == NULL)
		return NULL;
	b = json_pack("{s:s, s:s, s:s, s:s}", "officer", name, "ts", ts, "nonce",
	    nonce, "signature", sig);
	free(sig);
	return b;
}

json_t *
ito_revoke_at(const char *file, int line, const char *key, long version,
    const char *officer, const char *token, long expect, const char *code)
{
	char path[512];

	snprintf(path, sizeof(path), "/v1/keys/%s/versions/%ld/revoke", key,
	    version);
	return ith_call_at(file, line, "POST", path, token,
	    ito_revoke_body(officer, key, version, 0), expect, code);
}

json_t *
ito_decision(const char *name, const char *digest, const char *decision)
{
	char msg[256], *sig;
	json_t *b;

	snprintf(msg, sizeof(msg), "kms-approval/v1\n%s\n%s\n%s\n", digest, name,
	    decision);
	if ((sig = ito_sign(name, msg)) == NULL)
		return NULL;
	b = json_pack("{s:s, s:s, s:s}", "officer", name, "decision", decision,
	    "signature", sig);
	free(sig);
	return b;
}
