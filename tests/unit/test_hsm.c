/* Unit tests of pkcs11/hsm.c against a throwaway SoftHSM token. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "hsm.h"

#define MODULE "softhsm2"
#define LABEL "kms-unit"
#define USER_PIN "1234-user"

static char tmpdir[] = "/tmp/kms-hsm-XXXXXX";
static struct hsm *h;

static int
write_conf(void)
{
	char path[256], tokens[256];
	FILE *f;

	snprintf(tokens, sizeof(tokens), "%s/tokens", tmpdir);
	snprintf(path, sizeof(path), "%s/softhsm2.conf", tmpdir);
	if (mkdir(tokens, 0700) != 0)
		return -1;
	if ((f = fopen(path, "w")) == NULL)
		return -1;
	fprintf(f, "directories.tokendir = %s\nobjectstore.backend = file\n"
	    "log.level = ERROR\n", tokens);
	fclose(f);
	return setenv("SOFTHSM2_CONF", path, 1);
}

static int
open_hsm(const char *pin, size_t cache, struct hsm **out)
{
	struct hsm_config c = {
		.module = MODULE, .token_uri = "pkcs11:token=" LABEL,
		.pin = pin, .pin_len = strlen(pin), .sessions = 4,
		.key_cache = cache,
	};

	return hsm_open(&c, out);
}

static int
login_suite_init(void)
{
	if (mkdtemp(tmpdir) == NULL || write_conf() != 0)
		return -1;
	return hsm_token_init(MODULE, LABEL, "5678-so", USER_PIN) == KM_OK ? 0 : -1;
}

static int
suite_init(void)
{
	return open_hsm(USER_PIN, 2, &h) == KM_OK ? 0 : -1;
}

static int
suite_clean(void)
{
	char cmd[300];

	hsm_free(h);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void
test_token_init_twice(void)
{
	CU_ASSERT_EQUAL(hsm_token_init(MODULE, LABEL, "5678-so", USER_PIN),
	    KM_ERR_KEY_EXISTS);
}

static void
test_wrong_pin(void)
{
	struct hsm *bad = NULL;

	/* Runs before any good login: within one process PKCS#11 login
	 * state is shared, so a later wrong PIN would meet
	 * CKR_USER_ALREADY_LOGGED_IN. */
	CU_ASSERT_EQUAL(open_hsm("not-the-pin", 2, &bad), KM_ERR_HSM_AUTH);
	CU_ASSERT_PTR_NULL(bad);
	CU_ASSERT_EQUAL(open_hsm(USER_PIN, 2, &bad), KM_OK);
	CU_ASSERT_EQUAL(hsm_ping(bad), KM_OK);
	hsm_free(bad);
}

static void
test_uri_label(void)
{
	char label[33];

	CU_ASSERT_EQUAL(hsm_uri_token_label("pkcs11:token=kmsd", label), KM_OK);
	CU_ASSERT_STRING_EQUAL(label, "kmsd");
	CU_ASSERT_EQUAL(hsm_uri_token_label("pkcs11:model=x", label), KM_ERR_CONFIG);
}

static void
test_mek_attributes(void)
{
	int sens = 0, extr = 1;

	CU_ASSERT_EQUAL(hsm_mek_find(h, 1), KM_ERR_NOT_FOUND);
	CU_ASSERT_EQUAL_FATAL(hsm_mek_create(h, 1), KM_OK);
	CU_ASSERT_EQUAL(hsm_mek_create(h, 1), KM_ERR_KEY_EXISTS);
	CU_ASSERT_EQUAL(hsm_mek_find(h, 1), KM_OK);
	CU_ASSERT_EQUAL_FATAL(hsm_mek_flags(h, 1, &sens, &extr), KM_OK);
	CU_ASSERT_EQUAL(sens, 1);
	CU_ASSERT_EQUAL(extr, 0);
}

