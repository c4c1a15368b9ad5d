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
#include <openssl/rsa.h>
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

/* --- signing keys ------------------------------------------------------- */

/* Verifies `sig` over `msg` with OpenSSL against DER SPKI `spki`, as a
 * verifier outside kmsd would. ES256 signatures come as raw r || s. */
static int
ossl_verify(const unsigned char *spki, size_t spki_len, enum hsm_sig_alg alg,
    const unsigned char *msg, size_t msglen, const unsigned char *sig,
    size_t siglen)
{
	const unsigned char *p = spki;
	EVP_PKEY *pkey = d2i_PUBKEY(NULL, &p, (long)spki_len);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	unsigned char *der = NULL;
	ECDSA_SIG *es = NULL;
	int ok = 0, n;

	if (pkey == NULL || md == NULL)
		goto out;
	if (alg == HSM_SIG_ES256) {
		es = ECDSA_SIG_new();
		ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL),
		    BN_bin2bn(sig + 32, 32, NULL));
		if ((n = i2d_ECDSA_SIG(es, &der)) <= 0)
			goto out;
		sig = der;
		siglen = (size_t)n;
	}
	if (EVP_DigestVerifyInit(md, &pctx, alg == HSM_SIG_EDDSA ? NULL :
	    EVP_sha256(), NULL, pkey) != 1)
		goto out;
	if (alg == HSM_SIG_PS256 &&
	    (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
	    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) != 1))
		goto out;
	ok = EVP_DigestVerify(md, sig, siglen, msg, msglen) == 1;
out:
	OPENSSL_free(der);
	ECDSA_SIG_free(es);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pkey);
	return ok;
}

/* Signs `msg` with `alg` (hashing first where the algorithm wants a
 * digest) and checks the signature with OpenSSL, and that it does not
 * verify over another message. */
static void
sign_and_check(struct hsm_key *k, enum hsm_sig_alg alg,
    const unsigned char *spki, size_t spki_len)
{
	static const unsigned char msg[] = "eyJhbGciOiJFUzI1NiJ9.cGF5bG9hZA";
	unsigned char digest[32], sig[HSM_SIG_MAX];
	size_t siglen = 0;
	int r;

	SHA256(msg, sizeof(msg) - 1, digest);
	if (alg == HSM_SIG_EDDSA)
		r = hsm_sign(h, k, alg, msg, sizeof(msg) - 1, sig, &siglen);
	else
		r = hsm_sign(h, k, alg, digest, sizeof(digest), sig, &siglen);
	CU_ASSERT_EQUAL_FATAL(r, KM_OK);
	CU_ASSERT_TRUE(ossl_verify(spki, spki_len, alg, msg, sizeof(msg) - 1,
	    sig, siglen));
	CU_ASSERT_FALSE(ossl_verify(spki, spki_len, alg, msg, sizeof(msg) - 2,
	    sig, siglen));
}

static void
test_key_type_names(void)
{
	static const struct {
		const char *name;
		enum hsm_key_type type;
		int pair;
	} v[] = {
		{ "aes256-gcm", HSM_KEY_AES256, 0 },
		{ "ec-p256", HSM_KEY_EC_P256, 1 },
		{ "rsa-2048", HSM_KEY_RSA2048, 1 },
		{ "rsa-3072", HSM_KEY_RSA3072, 1 },
		{ "ed25519", HSM_KEY_ED25519, 1 },
	};
	enum hsm_key_type t;
	size_t i;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		CU_ASSERT_EQUAL(hsm_key_type_parse(v[i].name, &t), KM_OK);
		CU_ASSERT_EQUAL(t, v[i].type);
		CU_ASSERT_EQUAL(hsm_key_type_is_pair(t), v[i].pair);
		/* SoftHSM 2.6.1 has every mechanism, CKM_EDDSA included. */
		CU_ASSERT_EQUAL(hsm_key_type_supported(h, t), KM_OK);
	}
	CU_ASSERT_EQUAL(hsm_key_type_parse("ec-p384", &t),
	    KM_ERR_UNSUPPORTED_KEY_TYPE);
	CU_ASSERT_EQUAL(hsm_key_type_parse("", &t), KM_ERR_UNSUPPORTED_KEY_TYPE);
}

