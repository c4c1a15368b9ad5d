/* libFuzzer target: what /verify reads from a caller. sig_jws_parse must
 * refuse anything that is not a compact JWS with a JSON-object header
 * holding string alg and kid, clear its outputs on refusal, and on
 * acceptance give a payload and signature that re-encode to exactly the
 * segments it read (base64url has one spelling). The DER ECDSA parser must
 * accept only DER that re-encodes to itself. sig_verify runs on whatever
 * was accepted, against a fixed P-256, RSA and Ed25519 key, and must answer
 * without crashing (never "valid": the keys signed nothing). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "fuzz.h"
#include "sig.h"

static unsigned char *spki[3];
static size_t spki_len[3];

static void
keys_once(void)
{
	static const char *const algs[] = { "EC", "RSA", "ED25519" };
	EVP_PKEY *k;
	int i, n;

	if (spki[0] != NULL)
		return;
	for (i = 0; i < 3; i++) {
		if (i == 0)
			k = EVP_PKEY_Q_keygen(NULL, NULL, algs[i], "P-256");
		else if (i == 1)
			k = EVP_PKEY_Q_keygen(NULL, NULL, algs[i], (size_t)2048);
		else
			k = EVP_PKEY_Q_keygen(NULL, NULL, algs[i]);
		fuzz_assert(k != NULL, "keygen %s", algs[i]);
		n = i2d_PUBKEY(k, &spki[i]);
		fuzz_assert(n > 0, "SPKI");
		spki_len[i] = (size_t)n;
		EVP_PKEY_free(k);
	}
}

static void
check_segment(const char *seg, size_t len, const unsigned char *dec,
    size_t dec_len)
{
	char *enc = NULL;

	if (len == 0) {
		fuzz_assert(dec_len == 0, "an empty segment decoded to bytes");
		return;
	}
	fuzz_assert(km_b64url_encode(dec, dec_len, &enc) == KM_OK, "encode");
	fuzz_assert(strlen(enc) == len && memcmp(enc, seg, len) == 0,
	    "a non-canonical base64url segment was accepted");
	free(enc);
}

static void
check_jws(const uint8_t *data, size_t size)
{
	static const enum hsm_sig_alg algs[] = { HSM_SIG_ES256, HSM_SIG_RS256,
	    HSM_SIG_PS256, HSM_SIG_EDDSA };
	const char *text = (const char *)data, *d1, *d2;
	struct sig_jws j;
	char why[160];
	enum hsm_sig_alg alg;
	size_t i;
	int r, valid;

	r = sig_jws_parse(text, size, &j, why, sizeof(why));
	if (r != KM_OK) {
		fuzz_assert(r == KM_ERR_INVALID_REQUEST || r == KM_ERR_TOO_LARGE,
		    "unexpected error %d", r);
		fuzz_assert(j.header == NULL && j.payload == NULL && j.sig == NULL,
		    "a refused JWS left its outputs set");
		fuzz_assert(why[0] != '\0', "a refusal without a reason");
		sig_jws_clear(&j);
		return;
	}
	fuzz_assert(j.alg != NULL && j.kid != NULL, "accepted without alg/kid");
	d1 = memchr(text, '.', size);
	d2 = d1 ? memchr(d1 + 1, '.', size - (size_t)(d1 + 1 - text)) : NULL;
	fuzz_assert(d1 != NULL && d2 != NULL, "accepted without two dots");
	fuzz_assert(j.signing_input_len == (size_t)(d2 - text),
	    "signing input length");
	check_segment(d1 + 1, (size_t)(d2 - d1 - 1), j.payload, j.payload_len);
	check_segment(d2 + 1, size - (size_t)(d2 + 1 - text), j.sig, j.sig_len);
	keys_once();
	if (sig_alg_parse(j.alg, &alg) == KM_OK) {
		for (i = 0; i < 3; i++) {
			valid = -1;
			r = sig_verify(spki[i], spki_len[i], alg, 0, data,
			    j.signing_input_len, j.sig, j.sig_len, &valid);
			fuzz_assert(r != KM_OK || valid == 0,
			    "a made-up signature verified");
		}
	}
	for (i = 0; i < sizeof(algs) / sizeof(algs[0]); i++)
		(void)sig_alg_name(algs[i]);
	sig_jws_clear(&j);
}

static void
check_der(const uint8_t *data, size_t size)
{
	unsigned char raw[64], *again = NULL;
	size_t again_len = 0;

	if (sig_ecdsa_der_to_raw(data, size, raw) != KM_OK)
		return;
	fuzz_assert(sig_ecdsa_raw_to_der(raw, &again, &again_len) == KM_OK,
	    "raw to DER");
	fuzz_assert(again_len == size && memcmp(again, data, size) == 0,
	    "a non-DER ECDSA signature was accepted");
	free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_quiet_begin();
	check_jws(data, size);
	check_der(data, size);
	fuzz_quiet_end();
	return 0;
}