static void
test_named_key_attributes_and_gcm(void)
{
	static const unsigned char iv[12] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };
	static const unsigned char aad[] = "aad-bytes";
	unsigned char pt[100], ct[100 + 16], back[116];
	unsigned char *wrapped = NULL;
	size_t wlen = 0, backlen = 0;
	struct hsm_key *k = NULL;
	int sens = 0, extr = 1;

	memset(pt, 0xA5, sizeof(pt));
	CU_ASSERT_EQUAL_FATAL(hsm_key_generate(h, HSM_KEY_AES256, 1, &wrapped,
	    &wlen), KM_OK);
	/* RFC 5649: a 32-byte key wraps to 40 bytes. */
	CU_ASSERT_EQUAL(wlen, 40);
	CU_ASSERT_EQUAL_FATAL(hsm_key_acquire(h, "1:1", HSM_KEY_AES256, 1,
	    wrapped, wlen, &k), KM_OK);
	CU_ASSERT_EQUAL(hsm_key_flags(h, k, &sens, &extr), KM_OK);
	CU_ASSERT_EQUAL(sens, 1);
	CU_ASSERT_EQUAL(extr, 0);

	CU_ASSERT_EQUAL(hsm_gcm_encrypt(h, k, iv, aad, sizeof(aad), pt,
	    sizeof(pt), ct), KM_OK);
	CU_ASSERT_NOT_EQUAL(memcmp(ct, pt, sizeof(pt)), 0);
	CU_ASSERT_EQUAL(hsm_gcm_decrypt(h, k, iv, aad, sizeof(aad), ct,
	    sizeof(ct), back, &backlen), KM_OK);
	CU_ASSERT_EQUAL(backlen, sizeof(pt));
	CU_ASSERT_EQUAL(memcmp(back, pt, sizeof(pt)), 0);

	/* Wrong AAD, a flipped tag bit, a too-short input: all refused as
	 * bad ciphertext, never as a token failure. */
	CU_ASSERT_EQUAL(hsm_gcm_decrypt(h, k, iv, aad, sizeof(aad) - 1, ct,
	    sizeof(ct), back, &backlen), KM_ERR_INVALID_CIPHERTEXT);
	ct[sizeof(ct) - 1] ^= 1;
	CU_ASSERT_EQUAL(hsm_gcm_decrypt(h, k, iv, aad, sizeof(aad), ct,
	    sizeof(ct), back, &backlen), KM_ERR_INVALID_CIPHERTEXT);
	CU_ASSERT_EQUAL(hsm_gcm_decrypt(h, k, iv, aad, sizeof(aad), ct, 16,
	    back, &backlen), KM_ERR_INVALID_CIPHERTEXT);
	hsm_key_release(h, k);

	/* The same wrapped blob unwraps to the same key: a second cache
	 * identity decrypts what the first encrypted. */
	ct[sizeof(ct) - 1] ^= 1;
	CU_ASSERT_EQUAL_FATAL(hsm_key_acquire(h, "other-id", HSM_KEY_AES256, 1,
	    wrapped, wlen, &k), KM_OK);
	CU_ASSERT_EQUAL(hsm_gcm_decrypt(h, k, iv, aad, sizeof(aad), ct,
	    sizeof(ct), back, &backlen), KM_OK);
	hsm_key_release(h, k);
	free(wrapped);
}