/* EC and RSA private keys leave the token only wrapped under the MEK; the
 * unwrapped copy signs, is sensitive and not extractable; each algorithm's
 * signature verifies with OpenSSL against the public key; the blob rewraps
 * under a new MEK to the same key. */
static void
test_wrapped_signing_keys(void)
{
	static const struct {
		enum hsm_key_type type;
		int pkey_id, bits;
		enum hsm_sig_alg algs[2];
		size_t n_algs;
	} v[] = {
		{ HSM_KEY_EC_P256, EVP_PKEY_EC, 256, { HSM_SIG_ES256 }, 1 },
		{ HSM_KEY_RSA2048, EVP_PKEY_RSA, 2048,
		    { HSM_SIG_RS256, HSM_SIG_PS256 }, 2 },
		{ HSM_KEY_RSA3072, EVP_PKEY_RSA, 3072,
		    { HSM_SIG_RS256, HSM_SIG_PS256 }, 2 },
	};
	unsigned char digest[32] = { 0 }, sig[HSM_SIG_MAX], *w2 = NULL;
	size_t i, j, siglen, l2 = 0;
	int sens, extr;

	if (hsm_mek_find(h, 3) == KM_ERR_NOT_FOUND)
		CU_ASSERT_EQUAL_FATAL(hsm_mek_create(h, 3), KM_OK);
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		struct hsm_new_key nk;
		struct hsm_key *k = NULL;
		const unsigned char *p;
		EVP_PKEY *pkey;
		char id[32];

		CU_ASSERT_EQUAL_FATAL(hsm_key_create(h, v[i].type, 1,
		    "kms-unit-never-used", &nk), KM_OK);
		CU_ASSERT_FALSE(nk.on_token);
		CU_ASSERT_PTR_NOT_NULL_FATAL(nk.wrapped);
		CU_ASSERT_PTR_NOT_NULL_FATAL(nk.public_key);
		p = nk.public_key;
		pkey = d2i_PUBKEY(NULL, &p, (long)nk.public_key_len);
		CU_ASSERT_PTR_NOT_NULL_FATAL(pkey);
		CU_ASSERT_EQUAL(EVP_PKEY_get_base_id(pkey), v[i].pkey_id);
		CU_ASSERT_EQUAL(EVP_PKEY_get_bits(pkey), v[i].bits);
		EVP_PKEY_free(pkey);

		snprintf(id, sizeof(id), "sig:%zu", i);
		CU_ASSERT_EQUAL_FATAL(hsm_key_acquire(h, id, v[i].type, 1,
		    nk.wrapped, nk.wrapped_len, &k), KM_OK);
		sens = 0;
		extr = 1;
		CU_ASSERT_EQUAL(hsm_key_flags(h, k, &sens, &extr), KM_OK);
		CU_ASSERT_EQUAL(sens, 1);
		CU_ASSERT_EQUAL(extr, 0);
		for (j = 0; j < v[i].n_algs; j++)
			sign_and_check(k, v[i].algs[j], nk.public_key,
			    nk.public_key_len);
		/* A digest must be 32 bytes; an AES-only call is refused. */
		CU_ASSERT_EQUAL(hsm_sign(h, k, v[i].algs[0], digest, 31, sig,
		    &siglen), KM_ERR_INVALID_REQUEST);
		CU_ASSERT_EQUAL(hsm_gcm_encrypt(h, k, digest, NULL, 0, digest, 16,
		    sig), KM_ERR_HSM);
		hsm_key_release(h, k);

		/* MEK rotation: the same private key under MEK 3. */
		CU_ASSERT_EQUAL_FATAL(hsm_key_rewrap(h, v[i].type, 1, 3,
		    nk.wrapped, nk.wrapped_len, &w2, &l2), KM_OK);
		snprintf(id, sizeof(id), "sig:%zu:mek3", i);
		CU_ASSERT_EQUAL_FATAL(hsm_key_acquire(h, id, v[i].type, 3, w2, l2,
		    &k), KM_OK);
		sign_and_check(k, v[i].algs[0], nk.public_key, nk.public_key_len);
		hsm_key_release(h, k);
		/* Under the old MEK the new blob is garbage. (SoftHSM would
		 * unwrap it under an AES template as a secret of odd length:
		 * the blob carries no type, kmsd takes it from the store.) */
		CU_ASSERT_NOT_EQUAL(hsm_key_acquire(h, "sig:wrong-mek", v[i].type,
		    1, w2, l2, &k), KM_OK);
		free(w2);
		w2 = NULL;
		hsm_new_key_clear(&nk);
	}
}

