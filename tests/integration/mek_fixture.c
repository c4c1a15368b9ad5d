/* Test fixture for the MEK rotation suite: writes KEYS x VERSIONS named-key
 * versions straight into a stopped kmsd's store and token (what thousands
 * of create/rotate requests would make, in seconds), and wraps one random
 * data key under every version, as kmsd would, listing them in OUT:
 *   <key> <version> <base64 plaintext> <ciphertext>
 * Not audited: a fixture, not a kmsd operation.
 *
 *   mek_fixture CONFIG PREFIX KEYS VERSIONS OUT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "blob.h"
#include "cfg.h"
#include "hsm.h"
#include "km.h"
#include "log.h"
#include "store.h"

static int
wrap_one(struct hsm *h, const struct store_key *k, const struct store_version *v,
    FILE *out)
{
	unsigned char pt[32], nonce[BLOB_NONCE_LEN], ct[32 + BLOB_TAG_LEN];
	struct km_buf aad = KM_BUF_INIT(4096);
	struct blob_context c;
	struct hsm_key *hk = NULL;
	char id[64], *blob = NULL, *b64 = NULL;
	int r;

	memset(&c, 0, sizeof(c));
	snprintf(id, sizeof(id), "%lld:%u", (long long)k->id, v->version);
	if ((r = km_random(pt, sizeof(pt))) != KM_OK ||
	    (r = km_random(nonce, sizeof(nonce))) != KM_OK ||
	    (r = hsm_key_acquire(h, id, HSM_KEY_AES256, v->mek_version, v->wrapped,
	    v->wrapped_len, &hk)) != KM_OK ||
	    (r = blob_aad(k->name, v->version, &c, &aad)) != KM_OK ||
	    (r = hsm_gcm_encrypt(h, hk, nonce, aad.data, aad.len, pt, sizeof(pt),
	    ct)) != KM_OK ||
	    (r = blob_format(v->version, nonce, ct, sizeof(ct), &blob)) != KM_OK ||
	    (r = km_b64_encode(pt, sizeof(pt), &b64)) != KM_OK)
		goto out;
	if (fprintf(out, "%s %u %s %s\n", k->name, v->version, b64, blob) < 0)
		r = KM_ERR_IO;
out:
	hsm_key_release(h, hk);
	km_buf_free(&aad);
	OPENSSL_cleanse(pt, sizeof(pt));
	free(blob);
	free(b64);
	return r;
}

int
main(int argc, char **argv)
{
	struct hsm_config hc = { 0 };
	struct store_key key;
	struct store_version *vs = NULL;
	struct store *st = NULL;
	struct hsm *h = NULL;
	struct cfg *c = NULL;
	char *pin = NULL;
	size_t pin_len = 0;
	long n_keys, n_versions, i, j;
	uint32_t mek;
	FILE *out = NULL;
	int r = 1, kr;

	if (argc != 6) {
		fprintf(stderr, "usage: mek_fixture CONFIG PREFIX KEYS VERSIONS OUT\n");
		return 2;
	}
	n_keys = strtol(argv[3], NULL, 10);
	n_versions = strtol(argv[4], NULL, 10);
	if (n_keys < 1 || n_versions < 1 || n_versions > 100000) {
		fprintf(stderr, "mek_fixture: bad KEYS or VERSIONS\n");
		return 2;
	}
	log_set_level(LOG_WARN);
	if (cfg_load(argv[1], &c) != KM_OK || cfg_read_pin(c, &pin, &pin_len) != KM_OK)
		goto out;
	hc.module = c->pkcs11_module;
	hc.token_uri = c->pkcs11_token;
	hc.pin = pin;
	hc.pin_len = pin_len;
	hc.sessions = 2;
	hc.key_cache = 64;
	if ((kr = hsm_open(&hc, &h)) != KM_OK || (kr = store_open(c->db_path,
	    &st)) != KM_OK || (kr = store_mek_current(st, &mek)) != KM_OK) {
		fprintf(stderr, "mek_fixture: %s\n", km_strerror(kr));
		goto out;
	}
	if ((out = fopen(argv[5], "w")) == NULL ||
	    (vs = calloc((size_t)n_versions, sizeof(*vs))) == NULL)
		goto out;
	for (i = 0; i < n_keys; i++) {
		memset(&key, 0, sizeof(key));
		snprintf(key.name, sizeof(key.name), "%s-%05ld", argv[2], i);
		snprintf(key.type, sizeof(key.type), "aes256-gcm");
		snprintf(key.purpose, sizeof(key.purpose), "encrypt");
		key.created_at = km_now_us();
		key.primary_version = (uint32_t)n_versions;
		for (j = 0; j < n_versions; j++) {
			vs[j].version = (uint32_t)j + 1;
			vs[j].state = j + 1 == n_versions ? KM_STATE_PRIMARY :
			    KM_STATE_ACTIVE;
			vs[j].created_at = key.created_at;
			vs[j].mek_version = mek;
			vs[j].storage = STORE_WRAPPED;
			if ((kr = hsm_key_generate(h, HSM_KEY_AES256, mek,
			    &vs[j].wrapped, &vs[j].wrapped_len)) != KM_OK) {
				fprintf(stderr, "mek_fixture: generate: %s\n",
				    km_strerror(kr));
				goto out;
			}
		}
		key.versions = vs;
		key.n_versions = (size_t)n_versions;
		if ((kr = store_key_create(st, &key, NULL, NULL)) != KM_OK) {
			fprintf(stderr, "mek_fixture: store %s: %s\n", key.name,
			    km_strerror(kr));
			goto out;
		}
		for (j = 0; j < n_versions; j++) {
			if ((kr = wrap_one(h, &key, &vs[j], out)) != KM_OK) {
				fprintf(stderr, "mek_fixture: wrap: %s\n", km_strerror(kr));
				goto out;
			}
			km_secure_free(vs[j].wrapped, vs[j].wrapped_len);
			vs[j].wrapped = NULL;
		}
	}
	if (fclose(out) != 0) {
		out = NULL;
		goto out;
	}
	out = NULL;
	r = 0;
out:
	if (out != NULL)
		fclose(out);
	for (j = 0; vs != NULL && j < n_versions; j++)
		km_secure_free(vs[j].wrapped, vs[j].wrapped_len);
	free(vs);
	store_free(st);
	hsm_free(h);
	km_secure_free(pin, pin_len);
	cfg_free(c);
	return r;
}