static void
test_rewrap_under_new_mek_then_disable(void)
{
	static const unsigned char iv[12] = { 9 };
	unsigned char *w1 = NULL, *w2 = NULL, pt[16] = { 1, 2, 3 }, ct[32],
	    back[32];
	size_t l1 = 0, l2 = 0, blen = 0;
	struct hsm_key *k = NULL;

	CU_ASSERT_EQUAL_FATAL(hsm_key_generate(h, HSM_KEY_AES256, 1, &w1, &l1),
	    KM_OK);
	CU_ASSERT_EQUAL_FATAL(hsm_key_acquire(h, "rw:v1", HSM_KEY_AES256, 1, w1,
	    l1, &k), KM_OK);
	CU_ASSERT_EQUAL(hsm_gcm_encrypt(h, k, iv, NULL, 0, pt, sizeof(pt), ct),
	    KM_OK);
	hsm_key_release(h, k);

	CU_ASSERT_EQUAL_FATAL(hsm_mek_create(h, 2), KM_OK);
	CU_ASSERT_EQUAL_FATAL(hsm_key_rewrap(h, HSM_KEY_AES256, 1, 2, w1, l1, &w2,
	    &l2), KM_OK);
	CU_ASSERT_EQUAL(l2, 40);
	CU_ASSERT_NOT_EQUAL(memcmp(w1, w2, 40), 0);
	/* The same key under the new MEK: it decrypts what the old made. */
	CU_ASSERT_EQUAL_FATAL(hsm_key_acquire(h, "rw:v2", HSM_KEY_AES256, 2, w2,
	    l2, &k), KM_OK);
	CU_ASSERT_EQUAL(hsm_gcm_decrypt(h, k, iv, NULL, 0, ct, sizeof(ct), back,
	    &blen), KM_OK);
	CU_ASSERT_EQUAL(memcmp(back, pt, sizeof(pt)), 0);
	hsm_key_release(h, k);
	/* Under the old MEK the new blob is garbage. */
	CU_ASSERT_NOT_EQUAL(hsm_key_acquire(h, "rw:x", HSM_KEY_AES256, 1, w2, l2,
	    &k), KM_OK);

	/* A disabled MEK unwraps nothing any more. */
	CU_ASSERT_EQUAL(hsm_mek_disable(h, 1), KM_OK);
	CU_ASSERT_NOT_EQUAL(hsm_key_acquire(h, "rw:after", HSM_KEY_AES256, 1, w1,
	    l1, &k), KM_OK);
	CU_ASSERT_EQUAL(hsm_mek_disable(h, 7), KM_ERR_NOT_FOUND);
	free(w1);
	free(w2);
}

static void
test_unwrap_garbage(void)
{
	unsigned char junk[40];
	struct hsm_key *k = NULL;

	memset(junk, 0x11, sizeof(junk));
	CU_ASSERT_NOT_EQUAL(hsm_key_acquire(h, "junk", HSM_KEY_AES256, 1, junk,
	    sizeof(junk), &k), KM_OK);
	CU_ASSERT_PTR_NULL(k);
	CU_ASSERT_NOT_EQUAL(hsm_key_acquire(h, "nomek", HSM_KEY_AES256, 99, junk,
	    sizeof(junk), &k), KM_OK);
}

static void
test_cache_bound(void)
{
	struct hsm_key *held[5];
	unsigned char *w[5];
	size_t wl[5], i;
	char id[16];

	for (i = 0; i < 5; i++)
		CU_ASSERT_EQUAL_FATAL(hsm_key_generate(h, HSM_KEY_AES256, 1,
		    &w[i], &wl[i]), KM_OK);
	/* Referenced entries are never evicted: the cache may exceed its
	 * bound while they are held, and shrinks back on release. */
	for (i = 0; i < 5; i++) {
		snprintf(id, sizeof(id), "c:%zu", i);
		CU_ASSERT_EQUAL_FATAL(hsm_key_acquire(h, id, HSM_KEY_AES256, 1,
		    w[i], wl[i], &held[i]), KM_OK);
	}
	CU_ASSERT(hsm_key_cache_count(h) >= 5);
	for (i = 0; i < 5; i++)
		hsm_key_release(h, held[i]);
	CU_ASSERT_EQUAL(hsm_key_cache_count(h), 2);
	for (i = 0; i < 5; i++)
		free(w[i]);
}

