/* Unit tests of ceremony/ (cer.h): the canonical request text byte for
 * byte and its digest, the strict parser, the signed messages, officer
 * signature verification with real ECDSA P-256 keys, and the quorum rules. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/CUnit.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "cer.h"
#include "km.h"
#include "unit.h"

/* 2026-11-18T11:06:40Z */
#define T0 (1795000000LL * 1000000)

static const char pinned_text[] =
    "kms-ceremony/v1\n"
    "id: 0123456789abcdef\n"
    "operation: key.destroy\n"
    "param.key: matter-7\n"
    "param.version: 3\n"
    "quorum: 2\n"
    "requester: token:00112233445566ff\n"
    "created: 2026-11-18T11:06:40Z\n"
    "expires: 2026-11-19T11:06:40Z\n"
    "nonce: 00112233445566778899aabbccddeeff\n"
    "state: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n";
/* sha256sum of pinned_text */
static const char pinned_digest[] =
    "05a44372955a7b7aa7b285cd9697be1a883d9ce01babe8fbbe3f03e2d87b5deb";

static void
pinned_request(struct cer_request *r)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->id, sizeof(r->id), "0123456789abcdef");
	snprintf(r->operation, sizeof(r->operation), "key.destroy");
	/* set out of order: the text has them sorted */
	CU_ASSERT_EQUAL(cer_param_set(r, "version", "3"), KM_OK);
	CU_ASSERT_EQUAL(cer_param_set(r, "key", "matter-7"), KM_OK);
	r->quorum = 2;
	snprintf(r->requester, sizeof(r->requester), "token:00112233445566ff");
	r->created = T0;
	r->expires = T0 + 86400LL * 1000000;
	snprintf(r->nonce, sizeof(r->nonce), "00112233445566778899aabbccddeeff");
	cer_digest_hex("", 0, r->state);
}

/* --- the canonical text ------------------------------------------------- */

static void
test_text_pinned(void)
{
	struct cer_request r;
	char *text = NULL, digest[65];

	pinned_request(&r);
	CU_ASSERT_EQUAL_FATAL(cer_request_text(&r, &text), KM_OK);
	UT_ASSERT_BYTES(text, strlen(text), pinned_text, strlen(pinned_text));
	cer_digest_hex(text, strlen(text), digest);
	CU_ASSERT_STRING_EQUAL(digest, pinned_digest);
	free(text);
}