/* SoftHSM refuses to wrap Ed25519 private keys: hsm_key_create keeps them
 * as token objects, found again by the SHA-256 of the public key in
 * CKA_ID (the label is relabelled to what the caller says), never
 * extractable, and destroyable. */
static void
test_ed25519_token_keys(void)
{
	struct hsm_new_key a, b;
	struct hsm_key *ka = NULL, *kb = NULL, *k = NULL;
	unsigned char *w = NULL, sig[HSM_SIG_MAX], *junk;
	size_t wl = 0, siglen;
	int sens = 0, extr = 1;

	CU_ASSERT_EQUAL(hsm_key_create(h, HSM_KEY_ED25519, 1, NULL, &a),
	    KM_ERR_UNSUPPORTED_KEY_TYPE);
	CU_ASSERT_EQUAL_FATAL(hsm_key_create(h, HSM_KEY_ED25519, 1,
	    "kms-edkey-v1", &a), KM_OK);
	CU_ASSERT_TRUE(a.on_token);
	CU_ASSERT_PTR_NULL(a.wrapped);
	CU_ASSERT_EQUAL(a.public_key_len, 44);	/* RFC 8410 SPKI */
	/* A second object under the same label (an orphan of a failed
	 * rotate, say) is never mistaken for the first. */
	CU_ASSERT_EQUAL_FATAL(hsm_key_create(h, HSM_KEY_ED25519, 1,
	    "kms-edkey-v1", &b), KM_OK);
	CU_ASSERT_NOT_EQUAL(memcmp(a.public_key, b.public_key, 44), 0);

	CU_ASSERT_EQUAL_FATAL(hsm_key_acquire_token(h, "ed:a", "kms-edkey-v1",
	    a.public_key, a.public_key_len, &ka), KM_OK);
	CU_ASSERT_EQUAL_FATAL(hsm_key_acquire_token(h, "ed:b", "kms-edkey-v1",
	    b.public_key, b.public_key_len, &kb), KM_OK);
	CU_ASSERT_EQUAL(hsm_key_flags(h, ka, &sens, &extr), KM_OK);
	CU_ASSERT_EQUAL(sens, 1);
	CU_ASSERT_EQUAL(extr, 0);
	sign_and_check(ka, HSM_SIG_EDDSA, a.public_key, a.public_key_len);
	sign_and_check(kb, HSM_SIG_EDDSA, b.public_key, b.public_key_len);
	CU_ASSERT_EQUAL(hsm_sign(h, ka, HSM_SIG_EDDSA, sig, 0, sig, &siglen),
	    KM_ERR_INVALID_REQUEST);
	hsm_key_release(h, ka);
	hsm_key_release(h, kb);
	/* Cached handles of token objects are never destroyed by the cache:
	 * after eviction (cache of 2) the object is still found. */
	CU_ASSERT_EQUAL(hsm_key_cache_count(h), 2);
	CU_ASSERT_EQUAL_FATAL(hsm_key_acquire_token(h, "ed:a2", "kms-edkey-v1",
	    a.public_key, a.public_key_len, &k), KM_OK);
	sign_and_check(k, HSM_SIG_EDDSA, a.public_key, a.public_key_len);
	hsm_key_release(h, k);

	/* Nothing to rewrap. A provisional label becomes the final one; the
	 * object is the same. A wrong public key finds nothing. */
	CU_ASSERT_EQUAL(hsm_key_rewrap(h, HSM_KEY_ED25519, 1, 1, sig, 40, &w,
	    &wl), KM_ERR_UNSUPPORTED_KEY_TYPE);
	CU_ASSERT_EQUAL(hsm_token_key_label(h, "kms-edkey-v7", a.public_key,
	    a.public_key_len), KM_OK);
	CU_ASSERT_EQUAL_FATAL(hsm_key_acquire_token(h, "ed:x", "kms-edkey-v1",
	    a.public_key, a.public_key_len, &k), KM_OK);
	sign_and_check(k, HSM_SIG_EDDSA, a.public_key, a.public_key_len);
	hsm_key_release(h, k);
	junk = malloc(a.public_key_len);
	memcpy(junk, a.public_key, a.public_key_len);
	junk[a.public_key_len - 1] ^= 1;
	CU_ASSERT_EQUAL(hsm_key_acquire_token(h, "ed:y", "kms-edkey-v1", junk,
	    a.public_key_len, &k), KM_ERR_NOT_FOUND);
	free(junk);

	/* Destroy b: a stays, b is gone. */
	CU_ASSERT_EQUAL(hsm_token_key_destroy(h, b.public_key, b.public_key_len),
	    KM_OK);
	CU_ASSERT_EQUAL(hsm_token_key_destroy(h, b.public_key, b.public_key_len),
	    KM_ERR_NOT_FOUND);
	CU_ASSERT_EQUAL(hsm_token_key_label(h, "kms-edkey-v1", b.public_key,
	    b.public_key_len), KM_ERR_NOT_FOUND);
	CU_ASSERT_EQUAL(hsm_key_acquire_token(h, "ed:b2", "kms-edkey-v1",
	    b.public_key, b.public_key_len, &k), KM_ERR_NOT_FOUND);
	CU_ASSERT_EQUAL_FATAL(hsm_key_acquire_token(h, "ed:a3", "kms-edkey-v1",
	    a.public_key, a.public_key_len, &k), KM_OK);
	hsm_key_release(h, k);
	hsm_new_key_clear(&a);
	hsm_new_key_clear(&b);
}

