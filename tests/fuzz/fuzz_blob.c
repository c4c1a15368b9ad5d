/* libFuzzer target: the ciphertext text format. blob_parse must refuse
 * anything that is not "kms:v<N>:<base64>" of a valid length, clear its
 * outputs when it refuses, and accept only canonical spellings: whatever it
 * accepts, blob_format writes back byte for byte. The strict base64 decoders
 * under it get the same round-trip check. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blob.h"
#include "fuzz.h"

static void
check_blob(const uint8_t *data, size_t size)
{
	unsigned char *raw = (unsigned char *)1;
	size_t raw_len = 1;
	uint32_t v = 1;
	char *again = NULL;

	if (blob_parse((const char *)data, size, &v, &raw, &raw_len) != KM_OK) {
		fuzz_assert(raw == NULL && raw_len == 0 && v == 0,
		    "a refused blob left its outputs set");
		return;
	}
	fuzz_assert(v >= 1, "version 0 accepted");
	fuzz_assert(raw_len >= BLOB_NONCE_LEN + 1 + BLOB_TAG_LEN &&
	    raw_len <= BLOB_NONCE_LEN + BLOB_MAX_PLAINTEXT + BLOB_TAG_LEN,
	    "accepted %zu raw bytes", raw_len);
	fuzz_assert(blob_format(v, raw, raw + BLOB_NONCE_LEN,
	    raw_len - BLOB_NONCE_LEN, &again) == KM_OK, "cannot format back");
	fuzz_assert(strlen(again) == size && memcmp(again, data, size) == 0,
	    "a non-canonical blob was accepted (%zu bytes in, %zu back)", size,
	    strlen(again));
	free(again);
	km_secure_free(raw, raw_len);
}

static void
check_b64(const uint8_t *data, size_t size)
{
	unsigned char *dec = NULL;
	size_t len = 0;
	char *enc = NULL;

	if (km_b64_decode((const char *)data, size, &dec, &len) == KM_OK) {
		fuzz_assert(km_b64_encode(dec, len, &enc) == KM_OK, "encode");
		fuzz_assert(strlen(enc) == size && memcmp(enc, data, size) == 0,
		    "base64 accepted a non-canonical spelling");
		free(enc);
		km_secure_free(dec, len);
	} else {
		fuzz_assert(dec == NULL && len == 0, "refused base64 left output");
	}
	if (km_b64url_decode((const char *)data, size, &dec, &len) == KM_OK) {
		fuzz_assert(km_b64url_encode(dec, len, &enc) == KM_OK, "encode");
		fuzz_assert(strlen(enc) == size && memcmp(enc, data, size) == 0,
		    "base64url accepted a non-canonical spelling");
		free(enc);
		km_secure_free(dec, len);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_blob(data, size);
	check_b64(data, size);
	return 0;
}