static void
test_random(void)
{
	unsigned char a[32], b[32];

	CU_ASSERT_EQUAL(hsm_random(h, a, sizeof(a)), KM_OK);
	CU_ASSERT_EQUAL(hsm_random(h, b, sizeof(b)), KM_OK);
	CU_ASSERT_NOT_EQUAL(memcmp(a, b, sizeof(a)), 0);
	CU_ASSERT_EQUAL(hsm_ping(h), KM_OK);
}

static void
test_ec_sign_verifies_with_openssl(void)
{
	static const char msg[] = "kms-audit-checkpoint/v1\n";
	unsigned char digest[32], raw[64], *der = NULL, *sigder = NULL;
	const unsigned char *p;
	size_t der_len = 0;
	EVP_PKEY *pkey = NULL;
	EVP_MD_CTX *md = NULL;
	ECDSA_SIG *es = NULL;
	int siglen;

	CU_ASSERT_EQUAL(hsm_ec_public(h, "kms-audit-v1", &der, &der_len),
	    KM_ERR_NOT_FOUND);
	CU_ASSERT_EQUAL_FATAL(hsm_ec_create(h, "kms-audit-v1"), KM_OK);
	CU_ASSERT_EQUAL(hsm_ec_create(h, "kms-audit-v1"), KM_ERR_KEY_EXISTS);
	CU_ASSERT_EQUAL_FATAL(hsm_ec_public(h, "kms-audit-v1", &der, &der_len),
	    KM_OK);
	p = der;
	pkey = d2i_PUBKEY(NULL, &p, (long)der_len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(pkey);
	CU_ASSERT_EQUAL(EVP_PKEY_get_bits(pkey), 256);

	SHA256((const unsigned char *)msg, sizeof(msg) - 1, digest);
	CU_ASSERT_EQUAL_FATAL(hsm_ec_sign(h, "kms-audit-v1", digest, raw), KM_OK);
	es = ECDSA_SIG_new();
	ECDSA_SIG_set0(es, BN_bin2bn(raw, 32, NULL), BN_bin2bn(raw + 32, 32, NULL));
	siglen = i2d_ECDSA_SIG(es, &sigder);
	CU_ASSERT_FATAL(siglen > 0);
	md = EVP_MD_CTX_new();
	CU_ASSERT_EQUAL(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey), 1);
	CU_ASSERT_EQUAL(EVP_DigestVerify(md, sigder, (size_t)siglen,
	    (const unsigned char *)msg, sizeof(msg) - 1), 1);
	/* And not over anything else. */
	CU_ASSERT_EQUAL(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey), 1);
	CU_ASSERT_NOT_EQUAL(EVP_DigestVerify(md, sigder, (size_t)siglen,
	    (const unsigned char *)msg, sizeof(msg) - 2), 1);
	EVP_MD_CTX_free(md);
	ECDSA_SIG_free(es);
	OPENSSL_free(sigder);
	EVP_PKEY_free(pkey);
	free(der);
}

int
main(void)
{
	CU_pSuite s;
	unsigned failed;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 2;
	s = CU_add_suite("login", login_suite_init, NULL);
	CU_add_test(s, "wrong PIN refused, right PIN accepted", test_wrong_pin);
	s = CU_add_suite("hsm", suite_init, suite_clean);
	CU_add_test(s, "token init twice", test_token_init_twice);
	CU_add_test(s, "URI token label", test_uri_label);
	CU_add_test(s, "MEK sensitive, not extractable", test_mek_attributes);
	CU_add_test(s, "named key attributes and AES-GCM",
	    test_named_key_attributes_and_gcm);
	CU_add_test(s, "unwrap of garbage fails", test_unwrap_garbage);
	CU_add_test(s, "key cache bound", test_cache_bound);
	CU_add_test(s, "token RNG and ping", test_random);
	CU_add_test(s, "P-256 token key signs, OpenSSL verifies",
	    test_ec_sign_verifies_with_openssl);
	/* Last: it disables MEK 1. */
	CU_add_test(s, "rewrap under a new MEK, then disable the old",
	    test_rewrap_under_new_mek_then_disable);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