/* RSA-OAEP encryption of `in` under the DER public key, as an importer
 * does it with OpenSSL: `md` for OAEP and MGF1, no label. */
static int
oaep_wrap(const unsigned char *spki, size_t spki_len, const EVP_MD *md,
    const unsigned char *in, size_t inlen, unsigned char *out, size_t *outlen)
{
	const unsigned char *p = spki;
	EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)spki_len);
	EVP_PKEY_CTX *ctx = pk ? EVP_PKEY_CTX_new(pk, NULL) : NULL;
	int ok;

	ok = ctx != NULL && EVP_PKEY_encrypt_init(ctx) > 0 &&
	    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) > 0 &&
	    EVP_PKEY_CTX_set_rsa_oaep_md(ctx, md) > 0 &&
	    EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) > 0 &&
	    EVP_PKEY_encrypt(ctx, out, outlen, in, inlen) > 0;
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pk);
	return ok ? 0 : -1;
}

/* AES-256-GCM with OpenSSL, to compare with the token's. */
static int
local_gcm(const unsigned char key[32], const unsigned char iv[12],
    const unsigned char *pt, size_t ptlen, unsigned char *ct)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n = 0, m = 0, ok;

	ok = c != NULL && EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key,
	    iv) == 1 && EVP_EncryptUpdate(c, ct, &n, pt, (int)ptlen) == 1 &&
	    EVP_EncryptFinal_ex(c, ct + n, &m) == 1 &&
	    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, ct + ptlen) == 1;
	EVP_CIPHER_CTX_free(c);
	return ok ? 0 : -1;
}