static void
test_text_invalid_fields(void)
{
	struct cer_request r;
	char *text = NULL;

	pinned_request(&r);
	r.created = T0 + 1;	/* not whole seconds */
	CU_ASSERT_EQUAL(cer_request_text(&r, &text), KM_ERR_INVALID_REQUEST);
	pinned_request(&r);
	r.expires = r.created;
	CU_ASSERT_EQUAL(cer_request_text(&r, &text), KM_ERR_INVALID_REQUEST);
	pinned_request(&r);
	r.quorum = 0;
	CU_ASSERT_EQUAL(cer_request_text(&r, &text), KM_ERR_INVALID_REQUEST);
	pinned_request(&r);
	snprintf(r.requester, sizeof(r.requester), "Alice");
	CU_ASSERT_EQUAL(cer_request_text(&r, &text), KM_ERR_INVALID_REQUEST);
	pinned_request(&r);
	snprintf(r.nonce, sizeof(r.nonce), "00112233445566778899AABBCCDDEEFF");
	CU_ASSERT_EQUAL(cer_request_text(&r, &text), KM_ERR_INVALID_REQUEST);
	pinned_request(&r);
	snprintf(r.operation, sizeof(r.operation), "mekrotate");
	CU_ASSERT_EQUAL(cer_request_text(&r, &text), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_PTR_NULL(text);
}

static void
test_params(void)
{
	struct cer_request r;
	char big[CER_PARAM_VALUE_MAX + 2];
	int i;

	memset(&r, 0, sizeof(r));
	CU_ASSERT_EQUAL(cer_param_set(&r, "Key", "x"), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(cer_param_set(&r, "key.x", "x"), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(cer_param_set(&r, "1key", "x"), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(cer_param_set(&r, "key", ""), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(cer_param_set(&r, "key", "a\nquorum: 1"),
	    KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(cer_param_set(&r, "key", " a"), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(cer_param_set(&r, "key", "a "), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(cer_param_set(&r, "key", "caf\xc3\xa9"),
	    KM_ERR_INVALID_REQUEST);
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	CU_ASSERT_EQUAL(cer_param_set(&r, "key", big), KM_ERR_INVALID_REQUEST);
	big[CER_PARAM_VALUE_MAX] = '\0';
	CU_ASSERT_EQUAL(cer_param_set(&r, "key", big), KM_OK);
	CU_ASSERT_EQUAL(cer_param_set(&r, "key", "b"), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(r.n_params, 1);
	for (i = 0; i < CER_MAX_PARAMS - 1; i++) {
		char name[8];

		snprintf(name, sizeof(name), "p%d", i);
		CU_ASSERT_EQUAL(cer_param_set(&r, name, "v"), KM_OK);
	}
	CU_ASSERT_EQUAL(cer_param_set(&r, "zz", "v"), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_STRING_EQUAL(r.params[0].name, "key");
	CU_ASSERT_PTR_NULL(cer_param_get(&r, "zz"));
	CU_ASSERT_STRING_EQUAL(cer_param_get(&r, "p3"), "v");
}

static void
test_parse(void)
{
	struct cer_request r;
	char *bad, *p;
	size_t n = strlen(pinned_text);
	static const struct {
		const char *from, *to;
	} edits[] = {
		{ "param.key: matter-7\nparam.version: 3\n",
		  "param.version: 3\nparam.key: matter-7\n" },	/* unsorted */
		{ "quorum: 2", "quorum: 02" },
		{ "quorum: 2", "quorum:  2" },
		{ "created: 2026-11-18T11:06:40Z",
		  "created: 2026-11-18T11:06:40+00:00" },
		{ "created: 2026-11-18T11:06:40Z",
		  "created: 2026-11-18T11:06:40.000000Z" },
		{ "state: e3b0c4", "state: E3B0C4" },
		{ "kms-ceremony/v1", "kms-ceremony/v2" },
		{ "id: 0123456789abcdef", "id: 0123456789abcdeg" },
		{ "param.version: 3\n", "param.version: 3\nparam.version: 4\n" },
		{ "nonce: 0011", "Nonce: 0011" },
	};
	size_t i;

	CU_ASSERT_EQUAL_FATAL(cer_request_parse(pinned_text, n, &r), KM_OK);
	CU_ASSERT_STRING_EQUAL(r.id, "0123456789abcdef");
	CU_ASSERT_STRING_EQUAL(r.operation, "key.destroy");
	CU_ASSERT_EQUAL(r.n_params, 2);
	CU_ASSERT_STRING_EQUAL(cer_param_get(&r, "key"), "matter-7");
	CU_ASSERT_EQUAL(r.quorum, 2);
	CU_ASSERT_EQUAL(r.created, T0);
	/* no trailing newline, an extra line, CRLF */
	CU_ASSERT_EQUAL(cer_request_parse(pinned_text, n - 1, &r),
	    KM_ERR_INVALID_REQUEST);
	if ((bad = malloc(n + 16)) == NULL)
		return;
	snprintf(bad, n + 16, "%sx: y\n", pinned_text);
	CU_ASSERT_EQUAL(cer_request_parse(bad, strlen(bad), &r),
	    KM_ERR_INVALID_REQUEST);
	memcpy(bad, pinned_text, n + 1);
	p = strchr(bad, '\n');
	*p = '\r';
	CU_ASSERT_EQUAL(cer_request_parse(bad, n, &r), KM_ERR_INVALID_REQUEST);
	free(bad);
	for (i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		const char *at = strstr(pinned_text, edits[i].from);
		size_t len;

		CU_ASSERT_PTR_NOT_NULL_FATAL(at);
		len = n - strlen(edits[i].from) + strlen(edits[i].to);
		if ((bad = malloc(len + 1)) == NULL)
			return;
		snprintf(bad, len + 1, "%.*s%s%s", (int)(at - pinned_text),
		    pinned_text, edits[i].to, at + strlen(edits[i].from));
		if (cer_request_parse(bad, strlen(bad), &r) != KM_ERR_INVALID_REQUEST) {
			fprintf(stderr, "\naccepted: %s -> %s\n", edits[i].from,
			    edits[i].to);
			CU_FAIL("a non-canonical text was accepted");
		}
		free(bad);
	}
}

static void
test_messages_pinned(void)
{
	struct cer_request r;
	char *m = NULL;

	CU_ASSERT_EQUAL(cer_approval_message(pinned_digest, "bob", "approve", &m),
	    KM_OK);
	CU_ASSERT_STRING_EQUAL(m, "kms-approval/v1\n"
	    "05a44372955a7b7aa7b285cd9697be1a883d9ce01babe8fbbe3f03e2d87b5deb\n"
	    "bob\napprove\n");
	free(m);
	m = NULL;
	CU_ASSERT_EQUAL(cer_approval_message(pinned_digest, "bob", "maybe", &m),
	    KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(cer_approval_message("05A4", "bob", "approve", &m),
	    KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(cer_approval_message(pinned_digest, "Bob", "reject", &m),
	    KM_ERR_INVALID_REQUEST);
	CU_ASSERT_PTR_NULL(m);

	CU_ASSERT_EQUAL(cer_revoke_message("matter-7", 3, "alice",
	    "2026-11-18T11:06:40Z", "00112233445566778899aabbccddeeff", &m), KM_OK);
	CU_ASSERT_STRING_EQUAL(m, "kms-revoke/v1\nkey: matter-7\nversion: 3\n"
	    "officer: alice\nts: 2026-11-18T11:06:40Z\n"
	    "nonce: 00112233445566778899aabbccddeeff\n");
	free(m);
	m = NULL;
	CU_ASSERT_EQUAL(cer_revoke_message("matter-7", 3, "alice",
	    "2026-11-18T11:06:40Z", "0011", &m), KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(cer_revoke_message("matter-7\nx", 3, "alice",
	    "2026-11-18T11:06:40Z", "00112233445566778899aabbccddeeff", &m),
	    KM_ERR_INVALID_REQUEST);
	CU_ASSERT_EQUAL(cer_revoke_message("matter-7", 0, "alice",
	    "2026-11-18T11:06:40Z", "00112233445566778899aabbccddeeff", &m),
	    KM_ERR_INVALID_REQUEST);

	memset(&r, 0, sizeof(r));
	snprintf(r.operation, sizeof(r.operation), "quorum.set");
	CU_ASSERT_EQUAL(cer_param_set(&r, "quorum", "3"), KM_OK);
	CU_ASSERT_EQUAL(cer_request_message(&r, "carol", "2026-11-18T11:06:40Z",
	    &m), KM_OK);
	CU_ASSERT_STRING_EQUAL(m, "kms-ceremony-request/v1\nofficer: carol\n"
	    "operation: quorum.set\nparam.quorum: 3\nts: 2026-11-18T11:06:40Z\n");
	free(m);
}

static void
test_names_and_ts(void)
{
	CU_ASSERT_TRUE(cer_officer_name_valid("alice"));
	CU_ASSERT_TRUE(cer_officer_name_valid("a.b-c_9"));
	CU_ASSERT_TRUE(cer_officer_name_valid("0"));
	CU_ASSERT_FALSE(cer_officer_name_valid(""));
	CU_ASSERT_FALSE(cer_officer_name_valid("Alice"));
	CU_ASSERT_FALSE(cer_officer_name_valid("-alice"));
	CU_ASSERT_FALSE(cer_officer_name_valid("token:00112233445566ff"));
	CU_ASSERT_FALSE(cer_officer_name_valid("al ice"));
	CU_ASSERT_FALSE(cer_officer_name_valid(
	    "abcdefghijabcdefghijabcdefghijabc"));	/* 33 */
	CU_ASSERT_TRUE(cer_requester_valid("token:00112233445566ff"));
	CU_ASSERT_FALSE(cer_requester_valid("token:00112233445566f"));
	CU_ASSERT_TRUE(cer_operation_valid("audit_key.rotate"));
	CU_ASSERT_FALSE(cer_operation_valid("audit_key.rotate.now"));
	CU_ASSERT_FALSE(cer_operation_valid(".rotate"));
	CU_ASSERT_EQUAL(cer_ts_fresh("2026-11-18T11:06:40Z", T0), KM_OK);
	CU_ASSERT_EQUAL(cer_ts_fresh("2026-11-18T11:11:40Z", T0), KM_OK);
	CU_ASSERT_EQUAL(cer_ts_fresh("2026-11-18T11:11:41Z", T0),
	    KM_ERR_INVALID_SIGNATURE);
	CU_ASSERT_EQUAL(cer_ts_fresh("2026-11-18T11:01:39Z", T0),
	    KM_ERR_INVALID_SIGNATURE);
	CU_ASSERT_EQUAL(cer_ts_fresh("yesterday", T0), KM_ERR_INVALID_REQUEST);
}

/* --- signatures --------------------------------------------------------- */

struct officer_key {
	EVP_PKEY *pk;
	unsigned char *spki;
	size_t spki_len;
};

static void
key_new(struct officer_key *k, const char *curve)
{
	unsigned char *der = NULL;
	int n;

	memset(k, 0, sizeof(*k));
	k->pk = EVP_EC_gen(curve);
	CU_ASSERT_PTR_NOT_NULL_FATAL(k->pk);
	n = i2d_PUBKEY(k->pk, &der);
	CU_ASSERT_FATAL(n > 0);
	k->spki = malloc((size_t)n);
	CU_ASSERT_PTR_NOT_NULL_FATAL(k->spki);
	memcpy(k->spki, der, (size_t)n);
	k->spki_len = (size_t)n;
	OPENSSL_free(der);
}

static void
key_free(struct officer_key *k)
{
	EVP_PKEY_free(k->pk);
	free(k->spki);
}

/* Base64 DER ECDSA/SHA-256 signature over `msg`. */
static char *
sign(EVP_PKEY *pk, const char *msg)
{
	unsigned char der[128];
	size_t len = sizeof(der);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	char *b64 = NULL;

	if (md != NULL && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pk) == 1 &&
	    EVP_DigestSign(md, der, &len, (const unsigned char *)msg,
	    strlen(msg)) == 1)
		CU_ASSERT_EQUAL(km_b64_encode(der, len, &b64), KM_OK);
	EVP_MD_CTX_free(md);
	CU_ASSERT_PTR_NOT_NULL(b64);
	return b64;
}

static char *
approval_sig(EVP_PKEY *pk, const char *digest, const char *officer,
    const char *decision)
{
	char *m = NULL, *s;

	if (cer_approval_message(digest, officer, decision, &m) != KM_OK)
		return NULL;
	s = sign(pk, m);
	free(m);
	return s;
}

static int
verify_approval(const struct officer_key *k, const char *digest,
    const char *officer, const char *decision, const char *sig)
{
	char *m = NULL;
	int r;

	if (cer_approval_message(digest, officer, decision, &m) != KM_OK)
		return -1;
	r = cer_verify(k->spki, k->spki_len, m, strlen(m), sig);
	free(m);
	return r;
}

static void
test_verify(void)
{
	struct officer_key a, b;
	unsigned char *der = NULL, *spki = NULL;
	size_t der_len = 0, spki_len = 0;
	char other[65], *sig, *bad = NULL;

	key_new(&a, "P-256");
	key_new(&b, "P-256");
	cer_digest_hex("other", 5, other);
	sig = approval_sig(a.pk, pinned_digest, "alice", "approve");
	CU_ASSERT_PTR_NOT_NULL_FATAL(sig);
	CU_ASSERT_EQUAL(verify_approval(&a, pinned_digest, "alice", "approve",
	    sig), KM_OK);
	/* over another digest, name or decision; by another key */
	CU_ASSERT_EQUAL(verify_approval(&a, other, "alice", "approve", sig),
	    KM_ERR_INVALID_SIGNATURE);
	CU_ASSERT_EQUAL(verify_approval(&a, pinned_digest, "bob", "approve", sig),
	    KM_ERR_INVALID_SIGNATURE);
	CU_ASSERT_EQUAL(verify_approval(&a, pinned_digest, "alice", "reject", sig),
	    KM_ERR_INVALID_SIGNATURE);
	CU_ASSERT_EQUAL(verify_approval(&b, pinned_digest, "alice", "approve",
	    sig), KM_ERR_INVALID_SIGNATURE);
	/* malformed: not base64, empty, truncated, trailing bytes */
	CU_ASSERT_EQUAL(verify_approval(&a, pinned_digest, "alice", "approve",
	    "not base64!"), KM_ERR_INVALID_SIGNATURE);
	CU_ASSERT_EQUAL(verify_approval(&a, pinned_digest, "alice", "approve",
	    ""), KM_ERR_INVALID_SIGNATURE);
	CU_ASSERT_EQUAL(km_b64_decode(sig, strlen(sig), &der, &der_len), KM_OK);
	if (der != NULL) {
		unsigned char longer[80];

		CU_ASSERT_EQUAL(km_b64_encode(der, der_len - 1, &bad), KM_OK);
		CU_ASSERT_EQUAL(verify_approval(&a, pinned_digest, "alice",
		    "approve", bad), KM_ERR_INVALID_SIGNATURE);
		free(bad);
		bad = NULL;
		memcpy(longer, der, der_len);
		longer[der_len] = 0;
		CU_ASSERT_EQUAL(km_b64_encode(longer, der_len + 1, &bad), KM_OK);
		CU_ASSERT_EQUAL(verify_approval(&a, pinned_digest, "alice",
		    "approve", bad), KM_ERR_INVALID_SIGNATURE);
		free(bad);
		bad = NULL;
		/* BER length form instead of DER: refused (one spelling) */
		if (der_len + 1 < sizeof(longer) && der[1] < 0x80) {
			longer[0] = der[0];
			longer[1] = 0x81;
			longer[2] = der[1];
			memcpy(longer + 3, der + 2, der_len - 2);
			CU_ASSERT_EQUAL(km_b64_encode(longer, der_len + 1, &bad), KM_OK);
			CU_ASSERT_EQUAL(verify_approval(&a, pinned_digest, "alice",
			    "approve", bad), KM_ERR_INVALID_SIGNATURE);
			free(bad);
		}
		free(der);
	}
	/* Keys: PEM and DER parse to the same DER; P-384 and RSA do not */
	CU_ASSERT_EQUAL(cer_pubkey_parse(a.spki, a.spki_len, &spki, &spki_len),
	    KM_OK);
	UT_ASSERT_BYTES(spki, spki_len, a.spki, a.spki_len);
	free(spki);
	{
		char *pem = NULL;

		CU_ASSERT_EQUAL(cer_pubkey_pem(a.spki, a.spki_len, &pem), KM_OK);
		CU_ASSERT_PTR_NOT_NULL_FATAL(pem);
		CU_ASSERT_EQUAL(strncmp(pem, "-----BEGIN PUBLIC KEY-----", 26), 0);
		CU_ASSERT_EQUAL(cer_pubkey_parse(pem, strlen(pem), &spki,
		    &spki_len), KM_OK);
		UT_ASSERT_BYTES(spki, spki_len, a.spki, a.spki_len);
		free(spki);
		free(pem);
	}
	{
		struct officer_key p384;
		EVP_PKEY *rsa = EVP_RSA_gen(2048);
		unsigned char *rder = NULL;
		int n;

		key_new(&p384, "P-384");
		CU_ASSERT_EQUAL(cer_pubkey_parse(p384.spki, p384.spki_len, &spki,
		    &spki_len), KM_ERR_INVALID_REQUEST);
		CU_ASSERT_PTR_NOT_NULL_FATAL(rsa);
		n = i2d_PUBKEY(rsa, &rder);
		CU_ASSERT_EQUAL(cer_pubkey_parse(rder, (size_t)n, &spki, &spki_len),
		    KM_ERR_INVALID_REQUEST);
		CU_ASSERT_EQUAL(cer_pubkey_parse("garbage", 7, &spki, &spki_len),
		    KM_ERR_INVALID_REQUEST);
		OPENSSL_free(rder);
		EVP_PKEY_free(rsa);
		key_free(&p384);
	}
	free(sig);
	key_free(&a);
	key_free(&b);
}

/* A token's raw r || s becomes the same DER OpenSSL would verify. */
static void
test_sig_from_raw(void)
{
	struct officer_key a;
	unsigned char *der = NULL, rs[64];
	const unsigned char *p;
	const BIGNUM *r, *s;
	ECDSA_SIG *es;
	size_t len = 0;
	char *sig, *again = NULL, *m = NULL;

	key_new(&a, "P-256");
	CU_ASSERT_EQUAL(cer_approval_message(pinned_digest, "dave", "reject", &m),
	    KM_OK);
	sig = sign(a.pk, m);
	CU_ASSERT_EQUAL_FATAL(km_b64_decode(sig, strlen(sig), &der, &len), KM_OK);
	p = der;
	es = d2i_ECDSA_SIG(NULL, &p, (long)len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(es);
	ECDSA_SIG_get0(es, &r, &s);
	CU_ASSERT_EQUAL(BN_bn2binpad(r, rs, 32), 32);
	CU_ASSERT_EQUAL(BN_bn2binpad(s, rs + 32, 32), 32);
	CU_ASSERT_EQUAL(cer_sig_from_raw(rs, &again), KM_OK);
	CU_ASSERT_STRING_EQUAL(again, sig);
	CU_ASSERT_EQUAL(cer_verify(a.spki, a.spki_len, m, strlen(m), again), KM_OK);
	ECDSA_SIG_free(es);
	free(der);
	free(sig);
	free(again);
	free(m);
	key_free(&a);
}

/* --- the quorum engine -------------------------------------------------- */

enum { ALICE, BOB, CAROL, DAVE, N_OFF };
static const char *const names[N_OFF] = { "alice", "bob", "carol", "dave" };

struct fixture {
	struct officer_key k[N_OFF];
	struct cer_officer off[N_OFF];
};

static void
fixture_new(struct fixture *f)
{
	int i;

	memset(f, 0, sizeof(*f));
	for (i = 0; i < N_OFF; i++) {
		key_new(&f->k[i], "P-256");
		snprintf(f->off[i].name, sizeof(f->off[i].name), "%s", names[i]);
		f->off[i].spki = f->k[i].spki;
		f->off[i].spki_len = f->k[i].spki_len;
		f->off[i].active = i != DAVE;	/* dave was removed */
	}
}

static void
fixture_free(struct fixture *f)
{
	int i;

	for (i = 0; i < N_OFF; i++)
		key_free(&f->k[i]);
}

/* decision `dec` by officer `who` signed with the key of `signer` */
static void
decide(struct fixture *f, struct cer_decision *d, const char *who,
    int signer, const char *digest, const char *dec)
{
	char *s = approval_sig(f->k[signer].pk, digest, who, dec);

	memset(d, 0, sizeof(*d));
	snprintf(d->officer, sizeof(d->officer), "%s", who);
	d->approve = strcmp(dec, "approve") == 0;
	if (s != NULL)
		snprintf(d->signature, sizeof(d->signature), "%s", s);
	free(s);
}

static void
test_quorum(void)
{
	struct fixture f;
	struct cer_decision d[8];
	struct cer_tally t;
	char other[65];

	fixture_new(&f);
	cer_digest_hex("other", 5, other);

	/* no decisions: M = 2 not met; eligible: bob, carol (alice asked,
	 * dave is removed) */
	CU_ASSERT_EQUAL(cer_tally(pinned_digest, "alice", 2, f.off, N_OFF, d, 0,
	    &t), KM_OK);
	CU_ASSERT_FALSE(t.executable);
	CU_ASSERT_FALSE(t.impossible);
	CU_ASSERT_EQUAL(t.eligible, 2);

	/* M-1 approvals: not executable */
	decide(&f, &d[0], "bob", BOB, pinned_digest, "approve");
	CU_ASSERT_EQUAL(cer_tally(pinned_digest, "alice", 2, f.off, N_OFF, d, 1,
	    &t), KM_OK);
	CU_ASSERT_EQUAL(t.approved, 1);
	CU_ASSERT_FALSE(t.executable);

	/* the same officer twice counts once */
	decide(&f, &d[1], "bob", BOB, pinned_digest, "approve");
	/* the requester's own approval does not count */
	decide(&f, &d[2], "alice", ALICE, pinned_digest, "approve");
	/* nor a removed officer's, an unregistered name, another digest, or
	 * a signature by another officer's key */
	decide(&f, &d[3], "dave", DAVE, pinned_digest, "approve");
	decide(&f, &d[4], "eve", BOB, pinned_digest, "approve");
	decide(&f, &d[5], "carol", CAROL, other, "approve");
	CU_ASSERT_EQUAL(cer_tally(pinned_digest, "alice", 2, f.off, N_OFF, d, 6,
	    &t), KM_OK);
	CU_ASSERT_EQUAL(t.approved, 1);
	CU_ASSERT_FALSE(t.executable);
	CU_ASSERT_EQUAL(t.why[0], CER_COUNTED);
	CU_ASSERT_EQUAL(t.why[1], CER_DUPLICATE);
	CU_ASSERT_EQUAL(t.why[2], CER_REQUESTER);
	CU_ASSERT_EQUAL(t.why[3], CER_REMOVED);
	CU_ASSERT_EQUAL(t.why[4], CER_NOT_OFFICER);
	CU_ASSERT_EQUAL(t.why[5], CER_BAD_SIGNATURE);
	decide(&f, &d[5], "carol", BOB, pinned_digest, "approve");
	CU_ASSERT_EQUAL(cer_tally(pinned_digest, "alice", 2, f.off, N_OFF, d, 6,
	    &t), KM_OK);
	CU_ASSERT_EQUAL(t.why[5], CER_BAD_SIGNATURE);
	CU_ASSERT_FALSE(t.executable);

	/* carol's own valid approval: M reached, approvers sorted */
	decide(&f, &d[5], "carol", CAROL, pinned_digest, "approve");
	CU_ASSERT_EQUAL(cer_tally(pinned_digest, "alice", 2, f.off, N_OFF, d, 6,
	    &t), KM_OK);
	CU_ASSERT_TRUE(t.executable);
	CU_ASSERT_EQUAL(t.approved, 2);
	CU_ASSERT_STRING_EQUAL(t.approvers[0], "bob");
	CU_ASSERT_STRING_EQUAL(t.approvers[1], "carol");
	/* a higher M (quorum raised since) is not met by the same two */
	CU_ASSERT_EQUAL(cer_tally(pinned_digest, "alice", 3, f.off, N_OFF, d, 6,
	    &t), KM_OK);
	CU_ASSERT_FALSE(t.executable);
	CU_ASSERT_TRUE(t.impossible);	/* only 2 eligible */

	/* a reject by bob leaves only carol: M = 2 cannot be reached */
	decide(&f, &d[0], "bob", BOB, pinned_digest, "reject");
	CU_ASSERT_EQUAL(cer_tally(pinned_digest, "alice", 2, f.off, N_OFF, d, 1,
	    &t), KM_OK);
	CU_ASSERT_EQUAL(t.rejected, 1);
	CU_ASSERT_TRUE(t.impossible);
	/* a reject signature does not count as an approval */
	decide(&f, &d[0], "bob", BOB, pinned_digest, "reject");
	d[0].approve = 1;
	CU_ASSERT_EQUAL(cer_tally(pinned_digest, "alice", 2, f.off, N_OFF, d, 1,
	    &t), KM_OK);
	CU_ASSERT_EQUAL(t.why[0], CER_BAD_SIGNATURE);
	CU_ASSERT_EQUAL(t.approved, 0);

	/* an admin token asked: all three active officers are eligible */
	decide(&f, &d[0], "alice", ALICE, pinned_digest, "approve");
	decide(&f, &d[1], "bob", BOB, pinned_digest, "reject");
	CU_ASSERT_EQUAL(cer_tally(pinned_digest, "token:00112233445566ff", 2,
	    f.off, N_OFF, d, 2, &t), KM_OK);
	CU_ASSERT_EQUAL(t.eligible, 3);
	CU_ASSERT_EQUAL(t.approved, 1);
	CU_ASSERT_FALSE(t.impossible);
	CU_ASSERT_FALSE(t.executable);

	CU_ASSERT_EQUAL(cer_tally(pinned_digest, "alice", 0, f.off, N_OFF, d, 0,
	    &t), KM_ERR_INVALID_REQUEST);
	fixture_free(&f);
}

int
main(void)
{
	static const struct ut_test tests[] = {
		{ "canonical text, byte for byte, and its digest", test_text_pinned },
		{ "malformed fields are refused", test_text_invalid_fields },
		{ "parameters: names, values, order, limits", test_params },
		{ "the parser takes only canonical text", test_parse },
		{ "approval, revoke and request messages", test_messages_pinned },
		{ "officer names, requesters, operations, ts window",
		    test_names_and_ts },
		{ "approval signatures: good, bad, malformed; P-256 only",
		    test_verify },
		{ "a token's raw r || s", test_sig_from_raw },
		{ "quorum rules", test_quorum },
		{ NULL, NULL },
	};

	return ut_main("ceremony", NULL, NULL, tests);
}