static void
test_import_key(void)
{
	static const unsigned char iv[12] = { 9 };
	unsigned char aes[32], enc[512], pt[48], ct[48 + 16], want[48 + 16];
	unsigned char *spki = NULL, *spki2 = NULL, *blob = NULL;
	size_t spki_len = 0, spki2_len = 0, blob_len = 0, enc_len = sizeof(enc);
	const EVP_MD *md;
	enum hsm_oaep_hash hash;
	struct hsm_key *k = NULL;
	int have256, have1;

	CU_ASSERT_EQUAL(hsm_import_key_public(h, "kms-import-v1", &spki,
	    &spki_len), KM_ERR_NOT_FOUND);
	CU_ASSERT_EQUAL_FATAL(hsm_import_key_create(h, "kms-import-v1"), KM_OK);
	CU_ASSERT_EQUAL(hsm_import_key_create(h, "kms-import-v1"),
	    KM_ERR_KEY_EXISTS);
	CU_ASSERT_EQUAL_FATAL(hsm_import_key_public(h, "kms-import-v1", &spki,
	    &spki_len), KM_OK);
	CU_ASSERT_EQUAL_FATAL(hsm_import_key_public(h, "kms-import-v1", &spki2,
	    &spki2_len), KM_OK);
	CU_ASSERT(spki_len == spki2_len && memcmp(spki, spki2, spki_len) == 0);

	/* SoftHSM 2.6 takes OAEP with SHA-1 only; a token that takes SHA-256
	 * is tested with SHA-256. At least one must work. */
	have256 = hsm_import_oaep_supported(h, "kms-import-v1", HSM_OAEP_SHA256);
	have1 = hsm_import_oaep_supported(h, "kms-import-v1", HSM_OAEP_SHA1);
	CU_ASSERT_FATAL(have256 || have1);
	hash = have256 ? HSM_OAEP_SHA256 : HSM_OAEP_SHA1;
	md = have256 ? EVP_sha256() : EVP_sha1();

	CU_ASSERT_EQUAL_FATAL(hsm_random(h, aes, sizeof(aes)), KM_OK);
	CU_ASSERT_EQUAL_FATAL(oaep_wrap(spki, spki_len, md, aes, sizeof(aes),
	    enc, &enc_len), 0);
	CU_ASSERT_EQUAL(enc_len, 384);
	CU_ASSERT_EQUAL_FATAL(hsm_key_import(h, HSM_KEY_AES256, "kms-import-v1",
	    hash, enc, enc_len, 1, &blob, &blob_len), KM_OK);
	CU_ASSERT_EQUAL(blob_len, 40);

	/* The imported key is the one: the token's GCM equals OpenSSL's. */
	memset(pt, 0x3c, sizeof(pt));
	CU_ASSERT_EQUAL_FATAL(local_gcm(aes, iv, pt, sizeof(pt), want), 0);
	CU_ASSERT_EQUAL_FATAL(hsm_key_acquire(h, "imp:1", HSM_KEY_AES256, 1,
	    blob, blob_len, &k), KM_OK);
	CU_ASSERT_EQUAL(hsm_gcm_encrypt(h, k, iv, NULL, 0, pt, sizeof(pt), ct),
	    KM_OK);
	CU_ASSERT_EQUAL(memcmp(ct, want, sizeof(ct)), 0);
	hsm_key_release(h, k);
	free(blob);
	blob = NULL;

	/* The other hash, a flipped byte, a short input, a 16-byte key and
	 * a type other than AES: refused, nothing returned. */
	CU_ASSERT_NOT_EQUAL(hsm_key_import(h, HSM_KEY_AES256, "kms-import-v1",
	    hash == HSM_OAEP_SHA1 ? HSM_OAEP_SHA256 : HSM_OAEP_SHA1, enc, enc_len,
	    1, &blob, &blob_len), KM_OK);
	CU_ASSERT_PTR_NULL(blob);
	enc[100] ^= 1;
	CU_ASSERT_EQUAL(hsm_key_import(h, HSM_KEY_AES256, "kms-import-v1", hash,
	    enc, enc_len, 1, &blob, &blob_len), KM_ERR_INVALID_CIPHERTEXT);
	CU_ASSERT_EQUAL(hsm_key_import(h, HSM_KEY_AES256, "kms-import-v1", hash,
	    enc, 17, 1, &blob, &blob_len), KM_ERR_INVALID_CIPHERTEXT);
	enc_len = sizeof(enc);
	CU_ASSERT_EQUAL_FATAL(oaep_wrap(spki, spki_len, md, aes, 16, enc,
	    &enc_len), 0);
	CU_ASSERT_EQUAL(hsm_key_import(h, HSM_KEY_AES256, "kms-import-v1", hash,
	    enc, enc_len, 1, &blob, &blob_len), KM_ERR_INVALID_CIPHERTEXT);
	CU_ASSERT_EQUAL(hsm_key_import(h, HSM_KEY_EC_P256, "kms-import-v1", hash,
	    enc, enc_len, 1, &blob, &blob_len), KM_ERR_UNSUPPORTED_KEY_TYPE);
	CU_ASSERT_EQUAL(hsm_key_import(h, HSM_KEY_AES256, "kms-import-v9", hash,
	    enc, enc_len, 1, &blob, &blob_len), KM_ERR_NOT_FOUND);
	CU_ASSERT_PTR_NULL(blob);
	free(spki);
	free(spki2);
}

static void
test_cache_evict(void)
{
	unsigned char *w = NULL;
	size_t wl = 0, before;
	struct hsm_key *k = NULL, *k2 = NULL;
	char id[HSM_CACHE_ID_MAX];

	hsm_cache_id(77, 3, id, sizeof(id));
	CU_ASSERT_STRING_EQUAL(id, "77:3");
	CU_ASSERT_EQUAL_FATAL(hsm_key_generate(h, HSM_KEY_AES256, 1, &w, &wl),
	    KM_OK);
	CU_ASSERT_EQUAL_FATAL(hsm_key_acquire(h, id, HSM_KEY_AES256, 1, w, wl,
	    &k), KM_OK);
	hsm_key_release(h, k);
	before = hsm_key_cache_count(h);
	CU_ASSERT_EQUAL(hsm_key_evict(h, id), 1);
	CU_ASSERT_EQUAL(hsm_key_cache_count(h), before - 1);
	CU_ASSERT_EQUAL(hsm_key_evict(h, id), 0);

	/* Held by a request in flight: out of the cache at once (the next
	 * acquire unwraps a new copy), destroyed at the last release. */
	CU_ASSERT_EQUAL_FATAL(hsm_key_acquire(h, id, HSM_KEY_AES256, 1, w, wl,
	    &k), KM_OK);
	before = hsm_key_cache_count(h);
	CU_ASSERT_EQUAL(hsm_key_evict(h, id), 1);
	CU_ASSERT_EQUAL(hsm_key_cache_count(h), before - 1);
	CU_ASSERT_EQUAL_FATAL(hsm_key_acquire(h, id, HSM_KEY_AES256, 1, w, wl,
	    &k2), KM_OK);
	CU_ASSERT_PTR_NOT_EQUAL(k, k2);
	hsm_key_release(h, k);
	hsm_key_release(h, k2);
	CU_ASSERT_EQUAL(hsm_key_evict(h, id), 1);
	free(w);
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
	CU_add_test(s, "key type names and token mechanisms",
	    test_key_type_names);
	CU_add_test(s, "EC and RSA keys: wrapped, sign, rewrap",
	    test_wrapped_signing_keys);
	CU_add_test(s, "Ed25519 keys stay on the token", test_ed25519_token_keys);
	CU_add_test(s, "import key: RSA-OAEP unwrap into a MEK-wrapped version",
	    test_import_key);
	CU_add_test(s, "cache eviction of a version", test_cache_evict);
	/* Last: it disables MEK 1. */
	CU_add_test(s, "rewrap under a new MEK, then disable the old",
	    test_rewrap_under_new_mek_then_disable);
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
